"""The encoder of contrastive pretraining (SimCLR, Chen et al., ICML 2020): an image backbone
(the very module an image branch of :mod:`lnm_jax.models.fusion` uses, so its variables load
into a branch as they are) followed by a projection MLP; the NT-Xent loss over two views.

The projection (Dense -> BatchNorm -> ReLU -> Dense) is used only by the loss and dropped
afterwards: the backbone's pooled feature, before it, is what transfers.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from lnm_jax.models.backbones import backbone
from lnm_jax.models.batchnorm import batch_norm

BACKBONE = "backbone"  # the encoder's backbone submodule: its variables are what pretraining hands on


class ContrastiveEncoder(nn.Module):
    arch: str = "resnet18"
    width: int = 64
    variant: str = "torchvision"
    lowering: str = "auto"
    projection_hidden: int = 0  # 0: the backbone's feature width
    projection_dim: int = 64
    dtype: Any = jnp.float32
    running_var: str = "biased"  # names.RUNNING_VARS (model.bn_running_var): every BatchNorm here

    @nn.compact
    def __call__(self, x, train: bool = False) -> dict[str, jax.Array]:
        net = backbone(
            self.arch,
            width=self.width,
            variant=self.variant,
            lowering=self.lowering,
            dtype=self.dtype,
            running_var=self.running_var,
            name=BACKBONE,
        )
        pooled = net(x, train=train)["pooled"].astype(jnp.float32)
        h = nn.Dense(self.projection_hidden or pooled.shape[-1], name="proj_hidden")(pooled)
        h = nn.relu(batch_norm(self.running_var, use_running_average=not train, name="proj_bn")()(h))
        return {"pooled": pooled, "projection": nn.Dense(self.projection_dim, name="proj_out")(h)}


def nt_xent(z1: jax.Array, z2: jax.Array, temperature: float) -> tuple[jax.Array, jax.Array]:
    """SimCLR's normalised-temperature cross-entropy over a batch of N pairs: each of the 2N
    views must pick its partner among the other 2N - 1 by cosine similarity / ``temperature``.
    Returns (loss, the fraction of views whose nearest other view is their partner)."""
    n = z1.shape[0]
    z = jnp.concatenate([z1, z2]).astype(jnp.float32)
    z = z / jnp.linalg.norm(z, axis=-1, keepdims=True).clip(1e-12)
    logits = z @ z.T / temperature
    logits = jnp.where(jnp.eye(2 * n, dtype=bool), -jnp.inf, logits)  # a view is not its own partner
    partner = jnp.concatenate([jnp.arange(n, 2 * n), jnp.arange(n)])
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, partner).mean()
    return loss, jnp.mean(jnp.argmax(logits, axis=-1) == partner)
