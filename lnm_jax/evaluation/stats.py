"""Statistical tests the paper reports: DeLong AUC variance, CI and paired test; label-
permutation p-values; cohort-table tests (Mann-Whitney U; Pearson chi-square, or Fisher's exact test
for a 2x2 table with an expected count below 5; via scipy).

DeLong: the fast structural-components algorithm of Sun & Xu (IEEE SPL 2014), exact for
ties (midranks). Scores of two models on the same patients are compared with the paired
DeLong test (the correlation of the two AUCs is in the covariance).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import stats

from lnm_jax.evaluation.metrics import binary_labels, finite_scores


def _midrank(x: np.ndarray) -> np.ndarray:
    return stats.rankdata(x, method="average")


def _structural_components(labels: np.ndarray, scores: np.ndarray):
    """AUCs and DeLong placement values of k score vectors ``scores`` [k, n]."""
    labels = binary_labels(labels).astype(bool)
    scores = np.atleast_2d(np.asarray(scores, np.float64))
    finite_scores(scores)
    if scores.shape[1] != len(labels):
        raise ValueError(f"labels and scores differ in length ({len(labels)} vs {scores.shape[1]})")
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
    """AUC and its DeLong CI on the logit scale: logit(AUC) +- z SE / (AUC (1 - AUC)) (the delta
    method on DeLong's SE), back-transformed, so the interval lies inside (0, 1) and is
    asymmetric near 1 (Pepe 2003, *The Statistical Evaluation of Medical Tests*, sec. 5.2;
    Qin & Hotilovac 2008, Stat Methods Med Res 17:207). The Wald interval AUC +- z SE, clipped
    to [0, 1], undercovers at few patients and a high AUC; binormal coverage of both:
    docs/evaluation.md. An AUC of 0 or 1 (DeLong variance 0) gives the point [AUC, AUC]; an
    undefined variance (a class of one patient) gives [0, 1]."""
    aucs, cov = delong_covariance(labels, np.asarray(scores)[None])
    auc, var = float(aucs[0]), float(cov[0, 0])
    if not np.isfinite(var):  # a class of one patient: no variance estimate
        return auc, 0.0, 1.0
    se = float(np.sqrt(var)) if var > 0 else 0.0  # a negative rounding residue of 0 is 0
    return (auc, *_logit_interval(auc, se, level))


def cv_auc_ci(fold_labels, fold_scores, level: float = 0.95) -> tuple[float, float, float]:
    """Cross-validated AUC and its CI from the influence curve (LeDell, Petersen & van der Laan
    2015, *Electron J Stat* 9:1583-1607; R's ``cvAUC::ci.cvAUC``): ``fold_labels``,
    ``fold_scores``: one array per fold, each fold's test patients scored by its own model.

    The estimate is the mean of the K folds' AUCs (scores of different models are never
    ranked against each other, as a pooled AUC ranks them). Patient i of fold v contributes
    the influence value ``(F0_v(s_i) - AUC_v) / p1`` when positive, ``(S1_v(s_i) - AUC_v) / p0``
    when negative (F0_v: the fraction of the fold's negatives scored below s_i, S1_v: of its
    positives above; ties count one half, as in the AUC; p1, p0: the class fractions of all
    n patients); ``sigma^2`` is the mean over folds of each fold's mean squared influence value
    and ``SE = sqrt(sigma^2 / n)``. The interval is taken on the logit scale, as
    :func:`delong_ci`'s (LeDell et al.'s ``AUC +- z SE`` covered less: binormal folds,
    ``scripts/cv_auc_coverage.py``, docs/evaluation.md); a CV-AUC of 0 or 1 gives the point.
    Unlike a DeLong interval on the pooled predictions, it does not rank one fold model's
    scores against another's, whose scales differ. Returns ``(cv_auc, lo, hi)``. ValueError:
    a fold without both classes (its AUC is undefined), unequal numbers of folds."""
    if len(fold_labels) != len(fold_scores) or not fold_labels:
        raise ValueError(f"{len(fold_labels)} folds of labels and {len(fold_scores)} of scores")
    y_all = np.concatenate([binary_labels(y) for y in fold_labels])
    p1 = float(np.mean(y_all))
    p0 = 1.0 - p1
    aucs, spread = [], []
    for k, (y, s) in enumerate(zip(fold_labels, fold_scores)):
        try:
            auc_v, v01, v10, _, _ = _structural_components(y, np.asarray(s)[None])
        except ValueError as e:
            raise ValueError(f"fold {k}: {e}") from e
        auc = float(auc_v[0])
        influence = np.concatenate([(v01[0] - auc) / p1, (v10[0] - auc) / p0])
        aucs.append(auc)
        spread.append(float(np.mean(influence**2)))
    cv = float(np.mean(aucs))
    se = float(np.sqrt(np.mean(spread) / len(y_all)))
    return (cv, *_logit_interval(cv, se, level))


def _logit_interval(auc: float, se: float, level: float) -> tuple[float, float]:
    """``logit(auc) +- z se / (auc (1 - auc))`` back-transformed (the delta method); the point
    where the AUC is 0 or 1 or its SE 0."""
    if auc <= 0.0 or auc >= 1.0 or se == 0.0:
        return auc, auc
    z = stats.norm.ppf(0.5 + level / 2.0)
    logit, half = np.log(auc / (1.0 - auc)), z * se / (auc * (1.0 - auc))
    return float(1.0 / (1.0 + np.exp(-(logit - half)))), float(1.0 / (1.0 + np.exp(-(logit + half))))


NOT_TESTABLE = "not testable"


def delong_test(labels, scores_a, scores_b) -> dict:
    """Two-sided paired DeLong test of AUC(a) = AUC(b) on the same patients (DeLong et al. 1988,
    Biometrics 44:837; z = difference / SE of the difference from the joint covariance).
    Where the variance of the difference is 0 or undefined (e.g. a perfect model against
    all-tied scores on a few patients, or a class of one patient) and the AUCs differ, there is
    no test: z and p are NaN and ``not_testable`` says why (a zero variance is the estimator's
    degeneracy on few patients, not certainty); otherwise ``not_testable`` is None. Identical
    AUCs with no variance (e.g. the same scores twice) give z 0, p 1."""
    aucs, cov = delong_covariance(labels, np.stack([scores_a, scores_b]))
    var = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    diff = float(aucs[0] - aucs[1])
    reason = None
    if np.isfinite(var) and var > 0:
        z = diff / float(np.sqrt(var))
        p = float(2 * stats.norm.sf(abs(z)))
    elif diff == 0:
        z, p = 0.0, 1.0
    else:
        z = p = float("nan")
        why = "zero variance" if np.isfinite(var) else "undefined variance: a class of one patient"
        reason = f"{NOT_TESTABLE} ({why})"
    return {
        "auc_a": float(aucs[0]),
        "auc_b": float(aucs[1]),
        "difference": diff,
        "z": z,
        "p": p,
        "not_testable": reason,
    }


def format_p(test: dict, *, bare: bool = False) -> str:
    """A DeLong test's p as printed: 'p < 0.001', 'p = 0.042' ('<0.001', '0.042' when
    ``bare``, for a table's p column), or its ``not_testable`` reason (never 'p < 0.001' for
    the NaN p of a degenerate variance)."""
    p = test.get("p")
    if test.get("not_testable") or p is None or not np.isfinite(p):
        return test.get("not_testable") or f"{NOT_TESTABLE} (p undefined)"
    return p_text(p) if bare else "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def p_text(p: float) -> str:
    """A p-value as a table's p column gives it: '<0.001' below 0.001, else three decimals."""
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def wilson_ci(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson's score interval (Wilson 1927) of a proportion ``k`` / ``n`` at ``level``, from
    scipy's ``binomtest``; (nan, nan) where ``n`` is 0."""
    if not n:
        return float("nan"), float("nan")
    ci = stats.binomtest(int(k), int(n)).proportion_ci(level, method="wilson")
    return float(ci.low), float(ci.high)


def permutation_p_value(
    labels,
    predictions,
    statistic: Callable[[np.ndarray, np.ndarray], float],
    *,
    n_permutations: int = 1000,
    seed: int = 0,
) -> float:
    """One-sided label-permutation p-value of ``statistic(labels, predictions)``:
    ``scipy.stats.permutation_test`` with the pairing of labels and predictions permuted
    (``permutation_type='pairings'``), ``alternative='greater'``. Where scipy counts more
    pairings than ``n_permutations`` (it counts (n!)^2 for n patients: above 4 at the default
    1,000) ``n_permutations`` seeded ones are drawn and p = (1 + #{permuted >= observed}) /
    (n + 1), the observed pairing counted as one; otherwise every pairing is enumerated and p is
    exact. Its floor is 1 / (n + 1), reached where no other pairing scores as high: with few
    patients of a class many pairings tie with the observed one (a perfect predictor of 3 of 7
    patients scores p = 1 / C(7, 3) = 1/35) (helper-101: it had been a loop of its own)."""
    labels, predictions = binary_labels(labels), np.asarray(predictions)
    res = stats.permutation_test(
        (labels, predictions),
        statistic,
        permutation_type="pairings",
        alternative="greater",
        n_resamples=n_permutations,
        vectorized=False,
        rng=np.random.default_rng(seed),
    )
    return float(res.pvalue)


def mann_whitney(a, b) -> float:
    """Two-sided Mann-Whitney U p-value (continuous columns of the cohort table)."""
    return float(stats.mannwhitneyu(np.asarray(a, float), np.asarray(b, float), alternative="two-sided").pvalue)


def chi_square(a, b) -> float:
    """Pearson chi-square p-value of a categorical column across two groups (no continuity
    correction, as Pearson's test; NaN when a group or category is empty throughout)."""
    table = _contingency(a, b)
    if table is None:
        return float("nan")
    return float(stats.chi2_contingency(table, correction=False).pvalue)


PEARSON, FISHER = "Pearson chi-square", "Fisher's exact"


def categorical_test(a, b) -> tuple[float, str]:
    """The cohort table's test of a categorical column across two groups, and its name: Pearson's
    chi-square, or, for a 2x2 table with any expected count below 5 (Cochran 1954's rule, where
    the chi-square approximation is poor), Fisher's exact test (two-sided,
    ``scipy.stats.fisher_exact``). NaN when a group or category is empty throughout. Tables
    larger than 2x2 keep the chi-square (its method says so)."""
    table = _contingency(a, b)
    if table is None:
        return float("nan"), PEARSON
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0, keepdims=True) / table.sum()
    if table.shape == (2, 2) and expected.min() < 5:
        return float(stats.fisher_exact(table).pvalue), FISHER
    return float(stats.chi2_contingency(table, correction=False).pvalue), PEARSON


def _contingency(a, b) -> np.ndarray | None:
    """Groups x categories counts; None when there is no test (one category, an empty group)."""
    a, b = [str(x) for x in a], [str(x) for x in b]
    cats = sorted(set(a) | set(b))
    table = np.array([[a.count(c) for c in cats], [b.count(c) for c in cats]])
    if len(cats) < 2 or table.sum(axis=1).min() == 0:
        return None
    return table
