"""A PNG's chunks as its file holds them, and the files readers read apart.

Pillow (this project's decoder) and libpng (the reader behind most viewers) agree on a valid
PNG. On an invalid one they part: libpng ignores a colour chunk out of place (``gAMA`` after
``PLTE``) or of the wrong length (a one-byte ``sBIT`` on an RGB image), a palette's ``tRNS``
before its ``PLTE`` or longer than it, keeps the first of a chunk held twice, and refuses an
``IHDR`` with a method the specification does not define; Pillow had applied every one of
them (helper-59: a palette image read black, another brightened, 4-bit samples scaled by 17,
where a viewer shows them as stored). Such a file is refused, naming the chunk
(:func:`disagreement`): what a viewer shows and what would be read differ. The rules are the
PNG specification's (3rd edition, 5.6 chunk ordering, 11.2-11.3 the chunks' lengths and
values) as libpng 1.6 enforces them (``pngrutil.c``: "out of place", "invalid",
"duplicate").
"""

from __future__ import annotations

import dataclasses
import io
import struct
import zlib
from typing import BinaryIO

SIGNATURE = b"\x89PNG\r\n\x1a\n"
# samples per pixel by IHDR colour type (0 grey, 2 RGB, 3 palette, 4 grey + alpha, 6 RGBA), and
# the bit depths each allows (PNG specification 11.2.2)
CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}
# The chunks judged are those that change the picture read (this reader applies each: the
# palette, transparency, gamma, ICC profile, significant bits, sRGB and cICP intents, EXIF
# orientation); where the others (bKGD, pHYs, cHRM, text) stand changes nothing read.
# Chunks the specification allows once in a file:
ONCE = (b"IHDR", b"PLTE", b"gAMA", b"iCCP", b"sBIT", b"sRGB", b"cICP", b"tRNS", b"eXIf")
# the critical chunks every reader knows (PNG specification 5.6); any other whose name begins
# with a capital letter is critical too, and a reader that does not know it refuses the file
CRITICAL = (b"IHDR", b"PLTE", b"IDAT", b"IEND")
# colour chunks that must come before PLTE and the image data; after either, libpng ignores them
BEFORE_PLTE = (b"gAMA", b"iCCP", b"sBIT", b"sRGB", b"cICP")
# chunks that must come before the image data (tRNS also after a palette image's PLTE)
BEFORE_IDAT = (b"PLTE", b"tRNS")
# Adam7's passes: (first column, first row, column step, row step) (PNG specification 8.2)
ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


@dataclasses.dataclass(frozen=True)
class Chunks:
    """A PNG's chunks in file order: (type, data) pairs up to ``IEND``, an ``IDAT``'s data left
    out (b"") so that the file is walked without reading its pixels, unless it was read with
    them (:func:`read_chunks`)."""

    order: tuple[tuple[bytes, bytes], ...]

    def first(self, kind: bytes) -> bytes | None:
        """The data of the first ``kind`` chunk, or None."""
        return next((data for k, data in self.order if k == kind), None)

    def count(self, kind: bytes) -> int:
        return sum(k == kind for k, _ in self.order)

    def index(self, kind: bytes) -> int:
        """Where the first ``kind`` chunk stands (len(order) where there is none)."""
        return next((i for i, (k, _) in enumerate(self.order) if k == kind), len(self.order))

    @property
    def header(self) -> tuple[int, ...] | None:
        """IHDR's (width, height, bit depth, colour type, compression, filter, interlace), or
        None where the file holds no whole IHDR."""
        data = self.first(b"IHDR")
        return struct.unpack(">IIBBBBB", data) if data is not None and len(data) == 13 else None


def read_chunks(fp: BinaryIO, image_data: bool = False) -> Chunks | None:
    """The chunks of the PNG file ``fp`` (a binary file, read from its start, its position
    kept), each chunk's data but an IDAT's read (its too with ``image_data``); None where it
    does not begin with the PNG signature. A file cut short ends the list where it ends (its damage is
    :func:`lnm_jax.data.pixels.decode.png_damage`'s to say)."""
    at, order = fp.tell(), []
    try:
        fp.seek(0)
        if fp.read(len(SIGNATURE)) != SIGNATURE:
            return None
        while len(head := fp.read(8)) == 8:
            length, kind = struct.unpack(">I4s", head)
            if kind == b"IDAT" and not image_data:
                order.append((kind, b""))
                fp.seek(length, io.SEEK_CUR)
            else:
                order.append((kind, fp.read(length)))
            fp.seek(4, io.SEEK_CUR)  # its CRC
            if kind == b"IEND":
                break
        return Chunks(tuple(order))
    finally:
        fp.seek(at)


def disagreement(chunks: Chunks) -> str | None:
    """Why libpng and Pillow would read the PNG of ``chunks`` apart (module docstring), in
    words, or None where they agree: an IHDR field the specification does not define, a chunk
    before IHDR, an unknown critical chunk, image data split by another chunk (libpng refuses
    these), a chunk of :data:`ONCE` held twice, a colour chunk after PLTE or the image data, a
    palette's tRNS before its PLTE, or an sBIT, tRNS, gAMA, sRGB or iCCP whose length or values
    its image cannot have (libpng ignores these, Pillow applied them)."""
    header = chunks.header
    if header is None:
        return None  # no IHDR to judge by: Pillow refuses such a file itself
    _, _, depth, colour, compression, filtering, interlace = header
    said = "libpng, behind most viewers, refuses the file"
    if colour not in DEPTHS or depth not in DEPTHS[colour]:
        return f"its IHDR's bit depth {depth} with colour type {colour} is none the PNG specification defines: {said}"
    methods = (("compression", compression, (0,)), ("filter", filtering, (0,)), ("interlace", interlace, (0, 1)))
    for name, value, allowed in methods:
        if value not in allowed:
            return f"its IHDR's {name} method {value} is none the PNG specification defines: {said}"
    if (first := chunks.order[0][0]) != b"IHDR":  # (helper-61: a gAMA before IHDR had been applied)
        where = f"its first chunk is {first.decode('latin-1')!r}, not IHDR"
        return f"{where}, which the PNG specification puts first: {said}"
    if unknown := [k for k, _ in chunks.order if 65 <= k[0] <= 90 and k not in CRITICAL]:
        return (
            f"it holds the critical chunk {unknown[0].decode('latin-1')!r} (a capital first letter, PNG specification "
            f"5.4), which no reader knows: {said}"
        )
    idats = [i for i, (k, _) in enumerate(chunks.order) if k == b"IDAT"]
    if idats and idats[-1] - idats[0] + 1 != len(idats):
        between = next(k for k, _ in chunks.order[idats[0] : idats[-1]] if k != b"IDAT").decode("latin-1")
        return f"its image data (IDAT) is split by a {between!r} chunk, where IDAT chunks follow one another: {said}"
    if twice := [k.decode("latin-1") for k in ONCE if chunks.count(k) > 1]:
        return (
            f"it holds {' and '.join(repr(k) for k in twice)} more than once, which the PNG specification allows "
            "once: readers differ on which applies (libpng, behind most viewers, the first; Pillow the last), so what "
            "a viewer shows and what would be read can differ; save the picture again with one"
        )
    plte, idat = chunks.index(b"PLTE"), chunks.index(b"IDAT")
    for i, (kind, data) in enumerate(chunks.order):
        if kind in BEFORE_PLTE and i > min(plte, idat):
            return _ignored(kind, f"after {'PLTE' if plte < idat else 'the image data (IDAT)'}, out of place")
        if kind in BEFORE_IDAT and i > idat:
            return _ignored(kind, "after the image data (IDAT), out of place")
        if kind == b"tRNS" and colour == 3 and i < plte:
            return _ignored(kind, "before the palette (PLTE), out of place")
        if why := _invalid(kind, data, depth, colour, len(chunks.first(b"PLTE") or b"") // 3):
            return _ignored(kind, why)
    return None


def _invalid(kind: bytes, data: bytes, depth: int, colour: int, entries: int) -> str | None:
    """Why libpng takes chunk ``kind`` of ``data`` as invalid for an image of ``depth`` and
    ``colour`` type with a palette of ``entries``, or None."""
    if kind == b"sBIT":
        want, top = (3, 8) if colour == 3 else (CHANNELS[colour], depth)
        if len(data) != want:
            return f"of {len(data)} byte(s) where this image's has {want}, invalid"
        if any(not 0 < b <= top for b in data):
            return f"saying {'/'.join(map(str, data))} significant bits of {top}, invalid"
    if kind == b"gAMA" and (len(data) != 4 or not struct.unpack(">I", data)[0]):
        return "of the wrong length or zero, invalid"
    if kind == b"iCCP" and (b"\0" not in data[:80] or data[data.index(b"\0") + 1 : data.index(b"\0") + 2] != b"\0"):
        return "without a profile name ended by a zero byte and compression method 0, invalid"
    if kind == b"sRGB" and (len(data) != 1 or data[0] > 3):  # (helper-61: it had hidden a gAMA viewers apply)
        return "not one byte of a rendering intent 0-3, invalid"
    if kind == b"tRNS":
        if colour in (4, 6):
            return None  # beside an alpha channel: libpng and Pillow alike ignore it
        want = {0: 2, 2: 6}.get(colour)
        if (want is not None and len(data) != want) or (colour == 3 and not 0 < len(data) <= entries):
            return f"of {len(data)} bytes, more than the palette's {entries} entries or not this image's, invalid"
    return None


def _ignored(kind: bytes, why: str) -> str:
    return (
        f"its {kind.decode('latin-1')!r} chunk is {why}: libpng, behind most viewers, ignores it, Pillow had applied "
        "it, so what a viewer shows and what would be read differ; save the picture again with a tool that writes a "
        "valid PNG"
    )


# cICP's colour primaries and transfer function by ITU-T H.273 code point: sRGB is primaries 1
# (BT.709) with transfer 13 (IEC 61966-2-1), matrix 0 (RGB), full range 1
CICP_SRGB = (1, 13, 0, 1)
CICP_TRANSFERS = {1: "BT.709", 8: "linear", 13: "sRGB", 16: "PQ, an HDR picture", 18: "HLG, an HDR picture"}


def cicp_refusal(data: bytes) -> str | None:
    """Why a PNG whose ``cICP`` chunk holds ``data`` is not read, or None where it says sRGB.
    cICP takes precedence over iCCP, sRGB and gAMA (PNG specification, 3rd edition, 4.3), so
    a viewer that reads it shows the picture through it: an sRGB one as stored (a gAMA or iCCP
    beside it, a fallback for older readers, does not apply: helper-59's gAMA 1.0 had
    brightened one), any other (HDR's PQ or HLG, wide-gamut primaries, narrow range) through
    conversions this reader does not make."""
    if len(data) != 4:
        return f"its 'cICP' chunk is of {len(data)} bytes where it has 4, invalid"
    if tuple(data) == CICP_SRGB:
        return None
    primaries, transfer, matrix, full = data
    said = f"colour primaries {primaries}, transfer function {transfer} ({CICP_TRANSFERS.get(transfer, 'not sRGB')})"
    said += ", narrow range" if not full else ""
    return (
        f"its 'cICP' chunk says {said}, which a viewer shows the picture through and this reader does not read (it "
        "reads sRGB, cICP 1/13/0/1); save the picture as sRGB"
    )


# sRGB's (BT.709's) chromaticities as cHRM holds them (x, y of white, red, green, blue; IEC
# 61966-2-1), and how far one may stand from them (cHRM's units are 1/100,000; encoders round
# sRGB's to 0.3127/0.3290 or 0.31271/0.32902)
SRGB_CHROMATICITIES = (0.3127, 0.3290, 0.64, 0.33, 0.30, 0.60, 0.15, 0.06)
CHROMATICITY_TOLERANCE = 0.005


def chromaticity_refusal(chunks: Chunks) -> str | None:
    """Why a colour PNG whose ``cHRM`` gives other primaries or white point than sRGB's, with
    no ``iCCP``, ``sRGB`` or ``cICP`` (which take precedence: PNG specification, 3rd edition,
    4.3), is not read, or None. Browsers (Chrome, Firefox) show such a picture converted through
    its cHRM and gAMA, most image viewers as stored: readers apart (helper-59's class; a cHRM of
    Adobe RGB's primaries had been ignored in silence). A grey picture has no primaries to
    convert: its cHRM changes nothing shown (a grey colour type here; grey pixels stored as
    colour, the caller's to tell: :func:`lnm_jax.data.pixels.decode.displayed`)."""
    data, header = chunks.first(b"cHRM"), chunks.header
    if data is None or header is None or header[3] not in (2, 3, 6) or len(data) != 32:
        return None  # (an invalid cHRM is ignored by libpng and Pillow alike)
    if any(chunks.first(k) is not None for k in (b"iCCP", b"sRGB", b"cICP")):
        return None
    given = tuple(v / 100000 for v in struct.unpack(">8I", data))
    if max(abs(a - b) for a, b in zip(given, SRGB_CHROMATICITIES)) <= CHROMATICITY_TOLERANCE:
        return None
    (wx, wy), primaries = given[:2], ", ".join(f"{given[i]:.4g}/{given[i + 1]:.4g}" for i in (2, 4, 6))
    return (
        f"its 'cHRM' chunk gives primaries {primaries} (red, green, blue x/y) and white {wx:.4g}/{wy:.4g}, not "
        "sRGB's: browsers show its colours converted through them, most viewers as stored; save the picture as sRGB "
        "(or with its ICC profile)"
    )


def image_data_shortfall(chunks: Chunks) -> str | None:
    """Where the image data of a PNG (``chunks``, read with their image data:
    :func:`read_chunks`) inflates to fewer rows than IHDR says, in words (Pillow reads the rows missing as black;
    libpng stops with "Not enough image data"), or None. Interlaced images are counted pass by
    pass (Adam7)."""
    header = chunks.header
    if header is None:
        return None
    width, height, depth, colour, _, _, interlace = header
    bits = depth * CHANNELS.get(colour, 1)
    passes = ADAM7 if interlace == 1 else ((0, 0, 1, 1),)
    sizes = [(-(-(width - x0) // dx), -(-(height - y0) // dy)) for x0, y0, dx, dy in passes]
    expected = sum(h * (1 + (w * bits + 7) // 8) for w, h in sizes if w > 0 and h > 0)
    stream = b"".join(data for kind, data in chunks.order if kind == b"IDAT")
    inflate, pending, held = zlib.decompressobj(), stream, 0
    try:
        while pending and held < expected:
            held += len(inflate.decompress(pending, 1 << 22))  # a bounded piece at a time
            pending = inflate.unconsumed_tail
    except zlib.error:
        return None  # a stream that does not inflate: the decoder says so
    if held >= expected:
        return None
    if interlace == 1:
        return f"its image data holds {held} of the {expected} bytes its interlaced {width}x{height} picture needs"
    row = 1 + (width * bits + 7) // 8
    return (
        f"its image data holds {held // row} of the {height} rows its IHDR says (the rest would be read black; "
        "libpng stops with 'Not enough image data'): a file written or copied short"
    )
