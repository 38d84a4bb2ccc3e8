"""Which epoch is the best: the rule the training loop keeps its ``best`` checkpoint by, in one
place, so that what the convergence figure marks is the checkpoint that was kept."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

NO_BEST = {"val_auc": -math.inf, "epoch": 0}
"""The record before any epoch: every finite validation AUC improves on it."""


def improves(val_auc: float, val_loss: float, best: Mapping) -> bool:
    """Whether an epoch with validation AUC ``val_auc`` and validation BCE ``val_loss`` is better
    than ``best`` (a record with ``val_auc`` and, after the first best epoch, ``val_loss``): a
    higher AUC, or the same AUC and a lower loss (a binary flag's AUC does not move). A NaN AUC
    never improves (every comparison with NaN is false)."""
    return val_auc > best["val_auc"] or (val_auc == best["val_auc"] and val_loss < best.get("val_loss", math.inf))


def best_epoch(history: Sequence[Mapping]) -> int | None:
    """The epoch :func:`improves` keeps over a run's history lines (each with ``epoch``,
    ``val_auc``, ``val_loss``), replayed in order; None where no epoch improves (none, or every
    validation AUC NaN)."""
    best = dict(NO_BEST)
    for h in history:
        auc, loss = (math.nan if h[k] is None else h[k] for k in ("val_auc", "val_loss"))  # NaN is stored as null
        if improves(auc, loss, best):
            best = {"val_auc": auc, "epoch": h["epoch"], "val_loss": loss}
    return best["epoch"] or None
