"""Statistical tests the paper reports: DeLong AUC variance, CI and paired test; label-
permutation p-values; cohort-table tests (Mann-Whitney U, Pearson chi-square via scipy).

DeLong: the fast structural-components algorithm of Sun & Xu (IEEE SPL 2014), exact for
ties (midranks). Scores of two models on the same patients are compared with the paired
DeLong test (the correlation of the two AUCs is in the covariance).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import stats


def _midrank(x: np.ndarray) -> np.ndarray:
    return stats.rankdata(x, method="average")


def _structural_components(labels: np.ndarray, scores: np.ndarray):
    """AUCs and DeLong placement values of k score vectors ``scores`` [k, n]."""
    labels = np.asarray(labels).astype(bool)
    scores = np.atleast_2d(np.asarray(scores, np.float64))
    pos, neg = scores[:, labels], scores[:, ~labels]
    m, n = pos.shape[1], neg.shape[1]
    if m == 0 or n == 0:
        raise ValueError("DeLong needs both classes among the labels")
    tx = np.stack([_midrank(r) for r in pos])
    ty = np.stack([_midrank(r) for r in neg])
    tz = np.stack([_midrank(r) for r in np.concatenate([pos, neg], axis=1)])
    aucs = (tz[:, :m].sum(axis=1) / m - (m + 1) / 2.0) / n
    v01 = (tz[:, :m] - tx) / n  # placement of each positive among the negatives
    v10 = 1.0 - (tz[:, m:] - ty) / m  # placement of each negative among the positives
    return aucs, v01, v10, m, n


def delong_covariance(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    """AUCs [k] and their DeLong covariance [k, k] for score vectors ``scores`` [k, n]."""
    aucs, v01, v10, m, n = _structural_components(labels, scores)
    cov = _sample_cov(v01) / m + _sample_cov(v10) / n
    return aucs, cov


def _sample_cov(x: np.ndarray) -> np.ndarray:
    """np.cov of [k, N] rows; NaN (undefined, no warning) for a class of one patient: its
    AUC's variance cannot be estimated, so the CI is [0, 1] and a test's p-value NaN."""
    k = x.shape[0]
    return np.full((k, k), np.nan) if x.shape[1] < 2 else np.atleast_2d(np.cov(x))


def delong_ci(labels, scores, level: float = 0.95) -> tuple[float, float, float]:
    """AUC and its DeLong (normal-approximation) CI, clipped to [0, 1]."""
    aucs, cov = delong_covariance(labels, np.asarray(scores)[None])
    auc, se = float(aucs[0]), float(np.sqrt(max(cov[0, 0], 0.0)))
    z = stats.norm.ppf(0.5 + level / 2.0)
    return auc, max(0.0, auc - z * se), min(1.0, auc + z * se)


def delong_test(labels, scores_a, scores_b) -> dict[str, float]:
    """Two-sided paired DeLong test of AUC(a) = AUC(b) on the same patients."""
    aucs, cov = delong_covariance(labels, np.stack([scores_a, scores_b]))
    var = cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]
    diff = float(aucs[0] - aucs[1])
    if var <= 0:
        p = 1.0 if diff == 0 else 0.0
        z = 0.0 if diff == 0 else float(np.sign(diff) * np.inf)
    else:
        z = diff / float(np.sqrt(var))
        p = float(2 * stats.norm.sf(abs(z)))
    return {"auc_a": float(aucs[0]), "auc_b": float(aucs[1]), "difference": diff, "z": z, "p": p}


def permutation_p_value(
    labels,
    predictions,
    statistic: Callable[[np.ndarray, np.ndarray], float],
    *,
    n_permutations: int = 1000,
    seed: int = 0,
) -> float:
    """One-sided label-permutation p-value of ``statistic(labels, predictions)``: the share of
    seeded label shuffles scoring at least the observed value, counting the observed labels
    as one permutation, (1 + #{perm >= obs}) / (n + 1). A perfect predictor gets 1 / (n + 1)."""
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    observed = statistic(labels, predictions)
    rng = np.random.default_rng(seed)
    hits = sum(statistic(rng.permutation(labels), predictions) >= observed - 1e-12 for _ in range(n_permutations))
    return (1 + hits) / (n_permutations + 1)


def mann_whitney(a, b) -> float:
    """Two-sided Mann-Whitney U p-value (continuous columns of the cohort table)."""
    return float(stats.mannwhitneyu(np.asarray(a, float), np.asarray(b, float), alternative="two-sided").pvalue)


def chi_square(a, b) -> float:
    """Pearson chi-square p-value of a categorical column across two groups (no continuity
    correction, as Pearson's test; NaN when a group or category is empty throughout)."""
    a, b = [str(x) for x in a], [str(x) for x in b]
    cats = sorted(set(a) | set(b))
    table = np.array([[a.count(c) for c in cats], [b.count(c) for c in cats]])
    if len(cats) < 2 or table.sum(axis=1).min() == 0:
        return float("nan")
    return float(stats.chi2_contingency(table, correction=False).pvalue)
