"""``lnm-jax gradcam``: CAMs of a run's patients (a split of its cohort, or any manifest of new
patients), one figure each, grids of correct and incorrect predictions, every map as an array
(``cams.npz``) and, where the manifest has lesion masks, the maps scored against them with a
random-map baseline (``cam_scores.json``, :mod:`lnm_jax.explain.scores`), from the run's
restored (BatchNorm-folded) checkpoint."""

from __future__ import annotations

import csv
import itertools
import sys
import tempfile
from pathlib import Path

import numpy as np

from lnm_jax import names
from lnm_jax import run_files as F
from lnm_jax.data.cohorts.manifest import manifest_checks, read_manifest
from lnm_jax.data.pixels.masks import frame_mask
from lnm_jax.data.pixels.sources import Framing, Source, clip_frame, picture_region, resolve
from lnm_jax.evaluation.metrics import sigmoid
from lnm_jax.evaluation.seen import seen_patients_line
from lnm_jax.explain import scores as S
from lnm_jax.explain.figures import grid_figure, patient_figure
from lnm_jax.explain.gradcam import AUTO_LAYER, choose_layer, layer_sizes, make_cam_fn
from lnm_jax.fileio import atomic_directory, atomic_file, path_inside, read_json, write_csv, write_json
from lnm_jax.output_guard import guard_output
from lnm_jax.preflight import check_inputs_present
from lnm_jax.run import Run
from lnm_jax.run_lock import check_held
from lnm_jax.task import Task
from lnm_jax.training.steps import step_inputs


def denormalise(x: np.ndarray, norm: dict) -> np.ndarray:
    return np.clip(x * np.asarray(norm["std"]) + np.asarray(norm["mean"]), 0.0, 1.0)


def _pick(entries: list[dict], n: int) -> list[dict]:
    """Up to ``n`` patients, alternating between the two true classes."""
    by_class = [[e for e in entries if e["label"] == c] for c in (1, 0)]
    out = []
    while len(out) < n and any(by_class):
        for group in by_class:
            if group and len(out) < n:
                out.append(group.pop(0))
    return out


def _lesion(patient, branch: str, source: Source, framing: Framing, size: int) -> np.ndarray:
    """The patient's mask for ``branch`` framed as the model saw its image (``source``: that
    image resolved, once for the mask, the picture's region and a clip's frame)."""
    return frame_mask(patient.mask(branch), source, size, framing)


def gradcam(
    run: Run,
    *,
    split: str = "test",
    manifest: Path | str | None = None,
    out: Path | str | None = None,
    checkpoint: str = "best",
    method: str = "gradcam",
    layer: str = AUTO_LAYER,
    target: str = "lnm",
    threshold: float = 0.5,
    grid_size: int = 6,
    seed: int = 0,
    figures: bool = True,
    pointing_tolerance: float = S.POINTING_TOLERANCE,
) -> dict:
    """Writes ``patients/<id>.png``, the two grids, ``index.csv``, ``cams.npz`` and
    ``checkpoint.json`` (the run, checkpoint, epoch and state digest used) to ``out``
    (default ``gradcam_<split>``; an existing folder only if an earlier ``gradcam`` wrote it)
    for the run's ``split``, or for every patient of ``manifest`` (new patients, labels
    optional; ``out`` required: the run folder is only read); with lesion masks, also
    ``cam_scores.json`` (``pointing_tolerance``: the pointing game's, a fraction of the image
    side, :mod:`lnm_jax.explain.scores`). ``figures=False``: the arrays, index and scores only (``evaluate``'s
    use). Returns the counts, the layer used (``layer='auto'``: the deepest map
    of at least 7x7; a requested layer under 4x4 falls back to the deepest one below it of at
    least 4x4), the score summary and notes
    to print (the fallback, constant CAMs, the scores)."""
    config = run.config
    if manifest is not None and out is None:
        raise ValueError("gradcam --manifest needs --out (the run folder is only read)")
    inputs = names.parse_modalities(config.modalities)
    if config.data.clip_frames > 1 and names.CEUS in inputs:
        raise ValueError(
            f"run {run.workdir} reads CEUS clips (data.clip_frames={config.data.clip_frames}); "
            f"Grad-CAM here explains still images only"
        )
    branches = [b for b in names.IMAGE_INPUTS if b in inputs]
    if not branches:
        raise ValueError(f"run {run.workdir} uses no image input ({config.modalities}): nothing to explain")
    cohort = run.cohort
    if manifest is not None:
        cohort = read_manifest(manifest, require_labels=False, inputs=inputs, **manifest_checks(config.data))
        # as predict: a patient lacking an input the model was not trained to miss is refused
        check_inputs_present(config, cohort, opt_in="a run trained with --config.data.zero_fill_missing=True")
        if seen := seen_patients_line(run, cohort):  # as predict says it (stop 83's trials: gradcam had not)
            print(f"warning: {seen}", file=sys.stderr)
    out = guard_output(
        out or run.files.gradcam(split),
        inputs=[*cohort.files()],
        ours=is_gradcam_folder,
        kind="folder",
        can_overwrite=False,
        run=run.workdir,  # inside a run folder: only this run's eval_*/gradcam_* folders
    )
    predictor = run.predictor(checkpoint)  # BatchNorm folded
    # what the maps are computed with: a folder a resume has overtaken is recognised
    # (RunFiles.outputs_of) and moved aside by training; one of another checkpoint replaced is said
    # and how: an earlier folder of other maps (another method, layer or target) replaced is said
    # too (helper-93: a --target no_lnm call replaced the LNM maps' figures under the same titles)
    source = run.computed_from(checkpoint)
    try:  # what an earlier call wrote here, read before this one replaces it
        before = read_json(out / F.CAM_SOURCE)
    except (OSError, ValueError):
        before = None
    # written whole into a new folder that then replaces ``out``: a folder an earlier call wrote
    # keeps none of its files (figures of patients this call does not have, lesion scores this
    # cohort has no masks for), and an interrupted call leaves the earlier folder as it was
    with tempfile.TemporaryDirectory(prefix="lnm_gradcam_") as records, atomic_directory(out, replace=True) as fresh:
        data = run.data if manifest is None else run.data_for(cohort, Path(records))
        res = _explain(
            run,
            predictor,
            data.eval_batches("all" if manifest is not None else split),
            cohort,
            fresh,
            final=out,
            branches=branches,
            method=method,
            layer=layer,
            target=target,
            threshold=threshold,
            grid_size=grid_size,
            seed=seed,
            figures=figures,
            pointing_tolerance=pointing_tolerance,
        )
        # the layer the maps are of (not 'auto') and the threshold their verdicts are judged at
        # (helper-97: a rerun at the very layer 'auto' chose was said to replace other maps)
        source |= {"method": method, "layer": res["layer"], "target": target, "threshold": threshold}
        write_json(fresh / F.CAM_SOURCE, source)
        check_held(run.files.root)  # into a run removed or replaced meanwhile: nothing put there (helper-111)
    if (earlier := replaced_source(before, source)) is not None:
        res["notes"].append(f"replaced {out.name}/, the maps of {earlier}")
    return res


def replaced_source(earlier: dict | None, source: dict) -> str | None:
    """What an earlier Grad-CAM folder's record ``earlier`` (None: none) says its maps were
    computed from (``the 'best' checkpoint of epoch 6 of RUN (gradcam at stage2, target lnm,
    threshold 0.5)``) when that was another checkpoint, state, method, layer, target or verdict
    threshold than ``source``; None otherwise. A folder written before its record named them is
    said with the maps' kind unknown."""
    if earlier is None or all(earlier.get(k) == v for k, v in source.items()):
        return None
    how = (
        f"{earlier['method']} at {earlier['layer']}, target {earlier['target']}"
        + (f", threshold {earlier['threshold']:g}" if isinstance(earlier.get("threshold"), int | float) else "")
        if all(k in earlier for k in ("method", "layer", "target"))
        else "method, layer and target not recorded"
    )
    return (
        f"the '{earlier.get('checkpoint')}' checkpoint of epoch {earlier.get('epoch')} of {earlier.get('run')} ({how})"
    )


CAM_INDEX_COLUMNS = [names.PATIENT_ID, "prob_lnm", names.LABEL, "correct", "figure"]
# everything a gradcam folder holds (the per-patient figures under CAM_PATIENTS, the scores with masks)
CAM_OUTPUTS = frozenset(
    {
        F.CAM_PATIENTS,
        F.CAM_GRID_CORRECT,
        F.CAM_GRID_INCORRECT,
        F.CAM_GRID_PREDICTED_POSITIVE,
        F.CAM_GRID_PREDICTED_NEGATIVE,
        F.CAM_INDEX,
        F.CAM_ARRAYS,
        F.CAM_SCORES,
        F.CAM_SOURCE,
    }
)


def is_gradcam_folder(folder: Path) -> bool:
    """Whether ``folder`` is one :func:`explain` wrote (so it may write it again): its
    ``index.csv`` has the Grad-CAM index's columns and it holds nothing else than what
    :func:`explain` writes. A folder of the user's that happens to hold an ``index.csv`` is not."""
    try:
        with open(folder / F.CAM_INDEX, newline="", encoding="utf-8") as f:
            header = next(csv.reader(f), None)
        return header == CAM_INDEX_COLUMNS and all(p.name in CAM_OUTPUTS for p in folder.iterdir())
    except (OSError, UnicodeDecodeError, csv.Error):
        return False


def _explain(
    run,
    predictor,
    batches,
    cohort,
    out: Path,
    *,
    final: Path,
    branches,
    method,
    layer,
    target,
    threshold,
    grid_size,
    seed,
    figures,
    pointing_tolerance,
):
    """Writes the CAM outputs into ``out`` (a new folder that becomes ``final``) and returns
    :func:`gradcam`'s summary."""
    config = run.config
    task = Task.from_config(config)
    patients = cohort.by_id()
    batches = iter(batches)
    first = next(batches)
    sizes = layer_sizes(predictor.model, predictor.params, predictor.batch_stats, step_inputs(first))
    layer, note = choose_layer(sizes, layer, config.model.get("lesion_head", ""))
    notes = [note] if note else []
    cam_fn = make_cam_fn(predictor.model, layer=layer, method=method, target=target)
    # what every figure says of its maps and of its verdict (the threshold it is judged at)
    caption = f"{method} at {layer}, target {target}; correct at {task.prob} >= {threshold:g}"
    (out / F.CAM_PATIENTS if figures else out).mkdir(parents=True, exist_ok=True)
    entries, flat, arrays, scored, outside, clipped = [], dict.fromkeys(branches, 0), {}, [], [], []
    framing, size = Framing.from_config(config.data), config.data.image_size
    rng = np.random.default_rng(seed)
    for batch in itertools.chain([first], batches):
        res = {k: np.asarray(v) for k, v in cam_fn(predictor.params, predictor.batch_stats, step_inputs(batch)).items()}
        for i in np.flatnonzero(batch[names.VALID]):
            prob = float(sigmoid(res["logit"][i]))
            label = int(batch[names.LABEL][i])
            pid = batch[names.PATIENT_ID][i].decode()
            entry = {
                names.PATIENT_ID: pid,
                "prob": prob,
                "label": label,
                "correct": label >= 0 and (prob >= threshold) == (label == 1),
                "images": {b: denormalise(batch[b][i], config.data.norm[b]) for b in branches},
                "cams": {b: res[b][i] for b in branches},
                "available": {b: bool(res[f"{b}_available"][i]) for b in branches},
                "lesions": {},
            }
            for b in branches:
                if not entry["available"][b]:
                    continue
                flat[b] += (
                    float(np.ptp(res[b][i])) <= S.TIES
                )  # a constant map shows nothing (cam_from scales to [0, 1])
                arrays[f"{pid}/{b}"] = res[b][i].astype(np.float32)
                arrays[f"{pid}/{b}_raw"] = res[f"{b}_raw"][i].astype(np.float32)
                patient = patients.get(pid)
                if patient is None or patient.mask(b) is None:
                    continue
                source = resolve(getattr(patient, b), b, patient.image_options(b), framing.ceus_region)
                lesion = _lesion(patient, b, source, framing, size)
                if not lesion.any():  # all of it outside the field of view's square (validate refuses it)
                    outside.append(f"{pid} {b} {patient.mask(b).name}")
                    continue
                entry["lesions"][b] = lesion
                arrays[f"{pid}/{b}_lesion"] = lesion
                # a clip's map is of the one frame the model reads: its mask is compared there
                frame = clip_frame(source) if b == names.CEUS else None
                if frame is not None:
                    entry["frames"] = {b: frame}
                    clipped.append(pid)
                picture = picture_region(source, size, framing)
                noise = S.random_map(rng, sizes[layer], size, picture)
                scored.append(
                    {
                        names.PATIENT_ID: pid,
                        "branch": b,
                        "label": label,
                        "prob": prob,
                        **({"frame": frame[0], "frames": frame[1]} if frame is not None else {}),
                        **S.lesion_scores(res[b][i], lesion, pointing_tolerance, picture),
                        **{
                            f"random_{k}": v
                            for k, v in S.lesion_scores(noise, lesion, pointing_tolerance, picture).items()
                            if k != "lesion_area"
                        },
                    }
                )
            entry["file"] = f"{F.CAM_PATIENTS}/{pid}.png" if figures else ""
            if figures:
                patient_figure(path_inside(out, entry["file"]), entry, branches, task, caption)
            entries.append(entry)
    correct = [e for e in entries if e["correct"]]
    wrong = [e for e in entries if not e["correct"] and e["label"] >= 0]
    # patients without a label are neither correct nor incorrect: shown by the class predicted
    # (helper-56: new patients had two grids saying "no patients")
    unlabelled = [e for e in entries if e["label"] < 0]
    positive = [e for e in unlabelled if e["prob"] >= threshold]
    negative = [e for e in unlabelled if e["prob"] < threshold]
    grids = []
    if len(unlabelled) < len(entries):
        grids += [
            ("Correct predictions", correct, F.CAM_GRID_CORRECT),
            ("Incorrect predictions", wrong, F.CAM_GRID_INCORRECT),
        ]
    if unlabelled:
        grids += [
            (
                f"No label, predicted {task.positive} ({task.prob} >= {threshold:g})",
                positive,
                F.CAM_GRID_PREDICTED_POSITIVE,
            ),
            (
                f"No label, predicted {task.negative} ({task.prob} < {threshold:g})",
                negative,
                F.CAM_GRID_PREDICTED_NEGATIVE,
            ),
        ]
    for title, chosen, path in grids if figures else ():
        grid_figure(out / path, _pick(chosen, grid_size), branches, f"{title} ({caption})", task)
    with atomic_file(out / F.CAM_ARRAYS) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)
    write_csv(
        out / F.CAM_INDEX,
        (
            {
                names.PATIENT_ID: e[names.PATIENT_ID],
                "prob_lnm": f"{e['prob']:.6f}",
                names.LABEL: e["label"] if e["label"] >= 0 else "",
                "correct": int(e["correct"]) if e["label"] >= 0 else "",
                "figure": e["file"],
            }
            for e in entries
        ),
        CAM_INDEX_COLUMNS,
    )
    for b, n in flat.items():
        if n:
            shown = sum(e["available"][b] for e in entries)
            notes.append(f"warning: {n} of {shown} {b} CAMs at {layer} are constant (blank figures)")
    if clipped:
        notes.append(
            f"note: {len(clipped)} CEUS clip(s) with a lesion mask: each map is of the frame the model reads (the peak "
            "of its time-intensity curve; its number in the figure and in cam_scores.json), and the mask, one for the "
            f"clip, is compared on that frame: draw it there, e.g. {clipped[0]}"
        )
    if outside:  # never a failure that loses the run's evaluation: named, and left unscored
        notes.append(
            f"warning: {len(outside)} lesion mask(s) hold none of their lesion in the model's square (data."
            f"field_of_view_mm={config.data.get('field_of_view_mm', 0):g} keeps the picture's centre): not scored, "
            f"e.g. {outside[0]}"
        )
    summary = None
    if scored:
        summary = S.summary_table(scored, branches)
        doc = {
            "method": method,
            "layer": layer,
            "layer_size": list(sizes[layer]),
            "target": target,
            "seed": seed,
            "pointing_tolerance": pointing_tolerance,  # a fraction of the image side
            "pointing_tolerance_px": S.tolerance_px((config.data.image_size,) * 2, pointing_tolerance),
            "definitions": S.__doc__.strip(),
            "summary": summary,
            "images": scored,
            "not_scored_outside_the_square": outside,
        }
        write_json(out / F.CAM_SCORES, doc)
        notes += S.summary_lines(summary, method, layer)
    return {
        "out": str(final),
        "patients": len(entries),
        "correct": len(correct),
        "incorrect": len(wrong),
        "unlabelled": {"predicted_positive": len(positive), "predicted_negative": len(negative)},
        "layer": layer,
        "layer_size": sizes[layer],
        "scores": summary,
        "notes": notes,
    }
