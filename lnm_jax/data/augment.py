"""The paper's augmentation in numpy, for the host loader's worker threads.

Translation, horizontal flip, scaling (one affine map, bilinear sampling with reflected
borders), then contrast about each channel's mean, brightness, and a clip to [0, 1]: the
transform of :func:`lnm_jax.data.on_device.apply_augmentation` (JAX) and of the TFDS path's
``pipeline._augment_image`` (TensorFlow), here drawn from a per-record
``np.random.Generator``. A clip's frames share one draw.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


def draw(rng: np.random.Generator, size: int, aug: Mapping) -> dict[str, np.ndarray | float | bool]:
    """One draw of the augmentation's parameters (the fields of ``on_device.augment_params``)."""
    return {
        "translate": rng.uniform(-aug["translate"], aug["translate"], 2) * size,
        "scale": rng.uniform(aug["scale_min"], aug["scale_max"]),
        "flip": bool(rng.uniform() < (0.5 if aug["flip"] else 0.0)),
        "contrast": rng.uniform(aug["contrast_min"], aug["contrast_max"]),
        "brightness": rng.uniform(-aug["brightness"], aug["brightness"]),
    }


def _reflect(i: np.ndarray, n: int) -> np.ndarray:
    """Indices into a signal extended by half-sample reflection (d c b a | a b c d | d c b a),
    the extension of TensorFlow's ``REFLECT`` and of scipy's and JAX's ``reflect``."""
    i = np.mod(i, 2 * n)
    return np.where(i >= n, 2 * n - 1 - i, i)


def _bilinear(img: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``img`` [H, W, C] sampled at (y, x) [H', W'] by bilinear interpolation of its reflected
    extension (``map_coordinates(order=1, mode="reflect")``, all channels in one gather)."""
    h, w = img.shape[:2]
    flat = img.reshape(h * w, -1)
    y0, x0 = np.floor(y), np.floor(x)
    wy, wx = (y - y0).astype(np.float32)[..., None], (x - x0).astype(np.float32)[..., None]
    y0, x0 = y0.astype(np.int32), x0.astype(np.int32)
    ya, yb = _reflect(y0, h) * w, _reflect(y0 + 1, h) * w
    xa, xb = _reflect(x0, w), _reflect(x0 + 1, w)
    top = flat[ya + xa] * (1 - wx) + flat[ya + xb] * wx
    bottom = flat[yb + xa] * (1 - wx) + flat[yb + xb] * wx
    return top * (1 - wy) + bottom * wy


def apply(img: np.ndarray, p: Mapping) -> np.ndarray:
    """``img`` float32 [H, W, 3] in [0, 1] -> the augmented image. Output pixel (x, y) samples
    the input at ((fx (x - c - tx)) / s + c, (y - c - ty) / s + c), c the centre, fx = -1 when
    flipped."""
    h, w = img.shape[:2]
    c = (w - 1) / 2.0
    fx = -1.0 if p["flip"] else 1.0
    yy, xx = np.meshgrid(np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32), indexing="ij")
    out = _bilinear(
        img, (yy - c - p["translate"][1]) / p["scale"] + c, fx * (xx - c - p["translate"][0]) / p["scale"] + c
    )
    mean = out.mean(axis=(0, 1), keepdims=True)
    out = (out - mean) * np.float32(p["contrast"]) + mean + np.float32(p["brightness"])
    return np.clip(out, 0.0, 1.0, out=out)


def augment(img: np.ndarray, rng: np.random.Generator, aug: Mapping) -> np.ndarray:
    """An image [H, W, 3] or a clip [T, H, W, 3] (one draw for all its frames)."""
    p = draw(rng, img.shape[-2], aug)
    if img.ndim == 4:
        return np.stack([apply(f, p) for f in img])
    return apply(img, p)
