"""Metrics per availability pattern: one missing-input model (``model.missing_inputs``)
evaluated with inputs withheld, beside dedicated models trained for each pattern's inputs.

A pattern withholds inputs on top of what the data already lacks (a patient with no CEUS in
the manifest stays without it in every pattern). Dedicated models must have been trained on
the same manifest and split, so that both are scored on the very same test patients; their
AUCs are compared with the paired DeLong test.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from lnm_jax import names
from lnm_jax import run_files as F
from lnm_jax.evaluation import metrics as M
from lnm_jax.evaluation.evaluate import is_evaluation
from lnm_jax.evaluation.stats import delong_test, format_p
from lnm_jax.evaluation.summary import summarise_predictions
from lnm_jax.fileio import read_json, write_json, write_text
from lnm_jax.output_guard import guard_output
from lnm_jax.run import Run
from lnm_jax.run_lock import check_held

# name -> inputs withheld
PATTERNS = names.AVAILABILITY_PATTERNS
LABELS = {
    "all": "all three",
    "no_ceus": "no CEUS",
    "no_flag": "no US-LNM flag",
    "bmode_only": "B-mode only",
    "no_bmode": "no B-mode",
    "ceus_only": "CEUS only",
}


def withhold(batch: dict, hidden: tuple[str, ...]) -> dict:
    """The batch with ``hidden`` inputs marked absent and zeroed, as an empty manifest cell is."""
    out = dict(batch)
    for m in hidden:
        out[names.has(m)] = np.zeros_like(np.asarray(batch[names.has(m)]))
        out[m] = np.zeros_like(np.asarray(batch[m]))
    return out


def remaining_inputs(modalities: tuple[str, ...], pattern: str) -> tuple[str, ...]:
    return tuple(m for m in modalities if m not in PATTERNS[pattern])


def _summary(p: dict, level: float) -> dict:
    return summarise_predictions(p[names.LABEL], p["logit"], ci_level=level, calibration=False)


def evaluate_availability(
    run: Run,
    *,
    checkpoint: str = "best",
    subset: str = "test",
    dedicated: dict[str, Run] | None = None,
    out: Path | str | None = None,
) -> dict:
    """Per-pattern metrics of a missing-input run, and of ``dedicated`` runs (pattern -> run)
    on the same patients. Writes ``availability.json`` and ``availability.md``."""
    if not run.config.model.missing_inputs:
        raise ValueError(
            f"{run.workdir} was trained without model.missing_inputs: it has no learned "
            f"'absent' inputs, so withheld inputs would be read as zeros"
        )
    # --out: as evaluate's, never the run's state or a cohort's folder, nor a folder of the
    # user's; a new one, the run's evaluation folder, or one an earlier evaluate or
    # availability wrote (refused before anything is computed)
    own = run.files.evaluation(checkpoint).resolve()
    out = guard_output(
        out or own,
        inputs=[*run.cohort.files()],
        ours=lambda folder: folder == own or _is_availability(folder) or is_evaluation(folder),
        kind="folder",
        can_overwrite=False,
        run=run.workdir,  # inside a run folder: only this run's eval_*/gradcam_* folders
    )
    level = run.config.eval.ci_level
    modalities = names.parse_modalities(run.config.modalities)
    # the state scored, as evaluate's metrics.json records it: a table a resume has overtaken
    # says which epoch it is of
    result = {
        **run.computed_from(checkpoint),
        "subset": subset,
        "patterns": {},
    }
    patterns = [k for k in PATTERNS if remaining_inputs(modalities, k) and set(PATTERNS[k]) <= set(modalities)]
    preds = {}
    for name in patterns:
        preds[name] = run.predict(subset, checkpoint, lambda b, h=PATTERNS[name]: withhold(b, h))
        result["patterns"][name] = {
            "inputs": list(remaining_inputs(modalities, name)),
            "missing_input_model": _summary(preds[name], level),
        }
    for name, other in (dedicated or {}).items():
        if name not in result["patterns"]:
            raise ValueError(f"unknown or inapplicable pattern '{name}' (have {patterns})")
        want = set(result["patterns"][name]["inputs"])
        have = set(names.parse_modalities(other.config.modalities))
        if have != want:
            raise ValueError(
                f"dedicated run {other.workdir} uses {sorted(have)}, pattern '{name}' leaves {sorted(want)}"
            )
        if other.cohort.sha256 != run.cohort.sha256 or set(other.split.subset(subset)) != set(run.split.subset(subset)):
            raise ValueError(
                f"dedicated run {other.workdir} was not trained on the same manifest and "
                f"split as {run.workdir}: its {subset} patients differ"
            )
        q = other.predict(subset, checkpoint)
        order = {pid: i for i, pid in enumerate(q[names.PATIENT_ID])}
        idx = np.array([order[pid] for pid in preds[name][names.PATIENT_ID]])
        ded = {k: v[idx] for k, v in q.items()}
        entry = result["patterns"][name]
        entry["dedicated_model"] = {
            "run": str(other.workdir),
            "epoch": other.predictor(checkpoint).meta["epoch"],
            **_summary(ded, level),
        }
        entry["delong_missing_vs_dedicated"] = delong_test(
            preds[name][names.LABEL], M.sigmoid(preds[name]["logit"]), M.sigmoid(ded["logit"])
        )
    check_held(run.files.root)  # a run removed or replaced meanwhile: nothing written into it (helper-111)
    fresh = not out.exists()
    try:
        write_json(out / F.AVAILABILITY_JSON, result)
        write_text(out / F.AVAILABILITY_MD, availability_table(result))
    except BaseException:
        if fresh:  # a folder this call made is not left behind empty or half-written
            shutil.rmtree(out, ignore_errors=True)
        raise
    result["out"] = str(out)
    return result


def _is_availability(folder: Path) -> bool:
    """Whether ``folder`` holds what :func:`evaluate_availability` writes (its JSON, read back)."""
    try:
        return {"run", "checkpoint", "subset", "patterns"} <= set(read_json(folder / F.AVAILABILITY_JSON))
    except (OSError, ValueError):
        return False


def availability_table(result: dict) -> str:
    """Markdown: one row per pattern, the missing-input model beside the dedicated one."""
    lines = [
        f"AUC (95% DeLong CI) on the {result['subset']} set, checkpoint {result['checkpoint']}"
        + (f" (epoch {result['epoch']})." if "epoch" in result else "."),
        "",
        "| inputs | missing-input model | dedicated model | difference | DeLong p |",
        "|---|---|---|---:|---:|",
    ]

    def fmt(s):
        return f"{s['auc']:.3f} ({s['auc_ci_delong'][0]:.3f}-{s['auc_ci_delong'][1]:.3f})"

    for name, e in result["patterns"].items():
        ded = e.get("dedicated_model")
        test = e.get("delong_missing_vs_dedicated")
        diff = f"{test['difference']:+.3f}" if test else "-"
        p = format_p(test, bare=True) if test else "-"
        lines.append(
            f"| {LABELS[name]} ({', '.join(e['inputs'])}) | {fmt(e['missing_input_model'])} | "
            f"{fmt(ded) if ded else '-'} | {diff} | {p} |"
        )
    return "\n".join(lines) + "\n"
