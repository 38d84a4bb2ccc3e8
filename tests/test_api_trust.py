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
from support import model_config

from lnm_jax import names, rng_streams
from lnm_jax.data.loaders.on_device import DeviceCohort
from lnm_jax.explain.gradcam import make_cam_fn
from lnm_jax.models.fusion import DROPOUT_RNG, build_model
from lnm_jax.run import step_inputs, zero_batch
from lnm_jax.training import state as S
from lnm_jax.training.steps import bce_loss, make_train_step

S32, B = 32, 4


def _config(setting="triple", **data):
    return model_config(setting, width=4, batch=B, data=data)


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


def test_bce_loss_refuses_a_column_and_labels_other_than_0_1():
    z = np.array([0.3, -1.2, 2.0, 0.7], np.float32)
    y, w = np.array([1, 0, 1, 0], np.int32), np.ones(4, np.float32)
    np.testing.assert_allclose(float(bce_loss(z, y, w)), 0.5119379, rtol=1e-6)  # by hand: mean log(1 + e^-+z)
    with pytest.raises(ValueError, match=r"bce_loss: labels must have shape \[B\], got \[4, 1\]"):
        bce_loss(z, y[:, None], w)  # was 3.4478: broadcast to [B, B]
    with pytest.raises(ValueError, match=r"bce_loss: logits must have shape \[B\]"):
        bce_loss(z[:, None], y, w)
    with pytest.raises(ValueError, match=r"bce_loss: every argument needs one batch size B.*.weights.: \(3,\)"):
        bce_loss(z, y, w[:3])
    with pytest.raises(ValueError, match=r"labels must be 0 or 1, got the values \[0, 1, 3\]"):
        bce_loss(z, np.array([1, 0, 3, 0]), w)
    with pytest.raises(ValueError, match="labels must have shape"):  # traced: shapes still checked
        jax.jit(bce_loss)(z, y[:, None], w)


def test_train_step_refuses_a_label_column_or_a_missing_key():
    c, model, b, variables = _triple()
    tx, plateau = S.optimizers(c.train)
    step = make_train_step(model, tx)
    state = jax.eval_shape(lambda: S.train_state_from(variables, tx, plateau))  # tracing suffices
    with pytest.raises(ValueError, match=r"labels must have shape \[B\], got \[4, 1\]"):
        jax.eval_shape(step, state, {**b, names.LABEL: b[names.LABEL][:, None]})  # was loss 3.07, not 0.83
    for key in (names.LABEL, names.VALID):
        with pytest.raises(ValueError, match=f"the batch has no '{key}'"):
            jax.eval_shape(step, state, _without(b, key))


def _without(b, key):
    return {k: v for k, v in b.items() if k != key}


# a mistake -> (the batch it makes of a good one, what the error must say)
BAD_INPUTS = {
    "uint8": (lambda b: {**b, names.BMODE: (np.abs(b[names.BMODE]) * 50).astype(np.uint8)}, "'bmode'.*dtype uint8"),
    "nchw": (lambda b: {**b, names.CEUS: b[names.CEUS].transpose(0, 3, 1, 2)}, r"'ceus'.*\[4, 3, 32, 32\].*NHWC"),
    "gray": (lambda b: {**b, names.BMODE: b[names.BMODE][..., :1]}, r"'bmode'.*got shape \[4, 32, 32, 1\]"),
    "size": (lambda b: {**b, names.BMODE: np.tile(b[names.BMODE], (1, 2, 2, 1))}, r"'bmode'.*H = W = 32.*\[4, 64, 64"),
    "flag": (lambda b: {**b, names.US_LNM: b[names.US_LNM][:, None]}, r"'us_lnm'.*\[B\], got \[4, 1\]"),
    "has": (lambda b: {**b, names.has(names.CEUS): np.ones((B, 1), bool)}, r"'has_ceus'.*\[B\]"),
    "rows": (lambda b: {**b, names.US_LNM: b[names.US_LNM][:3]}, "same batch size B"),
    "missing": (lambda b: _without(b, names.US_LNM), "no 'us_lnm'"),
    # (helper-69) a clip into a still model, a B-mode clip: the model's clip_frames (data.clip_frames)
    "clip": (lambda b: {**b, names.CEUS: np.stack([b[names.CEUS]] * 2, 1)}, r"'ceus'.*stills \[B, H, W, 3\]"),
    "bmode_clip": (lambda b: {**b, names.BMODE: np.stack([b[names.BMODE]] * 2, 1)}, r"'bmode'.*stills"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_model_refuses_an_input_it_cannot_read_naming_it(case):
    _, model, b, variables = _triple()
    make, message = BAD_INPUTS[case]
    with pytest.raises(ValueError, match=message):  # from shapes alone: refused when traced
        jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, make(b))


def test_a_clip_model_takes_clips_of_its_frames_and_variables_of_another_batch_are_named():
    """helper-69: a clip model (data.clip_frames=3, attention pooling) took a still, skipping its
    trained pool, and clips of 6 frames, in silence; variables straight from model.init (its
    Grad-CAM perturbations shaped to the init batch) failed at another batch size in a
    concatenate. Each one ValueError naming what to do."""
    c = _config(clip_frames=3)
    c.model.temporal_pool = "attention"
    model, clip = build_model(c), _batch(c)
    v = jax.eval_shape(lambda: S.model_variables(model.init(jax.random.key(0), clip)))
    apply = lambda x: jax.eval_shape(lambda v, x: model.apply(v, x, train=False), v, x)  # noqa: E731
    assert apply(clip)["logit"].shape == (B,)
    for frames in (clip[names.CEUS][:, 0], np.concatenate([clip[names.CEUS]] * 2, 1)):
        with pytest.raises(ValueError, match=r"'ceus'.*a clip of 3 frames \[B, 3, H, W, 3\]"):
            apply({**clip, names.CEUS: frames})
    _, still, b, _ = _triple()
    raw = jax.eval_shape(lambda: still.init(jax.random.key(0), b))  # with the perturbations, at B = 4
    with pytest.raises(ValueError, match=r"'perturbations' shaped to a batch of 4, this batch has 1.*model_variables"):
        jax.eval_shape(lambda v, x: still.apply(v, x, train=False), raw, {k: x[:1] for k, x in b.items()})


def test_gradcam_refuses_a_clip_naming_the_input():
    c = _config(clip_frames=3)
    model, clip = build_model(c), _batch(c)
    assert clip[names.CEUS].shape == (B, 3, S32, S32, 3)
    v = jax.eval_shape(lambda: S.model_variables(model.init(jax.random.key(0), clip)))  # the clip model runs
    cams = make_cam_fn(model, layer="stage1")
    with pytest.raises(ValueError, match=r"batch\['ceus'\] must be still images.*\[4, 3, 32, 32, 3\]"):
        jax.eval_shape(cams, v["params"], v["batch_stats"], clip)  # was a broadcasting error inside


def _key_bytes(k) -> bytes:
    return np.asarray(jax.random.key_data(k)).tobytes()


def test_modality_dropout_and_the_device_loader_draw_different_keys(monkeypatch):
    seed, n = 0, 3
    dropout = []  # the key of the model's dropout stream at steps 0..n-1, as the train step passes it

    class Recorder:  # stands in for the model: records the step's rngs
        def apply(self, variables, batch, *, rngs, **_):
            dropout.append(_key_bytes(rngs[DROPOUT_RNG]))
            return {"logit": jnp.zeros(B) + variables["params"]["head"]["bias"][0]}, {"batch_stats": {}}

    tx = optax.sgd(0.1)
    state = S.train_state_from(
        {"params": {"head": {"bias": jnp.zeros(1)}}}, tx, S.make_plateau(_config().train.plateau)
    )
    batch = {names.LABEL: np.array([0, 1, 1, 0], np.int32), names.VALID: np.ones(B, bool)}
    with jax.disable_jit():  # eager: the keys are values
        step = make_train_step(Recorder(), tx, seed=seed)
        for _ in range(n):
            state, _ = step(state, batch)
    # the device-resident loader's key of epochs 0..n-1: what epoch() splits into order and steps
    rows = {names.LABEL: np.zeros(B, np.int32), names.US_LNM: np.zeros(B, np.float32)}
    rows[names.has(names.US_LNM)] = np.ones(B, bool)
    cohort = DeviceCohort(rows, batch_size=B, norm=names.PAPER_NORM, augment=None, seed=seed)
    loader, split = [], jax.random.split
    monkeypatch.setattr(jax.random, "split", lambda key, num=2: loader.append(_key_bytes(key)) or split(key, num))
    for epoch in range(n):
        next(cohort.epoch(epoch))
    monkeypatch.undo()
    assert len(dropout) == len(loader) == n
    assert set(dropout).isdisjoint(loader)  # were equal at step k = epoch k: fold_in(key(seed), k) both


def test_each_consumer_of_the_seed_draws_its_own_keys():
    seed = 0
    roots = {tag: rng_streams.stream(seed, tag) for tag in rng_streams.TAGS.values()}
    # step k of one consumer never meets epoch / step k of another, nor the init key
    keys = [_key_bytes(jax.random.fold_in(root, k)) for root in roots.values() for k in range(8)]
    keys += [_key_bytes(root) for root in roots.values()] + [_key_bytes(jax.random.key(seed))]
    assert len(set(keys)) == len(keys)
    assert len(set(rng_streams.TAGS.values())) == len(rng_streams.TAGS)


def test_gradcam_of_a_model_with_an_unhashable_field_runs_uncached_and_a_hashable_one_once():
    """The per-model caches (a Grad-CAM function, a card's feature widths) take a model that
    does not hash (a Flax module of the user's with a list field) by a plain call, and call a
    hashable one's function once; a TypeError raised inside the function is raised, not retried
    uncached (lnm_jax.memo)."""
    import dataclasses

    from lnm_jax.memo import cache_where_hashable

    _, model, b, v = _triple()
    listed = dataclasses.replace(model, modalities=list(model.modalities))
    with pytest.raises(TypeError):
        hash(listed)
    maps = jax.eval_shape(make_cam_fn(listed, layer="stage1"), v["params"], v["batch_stats"], b)
    assert jax.eval_shape(make_cam_fn(model, layer="stage1"), v["params"], v["batch_stats"], b) == maps
    assert make_cam_fn(model, layer="stage1") is make_cam_fn(model, layer="stage1")

    calls = []

    @cache_where_hashable(maxsize=2)
    def work(x):
        calls.append(x)
        if x == "bad":
            raise TypeError("inside")
        return len(calls)

    assert work("a") == work("a") == 1 and work(["a"]) == 2 and work(["a"]) == 3
    with pytest.raises(TypeError, match="inside"):
        work("bad")
    assert calls == ["a", ["a"], ["a"], "bad"] and work.cache_info().hits == 1
