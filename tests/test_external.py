"""External validation: predict's CSV of a site's labelled patients against the model's card."""

from __future__ import annotations

import codecs
import csv
import json

import numpy as np
import pytest
from scipy.optimize import brentq
from sklearn.metrics import roc_auc_score

from lnm_jax.evaluation.external import ExternalValidationError, external_lines, external_validation
from lnm_jax.evaluation.metrics import sigmoid

STATE = "ab" * 32


def _site(tmp_path, n=300, prevalence=0.15, shift=2.0, state=STATE, unlabelled=0, seed=0):
    """A site whose patients a model over-predicts (its logits ``shift`` above the truth), as
    predict writes them (6 decimals), and a card of that model."""
    r = np.random.default_rng(seed)
    truth = r.normal(np.log(prevalence / (1 - prevalence)), 1.5, n)
    y = (r.random(n) < sigmoid(truth)).astype(int)
    p = np.round(sigmoid(truth + shift), 6)
    path = tmp_path / "p.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["patient_id", "prob_lnm", "pred_at_0.5", "lnm", "model_state_sha256"])
        for i in range(n):
            w.writerow([f"S{i:03d}", f"{p[i]:.6f}", int(p[i] >= 0.5), "" if i < unlabelled else y[i], state])
    card = tmp_path / "metadata.json"
    card.write_text(
        json.dumps(
            {
                "name": "m",
                "state_sha256": STATE,
                "thresholds": {"default": 0.5, "youden_from_val": 0.6},
                "calibration_temperature": 1.3,
                "training_cohort": {"prevalence": 0.5},
            }
        )
    )
    return path, card, y[unlabelled:], p[unlabelled:]


def test_a_cards_temperature_at_its_bound_is_said_not_dropped(tmp_path, capsys):
    """helper-126: a card whose temperature stopped at its search bound gave no number after it and
    no word why; the record's warnings and the console say it."""
    path, card, _, _ = _site(tmp_path, n=80)
    doc = json.loads(card.read_text())
    card.write_text(json.dumps({**doc, "calibration_temperature": 20.0}))
    rec = external_validation(path, card, tmp_path / "v", n_boot=50)
    assert "temperature" not in rec["summary"]["calibration"]
    said = [w for w in rec["warnings"] if "the card's calibration temperature stopped at its search bound" in w]
    assert said == [
        "the card's calibration temperature stopped at its search bound (T = 20): it is no calibration, so no "
        "number after it is given here (the card's warnings say why)"
    ]
    assert said[0] in capsys.readouterr().out + (tmp_path / "v" / "report.md").read_text()
    (tmp_path / "b").mkdir()
    fitted = external_validation(*_site(tmp_path / "b", n=80)[:2], tmp_path / "w", n_boot=50)  # T = 1.3: none
    assert not any("search bound" in w for w in fitted["warnings"])


def test_a_sites_metrics_are_recomputed_independently(tmp_path, capsys):
    """helper-99: a site with another prevalence got probabilities and cut-offs without a word
    (AUC 0.881, mean prediction 0.40 against 0.15 observed, net benefit below treating none);
    the command says each, with the intercept update, from predict's CSV and the card."""
    path, card, y, p = _site(tmp_path, unlabelled=7)
    rec = external_validation(path, card, tmp_path / "v", n_boot=200)
    z = np.log(np.clip(p, 5e-7, 1 - 5e-7)) - np.log1p(-np.clip(p, 5e-7, 1 - 5e-7))
    s = rec["summary"]
    assert s["auc"] == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    a = brentq(lambda a: np.sum(y - sigmoid(a + z)), -10, 10)
    assert rec["intercept_update"] == pytest.approx(a, abs=1e-8) and a < -1  # over-predicted by 2 logits
    assert s["at_threshold"]["threshold"] == 0.6 and s["calibration"]["temperature"] == 1.3
    treat = p >= 0.6
    tp, fp = np.sum(treat & (y == 1)), np.sum(treat & (y == 0))
    nb = rec["net_benefit_at_threshold"]
    assert nb["model"] == pytest.approx(tp / len(y) - fp / len(y) * 0.6 / 0.4)
    assert nb["treat_all"] == pytest.approx(y.mean() - (1 - y.mean()) * 0.6 / 0.4)
    assert rec["site"] == {
        "n": len(y),
        "n_positive": int(y.sum()),
        "prevalence": pytest.approx(y.mean()),
        "mean_predicted": pytest.approx(p.mean(), abs=1e-9),
        "unlabelled_left_out": 7,
        "seen_left_out": {},
    }
    for f in ("metrics.json", "roc.png", "reliability.png", "decision_curve.png"):
        assert (tmp_path / "v" / f).is_file()
    # a site over-predicted by 2 logits, its slope right: the closed test picks the intercept update
    u = rec["site_update"]
    assert (u["method"], u["chosen_by"], u["slope"]) == ("intercept", "closed test", 1.0)
    assert u["intercept"] == pytest.approx(a, abs=1e-8) and u["closed_test"]["p_recalibration"] < 1e-10
    text = external_lines(rec)
    assert "7 unlabelled patients left out" in text and "calibration in the large for this site: -" in text
    assert "update for this site's next patients: recalibration in the large, sigmoid(-" in text
    # written again over its own folder; never over another
    external_validation(path, card, tmp_path / "v", n_boot=0)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="did not write"):
        external_validation(path, card, tmp_path / "other")


@pytest.mark.parametrize(
    "intercept, slope, method", [(-1.5, 1.0, "intercept"), (-1.0, 0.4, "logistic"), (0.5, 1.8, "logistic")]
)
def test_the_closed_test_picks_the_update_the_site_needs(intercept, slope, method):
    """Vergouwe et al.'s closed test (Stat Med 2017): on 400 patients whose true risk is
    sigmoid(intercept + slope * logit), the simplest update that fits them (each p-value that
    decides here is below 1e-4: no seed's draw is near the level); its likelihood ratio tests
    recomputed from another optimiser's fits (scipy's BFGS on the log-likelihood)."""
    from scipy.optimize import minimize
    from scipy.stats import chi2

    from lnm_jax.evaluation.calibration import site_update

    r = np.random.default_rng(3)
    z = r.normal(-1.0, 2.0, 400)
    y = (r.random(400) < sigmoid(intercept + slope * z)).astype(int)
    u = site_update(y, z)
    assert u["method"] == method, u["closed_test"]

    def ll(eta):
        return float(np.sum(y * eta - np.logaddexp(0, eta)))

    full = minimize(lambda c: -ll(c[0] + c[1] * z), [0.0, 1.0], method="BFGS", options={"gtol": 1e-8}).x
    a = brentq(lambda a: np.sum(y - sigmoid(a + z)), -20, 20)  # the intercept's score equation
    assert u["closed_test"]["p_recalibration"] == pytest.approx(
        chi2.sf(2 * (ll(full[0] + full[1] * z) - ll(z)), 2), rel=1e-3
    )
    decided = [u["closed_test"]["p_recalibration"]]
    assert u["closed_test"]["p_slope"] == pytest.approx(
        chi2.sf(2 * (ll(full[0] + full[1] * z) - ll(a + z)), 1), rel=1e-3, abs=1e-12
    )
    decided += [u["closed_test"]["p_slope"]] if method == "logistic" else []
    assert max(decided) < 1e-4
    want = {"intercept": (a, 1.0), "logistic": tuple(full)}[method]
    assert (u["intercept"], u["slope"]) == pytest.approx(want, abs=1e-4)
    given = site_update(y, z, "none")  # asked for: taken whatever the test says
    assert (given["method"], given["chosen_by"], given["intercept"], given["slope"]) == ("none", "given", 0.0, 1.0)
    with pytest.raises(ValueError, match="update method 'slope'"):
        site_update(y, z, "slope")


def test_the_closed_test_keeps_a_calibrated_model_at_its_level():
    """On sites the model is calibrated for, the closed test updates as often as its level says
    (its first test's size, 0.05): 300 sites of 200 patients, deterministic draws; the count of
    updates is Binomial(300, 0.05) under a correct test (mean 15, sd 3.8), accepted within 4 sd."""
    from lnm_jax.evaluation.calibration import site_update

    r = np.random.default_rng(5)
    updated = 0
    for _ in range(300):
        z = r.normal(-1.0, 2.0, 200)
        y = (r.random(200) < sigmoid(z)).astype(int)
        updated += site_update(y, z)["method"] != "none"
    assert 0 < updated <= 30, updated


def test_a_slope_that_reverses_the_ranking_is_not_an_update():
    """A logistic recalibration with slope <= 0 would reverse the model's ranking: the intercept
    update is taken instead, said."""
    from lnm_jax.evaluation.calibration import site_update

    r = np.random.default_rng(4)
    z = r.normal(0.0, 2.0, 300)
    y = (r.random(300) < sigmoid(-1.5 * z)).astype(int)
    u = site_update(y, z, "logistic")
    assert u["method"] == "intercept" and u["slope"] == 1.0 and "reverse the model's ranking" in u["note"]
    # said as not what was asked for, not "as asked" (helper-116)
    from lnm_jax.evaluation.external import update_line

    assert u["asked"] == "logistic" and "logistic was asked for and not applied" in update_line(u, "v")


@pytest.mark.parametrize(
    "change, said",
    [
        ({"state": "cd" * 32}, r"p.csv, row 1: scored by the model state cdcdcdcdcdcd..., not the card's"),
        ({"prevalence": 1e-6}, "every labelled patient is negative"),
    ],
)
def test_predictions_of_another_model_or_one_class_are_one_line(tmp_path, change, said):
    path, card, *_ = _site(tmp_path, **change)
    with pytest.raises(ExternalValidationError, match=said):
        external_validation(path, card, tmp_path / "v")
    assert not (tmp_path / "v").exists()


def test_a_csv_or_card_of_another_kind_is_one_line(tmp_path):
    path, card, *_ = _site(tmp_path)
    bare = tmp_path / "bare.csv"
    bare.write_text("patient_id,prob_lnm\nA,0.5\n")
    with pytest.raises(ExternalValidationError, match="bare.csv: no column lnm"):
        external_validation(bare, card, tmp_path / "v")
    card.write_text(json.dumps({"name": "m"}))
    with pytest.raises(ExternalValidationError, match="metadata.json: no 'thresholds' field"):
        external_validation(path, card, tmp_path / "v")


def test_predict_counts_the_labelled_rows_it_points_to_external_validation_for(tmp_path):
    from lnm_jax.cli import _labelled_rows

    path, *_ = _site(tmp_path, unlabelled=11)
    assert _labelled_rows(path) == 300 - 11


def test_evaluates_csv_repeated_ids_and_a_folder_card_are_refused(tmp_path, capsys):
    """helper-102: evaluate's predictions.csv (the training cohort's val and test, its split
    column ignored) was scored as a site; repeated ids were counted twice (prevalence 0.167 read
    0.243); a CSV without the model-state column passed unsaid; a folder given as the card."""
    path, card, *_ = _site(tmp_path)
    rows = path.read_text().splitlines()
    split = tmp_path / "eval.csv"
    split.write_text("\n".join([rows[0] + ",split"] + [r + ",test" for r in rows[1:]]) + "\n")
    with pytest.raises(ExternalValidationError, match="has a split column: it is evaluate's predictions"):
        external_validation(split, card, tmp_path / "v")
    twice = tmp_path / "twice.csv"
    twice.write_text("\n".join(rows + rows[1:5]) + "\n")
    with pytest.raises(ExternalValidationError, match="patient_id S000, S001, S002 and 1 more on more than one row"):
        external_validation(twice, card, tmp_path / "v")
    with pytest.raises(ExternalValidationError, match="is a folder: give its metadata.json"):
        external_validation(path, card.parent, tmp_path.parent / f"{tmp_path.name}_v")
    bare = tmp_path / "bare.csv"
    bare.write_text("\n".join(",".join(r.split(",")[:4]) for r in rows) + "\n")
    external_validation(bare, card, tmp_path / "v", n_boot=0)
    assert "has no model_state_sha256 column: whether the card's model scored it is not checked" in (
        capsys.readouterr().err
    )


def test_a_small_site_is_warned_of_and_the_report_is_kept(tmp_path):
    """helper-104: 4 positives gave "AUC 0.938, sens 1.000" and an intercept update unsaid, and
    nothing of what was printed was written down."""
    path, card, y, _ = _site(tmp_path, n=30, seed=3)
    rec = external_validation(path, card, tmp_path / "v", n_boot=0, seed=5)
    said = f"site: {y.sum()} positive and {len(y) - y.sum()} negative"
    assert rec["warnings"] and rec["warnings"][0].startswith(said)
    assert rec["bootstrap"] == {"resamples": 0, "seed": 5}
    report = (tmp_path / "v" / "report.md").read_text()
    assert external_lines(rec) in report and "WARNING: site:" in report


def test_a_sites_csv_saved_again_by_a_spreadsheet_reads_as_a_manifest_does(tmp_path):
    """A site's labels are often typed into predict's CSV in a spreadsheet, which saves it again:
    read through the manifest's table reader (helper-106's exports), so labels written 1.0,
    CRLF and a byte-order mark read as the original, and a semicolon export or a quote left open
    (the rows after it read as one cell) are one line naming it."""
    path, card, *_ = _site(tmp_path, unlabelled=3)
    want = external_validation(path, card, tmp_path / "v", n_boot=50)["summary"]
    rows = path.read_text().splitlines()
    again = tmp_path / "again.csv"
    cells = [r.split(",") for r in rows[1:]]
    labelled = [",".join([*c[:3], f"{c[3]}.0" if c[3] else "", *c[4:]]) for c in cells]  # 1 -> 1.0
    again.write_bytes(codecs.BOM_UTF8 + "\r\n".join([rows[0], *labelled]).encode())
    got = external_validation(again, card, tmp_path / "v2", n_boot=50)["summary"]
    assert got["auc"] == want["auc"] and got["n"] == want["n"]
    again.write_text("\n".join(r.replace(",", ";") for r in rows) + "\n")
    with pytest.raises(ExternalValidationError, match="the delimiter looks like ';'"):
        external_validation(again, card, tmp_path / "v3")
    again.write_text("\n".join([rows[0], f'"{rows[1]}', *rows[2:]]) + "\n")
    with pytest.raises(ExternalValidationError, match=r"again.csv: line 2: a quoted cell begins in this row and never"):
        external_validation(again, card, tmp_path / "v3")
    # every cell quoted, one left open: it closes at the next row's first quote (helper-108: two
    # patients had been left out in silence, one counted as "seen")
    quoted = ['"' + r.replace(",", '","') + '"' for r in rows]
    quoted[5] = quoted[5][:-1]
    again.write_text("\n".join(quoted) + "\n")
    with pytest.raises(ExternalValidationError, match=r"line 7 \(in the row that begins on line 6\): text follows"):
        external_validation(again, card, tmp_path / "v3")
    # a quote that closes a row later, the rows between swallowed into one cell
    swallowed = [*rows[:3], rows[3] + ',"note', rows[4], rows[5] + '"', *rows[6:]]
    again.write_text("\n".join([rows[0] + ",note", *swallowed[1:]]) + "\n")
    with pytest.raises(
        ExternalValidationError, match=r"line 4, column 'note': a quoted cell begins here .* 2 of which"
    ):
        external_validation(again, card, tmp_path / "v3")


def test_the_runs_own_patients_are_left_out_and_counted(tmp_path, capsys):
    """predict --workdir marks the run's training and validation patients (seen_by_run): a site's
    CSV that holds them is scored without them, counted by subset (helper-104: their
    optimistic probabilities had been a site's); every labelled patient seen is refused."""
    path, card, y, p = _site(tmp_path)
    rows = path.read_text().splitlines()
    marks = ["train" if i % 7 == 0 else "val" if i % 11 == 0 else "" for i in range(len(rows) - 1)]
    path.write_text("\n".join([rows[0] + ",seen_by_run", *(r + "," + m for r, m in zip(rows[1:], marks))]) + "\n")
    rec = external_validation(path, card, tmp_path / "v", n_boot=50)
    kept = np.array([m == "" for m in marks])
    assert rec["site"]["seen_left_out"] == {"train": marks.count("train"), "val": marks.count("val")}
    assert rec["summary"]["auc"] == pytest.approx(roc_auc_score(y[kept], p[kept]), abs=1e-12)
    assert rec["site"]["n"] == kept.sum()
    said = external_lines(rec)
    assert (
        f"{marks.count('train')} training and {marks.count('val')} validation patients of the model's run left out"
        in said
    )
    assert "no seen_by_run column" not in capsys.readouterr().err
    path.write_text("\n".join([rows[0] + ",seen_by_run", *(r + ",train" for r in rows[1:])]) + "\n")
    with pytest.raises(ExternalValidationError, match="every labelled patient is one the model has seen"):
        external_validation(path, card, tmp_path / "v2")
    # the site's positives all the run's own: one class left, said with what was left out (helper-120)
    path.write_text("\n".join([rows[0] + ",seen_by_run", *(r + ("," + "train" * int(t)) for r, t in zip(rows[1:], y))]))
    with pytest.raises(ExternalValidationError, match=rf"every labelled patient is negative \(after {int(y.sum())} "):
        external_validation(path, card, tmp_path / "v2")
    # any other value is not predict's (helper-108: 'no' had left 15 patients out as seen)
    path.write_text("\n".join([rows[0] + ",seen_by_run", *(r + ",no" for r in rows[1:])]) + "\n")
    with pytest.raises(ExternalValidationError, match=r"row 1: seen_by_run 'no' is not train or val"):
        external_validation(path, card, tmp_path / "v2")


def test_a_sites_intercept_update_is_applied_to_its_next_patients(triple_run, copy_run, tiny_cohort, tmp_path, capsys):
    """predict --site-update: the site's updated probability sigmoid(logit + a) beside the model's,
    a from external validation's record (helper-104: the update was printed and applied
    nowhere). On the patients it was fitted to, its mean is their prevalence (the score equation
    of the intercept's maximum likelihood fit: sum(y - p) = 0), up to the logits' recovery from
    6 decimals. A record of another model state, or edited, is refused in one line."""
    from lnm_jax.evaluation.evaluate import predict_manifest
    from lnm_jax.fileio import sealed

    run = copy_run(triple_run)
    test = set(run.split.subset("test"))
    base = tiny_cohort.parent
    with tiny_cohort.open() as f:
        rows = [r for r in csv.DictReader(f) if r["patient_id"] in test]
    site = tmp_path / "site.csv"
    with site.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["patient_id", "bmode", "ceus", "us_lnm", "lnm"])
        w.writeheader()
        w.writerows(
            {**{k: r[k] for k in w.fieldnames}, "bmode": base / r["bmode"], "ceus": base / r["ceus"]} for r in rows
        )
    predict_manifest(run, site, tmp_path / "site_probs.csv")
    scored = list(csv.DictReader((tmp_path / "site_probs.csv").open()))
    state = scored[0]["model_state_sha256"]
    card = tmp_path / "metadata.json"
    card.write_text(
        json.dumps(
            {
                "name": "m",
                "state_sha256": state,
                "thresholds": {"youden_from_val": 0.5},
                "calibration_temperature": None,
                "training_cohort": {"prevalence": 0.5},
            }
        )
    )
    rec = external_validation(tmp_path / "site_probs.csv", card, tmp_path / "v", n_boot=50, update="intercept")
    a = rec["intercept_update"]
    assert rec["site_update"]["intercept"] == a and rec["site_update"]["chosen_by"] == "given"
    capsys.readouterr()
    predict_manifest(run, site, tmp_path / "next.csv", site_update=tmp_path / "v")
    assert (
        f"prob_lnm_site: sigmoid(logit {a:+.3f}), the intercept update (as asked) fitted on {len(rows)} patients"
        in (capsys.readouterr().err)
    )
    got = list(csv.DictReader((tmp_path / "next.csv").open()))
    updated = np.array([float(g["prob_lnm_site"]) for g in got])
    y = np.array([int(g["lnm"]) for g in got])
    assert [g["prob_lnm"] for g in got] == [s["prob_lnm"] for s in scored]  # the model's own, unchanged
    # each probability is written to 6 decimals (5e-7) and a is fitted to logits recovered from
    # them (each off by 5e-7 / p(1-p), moving sigmoid(z + a) by at most ~5e-7 e^|a| here): 2e-6
    assert abs(updated.mean() - y.mean()) < 2e-6, (updated.mean(), y.mean())
    # logistic recalibration, sigmoid(a' + b z): its two score equations, sum(y - p) = 0 and
    # sum((y - p) z) = 0, hold on these patients (z recovered from 6 decimals: |z| < 15 here)
    external_validation(tmp_path / "site_probs.csv", card, tmp_path / "vl", n_boot=0, update="logistic")
    predict_manifest(run, site, tmp_path / "next_l.csv", site_update=tmp_path / "vl")
    got = list(csv.DictReader((tmp_path / "next_l.csv").open()))
    updated = np.array([float(g["prob_lnm_site"]) for g in got])
    p = np.array([float(s["prob_lnm"]) for s in scored])
    z = np.log(p) - np.log1p(-p)
    assert abs(updated.mean() - y.mean()) < 2e-6 and abs(np.mean((y - updated) * z)) < 3e-5
    # the closed test on 8 patients: whatever it chooses, the column is that update of the logit
    chosen = external_validation(tmp_path / "site_probs.csv", card, tmp_path / "vc", n_boot=0)["site_update"]
    predict_manifest(run, site, tmp_path / "next_c.csv", site_update=tmp_path / "vc")
    got = list(csv.DictReader((tmp_path / "next_c.csv").open()))
    expect = sigmoid(chosen["intercept"] + chosen["slope"] * z)
    assert np.abs(np.array([float(g["prob_lnm_site"]) for g in got]) - expect).max() < 1e-5
    metrics = tmp_path / "v" / "metrics.json"
    record = json.loads(metrics.read_text())
    record["intercept_update"] = a + 1  # edited by hand: its seal says so
    metrics.write_text(json.dumps(record))
    with pytest.raises(ValueError, match="metrics.json"):
        predict_manifest(run, site, tmp_path / "edited.csv", site_update=metrics)
    record = {k: v for k, v in record.items() if k != "record_sha256"} | {"state_sha256": "cd" * 32}
    metrics.write_text(json.dumps(sealed(record)))
    with pytest.raises(ValueError, match=r"fitted for the model state cdcdcdcdcdcd\.\.\., not this model's"):
        predict_manifest(run, site, tmp_path / "other.csv", site_update=tmp_path / "v")
    metrics.write_text(json.dumps(sealed(record | {"state_sha256": None})))  # a record that names no state
    with pytest.raises(ValueError, match="names no model state: an update holds only for the model"):
        predict_manifest(run, site, tmp_path / "other.csv", site_update=tmp_path / "v")
    # a card without a state (older, or edited): the record names the state the CSV's rows name
    # (helper-108: it had recorded none, and the update was applied to another model)
    card.write_text(json.dumps({**json.loads(card.read_text()), "state_sha256": None}))
    assert external_validation(tmp_path / "site_probs.csv", card, tmp_path / "v4", n_boot=50)["state_sha256"] == state
    assert not any((tmp_path / n).exists() for n in ("edited.csv", "other.csv"))


def test_a_card_that_names_no_model_state_is_said_unchecked(tmp_path, capsys):
    """helper-114: an earlier lnm-jax's card names no model state, and another model's
    predictions were scored against its cut-off and temperature without a word; the record and
    the lines say it is unchecked. Where neither names one, the update's line says predict
    --site-update cannot apply it (predict refuses such a record) instead of pointing there."""
    path, card, *_ = _site(tmp_path)
    md = json.loads(card.read_text())
    card.write_text(json.dumps({k: v for k, v in md.items() if k != "state_sha256"}))
    rec = external_validation(path, card, tmp_path / "v", n_boot=0)
    assert any("names no model state" in w and "they name the state ababababab" in w for w in rec["warnings"])
    assert "WARNING: " in external_lines(rec) and "predict --site-update" in external_lines(rec)
    with path.open() as f:
        rows = [{k: v for k, v in r.items() if k != "model_state_sha256"} for r in csv.DictReader(f)]
    bare = tmp_path / "bare.csv"
    with bare.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    rec = external_validation(bare, card, tmp_path / "v2", n_boot=0)
    assert rec["state_sha256"] is None
    assert "so predict --site-update cannot apply it" in external_lines(rec)
    assert "or an earlier lnm-jax's" in capsys.readouterr().err


def test_a_site_whose_logits_separate_the_classes_still_gets_its_update():
    """helper-115: where the logits separate the classes logistic recalibration has no finite
    slope, and no update at all had been given, even the intercept asked for. The closed test
    then compares the intercept update with the model (1 df); asked for, the intercept and none
    are given, and logistic is the intercept's, said."""
    from scipy.stats import chi2

    from lnm_jax.evaluation.calibration import site_update

    z = np.linspace(-3, 1, 40)
    y = (z > -0.2).astype(int)  # separated; the model over-predicts this site (mean risk 0.43 vs 0.30)
    u = site_update(y, z)
    a = brentq(lambda a: np.sum(y - sigmoid(a + z)), -20, 20)
    ll = lambda eta: float(np.sum(y * eta - np.logaddexp(0, eta)))  # noqa: E731
    p = chi2.sf(2 * (ll(a + z) - ll(z)), 1)
    assert u["closed_test"]["p_slope"] is None and u["closed_test"]["p_recalibration"] == pytest.approx(p, rel=1e-6)
    assert u["method"] == ("intercept" if p < 0.05 else "none") and "separate the classes" in u["note"]
    assert (site_update(y, z, "intercept")["method"], site_update(y, z, "none")["method"]) == ("intercept", "none")
    given = site_update(y, z, "logistic")
    assert given["method"] == "intercept" and given["intercept"] == pytest.approx(a, abs=1e-6)
    assert "the intercept update is taken instead" in given["note"]
    # helper-125: logits of one value (an AUC of 0.5) have no slope to fit, said as such, not as separation;
    # the intercept is the site's log-odds less the logit (here 0: logit(0.25))
    tied = site_update(np.array([1, 0, 0, 0] * 5), np.zeros(20))
    assert tied["intercept"] == pytest.approx(np.log(1 / 3), abs=1e-6) and tied["closed_test"]["p_slope"] is None
    assert tied["note"].startswith("the logits hold one value (0), so logistic recalibration has no slope to fit")
    assert "separate" not in tied["note"]


def test_a_site_update_folder_that_is_not_external_validations_is_said_so(tmp_path):
    """helper-116: a folder of another kind gave only "…/metrics.json: No such file or directory"."""
    from lnm_jax.serving import read_site_update

    with pytest.raises(
        ValueError, match=r"holds no metrics.json: give the --out folder of lnm-jax external-validation"
    ):
        read_site_update(tmp_path, STATE)


def test_a_site_update_fitted_on_few_events_is_said_to_rest_on_them():
    """helper-120: an intercept update fitted on one positive of 8 patients was applied by
    predict --site-update with "in-sample" its only caveat."""
    from lnm_jax.serving import FEW_EVENTS, SiteUpdate

    few = SiteUpdate(-2.447, 1.0, "intercept", "closed test", "8 patients (1 positive) of s.csv", None, 1)
    assert few.note().endswith(
        f"; fitted on 1 patient(s) of a class, fewer than {FEW_EVENTS}: an update that rests on so few moves with "
        "each one (its CI is in external validation's record)"
    ), few.note()
    assert "fewer than" not in SiteUpdate(-0.3, 1.0, "intercept", "closed test", "200 patients", None, 80).note()


def test_a_site_every_patient_of_which_a_cut_off_calls_one_class_is_said_so(tmp_path, capsys):
    """Stop 88's trial: a site whose risks sit far above the training site's, every patient of
    which 0.5 and the card's cut-off call positive, was said nothing of beyond the rates; each
    such operating point is warned of as ``evaluate`` warns of a split's. A shift that leaves
    both classes called at a point says nothing of it."""
    path, card, y, p = _site(tmp_path, shift=9.0)
    assert p.min() >= 0.6  # (every patient at or above both cut-offs)
    rec = external_validation(path, card, tmp_path / "v", n_boot=0)
    called = [w for w in rec["warnings"] if " every patient called positive " in w]
    assert [w.split(" every")[0] for w in called] == ["at 0.5", "at the card's cut-off 0.600"], rec["warnings"]
    assert called[0].endswith(
        "(sensitivity 1.000, specificity 0.000): this site's risks sit apart from the "
        "training site's; see calibration in the large and the site's update"
    )
    assert f"WARNING: {called[0]}" in external_lines(rec)
    (tmp_path / "s").mkdir()
    path, card, *_ = _site(tmp_path / "s", shift=0.0)
    assert not [w for w in external_validation(path, card, tmp_path / "w", n_boot=0)["warnings"] if "called" in w]


def test_a_label_in_words_is_said_with_its_number(tmp_path):
    """helper-123: a site's labels written yes/no were "lnm 'no' is not 0 or 1", without the
    number ``validate`` names for the word."""
    path, card, *_ = _site(tmp_path, n=20)
    text = path.read_text().splitlines()
    cells = text[1].split(",")
    cells[3] = "no"
    path.write_text("\n".join([text[0], ",".join(cells), *text[2:]]) + "\n")
    with pytest.raises(
        ExternalValidationError, match=r"p.csv, row 1: lnm 'no' is not 0 or 1: a word .* write 0 for 'no'"
    ):
        external_validation(path, card, tmp_path / "v")
