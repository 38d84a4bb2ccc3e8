"""Scoring a heatmap against the lesion: does the image evidence lie where the lesion is?

Per image, with ``cam`` the non-negative map and ``lesion`` the framed mask (each model
pixel's share inside the lesion outline, :func:`lnm_jax.data.pixels.masks.decode_mask`):

- ``mass_in_lesion`` = sum(cam x lesion) / sum(cam): the share of the map's mass on the lesion
  (the "energy-based pointing game" of Score-CAM, Wang et al., CVPR-W 2020);
- ``lesion_area`` = mean(lesion): the share a map spread evenly would put there; where the
  picture does not fill the square (``data.field_of_view_mm`` zero-pads it), the lesion's share
  of the picture, sum(lesion) / sum(picture): chance is a map spread evenly over the tissue;
- ``mass_ratio`` = mass_in_lesion / lesion_area: 1 is chance, higher is on the lesion;
- ``pointing_hit``: the pointing game of Zhang et al. (ECCV 2016; IJCV 2018): a hit when the
  map's maximum lies within a tolerance of a lesion pixel (lesion >= 0.5). Their tolerance is
  15 px at images of about 224 px: here ``tolerance`` is a fraction of the image side (the
  geometric mean of height and width), by default 15/224 (8.6 px at 128 px, 15 px at 224 px);
  ``tolerance=0`` is the strict game (the maximum on a lesion pixel). The distance is between
  pixel centres; the pixels used are in ``pointing_tolerance_px`` of each image's scores.
  Ties: every pixel within 1e-6 of the maximum (of a map in [0, 1]; relative for larger maps,
  as ``gradcam``'s test for a constant map) is a maximum: bilinear upsampling turns a coarse
  map's peak cell into a plateau of pixels equal up to rounding. The hit is the share of those
  pixels that hit: the expected hit of a uniform choice among them, without the raster-order
  bias of ``argmax`` (which picks the plateau's top-left pixel, at a map's border the image
  corner).

A constant map (an all-zero one included) carries no location: it is scored as a uniform map,
its mass in the lesion the lesion's area (ratio 1) and its pointing hit the share of the image
within the tolerance of the lesion (every pixel tied), and flagged in ``constant_map``. So the
CAM and the random baseline (uniform noise at the CAM layer's resolution, upsampled as CAMs
are, seeded) are scored on the same images.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import numpy as np
from scipy import ndimage

from lnm_jax.data.pixels.decode import resize

SCORES = ("mass_in_lesion", "mass_ratio", "pointing_hit")
POINTING_TOLERANCE = 15 / 224  # Zhang et al.'s 15 px at ~224 px images, as a fraction of the side
# pixels this close to the maximum are maxima (a plateau up to float rounding; relative above 1); a map
# whose range is at most this is constant (gradcam's warning of blank maps too)
TIES = 1e-6


def tolerance_px(shape: tuple[int, ...], tolerance: float = POINTING_TOLERANCE) -> float:
    """The pointing game's tolerance in pixels for a map of ``shape``: ``tolerance`` times the
    side (the geometric mean of height and width)."""
    if tolerance < 0:
        raise ValueError(f"the pointing tolerance must be >= 0, not {tolerance}")
    return float(tolerance * math.sqrt(shape[0] * shape[1]))


def lesion_scores(
    cam: np.ndarray, lesion: np.ndarray, tolerance: float = POINTING_TOLERANCE, picture: np.ndarray | None = None
) -> dict[str, float]:
    """The scores of one [H, W] map against one [H, W] lesion mask in [0, 1] (see the module
    docstring; ``tolerance``: the pointing game's, a fraction of the image side; ``picture``:
    [H, W] in [0, 1], each pixel's share of the picture where the rest is padding, None where
    the picture fills the square); ValueError if the shapes differ or the mask is empty."""
    cam, lesion = np.asarray(cam, np.float64), np.asarray(lesion, np.float64)
    if cam.shape != lesion.shape or (picture is not None and np.shape(picture) != cam.shape):
        raise ValueError(f"map {cam.shape} and lesion mask {lesion.shape} differ in shape")
    # the lesion's share of the picture: a map spread evenly over the picture (it knows where
    # the tissue is, not where the lesion is) scores 1; over a zero-padded square it had
    # scored 1 / the picture's share (helper-80: 1.76 and 1.90 "above chance")
    area = float(lesion.mean()) if picture is None else float(lesion.sum() / np.sum(picture, dtype=np.float64))
    if area <= 0:
        raise ValueError("the lesion mask is empty at the model's resolution")
    px = tolerance_px(cam.shape, tolerance)
    peak = float(cam.max())
    ties = cam >= peak - TIES * max(abs(peak), 1.0)
    constant = bool(ties.all())
    total = float(cam.sum())
    # a constant (or all-zero) map: no location, scored as uniform (mass in the lesion = its area)
    inside = area if constant or total <= 0 else float((cam * lesion).sum()) / total
    on = lesion >= 0.5
    near = on if px <= 0 else ndimage.distance_transform_edt(~on) <= px  # within the tolerance of the lesion
    return {
        "lesion_area": area,
        "mass_in_lesion": inside,
        "mass_ratio": inside / area,
        "pointing_hit": float(near[ties].mean()),  # the share of the tied maxima that hit
        "pointing_tolerance_px": px,
        "constant_map": float(constant),
    }


def random_map(
    rng: np.random.Generator, feature_size: tuple[int, int], size: int, picture: np.ndarray | None = None
) -> np.ndarray:
    """[size, size] uniform noise drawn at ``feature_size`` (the CAM layer's map) and resized
    as a CAM is: the chance baseline with a CAM's smoothness; with ``picture`` (as
    :func:`lesion_scores` takes it) weighted by it, chance over the picture, not its padding."""
    h, w = feature_size
    noise = rng.random((h, w, 1)).astype(np.float32)
    out = resize(noise, size)[..., 0]
    return out if picture is None else out * np.asarray(picture, np.float32)


def _finite(x) -> bool:
    return x is not None and not math.isnan(x)


def summarise(rows: Iterable[Mapping], prefix: str = "") -> dict:
    """Mean and median mass ratio, mean mass in lesion and the pointing-game rate over
    ``rows`` (per-image score dicts; ``prefix`` selects e.g. the ``random_`` columns), with
    ``constant_maps`` (scored as uniform maps) and the pointing tolerance in pixels
    (``pointing_tolerance_px``: one value, or the sorted values where the images differ).

    Every arm is summarised over the same images: a row of a file written before constant maps
    were scored (its CAM scores NaN, or null in JSON) is left out of both the CAM's and the
    random map's summaries (``unscored``), and counted as a constant map."""
    rows = list(rows)
    scored = [r for r in rows if _finite(r["mass_ratio"]) and _finite(r.get(f"{prefix}mass_ratio", 0.0))]
    legacy = sum(not _finite(r.get(f"{prefix}mass_ratio")) for r in rows)
    flagged = sum(bool(r.get(f"{prefix}constant_map", 0.0)) for r in scored)
    out = {"images": len(rows), "constant_maps": flagged + legacy, "unscored": len(rows) - len(scored)}
    if scored:
        ratios = np.array([r[f"{prefix}mass_ratio"] for r in scored])
        px = sorted({r[f"{prefix}pointing_tolerance_px"] for r in scored if f"{prefix}pointing_tolerance_px" in r})
        out.update(
            mass_ratio_mean=float(ratios.mean()),
            mass_ratio_median=float(np.median(ratios)),
            mass_in_lesion_mean=float(np.mean([r[f"{prefix}mass_in_lesion"] for r in scored])),
            pointing_game=float(np.mean([r[f"{prefix}pointing_hit"] for r in scored])),
            lesion_area_mean=float(np.mean([r["lesion_area"] for r in scored])),
            # absent from rows written before the tolerance: their pointing game had none (0 px)
            pointing_tolerance_px=(px[0] if len(px) == 1 else px) if px else 0.0,
        )
    return out


def summary_table(rows: list[Mapping], branches: Iterable[str]) -> dict:
    """Per branch: the CAM's and the random baseline's summaries over every scored image and
    over the positive patients' (label 1: where the lesion is the finding)."""
    out = {}
    for b in branches:
        mine = [r for r in rows if r["branch"] == b]
        groups = {"all": mine, "positive": [r for r in mine if r["label"] == 1]}
        out[b] = {g: {"cam": summarise(rs), "random": summarise(rs, "random_")} for g, rs in groups.items() if rs}
    return out


def _px(value) -> str:
    """A summary's pointing tolerance for a line: ``8.6 px`` (or a range where images differ)."""
    if isinstance(value, list):
        return f"{min(value):.1f}-{max(value):.1f} px"
    return f"{value:.1f} px"


def summary_lines(table: Mapping, method: str, layer: str) -> list[str]:
    """What ``gradcam`` prints: per branch and group, the CAM against the random map, with the
    pointing game's tolerance and how many maps were constant (scored as uniform)."""
    lines = []
    for b, groups in table.items():
        for g, s in groups.items():
            c, r = s["cam"], s["random"]
            if "mass_ratio_mean" not in c:
                lines.append(f"{b} {method} {layer}, {g} ({c['images']} images): no map scored")
                continue
            constant, unscored = c.get("constant_maps", 0), c.get("unscored", 0)
            told = f"{c['images']} images"
            if unscored:
                told += f", {c['images'] - unscored} scored, {unscored} constant maps of an older file left out"
            elif constant:
                told += f", {constant} map{'' if constant == 1 else 's'} constant, scored as uniform"
            # (helper-92: a branch at chance had been listed without a word)
            chance = c["mass_ratio_mean"] <= r.get("mass_ratio_mean", -math.inf) and c["pointing_game"] <= r.get(
                "pointing_game", -math.inf
            )
            lines.append(
                f"{b} {method} {layer}, {g} ({told}): mass in lesion / area {c['mass_ratio_mean']:.2f} "
                f"(random {r.get('mass_ratio_mean', math.nan):.2f}), pointing game within "
                f"{_px(c.get('pointing_tolerance_px', 0.0))} {c['pointing_game']:.2f} "
                f"(random {r.get('pointing_game', math.nan):.2f})"
                + (
                    "; no better than a random map on either score: these maps do not point at the lesion"
                    if chance
                    else ""
                )
            )
    return lines
