"""Pixels without TensorFlow: image bytes -> float32 [H, W, 3] in [0, 1], and the resize to
the model's square.

PIL decodes (PNG, JPEG, grayscale, RGB, palette, 16-bit) and :func:`read_image` is the one
function that turns a still or a clip's frame into float pixels as a viewer shows them
(:func:`displayed`): EXIF orientation applied, an embedded ICC profile's colours converted to
sRGB (LittleCMS, through Pillow's ImageCms), an animated PNG refused, every bit depth scaled to
[0, 1] (:func:`to_unit_rgb`). DICOM frames come through
:mod:`lnm_jax.data.pixels.dicom` (its own header-checked scaling), video frames through
:mod:`lnm_jax.data.pixels.clips`; both end in the same float [0, 1] RGB. The resize is the antialiased
bilinear (triangle-kernel) resampling of ``tf.image.resize(..., antialias=True)`` and
``jax.image.resize``, written as two small weight matrices (one per axis) so that it is two
matrix products in numpy: the same function as the TFDS path's decode, not an approximation
of it (checked against TensorFlow in tests/test_loader.py).
"""

from __future__ import annotations

import functools
import io
import os
import re
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from lnm_jax.data.pixels import png
from lnm_jax.data.pixels.placeholders import placeholder


class ImageDecodeError(ValueError):
    """An image the loader cannot decode; the message names the patient and the file."""


class ImageTooLargeError(ValueError):
    """An image over the caller's pixel limit, refused before its pixels are decoded."""


class DamagedImageError(ValueError):
    """A PNG or JPEG whose structure is not whole (:func:`damage`): the message says which and where."""


class ImageFormatError(ValueError):
    """An image in a format this reader does not take (BMP, WebP, GIF, TIFF under any name):
    the message names the format and what to do."""


PNG_SIGNATURE = png.SIGNATURE
JPEG_SIGNATURE = b"\xff\xd8"  # SOI, start of image (ITU-T T.81, B.1.1.3)
CUT_SHORT = "cut short (a copy or download that stopped?)"  # a file that ends before its data (PNG, JPEG, DICOM)
# the file names a CEUS clip is read from as a video (lnm_jax/data/pixels/clips.py), through ffmpeg
VIDEO_SUFFIXES = (
    ".mp4",
    ".m4v",
    ".mov",
    ".avi",
    ".mkv",
    ".webm",
    ".wmv",
    ".mpg",
    ".mpeg",
    ".vob",
    ".ts",
    ".m2ts",
    ".mts",
)
# how much of a file that is no PNG or JPEG is read to say what it is (a video's container, text's
# kind): a large file under an image's name (a 4 GB video) had been read whole into memory
_HEAD_BYTES = 4096
# a video container's first bytes: (offset, bytes, name), so that a video under another file name is said to be one
_VIDEO_SIGNATURES = (
    (4, b"ftyp", "MP4/QuickTime"),
    (0, b"\x1a\x45\xdf\xa3", "Matroska/WebM"),
    (0, b"\x30\x26\xb2\x75\x8e\x66\xcf\x11", "ASF/WMV"),
    (0, b"\x00\x00\x01\xba", "MPEG program stream"),
)


def damage(path: Path, error: Exception | None = None) -> str | None:
    """What is broken in a file the decoder failed on (``error``, its exception), in plain
    words: a PNG or a JPEG whose structure is not whole (:func:`png_damage`,
    :func:`jpeg_damage`), or cut inside its signature, with the format's name first ("damaged
    PNG: ..."); one whose structure is whole but whose image data does not decode (the
    decoder's words after it); a file of zero bytes only, or one that is no PNG or JPEG at all
    (what it begins with: text, or its first bytes); a Git LFS or git-annex pointer under an
    image's name (:func:`lnm_jax.data.pixels.placeholders.placeholder`). None where the file
    is empty or cannot be read (the caller's to say)."""
    if why := placeholder(path):
        return why
    try:
        with open(path, "rb") as f:
            data, size = f.read(_HEAD_BYTES), os.fstat(f.fileno()).st_size
            if data.startswith((PNG_SIGNATURE, JPEG_SIGNATURE)):
                data += f.read()  # (its whole structure is walked; any other file is told by its start)
            zeros = not data.strip(b"\0") and all(
                not chunk.strip(b"\0") for chunk in iter(lambda: f.read(1 << 20), b"")
            )
    except OSError:
        return None
    if not data:
        return None
    for fmt, signature, walk, head in (
        ("PNG", PNG_SIGNATURE, png_damage, "signature"),
        ("JPEG", JPEG_SIGNATURE, jpeg_damage, "start-of-image marker"),
    ):
        if data.startswith(signature):
            if why := walk(data):
                return f"damaged {fmt}: {why}"
            if fmt == "PNG" and (chunks := png.read_chunks(io.BytesIO(data))) and (why := png.disagreement(chunks)):
                return f"invalid PNG: {why}"  # (an IHDR Pillow cannot open either)
            if error is not None and fmt == "JPEG" and (process := unread_jpeg_process(data)):  # (it failed)
                return f"a {process} image, a coding this reader (libjpeg) does not decode: save the picture as PNG"
            if isinstance(error, OSError):  # PIL's failure to decode (not a mode or format this reader refuses)
                return f"damaged {fmt}: its structure is whole but its image data does not decode ({error})"
            return None
        if signature.startswith(data):
            return f"damaged {fmt}: the file ends at byte {size}, inside its {head}: {CUT_SHORT}"
    if error is not None and not isinstance(error, UnidentifiedImageError):
        return None  # a format the decoder knows: its own words say which
    if zeros:
        return f"the file holds only zero bytes ({size} of them): an export or copy that wrote no data"
    if video := _video_container(data):
        return (
            f"not a PNG or JPEG image: it holds a video ({video}); a CEUS clip is read as a video "
            f"from a file named {'/'.join(VIDEO_SUFFIXES)}"
        )
    return f"not a PNG or JPEG image: {_begins(data, size)}"


def _video_container(data: bytes) -> str | None:
    """The video container ``data`` begins as (:data:`_VIDEO_SIGNATURES`, AVI's RIFF form, an
    MPEG transport stream's sync byte every 188 bytes), else None."""
    if data[:4] == b"RIFF" and data[8:12] == b"AVI ":
        return "AVI"
    if len(data) > 376 and data[0] == data[188] == data[376] == 0x47:
        return "MPEG transport stream"
    return next((name for at, head, name in _VIDEO_SIGNATURES if data[at : at + len(head)] == head), None)


# text a file under an image's name begins with, by kind: (pattern over its first characters,
# lower case, a byte-order mark and white space stripped, what it is)
_TEXT_KINDS = (
    (
        re.compile(r"<!doctype html|<html|<head|<body|<!--\s*saved from url"),
        "a web page (HTML): a login or error page, or a page saved around the picture",
    ),
    (
        re.compile(r"<svg|<\?xml[^>]*>\s*(<!--.*?-->\s*)*(<!doctype svg[^>]*>\s*)?<svg", re.DOTALL),
        "an SVG drawing (XML), not a bitmap",
    ),
    (re.compile(r"<\?xml"), "XML text"),
    (re.compile(r"[{\[]\s*[\"{\[\]}]"), "JSON text (a web service's answer?)"),
    (re.compile(r"\[internetshortcut\]"), "an internet shortcut (.url): the address of the picture, not the picture"),
    (re.compile(r"outs:|md5:|meta:"), "a DVC placeholder (.dvc): run 'dvc pull' in that repository"),
    (re.compile(r"%pdf-"), "a PDF document"),
)
# other files under an image's name, by their first bytes: (offset, bytes, what it is)
_SIGNATURES = (
    (0, b"PK\x03\x04", "a ZIP archive (or a file built on one: .docx, .xlsx, .pptx)"),
    (0, b"\x1f\x8b", "gzip-compressed data"),
    (257, b"ustar", "a tar archive"),
    (0, b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (0, b"Rar!\x1a\x07", "a RAR archive"),
    (0, b"%PDF-", "a PDF document"),
    (0, b"L\x00\x00\x00\x01\x14\x02\x00", "a Windows shortcut (.lnk) to the file, not the file: copy the file itself"),
    (0, b"book\x00\x00\x00\x00mark", "a macOS alias to the file, not the file: copy the file itself"),
    (0, b"\x00\x05\x16\x07", "macOS AppleDouble metadata (a '._' file a copy from a Mac leaves), not a picture"),
    (0, b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "a Microsoft Office document (.doc, .xls, .ppt)"),
)


def _begins(data: bytes, size: int) -> str:
    """What a file of ``size`` bytes that begins with ``data`` is, for a line: the kind of file
    its first bytes say (:data:`_SIGNATURES`: an archive, a PDF, a shortcut or alias, macOS
    metadata), the kind of text it is (:data:`_TEXT_KINDS`: a web page, an SVG, XML, JSON, a
    DVC placeholder; UTF-8 or UTF-16, with or without a byte-order mark) or that it is text,
    else its first 8 bytes in hexadecimal. The text itself is not quoted (helper-118: whatever
    file a manifest names, ``/etc/shadow`` read as root among them, had its first 40 characters
    in the line)."""
    if what := next((w for at, magic, w in _SIGNATURES if data[at : at + len(magic)] == magic), None):
        return f"it holds {what}"
    if (text := _text(data[:512])) is not None:
        start = text.lstrip("\ufeff \t\r\n").lower()
        kind = next((what for pattern, what in _TEXT_KINDS if pattern.match(start)), None)
        return f"it holds {kind}" if kind else f"it holds text ({size:,} bytes)"
    return "it begins with the bytes " + " ".join(f"{b:02x}" for b in data[:8])


def still_format(path: Path | str) -> str | None:
    """'png' or 'jpeg', what a still's first bytes say it is (its signature, whatever its name),
    or None for anything else or a file that cannot be read."""
    try:
        with open(path, "rb") as f:
            head = f.read(len(PNG_SIGNATURE))
    except (OSError, ValueError):  # (ValueError: a name this locale cannot encode)
        return None
    return "png" if head == PNG_SIGNATURE else "jpeg" if head.startswith(JPEG_SIGNATURE) else None


def holds(path: Path | str, text: bool = False) -> str | None:
    """'it holds ...' for a file of a kind :func:`_begins` names by its first bytes (an
    archive, a PDF, a web page, a shortcut), for a reader of another format (video, DICOM) to
    say why the file is none; with ``text``, text of no known kind too ('it holds text (N
    bytes)': a video is never text, where a DICOM reader keeps its own words for a dataset
    without the file format's preamble); None for any other file or one that cannot be read."""
    try:
        with open(path, "rb") as f:
            data, size = f.read(_HEAD_BYTES), os.fstat(f.fileno()).st_size
    except OSError:
        return None
    said = _begins(data, size) if data else None
    plain = ("it begins with the bytes",) if text else ("it begins with the bytes", "it holds text (")
    return said if said and not said.startswith(plain) else None


def _text(head: bytes) -> str | None:
    """``head`` as text (UTF-16 where it begins with that encoding's byte-order mark, else
    UTF-8; a character cut at its end is still text), or None where it is not text."""
    codec = "utf-16" if head[:2] in (b"\xff\xfe", b"\xfe\xff") else "utf-8"
    head = head[: len(head) // 2 * 2] if codec == "utf-16" else head
    try:
        text = head.decode(codec)
    except UnicodeDecodeError as e:
        if codec == "utf-16" or e.start <= len(head) - 4:
            return None
        text = head[: e.start].decode(codec)
    return text if text and all(c.isprintable() or c in "\r\n\t\ufeff" for c in text) else None


def jpeg_damage(data: bytes) -> str | None:
    """What is cut off a JPEG's bytes (``data``, which begin with SOI), walking its marker
    segments (ITU-T T.81, B.1.1.4: 0xFF, a marker byte, a 2-byte length that counts itself):
    a file that ends inside a segment, before its first scan (SOS), or inside its scan data
    with no EOI marker after it; None where an EOI follows the scan (the decoder's own
    failure is then some other damage, said in its words)."""
    at, size = len(JPEG_SIGNATURE), len(data)
    while at + 2 <= size:
        if data[at] != 0xFF:  # (zeroed or overwritten)
            return f"byte {at} is 0x{data[at]:02X} where a marker segment begins (0xFF): the file is damaged there"
        marker = data[at + 1]
        if marker == 0xFF or 0xD0 <= marker <= 0xD7 or marker == 0x01:  # fill byte, RSTn, TEM: no length
            at += 1 if marker == 0xFF else 2
            continue
        if marker == 0xD9:  # EOI before any scan
            return None
        if at + 4 > size:
            break
        end = at + 2 + struct.unpack(">H", data[at + 2 : at + 4])[0]
        if end > size:
            return f"the file ends at byte {size}, inside marker segment 0xFF{marker:02X} (from byte {at}): {CUT_SHORT}"
        if marker == 0xDA:  # SOS: entropy-coded data follows, up to EOI (a progressive file has several scans)
            if b"\xff\xd9" in data[end:]:
                return None
            return f"the file ends at byte {size}, inside its image data, with no end-of-image marker: {CUT_SHORT}"
        at = end
    return f"the file ends at byte {size}, before its image data: {CUT_SHORT}"


def jpeg_segments(data: bytes) -> Iterator[tuple[int, bytes]]:
    """(marker, the segment's bytes after its length) of a JPEG or JPEG-LS codestream's marker
    segments (ITU T.81 B.1.1.4), from SOI up to its first scan (SOS included), stopping where
    the bytes end or are not a marker."""
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if 0xD0 <= marker <= 0xD8 or marker == 0x01:  # markers without a length
            i += 2
            continue
        end = i + 2 + struct.unpack(">H", data[i + 2 : i + 4])[0]
        yield marker, data[i + 4 : end]
        if marker == 0xDA:
            return
        i = end


# the JPEG coding processes libjpeg (through Pillow) does not decode, by their start-of-frame
# marker (ITU-T T.81 B.1.1.3; T.87 for JPEG-LS): all but Huffman baseline, extended and
# progressive (SOF0-SOF2)
UNREAD_JPEG_PROCESSES = {
    0xC3: "lossless JPEG (SOF3)",
    0xC5: "hierarchical JPEG (SOF5)",
    0xC6: "hierarchical JPEG (SOF6)",
    0xC7: "hierarchical lossless JPEG (SOF7)",
    0xC9: "arithmetic-coded JPEG (SOF9)",
    0xCA: "arithmetic-coded progressive JPEG (SOF10)",
    0xCB: "arithmetic-coded lossless JPEG (SOF11)",
    0xCD: "hierarchical arithmetic-coded JPEG (SOF13)",
    0xCE: "hierarchical arithmetic-coded JPEG (SOF14)",
    0xCF: "hierarchical arithmetic-coded lossless JPEG (SOF15)",
    0xF7: "JPEG-LS (SOF55)",
}


def unread_jpeg_process(data: bytes) -> str | None:
    """The coding process of a JPEG file's bytes ``data`` where this reader does not decode it
    (:data:`UNREAD_JPEG_PROCESSES`: lossless, hierarchical, arithmetic-coded, JPEG-LS), else
    None (helper-107: a lossless JPEG and a JPEG-LS file named .jpg had been called damaged)."""
    return next((UNREAD_JPEG_PROCESSES[m] for m, _ in jpeg_segments(data) if m in UNREAD_JPEG_PROCESSES), None)


# libjpeg's warnings about a JPEG's image data (jerror.h: JWRN_HIT_MARKER, JWRN_JPEG_EOF,
# JWRN_EXTRANEOUS_DATA, JWRN_MUST_RESYNC, JWRN_HUFF_BAD_CODE, JWRN_ARITH_BAD_CODE,
# JWRN_BOGUS_PROGRESSION): the decoder goes on, filling what it could not decode (flat grey, or
# blocks of another place), and Pillow passes none of them on
JPEG_DATA_WARNINGS = ("Corrupt JPEG data", "Premature end of JPEG file", "Inconsistent progression sequence")


def jpeg_data_damage(data: bytes) -> str | None:
    """What libjpeg-turbo warns of while decoding a JPEG's image data (``data``: the whole file
    or one DICOM frame's codestream), in its words, or None where it decodes without such a
    warning (or cannot be decoded by it at all: a 12-bit or lossless one, whose own decoder
    then speaks). Pillow's decoder goes on past these in silence: a scan cut short with an
    end-of-image marker added, bytes wiped, or a restart marker lost had been read half flat
    grey (helper-63), each viewer filling the gap its own way. simplejpeg (libjpeg-turbo,
    ``strict``) turns the warnings into errors; about 1 ms for a 560 x 360 picture."""
    import simplejpeg  # noqa: PLC0415

    try:
        simplejpeg.decode_jpeg(data, strict=True)
    except ValueError as e:
        if any(w in str(e) for w in JPEG_DATA_WARNINGS) and not _nothing_lost(str(e), data):
            return (
                f"libjpeg reports {str(e).strip()!r} in its image data: decoders fill what they cannot read each "
                "their own way (flat grey, or blocks from elsewhere); export the picture again"
            )
    return None


def _nothing_lost(warning: str, data: bytes) -> bool:
    """Whether libjpeg's ``warning`` ("Corrupt JPEG data: N extraneous bytes before marker 0xXX")
    is of bytes it skipped without losing image data: junk between the header's segments
    (before the first scan), or zero bytes an encoder padded a scan's data with before the next
    marker (EOI, or a progressive file's next segment). Every block is decoded, no pixel
    changes, and viewers show the picture whole (helper-69: 8 or more zero bytes before EOI had
    been refused as damage). Skipped bytes before a restart marker (RSTn), or skipped bytes
    that are not zeros after a scan, are image data lost."""
    found = re.search(r"(\d+) extraneous bytes before marker 0x([0-9a-f]{2})", warning)
    if not found:
        return False
    n, marker = int(found[1]), b"\xff" + bytes.fromhex(found[2])
    if 0xD0 <= marker[1] <= 0xD7:
        return False
    if _header_junk(data, marker[1]) == n:  # between the header's segments, before any image data
        return True
    at = data.find(marker, data.find(b"\xff\xda"))  # (scan data holds no FF followed by a marker code)
    return 0 < n <= at and not any(data[at - n : at])


def _header_junk(data: bytes, code: int) -> int | None:
    """How many bytes that are no marker segment stand before the first ``code`` marker among a
    JPEG's header segments (SOI up to its first SOS, walked by their lengths), or None where
    that marker is not reached so, or no junk precedes it."""
    at = len(JPEG_SIGNATURE)
    while at + 4 <= len(data):
        mark = data.find(b"\xff", at)
        while 0 <= mark < len(data) - 1 and data[mark + 1] == 0xFF:  # fill bytes
            mark += 1
        if mark < 0 or mark + 4 > len(data):
            return None
        if data[mark + 1] == code:
            return (mark - at) or None
        if data[mark + 1] == 0xDA:
            return None
        at = mark + 2 + struct.unpack(">H", data[mark + 2 : mark + 4])[0]
    return None


def png_damage(data: bytes) -> str | None:
    """What is broken in a PNG's bytes (``data``, which begin with its signature), walking its
    chunks (length, type, data, CRC-32 of type and data: PNG specification, 3rd edition,
    section 5.3): a chunk whose CRC fails, a file that ends inside a chunk or before ``IEND``;
    None where every chunk is whole up to ``IEND``. Where the decoder's words for such a file
    are its own (PIL: "cannot identify image file" for a bad CRC ahead of the image data),
    these name the chunk and the byte."""
    at, size, seen = len(PNG_SIGNATURE), len(data), set()
    while at + 8 <= size:
        length, kind = struct.unpack(">I4s", data[at : at + 8])
        name, end = kind.decode("latin-1"), at + 12 + length
        if end > size:
            where = f"inside chunk {name!r} (from byte {at}, {length} bytes of data)"
            return f"the file ends at byte {size}, {where}: {CUT_SHORT}"
        if zlib.crc32(data[at + 4 : end - 4]) != struct.unpack(">I", data[end - 4 : end])[0]:
            return (
                f"chunk {name!r} at byte {at} fails its CRC check: the file changed after it was written (damaged "
                "in a copy, or edited by a tool that did not rewrite the checksum)"
            )
        if kind == b"IEND":
            return None if b"IDAT" in seen else "it holds no image data (no IDAT chunk before IEND)"
        seen.add(kind)
        at = end
    return f"the file ends at byte {size} without the IEND chunk: {CUT_SHORT}"


READABLE_FORMATS = ("PNG", "JPEG")
# The largest image or frame accepted (stills, clip frames, DICOM), in pixels: ultrasound
# frames are well under 2 megapixels (a 4K screen capture is 8.3); 50 megapixels keeps a
# hostile or broken file (a "decompression bomb") from taking the machine's memory, with room
# for any scanner.
MAX_IMAGE_PIXELS = 50_000_000


@functools.lru_cache(maxsize=64)
def resize_weights(in_size: int, out_size: int) -> np.ndarray:
    """[out_size, in_size] weights of the antialiased triangle-kernel resampling (the
    ``scale_and_translate`` weights of TensorFlow and JAX): output pixel i samples the input at
    (i + 0.5) / scale - 0.5 with a kernel widened by 1 / scale when downsampling."""
    scale = out_size / in_size
    kernel_scale = max(1.0 / scale, 1.0)
    sample = (np.arange(out_size, dtype=np.float64) + 0.5) / scale - 0.5
    distance = np.abs(sample[:, None] - np.arange(in_size, dtype=np.float64)[None, :]) / kernel_scale
    w = np.maximum(0.0, 1.0 - distance)
    total = w.sum(axis=1, keepdims=True)
    w = np.where(total > 1000 * np.finfo(np.float32).eps, w / np.where(total != 0, total, 1), 0.0)
    w[(sample < -0.5) | (sample > in_size - 0.5)] = 0.0
    return w.astype(np.float32)


def placed_weights(in_size: int, new_size: int, out_size: int) -> np.ndarray:
    """[out_size, in_size]: resample ``in_size`` pixels to ``new_size`` and centre them in
    ``out_size`` (zero rows where the image is smaller, its middle where it is larger)."""
    w = resize_weights(in_size, new_size)
    if new_size == out_size:
        return w
    out = np.zeros((out_size, in_size), np.float32)
    offset = (out_size - new_size) // 2
    if offset >= 0:
        out[offset : offset + new_size] = w
    else:
        out[:] = w[-offset : -offset + out_size]
    return out


def resample(img: np.ndarray, rows_w: np.ndarray, cols_w: np.ndarray) -> np.ndarray:
    """[H, W, C] -> [rows_w.shape[0], cols_w.shape[0], C] through per-axis weight matrices."""
    rows = np.einsum("oh,hwc->owc", rows_w, img, optimize=True)
    out = np.einsum("pw,owc->opc", cols_w, rows, optimize=True)
    return np.clip(out, 0.0, 1.0, out=out)  # the antialiased resize can overshoot by ~1e-7


def resize(img: np.ndarray, size: int) -> np.ndarray:
    """float32 [H, W, C] -> [size, size, C], antialiased bilinear, clipped to [0, 1]."""
    h, w = img.shape[:2]
    if (h, w) == (size, size):
        return img
    return resample(img, resize_weights(h, size), resize_weights(w, size))


def fit(img: np.ndarray, size: int, mm_per_pixel: tuple[float, float] | None, field_of_view_mm: float) -> np.ndarray:
    """The model's [size, size, C] view of a cropped image. ``field_of_view_mm`` 0: the crop
    resized to the square (the paper's way: a lesion's size in pixels follows the scanner's
    depth setting). > 0: resampled to ``field_of_view_mm / size`` mm per pixel, aspect kept,
    centred, zero-padded or centre-cropped to the square, so that a centimetre is the same
    number of pixels in every image of the cohort."""
    if field_of_view_mm <= 0:
        return resize(img, size)
    if mm_per_pixel is None:
        raise ValueError("data.field_of_view_mm is set but the image has no physical spacing")
    target = field_of_view_mm / size
    h, w = img.shape[:2]
    new_h = max(1, round(h * mm_per_pixel[1] / target))
    new_w = max(1, round(w * mm_per_pixel[0] / target))
    return resample(img, placed_weights(h, new_h, size), placed_weights(w, new_w, size))


# PIL modes read as 16-bit gray (a 16-bit PNG opens as I;16, or as I in older Pillow):
# scaled by 1 / 65535, as TensorFlow's convert_image_dtype scales a uint16 PNG
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
# modes PIL converts to 8-bit RGB itself: bilevel, gray (+alpha), palettes (+transparency), colour
EIGHT_BIT_MODES = ("1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV")
# 8-bit modes with an alpha channel (``La``/``RGBa``: premultiplied, which PIL's RGBA conversion undoes)
ALPHA_MODES = ("LA", "La", "PA", "RGBA", "RGBa")
ORIENTATION = 0x0112  # EXIF Orientation; 5-8 are the transposes that swap width and height
ORIENTATIONS = {  # (the TIFF 6.0 values, as a viewer turns the stored picture)
    2: "mirrored",
    3: "turned 180 degrees",
    4: "flipped upside down",
    5: "mirrored across its diagonal",
    6: "turned 90 degrees clockwise",
    7: "mirrored across its other diagonal",
    8: "turned 90 degrees anticlockwise",
}


def over_channels(ufunc: np.ufunc, image: np.ndarray) -> np.ndarray:
    """``ufunc`` (``np.maximum``, ``np.minimum``, ``np.add``) folded over the channels of
    ``image`` ([..., C]) -> [...]: the same values, bit for bit, as ``ufunc.reduce(image,
    axis=-1)`` (channel 0 with 1, then with 2), one elementwise pass per channel. NumPy reduces
    a short last axis pixel by pixel: ``max(axis=-1)`` of a 224x224 RGB image took 1.5 ms, this
    0.03 ms (a cohort's check reduced every lesion mask so: a quarter of its time)."""
    return functools.reduce(ufunc, (image[..., c] for c in range(image.shape[-1])))


def to_unit_rgb(im: Image.Image) -> np.ndarray:
    """A decoded PIL image -> float32 [H, W, 3] in [0, 1]: gray replicated, 8-bit modes scaled
    by 1/255, 16-bit gray (I;16*, I) by 1/65535, float (F) taken as [0, 1]; everything clipped
    to [0, 1]. A transparent pixel (alpha, a palette's or a colour key's transparency, PNG tRNS)
    is composited over black (:func:`over_black`). ValueError for a mode this project does not
    read."""
    if im.mode in SIXTEEN_BIT_MODES:
        unit = np.asarray(im, dtype=np.float32) / np.float32(65535.0)
        if (key := im.info.get("transparency")) is not None:  # a tRNS grey key: that level is transparent
            unit[np.asarray(im) == key] = 0.0
    elif im.mode == "F":
        unit = np.asarray(im, dtype=np.float32)
    elif im.mode in EIGHT_BIT_MODES:
        if im.mode in ALPHA_MODES or "transparency" in im.info:
            return over_black(np.asarray(im.convert("RGBA"), dtype=np.float32) / np.float32(255.0))
        return np.asarray(im.convert("RGB"), dtype=np.float32) / np.float32(255.0)
    else:
        raise ValueError(f"pixel mode {im.mode} is not read (8-bit, 16-bit gray or palette images only)")
    unit = np.clip(unit, 0.0, 1.0)
    return np.repeat(unit[..., None], 3, axis=-1)


def over_black(rgba: np.ndarray) -> np.ndarray:
    """float [..., 4] RGBA in [0, 1] -> [..., 3] RGB composited over black, ``rgb * alpha``.
    What lies under a transparent pixel is no picture: a viewer shows its own background there
    (black, white or a checkerboard) and an encoder may store any colour (two files a viewer
    shows alike had been read apart: white under transparency read as white). Black is an
    ultrasound's own background, outside its scan region; a partly transparent pixel is
    blended toward it (Porter and Duff's 'over', 1984)."""
    return rgba[..., :3] * rgba[..., 3:]


def _grey_pixels(im: Image.Image) -> bool:
    """Whether every pixel of ``im`` is grey (R = G = B), whatever its mode: an ultrasound picture
    saved as RGB or palette often is."""
    rgb = np.asarray(im.convert("RGB"))
    return bool((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all())


def upright(im: Image.Image) -> Image.Image:
    """The picture as every viewer shows it: the EXIF Orientation tag applied (Pillow's
    ``ImageOps.exif_transpose``), so that crop boxes drawn in a viewer land where they were
    drawn. The image is loaded. ValueError for an orientation given outside the EXIF (XMP's
    ``tiff:Orientation``, ImageMagick's "Raw profile type exif" text chunk), which Pillow
    applies and browsers do not (helper-59: such a picture had been read turned): readers
    differ on it."""
    im.load()
    orientation = im.getexif().get(ORIENTATION, 1)
    if orientation not in ORIENTATIONS:  # 1, or a value no viewer turns by (as exif_transpose does)
        return im
    raw, exif = im.info.get("exif"), Image.Exif()
    if raw:
        exif.load(raw)
    if exif.get(ORIENTATION, 1) != orientation:
        raise ValueError(
            f"its orientation ({orientation}: {ORIENTATIONS[orientation]}) is given outside its EXIF "
            "data (in XMP metadata or a text chunk), which browsers ignore and Pillow applies: readers differ on which "
            "way up it is; save it upright, or with the orientation in its EXIF"
        )
    return ImageOps.exif_transpose(im)


# colour modes an embedded ICC profile is applied to (LittleCMS transforms, to sRGB); grey
# modes go through :func:`_gray_lut`
ICC_MODES = {"RGB": "RGB", "RGBA": "RGBA", "CMYK": "RGB", "P": None, "PA": None}
GRAY_BITS = {"L": 8, "LA": 8, **dict.fromkeys(SIXTEEN_BIT_MODES, 16)}  # grey modes, by bits per sample
NO_OPTIMIZE = 0x0100  # LittleCMS's cmsFLAGS_NOOPTIMIZE: each value through the profile's own curves


@functools.lru_cache(maxsize=8)
def srgb_transform(profile: bytes, mode: str, out_mode: str, flags: int = 0):
    """LittleCMS's transform from ``profile`` (an embedded ICC profile's bytes) to sRGB, or None
    where the profile cannot be read (a viewer then shows the stored values, as this does)."""
    from PIL import ImageCms  # noqa: PLC0415

    try:
        src = ImageCms.ImageCmsProfile(io.BytesIO(profile))
        return ImageCms.buildTransform(src, ImageCms.createProfile("sRGB"), mode, out_mode, flags=flags)
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return None


@functools.lru_cache(maxsize=8)
def _gray_lut(profile: bytes, bits: int) -> np.ndarray | None:
    """The sRGB colour (uint8 [2**bits, 3]) of every grey level of a ``bits``-bit image under
    its embedded grey ``profile``, each level through the profile's own tone curve (LittleCMS
    unoptimised, once per profile): LittleCMS's default, optimised grey transform is off by up
    to 10 of 255 in the dark (a linear 'Gray Gamma 1.0' profile: a stored 1 of 255, shown as 13,
    came out 6), and has no 16-bit grey mode to write into. A viewer shows a 16-bit image on an
    8-bit display: so does this. None where the profile cannot be read as a grey one."""
    from PIL import ImageCms  # noqa: PLC0415

    transform = srgb_transform(profile, "L" if bits == 8 else "I;16", "RGB", NO_OPTIMIZE)
    if transform is None:
        return None
    levels = np.arange(2**bits, dtype=np.uint8 if bits == 8 else np.uint16).reshape(-1, 256)
    return np.asarray(ImageCms.applyTransform(Image.fromarray(levels), transform)).reshape(-1, 3)


def displayed(im: Image.Image) -> Image.Image:
    """The picture as a colour-managed viewer shows it: upright (:func:`upright`), its
    embedded ICC profile (PNG ``iCCP``, JPEG ``APP2``) applied, converted to sRGB, the colour
    space of every other input (a grey display profile with a linear tone curve shows a stored
    128 as 188: it had been read as 128; a grey image, 8- or 16-bit, through :func:`_gray_lut`).
    ValueError for an animated PNG: a still or a clip's frame holds one picture, an APNG several
    (and a viewer plays them, not the default image read before)."""
    frames = getattr(im, "n_frames", 1)
    if im.format == "PNG" and frames > 1:
        raise ValueError(f"an animated PNG ({frames} frames): a still holds one picture; save the one meant as a PNG")
    chunks = png_chunks(im)  # (read before the pixels: loading may close the file)
    if chunks is not None and (why := png.disagreement(chunks)):
        raise ValueError(why)
    chromaticity = png.chromaticity_refusal(chunks) if chunks is not None else None
    _low_depth_key(im, chunks)
    significant = png_significant_bits(im, chunks)
    gamma = png_gamma(im)
    if chunks is not None and (cicp := chunks.first(b"cICP")) is not None:  # (ahead of iCCP, sRGB, gAMA)
        if why := png.cicp_refusal(cicp):
            raise ValueError(why)
        gamma = None
        im.info.pop("icc_profile", None)
    if (deep := _deep_colour_png(im, significant, gamma)) is not None:
        im, significant, gamma = deep, None, None  # sBIT, a colour key and gAMA applied at 16 bits
    im = upright(im)
    if chromaticity and not _grey_pixels(im):  # (grey stored as colour: no primaries to convert; helper-69)
        raise ValueError(chromaticity)
    if significant is not None:
        im = _low_bits_scaled(im, significant)
    if gamma is not None:
        im = _gamma_applied(im, gamma)
    profile = im.info.get("icc_profile")
    if profile and im.mode in GRAY_BITS:
        if (lut := _gray_lut(bytes(profile), GRAY_BITS[im.mode])) is None:
            return im
        levels = np.asarray(im.getchannel(0) if im.mode == "LA" else im)
        rgb = lut[np.clip(levels, 0, len(lut) - 1).astype(np.intp)]
        if im.mode == "LA":
            return Image.fromarray(np.dstack([rgb, np.asarray(im.getchannel("A"))]), "RGBA")
        if (key := im.info.get("transparency")) is not None:  # a grey key kept as alpha (helper-59: lost)
            return Image.fromarray(np.dstack([rgb, np.where(levels == key, 0, 255).astype(np.uint8)]), "RGBA")
        return Image.fromarray(rgb, "RGB")
    if not profile or im.mode not in ICC_MODES:
        return im
    if ICC_MODES[im.mode] is None or "transparency" in im.info:  # a palette's colours, or a colour key, as RGBA
        im = im.convert("RGBA" if "transparency" in im.info or im.mode == "PA" else "RGB")
    transform = srgb_transform(bytes(profile), im.mode, ICC_MODES[im.mode])
    if transform is None:
        return im
    from PIL import ImageCms  # noqa: PLC0415

    return ImageCms.applyTransform(im, transform)


# PNG gAMA of sRGB-like encoding (1/2.2, PNG specification 12.2): shown as stored, as viewers do
SRGB_GAMMA = 0.45455
# the gAMA values libpng (which most viewers decode with) applies: 16 to 625,000,000 in the
# chunk's units of 1/100,000; outside, it shows the stored values, and so does this (helper-58:
# a gAMA of 1 unit had read every picture black, of 2**32 - 1 white)
GAMMA_RANGE = (16 / 100000, 625000000 / 100000)


def png_gamma(im: Image.Image) -> float | None:
    """The ``gAMA`` of a PNG whose colours a viewer shows through it: one without ``iCCP`` or
    ``sRGB`` (which take precedence, PNG specification 11.3.3.1), whose gamma is not sRGB's
    (:data:`SRGB_GAMMA` within 1%, shown as stored) and is positive; None otherwise. An image
    saved with ``gAMA`` 1.0 (linear samples) is shown brighter in its mid-tones than its
    samples read: 64 of 255 as 137."""
    g = im.info.get("gamma") if im.format == "PNG" else None
    if not g or not GAMMA_RANGE[0] <= g <= GAMMA_RANGE[1] or "icc_profile" in im.info or "srgb" in im.info:
        return None
    return None if abs(g - SRGB_GAMMA) <= 0.01 * SRGB_GAMMA else float(g)


def srgb_encoded(light: np.ndarray) -> np.ndarray:
    """Linear light in [0, 1] -> sRGB-encoded values in [0, 1] (IEC 61966-2-1's curve)."""
    light = np.clip(light, 0.0, 1.0)
    return np.where(light <= 0.0031308, 12.92 * light, 1.055 * light ** (1 / 2.4) - 0.055)


def _gamma_levels(levels: np.ndarray, gamma: float, top: int) -> np.ndarray:
    """Samples ``levels`` (integers 0..``top``, 255 or 65535) as shown on an sRGB display under
    the PNG ``gamma`` (:func:`_gamma_applied`), at the same depth (uint8 or uint16)."""
    lut = np.rint(srgb_encoded((np.arange(top + 1) / top) ** (1.0 / gamma)) * top)
    return lut[np.clip(levels, 0, top).astype(np.intp)].astype(np.uint16 if top == 65535 else np.uint8)


def _gamma_applied(im: Image.Image, gamma: float) -> Image.Image:
    """The image as shown on an sRGB display: each colour sample ``v`` (at its own depth, 8 or
    16 bits) the light ``v ** (1 / gamma)`` it encodes (PNG specification 12.2), sRGB-encoded
    (:func:`srgb_encoded`). Transparency is kept: alpha as it is, a palette or 8-bit colour key
    as alpha (the image expanded to RGBA first), a 16-bit grey key's pixels set to 0, black, as
    :func:`to_unit_rgb` reads them. A bilevel image is unchanged (0 and 1 are the same light
    under any gamma)."""
    if im.mode == "1":
        return im
    key = im.info.get("transparency")
    if im.mode in ("P", "PA") or (key is not None and im.mode not in SIXTEEN_BIT_MODES):
        im = im.convert("RGBA" if key is not None or im.mode == "PA" else "RGB")
    top = 65535 if im.mode in SIXTEEN_BIT_MODES else 255
    levels = np.asarray(im)
    alpha = im.mode in ALPHA_MODES
    shown = _gamma_levels(levels[..., :-1] if alpha else levels, gamma, top)
    if top == 65535:  # grey
        if key is not None:
            shown[levels == key] = 0
        return Image.fromarray(shown)  # I;16
    return Image.fromarray(np.dstack([shown, levels[..., -1]]) if alpha else shown, im.mode)


# PIL modes whose PNG sBIT is read (PNG specification 11.3.3.4: one byte per channel, alpha
# last; a palette's sBIT describes its colour table, which is not read), by bits per sample
SBIT_DEPTH = {"RGB": 8, "RGBA": 8, **GRAY_BITS}


def png_significant_bits(im: Image.Image, chunks: png.Chunks | None) -> tuple[int, ...] | None:
    """The significant bits of a PNG's samples, one per channel (grey or red, green, blue, then
    alpha), from the ``sBIT`` of its ``chunks`` (PNG specification 11.3.3.4; Pillow keeps no
    ``sBIT``); None for another format or mode (a palette) or a PNG without ``sBIT``."""
    if chunks is None or im.format != "PNG" or im.mode not in SBIT_DEPTH:
        return None
    return tuple(chunks.first(b"sBIT") or b"") or None


def _low_depth_key(im: Image.Image, chunks: png.Chunks | None) -> None:
    """A 2- or 4-bit grey PNG's tRNS key scaled as Pillow scales its samples (to 0-255), in
    ``im.info`` (changed in place): Pillow keeps the key in the file's units, where it matched
    no sample (helper-59: a 4-bit key of 15 left the white it keys white; PNG specification
    11.3.2.1 compares it at the image's depth)."""
    header = chunks.header if chunks is not None else None
    if header is None or header[3] != 0 or header[2] not in (2, 4) or "transparency" not in im.info:
        return
    im.info["transparency"] = int(im.info["transparency"]) * (255 // (2 ** header[2] - 1))


def png_chunks(im: Image.Image) -> png.Chunks | None:
    """The chunks of the PNG file behind ``im`` (:func:`lnm_jax.data.pixels.png.read_chunks`),
    read before its pixels (loading may close the file); None for another format or an image
    no longer backed by its file."""
    fp = getattr(im, "fp", None)
    return png.read_chunks(fp) if im.format == "PNG" and fp is not None else None


def _low_bits(levels: np.ndarray, significant: tuple[int, ...], depth: int, alpha: bool) -> np.ndarray | None:
    """``levels`` (integer [H, W] or [H, W, C] of ``depth`` bits, the alpha channel last where
    ``alpha``) with the samples that sit in the low bits their ``sBIT`` says (``significant``,
    one per channel) scaled to the full depth, or None where none do. The colour channels are
    judged together (one export stored them one way), alpha on its own: samples all below
    2**bits and not all multiples of the shift are low-bit samples; shifted ones (as the PNG
    specification has an encoder store them), or a declared depth the samples exceed, are read
    as stored. v -> round(v * (2**depth - 1) / (2**bits - 1)), as a DICOM frame is scaled by
    its BitsStored."""
    planes = levels[..., None] if levels.ndim == 2 else levels
    groups = [list(range(planes.shape[-1] - 1)), [planes.shape[-1] - 1]] if alpha else [list(range(planes.shape[-1]))]
    out, changed = planes.astype(np.int64), False
    for channels in groups:
        bits = [significant[min(c, len(significant) - 1)] for c in channels]
        if not all(0 < b < depth for b in bits):
            continue
        values = [planes[..., c].astype(np.int64) for c in channels]
        if any(v.max() >= 2**b for v, b in zip(values, bits)):
            continue
        if not any(np.any(v % 2 ** (depth - b)) for v, b in zip(values, bits)):
            continue
        for c, v, b in zip(channels, values, bits):
            out[..., c] = np.rint(v * ((2**depth - 1) / (2**b - 1)))
        changed = True
    if not changed:
        return None
    return (out[..., 0] if levels.ndim == 2 else out).astype(np.uint8 if depth == 8 else np.uint16)


def _low_bits_scaled(im: Image.Image, significant: tuple[int, ...]) -> Image.Image:
    """An image whose ``sBIT`` says ``significant`` bits (one per channel), its samples that sit
    in those low bits scaled to its full depth (:func:`_low_bits`). The PNG specification has an
    encoder shift such samples up (12-bit data stored as v * 16, so that a reader ignoring
    ``sBIT`` reads them right); an export that wrote 12-bit ultrasound as 0-4095 in a 16-bit PNG,
    and said so in ``sBIT``, had been read at 1/16 of its brightness. A colour key is scaled
    alike (helper-58: a grey one had been lost), the other metadata (an ICC profile) kept."""
    depth = SBIT_DEPTH[im.mode]
    levels = np.asarray(im)
    scaled = _low_bits(levels, significant, depth, im.mode in ALPHA_MODES)
    if scaled is None:
        return im
    out = Image.fromarray(scaled)
    out.info = dict(im.info)
    if (key := im.info.get("transparency")) is not None and im.mode not in ALPHA_MODES:  # its colour channels scaled
        keys = np.atleast_1d(np.asarray(key, np.float64))
        bits = np.asarray([significant[min(c, len(significant) - 1)] for c in range(len(keys))], np.float64)
        after = np.rint(keys * (2**depth - 1) / (2**bits - 1)).astype(np.int64)
        out.info["transparency"] = int(after[0]) if np.ndim(key) == 0 else tuple(int(v) for v in after)
    return out


# A 16-bit colour PNG (RGB, RGBA, grey + alpha) Pillow decodes at 8 bits, keeping each sample's
# high byte: 8-bit samples stored unscaled read black, a 16-bit colour key cannot match. Its raw
# mode (Pillow's) -> the raw mode whose unpacking of the same rows gives the low bytes (RGB,
# RGBA: little-endian reads of the big-endian samples; grey + alpha: the four bytes as they lie)
DEEP_COLOUR = {"RGB;16B": "RGB;16L", "RGBA;16B": "RGBA;16L", "LA;16B": "RGBA"}


def _png_samples16(data: bytes, rawmode: str) -> tuple[np.ndarray, dict]:
    """(uint16 [H, W, C], info): a 16-bit colour PNG's samples (C 3, 4 or 2), every byte of
    them, from two decodes of its image data by Pillow (the rows unfiltered as Pillow does,
    interlaced or not) through the raw modes of :data:`DEEP_COLOUR`, and Pillow's ``info``
    of the whole file (chunks after the image data included: an ``eXIf`` there, helper-59)."""

    def decoded(mode: str | None) -> tuple[np.ndarray, dict]:
        with Image.open(io.BytesIO(data)) as im:
            if mode is not None:
                im.tile = [tuple(im.tile[0][:3]) + (mode,)]
            return np.asarray(im).astype(np.uint16), im.info  # (the info of the whole file, once loaded)

    low, info = decoded(DEEP_COLOUR[rawmode])
    if rawmode == "LA;16B":  # (grey high, grey low, alpha high, alpha low) per pixel
        return np.stack([low[..., 0] << 8 | low[..., 1], low[..., 2] << 8 | low[..., 3]], -1), info
    return decoded(None)[0] << 8 | low, info


def _deep_colour_png(im: Image.Image, significant: tuple[int, ...] | None, gamma: float | None) -> Image.Image | None:
    """A 16-bit colour PNG (:data:`DEEP_COLOUR`) read at all 16 bits, its ``sBIT``
    (``significant``), colour key (tRNS) and ``gamma`` applied there, then shown at 8 bits per
    sample as a viewer shows it on an 8-bit display (rounded, where Pillow truncates): an
    8-bit RGB or RGBA image (grey + alpha: LA) with the file's other metadata (ICC profile,
    EXIF). None for any other image, or one no longer backed by its file."""
    fp = getattr(im, "fp", None)
    rawmode = im.tile[0][3] if im.format == "PNG" and len(im.tile) == 1 and fp is not None else None
    if rawmode not in DEEP_COLOUR:
        return None
    at = fp.tell()
    fp.seek(0)
    data = fp.read()
    fp.seek(at)
    levels, info = _png_samples16(data, rawmode)
    alpha = rawmode != "RGB;16B"
    key = im.info.get("transparency") if not alpha else None
    keyed = np.all(levels == np.asarray(key, np.uint16), -1) if np.ndim(key) == 1 and len(key) == 3 else None
    if significant is not None and (scaled := _low_bits(levels, significant, 16, alpha)) is not None:
        levels = scaled
    if gamma is not None:
        colour = levels[..., :-1] if alpha else levels
        levels = np.concatenate([_gamma_levels(colour, gamma, 65535), levels[..., colour.shape[-1] :]], -1)
    shown = ((levels.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    if keyed is not None:
        shown = np.dstack([shown, np.where(keyed, 0, 255).astype(np.uint8)])
    out = Image.fromarray(shown)  # RGB, RGBA or LA
    out.info = {k: v for k, v in info.items() if k not in ("transparency", "gamma")}
    return out


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image file as displayed (EXIF orientation applied), read without
    decoding its pixels: a PNG's pixels only where metadata that may turn it (an ``eXIf`` or a
    text chunk: XMP, ImageMagick's raw EXIF) follows them, which Pillow reads by decoding the
    image (its ``getexif`` loads every PNG without an ``eXIf`` before the pixels: 2,048
    decodes of a cohort's survey, 16% of a 1,024-patient ``Run.create``)."""
    with Image.open(path) as im:
        w, h = im.size
        return (h, w) if _orientation(im) in (5, 6, 7, 8) else (w, h)


def exif_orientation(path: Path) -> int:
    """The EXIF Orientation (1-8, :data:`ORIENTATIONS`) an image file is shown by, 1 where it
    has none (or a value no viewer turns by), read as :func:`image_size` reads it, without
    decoding its pixels but where metadata follows them."""
    with Image.open(path) as im:
        return _orientation(im)


def _orientation(im: Image.Image) -> int:
    exif = Image.Image.getexif(im) if _metadata_read_at_open(im) else im.getexif()
    orientation = int(exif.get(ORIENTATION, 1) or 1)
    return orientation if orientation in ORIENTATIONS else 1


# PNG chunks from which Pillow takes an orientation (eXIf; XMP in iTXt; ImageMagick's "Raw
# profile type exif" in tEXt or zTXt): read with the header where they precede the image data
_PNG_METADATA = (b"eXIf", b"iTXt", b"tEXt", b"zTXt")


def _metadata_read_at_open(im: Image.Image) -> bool:
    """Whether everything Pillow's ``getexif`` could read of ``im`` (a PNG) was read when it was
    opened: no chunk of :data:`_PNG_METADATA` after its first IDAT. False for other formats
    (their ``getexif`` decodes nothing) and unreadable chunk lists."""
    chunks = png_chunks(im)
    if chunks is None:
        return False
    first_data = chunks.index(b"IDAT")
    return not any(kind in _PNG_METADATA for kind, _ in chunks.order[first_data:])


def open_upright(path: Path) -> Image.Image:
    """An image file decoded as shown (:func:`displayed`: upright, an ICC profile applied), at
    its own bit depth: for writers that copy pixels without metadata (``deidentify``), whose
    copy then reads as the original."""
    with Image.open(path) as im:
        return displayed(im).copy()


def verify_image(path: Path, max_pixels: int) -> np.ndarray:
    """Checks that ``path`` is a whole PNG/JPEG this decoder reads, within ``max_pixels``,
    and returns it decoded (:func:`read_image`: float32 [H, W, 3], upright). The whole file is
    checked: every chunk's CRC (``verify``, which a plain decode skips for image data), then a
    full decode through
    :func:`read_image` (which catches truncated files ``verify`` lets through, and pixel modes
    it does not read). :class:`ImageTooLargeError` before any pixel is decoded; ValueError or
    OSError (PIL's) saying what is wrong otherwise, :class:`DamagedImageError` for a PNG or
    JPEG whose structure is not whole (:func:`damage`); a malformed file on which the decoder
    fails another way (PIL's IndexError on a PNG with no image data) as ValueError."""
    try:
        return _verified(path, max_pixels)
    except (SyntaxError, OSError, ValueError) as e:  # (PIL's UnidentifiedImageError is an OSError)
        if isinstance(e, ImageTooLargeError) or not (why := damage(path, e)):
            raise
        raise DamagedImageError(why) from e
    except (IndexError, KeyError, TypeError, struct.error, EOFError, ZeroDivisionError) as e:  # the decoder's own
        if why := damage(path, e):
            raise DamagedImageError(why) from e
        raise ValueError(f"the decoder fails on it ({type(e).__name__}: {e})") from e


def _verified(path: Path, max_pixels: int) -> np.ndarray:
    try:
        with Image.open(path) as im:
            fmt, (w, h) = im.format, im.size
            if w * h > max_pixels:
                raise ImageTooLargeError(f"image is {w}x{h} = {w * h / 1e6:.0f} megapixels")
            im.verify()
    except Image.DecompressionBombError as e:  # PIL's own, larger limit: refused at open
        pixels = re.search(r"\((\d+) pixels\)", str(e))
        raise ImageTooLargeError(
            f"image is {int(pixels[1]) / 1e6:.0f} megapixels" if pixels else "image is too large for PIL"
        ) from e
    except SyntaxError as e:  # PIL's verify reports some broken chunks this way
        raise ValueError(f"SyntaxError: {e}") from e
    # a JPEG with a Multi-Picture Format segment (an MPO: a phone's Ultra HDR photo, a stereo
    # camera's; Pillow names it MPO) is a JPEG whose first picture a viewer shows, as read here
    # (helper-107: refused as "image format MPO")
    fmt = "JPEG" if fmt == "MPO" else fmt
    if fmt not in READABLE_FORMATS:
        raise ImageFormatError(
            f"a {fmt} image{' named ' + Path(path).suffix if Path(path).suffix else ''}: this reader takes PNG and "
            "JPEG; save it as PNG (lossless)"
        )
    if fmt == "PNG":
        with Path(path).open("rb") as f:
            chunks = png.read_chunks(f, image_data=True)
        if chunks and (short := png.image_data_shortfall(chunks)):
            raise DamagedImageError(f"damaged PNG: {short}")
    image = read_image(path)  # (its own failures first: a file cut short is said by where it ends)
    if fmt == "JPEG" and (why := jpeg_data_damage(Path(path).read_bytes())):
        raise DamagedImageError(f"damaged JPEG: {why}")
    return image


def read_image(path: Path) -> np.ndarray:
    """An image file (PNG/JPEG, or a clip's frame) as float32 [H, W, 3] in [0, 1], upright:
    the one decoder of every still and frame (:func:`upright`, :func:`to_unit_rgb`)."""
    with Image.open(path) as im:
        return to_unit_rgb(displayed(im))


def read_opacity(path: Path) -> np.ndarray | None:
    """The opacity of an image file as float32 [H, W] in [0, 1], upright: its alpha channel, or
    its palette's or colour key's transparency (PNG tRNS); None where the file has neither (or
    is not an 8-bit mode). :func:`read_image` composites the picture over black with it; a
    lesion mask drawn in the alpha channel (white on transparent, as annotation tools save one)
    needs it itself."""
    with Image.open(path) as im:
        if im.mode not in EIGHT_BIT_MODES or not (im.mode in ALPHA_MODES or "transparency" in im.info):
            return None
        if (deep := _deep_colour_png(im, png_significant_bits(im, png_chunks(im)), None)) is not None:
            im = deep  # a 16-bit one's key or alpha at all its bits, as read_image reads them
        return np.asarray(upright(im).convert("RGBA"), dtype=np.float32)[..., 3] / np.float32(255.0)


def decode_image(encoded: bytes, size: int) -> np.ndarray:
    """Encoded PNG/JPEG bytes -> float32 [size, size, 3] in [0, 1], upright."""
    with Image.open(io.BytesIO(encoded)) as im:
        return resize(to_unit_rgb(displayed(im)), size)
