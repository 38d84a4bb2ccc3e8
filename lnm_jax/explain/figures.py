"""Heatmap figures like the paper's Figures 8-9: un-normalised B-mode and CEUS images with the
CAM overlaid, side by side, titled with the model's probability and the true class in the
run's task names (:mod:`lnm_jax.task`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.cm import ScalarMappable  # noqa: E402
from matplotlib.colors import Normalize  # noqa: E402

from lnm_jax.evaluation.plots import literal_text
from lnm_jax.fileio import save_figure
from lnm_jax.names import BMODE, CEUS, PATIENT_ID
from lnm_jax.task import PAPER, Task

BRANCH_TITLES = {BMODE: "B-mode", CEUS: "CEUS"}


def overlay(image: np.ndarray, cam: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """RGB [0, 1] image blended with the CAM in the 'jet' colour map."""
    heat = plt.get_cmap("jet")(np.clip(cam, 0.0, 1.0))[..., :3]
    return np.clip((1.0 - alpha) * image + alpha * heat, 0.0, 1.0)


def _row(axes, entry: dict, branches: Sequence[str], colorbar: bool = False) -> None:
    for j, b in enumerate(branches):
        ax_img, ax_cam = axes[2 * j], axes[2 * j + 1]
        ax_img.imshow(entry["images"][b])
        frame = entry.get("frames", {}).get(b)  # a clip's: (the frame read, 0-based; its frames)
        ax_img.set_title(BRANCH_TITLES[b] + (f", frame {frame[0] + 1} of {frame[1]}" if frame else ""), fontsize=8)
        if entry["available"][b]:
            ax_cam.imshow(overlay(entry["images"][b], entry["cams"][b]))
            ax_cam.set_title(f"{BRANCH_TITLES[b]} CAM", fontsize=8)
            if (lesion := entry.get("lesions", {}).get(b)) is not None:  # the lesion outline, where known
                ax_cam.contour(lesion, levels=[0.5], colors="white", linewidths=0.8)
            if colorbar:
                cbar = ax_cam.figure.colorbar(ScalarMappable(Normalize(0, 1), "jet"), ax=ax_cam, fraction=0.046)
                cbar.ax.tick_params(labelsize=6)
                cbar.set_label("CAM (scaled per image)", fontsize=6)
        else:
            ax_cam.text(0.5, 0.5, "not available", ha="center", va="center", fontsize=8)
        for ax in (ax_img, ax_cam):
            ax.set_xticks([])
            ax.set_yticks([])


def _title(entry: dict, task: Task) -> str:
    if entry["label"] is None or entry["label"] < 0:  # a new patient: no label to judge by
        return f"{entry[PATIENT_ID]}: {task.prob} = {entry['prob']:.2f}"
    verdict = "correct" if entry["correct"] else "incorrect"
    return (
        f"{entry[PATIENT_ID]}: {task.prob} = {entry['prob']:.2f}, true: {task.class_name(entry['label'])} ({verdict})"
    )


@literal_text
def patient_figure(
    path: Path, entry: dict, branches: Sequence[str], task: Task = PAPER, caption: str | None = None
) -> None:
    """``entry``: patient_id, prob, label (-1: unknown), correct, images/cams/available per
    branch (and ``lesions``: the framed masks, outlined in white; ``frames``: a clip's frame
    shown, (index, count)); titled with ``task``'s names, ``caption`` (the maps' method, layer
    and target, the verdict's threshold) below; a colour bar per CAM."""
    fig, axes = plt.subplots(1, 2 * len(branches), figsize=(2.6 * 2 * len(branches), 3.2), dpi=110)
    _row(np.atleast_1d(axes), entry, branches, colorbar=True)
    fig.suptitle(_title(entry, task) + (f"\n{caption}" if caption else ""), fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


@literal_text
def grid_figure(path: Path, entries: Sequence[dict], branches: Sequence[str], title: str, task: Task = PAPER) -> None:
    n = max(1, len(entries))
    fig, axes = plt.subplots(n, 2 * len(branches), figsize=(2.3 * 2 * len(branches), 2.5 * n), dpi=100, squeeze=False)
    for i, entry in enumerate(entries):
        _row(axes[i], entry, branches)
        axes[i][0].set_ylabel(_title(entry, task).replace(": ", "\n", 1), fontsize=7)
    if not entries:
        axes[0][0].text(0.5, 0.5, "no patients", ha="center", va="center")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
