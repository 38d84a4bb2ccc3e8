"""Calibration of P(LNM): expected calibration error, Brier score, temperature scaling,
reliability and decision curves. Clinicians act on the probability, not only on the ranking
that the AUC measures."""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar
from sklearn.metrics import brier_score_loss

from lnm_jax.evaluation.metrics import checked, sigmoid
from lnm_jax.names import UPDATE_CHOICES


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
    """Mean squared difference between P(LNM) and the 0/1 label (Brier 1950; scikit-learn's
    ``brier_score_loss``); 0 is perfect, 0.25 a constant 0.5."""
    y, p = _probabilities(labels, probs)
    return float(brier_score_loss(y.astype(int), p))


# the temperature's search bounds and the test of a fit that stopped at one: in lnm_jax.serving,
# which an export carries (its predict leaves such a temperature's column out)
from lnm_jax.exported import TEMPERATURE_BOUNDS, at_bound  # noqa: E402, F401


def fit_temperature(labels: np.ndarray, logits: np.ndarray) -> float:
    """The temperature T minimising the validation NLL of sigmoid(logit / T) (Guo et al. 2017),
    searched in :data:`TEMPERATURE_BOUNDS` (check :func:`at_bound`). ValueError where the labels
    hold one class (the NLL then falls as T moves toward a bound or 0 and says nothing of
    calibration: helper-99 found T = 0.97 returned in silence)."""
    y, z = checked(labels, logits, "logits")
    if len(y) == 0 or y.min() == y.max():
        raise ValueError(f"a calibration temperature needs both classes; these {len(y)} labels hold one")
    y = y.astype(float)

    def nll(log_t):
        s = z / np.exp(log_t)
        return float(np.mean(np.logaddexp(0.0, s) - y * s))

    res = minimize_scalar(nll, bounds=tuple(np.log(TEMPERATURE_BOUNDS)), method="bounded")
    return float(np.exp(res.x))


def calibrated(logits: np.ndarray, temperature: float) -> np.ndarray:
    """sigmoid(logit / T), float64 of ``logits``' shape."""
    return sigmoid(np.asarray(logits, float) / temperature)


def separated_at_zero(labels: np.ndarray, logits: np.ndarray) -> bool:
    """True where every positive's logit is above 0 and every negative's below (both classes
    present): each patient called right at probability 0.5, so the likelihood of
    sigmoid(logit / T) rises as T -> 0 and no finite temperature maximises it (a fit stops at
    its lower bound however well the model ranks)."""
    y, z = checked(labels, logits, "logits")
    pos, neg = z[y == 1], z[y == 0]
    return bool(pos.size and neg.size and pos.min() > 0 > neg.max())


# why a fitted temperature stopped at a search bound (helper-99: a validation AUC of 1.000 had been told its
# logits "carry little ranking"; helper-125: a fit that ran to the upper bound had been told the logits "separate
# the classes, so the likelihood rises as T -> 0"; helper-126: one negative scored 8.0 among logits whose signs
# were mostly right had been told "the signs call too many patients wrongly"). The NLL of sigmoid(u * logit) is
# convex in u = 1/T, with slope (sum of the negatives' logits - sum of the positives') / 2n at u = 0: where the
# positives' logits sum to no more than the negatives', the fit runs to T -> infinity.
SEPARATED_AT_ZERO = (
    "the validation logits separate the classes at 0 (every positive's above, every negative's below), so the "
    "likelihood rises as T -> 0 and has no finite maximum (a few validation patients, or an overfitted model)"
)
TOO_SMALL = (
    "the likelihood is highest below the lower bound: the validation logits are far smaller than the way their "
    "signs call the patients warrants"
)
SUMS = (
    "the validation positives' logits sum to {pos:.3g}, no more than the negatives' {neg:.3g}, so the likelihood "
    "rises as T grows, every probability towards 0.5 (a temperature scales logits and cannot shift them): logits "
    "above 0 for most patients of a split with few positives, or a few negatives scored confidently high"
)
TOO_LARGE = (
    "the likelihood is highest above the upper bound: the validation logits are far larger than the way they rank "
    "the patients warrants, confident wrong calls outweighing the right ones ({wrong})"
)
ONE_VALUE = "the validation logits hold one value ({value:.4g}): a temperature has no ranking to calibrate"


def bound_cause(labels: np.ndarray, logits: np.ndarray, temperature: float) -> str:
    """Why ``temperature``, fitted to ``labels`` and ``logits`` (:func:`fit_temperature`) and
    stopped at a search bound (:func:`at_bound`), has no finite optimum inside, in words true of
    these logits: of one value (:data:`ONE_VALUE`); at the lower bound, logits
    :func:`separated_at_zero` (:data:`SEPARATED_AT_ZERO`) or too small for their calls
    (:data:`TOO_SMALL`); at the upper one, positives' logits that sum to no more than the
    negatives' (:data:`SUMS`, the NLL's slope in 1/T at 0) or logits too large for their ranking
    (:data:`TOO_LARGE`)."""
    y, z = checked(labels, logits, "logits")
    if z.size and z.min() == z.max():
        return ONE_VALUE.format(value=float(z[0]))
    lo, hi = TEMPERATURE_BOUNDS
    if abs(np.log(temperature / lo)) < abs(np.log(temperature / hi)):
        return SEPARATED_AT_ZERO if separated_at_zero(y, z) else TOO_SMALL
    pos, neg = float(z[y == 1].sum()), float(z[y == 0].sum())
    if pos <= neg:
        return SUMS.format(pos=pos, neg=neg)
    wrong = np.where(y == 1, -z, z)  # how far each logit lies on its wrong side of 0
    k = int(np.argmax(wrong))
    said = f"the most confident: a {'positive' if y[k] == 1 else 'negative'} at {z[k]:.3g}" if wrong[k] > 0 else "none"
    return TOO_LARGE.format(wrong=said)


def no_slope_cause(labels: np.ndarray, logits: np.ndarray) -> str:
    """Why a logistic fit on ``logits`` (logistic recalibration's slope, the calibration slope)
    has no finite estimate for ``labels`` of both classes, in words: logits of one value leave
    no slope to fit (helper-125: tied scores had been said to "separate the classes"); logits
    that separate the classes at some cut-off (in either direction) give an infinite one."""
    y, z = checked(labels, logits, "logits")
    if z.size and z.min() == z.max():
        return f"the logits hold one value ({z[0]:.4g}), so logistic recalibration has no slope to fit"
    pos, neg = z[y == 1], z[y == 0]
    if pos.size and neg.size and (pos.min() >= neg.max() or pos.max() <= neg.min()):
        return "the logits separate the classes, so logistic recalibration has no finite slope"
    return "the logistic recalibration does not converge on these patients"


def _logistic_fit(y: np.ndarray, x: np.ndarray, offset: np.ndarray, iters: int = 100):
    """Maximum-likelihood coefficients of logit P(y = 1) = offset + x @ beta by Newton-Raphson
    with step halving, and their covariance (the inverse observed information); None where it
    does not converge (separation: the likelihood has no finite maximum)."""
    beta = np.zeros(x.shape[1])

    def loglik(b):
        return _loglik(y, offset + x @ b)

    ll = loglik(beta)
    for _ in range(iters):
        p = sigmoid(offset + x @ beta)
        info = x.T @ (x * (p * (1 - p))[:, None])
        try:
            step = np.linalg.solve(info, x.T @ (y - p))
        except np.linalg.LinAlgError:
            return None
        for _ in range(50):  # the log-likelihood is concave: a shorter step along Newton's rises
            new = loglik(beta + step)
            if new >= ll - 1e-12:
                break
            step = step / 2
        beta, ll = beta + step, new
        if np.max(np.abs(step)) < 1e-10:
            p = sigmoid(offset + x @ beta)
            info = x.T @ (x * (p * (1 - p))[:, None])
            if not np.all(np.isfinite(beta)) or np.linalg.cond(info) > 1e12:
                return None
            return beta, np.linalg.inv(info)
    return None


def intercept_and_slope(labels: np.ndarray, logits: np.ndarray, level: float = 0.95) -> dict:
    """Van Calster et al.'s mean and weak calibration (J Clin Epidemiol 2016;74:167-176; Cox,
    Biometrika 1958) of the probabilities sigmoid(``logits``), each with a Wald CI at ``level``
    from the observed information:

    * ``intercept``: calibration-in-the-large, a in logit P(y = 1) = a + logit (the slope fixed
      at 1): 0 where the mean probability matches the observed rate, < 0 where the model
      over-predicts.
    * ``slope``: b in logit P(y = 1) = a' + b * logit: 1 for well-spread predictions, < 1 where
      they are too extreme (overfitting), > 1 where too modest.

    ``intercept_ci``, ``slope_ci``: [lo, hi]. NaN (each) where the labels hold one class or the
    logistic fit does not converge (predictions that separate the classes: the slope is then
    infinite; predictions of one value: it has none, :func:`no_slope_cause`)."""
    from scipy.stats import norm  # noqa: PLC0415

    y, z = checked(labels, logits, "logits")
    y = y.astype(float)
    nan = {"intercept": np.nan, "intercept_ci": [np.nan] * 2, "slope": np.nan, "slope_ci": [np.nan] * 2}
    if len(y) == 0 or y.min() == y.max():
        return nan
    q = norm.ppf(0.5 + level / 2)
    out = dict(nan)
    if (fit := _logistic_fit(y, np.ones((len(y), 1)), z)) is not None:
        a, se = float(fit[0][0]), float(np.sqrt(fit[1][0, 0]))
        out.update(intercept=a, intercept_ci=[float(a - q * se), float(a + q * se)])
    if (fit := _logistic_fit(y, np.stack([np.ones_like(z), z], axis=1), np.zeros_like(z))) is not None:
        b, se = float(fit[0][1]), float(np.sqrt(fit[1][1, 1]))
        out.update(slope=b, slope_ci=[float(b - q * se), float(b + q * se)])
    return out


def _loglik(y: np.ndarray, eta: np.ndarray) -> float:
    """The Bernoulli log-likelihood of labels ``y`` under logits ``eta``."""
    return float(np.sum(y * eta - np.logaddexp(0.0, eta)))


def site_update(labels: np.ndarray, logits: np.ndarray, method: str = "closed-test", alpha: float = 0.05) -> dict:
    """The update of probabilities sigmoid(``logits``) to a site whose patients' ``labels`` they
    are, ``sigmoid(intercept + slope * logit)``, by ``method`` (:data:`lnm_jax.names.UPDATE_CHOICES`):

    * ``none``: the model as it is (0, 1);
    * ``intercept``: recalibration in the large, (a, 1), a the calibration intercept with the
      logit as offset (:func:`intercept_and_slope`);
    * ``logistic``: logistic recalibration, (a', b), the intercept and slope of a logistic fit on
      the logit;
    * ``closed-test``: the simplest of these the site's patients support, by Vergouwe et al.'s
      closed testing procedure (Stat Med 2017;36:4529-4539) at level ``alpha``: logistic
      recalibration against the model (likelihood ratio, 2 df); where it fits better, against
      recalibration in the large (1 df); ``none`` where the first test does not reject, so a
      site of few patients keeps the model rather than an update fitted to its noise.

    A logistic update with slope <= 0 is not offered (it would reverse the model's ranking: the
    model does not rank this site's patients): ``intercept`` is taken instead and ``note`` says
    why. Where the logits separate the classes (or hold one value) logistic recalibration has no
    finite slope (:func:`no_slope_cause`): the closed test then compares the intercept update
    with the model (1 df), and a logistic update asked for is the intercept's, ``note`` saying
    so (helper-115: no update had been given at all, even one asked for). Returns ``{"method",
    "chosen_by", "intercept", "slope", "closed_test": {"p_recalibration", "p_slope" (None under
    separation), "alpha", "loglik": {method: value}}, "note"}``; ValueError for an unknown
    method, labels of one class, or an intercept's fit that does not converge."""
    from scipy.stats import chi2  # noqa: PLC0415

    if method not in UPDATE_CHOICES:
        raise ValueError(f"update method {method!r}: one of {', '.join(UPDATE_CHOICES)}")
    y, z = checked(labels, logits, "logits")
    y = y.astype(float)
    if len(y) == 0 or y.min() == y.max():
        raise ValueError("an update needs both classes among the site's patients")
    fits = {"none": (0.0, 1.0)}
    with np.errstate(over="ignore"):  # (a fit that diverges under separation: its exp overflows, then None)
        if (fit := _logistic_fit(y, np.ones((len(y), 1)), z)) is not None:
            fits["intercept"] = (float(fit[0][0]), 1.0)
        if (fit := _logistic_fit(y, np.stack([np.ones_like(z), z], axis=1), np.zeros_like(z))) is not None:
            fits["logistic"] = (float(fit[0][0]), float(fit[0][1]))
    if "intercept" not in fits:
        raise ValueError("the intercept update does not converge on these patients")
    ll = {m: _loglik(y, a + b * z) for m, (a, b) in fits.items()}
    chosen_by = "closed test" if method == "closed-test" else "given"
    asked = method
    note = None
    if "logistic" in fits:
        p_any = float(chi2.sf(max(0.0, 2 * (ll["logistic"] - ll["none"])), 2))
        p_slope = float(chi2.sf(max(0.0, 2 * (ll["logistic"] - ll["intercept"])), 1))
        if method == "closed-test":
            method = "none" if p_any >= alpha else "logistic" if p_slope < alpha else "intercept"
        if method == "logistic" and fits["logistic"][1] <= 0:
            note = (
                f"the logistic recalibration's slope is {fits['logistic'][1]:.2f}, which would reverse the model's "
                "ranking (it does not rank this site's patients): the intercept update is taken instead"
            )
            method = "intercept"
    else:  # no finite slope (logits that separate the classes, or of one value): the intercept against the model (1 df)
        p_any, p_slope = float(chi2.sf(max(0.0, 2 * (ll["intercept"] - ll["none"])), 1)), None
        if method == "closed-test":
            method = "intercept" if p_any < alpha else "none"
        if method == "logistic" or chosen_by == "closed test":
            note = no_slope_cause(y, z) + (
                ": the closed test compared the intercept update with the model as it is (1 df)"
                if chosen_by == "closed test"
                else ": the intercept update is taken instead"
            )
            method = "intercept" if method == "logistic" else method
    a, b = fits[method]
    return {
        "method": method,
        "chosen_by": chosen_by,
        "asked": asked,  # the method asked for (or "closed-test"): another than "method" where it could not be applied
        "intercept": a,
        "slope": b,
        # p_recalibration: logistic recalibration (2 df), or under separation the intercept (1 df), against the
        # model; p_slope: the slope against the intercept update (None under separation)
        "closed_test": {"p_recalibration": p_any, "p_slope": p_slope, "alpha": alpha, "loglik": ll},
        "note": note,
    }


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
