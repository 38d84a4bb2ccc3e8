"""How the backbones' 1x1 convolutions are expressed to XLA.

``lowering``:
* 'xla': ``lax.conv_general_dilated`` everywhere (XLA's own convolution).
* 'cpu': 1x1 convolutions as a strided slice and a 2-D ``[pixels, channels]`` GEMM.
* 'auto' (default): 'cpu' on the CPU backend, 'xla' elsewhere (GPU/TPU: not measured to gain).

Why, measured with ``scripts/profile_step.py`` on a 2-core CPU (triple ResNet-50, 224x224,
batch 8, one train step; docs/benchmarks.md): XLA:CPU lowers a 1x1 convolution's filter
gradient as a convolution with batch and channels swapped, transposing every activation (with
the BatchNorm-backward arithmetic fused into the transpose); a GEMM needs no transpose when the
pixels form one contracting dimension. The step went from 3.6 s to 2.1 s. 3x3 convolutions stay
XLA convolutions (im2col and shifted GEMMs were slower), and so do max pools (their gradient as
strided-slice selects was no faster in the whole step).

Both compute the same function with the same parameters (equal to float rounding; tests).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
from jax import lax

LOWERINGS = ("auto", "xla", "cpu")

_NHWC_HWIO = ("NHWC", "HWIO", "NHWC")


def resolve(lowering: str) -> str:
    """'xla' or 'cpu' ('auto' by the default backend); an unknown value is an error."""
    if lowering not in LOWERINGS:
        raise ValueError(f"model lowering must be one of {LOWERINGS}, got {lowering!r}")
    if lowering == "auto":
        return "cpu" if jax.default_backend() == "cpu" else "xla"
    return lowering


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
