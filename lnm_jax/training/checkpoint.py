"""Orbax checkpoints of a run: the latest epoch (for --resume), the best by validation AUC,
and (``train.checkpoint_every_steps``) the progress within an epoch.

Three ``CheckpointManager``s under ``<checkpoints>/{latest,best,progress}``, each keeping one
checkpoint; a checkpoint is the TrainState pytree plus a small JSON of run metadata (epoch,
best validation AUC, ...; for progress, the loader's iterator state and the epoch's partial
training outputs). ``latest`` and ``best`` are numbered by epoch, ``progress`` by step.
Orbax writes to a temporary folder and renames, so an interrupted save never replaces a good
checkpoint with a half-written one. Saves are synchronous (the loop waited for each one
anyway), so a failed save (a full disk) raises at once as one :class:`CheckpointSaveError`, its
temporary folder removed.
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

KINDS = ("latest", "best", "progress")
TMP_MARK = ".orbax-checkpoint-tmp"  # orbax's suffix for a checkpoint being written


class CheckpointSaveError(OSError):
    """A checkpoint could not be written; the last committed one is intact."""


def _is_disk_full(e: BaseException) -> bool:
    while e is not None:
        if isinstance(e, OSError) and e.errno == errno.ENOSPC or "No space left on device" in str(e):
            return True
        e = e.__cause__ or e.__context__
    return False


class RunCheckpoints:
    def __init__(self, root: Path, *, create: bool = True, kinds: tuple[str, ...] = KINDS):
        root = Path(root).resolve()
        # cleanup_tmp_directories: a save killed mid-write (kill -9, a full disk) leaves a temporary
        # folder; a writer removes it on start (a reader never touches the folder)
        opts = ocp.CheckpointManagerOptions(
            max_to_keep=1, create=create, enable_async_checkpointing=False, cleanup_tmp_directories=create
        )
        self._managers = {k: ocp.CheckpointManager(root / k, options=opts) for k in kinds}

    def directory(self, kind: str) -> Path:
        return Path(self._managers[kind].directory)

    def save(self, kind: str, number: int, state: Any, meta: dict) -> None:
        """Saves ``state`` and ``meta`` as checkpoint ``number`` (an epoch, or a step for progress)."""
        epoch = meta.get("epoch", number)
        try:
            self._managers[kind].save(
                number, args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
            )
        except Exception as e:
            folder = self.directory(kind)
            for tmp in folder.glob(f"*{TMP_MARK}*"):
                shutil.rmtree(tmp, ignore_errors=True)
            self._managers[kind].reload()  # forget the step that was not committed
            kept = self.latest_epoch(kind)
            why = "no space left on device" if _is_disk_full(e) else f"{type(e).__name__}: {e}".splitlines()[0]
            kept = f"the last committed checkpoint (epoch {kept}) is intact" if kept is not None else "none was before"
            raise CheckpointSaveError(
                f"could not save the '{kind}' checkpoint of epoch {epoch} in {folder}: {why}; its temporary "
                f"folder was removed; {kept}"
            ) from e

    def latest_epoch(self, kind: str) -> int | None:
        return self._managers[kind].latest_step()

    def restore(self, kind: str, abstract_state: Any) -> tuple[Any, dict]:
        """Restores into the structure (and shardings) of ``abstract_state``."""
        mngr = self._managers[kind]
        step = mngr.latest_step()
        if step is None:
            raise FileNotFoundError(f"no '{kind}' checkpoint in {mngr.directory}")
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract_state)
        out = mngr.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore())
        )
        return out["state"], out["meta"]

    def wait(self) -> None:
        for m in self._managers.values():
            m.wait_until_finished()

    def close(self) -> None:
        for m in self._managers.values():
            m.close()
