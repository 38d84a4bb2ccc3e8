"""What a cohort's image files are, for ``validate`` and the run record: formats, transfer
syntaxes, how each image is framed (scan region, crop column, whole frame), its physical
spacing, clip lengths in frames and seconds, identifying information in DICOM headers, and
images that look like whole screen captures with nothing to crop them to.

Nothing here prints a header value: PHI is reported by attribute name and file count only.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Iterator

import numpy as np
from scipy import ndimage

from lnm_jax.data.cohorts.manifest import Cohort, Patient
from lnm_jax.data.pixels import sources
from lnm_jax.data.pixels.clips import read_frames
from lnm_jax.data.pixels.decode import over_channels, read_image, still_format
from lnm_jax.data.pixels.dicom import Box
from lnm_jax.data.pixels.masks import frame_mask
from lnm_jax.fileio import content_digest
from lnm_jax.names import IMAGE_INPUTS, PATIENT_ID
from lnm_jax.names import mask as mask_column

# Screen-capture test: a frame whose content (the largest region whose 5x5 local mean is above DARK) covers
# less than CONTENT_FRACTION of it, with bright marks (text, scales: > BRIGHT) in the dark
# surround. A cropped ultrasound image is speckle to its edges.
DARK, BRIGHT, CONTENT_FRACTION, MIN_MARKS = 0.04, 0.6, 0.9, 20
# A framed picture whose shorter side is under 1/MAX_UPSCALE of the model's input side is too small
# to be a scan (a thumbnail or an icon exported, a crop in other units): its pixels would be
# stretched more than this many times over
MAX_UPSCALE = 8
# A framed picture longer than this many times its other side is stretched that far out of shape
# by the paper's resize to a square (data.field_of_view_mm 0): a strip, not a scan (helper-121: a
# 4000x40 picture and 1x500 and 500x1 ones had been trained on unsaid)
MAX_ASPECT = 3

GEOMETRY_COLUMNS = (
    PATIENT_ID,
    "input",
    "format",
    "framing",
    "box",
    "reference_box",
    "mm_per_pixel_x",
    "mm_per_pixel_y",
    "frames",
    "duration_s",
    "sha256",  # the file's (a frame folder's: its files') content, checked by relocate
)


def screen_capture_box(img: np.ndarray) -> Box | None:
    """The content box of ``img`` ([H, W, 3] in [0, 1]) when it looks like a screen capture (a
    dark surround with text or scale marks), None when it looks like an image cropped to the
    scan region. The content is the largest lit region (5x5 local mean at least :data:`DARK`;
    speckle has dark pixels everywhere, its local mean does not), its bounding box: a screen's
    bar or banner, text and scales are regions of their own (helper-54's trial: a full-width grey
    bar had been taken for the content, as the longest run of mostly lit rows, over a picture
    half the screen wide)."""
    gray = over_channels(np.add, img) / np.float32(img.shape[-1])
    lit = ndimage.uniform_filter(gray, size=5, mode="constant") >= DARK
    regions, count = ndimage.label(lit)
    if count == 0:
        return None
    largest = int(np.argmax(np.bincount(regions.ravel())[1:])) + 1
    rows, cols = ndimage.find_objects(regions)[largest - 1]
    box = Box(cols.start, rows.start, cols.stop, rows.stop)
    if box.width * box.height >= CONTENT_FRACTION * gray.size:
        return None
    outside = np.ones_like(lit)
    outside[box.y0 : box.y1, box.x0 : box.x1] = False
    if (~lit[outside]).mean() < 0.5 or (gray[outside] > BRIGHT).sum() < MIN_MARKS:
        return None
    return box


@dataclasses.dataclass
class Survey:
    """Everything ``validate`` says about a cohort's images; ``problems`` make the cohort
    unusable with the given framing."""

    lines: list[str]
    problems: list[str]
    geometry: list[dict]

    @property
    def warnings(self) -> list[str]:
        """The warnings among :attr:`lines`, without their ``warning:`` prefix (pictures too
        small for the model's input, strips, screen captures), for a command that says them
        without the rest (``train``: helper-121, a run started without ``validate`` had heard of
        none)."""
        return [x.strip().removeprefix("warning: ") for x in self.lines if x.strip().startswith("warning: ")]


def _cells(cohort: Cohort) -> Iterator[tuple[Patient, str]]:
    for p in cohort.patients:
        for name in IMAGE_INPUTS:
            if getattr(p, name) is not None:
                yield p, name


def _still_format(path, where: str, notes: dict[str, list[str]]) -> str:
    """A still's format by its content (:func:`lnm_jax.data.pixels.decode.still_format`), for
    the survey's count; one named otherwise (a JPEG saved under ``.png``: lossy, where the name
    says lossless; helper-123 found 80 counted as PNG) noted in ``notes``."""
    named = path.suffix.lower().lstrip(".")
    fmt = still_format(path) or named
    if fmt != named and not (fmt == "jpeg" and named == "jpg"):
        notes[f"{fmt.upper()} named .{named}"].append(where)
    return fmt


def survey(
    cohort: Cohort,
    framing: sources.Framing = sources.DEFAULT_FRAMING,
    *,
    screens: bool = True,
    image_size: int | None = None,
    masks: bool = False,
) -> Survey:
    """Resolves every image of ``cohort`` as training will (``screens``: also decode PNG/JPEG
    and unframed DICOM frames to look for whole screen captures; ``image_size``: the model's
    input side in pixels, to warn of pictures too small for it, :data:`MAX_UPSCALE`;
    ``masks``: the lesion masks are training targets, a geometry row each (input
    ``<input>_mask``, its ``sha256``), so that one changed since is named as an image is)."""
    formats, syntaxes, photometric, framings = (collections.Counter() for _ in range(4))
    notes: dict[str, list[str]] = collections.defaultdict(list)
    phi_files, phi_keys, burned, no_spacing, captures = 0, collections.Counter(), 0, [], []
    spacings, clip_frames, clip_seconds, untimed, uncounted, geometry = [], [], [], 0, 0, []
    small: list[tuple[int, str]] = []  # (the framed picture's shorter side, where)
    strips: list[tuple[float, str]] = []  # (the framed picture's longer side over its shorter, where)
    cut: list[str] = []  # masks whose lesion data.field_of_view_mm's square leaves out
    for p, name in _cells(cohort):
        path = getattr(p, name)
        src = sources.resolve(path, name, p.image_options(name), framing.ceus_region)
        where = f"row {p.row} ({p.patient_id}) {name} {path.name}"
        fmt = "DICOM" if src.kind == "dicom" else ("clip" if src.kind == "clip" else _still_format(path, where, notes))
        formats[fmt] += 1
        how = src.framed_by
        framings[how] += 1
        if src.header is not None:
            syntaxes[src.header.transfer_syntax.split(" (")[0]] += 1
            photometric[src.header.photometric] += 1
            if src.header.phi:
                phi_files += 1
                phi_keys.update(src.header.phi)
            burned += src.header.burned_in_annotation == "YES"
        for n in src.notes:
            notes[n.split(":")[0]].append(f"{where}: {n}")
        if src.mm_per_pixel:
            spacings.append(src.mm_per_pixel)
        else:
            no_spacing.append(where)
        if src.still_frame is None:  # a clip: a video, a frame folder, a DICOM cine
            if src.frames:
                clip_frames.append(src.frames)
            else:  # a video whose container declares no length: what decodes is counted when it is read
                uncounted += 1
            if src.duration_s is not None:
                clip_seconds.append(src.duration_s)
            else:
                untimed += 1
        if image_size and (side := min(src.box.width, src.box.height)) * MAX_UPSCALE < image_size:
            small.append((side, f"{where}, {src.box.width}x{src.box.height} pixels"))
        long = max(src.box.width, src.box.height) / max(min(src.box.width, src.box.height), 1)
        if not framing.field_of_view_mm and long > MAX_ASPECT:
            strips.append((long, f"{where}, {src.box.width}x{src.box.height} pixels"))
        fov = framing.field_of_view_mm
        if (
            fov
            and image_size
            and src.mm_per_pixel
            and (m := p.mask(name)) is not None
            and not _kept(m, src, image_size, framing)
        ):
            cut.append(f"{where}, mask {m.name}")
        if screens and how == sources.WHOLE_FRAME:
            hint = screen_capture_box(sources.read_still(src) if src.kind == "dicom" else _first(src))
            if hint is not None:
                captures.append(f"{where} (content at about {hint})")
        geometry.append(
            {
                PATIENT_ID: p.patient_id,
                "input": name,
                "format": fmt,
                "framing": how,
                "box": str(src.box),
                "reference_box": str(src.reference) if src.reference else "",
                "mm_per_pixel_x": f"{src.mm_per_pixel[0]:.6g}" if src.mm_per_pixel else "",
                "mm_per_pixel_y": f"{src.mm_per_pixel[1]:.6g}" if src.mm_per_pixel else "",
                "frames": src.frames,
                "duration_s": f"{src.duration_s:.6g}" if src.duration_s is not None else "",
                "sha256": content_digest(path),
            }
        )
        if masks and (m := p.mask(name)) is not None:
            geometry.append(
                {PATIENT_ID: p.patient_id, "input": mask_column(name), "format": "mask", "sha256": content_digest(m)}
            )
    lines = ["images: " + ", ".join(f"{k} {v}" for k, v in sorted(formats.items()))]
    if syntaxes:
        lines.append("  DICOM transfer syntaxes: " + ", ".join(f"{k} {v}" for k, v in syntaxes.most_common()))
        lines.append("  DICOM photometric: " + ", ".join(f"{k} {v}" for k, v in photometric.most_common()))
    lines.append("  framing: " + ", ".join(f"{k} {v}" for k, v in framings.most_common()))
    if spacings:
        mm = np.array(spacings)
        lines.append(
            f"  physical spacing: {len(spacings)} images, {mm.min():.4g}-{mm.max():.4g} mm/pixel"
            + (
                f" (data.field_of_view_mm={framing.field_of_view_mm:g}: each resampled so that the input's side "
                f"spans {framing.field_of_view_mm:g} mm)"
                if framing.field_of_view_mm
                else ""
            )
        )
    if clip_frames or uncounted:
        lines.append(
            f"  CEUS clips: {len(clip_frames) + uncounted}"
            + (f", {min(clip_frames)}-{max(clip_frames)} frames" if clip_frames else "")
            + (f" ({uncounted} video(s) declaring no frame count)" if uncounted else "")
            + (f", {min(clip_seconds):.3g}-{max(clip_seconds):.3g} s first to last frame" if clip_seconds else "")
            + (f"; {untimed} without frame timing (sampled in frames)" if untimed else "")
        )
    for kind, items in notes.items():
        lines.append(f"  note: {kind}: {len(items)} image(s), e.g. {items[0]}")
    if phi_files or burned:
        lines.append(
            f"  PHI: {phi_files} DICOM file(s) carry identifying header attributes ("
            + ", ".join(k for k, _ in phi_keys.most_common())
            + f"); {burned} declare BurnedInAnnotation=YES. Before sharing, run lnm-jax deidentify"
        )
    if captures:
        lines.append(
            f"  warning: {len(captures)} image(s) look like whole screen captures (dark surround with text or "
            f"marks) and have no crop: add a <input>_crop column (x0,y0,x1,y1); e.g. {captures[0]}"
        )
    if small:
        lines.append(
            f"  warning: {len(small)} image(s) are framed smaller than 1/{MAX_UPSCALE} of the model's "
            f"{image_size}-pixel input (each stretched over {MAX_UPSCALE}x): too small to be a scan (a thumbnail or "
            f"icon exported, a crop in other units?); the smallest: {min(small)[1]}"
        )
    if strips:
        widest = max(strips)
        lines.append(
            f"  warning: {len(strips)} image(s) are framed with one side over {MAX_ASPECT} times the other, each "
            f"stretched to the model's square input that far out of shape (data.field_of_view_mm 0): a strip, not a "
            f"scan (a crop in other units?); the most: {widest[0]:.0f}:1, {widest[1]}"
        )
    problems = []
    if framing.field_of_view_mm and no_spacing:
        problems.append(
            f"data.field_of_view_mm={framing.field_of_view_mm:g} needs every image's spacing; {len(no_spacing)} have "
            f"none (a DICOM region in cm, or a <input>_mm_per_pixel column), e.g. {no_spacing[0]}"
        )
    if cut:  # (a mask outside its framed box is the manifest check's mask_empty)
        problems.append(
            f"data.field_of_view_mm={framing.field_of_view_mm:g} leaves none of the lesion of {len(cut)} mask(s) in "
            f"the model's {image_size}-pixel square (the lesion lies outside the central {framing.field_of_view_mm:g} "
            f"mm the model sees, so its heatmaps could not be scored against it; a larger field of view, or the mask "
            f"left out), e.g. {cut[0]}"
        )
    return Survey(lines, problems, geometry)


def _kept(mask, src: sources.Source, size: int, framing: sources.Framing) -> bool:
    """Whether any of the lesion of ``mask`` (a file checked against ``src``, its image's
    resolved frame) is in the model's ``size``-pixel square: framed by
    :func:`lnm_jax.data.pixels.masks.frame_mask`, which with ``data.field_of_view_mm``
    centre-crops a picture wider than the field of view. True for a mask that cannot be read
    (refused by the manifest check)."""
    try:
        return bool(frame_mask(mask, src, size, framing).max() > 0)
    except (OSError, ValueError):
        return True


def _first(src: sources.Source) -> np.ndarray:
    """The frame a screen-capture check looks at: the still, or a clip's first frame."""
    if src.kind == "clip":
        return read_frames(src.path, [0])[0]
    return read_image(src.path)
