"""Near-duplicate pictures: one picture saved again in another way, which the exact pixel
digest (:func:`lnm_jax.data.cohorts.manifest.pixel_digest`) tells apart: a JPEG re-encode of a
PNG, 8-bit samples stored as 16-bit (scaled or not), a copy resized by a few percent, its crop
shifted by a pixel, a mirror image, its brightness or gamma changed a little. Each still is
reduced to a grey thumbnail of :data:`THUMB` x :data:`THUMB` box averages of its framed picture
(the crop applied), stretched to span 0-1 (its darkest cell 0, its brightest 1), and two
thumbnails whose root-mean-square difference, one of them mirrored left to right or not, is at
most :data:`SIMILAR_RMS` are one picture (:func:`nearness`). A mirror image is a copy training
sees as one (its augmentation flips). The stretch makes the comparison blind to a picture's
brightness and contrast: different pictures read dim (8-bit or 12-bit samples stored unscaled
in a 16-bit PNG) or stored at low contrast on a grey floor had differed by as little as their
range and came within the threshold (helper-54's trial: 66 of 1,770 pairs of 60 BUS-BRA
pictures at 12 bits, 89 at 13; helper-55's: 55 of 80 BUS-BRA and DDTI pictures stored as
100 + 0.15 v, with the thumbnails divided by their brightest cell only; none of either now).

Cells dark in both thumbnails (at most :data:`DARK` of the span) do not count
(:func:`distances`): the black surround that two patients' screen captures share had brought
different pictures near (24 BUS-BRA pictures, each centred on a 1600x1200 black screen with one
grey bar: 46 pairs near by the plain RMS). Two thumbnails that together show fewer than
:data:`MIN_SHOWN` cells (a quarter of the grid) are not compared: a small picture on a large
black screen fills a few cells, and those few, with the screen's bar, had brought different
pictures near (24 BUS-BRA pictures on 2400x1800 screens, 23-40 cells shown: 3 pairs once
mirror images were compared, 6 in helper-53's trial). Every pair of BUS-BRA's and DDTI's
pictures shows 109 cells or more. Such captures want their crop, as validation's
screen-capture hint says; a copy of one is found by its exact digest only. A grey surround is
no dark cell: 80 BUS-BRA and DDTI pictures on 1024x768 screens of grey 60/255 with a light bar
and text gave 1 pair of 3,160 within the threshold (0.028; 6 with the brightest-cell division,
14 of 40 pictures in helper-55's trial).

The threshold, measured with ``python scripts/similar_threshold.py --data ../shared/data``
(2026-12-06, stretched thumbnails, mirror images compared): between the pictures of different
patients, the nearest pair is 0.108 apart in BUS-BRA (1,127 images; 1% of images have another
patient's within 0.120, 5% within 0.138, half within 0.176) and 0.087 in DDTI (291); one
patient's two BUS-BRA views are at least 0.094 apart; of 24 different pictures on a 1600x1200
or a 2400x1800 black screen with one grey bar, no pair is within 0.03. The same picture saved
again, over 50 images of each cohort (the larger of the two cohorts' maxima): a JPEG re-encode
at quality 95 / 75 / 50 at most 0.0009 / 0.0032 / 0.0068, 8-bit samples stored as 16-bit
shifted up by 8 or by 4 bits 0.0001, resized to 98% 0.012, mirrored 0.0059, brightness raised
by 8 of 255 0.0038, a gamma of 1.1 0.028, its crop one pixel off 0.031 (median 0.014: most
found). Not found: a crop three pixels off (0.073), 10 pixels of black padding (0.22; the
thumbnail's grid moves), a burned-in annotation box (0.096, median 0.032). 0.03 sits under a
third of the nearest pair of different pictures and above what the copies found move.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

THUMB = 16  # thumbnail side, pixels
SIMILAR_RMS = 0.03  # the largest RMS difference of two thumbnails of one picture (module docstring)
DARK = 1 / 32  # a cell at most this far above the thumbnail's darkest (of its span) shows nothing (a screen's surround)
NEAREST_DIFFERENT = 0.087  # the nearest two different patients' pictures measured (DDTI; BUS-BRA 0.108)
MIN_SHOWN = THUMB * THUMB // 4  # two thumbnails showing fewer cells together are not compared (module docstring)


def thumbnail(img: np.ndarray, box=None) -> np.ndarray:
    """float32 [THUMB * THUMB]: ``img`` (float [H, W, C] or [H, W] in [0, 1]) inside ``box``
    (a :class:`lnm_jax.data.pixels.dicom.Box`, clipped to the image; None: all of it), grey
    (the channels' mean), as box averages on a THUMB x THUMB grid, stretched to span 0-1 (one
    value everywhere: all zeros)."""
    if box is not None:
        img = box.of(img)
    grey = np.asarray(img, np.float32)
    if grey.ndim == 3:  # the channels' mean, summed slice by slice (numpy's mean over a last axis of
        grey = sum(grey[..., c] for c in range(grey.shape[-1])) / np.float32(grey.shape[-1])  # 3 is 10x slower)
    if grey.size == 0:
        return np.zeros(THUMB * THUMB, np.float32)
    thumb = np.asarray(Image.fromarray(grey, "F").resize((THUMB, THUMB), Image.BOX), np.float32).ravel()
    low, span = thumb.min(), thumb.max() - thumb.min()
    return (thumb - low) / span if span > 0 else thumb - low


def distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[N, M] float64: the RMS difference of thumbnails ``a`` [N, D] and ``b`` [M, D] over the
    cells where either shows something (brighter than :data:`DARK`; all D cells where neither
    does): the black surround of a screen capture, which two different patients' captures
    share, does not make their pictures near. The squared differences of the cells left out
    (both dark) are kept in the sum: at most DARK**2 each."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None] - 2 * a @ b.T
    sa, sb = (a > DARK).astype(np.float64), (b > DARK).astype(np.float64)
    shown = sa.sum(1)[:, None] + sb.sum(1)[None] - sa @ sb.T  # cells either shows
    return np.sqrt(np.maximum(d2, 0) / np.where(shown > 0, shown, a.shape[1]))


def mirrored(thumbnails: np.ndarray) -> np.ndarray:
    """[..., THUMB * THUMB]: each thumbnail mirrored left to right."""
    t = np.asarray(thumbnails)
    return t.reshape(*t.shape[:-1], THUMB, THUMB)[..., ::-1].reshape(t.shape)


def _shown(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[N, M]: how many cells thumbnails ``a`` [N, D] and ``b`` [M, D] show between them."""
    sa, sb = (a > DARK).astype(np.float64), (b > DARK).astype(np.float64)
    return sa.sum(1)[:, None] + sb.sum(1)[None] - sa @ sb.T


def nearness(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """([N, M] float64, [N, M] bool): the :func:`distances` of thumbnails ``a`` [N, D] and ``b``
    [M, D], the nearer of ``b`` as it is and :func:`mirrored`, and whether the mirrored one was
    nearer; inf where the two show fewer than :data:`MIN_SHOWN` cells between them."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    flipped = mirrored(b)
    plain, mirror = distances(a, b), distances(a, flipped)
    plain[_shown(a, b) < MIN_SHOWN], mirror[_shown(a, flipped) < MIN_SHOWN] = np.inf, np.inf
    return np.minimum(plain, mirror), mirror < plain


def earlier_similar(
    thumbnails: Sequence[np.ndarray], owners: Sequence[object], threshold: float = SIMILAR_RMS, block: int = 1024
) -> list[tuple[int, float, bool] | None]:
    """For each thumbnail, the first earlier one of another owner within ``threshold`` (its
    index, their :func:`nearness` and whether one is the other mirrored), or None. All pairs,
    ``block`` rows at a time (memory a few ``block`` x N float64)."""
    if not thumbnails:
        return []
    t = np.stack(thumbnails).astype(np.float64)
    owner = np.unique(np.asarray([str(o) for o in owners]), return_inverse=True)[1]
    out: list[tuple[int, float, bool] | None] = []
    for i0 in range(0, len(t), block):
        a = t[i0 : i0 + block]
        rms, flip = nearness(a, t)
        rows = np.arange(i0, i0 + len(a))[:, None]
        near = (rms <= threshold) & (np.arange(len(t))[None] < rows) & (owner[None] != owner[rows])
        for k, r in enumerate(near):
            j = int(np.argmax(r)) if r.any() else -1
            out.append((j, float(rms[k, j]), bool(flip[k, j])) if j >= 0 else None)
    return out


def near_groups(
    thumbnails: Sequence[np.ndarray], owners: Sequence[str], threshold: float = SIMILAR_RMS, block: int = 1024
) -> list[tuple[str, ...]]:
    """The owners whose thumbnails are near copies (:func:`nearness` within ``threshold``,
    mirrored or not) of another owner's, joined through every such pair (A near B and B near C:
    one group), as groups of two owners or more, each sorted, the groups sorted. Every pair is
    compared (:func:`earlier_similar` keeps only each one's first), ``block`` rows at a time."""
    if not thumbnails:
        return []
    t = np.stack(thumbnails).astype(np.float64)
    root = {o: o for o in owners}

    def find(o):
        while root[o] != o:
            root[o] = root[root[o]]
            o = root[o]
        return o

    for i0 in range(0, len(t), block):
        rms = nearness(t[i0 : i0 + block], t)[0]
        for k, j in zip(*np.nonzero(rms <= threshold)):
            a, b = find(owners[i0 + k]), find(owners[j])
            if a != b:
                root[max(a, b)] = min(a, b)
    groups: dict[str, list[str]] = {}
    for o in root:
        groups.setdefault(find(o), []).append(o)
    return sorted(tuple(sorted(g)) for g in groups.values() if len(g) > 1)


def nearest_within(
    thumbnails: Sequence[np.ndarray],
    reference: Sequence[np.ndarray],
    threshold: float = SIMILAR_RMS,
    block: int = 1024,
) -> list[int | None]:
    """For each thumbnail, the index of its nearest of ``reference`` when within ``threshold``
    (:func:`nearness`), else None; ``block`` thumbnails at a time (memory a few ``block`` x
    len(reference) float64, as :func:`earlier_similar`: a site's 10,000 patients against a
    run's 10,000 had taken several [N, M] matrices at once)."""
    if not len(thumbnails) or not len(reference):
        return [None] * len(thumbnails)
    t, ref = np.stack(thumbnails), np.stack(reference)
    out: list[int | None] = []
    for i0 in range(0, len(t), block):
        rms = nearness(t[i0 : i0 + block], ref)[0]
        nearest = rms.argmin(1)
        out += [int(j) if rms[i, j] <= threshold else None for i, j in enumerate(nearest)]
    return out
