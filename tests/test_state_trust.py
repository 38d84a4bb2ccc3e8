"""State you can trust (issue 28): configs checked whole before anything is written, one
writer per run folder, checkpoints and exports that prove what they are, derived files tied
to their checkpoint, divergence on every signal, de-identification by an allow-list, writes
that leave nothing half-done. Each case of ../shared/cases rebuilt on data the test makes."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from ml_collections import ConfigDict
from support import cpu_env, new_patients

from lnm_jax.cli import main
from lnm_jax.config import ConfigError, config_problems, demo_config, field_path
from lnm_jax.fileio import SEAL_KEY, DamagedFileError, sealed


def _fail_line(capsys) -> str:
    return capsys.readouterr().err.strip()


# ------------------------------------------------------------- configs checked whole


def test_impossible_settings_listed_together():
    c = demo_config()
    c.train.learning_rate, c.train.epochs, c.train.eval_batch_size = -1.0, -1, 0
    c.model.dtype, c.model.width, c.data.clip_frames = "float8", 0, 0
    c.data.augment.scale_min, c.data.augment.scale_max = 1.2, 0.9
    problems = config_problems(c)
    for field in (
        "train.learning_rate",
        "train.epochs",
        "train.eval_batch_size",
        "model.dtype",
        "model.width",
        "data.clip_frames",
        "data.augment.scale_min",
    ):
        assert any(p.startswith(field) for p in problems), (field, problems)
    assert config_problems(demo_config()) == []


def test_cli_config_errors_are_one_line_exit_2_and_write_nothing(tmp_path, capsys):
    work = tmp_path / "w"
    assert main(["train", "--workdir", str(work), "--config.train.epohcs=3"]) == 2
    assert "did you mean train.epochs" in _fail_line(capsys)
    assert main(["train", "--workdir", str(work), "--config.train.lr=0.1"]) == 2
    assert "did you mean train.learning_rate" in _fail_line(capsys)
    assert main(["train", "--workdir", str(work), "--config.train=3"]) == 2
    assert "group of fields" in _fail_line(capsys)
    assert main(["train", "--workdir", str(work), "--config.train.learning_rate=-1"]) == 2
    said = _fail_line(capsys)  # one problem: one line (it was a count, then the problem below it)
    assert "1 config problem: train.learning_rate: -1.0 is not a number > 0" in said and "\n" not in said
    assert main(["train", "--workdir", str(work), "--config.train.learning_rate=-1", "--config.train.epochs=0"]) == 2
    said = _fail_line(capsys).splitlines()  # several: a count, then one line each
    assert "2 config problems:" in said[0] and len(said) == 3
    # a value of the wrong type names the field's type (it was Python's "invalid literal for int()")
    for arg, said in (
        ("--config.train.checkpoint_every_epochs=1.5", "the field holds an integer, not '1.5'"),
        ("--config.train.learning_rate=fast", "the field holds a number, not 'fast'"),
    ):
        assert main(["train", "--workdir", str(work), arg]) == 2
        line = _fail_line(capsys)
        assert line.endswith(f"error: {arg}: {said}"), line
    assert not work.exists()  # a failed start leaves the folder as it found it
    (tmp_path / "syntax.py").write_text("def get_config(:\n")
    (tmp_path / "noget.py").write_text("x = 1\n")
    for name, said in (("syntax.py", "line 1"), ("noget.py", "get_config"), ("none.py", "does not exist")):
        assert main(["train", "--config", str(tmp_path / name), "--workdir", str(work)]) == 2
        assert said in _fail_line(capsys)
    assert main(["train", "--workdir", str(tmp_path / "typo"), "--resume"]) == 2
    assert "holds no run" in _fail_line(capsys) and not (tmp_path / "typo").exists()
    with pytest.raises(ConfigError):
        from lnm_jax.models.fusion import check_config

        c = demo_config()
        c.train.batch_size = 0
        check_config(c)


def test_every_seed_is_checked_for_the_range_the_libraries_take(tiny_cohort, tmp_path, capsys):
    """Seeds outside [0, 2**32 - 1] were accepted and failed late: ``seed`` 2**64 after the run
    folder was written (JAX's OverflowError, as an "unexpected" error), ``eval.seed`` -1 in
    every later evaluate (NumPy's "expected non-negative integer", no field named),
    ``data.split.seed`` 2**64 as a "cannot make a stratified split", ``data.synth.seed`` -1 as
    NumPy's message. Now each is one line naming the field, exit 2, nothing written; the
    largest seed works, its derived split seed (seed + 1) wrapping into scikit-learn's range."""
    from lnm_jax.data.cohorts.splits import holdout_split
    from lnm_jax.data.synth.synthetic import SynthParams
    from lnm_jax.fileio import MAX_SEED

    work = tmp_path / "w"
    for field in ("seed", "eval.seed", "data.split.seed", "data.synth.seed"):
        for bad in (-1, 2**64, MAX_SEED + 1):
            assert main(["train", "--workdir", str(work), f"--config.{field}={bad}"]) == 2, (field, bad)
            said = _fail_line(capsys)
            assert f"1 config problem: {field}: {bad} is not a whole number from 0 to 2**32 - 1" in said, said
    assert not work.exists()
    for command in (["norm-stats", "--manifest", str(tiny_cohort)], ["gradcam", "--workdir", str(work)]):
        assert main([*command, "--seed", "-1"]) == 2
        assert "argument --seed: -1 is not a whole number" in _fail_line(capsys)
    assert main(["synth", "--out", str(tmp_path / "s"), "--seed", str(2**64)]) == 2
    assert "seed must be a whole number from 0 to 2**32 - 1" in _fail_line(capsys)
    assert not (tmp_path / "s").exists()
    with pytest.raises(ValueError, match="seed must be"):
        SynthParams(seed=-1)
    ids, labels = [f"p{i:02d}" for i in range(40)], [i % 2 for i in range(40)]
    split = holdout_split(ids, labels, seed=MAX_SEED)  # its train/validation cut draws with seed + 1
    assert sorted(split.train + split.val + split.test) == ids
    assert holdout_split(ids, labels, seed=MAX_SEED) == split
    # the embedded cohort's other parameters too: a NaN strength or a rate outside (0, 1) had
    # been refused by the generator once the run folder existed (exit 1, the field unprefixed)
    for setting, said in (
        ("data.synth.bmode_strength=nan", "data.synth.bmode_strength must be a finite number, got nan"),
        ("data.synth.flag_sensitivity=2", "data.synth.flag_sensitivity must be in (0, 1), got 2"),
    ):
        assert main(["train", "--workdir", str(work), f"--config.{setting}"]) == 2, setting
        assert f"1 config problem: {said}" in _fail_line(capsys)
    assert not work.exists()


# ------------------------------------------------------------- one writer per run folder


def test_second_writer_refused_naming_the_holder(tmp_path):
    from lnm_jax.run_lock import RunLockedError, hold

    ready = tmp_path / "ready"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time, pathlib\n"
            "from lnm_jax.run_lock import hold\n"
            "with hold(sys.argv[1], 'train', create=True):\n"
            "    pathlib.Path(sys.argv[1], 'config.json').touch(); pathlib.Path(sys.argv[2]).touch(); time.sleep(60)\n",
            str(tmp_path / "run"),
            str(ready),
        ],
        env=cpu_env(),
    )
    try:
        for _ in range(200):
            if ready.exists():
                break
            time.sleep(0.1)
        assert ready.exists()
        with pytest.raises(RunLockedError, match=rf"PID {holder.pid} .*\(train"):
            with hold(tmp_path / "run", "evaluate"):
                pass
    finally:
        holder.kill()
        holder.wait()
    with hold(tmp_path / "run", "evaluate"):  # the kernel released the dead holder's lock
        pass
    # a reader on a folder that holds no run leaves nothing in it (it had left a .lock)
    (tmp_path / "empty").mkdir()
    with hold(tmp_path / "empty", "evaluate"):
        pass
    assert list((tmp_path / "empty").iterdir()) == []
    # a run folder this user cannot write: the command and the remedy named (helper-109: evaluate
    # --out elsewhere had said only ".lock: Read-only file system")
    import errno

    from filelock import FileLock

    def read_only(self, *a, **k):
        raise OSError(errno.EROFS, "Read-only file system", self.lock_file)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(FileLock, "acquire", read_only)
        with pytest.raises(OSError, match=r"Read-only file system: evaluate writes in the run folder .*copy the run"):
            with hold(tmp_path / "run", "evaluate"):
                pass


def test_a_run_folder_removed_or_replaced_under_its_writer_stops_it_and_nothing_is_said_done(tmp_path):
    """helper-110: a run folder deleted under evaluate or train was made again in part and the
    command said success; one deleted and started again by a second train had two trainings in
    one folder (the second's lock on a new lock file), the first one's clean-up removing the
    second's files. The writer checks that its folder and lock are the ones it took."""
    from lnm_jax.run_lock import RunFolderGoneError, check_held, folder_gone, hold

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}", encoding="utf-8")
    with hold(run, "train"):
        check_held(run)  # the folder it took: nothing said
    for change in ("replaced", "moved"):
        with pytest.raises(RunFolderGoneError, match=r"was removed, moved or replaced while train ran"):
            with hold(run, "train"):
                if change == "replaced":  # removed, and another run made in its place
                    shutil.rmtree(run)
                    run.mkdir()
                    (run / "config.json").write_text("{}", encoding="utf-8")
                else:
                    run.rename(tmp_path / "elsewhere")
                assert "removes nothing" in folder_gone(run)
                with pytest.raises(RunFolderGoneError):
                    check_held(run)
        if change == "moved":
            (tmp_path / "elsewhere").rename(run)
    assert folder_gone(run) is None  # nothing held any more
    # a protocol's sub-runs lie in the folder it locked: checked through it (helper-111: a no-op)
    with pytest.raises(RunFolderGoneError):
        with hold(run, "reproduce"):
            sub = run / "runs" / "triple" / "fold0"
            sub.mkdir(parents=True)
            check_held(sub)
            shutil.rmtree(run)
            run.mkdir()
            (run / "config.json").write_text("{}", encoding="utf-8")
            assert folder_gone(sub) is not None
    # the same inodes, another holder's note (a network file system reusing the freed inodes: helper-111)
    with pytest.raises(RunFolderGoneError):
        with hold(run, "train"):
            (run / "lock_owner.json").write_text('{"pid": 1, "host": "elsewhere"}', encoding="utf-8")
            assert folder_gone(run) is not None
    # an error inside is the error said (the folder's loss is not said over it)
    with pytest.raises(KeyError):
        with hold(run, "evaluate"):
            shutil.rmtree(run)
            raise KeyError("first")


def test_training_stops_at_the_epoch_after_its_folder_was_replaced(tiny_cohort, tmp_path, monkeypatch):
    """The loop's own check (helper-111: only hold's was tested): a run folder replaced after
    epoch 1's line stops training at epoch 2, nothing more written, no success."""
    from support import tiny_config

    from lnm_jax.metric_writer import MetricWriter
    from lnm_jax.run import Run
    from lnm_jax.run_lock import RunFolderGoneError, hold
    from lnm_jax.training.loop import train

    work = tmp_path / "run"
    written = MetricWriter.write

    def write_then_replace(self, record):
        written(self, record)
        if record["epoch"] == 1:
            shutil.rmtree(work)
            work.mkdir()
            (work / "config.json").write_text("{}", encoding="utf-8")  # another run in its place

    monkeypatch.setattr(MetricWriter, "write", write_then_replace)
    with pytest.raises(RunFolderGoneError, match="was removed, moved or replaced while train ran"):
        with hold(work, "train", create=True):
            train(Run.create(tiny_config(tiny_cohort, "us_lnm", epochs=3), work))
    assert not (work / "metrics.jsonl").exists()  # epoch 2's line not written into the other run


# ------------------------------------------------------------- checkpoints, exports, derived files


def _largest_array_file(run, kind="best"):
    files = [p for p in (run.files.checkpoints / kind).rglob("*") if p.is_file() and "/d/" in str(p)]
    return max(files, key=lambda p: p.stat().st_size)


def test_the_best_epochs_latest_is_a_copy_of_its_best_and_anything_else_is_written(tmp_path, monkeypatch):
    """The best epoch saves one state twice (``best``, then ``latest``): the second is the first's
    committed files copied, not orbax's per-array write again. The copy is independent files,
    restores bitwise, is what the kind's manager sees, and replaces the older step (one kept); a
    copy interrupted half-made is removed when a writer starts; other metadata or state, a
    ``best`` that orbax did not write (an epoch redone after a kill keeps its older one), and a
    kind's first save in a process (orbax's awaits its start-up cleanup) are written by orbax."""
    import jax
    import jax.numpy as jnp
    import orbax.checkpoint as ocp

    from lnm_jax.training import checkpoint as C

    state = {"w": jnp.arange(15.0).reshape(3, 5), "step": jnp.asarray(7, jnp.int32)}
    moved = {**state, "step": jnp.asarray(8, jnp.int32)}
    writes = []
    orbax_save = ocp.CheckpointManager.save

    def save(manager, *args, **kwargs):
        writes.append(manager.directory.name)
        return orbax_save(manager, *args, **kwargs)

    def steps(kind):
        return sorted(p.name for p in (tmp_path / "ckpt" / kind).iterdir())

    def step_of(ckpts, kind):
        return int(ckpts.restore(kind, state)[0]["step"])

    monkeypatch.setattr(ocp.CheckpointManager, "save", save)
    ckpts = C.RunCheckpoints(tmp_path / "ckpt")
    ckpts.save("latest", 0, moved, {"epoch": 0})
    ckpts.save("best", 1, state, {"epoch": 1})
    ckpts.save("latest", 1, state, {"epoch": 1}, copy_of="best")
    assert writes == ["latest", "best"]  # the latest of epoch 1 was copied
    best, latest = (tmp_path / "ckpt" / k / "1" for k in ("best", "latest"))
    files = sorted(p.relative_to(best) for p in best.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(latest) for p in latest.rglob("*") if p.is_file())
    assert all((best / f).stat().st_ino != (latest / f).stat().st_ino for f in files)  # not links
    assert steps("latest") == ["1"] and ckpts.latest_epoch("latest") == 1
    restored, meta = ckpts.restore("latest", state)
    assert meta["epoch"] == 1
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(restored), strict=True))
    # anything that differs is written by orbax: another number, another state
    ckpts.save("latest", 2, state, {"epoch": 2}, copy_of="best")
    ckpts.save("best", 3, state, {"epoch": 3})
    ckpts.save("latest", 3, moved, {"epoch": 3}, copy_of="best")
    assert writes == ["latest", "best", "latest", "best", "latest"]
    assert steps("latest") == ["3"] and step_of(ckpts, "latest") == 8

    # a copy interrupted half-made: the last committed one kept, the rest removed when a writer starts
    def interrupted(path):  # Ctrl-C once the files are copied, before the rename
        raise KeyboardInterrupt

    ckpts.save("best", 4, state, {"epoch": 4})
    with monkeypatch.context() as m, pytest.raises(KeyboardInterrupt):
        m.setattr(C, "_fsync", interrupted)
        ckpts.save("latest", 4, state, {"epoch": 4}, copy_of="best")
    ckpts.close()
    assert steps("latest") == ["3", f"4{C.TMP_MARK}-copy"]
    resumed = C.RunCheckpoints(tmp_path / "ckpt")
    assert resumed.latest_epoch("latest") == 3
    # the resumed run redoes epoch 4 with another state: orbax keeps best/4 (a step at or after
    # it exists) and writes nothing, so the latest is not its copy; and a kind's first save in a
    # process is orbax's, which awaits its manager's start-up cleanup (the half-made copy removed)
    del writes[:]
    resumed.save("best", 4, moved, {"epoch": 4})
    resumed.save("latest", 4, moved, {"epoch": 4}, copy_of="best")
    assert writes == ["best", "latest"] and step_of(resumed, "best") == 7 and step_of(resumed, "latest") == 8
    assert steps("latest") == ["4"]
    resumed.save("best", 5, state, {"epoch": 5})
    resumed.save("latest", 5, state, {"epoch": 5}, copy_of="best")
    assert writes == ["best", "latest", "best"] and steps("latest") == ["5"]  # copied again
    resumed.close()


def test_checkpoint_round_trip_is_bitwise_and_placed_as_the_state_it_restores_into(tmp_path):
    """Saved from host arrays, restored as device arrays with the target state's shardings,
    every leaf bitwise (dtypes included); a state saved before (as device arrays) reads the same."""
    import jax
    import jax.numpy as jnp
    import orbax.checkpoint as ocp
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    from lnm_jax.training.checkpoint import RunCheckpoints

    mesh = Mesh(np.array(jax.devices()[:1]), ("data",))
    replicated = NamedSharding(mesh, PartitionSpec())
    rng = np.random.default_rng(0)
    state = {
        "w": jax.device_put(rng.normal(size=(3, 5)).astype(np.float32), replicated),
        "step": jnp.asarray(7, jnp.int32),
        "mu": [jnp.asarray(rng.normal(size=(4,)), jnp.bfloat16), jnp.zeros((2, 2, 3), jnp.float32)],
    }
    ckpts = RunCheckpoints(tmp_path / "ckpt")
    ckpts.save("latest", 1, state, {"epoch": 1})
    # a checkpoint of the earlier layout (device arrays handed to orbax as they are)
    opts = ocp.CheckpointManagerOptions(max_to_keep=1, create=True, enable_async_checkpointing=False)
    ocp.CheckpointManager(tmp_path / "ckpt" / "best", options=opts).save(
        1, args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave({"epoch": 1}))
    )
    ckpts.close()
    ckpts = RunCheckpoints(tmp_path / "ckpt", create=False)
    for kind in ("latest", "best"):
        restored, meta = ckpts.restore(kind, state)
        assert meta["epoch"] == 1
        for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(restored)):
            assert isinstance(b, jax.Array) and b.sharding == a.sharding and b.dtype == a.dtype
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    ckpts.close()


def test_a_checkpoint_replaced_while_read_is_read_again_not_called_damaged(tmp_path, monkeypatch):
    """Readers (export, predict) take no run lock. A ``train --resume`` in the same folder saved
    a newer ``best`` and removed the one an export had begun to read: the export said the
    checkpoint was "damaged or incomplete ... retrain". Now the newer one is read; one replaced
    again at every attempt is one line saying a process is training the run; a truly damaged
    one is still called damaged."""
    import shutil

    from lnm_jax.training.checkpoint import (
        READ_ATTEMPTS,
        CheckpointCorruptError,
        CheckpointReplacedError,
        RunCheckpoints,
    )

    state = {"w": np.arange(6.0, dtype=np.float32)}
    writer = RunCheckpoints(tmp_path / "ckpt")
    writer.save("best", 1, state, {"epoch": 1})
    reader = RunCheckpoints(tmp_path / "ckpt", create=False)
    assert reader.latest_epoch("best") == 1  # the reader has listed epoch 1 ...
    writer.save("best", 2, {"w": state["w"] + 1}, {"epoch": 2})  # ... the writer replaces it
    assert not (tmp_path / "ckpt" / "best" / "1").exists()
    got, meta = reader.restore("best", state)
    assert meta["epoch"] == 2 and got["w"].tolist() == (state["w"] + 1).tolist()
    assert reader.meta("best")[0]["epoch"] == 2
    # replaced at every attempt: said so, not "damaged"
    calls = []
    monkeypatch.setattr(reader, "_replaced", lambda kind, step: calls.append(step) or True)
    shutil.rmtree(tmp_path / "ckpt" / "best" / "2" / "state")
    with pytest.raises(CheckpointReplacedError, match="a process is training this run"):
        reader.restore("best", state)
    assert len(calls) == READ_ATTEMPTS
    monkeypatch.undo()
    with pytest.raises(CheckpointCorruptError, match="damaged or incomplete"):  # not replaced: damaged
        reader.restore("best", state)
    writer.close()
    reader.close()


@pytest.mark.parametrize("reader", ["checkpoint", "converted backbone"])
def test_orbax_reads_do_not_format_the_arrays_they_read(reader, tmp_path, monkeypatch):
    """Orbax runs every read through asyncio.run; on the main thread of CPython < 3.13 that
    formats the finished task, so the repr of every array read (fileio.off_main_thread: 2.4 of a
    paper-size restore's 2.5 s were 1.2 s without it). No finished task is formatted during a
    read, and the arrays come back as written."""
    import asyncio.base_futures
    import threading

    from lnm_jax.training.checkpoint import RunCheckpoints
    from lnm_jax.weights.io import load_backbone, save_backbone

    assert threading.current_thread() is threading.main_thread()  # where the cost arises
    variables = {"params": {"w": np.arange(12.0, dtype=np.float32).reshape(3, 4)}, "batch_stats": {"m": np.ones(4)}}
    if reader == "checkpoint":
        ckpts = RunCheckpoints(tmp_path / "ckpt")
        ckpts.save("latest", 1, variables, {"epoch": 1})
        read = lambda: ckpts.restore("latest", variables)[0]  # noqa: E731
    else:
        save_backbone(tmp_path / "backbone", variables, {"arch": "test", "variant": "torchvision"})
        read = lambda: load_backbone(tmp_path / "backbone")[0]  # noqa: E731
    formatted = []
    orig = asyncio.base_futures._future_repr_info
    monkeypatch.setattr(asyncio.base_futures, "_future_repr_info", lambda f: formatted.append(f) or orig(f))
    got = read()
    assert formatted == []
    np.testing.assert_array_equal(np.asarray(got["params"]["w"]), variables["params"]["w"])
    np.testing.assert_array_equal(np.asarray(got["batch_stats"]["m"]), variables["batch_stats"]["m"])


def test_ctrl_c_during_a_save_lets_the_save_finish_then_stops(tmp_path, monkeypatch):
    """An interrupt that arrives while a checkpoint is being written is raised (the command
    stops), after the save in flight has committed: not abandoned half-way by asyncio's own
    SIGINT handler (fileio.off_main_thread); the libraries' logging is as it was before (a
    notebook goes on; it stayed off for the rest of the process, and a later test in the same
    worker lost orbax's log lines). The signal comes while the main thread waits: a
    `Thread.join` cut short there (CPython 3.11) returned with the save still in flight."""
    import logging
    import signal
    import threading

    from lnm_jax.training.checkpoint import LIBRARY_LOGGERS, RunCheckpoints

    def logging_state():
        return [(lg.handlers[:], lg.propagate) for lg in map(logging.getLogger, LIBRARY_LOGGERS)], threading.excepthook

    assert threading.current_thread() is threading.main_thread()  # where signals are handled
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    before = logging_state()
    try:
        state = {"w": np.arange(6.0, dtype=np.float32), "step": np.asarray(3, np.int32)}
        ckpts = RunCheckpoints(tmp_path / "ckpt")
        manager = ckpts._managers["latest"]
        real_save = manager.save

        def interrupted_save(*args, **kwargs):
            time.sleep(0.2)  # the main thread is waiting for this save by now
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C while the save is in flight
            time.sleep(0.3)
            return real_save(*args, **kwargs)

        monkeypatch.setattr(manager, "save", interrupted_save)
        with pytest.raises(KeyboardInterrupt):
            ckpts.save("latest", 1, state, {"epoch": 1})
        assert ckpts.latest_epoch("latest") == 1
        restored, meta = ckpts.restore("latest", state)
        assert meta["epoch"] == 1
        np.testing.assert_array_equal(np.asarray(restored["w"]), state["w"])
        assert logging_state() == before
    finally:
        signal.signal(signal.SIGINT, previous)


class _RaisesWhenDropped:
    """Calls ``fn`` when dropped: CPython reports what ``__del__`` raises through
    ``PyErr_WriteUnraisable``, the C call TensorStore's threads report a failed callback with,
    so the report takes the real path (``sys.unraisablehook``), not one a test imitates."""

    def __init__(self, fn):
        self.fn = fn

    def __del__(self):
        self.fn()


def _late_loop_callback() -> None:
    """A TensorStore read finishing after orbax's event loop closed: its callback's
    ``call_soon_threadsafe`` raises, reported as unraisable (shared case
    ``checkpoint-corruption`` (b): up to hundreds of these tracebacks around, and at times
    inside, the one error line, on most runs)."""
    import asyncio

    loop = asyncio.new_event_loop()
    loop.close()
    _RaisesWhenDropped(lambda: loop.call_soon_threadsafe(lambda: None))


def _not_a_late_callback() -> None:
    _RaisesWhenDropped(lambda: {}["not a late callback"])


def test_damaged_checkpoint_is_one_clear_error(triple_run, copy_run, capfd, monkeypatch):
    from lnm_jax.training.checkpoint import CheckpointCorruptError

    reported = []  # what reaches the hook below the package's (the console's, outside pytest)
    monkeypatch.setattr(sys, "unraisablehook", reported.append)
    run = copy_run(triple_run)
    run.restore("best")  # intact: restores
    victim = _largest_array_file(run)
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x40
    victim.write_bytes(bytes(data))
    run.forget_checkpoints()
    with pytest.raises(CheckpointCorruptError, match="checkpoints/best"):
        run.restore("best")
    victim.write_bytes(bytes(data[: len(data) // 2]))  # truncated
    run.forget_checkpoints()
    with pytest.raises(CheckpointCorruptError) as e:
        run.restore("best")
    assert len(str(e.value).splitlines()) == 1
    # the reads still in flight when the restore failed report into a closed event loop: kept
    # off the console; any other report still reaches it
    capfd.readouterr()
    _late_loop_callback()
    assert reported == [] and "Event loop is closed" not in capfd.readouterr().err
    _not_a_late_callback()
    assert [type(r.exc_value) for r in reported] == [KeyError]


def test_a_resume_that_cannot_read_its_checkpoint_leaves_the_run_record_as_it_was(triple_run, copy_run, tiny_cohort):
    """``train --resume`` on a damaged checkpoint fails with the one error and leaves
    ``config.json`` and ``run_info.json`` as they were (a fresh-user trial found them rewritten
    with the failed attempt's epochs and command); a resume that reads its checkpoint records
    itself, keeping the records of the processes before it."""
    from support import tiny_config

    from lnm_jax.run import Run
    from lnm_jax.run_record import recorded_before, write_run_record
    from lnm_jax.training.checkpoint import CheckpointCorruptError
    from lnm_jax.training.loop import train

    run = copy_run(triple_run)
    before = {f: f.read_bytes() for f in (run.files.config, run.files.run_info)}
    victim = _largest_array_file(run, "latest")
    intact = victim.read_bytes()
    victim.write_bytes(intact[: len(intact) // 2])
    config = tiny_config(tiny_cohort, "triple", epochs=3)
    with pytest.raises(CheckpointCorruptError, match="checkpoints/latest"):
        train(Run.create(config, run.workdir, resume=True))
    assert {f: f.read_bytes() for f in before} == before
    victim.write_bytes(intact)
    train(Run.create(config, run.workdir, resume=True))
    assert json.loads(run.files.config.read_text())["train"]["epochs"] == 3
    # and keeps the record of the process that trained the first epochs, oldest first
    # (each without its own seal: the record's seal covers them)
    first = {k: v for k, v in json.loads(before[run.files.run_info]).items() if k != SEAL_KEY}
    info = json.loads(run.files.run_info.read_text())
    assert info["earlier"] == [first] and info["created"] >= first["created"]
    # a further resume appends (what the loop calls once the checkpoint is read)
    write_run_record(config, run.files, before=recorded_before(run.files))
    second = {k: v for k, v in info.items() if k not in ("earlier", SEAL_KEY)}
    assert json.loads(run.files.run_info.read_text())["earlier"] == [first, second]
    # a record that cannot be read stops the resume before anything trains, saying so
    run.files.run_info.write_text('{"created": ')
    with pytest.raises(DamagedFileError, match=r"run_info.json is not valid JSON .* move it aside"):
        Run.create(tiny_config(tiny_cohort, "triple", epochs=5), run.workdir, resume=True)
    # its earlier records edited into something else than a list of them: the resume spread
    # them into its own list (a string character by character) and wrote that, after training
    for earlier in ("first", [1, 2], {"created": 1}):
        run.files.run_info.write_text(json.dumps(sealed({**second, "earlier": earlier})))  # its seal remade
        with pytest.raises(DamagedFileError, match=r"run_info.json: 'earlier' is not a list of records: restore"):
            Run.create(tiny_config(tiny_cohort, "triple", epochs=5), run.workdir, resume=True)


def test_a_checkpoint_of_another_model_is_refused_naming_the_field_and_the_first_array(
    triple_run, copy_run, tiny_cohort
):
    """A run whose config.json no longer describes its checkpoints (edited: another width)
    is refused when the checkpoint is read, naming the field and the width trained with (the
    checkpoint's record of its model fields), for a resume too; a checkpoint without that record
    (written before it existed) is refused naming the first array that differs. Orbax restored
    the stored arrays whatever the template's shapes, and the resume failed at its first step
    with a ScopeParamShapeError after rewriting the run's record and history (fresh-user trial)."""
    from support import tiny_config

    from lnm_jax.run import Run
    from lnm_jax.run_config import load_config
    from lnm_jax.training.checkpoint import CheckpointMismatchError
    from lnm_jax.training.loop import train

    run = copy_run(triple_run)
    stored = json.loads(run.files.config.read_text())
    width = stored["model"]["width"]
    run.files.config.write_text(json.dumps({**stored, "model": {**stored["model"], "width": 2 * width}}))
    field = rf"model.width: {2 * width}, trained with {width}"
    with pytest.raises(DamagedFileError, match=rf"config.json: .*checkpoints/(best|latest)/\d+ .*\({field}\)"):
        Run.open(run.workdir)  # the newest checkpoint's record, read before anything else
    says = rf"checkpoints/best/\d+ holds another model.* float32\[{width}\] there, float32\[{2 * width}\] in the config"
    edited = Run(load_config(run.workdir), run.workdir, triple_run.cohort, triple_run.split)
    with pytest.raises(CheckpointMismatchError, match=says):  # the arrays' own check, without the record
        run.checkpoints().restore("best", edited.abstract_state())
    before = _snapshot(run.workdir)
    config = tiny_config(tiny_cohort, "triple", epochs=3)
    config.model.width = 2 * width
    with pytest.raises(DamagedFileError, match=rf"checkpoints/latest/\d+ .*\({field}\)"):
        train(Run.create(config, run.workdir, resume=True))
    assert _snapshot(run.workdir) == before


def test_damaged_converted_backbone_is_one_clear_error(tmp_path, capfd):
    """A converted (or pretrained) backbone is read through orbax like a checkpoint: a truncated
    array file is one error naming the backbone, and its late reads stay off the console."""
    import jax
    import jax.numpy as jnp
    from support import BACKBONE

    from lnm_jax.models.resnet import resnet
    from lnm_jax.training.state import init_variables
    from lnm_jax.weights.io import load_backbone, save_backbone

    variables = init_variables(resnet(BACKBONE, width=8), jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    save_backbone(tmp_path / "bb", jax.device_get(variables), {"arch": BACKBONE, "variant": "torchvision"})
    load_backbone(tmp_path / "bb")  # intact: reads
    files = [p for p in (tmp_path / "bb" / "variables").rglob("*") if p.is_file() and "/d/" in str(p)]
    victim = max(files, key=lambda p: p.stat().st_size)
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    capfd.readouterr()
    with pytest.raises(ValueError, match=r"converted backbone .*/bb cannot be read \(.*\); it is damaged") as e:
        load_backbone(tmp_path / "bb")
    assert len(str(e.value).splitlines()) == 1 and "Event loop is closed" not in capfd.readouterr().err
    # however long the library's message, the number that says why survives the shortening
    assert f"value of size {victim.stat().st_size})" in str(e.value), str(e.value)


def test_error_line_shortens_the_middle_never_the_numbers_at_the_end():
    from lnm_jax.fileio import error_line

    e = ValueError("OUT_OF_RANGE: Error reading " + "x" * 500 + " is not valid for value of size 749330\nmore")
    line = error_line(e, limit=120)
    assert len(line) <= 120 and line.startswith("ValueError: OUT_OF_RANGE") and line.endswith("size 749330")
    assert " ... " in line and "more" not in line
    assert error_line(KeyError("k")) == "KeyError: 'k'"


def test_read_json_names_the_file_the_place_and_what_is_wrong(tmp_path):
    from lnm_jax.fileio import read_json, read_json_lines

    f = tmp_path / "doc.json"
    for text, says in [
        ('{"epoch": ', r"doc.json is not valid JSON \(Expecting value: line 1 column 11\); it is damaged"),
        ('{"epoch": 1}\n{"epoch": 2}', r"doc.json is not valid JSON \(Extra data: line 2 column 1\)"),
        ("[1, 2]", r"doc.json holds a JSON list, not an object"),
        ('{"arch": "resnet50"}', r"doc.json lacks 'variant': convert"),
    ]:
        f.write_text(text)
        with pytest.raises(DamagedFileError, match=says):
            read_json(f, required=("variant",), remedy="convert it again")
    f.write_text("[" * 100_000)  # deeper than Python's parser goes
    with pytest.raises(DamagedFileError, match=r"doc.json is not JSON this package wrote \(nested too deep\)"):
        read_json(f)
    f.write_bytes(b'{"a": "\xff"}')
    with pytest.raises(DamagedFileError, match=r"doc.json is not UTF-8 text \(byte 7\)"):
        read_json(f)
    f.write_text('{"epoch": 1}\n\n{"epoch": 2}\n{"epo')
    with pytest.raises(DamagedFileError, match=r"doc.json line 4 is not valid JSON \(Unterminated string"):
        read_json_lines(f)
    f.write_text('{"epoch": 1}\n\n{"epoch": 2}\n')
    assert read_json_lines(f, required=("epoch",)) == [{"epoch": 1}, {"epoch": 2}]
    with pytest.raises(FileNotFoundError):
        read_json(tmp_path / "absent.json")


def _snapshot(folder) -> dict:
    """Size and time of every path under ``folder`` but the lock file (any writer command makes
    it) and the run's log (the libraries' messages of a checkpoint read, when they log one, go
    there: a record of the attempt, not of the run's state)."""
    from lnm_jax.run_files import LOCK, TRAIN_LOG

    paths = [p for p in sorted(folder.rglob("*")) if p.name not in (LOCK, TRAIN_LOG)]
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in paths}


def _cut_mid_line(data: bytes) -> bytes:
    """``data`` cut halfway through the line that holds its middle byte: never at a line's end,
    where a JSON-lines file would still parse (its last records lost, a different defect), as a
    plain half cut did where the float digits of the history happened to put a line break at the
    half (seen on an AMD machine)."""
    middle = len(data) // 2
    start = data.rfind(b"\n", 0, middle) + 1
    end = data.find(b"\n", middle)
    end = len(data) if end < 0 else end
    return data[: start + max(1, (end - start) // 2)]


def test_a_damaged_run_file_is_one_line_naming_it_and_nothing_is_written(triple_run, copy_run, tmp_path, capsys):
    """Every JSON file of a run folder that a command reads back (the config, the splits, the
    intensity reference, the training environment, the history), truncated as a full disk or
    an interrupted copy leaves it: one line naming the file and where it breaks, never the bare
    parser message ("Expecting value: line 2 column 1 (char 11)") that named no file, and the
    run folder as it was (a fresh-user trial found evaluate writing half its outputs before
    reading run_info.json, and a resume rewriting config.json before reading the history)."""
    from lnm_jax import run_files as F

    out = tmp_path / "export"
    for name, command in (
        (F.CONFIG, ["export", "--out", str(out)]),
        (F.SPLITS, ["export", "--out", str(out)]),
        (F.INTENSITY_REFERENCE, ["evaluate"]),
        (F.RUN_INFO, ["evaluate"]),
        (F.HISTORY, ["train", "--resume", "--config.train.epochs=3"]),
    ):
        run = copy_run(triple_run)
        path = run.workdir / name
        path.write_bytes(_cut_mid_line(path.read_bytes()))
        before = _snapshot(run.workdir)
        capsys.readouterr()
        assert main([*command, "--workdir", str(run.workdir)]) == 1, name
        err = capsys.readouterr().err.strip().splitlines()
        line = r" line \d+" if name == F.HISTORY else ""  # a JSON-lines file: the line too
        assert len(err) == 1 and re.search(rf"error: {re.escape(str(path))}{line} is not valid JSON \(", err[0]), err
        assert _snapshot(run.workdir) == before and not out.exists(), name
        shutil.rmtree(run.workdir)


def test_a_resume_without_a_latest_checkpoint_does_not_start_over(triple_run, copy_run, capsys):
    """A run that holds a 'best' checkpoint but no 'latest' one (deleted, or its save failed on
    a full disk after 'best' was saved) is refused by --resume, naming what is there: it said
    "no checkpoint yet; starting at epoch 1" and retrained, replacing the best checkpoint and the
    history (fresh-user trial)."""
    run = copy_run(triple_run)
    shutil.rmtree(run.workdir / "checkpoints" / "latest")
    before = _snapshot(run.workdir)
    capsys.readouterr()
    assert main(["train", "--resume", "--config.train.epochs=3", "--workdir", str(run.workdir)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    best = run.checkpoints().latest_epoch("best")
    assert len(err) == 1 and f"holds a 'best' checkpoint (epoch {best}) but no 'latest' one to resume" in err[0], err
    assert _snapshot(run.workdir) == before


def test_a_resume_refuses_a_history_that_lacks_epochs_or_holds_text(triple_run, copy_run, capsys):
    """A resumed run rewrites its history with the epochs its checkpoint had finished, then
    appends: a metrics.jsonl deleted, cut short or with a value edited into text was taken as it
    was (the history kept only the resumed epochs; a string val_auc went on to the convergence
    curves; fresh-user trial), as was a number edited into another before each record was
    sealed. Each is one line naming the file, and the run folder stays as it was."""
    from lnm_jax import run_files as F

    def lines(path):
        return path.read_text().splitlines()

    for edit, says in (
        (lambda p: p.unlink(), r"metrics.jsonl is missing: the checkpoint resumed from had finished epochs 1-2"),
        (
            lambda p: p.write_text(lines(p)[1] + "\n"),
            r"metrics.jsonl: lacks epoch 1 that the checkpoint .* \(epochs 1-2\)",
        ),
        (
            lambda p: p.write_text(
                lines(p)[0].replace('"val_auc": ', '"val_auc": "high", "was": ') + "\n" + lines(p)[1] + "\n"
            ),
            r"metrics.jsonl: record 1 \(epoch 1\)'s values do not match the record_sha256 written with them",
        ),
        (  # a number edited into another (each record is sealed: it had gone on unsaid)
            lambda p: p.write_text(lines(p)[0] + "\n" + re.sub(r'"val_auc": [0-9.]+', '"val_auc": 0.99', lines(p)[1])),
            r"metrics.jsonl: record 2 \(epoch 2\)'s values do not match the record_sha256 written with them",
        ),
    ):
        run = copy_run(triple_run)
        edit(run.workdir / F.HISTORY)
        before = _snapshot(run.workdir)
        capsys.readouterr()
        assert main(["train", "--resume", "--config.train.epochs=3", "--workdir", str(run.workdir)]) == 1, says
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and re.search(says, err[0]), err
        assert _snapshot(run.workdir) == before, says
        shutil.rmtree(run.workdir)


def test_an_edited_stored_config_is_checked_as_a_new_one_naming_the_file(triple_run, copy_run, capsys):
    """A run's config.json edited by hand (a width that is no number, a group replaced) is one
    line naming the file and every field outside its range, before anything is built from it
    (it was a TypeError from deep inside the model's initialisation)."""
    from lnm_jax.run import Run

    run = copy_run(triple_run)
    stored = json.loads(run.files.config.read_text())
    edited = {**stored, "model": {**stored["model"], "width": "wide"}, "train": {**stored["train"], "batch_size": -3}}
    run.files.config.write_text(json.dumps(edited))
    with pytest.raises(DamagedFileError, match=r"config.json: model.width: 'wide' is not .*; train.batch_size: -3"):
        Run.open(run.workdir)
    run.files.config.write_text(json.dumps({**stored, "data": {**stored["data"], "augment": 5}}))
    with pytest.raises(DamagedFileError, match=r"config.json: data.augment: 5 is not a group of fields"):
        Run.open(run.workdir)
    # the inputs deleted: named as absent (it said "got ''", as if an empty string were stored)
    run.files.config.write_text(json.dumps({k: v for k, v in stored.items() if k != "modalities"}))
    with pytest.raises(DamagedFileError, match=r"config.json: modalities: absent \(the model's inputs"):
        Run.open(run.workdir)
    # a deleted field is not taken for a typo of a sibling (ml_collections' "did you mean")
    run.files.config.write_text(
        json.dumps({**stored, "train": {k: v for k, v in stored["train"].items() if k != "batch_size"}})
    )
    capsys.readouterr()
    assert main(["evaluate", "--workdir", str(run.workdir)]) == 1
    err = capsys.readouterr().err
    said = "config.json: it lacks train.batch_size (this version's default: 8), which every run's config holds"
    assert said in err and "Did you mean" not in err, err
    # a field deleted: the command names the file and the field by its full name (it was
    # "unexpected AttributeError: 'backbone'", then 'backbone' with no file)
    for group, field in (("model", "backbone"), ("model", "width"), ("eval", "fold_bn")):
        kept = {k: v for k, v in stored[group].items() if k != field}
        run.files.config.write_text(json.dumps({**stored, group: kept}))
        capsys.readouterr()
        assert main(["export", "--workdir", str(run.workdir), "--out", str(run.workdir.parent / "export")]) == 1
        err = capsys.readouterr().err.strip()
        assert err.startswith(
            f"lnm-jax export: error: {run.files.config}: it lacks {group}.{field} (this version's "
        ), err
        assert err.endswith(
            "it was edited or is damaged; restore it from a copy, or, where an older lnm-jax wrote the "
            "run, add the field with the value it trained with"
        ), err
    # evaluate reads the model card's fields before it writes anything (it had rewritten
    # eval_best/metrics.json before stopping at a deleted train.epochs: fresh-user trial)
    train_kept = {k: v for k, v in stored["train"].items() if k != "epochs"}
    run.files.config.write_text(json.dumps({**stored, "train": train_kept}))
    kept = lambda: {p: p.read_bytes() for p in run.workdir.rglob("*") if p.is_file()}  # noqa: E731
    before = kept()
    # the test patients have lesion masks: evaluate writes Grad-CAM files (eval_best/gradcam_test)
    assert any(run.cohort.by_id()[i].mask("bmode") is not None for i in run.split.subset("test"))
    capsys.readouterr()
    assert main(["evaluate", "--workdir", str(run.workdir)]) == 1
    assert "it lacks train.epochs (this version's default: " in capsys.readouterr().err
    after = kept()
    for files in (before, after):
        files.pop(run.workdir / ".lock", None)  # the run lock the commands take
    assert after == before
    run.files.config.write_text(json.dumps(stored))
    # a name two groups hold is told apart by the fields its group kept
    assert field_path("seed", stored["data"]["split"].keys() - {"seed"}) == "data.split.seed"
    assert field_path("seed", stored.keys() - {"seed"}) == "seed"
    assert field_path("widht", stored["model"].keys()) == "widht"  # none holds it: as given
    norm = {k: v for k, v in stored["data"]["norm"].items() if k != "bmode"}
    assert config_problems(ConfigDict({**stored, "data": {**stored["data"], "norm": norm}})) == [
        "data.norm: no entry for 'bmode', an input of modalities"  # it was a KeyError at the first batch
    ]
    # values of another type than the field's: a string "false" was taken as true, a misspelt
    # fusion (a choice of the model's) named no file
    typed = {
        **stored,
        "eval": {**stored["eval"], "fold_bn": "false"},
        "model": {**stored["model"], "fusion": "lat"},
        "data": {**stored["data"], "on_device": 0, "augment": {**stored["data"]["augment"], "flip": None}},
        "protocol": {**stored["protocol"], "settings": "triple"},
    }
    assert sorted(config_problems(ConfigDict(typed))) == [
        "data.augment.flip: None is not true or false",
        "data.on_device: 0 is not true or false",
        "eval.fold_bn: 'false' is not true or false",
        "model.fusion: 'lat' is not one of 'concat', 'late'",
        "protocol.settings: 'triple' is not a list",
    ]
    # every group of fields, a misspelt backbone, modalities of another type, unknown fields
    # (each was an "unexpected" TypeError or AttributeError, a line naming no file, or ignored)
    for edit, problem in (
        ({"train": {**stored["train"], "plateau": 1}}, "train.plateau: 1 is not a group of fields"),
        ({"protocol": None}, "protocol: None is not a group of fields"),
        ({"task": 5}, "task: 5 is not a group of fields"),
        ({"modalities": None}, "modalities: None is not a string"),
        ({"model": {**stored["model"], "backbone": "resnet5"}}, "model.backbone: 'resnet5' is not one of 'resnet10'"),
        ({"model": {**stored["model"], "widht": 16}}, "model.widht: not a field of the config (did you mean model.wid"),
        ({"foo": 1}, "foo: not a field of the config"),
    ):
        found = config_problems(ConfigDict({**stored, **edit}))
        assert len(found) == 1 and found[0].startswith(problem), (edit, found)
    run.files.config.write_text(json.dumps(typed))
    with pytest.raises(DamagedFileError, match=r"config.json: model.fusion: 'lat' is not one of"):
        Run.open(run.workdir)
    # a run trained on a manifest, its config edited to the embedded cohort: opening it to read
    # synthesised that cohort into the run folder, then failed on the split
    run.files.config.write_text(json.dumps({**stored, "data": {**stored["data"], "manifest": ""}}))
    before = sorted(p.name for p in run.workdir.iterdir())
    with pytest.raises(DamagedFileError, match=r"config.json: data.manifest is empty .* holds none") as e:
        Run.open(run.workdir)
    # both causes named: the embedded cohort's folder moved (the trial's case), or another manifest
    assert "cohort/ folder moved" in str(e.value) and "trained on another manifest" in str(e.value)
    assert sorted(p.name for p in run.workdir.iterdir()) == before
    del stored["data"]
    assert config_problems(ConfigDict(stored))[:2] == ["data: missing", "data.augment: missing"]


def test_a_config_edited_to_describe_another_model_is_refused_naming_the_field(triple_run, copy_run, capsys, tmp_path):
    """Each checkpoint records the config fields that define its model (inputs, architecture,
    preprocessing: config.MODEL_FIELDS). A config.json edited afterwards to say otherwise is one
    line naming the file, each field and the value trained with, and nothing is written: an
    image size edited 32 -> 48 had been accepted (evaluate rewrote eval_best with another AUC),
    a deleted flag encoding read as 'raw' for a run trained 'centred' (46 of 60 probabilities
    moved), an edited backbone or input set blamed the checkpoint as damaged (fresh-user trial)."""
    from lnm_jax.config import MODEL_FIELDS, model_field_changes, model_fields

    stored = json.loads(triple_run.files.config.read_text())
    recorded = triple_run.checkpoints().meta("best")[0]["model_fields"]
    assert recorded == model_fields(triple_run.config) and set(recorded) == set(MODEL_FIELDS)
    run = copy_run(triple_run)
    out = tmp_path / "elsewhere"
    for edit, expected in (
        ({"data": {**stored["data"], "image_size": 48}}, "data.image_size: 48, trained with 32"),
        ({"model": {**stored["model"], "backbone": "resnet18"}}, 'model.backbone: "resnet18", trained with "resnet10"'),
        ({"modalities": "bmode,us_lnm"}, 'modalities: "bmode,us_lnm", trained with "bmode,ceus,us_lnm"'),
        (
            {
                "data": {
                    **stored["data"],
                    "norm": {**stored["data"]["norm"], "bmode": {"mean": [0.5] * 3, "std": [0.2] * 3}},
                }
            },
            "data.norm.bmode.mean: [0.5, 0.5, 0.5], trained with [",
        ),
    ):
        run.files.config.write_text(json.dumps({**stored, **edit}))
        before = _snapshot(run.workdir)
        for command in (["evaluate"], ["predict", "--manifest", triple_run.config.data.manifest, "--out", str(out)]):
            capsys.readouterr()
            assert main([*command, "--workdir", str(run.workdir)]) == 1, (edit, command)
            err = capsys.readouterr().err.strip().splitlines()
            assert len(err) == 1 and f"{run.files.config}: it describes another model than checkpoint " in err[0], err
            assert expected in err[0] and "damaged checkpoint" not in err[0], err
            if expected.startswith("data.norm"):  # only what differs (it printed the whole group)
                assert "ceus" not in err[0].split("trained as")[1], err
        assert _snapshot(run.workdir) == before and not out.exists(), edit
    # a field deleted, even one whose default is what the model was trained with, is named before
    # anything is read or written (helper-60: a deleted data.augment.flip passed every check and
    # a resume failed on it with a KeyError after writing to the run folder)
    written = run.files.config.read_text()
    run.files.config.write_text(
        json.dumps({**stored, "model": {k: v for k, v in stored["model"].items() if k != "lesion_head"}})
    )
    before = _snapshot(run.workdir)
    capsys.readouterr()
    for command in (
        ["predict", "--manifest", triple_run.config.data.manifest, "--out", str(out)],
        ["train", "--resume"],
    ):
        assert main([command[0], "--workdir", str(run.workdir), *command[1:]]) == 1
        err = capsys.readouterr().err
        assert 'config.json: it lacks model.lesion_head (this version\'s default: ""), which every' in err, err
    assert not out.exists() and _snapshot(run.workdir) == before
    run.files.config.write_text(written)
    # one deleted whose default is not (a run trained with the flag as -1/+1) is named
    centred = {**recorded, "model.flag_encoding": "centred"}
    config = ConfigDict({**stored, "model": {k: v for k, v in stored["model"].items() if k != "flag_encoding"}})
    assert model_field_changes(centred, config) == [
        'model.flag_encoding: absent (read as "raw"), trained with "centred"'
    ]
    # a checkpoint written before the record existed is not compared; one that is no object is named
    assert model_field_changes({}, config) == []
    from lnm_jax.training.checkpoint import CheckpointCorruptError, checked_meta

    says = r"checkpoint W/1: its metadata's 'model_fields' is \"resnet10\", not a JSON object"
    with pytest.raises(CheckpointCorruptError, match=says):
        checked_meta({"model_fields": "resnet10"}, "W/1")
    assert checked_meta({"epoch": 0, "best": {}}, "W/0")  # an untrained state's (benchmark_export)
    # one with no digest of its metadata (saved before it was kept, or deleted): read, and said once
    capsys.readouterr()
    checked_meta({"epoch": 1}, "W/9")
    checked_meta({"epoch": 1}, "W/9")
    assert capsys.readouterr().err.count("W/9 holds no digest of its metadata") == 1


def _one_error_line(capsys, argv) -> str:
    capsys.readouterr()
    assert main(argv) == 1, argv
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_a_config_edited_to_another_experiment_is_refused_by_readers_and_a_resume(triple_run, copy_run, capsys):
    """A checkpoint records the whole config it was trained with. config.json edited afterwards
    (a learning rate, an augmentation, the seed) is refused, naming the file, each field and
    the trained value, by a resume (which had trained on as another experiment, while the same
    change given as an override is refused), by readers (whose model card would report the
    edited value) and by ``validate --workdir`` (which had checked a cohort against the edited
    model); before anything is read or written. What a resume may change (eval.*, train.epochs)
    and where files lie pass (fresh-user trial)."""
    from lnm_jax.run import Run, load_trained_config

    run = copy_run(triple_run)
    stored = json.loads(run.files.config.read_text())
    manifest = triple_run.config.data.manifest
    for edit, expected in (
        ({"train": {**stored["train"], "learning_rate": 0.01}}, "train.learning_rate: 0.01, trained with 0.001"),
        ({"seed": 7}, "seed: 7, trained with 0"),
        (
            {"data": {**stored["data"], "augment": {**stored["data"]["augment"], "flip": False}}},
            "data.augment.flip: false, trained with true",
        ),
        # the split's seed: config.json is named, not splits.json (whose advice was to delete it)
        (
            {"data": {**stored["data"], "split": {**stored["data"]["split"], "seed": 3}}},
            "data.split.seed: 3, trained with 0",
        ),
    ):
        run.files.config.write_text(json.dumps({**stored, **edit}))
        before = _snapshot(run.workdir)
        for argv in (
            ["train", "--resume", "--config.train.epochs=3", "--workdir", str(run.workdir)],
            ["evaluate", "--workdir", str(run.workdir)],
            ["validate", manifest, "--workdir", str(run.workdir)],
        ):
            line = _one_error_line(capsys, argv)
            assert f"{run.files.config}: it describes another experiment than checkpoint " in line, (argv, line)
            assert expected in line, (argv, line)
        assert _snapshot(run.workdir) == before, edit
    # the model's own fields are named as such by validate too (it had checked against the edit)
    run.files.config.write_text(json.dumps({**stored, "data": {**stored["data"], "image_size": 48}}))
    says = r"another model than checkpoint .*\(data.image_size: 48, trained with 32\)"
    with pytest.raises(DamagedFileError, match=says):
        load_trained_config(run.workdir)
    # what a resume may change, and the run's name, are no other experiment
    same = {
        **stored,
        "name": "renamed",
        "eval": {**stored["eval"], "bootstrap": 50},
        "train": {**stored["train"], "epochs": 4, "eval_batch_size": 4},
        "data": {**stored["data"], "num_threads": 1},
    }
    run.files.config.write_text(json.dumps(same))
    opened = Run.open(run.workdir)
    opened.check_checkpoint(*opened.checkpoints().meta("best"))
    assert load_trained_config(run.workdir).train.epochs == 4
    # a field deleted is read as its default: named where that is not what was trained (a resume
    # had trained on with it), left to the reader where it is
    from lnm_jax.run_config import check_trained_config

    meta, where = opened.checkpoints().meta("best")
    weighted = {**meta, "config": {**meta["config"], "train": {**meta["config"]["train"], "pos_weight": 3.0}}}
    lacking = ConfigDict({**stored, "train": {k: v for k, v in stored["train"].items() if k != "pos_weight"}})
    with pytest.raises(DamagedFileError, match=r"train.pos_weight: absent \(its default 1.0\), trained with 3.0"):
        check_trained_config(lacking, run.files.config, weighted, where)
    check_trained_config(lacking, run.files.config, meta, where)  # trained with the default: nothing changes


def test_a_split_edited_or_lost_is_refused_not_redrawn(triple_run, copy_run, capsys):
    """A checkpoint records which patients it trained, validated and tested on. splits.json
    edited to move a training patient into test (which evaluate then scored as unseen) is
    refused naming the file; deleted, evaluate names it as missing (it said "not a training run
    folder") and a resume refuses to draw a new split (it had redrawn one silently); so is a
    deleted config.json. Nothing is written (fresh-user trial)."""
    run = copy_run(triple_run)
    doc = json.loads(run.files.splits.read_text())
    moved = json.loads(json.dumps(doc))
    fold = moved["splits"][0]
    fold["test"].append(fold["train"].pop(0))
    run.files.splits.write_text(json.dumps(moved))
    before = _snapshot(run.workdir)
    manifest = triple_run.config.data.manifest
    for argv in (
        ["evaluate", "--workdir", str(run.workdir)],
        ["train", "--resume", "--workdir", str(run.workdir)],
        ["validate", manifest, "--workdir", str(run.workdir)],
    ):
        line = _one_error_line(capsys, argv)
        assert f"{run.files.splits}: its train, val and test patients are not those checkpoint " in line, line
    assert _snapshot(run.workdir) == before
    run.files.splits.unlink()
    before = _snapshot(run.workdir)
    for argv in (
        ["evaluate", "--workdir", str(run.workdir)],
        ["train", "--resume", "--config.train.epochs=3", "--workdir", str(run.workdir)],
        ["validate", manifest, "--workdir", str(run.workdir)],
    ):
        line = _one_error_line(capsys, argv)
        assert f"{run.files.splits} is missing" in line and "restore it from a copy" in line, line
    assert _snapshot(run.workdir) == before and not run.files.splits.exists()
    # another run's checkpoint copied in (another split and another model): the checkpoint is
    # named, not config.json (which said it was edited)
    from lnm_jax.training.checkpoint import CheckpointCorruptError

    meta, where = triple_run.checkpoints().meta("best")
    other = {**meta, "split_sha256": "0" * 64, "model_fields": {**meta["model_fields"], "model.width": 16}}
    with pytest.raises(CheckpointCorruptError, match=r"was trained on another split than splits.json holds and as"):
        triple_run.check_checkpoint(other, where)
    with pytest.raises(DamagedFileError, match=r"config.json: it describes another model"):  # config.json alone
        triple_run.check_checkpoint({**other, "split_sha256": meta["split_sha256"]}, where)
    # another run of the same config but for train.epochs (a resume may change it): its own
    # identity, recorded in run_info.json and in every checkpoint it saves, names it (fresh-user trial)
    assert meta["run_sha256"] == triple_run.run_id == json.loads(triple_run.files.run_info.read_text())["run_sha256"]
    with pytest.raises(CheckpointCorruptError, match=r"was saved by another run than this folder's"):
        triple_run.check_checkpoint({**meta, "run_sha256": "1" * 64}, where)
    info = json.loads(run.files.run_info.read_text())
    run.files.run_info.write_text(json.dumps(sealed({**info, "run_sha256": "2" * 64})))  # as another folder's record
    before = _snapshot(run.workdir)
    line = _one_error_line(capsys, ["evaluate", "--workdir", str(run.workdir)])
    assert "was saved by another run than this folder's" in line and "copied in from another run folder" in line
    assert _snapshot(run.workdir) == before
    # its identity deleted from run_info.json and its seal remade (helper-60: the checkpoint
    # swapped in was then blamed on config.json)
    run.files.run_info.write_text(json.dumps(sealed({k: v for k, v in info.items() if k != "run_sha256"})))
    before = _snapshot(run.workdir)
    line = _one_error_line(capsys, ["evaluate", "--workdir", str(run.workdir)])
    assert f"{run.files.run_info}: it holds no run_sha256, while checkpoint " in line and "config.json" not in line, (
        line
    )
    assert _snapshot(run.workdir) == before
    # config.json deleted: named as missing by every command (a resume had said the folder held
    # no run, to drop --resume; without it, that it held one, to pass --resume)
    shutil.copy(triple_run.files.splits, run.files.splits)
    run.files.config.unlink()
    before = _snapshot(run.workdir)
    for argv in (
        ["train", "--resume", "--workdir", str(run.workdir)],
        ["evaluate", "--workdir", str(run.workdir)],
        ["validate", triple_run.config.data.manifest, "--workdir", str(run.workdir)],
    ):
        line = _one_error_line(capsys, argv)
        assert f"{run.files.config} is missing: {run.workdir} holds checkpoints but not the config" in line, line
    assert _snapshot(run.workdir) == before


def test_a_moved_training_cohort_is_named_in_config_json_and_may_be_pointed_to(triple_run, copy_run, capsys, tmp_path):
    """A run whose training cohort moved: predict named only the old path, which config.json
    holds and the user never typed (fresh-user trial). Now the line names config.json and says
    how to point it to the new place (``lnm-jax relocate``, which checks the manifest's content
    against splits.json's digest and refuses another cohort); pointed there, readers work and a
    resume may give the new path too."""
    from lnm_jax import run_files as F
    from lnm_jax.evaluation.evaluate import bayes_reference
    from lnm_jax.run import Run
    from lnm_jax.run_config import check_resumable, load_config

    run = copy_run(triple_run)
    moved = tmp_path / "moved"
    shutil.copytree(Path(triple_run.config.data.manifest).parent, moved)
    stored = json.loads(run.files.config.read_text())
    run.files.config.write_text(
        json.dumps({**stored, "data": {**stored["data"], "manifest": str(tmp_path / "gone.csv")}})
    )
    argv = ["predict", "--workdir", str(run.workdir), "--manifest", str(moved / "manifest.csv")]
    line = _one_error_line(capsys, [*argv, "--out", str(tmp_path / "p.csv")])
    assert f"{run.files.config}: data.manifest {tmp_path / 'gone.csv'} (the cohort this run was trained on)" in line
    assert f"set data.manifest there to its new place: lnm-jax relocate --workdir {run.workdir} --manifest" in line
    resume = ["train", "--resume", "--config.train.epochs=3", "--workdir", str(run.workdir)]
    assert "set data.manifest there to its new place" in _one_error_line(capsys, resume)  # a resume too
    # lnm-jax relocate (no hand-edited JSON; fresh-user trial): another cohort is refused, one
    # line naming splits.json, config.json untouched; the run's own cohort is taken
    rows = list(csv.DictReader((moved / "manifest.csv").open()))
    rows[0]["us_lnm"] = str(1 - int(rows[0]["us_lnm"]))  # another cohort: one patient's flag differs
    other = moved / "other.csv"
    with other.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    before = run.files.config.read_text()
    line = _one_error_line(capsys, ["relocate", "--workdir", str(run.workdir), "--manifest", str(other)])
    assert line.startswith("lnm-jax relocate: error: ") and str(run.files.splits) in line, line
    assert line.endswith(
        f"{other} is not, byte for byte, the manifest this run was split on (a row or column edited, added, dropped "
        "or reordered counts: the run's record is of the file's bytes, so a reordered copy is another file to it, "
        "though the split and training ignore row order): give relocate that cohort's manifest, its content as when "
        "the run was split"
    ), line  # not training's 'use a new --workdir' (nor "not the cohort" for rows reordered: helper-84)
    assert run.files.config.read_text() == before
    # case relocate-images-unchecked: the same manifest bytes over other images (one patient's
    # B-mode swapped for another's) is another cohort; each image's content is in image_geometry.csv
    swapped = shutil.copytree(moved, tmp_path / "swapped")
    first, second = (swapped / rows[i]["bmode"] for i in (0, 1))
    pictures = first.read_bytes(), second.read_bytes()
    first.write_bytes(pictures[1]), second.write_bytes(pictures[0])
    line = _one_error_line(
        capsys, ["relocate", "--workdir", str(run.workdir), "--manifest", str(swapped / "manifest.csv")]
    )
    assert f"patient {rows[0]['patient_id']}, bmode {first}: not the image the run was trained on" in line, line
    assert run.files.config.read_text() == before
    assert main(["relocate", "--workdir", str(run.workdir), "--manifest", str(moved / "manifest.csv")]) == 0
    assert json.loads(run.files.config.read_text()) == {
        **stored,
        "data": {**stored["data"], "manifest": str((moved / "manifest.csv").resolve())},
    }
    # a run an earlier version wrote, before a field existed: relocate changes data.manifest alone
    # (helper-114: it had written the field's value in, which the version that made the run refused)
    relocated = run.files.config.read_text()
    older = json.loads(relocated)
    del older["model"]["bn_running_var"]
    run.files.config.write_text(json.dumps(older, indent=2))
    assert main(["relocate", "--workdir", str(run.workdir), "--manifest", str(moved / "manifest.csv")]) == 0
    assert json.loads(run.files.config.read_text()) == older
    run.files.config.write_text(relocated)
    assert main([*argv, "--out", str(tmp_path / "p.csv")]) == 0
    # evaluate's synthetic reference follows the cohort (generator.json and truth.csv beside
    # the manifest), wherever it now is; without the generator's record it is no synthetic cohort
    preds = {"all": {"patient_id": np.array([p.patient_id for p in run.cohort.patients])}}
    ref = bayes_reference(triple_run, preds, ["all"])
    generator = json.loads((moved / F.GENERATOR).read_text())
    assert ref["bayes_auc"] == generator["bayes_auc"]["triple"] and 0.5 < ref["oracle_auc_all"] <= 1, ref
    assert bayes_reference(Run.open(run.workdir), preds, ["all"]) == ref
    # a label or flag edited after synth wrote the cohort (helper-120: 0.926 "on these test patients" was
    # the AUC against the generator's labels, 0.743 against those evaluated; helper-123: a flag made a
    # copy of the label had kept the reference, the flag not being compared): no reference
    import dataclasses
    from types import SimpleNamespace

    from lnm_jax import names

    def edited(key):
        patients = list(triple_run.cohort.patients)
        k = next(i for i, p in enumerate(patients) if p.us_lnm is not None)
        patients[k] = dataclasses.replace(patients[k], **{key: 1 - getattr(patients[k], key)})
        cohort = dataclasses.replace(triple_run.cohort, patients=tuple(patients))
        return SimpleNamespace(config=triple_run.config, files=triple_run.files, cohort=cohort)

    for key in (names.LABEL, names.US_LNM):
        with pytest.raises(DamagedFileError, match=rf"the manifest's {key} differs from .*truth.csv's for 1 "):
            bayes_reference(edited(key), preds, ["all"])
    alone = shutil.copytree(moved, tmp_path / "alone")
    (alone / F.GENERATOR).unlink()
    assert main(["relocate", "--workdir", str(run.workdir), "--manifest", str(alone / "manifest.csv")]) == 0
    assert bayes_reference(Run.open(run.workdir), preds, ["all"]) is None
    for record, says in (({"params": {"patients": 1}}, "patients must be >= 2"), ({"params": {"d": 1}}, "not know")):
        (alone / F.GENERATOR).write_text(json.dumps(record))  # evaluate warns with this line, no reference
        with pytest.raises(DamagedFileError, match=f"{re.escape(str(alone / F.GENERATOR))}: .*{says}"):
            bayes_reference(Run.open(run.workdir), preds, ["all"])
    resumed = load_config(triple_run.workdir)
    resumed.data.manifest = str(moved / "manifest.csv")
    check_resumable(load_config(triple_run.workdir), resumed)  # the same cohort elsewhere: no other experiment
    # case resume-changed-images-rewrites-record: an image edited in place after training had
    # been scored by evaluate in silence, and trained on by a resume, which rewrote the record
    # of the run's images to it (relocate to the unchanged cohort was then refused). Readers
    # of the run's cohort and a resume now check the images against the record, as relocate does
    assert main(["relocate", "--workdir", str(run.workdir), "--manifest", str(moved / "manifest.csv")]) == 0
    record = run.files.image_geometry.read_bytes()
    edited = moved / rows[1]["ceus"]
    from PIL import Image

    with Image.open(edited) as im:
        Image.fromarray(np.roll(np.asarray(im), 3, axis=1)).save(edited)  # (another's copy: shared_image)
    for argv in (["evaluate", "--workdir", str(run.workdir), "--out", str(tmp_path / "ev")], resume):
        line = _one_error_line(capsys, argv)
        assert f"patient {rows[1]['patient_id']}, ceus {edited}: not the image the run was trained on" in line, line
        assert line.endswith(
            "train a new run on the changed cohort (a model and its evaluation are of the images it was trained on)"
        )
    assert run.files.image_geometry.read_bytes() == record and not (tmp_path / "ev").exists()
    # the record edited to the changed image's digest (helper-60: then read in silence): the
    # checkpoints record the images they were trained on, and disagree
    from lnm_jax.fileio import content_digest

    text = record.decode()
    held = next(
        r
        for r in csv.DictReader(io.StringIO(text))
        if r["patient_id"] == rows[1]["patient_id"] and r["input"] == "ceus"
    )
    run.files.image_geometry.write_text(text.replace(held["sha256"], content_digest(edited)))
    line = _one_error_line(capsys, ["evaluate", "--workdir", str(run.workdir), "--out", str(tmp_path / "ev")])
    assert f"{run.files.image_geometry}: its images' digests are not those checkpoint " in line, line
    assert not (tmp_path / "ev").exists()
    # deleted: said missing, not edited (helper-81)
    run.files.image_geometry.unlink()
    line = _one_error_line(capsys, ["evaluate", "--workdir", str(run.workdir), "--out", str(tmp_path / "ev")])
    assert f"{run.files.image_geometry} is missing: the record of the images checkpoint " in line, line


def test_edited_checkpoint_metadata_is_one_line_naming_the_checkpoint(triple_run, copy_run, capsys, tmp_path):
    """A checkpoint's metadata carries the SHA-256 of the rest of it: an epoch edited, or the
    record of the model's fields deleted (which would have skipped the config check), is one
    line naming the checkpoint. A checkpoint without that digest (saved before it existed)
    still has its values' types checked: a string epoch was an unexpected TypeError."""
    from lnm_jax.training.checkpoint import META_DIGEST_KEY

    run = copy_run(triple_run)
    out = str(tmp_path / "p.csv")
    (meta_file,) = (run.files.checkpoints / "best").glob("*/meta/metadata")
    meta = json.loads(meta_file.read_text())
    assert META_DIGEST_KEY in meta and {"model_fields", "config", "split_sha256"} <= meta.keys()
    for edited, says in (
        # (another epoch than its own: the shared run's best epoch is 1 or 2 as training goes)
        ({**meta, "epoch": meta["epoch"] + 7}, "its metadata does not match the SHA-256 stored with it"),
        ({k: v for k, v in meta.items() if k != "model_fields"}, "its metadata does not match the SHA-256"),
        (
            {k: v for k, v in {**meta, "epoch": "2"}.items() if k != META_DIGEST_KEY},
            "its metadata's 'epoch' is \"2\", not a whole number",
        ),
    ):
        meta_file.write_text(json.dumps(edited))
        before = _snapshot(run.workdir)
        for argv in (
            ["evaluate", "--workdir", str(run.workdir)],
            ["predict", "--workdir", str(run.workdir), "--manifest", triple_run.config.data.manifest, "--out", out],
        ):
            capsys.readouterr()
            assert main(argv) == 1, argv
            err = capsys.readouterr().err.strip().splitlines()
            assert f"checkpoint {meta_file.parents[1]}: {says}" in err[-1], err
            assert len(err) == 1 or "holds no digest of its metadata" in err[0], err  # the digest deleted: said
            assert not Path(out).exists()
        assert _snapshot(run.workdir) == before


def test_converted_backbone_json_names_what_it_lacks(tmp_path):
    from lnm_jax.weights.io import META, load_backbone

    (tmp_path / "bb").mkdir()
    (tmp_path / "bb" / META).write_text('{"arch": "resnet50"}')  # written by hand, without its variant
    with pytest.raises(ValueError, match=rf"bb/{META} lacks 'variant': convert or pretrain it again"):
        load_backbone(tmp_path / "bb")


def test_export_proves_what_it_is(triple_run, tmp_path, capsys):
    from lnm_jax.export import export_run
    from lnm_jax.exported import WEIGHTS, ExportIntegrityError, load
    from lnm_jax.fileio import OutputPathError

    with pytest.raises(OutputPathError, match="inside the input folder"):
        export_run(triple_run, triple_run.workdir / "ex")
    md = export_run(triple_run, tmp_path / "ex")
    assert md["export"]["source"]["state_sha256"] and md["export"]["source"]["run"] == str(triple_run.workdir)
    load(tmp_path / "ex")
    import shutil

    nan = tmp_path / "nan"
    shutil.copytree(tmp_path / "ex", nan)
    with np.load(nan / WEIGHTS) as z:
        arrays = dict(z)
    arrays["w0"] = np.full_like(arrays["w0"], np.nan)
    np.savez(nan / WEIGHTS, **arrays)
    with pytest.raises(ExportIntegrityError, match="weights.npz"):
        load(nan)
    edited = tmp_path / "edited"
    shutil.copytree(tmp_path / "ex", edited)
    meta = json.loads((edited / "metadata.json").read_text())
    meta["image_size"] += 16
    (edited / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ExportIntegrityError, match="metadata.json"):
        load(edited)
    (edited / "SHA256SUMS").unlink()  # removing the checksums does not make an edit pass
    with pytest.raises(ExportIntegrityError, match="SHA256SUMS is missing"):
        load(edited)
    # SHA256SUMS rewritten to match the edit passes on its own; not against the fingerprint the
    # export printed and its publisher gave out (the checksums attested only to themselves)
    from lnm_jax.exported import fingerprint, sha256_file, write_checksums

    published = fingerprint(tmp_path / "ex")
    assert published == "sha256:" + sha256_file(tmp_path / "ex" / "SHA256SUMS")
    load(tmp_path / "ex", fingerprint=published)
    load(tmp_path / "ex", fingerprint=" " + published.upper().removeprefix("SHA256:"))  # as pasted, bare
    write_checksums(edited)
    # its checksums rewritten, the edit is still not the program's inputs (helper-84: predict had
    # stopped on JAX's shape mismatch, naming no file)
    with pytest.raises(
        ExportIntegrityError, match=r"metadata.json: image_size \d+ and clip_frames 1 are not its input"
    ):
        load(edited)
    with pytest.raises(ExportIntegrityError, match=f"its fingerprint is sha256:[0-9a-f]{{64}}, not the {published}"):
        load(edited, fingerprint=published)
    frames = tmp_path / "frames"  # a still model said to take clips (helper-87: JAX's rank mismatch, no file named)
    shutil.copytree(tmp_path / "ex", frames)
    meta = json.loads((frames / "metadata.json").read_text())
    meta["preprocessing"]["clip_frames"] = 4
    (frames / "metadata.json").write_text(json.dumps(meta))
    write_checksums(frames)
    with pytest.raises(ExportIntegrityError, match="clip_frames 4 are not its input ceus's shape"):
        load(frames)
    from lnm_jax.exported import load_onnx

    with pytest.raises(FileNotFoundError, match="holds no model.onnx: it was exported without ONNX"):
        load_onnx(tmp_path / "ex")
    # a temperature edited in (sums rewritten): the CSV had computed prob_lnm_calibrated from it,
    # the Python API given the program's; both now refuse, naming the file (helper-84)
    from lnm_jax.serving import load as load_model
    from lnm_jax.serving import predict_manifest

    warm = tmp_path / "warm"
    shutil.copytree(tmp_path / "ex", warm)
    meta = json.loads((warm / "metadata.json").read_text())
    meta["calibration_temperature"] = 7.0 if meta["calibration_temperature"] is None else None
    (warm / "metadata.json").write_text(json.dumps(meta))
    write_checksums(warm)
    new2 = new_patients(triple_run.config.data.manifest, tmp_path / "new2.csv", 2)
    with pytest.raises(ValueError, match="metadata.json: calibration_temperature .* is not the temperature of the"):
        predict_manifest(load_model(warm), new2, tmp_path / "warm.csv")
    assert not (tmp_path / "warm.csv").exists()
    with pytest.raises(ValueError, match="fingerprint 'sha256:12' is not a SHA-256"):
        load(tmp_path / "ex", fingerprint="sha256:12")
    # the command line: export prints it; predict --exported checks it, one line, exit 1
    from lnm_jax.cli import main

    capsys.readouterr()
    assert main(["export", "--workdir", str(triple_run.workdir), "--out", str(tmp_path / "cli")]) == 0
    printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("fingerprint ")]
    assert printed and printed[0].split()[1].rstrip(":") == fingerprint(tmp_path / "cli")
    new = new_patients(triple_run.config.data.manifest, tmp_path / "new.csv", 2)
    predict = ["predict", "--manifest", str(new), "--out", str(tmp_path / "p.csv"), "--fingerprint", published]
    assert main([*predict, "--exported", str(edited)]) == 1
    said = capsys.readouterr().err.strip().splitlines()
    assert len(said) == 1 and said[0].startswith("lnm-jax predict: error: ") and "its fingerprint is" in said[0]
    assert not (tmp_path / "p.csv").exists()
    assert main([*predict, "--exported", str(tmp_path / "ex")]) == 0 and (tmp_path / "p.csv").is_file()
    # a run folder has no export fingerprint: a usage error
    assert main([*predict, "--workdir", str(triple_run.workdir), "--overwrite"]) == 2
    assert "--fingerprint: only with --exported" in capsys.readouterr().err
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "ex").stat().st_mode & 0o777 == 0o777 & ~umask  # as mkdir makes a folder: not mkdtemp's 0700


def test_an_export_hands_on_only_what_it_can_verify(triple_run, copy_run, tmp_path, capsys):
    """helper-60's trial: an evaluation's metrics.json edited by hand (test AUC, the decision
    threshold) went into an export's card and metadata unsaid; a calibration whose seal was
    deleted went out with its edited temperature, said once on the exporter's console; an
    export's model card edited afterwards passed a load against the export's fingerprint. The
    metrics are sealed as the calibration is; an export refuses a record it cannot verify;
    a load checks every file a colleague reads (the card, the requirements) too."""
    import shutil

    from lnm_jax.evaluation.evaluate import evaluate
    from lnm_jax.export import export_run
    from lnm_jax.exported import MODEL_CARD, ExportIntegrityError, fingerprint, load
    from lnm_jax.fileio import SEAL_KEY

    run = copy_run(triple_run)
    evaluate(run, checkpoint="best")
    export_run(run, tmp_path / "ex")
    published = fingerprint(tmp_path / "ex")
    for name in (MODEL_CARD, "requirements.txt"):
        shutil.copytree(tmp_path / "ex", tmp_path / "told")
        told = tmp_path / "told" / name
        told.write_text(told.read_text() + "edited\n")
        with pytest.raises(ExportIntegrityError, match=f"told/{name} is not the file lnm-jax export wrote"):
            load(tmp_path / "told", fingerprint=published)
        shutil.rmtree(tmp_path / "told")
    metrics, calibration = run.files.evaluation("best") / "metrics.json", run.files.calibration("best")
    reference = run.files.intensity_reference  # (helper-61: an edited bare one had been shipped)
    written = {f: f.read_text() for f in (metrics, calibration, reference)}
    doc = json.loads(written[metrics])
    doc["splits"]["test"]["auc"] = 0.95
    metrics.write_text(json.dumps(doc))
    with pytest.raises(DamagedFileError, match=f"metrics.json: its values do not match the {SEAL_KEY}"):
        export_run(run, tmp_path / "edited")
    for record in (metrics, calibration, reference):
        for f, text in written.items():
            f.write_text(text)
        unsealed = {k: v for k, v in json.loads(written[record]).items() if k != SEAL_KEY}
        record.write_text(json.dumps(unsealed))
        with pytest.raises(DamagedFileError, match=f"{record.name} holds no {SEAL_KEY} .*cannot be verified"):
            export_run(run, tmp_path / "unsealed")
    assert not (tmp_path / "edited").exists() and not (tmp_path / "unsealed").exists()
    # a sealed evaluation of another state of the checkpoint (helper-62: left out of the card unsaid)
    from lnm_jax.fileio import sealed

    for f, text in written.items():
        f.write_text(text)
    other = {k: v for k, v in json.loads(written[metrics]).items() if k != SEAL_KEY}
    metrics.write_text(json.dumps(sealed({**other, "epoch": other["epoch"] + 1})))
    capsys.readouterr()
    md = export_run(run, tmp_path / "stale")
    assert md["metrics"] == {} and f"{metrics} was computed for another state of the 'best' checkpoint" in (
        capsys.readouterr().err
    )


def test_a_reading_of_checkpoints_a_training_replaces_meanwhile_is_tried_again(tmp_path):
    """helper-60: predict --checkpoint best on a run still training failed once in six on
    "checkpoints/latest/52: No such file or directory" (the training had replaced that step).
    A reading that fails while the saved steps change is tried again; one that fails with them
    as they were is raised as it is; one whose checkpoints change at every try is said so."""
    from lnm_jax.run import READ_TRIES, read_while_trained
    from lnm_jax.run_files import RunFiles

    files = RunFiles(tmp_path)
    (files.checkpoints / "latest" / "51").mkdir(parents=True)
    tries = []

    def replaced_once():
        tries.append(1)
        if len(tries) == 1:  # the training saves step 52 and drops 51 while this reads 51
            (files.checkpoints / "latest" / "52").mkdir()
            (files.checkpoints / "latest" / "51").rmdir()
            raise FileNotFoundError(str(files.checkpoints / "latest" / "51"))
        return "read"

    assert read_while_trained(files, replaced_once) == "read" and len(tries) == 2

    def damaged():
        raise ValueError("damaged checkpoint")

    with pytest.raises(ValueError, match="damaged checkpoint"):
        read_while_trained(files, damaged)
    steps = iter(range(100, 200))

    def always_replaced():
        (files.checkpoints / "latest" / str(next(steps))).mkdir()
        raise FileNotFoundError("gone")

    with pytest.raises(DamagedFileError, match=f"replaced by a training in progress each of the {READ_TRIES} times"):
        read_while_trained(files, always_replaced)


def test_stale_calibration_not_applied(triple_run, copy_run, capsys):
    run = copy_run(triple_run)
    path = run.files.calibration("best")
    meta = run.predictor("best").meta
    path.write_text(json.dumps({"temperature": 2.0, "epoch": meta["epoch"], "state_sha256": meta["state_sha256"]}))
    assert run.temperature("best") == 2.0
    path.write_text(json.dumps({"temperature": 2.0, "epoch": meta["epoch"] - 1, "state_sha256": "0" * 64}))
    assert run.temperature("best") is None
    said = capsys.readouterr().err
    assert "not applied" in said
    # a record without its seal (written before records were sealed): read, said once per file
    assert said.count(f"{path} holds no record_sha256") == 1, said
    # asked again (export asks for its program and for its card): said once, and the card's
    # limits say the probabilities are not calibrated (they said calibrated; fresh-user trial)
    from lnm_jax.model_card import CALIBRATED, UNCALIBRATED, metadata, unscored_cams

    shutil.rmtree(run.files.evaluation("best"), ignore_errors=True)  # not evaluated
    limits = metadata(run, "best")["limits"]
    assert UNCALIBRATED in limits and not any(line.startswith(CALIBRATED) for line in limits)
    # unscored Grad-CAM maps: for want of an evaluation, not "no masks" (the test split has masks)
    assert unscored_cams(run.config, evaluated=False) in limits
    assert "has not been evaluated" in unscored_cams(run.config, evaluated=False)
    assert "no lesion masks in its test split" in unscored_cams(run.config, evaluated=True)
    flag_only = ConfigDict({**run.config.to_dict(), "modalities": "us_lnm"})
    assert "it takes no image" in unscored_cams(flag_only, evaluated=True)
    assert "not applied" not in capsys.readouterr().err
    # a temperature that is no number > 0 (edited): it inverted (-1) or saturated (0) every
    # calibrated probability, silently, with exit 0 (fresh-user trial)

    for bad in (-1.0, 0, True, "hot", None):
        path.write_text(json.dumps({"temperature": bad, "epoch": meta["epoch"], "state_sha256": meta["state_sha256"]}))
        with pytest.raises(DamagedFileError, match=r"calibration_best.json: temperature .* is not a number > 0"):
            run.temperature("best")
    # an epoch that is no whole number (edited to a string): it was "fitted for the 'best'
    # checkpoint of epoch 2, which is now epoch 2" (fresh-user trial)
    for bad in (str(meta["epoch"]), 2.0, None):
        path.write_text(json.dumps({"temperature": 2.0, "epoch": bad, "state_sha256": meta["state_sha256"]}))
        with pytest.raises(DamagedFileError, match=r"calibration_best.json: epoch .* is not a whole number"):
            run.temperature("best")
    # a sealed record (what evaluate writes) whose temperature was edited to another valid one:
    # applied before, silently; now refused, naming the file
    from lnm_jax.fileio import SEAL_KEY, sealed

    doc = sealed({"temperature": 2.0, "epoch": meta["epoch"], "state_sha256": meta["state_sha256"]})
    path.write_text(json.dumps(doc, indent=2))
    assert run.temperature("best") == 2.0
    for edit in ({"temperature": 1.5}, {"at_search_bound": True}, {SEAL_KEY: "0" * 64}):
        path.write_text(json.dumps({**doc, **edit}))
        with pytest.raises(DamagedFileError, match=rf"calibration_best.json: its values do not match the {SEAL_KEY}"):
            run.temperature("best")


# ------------------------------------------------------------- divergence on every signal


def test_non_finite_validation_logits_stop_the_run():
    from lnm_jax.training.loop import TrainingDivergedError, _check_validation
    from lnm_jax.training.save_schedule import SaveSchedule

    class NoCheckpoints:
        def latest_epoch(self, kind):
            return None

    c, saves = demo_config(), SaveSchedule(NoCheckpoints(), 1, 1)
    _check_validation(np.zeros(5), 1, c, saves)
    with pytest.raises(TrainingDivergedError, match="2 of 5 validation logits are NaN or inf.*no checkpoint was"):
        _check_validation(np.array([0.0, np.nan, 1.0, np.inf, 2.0]), 1, c, saves)


# ------------------------------------------------------------- de-identification


def _phi_dicom(path):
    """An ultrasound file with identifying data in every place a header can hide it."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    from lnm_jax.data.pixels import dicom

    ds = dicom.new_dataset(np.tile(np.arange(90, 138, dtype=np.uint8), (32, 1)))
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = "Zyxwv^Quentina", "MRN9988776", "19610203"
    ds.InstitutionName, ds.PatientAddress = "Uniqueville General", "77 Qwerty Lane"
    ds.MedicalAlerts, ds.Allergies = "alert-Quentina", "penicillin-Zyxwv"
    ds.CountryOfResidence, ds.AcquisitionComments = "Freedonia", "scan of Zyxwv"
    ds.ContrastBolusAgent = "SonoVue for Zyxwv"
    ds.VisitComments, ds.InstanceCreatorUID, ds.DeviceUID = "visit Zyxwv", "1.2.840.99999.1", "1.2.840.99999.2"
    op = Dataset()
    op.PersonAddress, op.PersonTelephoneNumbers = "Hidden Road 12", "8675309"
    ds.OperatorIdentificationSequence = Sequence([op])
    cs = Dataset()
    cs.ValueType, cs.TextValue = "TEXT", "Patient Zyxwv has a nodule"
    cs.private_block(0x0011, "ACME2", create=True).add_new(0x01, "LO", "NESTED-Zyxwv")
    ds.ContentSequence = Sequence([cs])
    ds.private_block(0x0009, "ACME", create=True).add_new(0x01, "LO", "PRIVATE-MRN9988776")
    ds.add_new(0x60004000, "LT", "overlay Zyxwv")
    ds.StorageMediaFileSetUID = "1.2.840.99999.3"
    # kept by the basic profile, yet typed in (helper-83): a maker's ImageType value, a body part,
    # series and instance numbers, an ICC profile's bytes (a grey image's: no reader applies it)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "ZYXWV"]
    ds.BodyPartExamined, ds.SeriesNumber, ds.InstanceNumber = "MRN9988776", "8675309", "19610203"
    ds.ICCProfile = b"profile of Quentina" * 8
    ds.preamble = (b"PREAMBLE Zyxwv MRN9988776 " + b"\0" * 128)[:128]
    dicom.write_dataset(ds, path)
    return path


def test_deidentified_dicom_holds_no_original_value(tmp_path):
    from PIL import Image

    from lnm_jax.data.privacy.deidentify import deidentify

    _phi_dicom(tmp_path / "a.dcm")
    for k, name in enumerate(("b.png", "c.png", "d.png")):
        Image.fromarray(np.tile(np.arange(60 + k, 108 + k, dtype=np.uint8), (32, 1))).save(tmp_path / name)
    (tmp_path / "m.csv").write_text("patient_id,bmode,ceus,us_lnm,lnm\nA,a.dcm,b.png,1,1\nB,c.png,d.png,0,0\n")
    deidentify(tmp_path / "m.csv", tmp_path / "deid", tmp_path / "private" / "map.csv")
    out = b"".join(p.read_bytes() for p in (tmp_path / "deid").rglob("*") if p.is_file())
    for value in (
        "Zyxwv",
        "Quentina",
        "MRN9988776",
        "19610203",
        "Uniqueville",
        "Qwerty",
        "penicillin",
        "Freedonia",
        "1.2.840.99999",
        "Hidden Road",
        "8675309",
        "PRIVATE",
        "ZYXWV",
    ):
        assert value.encode() not in out, value
    assert (tmp_path / "private" / "map.csv").stat().st_mode & 0o077 == 0


def test_pseudonyms_are_no_ones_id_and_the_copy_says_nothing_of_the_manifests_order(tmp_path):
    """helper-83's trial: a cohort whose IDs are P0001 ... got pseudonyms of that form, some a
    patient's own ID and the rest other patients' real IDs (7 of 10 runs gave one patient their
    own); the copy's files, written in manifest order, listed the original patients in that
    order by their modification times. Pseudonyms now take a prefix under which no original ID
    is a number, and every file of the copy one time."""
    from PIL import Image
    from support import own_pictures

    from lnm_jax.data.privacy.deidentify import PSEUDONYM_PREFIXES, deidentify

    Image.fromarray(np.tile(np.arange(40, 104, dtype=np.uint8), (48, 1))).save(tmp_path / "b.png")
    pictures = own_pictures(tmp_path / "b.png", 12)
    ids = [f"P{k:04d}" for k in range(1, 13)]
    rows = "".join(f"{pid},{pic},,{k % 2},{k % 2}\n" for k, (pid, pic) in enumerate(zip(ids, pictures)))
    (tmp_path / "m.csv").write_text("patient_id,bmode,ceus,us_lnm,lnm\n" + rows)
    deidentify(tmp_path / "m.csv", tmp_path / "deid", tmp_path / "map.csv", keep_columns=())
    with (tmp_path / "map.csv").open(newline="") as f:
        pseudonyms = {r["patient_id"] for r in csv.DictReader(f)}
    assert len(pseudonyms) == 12 and not pseudonyms & set(ids)
    assert all(re.fullmatch(rf"{PSEUDONYM_PREFIXES[1]}\d{{4}}", s) for s in pseudonyms), pseudonyms
    files = [p for p in (tmp_path / "deid").rglob("*")]
    assert len({p.stat().st_mtime_ns for p in files}) == 1, "the copy's times tell its writing order"


def test_a_mapping_left_without_its_copy_is_said_so(tiny_cohort, tmp_path, capsys):
    """A deidentify killed between writing its mapping and committing its copy leaves the mapping
    alone; the rerun's refusal says so, and to keep any other (helper-83: only "exists; choose a
    new mapping file"; helper-87: a first version invited deleting what may be a copy's only link)."""
    (tmp_path / "map.csv").write_text("original_patient_id,patient_id\n")
    args = ["deidentify", "--manifest", str(tiny_cohort), "--mapping", str(tmp_path / "map.csv"), "--out"]
    assert main([*args, str(tmp_path / "deid")]) == 1
    said = _fail_line(capsys)  # never told to delete it: it may be another copy's only link (helper-87)
    assert "stopped before it committed its copy leaves its mapping alone" in said and "keep it" in said, said
    (tmp_path / "other").mkdir()
    assert main([*args, str(tmp_path / "other")]) == 1
    assert _fail_line(capsys).endswith("exists; choose a new mapping file")


def test_mapping_that_cannot_be_written_leaves_no_copy(tiny_cohort, tmp_path, capsys):
    (tmp_path / "afile").write_text("")
    args = ["deidentify", "--manifest", str(tiny_cohort), "--out", str(tmp_path / "deid")]
    assert main([*args, "--mapping", str(tmp_path / "afile" / "map.csv")]) == 1
    assert "cannot write the mapping" in _fail_line(capsys)
    assert not (tmp_path / "deid").exists() and not list(tmp_path.glob(".deid*"))
    assert main([*args, "--mapping", str(tmp_path / "map.csv")]) == 0  # the rerun is not refused


def test_failed_csv_write_leaves_no_temporary_file_and_names_it(tmp_path, monkeypatch):
    import csv as csv_module

    from lnm_jax.fileio import write_csv

    class Full:
        def __init__(self, *a, **k):
            pass

        def writeheader(self):
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(csv_module, "DictWriter", Full)
    with pytest.raises(OSError) as e:
        write_csv(tmp_path / "p.csv", [{"a": 1}], ["a"])
    assert e.value.filename == str(tmp_path / "p.csv") and not list(tmp_path.iterdir())


def test_a_run_from_a_pretrained_backbone_compiles_one_step_and_its_resume_does_not_read_it(
    tiny_cohort, tmp_path, monkeypatch
):
    """A run started from a pretrained backbone (model.init_from) compiles one train step: the
    loaded branches are placed as the fresh ones (they came committed from the backbone's
    checkpoint, and the first step, fed them, was another program than every later step: a
    second compile of the whole step). Resumed after the backbone's folder moved, the branches
    come from the run's checkpoint, so the resume trains on (it stopped at the missing backbone,
    fresh-user trial); a new run without the backbone still stops, naming it."""
    from support import tiny_config

    from lnm_jax.metric_writer import read_history
    from lnm_jax.run import Run
    from lnm_jax.training import loop
    from lnm_jax.training.loop import train
    from lnm_jax.weights.io import save_backbone

    real, steps = loop.make_train_step, []

    def recording(*args, **kwargs):
        steps.append(real(*args, **kwargs))
        steps[-1].clear_cache()  # one program object per configuration in a process: another test's may be it
        return steps[-1]

    monkeypatch.setattr(loop, "make_train_step", recording)
    config = tiny_config(tiny_cohort, "bmode,us_lnm", epochs=1)
    state = Run.create(config, tmp_path / "source").fresh_state()
    branch = "bmode_backbone"
    variables = {"params": state.params[branch], "batch_stats": state.batch_stats[branch]}
    save_backbone(tmp_path / "bb", variables, {"arch": config.model.backbone, "variant": config.model.variant})
    config.model.init_from = str(tmp_path / "bb")
    train(Run.create(config, tmp_path / "run"))
    assert [step._cache_size() for step in steps] == [1]  # one program for every step of the run
    (tmp_path / "bb").rename(tmp_path / "bb_moved")
    config.train.epochs = 2
    resumed = Run.create(config, tmp_path / "run", resume=True)
    train(resumed)
    assert [r["epoch"] for r in read_history(resumed.files.history)] == [1, 2]
    with pytest.raises(FileNotFoundError, match=r"bb"):
        train(Run.create(config, tmp_path / "fresh"))


def test_an_edited_intensity_reference_is_one_line_naming_it(triple_run, copy_run):
    """Values of another type or out of order in intensity_reference.json (not syntax) are one
    line naming the file and the value; a string median was an "unexpected TypeError" from
    predict's outlier check, a NaN silently flagged nothing (fresh-user trial)."""
    from lnm_jax.evaluation.intensity import reference_problem
    from lnm_jax.fileio import sealed
    from lnm_jax.run import REFERENCE_KEY, Run
    from lnm_jax.training.checkpoint import RUN_KEY

    run = copy_run(triple_run)
    stored = json.loads(run.files.intensity_reference.read_text())
    good = stored[REFERENCE_KEY]
    assert reference_problem(good) is None and Run.open(run.workdir).intensity_reference() == good

    def edited(inp, feature, key, value):
        return {**good, inp: {**good[inp], feature: {**good[inp][feature], key: value}}}

    cases = {
        "'bmode'.'mean'.'median' is '0.45', not a number": edited("bmode", "mean", "median", "0.45"),
        "'ceus'.'std'.'max' is nan, not a number": edited("ceus", "std", "max", float("nan")),
        "'bmode'.'std'.'n' is True, not a number": edited("bmode", "std", "n", True),
        "'bmode'.'mean' is no summary of training images": edited("bmode", "mean", "robust_sd", -1.0),
        "'ceus' lacks its 'mean' summary": {**good, "ceus": [1, 2]},
    }
    for message, doc in cases.items():
        assert reference_problem(doc).startswith(message), (message, reference_problem(doc))
    string_median = cases["'bmode'.'mean'.'median' is '0.45', not a number"]
    resealed = sealed({RUN_KEY: stored[RUN_KEY], REFERENCE_KEY: string_median})
    run.files.intensity_reference.write_text(json.dumps(resealed))
    with pytest.raises(DamagedFileError, match=r"intensity_reference.json: 'bmode'.'mean'.'median' is '0.45'"):
        Run.open(run.workdir).intensity_reference()
    # case intensity-reference-unbound: the file is sealed and names its run. A range widened by
    # hand (an inverted cohort then passed predict unflagged, and export sealed the edit into the
    # exported model) or another run's reference copied in (its own training cohort then flagged
    # 40 of 40) is one line naming the file
    widened = edited("bmode", "mean", "min", 0.0)
    run.files.intensity_reference.write_text(json.dumps({**stored, REFERENCE_KEY: widened}))
    with pytest.raises(DamagedFileError, match=r"intensity_reference.json: .*do not match the record_sha256"):
        Run.open(run.workdir).intensity_reference()
    run.files.intensity_reference.write_text(json.dumps(sealed({RUN_KEY: "0" * 64, REFERENCE_KEY: good})))
    with pytest.raises(DamagedFileError, match=r"intensity_reference.json: .*recorded by another run"):
        Run.open(run.workdir).intensity_reference()
    run.files.intensity_reference.write_text(json.dumps(good))  # a run's from before: read, with a warning
    assert Run.open(run.workdir).intensity_reference() == good


def test_a_deleted_intensity_reference_is_said_by_predict(triple_run, copy_run, tmp_path, capsys):
    """Without intensity_reference.json (deleted, or a run from before it was recorded) predict
    checks no intensities: it dropped the intensity_outlier column without a word (fresh-user
    trial); it says so in one line naming the file."""
    run = copy_run(triple_run)
    run.files.intensity_reference.unlink()
    out = tmp_path / "p.csv"
    capsys.readouterr()
    argv = ["predict", "--workdir", str(run.workdir), "--manifest", triple_run.config.data.manifest, "--out", str(out)]
    assert main(argv) == 0
    # (not "intensity" alone: the tmp_path that other lines name holds this test's name)
    err = [line for line in capsys.readouterr().err.splitlines() if "intensit" in line.replace(str(tmp_path), "")]
    assert err == [
        f"warning: no training intensity reference in {run.files.intensity_reference}: the images are not checked "
        "for intensities the model never saw (no intensity_outlier column)"
    ], err
    assert "intensity_outlier" not in out.read_text().splitlines()[0]


def test_images_outside_the_training_intensities_are_said_by_validate_predict_and_the_python_api(
    triple_run, tmp_path, capsys
):
    """helper-84's trial: a new site's B-mode dimmed (or inverted, or its columns swapped)
    passed ``validate --workdir`` as OK, where ``predict`` then warned of every patient; the
    exported model's Python API returned no flag at all. All three now say it, alike, and the
    run's own patients are flagged by none."""
    from PIL import Image

    from lnm_jax.export import export_run
    from lnm_jax.serving import load as load_model

    manifest = Path(triple_run.config.data.manifest)
    with manifest.open(newline="") as f:
        rows = list(csv.DictReader(f))[:4]
    for r in rows:
        with Image.open(manifest.parent / r["bmode"]) as im:
            r["bmode"] = str(tmp_path / f"{r['patient_id']}_dimmed.png")
            Image.fromarray(np.asarray(im.convert("L")) // 4).save(r["bmode"])
        r["ceus"] = str(manifest.parent / r["ceus"])
    new = tmp_path / "new.csv"
    with new.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["patient_id", "bmode", "ceus", "us_lnm"], extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    said = {}
    for name, argv in (
        ("validate", ["validate", str(new), "--no-labels", "--workdir", str(triple_run.workdir)]),
        (
            "predict",
            ["predict", "--workdir", str(triple_run.workdir), "--manifest", str(new), "--out", str(tmp_path / "p.csv")],
        ),
    ):
        capsys.readouterr()
        assert main(argv) == 0, name
        got = capsys.readouterr()
        said[name] = [line for line in (got.out + got.err).splitlines() if "far outside the training" in line]
    assert all(said[k][0].startswith("warning: 4 of 4 patient(s) have an image far outside") for k in said), said
    assert "predict would score them by extrapolation" in said["validate"][0]  # (validate writes no probabilities)
    with (tmp_path / "p.csv").open(newline="") as f:
        column = [r["intensity_outlier"] for r in csv.DictReader(f)]
    export_run(triple_run, tmp_path / "ex")
    out = load_model(tmp_path / "ex").predict(
        {k: [r[k] if k != "us_lnm" else int(r[k]) for r in rows] for k in ("bmode", "ceus", "us_lnm")}
    )
    assert list(out["intensity_outlier"]) == column and all("bmode" in c for c in column), (column, out)
    capsys.readouterr()
    assert main(["validate", str(manifest), "--workdir", str(triple_run.workdir)]) == 0  # its own patients
    assert "far outside the training" not in capsys.readouterr().out


def test_edited_evaluation_metrics_are_one_line_naming_the_file(triple_run, copy_run):
    """evaluate's metrics.json as a model card reads them (export, evaluate's own card): values
    of another type are one line naming the file and the value (a string AUC was "unexpected
    ValueError: Unknown format code 'f'", fresh-user trial); what evaluate writes passes."""
    from lnm_jax.evaluation.evaluate import evaluate
    from lnm_jax.model_card import evaluation_problem

    doc = evaluate(copy_run(triple_run))  # what evaluate writes (also its metrics.json)
    doc = json.loads(json.dumps(doc))
    assert evaluation_problem(doc) is None
    test = doc["splits"]["test"]
    cases = {
        "'splits'.'test'.'auc' is '0.9'": {**test, "auc": "0.9"},
        "'splits'.'test'.'at_0.5' is None": {**test, "at_0.5": None},
        "'splits'.'test'.'auc_ci_delong' is [0.1]": {**test, "auc_ci_delong": [0.1]},
        "'splits'.'test'.'calibration' is 'good'": {**test, "calibration": "good"},
    }
    for message, edited in cases.items():
        assert evaluation_problem({**doc, "splits": {**doc["splits"], "test": edited}}) == message
    assert evaluation_problem({**doc, "warnings": "none"}) == "'warnings' is 'none', not a list of lines"
    assert evaluation_problem({**doc, "youden_threshold_from_val": "0.9"}) == (
        "'youden_threshold_from_val' is '0.9', not a number"
    )
    assert evaluation_problem({**doc, "temperature_at_bound": "false"}) == (
        "'temperature_at_bound' is 'false', not true or false"
    )
    assert evaluation_problem({**doc, "splits": [1]}) == "'splits' is [1], not an object"


def test_an_edited_run_info_is_one_line_before_evaluate_writes(triple_run, copy_run, capsys):
    """run_info.json's values as the model card uses them: "git": 5 made evaluate fail with an
    "unexpected TypeError" after it had rewritten most of eval_best/ (fresh-user trial); now
    one line naming the file, and the run folder as it was."""
    from lnm_jax.provenance import run_info_problem
    from lnm_jax.run import Run
    from lnm_jax.run_record import read_run_info

    run = copy_run(triple_run)
    info = json.loads(run.files.run_info.read_text())
    assert run_info_problem(info) is None
    for edit, problem in (
        ({"git": 5}, "'git' is 5, not null or an object with a commit and a dirty flag"),
        ({"device_count": "1"}, "'device_count' is '1', not an integer"),
        ({"packages": {"jax": 0.1}}, "'packages' is {'jax': 0.1}, not an object of versions"),
        ({"python": None}, "'python' is None, not a string"),
    ):
        assert run_info_problem({**info, **edit}) == problem
    run.files.run_info.write_text(json.dumps({**info, "git": 5}))
    before = _snapshot(run.workdir)
    capsys.readouterr()
    assert main(["evaluate", "--workdir", str(run.workdir)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "run_info.json: 'git' is 5" in err[0], err
    assert _snapshot(run.workdir) == before
    # a value of the right type edited (the training's commit, which an export's model card
    # states): it had passed unsaid; now refused by its seal, naming the file
    edited = {**info, "git": {"commit": "0" * 40, "dirty": False}}
    run.files.run_info.write_text(json.dumps(edited))
    before = _snapshot(run.workdir)
    assert main(["evaluate", "--workdir", str(run.workdir)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{run.files.run_info}: " in err[0] and "do not match the record_sha256" in err[0], err
    assert _snapshot(run.workdir) == before
    # its seal deleted (a record from before records were sealed, or one redacted by hand):
    # read, with one warning, and the value is the one it holds
    run.files.run_info.write_text(json.dumps({k: v for k, v in edited.items() if k != SEAL_KEY}))
    assert read_run_info(run.files.run_info)["git"]["commit"] == "0" * 40
    assert f"warning: {run.files.run_info} holds no record_sha256" in capsys.readouterr().err
    # and what is handed on (an export's card, strict) does not state it (the diff's review: the
    # edited commit, its seal deleted, had reached an export's card with a warning only)
    from lnm_jax.model_card import UNSEALED_RUN_INFO, markdown, metadata

    opened = Run.open(run.workdir)
    assert metadata(opened)["training_environment"]["git"]["commit"] == "0" * 40  # evaluate's card: read, warned
    md = metadata(opened, strict=True)
    assert md["training_environment"] is None and md["training_environment_unstated"] == UNSEALED_RUN_INFO
    assert f"unknown ({UNSEALED_RUN_INFO})" in markdown(md) and "0" * 12 not in markdown(md)


def test_an_interrupted_command_ends_at_once_with_its_code_whatever_threads_still_run(tmp_path):
    """After SIGTERM or Ctrl-C the ``lnm-jax`` process ends with 143 or 130 as soon as the
    command has said so, without the interpreter's teardown under library threads still at
    work (a SIGTERM during gradcam ended in SIGABRT, during evaluate in a segmentation fault,
    139). Here a worker thread still runs: the process neither waits for it nor crashes."""
    code = textwrap.dedent(
        """
        import os, signal, sys, threading, time
        from lnm_jax import cli
        signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal (an xdist worker ignores it)
        def command(argv):
            threading.Thread(target=time.sleep, args=(60,)).start()  # a library's worker, still busy
            os.kill(os.getpid(), signal.SIG%s)
            time.sleep(60)
        cli.COMMANDS["train"] = command
        sys.argv = ["lnm-jax", "train"]
        sys.exit(cli.entry_point())
        """
    )
    env = {**cpu_env(), "LNM_JAX_HOST_MALLOC": "inherit"}
    for sig, expected in (("TERM", 143), ("INT", 130)):
        t0 = time.monotonic()
        out = subprocess.run([sys.executable, "-c", code % sig], env=env, capture_output=True, text=True, timeout=50)
        assert out.returncode == expected, (sig, out.returncode, out.stderr[-2000:])
        assert time.monotonic() - t0 < 30 and "error: " in out.stderr


def test_sigterm_stops_a_command_as_ctrl_c_does(monkeypatch, capsys):
    """SIGTERM (timeout, Slurm, docker stop) is raised in the command as an interrupt, so a
    save in flight finishes and training writes the best epoch it holds (cli.Terminated);
    one line, exit 143; the default handler is back afterwards."""
    import signal

    from lnm_jax import cli

    reached = []

    def command(argv):
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(10)  # the handler raises here
        except KeyboardInterrupt:
            reached.append("interrupt")
            raise

    previous = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        monkeypatch.setitem(cli.COMMANDS, "train", command)
        assert cli.main(["train"]) == 143
        assert reached == ["interrupt"]
        assert capsys.readouterr().err.strip() == "lnm-jax train: error: terminated (SIGTERM)"
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_mapping_another_deidentify_wrote_meanwhile_is_kept(tmp_path, monkeypatch):
    """Case deidentify-concurrent-same-mapping: two deidentify calls to one --mapping, the
    second started before the first wrote it, both exit 0, the mapping then the second call's
    alone: the first copy's only link to its patients lost. The mapping is committed only
    where its name is free (fileio.atomic_file(exclusive=True)): the later writer's call fails
    naming it, the earlier mapping kept, its own copy not committed."""
    from PIL import Image

    from lnm_jax.data.privacy import deidentify as D

    for k, name in enumerate(("a.png", "b.png", "c.png", "d.png")):
        Image.fromarray(np.tile(np.arange(60 + k, 108 + k, dtype=np.uint8), (32, 1))).save(tmp_path / name)
    (tmp_path / "m.csv").write_text("patient_id,bmode,ceus,us_lnm,lnm\nA,a.png,b.png,1,1\nB,c.png,d.png,0,0\n")
    mapping, theirs = tmp_path / "map.csv", "written by the other call\n"
    read = D.read_manifest

    def meanwhile(path, **kwargs):  # the check of the copy, just before the mapping is written
        if Path(path).name == "manifest.csv":
            mapping.write_text(theirs)
        return read(path, **kwargs)

    monkeypatch.setattr(D, "read_manifest", meanwhile)
    with pytest.raises(OSError, match=r"cannot write the mapping .*map.csv: written meanwhile by another process"):
        D.deidentify(tmp_path / "m.csv", tmp_path / "deid", mapping)
    assert mapping.read_text() == theirs and not (tmp_path / "deid").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "a.png",
        "b.png",
        "c.png",
        "d.png",
        "m.csv",
        "map.csv",
    ]  # no temporary


def test_the_plateau_cuts_after_patience_epochs_without_a_gain_and_patience_0_is_refused(tmp_path):
    """The plateau drop as docs/training.md states it: the rate is cut once ``patience`` epochs
    in a row have not lowered the validation loss (Keras's count; PyTorch's ReduceLROnPlateau
    with patience p - 1), then ``cooldown`` epochs pass before the count starts again. With
    patience 0 optax's count cut on every improving epoch and never on a flat one (a fresh-user
    trial against PyTorch: 1e-4, 1e-5, 1e-6 over three improving epochs); it is refused."""
    import jax
    import jax.numpy as jnp

    from lnm_jax.training.state import make_plateau

    def scales(values, **cfg):
        plateau = make_plateau({**demo_config().train.plateau.to_dict(), **cfg})
        update, state, out = jax.jit(plateau.update), plateau.init(jnp.zeros(1)), []
        for v in values:
            state = update(jnp.zeros(1), state, value=jnp.float32(v))[1]
            out.append(round(float(state.scale), 6))
        return out

    # improves twice, then flat: cut after the 3rd flat epoch, then after 3 more
    assert scales([0.7, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6], patience=3) == [1, 1, 1, 1, 0.1, 0.1, 0.1, 0.01]
    # a gain under rtol (1e-4 relative) is no gain; cooldown 1 waits one epoch before counting
    assert scales([0.7, 0.69999, 0.7, 0.7, 0.7, 0.7], patience=2, cooldown=1) == [1, 1, 0.1, 0.1, 0.1, 0.01]
    c = demo_config()
    c.train.plateau.patience = 0
    assert config_problems(c) == [
        "train.plateau.patience: 0 is not an integer >= 1 (epochs without a validation-loss gain before a cut)"
    ]
    # a run an earlier version trained with it is still read (evaluate, predict, export), not
    # called edited (the diff's review)
    from lnm_jax.config import write_config
    from lnm_jax.run_config import load_config

    write_config(tmp_path / "config.json", c)
    assert load_config(tmp_path).train.plateau.patience == 0


def test_a_best_checkpoint_gone_or_not_the_runs_best_is_refused(triple_run, copy_run, capsys):
    """helper-81: checkpoints/best deleted, a resume trained on without a word (evaluate then
    found no best); a 'latest' copied over 'best' (its epoch 8, its record naming epoch 1 best)
    was evaluated and carded as the best epoch. Each is one line naming the checkpoint, before
    anything is read or written, the run folder as it was. A best that 'latest' does not name
    (left by a stopped attempt whose redone epoch did not improve again) is refused to readers
    and resumed over. A best ahead of 'latest' and of the history (a run stopped twice between
    saving a best epoch and its 'latest': helper-82) is read and resumed."""
    from lnm_jax.run import Run
    from lnm_jax.training.checkpoint import CheckpointCorruptError

    def rewritten(run, kind, number, **changes):
        """checkpoints/<kind> replaced by the latest state saved as ``number`` with ``changes``
        to its metadata (what a copy of another checkpoint of the run holds)."""
        ckpts = run.checkpoints(create=True)
        try:
            meta, _ = ckpts.meta("latest")
            state, _ = ckpts.restore("latest", run.abstract_state())
            shutil.rmtree(ckpts.directory(kind))
            ckpts.close()
            ckpts = run.checkpoints(create=True)
            ckpts.save(kind, number, state, {**meta, **changes})
            ckpts.wait()
        finally:
            ckpts.close()

    last = json.loads(triple_run.files.history.read_text().splitlines()[-1])["epoch"]
    cases = (
        (lambda run: shutil.rmtree(run.files.checkpoints / "best"), FileNotFoundError, r"best holds no checkpoint"),
        (  # a 'latest' of a later epoch copied over the best: its own record names another epoch best
            lambda run: rewritten(run, "best", 1, epoch=last + 5, best={"val_auc": 0.5, "epoch": 1, "val_loss": 0.7}),
            CheckpointCorruptError,
            rf"is not the run's best: it holds epoch {last + 5}, whose record names epoch 1 the best",
        ),
    )
    for i, (edit, kind, says) in enumerate(cases):
        run = copy_run(triple_run, f"c{i}")
        edit(run)
        before = _snapshot(run.workdir)
        with pytest.raises(kind, match=says):
            Run.open(run.workdir).restore("best")
        capsys.readouterr()
        assert main(["train", "--resume", f"--config.train.epochs={last + 2}", "--workdir", str(run.workdir)]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and re.search(says, err[0]), err
        assert _snapshot(run.workdir) == before, says
    # 'latest' names another epoch best than the best checkpoint holds: readers refused, a resume goes on
    # (another epoch than the best one holds: the shared run's best is epoch 1 or 2 as training goes)
    ckpts = triple_run.checkpoints()
    held = ckpts.meta("best")[0]["epoch"]
    ckpts.close()
    other = 1 if held != 1 else last
    run = copy_run(triple_run, "named")
    rewritten(run, "latest", last, best={"val_auc": 0.5, "epoch": other, "val_loss": 0.7})
    says = rf"holds epoch {held}, but .* records epoch {other} as the run's best"
    with pytest.raises(CheckpointCorruptError, match=says):
        Run.open(run.workdir).restore("best")
    assert main(["train", "--resume", f"--config.train.epochs={last + 1}", "--workdir", str(run.workdir)]) == 0
    # a best ahead of 'latest' and of the history: read, and resumed over
    run = copy_run(triple_run, "ahead")
    rewritten(run, "best", last + 1, epoch=last + 1, best={"val_auc": 0.9, "epoch": last + 1, "val_loss": 0.5})
    Run.open(run.workdir).restore("best")
    assert main(["train", "--resume", f"--config.train.epochs={last + 1}", "--workdir", str(run.workdir)]) == 0
    capsys.readouterr()


def test_a_run_made_inside_another_runs_folder_is_refused(triple_run, tiny_cohort, capsys):
    """helper-81: train --workdir HOST/checkpoints/best/<epoch> trained (HOST's evaluate then
    failed on the checkpoint; one made in checkpoints/latest/<epoch> was deleted by HOST's next
    save) and HOST/sub too. Both are one line naming the host, before anything is written."""
    host = triple_run.workdir
    best = next((host / "checkpoints" / "best").iterdir())
    before = _snapshot(host)
    for work, says in (
        (best / "run", rf"lies in {re.escape(str(host / 'checkpoints'))}, part of the run folder"),
        (host / "sub", "lies inside the run folder"),
    ):
        argv = ["train", "--workdir", str(work), f"--config.data.manifest={tiny_cohort}"]
        argv += ["--config.data.image_size=32", "--config.model.width=8", "--config.train.epochs=1"]
        assert main(argv) == 1, work
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and re.search(says, err[0]) and "choose a folder outside it" in err[0], err
        assert not work.exists()
    assert _snapshot(host) == before


def test_the_card_states_the_schedule_the_checkpoints_record_not_an_edited_config_json(triple_run, copy_run):
    """config.json's fields a resume may change (train.epochs, train.early_stop_patience) are not
    checked against the checkpoints: edited by hand, they had reached the model card ("up to 2
    epochs, early stopping 3" of a run trained to 4 with none; helper-81). The card states what
    the newest checkpoint records."""
    from lnm_jax.model_card import metadata
    from lnm_jax.run import Run

    run = copy_run(triple_run)
    stored = json.loads(run.files.config.read_text())
    trained = stored["train"]["epochs"], stored["train"]["early_stop_patience"]
    stored["train"].update(epochs=trained[0] + 5, early_stop_patience=trained[1] + 3)
    run.files.config.write_text(json.dumps(stored))
    h = metadata(Run.open(run.workdir), "best")["hyperparameters"]
    assert (h["epochs"], h["early_stop_patience"]) == trained


def test_an_unfinished_run_is_said_so_where_it_is_evaluated(triple_run, monkeypatch):
    """A run killed in epoch 4 of 8 was evaluated and carded as "epoch 3 (best ...)" unsaid
    (helper-81): its evaluation warns that training stopped before train.epochs, unless early
    stopping stopped it. The schedule is the newest checkpoint's record."""
    from lnm_jax.evaluation import evaluate as E
    from lnm_jax.training.checkpoint import CONFIG_KEY, STALE_KEY

    assert E.unfinished_warning(triple_run) is None  # trained to its train.epochs
    meta, where = E.trained_checkpoint(triple_run.files)
    record = json.loads(json.dumps(meta[CONFIG_KEY]))
    record["train"].update(epochs=8, early_stop_patience=0)
    monkeypatch.setattr(E, "trained_checkpoint", lambda files: ({**meta, "epoch": 3, CONFIG_KEY: record}, where))
    said = E.unfinished_warning(triple_run)
    assert said.startswith("training stopped at epoch 3 of 8 (interrupted, not by early stopping)"), said
    assert "--resume" in said and where.parent.name == "latest"
    # its 'latest' save failed: only 'best' is there, and a resume is refused, so none is offered
    # (helper-113: the card had pointed to --resume)
    best = where.parent.parent / "best" / where.name
    monkeypatch.setattr(E, "trained_checkpoint", lambda files: ({**meta, "epoch": 3, CONFIG_KEY: record}, best))
    said = E.unfinished_warning(triple_run)
    assert "holds no 'latest' checkpoint to resume from" in said and "--resume" not in said, said
    record["train"]["early_stop_patience"] = 2  # stopped early: finished as configured
    monkeypatch.setattr(
        E, "trained_checkpoint", lambda files: ({**meta, "epoch": 3, STALE_KEY: 2, CONFIG_KEY: record}, where)
    )
    assert E.unfinished_warning(triple_run) is None
    # a checkpoint saved before the count was kept, with early stopping: it may have stopped early
    # (helper-82: an older run that had was told it was interrupted)
    old = {k: v for k, v in meta.items() if k != STALE_KEY}
    monkeypatch.setattr(E, "trained_checkpoint", lambda files: ({**old, "epoch": 3, CONFIG_KEY: record}, where))
    assert E.unfinished_warning(triple_run) is None


@pytest.mark.parametrize("stop", [MemoryError, KeyboardInterrupt])
def test_a_first_start_stopped_before_any_checkpoint_leaves_the_folder_as_it_found_it(
    tiny_cohort, tmp_path, monkeypatch, capsys, stop
):
    """helper-94: a start that ran out of memory decoding its cohort, or was stopped by Ctrl-C
    before its first checkpoint, left config.json, splits.json and the rest; told "no checkpoint
    was written (nothing to resume from)", the same command was then refused as a run needing
    --resume. Now it leaves the folder as it found it (said), and the same command starts; a
    folder a killed start left (no code ran to clean it) is refused saying it finished no epoch."""
    from support import tiny_config

    from lnm_jax.run import Run, RunExistsError
    from lnm_jax.training import loop

    work = tmp_path / "w"
    work.mkdir()
    (work / "notes.txt").write_text("mine")  # a user's file: kept, and so the folder
    config = tiny_config(tiny_cohort, "us_lnm", epochs=1)
    real = Run.record_intensity_reference

    def fail(self):
        raise stop()

    monkeypatch.setattr(Run, "record_intensity_reference", fail)
    with pytest.raises(stop):
        loop.train(Run.create(config, work))
    assert sorted(p.name for p in work.iterdir()) == ["notes.txt"]
    assert f"note: what this start wrote was removed: {work} is as it was before it" in capsys.readouterr().err
    monkeypatch.setattr(Run, "record_intensity_reference", real)
    run = Run.create(config, work)  # the same start again: not taken for a run to resume
    (run.files.checkpoints / "latest").mkdir(parents=True)  # as a start killed in its first epoch leaves it
    with pytest.raises(RunExistsError, match="holds a run that finished no epoch .* pass --resume to go on"):
        Run.create(config, work)


def test_a_disk_too_small_for_the_checkpoints_is_refused_before_anything_is_written(tiny_cohort, tmp_path, monkeypatch):
    """helper-94: nothing said what a run's checkpoints need before a full disk stopped it after
    an epoch. Three states (best, latest, one being written) against the free space, first."""
    import shutil
    from collections import namedtuple

    from support import tiny_config

    from lnm_jax.preflight import check_disk_space
    from lnm_jax.run import Run

    with pytest.raises(
        ValueError, match=r"has 1 MiB free; the run's checkpoints need about 30 MiB \(3 of its state, 10 MiB"
    ):
        check_disk_space(tmp_path / "a" / "b", 10 * 2**20, free=2**20)
    check_disk_space(tmp_path / "a" / "b", 10 * 2**20, free=31 * 2**20)
    check_disk_space(tmp_path / "a" / "b", 10 * 2**20, free=11 * 2**20, states=1)  # a resume's one in flight
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(2**30, 2**30 - 2**16, 2**16))
    with pytest.raises(ValueError, match="the run's checkpoints need about"):
        Run.create(tiny_config(tiny_cohort, "triple", epochs=1), tmp_path / "w")
    assert not (tmp_path / "w").exists()


def test_a_ctrl_c_whose_interrupt_was_swallowed_still_stops_training(tiny_cohort, tmp_path, monkeypatch, capsys):
    """helper-94: one Ctrl-C in seven, sent near the first step's compile, was lost and training
    ran to its end (exit 0): a KeyboardInterrupt raised where the interpreter swallows it (a
    finalizer or callback on the main thread) is gone. The command line's handlers also record
    the stop, and the loop checks it at every step: here the handler's record is made and its
    exception lost, as then; the command stops (130) at the next step with the last checkpoint."""
    import signal

    from support import tiny_config

    from lnm_jax import fileio
    from lnm_jax.training import loop

    real = loop.make_train_step
    steps = []

    def counting(*a, **k):
        step = real(*a, **k)

        def wrapped(state, batch):
            steps.append(1)
            if len(steps) == 3:  # the handler ran (its record made), its KeyboardInterrupt swallowed
                assert signal.getsignal(signal.SIGINT) is not signal.default_int_handler  # the CLI's own
                fileio.STOP_ASKED.set()
            return step(state, batch)

        return wrapped

    monkeypatch.setattr(loop, "make_train_step", counting)
    # the handler the command found (Python's default_int_handler; SIG_IGN in a process a shell
    # started in the background, where SIGINT is ignored from the start): it is put back
    before = signal.getsignal(signal.SIGINT)
    work = tmp_path / "w"
    c = tiny_config(tiny_cohort, "us_lnm", epochs=3)
    argv = ["train", "--workdir", str(work), "--config.modalities=us_lnm", f"--config.data.manifest={tiny_cohort}"]
    argv += [
        f"--config.{k}={c[g][f]}"
        for k in ("data.image_size", "train.epochs", "train.batch_size")
        for g, f in [k.split(".")]
    ]
    assert main(argv) == 130
    assert len(steps) == 3 and not fileio.STOP_ASKED.is_set()  # (cleared once the command ends)
    assert signal.getsignal(signal.SIGINT) is before
    assert "interrupted" in capsys.readouterr().err


def test_a_run_kept_alive_lets_go_of_its_decoded_cohort(triple_run):
    """helper-97: reproduce keeps every setting's finished run for its figures, each holding its
    own decoded cohort, where the memory check counts one. ``release_data`` drops it; asked for
    again, it is read anew."""
    held = triple_run.data
    triple_run.release_data()
    assert "data" not in triple_run.__dict__ and triple_run.data is not held


def test_a_temperature_at_its_search_bound_is_reported_and_written_nowhere(triple_run, copy_run, monkeypatch):
    """helper-99: a temperature that stopped at its bound was still applied in evaluate's
    predictions.csv (0/1 columns), the reliability figure and the console's "after T" ECE;
    the warning blamed "little ranking" on a validation split the logits separate."""
    from lnm_jax.evaluation import calibration as C
    from lnm_jax.evaluation.evaluate import evaluate
    from lnm_jax.model_card import CALIBRATION_AT_BOUND, metadata

    run = copy_run(triple_run)
    monkeypatch.setattr(C, "fit_temperature", lambda labels, logits: C.TEMPERATURE_BOUNDS[0])
    # (the same evaluation, to spare the suite one: a cohort whose flag copies the label, in memory,
    # is warned of as train warns of it; helper-123: evaluate had printed "us_lnm 1.000/1.000" alone)
    import dataclasses

    copied = tuple(dataclasses.replace(p, us_lnm=p.lnm) for p in run.cohort.patients)
    run.cohort = dataclasses.replace(run.cohort, patients=copied)
    doc = evaluate(run)
    assert any(w.startswith("us_lnm equals the label for every labelled patient") for w in doc["warnings"])
    assert doc["temperature_at_bound"] and all("temperature" not in m["calibration"] for m in doc["splits"].values())
    val = run.predict("val", "best")
    cause = C.bound_cause(val["lnm"], val["logit"], C.TEMPERATURE_BOUNDS[0])  # its words at the lower bound
    assert any(cause in w for w in doc["warnings"]), doc["warnings"]
    with (run.files.evaluation("best") / "predictions.csv").open() as f:
        header = f.readline().strip().split(",")
    assert "prob_lnm_calibrated" not in header and "prob_lnm" in header
    limits = metadata(run, "best")["limits"]
    assert CALIBRATION_AT_BOUND.format(t=C.TEMPERATURE_BOUNDS[0]) in limits


def test_a_run_records_what_changes_its_arithmetic_and_a_resume_says_when_it_differs():
    """helper-100: the core count (taskset, a cpuset) and JAX settings set outside the config
    (JAX_THREEFRY_PARTITIONABLE, JAX_ENABLE_X64) changed a run's numbers, and its run_info.json
    was the same; one CPU model name came with and without AVX-512."""
    import os

    from lnm_jax import provenance
    from lnm_jax.run_record import resumed_elsewhere_note

    info = provenance.run_info()
    assert info["usable_cpus"] == len(os.sched_getaffinity(0))
    assert set(info["jax_settings"]) == set(provenance.JAX_SETTINGS)
    assert info["jax_settings"]["jax_enable_x64"] is False and info["jax_settings"]["jax_threefry_partitionable"]
    assert set(info["cpu_features"]) <= set(provenance.ISA_FEATURES) and len(info["source_sha256"]) == 64
    assert resumed_elsewhere_note(info, info) is None
    # a field the earlier record lacks (an older version's) says nothing
    assert resumed_elsewhere_note({"xla_flags": info["xla_flags"]}, {**info, "usable_cpus": 0}) is None
    other = {**info, "usable_cpus": info["usable_cpus"] + 1}
    note = resumed_elsewhere_note(other, info)
    assert note.startswith("resumed with other settings than the process before (usable_cpus ")
    flipped = {**info, "jax_settings": {**info["jax_settings"], "jax_threefry_partitionable": False}}
    assert "jax_settings jax_threefry_partitionable False before, True now" in resumed_elsewhere_note(flipped, info)
    # helper-114: an earlier version recorded fewer packages, the same versions: not a change; the
    # code that changed is named by its commits
    fewer = {**info, "packages": {"jax": info["packages"]["jax"]}}
    assert resumed_elsewhere_note(fewer, info) is None
    older = {**fewer, "source_sha256": "0" * 64, "git": {"commit": "b402e96" + "0" * 33, "dirty": False}}
    now = {**info, "git": {"commit": "5e4742d" + "0" * 33, "dirty": False}}
    assert "(lnm_jax at commit b402e9600000 before, 5e4742d00000 now)" in resumed_elsewhere_note(older, now)


def test_a_real_cohorts_card_lists_what_only_its_authors_can_add_and_its_cut_off_table(triple_run):
    """helper-104: a real cohort's card read as complete without data source, dates, eligibility,
    outcome assessment or ethics (TRIPOD+AI, CLAIM); PPV and NPV were nowhere."""
    import copy

    from lnm_jax.model_card import AUTHORS_SECTION, markdown, metadata

    md = metadata(triple_run, "best")
    assert AUTHORS_SECTION[0] not in markdown(md)  # the synthetic cohort: nothing to add
    real = copy.deepcopy(md)
    real["training_cohort"]["synthetic"] = False
    assert "\n".join(AUTHORS_SECTION) in markdown(real)


def test_the_commit_recorded_is_one_that_holds_the_package(tmp_path):
    """helper-117: lnm_jax installed (``pip install --target``) into a folder that is another
    project's git repository was recorded at that project's commit, clean. A commit is claimed
    only where the package's files are tracked; a package file the commit lacks (a new module
    not yet added) makes the record dirty, its content in the diff's digest."""
    from lnm_jax import provenance

    repo = tmp_path / "analysis"
    (repo / "lnm_jax").mkdir(parents=True)
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.org"]
    subprocess.run([*git, "init", "-q"], check=True)
    (repo / "README.md").write_text("another project\n")
    subprocess.run([*git, "add", "README.md"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "theirs"], check=True)
    for name in ("__init__.py", "provenance.py"):
        shutil.copy(Path(provenance.__file__).parent / name, repo / "lnm_jax" / name)
    assert provenance.git_commit(repo) is None  # the package is not that repository's
    subprocess.run([*git, "add", "lnm_jax"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "ours"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    assert provenance.git_commit(repo) == {"commit": head, "dirty": False}
    (repo / "lnm_jax" / "new.py").write_text("X = 1\n")
    first = provenance.git_commit(repo)
    assert first["commit"] == head and first["dirty"] and len(first["diff_sha256"]) == 64
    (repo / "lnm_jax" / "new.py").write_text("X = 2\n")
    assert provenance.git_commit(repo)["diff_sha256"] != first["diff_sha256"]
