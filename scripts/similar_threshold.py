"""The measurement behind ``lnm_jax.data.cohorts.similar.SIMILAR_RMS``: how far apart different
patients' pictures are, and how far one picture saved again moves, in thumbnail RMS.

    python scripts/similar_threshold.py [--data ../shared/data] [--copies 50]

Converts BUS-BRA (``busbra-dev``) and DDTI (``ddti``) from ``--data`` into a temporary folder
(``convert-busbra``, ``convert-ddti``), takes every image's thumbnail as validation does (its
crop applied), and prints per cohort: the nearest other patient's picture (minimum and
percentiles, mirror images compared as validation compares them) and the fewest cells any pair
shows, one patient's nearest other view, over ``--copies`` images the distance of each kind of
copy (JPEG re-encodes, 8-bit samples stored as 16-bit, shifted up by 8 or by 4 bits, resized
to 98%, mirrored, the crop one and three pixels off, a gamma of 1.1, brightness +8/255, 10 pixels of black padding, a
burned-in annotation box), and how many pairs of 24 different pictures, each on a large black
screen with one grey bar, come within the threshold. TensorFlow-free; about 40 s on 2 cores.
"""

from __future__ import annotations

import argparse
import io
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from lnm_jax.data.cohorts.busbra import convert_busbra
from lnm_jax.data.cohorts.ddti import convert_ddti
from lnm_jax.data.cohorts.manifest import read_manifest
from lnm_jax.data.cohorts.similar import DARK, MIN_SHOWN, SIMILAR_RMS, nearness, thumbnail
from lnm_jax.data.pixels import sources
from lnm_jax.data.pixels.decode import read_image


def rms(a: np.ndarray, b: np.ndarray) -> float:
    return float(nearness(a[None], b[None])[0][0, 0])


def copies(img: np.ndarray) -> dict[str, np.ndarray]:
    """One picture (float [H, W, 3] in [0, 1]) saved again in each way, decoded as the loader would."""
    u8 = np.round(img * 255).astype(np.uint8)
    out = {}
    for q in (95, 75, 50):
        buf = io.BytesIO()
        Image.fromarray(u8).save(buf, "JPEG", quality=q)
        out[f"JPEG quality {q}"] = np.asarray(Image.open(buf).convert("RGB"), np.float32) / 255
    grey16 = u8.mean(-1).round().astype(np.uint16) << 8
    out["8-bit as 16-bit (v << 8)"] = np.repeat((grey16 / 65535.0)[..., None], 3, -1)
    out["16-bit unscaled (v << 4)"] = np.repeat(((grey16 >> 4) / 65535.0)[..., None], 3, -1)  # read at 1/16
    h, w = img.shape[:2]
    out["resized to 98%"] = np.asarray(Image.fromarray(u8).resize((int(w * 0.98), int(h * 0.98))), np.float32) / 255
    out["mirrored"] = img[:, ::-1]
    out["gamma 1.1"] = img**1.1
    out["brightness +8/255"] = np.clip(img + 8 / 255, 0, 1)
    out["10 px black padding"] = np.pad(img, ((10, 10), (10, 10), (0, 0)))
    boxed = img.copy()  # a burned-in annotation box: a 2-pixel white outline a quarter of the picture wide
    y0, x0, y1, x1 = h // 3, w // 3, h // 3 + h // 5, w // 3 + w // 4
    boxed[y0 : y0 + 2, x0:x1] = boxed[y1 - 2 : y1, x0:x1] = boxed[y0:y1, x0 : x0 + 2] = boxed[y0:y1, x1 - 2 : x1] = 1
    out["annotation box"] = boxed
    return out


def on_screens(images: list[np.ndarray], rng: np.random.Generator, size: tuple[int, int]) -> str:
    """Pairs of 24 different pictures, each centred on a black ``size`` (width, height) screen
    with one grey bar, within the threshold; the cells such pairs show."""
    w, h = size
    thumbs = []
    for k in rng.choice(len(images), 24, replace=False):
        img = images[k][:h, :w]
        screen = np.zeros((h, w, 3), np.float32)
        y, x = (h - img.shape[0]) // 2, (w - img.shape[1]) // 2
        screen[y : y + img.shape[0], x : x + img.shape[1]] = img
        screen[50:80, 100 : w - 100] = 0.5
        thumbs.append(thumbnail(screen))
    t = np.stack(thumbs).astype(np.float64)
    upper = np.triu_indices(len(t), 1)
    shown = _shown_cells(t)[upper]
    near = (nearness(t, t)[0][upper] <= SIMILAR_RMS).sum()
    return f"{near} of {len(shown)} pairs within the threshold ({shown.min():.0f}-{shown.max():.0f} cells shown)"


def _shown_cells(t: np.ndarray) -> np.ndarray:
    s = (t > DARK).astype(np.float64)
    return s.sum(1)[:, None] + s.sum(1)[None] - s @ s.T


def measure(manifest: Path, n_copies: int, rng: np.random.Generator) -> None:
    cohort = read_manifest(manifest, warn=False)
    thumbs, owners, images = [], [], []
    for p in cohort.patients:
        for m in ("bmode", "ceus"):
            if (f := getattr(p, m)) is None:
                continue
            box = sources.resolve(f, m, p.image_options(m)).box
            img = read_image(f)[box.y0 : box.y1, box.x0 : box.x1]
            thumbs.append(thumbnail(img)), owners.append(p.patient_id), images.append(img)
    t = np.stack(thumbs).astype(np.float64)
    d = nearness(t, t)[0]
    own = np.asarray(owners)[:, None] == np.asarray(owners)[None]
    other = np.where(own, np.inf, d).min(1)
    same = np.where(own & ~np.eye(len(t), dtype=bool), d, np.inf).min(1)
    print(f"{manifest.parent.name}: {len(t)} images of {len(cohort)} patients")
    p = np.percentile(other, [1, 5, 50])
    print(f"  nearest other patient's picture: min {other.min():.4f}, 1% {p[0]:.4f}, 5% {p[1]:.4f}, median {p[2]:.4f}")
    print(f"  fewest cells any two pictures show: {_shown_cells(t).min():.0f} (compared from {MIN_SHOWN})")
    if np.isfinite(same).any():
        print(f"  one patient's nearest other view: min {same[np.isfinite(same)].min():.4f}")
    kinds: dict[str, list[float]] = {}
    for k in rng.choice(len(images), min(n_copies, len(images)), replace=False):
        img = images[k]
        for kind, copy in copies(img).items():
            kinds.setdefault(kind, []).append(rms(thumbnail(copy), thumbs[k]))
        for px in (1, 3):
            kinds.setdefault(f"crop {px} pixel(s) off", []).append(
                rms(thumbnail(img[px:, px:]), thumbnail(img[:-px, :-px]))
            )
    for kind, v in kinds.items():
        print(f"  {kind:26s} max {max(v):.4f}, median {np.median(v):.4f}  {'found' if max(v) <= SIMILAR_RMS else '-'}")
    for size in ((1600, 1200), (2400, 1800)):
        print(f"  on {size[0]}x{size[1]} black screens: {on_screens(images, rng, size)}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    p.add_argument("--copies", type=int, default=50)
    a = p.parse_args()
    rng = np.random.default_rng(0)
    print(f"threshold (SIMILAR_RMS): {SIMILAR_RMS}")
    with tempfile.TemporaryDirectory() as tmp:
        bb, dd = Path(tmp) / "busbra" / "m.csv", Path(tmp) / "ddti" / "m.csv"
        convert_busbra(a.data / "busbra-dev", bb)
        convert_ddti(a.data / "ddti", dd)
        for manifest in (bb, dd):
            measure(manifest, a.copies, rng)


if __name__ == "__main__":
    main()
