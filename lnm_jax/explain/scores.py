"""Scoring a heatmap against the lesion: does the image evidence lie where the lesion is?

Per image, with ``cam`` the non-negative map and ``lesion`` the framed mask (each model
pixel's share inside the lesion outline, :func:`lnm_jax.data.pixels.masks.decode_mask`):

- ``mass_in_lesion`` = sum(cam x lesion) / sum(cam): the share of the map's mass on the lesion
  (the "energy-based pointing game" of Score-CAM, Wang et al., CVPR-W 2020);
- ``lesion_area`` = mean(lesion): the share a map spread evenly would put there;
- ``mass_ratio`` = mass_in_lesion / lesion_area: 1 is chance, higher is on the lesion;
- ``pointing_hit``: whether the map's maximum falls on a lesion pixel (lesion >= 0.5; the
  pointing game of Zhang et al., ECCV 2016, with no tolerance margin).

A constant map (nothing to point with) has no score (NaN, no hit). The same scores of a
random map (uniform noise at the CAM layer's resolution, upsampled as CAMs are) are the
baseline a CAM must beat: both are computed for every image, seeded.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import numpy as np

from lnm_jax.data.pixels.decode import resize

SCORES = ("mass_in_lesion", "mass_ratio", "pointing_hit")


def lesion_scores(cam: np.ndarray, lesion: np.ndarray) -> dict[str, float]:
    """The scores of one [H, W] map against one [H, W] lesion mask in [0, 1] (see the module
    docstring); ValueError if the shapes differ or the mask is empty."""
    cam, lesion = np.asarray(cam, np.float64), np.asarray(lesion, np.float64)
    if cam.shape != lesion.shape:
        raise ValueError(f"map {cam.shape} and lesion mask {lesion.shape} differ in shape")
    area = float(lesion.mean())
    if area <= 0:
        raise ValueError("the lesion mask is empty at the model's resolution")
    total = float(cam.sum())
    if total <= 0 or float(np.ptp(cam)) == 0.0:
        return {"lesion_area": area, "mass_in_lesion": math.nan, "mass_ratio": math.nan, "pointing_hit": math.nan}
    inside = float((cam * lesion).sum()) / total
    peak = np.unravel_index(int(np.argmax(cam)), cam.shape)
    return {
        "lesion_area": area,
        "mass_in_lesion": inside,
        "mass_ratio": inside / area,
        "pointing_hit": float(lesion[peak] >= 0.5),
    }


def random_map(rng: np.random.Generator, feature_size: tuple[int, int], size: int) -> np.ndarray:
    """[size, size] uniform noise drawn at ``feature_size`` (the CAM layer's map) and resized
    as a CAM is: the chance baseline with a CAM's smoothness."""
    h, w = feature_size
    noise = rng.random((h, w, 1)).astype(np.float32)
    return resize(noise, size)[..., 0]


def summarise(rows: Iterable[Mapping], prefix: str = "") -> dict:
    """Mean and median mass ratio, mean mass in lesion and the pointing-game rate over
    ``rows`` (per-image score dicts; ``prefix`` selects e.g. the ``random_`` columns), skipping
    constant maps (counted in ``constant_maps``)."""
    rows = list(rows)
    # a constant map's scores: NaN here, null in the JSON file it is read back from
    scored = [r for r in rows if r[f"{prefix}mass_ratio"] is not None and not math.isnan(r[f"{prefix}mass_ratio"])]
    ratios = np.array([r[f"{prefix}mass_ratio"] for r in scored])
    out = {"images": len(rows), "constant_maps": len(rows) - len(scored)}
    if scored:
        out.update(
            mass_ratio_mean=float(ratios.mean()),
            mass_ratio_median=float(np.median(ratios)),
            mass_in_lesion_mean=float(np.mean([r[f"{prefix}mass_in_lesion"] for r in scored])),
            pointing_game=float(np.mean([r[f"{prefix}pointing_hit"] for r in scored])),
            lesion_area_mean=float(np.mean([r["lesion_area"] for r in scored])),
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


def summary_lines(table: Mapping, method: str, layer: str) -> list[str]:
    """What ``gradcam`` prints: per branch and group, the CAM against the random map."""
    lines = []
    for b, groups in table.items():
        for g, s in groups.items():
            c, r = s["cam"], s["random"]
            if "mass_ratio_mean" not in c:
                lines.append(f"{b} {method} {layer}, {g} ({c['images']} images): every map constant, nothing scored")
                continue
            constant = c.get("constant_maps", 0)
            told = f"{c['images']} images" + (
                f", {c['images'] - constant} scored, {constant} maps constant" * bool(constant)
            )
            lines.append(
                f"{b} {method} {layer}, {g} ({told}): mass in lesion / area {c['mass_ratio_mean']:.2f} "
                f"(random {r.get('mass_ratio_mean', math.nan):.2f}), pointing game {c['pointing_game']:.2f} "
                f"(random {r.get('pointing_game', math.nan):.2f})"
            )
    return lines
