"""The JAX random streams drawn from ``config.seed``, defined once.

Every consumer of ``config.seed`` draws from its own stream, ``fold_in(key(seed), TAG)`` with a
tag of its own below, and then folds in its counter (the step, the epoch). Without the tag two
consumers that fold in their counters directly (``fold_in(key(seed), step)`` and
``fold_in(key(seed), epoch)``) draw the same keys whenever step k meets epoch k. Model
initialisation uses ``key(seed)`` itself (unfolded: no tag's stream equals it).
"""

from __future__ import annotations

import jax
import numpy as np

MODALITY_DROPOUT = 1  # the train step's modality dropout, then fold_in(step)
DEVICE_AUGMENT = 2  # the device-resident loader's order and augmentation, then fold_in(epoch)
PRETRAIN_VIEWS = 3  # contrastive pretraining's two views, then fold_in(step)
TAGS = {"modality_dropout": MODALITY_DROPOUT, "device_augment": DEVICE_AUGMENT, "pretrain_views": PRETRAIN_VIEWS}


def stream(seed: int, tag: int) -> jax.Array:
    """The root key of the consumer ``tag`` (one of :data:`TAGS`' values) of ``seed``'s keys.
    The two numbers are put on the device explicitly (the same key as from Python ints), so a
    loop that draws it runs under ``jax.transfer_guard('disallow')``."""
    return jax.random.fold_in(jax.random.key(put_uint32(seed)), put_uint32(tag))


def put_uint32(x: int) -> jax.Array:
    """``x`` (0 to 2**32 - 1) as a uint32 scalar on the default device, put there explicitly:
    ``fold_in`` and ``key`` given a Python int transfer it implicitly."""
    return jax.device_put(np.uint32(x))
