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
    lines = [evaluation_lines(res)]
    ref = res.get("synthetic_reference")
    if ref and ref["bayes_auc"] is not None:
        lines.append(bayes_line(res["splits"]["test"]["auc"], ref))
    lines.append(f"demo finished in {time.perf_counter() - t0:.0f}s; run folder {workdir}")
    return "\n".join(lines)


def bayes_line(auc: float, ref: dict) -> str:
    """The test AUC beside the Bayes-optimal AUC of the run's inputs, which no model beats but
    by chance (a finite test set): the Bayes-optimal score's AUC on the same test patients
    (``ref['oracle_auc_test']``, from :func:`lnm_jax.evaluation.evaluate.bayes_reference`) and
    over the generator's population (``ref['bayes_auc']``). The gap is that of the printed,
    rounded values, so that the line adds up as read."""
    auc, best = round(auc, 3), round(ref["oracle_auc_test"], 3)
    side = "below" if auc <= best else "above"
    return (
        f"test AUC {auc:.3f}: {abs(best - auc):.3f} {side} the Bayes-optimal AUC of these inputs ({best:.3f} on "
        f"these test patients, {ref['bayes_auc']:.3f} over the generator's population), which no model "
        "beats but by chance"
    )
