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

Beyond the paper's head (``fusion='concat'``, the default of the ``paper_*`` configs), for
cohorts of a few hundred patients where one dense layer over 4,097 features never gives a strong
binary flag its weight:

- ``input_heads``: one logit per input (``Dense(1)`` on its feature), returned in
  ``out['input_logits']``; the train step adds their own losses (unimodal supervision, the
  fixed-weight form of gradient blending, Wang et al., CVPR 2020), so every branch learns the
  label by itself and evaluation can tell whether fusion beats its best single input.
- ``fusion='late'``: those per-input logits combined by a small learned layer (weights start
  at 1: the sum of the inputs' log-odds, as if independent), so a flag that alone separates
  well keeps its log-odds scale instead of competing with thousands of image features.
- ``flag_encoding='centred'``: the binary flag as -1/+1 (zero mean, unit scale for a flag
  present in half the patients) instead of 0/1, so its weight and the bias do not compete.

``lesion_head`` (a layer name: 'stage3', ...; '' off): a 1x1 convolution on each image
branch's feature map at that layer gives a lesion logit per map cell, returned in
``out['lesion_logits']`` ([B, h, w]; [B, T, h, w] for clips); the train step fits it to the
manifest's lesion masks (``train.lesion_loss_weight``: BCE + soft Dice). Multi-task learning
with an auxiliary segmentation (e.g. Zhou et al., Med Image Anal 2021, 3D breast ultrasound;
Mehta et al.'s Y-Net, MICCAI 2018): the branch's features must separate lesion from background,
the supervision Grad-CAM at that layer is judged against. The head does not enter the logit.

``branches='stacked'`` runs the image branches (two ResNets of one shape, their own weights) as
one ``vmap``-ed computation over weights stacked on a leading axis (:func:`stack_branches` maps
the per-branch layout to it): the same function, each convolution one grouped convolution of
both branches; a candidate for
the accelerator step (``scripts/benchmark.py --candidates``). Still images only.

``frozen_backbones=True`` (a call argument: the first epochs of fine-tuning a pretrained
backbone) runs the image branches in inference mode behind ``stop_gradient``: their weights and
BatchNorm statistics stay as loaded and no gradient is computed through them.

The model returns a dict of intermediates (each branch's stages, the fused
feature, the per-input logits, the logit); the sigmoid is applied only when reporting
probabilities, and the loss works on logits.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from lnm_jax import names
from lnm_jax.config import ConfigError, check_fields, model_field
from lnm_jax.models import backbones
from lnm_jax.models.backbones import backbone

DROPOUT_RNG = "modality_dropout"  # the rng stream modality dropout draws from
FUSIONS, FLAG_ENCODINGS = names.FUSIONS, names.FLAG_ENCODINGS
BACKBONE_SUFFIX = "_backbone"  # an image branch's parameters: f"{input}{BACKBONE_SUFFIX}"
BRANCHES = ("separate", "stacked")
# branches='stacked': every image branch's parameters in one entry, stacked in modalities order
STACKED_BACKBONES = "image_backbones"


def is_backbone(top_level_name: str) -> bool:
    """Whether a top-level parameter collection entry is an image branch's backbone (the rest:
    heads, absent embeddings, temporal pooling)."""
    return top_level_name.endswith(BACKBONE_SUFFIX) or top_level_name == STACKED_BACKBONES


def stack_branches(tree: dict, modalities: Sequence[str]) -> dict:
    """A params / batch_stats / perturbations tree of ``branches='separate'`` in the layout of
    ``branches='stacked'``: the image inputs' ``<input>_backbone`` entries (in ``modalities``
    order) stacked leaf by leaf into one ``image_backbones`` entry; the rest unchanged."""
    images = [m for m in modalities if m in names.IMAGE_INPUTS]
    keys = [f"{m}{BACKBONE_SUFFIX}" for m in images]
    out = {k: v for k, v in tree.items() if k not in keys}
    out[STACKED_BACKBONES] = jax.tree.map(lambda *leaves: jnp.stack(leaves), *(tree[k] for k in keys))
    return out


def available(batch: dict, modalities: Sequence[str]) -> dict[str, jax.Array]:
    """Per-row availability of each input; all true where the batch has no ``has_*`` entry."""
    n = batch[names.US_LNM].shape[0] if names.US_LNM in batch else batch[modalities[0]].shape[0]
    return {
        m: jnp.asarray(batch[names.has(m)], bool) if names.has(m) in batch else jnp.ones(n, bool) for m in modalities
    }


def drop_modalities(avail: dict[str, jax.Array], rate: float, key: jax.Array) -> dict[str, jax.Array]:
    """Hides each available input with probability ``rate``, independently; a row that would
    lose every input keeps its original availability, so an input of a row with n available
    inputs is hidden at the rate ``rate - rate**n`` (never when n = 1), below ``rate``."""
    keys = jax.random.split(key, len(avail))
    kept = {m: a & jax.random.bernoulli(k, 1.0 - rate, a.shape) for (m, a), k in zip(avail.items(), keys)}
    none_left = ~jnp.any(jnp.stack(list(kept.values())), axis=0)
    return {m: jnp.where(none_left, avail[m], kept[m]) for m in avail}


class TemporalAttentionPool(nn.Module):
    """Gated attention over a clip's frames (Ilse, Tomczak & Welling, "Attention-based deep
    multiple instance learning", ICML 2018, eq. 9): weights a_t = softmax_t(w . (tanh(V h_t) *
    sigmoid(U h_t))); ``h`` [B, T, D] -> (sum_t a_t h_t [B, D], a [B, T])."""

    hidden: int = 128

    @nn.compact
    def __call__(self, h):  # [B, T, D] -> ([B, D], [B, T])
        gate = jnp.tanh(nn.Dense(self.hidden, name="V")(h)) * nn.sigmoid(nn.Dense(self.hidden, name="U")(h))
        weights = jax.nn.softmax(nn.Dense(1, name="w")(gate)[..., 0], axis=-1)
        return jnp.einsum("bt,btd->bd", weights, h), weights


class FusionClassifier(nn.Module):
    """The paper's multimodality classifier and its extensions: one image branch per image input
    (``backbone``, not shared; each pooled to a feature, 2,048-d for ResNet-50), concatenated with
    the US-LNM flag (4,097 features for the triple model) into one logit (``fusion='concat'``,
    Guang et al. 2023), or per-input logits combined by learned weights
    (``fusion='late'``). Takes a batch dict (NHWC float32 images [B, H, W, 3], a CEUS clip
    [B, T, H, W, 3], ``us_lnm`` float32 [B], ``has_<input>`` bool [B]; docs/python.md (b)) and
    returns ``{"logit": [B], ...}`` (per-input logits, lesion maps, attention weights where
    configured). Build it from a config with :func:`build_model`; the fields are those of
    ``config.model``."""

    modalities: tuple[str, ...]
    backbone: str = "resnet50"
    width: int = 64
    dtype: Any = jnp.float32
    variant: str = "torchvision"  # or "keras_v1" (weights ported from Keras ResNet50)
    missing_inputs: bool = False  # learned absent embeddings + availability indicators
    modality_dropout: float = 0.0  # training only; needs missing_inputs
    temporal_pool: str = "mean"  # CEUS clips: 'mean' | 'attention'
    fold_bn: bool = False  # inference with BatchNorm folded into the convs (models/folding.py)
    lowering: str = "auto"  # 1x1 convs, max pools: XLA's ops or GEMMs, slices (CPU) (models/lowering.py)
    fusion: str = "concat"  # 'concat' (the paper) | 'late' (per-input logits, learned combination)
    input_heads: bool = False  # per-input logits for auxiliary losses (always on with 'late')
    flag_encoding: str = "raw"  # 'raw' (0/1, the paper) | 'centred' (-1/+1)
    lesion_head: str = ""  # a layer of the image branches ('stage3' ...): lesion logits there; '' none
    stem: str = "auto"  # ResNets: 'conv7' | 'space_to_depth', the same stem computed two ways (models/lowering.py)
    bn_float32_reductions: bool = True  # ResNets: False = BatchNorm statistics in the activation dtype
    batchnorm: str = "auto"  # ResNets: 'fused' = BatchNorm's training gradient written out (models/batchnorm.py)
    bn_running_var: str = "biased"  # names.RUNNING_VARS: 'unbiased' = PyTorch's running-variance update
    branches: str = "separate"  # 'stacked': the image branches as one vmapped computation (the same function)
    # H = W of the images it takes (build_model: data.image_size); None: any size the backbone can take
    image_size: int | None = None
    # the frames T of the CEUS clips it takes (build_model: data.clip_frames; 1: stills [B, H, W, 3],
    # T > 1: clips [B, T, H, W, 3], a still given as T copies); None: either, any T
    clip_frames: int | None = None

    @property
    def has_input_heads(self) -> bool:
        return self.input_heads or self.fusion == "late"

    def _image_branches(self, inputs: dict[str, tuple], train: bool) -> dict[str, dict]:
        """Each image input's backbone output dict, from ``inputs`` {input: (images [N, H, W, 3],
        BatchNorm mask [N] or None)}: a backbone per input, or (``branches='stacked'``) one
        vmapped backbone over the inputs stacked in ``modalities`` order."""
        kw = dict(
            width=self.width,
            dtype=self.dtype,
            variant=self.variant,
            fold_bn=self.fold_bn,
            lowering=self.lowering,
            stem=self.stem,
            bn_float32_reductions=self.bn_float32_reductions,
            batchnorm=self.batchnorm,
            running_var=self.bn_running_var,
        )
        if self.branches == "separate":
            return {
                m: backbone(self.backbone, name=f"{m}{BACKBONE_SUFFIX}", **kw)(x, train=train, mask=mask)
                for m, (x, mask) in inputs.items()
            }
        shapes = {m: tuple(x.shape) for m, (x, _) in inputs.items()}
        if len(inputs) < 2 or len(set(shapes.values())) > 1:
            raise ValueError(f"branches='stacked' needs two or more image inputs of one shape, got {shapes}")
        x = jnp.stack([x for x, _ in inputs.values()])
        masks = [mask for _, mask in inputs.values()]
        mask = None if masks[0] is None else jnp.stack(masks)
        out = backbones.stacked_backbone(self.backbone, len(inputs), name=STACKED_BACKBONES, **kw)(x, train, mask)
        return {m: jax.tree.map(lambda a, i=i: a[i], out) for i, m in enumerate(inputs)}

    def _check_fields(self):
        if self.fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {self.fusion!r}")
        if self.flag_encoding not in FLAG_ENCODINGS:
            raise ValueError(f"flag_encoding must be one of {FLAG_ENCODINGS}, got {self.flag_encoding!r}")
        if self.modality_dropout and not self.missing_inputs:
            raise ValueError(
                "modality_dropout needs missing_inputs=True (a dropped input must "
                "be replaced by the learned absent embedding)"
            )
        if not 0.0 <= self.modality_dropout < 1.0:
            raise ValueError(f"modality_dropout must be in [0, 1), got {self.modality_dropout}")
        if self.lesion_head and self.lesion_head not in names.CAM_LAYERS:
            raise ValueError(f"lesion_head must be '' or one of {names.CAM_LAYERS}, got {self.lesion_head!r}")
        if self.branches not in BRANCHES:
            raise ValueError(f"branches must be one of {BRANCHES}, got {self.branches!r}")
        if self.temporal_pool not in ("mean", "attention"):
            raise ValueError(f"temporal_pool must be 'mean' or 'attention', got {self.temporal_pool!r}")

    def check_inputs(self, batch: dict) -> int:
        """The batch size B of ``batch``, or ValueError naming the first input this model cannot
        read, with the expected and the given shape or dtype; from shapes and dtypes alone, so it
        runs when a jitted call is traced and costs nothing after. Each image input
        (``model.modalities``): floating (normalised as the loaders normalise it, not uint8
        pixels), NHWC ``[B, H, W, 3]`` (a CEUS clip ``[B, T, H, W, 3]``), H = W = ``image_size``
        and T = ``clip_frames`` (a still where it is 1; B-mode a still) when the model has them
        (a clip model had taken a still, skipping its trained temporal pool, and a still model a
        clip, in silence: helper-69); ``us_lnm``: ``[B]``; each ``has_*`` present: ``[B]``; one B
        for all of them. Values (the flag's 0/1) are not checked: they are not known at trace
        time."""
        rows: dict[str, int] = {}

        def shape_of(key):
            if key not in batch:
                raise ValueError(f"batch: no '{key}', an input of this model (modalities {list(self.modalities)})")
            x = batch[key]
            if not hasattr(x, "shape") or not hasattr(x, "dtype"):
                raise ValueError(f"batch['{key}']: expected an array, got {type(x).__name__}")
            return tuple(x.shape), jnp.dtype(x.dtype)

        for m in self.modalities:
            shape, dtype = shape_of(m)
            if m in names.IMAGE_INPUTS:
                want = "[B, H, W, 3] (NHWC)" + (" or a clip [B, T, H, W, 3]" if self.branches == "separate" else "")
                if not jnp.issubdtype(dtype, jnp.floating):
                    raise ValueError(
                        f"batch['{m}']: expected a floating image normalised per input ((x - mean) / std of "
                        f"[0, 1] pixels), got dtype {dtype}"
                    )
                ranks = (4, 5) if self.branches == "separate" else (4,)
                if len(shape) not in ranks or shape[-1] != 3:
                    hint = " (channels first? the model takes NHWC)" if len(shape) in ranks and shape[-3] == 3 else ""
                    raise ValueError(f"batch['{m}']: expected {want}, got shape {list(shape)}{hint}")
                if self.image_size is not None and shape[-3:-1] != (self.image_size, self.image_size):
                    raise ValueError(
                        f"batch['{m}']: expected H = W = {self.image_size} (the model's image_size: "
                        f"data.image_size), got shape {list(shape)}"
                    )
                if self.clip_frames is not None:
                    frames = self.clip_frames if m == names.CEUS else 1
                    if (frames > 1 and (len(shape) != 5 or shape[1] != frames)) or (frames == 1 and len(shape) != 4):
                        want = (
                            f"a clip of {frames} frames [B, {frames}, H, W, 3]" if frames > 1 else "stills [B, H, W, 3]"
                        )
                        raise ValueError(
                            f"batch['{m}']: expected {want} (the model's clip_frames: data.clip_frames), got shape "
                            f"{list(shape)}"
                        )
            elif len(shape) != 1:
                raise ValueError(f"batch['{m}']: expected shape [B], got {list(shape)}")
            rows[m] = shape[0]
        for m in self.modalities:
            if names.has(m) in batch:
                shape, _ = shape_of(names.has(m))
                if len(shape) != 1:
                    raise ValueError(f"batch['{names.has(m)}']: expected shape [B], got {list(shape)}")
                rows[names.has(m)] = shape[0]
        if len(set(rows.values())) > 1:
            raise ValueError(f"batch: every input needs the same batch size B, got {rows}")
        return next(iter(rows.values()), 0)

    def _check_perturbations(self, rows: int) -> None:
        """ValueError where the variables applied hold Grad-CAM's ``perturbations`` shaped to
        another batch size (``model.init``'s, zeros shaped to its sample batch: applied to another
        batch they broadcast into wrong-shaped logits or fail in an ``add``; helper-69)."""
        held = self.variables.get("perturbations", {}) if self.scope is not None else {}
        axis = 1 if self.branches == "stacked" else 0  # (stacked branches: [branch, B, ...])
        sizes = {int(leaf.shape[axis]) for leaf in jax.tree_util.tree_leaves(held) if leaf.ndim > axis}
        if sizes and sizes != {rows}:
            raise ValueError(
                f"the variables hold Grad-CAM 'perturbations' shaped to a batch of {sorted(sizes)[0]}, this batch "
                f"has {rows}: apply the model's state without them (lnm_jax.training.state.model_variables, as "
                "init_variables gives it)"
            )

    @nn.compact
    def __call__(self, batch: dict, train: bool = False, frozen_backbones: bool = False) -> dict[str, Any]:
        """The forward pass on a batch dict (docs/python.md (b)); ValueError from
        :meth:`check_inputs` when an input has the wrong shape or dtype."""
        self._check_fields()
        self._check_perturbations(self.check_inputs(batch))
        out: dict[str, Any] = {}
        features, input_logits, indicators, lesion_logits = [], {}, [], {}
        present = available(batch, self.modalities)  # what the data holds
        use = present  # what the model may look at
        if self.missing_inputs and train and self.modality_dropout > 0:
            use = drop_modalities(present, self.modality_dropout, self.make_rng(DROPOUT_RNG))
        out["available"] = use
        images = [m for m in self.modalities if m in names.IMAGE_INPUTS]
        inputs, frame_count = {}, {}
        for m in images:
            # BatchNorm statistics over the rows that hold this image (all rows if none do).
            mask = present[m] | ~jnp.any(present[m]) if self.missing_inputs else None
            x = batch[m]
            frame_count[m] = x.shape[1] if x.ndim == 5 else 0  # a clip: [B, T, H, W, 3]
            if frame_count[m]:
                x = x.reshape((-1,) + x.shape[2:])
                mask = None if mask is None else jnp.repeat(mask, frame_count[m])
            inputs[m] = (x, mask)
        branches = self._image_branches(inputs, train=train and not frozen_backbones)
        for m in self.modalities:
            if m in names.IMAGE_INPUTS:
                branch, frames = branches[m], frame_count[m]
                out[m] = branch
                if self.lesion_head:
                    fmap = branch[self.lesion_head]
                    if frozen_backbones:
                        fmap = jax.lax.stop_gradient(fmap)
                    head = nn.Conv(1, (1, 1), dtype=jnp.float32, name=f"{m}_lesion_head")
                    z = head(fmap.astype(jnp.float32))[..., 0]
                    lesion_logits[m] = z.reshape((-1, frames) + z.shape[1:]) if frames else z
                feature = branch["pooled"]
                if frozen_backbones:
                    feature = jax.lax.stop_gradient(feature)
                if frames:
                    feature = feature.reshape(-1, frames, feature.shape[-1])
                    if self.temporal_pool == "attention":
                        feature, out[f"{m}_frame_weights"] = TemporalAttentionPool(name=f"{m}_temporal_pool")(feature)
                    else:
                        feature = feature.mean(axis=1)
            else:
                feature = batch[names.US_LNM].astype(jnp.float32)[:, None]
                if self.flag_encoding == "centred":
                    feature = 2.0 * feature - 1.0
            if self.missing_inputs:
                absent = self.param(f"{m}_absent", nn.initializers.zeros, (feature.shape[-1],))
                feature = jnp.where(use[m][:, None], feature, absent[None])
                indicators.append(use[m].astype(jnp.float32)[:, None])
                features += [feature, indicators[-1]]
            else:
                features.append(feature)
            if self.has_input_heads:
                # from zero: a random start could give the flag the wrong sign for many steps
                head = nn.Dense(1, kernel_init=nn.initializers.zeros, dtype=jnp.float32, name=f"{m}_head")
                input_logits[m] = head(feature.astype(jnp.float32))[:, 0]
        fused = jnp.concatenate(features, axis=-1)
        out["fused"] = fused
        if input_logits:
            out["input_logits"] = input_logits
        if lesion_logits:
            out["lesion_logits"] = lesion_logits
        if self.fusion == "late":
            stacked = jnp.stack([input_logits[m] for m in self.modalities], axis=-1)
            combine = nn.Dense(1, kernel_init=nn.initializers.ones, dtype=jnp.float32, name="combine")
            out["logit"] = combine(jnp.concatenate([stacked, *indicators], axis=-1))[:, 0]
        else:
            out["logit"] = nn.Dense(1, dtype=jnp.float32, name="head")(fused)[:, 0]
        return out


def check_config(config) -> None:
    """Raises :class:`lnm_jax.config.ConfigError` (a ValueError) naming the field when
    ``config`` describes a model that cannot run, so that a command fails before anything
    trains rather than at the first step: every field's range first
    (:func:`lnm_jax.config.check_fields`, all problems at once), then the model's own
    constraints between fields (the first one found). A config's problem is the command line's
    exit 2 (it had been exit 1 for these: helper-77)."""
    check_fields(config)
    try:
        _check_model_fields(config)
    except ValueError as e:  # (_check_model_fields raises no ConfigError of its own)
        raise ConfigError([str(e)]) from None


def _check_model_fields(config) -> None:
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
        backbones.check_resnet_variants(
            m.backbone, m.get("stem", "auto"), m.get("bn_float32_reductions", True), m.get("batchnorm", "auto")
        )
        if m.get("stem", "conv7") == "space_to_depth" and config.data.image_size % 2:
            raise ValueError(f"model.stem='space_to_depth' needs an even data.image_size, got {config.data.image_size}")
    if m.modality_dropout and not m.missing_inputs:
        raise ValueError("model.modality_dropout needs model.missing_inputs=True")
    if m.get("fusion", "concat") not in FUSIONS:
        raise ValueError(f"model.fusion: unknown '{m.fusion}', expected one of {list(FUSIONS)}")
    if m.get("flag_encoding", "raw") not in FLAG_ENCODINGS:
        raise ValueError(f"model.flag_encoding: unknown '{m.flag_encoding}', expected one of {list(FLAG_ENCODINGS)}")
    t = config.train
    lesion_head, lesion_weight = m.get("lesion_head", ""), t.get("lesion_loss_weight", 0.0)
    if bool(lesion_head) != bool(lesion_weight):
        raise ValueError(
            "model.lesion_head and train.lesion_loss_weight go together: a layer name ('stage3', ...) and a "
            f"weight > 0 (got lesion_head={lesion_head!r}, lesion_loss_weight={lesion_weight})"
        )
    if lesion_head:
        if not any(i in names.IMAGE_INPUTS for i in inputs):
            raise ValueError(f"model.lesion_head needs an image input; modalities={config.modalities!r} has none")
        if config.data.get("loader", "grain") != "grain" or config.data.get("on_device", False):
            raise ValueError(
                "train.lesion_loss_weight needs the lesion masks in the batches: data.loader='grain' with "
                "data.on_device=False (the TFDS and device-resident paths carry no masks)"
            )
    if t.get("aux_loss_weight", 0.0) and not (m.get("input_heads", False) or m.get("fusion") == "late"):
        raise ValueError("train.aux_loss_weight needs per-input heads: model.input_heads=True or model.fusion='late'")


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
        lowering=m.get("lowering", "auto"),  # runs stored before the field: auto
        # runs stored before these fields: their defaults (config.MODEL_FIELDS), the paper's model
        fusion=model_field(config, "model.fusion"),
        input_heads=model_field(config, "model.input_heads"),
        flag_encoding=model_field(config, "model.flag_encoding"),
        lesion_head=model_field(config, "model.lesion_head"),
        stem=model_field(config, "model.stem"),
        bn_float32_reductions=model_field(config, "model.bn_float32_reductions"),
        batchnorm=m.get("batchnorm", "auto"),  # runs stored before the field: as a new one
        bn_running_var=model_field(config, "model.bn_running_var"),
        # the size it is trained and checked at: another runs silently on other feature statistics
        image_size=config.data.image_size
        if any(i in names.IMAGE_INPUTS for i in names.parse_modalities(config.modalities))
        else None,
        clip_frames=int(config.data.get("clip_frames", 1)),
    )
