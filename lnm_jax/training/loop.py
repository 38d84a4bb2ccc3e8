"""The training loop: epochs of jitted steps, per-epoch validation, plateau LR drop,
JSON-lines + TensorBoard logs, best/latest orbax checkpoints, resume, NaN guard."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from ml_collections import ConfigDict
from tqdm import tqdm

from lnm_jax import experiment
from lnm_jax.evaluation.metrics import safe_auc, sigmoid
from lnm_jax.models.fusion import FusionClassifier, parse_modalities
from lnm_jax.training import sharding
from lnm_jax.training import state as state_lib
from lnm_jax.training.checkpoint import RunCheckpoints
from lnm_jax.training.steps import bce_loss, device_batch, make_eval_step, make_train_step, predict

HISTORY = "metrics.jsonl"


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN/inf loss; the last good checkpoint is left untouched."""


class RunExistsError(FileExistsError):
    pass


# Fields a resumed run may change; any other difference would silently mix two experiments.
RESUMABLE_FIELDS = ("train.epochs", "train.early_stop_patience", "train.log_every_steps", "eval.",
                    "model.lowering")  # a lowering choice: same parameters, same mathematics


def check_resumable(stored: ConfigDict, config: ConfigDict) -> None:
    def flat(d, prefix=""):
        for k, v in d.items():
            if isinstance(v, dict):
                yield from flat(v, f"{prefix}{k}.")
            else:
                yield f"{prefix}{k}", v
    # via JSON, so that a tuple and the list it was saved as compare equal
    a, b = (dict(flat(json.loads(c.to_json()))) for c in (stored, config))
    changed = sorted(k for k in a.keys() | b.keys()
                     if a.get(k) != b.get(k) and not k.startswith(RESUMABLE_FIELDS))
    if changed:
        raise RunExistsError("cannot resume with a different experiment; changed: "
                             + ", ".join(f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in changed))


def build_model(config: ConfigDict) -> FusionClassifier:
    return FusionClassifier(modalities=parse_modalities(config.modalities),
                            backbone=config.model.backbone, width=config.model.width,
                            dtype=jnp.dtype(config.model.dtype), variant=config.model.variant,
                            missing_inputs=config.model.missing_inputs,
                            modality_dropout=config.model.modality_dropout,
                            temporal_pool=config.model.temporal_pool,
                            lowering=config.model.get("lowering", "auto"))  # older runs: auto


def init_state(config: ConfigDict, model: FusionClassifier, sample_batch: dict):
    tx = state_lib.make_optimizer(config.train.learning_rate)
    plateau = state_lib.make_plateau(config.train.plateau)
    rng = jax.random.key(config.seed)
    st = state_lib.create_train_state(model, rng, device_batch(sample_batch), tx, plateau)
    return st, tx, plateau


def load_pretrained(config: ConfigDict, state, tx, model: FusionClassifier):
    """Initialises every image branch from ``config.model.init_from`` (a converted backbone)."""
    from lnm_jax.weights.io import load_backbone  # noqa: PLC0415

    variables, meta = load_backbone(config.model.init_from)
    want = {"arch": config.model.backbone, "variant": config.model.variant}
    if {k: meta.get(k) for k in want} != want:
        raise ValueError(f"{config.model.init_from} holds {meta.get('arch')} ({meta.get('variant')}) "
                         f"but the config asks for {want['arch']} ({want['variant']})")
    branches = tuple(m for m in model.modalities if m in ("bmode", "ceus"))
    return state_lib.with_pretrained_backbones(state, tx, variables, branches)


def _epoch_stats(labels, logits) -> dict[str, float]:
    labels = np.asarray(labels)
    logits = np.asarray(logits, np.float64)
    loss = float(bce_loss(jnp.asarray(logits), jnp.asarray(labels), jnp.ones(len(labels))))
    return {"loss": loss, "acc": float(np.mean((logits > 0) == (labels == 1))) if len(labels) else math.nan,
            "auc": safe_auc(labels, sigmoid(logits))}


def _read_history(workdir: Path, up_to_epoch: int) -> list[dict]:
    path = workdir / HISTORY
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if r["epoch"] <= up_to_epoch]


def train(config: ConfigDict, workdir: Path | str, *, resume: bool = False) -> dict:
    """Trains per ``config`` in ``workdir``; returns the best epoch's record."""
    workdir = Path(workdir)
    # A real cohort is validated before anything is written; a synthetic one is made below.
    cohort = experiment.resolve_cohort(config, workdir) if config.data.manifest else None
    if not resume and (workdir / "checkpoints").exists():
        raise RunExistsError(f"{workdir} already holds a run; pass --resume or use a new --workdir")
    workdir.mkdir(parents=True, exist_ok=True)
    if resume and (workdir / "config.json").is_file():
        check_resumable(experiment.load_config(workdir), config)
    if cohort is None:
        cohort = experiment.resolve_cohort(config, workdir)
    split = experiment.run_split(config, cohort, workdir)
    experiment.save_config(config, workdir)
    data = experiment.RunData(config, cohort, split, workdir)

    model = build_model(config)
    sample = data.sample_batch()
    state, tx, plateau = init_state(config, model, sample)
    if config.model.init_from:
        state = load_pretrained(config, state, tx, model)
    mesh = None
    if config.train.data_parallel and jax.device_count() > 1:
        mesh = sharding.data_mesh()
        for bs in (config.train.batch_size, config.train.eval_batch_size):
            sharding.check_batch_size(bs, mesh)
        state = sharding.replicate(state, mesh)
    ckpts = RunCheckpoints(workdir)
    start_epoch, best = 1, {"val_auc": -math.inf, "epoch": 0}
    if resume and ckpts.latest_epoch("latest") is not None:
        state, meta = ckpts.restore("latest", state)
        start_epoch, best = meta["epoch"] + 1, meta["best"]
    history = _read_history(workdir, start_epoch - 1)
    primary = jax.process_index() == 0  # multi-host: one process writes the logs
    if primary:
        (workdir / HISTORY).write_text("".join(json.dumps(h) + "\n" for h in history))

    from tensorboardX import SummaryWriter  # noqa: PLC0415  (heavy, only for training)
    tb = SummaryWriter(str(workdir / "tb")) if primary else None
    train_step = make_train_step(model, tx, mesh, seed=config.seed)
    eval_step = make_eval_step(model, mesh)
    steps = data.steps_per_epoch()
    if steps == 0:
        raise ValueError(f"train split has {len(split.train)} patients, fewer than one batch "
                         f"of {config.train.batch_size}")
    patience_left = config.train.early_stop_patience

    def put(batch):
        inputs = device_batch(batch)
        return jax.device_put(inputs) if mesh is None else sharding.shard_batch(inputs, mesh)

    if config.data.on_device:
        from lnm_jax.data.on_device import DeviceCohort  # noqa: PLC0415
        on_device = DeviceCohort(
            data.train_arrays(), batch_size=config.train.batch_size, norm=data.norm,
            augment=config.data.augment.to_dict(), seed=config.seed,
            sharding=None if mesh is None else sharding.batch_sharding(mesh),
            replicated=None if mesh is None else sharding.replicated(mesh))
        epoch_batches = lambda epoch: ((b, b) for b in on_device.epoch(epoch))  # noqa: E731
    else:
        epoch_batches = lambda epoch: sharding.prefetch_to_device(data.train_batches(epoch), put)  # noqa: E731

    try:
        for epoch in range(start_epoch, config.train.epochs + 1):
            t0 = time.perf_counter()
            labels, logits, losses = [], [], []
            bar = tqdm(epoch_batches(epoch), total=steps,
                       desc=f"epoch {epoch}/{config.train.epochs}", unit="batch", leave=False,
                       mininterval=2.0)
            for i, (batch, inputs) in enumerate(bar):
                state, m = train_step(state, inputs)
                labels.append(batch["lnm"])  # numpy (host pipeline) or a device array (on_device)
                logits.append(m["logits"])
                losses.append(m["loss"])
                if (i + 1) % config.train.log_every_steps == 0:
                    loss = float(m["loss"])
                    if not math.isfinite(loss):
                        raise NonFiniteLossError(f"loss is {loss} at epoch {epoch}, step "
                                                 f"{int(state.step)}; last good checkpoint kept")
                    bar.set_postfix(loss=f"{loss:.4f}")
            train_loss = float(np.mean(jax.device_get(losses)))
            if not math.isfinite(train_loss):
                raise NonFiniteLossError(f"loss is {train_loss} in epoch {epoch} (step "
                                         f"{int(state.step)}); last good checkpoint kept")
            train_time = time.perf_counter() - t0
            host = lambda x: x if isinstance(x, np.ndarray) else sharding.to_host(x)  # noqa: E731
            tr = _epoch_stats(np.concatenate([host(x) for x in labels]),
                              np.concatenate([sharding.to_host(x) for x in logits]))
            tr["loss"] = train_loss
            val = predict(eval_step, state.params, state.batch_stats, data.eval_batches("val"), mesh)
            va = _epoch_stats(val["lnm"], val["logit"])
            lr = state_lib.learning_rate(config.train.learning_rate, state)
            state = state_lib.plateau_step(plateau, state, va["loss"])
            record = {"epoch": epoch, "step": int(state.step),
                      **{f"train_{k}": v for k, v in tr.items()},
                      **{f"val_{k}": v for k, v in va.items()},
                      "lr": lr, "train_patients_per_s": steps * config.train.batch_size / train_time,
                      "epoch_time_s": time.perf_counter() - t0}
            improved = va["auc"] > best["val_auc"]  # NaN never improves
            if improved:
                best = {"val_auc": va["auc"], "epoch": epoch, "val_loss": va["loss"]}
                ckpts.save("best", epoch, state, {"epoch": epoch, "best": best})
            ckpts.save("latest", epoch, state, {"epoch": epoch, "best": best})
            ckpts.wait()
            history.append(record)
            if primary:
                with (workdir / HISTORY).open("a") as f:
                    f.write(json.dumps(record) + "\n")
                for k, v in record.items():
                    if k != "epoch" and isinstance(v, float) and math.isfinite(v):
                        tb.add_scalar(k, v, epoch)
            tqdm.write(f"epoch {epoch:3d}  train loss {tr['loss']:.4f} auc {tr['auc']:.3f}  "
                       f"val loss {va['loss']:.4f} auc {va['auc']:.3f}  lr {lr:.1e}  "
                       f"{record['epoch_time_s']:.1f}s{'  *best*' if improved else ''}")
            if config.train.early_stop_patience:
                patience_left = config.train.early_stop_patience if improved else patience_left - 1
                if patience_left <= 0:
                    tqdm.write(f"early stop: no validation-AUC gain for "
                               f"{config.train.early_stop_patience} epochs")
                    break
    finally:
        ckpts.wait()
        ckpts.close()
        if tb is not None:
            tb.close()
    return best
