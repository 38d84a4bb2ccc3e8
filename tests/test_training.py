"""Training end to end on tiny synthetic cohorts: learning, checkpoints, resume, determinism,
the NaN guard, evaluation outputs and prediction."""

from __future__ import annotations

import csv
import json

import jax
import numpy as np
import pytest

from lnm_jax.cli import main
from lnm_jax.config import base_config
from lnm_jax.evaluation.run import evaluate, predict_manifest
from lnm_jax.training import steps as steps_lib
from lnm_jax.training.checkpoint import RunCheckpoints
from lnm_jax.training.loop import NonFiniteLossError, RunExistsError, train

TIMING_KEYS = ("train_patients_per_s", "epoch_time_s")


def tiny_config(manifest, setting="dual", epochs=2):
    c = base_config(setting)
    c.data.manifest = str(manifest)
    c.data.image_size = 32
    c.model.backbone = "resnet18"
    c.model.width = 8
    c.train.epochs = epochs
    c.train.batch_size = 8
    c.train.eval_batch_size = 16
    c.eval.bootstrap = 200
    return c


def _history(workdir):
    rows = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in rows]


def _latest_params(workdir, config):
    from lnm_jax.experiment import open_run
    from lnm_jax.training.loop import build_model, init_state
    data = open_run(workdir)
    state, _, _ = init_state(config, build_model(config), data.sample_batch())
    ckpts = RunCheckpoints(workdir, create=False)
    try:
        return ckpts.restore("latest", state)
    finally:
        ckpts.close()


def test_short_run_learns_the_planted_signal(learnable_cohort, tmp_path):
    """Images only (dual): the held-out AUC must be clearly above chance."""
    config = tiny_config(learnable_cohort, "dual", epochs=12)
    config.train.batch_size = 16
    config.data.image_size = 48
    train(config, tmp_path / "run")
    res = evaluate(tmp_path / "run")
    assert res["splits"]["test"]["auc"] > 0.8, res["splits"]["test"]
    out = tmp_path / "run" / "eval_best"
    assert {p.name for p in out.iterdir()} == {"metrics.json", "roc.png", "predictions.csv",
                                               "reliability.png", "decision_curve.png"}
    rows = list(csv.DictReader((out / "predictions.csv").open()))
    assert len(rows) == res["splits"]["val"]["n"] + res["splits"]["test"]["n"]
    assert all(0.0 <= float(r["prob_lnm"]) <= 1.0 for r in rows)
    m = json.loads((out / "metrics.json").read_text())["splits"]["test"]
    assert set(m) >= {"auc", "auc_ci", "at_0.5", "at_youden", "calibration"}
    assert set(m["calibration"]) == {"ece", "brier", "ece_temperature_scaled", "brier_temperature_scaled"}
    assert (tmp_path / "run" / "calibration_best.json").is_file()
    lo, hi = m["auc_ci"]
    assert lo <= m["auc"] <= hi

    # Grad-CAM figures of the same run
    assert main(["gradcam", "--workdir", str(tmp_path / "run"), "--split", "test",
                 "--out", str(tmp_path / "cams")]) == 0
    figures = sorted((tmp_path / "cams" / "patients").glob("*.png"))
    assert len(figures) == res["splits"]["test"]["n"]
    assert (tmp_path / "cams" / "grid_correct.png").stat().st_size > 10_000
    assert (tmp_path / "cams" / "grid_incorrect.png").is_file()
    index = list(csv.DictReader((tmp_path / "cams" / "index.csv").open()))
    assert {r["patient_id"] for r in index} == {r["patient_id"] for r in rows if r["split"] == "test"}


def test_resume_and_same_seed_are_bitwise_reproducible(tiny_cohort, tmp_path):
    config = tiny_config(tiny_cohort, "triple", epochs=2)
    train(config, tmp_path / "full")
    train(config, tmp_path / "again")
    one = tiny_config(tiny_cohort, "triple", epochs=1)
    train(one, tmp_path / "resumed")
    assert main(["train", "--workdir", str(tmp_path / "resumed"), "--resume",
                 f"--config.data.manifest={tiny_cohort}", "--config.train.epochs=2"]) == 0
    h_full = _history(tmp_path / "full")
    assert len(h_full) == 2
    assert _history(tmp_path / "again") == h_full  # same seed: same metrics
    # resume continued from the saved state: the next epoch's metrics and params are identical
    assert _history(tmp_path / "resumed") == h_full
    s_full, meta_full = _latest_params(tmp_path / "full", config)
    s_res, meta_res = _latest_params(tmp_path / "resumed", config)
    assert meta_full == meta_res and int(s_full.step) == int(s_res.step)
    for a, b in zip(jax.tree.leaves(s_full), jax.tree.leaves(s_res)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_existing_run_is_not_overwritten(tiny_cohort, tmp_path):
    config = tiny_config(tiny_cohort, "us_lnm", epochs=1)
    train(config, tmp_path / "run")
    with pytest.raises(RunExistsError, match="--resume"):
        train(config, tmp_path / "run")


def test_nan_loss_stops_with_named_error_and_keeps_last_good_checkpoint(tiny_cohort, tmp_path,
                                                                         monkeypatch):
    config = tiny_config(tiny_cohort, "dual", epochs=1)
    train(config, tmp_path / "run")
    good, meta = _latest_params(tmp_path / "run", config)

    real = steps_lib.bce_loss
    monkeypatch.setattr(steps_lib, "bce_loss", lambda *a: real(*a) * np.nan)
    config.train.epochs = 3
    with pytest.raises(NonFiniteLossError, match="loss is nan"):
        train(config, tmp_path / "run", resume=True)
    after, meta_after = _latest_params(tmp_path / "run", config)
    assert meta_after["epoch"] == meta["epoch"] == 1
    for a, b in zip(jax.tree.leaves(good), jax.tree.leaves(after)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        assert np.isfinite(np.asarray(a, np.float64)).all()
    assert len(_history(tmp_path / "run")) == 1


def test_predict_new_patients_without_labels(tiny_cohort, tmp_path):
    config = tiny_config(tiny_cohort, "triple", epochs=1)
    train(config, tmp_path / "run")
    rows = [r for r in csv.DictReader(tiny_cohort.open())][:5]
    new = tiny_cohort.parent / "new_patients.csv"
    with new.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["patient_id", "bmode", "ceus", "us_lnm"])
        w.writeheader()
        w.writerows({k: r[k] for k in ("patient_id", "bmode", "ceus", "us_lnm")} for r in rows)
    out = predict_manifest(tmp_path / "run", new, tmp_path / "probs.csv")
    got = list(csv.DictReader(out.open()))
    assert [g["patient_id"] for g in got] == [r["patient_id"] for r in rows]
    assert all(0.0 <= float(g["prob_lnm"]) <= 1.0 and g["lnm"] == "" for g in got)
    assert "prob_lnm_calibrated" not in got[0]  # no `evaluate` yet: no temperature
    evaluate(tmp_path / "run")
    got = list(csv.DictReader(predict_manifest(tmp_path / "run", new, tmp_path / "p2.csv").open()))
    assert all(0.0 <= float(g["prob_lnm_calibrated"]) <= 1.0 for g in got)


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
    best = train(config, tmp_path / "run")
    epochs = [r["epoch"] for r in _history(tmp_path / "run")]
    assert epochs == list(range(1, best["epoch"] + 2)) and len(epochs) < 8


def test_norm_stats_command_output_overrides_the_config(tiny_cohort, capsys):
    from lnm_jax.cli import _parse_config_command

    assert main(["norm-stats", "--manifest", str(tiny_cohort), "--image-size", "32"]) == 0
    captured = capsys.readouterr()
    stats = json.loads(captured.out)
    assert 0.0 < stats["bmode"]["mean"][0] < 1.0 and stats["ceus"]["std"][2] > 0.0
    overrides = captured.err.split("use with: ")[1].split()
    config, _ = _parse_config_command("train", ["--workdir", "unused"] + [o.replace("'", "") for o in overrides],
                                      base_config, lambda flags, fv: None)
    assert config.data.norm.ceus.mean == pytest.approx(tuple(stats["ceus"]["mean"]))


def test_resume_accepts_the_same_experiment_from_its_config_file(tiny_cohort, tmp_path):
    from lnm_jax.experiment import load_config
    from lnm_jax.training.loop import check_resumable

    config = tiny_config(tiny_cohort, "triple", epochs=1)
    train(config, tmp_path / "run")
    stored = load_config(tmp_path / "run")  # JSON: tuples came back as lists
    check_resumable(stored, tiny_config(tiny_cohort, "triple", epochs=5))
    changed = tiny_config(tiny_cohort, "triple", epochs=5)
    changed.model.width = 16
    with pytest.raises(RunExistsError, match="model.width: 8 -> 16"):
        check_resumable(stored, changed)


def test_sample_batch_has_the_shapes_of_the_evaluation_batches(tiny_cohort, tmp_path):
    """Models are initialised from a zero batch, never from a first batch of a cached dataset
    (an abandoned iterator leaves a partial tf.data cache; a later pass came out short)."""
    from lnm_jax.data.manifest import read_manifest
    from lnm_jax.experiment import RunData, run_split

    config = tiny_config(tiny_cohort)
    cohort = read_manifest(tiny_cohort)
    data = RunData(config, cohort, run_split(config, cohort, tmp_path), tmp_path)
    sample = data.sample_batch()
    batches = list(data.eval_batches("test"))
    assert {k: (v.shape, v.dtype) for k, v in sample.items() if k != "patient_id"} == \
        {k: (v.shape, v.dtype) for k, v in batches[0].items() if k != "patient_id"}
    assert sum(int(b["valid"].sum()) for b in batches) == len(data.ids("test"))
