"""File-system helpers shared by the writers (cohorts, converted weights, predictions): atomic
writes, the guard that keeps every output off the inputs it was made from, and orbax saves and
reads run off the main thread (Ctrl-C, and what CPython formats)."""

from __future__ import annotations

import contextlib
import csv
import errno
import glob
import hashlib
import json
import logging
import math
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

_T = TypeVar("_T")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# the name of a temporary sibling atomic_directory fills (mkdtemp's suffix), or of the earlier
# folder it keeps while swapping ('earlier'): .<output's name>.pid<writer's PID>.<suffix>
_TEMPORARY = re.compile(r"\.(?P<name>.+)\.pid(?P<pid>\d+)\.\w+")


def is_temporary_output(path: Path) -> bool:
    """Whether ``path`` is a temporary sibling that :func:`atomic_directory` fills, or the
    earlier folder it keeps while swapping (``.<name>.pid<PID>.<suffix>``)."""
    return temporary_name(path) is not None


def temporary_name(path: Path | str) -> str | None:
    """The name of the output a temporary sibling (:func:`is_temporary_output`) stands for
    (``eval_best`` for ``.eval_best.pid12.tmp``), or None for any other name."""
    m = _TEMPORARY.fullmatch(Path(path).name)
    return m["name"] if m else None


# the bytes of an output's name its temporary sibling's name keeps: a longer one is cut and a
# digest of it added, so that the sibling's name stays within a file system's 255 bytes
# (helper-109: a legal 240-byte --out had failed, "File name too long", naming the temporary)
_NAME_ROOM = 200


def short_name(name: str) -> str:
    """``name`` as a name made from it holds it (:data:`_NAME_ROOM`): a temporary sibling's, a
    superseded output folder's (:func:`lnm_jax.run_files.superseded_name`)."""
    raw = name.encode("utf-8", "surrogateescape")
    if len(raw) <= _NAME_ROOM:
        return name
    return raw[: _NAME_ROOM - 9].decode("utf-8", "ignore") + "~" + hashlib.sha256(raw).hexdigest()[:8]


def _remove_orphans(out_dir: Path) -> None:
    """Temporary siblings of ``out_dir`` left by a writer that was killed (``kill -9`` skips
    every cleanup): their names carry the writer's PID, and those of dead processes go."""
    stem = short_name(out_dir.name)
    for tmp in out_dir.parent.glob(f".{glob.escape(stem)}.pid*.*"):
        m = _TEMPORARY.fullmatch(tmp.name)
        if m and m["name"] == stem and int(m["pid"]) != os.getpid() and not _alive(int(m["pid"])):
            shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def atomic_directory(out_dir: Path | str, *, replace: bool = False) -> Iterator[Path]:
    """Yields a temporary sibling of ``out_dir`` to fill; renamed to ``out_dir`` when the block
    succeeds, removed when it fails (an interrupt included), so nothing half-written is ever
    left at ``out_dir``; one a killed writer left is removed by the next. ``out_dir`` must not
    exist or be empty, unless ``replace``: then a folder there (one the caller has checked is
    its own earlier output, e.g. with :func:`lnm_jax.output_guard.guard_output`) is replaced whole when the block
    succeeds, so that none of its files outlives the call (a figure of a patient the new call
    does not have, scores the new call did not compute), and kept as it was when it fails."""
    out_dir = Path(out_dir).resolve()
    if Path.cwd().resolve().is_relative_to(out_dir):  # the swap would leave the shell in a removed folder
        raise OutputPathError(
            f"{out_dir} is the current folder or holds it: an output folder is written aside and put in its "
            f"place whole; name a folder below it (e.g. {Path(out_dir) / 'out'})"
        )
    if not replace and out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir} exists and is not empty; choose another output folder")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    _remove_orphans(out_dir)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{short_name(out_dir.name)}.pid{os.getpid()}.", dir=out_dir.parent))
    except OSError as e:  # (helper-113: a read-only disk had been said of the temporary's name)
        raise OSError(e.errno, e.strerror, str(out_dir)) from e
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp's 0700 is for the temporary name only: the result as mkdir makes it
    # what was there, while swapping
    earlier = out_dir.with_name(f".{short_name(out_dir.name)}.pid{os.getpid()}.earlier")
    try:
        yield tmp
        _stop_before_commit()
        try:
            if out_dir.exists():
                if replace:
                    out_dir.rename(earlier)
                else:
                    out_dir.rmdir()  # empty, as checked above; another writer's files there: OSError, not lost
            tmp.rename(out_dir)
        except OSError as e:
            if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            raise OutputPathError(
                f"{out_dir} was written by another process while this one wrote it: theirs is kept, this call's "
                "output is discarded; choose another path"
            ) from None
    except BaseException as e:
        if earlier.exists() and not out_dir.exists():  # interrupted between the two renames
            earlier.rename(out_dir)
        shutil.rmtree(tmp, ignore_errors=True)
        inside = isinstance(e, OSError) and e.filename and Path(str(e.filename)).is_relative_to(tmp)
        if isinstance(e, OSError) and e.errno is not None and (not e.filename or inside):
            raise OSError(e.errno, e.strerror, str(out_dir)) from e  # a full disk: the output, not a removed temp
        raise
    shutil.rmtree(earlier, ignore_errors=True)


@contextlib.contextmanager
def atomic_file(path: Path | str, *, exclusive: bool = False) -> Iterator[Path]:
    """Yields a temporary path beside ``path`` for a writer that takes a file name (a figure,
    an array file); renamed to ``path`` when the block succeeds, removed when it fails, and an
    OS error then names ``path``. ``exclusive``: never replace a ``path`` that exists when the
    block ends (another process wrote it meanwhile): :class:`FileExistsError` naming it, the
    other writer's file kept (committed by a hard link, which fails where the name is taken)."""
    path = Path(path)
    tmp = path.with_name(f".{short_name(path.name)}.pid{os.getpid()}.tmp{path.suffix[:16]}")
    try:
        yield tmp
        _stop_before_commit()
        if exclusive:
            _link_new(tmp, path)
        else:
            tmp.replace(path)
    except BaseException as e:
        with contextlib.suppress(OSError):  # (a folder that is not one: unlink fails as open did)
            tmp.unlink(missing_ok=True)
        if isinstance(e, OSError) and (e.filename is None or str(e.filename) == str(tmp)):  # (os.open gives a Path)
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise


def _link_new(tmp: Path, path: Path) -> None:
    """``tmp`` committed as the new file ``path``; FileExistsError when ``path`` exists."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise FileExistsError(
            errno.EEXIST, "written meanwhile by another process (kept; this call's file discarded)", str(path)
        ) from None
    except OSError as e:  # no hard links on this file system: claim the name, then replace it
        if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EXDEV, errno.EMLINK, errno.ENOSYS):
            raise
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # FileExistsError when taken
        os.close(fd)
        tmp.replace(path)
        return
    tmp.unlink()


def discard_made(root: Path, made: Iterable[Path]) -> str | None:
    """Removes ``made``, what a first start created in its folder ``root`` (files, folders and
    ``root`` itself where it made it), deepest first; ``root`` only where it is then empty (a
    user's files, or the lock a command still holds, keep it: :func:`lnm_jax.run_lock.hold`
    removes a folder it made once it lets go). Returns a clause for an error's message, or None
    where ``made`` is empty: the folder is as it was before the start, whichever of the two
    removes it last."""
    made = sorted(made, key=lambda p: len(p.parts), reverse=True)  # inside first
    for p in made:
        if p == root:
            with contextlib.suppress(OSError):
                p.rmdir()
        elif p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    return f"what this start wrote was removed: {root} is as it was before it" if made else None


def write_csv(
    path: Path | str,
    rows: Iterable[Mapping[str, object]],
    columns: Sequence[str],
    *,
    mode: int | None = None,
    exclusive: bool = False,
) -> None:
    """Writes ``rows`` under ``columns`` atomically (temp file + rename): never a half-written
    CSV, and no temporary file left when writing fails (a full disk: the error names the
    file). A missing or None cell is written empty. ``mode``: the file's permissions from its
    creation (e.g. 0o600 for a file only its owner may read), not set afterwards;
    ``exclusive``: never replace a file another process wrote meanwhile (:func:`atomic_file`)."""
    with atomic_file(path, exclusive=exclusive) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666 if mode is None else mode)
        with open(fd, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(columns))
            writer.writeheader()
            for r in rows:
                writer.writerow({c: "" if r.get(c) is None else r.get(c) for c in columns})
        if mode is not None:
            os.chmod(tmp, mode)  # whatever the umask did


def save_figure(fig, path: Path | str) -> None:
    """``fig.savefig`` through :func:`atomic_file`: never a half-written picture."""
    path = Path(path)
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip(".") or "png")


def write_text(path: Path | str, text: str) -> None:
    """Writes ``text`` atomically (:func:`atomic_file`: temp file + rename; a failed write
    leaves no temporary file and names ``path``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _strict(x):
    """``x`` with every non-finite float as None and NumPy scalars and arrays as Python ones."""
    if isinstance(x, Mapping):
        return {k: _strict(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_strict(v) for v in x]
    if hasattr(x, "tolist") and type(x).__module__ == "numpy":  # a NumPy scalar or array
        return _strict(x.tolist())
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def json_text(obj, *, indent: int | None = None) -> str:
    """``obj`` as standard JSON (RFC 8259), what every JSON file this package writes holds: a
    non-finite float (NaN, an infinity: an AUC of a one-class split, a constant map's score, a
    diverged loss) is ``null``, never the ``NaN`` literal that Python's ``json`` writes by default
    and strict readers (``jq``, JavaScript, most JSON libraries) refuse; NumPy numbers are plain
    numbers. TypeError for anything else JSON cannot hold."""
    return json.dumps(_strict(obj), indent=indent, allow_nan=False)


def write_json(path: Path | str, obj, *, indent: int | None = 2) -> None:
    """:func:`json_text` of ``obj`` written atomically (:func:`write_text`)."""
    write_text(path, json_text(obj, indent=indent))


REWRITE = "restore it from a copy, or run again the command that wrote it"


def content_digest(path: Path | str) -> str:
    """SHA-256 (hex) of a file's bytes, or of a folder's files (a clip's frames): each file's
    path relative to the folder and its bytes, in sorted order, so that a renamed, added or
    changed frame changes it. OSError when it cannot be read."""
    path = Path(path)
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        if path.is_dir():
            h.update(f.relative_to(path).as_posix().encode() + b"\0")
        with f.open("rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def json_digest(doc: Mapping, without: str) -> str:
    """SHA-256 of ``doc`` less its key ``without`` (where the digest itself is kept): its
    canonical JSON (keys sorted, no spaces), which the JSON this package writes and reads back
    gives again bit for bit (Python writes each float as its shortest round-tripping repr)."""
    body = {k: v for k, v in doc.items() if k != without}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


SEAL_KEY = "record_sha256"  # a sealed JSON record's digest of the rest of itself


def sealed(doc: Mapping) -> dict:
    """``doc`` with :data:`SEAL_KEY`: the SHA-256 of the rest of it (:func:`json_digest`) as
    :func:`write_json` writes it, so that a reader (:func:`check_seal`) tells a changed value (a
    calibration temperature edited by hand or by a tool) from the one written. It catches edits,
    not forgery: the digest can be recomputed, and a record without one is read with a warning.
    A tool that rewrites a number in another form (``2.0`` as ``2``) makes the record read as
    edited."""
    doc = json.loads(json_text(dict(doc)))  # as write_json writes it and a reader reads it back
    return {**doc, SEAL_KEY: json_digest(doc, SEAL_KEY)}


_WARNED: set[str] = set()


def warn_once(message: str, key: object) -> None:
    """Prints ``warning: <message>`` on stderr the first time this process asks with ``key``
    (a file or folder the warning is about), and nothing after: one warning per file, however
    often a command reads it."""
    if (key := str(key)) not in _WARNED:
        _WARNED.add(key)
        print(f"warning: {message}", file=sys.stderr)


def check_seal(doc: Mapping, path: Path | str, remedy: str = REWRITE, strict: bool = False) -> None:
    """:class:`DamagedFileError` when ``doc`` (read from ``path``) does not match its
    :data:`SEAL_KEY`; a record without one (written before records were sealed, or the key
    deleted) is read with a warning on stderr, once per file and process, or, ``strict`` (what
    a record handed on rests on: ``export``), refused as unverified (helper-60: an export's
    temperature had been edited and its seal deleted, said once on the exporter's console and
    never to the colleague)."""
    stored = doc.get(SEAL_KEY)
    if stored is None and strict:
        raise DamagedFileError(
            f"{path} holds no {SEAL_KEY} (deleted, or written before records were sealed): its "
            f"values cannot be verified; {remedy}"
        )
    if stored is None:
        warn_once(
            f"{path} holds no {SEAL_KEY} (written before records were sealed, or it was deleted): its values are not "
            f"verified; {remedy}",
            key=("unsealed", Path(path).resolve()),
        )
        return
    if stored != json_digest(doc, SEAL_KEY):
        raise DamagedFileError.edited(path, f"its values do not match the {SEAL_KEY} written with them", remedy)


def is_int(x: object) -> bool:
    """Whether a value read from a file (JSON, a config) is a whole number: an int, not a bool
    (which Python counts as an int)."""
    return isinstance(x, int) and not isinstance(x, bool)


# The largest seed this package takes (``seed``, ``data.split.seed``, ``eval.seed``,
# ``data.synth.seed``, a command's ``--seed``): scikit-learn's ``random_state`` and NumPy's
# legacy ``RandomState`` take only [0, 2**32 - 1]; JAX's keys and NumPy's ``Generator`` take
# those too. A seed derived from one (``seed + 1``) wraps around modulo 2**32 (:func:`seed_mod`).
MAX_SEED = 2**32 - 1
SEED_RANGE = "a whole number from 0 to 2**32 - 1 (4294967295)"


def is_seed(x: object) -> bool:
    """Whether ``x`` is a seed every library here takes: a whole number in [0, :data:`MAX_SEED`]."""
    return is_int(x) and 0 <= x <= MAX_SEED


def seed_mod(x: int) -> int:
    """A derived seed (a seed plus an offset) brought back into [0, :data:`MAX_SEED`]; seeds
    already in range are unchanged."""
    return int(x) % (MAX_SEED + 1)


def is_real(x: object) -> bool:
    """Whether a value read from a file (JSON, a config) is a real number: an int or a float
    (NaN and infinities included), not a bool (which Python counts as an int)."""
    return isinstance(x, int | float) and not isinstance(x, bool)


def is_number(x: object) -> bool:
    """Whether a value read from a file (JSON, a config) is a finite real number: an int or a
    float, not a bool (which Python counts as an int), not NaN or infinite."""
    return is_real(x) and math.isfinite(x)


def problems_text(problems: Sequence[object], noun: str = "problem", about: str = "") -> str:
    """Every problem of one input as one message: one problem on one line
    (``"1 <noun><about>: <problem>"``), several under a count with one line each
    (``"<n> <noun>s<about>:"`` then ``"  <problem>"`` per line). The word ``noun`` stays in
    both forms, so a search for it finds either. ``problems`` must not be empty."""
    if not problems:
        raise ValueError("problems_text: no problems")
    if len(problems) == 1:
        return f"1 {noun}{about}: {problems[0]}"
    return "\n  ".join([f"{len(problems)} {noun}s{about}:", *map(str, problems)])


class DamagedFileError(ValueError):
    """A file this package wrote (or a person edited) that cannot be read as what it holds."""

    @classmethod
    def edited(cls, path: Path | str, problem: str, remedy: str = REWRITE) -> DamagedFileError:
        """The error of a file that parses but holds something else than its writer writes:
        ``"<path>: <problem>: it was edited or is damaged; <remedy>"``."""
        return cls(f"{path}: {problem}: it was edited or is damaged; {remedy}")


def _utf8_text(path: Path | str, remedy: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DamagedFileError(f"{path} is not UTF-8 text (byte {e.start}); it is damaged: {remedy}") from None


def _json_object(text: str, where: str, required: Sequence[str], remedy: str) -> dict:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise DamagedFileError(
            f"{where} is not valid JSON ({e.msg}: line {e.lineno} column {e.colno}); it is damaged or was "
            f"edited: {remedy}"
        ) from None
    except RecursionError:  # nested deeper than Python's parser goes: no file this package writes
        raise DamagedFileError(f"{where} is not JSON this package wrote (nested too deep); {remedy}") from None
    if not isinstance(doc, dict):
        raise DamagedFileError(f"{where} holds a JSON {type(doc).__name__}, not an object: {remedy}")
    missing = [k for k in required if k not in doc]
    if missing:
        raise DamagedFileError(f"{where} lacks {', '.join(map(repr, missing))}: {remedy}")
    return doc


def read_json(path: Path | str, *, required: Sequence[str] = (), remedy: str = REWRITE) -> dict:
    """The JSON object in ``path``, as every JSON file this package writes holds one (a run's
    config, splits, calibration, metrics, a converted backbone's ``backbone.json``...), with
    the keys in ``required``. Errors, each one line naming the file: ``FileNotFoundError``;
    :class:`DamagedFileError` when it is not UTF-8, not JSON (truncated, damaged, edited by
    hand: the parser's message, line and column), not an object, or lacks a required key;
    ``remedy`` ends the line (what to do about it)."""
    return _json_object(_utf8_text(path, remedy), str(path), required, remedy)


def read_json_lines(path: Path | str, *, required: Sequence[str] = (), remedy: str = REWRITE) -> list[dict]:
    """The JSON objects of a JSON-lines file (one per non-blank line), as :func:`read_json`
    reads one, a damaged line named by its number."""
    lines = _utf8_text(path, remedy).splitlines()
    return [_json_object(s, f"{path} line {i}", required, remedy) for i, s in enumerate(lines, 1) if s.strip()]


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


class OutputPathError(FileExistsError):
    """An output path that would replace or write into an input, or an existing file the
    command did not write."""


class QuietFileHandler(logging.FileHandler):
    """A log file handler that drops a record it cannot write (a full disk) instead of printing
    logging's own "--- Logging error ---" traceback to the console, where the one line that
    says what failed must stay readable. Written in UTF-8 whatever the locale (helper-111)."""

    def __init__(self, filename, mode="a", encoding="utf-8", delay=False, errors=None):
        super().__init__(filename, mode, encoding or "utf-8", delay, errors)

    def handleError(self, record):  # noqa: N802  (logging's name)
        pass


def error_line(e: BaseException, limit: int = 320) -> str:
    """``"<type>: <first line of the message>"`` for a one-line error report; past ``limit``
    characters the middle gives way to " ... " (a library's message starts with what failed and
    ends with the numbers that say why, e.g. TensorStore's "... is not valid for value of size
    90370"): a message cut at its end could state a wrong number."""
    line = f"{type(e).__name__}: " + (str(e).strip().splitlines() or [""])[0]
    if len(line) <= limit:
        return line
    keep = (limit - 5) // 2
    return f"{line[:keep]} ... {line[-keep:]}"


def is_late_callback_into_a_closed_loop(exc: BaseException | None, tb) -> bool:
    """A ``RuntimeError('Event loop is closed')`` raised by ``asyncio``'s
    ``call_soon_threadsafe``: a TensorStore read or write finishing after orbax's ``asyncio.run``
    is over (one array's read failed, the operation raised, the loop closed while the other reads
    were still in flight). TensorStore's threads report it with ``PyErr_WriteUnraisable`` (no
    object), that is through ``sys.unraisablehook``, one bare traceback per late array: tens to
    hundreds of interleaved lines around, and at times inside, the one line that says which
    checkpoint is damaged (shared case ``checkpoint-corruption`` (b)). It says nothing the raised
    error does not."""
    if not (isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed"):
        return False
    return any(f.name == "call_soon_threadsafe" and "asyncio" in f.filename for f in traceback.extract_tb(tb))


def quiet_late_loop_callbacks() -> None:
    """Installs, once per process, a ``sys.unraisablehook`` that drops the reports of
    :func:`is_late_callback_into_a_closed_loop` (into the ``asyncio`` logger at debug level) and
    hands every other one to the hook it replaced. Kept for the rest of the process: the late
    callbacks arrive after the failed operation has returned, while its error is printed."""
    previous = sys.unraisablehook
    if getattr(previous, "_lnm_jax_quiet_loops", False):
        return

    def hook(unraisable):
        if is_late_callback_into_a_closed_loop(unraisable.exc_value, unraisable.exc_traceback):
            logging.getLogger("asyncio").debug(
                "late callback into a closed event loop",
                exc_info=(unraisable.exc_type, unraisable.exc_value, unraisable.exc_traceback),
            )
            return
        previous(unraisable)

    hook._lnm_jax_quiet_loops = True
    sys.unraisablehook = hook


def off_main_thread(fn: Callable[..., _T], *args, **kwargs) -> _T:
    """``fn(*args, **kwargs)``, run in a worker thread when called on the main thread: how every
    orbax save and read (checkpoints, converted backbones) is called.

    Orbax runs each operation through ``asyncio.run``, which on the main thread installs its own
    SIGINT handler for the operation (a ``functools.partial`` holding the main task):
    - Ctrl-C during a save went to that handler, which cancels orbax's task: the save was
      abandoned (orbax keeps the previous checkpoint; "coroutine was never awaited" warnings).
      Thirty saves of a test-sized state, each interrupted at a random time within 0.2 s: the
      last committed was the 18th. Off the main thread, ``asyncio.run`` installs no handler: the
      interrupt is raised in the main thread at once and the save in flight finishes first (the
      30th committed), then the command stops ("interrupted", exit 130).
    - Before CPython 3.13, once the task is done ``asyncio.run`` asks ``signal.getsignal``
      whether the handler is still installed, which builds a ``ValueError`` message from the
      handler's repr: the finished task's, so its result's, that is the repr of every array just
      read (3.13's ``signal._int_to_enum`` returns a non-integer handler as it is). Measured on a
      restore: 0.52-0.64 s -> 0.28 s for a test-sized triple ResNet-18 state (454 arrays),
      2.4-2.5 s -> 1.1-1.2 s for the paper's triple ResNet-50 (1,180 arrays, 565 MB).
    - A failed read or write leaves TensorStore operations in flight whose callbacks land in
      orbax's closed event loop: :func:`quiet_late_loop_callbacks` keeps their tracebacks off
      the console.

    The result and any exception are ``fn``'s own; a KeyboardInterrupt that arrives meanwhile
    (even a second one) is raised once ``fn`` has returned. The wait is on an event the worker
    sets when ``fn`` is done, not on ``Thread.join``: in CPython 3.11 a ``join`` that a
    KeyboardInterrupt cuts short marks the thread stopped while it still runs (``is_alive()``
    False), and the save in flight was abandoned as before."""
    quiet_late_loop_callbacks()
    if threading.current_thread() is not threading.main_thread():
        return fn(*args, **kwargs)
    out: dict = {}
    done = threading.Event()

    def call():
        try:
            out["value"] = fn(*args, **kwargs)
        except BaseException as e:  # noqa: BLE001  (handed to the caller)
            out["error"] = e
        finally:
            done.set()

    worker = threading.Thread(target=call, name="lnm_jax-orbax", daemon=True)
    interrupt = None
    try:
        worker.start()
    except KeyboardInterrupt as e:  # while the thread was starting: it runs all the same
        interrupt = e
    while not done.is_set():
        try:
            done.wait(0.5)
        except KeyboardInterrupt as e:  # the operation in flight finishes first
            interrupt = e
    if interrupt is not None:
        raise interrupt
    if "error" in out:
        raise out["error"]
    return out["value"]


# A stop the command line's signal handlers were asked for (Ctrl-C, SIGTERM), recorded as well as
# raised: a KeyboardInterrupt raised where the interpreter swallows it (a finalizer or a callback
# running on the main thread when the signal lands: "Exception ignored in ...") was lost, and a
# training ran on to its end (helper-94, once in seven Ctrl-Cs near the first step's compile).
# The training and pretraining loops check it at every step (raise_if_stop_asked).
STOP_ASKED = threading.Event()


_STOP_SIGNAL: list[int] = []  # the signal of the stop STOP_ASKED records (ask_stop)


def ask_stop(signum: int) -> None:
    """Records a stop (:data:`STOP_ASKED`) by signal ``signum``: what the command line's
    handlers call before they raise, so that a stop whose exception is lost is not."""
    _STOP_SIGNAL[:] = [signum]
    STOP_ASKED.set()


def clear_stop() -> None:
    """Forgets a recorded stop (:func:`ask_stop`): a command's stop is its own."""
    STOP_ASKED.clear()
    _STOP_SIGNAL.clear()


def stop_signal() -> int | None:
    """The signal of the stop recorded (:func:`ask_stop`), or None."""
    return _STOP_SIGNAL[0] if STOP_ASKED.is_set() and _STOP_SIGNAL else None


def raise_if_stop_asked() -> None:
    """Raises the stop the command line's handlers recorded (:data:`STOP_ASKED`) where its
    KeyboardInterrupt did not arrive; nothing otherwise (a program that installs none of them,
    calling the package from Python, never has one recorded)."""
    if STOP_ASKED.is_set():
        raise KeyboardInterrupt("a stop asked for earlier (its first interrupt was lost)")


def _stop_before_commit() -> None:
    """At an output's commit (:func:`atomic_file`, :func:`atomic_directory`): raises a recorded
    stop whose interrupt is not on its way, so the output is not written. A signal's exception
    raised inside a callback the interpreter runs (a garbage-collection callback of XLA's, while
    JAX loads) is printed as "Exception ignored" and lost: helper-113's predict and export wrote
    their output and exited 0 after a SIGTERM or Ctrl-C there. While an interrupt propagates
    (a stopping training writing the best epoch it holds) nothing is raised."""
    if STOP_ASKED.is_set() and not isinstance(sys.exc_info()[1], KeyboardInterrupt):
        raise KeyboardInterrupt("a stop asked for earlier (its interrupt was lost)")


@contextlib.contextmanager
def interrupts_deferred(note: str | None) -> Iterator[list[int]]:
    """Within the block, Ctrl-C (SIGINT) and a SIGTERM whose handler is Python's raise nothing:
    each is recorded in the yielded list (signal numbers) and the first prints ``note`` (one
    line on stderr; None: nothing). For what must finish once a stop has begun (training's stop writing the
    best epoch it holds): a second Ctrl-C, or a SIGTERM after it, had cut that write short and
    lost the epoch in silence. Handlers are put back after the block; off the main thread
    (where none can be set) the block runs as it is."""
    arrived: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield arrived
        return

    def record(signum, frame):
        if not arrived and note:
            print(note, file=sys.stderr, flush=True)
        arrived.append(signum)

    before = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        if callable(signal.getsignal(sig)):  # Python's own (default_int_handler, the CLI's SIGTERM)
            before[sig] = signal.signal(sig, record)
    try:
        yield arrived
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)
