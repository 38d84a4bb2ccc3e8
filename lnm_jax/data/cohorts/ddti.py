"""DDTI (Pedraza et al., Proc. SPIE 9287, 2015: thyroid B-mode with nodule outlines) as a
cohort manifest with lesion masks: ``lnm-jax convert-ddti``.

The release holds ``images/{case}_{k}.jpg`` and ``xml/{case}.xml`` (``<tirads>`` and, per
image, ``<mark><image>k</image><svg>[{"points": [{"x", "y"}, ...]}, ...]</svg></mark>``: the
nodule outline(s) as polygons in image pixels). Per case: the first outlined image is the
``bmode`` input and its polygons, filled (their union), the ``bmode_mask`` written as a 0/255
PNG under ``masks/`` beside the manifest. The label is TI-RADS >= 4a ("suspicious"): a
radiologist's rating, not pathology, so a DDTI model is a demonstration on real thyroid
images (heatmaps, normalisation, augmentation), never a model of malignancy; cases without a
TI-RADS score are left out (counted). No CEUS and no flag. Images are referenced, not copied.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from lnm_jax.data.cohorts.manifest import pixel_digest, write_manifest
from lnm_jax.data.pixels.decode import image_size, read_image
from lnm_jax.fileio import OutputPathError, atomic_directory, error_line, problems_text
from lnm_jax.names import BMODE, LABEL, PATIENT_ID, US_LNM, mask
from lnm_jax.output_guard import guard_output

SUSPICIOUS = ("4", "4a", "4b", "4c", "5")  # ("4": ACR TI-RADS's TR4, where no subcategory is given)
NOT_SUSPICIOUS = ("1", "2", "3")
MASKS = "masks"
MASK_FILE = re.compile(r"ddti_\w+\.png")  # what the masks folder holds: one mask per case, named for its patient

# What a DDTI model predicts (the ``task`` config section, lnm_jax/task.py).
TASK = {
    "name": "a suspicious thyroid nodule (TI-RADS 4a or higher)",
    "label": "TI-RADS>=4a",
    "positive": "TI-RADS 4a-5",
    "negative": "TI-RADS 2-3",
    "label_source": "a radiologist's TI-RADS rating in DDTI (not pathology)",
    "flag": "none",
    "flag_meaning": "DDTI has no clinical flag",
    "inputs": {BMODE: "DDTI thyroid B-mode ultrasound (the case's first outlined image)"},
    "intended_use": "Demonstration only: the pipeline on real thyroid B-mode images (not a malignancy model).",
    "out_of_scope": "Any clinical use; predicting malignancy or lymph node metastasis.",
    "licence": "code Apache-2.0; DDTI is an open-access research database: cite Pedraza et al. 2015",
    "references": [
        "Pedraza L, Vargas C, Narvaez F, Duran O, Munoz E, Romero E. An open access thyroid ultrasound image "
        "database. Proc. SPIE 9287, 2015",
    ],
}


def polygons(svg: str) -> list[list[tuple[float, float]]]:
    """The outline polygons of one ``<svg>`` cell (JSON), those of fewer than 3 points left
    out; ValueError when it is not that list or none remains."""
    try:
        shapes = json.loads(svg)
    except json.JSONDecodeError as e:  # (DDTI's release holds outlines cut off mid-point)
        if e.pos >= len(svg.rstrip()) or e.msg.startswith("Unterminated string"):  # it runs to the text's end
            raise ValueError(f"its JSON text ({len(svg)} characters) stops mid-outline: cut off") from None
        raise ValueError(f"its JSON is broken at character {e.pos} of {len(svg)} ({e.msg})") from None
    out = [[(float(p["x"]), float(p["y"])) for p in s["points"]] for s in shapes]
    out = [p for p in out if len(p) >= 3]  # a stray point or segment encloses nothing
    if not out:
        raise ValueError("no outline has 3 points or more")
    return out


def rasterise(shapes: list[list[tuple[float, float]]], size: tuple[int, int]) -> np.ndarray:
    """bool [H, W]: the union of the filled polygons on a ``size`` = (width, height) image."""
    canvas = Image.new("L", size, 0)
    draw = ImageDraw.Draw(canvas)
    for points in shapes:
        draw.polygon(points, fill=255, outline=255)
    return np.asarray(canvas) > 0


def convert_ddti(src: Path | str, out_csv: Path | str, *, overwrite: bool = False) -> dict[str, int]:
    """Writes the manifest and ``masks/`` beside it (the masks folder new, written atomically);
    returns counts and ``skipped``: the cases left out because their outline cannot be read
    (the release has outlines cut off mid-point) or their image is an earlier case's picture,
    each named. ValueError naming the file when the folder or an XML file is not DDTI's."""
    src, out_csv = Path(src), Path(out_csv)
    if not (src / "xml").is_dir() or not (src / "images").is_dir():
        raise ValueError(f"{src} is not a DDTI folder (needs xml/ and images/)")
    masks_dir = out_csv.parent / MASKS
    # the masks folder first: an earlier run's (its files all ddti_<case>.png) is replaced whole
    # with --overwrite, as the manifest is; any other folder there never is
    ours = masks_dir.is_dir() and all(MASK_FILE.fullmatch(f.name) for f in masks_dir.iterdir())
    if ours and any(masks_dir.iterdir()) and not overwrite:
        raise OutputPathError(
            f"--out's masks folder {masks_dir} holds an earlier convert-ddti's masks; pass --overwrite to replace "
            "them and the manifest"
        )
    guard_output(
        masks_dir, inputs=[src], kind="folder", can_overwrite=False, flag="--out's masks folder", ours=lambda _: ours
    )
    guard_output(out_csv, inputs=[src], overwrite=overwrite)  # any manifest starts alike: no ``ours``
    made = [d for d in (out_csv.parent, *out_csv.parent.parents) if not d.exists()]  # removed again on a refusal
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    try:
        return _convert(src, out_csv, masks_dir, ours)
    except BaseException:
        for d in made:  # (helper-58: an empty --out folder had been left) innermost first; only where empty
            with contextlib.suppress(OSError):
                d.rmdir()
        raise


def _convert(src: Path, out_csv: Path, masks_dir: Path, ours: bool) -> dict:
    """:func:`convert_ddti`'s reading and writing, its output folder made."""
    counts = {"cases": 0, "no_tirads": 0, "no_outline": 0, "repeated_image": 0, "other_images_of_a_case": 0}
    rows, skipped, pictures = [], [], {}
    refused = []  # every case that refuses the folder, said at once (as validate names a manifest's problems)
    with atomic_directory(masks_dir, replace=ours) as tmp:
        for xml in sorted((src / "xml").glob("*.xml"), key=lambda p: int(re.sub(r"\D", "", p.stem) or 0)):
            counts["cases"] += 1
            try:
                root = ET.parse(xml).getroot()
            except ET.ParseError as e:
                refused.append(f"{xml}: not readable XML ({e})")
                continue
            tirads = (root.findtext("tirads") or "").strip().lower()
            if not tirads:
                counts["no_tirads"] += 1
                continue
            if tirads not in SUSPICIOUS + NOT_SUSPICIOUS:  # (helper-58: counted as unscored, unsaid)
                refused.append(
                    f"{xml}: TI-RADS {tirads!r} is not a TI-RADS category ({', '.join(NOT_SUSPICIOUS + SUSPICIOUS)})"
                )
                continue
            outlined = (m for m in root.iter("mark") if (m.findtext("svg") or "").strip())
            marked = next((((m.findtext("image") or "").strip(), m) for m in outlined), None)
            if marked is None:
                counts["no_outline"] += 1
                continue
            k, m = marked
            image = src / "images" / f"{xml.stem}_{k}.jpg"
            if not image.is_file():
                refused.append(f"{xml}: image {image} does not exist")
                continue
            try:
                lesion = rasterise(polygons(m.findtext("svg")), image_size(image))
            except (ValueError, KeyError, TypeError) as e:  # e.g. an outline cut off in the release
                why = str(e) if isinstance(e, ValueError) else error_line(e)
                skipped.append(f"{xml.name} (image {k}'s outline is not a polygon list: {why})")
                continue
            if not lesion.any():  # every point outside the picture (helper-55: an empty mask had been written)
                w, h = image_size(image)
                skipped.append(f"{xml.name} (image {k}'s outline encloses no pixel of its {w}x{h} image)")
                continue
            # the release holds one picture under several cases (150_1, 323_1, 326_1, 349_1 ...):
            # a manifest naming it twice is refused (shared_image, by the decoded pixels), so the
            # later case is left out
            if (earlier := pictures.setdefault(pixel_digest([read_image(image)]), xml.name)) != xml.name:
                skipped.append(f"{xml.name} (image {image.name} is the same picture as {earlier}'s)")
                counts["repeated_image"] += 1
                continue
            pid = f"ddti_{xml.stem}"
            # a case is one patient, one image: its first outlined one (its others are not read)
            counts["other_images_of_a_case"] += sum(1 for f in (src / "images").glob(f"{xml.stem}_*.jpg")) - 1
            Image.fromarray(lesion.astype(np.uint8) * 255, "L").save(tmp / f"{pid}.png")
            rows.append(
                {
                    PATIENT_ID: pid,
                    BMODE: os.path.relpath(image.resolve(), out_csv.parent.resolve()),
                    US_LNM: "",
                    LABEL: int(tirads in SUSPICIOUS),
                    mask(BMODE): f"{MASKS}/{pid}.png",
                    "tirads": tirads,
                }
            )
        if refused:  # raised inside the block: the masks written so far go with their folder
            raise ValueError(refused[0] if len(refused) == 1 else problems_text(refused, "refused case", f" in {src}"))
    write_manifest(out_csv, rows, extra_columns=(mask(BMODE), "tirads"))
    return {
        **counts,
        "bad_outline": len(skipped) - counts["repeated_image"],
        "patients": len(rows),
        "suspicious": sum(r[LABEL] for r in rows),
        "skipped": skipped,
    }
