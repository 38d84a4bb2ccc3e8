"""The synthetic cohort as a hospital would send it (``lnm-jax synth --format dicom``).

Each image of the PNG cohort is placed on a scanner screen: a banner with the patient's
(synthetic) name, ID and date burned into the pixels, a gray or contrast colour bar, a depth
scale, and, for CEUS, the dual display of contrast and low-MI B-mode reference side by side.
The header carries ``SequenceOfUltrasoundRegions`` (the tissue regions, with their spacing),
identifying attributes (name, ID, birth date, institution, dates, accession number, a private
element) and ``BurnedInAnnotation = YES``. CEUS clips are multi-frame cines with
``FrameTime``. With ``dicom_zoom`` > 0 each patient's depth setting differs: the panel keeps
its pixels while the tissue in it is scaled by a factor z in [1 - zoom, 1 + zoom] (a lesion
looks z times its size), and the spacing changes to match, as on a scanner.

The screen is drawn from its own random stream, so the images inside the regions are those of
the PNG cohort of the same parameters, pixel for pixel (before JPEG compression).
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from lnm_jax.data.pixels import dicom
from lnm_jax.data.pixels.decode import placed_weights, resample
from lnm_jax.data.pixels.dicom import Box, ScanRegion
from lnm_jax.names import BMODE, CEUS

FIELD_OF_VIEW_MM = 40.0  # the synthetic images span 40 mm (synthetic.py's nodule sizes)
SCREEN_STREAM = 0x5C4EE7  # the screen's random stream, apart from the images'


def _zoomed(image: np.ndarray, zoom: float) -> np.ndarray:
    """The panel a scanner shows at another depth setting: the same number of pixels, the
    tissue scaled by ``zoom`` about the centre (zero beyond the rendered field)."""
    if zoom == 1.0:
        return image
    side = image.shape[0]
    w = placed_weights(side, round(side * zoom), side)
    return (resample(image.astype(np.float32) / 255.0, w, w) * 255.0 + 0.5).astype(np.uint8)


def screen(panels: list[np.ndarray], banner: str, tint: bool) -> tuple[np.ndarray, list[Box]]:
    """A scanner screen (uint8 RGB) showing ``panels`` (uint8 [h, w, 3]) side by side under a
    banner, with a colour bar on the left and a depth scale on the right; the panels' boxes."""
    height = max(p.shape[0] for p in panels)
    top, left, gap, right, bottom = 28, 24, 12, 24, 10
    width = left + sum(p.shape[1] for p in panels) + gap * (len(panels) - 1) + right
    canvas = np.zeros((top + height + bottom, width, 3), np.uint8)
    boxes, x = [], left
    for p in panels:
        canvas[top : top + p.shape[0], x : x + p.shape[1]] = p
        boxes.append(Box(x, top, x + p.shape[1], top + p.shape[0]))
        x += p.shape[1] + gap
    ramp = np.linspace(1.0, 0.0, height)[:, None]
    bar = np.concatenate([ramp, ramp * (0.72 if tint else 1.0), ramp * (0.45 if tint else 1.0)], axis=-1)
    canvas[top : top + height, 6:16] = (bar[:, None, :] * 255).astype(np.uint8)
    tick_x = width - right + 6
    for y in range(top, top + height, max(4, height // 8)):
        canvas[y, tick_x : tick_x + 8] = 255
    im = Image.fromarray(canvas)
    ImageDraw.Draw(im).text((4, 6), banner, fill=(255, 255, 255))
    return np.asarray(im).copy(), boxes


def patient_attributes(pid: str, index: int, rng) -> dict:
    """Identifying header attributes a hospital file carries (all invented)."""
    year = int(rng.integers(1940, 2005))
    return {
        "PatientName": f"SYNTH^PATIENT^{index:04d}",
        "PatientID": f"MRN{int(rng.integers(10**6, 10**7))}",
        "PatientBirthDate": f"{year}{int(rng.integers(1, 13)):02d}{int(rng.integers(1, 29)):02d}",
        "PatientSex": "F",
        "StudyDate": "20240503",
        "StudyTime": "101500",
        "AccessionNumber": f"ACC{int(rng.integers(10**5, 10**6))}",
        "InstitutionName": "Synthetic General Hospital",
        "ReferringPhysicianName": "DOE^JANE",
        "StudyID": pid,
        "BurnedInAnnotation": "YES",
    }


def write_patient(
    folder,
    pid: str,
    index: int,
    *,
    seed: int,
    bmode: np.ndarray | None,
    ceus: np.ndarray | None,
    reference: np.ndarray | None,
    zoom_range: float,
    compression: str,
    clip_seconds: float = 60.0,
) -> dict[str, str]:
    """Writes the patient's B-mode (gray uint8 [H, W]) and CEUS (uint8 [H, W, 3] still or
    [T, H, W, 3] cine, shown beside ``reference``, a gray B-mode) as DICOM files in ``folder``;
    returns the manifest cells (relative to ``folder``'s parent)."""
    rng = np.random.default_rng([SCREEN_STREAM, seed, index])
    attrs = patient_attributes(pid, index, rng)
    zoom = float(rng.uniform(1.0 - zoom_range, 1.0 + zoom_range)) if zoom_range else 1.0
    banner = f"{attrs['PatientName']}  {attrs['PatientID']}  2024-05-03  L12-5  TIS0.1"
    cells = {}
    if bmode is not None:
        panel = _zoomed(np.repeat(bmode[..., None], 3, axis=-1), zoom)
        canvas, (box,) = screen([panel], banner, tint=False)
        spacing = FIELD_OF_VIEW_MM / round(bmode.shape[0] * zoom)
        ds = dicom.new_dataset(
            canvas,
            regions=[ScanRegion(box, dicom.SPATIAL_2D, dicom.DATA_TISSUE, (spacing, spacing))],
            compression=compression,
            attributes=attrs,
        )
        _private_element(ds)
        dicom.write_dataset(ds, folder / f"{pid}_{BMODE}.dcm")
        cells[BMODE] = f"{folder.name}/{pid}_{BMODE}.dcm"
    if ceus is not None:
        frames = ceus if ceus.ndim == 4 else ceus[None]
        ref = _zoomed(np.repeat(reference[..., None], 3, axis=-1), zoom)
        shown = [screen([_zoomed(f, zoom), ref], banner, tint=True) for f in frames]
        boxes = shown[0][1]
        spacing = FIELD_OF_VIEW_MM / round(frames.shape[1] * zoom)
        regions = [ScanRegion(b, dicom.SPATIAL_2D, dicom.DATA_TISSUE, (spacing, spacing)) for b in boxes]
        pixels = np.stack([s[0] for s in shown]) if ceus.ndim == 4 else shown[0][0]
        frame_ms = clip_seconds * 1000.0 / (len(frames) - 1) if len(frames) > 1 else None
        ds = dicom.new_dataset(
            pixels, regions=regions, frame_time_ms=frame_ms, compression=compression, attributes=attrs
        )
        _private_element(ds)
        dicom.write_dataset(ds, folder / f"{pid}_{CEUS}.dcm")
        cells[CEUS] = f"{folder.name}/{pid}_{CEUS}.dcm"
    return cells


def _private_element(ds) -> None:
    """A vendor's private block, as real files have (it names the patient again)."""
    block = ds.private_block(0x0009, "SYNTH VENDOR", create=True)
    block.add_new(0x01, "LO", str(ds.PatientName))
