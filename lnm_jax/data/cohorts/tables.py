"""Tables as spreadsheets and hospital systems save them: the text of a CSV file and its rows.

Every table this project reads (a manifest, a source table such as BUS-BRA's, a site's
predictions for external validation) is read here: :func:`table_text` (or
:func:`decode_table`) gives its text, refusing what is not UTF-8 comma-separated text in one
line (:class:`TableTextError`: a workbook, another encoding, a quote left open),
:func:`table_reader` its header, and :func:`data_rows` its records with the row number an
editor shows. What a row means (a patient, a prediction) is the caller's.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from collections.abc import Callable, Iterator
from pathlib import Path


class TableTextError(ValueError):
    """A table file (a manifest, a source table) that is not comma-separated text this project
    reads: a spreadsheet's workbook, text in an encoding other than UTF-8 (with or without its
    byte-order mark) or UTF-16/32 with one. The message names the line and says how to save it;
    a reader puts the file's path before it."""


# a spreadsheet's own file, or another that is no text, given where a CSV was meant (the first
# bytes of each format)
_NOT_TEXT = {
    b"PK\x03\x04": "an Excel workbook (.xlsx, .ods) or another zip archive",
    b"\xd0\xcf\x11\xe0": "an Excel 97-2003 workbook (.xls)",
    b"\x1f\x8b": "gzip-compressed",
    b"%PDF": "a PDF document",
}
_LINE_END = re.compile(r"\r\n|\r|\n")  # as csv ends a line (a Mac export ends lines with CR alone)


def _line_at(before: str) -> int:
    """The line (from 1) that the text after ``before`` begins on."""
    return len(_LINE_END.findall(before)) + 1


# text that says its encoding by a byte-order mark: UTF-32 before UTF-16 (UTF-32 LE's mark begins
# with UTF-16 LE's). Excel's "Unicode Text" is UTF-16 LE with its mark
_MARKED = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
_SAVE_AS = "save it from the spreadsheet as 'CSV UTF-8 (comma delimited)'"


def table_text(path: Path | str) -> str:
    """The text of the table at ``path`` (:func:`decode_table`); ``OSError`` when it cannot be
    read. Every reader of a manifest or a source table reads its text here (or through
    :func:`decode_table`, with the bytes it hashes, :func:`table_bytes`), then its rows with
    :func:`table_reader`."""
    return decode_table(table_bytes(path))


def table_bytes(path: Path | str) -> bytes:
    """The bytes of the table file at ``path``; ``OSError`` when it cannot be read, or is a
    FIFO, socket or device, never opened (a manifest that was a FIFO had blocked ``validate``
    in its open; a table is read more than once, and its paths resolved from its folder, which
    a pipe such as a shell's ``<(...)`` has not)."""
    path = Path(path)
    if path.exists() and not path.is_file() and not path.is_dir():
        raise OSError("it is a FIFO, socket or device, not a file: save the table as a file in its cohort's folder")
    return path.read_bytes()


def decode_table(raw: bytes) -> str:
    """The text of a table file's bytes ``raw``: UTF-8 (a byte-order mark dropped), or
    UTF-16/UTF-32 where the file begins with that encoding's byte-order mark, which tells the
    encoding without a guess (Excel's "Unicode Text", tab-separated, is then said so by
    :func:`delimiter_hint`). Raises :class:`TableTextError` naming the line for a byte that is
    not UTF-8 (a Windows-1252 or Latin-1 export: guessing it would read an accented path or id
    as other letters), for a NUL (UTF-16 without its mark, which decodes as UTF-8 with a NUL
    between letters and had been read as a manifest missing every column; a NUL in marked text
    too), for a spreadsheet's workbook, a compressed file or a PDF, and for a file with nothing
    in it."""
    for magic, what in _NOT_TEXT.items():
        if raw.startswith(magic):
            raise TableTextError(f"the file is {what}, not comma-separated text: {_SAVE_AS}")
    codec = next((c for mark, c in _MARKED if raw.startswith(mark)), "utf-8-sig")
    if codec == "utf-8-sig" and (nul := raw.find(b"\0")) >= 0:
        line = _line_at(raw[:nul].decode("utf-8", "replace"))
        raise TableTextError(
            f"line {line}: holds a NUL byte, which no UTF-8 table does (UTF-16 saved "
            f"without its byte-order mark?): {_SAVE_AS}"
        )
    try:
        text = raw.decode(codec)
    except UnicodeDecodeError as e:
        line = _line_at(raw[: e.start].decode(codec, "replace"))
        if codec != "utf-8-sig":
            raise TableTextError(
                f"line {line}: begins with {codec.upper()}'s byte-order mark, but bytes {e.start}-{e.end - 1} are "
                f"not {codec.upper()}: {_SAVE_AS}"
            ) from None
        shown = _LINE_END.split(raw.decode("utf-8", "replace"))[line - 1].strip()
        raise TableTextError(
            f"line {line}: byte {raw[e.start]:#04x} is not UTF-8 ({shown[:80]!r}); the file looks saved in "
            f"another encoding (Windows-1252 or Latin-1?): {_SAVE_AS}"
        ) from None
    if (nul := text.find("\0")) >= 0:  # (UTF-16/32 with its mark) a NUL had reached a path as "embedded null byte"
        line = _line_at(text[:nul])
        raise TableTextError(f"line {line}: holds a NUL character, which no text table does: {_SAVE_AS}")
    if not text.strip():
        raise TableTextError("the file is empty: no header, no rows")
    if (page := _MARKUP.match(text)) is not None:
        raise TableTextError(f"the file is {_PAGES[page[1].casefold()]}, not comma-separated text: {_SAVE_AS}")
    if text.endswith(_DOS_END):  # an MS-DOS end-of-file marker (Ctrl-Z), which old exporters end with
        text = text[: -len(_DOS_END)]
    check_quotes(text)
    return text


# a spreadsheet saved as a web page or as XML (Excel's "Web Page" and "XML Spreadsheet 2003",
# which hospital systems export as .xls): markup, not a table
_MARKUP = re.compile(r"\s*<(?:!--.*?-->\s*)*[!?]?(html|xml|doctype|table)\b", re.IGNORECASE | re.DOTALL)
_PAGES = {
    "html": "a web page (HTML)",
    "doctype": "a web page (HTML)",
    "table": "an HTML table",
    "xml": 'XML (Excel\'s "XML Spreadsheet 2003"?)',
}
_DOS_END = "\x1a"


def check_quotes(text: str) -> None:
    """Raises :class:`TableTextError` where ``text``'s quoting is not whole, which csv reads on
    in silence: a quoted cell whose quote never closes (csv reads it to the end of the file), one
    that runs past csv's cell limit (a traceback), or text after a cell's closing quote (csv joins
    it to the cell: in a file whose every cell is quoted, a quote left open closes at the next
    row's first quote, and that row's cells became the open row's, helper-108). Named by the line
    the row begins on. A quoted cell over lines is read (a comment written over lines); whether
    its lines are rows it swallowed is for a reader that knows its rows (:func:`data_rows`)."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    end = 0  # the last line of the last record read
    try:
        for _ in reader:
            end = reader.line_num
    except csv.Error as e:
        first, said = end + 1, str(e)
        if "end of data" in said:
            raise TableTextError(
                f"line {first}: a quoted cell begins in this row and never closes: {_OPEN_QUOTE}"
            ) from None
        if "field limit" in said:
            raise TableTextError(f"line {first}: the row beginning here cannot be read ({e}): {_OPEN_QUOTE}") from None
        where = f"line {reader.line_num}" + (
            f" (in the row that begins on line {first})" if reader.line_num > first else ""
        )
        raise TableTextError(
            f"{where}: text follows a quoted cell's closing quote, which csv would join to the cell: {_OPEN_QUOTE}"
        ) from None


_OPEN_QUOTE = (
    'a quote (") left open, so the lines after it are read as one cell; close it where the cell ends, '
    'or remove it (a quote inside a cell is written twice: "")'
)


def _column_at(header: list[str], index: int) -> str:
    """Column ``index`` (0-based) as a message names it: by the header's name, else its number."""
    name = header[index].strip() if index < len(header) else ""
    return f"column {name!r}" if name else f"column {index + 1}"


def delimiter_hint(header: list[str]) -> str | None:
    """Why a table whose ``header`` is one column looks delimited by another character than a
    comma (``;`` from a European spreadsheet, a tab from Excel's text export, ``|``), or None."""
    if len(header) != 1:
        return None
    sep = next((d for d in ";\t|" if d in header[0]), None)
    return None if sep is None else f"the header is one column, {header[0]!r}: the delimiter looks like {sep!r}"


def table_reader(text: str) -> csv.DictReader:
    """A ``csv.DictReader`` of a table's ``text`` (quoted cells may hold line breaks) whose header
    is its first line that is not blank (empty, spaces, or empty cells: ``,,,``), each name
    stripped of spaces (``' lnm'`` is ``lnm``), unnamed columns at its end whose cells are all
    empty dropped (a spreadsheet's export); Excel's ``sep=,`` line above it passed over (it had
    been read as the header: 127 problems; a ``sep=;`` one too, the header then said to be
    semicolon-delimited). csv passes over empty lines between rows but takes an empty first line
    as a header of no columns: a manifest that began with one had been read as missing every
    column. Every reader of a manifest or a source table opens it here, and
    reads its rows with :func:`data_rows`."""
    reader = csv.DictReader(io.StringIO(text, newline=""))
    while reader.fieldnames is not None and not any(h.strip() for h in reader.fieldnames):  # a blank line before it
        try:
            reader.fieldnames = next(reader.reader)
        except StopIteration:  # nothing but blank lines
            reader.fieldnames = []
            break
    if re.fullmatch(r"sep=.", ",".join(reader.fieldnames or [])):  # the line is "sep=" and one character
        reader.fieldnames = next(reader.reader, [])  # Excel's "sep=," line above the header: its directive
    header = [h.strip() for h in reader.fieldnames or []]
    width = len(header)
    while width and not header[width - 1]:
        width -= 1
    if width < len(header):  # unnamed columns at the end: dropped where every cell under them is empty
        rows = cells_below_header(text, reader.line_num)
        width = max(width, max((i + 1 for r in rows for i, c in enumerate(r[: len(header)]) if c.strip()), default=0))
    reader.fieldnames = header[:width]
    return reader


# the rows below a header searched for the real header (a spreadsheet's title row above it)
_HEADER_SEARCH_ROWS = 10


def header_below(text: str, header_line: int, required: list[str]) -> tuple[int, list[str]] | None:
    """The line and cells of a row among the first rows below the header (which ends on line
    ``header_line``) whose cells name every ``required`` column, or None: a manifest read whole
    with a title or date row above its header (helper-106: said to have six unnamed columns)."""
    cells = cells_below_header(text, header_line)
    for _, row in zip(range(_HEADER_SEARCH_ROWS), cells):
        if set(required) <= {c.strip() for c in row}:
            return cells.line_num, row
    return None


def cells_below_header(text: str, header_line: int) -> Iterator[list[str]]:
    """The cells of each row of ``text`` below its header, which ends on line ``header_line``
    (a :func:`table_reader`'s ``line_num`` once its header is read): read apart from the reader."""
    cells = csv.reader(io.StringIO(text, newline=""))
    while cells.line_num < header_line and next(cells, None) is not None:  # through the header
        pass
    return cells


def repeated_columns(header: list[str]) -> dict[str, list[int]]:
    """Each column name ``header`` holds more than once, with its columns (1-based): a reader
    refuses them, since ``csv.DictReader`` keeps the last copy's cells in silence."""
    return {h: [i + 1 for i, x in enumerate(header) if x == h] for h in header if header.count(h) > 1}


def data_rows(
    reader: csv.DictReader, text: str, looks_like_row: Callable[[dict], bool] | None = None
) -> Iterator[tuple[int, dict]]:
    """The records of ``reader`` (:func:`table_reader` of ``text``) as a manifest's reader
    reads them, each with its row (a manifest's ``Patient.row``): the number of the row's first
    line less one, the row an editor shows under a header on line 1 (csv passes over empty lines before
    it; a quoted cell may hold line breaks). A spreadsheet's blank row (``,,,,``: every
    cell empty or spaces) is passed over, as csv passes over an empty line. Every reader that
    pairs a manifest's rows with its patients reads them here: by ``row``, never by position.

    ``looks_like_row``: whether a line read as a record of the header (name -> cell) is one of
    the table's rows: a quoted cell with such a line in it holds rows a quote left open
    swallowed (helper-106: four patients read as one patient's ``sex``, validate passing 36 of
    40), and :class:`TableTextError` names its line and column; a quoted cell whose lines are
    not rows is a cell (a comment written over lines, helper-108)."""
    lines = io.StringIO(text, newline="").readlines()  # the lines csv reads
    if reader.fieldnames is None:  # (reads the header) an empty file: no rows
        return
    header = list(reader.fieldnames)
    end = reader.line_num  # the header's last line
    for read in reader:
        first = next((i for i in range(end + 1, reader.line_num) if lines[i - 1].strip("\r\n")), reader.line_num)
        if looks_like_row is not None and reader.line_num > end + 1:  # a cell over lines
            _swallowed_rows(read, header, first, looks_like_row)
        end = reader.line_num
        if any((c or "").strip() for k, v in read.items() for c in (v if k is None else [v])):
            yield first - 1, read


def _swallowed_rows(read: dict, header: list[str], first: int, looks_like_row: Callable[[dict], bool]) -> None:
    """:func:`data_rows`' check of one record, which begins on line ``first``."""
    line = first  # the line each cell begins on
    cells = [read.get(h) or "" for h in header] + list(read.get(None) or ())
    for i, cell in enumerate(cells):
        parts = _LINE_END.split(cell)
        rows = [r for r in parts[1:] if looks_like_row(dict(zip(header, next(csv.reader([r]), []))))]
        if rows:
            raise TableTextError(
                f"line {line}, {_column_at(header, i)}: a quoted cell begins here and runs over {len(parts) - 1} more "
                f"line(s), {len(rows)} of which read as this table's rows ({rows[0][:60]!r}): {_OPEN_QUOTE}"
            )
        line += len(parts) - 1
