"""The training loop: epochs of jitted steps, per-epoch validation, plateau LR drop, one metric
writer (JSON lines, TensorBoard, console), best/latest orbax checkpoints, resume, NaN guard."""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from lnm_jax import names
from lnm_jax.config import frozen_backbone_epochs
from lnm_jax.evaluation.summary import summarise_predictions
from lnm_jax.fileio import error_line, raise_if_stop_asked
from lnm_jax.metric_writer import MetricWriter, check_resumed_history, read_history
from lnm_jax.preflight import check_trainable
from lnm_jax.run import check_best
from lnm_jax.run_files import RunFiles, superseded_name
from lnm_jax.run_lock import check_held
from lnm_jax.training import sharding
from lnm_jax.training import state as state_lib
from lnm_jax.training.checkpoint import STALE_KEY, non_finite_paths, stopped_early
from lnm_jax.training.save_schedule import SaveSchedule
from lnm_jax.training.selection import NO_BEST, improves
from lnm_jax.training.steps import make_eval_step, make_train_step, predict, step_options

if TYPE_CHECKING:
    from lnm_jax.run import Run


class TrainingDivergedError(FloatingPointError):
    """Training diverged (a loss over ``train.max_loss``, or a parameter or BatchNorm statistic
    that is not finite); nothing of the diverged epoch was saved."""


class NonFiniteLossError(TrainingDivergedError):
    """Training produced a NaN/inf loss; the last good checkpoint is left untouched."""


@jax.jit
def _finite_leaves(tree):
    return jax.tree.map(lambda x: jnp.all(jnp.isfinite(x)), tree)


def non_finite_arrays(state) -> list[str]:
    """The paths of the parameters and BatchNorm statistics of ``state`` holding a NaN or inf.

    On the CPU, checked on the arrays as they are in host memory: no program to compile per model
    (0.46 s for the tests' triple ResNet-18, 1.6 s for the paper's triple ResNet-50 on 2 CPU
    cores), and as fast as the compiled check once compiled (0.03 s for ResNet-50's arrays).
    Elsewhere (an accelerator, a multi-host sharded state) checked on the devices: one flag per
    array comes back instead of the parameters themselves (190 MB for ResNet-50's, every epoch)."""
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    if jax.default_backend() == "cpu" and sharding.fully_addressable(variables):
        return non_finite_paths(jax.device_get(variables))
    flags = jax.device_get(_finite_leaves(variables))
    return [jax.tree_util.keystr(path) for path, ok in jax.tree_util.tree_leaves_with_path(flags) if not ok]


def _outputs_superseded(files: RunFiles, writer: MetricWriter):
    """``saved(kind, epoch)`` for :class:`SaveSchedule`: the run's output folders computed for
    an older state of the ``kind`` checkpoint (``eval_latest`` of epoch 2 when a resume has
    just saved epoch 3: its metrics, plots, availability table, Grad-CAM maps) are moved aside
    as ``eval_latest.epoch-2``, one console line each. Left in place they went on presenting
    epoch 2's numbers as the run's 'latest' ones, in silence. The primary process moves them."""

    stuck: set[Path] = set()  # folders that could not be moved: named once

    def saved(kind: str, epoch: int) -> None:
        if not writer.primary:
            return
        for folder, was in files.outputs_of(kind).items():
            if was == epoch or folder in stuck:
                continue
            moved = superseded_name(folder, was)
            try:
                folder.rename(moved)
            except OSError as e:  # the checkpoint is saved: training goes on, the folder is named
                stuck.add(folder)
                writer.print(
                    f"warning: {folder} was computed from the '{kind}' checkpoint of epoch {was}, now replaced by "
                    f"epoch {epoch}'s, and could not be moved aside ({error_line(e)}): it is not of the new one"
                )
                continue
            writer.print(
                f"{folder.name}/ was computed from the '{kind}' checkpoint of epoch {was}, now replaced by epoch "
                f"{epoch}'s: moved to {moved.name}/ (run evaluate, availability or gradcam again for the new one)"
            )

    return saved


def load_pretrained(run: Run, state):
    """Initialises the image branches from ``config.model.init_from``: one backbone for every
    branch (a folder with ``backbone.json``: converted weights, or a shared pretrained one), or
    one per branch (``<init_from>/<input>/``, as ``lnm-jax pretrain`` writes per-input ones)."""
    for branch, (variables, _) in run.pretrained_backbones().items():  # read and checked once
        state = state_lib.with_pretrained_backbones(state, run.optimizer[0], variables, (branch,))
    return state


def _progress_ahead(ckpts, step: int) -> bool:
    """Whether a mid-epoch checkpoint is newer than ``step`` (the latest epoch's state's, or 0)."""
    progress = ckpts.latest_epoch("progress")
    return progress is not None and progress > step


def _gathered(xs) -> np.ndarray:
    """Per-step outputs (this process's rows, or global device arrays) as one global vector."""
    return np.concatenate([np.ravel(sharding.to_host(x)) for x in xs]) if xs else np.zeros(0)


def _save_progress(
    saves, state, epoch, batches_done, loader_state, best, stale, before, labels, logits, losses
) -> None:
    """A mid-epoch checkpoint: the state after ``batches_done`` batches of ``epoch``, the
    loader's iterator state after the last of them, and the epoch's outputs so far (``before``:
    those of the steps before a resume), so that the resumed epoch's metrics cover every batch.
    Written only after the same finite checks as an epoch's end: a state holding NaN or inf, or
    a non-finite loss so far, stops the run and is never saved."""
    step = int(state.step)
    so_far = lambda k, xs: np.concatenate([before[k], _gathered(xs)]).astype(float).tolist()  # noqa: E731
    if not np.all(np.isfinite(so_far("losses", losses))):
        raise NonFiniteLossError(f"loss is not finite in epoch {epoch} by step {step}; {saves.kept()}")
    _check_finite_state(state, f"in epoch {epoch} by step {step}", "this mid-epoch state was not saved", saves)
    meta = {
        "epoch": epoch,
        "step": step,
        "batches_done": batches_done,
        "loader_state": loader_state,
        "best": best,
        STALE_KEY: stale,
        "labels": so_far("labels", labels),
        "logits": so_far("logits", logits),
        "losses": so_far("losses", losses),
    }
    saves.write_held(pair=False)  # the best epoch its metadata names is on disk first
    saves.ckpts.save("progress", step, state, meta)


def _check_max_loss(what: str, loss: float, epoch: int, config, saves, note: str = "") -> None:
    """:class:`TrainingDivergedError` when ``loss`` (training's or validation's) is over
    ``train.max_loss`` (0: off), naming the last good checkpoint."""
    if config.train.get("max_loss") and loss > config.train.max_loss:
        raise TrainingDivergedError(
            f"training diverged: {what} {loss:.3g} in epoch {epoch} is over train.max_loss={config.train.max_loss:g} "
            f"(learning rate {config.train.learning_rate:g} too high?); {note}{saves.kept()}"
        )


def _check_finite_state(state, where: str, note: str, saves) -> None:
    """:class:`TrainingDivergedError` when a parameter or BatchNorm statistic holds NaN or inf:
    checked before every checkpoint kind is written."""
    if bad := non_finite_arrays(state):
        raise TrainingDivergedError(
            f"training diverged {where}: {len(bad)} parameter/statistic array(s) hold NaN or inf "
            f"(e.g. {', '.join(bad[:3])}); {note}; {saves.kept()}"
        )


def _check_validation(logits, epoch: int, config, saves) -> None:
    """Divergence seen on validation: non-finite logits (inference-mode BatchNorm can blow up
    where training-mode batches did not) stop the run, naming the last good checkpoint."""
    logits = np.asarray(logits, np.float64)
    if bad := int(np.sum(~np.isfinite(logits))):
        raise TrainingDivergedError(
            f"training diverged: {bad} of {len(logits)} validation logits are NaN or inf in epoch {epoch} "
            f"(learning rate {config.train.learning_rate:g} too high?); nothing of this epoch was saved; "
            f"{saves.kept()}"
        )


def _epoch_summary(labels, logits) -> dict[str, float]:
    """The training log's numbers of one split: the shared summary's loss, AUC and accuracy."""
    s = summarise_predictions(labels, logits, calibration=False)
    return {"loss": s["loss"], "acc": s["at_0.5"]["accuracy"], "auc": s["auc"]}


def _resumes_from_a_checkpoint(run: Run) -> bool:
    """Whether ``run`` resumes from a checkpoint it holds (an epoch's or a mid-epoch one);
    nothing is created to find out. FileNotFoundError where it holds a 'best' checkpoint but
    none to resume from: a resume must not silently start over."""
    if not (run.resume and run.files.checkpoints.is_dir()):
        return False
    ckpts = run.checkpoints()
    try:
        if any(ckpts.latest_epoch(kind) is not None for kind in ("latest", "progress")):
            return True
        best = ckpts.latest_epoch("best")
    finally:
        ckpts.close()
    if best is not None:  # trained, but the state to go on from is gone: starting over would replace it all
        raise FileNotFoundError(
            f"--resume: {run.files.checkpoints} holds a 'best' checkpoint (epoch {best}) but no 'latest' one to "
            "resume from (deleted, or its save failed: a full disk?); starting at epoch 1 would replace the best "
            "checkpoint and the history. Restore checkpoints/latest from a copy, evaluate the best checkpoint as "
            "it is, or train a new run in another folder"
        )
    return False


def train(run: Run) -> dict:
    """Trains ``run`` (continuing from its latest checkpoint when it was created with
    ``resume=True``); returns the best epoch's record. A first start that stops before any
    checkpoint, whatever stops it (an error, Ctrl-C), leaves the folder as it found it
    (:meth:`Run.discard_start`, said on stderr): helper-94 had found a start killed by a
    MemoryError or Ctrl-C while decoding leave its records, told "nothing to resume from" and
    then refused the same command as a run that needs ``--resume``."""
    try:
        return _train(run)
    except BaseException:
        if (removed := run.discard_start()) is not None:  # (a divergence's message says it itself)
            print(f"note: {removed}", file=sys.stderr)
        raise


def _train(run: Run) -> dict:
    config, files = run.config, run.files
    data = run.data
    # a resume restores every array from its checkpoint, so it needs only the state's shapes:
    # no initialisation is compiled or run (the paper's ResNet-50 pair: ~10 s on a CPU); nor is
    # the pretrained backbone read again, which may have moved since
    resuming = _resumes_from_a_checkpoint(run)
    state = run.abstract_state() if resuming else run.fresh_state()
    if config.model.init_from and not resuming:
        state = load_pretrained(run, state)
    mesh = None
    if config.train.data_parallel and jax.device_count() > 1:
        mesh = sharding.data_mesh()
        for bs in (config.train.batch_size, config.train.eval_batch_size):
            sharding.check_batch_size(bs, mesh)
        state = sharding.replicate(state, mesh)
    check_trainable(config, len(run.split.train))  # as Run.create did: a Run built otherwise too
    steps = data.steps_per_epoch()
    if run.intensity_reference() is None:  # recorded at training time for predict's outlier check
        run.record_intensity_reference()
    ckpts = run.checkpoints(create=True)
    start_epoch, best, stale = 1, dict(NO_BEST), 0
    progress = None  # the mid-epoch checkpoint's metadata when resuming from one
    resumed = run.resume and ckpts.latest_epoch("latest") is not None
    if resumed:
        run.check_checkpoint(*ckpts.meta("latest"))
        check_best(ckpts, resuming=True)  # a best gone or replaced: said before anything is trained or written
        state, meta = ckpts.restore("latest", state)
        start_epoch, best = meta["epoch"] + 1, meta["best"]
        stale = int(meta.get(STALE_KEY, 0))  # a checkpoint saved before the count was kept: counted anew
    if run.resume and _progress_ahead(ckpts, int(state.step) if resumed else 0):
        run.check_checkpoint(*ckpts.meta("progress"))
        state, progress = ckpts.restore("progress", state)
        start_epoch, best, resumed = progress["epoch"], progress["best"], True
        stale = int(progress.get(STALE_KEY, stale))
    history = read_history(files.history, up_to=start_epoch - 1)  # a damaged history fails before any write
    if resumed:
        check_resumed_history(history, files.history, start_epoch - 1)
    patience = config.train.early_stop_patience
    # stopped early: at the patience its checkpoint was trained with, and still at this one
    stopped = resumed and progress is None and stopped_early(meta) and stale >= patience > 0
    if stopped:
        # stopped early (or would have, at this patience): as a finished run, nothing is written
        if jax.process_index() == 0:
            print(
                f"resuming from epoch {start_epoch - 1} ({ckpts.directory('latest')}): no new best (validation AUC, "
                f"ties to the lower loss) for {stale} epochs, at train.early_stop_patience={patience} the run stopped "
                "early; nothing trained, "
                "nothing written (raise train.early_stop_patience with --config.train.early_stop_patience to train on)"
            )
        ckpts.close()
        run.forget_checkpoints()
        return best
    if resumed and progress is None and start_epoch > config.train.epochs:
        # a finished run: nothing to train, so nothing is written; its record, logs and
        # checkpoints stay those of the training that made them
        if jax.process_index() == 0:
            print(
                f"resuming from epoch {start_epoch - 1} ({ckpts.directory('latest')}): train.epochs="
                f"{config.train.epochs} already reached; nothing trained, nothing written (raise train.epochs "
                "with --config.train.epochs to train on)"
            )
        ckpts.close()
        run.forget_checkpoints()
        return best
    run.write_pending_record()  # the checkpoint and the history were readable: the resume is recorded
    writer = MetricWriter(files.history, files.tensorboard, files.train_log, primary=jax.process_index() == 0)
    if progress is not None:
        writer.print(
            f"resuming in epoch {start_epoch} after its batch {progress['batches_done']} of {steps} "
            f"(step {progress['step']}, {ckpts.directory('progress')})"
        )
    elif resumed:
        writer.print(
            f"resuming from epoch {start_epoch - 1} ({ckpts.directory('latest')}): "
            + (
                f"epoch {start_epoch} to go"
                if start_epoch == config.train.epochs
                else f"epochs {start_epoch}-{config.train.epochs} to go"
            )
        )
    elif run.resume:
        writer.print(f"--resume: no checkpoint in {files.checkpoints} yet; starting at epoch 1")
    writer.rewrite(history)
    tx, plateau = run.optimizer
    t = config.train
    patients = run.cohort.by_id()
    options = step_options(config, [patients[i].lnm for i in run.split.subset("train")])
    if t.get("pos_weight", 1.0) == "balanced":
        writer.print(
            f"train.pos_weight='balanced': positives weigh {options['pos_weight']:.3f} (training negatives / positives)"
        )
    full_step = make_train_step(run.model, tx, mesh, **options)
    frozen_epochs = frozen_backbone_epochs(config)
    if t.get("freeze_backbone_epochs", 0) and not frozen_epochs:
        writer.print(
            f"note: train.freeze_backbone_epochs={t.freeze_backbone_epochs} freezes branches loaded from "
            "model.init_from; none is set: the image branches train from the first epoch"
        )
    frozen_step = make_train_step(run.model, tx, mesh, frozen_backbones=True, **options) if frozen_epochs else None
    eval_step = make_eval_step(run.model, mesh)

    epoch_batches = data.device_epochs(mesh)  # device-resident cohort or host loader: the data's choice
    every = config.train.get("checkpoint_every_steps", 0)
    saves = SaveSchedule(
        ckpts,
        config.train.get("checkpoint_every_epochs", 1),
        config.train.epochs,
        saved=_outputs_superseded(files, writer),
        # written while the next epoch trains (one process: several save collectively, in step)
        background=jax.process_count() == 1,
    )

    last_line = None  # when this process measured its previous epoch's line (epoch_cycle_s)
    diverged = None  # the TrainingDivergedError that stopped the loop
    failure = None  # the error that stopped it
    try:
        for epoch in range(start_epoch, config.train.epochs + 1):
            t0 = time.perf_counter()
            train_step = frozen_step if epoch <= frozen_epochs else full_step
            if epoch == frozen_epochs + 1 and frozen_epochs:
                writer.print(f"epoch {epoch}: image branches unfrozen (train.freeze_backbone_epochs={frozen_epochs})")
            labels, logits, losses, lesion_losses = [], [], [], []
            done, loader_state, before = 0, None, {"labels": [], "logits": [], "losses": []}
            if progress is not None and progress["epoch"] == epoch:  # resumed mid-epoch
                done, loader_state, before = progress["batches_done"], progress["loader_state"], progress
            bar = tqdm(
                epoch_batches(epoch, loader_state),
                initial=done,
                total=steps,
                desc=f"epoch {epoch}/{config.train.epochs}",
                unit="batch",
                leave=False,
                mininterval=2.0,
                disable=not writer.primary,
            )
            for i, ((loader_state, batch), inputs) in enumerate(bar, done):
                raise_if_stop_asked()  # a Ctrl-C whose KeyboardInterrupt was lost (fileio.STOP_ASKED)
                state, m = train_step(state, inputs)
                labels.append(batch[names.LABEL])  # numpy (host loader) or a device array (on_device)
                logits.append(m["logits"])
                losses.append(m["loss"])
                if "lesion_loss" in m:
                    lesion_losses.append(m["lesion_loss"])
                if (i + 1) % config.train.log_every_steps == 0:
                    loss = float(m["loss"])
                    if not math.isfinite(loss):
                        raise NonFiniteLossError(
                            f"loss is {loss} at epoch {epoch}, step {int(state.step)}; {saves.kept()}"
                        )
                    bar.set_postfix(loss=f"{loss:.4f}")
                if every and (i + 1) % every == 0 and i + 1 < steps:
                    _save_progress(
                        saves, state, epoch, i + 1, loader_state, best, stale, before, labels, logits, losses
                    )
            train_loss = float(np.mean(np.concatenate([before["losses"], _gathered(losses)])))
            if not math.isfinite(train_loss):
                raise NonFiniteLossError(
                    f"loss is {train_loss} in epoch {epoch} (step {int(state.step)}); {saves.kept()}"
                )
            _check_max_loss("mean train loss", train_loss, epoch, config, saves)
            _check_finite_state(state, f"in epoch {epoch}", "nothing of this epoch was saved", saves)
            train_time = time.perf_counter() - t0
            tr = _epoch_summary(
                np.concatenate([before["labels"], _gathered(labels)]).astype(np.int32),
                np.concatenate([before["logits"], _gathered(logits)]).astype(np.float32),
            )
            # the training logits' plain BCE, as the validation loss is (the convergence figure's
            # train curve), beside the objective trained: + auxiliary/lesion terms, pos_weight
            tr["bce"] = tr["loss"]
            tr["loss"] = train_loss  # the mean of the steps' losses (augmented, training-mode BatchNorm)
            val = predict(eval_step, state.params, state.batch_stats, data.validation_batches(mesh), mesh)
            _check_validation(val["logit"], epoch, config, saves)
            va = _epoch_summary(val[names.LABEL], val["logit"])
            _check_max_loss("validation loss", va["loss"], epoch, config, saves, "nothing of this epoch was saved; ")
            lr = state_lib.learning_rate(config.train.learning_rate, state)
            state = state_lib.plateau_step(plateau, state, va["loss"])
            record = {
                "epoch": epoch,
                "step": int(state.step),
                **{f"train_{k}": v for k, v in tr.items()},
                **{f"val_{k}": v for k, v in va.items()},
                "lr": lr,
                # the lesion head's loss (part of train_loss), over the batches run since a mid-epoch resume
                **({"train_lesion_loss": float(np.mean(_gathered(lesion_losses)))} if lesion_losses else {}),
                "train_patients_per_s": steps * config.train.batch_size / train_time,
                "epoch_time_s": (now := time.perf_counter()) - t0,  # steps and validation
            }
            if last_line is not None:  # the whole cycle: the previous epoch's line and checkpoints too
                record["epoch_cycle_s"] = now - last_line
            last_line = now
            improved = improves(va["auc"], va["loss"], best)
            if improved:
                best = {"val_auc": va["auc"], "epoch": epoch, "val_loss": va["loss"]}
            # the log line first: a process killed between the two leaves a line that resume
            # drops (it keeps the lines up to the checkpoint), never a checkpoint without a line
            check_held(run.files.root)  # (a folder removed or replaced meanwhile: stop, write nothing more)
            writer.write(record)
            if epoch > frozen_epochs:  # counted once the branches train
                stale = 0 if improved else stale + 1
            stopping = bool(patience) and stale >= patience
            # best first: a kill between the two resumes before this epoch, which it redoes
            saves.epoch_end(epoch, state, best, improved, stopping, {STALE_KEY: stale})
            writer.print(
                f"epoch {epoch:3d}  train loss {tr['loss']:.4f} auc {tr['auc']:.3f}  "
                + (f"lesion {record['train_lesion_loss']:.4f}  " if "train_lesion_loss" in record else "")
                + f"val loss {va['loss']:.4f} auc {va['auc']:.3f}  lr {lr:.1e}  "
                f"{record['epoch_time_s']:.1f}s{'  *best*' if improved else ''}"
            )
            if stopping:
                writer.print(
                    f"early stop: no new best for {config.train.early_stop_patience} epochs (a higher validation AUC, "
                    "or the same AUC at a lower validation loss)"
                )
                break
        saves.finish()  # the last save point's checkpoints committed (a failure raised here)
    except BaseException as e:  # the best epoch held since the last save point is written first
        failure = e
        diverged = e if isinstance(e, TrainingDivergedError) else None
        wrote = saves.on_stop(diverged=diverged is not None, primary=writer.primary)
        # Ctrl-C or SIGTERM (through the command line); or an error (a save's, raised at a later
        # save point) whose message named what was on disk before the stop wrote a newer epoch.
        # A divergence's message named the held epoch already.
        if isinstance(e, KeyboardInterrupt) or (wrote is not None and diverged is None):
            writer.print(saves.stopped())
        raise
    finally:
        # closed in this order whatever happens; while an error stops the run, a closer's own
        # failure (a full disk fails TensorBoard's flush too) is a warning line, not the error
        for close in (saves.close, ckpts.wait, ckpts.close, writer.close):
            try:
                close()
            except Exception as e:  # noqa: BLE001
                if failure is None:
                    raise
                writer.print(f"warning: while stopping: {error_line(e)}")
        run.forget_checkpoints()
        # a first start that diverged before any checkpoint leaves the folder as it found it:
        # its config (the learning rate at fault) would otherwise hold the folder, a new start
        # there taken for a resume of it
        if diverged is not None and (removed := run.discard_start()) is not None:
            raise type(diverged)(f"{diverged}; {removed}") from None
    return best
