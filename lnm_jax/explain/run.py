"""``lnm-jax gradcam``: CAMs of a trained run's patients, one figure each, plus grids of
correct and incorrect predictions."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lnm_jax import experiment
from lnm_jax.evaluation.metrics import sigmoid
from lnm_jax.evaluation.run import inference_variables, restore_run
from lnm_jax.models.fusion import parse_modalities
from lnm_jax.explain.figures import grid_figure, patient_figure
from lnm_jax.explain.gradcam import IMAGE_BRANCHES, make_cam_fn
from lnm_jax.fileio import write_csv
from lnm_jax.training.steps import device_batch


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


def gradcam(workdir: Path | str, *, split: str = "test", out: Path | str | None = None,
            checkpoint: str = "best", method: str = "gradcam", layer: str = "stage4",
            target: str = "lnm", threshold: float = 0.5, grid_size: int = 6) -> dict:
    workdir = Path(workdir)
    data = experiment.open_run(workdir)
    config = data.config
    if config.data.clip_frames > 1 and "ceus" in parse_modalities(config.modalities):
        raise ValueError(f"run {workdir} reads CEUS clips (data.clip_frames={config.data.clip_frames}); "
                         f"Grad-CAM here explains still images only")
    model, state, _ = restore_run(config, workdir, data, checkpoint)
    branches = [b for b in IMAGE_BRANCHES if b in model.modalities]
    if not branches:
        raise ValueError(f"run {workdir} uses no image input ({config.modalities}): nothing to explain")
    model, params, stats = inference_variables(model, state, config)  # BatchNorm folded
    cam_fn = make_cam_fn(model, layer=layer, method=method, target=target)
    out = Path(out) if out else workdir / f"gradcam_{split}"
    (out / "patients").mkdir(parents=True, exist_ok=True)
    entries = []
    for batch in data.eval_batches(split):
        res = {k: np.asarray(v) for k, v in cam_fn(params, stats, device_batch(batch)).items()}
        for i in np.flatnonzero(batch["valid"]):
            prob = float(sigmoid(res["logit"][i]))
            label = int(batch["lnm"][i])
            entry = {"patient_id": batch["patient_id"][i].decode(), "prob": prob, "label": label,
                     "correct": (prob >= threshold) == (label == 1),
                     "images": {b: denormalise(batch[b][i], config.data.norm[b]) for b in branches},
                     "cams": {b: res[b][i] for b in branches},
                     "available": {b: bool(res[f"{b}_available"][i]) for b in branches}}
            entry["file"] = f"patients/{entry['patient_id']}.png"
            patient_figure(out / entry["file"], entry, branches)
            entries.append(entry)
    correct = [e for e in entries if e["correct"]]
    wrong = [e for e in entries if not e["correct"]]
    grid_figure(out / "grid_correct.png", _pick(correct, grid_size), branches,
                f"Correct predictions ({method}, {layer}, target {target})")
    grid_figure(out / "grid_incorrect.png", _pick(wrong, grid_size), branches,
                f"Incorrect predictions ({method}, {layer}, target {target})")
    write_csv(out / "index.csv",
              ({"patient_id": e["patient_id"], "prob_lnm": f"{e['prob']:.6f}", "lnm": e["label"],
                "correct": int(e["correct"]), "figure": e["file"]} for e in entries),
              ["patient_id", "prob_lnm", "lnm", "correct", "figure"])
    return {"out": str(out), "patients": len(entries), "correct": len(correct), "incorrect": len(wrong)}
