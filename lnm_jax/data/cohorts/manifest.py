"""Cohort manifest: the one on-disk format for every cohort, real or synthetic.

A manifest is a CSV with the columns ``patient_id, bmode, ceus, us_lnm, lnm``; image paths
are relative to the CSV (absolute paths are accepted). ``bmode``, ``ceus`` and ``us_lnm`` may
be empty for a patient who lacks that input; every other column is kept as metadata. A
``ceus`` cell may name a clip instead of a still: a video (mp4/avi/mov/mkv/webm), a folder
of frames (see :mod:`lnm_jax.data.pixels.clips`) or a multi-frame DICOM cine. An image cell may name a
DICOM file (``.dcm``, or any file with the DICOM preamble; :mod:`lnm_jax.data.pixels.dicom`).
Optional columns frame the images (:mod:`lnm_jax.data.pixels.sources`): ``bmode_crop``/``ceus_crop``
(x0,y0,x1,y1: the scan region of a screen capture), ``bmode_mm_per_pixel``/``ceus_mm_per_pixel``,
``bmode_frame`` (which frame of a multi-frame B-mode) and ``ceus_frame_rate`` (a frame
folder's frames per second); they are not metadata. Names beginning ``bmode`` or ``ceus`` (in
any case, ``B-mode ...``, ``CEUS-...``) are these inputs' own: any other is refused
(``misnamed_column``), as is a known column spelled otherwise (``BMODE_CROP``, ``B-mode crop``),
never kept as metadata in silence.

Reading validates everything at once and raises one :class:`ManifestError` listing every
problem (row, column, file), so a user fixes a cohort in one pass and nothing trains on a
broken one.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import difflib
import errno
import functools
import hashlib
import os
import re
import sys
import unicodedata
import urllib.parse
from collections.abc import Iterable, Sequence
from pathlib import Path, PureWindowsPath

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from lnm_jax.data.cohorts.similar import (
    NEAREST_DIFFERENT,
    SIMILAR_RMS,
    THUMB,
    earlier_similar,
    nearest_within,
    thumbnail,
)
from lnm_jax.data.cohorts.tables import (
    TableTextError,
    cells_below_header,
    data_rows,
    decode_table,
    delimiter_hint,
    header_below,
    repeated_columns,
    table_bytes,
    table_reader,
)
from lnm_jax.data.pixels import sources
from lnm_jax.data.pixels.clips import (
    FRAME_SUFFIXES,
    ClipError,
    check_frame_folder,
    frame_files,
    frames_as_stored,
    is_clip,
)
from lnm_jax.data.pixels.decode import (
    MAX_IMAGE_PIXELS,
    VIDEO_SUFFIXES,
    DamagedImageError,
    ImageFormatError,
    ImageTooLargeError,
    damage,
    holds,
    read_opacity,
    upright,
    verify_image,
)
from lnm_jax.data.pixels.dicom import DICOM_SUFFIXES, DicomError, is_dicom
from lnm_jax.data.pixels.masks import EMPTY as MASK_EMPTY  # noqa: F401  (problem codes, re-exported)
from lnm_jax.data.pixels.masks import NO_BACKGROUND as MASK_NO_BACKGROUND  # noqa: F401
from lnm_jax.data.pixels.masks import NOT_BINARY as MASK_NOT_BINARY  # noqa: F401
from lnm_jax.data.pixels.masks import NOT_SEGMENTATION as MASK_NOT_SEGMENTATION  # noqa: F401
from lnm_jax.data.pixels.masks import ORIENTATION_MISMATCH as MASK_ORIENTATION_MISMATCH  # noqa: F401
from lnm_jax.data.pixels.masks import SIZE_MISMATCH as MASK_SIZE_MISMATCH  # noqa: F401
from lnm_jax.data.pixels.masks import MaskError, check_mask
from lnm_jax.data.pixels.placeholders import STAND_INS, placeholder, stand_in
from lnm_jax.data.threads import cpus, ordered_map
from lnm_jax.fileio import content_digest, error_line, problems_text, warn_once, write_csv
from lnm_jax.names import (
    BMODE,
    CEUS,
    IMAGE_INPUTS,
    INPUTS,
    LABEL,
    MASK_COLUMNS,
    PATIENT_ID,
    SETTING_LABELS,
    US_LNM,
    mask,
)
from lnm_jax.text_encoding import LOCALE_FIX, file_name_encoding, unnameable_path_hint

REQUIRED_COLUMNS = (PATIENT_ID, *INPUTS, LABEL)
IMAGE_COLUMNS = IMAGE_INPUTS
OPTION_COLUMNS = {name: sources.option_columns(name) for name in IMAGE_INPUTS}
# a binary cell: 0 or 1, also as a float column writes them (pandas writes a column that has an
# empty cell as floats: 1.0, 0.0)
BINARY_VALUE = re.compile(r"([01])(?:\.0+)?")
# words a binary column is written in, read by no one (a manifest is never guessed at): each
# named with its number in a bad value's line (helper-121: a yes/no US-LNM column had given one
# short line per row)
BINARY_WORDS = {
    **dict.fromkeys(("yes", "y", "true", "t", "positive", "pos"), 1),
    **dict.fromkeys(("no", "n", "false", "f", "negative", "neg"), 0),
}
# marks an export writes where nothing was recorded: an empty cell in a manifest (helper-123: a
# dash had been offered as 0)
NOT_RECORDED = {"-", "--", "na", "n/a", "nan", "null", "none", "unknown", "?", "not recorded", "missing", "."}

# Problem codes: one per kind of bad input, so callers and tests can tell them apart.
UNREADABLE_MANIFEST = "unreadable_manifest"
MISSING_COLUMN = "missing_column"
EMPTY_PATIENT_ID = "empty_patient_id"
DUPLICATE_PATIENT_ID = "duplicate_patient_id"
MISSING_FILE = "missing_file"
UNREADABLE_IMAGE = "unreadable_image"
BAD_FLAG_VALUE = "bad_flag_value"
BAD_LABEL_VALUE = "bad_label_value"
NO_INPUTS = "no_inputs"
EMPTY_COHORT = "empty_cohort"
MISSING_CLASS = "missing_class"
UNREADABLE_CLIP = "unreadable_clip"
CLIP_TOO_SHORT = "clip_too_short"
BAD_PATIENT_ID = "bad_patient_id"
IMAGE_TOO_LARGE = "image_too_large"
WRONG_DELIMITER = "wrong_delimiter"
BAD_IMAGE_OPTION = "bad_image_option"
UNUSABLE_DICOM = "unusable_dicom"
DUPLICATE_COLUMN = "duplicate_column"
NOT_ULTRASOUND = "not_ultrasound"
HEADER_MISMATCH = "header_mismatch"
MASK_WITHOUT_IMAGE = "mask_without_image"
OPTION_WITHOUT_IMAGE = "option_without_image"
BLANK_IMAGE = "blank_image"
MISNAMED_COLUMN = "misnamed_column"
EXTRA_CELLS = "extra_cells"
SHORT_ROW = "short_row"
SHARED_IMAGE = "shared_image"
SAME_PICTURE = "same_picture"
SHARED_MASK = "shared_mask"
SIMILAR_IMAGE = "similar_image"
DIM_IMAGE = "dim_image"
# a still with transparent pixels (alpha below OPAQUE): read composited over black, as a model
# input is, where a viewer shows its own background (helper-121: a lesion made transparent, or a
# whole picture at alpha 128, had been read so in silence)
TRANSPARENT_IMAGE = "transparent_image"
# an alpha at or above this is opaque enough not to say (254 of 255 moves a sample by 1 level at most)
OPAQUE = 0.99
# a still whose brightest sample is at most DIM_AT (of [0, 1]), or whose mean is at most DIM_MEAN,
# is nearly black: 12-bit samples stored unscaled in a 16-bit file (4095 of 65535; 15 of 255 in
# an 8-bit one), the mean where burned-in white text holds the brightest samples
DIM_AT, DIM_MEAN = 1 / 16, 1 / 32
# a dim still with at least this share of its samples brighter than DIM_AT holds a bright picture
# small in a black frame; under it, bright marks at most (text burned into a picture read dim)
LIT_SHARE = 0.02
# said as a warning (once per manifest and process), not refused, each with the words its line
# begins with: a still that holds one value is no ultrasound picture, a nearly black one is read
# far from its scanner's brightness, one picture as a patient's B-mode and CEUS feeds both
# branches the same pixels, but a cohort's other rows stay usable (one picture for two patients,
# SHARED_IMAGE, is refused: it can sit in train and test)
WARNING_CODES = {
    BLANK_IMAGE: "image(s) hold no picture (one value everywhere)",
    DIM_IMAGE: "image(s) are nearly black",
    TRANSPARENT_IMAGE: "image(s) are partly transparent, read over black",
    SAME_PICTURE: "patient(s) have one picture as B-mode and CEUS: both branches see the same pixels",
    SHARED_MASK: "lesion mask(s) are another image's",
    SIMILAR_IMAGE: "image(s) are nearly another patient's picture",
}
# a manifest of new patients (no labels: nothing trains or is tested on it) warns of a shared
# picture instead (scoring one image under two flags is a question a user may ask)
UNLABELLED_WARNING_CODES = {**WARNING_CODES, SHARED_IMAGE: "image(s) are another patient's picture"}
# and MASK_NOT_BINARY, MASK_EMPTY, MASK_NO_BACKGROUND, MASK_SIZE_MISMATCH, MASK_ORIENTATION_MISMATCH,
# MASK_NOT_SEGMENTATION
# (lnm_jax.data.pixels.masks)

# Patient ids name files (Grad-CAM figures, records), so they are restricted to characters that
# are safe in a file name on every system: letters, digits, '.', '_', '-', not starting with '.'
# (no '/', no '..', no hidden files) or '-' (an option to every command line tool, and a formula
# to a spreadsheet opening the CSVs the ID is written to: '-2-3' shown as -5, helper-118; OWASP's
# CSV injection), at most 128 characters.
PATIENT_ID_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
# a number as a spreadsheet shows a long one (1.23457E+11): an ID whose digits were lost (helper-123)
SCIENTIFIC = re.compile(r"[0-9](?:\.[0-9]+)?[eE][+-][0-9]+")
# names Windows reserves for devices, with any extension (CON.png is the console there): an ID
# that names a figure must not be one (helper-118 found CON, NUL and AUX.txt accepted)
RESERVED_FILE_NAMES = re.compile(r"(CON|PRN|AUX|NUL|COM[0-9]|LPT[0-9])(\..*)?", re.IGNORECASE)


@dataclasses.dataclass(frozen=True)
class Problem:
    """One thing wrong with a manifest. ``row`` is the number of the row's first line in the
    file less one, empty lines counted (:func:`data_rows`)."""

    code: str
    message: str
    row: int | None = None
    column: str | None = None
    file: str | None = None
    rows: tuple[int, ...] = ()  # several rows said on one line (:func:`grouped`), row and file None

    def __str__(self) -> str:
        where = []
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.rows:
            where.append(f"rows {_row_ranges(self.rows)}")
        if self.column is not None:
            where.append(f"column '{self.column}'")
        if self.file is not None:
            where.append(f"file '{self.file}'")
        loc = ", ".join(where)
        return f"[{self.code}] {loc + ': ' if loc else ''}{self.message}"


def _row_ranges(rows: Sequence[int]) -> str:
    """Row numbers as runs: (2, 3, 4, 7, 9, 10) -> '2-4, 7, 9-10'."""
    runs: list[list[int]] = []
    for r in sorted(rows):
        if runs and r == runs[-1][1] + 1:
            runs[-1][1] = r
        else:
            runs.append([r, r])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


# a problem said the same way (code, column, words) for this many rows or more, in words this long
# or longer, gives them once: the later rows say "as said for row N" (a cohort of screen captures
# had repeated a 330-character hint for each of its 24 files); every row and file is still named,
# on a line each up to GROUPED_LINES later rows, on one line of row numbers beyond, whatever the
# words' length (helper-121 and helper-123: a folder that could not be read, or was missing, had
# given 160 and 320 lines of one cause; an empty label column 80)
GROUPED_FROM, GROUPED_CHARS, GROUPED_LINES = 3, 100, 10


def _grouped_text(problems: tuple[Problem, ...]) -> str:
    """:func:`lnm_jax.fileio.problems_text` of :func:`grouped` ``problems``."""
    return problems_text(grouped(problems))


def _alike(p: Problem) -> tuple:
    """What makes two rows' problems one said alike: code, column and words, the row's own file
    name in them (any letter case) read as one name (helper-123: a case mismatch, "x.PNG does",
    said once per row)."""
    words = p.message
    if p.file and (name := Path(p.file).name):
        words = words.replace(p.file, "<file>")
        for own in dict.fromkeys((name, PureWindowsPath(name).name)):  # (a Windows path: its last part alone)
            words = re.sub(re.escape(own), lambda _: "<file>", words, flags=re.IGNORECASE)
    return p.code, p.column, words


def _figures_alike(key: tuple) -> tuple:
    """:func:`_alike`'s ``key`` with every number in its words read as one too (inverted masks'
    "94%", "93%" had split one cause into a line per share; a pointer's size)."""
    return *key[:2], re.sub(r"[0-9]+(?:\.[0-9]+)?", "#", key[2])


def grouped(problems: Iterable[Problem]) -> list[Problem]:
    """``problems`` in their order, a problem said alike (:func:`_alike`) for
    :data:`GROUPED_FROM` or more rows given once, at its first row: more than
    :data:`GROUPED_LINES` later rows on one line at the second's place naming their rows (not
    their files: each is its row's), their words alike but for each row's file and figures
    (:func:`_figures_alike`); fewer, where its words are :data:`GROUPED_CHARS` long or longer
    and alike but for each row's file, a line each saying "as said for row N" and naming its
    row and file (shorter words are repeated, as short as the reference). "of its own file",
    "with its own figures" where the words differ so. Errors and warnings alike (warnings had
    been said in full for every row: helper-77). Each problem's words are compared once."""
    problems = tuple(problems)
    keys = {id(p): _alike(p) for p in problems if p.row is not None}
    loose: dict[tuple, list[Problem]] = collections.defaultdict(list)
    for p in problems:
        if p.row is not None:
            loose[_figures_alike(keys[id(p)])].append(p)
    groups: dict[int, list[Problem]] = {}  # by id of each problem: the rows said with it
    for alike in loose.values():
        if len(alike) - 1 > GROUPED_LINES:
            groups.update((id(p), alike) for p in alike)
        else:
            close: dict[tuple, list[Problem]] = collections.defaultdict(list)
            for p in alike:
                close[keys[id(p)]].append(p)
            groups.update((id(p), group) for group in close.values() for p in group)
    said, words = [], {}  # (words: each group's reference, made once)
    for p in problems:
        alike = groups.get(id(p), [])
        many, long = len(alike) - 1 > GROUPED_LINES, len(p.message) >= GROUPED_CHARS
        if len(alike) < GROUPED_FROM or p is alike[0] or not (many or long):
            said.append(p)
            continue
        if many and p is not alike[1]:
            continue  # (said on alike[1]'s line)
        if id(alike[0]) not in words:
            first = alike[0]
            words[id(first)] = f"as said for row {first.row}" + (
                ", with its own figures"
                if any(keys[id(q)] != keys[id(first)] for q in alike)
                else ", of its own file"
                if any(q.message != first.message for q in alike)
                else ""
            )
        if many:
            said.append(Problem(p.code, words[id(alike[0])], column=p.column, rows=tuple(q.row for q in alike[1:])))
        else:
            said.append(dataclasses.replace(p, message=words[id(alike[0])]))
    return said


class ManifestError(ValueError):
    """Raised with every problem of a manifest at once; its message counts the problems that
    refuse it, then lists the warnings (``warning_codes``) among them apart."""

    def __init__(
        self, path: Path | str, problems: Iterable[Problem], warning_codes=WARNING_CODES, readable: Cohort | None = None
    ):
        self.path = Path(path)
        self.problems = tuple(problems)
        self.readable = readable  # the rows read without a refusing problem, for what else validate says of them
        errors = tuple(p for p in self.problems if p.code not in warning_codes)
        warned = [p for p in self.problems if p.code in warning_codes] if errors else []
        text = f"{self.path}: {_grouped_text(errors or self.problems)}"
        if warned:
            heading = f"and {len(warned)} warning(s), not refused on their own:"
            text += "\n  " + "\n  ".join([heading, *(f"warning: {w}" for w in grouped(warned))])
        super().__init__(text)

    @property
    def codes(self) -> set[str]:
        return {p.code for p in self.problems}


@dataclasses.dataclass(frozen=True)
class Patient:
    patient_id: str
    bmode: Path | None
    ceus: Path | None
    us_lnm: int | None
    lnm: int | None
    row: int
    metadata: dict[str, str] = dataclasses.field(default_factory=dict)
    # per image input: the framing columns' values (crop box, mm/pixel, frame)
    options: dict[str, sources.ImageOptions] = dataclasses.field(default_factory=dict)
    # per image input: its lesion mask (the <input>_mask column), where the manifest gives one
    masks: dict[str, Path] = dataclasses.field(default_factory=dict)
    # per image input: what tells its picture from any other (:func:`picture_keys`: the whole
    # input's key, then a clip's or cine's frames'), where it was read without a problem: one
    # picture is one key, in this manifest or another
    pictures: dict[str, tuple[tuple, ...]] = dataclasses.field(default_factory=dict)
    # per image input with a mask: the mask's pixel_digest, where it was checked without a problem
    mask_pictures: dict[str, str] = dataclasses.field(default_factory=dict)
    # per still image input read without a problem: its thumbnail (lnm_jax.data.cohorts.similar;
    # float32 bytes, so that patients compare as values): nearly one picture is found by it
    thumbnails: dict[str, bytes] = dataclasses.field(default_factory=dict)

    def has(self, name: str) -> bool:
        """Whether the input ``name`` (bmode, ceus or us_lnm) is available."""
        return getattr(self, name) is not None

    def thumbnail(self, name: str) -> np.ndarray | None:
        """Image input ``name``'s thumbnail (float32 [THUMB * THUMB]), or None (no still read)."""
        held = self.thumbnails.get(name)
        return None if held is None else np.frombuffer(held, np.float32)

    def mask(self, name: str) -> Path | None:
        """Image input ``name``'s lesion mask file, or None."""
        return self.masks.get(name)

    def image_options(self, name: str) -> sources.ImageOptions:
        """The framing columns' values for image input ``name`` (none set: the defaults)."""
        return self.options.get(name, sources.NO_OPTIONS)


@dataclasses.dataclass(frozen=True)
class Cohort:
    """A validated manifest."""

    path: Path
    patients: tuple[Patient, ...]
    metadata_columns: tuple[str, ...]
    sha256: str
    # what reading it found to say but not to refuse (``blank_image``), each with its row
    warnings: tuple[Problem, ...] = ()

    def __len__(self) -> int:
        return len(self.patients)

    def files(self) -> list[Path]:
        """Every path the cohort is read from: the manifest, then each image file, clip folder
        and lesion mask (what an output must never replace or write into)."""
        images = {getattr(p, name) for p in self.patients for name in IMAGE_INPUTS}
        images |= {m for p in self.patients for m in p.masks.values()}
        return [self.path, *sorted(x for x in images if x is not None)]

    @property
    def ids(self) -> list[str]:
        return [p.patient_id for p in self.patients]

    @property
    def labels(self) -> list[int | None]:
        return [p.lnm for p in self.patients]

    def by_id(self) -> dict[str, Patient]:
        return {p.patient_id: p for p in self.patients}

    def pictures_text(self, inputs: Sequence[str] = IMAGE_INPUTS) -> str:
        """Every patient's pictures of ``inputs`` (:attr:`Patient.pictures`: the decoded pixels'
        digests where the images were checked) as one deterministic text, in manifest order:
        what a record built from the cohort's images is keyed by (TFDS records, a pretraining's
        inputs), so that an image edited in place makes another key."""
        return repr(
            [(p.patient_id, sorted((k, v) for k, v in p.pictures.items() if k in inputs)) for p in self.patients]
        )

    def availability(self) -> dict[str, int]:
        """How many patients have each input."""
        return {name: sum(p.has(name) for p in self.patients) for name in INPUTS}

    def describe(self, positive: str | None = None, verdict: str | None = "OK", labels: bool = True) -> str:
        """One line: ``verdict`` (none where ``None``: a check after this line refuses the
        cohort), size, positives among the labelled (``positive``: the task's name of the
        class; "no labels" where none is known, or ``labels`` is False: read as new patients),
        availability per input, metadata columns."""
        labels = [x for x in self.labels if x is not None] if labels else []
        masks = {m: sum(p.mask(m) is not None for p in self.patients) for m in IMAGE_COLUMNS}
        named = f" ({positive})" if positive else ""
        told = (
            "no labels"
            if not labels
            else f"{sum(labels)} positive{named}"
            + (f" of {len(labels)} labelled" if len(labels) < len(self.patients) else "")
        )
        return (
            f"{self.path}: {f'{verdict}, ' if verdict else ''}{len(self)} patients, {told}; "
            "available "
            + ", ".join(f"{k} {v}" for k, v in self.availability().items())
            + (f"; lesion masks: {', '.join(f'{k} {v}' for k, v in masks.items())}" if any(masks.values()) else "")
            + (f"; metadata columns: {', '.join(self.metadata_columns)}" if self.metadata_columns else "")
        )


def _folded(column: str) -> str:
    """A column name as compared for misspelling: case-folded, without spaces, hyphens and
    underscores (``B-mode crop``, ``BMODE_CROP`` and ``bmode_crop`` are one name), and without
    invisible format characters (a zero-width space, a second byte-order mark: helper-106's
    ``lnm\u200b`` had been said missing, the character never named)."""
    return re.sub(r"[\s_-]+", "", "".join(c for c in column if unicodedata.category(c) != "Cf")).casefold()


def _invisible(column: str) -> str:
    """'' or what ``column`` holds that no editor shows (Unicode format characters), named."""
    said = [
        f"U+{ord(c):04X} ({unicodedata.name(c, 'unnamed')})"
        for c in dict.fromkeys(column)
        if unicodedata.category(c) == "Cf"
    ]
    return f" (it holds the invisible {', '.join(said)})" if said else ""


# a column named as an image input's own (bmode_..., B-mode ..., CEUS-..., ceusfps, bmode.1): the
# manifest's reserved namespace, so a misspelt option (ceus_fps) is not kept as metadata in silence
_INPUT_PREFIX = re.compile(r"(b[\W_]*mode|ceus)(.+)", re.IGNORECASE | re.DOTALL)
# what a field is often called (a scanner's export, a spreadsheet's habit): the hint given for
# a name in an input's namespace that is none of its columns (folded as :func:`_word`)
_FIELD_WORDS = {
    "frame_rate": ("fps", "rate", "hz", "frames_per_second", "frame_interval"),
    "mm_per_pixel": (
        "mm",
        "mpp",
        "spacing",
        "pixel_spacing",
        "pixel_size",
        "resolution",
        "scale",
        "pixel",
        "per_pixel",
    ),
    "crop": ("roi", "box", "bbox", "region_box", "scan_region"),
    "frame": ("frame_index", "frame_number", "frame_no", "index"),
    "mask": ("seg", "segmentation", "lesion", "lesion_mask", "outline", "contour"),
    "": ("path", "file", "filename", "image", "img", "picture", "clip", "video", "movie", "dicom", "dcm"),
}


def _word(text: str) -> str:
    """``text`` folded to its letters and digits, lower case."""
    return re.sub(r"[\W_]+", "", text).casefold()


def _input_columns(name: str) -> dict[str, str]:
    """Input ``name``'s own columns by field ('' for the image column itself): its framing
    options and its lesion mask."""
    return {"": name, **OPTION_COLUMNS[name], "mask": mask(name)}


def _misnamed(column: str, known: str, header: list[str], filled: dict[str, int], checked: bool = False) -> str:
    """Why ``column``, which folds to the ``known`` one (:func:`_folded`), is refused;
    ``filled``: the non-empty cells of each column; ``checked``: its cells are checked as
    ``known``'s in this reading."""
    if known not in header:
        also = f"; its cells are checked as {known!r} here" if checked else ""
        return f"would be read as metadata, not as {known!r}{_invisible(column)}: name it {known!r}{also}"
    if filled.get(known, 0) == 0 and filled.get(column, 0) > 0:  # the cells are in this spelling
        return f"another spelling of {known!r}, which is empty in every row: remove {known!r} and name this column so"
    return f"another spelling of {known!r}, which the manifest has: remove this column or rename it"


def _unknown_input_column(column: str, header: list[str], filled: dict[str, int]) -> str | None:
    """Why ``column``, named as a B-mode or CEUS column, is none of that input's columns; None
    when it is not so named. Called on names that are no known column in any spelling. The
    hint names the column the field is (``ceus_fps``: ``ceus_frame_rate``; ``bmode_path``:
    ``bmode``), or the other input's when only it has one (``bmode_frame_rate``); where the
    column it means is in ``header`` too, as another spelling of it (:func:`_misnamed`)."""
    found = _INPUT_PREFIX.fullmatch(column.strip())
    if found is None:
        return None
    name, word = (BMODE if _word(found[1]) == BMODE else CEUS), _word(found[2])
    own = _input_columns(name)
    words = {_word(w): f for f, ws in _FIELD_WORDS.items() for w in ((f,) if f else ()) + ws}
    close = difflib.get_close_matches(word, words, n=1, cutoff=0.7)
    starts = [w for w in words if len(w) >= 4 and word.startswith(w)]  # ceus_crop_box, ceus_mask_file
    field = words[close[0]] if close else (words[max(starts, key=len)] if starts else None)
    other = next((o for o in IMAGE_INPUTS if o != name and field in _input_columns(o)), None)
    if field in own and own[field] in header:  # renaming it would name that column twice
        return _misnamed(column, own[field], header, filled)
    if name == CEUS and word in ("region", "side", "contrastside"):
        hint = "the dual display's contrast side is a setting, data.ceus_region, not a column; "
    elif word.isdigit():
        hint = f"a second '{name}' column, renamed by a CSV writer (pandas writes '{name}.1')? A manifest has one; "
    elif field in own:
        hint = f"did you mean {own[field]!r}? "
    elif other is not None:
        hint = f"{_input_columns(other)[field]!r} is {SETTING_LABELS[other]}'s only; "
    else:
        hint = ""
    listed = ", ".join(c for f, c in own.items() if f)
    slug = re.sub(r"[\W_]+", "_", found[2]).strip("_").casefold()
    rename = f" (e.g. '{slug}_{name}')" if slug[:1].isalpha() and len(slug) > 1 else ""
    return (
        f"columns beginning '{name}' are {SETTING_LABELS[name]}'s ({name}, {listed}), and this is none of them: "
        f"{hint}a metadata column must not begin with '{name}'{rename}"
    )


def checked_still(
    path: Path, still: bool = True, digest: bool = True, crop: sources.Box | None = None
) -> tuple[tuple[str, str] | None, str | None, np.ndarray | None]:
    """(problem code, why) where ``path`` is not a whole PNG/JPEG image that the decoder reads,
    within :data:`MAX_IMAGE_PIXELS` (:func:`lnm_jax.data.pixels.decode.verify_image`), or, for a
    ``still`` (not a clip's frame, which may be dark), holds no picture (:func:`blank`), else None, and (``digest``) the
    :func:`pixel_digest` of the picture and its :func:`lnm_jax.data.cohorts.similar.thumbnail`
    inside ``crop`` (None where it cannot be decoded, or not asked for: a clip's frames). A
    still with a ``crop`` is judged blank or dim inside it, the picture the model sees
    (helper-121: a crop that framed only a screen capture's black surround had been said OK)."""
    bad, img = _decoded(path)
    if img is None:
        return bad, None, None
    verdict = (_transparency(path, crop) or _framed_blank(img, crop)) if still else None
    if not digest:
        return verdict, None, None
    return verdict, pixel_digest([img]), thumbnail(img, crop)


def _transparency(path: Path, crop: sources.Box | None) -> tuple[str, str] | None:
    """(``transparent_image``, why) where a still's pixels (inside ``crop``) are not all opaque:
    they are read composited over black (:func:`lnm_jax.data.pixels.decode.over_black`), as a
    model input is, while a viewer shows its own background there and the colours an encoder
    kept under them are lost; a fully transparent one ``blank_image``, said so; else None
    (:func:`_transparent`)."""
    try:
        opacity = read_opacity(path)
        if opacity is None or opacity.min() == 1:
            return None
        with Image.open(path) as im:  # the colours under it, as stored
            under = np.asarray(upright(im).convert("RGBA"))[..., :3]
    except (OSError, ValueError):
        return None
    return _transparent(opacity, under, crop)


def _transparent(opacity: np.ndarray, under: np.ndarray, crop: sources.Box | None) -> tuple[str, str] | None:
    """:func:`_transparency`'s verdict of a picture's ``opacity`` [H, W] in [0, 1] and the
    colours ``under`` it as stored [H, W, 3] (a still's or a video frame's): None where every
    pixel is opaque, where black is under every transparent pixel (a colour key or palette entry
    of black: composited, it reads as stored), or none is left inside ``crop``; ``blank_image``
    where every pixel is fully transparent over colours that hold a picture (stop 88's trial:
    said "image holds one value", its stored picture unnamed)."""
    if opacity.min() == 1 or (under.shape[:2] == opacity.shape and not under[opacity < 1].any()):
        return None
    opacity, where = _framed(opacity, crop)
    seen = opacity < OPAQUE
    if not (opacity > 0).any():  # read as black throughout: blank, its stored picture said
        colours, _ = _framed(under, crop)
        if colours.shape[:2] != opacity.shape or colours.min() == colours.max():
            return None  # (blank's own words)
        return BLANK_IMAGE, where + (
            "every pixel is fully transparent (alpha 0): read composited over black, as the model sees it, it holds "
            "no picture, where its colours hold one (a viewer may show them); export the picture without transparency"
        )
    if not seen.any():
        return None
    return TRANSPARENT_IMAGE, where + (
        f"{seen.mean():.1%} of its pixels are transparent ({(opacity == 0).mean():.1%} fully, alpha "
        f"{opacity.min():.2f} at least): read composited over black, as the model sees it, where a viewer shows its "
        "own background; export the picture without transparency"
    )


def _framed(pixels: np.ndarray, crop: sources.Box | None) -> tuple[np.ndarray, str]:
    """(the part of ``pixels`` [H, W, ...] inside ``crop``, "inside its crop X: ") where the crop
    frames less than the whole picture; else (``pixels``, ''): no crop, or one that holds none
    of it (a crop outside the image is its own problem)."""
    if crop is not None and (part := crop.of(pixels)).size and part.shape[:2] != pixels.shape[:2]:
        return part, f"inside its crop {crop}: "
    return pixels, ""


def _framed_blank(img: np.ndarray, crop: sources.Box | None) -> tuple[str, str] | None:
    """:func:`blank` of ``img`` inside ``crop`` (:func:`_framed`), said as inside it."""
    part, where = _framed(img, crop)
    verdict = blank(part)
    return verdict and (verdict[0], where + verdict[1])


def _decoded(path: Path) -> tuple[tuple[str, str] | None, np.ndarray | None]:
    """(problem code, why) and None where ``path`` is no whole PNG/JPEG image within
    :data:`MAX_IMAGE_PIXELS`, else (None, the decoded picture)."""
    limit = f"over the limit of {MAX_IMAGE_PIXELS / 1e6:.0f} megapixels (data.pixels.decode.MAX_IMAGE_PIXELS)"
    try:
        return None, verify_image(path, MAX_IMAGE_PIXELS)  # (an empty file: unreadable says so)
    except ImageTooLargeError as e:
        return (IMAGE_TOO_LARGE, f"{e}, {limit}"), None
    except (DamagedImageError, ImageFormatError) as e:
        return (UNREADABLE_IMAGE, str(e)), None
    except (UnidentifiedImageError, OSError, ValueError) as e:
        return (UNREADABLE_IMAGE, unreadable(path, "image", e)), None


def unreadable(path: Path, what: str, error: Exception | None) -> str:
    """Why a file the decoder failed on (``error``; None: not tried) cannot be read as ``what``
    (image, mask), in plain words where they are known: an empty file, a PNG or JPEG cut short
    or damaged (:func:`lnm_jax.data.pixels.decode.damage`); else the decoder's own."""
    try:
        empty = path.is_file() and path.stat().st_size == 0
    except OSError:
        empty = False
    if empty:
        return "empty file (0 bytes): an export or copy that wrote nothing"
    if why := damage(path, error):
        return why
    return f"not a readable {what} ({type(error).__name__}: {error})"


def clip_digest(frames: Iterable[str]) -> str:
    """A clip's digest from its frames' :func:`pixel_digest` values, in order: one clip however
    its frames are stored (a frame folder saved again in another format or renamed in the same
    order, a video's frames as a folder where they decode alike)."""
    return hashlib.sha256(("clip:" + ",".join(frames)).encode()).hexdigest()


def pixel_digest(pixels: Iterable[np.ndarray]) -> str:
    """SHA-256 of decoded pixels (float32, each array's shape with it): one picture however its
    file stores it (a PNG saved again with other compression or text chunks, grey as RGB, a
    DICOM file exported again under a new SOP Instance UID)."""
    h = hashlib.sha256()
    for a in pixels:
        a = np.ascontiguousarray(a, np.float32)
        h.update(repr(a.shape).encode())
        h.update(memoryview(a).cast("B"))  # (no copy of the samples)
    return h.hexdigest()


def blank(img: np.ndarray) -> tuple[str, str] | None:
    """(``blank_image``, why) when a decoded still (float [H, W, C] in [0, 1]) holds one value
    everywhere: all black, all white, fully transparent (the decoder drops alpha), an export or
    de-identification that wiped the picture; (``dim_image``, why) when its brightest sample is
    at most :data:`DIM_AT` of the range or its mean at most :data:`DIM_MEAN`, with the causes
    its samples point to: a bright picture that fills little of a black frame (a small picture
    on a large screen capture) where :data:`LIT_SHARE` or more of them are brighter than
    DIM_AT; samples stored in fewer bits than the file declares (12-bit samples unscaled in a
    16-bit PNG: read at 1/16 of their brightness, white text burned in or not) or a picture
    exported too dark, where fewer are (the file's depth is not known here: an 8-bit file's
    samples can be too dark too, and a small picture's share can be under it); None otherwise."""
    lo, top = float(img.min()), float(img.max())
    if lo == top:
        return BLANK_IMAGE, f"image holds one value everywhere ({lo * 255:.0f} of 255): no picture"
    mean = float(img.mean())  # (a pass any picture that is not dim takes for the mean test anyway)
    if top > DIM_AT and mean > DIM_MEAN:
        return None
    lit = float((img > DIM_AT).mean())
    said = (
        f"nearly black (brightest sample {top:.2%}, mean {mean:.2%} of the range, {lit:.1%} of the samples "
        f"brighter than {DIM_AT:.2%})"
    )
    small = "a picture that fills little of a black frame (a small picture on a large screen capture?)"
    crop = "frame it with its <input>_crop column (x0,y0,x1,y1)"
    if lit >= LIT_SHARE:
        return DIM_IMAGE, f"{said}: {small}; {crop}"
    return DIM_IMAGE, (
        f"{said}: samples stored in fewer bits than the file declares read so (12-bit values unscaled in a 16-bit "
        "PNG, a DICOM file's BitsStored above what its samples use), a picture exported too dark, or "
        f"{small}; check how it was exported, or {crop}"
    )


def missing_path(path: Path, base: Path | None = None) -> str | None:
    """Why ``path`` cannot be opened (does not exist, broken link, link loop, neither a regular
    file nor a folder), or None. A path that does not exist is said with the one it likely means
    (:func:`_meant_path`; with ``base``, the manifest's folder, also the file that the end of a
    path written from another folder names under it, :func:`_written_elsewhere`). A FIFO,
    socket or device is never opened (helper-118: a FIFO named
    ``.dcm`` blocked ``validate`` in its open, deaf to SIGTERM and Ctrl-C, where one named
    ``.png`` had been refused); a folder is for its caller to judge (a clip's frames)."""
    try:
        resolved = path.resolve(strict=True)
        if not resolved.is_file() and not resolved.is_dir():
            return "is neither a file nor a folder (a FIFO, socket or device)"
    except FileNotFoundError:
        if path.is_symlink():  # (a git-annex file whose content was not fetched is one)
            return f"is {placeholder(path) or _broken_link(path)}"
        missing = _highest_missing(path)
        return "does not exist" + (
            unnameable_path_hint(str(path))
            or _stand_in(path, missing)
            or _meant_path(path)
            or (_written_elsewhere(path, base) if base is not None else "")
            or ("" if missing == path else f"; nor does its folder {missing}")
        )
    except UnicodeEncodeError:  # (helper-109: a traceback naming no file)
        return f"cannot be named in this locale's file-name encoding, {file_name_encoding()}: {LOCALE_FIX}"
    except RuntimeError:  # pathlib before Python 3.13 reports a loop this way
        return "is a symbolic link loop"
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "is a symbolic link loop"
        return _blocking_folder(path, e) or f"cannot be opened ({e})"
    return None


def _blocking_folder(path: Path, error: OSError) -> str | None:
    """'cannot be opened: its folder X ...' where a folder above ``path`` is what stops it
    (``error`` from resolving it): a file where a folder is named (ENOTDIR: an archive saved
    as the folder's name, said by what it holds), or a folder this user may not enter
    (EACCES); None otherwise. The folder is named, so every row under it says the same words,
    given once (:func:`grouped`; helper-121: 160 rows had each said "Not a directory" of their
    own file, never naming the folder)."""
    above = [f for f in path.parents if f != f.parent][::-1]  # from the top down
    if error.errno == errno.ENOTDIR:
        for folder in above:
            if folder.exists() and not folder.is_dir():
                held = holds(folder, text=True)
                return f"cannot be opened: its folder {folder} is a file, not a folder" + (f" ({held})" if held else "")
    if error.errno == errno.EACCES:
        for folder in above:
            if folder.is_dir() and not os.access(folder, os.X_OK):
                return f"cannot be opened: its folder {folder} may not be entered by this user (permission denied)"
    return None


def _stand_in(path: Path, missing: Path) -> str:
    """'; ...' naming what stands in ``path``'s place, where it or ``missing``, the highest
    folder above it that does not exist (:func:`_highest_missing`), is missing: a partial
    download, a DVC placeholder, a Windows shortcut or macOS's iCloud placeholder beside it
    (:func:`lnm_jax.data.pixels.placeholders.stand_in`), a folder above it that is missing (its
    DVC placeholder, or a link to a share not mounted); '' otherwise."""
    if missing.is_symlink():
        return f"; its folder {missing} is {_broken_link(missing)}"
    names = [missing.name + ending for ending, _ in STAND_INS] + [f".{missing.name}.icloud"]
    for beside in (missing.with_name(name) for name in names):
        if beside.exists() and (found := stand_in(beside)):
            return f"; {found[1]}" if missing == path else f"; nor does its folder {missing}: {found[1]}"
    return ""


def _highest_missing(path: Path) -> Path:
    """The highest folder above ``path`` that does not exist, else ``path`` itself (said as
    "nor does its folder X" where it is a folder: helper-121, a file said missing for each of a
    cohort's rows had not said that its folder was)."""
    missing = path
    while not missing.parent.exists() and missing.parent != missing.parent.parent:
        missing = missing.parent
    return missing


def _broken_link(path: Path) -> str:
    """A broken symbolic link in words, its target named (a share not mounted?)."""
    try:
        target = os.readlink(path)
    except OSError:
        return "a broken symbolic link"
    return f"a symbolic link to {target}, which does not exist (a share not mounted, or a copy's link?)"


# a path component that begins with a Windows drive letter (C:, c:images)
_DRIVE = re.compile(r"[A-Za-z]:.*")


def _meant_path(path: Path) -> str:
    """'' or, for a ``path`` that does not exist, the hint to the one a manifest written on
    another system means: Windows separators ('\\', which are a file name's characters here), a
    drive letter (the file found by the path's end, under the manifest's folder), names that
    differ in case only (written where the file system ignores case, read where it does not),
    or the one file of that name with another extension (converted). Each names the file found,
    where one is; nothing where no one file is meant."""
    posix = Path(str(path).replace("\\", "/"))
    parts = posix.parts
    drive = next((i for i, part in enumerate(parts) if _DRIVE.fullmatch(part)), None)
    if drive is not None:  # base / 'C:/data/images/a.png': the longest end of it under base
        base, end = Path(*parts[:drive]) if drive else Path("."), [parts[drive][2:], *parts[drive + 1 :]]
        end = [e for e in end if e]
        found = next((f for k in range(len(end)) if (f := _meant_file(base.joinpath(*end[k:])))), None)
        if found is None:
            return "; a Windows path (drive letter): give it relative to the manifest, with '/', or as this machine's"
        return f"; a Windows path (drive letter): {_does(*found)}: give it relative to the manifest, with '/'"
    found = _meant_file(posix)
    if "\\" in str(path):
        if found is None:
            return "; its '\\' are part of a name here: write the path with '/'"
        return f"; {_does(*found)}: write the path with '/' (Windows separators, '\\', are part of a name here)"
    if uri := re.search(
        r"(?:^|/)file:(?:/localhost(?=/))?(/.*)", posix.as_posix()
    ):  # file:///a/b, which a path here holds as file:/a/b
        return f"; a 'file:' URI, not a path: write the path itself ({urllib.parse.unquote(uri[1])})"
    return f"; {found[0]} does: {found[1]}" if found else ""


def _written_elsewhere(path: Path, base: Path) -> str:
    """'; X does: ...' where ``path`` (a manifest's cell under ``base``, its folder, or an
    absolute path) does not exist but the longest end of it does under ``base``: a path written
    on the exporting machine (``/home/radiology/export/images/a.png``) or from the folder above
    the manifest (``cohort/images/a.png`` in ``cohort/manifest.csv``); '' otherwise
    (helper-124: each had said only that a folder did not exist, the file beside the manifest
    unnamed, where a Windows path's drive letter is told so)."""
    try:
        parts = path.relative_to(base).parts
    except ValueError:
        parts = path.parts[1:] if path.anchor else path.parts
    for k in range(1, len(parts)):
        if (found := base.joinpath(*parts[k:])).is_file() or (found.is_dir() and k < len(parts) - 1):
            return (
                f"; {found} does: the path is written from another folder (the exporting machine's?); give it "
                "relative to the manifest"
            )
    return ""


def _said_beside_link_target(path: Path, base: Path, problems: list[Problem]) -> list[Problem]:
    """``problems`` with each missing file that exists beside the target of the manifest
    ``path``, a symbolic link, said so: a manifest's paths are read relative to the folder
    it is named in (``base``), the link's (helper-84: 24 files said missing, unexplained)."""
    target = path.resolve().parent
    if target == base.resolve():
        return problems
    out = []
    for p in problems:
        file = Path(p.file) if p.file else None
        if p.code == MISSING_FILE and file is not None and file.is_relative_to(base):
            there = target / file.relative_to(base)
            if there.exists():
                p = dataclasses.replace(
                    p,
                    message=f"{p.message}; {there} does, beside the target of the link {path}: paths are read "
                    f"relative to the folder the manifest is named in ({base}); name the manifest itself",
                )
        out.append(p)
    return out


def _does(file: Path, how: str) -> str:
    return f"{file} does" + (f" ({how})" if how else "")


def _meant_file(path: Path) -> tuple[Path, str] | None:
    """The file ``path`` likely means and how it differs ('': not at all; the names differ in
    case; another extension), or None where no one file is meant."""
    found, parts, how = Path(path.anchor or "."), path.parts[1:] if path.anchor else path.parts, ""
    for i, part in enumerate(parts):
        if (found / part).exists():
            found /= part
            continue
        names = _listing(found)
        same = names.get(_folded_name(part), ())
        if len(same) == 1:
            if same[0].casefold() == part.casefold():
                how = "the names differ in case, which this file system tells apart"
            else:  # (helper-84: a name stored decomposed, as macOS writes it, had been said missing unexplained)
                how = (
                    "the names differ in their Unicode form (an accented letter as one character or as a letter and "
                    "an accent, as macOS stores names), which this file system tells apart"
                )
            found = found / same[0]
            continue
        stem = Path(_folded_name(part)).stem  # the file, converted: a.jpg for a.png
        others = [n for k, ns in names.items() for n in ns if Path(k).stem == stem] if i == len(parts) - 1 else []
        if len(others) == 1 and (found / others[0]).is_file():
            return found / others[0], "another extension"
        return None
    return (found, how) if found.is_file() or found.is_dir() else None


def _folded_name(name: str) -> str:
    """``name`` as file systems that ignore case and Unicode form compare it (NFC, case-folded)."""
    return unicodedata.normalize("NFC", name).casefold()


def _listing(folder: Path) -> dict[str, tuple[str, ...]]:
    """``folder``'s entries by their :func:`_folded_name` ({} where it cannot be listed)."""
    out: dict[str, list[str]] = collections.defaultdict(list)
    try:
        for entry in os.scandir(folder):
            out[_folded_name(entry.name)].append(entry.name)
    except OSError:
        return {}
    return {k: tuple(v) for k, v in out.items()}


def check_dicom(
    path: Path, name: str, options, min_frames: int, framing: sources.Framing = sources.DEFAULT_FRAMING
) -> tuple[tuple[str, str] | None, str | None, tuple[str, ...], np.ndarray | None]:
    """Returns ((problem code, why) or None, the :func:`pixel_digest` of its frame (a still's as
    a PNG's; a cine's first and last frames and their count), or None where they are not
    decoded, a cine's decoded frames' own digests (its first and last where they hold a picture:
    a still exported from either is the same picture), and a still's thumbnail of its framed region
    (:func:`lnm_jax.data.cohorts.similar.thumbnail`; None for a cine)). A problem where the
    DICOM file cannot give input ``name`` as ``framing`` reads it: another modality than
    ultrasound (or a secondary capture, unless accepted), unreadable header, no image, a header
    that disagrees with its pixel data (frame count, palette depth), a missing codec, an
    undecodable first or last frame, an ambiguous dual display, a cine shorter than
    ``min_frames``. The framing columns the file cannot take (``options``) are raised, as
    :class:`lnm_jax.data.pixels.sources.ImageOptionError` naming the column
    (:class:`~lnm_jax.data.pixels.sources.ImageOptionErrors` for more than one)."""
    from lnm_jax.data.pixels import dicom  # noqa: PLC0415

    try:
        header = dicom.read_header(path)  # the size limit before any frame is decoded
        dicom.check_ultrasound(header, framing.accept_secondary_capture)
        if header.columns * header.rows > MAX_IMAGE_PIXELS:
            size = f"{header.columns}x{header.rows}"
            return IMAGE_TOO_LARGE, f"frames are {size}, over {MAX_IMAGE_PIXELS / 1e6:.0f} megapixels"
        src = sources.resolve(path, name, options, framing.ceus_region)
        frames = [dicom.read_frame(src.header, index) for index in sorted({0, src.frames - 1})]
    except dicom.NotUltrasoundError as e:
        return (NOT_ULTRASOUND, str(e).removeprefix(f"{path}: ")), None, (), None
    except dicom.HeaderMismatchError as e:
        return (HEADER_MISMATCH, str(e).removeprefix(f"{path}: ")), None, (), None
    except sources.ImageOptionError:  # the file is fine; a framing column does not fit it
        raise
    except (DicomError, ValueError) as e:
        return (UNUSABLE_DICOM, str(e).removeprefix(f"{path}: ")), None, (), None
    # a still as any still's (its PNG export is the same picture); a cine with its frame count
    thumb = None
    if src.frames == 1:
        digest, each, thumb = pixel_digest(frames), (), thumbnail(frames[0], src.box)
        if bad := blank(frames[0]):
            return bad, digest, each, thumb
    else:
        digest = pixel_digest([*frames, np.array([src.frames])])
        each = tuple(pixel_digest([f]) for f in frames if blank(f) is None)  # (a black lead-in frame: no picture)
        if not each and (bad := _no_frame_a_picture(blank(max(frames, key=lambda f: float(f.max()))))):
            return bad, digest, each, thumb  # (the first and the last frame read)
    if name == CEUS and src.still_frame is None and src.frames < min_frames:
        short = f"cine has {src.frames} frame(s), fewer than the {min_frames} asked for (data.clip_frames)"
        return (CLIP_TOO_SHORT, short), digest, each, thumb
    return None, digest, each, thumb


def check_clip(
    path: Path, min_frames: int, crop: sources.Box | None = None
) -> tuple[tuple[str, str] | None, tuple[str, ...], tuple[str, ...]]:
    """Returns (problem code, why) if the clip at ``path`` is unreadable (a frame that does not
    decode, frames of different sizes, over the clip limits) or has fewer than ``min_frames``
    frames that decode, None if it is fine; each decoded frame's :func:`pixel_digest`, in
    order; and those of the frames that hold a picture (not :func:`blank`: a black or nearly
    black lead-in frame, which clips of different patients share, is no picture of either).
    None of either where it is unreadable. Every frame is decoded once: a frame folder's files
    each checked whole, a video streamed as training reads it (its declared frame count is not
    trusted: what decodes is counted). Each frame is judged inside ``crop`` (its ``ceus_crop``), the
    picture the model sees, as a still is (helper-122: a crop of a black band said nothing of)."""
    digests, pictures = [], []
    brightest: tuple[float, tuple[str, str] | None] = (-1.0, None)  # the brightest frame holding no picture
    transparent: list[tuple[str, tuple[str, str]]] = []  # (frame, verdict) of frames with transparent pixels

    def take(img: np.ndarray, name: str, verdict: tuple[str, str] | None) -> None:
        nonlocal brightest
        digests.append(pixel_digest([img]))
        if verdict is not None:
            transparent.append((name, verdict))
        if (verdict := _framed_blank(img, crop)) is None:
            pictures.append(digests[-1])
        elif (top := float(img.max())) > brightest[0]:
            brightest = (top, verdict)

    try:
        if path.is_dir():
            for f in frame_files(path):
                bad, img = _decoded(f)
                if img is None:
                    return (UNREADABLE_CLIP, f"frame {f.name}: {bad[1]}"), (), ()
                take(img, f.name, _transparency(f, crop))
            n = check_frame_folder(path)
        else:
            for k, (frame, rgba) in enumerate(frames_as_stored(path)):
                take(frame, f"frame {k}", None if rgba is None else _transparent(rgba[..., 3], rgba[..., :3], crop))
            n = len(digests)
    except ClipError as e:
        return (UNREADABLE_CLIP, str(e).removeprefix(f"{path}: ")), (), ()
    if n < min_frames:
        short = f"clip has {n} frame(s), fewer than the {min_frames} asked for (data.clip_frames)"
        return (CLIP_TOO_SHORT, short), (), ()
    verdict = _no_frame_a_picture(brightest[1] if not pictures else None)
    if transparent and verdict is None:  # (a clip's frames read as a still is: helper-121 found them over black unsaid)
        (first, (code, why)), count = transparent[0], len(transparent)
        verdict = code, f"{count} of {n} frames have transparent pixels; the first, {first}: {why}"
    return verdict, tuple(digests), tuple(pictures)


def _not_a_still(path: Path) -> str:
    """Why a B-mode ``path`` that :func:`is_clip` names is refused: a video, a folder of frames,
    or a folder that holds none (an empty folder named ``X.png`` had been called a clip:
    stop 88's trial)."""
    try:
        frames = not path.is_dir() or any(p.suffix.lower() in FRAME_SUFFIXES for p in path.iterdir())
    except OSError:
        frames = True  # (a folder that cannot be listed: its frames' reader says so for a CEUS clip)
    if not frames:
        return f"is a folder holding no {'/'.join(FRAME_SUFFIXES)} frames, not an image file: B-mode is a still image"
    return "B-mode must be a still image, not a clip"


def _no_frame_a_picture(verdict: tuple[str, str] | None) -> tuple[str, str] | None:
    """A clip's or cine's warning where none of its frames holds a picture: ``verdict``, the
    :func:`blank` of its brightest frame, said of every frame (helper-59: a clip of 16-bit
    frames holding 8-bit values, read nearly black, had been said nothing of, where the same
    frame as a still was ``dim_image``); None where ``verdict`` is."""
    return None if verdict is None else (verdict[0], f"no frame holds a picture; the brightest: {verdict[1]}")


def _masks(
    rec, base, images, options, row, problems, check_images, ceus_region
) -> tuple[dict[str, Path], dict[str, str]]:
    """The row's lesion masks (``<input>_mask`` cells), each checked against its image
    (:func:`lnm_jax.data.pixels.masks.check_mask`): a problem per bad one; and each good
    mask's :func:`pixel_digest`, where checked."""
    out, digests = {}, {}
    for col in IMAGE_COLUMNS:
        cell, column = rec.get(mask(col), ""), mask(col)
        if not cell:
            continue
        file = Path(cell) if Path(cell).is_absolute() else base / cell
        if images[col] is None:
            problems.append(Problem(MASK_WITHOUT_IMAGE, f"a mask is given but no {col} image", row, column, str(file)))
            continue
        if (why := missing_path(file, base)) is not None or not file.is_file():
            problems.append(Problem(MISSING_FILE, f"mask file {why or 'is not a file'}", row, column, str(file)))
            continue
        if image := next((c for c in IMAGE_COLUMNS if images[c] is not None and _same_file(file, images[c])), None):
            said = (
                f"the mask is the row's {SETTING_LABELS[image]} image itself (the image column copied into the mask "
                "column?): a lesion mask is a binary outline drawn on the image, in a file of its own"
            )
            problems.append(Problem(MASK_NOT_SEGMENTATION, said, row, column, str(file)))
            continue
        out[col] = file
        if not check_images or any(p.row == row and p.column == col for p in problems):
            continue  # its image is already reported
        try:
            source = sources.resolve(images[col], col, options[col], ceus_region)
        except (OSError, UnidentifiedImageError, ValueError):
            continue  # the image's own problem, reported for its column (or deliberately not checked)
        try:
            digests[col] = pixel_digest([check_mask(file, source)])
        except MaskError as e:
            problems.append(Problem(e.code, str(e), row, column, str(file)))
        except (OSError, UnidentifiedImageError, ValueError) as e:
            problems.append(Problem(UNREADABLE_IMAGE, unreadable(file, "mask", e), row, column, str(file)))
    return out, digests


def _same_file(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` are one file (links and other spellings alike); False where
    either cannot be looked at (or named in this locale's encoding: its own problem)."""
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):
        return False


def parse_binary(value: str) -> int | None | str:
    """'0'/'1' (or '0.0'/'1.0', :data:`BINARY_VALUE`) -> int, '' -> None, anything else -> the
    offending string."""
    value = value.strip()
    if value == "":
        return None
    return int(found[1]) if (found := BINARY_VALUE.fullmatch(value)) else value


def whole_columns(said: Sequence[Problem], patients: Sequence[Patient]) -> list[str]:
    """The image inputs (by name: 'CEUS') every picture of which ``said`` (one warning's rows)
    names, among ``patients`` (helper-123: "80 image(s) hold no picture" on a cohort of 80 had
    not said it was every CEUS picture, which a branch learns nothing from)."""
    whole = []
    for column in dict.fromkeys(w.column for w in said if w.column in IMAGE_INPUTS):
        held = sum(p.has(column) for p in patients)
        if held > 1 and sum(w.column == column for w in said) == held:
            whole.append(SETTING_LABELS[column])
    return whole


def _coded_one_two(cells: list[str]) -> str | None:
    """The line of a binary column whose every value (of four or more) is 1 or 2, two 2s or more
    among them: no and yes as a statistics package codes them (SPSS's 1 = no, 2 = yes), where
    the 1s read as yes (helper-124: each 2 was refused alone, the rows of 1 counted among the
    valid positives, so that mending the 2s would have made every patient positive); None
    otherwise."""
    values = collections.Counter(v.strip().removesuffix(".0") for v in cells if v.strip())
    if set(values) - {"1", "2"} or values["2"] < 2 or values.total() < 4:  # (a 2 or two alone: a typo's to say)
        return None
    return (
        f"holds only 1 and 2 ({values['1']} and {values['2']} rows): no and yes coded 1 and 2, as a statistics "
        "package exports them? its 1s would read as yes; write 0 for 1 and 1 for 2"
    )


def binary_word_hint(value: str) -> str:
    """': ...' naming the number a word of :data:`BINARY_WORDS` stands for, or, for a mark of
    :data:`NOT_RECORDED`, that an unknown value is an empty cell; else ''."""
    if value.strip().lower() in NOT_RECORDED:
        return ": a mark of a value not recorded? leave the cell empty"
    number = BINARY_WORDS.get(value.strip().lower())
    if number is None:
        return ""
    return f": a word where a number is read (none is guessed at); write {number} for '{value}' in this column"


def read_manifest(
    path: Path | str,
    *,
    require_labels: bool = True,
    check_images: bool = True,
    min_clip_frames: int = 1,
    framing: sources.Framing = sources.DEFAULT_FRAMING,
    warn: bool = True,
    inputs: Sequence[str] | None = None,
) -> Cohort:
    """Reads and validates a manifest; raises :class:`ManifestError` listing every problem.
    ``warn=False``: its warnings (``blank_image``) are not said (a command checking a copy it
    wrote of a manifest it has read, whose warnings were said for the original; ``validate``,
    which lists every one of :attr:`Cohort.warnings`, where the line says three).

    ``require_labels=False`` reads a manifest of new patients (``predict``): the ``lnm``
    column may then be absent or empty. ``min_clip_frames``: the frames a CEUS clip must have
    (the configured ``data.clip_frames``); ``framing``: how the reader frames the images
    (``data.ceus_region``, to check that a CEUS dual display's contrast side can be told;
    ``data.accept_secondary_capture``: DICOM secondary captures are refused otherwise). A
    reader with a config passes :func:`manifest_checks` of its ``config.data``, so that what
    validation accepts is what that reader reads.

    ``inputs`` (names of :data:`lnm_jax.names.INPUTS`; default all): the inputs read, for a
    model that takes only these (``predict`` with a B-mode model at a site without CEUS). The
    other inputs' columns (an image's framing options and mask with it) are neither required
    nor read: their patients hold None there, as for a column the manifest lacks.
    ValueError: an unknown input name.
    """
    path = Path(path)
    taken = tuple(INPUTS) if inputs is None else tuple(inputs)
    if unknown_inputs := [i for i in taken if i not in INPUTS]:
        raise ValueError(f"unknown input(s) {unknown_inputs}, expected names of {list(INPUTS)}")
    unread = {c for i in INPUTS if i not in taken for c in ((i,) if i == US_LNM else _input_columns(i).values())}
    try:
        raw = table_bytes(path)
        text = decode_table(raw)
    except OSError as e:
        raise ManifestError(path, [Problem(UNREADABLE_MANIFEST, f"cannot read manifest: {e}")]) from e
    except TableTextError as e:
        raise ManifestError(path, [Problem(UNREADABLE_MANIFEST, str(e))]) from e
    reader = table_reader(text)
    required = [c for c in (REQUIRED_COLUMNS if require_labels else REQUIRED_COLUMNS[:-1]) if c not in unread]
    head = _read_header(path, text, reader, required, unread, taken)
    header, unread, unheld, imageless, option_columns = (
        head.columns,
        head.unread,
        head.unheld,
        head.imageless,
        head.option_columns,
    )
    problems: list[Problem] = list(head.problems)  # said with the rows' problems: a manifest is mended in one pass

    base = path.parent
    patients: list[Patient] = []
    seen: dict[str, int] = {}
    folded: dict[str, str] = {}  # each ID seen, by its case-folded form
    metadata_columns = tuple(
        h
        for h in header
        if h not in REQUIRED_COLUMNS and h not in option_columns and h not in MASK_COLUMNS and h not in unread
    )
    records, id_problems, extra_problems, no_cell = [], {}, {}, {}
    try:
        read_rows = list(data_rows(reader, text, functools.partial(_is_manifest_row, base=path.parent)))
    except TableTextError as e:
        raise ManifestError(path, [Problem(UNREADABLE_MANIFEST, str(e))]) from e
    for row, read in read_rows:
        rec = {k: (v or "").strip() for k, v in read.items() if k is not None and k not in unread}
        records.append((row, rec))
        if beyond := [c for c in read.get(None) or () if c.strip()]:  # csv.DictReader's cells past the header
            extra_problems[row] = Problem(
                EXTRA_CELLS,
                f"row has {len(header) + len(read[None])} cells, the header {len(header)}: "
                f"{', '.join(repr(c) for c in beyond[:3])} would be dropped and the cells before them may "
                'be in the wrong columns; quote a cell that holds a comma ("0,0,8,8")',
                row,
            )
        # DictReader's short-row filler; an unnamed column (a header's trailing comma over one row's
        # note, helper-106) is no cell a row lacks
        if absent := [h for h in header if read.get(h) is None and h not in unread and h]:
            no_cell[row] = set(absent) | unheld
            extra_problems[row] = Problem(
                SHORT_ROW,
                f"row has {len(header) - len(absent)} cells, the header {len(header)}: no cell for "
                f"{', '.join(absent)}; a cell left out puts those after it in the wrong columns (an empty "
                "cell is written as nothing between two commas)",
                row,
            )
        if (said := _id_problem(rec.get(PATIENT_ID, ""), row, seen, folded)) is not None:
            id_problems[row] = said

    # rows' files checked on threads (lnm_jax.data.threads); problems listed in row order, as one
    # thread would list them
    check = functools.partial(
        _check_row,
        base=base,
        metadata_columns=metadata_columns,
        require_labels=require_labels,
        check_images=check_images,
        min_clip_frames=min_clip_frames,
        framing=framing,
        inputs=taken,
    )
    order = {h: i for i, h in enumerate(header)}  # a row's problems in its columns' order, the row's own first
    pictures: dict[tuple, tuple] = {}  # each recording's first patient, column, frame and key
    outlines: dict[str, tuple[Patient, str]] = {}  # each lesion mask's first patient and image input
    # taken whole here: a generator left suspended in a frame that an error keeps alive is closed by
    # the garbage collector, on whatever thread it runs, joining the pool's threads from there (a
    # thread starting, which holds threading's lock the joined threads need: a deadlock, met)
    # (a bar on a terminal only, and only for a cohort whose check takes a while: helper-94's
    # 3,000 patients had been checked for 137 s in silence)
    rows_checked = list(
        tqdm(
            ordered_map(check, records, min(cpus(), MAX_CHECK_THREADS)),
            total=len(records),
            desc=f"checking {path.name}",
            unit="row",
            leave=False,
            disable=None if len(records) >= PROGRESS_ROWS else True,
        )
    )
    near = _similar_pictures([patient for patient, _ in rows_checked])
    for (row, _), (patient, found) in zip(records, rows_checked):
        found += _shared_pictures(patient, pictures, labelled=require_labels)
        found += _shared_masks(patient, outlines)
        found += near.get(patient.row, [])
        found = [
            p
            for p in (id_problems.get(row), *found)
            if p is not None
            and p.column not in no_cell.get(row, unheld)
            and not (p.column in imageless and p.code in (OPTION_WITHOUT_IMAGE, MASK_WITHOUT_IMAGE))
        ]
        problems += [p for p in (extra_problems.get(row),) if p is not None]  # (a missing cell: said there)
        problems += sorted(found, key=lambda p: order.get(p.column, -1))
        patients.append(patient)

    for column, code in ((LABEL, BAD_LABEL_VALUE), (US_LNM, BAD_FLAG_VALUE)):
        if column not in unread and (coded := _coded_one_two([rec.get(column, "") for _, rec in records])):
            problems.append(Problem(code, coded, column=column))
    if not patients:
        problems.append(Problem(EMPTY_COHORT, "manifest has a header but no patients"))
    elif require_labels and LABEL not in unheld:
        for cls in (0, 1):
            if not any(p.lnm == cls for p in patients) and not any(p.code == BAD_LABEL_VALUE for p in problems):
                problems.append(
                    Problem(MISSING_CLASS, f"no patient has lnm={cls}; both classes are needed", column=LABEL)
                )
    problems = _said_beside_link_target(path, base, problems)
    warned = WARNING_CODES if require_labels else UNLABELLED_WARNING_CODES
    warnings = [p for p in problems if p.code in warned]
    if len(warnings) < len(problems):
        refused = {p.row for p in problems if p.code not in warned}
        readable = Cohort(
            path=path,
            patients=tuple(p for p in patients if p.row not in refused),
            metadata_columns=metadata_columns,
            sha256=hashlib.sha256(raw).hexdigest(),
            warnings=tuple(w for w in warnings if w.row not in refused),
        )
        raise ManifestError(path, problems, warned, readable if None not in refused else None)
    for code, words in warned.items() if warn else ():  # once per manifest and process, by every command
        if said := [w for w in warnings if w.code == code]:
            shown = "; ".join(map(str, said[:3])) + (f"; {len(said) - 3} more" if len(said) > 3 else "")
            whole = ", ".join(f"every {name} image" for name in whole_columns(said, patients))
            warn_once(f"{path}: {len(said)} {words}{f' ({whole})' if whole else ''}: {shown}", (path, code))
    if warn and (skipped := [h for h in header if h in unread]):
        print(
            f"note: {path}: column(s) {', '.join(skipped)} not read (the inputs read: {', '.join(taken)})",
            file=sys.stderr,
        )
    return Cohort(
        path=path,
        patients=tuple(patients),
        metadata_columns=metadata_columns,
        sha256=hashlib.sha256(raw).hexdigest(),
        warnings=tuple(warnings),
    )


def _id_problem(pid: str, row: int, seen: dict[str, int], folded: dict[str, str]) -> Problem | None:
    """The problem of row ``row``'s patient ID ``pid`` (empty, not a safe file name, already used,
    or another row's but for letter case), or None, ``pid`` then added to ``seen`` (each ID's
    row) and ``folded`` (each ID by its case-folded form)."""
    if not pid:
        return Problem(EMPTY_PATIENT_ID, "patient_id is empty", row, PATIENT_ID)
    if not PATIENT_ID_PATTERN.fullmatch(pid):
        excel = (
            ": a long number a spreadsheet wrote in scientific notation, its digits lost? format the column as text "
            "and export again"
            if SCIENTIFIC.fullmatch(pid)
            else ""
        )
        return Problem(
            BAD_PATIENT_ID,
            f"patient_id {pid!r} is not a safe file name: use letters, digits, '.', '_' and '-' "
            f"(not starting with '.' or '-'), at most 128 characters{excel}",
            row,
            PATIENT_ID,
        )
    if RESERVED_FILE_NAMES.fullmatch(pid):
        return Problem(
            BAD_PATIENT_ID,
            f"patient_id {pid!r} is not a safe file name: Windows reserves it for a device (CON, PRN, AUX, NUL, "
            "COM0-9, LPT0-9, with any extension)",
            row,
            PATIENT_ID,
        )
    if pid in seen:
        return Problem(DUPLICATE_PATIENT_ID, f"patient_id '{pid}' already used in row {seen[pid]}", row, PATIENT_ID)
    if (other := folded.get(pid.casefold())) is not None:
        # one patient typed twice, or two whose files (named by their IDs) are one file where
        # case is not told apart (macOS, Windows); deidentify had made them two (helper-83)
        return Problem(
            DUPLICATE_PATIENT_ID,
            f"patient_id '{pid}' is row {seen[other]}'s '{other}' but for letter case: one patient twice, or "
            "two whose files are one file where case is not told apart (macOS, Windows); give one ID each",
            row,
            PATIENT_ID,
        )
    seen[pid] = row
    folded[pid.casefold()] = pid
    return None


@dataclasses.dataclass(frozen=True)
class _Header:
    """A manifest's header as :func:`read_manifest` reads its rows (:func:`_read_header`)."""

    columns: list[str]  # its names, a known column's other spelling as that column (where it is missing)
    problems: tuple[Problem, ...]  # misnamed and missing columns, said with the rows' problems
    unread: set[str]  # the columns of inputs not read, in any spelling
    unheld: set[str]  # required columns it lacks (in any spelling)
    imageless: set[str]  # the option and mask columns of an input whose image column is missing
    option_columns: set[str]  # every input's framing option columns


def _read_header(
    path: Path, text: str, reader: csv.DictReader, required: list[str], unread: set[str], taken: tuple[str, ...]
) -> _Header:
    """The header of the manifest at ``path`` (``reader``: :func:`table_reader` of its ``text``,
    whose ``fieldnames`` become :attr:`_Header.columns`): :class:`ManifestError` where no row can
    be read as it stands (a title row above it, a column named twice, another delimiter); its
    misnamed and missing columns otherwise, as problems said with the rows'. ``required``: the
    columns needed; ``unread``, ``taken``: as in :func:`read_manifest`."""
    header = reader.fieldnames or []
    if not set(required) <= set(header) and (below := header_below(text, reader.line_num, required)) is not None:
        line, cells = below
        raise ManifestError(
            path,
            [
                Problem(
                    MISSING_COLUMN,
                    f"the header ({','.join(cells)[:80]!r}) is on line {line}, below line(s) that are no manifest's "
                    f"(line {reader.line_num}: {','.join(header)[:60]!r}): delete the lines above the header",
                )
            ],
        )
    if twice := repeated_columns(header):  # csv.DictReader would keep the last copy's cells in silence
        raise ManifestError(
            path,
            [
                Problem(
                    DUPLICATE_COLUMN,
                    f"column is {'named' if h else 'unnamed'} {len(at)} times (columns {', '.join(map(str, at))})",
                    column=h or "(no name)",
                )
                for h, at in twice.items()
            ],
        )
    missing = [c for c in required if c not in header]
    if missing and (why := delimiter_hint(header)):
        raise ManifestError(
            path,
            [Problem(WRONG_DELIMITER, f"{why}; a manifest is comma-separated")],
        )
    option_columns = {c for cols in OPTION_COLUMNS.values() for c in cols.values()}
    # a known column spelled in another case or with spaces/hyphens (BMODE_CROP, Bmode Mask, as a
    # spreadsheet writes them) would be read as metadata: no crop, no mask, in silence
    known = {_folded(c): c for c in (*REQUIRED_COLUMNS, *option_columns, *MASK_COLUMNS)}
    unread_folded = {_folded(c) for c in unread}  # (columns of inputs not read: not checked either)
    # in any spelling (CEUS, Ceus_Crop): not read, said so, never kept as metadata (helper-97)
    unread = unread | {h for h in header if _folded(h) in unread_folded}
    misnamed = [
        (h, known[_folded(h)])
        for h in header
        if h not in known.values() and _folded(h) in known and _folded(h) not in unread_folded
    ]
    spaced = [
        h
        for h in header
        if _folded(h) not in known
        and (m := _INPUT_PREFIX.fullmatch(h.strip()))
        and re.sub(r"\W|_", "", m[1]).casefold() in taken  # (an unread input's namespace is not checked)
    ]
    unknown, filled = [], collections.Counter()
    if misnamed or spaced:  # the cells each column holds, read apart from the rows below
        cells = cells_below_header(text, reader.line_num)
        filled = collections.Counter(header[i] for r in cells for i, v in enumerate(r[: len(header)]) if v.strip())
        unknown = [(h, why) for h in spaced if (why := _unknown_input_column(h, header, filled))]
    # the rows are checked as the header means them: a column in another spelling as the column it
    # spells (where the manifest lacks that one), a missing column's cells not said row by row
    spelt = {h: c for h, c in misnamed if c not in header and [k for _, k in misnamed].count(c) == 1}
    meant = {spelt.get(h, h) for h in header}  # a mask's or option's cells are checked only beside their image's
    checked = {h for h, c in spelt.items() if all(n in meant for n in IMAGE_COLUMNS if c in _input_columns(n).values())}
    problems = [
        *(Problem(MISNAMED_COLUMN, _misnamed(h, c, header, filled, h in checked), column=h) for h, c in misnamed),
        *(Problem(MISNAMED_COLUMN, why, column=h) for h, why in unknown),
        *(
            Problem(MISSING_COLUMN, f"required column is missing (header: {header})", column=c)
            for c in missing
            if c not in {known_as for _, known_as in misnamed}
        ),
    ]
    header = reader.fieldnames = [spelt.get(h, h) for h in header]
    unheld = set(missing) - set(spelt.values())
    # an input whose image column is missing: its other cells are not said to lack an image, row by row
    imageless = {c for name in IMAGE_COLUMNS if name in unheld for f, c in _input_columns(name).items() if f}
    return _Header(header, tuple(problems), unread, unheld, imageless, option_columns)


# what a manifest's image cell names: a picture, a DICOM file, a video (or a folder of frames, told by its existence)
_INPUT_SUFFIXES = (*FRAME_SUFFIXES, *DICOM_SUFFIXES, *VIDEO_SUFFIXES)


def _is_manifest_row(cells: dict, base: Path) -> bool:
    """Whether a line inside a quoted cell, read as a record (column -> cell), is a manifest's
    row (:func:`data_rows`' ``looks_like_row``): a patient ID and an image cell that names an
    image file by its suffix, or a file or folder that exists (a comment's words do neither)."""
    pid = (cells.get(PATIENT_ID) or "").strip()
    images = [(cells.get(c) or "").strip() for c in IMAGE_COLUMNS]
    return bool(PATIENT_ID_PATTERN.fullmatch(pid)) and any(
        i and (i.lower().endswith(_INPUT_SUFFIXES) or (base / i).exists()) for i in images
    )


def manifest_checks(data) -> dict:
    """What reading a manifest checks against a config's ``data`` fields, as keyword arguments
    of :func:`read_manifest`: the CEUS clip length (``data.clip_frames``) and the framing
    (:meth:`lnm_jax.data.pixels.sources.Framing.from_config`: dual-display side, secondary
    captures). Every reader with a config reads its manifests with these."""
    return {"min_clip_frames": int(data.get("clip_frames", 1)), "framing": sources.Framing.from_config(data)}


def write_manifest(path: Path, rows: list[dict[str, object]], extra_columns: Iterable[str] = ()) -> None:
    """Writes a manifest atomically (temp file + rename): never a half-written CSV."""
    columns = list(REQUIRED_COLUMNS) + [c for c in extra_columns if c not in REQUIRED_COLUMNS]
    write_csv(path, rows, columns)


# threads checking a manifest's files (read_manifest): enough to keep a many-core machine's
# disks and decoders busy, few enough that open files stay far under the usual limits
MAX_CHECK_THREADS = 32
PROGRESS_ROWS = 200  # a manifest of this many rows or more shows a progress bar on a terminal


def picture_keys(
    file: Path, options: sources.ImageOptions, check_images: bool, digest: str | None, frames: Iterable[str] = ()
) -> tuple[tuple, ...]:
    """What tells one picture from another, the whole input's key first: its decoded pixels
    (``digest``: a still's or DICOM file's :func:`pixel_digest`, a clip's :func:`clip_digest`),
    else the content of the file or frame folder (:func:`lnm_jax.fileio.content_digest`), or
    its resolved path where images are not checked; with the crop and frame taken from it (a
    dual display's two halves are pictures apart). Then a key per decoded frame of a clip or
    cine (``frames``: their digests), so that a frame saved as a still, or a clip cut shorter,
    is found in the clip it came from. Two keys are one recording where their first two fields
    agree (:func:`recording`): any frame of a cine is that cine."""
    content = digest or (content_digest(file) if check_images else str(file.resolve()))
    return ((content, options.crop, options.frame), *((d, options.crop, None) for d in dict.fromkeys(frames)))


def recording(key: tuple) -> tuple:
    """A :func:`picture_keys` key less its frame: the recording (file content and crop) it is
    read from."""
    return key[:2]


def pictures_among(
    pictures: Sequence[tuple[tuple[tuple, ...], np.ndarray | None]],
    reference: Sequence[tuple[tuple[tuple, ...], np.ndarray | None]],
) -> list[int | None]:
    """For each picture (its :func:`picture_keys` and its still's thumbnail or None), the index
    of the one of ``reference`` it is, or None: the same recording (:func:`recording`: the
    picture, a frame of a clip or cine, the cine itself; the first such), or nearly one of its
    stills (:func:`lnm_jax.data.cohorts.similar.nearest_within`: a JPEG re-encode, another bit
    depth, resized, mirrored; the nearest)."""
    held: dict[tuple, int] = {}
    for j, (keys, _) in enumerate(reference):
        for k in keys:
            held.setdefault(recording(k), j)
    stills = [j for j, (_, t) in enumerate(reference) if t is not None]
    looked = [i for i, (_, t) in enumerate(pictures) if t is not None]
    hits = nearest_within([pictures[i][1] for i in looked], [reference[j][1] for j in stills])
    near = {i: stills[hit] for i, hit in zip(looked, hits) if hit is not None}
    out = []
    for i, (keys, _) in enumerate(pictures):
        same = next((held[recording(k)] for k in keys if recording(k) in held), None)
        out.append(same if same is not None else near.get(i))
    return out


def _shared_pictures(patient: Patient, first: dict[tuple, tuple], labelled: bool = True) -> list[Problem]:
    """``patient``'s pictures (:attr:`Patient.pictures`) already seen, recorded in ``first`` by
    :func:`recording` as they come: one recording as another patient's image (the same picture,
    a frame of their clip, a frame of their cine or the cine itself, two frames of one clip in
    another's: frames that hold a picture, :func:`check_clip`) is ``shared_image``, which
    can put it in train and test (a column filled down in a spreadsheet, a study exported under
    two ids; in a manifest of new patients, not ``labelled``, a warning); as this patient's
    other input, where the file does not frame them apart (:func:`_regions_apart`),
    ``same_picture``."""
    problems = []
    for col, keys in patient.pictures.items():
        file = getattr(patient, col)
        held: dict[tuple, tuple[int, tuple]] = {}  # each recording's first key here: the whole input's first
        for i, k in enumerate(keys):
            held.setdefault(recording(k), (i, k))
        hits = [(held[r], first[r]) for r in held if r in first and first[r][:2] != (patient, col)]
        # two clips that share one frame, and nothing else, are not one recording: a lead-in frame
        # of the scanner's screen alone (black, its overlay) repeats across patients' clips
        frame_only = collections.Counter((id(h[1][0]), h[1][1]) for h in hits if h[0][0] and h[1][2])
        hit = next((h for h in hits if not (h[0][0] and h[1][2]) or frame_only[id(h[1][0]), h[1][1]] > 1), None)
        for r, (i, k) in held.items():
            first.setdefault(r, (patient, col, i, k))
        if hit is None:
            continue
        (ours, key), (other, at, theirs, their_key) = hit
        named = "" if getattr(other, at) == file else f" ('{getattr(other, at)}', the same pixels)"
        if ours:
            how = "a frame of this clip is " + ("a frame of " if theirs else "")
        else:
            how = "the same picture as " if key == their_key or theirs else "the same recording as "
            how += "a frame of " if theirs else ""
        if other is not patient:
            why = f"{how}row {other.row}'s {at} (patient '{other.patient_id}'){named}: " + (
                "one image for two patients can sit in training and test alike; give each patient their own image, "
                "or leave the cell empty (a column filled down in a spreadsheet?)"
                if labelled
                else "both are read from one image (a column filled down in a spreadsheet?); with labels to train "
                "on, it is refused (it can sit in training and test alike)"
            )
            problems.append(Problem(SHARED_IMAGE, why, patient.row, col, str(file)))
        elif not _regions_apart(patient, file):
            why = f"{how}this patient's {at}{named}: the B-mode and CEUS branches see the same pixels"
            problems.append(Problem(SAME_PICTURE, why, patient.row, col, str(file)))
    return problems


def _similar_pictures(patients: list[Patient]) -> dict[int, list[Problem]]:
    """``similar_image`` (a warning), by row: a still nearly the same picture as an earlier
    still of another patient (:mod:`lnm_jax.data.cohorts.similar`: a JPEG re-encode, another
    bit depth, resized, mirrored, its crop a pixel off), said once per column, naming the first; not
    where the two are one picture exactly (that is ``shared_image``)."""
    where = [(patient, col) for patient in patients for col in patient.thumbnails]
    found = earlier_similar([patient.thumbnail(col) for patient, col in where], [id(p) for p, _ in where])
    out: dict[int, list[Problem]] = {}
    for (patient, col), hit in zip(where, found):
        if hit is None:
            continue
        (other, at), rms, mirror = where[hit[0]], hit[1], hit[2]
        if {recording(k) for k in patient.pictures[col]} & {recording(k) for k in other.pictures[at]}:
            continue  # one picture exactly: shared_image said it
        why = (
            f"nearly the same picture as row {other.row}'s {at} (patient '{other.patient_id}', "
            f"'{getattr(other, at)}'): their {THUMB}x{THUMB} thumbnails differ by {rms:.4f} RMS"
            f"{', one mirrored left to right' if mirror else ''}, at most {SIMILAR_RMS} being a copy's difference (a "
            "JPEG re-encode, another bit depth, resized, mirrored, its crop a pixel off; different "
            f"patients' pictures in BUS-BRA and DDTI differ by {NEAREST_DIFFERENT} or more): one image for two "
            "patients; every split keeps the two in one subset"
        )
        out.setdefault(patient.row, []).append(
            Problem(SIMILAR_IMAGE, why, patient.row, col, str(getattr(patient, col)))
        )
    return out


def _shared_masks(patient: Patient, first: dict[str, tuple[Patient, str]]) -> list[Problem]:
    """``shared_mask`` (a warning) where one of ``patient``'s lesion masks holds the pixels of
    another patient's mask seen before (recorded in ``first`` as they come): one outline for
    two patients' images, a mask column filled down or a file copied for the wrong patient (the
    lesion head learns, and the pointing game scores, an outline drawn on another image). Two
    box masks that happen to coincide are the same pixels too, which is why it is a warning,
    not a refusal; one patient's B-mode and CEUS may share one (a dual display's two sides,
    halves of one capture: the lesion where it is in both)."""
    problems = []
    for col, digest in patient.mask_pictures.items():
        other, at = first.setdefault(digest, (patient, col))
        if other is patient:
            continue
        named = "" if other.mask(at) == patient.mask(col) else f" ('{other.mask(at)}', the same pixels)"
        why = (
            f"the same lesion mask as row {other.row}'s {mask(at)} (patient '{other.patient_id}'){named}: one "
            "outline for two patients' images; check that it was drawn on this one (a mask column filled down, "
            "a file copied for the wrong patient?)"
        )
        problems.append(Problem(SHARED_MASK, why, patient.row, mask(col), str(patient.mask(col))))
    return problems


def _regions_apart(patient: Patient, file: Path) -> bool:
    """Whether ``file``, a patient's B-mode and CEUS, frames them apart: a DICOM dual display's
    two regions (a DICOM file without them, or any other file, shows both branches one
    picture). A file whose regions cannot be told is taken as apart (its own problem is said)."""
    if not is_dicom(file):
        return False
    try:
        boxes = {sources.resolve(file, m, patient.image_options(m)).box for m in IMAGE_COLUMNS}
    except (OSError, ValueError):
        return True
    return len(boxes) > 1


def _option_problems(e: sources.ImageOptionError, row: int, file: Path) -> list[Problem]:
    """Each framing column's value that ``file`` cannot take, at the option's column."""
    said = getattr(e, "errors", (e,))
    return [Problem(BAD_IMAGE_OPTION, str(x).removeprefix(f"{file}: "), row, x.column, str(file)) for x in said]


def _check_row(
    record: tuple[int, dict[str, str]],
    *,
    base: Path,
    metadata_columns: tuple[str, ...],
    require_labels: bool,
    check_images: bool,
    min_clip_frames: int,
    framing: sources.Framing,
    inputs: tuple[str, ...] = INPUTS,
) -> tuple[Patient, list[Problem]]:
    """One manifest row's patient and the problems of its cells and files (not those of its
    patient_id or pictures, which depend on the other rows: :func:`read_manifest`)."""
    row, rec = record
    pid = rec.get(PATIENT_ID, "")
    problems: list[Problem] = []
    images: dict[str, Path | None] = {}
    options: dict[str, sources.ImageOptions] = {}
    digests: dict[str, str | None] = {}  # each still's, clip's or DICOM file's pixel_digest, where checked
    frames: dict[str, tuple[str, ...]] = {}  # a clip's or cine's decoded frames' own digests
    thumbs: dict[str, np.ndarray | None] = {}  # each still's thumbnail (lnm_jax.data.cohorts.similar)
    for col in IMAGE_COLUMNS:
        cell = rec.get(col, "")
        options[col] = sources.NO_OPTIONS
        if not cell:  # a framing cell of no image: filled down a column, or the image left out
            images[col] = None
            for c in sources.option_columns(col).values():
                if rec.get(c):
                    problems.append(Problem(OPTION_WITHOUT_IMAGE, f"{c} is given but no {col} image", row, c))
            continue
        try:
            options[col] = sources.parse_options(col, rec)
        except sources.OptionErrors as bad:  # its well-formed cells are checked against the file all the same
            problems += [Problem(BAD_IMAGE_OPTION, str(e), row, e.column) for e in bad.errors]
            options[col] = bad.options
        file = Path(cell) if Path(cell).is_absolute() else base / cell
        images[col] = file
        if (why := missing_path(file, base)) is not None:
            kind = "clip" if col == CEUS and (is_clip(file) or not file.suffix) else "image file"  # (a frame folder)
            problems.append(Problem(MISSING_FILE, f"{kind} {why}", row, col, str(file)))
        elif is_dicom(file):
            bad = None
            try:
                if check_images:
                    bad, digests[col], frames[col], thumbs[col] = check_dicom(
                        file, col, options[col], min_clip_frames, framing
                    )
            except sources.ImageOptionError as e:
                problems += _option_problems(e, row, file)
            if bad:
                problems.append(Problem(bad[0], bad[1], row, col, str(file)))
        elif col == CEUS and is_clip(file):
            if check_images:
                bad, each, frames[col] = check_clip(file, min_clip_frames, options[col].crop)
                if bad is not None:
                    problems.append(Problem(bad[0], bad[1], row, col, str(file)))
                digests[col] = clip_digest(each) if each else None
        elif is_clip(file):
            problems.append(Problem(UNREADABLE_IMAGE, _not_a_still(file), row, col, str(file)))
        elif not file.is_file():
            problems.append(Problem(MISSING_FILE, "image path is not a file", row, col, str(file)))
        elif check_images:
            bad, digests[col], thumbs[col] = checked_still(file, crop=options[col].crop)
            if bad is not None:
                problems.append(Problem(bad[0], bad[1], row, col, str(file)))
        if (
            options[col] != sources.NO_OPTIONS
            and not is_dicom(file)  # (check_dicom resolved it with its options)
            and not any(
                p.row == row and p.column == col and p.code != CLIP_TOO_SHORT and p.code not in WARNING_CODES
                for p in problems
            )
        ):  # a crop beyond the image or the clip's frames, a frame a still lacks, a rate for a video (a dim one's too)
            try:
                sources.resolve(file, col, options[col])
            except sources.ImageOptionError as e:  # as for a DICOM file
                problems += _option_problems(e, row, file)
            except (OSError, ValueError) as e:  # (PIL's UnidentifiedImageError, ClipError among them)
                problems.append(Problem(UNREADABLE_IMAGE, f"cannot be read ({error_line(e)})", row, col, str(file)))
    masks, mask_digests = _masks(rec, base, images, options, row, problems, check_images, framing.ceus_region)
    # (a blank image's copies are no shared picture: it holds none)
    said = {p.column for p in problems if p.code != DIM_IMAGE}
    pictures = {
        c: picture_keys(f, options[c], check_images, digests.get(c), frames.get(c, ()))
        for c, f in images.items()
        if f is not None and c not in said
    }

    flag = parse_binary(rec.get(US_LNM, ""))
    if isinstance(flag, str):
        said = f"us_lnm must be 0, 1 or empty, got '{flag}'{binary_word_hint(flag)}"
        problems.append(Problem(BAD_FLAG_VALUE, said, row, US_LNM))
        flag = None
    label = parse_binary(rec.get(LABEL, ""))
    if isinstance(label, str) or (label is None and require_labels):
        shown = (
            "empty (new patients, without labels, are read by predict and validate --no-labels)"
            if label is None
            else f"'{label}'{binary_word_hint(label)}"
        )
        problems.append(Problem(BAD_LABEL_VALUE, f"lnm must be 0 or 1, got {shown}", row, LABEL))
        label = None
    if all((images[i] is None) if i in IMAGE_COLUMNS else (rec.get(i, "") == "") for i in inputs):
        problems.append(Problem(NO_INPUTS, f"patient has none of the inputs read ({', '.join(inputs)})", row))
    looked = {c: t.tobytes() for c, t in thumbs.items() if t is not None and c in pictures}  # (read without a problem)
    return (
        Patient(
            patient_id=pid,
            bmode=images[BMODE],
            ceus=images[CEUS],
            us_lnm=flag,
            lnm=label,
            row=row,
            metadata={c: rec.get(c, "") for c in metadata_columns},
            options={k: v for k, v in options.items() if v != sources.NO_OPTIONS},
            masks=masks,
            pictures=pictures,
            mask_pictures=mask_digests,
            thumbnails=looked,
        ),
        problems,
    )
