"""Evaluate a run's checkpoint on its splits, and predict new patients."""

from __future__ import annotations

import json
from pathlib import Path

from lnm_jax import experiment
from lnm_jax.data.manifest import read_manifest
from lnm_jax.data.synthetic import bayes_auc, bayes_scores, read_truth
from lnm_jax.evaluation import calibration as C
from lnm_jax.evaluation import metrics as M
from lnm_jax.evaluation.plots import plot_decision_curve, plot_reliability, plot_roc
from lnm_jax.fileio import write_csv
from lnm_jax.models.fusion import parse_modalities
from lnm_jax.settings import SETTINGS
from lnm_jax.training.checkpoint import RunCheckpoints
from lnm_jax.training.loop import build_model, init_state
from lnm_jax.training.steps import make_eval_step, predict


def restore_run(config, workdir: Path, data: experiment.RunData, checkpoint: str):
    """The model and its restored TrainState (structure from a zero batch of the run's shapes)."""
    model = build_model(config)
    state, _, _ = init_state(config, model, data.sample_batch())
    ckpts = RunCheckpoints(workdir, create=False)
    try:
        state, meta = ckpts.restore(checkpoint, state)
    finally:
        ckpts.close()
    return model, state, meta


def inference_variables(model, state, config):
    """The model and variables to predict with: BatchNorm folded into the convs when the
    backbone allows it and ``eval.fold_bn`` is on (the same function, fewer passes)."""
    from lnm_jax.models.backbones import bn_epsilon, can_fold_bn  # noqa: PLC0415
    from lnm_jax.models.folding import fold_batchnorm  # noqa: PLC0415

    if not (config.eval.get("fold_bn", True) and can_fold_bn(model.backbone)):
        return model, state.params, state.batch_stats
    params = fold_batchnorm(state.params, state.batch_stats, bn_epsilon(model.backbone, model.variant))
    return model.clone(fold_bn=True), params, {}


class RunPredictor:
    """A trained run's restored checkpoint, predicting any of its splits; ``transform`` maps
    each batch first (e.g. withholding inputs)."""

    def __init__(self, workdir: Path | str, checkpoint: str = "best"):
        self.workdir = Path(workdir)
        self.data = experiment.open_run(self.workdir)
        self.config = self.data.config
        self.model, self.state, self.meta = restore_run(self.config, self.workdir, self.data, checkpoint)
        model, self._params, self._stats = inference_variables(self.model, self.state, self.config)
        self._step = make_eval_step(model)

    def __call__(self, subset: str, transform=None) -> dict:
        batches = self.data.eval_batches(subset)
        if transform is not None:
            batches = map(transform, batches)
        return predict(self._step, self._params, self._stats, batches)


def evaluate(workdir: Path | str, *, checkpoint: str = "best", subsets=("val", "test"),
             out: Path | str | None = None) -> dict:
    """Metrics of ``checkpoint`` on ``subsets``: AUC with bootstrap CI; sensitivity,
    specificity and accuracy at 0.5 and at the Youden threshold chosen on validation.
    Writes ``metrics.json``, ``roc.png`` and ``predictions.csv`` to ``out``
    (default ``workdir/eval_<checkpoint>``)."""
    workdir = Path(workdir)
    run = RunPredictor(workdir, checkpoint)
    config, meta = run.config, run.meta
    preds = {s: run(s) for s in dict.fromkeys(("val",) + tuple(subsets))}
    val_probs = M.sigmoid(preds["val"]["logit"])
    youden = M.youden_threshold(preds["val"]["lnm"], val_probs) \
        if len(set(preds["val"]["lnm"].tolist())) == 2 else None
    ec = config.eval
    # Temperature scaling fitted on validation, stored beside the checkpoint for `predict`.
    temperature = C.fit_temperature(preds["val"]["lnm"], preds["val"]["logit"])
    result = {"checkpoint": checkpoint, "epoch": meta["epoch"], "config": config.name,
              "modalities": config.modalities, "youden_threshold_from_val": youden,
              "temperature_from_val": temperature, "splits": {}}
    rows, curves, reliability = [], {}, {}
    for s in subsets:
        p = preds[s]
        probs = M.sigmoid(p["logit"])
        cal = C.calibrated(p["logit"], temperature)
        result["splits"][s] = M.summarise(p["lnm"], probs, youden=youden, n_boot=ec.bootstrap,
                                          level=ec.ci_level, seed=ec.seed)
        result["splits"][s]["calibration"] = {
            "ece": C.expected_calibration_error(p["lnm"], probs),
            "brier": C.brier(p["lnm"], probs),
            "ece_temperature_scaled": C.expected_calibration_error(p["lnm"], cal),
            "brier_temperature_scaled": C.brier(p["lnm"], cal)}
        curves[f"{s} (n={len(probs)})"] = (p["lnm"], probs, result["splits"][s]["auc"])
        reliability[s] = (p["lnm"], probs)
        reliability[f"{s}, T={temperature:.2f}"] = (p["lnm"], cal)
        for pid, y, pr, pc in zip(p["patient_id"], p["lnm"], probs, cal):
            rows.append({"patient_id": pid, "split": s, "lnm": int(y), "prob_lnm": f"{pr:.6f}",
                         "prob_lnm_calibrated": f"{pc:.6f}", "pred_at_0.5": int(pr >= 0.5),
                         "pred_at_youden": "" if youden is None else int(pr >= youden)})
    if not config.data.manifest:
        result["synthetic_reference"] = synthetic_reference(config, workdir, preds, subsets)
    out = Path(out) if out else workdir / f"eval_{checkpoint}"
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(result, indent=2))
    write_csv(out / "predictions.csv", rows, list(rows[0]))
    title = f"{config.name} ({checkpoint} checkpoint, epoch {meta['epoch']})"
    plot_roc(curves, out / "roc.png", title=title)
    plot_reliability(reliability, out / "reliability.png", title=title)
    plot_decision_curve({k: v for k, v in reliability.items() if "T=" not in k},
                        out / "decision_curve.png", title=title)
    (workdir / f"calibration_{checkpoint}.json").write_text(json.dumps(
        {"temperature": temperature, "epoch": meta["epoch"], "fitted_on": "val"}, indent=2))
    result["out"] = str(out)
    return result


def synthetic_reference(config, workdir: Path, preds: dict, subsets) -> dict:
    """For the embedded synthetic cohort: the generator's Bayes-optimal AUC of this run's
    inputs, and the AUC the Bayes-optimal score reaches on the very patients of each split
    (the ceiling for this split, sampling noise included)."""
    params = experiment.synth_params(config)
    inputs = parse_modalities(config.modalities)
    truth = read_truth(workdir / "cohort")
    index = {pid: i for i, pid in enumerate(truth["patient_id"])}
    scores = bayes_scores(truth, params, inputs)
    setting = next((k for k, v in SETTINGS.items() if v == inputs), None)
    out = {"inputs": list(inputs),
           "bayes_auc": bayes_auc(params)[setting] if setting else None}
    for s in subsets:
        idx = [index[p] for p in preds[s]["patient_id"]]
        out[f"oracle_auc_{s}"] = M.safe_auc(truth["lnm"][idx], scores[idx])
    return out


def predict_manifest(workdir: Path | str, manifest: Path | str, out_csv: Path | str, *,
                     checkpoint: str = "best") -> Path:
    """P(LNM) for every patient of a manifest (labels optional) from a trained run."""
    workdir = Path(workdir)
    config = experiment.load_config(workdir)
    # fail before any work
    cohort = read_manifest(manifest, require_labels=False, min_clip_frames=config.data.clip_frames)
    data = experiment.RunData(config, cohort, None, workdir / "predict", require_labels=False)
    model, state, _ = restore_run(config, workdir, data, checkpoint)
    model, params, stats = inference_variables(model, state, config)
    p = predict(make_eval_step(model), params, stats, data.eval_batches("all"))
    logit = dict(zip(p["patient_id"], p["logit"]))
    cal_file = workdir / f"calibration_{checkpoint}.json"  # written by `lnm-jax evaluate`
    temperature = json.loads(cal_file.read_text())["temperature"] if cal_file.is_file() else None
    rows = []
    for q in cohort.patients:  # manifest order
        pr = float(M.sigmoid(logit[q.patient_id]))
        row = {"patient_id": q.patient_id, "prob_lnm": f"{pr:.6f}"}
        if temperature is not None:
            row["prob_lnm_calibrated"] = f"{float(C.calibrated(logit[q.patient_id], temperature)):.6f}"
        row.update({"pred_at_0.5": int(pr >= 0.5), "lnm": "" if q.lnm is None else q.lnm})
        rows.append(row)
    out_csv = Path(out_csv)
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    write_csv(out_csv, rows, list(rows[0]))
    return out_csv
