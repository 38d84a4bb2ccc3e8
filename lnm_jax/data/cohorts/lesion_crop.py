"""Lesion-aware framing: a copy of a manifest whose crop columns frame each image around its
lesion (``lnm-jax crop-to-lesion``).

The paper resizes the whole scan region to the model's square, where a lesion may fill a few
percent of the pixels and text, calipers and tissue far from it fill the rest. Cropping to the
lesion with a margin (region-of-interest classification, the usual input of breast ultrasound
CAD; BUS-BRA's own baselines classify ROIs) makes the lesion the model's main content. The crop
is a ``<input>_crop`` column, so training and every later reader frame the image alike (and a
mask is framed with it); new patients then need their own box, drawn by a reader or from a
mask. The margin is a fraction of the lesion's box on each side; the box is widened to a square
where the image allows (the model's square then keeps the lesion's aspect), and always stays
inside the image and inside any crop the row already had.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

from lnm_jax.data.cohorts.manifest import read_manifest
from lnm_jax.data.cohorts.tables import data_rows, table_reader, table_text
from lnm_jax.data.pixels.masks import read_mask
from lnm_jax.data.pixels.sources import DEFAULT_FRAMING, Box, Framing, option_columns, resolve
from lnm_jax.fileio import write_csv
from lnm_jax.names import IMAGE_INPUTS, MASK_COLUMNS, mask
from lnm_jax.output_guard import guard_output

# a crop's shorter side, in the image's pixels, under which it is warned of: fewer than one cell of
# ResNet-50's last feature map at the image's own resolution (its stride is 32); the model's
# square (data.image_size, 224 in the paper) enlarges such a crop many times, blurring it (stop
# 88's trial: an 8x8 picture's mask gave a 3x3 crop, written unsaid)
SMALL_CROP = 32


def lesion_box(lesion: np.ndarray, within: Box, margin: float) -> Box:
    """The lesion's bounding box (pixels of ``lesion`` inside ``within``) grown by ``margin``
    x its size on each side, widened toward a square, clipped to ``within``."""
    sub = lesion[within.y0 : within.y1, within.x0 : within.x1]
    ys, xs = np.nonzero(sub)
    if not len(ys):
        raise ValueError("the mask marks no pixel inside the image's framed region")
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    h, w = y1 - y0, x1 - x0
    side_h, side_w = h * (1 + 2 * margin), w * (1 + 2 * margin)
    side_h = side_w = max(side_h, side_w)  # a square where the image allows
    cy, cx = (y0 + y1) / 2, (x0 + x1) / 2
    H, W = sub.shape

    def span(centre, side, size):
        side = min(side, size)
        lo = int(round(min(max(centre - side / 2, 0), size - side)))
        return lo, int(min(size, lo + round(side)))

    (ny0, ny1), (nx0, nx1) = span(cy, side_h, H), span(cx, side_w, W)
    return Box(within.x0 + nx0, within.y0 + ny0, within.x0 + nx1, within.y0 + ny1)


def crop_to_lesion(
    manifest: Path | str,
    out_csv: Path | str,
    *,
    margin: float = 0.25,
    overwrite: bool = False,
    framing: Framing = DEFAULT_FRAMING,
) -> dict:
    """Writes the copy of ``manifest`` at ``out_csv`` (paths made relative to it; every other
    cell kept) with ``<input>_crop`` set around each masked image's lesion; returns counts.
    ``framing``: how the images are read (a CEUS dual display's side, secondary captures), as
    training will read them. ValueError naming the row when a mask marks nothing inside its
    image's region; an image without a mask keeps its framing. Crops under
    :data:`SMALL_CROP` pixels on a side are warned of on stderr."""
    if not 0 <= margin <= 10:
        raise ValueError(f"--margin {margin} is not a fraction of the lesion's size between 0 and 10")
    manifest, out_csv = Path(manifest), Path(out_csv)
    cohort = read_manifest(manifest, require_labels=False, framing=framing)
    if not any(p.mask(m) is not None for p in cohort.patients for m in IMAGE_INPUTS):
        raise ValueError(f"{manifest}: no row has a lesion mask ({' or '.join(MASK_COLUMNS)}): nothing to crop to")
    guard_output(out_csv, inputs=cohort.files(), overwrite=overwrite)  # any manifest starts alike: no ``ours``
    text = table_text(manifest)  # as read_manifest read it
    reader = table_reader(text)
    columns = list(reader.fieldnames or [])
    crops = [option_columns(m)["crop"] for m in IMAGE_INPUTS]
    columns += [c for c in crops if c not in columns]
    path_columns = (*IMAGE_INPUTS, *MASK_COLUMNS)
    rows, cropped, small = [], 0, []
    records = dict(data_rows(reader, text))  # by row, as read_manifest read them (not by position: blank rows)
    for p in cohort.patients:
        rec = {k: (v or "").strip() for k, v in records[p.row].items() if k is not None}
        for m in IMAGE_INPUTS:
            if p.mask(m) is None:
                continue
            src = resolve(getattr(p, m), m, p.image_options(m), framing.ceus_region)
            try:
                box = lesion_box(read_mask(p.mask(m)), src.box, margin)
            except ValueError as e:
                raise ValueError(f"{manifest}, row {p.row} ({p.patient_id}), {mask(m)}: {e}") from None
            rec[option_columns(m)["crop"]] = f"{box.x0},{box.y0},{box.x1},{box.y1}"
            cropped += 1
            if min(box.width, box.height) < SMALL_CROP:
                small.append((box.width * box.height, f"{box.width}x{box.height}, row {p.row} ({p.patient_id}), {m}"))
        for c in path_columns:  # the copy may live elsewhere: its paths relative to it
            if rec.get(c):
                absolute = rec[c] if os.path.isabs(rec[c]) else os.path.join(manifest.parent.resolve(), rec[c])
                rec[c] = os.path.relpath(absolute, out_csv.parent.resolve())
        rows.append(rec)
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    write_csv(out_csv, rows, columns)
    if small:
        print(
            f"warning: {out_csv}: {len(small)} lesion crop(s) under {SMALL_CROP} pixels on a side (the smallest "
            f"{min(small)[1]}): the model's square (data.image_size) enlarges such a crop many times over, blurring "
            "it; a mask of a speck, or a picture too small? check those masks, or widen --margin",
            file=sys.stderr,
        )
    return {"patients": len(rows), "images_cropped_to_lesion": cropped, "margin": margin}
