"""DICOM input (issue 16): files pydicom ships and files built here, scan-region cropping,
physical scale, cine timing, PHI checks and de-identification, and a DICOM cohort that trains
like the PNG cohort it shows."""

from __future__ import annotations

import csv
import dataclasses
import io
import os
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from support import own_pictures

from lnm_jax.cli import main
from lnm_jax.data.cohorts.manifest import BAD_IMAGE_OPTION, UNUSABLE_DICOM, ManifestError, read_manifest
from lnm_jax.data.cohorts.survey import screen_capture_box, survey
from lnm_jax.data.loaders.loader import BatchSettings, GrainSource
from lnm_jax.data.pixels import clips, dicom, sources
from lnm_jax.data.pixels.decode import fit, read_image
from lnm_jax.data.pixels.dicom import Box, DicomError, ScanRegion
from lnm_jax.data.synth.synthetic import SynthParams, generate_cohort

pydicom_data = pytest.importorskip("pydicom.data", reason="pydicom is a core dependency")
warnings.filterwarnings("ignore", module="pydicom")

PHI_STRINGS = (b"SYNTH^PATIENT", b"Synthetic General Hospital", b"DOE^JANE")
PHI_KEYWORDS = ("PatientName", "PatientID", "PatientBirthDate", "AccessionNumber", "InstitutionName")
IDENTITY = {k: {"mean": (0.0,) * 3, "std": (1.0,) * 3} for k in ("bmode", "ceus")}


def shipped(name: str) -> Path:
    return Path(pydicom_data.get_testdata_file(name))


def write(tmp_path, name, pixels, **kw) -> Path:
    path = tmp_path / name
    dicom.write_dataset(dicom.new_dataset(pixels, **kw), path)
    return path


def png(tmp_path, name, array) -> Path:
    path = tmp_path / name
    Image.fromarray(array).save(path)
    return path


# ---------------------------------------------------------------------------- reading files


def test_ultrasound_files_pydicom_ships_decode():
    # multi-frame JPEG baseline YBR_FULL_422 whose regions exceed the (downsampled) image
    src = sources.resolve(shipped("examples_ybr_color.dcm"), "ceus")
    assert src.frames == 30 and src.header.photometric == "YBR_FULL_422"
    assert src.duration_s == pytest.approx(29 * 0.033333, rel=1e-4)  # FrameTime 33.333 ms
    assert any("clamped" in n for n in src.notes) and src.box == Box(84, 31, 320, 240)
    clip = sources.read_clip(src, 4)
    assert clip.shape == (4, 209, 236, 3) and 0.0 <= clip.min() and clip.max() <= 1.0
    # PALETTE COLOR through its 16-bit lookup table, cropped to the 2-D tissue region
    src = sources.resolve(shipped("examples_palette.dcm"), "bmode")
    img = sources.read_still(src)
    from pydicom import dcmread
    from pydicom.pixels import apply_color_lut

    ds = dcmread(src.path)
    want = apply_color_lut(ds.pixel_array, ds)[src.box.y0 : src.box.y1, src.box.x0 : src.box.x1] / 65535.0
    np.testing.assert_allclose(img, want, atol=1e-6)
    assert src.mm_per_pixel == pytest.approx((0.2622878766, 0.2622878766))
    # RGB without regions: the whole frame, and nothing to crop it to
    src = sources.resolve(shipped("examples_rgb_color.dcm"), "bmode")
    assert src.framed_by == sources.WHOLE_FRAME and sources.read_still(src).shape == (240, 320, 3)


def test_photometric_interpretations_and_bit_depths_equal_the_png(tmp_path):
    rng = np.random.default_rng(0)
    gray16 = rng.integers(0, 65536, (20, 24), dtype=np.uint16)
    np.testing.assert_array_equal(  # MONOCHROME2 16-bit = a 16-bit PNG (both / 65535)
        sources.read_still(sources.resolve(write(tmp_path, "g16.dcm", gray16), "bmode")),
        read_image(png(tmp_path, "g16.png", gray16)),
    )
    rgb = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
    want = read_image(png(tmp_path, "rgb.png", rgb))
    for compression in ("none", "rle"):
        got = sources.read_still(
            sources.resolve(write(tmp_path, f"{compression}.dcm", rgb, compression=compression), "bmode")
        )
        np.testing.assert_array_equal(got, want)
    # MONOCHROME1: 0 is white
    gray = rng.integers(0, 256, (20, 24), dtype=np.uint8)
    ds = dicom.new_dataset(gray)
    ds.PhotometricInterpretation = "MONOCHROME1"
    dicom.write_dataset(ds, tmp_path / "m1.dcm")
    np.testing.assert_allclose(
        sources.read_still(sources.resolve(tmp_path / "m1.dcm", "bmode"))[..., 0], 1 - gray / 255.0, atol=1e-6
    )
    # YBR_FULL (uncompressed): converted to RGB by pydicom; the 8-bit YCbCr round trip is exact to
    # 1.5 levels per channel (each of Y, Cb, Cr rounded: |dR| <= 0.5 + 1.402 * 0.5)
    from pydicom.pixels import convert_color_space

    ds = dicom.new_dataset(rgb)
    ds.PixelData = convert_color_space(rgb, "RGB", "YBR_FULL").tobytes()
    ds.PhotometricInterpretation = "YBR_FULL"
    dicom.write_dataset(ds, tmp_path / "ybr.dcm")
    got = sources.read_still(sources.resolve(tmp_path / "ybr.dcm", "bmode"))
    assert np.abs(got - want).max() <= 1.5 / 255 + 1e-6


def test_jpeg_cine_is_sampled_in_seconds_from_its_frame_time_vector(tmp_path):
    t = 12
    level = np.r_[np.linspace(20, 200, 5), np.linspace(190, 60, t - 5)]
    frames = np.broadcast_to(level[:, None, None, None], (t, 16, 16, 3)).astype(np.uint8).copy()
    frames[..., 2] //= 2  # a tint: colour, so YBR_FULL_422 4:2:2 JPEG
    ds = dicom.new_dataset(frames, compression="jpeg")
    # the first 6 frames 100 ms apart, then 1 s apart (a scanner slowing its frame rate)
    ds.FrameTimeVector = [0] + [100] * 5 + [1000] * (t - 6)
    dicom.write_dataset(ds, tmp_path / "cine.dcm")
    src = sources.resolve(tmp_path / "cine.dcm", "ceus")
    assert src.header.transfer_syntax.startswith("JPEG Baseline") and src.frames == t
    assert src.duration_s == pytest.approx(0.5 + (t - 6) * 1.0)
    clip = sources.read_clip(src, 3)
    curve = np.array([f.mean() for f in frames], np.float64)
    in_frames = clips.sample_indices(curve, 3)
    in_seconds = clips.sample_indices(curve, 3, src.frame_times_s)
    first, last = clips.enhancement_phase(curve)
    times = np.array(src.frame_times_s)
    middle = np.argmin(np.abs(times - (times[first] + times[last]) / 2))
    assert in_seconds.tolist() == [first, middle, last] and in_seconds.tolist() != in_frames.tolist()
    # the JPEG frames are the written frames within baseline JPEG's error at quality 95 (a few
    # levels of 255 on these flat frames), and the clip is the frames of the curve over the
    # decoded frames (the same indices: the levels are 10+ apart)
    got = np.stack([dicom.read_frame(src.header, i) for i in range(t)])
    assert np.abs(got - frames / 255.0).mean() < 0.02
    np.testing.assert_array_equal(clip, got[in_seconds])


def _dual(tmp_path, name, left_tint: bool, seed: int = 1) -> Path:
    rng = np.random.default_rng(seed)
    gray = rng.integers(30, 200, (20, 20), dtype=np.uint8)
    contrast = np.stack([gray, gray // 2 if left_tint else gray, gray // 4 if left_tint else gray], -1)
    screen = np.zeros((30, 50, 3), np.uint8)
    screen[5:25, 2:22], screen[5:25, 27:47] = contrast, np.repeat(gray[..., None], 3, -1)
    regions = [ScanRegion(Box(2, 5, 22, 25), 1, 1, (0.2, 0.2)), ScanRegion(Box(27, 5, 47, 25), 1, 1, (0.2, 0.2))]
    return write(tmp_path, name, screen, regions=regions)


def test_dual_display_contrast_side_is_the_coloured_one_or_named(tmp_path):
    tinted = _dual(tmp_path, "tinted.dcm", left_tint=True)
    src = sources.resolve(tinted, "ceus")
    assert src.box == Box(2, 5, 22, 25) and src.reference == Box(27, 5, 47, 25)
    assert sources.resolve(tinted, "ceus", ceus_region="right").box == Box(27, 5, 47, 25)
    gray = _dual(tmp_path, "gray.dcm", left_tint=False, seed=2)  # another patient's picture
    # named with where each command sets it (the trial of 8f1f25d: no command's option was named)
    with pytest.raises(DicomError, match="set data.ceus_region to 'left' or 'right' .*--ceus-region left"):
        sources.resolve(gray, "ceus")
    assert sources.resolve(gray, "ceus", ceus_region="left").box == Box(2, 5, 22, 25)
    # deidentify copies a side chosen by hand alone: its copy reads alike with no setting (it had
    # kept both sides, the copy refused unless read with the side again); a side told apart keeps both
    from lnm_jax.data.cohorts.manifest import read_manifest
    from lnm_jax.data.privacy.deidentify import deidentify

    png(tmp_path, "b.png", np.arange(300, dtype=np.uint8).reshape(10, 10, 3))
    a, b, c = own_pictures(tmp_path / "b.png", 3)  # each patient's own B-mode
    (tmp_path / "m.csv").write_text(
        f"patient_id,bmode,ceus,us_lnm,lnm\nA,{a},gray.dcm,1,1\nB,{b},,0,0\nC,{c},tinted.dcm,0,0\n"
    )
    for side in ("left", "right"):
        out = tmp_path / f"deid_{side}"
        report = deidentify(tmp_path / "m.csv", out, out.with_suffix(".csv"), framing=sources.Framing(ceus_region=side))
        assert report.lines()[-1] == (
            f"2 CEUS dual display(s) copied as their {side} side, the contrast side chosen here, alone: the copy is "
            "read alike with no --ceus-region (its B-mode reference side is not copied)"
        )
        with out.with_suffix(".csv").open(newline="") as f:
            links = {r["original_file"]: r["file"] for r in csv.DictReader(f) if r["input"] == "ceus"}
        assert read_manifest(out / "manifest.csv").availability()["ceus"] == 2  # no setting needed
        for name in ("gray.dcm", "tinted.dcm"):
            was = sources.read_still(sources.resolve(tmp_path / name, "ceus", ceus_region=side))
            copy = sources.resolve(out / links[str(tmp_path / name)], "ceus")
            assert copy.reference is None and copy.box == Box(0, 0, 20, 20)
            np.testing.assert_array_equal(sources.read_still(copy), was)
    (tmp_path / "m2.csv").write_text(f"patient_id,bmode,ceus,us_lnm,lnm\nA,{a},tinted.dcm,1,1\nB,{b},,0,0\n")
    report = deidentify(tmp_path / "m2.csv", tmp_path / "deid", tmp_path / "map.csv")  # told apart: both sides
    assert "dual display" not in " ".join(report.lines())  # nothing to say: read alike by default
    (copy,) = (tmp_path / "deid" / "images").glob("*_ceus.dcm")
    copy = sources.resolve(copy, "ceus")
    assert copy.box == Box(0, 0, 20, 20) and copy.reference == Box(25, 0, 45, 20)
    np.testing.assert_array_equal(sources.read_still(copy), sources.read_still(sources.resolve(tinted, "ceus")))
    # B-mode of a two-region screen: the left one, said in a note
    src = sources.resolve(gray, "bmode")
    assert src.box == Box(2, 5, 22, 25) and "left one" in src.notes[0]


def test_a_deidentified_dicom_reads_alike_and_says_clean_only_where_its_pixels_lie_in_scan_regions(tmp_path):
    """helper-83's trial of deidentify: a crop column reaching past the header's scan region kept
    the scanner's banner (name, MRN, date) and the copy said ``BurnedInAnnotation=NO``, and the
    copy, holding the region, was framed by it, not by the crop; a crop inside the region lost
    the region's spacing; a dual display's pixels between its sides were kept; a file without
    SOPInstanceUID failed with an AttributeError. Each copy now reads as the original was read
    (pixels and spacing), says ``PatientIdentityRemoved=YES`` and ``BurnedInAnnotation=NO`` only
    where every pixel it keeps lies in a scan region, and warns where it does not."""
    import pydicom

    from lnm_jax.data.privacy.deidentify import deidentify

    rng = np.random.default_rng(0)
    screen = np.zeros((40, 60), np.uint8)
    screen[:6] = 255  # the banner
    screen[8:36, 10:50] = rng.integers(20, 230, (28, 40), dtype=np.uint8)
    region = ScanRegion(Box(10, 8, 50, 36), 1, 1, (0.2, 0.25))
    for name in ("a.dcm", "b.dcm", "c.dcm"):
        write(tmp_path, name, screen, regions=[region])
    ds = pydicom.dcmread(tmp_path / "c.dcm")
    del ds.SOPInstanceUID  # (some exports)
    ds.save_as(tmp_path / "c.dcm")
    _dual(tmp_path, "dual.dcm", left_tint=True)
    dual = pydicom.dcmread(tmp_path / "dual.dcm")
    arr = dual.pixel_array.copy()
    arr[5:25, 22:27] = 250  # marks between the sides
    dual.PixelData = arr.tobytes()
    dual.save_as(tmp_path / "dual.dcm")
    crops = {"a.dcm": "", "b.dcm": "0,0,60,40", "c.dcm": "20,10,40,30"}  # none, past the region, inside it
    (tmp_path / "m.csv").write_text(
        "patient_id,bmode,ceus,us_lnm,lnm,bmode_crop\n"
        + "".join(
            f'{k},{n},{"dual.dcm" if k == "A" else ""},{k == "A":d},{k != "C":d},"{c}"\n'
            for k, (n, c) in zip("ABC", crops.items())
        )
    )
    report = deidentify(tmp_path / "m.csv", tmp_path / "deid", tmp_path / "map.csv")
    beyond = [line for line in report.lines() if "outside the scan regions" in line]
    assert len(beyond) == 1 and beyond[0].startswith("warning: 1 DICOM image(s)") and "b.dcm" in beyond[0], report
    with (tmp_path / "map.csv").open(newline="") as f:
        links = {(r["original_file"], r["input"]): r["file"] for r in csv.DictReader(f)}
    rows = {p.patient_id: p for p in read_manifest(tmp_path / "m.csv").patients}
    for pid, name in (("A", "a.dcm"), ("B", "b.dcm"), ("C", "c.dcm")):
        was = sources.resolve(tmp_path / name, "bmode", rows[pid].image_options("bmode"))
        copy_path = tmp_path / "deid" / links[(str(tmp_path / name), "bmode")]
        copy = sources.resolve(copy_path, "bmode")
        np.testing.assert_array_equal(sources.read_still(copy), sources.read_still(was), err_msg=name)
        assert copy.mm_per_pixel == was.mm_per_pixel, name  # (c.dcm's had been lost)
        head = pydicom.dcmread(copy_path)
        clean = name != "b.dcm"
        assert head.PatientIdentityRemoved == ("YES" if clean else "NO"), name
        assert (head.get("BurnedInAnnotation") == "NO") == clean, name
        assert head.SOPInstanceUID and (b"\xff" * 60 not in head.PixelData) == clean, name  # the banner's row
        assert len(head.DeidentificationMethod) <= 64, head.DeidentificationMethod  # (LO; helper-87: 70)
    assert was.mm_per_pixel == (0.2, 0.25)
    copy_path = tmp_path / "deid" / links[(str(tmp_path / "dual.dcm"), "ceus")]
    copy = sources.resolve(copy_path, "ceus")
    np.testing.assert_array_equal(
        sources.read_still(copy), sources.read_still(sources.resolve(tmp_path / "dual.dcm", "ceus"))
    )
    assert not pydicom.dcmread(copy_path).pixel_array[:, 20:25].any()  # the gap, which nothing reads, blank
    assert pydicom.dcmread(copy_path).PatientIdentityRemoved == "YES"


def test_bad_dicom_input_is_named_with_what_is_wrong(tmp_path):
    (tmp_path / "notdicom.dcm").write_text("hello")
    _dual(tmp_path, "gray.dcm", left_tint=False)
    png(tmp_path, "a.png", np.arange(300, dtype=np.uint8).reshape(10, 10, 3))
    a1, a2 = own_pictures(tmp_path / "a.png", 2)  # each patient's own
    rows = [
        "patient_id,bmode,ceus,us_lnm,lnm,bmode_crop,ceus_mm_per_pixel",
        "p1,notdicom.dcm,,1,1,,",
        "p2,a.png,gray.dcm,0,0,,",
        f'p3,{a1},{a1},0,1,"1,2,3",-1',
        f'p4,{a2},,0,0,"0,0,20,5",',
    ]
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(ManifestError) as e:
        read_manifest(tmp_path / "m.csv")
    found = {(p.code, p.row, p.column) for p in e.value.problems}
    assert (UNUSABLE_DICOM, 1, "bmode") in found and "not a DICOM file: no 'DICM'" in str(e.value)
    assert (UNUSABLE_DICOM, 2, "ceus") in found and "data.ceus_region" in str(e.value)
    assert (BAD_IMAGE_OPTION, 3, "bmode_crop") in found and (BAD_IMAGE_OPTION, 3, "ceus_mm_per_pixel") in found
    assert (BAD_IMAGE_OPTION, 4, "bmode_crop") in found
    assert "bmode_crop 0,0,20,5 exceeds the 10x10 image" in str(e.value)
    assert not [p for p in e.value.problems if p.column == "bmode" and p.row == 2]  # a plain PNG is fine


def test_missing_codec_names_what_to_install(tmp_path):
    from pydicom.pixels import get_decoder
    from pydicom.uid import JPEGLSNearLossless

    if get_decoder(JPEGLSNearLossless).is_available:
        pytest.skip("a JPEG-LS decoder is installed here: the message for a missing one cannot be seen")
    src = sources.resolve(shipped("JPEGLSNearLossless_08.dcm"), "bmode")
    with pytest.raises(DicomError, match=r"needs a decoder .* pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-o"):
        sources.read_still(src)


# ------------------------------------------------------------------------- framing and scale


def test_physical_scale_makes_a_lesion_the_same_size_at_every_depth():
    def disk(side: int, mm: float) -> np.ndarray:  # a 10 mm disk on a field `side` pixels of `mm` mm each
        yy, xx = (np.mgrid[0:side, 0:side] + 0.5) * mm
        inside = (yy - side * mm / 2) ** 2 + (xx - side * mm / 2) ** 2 < 5.0**2
        return np.repeat(inside[..., None], 3, -1).astype(np.float32)

    near, far = disk(200, 0.1), disk(100, 0.2)  # 20 mm at 0.1 mm/px and at 0.2 mm/px
    area = {
        k: [fit(img, 64, (mm, mm), fov)[..., 0].sum() for img, mm in ((near, 0.1), (far, 0.2))]
        for k, fov in (("paper", 0.0), ("physical", 40.0))
    }
    # both fill the square without a physical scale (the 20 mm field is the whole image)...
    assert area["paper"][0] == pytest.approx(area["paper"][1], rel=0.02)
    # ...and with it, a 10 mm disk is pi * (5 mm / (40/64 mm/px))^2 = 201 px at either depth
    for a in area["physical"]:
        assert a == pytest.approx(np.pi * (5.0 / (40.0 / 64)) ** 2, rel=0.03)
    with pytest.raises(ValueError, match="no physical spacing"):
        fit(near, 64, None, 40.0)


def test_a_pixel_spacing_that_disagrees_with_the_region_is_said(tmp_path):
    """helper-57: PixelSpacing 0.5 mm beside a scan region calibrated at 0.1 mm was settled
    for the region in silence. The region's stays the calibration (PS3.3 C.8.5.5); the
    disagreement is a note naming both; an agreeing PixelSpacing says nothing."""
    picture = np.random.default_rng(2).integers(0, 255, (40, 50), dtype=np.uint8)
    region = [ScanRegion(Box(5, 5, 45, 35), 1, 1, (0.1, 0.1))]
    for spacing, said in ((["0.5", "0.5"], True), (["0.1", "0.1"], False)):
        path = write(tmp_path, f"s{spacing[0]}.dcm", picture, regions=region, attributes={"PixelSpacing": spacing})
        src = sources.resolve(path, "bmode")
        assert src.mm_per_pixel == (0.1, 0.1)
        notes = [n for n in src.notes if "PixelSpacing" in n]
        want = [
            "PixelSpacing 0.5 x 0.5 mm per pixel disagrees with its ultrasound region's 0.1 x 0.1: the region's is used"
        ]
        assert notes == (want if said else []), notes
    # non-square pixels (PixelAspectRatio): a viewer shows them stretched; read as stored, said (helper-59)
    for ratio, said in ((["2", "1"], True), (["1", "1"], False)):
        path = write(tmp_path, f"a{ratio[0]}.dcm", picture, regions=region, attributes={"PixelAspectRatio": ratio})
        notes = [n for n in sources.resolve(path, "bmode").notes if "PixelAspectRatio" in n]
        assert notes == (
            [
                "PixelAspectRatio 2:1: its pixels are not square, and a DICOM viewer shows the picture "
                "stretched 2 times as tall as stored; it is read as stored, and a crop box counts stored "
                "pixels"
            ]
            if said
            else []
        ), notes


@pytest.fixture(scope="module")
def twin_cohorts(tmp_path_factory):
    """The same small synthetic cohort as PNG files and as uncompressed DICOM screens."""
    root = tmp_path_factory.mktemp("twins")
    base = SynthParams(patients=12, size=32, seed=5, clip_frames=6)
    out = {}
    for name, params in (
        ("png", base),
        ("dicom", dataclasses.replace(base, format="dicom", dicom_compression="none")),
        ("zoomed", dataclasses.replace(base, format="dicom", dicom_compression="rle", dicom_zoom=0.3)),
    ):
        out[name] = generate_cohort(root / name, params)
    return out


def _eval_batch(manifest, **settings):
    cohort = read_manifest(manifest, min_clip_frames=settings.get("clip_frames", 1))
    s = BatchSettings(
        image_size=32,
        clip_frames=1,
        cache=False,
        norm=IDENTITY,
        augment={"enabled": False},
        batch_size=4,
        eval_batch_size=12,
        seed=0,
        num_threads=1,
    )
    return next(GrainSource(cohort, dataclasses.replace(s, **settings)).eval_batches(cohort.ids))


def test_dicom_cohort_gives_the_png_cohorts_batches(twin_cohorts):
    for clip_frames in (1, 3):
        a, b = (_eval_batch(twin_cohorts[k], clip_frames=clip_frames) for k in ("png", "dicom"))
        for key in ("bmode", "ceus", "us_lnm", "lnm", "has_bmode", "has_ceus"):
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    # the physical scale: the synthetic field is 40 mm, so at 40 mm per input side the DICOM
    # images are the PNG's; with depth settings that differ per patient (zoomed), each image is
    # resampled from its own spacing (the geometry itself: the disk test above)
    framing = sources.Framing(field_of_view_mm=40.0)
    np.testing.assert_array_equal(_eval_batch(twin_cohorts["dicom"], framing=framing)["bmode"], a["bmode"])
    zoomed = read_manifest(twin_cohorts["zoomed"])
    spacing = {sources.resolve(p.bmode, "bmode").mm_per_pixel[0] for p in zoomed.patients}
    assert len(spacing) > 1 and min(spacing) < 40 / 32 < max(spacing)
    assert _eval_batch(twin_cohorts["zoomed"], framing=framing)["bmode"].shape == a["bmode"].shape


def test_screen_capture_is_flagged_and_a_crop_column_frames_it(twin_cohorts, tmp_path):
    # a PNG screen capture of a scanner screen (banner text, colour bar, depth scale) around a
    # 96 px B-mode image of the synthetic cohort
    from lnm_jax.data.synth.synthetic_dicom import screen

    image = (read_image(twin_cohorts["png"].parent / "images/SYN000_bmode.png") * 255).round().astype(np.uint8)
    canvas, (box,) = screen([np.kron(image, np.ones((3, 3, 1), np.uint8))], "SYNTH^PATIENT  MRN1234567  2024", False)
    png(tmp_path, "screen.png", canvas)
    hint = screen_capture_box(read_image(tmp_path / "screen.png"))
    assert hint is not None and max(abs(hint.x0 - box.x0), abs(hint.y0 - box.y0), abs(hint.x1 - box.x1)) <= 2
    assert screen_capture_box(read_image(twin_cohorts["png"].parent / "images/SYN000_bmode.png")) is None
    # a full-width bar above a picture half the screen wide (helper-54's trial: the bar, as the
    # longest run of mostly lit rows, had been given as the content)
    side = 288 // image.shape[0]
    picture = np.kron(image[: 288 // side, : 288 // side], np.ones((side, side, 1), np.uint8))
    barred = np.zeros((480, 640, 3), np.uint8)
    barred[8:28] = 128
    barred[100 : 100 + picture.shape[0], 176 : 176 + picture.shape[1]] = picture
    for k in range(12):  # text marks under it
        barred[440:446, 20 + 14 * k : 28 + 14 * k] = 255
    found = screen_capture_box(barred / np.float32(255))
    assert (
        found is not None and max(abs(found.x0 - 176), abs(found.y0 - 100), abs(found.x1 - 176 - picture.shape[1])) <= 2
    )
    rows = ["patient_id,bmode,ceus,us_lnm,lnm,bmode_crop", "a,screen.png,,1,1,", f'b,screen.png,,0,0,"{box}"']
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    cohort = read_manifest(tmp_path / "m.csv")
    report = "\n".join(survey(cohort).lines)
    assert "1 image(s) look like whole screen captures" in report and "row 1 (a)" in report
    b = cohort.patients[1]
    cropped = sources.read_still(sources.resolve(b.bmode, "bmode", b.image_options("bmode")))
    np.testing.assert_array_equal(cropped, canvas[box.y0 : box.y1, box.x0 : box.x1] / np.float32(255))


def test_a_picture_too_small_for_the_model_is_said_at_validation(twin_cohorts, tmp_path, capsys):
    """helper-50's trial of a3f0dab: a 4x4 PNG passed validation without a word. A picture framed
    smaller than 1/8 of the model's input side (stretched over 8x: a thumbnail or icon exported,
    a crop in other units) is a warning line naming the smallest, a crop column's box counted."""
    from lnm_jax.cli import main

    image = twin_cohorts["png"].parent / "images/SYN000_bmode.png"  # 96 px
    png(tmp_path, "icon.png", np.random.default_rng(0).integers(0, 255, (4, 4, 3), dtype=np.uint8))
    rows = [
        "patient_id,bmode,ceus,us_lnm,lnm,bmode_crop",
        "a,icon.png,,1,1,",
        f"b,{image},,0,0,",
        f'c,{image},,0,1,"0,0,20,16"',  # a crop of 20x16 pixels (one in mm where pixels were meant?)
    ]
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    cohort = read_manifest(tmp_path / "m.csv", warn=False)
    said = [line for line in survey(cohort, image_size=224).lines if "framed smaller" in line]
    assert said == [
        "  warning: 2 image(s) are framed smaller than 1/8 of the model's 224-pixel input (each stretched over 8x): "
        "too small to be a scan (a thumbnail or icon exported, a crop in other units?); the smallest: row 1 (a) "
        "bmode icon.png, 4x4 pixels"
    ], said
    # what train says of them too, as validate does (helper-121: a run started without validate heard nothing)
    assert [w for w in survey(cohort, image_size=224).warnings if "framed smaller" in w] == [said[0].strip()[9:]]
    at96 = [line for line in survey(cohort, image_size=96).lines if "framed smaller" in line]
    assert len(at96) == 1 and "1 image(s)" in at96[0], at96  # the crop: 16 * 8 >= 96
    # helper-121: a strip (4000x40, 500x1) stretched to the square far out of shape, unsaid
    rows.append(f'd,{image},,1,0,"0,0,32,8"')
    (tmp_path / "strip.csv").write_text("\n".join(rows) + "\n")
    strips = [x for x in survey(read_manifest(tmp_path / "strip.csv", warn=False)).lines if "a strip" in x]
    assert strips == [
        "  warning: 1 image(s) are framed with one side over 3 times the other, each stretched to the model's square "
        "input that far out of shape (data.field_of_view_mm 0): a strip, not a scan (a crop in other units?); the "
        "most: 4:1, row 4 (d) bmode SYN000_bmode.png, 32x8 pixels"
    ], strips
    rows.pop()
    main(["validate", str(tmp_path / "m.csv")])  # (the cohort is too small to split: said after the lines)
    assert said[0] in capsys.readouterr().out
    # with a row refused, the other rows' images are still surveyed (helper-54's trial: the
    # warning had gone with any problem)
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "m2.csv").write_text("\n".join([*rows, "d,empty.png,,1,0,"]) + "\n")
    assert main(["validate", str(tmp_path / "m2.csv")]) == 1
    out, err = capsys.readouterr()
    assert "of the 3 rows read without a problem:" in out and said[0] in out, out
    assert "row 4, column 'bmode'" in err and "empty file (0 bytes)" in err, err


# ------------------------------------------------------------------- privacy, end to end


def _phi_found(folder: Path, values: set[bytes]) -> list[tuple[str, bytes]]:
    """(file, value) for every value of ``values`` that a file under ``folder`` holds, so that a
    failing assertion names what leaked where. A value of digits only (a birth date) counts where
    no digit touches it on either side: inside a longer number it is chance, not a leak. The
    copy's UIDs are new random decimals of up to 39 digits, and a run folder's records hold
    16-digit floats and nanosecond timestamps, in which a birth date's 8 digits turn up by
    chance (9,897 eight-digit windows in the copy's UIDs x 40 birth dates x 10^-8 = 0.004: once
    in some 250 runs of this test, before the run folder's numbers; a local run of fd440a1: the UID
    ``...3.8.498.14568861196609014235934574784692`` held ``19660901``; a clean-clone failure of
    d679158 on the run folder was never named). A header's value is delimited by its length
    and the next tag; a record's by quotes or commas."""
    patterns = {
        v: re.compile(rb"(?<![0-9])" + re.escape(v) + rb"(?![0-9])") if v.isdigit() else re.compile(re.escape(v))
        for v in sorted(values)
    }
    found = []
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            data = p.read_bytes()
            found += [(str(p.relative_to(folder)), v) for v, pattern in patterns.items() if pattern.search(data)]
    return found


def _phi_values(folder: Path) -> set[bytes]:
    """Every identifying header value of the DICOM files under ``folder`` (names, IDs, birth
    dates, accession numbers: 8+ characters, so that pixel bytes cannot match by chance)."""
    from pydicom import dcmread

    values = set()
    for f in folder.rglob("*.dcm"):
        ds = dcmread(f, stop_before_pixels=True)
        values |= {str(ds.get(k, "")).encode() for k in PHI_KEYWORDS}
    return {v for v in values if len(v) >= 8}


def test_validate_flags_phi_deidentify_removes_it_and_the_copy_trains(tmp_path, capsys):
    from support import tiny_config

    manifest = generate_cohort(
        tmp_path / "hospital",
        SynthParams(patients=40, size=48, seed=3, bmode_strength=3.0, ceus_strength=3.0, format="dicom"),
    )
    assert main(["validate", str(manifest)]) in (0, 1)
    out = capsys.readouterr().out
    assert "PHI: 80 DICOM file(s)" in out and "PatientName" in out and "80 declare BurnedInAnnotation=YES" in out
    assert not any(s.decode() in out for s in PHI_STRINGS)  # reported by name, never by value
    inside = ["deidentify", "--manifest", str(manifest), "--out", str(tmp_path / "deid")]
    assert main([*inside, "--mapping", str(tmp_path / "deid" / "map.csv")]) == 1  # kept apart
    assert main([*inside, "--mapping", str(tmp_path / "private" / "map.csv"), "--keep-columns", "age"]) == 0
    deid = tmp_path / "deid"
    phi_values = _phi_values(manifest.parent) | set(PHI_STRINGS)
    assert len(phi_values) > 100
    assert _phi_found(deid, phi_values) == []  # headers and burned-in banners
    with open(deid / "manifest.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["patient_id"] for r in rows] == sorted(r["patient_id"] for r in rows) and "sex" not in rows[0]
    src = sources.resolve(deid / rows[0]["ceus"], "ceus")
    assert src.header.burned_in_annotation == "NO" and not src.header.phi and src.reference is not None
    assert main(["validate", str(deid / "manifest.csv")]) in (0, 1)
    assert "PHI" not in capsys.readouterr().out
    with open(tmp_path / "private" / "map.csv") as f:
        assert {r["original_patient_id"] for r in csv.DictReader(f)} == {f"SYN{i:03d}" for i in range(40)}

    # the de-identified DICOM cohort trains, evaluates, predicts and explains like any other
    config = tiny_config(deid / "manifest.csv", "triple", epochs=1)
    work = tmp_path / "run"
    from lnm_jax.run import Run
    from lnm_jax.training.loop import train

    train(Run.create(config, work))
    assert main(["evaluate", "--workdir", str(work)]) == 0
    out = str(tmp_path / "p.csv")
    assert main(["predict", "--workdir", str(work), "--manifest", str(deid / "manifest.csv"), "--out", out]) == 0
    assert main(["gradcam", "--workdir", str(work), "--split", "val"]) == 0
    assert list((work / "gradcam_val").rglob("*.png"))
    with open(work / "image_geometry.csv") as f:
        geometry = list(csv.DictReader(f))
    assert len(geometry) == 80 and {g["framing"] for g in geometry} == {"scan region"}
    assert _phi_found(work, phi_values) == []
    capsys.readouterr()


def test_jpeg_encoding_in_the_writer_is_baseline(tmp_path):
    img = np.random.default_rng(2).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    ds = dicom.new_dataset(img, compression="jpeg")
    from pydicom.encaps import generate_frames

    frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    with Image.open(io.BytesIO(frame)) as im:
        assert im.format == "JPEG" and im.mode == "RGB"
    assert ds.PhotometricInterpretation == "YBR_FULL_422"


def test_quiet_pydicom_from_many_threads_restores_the_filters_and_the_log_level():
    """Manifests are checked on threads: callers overlapping in any order leave warnings and
    pydicom's log level as they found them, and each is quiet while inside."""
    import logging
    import threading
    import time

    log = logging.getLogger("pydicom")
    before_filters, before_level = warnings.filters[:], log.level
    barrier, inside = threading.Barrier(6), []

    def caller(i):
        barrier.wait()
        time.sleep(0.002 * (i % 3))
        with dicom.quiet_pydicom():
            time.sleep(0.01 * ((i * 7) % 5))
            inside.append((warnings.filters[0][0], log.level))

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert inside == [("ignore", logging.ERROR)] * 6
    assert warnings.filters == before_filters and log.level == before_level


def test_a_file_without_the_dicom_preamble_is_named_in_this_packages_words(tmp_path):
    """helper-50's trial of a3f0dab: a dataset written without the DICOM file format's preamble
    (or any other file named .dcm) was refused in pydicom's words, "... Use force=True to force
    reading", a setting no user of this package has. It is `unusable_dicom` saying what the file
    lacks and how to export it; as a lesion mask alike."""
    picture = np.tile(np.arange(0, 256, 8, dtype=np.uint8), (24, 1))
    dicom.write_dataset(dicom.new_dataset(picture), tmp_path / "full.dcm")
    (tmp_path / "bare.dcm").write_bytes((tmp_path / "full.dcm").read_bytes()[132:])  # no preamble, no 'DICM'
    (tmp_path / "notes.dcm").write_text("not an image\n")
    Image.fromarray(picture).save(tmp_path / "b.png")
    Image.fromarray(np.roll(picture, 1, axis=1)).save(tmp_path / "c.png")
    (tmp_path / "m.csv").write_text(
        "patient_id,bmode,ceus,us_lnm,lnm,bmode_mask\nA,bare.dcm,,1,1,\nB,notes.dcm,,0,0,\nC,b.png,,0,1,bare.dcm\n"
        "D,c.png,,1,0,\n"
    )
    with pytest.raises(ManifestError) as e:
        read_manifest(tmp_path / "m.csv")
    said = [(p.row, p.code, p.column) for p in e.value.problems]
    assert said == [(1, UNUSABLE_DICOM, "bmode"), (2, UNUSABLE_DICOM, "bmode"), (3, "unreadable_image", "bmode_mask")]
    for p in e.value.problems:
        assert (
            "not a DICOM file: no 'DICM' after its 128-byte preamble" in p.message and "force=True" not in p.message
        ), p


def _grey_dicom(path, **attrs):
    """A 12-bit MONOCHROME2 ultrasound image (16x16 random values) with ``attrs`` (windows,
    rescales, LUT sequences) set, written with pydicom."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.6.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.Rows, ds.Columns, ds.SamplesPerPixel = "US", 16, 16, 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    for k, v in attrs.items():
        setattr(ds, k, v)
    ds.PixelData = np.random.default_rng(0).integers(0, 4096, (16, 16)).astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)


def _lut_sequence(first, data, modality=False):
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    item = Dataset()
    item.add_new("LUTDescriptor", "US", [len(data), first, 16])
    item.add_new("LUTData", "US", [int(v) for v in data])
    if modality:
        item.ModalityLUTType = "US"
    return Sequence([item])


_TABLE = (np.sqrt(np.arange(3000)) * 70).astype(int)  # a 3,000-entry curve, values 0-3834


@pytest.mark.parametrize(
    "attrs",
    [
        {"WindowCenter": 1500, "WindowWidth": 1200},
        {"WindowCenter": 1500, "WindowWidth": 1200, "VOILUTFunction": "LINEAR_EXACT"},
        {"WindowCenter": 1500, "WindowWidth": 1200, "VOILUTFunction": "SIGMOID"},
        {"RescaleSlope": 2, "RescaleIntercept": -100, "WindowCenter": 3000, "WindowWidth": 2000},
        {"VOILUTSequence": _lut_sequence(500, _TABLE)},
        {"ModalityLUTSequence": _lut_sequence(0, _TABLE, modality=True), "WindowCenter": 2000, "WindowWidth": 3000},
    ],
    ids=["linear", "linear_exact", "sigmoid", "rescale", "voi_lut", "modality_lut"],
)
def test_grey_transforms_are_pydicoms_mapped_to_the_display_range(tmp_path, attrs):
    """docs/dicom.md says the values read agree with pydicom's apply_modality_lut and
    apply_voi_lut to float32 rounding; no test had checked it (helper-101). pydicom returns the
    window's or LUT's output range, this reader [0, 1]: the two must be one affine map apart,
    to the float32 rounding of values in [0, 1] (6e-8 each)."""
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    path = tmp_path / "g.dcm"
    _grey_dicom(path, **attrs)
    ours = dicom.read_frame(dicom.read_header(path), 0)[..., 0].astype(np.float64).ravel()
    ds = pydicom.dcmread(path)
    ref = apply_voi_lut(apply_modality_lut(ds.pixel_array, ds), ds).astype(np.float64).ravel()
    design = np.stack([ref, np.ones_like(ref)], axis=1)
    coef, *_ = np.linalg.lstsq(design, ours, rcond=None)
    assert coef[0] > 0 and np.abs(design @ coef - ours).max() < 2e-7
    assert ours.min() >= 0 and ours.max() <= 1 and np.ptp(ours) > 0.05


def _packed_422(rgb: np.ndarray) -> bytes:
    """Native YBR_FULL_422 bytes of uint8 RGB frames [N, H, W, 3] (W even): per two pixels Y Y Cb
    Cr (PS3.3 C.7.6.3.1.2), the chroma of the two averaged."""
    from pydicom.pixels import convert_color_space

    out = []
    for frame in rgb:
        ybr = convert_color_space(frame, "RGB", "YBR_FULL").astype(np.float64)
        h, w = frame.shape[:2]
        cb, cr = (np.rint(ybr[..., c].reshape(h, w // 2, 2).mean(-1)) for c in (1, 2))
        out.append(np.stack([ybr[:, 0::2, 0], ybr[:, 1::2, 0], cb, cr], -1).astype(np.uint8).tobytes())
    return b"".join(out)


def test_a_dicom_files_layout_and_name_are_read_as_its_content_says(tmp_path):
    """helper-107's encodings: a JPEG-family frame under PlanarConfiguration 1 (its layout is the
    codestream's, PS3.5 8.2; pydicom had reshaped it as planes: stripes, 77/255 off) reads as
    under 0; native YBR_FULL_422 under 1 is refused (it shall be 0); a native YBR_FULL_422 cine
    reads every frame (pydicom's iter_pixels had sized them at 3 bytes a pixel: garbage, then a
    reshape error); a stray delimiter after the pixel data (a traceback) is passed over; a DICOM
    file named by its UID, .IMA or .jpg is read as DICOM; a JPEG with a Multi-Picture segment
    (MPO) reads its first picture; a lossless or JPEG-LS file named .jpg is said to be one."""
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEG2000Lossless

    from lnm_jax.data.pixels.decode import MAX_IMAGE_PIXELS, DamagedImageError, verify_image

    rng = np.random.default_rng(7)
    rgb = np.kron(rng.integers(30, 220, (8, 8, 3), dtype=np.uint8), np.ones((6, 6, 1), np.uint8))  # 48 x 48
    read = lambda path: sources.read_still(sources.resolve(path, "ceus"))  # noqa: E731
    interleaved = read(write(tmp_path, "pc0.dcm", rgb, compression="jpeg"))
    ds = dicom.new_dataset(rgb, compression="jpeg")
    ds.PlanarConfiguration = 1  # (set after: new_dataset's pixel data sets its own)
    dicom.write_dataset(ds, tmp_path / "pc1.dcm")
    assert np.array_equal(read(tmp_path / "pc1.dcm"), interleaved)
    j2k = io.BytesIO()
    Image.fromarray(rgb).save(j2k, "JPEG2000", no_jp2=True, irreversible=False)  # lossless
    ds = dicom.new_dataset(rgb)
    ds.PixelData, ds.file_meta.TransferSyntaxUID = encapsulate([j2k.getvalue()]), JPEG2000Lossless
    ds.PlanarConfiguration = 1
    ds["PixelData"].VR = "OB"
    dicom.write_dataset(ds, tmp_path / "j2k_pc1.dcm")
    assert np.array_equal(read(tmp_path / "j2k_pc1.dcm"), rgb / np.float32(255))

    frames = np.stack([rgb, rgb[::-1], rgb[:, ::-1], 255 - rgb])  # a 4-frame native 4:2:2 cine
    ds = dicom.new_dataset(frames)
    ds.PhotometricInterpretation, ds.PixelData = "YBR_FULL_422", _packed_422(frames)
    dicom.write_dataset(ds, tmp_path / "ybr422_cine.dcm")
    header = dicom.read_header(tmp_path / "ybr422_cine.dcm")
    got = list(dicom.iter_frames(header))
    assert len(got) == 4
    for k, frame in enumerate(got):  # 4:2:2's chroma averaging and YBR rounding: a few levels
        assert np.abs(frame - frames[k] / np.float32(255)).mean() < 3 / 255, k
        assert np.array_equal(frame, dicom.read_frame(header, k))
    ds.PlanarConfiguration = 1
    dicom.write_dataset(ds, tmp_path / "ybr422_pc1.dcm")
    with pytest.raises(dicom.HeaderMismatchError, match="PlanarConfiguration 1 with YBR_FULL_422"):
        dicom.read_header(tmp_path / "ybr422_pc1.dcm")

    plain = write(tmp_path, "plain.dcm", rgb)
    want = read(plain)
    (tmp_path / "trailing.dcm").write_bytes(plain.read_bytes() + b"\xfe\xff\xdd\xe0\x00\x00\x00\x00")
    for name in ("1.2.840.99999.1.2.3", "IM0001.IMA", "scan.jpg"):
        (tmp_path / name).write_bytes(plain.read_bytes())
    for name in ("trailing.dcm", "1.2.840.99999.1.2.3", "IM0001.IMA", "scan.jpg"):
        assert np.array_equal(read(tmp_path / name), want), name
    assert all(dicom.read_header(tmp_path / n).frames == 1 for n in ("pc1.dcm", "j2k_pc1.dcm"))
    from pydicom import dcmread

    assert all(dcmread(tmp_path / n).PlanarConfiguration == 1 for n in ("pc1.dcm", "j2k_pc1.dcm"))
    # a PNG named .dcm is a PNG, and a FIFO is opened by no one (helper-108: is_dicom had blocked on one)
    Image.fromarray(rgb).save(tmp_path / "picture.png")
    (tmp_path / "picture.dcm").write_bytes((tmp_path / "picture.png").read_bytes())
    assert not dicom.is_dicom(tmp_path / "picture.dcm")
    os.mkfifo(tmp_path / "fifo.png")
    assert not dicom.is_dicom(tmp_path / "fifo.png")

    Image.fromarray(rgb).save(
        tmp_path / "mpo.jpg", format="MPO", save_all=True, append_images=[Image.fromarray(255 - rgb)]
    )
    Image.fromarray(rgb).save(tmp_path / "first.jpg", quality=75)
    assert Image.open(tmp_path / "mpo.jpg").format == "MPO"
    assert np.array_equal(verify_image(tmp_path / "mpo.jpg", MAX_IMAGE_PIXELS), read(tmp_path / "first.jpg"))
    baseline = (tmp_path / "first.jpg").read_bytes()
    sof = baseline.index(b"\xff\xc0")
    for marker, said in ((0xC3, "a lossless JPEG (SOF3) image"), (0xF7, "a JPEG-LS (SOF55) image")):
        (tmp_path / "coded.jpg").write_bytes(baseline[: sof + 1] + bytes([marker]) + baseline[sof + 2 :])
        with pytest.raises(DamagedImageError, match=re.escape(said)):
            verify_image(tmp_path / "coded.jpg", MAX_IMAGE_PIXELS)


def test_a_deflate_bomb_and_a_fifo_are_refused_without_being_read(tmp_path, monkeypatch):
    """helper-118: a 4 MB deflated DICOM of zeros took 20 minutes and 8.7 GB before it was
    refused (pydicom inflates the whole dataset to parse it), and a FIFO named ``.dcm`` hung
    ``validate`` in its open, deaf to signals. The deflated file is refused from its file meta
    information, no dataset read; a FIFO (named as a DICOM, a clip or a mask) is never opened."""
    import threading
    import zlib

    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.filewriter import write_file_meta_info
    from pydicom.uid import DeflatedExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.6.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    meta.ImplementationClassUID = generate_uid()
    head = io.BytesIO()
    head.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(head, meta, enforce_standard=True)
    squeeze = zlib.compressobj(9, zlib.DEFLATED, -15)
    body = b"".join(squeeze.compress(b"\0" * (1 << 24)) for _ in range(4)) + squeeze.flush()  # 64 MiB inflated
    (tmp_path / "bomb.dcm").write_bytes(head.getvalue() + body)

    def no_dataset_read(*args, **kwargs):
        raise AssertionError("the deflated dataset was read")

    with monkeypatch.context() as m:
        m.setattr(pydicom, "dcmread", no_dataset_read)
        with pytest.raises(DicomError, match=r"bomb.dcm: transfer syntax Deflated Explicit VR Little Endian .* not"):
            dicom.read_header(tmp_path / "bomb.dcm")

    png(tmp_path, "a.png", np.arange(300, dtype=np.uint8).reshape(10, 10, 3))
    a1, a2, a3 = own_pictures(tmp_path / "a.png", 3)
    for name in ("fifo.dcm", "fifo.mp4", "fifo_mask.png", "frames/frame_002.png"):  # (as named below)
        (tmp_path / name).parent.mkdir(exist_ok=True)
        os.mkfifo(tmp_path / name)
    png(tmp_path / "frames", "frame_001.png", np.arange(300, dtype=np.uint8).reshape(10, 10, 3))
    opened, done = [], threading.Event()

    def writer(name):  # each open blocks until a reader opens the FIFO: a reader is never left hanging
        while not done.is_set():
            with open(tmp_path / name, "wb"):
                if not done.is_set():
                    opened.append(name)

    fifos = ("fifo.dcm", "fifo.mp4", "fifo_mask.png", "frames/frame_002.png")  # (a clip's frame: helper-119)
    threads = [threading.Thread(target=writer, args=(n,), daemon=True) for n in fifos]
    for t in threads:
        t.start()
    rows = [
        "patient_id,bmode,ceus,us_lnm,lnm,bmode_mask",
        f"p1,fifo.dcm,{a1},1,1,",
        f"p2,{a2},fifo.mp4,0,0,fifo_mask.png",
        "p3,bomb.dcm,,0,1,",
        f"p4,{a3},frames,0,0,",
    ]
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(ManifestError) as e:
        read_manifest(tmp_path / "m.csv")
    said = {(p.row, p.column): p.message for p in e.value.problems}
    assert "is neither a file nor a folder (a FIFO, socket or device)" in said[(1, "bmode")], said
    assert "is neither a file nor a folder (a FIFO, socket or device)" in said[(2, "ceus")], said
    assert "is neither a file nor a folder (a FIFO, socket or device)" in said[(2, "bmode_mask")], said
    assert "transfer syntax Deflated Explicit VR Little Endian" in said[(3, "bmode")], said
    assert "frame frame_002.png is not a file (a folder, FIFO or device)" in said[(4, "ceus")], said
    assert opened == []  # no FIFO was opened for reading
    done.set()
    for name in fifos:  # release the writers
        os.close(os.open(tmp_path / name, os.O_RDONLY | os.O_NONBLOCK))
    for t in threads:
        t.join(timeout=10)
