"""The Python API (docs/python.md) refuses what it cannot compute instead of returning a wrong
result: variables independent of the init batch size, one ValueError naming the input for a
batch the model, the loss, the train step or Grad-CAM cannot read, and a random stream of its
own for every consumer of the seed."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from support import BACKBONE

from lnm_jax import names
from lnm_jax.config import base_config
from lnm_jax.data.loaders.on_device import DeviceCohort
from lnm_jax.explain.gradcam import make_cam_fn
from lnm_jax.models.fusion import DROPOUT_RNG, build_model
from lnm_jax.run import step_inputs, zero_batch
from lnm_jax.training import state as S
from lnm_jax.training.steps import bce_loss, make_train_step

S32, B = 32, 4


def _config(setting="triple", **data):
    c = base_config(setting)
    c.data.image_size, c.model.backbone, c.model.width, c.train.eval_batch_size = S32, BACKBONE, 4, B
    for k, v in data.items():
        c.data[k] = v
    return c


def _batch(c, seed=0):
    rng = np.random.default_rng(seed)
    b = step_inputs(zero_batch(c))
    for m in names.IMAGE_INPUTS:
        if m in b:
            b[m] = rng.standard_normal(b[m].shape).astype(np.float32)
    b[names.US_LNM] = (np.arange(B) % 2).astype(np.float32)
    b[names.LABEL] = np.array([0, 1, 1, 0], np.int32)
    return b


@functools.cache
def _triple():
    c = _config()
    model, b = build_model(c), _batch(c)
    return c, model, b, S.init_variables(model, jax.random.key(0), b)


def test_variables_from_init_apply_to_a_batch_of_any_size():
    _, model, b, variables = _triple()
    assert sorted(variables) == ["batch_stats", "params"]  # no batch-shaped Grad-CAM hooks
    forward = jax.jit(lambda v, x: model.apply(v, x, train=False)["logit"])
    full = np.asarray(forward(variables, b))
    for n in (1, 2):  # init at B = 4: a B = 1 batch gave 4 logits (broadcast), B = 2 a TypeError
        part = np.asarray(forward(variables, {k: v[:n] for k, v in b.items()}))
        assert part.shape == (n,)
        np.testing.assert_allclose(part, full[:n], rtol=1e-5, atol=1e-5)
