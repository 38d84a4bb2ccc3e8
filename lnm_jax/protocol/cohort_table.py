"""Table 1: cohort characteristics of two groups of patients (train+validation vs test).

Every available column gets a row: continuous columns (every value numeric, more than
``subgroups.MAX_LEVELS`` distinct values) as median (IQR) with a two-sided Mann-Whitney U test;
categorical columns as n (%) per level with Pearson's chi-square test. Empty cells are
counted as 'missing' and left out of the tests.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lnm_jax.data.cohorts.manifest import Cohort
from lnm_jax.evaluation.stats import categorical_test, mann_whitney

# the cohort's columns and how a column is told continuous: one definition, with the subgroups'
from lnm_jax.evaluation.subgroups import cohort_columns, is_continuous
from lnm_jax.markdown import inline


def cohort_table(cohort: Cohort, groups: dict[str, Sequence[str]]) -> list[dict]:
    """Rows of Table 1 for ``groups`` (name -> patient ids; exactly two)."""
    if len(groups) != 2:
        raise ValueError(f"Table 1 compares two groups, got {list(groups)}")
    names = list(groups)
    rows = []  # each row: variable, level, kind, one cell per group, p, method, missing
    for col, by_id in cohort_columns(cohort).items():
        vals = {g: [by_id[p] for p in ids] for g, ids in groups.items()}
        everything = [v for g in names for v in vals[g]]
        if all(v == "" for v in everything):
            continue
        missing = {g: sum(v == "" for v in vals[g]) for g in names}
        if is_continuous(everything):
            nums = {g: np.array([float(v) for v in vals[g] if v != ""]) for g in names}
            cells = {}
            for g in names:
                x = nums[g]
                cells[g] = (
                    f"{np.median(x):.1f} ({np.percentile(x, 25):.1f}-{np.percentile(x, 75):.1f})" if len(x) else "-"
                )
            p = mann_whitney(nums[names[0]], nums[names[1]]) if all(len(nums[g]) for g in names) else float("nan")
            rows.append(
                {
                    "variable": col,
                    "level": "median (IQR)",
                    "kind": "continuous",
                    **cells,
                    "p": p,
                    "method": "Mann-Whitney U",
                    "missing": missing,
                }
            )
            continue
        present = {g: [v for v in vals[g] if v != ""] for g in names}
        p, method = categorical_test(present[names[0]], present[names[1]])
        levels = sorted(set(present[names[0]]) | set(present[names[1]]))
        for i, level in enumerate(levels):
            cells = {}
            for g in names:
                n = present[g].count(level)
                cells[g] = f"{n} ({100 * n / max(len(present[g]), 1):.1f}%)"
            rows.append(
                {
                    "variable": col if i == 0 else "",
                    "level": level,
                    "kind": "categorical",
                    **cells,
                    "p": p if i == 0 else None,
                    "method": method if i == 0 else "",
                    "missing": missing,
                }
            )
    return rows


def cohort_table_markdown(rows: list[dict], groups: dict[str, Sequence[str]]) -> str:
    names = list(groups)
    head = " | ".join(f"{g} (n={len(groups[g])})" for g in names)
    lines = [f"| variable | level | {head} | p | method |", "|---|---|" + "---:|" * len(names) + "---:|---|"]
    for r in rows:
        p = "" if r["p"] is None else ("-" if np.isnan(r["p"]) else ("<0.001" if r["p"] < 0.001 else f"{r['p']:.3f}"))
        lines.append(
            f"| {inline(r['variable'])} | {inline(r['level'])} | "
            + " | ".join(r[g] for g in names)
            + f" | {p} | {r['method']} |"
        )
    return "\n".join(lines) + "\n"
