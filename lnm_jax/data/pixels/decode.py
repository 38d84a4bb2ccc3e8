"""Pixels without TensorFlow: image bytes -> float32 [H, W, 3] in [0, 1], and the resize to
the model's square.

PIL decodes (PNG, JPEG, grayscale, RGB, palette, 16-bit); the resize is the antialiased
bilinear (triangle-kernel) resampling of ``tf.image.resize(..., antialias=True)`` and
``jax.image.resize``, written as two small weight matrices (one per axis) so that it is two
matrix products in numpy: the same function as the TFDS path's decode, not an approximation
of it (checked against TensorFlow in tests/test_loader.py).
"""

from __future__ import annotations

import functools
import io
from pathlib import Path

import numpy as np
from PIL import Image

SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I")


class ImageDecodeError(ValueError):
    """An image the loader cannot decode; the message names the patient and the file."""


@functools.lru_cache(maxsize=64)
def resize_weights(in_size: int, out_size: int) -> np.ndarray:
    """[out_size, in_size] weights of the antialiased triangle-kernel resampling (the
    ``scale_and_translate`` weights of TensorFlow and JAX): output pixel i samples the input at
    (i + 0.5) / scale - 0.5 with a kernel widened by 1 / scale when downsampling."""
    scale = out_size / in_size
    kernel_scale = max(1.0 / scale, 1.0)
    sample = (np.arange(out_size, dtype=np.float64) + 0.5) / scale - 0.5
    distance = np.abs(sample[:, None] - np.arange(in_size, dtype=np.float64)[None, :]) / kernel_scale
    w = np.maximum(0.0, 1.0 - distance)
    total = w.sum(axis=1, keepdims=True)
    w = np.where(total > 1000 * np.finfo(np.float32).eps, w / np.where(total != 0, total, 1), 0.0)
    w[(sample < -0.5) | (sample > in_size - 0.5)] = 0.0
    return w.astype(np.float32)


def placed_weights(in_size: int, new_size: int, out_size: int) -> np.ndarray:
    """[out_size, in_size]: resample ``in_size`` pixels to ``new_size`` and centre them in
    ``out_size`` (zero rows where the image is smaller, its middle where it is larger)."""
    w = resize_weights(in_size, new_size)
    if new_size == out_size:
        return w
    out = np.zeros((out_size, in_size), np.float32)
    offset = (out_size - new_size) // 2
    if offset >= 0:
        out[offset : offset + new_size] = w
    else:
        out[:] = w[-offset : -offset + out_size]
    return out


def resample(img: np.ndarray, rows_w: np.ndarray, cols_w: np.ndarray) -> np.ndarray:
    """[H, W, C] -> [rows_w.shape[0], cols_w.shape[0], C] through per-axis weight matrices."""
    rows = np.einsum("oh,hwc->owc", rows_w, img, optimize=True)
    out = np.einsum("pw,owc->opc", cols_w, rows, optimize=True)
    return np.clip(out, 0.0, 1.0, out=out)  # the antialiased resize can overshoot by ~1e-7


def resize(img: np.ndarray, size: int) -> np.ndarray:
    """float32 [H, W, C] -> [size, size, C], antialiased bilinear, clipped to [0, 1]."""
    h, w = img.shape[:2]
    if (h, w) == (size, size):
        return img
    return resample(img, resize_weights(h, size), resize_weights(w, size))


def fit(img: np.ndarray, size: int, mm_per_pixel: tuple[float, float] | None, field_of_view_mm: float) -> np.ndarray:
    """The model's [size, size, C] view of a cropped image. ``field_of_view_mm`` 0: the crop
    resized to the square (the paper's way: a lesion's size in pixels follows the scanner's
    depth setting). > 0: resampled to ``field_of_view_mm / size`` mm per pixel, aspect kept,
    centred, zero-padded or centre-cropped to the square, so that a centimetre is the same
    number of pixels in every image of the cohort."""
    if field_of_view_mm <= 0:
        return resize(img, size)
    if mm_per_pixel is None:
        raise ValueError("data.field_of_view_mm is set but the image has no physical spacing")
    target = field_of_view_mm / size
    h, w = img.shape[:2]
    new_h = max(1, round(h * mm_per_pixel[1] / target))
    new_w = max(1, round(w * mm_per_pixel[0] / target))
    return resample(img, placed_weights(h, new_h, size), placed_weights(w, new_w, size))


def to_unit_rgb(im: Image.Image) -> np.ndarray:
    """A PIL image -> float32 [H, W, 3] in [0, 1], as TensorFlow's ``decode_image(channels=3)``
    + ``convert_image_dtype`` give it: gray replicated, alpha dropped, 16-bit scaled by 1/65535."""
    if im.mode in SIXTEEN_BIT_MODES:
        gray = np.asarray(im, dtype=np.float32) / 65535.0
        return np.repeat(gray[..., None], 3, axis=-1)
    return np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0


def read_image(path: Path) -> np.ndarray:
    """A PNG/JPEG file as float32 [H, W, 3] in [0, 1]."""
    with Image.open(path) as im:
        im.load()
        return to_unit_rgb(im)


def decode_image(encoded: bytes, size: int) -> np.ndarray:
    """Encoded PNG/JPEG bytes -> float32 [size, size, 3] in [0, 1]."""
    with Image.open(io.BytesIO(encoded)) as im:
        im.load()
        return resize(to_unit_rgb(im), size)
