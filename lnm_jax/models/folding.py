"""BatchNorm folded into the preceding convolution, for inference and Grad-CAM.

In inference BatchNorm is a per-channel affine map, y = (x - mean) / sqrt(var + eps) * scale
+ bias; after a convolution it folds into the kernel and a bias:
kernel' = kernel * g, bias' = (conv_bias - mean) * g + bias with g = scale / sqrt(var + eps).
The folded network (``fold_bn=True``) computes the same function without the separate
normalisation passes. ResNets only (conv/BN pairs by torchvision name); branches stacked on a
leading axis fold as they are.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp

# (conv, its BatchNorm) as named in resnet.py: stem, blocks and projection shortcuts.
PAIRS = (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3"), ("downsample_0", "downsample_1"))


def fold_batchnorm(params: Mapping[str, Any], batch_stats: Mapping[str, Any], epsilon: float) -> dict:
    """Params of the ``fold_bn=True`` model from a trained model's params and batch_stats
    (any nesting: a backbone or a whole fusion model); other params pass through."""
    out: dict[str, Any] = {}
    folded_bns = set()
    for conv, bn in PAIRS:
        if conv in params and bn in params and "kernel" in params[conv]:
            g = params[bn]["scale"] / jnp.sqrt(batch_stats[bn]["var"] + epsilon)
            # g [..., out] against the kernel [..., kh, kw, in, out]; '...': the branch axis of
            # stacked branches (fusion.py's branches='stacked'), else nothing
            kernel = params[conv]["kernel"] * g.reshape(g.shape[:-1] + (1, 1, 1) + g.shape[-1:])
            bias = params[conv].get("bias", jnp.zeros_like(g))
            out[conv] = {"kernel": kernel, "bias": (bias - batch_stats[bn]["mean"]) * g + params[bn]["bias"]}
            folded_bns.add(bn)
    for name, value in params.items():
        if name in out or name in folded_bns:
            continue
        if isinstance(value, Mapping) and name in batch_stats:
            out[name] = fold_batchnorm(value, batch_stats[name], epsilon)
        else:
            out[name] = value
    return out
