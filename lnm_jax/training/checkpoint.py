"""Orbax checkpoints of a run: the latest epoch (for --resume) and the best by validation AUC.

Two ``CheckpointManager``s under ``<checkpoints>/{latest,best}``, each keeping one
checkpoint; a checkpoint is the TrainState pytree plus a small JSON of run metadata
(epoch, best validation AUC, ...). Orbax writes to a temporary folder and renames, so an
interrupted save never replaces a good checkpoint with a half-written one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

KINDS = ("latest", "best")


class RunCheckpoints:
    def __init__(self, root: Path, *, create: bool = True):
        root = Path(root).resolve()
        opts = ocp.CheckpointManagerOptions(max_to_keep=1, create=create)
        self._managers = {k: ocp.CheckpointManager(root / k, options=opts) for k in KINDS}

    def save(self, kind: str, epoch: int, state: Any, meta: dict) -> None:
        self._managers[kind].save(
            epoch, args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
        )

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
