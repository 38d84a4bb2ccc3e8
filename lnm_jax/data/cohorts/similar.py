"""Near-duplicate pictures: one picture saved again in another way, which the exact pixel
digest (:func:`lnm_jax.data.cohorts.manifest.pixel_digest`) tells apart: a JPEG re-encode of a
PNG, 8-bit samples stored as 16-bit, a copy resized by a few percent, its crop shifted by a
pixel. Each still is reduced to a grey thumbnail of :data:`THUMB` x :data:`THUMB` box averages of
its framed picture (the crop applied), and two thumbnails whose root-mean-square difference is
at most :data:`SIMILAR_RMS` (of the [0, 1] range) are one picture.

The threshold, measured with ``python scripts/similar_threshold.py`` (the public cohorts in
``../shared/data``, 2026-12-05): between the pictures of different patients, the nearest pair
is 0.046 apart in BUS-BRA (1,127 images; 1% of images have another patient's within 0.053, 5%
within 0.059, half within 0.090) and 0.049 in DDTI (291); one patient's two BUS-BRA views are
at least 0.034 apart. The same picture saved again, over 50 images of each cohort (the larger
of the two cohorts' maxima): a JPEG re-encode at quality 95 / 75 / 50 at most 0.0002 / 0.0013 / 0.0025,
8-bit samples stored as 16-bit (``v << 8``) 0.0023, resized to 98% 0.0037, its crop one pixel
off 0.013; a crop three pixels off (0.033) and a gamma of 1.1 (0.033) are not found. 0.015
sits three times under the nearest pair of different pictures and above what those copies
move.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

THUMB = 16  # thumbnail side, pixels
SIMILAR_RMS = 0.015  # the largest RMS difference of two thumbnails of one picture (module docstring)
NEAREST_DIFFERENT = 0.046  # the nearest two different patients' pictures measured (BUS-BRA; DDTI 0.049)


def thumbnail(img: np.ndarray, box=None) -> np.ndarray:
    """float32 [THUMB * THUMB]: ``img`` (float [H, W, C] or [H, W] in [0, 1]) inside ``box``
    (a :class:`lnm_jax.data.pixels.dicom.Box`, clipped to the image; None: all of it), grey
    (the channels' mean), as box averages on a THUMB x THUMB grid."""
    if box is not None:
        img = img[max(box.y0, 0) : max(box.y1, 0), max(box.x0, 0) : max(box.x1, 0)]
    grey = np.asarray(img, np.float32)
    if grey.ndim == 3:  # the channels' mean, summed slice by slice (numpy's mean over a last axis of
        grey = sum(grey[..., c] for c in range(grey.shape[-1])) / np.float32(grey.shape[-1])  # 3 is 10x slower)
    if grey.size == 0:
        return np.zeros(THUMB * THUMB, np.float32)
    return np.asarray(Image.fromarray(grey, "F").resize((THUMB, THUMB), Image.BOX), np.float32).ravel()


def earlier_similar(
    thumbnails: Sequence[np.ndarray], owners: Sequence[object], threshold: float = SIMILAR_RMS, block: int = 1024
) -> list[tuple[int, float] | None]:
    """For each thumbnail, the first earlier one (its index, their RMS difference) of another
    owner within ``threshold``, or None. All pairs, ``block`` rows at a time (memory
    ``block`` x N float64)."""
    if not thumbnails:
        return []
    t = np.stack(thumbnails).astype(np.float64)
    owner = np.unique(np.asarray([str(o) for o in owners]), return_inverse=True)[1]
    norms = (t * t).sum(1)
    out: list[tuple[int, float] | None] = []
    for i0 in range(0, len(t), block):
        a = t[i0 : i0 + block]
        rms = np.sqrt(np.maximum(norms[i0 : i0 + block, None] + norms[None] - 2 * a @ t.T, 0) / t.shape[1])
        rows = np.arange(i0, i0 + len(a))[:, None]
        near = (rms <= threshold) & (np.arange(len(t))[None] < rows) & (owner[None] != owner[rows])
        for k, r in enumerate(near):
            j = int(np.argmax(r)) if r.any() else -1
            out.append((j, float(rms[k, j])) if j >= 0 else None)
    return out


def near_any(
    thumbnails: Sequence[np.ndarray], reference: Sequence[np.ndarray], threshold: float = SIMILAR_RMS
) -> list[bool]:
    """For each thumbnail, whether any of ``reference`` is within ``threshold`` RMS of it."""
    if not len(thumbnails) or not len(reference):
        return [False] * len(thumbnails)
    a, b = np.stack(thumbnails).astype(np.float64), np.stack(reference).astype(np.float64)
    d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None] - 2 * a @ b.T
    return list(np.sqrt(np.maximum(d2, 0) / a.shape[1]).min(1) <= threshold)
