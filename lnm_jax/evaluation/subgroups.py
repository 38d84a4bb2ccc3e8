"""Test-split discrimination per subgroup of the manifest's own columns (the flag, each input's
availability, every metadata column such as age, sex or nodule size), for the model card: what
TRIPOD-AI's item on performance in key subgroups asks a report to give.

A column whose values are all numbers with more than :data:`MAX_LEVELS` distinct ones is split
at its median over the scored patients (``<= m`` / ``> m``); any other column by level, up to
:data:`MAX_LEVELS` levels; empty cells are left out. Each subgroup: n, positives, and, where it
holds both classes, the AUC with its DeLong CI (:func:`lnm_jax.evaluation.stats.delong_ci`).
Subgroups of a test split are small: their intervals are wide, and nothing here corrects for
looking at many of them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from lnm_jax.data.cohorts.manifest import Cohort
from lnm_jax.evaluation.stats import delong_ci
from lnm_jax.names import IMAGE_INPUTS, LABEL, US_LNM, has

MAX_LEVELS = 6


def cohort_columns(cohort: Cohort) -> dict[str, dict[str, str]]:
    """column -> patient id -> value ('' = missing): the label, the flag, each image input's
    availability (``has_<input>``: 0/1) and every metadata column."""
    cols: dict[str, dict[str, str]] = {
        LABEL: {p.patient_id: "" if p.lnm is None else str(p.lnm) for p in cohort.patients},
        US_LNM: {p.patient_id: "" if p.us_lnm is None else str(p.us_lnm) for p in cohort.patients},
    }
    for name in IMAGE_INPUTS:
        cols[has(name)] = {p.patient_id: str(int(p.has(name))) for p in cohort.patients}
    for c in cohort.metadata_columns:
        cols[c] = {p.patient_id: p.metadata.get(c, "") for p in cohort.patients}
    return cols


def is_continuous(values: Sequence[str]) -> bool:
    """Every non-empty value a number, more than :data:`MAX_LEVELS` distinct ones."""
    present = [v for v in values if v != ""]
    try:
        numbers = [float(v) for v in present]
    except ValueError:
        return False
    return len(set(numbers)) > MAX_LEVELS


def subgroup_rows(cohort: Cohort, patient_ids: Sequence[str], labels, scores, level: float = 0.95) -> list[dict]:
    """One row per subgroup of the scored patients (``patient_ids`` with their 0/1 ``labels``
    and ``scores``): ``{variable, level, n, positive, auc, auc_ci}`` (auc None where the
    subgroup lacks a class), in column order."""
    labels, scores = np.asarray(labels, int), np.asarray(scores, float)
    rows = []
    for col, by_id in cohort_columns(cohort).items():
        if col == LABEL:
            continue
        values = [by_id.get(str(p), "") for p in patient_ids]
        groups: Mapping[str, np.ndarray]
        if is_continuous(values):
            x = np.array([float(v) if v != "" else np.nan for v in values])
            m = float(np.nanmedian(x))
            groups = {f"<= {m:g}": x <= m, f"> {m:g}": x > m}
        else:
            levels = sorted({v for v in values if v != ""})
            if not 2 <= len(levels) <= MAX_LEVELS:
                continue  # one level says nothing; more are no subgroups a test split can score
            groups = {v: np.array([u == v for u in values]) for v in levels}
        for name, sel in groups.items():
            y, s = labels[sel], scores[sel]
            row = {"variable": col, "level": name, "n": int(sel.sum()), "positive": int(y.sum())}
            if 0 < y.sum() < len(y):
                auc, lo, hi = delong_ci(y, s, level)
                row.update(auc=auc, auc_ci=[lo, hi])
            else:
                row.update(auc=None, auc_ci=None)
            rows.append(row)
    return rows
