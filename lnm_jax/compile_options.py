"""XLA compile options by backend: the one place the project's programs take theirs from.

XLA:CPU compiles each program's fusions with LLVM at ``xla_backend_optimization_level`` (XLA's
default: 3). Two levels are chosen here, per kind of program:

- :data:`STEP` (the train, evaluation, Grad-CAM and pretraining programs, which run many
  times): level 1 on CPU. Measured on this repository's 2-core AMD EPYC (AVX-512), jaxlib
  0.10.2, each setting in a fresh process, three alternated runs (XLA's default as
  ``XLA_FLAGS=--xla_backend_optimization_level=3``): the tests' triple ResNet-18 (width 8,
  32 px, batch 8) train step compiles in 3.63-3.99 s instead of 4.07-4.21 s, its evaluation
  step in 0.69-0.82 s instead of 0.81-0.85 s, and the step runs faster (6.2-7.0 ms vs 7.2-7.4
  ms). The paper's triple ResNet-50 (224 px, batch 8, fp32) trains at 2.95 / 2.86 patients/s
  vs 2.83 / 2.77 and infers with BatchNorm folded at 10.4 / 10.1 vs 9.92 / 9.66 (two runs each
  of ``python scripts/benchmark.py --batch-sizes 8 --dtypes float32 --steps 6 --warmup 2``
  with ``XLA_FLAGS=--xla_backend_optimization_level=1`` and without). Level 0 compiles faster
  still (2.1 s for that train step) but runs it 6-7x slower.
- :data:`INIT` (initialisation, which runs once): level 0 on CPU. The ResNet-18 pair of the
  tests compiles in 2.6 s instead of 7.6 s (Inception-v3: 28 s before).

Either level changes values by rounding only (LLVM contracts different multiply-adds); every
build is deterministic, so a run is bitwise reproducible under one setting. Other backends get
XLA's defaults. A level the user sets in ``XLA_FLAGS`` (``--xla_backend_optimization_level=N``)
wins, for both kinds: no option is passed then (so ``=3`` builds initialisation at 3 too, unlike
before this module). XLA reads ``XLA_FLAGS`` once, when its backend starts: set it before that,
as this module reads it when a program is wrapped.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping
from typing import Any

import jax

LEVEL = "xla_backend_optimization_level"
STEP: Mapping[str, Mapping[str, Any]] = {"cpu": {LEVEL: 1}}
INIT: Mapping[str, Mapping[str, Any]] = {"cpu": {LEVEL: 0}}


def _set_by_user(name: str) -> bool:
    return any(f.split("=")[0] == f"--{name}" for f in os.environ.get("XLA_FLAGS", "").split())


def compiler_options(kind: Mapping[str, Mapping[str, Any]], platform: str | None = None) -> dict[str, Any] | None:
    """The options of ``kind`` (:data:`STEP` or :data:`INIT`) for ``platform`` ('cpu', 'gpu',
    'tpu'; default: JAX's default backend), less any the user set in ``XLA_FLAGS``; ``None``
    when none apply."""
    options = {k: v for k, v in kind.get(platform or jax.default_backend(), {}).items() if not _set_by_user(k)}
    return options or None


def jit(fn: Callable | None = None, *, mesh: jax.sharding.Mesh | None = None, kind=STEP, **kwargs) -> Callable:
    """``jax.jit(fn, **kwargs)`` compiled with ``kind``'s options for the platform of ``mesh``'s
    devices (default: JAX's default backend); a caller's own ``compiler_options`` are added and
    win. Without ``fn``, a decorator: ``@jit(kind=INIT)``."""
    if fn is None:
        return functools.partial(jit, mesh=mesh, kind=kind, **kwargs)
    platform = mesh.devices.flat[0].platform if mesh is not None else None
    options = {**(compiler_options(kind, platform) or {}), **(kwargs.pop("compiler_options", None) or {})}
    return jax.jit(fn, compiler_options=options or None, **kwargs)
