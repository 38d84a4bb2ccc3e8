"""XLA compile options by backend (lnm_jax/compile_options.py): the levels, the user's flag
winning, and every program of the project built with its kind's options."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from support import BACKBONE

from lnm_jax import compile_options, memo
from lnm_jax.compile_options import (
    INFERENCE,
    INIT,
    LEVEL,
    STEP,
    YNN_FUSIONS,
    YNN_REDUCTIONS,
    compiler_options,
    known,
)
from lnm_jax.models.fusion import FusionClassifier

BOGUS = "xla_lnm_jax_no_such_option"  # XLA refuses an unknown option by name, at compile time


def test_levels_by_backend_and_the_users_flag_wins(monkeypatch):
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    # the YNNPACK option only where this jaxlib knows it (0.10.2 does)
    ynn = {YNN_FUSIONS: ""} if known(YNN_FUSIONS, "", "cpu") else {}
    reductions = {YNN_FUSIONS: YNN_REDUCTIONS} if known(YNN_FUSIONS, YNN_REDUCTIONS, "cpu") else {}
    assert compiler_options(STEP, "cpu") == {LEVEL: 1, **reductions}
    assert compiler_options(INFERENCE, "cpu") == {LEVEL: 1, **ynn}
    assert compiler_options(INIT, "cpu") == {LEVEL: 0}
    assert compiler_options(STEP, "gpu") is None and compiler_options(INIT, "tpu") is None
    assert compiler_options(INFERENCE, "gpu") is None
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_max_isa=AVX2 --xla_backend_optimization_level_x=2")
    assert compiler_options(STEP, "cpu") == {LEVEL: 1, **reductions}  # another flag, whose name only starts alike
    monkeypatch.setenv("XLA_FLAGS", f"--xla_cpu_max_isa=AVX2 --{LEVEL}=3 --{YNN_FUSIONS}=")
    assert compiler_options(STEP, "cpu") is None and compiler_options(INIT, "cpu") is None
    assert compiler_options(INFERENCE, "cpu") is None


def test_an_option_this_xla_does_not_know_is_told_apart():
    assert known(LEVEL, 1, "cpu") and not known(BOGUS, 1, "cpu")


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the options are XLA:CPU's")
def test_the_train_step_gives_ynnpack_its_reductions_only_and_inference_nothing(monkeypatch):
    """A convolution + BatchNorm + ReLU, differentiated, as the train step is built: YNNPACK
    fusions for the reductions (BatchNorm's statistics and gradient sums), none holding a
    convolution or a dot (Eigen's); the forward pass as inference is built: no YNNPACK fusion."""
    if not known(YNN_FUSIONS, YNN_REDUCTIONS, "cpu"):
        pytest.skip("this jaxlib has no YNNPACK fusion option")
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    x, w = jnp.ones((4, 12, 12, 8)), jnp.ones((3, 3, 8, 16)) / 9

    def forward(x, w):
        y = jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
        mean, var = y.mean((0, 1, 2)), y.var((0, 1, 2))
        return jnp.sum(jax.nn.relu((y - mean) * jax.lax.rsqrt(var + 1e-5)) @ jnp.ones((16, 16)))

    def ynn_ops(fn, kind):
        """The HLO ops inside the program's YNNPACK fusions (each calls a fused computation)."""
        text = compile_options.jit(fn, kind=kind).lower(x, w).compile().as_text()
        computations = {b.split()[0]: b for b in text.split("\n\n") if b.startswith("%")}
        called = [ln.split("calls=")[1].split(",")[0] for ln in text.splitlines() if "__ynn_fusion" in ln]
        return {op for c in called for op in ("convolution", "dot", "reduce") if f" {op}(" in computations[c]}

    assert ynn_ops(jax.grad(forward, (0, 1)), STEP) == {"reduce"}
    assert ynn_ops(forward, INFERENCE) == set()


def _model_and_batch():
    model = FusionClassifier(("bmode", "us_lnm"), backbone=BACKBONE, width=4)
    r = np.random.default_rng(0)
    batch = {
        "bmode": jnp.asarray(r.random((2, 16, 16, 3), np.float32)),
        "us_lnm": jnp.asarray([0.0, 1.0]),
        "lnm": jnp.asarray([0, 1], jnp.int32),
        "valid": jnp.ones(2, bool),
    }
    return model, batch


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the options are XLA:CPU's")
def test_every_program_is_built_with_its_kinds_options(monkeypatch):
    """An option XLA does not know, put in one kind, must reach each program of that kind: the
    train and pretraining steps (STEP), evaluation, Grad-CAM and pretraining features
    (INFERENCE), initialisation (INIT): each compile names it."""
    from lnm_jax.config import base_config
    from lnm_jax.explain.gradcam import make_cam_fn
    from lnm_jax.training.state import create_train_state, optimizers, run_init_program
    from lnm_jax.training.steps import make_eval_step, make_train_step

    model, batch = _model_and_batch()
    tx, plateau = optimizers(base_config("dual").train)
    state = create_train_state(model, jax.random.key(0), batch, tx, plateau)  # before the bogus option
    pretraining = _pretraining_programs()
    programs = {
        "train": (STEP, lambda: make_train_step(model, tx)(state, batch)),
        "eval": (INFERENCE, lambda: make_eval_step(model)(state.params, state.batch_stats, batch)),
        "cams": (INFERENCE, lambda: make_cam_fn(model)(state.params, state.batch_stats, batch)),
        "init": (INIT, lambda: run_init_program(lambda x: x * 2, jnp.ones(3))),
        "pretraining step": (STEP, pretraining["pretraining step"]),
        "pretraining features": (INFERENCE, pretraining["pretraining features"]),
    }
    for name, (kind, build) in programs.items():
        with monkeypatch.context() as m:
            m.setitem(kind, "cpu", {BOGUS: 1})
            with pytest.raises(Exception, match=BOGUS):
                build()
                pytest.fail(f"{name}: compiled without its kind's options")
    monkeypatch.setitem(INIT, "cpu", {BOGUS: 0})
    # as a decorator with arguments, and a caller's own options added to the kind's
    with pytest.raises(Exception, match=BOGUS):
        compile_options.jit(kind=INIT)(lambda x: x + 1)(jnp.ones(2))
    monkeypatch.setitem(STEP, "cpu", {LEVEL: 1})
    with pytest.raises(Exception, match=BOGUS):
        compile_options.jit(lambda x: x + 1, compiler_options={BOGUS: 2})(jnp.ones(2))
    # the module's STEP rebound, not edited: a program of the default kind takes the dict as it is
    # when the program is built (helper-127: it took the one bound when the module was loaded)
    monkeypatch.setattr(compile_options, "STEP", {"cpu": {BOGUS: 3}})  # (a value no program above was built with)
    with pytest.raises(Exception, match=BOGUS):
        make_train_step(model, tx)(state, batch)
    monkeypatch.setenv("XLA_FLAGS", f"--{BOGUS}=1")  # the user's flag wins: no option passed
    monkeypatch.setitem(STEP, "cpu", {BOGUS: 1})
    assert compile_options.compiler_options(STEP, "cpu") is None


def test_runs_of_one_configuration_share_their_programs_and_other_options_build_anew(monkeypatch):
    """The train step, evaluation step, initialisation and Grad-CAM are one program object per
    configuration in a process (a second run of it, a run's best and latest predictors, reuse
    the traces and compiles): equal models and optimiser settings give the same object; another
    seed, another setting, or other options of the program's kind another one. Nothing is
    traced or compiled here."""
    import copy

    from lnm_jax.config import base_config
    from lnm_jax.explain.gradcam import make_cam_fn
    from lnm_jax.training.state import optimizers, train_state_program
    from lnm_jax.training.steps import make_eval_step, make_train_step

    train_cfg = base_config("dual").train
    (tx, plateau), model = optimizers(train_cfg), _model_and_batch()[0]
    assert optimizers(copy.deepcopy(train_cfg)) == (tx, plateau)  # the same objects, from equal values
    other = copy.deepcopy(train_cfg)
    other.learning_rate = train_cfg.learning_rate / 10
    assert optimizers(other)[0] is not tx
    twin = _model_and_batch()[0]
    assert twin is not model and twin == model
    built = {
        "train": (STEP, lambda m: make_train_step(m, tx)),
        "eval": (INFERENCE, lambda m: make_eval_step(m)),
        "init": (INIT, lambda m: train_state_program(m, tx, plateau)),
        "cams": (INFERENCE, lambda m: make_cam_fn(m)),
    }
    for name, (kind, build) in built.items():
        first = build(model)
        assert build(twin) is first, name
        with monkeypatch.context() as m:
            m.setitem(kind, "cpu", {LEVEL: 2})
            assert build(twin) is not first, f"{name}: a program built with other options was reused"
        assert build(twin) is first, name
    assert make_train_step(model, tx, seed=1) is not make_train_step(model, tx)
    assert make_train_step(model, tx, pos_weight=2.0) is not make_train_step(model, tx)
    assert make_train_step(model, optimizers(other)[0]) is not make_train_step(model, tx)
    # memo.clear(): every program built anew (for a function patched in after it was built; helper-127)
    first = {name: build(model) for name, (_, build) in built.items()}
    memo.clear()
    assert all(build(model) is not first[name] for name, (_, build) in built.items())


def _pretraining_programs():
    """The pretraining step and its feature program on a tiny encoder, its state as zeros (the
    compile fails before anything runs)."""
    from lnm_jax.config import base_config
    from lnm_jax.models.contrastive import ContrastiveEncoder
    from lnm_jax.pretraining.pretrain import PretrainState, features, make_optimizer, make_step

    config = base_config("dual")
    encoder = ContrastiveEncoder(arch=BACKBONE, width=4)
    shapes = jax.eval_shape(lambda: encoder.init(jax.random.key(0), jnp.zeros((2, 16, 16, 3)), train=False))
    variables = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
    tx = make_optimizer(config.pretrain, 1)
    opt = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(tx.init, variables["params"]))
    state = PretrainState(jnp.zeros((), jnp.int32), variables["params"], variables["batch_stats"], opt)
    images, modality = jnp.zeros((4, 16, 16, 3), jnp.uint8), jnp.zeros(4, jnp.int32)
    idx = jnp.arange(2)
    return {
        "pretraining step": lambda: make_step(encoder, tx, config)(state, images, modality, idx, idx + 2),
        "pretraining features": lambda: features(
            encoder, variables, np.zeros((2, 16, 16, 3), np.uint8), np.zeros(2, np.int32), config.data.norm.to_dict(), 2
        ),
    }
