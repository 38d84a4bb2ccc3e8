"""The paper's multimodality classifier: one backbone per image modality + the US-LNM flag,
fused by concatenation into one logit.

Triple setting with ResNet-50: 2048 (B-mode) + 2048 (CEUS) + 1 (flag) = 4,097 features ->
``Dense(1)``.  The model returns a dict of intermediates (each branch's stages, the fused
feature, the logit); the sigmoid is applied only when reporting probabilities, and the loss
works on logits.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from lnm_jax.models.resnet import VARIANTS, make_backbone
from lnm_jax.settings import SETTINGS

IMAGE_MODALITIES = ("bmode", "ceus")
ALL_MODALITIES = ("bmode", "ceus", "us_lnm")


def parse_modalities(spec: str | Sequence[str]) -> tuple[str, ...]:
    """'triple' | 'bmode,ceus' | ('bmode', 'ceus') -> canonical ordered tuple."""
    if isinstance(spec, str):
        names = SETTINGS.get(spec) or tuple(s.strip() for s in spec.split(",") if s.strip())
    else:
        names = tuple(spec)
    unknown = [n for n in names if n not in ALL_MODALITIES]
    if unknown or not names:
        raise ValueError(f"modalities must be a non-empty subset of {ALL_MODALITIES} or one of "
                         f"{sorted(SETTINGS)}, got {spec!r}")
    return tuple(m for m in ALL_MODALITIES if m in names)


class FusionClassifier(nn.Module):
    modalities: tuple[str, ...]
    backbone: str = "resnet50"
    width: int = 64
    dtype: Any = jnp.float32
    variant: str = "torchvision"  # or "keras_v1" (weights ported from Keras ResNet50)

    @nn.compact
    def __call__(self, batch: dict, train: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {}
        features = []
        for m in self.modalities:
            if m in IMAGE_MODALITIES:
                branch = make_backbone(self.backbone, width=self.width, dtype=self.dtype,
                                       name=f"{m}_backbone", **VARIANTS[self.variant])(batch[m], train=train)
                out[m] = branch
                features.append(branch["pooled"])
            else:
                features.append(batch["us_lnm"].astype(jnp.float32)[:, None])
        fused = jnp.concatenate(features, axis=-1)
        out["fused"] = fused
        out["logit"] = nn.Dense(1, dtype=jnp.float32, name="head")(fused)[:, 0]
        return out
