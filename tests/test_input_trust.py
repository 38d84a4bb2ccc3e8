"""Every real file read as the scanner meant it, or refused (issue 27): the cases of
../shared/cases rebuilt here on data each test makes, with the right value as the assertion,
plus other members of each kind."""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from support import own_pictures

from lnm_jax.data.cohorts.manifest import (
    BLANK_IMAGE,
    DIM_IMAGE,
    DUPLICATE_COLUMN,
    EXTRA_CELLS,
    HEADER_MISMATCH,
    MASK_NOT_SEGMENTATION,
    MISNAMED_COLUMN,
    MISSING_CLASS,
    MISSING_FILE,
    NOT_ULTRASOUND,
    SAME_PICTURE,
    SHARED_IMAGE,
    SHORT_ROW,
    UNREADABLE_CLIP,
    UNREADABLE_IMAGE,
    ManifestError,
    read_manifest,
)
from lnm_jax.data.pixels import clips, dicom, sources
from lnm_jax.data.pixels.decode import decode_image, image_size, read_image, read_opacity, verify_image
from lnm_jax.data.pixels.sources import Framing, decode_input, resolve
from lnm_jax.fileio import OutputPathError

RAMP = np.tile(np.arange(0, 256, 8, dtype=np.uint8), (24, 1))  # 24x32 gray ramp, every 8th level
PNG_ATOL = 1e-6  # exact formats: float32 rounding of v / 255 vs v * 257 / 65535
JPEG_ATOL = 6 / 255  # quality-95 JPEG of a smooth ramp: a few grey levels


def _write(path, im: Image.Image, **kw):
    im.save(path, **kw)
    return path


def _dcm(path, pixels, **attrs):
    ds = dicom.new_dataset(pixels, attributes=attrs)
    dicom.write_dataset(ds, path)
    return path


def _manifest(path, rows, columns=("patient_id", "bmode", "ceus", "us_lnm", "lnm")):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(columns)
        w.writerows(rows)
    return path


def _codes(err: ManifestError) -> set[str]:
    return {p.code for p in err.problems}


# ------------------------------------------------------------- one decoder, every format


def _formats(tmp_path):
    """The same picture (RAMP) in every pixel format and container the loader reads:
    (name, path, tolerance)."""
    rgb = np.repeat(RAMP[..., None], 3, axis=-1)
    out = [
        ("L png", _write(tmp_path / "l.png", Image.fromarray(RAMP)), PNG_ATOL),
        ("I;16 png", _write(tmp_path / "i16.png", Image.fromarray(RAMP.astype(np.uint16) * 257)), PNG_ATOL),
        ("RGB png", _write(tmp_path / "rgb.png", Image.fromarray(rgb)), PNG_ATOL),
        ("LA png", _write(tmp_path / "la.png", Image.fromarray(RAMP).convert("LA")), PNG_ATOL),
        ("RGBA png", _write(tmp_path / "rgba.png", Image.fromarray(rgb).convert("RGBA")), PNG_ATOL),
        ("P png", _write(tmp_path / "p.png", Image.fromarray(RAMP).convert("P")), PNG_ATOL),
        ("L jpeg", _write(tmp_path / "l.jpg", Image.fromarray(RAMP), quality=95), JPEG_ATOL),
        ("8-bit dicom", _dcm(tmp_path / "g8.dcm", RAMP), PNG_ATOL),
        ("16-bit dicom", _dcm(tmp_path / "g16.dcm", RAMP.astype(np.uint16) * 257), PNG_ATOL),
    ]
    # palette with transparency: its transparent entry is RAMP's black, which over black reads alike
    p = Image.fromarray(RAMP).convert("P")
    p.info["transparency"] = 0
    out.append(("P+transparency png", _write(tmp_path / "pt.png", p, transparency=0), PNG_ATOL))
    # EXIF orientation 6 (rotate 90 clockwise to display): stored rotated, shown upright
    ex = Image.Exif()
    ex[0x0112] = 6
    stored = Image.fromarray(RAMP).transpose(Image.Transpose.ROTATE_90)
    out.append(("EXIF-6 jpeg", _write(tmp_path / "exif6.jpg", stored, quality=95, exif=ex), JPEG_ATOL))
    return out


def test_every_format_and_container_reads_as_the_8bit_still(tmp_path):
    want = decode_input(_write(tmp_path / "ref.png", Image.fromarray(RAMP)), "bmode", size=16, patient_id="ref")
    for name, path, atol in _formats(tmp_path):
        # as a still, as a one-frame CEUS frame folder (the clip path), and as a CEUS still
        folder = tmp_path / f"clip_{path.name}"
        if path.suffix != ".dcm":
            folder.mkdir()
            for k in range(2):
                shutil.copy(path, folder / f"frame_{k}{path.suffix}")
        for label, got in (
            ("still", decode_input(path, "bmode", size=16, patient_id=name)),
            ("ceus", decode_input(path, "ceus", size=16, patient_id=name)),
            *(
                [("frame folder", decode_input(folder, "ceus", size=16, patient_id=name, clip_frames=2)[0])]
                if folder.is_dir()
                else []
            ),
        ):
            np.testing.assert_allclose(got, want, atol=atol, err_msg=f"{name} as {label}")


def test_a_transparent_pixel_reads_as_black_whatever_is_stored_under_it(tmp_path):
    """helper-56: an RGBA PNG whose left columns were transparent over stored white read as
    white there; a viewer shows its own background, and an encoder may store any colour under
    a transparent pixel. Every transparency (alpha, a palette entry, a colour key, 8 or 16
    bits) is composited over black, an ultrasound's background; a partly transparent pixel is
    blended toward it; an array with alpha given to the exported runtime reads as the file."""
    from lnm_jax.serving import unit_rgb

    rgb = np.repeat(RAMP[..., None], 3, axis=-1)
    want = np.repeat(RAMP[..., None] / np.float32(255.0), 3, axis=-1)
    want[:, :10] = 0.0
    for under in (255, 137, 0):
        rgba = np.dstack([rgb, np.full(RAMP.shape, 255, np.uint8)])
        rgba[:, :10] = (under, under, under, 0)
        path = _write(tmp_path / f"under{under}.png", Image.fromarray(rgba, "RGBA"))
        np.testing.assert_allclose(read_image(path), want, atol=PNG_ATOL, err_msg=f"white {under} under transparency")
        np.testing.assert_allclose(unit_rgb(rgba), want, atol=PNG_ATOL)
        # a grey + alpha array as its LA file reads (helper-61: read as a clip of frames 2 pixels wide)
        np.testing.assert_allclose(unit_rgb(rgba[..., [0, 3]]), want, atol=PNG_ATOL)
        # channel-first (PyTorch's layout) had read as a clip of its channels (helper-84)
        with pytest.raises(ValueError, match=r"shape \(4, 24, 32\) reads as channel-first"):
            unit_rgb(np.moveaxis(rgba, -1, 0))
        la = _write(tmp_path / f"la{under}.png", Image.fromarray(rgba[..., [0, 3]], "LA"))
        np.testing.assert_allclose(read_image(la), want, atol=PNG_ATOL, err_msg=f"LA, {under} under transparency")
    half = np.dstack([rgb, np.full(RAMP.shape, 128, np.uint8)])
    blended = RAMP[..., None] / np.float32(255.0) * np.float32(128 / 255)
    np.testing.assert_allclose(
        read_image(_write(tmp_path / "half.png", Image.fromarray(half, "RGBA"))),
        np.repeat(blended, 3, -1),
        atol=PNG_ATOL,
    )
    # a palette entry and colour keys (PNG tRNS): the level 248 (RAMP's brightest) made transparent
    keyed = np.repeat(RAMP[..., None] / np.float32(255.0), 3, axis=-1)
    keyed[RAMP == 248] = 0.0
    pal = Image.fromarray(RAMP).convert("P")
    pal_key = int(np.asarray(pal)[RAMP == 248][0])
    for name, im, key in (
        ("palette", pal, pal_key),
        ("grey key", Image.fromarray(RAMP), 248),
        ("colour key", Image.fromarray(rgb), (248, 248, 248)),
        ("16-bit grey key", Image.fromarray(RAMP.astype(np.uint16) * 257), 248 * 257),
    ):
        path = _write(tmp_path / f"{name}.png", im, transparency=key)
        np.testing.assert_allclose(read_image(path), keyed, atol=PNG_ATOL, err_msg=name)
    # a grey key beside sBIT, the samples in the low bits: scaled with them (helper-58: lost)
    low = (RAMP // 16).astype(np.uint8)  # 4-bit samples, 0-15
    path = _with_chunk(tmp_path / "sbit_key.png", Image.fromarray(low), b"sBIT", bytes([4]), transparency=15)
    got = read_image(path)[..., 0]
    assert got[low == 15].max() == 0 and got[low == 8].min() == pytest.approx(8 / 15, abs=PNG_ATOL)
    # the keys beside an ICC profile: kept (helper-59: the profile's transform had dropped them)
    from PIL import ImageCms

    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    lit = (RAMP != 248) & (RAMP > 0)
    for name, im, key, profile in (
        ("grey key", Image.fromarray(RAMP), 248, _gray_profile(1.0)),
        ("16-bit grey key", Image.fromarray(RAMP.astype(np.uint16) * 257), 248 * 257, _gray_profile(1.0)),
        ("colour key", Image.fromarray(rgb), (248, 248, 248), srgb),
    ):
        got = read_image(_write(tmp_path / f"{name} icc.png", im, transparency=key, icc_profile=profile))
        assert got[RAMP == 248].max() == 0 and got[lit].min() > 0, name
    # a 2- or 4-bit grey key, compared at the image's depth (helper-59: Pillow kept it in the
    # file's units, where it matched none of the samples it scales to 0-255)
    import struct
    import zlib

    for bits in (2, 4):
        levels = (RAMP // 2 ** (8 - bits)).astype(np.uint8)
        top = 2**bits - 1
        per = 8 // bits
        packed = sum(levels[:, k::per].astype(np.uint16) << (8 - bits * (k + 1)) for k in range(per)).astype(np.uint8)
        head = struct.pack(">IIBBBBB", RAMP.shape[1], RAMP.shape[0], bits, 0, 0, 0, 0)
        data = zlib.compress(b"".join(b"\0" + row.tobytes() for row in packed))
        path = _png_of(
            tmp_path / f"key{bits}.png", [(b"IHDR", head), (b"tRNS", struct.pack(">H", top)), (b"IDAT", data)]
        )
        want = np.where(levels == top, 0, levels * (255 // top)) / 255
        np.testing.assert_allclose(read_image(path)[..., 0], want, atol=PNG_ATOL, err_msg=f"{bits}-bit key")


def test_sixteen_bit_frame_folder_is_not_saturated(tmp_path):
    """Case clip16-frames-saturated: 16-bit PNG frames read as the same PNGs as stills."""
    frames = tmp_path / "clip"
    frames.mkdir()
    for k in range(3):
        Image.fromarray((RAMP.astype(np.uint16) * 257 // (k + 1)).astype(np.uint16)).save(frames / f"f{k}.png")
    clip = clips.read_frames(frames)
    for k in range(3):
        np.testing.assert_allclose(clip[k], read_image(frames / f"f{k}.png"), atol=0)
    assert 0.2 < clip[0].mean() < 0.6  # the ramp's mean, not white


def test_a_clip_whose_every_frame_is_nearly_black_is_said_so(tmp_path):
    """helper-59: a frame folder of 16-bit PNGs holding 8-bit values (each read at 1/256 of its
    brightness) was said nothing of, where the same frame as a still is ``dim_image``. A clip
    none of whose frames holds a picture is warned of as its brightest frame would be; a clip
    with a dark lead-in (CEUS before the contrast arrives) is not."""
    from lnm_jax.data.cohorts.manifest import check_clip

    speckle = np.random.default_rng(0).integers(40, 250, (48, 64), dtype=np.uint16)
    dim, lead_in = tmp_path / "dim", tmp_path / "lead_in"
    for folder in (dim, lead_in):
        folder.mkdir()
    for k in range(4):
        Image.fromarray(speckle * (k + 1) // 4).save(dim / f"f{k}.png")  # 8-bit values in a 16-bit PNG
        Image.fromarray((speckle * (k > 1)).astype(np.uint8)).save(lead_in / f"f{k}.png")
    said, _, pictures = check_clip(dim, 1)
    assert said[0] == DIM_IMAGE and said[1].startswith("no frame holds a picture; the brightest: nearly black"), said
    assert pictures == ()
    assert check_clip(lead_in, 1)[0] is None
    # a warned still's or clip's framing columns are checked all the same (a dim still's crop had not been)
    Image.fromarray(speckle).save(tmp_path / "dim.png")
    rows = [["A", "dim.png", "dim", 1, 1, '"0,0,80,40"', '"0,0,80,40"'], ["B", "", "lead_in", 0, 0, "", ""]]
    columns = ("patient_id", "bmode", "ceus", "us_lnm", "lnm", "bmode_crop", "ceus_crop")
    with pytest.raises(ManifestError) as e:
        read_manifest(_manifest(tmp_path / "m.csv", rows, columns))
    assert {(p.code, p.column) for p in e.value.problems if p.code != DIM_IMAGE} == {
        ("bad_image_option", "bmode_crop"),
        ("bad_image_option", "ceus_crop"),
    }, e.value


def _with_chunk(path, im: Image.Image, kind: bytes, data: bytes, *more: tuple[bytes, bytes], **save):
    """``im`` saved as a PNG with a ``kind`` chunk of ``data`` (and ``more`` (kind, data)
    pairs) after its IHDR (Pillow writes no sBIT, gAMA or sRGB)."""
    import struct
    import zlib

    buf = io.BytesIO()
    im.save(buf, "PNG", **save)
    png = buf.getvalue()
    chunks = b"".join(
        struct.pack(">I", len(d)) + k + d + struct.pack(">I", zlib.crc32(k + d)) for k, d in [(kind, data), *more]
    )
    path.write_bytes(png[:33] + chunks + png[33:])  # signature (8) + IHDR (25)
    return path


def _with_sbit(path, im: Image.Image, *bits: int):
    """``im`` saved as a PNG with an ``sBIT`` chunk of ``bits``."""
    return _with_chunk(path, im, b"sBIT", bytes(bits))


def test_a_png_gamma_is_read_as_a_viewer_shows_it(tmp_path):
    """A PNG's gAMA (PNG specification 12.2) tells the light its samples encode, and a viewer
    shows them through it: saved with gAMA 1.0 (linear samples), a stored 64 of 255 is shown as
    137 (sRGB-encoded); the model had read 64. Read as shown, in every mode and at 16 bits, a
    palette and a colour key's transparency kept; gAMA of sRGB-like encoding (1/2.2), or one
    beside an sRGB or iCCP chunk (which take precedence), reads as stored."""
    from lnm_jax.data.pixels.decode import srgb_encoded

    def gamma(path, im, g, *more, **save):
        return _with_chunk(path, im, b"gAMA", int(round(g * 100000)).to_bytes(4, "big"), *more, **save)

    rgb = np.repeat(RAMP[..., None], 3, axis=-1)
    for g in (1.0, 0.3):
        light = (RAMP / 255.0) ** (1 / g)
        want = np.repeat((np.rint(srgb_encoded(light) * 255) / 255)[..., None], 3, axis=-1)
        for name, im in (
            ("L", Image.fromarray(RAMP)),
            ("RGB", Image.fromarray(rgb)),
            ("P", Image.fromarray(RAMP).convert("P")),
            ("LA", Image.fromarray(RAMP).convert("LA")),
        ):
            got = read_image(gamma(tmp_path / f"{name}{g}.png", im, g))
            np.testing.assert_allclose(got, want, atol=PNG_ATOL, err_msg=f"{name}, gAMA {g}")
        wide = RAMP.astype(np.uint16) * 257
        want16 = np.rint(srgb_encoded((wide / 65535.0) ** (1 / g)) * 65535) / 65535
        got = read_image(gamma(tmp_path / f"i16{g}.png", Image.fromarray(wide), g))
        np.testing.assert_allclose(got, np.repeat(want16[..., None], 3, axis=-1), atol=PNG_ATOL, err_msg="16-bit")
    assert round(float(read_image(gamma(tmp_path / "dark.png", Image.fromarray(RAMP), 1.0))[0, 8, 0]) * 255) == 137
    # transparency kept: the colour key's pixels over black
    keyed = read_image(gamma(tmp_path / "keyed.png", Image.fromarray(rgb), 1.0, transparency=(248, 248, 248)))
    assert keyed[RAMP == 248].max() == 0 and keyed[RAMP == 128].min() > 0.7
    # as stored: sRGB-like gAMA, or an sRGB chunk beside it
    plain = read_image(_write(tmp_path / "plain.png", Image.fromarray(RAMP)))
    np.testing.assert_array_equal(read_image(gamma(tmp_path / "srgb.png", Image.fromarray(RAMP), 1 / 2.2)), plain)
    # a gAMA libpng would not apply (under 16 or over 625,000,000 units): stored values (helper-58:
    # 1 unit read black, 2**32 - 1 white)
    for units in (1, 2**32 - 1):
        odd = _with_chunk(tmp_path / f"odd{units}.png", Image.fromarray(RAMP), b"gAMA", units.to_bytes(4, "big"))
        np.testing.assert_array_equal(read_image(odd), plain)
    both = gamma(tmp_path / "both.png", Image.fromarray(RAMP), 1.0, (b"sRGB", b"\0"))
    with Image.open(both) as im:
        assert im.info["gamma"] == 1.0 and "srgb" in im.info
    np.testing.assert_array_equal(read_image(both), plain)
    # two gAMA chunks, which the specification allows once: libpng (most viewers) shows the first,
    # Pillow had read the last (linear here: 64 read as 137); refused, naming the chunk
    twice = gamma(tmp_path / "twice.png", Image.fromarray(RAMP), 1 / 2.2, (b"gAMA", (100000).to_bytes(4, "big")))
    with pytest.raises(ManifestError) as e:
        read_manifest(_manifest(tmp_path / "twice.csv", [["A", twice.name, "", 0, 1], ["B", "plain.png", "", 0, 0]]))
    assert [(p.row, p.column) for p in e.value.problems] == [(1, "bmode")], e.value
    assert "it holds 'gAMA' more than once, which the PNG specification allows once" in str(e.value), e.value


def test_a_colour_png_whose_chromaticities_are_not_srgbs_is_refused(tmp_path):
    """A colour PNG with a cHRM of Adobe RGB's primaries (no ICC profile, sRGB or cICP chunk
    over it) is shown converted by browsers and as stored by most viewers: it had been read as
    stored in silence. Refused naming the chunk; sRGB's own chromaticities, a cHRM under an
    sRGB chunk, and a grey picture's cHRM (no primaries to convert) read as before."""
    import struct

    colour = Image.fromarray(np.random.default_rng(6).integers(0, 255, (8, 8, 3), dtype=np.uint8))
    grey = colour.convert("L")
    adobe = struct.pack(">8I", 31270, 32900, 64000, 33000, 21000, 71000, 15000, 6000)
    srgb = struct.pack(">8I", 31270, 32900, 64000, 33000, 30000, 60000, 15000, 6000)
    refused = _with_chunk(tmp_path / "adobe.png", colour, b"cHRM", adobe)
    with pytest.raises(ValueError, match=r"its 'cHRM' chunk gives primaries 0.64/0.33, 0.21/0.71, 0.15/0.06 \(red"):
        read_image(refused)
    stored = np.asarray(colour, np.float32) / 255
    for name, im, chunks in (
        ("srgb.png", colour, [(b"cHRM", srgb)]),
        ("under_srgb.png", colour, [(b"sRGB", bytes([0])), (b"cHRM", adobe)]),
        ("grey.png", grey, [(b"cHRM", adobe)]),
        ("grey_as_rgb.png", grey.convert("RGB"), [(b"cHRM", adobe)]),  # (helper-69: refused)
    ):
        path = _with_chunk(tmp_path / name, im, *chunks[0], *chunks[1:])
        want = stored if im is colour else np.asarray(grey.convert("RGB"), np.float32) / 255
        np.testing.assert_array_equal(read_image(path), want)


def test_a_png_whose_sbit_says_fewer_bits_is_read_at_that_depth(tmp_path):
    """helper-50's trial of a3f0dab: a 16-bit PNG holding 12-bit samples (0-4095), its sBIT
    saying 12, was read at 1/16 of its brightness. The samples sit in the low bits: each is read
    as v / 4095, as a DICOM frame by its BitsStored; as a still, a frame folder's frame and
    encoded bytes alike. Samples shifted up as the PNG specification has an encoder store them
    (v * 16, or with the high bits replicated below), or a depth the samples exceed, are read
    as stored; an 8-bit grey (and grey + alpha) PNG with fewer significant bits alike."""
    twelve = np.tile(np.arange(0, 4096, 127, dtype=np.uint16)[:32], (24, 1))  # not all multiples of 16
    low = _with_sbit(tmp_path / "low.png", Image.fromarray(twelve), 12)
    want = np.repeat((twelve / 4095)[..., None], 3, axis=-1)
    tol = 0.5 / 65535 + 1e-6  # the 16-bit grid the samples are scaled onto, then float32 rounding
    np.testing.assert_allclose(read_image(low), want, atol=tol)
    assert decode_image(low.read_bytes(), 32).max() > 0.9
    # without sBIT the samples are read as stored (the file says 16 bits), and validation says so
    # (with white text burned in, helper-52's trial of eaf6508: the brightest samples are the text's)
    bare = _write(tmp_path / "bare.png", Image.fromarray(twelve))
    marked = twelve // 2  # a darker picture, as a real one read at 1/16 is (mean 1.5%), and a mark
    marked[2, 3:7] = 65535
    texted = _write(tmp_path / "texted.png", Image.fromarray(marked))
    # a bright picture small on a black screen is not a bit-depth matter (helper-53's trial of
    # bc14a45: it had been told of 12-bit samples)
    screen = np.zeros((200, 200, 3), np.uint8)
    screen[80:120, 60:100] = np.random.default_rng(3).integers(60, 250, (40, 40, 3), dtype=np.uint8)
    small = _write(tmp_path / "small.png", Image.fromarray(screen))
    rows = [
        ["A", low.name, "", 0, 0],
        ["B", bare.name, "", 1, 1],
        ["C", texted.name, "", 0, 1],
        ["D", "", small.name, 1, 0],
    ]
    cohort = read_manifest(_manifest(tmp_path / "m.csv", rows))
    from lnm_jax.data.cohorts.manifest import SIMILAR_IMAGE

    assert [(w.code, w.row, w.file) for w in cohort.warnings] == [
        (DIM_IMAGE, 2, str(bare)),
        (SIMILAR_IMAGE, 2, str(bare)),  # A's ramp read dim: one picture, brightness-normalised (stop 73)
        (DIM_IMAGE, 3, str(texted)),
        (DIM_IMAGE, 4, str(small)),
    ]
    assert "12-bit" in str(cohort.warnings[2]) and "12-bit" not in str(cohort.warnings[3]), cohort.warnings
    assert str(cohort.warnings[3]).endswith(
        "of the range, 4.0% of the samples brighter than 6.25%): a picture that fills little of a black frame (a small "
        "picture on a large screen capture?); frame it with its <input>_crop column (x0,y0,x1,y1)"
    ), cohort.warnings[2]
    assert str(cohort.warnings[0]).endswith(
        "nearly black (brightest sample 6.01%, mean 3.00% of the range, 0.0% of the samples brighter than 6.25%): "
        "samples stored in fewer bits than the file declares read so (12-bit values unscaled in a 16-bit PNG, a DICOM "
        "file's BitsStored above what its samples use), a picture exported too dark, or a picture that fills little "
        "of a black frame (a small picture on a large screen capture?); check how it was exported, or frame it with "
        "its <input>_crop column (x0,y0,x1,y1)"
    ), cohort.warnings[0]
    folder = tmp_path / "clip"
    folder.mkdir()
    for k in range(2):
        shutil.copy(low, folder / f"f{k}.png")
    np.testing.assert_allclose(clips.read_frames(folder)[1], want, atol=tol)
    for name, stored, bits in [
        ("shifted", twelve * 16, 12),
        ("replicated", twelve * 16 + twelve // 256, 12),
        ("exceeds", twelve * 16 + 3, 12),
        ("declared 16", twelve, 16),
    ]:
        got = read_image(_with_sbit(tmp_path / f"{name}.png", Image.fromarray(stored.astype(np.uint16)), bits))
        np.testing.assert_allclose(got[..., 0], stored / 65535, atol=1e-6, err_msg=name)
    six = (np.arange(24 * 32).reshape(24, 32) % 64).astype(np.uint8)  # 6-bit samples in an 8-bit PNG
    for mode, bits in (("L", (6,)), ("LA", (6, 8))):
        im = Image.fromarray(six).convert(mode)
        got = read_image(_with_sbit(tmp_path / f"six_{mode}.png", im, *bits))
        np.testing.assert_allclose(got[..., 0], np.rint(six / 63 * 255) / 255, atol=1e-6, err_msg=mode)


def _png16(path, samples: np.ndarray, *chunks: tuple[bytes, bytes], interlaced: bool = False, trailing=()):
    """A 16-bit PNG of ``samples`` (uint16 [H, W, C], C 2: grey + alpha, 3: RGB, 4: RGBA),
    which Pillow cannot write: its rows filtered with each of the five filter types in turn
    (PNG specification 9.2; the predictors from the unfiltered bytes), Adam7-interlaced or not,
    ``chunks`` (kind, data) after IHDR, ``trailing`` ones after the image data."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    def rows(image):  # [h, w, C] -> the filtered rows' bytes
        h, w, c = image.shape
        raw = image.astype(">u2").view(np.uint8).reshape(h, w * 2 * c).astype(np.int64)
        bpp = 2 * c
        left, up, upleft = (np.zeros_like(raw) for _ in range(3))
        left[:, bpp:], up[1:], upleft[1:, bpp:] = raw[:, :-bpp], raw[:-1], raw[:-1, :-bpp]
        p = left + up - upleft
        pa, pb, pc = np.abs(p - left), np.abs(p - up), np.abs(p - upleft)
        paeth = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, upleft))
        predicted = [0 * raw, left, up, (left + up) // 2, paeth]
        filtered = [((raw[y] - predicted[y % 5][y]) % 256).astype(np.uint8).tobytes() for y in range(h)]
        return b"".join(bytes([y % 5]) + row for y, row in enumerate(filtered))

    passes = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]
    subs = [samples[y0::dy, x0::dx] for x0, y0, dx, dy in passes] if interlaced else [samples]
    data = b"".join(rows(sub) for sub in subs if sub.size)
    h, w, c = samples.shape
    head = struct.pack(">IIBBBBB", w, h, 16, {2: 4, 3: 2, 4: 6}[c], 0, 0, int(interlaced))
    body = chunk(b"IHDR", head) + b"".join(chunk(k, d) for k, d in chunks)
    tail = b"".join(chunk(k, d) for k, d in trailing)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body + chunk(b"IDAT", zlib.compress(data)) + tail + chunk(b"IEND", b""))
    return path


def test_a_sixteen_bit_colour_png_is_read_at_all_its_bits(tmp_path):
    """Pillow decodes a 16-bit RGB, RGBA or grey + alpha PNG at 8 bits, keeping each sample's
    high byte: 8-bit or 12-bit samples stored unscaled under an sBIT saying so read black or
    at 1/16 of their brightness (a 16-bit grey PNG had been read right), a 16-bit colour key
    matched nothing, gAMA met truncated samples. Now all 16 bits are read (every filter type,
    interlaced or not), sBIT, the colour key and gAMA applied there, and the result rounded to
    8 bits as a viewer shows it; an 8-bit RGB PNG's sBIT is read as a grey one's is."""
    from lnm_jax.data.pixels.decode import srgb_encoded

    rng = np.random.default_rng(0)
    for c in (2, 3, 4):
        samples = rng.integers(0, 65536, (13, 19, c), dtype=np.uint16)
        shown = np.rint(samples / 257) / 255
        want = shown[..., :3] * shown[..., 3:] if c == 4 else shown
        if c == 2:  # grey + alpha
            want = np.repeat((shown[..., :1] * shown[..., 1:]), 3, axis=-1)
        for interlaced in (False, True):
            got = read_image(_png16(tmp_path / f"c{c}{interlaced}.png", samples, interlaced=interlaced))
            np.testing.assert_allclose(got, want, atol=1e-6, err_msg=f"{c} channels, interlaced {interlaced}")
    # samples in the low bits under an sBIT saying so: 8 and 12 bits, RGB and RGBA (alpha full)
    for bits in (8, 12):
        colour = rng.integers(0, 2**bits, (13, 19, 3), dtype=np.uint16)
        for c in (3, 4):
            samples = colour if c == 3 else np.dstack([colour, np.full(colour.shape[:2], 65535, np.uint16)])
            sbit = (b"sBIT", bytes([bits] * 3 + [16] * (c - 3)))
            got = read_image(_png16(tmp_path / f"sbit{bits}_{c}.png", samples, sbit))
            np.testing.assert_allclose(got, colour / (2**bits - 1), atol=0.5 / 255 + 1e-6, err_msg=f"sBIT {bits}")
    # a 16-bit colour key: that colour, and no other, over black
    samples = rng.integers(0, 65536, (13, 19, 3), dtype=np.uint16)
    samples[2, 3], samples[4, 5] = (1000, 40000, 3000), (1000, 40000, 3001)
    key = (b"tRNS", np.asarray([1000, 40000, 3000], ">u2").tobytes())
    want = np.rint(samples / 257) / 255
    want[2, 3] = 0
    np.testing.assert_allclose(read_image(_png16(tmp_path / "key.png", samples, key)), want, atol=1e-6)
    opacity = read_opacity(tmp_path / "key.png")  # as a lesion mask drawn as transparency reads it
    assert opacity[2, 3] == 0 and opacity.sum() == opacity.size - 1
    # gAMA 1.0 (linear samples) at 16 bits
    gamma = (b"gAMA", (100000).to_bytes(4, "big"))
    want = np.rint(np.rint(srgb_encoded(samples / 65535) * 65535) / 257) / 255
    np.testing.assert_allclose(read_image(_png16(tmp_path / "gamma.png", samples, gamma)), want, atol=1e-6)
    # EXIF orientation kept (a PNG eXIf chunk): shown rotated as a viewer shows it
    exif = Image.Exif()
    exif[0x0112] = 6
    turned = read_image(_png16(tmp_path / "turned.png", samples, (b"eXIf", exif.tobytes()[6:])))
    np.testing.assert_allclose(turned, np.rot90(np.rint(samples / 257) / 255, -1), atol=1e-6)
    # an eXIf after the image data too (helper-59: read unturned, while its size was the turned one)
    after = _png16(tmp_path / "after.png", samples, trailing=[(b"eXIf", exif.tobytes()[6:])])
    np.testing.assert_allclose(read_image(after), turned, atol=0)
    assert image_size(after) == (samples.shape[0], samples.shape[1])
    # a grey PNG scaled by its sBIT keeps its ICC profile (it had been dropped with the scaling):
    # 12-bit samples, a linear grey profile: the middle level shown as sRGB's 188 of 255
    twelve = np.full((8, 8), 2047, np.uint16)
    twelve[0, 0] = 1  # not all multiples of 16
    profile = _gray_profile(1.0)
    profiled = _with_chunk(
        tmp_path / "profiled.png", Image.fromarray(twelve), b"sBIT", bytes([12]), icc_profile=profile
    )
    assert abs(round(float(read_image(profiled)[4, 4, 0]) * 255) - 188) <= 1
    # an 8-bit RGB PNG holding 5-bit samples, its sBIT saying 5: read at that depth
    five = rng.integers(0, 32, (13, 19, 3), dtype=np.uint8)
    got = read_image(_with_sbit(tmp_path / "five.png", Image.fromarray(five), 5, 5, 5))
    np.testing.assert_allclose(got, np.rint(five / 31 * 255) / 255, atol=1e-6)


def test_image_size_decodes_no_pixels_unless_metadata_follows_them(tmp_path, monkeypatch):
    """``image_size`` (a cohort's survey calls it for every picture) reads a PNG's size and
    orientation without decoding it where no metadata follows the pixels (Pillow's ``getexif``
    had decoded every PNG without an ``eXIf`` before them), and still turns the size by an
    orientation given before them (eXIf, XMP) or after them (then by decoding, as before)."""
    from PIL import ImageFile

    exif = Image.Exif()
    exif[0x0112] = 6
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:Description tiff:Orientation="8"/></x:xmpmeta>'
    grey = Image.fromarray(np.arange(12 * 20, dtype=np.uint8).reshape(12, 20))
    plain = tmp_path / "plain.png"
    grey.save(plain)
    jpeg = tmp_path / "plain.jpg"
    grey.save(jpeg, exif=exif)
    before = _with_chunk(tmp_path / "exif.png", grey, b"eXIf", exif.tobytes()[6:])
    xmp_first = _with_chunk(tmp_path / "xmp.png", grey, b"iTXt", b"XML:com.adobe.xmp\x00\x00\x00\x00\x00" + xmp)
    samples = np.zeros((12, 20, 3), np.uint16)
    after = _png16(tmp_path / "after.png", samples, trailing=[(b"eXIf", exif.tobytes()[6:])])
    decoded = []
    load = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda im: decoded.append(1) or load(im))
    assert [image_size(p) for p in (plain, jpeg, before, xmp_first)] == [(20, 12), (12, 20), (12, 20), (12, 20)]
    assert decoded == []  # before: plain.png and xmp.png were decoded
    assert image_size(after) == (12, 20) and decoded  # an eXIf after the pixels is read by decoding them


def test_a_warning_said_alike_for_many_rows_is_given_once(tmp_path, capsys):
    """``validate`` lists a warning said in the same long words for three or more rows once,
    the later rows "as said for row N", as it lists errors (helper-77: warnings were said in
    full for every row); every row is still named."""
    from lnm_jax.cli import main

    rng = np.random.default_rng(0)
    dim = np.tile(np.arange(0, 4096, 127, dtype=np.uint16)[:32], (24, 1))  # 12-bit samples in a 16-bit PNG
    rows = []
    for k in range(4):  # four pictures (rows shuffled), one brightness: one warning's words
        path = _write(tmp_path / f"dim{k}.png", Image.fromarray(dim[rng.permutation(24)]))
        rows.append([f"P{k}", path.name, "", k % 2, k // 2])
    manifest = _manifest(tmp_path / "m.csv", rows)
    capsys.readouterr()
    assert main(["validate", str(manifest), "--no-labels"]) == 0
    out = capsys.readouterr().out
    dim_lines = [x for x in out.splitlines() if x.startswith("warning: [dim_image] row")]
    assert len(dim_lines) == 4 and "nearly black" in dim_lines[0], out
    assert all(x.endswith("as said for row 1") for x in dim_lines[1:]), dim_lines


def test_channel_folds_are_numpys_reductions_bit_for_bit():
    """``over_channels`` (masks, a DICOM panel's colour, a screen capture's grey levels: the
    per-picture checks a cohort's validation runs) gives NumPy's ``max``/``min``/``mean`` over
    the last axis exactly, float32 and float64, one to four channels."""
    from lnm_jax.data.pixels.decode import over_channels

    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        for c in (1, 3, 4):
            a = rng.random((31, 17, c)).astype(dtype)
            assert np.array_equal(over_channels(np.maximum, a), a.max(axis=-1))
            assert np.array_equal(over_channels(np.minimum, a), a.min(axis=-1))
            mean = over_channels(np.add, a) / dtype(c)
            assert mean.dtype == dtype and np.array_equal(mean, a.mean(axis=-1))


def _png_of(path, chunks):
    """A PNG file of ``chunks`` ((type, data) pairs, IHDR and IDAT included) in that order."""
    import struct
    import zlib

    body = b"".join(struct.pack(">I", len(d)) + k + d + struct.pack(">I", zlib.crc32(k + d)) for k, d in chunks)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + body + struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND"))
    )
    return path


def test_a_png_that_readers_read_apart_is_refused_naming_the_chunk(tmp_path):
    """helper-59's trial: Pillow applied what libpng, behind most viewers, ignores (a gAMA
    after PLTE, a palette's tRNS before its PLTE or longer than it, a one-byte sBIT on an RGB
    image, a second eXIf after the image data) or refuses (an IHDR method the specification
    does not define), and read image data short by rows as black. Each is refused, naming
    the chunk; valid files beside them read as before."""
    import struct
    import zlib

    ramp = RAMP[:16, :16]
    grey = zlib.compress(b"".join(b"\0" + row.tobytes() for row in ramp))
    index = zlib.compress(b"".join(b"\0" + (row // 16).tobytes() for row in ramp))  # 16 palette entries
    rgb = zlib.compress(b"".join(b"\0" + np.repeat(row // 16, 3).tobytes() for row in ramp))  # 4-bit samples

    def ihdr(colour, depth=8, compression=0, filtering=0, interlace=0):
        return (b"IHDR", struct.pack(">IIBBBBB", 16, 16, depth, colour, compression, filtering, interlace))

    plte = (b"PLTE", bytes(np.repeat(np.arange(0, 256, 16, dtype=np.uint8), 3)))
    exif = Image.Exif()
    exif[0x0112] = 6
    files = {
        "gamma after PLTE": [ihdr(3), plte, (b"gAMA", (100000).to_bytes(4, "big")), (b"IDAT", index)],
        "tRNS before PLTE": [ihdr(3), (b"tRNS", bytes(16)), plte, (b"IDAT", index)],
        "tRNS over the palette": [ihdr(3), plte, (b"tRNS", bytes(20)), (b"IDAT", index)],
        "one-byte sBIT on RGB": [ihdr(2), (b"sBIT", bytes([4])), (b"IDAT", rgb)],
        "eXIf before and after": [
            ihdr(0),
            (b"eXIf", Image.Exif().tobytes()[6:]),
            (b"IDAT", grey),
            (b"eXIf", exif.tobytes()[6:]),
        ],
        "compression method 1": [ihdr(0, compression=1), (b"IDAT", grey)],
        "filter method 1": [ihdr(0, filtering=1), (b"IDAT", grey)],
        "interlace method 2": [ihdr(0, interlace=2), (b"IDAT", grey)],
        "10 of 16 rows": [ihdr(0), (b"IDAT", zlib.compress(zlib.decompress(grey)[: 10 * 17]))],
        "cICP of PQ": [ihdr(0), (b"cICP", bytes([9, 16, 0, 1])), (b"IDAT", grey)],
        # helper-61: what libpng refuses or ignores and Pillow read
        "critical chunk": [ihdr(0), (b"ABCD", b"x"), (b"IDAT", grey)],
        "gAMA before IHDR": [(b"gAMA", (100000).to_bytes(4, "big")), ihdr(0), (b"IDAT", grey)],
        "sRGB of two bytes": [ihdr(0), (b"sRGB", b"\0\0"), (b"gAMA", (100000).to_bytes(4, "big")), (b"IDAT", grey)],
        "IDAT split": [ihdr(0), (b"IDAT", grey[:20]), (b"tEXt", b"a\0b"), (b"IDAT", grey[20:])],
    }
    said = {
        "gamma after PLTE": "its 'gAMA' chunk is after PLTE, out of place: libpng, behind most viewers, ignores it",
        "tRNS before PLTE": "its 'tRNS' chunk is before the palette (PLTE), out of place",
        "tRNS over the palette": "its 'tRNS' chunk is of 20 bytes, more than the palette's 16 entries",
        "one-byte sBIT on RGB": "its 'sBIT' chunk is of 1 byte(s) where this image's has 3, invalid",
        "eXIf before and after": "it holds 'eXIf' more than once",
        "compression method 1": "its IHDR's compression method 1 is none the PNG specification defines",
        "filter method 1": "its IHDR's filter method 1 is none the PNG specification defines",
        "interlace method 2": "its IHDR's interlace method 2 is none the PNG specification defines",
        "10 of 16 rows": "damaged PNG: its image data holds 10 of the 16 rows its IHDR says",
        "cICP of PQ": "its 'cICP' chunk says colour primaries 9, transfer function 16 (PQ, an HDR picture)",
        "critical chunk": "it holds the critical chunk 'ABCD' (a capital first letter, PNG specification 5.4)",
        "gAMA before IHDR": "its first chunk is 'gAMA', not IHDR",
        "sRGB of two bytes": "its 'sRGB' chunk is not one byte of a rendering intent 0-3, invalid",
        "IDAT split": "its image data (IDAT) is split by a 'tEXt' chunk",
    }
    rows = [[f"P{k}", _png_of(tmp_path / f"{k}.png", c).name, "", 0, k % 2] for k, c in enumerate(files.values())]
    valid = {
        "palette": [ihdr(3), plte, (b"tRNS", bytes([255] * 16)), (b"IDAT", index)],
        "RGB with its sBIT": [ihdr(2), (b"sBIT", bytes([4, 4, 4])), (b"IDAT", rgb)],
        "eXIf after IDAT": [ihdr(0), (b"IDAT", grey), (b"eXIf", exif.tobytes()[6:])],
        "cICP of sRGB over gAMA": [ihdr(0), (b"cICP", bytes([1, 13, 0, 1])), (b"gAMA", (100000).to_bytes(4, "big"))]
        + [(b"IDAT", grey)],
    }
    for k, c in enumerate(valid.values()):
        rows.append([f"V{k}", _png_of(tmp_path / f"valid{k}.png", c).name, "", 0, k % 2])
    with pytest.raises(ManifestError) as e:
        read_manifest(_manifest(tmp_path / "m.csv", rows))
    problems = {p.row: p.message for p in e.value.problems if p.code == UNREADABLE_IMAGE}
    assert sorted(problems) == list(range(1, len(files) + 1)), e.value  # the valid ones read
    for row, (name, want) in enumerate(said.items(), start=1):
        assert want in problems[row], (name, problems[row])
    palette, sbit, turned, cicp = (read_image(tmp_path / f"valid{k}.png") for k in range(4))
    np.testing.assert_allclose(cicp[..., 0], ramp / 255, atol=1e-6)  # cICP wins: as stored, no gAMA
    np.testing.assert_allclose(palette[..., 0], (ramp // 16 * 16) / 255, atol=1e-6)
    np.testing.assert_allclose(sbit[..., 0], (ramp // 16 * 17) / 255, atol=1e-6)  # 4 bits of 4 scaled
    assert turned.shape == (16, 16, 3) and image_size(tmp_path / "valid2.png") == (16, 16)
    np.testing.assert_allclose(turned[..., 0], np.rot90(ramp, -1) / 255, atol=1e-6)  # the eXIf after the data


def test_a_dicom_files_icc_profile_and_presentation_shape_read_as_a_viewer_shows_them(tmp_path):
    """helper-59's trial: a colour DICOM file's ICCProfile (PS3.3 C.11.15) was ignored where the
    same profile in a PNG was applied; a MONOCHROME2 image with PresentationLUTShape INVERSE was
    read as stored where viewers that follow the shape show it inverted. The profile is applied
    as the PNG's is (the same pixels read alike, and a de-identified copy reads as the original:
    it had kept the profile beside pixels written with it applied, read through it twice, up to
    73/255 off; helper-83); a shape that contradicts the interpretation is refused, naming both."""
    import struct

    import pydicom

    from lnm_jax.data.privacy.deidentify import deidentify

    crayons = bytearray((Path(pydicom.__file__).parent / "data" / "test_files" / "crayons.icc").read_bytes())
    assert crayons[520:524] == b"curv"  # its tone curve (the three colours share it), made linear: gamma 1.0
    crayons[520:534] = b"curv" + bytes(4) + struct.pack(">IH", 1, 256)
    profile = bytes(crayons)
    rgb = np.dstack([RAMP, RAMP[::-1], RAMP[:, ::-1]])
    as_png = read_image(_write(tmp_path / "icc.png", Image.fromarray(rgb), icc_profile=profile))
    shown = dicom.read_frame(dicom.read_header(_dcm(tmp_path / "icc.dcm", rgb, ICCProfile=profile)), 0)
    np.testing.assert_allclose(shown, as_png, atol=PNG_ATOL)
    assert np.abs(shown - rgb / 255).max() > 4 / 255  # the profile changes the picture
    m = _manifest(tmp_path / "icc.csv", [["A", "icc.dcm", "icc.png", 1, 1]])
    deidentify(m, tmp_path / "deid", tmp_path / "private" / "map.csv")
    (copy,) = (tmp_path / "deid" / "images").glob("*.dcm")
    np.testing.assert_allclose(dicom.read_frame(dicom.read_header(copy), 0), shown, atol=0.5 / 255)
    assert "ICCProfile" not in pydicom.dcmread(copy)  # its pixels are sRGB, as shown
    for photometric, shape, refused in (
        ("MONOCHROME2", "INVERSE", True),
        ("MONOCHROME1", "IDENTITY", True),
        ("MONOCHROME2", "IDENTITY", False),
        ("MONOCHROME1", "INVERSE", False),
    ):
        path = _dcm(tmp_path / f"{photometric}{shape}.dcm", RAMP, PresentationLUTShape=shape)
        ds = pydicom.dcmread(path)
        ds.PhotometricInterpretation = photometric
        ds.save_as(path)
        if refused:
            with pytest.raises(dicom.HeaderMismatchError, match=f"PresentationLUTShape {shape} on a {photometric}"):
                dicom.read_header(path)
        else:
            want = RAMP / 255 if photometric == "MONOCHROME2" else 1 - RAMP / 255
            np.testing.assert_allclose(dicom.read_frame(dicom.read_header(path), 0)[..., 0], want, atol=PNG_ATOL)
    # a Presentation LUT Sequence (a table in place of the shape) is applied by some viewers: refused
    from pydicom.dataset import Dataset

    ds = pydicom.dcmread(_dcm(tmp_path / "plut.dcm", RAMP))
    item = Dataset()
    item.LUTDescriptor = [256, 0, 8]
    item.add_new(0x00283006, "US", list(range(255, -1, -1)))  # LUTData: an inverting table
    ds.PresentationLUTSequence = [item]
    ds.save_as(tmp_path / "plut.dcm")
    with pytest.raises(dicom.HeaderMismatchError, match=r"plut.dcm: its Presentation LUT Sequence \(2050,0010\) maps"):
        dicom.read_header(tmp_path / "plut.dcm")
    # (helper-69) an identity table, an empty sequence, a table on a colour image: nothing changes, read
    item.add_new(0x00283006, "US", list(range(256)))
    ds.save_as(tmp_path / "identity.dcm")
    ds.PresentationLUTSequence = []
    ds.save_as(tmp_path / "empty.dcm")
    colour = pydicom.dcmread(_dcm(tmp_path / "colour.dcm", rgb))
    colour.PresentationLUTSequence = [item]
    colour.save_as(tmp_path / "colour.dcm")
    for name in ("identity.dcm", "empty.dcm", "colour.dcm"):
        assert dicom.read_header(tmp_path / name).frames == 1


def test_exif_orientation_applied_to_size_and_pixels(tmp_path):
    """Case jpeg-exif-orientation-ignored: the picture a viewer shows is what the model reads,
    and crop boxes refer to it."""
    formats = {name: path for name, path, _ in _formats(tmp_path)}
    assert image_size(formats["EXIF-6 jpeg"]) == (32, 24)  # stored 24x32, shown 32 wide
    up, tagged = read_image(formats["L jpeg"]), read_image(formats["EXIF-6 jpeg"])
    assert up.shape == tagged.shape
    np.testing.assert_allclose(tagged, up, atol=JPEG_ATOL)
    # an orientation outside the EXIF (XMP's tiff:Orientation), which Pillow applies and browsers
    # do not, is refused (helper-59: read turned); beside an EXIF orientation of its own, the EXIF's
    xmp = (
        b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        b'<rdf:Description xmlns:tiff="http://ns.adobe.com/tiff/1.0/" tiff:Orientation="6"/></rdf:RDF></x:xmpmeta>'
    )
    stored = Image.fromarray(RAMP)
    with pytest.raises(ValueError, match=r"its orientation \(6: turned 90 degrees clockwise\) is given outside"):
        read_image(_write(tmp_path / "xmp.jpg", stored, quality=95, xmp=xmp))
    upright_exif = Image.Exif()
    upright_exif[0x0112] = 1
    both = read_image(_write(tmp_path / "both.jpg", stored, quality=95, xmp=xmp, exif=upright_exif))
    assert both.shape == (*RAMP.shape, 3)


# ------------------------------------------------------------- DICOM header vs data


def _native(sop_class: str, pixels: np.ndarray, samples: int, photometric: str):
    """A hand-built 8-bit native dataset (no writer's help, so its header can be made to lie)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = sop_class, generate_uid(), "US"
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    rows, cols = pixels.shape[-3:-1] if samples == 3 else pixels.shape[-2:]
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = rows, cols, samples, photometric
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit, ds.PixelRepresentation = 7, 0
    if samples == 3:
        ds.PlanarConfiguration = 0
    ds.PixelData = pixels.tobytes()
    return ds


def _cine(path, frames: np.ndarray, number_of_frames):
    """A native RGB cine whose NumberOfFrames says what the caller wants (None: absent)."""
    ds = _native(dicom.US_MULTIFRAME_STORAGE, frames, 3, "RGB")
    if number_of_frames is not None:
        ds.NumberOfFrames = number_of_frames
    ds.FrameTime = "100"
    ds.save_as(path, enforce_file_format=True)
    return path


def test_cine_frame_count_checked_against_pixel_data(tmp_path):
    """Case dicom-cine-without-numberofframes: a missing or understated NumberOfFrames is
    refused naming both numbers; a true one reads the enhancement peak."""
    frames = np.stack([np.full((12, 16, 3), 20 + 25 * k, np.uint8) for k in range(8)])
    b = _write(tmp_path / "b.png", Image.fromarray(RAMP))
    (own,) = own_pictures(b, 1)
    for nof, ok in ((8, True), (None, False), (4, False), (1, False), (0, False)):
        cine = _cine(tmp_path / f"cine_{nof}.dcm", frames, nof)
        m = _manifest(tmp_path / f"m_{nof}.csv", [["A", b.name, cine.name, 1, 1], ["B", own, "", 0, 0]])
        if ok:
            read_manifest(m)
            peak = decode_input(cine, "ceus", size=8, patient_id="A")
            assert peak.mean() == pytest.approx(195 / 255, abs=1e-6)
            continue
        with pytest.raises(ManifestError) as e:
            read_manifest(m)
        assert _codes(e.value) == {HEADER_MISMATCH}
        text = str(e.value)
        assert "missing" in text if nof is None else f"NumberOfFrames is {nof}" in text, text
        assert nof == 0 or "8 frame(s)" in text


def test_image_size_and_samples_checked_against_the_pixel_data(tmp_path):
    """Case dicom-rows-columns-vs-data and its kind: Rows, Columns and SamplesPerPixel that
    disagree with the pixel data were read as a sheared or re-laid-out picture in silence. A
    native frame whose rows are 80 wide under Columns 64, a JPEG or JPEG 2000 codestream of
    another size or number of components than the header's (Rows/Columns swapped among them),
    a MONOCHROME2 frame with 3 samples, an RGB one with 1, a codestream whose samples exceed
    BitsStored: each refused naming both; trailing zeros after whole frames stay padding
    (pydicom's MR_small_padded.dcm has 128 bytes)."""
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEG2000Lossless, JPEGBaseline8Bit

    picture = np.zeros((64, 80), np.uint8)  # 80 wide, 64 high: a bar down the left, a square
    picture[:, :20], picture[24:40, 30:50] = 255, 128

    def save(name, ds, data=None, syntax=None):
        if data is not None:
            ds.PixelData = encapsulate([data])
            ds.file_meta.TransferSyntaxUID = syntax
            ds["PixelData"].VR = "OB"
        ds.save_as(tmp_path / name, enforce_file_format=True)
        return tmp_path / name

    def coded(fmt, im):
        buf = io.BytesIO()
        im.save(buf, format=fmt, **({"quality": 95} if fmt == "JPEG" else {"irreversible": False}))
        return buf.getvalue()

    def lying(rows, cols, samples=1, photometric="MONOCHROME2"):
        ds = _native(dicom.US_IMAGE_STORAGE, picture, 1, "MONOCHROME2")
        ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = rows, cols, samples, photometric
        return ds

    jpeg, j2k = coded("JPEG", Image.fromarray(picture)), coded("JPEG2000", Image.fromarray(picture))
    colour = coded("JPEG", Image.fromarray(np.stack([picture, picture // 2, 255 - picture], -1)))
    refused = [
        (save("native_columns.dcm", lying(64, 64)), "holds 5120 bytes (1.25 frames)"),
        (save("jpeg_swapped.dcm", lying(80, 64), jpeg, JPEGBaseline8Bit), "JPEG codestream is 64 x 80"),
        (save("jpeg_rows.dcm", lying(60, 80), jpeg, JPEGBaseline8Bit), "JPEG codestream is 64 x 80"),
        (save("j2k_swapped.dcm", lying(80, 64), j2k, JPEG2000Lossless), "JPEG 2000 codestream is 64 x 80"),
        (save("jpeg_components.dcm", lying(64, 80), colour, JPEGBaseline8Bit), "3 component(s)"),
        (save("mono_3_samples.dcm", lying(64, 80, 3)), "MONOCHROME2 has 1 sample(s) per pixel"),
        (save("rgb_1_sample.dcm", lying(64, 80, 1, "RGB")), "RGB has 3 sample(s) per pixel"),
    ]
    # RGB data labelled YBR_FULL_422: its size says how 4:2:2 stores a frame (helper-59: 8192 bytes unexplained)
    ybr = _native(dicom.US_IMAGE_STORAGE, np.stack([picture] * 3, -1), 3, "YBR_FULL_422")
    refused.append((save("ybr_422.dcm", ybr), "make 10240 bytes per frame (YBR_FULL_422 stores two samples a pixel"))
    for path, said in refused:
        with pytest.raises(dicom.HeaderMismatchError) as e:
            dicom.read_header(path)
        assert path.name in str(e.value) and said in str(e.value), str(e.value)
    # the same payloads under a true header read as the picture; zero padding is padding
    padded = lying(64, 80)
    padded.PixelData = picture.tobytes() + bytes(160)
    for path in (
        save("native.dcm", lying(64, 80)),
        save("padded.dcm", padded),
        save("jpeg.dcm", lying(64, 80), jpeg, JPEGBaseline8Bit),
        save("j2k.dcm", lying(64, 80), j2k, JPEG2000Lossless),
    ):
        frame = dicom.read_frame(dicom.read_header(path), 0)[..., 0]
        np.testing.assert_allclose(frame, picture / 255, atol=JPEG_ATOL if "jpeg" in path.name else PNG_ATOL)
    # zeros after the header's frame that are the picture's own black rows, read at a width too
    # narrow (helper-57: Columns 600 on a 640-wide frame whose last 32 rows were black read as
    # stripes): refused where the data's rows line up at the width that fills it exactly; zeros
    # after a frame that lines up at Columns stay padding
    from scipy import ndimage

    field = ndimage.gaussian_filter(np.random.default_rng(5).normal(size=(48, 80)), 2.0)
    scan = np.uint8(np.clip(128 + 40 * field / field.std(), 0, 255))
    scan[40:] = 0  # black below the sector
    for narrow in (1, 4):
        ds = _native(dicom.US_IMAGE_STORAGE, scan, 1, "MONOCHROME2")
        ds.Columns = 80 - narrow
        with pytest.raises(dicom.HeaderMismatchError, match="exactly 48 rows of 80 columns, whose rows line up"):
            dicom.read_header(save(f"narrow{narrow}.dcm", ds))
    ds = _native(dicom.US_IMAGE_STORAGE, scan, 1, "MONOCHROME2")
    ds.PixelData = scan.tobytes() + bytes(2 * 48)  # two zero bytes per row
    frame = dicom.read_frame(dicom.read_header(save("scan_padded.dcm", ds)), 0)[..., 0]
    np.testing.assert_allclose(frame, scan / 255, atol=PNG_ATOL)
    # PlanarConfiguration against the data's layout (helper-57: interleaved data under 1 read
    # scrambled): refused either way where the other layout lines up; each read right as said
    colour = np.stack([scan, scan // 2, 255 - scan], -1)
    layouts = {0: colour.tobytes(), 1: np.ascontiguousarray(colour.transpose(2, 0, 1)).tobytes()}
    for said in (0, 1):
        for held, data in layouts.items():
            ds = _native(dicom.US_IMAGE_STORAGE, colour, 3, "RGB")
            ds.PlanarConfiguration, ds.PixelData = said, data
            path = save(f"planar{said}_{held}.dcm", ds)
            if said == held:
                np.testing.assert_allclose(dicom.read_frame(dicom.read_header(path), 0), colour / 255, atol=PNG_ATOL)
            else:
                with pytest.raises(dicom.HeaderMismatchError, match=f"PlanarConfiguration {said} says"):
                    dicom.read_header(path)
    # helper-58's trial of these checks. Missed: the top 40% black (the first plane's bytes all
    # black), Rows and Columns swapped (the same bytes), a cine whose first frame is black.
    # Refused wrongly: pydicom's 3x3 SC_rgb_small_odd.dcm, a picture with a zero tail (padding)
    from pydicom import dcmread
    from pydicom.data import get_testdata_file

    dark_top = colour.copy()
    dark_top[:20] = 0
    ds = _native(dicom.US_IMAGE_STORAGE, dark_top, 3, "RGB")
    ds.PlanarConfiguration = 1
    with pytest.raises(dicom.HeaderMismatchError, match="PlanarConfiguration 1 says"):
        dicom.read_header(save("dark_top.dcm", ds))
    ds = _native(dicom.US_IMAGE_STORAGE, scan, 1, "MONOCHROME2")
    ds.Rows, ds.Columns = 80, 48
    with pytest.raises(dicom.HeaderMismatchError, match="Rows 80 and Columns 48, but its frames line up read as 48"):
        dicom.read_header(save("swapped.dcm", ds))
    cine = np.stack([np.zeros_like(scan), scan, scan])
    ds = _native(dicom.US_IMAGE_STORAGE, cine, 1, "MONOCHROME2")
    ds.NumberOfFrames, ds.BitsStored, ds.HighBit = 3, 6, 5
    with pytest.raises(dicom.HeaderMismatchError, match="BitsStored is 6"):
        dicom.read_header(save("dark_first.dcm", ds))
    assert dicom.read_header(get_testdata_file("SC_rgb_small_odd.dcm")).rows == 3
    ds = _native(dicom.US_IMAGE_STORAGE, scan, 1, "MONOCHROME2")
    ds.PixelData = scan.tobytes() + bytes(8 * 80)  # eight rows of zeros after the frame
    np.testing.assert_allclose(dicom.read_frame(dicom.read_header(save("tail.dcm", ds)), 0)[..., 0], scan / 255)
    assert dcmread(tmp_path / "tail.dcm").Columns == 80
    # BitsStored under a codestream's precision: an 8-bit JPEG or JPEG 2000 under BitsStored 6
    # had been read masked to 6 bits (the JPEG's picture as a sawtooth); the codestream's
    # samples are seen as decoded and refused where they exceed it (PS3.5 8.2.1). Native data's
    # unused high bits may hold anything (PS3.5 8.1.1): masked, as before
    shallow = []
    for name, data, syntax in (
        ("jpeg_6.dcm", jpeg, JPEGBaseline8Bit),
        ("j2k_6.dcm", j2k, JPEG2000Lossless),
        ("n6.dcm", None, None),
    ):
        ds = lying(64, 80)
        ds.BitsStored, ds.HighBit = 6, 5
        shallow.append(save(name, ds, data, syntax))
    for path, kind in zip(shallow[:2], ("JPEG", "JPEG 2000")):
        with pytest.raises(
            dicom.HeaderMismatchError, match=f"BitsStored is 6 .* its {kind} codestream holds values up to 2"
        ):
            dicom.read_frame(dicom.read_header(path), 0)
    np.testing.assert_array_equal(dicom.read_frame(dicom.read_header(shallow[2]), 0)[..., 0], (picture % 64) / 63)
    # ... unless those bits hold the picture (helper-57: a smooth 8-bit picture under BitsStored
    # 6 read as a sawtooth, in silence): refused; bits above BitsStored that are a constant, or a
    # sparse overlay, are masked off as before
    smooth = _native(dicom.US_IMAGE_STORAGE, scan, 1, "MONOCHROME2")
    smooth.BitsStored, smooth.HighBit = 6, 5
    with pytest.raises(dicom.HeaderMismatchError, match=r"BitsStored is 6 .* masked to it its picture wraps around"):
        dicom.read_header(save("smooth_6.dcm", smooth))
    twelve = (scan.astype(np.uint16) * 16) | np.uint16(0xF000)  # 12-bit samples, the four bits above all set
    overlay = scan.astype(np.uint16) * 16
    overlay[4:6, 10:60] |= 1 << 13  # a line of overlay bits
    for name, pixels in (("constant_high.dcm", twelve), ("overlay.dcm", overlay)):
        ds = _native(dicom.US_IMAGE_STORAGE, pixels, 1, "MONOCHROME2")
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
        frame = dicom.read_frame(dicom.read_header(save(name, ds)), 0)[..., 0]
        np.testing.assert_allclose(frame, (scan.astype(np.float64) * 16) / 4095, atol=PNG_ATOL, err_msg=name)
    m = _manifest(
        tmp_path / "m.csv",
        [["A", "native_columns.dcm", "", 1, 1], ["B", "jpeg_swapped.dcm", "", 0, 0], ["C", "jpeg_6.dcm", "", 0, 0]],
    )
    with pytest.raises(ManifestError) as e:
        read_manifest(m)
    assert _codes(e.value) == {HEADER_MISMATCH} and str(e.value).count("[header_mismatch]") == 3, str(e.value)


def test_pixel_layout_attributes_the_reader_cannot_honour_are_refused(tmp_path):
    """Members of the header-versus-data kind a second hunt found, each read in silence as
    another picture before: a photometric interpretation whose samples are no RGB (native
    YBR_PARTIAL_420, HSV: read as R, G, B); HighBit 15 over BitsStored 12 (a value in bits
    4-15 read masked to bits 0-11); a raw JPEG 2000 codestream of 8-bit samples under
    BitsStored 12 (read scaled by 4095: near black; raw codestreams had not been parsed at
    all, only JP2 files); a basic offset table listing 3 frames over 6 codestreams (the last 3
    never read). The same payloads under a true header read."""
    from pydicom.encaps import encapsulate, itemize_frame
    from pydicom.uid import JPEG2000Lossless, JPEGBaseline8Bit

    grey = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (48, 1))  # 48 x 64

    def save(name, ds):
        ds.save_as(tmp_path / name, enforce_file_format=True)
        return dicom.read_header(tmp_path / name)

    for photometric in ("YBR_PARTIAL_420", "HSV"):
        ds = _native(dicom.US_IMAGE_STORAGE, np.stack([grey] * 3, -1), 3, photometric)
        with pytest.raises(dicom.DicomError, match=f"PhotometricInterpretation {photometric} is not read"):
            save(f"{photometric}.dcm", ds)
    ramp = np.tile((np.arange(64, dtype=np.uint16) * 65), (48, 1))  # 12-bit values 0..4095
    for high, stored_bits in ((15, ramp << 4), (11, ramp)):
        ds = _native(dicom.US_IMAGE_STORAGE, stored_bits.astype("<u2"), 1, "MONOCHROME2")
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, high
        if high == 15:
            with pytest.raises(dicom.HeaderMismatchError, match="HighBit is 15 and BitsStored 12"):
                save("high15.dcm", ds)
        else:
            np.testing.assert_allclose(dicom.read_frame(save("high11.dcm", ds), 0)[..., 0], ramp / 4095, atol=1e-6)

    raw = io.BytesIO()
    Image.fromarray(grey).save(raw, format="JPEG2000", irreversible=False, no_jp2=True)
    assert raw.getvalue()[:4] == b"\xff\x4f\xff\x51"  # SOC, SIZ: a raw codestream, as DICOM holds one
    for stored in (12, 8):
        ds = _native(dicom.US_IMAGE_STORAGE, grey, 1, "MONOCHROME2")
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16 if stored > 8 else 8, stored, stored - 1
        ds.PixelData, ds.file_meta.TransferSyntaxUID = encapsulate([raw.getvalue()]), JPEG2000Lossless
        ds["PixelData"].VR = "OB"
        if stored == 12:
            with pytest.raises(
                dicom.HeaderMismatchError, match="BitsStored is 12, but .* JPEG 2000 codestream holds 8-bit"
            ):
                save("j2k_12.dcm", ds)
        else:
            np.testing.assert_allclose(dicom.read_frame(save("j2k_8.dcm", ds), 0)[..., 0], grey / 255, atol=1e-6)

    codestreams = []
    for level in (40, 80, 120, 160, 200, 240):
        buf = io.BytesIO()
        Image.fromarray(np.full((48, 64), level, np.uint8)).save(buf, format="JPEG", quality=95)
        codestreams.append(b"".join(itemize_frame(buf.getvalue(), 1)))
    for listed in (3, 6):
        ds = _native(dicom.US_MULTIFRAME_STORAGE, grey, 1, "MONOCHROME2")
        ds.NumberOfFrames, ds.file_meta.TransferSyntaxUID = listed, JPEGBaseline8Bit
        offsets = np.cumsum([0] + [len(c) for c in codestreams[:-1]])[:listed]
        table = np.asarray(offsets, "<u4").tobytes()
        ds.PixelData = b"\xfe\xff\x00\xe0" + len(table).to_bytes(4, "little") + table + b"".join(codestreams)
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True
        if listed == 3:
            with pytest.raises(dicom.HeaderMismatchError, match="basic offset table lists 3 frame.*hold 6 codestreams"):
                save("bot3.dcm", ds)
        else:
            means = [float(f.mean()) * 255 for f in dicom.iter_frames(save("bot6.dcm", ds))]
            np.testing.assert_allclose(means, [40, 80, 120, 160, 200, 240], atol=1.5)


def test_option_columns_that_disagree_with_the_file_are_named(tmp_path):
    """Manifest cells the file contradicts, settled in silence before: ``bmode_frame`` 7 on a
    PNG still or a one-frame DICOM (read as frame 0; a cine's was refused), and a
    ``bmode_mm_per_pixel`` of 0.9 over a DICOM calibrated at 0.625 mm per pixel by its
    ultrasound region (the cell won: with data.field_of_view_mm, 44% off scale). A cell that
    agrees with the file is taken."""
    from lnm_jax.data.pixels import sources
    from lnm_jax.data.pixels.dicom import Box, ScanRegion

    still = _write(tmp_path / "still.png", Image.fromarray(RAMP))
    picture = np.asarray(Image.open(still).convert("L"))
    region = ScanRegion(Box(0, 0, picture.shape[1], picture.shape[0]), 1, 1, (0.625, 0.625))
    # each patient's own picture (a frame asked of a still is no other picture: still.png's pixels
    # under another patient would be a shared image, whatever the frame cells say)
    for k, name in enumerate(("cal.dcm", "cal_1.dcm", "cal_2.dcm", "cal_3.dcm"), 1):
        dicom.write_dataset(dicom.new_dataset(np.roll(picture, k, axis=1), regions=[region]), tmp_path / name)
    dicom.write_dataset(dicom.new_dataset(np.roll(picture, 5, axis=1)), tmp_path / "plain.dcm")
    s1, s2, s3, s4 = own_pictures(still, 4)
    _cine(tmp_path / "cine.dcm", np.stack([np.full((12, 16, 3), 20 + 25 * k, np.uint8) for k in range(4)]), 4)
    header = ["patient_id", "bmode", "ceus", "us_lnm", "lnm", "bmode_frame", "bmode_mm_per_pixel"]
    header += ["ceus_frame_rate", "ceus_crop"]
    rows = [
        ["A", "still.png", "", 1, 1, "7", "", "", ""],
        ["B", "cal.dcm", "", 0, 0, "7", "", "", ""],
        ["C", "cal_1.dcm", "", 1, 0, "", "0.9", "", ""],
        # a DICOM file that is fine, with a column it cannot take: bad_image_option, as a PNG's
        ["F", s1, "cal_2.dcm", 1, 0, "", "", "10", ""],
        ["G", s2, "cine.dcm", 0, 1, "", "", "10", ""],
        ["H", s3, "cine.dcm", 1, 1, "", "", "", "0,0,40,40"],  # (a part of G's cine: a picture apart)
        ["I", "", s4, 0, 1, "3", "", "", ""],  # a frame of no B-mode: filled down a column?
        ["D", "cal_3.dcm", "", 0, 1, "0", "0.625", "", ""],  # agrees with the file: taken
        ["E", "plain.dcm", "", 1, 0, "", "0.9", "", ""],  # no calibration of its own: the cell's
    ]
    with pytest.raises(ManifestError) as e:
        read_manifest(_manifest(tmp_path / "m.csv", rows, header))
    said = str(e.value)
    assert _codes(e.value) == {"bad_image_option", "option_without_image"}, said
    # each named at the option's column (the file's own problems are named at the image's)
    assert "row 1, column 'bmode_frame'" in said and "bmode_frame 7 asked for, the file is a still (one frame)" in said
    assert said.count("the file is a still") == 2 and "row 2, column 'bmode_frame'" in said
    assert "row 3, column 'bmode_mm_per_pixel'" in said and "bmode_mm_per_pixel 0.9 disagrees with the file's" in said
    assert "row 4, column 'ceus_frame_rate'" in said and "10 given for a still image (one frame)" in said
    assert "row 5, column 'ceus_frame_rate'" in said and "given for a DICOM cine, which states its own timing" in said
    assert "row 6, column 'ceus_crop'" in said and "ceus_crop 0,0,40,40 exceeds the cine's 16x12 frames" in said
    assert sum(p.code == "bad_image_option" for p in e.value.problems) == 6, said
    assert "[option_without_image] row 7, column 'bmode_frame': bmode_frame is given but no bmode image" in said
    cohort = read_manifest(_manifest(tmp_path / "ok.csv", rows[-2:], header))
    assert [sources.resolve(p.bmode, "bmode", p.image_options("bmode")).mm_per_pixel for p in cohort.patients] == [
        (0.625, 0.625),
        (0.9, 0.9),
    ]


def _gray_profile(gamma: float) -> bytes:
    """A minimal ICC v2 grey display profile (ICC.1:2001-04: header, desc, wtpt, kTRC, cprt)
    whose tone curve is ``gamma``: what an editor embeds as 'Gray Gamma 1.0'."""
    import struct

    def s15(v):
        return struct.pack(">i", round(v * 65536))

    text = b"Gray Gamma\0"
    tags = [
        (b"desc", b"desc" + b"\0" * 4 + struct.pack(">I", len(text)) + text + b"\0" * 78),
        (b"wtpt", b"XYZ " + b"\0" * 4 + s15(0.9642) + s15(1.0) + s15(0.8249)),
        (b"kTRC", b"curv" + b"\0" * 4 + struct.pack(">IH", 1, round(gamma * 256)) + b"\0\0"),
        (b"cprt", b"text" + b"\0" * 4 + b"public domain\0"),
    ]
    offset, table, data = 128 + 4 + 12 * len(tags), b"", b""
    for sig, body in tags:
        data += b"\0" * (-(offset + len(data)) % 4)
        table += sig + struct.pack(">II", offset + len(data), len(body))
        data += body
    body = struct.pack(">I", len(tags)) + table + data
    head = struct.pack(">I", 128 + len(body)) + b"\0" * 4 + bytes([2, 0x10, 0, 0]) + b"mntrGRAYXYZ " + b"\0" * 12
    return head + b"acsp" + b"\0" * 28 + s15(0.9642) + s15(1.0) + s15(0.8249) + b"\0" * 48 + body


def test_a_still_reads_as_a_colour_managed_viewer_shows_it(tmp_path):
    """Members of the viewer-versus-model kind: a PNG or JPEG with an embedded ICC profile
    whose samples are not sRGB (a grey profile with a linear tone curve: a viewer shows a
    stored 128 as 188) had been read raw; an animated PNG (a viewer plays its frames, not the
    default image that was read, which may not even be one of them) passed as a still. The
    profile is applied (LittleCMS, to sRGB; an sRGB profile changes nothing, an unreadable one
    is ignored as viewers ignore it), an APNG refused, and a de-identified copy (written as
    shown, without the profile) reads as the original."""
    from PIL import ImageCms

    from lnm_jax.data.privacy.deidentify import deidentify

    stored = np.tile(np.repeat(np.array([64, 128], np.uint8), 8), (16, 1))  # 16 x 16, two levels
    linear = stored / 255
    # linear light shown on an sRGB display: the sRGB encoding (IEC 61966-2-1); 128 -> 188
    encoded = np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * linear ** (1 / 2.4) - 0.055)
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    cases = {
        "linear.png": (_gray_profile(1.0), encoded),
        "linear.jpg": (_gray_profile(1.0), encoded),
        "srgb.png": (srgb, linear),
        "broken.png": (b"not a profile" * 20, linear),
    }
    assert round(encoded[0, 8] * 255) == 188
    for name, (profile, shown) in cases.items():
        kw = {"quality": 100, "subsampling": 0} if name.endswith(".jpg") else {}
        Image.fromarray(stored).save(tmp_path / name, icc_profile=profile, **kw)
        np.testing.assert_allclose(read_image(tmp_path / name)[..., 0], shown, atol=2.5 / 255, err_msg=name)
    frames = [Image.fromarray(np.full((16, 24), v, np.uint8)) for v in (40, 120, 200)]
    frames[0].save(tmp_path / "cine.png", save_all=True, append_images=frames[1:])
    with pytest.raises(ValueError, match=r"an animated PNG \(3 frames\)"):
        read_image(tmp_path / "cine.png")
    m = _manifest(tmp_path / "m.csv", [["A", "linear.png", "linear.jpg", 1, 1], ["B", "cine.png", "srgb.png", 0, 0]])
    with pytest.raises(ManifestError) as e:
        read_manifest(m)
    assert "row 2, column 'bmode'" in str(e.value) and "animated PNG" in str(e.value)
    # (linear.png shown through its profile is linear.jpg's picture: said as one, a warning; and
    # srgb.png holds the same stored pixels, shown brighter: nearly that picture, stretched)
    assert [(p.row, p.code) for p in e.value.problems] == [
        (1, SAME_PICTURE),
        (2, "unreadable_image"),
        (2, "similar_image"),
    ], e.value
    m = _manifest(tmp_path / "ok.csv", [["A", "linear.png", "linear.jpg", 1, 1], ["B", "srgb.png", "broken.png", 0, 0]])
    deidentify(m, tmp_path / "deid", tmp_path / "private" / "map.csv")
    for r in csv.DictReader((tmp_path / "private" / "map.csv").open()):
        original = {
            "A": {"bmode": "linear.png", "ceus": "linear.jpg"},
            "B": {"bmode": "srgb.png", "ceus": "broken.png"},
        }
        want = read_image(tmp_path / original[r["original_patient_id"]][r["input"]])
        np.testing.assert_allclose(read_image(tmp_path / "deid" / r["file"]), want, atol=0.5 / 255)
        # written as shown, with no profile: the unreadable one had been copied byte for byte
        # (helper-83: text in it, a patient's name, survived)
        assert b"iCCP" not in (tmp_path / "deid" / r["file"]).read_bytes(), r["file"]


def test_a_grey_profile_is_applied_over_every_level_at_either_depth(tmp_path):
    """A grey image's ICC profile, over all its levels: LittleCMS's optimised 8-bit grey
    transform was off by up to 10 of 255 in the dark (a 'Gray Gamma 1.0' profile: a stored 1,
    which a viewer shows as 13, was read as 6), and a 16-bit grey PNG's profile was ignored
    (the stored values read as they are, where a viewer shows them through the profile). Each
    level now comes out as the sRGB encoding of its linear light (IEC 61966-2-1), to the 8-bit
    display's rounding, and a de-identified copy (written as shown) reads as the original."""
    from lnm_jax.data.privacy.deidentify import deidentify

    def shown(linear):  # linear light on an sRGB display, in [0, 1]
        return np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * linear ** (1 / 2.4) - 0.055)

    eight = np.arange(256, dtype=np.uint8).reshape(16, 16)
    levels = np.arange(256)
    sixteen = np.minimum(levels * 257 + levels % 7, 65535).astype(np.uint16).reshape(16, 16)  # off the 8-bit grid
    for name, stored, top in (("g8.png", eight, 255), ("g16.png", sixteen, 65535), ("g8.jpg", eight, 255)):
        kw = {"quality": 100, "subsampling": 0} if name.endswith(".jpg") else {}
        Image.fromarray(stored).save(tmp_path / name, icc_profile=_gray_profile(1.0), **kw)
        read = read_image(tmp_path / name)
        assert (read == read[..., :1]).all(), name  # grey stays grey
        # the display's 8 bits round to 0.5 of 255; a JPEG's own decode adds up to 1 level
        atol = (0.5 + (1.0 if name.endswith(".jpg") else 0.0)) / 255 + 1e-6
        np.testing.assert_allclose(read[..., 0], shown(stored / top), atol=atol, err_msg=name)
    m = _manifest(tmp_path / "m.csv", [["A", "g16.png", "g8.png", 1, 1]])
    deidentify(m, tmp_path / "deid", tmp_path / "private" / "map.csv")
    for r in csv.DictReader((tmp_path / "private" / "map.csv").open()):
        want = read_image(tmp_path / {"bmode": "g16.png", "ceus": "g8.png"}[r["input"]])
        np.testing.assert_allclose(read_image(tmp_path / "deid" / r["file"]), want, atol=0.5 / 255)


def test_a_crop_that_frames_no_picture_is_named_as_the_picture_the_model_sees(tmp_path):
    """helper-121: a screen capture whose ``bmode_crop`` framed only its black surround (or a
    white band) was said OK, blank and dim judged on the whole file; judged inside the crop it
    is ``blank_image``; a dim capture whose crop frames its picture is not dim."""
    screen = np.zeros((120, 200), np.uint8)
    screen[50:70, 150:180] = np.tile(np.linspace(0, 250, 30).astype(np.uint8), (20, 1))  # (a small picture: dim)
    Image.fromarray(screen).save(tmp_path / "screen.png")
    Image.fromarray(np.roll(screen, 7, axis=1)).save(tmp_path / "screen2.png")
    Image.fromarray(np.roll(screen, 3, axis=0)).save(tmp_path / "screen3.png")
    columns = ("patient_id", "bmode", "bmode_crop", "ceus", "us_lnm", "lnm")
    rows = [["A", "screen.png", "0,0,90,120", "", 1, 0], ["B", "screen2.png", "157,50,187,70", "", 0, 1]]
    rows += [["C", "screen3.png", "", "", 1, 1]]
    cohort = read_manifest(_manifest(tmp_path / "m.csv", rows, columns), warn=False)
    said = {(w.row, w.code): w.message for w in cohort.warnings}
    assert (
        said[(1, BLANK_IMAGE)] == "inside its crop 0,0,90,120: image holds one value everywhere (0 of 255): no picture"
    )
    assert set(said) == {(1, BLANK_IMAGE), (3, DIM_IMAGE)}, said  # (the uncropped capture: dim, as before)
    # a clip's frames alike, inside its ceus_crop (helper-122: a crop of a black band, unsaid)
    clip = tmp_path / "clip"
    clip.mkdir()
    for k in range(4):
        frame = np.zeros((40, 64), np.uint8)
        frame[10:, :] = np.tile(np.linspace(20, 240, 64).astype(np.uint8), (30, 1)) // (k + 1)
        Image.fromarray(frame).save(clip / f"frame_{k}.png")
    columns = ("patient_id", "bmode", "ceus", "ceus_crop", "us_lnm", "lnm")
    rows = [["A", "screen.png", "clip", "0,0,64,10", 1, 0], ["B", "screen2.png", "", "", 0, 1]]
    cohort = read_manifest(_manifest(tmp_path / "c.csv", rows, columns), warn=False)
    (said,) = [w.message for w in cohort.warnings if w.column == "ceus"]
    assert said.startswith("no frame holds a picture; the brightest: inside its crop 0,0,64,10: image holds one"), said


def test_a_partly_transparent_still_is_warned_of_and_a_turned_stills_crop_said_with_its_turn(tmp_path):
    """helper-121: a still whose lesion was transparent (alpha 0 over the mask), or one at alpha
    128 throughout, was read composited over black (a black hole in the Grad-CAM figure, a
    picture at half brightness) and said OK. Each is ``transparent_image`` with its share; an
    opaque RGBA still and a grey PNG whose colour key is black (it reads as stored) are not."""
    from lnm_jax.data.cohorts.manifest import TRANSPARENT_IMAGE

    rgb = np.repeat(RAMP[..., None], 3, axis=-1)
    hole = np.full(RAMP.shape, 255, np.uint8)
    hole[8:16, 8:16] = 0
    Image.fromarray(np.dstack([rgb, hole]), "RGBA").save(tmp_path / "hole.png")
    Image.fromarray(np.dstack([RAMP, np.full(RAMP.shape, 128, np.uint8)]), "LA").save(tmp_path / "half.png")
    Image.fromarray(np.dstack([np.roll(rgb, 5, axis=1), np.full(RAMP.shape, 255, np.uint8)]), "RGBA").save(
        tmp_path / "opaque.png"
    )
    Image.fromarray(np.roll(RAMP, 9, axis=1)).save(tmp_path / "keyed.png", transparency=0)
    nearly = np.dstack([np.roll(rgb, 17, axis=1), np.full(RAMP.shape, 254, np.uint8)])  # (helper-122: said of)
    Image.fromarray(nearly, "RGBA").save(tmp_path / "nearly.png")
    Image.fromarray(np.roll(RAMP, 13, axis=1)).convert("P").save(tmp_path / "palette.png", transparency=0)
    stills = ["hole.png", "half.png", "opaque.png", "keyed.png", "palette.png", "nearly.png"]
    rows = [[k, name, "", i % 2, i % 2] for i, (k, name) in enumerate(zip("ABCDEF", stills))]
    cohort = read_manifest(_manifest(tmp_path / "m.csv", rows), warn=False)
    said = {w.row: w.message for w in cohort.warnings if w.code == TRANSPARENT_IMAGE}
    assert said[1].startswith("8.3% of its pixels are transparent (8.3% fully, alpha 0.00 at least): read"), said
    assert said[2].startswith("100.0% of its pixels are transparent (0.0% fully, alpha 0.50 at least)"), said
    assert set(said) == {1, 2} and not [w for w in cohort.warnings if w.row in (3, 4, 5, 6)], cohort.warnings
    # a crop given in the stored picture of an EXIF-turned JPEG: said with the turn (as a mask is)
    ex = Image.Exif()
    ex[0x0112] = 6
    Image.fromarray(np.repeat(np.roll(RAMP, 3, axis=1)[..., None], 3, -1)).save(tmp_path / "turned.jpg", exif=ex)
    columns = ("patient_id", "bmode", "bmode_crop", "ceus", "us_lnm", "lnm")
    with pytest.raises(ManifestError) as e:
        read_manifest(_manifest(tmp_path / "t.csv", [["T", "turned.jpg", "0,0,32,24", "", 1, 0]], columns))
    (line,) = [p.message for p in e.value.problems if p.column == "bmode_crop"]
    assert line.endswith(
        "bmode_crop 0,0,32,24 exceeds the 24x32 image; the file's EXIF orientation shows it turned 90 degrees (24x32, "
        "stored 32x24), and a crop is read in the picture as shown: this one fits the stored picture, give it as the "
        "image is shown"
    ), line


def test_a_fully_transparent_still_is_said_blank_with_its_stored_picture(tmp_path):
    """Stop 88's trial: a still whose every pixel is fully transparent over a picture was said
    "image holds one value" (read over black, as the model sees it), its stored picture
    unnamed: ``blank_image`` in words that say both; a fully transparent black one keeps
    blank's own words."""
    from lnm_jax.data.cohorts.manifest import BLANK_IMAGE

    rgb = np.repeat(RAMP[..., None], 3, axis=-1)
    Image.fromarray(np.dstack([rgb, np.zeros(RAMP.shape, np.uint8)]), "RGBA").save(tmp_path / "clear.png")
    Image.fromarray(np.zeros((*RAMP.shape, 4), np.uint8), "RGBA").save(tmp_path / "void.png")
    rows = [["A", "clear.png", "", 1, 1], ["B", "void.png", "", 0, 0]]
    cohort = read_manifest(_manifest(tmp_path / "m.csv", rows), warn=False)
    said = {w.row: w.message for w in cohort.warnings if w.code == BLANK_IMAGE}
    assert said[1].startswith(
        "every pixel is fully transparent (alpha 0): read composited over black, as the model "
        "sees it, it holds no picture, where its colours hold one"
    ), said
    assert said[2].startswith("image holds one value"), said


def test_an_image_that_holds_no_picture_is_named(tmp_path, capsys):
    """Case validate-blank-images and its kind: a still that holds one value everywhere (all
    black, all white, a 16-bit all-zero PNG, an RGBA PNG fully transparent: the decoder drops
    alpha, as a model input should, a single-frame DICOM of zeros) was accepted and trained on
    without a word. Each is `blank_image` naming row, column and file: a warning, once per
    manifest and process (the cohort's other rows stay usable), listed with the errors when
    there are any; a clip's dark frames are not named (a CEUS clip starts before the contrast
    arrives), nor is a still with any contrast."""
    transparent = np.zeros((24, 32, 4), np.uint8)
    transparent[..., :3] = 200
    blank = {
        "black.png": Image.fromarray(np.zeros((24, 32), np.uint8)),
        "white.png": Image.fromarray(np.full((24, 32), 255, np.uint8)),
        "black16.png": Image.fromarray(np.zeros((24, 32), np.uint16)),
        "transparent.png": Image.fromarray(transparent, "RGBA"),
    }
    for name, im in blank.items():
        im.save(tmp_path / name)
    _native(dicom.US_IMAGE_STORAGE, np.zeros((24, 32), np.uint8), 1, "MONOCHROME2").save_as(
        tmp_path / "zeros.dcm", enforce_file_format=True
    )
    ok = [_write(tmp_path / f"ok{k}.png", Image.fromarray(np.roll(RAMP, k, axis=1))).name for k in range(9)]
    clip = tmp_path / "clip"
    clip.mkdir()
    for k, level in enumerate((0, 0, 120, 200)):  # two black frames first, then pictures
        Image.fromarray((RAMP.astype(np.float64) * level / 248).astype(np.uint8)).save(clip / f"f{k}.png")
    stills = [*blank, "zeros.dcm"]
    rows = [[f"P{i}", name, ok[i], i % 2, i % 2] for i, name in enumerate(stills)]
    rows += [["C", ok[6], "clip", 1, 1], ["D", ok[7], ok[8], 0, 0]]
    capsys.readouterr()
    manifest = _manifest(tmp_path / "m.csv", rows)
    assert len(read_manifest(manifest)) == len(rows)
    said = capsys.readouterr().err.strip().splitlines()
    assert len(said) == 1 and said[0].startswith(f"warning: {manifest}: 5 image(s) hold no picture"), said
    for i, name in enumerate(stills[:3]):
        assert f"[{BLANK_IMAGE}] row {i + 1}, column 'bmode', file '{tmp_path / name}'" in said[0], said
    read_manifest(manifest)
    assert capsys.readouterr().err == ""  # once per manifest and process
    # validate lists every one, not three and "2 more" (the trial of 797540d)
    from lnm_jax.cli import main

    main(["validate", str(manifest)])
    listed = [x for x in capsys.readouterr().out.splitlines() if x.startswith(f"warning: [{BLANK_IMAGE}]")]
    assert [x.split(", file")[0] for x in listed] == [
        f"warning: [{BLANK_IMAGE}] row {i + 1}, column 'bmode'" for i in range(5)
    ], listed
    read_manifest(_manifest(tmp_path / "good.csv", rows[-2:]))
    assert capsys.readouterr().err == ""
    rows[-1][3] = "maybe"  # with an error, the blank images are listed among the problems
    with pytest.raises(ManifestError) as e:
        read_manifest(_manifest(tmp_path / "bad.csv", rows))
    assert _codes(e.value) == {BLANK_IMAGE, "bad_flag_value"} and str(e.value).count(BLANK_IMAGE) == 5
    # counted apart from what refuses it (helper-52's trial of eaf6508: "6 problems", five of them warnings)
    said = str(e.value).splitlines()
    assert said[0].startswith(f"{tmp_path / 'bad.csv'}: 1 problem: [bad_flag_value] row 7"), said
    assert said[1:3] == [
        "  and 5 warning(s), not refused on their own:",
        f"  warning: [{BLANK_IMAGE}] row 1, column 'bmode', file '{tmp_path / 'black.png'}': image holds one value "
        "everywhere (0 of 255): no picture",
    ], said


def test_one_picture_for_two_patients_is_refused(tmp_path, capsys):
    """helper-50's trial of a3f0dab: one image file named by two patients (a column filled down
    in a spreadsheet, a study exported twice under two ids) passed validate in silence, and could
    sit in train and test alike. Every member is `shared_image` on the later row, naming the
    first: the same path, the same path spelt otherwise, a byte-identical copy, one patient's
    B-mode as another's CEUS, a fill-down over many rows (said once, then "as said for row").
    Not refused: two crops of one capture (a dual display's halves), copies of a blank image
    (no picture: `blank_image` says those). One picture as a patient's B-mode and CEUS is the
    `same_picture` warning, except in a DICOM dual display (its B-mode and CEUS regions are read
    apart; a DICOM file of one region is one picture, helper-52's trial of eaf6508), as is a
    DICOM still and a PNG of its pixels."""
    pics = {
        n: _write(tmp_path / f"{n}.png", Image.fromarray(np.roll(RAMP, k, axis=1))) for k, n in enumerate("abdefgh")
    }
    shutil.copyfile(pics["a"], tmp_path / "a_copy.png")
    (tmp_path / "sub").mkdir()
    # a capture of two pictures side by side, not ramps (a ramp's half is the whole ramp stretched)
    halves = np.random.default_rng(6).integers(30, 220, (2, 3, 2), dtype=np.uint8)
    capture = np.concatenate([np.asarray(Image.fromarray(h).resize((16, 24), Image.BILINEAR)) for h in halves], axis=1)
    _write(pics["d"], Image.fromarray(capture))
    from lnm_jax.data.pixels.dicom import Box, ScanRegion

    grey, other = np.random.default_rng(5).integers(30, 200, (2, 20, 20), dtype=np.uint8)
    screen = np.zeros((30, 50, 3), np.uint8)  # a dual display: the B-mode side, the tinted contrast side
    # (a picture of its own: a tint of the B-mode side is a scaled copy of it, one picture to similar_image)
    screen[5:25, 2:22], screen[5:25, 27:47] = grey[..., None], np.stack([other, other // 2, other // 4], -1)
    regions = [ScanRegion(Box(2, 5, 22, 25), 1, 1, (0.2, 0.2)), ScanRegion(Box(27, 5, 47, 25), 1, 1, (0.2, 0.2))]
    dicom.write_dataset(dicom.new_dataset(screen, regions=regions), tmp_path / "dual.dcm")
    _dcm(tmp_path / "plain.dcm", np.roll(RAMP, 20, axis=1))
    for name in ("black1.png", "black2.png"):
        _write(tmp_path / name, Image.fromarray(np.zeros((24, 32), np.uint8)))
    columns = ("patient_id", "bmode", "ceus", "us_lnm", "lnm", "bmode_crop")
    fine = [
        ["P1", "a.png", "b.png", 0, 0, ""],
        ["P4", "d.png", "", 1, 1, "0,0,16,24"],
        ["P5", "d.png", "", 0, 0, "16,0,32,24"],  # the other half of P4's capture
        ["P6", "e.png", "e.png", 1, 1, ""],  # same_picture
        ["P7", "black1.png", "f.png", 0, 0, ""],
        ["P8", "black2.png", "g.png", 1, 1, ""],  # a copy of P7's blank B-mode
        ["P9", "dual.dcm", "dual.dcm", 0, 1, ""],  # a DICOM's regions
        ["P14", "plain.dcm", "plain.dcm", 1, 0, ""],  # one region: same_picture
    ]
    shared = [
        ["P2", "a.png", "h.png", 1, 1, ""],
        ["P3", "sub/../a_copy.png", "", 0, 0, ""],
        ["P10", "", "./b.png", 1, 0, ""],
    ]
    # the same pixels in other bytes: a PNG saved again (other compression, a text chunk), a DICOM
    # file exported again under a new SOP Instance UID
    from PIL.PngImagePlugin import PngInfo
    from pydicom import dcmread
    from pydicom.uid import generate_uid

    text = PngInfo()
    text.add_text("Comment", "exported again")
    Image.open(pics["a"]).save(tmp_path / "a_again.png", compress_level=1, pnginfo=text)
    again = dcmread(tmp_path / "dual.dcm")
    again.SOPInstanceUID = again.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    dicom.write_dataset(again, tmp_path / "dual_again.dcm")
    Image.open(pics["a"]).convert("RGB").save(tmp_path / "a_rgb.png")  # grey saved as RGB
    Image.fromarray(np.roll(RAMP, 20, axis=1)).save(tmp_path / "plain.png")  # plain.dcm's pixels as a PNG
    later = [
        ["P11", "a_again.png", "", 0, 0, ""],
        ["P12", "dual_again.dcm", "", 1, 1, ""],
        ["P13", "a_rgb.png", "", 1, 0, ""],
        ["P15", "plain.png", "", 0, 1, ""],
    ]
    with pytest.raises(ManifestError) as e:
        read_manifest(_manifest(tmp_path / "m.csv", fine[:1] + shared + fine[1:] + later, columns))
    assert _codes(e.value) == {SHARED_IMAGE, SAME_PICTURE, BLANK_IMAGE}  # (warnings listed with errors)
    said = [(p.code, p.row, p.column, p.message) for p in e.value.problems if p.code == SHARED_IMAGE]
    tail = (
        "one image for two patients can sit in training and test alike; give each patient their own image, or "
        "leave the cell empty (a column filled down in a spreadsheet?)"
    )
    copy = f"('{pics['a']}', the same pixels)"
    assert said == [
        (SHARED_IMAGE, 2, "bmode", f"the same picture as row 1's bmode (patient 'P1'): {tail}"),
        (SHARED_IMAGE, 3, "bmode", f"the same picture as row 1's bmode (patient 'P1') {copy}: {tail}"),
        (SHARED_IMAGE, 4, "ceus", f"the same picture as row 1's ceus (patient 'P1'): {tail}"),
        (SHARED_IMAGE, 12, "bmode", f"the same picture as row 1's bmode (patient 'P1') {copy}: {tail}"),
        (
            SHARED_IMAGE,
            13,
            "bmode",
            f"the same picture as row 10's bmode (patient 'P9') ('{tmp_path / 'dual.dcm'}', the same pixels): {tail}",
        ),
        (SHARED_IMAGE, 14, "bmode", f"the same picture as row 1's bmode (patient 'P1') {copy}: {tail}"),
        (
            SHARED_IMAGE,
            15,
            "bmode",
            f"the same picture as row 11's bmode (patient 'P14') ('{tmp_path / 'plain.dcm'}', the same pixels): {tail}",
        ),
    ], said
    # new patients to score (no labels: nothing is trained or tested on them): a warning, which
    # a user scoring one picture under two flags may mean
    scored = read_manifest(tmp_path / "m.csv", require_labels=False)
    shared = [w for w in scored.warnings if w.code == SHARED_IMAGE]
    assert [w.row for w in shared] == [2, 3, 4, 12, 13, 14, 15] and shared[0].message.endswith(
        "(patient 'P1'): both are read from one image (a column filled down in a spreadsheet?); with labels to "
        "train on, it is refused (it can sit in training and test alike)"
    ), shared
    # a B-mode column filled down over five rows: said in full once, then "as said for row 2"
    filled = [["Q1", "a.png", "", 0, 0, ""], *([f"Q{i}", "a.png", "", i % 2, i % 2, ""] for i in range(2, 7))]
    with pytest.raises(ManifestError) as e:
        read_manifest(_manifest(tmp_path / "filled.csv", filled, columns))
    assert [p.row for p in e.value.problems] == [2, 3, 4, 5, 6] and str(e.value).count(tail) == 1, e.value

    capsys.readouterr()
    manifest = _manifest(tmp_path / "fine.csv", fine, columns)
    cohort = read_manifest(manifest)
    assert [(w.code, w.row) for w in cohort.warnings] == [
        (SAME_PICTURE, 4),
        ("blank_image", 5),
        ("blank_image", 6),
        (SAME_PICTURE, 8),
    ]
    err = capsys.readouterr().err.splitlines()
    assert err[-1] == (
        f"warning: {manifest}: 2 patient(s) have one picture as B-mode and CEUS: both branches see the same "
        f"pixels: [same_picture] row 4, column 'ceus', file '{tmp_path / 'e.png'}': the same picture as this "
        "patient's bmode: the B-mode and CEUS branches see the same pixels; [same_picture] row 8, column 'ceus', "
        f"file '{tmp_path / 'plain.dcm'}': the same picture as this patient's bmode: the B-mode and CEUS branches "
        "see the same pixels"
    ), err
    assert len(err) == 2 and err[0].startswith(f"warning: {manifest}: 2 image(s) hold no picture"), err


def test_one_recording_for_two_patients_is_refused_however_its_frames_are_stored(tmp_path):
    """helper-52's trial of eaf6508: clips were told apart by their bytes and a cine's frame by
    its frame cell, so one recording passed under two patients: a frame folder saved again or
    its frames renamed, one frame of a clip as another patient's still, a clip cut shorter, one
    cine as one patient's B-mode frame and another's CEUS clip, a cine's first frame exported as
    a PNG still. Each is `shared_image` now, naming the frame where a frame is what is shared;
    in one patient, a B-mode still that is a frame of their own CEUS clip is `same_picture`.
    Not refused: clips whose frames are all their own, clips that open on the same black frame
    or the same frame of the scanner's screen alone (one frame in common, not a picture)."""
    rng = np.random.default_rng(11)
    frames = rng.integers(20, 230, (6, 12, 16, 3), dtype=np.uint8)

    def folder(name, pictures, names="f{:02d}.png"):
        (tmp_path / name).mkdir()
        for k, f in enumerate(pictures):
            Image.fromarray(f).save(tmp_path / name / names.format(k), compress_level=1 + k % 9)
        return name

    still = [
        _write(tmp_path / f"s{k}.png", Image.fromarray(f)).name
        for k, f in enumerate(rng.integers(0, 255, (9, 12, 16), dtype=np.uint8))
    ]
    folder("clip", frames)
    folder("resaved", frames, "frame_{}.png")  # other compression, other names in the same order
    folder("short", frames[2:5])  # the clip cut shorter
    folder("other", rng.integers(20, 230, (6, 12, 16, 3), dtype=np.uint8))  # a clip of its own
    _write(tmp_path / "frame3.png", Image.fromarray(frames[3]))  # one frame saved as a still
    cine = np.stack([np.full((12, 16, 3), 20 + 25 * k, np.uint8) + frames[0] // 8 for k in range(4)])
    _cine(tmp_path / "cine.dcm", cine, 4)
    _write(tmp_path / "cine0.png", Image.fromarray(cine[0]))  # the cine's first frame exported
    # helper-53's trial: two patients' clips that open alike, on a black frame and on the scanner's
    # screen with nothing scanned (black, a white bar): no picture of either (not shared_image)
    screen = np.zeros((12, 16, 3), np.uint8)
    screen[:2] = 255
    lead = [np.zeros((12, 16, 3), np.uint8), screen]
    folder("lead_a", [*lead, *rng.integers(20, 230, (3, 12, 16, 3), dtype=np.uint8)])
    folder("lead_b", [*lead, *rng.integers(20, 230, (3, 12, 16, 3), dtype=np.uint8)])
    header = ["patient_id", "bmode", "ceus", "us_lnm", "lnm", "bmode_frame"]
    rows = [
        ["P1", still[0], "clip", 0, 1, ""],
        ["P2", still[1], "resaved", 1, 1, ""],
        ["P3", "frame3.png", "", 0, 0, ""],
        ["P4", still[2], "short", 1, 0, ""],
        ["P5", "cine.dcm", "", 1, 1, "2"],
        ["P6", still[3], "cine.dcm", 0, 0, ""],
        ["P7", "cine0.png", "", 1, 0, ""],
        ["P8", still[4], "other", 0, 1, ""],
        ["P9", still[5], "lead_a", 1, 1, ""],
        ["P10", still[6], "lead_b", 0, 0, ""],  # P9's lead-in frames, then its own
    ]
    with pytest.raises(ManifestError) as e:
        read_manifest(_manifest(tmp_path / "m.csv", rows, header))
    said = [(p.code, p.row, p.column, p.message.split(" (patient")[0]) for p in e.value.problems]
    assert said == [
        (SHARED_IMAGE, 2, "ceus", "the same picture as row 1's ceus"),
        (SHARED_IMAGE, 3, "bmode", "the same picture as a frame of row 1's ceus"),
        (SHARED_IMAGE, 4, "ceus", "a frame of this clip is a frame of row 1's ceus"),
        (SHARED_IMAGE, 6, "ceus", "the same recording as row 5's bmode"),
        (SHARED_IMAGE, 7, "bmode", "the same picture as a frame of row 5's bmode"),
    ], e.value
    # one patient's B-mode still that is a frame of their own CEUS clip: both branches see it
    _write(tmp_path / "clip0.png", Image.fromarray(frames[0]))
    cohort = read_manifest(_manifest(tmp_path / "own.csv", [["Q1", "clip0.png", "clip", 1, 0, ""], rows[7]], header))
    assert [(w.code, w.row, w.message.split(" ('")[0]) for w in cohort.warnings] == [
        (SAME_PICTURE, 1, "a frame of this clip is this patient's bmode")
    ], cohort.warnings


def test_a_damaged_or_cut_short_file_is_said_so_naming_where(tmp_path):
    """helper-52's trial of eaf6508: a PNG whose sBIT chunk fails its CRC was "cannot identify
    image file" (PIL's words), a DICOM file cut to 400 bytes "holds no image (missing Rows, ...)"
    and one cut inside its pixel data a header that disagrees with its data. A PNG's chunks are
    walked (a CRC that fails, a file that ends inside a chunk or before IEND: the chunk and the
    byte named), a DICOM file that ends before its image or inside its pixel data is said to be
    cut short, a cine cut between two frames too, and a clip's frame folder with a damaged frame
    names that frame. A JPEG cut short (stop 73, helper-53's trial of bc14a45: PIL's "image file
    is truncated") is said so too: its marker segments are walked, up to the end-of-image
    marker after its scan."""
    import struct

    picture = np.random.default_rng(4).integers(0, 255, (24, 32), dtype=np.uint8)
    Image.fromarray(picture).save(tmp_path / "whole.png")
    Image.fromarray(np.roll(picture, 7, axis=0)).save(tmp_path / "whole.jpg", quality=90)
    jpg = (tmp_path / "whole.jpg").read_bytes()
    (tmp_path / "half.jpg").write_bytes(jpg[: len(jpg) // 2])
    (tmp_path / "head.jpg").write_bytes(jpg[:10])  # inside its JFIF header (APP0)
    # (helper-54's trial: the decoder's words for these) cut inside the signature, zero bytes only,
    # text under an image's name, a JPEG whose scan data was overwritten
    (tmp_path / "sig.png").write_bytes((tmp_path / "whole.png").read_bytes()[:5])
    (tmp_path / "one.jpg").write_bytes(jpg[:1])
    (tmp_path / "zeros.png").write_bytes(bytes(1000))
    (tmp_path / "text.png").write_bytes(b"hello, this is not an image\n")
    scan = jpg.index(b"\xff\xda")
    (tmp_path / "garbled.jpg").write_bytes(jpg[: scan + 30] + b"\xff" * 40 + jpg[scan + 70 :])
    # (helper-55's trial: an IndexError out of PIL for the first, "structure whole" for the second)
    whole, chunk = (tmp_path / "whole.png").read_bytes(), (tmp_path / "whole.png").read_bytes().index(b"IDAT") - 4
    (tmp_path / "no_idat.png").write_bytes(
        whole[:chunk] + whole[chunk + 12 + struct.unpack(">I", whole[chunk : chunk + 4])[0] :]
    )
    (tmp_path / "zeroed.jpg").write_bytes(jpg[:2] + bytes(18) + jpg[20:])
    png = (tmp_path / "whole.png").read_bytes()
    header_end = 8 + 12 + 13  # the signature, then IHDR
    sbit = struct.pack(">I", 1) + b"sBIT" + bytes([6]) + b"\0\0\0\0"  # a zero CRC
    (tmp_path / "sbit.png").write_bytes(png[:header_end] + sbit + png[header_end:])
    idat = bytearray(png)
    at = png.index(b"IDAT") - 4
    idat[at + 8 + struct.unpack(">I", png[at : at + 4])[0]] ^= 0xFF  # the first byte of IDAT's CRC
    (tmp_path / "idat.png").write_bytes(bytes(idat))
    (tmp_path / "half.png").write_bytes(png[: len(png) // 2])
    (tmp_path / "no_iend.png").write_bytes(png[:-12])
    dicom.write_dataset(dicom.new_dataset(np.roll(picture, 3, axis=1)), tmp_path / "whole.dcm")
    dcm = (tmp_path / "whole.dcm").read_bytes()
    (tmp_path / "head.dcm").write_bytes(dcm[:400])
    (tmp_path / "head300.dcm").write_bytes(dcm[:300])  # (helper-53: before even its SOP Class UID)
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    deflated = dicom.new_dataset(np.roll(picture, 9, axis=1))
    deflated.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    deflated.save_as(tmp_path / "deflated.dcm", enforce_file_format=True)
    (tmp_path / "deflated_cut.dcm").write_bytes((tmp_path / "deflated.dcm").read_bytes()[:400])
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "pixels.dcm").write_bytes(dcm[: len(dcm) - 100])
    cine = np.stack([np.full((12, 16, 3), 20 + 25 * k, np.uint8) for k in range(4)])
    _cine(tmp_path / "cine.dcm", cine, 4)
    (tmp_path / "cine_cut.dcm").write_bytes((tmp_path / "cine.dcm").read_bytes()[: -2 * 12 * 16 * 3])
    (tmp_path / "clip").mkdir()
    for k in range(3):
        Image.fromarray(np.roll(picture, 5 + k, axis=0)).save(tmp_path / "clip" / f"f{k}.png")
    (tmp_path / "clip" / "f1.png").write_bytes((tmp_path / "clip" / "f1.png").read_bytes()[:-12])
    stills = own_pictures(tmp_path / "whole.png", 3)
    rows = [
        ["A", "sbit.png", "", 1, 1],
        ["B", "idat.png", "", 0, 0],
        ["C", "half.png", "", 1, 0],
        ["D", "no_iend.png", "", 0, 1],
        ["E", "head.dcm", "", 1, 1],
        ["F", "pixels.dcm", "", 0, 0],
        ["G", stills[0], "cine_cut.dcm", 1, 0],
        ["H", stills[1], "clip", 0, 1],
        ["I", stills[2], "", 1, 0],
        ["J", "head300.dcm", "", 0, 1],
        ["K", "deflated.dcm", "", 1, 1],
        ["L", "deflated_cut.dcm", "", 0, 0],
        ["M", "empty.png", "", 1, 0],
        ["N", "half.jpg", "", 0, 1],
        ["O", "head.jpg", "", 1, 1],
        ["P", "sig.png", "", 0, 0],
        ["Q", "one.jpg", "", 1, 0],
        ["R", "zeros.png", "", 0, 1],
        ["S", "text.png", "", 1, 1],
        ["T", "garbled.jpg", "", 0, 0],
        ["U", "no_idat.png", "", 1, 0],
        ["V", "zeroed.jpg", "", 0, 1],
    ]
    with pytest.raises(ManifestError) as e:
        read_manifest(_manifest(tmp_path / "m.csv", rows))
    said = {p.row: p.message for p in e.value.problems}
    cut = "cut short (a copy or download that stopped?)"
    assert said[1].startswith("damaged PNG: chunk 'sBIT' at byte 33 fails its CRC check: the file changed"), said
    assert said[2].startswith(f"damaged PNG: chunk 'IDAT' at byte {at} fails its CRC check"), said
    assert said[3] == (
        f"damaged PNG: the file ends at byte {len(png) // 2}, inside chunk 'IDAT' (from byte {at}, "
        f"{struct.unpack('>I', png[at : at + 4])[0]} bytes of data): {cut}"
    ), said
    assert said[4] == f"damaged PNG: the file ends at byte {len(png) - 12} without the IEND chunk: {cut}", said
    assert said[5].startswith("DICOM file ends after 400 bytes without its image (no Rows, Columns") and cut in said[5]
    assert said[6].startswith(f"DICOM file ends after {len(dcm) - 100} bytes, inside its pixel data (768 bytes") and (
        said[6].endswith(cut)
    ), said
    assert said[7].startswith("DICOM file ends after") and "inside its pixel data (2304 bytes" in said[7], said
    assert said[8].startswith("frame f1.png: damaged PNG: the file ends at byte") and said[8].endswith(cut), said
    assert said[10].startswith("DICOM file ends after 300 bytes without its image or even its SOP Class UID"), said
    assert said[11].startswith("transfer syntax Deflated Explicit VR Little Endian (1.2.840.10008.1.2.1.99) is not")
    # told from its meta information, before any inflating (helper-118: a deflate bomb), cut or not
    assert said[12] == said[11], said
    assert said[13] == "empty file (0 bytes): an export or copy that wrote nothing", said
    ends = "damaged JPEG: the file ends at byte"
    assert said[14] == f"{ends} {len(jpg) // 2}, inside its image data, with no end-of-image marker: {cut}", said
    assert said[15] == f"{ends} 10, inside marker segment 0xFFE0 (from byte 2): {cut}", said
    assert said[16] == f"damaged PNG: the file ends at byte 5, inside its signature: {cut}", said
    assert said[17] == f"damaged JPEG: the file ends at byte 1, inside its start-of-image marker: {cut}", said
    assert said[18] == "the file holds only zero bytes (1000 of them): an export or copy that wrote no data", said
    assert said[19] == "not a PNG or JPEG image: it holds text (28 bytes)", said  # (not quoted: test below)
    assert said[20].startswith("damaged JPEG: its structure is whole but its image data does not decode ("), said
    assert said[21] == "damaged PNG: it holds no image data (no IDAT chunk before IEND)", said
    assert said[22] == "damaged JPEG: byte 2 is 0x00 where a marker segment begins (0xFF): the file is damaged there"
    assert set(said) == {*range(1, 9), *range(10, 23)}, said


LFS_POINTER = (
    b"version https://git-lfs.github.com/spec/v1\n"
    b"oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\nsize 12345\n"
)


def test_a_git_lfs_or_git_annex_placeholder_is_named_as_one_by_every_reader(tmp_path):
    """A dataset repository cloned without its Git LFS content leaves a pointer file of text
    under each picture's name, and one whose git-annex content was not fetched a broken link or a
    pointer file: each reader had said it in its own decoder's words ("not a PNG or JPEG image:
    it begins as text, 'version https://git-lfs...'", "no 'DICM' after its 128-byte preamble",
    "moov atom not found", "a broken symbolic link"). Each is named as the placeholder it is,
    with the command that fetches the content, as a still, a DICOM file, a video, a clip's
    frame, a mask; a larger file that begins alike is no pointer (the LFS specification)."""
    pictures = own_pictures(_write(tmp_path / "real.png", Image.fromarray(RAMP)), 2)
    for name in ("a.png", "b.jpg", "c.dcm", "d.mp4", "clip/f1.png", "m.png"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(LFS_POINTER)
    (tmp_path / "big.png").write_bytes(LFS_POINTER + b"x" * 1024)
    (tmp_path / "crlf.png").write_bytes(LFS_POINTER.replace(b"\n", b"\r\n"))  # (a Windows checkout's, helper-121)
    # (helper-122) as PowerShell 5's Out-File (UTF-16 with its mark) and Notepad (a UTF-8 mark) save one; CR alone
    (tmp_path / "u16.png").write_bytes(("\ufeff" + LFS_POINTER.decode().replace("\n", "\r\n")).encode("utf-16-le"))
    (tmp_path / "bom.png").write_bytes(b"\xef\xbb\xbf" + LFS_POINTER.replace(b"\n", b"\r\n"))
    (tmp_path / "cr.png").write_bytes(LFS_POINTER.replace(b"\n", b"\r"))
    Image.new("L", (8, 8)).save(tmp_path / "bmp.png", format="BMP")
    key = "SHA256E-s4567--0123456789abcdef.png"
    (tmp_path / "locked.png").symlink_to(f".git/annex/objects/pX/8K/{key}/{key}")
    (tmp_path / "unlocked.png").write_bytes(f"/annex/objects/{key}\n".encode())
    rows = [
        ["A", "a.png", "", 1, 0],
        ["B", "b.jpg", "", 0, 1],
        ["C", "c.dcm", "", 1, 0],
        ["D", pictures[0], "d.mp4", 0, 1],
        ["E", pictures[1], "clip", 1, 1],
        ["F", "locked.png", "", 0, 0],
        ["G", "unlocked.png", "", 1, 0],
        ["H", "big.png", "", 0, 1],
        ["I", "crlf.png", "", 1, 1],
        ["J", "bmp.png", "", 0, 0],
        ["K", "u16.png", "", 1, 0],
        ["L", "bom.png", "", 0, 1],
        ["M", "cr.png", "", 1, 1],
    ]
    columns = ("patient_id", "bmode", "ceus", "us_lnm", "lnm", "bmode_mask")
    with pytest.raises(ManifestError) as e:
        read_manifest(_manifest(tmp_path / "m.csv", [[*r, "m.png" if r[0] == "D" else ""] for r in rows], columns))
    said = {(p.row, p.column): p.message for p in e.value.problems}
    lfs = (
        "a Git LFS pointer to a file of 12,345 bytes (oid sha256:4d7a214614ab...), not the file itself: its "
        "repository was cloned or copied without its LFS content; run 'git lfs pull' in that repository"
    )
    for at in [(1, "bmode"), (2, "bmode"), (3, "bmode"), (4, "ceus"), (4, "bmode_mask")]:
        assert said[at].startswith(lfs) or said[at] == "as said for row 1", (at, said)
    assert said[(5, "ceus")].startswith(f"frame f1.png: {lfs}"), said
    annex = (
        f"a git-annex pointer to a file of 4,567 bytes (key {key}), not the file itself: its content was not "
        "fetched into this repository; run 'git annex get' on it in that repository"
    )
    assert said[(6, "bmode")] == f"image file is {annex}", said
    assert said[(7, "bmode")] == annex, said
    assert said[(8, "bmode")] == f"not a PNG or JPEG image: it holds text ({len(LFS_POINTER) + 1024:,} bytes)", said
    for row in (9, 11, 12, 13):
        assert said[(row, "bmode")].startswith(lfs) or said[(row, "bmode")] == "as said for row 1", (row, said)
    assert said[(10, "bmode")] == "a BMP image named .png: this reader takes PNG and JPEG; save it as PNG (lossless)"
    assert set(said) == {(r, "bmode") for r in (1, 2, 3, *range(6, 14))} | {
        (4, "ceus"),
        (4, "bmode_mask"),
        (5, "ceus"),
    }


def test_a_large_file_under_an_image_name_is_told_by_its_start_not_read_whole(tmp_path):
    """A file that is no PNG or JPEG is said from its first bytes: one of 1 GB under an image's
    name (a video saved as ``.png``) had been read whole into memory to say so. Sparse here (no
    disk), with an AVI's start; tracemalloc counts what Python allocated for it."""
    import tracemalloc

    from lnm_jax.data.pixels.decode import damage

    path = tmp_path / "video.png"
    with open(path, "wb") as f:
        f.write(b"RIFF\x00\x00\x00\x00AVI LIST")
        f.truncate(1 << 30)
    tracemalloc.start()
    try:
        said = damage(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert said.startswith("not a PNG or JPEG image: it holds a video (AVI)"), said
    assert peak < 4 << 20, peak  # (the 4 KB it reads, and the interpreter's own)


@pytest.mark.parametrize(
    "text, said",
    [
        (b"<!DOCTYPE html>\n<html><head><title>Sign in</title>", "it holds a web page (HTML): a login or error page"),
        (b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg">', "it holds an SVG drawing (XML)"),
        # (helper-122: one with a size, which ffmpeg decodes, had been read as a clip of one frame)
        (
            b'<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64"><rect width="64" height="64" '
            b'fill="gray"/></svg>',
            "it holds an SVG drawing (XML)",
        ),
        (b'{"error": "Unauthorized"}', "it holds JSON text"),
        (b"root:$6$secret-hash:19000:0:99999:7:::\n", "it holds text (39 bytes)"),
        # helper-121: more of the kind, each once said as hexadecimal bytes or as plain text
        (b"\xef\xbb\xbf<html><body>", "it holds a web page (HTML)"),
        ("\ufeff<html><body>".encode("utf-16"), "it holds a web page (HTML)"),
        (b"<!-- saved from url=(0014)about:internet -->\n<p>", "it holds a web page (HTML)"),
        (b"[InternetShortcut]\r\nURL=https://pacs.example/x.png\r\n", "it holds an internet shortcut (.url)"),
        (b"outs:\n- md5: 0123\n  path: x.png\n", "it holds a DVC placeholder (.dvc): run 'dvc pull'"),
        (b"%PDF-1.4\n1 0 obj\n", "it holds a PDF document"),
        (b"PK\x03\x04\x14\x00\x00\x00", "it holds a ZIP archive"),
        (b"\x1f\x8b\x08\x00\x00\x00\x00\x00", "it holds gzip-compressed data"),
        (b"x.png" + bytes(252) + b"ustar\x0000", "it holds a tar archive"),
        (b"L\x00\x00\x00\x01\x14\x02\x00\x00\x00", "it holds a Windows shortcut (.lnk) to the file, not the file"),
        (b"book\x00\x00\x00\x00mark\x00\x00", "it holds a macOS alias to the file, not the file"),
        (b"\x00\x05\x16\x07\x00\x02\x00\x00", "it holds macOS AppleDouble metadata"),
    ],
)
def test_text_under_an_image_name_is_said_by_its_kind_and_never_quoted(tmp_path, text, said):
    """Text under an image's name is said by its kind (a web page, an SVG, JSON, text), never
    quoted: helper-118 had a manifest name ``/etc/shadow`` and read its first 40 characters in
    the line (as root)."""
    (tmp_path / "x.png").write_bytes(text)
    with pytest.raises(ManifestError) as e:
        read_manifest(_manifest(tmp_path / "m.csv", [["A", "x.png", "", 1, 0]]))
    (message,) = [p.message for p in e.value.problems if p.column == "bmode"]
    assert message.startswith(f"not a PNG or JPEG image: {said}"), message
    assert b"secret" not in text or "secret" not in message
    (tmp_path / "t.mp4").write_bytes(text)  # a video is never text, of a known kind or not (helper-122)
    with pytest.raises(clips.ClipError, match=re.escape(f"t.mp4: not a video: {said}")):
        clips.read_frames(tmp_path / "t.mp4")
    if "text (" not in said:  # named under a DICOM file's name alike (not "no 'DICM' after its preamble")
        from lnm_jax.data.pixels.decode import holds

        assert holds(tmp_path / "x.png").startswith(said)
        (tmp_path / "x.mp4").write_bytes(text)
        with pytest.raises(clips.ClipError, match=re.escape(f"x.mp4: not a video: {said}")):
            clips.read_frames(tmp_path / "x.mp4")
        (tmp_path / "x.dcm").write_bytes(text)
        with pytest.raises(dicom.DicomError, match=re.escape(f"x.dcm: not a DICOM file: {said}")):
            dicom.read_header(tmp_path / "x.dcm")


def test_a_jpeg_whose_image_data_is_damaged_is_refused_as_libjpeg_warns_of_it(tmp_path):
    """helper-63: a JPEG whose scan was cut short with an end-of-image marker added, written over
    by one mid-scan, wiped by zeros, or short of a restart marker (and a progressive one cut
    short) passed validate, read half flat grey (Pillow decodes past libjpeg's warnings); so did
    a DICOM file's JPEG frame. Each is refused with libjpeg's words; the whole files read."""
    picture = np.random.default_rng(5).integers(0, 255, (64, 96, 3), dtype=np.uint8)
    picture[:, :48] //= 3  # (a picture, not noise alone: each copy its own)

    def jpeg(**save) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(picture).save(buf, "JPEG", quality=90, **save)
        return buf.getvalue()

    whole, progressive, restarts = jpeg(), jpeg(progressive=True), jpeg(restart_marker_rows=1)
    scan = whole.index(b"\xff\xda")
    middle = (scan + len(whole)) // 2
    rst = restarts.index(b"\xff\xd1")
    dqt = whole.index(b"\xff\xdb")
    files = {
        "whole.jpg": whole,
        "progressive.jpg": progressive,
        "restarts.jpg": restarts,
        # (helper-69) what libjpeg skips without losing a block: zeros padding the scan before EOI,
        # junk between header segments; read, the same pixels
        "padded.jpg": whole[:-2] + bytes(64) + b"\xff\xd9",
        "header_junk.jpg": whole[:dqt] + b"\x01\x02\x03\x04" + whole[dqt:],
        "cut_with_eoi.jpg": whole[:middle] + b"\xff\xd9",
        "eoi_mid_scan.jpg": whole[:middle] + b"\xff\xd9" + whole[middle + 2 :],
        "wiped.jpg": whole[:middle] + bytes(64) + whole[middle + 64 :],
        "restart_lost.jpg": restarts[:rst] + restarts[rst + 2 :],
        "progressive_cut.jpg": progressive[: len(progressive) // 3] + b"\xff\xd9",
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    said = {}
    for name in files:
        try:
            verify_image(tmp_path / name, 10**6)
        except ValueError as e:
            said[name] = str(e)
    read = {"whole.jpg", "progressive.jpg", "restarts.jpg", "padded.jpg", "header_junk.jpg"}
    assert set(said) == set(files) - read, said
    for name in ("padded.jpg", "header_junk.jpg"):
        np.testing.assert_array_equal(read_image(tmp_path / name), read_image(tmp_path / "whole.jpg"))
    for name, message in said.items():
        assert re.match(r"damaged JPEG: libjpeg reports '(Corrupt JPEG data|Premature end)", message), (name, message)
    assert "premature end of data segment" in said["cut_with_eoi.jpg"]
    assert "extraneous bytes before marker 0xd2" in said["restart_lost.jpg"]
    # a DICOM file's JPEG frame: the same bytes, the frame named
    from pydicom.encaps import encapsulate

    for name, data in (("whole", whole), ("cut", files["cut_with_eoi.jpg"])):
        ds = dicom.new_dataset(picture)
        ds.PhotometricInterpretation = "YBR_FULL_422"
        ds.PixelData = encapsulate([data])
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.50"  # JPEG baseline
        dicom.write_dataset(ds, tmp_path / f"{name}.dcm")
    assert dicom.read_header(tmp_path / "whole.dcm").frames == 1
    with pytest.raises(dicom.DicomError, match=r"cut.dcm: frame 0 of 1 is a damaged JPEG: libjpeg reports 'Corrupt"):
        dicom.read_header(tmp_path / "cut.dcm")


def test_a_dicom_whose_jpeg_says_another_colour_space_than_its_header_is_said_so(tmp_path):
    """helper-63: PhotometricInterpretation RGB over a JFIF (YCbCr) codestream, and YBR_FULL_422
    over an RGB one (Adobe transform 0), were read by the codestream in silence (pydicom's
    warning reached no one), while a reader that trusts the header shows other colours. Each is
    a validate note naming what says so; a header that agrees, or a codestream that declares
    nothing, is none."""
    from pydicom.encaps import encapsulate

    from lnm_jax.data.pixels.dicom import codestream_colour

    picture = np.zeros((32, 32, 3), np.uint8)
    picture[..., 0], picture[8:24, 8:24] = 200, (230, 120, 20)

    def file(name, photometric, **save):
        buf = io.BytesIO()
        Image.fromarray(picture).save(buf, "JPEG", quality=95, **save)
        ds = dicom.new_dataset(picture)
        ds.PhotometricInterpretation = photometric
        ds.PixelData = encapsulate([buf.getvalue()])
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.50"
        dicom.write_dataset(ds, tmp_path / name)
        return buf.getvalue()

    ycc = file("rgb_over_jfif.dcm", "RGB")
    rgb = file("ybr_over_rgb.dcm", "YBR_FULL_422", keep_rgb=True, subsampling=0)
    file("agrees.dcm", "YBR_FULL_422")
    assert codestream_colour(ycc) == ("YCbCr", "a JFIF marker")
    assert codestream_colour(rgb) == ("RGB", "an Adobe marker of colour transform 0")
    assert dicom.read_header(tmp_path / "rgb_over_jfif.dcm").codestream_colour == ("YCbCr", "a JFIF marker")
    assert dicom.read_header(tmp_path / "ybr_over_rgb.dcm").codestream_colour[0] == "RGB"
    assert dicom.read_header(tmp_path / "agrees.dcm").codestream_colour is None
    notes = {}
    for name in ("rgb_over_jfif.dcm", "ybr_over_rgb.dcm", "agrees.dcm"):
        notes[name] = [n for n in resolve(tmp_path / name, "bmode").notes if "codestream says" in n]
    assert notes["rgb_over_jfif.dcm"] == [
        "PhotometricInterpretation RGB, but its JPEG codestream says YCbCr (a JFIF marker): readers differ on which "
        "they follow, so its colours may show otherwise elsewhere; it is read as pydicom decodes it (by the "
        "codestream's JFIF marker or R, G, B identifiers)"
    ]
    assert len(notes["ybr_over_rgb.dcm"]) == 1 and not notes["agrees.dcm"]


def test_a_copy_saved_another_way_is_a_warning_naming_the_first(tmp_path):
    """helper-52's trial of eaf6508: the exact check passed a JPEG re-encode of another patient's
    PNG, 8-bit samples stored as 16-bit, a copy resized by 2% and a crop one pixel off. Each is
    `similar_image` (a warning: lnm_jax.data.cohorts.similar, its threshold measured on BUS-BRA
    and DDTI) naming the first, the RMS difference in the message; one picture exactly stays
    `shared_image` alone; pictures of their own, and two halves of one capture, are neither."""
    from lnm_jax.data.cohorts.manifest import SIMILAR_IMAGE

    rng = np.random.default_rng(8)
    coarse = Image.fromarray(rng.integers(30, 220, (6, 8), dtype=np.uint8))
    smooth = np.asarray(coarse.resize((256, 192), Image.BILINEAR))  # smooth, as ultrasound is at this scale
    Image.fromarray(smooth).save(tmp_path / "a.png")
    Image.fromarray(smooth).save(tmp_path / "a.jpg", quality=85)
    Image.fromarray(smooth.astype(np.uint16) << 8).save(tmp_path / "a16.png")  # 8-bit as 16-bit
    Image.fromarray(smooth).resize((251, 188), Image.BILINEAR).save(tmp_path / "a98.png")
    Image.fromarray(smooth[:, ::-1]).save(tmp_path / "a_mirror.png")  # (stop 73: training's flips see it as one)
    wide = np.concatenate([smooth, np.asarray(coarse.resize((256, 192), Image.NEAREST))], axis=1)
    Image.fromarray(wide).save(tmp_path / "capture.png")  # two pictures side by side
    for k in range(4):  # pictures of their own
        Image.fromarray(
            np.asarray(Image.fromarray(rng.integers(30, 220, (6, 8), dtype=np.uint8)).resize((256, 192)))
        ).save(tmp_path / f"own{k}.png")
    header = ["patient_id", "bmode", "ceus", "us_lnm", "lnm", "bmode_crop"]
    rows = [
        ["P1", "a.png", "own0.png", 0, 1, ""],
        ["P2", "a.jpg", "", 1, 1, ""],
        ["P3", "a16.png", "", 0, 0, ""],
        ["P4", "a98.png", "", 1, 0, ""],
        ["P5", "a.png", "", 1, 1, ""],  # one picture exactly: shared_image alone
        ["P6", "capture.png", "own1.png", 0, 0, "0,0,192,160"],
        ["P7", "capture.png", "", 1, 1, "1,0,193,160"],  # one pixel off P6's crop
        ["P8", "capture.png", "own2.png", 0, 1, "256,0,448,160"],  # the other half: a picture of its own
        ["P9", "own3.png", "", 1, 0, ""],
        ["P10", "a_mirror.png", "", 0, 1, ""],
    ]
    with pytest.raises(ManifestError) as e:
        read_manifest(_manifest(tmp_path / "m.csv", rows, header))
    said = [(p.code, p.row, p.column) for p in e.value.problems]
    assert said == [
        (SIMILAR_IMAGE, 2, "bmode"),
        (SIMILAR_IMAGE, 3, "bmode"),
        (SIMILAR_IMAGE, 4, "bmode"),
        (SHARED_IMAGE, 5, "bmode"),
        (SIMILAR_IMAGE, 7, "bmode"),
        (SIMILAR_IMAGE, 10, "bmode"),
    ], e.value
    assert ", one mirrored left to right, at most 0.03" in e.value.problems[-1].message, e.value.problems[-1]
    assert "mirrored" not in e.value.problems[0].message.split("difference")[0], e.value.problems[0]
    first = e.value.problems[0].message
    assert first.startswith(f"nearly the same picture as row 1's bmode (patient 'P1', '{tmp_path / 'a.png'}'): ")
    assert "thumbnails differ by 0.00" in first and "at most 0.03 being a copy's difference" in first, first
    # all pairs, a block of rows at a time: the same pairs whatever the block
    from lnm_jax.data.cohorts.similar import earlier_similar

    thumbs = [rng.random(256).astype(np.float32) for _ in range(7)]
    thumbs[5], thumbs[6] = thumbs[1] + 0.001, thumbs[3]
    owners = ["a", "b", "c", "d", "e", "f", "d"]
    found = earlier_similar(thumbs, owners)
    assert [h and h[0] for h in found] == [None, None, None, None, None, 1, None]  # (6 is 3's owner's)
    assert earlier_similar(thumbs, owners, block=2) == found
    from lnm_jax.data.cohorts.similar import nearest_within  # (a site's pictures against a run's, as blocked)

    nearest = nearest_within(thumbs[4:], thumbs[:4])
    assert nearest == [None, 1, 3] and nearest_within(thumbs[4:], thumbs[:4], block=2) == nearest
    # two different pictures on one black screen with one grey bar (helper-53's trial: near by the
    # plain RMS, through the surround they share): cells dark in both do not count
    from lnm_jax.data.cohorts.similar import SIMILAR_RMS, thumbnail

    shown = np.random.default_rng(2)
    screens = []
    for _ in range(2):  # two low-contrast pictures of 800x600, each a third of its screen
        screen = np.zeros((1200, 1600), np.float32)
        screen[:30] = 0.5
        picture = Image.fromarray(shown.integers(90, 110, (6, 8), dtype=np.uint8)).resize((800, 600))
        screen[300:900, 400:1200] = np.asarray(picture, np.float32) / 255
        screens.append(thumbnail(screen))
    assert np.sqrt(np.mean((screens[0] - screens[1]) ** 2)) < SIMILAR_RMS  # (the plain RMS: near, 0.025)
    assert earlier_similar(screens, ["x", "y"]) == [None, None]  # (0.044 over the cells either shows)
    # pictures read dim (8-bit samples stored unscaled in 16 bits, helper-54's trial): different
    # ones were near by their absolute difference; thumbnails are compared brightness-normalised
    dim = [
        np.asarray(Image.fromarray(rng.integers(30, 220, (6, 8), dtype=np.uint8)).resize((256, 192)), np.float32)
        for _ in range(2)
    ]
    unscaled = [thumbnail(d * 16 / 65535) for d in dim]  # v << 4, read at 1/16
    boxed = [np.asarray(Image.fromarray(d * 16 / 65535, "F").resize((16, 16), Image.BOX)) for d in dim]
    assert np.sqrt(np.mean((boxed[0] - boxed[1]) ** 2)) < 0.015  # (as they read: near by the old measure)
    assert earlier_similar(unscaled, ["x", "y"]) == [None, None]
    # and at low contrast on a grey floor (helper-55's trial: 100 + 0.15 v, near by their brightest
    # cell alone): thumbnails span their own range, floor to top
    floor = [(100 + 0.05 * d) / 255 for d in dim]
    boxed = [np.asarray(Image.fromarray(f, "F").resize((16, 16), Image.BOX)) for f in floor]
    assert np.sqrt(np.mean((boxed[0] / boxed[0].max() - boxed[1] / boxed[1].max()) ** 2)) < SIMILAR_RMS
    assert earlier_similar([thumbnail(f) for f in floor], ["x", "y"]) == [None, None]
    one = earlier_similar([thumbnail(dim[0] / 255), unscaled[0]], ["x", "y"])[1]  # one picture, brighter
    assert one[0] == 0 and one[1] < 1e-6, one  # (float32 box averages of values 1/16 as large)
    # a small picture on a very large screen shows a few cells: too few to compare (helper-53's
    # trial: 2400x1800 screens, 6 pairs of 24 different pictures near through 20-odd cells)
    from lnm_jax.data.cohorts.similar import MIN_SHOWN, distances

    small = []
    for _ in range(2):
        screen = np.zeros((1800, 2400), np.float32)
        screen[:30] = 0.5
        picture = Image.fromarray(shown.integers(90, 110, (6, 8), dtype=np.uint8)).resize((256, 192))
        screen[804:996, 1072:1328] = np.asarray(picture, np.float32) / 255
        small.append(thumbnail(screen))
    assert distances(small[0][None], small[1][None])[0, 0] < SIMILAR_RMS  # near over the cells they show (0.013)...
    assert ((small[0] > 1 / 32) | (small[1] > 1 / 32)).sum() < MIN_SHOWN  # ...which are few
    assert earlier_similar(small, ["x", "y"]) == [None, None]
    # only the warnings: the manifest reads, each said
    cohort = read_manifest(_manifest(tmp_path / "ok.csv", [r for r in rows if r[0] != "P5"], header))
    assert [(w.code, w.row) for w in cohort.warnings] == [
        (SIMILAR_IMAGE, 2),
        (SIMILAR_IMAGE, 3),
        (SIMILAR_IMAGE, 4),
        (SIMILAR_IMAGE, 6),
        (SIMILAR_IMAGE, 9),
    ]


def _lut(entries, first: int, bits: int, count: int | None = None, words: bool = False):
    """A Modality or VOI LUT Sequence of one item: ``entries`` from the value ``first`` on, as
    US values, or (``words``) as OW bytes, the two forms files hold."""
    from pydicom.dataset import Dataset

    item = Dataset()
    item.LUTDescriptor = [len(entries) if count is None else count, first, bits]
    if words:
        item.add_new("LUTData", "OW", np.asarray(entries, "<u2").tobytes())
    else:
        item.add_new("LUTData", "US", [int(v) for v in entries])
    return [item]


def test_a_grey_dicom_reads_as_a_viewer_shows_it(tmp_path):
    """Case dicom-voi-window-ignored: a frame stored in 64-191 under a VOI window (center 127.5,
    width 128), or in 0-127 under RescaleSlope 2, is shown by every viewer as the full-range
    picture; the model read the raw values (half the contrast). The rescale and the window
    (LINEAR, LINEAR_EXACT, SIGMOID; the first of several) are applied as PS3.3 C.11 says,
    MONOCHROME1 inverted after them; a window that cannot be applied is named; a
    de-identified copy keeps them."""
    from lnm_jax.data.privacy.deidentify import deidentify

    picture = np.tile(np.arange(0, 256, 2, dtype=np.uint8), (8, 1))  # 0, 2, ..., 254

    def grey(name, pixels, photometric="MONOCHROME2", **attrs):
        ds = _native(dicom.US_IMAGE_STORAGE, pixels, 1, photometric)
        for k, v in attrs.items():
            setattr(ds, k, v)
        ds.save_as(tmp_path / name, enforce_file_format=True)
        return tmp_path / name

    def read(path):
        return dicom.read_frame(dicom.read_header(path), 0)[..., 0]

    full = read(grey("full.dcm", picture))
    np.testing.assert_allclose(full, picture / 255, atol=PNG_ATOL)
    windowed = grey("windowed.dcm", picture // 2 + 64, WindowCenter="127.5", WindowWidth="128")
    # LINEAR maps x to (x - (c - 0.5)) / (w - 1) + 0.5: the 128 stored levels 64..191 onto
    # 1/254..1 in steps of 1/127, the full picture's 0..254/255 in steps of 2/255: within two levels
    np.testing.assert_allclose(read(windowed), full, atol=2 / 255 + PNG_ATOL)
    np.testing.assert_allclose(read(grey("rescaled.dcm", picture // 2, RescaleSlope="2", RescaleIntercept="0")), full)
    exact = grey("exact.dcm", picture // 2 + 64, WindowCenter=["128", "40"], WindowWidth=["128", "10"])
    exact_ds = dicom.read_header(exact)
    assert exact_ds.window == (128.0, 128.0, "LINEAR")  # the first window, LINEAR by default
    sigmoid = grey("sigmoid.dcm", picture, WindowCenter="127", WindowWidth="64", VOILUTFunction="SIGMOID")
    s = read(sigmoid)
    assert s[0, 0] < 0.01 and s[0, -1] > 0.99 and abs(s[0, 64] - 1 / (1 + np.exp(-4 / 64))) < 1e-6
    inverted = read(grey("m1.dcm", picture // 2 + 64, "MONOCHROME1", WindowCenter="127.5", WindowWidth="128"))
    np.testing.assert_allclose(inverted, 1 - read(windowed), atol=PNG_ATOL)
    # LUTs (a table in place of the rescale or window, PS3.3 C.11.1-2): taken over a window beside them
    assert dicom.read_header(grey("lut8.dcm", picture, VOILUTSequence=_lut(255 - np.arange(256), 0, 8))).voi_lut
    np.testing.assert_allclose(read(tmp_path / "lut8.dcm"), 1 - full, atol=PNG_ATOL)
    voi = _lut(np.arange(128) * 2, 64, 8)  # 64..191 -> 0..254: the window above, as a table
    np.testing.assert_allclose(
        read(grey("voi.dcm", picture // 2 + 64, VOILUTSequence=voi, WindowCenter="0", WindowWidth="2")), full
    )
    modality = _lut(np.arange(128) * 514, 0, 16, words=True)  # 0..127 -> 0..65278: v * 514 / 65535 = 2v / 255
    np.testing.assert_allclose(read(grey("mlut.dcm", picture // 2, ModalityLUTSequence=modality)), full, atol=1e-6)
    both = grey("both.dcm", picture // 2, ModalityLUTSequence=_lut(np.arange(128) + 64, 0, 8), VOILUTSequence=voi)
    np.testing.assert_allclose(read(both), full)
    wide = grey("wide.dcm", picture, VOILUTSequence=_lut(np.arange(256) * 257, 0, 8))  # says 8 bits, holds 16
    np.testing.assert_allclose(read(wide), full, atol=PNG_ATOL)
    for name, lut, said in (
        ("short.dcm", _lut(np.arange(200), 0, 8, count=256), "VOI LUT holds 200 entries, its LUTDescriptor says 256"),
        ("deep.dcm", _lut(np.arange(256) * 20, 0, 12), "VOI LUT descriptor says 12 bits, its entries reach 5100"),
    ):
        with pytest.raises(dicom.HeaderMismatchError, match=said):
            dicom.read_header(grey(name, picture, VOILUTSequence=lut))
    for name, attrs, said in (
        ("zero_width.dcm", {"WindowCenter": "128", "WindowWidth": "0"}, "VOI window"),
        ("bad_function.dcm", {"WindowCenter": "128", "WindowWidth": "64", "VOILUTFunction": "CURVE"}, "CURVE"),
        ("zero_slope.dcm", {"RescaleSlope": "0"}, "RescaleSlope"),
    ):
        with pytest.raises(dicom.DicomError, match=said):
            dicom.read_header(grey(name, picture, **attrs))
    # de-identified (pixels written as shown, the transforms dropped), the copy reads as the
    # original up to the rounding of the windowed values to the stored depth: half a level
    ok = _write(tmp_path / "ok.png", Image.fromarray(RAMP))
    originals = {"A": windowed, "B": sigmoid, "C": both, "D": tmp_path / "lut8.dcm"}
    oks = own_pictures(ok, len(originals))  # each patient's own CEUS
    m = _manifest(tmp_path / "m.csv", [[pid, f.name, oks[k], 1, 1] for k, (pid, f) in enumerate(originals.items())])
    deidentify(m, tmp_path / "deid", tmp_path / "private" / "map.csv")
    rows = csv.DictReader((tmp_path / "private" / "map.csv").open())
    copies = {r["original_patient_id"]: tmp_path / "deid" / r["file"] for r in rows if r["input"] == "bmode"}
    for pid, original in originals.items():
        np.testing.assert_allclose(read(copies[pid]), read(original), atol=0.5 / 255 + PNG_ATOL)


def test_frame_time_vector_checked_against_frame_count(tmp_path):
    from pydicom import dcmread

    frames = np.stack([np.full((12, 16, 3), 20 + 25 * k, np.uint8) for k in range(8)])
    cine = _cine(tmp_path / "c.dcm", frames, 8)
    ds = dcmread(cine)
    ds.FrameTimeVector = [0] + [100] * 6  # 7 entries for 8 frames
    ds.save_as(cine, enforce_file_format=True)
    with pytest.raises(dicom.HeaderMismatchError, match="7 entries, the cine holds 8 frames"):
        dicom.read_header(cine)
    ds.FrameTimeVector = [0] + [100] * 7
    ds.save_as(cine, enforce_file_format=True)
    assert dicom.read_header(cine).frame_times_s[-1] == pytest.approx(0.7)


def test_a_cines_timing_is_the_one_its_frame_increment_pointer_names_and_unusable_timing_is_said(tmp_path):
    """The video class (frames timed otherwise than a player shows them) in a DICOM cine: where
    FrameIncrementPointer names FrameTime, which viewers then play by, a FrameTimeVector beside it
    had been used instead (here 0.7 s of frames read as 2.8 s), in silence; FrameTime is used and
    the disagreement said (a FrameTimeVector of the wrong length beside it, which no viewer
    reads, is said, not refused: helper-72). Times that do not increase had been dropped in
    silence (the cine then sampled in frames); that is said now."""
    from pydicom import dcmread

    frames = np.stack([np.full((12, 16, 3), 20 + 25 * k, np.uint8) for k in range(8)])
    cine = _cine(tmp_path / "c.dcm", frames, 8)  # FrameTime 100 ms

    def timing_notes():
        return [n for n in sources.resolve(cine, "ceus").notes if n.startswith("the cine's timing")]

    ds = dcmread(cine)
    ds.FrameIncrementPointer = 0x00181063  # (0018,1063) FrameTime
    ds.FrameTimeVector = [0] + [400] * 7
    ds.save_as(cine, enforce_file_format=True)
    header = dicom.read_header(cine)
    assert header.frame_times_s[-1] == pytest.approx(0.7)
    assert timing_notes() == [
        "the cine's timing: FrameTime 100 ms, which its FrameIncrementPointer names and viewers play by, is used; "
        "its FrameTimeVector says otherwise (400-400 ms)"
    ]
    ds.FrameTimeVector = [0] + [400] * 5  # (helper-72) 6 entries for 8 frames, in a vector no viewer reads
    ds.save_as(cine, enforce_file_format=True)
    assert dicom.read_header(cine).frame_times_s[-1] == pytest.approx(0.7)
    assert timing_notes() == [
        "the cine's timing: FrameTime 100 ms, which its FrameIncrementPointer names and viewers play by, is used; "
        "its FrameTimeVector has 6 entries for 8 frames"
    ]
    ds.FrameTimeVector = [0] + [400] * 7
    ds.FrameIncrementPointer = 0x00181065  # (0018,1065) FrameTimeVector: it is the timing
    ds.save_as(cine, enforce_file_format=True)
    assert dicom.read_header(cine).frame_times_s[-1] == pytest.approx(2.8) and not timing_notes()
    ds.FrameTimeVector = [0, 100, 100, 0, 100, 100, 100, 100]  # a frame at the same time as the one before
    ds.save_as(cine, enforce_file_format=True)
    header = dicom.read_header(cine)
    assert header.frame_times_s is None
    assert timing_notes() == [
        "the cine's timing: its FrameTimeVector does not increase from frame to frame, so it is not used (frames are "
        "sampled in frames)"
    ]


def _palette(path, descriptor_bits: int, lut: np.ndarray):
    ds = _native(dicom.US_IMAGE_STORAGE, RAMP, 1, "PALETTE COLOR")
    for c in ("Red", "Green", "Blue"):
        setattr(ds, f"{c}PaletteColorLookupTableDescriptor", [256, 0, descriptor_bits])
        setattr(ds, f"{c}PaletteColorLookupTableData", lut.astype("<u2").tobytes())
    ds.save_as(path, enforce_file_format=True)
    return path


def test_palette_scaled_by_its_real_entry_depth(tmp_path):
    """Case dicom-palette-lut-out-of-range: an 8-bit descriptor over 16-bit entries reads as
    the 16-bit ramp, in [0, 1], like the consistent file and the 8-bit still."""
    want = read_image(_write(tmp_path / "ref.png", Image.fromarray(RAMP)))
    for name, bits, lut in (
        ("desc16", 16, np.arange(256) * 257),
        ("desc8_entries16", 8, np.arange(256) * 257),
        ("desc8", 8, np.arange(256)),
    ):
        header = dicom.read_header(_palette(tmp_path / f"{name}.dcm", bits, lut))
        got = dicom.read_frame(header, 0)
        assert 0.0 <= got.min() and got.max() <= 1.0, name
        np.testing.assert_allclose(got, want, atol=PNG_ATOL, err_msg=name)


def test_deidentified_palette_keeps_its_depth(tmp_path):
    """A 16-bit palette (behind an 8-bit descriptor) is written by deidentify as the RGB it
    maps to at 16 bits, and reads back as the same pixels."""
    from lnm_jax.data.privacy.deidentify import deidentify

    ramp = (np.arange(256) * 257 + 100).clip(0, 65535)  # not a multiple of 257: 8 bits would lose it
    pal = _palette(tmp_path / "pal.dcm", 8, ramp)
    b = _write(tmp_path / "b.png", Image.fromarray(RAMP))
    (other,) = own_pictures(b, 1)  # patient B's own
    m = _manifest(tmp_path / "m.csv", [["A", pal.name, b.name, 1, 1], ["B", other, "", 0, 0]])
    report = deidentify(m, tmp_path / "deid", tmp_path / "map.csv")
    mapping = {r["original_patient_id"]: r["patient_id"] for r in csv.DictReader(open(tmp_path / "map.csv"))}
    copy = read_manifest(report.manifest).by_id()[mapping["A"]]
    a = decode_input(pal, "bmode", size=24, patient_id="A")
    c = decode_input(copy.bmode, "bmode", size=24, patient_id=copy.patient_id)
    np.testing.assert_allclose(c, a, atol=1e-6)


def test_other_modalities_and_secondary_captures_refused(tmp_path):
    """An MR file (pydicom's own examples_overlay.dcm) is no B-mode; a secondary capture is
    accepted only when asked for."""
    from pydicom.data import get_testdata_file

    mr = get_testdata_file("examples_overlay.dcm")
    b = _write(tmp_path / "b.png", Image.fromarray(RAMP))
    (other,) = own_pictures(b, 1)  # patient B's own
    sc = _dcm(tmp_path / "sc.dcm", RAMP, Modality="OT")
    from pydicom import dcmread

    ds = dcmread(sc)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.save_as(sc, enforce_file_format=True)
    ct = _dcm(tmp_path / "ct.dcm", RAMP, Modality="CT")
    signed_mr = get_testdata_file("MR_small.dcm")  # signed pixels: still named for its modality
    cases = ((mr, True, True), (ct, True, True), (signed_mr, True, True), (sc, False, True), (sc, True, False))
    for path, accept, refused in cases:
        m = _manifest(tmp_path / "m.csv", [["A", str(path), b.name, 1, 1], ["B", other, "", 0, 0]])
        framing = Framing(accept_secondary_capture=accept)
        if not refused:
            read_manifest(m, framing=framing)
            continue
        with pytest.raises(ManifestError) as e:
            read_manifest(m, framing=framing)
        assert _codes(e.value) == {NOT_ULTRASOUND}, str(e.value)


def _secondary_capture(path, pixels):
    """A DICOM secondary capture (a screen saved as a picture, Modality OT) of ``pixels``."""
    from pydicom import dcmread

    ds = dcmread(_dcm(path, pixels, Modality="OT"))
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.save_as(path, enforce_file_format=True)
    return path


def test_every_reader_of_a_manifest_takes_the_framing_training_reads_it_with(tmp_path, capsys):
    """Secondary captures accepted by a run's config (data.accept_secondary_capture) were refused
    by every command that reads a manifest without a config (norm-stats, deidentify,
    crop-to-lesion, whose refusal then named a --config option they do not take) and by
    pretraining's reads (the protocol's pretraining manifests, pretrain's own), which passed the
    CEUS side alone: a cohort training reads could not be de-identified, normalised, cropped or
    pretrained on. Each now takes the same framing (``manifest_checks``, ``--accept-secondary-capture``)."""
    from lnm_jax.cli import main
    from lnm_jax.config import ConfigError, base_config
    from lnm_jax.protocol.reproduce import _pretrain_manifests

    picture = np.tile(np.arange(40, 200, 4, dtype=np.uint8), (30, 1))  # 30x40, no blank
    rows = []
    for i in range(10):
        _secondary_capture(tmp_path / f"sc{i}.dcm", np.roll(picture, 3 * i, axis=1))
        lesion = np.zeros_like(picture)
        lesion[10:20, 12 + i : 24 + i] = 255
        _write(tmp_path / f"sc{i}_mask.png", Image.fromarray(lesion))
        rows.append([f"P{i}", f"sc{i}.dcm", "", i % 2, i % 2, f"sc{i}_mask.png"])
    m = _manifest(tmp_path / "m.csv", rows, ("patient_id", "bmode", "ceus", "us_lnm", "lnm", "bmode_mask"))
    commands = {
        "norm-stats": ["norm-stats", "--manifest", str(m), "--image-size", "16"],
        "deidentify": ["deidentify", "--manifest", str(m), "--out", str(tmp_path / "deid")],
        "crop-to-lesion": ["crop-to-lesion", "--manifest", str(m), "--out", str(tmp_path / "crop.csv")],
    }
    commands["deidentify"] += ["--mapping", str(tmp_path / "private" / "map.csv")]
    for name, argv in commands.items():
        assert main(argv) == 1, name
        said = capsys.readouterr().err
        assert "crop-to-lesion: --accept-secondary-capture" in said, (name, said)
        # the words said once for the ten files alike (the trial of e8418cc: the hint for every file)
        assert said.count("secondary capture") == 1 and said.count("[not_ultrasound]") == 10, said
        assert f"[not_ultrasound] row 10, column 'bmode', file '{tmp_path / 'sc9.dcm'}': as said for row 1" in said
        assert main([*argv, "--accept-secondary-capture"]) == 0, (name, capsys.readouterr().err)
    assert read_manifest(tmp_path / "deid" / "manifest.csv", framing=Framing(accept_secondary_capture=True))
    # again into the copy: refused, without claiming who wrote it (it said "this command did not write")
    again = [*commands["deidentify"][:-1], str(tmp_path / "private" / "map2.csv"), "--accept-secondary-capture"]
    assert main(again) == 1
    assert f"--out {tmp_path / 'deid'} is an existing folder that is not empty" in capsys.readouterr().err
    cropped = read_manifest(tmp_path / "crop.csv", framing=Framing(accept_secondary_capture=True))
    assert cropped.patients[0].image_options("bmode").crop is not None
    config = base_config("bmode")
    config.protocol.pretrain, config.protocol.pretrain_manifests = True, (str(m),)
    with pytest.raises(ConfigError, match="not_ultrasound"):
        _pretrain_manifests(config)
    config.data.accept_secondary_capture = True
    assert [len(c) for c in _pretrain_manifests(config)] == [10]


def test_duplicate_column_refused(tmp_path):
    """Case manifest-duplicate-column: csv.DictReader keeps the last copy's cells in silence."""
    b = _write(tmp_path / "b.png", Image.fromarray(RAMP))
    m = _manifest(
        tmp_path / "dup.csv",
        [["A", b.name, b.name, 1, 1, 0], ["B", b.name, b.name, 0, 0, 1]],
        columns=("patient_id", "bmode", "ceus", "us_lnm", "lnm", "lnm"),
    )
    with pytest.raises(ManifestError) as e:
        read_manifest(m)
    assert _codes(e.value) == {DUPLICATE_COLUMN}
    assert "columns 5, 6" in str(e.value)
    unnamed = _manifest(
        tmp_path / "unnamed.csv",
        [["A", b.name, b.name, 1, 1, 0, 1], ["B", b.name, b.name, 0, 0, 1, 0]],
        columns=("patient_id", "bmode", "ceus", "us_lnm", "lnm", "", ""),
    )
    with pytest.raises(ManifestError) as e:
        read_manifest(unnamed)
    assert _codes(e.value) == {DUPLICATE_COLUMN} and "unnamed 2 times" in str(e.value)


def test_cells_beyond_or_short_of_the_header_are_named(tmp_path):
    """An unquoted crop (0,0,8,8) spread over four cells: csv.DictReader kept the first in the
    crop column and dropped the rest in silence (the trial of aa43b7a). Cells beyond the header
    are `extra_cells`, naming them; a trailing empty cell (a spreadsheet's last separator) is no
    cell of data and passes. A row with fewer cells than the header is `short_row`, naming the
    columns with no cell: it had been reported as those cells' problems ("lnm must be 0 or 1,
    got empty"), never as a cell left out. A row's problems come in its columns' order."""
    b = _write(tmp_path / "b.png", Image.fromarray(RAMP))
    m = tmp_path / "m.csv"
    a1, a2, b1, b2, c1, c2, d1, e1, e2, f2 = own_pictures(b, 10)  # each patient's own pictures
    m.write_text(
        "patient_id,bmode,ceus,us_lnm,lnm,bmode_crop\n"
        f"A,{a1},{a2},1,1,0,0,8,8\nB,{b1},{b2},0,0,,\nC,{c1},{c2},1,0,\n"
        f"D,{d1},1,1\nE,{e1},{e2},1,0\nF,missing.png,{f2},2,1,0 0 9\n"
    )
    with pytest.raises(ManifestError) as e:
        read_manifest(m)
    (extra,) = [p for p in e.value.problems if p.code == EXTRA_CELLS]
    assert extra.row == 1 and extra.message.startswith("row has 9 cells, the header 6: '0', '8', '8' would be dropped")
    short = {p.row: p.message for p in e.value.problems if p.code == SHORT_ROW}
    assert short == {
        4: "row has 4 cells, the header 6: no cell for lnm, bmode_crop; a cell left out puts those after it in the "
        "wrong columns (an empty cell is written as nothing between two commas)",
        5: "row has 5 cells, the header 6: no cell for bmode_crop; a cell left out puts those after it in the "
        "wrong columns (an empty cell is written as nothing between two commas)",
    }
    # row 4's ceus cell '1' is no file: said; its lnm has no cell: said as such, not as a bad label
    assert [(p.code, p.column) for p in e.value.problems if p.row == 4] == [(SHORT_ROW, None), (MISSING_FILE, "ceus")]
    # a row's problems in its columns' order, whichever check found them first
    assert [p.column for p in e.value.problems if p.row == 6] == ["bmode", "us_lnm", "bmode_crop"], str(e.value)
    assert {p.row for p in e.value.problems} == {1, 4, 5, 6}, str(e.value)  # rows B and C pass


def test_a_known_column_in_another_spelling_is_named(tmp_path):
    """Case manifest-option-column-case: BMODE_CROP, Bmode_Mask and CEUS mm per pixel (as a
    spreadsheet writes them) were read as metadata in silence: no crop, no mask, no spacing.
    Each is `misnamed_column` naming the documented name; a required column so spelled
    (Patient-ID) is named the same way instead of "missing"; metadata stays metadata."""
    b = _write(tmp_path / "b.png", Image.fromarray(RAMP))
    columns = ("Patient-ID", "bmode", "ceus", "us_lnm", "lnm", "BMODE_CROP", "Bmode_Mask", "CEUS mm per pixel", "Age")
    columns += ("B-mode crop", "ceus_fps", "bmode_frame_rate", "bmode mm per px", "CEUS-agent", "ceus_per_pixel")
    columns += ("bmode_framerate", "ceusfps", "B-mode", "ceus_region", "bmode.1", "ceus_mask_file")
    (c,) = own_pictures(b, 1)  # the CEUS: a picture of its own
    row = ["A", b.name, c, 1, 1, "0,0,8,8", b.name, "0.1", 50, "0,0,8,8", 12, 12, 0.1, "SonoVue", 0.1, 12, 12]
    row += ["", "left", b.name, b.name]
    m = _manifest(tmp_path / "m.csv", [row], columns=columns)
    with pytest.raises(ManifestError) as e:
        read_manifest(m)
    named = {p.column: p.message for p in e.value.problems if p.code == MISNAMED_COLUMN}
    assert set(named) == set(columns[5:8]) | set(columns[:1]) | set(columns[9:]), named
    # with the row's problems, its cells read as the header means them: Bmode_Mask's file as the
    # B-mode mask (the B-mode picture itself, no mask); a mended header would have shown them on a second pass
    rows = [(p.code, p.row, p.column) for p in e.value.problems if p.code != MISNAMED_COLUMN]
    assert rows == [(MASK_NOT_SEGMENTATION, 1, "bmode_mask"), (MISSING_CLASS, None, "lnm")], str(e.value)
    assert "'patient_id'" in named["Patient-ID"] and "'ceus_mm_per_pixel'" in named["CEUS mm per pixel"], named
    assert named["B-mode crop"] == "would be read as metadata, not as 'bmode_crop': name it 'bmode_crop'"
    # one spelling of a column the manifest lacks: its cells are checked as that column's (below)
    assert named["Bmode_Mask"] == (
        "would be read as metadata, not as 'bmode_mask': name it 'bmode_mask'; "
        "its cells are checked as 'bmode_mask' here"
    )
    # beside the column it spells: renaming it would name that column twice (the trial of fd440a1)
    assert named["B-mode"] == "another spelling of 'bmode', which the manifest has: remove this column or rename it"
    # a name in an input's namespace that is none of its columns: a misspelt option, not metadata,
    # with the column its field is, or the other input's where only that one has it
    own = "columns beginning 'ceus' are CEUS's "
    own += "(ceus, ceus_crop, ceus_mm_per_pixel, ceus_frame_rate, ceus_mask), and this is none of them: "
    end = "a metadata column must not begin with 'ceus'"
    assert named["ceus_fps"] == f"{own}did you mean 'ceus_frame_rate'? {end} (e.g. 'fps_ceus')"
    assert named["ceusfps"] == named["ceus_fps"]
    assert named["CEUS-agent"] == f"{own}{end} (e.g. 'agent_ceus')"
    assert named["ceus_per_pixel"].startswith(f"{own}did you mean 'ceus_mm_per_pixel'? ")  # not B-mode's
    assert named["ceus_mask_file"].startswith(f"{own}did you mean 'ceus_mask'? ")
    assert "'ceus_frame_rate' is CEUS's only" in named["bmode_frame_rate"], named
    assert "'ceus_frame_rate' is CEUS's only" in named["bmode_framerate"], named
    assert "did you mean 'bmode_mm_per_pixel'?" in named["bmode mm per px"], named
    assert "is a setting, data.ceus_region, not a column" in named["ceus_region"], named
    assert "a second 'bmode' column, renamed by a CSV writer" in named["bmode.1"], named  # pandas' name
    # the cells under the other spelling, the documented column empty: say which to keep
    two = ("patient_id", "bmode", "ceus", "us_lnm", "lnm", "B-mode")
    m = _manifest(tmp_path / "m2.csv", [["A", "", b.name, 1, 1, b.name]], columns=two)
    with pytest.raises(ManifestError, match="another spelling of 'bmode', which is empty in every row: remove 'bmode'"):
        read_manifest(m)
    # an image column under a name of its input's namespace: the column it is
    path_column = ("patient_id", "bmode_path", "ceus", "us_lnm", "lnm")
    m = _manifest(tmp_path / "m3.csv", [["A", b.name, b.name, 1, 1]], columns=path_column)
    with pytest.raises(ManifestError, match="did you mean 'bmode'"):
        read_manifest(m)


def test_every_bad_framing_cell_of_a_row_is_named(tmp_path):
    """One bad framing cell hid the others of its input (the first raised), and a frame that is
    no integer was said in Python's words ("invalid literal for int()"): each is named at its
    column, in the manifest's words (the trial of 8f1f25d)."""
    b = _write(tmp_path / "b.png", Image.fromarray(RAMP))
    columns = ("patient_id", "bmode", "ceus", "us_lnm", "lnm", "bmode_frame", "ceus_frame_rate", "ceus_mm_per_pixel")
    columns += ("ceus_crop",)
    m = _manifest(tmp_path / "m.csv", [["A", b.name, b.name, 1, 1, "x", "abc", "-1", "1,2,3"]], columns=columns)
    with pytest.raises(ManifestError) as e:
        read_manifest(m)
    named = {p.column: p.message for p in e.value.problems if p.code == "bad_image_option"}
    assert set(named) == set(columns[5:]), str(e.value)
    assert named["bmode_frame"] == "frame must be an integer >= 0, got 'x'"
    # cells well formed that the file cannot take: a frame a still lacks and a crop beyond it,
    # a rate for a still and a crop beyond it, a PNG's and a DICOM cine's, all named
    _dcm(tmp_path / "cine.dcm", np.stack([np.roll(RAMP, k, axis=1) for k in range(3)]), NumberOfFrames=3)
    columns = ("patient_id", "bmode", "ceus", "us_lnm", "lnm", "bmode_frame", "bmode_crop", "ceus_frame_rate")
    columns += ("ceus_crop",)
    rows = [["A", b.name, b.name, 1, 1, "2", "0,0,40,40", "12", "0,0,8,90"]]
    rows += [["B", "cine.dcm", "cine.dcm", 0, 0, "5", "0,0,40,40", "12", "0,0,8,90"]]
    with pytest.raises(ManifestError) as e:
        read_manifest(_manifest(tmp_path / "m2.csv", rows, columns=columns))
    found = {(p.row, p.column) for p in e.value.problems if p.code == "bad_image_option"}
    assert found == {(r, c) for r in (1, 2) for c in columns[5:]}, str(e.value)
    assert "bmode_frame 5 asked for, the file has 3 frames, 0-2 (counted from 0)" in str(e.value)
    # a malformed cell does not hide the well-formed ones its file cannot take, nor a spacing
    # that disagrees with a DICOM file's calibration (the trial of e3ac843)
    from lnm_jax.data.pixels.dicom import Box, ScanRegion

    region = ScanRegion(Box(0, 0, 32, 24), 1, 1, (0.5, 0.5))
    dicom.write_dataset(dicom.new_dataset(RAMP, regions=[region]), tmp_path / "cal.dcm")
    columns = ("patient_id", "bmode", "ceus", "us_lnm", "lnm", "bmode_frame", "bmode_crop", "bmode_mm_per_pixel")
    columns += ("ceus_frame_rate", "ceus_crop")
    rows = [["A", b.name, b.name, 1, 1, "2", "abc", "", "12", "0,0,8"]]
    rows += [["B", "cal.dcm", b.name, 0, 0, "3", "0,0,40,40", "0.7", "", ""]]
    with pytest.raises(ManifestError) as e:
        read_manifest(_manifest(tmp_path / "m3.csv", rows, columns=columns))
    found = {(p.row, p.column) for p in e.value.problems if p.code == "bad_image_option"}
    expected = {(1, c) for c in ("bmode_frame", "bmode_crop", "ceus_frame_rate", "ceus_crop")}
    assert found == expected | {(2, c) for c in ("bmode_frame", "bmode_crop", "bmode_mm_per_pixel")}, str(e.value)


def test_frame_folder_of_mixed_sizes_refused_at_validation(tmp_path):
    b = _write(tmp_path / "b.png", Image.fromarray(RAMP))
    (other,) = own_pictures(b, 1)  # patient B's own
    folder = tmp_path / "clip"
    folder.mkdir()
    Image.fromarray(RAMP).save(folder / "frame_0.png")
    Image.fromarray(RAMP[:, :16]).save(folder / "frame_1.png")
    m = _manifest(tmp_path / "m.csv", [["A", b.name, "clip", 1, 1], ["B", other, "", 0, 0]])
    with pytest.raises(ManifestError) as e:
        read_manifest(m)
    assert _codes(e.value) == {UNREADABLE_CLIP} and "differ in size" in str(e.value)


def test_video_over_the_clip_budget_refused_before_decoding(tmp_path, monkeypatch):
    import imageio.v3 as iio

    video = tmp_path / "v.mp4"
    iio.imwrite(video, np.zeros((30, 32, 32, 3), np.uint8), plugin="FFMPEG", fps=10)
    assert len(clips.read_frames(video)) == 30
    monkeypatch.setattr(clips, "MAX_CLIP_PIXELS", 20 * 32 * 32)
    decoded = []
    monkeypatch.setattr(iio, "imiter", lambda *a, **k: decoded.append(1) or iter(()))
    with pytest.raises(clips.ClipError, match="gigapixels"):
        clips.read_frames(video)
    assert not decoded


# ------------------------------------------------------------- what the product writes, it reads back


def test_natural_frame_order(tmp_path):
    names = [f"frame_{k}.png" for k in (1000, 100, 2, 999, 10)]
    from pathlib import Path

    assert [p.name for p in sorted(map(Path, names), key=clips._natural_key)] == [
        "frame_2.png",
        "frame_10.png",
        "frame_100.png",
        "frame_999.png",
        "frame_1000.png",
    ]
    assert clips.frame_name(7, 1500) == "frame_0007.png" and clips.frame_name(7, 20) == "frame_007.png"
    # two files at one place in that order: refused, naming them (helper-57: both read, unsaid)
    # (helper-58: a converter's appended suffix, another letter case, a second naming scheme)
    for k, extra in enumerate(("frame_1.jpg", "frame_01.png", "frame_1.jpg.png", "Frame_1.png", "1.png")):
        folder = tmp_path / f"clip{k}"
        folder.mkdir()
        for name in ("frame_0.png", "frame_1.png", "frame_2.png", extra):
            Image.fromarray(RAMP).save(folder / name)
        with pytest.raises(clips.ClipError, match=r"two files for one frame \(\w*1[.\w]* and \w*1"):
            clips.frame_files(folder)


def test_a_frame_folder_with_a_frame_lost_unfinished_or_copied_is_refused_naming_it(tmp_path, monkeypatch):
    """helper-121: a frame folder read a frame short or long in silence where a frame was lost
    (``frame_004.png`` missing from a numbering regular otherwise), left unfinished
    (``frame_004.png.part``, ``.crdownload`` beside the gap), or downloaded twice
    (``frame_003 (1).png``, read as a frame of its own); macOS's AppleDouble ``._frame_000.png``
    files had been "two files for one frame"; a folder that denies listing stopped validate
    naming no row. Each is refused naming the file, or left out (names that begin with '.');
    frames numbered 2 apart, or chosen by hand at irregular numbers, read as they are."""

    def folder(name, numbers, extra=()):
        f = tmp_path / name
        f.mkdir()
        for k in numbers:
            Image.fromarray(RAMP).save(f / f"frame_{k:03d}.png")
        for e in extra:
            (f / e).write_bytes(b"\x00\x05\x16\x07" if e.startswith("._") else (f / "frame_000.png").read_bytes()[:50])
        return f

    frames = lambda f: [p.name for p in clips.frame_files(f)]  # noqa: E731
    apple = folder("apple", range(6), ["._frame_000.png", "._frame_001.png", ".DS_Store"])
    assert frames(apple) == [f"frame_{k:03d}.png" for k in range(6)]
    assert len(frames(folder("every_second", range(0, 20, 2)))) == 10
    assert len(frames(folder("key_frames", (0, 5, 12, 30, 31, 47)))) == 6
    with pytest.raises(clips.ClipError, match=r"frame number 4 is missing between frame_003.png and frame_005.png "):
        clips.frame_files(folder("lost", (*range(4), *range(5, 12))))
    with pytest.raises(
        clips.ClipError, match=r"frame number 8 is missing .* \(1 missing in all; the others are numbered 2"
    ):
        clips.frame_files(folder("lost_of_two", (0, 2, 4, 6, 10, 12, 14, 16, 18, 20, 22)))
    # what stands in the lost frame's place is named as manifest rows' stand-ins are (stop 88's trial:
    # a .dvc file had been "a download or copy left unfinished?", an iCloud one the gap's line)
    stand_ins = {
        "frame_004.png.part": "a partial download of it (frame_004.png.part): let the download finish",
        "frame_004.png.crdownload": "a partial download of it (frame_004.png.crdownload)",
        "frame_004.png.dvc": "a DVC placeholder for it (frame_004.png.dvc): its content is in DVC's storage",
        ".frame_004.png.icloud": "an iCloud placeholder for it (.frame_004.png.icloud): download it on the Mac first",
    }
    for k, (name, said) in enumerate(stand_ins.items()):
        f = folder(f"unfinished{k}", (*range(4), *range(5, 8)), [name])
        with pytest.raises(clips.ClipError, match=re.escape(f"{f}: frame frame_004.png is missing: {said}")):
            clips.frame_files(f)
    f = folder("unfinished_tmp", (*range(4), *range(5, 8)), ["frame_004.png.tmp"])
    with pytest.raises(clips.ClipError, match=r"frame_004.png.tmp is a frame's name with another ending"):
        clips.frame_files(f)
    for copy in ("frame_003 (1).png", "frame_003(1).png", "frame_003 - Copy.png", "frame_003 copy.png"):
        f = folder(f"copied{len(copy)}", range(6), [copy])
        Image.fromarray(RAMP).save(f / copy)
        with pytest.raises(clips.ClipError, match=re.escape(f"{copy} is named as a copy of frame_003.png")):
            clips.frame_files(f)

    def denied(self):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(type(apple), "iterdir", denied)
    with pytest.raises(clips.ClipError, match=r"apple: the frame folder cannot be listed \(Permission denied\)"):
        clips.frame_files(apple)
    monkeypatch.setattr(type(apple), "is_dir", denied)
    assert clips.is_clip(apple / "x.mp4") and not clips.is_clip(apple)  # (said by its reader, in its row)


def test_a_missing_file_is_said_with_what_stands_in_its_place(tmp_path):
    """helper-121: a file missing with a partial download, a DVC placeholder, a Windows
    shortcut or an iCloud placeholder beside it, or inside a folder that is missing (tracked
    by DVC) or a link to a share not mounted, was said "does not exist" alone (a DVC file even
    offered as "another extension" to name). Each names what stands in its place."""
    real = own_pictures(_write(tmp_path / "real.png", Image.fromarray(RAMP)), 1)[0]
    (tmp_path / "a.png.part").write_bytes(b"\x89PNG")
    (tmp_path / "b.png.crdownload").write_bytes(b"\x89PNG")
    (tmp_path / "c.png.dvc").write_text("outs:\n- md5: 0123\n  path: c.png\n")
    (tmp_path / "d.png.lnk").write_bytes(b"L\x00\x00\x00")
    (tmp_path / ".e.png.icloud").write_bytes(b"bplist00")
    (tmp_path / "scans.dvc").write_text("outs:\n- path: scans\n")
    (tmp_path / "share").symlink_to("/nonexistent/mnt/pacs_share")
    (tmp_path / "g.png").symlink_to("/nonexistent/mnt/pacs_share/g.png")
    rows = [
        [k, name, "", k % 2, (k + 1) % 2]
        for k, name in enumerate(
            ["a.png", "b.png", "c.png", "d.png", "e.png", "scans/f.png", "share/f.png", "g.png", real]
        )
    ]
    rows[-1][2] = "P8_ceus"  # a frame folder that is not there: a clip, not an "image file" (helper-122)
    with pytest.raises(ManifestError) as e:
        read_manifest(_manifest(tmp_path / "m.csv", [[f"P{r[0]}", *r[1:]] for r in rows]))
    said = {p.row: p.message for p in e.value.problems if p.column == "bmode"}
    assert [p.message for p in e.value.problems if p.column == "ceus"] == ["clip does not exist"]
    partial = "image file does not exist; a partial download of it ({}): let the download finish"
    assert said[1].startswith(partial.format("a.png.part")) and said[2].startswith(partial.format("b.png.crdownload"))
    assert said[3] == (
        "image file does not exist; a DVC placeholder for it (c.png.dvc): its content is in DVC's storage; run 'dvc "
        "pull' in that repository"
    ), said
    assert said[4] == "image file does not exist; a Windows shortcut to it (d.png.lnk): copy the file itself", said
    assert said[5].startswith("image file does not exist; an iCloud placeholder for it (.e.png.icloud)"), said
    assert said[6].startswith(
        f"image file does not exist; nor does its folder {tmp_path / 'scans'}: a DVC placeholder"
    ), said
    assert said[7] == (
        f"image file does not exist; its folder {tmp_path / 'share'} is a symbolic link to "
        "/nonexistent/mnt/pacs_share, which does not exist (a share not mounted, or a copy's link?)"
    ), said
    assert said[8].startswith("image file is a symbolic link to /nonexistent/mnt/pacs_share/g.png, which does not"), (
        said
    )
    assert set(said) == set(range(1, 9)), said


def test_deidentified_long_16bit_clip_reads_back_the_same(tmp_path):
    """Case deidentify-long-clip-frame-order: a 1,500-frame 16-bit clip and odd metadata
    cells survive deidentify: same frames in the same order, 16-bit kept, cells intact."""
    from lnm_jax.data.privacy.deidentify import deidentify

    n = 1500
    level = np.concatenate([np.full(300, 20.0), np.linspace(20, 220, 900), np.linspace(220, 60, 300)])
    folder = tmp_path / "clip"
    folder.mkdir()
    for k in range(n):  # unpadded names: frame_2 before frame_10 only in natural order
        Image.fromarray(np.full((4, 4), round(level[k] * 257), np.uint16)).save(folder / f"frame_{k}.png")
    b = _write(tmp_path / "b.png", Image.fromarray(RAMP))
    (other,) = own_pictures(b, 1)  # patient B's own
    note = 'says "hi", a, b\nsecond line'
    m = _manifest(
        tmp_path / "m.csv",
        [["V1", b.name, "clip", 1, 1, note], ["V2", other, "", 0, 0, "plain"]],
        columns=("patient_id", "bmode", "ceus", "us_lnm", "lnm", "note"),
    )
    report = deidentify(m, tmp_path / "deid", tmp_path / "map.csv", keep_columns=("note",))
    copy = read_manifest(report.manifest)
    mapping = {r["original_patient_id"]: r["patient_id"] for r in csv.DictReader(open(tmp_path / "map.csv"))}
    new = copy.by_id()[mapping["V1"]]
    assert new.metadata["note"] == note
    written = clips.frame_files(new.ceus)
    assert len(written) == n and written[1000].name == "frame_1000.png" and written[999].name == "frame_0999.png"
    with Image.open(written[700]) as im:
        assert im.mode.startswith("I")  # 16-bit kept
    for t in (1, 8):
        a = decode_input(folder, "ceus", size=4, patient_id="V1", clip_frames=t)
        c = decode_input(new.ceus, "ceus", size=4, patient_id=new.patient_id, clip_frames=t)
        np.testing.assert_array_equal(a, c)
    assert np.all(
        np.diff(decode_input(folder, "ceus", size=4, patient_id="V1", clip_frames=8).mean(axis=(1, 2, 3))[:5]) > 0
    )


# ------------------------------------------------------------- outputs never replace inputs


def test_predict_refuses_its_own_manifest_as_out(triple_run, tiny_cohort, tmp_path):
    """Case predict-out-overwrites-manifest."""
    from lnm_jax.evaluation.evaluate import predict_manifest

    m = tmp_path / "new.csv"
    shutil.copy(tiny_cohort, m)
    for src in (tiny_cohort.parent / "images",):
        (tmp_path / src.name).symlink_to(src)
    before = m.read_bytes()
    with pytest.raises(OutputPathError, match="input"):
        predict_manifest(triple_run, m, m)
    with pytest.raises(OutputPathError, match="is a folder"):
        predict_manifest(triple_run, m, tmp_path)
    other = tmp_path / "notes.csv"
    other.write_text("my,own\nfile,1\n")
    with pytest.raises(OutputPathError, match="--overwrite"):
        predict_manifest(triple_run, m, other)
    with pytest.raises(OutputPathError, match="inside the input folder"):
        predict_manifest(triple_run, m, triple_run.workdir / "p.csv")
    assert m.read_bytes() == before and other.read_text() == "my,own\nfile,1\n"
    out = predict_manifest(triple_run, m, tmp_path / "p.csv")
    predict_manifest(triple_run, m, out)  # its own earlier output may be replaced


def test_norm_stats_and_convert_refuse_inputs(tiny_cohort, tmp_path):
    from lnm_jax.cli import main

    before = tiny_cohort.read_bytes()
    assert main(["norm-stats", "--manifest", str(tiny_cohort), "--image-size", "8", "--out", str(tiny_cohort)]) == 1
    assert tiny_cohort.read_bytes() == before


def test_an_output_of_a_files_shape_replaces_it_only_with_overwrite(tiny_cohort, tmp_path, capsys):
    """Cases norm-stats-out-replaces-intensity-reference and crop-to-lesion-out-replaces-any-
    manifest: both took an existing file for their own earlier output by its shape, a JSON of
    means and SDs (a run's intensity_reference.json has it) and a CSV starting with patient_id
    (every manifest does), and replaced it in silence. A shape proves no authorship: an
    existing file is replaced only with --overwrite, as the importers' manifests."""
    from lnm_jax.cli import main

    reference = tmp_path / "intensity_reference.json"
    reference.write_text('{"bmode": {"mean": [0.1, 0.1, 0.1], "std": [0.2, 0.2, 0.2]}}')
    other = tmp_path / "other_manifest.csv"
    shutil.copy(tiny_cohort, other)
    kept = {reference: reference.read_bytes(), other: other.read_bytes()}
    stats = ["norm-stats", "--manifest", str(tiny_cohort), "--image-size", "8", "--out", str(reference)]
    crop = ["crop-to-lesion", "--manifest", str(tiny_cohort), "--out", str(other)]
    for argv, out in ((stats, reference), (crop, other)):
        capsys.readouterr()
        assert main(argv) == 1, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"--out {out.resolve()} exists; pass --overwrite" in err[0], err
        assert out.read_bytes() == kept[out]
        assert main([*argv, "--overwrite"]) == 0, argv
        assert out.read_bytes() != kept[out]


# ------------------------------------------------------------- heatmaps, quiet edges


def test_gradcam_layer_choice():
    from lnm_jax.explain.gradcam import choose_layer

    at32 = {"stem": (8, 8), "stage1": (8, 8), "stage2": (4, 4), "stage3": (2, 2), "stage4": (1, 1)}
    assert choose_layer(at32) == ("stage1", None)
    # asked for a layer too small: the nearest usable one below it (it was the automatic choice,
    # stage1, passing over stage2; fresh-user trial)
    layer, note = choose_layer(at32, "stage4")
    assert layer == "stage2" and "stage4 (1x1)" in note and "stage2 (4x4)" in note
    layer, note = choose_layer({"stem": (2, 2), "stage1": (2, 2), "stage4": (1, 1)}, "stage4")
    assert layer == "stem" and "stem (2x2)" in note  # none usable below: the automatic choice
    assert choose_layer(at32, "stage2") == ("stage2", None)  # 4x4: allowed when asked for
    at224 = {"stem": (56, 56), "stage1": (56, 56), "stage2": (28, 28), "stage3": (14, 14), "stage4": (7, 7)}
    assert choose_layer(at224) == ("stage4", None)
    layer, note = choose_layer({"stem": (2, 2), "stage4": (1, 1)})
    assert layer == "stem" and "7x7" in note
    # a model with a lesion head is read, by default, where it was taught the lesion
    assert choose_layer(at32, lesion_head="stage2") == ("stage2", None)
    assert choose_layer(at32, lesion_head="stage3") == ("stage1", None)  # 2x2: too small, the usual choice
    assert choose_layer(at32, "stem", lesion_head="stage2") == ("stem", None)  # asked for: as asked


def test_gradcam_at_32px_not_blank(triple_run, tmp_path):
    """Case gradcam-1x1-layer-blank: at 32 px stage4 is 1x1; the command falls back, says so,
    and its CAMs are not constant."""
    from lnm_jax.explain.heatmaps import gradcam

    res = gradcam(triple_run, split="test", out=tmp_path / "cams", layer="stage4")
    assert res["layer"] != "stage4" and min(res["layer_size"]) >= 4
    assert any("stage4" in n and "using" in n for n in res["notes"])
    assert not any(re.search(r"(\d+) of \1 ", n) for n in res["notes"])  # not every CAM blank


def test_a_lesion_outside_the_models_square_is_named_and_left_unscored(triple_run, tmp_path, monkeypatch):
    """A mask whose lesion the model's square leaves out (data.field_of_view_mm crops the
    picture's centre; validate refuses such a cohort now, a run trained before did not) made
    gradcam and evaluate fail naming nobody, evaluate writing no eval_best (helper-80). It is
    left unscored, named in a warning and in cam_scores.json; the other masks are scored."""
    from lnm_jax.explain import heatmaps

    real, gone = heatmaps._lesion, []

    def lesion(patient, branch, *args):
        framed = real(patient, branch, *args)
        if framed is not None and not gone:  # the first mask scored: its lesion all outside
            gone.append(f"{patient.patient_id} {branch} {patient.mask(branch).name}")
            return np.zeros_like(framed)
        return framed

    monkeypatch.setattr(heatmaps, "_lesion", lesion)
    res = heatmaps.gradcam(triple_run, split="test", out=tmp_path / "cams", figures=False)
    said = [n for n in res["notes"] if "hold none of their lesion" in n]
    assert len(said) == 1 and said[0].startswith("warning: 1 lesion mask(s)") and gone[0] in said[0], res["notes"]
    doc = json.loads((tmp_path / "cams" / "cam_scores.json").read_text())
    assert doc["not_scored_outside_the_square"] == gone
    pid, branch = gone[0].split()[:2]
    scored = {(r["patient_id"], r["branch"]) for r in doc["images"]}
    assert (pid, branch) not in scored and len(scored) == 2 * len(triple_run.split.test) - 1


@pytest.mark.parametrize(
    ("argv", "rc", "says"),
    [(["talk"], 0, None), (["--help"], 0, None), ([], 2, "no command given"), (["tlak"], 2, "unknown command 'tlak'")],
    ids=["command", "help", "none", "typo"],
)
def test_closed_pipe_ends_quietly(argv, rc, says, monkeypatch, capsys):
    """A reader that stops early (``lnm-jax --help | head``) ends the command quietly, exit 0; a
    mistyped command or none still says so on stderr, exit 2."""
    from lnm_jax import cli

    class Closed(io.StringIO):
        def write(self, s):
            raise BrokenPipeError(32, "Broken pipe")

        def fileno(self):
            return sys.__stdout__.fileno() if sys.__stdout__ else 1

    monkeypatch.setitem(cli.COMMANDS, "talk", lambda argv: print("x" * 100) or 0)
    monkeypatch.setattr(sys, "stdout", Closed())
    monkeypatch.setattr(cli, "_closed_pipe", lambda: 0)  # the real one redirects fd 1
    assert cli.main(argv) == rc
    err = capsys.readouterr().err
    assert "Broken pipe" not in err and (says in err if says else "error" not in err), err


def test_temperature_at_bound_flagged():
    from lnm_jax.evaluation import calibration as C

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    t = C.fit_temperature(labels, rng.normal(0, 30, 200))  # large logits that rank nothing
    assert C.at_bound(t) and t == pytest.approx(C.TEMPERATURE_BOUNDS[1], rel=1e-2)
    assert not C.at_bound(C.fit_temperature(labels, (2 * labels - 1) * 2.0 + rng.normal(0, 1, 200)))


def test_old_import_paths_are_the_moved_modules():
    import importlib

    with pytest.warns(DeprecationWarning):
        old = importlib.import_module("lnm_jax.data.sources")
    from lnm_jax.data.pixels import sources

    assert old is sources


def test_deidentify_warns_once_naming_the_original(tmp_path, capsys):
    """deidentify's check of its own copy had repeated the original's blank_image warning,
    naming a temporary folder gone once the command ended: said once, of the original."""
    from lnm_jax.data.privacy.deidentify import deidentify

    _write(tmp_path / "ramp.png", Image.fromarray(RAMP))
    _write(tmp_path / "flat.png", Image.fromarray(np.full_like(RAMP, 128)))
    (other,) = own_pictures(tmp_path / "ramp.png", 1)
    m = _manifest(tmp_path / "m.csv", [["A", "flat.png", "ramp.png", 1, 1], ["B", other, "", 0, 0]])
    capsys.readouterr()
    deidentify(m, tmp_path / "deid", tmp_path / "private" / "map.csv")
    said = [line for line in capsys.readouterr().err.splitlines() if "hold no picture" in line]
    assert len(said) == 1 and str(tmp_path / "flat.png") in said[0] and ".pid" not in said[0], said


def test_a_clips_lesion_evidence_names_the_frame_its_map_and_mask_meet_on(triple_run, tmp_path):
    """A CEUS clip is read at its peak frame (clip_frames 1); its mask, one for the clip, was
    scored against that frame's map with nothing saying which frame it was (helper-80: a mask
    drawn on frame 0 of a clip peaking at frame 6 scored pointing 0.00, unexplained). The frame
    (0-based, of how many) is in cam_scores.json and the figure's title, and a note says the mask
    is compared there."""
    import csv as _csv

    from lnm_jax.explain.heatmaps import gradcam

    src = Path(triple_run.config.data.manifest)
    with open(src) as f:
        rows = list(_csv.DictReader(f))[:3]
    out_rows = []
    for r in rows:
        still = np.asarray(Image.open(src.parent / r["ceus"]).convert("RGB"), np.float32)
        folder = tmp_path / f"{r['patient_id']}_clip"
        folder.mkdir()
        for k, gain in enumerate((0.2, 0.5, 0.7, 1.0, 0.4)):  # the peak: frame 3 (0-based)
            Image.fromarray((still * gain).round().astype(np.uint8)).save(folder / f"frame_{k:02d}.png")
        out_rows.append(
            {
                "patient_id": r["patient_id"],
                "bmode": str(src.parent / r["bmode"]),
                "ceus": str(folder),
                "us_lnm": r["us_lnm"],
                "ceus_mask": str(src.parent / r["ceus_mask"]),
            }
        )
    manifest = tmp_path / "clips.csv"
    with open(manifest, "w", newline="") as f:
        w = _csv.DictWriter(f, fieldnames=list(out_rows[0]))
        w.writeheader()
        w.writerows(out_rows)
    res = gradcam(triple_run, manifest=manifest, out=tmp_path / "cams")
    doc = json.loads((tmp_path / "cams" / "cam_scores.json").read_text())
    ceus = [r for r in doc["images"] if r["branch"] == "ceus"]
    assert len(ceus) == 3 and all((r["frame"], r["frames"]) == (3, 5) for r in ceus), ceus
    assert all("frame" not in r for r in doc["images"] if r["branch"] == "bmode")
    assert any(n.startswith("note: 3 CEUS clip(s) with a lesion mask") for n in res["notes"]), res["notes"]
