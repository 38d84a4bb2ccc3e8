"""``lnm-jax gradcam``: CAMs of a run's patients, one figure each, plus grids of correct and
incorrect predictions, from the run's restored (BatchNorm-folded) checkpoint."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np

from lnm_jax import names
from lnm_jax import run_files as F
from lnm_jax.evaluation.metrics import sigmoid
from lnm_jax.explain.figures import grid_figure, patient_figure
from lnm_jax.explain.gradcam import AUTO_LAYER, choose_layer, layer_sizes, make_cam_fn
from lnm_jax.fileio import guard_output, path_inside, write_csv
from lnm_jax.run import Run
from lnm_jax.task import Task
from lnm_jax.training.steps import step_inputs

FLAT_CAM = 1e-6  # a CAM whose range is at most this is constant (cam_from scales to [0, 1])


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


def gradcam(
    run: Run,
    *,
    split: str = "test",
    out: Path | str | None = None,
    checkpoint: str = "best",
    method: str = "gradcam",
    layer: str = AUTO_LAYER,
    target: str = "lnm",
    threshold: float = 0.5,
    grid_size: int = 6,
) -> dict:
    """Writes ``patients/<id>.png``, the two grids and ``index.csv`` to ``out`` (default
    ``gradcam_<split>``; an existing folder only if an earlier ``gradcam`` wrote it); returns
    the counts, the layer used (``layer='auto'``: the deepest map of at least 7x7; a requested
    layer under 4x4 falls back to it) and notes to print (the fallback, constant CAMs)."""
    config = run.config
    inputs = names.parse_modalities(config.modalities)
    if config.data.clip_frames > 1 and names.CEUS in inputs:
        raise ValueError(
            f"run {run.workdir} reads CEUS clips (data.clip_frames={config.data.clip_frames}); "
            f"Grad-CAM here explains still images only"
        )
    branches = [b for b in names.IMAGE_INPUTS if b in inputs]
    task = Task.from_config(config)
    if not branches:
        raise ValueError(f"run {run.workdir} uses no image input ({config.modalities}): nothing to explain")
    predictor = run.predictor(checkpoint)  # BatchNorm folded
    out = guard_output(
        out or run.files.gradcam(split), ours=lambda p: (p / F.CAM_INDEX).is_file(), kind="folder", can_overwrite=False
    )
    batches = iter(run.data.eval_batches(split))
    first = next(batches)
    sizes = layer_sizes(predictor.model, predictor.params, predictor.batch_stats, step_inputs(first))
    layer, note = choose_layer(sizes, layer)
    notes = [note] if note else []
    cam_fn = make_cam_fn(predictor.model, layer=layer, method=method, target=target)
    (out / F.CAM_PATIENTS).mkdir(parents=True, exist_ok=True)
    entries, flat = [], dict.fromkeys(branches, 0)
    for batch in itertools.chain([first], batches):
        res = {k: np.asarray(v) for k, v in cam_fn(predictor.params, predictor.batch_stats, step_inputs(batch)).items()}
        for i in np.flatnonzero(batch[names.VALID]):
            prob = float(sigmoid(res["logit"][i]))
            label = int(batch[names.LABEL][i])
            entry = {
                "patient_id": batch[names.PATIENT_ID][i].decode(),
                "prob": prob,
                "label": label,
                "correct": (prob >= threshold) == (label == 1),
                "images": {b: denormalise(batch[b][i], config.data.norm[b]) for b in branches},
                "cams": {b: res[b][i] for b in branches},
                "available": {b: bool(res[f"{b}_available"][i]) for b in branches},
            }
            for b in branches:  # a constant map (all zero after scaling) shows nothing
                flat[b] += entry["available"][b] and float(np.ptp(res[b][i])) <= FLAT_CAM
            entry["file"] = f"{F.CAM_PATIENTS}/{entry['patient_id']}.png"
            patient_figure(path_inside(out, entry["file"]), entry, branches, task)
            entries.append(entry)
    correct = [e for e in entries if e["correct"]]
    wrong = [e for e in entries if not e["correct"]]
    grid_figure(
        out / F.CAM_GRID_CORRECT,
        _pick(correct, grid_size),
        branches,
        f"Correct predictions ({method}, {layer}, target {target})",
        task,
    )
    grid_figure(
        out / F.CAM_GRID_INCORRECT,
        _pick(wrong, grid_size),
        branches,
        f"Incorrect predictions ({method}, {layer}, target {target})",
        task,
    )
    write_csv(
        out / F.CAM_INDEX,
        (
            {
                names.PATIENT_ID: e["patient_id"],
                "prob_lnm": f"{e['prob']:.6f}",
                names.LABEL: e["label"],
                "correct": int(e["correct"]),
                "figure": e["file"],
            }
            for e in entries
        ),
        [names.PATIENT_ID, "prob_lnm", names.LABEL, "correct", "figure"],
    )
    for b, n in flat.items():
        if n:
            shown = sum(e["available"][b] for e in entries)
            notes.append(f"warning: {n} of {shown} {b} CAMs at {layer} are constant (blank figures)")
    return {
        "out": str(out),
        "patients": len(entries),
        "correct": len(correct),
        "incorrect": len(wrong),
        "layer": layer,
        "layer_size": sizes[layer],
        "notes": notes,
    }
