"""The CPU lowering computes what XLA's own ops compute: 1x1 convolutions as GEMMs and 3x3
stride-2 max pools as strided slices, with the same outputs, gradients and parameters, in every
backbone that has them."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from support import BACKBONE, compiled

from lnm_jax.models.backbones import backbone
from lnm_jax.models.fusion import FusionClassifier
from lnm_jax.models.lowering import conv_function, gemm_pointwise_conv, max_pool_3x3_stride2, max_pool_function, resolve
from lnm_jax.names import parse_modalities
from lnm_jax.run_config import check_resumable
from lnm_jax.training.state import init_variables

NHWC = ("NHWC", "HWIO", "NHWC")


@pytest.mark.parametrize(
    "kernel,strides,padding",
    [
        (1, (1, 1), "VALID"),
        (1, (2, 2), "VALID"),
        (1, (2, 2), "SAME"),
        (1, (2, 1), ((0, 0), (0, 0))),
        (3, (1, 1), ((1, 1), (1, 1))),  # not 1x1: passed to XLA unchanged
        (1, (1, 1), ((1, 1), (0, 0))),  # padded 1x1: passed to XLA unchanged
    ],
)
def test_pointwise_gemm_equals_xla_convolution_and_its_gradients(kernel, strides, padding):
    r = np.random.default_rng(0)  # numpy's: jax.random.normal run eagerly compiles per shape (~1 s)
    x = r.standard_normal((3, 9, 7, 5)).astype(np.float32)
    w = r.standard_normal((kernel, kernel, 5, 6)).astype(np.float32)
    dn = lax.conv_dimension_numbers(x.shape, w.shape, NHWC)

    def ref(x, w):
        return lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=dn)

    def gemm(x, w):
        return gemm_pointwise_conv(x, w, strides, padding, dimension_numbers=dn)

    y, vjp = jax.vjp(ref, x, w)
    y2, vjp2 = jax.vjp(gemm, x, w)
    assert y2.shape == y.shape
    np.testing.assert_allclose(y2, y, atol=1e-5, rtol=1e-5)
    g = r.standard_normal(y.shape).astype(np.float32)
    for a, b in zip(vjp2(g), vjp(g)):
        np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-5)


def _xla_max_pool(x):
    return nn.max_pool(x, window_shape=(3, 3), strides=(2, 2))


@pytest.mark.parametrize("shape", [(2, 9, 9, 3), (1, 12, 15, 4), (3, 3, 4, 2)])
def test_max_pool_by_slices_equals_xla_reduce_window_and_its_derivatives(shape):
    """The forward bit for bit, and both derivatives: the forward-mode tangent bit for bit (a
    selection: the first maximum in row-major order, where XLA's select_and_scatter sends the
    gradient; small integers make most windows tie), the gradient bit for bit where its sums are
    exact (small integers), and on normal values within the rounding of summing the at most four
    windows an input lies in (three additions: 3 * 2**-24 of the sum of their sizes)."""
    rng = np.random.default_rng(shape[1])

    @jax.jit
    def both(x, g, t):  # (slices, XLA): forward, gradient of g, tangent of t
        (y, vjp), (y_ref, vjp_ref) = jax.vjp(max_pool_3x3_stride2, x), jax.vjp(_xla_max_pool, x)
        tan, tan_ref = jax.jvp(max_pool_3x3_stride2, (x,), (t,))[1], jax.jvp(_xla_max_pool, (x,), (t,))[1]
        return y, y_ref, vjp(g)[0], vjp_ref(g)[0], tan, tan_ref

    ties = rng.integers(0, 3, shape).astype(np.float32)
    padded = np.pad(ties, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-np.inf)  # the ResNet stem
    normal = np.maximum(rng.normal(size=shape), 0).astype(np.float32)  # after a ReLU: windows of zeros tie
    for x in (ties, padded, normal):
        out = (x.shape[0], (x.shape[1] - 3) // 2 + 1, (x.shape[2] - 3) // 2 + 1, x.shape[3])
        g_int = rng.integers(-4, 5, out).astype(np.float32)
        t = rng.normal(size=x.shape).astype(np.float32)
        y, y_ref, dx, dx_ref, tan, tan_ref = both(x, g_int, t)
        np.testing.assert_array_equal(y, y_ref)
        np.testing.assert_array_equal(dx, dx_ref)
        np.testing.assert_array_equal(tan, tan_ref)
        g = rng.normal(size=out).astype(np.float32)
        dx, dx_ref = both(x, g, t)[2:4]
        np.testing.assert_allclose(dx, dx_ref, rtol=0, atol=3 * 2.0**-24 * 4 * np.abs(g).max())
    bf16 = [jnp.asarray(a, jnp.bfloat16) for a in (normal, g, np.zeros_like(normal))]
    y, y_ref, dx, _, _, _ = both(*bf16)
    np.testing.assert_array_equal(y, y_ref)
    assert dx.dtype == jnp.bfloat16


def test_backbone_lowerings_share_parameters_outputs_and_gradients():
    x = np.random.default_rng(1).standard_normal((2, 32, 32, 3)).astype(np.float32)
    models = [backbone("resnet50", width=8, lowering=lw) for lw in ("xla", "cpu")]
    variables = [init_variables(m, jax.random.key(0), x) for m in models]  # as a run initialises
    assert jax.tree.structure(variables[0]) == jax.tree.structure(variables[1])
    for a, b in zip(jax.tree.leaves(variables[0]), jax.tree.leaves(variables[1])):
        np.testing.assert_array_equal(a, b)  # same initial parameters, same names

    def loss(params, model):
        # Running statistics (train=False): batch statistics over a 1x1 last stage of two
        # images would turn float rounding into sign flips, whatever the convolution.
        out = model.apply({**variables[0], "params": params}, x, train=False)
        return jnp.sum(out["pooled"] ** 2), out["pooled"]

    def grad(model):  # compiled as the train step is
        return compiled(jax.value_and_grad(lambda p: loss(p, model), has_aux=True))(variables[0]["params"])

    (_, p0), g0 = grad(models[0])
    (_, p1), g1 = grad(models[1])
    np.testing.assert_allclose(p1, p0, atol=1e-4, rtol=1e-4)
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g0)):
        np.testing.assert_allclose(a, b, atol=1e-4 * float(jnp.abs(b).max()) + 1e-6, rtol=1e-3)


@pytest.mark.parametrize("arch,size", [("resnet50", 32), ("inception_v3", 75), ("vgg11", 32)])
@pytest.mark.parametrize("lowering", ["cpu", "xla", "slices"])
def test_every_conv_of_a_backbone_takes_the_chosen_lowering(arch, size, lowering, monkeypatch):
    from lnm_jax.models import lowering as lowering_lib

    calls, pools = [], []

    def counting(lhs, rhs, *args, **kwargs):
        calls.append(rhs.shape)
        return gemm_pointwise_conv(lhs, rhs, *args, **kwargs)

    def counting_pool(x):
        pools.append(x.shape)
        return max_pool_3x3_stride2(x)

    monkeypatch.setattr(lowering_lib, "gemm_pointwise_conv", counting)
    monkeypatch.setattr(lowering_lib, "max_pool_3x3_stride2", counting_pool)
    model = backbone(arch, width=8, lowering=lowering)
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, size, size, 3)))
    kernels = [k for k in jax.tree.leaves(shapes["params"]) if k.ndim == 4]
    # VGG-11 has no 1x1 convolution: it keeps flax's default whatever the lowering
    expected = len(kernels) if lowering == "cpu" and arch != "vgg11" else 0
    assert len(calls) == expected
    assert lowering != "cpu" or arch == "vgg11" or any(s[:2] == (1, 1) for s in calls)
    # the 3x3 stride-2 max pools: ResNet's stem, Inception-v3's two stem pools and Mixed_6a/7a
    # (VGG-11's are 2x2)
    # ('slices': XLA's convolutions, these max pools as slices)
    assert len(pools) == ({"resnet50": 1, "inception_v3": 4, "vgg11": 0}[arch] if lowering != "xla" else 0)


def test_auto_is_gemm_on_cpu_and_unknown_values_are_rejected():
    assert jax.default_backend() == "cpu"
    assert resolve("auto") == "cpu" and conv_function("auto") is gemm_pointwise_conv
    assert conv_function("xla") is None
    assert max_pool_function("auto") is max_pool_3x3_stride2 and max_pool_function("xla") is not max_pool_3x3_stride2
    with pytest.raises(ValueError, match="lowering must be one of"):
        backbone("vgg11", lowering="gpu")
    with pytest.raises(ValueError, match="lowering must be one of"):
        FusionClassifier(parse_modalities("triple"), backbone=BACKBONE, width=4, lowering="fast").init(
            jax.random.key(0),
            {"bmode": jnp.zeros((1, 32, 32, 3)), "ceus": jnp.zeros((1, 32, 32, 3)), "us_lnm": jnp.zeros((1,))},
        )


def test_a_run_resumes_under_another_lowering():
    from lnm_jax.config import base_config as get_config

    stored, now = get_config(), get_config()
    now.model.lowering = "xla"
    check_resumable(stored, now)  # a lowering choice, not another experiment
    del stored.model["lowering"]  # a run from before the field existed
    check_resumable(stored, now)
