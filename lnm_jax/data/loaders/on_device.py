"""A small cohort held on the accelerator, with the paper's augmentation done in JAX.

For cohorts that fit in device memory (the paper's 308 patients at 224x224: 0.4 GB as fp32),
the host input pipeline is the bottleneck of a fast accelerator: here the decoded, resized
[0, 1] training images live on the devices once, and each step's batch is gathered, augmented
and normalised by one jitted call, with nothing crossing the host. TensorFlow-free.

The augmentation is the one of :mod:`lnm_jax.data.loaders.pipeline` (translation, horizontal flip,
scaling, contrast, brightness; bilinear sampling with reflected borders; one draw per image or
clip), drawn from JAX keys: ``fold_in(stream(seed, DEVICE_AUGMENT), epoch)`` per epoch
(:mod:`lnm_jax.rng_streams`), then the step and the row,
so the batches depend only on the seed, the epoch and the batch size (the host pipeline's
draws are the record's own, whatever the batch size; the two draw different numbers).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.ndimage import map_coordinates

from lnm_jax import rng_streams
from lnm_jax.names import AVAILABILITY_KEYS, IMAGE_INPUTS, LABEL, US_LNM, VALID, has

ROW_KEYS = (US_LNM, LABEL, *AVAILABILITY_KEYS)


def augment_params(key: jax.Array, size: int | tuple[int, int], aug: Mapping) -> dict[str, jax.Array]:
    """One draw of the augmentation's parameters; ``size``: the image's side or its
    ``(height, width)`` (the translation (x, y): fractions of its width and height)."""
    h, w = (size, size) if isinstance(size, int) else size
    k = jax.random.split(key, 5)
    # float32 draws whatever jax_enable_x64 says: float64 ones are other numbers from the same key
    # (helper-88: another augmentation, and float64 batches, for one seed under x64)
    uniform = functools.partial(jax.random.uniform, dtype=jnp.float32)
    return {
        "translate": uniform(k[0], (2,), minval=-aug["translate"], maxval=aug["translate"])
        * jnp.array([w, h], jnp.float32),
        "scale": uniform(k[1], (), minval=aug["scale_min"], maxval=aug["scale_max"]),
        "flip": uniform(k[2], ()) < (0.5 if aug["flip"] else 0.0),
        "contrast": uniform(k[3], (), minval=aug["contrast_min"], maxval=aug["contrast_max"]),
        "brightness": uniform(k[4], (), minval=-aug["brightness"], maxval=aug["brightness"]),
    }


def apply_augmentation(img: jax.Array, p: Mapping[str, jax.Array], clip: bool = False) -> jax.Array:
    """``img`` [H, W, 3] in [0, 1]. Output pixel (x, y) samples the input at
    ((fx (x - cx - tx)) / s + cx, (y - cy - ty) / s + cy), (cx, cy) the centre, fx = -1 when
    flipped (the transform of ``pipeline._augment_image``); then contrast about the per-channel
    mean and brightness; with ``clip`` (``data.augment.clip``) a clip to [0, 1]
    (:mod:`lnm_jax.data.loaders.augment`: why not by default)."""
    h, w = img.shape[:2]
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    fx = jnp.where(p["flip"], -1.0, 1.0)
    yy, xx = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32), indexing="ij")
    src_x = fx * (xx - cx - p["translate"][0]) / p["scale"] + cx
    src_y = (yy - cy - p["translate"][1]) / p["scale"] + cy
    out = jnp.stack(
        [map_coordinates(img[..., ch], [src_y, src_x], order=1, mode="reflect") for ch in range(img.shape[-1])], axis=-1
    )
    mean = out.mean(axis=(0, 1), keepdims=True)
    out = (out - mean) * p["contrast"] + mean + p["brightness"]
    return jnp.clip(out, 0.0, 1.0) if clip else out


def _augment(images: jax.Array, key: jax.Array, aug: Mapping) -> jax.Array:
    """[B, H, W, 3] or clips [B, T, H, W, 3]; one draw per row (shared by a clip's frames)."""
    size = tuple(images.shape[-3:-1])
    clip = bool(aug.get("clip", False))

    def one(img, k):
        p = augment_params(k, size, aug)
        if img.ndim == 4:
            return jax.vmap(lambda f: apply_augmentation(f, p, clip))(img)
        return apply_augmentation(img, p, clip)

    return jax.vmap(one)(images, jax.random.split(key, images.shape[0]))


class DeviceCohort:
    """Training batches from device-resident arrays.

    ``arrays``: numpy ``bmode``, ``ceus`` ([N, H, W, 3] or clips, [0, 1] floats, zeros where
    missing), ``us_lnm``, ``lnm``, ``has_*``. ``sharding``: where batches go (a batch
    ``NamedSharding`` for data parallelism; the arrays are then replicated on every device).
    """

    def __init__(
        self,
        arrays: Mapping[str, np.ndarray],
        *,
        batch_size: int,
        norm: Mapping,
        augment: Mapping | None,
        seed: int,
        sharding=None,
        replicated=None,
    ):
        self.n = len(arrays[LABEL])
        if self.n < batch_size:
            raise ValueError(f"{self.n} training patients, fewer than one batch of {batch_size}")
        keep = IMAGE_INPUTS + ROW_KEYS
        self.arrays = {k: jax.device_put(np.asarray(arrays[k]), replicated) for k in keep if k in arrays}
        self.batch_size, self.seed = batch_size, seed
        aug = dict(augment) if augment and augment.get("enabled", False) else None
        stats = {
            k: tuple(jax.device_put(np.asarray(norm[k][s], np.float32)) for s in ("mean", "std"))  # explicit puts
            for k in IMAGE_INPUTS
        }

        def make_batch(data, order, i, step_key):
            idx = jax.lax.dynamic_slice_in_dim(order, i * batch_size, batch_size)
            key = jax.random.fold_in(step_key, i)
            b = {k: v[idx] for k, v in data.items()}
            for j, k in enumerate(IMAGE_INPUTS):
                if k not in b:
                    continue
                img = b[k]
                if aug is not None:
                    img = _augment(img, jax.random.fold_in(key, j), aug)
                present = b[has(k)].astype(jnp.float32).reshape((-1,) + (1,) * (img.ndim - 1))
                b[k] = (img - stats[k][0]) / stats[k][1] * present  # a missing image stays zero
            b[US_LNM] = jnp.maximum(b[US_LNM], 0).astype(jnp.float32)
            b[LABEL] = b[LABEL].astype(jnp.int32)
            b[VALID] = jnp.ones(idx.shape[0], bool)
            return b

        self._make = jax.jit(make_batch, out_shardings=sharding)

    def steps_per_epoch(self) -> int:
        return self.n // self.batch_size

    def epoch(self, epoch: int, start: int = 0) -> Iterator[dict[str, jax.Array]]:
        """One epoch of full batches in a seeded order (the last partial batch is dropped),
        from its batch ``start`` (a resumed epoch)."""
        # every number the device needs is put there explicitly (jax.device_put), so that the
        # loop runs under jax.transfer_guard('disallow'): a Python int given to fold_in or a slice
        # had been an implicit transfer at every step (helper-88)
        root = rng_streams.stream(self.seed, rng_streams.DEVICE_AUGMENT)
        order_key, step_key = jax.random.split(jax.random.fold_in(root, rng_streams.put_uint32(epoch)))
        order = jax.random.permutation(order_key, self.n)
        for i in range(start, self.steps_per_epoch()):
            yield self._make(self.arrays, order, jax.device_put(np.int32(i)), step_key)
