"""`lnm-jax reproduce` on a tiny synthetic cohort writes Tables 1-3, every figure and the
report; k-fold mode pools out-of-fold predictions; Table 1 and the BUS-BRA converter."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from support import BACKBONE

from lnm_jax.cli import main
from lnm_jax.data.cohorts.manifest import read_manifest
from lnm_jax.protocol.cohort_table import cohort_table
from lnm_jax.protocol.reproduce import plan_runs

TINY = [
    "--config.data.image_size=32",
    f"--config.model.backbone={BACKBONE}",
    "--config.model.width=4",
    "--config.train.epochs=1",
    "--config.train.batch_size=8",
    "--config.train.eval_batch_size=16",
    "--config.eval.bootstrap=50",
    "--config.eval.fold_bn=False",  # predict with the loop's own eval program (BN folding: test_models)
    "--config.protocol.permutations=99",
]


def test_reproduce_writes_all_tables_figures_and_the_report(tiny_cohort, tmp_path):
    work = tmp_path / "protocol"
    # Table 2: two backbones on B-mode; Table 3: four of the five settings (CEUS alone takes the
    # code path of B-mode alone) -- the settings come from the config, the machinery is the same
    grid = [
        f"--config.protocol.backbones=('{BACKBONE}', 'vgg11')",
        "--config.protocol.table2_modalities=('bmode',)",
        "--config.protocol.settings=('us_lnm', 'bmode', 'dual', 'triple')",
    ]
    rc = main(["reproduce", "--workdir", str(work), "--manifest", str(tiny_cohort), *TINY, *grid])
    assert rc == 0
    res = json.loads((work / "results.json").read_text())
    # Table 1: every column of the manifest, both groups, a p-value per variable
    variables = {r["variable"] for r in res["table1"]["rows"]} - {""}
    assert {"lnm", "us_lnm", "age", "sex", "nodule_size_mm"} <= variables
    assert res["table1"]["groups"] == {"train+validation": 32, "test": 8}
    # Table 2 on validation, Table 3 on test
    assert [(r["setting"], r["backbone"]) for r in res["table2"]["rows"].values()] == [
        ("bmode", BACKBONE),
        ("bmode", "vgg11"),
    ]
    assert res["table2"]["subset"] == "val"
    assert [r["setting"] for r in res["table3"]["rows"].values()] == ["us_lnm", "bmode", "dual", "triple"]
    for row in res["table3"]["rows"].values():
        assert row["n"] == 8 and 0 <= row["auc"] <= 1
        assert row["auc_ci_delong"][0] <= row["auc"] <= row["auc_ci_delong"][1]
        assert set(row["permutation_p"]) == {"sensitivity", "specificity", "accuracy"}
        assert all(1 / 100 <= p <= 1 for p in row["permutation_p"].values())
        assert row["permutation_n"] == 99  # stored beside the p-values: their floor is 1 / 100
    assert set(res["table3"]["delong"]) == {"triple_vs_dual", "triple_vs_us_lnm", "dual_vs_us_lnm"}
    # the flag's row is the flag itself, its operating point the flag's own (helper-85: a model of
    # the flag alone had shown 100% sensitivity and 0% specificity where the flag had 50% and 100%)
    flags = {q.patient_id: q.us_lnm for q in read_manifest(tiny_cohort).patients}
    test = json.loads((work / "runs" / "us_lnm" / "predictions.json").read_text())["test"]
    given, truth = np.array([flags[i] for i in test["patient_id"]]), np.array(test["lnm"])
    at = res["table3"]["rows"]["us_lnm"]["at_threshold"]
    assert at["sensitivity"] == pytest.approx(given[truth == 1].mean())
    assert at["specificity"] == pytest.approx(1 - given[truth == 0].mean())
    # the synthetic cohort has lesion masks: every image run's test maps scored against them
    evidence = res["lesion_evidence"]
    assert set(evidence) == {f"bmode_{BACKBONE}", f"dual_{BACKBONE}", f"triple_{BACKBONE}"}
    assert set(evidence[f"dual_{BACKBONE}"]["summary"]) == {"bmode", "ceus"}
    assert evidence[f"bmode_{BACKBONE}"]["summary"]["bmode"]["all"]["cam"]["images"] == 8
    # the B-mode run with that backbone serves both tables: trained once
    assert sorted(p.name for p in (work / "runs").iterdir()) == sorted(
        ["us_lnm", f"bmode_{BACKBONE}", f"dual_{BACKBONE}", f"triple_{BACKBONE}", "bmode_vgg11"]
    )
    for f in (
        "roc_bmode_backbones.png",
        "roc_settings.png",
        "run_info.json",
        "convergence_triple.png",
        "gradcam_triple/grid_correct.png",
        "report.md",
    ):
        assert (work / f).is_file() and (work / f).stat().st_size > 0, f
    report = (work / "report.md").read_text()
    for heading in ("Table 1", "Table 2", "Table 3", "DeLong", "Bayes-optimal", "Grad-CAM against the lesion masks"):
        assert heading in report
    # Table 1's p-values describe one random split, and the DeLong comparisons are exploratory (helper-104)
    assert "The groups are one random (stratified) split of one cohort: its p-values describe how the draw" in report
    assert "Paired DeLong tests, exploratory: 3 comparisons, not corrected for multiplicity" in report
    # calibration of Table 3's test predictions (helper-104: the report had none)
    assert "| setting | Brier | intercept (95% CI) | slope (95% CI) |" in report
    assert "label-permutation test (99 permutations; the smallest p they can give, 1 / (n + 1), is 0.01)" in report
    assert "The US-LNM row scores the flag itself (0 or 1), as the paper's row does" in report
    assert re.search(r"## Table 3: input settings \(test set, n = 8 \(\d positive\)\)", report)
    assert "Each run's best epoch was chosen on these validation patients, so these AUCs are optimistic" in report
    # 8 test patients: the AUCs over so few are said to be so (helper-57: unsaid on 4)
    assert re.search(r"\*\*Few test patients\.\*\* test: \d positive and \d negative patients: its AUC rests", report)
    assert res["image_init"] == {"from": "random", "freeze_backbone_epochs": 0}
    assert (
        "Image branches: trained from random initialisation (Flax's default for every convolution: LeCun normal"
        in report
    )
    # a rerun resumes: nothing is trained again, the numbers are the same
    mtime = (work / "runs" / f"triple_{BACKBONE}" / "predictions.json").stat().st_mtime
    rerun = [*TINY, *grid, "--config.protocol.gradcam=False"]  # the figures were checked above
    assert main(["reproduce", "--workdir", str(work), "--manifest", str(tiny_cohort), *rerun]) == 0
    assert (work / "runs" / f"triple_{BACKBONE}" / "predictions.json").stat().st_mtime == mtime
    again = json.loads((work / "results.json").read_text())
    assert again["table3"]["rows"] == res["table3"]["rows"]
    # without the bootstrap (eval.bootstrap=0, documented: DeLong's intervals only) the rows hold
    # no bootstrap interval, and the report says so (helper-112: a KeyError writing report.md,
    # after every run had trained)
    from lnm_jax.protocol.reproduce import report_markdown

    for table in ("table2", "table3"):
        for row in res[table]["rows"].values():
            del row["auc_ci_bootstrap"]
    groups = {k: [None] * n for k, n in res["table1"]["groups"].items()}
    assert report_markdown(res, groups).count("| not computed |") == len(res["table2"]["rows"]) + len(
        res["table3"]["rows"]
    )


def test_reproduce_with_folds_pools_out_of_fold_predictions(tiny_cohort, tmp_path, capsys, monkeypatch):
    """The fold logic does not depend on the model: the flag-only setting keeps it cheap."""
    work = tmp_path / "cv"
    rc = main(
        [
            "reproduce",
            "--workdir",
            str(work),
            "--manifest",
            str(tiny_cohort),
            "--folds",
            "2",
            *TINY,
            "--config.protocol.table2_modalities=()",
            "--config.protocol.settings=('us_lnm',)",
            "--config.protocol.gradcam=False",
        ]
    )
    assert rc == 0
    res = json.loads((work / "results.json").read_text())
    assert res["split"] == "2-fold"
    row = res["table3"]["rows"]["us_lnm"]
    assert row["n"] == 40  # every patient once, out of fold
    assert len(row["per_fold"]) == 2 and sum(f["n"] for f in row["per_fold"]) == 40
    aucs = [f["auc"] for f in row["per_fold"]]
    assert row["folds"]["auc"]["mean"] == pytest.approx(np.mean(aucs))
    assert row["folds"]["auc"]["sd"] == pytest.approx(np.std(aucs, ddof=1))
    # and its interval, each fold's scores ranked among its own (the pooled DeLong interval ranks
    # both folds' as one model's): LeDell et al.'s, as stats.cv_auc_ci computes it
    from lnm_jax.evaluation.stats import cv_auc_ci

    fold_preds = [json.loads((work / "runs" / "us_lnm" / f"fold{k}" / "predictions.json").read_text()) for k in (0, 1)]
    want = cv_auc_ci([f["test"]["lnm"] for f in fold_preds], [f["test"]["logit"] for f in fold_preds], 0.95)
    assert want[0] == pytest.approx(np.mean(aucs)) and row["folds"]["auc"]["ci_cv"] == pytest.approx(want[1:])
    lo, hi = row["folds"]["auc"]["ci_cv"]
    assert f"{np.mean(aucs):.3f} ({lo:.3f}-{hi:.3f}) +- " in (work / "report.md").read_text()
    # Table 1 is fold 0's split, said so beside the pooled n (helper-85: unsaid)
    assert res["table1"]["fold"] == 0 and res["table1"]["groups"] == {"train+validation": 20, "test": 20}
    assert (
        "(fold 0's split; Tables 2 and 3 pool every fold's test patients, n = 40)" in (work / "report.md").read_text()
    )
    assert "Not run: `protocol.table2_modalities` or `protocol.backbones` is empty." in (work / "report.md").read_text()
    # with folds, Table 2 is scored on the test folds: said so (helper-90: the docs had said the
    # validation set, and a backbone picked from it would be picked on Table 3's patients)
    from lnm_jax.protocol.reproduce import report_markdown

    res["table2"]["rows"] = {"bmode": {**row, "setting": "bmode", "backbone": BACKBONE}}
    report = report_markdown(res, {k: [""] * n for k, n in res["table1"]["groups"].items()})  # only counted
    assert "## Table 2: backbones per image modality (test set, pooled out-of-fold, n = 40 (" in report
    # a synthetic cohort's labels are the generator's, said so (helper-104: "label from pathology after
    # neck dissection"); a cohort of one's own under the default task says that the task is the default
    from lnm_jax.model_card import DEFAULT_TASK_LIMIT, SYNTHETIC_LABELS

    assert f"label from {SYNTHETIC_LABELS}" in report and DEFAULT_TASK_LIMIT not in report
    # results.json describes it as the report does (helper-125: it had said "pathology after neck dissection")
    groups = {k: [""] * n for k, n in res["table1"]["groups"].items()}  # (only counted)
    written = json.loads((work / "results.json").read_text())["task"]
    assert written["label_source"] == SYNTHETIC_LABELS and written["inputs"]["bmode"].startswith("synthetic ")
    assert f"label from {SYNTHETIC_LABELS}" in report_markdown({**res, "task": written}, groups)
    from lnm_jax.task import PAPER

    real = {**res, "reference": None, "task": PAPER.to_dict()}  # a cohort of one's own records the task it was given
    real = report_markdown(real, groups)
    assert "label from pathology after neck dissection" in real and DEFAULT_TASK_LIMIT in real
    assert "A backbone chosen from this table is chosen on them" in report
    # the pooled scores' caveat reaches the paired DeLong tests on them (helper-125); a holdout's has none
    paired = {"us_lnm_vs_us_lnm": {"auc_a": 0.7, "auc_b": 0.6, "difference": 0.1, "p": 0.2}}
    with_tests = {**res, "table3": {**res["table3"], "delong": paired}}
    caveat = "With folds they compare the pooled out-of-fold scores, which rank the K fold models' scores as one"
    assert caveat in report_markdown(with_tests, groups) and caveat not in report
    assert caveat not in report_markdown({**with_tests, "split": "holdout"}, groups)
    from lnm_jax.protocol.reproduce import POOLED_DELONG

    assert json.loads((work / "results.json").read_text())["table3"]["delong_scores"] == POOLED_DELONG
    # the same command again from the folder above, the workdir typed relative: everything reused
    # (the stored configs hold absolute paths; a relative one names the same folder)
    fold0 = work / "runs" / "us_lnm" / "fold0" / "predictions.json"
    mtime = fold0.stat().st_mtime
    monkeypatch.chdir(tmp_path)
    same = ["reproduce", "--workdir", "cv", "--manifest", str(tiny_cohort), "--folds", "2", *TINY]
    same += ["--config.protocol.table2_modalities=()", "--config.protocol.settings=('us_lnm',)"]
    assert main([*same, "--config.protocol.gradcam=False"]) == 0
    assert fold0.stat().st_mtime == mtime
    # a rerun with other settings does not reuse runs made with the old ones: one line, nothing rewritten
    before = (work / "results.json").read_text()
    capsys.readouterr()
    args = ["reproduce", "--workdir", str(work), "--manifest", str(tiny_cohort), "--folds", "2", *TINY]
    args += ["--config.protocol.table2_modalities=()", "--config.protocol.settings=('us_lnm',)"]
    assert main([*args, "--config.protocol.gradcam=False", "--config.train.epochs=2"]) != 0
    err = capsys.readouterr().err.strip().splitlines()  # (TINY's epochs=1 overridden: said in a note)
    assert err[0] == "note: --config.train.epochs is given 2 times (1, 2): the last, 2, is taken", err
    assert len(err) == 2 and "holds a finished run made with other settings" in err[1], err
    assert "train.epochs: 1 -> 2" in err[1]
    assert (work / "results.json").read_text() == before


def test_more_pretraining_manifests_join_every_split_and_are_read_before_any_run(
    tiny_cohort, tmp_path, monkeypatch, capsys
):
    """protocol.pretrain_manifests: each split's pretraining gets the cohort (its test fold left
    out by pretrain) and then every extra manifest; an unreadable one stops the protocol before
    anything trains; without protocol.pretrain it is a config error."""
    from lnm_jax.config import config_problems, small_cohort_config
    from lnm_jax.pretraining import pretrain as P
    from lnm_jax.protocol import reproduce as R

    seen = []

    def fake_pretrain(config, manifests, folder, *, fold=None, resume=False):
        seen.append(([str(m) for m in manifests], fold))
        return {}

    monkeypatch.setattr(P, "pretrain", fake_pretrain)
    monkeypatch.setattr(P, "probe_lines", lambda report: "")
    c = small_cohort_config()
    c.protocol.pretrain_manifests = (str(tmp_path / "ddti.csv"),)
    R._pretrained_backbone(c, tiny_cohort, tmp_path / "fold1", 1)
    assert seen == [([str(tiny_cohort), str(tmp_path / "ddti.csv")], 1)]
    # a finished pretraining is reused only if made from the same manifests and settings
    done = tmp_path / "done"
    done.mkdir()
    (done / P.REPORT).write_text("{}")
    (done / P.CONFIG).write_text(c.to_json())
    record = {"manifests": [str(tiny_cohort.resolve())], "fold": 1, "include_test": False}
    (done / P.INPUTS_RECORD).write_text(json.dumps(record))
    with pytest.raises(ValueError, match="finished pretraining made with other settings.*manifests"):
        R._pretrained_backbone(c, tiny_cohort, done, 1)  # DDTI added since
    c.protocol.pretrain_manifests = ()
    R._pretrained_backbone(c, tiny_cohort, done, 1)  # the same: reused, nothing pretrained
    c.pretrain.epochs += 1
    with pytest.raises(ValueError, match="pretrain.epochs"):
        R._pretrained_backbone(c, tiny_cohort, done, 1)
    assert len(seen) == 1
    c.protocol.pretrain_manifests = (str(tmp_path / "ddti.csv"),)

    c.protocol.pretrain = False
    assert any(p.startswith("protocol.pretrain_manifests:") for p in config_problems(c))
    work = tmp_path / "cv"
    args = ["reproduce", "--workdir", str(work), "--manifest", str(tiny_cohort), "--folds", "2", *TINY]
    args += ["--config.protocol.pretrain=True", f"--config.protocol.pretrain_manifests=('{tmp_path / 'nope.csv'}',)"]
    capsys.readouterr()
    assert main(args) != 0
    assert f"protocol.pretrain_manifests[0] {tmp_path / 'nope.csv'}: [unreadable_manifest]" in capsys.readouterr().err
    assert not work.exists()  # checked before the cohort is read (or synthesised) and before any run
    # a pretraining whose images fill less than one batch: refused before anything is written
    args = ["reproduce", "--workdir", str(work), "--manifest", str(tiny_cohort), "--folds", "2", *TINY]
    assert main([*args, "--config.protocol.pretrain=True", "--config.pretrain.batch_size=64"]) != 0
    assert (
        "protocol.pretrain (fold 0): 40 images for the 'shared' backbone to pretrain, less than one batch of "
        "pretrain.batch_size=64" in capsys.readouterr().err
    )
    assert not work.exists()
    # a run's batch larger than its training split (helper-57: said by the first run's start, after
    # the protocol's config.json, splits.json and run_info.json were written)
    assert main([*args, "--config.train.batch_size=32"]) != 0
    said = capsys.readouterr().err
    assert (
        "run us_lnm (fold 0): 1 config problem: train.batch_size: 32 is more than the train split's 16 patients" in said
    ), said
    assert not work.exists()


def test_report_says_where_the_image_branches_started():
    """report.md names the pretraining (folder, epochs, size, images per fold, manifests) or
    model.init_from, so a table is never read as from-scratch numbers when it is not."""
    from lnm_jax.config import small_cohort_config
    from lnm_jax.protocol.reproduce import image_init, image_init_line

    c = small_cohort_config()
    c.protocol.pretrain_manifests = ("/d/ddti.csv",)
    init = image_init(c, Path("/c/m.csv"), [1310, 1312])
    assert init["images"] == [1310, 1312] and init["epochs"] == c.pretrain.epochs
    line = image_init_line(init, folds=True)
    assert line == (
        f"Image branches ({c.model.backbone}): started from a SimCLR backbone pretrained for this fold "
        f"(`pretrain/fold<k>/`, {c.pretrain.epochs} epochs at {c.data.image_size} px, 1310-1312 images per fold, "
        f"the test patients left out) on `/c/m.csv`, `/d/ddti.csv`, frozen for the first "
        f"{c.train.freeze_backbone_epochs} epochs."
    )
    c.protocol.table2_modalities, c.protocol.backbones = ("bmode",), (c.model.backbone, "vgg11")
    assert image_init_line(image_init(c, Path("/c/m.csv"), [1310, 1312]), folds=True).endswith(
        "epochs; vgg11 from random initialisation."
    )
    c.protocol.pretrain, c.model.init_from = False, "/w/backbone"
    assert image_init_line(image_init(c, Path("/c/m.csv"), []), folds=True) == (
        f"Image branches: started from `/w/backbone` (model.init_from), frozen for the first "
        f"{c.train.freeze_backbone_epochs} epochs."
    )
    assert image_init_line(None, folds=False) == ""  # a results.json written before image_init
    c.train.epochs = c.train.freeze_backbone_epochs
    assert image_init_line(image_init(c, Path("/c/m.csv"), []), folds=True).endswith(
        f"frozen throughout (train.freeze_backbone_epochs={c.train.freeze_backbone_epochs})."
    )


def test_patients_scored_with_zeros_for_a_missing_input_are_counted(tiny_cohort, tmp_path):
    """helper-85: with data.zero_fill_missing the settings that take a missing input were scored
    on zeros in its place, and the report did not say; now counted per input (test, cohort)."""
    import csv

    from lnm_jax.config import demo_config
    from lnm_jax.data.cohorts.splits import make_splits
    from lnm_jax.protocol.reproduce import zero_filled

    rows = list(csv.DictReader(Path(tiny_cohort).open()))
    for r in rows[:6]:
        r["ceus"] = ""
        r["ceus_mask"] = ""
    rows[6]["us_lnm"] = ""  # a flag fed as 0 too (helper-87: not counted)
    m = tmp_path / "m.csv"
    with m.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(
            {
                k: (str(Path(tiny_cohort).parent / v) if k in ("bmode", "ceus", "bmode_mask", "ceus_mask") and v else v)
                for k, v in r.items()
            }
            for r in rows
        )
    c = demo_config()
    cohort = read_manifest(m)
    splits = make_splits(c, cohort)
    assert zero_filled(c, cohort, splits, 0) == {}  # without the opt-in: nothing was zero-filled
    c.data.zero_fill_missing = True
    lacking = {q.patient_id for q in cohort.patients if q.ceus is None}
    no_flag = {q.patient_id for q in cohort.patients if q.us_lnm is None}
    want = {
        "ceus": {"test": len(lacking & set(splits[0].test)), "cohort": 6},
        "us_lnm": {"test": len(no_flag & set(splits[0].test)), "cohort": 1},
    }
    assert zero_filled(c, cohort, splits, 0) == want


def test_the_flag_row_is_the_flag_in_every_fold_or_in_none():
    """helper-87: with a patient lacking the flag in one fold, the other folds had been scored by
    the flag and that one by the model, pooled into one row."""
    from lnm_jax.protocol.reproduce import FLAG_LOGIT, flag_row

    def fold(ids):
        return {s: {"patient_id": ids, "lnm": [1, 0], "logit": [0.1, -0.1]} for s in ("val", "test")}

    flags = {"a": 1, "b": 0, "c": 0, "d": None}
    preds, by_flag = flag_row([fold(["a", "b"]), fold(["c", "a"])], flags)
    assert by_flag and preds[1]["test"]["logit"] == [-FLAG_LOGIT, FLAG_LOGIT]
    mixed = [fold(["a", "b"]), fold(["c", "d"])]
    assert flag_row(mixed, flags) == (mixed, False)  # every fold the model's


def test_report_states_the_number_of_permutations_and_the_p_floor():
    from lnm_jax.protocol.reproduce import _permutations_said

    assert _permutations_said({"rows": {"a": {"permutation_n": 1000}, "b": {}}}) == (
        " (1000 permutations; the smallest p they can give, 1 / (n + 1), is 0.000999)"
    )
    assert _permutations_said({"rows": {"a": {}}}) == ""  # a results.json from before it was stored


def test_plan_trains_a_run_both_tables_need_once():
    from lnm_jax.config import base_config

    runs = plan_runs(base_config())
    assert len(runs) == 9  # 2 modalities x 3 backbones + us_lnm, dual, triple
    assert runs["bmode_resnet50"]["tables"] == ["table3", "table2"]
    assert runs["us_lnm"]["backbone"] == "-"


def test_cohort_table_tests_by_column_kind(tiny_cohort):
    cohort = read_manifest(tiny_cohort)
    ids = cohort.ids
    rows = cohort_table(cohort, {"a": ids[:25], "b": ids[25:]})
    age = next(r for r in rows if r["variable"] == "age")
    assert age["kind"] == "continuous" and age["method"] == "Mann-Whitney U"
    sex = next(r for r in rows if r["variable"] == "sex")
    assert sex["kind"] == "categorical" and sex["method"] == "Pearson chi-square"
    from scipy import stats

    by = cohort.by_id()
    a = [float(by[i].metadata["age"]) for i in ids[:25]]
    b = [float(by[i].metadata["age"]) for i in ids[25:]]
    assert age["p"] == pytest.approx(stats.mannwhitneyu(a, b).pvalue)


def _busbra(tmp_path):
    src = tmp_path / "busbra"
    (src / "Images").mkdir(parents=True)
    rows = ["ID,Case,Histology,Pathology,BIRADS,Device,Width,Height,Side,BBOX"]
    for case, views, path, birads in (
        (1, "lr", "malignant", 5),
        (2, "lr", "benign", 3),
        (3, "s", "benign", 4),
        (4, "lr", "malignant", 4),
    ):
        for k, v in enumerate(views):  # each view its own picture: not blank, no two alike (similar_image)
            picture = np.random.default_rng(10 * case + k).integers(0, 256, (40, 50), dtype=np.uint8)
            Image.fromarray(picture).save(src / "Images" / f"bus_{case:04d}-{v}.png")
            rows.append(f'bus_{case:04d}-{v},{case},hist{case},{path},{birads},DevA,50,40,left,"[1,2,3,4]"')
    (src / "bus_data.csv").write_text("\n".join(rows) + "\n")
    return src


def test_busbra_converter_maps_views_flag_label_and_single_view_patients(tmp_path, capsys):
    src = _busbra(tmp_path)
    out = tmp_path / "cohort" / "manifest.csv"
    assert main(["convert-busbra", "--src", str(src), "--out", str(out)]) == 0
    cohort = read_manifest(out)
    by = cohort.by_id()
    assert cohort.ids == ["bus_0001", "bus_0002", "bus_0003", "bus_0004"]
    assert by["bus_0001"].bmode.name == "bus_0001-l.png" and by["bus_0001"].ceus.name == "bus_0001-r.png"
    assert by["bus_0003"].bmode.name == "bus_0003-s.png" and by["bus_0003"].ceus is None
    assert [by[i].us_lnm for i in cohort.ids] == [1, 0, 1, 1]  # BI-RADS >= 4
    assert [by[i].lnm for i in cohort.ids] == [1, 0, 0, 1]  # malignant
    assert by["bus_0002"].metadata == {"Histology": "hist2", "BIRADS": "3", "Device": "DevA"}
    # bad input names the line; an existing output is not overwritten
    # (its line as an editor shows it: a blank row and an empty line before it counted)
    table = (src / "bus_data.csv").read_text().replace("benign,3", "unknown,3").splitlines()
    (src / "bus_data.csv").write_text("\n".join([*table[:2], ",,,,,,,,,", "", *table[2:]]) + "\n")
    assert main(["convert-busbra", "--src", str(src), "--out", str(tmp_path / "x.csv")]) == 1
    said = capsys.readouterr().err  # both views of bus_0002
    assert "bus_data.csv: 2 refused rows:\n  line 6: Pathology 'unknown' is not benign or malignant\n" in said, said
    assert not (tmp_path / "x.csv").exists()
    assert main(["convert-busbra", "--src", str(src), "--out", str(out)]) == 1
    # every refused row in one pass, each on its line (the first alone had been said); one alone
    # on one line
    edited = [*table[:2], ",,,,,,,,,", "", *table[2:]]
    edited[-1] = edited[-1].replace("malignant,4", "malignant,7")  # bus_0004-r
    edited[-3] = edited[-3].replace("bus_0003-s", "BUS_0003-s")
    (src / "bus_data.csv").write_text("\n".join(edited) + "\n")
    assert main(["convert-busbra", "--src", str(src), "--out", str(tmp_path / "x.csv")]) == 1
    said = capsys.readouterr().err
    assert "bus_data.csv: 4 refused rows:\n  line 6: Pathology 'unknown' is not benign or malignant\n" in said, said
    assert "\n  line 8: ID 'BUS_0003-s' is not bus_NNNN-l/r/s (in lower case" in said, said
    assert "\n  line 10: BIRADS '7' is not a BI-RADS category (0-6, 4a-4c)" in said, said
    assert not (tmp_path / "x.csv").exists()
    (src / "bus_data.csv").write_text("\n".join(edited[:2] + edited[-1:]) + "\n")
    assert main(["convert-busbra", "--src", str(src), "--out", str(tmp_path / "x.csv")]) == 1
    said = capsys.readouterr().err
    assert "bus_data.csv, line 3: BIRADS '7' is not a BI-RADS category (0-6, 4a-4c)\n" in said, said
    # the header as a spreadsheet may write it (spaces after the commas, an empty line before
    # it) reads alike; a column named twice is refused (the last copy's cells had been read)
    good = _busbra(tmp_path / "again")
    lines = (good / "bus_data.csv").read_text().splitlines()
    (good / "bus_data.csv").write_text("\n".join(["", lines[0].replace(",", ", "), *lines[1:]]) + "\n")
    assert main(["convert-busbra", "--src", str(good), "--out", str(tmp_path / "spaced.csv")]) == 0

    def summary(c):
        return [(p.patient_id, p.lnm, p.us_lnm, p.bmode.name, p.ceus and p.ceus.name, p.metadata) for p in c.patients]

    assert summary(read_manifest(tmp_path / "spaced.csv")) == summary(cohort)
    (good / "bus_data.csv").write_text("\n".join([lines[0] + ",Pathology", *(r + ",benign" for r in lines[1:])]))
    assert main(["convert-busbra", "--src", str(good), "--out", str(tmp_path / "twice.csv")]) == 1
    said = capsys.readouterr().err
    assert "bus_data.csv, line 1: a column is named more than once ('Pathology' is columns 4, 11)" in said, said
    (good / "bus_data.csv").write_text("\n".join([lines[0].replace("BIRADS", "Birads"), *lines[1:]]))
    assert main(["convert-busbra", "--src", str(good), "--out", str(tmp_path / "none.csv")]) == 1
    assert "line 1: no column 'BIRADS' (header: ID, Case" in capsys.readouterr().err
    (good / "bus_data.csv").write_text(lines[0] + "\n")  # a header and no rows: no 0-patient manifest
    assert main(["convert-busbra", "--src", str(good), "--out", str(tmp_path / "empty.csv")]) == 1
    assert "bus_data.csv, line 1: no rows under the header" in capsys.readouterr().err
    # tab-separated (a spreadsheet's text export) or not UTF-8: said so, in the file's own words
    (good / "bus_data.csv").write_text("\n".join(x.replace(",", "\t") for x in lines), encoding="utf-16")
    assert main(["convert-busbra", "--src", str(good), "--out", str(tmp_path / "tabs.csv")]) == 1
    assert "line 1: the header is one column, 'ID\\tCase" in capsys.readouterr().err
    (good / "bus_data.csv").write_text("\n".join([*lines, lines[1].replace("hist1", "histología")]), "cp1252")
    assert main(["convert-busbra", "--src", str(good), "--out", str(tmp_path / "latin.csv")]) == 1
    said = capsys.readouterr().err
    assert f"bus_data.csv: line {len(lines) + 1}: byte 0xed is not UTF-8" in said and "CSV UTF-8" in said, said
    assert not any((tmp_path / f"{n}.csv").exists() for n in ("twice", "none", "empty", "tabs", "latin"))
    # a patient's views tell its Case, Histology and Device alike, and one Case is one patient
    # (helper-50's trial of a3f0dab: views that disagreed passed, the first view's taken); BI-RADS
    # is the most suspicious view's (BUS-BRA's bus_0856 has views of BI-RADS 4 and 5)
    views = _busbra(tmp_path / "views")
    table = (views / "bus_data.csv").read_text()
    for k, (was, edited, said) in enumerate(
        (
            ("bus_0001-r,1,", "bus_0001-r,7,", "line 3: patient bus_0001's views disagree on Case ('1', '7')"),
            ("bus_0001-r,1,hist1", "bus_0001-r,1,hist9", "line 3: patient bus_0001's views disagree on Histology"),
            ("bus_0002-l,2,", "bus_0002-l,1,", "line 4: Case 1 is also bus_0001's: one patient under two IDs"),
        )
    ):
        (views / "bus_data.csv").write_text(table.replace(was, edited))
        assert main(["convert-busbra", "--src", str(views), "--out", str(tmp_path / f"views{k}.csv")]) == 1
        assert said in capsys.readouterr().err
    (views / "bus_data.csv").write_text(table.replace("bus_0001-r,1,hist1,malignant", "bus_0001-r,1,hist1,benign"))
    assert main(["convert-busbra", "--src", str(views), "--out", str(tmp_path / "path.csv")]) == 1
    assert "line 3: patient bus_0001's views disagree on Pathology ('malignant', 'benign')" in capsys.readouterr().err
    # a row given twice, and a patient's -l and -s views (both B-mode): said as such (helper-52's
    # trial of eaf6508: "has a second 'bmode' image" for both)
    rows = table.splitlines()
    first = next(k for k, r in enumerate(rows) if r.startswith("bus_0001-l,"))
    shutil.copy(views / "Images" / "bus_0001-l.png", views / "Images" / "bus_0001-s.png")
    for k, (edited, said) in enumerate(
        (
            (
                [*rows, rows[first]],
                f"line {len(rows) + 1}: ID bus_0001-l is also line {first + 1}'s (the same row again)",
            ),
            (  # spaces around a cell, a capital: the row as read is the same (helper-53's trial of bc14a45)
                [*rows, rows[first].replace(",malignant", ", Malignant ").replace(",benign", ", Benign ")],
                f"line {len(rows) + 1}: ID bus_0001-l is also line {first + 1}'s (the same row again)",
            ),
            (
                [*rows, rows[first].replace("hist1", "hist2").replace("malignant", "benign")],
                f"line {len(rows) + 1}: ID bus_0001-l is also line {first + 1}'s (another row under one ID: Histology "
                "'hist1' there, 'hist2' here; Pathology 'malignant' there, 'benign' here)",
            ),
            (  # an ID in capitals (helper-54's trial)
                [*rows, rows[first].replace("bus_0001-l", "BUS_0001-L")],
                f"line {len(rows) + 1}: ID 'BUS_0001-L' is not bus_NNNN-l/r/s (in lower case: BUS-BRA's image files",
            ),
            (
                [*rows, rows[first].replace("-l,", "-s,")],
                f"has views bus_0001-l (line {first + 1}) and bus_0001-s, both",
            ),
        )
    ):
        (views / "bus_data.csv").write_text("\n".join(edited) + "\n")
        assert main(["convert-busbra", "--src", str(views), "--out", str(tmp_path / f"repeat{k}.csv")]) == 1
        assert said in capsys.readouterr().err
    # (the ACR's subcategories of 4, 4a-4c, as an export may write them, had been "not a number")
    (views / "bus_data.csv").write_text(table.replace("bus_0002-r,2,hist2,benign,3", "bus_0002-r,2,hist2,benign,4b"))
    assert main(["convert-busbra", "--src", str(views), "--out", str(tmp_path / "birads.csv")]) == 0
    mixed = read_manifest(tmp_path / "birads.csv").by_id()["bus_0002"]
    assert (mixed.us_lnm, mixed.metadata["BIRADS"]) == (1, "4b")
    (views / "bus_data.csv").write_text(table.replace("bus_0002-r,2,hist2,benign,3", "bus_0002-r,2,hist2,benign,3a"))
    assert main(["convert-busbra", "--src", str(views), "--out", str(tmp_path / "3a.csv")]) == 1
    assert "line 5: BIRADS '3a' is not a BI-RADS category (0-6, 4a-4c)" in capsys.readouterr().err


def test_a_lesion_outside_the_field_of_view_is_refused_before_reproduce_writes(tiny_cohort, tmp_path, capsys):
    """reproduce's survey before anything is written checks the field of view's square as each
    run's start does: it had written config.json, run_info.json and splits.json, then failed in
    the first run (helper-82)."""
    import csv

    src = Path(tiny_cohort)
    with src.open() as f:
        reader = csv.DictReader(f)
        fields, rows = [*reader.fieldnames, "bmode_mm_per_pixel", "ceus_mm_per_pixel"], list(reader)
    for r in rows:
        for k in ("bmode", "ceus", "bmode_mask", "ceus_mask"):
            r[k] = str(src.parent / r[k]) if r.get(k) else ""
        r["bmode_mm_per_pixel"] = r["ceus_mm_per_pixel"] = "0.2"
    with Image.open(rows[0]["bmode_mask"]) as m:  # the first patient's lesion moved to a corner
        corner = np.zeros((m.height, m.width), np.uint8)
    corner[:3, :3] = 255
    Image.fromarray(corner).save(tmp_path / "corner.png")
    rows[0]["bmode_mask"] = str(tmp_path / "corner.png")
    manifest = tmp_path / "m.csv"
    with manifest.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    work = tmp_path / "protocol"
    argv = ["reproduce", "--workdir", str(work), "--manifest", str(manifest), *TINY]
    argv += [f"--config.protocol.backbones=('{BACKBONE}',)", "--config.protocol.settings=('bmode', 'triple')"]
    # 2 mm: the central 10 pixels of each picture, away from the corner
    assert main([*argv, "--config.data.field_of_view_mm=2.0"]) == 1
    err = capsys.readouterr().err
    assert "data.field_of_view_mm=2 leaves none of the lesion of 1 mask(s)" in err and "corner.png" in err, err
    assert not work.exists()


def test_a_k_fold_protocol_warns_of_one_norm_given_by_hand():
    """helper-90: ``norm-stats``' values, given to ``reproduce --folds``, standardise every fold
    by pixels of its test patients: said, with ``data.norm_from=train`` as the remedy; neither
    the paper's values nor ``norm_from='train'`` is warned of."""
    from lnm_jax.config import base_config
    from lnm_jax.protocol.reproduce import _shared_norm_note

    c = base_config("triple")
    assert _shared_norm_note(c) is None  # the paper's statistics: not this cohort's
    c.data.norm.bmode.mean = (0.45, 0.45, 0.45)
    assert "each fold's test patients are in it" in _shared_norm_note(c)
    c.data.norm_from = "train"
    assert _shared_norm_note(c) is None


def test_k_fold_runs_standardise_by_their_own_training_split_and_a_copied_protocol_reuses_them(
    tiny_cohort, tmp_path, capsys
):
    """``data.norm_from='train'`` under ``reproduce --folds`` (helper-90: one ``norm-stats`` for
    every fold held 9-14 of each fold's 20 test patients): each fold's run records the
    statistics of its own training split. A rerun reuses the finished runs (their recorded
    statistics are theirs, not a change), from a copy of the folder elsewhere too (its TFDS
    cache's path had been taken for a changed setting)."""
    import shutil

    from lnm_jax.data.cohorts.manifest import read_manifest
    from lnm_jax.data.cohorts.splits import load_splits
    from lnm_jax.data.loaders.loader import split_norm_stats
    from lnm_jax.run_config import load_config

    work = tmp_path / "cv"
    args = ["--manifest", str(tiny_cohort), "--folds", "2", *TINY, "--config.data.norm_from=train"]
    args += ["--config.protocol.table2_modalities=()", "--config.protocol.settings=('bmode',)"]
    args += ["--config.protocol.gradcam=False"]
    assert main(["reproduce", "--workdir", str(work), *args]) == 0
    cohort, (splits, _) = read_manifest(tiny_cohort), load_splits(work / "splits.json")
    norms = []
    for k, split in enumerate(splits):
        run = work / "runs" / f"bmode_{BACKBONE}" / f"fold{k}"
        norm = load_config(run).data.norm.to_dict()
        want = split_norm_stats(cohort, split.train, image_size=32, inputs=("bmode",))
        assert {m: {s: list(v[s]) for s in ("mean", "std")} for m, v in norm.items()} == want
        norms.append(norm)
    assert norms[0] != norms[1]
    copy = shutil.copytree(work, tmp_path / "moved" / "cv")
    done = copy / "runs" / f"bmode_{BACKBONE}" / "fold0" / "predictions.json"
    before = done.read_bytes(), done.stat().st_mtime_ns
    assert main(["reproduce", "--workdir", str(copy), *args]) == 0
    assert (done.read_bytes(), done.stat().st_mtime_ns) == before  # reused, not trained again
    # a split drawn otherwise now (as near copies came to be kept together): a finished run of the
    # old one is not reused beside it (helper-91: two splits in one report), and nothing is written
    import dataclasses

    import lnm_jax.protocol.reproduce as R

    def moved(config, cohort, **kw):
        first, *rest = make_splits(config, cohort, **kw)
        a, b = first.train[0], first.test[0]
        swap = lambda ids: tuple(sorted(b if i == a else a if i == b else i for i in ids))  # noqa: E731
        return [dataclasses.replace(first, train=swap(first.train), test=swap(first.test)), *rest]

    make_splits = R.make_splits
    R.make_splits = moved
    try:
        kept = (copy / "splits.json").read_bytes()
        assert main(["reproduce", "--workdir", str(copy), *args]) != 0
    finally:
        R.make_splits = make_splits
    assert "holds a finished run trained on another split than this cohort's now" in capsys.readouterr().err
    assert (copy / "splits.json").read_bytes() == kept


def test_a_setting_that_calls_every_patient_one_class_is_said():
    """helper-104: a triple model at sensitivity 100%, specificity 0% stood in Table 3 unsaid."""
    from lnm_jax.protocol.reproduce import one_class_called
    from lnm_jax.task import PAPER

    row = {"setting": "triple", "at_threshold": {"threshold": 0.5, "sensitivity": 1.0, "specificity": 0.0}}
    fine = {"setting": "dual", "at_threshold": {"threshold": 0.5, "sensitivity": 0.8, "specificity": 0.7}}
    (said,) = one_class_called({"a": row, "b": fine}, PAPER)
    assert f"at 0.5: every patient called {PAPER.positive} (sensitivity 100.0%, specificity 0.0%)" in said
    # helper-120: the flag row at sensitivity 0%, specificity 85.7% had been "calls every test
    # patient no LNM"; it missed the positives and called some negatives positive
    flag = {"setting": "us_lnm", "at_threshold": {"threshold": 0.5, "sensitivity": 0.0, "specificity": 0.857}}
    (said,) = one_class_called({"a": flag}, PAPER)
    assert f"at 0.5: no {PAPER.positive} patient called {PAPER.positive} (sensitivity 0.0%" in said, said
