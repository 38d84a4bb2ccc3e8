"""Evaluate a run's checkpoint on its splits (with calibration), and predict new patients."""

from __future__ import annotations

import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

from lnm_jax import names, provenance
from lnm_jax import run_files as F
from lnm_jax.data.cohorts.manifest import manifest_checks, read_manifest
from lnm_jax.data.synth.synthetic import bayes_auc, bayes_scores, generator_params, read_truth, temporal_reference
from lnm_jax.evaluation import calibration as C
from lnm_jax.evaluation import intensity
from lnm_jax.evaluation import metrics as M
from lnm_jax.evaluation.plots import plot_convergence, plot_decision_curve, plot_reliability, plot_roc
from lnm_jax.evaluation.seen import seen_patients
from lnm_jax.evaluation.subgroups import subgroup_rows
from lnm_jax.evaluation.summary import (
    PREVALENCE_BOUNDS,
    calls_text,
    format_summary,
    shown_auc_ci,
    summarise_predictions,
    threshold_text,
)
from lnm_jax.fileio import DamagedFileError, atomic_directory, read_json, sealed, write_csv, write_json
from lnm_jax.metric_writer import read_history
from lnm_jax.model_card import metadata, write_card
from lnm_jax.output_guard import guard_output
from lnm_jax.preflight import check_inputs_present, flag_warnings, zero_fills
from lnm_jax.run import Run, trained_checkpoint
from lnm_jax.run_lock import check_held
from lnm_jax.serving import (
    AT_BOUND_NOTE,
    calibrated_probabilities,
    guard_predictions,
    intensity_check,
    missing_inputs,
    read_site_update,
    write_predictions,
)
from lnm_jax.task import Task
from lnm_jax.training.checkpoint import CONFIG_KEY, DIGEST_KEY, stopped_early


def evaluate(run: Run, *, checkpoint: str = "best", subsets=("val", "test"), out: Path | str | None = None) -> dict:
    """Metrics of ``checkpoint`` on ``subsets`` (the summary schema of
    :mod:`lnm_jax.evaluation.summary`, bootstrap CI included), with the threshold chosen by
    Youden's index on validation and the calibration temperature fitted on validation. Writes
    ``metrics.json``, ``predictions.csv`` and the ROC, reliability and decision-curve plots to
    ``out`` (default ``eval_<checkpoint>``), and the temperature for ``predict``."""
    config = run.config
    run.check_records()  # a damaged record fails here, not after half the outputs are written
    # --out: never a folder of the user's (a cohort's, one holding other files), only a new one,
    # one an earlier evaluate wrote, or the run's own evaluation folder
    own = run.files.evaluation(checkpoint).resolve()
    out = guard_output(
        out or own,
        inputs=[*run.cohort.files()],
        ours=lambda folder: folder == own or is_evaluation(folder),
        kind="folder",
        can_overwrite=False,
        run=run.workdir,  # inside a run folder: only this run's eval_*/gradcam_* folders
    )
    meta = run.predictor(checkpoint).meta
    preds = {s: run.predict(s, checkpoint) for s in dict.fromkeys(("val",) + tuple(subsets))}
    val = preds["val"]
    with warnings.catch_warnings():  # (J <= 0 everywhere: said below as a WARNING line, not numpy's too)
        warnings.simplefilter("ignore", RuntimeWarning)
        youden = (
            M.youden_threshold(val[names.LABEL], M.sigmoid(val["logit"]))
            if len(set(val[names.LABEL].tolist())) == 2
            else None
        )
    no_youden = youden is not None and not np.isfinite(youden)  # J <= 0 at every cut-off
    if no_youden:
        youden = None
    temperature = C.fit_temperature(val[names.LABEL], val["logit"])
    ec = config.eval
    result = {
        "checkpoint": checkpoint,
        "epoch": meta["epoch"],
        "config": config.name,
        "modalities": config.modalities,
        "youden_threshold_from_val": youden,
        # how far that cut-off moves with the validation patients (helper-104): a bootstrap CI
        "youden_threshold_ci": None
        if youden is None
        else list(
            M.youden_threshold_ci(
                val[names.LABEL], M.sigmoid(val["logit"]), n_boot=ec.bootstrap, level=ec.ci_level, seed=ec.seed
            )
        ),
        "temperature_from_val": temperature,
        "temperature_at_bound": C.at_bound(temperature),
        DIGEST_KEY: meta.get(DIGEST_KEY),  # the checkpoint state these metrics are of
        # the evaluating process (versions, devices, XLA flags, and the options of the one kind
        # of program it compiles, the inference programs): it may differ from the training
        # process's run_info.json, and its programs compute these numbers
        "evaluated_by": provenance.run_info(kinds=("inference",)),
        "splits": {},
    }
    # a temperature at its search bound is no calibration: nothing is reported or written after it
    # (helper-99: predictions.csv had kept its 0/1 column and the console its "improved" ECE)
    usable = None if result["temperature_at_bound"] else temperature
    rows, curves, reliability = [], {}, {}
    for s in subsets:
        p = preds[s]
        probs = M.sigmoid(p["logit"])
        cal = C.calibrated(p["logit"], usable) if usable is not None else None
        summary = summarise_predictions(
            p[names.LABEL],
            p["logit"],
            threshold=youden,
            temperature=usable,
            ci_level=ec.ci_level,
            n_boot=ec.bootstrap,
            seed=ec.seed,
        )
        result["splits"][s] = summary
        # (n in the legend; the validation curve's checkpoint and threshold were chosen on it)
        shown = f"{s}, checkpoint chosen on it" if s == "val" else s
        method, interval = shown_auc_ci(summary)  # the console line's interval
        curves[shown] = (p[names.LABEL], probs, summary["auc"], interval)
        reliability[s] = (p[names.LABEL], probs)
        if cal is not None:
            fitted = " (T fitted on it)" if s == "val" else ""
            reliability[f"{s}, T={temperature:.2f}{fitted}"] = (p[names.LABEL], cal)
        for k, (pid, y, pr) in enumerate(zip(p[names.PATIENT_ID], p[names.LABEL], probs)):
            row = {names.PATIENT_ID: pid, "split": s, names.LABEL: int(y), "prob_lnm": f"{pr:.6f}"}
            if cal is not None:
                row["prob_lnm_calibrated"] = f"{cal[k]:.6f}"
            row["pred_at_0.5"] = int(pr >= 0.5)
            row["pred_at_youden"] = "" if youden is None else int(pr >= youden)
            rows.append(row)
    test = preds.get("test")
    if test is not None and len(test[names.LABEL]):  # (helper-92: the card had no subgroup)
        result["subgroups"] = subgroup_rows(run.cohort, test[names.PATIENT_ID], test[names.LABEL], test["logit"])
    result["single_inputs"] = single_input_check(run, preds)
    result["warnings"] = imbalance_warnings(result, [p.lnm for p in run.cohort.patients if p.lnm is not None], config)
    result["warnings"] += small_split_warnings(result)
    # the cohort's flag, as train warned of it (helper-123: evaluate of a run whose flag copied
    # the label printed "us_lnm 1.000/1.000" alone), recorded so that the model card says it too
    result["warnings"] += flag_warnings(run.cohort, names.US_LNM in names.parse_modalities(config.modalities))
    if no_youden:
        result["warnings"].append(NO_YOUDEN_WARNING)
    if unfinished := unfinished_warning(run):
        result["warnings"].append(unfinished)
    if result["temperature_at_bound"]:  # recorded with the metrics, so the model card says it too
        lo, hi = C.TEMPERATURE_BOUNDS
        cause = C.bound_cause(val[names.LABEL], val["logit"], temperature)
        result["warnings"].append(f"{BOUND_WARNING.format(cause=cause)} (T = {temperature:.2f}, bounds {lo}-{hi})")
    try:
        if (reference := bayes_reference(run, preds, subsets)) is not None:
            result["synthetic_reference"] = reference
    except DamagedFileError as e:  # a reference only: the evaluation stands without it
        result["warnings"].append(f"no Bayes-optimal reference: {e}")
    # the model card's fields are read before anything is written: a config field it needs
    # missing (a hand-edited config.json) stops here, not after metrics.json or the lesion
    # evidence's Grad-CAM files were rewritten; the card is built again with the CAM scores
    metadata(run, checkpoint, evaluation=result, temperature=temperature)
    # the folder is written whole and then replaces the earlier one: a failed or interrupted
    # evaluate (a full disk, Ctrl-C) had left metrics of the new state beside the card, plots
    # and lesion maps of the earlier one; now it leaves the earlier folder as it was, and a
    # finished one keeps nothing of it (availability tables included: run availability again)
    check_held(run.files.root)  # (helper-110: a run folder removed meanwhile had been made again, in part)
    with atomic_directory(out, replace=True) as fresh:
        result["cam_scores"] = lesion_evidence(run, checkpoint, out=fresh, shown=out)
        card = metadata(run, checkpoint, evaluation=result, temperature=temperature)
        write_json(fresh / F.METRICS, sealed(result))  # an edited metric is refused where it is read (the card)
        write_csv(fresh / F.PREDICTIONS_CSV, rows, list(rows[0]))
        title = f"{config.name} ({checkpoint} checkpoint, epoch {meta['epoch']})"
        plot_roc(curves, fresh / F.ROC, title=title, ci_name=f"{ec.ci_level:.0%} {method} CI")
        plot_reliability(reliability, fresh / F.RELIABILITY, title=title, label=Task.from_config(config).label)
        curves_uncalibrated = {k: v for k, v in reliability.items() if "T=" not in k}
        plot_decision_curve(curves_uncalibrated, fresh / F.DECISION_CURVE, title=title)
        if history := read_history(run.files.history):  # (the paper's Figure 6 for any run, not only reproduce's)
            plot_convergence(history, fresh / F.CONVERGENCE, title=f"{config.name}: training history")
        write_card(card, fresh)
    check_held(run.files.root)
    write_json(
        run.files.calibration(checkpoint),
        sealed(  # an edited temperature is refused where it is read (Run.temperature)
            {
                "temperature": temperature,
                "epoch": meta["epoch"],
                # the checkpoint it was fitted for: predict and export refuse it for another
                "state_sha256": meta.get(DIGEST_KEY),
                "fitted_on": "val",
                "at_search_bound": C.at_bound(temperature),
                "search_bounds": list(C.TEMPERATURE_BOUNDS),
            }
        ),
    )
    result["out"] = str(out)
    return result


def is_evaluation(folder: Path) -> bool:
    """Whether ``folder`` holds what :func:`evaluate` writes (its ``metrics.json``)."""
    try:
        return {"checkpoint", "splits"} <= set(read_json(folder / F.METRICS))
    except (OSError, ValueError):
        return False


def single_input_scores(run: Run, pred: dict) -> dict[str, np.ndarray]:
    """Each input's own score for the rows of ``pred`` that hold it (NaN elsewhere): its head's
    logit (``model.input_heads`` / late fusion), and for the flag its value itself."""
    patients = [run.cohort.by_id()[pid] for pid in pred[names.PATIENT_ID]]
    out = {}
    for m in names.parse_modalities(run.config.modalities):
        if m == names.US_LNM:
            out[m] = np.array([np.nan if p.us_lnm is None else float(p.us_lnm) for p in patients])
        elif f"{names.INPUT_LOGIT}{m}" in pred:
            held = np.array([p.has(m) for p in patients], bool)
            out[m] = np.where(held, np.asarray(pred[f"{names.INPUT_LOGIT}{m}"], np.float64), np.nan)
    return out


def single_input_check(run: Run, preds: dict) -> dict:
    """The guard of a fused model: its validation AUC against each single input's (its own
    head, or the flag's value), on the validation patients who hold that input. ``fused_below
    _best_single`` is true when fusion loses to one of its own inputs; then the fused model
    should not be used as is (the run says so)."""
    fused = {}
    per_input: dict[str, dict] = {}
    for split, pred in preds.items():
        y = pred[names.LABEL]
        fused[split] = M.safe_auc(y, pred["logit"])
        for m, score in single_input_scores(run, pred).items():
            keep = ~np.isnan(score)
            per_input.setdefault(m, {})[split] = M.safe_auc(y[keep], score[keep]) if keep.any() else float("nan")
    val = {m: v.get("val", float("nan")) for m, v in per_input.items()}
    scored = {m: a for m, a in val.items() if np.isfinite(a)}
    best = max(scored, key=scored.get) if scored else None
    below = bool(
        best is not None and len(names.parse_modalities(run.config.modalities)) > 1 and fused["val"] < scored[best]
    )
    return {
        "fused_auc": fused,
        "input_auc": per_input,
        "best_single_input_on_val": best,
        "fused_below_best_single": below,
    }


def bayes_reference(run: Run, preds: dict, subsets) -> dict | None:
    """For a run trained on a synthetic cohort (the embedded one, or any folder ``lnm-jax synth``
    wrote, wherever the run's manifest now points: its ``generator.json`` and ``truth.csv``
    beside the manifest): the generator's Bayes-optimal AUC of this run's inputs, and the AUC
    the Bayes-optimal score reaches on the very patients of each split (the ceiling for this
    split, sampling noise included). From one CEUS frame where the run reads stills of a clip
    cohort (``data.clip_frames`` 1), as the protocol's reference is. None for any other cohort.
    :class:`DamagedFileError` naming the file where the record is damaged, where its
    ``truth.csv`` lacks a patient of the run (not the cohort the generator drew), or where the
    manifest's label or flag of an evaluated patient is not the one the generator drew."""
    folder = Path(run.config.data.manifest).parent if run.config.data.manifest else run.files.cohort
    params = generator_params(folder)
    if params is None:
        return None
    truth = read_truth(folder)
    index = {pid: i for i, pid in enumerate(truth[names.PATIENT_ID])}
    if lacking := sorted({p for s in subsets for p in preds[s][names.PATIENT_ID] if p not in index}):
        raise DamagedFileError(
            f"{folder / F.TRUTH} lacks {len(lacking)} of the evaluated patients (first: {lacking[0]}): "
            "not the record of this cohort"
        )
    patients = run.cohort.by_id()
    for key in (names.LABEL, names.US_LNM):  # (helper-120: labels edited after synth: a reference not theirs)
        differ = [  # as the manifest holds them (helper-123: the flag had not been compared, being no prediction)
            p
            for s in subsets
            for p in preds[s][names.PATIENT_ID]
            if (v := getattr(patients[p], key)) is not None and int(v) != truth[key][index[p]]  # (a missing flag)
        ]
        if differ:
            raise DamagedFileError(
                f"the manifest's {key} differs from {folder / F.TRUTH}'s for {len(differ)} evaluated patient(s) "
                f"(first: {differ[0]}): the cohort was edited after lnm-jax synth wrote it, and the generator's "
                "reference is not of these patients"
            )
    inputs = names.parse_modalities(run.config.modalities)
    temporal = temporal_reference(params, run.config.data.clip_frames)
    scores = bayes_scores(truth, params, inputs, temporal=temporal)
    setting = names.setting_name(inputs)
    out = {"inputs": list(inputs), "bayes_auc": bayes_auc(params, temporal=temporal)[setting] if setting else None}
    for s in subsets:
        idx = [index[p] for p in preds[s][names.PATIENT_ID]]
        out[f"oracle_auc_{s}"] = M.safe_auc(truth[names.LABEL][idx], scores[idx])
    return out


def predict_manifest(
    run: Run,
    manifest: Path | str,
    out_csv: Path | str,
    *,
    checkpoint: str = "best",
    zero_fill_missing: bool = False,
    overwrite: bool = False,
    site_update: Path | str | None = None,
) -> Path:
    """P(LNM) for every patient of a manifest (labels optional), in manifest order; with the
    temperature ``evaluate`` fitted, a calibrated column too; with ``site_update`` (external
    validation's record of a site, :func:`lnm_jax.serving.read_site_update`), the site's updated
    probability. A patient who lacks an input the
    model takes is refused unless the model was trained for missing inputs or
    ``zero_fill_missing``. The run folder is only read: the new patients' records are built in
    a temporary folder."""
    config = run.config
    inputs = names.parse_modalities(config.modalities)
    cohort = read_manifest(manifest, require_labels=False, inputs=inputs, **manifest_checks(config.data))
    guard_predictions(out_csv, cohort, run.workdir, overwrite)
    if not zero_fill_missing:
        check_inputs_present(config, cohort, opt_in="--zero-fill-missing")
    lacking = missing_inputs(
        cohort, inputs, learned=bool(config.model.missing_inputs), trained_on_zeros=zero_fills(config)
    )
    predictor = run.predictor(checkpoint)  # a missing checkpoint fails before any data is read
    state = predictor.meta.get(names.STATE_DIGEST)
    update = None if site_update is None else read_site_update(site_update, state)
    temperature = run.temperature(checkpoint)  # and so does an edited calibration record
    with tempfile.TemporaryDirectory(prefix="lnm_predict_") as records:
        data = run.data_for(cohort, Path(records))
        batches, features = intensity.tap(data.eval_batches("all"), data.norm, names.IMAGE_INPUTS)
        p = predictor(batches)
    logits = dict(zip(p[names.PATIENT_ID], p["logit"]))
    flagged = intensity_check(run.intensity_reference(), features, len(cohort), str(run.files.intensity_reference))
    calibration = run.files.calibration(checkpoint)
    if temperature is not None and C.at_bound(temperature):  # (the record's at_search_bound: the same test)
        print(f"note: {AT_BOUND_NOTE.format(t=temperature)}", file=sys.stderr)
        temperature = None
    elif not calibration.is_file():  # a stale one: run.temperature said so
        print(
            f"note: no prob_lnm_calibrated column: no temperature is fitted for the '{checkpoint}' checkpoint "
            f"(to fit one: {run.evaluate_command(checkpoint)})",
            file=sys.stderr,
        )
    seen, said = seen_patients(run, cohort)
    if update is not None:
        print(f"note: {update.note()}", file=sys.stderr)
    if said:
        print(f"warning: {said}", file=sys.stderr)
    calibrated = calibrated_probabilities(logits, temperature)
    return write_predictions(cohort, logits, calibrated, out_csv, flagged, lacking, state, seen, update)


NO_YOUDEN_WARNING = (
    "no Youden threshold: on validation no cut-off has sensitivity + specificity - 1 > 0 (the scores do not "
    "rank the classes), so none is chosen (pred_at_youden is empty)"
)


BOUND_WARNING = (
    "the calibration temperature stopped at its search bound: {cause}; no calibrated probability is reported or "
    "written for this checkpoint"
)


LESION_MAPS = F.gradcam_name("test")  # the evaluation folder's Grad-CAM maps and lesion scores of the test split


def lesion_evidence(run: Run, checkpoint: str, out: Path, shown: Path | None = None) -> dict | None:
    """Where the test patients have lesion masks: Grad-CAM (the default method and layer) of
    the test split scored against them (:mod:`lnm_jax.explain.scores`; maps and scores in
    ``out/gradcam_test``), the summary, naming the maps' folder under ``shown`` (where ``out``
    will be; default ``out``); None without masks, image inputs, or with CEUS clips."""
    config = run.config
    inputs = names.parse_modalities(config.modalities)
    branches = [b for b in names.IMAGE_INPUTS if b in inputs]
    patients = run.cohort.by_id()
    test = [patients[i] for i in run.split.subset("test")]
    if not branches or (config.data.clip_frames > 1 and names.CEUS in inputs):
        return None
    if not any(p.mask(b) is not None for p in test for b in branches):
        return None
    from lnm_jax.explain.heatmaps import gradcam  # noqa: PLC0415  (only with masks)

    res = gradcam(run, split="test", checkpoint=checkpoint, out=out / LESION_MAPS, figures=False)
    return {
        "method": "gradcam",
        "layer": res["layer"],
        "summary": res["scores"],
        "out": str((shown or out) / LESION_MAPS),
    }


def unfinished_warning(run: Run) -> str | None:
    """A warning where the run's training stopped before its ``train.epochs`` (killed, or
    stopped by a failure) and not by early stopping: its best checkpoint is the best so far,
    which a resume may replace (helper-81: such a run was evaluated and carded unsaid). The
    epochs and patience are the newest checkpoint's record; None for a finished run, one whose
    checkpoints record neither, and one with early stopping whose checkpoint does not record its
    count (saved before it was kept: it may have stopped early; helper-82)."""
    newest = trained_checkpoint(run.files)
    if newest is None:
        return None
    meta = newest[0]
    planned, epoch = (meta.get(CONFIG_KEY) or {}).get("train", {}).get("epochs"), meta.get("epoch")
    if planned is None or epoch is None or epoch >= planned:
        return None
    if stopped_early(meta) is not False:  # stopped early, or cannot tell
        return None
    if newest[1].parent.name != "latest":  # (helper-113: after a failed save the card had pointed to --resume)
        return (
            f"training stopped at epoch {epoch} of {planned} (interrupted, not by early stopping) and the run holds no "
            "'latest' checkpoint to resume from (its save failed?): this evaluates the best epoch so far; finishing "
            "the training needs checkpoints/latest restored from a copy, or a new run"
        )
    return (
        f"training stopped at epoch {epoch} of {planned} (interrupted, not by early stopping): this evaluates the best "
        f"epoch so far, which finishing it (lnm-jax train --workdir {run.workdir} --resume) may replace"
    )


def imbalance_warnings(result: dict, labels, config) -> list[str]:
    """One line per finding that the default 0.5 threshold misleads on this cohort: a split
    where sensitivity or specificity at 0.5 is 0 (the model calls every patient one class),
    and a cohort prevalence outside :data:`PREVALENCE_BOUNDS`; each names the Youden threshold
    chosen on validation (``pred_at_youden`` in predictions.csv) and ``train.pos_weight``."""
    youden = result.get("youden_threshold_from_val")
    remedy = (
        f"use the threshold chosen on validation ({threshold_text(youden)}, Youden's index, on prob_lnm, not the "
        "calibrated one: pred_at_youden in evaluate's predictions.csv; predict's rows as prob_lnm >= it)"
        if youden is not None
        else "choose a threshold on validation"
    )
    if config.train.get("pos_weight", 1.0) == 1.0:
        remedy += " or retrain with --config.train.pos_weight=balanced"
    out = []
    prevalence = float(np.mean(labels)) if len(labels) else float("nan")
    lo, hi = PREVALENCE_BOUNDS
    if not lo <= prevalence <= hi:
        out.append(f"the cohort's prevalence is {prevalence:.3f} (outside {lo}-{hi}): 0.5 is a poor cut; {remedy}")
    for split, m in result["splits"].items():
        at = m["at_0.5"]
        if calls := calls_text(at["sensitivity"], at["specificity"]):
            rates = f"sensitivity {at['sensitivity']:.3f}, specificity {at['specificity']:.3f}"
            out.append(f"{split}: at 0.5 {calls} ({rates}); {remedy}")
    return out


# fewer patients of either class than this in a split: its AUC is warned of as resting on few pairs
MIN_PER_CLASS = 10


def small_split_warnings(result: dict) -> list[str]:
    """One line per split with fewer than :data:`MIN_PER_CLASS` patients of either class: its AUC
    is the share of its positive-negative pairs ranked right, and on a few pairs neither the AUC
    nor its CI means much (helper-57: "AUC 1.000 (1.000-1.000)" on 4 test patients, unsaid; a
    perfect separation has a DeLong variance of 0 and every bootstrap resample agrees)."""
    out = []
    for split, m in result["splits"].items():
        pos, neg = int(m["n_positive"]), int(m["n"]) - int(m["n_positive"])
        if min(pos, neg) < MIN_PER_CLASS:
            fitted = (  # (helper-99: a temperature and a threshold fitted on 5 patients, unsaid)
                "; the Youden threshold and the calibration temperature were fitted on these patients alone"
                if split == "val"
                else ""
            )
            cis = (
                "its AUC's CIs cannot be estimated with a class of one patient (given as 0-1)"
                if min(pos, neg) == 1
                else "its CIs understate what so few patients leave open (at perfect separation they have zero width)"
            )
            out.append(
                f"{split}: {pos} positive and {neg} negative patients: its AUC rests on {pos * neg} pair(s), and "
                + cis
                + fitted
            )
    return out


def evaluation_lines(result: dict) -> str:
    """What ``evaluate`` prints: each split's summary, the lesion evidence, warnings, the single
    inputs' check, on a synthetic cohort the test AUC beside the Bayes-optimal AUC
    (:func:`bayes_line`), and where the outputs are."""
    lines = [format_summary(s, m, threshold_rule="youden") for s, m in result["splits"].items()]
    if cams := result.get("cam_scores"):
        from lnm_jax.explain.scores import summary_lines  # noqa: PLC0415

        lines += ["lesion evidence (test split, masks):"]
        lines += [f"  {x}" for x in summary_lines(cams["summary"], cams["method"], cams["layer"])]
    lines += [f"WARNING: {w}" for w in result.get("warnings", [])]
    if guard := result.get("single_inputs"):
        lines.append(single_input_line(guard))
    ref = result.get("synthetic_reference")
    if ref and ref["bayes_auc"] is not None and "oracle_auc_test" in ref:
        lines.append(bayes_line(result["splits"]["test"]["auc"], ref))
    return "\n".join(lines + [f"metrics, ROC and predictions in {result['out']}"])


def bayes_line(auc: float, ref: dict) -> str:
    """The test AUC beside the Bayes-optimal AUC of the run's inputs, which no model beats but
    by chance (a finite test set): the Bayes-optimal score's AUC on the same test patients
    (``ref['oracle_auc_test']``, from :func:`bayes_reference`) and
    over the generator's population (``ref['bayes_auc']``). The gap is that of the printed,
    rounded values, so that the line adds up as read."""
    auc, best = round(auc, 3), round(ref["oracle_auc_test"], 3)
    side = "below" if auc <= best else "above"
    return (
        f"test AUC {auc:.3f}: {abs(best - auc):.3f} {side} the Bayes-optimal AUC of these inputs ({best:.3f} on "
        f"these test patients, {ref['bayes_auc']:.3f} over the generator's population), which no model "
        "beats but by chance"
    )


def single_input_line(guard: dict) -> str:
    """One line: each input's own AUC beside the fused model's, and a warning when fusion
    loses to its best single input on validation."""
    splits = list(guard["fused_auc"])
    parts = [
        f"{m} " + "/".join(f"{a.get(s, float('nan')):.3f}" for s in splits)
        if any(np.isfinite(a.get(s, float("nan"))) for s in splits)
        else f"{m} not scored (no AUC: one value or none among these patients)"  # (had been nan/nan, helper-120)
        for m, a in guard["input_auc"].items()
    ]
    text = f"single inputs ({'/'.join(splits)} AUC): " + (", ".join(parts) or "none scored")
    text += "; fused " + "/".join(f"{guard['fused_auc'][s]:.3f}" for s in splits)
    if guard["fused_below_best_single"]:
        best = guard["best_single_input_on_val"]
        text += (
            f"\nWARNING: the fused model's validation AUC is below its single input '{best}' "
            f"({guard['fused_auc']['val']:.3f} < {guard['input_auc'][best]['val']:.3f}): fusion loses to one of its "
            "own inputs; see docs/small_cohorts.md"
        )
    return text
