"""Binary classification metrics as the paper reports them, with seeded bootstrap CIs."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve


def sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(logits, np.float64)))


def safe_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """AUC, or NaN when only one class is present (e.g. a tiny validation batch)."""
    labels = np.asarray(labels)
    if labels.size == 0 or labels.min() == labels.max():
        return float("nan")
    return float(roc_auc_score(labels, scores))


def threshold_metrics(labels: np.ndarray, probs: np.ndarray, threshold: float) -> dict[str, float]:
    """Sensitivity, specificity and accuracy of ``probs >= threshold``."""
    labels = np.asarray(labels).astype(int)
    pred = (np.asarray(probs) >= threshold).astype(int)
    tp = int(np.sum((pred == 1) & (labels == 1)))
    tn = int(np.sum((pred == 0) & (labels == 0)))
    fp = int(np.sum((pred == 1) & (labels == 0)))
    fn = int(np.sum((pred == 0) & (labels == 1)))
    return {
        "threshold": float(threshold),
        "sensitivity": tp / (tp + fn) if tp + fn else float("nan"),
        "specificity": tn / (tn + fp) if tn + fp else float("nan"),
        "accuracy": (tp + tn) / len(labels) if len(labels) else float("nan"),
        "tp": tp,
        "tn": tn,
        "fp": fp,
        "fn": fn,
    }


def youden_threshold(labels: np.ndarray, probs: np.ndarray) -> float:
    """The probability threshold maximising sensitivity + specificity - 1 (on validation)."""
    fpr, tpr, thr = roc_curve(labels, probs)
    thr = np.minimum(thr, 1.0)  # sklearn's first threshold is +inf
    return float(thr[int(np.argmax(tpr - fpr))])


def bootstrap_auc_ci(
    labels: np.ndarray, scores: np.ndarray, *, n_boot: int = 2000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap CI of the AUC, resampling patients; resamples with one class
    are skipped (they have no AUC)."""
    labels, scores = np.asarray(labels), np.asarray(scores)
    rng = np.random.default_rng(seed)
    n = len(labels)
    aucs = []
    for _ in range(n_boot):
        idx = rng.integers(0, n, n)
        y = labels[idx]
        if y.min() != y.max():
            aucs.append(roc_auc_score(y, scores[idx]))
    if not aucs:
        return float("nan"), float("nan")
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(aucs, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def summarise(
    labels: np.ndarray,
    probs: np.ndarray,
    *,
    youden: float | None = None,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> dict:
    """Everything reported for one split: AUC with CI, and metrics at 0.5 and at the
    validation-chosen Youden threshold (if given)."""
    lo, hi = bootstrap_auc_ci(labels, probs, n_boot=n_boot, level=level, seed=seed)
    out = {
        "n": int(len(labels)),
        "n_positive": int(np.sum(labels)),
        "auc": safe_auc(labels, probs),
        "auc_ci": [lo, hi],
        "auc_ci_level": level,
        "at_0.5": threshold_metrics(labels, probs, 0.5),
    }
    if youden is not None:
        out["at_youden"] = threshold_metrics(labels, probs, youden)
    return out
