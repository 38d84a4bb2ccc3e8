"""Calibration of P(LNM): expected calibration error, Brier score, temperature scaling,
reliability and decision curves. Clinicians act on the probability, not only on the ranking
that the AUC measures."""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar
from sklearn.metrics import brier_score_loss

from lnm_jax.evaluation.metrics import checked, sigmoid


def _probabilities(labels, probs) -> tuple[np.ndarray, np.ndarray]:
    """0/1 labels and finite probabilities in [0, 1] (one ValueError naming which is not)."""
    y, p = checked(labels, probs, "probs")
    if ((p < 0) | (p > 1)).any():
        raise ValueError(f"probs must be in [0, 1]; {int(np.sum((p < 0) | (p > 1)))} of {p.size} are not")
    return y.astype(float), p


def reliability_bins(labels: np.ndarray, probs: np.ndarray, n_bins: int = 10):
    """Equal-width bins of P(LNM) (the last closed at 1): (each bin's mean probability,
    observed LNM rate, count)."""
    labels, probs = _probabilities(labels, probs)
    idx = np.minimum((probs * n_bins).astype(int), n_bins - 1)
    count = np.bincount(idx, minlength=n_bins)
    mean_p = np.bincount(idx, probs, minlength=n_bins) / np.maximum(count, 1)
    rate = np.bincount(idx, labels, minlength=n_bins) / np.maximum(count, 1)
    return mean_p, rate, count


def expected_calibration_error(labels: np.ndarray, probs: np.ndarray, n_bins: int = 10) -> float:
    """sum_b (n_b / N) |observed LNM rate_b - mean P(LNM)_b| over ``n_bins`` equal-width bins of
    P(LNM): the class-1 reliability ECE (Naeini et al. 2015, AAAI, on P(y = 1)), not Guo et
    al.'s (2017) top-label ECE, which bins max(p, 1 - p) against accuracy and differs from it."""
    mean_p, rate, count = reliability_bins(labels, probs, n_bins)
    return float(np.sum(count * np.abs(rate - mean_p)) / max(count.sum(), 1))


def brier(labels: np.ndarray, probs: np.ndarray) -> float:
    y, p = _probabilities(labels, probs)
    return float(brier_score_loss(y.astype(int), p))


# the temperature's search bounds and the test of a fit that stopped at one: in lnm_jax.serving,
# which an export carries (its predict leaves such a temperature's column out)
from lnm_jax.serving import TEMPERATURE_BOUNDS, at_bound  # noqa: E402, F401


def fit_temperature(labels: np.ndarray, logits: np.ndarray) -> float:
    """The temperature T minimising the validation NLL of sigmoid(logit / T) (Guo et al. 2017),
    searched in :data:`TEMPERATURE_BOUNDS` (check :func:`at_bound`)."""
    y, z = checked(labels, logits, "logits")
    y = y.astype(float)

    def nll(log_t):
        s = z / np.exp(log_t)
        return float(np.mean(np.logaddexp(0.0, s) - y * s))

    res = minimize_scalar(nll, bounds=tuple(np.log(TEMPERATURE_BOUNDS)), method="bounded")
    return float(np.exp(res.x))


def calibrated(logits: np.ndarray, temperature: float) -> np.ndarray:
    return sigmoid(np.asarray(logits, float) / temperature)


def net_benefit(labels: np.ndarray, probs: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Decision-curve net benefit of treating patients with P(LNM) >= t:
    TP/N - FP/N * t / (1 - t) (Vickers & Elkin 2006)."""
    y, p = _probabilities(labels, probs)
    y = y.astype(int)
    n = len(y)
    out = []
    for t in thresholds:
        pred = p >= t
        tp, fp = np.sum(pred & (y == 1)), np.sum(pred & (y == 0))
        out.append(tp / n - fp / n * t / (1.0 - t))
    return np.asarray(out)
