"""Manifest validation: every bad input gets its own named problem; nothing is written."""

from __future__ import annotations

import codecs
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lnm_jax.cli import main
from lnm_jax.data.cohorts import manifest as mf
from lnm_jax.data.cohorts.manifest import ManifestError, read_manifest

HEADER = "patient_id,bmode,ceus,us_lnm,lnm,age\n"


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "cohort"
    (root / "img").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in ("a", "b", "c", "d"):
        Image.fromarray(rng.integers(0, 255, (20, 30), np.uint8), "L").save(root / "img" / f"{name}.png")
        Image.fromarray(rng.integers(0, 255, (25, 20, 3), np.uint8), "RGB").save(root / "img" / f"{name}.jpg")
    return root


def _pictures(folder: Path, n: int) -> None:
    """img/q0.png, img/q0.jpg ... of ``n`` patients: each their own pictures (one picture for two
    patients is refused, shared_image)."""
    rng = np.random.default_rng(1)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (20, 30), np.uint8), "L").save(folder / "img" / f"q{i}.png")
        Image.fromarray(rng.integers(0, 255, (25, 20, 3), np.uint8), "RGB").save(folder / "img" / f"q{i}.jpg")


def _write(folder: Path, body: str, header: str = HEADER) -> Path:
    path = folder / "manifest.csv"
    path.write_text(header + body)
    return path


GOOD = "P1,img/a.png,img/a.jpg,1,1,40\nP2,img/b.png,img/b.jpg,0,0,51\nP3,img/c.png,,,1,33\nP4,,img/d.jpg,0,0,62\n"


def test_good_manifest_reads_with_availability_and_metadata(folder):
    cohort = read_manifest(_write(folder, GOOD))
    assert cohort.ids == ["P1", "P2", "P3", "P4"]
    assert cohort.labels == [1, 0, 1, 0]
    assert cohort.availability() == {"bmode": 3, "ceus": 3, "us_lnm": 3}
    assert cohort.metadata_columns == ("age",)
    assert cohort.patients[2].ceus is None and cohort.patients[2].us_lnm is None
    assert cohort.patients[0].metadata == {"age": "40"}
    assert cohort.patients[0].bmode == folder / "img" / "a.png"


def test_a_spreadsheets_export_reads_as_written(folder):
    """A spreadsheet's blank rows (',,,,,' where a row had formatting) are passed over, as csv
    passes over an empty line, where each had been three problems (no inputs, empty patient_id,
    empty lnm); the later rows keep their numbers. A 0/1 column written as floats (pandas writes
    a column with an empty cell so: 1.0) reads as 0/1; other values stay refused."""
    body = "P1,img/a.png,img/a.jpg,1.0,1.0,40\n,,,,,\nP2,img/b.png,img/b.jpg,0.0,0,51\n , ,\nP3,img/c.png,,,1.00,33\n"
    cohort = read_manifest(_write(folder, body + ",,,,,\n,,,,,\n"))
    assert cohort.ids == ["P1", "P2", "P3"] and [p.row for p in cohort.patients] == [1, 3, 5]
    assert cohort.labels == [1, 0, 1] and [p.us_lnm for p in cohort.patients] == [1, 0, None]
    for bad in ("1.5", "01", "1e0", "2.0", "-0", "0.", "1.0.0"):
        problems = _codes(_write(folder, body.replace("P2,img/b.png,img/b.jpg,0.0", f"P2,img/b.png,img/b.jpg,{bad}")))
        assert [(p.code, p.row) for p in problems] == [(mf.BAD_FLAG_VALUE, 3)], bad
    assert [p.code for p in _codes(_write(folder, ",,,,,\n , \n"))] == [mf.EMPTY_COHORT]
    # a row's number is its line less the header's, empty lines counted (they had shifted the
    # rows after them: the trial of 7a5e1c4)
    problems = _codes(_write(folder, "P1,img/a.png,img/a.jpg,1,1,40\n\n\n\nP2,img/b.png,img/b.jpg,0,x,51\n"))
    assert [(p.code, p.row) for p in problems] == [(mf.BAD_LABEL_VALUE, 5)]
    # a row whose quoted cell holds line breaks is numbered by its first line (it had been its last)
    notes = 'P1,img/a.png,img/a.jpg,1,x,"seen twice\nsecond line\r\nthird"\n\nP2,img/b.png,img/b.jpg,0,y,51\n'
    said = [(p.code, p.row) for p in _codes(_write(folder, notes))]
    assert said == [(mf.BAD_LABEL_VALUE, 1), (mf.BAD_LABEL_VALUE, 5)]
    # empty lines before the header, and spaces around its names: the header is the first line
    # that is not empty (it had been read as a header of no columns: every column missing)
    cohort = read_manifest(_write(folder, GOOD, "\n\n" + HEADER.replace(",", " , ")))
    assert cohort.ids == ["P1", "P2", "P3", "P4"] and [p.row for p in cohort.patients] == [3, 4, 5, 6]
    assert cohort.labels == [1, 0, 1, 0] and cohort.metadata_columns == ("age",)
    # a blank line of spaces or of empty cells before it, and a spreadsheet's unnamed empty
    # columns at its end (trial of 169449f: read as the header, or as columns unnamed twice)
    for before in ("   \n", ",,,,,,\n", "\n , ,\n"):
        rows = GOOD.replace("\n", ",,\n")
        cohort = read_manifest(_write(folder, rows, before + HEADER.replace("\n", ",,\n")))
        assert cohort.ids == ["P1", "P2", "P3", "P4"] and cohort.metadata_columns == ("age",), before
    said = [
        (p.code, p.row)
        for p in _codes(
            _write(
                folder,
                GOOD.replace("P2,img/b.png,img/b.jpg,0,0,51", "P2,img/b.png,img/b.jpg,0,0,51,,x"),
                HEADER.replace("\n", ",,\n"),
            )
        )
    ]
    assert said == [(mf.DUPLICATE_COLUMN, None)]  # a filled cell under them: the columns are said


def test_a_manifest_named_through_a_link_says_where_its_files_are(folder, tmp_path):
    """A manifest named through a symbolic link in another folder: its relative paths are read
    from the link's folder, and each missing file that lies beside the link's target is said so
    (helper-84: every file 'does not exist', unexplained)."""
    (tmp_path / "elsewhere").mkdir()
    link = tmp_path / "elsewhere" / "m.csv"
    link.symlink_to(_write(folder, GOOD))
    problems = [p for p in _codes(link) if p.code == mf.MISSING_FILE]
    assert len(problems) == 6, problems
    assert all(f"{folder / 'img'}/" in p.message and "beside the target of the link" in p.message for p in problems), (
        problems
    )
    assert read_manifest(folder / "manifest.csv").patients  # named itself, it reads


def test_a_missing_file_is_said_with_the_one_a_manifest_from_another_system_means(folder):
    """A hospital's manifest written on Windows, or its files converted: each missing file is
    said with the file it likely means (Windows separators, names that differ in case only, a
    drive letter, another extension), and only where one file is meant."""
    Image.fromarray(np.zeros((20, 30), np.uint8) + 9, "L").save(folder / "img" / "e.png")
    decomposed = "cafe\u0301.png"  # as macOS stores a name; the manifest spells it composed (helper-84)
    Image.fromarray(np.zeros((20, 30), np.uint8) + 19, "L").save(folder / "img" / decomposed)
    rows = ("img\\e.png", "IMG/E.PNG", "C:\\scans\\e.png", "img/e.jpg", "img/a.gif", "img\\zz.png", "img/zz.png")
    rows += ("C:\\data\\img\\e.png", "img\\E.png", "c:img/e.png", "img/caf\u00e9.png")
    body = "".join(f"P{i},{b},img/a.jpg,{i % 2},{i % 2},40\n" for i, b in enumerate(rows))
    path = folder / "manifest.csv"
    path.write_text(HEADER + body, encoding="utf-8")
    said = {p.row: p.message for p in _codes(path) if p.code == mf.MISSING_FILE}
    img = folder / "img"
    assert said == {
        1: f"image file does not exist; {img}/e.png does: write the path with '/' (Windows separators, '\\', are "
        "part of a name here)",
        2: f"image file does not exist; {img}/e.png does: the names differ in case, which this file system tells apart",
        3: "image file does not exist; a Windows path (drive letter): give it relative to the manifest, with '/', or "
        "as this machine's",
        4: f"image file does not exist; {img}/e.png does: another extension",
        5: "image file does not exist",  # a.png and a.jpg: which is meant cannot be told
        6: "image file does not exist; its '\\' are part of a name here: write the path with '/'",
        7: "image file does not exist",
        # (the trial of 9b0e6d1: the file a drive letter's path means, and the case under '\\', were not named)
        8: f"image file does not exist; a Windows path (drive letter): {img}/e.png does: give it relative to the "
        "manifest, with '/'",
        9: f"image file does not exist; {img}/e.png does (the names differ in case, which this file system tells "
        "apart): write the path with '/' (Windows separators, '\\', are part of a name here)",
        10: f"image file does not exist; a Windows path (drive letter): {img}/e.png does: give it relative to the "
        "manifest, with '/'",
        11: f"image file does not exist; {img}/{decomposed} does: the names differ in their Unicode form (an accented "
        "letter as one character or as a letter and an accent, as macOS stores names), which this file system tells "
        "apart",
    }, said


def _codes(path: Path, **kw) -> list[mf.Problem]:
    with pytest.raises(ManifestError) as ei:
        read_manifest(path, **kw)
    return list(ei.value.problems)


@pytest.mark.parametrize(
    "body,code,row,column",
    [
        ("P1,img/zz.png,img/a.jpg,1,1,1\nP2,img/b.png,img/b.jpg,0,0,1\n", mf.MISSING_FILE, 1, "bmode"),
        ("P1,img/a.png,img/a.jpg,2,1,1\nP2,img/b.png,img/b.jpg,0,0,1\n", mf.BAD_FLAG_VALUE, 1, "us_lnm"),
        ("P1,img/a.png,img/a.jpg,1,yes,1\nP2,img/b.png,img/b.jpg,0,0,1\n", mf.BAD_LABEL_VALUE, 1, "lnm"),
        ("P1,img/a.png,img/a.jpg,1,,1\nP2,img/b.png,img/b.jpg,0,0,1\n", mf.BAD_LABEL_VALUE, 1, "lnm"),
        ("P1,img/a.png,img/a.jpg,1,1,1\nP1,img/b.png,img/b.jpg,0,0,1\n", mf.DUPLICATE_PATIENT_ID, 2, "patient_id"),
        # IDs apart by letter case alone: one patient twice, or one file name on macOS (helper-83)
        ("Pa1,img/a.png,img/a.jpg,1,1,1\npA1,img/b.png,img/b.jpg,0,0,1\n", mf.DUPLICATE_PATIENT_ID, 2, "patient_id"),
        (",img/a.png,img/a.jpg,1,1,1\nP2,img/b.png,img/b.jpg,0,0,1\n", mf.EMPTY_PATIENT_ID, 1, "patient_id"),
        ("P1,,,,1,1\nP2,img/b.png,img/b.jpg,0,0,1\n", mf.NO_INPUTS, 1, None),
        ("P1,img/a.png,img/a.jpg,1,1,1\nP2,img/b.png,img/b.jpg,0,1,1\n", mf.MISSING_CLASS, None, "lnm"),
        ("", mf.EMPTY_COHORT, None, None),
    ],
)
def test_each_bad_input_has_its_own_named_problem(folder, body, code, row, column):
    problems = _codes(_write(folder, body))
    assert [p.code for p in problems] == [code]
    assert problems[0].row == row and problems[0].column == column


def test_unreadable_and_non_image_files(folder):
    (folder / "img" / "notes.png").write_text("this is not an image")
    data = (folder / "img" / "a.png").read_bytes()
    (folder / "img" / "truncated.png").write_bytes(data[: len(data) // 2])
    Image.new("RGB", (8, 8)).save(folder / "img" / "pic.bmp")
    body = "P1,img/notes.png,img/a.jpg,1,1,1\nP2,img/truncated.png,img/b.jpg,0,0,1\nP3,img/c.png,img/pic.bmp,0,0,1\n"
    problems = _codes(_write(folder, body))
    assert [(p.code, p.row, p.column) for p in problems] == [
        (mf.UNREADABLE_IMAGE, 1, "bmode"),
        (mf.UNREADABLE_IMAGE, 2, "bmode"),
        (mf.UNREADABLE_IMAGE, 3, "ceus"),
    ]
    assert problems[0].file.endswith("notes.png") and "takes PNG and JPEG" in problems[2].message


def test_missing_columns_are_named(folder):
    """With the rows' problems (a manifest is mended in one pass), but not one per row for the
    missing columns' cells: a missing lnm column is not also 'no patient has lnm=0'."""
    problems = _codes(_write(folder, "P1,img/a.png,1\nP2,img/zz.png,1\n", header="patient_id,bmode,lnm\n"))
    assert [(p.code, p.row, p.column) for p in problems] == [
        (mf.MISSING_COLUMN, None, "ceus"),
        (mf.MISSING_COLUMN, None, "us_lnm"),
        (mf.MISSING_FILE, 2, "bmode"),
        (mf.MISSING_CLASS, None, "lnm"),
    ]
    problems = _codes(_write(folder, "P1,img/a.png,img/a.jpg,1\n", header="patient_id,bmode,ceus,us_lnm\n"))
    assert [(p.code, p.column) for p in problems] == [(mf.MISSING_COLUMN, "lnm")]
    # a missing image column: its mask and framing cells are not each said to lack an image (the
    # trial of 9b0e6d1: 20 mask_without_image lines under one missing_column)
    body = 'P1,img/a.png,img/a.png,1,1,"0,0,4,4"\nP2,img/b.png,img/b.png,0,0,\n'
    problems = _codes(_write(folder, body, header="patient_id,bmode,ceus_mask,us_lnm,lnm,ceus_crop\n"))
    assert [(p.code, p.column) for p in problems] == [(mf.MISSING_COLUMN, "ceus")], problems
    # a mask column in another spelling beside no image column: not said to be checked
    problems = _codes(_write(folder, body, header="patient_id,bmode,CEUS Mask,us_lnm,lnm,ceus_crop\n"))
    assert problems[0].message == "would be read as metadata, not as 'ceus_mask': name it 'ceus_mask'", problems


def test_missing_manifest_file(tmp_path):
    assert [p.code for p in _codes(tmp_path / "nope.csv")] == [mf.UNREADABLE_MANIFEST]


def test_a_table_is_read_in_the_encoding_it_says_or_refused_on_its_line(folder):
    """UTF-16 and UTF-32 with their byte-order mark (Excel's "Unicode Text") read as the UTF-8
    manifest; text that is not UTF-8 (a Windows-1252 export of an accented path), UTF-16 without
    its mark (it decodes as UTF-8 with a NUL between letters: every column had been missing)
    and a workbook given for its CSV are refused in one line naming the line and the remedy."""
    (folder / "img" / "a.png").rename(folder / "img" / "é.png")
    text = HEADER + GOOD.replace("img/a.png", "img/é.png")
    path = folder / "manifest.csv"
    path.write_text(text, encoding="utf-8")
    want = read_manifest(path)
    for codec in ("utf-8-sig", "utf-16", "utf-16-be", "utf-32"):
        path.write_bytes((b"\xfe\xff" if codec == "utf-16-be" else b"") + text.encode(codec))
        got = read_manifest(path)
        assert [(p.patient_id, p.bmode, p.ceus, p.us_lnm, p.lnm) for p in got.patients] == [
            (p.patient_id, p.bmode, p.ceus, p.us_lnm, p.lnm) for p in want.patients
        ], codec
    cases = {
        text.encode("cp1252"): "line 2: byte 0xe9 is not UTF-8 ('P1,img/\ufffd.png",
        text.encode("utf-16-le"): "line 1: holds a NUL byte",
        b"PK\x03\x04" + bytes(60): "the file is an Excel workbook (.xlsx, .ods)",
        b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(60): "the file is an Excel 97-2003 workbook (.xls)",
        codecs.BOM_UTF16_LE + b"p\x00\x00\xdc": "line 1: begins with UTF-16's byte-order mark, but bytes",
        # the trials of ea14f9a: a NUL in marked text (it had reached a path as "embedded null
        # byte"), a Mac export's CR line ends (the bad byte had been said on line 1), no text at all
        text.replace("img/b.png", "img/b\0.png").encode("utf-16"): "line 3: holds a NUL character",
        text.replace("\n", "\r").encode("cp1252"): "line 2: byte 0xe9 is not UTF-8 ('P1,img/\ufffd.png",
        b"\x1f\x8b\x08" + bytes(60): "the file is gzip-compressed",
        b"%PDF-1.7\n\xe2\xe3": "the file is a PDF document",
        b"": "the file is empty",
        codecs.BOM_UTF8: "the file is empty",
        codecs.BOM_UTF16_LE + " \r\n".encode("utf-16-le"): "the file is empty",
    }
    for raw, said in cases.items():
        path.write_bytes(raw)
        (problem,) = _codes(path)
        assert problem.code == mf.UNREADABLE_MANIFEST and problem.message.startswith(said), problem
        assert "CSV UTF-8" in problem.message or problem.message == "the file is empty: no header, no rows"
    # Excel's "Unicode Text" is tab-separated: read, then said so
    path.write_text(text.replace(",", "\t"), encoding="utf-16")
    (problem,) = _codes(path)
    assert problem.code == mf.WRONG_DELIMITER and "'\\t'" in problem.message, problem
    # Excel's "sep=," line above the header is its directive, not the header (127 problems had
    # been said); a "sep=;" one leaves the semicolons to be said
    path.write_text("sep=,\n" + text, encoding="utf-8")
    assert [p.patient_id for p in read_manifest(path).patients] == want.ids
    path.write_text("sep=;\n" + text.replace(",", ";"), encoding="utf-8")
    (problem,) = _codes(path)
    assert problem.code == mf.WRONG_DELIMITER and "'patient_id;bmode;" in problem.message, problem


def test_a_hand_edited_spreadsheet_export_is_read_as_meant_or_refused_on_its_line(folder):
    """helper-106's exports: a quote left open in a cell (csv reads on to the next quote, so
    the rows between became one patient's metadata and validate passed 36 of 40 patients; past
    csv's cell limit it had been a traceback), a title row above the header (said as six unnamed
    columns), header names holding invisible characters (said missing, the character unnamed),
    a web page or XML saved as .xls, an MS-DOS end-of-file marker, a header's trailing comma over
    one row's note (every other row said short), a ``file:`` URI for a path."""
    path = folder / "manifest.csv"

    def said(text: str) -> mf.Problem:
        path.write_text(text, encoding="utf-8")
        (problem,) = _codes(path)
        return problem

    stray = GOOD.replace(",51\n", ',"51\n').replace(",33\n", ',33"\n')  # P2's quote closes in P3's row
    problem = said(HEADER + stray)
    assert problem.code == mf.UNREADABLE_MANIFEST and problem.message.startswith(
        "line 3, column 'age': a quoted cell begins here and runs over 1 more line(s), 1 of which read as this "
        "table's rows ('P3,img/c.png,,,1,33')"
    ), problem
    problem = said(HEADER + GOOD.replace(",62\n", ',"62\n'))  # the last row's quote never closes
    assert problem.message.startswith("line 5: a quoted cell begins in this row and never closes"), problem
    rows = "".join(f"Q{i},img/q{i}.png,img/q{i}.jpg,0,1,{i}\n" for i in range(4000))  # > csv's 131,072 characters
    problem = said(HEADER + GOOD.replace(",40\n", ',"40\n') + rows)
    assert problem.message.startswith("line 2: the row beginning here cannot be read (field larger than"), problem
    # a quoted cell over lines that are not rows is a cell (a comment written over lines), however
    # many commas they hold (helper-108: 5 commas in a 6-column manifest had been refused)
    note = "Nodule, left lobe.\nsolid, hypoechoic, irregular margin, microcalcifications, taller-than-wide, TI-RADS 5"
    with_note = HEADER.replace("age", "age,note") + GOOD.replace("\n", ",\n").replace(",40,\n", f',40,"{note}"\n')
    path.write_text(with_note)
    assert read_manifest(path).patients[0].metadata["note"] == note
    # every cell quoted: a quote left open closes at the next row's first quote, and text follows
    # it (helper-108: that row's cells had been the open row's, a patient lost)
    quoted = "\n".join(",".join(f'"{c}"' for c in r.split(",")) for r in (HEADER + GOOD).splitlines()) + "\n"
    problem = said(quoted.replace('"51"\n', '"51\n'))
    assert problem.message.startswith(
        "line 4 (in the row that begins on line 3): text follows a quoted cell's closing quote"
    ), problem

    problem = said("Thyroid cohort export 2024-05-01,,,,,\n" + HEADER + GOOD)
    assert problem.code == mf.MISSING_COLUMN and problem.message.startswith(
        "the header ('patient_id,bmode,ceus,us_lnm,lnm,age') is on line 2, below line(s) that are no manifest's "
        "(line 1: 'Thyroid cohort export 2024-05-01,,,,,'): delete the lines above the header"
    ), problem
    for header, char in (
        ("\ufeff" + HEADER, "U+FEFF (ZERO WIDTH NO-BREAK SPACE)"),
        (HEADER.replace(",lnm,", ",lnm\u200b,"), "U+200B (ZERO WIDTH SPACE)"),
    ):
        path.write_text(header + GOOD, encoding="utf-8-sig")  # a second byte-order mark, as re-saving adds one
        (problem,) = [p for p in _codes(path) if p.code == mf.MISNAMED_COLUMN]
        assert f"(it holds the invisible {char})" in problem.message, problem

    pages = {"<html><body><table><tr><td>patient_id</td></tr></table>": "the file is a web page (HTML)"}
    pages['<?xml version="1.0"?>\n<Workbook xmlns="urn:schemas-microsoft-com:office:spreadsheet">'] = "the file is XML"
    for page, start in pages.items():
        problem = said(page)
        assert problem.code == mf.UNREADABLE_MANIFEST and problem.message.startswith(start), problem

    want = [
        (p.patient_id, p.bmode, p.ceus, p.us_lnm, p.lnm, p.metadata)
        for p in read_manifest(_write(folder, GOOD)).patients
    ]
    path.write_text(HEADER + GOOD + "\x1a")  # an MS-DOS end-of-file marker
    assert [(p.patient_id, p.bmode, p.ceus, p.us_lnm, p.lnm, p.metadata) for p in read_manifest(path).patients] == want
    path.write_text(HEADER.replace("\n", ",\n") + GOOD.replace(",40\n", ",40,note\n"))  # one row's note, unnamed
    got = read_manifest(path)
    assert [(p.patient_id, p.bmode, p.ceus, p.us_lnm, p.lnm, p.metadata["age"]) for p in got.patients] == [
        (*w[:5], w[5]["age"]) for w in want
    ]
    assert got.patients[0].metadata[""] == "note"

    (problem,) = [p for p in _codes(_write(folder, GOOD.replace("img/a.png", f"file://{folder}/img/a%20.png")))]
    assert problem.message.endswith(f"a 'file:' URI, not a path: write the path itself ({folder}/img/a .png)"), problem


def test_every_problem_is_reported_at_once(folder):
    body = "P1,img/zz.png,img/a.jpg,7,1,1\nP1,img/b.png,img/b.jpg,0,x,1\n"
    problems = _codes(_write(folder, body))
    assert {p.code for p in problems} == {
        mf.MISSING_FILE,
        mf.BAD_FLAG_VALUE,
        mf.DUPLICATE_PATIENT_ID,
        mf.BAD_LABEL_VALUE,
    }
    text = str(ManifestError(folder / "manifest.csv", problems))
    assert "row 1" in text and "row 2" in text and "zz.png" in text
    assert text.splitlines()[0].endswith(f"manifest.csv: {len(problems)} problems:") and len(text.splitlines()) == 5
    # one problem is one line naming the file, the row and the column
    (one,) = [p for p in problems if p.code == mf.MISSING_FILE]
    one_line = str(ManifestError(folder / "manifest.csv", [one]))
    assert one_line == f"{folder / 'manifest.csv'}: 1 problem: {one}" and "\n" not in one_line and "zz.png" in one_line


def test_problems_come_in_row_order_on_any_number_of_threads(folder, monkeypatch):
    """Rows are checked on threads; the problems are listed as one thread lists them: by row,
    a row's patient_id first, then its cells from left to right."""
    (folder / "img" / "broken.png").write_bytes((folder / "img" / "a.png").read_bytes()[:60])
    _pictures(folder, 25)
    rows = [f"P{i},img/q{i}.png,img/q{i}.jpg,{i % 2},{i % 2},1" for i in range(1, 25)]
    rows[3] = "P4,img/broken.png,img/zz.jpg,1,1,1"  # row 4: an unreadable image and a missing one
    rows[9] = "P3,img/a.png,img/a.jpg,5,1,1"  # row 10: a duplicate id and a bad flag
    rows[20] = "P21,,,,1,1"  # row 21: no inputs
    path = _write(folder, "\n".join(rows) + "\n")
    monkeypatch.setattr(mf, "MAX_CHECK_THREADS", 1)
    one = [(p.row, p.column, p.code) for p in _codes(path)]
    monkeypatch.setattr(mf, "MAX_CHECK_THREADS", 8)
    assert (
        [(p.row, p.column, p.code) for p in _codes(path)]
        == one
        == [
            (4, "bmode", mf.UNREADABLE_IMAGE),
            (4, "ceus", mf.MISSING_FILE),
            (10, "patient_id", mf.DUPLICATE_PATIENT_ID),
            (10, "us_lnm", mf.BAD_FLAG_VALUE),
            (21, None, mf.NO_INPUTS),
        ]
    )


def test_a_refused_manifest_leaves_no_checking_thread_behind(folder, monkeypatch):
    """The rows' checks ran in a generator left suspended in read_manifest's frame, which the
    ManifestError kept alive: the garbage collector closed it later on whichever thread it ran,
    joining the pool's threads from there, and a suite run hung where that thread was starting
    (it held a lock of threading's the joined threads needed). The pool is shut down before the
    error leaves read_manifest: no thread of it outlives the call."""
    import threading

    monkeypatch.setattr(mf, "cpus", lambda: 2)  # threads even on a one-CPU machine
    before = {t.ident for t in threading.enumerate()}
    with pytest.raises(ManifestError) as e:
        read_manifest(_write(folder, "".join(f"P{i},img/zz{i}.png,,1,{i % 2},1\n" for i in range(8))))
    assert len(e.value.problems) == 8
    assert [t.name for t in threading.enumerate() if t.ident not in before] == []


def test_labels_optional_for_new_patients(folder):
    cohort = read_manifest(
        _write(folder, "N1,img/a.png,img/a.jpg,1,\n", header="patient_id,bmode,ceus,us_lnm,lnm\n"), require_labels=False
    )
    assert cohort.labels == [None]


def _snapshot(root: Path) -> set[tuple[str, int]]:
    return {(str(p.relative_to(root)), p.stat().st_mtime_ns) for p in root.rglob("*")}


def _complete(folder: Path, n: int) -> str:
    """``n`` patients with every input (each their own, written to ``folder``), classes alternating."""
    _pictures(folder, n)
    return "".join(f"Q{i},img/q{i}.png,img/q{i}.jpg,{i % 2},{i % 2},50\n" for i in range(n))


def test_validate_command_exit_codes_and_writes_nothing(folder, capsys):
    good = _write(folder, _complete(folder, 20))
    before = _snapshot(folder)
    assert main(["validate", str(good), "--config", "lnm_jax/configs/paper_triple.py"]) == 0
    out = capsys.readouterr().out
    assert "OK, 20 patients" in out and "bmode+ceus+us_lnm: 20 patient(s)" in out and "train 12, val 4, test 4" in out
    assert _snapshot(folder) == before
    # 4 patients pass every manifest check, but cannot be split 8:2 with both classes per subset
    assert main(["validate", str(_write(folder, GOOD))]) == 1
    out = capsys.readouterr()
    assert "split: cannot make a stratified train/test split of 4 patients" in out.err
    assert out.out.startswith(f"{folder / 'manifest.csv'}: 4 patients, 2 positive") and "OK" not in out.out, out.out
    # new patients: no labels, no positives counted (helper-56: "0 positive" of an unlabelled cohort)
    unlabelled = _write(folder, "".join(f"Q{i},img/q{i}.png,img/q{i}.jpg,{i % 2},,50\n" for i in range(20)))
    assert main(["validate", str(unlabelled), "--no-labels"]) == 0
    assert "OK, 20 patients, no labels; available" in capsys.readouterr().out
    bad = _write(folder, "P1,img/zz.png,img/a.jpg,1,1,1\nP2,img/b.png,img/b.jpg,0,0,1\n")
    before = _snapshot(folder)
    assert main(["validate", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "missing_file" in err and "row 1" in err and "column 'bmode'" in err
    assert _snapshot(folder) == before
    # --manifest, as predict and norm-stats take it, names the same file; none or two differing: one line
    assert main(["validate", "--manifest", str(bad)]) == 1 and "missing_file" in capsys.readouterr().err
    for argv in (["validate"], ["validate", str(bad), "--manifest", str(folder / "other.csv")]):
        assert main(argv) == 2
        assert capsys.readouterr().err.strip().splitlines()[-1].startswith("lnm-jax validate: error: ")


def test_train_on_bad_manifest_fails_before_writing(folder, tmp_path_factory):
    bad = _write(folder, "P1,img/zz.png,img/a.jpg,1,1,1\nP2,img/b.png,img/b.jpg,0,0,1\n")
    workdir = tmp_path_factory.mktemp("runs") / "run"
    code = main(["train", "--workdir", str(workdir), f"--config.data.manifest={bad}"])
    assert code == 1
    assert not workdir.exists()


def test_manifest_copy_is_relocatable(folder, tmp_path):
    """Paths are relative to the CSV: moving the folder keeps the cohort valid."""
    _write(folder, GOOD)
    moved = tmp_path / "moved"
    shutil.copytree(folder, moved)
    assert read_manifest(moved / "manifest.csv").patients[0].bmode == moved / "img" / "a.png"


def test_one_cause_of_many_rows_is_said_once_with_its_folder(folder):
    """A folder above every row's file that is a file (an archive saved under the folder's name)
    is named with what it holds, and its rows' lines past :data:`mf.GROUPED_LINES` are one
    line of row numbers (helper-121: 160 rows had each said "cannot be opened ([Errno 20] Not a
    directory: ...)" of their own file, never naming the folder)."""
    n = 20
    _pictures(folder, n)
    shutil.make_archive(str(folder / "scans"), "zip", folder / "img")
    (folder / "scans.zip").rename(folder / "scans")  # the archive where the folder should be
    body = "".join(f"Q{i},scans/q{i}.png,img/q{i}.jpg,{i % 2},{i // 2 % 2},40\n" for i in range(n))
    with pytest.raises(ManifestError) as e:
        read_manifest(_write(folder, body))
    lines = str(e.value).splitlines()[1:]
    said = [x.strip() for x in lines if "column 'bmode'" in x]
    assert len(said) == 2, lines  # the first row in full, the other 19 on one line
    assert f"its folder {folder / 'scans'} is a file, not a folder (it holds a ZIP archive" in said[0], said
    assert said[1] == "[missing_file] rows 2-20, column 'bmode': as said for row 1", said
    assert {p.row for p in e.value.problems if p.column == "bmode"} == set(range(1, n + 1))  # each row's problem kept


def test_a_folder_this_user_may_not_enter_is_named(folder, monkeypatch):
    """A file under a folder the user may not enter is said of that folder, whatever the
    file (as root every folder can be entered: the refusal is simulated where it is raised)."""
    locked = folder / "img"
    real_resolve = Path.resolve

    def resolve(self, strict=False):
        if locked in self.parents:
            raise PermissionError(13, "Permission denied", str(self))
        return real_resolve(self, strict=strict)

    monkeypatch.setattr(Path, "resolve", resolve)
    monkeypatch.setattr(mf.os, "access", lambda p, mode: Path(p) != locked)
    said = mf.missing_path(locked / "a.png")
    assert said == f"cannot be opened: its folder {locked} may not be entered by this user (permission denied)"


def test_a_binary_column_written_in_words_is_refused_with_its_numbers(folder):
    """A US-LNM or label column of yes/no (true/false, positive/negative) is refused, never
    guessed at, each word said once with the number it stands for, the rows past
    :data:`mf.GROUPED_LINES` on one line; a value no word names keeps the plain line."""
    n = 12
    _pictures(folder, n)
    flags = ["Yes", "no"] * (n // 2)
    body = "".join(f"Q{i},img/q{i}.png,img/q{i}.jpg,{flags[i]},{i // 2 % 2},40\n" for i in range(n))
    body += "R1,img/a.png,img/a.jpg,maybe,positive,40\n"
    with pytest.raises(ManifestError) as e:
        read_manifest(_write(folder, body))
    said = [x.strip() for x in str(e.value).splitlines()[1:]]
    flag_lines = [x for x in said if x.startswith("[bad_flag_value]")]
    assert flag_lines == [
        "[bad_flag_value] row 1, column 'us_lnm': us_lnm must be 0, 1 or empty, got 'Yes': a word where a number is "
        "read (none is guessed at); write 1 for 'Yes' in this column",
        "[bad_flag_value] row 2, column 'us_lnm': us_lnm must be 0, 1 or empty, got 'no': a word where a number is "
        "read (none is guessed at); write 0 for 'no' in this column",
        "[bad_flag_value] row 3, column 'us_lnm': as said for row 1",
        *[f"[bad_flag_value] row {r}, column 'us_lnm': as said for row {2 - r % 2}" for r in range(4, n + 1)],
        "[bad_flag_value] row 13, column 'us_lnm': us_lnm must be 0, 1 or empty, got 'maybe'",
    ], flag_lines
    assert "[bad_label_value] row 13, column 'lnm': lnm must be 0 or 1, got 'positive': a word" in "\n".join(said)


def test_row_ranges_and_the_grouped_line():
    """Rows said on one line are written as runs, and a group of more than
    :data:`mf.GROUPED_LINES` later rows gives one line; up to it, one line each."""
    assert mf._row_ranges((9, 2, 3, 4, 7, 10)) == "2-4, 7, 9-10"
    words = "x" * mf.GROUPED_CHARS
    for later in (mf.GROUPED_LINES, mf.GROUPED_LINES + 1):
        problems = [mf.Problem("code", words, row=r, column="bmode", file=f"f{r}") for r in range(1, later + 2)]
        said = [str(p) for p in mf.grouped([*problems, mf.Problem("other", "y", row=1)])]
        rest = [f"[code] row {r}, column 'bmode', file 'f{r}': as said for row 1" for r in range(2, later + 2)]
        if later > mf.GROUPED_LINES:
            rest = [f"[code] rows 2-{later + 1}, column 'bmode': as said for row 1"]
        assert said == [str(problems[0]), *rest, "[other] row 1: y"], said


def test_a_folder_under_a_b_mode_pictures_name_is_said_as_a_folder(folder):
    """An empty folder named ``x.png`` as a patient's B-mode had been called "a still image, not
    a clip": it is said as a folder holding no frames; a folder of frames is still a clip."""
    (folder / "img" / "x.png").mkdir()
    (folder / "img" / "clip").mkdir()
    Image.fromarray(np.zeros((20, 30), np.uint8)).save(folder / "img" / "clip" / "f0.png")
    body = "P1,img/x.png,img/a.jpg,1,1,40\nP2,img/clip,img/b.jpg,0,0,51\n"
    with pytest.raises(ManifestError) as e:
        read_manifest(_write(folder, body))
    said = {p.row: p.message for p in e.value.problems if p.column == "bmode"}
    assert said == {
        1: "is a folder holding no .png/.jpg/.jpeg frames, not an image file: B-mode is a still image",
        2: "B-mode must be a still image, not a clip",
    }, said


def test_a_manifest_that_is_a_fifo_or_device_is_refused_unopened(tmp_path):
    """A manifest (or any table read as one) that is a FIFO blocked ``validate`` in its open, and
    ``/dev/zero`` would be read without end: refused in a line, never opened (a writer thread
    waits on the FIFO: an open would release it and be seen)."""
    import os
    import threading

    from lnm_jax.data.cohorts.tables import table_text

    fifo = tmp_path / "m.csv"
    os.mkfifo(fifo)
    opened, done = [], threading.Event()

    def writer():
        with open(fifo, "wb"):
            if not done.is_set():
                opened.append(1)

    threading.Thread(target=writer, daemon=True).start()
    for path in (fifo, Path("/dev/zero")):
        with pytest.raises(ManifestError, match="it is a FIFO, socket or device, not a file: save the table as a file"):
            read_manifest(path)
        with pytest.raises(OSError, match="it is a FIFO, socket or device, not a file"):
            table_text(path)
    done.set()
    os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))  # (releases the writer)
    assert opened == []


def test_a_cause_of_many_rows_in_short_words_or_each_rows_own_file_is_said_once(folder, capsys):
    """helper-123: a missing images folder gave a line per row and column (320 for 80 patients:
    its words, naming the folder, were under the length grouped), an empty label column 80,
    and a case mismatch ("x.PNG does") one per row, its words naming each row's own file.
    Past :data:`mf.GROUPED_LINES` later rows, any words are one line of rows; words that differ
    only by the row's own file name group "of its own file". An empty label says where
    unlabelled patients are read; a mark of a value not recorded is said as one, not guessed."""
    n = 14
    _pictures(folder, n)
    for i in range(n):  # every CEUS file named in another letter case than the manifest says
        (folder / "img" / f"q{i}.jpg").rename(folder / "img" / f"Q{i}.JPG")
    body = "".join(f"Q{i},gone/q{i}.png,img/q{i}.jpg,NA,,40\n" for i in range(n))
    with pytest.raises(ManifestError) as e:
        read_manifest(_write(folder, body))
    said = [x.strip() for x in str(e.value).splitlines()[1:]]
    by_column = {c: [x for x in said if f"column '{c}'" in x] for c in ("bmode", "ceus", "us_lnm", "lnm")}
    assert [len(v) for v in by_column.values()] == [2, 2, 2, 2], said
    assert by_column["bmode"][0].endswith(f"image file does not exist; nor does its folder {folder / 'gone'}")
    assert by_column["ceus"][0].endswith("Q0.JPG does: the names differ in case, which this file system tells apart")
    assert by_column["ceus"][1] == f"[missing_file] rows 2-{n}, column 'ceus': as said for row 1, of its own file"
    assert by_column["bmode"][1] == f"[missing_file] rows 2-{n}, column 'bmode': as said for row 1"
    assert by_column["us_lnm"][0].endswith("got 'NA': a mark of a value not recorded? leave the cell empty")
    assert by_column["lnm"][0].endswith(
        "lnm must be 0 or 1, got empty (new patients, without labels, are read by predict and validate --no-labels)"
    )
    assert len(e.value.problems) == 4 * n  # (each row's problem kept)


def test_a_warning_of_every_image_of_an_input_says_so(folder, capsys):
    """helper-123: "80 image(s) hold no picture" of a cohort of 80 had not said that it was every
    CEUS picture (a branch that learns nothing): the line names the input it covers whole."""
    from lnm_jax.fileio import _WARNED

    n = 4
    _pictures(folder, n)
    for i in range(n):  # every CEUS picture black; one B-mode picture too
        Image.fromarray(np.zeros((25, 20, 3), np.uint8)).save(folder / "img" / f"q{i}.jpg")
    Image.fromarray(np.full((20, 30), 255, np.uint8)).save(folder / "img" / "q0.png")
    body = "".join(f"Q{i},img/q{i}.png,img/q{i}.jpg,{i % 2},{i // 2},40\n" for i in range(n))
    _WARNED.clear()
    read_manifest(_write(folder, body))
    said = capsys.readouterr().err
    assert f"{n + 1} image(s) hold no picture (one value everywhere) (every CEUS image): " in said, said
    assert main(["validate", str(folder / "manifest.csv"), "--no-labels"]) == 0  # (helper-124: its lines too)
    assert "warning: [blank_image] said of every CEUS image of the cohort" in capsys.readouterr().out
    for i in range(n):  # and every B-mode picture: both inputs in one parenthesis, as before stop 89's refactor
        Image.fromarray(np.full((20, 30), 255, np.uint8)).save(folder / "img" / f"q{i}.png")
    _WARNED.clear()
    read_manifest(_write(folder, body))
    assert f"{2 * n} image(s) hold no picture (one value everywhere) (every B-mode image, every CEUS image): " in (
        capsys.readouterr().err
    )


def test_the_survey_counts_stills_by_what_they_hold(folder):
    """helper-123: every CEUS picture a JPEG saved under ``.png`` was counted "png" by
    ``validate``'s survey (lossy pictures under a lossless name, unsaid): stills are counted by
    their signature, one named otherwise noted."""
    from lnm_jax.data.cohorts.survey import survey

    _pictures(folder, 2)
    Image.open(folder / "img" / "q1.jpg").save(folder / "img" / "j.png", format="JPEG")
    body = "Q0,img/q0.png,img/q0.jpg,0,0,40\nQ1,img/q1.png,img/j.png,1,1,41\n"
    lines = survey(read_manifest(_write(folder, body))).lines
    assert lines[0] == "images: jpeg 2, png 2", lines
    assert any(x.strip().startswith("note: JPEG named .png: 1 image(s), e.g. row 2 (Q1) ceus j.png") for x in lines)


def test_a_trained_runs_cohort_read_again_says_its_warnings_no_more(folder, capsys):
    """helper-123: ``predict --workdir`` printed the training cohort's warnings (its blank
    images) before a new site's own problems, read as theirs: a run opened to be read reads its
    cohort without them (they were said when it trained); a run's start says them."""
    from lnm_jax.config import base_config
    from lnm_jax.fileio import _WARNED
    from lnm_jax.run import resolve_cohort

    _pictures(folder, 2)
    Image.fromarray(np.zeros((20, 30), np.uint8)).save(folder / "img" / "q0.png")
    config = base_config()
    config.data.manifest = str(_write(folder, "Q0,img/q0.png,img/q0.jpg,0,0,40\nQ1,img/q1.png,img/q1.jpg,1,1,41\n"))
    _WARNED.clear()
    resolve_cohort(config, None, synthesise=False)
    assert "hold no picture" not in capsys.readouterr().err
    resolve_cohort(config, None)
    assert "1 image(s) hold no picture" in capsys.readouterr().err


def test_a_mask_column_naming_the_image_and_a_spreadsheets_number_id_are_said_as_such(folder):
    """helper-123: a mask column copied from the B-mode column was "mask is not binary: 193
    values", and an ID a spreadsheet wrote as 1.23E+00 "not a safe file name" alone; and a
    Windows path in every row is said once (rows past ten on one line)."""
    n = 16
    _pictures(folder, n)
    rows = [f"Q{i},img/q{i}.png,img/q{i}.jpg,{i % 2},{i // 2 % 2},40,img/q{i}.png" for i in range(2)]
    rows.append("1.23457E+11,img/q2.png,img/q2.jpg,0,1,40,")
    rows += [f"W{i},img\\q{i}.png,img/q{i}.jpg,{i % 2},{i // 2 % 2},40," for i in range(3, n)]
    header = "patient_id,bmode,ceus,us_lnm,lnm,age,bmode_mask\n"
    with pytest.raises(ManifestError) as e:
        read_manifest(_write(folder, "\n".join(rows) + "\n", header=header))
    said = {(p.row, p.column): p.message for p in e.value.problems}
    assert (
        said[(1, "bmode_mask")]
        == said[(2, "bmode_mask")]
        == (
            "the mask is the row's B-mode image itself (the image column copied into the mask column?): a lesion mask "
            "is a binary outline drawn on the image, in a file of its own"
        )
    ), said
    assert said[(3, "patient_id")].endswith(
        "a long number a spreadsheet wrote in scientific notation, its digits lost? format the column as text and "
        "export again"
    ), said
    windows = [x.strip() for x in str(e.value).splitlines() if "column 'bmode'," in x or "column 'bmode':" in x]
    assert (
        len(windows) == 2
        and windows[1] == f"[missing_file] rows 5-{n}, column 'bmode': as said for row 4, of its own file"
    ), windows


def test_rows_whose_words_differ_by_their_figures_are_one_line_past_ten():
    """helper-123: inverted masks' shares (94%, 93%, ...) split one cause into a line per share;
    past :data:`mf.GROUPED_LINES` later rows, words alike but for their figures are one line
    ("with its own figures"); fewer are said in full, each figure kept."""
    words = "the mask marks {}% of its picture: an inverted mask (lesion black, background white)?" + " " * 20

    def problems(n):
        return [mf.Problem("mask", words.format(90 + r % 5), row=r, column="m", file=f"f{r}") for r in range(1, n + 1)]

    many = problems(mf.GROUPED_LINES + 2)
    said = [str(p) for p in mf.grouped(many)]
    assert said == [str(many[0]), f"[mask] rows 2-{len(many)}, column 'm': as said for row 1, with its own figures"]
    few = problems(5)
    assert mf.grouped(few) == few


def test_paths_written_elsewhere_and_a_label_coded_one_two_are_said_so(folder):
    """helper-124: a path written on the exporting machine (``/home/radiology/...``) or from the
    folder above the manifest said only that a folder did not exist, the file beside the
    manifest unnamed; a label coded 1/2 (no/yes, as SPSS exports it) refused each 2 alone, the
    rows of 1 counted valid positives."""
    _pictures(folder, 3)
    rows = [
        "Q0,/home/radiology/export/lnm/img/q0.png,img/q0.jpg,0,1,40",
        f"Q1,{folder.name}/img/q1.png,img/q1.jpg,1,2,40",
        "Q2,img/q2.png,img/q2.jpg,0,2,40",
        "Q3,img/q2.png,img/q2.jpg,0,1,40",
    ]
    with pytest.raises(ManifestError) as e:
        read_manifest(_write(folder, "\n".join(rows) + "\n"))
    said = {(p.row, p.column): p.message for p in e.value.problems}
    elsewhere = (
        "does: the path is written from another folder (the exporting machine's?); give it relative to the manifest"
    )
    assert said[(1, "bmode")].endswith(f"; {folder / 'img' / 'q0.png'} {elsewhere}"), said
    assert said[(2, "bmode")].endswith(f"; {folder / 'img' / 'q1.png'} {elsewhere}"), said
    assert said[(None, "lnm")] == (
        "holds only 1 and 2 (2 and 2 rows): no and yes coded 1 and 2, as a statistics package exports them? its 1s "
        "would read as yes; write 0 for 1 and 1 for 2"
    ), said


def test_validate_warns_of_an_image_input_no_patient_has(folder, capsys):
    """helper-124: an empty CEUS column was said OK by ``validate`` (no model named), then
    refused by ``train``'s default model: warned of, naming the modalities the cohort holds."""
    _pictures(folder, 4)
    body = "".join(f"Q{i},img/q{i}.png,,{i % 2},{i // 2},40\n" for i in range(4))
    assert main(["validate", str(_write(folder, body)), "--no-labels"]) == 0
    out = capsys.readouterr().out
    assert (
        "warning: no patient has a CEUS picture: a model that takes it (the default and the paper's triple) refuses "
        "this cohort; train one of what it holds (--config.modalities=bmode,us_lnm)"
    ) in out, out


def test_grouping_compares_each_problems_words_once(monkeypatch):
    """One cause over a cohort's every row is grouped in time linear in the rows: each problem's
    words are read once (they had been compared against the whole group for every later row:
    3,000 rows of one missing folder took 346 s on a 2-core AMD EPYC, 0.13 s since)."""
    calls = []
    alike = mf._alike
    monkeypatch.setattr(mf, "_alike", lambda p: calls.append(p) or alike(p))
    n = 200
    problems = [mf.Problem("missing_file", "x does not exist", row=r, column="bmode", file=f"f{r}") for r in range(n)]
    assert len(mf.grouped(problems)) == 2 and len(calls) == n
