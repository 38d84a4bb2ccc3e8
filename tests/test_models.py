"""Backbones and the fusion classifier: torchvision layout, parameter counts, output shapes."""

from __future__ import annotations

import logging
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from support import BACKBONE, compiled, drawn_variables

from lnm_jax.models.fusion import FusionClassifier
from lnm_jax.models.resnet import feature_dim, resnet
from lnm_jax.names import SETTINGS, parse_modalities
from lnm_jax.training.state import init_variables, model_variables


def _count(tree) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def test_resnet50_parameter_count_equals_torchvision_without_fc():
    model = resnet("resnet50")
    v = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 224, 224, 3))))
    assert _count(v["params"]) == 23_508_032  # torchvision resnet50: 25,557,032 - fc 2,049,000
    # running mean and var of all 53 BatchNorms, as torchvision's buffers
    assert _count(v["batch_stats"]) == 2 * 26_560


@pytest.mark.parametrize("arch,count", [("resnet10", 4_905_792), ("resnet18", 11_176_512), ("resnet34", 21_284_672)])
def test_small_resnets_match_torchvision(arch, count):
    model = resnet(arch)
    v = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 224, 224, 3))))
    # torchvision minus fc (512*1000 + 1000); ResNet-10: torchvision's ResNet(BasicBlock, [1, 1, 1, 1])
    assert _count(v["params"]) == count


def test_torchvision_names_and_shapes():
    model = resnet("resnet50")
    v = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3))))
    p = v["params"]
    assert p["conv1"]["kernel"].shape == (7, 7, 3, 64)  # torch conv1.weight (64, 3, 7, 7)
    assert set(p["layer2_0"]) == {"conv1", "bn1", "conv2", "bn2", "conv3", "bn3", "downsample_0", "downsample_1"}
    assert "downsample_0" not in p["layer2_1"]
    assert set(p["layer4_2"]["bn3"]) == {"scale", "bias"}
    assert set(v["batch_stats"]["layer4_2"]["bn3"]) == {"mean", "var"}


@pytest.mark.parametrize(
    "size,expected", [(224, [112, 56, 56, 28, 14, 7]), (225, [113, 57, 57, 29, 15, 8]), (97, [49, 25, 25, 13, 7, 4])]
)
def test_spatial_sizes_follow_torch_padding(size, expected):
    """torch: out = floor((in + 2p - k) / s) + 1 at every conv/pool; 'SAME' would differ at odd sizes."""
    model = resnet("resnet18", width=8)
    x = jnp.zeros((1, size, size, 3))
    v = jax.eval_shape(lambda: model.init(jax.random.key(0), x))
    out = jax.eval_shape(lambda v: model.apply(v, x), v)
    conv1 = (size + 2 * 3 - 7) // 2 + 1
    assert conv1 == expected[0]
    assert [out[k].shape[1] for k in ("stem", "stage1", "stage2", "stage3", "stage4")] == expected[1:]
    assert out["pooled"].shape == (1, 64)


def test_stem_maxpool_pads_with_minus_infinity():
    """All-negative activations must not leak zero padding through the stem max-pool."""
    model = resnet("resnet18", width=4)
    x = jnp.ones((1, 16, 16, 3))
    v = drawn_variables(model, x)
    v["params"]["bn1"]["bias"] = -10.0 * jnp.ones(4)  # makes every pre-ReLU value negative
    out = compiled(model.apply)(v, x)
    np.testing.assert_array_equal(out["stem"], 0.0)  # ReLU before pool: zeros, never padding


@pytest.mark.parametrize("setting", list(SETTINGS))
def test_fusion_output_shapes_for_the_five_settings(setting):
    mods = parse_modalities(setting)
    model = FusionClassifier(mods, backbone=BACKBONE, width=8)
    batch = {
        "bmode": jnp.zeros((3, 32, 32, 3)),
        "ceus": jnp.zeros((3, 32, 32, 3)),
        "us_lnm": jnp.array([0.0, 1.0, 1.0]),
    }
    v = jax.eval_shape(model.init, jax.random.key(0), batch)  # shapes only: nothing compiled
    out = jax.eval_shape(model.apply, v, batch)
    n_images = sum(m in ("bmode", "ceus") for m in mods)
    assert out["logit"].shape == (3,)
    assert out["fused"].shape == (3, n_images * 64 + ("us_lnm" in mods))
    assert set(k for k in out if k in ("bmode", "ceus")) == set(mods) - {"us_lnm"}
    assert v["params"]["head"]["kernel"].shape == (out["fused"].shape[1], 1)


def test_paper_triple_is_4097_features():
    model = FusionClassifier(parse_modalities("triple"))
    batch = {"bmode": jnp.zeros((1, 224, 224, 3)), "ceus": jnp.zeros((1, 224, 224, 3)), "us_lnm": jnp.zeros((1,))}
    v = jax.eval_shape(lambda: model.init(jax.random.key(0), batch))
    assert v["params"]["head"]["kernel"].shape == (4097, 1)
    assert feature_dim("resnet50") == 2048
    assert _count(v["params"]) == 2 * 23_508_032 + 4098


def test_branches_are_not_shared_and_flag_enters_the_head():
    model = FusionClassifier(parse_modalities("triple"), backbone=BACKBONE, width=4)
    batch = {"bmode": jnp.ones((2, 16, 16, 3)), "ceus": jnp.ones((2, 16, 16, 3)), "us_lnm": jnp.array([0.0, 1.0])}
    v = drawn_variables(model, batch)
    assert "bmode_backbone" in v["params"] and "ceus_backbone" in v["params"]
    out = compiled(model.apply)(v, batch)
    w_flag = v["params"]["head"]["kernel"][-1, 0]
    # the difference of two logits: float32 rounding of the logits' own size
    atol = 1e-6 * max(float(np.abs(out["logit"]).max()), 1.0)
    np.testing.assert_allclose(out["logit"][1] - out["logit"][0], w_flag, rtol=1e-5, atol=atol)


@pytest.mark.parametrize("bad", ["", "doppler", "bmode,xray"])
def test_bad_modalities_are_rejected(bad):
    with pytest.raises(ValueError, match="non-empty subset"):
        parse_modalities(bad)


def test_prediction_folds_batchnorm_in_one_program_to_the_eager_values(caplog):
    """``inference_variables`` (every prediction, export and Grad-CAM) folds the BatchNorms as
    one program; run eagerly, each operation of the fold was compiled on its own for each new
    shape (~40 programs, ~3 s on 2 cores, in every process's first prediction). The values are
    the eager fold's, to the rounding of XLA's fused arithmetic (a few ulp)."""
    import types

    from lnm_jax.models.backbones import bn_epsilon
    from lnm_jax.models.folding import fold_batchnorm
    from lnm_jax.models.fusion import FusionClassifier
    from lnm_jax.training.steps import inference_variables

    model = FusionClassifier(("bmode", "us_lnm"), backbone=BACKBONE, width=6)  # a width no other test builds
    batch = {"bmode": np.zeros((2, 32, 32, 3), np.float32), "us_lnm": np.ones(2, np.float32)}
    r = np.random.default_rng(0)
    shapes = jax.eval_shape(model.init, jax.random.key(0), batch)
    v = jax.tree.map(lambda s: r.uniform(0.5, 1.5, s.shape).astype(s.dtype), shapes)
    state = types.SimpleNamespace(params=v["params"], batch_stats=v["batch_stats"])
    with jax.log_compiles(True), caplog.at_level(logging.WARNING):
        folded_model, params, stats = inference_variables(model, state)
    compiled = [r.getMessage() for r in caplog.records if "Finished XLA compilation" in r.getMessage()]
    assert len(compiled) == 1 and "fold_batchnorm" in compiled[0], compiled
    assert folded_model.fold_bn and stats == {}
    eager = fold_batchnorm(v["params"], v["batch_stats"], bn_epsilon(BACKBONE, "torchvision"))
    # a few float32 ulp of the O(1) terms (kernels: products; biases: (b - mean) * g + beta, whose
    # sum may cancel to a small value, hence the absolute part)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6), params, eager)


@pytest.mark.parametrize(
    "arch,variant", [(BACKBONE, "torchvision"), ("resnet50", "torchvision"), ("resnet50", "keras_v1")]
)
def test_batchnorm_folded_into_convs_computes_the_same_function(arch, variant):
    from lnm_jax.models.backbones import bn_epsilon
    from lnm_jax.models.folding import fold_batchnorm
    from lnm_jax.models.fusion import FusionClassifier

    model = FusionClassifier(("bmode", "ceus", "us_lnm"), backbone=arch, width=8, variant=variant)
    r = np.random.default_rng(0)
    batch = {
        "bmode": r.standard_normal((4, 48, 48, 3)).astype(np.float32),
        "ceus": r.standard_normal((4, 48, 48, 3)).astype(np.float32),
        "us_lnm": np.ones(4, np.float32),
    }
    # eager: its three ResNet-50 cases share every operation's program, compiled once. The
    # variables are drawn (the fold's arithmetic is the same for any values): model.init's
    # truncated normals, run eagerly, compiled 23 programs (18 s on 2 cores)
    v = drawn_variables(model, batch)
    # non-trivial running statistics and affine parameters
    stats = model.apply(
        {"params": v["params"], "batch_stats": v["batch_stats"]}, batch, train=True, mutable=["batch_stats"]
    )[1]["batch_stats"]
    params = jax.tree.map(lambda x: x * (1 + 0.3 * np.sin(np.arange(x.size).reshape(x.shape))), v["params"])
    ref = model.apply({"params": params, "batch_stats": stats}, batch)
    folded = fold_batchnorm(params, stats, bn_epsilon(arch, variant))
    out = model.clone(fold_bn=True).apply({"params": folded}, batch)
    np.testing.assert_allclose(out["logit"], ref["logit"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out["bmode"]["stage4"], ref["bmode"]["stage4"], rtol=1e-4, atol=1e-4)
    from flax import traverse_util

    paths = traverse_util.flatten_dict(folded)
    assert not [p for p in paths if any(n.startswith("bn") or n == "downsample_1" for n in p)]
    assert any(p[-2:] == ("conv2", "bias") for p in paths)  # every BN folded into a biased conv
    with pytest.raises(ValueError, match="inference only"):
        model.clone(fold_bn=True).apply({"params": folded}, batch, train=True)


def test_the_automatic_stem_is_space_to_depth_on_a_gpu_only(monkeypatch):
    """model.stem='auto' (the default): the space-to-depth stem where it was measured faster
    (an H200: train 1.04x, folded inference 1.17x), on a GPU at even image sizes; the 7x7
    convolution on the CPU (where it measured as noise) and at odd sizes, which the
    space-to-depth form cannot take; what the CPU runs is the 7x7 form, bit for bit."""
    from lnm_jax.models import lowering

    assert jax.default_backend() == "cpu"
    assert lowering.resolve_stem("auto", 224, 224) == "conv7"
    x = np.random.default_rng(2).standard_normal((2, 34, 34, 3)).astype(np.float32)
    v = init_variables(resnet(BACKBONE, width=8), jax.random.key(0), x)
    auto = compiled(resnet(BACKBONE, width=8).apply)(v, x)
    conv7 = compiled(resnet(BACKBONE, width=8, stem="conv7").apply)(v, x)
    np.testing.assert_array_equal(auto["pooled"], conv7["pooled"])
    monkeypatch.setattr(lowering.jax, "default_backend", lambda: "gpu")
    assert lowering.resolve_stem("auto", 224, 224) == "space_to_depth"
    assert lowering.resolve_stem("auto", 225, 224) == "conv7"
    assert lowering.resolve_stem("conv7", 224, 224) == "conv7"
    with pytest.raises(ValueError, match="model.stem must be one of"):
        lowering.resolve_stem("7x7", 224, 224)


def test_the_automatic_pools_and_batchnorm_differ_on_a_gpu_only(monkeypatch):
    """model.lowering and model.batchnorm 'auto' (the defaults): on a GPU the max pools as slices
    and BatchNorm's gradient written out, each measured faster there (an H200: 1.03x each); the
    CPU keeps its lowering and flax's BatchNorm, so what it computes is unchanged, bit for bit;
    other backends XLA's ops."""
    from lnm_jax.models import lowering

    assert jax.default_backend() == "cpu"
    assert lowering.resolve("auto") == "cpu" and lowering.resolve_batchnorm("auto") == "flax"
    x = np.random.default_rng(2).standard_normal((2, 34, 34, 3)).astype(np.float32)
    v = init_variables(resnet(BACKBONE, width=8), jax.random.key(0), x)

    def train(**kw):
        net = resnet(BACKBONE, width=8, **kw)
        return compiled(lambda v, x: net.apply(v, x, train=True, mutable=["batch_stats"])[0]["pooled"])(v, x)

    np.testing.assert_array_equal(train(), train(lowering="cpu", batchnorm="flax"))
    monkeypatch.setattr(lowering.jax, "default_backend", lambda: "gpu")
    assert lowering.resolve("auto") == "slices" and lowering.resolve_batchnorm("auto") == "fused"
    assert lowering.resolve_batchnorm("flax") == "flax"
    monkeypatch.setattr(lowering.jax, "default_backend", lambda: "tpu")
    assert lowering.resolve("auto") == "xla" and lowering.resolve_batchnorm("auto") == "flax"
    with pytest.raises(ValueError, match="model.batchnorm must be one of"):
        lowering.resolve_batchnorm("cudnn")


def test_performance_variants_compute_the_same_function():
    """The GPU check's model candidates (scripts/benchmark.py CANDIDATES) change how, not what:
    the space-to-depth stem with the same 7x7 kernel gives the stem's output to float32
    rounding (147 products per output, values O(1): ~1e-6), on a size where the stem pads on
    every side and through BatchNorm folding; BatchNorm statistics in the activation dtype change
    nothing in float32 and stay within bf16 rounding of the float32 statistics in bfloat16; the
    max pools as slices give reduce-window's values (their gradient: tests/test_lowering.py)."""
    from lnm_jax.models.folding import fold_batchnorm

    x = np.random.default_rng(1).standard_normal((2, 38, 38, 3)).astype(np.float32)
    base = resnet(BACKBONE, width=8, stem="conv7")
    v = init_variables(base, jax.random.key(0), x)  # init's values: the bf16 bound was measured with them
    ref = compiled(base.apply)(v, x)
    s2d = resnet(BACKBONE, width=8, stem="space_to_depth")
    # same parameters
    assert jax.tree.structure(jax.eval_shape(lambda: model_variables(s2d.init(jax.random.key(0), x)))) == (
        jax.tree.structure(v)
    )
    got = compiled(s2d.apply)(v, x)
    np.testing.assert_allclose(got["stem"], ref["stem"], atol=1e-5)
    np.testing.assert_allclose(got["pooled"], ref["pooled"], atol=1e-5)
    folded = fold_batchnorm(v["params"], v["batch_stats"], 1e-5)
    a = compiled(resnet(BACKBONE, width=8, fold_bn=True).apply)({"params": folded}, x)["pooled"]
    b = compiled(resnet(BACKBONE, width=8, fold_bn=True, stem="space_to_depth").apply)({"params": folded}, x)["pooled"]
    np.testing.assert_allclose(a, b, atol=1e-5)
    with pytest.raises(ValueError, match="even image size"):
        jax.eval_shape(s2d.apply, v, x[:, :37, :37])

    def train(m, dtype=jnp.float32):
        return compiled(lambda v, x: m.apply(v, x, train=True, mutable=["batch_stats"])[0])(v, x.astype(dtype))

    # max pools as slices beside XLA's convolutions (lowering 'slices'): reduce-window's values
    # bit for bit; what follows is fused otherwise, so float32 rounding (the stem's bound)
    sliced, xla = (train(resnet(BACKBONE, width=8, lowering=lw)) for lw in ("slices", "xla"))
    np.testing.assert_allclose(sliced["stem"], xla["stem"], atol=1e-5)
    np.testing.assert_allclose(sliced["pooled"], xla["pooled"], atol=1e-5)
    low = resnet(BACKBONE, width=8, bn_float32_reductions=False)
    np.testing.assert_array_equal(train(low)["pooled"], train(base)["pooled"])
    bf16 = {k: resnet(BACKBONE, width=8, dtype=jnp.bfloat16, bn_float32_reductions=k) for k in (True, False)}
    exact = train(base)["pooled"]
    scale = float(jnp.abs(exact).max())
    # bf16 keeps 8 significant bits (2^-8 = 0.4% per rounding) through 17 layers, each
    # renormalised by statistics of 2 images: measured 0.03-0.07 of the features' scale over 3
    # seeds for either setting; the bound leaves ~3x
    for m in bf16.values():
        assert float(jnp.abs(train(m, jnp.bfloat16)["pooled"] - exact).max()) < 0.2 * scale


def test_stacked_branches_compute_the_same_function():
    """branches='stacked' (one vmapped backbone over weights stacked on a leading axis, a GPU
    step candidate) against the per-branch model with the same weights (stack_branches): logits,
    per-branch features, BatchNorm statistics updated in training (with missing-input masks),
    the gradient and BatchNorm-folded inference. vmap turns each convolution into one grouped
    convolution, which may sum a window's products in another order: fp32 rounding, ~sqrt(K) u
    per layer through ~20 renormalised layers: measured up to 2e-6 of a tensor's largest value
    (~30 ulps), compared at 1e-4 of it (a wrong weight or branch moves values by O(1))."""
    from lnm_jax.models.folding import fold_batchnorm
    from lnm_jax.models.fusion import STACKED_BACKBONES, stack_branches
    from lnm_jax.training.state import run_init_program

    modalities = ("bmode", "ceus", "us_lnm")
    sep = FusionClassifier(modalities, backbone=BACKBONE, width=8, missing_inputs=True)
    stk = sep.clone(branches="stacked")
    r = np.random.default_rng(0)
    batch = {
        "bmode": r.standard_normal((4, 40, 40, 3)).astype(np.float32),
        "ceus": r.standard_normal((4, 40, 40, 3)).astype(np.float32),
        "us_lnm": np.array([1, 0, 1, 0], np.float32),
        "has_ceus": np.array([True, False, True, True]),
    }
    v = drawn_variables(sep, batch)
    sv = {k: stack_branches(t, modalities) for k, t in v.items()}
    shapes = jax.eval_shape(stk.init, jax.random.key(0), batch)
    assert jax.tree.map(jnp.shape, shapes) == jax.tree.map(jnp.shape, sv)  # the same parameters, stacked
    assert set(sv["params"]) >= {STACKED_BACKBONES} and "bmode_backbone" not in sv["params"]

    def close(a, b):
        def leaf(x, y):
            np.testing.assert_allclose(x, y, rtol=0, atol=1e-4 * max(float(np.abs(y).max()), 1e-3))

        jax.tree.map(leaf, a, b)

    def train_step(model, variables):  # logits, features, updated statistics and the gradient at once
        def loss(params):
            out, upd = model.apply({**variables, "params": params}, batch, train=True, mutable=["batch_stats"])
            return out["logit"].sum(), (out["logit"], out["ceus"]["stage4"], upd["batch_stats"])

        # each program runs once: compiled as initialisations are (no LLVM optimisation; the same
        # arithmetic, a third of the compile time)
        return run_init_program(jax.grad(loss, has_aux=True), variables["params"])

    g_ref, (logit, stage4, ref_stats) = train_step(sep, v)
    g_got, got = train_step(stk, sv)
    close(got, (logit, stage4, stack_branches(ref_stats, modalities)))
    close(g_got, stack_branches(g_ref, modalities))

    folded = fold_batchnorm(v["params"], ref_stats, 1e-5)
    sfolded = fold_batchnorm(sv["params"], got[2], 1e-5)
    close(sfolded, stack_branches(folded, modalities))
    infer = run_init_program(stk.clone(fold_bn=True).apply, {"params": sfolded}, batch)["logit"]
    close(infer, run_init_program(sep.apply, {"params": v["params"], "batch_stats": ref_stats}, batch)["logit"])
    clip = {**batch, "ceus": np.zeros((4, 2, 40, 40, 3), np.float32)}
    with pytest.raises(ValueError, match=r"batch\['ceus'\]: expected \[B, H, W, 3\] \(NHWC\), got shape \[4, 2, 40"):
        jax.eval_shape(stk.init, jax.random.key(0), clip)  # still images only
    with pytest.raises(ValueError, match="two or more"):
        jax.eval_shape(
            FusionClassifier(("bmode", "us_lnm"), backbone="resnet18", branches="stacked").init,
            jax.random.key(0),
            batch,
        )


def test_fused_batchnorm_is_flaxs_with_its_training_gradient_written_out():
    """model.batchnorm='fused' (models/batchnorm.py) is flax's nn.BatchNorm: the same variables,
    outputs and running statistics in training (with and without a presence mask) and in
    inference; its training gradient (input, scale, bias) agrees with JAX's derivative of flax's
    arithmetic to float32 rounding of sums over a channel's 50 values (measured over 3 seeds: up
    to 5e-7 of an array's largest gradient; the bound 2e-6); so does a ResNet's through every
    layer (up to 2.1e-6 over 3 seeds; the bound 3e-5)."""
    import flax.linen as nn

    from lnm_jax.models.batchnorm import FusedBatchNorm

    r = np.random.default_rng(0)
    x = jnp.asarray(r.standard_normal((2, 5, 5, 6)) * 3 + 1, jnp.float32)
    w = jnp.asarray(r.standard_normal(x.shape), jnp.float32)  # a loss that weighs every output
    ref, fused = nn.BatchNorm(momentum=0.9, epsilon=1e-5), FusedBatchNorm(momentum=0.9, epsilon=1e-5)
    shapes = [jax.eval_shape(partial(m.init, use_running_average=False), jax.random.key(0), x) for m in (ref, fused)]
    assert shapes[0] == shapes[1]  # the same names, shapes and dtypes: checkpoints read in either
    v = jax.tree.map(lambda s: jnp.asarray(r.uniform(0.5, 2.0, s.shape), s.dtype), shapes[0])
    for mask in (None, jnp.asarray([True, False])[:, None, None, None]):

        def train(m, params, x, mask=mask):
            y, mutated = m.apply({**v, "params": params}, x, use_running_average=False, mask=mask, mutable=True)
            return jnp.sum(y * w), (y, mutated["batch_stats"])

        (_, (y0, s0)), g0 = jax.value_and_grad(partial(train, ref), (0, 1), has_aux=True)(v["params"], x)
        (_, (y1, s1)), g1 = jax.value_and_grad(partial(train, fused), (0, 1), has_aux=True)(v["params"], x)
        np.testing.assert_allclose(y1, y0, rtol=1e-6, atol=1e-6)
        for a, b in zip(jax.tree.leaves(s1), jax.tree.leaves(s0)):
            np.testing.assert_allclose(a, b, rtol=1e-6)
        for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g0)):
            np.testing.assert_allclose(a, b, atol=2e-6 * float(jnp.abs(b).max()))
    np.testing.assert_array_equal(
        fused.apply(v, x, use_running_average=True), ref.apply(v, x, use_running_average=True)
    )
    # a NumPy input, as flax's takes it (without a mask, NumPy's mean(where=None) had failed: a fresh-user trial)
    np.testing.assert_allclose(
        fused.apply(v, np.asarray(x), use_running_average=False, mutable=["batch_stats"])[0],
        ref.apply(v, np.asarray(x), use_running_average=False, mutable=["batch_stats"])[0],
        rtol=1e-6,
        atol=1e-6,
    )

    xs = np.random.default_rng(1).standard_normal((4, 38, 38, 3)).astype(np.float32)
    nets = {bn: resnet(BACKBONE, width=8, batchnorm=bn) for bn in ("flax", "fused")}
    variables = init_variables(nets["flax"], jax.random.key(0), xs)

    def grad(net):
        def loss(params):
            out, _ = net.apply({**variables, "params": params}, xs, train=True, mutable=["batch_stats"])
            return jnp.sum(out["pooled"] ** 2)

        return compiled(jax.grad(loss))(variables["params"])

    got, want = grad(nets["fused"]), grad(nets["flax"])
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(a, b, atol=3e-5 * float(jnp.abs(b).max()) + 1e-7)
    with pytest.raises(ValueError, match="model.batchnorm must be one of"):
        jax.eval_shape(resnet(BACKBONE, width=8, batchnorm="cudnn").init, jax.random.key(0), xs)
    with pytest.raises(ValueError, match="computes float32 statistics"):
        jax.eval_shape(
            resnet(BACKBONE, width=8, batchnorm="fused", bn_float32_reductions=False).init, jax.random.key(0), xs
        )
