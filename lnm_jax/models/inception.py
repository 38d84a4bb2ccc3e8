"""Inception-v3 (Szegedy et al. 2016) in flax.linen, NHWC, laid out as torchvision's
``inception_v3``: module names mirror its state_dict (``Mixed_5b/branch5x5_2/conv`` <->
``Mixed_5b.branch5x5_2.conv``), explicit torch padding, BatchNorm epsilon 1e-3.

Without the auxiliary classifier and the ``fc`` layer: the trunk's global average pool gives
the ``32 * width``-d feature (2048 at torchvision width). ``width`` scales every layer's
channels by ``width / 64`` (small widths are for CPU-sized work). No ``transform_input``:
inputs arrive normalised by the pipeline (a port of torchvision's weights has that step folded
into its first convolution: ``weights.convert.inception_transform_input_stem``). Inputs need at least 75x75 pixels.
Intermediates: ``stem`` (after the second max-pool), ``stage1`` (Mixed_5d), ``stage2``
(Mixed_6e), ``stage3`` (Mixed_7a), ``stage4`` (Mixed_7c), ``pooled``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from lnm_jax.models.lowering import conv_function, max_pool_function
from lnm_jax.models.resnet import torchvision_batch_norm

BN_EPSILON = 1e-3  # torchvision BasicConv2d
MIN_SIZE = 75


class BasicConv(nn.Module):
    """conv (no bias) -> BatchNorm -> ReLU: torchvision's BasicConv2d."""

    features: int
    kernel: Sequence[int]
    strides: int = 1
    padding: Sequence[int] = (0, 0)
    dtype: Any = jnp.float32
    lowering: str = "auto"  # lowering.py: 1x1 convs and max pools as XLA ops or GEMMs and slices
    running_var: str = "biased"  # names.RUNNING_VARS

    @nn.compact
    def __call__(self, x, train: bool, mask=None):
        ph, pw = self.padding
        x = nn.Conv(
            self.features,
            tuple(self.kernel),
            (self.strides,) * 2,
            padding=((ph, ph), (pw, pw)),
            use_bias=False,
            dtype=self.dtype,
            conv_general_dilated=conv_function(self.lowering),
            name="conv",
        )(x)
        x = torchvision_batch_norm(self.running_var, train, self.dtype, "bn", epsilon=BN_EPSILON)(x, mask=mask)
        return nn.relu(x)


def _avg_pool(x):
    # torchvision: F.avg_pool2d(x, 3, stride=1, padding=1), count_include_pad=True
    # zero padding written out, every window divided by 9 (torchvision's count_include_pad=True):
    # ONNX converters (jax2onnx 0.17) drop a pooling's explicit padding
    return nn.avg_pool(jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0))), window_shape=(3, 3), strides=(1, 1))


class _Mixed(nn.Module):
    """Shared plumbing: ``conv(name, channels, kernel, ...)`` builds a scaled BasicConv."""

    scale: float = 1.0
    dtype: Any = jnp.float32
    lowering: str = "auto"
    running_var: str = "biased"

    def conv(self, name, channels, kernel, strides=1, padding=(0, 0)):
        if isinstance(kernel, int):
            kernel = (kernel, kernel)
        return BasicConv(
            max(1, int(channels * self.scale)),
            kernel,
            strides,
            padding,
            dtype=self.dtype,
            lowering=self.lowering,
            running_var=self.running_var,
            name=name,
        )


class InceptionA(_Mixed):
    pool_features: int = 32

    @nn.compact
    def __call__(self, x, train, mask=None):
        c = lambda *a, **k: lambda y: self.conv(*a, **k)(y, train, mask)  # noqa: E731
        b1 = c("branch1x1", 64, 1)(x)
        b5 = c("branch5x5_2", 64, 5, padding=(2, 2))(c("branch5x5_1", 48, 1)(x))
        b3 = c("branch3x3dbl_1", 64, 1)(x)
        b3 = c("branch3x3dbl_3", 96, 3, padding=(1, 1))(c("branch3x3dbl_2", 96, 3, padding=(1, 1))(b3))
        bp = c("branch_pool", self.pool_features, 1)(_avg_pool(x))
        return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(_Mixed):
    @nn.compact
    def __call__(self, x, train, mask=None):
        c = lambda *a, **k: lambda y: self.conv(*a, **k)(y, train, mask)  # noqa: E731
        b3 = c("branch3x3", 384, 3, strides=2)(x)
        bd = c("branch3x3dbl_1", 64, 1)(x)
        bd = c("branch3x3dbl_3", 96, 3, strides=2)(c("branch3x3dbl_2", 96, 3, padding=(1, 1))(bd))
        return jnp.concatenate([b3, bd, max_pool_function(self.lowering)(x)], axis=-1)


class InceptionC(_Mixed):
    channels_7x7: int = 128

    @nn.compact
    def __call__(self, x, train, mask=None):
        c = lambda *a, **k: lambda y: self.conv(*a, **k)(y, train, mask)  # noqa: E731
        c7 = self.channels_7x7
        b1 = c("branch1x1", 192, 1)(x)
        b7 = c("branch7x7_1", c7, 1)(x)
        b7 = c("branch7x7_2", c7, (1, 7), padding=(0, 3))(b7)
        b7 = c("branch7x7_3", 192, (7, 1), padding=(3, 0))(b7)
        bd = c("branch7x7dbl_1", c7, 1)(x)
        bd = c("branch7x7dbl_2", c7, (7, 1), padding=(3, 0))(bd)
        bd = c("branch7x7dbl_3", c7, (1, 7), padding=(0, 3))(bd)
        bd = c("branch7x7dbl_4", c7, (7, 1), padding=(3, 0))(bd)
        bd = c("branch7x7dbl_5", 192, (1, 7), padding=(0, 3))(bd)
        bp = c("branch_pool", 192, 1)(_avg_pool(x))
        return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(_Mixed):
    @nn.compact
    def __call__(self, x, train, mask=None):
        c = lambda *a, **k: lambda y: self.conv(*a, **k)(y, train, mask)  # noqa: E731
        b3 = c("branch3x3_2", 320, 3, strides=2)(c("branch3x3_1", 192, 1)(x))
        b7 = c("branch7x7x3_1", 192, 1)(x)
        b7 = c("branch7x7x3_2", 192, (1, 7), padding=(0, 3))(b7)
        b7 = c("branch7x7x3_3", 192, (7, 1), padding=(3, 0))(b7)
        b7 = c("branch7x7x3_4", 192, 3, strides=2)(b7)
        return jnp.concatenate([b3, b7, max_pool_function(self.lowering)(x)], axis=-1)


class InceptionE(_Mixed):
    @nn.compact
    def __call__(self, x, train, mask=None):
        c = lambda *a, **k: lambda y: self.conv(*a, **k)(y, train, mask)  # noqa: E731
        b1 = c("branch1x1", 320, 1)(x)
        b3 = c("branch3x3_1", 384, 1)(x)
        b3 = jnp.concatenate(
            [c("branch3x3_2a", 384, (1, 3), padding=(0, 1))(b3), c("branch3x3_2b", 384, (3, 1), padding=(1, 0))(b3)],
            axis=-1,
        )
        bd = c("branch3x3dbl_2", 384, 3, padding=(1, 1))(c("branch3x3dbl_1", 448, 1)(x))
        bd = jnp.concatenate(
            [
                c("branch3x3dbl_3a", 384, (1, 3), padding=(0, 1))(bd),
                c("branch3x3dbl_3b", 384, (3, 1), padding=(1, 0))(bd),
            ],
            axis=-1,
        )
        bp = c("branch_pool", 192, 1)(_avg_pool(x))
        return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class InceptionV3(nn.Module):
    width: int = 64
    dtype: Any = jnp.float32
    lowering: str = "auto"  # lowering.py: 1x1 convs and max pools as XLA ops or GEMMs and slices
    running_var: str = "biased"  # names.RUNNING_VARS

    @nn.compact
    def __call__(self, x, train: bool = False, mask=None) -> dict[str, jnp.ndarray]:
        if min(x.shape[1:3]) < MIN_SIZE:
            raise ValueError(
                f"Inception-v3 needs inputs of at least {MIN_SIZE}x{MIN_SIZE} pixels, "
                f"got {x.shape[1]}x{x.shape[2]} (data.image_size)"
            )
        if mask is not None:
            mask = jnp.asarray(mask, bool)[:, None, None, None]
        s = self.width / 64
        fields = dict(dtype=self.dtype, lowering=self.lowering, running_var=self.running_var)  # every BasicConv's
        kw = dict(scale=s, **fields)
        conv = lambda name, ch, k, st=1, p=(0, 0): BasicConv(max(1, int(ch * s)), (k, k), st, p, **fields, name=name)  # noqa: E731
        out = {}
        x = x.astype(self.dtype)
        x = conv("Conv2d_1a_3x3", 32, 3, 2)(x, train, mask)
        x = conv("Conv2d_2a_3x3", 32, 3)(x, train, mask)
        x = conv("Conv2d_2b_3x3", 64, 3, p=(1, 1))(x, train, mask)
        x = max_pool_function(self.lowering)(x)
        x = conv("Conv2d_3b_1x1", 80, 1)(x, train, mask)
        x = conv("Conv2d_4a_3x3", 192, 3)(x, train, mask)
        x = max_pool_function(self.lowering)(x)
        out["stem"] = x = self.perturb("stem", x)
        x = InceptionA(pool_features=32, name="Mixed_5b", **kw)(x, train, mask)
        x = InceptionA(pool_features=64, name="Mixed_5c", **kw)(x, train, mask)
        x = InceptionA(pool_features=64, name="Mixed_5d", **kw)(x, train, mask)
        out["stage1"] = x = self.perturb("stage1", x)
        x = InceptionB(name="Mixed_6a", **kw)(x, train, mask)
        for name, c7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)):
            x = InceptionC(channels_7x7=c7, name=name, **kw)(x, train, mask)
        out["stage2"] = x = self.perturb("stage2", x)
        x = InceptionD(name="Mixed_7a", **kw)(x, train, mask)
        out["stage3"] = x = self.perturb("stage3", x)
        x = InceptionE(name="Mixed_7b", **kw)(x, train, mask)
        x = InceptionE(name="Mixed_7c", **kw)(x, train, mask)
        out["stage4"] = x = self.perturb("stage4", x)
        out["pooled"] = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
        return out
