"""Lesion masks in the manifest: validated like images, framed with their image (crop,
physical scale, resize) so that a mask covers the pixels the model sees."""

from __future__ import annotations

import csv
import shutil

import numpy as np
import pytest
from PIL import Image
from support import own_pictures

from lnm_jax.data.cohorts import manifest as M
from lnm_jax.data.pixels.decode import CUT_SHORT
from lnm_jax.data.pixels.masks import decode_mask
from lnm_jax.data.pixels.sources import Box, Framing, ImageOptions, decode_input


def _image_and_mask(folder, w=120, h=80, box=(40, 30, 70, 50)):
    """A dark image with a bright rectangle, and the mask of exactly that rectangle."""
    img = np.full((h, w), 20, np.uint8)
    m = np.zeros((h, w), np.uint8)
    x0, y0, x1, y1 = box
    img[y0:y1, x0:x1] = 230
    m[y0:y1, x0:x1] = 255
    Image.fromarray(img).save(folder / "img.png")
    Image.fromarray(m).save(folder / "mask.png")
    return folder / "img.png", folder / "mask.png"


@pytest.mark.parametrize(
    "options, framing",
    [
        (ImageOptions(), Framing()),  # the whole frame resized to the square (the paper)
        (ImageOptions(crop=Box(10, 5, 110, 75)), Framing()),  # the crop column
        (ImageOptions(crop=Box(10, 5, 110, 75), mm_per_pixel=0.2), Framing(field_of_view_mm=30.0)),  # physical scale
    ],
)
def test_a_mask_lands_on_the_pixels_of_its_lesion_after_crop_scale_and_resize(tmp_path, options, framing):
    """The framed image's bright pixels are the framed mask's: the same crop, scale and kernel
    (antialiased: a boundary pixel is partly inside in both, by the same fraction)."""
    img, mask = _image_and_mask(tmp_path)
    x = decode_input(img, "bmode", size=32, patient_id="P", options=options, framing=framing)[..., 0]
    m = decode_mask(mask, img, "bmode", size=32, options=options, framing=framing)
    lo, hi = 20 / 255, 230 / 255
    inside = (x - lo) / (hi - lo)  # the image's own share of lesion per pixel (a zero-padded border: negative)
    np.testing.assert_allclose(np.clip(inside, 0, 1), m, atol=1e-5)  # float32 resampling of the same weights
    assert m.max() == pytest.approx(1.0) and 0.0 < m.mean() < 0.5


def _manifest(tmp_path, rows, extra=("bmode_mask",)):
    path = tmp_path / "m.csv"
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["patient_id", "bmode", "ceus", "us_lnm", "lnm", *extra])
        w.writeheader()
        w.writerows(rows)
    return path


def test_bad_masks_are_named_with_row_column_and_file(tmp_path):
    img, good = _image_and_mask(tmp_path)
    Image.fromarray(np.zeros((80, 120), np.uint8)).save(tmp_path / "empty.png")
    Image.fromarray(np.zeros((40, 60), np.uint8) + 255).save(tmp_path / "small.png")
    gray = np.zeros((80, 120), np.uint8)
    gray[:, :60] = 128
    gray[:, 60:] = 255
    Image.fromarray(gray).save(tmp_path / "gray.png")
    # a mask cut short, and an empty one (stop 73: PIL's words, "image file is truncated", as
    # the images' checks no longer give them)
    (tmp_path / "cut.png").write_bytes(good.read_bytes()[:-30])
    (tmp_path / "none.png").write_bytes(b"")
    flipped = bytearray(good.read_bytes())  # a byte of its image data changed (helper-55: passed in silence)
    flipped[flipped.index(b"IDAT") + 8] ^= 0xFF
    (tmp_path / "flipped.png").write_bytes(bytes(flipped))
    own = iter(own_pictures(img, 8))
    base = {"ceus": "", "us_lnm": "1"}
    rows = [
        {"patient_id": "A", "bmode": next(own), **base, "lnm": 1, "bmode_mask": "mask.png"},  # fine
        {"patient_id": "B", "bmode": next(own), **base, "lnm": 0, "bmode_mask": "empty.png"},
        {"patient_id": "C", "bmode": next(own), **base, "lnm": 1, "bmode_mask": "small.png"},
        {"patient_id": "D", "bmode": next(own), **base, "lnm": 0, "bmode_mask": "gray.png"},
        {"patient_id": "E", "bmode": next(own), **base, "lnm": 1, "bmode_mask": "nope.png"},
        {"patient_id": "F", "bmode": "", "ceus": "", "us_lnm": "1", "lnm": 0, "bmode_mask": "mask.png"},
        {"patient_id": "G", "bmode": next(own), **base, "lnm": 1, "bmode_mask": "cut.png"},
        {"patient_id": "H", "bmode": next(own), **base, "lnm": 0, "bmode_mask": "none.png"},
        {"patient_id": "I", "bmode": next(own), **base, "lnm": 1, "bmode_mask": "flipped.png"},
    ]
    with pytest.raises(M.ManifestError) as e:
        M.read_manifest(_manifest(tmp_path, rows))
    got = {(p.row, p.code, p.column) for p in e.value.problems}
    assert got == {
        (2, M.MASK_EMPTY, "bmode_mask"),
        (3, M.MASK_SIZE_MISMATCH, "bmode_mask"),
        (4, M.MASK_NOT_BINARY, "bmode_mask"),
        (5, M.MISSING_FILE, "bmode_mask"),
        (6, M.MASK_WITHOUT_IMAGE, "bmode_mask"),
        (7, M.UNREADABLE_IMAGE, "bmode_mask"),
        (8, M.UNREADABLE_IMAGE, "bmode_mask"),
        (9, M.UNREADABLE_IMAGE, "bmode_mask"),
    }
    assert "mask is 60x40, its image 120x80" in str(e.value)
    said = {p.row: p.message for p in e.value.problems}
    assert said[7].startswith("damaged PNG: the file ends at byte") and said[7].endswith(CUT_SHORT), said[7]
    assert said[8] == "empty file (0 bytes): an export or copy that wrote nothing", said[8]
    assert said[9].startswith("damaged PNG: chunk 'IDAT' at byte 33 fails its CRC check"), said[9]
    cohort = M.read_manifest(_manifest(tmp_path, rows[:1] + [{**rows[1], "bmode_mask": ""}]))
    assert cohort.patients[0].mask("bmode") == good and cohort.patients[1].mask("bmode") is None
    assert "bmode_mask" not in cohort.metadata_columns


def test_one_lesion_mask_for_two_patients_is_a_warning_naming_the_first(tmp_path):
    """helper-52's trial of eaf6508: one mask named for two patients' images (a mask column
    filled down) passed in silence; the lesion head trains on, and the pointing game scores, an
    outline drawn on another image. `shared_mask` on each later row, naming the first, a copy
    under another name too (the same pixels); one patient's B-mode and CEUS sharing one mask
    (a capture's two halves) is no warning, nor are two patients' masks of their own."""
    img, good = _image_and_mask(tmp_path)
    shutil.copyfile(good, tmp_path / "copy.png")
    (tmp_path / "sub").mkdir()
    _image_and_mask(tmp_path / "sub", box=(10, 10, 30, 30))  # a mask of its own
    a, b, c, d, e, f = own_pictures(img, 6)
    base = {"us_lnm": "1", "lnm": 1}
    # (B's mask is of its own lesion)
    rows = [
        {"patient_id": "A", "bmode": a, "ceus": b, **base, "bmode_mask": "mask.png", "ceus_mask": "mask.png"},
        {"patient_id": "B", "bmode": c, "ceus": "", "us_lnm": 0, "lnm": 0, "bmode_mask": "sub/mask.png"},
        {"patient_id": "C", "bmode": d, "ceus": "", **base, "bmode_mask": "mask.png", "ceus_mask": ""},
        {"patient_id": "D", "bmode": e, "ceus": f, **base, "bmode_mask": "", "ceus_mask": "copy.png"},
    ]
    cohort = M.read_manifest(_manifest(tmp_path, rows, ("bmode_mask", "ceus_mask")))
    said = [(w.code, w.row, w.column, w.message.split(": one outline")[0]) for w in cohort.warnings]
    assert said == [
        (M.SHARED_MASK, 3, "bmode_mask", "the same lesion mask as row 1's bmode_mask (patient 'A')"),
        (
            M.SHARED_MASK,
            4,
            "ceus_mask",
            f"the same lesion mask as row 1's bmode_mask (patient 'A') ('{good}', the same pixels)",
        ),
    ], cohort.warnings


def _segmentation(path, lesion: np.ndarray, modality: str = "SEG") -> None:
    """A DICOM Segmentation (BINARY, one frame, bit-packed) of ``lesion``, as a viewer exports."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.pixels import pack_bits
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    from lnm_jax.data.pixels.masks import SEGMENTATION_STORAGE

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = SEGMENTATION_STORAGE, generate_uid(), modality
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    ds.Rows, ds.Columns, ds.NumberOfFrames, ds.SamplesPerPixel = *lesion.shape, 1, 1
    ds.PhotometricInterpretation, ds.PixelRepresentation, ds.SegmentationType = "MONOCHROME2", 0, "BINARY"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 1, 1, 0
    ds.PixelData = pack_bits(lesion.astype(np.uint8))
    ds.save_as(path, enforce_file_format=True)


def test_a_mask_drawn_in_alpha_reads_as_shown_and_one_without_background_is_refused(tmp_path):
    """Cases mask-lesion-in-alpha and mask-covers-whole-image: a mask saved white on
    transparent (the lesion in the alpha channel) read as one value, 255, everywhere: the
    whole image "lesion"; a filled or inverted mask passed, and Grad-CAM then scored every map
    100% inside. Transparent pixels are background; a mask marking all four corners of its
    image is `mask_no_background`; an ellipse touching all four edges (a lesion ROI) is kept."""
    from lnm_jax.data.pixels.masks import NO_BACKGROUND, NOT_BINARY, MaskError, read_mask

    h, w = 40, 60
    square = np.zeros((h, w), bool)
    square[10:20, 20:35] = True
    yy, xx = np.mgrid[:h, :w]
    ellipse = ((yy - (h - 1) / 2) / (h / 2)) ** 2 + ((xx - (w - 1) / 2) / (w / 2)) ** 2 <= 1

    def png(name, array, mode=None):
        Image.fromarray(array, mode).save(tmp_path / name)
        return tmp_path / name

    white = np.full((h, w), 255, np.uint8)
    drawn = np.stack([white, np.where(square, 255, 0).astype(np.uint8)], -1)
    assert (read_mask(png("alpha.png", drawn, "LA")) == square).all()
    opaque = np.dstack([np.repeat(np.where(square, 255, 0)[..., None], 3, -1), white]).astype(np.uint8)
    assert (read_mask(png("opaque.png", opaque, "RGBA")) == square).all()
    assert (read_mask(png("ellipse.png", np.where(ellipse, 255, 0).astype(np.uint8))) == ellipse).all()
    soft = drawn.copy()
    soft[10, 20:35, 1] = 128  # an antialiased edge in the alpha
    refused = [
        (png("soft.png", soft, "LA"), NOT_BINARY, "transparency (alpha) is not binary"),
        (png("full.png", white), NO_BACKGROUND, "every pixel"),
        # red on white (helper-80: said "marks every pixel", as if the lesion filled the image)
        (
            png("red_on_white.png", np.where(square[..., None], [255, 0, 0], [255, 255, 255]).astype(np.uint8)),
            NO_BACKGROUND,
            "drawn in colours none of which is black (e.g. a lesion in red on white)",
        ),
        (png("inverted.png", np.where(square, 0, 255).astype(np.uint8)), NO_BACKGROUND, "all four corners (94%"),
        (png("inverted_ellipse.png", np.where(ellipse, 0, 255).astype(np.uint8)), NO_BACKGROUND, "all four corners"),
    ]
    for path, code, said in refused:
        with pytest.raises(MaskError) as e:
            read_mask(path)
        assert e.value.code == code and said in str(e.value), (path.name, str(e.value))


def test_a_dicom_segmentation_is_a_mask_like_its_png(tmp_path):
    """The same lesion as a DICOM SEG frames to the same pixels as the PNG; a DICOM file that is
    not a segmentation is named with its code."""
    img, png = _image_and_mask(tmp_path)
    lesion = np.asarray(Image.open(png)) > 0
    _segmentation(tmp_path / "mask.dcm", lesion)
    _segmentation(tmp_path / "not_seg.dcm", lesion, modality="US")
    np.testing.assert_array_equal(
        decode_mask(tmp_path / "mask.dcm", img, "bmode", size=32), decode_mask(png, img, "bmode", size=32)
    )
    a, b = own_pictures(img, 2)
    rows = [
        {"patient_id": "A", "bmode": a, "ceus": "", "us_lnm": "1", "lnm": 1, "bmode_mask": "mask.dcm"},
        {"patient_id": "B", "bmode": b, "ceus": "", "us_lnm": "1", "lnm": 0, "bmode_mask": "not_seg.dcm"},
    ]
    with pytest.raises(M.ManifestError) as e:
        M.read_manifest(_manifest(tmp_path, rows))
    assert {(p.row, p.code) for p in e.value.problems} == {(2, M.MASK_NOT_SEGMENTATION)}
    assert "Modality SEG" in str(e.value) and "not Modality US" in str(e.value)
    fine = [rows[0], {**rows[1], "bmode_mask": "mask.dcm"}]
    assert M.read_manifest(_manifest(tmp_path, fine)).patients[0].mask("bmode") == tmp_path / "mask.dcm"


def test_deidentify_crops_a_mask_with_its_image(tmp_path):
    """The copy's image is cut to its crop box; its mask is cut to the same box, so both frame
    to what the original framed to."""
    from lnm_jax.data.privacy.deidentify import deidentify

    img, mask = _image_and_mask(tmp_path)
    rows = [
        {"patient_id": p, "bmode": own, "ceus": "", "us_lnm": "1", "lnm": y, "bmode_mask": "mask.png"}
        for p, y, own in zip("AB", (1, 0), own_pictures(img, 2))
    ]
    src = _manifest(tmp_path, [{**r, "bmode_crop": "10,5,110,75"} for r in rows], extra=("bmode_mask", "bmode_crop"))
    report = deidentify(src, tmp_path / "copy", tmp_path / "mapping.csv")
    copy = M.read_manifest(report.manifest).patients[0]
    assert Image.open(copy.bmode).size == Image.open(copy.mask("bmode")).size == (100, 70)
    original = decode_mask(
        mask, tmp_path / rows[0]["bmode"], "bmode", size=32, options=ImageOptions(crop=Box(10, 5, 110, 75))
    )
    np.testing.assert_allclose(decode_mask(copy.mask("bmode"), copy.bmode, "bmode", size=32), original, atol=1e-6)


def test_lesion_box_grows_squares_and_stays_inside():
    from lnm_jax.data.cohorts.lesion_crop import lesion_box

    lesion = np.zeros((80, 120), bool)
    lesion[30:50, 40:70] = True  # 30 wide, 20 high
    whole = Box(0, 0, 120, 80)
    assert lesion_box(lesion, whole, 0.0) == Box(40, 25, 70, 55)  # squared to 30x30 around the centre
    assert lesion_box(lesion, whole, 0.5) == Box(25, 10, 85, 70)  # 30 * 2 = 60 on each axis
    assert lesion_box(lesion, whole, 5.0) == whole  # clipped to the image on both axes
    assert lesion_box(lesion, Box(50, 0, 120, 80), 0.0) == Box(50, 30, 70, 50)  # only the part inside the old crop
    with pytest.raises(ValueError, match="no pixel"):
        lesion_box(lesion, Box(0, 0, 30, 80), 0.2)


def test_crop_to_lesion_writes_a_manifest_that_frames_around_the_mask(tmp_path, capsys):
    from lnm_jax.data.cohorts.lesion_crop import crop_to_lesion

    img, _ = _image_and_mask(tmp_path)
    own = own_pictures(img, 3)
    rows = [
        {"patient_id": p, "bmode": name, "ceus": "", "us_lnm": "1", "lnm": y, "bmode_mask": "mask.png"}
        for p, y, name in zip("AB", (1, 0), own)
    ]
    src = _manifest(tmp_path, rows)
    (tmp_path / "sub").mkdir()
    summary = crop_to_lesion(src, tmp_path / "sub" / "lesion.csv", margin=0.5)
    assert summary["images_cropped_to_lesion"] == 2
    p = M.read_manifest(tmp_path / "sub" / "lesion.csv").patients[0]
    assert p.image_options("bmode").crop == Box(25, 10, 85, 70) and p.bmode == (tmp_path / "sub" / f"../{own[0]}")
    m = decode_mask(p.mask("bmode"), p.bmode, "bmode", size=32, options=p.image_options("bmode"))
    assert 0.15 < m.mean() < 0.25  # the 30x20 lesion in a 60x60 crop: a sixth of the model's square
    # each row's box is its own mask's: a spreadsheet's blank row and a quoted cell's line breaks
    # (read_manifest passes over the one and reads the other as one row) had shifted the boxes after
    # them onto the next patient, the last patient left out, in silence
    other = np.zeros((80, 120), np.uint8)
    other[5:25, 10:20] = 255
    Image.fromarray(other).save(tmp_path / "mask2.png")
    text = _manifest(
        tmp_path, [*rows, {**rows[0], "patient_id": "C", "bmode": own[2], "bmode_mask": "mask2.png"}]
    ).read_text()
    head, a, b, c = text.splitlines()
    (tmp_path / "m.csv").write_text(f'{head},note\n,,,,,,\n{a},"two\nlines"\n,,,,,,\n\n{b},\n{c},\n')
    crop_to_lesion(tmp_path / "m.csv", tmp_path / "sub" / "gaps.csv", margin=0.5)
    copy = M.read_manifest(tmp_path / "sub" / "gaps.csv")
    boxes = {p.patient_id: p.image_options("bmode").crop for p in copy.patients}
    assert boxes == {"A": Box(25, 10, 85, 70), "B": Box(25, 10, 85, 70), "C": Box(0, 0, 40, 40)}, boxes
    assert "lesion crop(s)" not in capsys.readouterr().err  # (crops of 40 pixels and more)
    # a speck of a mask: its few pixels' crop written, and warned of (stop 88's trial: a 3x3 crop unsaid)
    speck = np.zeros((80, 120), np.uint8)
    speck[40:42, 60:63] = 255
    Image.fromarray(speck).save(tmp_path / "speck.png")
    crop_to_lesion(_manifest(tmp_path, [rows[0], {**rows[1], "bmode_mask": "speck.png"}]), tmp_path / "sub" / "s.csv")
    said = capsys.readouterr().err
    assert "1 lesion crop(s) under 32 pixels on a side (the smallest 4x4, row 2 (B), bmode)" in said, said
    # no mask to crop to: said, and no copy written (the trial of 8f1f25d: exit 0, "0 cropped")
    bare = _manifest(tmp_path, [{**r, "bmode_mask": ""} for r in rows])
    with pytest.raises(ValueError, match="no row has a lesion mask"):
        crop_to_lesion(bare, tmp_path / "bare.csv")
    assert not (tmp_path / "bare.csv").exists()


def _ddti_case(root, case, tirads, svg, size=(60, 40)):
    picture = np.full((size[1], size[0], 3), 90, np.uint8)
    picture[: size[1] // 2] = 140 + case  # some contrast (a constant still is blank_image), each case its own
    Image.fromarray(picture).save(root / "images" / f"{case}_1.jpg")
    (root / "xml" / f"{case}.xml").write_text(
        f"<case><number>{case}</number><tirads>{tirads}</tirads><mark><image>1</image><svg>{svg}</svg></mark></case>"
    )


def test_convert_ddti_rasterises_outlines_and_names_what_it_leaves_out(tmp_path):
    from lnm_jax.data.cohorts.ddti import convert_ddti

    src = tmp_path / "ddti"
    (src / "images").mkdir(parents=True)
    (src / "xml").mkdir()
    square = '[{"points": [{"x": 10, "y": 5}, {"x": 29, "y": 5}, {"x": 29, "y": 24}, {"x": 10, "y": 24}]}]'
    _ddti_case(src, 1, "4a", square)
    _ddti_case(src, 2, "3", square)
    _ddti_case(src, 3, "", square)  # no TI-RADS: left out
    _ddti_case(src, 4, "5", square[:40])  # an outline cut off, as in the release: left out, named
    _ddti_case(src, 5, "4b", square)  # case 1's picture under another case, as in the release: left out
    outside = square.replace('"x": 10', '"x": 99910').replace('"x": 29', '"x": 99929')  # (helper-55's trial)
    _ddti_case(src, 6, "4a", outside)  # an outline off its image: no pixel enclosed, left out, named
    shutil.copyfile(src / "images" / "1_1.jpg", src / "images" / "5_1.jpg")
    shutil.copyfile(src / "images" / "2_1.jpg", src / "images" / "2_2.jpg")  # a second image of a case: counted
    summary = convert_ddti(src, tmp_path / "out" / "manifest.csv")
    assert summary["other_images_of_a_case"] == 1
    assert (summary["patients"], summary["no_tirads"], summary["bad_outline"], summary["repeated_image"]) == (
        2,
        1,
        2,
        1,
    )
    assert summary["skipped"] == [
        # said in plain words (helper-54's trial: JSONDecodeError's, "Expecting ',' delimiter: line 1 column 41")
        "4.xml (image 1's outline is not a polygon list: its JSON text (40 characters) stops mid-outline: cut off)",
        "5.xml (image 5_1.jpg is the same picture as 1.xml's)",
        "6.xml (image 1's outline encloses no pixel of its 60x40 image)",
    ], summary["skipped"]
    cohort = M.read_manifest(tmp_path / "out" / "manifest.csv")
    assert [p.lnm for p in cohort.patients] == [1, 0]
    lesion = np.asarray(Image.open(cohort.patients[0].mask("bmode"))) > 0
    assert lesion.shape == (40, 60) and lesion[5:25, 10:30].all() and lesion.sum() == 400  # the filled 20x20 square
    # run again: the masks folder it wrote is named as such (it had been "--out .../masks", an option
    # never given), and --overwrite replaces it with the manifest (it had been refused either way);
    # a folder of other files there is never replaced
    from lnm_jax.fileio import OutputPathError

    with pytest.raises(OutputPathError, match=r"^--out's masks folder .*masks holds an earlier convert-ddti's masks"):
        convert_ddti(src, tmp_path / "out" / "manifest.csv")
    (tmp_path / "out" / "masks" / "ddti_9.png").write_bytes(b"a mask of a case no longer converted")
    assert convert_ddti(src, tmp_path / "out" / "manifest.csv", overwrite=True)["patients"] == 2
    assert sorted(f.name for f in (tmp_path / "out" / "masks").iterdir()) == ["ddti_1.png", "ddti_2.png"]
    (tmp_path / "out" / "masks" / "notes.txt").write_text("mine")
    with pytest.raises(OutputPathError, match=r"masks folder .*masks is an existing folder this command did not"):
        convert_ddti(src, tmp_path / "out" / "manifest.csv", overwrite=True)
    assert (tmp_path / "out" / "masks" / "notes.txt").read_text() == "mine"
    # every case that refuses the folder at once, and nothing written (it had stopped at the first)
    (src / "xml" / "7.xml").write_text("<case><tirads>4a</tirads><mark>")
    _ddti_case(src, 8, "4a", square)
    (src / "images" / "8_1.jpg").unlink()
    _ddti_case(src, 9, "seven", square)  # a score that is none (helper-58: counted as unscored, unsaid)
    with pytest.raises(ValueError) as e:
        convert_ddti(src, tmp_path / "again" / "manifest.csv")
    said = str(e.value).splitlines()
    assert said[0] == f"3 refused cases in {src}:" and said[1].startswith(
        f"  {src / 'xml' / '7.xml'}: not readable XML"
    )
    assert said[2] == f"  {src / 'xml' / '8.xml'}: image {src / 'images' / '8_1.jpg'} does not exist", said
    assert said[3].startswith(f"  {src / 'xml' / '9.xml'}: TI-RADS 'seven' is not a TI-RADS category (1, 2, 3, 4"), said
    assert not (tmp_path / "again").exists()  # not even the --out folder it made (helper-58)


def test_a_lesion_outside_the_field_of_view_is_refused_before_training(tmp_path):
    """With ``data.field_of_view_mm``, a picture larger than the field of view is centre-cropped
    to the model's square: a lesion outside that square had passed validation, then ``evaluate``
    and ``gradcam`` failed on it naming nobody ("the lesion mask is empty at the model's
    resolution", no eval_best written; helper-80). The survey that validate and Run.create run
    names the row and mask; a lesion at the centre passes."""
    from lnm_jax.data.cohorts.survey import survey

    _image_and_mask(tmp_path)  # 120x80 px at 0.2 mm: 24 x 16 mm; at 8 mm the central 40x40 px are kept
    (tmp_path / "c").mkdir()
    _, corner = _image_and_mask(tmp_path / "c", box=(2, 2, 12, 10))  # a lesion in the top-left corner
    own = iter(own_pictures(tmp_path / "img.png", 2))
    base = {"ceus": "", "us_lnm": "1", "bmode_mm_per_pixel": "0.2"}
    rows = [
        {"patient_id": "A", "bmode": next(own), **base, "lnm": 1, "bmode_mask": "mask.png"},
        {"patient_id": "B", "bmode": next(own), **base, "lnm": 0, "bmode_mask": str(corner)},
    ]
    cohort = M.read_manifest(_manifest(tmp_path, rows, extra=("bmode_mask", "bmode_mm_per_pixel")))
    fine = survey(cohort, Framing(field_of_view_mm=24.0), screens=False, image_size=32)  # the whole width
    assert fine.problems == []
    cut = survey(cohort, Framing(field_of_view_mm=8.0), screens=False, image_size=32)
    assert len(cut.problems) == 1 and "leaves none of the lesion of 1 mask(s)" in cut.problems[0], cut.problems
    assert "(B) bmode" in cut.problems[0] and "mask mask.png" in cut.problems[0], cut.problems
    # the square kept at 8 mm holds none of the corner lesion, as the framed mask says
    kept = decode_mask(
        corner, tmp_path / "img.png", "bmode", size=32, options=cohort.patients[1].image_options("bmode")
    )
    assert kept.max() > 0  # the whole picture (no field of view) holds it
    framed = decode_mask(
        corner,
        tmp_path / "img.png",
        "bmode",
        size=32,
        options=cohort.patients[1].image_options("bmode"),
        framing=Framing(field_of_view_mm=8.0),
    )
    assert framed.max() == 0.0


def _with_orientation(src, dst, orientation):
    """``src`` (a PNG) saved at ``dst`` with its pixels as they are and EXIF ``orientation``."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    with Image.open(src) as im:
        im.save(dst, exif=exif)
    return dst


def test_a_mask_and_its_image_turned_by_different_exif_orientations_are_refused_where_ambiguous(tmp_path):
    """helper-80: an image stored turned 180 degrees (EXIF Orientation 3) with a mask of the stored
    pixels (no EXIF, as a tool that ignores it saves one) read with its lesion mirrored through the
    centre, and validate said OK. Whether such a mask was drawn on the picture as shown or as
    stored cannot be told where the turn keeps the size: refused, naming both orientations. A
    quarter turn (EXIF 6) tells them apart by size: an upright mask of the picture as shown is
    read; one of the stored pixels is a size mismatch saying it would fit turned as its image.
    The same orientation on both reads alike, the mask on the image's lesion."""
    img, mask = _image_and_mask(tmp_path)  # 120x80, a lesion at x 40-70, y 30-50
    turned = _with_orientation(img, tmp_path / "img3.png", 3)
    quarter = _with_orientation(img, tmp_path / "img6.png", 6)
    both = _with_orientation(mask, tmp_path / "mask3.png", 3)
    with Image.open(mask) as m:  # the picture as EXIF 6 shows it: 80x120, its mask drawn there
        m.transpose(Image.Transpose.ROTATE_270).save(tmp_path / "mask6_shown.png")
    base = {"ceus": "", "us_lnm": "1"}
    rows = [
        {"patient_id": "A", "bmode": str(turned), **base, "lnm": 1, "bmode_mask": str(mask)},  # ambiguous
        {"patient_id": "B", "bmode": str(quarter), **base, "lnm": 0, "bmode_mask": str(mask)},  # the stored pixels
    ]
    with pytest.raises(M.ManifestError) as e:
        M.read_manifest(_manifest(tmp_path, rows))
    said = {p.row: (p.code, p.message) for p in e.value.problems}
    assert said[1][0] == M.MASK_ORIENTATION_MISMATCH, said
    assert said[1][1].startswith(
        "its image is shown turned 180 degrees (EXIF Orientation 3), the mask not turned: whether the mask was drawn"
    ), said[1][1]
    assert said[2][0] == M.MASK_SIZE_MISMATCH and said[2][1] == (
        "mask is 120x80, its image 80x120 (its image is shown turned 90 degrees clockwise (EXIF Orientation 6), the "
        "mask not turned: turned as its image, it would fit; save it so)"
    ), said[2]
    good = [
        {"patient_id": "C", "bmode": str(turned), **base, "lnm": 1, "bmode_mask": str(both)},
        {"patient_id": "D", "bmode": str(quarter), **base, "lnm": 0, "bmode_mask": str(tmp_path / "mask6_shown.png")},
    ]
    cohort = M.read_manifest(_manifest(tmp_path, good))
    for p in cohort.patients:  # the framed mask on the framed image's bright lesion
        x = decode_input(p.bmode, "bmode", size=32, patient_id=p.patient_id)[..., 0]
        m = decode_mask(p.mask("bmode"), p.bmode, "bmode", size=32)
        inside = np.clip((x - 20 / 255) / (210 / 255), 0, 1)
        np.testing.assert_allclose(inside, m, atol=1e-5)
