"""The one summary of a set of predictions, and its schema.

``metrics.json`` (evaluate), ``results.json`` (reproduce), ``availability.json`` and the
training log's per-epoch numbers all come from :func:`summarise_predictions`, so an AUC, a CI or
a sensitivity means the same thing, under the same key, everywhere::

    {"n", "n_positive",
     "loss":                BCE of the logits (mean over patients),
     "auc", "ci_level",
     "auc_ci_delong":       [lo, hi] (DeLong, logit scale: stats.delong_ci),
     "auc_ci_bootstrap":    [lo, hi] (BCa bootstrap over patients, stratified by class; when n_boot > 0),
     "at_0.5":              {threshold, sensitivity, specificity, accuracy, ppv, npv, tp, tn, fp, fn, and
                             sensitivity_ci, specificity_ci, ppv_ci, npv_ci: Wilson [lo, hi]},
     "at_threshold":        the same at a chosen threshold (e.g. Youden's on validation; when given),
     "calibration":         {ece, brier, intercept, intercept_ci, slope, slope_ci[, temperature, and each
                             of the six as *_temperature_scaled]}}
"""

from __future__ import annotations

import math

import numpy as np

from lnm_jax.evaluation import calibration as C
from lnm_jax.evaluation import metrics as M
from lnm_jax.evaluation.stats import delong_ci, wilson_ci

THRESHOLD_METRICS = ("sensitivity", "specificity", "accuracy")
# every key of a summary, in the order above (the schema's one definition; readers take theirs from it)
KEYS = (
    "n",
    "n_positive",
    "loss",
    "auc",
    "ci_level",
    "auc_ci_delong",
    "auc_ci_bootstrap",
    "at_0.5",
    "at_threshold",
    "calibration",
)
PREVALENCE_BOUNDS = (0.2, 0.8)  # outside: a 0.5 threshold on an unweighted model is a poor default


def bce(labels: np.ndarray, logits: np.ndarray) -> float:
    """Mean binary cross-entropy of logits, computed stably in float64."""
    y = np.asarray(labels, np.float64)
    z = np.asarray(logits, np.float64)
    return float(np.mean(np.logaddexp(0.0, z) - y * z)) if len(y) else math.nan


def summarise_predictions(
    labels,
    logits,
    *,
    threshold: float | None = None,
    temperature: float | None = None,
    ci_level: float = 0.95,
    n_boot: int = 0,
    seed: int = 0,
    calibration: bool = True,
) -> dict:
    """Everything reported for one set of predictions (see the module docstring)."""
    labels, logits = M.checked(labels, logits, "logits")
    probs = M.sigmoid(logits)
    both_classes = len(labels) > 0 and labels.min() != labels.max()
    out = {
        "n": int(len(labels)),
        "n_positive": int(labels.sum()),
        "loss": bce(labels, logits),
        "auc": M.safe_auc(labels, probs),
        "ci_level": ci_level,
    }
    out["auc_ci_delong"] = list(delong_ci(labels, probs, ci_level)[1:]) if both_classes else [math.nan] * 2
    if n_boot:
        out["auc_ci_bootstrap"] = list(M.bootstrap_auc_ci(labels, probs, n_boot=n_boot, level=ci_level, seed=seed))
    out["at_0.5"] = with_intervals(M.threshold_metrics(labels, probs, 0.5), ci_level)
    if threshold is not None:
        out["at_threshold"] = with_intervals(M.threshold_metrics(labels, probs, threshold), ci_level)
    if calibration:
        cal = {"ece": C.expected_calibration_error(labels, probs), "brier": C.brier(labels, probs)}
        cal.update(C.intercept_and_slope(labels, logits, ci_level))  # (helper-99: ECE alone hides which way)
        if temperature is not None:
            scaled = C.calibrated(logits, temperature)
            cal.update(
                temperature=temperature,
                ece_temperature_scaled=C.expected_calibration_error(labels, scaled),
                brier_temperature_scaled=C.brier(labels, scaled),
                **{  # intercept_temperature_scaled, intercept_temperature_scaled_ci, slope_...
                    k.removesuffix("_ci") + "_temperature_scaled" + ("_ci" if k.endswith("_ci") else ""): v
                    for k, v in C.intercept_and_slope(labels, logits / temperature, ci_level).items()
                },
            )
        out["calibration"] = cal
    return out


RATES = {"sensitivity": ("tp", "fn"), "specificity": ("tn", "fp"), "ppv": ("tp", "fp"), "npv": ("tn", "fn")}


def with_intervals(m: dict, level: float = 0.95) -> dict:
    """``m`` (:func:`lnm_jax.evaluation.metrics.threshold_metrics`) with each rate's Wilson
    interval at ``level`` (``sensitivity_ci``, ... as [lo, hi]; ``stats.wilson_ci``; [NaN,
    NaN] for an empty denominator; helper-104: CLAIM 36 asks for them, and for PPV and NPV)."""
    out = dict(m)
    for rate, (hit, miss) in RATES.items():
        out[f"{rate}_ci"] = list(wilson_ci(m[hit], m[hit] + m[miss], level))
    return out


def calls_text(
    sensitivity: float, specificity: float, positive: str = "positive", negative: str = "negative"
) -> str | None:
    """What an operating point with a rate of 0 calls, in words true of it: "every patient
    called negative" only where no patient is called positive (sensitivity 0, specificity 1),
    and its mirror; "no positive patient called positive" where the positives are all missed
    but some negatives are called positive (helper-120: one missed positive of one, with 7 of 7
    negatives called positive, had been said "every patient called negative" and "every patient
    called positive" at once); both missed: every call wrong. None where neither rate is 0.
    ``positive``/``negative``: the task's words for the classes."""
    if sensitivity == 0 and specificity == 0:
        return f"every call wrong: each {positive} patient called {negative}, each {negative} patient {positive}"
    if sensitivity == 0:
        return f"every patient called {negative}" if specificity == 1 else f"no {positive} patient called {positive}"
    if specificity == 0:
        return f"every patient called {positive}" if sensitivity == 1 else f"no {negative} patient called {negative}"
    return None


def threshold_text(t: float, decimals: int = 3) -> str:
    """A probability cut-off as text: ``decimals`` places, more (up to predict's 6) while that
    rounds it to 0 or 1 (helper-103: a Youden threshold of 0.99966 printed as "1.00" and "1.000",
    a cut-off that calls 3 patients positive where it calls 79)."""
    while decimals < 6 and round(t, decimals) in (0.0, 1.0) and 0.0 < t < 1.0:
        decimals += 1
    return f"{t:.{decimals}f}"


def shown_auc_ci(s: dict) -> tuple[str, list[float]]:
    """The AUC interval a summary is shown with (the console line, the ROC legend): the
    bootstrap one where it was computed, else DeLong's, as ``(method, [lo, hi])``."""
    return ("bootstrap", s["auc_ci_bootstrap"]) if "auc_ci_bootstrap" in s else ("DeLong", s["auc_ci_delong"])


def format_summary(name: str, s: dict, threshold_rule: str = "", fitted_on: str = "val") -> str:
    """One console line (two with calibration) of a summary; ``threshold_rule`` names how
    ``at_threshold``'s threshold was chosen (e.g. 'youden'), on split ``fitted_on``, whose own
    line says its figures at it are in-sample."""
    kind, ci = shown_auc_ci(s)
    line = (
        f"{name:5s} n={s['n']:4d}  AUC {s['auc']:.3f} ({100 * s['ci_level']:.0f}% {kind} CI "
        f"{ci[0]:.3f}-{ci[1]:.3f})  " + _at("@0.5", s["at_0.5"])
    )
    if "at_threshold" in s:
        where = ", in-sample" if name == fitted_on else ""
        cut = threshold_text(s["at_threshold"]["threshold"], 2)
        line += "  " + _at(f"@{threshold_rule}({cut}{where})", s["at_threshold"])
    c = s.get("calibration")
    if c:
        line += f"\n      calibration: {_calibration_text(c, '')}"
        if "temperature" in c:
            where = ", in-sample" if name == fitted_on else ""
            line += (
                f"\n      with temperature {c['temperature']:.2f} (fitted on {fitted_on}{where}): "
                + _calibration_text(c, "_temperature_scaled")
            )
    return line


def _calibration_text(c: dict, suffix: str) -> str:
    """ECE, Brier, calibration intercept and slope (with CIs, where recorded) of a summary's
    calibration, before (``suffix`` '') or after temperature scaling ('_temperature_scaled')."""
    text = f"ECE {c['ece' + suffix]:.3f}, Brier {c['brier' + suffix]:.3f}"
    for k in ("intercept", "slope"):
        if k + suffix not in c:
            continue
        if not math.isfinite(c[k + suffix]):  # (helper-102: "slope nan (nan to nan)")
            text += f", {k} undefined (one class, logits that separate the classes, or logits of one value)"
            continue
        lo, hi = c[f"{k}{suffix}_ci"]
        text += f", {k} {c[k + suffix]:.2f} ({lo:.2f} to {hi:.2f})"
    return text


def _at(tag: str, m: dict) -> str:
    return f"{tag} sens {m['sensitivity']:.3f} spec {m['specificity']:.3f} acc {m['accuracy']:.3f}"
