"""XLA compile options by backend: the one place the project's programs take theirs from.

XLA:CPU compiles each program's fusions with LLVM at ``xla_backend_optimization_level`` (XLA's
default: 3), and hands convolutions and dots to library kernels. Three kinds of program take
their options from here:

- :data:`STEP` (the train and pretraining steps, which run many times): level 1 on CPU, as
  for :data:`INFERENCE`. Measured on this repository's 2-core AMD EPYC (AVX-512), jaxlib
  0.10.2, each setting in a fresh process, three alternated runs (XLA's default as
  ``XLA_FLAGS=--xla_backend_optimization_level=3``): the tests' triple ResNet-18 (width 8,
  32 px, batch 8) train step compiles in 3.63-3.99 s instead of 4.07-4.21 s, its evaluation
  step (then built as a STEP program; INFERENCE has the same level) in 0.69-0.82 s instead of
  0.81-0.85 s, and the step runs faster (6.2-7.0 ms vs 7.2-7.4
  ms). The paper's triple ResNet-50 (224 px, batch 8, fp32) trains at 2.95 / 2.86 patients/s
  vs 2.83 / 2.77 and infers with BatchNorm folded at 10.4 / 10.1 vs 9.92 / 9.66 (two runs each
  of ``python scripts/benchmark.py --batch-sizes 8 --dtypes float32 --steps 6 --warmup 2``
  with ``XLA_FLAGS=--xla_backend_optimization_level=1`` and without). Level 0 compiles faster
  still (2.1 s for that train step) but runs it 6-7x slower. On CPU the step also gives
  YNNPACK its reductions only (:data:`YNN_REDUCTIONS`: BatchNorm's statistics and gradient
  sums), not XLA's default of dots, convolutions and reductions: Eigen's convolutions and
  GEMMs are faster here, YNNPACK's reductions are what the step needs (without them it trained
  at 1.74-1.89 patients/s instead of 3.05, one round each, docs/benchmarks.md). Measured on
  another machine than the level above, a 2-core Intel Xeon (AVX-512), two
  alternated rounds of ``python scripts/cpu_tuning.py --steps 6 --rounds 2 --variants "1x1
  convs as GEMMs (lowering=cpu; default),XLA's YNNPACK default everywhere
  (dots+convolutions+reductions)"``: the paper's triple ResNet-50 trains at 3.59 / 3.64
  patients/s against 3.15 / 3.10, PyTorch eager at 3.41 / 3.50 in the same rounds.
- :data:`INIT` (initialisation, which runs once): level 0 on CPU. The ResNet-18 pair of the
  tests compiles in 2.6 s instead of 7.6 s (Inception-v3: 28 s before).
- :data:`INFERENCE` (evaluation, prediction, Grad-CAM and pretraining features: forward passes
  that run many times): level 1, and on CPU no YNNPACK library fusions
  (``xla_cpu_experimental_ynn_fusion_type`` empty), so that convolutions and dots run on
  XLA's own Eigen kernels. jaxlib 0.10.2 hands every convolution, most dots and the
  reductions to YNNPACK by default; its forward convolutions are slower than Eigen's.
  Measured on a 2-core Intel Xeon (AVX-512), three alternated rounds of ``cpu_tuning.py``
  against its variant then named "inference compiled as the train step (YNNPACK)", when the
  train step still had XLA's default: the paper's triple ResNet-50 infers with BatchNorm
  folded at 15.0 / 14.7 / 14.6 patients/s against 13.7 / 13.3 / 13.4 (docs/benchmarks.md,
  "YNNPACK"); since the step's own change the same comparison is the inference columns of
  the STEP bullet's command (14.7 / 14.7 against 13.4 / 13.2). The YNNPACK option of either
  kind is passed only where this XLA knows it (:func:`known`).

Every option here changes values by rounding only (LLVM contracts different multiply-adds;
Eigen and YNNPACK sum in different orders); every build is deterministic, so a run is bitwise
reproducible under one setting. Other backends get XLA's defaults. An option the user sets in
``XLA_FLAGS`` (e.g. ``--xla_backend_optimization_level=N``) wins, for every kind: it is not
passed then (so ``=3`` builds initialisation at 3 too, unlike
before this module). XLA reads ``XLA_FLAGS`` once, when its backend starts: set it before that,
as this module reads it when a program is wrapped.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import jax

# JAX is imported where a program is built or a backend asked (known, compiler_options, jit), not
# here: the options and set_by_user are read by processes that never load JAX (benchmark.py's
# parent and its PyTorch child), and importing JAX costs them 2-3 s each.

LEVEL = "xla_backend_optimization_level"
# the YNNPACK library fusions XLA:CPU may use; empty: none (Eigen's convolutions and dots).
# XLA's default (jaxlib 0.10.2, read from the compile options it dumps with --xla_dump_to):
# individual dots, individual convolutions and reductions
YNN_FUSIONS = "xla_cpu_experimental_ynn_fusion_type"
YNN_REDUCTIONS = "LIBRARY_FUSION_TYPE_REDUCE"
STEP: Mapping[str, Mapping[str, Any]] = {"cpu": {LEVEL: 1, YNN_FUSIONS: YNN_REDUCTIONS}}
INFERENCE: Mapping[str, Mapping[str, Any]] = {"cpu": {LEVEL: 1, YNN_FUSIONS: ""}}
INIT: Mapping[str, Mapping[str, Any]] = {"cpu": {LEVEL: 0}}
# every kind by the name run_info.json and evaluate's metrics.json record it under (provenance.py)
KINDS: Mapping[str, Mapping[str, Mapping[str, Any]]] = {"step": STEP, "inference": INFERENCE, "init": INIT}
# options that not every jaxlib this project accepts knows (jax >= 0.6): passed only where it does
OPTIONAL = frozenset({YNN_FUSIONS})


def set_by_user(name: str) -> bool:
    """Whether the user's ``XLA_FLAGS`` sets the option ``name`` (it then wins over every kind)."""
    return any(f.split("=")[0] == f"--{name}" for f in os.environ.get("XLA_FLAGS", "").split())


@functools.cache
def known(name: str, value: Any, platform: str) -> bool:
    """Whether this XLA's ``platform`` backend accepts the compile option ``name=value``: a
    one-line program compiled with it (XLA refuses an unknown option by name at compile time)."""
    import jax

    x = jax.device_put(0.0, jax.local_devices(backend=platform)[0])  # this process's: multi-host too
    try:
        jax.jit(lambda v: v + 1, compiler_options={name: value}).lower(x).compile()
    except Exception:  # noqa: BLE001  (jaxlib's error types differ by version)
        return False
    return True


def compiler_options(kind: Mapping[str, Mapping[str, Any]], platform: str | None = None) -> dict[str, Any] | None:
    """The options of ``kind`` (:data:`STEP`, :data:`INFERENCE` or :data:`INIT`) for
    ``platform`` ('cpu', 'gpu', 'tpu'; default: JAX's default backend), less any the user set in
    ``XLA_FLAGS`` and any of :data:`OPTIONAL` this XLA does not know; ``None`` when none apply."""
    import jax

    platform = platform or jax.default_backend()
    options = {
        k: v
        for k, v in kind.get(platform, {}).items()
        if not set_by_user(k) and (k not in OPTIONAL or known(k, v, platform))
    }
    return options or None


def _platform(mesh: jax.sharding.Mesh | None) -> str | None:
    return mesh.devices.flat[0].platform if mesh is not None else None


def options_key(kind: Mapping[str, Mapping[str, Any]], mesh: jax.sharding.Mesh | None = None) -> tuple:
    """The options a program of ``kind`` built now by :func:`jit` (with ``mesh``) is compiled
    with, as a sorted tuple of (name, value): part of the key of a cache of built programs
    (``make_train_step``'s, ``make_eval_step``'s), so that other options (a test's, a user's)
    build another program, never reuse one built with the old."""
    return tuple(sorted((compiler_options(kind, _platform(mesh)) or {}).items()))


def jit(fn: Callable | None = None, *, mesh: jax.sharding.Mesh | None = None, kind=None, **kwargs) -> Callable:
    """``jax.jit(fn, **kwargs)`` compiled with ``kind``'s options (default: :data:`STEP`, as
    this module holds it when the program is built) for the platform of ``mesh``'s devices
    (default: JAX's default backend); a caller's own ``compiler_options`` are added and win.
    Without ``fn``, a decorator: ``@jit(kind=INIT)``."""
    if fn is None:
        return functools.partial(jit, mesh=mesh, kind=kind, **kwargs)
    import jax

    kind = STEP if kind is None else kind
    options = {**(compiler_options(kind, _platform(mesh)) or {}), **(kwargs.pop("compiler_options", None) or {})}
    return jax.jit(fn, compiler_options=options or None, **kwargs)
