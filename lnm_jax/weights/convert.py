"""Weight conversion between our Flax ResNets and torchvision / Keras, in plain numpy.

No framework is imported here: state_dicts and Keras layer weights come in as dicts of numpy
arrays (see ``lnm_jax.weights.io`` for reading the files). Every conversion is checked against
the Flax model's own structure: a missing, unexpected or mis-shaped tensor is an error naming
the key.

Layouts: torch conv ``weight`` is OIHW, Flax ``kernel`` HWIO; torch BatchNorm
``weight, bias, running_mean, running_var`` <-> Flax ``scale, bias`` (params) and
``mean, var`` (batch_stats). Keras conv ``kernel`` is already HWIO; BatchNormalization
``gamma, beta, moving_mean, moving_variance``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from lnm_jax.fileio import problems_text
from lnm_jax.models.backbones import NAMES, backbone


class WeightMismatchError(KeyError):
    """A source tensor is missing, unexpected or of the wrong shape; the message names it."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


def expected_variables(arch: str, variant: str = "torchvision") -> dict:
    """Shapes of the Flax backbone's params and batch_stats (no computation)."""
    model = backbone(arch, variant=variant)
    v = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 80, 80, 3)), train=False))
    return {"params": v["params"], "batch_stats": v.get("batch_stats", {})}


def _fill(flat_src: dict[tuple, np.ndarray], arch: str, variant: str, source_names: dict, source_key) -> dict:
    """Checks ``flat_src`` (flax-path -> array) against the model and nests it;
    ``source_key(path)`` names the source tensor a missing path would come from."""
    flat_expected = traverse_util.flatten_dict(expected_variables(arch, variant))
    problems = []
    for path, spec in flat_expected.items():
        if path not in flat_src:
            problems.append(f"missing tensor for {'/'.join(path)} (source key '{source_key(path)}')")
        elif tuple(flat_src[path].shape) != tuple(spec.shape):
            problems.append(
                f"shape mismatch at source key '{source_names[path]}': got "
                f"{tuple(flat_src[path].shape)}, {arch} expects {tuple(spec.shape)} "
                f"(after layout conversion)"
            )
    for path in flat_src.keys() - flat_expected.keys():
        problems.append(f"unexpected source key '{source_names[path]}' (no {'/'.join(path)} in {arch})")
    if problems:
        raise WeightMismatchError(problems_text(sorted(problems), about=f" converting to {arch} ({variant})"))
    # copies (C-ordered float32), never views of the source: a torch model trained on after its
    # port updated its running statistics in place, inside the ported variables too (a
    # fresh-user trial against PyTorch: a running mean of zeros read back as -0.0004)
    nested = traverse_util.unflatten_dict({k: np.array(v, np.float32, order="C") for k, v in flat_src.items()})
    return {"params": nested["params"], "batch_stats": nested.get("batch_stats", {})}


# ------------------------------------------------------------------------------ torchvision

_TORCH_BN = {
    "weight": ("params", "scale"),
    "bias": ("params", "bias"),
    "running_mean": ("batch_stats", "mean"),
    "running_var": ("batch_stats", "var"),
}
# The ImageNet classifiers (ResNet/Inception fc, VGG classifier, Inception's auxiliary head).
TORCH_IGNORED = re.compile(r"(.*\.num_batches_tracked|fc\..*|classifier\..*|AuxLogits\..*)$")


def _torch_module_path(name: str) -> tuple[str, ...]:
    """'layer2.0.downsample.1' -> ('layer2_0', 'downsample_1'); 'bn1' -> ('bn1',);
    'features.3' -> ('features_3',); 'Mixed_5b.branch1x1.conv' -> ('Mixed_5b', 'branch1x1', 'conv')."""
    if re.fullmatch(r"features\.\d+", name):
        return (name.replace(".", "_"),)
    m = re.fullmatch(r"layer(\d)\.(\d+)\.(.+)", name)
    if not m:
        return tuple(name.split("."))
    inner = m.group(3).replace("downsample.", "downsample_")
    return (f"layer{m.group(1)}_{m.group(2)}", inner)


def from_torchvision(state_dict: Mapping[str, np.ndarray], arch: str, *, transform_input: bool = True) -> dict:
    """torchvision ResNet / VGG-11 / Inception-v3 state_dict -> ``{'params', 'batch_stats'}``
    of our backbone: float32 numpy arrays of its own (copies: later changes to the source, such
    as a torch model's running statistics updated in training, do not reach them).

    Every port takes ImageNet-standardised RGB, as torchvision's ImageNet models do. For
    Inception-v3, ``transform_input`` says the state_dict's model ran with torchvision's
    ``transform_input=True`` (what ``inception_v3(weights=...)`` builds, hence the default): its
    first convolution is then rewritten to compute that step itself
    (:func:`inception_transform_input_stem`); ``False`` ports a model built without it as it is.
    ValueError: ``transform_input=False`` for another arch (it has no such step).

    The ImageNet classifiers and ``num_batches_tracked`` are ignored.
    """
    if arch not in NAMES:
        raise ValueError(f"unknown arch '{arch}', expected one of {list(NAMES)}")
    if not transform_input and arch != "inception_v3":
        raise ValueError(f"transform_input=False is torchvision Inception-v3's setting; {arch} has no such step")
    flat, names = {}, {}
    for key, value in state_dict.items():
        if TORCH_IGNORED.fullmatch(key):
            continue
        module, _, leaf = key.rpartition(".")
        value = np.asarray(value)
        mod_path = _torch_module_path(module)
        is_conv = f"{module}.running_mean" not in state_dict  # else a BatchNorm
        if is_conv and leaf == "weight":
            path = ("params",) + mod_path + ("kernel",)
            value = value.transpose(2, 3, 1, 0) if value.ndim == 4 else value
        elif not is_conv and leaf in _TORCH_BN:
            coll, name = _TORCH_BN[leaf]
            path = (coll,) + mod_path + (name,)
        else:
            path = ("params",) + mod_path + (leaf,)
        flat[path], names[path] = value, key
    stem, stem_bn = ("params", "Conv2d_1a_3x3", "conv", "kernel"), ("batch_stats", "Conv2d_1a_3x3", "bn", "mean")
    if arch == "inception_v3" and transform_input and stem in flat and stem_bn in flat:  # else _fill names what lacks
        if flat[stem].shape[2:3] == (3,) and flat[stem_bn].shape == flat[stem].shape[3:]:
            flat[stem], flat[stem_bn] = inception_transform_input_stem(flat[stem], flat[stem_bn])
    return _fill(flat, arch, "torchvision", names, torch_key)


# torchvision's ImageNet models take RGB in [0, 1] standardised by these means and
# IMAGENET_STD_RGB (below); its Inception-v3 with transform_input=True turns that input into
# (x - 0.5) / 0.5 before its first convolution (Inception3._transform_input).
IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)
IMAGENET_STD_RGB = (0.229, 0.224, 0.225)


def inception_transform_input_stem(kernel: np.ndarray, running_mean: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """torchvision Inception-v3's first convolution ``kernel`` ``[3, 3, 3 (RGB), C]`` (HWIO) and
    its BatchNorm's ``running_mean`` ``[C]``, of a model run with ``transform_input=True`` ->
    the pair that computes the same on ImageNet-standardised RGB ``z`` without that step.

    torchvision feeds the convolution ``t_j = a_j z_j + b_j``, ``a_j = s_j / 0.5``,
    ``b_j = (m_j - 0.5) / 0.5`` (m, s: :data:`IMAGENET_MEAN_RGB`, :data:`IMAGENET_STD_RGB`).
    As the convolution is linear and unpadded (``Conv2d_1a_3x3``: stride 2, padding 0), it
    equals ``conv(W a, z) + k`` with ``k_c = sum_{h,w,j} W[h, w, j, c] b_j`` at every output
    pixel; the BatchNorm after it, which has no bias before it, subtracts its mean: in
    evaluation ``running_mean - k`` absorbs k exactly, and in training a batch's mean moves by k
    with it (its variance not at all), so the running statistics it keeps are those of
    ``conv(W a, z)``. Exact up to float32 rounding. Without it, a port read standardised input
    where its weights expect ``(x - 0.5) / 0.5`` (helper-89's trial: its pooled features then
    correlated with torchvision's at 0.21)."""
    w = np.asarray(kernel, np.float64)
    a = np.asarray(IMAGENET_STD_RGB, np.float64) / 0.5
    b = (np.asarray(IMAGENET_MEAN_RGB, np.float64) - 0.5) / 0.5
    k = np.einsum("hwjc,j->c", w, b)
    return (
        (w * a[None, None, :, None]).astype(kernel.dtype),
        (np.asarray(running_mean, np.float64) - k).astype(running_mean.dtype),
    )


_TORCH_BN_INV = {v: k for k, v in _TORCH_BN.items()}


def torch_key(path: tuple[str, ...]) -> str:
    """Flax path ('params', 'layer2_0', 'downsample_0', 'kernel') -> 'layer2.0.downsample.0.weight'."""
    coll, *mods, leaf = path
    module = re.sub(r"^layer(\d)_(\d+)", r"layer\1.\2", ".".join(mods)).replace("downsample_", "downsample.")
    module = re.sub(r"^features_(\d+)", r"features.\1", module)
    return f"{module}.{'weight' if leaf == 'kernel' else _TORCH_BN_INV[(coll, leaf)]}"


def to_torchvision(variables: Mapping) -> dict[str, np.ndarray]:
    """Our backbone's ``{'params', 'batch_stats'}`` -> a torchvision state_dict (numpy arrays of
    its own, writable; ``num_batches_tracked`` zeros). Load with ``strict=False`` if the model has an ``fc``."""
    out: dict[str, np.ndarray] = {}
    for path, value in traverse_util.flatten_dict({c: dict(variables[c]) for c in ("params", "batch_stats")}).items():
        value = np.asarray(value, np.float32)
        key = torch_key(path)
        # a copy, as _fill's: torch.from_numpy shares memory, so a view would let a torch model
        # write into these variables (or warn of a read-only JAX buffer)
        out[key] = np.array(value.transpose(3, 2, 0, 1) if path[-1] == "kernel" else value, order="C")
        if path[-1] == "mean":
            out[key.rsplit(".", 1)[0] + ".num_batches_tracked"] = np.zeros((), np.int64)
    return out


# ------------------------------------------------------------------------------------ Keras

_KERAS_BN = {
    "gamma": ("params", "scale"),
    "beta": ("params", "bias"),
    "moving_mean": ("batch_stats", "mean"),
    "moving_variance": ("batch_stats", "var"),
}


# Keras applications.ResNet50's input (its preprocess_input, "caffe" mode): BGR on a 0-255
# scale minus these per-channel means, not scaled; torchvision's ResNets take RGB in [0, 1]
# standardised by ImageNet's means and standard deviations (IMAGENET_MEAN_RGB, IMAGENET_STD_RGB).
KERAS_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


def standardised_rgb_stem(kernel: np.ndarray) -> np.ndarray:
    """Keras ResNet50's first kernel ``[7, 7, 3 (B, G, R), C]``, which takes caffe input
    ``c_k = 255 x_k - m_k`` (:data:`KERAS_CAFFE_MEAN_BGR`), -> the kernel that computes the same
    on ``z_j = (x_j - m_j / 255) / s_j`` in RGB order (s: :data:`IMAGENET_STD_RGB`): RGB at the
    scale of ImageNet-standardised input, as torchvision's ports take (its means within 0.002).
    A run feeds either kind of port its own per-modality standardisation (``data.norm``), not
    ImageNet's. As ``c = 255 s z`` channel by channel, ``W'[..., j, :] = 255 s_j W[..., 2 - j, :]``.
    Exact, borders too: the zero padding before Keras's convolution pads c with 0, z = 0 here.
    Without it, a Keras port read the cohort's standardised images (unit scale, RGB) where its
    weights expect about 58 x that scale in BGR order (a fresh-user trial: its features then
    correlated with Keras's at 0.008)."""
    scale = 255.0 * np.asarray(IMAGENET_STD_RGB, np.float64)[None, None, :, None]
    return (np.asarray(kernel, np.float64)[:, :, ::-1, :] * scale).astype(kernel.dtype)


def keras_caffe_input(z: np.ndarray) -> np.ndarray:
    """The Keras ResNet50 input (caffe: BGR, 0-255, mean-subtracted) of the same pictures as
    ``z`` (``[..., 3]`` standardised RGB, what a Keras port here takes): ``(255 s z)`` in BGR
    order; for comparing a port with Keras (:func:`standardised_rgb_stem`)."""
    return (np.asarray(z, np.float64) * 255.0 * np.asarray(IMAGENET_STD_RGB))[..., ::-1].astype(np.float32)


def from_keras_resnet50(layers: Mapping[str, Mapping[str, np.ndarray]]) -> dict:
    """Keras ``applications.ResNet50`` weights, as ``{layer_name: {weight_name: array}}``, ->
    ``{'params', 'batch_stats'}`` of our ResNet-50 in its ``keras_v1`` variant
    (``backbone('resnet50', **KERAS_V1)``), its first kernel taking standardised RGB
    (:func:`standardised_rgb_stem`). The ``predictions`` layer is ignored."""
    flat, names = {}, {}
    for layer, weights in layers.items():
        if layer == "predictions" or not weights:
            continue
        if layer in ("conv1_conv", "conv1_bn"):
            mod = ("conv1",) if layer == "conv1_conv" else ("bn1",)
        else:
            m = re.fullmatch(r"conv(\d)_block(\d+)_(\d)_(conv|bn)", layer)
            if not m:
                mod = (layer,)  # reported as unexpected by _fill
            else:
                stage, block, idx, kind = int(m.group(1)) - 1, int(m.group(2)) - 1, m.group(3), m.group(4)
                if idx == "0":
                    inner = "downsample_0" if kind == "conv" else "downsample_1"
                else:
                    inner = f"{kind}{idx}"
                mod = (f"layer{stage}_{block}", inner)
        for wname, value in weights.items():
            if wname in _KERAS_BN:
                coll, leaf = _KERAS_BN[wname]
                path = (coll,) + mod + (leaf,)
            else:
                path = ("params",) + mod + (wname,)
            value = np.asarray(value)
            if layer == "conv1_conv" and wname == "kernel" and value.shape[2:3] == (3,):
                value = standardised_rgb_stem(value)  # another shape: _fill names the mismatch
            flat[path], names[path] = value, f"{layer}/{wname}"
    return _fill(flat, "resnet50", "keras_v1", names, keras_key)


_KERAS_BN_INV = {v: k for k, v in _KERAS_BN.items()}


def keras_key(path: tuple[str, ...]) -> str:
    """Flax path ('params', 'layer1_0', 'conv2', 'kernel') -> 'conv3_block1_2_conv/kernel'."""
    coll, *mods, leaf = path
    weight = _KERAS_BN_INV.get((coll, leaf), leaf)
    if mods == ["conv1"] or mods == ["bn1"]:
        return f"conv1_{'conv' if mods == ['conv1'] else 'bn'}/{weight}"
    stage, block = (int(x) for x in re.fullmatch(r"layer(\d)_(\d+)", mods[0]).groups())
    inner = mods[1]
    if inner.startswith("downsample_"):
        idx, kind = "0", ("conv" if inner.endswith("0") else "bn")
    else:
        idx, kind = inner[-1], inner[:-1]
    return f"conv{stage + 1}_block{block + 1}_{idx}_{kind}/{weight}"
