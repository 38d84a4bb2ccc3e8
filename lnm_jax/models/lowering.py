"""How the backbones' 1x1 convolutions, 3x3 stride-2 max pools and ResNet stem are expressed to XLA.

``lowering``:
* 'xla': ``lax.conv_general_dilated`` and ``lax.reduce_window`` everywhere (XLA's own ops).
* 'cpu': 1x1 convolutions as a strided slice and a 2-D ``[pixels, channels]`` GEMM (not in a
  BatchNorm-folded ResNet, which only predicts: there XLA's convolution is faster, models/resnet.py);
  3x3 stride-2 max pools as the maximum of nine strided slices, differentiated by selecting the
  first maximum's tangent (:func:`max_pool_3x3_stride2`).
* 'slices': XLA's convolutions, the max pools as 'cpu' computes them: a GPU candidate
  (``scripts/benchmark.py``). XLA:GPU computes a max pool's gradient as a select-and-scatter
  lowered to a scatter, the step's slowest elementwise kernel on an H200 (1.3 ms per branch of
  a 75 ms bf16 step, batch 256, 2026-12-04), where the slices' gradient is a loop fusion:
  3,540 -> 3,650 train patients/s (1.03x; bf16 triple ResNet-50 224, batch 256, one invocation
  of ``gpu_check.py``'s candidates, 2026-12-04), so 'auto' takes it on a GPU. 'cpu' there (1x1
  convolutions as GEMMs too) aborted the process in XLA:GPU's compiler.
* 'auto' (default): 'cpu' on the CPU backend, 'slices' on a GPU, 'xla' elsewhere (TPU: not
  measured).

Why, measured with ``scripts/profile_step.py`` on a 2-core CPU (triple ResNet-50, 224x224,
batch 8, one train step; docs/benchmarks.md): XLA:CPU lowers a 1x1 convolution's filter
gradient as a convolution with batch and channels swapped, transposing every activation (with
the BatchNorm-backward arithmetic fused into the transpose); a GEMM needs no transpose when the
pixels form one contracting dimension. The step went from 3.6 s to 2.1 s. 3x3 convolutions stay
XLA convolutions (im2col, shifted GEMMs and Winograd F(2x2, 3x3) were slower). XLA:CPU computes
a max pool's gradient as a variadic reduce-window over four materialised index arrays and a
select-and-scatter; :func:`max_pool_3x3_stride2` selects with the nine strided slices, whose
transpose is nine strided pads (8x faster on the stem's [8, 114, 114, 64]).

Both compute the same function with the same parameters (equal to float rounding; tests).

``stem`` (ResNets, :func:`resolve_stem`): 'conv7', the 7x7 stride-2 convolution as torchvision
writes it; 'space_to_depth', the same convolution as a 4x4 stride-1 one over 2x2 blocks
(``resnet.SpaceToDepthConv``, same parameters); 'auto' (default), 'space_to_depth' on a GPU
where the image's height and width are even, 'conv7' elsewhere. Measured on an H200
(2026-12-04, ``scripts/gpu_check.py``'s candidates, bf16 triple ResNet-50 224, batch 256, one
invocation): train 3,430 -> 3,560 patients/s (1.04x), inference with BatchNorm folded 17,059 ->
20,008 (1.17x): a 3-channel strided convolution uses the tensor cores poorly, a 12-channel dense
one better. On the CPU it measured as noise (docs/benchmarks.md), so the CPU keeps 'conv7'.
"""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from lnm_jax.names import BATCHNORMS, LOWERINGS, STEMS

_NHWC_HWIO = ("NHWC", "HWIO", "NHWC")


def resolve(lowering: str) -> str:
    """'xla', 'cpu' or 'slices' ('auto' by the default backend); an unknown value is an error."""
    if lowering not in LOWERINGS:
        raise ValueError(f"model lowering must be one of {LOWERINGS}, got {lowering!r}")
    if lowering == "auto":
        return {"cpu": "cpu", "gpu": "slices"}.get(jax.default_backend(), "xla")
    return lowering


def resolve_batchnorm(batchnorm: str) -> str:
    """'flax' or 'fused' for a ResNet's BatchNorm (models/batchnorm.py; 'auto': 'fused' on a GPU
    backend, where it measured faster, else 'flax'); an unknown value is an error.

    Measured on an H200 (2026-12-04, ``gpu_check.py``'s candidates, bf16 triple ResNet-50 224,
    batch 256, one invocation): train 3,540 -> 3,632 patients/s (1.03x). On the CPU it measured
    as noise (a ResNet-50 step at 112 px, batch 8: 0.55-0.61 s either way), so the CPU keeps
    flax's, whose numbers every CPU result of this project was computed with."""
    if batchnorm not in BATCHNORMS:
        raise ValueError(f"model.batchnorm must be one of {BATCHNORMS}, got {batchnorm!r}")
    if batchnorm == "auto":
        return "fused" if jax.default_backend() == "gpu" else "flax"
    return batchnorm


def resolve_stem(stem: str, height: int, width: int) -> str:
    """'conv7' or 'space_to_depth' for a ResNet stem over ``height`` x ``width`` images ('auto':
    'space_to_depth' on a GPU backend at even sizes, else 'conv7'; the module docstring says why);
    an unknown value is an error."""
    if stem not in STEMS:
        raise ValueError(f"model.stem must be one of {STEMS}, got {stem!r}")
    if stem == "auto":
        return "space_to_depth" if jax.default_backend() == "gpu" and not (height % 2 or width % 2) else "conv7"
    return stem


def _is_plain_pointwise(lhs, rhs, padding, lhs_dilation, rhs_dilation, dimension_numbers, feature_group_count) -> bool:
    if rhs.ndim != 4 or rhs.shape[:2] != (1, 1) or feature_group_count != 1:
        return False
    if any(d is not None and tuple(d) != (1, 1) for d in (lhs_dilation, rhs_dilation)):
        return False
    # A 1x1 window: 'SAME' pads nothing at any stride (ceil(n / s) outputs either way).
    if not isinstance(padding, str) and any(tuple(p) != (0, 0) for p in padding):
        return False
    want = lax.conv_dimension_numbers(lhs.shape, rhs.shape, _NHWC_HWIO)
    return lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers) == want


def gemm_pointwise_conv(
    lhs,
    rhs,
    window_strides,
    padding,
    lhs_dilation=None,
    rhs_dilation=None,
    dimension_numbers=None,
    feature_group_count=1,
    precision=None,
    preferred_element_type=None,
):
    """``lax.conv_general_dilated`` with NHWC/HWIO 1x1 convolutions as slice + GEMM (the
    signature flax's ``nn.Conv(conv_general_dilated=...)`` calls); any other convolution is
    passed to XLA unchanged."""
    if not _is_plain_pointwise(lhs, rhs, padding, lhs_dilation, rhs_dilation, dimension_numbers, feature_group_count):
        return lax.conv_general_dilated(
            lhs,
            rhs,
            window_strides,
            padding,
            lhs_dilation,
            rhs_dilation,
            dimension_numbers,
            feature_group_count,
            precision=precision,
            preferred_element_type=preferred_element_type,
        )
    sh, sw = window_strides
    x = lhs if (sh, sw) == (1, 1) else lhs[:, ::sh, ::sw, :]
    # 2-D, so that the filter gradient contracts one dimension: with the pixels as three
    # contracting dimensions of a 4-D dot, XLA:CPU transposes the activations first.
    y = lax.dot_general(
        x.reshape(-1, x.shape[-1]),
        rhs[0, 0],
        (((1,), (0,)), ((), ())),
        precision=precision,
        preferred_element_type=preferred_element_type,
    )
    return y.reshape(x.shape[:3] + (rhs.shape[-1],))


def conv_function(lowering: str) -> Callable | None:
    """What to pass as flax ``nn.Conv(conv_general_dilated=...)``; None keeps flax's default."""
    return gemm_pointwise_conv if resolve(lowering) == "cpu" else None


def _pool_windows(x: jax.Array) -> list[jax.Array]:
    """The nine strided slices [N, (H - 3) // 2 + 1, (W - 3) // 2 + 1, C] of x [N, H, W, C] that
    a 3x3 stride-2 'VALID' window covers, in row-major window order."""
    out_h, out_w = (x.shape[1] - 3) // 2 + 1, (x.shape[2] - 3) // 2 + 1
    return [x[:, i : i + 2 * out_h - 1 : 2, j : j + 2 * out_w - 1 : 2, :] for i in range(3) for j in range(3)]


@jax.custom_jvp
def max_pool_3x3_stride2(x: jax.Array) -> jax.Array:
    """``nn.max_pool(x, (3, 3), (2, 2))`` ('VALID'; pad first for torch's padding=1): x [N, H, W,
    C] with H, W >= 3 -> [N, (H - 3) // 2 + 1, (W - 3) // 2 + 1, C], the maximum of nine strided
    slices (equal to XLA's reduce-window bit for bit).

    Differentiable in both modes (a ``custom_jvp``): the tangent is the input tangent at each
    window's first maximum in row-major order, where XLA's ``select_and_scatter`` (``ge``) sends
    the gradient; ties are common after a ReLU (a window of zeros). JAX transposes that
    selection into nine strided pads and adds, instead of XLA:CPU's index arrays and scatter.
    An input lies in at most four windows, whose terms may sum in another order than XLA's
    (float32: a few ulp). For finite and infinite inputs; where a window holds a NaN the
    gradient may go to another position than XLA's."""
    out = None
    for window in _pool_windows(x):
        out = window if out is None else jnp.maximum(out, window)
    return out


@max_pool_3x3_stride2.defjvp
def _max_pool_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    y, first = None, None  # the maximum, and the row-major position of its first window (int8)
    for k, window in enumerate(_pool_windows(x)):
        if y is None:
            y, first = window, jnp.zeros(window.shape, jnp.int8)
        else:  # strictly greater: on a tie the earlier window position keeps the maximum
            first = jnp.where(window > y, jnp.int8(k), first)
            y = jnp.maximum(y, window)
    dy = None
    for k, window in enumerate(_pool_windows(dx)):
        dy = window if dy is None else jnp.where(first == k, window, dy)
    return y, dy


def max_pool_function(lowering: str) -> Callable:
    """The 3x3 stride-2 'VALID' max pool of a ``lowering``: :func:`max_pool_3x3_stride2` on
    'cpu' and 'slices', flax's ``nn.max_pool`` (XLA's reduce-window) otherwise."""
    if resolve(lowering) in ("cpu", "slices"):
        return max_pool_3x3_stride2
    return lambda x: nn.max_pool(x, window_shape=(3, 3), strides=(2, 2))
