"""Nothing silently wrong, nothing written where it should not be: each case a demanding user
found by trying to break the project (missing inputs, unsafe patient ids, stale splits,
divergence, unreadable images, late failures, tracebacks, a full disk, read-only run folders)."""

from __future__ import annotations

import csv
import errno
import json
import os
import re
import struct
import zlib
from pathlib import Path
from types import SimpleNamespace

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from PIL import Image
from support import BACKBONE, tiny_config

from lnm_jax import run_files as F
from lnm_jax.cli import main
from lnm_jax.data.cohorts import manifest as mf
from lnm_jax.data.cohorts.manifest import ManifestError, read_manifest
from lnm_jax.data.cohorts.splits import SplitMismatchError
from lnm_jax.fileio import UnsafePathError, path_inside
from lnm_jax.metric_writer import _summary_writer, read_history
from lnm_jax.preflight import MissingInputsError
from lnm_jax.run import Run
from lnm_jax.run_config import load_config
from lnm_jax.training.loop import TrainingDivergedError, train


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under ``root`` with its size and modification time."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


def rewrite_manifest(src: Path, out: Path, edit=lambda row: row, rows: int | None = None) -> Path:
    """A copy of manifest ``src`` at ``out`` with absolute image and mask paths, each row passed
    through ``edit`` (first ``rows`` rows only)."""
    with src.open() as f:
        reader = csv.DictReader(f)
        fields, body = reader.fieldnames, list(reader)[:rows]
    for r in body:
        for k in ("bmode", "ceus", "bmode_mask", "ceus_mask"):
            if r.get(k):
                r[k] = str(src.parent / r[k])
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(edit(dict(r)) for r in body)
    return out


def without_ceus(ids):
    return lambda r: {**r, "ceus": "", "ceus_mask": ""} if r["patient_id"] in ids else r


def fail_line(capsys, command: str) -> str:
    """The error line a failed command printed last (after any progress bar), with no traceback."""
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1].split("\r")[-1].strip()
    assert last.startswith(f"lnm-jax {command}: error: "), err
    assert "Traceback" not in err, err
    return last


# ----------------------------------------------------------------- 1. missing inputs


def test_model_not_trained_for_missing_inputs_refuses_them(triple_run, tiny_cohort, tmp_path, capsys):
    ids = triple_run.cohort.ids[:2]
    holey = rewrite_manifest(tiny_cohort, tmp_path / "holey" / "manifest.csv", without_ceus(ids))
    # train: refused before anything is written, naming the patients
    config = tiny_config(holey, "triple")
    with pytest.raises(MissingInputsError, match=rf"ceus missing for 2 \({ids[0]}, {ids[1]}\)"):
        Run.create(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()
    # predict: refused unless opted in; the opt-in scores every patient
    args = ["predict", "--workdir", str(triple_run.workdir), "--manifest", str(holey), "--out"]
    assert main([*args, str(tmp_path / "p.csv")]) == 1
    assert "--zero-fill-missing" in fail_line(capsys, "predict") and not (tmp_path / "p.csv").exists()
    assert main([*args, str(tmp_path / "p.csv"), "--zero-fill-missing"]) == 0
    rows = list(csv.DictReader((tmp_path / "p.csv").open()))
    assert len(rows) == len(triple_run.cohort)
    # the patients scored on zeros the model never saw are named, in the CSV and on stderr
    assert [r["patient_id"] for r in rows if r["inputs_missing"]] == ids and {r["inputs_missing"] for r in rows} == {
        "ceus",
        "",
    }
    said = capsys.readouterr().err
    assert f"warning: 2 of {len(rows)} patient(s) lack an input the model takes (ceus 2): each fed as zeros" in said
    # evaluate (and every command opening the run): a run whose cohort lacks inputs is refused
    config = load_config(triple_run.workdir)
    config.data.manifest = str(holey)
    with pytest.raises(MissingInputsError, match="not trained for missing inputs"):
        Run.create(config, tmp_path / "other")
    # validate against the model reports the patterns it refuses
    assert main(["validate", str(holey), "--workdir", str(triple_run.workdir)]) == 1
    out = capsys.readouterr()
    assert "bmode+us_lnm: 2 patient(s)  <- refused: lacks ceus" in out.out and "ceus missing for 2" in out.err
    # an override would check a reading the run never applies (the trial of 8f1f25d: validate said
    # OK with --config.data.accept_secondary_capture=True, the run's predict refused every file)
    override = "--config.data.accept_secondary_capture=True"
    assert main(["validate", str(holey), "--workdir", str(triple_run.workdir), override]) == 2
    assert f"{override}: --workdir checks the cohort against the run as it was trained" in capsys.readouterr().err


# ----------------------------------------------------------------- 2. writes outside the folder


def test_patient_ids_that_could_name_other_files_are_refused(tiny_cohort, tmp_path):
    # and '-2-3', '-A1': a formula to a spreadsheet opening the CSVs the ID is written to (helper-118)
    # and a name Windows reserves for a device (CON.png is the console there)
    bad = ["con", "AUX.txt", "-A1", "-2-3", "../../../../tmp/lnm_pwned", "/etc/x", ".hidden", "a b", "a/b"]
    holey = rewrite_manifest(
        tiny_cohort, tmp_path / "m.csv", lambda r: {**r, "patient_id": bad.pop() if bad else r["patient_id"]}, rows=11
    )
    with pytest.raises(ManifestError) as e:
        read_manifest(holey)
    assert [p.row for p in e.value.problems if p.code == mf.BAD_PATIENT_ID] == [1, 2, 3, 4, 5, 6, 7, 8, 9]
    assert "'con' is not a safe file name: Windows reserves it for a device" in str(e.value)
    assert "'../../../../tmp/lnm_pwned' is not a safe file name" in str(e.value)
    assert "'-2-3' is not a safe file name: use letters, digits, '.', '_' and '-' (not starting with '.' or '-')" in (
        str(e.value)
    )


def test_paths_from_data_stay_inside_their_folder(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    assert path_inside(out, "patients/P1.png") == out.resolve() / "patients" / "P1.png"
    (out / "link").symlink_to(tmp_path)
    for name in ("../x.png", "/tmp/x.png", "patients/../../x.png", "link/x.png", "."):
        with pytest.raises(UnsafePathError, match="outside"):
            path_inside(out, name)


# ----------------------------------------------------------------- 3. stale split


def test_a_stored_split_is_reused_only_with_the_same_settings(tiny_cohort, tmp_path, capsys):
    work = tmp_path / "run"
    Run.create(tiny_config(tiny_cohort, "triple"), work)  # a first start that never trained
    args = ["train", "--workdir", str(work), f"--config.data.manifest={tiny_cohort}"]
    assert main([*args, "--config.data.split.seed=1"]) == 1
    line = fail_line(capsys, "train")
    assert "seed=0" in line and "seed=1" in line and F.SPLITS in line
    config = tiny_config(tiny_cohort, "triple")
    config.data.split.test_fraction = 0.3
    with pytest.raises(SplitMismatchError, match="test_fraction=0.2 but the config asks for test_fraction=0.3"):
        Run.create(config, work)
    # an edited manifest: the run's split no longer describes it
    edited = rewrite_manifest(tiny_cohort, tmp_path / "edited.csv")
    config = tiny_config(edited, "triple")
    with pytest.raises(SplitMismatchError, match="the manifest changed since the split was made"):
        Run.create(config, work)


# ----------------------------------------------------------------- 4. divergence


def test_exploding_training_stops_and_says_what_is_kept(tiny_cohort, tmp_path, capsys):
    """At learning rate 1e6 Adam moves every weight by about 1e6 in the first step, whatever the
    gradient's scale: the loss explodes (or turns NaN) within the first epoch on any machine."""
    manifest = rewrite_manifest(tiny_cohort, tmp_path / "m.csv")
    args = ["train", "--workdir", str(tmp_path / "run"), f"--config.data.manifest={manifest}"]
    small = ["--config.data.image_size=32", f"--config.model.backbone={BACKBONE}", "--config.model.width=4"]
    assert main([*args, *small, "--config.train.epochs=1", "--config.train.learning_rate=1e6"]) == 1
    line = fail_line(capsys, "train")
    assert "no checkpoint was written" in line and ("diverged" in line or "loss is nan" in line), line
    # case diverged-epoch1-workdir-stuck: the folder kept that start's records (config at 1e6,
    # split, history, empty checkpoint folders), so a fresh start with a sane rate was refused
    # ("pass --resume"), a resume diverged again and a resume with the sane rate was "a different
    # experiment". A first start that diverged before any checkpoint leaves no folder behind
    run = tmp_path / "run"
    assert f"what this start wrote was removed: {run.resolve()} is as it was before it" in line, line
    assert not run.exists()
    # a user's folder given as --workdir stays, with only the user's files in it
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    diverging = [*args[:2], str(mine), *args[3:], *small, "--config.train.epochs=1", "--config.train.learning_rate=1e6"]
    assert main(diverging) == 1
    assert f"{mine.resolve()} is as it was before it" in fail_line(capsys, "train")
    assert sorted(p.name for p in mine.iterdir()) == sorted([F.LOCK, "notes.txt"]), list(mine.iterdir())
    # on the embedded cohort, which the start synthesises into the folder: a batch larger than the
    # train split is refused naming its field (exit 2), and a diverged start removes the cohort it
    # wrote too (helper-112: both had left the folder, its lock and a 51 MB cohort)
    embedded = ["train", "--workdir", str(run), "--config.data.synth.patients=30", "--config.data.synth.size=32"]
    assert main([*embedded, *small, "--config.train.batch_size=1000"]) == 2
    assert "train.batch_size: 1000 is more than the train split's" in fail_line(capsys, "train")
    assert not run.exists()
    assert main([*embedded, *small, "--config.train.epochs=1", "--config.train.learning_rate=1e6"]) == 1
    assert f"{run.resolve()} is as it was before it" in fail_line(capsys, "train")
    assert not run.exists()


def test_non_finite_statistics_are_never_checkpointed(triple_run, copy_run, monkeypatch):
    from lnm_jax.training import loop

    run = copy_run(triple_run)
    good, _ = run.restore("latest")
    real = loop.make_train_step

    def poisoned(*a, **k):  # a step whose BatchNorm variances overflow while the loss stays finite
        step = real(*a, **k)

        def wrapped(state, inputs):
            state, m = step(state, inputs)
            return state.replace(batch_stats=jax.tree.map(lambda x: x * np.inf, state.batch_stats)), m

        return wrapped

    monkeypatch.setattr(loop, "make_train_step", poisoned)
    config = load_config(run.workdir)
    config.train.epochs = 3
    with pytest.raises(TrainingDivergedError, match=r"array\(s\) hold NaN or inf .*last good checkpoint \(epoch 2"):
        train(Run.create(config, run.workdir, resume=True))
    after, meta = Run.open(run.workdir).restore("latest")
    assert meta["epoch"] == 2
    for a, b in zip(jax.tree.leaves(good), jax.tree.leaves(after)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


# ----------------------------------------------------------------- 5. images training cannot read


def _png_chunks(path: Path) -> list[list]:
    data = path.read_bytes()[8:]
    chunks = []
    while data:
        (n,) = struct.unpack(">I", data[:4])
        chunks.append([data[4:8], data[8 : 8 + n], data[8 + n : 12 + n]])
        data = data[12 + n :]
    return chunks


def _write_png(path: Path, chunks) -> None:
    body = b"".join(struct.pack(">I", len(d)) + t + d + crc for t, d, crc in chunks)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)


def _undecodable_cohort(tiny_cohort, tmp_path, monkeypatch):
    """A cohort whose first B-mode image the validator passes (switched off) but no decoder can
    read; returns it and the file."""
    truncated = tmp_path / "trunc.png"
    first = read_manifest(tiny_cohort).patients[0]
    truncated.write_bytes(first.bmode.read_bytes()[:200])
    m = rewrite_manifest(
        tiny_cohort,
        tmp_path / "d" / "manifest.csv",
        lambda r: {**r, "bmode": str(truncated)} if r["patient_id"] == first.patient_id else r,
        rows=4,
    )
    monkeypatch.setattr(mf, "checked_still", lambda path, still=True, digest=True, crop=None: (None, None, None))
    return read_manifest(m), truncated


def test_a_png_with_a_corrupt_crc_fails_validation_and_names_the_patient_at_decode(tiny_cohort, tmp_path, monkeypatch):
    from lnm_jax.data.loaders.loader import BatchSettings, GrainSource
    from lnm_jax.data.pixels.decode import ImageDecodeError

    cohort = read_manifest(tiny_cohort)
    victim = cohort.patients[0]
    bad = tmp_path / "bad.png"
    chunks = _png_chunks(victim.bmode)
    idat = next(c for c in chunks if c[0] == b"IDAT")
    idat[2] = bytes(b ^ 0xFF for b in idat[2])  # the data intact, its checksum wrong
    _write_png(bad, chunks)
    with Image.open(bad) as im:
        im.load()  # a plain decode does not notice: the check must verify the CRCs too
    m = rewrite_manifest(tiny_cohort, tmp_path / "c" / "manifest.csv", lambda r: {**r, "bmode": str(bad)}, rows=10)
    with pytest.raises(ManifestError) as e:
        read_manifest(m)
    assert {(p.code, p.file) for p in e.value.problems} == {(mf.UNREADABLE_IMAGE, str(bad))}
    # an image the validator passes but the loader cannot decode (simulated: the validator
    # switched off) fails on its first read, through grain's threads, naming patient and file
    unchecked, truncated = _undecodable_cohort(tiny_cohort, tmp_path, monkeypatch)
    source = GrainSource(unchecked, BatchSettings.from_config(tiny_config(tiny_cohort)))
    with pytest.raises(ImageDecodeError, match=rf"patient {unchecked.ids[0]}: {truncated}: cannot decode"):
        list(source.eval_batches(unchecked.ids))


@pytest.mark.tf
def test_an_image_tfds_cannot_decode_names_the_patient_at_build(tiny_cohort, tmp_path, monkeypatch):
    pytest.importorskip("tensorflow", reason="TensorFlow not installed (pip install -e '.[tf]')")
    from lnm_jax.data.loaders.tfds_builder import load_cohort

    unchecked, truncated = _undecodable_cohort(tiny_cohort, tmp_path, monkeypatch)
    with pytest.raises(ValueError, match=rf"patient {unchecked.ids[0]}: {truncated}: the input pipeline cannot decode"):
        load_cohort(unchecked, tmp_path / "tfds")


# ----------------------------------------------------------------- 6. fail before the first minute


def test_every_planned_run_is_checked_before_anything_trains(tiny_cohort, tmp_path, capsys):
    work = tmp_path / "protocol"
    args = ["reproduce", "--workdir", str(work), "--manifest", str(tiny_cohort), "--config.data.image_size=64"]
    # a planned run's config problem: exit 2, as every config value's (it was 1: helper-77)
    assert main([*args, "--config.protocol.backbones=('resnet18', 'inception_v3')"]) == 2
    assert "model.backbone=inception_v3 needs data.image_size >= 75, got 64" in fail_line(capsys, "reproduce")
    assert not work.exists()
    small = rewrite_manifest(tiny_cohort, tmp_path / "small.csv", rows=4)
    assert main(["train", "--workdir", str(tmp_path / "run"), f"--config.data.manifest={small}"]) == 1
    assert "cannot make a stratified" in fail_line(capsys, "train")
    assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------- 7. errors, not tracebacks


def _huge_png(path: Path, side: int) -> None:
    """A valid PNG header claiming ``side`` x ``side`` pixels (the data is never reached)."""

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("true",))


def test_what_training_would_trip_on_is_refused_before_the_run_writes_anything(tiny_cohort, tmp_path, capsys):
    """A batch larger than the train split and a pretrained backbone (model.init_from) that is
    missing, of another architecture or of another width are refused by Run.create, one line each, with nothing
    written: they were refused by the loop after config.json and splits.json were (fresh-user
    trial); the TFDS loader without TensorFlow is tests/test_tf_free.py's. ``lnm-jax validate``
    refuses each alike."""
    import jax.numpy as jnp

    from lnm_jax.models.resnet import resnet
    from lnm_jax.weights.io import save_backbone

    other = "resnet18" if BACKBONE != "resnet18" else "resnet10"
    variables = jax.eval_shape(lambda: resnet(other, width=4).init(jax.random.key(0), jnp.zeros((1, 32, 32, 3))))
    save_backbone(
        tmp_path / "other",
        jax.tree.map(lambda a: np.zeros(a.shape, a.dtype), variables),
        {"arch": other, "variant": "torchvision"},
    )
    # the configured architecture at another width (the tests' runs are of width 8)
    narrow = jax.eval_shape(lambda: resnet(BACKBONE, width=4).init(jax.random.key(0), jnp.zeros((1, 32, 32, 3))))
    zeros = jax.tree.map(lambda a: np.zeros(a.shape, a.dtype), narrow)
    save_backbone(tmp_path / "narrow", zeros, {"arch": BACKBONE, "variant": "torchvision"})
    (tmp_path / "empty").mkdir()
    for field, value, says in (
        ("train.batch_size", 64, r"train.batch_size: 64 is more than the train split's \d+ patients"),
        # a folder that is not there is named as such (it was "not a converted backbone")
        ("model.init_from", str(tmp_path / "nothing"), r"nothing does not exist: give a backbone made with"),
        ("model.init_from", str(tmp_path / "empty"), r"empty is not a converted backbone \(no backbone.json\)"),
        (
            "model.init_from",
            str(tmp_path / "other"),
            rf"holds {other} \(torchvision\) for 'bmode' but the config asks for {BACKBONE}",
        ),
        (
            "model.init_from",
            str(tmp_path / "narrow"),
            r"narrow does not fit branch 'bmode' of the config's model .*params",
        ),
    ):
        c = tiny_config(tiny_cohort, "triple")
        group, name = field.split(".")
        c[group][name] = value
        work = tmp_path / f"run_{name}_{Path(str(value)).name}"
        with pytest.raises((ValueError, FileNotFoundError), match=says):
            Run.create(c, work)
        assert not work.exists(), field
        capsys.readouterr()
        argv = ["train", "--workdir", str(work), f"--config.data.manifest={tiny_cohort}", f"--config.{field}={value}"]
        argv += ["--config.data.image_size=32", f"--config.model.backbone={BACKBONE}", "--config.model.width=8"]
        assert main(argv) == (2 if field == "train.batch_size" else 1) and not work.exists(), field  # (a field: 2)
        assert len(capsys.readouterr().err.strip().splitlines()) == 1, field
        # validate refuses it as train does (it had said OK to a missing backbone folder)
        assert main(["validate", str(tiny_cohort), *argv[4:]]) == 1, field
        out, err = capsys.readouterr()
        assert " OK" not in out and re.search(says, err) and len(err.strip().splitlines()) == 1, (field, out, err)


def test_bad_files_give_one_line_errors(tiny_cohort, tmp_path, capsys):
    _huge_png(tmp_path / "huge.png", 20000)
    m = rewrite_manifest(tiny_cohort, tmp_path / "a" / "m.csv", lambda r: {**r, "bmode": str(tmp_path / "huge.png")}, 1)
    assert main(["validate", str(m), "--no-labels"]) == 1
    assert "[image_too_large]" in capsys.readouterr().err
    assert "image is 400 megapixels, over the limit of 50" in str(pytest.raises(ManifestError, read_manifest, m).value)
    _huge_png(tmp_path / "big.png", 8000)  # under PIL's own limit, over ours
    m = rewrite_manifest(tiny_cohort, tmp_path / "c" / "m.csv", lambda r: {**r, "bmode": str(tmp_path / "big.png")}, 1)
    assert "8000x8000 = 64 megapixels, over the limit" in str(pytest.raises(ManifestError, read_manifest, m).value)
    # a symbolic link loop is not "does not exist"
    loop = tmp_path / "loop.png"
    loop.symlink_to(loop)
    m = rewrite_manifest(tiny_cohort, tmp_path / "b" / "m.csv", lambda r: {**r, "bmode": str(loop)}, 1)
    assert "image file is a symbolic link loop" in str(pytest.raises(ManifestError, read_manifest, m).value)
    # a semicolon-separated manifest
    semi = tmp_path / "semi.csv"
    semi.write_text(tiny_cohort.read_text().replace(",", ";"))
    assert main(["validate", str(semi)]) == 1
    assert "the delimiter looks like ';'" in capsys.readouterr().err
    # random bytes as weights: one line, never torch's advice to load unsafely
    for suffix in (".pth", ".safetensors", ".h5"):
        junk = tmp_path / f"junk{suffix}"
        junk.write_bytes(os.urandom(2048))
        source = "keras" if suffix == ".h5" else "torchvision"
        assert main(["convert-weights", "--from", source, "--in", str(junk), "--out", str(tmp_path / "w")]) == 1
        line = fail_line(capsys, "convert-weights")
        assert str(junk) in line and "weights_only" not in line and len(line.splitlines()) == 1
    # a pickle that would run code is refused, saying why
    import torch

    torch.save({"x": _RunsCode()}, tmp_path / "payload.pth")
    assert main(["convert-weights", "--from", "torchvision", "--in", str(tmp_path / "payload.pth"), "--out", "w"]) == 1
    line = fail_line(capsys, "convert-weights")
    assert "holds Python objects besides tensors" in line and "weights_only" not in line
    # --debug shows the traceback instead
    with pytest.raises(ManifestError):
        main(["validate", str(semi), "--debug"])


def test_changed_manifest_on_resume_and_after_training(triple_run, copy_run, tmp_path, capsys):
    run = copy_run(triple_run)
    edited = tmp_path / "edited" / "manifest.csv"
    rewrite_manifest(Path(run.config.data.manifest), edited, lambda r: {**r, "age": "1"})
    config = json.loads(run.files.config.read_text())
    config["data"]["manifest"] = str(edited)
    run.files.config.write_text(json.dumps(config))  # the stored manifest, edited after training
    assert main(["evaluate", "--workdir", str(run.workdir)]) == 1
    assert "the manifest changed since the split was made" in fail_line(capsys, "evaluate")
    args = ["train", "--workdir", str(run.workdir), "--resume", f"--config.data.manifest={edited}"]
    assert main(args) == 1
    assert "the manifest changed since the split was made" in fail_line(capsys, "train")


# ----------------------------------------------------------------- 8 and 9a. a full disk; the log


def test_a_failed_saves_late_writes_leave_no_temporary_folder(tmp_path, monkeypatch):
    """A failed orbax save returns while TensorStore writes are still in flight; one that lands
    after the temporary folder was removed wrote it again (a full disk, one run in five,
    fresh-user trial), and the message said it was removed: the removal waits until no
    temporary folder has appeared for a while."""
    import threading
    import time

    from lnm_jax.training.checkpoint import CheckpointSaveError, RunCheckpoints

    ckpts = RunCheckpoints(tmp_path / "ckpts", kinds=("latest",))
    folder = ckpts.directory("latest")

    def late_write():
        time.sleep(0.06)
        (folder / "3.orbax-checkpoint-tmp" / "state.orbax-checkpoint-tmp").mkdir(parents=True, exist_ok=True)

    def failing(*a, **k):
        (folder / "3.orbax-checkpoint-tmp").mkdir(parents=True, exist_ok=True)
        threading.Thread(target=late_write).start()
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpts._managers["latest"], "save", failing)
    with pytest.raises(CheckpointSaveError, match="its temporary folder was removed; none was before"):
        ckpts.save("latest", 3, {"w": np.ones(2, np.float32)}, {"epoch": 3, "best": {}})
    time.sleep(0.2)
    assert not list(folder.glob("*orbax-checkpoint-tmp*"))
    ckpts.close()


def test_a_save_committed_incomplete_is_removed_and_said(tmp_path, monkeypatch):
    """helper-113: with file handles running out (``ulimit -n 16``), orbax committed checkpoints
    whose array files were missing, train exited 0 and every later command called the run
    damaged. Each save is read back once committed; one that does not read back as the state
    saved is removed, and the save fails naming what is left. Here the committed step loses its
    array files after orbax's save returned, as then."""
    import shutil

    from lnm_jax.training.checkpoint import CheckpointSaveError, RunCheckpoints

    ckpts = RunCheckpoints(tmp_path / "ckpts", kinds=("best",))
    folder = ckpts.directory("best")
    state = {"w": np.arange(6, dtype=np.float32), "step": 3}  # a Python scalar leaf too (helper-115)
    ckpts.save("best", 1, state, {"epoch": 1, "best": {"val_auc": float("nan")}})  # reads back (NaN and all): kept
    assert ckpts.latest_epoch("best") == 1
    real = ckpts._managers["best"].save

    def incomplete(step, *a, **k):
        written = real(step, *a, **k)
        for d in (folder / str(step) / "state").iterdir():
            if d.is_dir():
                shutil.rmtree(d)  # the array data (ocdbt's folders) never written
        return written

    monkeypatch.setattr(ckpts._managers["best"], "save", incomplete)
    with pytest.raises(
        CheckpointSaveError, match=r"epoch 2 .*committed but does not read back .*removed; none is left"
    ):
        ckpts.save("best", 2, {"w": state["w"] + 1}, {"epoch": 2, "best": {}})
    assert not (folder / "2").exists() and ckpts.latest_epoch("best") is None
    ckpts.close()


def test_full_disk_keeps_the_checkpoint_and_the_log_line_resumes(triple_run, copy_run, monkeypatch, capsys):
    """The save of epoch 3 fails as on a full disk: one line, no temporary folder left, epoch 2
    intact; the log line of epoch 3 was written first, and the resumed run replaces it."""
    import logging
    import threading

    from lnm_jax.training.checkpoint import LIBRARY_LOGGERS

    run = copy_run(triple_run)
    # a failed save keeps the libraries off the console for the rest of the process: restored
    # for the next tests when this one ends
    for name in LIBRARY_LOGGERS:
        lg = logging.getLogger(name)
        monkeypatch.setattr(lg, "handlers", lg.handlers[:])
        monkeypatch.setattr(lg, "propagate", lg.propagate)
    monkeypatch.setattr(threading, "excepthook", threading.excepthook)

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    def full_flush(self):
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(ocp.handlers.JsonCheckpointHandler, "save", full)
        m.setattr(ocp.handlers.JsonCheckpointHandler, "async_save", full)
        # TensorBoard's last flush, in the stop's cleanup, fails on the same disk: a warning,
        # not the error (it had replaced the checkpoint's line, naming no file)
        m.setattr(_summary_writer(), "close", full_flush)
        args = ["train", "--workdir", str(run.workdir), "--resume", "--config.train.epochs=3"]
        assert main(args) == 1
    out = capsys.readouterr()
    assert "warning: while stopping: OSError: [Errno 28] No space left on device" in out.out, out.out
    line = fail_line(SimpleNamespace(readouterr=lambda: out), "train")
    assert "no space left on device" in line and "its temporary folder was removed" in line and "is intact" in line
    # what orbax's and asyncio's threads report after the error line stays off the console
    logging.getLogger("asyncio").error("Future exception was never retrieved")
    late = threading.Thread(target=lambda: 1 / 0)
    late.start()
    late.join()
    assert capsys.readouterr().err == ""
    assert not list(run.files.checkpoints.rglob("*orbax-checkpoint-tmp*"))
    assert [r["epoch"] for r in read_history(run.files.history)] == [1, 2, 3]  # the line came first
    assert main(args) == 0
    assert "resuming from epoch 2" in capsys.readouterr().out
    assert [r["epoch"] for r in read_history(run.files.history)] == [1, 2, 3]


# ----------------------------------------------------------------- 9. read-only run folders, paths


def test_predict_and_gradcam_elsewhere_leave_the_run_folder_unchanged(triple_run, tiny_cohort, tmp_path):
    before = snapshot(triple_run.workdir)
    new = rewrite_manifest(tiny_cohort, tmp_path / "new.csv", lambda r: {**r, "lnm": ""}, rows=6)
    assert (
        main(
            ["predict", "--workdir", str(triple_run.workdir), "--manifest", str(new), "--out", str(tmp_path / "p.csv")]
        )
        == 0
    )
    assert main(["gradcam", "--workdir", str(triple_run.workdir), "--out", str(tmp_path / "cams")]) == 0
    assert snapshot(triple_run.workdir) == before
    # again into its own folder; never into a user's folder that holds an index.csv of its own (a
    # site's image index beside its files had been taken for gradcam's and filled: fresh-user trial)
    assert main(["gradcam", "--workdir", str(triple_run.workdir), "--out", str(tmp_path / "cams")]) == 0
    theirs = tmp_path / "site"
    theirs.mkdir()
    (theirs / "index.csv").write_text("patient_id,image\nP1,a.png\n")
    (theirs / "a.png").write_bytes(b"not ours")
    kept = snapshot(theirs)
    assert main(["gradcam", "--workdir", str(triple_run.workdir), "--out", str(theirs)]) == 1
    assert snapshot(theirs) == kept
    assert (
        main(["predict", "--workdir", str(tmp_path / "nope"), "--manifest", str(new), "--out", str(tmp_path / "q.csv")])
        == 1
    )
    assert not (tmp_path / "nope").exists()


def test_evaluate_out_never_writes_into_a_folder_of_the_users(triple_run, copy_run, tiny_cohort, tmp_path, capsys):
    """evaluate --out wrote its metrics, predictions.csv, plots, card and Grad-CAM files into
    any folder, replacing a user's predictions.csv or filling the cohort's folder (fresh-user
    trial). Now, as export and gradcam: a new folder, or one an earlier evaluate wrote."""
    run = copy_run(triple_run)
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "predictions.csv").write_text("patient_id,mine\n")
    for out in (tiny_cohort.parent, theirs):
        before = snapshot(out)
        capsys.readouterr()
        assert main(["evaluate", "--workdir", str(run.workdir), "--out", str(out)]) == 1, out
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"--out {out.resolve()}" in err[0], err
        assert snapshot(out) == before
    fresh = tmp_path / "evaluation"
    for _ in range(2):  # a new folder, then the same one again: its own output
        assert main(["evaluate", "--workdir", str(run.workdir), "--out", str(fresh)]) == 0
    assert (fresh / F.METRICS).is_file()


def test_no_out_lies_in_the_runs_state(triple_run, copy_run, capsys):
    """Case out-into-checkpoints: evaluate --out and gradcam --out accepted a new folder inside
    checkpoints/best or checkpoints/latest, which orbax then took for a checkpoint step: every
    later read of the run failed. Every entry of the run folder but its evaluation and
    Grad-CAM folders is its state (``RunFiles.state``): an --out there, or the run folder
    itself, is one line, exit 1, the run untouched; its own folders stay writable."""
    run = copy_run(triple_run)
    best = sorted((run.workdir / F.CHECKPOINTS / "best").iterdir())
    bad = [run.workdir / F.CHECKPOINTS / "best" / "99", run.workdir / F.CHECKPOINTS / "latest" / "7"]
    bad += [run.workdir / F.TENSORBOARD / "x", run.workdir, run.workdir / F.CONFIG]
    before = snapshot(run.workdir)
    for command in ("evaluate", "gradcam"):
        for out in bad:
            capsys.readouterr()
            assert main([command, "--workdir", str(run.workdir), "--out", str(out)]) == 1, (command, out)
            err = capsys.readouterr().err.strip().splitlines()
            assert len(err) == 1 and f"--out {out.resolve()}" in err[0], err
    # the same for every command's --out, whichever run it reads (guard_output: the nearest run
    # folder above the path): a new cohort, a backbone, a prediction, statistics, even --overwrite
    manifest = run.config.data.manifest
    others = [
        ["synth", "--out", str(bad[0]), "--patients", "4"],
        ["predict", "--workdir", str(triple_run.workdir), "--manifest", manifest, "--out", str(bad[1] / "p.csv")],
        ["norm-stats", "--manifest", manifest, "--out", str(run.files.intensity_reference), "--overwrite"],
        ["crop-to-lesion", "--manifest", manifest, "--out", str(bad[2]), "--overwrite"],
    ]
    for argv in others:
        capsys.readouterr()
        assert main(argv) == 1, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "part of the run folder" in err[0], err
        # a record itself is named as what it is, not as lying in itself (stop 63's trial:
        # "--out run/config.json lies in run/config.json")
        out = Path(argv[argv.index("--out") + 1]).resolve()
        assert (f"lies in {out}," not in err[0]) and (("it would be replaced" in err[0]) == (out in run.files.state()))
    after = snapshot(run.workdir)
    after.pop(F.LOCK, None)  # the lock file each command holds the run by
    assert after == before
    assert sorted((run.workdir / F.CHECKPOINTS / "best").iterdir()) == best
    # (evaluate into its own folder, lesion maps included: tests/test_cam_scores.py)
    assert main(["gradcam", "--workdir", str(run.workdir), "--out", str(run.workdir / "gradcam_mine")]) == 0
    # outside its state, a run folder takes outputs only in its own eval_*/gradcam_* folders
    # (which record their checkpoint, and a resume moves aside): a new name beside its records
    # (counted as state afterwards: the same command was then refused; a resume left it
    # describing a replaced checkpoint), and another run's output folder (evaluate --workdir A
    # --out B/eval_best replaced B's evaluation, exit 0), are refused
    other = copy_run(triple_run, "other")

    def predict(out):
        return ["predict", "--workdir", str(run.workdir), "--manifest", manifest, "--out", str(out)]

    for argv, said in (
        (["evaluate", "--workdir", str(run.workdir), "--out", str(run.workdir / "my_eval")], "whose outputs go in"),
        (["gradcam", "--workdir", str(run.workdir), "--out", str(run.workdir / "cams")], "gradcam_<name> for maps"),
        (["evaluate", "--workdir", str(run.workdir), "--out", str(other.files.evaluation("best"))], "an output folder"),
        (["gradcam", "--workdir", str(run.workdir), "--out", str(other.files.gradcam("test"))], "of the run"),
        (predict(other.workdir / "eval_x" / "p.csv"), "choose a path outside that run"),
        # another run's folder, not an output folder of it: no eval_ name offered that is then refused (helper-60)
        (
            predict(other.workdir / "p.csv"),
            "written only by a command that reads that run: choose a path outside the run",
        ),
    ):
        capsys.readouterr()
        assert main(argv) == 1, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and said in err[0], err
    assert not (run.workdir / "my_eval").exists() and not (other.workdir / "eval_x").exists()


def test_no_out_lies_in_an_exported_model_folder(tmp_path, tiny_cohort, capsys):
    """helper-60: predict --out EXPORT/metadata.json --overwrite replaced an exported model's
    metadata (the export then failed its checksums); run folders and inputs had been kept from
    every --out, export folders not. Any path in or of one is refused, --overwrite or not."""
    from lnm_jax.exported import CHECKSUMS, METADATA
    from lnm_jax.fileio import OutputPathError
    from lnm_jax.output_guard import guard_output

    export = tmp_path / "model"
    export.mkdir()
    (export / METADATA).write_text("{}")
    (export / CHECKSUMS).write_text("")
    for out, kind in ((export / METADATA, "file"), (export / "p.csv", "file"), (export / "sub" / "x", "folder")):
        with pytest.raises(OutputPathError, match=f"the exported model folder {export}, every file of which is"):
            guard_output(out, overwrite=True, kind=kind)
    with pytest.raises(OutputPathError, match=f"--out {export} is the exported model folder"):
        guard_output(export, kind="folder")
    assert guard_output(tmp_path / "p.csv") == (tmp_path / "p.csv").resolve()
    # nor a training's --workdir (helper-62: it had trained and written there), said in one line
    argv = ["train", "--workdir", str(export / "w"), "--config.data.manifest", str(tiny_cohort)]
    assert main(argv) == 1 and not (export / "w").exists()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"--workdir {export / 'w'} lies in the exported model folder {export}" in err[0], err


def test_a_relative_manifest_is_stored_resolved(tiny_cohort, tmp_path, monkeypatch):
    monkeypatch.chdir(tiny_cohort.parent.parent)
    run = Run.create(tiny_config(Path(tiny_cohort.parent.name) / tiny_cohort.name, "us_lnm"), tmp_path / "run")
    assert load_config(run.workdir).data.manifest == str(tiny_cohort.resolve())
    monkeypatch.chdir(tmp_path)
    assert Run.open(run.workdir).cohort.sha256 == run.cohort.sha256


def test_a_stop_whose_interrupt_was_lost_writes_no_output(tmp_path, monkeypatch, capsys):
    """helper-113: a SIGTERM or Ctrl-C while JAX loads raised its exception inside a callback the
    interpreter ignores ("Exception ignored in: _xla_gc_callback"), and predict and export then
    wrote their output and exited 0. The stop the handler recorded is raised at the output's
    commit: nothing written, the signal's exit code and line; the next command is not stopped."""
    import signal

    from lnm_jax import fileio
    from lnm_jax.data.synth import synthetic

    real = synthetic._write_cohort

    def lost(*a, **k):  # the cohort rendered; then a SIGTERM whose exception the interpreter swallowed
        real(*a, **k)
        fileio.ask_stop(signal.SIGTERM)

    monkeypatch.setattr(synthetic, "_write_cohort", lost)
    argv = ["synth", "--out", str(tmp_path / "c"), "--patients", "4", "--size", "32"]
    assert main(argv) == 143
    assert capsys.readouterr().err.strip().endswith("lnm-jax synth: error: terminated (SIGTERM)")
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(synthetic, "_write_cohort", real)
    assert main(argv) == 0 and (tmp_path / "c" / "manifest.csv").is_file()


def test_a_file_that_cannot_be_opened_is_named_by_the_output_not_its_temporary(tmp_path):
    """helper-113: os.open's error names the temporary as a Path, which the check compared with
    its text: "…/.probs.csv.pid27763.tmp.csv: Read-only file system"."""
    from lnm_jax.fileio import write_csv

    (tmp_path / "afile").write_text("")
    with pytest.raises(OSError) as e:
        write_csv(tmp_path / "afile" / "probs.csv", [], ["a"])
    assert e.value.filename == str(tmp_path / "afile" / "probs.csv"), e.value


def test_out_of_memory_is_one_line_and_a_failing_lock_clean_up_hides_nothing(tmp_path, monkeypatch, capsys):
    """helper-113: under a memory limit the error handler's own imports failed (a 110-line
    traceback); a run folder made read-only under evaluate had the lock note's removal error
    replace evaluate's own, the lock left held. Each: the command's own error, one line."""
    from lnm_jax import cli
    from lnm_jax.run_files import RunFiles
    from lnm_jax.run_lock import hold

    def exhausted(argv):
        raise MemoryError()

    monkeypatch.setitem(cli.COMMANDS, "synth", exhausted)
    assert main(["synth", "--out", str(tmp_path / "c")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lnm-jax synth: error: out of memory (the host's)"), err
    files = RunFiles(tmp_path / "w")
    with pytest.raises(ValueError, match="the command's own"), hold(files.root, "evaluate", create=True):
        files.lock_owner.unlink()
        files.lock_owner.mkdir()  # its removal now fails (as under a folder made read-only)
        raise ValueError("the command's own")
    with hold(files.root, "evaluate", create=True):  # released
        pass


def test_deidentify_says_which_files_came_from_outside_the_manifests_folder(tiny_cohort, tmp_path):
    """helper-118: a row naming ``../other_study/...`` was copied into the de-identified package
    with nothing said. Each file from outside the manifest's folder is named (row, column, path)
    in a warning; the others are not."""
    import shutil

    from lnm_jax.data.privacy.deidentify import deidentify

    study = tmp_path / "study"
    study.mkdir()
    inside = 0

    def move_in(row):  # the first three rows' files copied into the study folder, the fourth left outside
        nonlocal inside
        inside += 1
        if inside > 3:
            return row
        for k in ("bmode", "ceus", "bmode_mask", "ceus_mask"):
            if row.get(k):
                shutil.copy(row[k], study / Path(row[k]).name)
                row[k] = Path(row[k]).name
        return row

    m = rewrite_manifest(tiny_cohort, study / "m.csv", move_in, rows=4)
    report = deidentify(m, tmp_path / "deid", tmp_path / "private" / "map.csv")
    fourth = list(csv.DictReader(m.open()))[3]
    expected = [f"row 4 {k} {fourth[k]}" for k in ("bmode", "ceus", "bmode_mask", "ceus_mask") if fourth.get(k)]
    assert expected and sorted(report.outside) == sorted(expected), report.outside
    said = [line for line in report.lines() if "outside the manifest's folder" in line]
    assert len(said) == 1 and said[0].startswith(f"warning: {len(report.outside)} file(s) copied from outside")
