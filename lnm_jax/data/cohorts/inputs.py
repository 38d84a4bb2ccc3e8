"""Which patients lack an input a model takes, and the refusal that names them (used by
training's preflight, ``predict`` and an exported model's own ``predict.py``)."""

from __future__ import annotations

from lnm_jax.data.cohorts.manifest import Cohort

SHOW = 10  # patients named per missing input in an error


class MissingInputsError(ValueError):
    """Patients lack an input that a model not trained for missing inputs takes."""


def lacking(inputs, cohort: Cohort) -> dict[str, list[str]]:
    """Input -> the patients of ``cohort`` who lack it, for each of ``inputs``."""
    out = {i: [p.patient_id for p in cohort.patients if not p.has(i)] for i in inputs}
    return {i: ids for i, ids in out.items() if ids}


def refuse_missing(cohort: Cohort, inputs, model: str, opt_in: str) -> None:
    """Raises :class:`MissingInputsError` if a patient lacks one of ``inputs``."""
    if not (missing := lacking(inputs, cohort)):
        return
    parts = [
        f"{i} missing for {len(ids)} ({', '.join(ids[:SHOW])}{', ...' if len(ids) > SHOW else ''})"
        for i, ids in missing.items()
    ]
    absent = [i for i, ids in missing.items() if len(ids) == len(cohort.patients)]
    present = [i for i in inputs if i not in absent]
    if absent and present:  # an input no patient has: a model of the others, not a missing-input one
        raise MissingInputsError(
            f"{cohort.path}: {' and '.join(absent)} missing for every patient; train a model of what the cohort "
            f"has with --config.modalities={','.join(present)} (the model ({model}) takes {', '.join(inputs)}), "
            f"or opt in to feeding zeros with {opt_in}"
        )
    raise MissingInputsError(
        f"{cohort.path}: {'; '.join(parts)}; the model ({model}) was not trained for missing inputs. "
        f"Train one with --config.model.missing_inputs=True, or opt in to feeding zeros with {opt_in}"
    )
