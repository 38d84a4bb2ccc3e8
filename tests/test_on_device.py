"""The device-resident cohort: its JAX augmentation is the host pipeline's transform, its
epochs are seeded permutations, and training runs from it."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from support import BACKBONE

from lnm_jax.config import base_config
from lnm_jax.data.loaders.on_device import DeviceCohort, apply_augmentation
from lnm_jax.training.steps import PREDICT_IN_FLIGHT, make_eval_step, predict

AUG = base_config().data.augment.to_dict()  # the paper's augmentation, as configured
NORM = {
    "bmode": {"mean": (0.2, 0.2, 0.2), "std": (0.1, 0.1, 0.1)},
    "ceus": {"mean": (0.3, 0.2, 0.1), "std": (0.2, 0.2, 0.2)},
}


@pytest.mark.tf
@pytest.mark.parametrize("flip", [False, True])
def test_jax_augmentation_equals_the_tf_pipeline_transform(flip):
    tf = pytest.importorskip("tensorflow", reason="TensorFlow not installed (pip install -e '.[tf]')")
    img = np.random.default_rng(0).random((20, 28, 3)).astype(np.float32)  # not square: each axis its centre
    t, s, contrast, brightness = (2.3, -1.7), 1.07, 1.15, 0.05
    p = {
        "translate": jnp.array(t),
        "scale": jnp.array(s),
        "flip": jnp.array(flip),
        "contrast": jnp.array(contrast),
        "brightness": jnp.array(brightness),
    }
    cy, cx, fx = 9.5, 13.5, -1.0 if flip else 1.0
    transform = tf.constant(
        [[fx / s, 0.0, cx - fx * (cx + t[0]) / s, 0.0, 1.0 / s, cy - (cy + t[1]) / s, 0, 0]], tf.float32
    )
    ref = tf.raw_ops.ImageProjectiveTransformV3(
        images=img[None],
        transforms=transform,
        output_shape=[20, 28],
        fill_value=0.0,
        interpolation="BILINEAR",
        fill_mode="REFLECT",
    )[0]
    ref = tf.image.adjust_brightness(tf.image.adjust_contrast(ref, contrast), brightness).numpy()
    assert ref.max() > 1  # (what a clip would change)
    np.testing.assert_allclose(np.asarray(apply_augmentation(jnp.asarray(img), p)), ref, atol=1e-5)
    clipped = np.asarray(apply_augmentation(jnp.asarray(img), p, clip=True))
    np.testing.assert_allclose(clipped, np.clip(ref, 0, 1), atol=1e-5)
    # and the TFDS path's own transform, with these parameters drawn: against the JAX one
    from lnm_jax.data.loaders.pipeline import _augment_image

    aug = {"translate": 0.1, "scale_min": 0.9, "scale_max": 1.1, "flip": flip, "contrast_min": 0.8}
    aug |= {"contrast_max": 1.2, "brightness": 0.1, "clip": False}
    out = _augment_image(tf.constant(img), tf.constant([3, 4], tf.int64), aug).numpy()
    assert out.shape == img.shape and np.isfinite(out).all()


def _arrays(n=10, size=16, clip=0):
    r = np.random.default_rng(1)
    shape = (n, clip, size, size, 3) if clip else (n, size, size, 3)
    has_ceus = np.arange(n) % 3 != 0
    ceus = r.random(shape).astype(np.float32)
    ceus[~has_ceus] = 0
    return {
        "bmode": r.random((n, size, size, 3)).astype(np.float32),
        "ceus": ceus,
        "us_lnm": r.integers(0, 2, n).astype(np.float32),
        "lnm": np.arange(n) % 2,
        "has_bmode": np.ones(n, bool),
        "has_ceus": has_ceus,
        "has_us_lnm": np.ones(n, bool),
    }


@pytest.mark.parametrize("clip", [0, 3])
def test_device_cohort_epochs_are_seeded_permutations_with_normalised_batches(clip):
    arrays = _arrays(clip=clip)
    cohort = DeviceCohort(arrays, batch_size=4, norm=NORM, augment=None, seed=0)
    batches = list(cohort.epoch(0))
    assert len(batches) == cohort.steps_per_epoch() == 2
    rows = np.concatenate([np.asarray(b["lnm"]) for b in batches])
    assert len(rows) == 8
    b = batches[0]
    # no augmentation: exactly the normalised inputs of the rows drawn; missing CEUS stays zero
    first = np.asarray(b["bmode"][0])
    matches = [i for i in range(10) if np.allclose((arrays["bmode"][i] - 0.2) / 0.1, first, atol=1e-5)]
    assert len(matches) == 1
    assert not np.asarray(b["ceus"])[~np.asarray(b["has_ceus"])].any()
    # seeded: the same epoch twice is the same; another epoch another order
    again = [np.asarray(x["lnm"]) for x in cohort.epoch(0)]
    assert all(np.array_equal(x, np.asarray(y["lnm"])) for x, y in zip(again, batches))
    aug = DeviceCohort(arrays, batch_size=4, norm=NORM, augment=AUG, seed=0)
    a0, a0b = next(aug.epoch(0)), next(aug.epoch(0))
    np.testing.assert_array_equal(np.asarray(a0["bmode"]), np.asarray(a0b["bmode"]))
    assert a0["ceus"].shape == b["ceus"].shape
    if clip:  # one draw per clip: identical frames stay identical
        same = dict(arrays, ceus=np.repeat(arrays["ceus"][:, :1], clip, axis=1))
        c = next(DeviceCohort(same, batch_size=4, norm=NORM, augment=AUG, seed=0).epoch(0))["ceus"]
        np.testing.assert_allclose(np.asarray(c[:, 1]), np.asarray(c[:, 0]), atol=1e-6)


def test_training_from_a_device_resident_cohort(tiny_cohort, tmp_path):
    from lnm_jax.run import Run
    from lnm_jax.training.loop import train

    c = base_config("bmode,us_lnm")  # one image branch: the device-resident path, half the compile
    c.data.manifest, c.data.image_size, c.data.on_device = str(tiny_cohort), 32, True
    c.model.backbone, c.model.width = BACKBONE, 4
    c.train.epochs, c.train.batch_size, c.train.eval_batch_size = 2, 8, 2
    run = Run.create(c, tmp_path / "run")
    train(run)
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2] and all(np.isfinite(r["train_loss"]) for r in rows)
    assert rows[0]["step"] == 3  # 24 training patients // 8
    # validation's batches were read once and kept on the device: every epoch's are the same,
    # and predicting over them (several batches in flight) gives what the loader's give
    kept = run.data.validation_batches()
    assert run.data.validation_batches() is kept and len(kept) > PREDICT_IN_FLIGHT
    assert all(isinstance(x, jax.Array) for _, inputs in kept for x in inputs.values())
    state, step = run.fresh_state(), make_eval_step(run.model)
    placed = predict(step, state.params, state.batch_stats, kept)
    read = predict(step, state.params, state.batch_stats, run.data.eval_batches("val"))
    assert placed.keys() == read.keys() and len(read["logit"]) == len(run.split.val)
    for k in read:
        np.testing.assert_array_equal(placed[k], read[k])


def test_a_device_cohort_epoch_transfers_nothing_implicitly_and_draws_float32_under_x64():
    """helper-88: an epoch of the device-resident cohort made an implicit host-to-device
    transfer at every step (Python ints given to ``fold_in`` and a slice), which
    ``jax.transfer_guard('disallow')`` refuses; and under ``jax_enable_x64`` its augmentation drew
    float64 numbers, other numbers from the same key (another augmentation for one seed). Both
    gone: the same batches under the guard, the same float32 draws under x64."""
    from lnm_jax.data.loaders.on_device import augment_params

    arrays = _arrays(clip=0)
    aug = DeviceCohort(arrays, batch_size=4, norm=NORM, augment=AUG, seed=0)
    want = [np.asarray(b["bmode"]) for b in aug.epoch(1)]  # compiled outside the guard
    with jax.transfer_guard("disallow"):
        aug = DeviceCohort(arrays, batch_size=4, norm=NORM, augment=AUG, seed=0)  # its setup too
        got = [b["bmode"] for b in aug.epoch(1)]
        resumed = [b["bmode"] for b in aug.epoch(1, start=1)]
    for w, g in zip(want, got):
        np.testing.assert_array_equal(np.asarray(g), w)
    np.testing.assert_array_equal(np.asarray(resumed[0]), want[1])
    plain = augment_params(jax.random.key(0), 32, AUG)
    with jax.enable_x64(True):
        wide = augment_params(jax.random.key(0), 32, AUG)
    for k, v in plain.items():
        assert wide[k].dtype == v.dtype, (k, wide[k].dtype)
        np.testing.assert_array_equal(np.asarray(wide[k]), np.asarray(v))
