"""``lnm-jax deidentify``: a cohort's de-identified copy, safe to move off the hospital network.

For every patient: a random pseudonym (``P0001`` ..., in random order, so that it says
nothing of the manifest's order); each image cropped to its scan region (DICOM regions or the
manifest's crop column; for a CEUS dual display, the box around both sides, or the contrast
side alone where it was chosen by hand, ``data.ceus_region``, so that the copy needs no
setting to be read alike), which removes
what the scanner burns in around the image (banner with name/ID/date, scales); DICOM headers
through the basic confidentiality profile (:mod:`lnm_jax.data.privacy.phi`), pixels rewritten
uncompressed at their own bit depth; PNG/JPEG re-encoded as PNG with no metadata chunks.
The new manifest keeps ``us_lnm``, ``lnm``, spacing, frame and frame-rate columns (a video's
own frame rate goes with the frame folder it becomes), and only the metadata
columns named in ``keep_columns``. The mapping (pseudonym -> original patient, files, SOP
instance UIDs) goes to a separate file, which must not be inside the output folder.

Not covered (said in docs/dicom.md): text or calipers drawn inside the scan region, faces or
other identifying content of the image itself, and identifiers typed into file names.
"""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import numpy as np
from PIL import Image

from lnm_jax.data.cohorts.manifest import OPTION_COLUMNS, Cohort, read_manifest, write_manifest
from lnm_jax.data.pixels import dicom, sources
from lnm_jax.data.pixels.clips import MAX_CLIP_FRAMES, frame_files, frame_name, iter_frames
from lnm_jax.data.pixels.decode import open_upright
from lnm_jax.data.pixels.dicom import Box
from lnm_jax.data.pixels.masks import read_mask
from lnm_jax.data.privacy import phi
from lnm_jax.fileio import atomic_directory, guard_output, write_csv
from lnm_jax.names import IMAGE_INPUTS, LABEL, MASK_COLUMNS, PATIENT_ID, US_LNM, mask

MAPPING_COLUMNS = (
    "original_patient_id",
    PATIENT_ID,
    "input",
    "original_file",
    "file",
    "original_sop_instance_uid",
    "sop_instance_uid",
)
# framing columns that stay true of the cropped copy (a crop column is applied, so dropped)
KEPT_OPTIONS = tuple(c for cols in OPTION_COLUMNS.values() for f, c in cols.items() if f != "crop")


@dataclasses.dataclass
class Report:
    manifest: Path
    mapping: Path
    patients: int
    files: int
    dicom_files: int
    uncropped: list[str]
    dual_displays: int = 0  # CEUS dual displays: copied with both sides, or their chosen side alone
    ceus_region: str = "auto"  # the side they were read with ('auto': told apart, both sides copied)

    def lines(self) -> list[str]:
        out = [
            f"wrote {self.patients} patients ({self.files} image files, {self.dicom_files} DICOM) to {self.manifest}",
            f"mapping to the original patients: {self.mapping} (keep it apart from the data)",
        ]
        if self.uncropped:
            out.append(
                f"warning: {len(self.uncropped)} image(s) had no scan region or crop column and were copied whole "
                f"(burned-in text, if any, remains), e.g. {self.uncropped[0]}"
            )
        if self.dual_displays and self.ceus_region != "auto":  # a side chosen by hand: the copy holds it alone
            out.append(
                f"{self.dual_displays} CEUS dual display(s) copied as their {self.ceus_region} side, the contrast "
                "side chosen here, alone: the copy is read alike with no --ceus-region (its B-mode reference side "
                "is not copied)"
            )
        return out


def deidentify(
    manifest: Path | str,
    out_dir: Path | str,
    mapping: Path | str,
    *,
    keep_columns: tuple[str, ...] = (),
    framing: sources.Framing = sources.DEFAULT_FRAMING,
) -> Report:
    """Writes the de-identified copy of ``manifest`` to ``out_dir`` and the mapping to
    ``mapping`` (see the module); ``framing``: how the images are read (``data.ceus_region``,
    ``data.accept_secondary_capture``), as training on the copy will. Returns the
    :class:`Report`; ManifestError, ValueError or FileExistsError before anything is written,
    OSError when the mapping cannot be written (then nothing is left)."""
    cohort = read_manifest(manifest, require_labels=False, framing=framing)
    out_dir, mapping = Path(out_dir).resolve(), Path(mapping).resolve()
    if mapping.is_relative_to(out_dir):
        raise ValueError(f"--mapping {mapping} is inside the output folder {out_dir}: keep it apart from the data")
    if mapping.exists():
        raise FileExistsError(f"{mapping} exists; choose a new mapping file")
    guard_output(out_dir, inputs=cohort.files(), kind="folder", can_overwrite=False)  # non-empty: atomic_directory
    guard_output(mapping, inputs=cohort.files(), flag="--mapping", can_overwrite=False)
    unknown = [c for c in keep_columns if c not in cohort.metadata_columns]
    if unknown:
        raise ValueError(f"--keep-columns {', '.join(unknown)}: not metadata columns of {manifest}")
    pseudonyms = _pseudonyms(cohort)
    rows, links, uncropped, dicom_files, dual = [], [], [], 0, 0
    uids: dict[str, str] = {}

    def new_uid(old: str) -> str:
        from pydicom.uid import generate_uid  # noqa: PLC0415

        return uids.setdefault(old, generate_uid())

    mapping_written = False
    try:
        with atomic_directory(out_dir) as tmp:
            (tmp / "images").mkdir()
            for p in cohort.patients:
                pid = pseudonyms[p.patient_id]
                row = {PATIENT_ID: pid, US_LNM: p.us_lnm, LABEL: p.lnm, **{c: p.metadata[c] for c in keep_columns}}
                for col in KEPT_OPTIONS:
                    name, field = col.split("_", 1)
                    value = getattr(p.image_options(name), field, None)
                    row[col] = value
                for name in IMAGE_INPUTS:
                    path = getattr(p, name)
                    if path is None:
                        continue
                    src = sources.resolve(path, name, p.image_options(name), framing.ceus_region)
                    box = _crop_box(src, framing.ceus_region)
                    if src.framed_by == sources.WHOLE_FRAME:
                        uncropped.append(f"row {p.row} {name} {path}")
                    dual += src.reference is not None
                    if src.kind == "dicom":
                        rel, uid_pair = _copy_dicom(src, box, tmp, pid, name, new_uid)
                        dicom_files += 1
                    else:
                        rel, uid_pair = _copy_pixels(src, box, tmp, pid, name), ("", "")
                    rate = sources.option_columns(name).get("frame_rate")
                    if src.kind == "clip" and rate and src.frame_rate:  # a video's timing, not in its frames
                        row[rate] = src.frame_rate
                    row[name] = rel
                    if (lesion := p.mask(name)) is not None:  # cropped with its image: it stays aligned
                        row[mask(name)] = f"images/{pid}_{name}_mask.png"
                        crop_mask(lesion, box, tmp / row[mask(name)])
                    links.append(
                        dict(zip(MAPPING_COLUMNS, (p.patient_id, pid, name, str(path), rel, *uid_pair), strict=True))
                    )
                rows.append(row)
            rows.sort(key=lambda r: r[PATIENT_ID])  # the manifest's order would link the pseudonyms back
            masks = [c for c in MASK_COLUMNS if any(c in r for r in rows)]
            write_manifest(tmp / "manifest.csv", rows, extra_columns=(*masks, *keep_columns, *KEPT_OPTIONS))
            # the copy is usable (its warnings were the original's, said already, and would name a temporary path)
            read_manifest(tmp / "manifest.csv", require_labels=False, framing=framing, warn=False)
            # the mapping before the copy is committed: a mapping that cannot be written leaves no
            # copy (its pseudonyms would link to nothing), and a copy that cannot be committed no mapping
            try:
                mapping.parent.mkdir(parents=True, exist_ok=True)
                # exclusive: a second deidentify to the same mapping, started before this one
                # wrote it, had replaced it in silence, this call's only link to its patients lost
                write_csv(mapping, links, MAPPING_COLUMNS, mode=0o600, exclusive=True)
                mapping_written = True
            except OSError as e:
                why = "its folder is a file" if mapping.parent.is_file() else (e.strerror or str(e))
                raise OSError(f"cannot write the mapping {mapping}: {why}; nothing was written") from e
    except BaseException:  # the copy was not committed: no mapping to nothing
        if mapping_written:
            mapping.unlink(missing_ok=True)
        raise
    return Report(
        out_dir / "manifest.csv", mapping, len(rows), len(links), dicom_files, uncropped, dual, framing.ceus_region
    )


def _pseudonyms(cohort: Cohort) -> dict[str, str]:
    """Random order (the OS's entropy, not a seed: nothing to re-derive them from)."""
    order = list(range(len(cohort)))
    random.SystemRandom().shuffle(order)
    width = max(4, len(str(len(cohort))))
    return {cohort.patients[i].patient_id: f"P{k + 1:0{width}d}" for k, i in enumerate(order)}


def _crop_box(src: sources.Source, ceus_region: str) -> Box:
    """The scan region; for a dual display whose contrast side was told apart (``ceus_region``
    'auto'), the box around both of its sides, which the copy's reader tells apart alike; for
    one whose side was chosen by hand, that side alone: a copy with both would be read with the
    same setting or refused (the sides of such a display cannot be told apart)."""
    if src.reference is None or ceus_region != "auto":
        return src.box
    a, b = src.box, src.reference
    return Box(min(a.x0, b.x0), min(a.y0, b.y0), max(a.x1, b.x1), max(a.y1, b.y1))


def _to_integers(frames: np.ndarray, bits: int) -> np.ndarray:
    top = 2**bits - 1
    return np.round(frames * top).astype(np.uint8 if bits <= 8 else np.uint16)


def _copy_dicom(src: sources.Source, box: Box, root: Path, pid: str, name: str, new_uid) -> tuple[str, tuple[str, str]]:
    import pydicom  # noqa: PLC0415
    from pydicom.pixels import set_pixel_data  # noqa: PLC0415

    header = src.header
    ds = pydicom.dcmread(src.path, stop_before_pixels=True)
    original_uid = str(ds.get("SOPInstanceUID", ""))
    frames = np.stack([sources.crop(f, box) for f in dicom.iter_frames(header)])
    gray = header.photometric.startswith("MONOCHROME")
    # a palette is written as the RGB it maps to, at the depth of its entries
    bits = (8 if header.palette_bits <= 8 else 16) if header.photometric == "PALETTE COLOR" else header.bits_stored
    pixels = _to_integers(frames[..., 0] if gray else frames, bits)
    for key in ("PixelData", "FloatPixelData", "DoubleFloatPixelData") + _palette_keys(ds):
        if key in ds:
            del ds[key]
    cropped = box != Box(0, 0, src.width, src.height)
    phi.deidentify_dataset(ds, new_uid, cropped=cropped)
    if gray:  # the pixels are written as shown (rescaled, windowed, MONOCHROME2): no transform is left to apply
        for key in dicom.GREY_TRANSFORM_KEYS:
            if key in ds:
                del ds[key]
    set_pixel_data(
        ds,
        pixels if header.frames > 1 else pixels[0],
        "MONOCHROME2" if gray else "RGB",
        bits,
        generate_instance_uid=False,
    )
    for key in ("LossyImageCompression", "LossyImageCompressionMethod", "LossyImageCompressionRatio"):
        if key in ds and str(ds[key].value) in ("", "00"):
            del ds[key]
    regions, _ = sources.tissue_regions(header)
    kept = [r for r in regions if box.contains(r.box)]
    if kept:
        ds.SequenceOfUltrasoundRegions = [
            dicom.region_item(
                dataclasses.replace(
                    r, box=Box(r.box.x0 - box.x0, r.box.y0 - box.y0, r.box.x1 - box.x0, r.box.y1 - box.y0)
                )
            )
            for r in kept
        ]
    elif "SequenceOfUltrasoundRegions" in ds:
        del ds["SequenceOfUltrasoundRegions"]
    if cropped:
        ds.BurnedInAnnotation = "NO"  # what the scanner burns in lies outside the scan region
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    rel = f"images/{pid}_{name}.dcm"
    dicom.write_dataset(ds, root / rel)
    return rel, (original_uid, str(ds.SOPInstanceUID))


def _palette_keys(ds) -> tuple[str, ...]:
    return tuple(k for k in ds.dir() if "PaletteColorLookupTable" in k)


# PIL modes written as they are (8-bit gray and colour, 16-bit gray); others (palette, alpha,
# bilevel, CMYK) as the 8-bit RGB the decoder reads them as
KEPT_MODES = ("L", "RGB", "I;16", "I")


def crop_mask(path: Path, box: Box, out: Path) -> None:
    """A lesion mask cut to its image's copied box, written 0/255 (no metadata chunks)."""
    lesion = read_mask(path)[box.y0 : box.y1, box.x0 : box.x1]
    Image.fromarray(lesion.astype(np.uint8) * 255, "L").save(out, format="PNG")


def _write_png(im: Image.Image, box: Box, path: Path) -> None:
    """An upright image's box as PNG at its own bit depth, with no metadata chunks."""
    keep = im if im.mode in KEPT_MODES else im.convert("RGB")
    keep.crop((box.x0, box.y0, box.x1, box.y1)).save(path, format="PNG")


def _copy_pixels(src: sources.Source, box: Box, root: Path, pid: str, name: str) -> str:
    """PNG/JPEG/clip pixels, upright (EXIF orientation applied), cropped, as PNG at their own
    bit depth without metadata; a clip as a folder of frames named in order and zero-padded (a
    frame folder to its length, a video, decoded once, to the longest clip read:
    :func:`lnm_jax.data.pixels.clips.frame_name`), so that it reads back as the same frames in
    the same order."""
    if src.kind == "clip":
        rel = f"images/{pid}_{name}"
        (root / rel).mkdir()
        if src.path.is_dir():
            files = frame_files(src.path)
            for k, f in enumerate(files):
                _write_png(open_upright(f), box, root / rel / frame_name(k, len(files)))
        else:  # a video: 8-bit frames, decoded once; padded to the longest clip read (one pass)
            for k, frame in enumerate(iter_frames(src.path)):
                eight = np.round(sources.crop(frame, box) * 255.0).astype(np.uint8)
                Image.fromarray(eight).save(root / rel / frame_name(k, MAX_CLIP_FRAMES), format="PNG")
        return rel
    rel = f"images/{pid}_{name}.png"
    _write_png(open_upright(src.path), box, root / rel)
    return rel
