"""The statistics agree with independent computations on known inputs."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps
from sklearn.metrics import roc_auc_score

from lnm_jax.evaluation import stats as S


def _scores(n=300, shift=1.0, seed=0, ties=False):
    r = np.random.default_rng(seed)
    y = (r.random(n) < 0.45).astype(int)
    s = r.standard_normal(n) + shift * y
    return y, (np.round(s, 1) if ties else s)


def _rank_auc(y, s):
    """The AUC of every row of [B, n] labels and scores at once: the Mann-Whitney U over n1 n0
    from midranks (ties count one half, as roc_auc_score counts them)."""
    ranks = sps.rankdata(s, axis=1)
    n1 = y.sum(axis=1)
    n0 = y.shape[1] - n1
    return ((ranks * y).sum(axis=1) - n1 * (n1 + 1) / 2) / (n1 * n0)


@pytest.mark.parametrize("ties", [False, True])
def test_delong_auc_matches_sklearn_and_its_se_matches_a_large_bootstrap(ties):
    y, s = _scores(ties=ties)
    auc, lo, hi = S.delong_ci(y, s, 0.95)
    assert auc == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    r = np.random.default_rng(1)
    i = np.stack([r.integers(0, len(y), len(y)) for _ in range(4000)])
    boot = _rank_auc(y[i], s[i])
    np.testing.assert_allclose(boot[:20], [roc_auc_score(y[j], s[j]) for j in i[:20]], rtol=1e-12)
    se_delong = (hi - lo) / (2 * 1.959964)
    assert se_delong == pytest.approx(np.std(boot), rel=0.08)


def test_delong_matches_the_textbook_variance_on_a_tiny_example():
    """Hand computation with the DeLong (1988) placement values, O(mn) loops."""
    y = np.array([1, 1, 1, 0, 0, 0, 0])
    s = np.array([0.9, 0.4, 0.7, 0.4, 0.2, 0.6, 0.1])
    pos, neg = s[y == 1], s[y == 0]
    psi = lambda a, b: 1.0 if a > b else 0.5 if a == b else 0.0  # noqa: E731
    v10 = np.array([np.mean([psi(p, q) for q in neg]) for p in pos])
    v01 = np.array([np.mean([psi(p, q) for p in pos]) for q in neg])
    var = np.var(v10, ddof=1) / len(pos) + np.var(v01, ddof=1) / len(neg)
    aucs, cov = S.delong_covariance(y, s[None])
    assert aucs[0] == pytest.approx(v10.mean())
    assert cov[0, 0] == pytest.approx(var)


def test_paired_delong_test():
    y, s = _scores(n=400, shift=1.2, seed=3)
    r = np.random.default_rng(4)
    same = S.delong_test(y, s, s)
    assert same["difference"] == 0 and same["p"] == 1.0
    weak = s + 2.0 * r.standard_normal(len(s))  # a much noisier copy
    t = S.delong_test(y, s, weak)
    assert t["difference"] > 0.1 and t["p"] < 1e-4
    # symmetric
    u = S.delong_test(y, weak, s)
    assert u["z"] == pytest.approx(-t["z"]) and u["p"] == pytest.approx(t["p"])


def test_permutation_p_value_of_a_perfect_and_of_a_useless_predictor():
    y = np.array([0, 1] * 20)
    acc = lambda labels, pred: float(np.mean(labels == pred))  # noqa: E731
    assert S.permutation_p_value(y, y, acc, n_permutations=999, seed=0) == pytest.approx(1 / 1000)
    r = np.random.default_rng(0)
    noise = r.integers(0, 2, len(y))
    p = S.permutation_p_value(y, noise, acc, n_permutations=999, seed=0)
    assert p > 0.05
    # seeded: reproducible
    assert p == S.permutation_p_value(y, noise, acc, n_permutations=999, seed=0)
    # fewer pairings than permutations asked (4 patients: 24): every one, exactly; a perfect
    # predictor is matched by the 2! * 2! pairings that keep each class's labels: p = 4 / 24
    small = np.array([0, 1, 0, 1])
    assert S.permutation_p_value(small, small, acc, n_permutations=999, seed=0) == pytest.approx(4 / 24)


def test_cohort_table_tests_match_hand_computations():
    a, b = [1.0, 2.5, 3.0, 4.2, 8.0], [2.0, 5.0, 6.5, 7.0, 9.0, 10.0]
    assert S.mann_whitney(a, b) == pytest.approx(sps.mannwhitneyu(a, b).pvalue)
    # Pearson chi-square by hand on a 2x2 table: [[8, 2], [3, 7]]
    g1, g2 = ["M"] * 8 + ["F"] * 2, ["M"] * 3 + ["F"] * 7
    obs = np.array([[2, 8], [7, 3]], float)  # columns sorted: F, M
    exp = obs.sum(1, keepdims=True) * obs.sum(0, keepdims=True) / obs.sum()
    chi2 = ((obs - exp) ** 2 / exp).sum()
    assert S.chi_square(g1, g2) == pytest.approx(sps.chi2.sf(chi2, 1))
    assert np.isnan(S.chi_square(["F"] * 3, ["F"] * 4))  # one category: no test


@pytest.mark.parametrize("ties", [False, True])
def test_bootstrap_ci_is_stratified_bca_and_agrees_with_delong(ties):
    """scipy's BCa bootstrap of the Mann-Whitney AUC: its statistic is sklearn's AUC (ties
    included), and its interval agrees with DeLong's to within the Monte Carlo error of 2,000
    resamples (~0.01 at this n) plus DeLong's normal approximation."""
    from lnm_jax.evaluation.metrics import _mann_whitney_auc, bootstrap_auc_ci

    y, s = _scores(ties=ties)
    assert _mann_whitney_auc(s[y == 1], s[y == 0]) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    lo, hi = bootstrap_auc_ci(y, s, n_boot=2000, seed=0)
    auc, dlo, dhi = S.delong_ci(y, s, 0.95)
    assert lo < auc < hi
    assert lo == pytest.approx(dlo, abs=0.03) and hi == pytest.approx(dhi, abs=0.03)
    assert bootstrap_auc_ci(y, s, seed=0) == (lo, hi)  # seeded


def test_bootstrap_ci_with_one_patient_of_a_class_and_with_perfect_separation():
    """Stratified resampling keeps both classes in every resample (a loop over patients
    skipped one-class resamples and biased small splits); BCa undefined -> percentile."""
    from lnm_jax.evaluation.metrics import bootstrap_auc_ci

    lo, hi = bootstrap_auc_ci([1, 0, 0, 0, 0, 0], [0.6, 0.1, 0.7, 0.3, 0.2, 0.4], seed=0)
    assert 0.0 <= lo <= 0.8 <= hi <= 1.0
    assert bootstrap_auc_ci([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == (1.0, 1.0)
    assert all(np.isnan(bootstrap_auc_ci([1, 1], [0.1, 0.2])))


def test_delong_with_one_patient_of_a_class_is_undefined_without_warnings():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's 'Degrees of freedom <= 0' reached the console
        auc, lo, hi = S.delong_ci([1, 0, 0, 0], [0.9, 0.1, 0.5, 0.3])
        p = S.delong_test([1, 0, 0, 0], [0.9, 0.1, 0.5, 0.3], [0.2, 0.1, 0.5, 0.3])["p"]
    assert (auc, lo, hi) == (1.0, 0.0, 1.0) and np.isnan(p)


def test_delong_test_with_zero_variance_is_not_testable_not_certain():
    """A perfect model against all-tied scores on 4 patients: the DeLong variance of the
    difference is 0, which had given z = inf and p = 0.0 ("p < 0.001"); no test is defined."""
    t = S.delong_test([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9], [0.5] * 4)
    assert t["difference"] == 0.5 and np.isnan(t["p"]) and np.isnan(t["z"])
    assert t["not_testable"] == "not testable (zero variance)"
    assert S.format_p(t) == "not testable (zero variance)"
    assert S.format_p(t, bare=True) == "not testable (zero variance)"
    y, s = _scores(n=200, seed=5)
    assert S.delong_test(y, s, np.arange(200.0))["not_testable"] is None
    assert S.format_p({"p": 0.0421}) == "p = 0.042"
    assert S.format_p({"p": 1e-7}) == "p < 0.001" and S.format_p({"p": None}).startswith("not testable")


def test_availability_and_report_print_an_untestable_delong_as_such():
    from lnm_jax.evaluation.availability import availability_table

    t = S.delong_test([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9], [0.5] * 4)
    summary = {"auc": 1.0, "auc_ci_delong": [1.0, 1.0]}
    result = {
        "subset": "test",
        "checkpoint": "best",
        "patterns": {
            "no_ceus": {
                "inputs": ["bmode", "us_lnm"],
                "missing_input_model": summary,
                "dedicated_model": summary,
                "delong_missing_vs_dedicated": t,
            }
        },
    }
    row = availability_table(result).splitlines()[-1]
    assert row.endswith("| +0.500 | not testable (zero variance) |")


def _fast_delong_var(y, s):
    """Sun & Xu (2014) fast DeLong variance of one score vector (after yandex's
    compare_auc_delong_xgboost), written independently of the package: midranks by hand."""

    def midrank(x):
        order = np.argsort(x, kind="mergesort")
        z, t, i = x[order], np.zeros(len(x)), 0
        while i < len(x):
            j = i
            while j < len(x) and z[j] == z[i]:
                j += 1
            t[i:j] = 0.5 * (i + j - 1) + 1
            i = j
        out = np.empty(len(x))
        out[order] = t
        return out

    y = np.asarray(y).astype(bool)
    pos, neg = s[y], s[~y]
    m, n = len(pos), len(neg)
    tz = midrank(np.r_[pos, neg])
    auc = tz[:m].sum() / m / n - (m + 1) / 2 / n
    v01 = (tz[:m] - midrank(pos)) / n
    v10 = 1 - (tz[m:] - midrank(neg)) / m
    return auc, np.var(v01, ddof=1) / m + np.var(v10, ddof=1) / n


@pytest.mark.parametrize("seed", [0, 1])
def test_delong_ci_is_the_logit_scale_interval(seed):
    """logit(AUC) +- z SE / (AUC (1 - AUC)), back-transformed (Pepe 2003; Qin & Hotilovac
    2008): asymmetric, inside (0, 1), where the clipped Wald interval reached 1.0."""
    r = np.random.default_rng(seed)
    y = np.r_[np.ones(15, int), np.zeros(15, int)]
    s = r.standard_normal(30) + 2.5 * y
    auc, var = _fast_delong_var(y, s)
    half = sps.norm.ppf(0.975) * np.sqrt(var) / (auc * (1 - auc))
    lg = np.log(auc / (1 - auc))
    got = S.delong_ci(y, s, 0.95)
    np.testing.assert_allclose(got, [auc, 1 / (1 + np.exp(-(lg - half))), 1 / (1 + np.exp(-(lg + half)))], rtol=1e-10)
    assert 0 < got[1] < got[0] < got[2] < 1
    assert S.delong_ci([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == (1.0, 1.0, 1.0)  # perfect: variance 0


BAD_LABELS = [np.array([0, 0, 2, 2]), np.array([-1, -1, 1, 1]), np.array([0.0, np.nan, 1.0, 1.0])]


def _public_metrics():
    from lnm_jax.evaluation import calibration as C
    from lnm_jax.evaluation import metrics as M
    from lnm_jax.evaluation.summary import summarise_predictions

    return {
        "safe_auc": lambda y, s: M.safe_auc(y, s),
        "bootstrap_auc_ci": lambda y, s: M.bootstrap_auc_ci(y, s, n_boot=50),
        "threshold_metrics": lambda y, s: M.threshold_metrics(y, s, 0.5),
        "youden_threshold": lambda y, s: M.youden_threshold(y, s),
        "delong_ci": lambda y, s: S.delong_ci(y, s),
        "delong_test": lambda y, s: S.delong_test(y, s, s[::-1]),
        "ece": lambda y, s: C.expected_calibration_error(y, s),
        "brier": lambda y, s: C.brier(y, s),
        "fit_temperature": lambda y, s: C.fit_temperature(y, s),
        "summarise_predictions": lambda y, s: summarise_predictions(y, s),
    }


@pytest.mark.parametrize("labels", BAD_LABELS, ids=["0-2", "minus1-1", "nan"])
def test_public_metrics_refuse_labels_other_than_0_1(labels):
    """{0, 2} had given the right AUC, a NaN bootstrap CI, a NaN sensitivity and n_positive 4."""
    s = np.array([0.2, 0.5, 0.5, 0.9])
    for name, f in _public_metrics().items():
        with pytest.raises(ValueError, match="labels must be 0/1"):
            f(labels, s)
            pytest.fail(name)


def test_public_metrics_refuse_nan_scores_and_accept_bool_and_float_labels():
    """A NaN score had given delong_ci (nan, 0.0, 1.0) and counted as a negative call."""
    y, bad = np.array([0, 0, 1, 1]), np.array([0.2, np.nan, 0.5, 0.9])
    for name, f in _public_metrics().items():
        with pytest.raises(ValueError, match="must be finite"):
            f(y, bad)
            pytest.fail(name)
    s = np.array([0.2, 0.6, 0.5, 0.9])
    from lnm_jax.evaluation import metrics as M

    for labels in (y.astype(bool), y.astype(float)):
        assert M.safe_auc(labels, s) == roc_auc_score(y, s) == 0.75
        assert M.threshold_metrics(labels, s, 0.5)["sensitivity"] == 1.0
        assert M.bootstrap_auc_ci(labels, s, n_boot=50) == M.bootstrap_auc_ci(y, s, n_boot=50)


def test_youden_threshold_is_nan_where_no_cut_off_beats_chance():
    """J = 0 at every cut-off had returned 1.0 (sklearn's +inf first cut-off, clipped)."""
    from sklearn.metrics import roc_curve

    from lnm_jax.evaluation import metrics as M

    with pytest.warns(RuntimeWarning, match="no threshold"):
        assert np.isnan(M.youden_threshold([1, 0], [0.2, 0.8]))
    y, s = _scores(n=120, seed=2)
    p = 1 / (1 + np.exp(-s))
    fpr, tpr, thr = roc_curve(y, p)
    # J's optimal cut-off, moved halfway to the next lower score: the same calls on these patients,
    # none of them on the threshold (helper-92: an export's 8e-9 had called that one otherwise)
    t, optimal = M.youden_threshold(y, p), thr[np.argmax(tpr - fpr)]
    assert t == (optimal + p[p < optimal].max()) / 2 and not np.any(p == t)
    np.testing.assert_array_equal(p >= t, p >= optimal)


def test_categorical_test_uses_fisher_where_an_expected_count_is_below_5():
    p, method = S.categorical_test(["M"] * 8 + ["F"] * 2, ["M"] * 3 + ["F"] * 7)  # expected 4.5 and 5.5
    assert method == "Fisher's exact" and p == pytest.approx(sps.fisher_exact([[2, 8], [7, 3]]).pvalue)
    a, b = ["M"] * 30 + ["F"] * 20, ["M"] * 15 + ["F"] * 35  # every expected count >= 20
    p, method = S.categorical_test(a, b)
    assert method == "Pearson chi-square"
    assert p == pytest.approx(sps.chi2_contingency([[20, 30], [35, 15]], correction=False).pvalue)


def test_the_split_a_threshold_was_chosen_on_says_its_figures_there_are_in_sample():
    """evaluate's console lines: the val line's figures at the Youden threshold (chosen on val)
    are marked in-sample; the test line's are not (helper-65: the README's val line was read as
    an out-of-sample sensitivity)."""
    from lnm_jax.evaluation.summary import format_summary, summarise_predictions

    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 20)
    logits = rng.normal(size=40) + 1.5 * labels
    s = summarise_predictions(labels, logits, threshold=0.5, n_boot=0)
    val, test = (format_summary(name, s, threshold_rule="youden") for name in ("val", "test"))
    assert "@youden(0.50, in-sample) sens" in val and "@youden(0.50) sens" in test


def test_subgroup_rows_split_numbers_at_the_median_and_score_each_level():
    """The card's subgroups (helper-92: none had been given though the manifest has age, sex
    and nodule size): each level of a categorical column and each half of a number column at
    its median, with n, positives and the AUC of exactly those patients; a subgroup of one
    class has no AUC; a column of one level, or of more levels than a test split can score,
    gives no row."""
    from types import SimpleNamespace

    from sklearn.metrics import roc_auc_score

    from lnm_jax.evaluation.subgroups import subgroup_rows

    rng = np.random.default_rng(0)
    n = 40
    ages = rng.integers(20, 80, n)
    patients = [
        SimpleNamespace(
            patient_id=f"p{i}",
            lnm=i % 2,
            us_lnm=1 if i < 4 else 0,
            has=lambda name: True,
            metadata={"sex": "FM"[i % 3 == 0], "age": str(ages[i]), "site": f"s{i}", "scanner": "A"},
        )
        for i in range(n)
    ]
    cohort = SimpleNamespace(patients=patients, metadata_columns=("sex", "age", "site", "scanner"))
    ids, y, s = [p.patient_id for p in patients], np.arange(n) % 2, rng.standard_normal(n) + np.arange(n) % 2
    rows = {(r["variable"], r["level"]): r for r in subgroup_rows(cohort, ids, y, s)}
    male = np.array([i % 3 == 0 for i in range(n)])
    assert rows[("sex", "M")]["n"] == male.sum() and rows[("sex", "M")]["auc"] == pytest.approx(
        roc_auc_score(y[male], s[male])
    )
    m = np.median(ages)
    young = ages <= m
    assert rows[("age", f"<= {m:g}")]["n"] == young.sum()
    assert rows[("age", f"<= {m:g}")]["auc"] == pytest.approx(roc_auc_score(y[young], s[young]))
    flag1 = rows[("us_lnm", "1")]
    assert flag1["n"] == 4 and flag1["auc"] is not None  # p0-p3: both classes
    assert not any(v in ("site", "scanner", "has_bmode") for v, _ in rows)  # 40 levels; one level


def test_cv_auc_ci_is_ledells_influence_curve_interval_on_the_logit_scale():
    """The mean of the folds' AUCs and SE sqrt(mean_v mean_i IC_i^2 / n), IC_i computed here
    patient by patient as LeDell et al. (2015) define it (cvAUC's .IC: positives' fraction of
    the fold's negatives below, negatives' of positives above, minus the fold's AUC, weighted by
    the inverse class fractions of all patients), the interval on the logit scale. Two folds
    whose models' scores are offset by 5 rank apart when pooled: the pooled AUC falls, the
    folds' mean does not."""
    from scipy.stats import norm
    from sklearn.metrics import roc_auc_score

    from lnm_jax.evaluation.stats import cv_auc_ci

    r = np.random.default_rng(4)
    ys = [r.permutation(np.r_[np.ones(n1, int), np.zeros(n0, int)]) for n1, n0 in ((9, 21), (11, 19), (10, 20))]
    ss = [y * 1.2 + r.standard_normal(len(y)) + 5 * k for k, y in enumerate(ys)]
    n, p1 = sum(len(y) for y in ys), np.mean(np.concatenate(ys))
    aucs, squares = [], []
    for y, s in zip(ys, ss):
        auc = roc_auc_score(y, s)
        ic = [
            ((np.mean(s[y == 0] < s[i]) - auc) / p1) if y[i] else ((np.mean(s[y == 1] > s[i]) - auc) / (1 - p1))
            for i in range(len(y))
        ]
        aucs.append(auc)
        squares.append(np.mean(np.square(ic)))
    cv, se = np.mean(aucs), np.sqrt(np.mean(squares) / n)
    logit, half = np.log(cv / (1 - cv)), norm.ppf(0.975) * se / (cv * (1 - cv))
    want = (cv, 1 / (1 + np.exp(-(logit - half))), 1 / (1 + np.exp(-(logit + half))))
    np.testing.assert_allclose(cv_auc_ci(ys, ss), want, rtol=1e-12)
    assert roc_auc_score(np.concatenate(ys), np.concatenate(ss)) < cv - 0.1
    with pytest.raises(ValueError, match="fold 1"):
        cv_auc_ci([ys[0], np.zeros(30, int)], ss[:2])


def test_a_summary_holds_the_keys_its_schema_names_in_that_order():
    from lnm_jax.evaluation.summary import KEYS, summarise_predictions

    y = np.array([0, 1] * 15)
    z = np.linspace(-2, 2, 30) + y
    s = summarise_predictions(y, z, threshold=0.5, temperature=1.2, n_boot=50)
    assert tuple(s) == KEYS
    assert set(summarise_predictions(y, z, calibration=False)) <= set(KEYS)


def test_a_cut_off_is_never_printed_as_0_or_1_when_it_is_not():
    """helper-103: a Youden threshold of 0.99966 was printed "1.00" and "1.000" (applied as
    prob >= 1.000 it called 3 patients positive where it calls 79)."""
    from lnm_jax.evaluation.summary import threshold_text

    assert threshold_text(0.99966) == "0.9997" and threshold_text(0.99966, 2) == "0.9997"
    assert threshold_text(0.000123) == "0.0001" and threshold_text(0.662) == "0.662"
    assert threshold_text(0.5, 2) == "0.50" and threshold_text(1.0) == "1.000"


def test_an_undefined_calibration_slope_is_said_so_not_printed_as_nan():
    from lnm_jax.evaluation.summary import format_summary, summarise_predictions

    y = np.array([0, 0, 0, 1, 1, 1])
    s = summarise_predictions(y, np.array([-3.0, -2.0, -1.0, 1.0, 2.0, 3.0]))  # separated: no finite slope
    line = format_summary("test", s)
    assert "slope undefined (one class, logits that separate the classes, or logits of one value)" in line
    assert "nan" not in line


def test_rates_at_a_cut_off_carry_wilson_intervals_and_predictive_values():
    """helper-104 (CLAIM 36): sensitivity and specificity had no CI, PPV and NPV were not given."""
    from lnm_jax.evaluation import metrics as M
    from lnm_jax.evaluation.summary import with_intervals

    y = np.array([1] * 12 + [0] * 28)
    p = np.r_[np.linspace(0.3, 0.9, 12), np.linspace(0.05, 0.6, 28)]
    m = with_intervals(M.threshold_metrics(y, p, 0.5))
    tp, fp, tn, fn = m["tp"], m["fp"], m["tn"], m["fn"]
    assert m["ppv"] == tp / (tp + fp) and m["npv"] == tn / (tn + fn)
    z = 1.959963984540054

    def wilson(k, n):  # Wilson 1927, the closed form
        c, h = (k + z * z / 2) / (n + z * z), z * np.sqrt(k * (n - k) / n + z * z / 4) / (n + z * z)
        return [c - h, c + h]

    for rate, (k, n) in {"sensitivity": (tp, tp + fn), "specificity": (tn, tn + fp), "ppv": (tp, tp + fp)}.items():
        np.testing.assert_allclose(m[f"{rate}_ci"], wilson(k, n), rtol=1e-9)
    empty = with_intervals(M.threshold_metrics(y, p, 0.999))  # nobody called positive: PPV undefined
    assert np.isnan(empty["ppv"]) and np.isnan(empty["ppv_ci"]).all()


def test_the_youden_thresholds_bootstrap_interval():
    """helper-104: one cut-off chosen on a few validation patients, no uncertainty said. The
    interval holds the threshold, narrows with more patients, repeats with its seed."""
    from lnm_jax.evaluation import metrics as M

    r = np.random.default_rng(0)

    def sample(n):
        y = np.r_[np.ones(n), np.zeros(n)].astype(int)
        return y, 1 / (1 + np.exp(-(r.normal(0, 1.5, 2 * n) + 3 * (y - 0.5))))

    y, p = sample(40)
    lo, hi = M.youden_threshold_ci(y, p, n_boot=500)
    assert lo <= M.youden_threshold(y, p) <= hi
    assert (lo, hi) == M.youden_threshold_ci(y, p, n_boot=500)
    big = M.youden_threshold_ci(*sample(400), n_boot=500)
    assert big[1] - big[0] < hi - lo
    assert np.isnan(M.youden_threshold_ci(np.ones(5, int), np.linspace(0, 1, 5))).all()
    # helper-120: a class of one patient (a small cohort's validation split) had stopped evaluate
    # with scipy's "two or more observations"; its spread cannot be resampled: no interval
    one = np.r_[1, np.zeros(9)].astype(int), np.r_[0.8, np.linspace(0.1, 0.9, 9)]
    assert np.isnan(M.youden_threshold_ci(*one, n_boot=500)).all()
    assert np.isnan(M.youden_threshold_ci(1 - one[0], one[1], n_boot=500)).all()
    # one resample of 2,000 that chooses no threshold (J <= 0 at every cut-off) had made the
    # interval NaN, so that small cohorts' cards said "---": given over those that choose one
    r = np.random.default_rng(1)
    y = np.r_[np.ones(4), np.zeros(6)].astype(int)
    p = 1 / (1 + np.exp(-(r.normal(0, 1.5, 10) + 1.5 * (y - 0.5))))
    lo, hi = M.youden_threshold_ci(y, p)
    assert lo <= M.youden_threshold(y, p) <= hi, (lo, hi)
