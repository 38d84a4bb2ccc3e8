"""Decoding without TensorFlow: image bytes -> float32 [size, size, 3] in [0, 1].

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
from PIL import Image, UnidentifiedImageError

from lnm_jax.data.clips import is_clip, sample_clip

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


def resize(img: np.ndarray, size: int) -> np.ndarray:
    """float32 [H, W, C] -> [size, size, C], antialiased bilinear, clipped to [0, 1]."""
    h, w = img.shape[:2]
    if (h, w) == (size, size):
        return img
    rows = np.einsum("oh,hwc->owc", resize_weights(h, size), img, optimize=True)
    out = np.einsum("pw,owc->opc", resize_weights(w, size), rows, optimize=True)
    return np.clip(out, 0.0, 1.0, out=out)  # the antialiased resize can overshoot by ~1e-7


def to_unit_rgb(im: Image.Image) -> np.ndarray:
    """A PIL image -> float32 [H, W, 3] in [0, 1], as TensorFlow's ``decode_image(channels=3)``
    + ``convert_image_dtype`` give it: gray replicated, alpha dropped, 16-bit scaled by 1/65535."""
    if im.mode in SIXTEEN_BIT_MODES:
        gray = np.asarray(im, dtype=np.float32) / 65535.0
        return np.repeat(gray[..., None], 3, axis=-1)
    return np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0


def decode_image(encoded: bytes, size: int) -> np.ndarray:
    """Encoded PNG/JPEG bytes -> float32 [size, size, 3] in [0, 1]."""
    with Image.open(io.BytesIO(encoded)) as im:
        im.load()
        return resize(to_unit_rgb(im), size)


def decode_file(path: Path, size: int, patient_id: str) -> np.ndarray:
    """One image file -> [size, size, 3]; :class:`ImageDecodeError` naming the patient and file."""
    try:
        return decode_image(Path(path).read_bytes(), size)
    except (OSError, UnidentifiedImageError, ValueError) as e:
        first = (str(e).strip().splitlines() or [""])[0]
        raise ImageDecodeError(f"patient {patient_id}: {path}: cannot decode this image ({first})") from e


def decode_ceus(path: Path, size: int, clip_frames: int, patient_id: str) -> np.ndarray:
    """[size, size, 3] for ``clip_frames`` = 1, else [T, size, size, 3] (a still repeated T times)."""
    if not is_clip(path):
        img = decode_file(path, size, patient_id)
        return img if clip_frames == 1 else np.repeat(img[None], clip_frames, axis=0)
    frames = np.stack([resize(f.astype(np.float32) / 255.0, size) for f in sample_clip(path, clip_frames)])
    return frames[0] if clip_frames == 1 else frames
