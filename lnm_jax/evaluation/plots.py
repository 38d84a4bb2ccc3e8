"""Figures: ROC curves and convergence curves (matplotlib, headless)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import roc_curve  # noqa: E402

from lnm_jax.fileio import save_figure


def plot_roc(curves: Mapping[str, tuple[np.ndarray, np.ndarray, float]], path: Path, title: str = "ROC") -> None:
    """``curves``: name -> (labels, scores, auc)."""
    fig, ax = plt.subplots(figsize=(5, 5), dpi=120)
    for name, (labels, scores, auc) in curves.items():
        fpr, tpr, _ = roc_curve(labels, scores)
        ax.plot(fpr, tpr, lw=2, label=f"{name} (AUC {auc:.3f})")
    ax.plot([0, 1], [0, 1], "k--", lw=1, alpha=0.5)
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", title=title, xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def plot_convergence(history: Sequence[Mapping], path: Path, title: str = "Convergence") -> None:
    """Train/validation loss and AUC per epoch from the JSON-lines history."""
    epochs = [h["epoch"] for h in history]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.5), dpi=120)
    for key, ax in (("loss", a1), ("auc", a2)):
        ax.plot(epochs, [h[f"train_{key}"] for h in history], label="train")
        ax.plot(epochs, [h[f"val_{key}"] for h in history], label="validation")
        ax.set(xlabel="epoch", ylabel=key)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def plot_reliability(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
    path: Path,
    n_bins: int = 10,
    title: str = "Reliability",
    label: str = "LNM",
) -> None:
    """``curves``: name -> (labels, probabilities); observed rate of ``label`` (the task's
    positive class, :mod:`lnm_jax.task`) per probability bin."""
    from lnm_jax.evaluation.calibration import expected_calibration_error, reliability_bins

    fig, ax = plt.subplots(figsize=(5, 5), dpi=120)
    ax.plot([0, 1], [0, 1], "k--", lw=1, alpha=0.5, label="perfect calibration")
    for name, (labels, probs) in curves.items():
        mean_p, rate, count = reliability_bins(labels, probs, n_bins)
        keep = count > 0
        ece = expected_calibration_error(labels, probs, n_bins)
        ax.plot(mean_p[keep], rate[keep], "o-", label=f"{name} (ECE {ece:.3f})")
    ax.set(xlabel=f"predicted P({label})", ylabel=f"observed {label} rate", xlim=(0, 1), ylim=(0, 1), title=title)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def plot_decision_curve(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]], path: Path, title: str = "Decision curve"
) -> None:
    """Net benefit vs threshold probability, with treat-all and treat-none references."""
    from lnm_jax.evaluation.calibration import net_benefit

    thresholds = np.linspace(0.01, 0.99, 99)
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    prevalence = None
    for name, (labels, probs) in curves.items():
        ax.plot(thresholds, net_benefit(labels, probs, thresholds), label=name)
        prevalence = float(np.mean(labels))
    if prevalence is not None:
        ax.plot(thresholds, prevalence - (1 - prevalence) * thresholds / (1 - thresholds), "k:", label="treat all")
    ax.axhline(0.0, color="k", lw=1, label="treat none")
    ax.set(
        xlabel="threshold probability",
        ylabel="net benefit",
        title=title,
        ylim=(-0.05, max(0.05, (prevalence or 0.5) + 0.05)),
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
