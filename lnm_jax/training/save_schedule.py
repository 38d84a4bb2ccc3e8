"""When the training loop writes an epoch's checkpoints (``train.checkpoint_every_epochs``).

Every N epochs (1: every epoch, the default) and at the run's last epoch, early stop included,
``latest`` is written (N = 0: every epoch at which the previous save has been written, so that
training never waits for one; see below); an improving epoch between two of those save points is held (a copy
of its state where it is, and its metadata) and written as ``best`` at the next one, before ``latest``.
Training that stops between save points on an error (divergence, an interrupt, SIGTERM)
first writes the held epoch as ``best`` and as ``latest`` (its copy): the run resumes from it. A
mid-epoch ``progress`` checkpoint is written only after the held epoch is (its metadata's best
epoch must be on disk). Nothing else depends on N: the history line of every epoch is written
when the epoch ends, and a resume keeps the lines up to the checkpoint it resumes from and
redoes the epochs after it bit for bit, so a kill between save points loses only time.

What a save point costs is orbax's per-array work and the state's digest (the paper's triple
ResNet-50 state, 565 MB of parameters, BatchNorm statistics and Adam moments: ~3.4 s a save on 2
CPU cores, more than a GPU epoch of a small cohort: on an H200, 2026-12-04, epochs of 2,620
patients took 0.9 s of steps and 3.1 s in all, 1.4 s of it saves, saving every 5 epochs);
holding an improving epoch is one copy of its arrays where they are (on the device).

``background=True`` (the training loop's, where one process trains): a save point copies the
state where it is and a worker thread writes it while training goes on. The next save point, a
mid-epoch checkpoint, a stop, :meth:`SaveSchedule.kept` and :meth:`SaveSchedule.finish` wait
for it first, so one save is in flight at a time and what is on disk is read once it is
committed. A save that fails is raised by the next of those waits that raises (the next save
point, a mid-epoch checkpoint, or :meth:`SaveSchedule.finish` at the run's end), as the same one
line; a held epoch it had not yet written is held again, for the stop to write. Several
processes save in step (orbax's saves are collective): there the loop saves on its own thread.

N = 0 (``background`` only; otherwise every epoch) skips a save point whose previous save is
still being written, holding an improving epoch as between save points, so a save is in flight
at most once and training waits only for the last. Which epochs are written then depends on how
fast the disk is, not what is computed: a resume redoes the epochs after the checkpoint it finds,
bit for bit. On an H200 host (2026-12-04) a save of the paper's state took ~5.5 s, the epoch of a
1,024-patient cohort 0.25 s of steps: saving every 3 epochs, the loop waited 4 s of each 4.5 s
save-point cycle (``train_e2e.py --host-profile``: 87% of the loop's time in that wait).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import jax
import jax.numpy as jnp

from lnm_jax.fileio import error_line, interrupts_deferred
from lnm_jax.training.checkpoint import RunCheckpoints


@jax.jit
def _copied(state: Any) -> Any:
    return jax.tree.map(jnp.copy, state)


def held(state: Any) -> Any:
    """A copy of ``state`` that outlives the next step, which donates its buffers: each array
    copied where it is (on its device(s), with its sharding; a NumPy array becomes a device
    array), never a view of the donated buffer. On a GPU, a copy of the paper's 565 MB state on
    the device instead of one to the host. One compiled program per state structure: the 1,173
    arrays of the paper's state copied one by one took 0.2 s of the loop's thread per improving
    epoch on an H200 host (2026-12-04, ``train_e2e.py --host-profile``), mostly dispatch."""
    return _copied(state)


class SaveSchedule:
    """The epoch checkpoints of one training run (see the module's docstring).

    ``ckpts``: the run's :class:`~lnm_jax.training.checkpoint.RunCheckpoints`; ``every``:
    ``train.checkpoint_every_epochs`` (an int >= 0; 0: the module docstring's); ``last_epoch``: ``train.epochs``;
    ``saved``: called as ``saved(kind, epoch)`` once a ``best`` or ``latest`` checkpoint is
    committed (the loop moves aside what was computed from the state it replaced);
    ``background``: save points written by a worker thread (the module's docstring); then call
    :meth:`finish` after the last epoch, and :meth:`close` in any case."""

    def __init__(
        self,
        ckpts: RunCheckpoints,
        every: int,
        last_epoch: int,
        saved: Callable[[str, int], None] | None = None,
        background: bool = False,
    ):
        self.ckpts, self.every, self.last_epoch = ckpts, int(every), int(last_epoch)
        if self.every < 0:
            raise ValueError(f"train.checkpoint_every_epochs must be >= 0, got {every}")
        self._saved = saved
        self._held: tuple[int, Any, dict] | None = None  # (epoch, state, metadata) of a best not yet written
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="checkpoint") if background else None
        self._pending: Future | None = None  # the save point in flight (background)
        self._failure: BaseException | None = None  # its error, until a wait raises it
        self._unwritten: tuple[int, Any, dict] | None = None  # a held epoch whose failed save point did not write it

    def _save(self, kind: str, epoch: int, state: Any, meta: dict, copy_of: str | None = None) -> None:
        self.ckpts.save(kind, epoch, state, meta, copy_of=copy_of)
        if self._saved is not None:
            self._saved(kind, epoch)

    def is_save_point(self, epoch: int, stopping: bool = False) -> bool:
        """Whether ``latest`` is written at the end of ``epoch`` (``stopping``: early stop); with
        N = 0, unless the previous save is still being written (not the last epoch's)."""
        if stopping or epoch >= self.last_epoch:
            return True
        if self.every == 0:
            return self._pending is None or self._pending.done()
        return epoch % self.every == 0

    def epoch_end(
        self, epoch: int, state: Any, best: dict, improved: bool, stopping: bool = False, extra: dict | None = None
    ) -> None:
        """``state`` at the end of ``epoch`` (after its plateau step), ``best`` the best epoch so
        far (this one where ``improved``): written, held or neither, as the schedule says.
        ``extra``: more of the loop's state for the checkpoint's metadata."""
        meta = {"epoch": epoch, "best": dict(best), **(extra or {})}
        if not self.is_save_point(epoch, stopping):
            if improved:
                self._held = None  # the older copy released first: one copy held at a time
                self._held = (epoch, held(state), meta)
            return
        self._join()  # the save point before this one: its failure is raised here
        # this very state is the best (written below), or the held epoch is written first
        earlier, self._held = (None if improved else self._held), None
        if self._pool is None:
            self._save_point(epoch, state, meta, improved, earlier)
        else:  # a copy: the next step donates the buffers of state
            self._pending = self._pool.submit(self._save_point, epoch, held(state), meta, improved, earlier)

    def _save_point(self, epoch: int, state: Any, meta: dict, improved: bool, earlier) -> None:
        """A save point's checkpoints: ``best`` (this epoch's where ``improved``, else the
        ``earlier`` held epoch's, if any), then ``latest``. Where the save of the earlier epoch's
        ``best`` does not complete (a failure, an interrupt), that epoch is held again, for
        :meth:`on_stop` (unless a newer best is held by then)."""
        try:
            if improved:
                self._save("best", epoch, state, meta)
            elif earlier is not None:
                self._save("best", *earlier)
                earlier = None
        except BaseException:
            self._unwritten = earlier  # held again by the wait for this save (on the main thread)
            raise
        self._save("latest", epoch, state, meta, copy_of="best" if improved else None)

    def _wait(self) -> None:
        """Waits for the save point in flight (background), keeping its error for a wait that
        raises, and holds again an epoch a failed save point did not write; an interrupt of the
        wait leaves the save in flight."""
        if self._pending is not None:
            error = self._pending.exception()  # waits
            self._pending = None
            if error is not None and self._failure is None:
                self._failure = error
        if self._unwritten is not None and self._held is None:  # a newer best held meanwhile supersedes it
            self._held = self._unwritten
        self._unwritten = None

    def _join(self) -> None:
        """:meth:`_wait`, then the failure of the save in flight (or of one a message waited for)
        raised, once."""
        self._wait()
        error, self._failure = self._failure, None
        if error is not None:
            raise error

    def finish(self) -> None:
        """After the last epoch: waits for the save point in flight; its failure is raised."""
        self._join()

    def close(self) -> None:
        """Waits for the save point in flight and ends the worker thread (a failure not raised
        by then was said by :meth:`on_stop`, or the run stopped on an error before it)."""
        self._wait()
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    def write_held(self, *, pair: bool = True) -> int | None:
        """Writes the held epoch as ``best`` (and, with ``pair``, as ``latest``: a run stopping
        between save points resumes from it); returns its epoch, None when none is held. The
        epoch stays held until its ``best`` is written: an interrupt raised by the save (once the
        save has committed: ``fileio.off_main_thread``) or a failed save leaves it for
        :meth:`on_stop`, which writes it with its ``latest``."""
        self._join()
        if self._held is None:
            return None
        epoch, state, meta = self._held
        self._save("best", epoch, state, meta)
        self._held = None
        if pair:
            self._save("latest", epoch, state, meta, copy_of="best")
        return epoch

    def on_stop(self, *, diverged: bool, primary: bool = True) -> int | None:
        """Training stopped on an error (``diverged``: a divergence): the held epoch is written
        as ``best`` and ``latest``; returns its epoch, None where none was written. Several
        processes write only on a divergence (each sees it at the same step; an interrupt or a
        failure of one process alone would leave the others' collective save waiting). A save
        that fails here is one warning line (on the ``primary`` process): the stop's own error is
        the one the caller raises. That line says what is kept instead, and the epoch is no
        longer held: :meth:`kept` and :meth:`stopped` name what is on disk (an error raised
        before the stop, a divergence's, named the held epoch: this line corrects it). A failed
        background save not raised yet is one warning line too, first. A second Ctrl-C or a
        SIGTERM meanwhile does not cut the stop short (``fileio.interrupts_deferred``): the
        save in flight and the held epoch's are what the run resumes from."""
        note = "interrupted again: the stop is writing the best epoch it holds; it ends once that is committed"
        with interrupts_deferred(note if primary else None):
            self._wait()
            failed, self._failure = self._failure, None
            if failed is not None and primary:
                print(f"warning: {error_line(failed)}", file=sys.stderr)
            if self._held is None or (jax.process_count() > 1 and not diverged):
                return None
            epoch = self._held[0]
            try:
                self.write_held()
            except Exception as e:  # noqa: BLE001  (the stop's own error is the one raised)
                self._held = None
                if primary:
                    why = error_line(e)
                    print(
                        f"warning: the best epoch ({epoch}) could not be saved: {why}; instead, {self.kept()}",
                        file=sys.stderr,
                    )
                return None
            return epoch

    def stopped(self) -> str:
        """The line a stopped run prints (after :meth:`on_stop`): the checkpoint it resumes
        from, and ``--resume`` only where there is one."""
        self._wait()
        on_disk = any(self.ckpts.latest_epoch(k) is not None for k in ("latest", "progress"))
        resumable = self._held is not None or on_disk
        return f"training stopped: {self.kept()}" + ("; train --resume continues from it" if resumable else "")

    def kept(self) -> str:
        """What a message about a stopped run says about the checkpoint it resumes from (once
        the save in flight is over): the held epoch when there is one (:meth:`on_stop` writes
        it), else the latest written; a mid-epoch ``progress`` checkpoint where it is newer, as
        ``train --resume`` decides (it is written after the held epoch's ``best``, so it is
        newer when its epoch is after the latest's)."""
        self._wait()
        epoch = self._held[0] if self._held is not None else self.ckpts.latest_epoch("latest")
        if (progress := self._progress_after(epoch or 0)) is not None:
            return (
                f"the last good checkpoint (step {progress['step']}: epoch {progress['epoch']} after its batch "
                f"{progress['batches_done']}, {self.ckpts.directory('progress')}) is kept"
            )
        if epoch is None:
            return "no checkpoint was written (nothing to resume from)"
        return f"the last good checkpoint (epoch {epoch}, {self.ckpts.directory('latest')}) is kept"

    def _progress_after(self, epoch: int) -> dict | None:
        """The metadata of the mid-epoch checkpoint when it is within an epoch after ``epoch``;
        None where there is none, or it cannot be read (a message naming what is kept must not
        fail: the resume reports a damaged one)."""
        if self.ckpts.latest_epoch("progress") is None:
            return None
        try:
            meta, _ = self.ckpts.meta("progress")
        except Exception:  # noqa: BLE001
            return None
        return meta if meta["epoch"] > epoch else None
