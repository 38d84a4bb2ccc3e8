"""The image backbones, by name: ResNet-18/34/50, VGG-11 (with or without BatchNorm) and
Inception-v3, all torchvision-layout, all returning the same dict of intermediates
(``stem``, ``stage1`` .. ``stage4``, ``pooled``) and taking an optional BatchNorm ``mask``."""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from lnm_jax import names
from lnm_jax.models import resnet
from lnm_jax.models.inception import MIN_SIZE, InceptionV3
from lnm_jax.models.lowering import resolve
from lnm_jax.models.vgg import VGG

NAMES = names.BACKBONES  # defined once, where a config is checked without building a model
assert set(resnet.BACKBONES) <= set(NAMES), "a ResNet without its name in lnm_jax.names.BACKBONES"


def backbone(
    arch: str,
    *,
    width: int = 64,
    dtype: Any = jnp.float32,
    variant: str = "torchvision",
    fold_bn: bool = False,
    lowering: str = "auto",
    name: str | None = None,
    stem: str = "auto",
    bn_float32_reductions: bool = True,
    batchnorm: str = "auto",
    running_var: str = "biased",
) -> nn.Module:
    """``variant`` 'keras_v1' (weights ported from Keras ResNet50) and ``fold_bn`` (inference
    with BatchNorm folded into the convs) exist for ResNets only. ``lowering``
    (models/lowering.py): 1x1 convs and 3x3 stride-2 max pools as XLA's ops or as GEMMs and
    strided slices (fast on XLA:CPU); VGG-11 has neither. ``stem``, ``bn_float32_reductions``
    and ``batchnorm``: the ResNets' performance variants (:mod:`lnm_jax.models.resnet`; the same
    function). ``running_var`` (:data:`lnm_jax.names.RUNNING_VARS`): how a training step updates
    BatchNorm's running variance (:func:`lnm_jax.models.batchnorm.batch_norm`)."""
    resolve(lowering)  # rejects an unknown value
    if arch in resnet.BACKBONES:
        return resnet.resnet(
            arch,
            width=width,
            dtype=dtype,
            name=name,
            fold_bn=fold_bn,
            lowering=lowering,
            stem=stem,
            bn_float32_reductions=bn_float32_reductions,
            batchnorm=batchnorm,
            running_var=running_var,
            **resnet.VARIANTS[variant],
        )
    check_resnet_variants(arch, stem, bn_float32_reductions, batchnorm)
    if fold_bn:
        raise ValueError(f"BatchNorm folding exists for ResNets only, not {arch}")
    if arch not in NAMES:
        raise ValueError(f"unknown backbone '{arch}', expected one of {list(NAMES)}")
    if variant != "torchvision":
        raise ValueError(f"variant '{variant}' exists for ResNets only, not {arch}")
    if arch == "inception_v3":
        return InceptionV3(width=width, dtype=dtype, lowering=lowering, running_var=running_var, name=name)
    return VGG(batch_norm=arch == "vgg11_bn", width=width, dtype=dtype, running_var=running_var, name=name)


def stacked_backbone(arch: str, n: int, *, name: str | None = None, **kwargs) -> nn.Module:
    """``n`` copies of :func:`backbone` (same ``arch`` and ``kwargs``) with their own weights,
    stacked on a leading axis (every leaf of params, batch_stats and perturbations: [n, ...]),
    run as one ``vmap``-ed computation: called with images [n, B, H, W, 3], ``train`` and an
    optional mask [n, B], it returns the backbone's dict with every entry [n, B, ...]. Branch i
    computes what a separate backbone with branch i's weights computes (``tests/test_models.py``)."""
    proto = backbone(arch, **kwargs)
    fields = {f.name: getattr(proto, f.name) for f in dataclasses.fields(proto) if f.init}
    fields.pop("parent", None), fields.pop("name", None)
    stacked = nn.vmap(
        type(proto),
        variable_axes={"params": 0, "batch_stats": 0, "perturbations": 0},
        split_rngs={"params": True},
        in_axes=(0, None, 0),
        out_axes=0,
        axis_size=n,
    )
    return stacked(**fields, name=name)


def min_image_size(arch: str) -> int:
    return MIN_SIZE if arch == "inception_v3" else 32


def can_fold_bn(arch: str) -> bool:
    return arch in resnet.BACKBONES


def check_resnet_variants(arch: str, stem: str = "auto", bn_float32_reductions: bool = True, batchnorm: str = "auto"):
    """ValueError where ``arch`` is not a ResNet and a ResNet-only performance variant is asked
    of it (``stem``, ``bn_float32_reductions``, ``batchnorm`` other than their defaults)."""
    asked = stem not in ("auto", "conv7") or not bn_float32_reductions or batchnorm not in ("auto", "flax")
    if asked and arch not in resnet.BACKBONES:
        raise ValueError(
            f"model.stem, model.bn_float32_reductions and model.batchnorm exist for ResNets only, not {arch}"
        )


def bn_epsilon(arch: str, variant: str = "torchvision") -> float:
    """The BatchNorm epsilon of a ResNet variant (what folding divides by)."""
    return resnet.VARIANTS[variant].get("bn_epsilon", resnet.BN_EPSILON)
