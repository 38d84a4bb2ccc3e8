"""Orbax checkpoints of a run: the latest epoch (for --resume), the best by validation AUC,
and (``train.checkpoint_every_steps``) the progress within an epoch.

Three ``CheckpointManager``s under ``<checkpoints>/{latest,best,progress}``, each keeping one
checkpoint; a checkpoint is the TrainState pytree plus a small JSON of run metadata (epoch,
best validation AUC, ...; for progress, the loader's iterator state and the epoch's partial
training outputs). ``latest`` and ``best`` are numbered by epoch, ``progress`` by step.
Orbax writes to a temporary folder and renames, so an interrupted save never replaces a good
checkpoint with a half-written one. An improving epoch's ``latest`` is its ``best``'s committed
folder copied the same way (:meth:`RunCheckpoints._copied`): orbax's per-array work, not the
bytes, is what a save costs. A save is synchronous: it returns once committed, and a failed save
(a full disk) raises as one :class:`CheckpointSaveError`, its temporary folder removed. (The
training loop calls it from a worker thread while the next epoch trains:
``training/save_schedule.py``.)

Every checkpoint proves what it is: the SHA-256 of its arrays (each leaf's path, dtype, shape
and bytes, in tree order: :func:`state_digest`) is stored in its metadata and checked on
restore, so a flipped bit, a truncated or swapped array file or unreadable metadata gives one
:class:`CheckpointCorruptError` naming the checkpoint, never a model that restores and
silently differs. Its metadata carries the SHA-256 of the rest of itself (:func:`meta_digest`),
and the record the run gives (:class:`RunCheckpoints`' ``record``: the model's fields, the
config, the patient split it was trained with), so that an edited epoch, a deleted record or a
value of another type is one :class:`CheckpointCorruptError` too. The libraries' own
tracebacks of a failed read (orbax, asyncio, absl) go to the run's log, not the console.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import re
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from lnm_jax import names
from lnm_jax.fileio import QuietFileHandler, error_line, is_int, json_digest, off_main_thread, warn_once
from lnm_jax.training.sharding import fully_addressable, placed_as

KINDS = ("latest", "best", "progress")
TMP_MARK = ".orbax-checkpoint-tmp"  # orbax's suffix for a checkpoint being written
STEP_NAME = re.compile(r"^(0|[1-9][0-9]*)$")  # a committed checkpoint's folder, as orbax names it


class CheckpointSaveError(OSError):
    """A checkpoint could not be written; the last committed one is intact."""


class CheckpointCorruptError(ValueError):
    """A checkpoint that cannot be read, or whose arrays are not those it was saved with."""


class CheckpointReplacedError(RuntimeError):
    """A checkpoint replaced by a newer one each time this process began to read it (a training
    process is saving the run): not damaged, only moving."""


# how many times a reader reads a checkpoint that a training process replaced while it was read
READ_ATTEMPTS = 3


DIGEST_KEY = names.STATE_DIGEST
# what a run's damaged checkpoint's message says to do (RunCheckpoints.restore)
RUN_REMEDY = "restore it from a copy, evaluate another checkpoint (--checkpoint best | latest) or retrain"
MODEL_KEY = "model_fields"  # the fields of the config that define the model (config.model_fields)
CONFIG_KEY = "config"  # the whole config the state was trained with, as config.json holds it
SPLIT_KEY = "split_sha256"  # the patient split it was trained on (data.cohorts.splits.split_digest)
RUN_KEY = "run_sha256"  # the run that saved it (run.run_identity), also in the run's run_info.json
IMAGES_KEY = "images_sha256"  # the images it was trained on: run.images_digest of image_geometry.csv
# an epoch checkpoint's count of epochs without a new best (selection.improves) (once the branches train):
# a resume goes on counting, and one of a run that stopped early trains nothing (helper-81: patience
# restarted at a resume, and a resumed early-stopped run trained past its stop)
STALE_KEY = "epochs_without_gain"
PREPROCESSING_KEY = "preprocessing_sha256"  # the decoding code it was trained with: portable.preprocessing_digest
META_DIGEST_KEY = "meta_sha256"  # the SHA-256 of the rest of the metadata (meta_digest)
LIBRARY_LOGGERS = ("absl", "asyncio", "orbax", "jax._src.distributed")


def _on_host(state: Any) -> Any:
    """``state`` with its arrays as NumPy arrays when every one is fully addressable (one
    process; what orbax then writes without per-array sharding metadata and replica
    bookkeeping: 0.30 vs 0.75 s for the 454 arrays of a test-sized triple state, the same
    files' worth of numbers); a multi-host sharded state as it is."""
    return jax.device_get(state) if fully_addressable(state) else state


def state_digest(state: Any) -> str | None:
    """SHA-256 over every array leaf of ``state`` (path, dtype, shape, bytes, in tree order);
    None when a leaf is not fully addressable from this process (a multi-host sharded state)."""
    if not fully_addressable(state):
        return None
    h = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_leaves_with_path(state):
        a = np.ascontiguousarray(np.asarray(leaf))
        h.update(f"{jax.tree_util.keystr(path)}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def non_finite_paths(tree: Any) -> list[str]:
    """The paths (``jax.tree_util.keystr``) of the arrays of ``tree`` (host arrays) that hold a
    NaN or an infinity, in tree order."""
    return [
        jax.tree_util.keystr(path)
        for path, leaf in jax.tree_util.tree_leaves_with_path(tree)
        if not np.isfinite(np.asarray(leaf)).all()
    ]


def meta_digest(meta: dict) -> str:
    """SHA-256 of a checkpoint's metadata without :data:`META_DIGEST_KEY`
    (:func:`lnm_jax.fileio.json_digest`: orbax writes and reads the JSON back bit for bit)."""
    return json_digest(meta, META_DIGEST_KEY)


def _is_number(v) -> bool:
    """An int or float, not a bool; unlike :func:`lnm_jax.fileio.is_number`, -inf too (the best
    validation AUC before any epoch improved on it)."""
    return is_int(v) or isinstance(v, float)


# what each key of a checkpoint's metadata must hold where it is present (the loop writes them)
_META_TYPES = {
    "epoch": (is_int, "a whole number"),
    "step": (is_int, "a whole number"),
    "batches_done": (is_int, "a whole number"),
    # the best epoch so far ({} in a checkpoint of an untrained state, as benchmark_export saves one)
    "best": (
        lambda v: isinstance(v, dict) and is_int(v.get("epoch", 0)) and _is_number(v.get("val_auc", 0.0)),
        "an object with a whole-number epoch and a numeric val_auc",
    ),
    DIGEST_KEY: (lambda v: v is None or isinstance(v, str), "a string"),  # None: a multi-host state
    MODEL_KEY: (lambda v: isinstance(v, dict), "a JSON object"),
    CONFIG_KEY: (lambda v: isinstance(v, dict), "a JSON object"),
    SPLIT_KEY: (lambda v: isinstance(v, str), "a string"),
    RUN_KEY: (lambda v: isinstance(v, str), "a string"),
    IMAGES_KEY: (lambda v: isinstance(v, str), "a string"),
    PREPROCESSING_KEY: (lambda v: isinstance(v, str), "a string"),
}


def stopped_early(meta: dict) -> bool | None:
    """Whether the epoch checkpoint ``meta`` was saved when its run stopped early: its count of
    epochs without a gain (:data:`STALE_KEY`) reached the ``train.early_stop_patience`` it was
    trained with (its :data:`CONFIG_KEY` record). False with no early stopping; None where that
    cannot be told (early stopping, but a checkpoint saved before the count was kept)."""
    patience = int((meta.get(CONFIG_KEY) or {}).get("train", {}).get("early_stop_patience", 0) or 0)
    if not patience:
        return False
    return meta[STALE_KEY] >= patience if STALE_KEY in meta else None


def checked_meta(meta: Any, where: Path) -> dict:
    """``meta`` (a checkpoint's metadata as read) once it is what a save writes: a JSON object
    that matches its :data:`META_DIGEST_KEY` where it has one (a checkpoint saved before it was
    recorded has none) and whose known keys hold values of their type; else one
    :class:`CheckpointCorruptError` naming the checkpoint ``where``."""
    remedy = "restore it from a copy or retrain"
    if not isinstance(meta, dict):
        raise CheckpointCorruptError(f"checkpoint {where}: its metadata is not a JSON object; {remedy}")
    stored = meta.get(META_DIGEST_KEY)
    if stored is None:  # said once per checkpoint and process
        warn_once(
            f"checkpoint {where} holds no digest of its metadata (saved before one was kept, or it was deleted): its "
            "epoch and its record of the config and split it was trained with are not verified",
            key=("unrecorded", where),
        )
    if stored is not None and stored != meta_digest(meta):
        raise CheckpointCorruptError(
            f"checkpoint {where}: its metadata does not match the SHA-256 stored with it: it was edited or is "
            f"damaged; {remedy}"
        )
    for key, (ok, what) in _META_TYPES.items():
        if key in meta and not ok(meta[key]):
            raise CheckpointCorruptError(
                f"checkpoint {where}: its metadata's {key!r} is {json.dumps(meta[key])[:60]}, not {what}: it was "
                f"edited or is damaged; {remedy}"
            )
    return meta


@contextlib.contextmanager
def libraries_to_log(log: Path | None, *, keep_on_failure: bool = False):
    """Keeps the checkpoint libraries' messages (thousands of asyncio tracebacks on a damaged
    file or a full disk) off the console for the block: into ``log`` when given, else dropped,
    and so are the exceptions the libraries' threads raise. ``keep_on_failure`` (a failed save):
    when the block fails, all of it stays off the console for the rest of the process (orbax's
    and asyncio's threads keep reporting the same failure while the error line is printed); an
    interrupt is not a failure (Ctrl-C: ``off_main_thread`` raises it once the save is done, so
    no thread is left to report, and a notebook that goes on keeps its logging). A record that
    cannot be written (the disk is full) is dropped."""
    handler = QuietFileHandler(log, delay=True) if log is not None and log.parent.is_dir() else logging.NullHandler()
    loggers = [logging.getLogger(name) for name in LIBRARY_LOGGERS]
    saved = [(lg.handlers[:], lg.propagate) for lg in loggers]
    for lg in loggers:
        lg.handlers, lg.propagate = [handler], False
    hook = threading.excepthook
    threading.excepthook = lambda args: logging.getLogger("orbax").error(
        "exception in thread %s", args.thread, exc_info=(args.exc_type, args.exc_value, args.exc_traceback)
    )
    failed = False
    try:
        yield
    except Exception:
        failed = True
        raise
    finally:
        if not (failed and keep_on_failure):  # else the libraries' threads are not done with it
            threading.excepthook = hook
            for lg, (handlers, propagate) in zip(loggers, saved):
                lg.handlers, lg.propagate = handlers, propagate
            handler.close()


def _is_disk_full(e: BaseException) -> bool:
    while e is not None:
        if isinstance(e, OSError) and e.errno == errno.ENOSPC or "No space left on device" in str(e):
            return True
        e = e.__cause__ or e.__context__
    return False


class CheckpointMismatchError(ValueError):
    """A checkpoint of another model than the one it is restored into (other shapes or types)."""


def _check_shapes(restored: Any, abstract: Any, where: Path) -> None:
    """:class:`CheckpointMismatchError` naming the first array whose stored shape or dtype is
    not the one ``abstract`` asks for: orbax restores an array as it was stored, whatever the
    template's shape, so a config that no longer describes the checkpoint's model (an edited
    config.json, a width or input changed) restored and failed only at the first step."""
    for (path, got), want in zip(jax.tree_util.tree_leaves_with_path(restored), jax.tree.leaves(abstract)):
        dtype = got.dtype if hasattr(got, "dtype") else np.asarray(got).dtype  # a sharded array: its own
        if np.shape(got) != tuple(want.shape) or dtype != want.dtype:
            raise CheckpointMismatchError(
                f"checkpoint {where} holds another model than the config describes: "
                f"{jax.tree_util.keystr(path)} is {dtype}{list(np.shape(got))} there, "
                f"{want.dtype}{list(want.shape)} in the config's model; was the run's config.json edited, or "
                "does a --config override change the model?"
            )


def _fsync(path: Path) -> None:
    """``path`` (a file or a folder's entries) flushed to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_temporaries(folder: Path, settle_s: float = 0.15, limit_s: float = 3.0) -> bool:
    """Removes the temporary folders of a failed save in ``folder`` (orbax's and :meth:`RunCheckpoints._copied`'s)
    until none has appeared for ``settle_s`` (within ``limit_s``); whether none is left. A failed
    orbax save returns while TensorStore writes it started are still in flight: a folder removed
    at once was written again after it (one full-disk run in five, fresh-user trial of
    2026-12-04), and the message said it had been removed."""
    deadline, quiet_since = time.monotonic() + limit_s, None
    while True:
        found = list(folder.glob(f"*{TMP_MARK}*"))
        for tmp in found:
            shutil.rmtree(tmp, ignore_errors=True)
        now = time.monotonic()
        if found or quiet_since is None:
            quiet_since = now
        if now - quiet_since >= settle_s:
            return True
        if now >= deadline:
            return not any(folder.glob(f"*{TMP_MARK}*"))
        time.sleep(0.03)


class RunCheckpoints:
    def __init__(
        self,
        root: Path,
        *,
        create: bool = True,
        kinds: tuple[str, ...] = KINDS,
        log: Path | None = None,
        record: dict | None = None,
    ):
        """``create``: this object writes (it makes ``root`` and removes the temporary folders of
        a killed save); a reader changes nothing on disk. ``record``: JSON values stored in every
        checkpoint's metadata beside the loop's (a run's: its model's fields, config and split
        under :data:`MODEL_KEY`, :data:`CONFIG_KEY`, :data:`SPLIT_KEY`)."""
        root = Path(root).resolve()
        self._log = log  # where library messages of a failed read go (the run's train.log)
        self._record = dict(record or {})
        # cleanup_tmp_directories: a save killed mid-write (kill -9, a full disk) leaves a temporary
        # folder; a writer removes it on start (a reader never touches the folder). A writer makes
        # ``root``; a kind's folder is made by its first save: a run that never saves one
        # (progress, without train.checkpoint_every_steps) has none, not an empty one
        if create:
            root.mkdir(parents=True, exist_ok=True)
        opts = ocp.CheckpointManagerOptions(
            max_to_keep=1, create=False, enable_async_checkpointing=False, cleanup_tmp_directories=create
        )
        self._managers = {k: ocp.CheckpointManager(root / k, options=opts) for k in kinds}
        self._saved: dict[str, tuple[int, dict]] = {}  # kind -> (number, metadata) this object saved last
        # kinds orbax has written to through this object: their managers' start-up cleanup of
        # temporary folders (run in a thread, awaited by orbax's first save) is over
        self._orbax_wrote: set[str] = set()

    def directory(self, kind: str) -> Path:
        return Path(self._managers[kind].directory)

    def save(self, kind: str, number: int, state: Any, meta: dict, *, copy_of: str | None = None) -> None:
        """Saves ``state`` and ``meta`` as checkpoint ``number`` (an epoch, or a step for progress).
        ``copy_of``: a kind whose checkpoint ``number`` this object has just saved (the best
        epoch's ``latest`` is its ``best``); where the metadata, the state's digest with it, are
        the same, that checkpoint's committed files are copied (:meth:`_copied`), once orbax
        has written ``kind`` through this object (its start-up cleanup of temporary folders,
        run in a thread, is then over), instead of written again through orbax, whose per-array
        work is what a save costs (the tests' triple ResNet-10 state: 0.4 s of CPU; the paper's:
        3.4 s); orbax writes it otherwise."""
        epoch = meta.get("epoch", number)
        # through JSON first, as orbax writes and reads it: the digest is of what is read back
        meta = json.loads(json.dumps({**meta, **self._record, DIGEST_KEY: state_digest(state)}))
        meta[META_DIGEST_KEY] = meta_digest(meta)
        self._saved.pop(kind, None)  # until this save is committed
        same = copy_of is not None and meta[DIGEST_KEY] is not None and self._saved.get(copy_of) == (number, meta)
        if same and kind in self._orbax_wrote and self._copied(copy_of, kind, number, meta):
            self._saved[kind] = (number, meta)
            return
        try:
            # a full disk: hundreds of library tracebacks, not on the console
            with libraries_to_log(self._log, keep_on_failure=True):
                written = off_main_thread(
                    self._managers[kind].save,
                    number,
                    args=ocp.args.Composite(state=ocp.args.StandardSave(_on_host(state)), meta=ocp.args.JsonSave(meta)),
                )
        except Exception as e:
            folder = self.directory(kind)
            removed = _remove_temporaries(folder)
            self._managers[kind].reload()  # forget the step that was not committed
            kept = self.latest_epoch(kind)
            why = "no space left on device" if _is_disk_full(e) else f"{type(e).__name__}: {e}".splitlines()[0]
            kept = f"the last committed checkpoint (epoch {kept}) is intact" if kept is not None else "none was before"
            tmp = (
                "its temporary folder was removed"
                if removed
                else "its temporary folder is still being written and could not be removed (the next start removes it)"
            )
            raise CheckpointSaveError(
                f"could not save the '{kind}' checkpoint of epoch {epoch} in {folder}: {why}; {tmp}; {kept}"
            ) from e
        if written is not False:  # False: orbax kept a step numbered at or after it, and wrote nothing
            self._check_committed(kind, number, epoch, state, meta)
            self._saved[kind] = (number, meta)
            self._orbax_wrote.add(kind)

    def _check_committed(self, kind: str, number: int, epoch: int, state: Any, meta: dict) -> None:
        """Reads back checkpoint ``number`` of ``kind`` as orbax committed it and compares its
        arrays' SHA-256 with the state saved (one process; several write parts no one of them
        reads whole). helper-113: with file handles running out (``ulimit -n 16``), orbax
        committed a checkpoint whose files were missing and train exited 0, every later command
        calling it damaged. One that does not read back is removed and the save fails as a
        :class:`CheckpointSaveError` naming what is left (orbax removed the earlier one on commit)."""
        if jax.process_count() > 1:
            return
        folder = self.directory(kind)
        abstract = jax.tree.map(lambda a: np.empty(np.shape(a), np.asarray(a).dtype), state)  # (a Python scalar too)
        args = ocp.args.Composite(state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore())
        try:
            with libraries_to_log(self._log, keep_on_failure=True):
                out = off_main_thread(self._managers[kind].restore, number, args=args)
        except Exception as e:  # noqa: BLE001  (whatever the read says: the save is not what was meant)
            problem = f"{type(e).__name__}: {e}".splitlines()[0]
        else:  # (compared as JSON text: a NaN in the record, a one-class AUC, equals itself there)
            digest = meta[DIGEST_KEY]
            same = json.dumps(out["meta"], sort_keys=True) == json.dumps(meta, sort_keys=True) and (
                digest is None or state_digest(out["state"]) == digest
            )
            problem = None if same else "what it holds differs from what was saved"
        if problem is None:
            return
        shutil.rmtree(folder / str(number), ignore_errors=True)
        self._managers[kind].reload()
        kept = self.latest_epoch(kind)
        kept = (
            f"the checkpoint of epoch {kept} is intact"
            if kept is not None
            else "none is left (orbax removed the earlier one on committing this one)"
        )
        raise CheckpointSaveError(
            f"could not save the '{kind}' checkpoint of epoch {epoch} in {folder}: it was committed but does not "
            f"read back ({problem}; file handles or disk running out?): removed; {kept}"
        )

    def _copied(self, source: str, kind: str, number: int, meta: dict) -> bool:
        """Checkpoint ``number`` of ``source`` copied as ``kind``'s, committed as orbax commits
        one: copied into a temporary folder (named as orbax names its own, so that a writer's
        start removes one a kill left), flushed to the disk (as tensorstore flushes what orbax
        writes), renamed into place; then the older ones removed, as ``max_to_keep=1`` does.
        Independent files, not links. False, with nothing left behind, where it cannot be: several
        processes (each writes its own part through orbax), a source whose metadata on disk is
        not ``meta`` (a save orbax skipped: an epoch redone after a kill, its older ``best`` kept),
        a ``kind`` step at or after ``number``, or any OSError (a full disk: the orbax save that
        follows reports it)."""
        if jax.process_count() > 1:
            return False
        src, root = self.directory(source) / str(number), self.directory(kind)
        final, tmp = root / str(number), root / f"{number}{TMP_MARK}-copy"
        steps = [p for p in root.iterdir() if STEP_NAME.match(p.name)] if root.is_dir() else []
        if any(int(p.name) >= number for p in steps):
            return False
        try:
            if json.loads((src / "meta" / "metadata").read_text(encoding="utf-8")) != meta:
                return False
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(src, tmp)
            for path in [*tmp.rglob("*"), tmp]:
                _fsync(path)
            tmp.rename(final)
            _fsync(root)
        except (OSError, ValueError):
            shutil.rmtree(tmp, ignore_errors=True)
            return False
        for old in steps:
            shutil.rmtree(old, ignore_errors=True)
        self._managers[kind].reload()
        return True

    def latest_epoch(self, kind: str) -> int | None:
        return self._managers[kind].latest_step()

    def meta(self, kind: str) -> tuple[dict, Path]:
        """The metadata of the latest ``kind`` checkpoint (its JSON only, no array read) and
        that checkpoint's folder."""
        args = ocp.args.Composite(meta=ocp.args.JsonRestore())
        out, where = self._read(
            kind,
            args,
            lambda where, why: (
                f"checkpoint {where}: its metadata cannot be read ({why}); restore it from a copy or retrain"
            ),
        )
        return checked_meta(out["meta"], where), where

    def _replaced(self, kind: str, step: int) -> bool:
        """Whether ``kind``'s checkpoint ``step`` was replaced while this process read it: a
        training process writing the run (readers such as ``export`` and ``predict`` take no
        lock) saved a newer one and removed it (``max_to_keep=1``). The step list is read again
        from disk."""
        mngr = self._managers[kind]
        mngr.reload()
        return not (Path(mngr.directory) / str(step)).exists() or mngr.latest_step() != step

    def _read(self, kind: str, args, damaged) -> tuple[dict, Path]:
        """orbax's restore of the latest ``kind`` checkpoint with ``args``, and its folder. One
        replaced while it was read (:meth:`_replaced`) is read again at its newer step, up to
        :data:`READ_ATTEMPTS` times (then :class:`CheckpointReplacedError`); any other failed
        read is :class:`CheckpointCorruptError` with ``damaged(folder, reason)``."""
        mngr = self._managers[kind]
        for attempt in range(1, READ_ATTEMPTS + 1):
            step = mngr.latest_step()
            if step is None:
                raise FileNotFoundError(f"no '{kind}' checkpoint in {mngr.directory}")
            where = Path(mngr.directory) / str(step)
            try:
                with libraries_to_log(self._log):
                    return off_main_thread(mngr.restore, step, args=args), where
            except Exception as e:  # noqa: BLE001  (any failed read is a damaged checkpoint, unless replaced)
                if not self._replaced(kind, step):
                    raise CheckpointCorruptError(damaged(where, error_line(e))) from e
                if attempt == READ_ATTEMPTS:
                    raise CheckpointReplacedError(
                        f"checkpoint {where} was replaced by a newer one {READ_ATTEMPTS} times while it was read: a "
                        "process is training this run; read it once that process has stopped"
                    ) from e
        raise AssertionError("unreachable")

    def restore(self, kind: str, abstract_state: Any, remedy: str = RUN_REMEDY) -> tuple[Any, dict]:
        """Restores into the structure and placement of ``abstract_state`` (a state or its shape
        structs: :func:`~lnm_jax.training.sharding.placed_as`); ``remedy``: what a damaged
        checkpoint's message tells the user to do (the commands that read it differ). A checkpoint replaced while it
        was read (a training process saving the run meanwhile) is read again at its newer step
        (:meth:`_read`)."""
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract_state)
        # one process: read into host arrays (no per-array sharding work), then placed as abstract
        template = abstract if jax.process_count() > 1 else jax.tree.map(lambda a: np.empty(a.shape, a.dtype), abstract)
        args = ocp.args.Composite(state=ocp.args.StandardRestore(template), meta=ocp.args.JsonRestore())
        out, where = self._read(
            kind,
            args,
            lambda where, why: f"checkpoint {where} cannot be read ({why}); it is damaged or incomplete: {remedy}",
        )
        _check_shapes(out["state"], abstract, where)
        meta = checked_meta(out["meta"], where)
        stored = meta.get(DIGEST_KEY)  # kept in meta: derived files record which state they came from
        if stored is not None:
            actual = state_digest(out["state"])
            if actual is not None and actual != stored:
                raise CheckpointCorruptError(
                    f"checkpoint {where}: its arrays do not match the SHA-256 stored when it was saved "
                    f"({stored[:12]}... vs {actual[:12]}...): a damaged or replaced file; restore it from a copy "
                    "or retrain"
                )
        return placed_as(out["state"], abstract_state), meta

    def wait(self) -> None:
        for m in self._managers.values():
            m.wait_until_finished()

    def close(self) -> None:
        for m in self._managers.values():
            m.close()
