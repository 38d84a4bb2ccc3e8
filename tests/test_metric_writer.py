"""The one metric writer: JSON lines + TensorBoard on process 0 only, and orbax's routine
messages kept off the console (in the run's log file instead)."""

from __future__ import annotations

import json
import logging
import re

import pytest

from lnm_jax.metric_writer import MetricWriter, read_history


def test_primary_writes_lines_and_tensorboard_and_keeps_orbax_off_the_console(tmp_path, capsys):
    console = logging.StreamHandler()
    logging.getLogger().addHandler(console)
    try:
        with MetricWriter(tmp_path / "h.jsonl", tmp_path / "tb", tmp_path / "train.log") as writer:
            writer.write({"epoch": 1, "loss": 0.5, "note": "x"})
            writer.write({"epoch": 2, "loss": float("nan")})
            logging.getLogger("orbax.checkpoint").warning("Waiting for previous save to complete")
            logging.getLogger("lnm_jax").warning("a warning of ours")
        err = capsys.readouterr().err
    finally:
        logging.getLogger().removeHandler(console)
    assert [r["epoch"] for r in read_history(tmp_path / "h.jsonl")] == [1, 2]
    assert read_history(tmp_path / "h.jsonl", up_to=1) == [{"epoch": 1, "loss": 0.5, "note": "x"}]
    # a diverged loss is standard JSON's null, not Python's NaN literal
    second = [json.loads(x, parse_constant=_refuse) for x in (tmp_path / "h.jsonl").read_text().splitlines()][1]
    assert {k: v for k, v in second.items() if k != "record_sha256"} == {"epoch": 2, "loss": None}
    assert list((tmp_path / "tb").iterdir())  # an events file
    assert "Waiting for previous save" not in err and "a warning of ours" in err
    assert "Waiting for previous save" in (tmp_path / "train.log").read_text()
    # the filter is gone once the writer is closed
    assert not any(console.filters)


def _refuse(name):
    raise ValueError(f"{name} is not JSON")


def test_json_files_are_standard_json():
    """Every JSON file the package writes goes through fileio.json_text: NaN and infinities (an
    AUC of a one-class split, a constant map's score, a diverged loss) are null, which every JSON
    reader parses; Python's default writes NaN / Infinity, which strict readers refuse."""
    import math

    import numpy as np
    import pytest

    from lnm_jax.fileio import json_text

    doc = {"auc": math.nan, "hi": math.inf, "lo": np.float32(-np.inf), "n": np.int64(3), "x": np.float64(0.25)}
    doc["rows"] = [(1.0, math.nan), np.array([0.5, np.nan])]
    text = json_text(doc, indent=2)
    assert json.loads(text, parse_constant=_refuse) == {
        "auc": None,
        "hi": None,
        "lo": None,
        "n": 3,
        "x": 0.25,
        "rows": [[1.0, None], [0.5, None]],
    }
    with pytest.raises(TypeError):
        json_text({"not json": object()})


def test_a_sealed_record_reads_back_as_written_and_an_edit_is_refused(tmp_path, capsys):
    """fileio.sealed digests the record as write_json writes it (a NaN as null, NumPy numbers as
    plain ones), whatever the reader's key order or indent; a changed value is one
    DamagedFileError naming the file; a record without its seal is read with one warning."""
    import math

    import numpy as np
    import pytest

    from lnm_jax.fileio import SEAL_KEY, DamagedFileError, check_seal, read_json, sealed, write_json

    path = tmp_path / "record.json"
    write_json(path, sealed({"t": np.float32(1.5), "auc": math.nan, "n": np.int64(3), "ok": np.bool_(True)}))
    check_seal(read_json(path), path)
    doc = json.loads(path.read_text())
    path.write_text(json.dumps(dict(reversed(list(doc.items())))))  # another key order, no indent
    check_seal(read_json(path), path)
    for edit in ({"t": 1.25}, {"auc": 0.5}, {"extra": 1}):
        with pytest.raises(DamagedFileError, match=rf"record.json: its values do not match the {SEAL_KEY}"):
            check_seal({**doc, **edit}, path)
    capsys.readouterr()
    unsealed = {k: v for k, v in doc.items() if k != SEAL_KEY}
    check_seal(unsealed, path)
    check_seal(unsealed, tmp_path / "." / "record.json")  # the same file by another path: said once
    assert capsys.readouterr().err.count(f"holds no {SEAL_KEY}") == 1


def test_other_processes_write_nothing(tmp_path):
    with MetricWriter(tmp_path / "h.jsonl", tmp_path / "tb", tmp_path / "log", primary=False) as writer:
        writer.rewrite([{"epoch": 1}])
        writer.write({"epoch": 1, "loss": 0.5})
        writer.print("nothing")
    assert not any(tmp_path.iterdir())


def test_rewrite_keeps_the_epochs_a_resumed_run_had_finished(tmp_path):
    path = tmp_path / "h.jsonl"
    path.write_text("".join(json.dumps({"epoch": e}) + "\n" for e in (1, 2, 3)))
    with MetricWriter(path, primary=True) as writer:
        writer.rewrite(read_history(path, up_to=2))
        writer.write({"epoch": 3, "loss": 1.0})
    assert read_history(path) == [{"epoch": 1}, {"epoch": 2}, {"epoch": 3, "loss": 1.0}]


def test_history_records_are_sealed_and_an_edited_one_is_refused(tmp_path, capsys):
    """Each record a writer appends or rewrites carries its seal; a value edited since is one
    line naming the file and the record (an edited loss or AUC had reached the convergence
    curves and a resumed run's history); records written before histories were sealed are read
    with one warning."""
    from lnm_jax.fileio import SEAL_KEY, DamagedFileError

    path = tmp_path / "metrics.jsonl"
    with MetricWriter(path, primary=True) as writer:
        writer.write({"epoch": 1, "val_auc": 0.6})
        writer.write({"epoch": 2, "val_auc": 0.7})
    assert all(SEAL_KEY in json.loads(x) for x in path.read_text().splitlines())
    assert read_history(path) == [{"epoch": 1, "val_auc": 0.6}, {"epoch": 2, "val_auc": 0.7}]
    assert capsys.readouterr().err == ""
    path.write_text(path.read_text().replace('"val_auc": 0.7', '"val_auc": 0.9'))
    with pytest.raises(DamagedFileError, match=r"metrics.jsonl: record 2 \(epoch 2\)'s values do not match the record"):
        read_history(path)
    old = tmp_path / "old.jsonl"
    old.write_text("".join(json.dumps({"epoch": e}) + "\n" for e in (1, 2)))
    assert read_history(old) == read_history(old) == [{"epoch": 1}, {"epoch": 2}]
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "2 of its 2 records hold no record_sha256" in err[0], err


@pytest.mark.parametrize("epoch", ["1", 1.0, True, None])
def test_a_history_record_whose_step_is_no_integer_names_the_file(tmp_path, epoch):
    """An edited metrics.jsonl ("epoch": "1") was an "unexpected TypeError" when a resume
    compared it with its start epoch; now one line naming the file and the record."""
    from lnm_jax.fileio import DamagedFileError

    path = tmp_path / "metrics.jsonl"
    path.write_text(json.dumps({"epoch": 1}) + "\n" + json.dumps({"epoch": epoch, "loss": 0.1}) + "\n")
    with pytest.raises(DamagedFileError, match=rf"metrics.jsonl: record 2's 'epoch' is {re.escape(repr(epoch))}, not"):
        read_history(path, up_to=1)


def test_tensorboard_is_written_without_importing_torch(tmp_path):
    """tensorboardX imports torch when it is installed (2.4 s and 590 MB for a writer of floats):
    a fresh process that writes a scalar has no torch loaded, and can still import it after."""
    import importlib.util
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from lnm_jax.metric_writer import MetricWriter\n"
        f"with MetricWriter({str(tmp_path / 'h.jsonl')!r}, {str(tmp_path / 'tb')!r}) as w:\n"
        "    w.write({'epoch': 3, 'val_auc': 0.75})\n"
        "print('torch' in sys.modules)\n"
        "import importlib.util\n"
        "if importlib.util.find_spec('torch'):\n"
        "    import torch\n"
        "    print(torch.zeros(1).shape == (1,))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    torch_installed = importlib.util.find_spec("torch") is not None
    assert res.stdout.split() == ["False"] + (["True"] if torch_installed else []), res.stdout
    assert _scalars(tmp_path / "tb") == [("val_auc", 3, 0.75)]


def _scalars(folder) -> list[tuple[str, int, float]]:
    """(tag, step, value) of every scalar in the TensorBoard event files of ``folder``, read from
    their TFRecord framing (8-byte length, 4-byte CRC, the Event proto, 4-byte CRC)."""
    import struct

    from tensorboardX.proto.event_pb2 import Event

    out = []
    for f in sorted(folder.iterdir()):
        data, i = f.read_bytes(), 0
        while i < len(data):
            (n,) = struct.unpack("<Q", data[i : i + 8])
            event = Event.FromString(data[i + 12 : i + 12 + n])
            i += 12 + n + 4
            out += [(v.tag, event.step, pytest.approx(v.simple_value)) for v in event.summary.value]
    return out


def test_a_resumed_runs_tensorboard_holds_its_history(tmp_path):
    """A run killed after epoch 6 and resumed had TensorBoard events for the resumed epochs only
    (tensorboardX holds events up to 120 s, and a resume re-emits nothing; helper-81). A
    resume's rewrite replaces the earlier event files with the kept history's: the events are
    the JSON lines', each epoch once, a later epoch trained again not twice."""
    with MetricWriter(tmp_path / "h.jsonl", tmp_path / "tb") as first:
        first.rewrite([])
        for e in (1, 2, 3):
            first.write({"epoch": e, "val_auc": e / 8})
    # a resume from epoch 2's checkpoint: epoch 3 is trained again
    with MetricWriter(tmp_path / "h.jsonl", tmp_path / "tb") as again:
        again.rewrite(read_history(tmp_path / "h.jsonl", up_to=2))
        again.write({"epoch": 3, "val_auc": 0.5})
    assert len(list((tmp_path / "tb").iterdir())) == 1
    assert _scalars(tmp_path / "tb") == [("val_auc", 1, 0.125), ("val_auc", 2, 0.25), ("val_auc", 3, 0.5)]
