"""``lnm-jax deidentify``: a cohort's de-identified copy, safe to move off the hospital network.

For every patient: a random pseudonym (``P0001`` ..., in random order, so that it says
nothing of the manifest's order; another prefix where an original ID has that form), its
files written in pseudonym order with one time; each image cropped to its scan region (DICOM
regions or the manifest's crop column; for a CEUS dual display, the box around both sides,
the pixels between them blanked, or the contrast side alone where it was chosen by hand,
``data.ceus_region``, so that the copy needs no setting to be read alike), which removes
what the scanner burns in around the image (banner with name/ID/date, scales); DICOM headers
through the basic confidentiality profile (:mod:`lnm_jax.data.privacy.phi`), pixels rewritten
uncompressed at their own bit depth as shown, with the regions that frame them as read
(``PatientIdentityRemoved=NO`` where pixels around the scan are kept); PNG/JPEG re-encoded as
PNG with no metadata chunks.
The new manifest keeps ``us_lnm``, ``lnm``, spacing, frame and frame-rate columns (a video's
own frame rate goes with the frame folder it becomes), and only the metadata
columns named in ``keep_columns``. The mapping (pseudonym -> original patient, files, SOP
instance UIDs) goes to a separate file, which must not be inside the output folder.

Not covered (said in docs/dicom.md): text or calipers drawn inside the scan region, faces or
other identifying content of the image itself, and identifiers typed into file names.
"""

from __future__ import annotations

import dataclasses
import os
import random
import re
import secrets
import time
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
from lnm_jax.fileio import atomic_directory, write_csv
from lnm_jax.names import IMAGE_INPUTS, LABEL, MASK_COLUMNS, PATIENT_ID, US_LNM, mask, mask_file, picture_file
from lnm_jax.output_guard import guard_output
from lnm_jax.run_files import MANIFEST

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
    beyond_regions: list[str] = dataclasses.field(default_factory=list)  # DICOM crops reaching past the scan
    outside: list[str] = dataclasses.field(default_factory=list)  # files from outside the manifest's folder

    def lines(self) -> list[str]:
        out = [
            f"wrote {self.patients} patients ({self.files} image files, {self.dicom_files} DICOM) to {self.manifest}",
            f"mapping to the original patients: {self.mapping} (keep it apart from the data)",
        ]
        if self.uncropped:
            out.append(
                f"warning: {len(self.uncropped)} image(s) had no scan region or crop column and were copied whole "
                "(burned-in text, if any, remains; a DICOM copy says PatientIdentityRemoved=NO), "
                f"e.g. {self.uncropped[0]}"
            )
        if self.beyond_regions:
            out.append(
                f"warning: {len(self.beyond_regions)} DICOM image(s) copied with pixels outside the scan regions "
                "their header declares, their crop column reaching past them (burned-in text there, if any, remains; "
                "the copy says PatientIdentityRemoved=NO, BurnedInAnnotation as the original), "
                f"e.g. {self.beyond_regions[0]}"
            )
        if self.outside:  # (helper-118: a row naming ../other_study/... was copied into the package unsaid)
            out.append(
                f"warning: {len(self.outside)} file(s) copied from outside the manifest's folder, e.g. "
                f"{self.outside[0]}: check that each is this cohort's before the copy is shared (a row can name "
                "any file)"
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
        stopped = (
            f" (a deidentify to {out_dir} stopped before it committed its copy leaves its mapping alone, as none "
            "is there; any other is a copy's only link to its patients: keep it)"
            if not out_dir.exists()
            else ""
        )  # (helper-83: a kill between the mapping's write and the copy's commit left only the mapping)
        raise FileExistsError(f"{mapping} exists; choose a new mapping file{stopped}")
    guard_output(out_dir, inputs=cohort.files(), kind="folder", can_overwrite=False)  # non-empty: atomic_directory
    guard_output(mapping, inputs=cohort.files(), flag="--mapping", can_overwrite=False)
    unknown = [c for c in keep_columns if c not in cohort.metadata_columns]
    if unknown:
        raise ValueError(f"--keep-columns {', '.join(unknown)}: not metadata columns of {manifest}")
    pseudonyms = _pseudonyms(cohort)
    rows, links, uncropped, beyond, outside, dicom_files, dual = [], [], [], [], [], 0, 0
    home = Path(manifest).resolve().parent

    def from_outside(row: int, what: str, file: Path) -> None:
        if not Path(file).resolve().is_relative_to(home):
            outside.append((row, f"row {row} {what} {file}"))

    uids: dict[str, str] = {}

    def new_uid(old: str) -> str:
        from pydicom.uid import generate_uid  # noqa: PLC0415

        return uids.setdefault(old, generate_uid())

    mapping_written = False
    try:
        with atomic_directory(out_dir) as tmp:
            (tmp / "images").mkdir()
            # written in pseudonym order, every file with one time: the files' order on disk and
            # their times had listed the original patients in manifest order (helper-83)
            for p in sorted(cohort.patients, key=lambda p: pseudonyms[p.patient_id]):
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
                    from_outside(p.row, name, path)
                    src = sources.resolve(path, name, p.image_options(name), framing.ceus_region)
                    box = _crop_box(src, framing.ceus_region)
                    if src.framed_by == sources.WHOLE_FRAME:
                        uncropped.append((p.row, f"row {p.row} {name} {path}"))
                    dual += src.reference is not None
                    if src.kind == "dicom":
                        rel, uid_pair, clean = _copy_dicom(src, box, tmp, pid, name, new_uid)
                        dicom_files += 1
                        if not clean and src.framed_by != sources.WHOLE_FRAME:
                            beyond.append((p.row, f"row {p.row} {name} {path}"))
                    else:
                        rel, uid_pair = _copy_pixels(src, box, tmp, pid, name), ("", "")
                    rate = sources.option_columns(name).get("frame_rate")
                    if src.kind == "clip" and rate and src.frame_rate:  # a video's timing, not in its frames
                        row[rate] = src.frame_rate
                    row[name] = rel
                    if (lesion := p.mask(name)) is not None:  # cropped with its image: it stays aligned
                        from_outside(p.row, mask(name), lesion)
                        row[mask(name)] = mask_file(pid, name)
                        crop_mask(lesion, box, tmp / row[mask(name)])
                    links.append(
                        dict(zip(MAPPING_COLUMNS, (p.patient_id, pid, name, str(path), rel, *uid_pair), strict=True))
                    )
                rows.append(row)
            masks = [c for c in MASK_COLUMNS if any(c in r for r in rows)]
            write_manifest(tmp / MANIFEST, rows, extra_columns=(*masks, *keep_columns, *KEPT_OPTIONS))
            _one_time(tmp)
            # the copy is usable (its warnings were the original's, said already, and would name a temporary path)
            read_manifest(tmp / MANIFEST, require_labels=False, framing=framing, warn=False)
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
        out_dir / MANIFEST,
        mapping,
        len(rows),
        len(links),
        dicom_files,
        [said for _, said in sorted(uncropped)],  # in manifest order (the files were written in pseudonyms')
        dual,
        framing.ceus_region,
        [said for _, said in sorted(beyond)],
        [said for _, said in sorted(outside)],
    )


# pseudonym prefixes, the first that no original ID could be read as (P0003 for a cohort whose
# IDs are P0001 ... had given patients their own or another's real ID; helper-83)
PSEUDONYM_PREFIXES = ("P", "DEID", "ANON", "PSEUDO")


def _pseudonyms(cohort: Cohort) -> dict[str, str]:
    """``<prefix><number>`` in random order (the OS's entropy, not a seed: nothing to re-derive
    them from), the prefix the first of :data:`PSEUDONYM_PREFIXES` under which no original
    patient ID is a number: no pseudonym is a real ID of the cohort, nor of its form."""
    order = list(range(len(cohort)))
    random.SystemRandom().shuffle(order)
    width = max(4, len(str(len(cohort))))
    ids = [p.patient_id.strip().casefold() for p in cohort.patients]
    prefix = next(
        (x for x in PSEUDONYM_PREFIXES if not any(re.fullmatch(rf"{x.casefold()}[\W_]*\d+", i) for i in ids)), None
    )
    while prefix is None:  # every form taken: a random stem no ID starts with
        stem = f"X{secrets.token_hex(3).upper()}_"
        prefix = None if any(i.startswith(stem.casefold()) for i in ids) else stem
    return {cohort.patients[i].patient_id: f"{prefix}{k + 1:0{width}d}" for k, i in enumerate(order)}


def _one_time(root: Path) -> None:
    """Every file and folder under ``root`` given one modification time (now), so that the
    copy's times say nothing of the order its patients were written in."""
    now = time.time()
    for path in sorted(root.rglob("*"), reverse=True):
        os.utime(path, (now, now))


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


def _copy_dicom(
    src: sources.Source, box: Box, root: Path, pid: str, name: str, new_uid
) -> tuple[str, tuple[str, str], bool]:
    import pydicom  # noqa: PLC0415
    from pydicom.pixels import set_pixel_data  # noqa: PLC0415

    header = src.header
    ds = pydicom.dcmread(src.path, stop_before_pixels=True)
    original_uid = str(ds.get("SOPInstanceUID", ""))
    frames = np.stack([sources.crop(f, box) for f in dicom.iter_frames(header)])
    regions, clean = _copied_regions(src, box)
    if src.framed_by == sources.SCAN_REGION:  # a dual display's gap between its sides, which nothing reads
        frames[:, ~_inside([r.box for r in regions], box.height, box.width)] = 0.0
    gray = header.photometric.startswith("MONOCHROME")
    # a palette is written as the RGB it maps to, at the depth of its entries
    bits = (8 if header.palette_bits <= 8 else 16) if header.photometric == "PALETTE COLOR" else header.bits_stored
    pixels = _to_integers(frames[..., 0] if gray else frames, bits)
    for key in ("PixelData", "FloatPixelData", "DoubleFloatPixelData") + _palette_keys(ds):
        if key in ds:
            del ds[key]
    cropped = box != Box(0, 0, src.width, src.height)
    phi.deidentify_dataset(ds, new_uid, cropped=cropped, pixels_clean=clean)
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
    if regions:
        ds.SequenceOfUltrasoundRegions = [dicom.region_item(r) for r in regions]
    elif "SequenceOfUltrasoundRegions" in ds:
        del ds["SequenceOfUltrasoundRegions"]
    if clean:
        ds.BurnedInAnnotation = "NO"  # what the scanner burns in lies outside the scan region
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    rel = picture_file(pid, name, ".dcm")
    dicom.write_dataset(ds, root / rel)
    return rel, (original_uid, str(ds.SOPInstanceUID)), clean


def _copied_regions(src: sources.Source, box: Box) -> tuple[list[dicom.ScanRegion], bool]:
    """A DICOM copy's ultrasound regions, in the copy's pixels (cut to ``box``), such that the
    copy is framed as the original was read, and whether every pixel it keeps lies in a scan
    region (or in a crop chosen by hand where the header declares none). Framed by its scan
    region(s): those in ``box`` (a dual display's pixels between its sides are zeroed by the
    caller). By a crop column: the region holding the crop, as one region over the whole copy
    (its spacing kept: a crop inside the region had lost it; helper-83), else none (the copy
    read whole, as the crop was); clean where the header's regions cover the crop, not where it
    reaches past them (a banner kept: it had been labelled ``BurnedInAnnotation=NO``). The whole
    frame: no region, not clean."""
    regions, _ = sources.tissue_regions(src.header)
    if src.framed_by == sources.WHOLE_FRAME:
        return [], False
    if src.framed_by == sources.CROP_COLUMN:
        whole = Box(0, 0, box.width, box.height)
        holder = next((r for r in regions if r.box.contains(box)), None)
        if holder is not None:
            return [dataclasses.replace(holder, box=whole)], True
        shifted = [_shifted(r.box, box) for r in regions]
        return [], not regions or bool(_inside(shifted, box.height, box.width).all())
    return [dataclasses.replace(r, box=_shifted(r.box, box)) for r in regions if box.contains(r.box)], True


def _shifted(b: Box, origin: Box) -> Box:
    """``b`` in the pixels of a copy cut to ``origin``, clipped to it."""
    return Box(b.x0 - origin.x0, b.y0 - origin.y0, b.x1 - origin.x0, b.y1 - origin.y0).clamp(
        origin.width, origin.height
    )


def _inside(boxes, height: int, width: int) -> np.ndarray:
    """bool [height, width]: the pixels inside any of ``boxes``."""
    inside = np.zeros((height, width), bool)
    for b in boxes:
        inside[max(b.y0, 0) : max(b.y1, 0), max(b.x0, 0) : max(b.x1, 0)] = True
    return inside


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
    """An upright image's box as PNG at its own bit depth, with no metadata chunks: not even an
    ICC profile, its pixels being written as shown (a profile applied already; one the reader
    does not apply, unreadable or on a grey image, had been written back byte for byte, text in
    it included; helper-83). A colour key (``transparency``) stays: it is how the pixels read."""
    keep = im if im.mode in KEPT_MODES else im.convert("RGB")
    cut = keep.crop((box.x0, box.y0, box.x1, box.y1))
    cut.info = {k: v for k, v in cut.info.items() if k == "transparency"}
    cut.save(path, format="PNG", icc_profile=None)


def _copy_pixels(src: sources.Source, box: Box, root: Path, pid: str, name: str) -> str:
    """PNG/JPEG/clip pixels, upright (EXIF orientation applied), cropped, as PNG at their own
    bit depth without metadata; a clip as a folder of frames named in order and zero-padded (a
    frame folder to its length, a video, decoded once, to the longest clip read:
    :func:`lnm_jax.data.pixels.clips.frame_name`), so that it reads back as the same frames in
    the same order."""
    if src.kind == "clip":
        rel = picture_file(pid, name)
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
    rel = picture_file(pid, name, ".png")
    _write_png(open_upright(src.path), box, root / rel)
    return rel
