"""ResNet v1.5 in flax.linen, NHWC, laid out exactly as torchvision's.

* Explicit torch-style padding everywhere (``SAME`` differs from PyTorch at stride 2), the stem
  max-pool included (padded with -inf, as ``nn.MaxPool2d(3, 2, 1)``).
* BatchNorm: flax ``momentum = 1 - torch momentum = 0.9`` and ``epsilon = 1e-5``; running
  statistics live in the ``batch_stats`` collection. The running variance is updated with the
  batch's biased variance (flax's convention) unless ``running_var='unbiased'``
  (``model.bn_running_var``: PyTorch's, x N/(N-1); docs/training.md).
* Submodule names mirror torchvision's state_dict keys (``layer1_0/conv1`` <->
  ``layer1.0.conv1``, ``layer2_0/downsample_0`` <-> ``layer2.0.downsample.0``), one Flax
  parameter per torchvision tensor, so weights port one-to-one.
* ``width`` scales every stage (64 = torchvision); small widths are for CPU-sized work.

``mask`` (bool [B], optional) restricts BatchNorm's training statistics to the rows where it
is true: a patient without this image (a zero placeholder) must not shift the statistics that
the present images are normalised with.

Performance variants, each the same function with the same parameters (candidates the GPU
check measures, ``scripts/gpu_check.py``): ``stem='space_to_depth'`` computes the 7x7 stride-2
stem as a 4x4 stride-1 convolution of the 2x2 space-to-depth input (:class:`SpaceToDepthConv`;
``stem='auto'``, the default, takes it on a GPU: ``lowering.resolve_stem``);
``bn_float32_reductions=False`` lets BatchNorm's statistics run in the activation dtype (bf16)
instead of flax's float32 (with it, 'auto' keeps flax's BatchNorm); ``batchnorm='fused'``
computes BatchNorm's training gradient as written out in :mod:`lnm_jax.models.batchnorm` (two
reductions a layer instead of three; 'auto', the default, takes it on a GPU:
``lowering.resolve_batchnorm``).

``__call__`` returns a dict of intermediates: ``stem``, ``stage1`` .. ``stage4`` and the
global-average-pooled ``pooled`` feature; each of ``stem`` and ``stage*`` is also a
``perturb`` point, so gradients with respect to it can be taken (Grad-CAM).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from lnm_jax.models.batchnorm import batch_norm
from lnm_jax.models.lowering import conv_function, max_pool_function, resolve_batchnorm, resolve_stem

Dtype = Any

# torchvision's BatchNorm2d(momentum=0.1, eps=1e-5) in flax terms.
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


def torchvision_batch_norm(running_var: str, train: bool, dtype, name: str, epsilon: float = BN_EPSILON) -> nn.Module:
    """torchvision's ``BatchNorm2d(momentum=0.1, eps=epsilon)`` as the backbones without
    performance variants build it (VGG-11-BN; Inception-v3 with its eps 1e-3): :func:`batch_norm`
    for ``running_var``, called as ``module(x, mask=...)``."""
    return batch_norm(
        running_var, use_running_average=not train, momentum=BN_MOMENTUM, epsilon=epsilon, dtype=dtype, name=name
    )()


def _pad(k: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """PyTorch's symmetric padding for a k x k conv (k // 2 on every side)."""
    return ((k // 2, k // 2), (k // 2, k // 2))


def _no_norm(name: str | None = None):
    """Stands in for a BatchNorm that was folded into the preceding conv."""
    return lambda x, mask=None: x


ModuleDef = Any


class SpaceToDepthConv(nn.Module):
    """The stem's 7x7 stride-2 convolution with padding 3, computed as a 4x4 stride-1
    convolution of the 2x2 space-to-depth input ([B, H, W, C] -> [B, H/2, W/2, 4C]) with padding
    2 before and 1 after: the same sums (output i sums kernel taps k = 0..6 at input 2i + k - 3;
    here tap k is kernel cell (k + 1) // 2 - 1 of input phase (k + 1) % 2), so the same function
    with the same parameter, the 7x7 ``kernel``, rearranged at each call. A small-channel
    strided convolution becomes a dense one (the MLPerf ResNet-50 stem on TPUs, Kumar et al.,
    "Scale MLPerf-0.6 models on Google TPU-v3 Pods", 2019). H and W must be even."""

    features: int
    use_bias: bool = False
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        b, h, w, c = x.shape
        if h % 2 or w % 2:
            raise ValueError(f"model.stem='space_to_depth' needs an even image size, got {h}x{w}")
        kernel = self.param("kernel", nn.linear.default_kernel_init, (7, 7, c, self.features), jnp.float32)
        k8 = jnp.pad(kernel, ((1, 0), (1, 0), (0, 0), (0, 0)))  # tap k -> k + 1 = 2 cell + phase
        k4 = k8.reshape(4, 2, 4, 2, c, self.features).transpose(0, 2, 1, 3, 4, 5).reshape(4, 4, 4 * c, self.features)
        x = x.reshape(b, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 2, 4, 5).reshape(b, h // 2, w // 2, 4 * c)
        y = jax.lax.conv_general_dilated(
            x.astype(self.dtype),
            k4.astype(self.dtype),
            (1, 1),
            ((2, 1), (2, 1)),
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32).astype(self.dtype)
        return y


class _Block(nn.Module):
    """Fields shared by both residual blocks; ``conv`` and ``norm`` are the ResNet's partials
    (built once, as flax's ImageNet example does)."""

    features: int
    conv: ModuleDef
    norm: ModuleDef
    strides: int = 1
    downsample: bool = False
    stride_in_1x1: bool = False  # v1 (Keras) stride placement; Bottleneck only

    def _shortcut(self, x, out_features: int, mask):
        if not self.downsample:
            return x
        x = self.conv(out_features, (1, 1), (self.strides,) * 2, padding=((0, 0), (0, 0)), name="downsample_0")(x)
        return self.norm(name="downsample_1")(x, mask=mask)


class BasicBlock(_Block):
    """ResNet-18/34 block: 3x3 -> 3x3, identity or 1x1 projection shortcut."""

    expansion = 1

    @nn.compact
    def __call__(self, x, mask=None):
        conv, norm = self.conv, self.norm
        y = conv(self.features, (3, 3), (self.strides,) * 2, padding=_pad(3), name="conv1")(x)
        y = nn.relu(norm(name="bn1")(y, mask=mask))
        y = conv(self.features, (3, 3), padding=_pad(3), name="conv2")(y)
        y = norm(name="bn2")(y, mask=mask)
        return nn.relu(y + self._shortcut(x, self.features, mask))


class Bottleneck(_Block):
    """ResNet-50 block: 1x1 -> 3x3 -> 1x1 (x4). v1.5 (torchvision) strides in the 3x3;
    ``stride_in_1x1`` gives the original v1 (Keras ``ResNet50``) with the stride in the first 1x1."""

    expansion = 4

    @nn.compact
    def __call__(self, x, mask=None):
        conv, norm = self.conv, self.norm
        s1, s3 = (self.strides, 1) if self.stride_in_1x1 else (1, self.strides)
        y = conv(self.features, (1, 1), (s1, s1), padding=((0, 0), (0, 0)), name="conv1")(x)
        y = nn.relu(norm(name="bn1")(y, mask=mask))
        y = conv(self.features, (3, 3), (s3, s3), padding=_pad(3), name="conv2")(y)
        y = nn.relu(norm(name="bn2")(y, mask=mask))
        y = conv(self.features * 4, (1, 1), padding=((0, 0), (0, 0)), name="conv3")(y)
        y = norm(name="bn3")(y, mask=mask)
        return nn.relu(y + self._shortcut(x, self.features * 4, mask))


class ResNet(nn.Module):
    """torchvision-layout ResNet trunk without the ``fc`` classifier.

    ``stride_in_1x1``, ``conv_bias`` and ``bn_epsilon`` select the original v1 layout of
    Keras ``ResNet50`` (stride in the first 1x1 conv, biased convs, epsilon 1.001e-5).
    """

    stage_sizes: Sequence[int]
    block: type[nn.Module]
    width: int = 64
    dtype: Dtype = jnp.float32
    stride_in_1x1: bool = False
    conv_bias: bool = False
    bn_epsilon: float = BN_EPSILON
    # Inference only: convs with biases and no BatchNorm, for params from folding.fold_batchnorm.
    fold_bn: bool = False
    lowering: str = "auto"  # lowering.py: 1x1 convs and max pools as XLA ops or GEMMs and slices
    stem: str = "auto"  # 'conv7' | 'space_to_depth' (SpaceToDepthConv: the same function); lowering.resolve_stem
    bn_float32_reductions: bool = True  # flax's default; False: statistics in the activation dtype
    # 'flax' | 'fused' (its training gradient written out, models/batchnorm.py) | 'auto' (resolve_batchnorm)
    batchnorm: str = "auto"
    running_var: str = "biased"  # names.RUNNING_VARS: how training updates the running variance

    @nn.compact
    def __call__(self, x, train: bool = False, mask=None) -> dict[str, jnp.ndarray]:
        if self.fold_bn and train:
            raise ValueError("a BatchNorm-folded ResNet is for inference only")
        fused = resolve_batchnorm(self.batchnorm) == "fused" and self.bn_float32_reductions
        if self.batchnorm == "fused" and not self.bn_float32_reductions:
            raise ValueError("model.batchnorm='fused' computes float32 statistics: keep model.bn_float32_reductions")
        stem = resolve_stem(self.stem, *x.shape[1:3])
        conv = partial(
            nn.Conv,
            use_bias=self.conv_bias or self.fold_bn,
            dtype=self.dtype,
            # a folded model only predicts: the GEMM form of a 1x1 convolution is for its filter
            # gradient (lowering.py); in inference XLA:CPU's convolution takes the bias, residual
            # and ReLU after it in fewer passes (folded triple ResNet-50, 224 px, batch 8: 13.3 /
            # 12.5 -> 13.9 / 13.6 patients/s, two alternated rounds, docs/benchmarks.md)
            conv_general_dilated=None if self.fold_bn else conv_function(self.lowering),
        )
        norm = (
            _no_norm
            if self.fold_bn
            else batch_norm(
                self.running_var,
                written_gradient=fused,
                use_running_average=not train,
                momentum=BN_MOMENTUM,
                epsilon=self.bn_epsilon,
                dtype=self.dtype,
                force_float32_reductions=self.bn_float32_reductions,
            )
        )
        out = {}
        if mask is not None:
            mask = jnp.asarray(mask, bool)[:, None, None, None]
        x = x.astype(self.dtype)
        if stem == "space_to_depth":
            x = SpaceToDepthConv(self.width, self.conv_bias or self.fold_bn, self.dtype, name="conv1")(x)
        else:
            x = conv(self.width, (7, 7), (2, 2), padding=_pad(7), name="conv1")(x)
        x = nn.relu(norm(name="bn1")(x, mask=mask))
        # -inf padding written out (the same function as max_pool's own padding): ONNX
        # converters (jax2onnx 0.17) drop a pooling's explicit padding
        x = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-jnp.inf)
        x = max_pool_function(self.lowering)(x)
        # perturb(): a zero-valued hook that lets jax.grad reach this activation (Grad-CAM);
        # a no-op unless a 'perturbations' collection is passed to apply().
        x = self.perturb("stem", x)
        out["stem"] = x
        in_features = self.width
        for i, n_blocks in enumerate(self.stage_sizes):
            features = self.width * 2**i
            for j in range(n_blocks):
                strides = 2 if (i > 0 and j == 0) else 1
                downsample = j == 0 and (strides != 1 or in_features != features * self.block.expansion)
                x = self.block(
                    features,
                    conv,
                    norm,
                    strides,
                    downsample,
                    stride_in_1x1=self.stride_in_1x1,
                    name=f"layer{i + 1}_{j}",
                )(x, mask)
                in_features = features * self.block.expansion
            x = self.perturb(f"stage{i + 1}", x)
            out[f"stage{i + 1}"] = x
        out["pooled"] = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
        return out


# Keras applications.ResNet50 (original v1): BatchNormalization(epsilon=1.001e-5).
KERAS_V1 = dict(stride_in_1x1=True, conv_bias=True, bn_epsilon=1.001e-5)

# Layout variants of the same architecture (``resnet(arch, **VARIANTS[v])``).
VARIANTS = {"torchvision": {}, "keras_v1": KERAS_V1}

BACKBONES = {
    # one basic block per stage (torchvision's ResNet(BasicBlock, [1, 1, 1, 1]); no ImageNet
    # weights there): smoke runs and the test suite's behaviour tests
    "resnet10": dict(stage_sizes=(1, 1, 1, 1), block=BasicBlock),
    "resnet18": dict(stage_sizes=(2, 2, 2, 2), block=BasicBlock),
    "resnet34": dict(stage_sizes=(3, 4, 6, 3), block=BasicBlock),
    "resnet50": dict(stage_sizes=(3, 4, 6, 3), block=Bottleneck),
}


def resnet(arch: str, *, width: int = 64, dtype: Dtype = jnp.float32, **kwargs) -> nn.Module:
    """``arch`` in BACKBONES; ``kwargs`` go to the module (e.g. ``name``)."""
    if arch not in BACKBONES:
        raise ValueError(f"unknown backbone '{arch}', expected one of {sorted(BACKBONES)}")
    return ResNet(**BACKBONES[arch], width=width, dtype=dtype, **kwargs)


def feature_dim(arch: str, width: int = 64) -> int:
    spec = BACKBONES[arch]
    return width * 2 ** (len(spec["stage_sizes"]) - 1) * spec["block"].expansion
