"""One image cell of a manifest, resolved: which file, which frames, which pixels (the scan
region), at what physical scale and frame timing. The decoder (:mod:`lnm_jax.data.pixels.decode`)
and ``validate`` both start from :func:`resolve`, so what validation reports is what training
reads.

The pixels a model sees are the 2-D tissue region of the scanner's screen, not the screen:
a DICOM file's ``SequenceOfUltrasoundRegions`` gives it (for a CEUS dual display, the contrast
side; the low-MI B-mode reference side stays available as ``reference``); a manifest's
``<input>_crop`` column gives it for PNG/JPEG and overrides the header. Banners, depth
scales, colour bars and anything drawn outside the region never reach the model.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
from PIL import UnidentifiedImageError

from lnm_jax.data.pixels import clips, dicom
from lnm_jax.data.pixels.decode import ImageDecodeError, exif_orientation, fit, image_size, over_channels, read_image
from lnm_jax.data.pixels.dicom import Box, DicomError, DicomHeader
from lnm_jax.names import BMODE, CEUS, CEUS_REGIONS

CEUS_REGION_CHOICES = CEUS_REGIONS
# how an image's pixels were chosen (Source.framed_by)
CROP_COLUMN, SCAN_REGION, WHOLE_FRAME = "crop column", "scan region", "whole frame"
# 'auto' takes the dual display's contrast side as the region with the most colour (contrast
# maps are tinted, the B-mode reference is gray) when their mean chroma differs by this much
# (on [0, 1] RGB); closer than that it cannot tell and says how to choose.
CHROMA_MARGIN = 0.03
# frames/s an ultrasound clip can have been recorded at: from a frame every 10 s (a time-lapse
# export) to plane-wave ultrafast imaging (about 10,000/s). A rate outside is a unit or typing
# slip (a frame interval in seconds, a rate in frames/min): refused in a ``ceus_frame_rate``
# cell; a video container that declares one is read without timing, with a note.
FRAME_RATE_RANGE = (0.1, 10_000.0)
_RATE_RANGE = f"{FRAME_RATE_RANGE[0]:g}-{FRAME_RATE_RANGE[1]:,.0f} frames/s"


def check_ceus_region(side: str) -> None:
    """ValueError unless ``side`` is a ``data.ceus_region`` (:data:`CEUS_REGION_CHOICES`)."""
    if side not in CEUS_REGION_CHOICES:
        raise ValueError(f"data.ceus_region must be one of {CEUS_REGION_CHOICES}, got {side!r}")


@dataclasses.dataclass(frozen=True)
class Framing:
    """How every image of a run is framed (``data.field_of_view_mm``, ``data.ceus_region``):
    recorded with a model, so that prediction frames new images as training did."""

    field_of_view_mm: float = 0.0  # 0: the crop resized to the square; > 0: a fixed mm/pixel
    ceus_region: str = "auto"  # a CEUS dual display's contrast side: auto | left | right
    accept_secondary_capture: bool = False  # DICOM screen captures (SC storage) as images

    def __post_init__(self):  # one line before any file is read, not one per DICOM file
        check_ceus_region(self.ceus_region)

    @classmethod
    def from_config(cls, data) -> Framing:
        return cls(
            float(data.get("field_of_view_mm", 0.0)),
            str(data.get("ceus_region", "auto")),
            bool(data.get("accept_secondary_capture", False)),
        )


DEFAULT_FRAMING = Framing()


@dataclasses.dataclass(frozen=True)
class ImageOptions:
    """What a manifest's optional columns say about one image: ``<input>_crop`` (x0,y0,x1,y1
    in pixels, right/bottom exclusive), ``<input>_mm_per_pixel``, for a multi-frame B-mode
    ``bmode_frame`` (0-based) and, for a CEUS clip given as a folder of frames (which holds no
    timing of its own), ``ceus_frame_rate`` (frames per second)."""

    crop: Box | None = None
    mm_per_pixel: float | None = None
    frame: int | None = None
    frame_rate: float | None = None


NO_OPTIONS = ImageOptions()


def option_columns(name: str) -> dict[str, str]:
    """The manifest's option columns of input ``name``: option field -> column name."""
    cols = {"crop": f"{name}_crop", "mm_per_pixel": f"{name}_mm_per_pixel"}
    if name == BMODE:
        cols["frame"] = f"{name}_frame"
    if name == CEUS:
        cols["frame_rate"] = f"{name}_frame_rate"
    return cols


def parse_box(text: str) -> Box:
    """'x0,y0,x1,y1' (commas or spaces) -> :class:`Box`; ValueError saying what is wrong."""
    parts = [p for p in re.split(r"[,\s]+", text.strip()) if p]
    try:
        x0, y0, x1, y1 = (int(p) for p in parts)
    except ValueError:
        raise ValueError(f"crop must be four integers x0,y0,x1,y1, got {text!r}") from None
    if x0 < 0 or y0 < 0 or x1 <= x0 or y1 <= y0:
        raise ValueError(f"crop {text!r} is not a box: need 0 <= x0 < x1 and 0 <= y0 < y1")
    return Box(x0, y0, x1, y1)


class OptionError(ValueError):
    """A bad value in a framing column; ``column`` names it."""

    def __init__(self, column: str, message: str):
        self.column = column
        super().__init__(message)


class ImageOptionError(OptionError):
    """A framing column's value that its file cannot take: a crop beyond the frames, a frame
    the file lacks, a frame rate for a file with timing of its own (or none), a spacing that
    disagrees with a DICOM file's calibration. ``column`` names the option's column; the
    message starts with the file."""


class ImageOptionErrors(ImageOptionError):
    """More than one framing column of one image that its file cannot take: ``errors``, an
    :class:`ImageOptionError` each (``column`` is the first's)."""

    def __init__(self, errors: list[ImageOptionError]):
        self.errors = tuple(errors)
        super().__init__(errors[0].column, "; ".join(str(e) for e in errors))


class OptionErrors(ValueError):
    """Every bad framing cell of one input in a row: ``errors``, an :class:`OptionError` each;
    ``options``: the row's well-formed cells, to be checked against the file all the same."""

    def __init__(self, errors: list[OptionError], options: ImageOptions | None = None):
        self.errors, self.options = tuple(errors), options or ImageOptions()
        super().__init__("; ".join(f"{e.column}: {e}" for e in errors))


def parse_options(name: str, cells: dict[str, str]) -> ImageOptions:
    """The options of input ``name`` from a manifest row's cells; :class:`OptionErrors` naming
    every bad cell's column (one bad cell does not hide another)."""
    cols, out, errors = option_columns(name), {}, []
    for field, col in cols.items():
        text = (cells.get(col) or "").strip()
        if not text:
            continue
        try:
            if field == "crop":
                out[field] = parse_box(text)
            elif field in ("mm_per_pixel", "frame_rate"):
                what = "mm per pixel" if field == "mm_per_pixel" else "frame rate (frames/s)"
                try:
                    out[field] = float(text)
                except ValueError:
                    out[field] = float("nan")  # not a number: said below
                if not 0 < out[field] < float("inf"):
                    raise ValueError(f"{what} must be a finite number > 0, got {text!r}")
                if field == "frame_rate" and not FRAME_RATE_RANGE[0] <= out[field] <= FRAME_RATE_RANGE[1]:
                    raise ValueError(
                        f"{what} {text} is outside {_RATE_RANGE}, the rates an ultrasound clip is recorded at: "
                        "a frame interval, or another unit?"
                    )
            else:
                out[field] = int(text) if re.fullmatch(r"[+-]?\d+", text) else -1  # not an integer: said below
                if out[field] < 0:
                    raise ValueError(f"frame must be an integer >= 0, got {text!r}")
        except ValueError as e:
            errors.append(OptionError(col, str(e)))
    if errors:
        bad = {e.column for e in errors}
        raise OptionErrors(errors, ImageOptions(**{f: v for f, v in out.items() if cols[f] not in bad}))
    return ImageOptions(**out)


@dataclasses.dataclass(frozen=True)
class Source:
    """A resolved image cell. ``box``: the pixels used; ``mm_per_pixel``: (x, y) or None;
    ``frames``: frames in the file (1 for a still; a video's declared count, which
    :func:`read_clip` does not trust: it counts what decodes); ``frame_times_s``: when the file says
    (a DICOM cine); ``frame_rate``: a video's declared frames/s, or a frame folder's
    ``ceus_frame_rate`` (its frames are evenly timed); ``header``: a DICOM file's; ``notes``:
    what ``validate`` should tell the user."""

    path: Path
    kind: str  # 'image' | 'dicom' | 'clip' (video or frame folder)
    width: int
    height: int
    box: Box
    mm_per_pixel: tuple[float, float] | None
    frames: int
    frame_times_s: tuple[float, ...] | None = None
    frame_rate: float | None = None
    header: DicomHeader | None = None
    reference: Box | None = None  # a CEUS dual display's B-mode side
    still_frame: int | None = 0  # the frame a still is read from; None: a clip's peak frame
    framed_by: str = WHOLE_FRAME  # CROP_COLUMN | SCAN_REGION | WHOLE_FRAME
    notes: tuple[str, ...] = ()

    @property
    def duration_s(self) -> float | None:
        """Seconds from the first frame to the last, where the file says (None otherwise)."""
        if self.frame_times_s:
            return self.frame_times_s[-1]
        return (self.frames - 1) / self.frame_rate if self.frame_rate and self.frames > 0 else None


def resolve(path: Path, name: str, options: ImageOptions = NO_OPTIONS, ceus_region: str = "auto") -> Source:
    """The :class:`Source` of input ``name`` (bmode/ceus) at ``path``; DicomError, ClipError or
    ValueError naming the file when it cannot be used."""
    path, notes = Path(path), ()
    check_ceus_region(ceus_region)
    if dicom.is_dicom(path):
        return _resolve_dicom(path, name, options, ceus_region)
    if clips.is_clip(path) and path.is_dir():  # a frame folder: its first frame's size
        files = clips.frame_files(path)
        if not files:
            raise clips.ClipError(f"{path}: folder holds no {'/'.join(clips.FRAME_SUFFIXES)} frames")
        (w, h), n, kind, rate = image_size(files[0]), len(files), "clip", options.frame_rate
        box = _check_options(path, name, options, w, h, frames=None, timed=None, held="the clip's {} frames")
    elif clips.is_clip(path):  # a video: what its container declares (frames are streamed)
        info = clips.video_info(path)
        (w, h), n, kind, rate = info.size, info.declared_frames or 0, "clip", info.fps
        timed = "a video, which declares its own timing"
        box = _check_options(path, name, options, w, h, frames=None, timed=timed, held="the clip's {} frames")
        notes = (held,) if (held := info.hold_note()) else ()
        if rate is not None and not FRAME_RATE_RANGE[0] <= rate <= FRAME_RATE_RANGE[1]:
            notes += (f"the video declares {rate:g} frames/s, outside {_RATE_RANGE}: its timing is not used",)
            rate = None
    else:
        (w, h), n, kind, rate = image_size(path), 1, "image", None
        box = _check_options(path, name, options, w, h, frames=1, timed="a still image", held="the {} image")
    spacing = (options.mm_per_pixel,) * 2 if options.mm_per_pixel else None
    return Source(
        path,
        kind,
        w,
        h,
        box,
        spacing,
        n,
        frame_rate=rate,
        still_frame=None if kind == "clip" else 0,
        framed_by=CROP_COLUMN if options.crop else WHOLE_FRAME,
        notes=notes,
    )


def _check_options(
    path: Path, name: str, options: ImageOptions, w: int, h: int, *, frames: int | None, timed: str | None, held: str
) -> Box:
    """The crop column's box (or the whole ``w`` x ``h`` frame), every framing option checked
    against the file first: ``frames`` (None where no frame option applies), ``timed`` (what
    the file is, where a frame rate column does not apply to it; None where it does), ``held``
    (its pixels, for :func:`_option_box`). Every option the file cannot take is raised at once:
    one :class:`ImageOptionError`, or :class:`ImageOptionErrors` (one did hide another)."""
    errors = []

    def attempt(check, *args):
        try:
            return check(path, name, options, *args)
        except ImageOptionError as e:
            errors.append(e)

    if frames is not None:
        attempt(_check_frame_option, frames)
    if timed is not None:
        attempt(_check_frame_rate_option, timed)
    box = attempt(_option_box, w, h, held)
    _raise_all(errors)
    return box


def _raise_all(errors: list[ImageOptionError]) -> None:
    """Raises the framing options' errors found, if any: one as itself, more as one
    :class:`ImageOptionErrors`."""
    if len(errors) > 1:
        raise ImageOptionErrors(errors)
    if errors:
        raise errors[0]


def _check_frame_option(path: Path, name: str, options: ImageOptions, frames: int) -> None:
    """:class:`ImageOptionError` when ``bmode_frame`` asks for a frame the file does not have (a still's
    frame 7 had been read as its one frame in silence; a cine's was refused)."""
    if options.frame is not None and options.frame >= frames:
        held = "is a still (one frame)" if frames == 1 else f"has {frames} frames, 0-{frames - 1} (counted from 0)"
        column = option_columns(name)["frame"]
        raise ImageOptionError(column, f"{path}: {column} {options.frame} asked for, the file {held}")


def _check_frame_rate_option(path: Path, name: str, options: ImageOptions, held: str) -> None:
    """:class:`ImageOptionError` when ``ceus_frame_rate`` is given for a file that is not a folder of frames
    (``held``: what it is; a video's or a DICOM cine's own timing is the one read)."""
    if options.frame_rate is not None:
        column = option_columns(name)["frame_rate"]
        raise ImageOptionError(
            column,
            f"{path}: {column} {options.frame_rate:g} given for {held}; "
            "the column is for a CEUS clip given as a folder of frames",
        )


def _option_box(path: Path, name: str, options: ImageOptions, w: int, h: int, held: str) -> Box:
    """The crop column's box, or the whole ``w`` x ``h`` frame; :class:`ImageOptionError` when the
    crop exceeds it (``held``: what the pixels are, with ``{}`` for their size: "the {} image")."""
    if options.crop is None:
        return Box(0, 0, w, h)
    if options.crop.x1 > w or options.crop.y1 > h:
        column = option_columns(name)["crop"]
        turned = ""  # (helper-121: said without a hint, where a mask has one)
        if options.crop.x1 <= h and options.crop.y1 <= w and _turned_still(path):
            turned = (
                f"; the file's EXIF orientation shows it turned 90 degrees ({w}x{h}, stored {h}x{w}), and a crop is "
                "read in the picture as shown: this one fits the stored picture, give it as the image is shown"
            )
        raise ImageOptionError(column, f"{path}: {column} {options.crop} exceeds {held.format(f'{w}x{h}')}{turned}")
    return options.crop


def _turned_still(path: Path) -> bool:
    """Whether ``path`` is a PNG or JPEG still whose EXIF orientation turns it a quarter (5-8)."""
    try:
        return path.is_file() and path.suffix.lower() in clips.FRAME_SUFFIXES and exif_orientation(path) in (5, 6, 7, 8)
    except (OSError, ValueError):
        return False


def _resolve_dicom(path: Path, name: str, options: ImageOptions, ceus_region: str) -> Source:
    header = dicom.read_header(path)
    if header.signed:
        raise DicomError(f"{path}: signed pixel data (PixelRepresentation 1) is not ultrasound; not supported")
    w, h, notes = header.columns, header.rows, []
    timed = "a DICOM cine, which states its own timing" if header.frames > 1 else "a still image (one frame)"
    held = "the cine's {} frames" if header.frames > 1 else "the {} image"
    try:  # raised with the spacing's disagreement below, if any
        cropped, errors = _check_options(path, name, options, w, h, frames=header.frames, timed=timed, held=held), []
    except ImageOptionError as e:
        cropped, errors = Box(0, 0, w, h), list(getattr(e, "errors", (e,)))
        options = dataclasses.replace(options, frame=None)  # (the frame read for a note below)
    if name == BMODE and header.frames > 1:
        frame = header.frames // 2 if options.frame is None else options.frame
        notes.append(f"multi-frame B-mode: frame {frame} of {header.frames} used")
    else:
        frame = 0 if header.frames == 1 else None
    reference, framed_by = None, SCAN_REGION
    if options.crop is not None:
        box, framed_by = cropped, CROP_COLUMN
        # the spacing of the tissue region the crop lies in, if any
        spacing = next((r.mm_per_pixel for r in tissue_regions(header)[0] if r.box.contains(box)), None)
    else:
        regions, clamped = tissue_regions(header)
        notes += clamped
        if not regions:
            box, spacing, framed_by = Box(0, 0, w, h), None, WHOLE_FRAME
            notes.append("no 2-D tissue region in the header: the whole frame is used")
        elif len(regions) == 1:
            box, spacing = regions[0].box, regions[0].mm_per_pixel
        elif name == CEUS:
            chosen = _contrast_side(header, regions, ceus_region, frame)
            box, spacing = regions[chosen].box, regions[chosen].mm_per_pixel
            reference = next(r.box for i, r in enumerate(regions) if i != chosen)
        else:
            box, spacing = regions[0].box, regions[0].mm_per_pixel
            notes.append(f"{len(regions)} tissue regions: the left one used (set {name}_crop to choose)")
    if spacing is not None and header.pixel_spacing and not np.allclose(spacing, header.pixel_spacing, rtol=0.01):
        # two calibrations in one header: the region's is the scan's (PS3.3 C.8.5.5); said, not
        # settled in silence (helper-57: PixelSpacing 0.5 mm beside a region's 0.1 mm, unsaid)
        (sx, sy), (px, py) = spacing, header.pixel_spacing
        notes.append(
            f"PixelSpacing {px:g} x {py:g} mm per pixel disagrees with its ultrasound region's {sx:g} x {sy:g}: the "
            "region's is used"
        )
    if header.pixel_aspect is not None:  # (helper-59: unsaid)
        v, h = header.pixel_aspect
        notes.append(
            f"PixelAspectRatio {v:g}:{h:g}: its pixels are not square, and a DICOM viewer shows the picture stretched "
            f"{v / h:.3g} times as tall as stored; it is read as stored, and a crop box counts stored pixels"
        )
    if header.timing_note:
        notes.append(header.timing_note)
    if header.codestream_colour is not None:
        space, by = header.codestream_colour
        notes.append(
            f"PhotometricInterpretation {header.photometric}, but its JPEG codestream says {space} ({by}): readers "
            "differ on which they follow, so its colours may show otherwise elsewhere; it is read as pydicom decodes "
            "it (by the codestream's JFIF marker or R, G, B identifiers)"
        )
    if options.mm_per_pixel:
        # the manifest's spacing against the file's own calibration (its ultrasound region's
        # PhysicalDeltaX/Y): a disagreement had been settled for the cell in silence
        if spacing is not None and not np.allclose(spacing, options.mm_per_pixel, rtol=0.01):
            column = option_columns(name)["mm_per_pixel"]
            errors.append(
                ImageOptionError(
                    column,
                    f"{path}: the manifest's {column} {options.mm_per_pixel:g} disagrees with the file's "
                    f"calibrated spacing, {spacing[0]:g} x {spacing[1]:g} mm per pixel (its ultrasound region); "
                    "leave the cell empty to use the file's",
                )
            )
        spacing = (options.mm_per_pixel,) * 2
    _raise_all(errors)
    return Source(
        path,
        "dicom",
        w,
        h,
        box,
        spacing,
        header.frames,
        frame_times_s=header.frame_times_s,
        header=header,
        reference=reference,
        still_frame=frame,
        framed_by=framed_by,
        notes=tuple(notes),
    )


def tissue_regions(header: DicomHeader) -> tuple[list[dicom.ScanRegion], list[str]]:
    """The header's 2-D tissue regions, left to right, clamped to the image (a region inside
    another, e.g. a colour-flow box, is dropped), and notes on any that had to be clamped."""
    notes, kept = [], []
    found = [r for r in header.regions if r.is_tissue_2d]
    for r in found:
        if any(o is not r and o.box.contains(r.box) and o.box != r.box for o in found):
            continue
        box = r.box.clamp(header.columns, header.rows)
        if box.width <= 0 or box.height <= 0:
            size = f"{header.columns}x{header.rows}"
            raise DicomError(f"{header.path}: scan region {r.box} lies outside the {size} image")
        if box != r.box:
            notes.append(f"scan region {r.box} exceeds the {header.columns}x{header.rows} image: clamped to {box}")
        kept.append(dataclasses.replace(r, box=box))
    return sorted(kept, key=lambda r: r.box.x0), notes


def chroma(image: np.ndarray) -> float:
    """Mean colour saturation of [0, 1] RGB pixels: mean (max - min) over channels."""
    return float((over_channels(np.maximum, image) - over_channels(np.minimum, image)).mean())


def _contrast_side(header: DicomHeader, regions, ceus_region: str, frame: int) -> int:
    """Index of the contrast image among a dual display's regions."""
    if ceus_region == "left":
        return 0
    if ceus_region == "right":
        return len(regions) - 1
    sample = dicom.read_frame(header, header.frames // 2 if frame is None else frame)
    scores = [chroma(crop(sample, r.box)) for r in regions]
    order = np.argsort(scores)[::-1]
    if scores[order[0]] - scores[order[1]] < CHROMA_MARGIN:
        raise DicomError(
            f"{header.path}: {len(regions)} tissue regions of similar colour (chroma "
            + ", ".join(f"{s:.3f}" for s in scores)
            + "): cannot tell the contrast side; set data.ceus_region to 'left' or 'right' "
            + f"({dicom.where_set('ceus_region', 'left', '--ceus-region left')}), or a ceus_crop column"
        )
    return int(order[0])


def crop(image: np.ndarray, box: Box) -> np.ndarray:
    """The box's pixels of an [H, W, C] (or [T, H, W, C]) image."""
    return image[..., box.y0 : box.y1, box.x0 : box.x1, :]


def read_still(source: Source) -> np.ndarray:
    """The source's still (a clip's peak frame) as float32 [h, w, 3] in [0, 1], cropped."""
    if source.kind == "dicom" and source.still_frame is not None:
        return crop(dicom.read_frame(source.header, source.still_frame), source.box)
    if source.kind in ("dicom", "clip"):
        return read_clip(source, 1)[0]
    return crop(read_image(source.path), source.box)


def clip_frame_indices(source: Source, t: int) -> tuple[np.ndarray, int]:
    """(the indices of the T frames :func:`read_clip` reads of a clip, 0-based; the frames that
    decode): one pass over the clip for its time-intensity curve over the framed box
    (:func:`lnm_jax.data.pixels.clips.sample_indices`). ClipError naming the file when it has
    fewer than T frames."""
    frames = dicom.iter_frames(source.header) if source.kind == "dicom" else clips.iter_frames(source.path)
    curve = np.array([crop(f, source.box).mean(dtype=np.float64) for f in frames])
    clips.check_length(source.path, len(curve), t)
    return clips.sample_indices(curve, t, source.frame_times_s), len(curve)


def clip_frame(source: Source) -> tuple[int, int] | None:
    """(the 0-based index of the frame the model reads of a clip at clip_frames 1, its
    peak-enhancement frame; the clip's frames), or None for a still image (or a DICOM file read
    as one frame): what a heatmap of that input shows and its lesion mask is compared on."""
    if source.still_frame is not None or source.kind not in ("clip", "dicom"):
        return None
    idx, count = clip_frame_indices(source, 1)
    return int(idx[0]), count


def picture_region(source: Source, size: int, framing: Framing = DEFAULT_FRAMING) -> np.ndarray | None:
    """float32 [S, S] in [0, 1]: each model pixel's share of the picture of ``source``, framed as
    its image is (the rest is the zero padding of ``data.field_of_view_mm``); None without a field
    of view (the picture fills the square)."""
    if not framing.field_of_view_mm:
        return None
    ones = np.ones((source.box.height, source.box.width, 1), np.float32)
    return fit(ones, size, source.mm_per_pixel, framing.field_of_view_mm)[..., 0]


def read_clip(source: Source, t: int) -> np.ndarray:
    """T frames sampled over the enhancement phase (the peak frame for T = 1), cropped, float32
    [T, h, w, 3]. Every clip (DICOM cine, video, frame folder) streams: one pass for the
    time-intensity curve (and the count of frames that decode), then only the T chosen frames
    are decoded again."""
    cine = source.kind == "dicom"
    idx, _ = clip_frame_indices(source, t)
    if cine:
        return np.stack([crop(dicom.read_frame(source.header, int(i)), source.box) for i in idx])
    return crop(clips.read_frames(source.path, idx), source.box)


def decode_input(
    path: Path,
    name: str,
    *,
    size: int,
    patient_id: str,
    clip_frames: int = 1,
    options: ImageOptions = NO_OPTIONS,
    framing: Framing = DEFAULT_FRAMING,
) -> np.ndarray:
    """Input ``name``'s image of one patient as the model sees it: [size, size, 3] (a CEUS
    clip or still with ``clip_frames`` > 1: [T, size, size, 3], a still repeated), cropped to the
    scan region and framed per ``framing``. :class:`ImageDecodeError` names the patient and
    the file."""
    try:
        source = resolve(path, name, options, framing.ceus_region)
        if name == CEUS and source.still_frame is None:
            frames = read_clip(source, clip_frames)
            out = np.stack([fit(f, size, source.mm_per_pixel, framing.field_of_view_mm) for f in frames])
            return out[0] if clip_frames == 1 else out
        img = fit(read_still(source), size, source.mm_per_pixel, framing.field_of_view_mm)
    except (OSError, UnidentifiedImageError, ValueError) as e:
        first = (str(e).strip().splitlines() or [""])[0]
        raise ImageDecodeError(f"patient {patient_id}: {path}: cannot decode this image ({first})") from e
    return img if name != CEUS or clip_frames == 1 else np.repeat(img[None], clip_frames, axis=0)
