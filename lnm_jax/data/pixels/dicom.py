"""DICOM ultrasound files: header facts, frame-by-frame pixels as [0, 1] RGB, and writing.

Reads ultrasound files (Modality US; Ultrasound (Multi-frame) Image Storage, and Secondary
Capture when the config accepts it: :func:`check_ultrasound`) through pydicom:
uncompressed and deflated, RLE (pydicom's own decoder), JPEG baseline/extended and JPEG 2000
(Pillow, already installed), and JPEG-LS / lossless JPEG / HTJ2K through the optional
``[dicom]`` extra (pylibjpeg); a file whose codec is missing fails naming what to install.
Photometric interpretations: MONOCHROME2, MONOCHROME1 (inverted), RGB, YBR_FULL,
YBR_FULL_422, YBR_ICT/RCT (converted to RGB by pydicom) and PALETTE COLOR (through the
file's lookup table). Values are scaled by the stored bit depth (``BitsStored``), as a 16-bit
PNG is scaled by 65535: a 12-bit frame's 4095 is white. A grey frame is read as a viewer shows
it: its modality rescale or Modality LUT, then its VOI window or VOI LUT (PS3.3 C.11).

A cine is never decoded whole: :func:`read_frame` decodes one frame (pydicom reads only that
frame's bytes) and :func:`iter_frames` streams them.

A header is checked against its payload where the two can disagree: ``NumberOfFrames``
against the frames the pixel data holds; ``Rows``, ``Columns`` and ``SamplesPerPixel`` against
the native data's length and a codestream's own frame header (JPEG, JPEG-LS, JPEG 2000);
``SamplesPerPixel`` against the photometric interpretation; a palette's LUT descriptor against
its entries, and a Modality or VOI LUT's (:class:`HeaderMismatchError` naming both, or read
at the entries' real depth).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import threading
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from lnm_jax.data.pixels.decode import (
    CUT_SHORT,
    JPEG_SIGNATURE,
    PNG_SIGNATURE,
    holds,
    jpeg_data_damage,
    jpeg_segments,
    srgb_transform,
)
from lnm_jax.data.pixels.placeholders import placeholder

DICOM_SUFFIXES = (".dcm", ".dicom")
PREAMBLE = 128  # a DICOM Part 10 file: 128-byte preamble, then b"DICM"

# RegionSpatialFormat / RegionDataType / PhysicalUnits (PS3.3 C.8.5.5.1)
SPATIAL_2D = 1
DATA_TISSUE, DATA_COLOR_FLOW = 1, 2
UNITS_CM = 3


class DicomError(ValueError):
    """A DICOM file that cannot be used; the message names the file and what is wrong."""


class HeaderMismatchError(DicomError):
    """A header that disagrees with the file's pixel data (frame count, LUT depth)."""


class NotUltrasoundError(DicomError):
    """A DICOM file of another modality (MR, CT, ...) or storage class than ultrasound."""


# Storage SOP classes (PS3.4 B.5): ultrasound images, cines and volumes (current and retired),
# and the secondary captures a scanner's screen is often saved as.
US_STORAGE_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.6.1": "Ultrasound Image Storage",
    "1.2.840.10008.5.1.4.1.1.3.1": "Ultrasound Multi-frame Image Storage",
    "1.2.840.10008.5.1.4.1.1.6.2": "Enhanced US Volume Storage",
    "1.2.840.10008.5.1.4.1.1.6": "Ultrasound Image Storage (Retired)",
    "1.2.840.10008.5.1.4.1.1.3": "Ultrasound Multi-frame Image Storage (Retired)",
}
SECONDARY_CAPTURE_PREFIX = "1.2.840.10008.5.1.4.1.1.7"  # .7, .7.1-.7.4: SC, multi-frame SC


def is_dicom(path: Path) -> bool:
    """Whether ``path`` is a DICOM file, told by its content whatever its name (helper-107: one
    named by its UID, ``1.2.840...3``, a Siemens ``.IMA``, or ``.jpg`` had been called "not a PNG
    or JPEG image"), as a PNG named .jpg is read as a PNG: a file that begins as a PNG or a JPEG is
    not (also one named ``.dcm``), any other whose 128-byte preamble is followed by ``DICM`` is,
    and a ``.dcm``/``.dicom`` file is (its reader says why where it holds no DICOM). Only regular
    files are opened (a FIFO would block: helper-108)."""
    path = Path(path)
    named = path.suffix.lower() in DICOM_SUFFIXES
    if not path.is_file():
        return named
    try:
        with path.open("rb") as f:
            head = f.read(PREAMBLE + 4)
    except OSError:
        return named
    if head.startswith((PNG_SIGNATURE, JPEG_SIGNATURE)):
        return False
    return named or head[PREAMBLE:] == b"DICM"


@dataclasses.dataclass(frozen=True)
class Box:
    """A pixel rectangle: columns ``x0 <= x < x1``, rows ``y0 <= y < y1``."""

    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    def clamp(self, width: int, height: int) -> Box:
        return Box(max(self.x0, 0), max(self.y0, 0), min(self.x1, width), min(self.y1, height))

    def of(self, pixels: np.ndarray) -> np.ndarray:
        """The box's part of ``pixels`` [H, W, ...], clamped to them (empty where it lies outside)."""
        return pixels[max(self.y0, 0) : max(self.y1, 0), max(self.x0, 0) : max(self.x1, 0)]

    def contains(self, other: Box) -> bool:
        return self.x0 <= other.x0 and self.y0 <= other.y0 and self.x1 >= other.x1 and self.y1 >= other.y1

    def __str__(self) -> str:
        return f"{self.x0},{self.y0},{self.x1},{self.y1}"


@dataclasses.dataclass(frozen=True)
class ScanRegion:
    """One item of ``SequenceOfUltrasoundRegions``; ``mm_per_pixel`` (x, y) when in cm."""

    box: Box
    spatial_format: int
    data_type: int
    mm_per_pixel: tuple[float, float] | None

    @property
    def is_tissue_2d(self) -> bool:
        return self.spatial_format == SPATIAL_2D and self.data_type in (DATA_TISSUE, DATA_COLOR_FLOW)


@dataclasses.dataclass(frozen=True)
class DicomHeader:
    """What the loader and ``validate`` need of a DICOM file, read without its pixels."""

    path: Path
    rows: int
    columns: int
    frames: int
    photometric: str
    bits_stored: int
    transfer_syntax: str
    sop_class: str
    regions: tuple[ScanRegion, ...]
    frame_times_s: tuple[float, ...] | None  # time of every frame from the first, when known
    burned_in_annotation: str  # '' when absent
    phi: tuple[str, ...]  # keywords of identifying attributes present with a value
    modality: str = ""  # (0008,0060), '' when absent
    sop_class_uid: str = ""
    # the real depth of a PALETTE COLOR file's LUT entries: the descriptor's, unless the
    # entries hold larger values (PS3.3 C.7.6.3.1.5: 8-bit descriptors with 16-bit entries)
    palette_bits: int | None = None
    signed: bool = False  # PixelRepresentation 1: not ultrasound (refused after the modality check)
    # a MONOCHROME frame's grey transforms, as a viewer applies them (PS3.3 C.11): the modality
    # rescale (slope, intercept) or Modality LUT, then the VOI window (center, width, function)
    # or VOI LUT; None: identity. A LUT: (first value mapped, bits per entry, entries)
    rescale: tuple[float, float] | None = None
    window: tuple[float, float, str] | None = None
    modality_lut: tuple[int, int, tuple[int, ...]] | None = None
    voi_lut: tuple[int, int, tuple[int, ...]] | None = None
    # "JPEG", "JPEG-LS" or "JPEG 2000" when the pixel data is such a codestream, whose own
    # sample precision bounds the decoded values (not BitsStored: :func:`_check_depth`); else ''
    codestream: str = ""
    # PixelSpacing (mm between column centres, between row centres: x, y), where it holds two
    # positive numbers; an ultrasound's calibration is its region's (``regions``), this is read
    # to tell where the two disagree
    pixel_spacing: tuple[float, float] | None = None
    # a colour image's ICC profile (0028,2000; PS3.3 C.11.15), applied as a colour-managed viewer
    # applies it (helper-59: the same profile was applied to a PNG, not to the DICOM file)
    icc_profile: bytes | None = None
    # PixelAspectRatio (0028,0034) as (vertical, horizontal) size of a pixel where it is not 1:1:
    # a viewer shows the picture stretched by it; this reads the stored pixels
    pixel_aspect: tuple[float, float] | None = None
    # where a colour JPEG frame's codestream declares another colour space than the header
    # (RGB against YBR_*): (the codestream's, what says so) (:func:`codestream_colour`); readers
    # differ on which they follow (helper-63: said to no one)
    codestream_colour: tuple[str, str] | None = None
    # what validate says of a cine's timing where the header's is not used as written
    # (:func:`_frame_times`), else None
    timing_note: str | None = None

    @property
    def duration_s(self) -> float | None:
        return self.frame_times_s[-1] if self.frame_times_s else None


def unreadable_line(e: Exception, what: str = "DICOM file", path: Path | None = None) -> str:
    """Why pydicom could not read a file (``path``, where known) as DICOM (``e``), in this
    package's words: a Git LFS or git-annex pointer named as one
    (:func:`lnm_jax.data.pixels.placeholders.placeholder`); a file without the DICOM file
    format's preamble had been said in pydicom's, which end "Use force=True", a setting of its
    own no user of this package has."""
    if path is not None and (why := placeholder(path)):
        return why
    if path is not None and (what := holds(path)):
        return f"not a DICOM file: {what}"
    if "DICM" in str(e):
        return (
            "not a DICOM file: no 'DICM' after its 128-byte preamble, which the DICOM file format (PS3.10) "
            "begins with; a dataset written without it, or another file named .dcm: export it as a DICOM file "
            "(dcmtk: dcmconv +F IN OUT; pydicom: save_as(OUT, enforce_file_format=True))"
        )
    first = (str(e).strip().splitlines() or [""])[0]  # (pydicom may put a whole traceback in its message)
    return f"not a readable {what} ({type(e).__name__}: {first})"


def deflated_line(path: Path) -> str:
    return (
        f"{path}: transfer syntax Deflated Explicit VR Little Endian ({DEFLATED}) is not read; convert the "
        "file first to Explicit VR Little Endian (dcmtk: dcmconv +te IN OUT)"
    )


def refuse_deflated(path: Path) -> None:
    """:class:`DicomError` for a deflated DICOM file, told from its file meta information alone:
    pydicom inflates a deflated dataset whole into memory to parse it (helper-118: a 4 MB file of
    zeros took 20 minutes and 8.7 GB before it was refused). A file whose meta information cannot
    be read passes, for its reader to say why."""
    from pydicom.filereader import read_file_meta_info  # noqa: PLC0415

    try:
        with quiet_pydicom():
            syntax = read_file_meta_info(path).get("TransferSyntaxUID")
    except Exception:  # noqa: BLE001  (no or damaged meta information: the full read says why)
        return
    if syntax == DEFLATED:
        raise DicomError(deflated_line(path))


def read_header(path: Path) -> DicomHeader:
    """The header of a DICOM image file; :class:`DicomError` naming the file otherwise."""
    import pydicom  # noqa: PLC0415
    from pydicom.errors import InvalidDicomError  # noqa: PLC0415

    path = Path(path)
    refuse_deflated(path)
    try:
        # the pixel data's length is read, its bytes are not (native) or only its fragments;
        # pydicom's warnings about odd values stay off the console (the verdict is the message)
        with quiet_pydicom():
            ds = pydicom.dcmread(path, defer_size="4 KB")
            for tag in [t for t in ds.keys() if t.group == 0xFFFE]:  # an item or delimiter outside any sequence
                del ds[tag]  # (helper-107: a writer's stray one after the pixel data had been a traceback)
            ds.get("Modality")  # values are parsed lazily: warnings come on first access
    except zlib.error as e:  # a deflated dataset that does not inflate: cut short or damaged
        raise DicomError(f"{path}: its deflated dataset does not inflate ({e}): cut short or damaged") from e
    except (InvalidDicomError, OSError, ValueError, EOFError, KeyError, NotImplementedError) as e:
        raise DicomError(f"{path}: {unreadable_line(e, path=path)}") from e
    meta = getattr(ds, "file_meta", None)
    if meta is not None and meta.get("TransferSyntaxUID") == DEFLATED:
        raise DicomError(deflated_line(path))
    missing = [k for k in ("Rows", "Columns", "PhotometricInterpretation", "BitsAllocated") if k not in ds]
    if missing:
        kind = getattr(ds.get("SOPClassUID"), "name", "")
        if "PixelData" not in ds and "SOPClassUID" not in ds:  # which every DICOM dataset holds: cut before it
            raise DicomError(
                f"{path}: DICOM file ends after {path.stat().st_size} bytes without its image or even its SOP Class "
                f"UID, which every DICOM dataset holds: {CUT_SHORT}"
            )
        if "PixelData" not in ds and "Image Storage" in kind:  # an image's SOP class, cut before its image
            raise DicomError(
                f"{path}: DICOM file ends after {path.stat().st_size} bytes without its image (no "
                f"{', '.join(missing)}, no pixel data), though its SOP class is {kind}: {CUT_SHORT}"
            )
        raise DicomError(f"{path}: DICOM file holds no image (missing {', '.join(missing)})")
    try:
        declared = ds.get("NumberOfFrames")
        frames = 1 if declared in (None, "") else int(declared)
    except (TypeError, ValueError):
        raise DicomError(f"{path}: NumberOfFrames is {ds.get('NumberOfFrames')!r}, not a number") from None
    if frames < 1:
        raise HeaderMismatchError(f"{path}: NumberOfFrames is {frames}")
    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    photometric = str(ds.PhotometricInterpretation).strip()
    if photometric not in PHOTOMETRIC_READ:
        raise DicomError(
            f"{path}: PhotometricInterpretation {photometric} is not read (its samples are no RGB or grey "
            f"values: {', '.join(PHOTOMETRIC_READ)} are); convert the file to RGB or YBR_FULL first"
        )
    _check_high_bit(path, ds)
    _check_presentation_shape(path, ds, photometric)
    if photometric == "YBR_FULL_422" and not _codestream_kind(syntax) and int(ds.get("PlanarConfiguration") or 0):
        raise HeaderMismatchError(  # (pydicom reads it as planes: helper-107, 78/255 off)
            f"{path}: PlanarConfiguration 1 with YBR_FULL_422, whose samples are interleaved two pixels at a "
            "time (Y Y Cb Cr; PS3.3 C.7.6.3.1.3: PlanarConfiguration shall be 0): the header is not the data's; "
            "set it to 0 if the data are interleaved, or export the file again"
        )
    _check_frame_count(path, ds, frames, photometric)
    _check_jpeg_data(path, ds, syntax, frames)
    try:
        with quiet_pydicom():
            return _header(path, ds, frames, photometric, syntax)
    except DicomError:
        raise
    except Exception as e:  # noqa: BLE001  (pydicom parses elements as they are read: any error names the file)
        # (helper-107: a stray sequence delimiter after the pixel data, NotImplementedError
        # "Unknown Value Representation 'NONE'" from the walk over the header: a traceback)
        raise DicomError(f"{path}: {unreadable_line(e, path=path)}") from e


# the photometric interpretations read (grey, RGB, what pydicom converts to RGB, a palette);
# YBR_PARTIAL_420/422 (MPEG), HSV, ARGB and CMYK (retired) are not: their samples read as RGB
# would be another picture in silence
PHOTOMETRIC_READ = (
    "MONOCHROME1",
    "MONOCHROME2",
    "RGB",
    "YBR_FULL",
    "YBR_FULL_422",
    "YBR_ICT",
    "YBR_RCT",
    "PALETTE COLOR",
)


MONOCHROME = ("MONOCHROME1", "MONOCHROME2")
# the Presentation LUT Shape each grey interpretation carries where present (PS3.3 C.11.6.1.2, as
# the DX and MG IODs require it): MONOCHROME1 is shown inverted, MONOCHROME2 as it is
PRESENTATION_SHAPE = {"MONOCHROME1": "INVERSE", "MONOCHROME2": "IDENTITY"}


def _check_presentation_shape(path: Path, ds, photometric: str) -> None:
    """:class:`HeaderMismatchError` where a grey image's PresentationLUTShape contradicts its
    PhotometricInterpretation (:data:`PRESENTATION_SHAPE`): INVERSE on a MONOCHROME2 image is
    shown inverted by viewers that follow the shape (dcmtk's) and as stored by those that
    follow the interpretation (helper-59: read as stored, unsaid). A grey image's Presentation
    LUT Sequence (2050,0010; a table in place of the shape, PS3.3 C.11.4) that is not the
    identity is refused alike: viewers that apply it show other grey levels than pydicom reads.
    An empty one, an identity table, or one on a colour image (the grayscale pipeline's, which
    a colour image does not pass through) changes nothing shown (helper-69: each refused)."""
    if photometric in PRESENTATION_SHAPE and (why := _presentation_table(ds)):
        raise HeaderMismatchError(
            f"{path}: its Presentation LUT Sequence (2050,0010) {why}, a table viewers that apply it map the grey "
            "levels through and this reader does not read; export the picture as shown (without it)"
        )
    shape = str(ds.get("PresentationLUTShape", "") or "").strip().upper()
    if photometric in PRESENTATION_SHAPE and shape and shape != PRESENTATION_SHAPE[photometric]:
        raise HeaderMismatchError(
            f"{path}: PresentationLUTShape {shape} on a {photometric} image: the two contradict each other (PS3.3 "
            f"C.11.6.1.2: {photometric} goes with {PRESENTATION_SHAPE[photometric]}), and viewers differ on which "
            "they follow (inverted or not); correct one of them"
        )


def _presentation_table(ds) -> str | None:
    """What a Presentation LUT Sequence's first table does where it is not the identity
    (entries 0 .. 2**bits - 1 in even steps over its input range), or None: no sequence, an
    empty one, or an identity table."""
    items = ds.get("PresentationLUTSequence") or []
    if not items:
        return None
    try:
        entries, first, bits = (int(v) for v in items[0].LUTDescriptor)
        data = np.asarray(items[0].LUTData, np.float64).ravel()
    except Exception:  # noqa: BLE001  (a malformed table: viewers differ on it too)
        return "cannot be read as a table"
    entries = entries or 65536
    identity = np.linspace(0, 2**bits - 1, entries)
    if len(data) == entries and np.abs(data - identity).max() <= 1:
        return None
    return f"maps {entries} grey levels from {first} through a table of {bits}-bit values that is not the identity"


def _check_high_bit(path: Path, ds) -> None:
    """:class:`HeaderMismatchError` when HighBit is not BitsStored - 1, which the Image Pixel
    module requires (PS3.3 C.7.6.3.1) and every reader assumes: a 12-bit value in bits 4-15
    (HighBit 15) had been read masked to bits 0-11, a sawtooth of the picture."""
    high, stored = ds.get("HighBit"), ds.get("BitsStored")
    if high in (None, "") or stored in (None, ""):
        return
    if int(high) != int(stored) - 1:
        raise HeaderMismatchError(
            f"{path}: HighBit is {high} and BitsStored {stored}: the bits that hold a value cannot be told "
            "(the Image Pixel module needs HighBit = BitsStored - 1, PS3.3 C.7.6.3.1)"
        )


def _header(path: Path, ds, frames: int, photometric: str, syntax) -> DicomHeader:
    from lnm_jax.data.privacy.phi import phi_present  # noqa: PLC0415

    return DicomHeader(
        path=Path(path),
        rows=int(ds.Rows),
        columns=int(ds.Columns),
        frames=frames,
        photometric=photometric,
        bits_stored=int(ds.get("BitsStored") or ds.BitsAllocated),
        transfer_syntax=f"{syntax.name} ({syntax})" if syntax else "unknown (no file meta)",
        sop_class=ds.SOPClassUID.name if "SOPClassUID" in ds else "",
        regions=tuple(_regions(ds)),
        frame_times_s=(timing := _frame_times(ds, frames, Path(path)))[0],
        timing_note=timing[1],
        burned_in_annotation=str(ds.get("BurnedInAnnotation", "") or "").strip().upper(),
        phi=phi_present(ds),
        modality=str(ds.get("Modality", "") or "").strip().upper(),
        sop_class_uid=str(ds.get("SOPClassUID", "") or ""),
        palette_bits=_palette_bits(path, ds) if photometric == "PALETTE COLOR" else None,
        signed=int(ds.get("PixelRepresentation", 0) or 0) != 0,
        **_grey_transforms(path, ds, photometric),
        codestream=_codestream_kind(syntax),
        pixel_spacing=_pixel_spacing(ds),
        pixel_aspect=_pixel_aspect(ds),
        codestream_colour=_colour_against_header(ds, photometric, syntax),
        icc_profile=bytes(ds.ICCProfile) if photometric not in MONOCHROME and ds.get("ICCProfile") else None,
    )


def _colour_against_header(ds, photometric: str, syntax) -> tuple[str, str] | None:
    """:func:`codestream_colour` of the first frame where it contradicts PhotometricInterpretation
    (RGB against a YBR_* one), else None."""
    if _codestream_kind(syntax) != "JPEG" or _samples(ds) != 3 or "PixelData" not in ds:
        return None
    from pydicom.encaps import generate_fragments, parse_basic_offsets  # noqa: PLC0415

    buf = io.BytesIO(ds.PixelData)
    parse_basic_offsets(buf)
    said = codestream_colour(next(generate_fragments(buf), b""))
    if said is None or (said[0] == "RGB") == (photometric == "RGB"):
        return None
    return said


def _pixel_spacing(ds) -> tuple[float, float] | None:
    """``PixelSpacing`` as (x, y) mm per pixel (the attribute says row spacing first: y, x), or
    None where it is absent or not two positive numbers."""
    try:
        dy, dx = (float(v) for v in ds.get("PixelSpacing") or ())
    except (TypeError, ValueError):
        return None
    return (dx, dy) if dx > 0 and dy > 0 and np.isfinite(dx + dy) else None


def _pixel_aspect(ds) -> tuple[float, float] | None:
    """``PixelAspectRatio`` (vertical, horizontal) where it holds two positive numbers that are
    not equal (PS3.3 C.7.6.3.1.7); None otherwise."""
    try:
        v, h = (float(x) for x in ds.get("PixelAspectRatio") or ())
    except (TypeError, ValueError):
        return None
    return (v, h) if v > 0 and h > 0 and np.isfinite(v + h) and not np.isclose(v, h, rtol=1e-3) else None


def _codestream_kind(syntax) -> str:
    """The JPEG family a transfer syntax encapsulates (its codestream's precision, not
    BitsStored, says how deep the decoded samples are), or ''."""
    from pydicom import uid  # noqa: PLC0415

    for kind, family in (
        ("JPEG", uid.JPEGTransferSyntaxes),
        ("JPEG-LS", uid.JPEGLSTransferSyntaxes),
        ("JPEG 2000", uid.JPEG2000TransferSyntaxes),
    ):
        if syntax in family:
            return kind
    return ""


WINDOW_FUNCTIONS = ("LINEAR", "LINEAR_EXACT", "SIGMOID")  # VOILUTFunction (PS3.3 C.11.2.1.3)
# the attributes of a grey frame's display transforms (read by _grey_transforms)
GREY_TRANSFORM_KEYS = (
    "RescaleSlope",
    "RescaleIntercept",
    "RescaleType",
    "WindowCenter",
    "WindowWidth",
    "VOILUTFunction",
    "ModalityLUTSequence",
    "VOILUTSequence",
)


def _first(value) -> str:
    """The first of a multi-valued attribute (several windows: a viewer shows the first)."""
    from pydicom.multival import MultiValue  # noqa: PLC0415

    return str(value[0] if isinstance(value, list | tuple | MultiValue) else value)


def _grey_transforms(path: Path, ds, photometric: str) -> dict:
    """``rescale`` or ``modality_lut``, and ``window`` or ``voi_lut``, of a MONOCHROME file (not
    of colour: PS3.3 applies them to grey only), each None when absent or the identity; a LUT
    is taken over the rescale or window beside it (as pydicom's ``apply_voi_lut`` prefers it).
    :class:`DicomError` naming the attribute when one cannot be applied (a slope of 0, a width
    below 1, an unknown function, a LUT that cannot be read); :class:`HeaderMismatchError`
    when a LUT's descriptor disagrees with its entries (:func:`_lut`)."""
    if not photometric.startswith("MONOCHROME"):
        return {}
    out: dict = {"rescale": None, "window": None, "modality_lut": None, "voi_lut": None}
    out["modality_lut"] = _lut(path, ds, "ModalityLUTSequence")
    out["voi_lut"] = _lut(path, ds, "VOILUTSequence")
    if out["modality_lut"] is not None:
        ds = _without(ds, ("RescaleSlope", "RescaleIntercept"))
    if out["voi_lut"] is not None:
        ds = _without(ds, ("WindowCenter", "WindowWidth"))
    slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
    if slope not in (None, "") or intercept not in (None, ""):
        try:
            s, i = float(1 if slope in (None, "") else slope), float(0 if intercept in (None, "") else intercept)
        except (TypeError, ValueError):
            s = i = float("nan")
        if not (np.isfinite(s) and np.isfinite(i) and s != 0):
            raise DicomError(f"{path}: RescaleSlope {slope!r} / RescaleIntercept {intercept!r} is no linear rescale")
        if (s, i) != (1.0, 0.0):
            out["rescale"] = (s, i)
    center, width = ds.get("WindowCenter"), ds.get("WindowWidth")
    if center not in (None, "") and width not in (None, ""):
        function = str(ds.get("VOILUTFunction") or "LINEAR").strip().upper()
        try:
            c, w = float(_first(center)), float(_first(width))
        except (TypeError, ValueError):
            c = w = float("nan")
        least = 1.0 if function == "LINEAR" else 0.0
        if function not in WINDOW_FUNCTIONS or not (np.isfinite(c) and np.isfinite(w) and w >= least and w > 0):
            raise DicomError(
                f"{path}: VOI window (WindowCenter {center!r}, WindowWidth {width!r}, VOILUTFunction {function}) "
                f"cannot be applied (a width >= {least:g}, a function of {', '.join(WINDOW_FUNCTIONS)})"
            )
        out["window"] = (c, w, function)
    return out


def _without(ds, keys: tuple[str, ...]) -> dict:
    """The attributes :func:`_grey_transforms` reads, ``keys`` left out."""
    return {k: ds.get(k) for k in GREY_TRANSFORM_KEYS if k not in keys}


def _lut(path: Path, ds, keyword: str) -> tuple[int, int, tuple[int, ...]] | None:
    """The first item of a Modality or VOI LUT Sequence (PS3.3 C.11.1, C.11.2) as (first
    value mapped, bits per entry, entries); None when the sequence is absent or empty.
    The descriptor is checked against the data, as the palette's (:func:`_palette_bits`):
    another number of entries is :class:`HeaderMismatchError` naming both; entries above
    the descriptor's depth are read at 16 bits where it says 8 (writers that say 8 and store
    16), refused otherwise."""
    sequence = ds.get(keyword)
    if not sequence:
        return None
    what = {"ModalityLUTSequence": "Modality LUT", "VOILUTSequence": "VOI LUT"}[keyword]
    try:
        item = sequence[0]
        count, first, bits = (int(v) for v in item.LUTDescriptor)
        raw = item.LUTData
        count = count or 65536  # PS3.3 C.11.1.1.1: 0 means 2**16 entries
        if isinstance(raw, bytes):  # OW: 16-bit words, or 8-bit entries one per byte
            little = ds.original_encoding[1] is not False if hasattr(ds, "original_encoding") else True
            data = np.frombuffer(raw, np.uint8) if len(raw) == count else np.frombuffer(raw, "<u2" if little else ">u2")
        else:
            data = np.atleast_1d(np.asarray(raw, dtype=np.int64))
    except Exception as e:  # noqa: BLE001  (any malformed LUT names the file)
        raise DicomError(f"{path}: {what} Sequence cannot be read ({type(e).__name__}: {e})") from e
    if len(data) != count:
        raise HeaderMismatchError(f"{path}: the {what} holds {len(data)} entries, its LUTDescriptor says {count}")
    if not 8 <= bits <= 16 or (len(data) and data.min() < 0):
        raise DicomError(f"{path}: {what} of {bits} bits per entry (8-16 unsigned) cannot be applied")
    top = int(data.max()) if len(data) else 0
    if top > 2**bits - 1:
        if bits != 8 or top > 65535:
            raise HeaderMismatchError(f"{path}: {what} descriptor says {bits} bits, its entries reach {top}")
        bits = 16
    return first, bits, tuple(int(v) for v in data)


def _looked_up(v: np.ndarray, lut: tuple[int, int, tuple[int, ...]]) -> np.ndarray:
    """``v`` through a LUT (:func:`_lut`): a value below the first mapped takes the first
    entry, one past the last the last (PS3.3 C.11.1.1.1)."""
    first, _, table = lut
    index = np.clip(np.rint(v) - first, 0, len(table) - 1).astype(np.int64)
    return np.asarray(table, np.float64)[index]


def _windowed(v: np.ndarray, center: float, width: float, function: str) -> np.ndarray:
    """VOI windowing to [0, 1] (PS3.3 C.11.2.1.2.1 LINEAR, C.11.2.1.3.2 LINEAR_EXACT,
    C.11.2.1.3.1 SIGMOID), as a viewer maps values to its display's range."""
    if function == "SIGMOID":
        return 1.0 / (1.0 + np.exp(-4.0 * (v - center) / width))
    if function == "LINEAR_EXACT":
        return np.clip((v - center) / width + 0.5, 0.0, 1.0)
    if width == 1:  # LINEAR's width-1 window is a threshold
        return (v > center - 0.5).astype(v.dtype)
    return np.clip((v - (center - 0.5)) / (width - 1) + 0.5, 0.0, 1.0)


class _Quiet:
    """Process-wide state of :func:`quiet_pydicom`: how many callers (threads) are inside it,
    the logger level to restore and the warning filters' saved state."""

    lock = threading.Lock()
    depth = 0
    level = 0
    filters = None  # the entered warnings.catch_warnings


@contextlib.contextmanager
def quiet_pydicom():
    """pydicom's warnings on a malformed value (logged and warned) kept off the console.

    Thread-safe (manifests are checked on several threads): the first caller in silences
    pydicom's logger and warnings, the last one out restores both (``warnings.catch_warnings``
    entered by each thread would restore another thread's filters, and could leave warnings
    silenced for good)."""
    import logging  # noqa: PLC0415
    import warnings  # noqa: PLC0415

    log = logging.getLogger("pydicom")
    with _Quiet.lock:
        if _Quiet.depth == 0:
            _Quiet.level, _Quiet.filters = log.level, warnings.catch_warnings()
            _Quiet.filters.__enter__()
            log.setLevel(logging.ERROR)
            warnings.simplefilter("ignore")
        _Quiet.depth += 1
    try:
        yield
    finally:
        with _Quiet.lock:
            _Quiet.depth -= 1
            if _Quiet.depth == 0:
                log.setLevel(_Quiet.level)
                _Quiet.filters.__exit__(None, None, None)


def where_set(field: str, value: str, option: str) -> str:
    """Where the reading setting ``data.<field>`` is set, for every command that reads a
    manifest (a refusal's hint): ``option`` is the config-free commands' flag."""
    return (
        f"train, validate, pretrain, reproduce: --config.data.{field}={value}; norm-stats, deidentify, "
        f"crop-to-lesion: {option}; a trained model keeps the setting it was trained with"
    )


def check_ultrasound(header: DicomHeader, accept_secondary_capture: bool = False) -> None:
    """:class:`NotUltrasoundError` unless the file is ultrasound: Modality US (or absent) and an
    ultrasound storage class; a secondary capture (a screen saved as a picture, often Modality
    OT) only with ``accept_secondary_capture`` (config ``data.accept_secondary_capture``)."""
    sc = header.sop_class_uid.startswith(SECONDARY_CAPTURE_PREFIX)
    if sc and not accept_secondary_capture and header.modality in ("", "US", "OT"):  # a screen capture
        raise NotUltrasoundError(
            f"{header.path}: a secondary capture ({header.sop_class}, Modality {header.modality or 'absent'}), "
            "not an ultrasound image storage; "
            "read only where data.accept_secondary_capture is True "
            f"({where_set('accept_secondary_capture', 'True', '--accept-secondary-capture')})"
        )
    if header.modality not in ("", "US") and not (sc and accept_secondary_capture and header.modality == "OT"):
        raise NotUltrasoundError(
            f"{header.path}: Modality is {header.modality} ({header.sop_class or 'no SOP class'}), not US (ultrasound)"
        )
    if header.sop_class_uid and not sc and header.sop_class_uid not in US_STORAGE_CLASSES:
        raise NotUltrasoundError(
            f"{header.path}: storage class {header.sop_class or header.sop_class_uid} is not ultrasound"
        )


def _frame_bytes(ds, photometric: str) -> int | None:
    """Bytes of one native (uncompressed) frame, or None where it cannot be told."""
    rows, cols, bits = int(ds.Rows), int(ds.Columns), int(ds.BitsAllocated)
    samples = 2 if photometric == "YBR_FULL_422" else _samples(ds)
    if bits % 8:
        return None  # 1-bit data is packed across frames
    return rows * cols * samples * bits // 8


# the first bytes of one frame's codestream: JPEG (SOI) and JPEG-LS, JPEG 2000 (SOC+SIZ), JP2
CODESTREAM_STARTS = (b"\xff\xd8", b"\xff\x4f\xff\x51", b"\x00\x00\x00\x0cjP  ")


DEFLATED = "1.2.840.10008.1.2.1.99"  # Deflated Explicit VR Little Endian (PS3.5 A.5)
PIXEL_DATA_TAG = b"\xe0\x7f\x10\x00"  # (7FE0,0010) as a little-endian file stores it


def _check_whole(path: Path) -> None:
    """:class:`DicomError` when the file ends before its pixel data does (the length the
    element declares, PS3.5 7.1, runs past the file's end): a file cut short, which would
    otherwise read as a header that disagrees with its data. Little-endian files (every
    transfer syntax in use); read whole, so only where the data already looks wrong."""
    try:
        data = path.read_bytes()
    except OSError:
        return
    at = data.rfind(PIXEL_DATA_TAG)
    if at < 0:
        return
    explicit = data[at + 4 : at + 6] in (b"OB", b"OW")
    start = at + (12 if explicit else 8)
    declared = int.from_bytes(data[start - 4 : start], "little")
    if declared != 0xFFFFFFFF and start + declared > len(data):
        raise DicomError(
            f"{path}: DICOM file ends after {len(data)} bytes, inside its pixel data ({declared} bytes declared from "
            f"byte {start}, {len(data) - start} there): {CUT_SHORT}"
        )


def _frames_in_data(path: Path, ds, photometric: str) -> tuple[int, str] | None:
    """(frames the pixel data holds, how it was counted), or None where it cannot be told.
    Native data that holds more than whole frames of the header's size (Rows x Columns x
    SamplesPerPixel x BitsAllocated / 8), other than an even-length pad byte or trailing zeros,
    or less than one frame, is :class:`HeaderMismatchError`: its rows are another width than
    ``Columns`` says, and would be read sheared."""
    from pydicom.encaps import generate_fragments, parse_basic_offsets  # noqa: PLC0415

    if "PixelData" not in ds:
        return None
    elem = ds.get_item("PixelData")
    length = getattr(elem, "length", None)
    # where its value starts in the file, where pydicom says: a raw element's value_tell, a
    # deferred one's (read when first used) file_tell
    tell = getattr(elem, "value_tell", None) or getattr(elem, "file_tell", None)
    if length not in (None, 0xFFFFFFFF) and tell is not None and tell + length > path.stat().st_size:
        _check_whole(path)  # the file ends before the data it declares
    syntax = getattr(getattr(ds, "file_meta", None), "get", lambda k: None)("TransferSyntaxUID")
    if syntax is None or not syntax.is_encapsulated:
        size = _frame_bytes(ds, photometric)
        if length is None or length == 0xFFFFFFFF:
            length = len(ds.PixelData)
        if not size:
            return None
        frames = length // size
        # beyond the one byte that pads to an even length: trailing zeros are padding (pydicom
        # drops them: its MR_small_padded.dcm has a row's worth), other bytes are image data
        beyond = length - frames * size > (frames * size) % 2
        if beyond and (frames == 0 or any(ds.PixelData[frames * size :])):
            _check_whole(path)
            raise HeaderMismatchError(
                f"{path}: Rows {ds.Rows}, Columns {ds.Columns}, SamplesPerPixel {_samples(ds)} and BitsAllocated "
                f"{ds.BitsAllocated} make {size} bytes per frame{_stored_as(photometric)}, but the pixel data holds "
                f"{length} bytes ({length / size:.2f} frames): the header's image size is not the data's"
            )
        if beyond and (width := _aligned_width(ds, photometric, length, syntax)):
            # zeros, but the picture's own black rows (helper-57: Columns 600 on a 640-wide frame
            # whose last 32 rows were black had been read sheared, as stripes)
            raise HeaderMismatchError(
                f"{path}: Columns {ds.Columns} makes {size} bytes per frame, but the pixel data holds {length} bytes: "
                f"exactly {ds.Rows} rows of {width} columns, whose rows line up where rows of {ds.Columns} are each "
                "shifted against the next (read sheared); the header's image size is not the data's"
            )
        # frames 0, middle and last, read once (where a check asks) for the three picture checks
        sampled = functools.cache(lambda: _sampled_frames(path, tell, size, frames))
        _check_stored_bits(path, ds, photometric, syntax, sampled)
        _check_planar(path, ds, photometric, syntax, sampled)
        _check_swapped(path, ds, photometric, syntax, sampled)
        return frames, f"{length} bytes of {size} per frame"
    buf = io.BytesIO(ds.PixelData)
    offsets = parse_basic_offsets(buf)
    start = buf.tell()
    _check_codestream(path, ds, next(generate_fragments(buf), b""))
    buf.seek(start)
    rle = syntax == "1.2.840.10008.1.2.5"  # RLE: one fragment per frame (PS3.5 A.4.2)
    fragments = starts = 0  # counted as they stream by: a cine's fragments are not held twice
    for fragment in generate_fragments(buf):
        fragments += 1
        starts += not rle and fragment.startswith(CODESTREAM_STARTS)
    table = None
    if offsets:
        table = len(offsets), "its basic offset table"
    elif "ExtendedOffsetTable" in ds:
        table = len(ds.ExtendedOffsetTable) // 8, "its extended offset table"
    if table is not None:
        # one codestream per frame (PS3.5 A.4): an offset table that lists fewer frames than
        # the codestreams would leave the rest unread, or read two as one frame
        if starts and starts != table[0]:
            raise HeaderMismatchError(
                f"{path}: {table[1]} lists {table[0]} frame(s), but its fragments hold {starts} codestreams"
            )
        return table
    if rle:
        return fragments, "its RLE fragments"
    return (starts, "the codestreams in its fragments") if starts else None


# the heuristics on a frame's picture (the width its rows line up at, the bits above BitsStored,
# the planar layout) judge frames at least this many pixels a side: a few pixels carry no
# picture to judge by (helper-58: pydicom's 3x3 SC_rgb_small_odd.dcm, 3-8 px noise, refused)
MIN_SIDE = 16

# rows read at another width line up when their mean step to the next row is at most this
# share of the step at Columns: a picture read at the wrong width is sheared, each row shifted
# against the next, and at its own width neighbouring rows are alike. Measured on 150 BUS-BRA
# and DDTI pictures (a /tmp script): read 1, 2, 8, 40 columns too narrow, the step at the true
# width is at most 0.964, 0.894, 0.668, 0.432 of the step at the narrow one; given 1, 2, 8 zero
# bytes per row of padding, the step at the wider width is at least 1.056, 1.12, 1.44 of the
# true width's
ALIGNED_STEP = 0.98


def _aligned_width(ds, photometric: str, length: int, syntax) -> int | None:
    """A width wider than ``Columns`` at which native pixel data of ``length`` bytes (or one
    less, an even-length pad) holds exactly the header's rows, samples and frames and whose
    first frame's rows line up (mean absolute step between neighbouring rows at most
    :data:`ALIGNED_STEP` of the step at ``Columns``); None where there is none (the data is
    then the frames and zero padding). Little-endian, interleaved 8- or 16-bit data only."""
    rows, cols, bits = int(ds.Rows), int(ds.Columns), int(ds.BitsAllocated)
    samples = 2 if photometric == "YBR_FULL_422" else _samples(ds)
    per_column = rows * samples * bits // 8 * int(ds.get("NumberOfFrames") or 1)
    big_endian = str(syntax) == "1.2.840.10008.1.2.2"
    whole = next((n for n in (length, length - 1) if n % per_column == 0), None)  # (less an even-length pad byte)
    if bits not in (8, 16) or big_endian or int(ds.get("PlanarConfiguration") or 0) or whole is None:
        return None
    width = whole // per_column
    if width <= cols or min(rows, cols) < MIN_SIDE:
        return None
    # the header's first frame's samples, read at both widths: a zero tail beyond them (padding)
    # would make either reading look smoother than its picture (helper-58: speckle and 8 rows of
    # zeros, refused)
    first = np.frombuffer(ds.PixelData, "<u1" if bits == 8 else "<u2", count=rows * cols * samples)

    def step(w: int) -> float:  # those samples read w wide: mean |row i+1 - row i| of the first sample
        frame = first[: (rows * cols // w) * w * samples].reshape(-1, w, samples)[..., 0].astype(np.float64)
        return float(np.abs(np.diff(frame, axis=0)).mean()) if len(frame) > 1 else 0.0

    at_columns = step(cols)
    return width if at_columns > 0 and step(width) <= ALIGNED_STEP * at_columns else None


# BitsStored below the data's depth (native data, PS3.5 8.1.1 lets the bits above it hold
# anything, and they are masked off): refused where masking wraps the picture around, i.e. more
# than this share of vertically neighbouring samples step by over half the masked range where,
# read whole, they step by under half of it (a smooth picture masked to fewer bits is a
# sawtooth). Measured on 140 BUS-BRA and DDTI pictures (a /tmp script): 8-bit pictures under
# BitsStored 7/6/5: at least 0.0018/0.040/0.056 of the pairs; 12-bit pictures in 16 bits with
# random high bits at most 0.0002, a constant, a sparse overlay or an overlay box there: 0
WRAP_SHARE = 0.0006


def _sampled_frames(path: Path, tell: int | None, size: int, frames: int) -> list[bytes]:
    """The bytes of native frames 0, the middle one and the last (those the file holds whole):
    a cine's first frames may be dark (a CEUS clip before the contrast arrives), and a check of
    frame 0 alone then judges nothing (helper-58)."""
    if tell is None:
        return []
    out = []
    with open(path, "rb") as f:
        for k in sorted({0, frames // 2, max(frames - 1, 0)}):
            f.seek(tell + k * size)
            if len(data := f.read(size)) == size:
                out.append(data)
    return out


def _check_stored_bits(path: Path, ds, photometric: str, syntax, sampled: Callable[[], list[bytes]]) -> None:
    """:class:`HeaderMismatchError` when masking native data to ``BitsStored`` wraps its picture
    around (:data:`WRAP_SHARE`; helper-57: an 8-bit picture under BitsStored 6 was read as a
    sawtooth in silence, as pydicom reads it; helper-58: under BitsStored 7, with few samples
    above it). Judges frames 0, middle and last (``sampled``: :func:`_sampled_frames`). Unsigned
    little-endian grey or interleaved RGB data of 8 or 16 bits, at least :data:`MIN_SIDE` a side."""
    bits, stored = int(ds.BitsAllocated), int(ds.get("BitsStored") or ds.BitsAllocated)
    rows, cols = int(ds.Rows), int(ds.Columns)
    if (
        bits not in (8, 16)
        or stored >= bits
        or min(rows, cols) < MIN_SIDE
        or int(ds.get("PixelRepresentation") or 0)
        or str(syntax) == "1.2.840.10008.1.2.2"
        or not photometric.startswith(("MONOCHROME", "RGB"))
        or int(ds.get("PlanarConfiguration") or 0)
    ):
        return
    top = 2**stored - 1
    for data in sampled():
        raw = np.frombuffer(data, "<u1" if bits == 8 else "<u2").reshape(rows, cols, -1)[..., 0].astype(np.int64)
        masked_step, whole_step = np.abs(np.diff(raw & top, axis=0)), np.abs(np.diff(raw, axis=0))
        wrapped = float(np.mean((masked_step > top / 2) & (whole_step < top / 2)))
        if wrapped > WRAP_SHARE:
            raise HeaderMismatchError(
                f"{path}: BitsStored is {stored} (values up to {top}), but masked to it its picture wraps around "
                f"({wrapped:.2%} of neighbouring samples jump by over half that range where read whole, {bits} "
                "bits, they step by under half of it: a sawtooth): BitsStored is not the data's"
            )


def _row_step(a: np.ndarray) -> float:
    """A picture's mean absolute step to the next row over its SD (over every channel of
    ``a``: [rows, cols] or [rows, cols, channels]): small where neighbouring rows are alike, as
    in any picture read as laid out."""
    a = a.astype(np.float64)
    return float(np.abs(np.diff(a, axis=0)).mean() / (a.std() + 1e-9))


# colour data read as its PlanarConfiguration says lines up better than read the other way:
# refused where the other way's row step is at most this share of the header's. Measured on 140
# BUS-BRA and DDTI pictures as RGB (a /tmp script, over all three samples): the right layout's
# step over the wrong one's at most 0.385 (interleaved data) and 0.766 (planes); so the wrong
# layout's is at least 1.30 times the right one's
PLANAR_SMOOTHER = 0.85


def _check_planar(path: Path, ds, photometric: str, syntax, sampled: Callable[[], list[bytes]]) -> None:
    """:class:`HeaderMismatchError` when native 3-sample data lines up read in the other
    layout than its ``PlanarConfiguration`` says (0: R, G, B interleaved per pixel; 1: three
    planes; :data:`PLANAR_SMOOTHER`, over all three samples; helper-57: interleaved data under 1
    read scrambled, in silence). Judges frames 0, middle and last (``sampled``: :func:`_sampled_frames`);
    8- or 16-bit little-endian RGB or YBR_FULL, at least :data:`MIN_SIDE` a side."""
    bits, rows, cols = int(ds.BitsAllocated), int(ds.Rows), int(ds.Columns)
    if (
        _samples(ds) != 3
        or bits not in (8, 16)
        or min(rows, cols) < MIN_SIDE
        or str(syntax) == "1.2.840.10008.1.2.2"
        or photometric not in ("RGB", "YBR_FULL")
    ):
        return
    planar = int(ds.get("PlanarConfiguration") or 0)
    for data in sampled():
        flat = np.frombuffer(data, "<u1" if bits == 8 else "<u2")
        # the three planes side by side: each plane's rows step to its own next row
        interleaved = _row_step(flat.reshape(rows, cols, 3))
        planes = _row_step(flat.reshape(3, rows, cols).transpose(1, 2, 0))
        said, other = (interleaved, planes) if planar == 0 else (planes, interleaved)
        if said > 0 and other <= PLANAR_SMOOTHER * said:
            layouts = ("interleaved (R, G, B per pixel)", "three planes (all R, then G, then B)")
            raise HeaderMismatchError(
                f"{path}: PlanarConfiguration {planar} says its samples are {layouts[planar]}, but its frames "
                f"line up read as {layouts[1 - planar]}: PlanarConfiguration is not the data's"
            )


# a frame whose data lines up read with Rows and Columns swapped: refused where that reading's
# row step is at most this share of the header's. Measured on 140 BUS-BRA and DDTI pictures (a
# /tmp script): read right, a picture's step is at most 0.474 of its step read swapped (so the
# header's reading of a swapped file is at least 2.1 times the right one's)
SWAP_SMOOTHER = 0.7


def _check_swapped(path: Path, ds, photometric: str, syntax, sampled: Callable[[], list[bytes]]) -> None:
    """:class:`HeaderMismatchError` when native data of exactly the header's size lines up read
    with ``Rows`` and ``Columns`` swapped (:data:`SWAP_SMOOTHER`; the same number of bytes, so
    no length check can tell; helper-58: a 560x360 picture under Rows 560, Columns 360 was read
    sheared, in silence). Judges frames 0, middle and last (``sampled``); 8- or 16-bit little-endian grey or
    interleaved colour, at least :data:`MIN_SIDE` a side."""
    bits, rows, cols = int(ds.BitsAllocated), int(ds.Rows), int(ds.Columns)
    samples = _samples(ds)
    if (
        rows == cols
        or bits not in (8, 16)
        or min(rows, cols) < MIN_SIDE
        or samples not in (1, 3)
        or photometric == "YBR_FULL_422"
        or (samples == 3 and int(ds.get("PlanarConfiguration") or 0))
        or str(syntax) == "1.2.840.10008.1.2.2"
    ):
        return
    for data in sampled():
        flat = np.frombuffer(data, "<u1" if bits == 8 else "<u2")
        said, swapped = _row_step(flat.reshape(rows, cols, samples)), _row_step(flat.reshape(cols, rows, samples))
        if said > 0 and swapped <= SWAP_SMOOTHER * said:
            raise HeaderMismatchError(
                f"{path}: Rows {rows} and Columns {cols}, but its frames line up read as {cols} rows of {rows} "
                "columns (Rows and Columns swapped?): the header's image size is not the data's"
            )


def _stored_as(photometric: str) -> str:
    """How ``photometric`` stores a frame's samples, where it is not one of each per pixel."""
    if photometric == "YBR_FULL_422":  # (helper-59: '8192 bytes' of a 64x64 RGB frame had read as a slip)
        return " (YBR_FULL_422 stores two samples a pixel: Y for each, Cb and Cr shared by two; PS3.3 C.7.6.3.1.2)"
    return ""


def _samples(ds) -> int:
    return int(ds.get("SamplesPerPixel") or 1)


# JPEG (ITU T.81 B.1.1.3) start-of-frame markers SOF0-SOF15 (not DHT C4, JPG C8, DAC CC), and
# JPEG-LS's SOF55 (ITU T.87 C.2.2): the same layout, precision(1) rows(2) columns(2) components(1)
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF, 0xF7}


def codestream_colour(data: bytes) -> tuple[str, str] | None:
    """("RGB" or "YCbCr", what says so) where a 3-component JPEG codestream (``data``: one
    frame's, from SOI) declares its colour space itself, as libjpeg reads it
    (jdapimin.c, default_decompress_parms): a JFIF marker means YCbCr (JFIF 1.02); otherwise an
    Adobe APP14 marker's transform (0: RGB, 1: YCbCr); otherwise component identifiers R, G, B
    mean RGB. None where it declares nothing (libjpeg then assumes YCbCr, pydicom follows the
    header) or is not such a codestream."""
    if data[:2] != b"\xff\xd8":
        return None
    jfif, adobe, ids = False, None, ()
    for marker, segment in jpeg_segments(data):
        if marker == 0xE0 and segment[:5] == b"JFIF\0":
            jfif = True
        elif marker == 0xEE and segment[:5] == b"Adobe" and len(segment) >= 12:
            adobe = segment[11]
        elif marker in _SOF and len(segment) >= 6:
            ids = tuple(segment[6 + 3 * k] for k in range(segment[5]) if 6 + 3 * k < len(segment))
    if len(ids) != 3:
        return None
    if jfif:
        return "YCbCr", "a JFIF marker"
    if adobe in (0, 1):
        return ("RGB", "YCbCr")[adobe], f"an Adobe marker of colour transform {adobe}"
    if ids in ((82, 71, 66), (114, 103, 98)):
        return "RGB", "component identifiers R, G, B"
    return None


def codestream_size(data: bytes) -> tuple[int, int, int, str, int] | None:
    """(rows, columns, components, format, sample precision in bits) a frame's codestream
    declares: a JPEG or JPEG-LS frame header (SOFn), or a JPEG 2000 image size and first
    component's depth (SIZ, ITU T.800 A.5.1; a JP2 file's codestream box too); None where
    ``data`` holds neither within its bytes (an RLE frame, a first fragment that ends before
    the header). JPEG rows 0 (defined later by a DNL marker) are returned as 0."""
    import struct  # noqa: PLC0415

    if data[:2] == b"\xff\xd8":
        for marker, segment in jpeg_segments(data):
            if marker in _SOF:
                if len(segment) < 6:
                    return None
                rows, cols = struct.unpack(">HH", segment[1:5])
                return rows, cols, segment[5], "JPEG-LS" if marker == 0xF7 else "JPEG", segment[0]
        return None
    # a raw codestream starts with SOC + SIZ (the marker's four bytes lie within [0, 4): a
    # search ending at 1 had never found one, so raw JPEG 2000 frames went unchecked); a JP2
    # file's codestream box comes after its header boxes
    start = data.find(b"\xff\x4f\xff\x51", 0, 4096 if data[4:8] == b"jP  " else 4)
    if start < 0 or start + 43 > len(data):
        return None
    x, y, x0, y0 = struct.unpack(">IIII", data[start + 8 : start + 24])
    components = struct.unpack(">H", data[start + 40 : start + 42])[0]
    return y - y0, x - x0, components, "JPEG 2000", (data[start + 42] & 0x7F) + 1  # Ssiz: depth - 1


def _check_codestream(path: Path, ds, first: bytes) -> None:
    """:class:`HeaderMismatchError` when the first frame's codestream declares another size or
    number of components than Rows, Columns and SamplesPerPixel (pydicom would lay the decoded
    bytes out as the header says: a swapped Rows/Columns reads as a sheared picture), or a
    sample precision below BitsStored (an 8-bit codestream under BitsStored 12 is read scaled
    by 4095, a near-black picture; PS3.5 8.2.1: the header shall be consistent with the
    codestream). A precision above BitsStored (a 16-bit lossless codestream of 12-bit values)
    is checked on the decoded values instead (:func:`_check_depth`)."""
    found = codestream_size(first)
    if found is None:
        return
    rows, cols, components, kind, precision = found
    if rows not in (0, int(ds.Rows)) or cols != int(ds.Columns) or components != _samples(ds):
        raise HeaderMismatchError(
            f"{path}: the header says Rows {ds.Rows} x Columns {ds.Columns}, {_samples(ds)} "
            f"sample(s) per pixel; the first frame's {kind} codestream is {rows} x {cols}, {components} component(s)"
        )
    stored = int(ds.get("BitsStored") or ds.BitsAllocated)
    if precision < stored:
        raise HeaderMismatchError(
            f"{path}: BitsStored is {stored}, but the first frame's {kind} codestream holds {precision}-bit "
            f"samples: read at {stored} bits its picture would be {2 ** (stored - precision)} times too dark"
        )


def _check_photometric(path: Path, ds, photometric: str) -> None:
    """:class:`HeaderMismatchError` when SamplesPerPixel is not what PhotometricInterpretation
    needs (PS3.3 C.7.6.3.1.2: 1 for MONOCHROME1/2 and PALETTE COLOR, 3 for RGB and YBR_*): the
    frame would be read as another image size or as planes of another colour."""
    needs = 1 if photometric.startswith("MONOCHROME") or photometric == "PALETTE COLOR" else 3
    if photometric.startswith(("MONOCHROME", "PALETTE", "RGB", "YBR")) and _samples(ds) != needs:
        given = (
            f"is {_samples(ds)}" if ds.get("SamplesPerPixel") not in (None, "") else "is absent (a required attribute)"
        )
        raise HeaderMismatchError(
            f"{path}: PhotometricInterpretation {photometric} has {needs} sample(s) per pixel, but SamplesPerPixel "
            f"{given}"
        )


def _check_frame_count(path: Path, ds, frames: int, photometric: str) -> None:
    """:class:`HeaderMismatchError` naming both numbers when the header and the pixel data
    disagree: SamplesPerPixel against the photometric interpretation, the image size against
    the native data's length or the codestream's own header, NumberOfFrames against the frames
    the data holds (a missing NumberOfFrames says 1). A cine read as a still, or as a shorter
    cine, or a frame laid out at another width, is the wrong input in silence."""
    _check_photometric(path, ds, photometric)
    try:
        found = _frames_in_data(path, ds, photometric)
    except DicomError:  # (a header that disagrees with its data, a file cut short)
        raise
    except Exception as e:  # noqa: BLE001  (unparseable fragments: the decoder will say so)
        _check_whole(path)
        raise DicomError(f"{path}: pixel data cannot be parsed ({type(e).__name__}: {e})") from e
    if found is None or found[0] == frames:
        return
    if found[0] < frames:  # a cine cut short between two frames reads as fewer frames
        _check_whole(path)
    said = f"NumberOfFrames is {frames}" if "NumberOfFrames" in ds else "NumberOfFrames is missing (1 frame)"
    raise HeaderMismatchError(f"{path}: {said}, but the pixel data holds {found[0]} frame(s) ({found[1]})")


def _check_jpeg_data(path: Path, ds, syntax, frames: int) -> None:
    """:class:`DicomError` naming the frame when a JPEG frame's image data is damaged as
    libjpeg warns of it (:func:`lnm_jax.data.pixels.decode.jpeg_data_damage`: a scan cut short
    with an end-of-image marker, wiped bytes, a lost restart marker), which Pillow, pydicom's
    decoder, reads past in silence (helper-63: the lower half of a frame read flat grey). Every
    frame is checked (about 1 ms each); the codestreams libjpeg-turbo does not decode (12-bit,
    lossless) are left to their own decoder."""
    if _codestream_kind(syntax) != "JPEG" or "PixelData" not in ds:
        return
    from pydicom.encaps import generate_frames  # noqa: PLC0415

    try:
        found = list(generate_frames(ds.PixelData, number_of_frames=frames))
    except Exception:  # noqa: BLE001  (fragments pydicom cannot split into frames: its decoder will say so)
        return
    for index, frame in enumerate(found):
        if why := jpeg_data_damage(frame):
            raise DicomError(f"{path}: frame {index} of {frames} is a damaged JPEG: {why}")


def _palette_bits(path: Path, ds) -> int:
    """The depth of a PALETTE COLOR file's LUT entries: the descriptor's bits, or 16 when the
    entries hold values the descriptor's depth cannot (PS3.3 C.7.6.3.1.5 notes writers that
    say 8 and store 16-bit entries)."""
    from pydicom.pixels import apply_color_lut  # noqa: PLC0415

    try:
        bits = int(ds.RedPaletteColorLookupTableDescriptor[2])
        entries = int(ds.RedPaletteColorLookupTableDescriptor[0]) or 65536
        first = int(ds.RedPaletteColorLookupTableDescriptor[1])
        for colour in ("Red", "Green", "Blue"):
            data = ds.get(f"{colour}PaletteColorLookupTableData")
            if data is not None and len(data) not in (entries, 2 * entries):
                raise HeaderMismatchError(
                    f"{path}: the {colour.lower()} palette holds {len(data)} bytes, its descriptor says "
                    f"{entries} entries ({entries} or {2 * entries} bytes)"
                )
        lut = apply_color_lut(np.arange(first, first + entries, dtype=np.uint16 if entries > 256 else np.uint8), ds)
    except HeaderMismatchError:
        raise
    except Exception as e:  # noqa: BLE001  (any malformed LUT names the file)
        raise DicomError(f"{path}: PALETTE COLOR lookup table cannot be read ({type(e).__name__}: {e})") from e
    top = int(lut.max())
    if top > 2**bits - 1:
        if top > 65535 or bits not in (8, 16):
            raise HeaderMismatchError(f"{path}: palette LUT descriptor says {bits} bits, its entries reach {top}")
        return 16
    return bits


def _regions(ds) -> Iterator[ScanRegion]:
    for r in ds.get("SequenceOfUltrasoundRegions", []):
        try:
            box = Box(
                int(r.RegionLocationMinX0),
                int(r.RegionLocationMinY0),
                int(r.RegionLocationMaxX1) + 1,  # DICOM's max is inclusive
                int(r.RegionLocationMaxY1) + 1,
            )
        except AttributeError:
            continue  # a region without its location cannot be cropped to
        spacing = None
        dx, dy = r.get("PhysicalDeltaX"), r.get("PhysicalDeltaY")
        if (
            r.get("PhysicalUnitsXDirection") == UNITS_CM
            and r.get("PhysicalUnitsYDirection") == UNITS_CM
            and dx
            and dy
            and float(dx) > 0
            and float(dy) > 0
        ):
            spacing = (10.0 * float(dx), 10.0 * float(dy))
        yield ScanRegion(box, int(r.get("RegionSpatialFormat", 0)), int(r.get("RegionDataType", 0)), spacing)


FRAME_TIME = 0x00181063  # (0018,1063), as FrameIncrementPointer names it


def _frame_times(ds, frames: int, path: Path | None = None) -> tuple[tuple[float, ...] | None, str | None]:
    """(Seconds of every frame from the first, a note for validate where the header's timing is
    not used as written): FrameTimeVector (ms between frames), FrameTime (ms per frame) or
    CineRate (frames/s), in that order, except where FrameIncrementPointer (0028,0009; PS3.3
    C.7.6.6.1.1) names FrameTime and the header holds it, which a viewer then plays by (a
    FrameTimeVector beside it had been used instead; said where the two disagree, or where the
    vector's length is not the frame count); (None, None)
    for a still or when none is given. Times that do not increase are not used, said
    (the cine is then sampled in frames: they had been dropped in silence). A FrameTimeVector
    whose length is not the frame count, and which times the cine, is a header that disagrees with
    its pixel data: :class:`HeaderMismatchError` naming both numbers."""
    if frames < 2:
        return None, None
    pointer = ds.get("FrameIncrementPointer")  # one tag (an int), or several (pydicom's MultiValue)
    pointer = {int(pointer)} if isinstance(pointer, int) else {int(t) for t in pointer or ()}
    vector, frame_time, note = ds.get("FrameTimeVector"), ds.get("FrameTime"), None
    by_frame_time = FRAME_TIME in pointer and bool(frame_time)  # (what viewers play it by)
    if vector is not None:
        vector = [float(v) for v in np.atleast_1d(np.asarray(vector, dtype=object))]
        if len(vector) != frames and not by_frame_time:  # (beside the FrameTime viewers play by: said below)
            raise HeaderMismatchError(
                f"{path}: FrameTimeVector has {len(vector)} entries, the cine holds {frames} frames"
            )
    if vector is not None and not by_frame_time:
        times, said = np.cumsum([0.0] + vector[1:]) / 1000.0, "FrameTimeVector"
    elif frame_time:
        times, said = np.arange(frames) * float(frame_time) / 1000.0, "FrameTime"
        if vector is not None and len(vector) != frames:  # (helper-72: a vector no viewer reads)
            other = f"has {len(vector)} entries for {frames} frames"
        elif vector is not None and not np.allclose(vector[1:], float(frame_time), rtol=0.01):
            other = f"says otherwise ({min(vector[1:]):g}-{max(vector[1:]):g} ms)"
        else:
            other = None
        if other:
            note = (
                f"the cine's timing: FrameTime {float(frame_time):g} ms, which its FrameIncrementPointer names and "
                f"viewers play by, is used; its FrameTimeVector {other}"
            )
    elif ds.get("CineRate"):
        times, said = np.arange(frames) / float(ds.CineRate), "CineRate"
    else:
        return None, None
    if not np.all(np.diff(times) > 0):
        said = f"the cine's timing: its {said} does not increase from frame to frame, so it is not used"
        return None, said + " (frames are sampled in frames)"
    return tuple(float(t) for t in times), note


def _decode_failure(path: Path, e: Exception) -> DicomError:
    """A decode error, with the package to install when the file's codec is missing."""
    from pydicom import dcmread  # noqa: PLC0415
    from pydicom.pixels import get_decoder  # noqa: PLC0415

    try:
        uid = dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID
        decoder = get_decoder(uid)
        if not decoder.is_available:
            return DicomError(
                f"{path}: pixel data in {uid.name} ({uid}) needs a decoder that is not installed; "
                # (this module ships with exports, without lnm_jax: the extra's packages named here)
                "install one: pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg (the [dicom] extra of "
                "lnm_jax), or pip install python-gdcm"
            )
    except Exception:  # noqa: BLE001, S110  (the original error is the report then)
        pass
    first = (str(e).strip().splitlines() or [""])[0]
    return DicomError(f"{path}: cannot decode the pixel data ({type(e).__name__}: {first})")


def to_unit_rgb(frame: np.ndarray, header: DicomHeader, ds=None) -> np.ndarray:
    """One decoded frame (as pydicom returns it, colour already in RGB) -> float32 [H, W, 3]
    in [0, 1], as a viewer shows it: a grey frame's modality rescale or LUT and VOI window or
    LUT applied (``header.rescale``, ``.modality_lut``, ``.window``, ``.voi_lut``; without a
    VOI transform the stored range, or the Modality LUT's, is the display's),
    MONOCHROME1 inverted. ``ds``: the header dataset, for PALETTE COLOR's lookup table.

    The grey transforms are this module's (:func:`_looked_up`, :func:`_windowed`), not pydicom's
    ``apply_modality_lut``/``apply_voi_lut``, for two reasons: those read a LUT's descriptor as
    given, where :func:`_lut` has refused a descriptor its entries contradict, and they return
    the window's output range, where a viewer's [0, 1] display range is wanted here (with the
    stored range, or the Modality LUT's, when there is no VOI transform). Their values agree
    with pydicom's to float32 rounding (tests/test_dicom.py)."""
    if header.photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut  # noqa: PLC0415

        rgb = apply_color_lut(frame, ds)
        return _profiled(np.clip(rgb.astype(np.float32) / np.float32(2**header.palette_bits - 1), 0.0, 1.0), header)
    transforms = (header.rescale, header.window, header.modality_lut, header.voi_lut)
    if all(t is None for t in transforms):
        unit = frame.astype(np.float32) / np.float32(2**header.bits_stored - 1)
    else:  # as a viewer shows it: the modality rescale or LUT, then the VOI window or LUT
        v, top = frame.astype(np.float64), 2**header.bits_stored - 1  # top: the range shown without a VOI
        if header.modality_lut is not None:
            v, top = _looked_up(v, header.modality_lut), 2 ** header.modality_lut[1] - 1
        elif header.rescale is not None:
            v = v * header.rescale[0] + header.rescale[1]
        if header.voi_lut is not None:
            unit = _looked_up(v, header.voi_lut) / (2 ** header.voi_lut[1] - 1)
        else:
            unit = _windowed(v, *header.window) if header.window else v / top
        unit = unit.astype(np.float32)
    if header.photometric == "MONOCHROME1":  # 0 is white
        unit = 1.0 - unit
    if unit.ndim == 2:
        unit = np.repeat(unit[..., None], 3, axis=-1)
    return _profiled(np.clip(unit[..., :3], 0.0, 1.0), header)


def _profiled(rgb: np.ndarray, header: DicomHeader) -> np.ndarray:
    """A colour frame (float [H, W, 3] in [0, 1]) through the file's ICC profile to sRGB, as a
    PNG's embedded profile is applied (LittleCMS, through Pillow's ImageCms), at the 8 bits a
    display shows; unchanged without a profile, or with one that cannot be read (as viewers
    ignore it)."""
    if header.icc_profile is None:
        return rgb
    from PIL import Image, ImageCms  # noqa: PLC0415

    if (transform := srgb_transform(header.icc_profile, "RGB", "RGB")) is None:
        return rgb
    shown = ImageCms.applyTransform(Image.fromarray(np.rint(rgb * 255).astype(np.uint8), "RGB"), transform)
    return np.asarray(shown, np.float32) / np.float32(255.0)


def _palette_dataset(header: DicomHeader):
    if header.photometric != "PALETTE COLOR":
        return None
    import pydicom  # noqa: PLC0415

    return pydicom.dcmread(header.path, stop_before_pixels=True)


def read_frame(header: DicomHeader, index: int) -> np.ndarray:
    """Frame ``index`` as float32 [H, W, 3] in [0, 1], decoding that frame only."""
    from pydicom.pixels import pixel_array  # noqa: PLC0415

    if not 0 <= index < header.frames:
        raise DicomError(f"{header.path}: frame {index} asked for, the file has {header.frames}")
    try:
        with quiet_pydicom():  # (its note on a codestream's colour space is header.codestream_colour's, said once)
            frame = pixel_array(header.path, index=index, **_decoding(header))
    except Exception as e:  # noqa: BLE001  (any decoder failure names the file)
        raise _decode_failure(header.path, e) from e
    return to_unit_rgb(_check_depth(frame, header, index), header, _palette_dataset(header))


def iter_frames(header: DicomHeader) -> Iterator[np.ndarray]:
    """Every frame in order as float32 [H, W, 3] in [0, 1], one decoded at a time. A native
    YBR_FULL_422 cine is read frame by frame (:func:`read_frame`): pydicom 3.0's ``iter_pixels``
    sizes its frames at 3 bytes a pixel, not 4:2:2's 2 (helper-107: frames after the first read
    as other bytes, then a reshape error refused the file)."""
    from pydicom.pixels import iter_pixels  # noqa: PLC0415

    if header.photometric == "YBR_FULL_422" and not header.codestream:
        yield from (read_frame(header, index) for index in range(header.frames))
        return

    ds = _palette_dataset(header)
    frames = iter_pixels(header.path, **_decoding(header))
    for index in range(header.frames):
        try:
            with quiet_pydicom():
                frame = next(frames)
        except StopIteration:
            return
        except Exception as e:  # noqa: BLE001
            raise _decode_failure(header.path, e) from e
        yield to_unit_rgb(_check_depth(frame, header, index), header, ds)


def _decoding(header: DicomHeader) -> dict:
    """pydicom's decoding options: a JPEG codestream's samples as decoded, not masked to
    BitsStored (pydicom's ``correct_unused_bits``, right for native data, whose unused high
    bits may hold anything, PS3.5 8.1.1), so that :func:`_check_depth` sees them; and its
    samples as the codestream interleaves them, whatever PlanarConfiguration says (PS3.5 8.2:
    a JPEG, JPEG-LS or JPEG 2000 frame's layout is its codestream's, the attribute "shall be 0"
    and dcmtk and GDCM ignore it; pydicom 3.0 had reshaped a decoded frame as planes, helper-107:
    a JPEG YBR_FULL_422 frame under PlanarConfiguration 1 read as stripes, 77/255 off)."""
    return {"correct_unused_bits": False, "planar_configuration": 0} if header.codestream else {}


def _check_depth(frame: np.ndarray, header: DicomHeader, index: int) -> np.ndarray:
    """``frame``, or :class:`HeaderMismatchError` when a JPEG-family codestream decoded to
    values beyond BitsStored: an 8-bit JPEG under BitsStored 6 had been read masked to 6 bits
    (a sawtooth of the picture; JPEG-LS and JPEG 2000: saturated). The codestream's own
    precision controls its decoding (PS3.5 8.2.1); a 16-bit lossless codestream holding
    12-bit values under BitsStored 12 is read."""
    top = 2**header.bits_stored - 1
    if header.codestream and header.photometric != "PALETTE COLOR" and frame.size and int(frame.max()) > top:
        raise HeaderMismatchError(
            f"{header.path}: BitsStored is {header.bits_stored} (values up to {top}); frame {index} of its "
            f"{header.codestream} codestream holds values up to {int(frame.max())}"
        )
    return frame


# ------------------------------------------------------------------------------ writing

US_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.6.1"
US_MULTIFRAME_STORAGE = "1.2.840.10008.5.1.4.1.1.3.1"
COMPRESSIONS = ("none", "rle", "jpeg")


def new_dataset(
    pixels: np.ndarray,
    *,
    regions=(),
    frame_time_ms: float | None = None,
    compression: str = "none",
    attributes: dict | None = None,
):
    """An ultrasound DICOM dataset holding ``pixels``: uint8/uint16 [H, W] or [H, W, 3] for
    one frame, [N, H, W(, 3)] with N > 1 (a cine, Ultrasound Multi-frame Image Storage, with
    ``FrameTime`` when given). ``compression``: 'none' (explicit VR little endian), 'rle'
    (lossless, pydicom's encoder) or 'jpeg' (baseline, YBR_FULL_422 4:2:2, 8-bit colour or
    gray, through Pillow). ``regions``: :class:`ScanRegion` s written as
    ``SequenceOfUltrasoundRegions``; ``attributes``: extra header keywords and values."""
    from pydicom.dataset import Dataset, FileMetaDataset  # noqa: PLC0415
    from pydicom.pixels import set_pixel_data  # noqa: PLC0415
    from pydicom.uid import ExplicitVRLittleEndian, RLELossless, generate_uid  # noqa: PLC0415

    if compression not in COMPRESSIONS:
        raise ValueError(f"compression must be one of {COMPRESSIONS}, got {compression!r}")
    colour = pixels.ndim >= 3 and pixels.shape[-1] == 3  # (a gray cine 3 pixels wide is no image)
    multi = pixels.ndim == (4 if colour else 3)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = US_MULTIFRAME_STORAGE if multi else US_IMAGE_STORAGE
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality = "US"
    for key, value in (attributes or {}).items():
        setattr(ds, key, value)
    bits = 8 if pixels.dtype == np.uint8 else 16
    set_pixel_data(ds, pixels, "RGB" if colour else "MONOCHROME2", bits)
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    if multi and frame_time_ms:
        ds.FrameTime = f"{frame_time_ms:.6g}"
        ds.FrameIncrementPointer = 0x00181063  # (0018,1063) Frame Time
    if regions:
        ds.SequenceOfUltrasoundRegions = [region_item(r) for r in regions]
    if compression == "rle":
        ds.compress(RLELossless, generate_instance_uid=False)
    elif compression == "jpeg":
        _jpeg_baseline(ds, pixels if multi else pixels[None], colour)
    return ds


def region_item(r: ScanRegion):
    from pydicom.dataset import Dataset  # noqa: PLC0415

    item = Dataset()
    item.RegionSpatialFormat, item.RegionDataType, item.RegionFlags = r.spatial_format, r.data_type, 0
    item.RegionLocationMinX0, item.RegionLocationMinY0 = r.box.x0, r.box.y0
    item.RegionLocationMaxX1, item.RegionLocationMaxY1 = r.box.x1 - 1, r.box.y1 - 1
    if r.mm_per_pixel is not None:
        item.PhysicalUnitsXDirection = item.PhysicalUnitsYDirection = UNITS_CM
        item.PhysicalDeltaX, item.PhysicalDeltaY = (v / 10.0 for v in r.mm_per_pixel)
    return item


def _jpeg_baseline(ds, frames: np.ndarray, colour: bool) -> None:
    """Pixel data as JPEG baseline fragments (one per frame): YBR_FULL_422 for colour."""
    from PIL import Image  # noqa: PLC0415
    from pydicom.encaps import encapsulate  # noqa: PLC0415
    from pydicom.uid import JPEGBaseline8Bit  # noqa: PLC0415

    if frames.dtype != np.uint8:
        raise ValueError("JPEG baseline holds 8-bit images only")
    encoded = []
    for frame in frames:
        buf = io.BytesIO()
        Image.fromarray(frame).save(buf, format="JPEG", quality=95, subsampling=1 if colour else 0)
        encoded.append(buf.getvalue())
    ds.PixelData = encapsulate(encoded)
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    if colour:
        ds.PhotometricInterpretation = "YBR_FULL_422"
    ds.LossyImageCompression = "01"
    ds.LossyImageCompressionMethod = "ISO_10918_1"


def write_dataset(ds, path: Path) -> None:
    """Writes ``ds`` as a DICOM Part 10 file (preamble, file meta); the writers that call it
    fill an :func:`lnm_jax.fileio.atomic_directory`, so no half-written cohort is left."""
    ds.save_as(path, enforce_file_format=True)
