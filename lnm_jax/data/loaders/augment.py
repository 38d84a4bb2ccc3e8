"""The paper's augmentation in numpy, for the host loader's worker threads.

Translation, horizontal flip, scaling (one affine map, bilinear sampling with reflected
borders), then contrast about each channel's mean and brightness (an added offset): the
transform of :func:`lnm_jax.data.loaders.on_device.apply_augmentation` (JAX) and of the TFDS path's
``pipeline._augment_image`` (TensorFlow), here drawn from a per-record
``np.random.Generator``. A clip's frames share one draw.

The result is not clipped to [0, 1] (``data.augment.clip``, default False; runs stored before
the field clipped, and are read as clipping): contrast and brightness are then invertible, and
normalisation follows. A clip had erased what lies near black: a CEUS clip's frames before
the contrast arrives (mean 0.012) went wholly black in a third of the draws (helper-92's
trial), the wash-in a clip model learns from.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


def draw(rng: np.random.Generator, size: int | tuple[int, int], aug: Mapping) -> dict[str, np.ndarray | float | bool]:
    """One draw of the augmentation's parameters (the fields of ``on_device.augment_params``);
    ``size``: the image's side, or its ``(height, width)``: the translation (x, y) in pixels is
    the drawn fraction of its width and of its height."""
    h, w = (size, size) if np.ndim(size) == 0 else size
    return {
        "translate": rng.uniform(-aug["translate"], aug["translate"], 2) * np.array([w, h]),
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


def _warp_planes(img: np.ndarray, p: Mapping) -> np.ndarray:
    """:func:`warp`'s arithmetic: ``img`` [..., H, W, C] -> the warped channel planes
    [..., C, H, W] (contiguous)."""
    h, w = img.shape[-3:-1]
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0  # each axis its own centre (a non-square image's rows had used cx)
    fx = -1.0 if p["flip"] else 1.0
    # No rotation or shear: the source row depends only on the output row and the source column
    # only on the output column, so bilinear sampling is two 1-D interpolations, each a matrix
    # product per channel plane (the same numbers as a 2-D gather, in a fraction of the time).
    out_rows = (np.arange(h, dtype=np.float32) - cy - p["translate"][1]) / p["scale"] + cy
    out_cols = fx * (np.arange(w, dtype=np.float32) - cx - p["translate"][0]) / p["scale"] + cx
    planes = np.ascontiguousarray(np.moveaxis(img, -1, -3))  # one copy: every product below on BLAS
    return _interpolation_matrix(out_rows, h) @ planes @ _interpolation_matrix(out_cols, w).T


def warp(img: np.ndarray, p: Mapping) -> np.ndarray:
    """The geometric half of :func:`apply` (translation, flip, scale): ``img`` float32
    [..., H, W, C] (an image, or a clip's frames sharing the draw) -> the same shape. Output
    pixel (x, y) samples the input at ((fx (x - cx - tx)) / s + cx, (y - cy - ty) / s + cy),
    (cx, cy) the centre, fx = -1 when flipped; bilinear, reflected borders. A lesion mask goes through this
    alone, so that it stays on its image's pixels (its values stay in [0, 1]: a boundary
    pixel's share of lesion)."""
    return np.ascontiguousarray(np.moveaxis(_warp_planes(img, p), -3, -1))


def apply(img: np.ndarray, p: Mapping, clip: bool = False) -> np.ndarray:
    """``img`` float32 [..., H, W, 3] in [0, 1] (an image, or a clip's frames sharing the draw)
    -> the augmented image(s), the same shape: :func:`warp`, then contrast about each image's
    channel means and brightness; with ``clip`` (``data.augment.clip``: runs stored before it)
    a clip to [0, 1]."""
    planes = _warp_planes(img, p)  # [..., C, H, W]
    h, w = planes.shape[-2:]
    # each plane's mean as a GEMV (30x numpy's mean at these sizes)
    mean = (planes.reshape(*planes.shape[:-2], h * w) @ np.ones(h * w, np.float32) / np.float32(h * w))[..., None, None]
    planes = (planes - mean) * np.float32(p["contrast"]) + mean + np.float32(p["brightness"])
    # written in the [..., H, W, C] layout: the planes' transposition costs no pass of its own
    out = np.empty(img.shape, np.float32)
    if clip:
        return np.clip(np.moveaxis(planes, -3, -1), 0.0, 1.0, out=out)
    out[...] = np.moveaxis(planes, -3, -1)
    return out


def augment(
    img: np.ndarray, rng: np.random.Generator, aug: Mapping, lesion: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """An image [H, W, 3] or a clip [T, H, W, 3] (one draw for all its frames), and its lesion
    mask [H, W] when given (the same draw's :func:`warp`) -> ``(image, mask or None)``; ``aug``:
    ``data.augment``'s fields."""
    p = draw(rng, img.shape[-3:-1], aug)
    image = apply(img, p, clip=bool(aug.get("clip", False)))
    return image, None if lesion is None else warp(lesion[..., None], p)[..., 0]
