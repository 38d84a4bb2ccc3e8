"""Text and file names whatever the locale: every file this package writes is UTF-8 (given as
``encoding="utf-8"`` at each open, tested in tests/test_encoding.py), and what depends on the
locale is checked here.

A locale whose encoding is not UTF-8 (ISO-8859-1, or ASCII under ``LC_ALL=C PYTHONUTF8=0``)
makes Python name files in that encoding while the checkpoint library (orbax, through
tensorstore's C++) names them in UTF-8: a run folder whose path held an accented letter had its
weights written to another folder, the run reported a success, and every later command said
its checkpoint could not be read (helper-109). Such a path is refused in one line before
anything runs (:func:`unnameable_arguments`); the console is written with escapes where it cannot
show a character (:func:`tolerant_console`: a path printed at the end had made a finished
command exit 1).

Standard library only: the export's runtime carries this module.
"""

from __future__ import annotations

import codecs
import os
import sys
from collections.abc import Iterable

# what to do about a locale whose encoding is not UTF-8, as every message here says it
LOCALE_FIX = "set a UTF-8 locale (e.g. LC_ALL=C.UTF-8) or PYTHONUTF8=1"


def file_name_encoding() -> str:
    """The codec Python names files with here (``utf-8``, ``iso8859-1``, ``ascii``...)."""
    return codecs.lookup(sys.getfilesystemencoding()).name


def utf8_file_names() -> bool:
    """Whether file names are UTF-8 here, as the checkpoint library always names them."""
    return file_name_encoding() == "utf-8"


def unnameable_arguments(args: Iterable[str]) -> str | None:
    """Why the command-line ``args`` cannot be used here, or None: where file names are not
    UTF-8, an argument holding a character beyond ASCII (a path, most likely) would name one
    file for Python and another for the checkpoint library."""
    if utf8_file_names():
        return None
    args = list(args)
    # the folder relative paths start from, and where an argument's path leads (a link, a
    # relative --workdir under an accented folder: helper-111)
    names = [os.getcwd(), *args, *(os.path.realpath(a) for a in args if os.path.exists(a))]
    shown = next((a for a in names if not a.isascii()), None)
    if shown is None:
        return None
    shown = os.fsencode(shown).decode("ascii", "backslashreplace")  # its bytes as given
    return (
        f"'{shown}' holds characters beyond ASCII, and this locale names files in {file_name_encoding()}, not "
        f"UTF-8 as the checkpoint library does (a run's files would be split between two names): {LOCALE_FIX}"
    )


def unnameable_path_hint(path: str) -> str:
    """'' or, for a ``path`` that was not found, why the locale may be the cause: a name beyond
    ASCII where file names are not UTF-8 (a file named in UTF-8 is another name here)."""
    if utf8_file_names() or path.isascii():
        return ""
    enc = file_name_encoding()
    return f"; this locale names files in {enc}, not UTF-8, so a name written in UTF-8 differs: {LOCALE_FIX}"


def encoding_error_line(e: UnicodeError) -> str:
    """One line for a character the locale's encoding cannot hold (``e``)."""
    return f"{e}: a file name or text holds a character that this locale's encoding cannot hold; {LOCALE_FIX}"


def tolerant_console() -> None:
    """The console's streams write a character their encoding cannot hold as an escape
    (``\\xe9``) instead of failing (``PYTHONIOENCODING=ascii``: a finished command had exited 1
    on its last line, the export's fingerprint never printed; helper-109)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(errors="backslashreplace")
        except (AttributeError, ValueError, OSError):  # not a text stream, or closed: left as it is
            pass
