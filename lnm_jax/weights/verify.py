"""Stage-by-stage comparison of our Flax ResNet against the real torchvision / Keras model
holding the same weights (the source framework is the reference, never our own code).

Stages: ``stem`` (after the max-pool), ``stage1`` .. ``stage4``, ``pooled`` (global average)
and ``logits`` (the source's ImageNet classifier applied to our pooled feature).
"""

from __future__ import annotations

import functools

import jax.numpy as jnp
import numpy as np

from lnm_jax import compile_options
from lnm_jax.models.backbones import backbone
from lnm_jax.weights.convert import keras_caffe_input

STAGES = ("stem", "stage1", "stage2", "stage3", "stage4", "pooled", "logits")
# Default tolerances, fp32: the max abs difference allowed, plus RTOL times the reference's
# largest magnitude (np.allclose's form: float32's rounding grows with the values it rounds;
# Keras's own input, 0-255 scale, gave stages up to 9e3 from random weights, their differences
# 1.6e-6 of that at most, so RTOL leaves 12x; at a torchvision port's values it adds little:
# 2e-4 to the logits' 1e-4 at |logit| = 10).
RTOL = 2e-5
TOLERANCE = {
    "stem": 1e-3,
    "stage1": 1e-3,
    "stage2": 1e-3,
    "stage3": 1e-3,
    "stage4": 1e-3,
    "pooled": 1e-4,
    "logits": 1e-4,
}
KERAS_STAGE_LAYERS = {
    "stem": "pool1_pool",
    "stage1": "conv2_block3_out",
    "stage2": "conv3_block4_out",
    "stage3": "conv4_block6_out",
    "stage4": "conv5_block3_out",
}


def flax_stages(
    variables: dict, arch: str, variant: str, x_nhwc: np.ndarray, fc: tuple[np.ndarray, np.ndarray] | None = None
) -> dict[str, np.ndarray]:
    """Our backbone's intermediates; ``fc`` = (W [features, classes], b) adds ``logits``."""
    model = backbone(arch, variant=variant)
    # one inference program (eagerly, every operation compiles as a program of its own)
    out = compile_options.jit(functools.partial(model.apply, train=False), kind=compile_options.INFERENCE)(
        variables, jnp.asarray(x_nhwc)
    )
    res = {k: np.asarray(out[k]) for k in STAGES[:-1]}
    if fc is not None:
        res["logits"] = res["pooled"] @ fc[0] + fc[1]
    return res


# torchvision Inception3.forward's trunk, module by module, up to its average pool
INCEPTION_TRUNK = (
    "Conv2d_1a_3x3",
    "Conv2d_2a_3x3",
    "Conv2d_2b_3x3",
    "maxpool1",
    "Conv2d_3b_1x1",
    "Conv2d_4a_3x3",
    "maxpool2",
    "Mixed_5b",
    "Mixed_5c",
    "Mixed_5d",
    "Mixed_6a",
    "Mixed_6b",
    "Mixed_6c",
    "Mixed_6d",
    "Mixed_6e",
    "Mixed_7a",
    "Mixed_7b",
    "Mixed_7c",
)


def torchvision_pooled(model, arch: str, x_nhwc: np.ndarray) -> np.ndarray:
    """[B, features]: a torchvision VGG's ``features`` or Inception-v3's trunk
    (:data:`INCEPTION_TRUNK`, after its ``transform_input`` where the model has it on) on
    ``x_nhwc``, averaged over space, in eval mode."""
    import torch

    model.eval()
    with torch.no_grad():
        y = torch.from_numpy(np.ascontiguousarray(x_nhwc)).permute(0, 3, 1, 2)
        if arch.startswith("vgg"):
            y = model.features(y)
        else:
            y = model._transform_input(y)  # the identity where transform_input is off
            for name in INCEPTION_TRUNK:
                y = getattr(model, name)(y)
        return y.mean(dim=(2, 3)).numpy()


def torchvision_stages(model, x_nhwc: np.ndarray) -> dict[str, np.ndarray]:
    """The torchvision ResNet's intermediates (eval mode), as NHWC numpy."""
    import torch

    model.eval()
    nhwc = lambda t: t.detach().permute(0, 2, 3, 1).numpy()  # noqa: E731
    with torch.no_grad():
        x = torch.from_numpy(np.ascontiguousarray(x_nhwc.transpose(0, 3, 1, 2)))
        x = model.maxpool(model.relu(model.bn1(model.conv1(x))))
        out = {"stem": nhwc(x)}
        for i in range(1, 5):
            x = getattr(model, f"layer{i}")(x)
            out[f"stage{i}"] = nhwc(x)
        pooled = torch.flatten(model.avgpool(x), 1)
        out["pooled"] = pooled.numpy()
        out["logits"] = model.fc(pooled).numpy()
    return out


def torch_fc(model) -> tuple[np.ndarray, np.ndarray]:
    return model.fc.weight.detach().numpy().T, model.fc.bias.detach().numpy()


def keras_stages(model, x_nhwc: np.ndarray) -> dict[str, np.ndarray]:
    """Keras ResNet50's intermediates (inference mode). ``model`` must include the top
    (built with ``classifier_activation=None`` so that its output is the logits)."""
    import keras

    names = list(KERAS_STAGE_LAYERS.values()) + ["avg_pool", "predictions"]
    probe = keras.Model(model.inputs, [model.get_layer(n).output for n in names])
    outs = probe([x_nhwc], training=False)
    return {k: keras.ops.convert_to_numpy(o) for k, o in zip(list(KERAS_STAGE_LAYERS) + ["pooled", "logits"], outs)}


def keras_fc(model) -> tuple[np.ndarray, np.ndarray]:
    w, b = model.get_layer("predictions").get_weights()
    return np.asarray(w), np.asarray(b)


def compare(ours: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> dict[str, float]:
    """Max abs difference per stage (shapes must agree)."""
    diffs = {}
    for k in STAGES:
        if k in ours and k in reference:
            if ours[k].shape != reference[k].shape:
                raise ValueError(f"{k}: our shape {ours[k].shape} != reference {reference[k].shape}")
            diffs[k] = float(np.max(np.abs(ours[k].astype(np.float64) - reference[k].astype(np.float64))))
    return diffs


def report(
    diffs: dict[str, float], reference: dict[str, np.ndarray], tolerance: dict[str, float] = TOLERANCE
) -> tuple[str, bool]:
    """A Markdown table and whether every stage is within tolerance: the max abs difference at
    most ``tolerance[stage] + RTOL x (max abs value of the reference)``."""
    lines = ["| stage | shape | max abs diff | max abs value | tolerance | ok |", "|---|---|---:|---:|---:|---|"]
    ok = True
    for k, d in diffs.items():
        largest = float(np.max(np.abs(reference[k])))
        allowed = tolerance[k] + RTOL * largest
        good = d <= allowed
        ok &= good
        shape = tuple(reference[k].shape)
        lines.append(f"| {k} | {shape} | {d:.2e} | {largest:.3g} | {allowed:.1e} | {'yes' if good else 'NO'} |")
    return "\n".join(lines), ok


def _is_branch_end(name: str, model) -> bool:
    """Whether BatchNorm ``name`` closes a residual branch (bn3 of a bottleneck, bn2 of a
    basic block)."""
    import torchvision

    block = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else None
    if isinstance(block, torchvision.models.resnet.Bottleneck):
        return name.endswith(".bn3")
    if isinstance(block, torchvision.models.resnet.BasicBlock):
        return name.endswith(".bn2")
    return False


def randomise_torch_bn(model, *, seed: int = 0, image_size: int = 96) -> None:
    """Non-trivial BatchNorm state for a random-init torchvision model: random affine
    parameters, then running statistics measured on random images (train-mode passes with a
    cumulative average), so activations keep realistic scales as in a trained network.

    The last BatchNorm of each residual branch gets a small scale (0.2-0.6), as trained
    ResNets have (and torchvision's ``zero_init_residual`` starts from): with unit scales a
    random 16-block network amplifies fp32 rounding until no fp32 implementation, PyTorch's
    own included, agrees with a float64 run to 1e-3.
    """
    import torch

    g = torch.Generator().manual_seed(seed)
    named = [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm2d)]
    bns = [m for _, m in named]
    with torch.no_grad():
        for name, bn in named:
            lo, span = (0.2, 0.4) if _is_branch_end(name, model) else (0.8, 0.4)
            bn.weight.copy_(lo + span * torch.rand(bn.num_features, generator=g))
            bn.bias.copy_(0.1 * torch.randn(bn.num_features, generator=g))
            bn.reset_running_stats()
            bn.momentum = None  # cumulative average
        model.train()
        for _ in range(2):
            model(torch.randn(4, 3, image_size, image_size, generator=g))
    for bn in bns:
        bn.momentum = 0.1
    model.eval()


def randomise_keras_bn(model, *, seed: int = 0, image_size: int = 96) -> None:
    """As :func:`randomise_torch_bn`, for a Keras model: random gamma/beta (small on each
    residual branch's last BatchNorm, ``*_3_bn``), then moving statistics set to the batch
    statistics of random images in Keras's own (caffe) input, as ImageNet weights' are
    (:func:`lnm_jax.weights.convert.keras_caffe_input` of standard-normal pictures: about 58x
    their scale), momentum 0 for one pass."""
    import keras

    rng = np.random.default_rng(seed)
    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    for bn in bns:
        gamma, beta, mean, var = bn.get_weights()
        lo = 0.2 if bn.name.endswith("_3_bn") else 0.8
        bn.set_weights(
            [
                lo + 0.4 * rng.random(gamma.shape, np.float32),
                0.1 * rng.standard_normal(beta.shape).astype(np.float32),
                mean,
                var,
            ]
        )
        bn.momentum = 0.0
    size = model.input_shape[1] or image_size
    model(keras_caffe_input(rng.standard_normal((8, size, size, 3))), training=True)
    for bn in bns:
        bn.momentum = 0.99
