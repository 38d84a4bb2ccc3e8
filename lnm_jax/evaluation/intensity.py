"""The training cohort's image intensities, recorded when a run trains, and the check that
``predict`` makes of new patients against them.

A model scores whatever pixels it is given: a file read with another bit depth, an inverted
MONOCHROME1, a near-black export or a saturated screen capture gets a probability like any
other. Per image input, the per-image mean and standard deviation of the [0, 1] pixels the
model sees (after framing and resize, before normalisation) are summarised over the training
split as median and MAD (median absolute deviation, scaled by 1.4826 to a normal SD); a new
image is an outlier when one of the two lies more than :data:`OUTLIER_Z` robust SDs from the
training median *and* outside the range the training images spanned, so that a small cohort's
narrow spread does not flag its own kind.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

import numpy as np

from lnm_jax import names
from lnm_jax.fileio import is_number

FEATURES = ("mean", "std")  # of one image's [0, 1] pixels
OUTLIER_Z = 6.0
MAD_TO_SD = 1.4826  # MAD of a normal distribution x 1.4826 = its SD


def tap(batches: Iterable[Mapping], norm: Mapping, inputs: Iterable[str]) -> tuple[Iterator[Mapping], dict]:
    """``(batches, features)``: the same batches, and a dict filled as they are consumed:
    ``features[input][patient_id] = (mean, std)`` of each present image of ``inputs``,
    un-normalised with ``norm`` (the run's ``data.norm``)."""
    inputs = [k for k in inputs if k in names.IMAGE_INPUTS]
    features: dict[str, dict[str, tuple[float, float]]] = {k: {} for k in inputs}

    def gen():
        for batch in batches:
            valid = np.asarray(batch[names.VALID], bool)
            ids = batch[names.PATIENT_ID]
            for k in inputs:
                present = valid & np.asarray(batch[names.has(k)], bool)
                if not present.any():
                    continue
                mean, std = (np.asarray(norm[k][s], np.float32) for s in ("mean", "std"))
                x = np.asarray(batch[k])[present] * std + mean  # [n, (T,) H, W, 3] in [0, 1]
                flat = x.reshape(len(x), -1)
                for pid, m, s in zip(np.asarray(ids)[present], flat.mean(axis=1), flat.std(axis=1)):
                    features[k][pid.decode() if isinstance(pid, bytes) else str(pid)] = (float(m), float(s))
            yield batch

    return gen(), features


def features_of(batches: Iterable[Mapping], norm: Mapping, inputs: Iterable[str]) -> dict:
    """:func:`tap`'s features of ``batches``, consumed whole (nothing else reads them)."""
    tapped, features = tap(batches, norm, inputs)
    for _ in tapped:
        pass
    return features


def reference(features: Mapping[str, Mapping[str, tuple[float, float]]]) -> dict:
    """The training cohort's summary (JSON-able): per input and feature, n, median, robust SD
    (MAD x 1.4826), min and max."""
    out = {}
    for k, per_patient in features.items():
        if not per_patient:
            continue
        values = np.asarray(list(per_patient.values()), np.float64)  # [n, 2]
        out[k] = {}
        for j, f in enumerate(FEATURES):
            v = values[:, j]
            med = float(np.median(v))
            out[k][f] = {
                "n": len(v),
                "median": med,
                "robust_sd": float(MAD_TO_SD * np.median(np.abs(v - med))),
                "min": float(v.min()),
                "max": float(v.max()),
            }
    return out


SUMMARY = ("n", "median", "robust_sd", "min", "max")  # what reference() writes per input and feature


def reference_problem(ref: object) -> str | None:
    """What is wrong with a stored reference (one phrase, or None): every input a mapping of
    :data:`FEATURES`, each holding the :data:`SUMMARY` values as finite numbers (``n`` an
    integer >= 1, ``robust_sd`` >= 0, ``min`` <= ``median`` <= ``max``)."""
    if not isinstance(ref, Mapping):
        return "it is not an object"
    for k, per_feature in ref.items():
        for f in FEATURES:
            r = per_feature.get(f) if isinstance(per_feature, Mapping) else None
            if not isinstance(r, Mapping):
                return f"'{k}' lacks its '{f}' summary"
            for key in SUMMARY:
                v = r.get(key)
                if not is_number(v):
                    return f"'{k}'.'{f}'.'{key}' is {v!r}, not a number"
            ordered = r["min"] <= r["median"] <= r["max"]
            if not (isinstance(r["n"], int) and r["n"] >= 1 and r["robust_sd"] >= 0 and ordered):
                return f"'{k}'.'{f}' is no summary of training images ({dict(r)})"
    return None


def outliers(ref: Mapping, features: Mapping[str, Mapping[str, tuple[float, float]]], z: float = OUTLIER_Z) -> dict:
    """``{patient_id: ["bmode mean 0.98 (training 0.18-0.31)", ...]}`` for every image whose
    mean or SD lies more than ``z`` robust SDs from the training median and outside the
    training range."""
    out: dict[str, list[str]] = {}
    for k, per_patient in features.items():
        if k not in ref:
            continue
        for pid, values in per_patient.items():
            for f, v in zip(FEATURES, values):
                r = ref[k][f]
                spread = max(r["robust_sd"], 1e-3)  # a constant training feature: 0.001 on the [0, 1] scale
                if abs(v - r["median"]) > z * spread and not r["min"] <= v <= r["max"]:
                    out.setdefault(pid, []).append(f"{k} {f} {v:.3f} (training {r['min']:.3f}-{r['max']:.3f})")
    return out


# what an outlier means where predictions are written, and where they are not (validate)
PREDICTED = "their probabilities are extrapolations; column intensity_outlier in the output"
TO_PREDICT = "predict would score them by extrapolation, and name them in its intensity_outlier column"


def warning_lines(
    flagged: Mapping[str, list[str]], total: int, shown: int = 3, consequence: str = PREDICTED
) -> list[str]:
    """What ``predict`` prints about outliers (nothing when there are none); ``consequence``
    ends the first line (:data:`TO_PREDICT` for ``validate``, which writes nothing)."""
    if not flagged:
        return []
    lines = [
        f"warning: {len(flagged)} of {total} patient(s) have an image far outside the training cohort's "
        f"intensities (another bit depth, inverted, saturated or a screen capture?): {consequence}"
    ]
    lines += [f"  {pid}: {'; '.join(why)}" for pid, why in list(flagged.items())[:shown]]
    if len(flagged) > shown:
        lines.append(f"  ... and {len(flagged) - shown} more")
    return lines
