"""VGG-11 (Simonyan & Zisserman 2015, configuration A) in flax.linen, NHWC, laid out as
torchvision's ``vgg11`` / ``vgg11_bn`` ``features``: submodule names are torchvision's indices
(``features_0`` <-> ``features.0``), so weights port one-to-one.

The paper's backbone comparison needs a pooled feature per image, not ImageNet logits: the
trunk ends with torchvision's last max-pool, then global average pooling gives the
``8 * width``-d feature (512 at torchvision width). The 4096-wide classifier is not built.
``__call__`` returns the same dict of intermediates as the ResNets: ``stem`` (block 1) and
``stage1`` .. ``stage4`` (blocks 2 to 5, before their max-pool: the last conv maps Grad-CAM
uses), each a ``perturb`` point, and ``pooled``.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from lnm_jax.models.resnet import torchvision_batch_norm

# Configuration A: conv widths per block (x width / 64), a max-pool after each block.
VGG11_BLOCKS = ((64,), (128,), (256, 256), (512, 512), (512, 512))
STAGE_NAMES = ("stem", "stage1", "stage2", "stage3", "stage4")


class VGG(nn.Module):
    batch_norm: bool = False  # vgg11 (the paper's) or vgg11_bn
    width: int = 64
    dtype: Any = jnp.float32
    running_var: str = "biased"  # names.RUNNING_VARS (vgg11_bn)

    @nn.compact
    def __call__(self, x, train: bool = False, mask=None) -> dict[str, jnp.ndarray]:
        if mask is not None:
            mask = jnp.asarray(mask, bool)[:, None, None, None]
        out = {}
        x = x.astype(self.dtype)
        index = 0  # torchvision's position in `features`
        for block, name in zip(VGG11_BLOCKS, STAGE_NAMES):
            for channels in block:
                x = nn.Conv(
                    max(1, channels * self.width // 64),
                    (3, 3),
                    padding=((1, 1), (1, 1)),
                    dtype=self.dtype,
                    name=f"features_{index}",
                )(x)
                index += 1
                if self.batch_norm:
                    x = torchvision_batch_norm(self.running_var, train, self.dtype, f"features_{index}")(x, mask=mask)
                    index += 1
                x = nn.relu(x)
                index += 1
            x = self.perturb(name, x)
            out[name] = x
            x = nn.max_pool(x, window_shape=(2, 2), strides=(2, 2))
            index += 1
        out["pooled"] = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
        return out
