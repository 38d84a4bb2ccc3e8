"""One writer per run folder: the commands that write into a run (train, pretrain, evaluate,
availability, gradcam into the run, reproduce, demo) hold its lock while they run; a second gets
one line naming the holder. Readers (predict, export, gradcam elsewhere) take no lock: orbax
commits a checkpoint by renaming a finished folder, so a reader never sees half of one, and one
that a training process replaces while it is read (``max_to_keep=1`` removes the older) is read
again at its newer step (``RunCheckpoints.restore``).

The lock is ``filelock``'s (an OS file lock, released by the kernel when its process dies, so
a ``kill -9`` leaves no stale lock); beside it, ``lock_owner.json`` says who holds it (PID,
host, command, since when) for the message a second writer gets.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock, Timeout

from lnm_jax.run_files import RunFiles, refuse_nested_run


class RunLockedError(RuntimeError):
    """The run folder is held by another process."""


class RunFolderGoneError(RuntimeError):
    """The run folder a command holds was removed, moved or replaced while it ran."""


# what this process holds: each run folder's path -> (the folder's and its lock file's identity
# when the lock was taken, the command); checked by :func:`check_held`
_HELD: dict[str, tuple] = {}  # (identity, command[, True once its lock note is written])


def _identity(files: RunFiles) -> tuple[int, ...]:
    """The run folder's and its lock file's (device, inode): what a removed, moved or replaced
    folder, or a lock file deleted under its holder, changes. OSError where either is gone."""
    root, lock = os.stat(files.root), os.stat(files.lock)
    return root.st_dev, root.st_ino, lock.st_dev, lock.st_ino


def _key(workdir: Path | str) -> str:
    return os.path.abspath(workdir)


def _held_root(workdir: Path | str) -> str | None:
    """The run folder this process holds that is ``workdir`` or holds it (a protocol's sub-runs
    and folds lie in the folder ``reproduce`` locks: helper-111), or None."""
    key = Path(_key(workdir))
    return next((str(p) for p in (key, *key.parents) if str(p) in _HELD), None)


def folder_gone(workdir: Path | str) -> str | None:
    """Why the run folder this process holds (:func:`hold`) at or above ``workdir`` is no
    longer the one it locked, or None (also where it holds none): removed, moved, or replaced by
    another (a second writer then takes a lock of its own on a new lock file: helper-110, two
    trainings in one folder, the first one's clean-up removing the second's files). Told by the
    folder's and its lock file's device and inode, and by the holder its lock file's note names
    (an inode a network file system reuses for the replacing folder: helper-111)."""
    root = _held_root(workdir)
    if root is None:
        return None
    identity, command, *noted = _HELD[root]
    files = RunFiles(root)
    try:
        same = _identity(files) == identity
    except OSError:
        same = False
    if same and noted:  # (a note this process could not write, a full disk: a dead holder's may be there)
        try:
            owner = json.loads(files.lock_owner.read_text(encoding="utf-8"))
            same = owner.get("pid") == os.getpid() and owner.get("host") == socket.gethostname()
        except (OSError, ValueError, AttributeError):  # no note (a full disk when it was written): the inodes say
            pass
    if same:
        return None
    return (
        f"{root} was removed, moved or replaced while {command} ran (it is not the folder, or its lock not the "
        "lock, this process took): it stops here, and removes nothing; what it wrote after that may be there, "
        "incomplete: remove it, or restore the run from a copy"
    )


def check_held(workdir: Path | str) -> None:
    """:class:`RunFolderGoneError` where :func:`folder_gone` says why (a writer calls it before
    it writes into its run: each epoch, each output folder)."""
    if why := folder_gone(workdir):
        raise RunFolderGoneError(why)


def _owner(files: RunFiles) -> str:
    try:
        o = json.loads(files.lock_owner.read_text(encoding="utf-8"))
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(o["since"]))
        return f"PID {o['pid']} on {o['host']} ({o['command']}, since {since})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


def _not_a_run_folder(root: Path) -> str | None:
    """Why ``root`` cannot be made a run folder (a file, a link to nothing, a file above it), or None."""
    if root.is_symlink() and not root.exists():
        return f"is a link to {os.readlink(root)}, which does not exist"
    if root.exists() and not root.is_dir():
        return "is a file, not a folder"
    above = next((a for a in root.parents if a.exists()), None)
    return f"lies below {above}, a file" if above is not None and not above.is_dir() else None


@contextlib.contextmanager
def hold(workdir: Path | str, command: str, *, create: bool = False) -> Iterator[None]:
    """Holds ``workdir``'s lock for the block; raises :class:`RunLockedError` at once, naming
    the holder, when another process holds it. ``create``: make the folder (commands that
    start a run); otherwise a folder that does not exist or holds no run (no ``config.json``) is
    left for the command to report, with no lock file written into it.
    Nested holds in one process (the demo training its own run) are fine."""
    if create and str(workdir) == "-":  # (helper-111: a folder named "-" had been made, as predict's --out - a file)
        raise ValueError("--workdir -: names a run folder, not standard output; give its path")
    files = RunFiles(workdir)
    if create and (why := _not_a_run_folder(files.root)):  # (mkdir's words: "File exists", "Not a directory")
        raise FileExistsError(f"{files.root} {why}: --workdir names a run folder, a new one or a run's")
    if create:  # before the folder is made: inside another run's checkpoints, orbax would take it
        refuse_nested_run(files.root)
    made = create and not files.root.exists()
    if create:
        files.root.mkdir(parents=True, exist_ok=True)
    elif not files.config.is_file():  # no folder, or no run in it: left for the command to report, no .lock left there
        yield
        return
    lock = FileLock(str(files.lock), timeout=0, is_singleton=True)
    try:
        lock.acquire()
    except Timeout:
        raise RunLockedError(
            f"{files.root} is in use by {_owner(files)}: one process writes a run folder at a time; "
            "wait for it or use another --workdir"
        ) from None
    except OSError as e:
        if e.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise
        # (helper-109: a read-only run folder's evaluate --out elsewhere said ".lock: Read-only file system")
        raise OSError(
            e.errno,
            f"{e.strerror}: {command} writes in the run folder {files.root} (its lock, and its records); copy the "
            "run to a folder this user can write (predict, export and gradcam --out read a run without writing it)",
            str(files.lock),
        ) from None
    outer = lock.lock_counter == 1
    if outer:
        _HELD[_key(files.root)] = (_identity(files), command)
    finished = False
    try:
        if outer:
            owner = {"pid": os.getpid(), "host": socket.gethostname(), "command": command, "since": time.time()}
            with contextlib.suppress(OSError):  # a note for the next writer's message (a full disk: none)
                files.lock_owner.write_text(json.dumps(owner), encoding="utf-8")
                _HELD[_key(files.root)] += (True,)  # noted: folder_gone reads the note too
        yield
        finished = True
    finally:
        gone = folder_gone(files.root) if outer else None
        if outer:
            _HELD.pop(_key(files.root), None)
            if not gone:
                # (helper-113: a folder made read-only meanwhile had its unlink's error replace the
                # command's own, and the lock was never released)
                with contextlib.suppress(OSError):
                    files.lock_owner.unlink(missing_ok=True)
        lock.release()
        if gone and finished:  # (helper-110: evaluate and train had said success, their folder deleted under them)
            raise RunFolderGoneError(gone)
        # a start that failed before writing anything leaves no folder behind it
        with contextlib.suppress(OSError):
            if outer and not gone and made and {p.name for p in files.root.iterdir()} <= {files.lock.name}:
                files.lock.unlink(missing_ok=True)
                files.root.rmdir()
