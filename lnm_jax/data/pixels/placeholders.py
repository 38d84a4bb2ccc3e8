"""Files that stand in for a picture whose content is held elsewhere: a Git LFS pointer (a
dataset repository cloned or copied without its LFS objects) and a git-annex pointer file or
link whose content was never fetched. Each reads as a small text file or a broken link under
the picture's name, which a decoder calls "not a PNG", "no 'DICM'" or "moov atom not found";
:func:`placeholder` names what it is and the command that fetches the content. Beside a
missing file, under its name with an ending added, what stands in its place (a partial
download, a DVC or iCloud placeholder, a Windows shortcut): :func:`stand_in`.

Formats: the Git LFS pointer specification (git-lfs ``docs/spec.md``: ``version
https://git-lfs.github.com/spec/v1``, then ``oid sha256:<64 hex>`` and ``size <bytes>``, in a
file under 1024 bytes; ``hawser.github.com`` in early pointers); git-annex keys
(``BACKEND-s<size>--<hash><ext>``) named by a locked file's symbolic link into
``.git/annex/objects/`` or, for an unlocked file, by a pointer file ``/annex/objects/<key>``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

# a pointer file is smaller than this (the LFS specification: larger blobs are never pointers)
MAX_POINTER_BYTES = 1024

_LFS = re.compile(rb"version https://(?:git-lfs|hawser)\.github\.com/spec/v1\n")
_LFS_FIELD = re.compile(rb"^(oid sha256:[0-9a-f]{64}|size [0-9]+)$", re.MULTILINE)
# a git-annex key within a link target or a pointer file: backend, size field, "--", name
_ANNEX_KEY = re.compile(r"annex/objects/(?:[^/\n]+/)*?([A-Z0-9]+(?:-s(\d+))?(?:-[a-zA-Z]\d+)*--[^/\n]+)")


# what stands in a missing file's place beside it, by the ending added to its name (helper-121:
# each had been said "does not exist" alone, a DVC file as "another extension" to name instead)
STAND_INS = (
    (".part", "a partial download of it ({}): let the download finish, or fetch it again"),
    (".crdownload", "a partial download of it ({}): let the download finish, or fetch it again"),
    (".download", "a partial download of it ({}): let the download finish, or fetch it again"),
    (".dvc", "a DVC placeholder for it ({}): its content is in DVC's storage; run 'dvc pull' in that repository"),
    (".lnk", "a Windows shortcut to it ({}): copy the file itself"),
)
_ICLOUD = re.compile(r"\.(.+)\.icloud")  # macOS's placeholder of a file kept in iCloud: .<name>.icloud


def stand_in(beside: Path) -> tuple[str, str] | None:
    """(the name of the file it stands for, what it is in words naming it) where ``beside`` is
    named as what stands in a missing file's place: the name with an ending of
    :data:`STAND_INS` added (``frame_004.png.part``), or macOS's iCloud placeholder
    ``.<name>.icloud``; None otherwise (whether the file exists is not looked at)."""
    if found := _ICLOUD.fullmatch(beside.name):
        return found[1], f"an iCloud placeholder for it ({beside.name}): download it on the Mac first"
    for ending, what in STAND_INS:
        if beside.name.lower().endswith(ending) and len(beside.name) > len(ending):
            return beside.name[: -len(ending)], what.format(beside.name)
    return None


def placeholder(path: Path | str) -> str | None:
    """What ``path`` stands in for, where it is a Git LFS pointer or a git-annex pointer file or
    link (its target missing), in words that end with the command that fetches the content
    ("a Git LFS pointer to a file of 12,345 bytes, not the file itself: ..."); None for any
    other file, for one that cannot be read, and for a git-annex link whose content is here."""
    path = Path(path)
    try:
        if path.is_symlink() and not path.exists():
            return _annex(os.readlink(path))
        if not path.is_file() or path.stat().st_size >= MAX_POINTER_BYTES:
            return None
        with open(path, "rb") as f:
            head = _as_lf_utf8(f.read(MAX_POINTER_BYTES))
    except (OSError, ValueError):  # (ValueError: a NUL in the name)
        return None
    if _LFS.match(head):
        fields = dict(m.group(1).decode().split(" ", 1) for m in _LFS_FIELD.finditer(head))
        size = f" to a file of {int(fields['size']):,} bytes" if "size" in fields else ""
        oid = f" (oid {fields['oid'][:19]}...)" if "oid" in fields else ""
        return (
            f"a Git LFS pointer{size}{oid}, not the file itself: its repository was cloned or copied without "
            "its LFS content; run 'git lfs pull' in that repository (or copy the files from a checkout that has it)"
        )
    if head.startswith(b"/annex/objects/"):
        try:
            return _annex(head.decode("utf-8").strip())
        except UnicodeDecodeError:
            return None
    return None


def _as_lf_utf8(head: bytes) -> bytes:
    """A pointer file's bytes as Git writes them (UTF-8, LF) where an editor or a Windows shell
    saved it otherwise (helper-122): UTF-16 with its byte-order mark (PowerShell 5's
    ``Out-File``), a UTF-8 byte-order mark, CRLF (a Windows checkout) or CR line endings."""
    if head[:2] in (b"\xff\xfe", b"\xfe\xff"):
        try:
            head = head[: len(head) // 2 * 2].decode("utf-16").encode("utf-8")
        except UnicodeError:
            return head
    return head.removeprefix(b"\xef\xbb\xbf").replace(b"\r\n", b"\n").replace(b"\r", b"\n")


def _annex(target: str) -> str | None:
    """The git-annex words for a pointer file's text or a broken link's ``target``, where it
    names an annexed key; else None."""
    key = _ANNEX_KEY.search(target)
    if key is None:
        return None
    size = f" to a file of {int(key.group(2)):,} bytes" if key.group(2) else ""
    return (
        f"a git-annex pointer{size} (key {key.group(1)[:40]}), not the file itself: its content was not fetched "
        "into this repository; run 'git annex get' on it in that repository"
    )
