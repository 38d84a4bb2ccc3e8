"""tf.data input pipeline, iterated as numpy batches for JAX.

decode -> grayscale-to-RGB -> resize -> cache -> (train: seeded shuffle + augmentation)
-> per-modality normalisation -> batch -> prefetch.

Every random choice is a stateless op seeded by ``(seed, epoch, position)``, so an epoch's
batches depend only on the seed and the epoch number: a resumed run sees exactly the batches
the uninterrupted run would have seen, and tests are deterministic.  Batches are dicts:

* ``bmode``, ``ceus``: float32 [B, H, W, 3], normalised; zeros where the image is missing;
  with ``clip_frames`` T > 1, ``ceus`` is [B, T, H, W, 3] (a still image repeated T times);
* ``us_lnm``: float32 [B] (0 where missing); ``lnm``: int32 [B] (-1 where unknown);
* ``has_bmode``, ``has_ceus``, ``has_us_lnm``: bool [B]; ``valid``: bool [B] (false on the
  padding rows that give evaluation batches a fixed shape); ``patient_id``: bytes [B].
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf

from lnm_jax.data.loaders import loader
from lnm_jax.names import (
    AVAILABILITY_KEYS,
    BMODE,
    CEUS,
    IMAGE_INPUTS,
    LABEL,
    PATIENT_ID,
    US_LNM,
    VALID,
    has,
)


def _decode_image(encoded: tf.Tensor, size: int) -> tf.Tensor:
    """Encoded PNG/JPEG bytes -> float32 [size, size, 3] in [0, 1]."""
    img = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    img = tf.image.convert_image_dtype(img, tf.float32)
    img = tf.image.resize(img, (size, size), method="bilinear", antialias=True)
    return tf.clip_by_value(img, 0.0, 1.0)  # antialiased resize can overshoot by ~1e-7


def _decode(encoded: tf.Tensor, present: tf.Tensor, size: int) -> tf.Tensor:
    """One encoded image -> [size, size, 3]; zeros if absent."""
    return tf.cond(present, lambda: _decode_image(encoded, size), lambda: tf.zeros((size, size, 3), tf.float32))


def _decode_frames(frames: tf.Tensor, present: tf.Tensor, size: int, t: int) -> tf.Tensor:
    """A list of encoded frames -> [size, size, 3] (t = 1) or [t, size, size, 3]; a single
    frame (a still image) is repeated t times; zeros if absent."""

    def decode():
        imgs = tf.map_fn(
            lambda e: _decode_image(e, size), frames, fn_output_signature=tf.TensorSpec((size, size, 3), tf.float32)
        )
        return tf.cond(tf.shape(imgs)[0] == 1, lambda: tf.repeat(imgs, t, axis=0), lambda: imgs)

    out = tf.cond(present, decode, lambda: tf.zeros((t, size, size, 3), tf.float32))
    out = tf.ensure_shape(out, (t, size, size, 3))
    return out[0] if t == 1 else out


def decode_example(
    example: Mapping[str, tf.Tensor], size: int, clip_frames: int = 1, inputs: Sequence[str] = (BMODE, CEUS)
) -> dict[str, tf.Tensor]:
    """One record decoded; an image input not in ``inputs`` (not the model's) is not decoded:
    zeros, its ``has_<input>`` False, as the grain path's ``decode_patient``."""
    held = {k: tf.logical_and(tf.cast(example[has(k)], tf.bool), k in inputs) for k in (BMODE, CEUS)}
    out = {
        BMODE: _decode(example[BMODE], held[BMODE], size),
        CEUS: _decode_frames(example[CEUS], held[CEUS], size, clip_frames),
    }
    out[US_LNM] = tf.cast(tf.maximum(example[US_LNM], 0), tf.float32)
    out[LABEL] = tf.cast(example[LABEL], tf.int32)
    for k in (*AVAILABILITY_KEYS, PATIENT_ID):
        out[k] = example[k]
    for k in (BMODE, CEUS):
        out[has(k)] = tf.cast(held[k], example[has(k)].dtype)
    return out


def select_patients(ds: tf.data.Dataset, patient_ids: Sequence[str]) -> tf.data.Dataset:
    """Keeps the examples whose patient_id is in ``patient_ids``."""
    if not patient_ids:
        raise ValueError("select_patients: empty list of patient ids")
    table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(tf.constant(list(patient_ids)), tf.ones(len(patient_ids), tf.int32)),
        default_value=0,
    )
    return ds.filter(lambda ex: table.lookup(ex[PATIENT_ID]) > 0)


def _augment_image(img: tf.Tensor, seed: tf.Tensor, aug: Mapping) -> tf.Tensor:
    """The paper's augmentation: translation, horizontal flip, scaling, contrast, brightness.
    ``img`` is [H, W, 3] or a clip [T, H, W, 3], whose frames all get the same draw."""
    clip = img.shape.rank == 4
    h = tf.cast(tf.shape(img)[-3], tf.float32)
    w = tf.cast(tf.shape(img)[-2], tf.float32)
    seeds = [tf.random.experimental.stateless_fold_in(seed, i) for i in range(5)]
    t = tf.random.stateless_uniform((2,), seeds[0], -aug["translate"], aug["translate"]) * tf.stack([w, h])
    s = tf.random.stateless_uniform((), seeds[1], aug["scale_min"], aug["scale_max"])
    flip = tf.random.stateless_uniform((), seeds[2]) < (0.5 if aug["flip"] else 0.0)
    fx = tf.where(flip, -1.0, 1.0)
    cy, cx = (h - 1.0) / 2.0, (w - 1.0) / 2.0
    # Reflected borders: black fill would teach BatchNorm statistics that evaluation never sees.
    # Output pixel (x, y) samples input ((fx (x - cx - tx)) / s + cx, (y - cy - ty) / s + cy).
    transform = tf.stack([fx / s, 0.0, cx - fx * (cx + t[0]) / s, 0.0, 1.0 / s, cy - (cy + t[1]) / s, 0.0, 0.0])
    img = tf.raw_ops.ImageProjectiveTransformV3(
        images=img if clip else img[None],
        transforms=transform[None],
        output_shape=tf.shape(img)[-3:-1],
        fill_value=0.0,
        interpolation="BILINEAR",
        fill_mode="REFLECT",
    )
    img = img if clip else img[0]
    if aug["contrast_min"] == aug["contrast_max"]:  # a fixed factor, as the other paths take it (TF's
        img = tf.image.adjust_contrast(img, aug["contrast_min"])  # random contrast refuses an empty range)
    else:
        img = tf.image.stateless_random_contrast(img, aug["contrast_min"], aug["contrast_max"], seeds[3])
    img = tf.image.stateless_random_brightness(img, aug["brightness"], seeds[4])
    # (lnm_jax.data.loaders.augment: why not clipped unless data.augment.clip says so)
    return tf.clip_by_value(img, 0.0, 1.0) if aug.get("clip", False) else img


def _normalise(example: dict, norm: Mapping) -> dict:
    out = dict(example)
    for k in IMAGE_INPUTS:
        mean = tf.constant(norm[k]["mean"], tf.float32)
        std = tf.constant(norm[k]["std"], tf.float32)
        present = tf.cast(example[has(k)], tf.float32)
        out[k] = (example[k] - mean) / std * present  # a missing image stays exactly zero
    return out


def decoded_dataset(
    ds: tf.data.Dataset,
    patient_ids: Sequence[str],
    image_size: int,
    cache: bool = True,
    clip_frames: int = 1,
    inputs: Sequence[str] = (BMODE, CEUS),
) -> tf.data.Dataset:
    """Selected patients, decoded and resized to [0, 1] floats, in TFDS's fixed record order
    (a hash of the patient id, not the manifest's row order); only the image ``inputs``."""
    ds = select_patients(ds, patient_ids).map(
        lambda ex: decode_example(ex, image_size, clip_frames, inputs),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    return ds.cache() if cache else ds


def batches(
    decoded: tf.data.Dataset,
    *,
    batch_size: int,
    norm: Mapping,
    train: bool,
    seed: int = 0,
    epoch: int = 0,
    augment: Mapping | None = None,
    shuffle_buffer: int = 4096,
) -> tf.data.Dataset:
    """One epoch of batches. ``train`` shuffles, augments (if ``augment`` is enabled) and drops
    the last partial batch; evaluation keeps order and every patient."""
    ds = decoded
    if train:
        epoch_seed = tf.constant([seed, epoch], tf.int64)
        ds = ds.shuffle(shuffle_buffer, seed=int(seed) * 100_003 + int(epoch), reshuffle_each_iteration=False)
        if augment is not None and augment.get("enabled", False):

            def aug(i, ex):
                ex = dict(ex)
                base = tf.random.experimental.stateless_fold_in(epoch_seed, i)
                for j, k in enumerate(IMAGE_INPUTS):
                    ex[k] = _augment_image(ex[k], tf.random.experimental.stateless_fold_in(base, j), augment)
                return ex

            ds = ds.enumerate().map(aug, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.map(lambda ex: _normalise(ex, norm), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(batch_size, drop_remainder=train)
    options = tf.data.Options()
    options.deterministic = True
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


def as_numpy(ds: tf.data.Dataset, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
    """Iterates numpy batches padded to ``batch_size`` rows, with a ``valid`` mask, so every
    batch has one shape and a jitted step compiles once."""
    for batch in ds.as_numpy_iterator():
        n = len(batch[LABEL])
        out = {}
        for k, v in batch.items():
            if n < batch_size:
                pad = np.zeros((batch_size - n,) + v.shape[1:], v.dtype)
                v = np.concatenate([v, pad])
            out[k] = v
        out[VALID] = np.arange(batch_size) < n
        yield out


def normalisation_stats(decoded: tf.data.Dataset) -> dict[str, dict[str, list[float]]]:
    """Per-modality, per-channel mean and std of a decoded dataset's [0, 1] images (the
    accumulation of :func:`lnm_jax.data.loaders.loader.normalisation_stats`)."""
    return loader.normalisation_stats(decoded.batch(32).as_numpy_iterator())


class TfdsSource:
    """A cohort's batches as a run asks for them, through TFDS + tf.data (``data.loader='tfds'``):
    the interface of :class:`lnm_jax.data.loaders.loader.GrainSource`. Training batches hold this
    process's rows of each global batch; evaluation batches are global."""

    def __init__(
        self,
        cohort,
        settings: loader.BatchSettings,
        records_dir,
        *,
        require_labels: bool = True,
        process_index: int = 0,
        process_count: int = 1,
    ):
        from lnm_jax.data.loaders.tfds_builder import load_cohort  # noqa: PLC0415

        if settings.framing.field_of_view_mm:
            raise ValueError("data.field_of_view_mm (physical scale) needs the default data.loader='grain'")
        self.settings = settings
        self.process_index, self.process_count = process_index, process_count
        from lnm_jax.data.loaders.tfds_builder import records_key  # noqa: PLC0415

        framing = settings.framing
        self.folder = Path(records_dir) / records_key(
            cohort, settings.clip_frames, framing.ceus_region, framing.accept_secondary_capture
        )
        with self._named():
            self._all = load_cohort(
                cohort,
                records_dir,
                require_labels=require_labels,
                clip_frames=settings.clip_frames,
                ceus_region=framing.ceus_region,
                accept_secondary_capture=framing.accept_secondary_capture,
            )
        self._decoded: dict[tuple[str, ...], tf.data.Dataset] = {}

    def decoded(self, ids: Sequence[str]) -> tf.data.Dataset:
        key = tuple(ids)
        if key not in self._decoded:
            s = self.settings
            self._decoded[key] = decoded_dataset(self._all, key, s.image_size, s.cache, s.clip_frames, s.inputs)
        return self._decoded[key]

    def train_batches(self, ids: Sequence[str], epoch: int, state: dict | None = None) -> Iterator[tuple[dict, dict]]:
        """``(state after the batch, batch)`` pairs of one epoch; ``state`` (``{"next_index": k}``)
        skips the k batches already trained on (the epoch's batches are a pure function of the
        seed and the epoch, so the skipped ones are exactly those)."""
        s = self.settings
        ds = batches(
            self.decoded(ids),
            batch_size=s.batch_size,
            norm=s.norm,
            train=True,
            seed=s.seed,
            epoch=epoch,
            augment=s.augment,
            shuffle_buffer=s.shuffle_buffer,
        )
        start = int(state["next_index"]) if state else 0
        per = s.batch_size // self.process_count
        rows = slice(self.process_index * per, (self.process_index + 1) * per)
        with self._named():
            for k, batch in enumerate(as_numpy(ds.skip(start), s.batch_size), start + 1):
                yield {"next_index": k}, {key: v[rows] for key, v in batch.items()}

    @contextlib.contextmanager
    def _named(self):
        """A TFDS folder that cannot be read (a truncated record file, files missing: TensorFlow's
        DataLossError and kin) as one line naming the folder and the
        remedy (helper-95: "unexpected DataLossError: {{function_node ...}} truncated record")."""
        try:
            yield
        except tf.errors.OpError as e:  # (its records were decoded when built: a read failing now is damage)
            first = (str(getattr(e, "message", e)).strip().splitlines() or [type(e).__name__])[0]
            # TensorFlow's own words without its graph's names ({{function_node ...}}, [Op:...])
            first = re.sub(r"\{\{.*?\}\}|\[Op:[^\]]*\]", "", first).strip(" :;'\"") or type(e).__name__
            raise ValueError(
                f"the TFDS records in {self.folder} cannot be read ({first}): they are damaged; delete that folder "
                "and run again (it is built anew)"
            ) from e

    def eval_batches(self, ids: Sequence[str]) -> Iterator[dict]:
        s = self.settings
        ds = batches(self.decoded(ids), batch_size=s.eval_batch_size, norm=s.norm, train=False)
        return as_numpy(ds, s.eval_batch_size)

    def arrays(self, ids: Sequence[str]) -> dict[str, np.ndarray]:
        parts = list(self.decoded(ids).batch(256).as_numpy_iterator())
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0] if k != PATIENT_ID}

    def normalisation_stats(self, ids: Sequence[str]) -> dict:
        return normalisation_stats(self.decoded(ids))
