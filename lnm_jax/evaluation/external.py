"""A model on a site's own labelled patients (external validation: TRIPOD type 4, Collins et al.,
BMJ 2015;350:g7594; TRIPOD+AI, Collins et al., BMJ 2024;385:e078378): ``predict``'s CSV of those
patients, with their pathology labels, read against the model's card (``metadata.json`` of
``evaluate`` or of an export).

What a site needs before it acts on a model trained elsewhere: the AUC with its CI on its own
patients, the card's cut-offs (0.5 and the Youden threshold chosen on the training site's
validation split) at this site's prevalence, mean and weak calibration (Van Calster et al., J
Clin Epidemiol 2016;74:167-176: the intercept with the logit as offset, and the slope), the net
benefit at the card's cut-off against treating everyone (Vickers & Elkin 2006), and the
update a site would apply to its next patients, ``sigmoid(a + b * logit)`` (Steyerberg, *Clinical
Prediction Models*, 2nd ed., ch. 20: none, recalibration in the large or logistic
recalibration, the simplest the site's patients support by Vergouwe et al.'s closed test,
:func:`lnm_jax.evaluation.calibration.site_update`; fitted on these patients, so its effect
here is in-sample). Nothing is re-trained; nothing the run or export holds is written."""

from __future__ import annotations

import dataclasses
import math
import sys
from collections import Counter
from pathlib import Path

import numpy as np
from scipy.special import logit

from lnm_jax import names
from lnm_jax import run_files as F
from lnm_jax.data.cohorts.manifest import binary_word_hint, parse_binary
from lnm_jax.data.cohorts.tables import (
    TableTextError,
    data_rows,
    delimiter_hint,
    repeated_columns,
    table_reader,
    table_text,
)
from lnm_jax.evaluation import calibration as C
from lnm_jax.evaluation.evaluate import small_split_warnings
from lnm_jax.evaluation.metrics import sigmoid
from lnm_jax.evaluation.plots import plot_decision_curve, plot_reliability, plot_roc
from lnm_jax.evaluation.seen import SUBSET_NAMES
from lnm_jax.evaluation.summary import (
    calls_text,
    format_summary,
    shown_auc_ci,
    summarise_predictions,
    threshold_text,
)
from lnm_jax.export_files import METADATA
from lnm_jax.fileio import atomic_directory, read_json, sealed, write_json, write_text
from lnm_jax.output_guard import guard_output
from lnm_jax.serving import PREDICTION_COLUMNS

REPORT = "report.md"  # the printed lines, with the card's test row beside the site's
PROB_DECIMALS = 6  # predict writes prob_lnm with 6 decimals: logits are recovered from those
PROB_FLOOR = 10.0**-PROB_DECIMALS / 2  # 0.000000 and 1.000000 read as the nearest values a rounding leaves


def _temperature_unused(model: dict) -> list[str]:
    """The warning of a card whose calibration temperature stopped at its search bound, so that
    no number after it is given (helper-126: left out without a word, where the docs promise
    numbers before and after the card's temperature)."""
    t = model.get("temperature_at_bound")
    if t is None:
        return []
    return [
        f"the card's calibration temperature stopped at its search bound (T = {t:.3g}): it is no calibration, so "
        "no number after it is given here (the card's warnings say why)"
    ]


class ExternalValidationError(ValueError):
    """A predictions CSV or card that cannot be read as a site's scored patients: one line naming
    the file, the row or the field."""


def read_card(path: Path | str) -> dict:
    """What external validation takes from a model's ``metadata.json``: ``youden`` (None where
    none was chosen), ``temperature`` (None where none was fitted or it stopped at its search
    bound), ``temperature_at_bound`` (the card's temperature where it stopped there, else None),
    ``training_prevalence``, ``state`` (the model's state digest or None), ``name``."""
    path = Path(path)
    if path.is_dir():
        raise ExternalValidationError(f"--card {path} is a folder: give its metadata.json ({path / METADATA})")
    md = read_json(path)
    try:
        thresholds, cohort = md["thresholds"], md["training_cohort"]
        youden, temperature = thresholds["youden_from_val"], md["calibration_temperature"]
        prevalence = cohort["prevalence"]
    except (KeyError, TypeError) as e:
        raise ExternalValidationError(
            f"{path}: no {e} field: give the metadata.json that lnm-jax evaluate or export wrote"
        ) from None
    at_bound = temperature if temperature is not None and C.at_bound(temperature) else None
    return {
        "youden": youden,
        "temperature": None if at_bound is not None else temperature,
        "temperature_at_bound": at_bound,
        "training_prevalence": prevalence,
        "state": md.get(names.STATE_DIGEST),
        "name": md.get("name"),
    }


@dataclasses.dataclass(frozen=True)
class Scored:
    """A site's scored patients, as :func:`read_scored` reads predict's CSV."""

    ids: list[str]
    labels: np.ndarray  # int [N]
    logits: np.ndarray  # float64 [N], recovered from the CSV's 6-decimal probabilities
    unlabelled: int  # rows without a label, left out
    seen: dict[str, int]  # rows of the run's own patients, left out, by subset ("train", "val")
    state: str | None  # the model state the rows name (model_state_sha256), None where none does


def read_scored(path: Path | str, state: str | None) -> Scored:
    """A site's labelled patients from ``predict``'s CSV: rows without a label are left out
    (counted), and so are rows :data:`names.SEEN_COLUMN` marks as the run's training or
    validation patients (counted by subset: their probabilities are optimistic, helper-104;
    any other value than ``train``/``val`` refused); each probability in [0, 1], its logit
    recovered from its 6 decimals (a probability printed as 0 or 1 read as half a unit inside);
    its ``model_state_sha256`` one state throughout, and ``state`` where both are known
    (predictions of another model are refused). Read as a manifest is (:func:`data_rows`): a
    quoted cell that swallowed rows is refused on its line."""
    path = Path(path)
    try:  # read as a manifest is (a site's labels are often added in a spreadsheet, then saved again)
        text = table_text(path)
    except (OSError, TableTextError) as e:
        raise ExternalValidationError(f"{path}: {e}") from None
    reader = table_reader(text)
    header = reader.fieldnames or []
    if twice := repeated_columns(header):
        raise ExternalValidationError(f"{path}: column {', '.join(map(repr, twice))} is named more than once")
    need = [*PREDICTION_COLUMNS, names.LABEL]
    if missing := [c for c in need if c not in header]:
        hint = delimiter_hint(header) or (
            "give the CSV lnm-jax predict (or an export's predict.py) wrote for a manifest with the lnm column"
        )
        raise ExternalValidationError(f"{path}: no column {', '.join(missing)}: {hint}")
    if "split" in header:  # (helper-102: the training site's val and test, scored as a "site")
        raise ExternalValidationError(
            f"{path} has a split column: it is evaluate's predictions of the training cohort (its validation "
            "patients chose the cut-off and the temperature), not a site's; give predict's CSV of the site's "
            "manifest"
        )
    ids, labels, probs, unlabelled, seen, states = [], [], [], 0, Counter(), {}
    try:
        rows = list(data_rows(reader, text, _is_scored_row))
    except TableTextError as e:
        raise ExternalValidationError(f"{path}: {e}") from None
    for at, row in rows:
        subset = (row.get(names.SEEN_COLUMN) or "").strip()
        if subset not in ("", *SUBSET_NAMES):
            raise ExternalValidationError(
                f"{path}, row {at}: {names.SEEN_COLUMN} {subset!r} is not {' or '.join(SUBSET_NAMES)} (the run's "
                "patient) or empty (a patient it has not seen), as predict writes it"
            )
        given = parse_binary(row.get(names.LABEL) or "")  # as a manifest's label is read
        if given is None:
            unlabelled += 1
            continue
        if isinstance(given, str):
            hint = binary_word_hint(given)
            raise ExternalValidationError(f"{path}, row {at}: {names.LABEL} {given!r} is not 0 or 1{hint}")
        try:
            p = float(row[PREDICTION_COLUMNS[1]])
        except (TypeError, ValueError):  # (None: a row short of that cell)
            p = math.nan
        if not 0.0 <= p <= 1.0:
            raise ExternalValidationError(
                f"{path}, row {at}: {PREDICTION_COLUMNS[1]} {row[PREDICTION_COLUMNS[1]]!r} is not a probability"
            )
        stated = (row.get(names.MODEL_STATE_COLUMN) or "").strip()
        if state and stated and stated != state:
            raise ExternalValidationError(
                f"{path}, row {at}: scored by the model state {stated[:12]}..., not the card's "
                f"{state[:12]}...: predict the site's patients with the model this card describes"
            )
        if stated:
            states.setdefault(stated, at)
        if len(states) > 1:
            (a, first), (b, _) = states.items()
            raise ExternalValidationError(
                f"{path}, row {at}: scored by the model state {b[:12]}..., row {first} by {a[:12]}...: one model's "
                "predictions, please"
            )
        if subset:
            seen[subset] += 1
            continue
        ids.append((row.get(names.PATIENT_ID) or "").strip())
        labels.append(int(given))
        probs.append(p)
    if not ids:
        raise ExternalValidationError(
            f"{path}: no patient has a label (the lnm column is empty throughout)"
            if not seen
            else f"{path}: every labelled patient is one the model has seen ({_seen_text(seen)}; column "
            f"{names.SEEN_COLUMN}): a site's patients the model was not fitted, chosen or calibrated on are needed"
        )
    if repeated := sorted(i for i, n in Counter(ids).items() if n > 1):  # (helper-102: counted twice, prevalence moved)
        shown = ", ".join(repeated[:3]) + (f" and {len(repeated) - 3} more" if len(repeated) > 3 else "")
        raise ExternalValidationError(f"{path}: patient_id {shown} on more than one row: each patient once")
    if state and names.MODEL_STATE_COLUMN not in header:
        print(
            f"note: {path} has no {names.MODEL_STATE_COLUMN} column: whether the card's model scored it is not checked",
            file=sys.stderr,
        )
    if names.SEEN_COLUMN not in header:
        print(
            f"note: {path} has no {names.SEEN_COLUMN} column (an export's predictions, or an earlier lnm-jax's): "
            "whether these are the model's "
            "training or validation patients is not checked (predict --workdir checks it)",
            file=sys.stderr,
        )
    p = np.clip(np.asarray(probs, np.float64), PROB_FLOOR, 1.0 - PROB_FLOOR)
    return Scored(ids, np.asarray(labels, int), logit(p), unlabelled, dict(seen), next(iter(states), None))


def _is_scored_row(cells: dict) -> bool:
    """Whether a line inside a quoted cell, read as a record, is one of predict's rows
    (:func:`data_rows`' ``looks_like_row``): a patient ID and a probability."""
    try:
        p = float(cells.get(PREDICTION_COLUMNS[1]) or "nan")
    except ValueError:
        return False
    return bool((cells.get(names.PATIENT_ID) or "").strip()) and 0.0 <= p <= 1.0


def _seen_text(seen: dict[str, int]) -> str:
    """``{"train": 3, "val": 1}`` as said: '3 training and 1 validation patients'."""
    return " and ".join(f"{n} {SUBSET_NAMES.get(s, repr(s))}" for s, n in sorted(seen.items())) + " patients"


def external_validation(
    predictions: Path | str,
    card: Path | str,
    out: Path | str,
    *,
    ci_level: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
    update: str = "closed-test",
) -> dict:
    """Writes ``out/metrics.json`` (sealed; ``site``, the summary of :mod:`summary` with the
    card's Youden threshold and temperature, ``intercept_update`` (calibration in the large),
    ``site_update`` (:func:`lnm_jax.evaluation.calibration.site_update` by ``update``, one of
    :data:`lnm_jax.names.UPDATE_CHOICES`; None where its fits do not converge),
    ``net_benefit_at_threshold``)
    and the ROC, reliability and decision-curve figures of ``predictions`` (predict's CSV of a
    site's labelled patients) against ``card`` (the model's metadata.json); returns the record.
    :class:`ExternalValidationError` for a CSV or card that cannot be read as such; ``out`` is
    checked before anything is read and written whole (an earlier folder this wrote replaced)."""
    predictions, card = Path(predictions), Path(card)
    out = guard_output(
        out,
        inputs=[predictions, card],
        ours=lambda folder: (folder / F.METRICS).is_file() and "intercept_update" in read_json(folder / F.METRICS),
        kind="folder",
        can_overwrite=False,
    )
    model = read_card(card)
    scored = read_scored(predictions, model["state"])
    labels, logits = scored.labels, scored.logits
    if labels.min() == labels.max():
        left = f" (after {_seen_text(scored.seen)} the model's run saw were left out)" if scored.seen else ""
        raise ExternalValidationError(
            f"{predictions}: every labelled patient is {'positive' if labels[0] else 'negative'}{left}: "
            "an AUC, a calibration slope and a cut-off's sensitivity and specificity need both classes"
        )
    summary = summarise_predictions(
        labels,
        logits,
        threshold=model["youden"],
        temperature=model["temperature"],
        ci_level=ci_level,
        n_boot=n_boot,
        seed=seed,
    )
    try:
        updated = C.site_update(labels, logits, update)
    except ValueError as e:  # (separation: no finite fit; an unknown method is the caller's)
        if update not in names.UPDATE_CHOICES:
            raise
        updated = None
        print(f"note: no update for this site: {e}", file=sys.stderr)
    probs = sigmoid(logits)
    cut = model["youden"] if model["youden"] is not None else 0.5
    benefit, treat_all = (
        C.net_benefit(labels, probs, np.array([cut]))[0],
        C.net_benefit(labels, np.ones_like(probs), np.array([cut]))[0],
    )
    record = {
        "predictions": str(predictions.resolve()),
        "card": str(card.resolve()),
        "model": model["name"],
        # the card's, else the one the CSV's rows name (helper-108: a card without one had let
        # predict --site-update apply this site's update to any model)
        names.STATE_DIGEST: model["state"] or scored.state,
        "site": {
            "n": int(len(labels)),
            "n_positive": int(labels.sum()),
            "prevalence": float(labels.mean()),
            "mean_predicted": float(probs.mean()),
            "unlabelled_left_out": scored.unlabelled,
            # the run's own training and validation patients (predict's seen_by_run column), by subset
            "seen_left_out": scored.seen,
        },
        "training_prevalence": model["training_prevalence"],
        "summary": summary,
        # sigmoid(logit + a) matches this site's mean risk (in-sample here; a new site's first update)
        "intercept_update": summary["calibration"]["intercept"],
        # what predict --site-update applies to the site's next patients: sigmoid(intercept + slope * logit)
        "site_update": updated,
        "net_benefit_at_threshold": {"threshold": cut, "model": float(benefit), "treat_all": float(treat_all)},
        "bootstrap": {"resamples": int(n_boot), "seed": int(seed)},
        # a site of few patients of a class (helper-104: 4 positives gave "AUC 0.938, sens 1.000" unsaid)
        "warnings": small_split_warnings({"splits": {"site": summary}})
        + _one_class_calls(summary, model["youden"])
        + _unchecked_card(card, model, scored)
        + _temperature_unused(model),
    }
    record["out"] = str(out)
    with atomic_directory(out, replace=True) as fresh:
        write_json(fresh / F.METRICS, sealed(record))
        method, interval = shown_auc_ci(summary)
        title = f"{model['name'] or 'model'} on {predictions.name}"
        plot_roc(
            {"site": (labels, probs, summary["auc"], interval)},
            fresh / F.ROC,
            title=title,
            ci_name=f"{ci_level:.0%} {method} CI",
        )
        curves = {"site": (labels, probs)}
        if model["temperature"] is not None:
            t = model["temperature"]
            curves[f"site, T={t:.2f} (the card's)"] = (labels, C.calibrated(logits, t))
        plot_reliability(curves, fresh / F.RELIABILITY, title=title)
        plot_decision_curve({"site": (labels, probs)}, fresh / F.DECISION_CURVE, title=title)
        write_text(fresh / REPORT, report_markdown(record))  # what the console says, kept (helper-104)
    return record


def _one_class_calls(summary: dict, youden: float | None) -> list[str]:
    """A line per operating point (0.5, the card's cut-off) that calls this site's patients
    all one class, or misses a class whole (:func:`~lnm_jax.evaluation.summary.calls_text`), as
    ``evaluate`` says of a split (stop 88's trial: a site every patient of which 0.5 called
    negative was said nothing of): a site whose risks sit apart from the training site's."""
    points = [("0.5", summary["at_0.5"])]
    if youden is not None and summary.get("at_threshold"):
        points.append((f"the card's cut-off {threshold_text(youden)}", summary["at_threshold"]))
    out = []
    for name, at in points:
        if calls := calls_text(at["sensitivity"], at["specificity"]):
            out.append(
                f"at {name} {calls} (sensitivity {at['sensitivity']:.3f}, specificity {at['specificity']:.3f}): this "
                "site's risks sit apart from the training site's; see calibration in the large and the site's update"
            )
    return out


def _unchecked_card(card: Path, model: dict, scored: Scored) -> list[str]:
    """The warning where the card names no model state (an earlier lnm-jax's, helper-114: another
    model's predictions had been scored against its cut-off and temperature unsaid)."""
    if model["state"]:
        return []
    return [
        f"{card} names no model state (written by an earlier lnm-jax?): that these predictions are its model's, "
        "whose cut-off and temperature are applied here, is not checked"
        + (f" (they name the state {scored.state[:12]}...)" if scored.state else "")
        + "; evaluate the run again with this lnm-jax for a card that names it"
    ]


def external_lines(record: dict) -> str:
    """What ``lnm-jax external-validation`` prints: the site's summary at the card's cut-offs,
    prevalence against training's and mean predicted risk, calibration in the large, the site's
    update (:func:`update_line`), the net
    benefit at the card's cut-off, and where the outputs are."""
    s, site = record["summary"], record["site"]
    lines = [format_summary("site", s, threshold_rule="card youden", fitted_on="the training site's val")]
    a = record["intercept_update"]
    lines.append(
        f"site prevalence {site['prevalence']:.3f} ({site['n_positive']}/{site['n']}; training "
        + (f"{p:.3f}" if (p := record["training_prevalence"]) is not None else "not recorded")
        + f"); mean predicted risk {site['mean_predicted']:.3f}"
        + (f"; {site['unlabelled_left_out']} unlabelled patients left out" if site["unlabelled_left_out"] else "")
        + (
            f"; {_seen_text(seen)} of the model's run left out ({names.SEEN_COLUMN}: their probabilities are "
            "optimistic)"
            if (seen := site.get("seen_left_out"))
            else ""
        )
    )
    if np.isfinite(a):
        lo, hi = s["calibration"]["intercept_ci"]
        lines.append(
            f"calibration in the large for this site: {a:+.2f} ({lo:+.2f} to {hi:+.2f}): sigmoid(logit {a:+.2f}) "
            "matches its mean risk"
        )
    if (u := record.get("site_update")) is not None:
        lines.append(update_line(u, record["out"], bool(record.get(names.STATE_DIGEST))))
    nb = record["net_benefit_at_threshold"]
    worse = nb["model"] < max(0.0, nb["treat_all"])
    lines.append(
        f"net benefit at the card's cut-off {threshold_text(nb['threshold'])}: model {nb['model']:.3f}, treat all "
        f"{nb['treat_all']:.3f}, treat none 0"
        + ("  (below treating none or all: do not act on this cut-off here)" if worse else "")
    )
    lines += [f"WARNING: {w}" for w in record.get("warnings", [])]
    lines.append(f"metrics and figures in {record['out']}")
    return "\n".join(lines)


_UPDATE_WORDS = {
    "none": "none: the model as it is",
    "intercept": "recalibration in the large",
    "logistic": "logistic recalibration",
}


def update_line(u: dict, out: str, applicable: bool = True) -> str:
    """The line of :func:`external_lines` for a record's ``site_update`` ``u`` (``out``: the folder
    ``predict --site-update`` is given; not ``applicable`` where the record names no model
    state, which predict then refuses, helper-114)."""
    test = u["closed_test"]
    tests = f"likelihood ratio p = {test['p_recalibration']:.3g} against the model as it is" + (
        f", {test['p_slope']:.3g} for the slope against the intercept update" if test["p_slope"] is not None else ""
    )
    asked = u.get("asked", u["method"])
    how = (
        f"the simplest the closed test at {test['alpha']:g} supports ({tests}; Vergouwe et al. 2017)"
        if u["chosen_by"] == "closed test"
        else f"as asked ({tests})"
        if asked == u["method"]
        else f"{asked} was asked for and not applied ({tests})"  # (helper-116: it had said "as asked")
    )
    formula = (
        "prob_lnm_site equals prob_lnm"
        if u["method"] == "none"
        else f"sigmoid({u['intercept']:+.3f}"
        + (f" + {u['slope']:.3f} * logit)" if u["method"] == "logistic" else " + logit)")
    )
    return (
        f"update for this site's next patients: {_UPDATE_WORDS[u['method']]}, {formula}: {how}"
        + (f"; {u['note']}" if u.get("note") else "")
        + (
            f" (fitted on these patients: in-sample here; predict --site-update {out} adds it as prob_lnm_site)"
            if applicable
            else " (fitted on these patients: in-sample here; neither the card nor the predictions name a model "
            "state, so predict --site-update cannot apply it: predict the site's patients with this lnm-jax, whose "
            "CSV names it, and run external-validation again)"
        )
    )


def report_markdown(record: dict) -> str:
    """``report.md``: what :func:`external_lines` prints, as a record beside the figures."""
    return (
        f"# External validation of {record['model'] or 'a model'}\n\n"
        f"Predictions: `{record['predictions']}`; card: `{record['card']}`.\n\n"
        "```\n"
        + external_lines(record)
        + "\n```\n\n"
        + (
            "The update is fitted on these patients (in-sample here); confirm it, and choose a cut-off, on the "
            "site's next ones."
            if record.get("site_update")
            else "No update was fitted (see above); choose a cut-off on the site's own patients."
        )
        + " Figures: roc.png, reliability.png (Wilson 95% CIs, patients per bin), decision_curve.png.\n"
    )
