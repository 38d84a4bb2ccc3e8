"""Binary classification metrics as the paper reports them, with seeded, class-stratified
bootstrap CIs (``scipy.stats.bootstrap``)."""

from __future__ import annotations

import warnings

import numpy as np
from scipy.stats import bootstrap, rankdata
from sklearn.metrics import roc_auc_score, roc_curve


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-logits)) in float64; a logit below about -709 gives 0 as it is, without
    numpy's overflow warning (helper-120: "RuntimeWarning: overflow encountered in exp" on the
    console from a calibration fit on separated logits)."""
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-np.asarray(logits, np.float64)))


def binary_labels(labels, field: str = "labels") -> np.ndarray:
    """``labels`` as an int array of 0/1 (bool, 0/1 ints and 0.0/1.0 floats accepted); one
    ValueError naming ``field`` for any other value (e.g. {0, 2} or {-1, 1}, which some metrics
    read as 0/1 and others as classes of their own, or NaN)."""
    arr = np.asarray(labels)
    if arr.dtype == bool:
        return arr.astype(int).ravel()
    try:
        x = arr.astype(np.float64).ravel()
    except (TypeError, ValueError):
        raise ValueError(f"{field} must be 0/1 (got {arr.dtype} values)") from None
    bad = ~((x == 0.0) | (x == 1.0))
    if bad.any():
        shown = sorted({str(v) for v in x[bad][:1000]})[:5]
        raise ValueError(f"{field} must be 0/1; {int(bad.sum())} of {x.size} are not (values {', '.join(shown)})")
    return x.astype(int)


def finite_scores(scores, field: str = "scores") -> np.ndarray:
    """``scores`` as a float64 array; one ValueError naming ``field`` where any is NaN or
    infinite (a NaN score had counted as a negative call, or turned a CI into [0, 1])."""
    x = np.asarray(scores, np.float64).ravel()
    if bad := int(np.sum(~np.isfinite(x))):
        raise ValueError(f"{field} must be finite; {bad} of {x.size} are NaN or infinite")
    return x


def checked(labels, scores, field: str = "scores") -> tuple[np.ndarray, np.ndarray]:
    """:func:`binary_labels` and :func:`finite_scores` of one patient list, of equal length."""
    y, s = binary_labels(labels), finite_scores(scores, field)
    if len(y) != len(s):
        raise ValueError(f"labels and {field} differ in length ({len(y)} vs {len(s)})")
    return y, s


def safe_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """AUC, or NaN when only one class is present (e.g. a tiny validation batch)."""
    labels, scores = checked(labels, scores)
    if labels.size == 0 or labels.min() == labels.max():
        return float("nan")
    return float(roc_auc_score(labels, scores))


def threshold_metrics(labels: np.ndarray, probs: np.ndarray, threshold: float) -> dict[str, float]:
    """Sensitivity, specificity, accuracy and the predictive values (PPV, NPV: at these
    patients' prevalence) of ``probs >= threshold``, with the counts; NaN for a rate whose
    denominator is 0."""
    labels, probs = checked(labels, probs, "probs")
    if not np.isfinite(threshold):
        raise ValueError(f"threshold must be finite (got {threshold})")
    pred = (probs >= threshold).astype(int)
    tp = int(np.sum((pred == 1) & (labels == 1)))
    tn = int(np.sum((pred == 0) & (labels == 0)))
    fp = int(np.sum((pred == 1) & (labels == 0)))
    fn = int(np.sum((pred == 0) & (labels == 1)))
    return {
        "threshold": float(threshold),
        "sensitivity": tp / (tp + fn) if tp + fn else float("nan"),
        "specificity": tn / (tn + fp) if tn + fp else float("nan"),
        "accuracy": (tp + tn) / len(labels) if len(labels) else float("nan"),
        "ppv": tp / (tp + fp) if tp + fp else float("nan"),
        "npv": tn / (tn + fn) if tn + fn else float("nan"),
        "tp": tp,
        "tn": tn,
        "fp": fp,
        "fn": fn,
    }


def youden_threshold(labels: np.ndarray, probs: np.ndarray) -> float:
    """The probability threshold maximising Youden's J = sensitivity + specificity - 1
    (Youden 1950), for ``probs >= threshold``, chosen on validation. NaN, with a
    RuntimeWarning, where no cut-off has J > 0 (scores that do not rank the classes at all,
    or rank them backwards): no threshold is better than calling every patient one class,
    so none is chosen (sklearn's first cut-off, +inf, had been clipped to 1.0 and returned)."""
    labels, probs = checked(labels, probs, "probs")
    fpr, tpr, thr = roc_curve(labels, probs)
    j = tpr - fpr
    best = int(np.argmax(j))
    if not j[best] > 0:
        warnings.warn("Youden's J is <= 0 at every cut-off: no threshold chosen (NaN)", RuntimeWarning, stacklevel=2)
        return float("nan")
    # halfway to the next lower validation score: the same calls on validation as the score itself,
    # and no validation patient on the threshold (helper-92: one sat exactly on it, and an export
    # scoring it 8e-9 lower, within float32 rounding, had called it the other class)
    below = probs[probs < thr[best]]
    return float((thr[best] + below.max()) / 2) if below.size else float(thr[best])


# the share of bootstrap resamples that must choose a Youden threshold for its CI to be given
# (:func:`youden_threshold_ci`): the interval of the others says how the cut-off moves where one exists
CHOSEN_SHARE = 0.95


def youden_threshold_ci(
    labels: np.ndarray, probs: np.ndarray, *, n_boot: int = 2000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap CI of :func:`youden_threshold` over ``scipy.stats.bootstrap``'s
    resamples of the patients within each class (the split's positives and negatives kept): how
    far the cut-off chosen on these few validation patients moves with them (helper-104: one
    threshold, no uncertainty). A class of one patient is the same in every stratified
    resample, so its spread is unknown: NaN (helper-120: scipy's "two or more observations"
    had stopped ``evaluate``; :func:`bootstrap_auc_ci` gives DeLong's 0-1). A resample whose scores
    rank nothing (Youden's J at most 0 at every cut-off) chooses no threshold: the interval is
    the percentiles of those that choose one while they are at least :data:`CHOSEN_SHARE` of
    the resamples (one such resample of 2,000 had made it NaN, helper-120), else NaN. (nan,
    nan) without both classes or with ``n_boot`` 0."""
    labels, probs = checked(labels, probs, "probs")
    pos, neg = probs[labels == 1], probs[labels == 0]
    if not len(pos) or not len(neg) or n_boot <= 0:
        return float("nan"), float("nan")

    def threshold(p, n):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a resample with J <= 0 everywhere: NaN
            return youden_threshold(np.r_[np.ones(len(p)), np.zeros(len(n))], np.r_[p, n])

    if min(len(pos), len(neg)) == 1:  # that class's spread cannot be resampled (as bootstrap_auc_ci's)
        return float("nan"), float("nan")
    data, statistic = (pos, neg), threshold
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy's DegenerateDataWarning: a constant distribution
        res = bootstrap(
            data,
            statistic,
            n_resamples=n_boot,
            confidence_level=level,
            method="percentile",
            vectorized=False,
            rng=np.random.default_rng(seed),
        )
    chosen = np.asarray(res.bootstrap_distribution, np.float64)
    chosen = chosen[np.isfinite(chosen)]
    if len(chosen) < CHOSEN_SHARE * n_boot:
        return float("nan"), float("nan")
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(chosen, [tail, 100 - tail])
    return float(low), float(high)


def _mann_whitney_auc(pos: np.ndarray, neg: np.ndarray, axis: int = -1) -> np.ndarray:
    """AUC = P(score of a positive > score of a negative) + 0.5 P(tie), from the ranks of the
    pooled scores (Mann-Whitney U / (n1 n0)); vectorised over leading axes (scipy's
    ``bootstrap`` passes a batch of resamples)."""
    pos, neg = np.moveaxis(pos, axis, -1), np.moveaxis(neg, axis, -1)
    n1, n0 = pos.shape[-1], neg.shape[-1]
    ranks = rankdata(np.concatenate([pos, neg], axis=-1), axis=-1)  # ties get their mean rank
    return (ranks[..., :n1].sum(axis=-1) - n1 * (n1 + 1) / 2.0) / (n1 * n0)


def bootstrap_auc_ci(
    labels: np.ndarray, scores: np.ndarray, *, n_boot: int = 2000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Bootstrap CI of the AUC, resampling patients within each class (stratified: every
    resample keeps the split's positives and negatives, so each has an AUC), with
    ``scipy.stats.bootstrap``: BCa (bias-corrected and accelerated; Efron 1987), or the
    percentile interval where BCa is undefined (every resample the same AUC, e.g. perfect
    separation). (nan, nan) when a class is absent; (0, 1) when a class has one patient (its
    spread cannot be resampled: DeLong's interval for that case). Vectorised: ~0.1 s for
    2,000 resamples of a few hundred patients."""
    labels, scores = checked(labels, scores)
    pos, neg = scores[labels == 1], scores[labels == 0]
    if not len(pos) or not len(neg) or n_boot <= 0:
        return float("nan"), float("nan")
    if min(len(pos), len(neg)) == 1:
        # a class of one patient is the same in every stratified resample, so the spread of
        # that class is unknown: (0, 1), as DeLong's CI for its undefined variance (helper-120:
        # the one resample's "0.000-0.000" beside DeLong's "0.000-1.000" in one table)
        return 0.0, 1.0
    data, statistic = (pos, neg), _mann_whitney_auc
    for method in ("BCa", "percentile"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # scipy's DegenerateDataWarning: answered by the percentile fallback
            res = bootstrap(
                data,
                statistic,
                n_resamples=n_boot,
                confidence_level=level,
                method=method,
                vectorized=True,
                random_state=np.random.default_rng(seed),
            )
        lo, hi = res.confidence_interval
        if np.isfinite(lo) and np.isfinite(hi):
            return float(lo), float(hi)
    return float("nan"), float("nan")
