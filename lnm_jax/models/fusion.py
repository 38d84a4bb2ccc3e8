"""The paper's multimodality classifier: one backbone per image modality + the US-LNM flag,
fused by concatenation into one logit.

Triple setting with ResNet-50: 2048 (B-mode) + 2048 (CEUS) + 1 (flag) = 4,097 features ->
``Dense(1)``.

``missing_inputs=True`` goes past the paper, which needs all three inputs: every input gets an
availability indicator, and a missing one (empty manifest cell -> ``has_*`` false) is replaced
by a learned 'absent' embedding (per-branch vector; a scalar for the flag), so one model serves
every availability pattern. ``modality_dropout`` hides each present input independently during
training (never all of a patient's inputs), which is how it learns to. Missing images are also
kept out of BatchNorm's training statistics. Triple ResNet-50: (2048 + 1) x 2 + (1 + 1) = 4,100.

CEUS may be a clip ``[B, T, H, W, 3]``: the CEUS backbone runs on all B x T frames in one
batched call and ``temporal_pool`` pools the T frame features ('mean', or 'attention': gated
attention weights, Ilse et al. 2018); a still image is T = 1.

The model returns a dict of intermediates (each branch's stages, the fused
feature, the logit); the sigmoid is applied only when reporting probabilities, and the loss
works on logits.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from lnm_jax import names
from lnm_jax.models import backbones
from lnm_jax.models.backbones import backbone

DROPOUT_RNG = "modality_dropout"  # the rng stream modality dropout draws from


def available(batch: dict, modalities: Sequence[str]) -> dict[str, jax.Array]:
    """Per-row availability of each input; all true where the batch has no ``has_*`` entry."""
    n = batch[names.US_LNM].shape[0] if names.US_LNM in batch else batch[modalities[0]].shape[0]
    return {
        m: jnp.asarray(batch[names.has(m)], bool) if names.has(m) in batch else jnp.ones(n, bool) for m in modalities
    }


def drop_modalities(avail: dict[str, jax.Array], rate: float, key: jax.Array) -> dict[str, jax.Array]:
    """Hides each available input with probability ``rate``, independently; a row that would
    lose every input keeps its original availability."""
    keys = jax.random.split(key, len(avail))
    kept = {m: a & jax.random.bernoulli(k, 1.0 - rate, a.shape) for (m, a), k in zip(avail.items(), keys)}
    none_left = ~jnp.any(jnp.stack(list(kept.values())), axis=0)
    return {m: jnp.where(none_left, avail[m], kept[m]) for m in avail}


class TemporalAttentionPool(nn.Module):
    """Gated attention over frames: weights softmax_t(w . (tanh(V h_t) * sigmoid(U h_t)))."""

    hidden: int = 128

    @nn.compact
    def __call__(self, h):  # [B, T, D] -> ([B, D], [B, T])
        gate = jnp.tanh(nn.Dense(self.hidden, name="V")(h)) * nn.sigmoid(nn.Dense(self.hidden, name="U")(h))
        weights = jax.nn.softmax(nn.Dense(1, name="w")(gate)[..., 0], axis=-1)
        return jnp.einsum("bt,btd->bd", weights, h), weights


class FusionClassifier(nn.Module):
    modalities: tuple[str, ...]
    backbone: str = "resnet50"
    width: int = 64
    dtype: Any = jnp.float32
    variant: str = "torchvision"  # or "keras_v1" (weights ported from Keras ResNet50)
    missing_inputs: bool = False  # learned absent embeddings + availability indicators
    modality_dropout: float = 0.0  # training only; needs missing_inputs
    temporal_pool: str = "mean"  # CEUS clips: 'mean' | 'attention'
    fold_bn: bool = False  # inference with BatchNorm folded into the convs (models/folding.py)
    lowering: str = "auto"  # 1x1 convs as XLA convs or GEMMs (CPU default) (models/lowering.py)

    def _check_fields(self):
        if self.modality_dropout and not self.missing_inputs:
            raise ValueError(
                "modality_dropout needs missing_inputs=True (a dropped input must "
                "be replaced by the learned absent embedding)"
            )
        if not 0.0 <= self.modality_dropout < 1.0:
            raise ValueError(f"modality_dropout must be in [0, 1), got {self.modality_dropout}")
        if self.temporal_pool not in ("mean", "attention"):
            raise ValueError(f"temporal_pool must be 'mean' or 'attention', got {self.temporal_pool!r}")

    @nn.compact
    def __call__(self, batch: dict, train: bool = False) -> dict[str, Any]:
        self._check_fields()
        out: dict[str, Any] = {}
        features = []
        present = available(batch, self.modalities)  # what the data holds
        use = present  # what the model may look at
        if self.missing_inputs and train and self.modality_dropout > 0:
            use = drop_modalities(present, self.modality_dropout, self.make_rng(DROPOUT_RNG))
        out["available"] = use
        for m in self.modalities:
            if m in names.IMAGE_INPUTS:
                # BatchNorm statistics over the rows that hold this image (all rows if none do).
                mask = present[m] | ~jnp.any(present[m]) if self.missing_inputs else None
                x = batch[m]
                frames = x.shape[1] if x.ndim == 5 else 0  # a clip: [B, T, H, W, 3]
                if frames:
                    x = x.reshape((-1,) + x.shape[2:])
                    mask = None if mask is None else jnp.repeat(mask, frames)
                branch = backbone(
                    self.backbone,
                    width=self.width,
                    dtype=self.dtype,
                    variant=self.variant,
                    fold_bn=self.fold_bn,
                    lowering=self.lowering,
                    name=f"{m}_backbone",
                )(x, train=train, mask=mask)
                out[m] = branch
                feature = branch["pooled"]
                if frames:
                    feature = feature.reshape(-1, frames, feature.shape[-1])
                    if self.temporal_pool == "attention":
                        feature, out[f"{m}_frame_weights"] = TemporalAttentionPool(name=f"{m}_temporal_pool")(feature)
                    else:
                        feature = feature.mean(axis=1)
            else:
                feature = batch[names.US_LNM].astype(jnp.float32)[:, None]
            if self.missing_inputs:
                absent = self.param(f"{m}_absent", nn.initializers.zeros, (feature.shape[-1],))
                feature = jnp.where(use[m][:, None], feature, absent[None])
                features += [feature, use[m].astype(jnp.float32)[:, None]]
            else:
                features.append(feature)
        fused = jnp.concatenate(features, axis=-1)
        out["fused"] = fused
        out["logit"] = nn.Dense(1, dtype=jnp.float32, name="head")(fused)[:, 0]
        return out


def check_config(config) -> None:
    """Raises ValueError naming the field when ``config`` describes a model that cannot run, so
    that a command fails before anything trains rather than at the first step."""
    m = config.model
    inputs = names.parse_modalities(config.modalities)
    if any(i in names.IMAGE_INPUTS for i in inputs):
        if m.backbone not in backbones.NAMES:
            raise ValueError(f"model.backbone: unknown '{m.backbone}', expected one of {list(backbones.NAMES)}")
        need = backbones.min_image_size(m.backbone)
        if config.data.image_size < need:
            raise ValueError(
                f"model.backbone={m.backbone} needs data.image_size >= {need}, got {config.data.image_size}"
            )
        if m.variant != "torchvision" and not backbones.can_fold_bn(m.backbone):
            raise ValueError(f"model.variant '{m.variant}' exists for ResNets only, not {m.backbone}")
    if m.modality_dropout and not m.missing_inputs:
        raise ValueError("model.modality_dropout needs model.missing_inputs=True")


def build_model(config) -> FusionClassifier:
    """The classifier a run's config describes (``config.modalities`` and ``config.model``)."""
    m = config.model
    return FusionClassifier(
        modalities=names.parse_modalities(config.modalities),
        backbone=m.backbone,
        width=m.width,
        dtype=jnp.dtype(m.dtype),
        variant=m.variant,
        missing_inputs=m.missing_inputs,
        modality_dropout=m.modality_dropout,
        temporal_pool=m.temporal_pool,
        lowering=m.get("lowering", "auto"),
    )  # runs stored before the field: auto
