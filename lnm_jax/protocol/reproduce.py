"""The paper's protocol on one cohort, end to end: ``lnm-jax reproduce``.

* One patient-level split for every run (8:2 train+validation/test, then 8:2 train/
  validation), or ``protocol.folds`` K stratified folds.
* Table 1: cohort characteristics, train+validation vs test (:mod:`.cohort_table`).
* Table 2: each backbone on each image modality alone, judged, as in the paper, on the 8:2
  split of the training set (our validation set); with folds, on the pooled out-of-fold test
  sets (Table 3's patients, said in the report); ROC per modality (Figures 4-5).
* Table 3: every input setting with the configured backbone on the test set: sensitivity,
  specificity, accuracy at ``protocol.threshold`` with label-permutation p-values; AUC with
  DeLong and bootstrap 95% CIs; paired DeLong tests triple vs dual and triple vs US-LNM; ROC of
  all settings (Figure 7); convergence of the triple model (Figure 6); Grad-CAM grids.
* With folds, every number is per fold (mean +- SD) and on the pooled out-of-fold predictions.

Each run trains in ``WORKDIR/runs/<name>[/fold<k>]`` and leaves ``predictions.json``; a rerun
skips finished runs, so an interrupted protocol resumes where it stopped. ``report.md`` and
``results.json`` (every number) are written last.
"""

from __future__ import annotations

import copy
import math
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from ml_collections import ConfigDict

from lnm_jax import names
from lnm_jax.config import ConfigError, norm_is_papers
from lnm_jax.data.cohorts.manifest import ManifestError, read_manifest
from lnm_jax.data.cohorts.splits import Split, check_stored, load_splits, make_splits, save_splits, split_digest
from lnm_jax.data.cohorts.survey import survey
from lnm_jax.data.pixels.sources import Framing
from lnm_jax.data.synth.synthetic import bayes_auc, generator_params, temporal_reference
from lnm_jax.evaluation import metrics as M
from lnm_jax.evaluation.evaluate import small_split_warnings
from lnm_jax.evaluation.plots import plot_convergence, plot_roc
from lnm_jax.evaluation.stats import cv_auc_ci, delong_test, format_p, p_text, permutation_p_value
from lnm_jax.evaluation.summary import THRESHOLD_METRICS, calls_text, summarise_predictions
from lnm_jax.explain import scores as S
from lnm_jax.fileio import json_text, read_json, write_json, write_text
from lnm_jax.metric_writer import read_history
from lnm_jax.models.fusion import check_config
from lnm_jax.preflight import check_inputs_present
from lnm_jax.protocol.cohort_table import cohort_table, cohort_table_markdown
from lnm_jax.run import Run, check_split, resolve_cohort, split_document
from lnm_jax.run_config import ConfigMismatchError, config_changes, load_config, with_recorded_norm
from lnm_jax.run_files import (
    CAM_GRID_CORRECT,
    CAM_GRID_INCORRECT,
    CAM_SCORES,
    PROTOCOL_PRETRAIN,
    PROTOCOL_RUNS,
    REPORT,
    RESULTS,
    RunFiles,
)
from lnm_jax.run_record import recorded_before, write_run_record
from lnm_jax.task import PAPER, Task


def plan_runs(config: ConfigDict) -> dict[str, dict]:
    """name -> {setting, backbone, tables}: Table 2's backbone x modality grid and Table 3's
    settings with the configured backbone; a run both tables need is trained once."""
    runs: dict[str, dict] = {}

    def add(setting: str, backbone: str, table: str):
        uses_images = any(m in names.IMAGE_INPUTS for m in names.parse_modalities(setting))
        name = f"{setting}_{backbone}" if uses_images else setting
        runs.setdefault(name, {"setting": setting, "backbone": backbone if uses_images else "-", "tables": []})[
            "tables"
        ].append(table)

    for s in config.protocol.settings:  # Table 3's order: the report lists runs in this order
        add(s, config.model.backbone, "table3")
    for m in config.protocol.table2_modalities:
        for b in config.protocol.backbones:
            add(m, b, "table2")
    return runs


def _run_config(config: ConfigDict, run: dict, manifest: Path, tfds_dir: Path, pretrained: Path | None = None):
    """One planned run's config; ``pretrained``: the split's pretrained backbone folder (with
    ``protocol.pretrain``), the start of image runs of ``model.backbone``."""
    c = copy.deepcopy(config)
    c.name = f"{config.name}/{run['setting']}_{run['backbone']}"
    c.modalities = run["setting"]
    if run["backbone"] != "-":
        c.model.backbone = run["backbone"]
    else:  # no image input: nothing for a lesion head to segment
        c.model.lesion_head, c.train.lesion_loss_weight = "", 0.0
    c.data.manifest = str(manifest)
    c.data.tfds_dir = str(tfds_dir)
    if config.protocol.get("pretrain", False):
        if run["backbone"] == config.model.backbone and pretrained is not None:
            c.model.init_from = str(pretrained)
        elif not c.model.init_from:  # no pretrained branch to freeze (the flag alone, another backbone)
            c.train.freeze_backbone_epochs = 0
    return c


def _check_reusable(folder: Path, config: ConfigDict, what: str, changes=(), ignore=("protocol.",)) -> None:
    """A finished run or pretraining of an earlier invocation is reused only if this one would
    make it with the same settings (the protocol's own fields aside): else one
    :class:`ConfigMismatchError` naming what changed, so a report never describes settings its
    numbers were not made with."""
    stored = load_config(folder)
    # a run's own statistics (data.norm_from='train') as it recorded them; the TFDS cache's folder is
    # where records are kept, not a setting (a protocol folder copied elsewhere had been refused)
    changes = [*changes, *config_changes(stored, with_recorded_norm(config, stored), (*ignore, "data.tfds_dir"))]
    if changes:
        raise ConfigMismatchError(
            f"{folder} holds a finished {what} made with other settings ({'; '.join(changes)}); "
            "use a new --workdir, or remove that folder to make it again"
        )


def _check_finished_split(folder: Path, split: Split) -> None:
    """A finished run in ``folder`` is reused only if it was trained on ``split``, the split
    this invocation draws: :class:`ConfigMismatchError` naming the folder otherwise, before
    anything is written (helper-91: a rerun after splits began keeping near copies together
    had saved the new split and reused runs trained on the old one, two splits in one report)."""
    files = RunFiles(folder)
    if not (files.predictions.is_file() and files.splits.is_file()):
        return
    (trained, *_), _ = load_splits(files.splits)
    if split_digest(trained) != split_digest(split):
        raise ConfigMismatchError(
            f"{folder} holds a finished run trained on another split than this cohort's now ({files.splits}); "
            "use a new --workdir, or remove that folder to make it again"
        )


def _pretrained_backbone(config: ConfigDict, manifest: Path, folder: Path, fold: int | None) -> tuple[Path, dict]:
    """The split's pretrained backbone folder and its pretraining's report: pretrained here on
    ``manifest`` with that split's test patients left out, and on every image of
    ``protocol.pretrain_manifests``, unless a finished pretraining is in ``folder``."""
    from lnm_jax.pretraining import pretrain as P  # noqa: PLC0415

    manifests = _pretraining_sources(config, manifest)
    # a backbone for every image input the protocol's runs take (pretraining reads the config's
    # modalities alone, and the base config's need not name them all)
    pc = config.protocol
    used = {m for spec in (*pc.settings, *pc.table2_modalities) for m in names.parse_modalities(spec)}
    config = copy.deepcopy(config)
    config.modalities = ",".join([m for m in names.IMAGE_INPUTS if m in used] or names.IMAGE_INPUTS)
    if (folder / P.REPORT).is_file():  # finished: reused only if made from these images and settings
        changes = P.inputs_changes(folder, P.inputs_record(manifests, fold, include_test=False))
        ignore = ("protocol.", "train.", "eval.", "modalities", *P.UNREAD_FIELDS)
        _check_reusable(folder, config, "pretraining", changes, ignore=ignore)
        report = read_json(folder / P.REPORT)
    else:
        resume = folder.exists()  # an interrupted pretraining continues
        print(f"[reproduce] pretraining{f' fold {fold}' if fold is not None else ''} in {folder}", flush=True)
        report = P.pretrain(config, manifests, folder, fold=fold, resume=resume)
        print(P.probe_lines(report), flush=True)
    return folder / P.BACKBONES, report


def _pretraining_sources(config: ConfigDict, manifest: Path) -> list[Path]:
    """The manifests every split's pretraining reads: the cohort's (its test patients left out)
    and ``protocol.pretrain_manifests``."""
    return [Path(manifest), *(Path(m) for m in config.protocol.get("pretrain_manifests", ()))]


def _pretrain_manifests(config: ConfigDict) -> list:
    """The cohorts of ``protocol.pretrain_manifests`` (with ``protocol.pretrain``), read; else a
    :class:`ConfigError` naming ``protocol.pretrain_manifests[i]`` and each problem of one that
    cannot be read: before the cohort is read or synthesised and before anything is written."""
    if not config.protocol.get("pretrain", False):
        return []
    problems, cohorts = [], []
    for i, extra in enumerate(config.protocol.get("pretrain_manifests", ())):
        try:
            cohorts.append(read_manifest(extra, require_labels=False, framing=Framing.from_config(config.data)))
        except ManifestError as e:
            problems += [f"protocol.pretrain_manifests[{i}] {e.path}: {p}" for p in e.problems]
    if problems:
        raise ConfigError(problems)
    return cohorts


def image_init(config: ConfigDict, manifest: Path, pretrained_images: list[int | None]) -> dict:
    """Where the image runs' branches started (``results.json``'s ``image_init``): a SimCLR
    pretraining per split on ``manifest`` and ``protocol.pretrain_manifests``
    (``pretrained_images``: each split's image count, in split order; runs of
    ``model.backbone`` only, another backbone of Table 2 starts at random), ``model.init_from``,
    or random weights (:data:`names.RANDOM_INIT`); and the epochs they stayed frozen."""
    freeze = int(config.train.get("freeze_backbone_epochs", 0))
    if pretrained_images:
        return {
            "from": "pretrained per split",
            "backbone": config.model.backbone,
            "folder": PROTOCOL_PRETRAIN,
            "manifests": [str(m.resolve()) for m in _pretraining_sources(config, manifest)],
            "images": pretrained_images,
            "epochs": int(config.pretrain.epochs),
            "image_size": int(config.data.image_size),
            "freeze_backbone_epochs": freeze,
            "epochs_trained": int(config.train.epochs),
            "other_backbones": sorted(
                {r["backbone"] for r in plan_runs(config).values()} - {"-", config.model.backbone}
            ),
        }
    if config.model.init_from:
        return {
            "from": "model.init_from",
            "path": str(config.model.init_from),
            "freeze_backbone_epochs": freeze,
            "epochs_trained": int(config.train.epochs),
        }
    return {"from": "random", "freeze_backbone_epochs": 0}


def image_init_line(init: dict | None, folds: bool) -> str:
    """``report.md``'s sentence on :func:`image_init`; '' for a results.json without it."""
    if not init:
        return ""
    frozen = f", frozen for the first {init['freeze_backbone_epochs']} epochs" if init["freeze_backbone_epochs"] else ""
    if init["freeze_backbone_epochs"] and init["freeze_backbone_epochs"] >= init.get("epochs_trained", math.inf):
        frozen = f", frozen throughout (train.freeze_backbone_epochs={init['freeze_backbone_epochs']})"
    if init["from"] == "pretrained per split":
        images = sorted(n for n in init["images"] if n is not None)
        count = "" if not images else f"{images[0]}-{images[-1]}" if images[0] != images[-1] else f"{images[0]}"
        count = f"{count} images{' per fold' if folds else ''}, " if count else ""
        where = f"{init['folder']}/{'fold<k>/' if folds else ''}"
        return (
            f"Image branches ({init['backbone']}): started from a SimCLR backbone pretrained for this "
            f"{'fold' if folds else 'split'} (`{where}`, {init['epochs']} epoch{'s' if init['epochs'] != 1 else ''} at "
            f"{init['image_size']} px, {count}the test patients left out) on "
            + ", ".join(f"`{m}`" for m in init["manifests"])
            + frozen
            + "".join(f"; {b} from random initialisation" for b in init.get("other_backbones", ()))
            + "."
        )
    if init["from"] == "model.init_from":
        return f"Image branches: started from `{init['path']}` (model.init_from){frozen}."
    return f"Image branches: trained from {names.RANDOM_INIT}, no pretraining."


def _train_and_predict(config: ConfigDict, split: Split, folder: Path, split_doc: dict) -> tuple[dict, Run | None]:
    """Trains one run on ``split`` (unless it finished before) and returns its validation and
    test predictions, with the live run when it trained here."""
    from lnm_jax.training.loop import train  # noqa: PLC0415  (the training stack)

    done = RunFiles(folder).predictions
    if done.is_file():
        _check_reusable(folder, config, "run")
        return read_json(done), None
    if folder.exists():  # an interrupted run: start it again from scratch
        shutil.rmtree(folder)
    t0 = time.perf_counter()
    run = Run.create(config, folder, split=split, split_doc=split_doc)
    train(run)
    out = {"train_wall_s": time.perf_counter() - t0, "best_epoch": run.predictor("best").meta["epoch"]}
    for subset in ("val", "test"):
        p = run.predict(subset)
        out[subset] = {
            names.PATIENT_ID: p[names.PATIENT_ID].tolist(),
            names.LABEL: p[names.LABEL].tolist(),
            # the fused logit and, with per-input heads, each input's own (``logit_<input>``)
            **{k: p[k].astype(float).tolist() for k in p if k == "logit" or k.startswith(names.INPUT_LOGIT)},
        }
    write_text(done, json_text(out))
    return out, run


# the flag's row scores the flag itself, as the paper's row does: a logit far enough from 0 that
# any threshold in (1e-13, 1 - 1e-13) reads it as the flag (its AUC is the flag's, and so is its
# operating point; a model of the flag alone had put its intercept either side of the threshold,
# 100% sensitivity and 0% specificity where the flag had 50% and 100%; helper-85)
FLAG_LOGIT = 30.0


def _the_flag(pred: dict, flags: dict[str, int | None]) -> dict | None:
    """``pred`` (a run's validation and test predictions) with every subset's logits replaced by
    the US-LNM flag of its patients (``flags``: patient -> 0/1, None where absent), as
    +-:data:`FLAG_LOGIT`; None where a patient lacks the flag."""
    out = dict(pred)
    for subset in ("val", "test"):
        ids = [i.decode() if isinstance(i, bytes) else i for i in pred[subset][names.PATIENT_ID]]
        given = [flags.get(i) for i in ids]
        if any(f is None for f in given):
            return None
        out[subset] = {**pred[subset], "logit": [FLAG_LOGIT if f == 1 else -FLAG_LOGIT for f in given]}
    return out


def flag_row(preds: list[dict], flags: dict[str, int | None]) -> tuple[list[dict], bool]:
    """``(predictions, by_the_flag)``: every fold's predictions scored by the flag itself
    (:func:`_the_flag`), or, where a patient of any fold lacks the flag, all left as the model
    scored them (one fold's flag pooled with another's model logits had made one row of two
    scores; helper-87)."""
    flagged = [_the_flag(p, flags) for p in preds]
    if any(f is None for f in flagged):
        return preds, False
    return flagged, True


def _metrics(labels, logits, config: ConfigDict, *, permutations: bool) -> dict:
    """The shared summary at ``protocol.threshold`` (DeLong and bootstrap CIs, calibration:
    helper-104, the report had none), with the label-permutation p-values of the threshold
    metrics for Table 3."""
    ec, pc = config.eval, config.protocol
    out = summarise_predictions(
        labels,
        logits,
        threshold=pc.threshold,
        ci_level=ec.ci_level,
        n_boot=ec.bootstrap,
        seed=ec.seed,
    )
    if permutations and pc.permutations:
        labels = np.asarray(labels).astype(int)
        pred = (M.sigmoid(logits) >= pc.threshold).astype(int)
        stat = {
            "sensitivity": lambda y, q: M.threshold_metrics(y, q, 0.5)["sensitivity"],
            "specificity": lambda y, q: M.threshold_metrics(y, q, 0.5)["specificity"],
            "accuracy": lambda y, q: float(np.mean(y == q)),
        }
        out["permutation_p"] = {
            k: permutation_p_value(labels, pred, f, n_permutations=pc.permutations, seed=ec.seed)
            for k, f in stat.items()
        }
        # beside the p-values: how many permutations, so their floor 1 / (n + 1) is known
        out["permutation_n"] = int(pc.permutations)
    return out


def _fold_summary(per_fold: list[dict]) -> dict:
    values = {
        "auc": [f["auc"] for f in per_fold],
        **{k: [f["at_threshold"][k] for f in per_fold] for k in THRESHOLD_METRICS},
    }
    return {
        k: {"mean": float(np.nanmean(v)), "sd": float(np.nanstd(v, ddof=1)) if len(v) > 1 else 0.0}
        for k, v in values.items()
    }


def _pooled(preds: list[dict], subset: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    labels = np.concatenate([p[subset][names.LABEL] for p in preds])
    logits = np.concatenate([p[subset]["logit"] for p in preds])
    ids = [i for p in preds for i in p[subset][names.PATIENT_ID]]
    return labels, logits, ids


def _aligned(a: list[dict], b: list[dict], subset: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two runs' pooled predictions on the same patients, in ``a``'s order."""
    y, za, ids_a = _pooled(a, subset)
    _, zb, ids_b = _pooled(b, subset)
    order = {pid: k for k, pid in enumerate(ids_b)}
    return y, za, zb[[order[pid] for pid in ids_a]]


def _shared_norm_note(config: ConfigDict) -> str | None:
    """A K-fold protocol's warning where every fold standardises by one ``data.norm`` given by
    hand (not the paper's): computed from this cohort (``norm-stats``), it holds each fold's
    test patients (helper-90: 9-14 of 20 per fold); None otherwise."""
    if config.data.norm_from != "config" or norm_is_papers(config):
        return None
    return (
        "warning: data.norm is set by hand and every fold standardises by it; if it was computed from this "
        "cohort (lnm-jax norm-stats), each fold's test patients are in it. --config.data.norm_from=train "
        "computes each fold's from its own training split"
    )


def reproduce(config: ConfigDict, workdir: Path | str) -> dict:
    """Runs the whole protocol; returns ``results.json``'s content."""
    workdir = Path(workdir)
    t_start = time.perf_counter()
    extra_cohorts = _pretrain_manifests(config)
    files = RunFiles(workdir)
    cohort = resolve_cohort(config, files)  # validates, or synthesises
    manifest = cohort.path
    folds = int(config.protocol.folds)
    if folds and (note := _shared_norm_note(config)):
        print(note, file=sys.stderr)
    split_doc = split_document(config, cohort)
    if files.splits.is_file():  # a rerun reuses the finished runs: only if they used this split
        check_stored(load_splits(files.splits)[1], split_doc, files.splits)
    before = recorded_before(files)  # a rerun keeps the earlier processes' records
    splits = make_splits(config, cohort)
    if config.protocol.get("pretrain", False):  # each split's pretraining fills a batch
        from lnm_jax.pretraining.pretrain import check_batches  # noqa: PLC0415

        for k, split in enumerate(splits):
            try:
                check_batches(config, [cohort, *extra_cohorts], split.test)
            except ConfigError:
                raise  # a field of the config: exit 2, as it is
            except ValueError as e:
                raise ValueError(f"protocol.pretrain{f' (fold {k})' if folds else ''}: {e}") from e
    runs = plan_runs(config)
    # as each run's start surveys it (the field of view's square at the image size included)
    images = survey(cohort, Framing.from_config(config.data), screens=False, image_size=int(config.data.image_size))
    if images.problems:
        raise ValueError(f"{cohort.path}: " + " | ".join(images.problems))
    for name, run in runs.items():  # every planned model, its inputs and its splits, before anything is written
        rc = _run_config(config, run, manifest, files.tfds, workdir / PROTOCOL_PRETRAIN)
        check_config(rc)
        check_inputs_present(rc, cohort)
        for k, split in enumerate(splits):  # (helper-57: a batch larger than the split, said after the records)
            try:
                check_split(rc, cohort, split)
            except ValueError as e:
                raise ValueError(f"run {name}{f' (fold {k})' if folds else ''}: {e}") from e
            _check_finished_split(workdir / PROTOCOL_RUNS / name / (f"fold{k}" if folds else ""), split)
    workdir.mkdir(parents=True, exist_ok=True)
    save_splits(files.splits, splits, **split_doc)
    write_run_record(config, files, before=before)

    groups = {"train+validation": splits[0].train + splits[0].val, "test": splits[0].test}
    table1 = cohort_table(cohort, groups)

    preds: dict[str, list[dict]] = {}
    live: dict[str, Run] = {}
    flag_itself = True  # the flag row scored by the flag in every fold (not where a patient lacks it)
    pretrained, pretrained_images = {}, []
    if config.protocol.get("pretrain", False):
        for k in range(len(splits)):
            folder = workdir / PROTOCOL_PRETRAIN / (f"fold{k}" if folds else "")
            pretrained[k], report = _pretrained_backbone(config, manifest, folder, k if folds else None)
            pretrained_images.append(report.get("images"))
    for name, run in runs.items():
        preds[name] = []
        for k, split in enumerate(splits):
            rc = _run_config(config, run, manifest, files.tfds, pretrained.get(k))
            folder = workdir / PROTOCOL_RUNS / name / (f"fold{k}" if folds else "")
            print(
                f"[reproduce] {name}{f' fold {k}' if folds else ''} ({run['setting']}, {run['backbone']})", flush=True
            )
            pred, trained = _train_and_predict(rc, split, folder, split_doc)
            preds[name].append(pred)
            if trained is not None and k == 0:
                trained.release_data()  # kept for the figures, not its decoded cohort (one per run had been held)
                live[name] = trained
        if run["setting"] == names.US_LNM:  # the flag's row is the flag itself (FLAG_LOGIT), in every fold or none
            preds[name], flag_itself = flag_row(preds[name], {q.patient_id: q.us_lnm for q in cohort.patients})

    # Table 2 judges on the validation set (holdout) or the out-of-fold test sets (folds).
    t2_subset = "test" if folds else "val"
    results = {
        "manifest": str(manifest),
        "manifest_sha256": cohort.sha256,
        "config": config.name,
        "split": split_doc["method"],
        "patients": len(cohort),
        "threshold": config.protocol.threshold,
        "table1": {"groups": {g: len(v) for g, v in groups.items()}, "rows": table1, "fold": 0 if folds else None},
        "zero_filled": zero_filled(config, cohort, splits, folds),
        "image_init": image_init(config, manifest, pretrained_images),
        "table2": {"subset": t2_subset, "rows": {}},
        "table3": {"subset": "test", "rows": {}, "flag_row": "the flag" if flag_itself else "a model of the flag"},
        "runs": {
            n: {
                "setting": r["setting"],
                "backbone": r["backbone"],
                "train_wall_s": [p["train_wall_s"] for p in preds[n]],
                "best_epoch": [p["best_epoch"] for p in preds[n]],
            }
            for n, r in runs.items()
        },
    }
    figures = {}
    pc = config.protocol
    order = {
        "table3": lambda n: list(pc.settings).index(runs[n]["setting"]),
        "table2": lambda n: (
            list(pc.table2_modalities).index(runs[n]["setting"]),
            list(pc.backbones).index(runs[n]["backbone"]),
        ),
    }
    for table, subset in (("table2", t2_subset), ("table3", "test")):
        for name in sorted((n for n in runs if table in runs[n]["tables"]), key=order[table]):
            run = runs[name]
            y, z, _ = _pooled(preds[name], subset)
            row = {
                "setting": run["setting"],
                "backbone": run["backbone"],
                **_metrics(y, z, config, permutations=table == "table3"),
            }
            if folds:
                row["per_fold"] = [
                    _metrics(f[subset][names.LABEL], f[subset]["logit"], config, permutations=False)
                    for f in preds[name]
                ]
                row["folds"] = _fold_summary(row["per_fold"])
                # the folds' mean AUC's interval, each fold's scores ranked among its own (the
                # pooled row's DeLong interval ranks K models' scores as one model's)
                fold_labels = [np.asarray(f[subset][names.LABEL]) for f in preds[name]]
                row["folds"]["auc"]["ci_cv"] = None  # a fold's patients of one class: its AUC is undefined
                if all(len(np.unique(y)) == 2 for y in fold_labels):
                    scores = [f[subset]["logit"] for f in preds[name]]
                    row["folds"]["auc"]["ci_cv"] = list(cv_auc_ci(fold_labels, scores, config.eval.ci_level)[1:])
            results[table]["rows"][name] = row

    # Figures 4-5: backbones per modality; Figure 7: every setting; Figure 6: convergence.
    delong_ci = f"{config.eval.ci_level:.0%} DeLong CI"
    for m in config.protocol.table2_modalities:
        curves = {}
        for name, row in results["table2"]["rows"].items():
            if row["setting"] == m:
                y, z, _ = _pooled(preds[name], t2_subset)
                curves[row["backbone"]] = (y, M.sigmoid(z), row["auc"], row["auc_ci_delong"])
        if not curves:  # no backbone for this modality: no figure of nothing
            continue
        figures[f"roc_{m}_backbones"] = f"roc_{m}_backbones.png"
        plot_roc(
            curves,
            workdir / figures[f"roc_{m}_backbones"],
            title=f"{names.SETTING_LABELS.get(m, m)}: backbones ({t2_subset} set)",
            ci_name=delong_ci,
        )
    curves = {}
    for name, row in results["table3"]["rows"].items():
        y, z, _ = _pooled(preds[name], "test")
        label = names.SETTING_LABELS.get(row["setting"], row["setting"])
        curves[label] = (y, M.sigmoid(z), row["auc"], row["auc_ci_delong"])
    figures["roc_settings"] = "roc_settings.png"
    pooled_said = ", pooled out-of-fold" if folds else ""
    plot_roc(
        curves, workdir / figures["roc_settings"], title=f"Input settings (test set{pooled_said})", ci_name=delong_ci
    )

    by_setting = {row["setting"]: name for name, row in results["table3"]["rows"].items()}
    comparisons = {}
    for a, b in (("triple", "dual"), ("triple", names.US_LNM), ("dual", names.US_LNM)):
        if a in by_setting and b in by_setting:
            y, za, zb = _aligned(preds[by_setting[a]], preds[by_setting[b]], "test")
            comparisons[f"{a}_vs_{b}"] = delong_test(y, M.sigmoid(za), M.sigmoid(zb))
    results["table3"]["delong"] = comparisons
    # what the paired tests compare, in results.json as in the report (helper-126: the report's alone said it)
    results["table3"]["delong_scores"] = POOLED_DELONG if folds else "each setting's one model on the test split"
    if "triple" in by_setting:
        name = by_setting["triple"]
        triple_dir = workdir / PROTOCOL_RUNS / name / ("fold0" if folds else "")
        figures["convergence_triple"] = "convergence_triple.png"
        plot_convergence(
            read_history(RunFiles(triple_dir).history),
            workdir / figures["convergence_triple"],
            title=f"Triple model ({config.model.backbone}){' fold 0' if folds else ''}",
        )
        if config.protocol.gradcam and config.data.clip_frames == 1:
            from lnm_jax.explain.heatmaps import gradcam  # noqa: PLC0415

            triple = live.get(name) or Run.open(triple_dir)
            res = gradcam(triple, split="test", out=workdir / "gradcam_triple")
            figures["gradcam_correct"] = f"gradcam_triple/{CAM_GRID_CORRECT}"
            figures["gradcam_incorrect"] = f"gradcam_triple/{CAM_GRID_INCORRECT}"
            results["gradcam"] = {k: res[k] for k in ("patients", "correct", "incorrect")}
    results["figures"] = figures
    if config.protocol.gradcam and config.data.clip_frames == 1 and any(p.masks for p in cohort.patients):
        results["lesion_evidence"] = pooled_lesion_evidence(
            {n: runs[n] for n in results["table3"]["rows"]}, workdir, len(splits) if folds else 0, live
        )
    results["reference"] = generator_bayes_aucs(manifest, config)
    results["wall_s"] = time.perf_counter() - t_start
    # as the report, the cards and metadata.json describe it (helper-125: results.json said "pathology after neck
    # dissection" of a synthetic cohort whose report said the generator's labels)
    from lnm_jax.model_card import described_task  # noqa: PLC0415

    results["task"] = described_task(Task.from_config(config), results["reference"] is not None).to_dict()
    write_json(workdir / RESULTS, results)
    write_text(workdir / REPORT, report_markdown(results, groups))
    return results


def pooled_lesion_evidence(runs: dict[str, dict], workdir: Path, folds: int, live: dict[str, Run]) -> dict:
    """Grad-CAM (default method and layer) of every image run's test patients scored against
    their lesion masks (:mod:`lnm_jax.explain.scores`), pooled over the folds' test sets (each
    patient once): ``{run name: {"layer", "summary": per branch, all / positive}}``. Each
    fold's maps and per-image scores stay in its run folder (``gradcam_test/cam_scores.json``),
    reused on a rerun."""
    from lnm_jax.explain.heatmaps import gradcam  # noqa: PLC0415  (only with masks)

    out = {}
    for name, run in runs.items():
        branches = [b for b in names.IMAGE_INPUTS if b in names.parse_modalities(run["setting"])]
        if not branches:
            continue
        rows, layers = [], set()
        for k in range(max(folds, 1)):
            folder = workdir / PROTOCOL_RUNS / name / (f"fold{k}" if folds else "")
            scores = RunFiles(folder).gradcam("test") / CAM_SCORES
            # a file written before the pointing game's tolerance and tie rule is computed again
            if not scores.is_file() or "pointing_tolerance" not in read_json(scores):
                trained = live.get(name) if k == 0 else None
                gradcam(trained or Run.open(folder), split="test", figures=False)
            if scores.is_file():  # absent where the fold's test patients have no mask
                doc = read_json(scores, required=("images", "layer"))
                rows += doc["images"]
                layers.add(doc["layer"])
        if rows:
            out[name] = {"layer": ", ".join(sorted(layers)), "summary": S.summary_table(rows, branches)}
    return out


def generator_bayes_aucs(manifest: Path, config: ConfigDict) -> dict | None:
    """For a synthetic cohort (its generator.json beside the manifest): the Bayes-optimal AUC of
    every setting, from one CEUS frame when the runs read stills of a clip cohort (the rule
    ``evaluate``'s reference follows: :func:`temporal_reference`)."""
    params = generator_params(manifest.parent)
    if params is None:
        return None
    aucs = bayes_auc(params, temporal=temporal_reference(params, config.data.clip_frames))
    return {"bayes_auc": {s: aucs[s] for s in names.SETTINGS if s in aucs}}


def zero_filled(config: ConfigDict, cohort, splits, folds: int) -> dict[str, dict[str, int]]:
    """Per input, how many patients lack it and were scored with zeros in its place
    (``data.zero_fill_missing``): of Table 3's test patients (every fold's, pooled) and of the
    cohort; {} without the opt-in or with nothing missing (helper-85: the report had not said)."""
    if not config.data.get("zero_fill_missing"):
        return {}
    tested = {i for s in (splits if folds else splits[:1]) for i in s.test}
    out = {}
    for name in names.INPUTS:  # (a flag fed as 0 too; helper-87)
        lacking = [p.patient_id for p in cohort.patients if getattr(p, name) is None]
        if lacking:
            out[name] = {"test": sum(i in tested for i in lacking), "cohort": len(lacking)}
    return out


def _fold_auc(auc: dict) -> str:
    """A fold summary's AUC: mean (influence-curve CI, :func:`stats.cv_auc_ci`) +- SD."""
    ci = auc.get("ci_cv")
    ci = (
        f" ({ci[0]:.3f}-{ci[1]:.3f})"
        if ci
        else " (no CI: a fold's patients are of one class)"
        if "ci_cv" in auc
        else ""
    )
    return f"{auc['mean']:.3f}{ci} +- {auc['sd']:.3f}"


def table3_lines(results: dict) -> list[str]:
    """Table 3 as console lines, then a warning where its test patients are few."""
    out = []
    for row in results["table3"]["rows"].values():
        lo, hi = row["auc_ci_delong"]
        at = row["at_threshold"]
        out.append(
            f"{row['setting']:7s} test AUC {row['auc']:.3f} ({lo:.3f}-{hi:.3f})  sens "
            f"{at['sensitivity']:.3f} spec {at['specificity']:.3f} acc {at['accuracy']:.3f}"
        )
    return out + [f"WARNING: {w}" for w in few_test_patients(results)]


def one_class_called(rows: dict, task) -> list[str]:
    """One line per Table 3 setting whose operating point calls no test patient of a class right
    (sensitivity or specificity 0: helper-104, a triple model at 100% / 0% unsaid, where
    evaluate warns), in :func:`lnm_jax.evaluation.summary.calls_text`'s words."""
    out = []
    for row in rows.values():
        at = row["at_threshold"]
        if calls := calls_text(at["sensitivity"], at["specificity"], task.positive, task.negative):
            out.append(
                f"{_label(row, task)} at {at['threshold']:g}: {calls} (sensitivity "
                f"{_pct(at['sensitivity'])}, specificity {_pct(at['specificity'])}): its operating point says nothing "
                "of the model; its AUC still ranks (evaluate chooses a threshold on validation)."
            )
    return out


def calibration_table(rows: dict, task) -> list[str]:
    """Table 3's calibration (TRIPOD+AI 12e/23a): Brier, the calibration intercept and slope with
    their CIs (Van Calster et al. 2016) of each setting's test predictions; the flag row scores 0
    or 1, no probability, and is left out."""
    kept = [r for r in rows.values() if "calibration" in r and r["setting"] != names.US_LNM]
    if not kept:
        return []
    out = ["", "Calibration of the test predictions (uncalibrated probabilities):", ""]
    out += ["| setting | Brier | intercept (95% CI) | slope (95% CI) |", "|---|---:|---:|---:|"]
    for row in kept:
        c = row["calibration"]
        cells = []
        for k in ("intercept", "slope"):
            v, (lo, hi) = c[k], c[f"{k}_ci"]
            cells.append(f"{v:.2f} ({lo:.2f} to {hi:.2f})" if math.isfinite(v) else "undefined")
        out.append(f"| {_label(row, task)} | {c['brier']:.3f} | {cells[0]} | {cells[1]} |")
    return out


def few_test_patients(results: dict) -> list[str]:
    """:func:`lnm_jax.evaluation.evaluate.small_split_warnings` of Table 3's test set (every
    setting is scored on the same patients; helper-57: "AUC 1.000 (1.000-1.000)" on 4, unsaid)."""
    rows = list(results["table3"]["rows"].values())
    return small_split_warnings({"splits": {"test": rows[0]}}) if rows else []


# ------------------------------------------------------------------------------- report


def _p(p) -> str:
    return "-" if p is None or (isinstance(p, float) and math.isnan(p)) else p_text(p)


def _permutations_said(t3: dict) -> str:
    """' (1000 permutations; the smallest p they can give, 1 / (n + 1), is 0.000999)', from the
    rows' ``permutation_n`` (nothing for a results.json from before it was stored)."""
    ns = sorted({row["permutation_n"] for row in t3["rows"].values() if row.get("permutation_n")})
    if not ns:
        return ""
    n = ns[0] if len(ns) == 1 else ns
    floor = ", ".join(f"{1 / (k + 1):.3g}" for k in ns)
    return f" ({n} permutations; the smallest p they can give, 1 / (n + 1), is {floor})"


def _n(table: dict) -> str:
    """', n = N (P positive)' of a table's patients (every row is scored on the same ones)."""
    rows = list(table["rows"].values())
    return f", n = {rows[0]['n']} ({rows[0]['n_positive']} positive)" if rows and "n" in rows[0] else ""


def _ci(row, key) -> str:
    """A row's interval ``key`` as ``lo-hi``; "not computed" where the row holds none (the
    bootstrap's with ``eval.bootstrap=0``: helper-112, a KeyError after every run had trained)."""
    if key not in row:
        return "not computed"
    lo, hi = row[key]
    return f"{lo:.3f}-{hi:.3f}"


def _label(row: dict, task: Task) -> str:
    """A setting's row name, the flag called by the task's name (US-LNM in the paper)."""
    return names.SETTING_LABELS.get(row["setting"], row["setting"]).replace(PAPER.flag, task.flag)


def _pct(x) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}%"


def lesion_evidence_lines(evidence: dict | None, folds: bool) -> list[str]:
    """The report's table of :func:`pooled_lesion_evidence` (nothing without masks)."""
    if not evidence:
        return []
    lines = [
        "",
        f"### Grad-CAM against the lesion masks (test images{', pooled out-of-fold' if folds else ''})",
        "",
        "Mass in lesion / lesion area (1 = chance) and pointing game (the map's maximum within "
        f"{100 * S.POINTING_TOLERANCE:.1f}% of the image side (15/224) of the lesion, tied maxima shared; "
        "constant maps scored as uniform), a random map's in brackets (`lnm_jax/explain/scores.py`).",
        "",
        "| run | layer | branch | images | mass / area, all | pointing, all | positive images | mass / area, "
        "positive | pointing, positive |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, ev in evidence.items():
        for branch, groups in ev["summary"].items():
            cells = []
            for g in ("all", "positive"):
                c, r = groups.get(g, {}).get("cam", {}), groups.get(g, {}).get("random", {})
                cells.append(str(c.get("images", 0)))
                for key in ("mass_ratio_mean", "pointing_game"):
                    cells.append(f"{c[key]:.2f} ({r.get(key, math.nan):.2f})" if key in c else "-")
            lines.append(f"| {name} | {ev['layer']} | {branch} | " + " | ".join(cells) + " |")
    return lines


# what the paired DeLong tests compare with folds: said in the report and recorded in results.json
POOLED_DELONG = (
    "With folds they compare the pooled out-of-fold scores, which rank the K fold models' scores as one model's, "
    "whose scales differ: a difference of scales between folds enters them as one of models."
)


def report_markdown(results: dict, groups: dict) -> str:
    folds = results["split"] != "holdout"
    from lnm_jax.model_card import DEFAULT_TASK_LIMIT, described_task  # noqa: PLC0415

    is_synthetic = results.get("reference") is not None  # the generator's Bayes AUCs: a synthetic cohort
    task = described_task(Task.from_config(results), is_synthetic)  # an older results.json: the paper's task
    default = not is_synthetic and results.get("task", PAPER.to_dict()) == PAPER.to_dict()
    lines = [
        f"# Protocol report: {results['config']}",
        "",
        f"Task: {task.prob}, {task.name} ({task.positive} = 1, {task.negative} = 0; label from {task.label_source}); "
        f"the flag is {task.flag}: {task.flag_meaning}." + (f" {DEFAULT_TASK_LIMIT}" if default else ""),
        "",
        f"Cohort `{results['manifest']}` ({results['patients']} patients, sha256 "
        f"{results['manifest_sha256'][:12]}); split: {results['split']}; training time summed "
        f"over the runs {sum(sum(r['train_wall_s']) for r in results['runs'].values()) / 60:.1f} min; "
        f"this invocation {results['wall_s'] / 60:.1f} min (finished runs are reused). Every number "
        f"is also in `results.json`.",
        "",
        *([line, ""] if (line := image_init_line(results.get("image_init"), folds)) else []),
        "## Table 1: cohort characteristics"
        + (
            f" (fold 0's split; Tables 2 and 3 pool every fold's test patients, n = {results['patients']})"
            if folds
            else ""
        ),
        "",
        cohort_table_markdown(results["table1"]["rows"], groups),
        "",
        # (helper-104, CONSORT 2010 item 15: baseline differences between randomised groups are not tested as findings)
        "The groups are one random (stratified) split of one cohort: its p-values describe how the draw fell, "
        "not a difference between populations; a small one is chance, not a finding.",
        "",
    ]
    t2 = results["table2"]
    lines += [
        f"## Table 2: backbones per image modality ({t2['subset']} set"
        f"{', pooled out-of-fold' if folds else ', the 8:2 split of the training set'}{_n(t2)})",
        "",
    ]
    if not folds and t2["rows"]:  # (helper-85: it read as an independent evaluation)
        lines += [
            "Each run's best epoch was chosen on these validation patients, so these AUCs are optimistic; "
            "Table 3's test set is the independent one.",
            "",
        ]
    elif t2["rows"]:  # (helper-90: the docs had said validation set for folds too)
        lines += [
            "With folds, each fold's validation patients chose its epoch, so these are scored on the test folds: "
            "Table 3's patients. A backbone chosen from this table is chosen on them, and Table 3 then is no "
            "independent test of it.",
            "",
        ]
    if not t2["rows"]:
        lines += ["Not run: `protocol.table2_modalities` or `protocol.backbones` is empty.", ""]
    else:
        lines += [
            "| modality | backbone | AUC | 95% CI (DeLong) | 95% CI (bootstrap) | sensitivity | specificity |"
            " accuracy |" + (" AUC mean over folds (95% CI, LeDell) +- SD |" if folds else ""),
            "|---|---|---:|---:|---:|---:|---:|---:|" + ("---:|" if folds else ""),
        ]
    for row in t2["rows"].values():
        line = (
            f"| {_label(row, task)} | {row['backbone']} | {row['auc']:.3f} | "
            f"{_ci(row, 'auc_ci_delong')} | {_ci(row, 'auc_ci_bootstrap')} | "
            + " | ".join(_pct(row["at_threshold"][k]) for k in THRESHOLD_METRICS)
            + " |"
        )
        if folds:
            line += f" {_fold_auc(row['folds']['auc'])} |"
        lines.append(line)
    lines += ["", *(f"![{k}]({v})" for k, v in results["figures"].items() if k.endswith("_backbones")), ""]
    t3 = results["table3"]
    lines += [
        f"## Table 3: input settings (test set{', pooled out-of-fold' if folds else ''}{_n(t3)})",
        "",
        "| setting | AUC | 95% CI (DeLong) | 95% CI (bootstrap) | sensitivity (p) | specificity (p) | accuracy (p) |"
        + (" AUC mean over folds (95% CI, LeDell) +- SD |" if folds else ""),
        "|---|---:|---:|---:|---:|---:|---:|" + ("---:|" if folds else ""),
    ]
    for row in t3["rows"].values():
        pp = row.get("permutation_p", {})
        line = (
            f"| {_label(row, task)} | {row['auc']:.3f} | {_ci(row, 'auc_ci_delong')} | "
            f"{_ci(row, 'auc_ci_bootstrap')} | "
            + " | ".join(f"{_pct(row['at_threshold'][k])} ({_p(pp.get(k))})" for k in THRESHOLD_METRICS)
            + " |"
        )
        if folds:
            line += f" {_fold_auc(row['folds']['auc'])} |"
        lines.append(line)
    lines += [f"\n**Few test patients.** {w}." for w in few_test_patients(results)]
    lines += [f"\n**One class called.** {w}" for w in one_class_called(t3["rows"], task)]
    lines += calibration_table(t3["rows"], task)
    if any(row["setting"] == names.US_LNM for row in t3["rows"].values()):
        lines += [
            "",
            f"The {task.flag} row scores the flag itself (0 or 1), as the paper's row does: its AUC and its "
            "operating point are the flag's own, not a model's fitted to it (`runs/us_lnm` holds such a model, "
            "not used by the row)."
            if t3.get("flag_row") == "the flag"
            else f"The {task.flag} row is a model of the flag alone (some patients lack the flag): its operating "
            "point is the model's, not the flag's.",
        ]
    for name, n in results.get("zero_filled", {}).items():
        lines += [
            "",
            f"**Scored with zeros for a missing input** (`data.zero_fill_missing`): {n['test']} of the test "
            f"patients ({n['cohort']} of the cohort) lack {name}; the settings that take it saw zeros in its place.",
        ]
    lines += [
        "",
        "AUC CIs: DeLong's variance on the logit scale, and the bootstrap (BCa, patients resampled within "
        "each class); a CI of 0.000-1.000 is one that cannot be computed (one patient in a class). "
        "Sensitivity, specificity and accuracy at probability threshold "
        f"{results.get('threshold', 0.5)}; p: one-sided label-permutation test{_permutations_said(t3)}. "
        "With the predictions "
        "fixed, a permutation changes only the true positives, and all three metrics grow with them: "
        "their p-values coincide by construction (one test of the predictions against the labels).",
        "",
    ]
    if t3.get("delong"):
        lines.append(  # (helper-104: the comparisons had been given unlabelled)
            f"Paired DeLong tests, exploratory: {len(t3['delong'])} comparisons, not corrected for "
            "multiplicity; a p above 0.05 means not shown to differ at this test set's size, not equal."
            + (f" {POOLED_DELONG}" if folds else "")  # (helper-125: the CI's caveat had not reached the tests)
        )
    for k, t in t3.get("delong", {}).items():
        a, b = k.split("_vs_")
        p = format_p(t)
        lines.append(
            f"- DeLong, {_label({'setting': a}, task)} vs {_label({'setting': b}, task)}: "
            f"AUC {t['auc_a']:.3f} vs {t['auc_b']:.3f}, "
            f"difference {t['difference']:+.3f}, {p}"
        )
    lines += lesion_evidence_lines(results.get("lesion_evidence"), folds)
    ref = results.get("reference")
    if ref:
        lines += [
            "",
            "Synthetic cohort: Bayes-optimal AUC of each setting: "
            + ", ".join(f"{k} {v:.3f}" for k, v in ref["bayes_auc"].items()),
        ]
    figures = results["figures"]
    lines += [""] + [f"![{k}]({v})" for k, v in figures.items() if not k.endswith("_backbones")]
    if folds and "gradcam_correct" in figures:  # (helper-85: unlabelled)
        lines += ["", "The Grad-CAM grids and the convergence curves are fold 0's."]
    lines += [
        "",
        "## Runs",
        "",
        "| run | setting | backbone | best epoch | train wall (s) |",
        "|---|---|---|---:|---:|",
    ]
    for name, r in results["runs"].items():
        lines.append(
            f"| {name} | {r['setting']} | {r['backbone']} | {', '.join(map(str, r['best_epoch']))} | "
            f"{sum(r['train_wall_s']):.0f} |"
        )
    return "\n".join(lines) + "\n"
