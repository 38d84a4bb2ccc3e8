"""Training end to end on tiny synthetic cohorts: learning, checkpoints, resume, determinism,
the NaN guard, evaluation outputs, prediction, and what a run folder records."""

from __future__ import annotations

import csv
import json
import os
import shutil
import threading
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image
from support import SEED, new_patients, record, saved_at_the_end, tiny_config

from lnm_jax import run_files as F
from lnm_jax.cli import main
from lnm_jax.compile_options import KINDS, LEVEL, compiler_options
from lnm_jax.config import base_config
from lnm_jax.evaluation.evaluate import evaluate, predict_manifest
from lnm_jax.exported import METADATA, MODEL_CARD
from lnm_jax.metric_writer import read_history
from lnm_jax.run import Run, RunExistsError, zero_batch
from lnm_jax.run_config import ConfigMismatchError, check_resumable, load_config
from lnm_jax.training import steps as steps_lib
from lnm_jax.training.checkpoint import RunCheckpoints
from lnm_jax.training.loop import NonFiniteLossError, train
from lnm_jax.training.save_schedule import SaveSchedule

TIMING_KEYS = ("train_patients_per_s", "epoch_time_s", "epoch_cycle_s")


def _history(run):
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in read_history(run.files.history)]


# Margin from the measured spread (scripts/measure_test_margins.py, seeds 0-4 natively and 0-2
# with XLA:CPU held to AVX2), with ResNet-10 branches: test AUC mean 0.981, SD 0.018, min 0.958
# over 8 runs (Bayes 0.999); 0.88 is the mean - 5.6 SD. (ResNet-18, before: mean 0.960, SD 0.029,
# min 0.917, margin 0.8.)
LEARNS_MIN_AUC = 0.88


def learns_scenario(learnable_cohort, workdir, seed=SEED):
    """Images only (dual) on strong cues: 8 epochs at 48 px; returns the run and its result."""
    config = tiny_config(learnable_cohort, "dual", epochs=8)  # ResNet-10: the margin was measured with it
    config.seed = config.data.split.seed = seed
    config.train.batch_size = 16
    config.data.image_size = 48
    run = Run.create(saved_at_the_end(config), workdir)
    train(run)
    return run, evaluate(run)


def test_short_run_learns_the_planted_signal(learnable_cohort, tmp_path):
    """The held-out AUC must be clearly above chance; evaluation writes its files with the
    shared summary schema; Grad-CAM explains the same live run."""
    run, res = learns_scenario(learnable_cohort, tmp_path / "run")
    record("learns", test_auc=res["splits"]["test"]["auc"])
    assert res["splits"]["test"]["auc"] > LEARNS_MIN_AUC, res["splits"]["test"]
    out = run.files.evaluation("best")
    assert {p.name for p in out.iterdir()} == {
        F.METRICS,
        F.ROC,
        F.PREDICTIONS_CSV,
        F.RELIABILITY,
        F.DECISION_CURVE,
        F.CONVERGENCE,  # the run's history: any run's, not only reproduce's
        METADATA,
        MODEL_CARD,  # evaluate describes the model it evaluated
        "gradcam_test",  # the cohort has lesion masks: Grad-CAM of the test split scored against them
    }
    assert set(res["cam_scores"]["summary"]) == {"bmode", "ceus"}
    assert (out / "gradcam_test" / F.CAM_SCORES).is_file()
    assert "## Image evidence" in (out / MODEL_CARD).read_text()
    rows = list(csv.DictReader((out / F.PREDICTIONS_CSV).open()))
    assert len(rows) == res["splits"]["val"]["n"] + res["splits"]["test"]["n"]
    assert all(0.0 <= float(r["prob_lnm"]) <= 1.0 for r in rows)
    written = json.loads((out / F.METRICS).read_text())
    # the evaluating process's own record: how the programs that computed these numbers were built
    from lnm_jax import compile_options as co

    by = written["evaluated_by"]
    assert by["compile_options"] == {"inference": co.compiler_options(co.INFERENCE) or {}}  # the kind it compiled
    assert by["xla_flags"] == os.environ.get("XLA_FLAGS", "") and by["packages"]["jax"]
    # a cohort lnm-jax synth wrote (generator.json beside the manifest): the generator's
    # Bayes-optimal AUC of these inputs and its score's AUC on these very patients
    generator = json.loads((Path(run.config.data.manifest).parent / F.GENERATOR).read_text())
    ref = written["synthetic_reference"]
    assert ref["inputs"] == ["bmode", "ceus"] and ref["bayes_auc"] == generator["bayes_auc"]["dual"], ref
    assert set(ref) == {"inputs", "bayes_auc", "oracle_auc_val", "oracle_auc_test"}
    assert all(0.5 < ref[k] <= 1.0 for k in ("oracle_auc_val", "oracle_auc_test")), ref
    from lnm_jax.evaluation.evaluate import bayes_line, evaluation_lines

    assert bayes_line(res["splits"]["test"]["auc"], ref) in evaluation_lines(res).splitlines()  # what evaluate prints
    m = written["splits"]["test"]
    assert set(m) >= {"auc", "auc_ci_delong", "auc_ci_bootstrap", "at_0.5", "at_threshold", "calibration", "loss"}
    weak = ("intercept", "intercept_ci", "slope", "slope_ci")
    assert set(m["calibration"]) == {
        "ece",
        "brier",
        "temperature",
        "ece_temperature_scaled",
        "brier_temperature_scaled",
        *weak,
        *("intercept_temperature_scaled", "intercept_temperature_scaled_ci"),
        *("slope_temperature_scaled", "slope_temperature_scaled_ci"),
    }
    from lnm_jax.fileio import SEAL_KEY, json_digest

    fitted = json.loads(run.files.calibration("best").read_text())  # sealed: an edit is refused where it is read
    assert fitted[SEAL_KEY] == json_digest(fitted, SEAL_KEY) and fitted["temperature"] > 0
    for key in ("auc_ci_delong", "auc_ci_bootstrap"):
        lo, hi = m[key]
        assert lo <= m["auc"] <= hi

    from lnm_jax.explain.heatmaps import gradcam

    cams = gradcam(run, split="test", out=tmp_path / "cams")  # the live run: nothing re-read
    assert cams["patients"] == res["splits"]["test"]["n"]
    assert len(list((tmp_path / "cams" / F.CAM_PATIENTS).glob("*.png"))) == cams["patients"]
    assert (tmp_path / "cams" / F.CAM_GRID_CORRECT).stat().st_size > 10_000
    assert (tmp_path / "cams" / F.CAM_GRID_INCORRECT).is_file()
    index = list(csv.DictReader((tmp_path / "cams" / F.CAM_INDEX).open()))
    meta = run.predictor("best").meta  # what the maps were computed with (a resume moves them aside)
    assert json.loads((tmp_path / "cams" / F.CAM_SOURCE).read_text()) == {
        "run": str(run.workdir),
        "checkpoint": "best",
        "epoch": meta["epoch"],
        "state_sha256": meta["state_sha256"],
        "method": "gradcam",  # and how (helper-93: a --target no_lnm call had replaced the figures unsaid)
        "layer": cams["layer"],  # the layer 'auto' chose (helper-97)
        "target": "lnm",
        "threshold": 0.5,
    }
    # the same folder from another checkpoint: replaced, and said (it had been in silence)
    again = gradcam(run, split="test", out=tmp_path / "cams", checkpoint="latest", figures=False)
    said = f"replaced cams/, the maps of the 'best' checkpoint of epoch {meta['epoch']} of {run.workdir}"
    said += f" (gradcam at {cams['layer']}, target lnm, threshold 0.5)"
    assert said in again["notes"], again["notes"]
    same = gradcam(run, split="test", out=tmp_path / "cams", checkpoint="latest", figures=False)
    assert not any(n.startswith("replaced") for n in same["notes"]), same["notes"]
    same_layer = gradcam(
        run, split="test", out=tmp_path / "cams", checkpoint="latest", figures=False, layer=cams["layer"]
    )
    assert not any(n.startswith("replaced") for n in same_layer["notes"]), same_layer["notes"]  # what 'auto' chose
    other = gradcam(run, split="test", out=tmp_path / "cams", checkpoint="latest", figures=False, target="no_lnm")
    want = f"(gradcam at {cams['layer']}, target lnm, threshold 0.5)"
    assert any(n.startswith("replaced cams/") and want in n for n in other["notes"]), other["notes"]
    assert {r["patient_id"] for r in index} == {r["patient_id"] for r in rows if r["split"] == "test"}


def test_resume_and_same_seed_are_bitwise_reproducible(triple_run, tiny_cohort, tmp_path, capsys):
    """A second run of the same seed trained for one epoch, then resumed from the command line
    to two, equals the shared two-epoch run: epoch 1 shows same-seed determinism, epoch 2 that
    the resumed run continued from exactly the saved state (same process, same machine).
    The output folders computed from epoch 1's ``latest`` checkpoint are moved aside when the
    resume replaces it (they had stayed, presenting epoch 1's numbers as the run's latest)."""
    one = Run.create(tiny_config(tiny_cohort, "triple", epochs=1), tmp_path / "resumed")
    train(one)
    root = one.workdir
    records = {  # folder -> (record, checkpoint, epoch): what evaluate, availability, gradcam write
        "eval_latest": (F.METRICS, "latest", 1),
        "eval_latest.epoch-1": (F.METRICS, "latest", 1),  # moved aside by an earlier resume: kept
        "gradcam_test": (F.CAM_SOURCE, "latest", 1),
        "gradcam_val": (F.CAM_SOURCE, "latest", 2),  # of the state the resume saves: kept
        "eval_other": (F.AVAILABILITY_JSON, "latest", "1"),  # no whole epoch: not ours to move
    }
    for name, (kind, checkpoint, epoch) in records.items():
        (root / name).mkdir()
        (root / name / kind).write_text(json.dumps({"checkpoint": checkpoint, "epoch": epoch}))
    capsys.readouterr()
    assert (
        main(
            [
                "train",
                "--workdir",
                str(tmp_path / "resumed"),
                "--resume",
                f"--config.data.manifest={tiny_cohort}",
                "--config.train.epochs=2",
            ]
        )
        == 0
    )
    said = capsys.readouterr().out
    assert not (root / "eval_latest").exists() and not (root / "gradcam_test").exists()
    assert json.loads((root / "eval_latest.epoch-1.1" / F.METRICS).read_text())["epoch"] == 1
    assert (root / "gradcam_test.epoch-1" / F.CAM_SOURCE).is_file()
    assert "eval_latest/ was computed from the 'latest' checkpoint of epoch 1" in said, said
    assert "moved to eval_latest.epoch-1.1/" in said and "moved to gradcam_test.epoch-1/" in said
    for kept in ("eval_latest.epoch-1", "gradcam_val", "eval_other"):
        assert (root / kept / records[kept][0]).is_file(), kept
    resumed = Run.open(tmp_path / "resumed")
    h_full = _history(triple_run)
    assert len(h_full) == 2
    assert _history(resumed) == h_full
    s_full, meta_full = triple_run.restore("latest")
    s_res, meta_res = resumed.restore("latest")
    # the same metadata but for each run's identity (created for one epoch and for two: two runs)
    own = ("run_sha256", "meta_sha256")
    assert meta_full["run_sha256"] != meta_res["run_sha256"]
    assert {k: v for k, v in meta_full.items() if k not in own} == {k: v for k, v in meta_res.items() if k not in own}
    assert int(s_full.step) == int(s_res.step)
    for a, b in zip(jax.tree.leaves(s_full), jax.tree.leaves(s_res)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_an_output_folder_that_cannot_be_moved_aside_is_named_once(tmp_path, monkeypatch):
    """A superseded output folder that cannot be renamed (permissions, another mount) does not
    stop training, whose checkpoint is saved: one warning naming it, not one per save."""
    from lnm_jax.training.loop import _outputs_superseded

    class Writer:
        primary = True

        def __init__(self):
            self.lines = []

        def print(self, line):
            self.lines.append(line)

    (tmp_path / "eval_latest").mkdir()
    (tmp_path / "eval_latest" / F.METRICS).write_text(json.dumps({"checkpoint": "latest", "epoch": 1}))

    def refuse(self, target):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "rename", refuse)
    writer = Writer()
    saved = _outputs_superseded(F.RunFiles(tmp_path), writer)
    saved("latest", 2)
    saved("latest", 3)
    saved("best", 3)
    assert len(writer.lines) == 1 and writer.lines[0].startswith(f"warning: {tmp_path / 'eval_latest'} was computed")
    assert "epoch 1" in writer.lines[0] and "Permission denied" in writer.lines[0]
    assert (tmp_path / "eval_latest" / F.METRICS).is_file()


def test_an_epochs_cycle_counts_the_wait_for_checkpoints_its_time_does_not(tiny_cohort, tmp_path, monkeypatch):
    """``epoch_time_s`` is an epoch's steps and validation; ``epoch_cycle_s`` runs from the
    previous epoch's line to this one's (what scripts/train_e2e.py's whole-epoch rate is taken
    from). Saves run in the background (save_schedule.py), each made 0.5 s slower here: epoch 1's
    (``best`` and ``latest``) go on while epoch 2 trains, so epoch 2's cycle does not hold them;
    epoch 2's save point waits for them before epoch 3 trains, so cycles 2 and 3 together hold
    at least their time. The first epoch of a process has no previous line, no cycle. (The
    flag-only setting: the same loop and checkpoints, no image branch to compile.)"""
    from lnm_jax.training.checkpoint import RunCheckpoints

    save, extra, saved = RunCheckpoints.save, 0.5, []

    def slow_save(self, kind, number, state, meta, **kwargs):
        time.sleep(extra)
        saved.append((kind, meta["epoch"], threading.current_thread().name))
        return save(self, kind, number, state, meta, **kwargs)

    monkeypatch.setattr(RunCheckpoints, "save", slow_save)
    run = Run.create(tiny_config(tiny_cohort, "us_lnm", epochs=3), tmp_path / "run")
    train(run)
    first, second, third = read_history(run.files.history)
    assert "epoch_cycle_s" not in first
    after_first = [k for k, e, _ in saved if e == 1]
    assert "latest" in after_first and all(t.startswith("checkpoint") for *_, t in saved), saved
    waited = extra * len(after_first)
    assert second["epoch_cycle_s"] < waited, (second, saved)  # overlapped with epoch 2
    assert second["epoch_cycle_s"] + third["epoch_cycle_s"] >= waited, (second, third, saved)


def test_a_run_holds_only_the_checkpoint_kinds_it_saved(triple_run):
    """Without train.checkpoint_every_steps no mid-epoch checkpoint is saved, and no empty
    ``progress`` folder stands beside ``latest`` and ``best`` (stop 63's trial found one in
    every run)."""
    assert triple_run.config.train.checkpoint_every_steps == 0
    assert sorted(p.name for p in triple_run.files.checkpoints.iterdir()) == ["best", "latest"]


def test_run_killed_mid_epoch_resumes_on_the_next_batch(triple_run, tiny_cohort, tmp_path, monkeypatch):
    """Checkpointing every step, a run killed after step k (inside epoch 2) and resumed ends
    with the parameters, optimizer state and history of the uninterrupted two-epoch run: the
    loader's iterator state restored from the checkpoint gave exactly the batches not yet seen."""
    from lnm_jax.training import loop as loop_lib

    config = tiny_config(tiny_cohort, "triple", epochs=2)
    config.train.checkpoint_every_steps = 1
    per_epoch = Run.create(config, tmp_path / "killed").data.steps_per_epoch()
    kill_after = per_epoch + 2  # in the middle of epoch 2
    real = loop_lib.make_train_step

    def dying(*a, **kw):
        step, calls = real(*a, **kw), []

        def counted(state, batch):
            if len(calls) == kill_after:
                raise KeyboardInterrupt
            calls.append(1)
            return step(state, batch)

        return counted

    monkeypatch.setattr(loop_lib, "make_train_step", dying)
    with pytest.raises(KeyboardInterrupt):
        train(Run.create(config, tmp_path / "killed", resume=True))
    monkeypatch.setattr(loop_lib, "make_train_step", real)
    resumed = Run.create(config, tmp_path / "killed", resume=True)
    assert resumed.checkpoints().latest_epoch("progress") == kill_after
    assert (resumed.files.checkpoints / "progress" / str(kill_after)).is_dir()
    train(resumed)
    assert _history(resumed) == _history(triple_run)
    full, _ = triple_run.restore("latest")
    again, _ = Run.open(tmp_path / "killed").restore("latest")
    assert int(again.step) == int(full.step) == 2 * per_epoch
    for a, b in zip(jax.tree.leaves(full), jax.tree.leaves(again)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("stop", ["SIGTERM", "an error"])
def test_epochs_between_save_points_cost_no_result(stop, triple_run, tiny_cohort, tmp_path, monkeypatch, capsys):
    """train.checkpoint_every_epochs=2: epoch 1 (the best so far) is held, not written; a run
    stopped in epoch 2 by SIGTERM (the command line raises it as an interrupt) or by an error
    (a late save's, a file read's: its message cannot know what the stop writes after it) writes
    it as best and latest first and says so; resumed from it, saving every epoch now (the cadence
    may change on resume), the run ends with the history and the best and latest states, bit for
    bit, of the run that saved every epoch."""
    from lnm_jax.cli import Terminated
    from lnm_jax.training import loop as loop_lib

    failure = Terminated if stop == "SIGTERM" else OSError("a cohort file went away")

    config = tiny_config(tiny_cohort, "triple", epochs=2)
    config.train.checkpoint_every_epochs = 2
    per_epoch = triple_run.data.steps_per_epoch()
    real, real_save, saved = loop_lib.make_train_step, RunCheckpoints.save, []

    def dying(*a, **kw):
        step, calls = real(*a, **kw), []

        def counted(state, batch):
            if len(calls) == per_epoch + 1:  # inside epoch 2
                raise failure
            calls.append(1)
            return step(state, batch)

        return counted

    def recorded(self, kind, number, *a, **kw):
        saved.append((kind, number))
        return real_save(self, kind, number, *a, **kw)

    monkeypatch.setattr(loop_lib, "make_train_step", dying)
    monkeypatch.setattr(RunCheckpoints, "save", recorded)
    with pytest.raises(type(failure) if stop == "an error" else Terminated):
        train(Run.create(config, tmp_path / "run"))
    assert saved == [("best", 1), ("latest", 1)]  # nothing before the stop
    out = "".join(capsys.readouterr())
    assert "training stopped: the last good checkpoint (epoch 1, " in out and "--resume continues from it" in out
    if stop == "an error":  # the resume from what the stop wrote is the same: the interrupt's run shows it
        return
    monkeypatch.setattr(loop_lib, "make_train_step", real)
    config.train.checkpoint_every_epochs = 1
    resumed = Run.create(config, tmp_path / "run", resume=True)
    assert resumed.checkpoints().latest_epoch("latest") == 1
    train(resumed)
    assert _history(resumed) == _history(triple_run)
    for kind in ("best", "latest"):
        want, want_meta = triple_run.restore(kind)
        got, got_meta = Run.open(tmp_path / "run").restore(kind)
        assert got_meta["epoch"] == want_meta["epoch"] and got_meta["best"] == want_meta["best"]
        for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(got)):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


class _Recorded:
    """A RunCheckpoints stand-in that records each save: (kind, number, the state's value)."""

    def __init__(self):
        self.saved = []

    def save(self, kind, number, state, meta, copy_of=None):
        assert meta["epoch"] == number
        self.saved.append((kind, number, float(state["w"][0])))

    def latest_epoch(self, kind):
        return max((n for k, n, _ in self.saved if k == kind), default=None)

    def directory(self, kind):
        return Path("ckpts") / kind


@pytest.mark.parametrize(
    ("every", "improving", "stop_after", "want"),
    [
        # every epoch: the paper's schedule
        (1, [1, 3], None, [("best", 1), ("latest", 1), ("latest", 2), ("best", 3), ("latest", 3), ("latest", 4)]),
        # every 2: the held best (1, 3) written at the next save point, before latest
        (2, [1, 3], None, [("best", 1), ("latest", 2), ("best", 3), ("latest", 4)]),
        # a best held then bettered before the save point: only the newer one is written
        (3, [1, 2, 4], None, [("best", 2), ("latest", 3), ("best", 4), ("latest", 4)]),
        # every 3, stopped (early stop) at 2: a save point
        (3, [1], 2, [("best", 1), ("latest", 2)]),
    ],
)
@pytest.mark.parametrize("background", [False, True], ids=["own-thread", "background"])
def test_the_save_schedule_writes_each_best_epoch_and_latest_at_save_points(
    every, improving, stop_after, want, background
):
    """SaveSchedule over four epochs (train.epochs=4): which checkpoints are written when, and
    that a held epoch, and a save point written in the background, are written with their own
    state (a copy: the next step donates the buffers it holds, here overwritten in place)."""
    ckpts = _Recorded()
    saves = SaveSchedule(ckpts, every, 4, background=background)
    w = np.zeros(1)
    for epoch in range(1, 5):
        w[0] = epoch  # the same buffer, changed as a donated one is
        stopping = epoch == stop_after
        saves.epoch_end(epoch, {"w": w}, {"epoch": 0}, epoch in improving, stopping)
        if stopping:
            break
    saves.finish()
    saves.close()
    assert [(k, n) for k, n, _ in ckpts.saved] == want
    assert all(value == n for _, n, value in ckpts.saved)  # each epoch's own state


def test_saving_whenever_the_last_save_is_done_never_waits_but_at_the_end():
    """train.checkpoint_every_epochs=0: an epoch is a save point when the save in flight is
    done (never waited for), else an improving one is held; the last epoch is always saved, and
    each checkpoint holds its own epoch's state."""

    class Gated(_Recorded):  # a save takes until the test opens the gate (a slow disk)
        def __init__(self):
            super().__init__()
            self.gate = threading.Event()

        def save(self, kind, number, state, meta, copy_of=None):
            assert self.gate.wait(10)
            super().save(kind, number, state, meta, copy_of)

    ckpts = Gated()
    saves = SaveSchedule(ckpts, 0, 5, background=True)
    w = np.zeros(1)

    def end(epoch, improved):
        w[0] = epoch
        t0 = time.perf_counter()
        saves.epoch_end(epoch, {"w": w}, {"epoch": epoch}, improved)
        return time.perf_counter() - t0

    end(1, True)  # nothing in flight: written in the background (held at the gate)
    assert end(2, True) < 5 and end(3, False) < 5  # in flight: epoch 2 held, 3 skipped, no wait
    ckpts.gate.set()
    deadline = time.monotonic() + 10
    while not saves.is_save_point(4) and time.monotonic() < deadline:  # epoch 1's save done
        time.sleep(0.01)
    end(4, False)  # done: a save point, the held epoch 2 as best first
    end(5, True)  # the last epoch: saved, after the wait for epoch 4's
    saves.finish()
    saves.close()
    assert [(k, n) for k, n, _ in ckpts.saved] == [
        ("best", 1),
        ("latest", 1),
        ("best", 2),
        ("latest", 4),
        ("best", 5),
        ("latest", 5),
    ]
    assert all(value == n for _, n, value in ckpts.saved)
    with pytest.raises(ValueError, match="must be >= 0"):
        SaveSchedule(ckpts, -1, 5)


def test_a_failed_background_save_is_raised_at_the_next_wait_and_its_held_epoch_kept():
    """A save point written in the background fails (a full disk) while training goes on: its
    error is raised by the next wait that raises (here the run's end), the held best epoch it
    did not write is held again, and the stop writes it as best and latest (the run resumes from
    it); a message waiting for the save names it, and raises nothing itself."""
    import threading

    class FullOnce(_Recorded):
        def __init__(self):
            super().__init__()
            self.threads = set()

        def save(self, kind, number, state, meta, copy_of=None):
            self.threads.add(threading.current_thread().name)
            if not self.saved and not getattr(self, "failed", False):
                self.failed = True
                raise OSError("no space left on device")
            super().save(kind, number, state, meta, copy_of)

    ckpts = FullOnce()
    saves = SaveSchedule(ckpts, 2, 10, background=True)
    saves.epoch_end(1, {"w": np.ones(1)}, {"epoch": 1}, True)  # held
    saves.epoch_end(2, {"w": np.full(1, 2.0)}, {"epoch": 1}, False)  # its save point fails in the background
    saves.epoch_end(3, {"w": np.full(1, 3.0)}, {"epoch": 1}, False)  # training went on
    assert "(epoch 1, ckpts/latest)" in saves.kept()  # waited for the save: epoch 1 is held again
    with pytest.raises(OSError, match="no space left on device"):
        saves.finish()
    saves.finish()  # raised once
    saves.on_stop(diverged=False)
    saves.close()
    assert ckpts.saved == [("best", 1, 1.0), ("latest", 1, 1.0)]
    assert any(name.startswith("checkpoint") for name in ckpts.threads)  # written off the loop's thread


def test_an_interrupt_during_the_held_epochs_save_keeps_it_for_the_stop():
    """Ctrl-C while a save point writes the held best: the save finishes and then raises
    (fileio.off_main_thread); the epoch stays held until its best is written, so the stop
    writes it with its latest and the run resumes from it, not from the save point before."""

    class Interrupted(_Recorded):
        def save(self, kind, number, state, meta, copy_of=None):
            super().save(kind, number, state, meta, copy_of)
            if len(self.saved) == 1:
                raise KeyboardInterrupt  # after the save committed

    ckpts = Interrupted()
    saves = SaveSchedule(ckpts, 2, 10)
    saves.epoch_end(1, {"w": np.ones(1)}, {"epoch": 1}, True)  # held
    with pytest.raises(KeyboardInterrupt):
        saves.epoch_end(2, {"w": np.full(1, 2.0)}, {"epoch": 1}, False)  # the save point writes epoch 1
    saves.on_stop(diverged=False)
    assert ckpts.saved == [("best", 1, 1.0), ("best", 1, 1.0), ("latest", 1, 1.0)]
    assert saves.stopped() == (
        "training stopped: the last good checkpoint (epoch 1, ckpts/latest) is kept; train --resume continues from it"
    )


def test_a_held_epoch_that_cannot_be_written_on_stopping_is_not_named_as_kept(capsys):
    """The stop's save of the held best fails (a full disk): the warning says so and names what
    is on disk instead, and the stopped line no longer names the held epoch."""

    class Full(_Recorded):
        def save(self, kind, number, state, meta, copy_of=None):
            if number == 3:
                raise OSError("no space left on device")
            super().save(kind, number, state, meta, copy_of)

    ckpts = Full()
    saves = SaveSchedule(ckpts, 2, 10)
    for epoch in (1, 2, 3):  # epoch 2 a save point (latest 2, best 1), epoch 3 a held best
        saves.epoch_end(epoch, {"w": np.full(1, float(epoch))}, {"epoch": epoch}, epoch != 2)
    assert "(epoch 3, " in saves.kept()
    saves.on_stop(diverged=False)
    err = capsys.readouterr().err
    assert "the best epoch (3) could not be saved: OSError: no space left on device" in err, err
    assert "instead, the last good checkpoint (epoch 2, ckpts/latest) is kept" in err, err
    assert saves.stopped().startswith("training stopped: the last good checkpoint (epoch 2, ")
    assert ckpts.saved == [("best", 1, 1.0), ("latest", 2, 2.0)]


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_a_second_interrupt_does_not_cut_the_stops_write_of_the_held_epoch_short(sig, capsys):
    """Ctrl-C again (or a SIGTERM: ``timeout``, Slurm) while the stop writes the best epoch it
    holds: the write finishes, best and latest, and the signal is one note, not an interrupt
    (it had cut the write short and lost the epoch in silence); the handlers are put back."""
    import signal

    from lnm_jax.cli import _raise_terminated

    signum = getattr(signal, sig)
    handler = signal.default_int_handler if sig == "SIGINT" else _raise_terminated  # Python's, the CLI's

    class Signalled(_Recorded):
        def save(self, kind, number, state, meta, copy_of=None):
            if not self.saved:
                os.kill(os.getpid(), signum)  # during the held epoch's best
                time.sleep(0.05)  # the handler runs here, between bytecodes of the main thread
            super().save(kind, number, state, meta, copy_of)

    ckpts, before = Signalled(), signal.signal(signum, handler)
    try:
        saves = SaveSchedule(ckpts, 5, 10)
        saves.epoch_end(1, {"w": np.ones(1)}, {"epoch": 1}, True)  # held
        assert saves.on_stop(diverged=False) == 1
        assert signal.getsignal(signum) is handler
    finally:
        signal.signal(signum, before)
    assert ckpts.saved == [("best", 1, 1.0), ("latest", 1, 1.0)]
    assert capsys.readouterr().err.count("interrupted again: the stop is writing the best epoch it holds") == 1


class _WithProgress(_Recorded):
    """_Recorded with a mid-epoch checkpoint on disk (``progress``: its metadata)."""

    def __init__(self, progress):
        super().__init__()
        self.progress = progress

    def latest_epoch(self, kind):
        return self.progress["step"] if kind == "progress" else super().latest_epoch(kind)

    def meta(self, kind):
        assert kind == "progress"
        return self.progress, Path("ckpts/progress") / str(self.progress["step"])


def test_what_is_kept_names_a_newer_mid_epoch_checkpoint():
    """A mid-epoch checkpoint (train.checkpoint_every_steps) newer than the latest epoch's, or
    than a held one, is what --resume continues from: the stop's line names it (it said 'no
    checkpoint was written' beside a committed one); an older one is not named."""
    progress = {"epoch": 2, "step": 5, "batches_done": 1}
    ckpts = _WithProgress(progress)
    saves = SaveSchedule(ckpts, 3, 10)
    named = "the last good checkpoint (step 5: epoch 2 after its batch 1, ckpts/progress) is kept"
    assert saves.kept() == named
    assert saves.stopped() == f"training stopped: {named}; train --resume continues from it"
    saves.epoch_end(1, {"w": np.ones(1)}, {"epoch": 1}, True)  # held: older than the progress in epoch 2
    assert saves.kept() == named
    saves.epoch_end(2, {"w": np.full(1, 2.0)}, {"epoch": 2}, True)  # held: epoch 2 ended after it
    assert saves.kept() == "the last good checkpoint (epoch 2, ckpts/latest) is kept"
    saves.on_stop(diverged=False)
    progress["epoch"] = 3  # a later one, in the epoch after the latest
    assert saves.kept() == "the last good checkpoint (step 5: epoch 3 after its batch 1, ckpts/progress) is kept"


def test_training_stopped_between_save_points_writes_the_held_epoch_first():
    """An error between save points writes the held best epoch as best and latest (the run
    resumes from it), and the message names it; a mid-epoch checkpoint writes it as best first;
    several processes write only on a divergence."""
    ckpts = _Recorded()
    saves = SaveSchedule(ckpts, 5, 10)
    assert saves.kept() == "no checkpoint was written (nothing to resume from)"
    assert saves.stopped() == "training stopped: no checkpoint was written (nothing to resume from)"
    saves.epoch_end(1, {"w": np.ones(1)}, {"epoch": 1}, True)
    assert ckpts.saved == [] and "(epoch 1, ckpts/latest)" in saves.kept()
    saves.on_stop(diverged=False)
    assert ckpts.saved == [("best", 1, 1.0), ("latest", 1, 1.0)]
    saves.on_stop(diverged=False)  # nothing held any more
    assert len(ckpts.saved) == 2
    saves.epoch_end(2, {"w": np.full(1, 2.0)}, {"epoch": 2}, True)
    assert saves.write_held(pair=False) == 2 and ckpts.saved[-1] == ("best", 2, 2.0)
    assert saves.write_held() is None
    saves.epoch_end(3, {"w": np.full(1, 3.0)}, {"epoch": 3}, True)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(jax, "process_count", lambda: 2)
        saves.on_stop(diverged=False)
        assert ckpts.saved[-1] == ("best", 2, 2.0)
        saves.on_stop(diverged=True)
        assert ckpts.saved[-2:] == [("best", 3, 3.0), ("latest", 3, 3.0)]


def test_existing_run_is_not_overwritten(triple_run):
    with pytest.raises(RunExistsError, match="--resume"):
        Run.create(triple_run.config, triple_run.workdir)


def test_a_resume_initialises_nothing_and_steps_the_fresh_runs_program(triple_run, copy_run, monkeypatch):
    """A resume restores every array, so it compiles and runs no initialisation; its state is
    placed as a fresh one (uncommitted, on the default device), so its train step is the very
    program the fresh run compiled (a committed state adds sharding annotations to it: another
    program, which XLA compiled a second time)."""
    from lnm_jax.training import loop

    run = copy_run(triple_run)
    config = load_config(run.workdir)
    config.train.epochs = 3
    resumed = Run.create(config, run.workdir, resume=True)
    monkeypatch.setattr(resumed, "fresh_state", lambda: pytest.fail("the resume initialised a model"))
    real, programs = loop.make_train_step, []

    def recording(*args, **kwargs):
        step = real(*args, **kwargs)

        def first(state, inputs):
            if not programs:
                fresh = jax.tree.map(lambda x: jax.device_put(np.asarray(x)), state)  # placed as init places
                programs.append([step.lower(s, inputs).as_text(debug_info=False) for s in (state, fresh)])
            return step(state, inputs)

        return first

    monkeypatch.setattr(loop, "make_train_step", recording)
    train(resumed)
    assert programs and programs[0][0] == programs[0][1]
    assert [r["epoch"] for r in read_history(run.files.history)] == [1, 2, 3]


def test_a_resume_of_a_finished_run_trains_and_writes_nothing(triple_run, copy_run, capsys):
    """train.epochs already reached: nothing is trained and no file changes (run_info.json took
    the resume's command as the run's, earlier; a new TensorBoard file was added)."""
    run = copy_run(triple_run)
    files = lambda: {p: p.read_bytes() for p in run.workdir.rglob("*") if p.is_file()}  # noqa: E731
    before = files()
    best = train(Run.create(load_config(run.workdir), run.workdir, resume=True))
    assert files() == before
    assert best == run.restore("latest")[1]["best"]
    assert "train.epochs=2 already reached; nothing trained, nothing written" in capsys.readouterr().out


def test_a_restored_state_is_placed_as_the_state_it_is_restored_into(triple_run):
    """Shape structs and a fresh state (uncommitted arrays) restore uncommitted on the default
    device, as an initialisation places its state; committed arrays restore committed. A
    pretraining resume restores into its fresh state: committed, its step was another program."""
    abstract = triple_run.abstract_state()
    fresh = jax.tree.map(lambda s: jax.device_put(np.zeros(s.shape, s.dtype)), abstract)
    committed = jax.device_put(fresh, jax.devices()[0])
    ckpts = triple_run.checkpoints()
    for template, want in ((abstract, False), (fresh, False), (committed, True)):
        state, _ = ckpts.restore("latest", template)
        assert {x.committed for x in jax.tree.leaves(state)} == {want}
    ckpts.close()


def test_nan_loss_stops_with_named_error_and_keeps_last_good_checkpoint(triple_run, copy_run, monkeypatch):
    run = copy_run(triple_run)
    good, meta = run.restore("latest")
    real = steps_lib.bce_loss
    monkeypatch.setattr(steps_lib, "bce_loss", lambda *a: real(*a) * np.nan)
    # built anew, so that the patched loss is traced (one step program per configuration in a
    # process: another test's run of this one may have built it)
    monkeypatch.setattr(steps_lib, "_train_step", steps_lib._train_step.__wrapped__)
    config = load_config(run.workdir)
    config.train.epochs = 3
    with pytest.raises(NonFiniteLossError, match="loss is nan"):
        train(Run.create(config, run.workdir, resume=True))
    after, meta_after = Run.open(run.workdir).restore("latest")
    assert meta_after["epoch"] == meta["epoch"] == 2
    for a, b in zip(jax.tree.leaves(good), jax.tree.leaves(after)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        assert np.isfinite(np.asarray(a, np.float64)).all()
    assert len(read_history(run.files.history)) == 2


def test_predict_new_patients_without_labels(triple_run, copy_run, tiny_cohort, tmp_path, capsys):
    run = copy_run(triple_run)
    rows = [r for r in csv.DictReader(tiny_cohort.open())][:5]
    new = new_patients(tiny_cohort, tmp_path / "new_patients.csv", 5)
    out = predict_manifest(run, new, tmp_path / "probs.csv")
    # these are the run's own patients: predict says how many it was fitted or chosen on (trial)
    ids = {r["patient_id"] for r in rows}
    train, val = (len(ids & set(run.split.subset(s))) for s in ("train", "val"))
    assert train + val > 0  # the tiny cohort's first five: some of them are training patients
    said = capsys.readouterr().err
    assert "no prob_lnm_calibrated column: no temperature is fitted for the 'best' checkpoint" in said
    counts = [(n, kind) for n, kind in ((train, "training"), (val, "validation")) if n]  # (a zero count unsaid)
    seen_as = (
        f"{counts[0][0]} of these 5 patients {'is' if counts[0][0] == 1 else 'are'} this run's {counts[0][1]} patients"
        + "".join(f" and {n} its {kind} patients" for n, kind in counts[1:])
    )
    assert f"{seen_as}:" in said, said
    # which: the first three named, in the manifest's order (helper-53's trial of bc14a45: counts only)
    fitted = set(run.split.subset("train")) | set(run.split.subset("val"))
    seen = [r["patient_id"] for r in rows if r["patient_id"] in fitted]
    more = f" and {len(seen) - 3} more" if len(seen) > 3 else ""
    assert "only its test patients and new ones are unseen (" + ", ".join(f"'{i}'" for i in seen[:3]) + more + ")" in (
        said
    ), said
    got = list(csv.DictReader(out.open()))
    assert [g["patient_id"] for g in got] == [r["patient_id"] for r in rows]
    assert all(0.0 <= float(g["prob_lnm"]) <= 1.0 and g["lnm"] == "" for g in got)
    assert "prob_lnm_calibrated" not in got[0]  # no `evaluate` yet: no temperature
    # each row says which of the run's patients it is (helper-104: external validation had scored them as a site's)
    want = {i: "train" for i in run.split.subset("train")} | {i: "val" for i in run.split.subset("val")}
    assert [g["seen_by_run"] for g in got] == [want.get(r["patient_id"], "") for r in rows]
    # an "external" set that is the run's own patients under new ids, their images copied to
    # another folder: counted by their pictures (the ids alone had said nothing)
    external = tmp_path / "external"
    external.mkdir()
    with open(new) as f, open(external / "m.csv", "w", newline="") as g:
        w = csv.DictWriter(g, fieldnames=["patient_id", "bmode", "ceus", "us_lnm"])
        w.writeheader()
        for k, r in enumerate(csv.DictReader(f)):
            copies = {m: shutil.copy(r[m], external / f"{k}_{m}.png") for m in ("bmode", "ceus")}
            w.writerow({"patient_id": f"ext{k}", "us_lnm": r["us_lnm"], **copies})
    predict_manifest(run, external / "m.csv", tmp_path / "external.csv")
    by_pictures = f"{seen_as} ({train + val} of them by their pictures, under other ids)"
    said = capsys.readouterr().err
    assert by_pictures in said, said
    got = list(csv.DictReader((tmp_path / "external.csv").open()))
    assert [g["seen_by_run"] for g in got] == [want.get(r["patient_id"], "") for r in rows]
    subset = {i: "training" if i in run.split.subset("train") else "validation" for i in fitted}
    whose = [(k, r["patient_id"]) for k, r in enumerate(rows) if r["patient_id"] in fitted][:3]
    assert ", ".join(f"'ext{k}' (a picture of {subset[i]} patient '{i}')" for k, i in whose) in said, said
    # and exported again as JPEG: nearly their pictures (lnm_jax.data.cohorts.similar)
    text = (external / "m.csv").read_text()
    for png in external.glob("*.png"):
        Image.open(png).convert("RGB").save(png.with_suffix(".jpg"), quality=90)
        text = text.replace(str(png), str(png.with_suffix(".jpg")))
    (external / "jpeg.csv").write_text(text)
    predict_manifest(run, external / "jpeg.csv", tmp_path / "jpeg.csv")
    assert by_pictures in capsys.readouterr().err
    # another cohort numbered alike: the run's ids, pictures of their own (helper-53: counted as
    # the run's patients)
    rng = np.random.default_rng(3)
    with open(new) as f, open(external / "renumbered.csv", "w", newline="") as g:
        w = csv.DictWriter(g, fieldnames=["patient_id", "bmode", "ceus", "us_lnm"])
        w.writeheader()
        for k, r in enumerate(csv.DictReader(f)):
            own = {}
            for m in ("bmode", "ceus"):
                size = Image.open(r[m]).size
                own[m] = external / f"own{k}_{m}.png"
                Image.fromarray(rng.integers(40, 220, (size[1], size[0], 3), dtype=np.uint8)).save(own[m])
            w.writerow({**r, **own})
    predict_manifest(run, external / "renumbered.csv", tmp_path / "renumbered.csv")
    said = capsys.readouterr().err
    assert (
        "of this run's training patients" not in said
        and (
            f"{train + val} of these 5 patients {'has' if train + val == 1 else 'have'} the id of one of this run's "
            "training or validation patients but "
            "none of their pictures (another cohort numbered alike?): not counted as seen ("
            + ", ".join(f"'{i}'" for i in seen[:3])
        )
        in said
    ), said
    # the command line on the run folder: evaluate, then predict with the fitted temperature
    assert main(["evaluate", "--workdir", str(run.workdir)]) == 0
    card = (run.files.evaluation("best") / "model_card.md").read_text()  # evaluate describes the model too
    assert "| test |" in card and "temperature (fitted on validation" in card and "none fitted" not in card
    assert "Only the test row is out of sample" in card and "the val row is optimistic" in card  # (helper-90)
    # the default config standardises by the shipped statistics, and the card says whose they are
    assert "mean and std the values the package ships for the paper's cohort" in card
    # a model evaluated without lesion masks is evaluated all the same (helper-92: its card said
    # "Not evaluated yet" under its own metrics, the line hung off the Grad-CAM section)
    from lnm_jax.model_card import markdown

    md = json.loads((run.files.evaluation("best") / "metadata.json").read_text())
    assert "Not evaluated yet" not in markdown({**md, "image_evidence": None})
    assert "Not evaluated yet" in markdown({**md, "metrics": {}, "image_evidence": None})
    assert (
        main(["predict", "--workdir", str(run.workdir), "--manifest", str(new), "--out", str(tmp_path / "p2.csv")]) == 0
    )
    got2 = list(csv.DictReader((tmp_path / "p2.csv").open()))
    assert "no prob_lnm_calibrated column" not in capsys.readouterr().err
    assert all(0.0 <= float(g["prob_lnm_calibrated"]) <= 1.0 for g in got2)
    assert [g["prob_lnm"] for g in got2] == [g["prob_lnm"] for g in got]  # same model, same inputs
    # every row names the model it came from, as the card does (helper-92: nothing had linked them)
    state = run.predictor("best").meta["state_sha256"]
    assert len(state) == 64 and {g["model_state_sha256"] for g in got2} == {state}
    assert f"state sha256 `{state}`" in card
    assert card.index("**A synthetic demonstration, not a clinical model:**") < card.index("## Model details")
    assert "Test split by subgroup of the manifest's columns" in card and "| sex | F |" in card  # (helper-92)
    assert f"Bootstrap CIs: {run.config.eval.bootstrap} resamples of the patients within each class, seed" in card
    # what the training images say of their physical scale (stop 81's new-site trial: unsaid)
    n_train = len(run.split.train)
    assert f"- Physical scale of the training images: bmode none of {n_train} with a pixel spacing" in card
    from lnm_jax.model_card import _spacing_text

    said = _spacing_text({"bmode": {"images": 3, "with_spacing": 2, "mm_per_pixel": [0.05, 0.06, 0.07]}})
    assert said.startswith("bmode 2 of 3 with a pixel spacing, 0.05-0.07 mm per pixel (median 0.06) before the resize")
    # a temperature that stopped at its search bound: no calibrated column, said why, and the
    # card does not call the probabilities calibrated (helper-92: T = 20 written all the same)
    from lnm_jax.model_card import metadata

    real = run.temperature
    run.temperature = lambda *a, **k: 20.0
    try:
        predict_manifest(run, new, tmp_path / "p3.csv")
        limits = metadata(run)["limits"]
    finally:
        run.temperature = real
    assert "no prob_lnm_calibrated column: the calibration temperature stopped at its search bound (T = 20)" in (
        capsys.readouterr().err
    )
    assert "prob_lnm_calibrated" not in (tmp_path / "p3.csv").read_text().splitlines()[0]
    assert any("stopped at its search bound" in x for x in limits)
    assert not any(x.startswith("Probabilities are calibrated") for x in limits)


def test_run_folder_records_provenance(triple_run):
    info = json.loads(triple_run.files.run_info.read_text())
    assert {"jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy"} <= set(info["packages"])
    assert info["device_count"] >= 1 and info["backend"] == "cpu" and info["device_kind"]
    assert "xla_flags" in info and isinstance(info["command"], list) and info["cpu"]
    # XLA:CPU's levels (lnm_jax/compile_options.py), unless the caller's XLA_FLAGS set the level
    expected = {name: compiler_options(kind) or {} for name, kind in KINDS.items()}
    assert set(expected) == {"step", "inference", "init"} and info["compile_options"] == expected
    if f"--{LEVEL}=" not in os.environ.get("XLA_FLAGS", ""):
        assert info["compile_options"]["step"][LEVEL] == 1 and info["compile_options"]["init"][LEVEL] == 0


def test_commands_on_a_missing_run_fail_clearly(tmp_path, capsys):
    for cmd in (["evaluate"], ["gradcam"], ["predict", "--manifest", "x.csv", "--out", "y.csv"]):
        assert main(cmd + ["--workdir", str(tmp_path / "nope")]) == 1
        err = capsys.readouterr().err
        assert "not found" in err or "No such file" in err, err


def test_early_stopping_on_validation_auc(tiny_cohort, tmp_path):
    """The flag alone has one AUC once its weight is positive: no gain after that, so
    patience 1 stops the run one epoch after the last improvement."""
    config = tiny_config(tiny_cohort, "us_lnm", epochs=8)
    config.train.early_stop_patience = 1
    run = Run.create(config, tmp_path / "run")
    best = train(run)
    epochs = [r["epoch"] for r in _history(run)]
    assert epochs == list(range(1, best["epoch"] + 2)) and len(epochs) < 8
    # a resume of the stopped run trains nothing and writes nothing (helper-81: it trained past
    # its stop, and patience restarted at a resume); a larger patience trains on, counting on
    from lnm_jax.training.checkpoint import STALE_KEY

    meta, _ = run.checkpoints().meta("latest")
    assert meta[STALE_KEY] == 1 and meta["epoch"] == epochs[-1]
    before = {p: p.stat().st_mtime_ns for p in run.workdir.rglob("*") if p.is_file() and p.name != "train.log"}
    assert train(Run.create(config, run.workdir, resume=True)) == best
    assert {p: p.stat().st_mtime_ns for p in before} == before
    config.train.early_stop_patience = 3
    again = Run.create(config, run.workdir, resume=True)
    train(again)
    more = [r["epoch"] for r in _history(again)]
    # 3 epochs without a gain in all, one of them before the resume (or train.epochs reached)
    assert more == list(range(1, min(8, best["epoch"] + 3) + 1)), more
    # a run trained without early stopping never stopped early: resumed with more epochs and a
    # patience, it trains (helper-82: "the run stopped early; nothing trained")
    config.train.epochs, config.train.early_stop_patience = 3, 0
    plain = Run.create(config, tmp_path / "plain")
    train(plain)
    config.train.epochs, config.train.early_stop_patience = 4, 1
    train(Run.create(config, plain.workdir, resume=True))
    assert [r["epoch"] for r in _history(plain)] == [1, 2, 3, 4]


def test_norm_stats_command_output_overrides_the_config(tiny_cohort, capsys):
    from lnm_jax.command_line import parse_config_command

    assert main(["norm-stats", "--manifest", str(tiny_cohort), "--image-size", "32"]) == 0
    captured = capsys.readouterr()
    stats = json.loads(captured.out)
    assert 0.0 < stats["bmode"]["mean"][0] < 1.0 and stats["ceus"]["std"][2] > 0.0
    overrides = captured.err.split("use with: ")[1].splitlines()[0].split()  # (a note follows on its own line)
    config, _ = parse_config_command(
        "train", ["--workdir", "unused"] + [o.replace("'", "") for o in overrides], base_config
    )
    assert config.data.norm.ceus.mean == pytest.approx(tuple(stats["ceus"]["mean"]))


def test_resume_accepts_the_same_experiment_from_its_config_file(triple_run, tiny_cohort):
    stored = load_config(triple_run.workdir)  # JSON: tuples came back as lists
    check_resumable(stored, tiny_config(tiny_cohort, "triple", epochs=5))
    changed = tiny_config(tiny_cohort, "triple", epochs=5)
    changed.model.width = 16
    with pytest.raises(ConfigMismatchError, match="model.width: 8 -> 16"):
        check_resumable(stored, changed)
    with pytest.raises(ConfigMismatchError, match="model.width"):
        Run.create(changed, triple_run.workdir, resume=True)


def test_zero_batch_has_the_shapes_of_the_evaluation_batches(triple_run):
    """Models are initialised from a zero batch, never from a first batch of a cached dataset
    (an abandoned iterator leaves a partial tf.data cache; a later pass came out short)."""
    sample = zero_batch(triple_run.config)
    batches = list(triple_run.data.eval_batches("test"))
    assert {k: (v.shape, v.dtype) for k, v in sample.items() if k != "patient_id"} == {
        k: (v.shape, v.dtype) for k, v in batches[0].items() if k != "patient_id"
    }
    assert sum(int(b["valid"].sum()) for b in batches) == len(triple_run.split.test)


def test_non_finite_arrays_are_named_alike_on_the_host_and_on_the_devices(monkeypatch):
    """The finite check before every checkpoint: on the CPU it reads the arrays in host memory,
    elsewhere it compiles a check and reads one flag per array; both name the same arrays."""
    from types import SimpleNamespace

    from lnm_jax.training import loop

    state = SimpleNamespace(
        params={"a": {"kernel": jnp.array([1.0, jnp.nan])}, "b": {"bias": jnp.ones(2)}},
        batch_stats={"bn": {"var": jnp.array([jnp.inf, 1.0])}},
    )
    host = loop.non_finite_arrays(state)
    assert len(host) == 2 and any("kernel" in p for p in host) and any("var" in p for p in host), host
    monkeypatch.setattr(loop.jax, "default_backend", lambda: "gpu")
    assert loop.non_finite_arrays(state) == host
    state.params["a"]["kernel"] = jnp.ones(2)
    assert len(loop.non_finite_arrays(state)) == 1


def test_validate_of_a_new_sites_labelled_patients_against_a_trained_run(triple_run, tiny_cohort, tmp_path, capsys):
    """helper-98: six labelled new patients (one negative) checked against a trained run failed
    ``validate`` on "cannot make a stratified train/test split" and were told to weigh
    positives in training; ``--no-labels`` then counted their positives all the same. A trained
    run's new patients are checked for what predict reads, no split drawn; ``--no-labels`` reads
    them as unlabelled."""
    rows = list(csv.DictReader(tiny_cohort.open()))
    chosen = [r for r in rows if r["lnm"] == "1"][:5] + [r for r in rows if r["lnm"] == "0"][:1]
    manifest = tmp_path / "site.csv"
    with manifest.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["patient_id", "bmode", "ceus", "us_lnm", "lnm"])
        w.writeheader()
        for r in chosen:
            w.writerow(
                {k: r[k] for k in ("patient_id", "us_lnm", "lnm")}
                | {k: tiny_cohort.parent / r[k] for k in ("bmode", "ceus")}
            )
    capsys.readouterr()
    assert main(["validate", str(manifest), "--workdir", str(triple_run.workdir)]) == 0, capsys.readouterr().err
    said = capsys.readouterr().out
    assert "OK, 6 patients, 5 positive" in said and "split (" not in said and "pos_weight" not in said, said
    assert main(["validate", str(manifest), "--workdir", str(triple_run.workdir), "--no-labels"]) == 0
    assert "OK, 6 patients, no labels;" in capsys.readouterr().out
