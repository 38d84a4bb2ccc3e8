"""The paper's augmentation in numpy, for the host loader's worker threads.

Translation, horizontal flip, scaling (one affine map, bilinear sampling with reflected
borders), then contrast about each channel's mean, brightness, and a clip to [0, 1]: the
transform of :func:`lnm_jax.data.loaders.on_device.apply_augmentation` (JAX) and of the TFDS path's
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


def _interpolation_matrix(src: np.ndarray, n: int) -> np.ndarray:
    """[len(src), n] weights of 1-D linear interpolation at positions ``src`` of a signal of
    length ``n`` extended by half-sample reflection."""
    lo = np.floor(src)
    frac = (src - lo).astype(np.float32)
    lo = lo.astype(np.int64)
    m = np.zeros((len(src), n), np.float32)
    rows = np.arange(len(src))
    np.add.at(m, (rows, _reflect(lo, n)), 1.0 - frac)
    np.add.at(m, (rows, _reflect(lo + 1, n)), frac)
    return m


def warp(img: np.ndarray, p: Mapping) -> np.ndarray:
    """The geometric half of :func:`apply` (translation, flip, scale): ``img`` float32
    [H, W, C] -> [H, W, C]. Output pixel (x, y) samples the input at
    ((fx (x - c - tx)) / s + c, (y - c - ty) / s + c), c the centre, fx = -1 when flipped;
    bilinear, reflected borders. A lesion mask goes through this alone, so that it stays on its
    image's pixels (its values stay in [0, 1]: a boundary pixel's share of lesion)."""
    h, w = img.shape[:2]
    c = (w - 1) / 2.0
    fx = -1.0 if p["flip"] else 1.0
    # No rotation or shear: the source row depends only on the output row and the source column
    # only on the output column, so bilinear sampling is two 1-D interpolations, each a matrix
    # product (the same numbers as a 2-D gather, in a fraction of the time).
    out_rows = (np.arange(h, dtype=np.float32) - c - p["translate"][1]) / p["scale"] + c
    out_cols = fx * (np.arange(w, dtype=np.float32) - c - p["translate"][0]) / p["scale"] + c
    rows = np.einsum("oh,hwc->owc", _interpolation_matrix(out_rows, h), img, optimize=True)
    return np.einsum("pw,owc->opc", _interpolation_matrix(out_cols, w), rows, optimize=True)


def apply(img: np.ndarray, p: Mapping) -> np.ndarray:
    """``img`` float32 [H, W, 3] in [0, 1] -> the augmented image: :func:`warp`, then contrast
    about each channel's mean, brightness and a clip to [0, 1]."""
    out = warp(img, p)
    pixels = out.reshape(-1, out.shape[-1])
    mean = np.ones(len(pixels), np.float32) @ pixels / np.float32(len(pixels))  # a GEMV: 30x numpy's mean
    out = (out - mean) * np.float32(p["contrast"]) + mean + np.float32(p["brightness"])
    return np.clip(out, 0.0, 1.0, out=out)


def augment(
    img: np.ndarray, rng: np.random.Generator, aug: Mapping, lesion: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """An image [H, W, 3] or a clip [T, H, W, 3] (one draw for all its frames), and its lesion
    mask [H, W] when given (the same draw's :func:`warp`) -> ``(image, mask or None)``."""
    p = draw(rng, img.shape[-2], aug)
    out = np.stack([apply(f, p) for f in img]) if img.ndim == 4 else apply(img, p)
    return out, None if lesion is None else warp(lesion[..., None], p)[..., 0]
