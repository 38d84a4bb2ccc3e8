"""Where a command may write: the checks every command runs on its output path before anything
is written (an input, a run folder's state, an exported model's folder, a file it did not
write), each refused with :class:`~lnm_jax.fileio.OutputPathError` in one line naming the
option and the path."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from pathlib import Path

from lnm_jax.export_files import CHECKSUMS, METADATA
from lnm_jax.fileio import OutputPathError
from lnm_jax.run_files import misplaced_output, state_holding


def export_holding(path: Path | str) -> Path | None:
    """The nearest folder ``lnm-jax export`` wrote (its ``SHA256SUMS`` and ``metadata.json``)
    that is ``path`` or lies above it, resolved; None when there is none."""
    path = Path(path).resolve()
    return next((f for f in (path, *path.parents) if (f / CHECKSUMS).is_file() and (f / METADATA).is_file()), None)


def refuse_export_folder(path: Path | str, flag: str) -> None:
    """:class:`OutputPathError` where ``path`` (what option ``flag`` names for writing) is or lies
    in a folder ``lnm-jax export`` wrote (:func:`export_holding`): every file of one is checked
    against its ``SHA256SUMS``, and one replaced or added breaks the export."""
    path = Path(path).resolve()
    if (export := export_holding(path)) is not None:
        raise OutputPathError(
            f"{flag} {path} {'is' if export == path else 'lies in'} the exported model folder {export}, every file of "
            "which is checked against its SHA256SUMS (one replaced breaks the export): choose a path outside it"
        )


def guard_output(
    out: Path | str,
    *,
    inputs: Iterable[Path | str] = (),
    overwrite: bool = False,
    ours=None,
    flag: str = "--out",
    kind: str = "file",
    can_overwrite: bool = True,
    run: Path | str | None = None,
) -> Path:
    """Checks ``out`` before anything is written and returns it resolved. Refused, whatever
    ``overwrite`` says: ``out`` is or lies in a run folder's state
    (:func:`lnm_jax.run_files.state_holding`: a folder made in ``checkpoints/best`` is taken by
    orbax for a step), ``out`` is one of ``inputs`` (a file or folder the command reads), lies
    inside an input folder, or holds an input. Refused unless ``overwrite``: an existing file
    that ``ours(path)`` (the command's own check of what it writes, e.g. a CSV header) does not
    recognise as the command's own output; with ``ours`` None, any existing file. A command
    whose output has the shape of files it did not write (a manifest CSV: every cohort's starts
    with ``patient_id``; a JSON of means and SDs: a run's intensity reference has that shape)
    passes no ``ours``: a shape is no proof of authorship. ``kind``: 'file' or 'folder', what the command writes
    at ``out`` (the other is refused); ``can_overwrite``: whether the command has ``--overwrite``
    (else the message does not offer it). Inside a run folder but outside its state, ``out``
    must lie in an output folder (``eval_*``, ``gradcam_*``) of ``run``, the run folder the
    command reads (:func:`lnm_jax.run_files.misplaced_output`). ``-`` (standard output, by the
    convention of many tools) is refused: no command here writes a stream (helper-109: predict had
    written a file named "-")."""
    if str(out) == "-":
        raise OutputPathError(f"{flag} -: this command writes a {kind}, not standard output; give its path")
    out = Path(out).resolve()
    if (state := state_holding(out)) is not None:
        run, entry = state
        raise OutputPathError(
            f"{flag} {out} is a run folder (checkpoints, records, logs): choose another path"
            if entry is None
            else f"{flag} {out} is part of the run folder {run}'s state (checkpoints, records, logs): "
            "it would be replaced; choose another path"
            if out == entry
            else f"{flag} {out} lies in {entry}, part of the run folder {run}'s state (checkpoints, records, logs): "
            "choose a path outside it, or a new folder beside them"
        )
    if kind == "file" and out.is_dir():
        raise OutputPathError(f"{flag} {out} is a folder; name a file to write")
    if kind == "folder" and out.exists() and not out.is_dir():
        raise OutputPathError(f"{flag} {out} is an existing file; name a new folder")
    for given in inputs:
        src = Path(given).resolve()
        if out == src:
            raise OutputPathError(
                f"{flag} {out} is an input of this command; it would be replaced: choose another path"
            )
        if src.is_dir() and out.is_relative_to(src):
            raise OutputPathError(f"{flag} {out} is inside the input folder {src}: choose a path outside it")
        if out.is_dir() and src.is_relative_to(out) and out.exists() and any(out.iterdir()):
            raise OutputPathError(f"{flag} {out} holds the input {src}: choose another path")
    if (why := misplaced_output(out, run)) is not None:
        raise OutputPathError(f"{flag} {out} {why}")
    refuse_export_folder(out, flag)  # (helper-60: --overwrite had replaced an export's metadata.json)
    if out.is_dir():
        if any(out.iterdir()) and (ours is None or not ours(out)):  # with no ``ours``, no claim on who wrote it
            said = (
                "is an existing folder that is not empty"
                if ours is None
                else "is an existing folder this command did not write"
            )
            raise OutputPathError(f"{flag} {out} {said}: choose a new path")
    elif out.exists() and not overwrite and (ours is None or not ours(out)):
        hint = "pass --overwrite to replace it" if can_overwrite else "choose another path"
        said = "exists" if ours is None else "exists and was not written by this command"
        raise OutputPathError(f"{flag} {out} {said}; {hint}")
    return out


def csv_header_starts(path: Path, columns: Sequence[str]) -> bool:
    """True when ``path`` is a CSV whose header starts with ``columns`` (how a command
    recognises a file it wrote)."""
    try:
        with Path(path).open(newline="", encoding="utf-8") as f:
            header = next(csv.reader(f), [])
    except (OSError, UnicodeDecodeError, csv.Error):
        return False
    return header[: len(columns)] == list(columns)
