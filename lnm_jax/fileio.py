"""File-system helpers shared by the writers (cohorts, converted weights)."""

from __future__ import annotations

import contextlib
import csv
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path


@contextlib.contextmanager
def atomic_directory(out_dir: Path | str) -> Iterator[Path]:
    """Yields a temporary sibling of ``out_dir`` to fill; renamed to ``out_dir`` when the block
    succeeds, removed when it fails, so nothing half-written is ever left at ``out_dir``.
    ``out_dir`` must not exist or be empty."""
    out_dir = Path(out_dir).resolve()
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir} exists and is not empty; choose another output folder")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        yield tmp
        if out_dir.exists():
            out_dir.rmdir()
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_csv(path: Path | str, rows: Iterable[Mapping[str, object]], columns: Sequence[str]) -> None:
    """Writes ``rows`` under ``columns`` atomically (temp file + rename): never a half-written
    CSV. A missing or None cell is written empty."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns))
        writer.writeheader()
        for r in rows:
            writer.writerow({c: "" if r.get(c) is None else r.get(c) for c in columns})
    tmp.replace(path)


def write_text(path: Path | str, text: str) -> None:
    """Writes ``text`` atomically (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


class UnsafePathError(ValueError):
    """A path built from input data would leave the folder it must stay in."""


def path_inside(root: Path | str, relative: str) -> Path:
    """``root / relative``, refused unless it stays inside ``root`` once resolved (``..``,
    absolute parts and symbolic links included): every path built from manifest data goes
    through here."""
    root = Path(root).resolve()
    path = (root / relative).resolve()
    if not path.is_relative_to(root) or path == root:
        raise UnsafePathError(f"{relative!r} would be written outside {root}")
    return path
