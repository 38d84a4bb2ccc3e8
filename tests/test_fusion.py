"""Fusion beyond the paper's head: per-input heads, late fusion, the centred flag, the
single-input guard, and the small-cohort fine-tuning schedule (frozen branches, per-group
learning rates, the plateau floor of the heads)."""

from __future__ import annotations

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from support import (
    QUALITY_BACKBONE,
    SEED,
    auc_as_evaluated,
    compiled,
    drawn_variables,
    model_config,
    record,
    saved_at_the_end,
    tiny_config,
)

from lnm_jax import names
from lnm_jax.data.synth.synthetic import SynthParams, bayes_scores, generate_cohort, read_truth
from lnm_jax.evaluation import metrics as M
from lnm_jax.evaluation.evaluate import single_input_check, single_input_line
from lnm_jax.models.fusion import build_model
from lnm_jax.run import Run, step_inputs, zero_batch
from lnm_jax.training import state as S
from lnm_jax.training.loop import train
from lnm_jax.training.steps import make_eval_step, make_train_step


def _small(setting="triple", **model):
    return model_config(setting, model=model)


def _batch(c, seed=0):
    rng = np.random.default_rng(seed)
    b = step_inputs(zero_batch(c))
    b[names.BMODE] = rng.standard_normal(b[names.BMODE].shape).astype(np.float32)
    b[names.CEUS] = rng.standard_normal(b[names.CEUS].shape).astype(np.float32)
    b[names.US_LNM] = (rng.random(len(b[names.US_LNM])) < 0.5).astype(np.float32)
    b[names.LABEL] = (rng.random(len(b[names.LABEL])) < 0.5).astype(np.int32)
    return b


def test_late_fusion_starts_as_the_sum_of_the_inputs_log_odds():
    c = _small(fusion="late", flag_encoding="centred")
    model, b = build_model(c), _batch(c)
    variables = S.init_variables(model, jax.random.key(0), b)
    params = dict(variables["params"])
    params["us_lnm_head"] = {"kernel": jnp.full((1, 1), 2.0), "bias": jnp.zeros(1)}
    out = compiled(model.apply)({**variables, "params": params}, b)
    z = out["input_logits"]
    np.testing.assert_allclose(out["logit"], z["bmode"] + z["ceus"] + z["us_lnm"], rtol=1e-6, atol=1e-6)
    # the centred flag: -1/+1 times the head's weight
    np.testing.assert_array_equal(np.asarray(z["us_lnm"]), np.where(b[names.US_LNM] > 0, 2.0, -2.0))


def test_frozen_step_keeps_the_branches_and_the_head_floor_keeps_the_heads_moving():
    c = _small(fusion="late", flag_encoding="centred")
    c.train.backbone_lr_scale, c.train.weight_decay = 0.1, 1e-2
    model, b = build_model(c), _batch(c)
    tx, plateau = S.optimizers(c.train)
    st = S.create_train_state(model, jax.random.key(0), b, tx, plateau)
    st = st.replace(plateau=st.plateau._replace(scale=jnp.asarray(1e-3, jnp.float32)))
    before = jax.device_get((st.params, st.batch_stats))
    frozen = make_train_step(model, tx, aux_loss_weight=1.0, head_min_scale=0.5, frozen_backbones=True)
    st, _ = frozen(st, b)
    after = jax.device_get((st.params, st.batch_stats))
    for branch in ("bmode_backbone", "ceus_backbone"):
        jax.tree.map(np.testing.assert_array_equal, after[0][branch], before[0][branch])
        jax.tree.map(np.testing.assert_array_equal, after[1][branch], before[1][branch])
    # the head moved by ~ lr x head floor (Adam's first step: |update| = lr), not lr x 1e-3
    step = np.abs(after[0]["us_lnm_head"]["bias"] - before[0]["us_lnm_head"]["bias"])
    np.testing.assert_allclose(step, c.train.learning_rate * 0.5, rtol=1e-3)
    full = make_train_step(model, tx, aux_loss_weight=1.0)
    st, _ = full(st, b)
    moved = jax.device_get(st.params["bmode_backbone"])
    assert any(np.any(x != y) for x, y in zip(jax.tree.leaves(moved), jax.tree.leaves(after[0]["bmode_backbone"])))


def test_per_group_learning_rates():
    c = _small()
    c.train.backbone_lr_scale = 0.1
    model, b = build_model(c), _batch(c)
    tx, plateau = S.optimizers(c.train)
    st = S.create_train_state(model, jax.random.key(0), b, tx, plateau)
    before = jax.device_get(st.params)
    st, _ = make_train_step(model, tx)(st, b)
    after = jax.device_get(st.params)
    # Adam's first update is lr x sign(gradient) wherever the gradient is well above eps
    head = np.abs(after["head"]["bias"] - before["head"]["bias"])
    branch = max(
        np.max(np.abs(a - b))
        for a, b in zip(jax.tree.leaves(after["bmode_backbone"]), jax.tree.leaves(before["bmode_backbone"]))
    )
    np.testing.assert_allclose(head, 1e-3, rtol=1e-3)
    np.testing.assert_allclose(branch, 1e-4, rtol=1e-3)


def test_a_random_backbone_is_never_frozen_and_aux_loss_needs_heads():
    """A random backbone frozen in inference mode gives features never normalised: frozen epochs
    apply to branches loaded from model.init_from only. The small-cohort config's 5 had refused
    its own command without a pretraining, as the README gives it (helper-55's trial)."""
    from lnm_jax.config import frozen_backbone_epochs, small_cohort_config
    from lnm_jax.models.fusion import check_config

    c = small_cohort_config()
    assert c.train.freeze_backbone_epochs == 5 and not c.model.init_from
    check_config(c)  # (had raised: "set model.init_from")
    assert frozen_backbone_epochs(c) == 0
    c.model.init_from = "runs/my/pretrain/backbone"
    assert frozen_backbone_epochs(c) == 5
    c = _small()
    c.train.aux_loss_weight = 1.0
    with pytest.raises(ValueError, match="input_heads"):
        check_config(c)


def test_guard_says_when_fusion_loses_to_a_single_input():
    ids = [f"P{i}" for i in range(8)]
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    flag = [0, 0, 0, 1, 1, 1, 1, 0]  # AUC 0.75
    patients = {
        i: types.SimpleNamespace(us_lnm=f, has=lambda m: True, patient_id=i) for i, f in zip(ids, flag, strict=True)
    }
    run = types.SimpleNamespace(
        config=types.SimpleNamespace(modalities="bmode,us_lnm"),
        cohort=types.SimpleNamespace(by_id=lambda: patients),
    )
    pred = {
        names.PATIENT_ID: np.array(ids, object),
        names.LABEL: y,
        "logit": np.array([0.1, 0.3, 0.2, 0.6, 0.5, 0.4, 0.7, 0.0]),  # AUC 0.625
        "logit_bmode": np.arange(8.0),  # AUC 1
    }
    guard = single_input_check(run, {"val": pred, "test": pred})
    assert guard["best_single_input_on_val"] == "bmode" and guard["fused_below_best_single"]
    assert guard["input_auc"]["us_lnm"]["val"] == pytest.approx(0.75)
    assert "WARNING" in single_input_line(guard)
    pred["logit"] = np.arange(8.0) * 2
    guard = single_input_check(run, {"val": pred})
    assert not guard["fused_below_best_single"] and "WARNING" not in single_input_line(guard)
    # a flag no patient has (or of one value): said not scored, not "nan/nan" (helper-120)
    guard["input_auc"]["us_lnm"] = {"val": float("nan")}
    assert "us_lnm not scored (no AUC: one value or none among these patients)" in single_input_line(guard)
    import warnings

    from lnm_jax.evaluation.metrics import sigmoid

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # (helper-120: numpy's overflow warning on the console)
        assert sigmoid(np.array([-1000.0, 0.0]))[0] == 0.0


# A strong flag (sensitivity = specificity = 0.9, AUC 0.90) beside one image input (B-mode cue
# 2.0: Bayes AUC 0.921 alone); together their Bayes-optimal AUC is 0.979. Measured over
# LNM_TEST_SEED 0-7 natively and 0-3 with XLA:CPU held to AVX2 (the same numbers to four
# decimals; gap = the Bayes-optimal score's AUC on the same test patients - the model's): late
# fusion mean 0.0099, SD 0.0049, max 0.019; the paper's head mean 0.099, SD 0.028, min 0.072
# (its weight on the flag grows ~1e-3 per Adam step, so 1,024 image features drown it).
STRONG_FLAG = dict(bmode_strength=2.0, ceus_strength=0.0, flag_sensitivity=0.9, flag_specificity=0.9)
FUSION_GAP = 0.03  # the bar for the new fusion: mean + 4.1 SD of the late gaps
# The paper head's gaps are skewed upward (one seed at 0.163, its failure mode being a flag it
# cannot weigh); the other seven lie 0.072-0.103 (mean 0.090, SD 0.011).
PAPER_SHORT = 0.04  # short of that bar by 0.01: mean - 2.1 SD of all eight, 4.6 SD below the seven


def strong_flag_scenario(folder, seed=SEED):
    params = SynthParams(patients=800, size=48, seed=100 + seed, **STRONG_FLAG)
    generate_cohort(folder / "cohort", params)
    truth = read_truth(folder / "cohort")
    index = {p: i for i, p in enumerate(truth[names.PATIENT_ID])}
    oracle = bayes_scores(truth, params, (names.BMODE, names.US_LNM))
    gaps = {}
    for head in ("paper", "late"):
        c = tiny_config(folder / "cohort" / "manifest.csv", "bmode,us_lnm", epochs=15, backbone=QUALITY_BACKBONE)
        c.seed, c.data.split.seed, c.train.batch_size = seed, seed, 16
        if head == "late":
            c.model.fusion, c.model.flag_encoding = "late", "centred"
            # from scratch: one learning rate for heads and branches (a lower branch rate is for
            # pretrained ones; 1e-3 here left the image head short: worst gap 0.028 over 8 seeds)
            c.train.aux_loss_weight, c.train.learning_rate = 1.0, 1e-2
            c.train.plateau.head_min_scale = 0.1
        run = Run.create(saved_at_the_end(c), folder / head)
        train(run)
        test = run.predict("test")
        auc = auc_as_evaluated(test)
        gaps[head] = M.safe_auc(test[names.LABEL], oracle[[index[p] for p in test[names.PATIENT_ID]]]) - auc
    return gaps


def test_late_fusion_reaches_the_bayes_auc_of_a_strong_flag_and_an_image_where_the_paper_head_falls_short(tmp_path):
    gaps = strong_flag_scenario(tmp_path)
    record("strong_flag_fusion", **gaps)
    assert gaps["late"] <= FUSION_GAP, gaps
    assert gaps["paper"] >= PAPER_SHORT, gaps


def test_eval_step_returns_each_inputs_logit():
    c = _small(input_heads=True)
    model, b = build_model(c), _batch(c)
    v = drawn_variables(model, b)
    out = make_eval_step(model)(v["params"], v["batch_stats"], b)
    assert set(out) == {"logit", "logit_bmode", "logit_ceus", "logit_us_lnm"}
