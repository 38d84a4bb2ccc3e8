"""Train state as explicit pytrees, and the optimiser.

The state holds params, BatchNorm ``batch_stats``, Adam's state and the plateau scheduler's
state; the model and the optax transforms are static and live outside it, so the state can
be donated to a jitted step and saved/restored by orbax as one pytree.

Adam (paper: lr 1e-3) updates every step; ``optax.contrib.reduce_on_plateau`` is fed the
epoch's *validation* loss once per epoch (:func:`plateau_step`), and its ``scale`` multiplies
the Adam updates inside the train step.  (Chaining it into the per-step transform would feed
it per-step training losses instead.)
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax

from lnm_jax import compile_options
from lnm_jax.memo import cache_where_hashable
from lnm_jax.models.fusion import is_backbone
from lnm_jax.training import sharding


@flax.struct.dataclass
class TrainState:
    """Everything a train step reads and returns, as one pytree (donated to the jitted step):
    ``step`` int32 [], ``params`` and ``batch_stats`` (Flax variable collections),
    ``opt_state`` (the optax optimiser's), ``plateau`` (the plateau scheduler's, whose
    ``scale`` multiplies the updates)."""

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    plateau: Any  # optax.contrib.ReduceLROnPlateauState


def param_groups(params) -> dict:
    """'backbone' for the image branches' parameters, 'head' for the rest (heads, absent
    embeddings, temporal pooling): the groups of per-group learning rates and of the plateau
    floor."""
    return {k: jax.tree.map(functools.partial(_label, _group(k)), v) for k, v in params.items()}


def _label(group: str, _leaf) -> str:
    return group


def _group(top_level_name: str) -> str:
    return "backbone" if is_backbone(top_level_name) else "head"


def _decay_mask(params):
    """Weight decay on kernels only (not biases, BatchNorm scales or absent embeddings)."""
    return jax.tree.map(lambda p: jnp.ndim(p) >= 2, params)


# the fields of config.train that make_optimizer reads (its defaults for those a config lacks)
OPTIMIZER_FIELDS = ("learning_rate", "backbone_lr_scale", "weight_decay")


def make_optimizer(train_cfg) -> optax.GradientTransformation:
    """Adam at ``train_cfg.learning_rate`` (``config.train``; the paper: 1e-3, one group). With
    ``backbone_lr_scale`` != 1 or ``weight_decay`` > 0: AdamW per parameter group
    (``optax.multi_transform``), the image branches at ``learning_rate * backbone_lr_scale``, the
    decay on kernels only."""
    lr = train_cfg["learning_rate"]
    scale, decay = train_cfg.get("backbone_lr_scale", 1.0), train_cfg.get("weight_decay", 0.0)
    if scale == 1.0 and not decay:
        return optax.adam(lr)  # the paper's optimiser; its state as runs stored before the groups
    group = lambda rate: optax.adamw(rate, weight_decay=decay, mask=_decay_mask)  # noqa: E731
    return optax.multi_transform({"backbone": group(lr * scale), "head": group(lr)}, param_groups)


def make_plateau(cfg) -> optax.GradientTransformationExtraArgs:
    """``cfg``: factor, patience, rtol, cooldown, min_scale (a ConfigDict or mapping)."""
    return optax.contrib.reduce_on_plateau(
        factor=cfg["factor"],
        patience=cfg["patience"],
        rtol=cfg["rtol"],
        atol=0.0,
        cooldown=cfg["cooldown"],
        accumulation_size=1,
        min_scale=cfg["min_scale"],
    )


def optimizers(train_cfg) -> tuple[optax.GradientTransformation, optax.GradientTransformationExtraArgs]:
    """(Adam, plateau scheduler) as ``config.train`` sets them: the one place a run, a test or a
    benchmark gets its optimiser from. One pair per setting in a process (keyed by the values
    read, not the ConfigDict): runs of one configuration get the same objects, so their train
    steps and initialisations are one program each (:func:`train_state_program`,
    :func:`lnm_jax.training.steps.make_train_step`)."""
    settings = tuple((k, train_cfg[k]) for k in OPTIMIZER_FIELDS if k in train_cfg)
    return _optimizers(settings, tuple(sorted(train_cfg["plateau"].items())))


@cache_where_hashable(maxsize=16)
def _optimizers(settings: tuple, plateau: tuple) -> tuple:
    return make_optimizer(dict(settings)), make_plateau(dict(plateau))


def run_init_program(fn, *args):
    """``fn(*args)`` as one program compiled with :data:`lnm_jax.compile_options.INIT` (no LLVM
    optimisation on CPU: it runs once; the values differ from an optimised build by rounding
    only, relative 3e-7): how every initialisation (a run's, a pretraining's) is built."""
    return compile_options.jit(fn, kind=compile_options.INIT)(*args)


# Collections of ``model.init`` that are not the model's state: flax's ``perturb`` hooks
# (Grad-CAM's), zeros shaped to the init batch. Kept, they would tie the variables to that batch
# size (applied to another, they broadcast into wrong-shaped logits or fail); flax's ``perturb``
# is the identity when the collection is absent, and Grad-CAM builds its own for each batch.
BATCH_SHAPED_COLLECTIONS = ("perturbations",)


def model_variables(variables) -> dict:
    """``variables`` without the batch-shaped collections (:data:`BATCH_SHAPED_COLLECTIONS`): what
    a model's state is, independent of any batch size."""
    return {k: v for k, v in variables.items() if k not in BATCH_SHAPED_COLLECTIONS}


def init_variables(model: nn.Module, rng: jax.Array, sample_inputs: dict) -> dict:
    """``model.init`` (inference mode) as one initialisation program: ``{'params', 'batch_stats'}``
    (``batch_stats`` only for models with BatchNorm), independent of the batch size of
    ``sample_inputs`` (only its shapes matter; Grad-CAM's ``perturbations`` are dropped:
    :func:`model_variables`), so they apply to a batch of any size."""
    return run_init_program(lambda r, x: model_variables(model.init(r, x, train=False)), rng, sample_inputs)


def create_train_state(
    model: nn.Module,
    rng: jax.Array,
    sample_inputs: dict,
    tx: optax.GradientTransformation,
    plateau: optax.GradientTransformationExtraArgs,
    *,
    abstract: bool = False,
) -> TrainState:
    """The initial train state, built as one initialisation program (:func:`train_state_program`):
    the optimiser's and the plateau's zeros built eagerly cost one XLA compile per parameter
    shape (the tests' triple ResNet-10 in a fresh process: 3.8-4.1 s -> 2.8-3.2 s, three
    alternated runs; the same state, bitwise). ``abstract``: only its
    shapes and dtypes (what a checkpoint is restored into), traced without compiling or running
    the initialisation."""
    program = train_state_program(model, tx, plateau)
    return program.eval_shape(rng, sample_inputs) if abstract else program(rng, sample_inputs)


def train_state_program(model: nn.Module, tx: optax.GradientTransformation, plateau) -> Callable:
    """``program(rng, sample_inputs)``: the initial :class:`TrainState` as one initialisation
    program (:data:`lnm_jax.compile_options.INIT`, as :func:`run_init_program` builds one);
    ``program.eval_shape(rng, sample_inputs)``: its shapes and dtypes, nothing compiled or run.
    JAX keeps the trace on the program object, so one program traces ``model.init`` once for
    both and for every later call with inputs of the same shapes: a run that sizes its
    checkpoints before it initialises (``Run.create``), or restores several of them, had traced
    it each time (0.1-0.3 s each at the tests' sizes, 260 traces in one run of the suite). One
    program per model, optimiser and scheduler in a process: runs of one configuration share it."""
    return _train_state_program(model, tx, plateau, compile_options.options_key(compile_options.INIT))


@cache_where_hashable(maxsize=8)
def _train_state_program(model: nn.Module, tx: optax.GradientTransformation, plateau, _options: tuple) -> Callable:
    def build(r, x):
        return train_state_from(model.init(r, x, train=False), tx, plateau)

    return compile_options.jit(build, kind=compile_options.INIT)


def train_state_from(variables: dict, tx: optax.GradientTransformation, plateau) -> TrainState:
    """A step-0 :class:`TrainState` from a model's ``variables`` (``params``, and ``batch_stats``
    where it has BatchNorm), the optimiser ``tx`` and the plateau scheduler, both initialised on
    the parameters."""
    params = variables["params"]
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        batch_stats=variables.get("batch_stats", {}),
        opt_state=tx.init(params),
        plateau=plateau.init(params),
    )


def plateau_step(plateau: optax.GradientTransformationExtraArgs, state: TrainState, val_loss: float) -> TrainState:
    """Feeds one epoch's validation loss to the plateau scheduler."""
    return state.replace(plateau=_plateau_update(plateau, state.plateau, jnp.asarray(val_loss, jnp.float32)))


@functools.partial(jax.jit, static_argnums=0)
def _plateau_update(plateau, plateau_state, value):
    """One program per scheduler: run eagerly, its ``lax.cond`` was compiled anew every epoch
    (~0.2 s each on this CPU, 30 of them in two 15-epoch test runs)."""
    return plateau.update(updates={}, state=plateau_state, value=value)[1]


def learning_rate(base_lr: float, state: TrainState) -> float:
    """The learning rate the next step uses: ``base_lr`` times the plateau scheduler's scale."""
    return float(base_lr * state.plateau.scale)


def scale_updates(updates, scale: jax.Array, head_min_scale: float = 0.0):
    """The plateau scheduler's ``scale`` applied to a step's updates; the head group's never
    below ``head_min_scale``, so that a schedule cut for the backbones cannot starve the few
    fusion weights (a strong flag needs a log-odds weight of several units)."""
    factor = {"backbone": scale, "head": jnp.maximum(scale, head_min_scale)}
    return {k: jax.tree.map(functools.partial(jnp.multiply, factor[_group(k)]), v) for k, v in updates.items()}


def with_pretrained_backbones(
    state: TrainState, tx: optax.GradientTransformation, backbone: dict, branches: tuple[str, ...]
) -> TrainState:
    """Replaces each image branch's params and batch_stats with ``backbone``'s (e.g. ImageNet
    weights from ``lnm-jax convert-weights``), keeps the fresh head, restarts the optimiser."""
    params = dict(state.params)
    stats = dict(state.batch_stats)
    for b in branches:
        key = f"{b}_backbone"
        for coll, tree, src in (
            ("params", params, backbone["params"]),
            ("batch_stats", stats, backbone.get("batch_stats", {})),
        ):
            if key not in tree and not jax.tree.leaves(src):  # no BatchNorm in either (VGG-11): nothing to place
                continue
            want = jax.tree.map(jnp.shape, tree.get(key, {}))
            got = jax.tree.map(jnp.shape, src)
            if want != got:
                raise ValueError(
                    f"pretrained backbone's {coll} do not fit branch '{key}' (different architecture, width or variant)"
                )
            # placed as the fresh branch is (the restored backbone's arrays may be committed):
            # the first train step is then the program every later step runs
            tree[key] = sharding.placed_as(jax.device_get(src), tree[key])
    return state.replace(params=params, batch_stats=stats, opt_state=tx.init(params))
