"""Grad-CAM (and HiResCAM, Grad-CAM++) for both image branches, by ``jax.grad``.

Target: the model has one sigmoid output, so the class score is the LNM *logit* ``z``
(``target="lnm"``) or ``-z`` for the non-LNM evidence (``target="no_lnm"``), as for a
two-logit softmax model ``[0, z]`` (pytorch-grad-cam's ``BinaryClassifierOutputTarget(1)`` and
``(0)``). The logit, not ``sigmoid(z)``: the sigmoid's derivative ``p(1-p)`` scales every raw map
(the scaled Grad-CAM and HiResCAM maps are the same) and underflows for confident patients
(p(1-p) ~ exp(-|z|), below float32's smallest normal number for |z| > 87), leaving blank maps.

Layers (``names.CAM_LAYERS``), as pytorch-grad-cam hooks torchvision's ResNets: ``stem`` the
max pool's output (``model.maxpool``), ``stageN`` the last block's output, after its residual
ReLU (``model.layerN[-1]``). Checked against pytorch-grad-cam 1.5.4 on ported ResNet-50
weights and BUS-BRA images (a fresh-user trial): Grad-CAM and HiResCAM equal within float32
rounding at every layer, for both targets; its Grad-CAM++ adds 1e-6 to the weights'
denominator, which this module does not (:func:`channel_weights`).

Per patient, not per batch: with BatchNorm in inference mode patient ``i``'s logit depends only
on patient ``i``'s activations, so ``grad(sum_i z_i)`` gives each patient's own gradient in one
call (differentiating a batch maximum, a common bug, would give one patient a gradient).

Cost: gradients are taken only with respect to the chosen layer's activations, through the
ResNet's ``perturb`` hooks; everything upstream is a constant to ``jax.grad``, so the backward
pass runs from the logit back to that layer only, and a batch of CAMs costs about one forward.
"""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from lnm_jax import compile_options, names
from lnm_jax.memo import cache_where_hashable

METHODS = names.CAM_METHODS
LAYERS = names.CAM_LAYERS  # shallow to deep
AUTO_LAYER = "auto"
# A map this small cannot place anything (at 1x1 every Grad-CAM is exactly 0 after scaling);
# the automatic choice wants the field's usual 7x7 (ResNet-50's stage4 at 224 px).
MIN_MAP, AUTO_MIN_MAP = 4, 7
TARGETS = dict(zip(names.CAM_TARGETS, (1.0, -1.0)))  # the sign of the logit each explains
IMAGE_BRANCHES = names.IMAGE_INPUTS
EPS = 1e-7


def channel_weights(acts: jax.Array, grads: jax.Array, method: str) -> jax.Array:
    """The per-position, per-channel weights that multiply the activations (NHWC)."""
    if method == "gradcam":
        return jnp.broadcast_to(jnp.mean(grads, axis=(1, 2), keepdims=True), acts.shape)
    if method == "hirescam":
        return grads
    if method == "gradcam++":
        # Chattopadhyay et al. 2018, eq. 19 with exp(S) for the score: alpha = g^2 / (2 g^2 +
        # sum(A) g^3), which only positive gradients use (relu(g) * alpha). For g > 0 it is
        # exactly 1 / (2 + sum(A) g), > 0 for the post-ReLU layers hooked here (A >= 0): no
        # epsilon and no g^2, which underflows float32 for |g| < 1e-19. pytorch-grad-cam adds 1e-6
        # to the denominator (an earlier form here 1e-7): alpha off by 34% (8.6%) at |g| ~ 1e-3,
        # typical of these models' gradients (a fresh-user trial).
        sum_a = jnp.sum(acts, axis=(1, 2), keepdims=True)
        positive = grads > 0.0
        alpha = 1.0 / (2.0 + sum_a * jnp.where(positive, grads, 0.0))
        w = jnp.sum(jnp.where(positive, grads * alpha, 0.0), axis=(1, 2), keepdims=True)
        return jnp.broadcast_to(w, acts.shape)
    raise ValueError(f"unknown CAM method '{method}', expected one of {METHODS}")


def cam_from(acts: jax.Array, grads: jax.Array, method: str, out_size: tuple[int, int] | None):
    """ReLU of the weighted channel sum, upsampled, scaled to [0, 1] per patient.

    Scaling subtracts the minimum and divides by ``max + eps``: a flat map becomes zeros,
    never NaN. Also returns the raw (unscaled, feature-resolution) map.
    """
    raw = jax.nn.relu(jnp.sum(channel_weights(acts, grads, method) * acts, axis=-1))  # [B, h, w]
    cam = raw
    if out_size is not None:
        cam = jax.image.resize(raw, (raw.shape[0],) + tuple(out_size), method="bilinear")
    cam = cam - jnp.min(cam, axis=(1, 2), keepdims=True)
    cam = cam / (jnp.max(cam, axis=(1, 2), keepdims=True) + EPS)
    return cam, raw


def layer_sizes(model: nn.Module, params, batch_stats, batch) -> dict[str, tuple[int, int]]:
    """(height, width) of each hooked layer's map for this batch's image size, the smallest
    over the image branches; from shapes alone (``jax.eval_shape``, nothing computed)."""
    return _sizes(_hook_shapes(model, {"params": params, "batch_stats": batch_stats}, batch))


def _hook_shapes(model: nn.Module, variables: dict, batch) -> dict:
    """The shape of every perturb hook's activation, per backbone and layer (``jax.eval_shape``:
    nothing computed)."""
    return jax.eval_shape(lambda: model.apply(variables, batch, train=False, mutable=["perturbations"])[1])[
        "perturbations"
    ]


def _sizes(hooks: dict) -> dict[str, tuple[int, int]]:
    """:func:`layer_sizes` from :func:`_hook_shapes`."""
    out: dict[str, tuple[int, int]] = {}
    for key, layers in hooks.items():
        if key.removesuffix("_backbone") not in IMAGE_BRANCHES:
            continue
        for layer, s in layers.items():
            h, w = s.shape[1:3]
            out[layer] = min(out.get(layer, (h, w)), (h, w))
    return out


def choose_layer(
    sizes: dict[str, tuple[int, int]], requested: str = AUTO_LAYER, lesion_head: str = ""
) -> tuple[str, str | None]:
    """(layer, note). ``auto``: the layer of the model's lesion head (``lesion_head``, where it
    was taught the lesion) when it has one whose map is at least 4x4, else the deepest layer
    whose map is at least 7x7 (else the largest map). A requested layer whose map is smaller
    than 4x4 falls back to the deepest layer below it whose map is at least 4x4 (else the automatic
    choice), with a note naming both; ValueError for a layer
    the model does not have."""
    order = [layer for layer in LAYERS if layer in sizes] + [layer for layer in sizes if layer not in LAYERS]

    def shown(layer):
        return f"{layer} ({sizes[layer][0]}x{sizes[layer][1]})"

    big_enough = [layer for layer in order if min(sizes[layer]) >= AUTO_MIN_MAP]
    auto = big_enough[-1] if big_enough else max(order, key=lambda layer: min(sizes[layer]))
    if requested == AUTO_LAYER and lesion_head in sizes and min(sizes[lesion_head]) >= MIN_MAP:
        return lesion_head, None
    if requested == AUTO_LAYER:
        note = None if big_enough else f"no layer's map reaches {AUTO_MIN_MAP}x{AUTO_MIN_MAP}: using {shown(auto)}"
        return auto, note
    if requested not in sizes:
        raise ValueError(f"layer '{requested}' is not a hooked layer of this model ({', '.join(order)})")
    if min(sizes[requested]) < MIN_MAP:
        # the nearest usable layer below the one asked for: the deepest shallower one of 4x4 or more
        below = [layer for layer in order[: order.index(requested)] if min(sizes[layer]) >= MIN_MAP]
        nearest = below[-1] if below else auto
        return nearest, (
            f"the {shown(requested)} map is smaller than {MIN_MAP}x{MIN_MAP} at this image size, too coarse to place "
            f"a lesion (at 1x1 every CAM is blank): using {shown(nearest)} instead, the deepest layer below it with "
            "a large enough map"
        )
    return requested, None


def make_cam_fn(
    model: nn.Module, *, layer: str = AUTO_LAYER, method: str = "gradcam", target: str = "lnm", upsample: bool = True
) -> Callable:
    """Returns jitted ``cams(params, batch_stats, batch) -> dict``.

    ``layer``: one of :data:`LAYERS`, or ``auto`` (the default, as ``lnm-jax gradcam``'s):
    :func:`choose_layer` at the batch's image size, the model's lesion head's layer first
    (``layer_sizes`` and ``choose_layer`` tell which). A layer whose map is 1x1 at the batch's
    size is refused when the function is traced (every scaled map of it is 0): ValueError
    naming the layer and the deepest usable one.

    The dict has, per image branch in the model: ``{branch}`` (CAM [B, H, W] in [0, 1],
    zeros where that image is missing), ``{branch}_raw`` (unscaled, feature resolution) and
    ``{branch}_available`` (bool [B]); and ``logit`` [B].

    Still images only: ValueError naming the input when an image input of ``batch`` is not
    ``[B, H, W, C]`` (a CEUS clip ``[B, T, H, W, 3]`` has no single map per patient to explain;
    ``lnm-jax gradcam`` refuses clip runs for the same reason). Other input errors: the model's
    (``FusionClassifier.check_inputs``), when the returned function is first traced.
    """
    if method not in METHODS:
        raise ValueError(f"unknown CAM method '{method}', expected one of {METHODS}")
    if not any(m in IMAGE_BRANCHES for m in getattr(model, "modalities", ())):
        raise ValueError(f"make_cam_fn: the model has no image branch to explain (its inputs: {model.modalities})")
    if target not in TARGETS:
        raise ValueError(f"unknown CAM target '{target}', expected one of {sorted(TARGETS)}")
    if layer not in (AUTO_LAYER, *LAYERS):
        raise ValueError(f"unknown CAM layer '{layer}', expected '{AUTO_LAYER}' or one of {LAYERS}")
    return _cam_fn(model, layer, method, target, upsample, compile_options.options_key(compile_options.INFERENCE))


@cache_where_hashable(maxsize=8)  # (a module with an unhashable field: built for its call alone)
def _cam_fn(model: nn.Module, layer: str, method: str, target: str, upsample: bool, _options: tuple) -> Callable:
    """:func:`make_cam_fn`'s function, one per model (Flax modules compare and hash by their
    fields) and setting in a process: a second Grad-CAM of one model (``evaluate``'s lesion
    evidence, then ``gradcam``; a notebook's calls) reuses its traced and compiled programs."""
    sign = TARGETS[target]
    branches = [m for m in getattr(model, "modalities", ()) if m in IMAGE_BRANCHES]

    def cams(params, batch_stats, batch):
        for b in branches:
            if b in batch and jnp.ndim(batch[b]) != 4:
                raise ValueError(
                    f"make_cam_fn: batch['{b}'] must be still images [B, H, W, 3], got shape "
                    f"{list(jnp.shape(batch[b]))}: Grad-CAM explains still images only, not clips [B, T, H, W, 3]"
                )
        variables = {"params": params, "batch_stats": batch_stats}
        hooks = _hook_shapes(model, variables, batch)  # one trace for the layer's choice and the zeros
        chosen = _layer_for(_sizes(hooks), layer, getattr(model, "lesion_head", ""))
        zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), hooks)
        keys = [f"{b}_backbone" for b in branches]

        def score(selected):
            pert = {k: dict(v) for k, v in zeros.items()}
            for k, a in zip(keys, selected):
                pert[k][chosen] = a
            out = model.apply({**variables, "perturbations": pert}, batch, train=False)
            return sign * jnp.sum(out["logit"]), out

        grads, out = jax.grad(score, has_aux=True)([zeros[k][chosen] for k in keys])
        result = {"logit": out["logit"]}
        for b, g in zip(branches, grads):
            acts = out[b][chosen].astype(jnp.float32)
            size = batch[b].shape[1:3] if upsample else None
            cam, raw = cam_from(acts, g.astype(jnp.float32), method, size)
            present = batch.get(names.has(b), jnp.ones(cam.shape[0], bool)).astype(bool)
            result[b] = jnp.where(present[:, None, None], cam, 0.0)
            result[f"{b}_raw"] = jnp.where(present[:, None, None], raw, 0.0)
            result[f"{b}_available"] = present
        return result

    return compile_options.jit(cams, kind=compile_options.INFERENCE)


def _layer_for(sizes: dict[str, tuple[int, int]], layer: str, lesion_head: str) -> str:
    """make_cam_fn's layer at these map ``sizes``: ``auto`` as :func:`choose_layer` picks it; a
    named one as named, refused where its map is 1x1 (its scaled maps are all zeros)."""
    chosen = choose_layer(sizes, layer, lesion_head)[0]  # ValueError for a layer the model does not have
    if layer == AUTO_LAYER:
        return chosen
    if max(sizes[layer]) == 1:
        raise ValueError(
            f"make_cam_fn: the {layer} map is 1x1 at this image size, so every scaled map of it is 0: use a "
            f"shallower layer ({chosen}, the deepest of {MIN_MAP}x{MIN_MAP} or more) or layer='{AUTO_LAYER}'"
        )
    return layer
