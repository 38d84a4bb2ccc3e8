"""``lnm-jax demo``: synthesise the embedded cohort, train the triple model and evaluate it,
beside the generator's Bayes-optimal AUC (what no model of these inputs can beat)."""

from __future__ import annotations

import time
from pathlib import Path

from ml_collections import ConfigDict

from lnm_jax.evaluation.evaluate import evaluate, evaluation_lines
from lnm_jax.run import Run
from lnm_jax.training.loop import train


def demo(config: ConfigDict, workdir: Path | str) -> str:
    """Runs the demo in ``workdir``; returns its report (the lines the command prints)."""
    t0 = time.perf_counter()
    run = Run.create(config, workdir)
    train(run)
    res = evaluate(run)
    # evaluation_lines gives the test AUC beside the generator's Bayes-optimal AUC (a synthetic cohort)
    finished = f"demo finished in {time.perf_counter() - t0:.0f}s; run folder {workdir}"
    return "\n".join([evaluation_lines(res), finished])
