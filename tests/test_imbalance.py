"""Imbalanced cohorts: class-weighted BCE (train.pos_weight) and evaluate's warnings when the
0.5 threshold misleads."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from lnm_jax.config import base_config, config_problems
from lnm_jax.evaluation.evaluate import MIN_PER_CLASS, imbalance_warnings, small_split_warnings
from lnm_jax.training.steps import bce_loss, resolve_pos_weight, step_options


def test_pos_weight_multiplies_each_positive_term_and_averages_over_rows():
    """PyTorch's BCEWithLogitsLoss(pos_weight=w): -mean(w y log s(z) + (1 - y) log(1 - s(z)))."""
    z = np.array([0.3, -1.2, 2.0, 0.0, -0.4])
    y = np.array([1.0, 0.0, 1.0, 0.0, 1.0])
    valid = np.array([1.0, 1.0, 1.0, 1.0, 0.0])  # the last row is padding
    s = 1 / (1 + np.exp(-z))
    terms = -(3.0 * y * np.log(s) + (1 - y) * np.log(1 - s))
    expected = np.sum(terms * valid) / valid.sum()
    got = float(bce_loss(jnp.asarray(z), jnp.asarray(y), jnp.asarray(valid), 3.0))
    assert got == pytest.approx(expected, rel=1e-6)  # float32 arithmetic on five terms
    assert float(bce_loss(jnp.asarray(z), jnp.asarray(y), jnp.asarray(valid))) == pytest.approx(
        np.sum(-(y * np.log(s) + (1 - y) * np.log(1 - s)) * valid) / valid.sum(), rel=1e-6
    )


def test_balanced_pos_weight_is_the_training_negatives_over_positives():
    assert resolve_pos_weight("balanced", [1, 1, 1, 1, 1, 0]) == pytest.approx(0.2)
    assert resolve_pos_weight("balanced", [1, 0, 0, 0]) == pytest.approx(3.0)
    assert resolve_pos_weight(2, [1, 0]) == 2.0
    with pytest.raises(ValueError, match="both classes"):
        resolve_pos_weight("balanced", [1, 1])


def test_step_options_are_the_configs_loss_and_floor():
    """What a run's loop passes to make_train_step, from the config (docs/python.md (c) builds
    its step with it: built from the optimiser alone, a small-cohort config's step had lost its
    per-input heads' loss and the heads' plateau floor)."""
    from lnm_jax.config import small_cohort_config

    c = small_cohort_config()
    c.train.pos_weight, c.train.lesion_loss_weight = "balanced", 0.5
    assert step_options(c, [1, 0, 0, 0]) == dict(
        seed=c.seed,
        aux_loss_weight=c.train.aux_loss_weight,
        lesion_loss_weight=0.5,
        pos_weight=3.0,
        head_min_scale=c.train.plateau.head_min_scale,
    )
    assert c.train.aux_loss_weight > 0 and c.train.plateau.head_min_scale > 0
    assert step_options(base_config(), [1, 1]) == dict(
        seed=base_config().seed, aux_loss_weight=0.0, lesion_loss_weight=0.0, pos_weight=1.0, head_min_scale=0.0
    )


def test_pos_weight_config_takes_a_number_or_balanced():
    c = base_config()
    assert not config_problems(c)
    c.train.pos_weight = "balanced"
    assert not config_problems(c)
    for bad in ("balance", -1.0, 0):
        c.train.pos_weight = bad
        assert any(p.startswith("train.pos_weight:") for p in config_problems(c))


def _split(sens, spec, n=50, n_pos=40):
    return {"n": n, "n_positive": n_pos, "at_0.5": {"sensitivity": sens, "specificity": spec}}


def test_evaluate_warns_when_a_class_is_never_called_and_names_the_youden_threshold():
    c = base_config()
    result = {"youden_threshold_from_val": 0.83, "splits": {"val": _split(1.0, 0.0), "test": _split(0.9, 0.4)}}
    warnings = imbalance_warnings(result, [1] * 83 + [0] * 17, c)
    assert len(warnings) == 2
    assert "prevalence is 0.830" in warnings[0]
    assert warnings[1].startswith("val: at 0.5 every patient called positive (sensitivity 1.000, specificity 0.000)")
    assert all("0.830" in w and "pos_weight=balanced" in w for w in warnings)
    c.train.pos_weight = "balanced"  # already weighted: not suggested again
    assert "pos_weight" not in imbalance_warnings(result, [1, 0], c)[0]
    # helper-120: one missed positive and 7 of 7 negatives called positive had been "every patient
    # called negative" and "every patient called positive" at once: each said as it is
    said = imbalance_warnings({"splits": {"test": _split(0.0, 0.0, 8, 1), "val": _split(0.0, 0.4)}}, [1, 0], c)
    assert said[0].startswith("test: at 0.5 every call wrong: each positive patient called negative, each negative"), (
        said
    )
    assert said[1].startswith("val: at 0.5 no positive patient called positive (sensitivity 0.000, specificity 0.400)")
    balanced = {"youden_threshold_from_val": 0.5, "splits": {"test": _split(0.7, 0.8)}}
    assert imbalance_warnings(balanced, [1, 0, 1, 0], c) == []


def test_evaluate_warns_of_an_auc_over_few_patients_of_a_class():
    """helper-57: "AUC 1.000 (1.000-1.000)" on 4 test patients, unsaid. A split with fewer than
    MIN_PER_CLASS patients of either class is named with its pairs; a larger one is not."""
    result = {"splits": {"val": {"n": 40, "n_positive": 20}, "test": {"n": 5, "n_positive": 2}}}
    assert small_split_warnings(result) == [
        "test: 2 positive and 3 negative patients: its AUC rests on 6 pair(s), and its CIs understate what so few "
        "patients leave open (at perfect separation they have zero width)"
    ]
    # a class of one patient: neither CI can be estimated (helper-120: DeLong's 0-1 beside the
    # bootstrap's 0.000-0.000 in one table, and "understate" of a 0-1 interval)
    (one,) = small_split_warnings({"splits": {"test": {"n": 4, "n_positive": 1}}})
    assert one.endswith("its AUC's CIs cannot be estimated with a class of one patient (given as 0-1)"), one
    from lnm_jax.evaluation.metrics import bootstrap_auc_ci
    from lnm_jax.evaluation.stats import delong_ci

    y, s = np.array([1, 0, 0, 0]), np.array([0.1, 0.2, 0.3, 0.4])
    assert bootstrap_auc_ci(y, s) == delong_ci(y, s)[1:] == (0.0, 1.0)
    assert MIN_PER_CLASS == 10 and not small_split_warnings({"splits": {"test": {"n": 20, "n_positive": 10}}})
    # a small validation split: what was fitted on it is said too (helper-99)
    (val,) = small_split_warnings({"splits": {"val": {"n": 5, "n_positive": 3}}})
    assert val.endswith("; the Youden threshold and the calibration temperature were fitted on these patients alone")


def test_validate_warns_about_prevalence_unless_positives_are_weighted():
    from types import SimpleNamespace

    from lnm_jax.preflight import prevalence_warning

    c = base_config()
    skewed = SimpleNamespace(labels=[1] * 83 + [0] * 17 + [None])
    line = prevalence_warning(skewed, c)
    assert "prevalence 0.830" in line and "pos_weight=balanced" in line
    assert prevalence_warning(SimpleNamespace(labels=[1, 0, 1, 0]), c) is None
    c.train.pos_weight = "balanced"
    assert prevalence_warning(skewed, c) is None


def test_a_flag_that_cannot_teach_or_copies_the_label_is_warned_of():
    """helper-120: a US-LNM column of one value, blank for everyone, or equal to the label for
    every patient had been said OK by validate (the last then scored AUC 1.000, p 0.002, in
    reproduce, unsaid). Each is warned of; a model without the flag hears nothing of it."""
    from types import SimpleNamespace

    from lnm_jax.preflight import flag_warnings

    def cohort(flags, labels):
        return SimpleNamespace(patients=[SimpleNamespace(us_lnm=f, lnm=y) for f, y in zip(flags, labels)])

    labels = [1, 0, 0, 1, 0, 1, 0, 0]
    (said,) = flag_warnings(cohort([0] * 8, labels), None)
    assert said.startswith("us_lnm is 0 for every patient that has it (8): a model learns nothing from it"), said
    assert flag_warnings(cohort([None] * 8, labels), None)[0].startswith("no patient has a us_lnm flag")
    (said,) = flag_warnings(cohort(labels, labels), True)
    assert said.startswith("us_lnm equals the label for every labelled patient (8): the label column copied"), said
    assert "is the opposite of the label" in flag_warnings(cohort([1 - y for y in labels], labels), True)[0]
    assert flag_warnings(cohort(labels, labels), True, labelled=False) == []
    assert flag_warnings(cohort([0] * 8, labels), False) == []
    assert flag_warnings(cohort([1, 0, 1, 1, 0, 0, 0, 0], labels), True) == []  # a flag that agrees mostly
    # equal to the label for all but one of 60 (helper-120): warned of with its counts; 48 of 60 is a flag
    labels = [k % 2 for k in range(60)]
    (said,) = flag_warnings(cohort([1 - labels[0], *labels[1:]], labels), True)
    assert said.startswith("us_lnm agrees with the label for 59 of 60 labelled patients (as a score, AUC 0.983"), said
    (said,) = flag_warnings(cohort([labels[0], *(1 - y for y in labels[1:])], labels), True)
    assert said.startswith("us_lnm is the opposite of the label for 59 of 60 labelled patients (as a score, AUC 0.983")
    assert flag_warnings(cohort([y if k % 5 else 1 - y for k, y in enumerate(labels)], labels), True) == []


def test_train_warns_of_the_flag_and_prevalence_as_validate_does(capsys):
    """helper-121: a run trained without ``validate`` heard nothing of a US-LNM column equal to
    the label, or of a prevalence plain BCE calls one class at: the run's checks before it
    writes anything (``check_split``) say both, once per cohort; a model without the flag
    hears nothing of it."""
    from pathlib import Path
    from types import SimpleNamespace

    from lnm_jax.run import check_split

    labels = [1] * 9 + [0] * 41
    patients = [SimpleNamespace(us_lnm=y, lnm=y) for y in labels]
    cohort = SimpleNamespace(patients=patients, labels=labels, path=Path("/cohort/m.csv"))
    split = SimpleNamespace(train=[f"P{k}" for k in range(40)])
    config = base_config()
    config.train.batch_size = 8
    check_split(config, cohort, split)
    check_split(config, cohort, split)  # (once per cohort)
    said = capsys.readouterr().err.splitlines()
    assert len(said) == 2, said
    assert said[0].startswith("warning: us_lnm equals the label for every labelled patient (50): the label"), said
    assert said[1].startswith("warning: prevalence 0.180 is outside 0.2-0.8: consider"), said
    config.modalities = "bmode,ceus"
    check_split(config, SimpleNamespace(**{**vars(cohort), "path": Path("/other.csv")}), split)
    assert capsys.readouterr().err.splitlines() == [said[1]]  # a model without the flag: its prevalence alone
