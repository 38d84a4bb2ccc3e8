"""When the training loop writes an epoch's checkpoints (``train.checkpoint_every_epochs``).

Every N epochs (1: every epoch, the default) and at the run's last epoch, early stop included,
``latest`` is written; an improving epoch between two of those save points is held (a host copy
of its state, and its metadata) and written as ``best`` at the next one, before ``latest``.
Training that stops between save points on an error (divergence, an interrupt, SIGTERM)
first writes the held epoch as ``best`` and as ``latest`` (its copy): the run resumes from it. A
mid-epoch ``progress`` checkpoint is written only after the held epoch is (its metadata's best
epoch must be on disk). Nothing else depends on N: the history line of every epoch is written
when the epoch ends, and a resume keeps the lines up to the checkpoint it resumes from and
redoes the epochs after it bit for bit, so a kill between save points loses only time.

What a save point costs is orbax's per-array work (the paper's triple ResNet-50 state: ~3.4 s
a save on 2 CPU cores, more than a GPU epoch of a small cohort); holding an improving epoch is
one copy of its arrays to the host (565 MB for that state: parameters, BatchNorm
statistics, Adam moments).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from lnm_jax.fileio import error_line
from lnm_jax.training.checkpoint import RunCheckpoints
from lnm_jax.training.sharding import fully_addressable


def held(state: Any) -> Any:
    """A copy of ``state`` that outlives the next step, which donates its buffers: NumPy arrays
    (copies, never views of a device buffer) where this process holds every array, else device
    copies."""
    if fully_addressable(state):
        return jax.tree.map(lambda x: np.array(x, copy=True), state)
    return jax.tree.map(lambda x: x.copy(), state)


class SaveSchedule:
    """The epoch checkpoints of one training run (see the module's docstring).

    ``ckpts``: the run's :class:`~lnm_jax.training.checkpoint.RunCheckpoints`; ``every``:
    ``train.checkpoint_every_epochs`` (an int >= 1); ``last_epoch``: ``train.epochs``;
    ``saved``: called as ``saved(kind, epoch)`` once a ``best`` or ``latest`` checkpoint is
    committed (the loop moves aside what was computed from the state it replaced)."""

    def __init__(
        self,
        ckpts: RunCheckpoints,
        every: int,
        last_epoch: int,
        saved: Callable[[str, int], None] | None = None,
    ):
        self.ckpts, self.every, self.last_epoch = ckpts, int(every), int(last_epoch)
        self._saved = saved
        self._held: tuple[int, Any, dict] | None = None  # (epoch, state, metadata) of a best not yet written

    def _save(self, kind: str, epoch: int, state: Any, meta: dict, copy_of: str | None = None) -> None:
        self.ckpts.save(kind, epoch, state, meta, copy_of=copy_of)
        if self._saved is not None:
            self._saved(kind, epoch)

    def is_save_point(self, epoch: int, stopping: bool = False) -> bool:
        """Whether ``latest`` is written at the end of ``epoch`` (``stopping``: early stop)."""
        return stopping or epoch % self.every == 0 or epoch >= self.last_epoch

    def epoch_end(self, epoch: int, state: Any, best: dict, improved: bool, stopping: bool = False) -> None:
        """``state`` at the end of ``epoch`` (after its plateau step), ``best`` the best epoch so
        far (this one where ``improved``): written, held or neither, as the schedule says."""
        meta = {"epoch": epoch, "best": best}
        if not self.is_save_point(epoch, stopping):
            if improved:
                self._held = None  # the older copy released first: one copy held at a time
                self._held = (epoch, held(state), meta)
            return
        if improved:
            self._held = None  # this very state is the best: written below
            self._save("best", epoch, state, meta)
        else:
            self.write_held(pair=False)
        self._save("latest", epoch, state, meta, copy_of="best" if improved else None)

    def write_held(self, *, pair: bool = True) -> int | None:
        """Writes the held epoch as ``best`` (and, with ``pair``, as ``latest``: a run stopping
        between save points resumes from it); returns its epoch, None when none is held. The
        epoch stays held until its ``best`` is written: an interrupt raised by the save (once the
        save has committed: ``fileio.off_main_thread``) or a failed save leaves it for
        :meth:`on_stop`, which writes it with its ``latest``."""
        if self._held is None:
            return None
        epoch, state, meta = self._held
        self._save("best", epoch, state, meta)
        self._held = None
        if pair:
            self._save("latest", epoch, state, meta, copy_of="best")
        return epoch

    def on_stop(self, *, diverged: bool, primary: bool = True) -> None:
        """Training stopped on an error (``diverged``: a divergence): the held epoch is written
        as ``best`` and ``latest``. Several processes write only on a divergence (each sees it
        at the same step; an interrupt or a failure of one process alone would leave the
        others' collective save waiting). A save that fails here is one warning line (on the
        ``primary`` process): the stop's own error is the one the caller raises. That line says
        what is kept instead, and the epoch is no longer held: :meth:`kept` and :meth:`stopped`
        name what is on disk (an error raised before the stop, a divergence's, named the held
        epoch: this line corrects it)."""
        if self._held is None or (jax.process_count() > 1 and not diverged):
            return
        epoch = self._held[0]
        try:
            self.write_held()
        except Exception as e:  # noqa: BLE001  (the stop's own error is the one raised)
            self._held = None
            if primary:
                print(
                    f"warning: the best epoch ({epoch}) could not be saved: {error_line(e)}; instead, {self.kept()}",
                    file=sys.stderr,
                )

    def stopped(self) -> str:
        """The line a run stopped by an interrupt prints (after :meth:`on_stop`): the checkpoint
        it resumes from, and ``--resume`` only where there is one."""
        resumable = self._held is not None or self.ckpts.latest_epoch("latest") is not None
        return f"training stopped: {self.kept()}" + ("; train --resume continues from it" if resumable else "")

    def kept(self) -> str:
        """What a message about a stopped run says about the checkpoint it resumes from: the
        held epoch when there is one (:meth:`on_stop` writes it), else the latest written."""
        epoch = self._held[0] if self._held is not None else self.ckpts.latest_epoch("latest")
        if epoch is None:
            return "no checkpoint was written (nothing to resume from)"
        return f"the last good checkpoint (epoch {epoch}, {self.ckpts.directory('latest')}) is kept"
