"""``lnm-jax pretrain``: self-supervised pretraining of the image backbones on unlabeled
ultrasound, written as a backbone checkpoint that ``model.init_from`` loads.

Method: SimCLR (Chen et al., ICML 2020), the contrastive method that USCL (Chen et al., MICCAI
2021: ultrasound pretraining on a few thousand images, positives from frames of one video)
builds on. Why it, for ResNets on a few thousand grayscale images on CPUs or one GPU: it needs
no momentum encoder or queue (BYOL, MoCo v2, DINO: a second forward pass per step and a
schedule that assumes hundreds of epochs), its negatives make collapse impossible (SimSiam and
BYOL avoid it only through predictor and schedule details that are fragile at small batch and
short schedules), and masked-image methods target ViTs (a ResNet needs sparse convolutions to
use them). Its weakness, a need for many negatives, matters less at a few thousand images:
a batch of 128 pairs holds 254 negatives per view. ``pretrain.positives='patient'`` adds
USCL's idea for still images: the second view comes from another image of the same patient
(BUS-BRA's two views of one lesion; B-mode and CEUS of one nodule, with a shared backbone).

One backbone shared by both image inputs (``pretrain.shared_backbone``, the default: twice the
images for one network) or one per input. Each is trained on the manifests' images but the
downstream test split's (:mod:`lnm_jax.data.cohorts.unlabeled`), on the accelerator(s): the images are
held there as uint8 and each jitted step draws its views (:mod:`lnm_jax.pretraining.views`),
normalises them by their input's statistics (``data.norm``, as training will), and updates the
encoder; batches are split over every device (BatchNorm statistics and the loss over the global
batch). Resumable from the checkpoint of the last finished epoch (batch order, views and
partners are functions of the seed, the epoch and the step, so a resumed run is the
uninterrupted one). At the end, a linear probe and a k-NN probe of the frozen features on the
downstream training split, scored on its validation split, against the same probes on the
randomly initialised backbone (:mod:`lnm_jax.pretraining.probe`).
"""

from __future__ import annotations

import hashlib
import math
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from ml_collections import ConfigDict
from tqdm import tqdm

from lnm_jax import compile_options, names, rng_streams
from lnm_jax import run_files as F
from lnm_jax.config import ConfigError, check_fields, write_config
from lnm_jax.data.cohorts import unlabeled
from lnm_jax.data.cohorts.manifest import MISSING_COLUMN, ManifestError, read_manifest
from lnm_jax.data.pixels.sources import Framing
from lnm_jax.fileio import discard_made, raise_if_stop_asked, read_json, write_json, write_text
from lnm_jax.metric_writer import history_text, read_history
from lnm_jax.models.contrastive import BACKBONE, ContrastiveEncoder, nt_xent
from lnm_jax.output_guard import refuse_export_folder
from lnm_jax.pretraining import views
from lnm_jax.pretraining.probe import FOLDS as PROBE_FOLDS
from lnm_jax.pretraining.probe import probe
from lnm_jax.provenance import made_with
from lnm_jax.run_files import refuse_nested_run
from lnm_jax.run_lock import check_held, folder_gone
from lnm_jax.training import sharding
from lnm_jax.training.checkpoint import STEP_NAME, RunCheckpoints
from lnm_jax.training.loop import TrainingDivergedError
from lnm_jax.training.state import run_init_program

SHARED = "shared"  # the group name of a backbone shared by every image input
CONFIG = F.CONFIG  # the same file name as a run's
INPUTS_RECORD = "pretrain_inputs.json"
# config fields a pretraining never reads (its views are pretrain.augment's): not compared on resume or reuse
UNREAD_FIELDS = ("data.augment.",)
HISTORY = "pretrain_history.jsonl"
CHECKPOINTS = "checkpoints"
REPORT = "pretrain_report.json"
BACKBONES = "backbone"  # W/backbone (shared) or W/backbone/<input> (one per input)


@flax.struct.dataclass
class PretrainState:
    step: jax.Array
    params: dict
    batch_stats: dict
    opt_state: optax.OptState


def image_inputs(config: ConfigDict) -> tuple[str, ...]:
    """The image inputs the model takes (``config.modalities``): the only ones pretrained on
    (helper-96: a B-mode model's pretraining had read CEUS images too, and a B-mode-only cohort
    was refused for lacking CEUS). ValueError where the model takes none."""
    taken = tuple(m for m in names.parse_modalities(config.modalities) if m in names.IMAGE_INPUTS)
    if not taken:
        raise ValueError(f"modalities={config.modalities!r} takes no image: there is no backbone to pretrain")
    return taken


def groups(config: ConfigDict) -> dict[str, tuple[str, ...]]:
    """The backbones to pretrain and the inputs whose images each one sees (the model's image
    inputs only: :func:`image_inputs`)."""
    taken = image_inputs(config)
    if config.pretrain.shared_backbone:
        return {SHARED: taken}
    return {m: (m,) for m in taken}


def check_batches(config: ConfigDict, cohorts: Sequence, exclude: Sequence[str] = ()) -> None:
    """ValueError naming the backbone whose images (every image of ``cohorts``' patients but the
    first cohort's ``exclude``d ones) fill less than one batch of ``pretrain.batch_size``:
    counted from the manifests, before anything is decoded or written; and :class:`ConfigError`
    where the devices each batch is sharded over do not divide ``pretrain.batch_size``
    (helper-91: said by the mesh after every image was decoded, exit 1)."""
    pc = config.pretrain
    if problems := sharding.indivisible_batches({"pretrain.batch_size": pc.batch_size}):
        raise ConfigError(problems)
    kept, _ = unlabeled.split_out(unlabeled.image_refs(cohorts, image_inputs(config)), exclude)
    kept, _ = unlabeled.first_of_each(kept)  # (counted as pretraining takes them: each picture once)
    for group, inputs in groups(config).items():
        n = sum(r.modality in inputs for r in kept)
        if n < pc.batch_size:
            raise ValueError(
                (f"{n} images for" if n else "no images for")
                + f" the '{group}' backbone to pretrain, less than one batch of pretrain.batch_size={pc.batch_size}"
                + ("" if pc.shared_backbone else " (pretrain.shared_backbone=True pretrains one on every image)")
            )


def backbone_dir(workdir: Path | str, group: str) -> Path:
    root = Path(workdir) / BACKBONES
    return root if group == SHARED else root / group


def build_encoder(config: ConfigDict) -> ContrastiveEncoder:
    m, p = config.model, config.pretrain
    return ContrastiveEncoder(
        arch=m.backbone,
        width=m.width,
        variant=m.variant,
        lowering=m.get("lowering", "auto"),
        projection_hidden=p.projection_hidden,
        projection_dim=p.projection_dim,
        running_var=m.get("bn_running_var", "biased"),
    )


def make_optimizer(pc: ConfigDict, steps_per_epoch: int) -> optax.GradientTransformation:
    """AdamW with a linear warm-up and a cosine decay to 1% over the whole schedule; decay on
    kernels only."""
    total = max(pc.epochs * steps_per_epoch, 1)
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, pc.learning_rate, min(pc.warmup_epochs * steps_per_epoch, total - 1), total, pc.learning_rate * 0.01
    )
    return optax.adamw(schedule, weight_decay=pc.weight_decay, mask=lambda t: jax.tree.map(lambda x: x.ndim >= 2, t))


def init_state(encoder, tx, seed: int, image_size: int, *, abstract: bool = False) -> PretrainState:
    """The initial state as one program, built as training's initialisation is
    (``run_init_program``): the optimiser's zeros built eagerly cost one XLA compile per
    parameter shape (~9 s of a tiny pretraining on CPU). ``abstract``: only its shapes and
    dtypes (what a checkpoint is restored into), nothing compiled or run."""
    x = jnp.zeros((2, image_size, image_size, 3), jnp.float32)

    def build(key):
        variables = encoder.init(key, x, train=False)
        params = variables["params"]
        return PretrainState(jnp.zeros((), jnp.int32), params, variables["batch_stats"], tx.init(params))

    if abstract:
        return jax.eval_shape(build, jax.random.key(seed))
    return run_init_program(build, jax.random.key(seed))


def _norm_table(norm: dict) -> tuple[jax.Array, jax.Array]:
    """[inputs, 3] means and stds, rows in ``names.IMAGE_INPUTS`` order."""
    mean = jnp.asarray([norm[m]["mean"] for m in names.IMAGE_INPUTS], jnp.float32)
    std = jnp.asarray([norm[m]["std"] for m in names.IMAGE_INPUTS], jnp.float32)
    return mean, std


def make_step(encoder, tx, config: ConfigDict, mesh=None):
    """``step(state, images, modality, idx_a, idx_b) -> (state, {loss, acc})``, jitted, state
    donated: views of images ``idx_a`` and ``idx_b`` (uint8 arrays held on the device(s)),
    normalised per input, through the encoder in training mode, NT-Xent loss."""
    pc = config.pretrain
    aug = pc.augment.to_dict()
    mean, std = _norm_table(config.data.norm.to_dict())
    seed = config.seed

    def step(state: PretrainState, images, modality, idx_a, idx_b):
        root = rng_streams.stream(seed, rng_streams.PRETRAIN_VIEWS)
        key_a, key_b = jax.random.split(jax.random.fold_in(root, state.step))

        def view(idx, key):
            x = views.views(images[idx].astype(jnp.float32) / 255.0, key, aug)
            m = modality[idx]
            return (x - mean[m][:, None, None, :]) / std[m][:, None, None, :]

        x = jnp.concatenate([view(idx_a, key_a), view(idx_b, key_b)])
        if mesh is not None:
            x = jax.lax.with_sharding_constraint(x, sharding.batch_sharding(mesh))

        def loss_fn(params):
            out, mutated = encoder.apply(
                {"params": params, "batch_stats": state.batch_stats}, x, train=True, mutable=["batch_stats"]
            )
            z = out["projection"]
            loss, acc = nt_xent(z[: idx_a.shape[0]], z[idx_a.shape[0] :], pc.temperature)
            return loss, (acc, mutated["batch_stats"])

        (loss, (acc, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        new = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats, opt_state=opt_state)
        return new, {"loss": loss, "acc": acc}

    if mesh is None:
        return compile_options.jit(step, donate_argnums=(0,))
    rep = sharding.replicated(mesh)
    return compile_options.jit(step, mesh=mesh, donate_argnums=(0,), in_shardings=rep, out_shardings=rep)


def epoch_order(seed: int, epoch: int, data: unlabeled.UnlabeledImages, positives: str, batch: int):
    """One epoch's batches of (first view, second view) image indices, a function of the seed
    and the epoch alone."""
    rng = np.random.default_rng([seed, epoch, 0x5EEC])
    order = rng.permutation(len(data))
    partner = unlabeled.partners(data.patient, rng) if positives == "patient" else np.arange(len(data))
    steps = len(data) // batch
    return [(order[i * batch : (i + 1) * batch], partner[order[i * batch : (i + 1) * batch]]) for i in range(steps)]


def features(encoder, variables, images: np.ndarray, modality: np.ndarray, norm: dict, batch: int = 128) -> np.ndarray:
    """The backbone's pooled features (inference mode) of uint8 images, normalised per input."""
    mean, std = _norm_table(norm)

    @compile_options.jit(kind=compile_options.INFERENCE)
    def run(imgs, mods):
        x = (imgs.astype(jnp.float32) / 255.0 - mean[mods][:, None, None, :]) / std[mods][:, None, None, :]
        return encoder.apply(variables, x, train=False)["pooled"]

    out = []
    for i in range(0, len(images), batch):
        part, mods = images[i : i + batch], modality[i : i + batch]
        pad = batch - len(part)  # one compiled shape
        part = np.concatenate([part, np.zeros((pad,) + part.shape[1:], part.dtype)])
        mods = np.concatenate([mods, np.zeros(pad, mods.dtype)])
        out.append(np.asarray(run(part, mods))[: batch - pad])
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def inputs_record(manifests: Sequence[Path | str], fold: int | None, include_test: bool) -> dict:
    """What a pretraining is made from, as its ``INPUTS_RECORD`` holds it."""
    return {"manifests": [str(Path(m).resolve()) for m in manifests], "fold": fold, "include_test": include_test}


def inputs_content(cohorts: Sequence, inputs: Sequence[str] = names.IMAGE_INPUTS) -> str:
    """SHA-256 of what the manifests hold: each one's bytes and every patient's pictures (the
    decoded pixels' digests, :attr:`Patient.pictures`). A resume refuses another (helper-96: a
    manifest edited in place between a kill and ``--resume`` moved patients trained on into the
    new split's test set, and an image edited was trained on in silence)."""
    h = hashlib.sha256()
    for c in cohorts:
        h.update(c.sha256.encode() + c.pictures_text(inputs).encode())
    return h.hexdigest()


def inputs_changes(workdir: Path, record: dict) -> list[str]:
    """``field: stored -> new`` for every input of ``record`` that differs from those recorded
    in ``workdir`` (all of them when nothing is recorded)."""
    path = workdir / INPUTS_RECORD
    stored = read_json(path) if path.is_file() else {}
    return [f"{k}: {stored.get(k)!r} -> {record[k]!r}" for k in record if stored.get(k) != record[k]]


def _check_inputs(workdir: Path, record: dict, resume: bool) -> None:
    if resume and (workdir / INPUTS_RECORD).is_file():
        if changed := inputs_changes(workdir, record):
            raise ValueError(f"cannot resume {workdir} with other inputs; changed: {', '.join(changed)}")
    elif (workdir / CHECKPOINTS).exists() or (workdir / BACKBONES).exists():
        if (workdir / INPUTS_RECORD).exists():
            raise FileExistsError(f"{workdir} already holds a pretraining run; pass --resume or use a new --workdir")
        raise ValueError(  # --resume would not check it: a new folder, whatever was asked
            f"{workdir} holds a pretraining run without its {INPUTS_RECORD}, so it cannot be checked against "
            "these inputs or continued; pretrain into a new --workdir"
        )


def pretrain(
    config: ConfigDict,
    manifests: Sequence[Path | str],
    workdir: Path | str,
    *,
    fold: int | None = None,
    include_test: bool = False,
    resume: bool = False,
    progress: bool = True,
) -> dict:
    """Pretrains the backbone(s) ``config`` describes on the images of ``manifests``; the first
    is the downstream cohort, whose test split (``data.split``, or fold ``fold`` of
    ``protocol.folds``) is left out unless ``include_test``. Writes the backbone(s), the history,
    and a report with the probes; returns the report."""
    from lnm_jax.data.cohorts.splits import make_splits  # noqa: PLC0415
    from lnm_jax.run_config import check_resumable, load_config, with_recorded_norm, with_training_norm  # noqa: PLC0415

    workdir = Path(workdir).resolve()
    refuse_export_folder(workdir, "--workdir")
    refuse_nested_run(workdir)
    # every field's range (pretrain.* among them), before anything is read or written: a
    # gamma <= 0 had failed as a NaN loss after the folder was made
    check_fields(config)
    pc = config.pretrain
    if pc.method != "simclr":
        raise ValueError(f"pretrain.method: only 'simclr' is implemented, got {pc.method!r}")
    if pc.positives not in ("image", "patient"):
        raise ValueError(f"pretrain.positives must be 'image' or 'patient', got {pc.positives!r}")
    if not manifests:
        raise ValueError("pretraining needs at least one --manifest")
    record = inputs_record(manifests, fold, include_test)
    _check_inputs(workdir, record, resume)
    stored = load_config(workdir) if resume and (workdir / CONFIG).is_file() else None
    if stored is not None:
        config = with_recorded_norm(config, stored)
        # (the fine-tune's augmentation is no field of a pretraining's: helper-97, a pretraining
        # stored before data.augment.clip, read as clipping, was refused a resume over it)
        check_resumable(stored, config, unread=UNREAD_FIELDS)
    framing = Framing.from_config(config.data)
    unlabeled_first = (
        f"{manifests[0]}: the first --manifest is the downstream cohort, whose labels (column '{names.LABEL}') say "
        "which test patients to leave out; add --include-test to pretrain on all of it, or put a labelled "
        "manifest first"
    )
    try:
        first = read_manifest(manifests[0], require_labels=not include_test, framing=framing)
    except ManifestError as e:
        if any(p.code == MISSING_COLUMN and p.column == names.LABEL for p in e.problems):
            raise ValueError(unlabeled_first) from e
        raise
    extra = [read_manifest(m, require_labels=False, framing=framing) for m in manifests[1:]]
    split = None
    if first.labels and all(y is not None for y in first.labels):
        folds = make_splits(config, first)
        if fold is not None and not 0 <= fold < len(folds):
            raise ValueError(f"--fold {fold}: protocol.folds={config.protocol.folds} gives folds 0-{len(folds) - 1}")
        split = folds[fold or 0]
    elif not include_test:
        raise ValueError(unlabeled_first)
    exclude = () if include_test or split is None else split.test
    record["content_sha256"] = inputs_content([first, *extra], image_inputs(config))  # (the images it reads)
    if resume and (workdir / INPUTS_RECORD).is_file():
        recorded = read_json(workdir / INPUTS_RECORD).get("content_sha256")
        if recorded is not None and recorded != record["content_sha256"]:
            raise ValueError(
                f"cannot resume {workdir}: the manifests' content changed since it started (a row, a label or an image "
                "edited): its split and the images it has trained on may no longer be these; pretrain into a new "
                "--workdir"
            )
    check_batches(config, [first, *extra], exclude)
    if config.data.norm_from == "train" and stored is None:
        if split is None:
            raise ValueError(
                "data.norm_from='train' takes the statistics of the downstream cohort's training split, and "
                f"{manifests[0]} has no labels to split it by: give data.norm instead (lnm-jax norm-stats)"
            )
        # the very statistics a run fine-tuned on this split computes (Run.create): one standardisation
        config = with_training_norm(config, first, split)
    data = unlabeled.collect(
        [first, *extra],
        image_size=config.data.image_size,
        exclude=exclude,
        modalities=image_inputs(config),
        framing=framing,
        progress=progress,
    )
    mesh = sharding.data_mesh() if jax.device_count() > 1 else None
    if mesh is not None:
        sharding.check_batch_size(pc.batch_size, mesh)
    # what this start makes, removed again if it diverges before any checkpoint (_discard_start)
    made = [workdir, *(workdir / n for n in (CONFIG, INPUTS_RECORD, HISTORY, CHECKPOINTS))]
    made = [p for p in made if not p.exists()]
    workdir.mkdir(parents=True, exist_ok=True)
    write_config(workdir / CONFIG, config)
    write_json(workdir / INPUTS_RECORD, record)
    try:
        return _pretrain_groups(config, data, first, split, exclude, record, workdir, mesh, resume, progress)
    except TrainingDivergedError as e:
        if (removed := _discard_start(workdir, made)) is not None:
            raise TrainingDivergedError(f"{e}; {removed}") from None
        raise
    except BaseException:  # whatever stops a first start before its first checkpoint, as train's
        if (removed := _discard_start(workdir, made)) is not None:  # (helper-97: Ctrl-C had left it)
            print(f"note: {removed}", file=sys.stderr)
        raise


def _discard_start(workdir: Path, made: list[Path]) -> str | None:
    """Removes what a first start made (``made``: the folder, its config, inputs record,
    history and checkpoint folders, where it made them) when no checkpoint was saved, as a
    training run's first start does (``Run.discard_start``): its config, the learning rate at
    fault, would otherwise hold the folder, a corrected start refused as another experiment.
    Returns what was removed, as a clause for the error's message (:func:`discard_made`), or None."""
    if any(STEP_NAME.match(p.name) for p in (workdir / CHECKPOINTS).glob("*/*")) or folder_gone(workdir):
        return None  # (a folder removed or replaced meanwhile may be another process's now: nothing removed)
    return discard_made(workdir, made)


def _pretrain_groups(config, data, first, split, exclude, record, workdir, mesh, resume, progress) -> dict:
    """Trains each backbone group, saves the backbones, probes them and writes the report
    (:func:`pretrain`'s work once its inputs are read and its folder is made)."""
    pc = config.pretrain

    encoder = build_encoder(config)
    report = {
        "method": pc.method,
        "positives": pc.positives,
        "backbone": {"arch": config.model.backbone, "width": config.model.width, "variant": config.model.variant},
        "image_size": config.data.image_size,
        "manifests": record["manifests"],
        "images": len(data),
        "excluded_test_patients": sorted(exclude),
        "excluded_images": len(data.excluded),
        "repeated_images_left_out": len(data.repeated),  # (another manifest's copies of kept images)
        "groups": {},
    }
    history = workdir / HISTORY
    variables = {}
    for group, inputs in groups(config).items():
        rows = np.flatnonzero(np.isin(data.modality, [names.IMAGE_INPUTS.index(m) for m in inputs]))
        part = unlabeled.UnlabeledImages(
            data.images[rows], data.modality[rows], data.patient[rows], tuple(data.refs[i] for i in rows), ()
        )
        state, t = _train_group(config, encoder, part, group, workdir, history, mesh, resume, progress)
        variables[group] = state
        meta = {
            "arch": config.model.backbone,
            "variant": config.model.variant,
            "width": config.model.width,
            "source": f"lnm-jax pretrain ({pc.method}, positives={pc.positives})",
            # the code and packages that made it (helper-117: a backbone recorded none; a pretraining
            # folder holds no run_info.json, which would make it a run folder to every command)
            "made_with": made_with(),
            "inputs": list(inputs),
            "images": len(part),
            "image_size": config.data.image_size,
            # what it saw, so that a run started from it can tell its test patients were kept out
            # (names.PRETRAINED_PICTURES; a run on another split had been told nothing)
            "test_split_kept_out": bool(exclude),
            names.PRETRAINED_PICTURES: sorted({r.pictures[0][0] for r in part.refs if r.pictures}),
        }
        from lnm_jax.weights.io import save_backbone  # noqa: PLC0415

        out = backbone_dir(workdir, group)
        if out.exists():  # a resumed run that had finished: rewritten from the same state
            shutil.rmtree(out)
        save_backbone(
            out,
            # a backbone without BatchNorm (VGG-11) has no statistics: helper-89's KeyError after the last epoch
            {"params": state.params[BACKBONE], "batch_stats": state.batch_stats.get(BACKBONE, {})},
            meta,
        )
        report["groups"][group] = {"images": len(part), "seconds": t, "backbone": str(out)}
    report["history"] = read_history(history)
    if pc.probe and split is not None:
        # the randomly initialised backbone each one started from (the same seed), the probes' baseline
        initial = {g: init_state(encoder, optax.identity(), config.seed, config.data.image_size) for g in variables}
        report["probe"] = probe_report(config, encoder, data, first, split, variables, initial)
    write_json(workdir / REPORT, report)
    return report


def _train_group(config, encoder, data, group, workdir, history, mesh, resume, progress):
    """Trains one backbone; returns (final state, seconds of this call)."""
    pc = config.pretrain
    steps = len(data) // pc.batch_size
    tx = make_optimizer(pc, steps)
    ckpts = RunCheckpoints(workdir / CHECKPOINTS, create=True, kinds=(group,))
    start = 1
    resuming = resume and ckpts.latest_epoch(group) is not None
    # a resume restores into the state's shapes: no initialisation is compiled or run for it
    state = init_state(encoder, tx, config.seed, config.data.image_size, abstract=resuming)
    if resuming:
        # pretrain has no --checkpoint: a damaged one is restored from a copy or trained again
        remedy = f"restore it from a copy, or pretrain again into a new --out (or delete {ckpts.directory(group)})"
        state, meta = ckpts.restore(group, state, remedy)
        start = meta["epoch"] + 1
    images, modality = jnp.asarray(data.images), jnp.asarray(data.modality)
    if mesh is not None:
        state, images, modality = sharding.replicate((state, images, modality), mesh)
    step = make_step(encoder, tx, config, mesh)
    lines = [r for r in read_history(history) if not (r["group"] == group and r["epoch"] >= start)]
    t0 = time.perf_counter()
    try:
        for epoch in range(start, pc.epochs + 1):
            te = time.perf_counter()
            losses, accs = [], []
            bar = tqdm(
                epoch_order(config.seed, epoch, data, pc.positives, pc.batch_size),
                desc=f"pretrain {group} {epoch}/{pc.epochs}",
                unit="batch",
                leave=False,
                mininterval=2.0,
                disable=not progress,
            )
            for idx_a, idx_b in bar:
                raise_if_stop_asked()  # a Ctrl-C whose KeyboardInterrupt was lost (fileio.STOP_ASKED)
                state, m = step(state, images, modality, jnp.asarray(idx_a), jnp.asarray(idx_b))
                losses.append(m["loss"])
                accs.append(m["acc"])
            loss = float(np.mean(jax.device_get(losses)))
            if not math.isfinite(loss):
                raise TrainingDivergedError(
                    f"pretraining diverged: the loss is {loss} in epoch {epoch} of the '{group}' backbone "
                    "(lower pretrain.learning_rate)"
                )
            lines.append(
                {
                    "group": group,
                    "epoch": epoch,
                    "loss": loss,
                    "pair_accuracy": float(np.mean(jax.device_get(accs))),
                    "epoch_time_s": time.perf_counter() - te,
                }
            )
            check_held(history.parent)  # (a folder removed or replaced meanwhile: stop, write nothing more)
            write_text(history, history_text(lines))
            if progress:
                acc, secs = lines[-1]["pair_accuracy"], lines[-1]["epoch_time_s"]
                print(f"pretrain {group} epoch {epoch:3d}  loss {loss:.4f}  pair accuracy {acc:.3f}  {secs:.1f}s")
            if epoch % pc.checkpoint_every_epochs == 0 or epoch == pc.epochs:
                ckpts.save(group, epoch, state, {"epoch": epoch})
    finally:
        ckpts.wait()
        ckpts.close()
    return jax.device_get(state), time.perf_counter() - t0


def probe_report(config, encoder, data, cohort, split, trained: dict, initial: dict) -> dict:
    """Linear and k-NN probes per image input (the downstream training and validation
    patients' images, cross-validated): pretrained vs randomly initialised backbone. An input
    with fewer than ``PROBE_FOLDS`` labelled images of either class (none at all: a cohort of
    B-mode alone, such as DDTI) is left out of the report."""
    from lnm_jax.data.cohorts.splits import near_copy_groups  # noqa: PLC0415

    labels = {p.patient_id: p.lnm for p in cohort.patients if p.lnm is not None}
    labelled = (set(split.train) | set(split.val)) & set(labels)
    group_of = {pid: group[0] for group in near_copy_groups(cohort) for pid in group}
    norm = config.data.norm.to_dict()
    out = {}
    for group, inputs in groups(config).items():
        for m in inputs:
            rows = [
                i for i, r in enumerate(data.refs) if r.source == 0 and r.modality == m and r.patient_id in labelled
            ]
            y = np.array([labels[data.refs[i].patient_id] for i in rows], dtype=np.int64)
            if np.bincount(y, minlength=2).min() < PROBE_FOLDS:
                continue
            out[m] = {"images": len(rows)}
            for name, st in (("pretrained", trained[group]), ("random_init", initial[group])):
                variables = {"params": st.params, "batch_stats": st.batch_stats}
                x = features(encoder, variables, data.images[rows], data.modality[rows], norm)
                owners = [group_of.get(data.refs[i].patient_id, data.refs[i].patient_id) for i in rows]
                out[m][name] = probe(x, y, seed=config.seed, groups=owners)
    return out


def probe_lines(report: dict) -> str:
    """The probe table ``lnm-jax pretrain`` prints."""
    lines = [
        f"pretrained {report['method']} on {report['images']} images; test split kept out: "
        f"{len(report['excluded_test_patients'])} patients ({report['excluded_images']} images)"
    ]
    for m, r in report.get("probe", {}).items():
        lines.append(
            f"probe {m:5s} ({r['images']} train+validation images, {PROBE_FOLDS}-fold): linear AUC "
            f"{r['pretrained']['linear_auc']:.3f} vs {r['random_init']['linear_auc']:.3f} random init; "
            f"k-NN AUC {r['pretrained']['knn_auc']:.3f} vs {r['random_init']['knn_auc']:.3f}"
        )
    return "\n".join(lines)
