"""Jitted train and eval steps (pure functions of state and batch; TensorFlow-free).

Batches are dicts of arrays (see ``lnm_jax.data.loaders.pipeline``); only the model's inputs, the
label and the ``valid`` mask enter the step. The loss is BCE on logits (positives weighted by
``train.pos_weight``), averaged over valid rows.
"""

from __future__ import annotations

import collections
import functools
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from lnm_jax import compile_options, names, rng_streams
from lnm_jax.memo import cache_where_hashable
from lnm_jax.models.fusion import DROPOUT_RNG, is_backbone
from lnm_jax.names import INPUT_LOGIT
from lnm_jax.training.sharding import batch_sharding, replicated, shard_batch, to_host
from lnm_jax.training.state import TrainState, scale_updates


def step_inputs(batch: dict) -> dict:
    """The numeric part of a batch that a step consumes (drops patient ids); moves nothing."""
    return {k: batch[k] for k in names.STEP_KEYS if k in batch}


def _check_rows(where: str, **arrays) -> None:
    """ValueError unless every array is [B] with one B (shapes are static: checked at trace time)."""
    shapes = {k: tuple(jnp.shape(v)) for k, v in arrays.items()}
    for k, shape in shapes.items():
        if len(shape) != 1:
            raise ValueError(f"{where}: {k} must have shape [B], got {list(shape)}")
    if len(set(shapes.values())) > 1:
        raise ValueError(f"{where}: every argument needs one batch size B, got shapes {shapes}")


def bce_loss(logits: jax.Array, labels: jax.Array, weights: jax.Array, pos_weight: float = 1.0) -> jax.Array:
    """Mean BCE of [B] logits over the rows with ``weights`` 1, a positive's term multiplied by
    ``pos_weight`` (as PyTorch's ``BCEWithLogitsLoss(pos_weight=...)``: the mean is over rows,
    not over the class weights, so ``pos_weight`` 1 is the plain BCE).

    ``logits`` [B] float, ``labels`` [B] 0/1 (any numeric dtype), ``weights`` [B] (0/1: the rows
    counted); returns a scalar of the inputs' float type (float32 from float32 logits).
    ValueError naming the argument when a shape is not [B]
    (checked when traced: a [B, 1] operand would broadcast to [B, B] and give a wrong loss), and,
    when ``labels`` are concrete (called outside ``jax.jit``), when a label is not 0 or 1; under
    ``jit`` the values cannot be checked: labels other than 0/1 give a meaningless loss."""
    _check_rows("bce_loss", logits=logits, labels=labels, weights=weights)
    if not isinstance(labels, jax.core.Tracer):
        values = np.unique(np.asarray(labels))
        if not np.isin(values, (0, 1)).all():
            raise ValueError(f"bce_loss: labels must be 0 or 1, got the values {values.tolist()}")
    labels = labels.astype(jnp.float32)
    losses = optax.sigmoid_binary_cross_entropy(logits.astype(jnp.float32), labels)
    if pos_weight != 1.0:
        losses = losses * (1.0 + (pos_weight - 1.0) * labels)
    return jnp.sum(losses * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def resolve_pos_weight(setting, train_labels) -> float:
    """``train.pos_weight`` as a number: itself, or for ``'balanced'`` the training split's
    negatives / positives (King & Zeng's prior correction; scikit-learn's 'balanced' up to a
    common factor), so that both classes weigh the same in the loss. ValueError when
    'balanced' meets a training split without both classes."""
    if setting != "balanced":
        return float(setting)
    y = np.asarray([int(v) for v in train_labels])
    pos, neg = int(y.sum()), int(len(y) - y.sum())
    if not pos or not neg:
        raise ValueError(
            f"train.pos_weight='balanced' needs both classes in the training split ({pos} positive, {neg} negative)"
        )
    return neg / pos


def step_options(config, train_labels) -> dict:
    """:func:`make_train_step`'s keyword arguments as ``config`` sets them: ``seed``, the loss
    weights (``train.aux_loss_weight``, ``train.lesion_loss_weight``, ``train.pos_weight`` resolved
    by :func:`resolve_pos_weight` on ``train_labels``, the training split's 0/1 labels) and the
    head group's plateau floor (``train.plateau.head_min_scale``): the one place a run's loop and
    a user's own step take them (a step built from the optimiser alone trained a small-cohort
    config's AdamW without its per-input heads' loss or head floor, in silence)."""
    t = config.train
    return dict(
        seed=config.seed,
        aux_loss_weight=t.get("aux_loss_weight", 0.0),
        lesion_loss_weight=t.get("lesion_loss_weight", 0.0),
        pos_weight=resolve_pos_weight(t.get("pos_weight", 1.0), train_labels),
        head_min_scale=t.plateau.get("head_min_scale", 0.0),
    )


def input_losses(out: dict, labels: jax.Array, weights: jax.Array, pos_weight: float = 1.0) -> jax.Array:
    """The mean of the per-input heads' BCE losses, each over the rows that hold that input."""
    losses = [
        bce_loss(z, labels, weights * out["available"][m].astype(jnp.float32), pos_weight)
        for m, z in out["input_logits"].items()
    ]
    return sum(losses) / len(losses)


LESION_DICE_SMOOTH = 1.0  # the soft Dice's additive smoothing (V-Net's form), in mask pixels


def cell_shares(masks: jax.Array, h: int, w: int) -> jax.Array:
    """[B, S, S] masks in [0, 1] -> [B, h, w]: the mean of the pixels each cell of an h x w map
    covers (exact where h and w divide S: a ResNet's stages at S a multiple of 32), else
    antialiased linear resampling."""
    b, sh, sw = masks.shape
    if sh % h == 0 and sw % w == 0:
        return masks.reshape(b, h, sh // h, w, sw // w).mean(axis=(2, 4))
    return jax.image.resize(masks, (b, h, w), "linear", antialias=True)


def lesion_loss(lesion_logits: dict, batch: dict, weights: jax.Array) -> jax.Array:
    """The lesion head's loss: per image input, per row, BCE (mean over the map's cells) +
    soft Dice 1 - (2 sum(p t) + 1) / (sum p + sum t + 1) (Milletari et al., V-Net, 2016), p the
    sigmoid of the [B, h, w] logits (clips [B, T, h, w]: every frame against the clip's mask)
    and t the batch's [B, S, S] mask ``<input>_mask`` as each map cell's share of lesion
    (:func:`cell_shares`); averaged over the rows with ``weights`` 1 and ``has_<input>_mask``
    (0 when none has one), then over the inputs."""
    terms = []
    for m, z in lesion_logits.items():
        target = cell_shares(batch[names.mask(m)].astype(jnp.float32), *z.shape[-2:])
        if z.ndim == 4:  # a clip: the mask of every frame
            target = jnp.broadcast_to(target[:, None], z.shape)
        z = z.astype(jnp.float32)
        cells = tuple(range(1, z.ndim))
        bce = optax.sigmoid_binary_cross_entropy(z, target).mean(axis=cells)
        p = jax.nn.sigmoid(z)
        dice = 1.0 - (2.0 * jnp.sum(p * target, axis=cells) + LESION_DICE_SMOOTH) / (
            jnp.sum(p, axis=cells) + jnp.sum(target, axis=cells) + LESION_DICE_SMOOTH
        )
        has_mask = batch[names.has(names.mask(m))]
        _check_rows("lesion_loss", weights=weights, **{names.has(names.mask(m)): has_mask})
        if target.shape[0] != weights.shape[0]:
            raise ValueError(f"lesion_loss: {names.mask(m)} must have shape [B, S, S], got {list(target.shape)}")
        rows = weights * has_mask.astype(jnp.float32)
        terms.append(jnp.sum((bce + dice) * rows) / jnp.maximum(jnp.sum(rows), 1.0))
    return sum(terms) / len(terms)


def make_train_step(
    model: nn.Module,
    tx: optax.GradientTransformation,
    mesh: Mesh | None = None,
    seed: int = 0,
    *,
    aux_loss_weight: float = 0.0,
    lesion_loss_weight: float = 0.0,
    pos_weight: float = 1.0,
    head_min_scale: float = 0.0,
    frozen_backbones: bool = False,
) -> Callable:
    """Returns ``train_step(state, batch) -> (state, metrics)``, jitted, state donated.

    The loss: BCE of the fused logit, plus ``aux_loss_weight`` x the mean BCE of the per-input
    heads (``model.input_heads`` / late fusion), plus ``lesion_loss_weight`` x the lesion
    head's :func:`lesion_loss` (reported as ``lesion_loss``); a positive patient's terms weigh ``pos_weight``
    (:func:`resolve_pos_weight`). ``frozen_backbones``: the image branches run
    frozen (inference mode, no gradient); their parameters' updates are then zero.
    ``head_min_scale``: the floor of the plateau scale for the head group
    (:func:`lnm_jax.training.state.scale_updates`).

    With a ``mesh`` the batch is sharded over its ``data`` axis and the state replicated;
    the arithmetic is that of the global batch (BatchNorm statistics included). The model's
    training randomness (modality dropout) uses ``fold_in(stream(seed, MODALITY_DROPOUT), step)``
    (:mod:`lnm_jax.rng_streams`: a stream of its own): a function of
    the seed and the step alone, so a resumed run draws what the uninterrupted one would.

    The batch: the model's inputs (ValueError from ``model.check_inputs`` when one has the wrong
    shape or dtype), ``lnm`` [B] 0/1 and ``valid`` [B] bool (ValueError naming the one missing or
    not [B], when the step is traced). Label values are not checked inside ``jit``: the loaders
    give 0/1; others give a meaningless loss.

    One program object per model, optimiser, mesh, seed and loss settings in a process (Flax
    modules compare and hash by their fields; :func:`lnm_jax.training.state.optimizers` gives
    one optimiser per setting): a second run of one configuration (the protocol's, a notebook's,
    a test's) steps the program the first traced and compiled.
    """
    settings = (aux_loss_weight, lesion_loss_weight, pos_weight, head_min_scale, frozen_backbones)
    return _train_step(model, tx, mesh, seed, *settings, compile_options.options_key(compile_options.STEP, mesh))


@cache_where_hashable(maxsize=8)  # (a module with an unhashable field: built for its call alone)
def _train_step(
    model: nn.Module,
    tx: optax.GradientTransformation,
    mesh: Mesh | None,
    seed: int,
    aux_loss_weight: float,
    lesion_loss_weight: float,
    pos_weight: float,
    head_min_scale: float,
    frozen_backbones: bool,
    _options: tuple,
) -> Callable:
    """:func:`make_train_step`'s program (``_options``: :func:`lnm_jax.compile_options.options_key`,
    the part of the key the kinds' options are)."""

    def train_step(state: TrainState, batch: dict):
        for key in (names.LABEL, names.VALID):
            if key not in batch:
                raise ValueError(f"train_step: the batch has no '{key}' ([B]; docs/python.md (b)), got {sorted(batch)}")
        weights = batch[names.VALID].astype(jnp.float32)
        rngs = {DROPOUT_RNG: jax.random.fold_in(rng_streams.stream(seed, rng_streams.MODALITY_DROPOUT), state.step)}

        def loss_fn(params):
            out, mutated = model.apply(
                {"params": params, "batch_stats": state.batch_stats},
                batch,
                train=True,
                frozen_backbones=frozen_backbones,
                mutable=["batch_stats"],
                rngs=rngs,
            )
            loss = bce_loss(out["logit"], batch[names.LABEL], weights, pos_weight)
            if aux_loss_weight:
                loss = loss + aux_loss_weight * input_losses(out, batch[names.LABEL], weights, pos_weight)
            lesion = lesion_loss(out["lesion_logits"], batch, weights) if lesion_loss_weight else None
            if lesion is not None:
                loss = loss + lesion_loss_weight * lesion
            return loss, (out["logit"], mutated["batch_stats"], lesion)

        (loss, (logits, batch_stats, lesion)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        updates = scale_updates(updates, state.plateau.scale, head_min_scale)
        if frozen_backbones:  # AdamW's decay and Adam's momentum would still move them
            updates = {k: jax.tree.map(jnp.zeros_like, v) if is_backbone(k) else v for k, v in updates.items()}
        params = optax.apply_updates(state.params, updates)
        new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats, opt_state=opt_state)
        metrics = {"loss": loss, "logits": logits.astype(jnp.float32)}
        if lesion is not None:
            metrics["lesion_loss"] = lesion
        return new_state, metrics

    if mesh is None:
        return compile_options.jit(train_step, donate_argnums=(0,))
    rep, data = replicated(mesh), batch_sharding(mesh)
    return compile_options.jit(
        train_step,
        mesh=mesh,
        donate_argnums=(0,),
        in_shardings=(rep, data),
        out_shardings=(rep, {"loss": rep, "logits": data}),
    )


def make_eval_step(model: nn.Module, mesh: Mesh | None = None) -> Callable:
    """Returns ``eval_step(params, batch_stats, batch) -> {'logit': [B], INPUT_LOGIT+input: [B]
    for each per-input head}`` (BatchNorm in inference). One program object per model and mesh in
    a process, as :func:`make_train_step`'s: a run's best and latest checkpoints (two
    predictors), and every run of one model, share its traces and compiles."""
    return _eval_step(model, mesh, compile_options.options_key(compile_options.INFERENCE, mesh))


@cache_where_hashable(maxsize=8)
def _eval_step(model: nn.Module, mesh: Mesh | None, _options: tuple) -> Callable:
    def eval_step(params, batch_stats, batch: dict):
        out = model.apply({"params": params, "batch_stats": batch_stats}, batch, train=False)
        logits = {f"{INPUT_LOGIT}{m}": z for m, z in out.get("input_logits", {}).items()}
        return jax.tree.map(lambda z: z.astype(jnp.float32), {"logit": out["logit"], **logits})

    if mesh is None:
        return compile_options.jit(eval_step, kind=compile_options.INFERENCE)
    rep, data = replicated(mesh), batch_sharding(mesh)
    return compile_options.jit(
        eval_step, mesh=mesh, kind=compile_options.INFERENCE, in_shardings=(rep, rep, data), out_shardings=data
    )


# batches predict() has dispatched and not yet read back: the device runs them back to back
# while the host prepares the next (reading each at once waited for it: a pipeline stall per batch)
PREDICT_IN_FLIGHT = 2


def predict(eval_step: Callable, params, batch_stats, batches, mesh: Mesh | None = None) -> dict[str, np.ndarray]:
    """Runs ``eval_step`` over ``batches``: numpy batches, or ``(numpy batch, its step inputs
    already on the device(s))`` pairs (``RunData.validation_batches``); returns the valid rows'
    patient ids, labels and logits (and each per-input head's, ``INPUT_LOGIT + input``), in
    batch order. Up to :data:`PREDICT_IN_FLIGHT` batches' outputs are read back after later
    batches are dispatched."""
    ids, labels, logits = [], [], {"logit": []}
    in_flight: collections.deque = collections.deque()

    def read(out, batch) -> None:
        valid = np.asarray(batch[names.VALID])
        for k, z in out.items():
            logits.setdefault(k, []).append(to_host(z)[valid])
        labels.append(np.asarray(batch[names.LABEL])[valid])
        ids.append(np.asarray(batch[names.PATIENT_ID])[valid])

    for item in batches:
        batch, inputs = item if isinstance(item, tuple) else (item, None)
        if inputs is None:
            inputs = step_inputs(batch) if mesh is None else shard_batch(step_inputs(batch), mesh)
        in_flight.append((eval_step(params, batch_stats, inputs), batch))
        if len(in_flight) > PREDICT_IN_FLIGHT:
            read(*in_flight.popleft())
    while in_flight:
        read(*in_flight.popleft())
    cat = lambda xs, dt: np.concatenate(xs) if xs else np.zeros((0,), dt)  # noqa: E731
    return {
        names.PATIENT_ID: np.array(
            [i.decode() if isinstance(i, bytes) else str(i) for i in cat(ids, object)], dtype=object
        ),
        names.LABEL: cat(labels, np.int32),
        **{k: cat(v, np.float32) for k, v in logits.items()},
    }


def inference_variables(model: nn.Module, state: TrainState, fold_bn: bool = True):
    """The model and variables to predict with: BatchNorm folded into the convs when the
    backbone allows it and ``fold_bn`` is on (the same function, fewer passes)."""
    from lnm_jax.models.backbones import bn_epsilon, can_fold_bn  # noqa: PLC0415

    if not (fold_bn and can_fold_bn(model.backbone)):
        return model, state.params, state.batch_stats
    params = _fold_program(bn_epsilon(model.backbone, model.variant))(state.params, state.batch_stats)
    return model.clone(fold_bn=True), params, {}


@functools.cache
def _fold_program(epsilon: float) -> Callable:
    """:func:`~lnm_jax.models.folding.fold_batchnorm` as one program, built once per model
    structure in a process (run eagerly, each of its operations was compiled on its own for
    every new shape: ~40 programs, ~3 s on 2 cores for the tests' ResNet-10 pair, before every
    first prediction of a process); with the initialisation's options (it runs once)."""
    from lnm_jax.models.folding import fold_batchnorm  # noqa: PLC0415

    return compile_options.jit(functools.partial(fold_batchnorm, epsilon=epsilon), kind=compile_options.INIT)
