"""Lesion masks: a binary image the size of its ultrasound image (the manifest's
``bmode_mask`` / ``ceus_mask``: a PNG/JPEG with two values, or a DICOM Segmentation), read,
checked and framed exactly as its image is.

A mask is never a model input. It is the reference a heatmap is scored against
(:mod:`lnm_jax.explain.scores`), so it must cover the same pixels the model sees: it is
cropped to its image's scan region (the ``<input>_crop`` column, DICOM ultrasound regions, a
CEUS dual display's contrast side), resampled to the same physical scale and resized by the
same antialiased kernel (:func:`lnm_jax.data.pixels.sources.resolve`, ``crop``,
:func:`lnm_jax.data.pixels.decode.fit`). The framed mask is the share of each model pixel
inside the lesion, in [0, 1] (a boundary pixel is partly inside).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lnm_jax.data.pixels.decode import (
    MAX_IMAGE_PIXELS,
    ORIENTATIONS,
    exif_orientation,
    fit,
    over_channels,
    read_opacity,
    verify_image,
)
from lnm_jax.data.pixels.dicom import is_dicom, quiet_pydicom, refuse_deflated, unreadable_line
from lnm_jax.data.pixels.sources import DEFAULT_FRAMING, NO_OPTIONS, Framing, ImageOptions, Source, crop, resolve


class MaskError(ValueError):
    """A mask that cannot be the lesion reference of its image; ``code`` names the kind."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


NOT_BINARY = "mask_not_binary"
EMPTY = "mask_empty"
SIZE_MISMATCH = "mask_size_mismatch"
ORIENTATION_MISMATCH = "mask_orientation_mismatch"
NOT_SEGMENTATION = "mask_not_segmentation"
NO_BACKGROUND = "mask_no_background"
SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"  # DICOM Segmentation Storage


def read_segmentation(path: Path | str) -> np.ndarray:
    """bool [H, W]: a DICOM Segmentation's lesion, the union of its segments and frames
    (``SegmentationType`` BINARY; FRACTIONAL above half ``MaximumFractionalValue``), as pydicom
    unpacks its pixel data. :class:`MaskError` for a DICOM file that is not a segmentation
    (Modality SEG)."""
    import pydicom  # noqa: PLC0415
    from pydicom.errors import InvalidDicomError  # noqa: PLC0415

    refuse_deflated(Path(path))  # before pydicom inflates it whole (helper-118)
    try:
        with quiet_pydicom():
            ds = pydicom.dcmread(path)
            modality = ds.get("Modality")
            if modality == "SEG":
                pixels = np.asarray(ds.pixel_array)
    except (InvalidDicomError, AttributeError, KeyError, NotImplementedError, RuntimeError, TypeError) as e:
        raise ValueError(unreadable_line(e, "DICOM segmentation", Path(path))) from e
    if modality != "SEG":
        raise MaskError(
            NOT_SEGMENTATION,
            f"a DICOM mask must be a segmentation (Modality SEG, SOP class {SEGMENTATION_STORAGE}), "
            f"not {f'Modality {modality}' if modality else 'a file without a Modality'}",
        )
    if ds.get("SegmentationType", "BINARY") == "FRACTIONAL":
        pixels = pixels > float(ds.get("MaximumFractionalValue", 255)) / 2
    return pixels.reshape(-1, int(ds.Rows), int(ds.Columns)).any(axis=0)


def read_mask(path: Path | str) -> np.ndarray:
    """bool [H, W]: the pixels of ``path`` that are not 0 (any channel; EXIF orientation
    applied, as for images) and not transparent (a mask drawn in the alpha channel, white on
    transparent, marks what a viewer shows), or a DICOM Segmentation's lesion
    (:func:`read_segmentation`). :class:`MaskError` when its values or its opacity are not
    binary (0 and one other, e.g. 0/255 or 0/1), when it marks no lesion pixel, or when it marks
    every corner of the image (:func:`check_background`)."""
    lesion = _read_lesion(path)
    check_background(lesion)
    return lesion


def _read_lesion(path: Path | str) -> np.ndarray:
    """:func:`read_mask` but for its background check."""
    if is_dicom(Path(path)):
        lesion = read_segmentation(path)
    else:
        # [0, 1], every chunk checked, as an image; composited over black: a transparent pixel is 0
        rgb = verify_image(Path(path), MAX_IMAGE_PIXELS)
        pixels = over_channels(np.maximum, rgb)
        opacity = read_opacity(Path(path))
        if opacity is not None and opacity.min() < 1:  # said as the alpha's: the colours may be binary
            _check_binary(opacity, "mask's transparency (alpha) is not binary")
        _check_binary(pixels, "mask is not binary")
        lesion = pixels > 0
        if lesion.all() and (rgb != rgb[:1, :1]).any():  # (helper-80: "marks every pixel" misled)
            raise MaskError(
                NO_BACKGROUND,
                "mask is drawn in colours none of which is black (e.g. a lesion in red on white): every pixel reads "
                "as lesion; a mask marks the lesion in one value and 0 (black, or transparent) elsewhere",
            )
    if not lesion.any():
        raise MaskError(EMPTY, "mask marks no lesion pixel")
    return lesion


def _check_binary(values: np.ndarray, what: str) -> None:
    levels = np.unique(values)
    if len(levels) > 2 or (len(levels) == 2 and levels[0] != 0.0):
        shown = ", ".join(f"{v * 255:.0f}" for v in levels[:4]) + (", ..." if len(levels) > 4 else "")
        raise MaskError(NOT_BINARY, f"{what}: {len(levels)} values ({shown} of 255); 0 and one other")


def check_background(lesion: np.ndarray) -> None:
    """:class:`MaskError` (``mask_no_background``) when ``lesion`` (bool [H, W]) marks all four
    corners of its image: a frame filled by the export, or lesion and background swapped (an
    inverted mask marks everything around the lesion). A lesion is enclosed by tissue; of
    BUS-BRA's 1,127 masks none touches even three of the image's edges. Scoring a heatmap
    against such a mask puts every map "inside the lesion"."""
    if lesion[0, 0] and lesion[0, -1] and lesion[-1, 0] and lesion[-1, -1]:
        said = "every pixel" if lesion.all() else f"all four corners ({lesion.mean():.0%} of the image)"
        raise MaskError(
            NO_BACKGROUND,
            f"mask marks {said}: no background around the lesion (a filled frame, or lesion and background "
            "swapped); a mask marks the lesion, 0 elsewhere",
        )


def check_mask(path: Path | str, source: Source) -> np.ndarray:
    """The lesion (bool [H, W]) of the mask at ``path``; :class:`MaskError` unless it is
    binary, non-empty, the size of its image's frame (``source``), has a background
    (:func:`check_background`) and marks at least one pixel inside the framed box."""
    lesion = _read_lesion(path)
    h, w = lesion.shape
    fits, turned = (w, h) == (source.width, source.height), _turned_apart(path, source, (w, h))
    if not fits:
        said = f" ({turned[1]}: turned as its image, it would fit; save it so)" if turned and turned[0] else ""
        raise MaskError(SIZE_MISMATCH, f"mask is {w}x{h}, its image {source.width}x{source.height}{said}")
    if turned and turned[0]:
        raise MaskError(
            ORIENTATION_MISMATCH,
            f"{turned[1]}: whether the mask was drawn on the picture as shown or as stored cannot be told, and the "
            "two put the lesion in different places; save the mask with its image's orientation, or both upright "
            "(the orientation applied to their pixels)",
        )
    check_background(lesion)
    b = source.box
    if not lesion[b.y0 : b.y1, b.x0 : b.x1].any():
        raise MaskError(EMPTY, f"mask marks no pixel inside the image's framed region {b}")
    return lesion


def _turned_apart(path: Path | str, source: Source, size: tuple[int, int]) -> tuple[bool, str] | None:
    """Where a mask (``path``, ``size``: (width, height) as shown) and its image (``source``)
    are shown by different EXIF orientations: (whether the mask's stored pixels, turned as its
    image is, would fit the image too, the two orientations in words); None where they agree (a
    DICOM file or a clip has none). A mask with the image's stored size (a tool that ignores
    EXIF saved it on the stored pixels) and one drawn on the picture as shown read alike where
    the turn keeps the size (180 degrees, a mirror; any turn of a square): then which one it is
    cannot be told (helper-80: an image stored turned 180 degrees, its mask not, read with its
    lesion mirrored through the centre, and validate said OK)."""
    image = exif_orientation(source.path) if source.kind == "image" else 1
    mask = 1 if is_dicom(Path(path)) else exif_orientation(Path(path))
    if image == mask:
        return None
    w, h = size
    stored = (h, w) if mask in (5, 6, 7, 8) else (w, h)  # the mask's pixels as stored
    as_image = stored[::-1] if image in (5, 6, 7, 8) else stored  # turned as the image is
    shown = "not turned" if mask == 1 else f"{ORIENTATIONS[mask]} (EXIF Orientation {mask})"
    words = f"its image is shown {ORIENTATIONS.get(image, 'as stored')} (EXIF Orientation {image}), the mask {shown}"
    return as_image == (source.width, source.height), words


def decode_mask(
    path: Path | str,
    image: Path | str,
    name: str,
    *,
    size: int,
    options: ImageOptions = NO_OPTIONS,
    framing: Framing = DEFAULT_FRAMING,
) -> np.ndarray:
    """float32 [size, size] in [0, 1]: the mask at ``path`` framed as input ``name``'s image at
    ``image`` is framed (same crop, physical scale, kernel) for the model's square."""
    return frame_mask(path, resolve(Path(image), name, options, framing.ceus_region), size, framing)


def frame_mask(path: Path | str, source: Source, size: int, framing: Framing = DEFAULT_FRAMING) -> np.ndarray:
    """:func:`decode_mask` of its image's resolved ``source`` (no file resolved again)."""
    lesion = read_mask(path).astype(np.float32)[..., None]
    return fit(crop(lesion, source.box), size, source.mm_per_pixel, framing.field_of_view_mm)[..., 0]
