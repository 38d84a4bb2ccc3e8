"""Calibration: ECE, Brier, temperature scaling, decision curves on known inputs."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import brier_score_loss

from lnm_jax.evaluation import calibration as C
from lnm_jax.evaluation.metrics import sigmoid


def _cohort(n=20_000, seed=0):
    """True logits and labels drawn from them: perfectly calibrated by construction."""
    r = np.random.default_rng(seed)
    z = r.normal(0.0, 2.0, n)
    y = (r.random(n) < sigmoid(z)).astype(int)
    return z, y


def test_ece_near_zero_when_calibrated_and_large_when_overconfident():
    z, y = _cohort()
    assert C.expected_calibration_error(y, sigmoid(z)) < 0.02
    assert C.expected_calibration_error(y, sigmoid(4 * z)) > 0.08


def test_ece_hand_computed():
    y = np.array([0, 0, 1, 1])
    p = np.array([0.05, 0.15, 0.85, 0.55])  # bins 0, 1, 8, 5
    expected = (abs(0 - 0.05) + abs(0 - 0.15) + abs(1 - 0.85) + abs(1 - 0.55)) / 4
    assert C.expected_calibration_error(y, p) == pytest.approx(expected)


def test_brier_matches_sklearn():
    z, y = _cohort(500)
    assert C.brier(y, sigmoid(z)) == pytest.approx(brier_score_loss(y, sigmoid(z)))


def test_temperature_scaling_recovers_overconfidence_and_lowers_ece():
    z, y = _cohort(seed=1)
    over = 3.0 * z  # an over-confident model: logits three times too large
    val, test = slice(0, 10_000), slice(10_000, None)
    t = C.fit_temperature(y[val], over[val])
    assert t == pytest.approx(3.0, rel=0.1)
    before = C.expected_calibration_error(y[val], sigmoid(over[val]))
    after = C.expected_calibration_error(y[val], C.calibrated(over[val], t))
    assert after < before / 3
    assert C.expected_calibration_error(y[test], C.calibrated(over[test], t)) < 0.02
    # AUC is unchanged: temperature is monotone
    assert np.array_equal(np.argsort(C.calibrated(over, t)), np.argsort(sigmoid(over)))


def test_net_benefit_known_values():
    y = np.array([1, 1, 0, 0])
    p = np.array([0.9, 0.6, 0.7, 0.1])
    # t = 0.5: treat patients 0, 1, 2 -> TP 2, FP 1: 2/4 - 1/4 * 1 = 0.25
    np.testing.assert_allclose(C.net_benefit(y, p, np.array([0.5, 0.8])), [0.25, 0.25])


def test_intercept_and_slope_are_the_logistic_recalibration_fits():
    """Van Calster's mean and weak calibration: the intercept with the logit as offset (the root
    of sum(y - sigmoid(a + z)) = 0) and the slope of an unpenalised logistic regression on the
    logit, each equal to an independent fit; Wald CIs from the observed information."""
    from scipy.optimize import brentq
    from scipy.stats import norm

    r = np.random.default_rng(3)
    z = r.normal(0.0, 2.0, 600)
    y = (r.random(600) < sigmoid(0.4 + 0.6 * z)).astype(int)  # under-predicting, too extreme
    got = C.intercept_and_slope(y, z)
    a = brentq(lambda a: np.sum(y - sigmoid(a + z)), -10, 10)
    assert got["intercept"] == pytest.approx(a, abs=1e-8)
    p = sigmoid(a + z)
    se = 1 / np.sqrt(np.sum(p * (1 - p)))
    np.testing.assert_allclose(got["intercept_ci"], [a - norm.ppf(0.975) * se, a + norm.ppf(0.975) * se], atol=1e-8)
    # the slope: where the score of the two-parameter model vanishes (scipy's root finder)
    x = np.stack([np.ones_like(z), z], 1)

    def score(beta):
        return x.T @ (y - sigmoid(x @ beta))

    from scipy.optimize import fsolve

    beta = fsolve(score, [0.0, 1.0], xtol=1e-12)
    assert got["slope"] == pytest.approx(beta[1], abs=1e-7)
    assert got["slope"] < 1 and got["slope_ci"][0] < got["slope"] < got["slope_ci"][1] < 1
    assert got["intercept"] > 0  # the model under-predicts: a > 0


def test_intercept_and_slope_are_nan_where_undefined():
    one_class = C.intercept_and_slope([1, 1, 1], [0.2, 1.0, 3.0])
    assert all(np.isnan(one_class[k]) for k in ("intercept", "slope"))
    separated = C.intercept_and_slope([0, 0, 1, 1], [-1.0, -2.0, 3.0, 4.0])
    assert np.isnan(separated["slope"]) and np.isnan(separated["slope_ci"]).all()
    assert np.isfinite(separated["intercept"])  # the offset model has a finite maximum


def test_a_temperature_needs_both_classes_and_separation_is_told_apart():
    """helper-99: one-class labels gave T = 0.97 in silence; a validation split the logits
    separate sends T to its lower bound however well the model ranks (evaluate now says which)."""
    with pytest.raises(ValueError, match="both classes"):
        C.fit_temperature([1, 1, 1, 1], [0.5, 1.0, 2.0, 3.0])
    y, z = np.array([0, 0, 1, 1]), np.array([-1.0, -2.0, 3.0, 4.0])
    assert C.separated_at_zero(y, z) and C.at_bound(C.fit_temperature(y, z))
    assert not C.separated_at_zero([0, 1, 0, 1], [-1.0, 0.5, 1.0, 2.0])


@pytest.mark.parametrize(
    "labels, logits, bound, cause",
    [
        # every positive above 0, every negative below: the likelihood rises as T -> 0
        ([0, 0, 1, 1], [-1.0, -2.0, 3.0, 4.0], 0, C.SEPARATED_AT_ZERO),
        # helper-125's validation split: one positive, six negatives, every logit above 0 (the positive's the
        # highest: ranked apart at a cut-off, not at 0): the fit runs to the upper bound, every probability
        # towards 0.5; it had been said to "separate the classes, so the likelihood rises as T -> 0"
        (
            [0, 0, 0, 0, 0, 0, 1],
            [0.57, 0.62, 0.70, 0.81, 0.95, 1.02, 1.21],
            1,
            C.SUMS.format(pos=1.21, neg=0.57 + 0.62 + 0.70 + 0.81 + 0.95 + 1.02),
        ),
        # helper-126: signs right for 17 of 20, AUC 0.92, one negative at 8.0: the optimum lies above the upper
        # bound; it had been said to be signs that "call too many patients wrongly"
        (
            [1] * 5 + [0] * 15,
            [0.6, 0.8, 0.5, 0.7, -0.3] + [-0.5] * 13 + [0.4, 8.0],
            1,
            C.TOO_LARGE.format(wrong="the most confident: a negative at 8"),
        ),
        # tiny logits whose signs call 39 of 40 right: the optimum lies below the lower bound
        ([0] * 20 + [1] * 20, [-0.01] * 19 + [0.01] + [0.01] * 20, 0, C.TOO_SMALL),
        # logits of one value (helper-126: all 0 had been said to make the likelihood rise as T grows; it is flat)
        ([1, 0, 0, 1], [0.0] * 4, None, C.ONE_VALUE.format(value=0.0)),
    ],
)
def test_a_temperature_at_a_bound_is_said_by_the_bound_it_reached(labels, logits, bound, cause):
    """The cause follows the bound the fit actually reached, in words true of the logits: their
    relation to 0, the NLL's slope in 1/T at 0 (the classes' sums of logits), or one value."""
    t = C.fit_temperature(labels, logits)
    assert C.at_bound(t), t
    if bound is not None:
        assert abs(np.log(t / C.TEMPERATURE_BOUNDS[bound])) < 1e-2, t
    assert C.bound_cause(labels, logits, t) == cause
    y, z = np.asarray(labels), np.asarray(logits, float)
    if cause.startswith("the validation positives' logits sum"):  # the words' own claim, checked
        assert z[y == 1].sum() <= z[y == 0].sum()


def test_no_slope_is_said_as_tied_logits_or_separation():
    """helper-125: logits of one value (AUC 0.5) had been said to "separate the classes"."""
    assert C.no_slope_cause([0, 1, 0, 1], [0.0] * 4).startswith("the logits hold one value (0)")
    assert "separate the classes" in C.no_slope_cause([0, 0, 1, 1], [-1.0, -2.0, 3.0, 4.0])
    assert "separate the classes" in C.no_slope_cause([0, 0, 1, 1], [3.0, 4.0, -1.0, -2.0])  # reversed: as infinite
    tied = C.intercept_and_slope([0, 1, 0, 0], [0.0] * 4)
    assert np.isnan(tied["slope"]) and np.isfinite(tied["intercept"])
