"""The ``lnm-jax`` command: each sub-command parses its arguments and calls one library
function; errors a user can fix are printed as one line and exit 1 (bad arguments: 2).

    lnm-jax synth     --out DIR [--patients 308 --seed 0 ...]   write a synthetic cohort
    lnm-jax validate  MANIFEST [--no-labels] [--workdir W | --config C]
                                                                 check a manifest against a model, write nothing
    lnm-jax norm-stats --manifest M [--image-size 224 --seed 0]  per-modality mean/std of a train split
    lnm-jax train     --config paper_triple --workdir W [--resume] [--config.x.y=v ...]
    lnm-jax pretrain  --manifest M [--manifest M2 ...] --workdir W [--config small_cohort]
                                                                 self-supervised backbones for model.init_from
    lnm-jax evaluate  --workdir W [--checkpoint best|latest --splits val,test --out DIR]
    lnm-jax availability --workdir W [--dedicated no_ceus=RUN ...]  metrics per availability pattern
    lnm-jax predict   --workdir W | --exported DIR --manifest NEW.csv --out probs.csv [--zero-fill-missing]
    lnm-jax external-validation --predictions probs.csv --card metadata.json --out DIR
                                                                 a site's labelled patients against the card
    lnm-jax export    --workdir W --out DIR [--format stablehlo,onnx]  the model without the training stack + model card
    lnm-jax relocate  --workdir W --manifest NEW_PLACE.csv          point a run at its cohort, moved (checked)
    lnm-jax gradcam   --workdir W [--split test | --manifest M --out DIR]
                      [--method gradcam|hirescam|gradcam++ --layer auto]
    lnm-jax convert-weights --from torchvision|keras --in FILE --out DIR [--arch resnet50|vgg11|...]
    lnm-jax reproduce --workdir W [--manifest M] [--folds K] [--config reproduce_cpu]
                                                                 the paper's protocol: Tables 1-3, figures
    lnm-jax convert-busbra --src BUSBRA_DIR --out MANIFEST.csv  a BUS-BRA release as a cohort manifest
    lnm-jax convert-ddti --src DDTI_DIR --out MANIFEST.csv     DDTI thyroid B-mode with nodule masks
    lnm-jax crop-to-lesion --manifest M --out NEW.csv [--margin 0.25]  crop columns around each lesion mask
    lnm-jax deidentify --manifest M --out DIR --mapping FILE [--keep-columns age,sex]
                                                                 a de-identified, cropped copy of a cohort
    lnm-jax demo      --workdir W                                synth + train + evaluate

Commands that take a config accept ml_collections overrides (``--config.train.epochs=3``);
without ``--config`` they start from the built-in defaults (``demo`` for demo, ``small_cohort``
for pretrain, ``paper_triple`` otherwise; ``--config NAME`` names any of ``lnm_jax/configs/``,
``--config FILE`` a file of your own). A failure prints one line,
``lnm-jax <command>: error: ...``, and exits 1 (2 for bad arguments); ``--debug`` anywhere on
the command line shows the traceback instead.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import difflib
import errno
import os
import shlex
import signal
import sys
import threading
from pathlib import Path

from lnm_jax import names, text_encoding
from lnm_jax.command_line import (
    UsageError,
    apply_overrides,
    check_option_forms,
    comma_list_type,
    config_value_type,
    did_you_mean,
    leftover_line,
    load_config_file,
    new_parser,
    parse_config_command,
    probability_type,
    seed_type,
    split_overrides,
    switch_value,
)
from lnm_jax.fileio import ask_stop, clear_stop, stop_signal
from lnm_jax.output_guard import guard_output

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


# (helper-83: crop-to-lesion's help had said "a file this command did not write", and it refuses
# its own earlier output alike: only predict recognises its own)
OVERWRITE_HELP = "replace an existing file, its own earlier output too (never one of its inputs, nor a file in one)"
OWN_OUTPUT_OVERWRITE_HELP = (
    "replace an existing file this command did not write (its own earlier output is replaced without it; never one "
    "of its inputs, nor a file in one)"
)


def hold(workdir, command: str, *, create: bool = False):
    """The run folder's one-writer lock (imported when a command needs it: --help stays fast)."""
    from lnm_jax.run_lock import hold as hold_lock

    return hold_lock(workdir, command, create=create)


def _fail(command: str, msg: str, code: int) -> int:
    prog = f"lnm-jax {command}" if command else "lnm-jax"
    print(f"{prog}: error: {msg}", file=sys.stderr)
    return code


# ------------------------------------------------------------------------- plain commands


def _framing_arguments(p: argparse.ArgumentParser) -> None:
    """The options of a command that reads a manifest without a config (norm-stats, deidentify,
    crop-to-lesion): the config's framing fields that decide what the manifest's images are, so
    that it reads a cohort as training will (:class:`lnm_jax.data.pixels.sources.Framing`)."""
    p.add_argument(
        "--ceus-region",
        default="auto",
        choices=names.CEUS_REGIONS,
        help="config data.ceus_region: a CEUS dual display's contrast side",
    )
    p.add_argument(
        "--accept-secondary-capture",
        action="store_true",
        help="config data.accept_secondary_capture: read DICOM secondary captures (screens saved as pictures) as "
        "images",
    )


def _framing(a: argparse.Namespace, field_of_view_mm: float = 0.0):
    """The :class:`~lnm_jax.data.pixels.sources.Framing` of :func:`_framing_arguments`' options."""
    from lnm_jax.data.pixels.sources import Framing

    return Framing(field_of_view_mm, a.ceus_region, a.accept_secondary_capture)


def cmd_synth(argv: list[str]) -> int:
    from lnm_jax.data.synth.synthetic import PRESETS, SynthParams, describe, generate_cohort, preset_params

    p = new_parser(prog="lnm-jax synth", description="Write a synthetic cohort.")
    p.add_argument("--out", required=True, type=Path, help="new folder for the cohort (images and manifest.csv)")
    for f in dataclasses.fields(SynthParams):
        what = f"{SynthParams.HELP[f.name]} (default {f.default}, or the preset's)"
        p.add_argument(f"--{f.name.replace('_', '-')}", type=type(f.default), default=None, help=what)
    p.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default="default",
        help="'paper': cue strengths giving the paper's single-modality AUCs (B-mode 0.72, CEUS 0.73)",
    )
    a = p.parse_args(argv)
    try:
        params = preset_params(
            a.preset,
            **{f.name: getattr(a, f.name) for f in dataclasses.fields(SynthParams) if getattr(a, f.name) is not None},
        )
    except ValueError as e:
        raise UsageError(str(e)) from e
    guard_output(a.out, kind="folder", can_overwrite=False)  # never into a run's state; a new folder
    manifest = generate_cohort(a.out, params, progress=True)
    print(f"wrote {params.patients} patients to {manifest}\n{describe(params)}")
    return 0


def cmd_validate(argv: list[str]) -> int:

    p = new_parser(
        prog="lnm-jax validate",
        description="Validate a cohort manifest (every image decoded) against a model: the inputs it takes, "
        "its image size, the configured split, and model.init_from's backbone. Writes nothing.",
    )
    p.add_argument("manifest", type=Path, nargs="?", help="the manifest to check")
    p.add_argument(
        "--manifest", dest="manifest_option", type=Path, metavar="MANIFEST", help="the same, as predict takes it"
    )
    p.add_argument("--no-labels", action="store_true", help="lnm may be missing (new patients)")
    model = p.add_mutually_exclusive_group()
    model.add_argument("--workdir", type=Path, help="check against this trained run's model")
    model.add_argument("--config", type=Path, help="check against this config file's model and split")
    p.epilog = "--config.FIELD=VALUE overrides a field of that config (or of the built-in one), as train takes it"
    if {"-h", "--help"} & set(argv):
        p.parse_args(["--help"])  # (exits) before a config is built: --help loads no JAX
    pre = new_parser(prog="lnm-jax validate", add_help=False)  # the config the overrides apply to: their types
    pre.add_argument("--workdir", type=Path)
    pre.add_argument("--config", type=Path)
    known, _ = pre.parse_known_args(argv)
    known.overrides = [x for x in argv if x.startswith(("--config.", "--noconfig."))]
    base = _config_for_validate(known)
    overrides, others = split_overrides(argv, base)
    a, rest = p.parse_known_args(others)
    if rest:
        raise UsageError(
            leftover_line(rest, argv, base) + (did_you_mean(rest[0], p) if rest[0].startswith("--") else "")
        )
    if a.manifest and a.manifest_option and a.manifest != a.manifest_option:
        p.error(f"two manifests given ({a.manifest} and --manifest {a.manifest_option}): check one at a time")
    a.manifest = a.manifest or a.manifest_option
    if a.manifest is None:
        p.error("a manifest is needed: lnm-jax validate MANIFEST (or --manifest MANIFEST)")
    from lnm_jax.config import check_fields
    from lnm_jax.data.cohorts.manifest import ManifestError, grouped, manifest_checks, read_manifest, whole_columns
    from lnm_jax.data.cohorts.survey import survey
    from lnm_jax.data.pixels.sources import Framing
    from lnm_jax.preflight import report

    config = apply_overrides(base, overrides)
    check_fields(config)  # a value no run takes: exit 2 before the manifest is read, as train's
    # every warning listed (the line other commands say names three)
    try:
        cohort = read_manifest(a.manifest, require_labels=not a.no_labels, warn=False, **manifest_checks(config.data))
    except ManifestError as e:  # what the images of the other rows show is said too: every warning at once
        if e.readable is not None and e.readable.patients:
            images = survey(e.readable, Framing.from_config(config.data), image_size=int(config.data.image_size))
            n = len(e.readable)
            print(f"of the {n} row{'s' * (n != 1)} read without a problem:", *images.lines, sep="\n")
        raise
    model = bool(a.workdir or a.config or overrides)
    lines, problems, test = report(
        cohort,
        config,
        labelled=not a.no_labels,
        model=model,
        trains=model and not a.workdir,
        new_patients=bool(a.workdir),
    )
    if not a.workdir:  # a trained run's backbone was read when it trained (its folder may be gone since)
        lines, problems = _check_init_from(config, cohort, lines, problems, test)
    images = survey(cohort, Framing.from_config(config.data), image_size=int(config.data.image_size))
    from lnm_jax.task import Task

    warned = [f"warning: {w}" for w in grouped(cohort.warnings)]
    for code in dict.fromkeys(w.code for w in cohort.warnings):  # (helper-124: said in the one-line summaries only)
        for name in whole_columns([w for w in cohort.warnings if w.code == code], cohort.patients):
            warned.append(f"warning: [{code}] said of every {name} image of the cohort")
    problems = [*images.problems, *problems]
    if a.workdir and not problems:  # what predict would warn of these patients (it had been said OK alone)
        warned += _intensity_warnings(a.workdir, config, cohort)
    # "OK" only where nothing below refuses the cohort (helper-56: "OK" then an error line)
    described = cohort.describe(
        Task.from_config(config).positive, verdict=None if problems else "OK", labels=not a.no_labels
    )  # (--no-labels: no positives counted, as the docs say, whatever the column holds: helper-98)
    print("\n".join([described, *images.lines, *lines, *warned]))
    if problems:
        raise ValueError(f"{a.manifest} cannot be used as configured: " + " | ".join(problems))
    return 0


def _intensity_warnings(workdir: Path, config, cohort) -> list[str]:
    """``predict``'s warnings of ``cohort``'s images far outside the training intensities of the
    run in ``workdir`` ([] where it recorded none)."""
    from lnm_jax import names
    from lnm_jax.data.pixels.sources import Framing
    from lnm_jax.run import read_intensity_reference, recorded_run_id
    from lnm_jax.run_files import RunFiles
    from lnm_jax.serving import intensity_lines

    files = RunFiles(workdir)
    reference = read_intensity_reference(files, recorded_run_id(files))
    if reference is None:
        return []
    inputs = names.parse_modalities(config.modalities)
    size, frames = int(config.data.image_size), int(config.data.get("clip_frames", 1))
    return intensity_lines(cohort, reference, inputs, size, frames, Framing.from_config(config.data))


def _check_init_from(config, cohort, lines: list[str], problems: list[str], test):
    """``validate``'s (lines, problems) with ``model.init_from``'s backbone checked as ``train``
    checks it before writing anything (:func:`lnm_jax.run.check_init_from`, against the test
    patient IDs ``test`` of the split report made, ``None`` unlabelled): its notes as lines,
    its refusal (a missing folder, an old Keras port, another architecture or width, a backbone
    pretrained on test patients) as a problem. Unchanged without ``init_from``."""
    if not config.model.get("init_from"):
        return lines, problems
    from lnm_jax.run import check_init_from

    try:
        return [*lines, *check_init_from(config, cohort, test)], problems
    except (OSError, ValueError) as e:
        said = str(e) if str(e).startswith("model.init_from") else f"model.init_from: {e}"
        return lines, [*problems, said]


def _config_for_validate(a):
    from lnm_jax.config import base_config
    from lnm_jax.run import load_trained_config

    if a.workdir:  # config.json as its checkpoint was trained with it
        if a.overrides:  # a run reads new patients as it was trained: an override would check another reading
            raise UsageError(
                f"{' '.join(a.overrides)}: --workdir checks the cohort against the run as it was trained; "
                "its config is not overridden (train a new run for other settings)"
            )
        return load_trained_config(a.workdir)
    if a.config:
        return load_config_file(a.config)
    return base_config()


def cmd_norm_stats(argv: list[str]) -> int:
    from lnm_jax.config import base_config  # noqa: PLC0415  (its defaults: one definition)

    d = base_config().data
    p = new_parser(prog="lnm-jax norm-stats", description="Per-modality mean/std of the training split.")
    p.add_argument("--manifest", required=True, type=Path, help="the cohort manifest CSV")
    p.add_argument(
        "--image-size",
        type=config_value_type("data.image_size", int),
        default=d.image_size,
        help="config data.image_size (pixels)",
    )
    p.add_argument("--seed", type=seed_type, default=d.split.seed, help="split seed (config data.split.seed)")
    p.add_argument("--out", type=Path, help="also write the JSON here")
    p.add_argument(
        "--field-of-view-mm",
        type=config_value_type("data.field_of_view_mm"),
        default=d.field_of_view_mm,
        help="config data.field_of_view_mm",
    )
    _framing_arguments(p)
    p.add_argument(
        "--clip-frames",
        type=config_value_type("data.clip_frames", int),
        default=d.clip_frames,
        help="config data.clip_frames: the CEUS clip frames training feeds",
    )
    fractions = {k: config_value_type(f"data.split.{k}_fraction") for k in ("test", "val")}
    for k in ("test", "val"):
        default = d.split[f"{k}_fraction"]
        p.add_argument(f"--{k}-fraction", type=fractions[k], default=default, help=f"config data.split.{k}_fraction")
    p.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    a = p.parse_args(argv)
    if a.test_fraction + a.val_fraction >= 1:
        p.error(f"--test-fraction + --val-fraction = {a.test_fraction + a.val_fraction:g}, leaving no training set")
    from lnm_jax.data.loaders.loader import manifest_norm_stats

    framing = _framing(a, a.field_of_view_mm)
    manifest_norm_stats(
        a.manifest,
        image_size=a.image_size,
        seed=a.seed,
        out=a.out,
        framing=framing,
        overwrite=a.overwrite,
        clip_frames=a.clip_frames,
        test_fraction=a.test_fraction,
        val_fraction=a.val_fraction,
    )
    return 0


# ------------------------------------------------------------------- config-driven commands


def cmd_train(argv: list[str]) -> int:
    from lnm_jax.config import base_config
    from lnm_jax.run_files import RunFiles

    pre = new_parser(prog="lnm-jax train", add_help=False)
    pre.add_argument("--workdir")
    # read as absl reads the switch below (--resume, --resume=false, --noresume); a value after a
    # space is taken here and refused by absl, as a leftover
    pre.add_argument("--resume", nargs="?", const="true", default="false", type=switch_value)
    # --noresume=VALUE is refused by absl, in its one line; read here as not resuming
    pre.add_argument("--noresume", dest="resume", nargs="?", const=False, type=lambda _: False)
    known, _ = pre.parse_known_args(argv)
    known.resume = known.resume is True
    default = base_config
    if known.resume and known.workdir and not RunFiles(known.workdir).config.is_file():
        if RunFiles(known.workdir).checkpoints.is_dir():  # a run that lost its config.json: named as such
            from lnm_jax.run_config import load_config

            load_config(known.workdir)
        raise UsageError(
            f"--resume: {known.workdir} holds no run (no {RunFiles(known.workdir).config.name}); "
            "drop --resume to start a new one"
        )
    if known.resume and known.workdir:

        def default():  # resume: the run's own config
            from lnm_jax.run_config import load_config

            return load_config(known.workdir)

    def extra(flags, fv):
        flags.DEFINE_bool("resume", False, "continue from the latest checkpoint", flag_values=fv)
        flags.DEFINE_bool(
            "distributed",
            False,
            "multi-host: start jax.distributed first (address, "
            "process count and id from JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, "
            "JAX_PROCESS_ID or the cluster)",
            flag_values=fv,
        )

    config, fv = parse_config_command("train", argv, default, extra)
    from lnm_jax.run import Run
    from lnm_jax.training.loop import train

    if fv.distributed:
        from lnm_jax.training.sharding import initialize

        initialize()
    with hold(fv.workdir, "train", create=True):
        best = train(Run.create(config, fv.workdir, resume=fv.resume))
    print(f"best validation AUC {best['val_auc']:.4f} at epoch {best['epoch']}; run in {fv.workdir}")
    return 0


def cmd_pretrain(argv: list[str]) -> int:
    from lnm_jax.config import small_cohort_config

    def extra(flags, fv):
        flags.DEFINE_multi_string(
            "manifest",
            [],
            "a cohort manifest; the first is the downstream cohort, whose test split is left out",
            flag_values=fv,
        )
        flags.DEFINE_integer("fold", None, "with protocol.folds=K: leave out fold N's test patients", flag_values=fv)
        flags.DEFINE_bool("include-test", False, "also pretrain on the downstream test split (leakage)", flag_values=fv)
        flags.DEFINE_bool(
            "resume",
            False,
            "continue from the last checkpoint (every pretrain.checkpoint_every_epochs epochs); give the same "
            "overrides again",
            flag_values=fv,
        )

    config, fv = parse_config_command("pretrain", argv, small_cohort_config, extra)
    from lnm_jax.pretraining.pretrain import (
        BACKBONES,
        CHECKPOINTS,
        INPUTS_RECORD,
        backbone_dir,
        groups,
        pretrain,
        probe_lines,
    )

    if not fv.manifest:
        raise UsageError("--manifest is required (repeat it for more manifests)")
    held = [Path(fv.workdir) / n for n in (INPUTS_RECORD, CHECKPOINTS, BACKBONES)]
    if fv.resume and not any(p.exists() for p in held):  # as train's: not a fresh start in silence
        raise UsageError(
            f"--resume: {fv.workdir} holds no pretraining run (no {INPUTS_RECORD}); drop --resume to start a new one"
        )
    with hold(fv.workdir, "pretrain", create=True):
        include_test = fv["include-test"].value
        report = pretrain(config, fv.manifest, fv.workdir, fold=fv.fold, include_test=include_test, resume=fv.resume)
    print(probe_lines(report))
    for group in groups(config):
        print(f"backbone ({group}): {backbone_dir(fv.workdir, group)}")
    print(f"use with: --config.model.init_from={backbone_dir(fv.workdir, 'shared')}")
    return 0


RUN_FOLDER_HELP = "a training run folder (lnm-jax train --workdir)"
CHECKPOINT_HELP = "best (highest validation AUC, the default) or latest (the last epoch)"


def cmd_evaluate(argv: list[str]) -> int:

    p = new_parser(prog="lnm-jax evaluate", description="Evaluate a run's checkpoint.")
    p.add_argument("--workdir", required=True, type=Path, help=RUN_FOLDER_HELP)
    p.add_argument("--checkpoint", choices=("best", "latest"), default="best", help=CHECKPOINT_HELP)
    p.add_argument(
        "--splits", type=comma_list_type(names.SPLITS), default="val,test", help="comma list of train,val,test"
    )
    p.add_argument(
        "--out", type=Path, help="where the metrics, predictions and plots go (default: WORKDIR/eval_CHECKPOINT)"
    )
    a = p.parse_args(argv)
    from lnm_jax.evaluation.evaluate import evaluate, evaluation_lines
    from lnm_jax.run import Run

    with hold(a.workdir, "evaluate"):
        res = evaluate(Run.open(a.workdir), checkpoint=a.checkpoint, subsets=a.splits, out=a.out)
    print(evaluation_lines(res))
    return 0


def _pattern_run(item: str):
    from lnm_jax.run import Run

    name, sep, folder = item.partition("=")
    if not sep or name not in names.AVAILABILITY_PATTERNS:
        raise UsageError(
            f"--dedicated wants PATTERN=RUN with PATTERN in {sorted(names.AVAILABILITY_PATTERNS)}, got {item!r}"
        )
    return name, Run.open(folder)


def cmd_availability(argv: list[str]) -> int:

    p = new_parser(prog="lnm-jax availability", description="Metrics of a missing-input run per availability pattern.")
    p.add_argument("--workdir", required=True, type=Path, help=RUN_FOLDER_HELP)
    p.add_argument("--checkpoint", choices=("best", "latest"), default="best", help=CHECKPOINT_HELP)
    p.add_argument("--split", default="test", choices=("val", "test"), help="the split whose patients are scored")
    p.add_argument(
        "--dedicated",
        action="append",
        default=[],
        metavar="PATTERN=RUN",
        help=f"a run trained on that pattern's inputs alone; PATTERN in {sorted(names.AVAILABILITY_PATTERNS)}",
    )
    p.add_argument("--out", type=Path, help="where availability.json and .md go (default: WORKDIR/eval_CHECKPOINT)")
    a = p.parse_args(argv)
    from lnm_jax.evaluation.availability import availability_table, evaluate_availability
    from lnm_jax.run import Run

    with hold(a.workdir, "availability"):
        res = evaluate_availability(
            Run.open(a.workdir),
            checkpoint=a.checkpoint,
            subset=a.split,
            dedicated=dict(_pattern_run(x) for x in a.dedicated),
            out=a.out,
        )
    print(availability_table(res), end="")
    print(f"written to {res['out']}")
    return 0


def cmd_external_validation(argv: list[str]) -> int:

    p = new_parser(
        prog="lnm-jax external-validation",
        description="A model on a site's own labelled patients: predict's CSV against the model's card.",
    )
    p.add_argument(
        "--predictions",
        required=True,
        type=Path,
        help="the CSV lnm-jax predict (or an export's predict.py) wrote for a manifest with the lnm column",
    )
    p.add_argument(
        "--card",
        required=True,
        type=Path,
        help="the model's metadata.json (WORKDIR/eval_best/metadata.json, or the export folder's)",
    )
    p.add_argument("--out", required=True, type=Path, help="the folder to write metrics.json and the figures to")
    p.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples of the AUC's CI (0: DeLong's)")
    p.add_argument("--seed", type=seed_type, default=0, help="the bootstrap's seed")
    p.add_argument(
        "--update",
        choices=names.UPDATE_CHOICES,
        default="closed-test",
        help="the update predict --site-update applies to the site's next patients: none, intercept (recalibration "
        "in the large), logistic (intercept and slope), or closed-test, the simplest of these the site's patients "
        "support (Vergouwe et al., Stat Med 2017)",
    )
    a = p.parse_args(argv)
    if a.bootstrap < 0:
        p.error(f"--bootstrap {a.bootstrap}: a count of resamples, 0 or more")
    from lnm_jax.evaluation.external import external_lines, external_validation

    record = external_validation(a.predictions, a.card, a.out, n_boot=a.bootstrap, seed=a.seed, update=a.update)
    print(external_lines(record))
    return 0


def cmd_predict(argv: list[str]) -> int:

    p = new_parser(prog="lnm-jax predict", description="P(LNM) for new patients.")
    model = p.add_mutually_exclusive_group(required=True)
    model.add_argument("--workdir", type=Path, help="a training run folder")
    model.add_argument("--exported", type=Path, help="a folder written by lnm-jax export (no run folder needed)")
    p.add_argument("--manifest", required=True, type=Path, help="the new patients' manifest CSV (labels optional)")
    p.add_argument("--out", required=True, type=Path, help="the CSV of probabilities to write")
    p.add_argument("--checkpoint", choices=("best", "latest"), default="best", help=CHECKPOINT_HELP)
    p.add_argument(
        "--zero-fill-missing",
        action="store_true",
        help="score patients who lack an input the model was not trained to miss, feeding it as zeros",
    )
    p.add_argument("--overwrite", action="store_true", help=OWN_OUTPUT_OVERWRITE_HELP)
    p.add_argument("--fingerprint", help=f"with --exported: {names.FINGERPRINT_HELP}")
    p.add_argument(
        "--format",
        choices=names.EXPORT_FORMATS,
        help="with --exported: which program scores (onnx: model.onnx with onnxruntime; default stablehlo)",
    )
    from lnm_jax.serving import SITE_UPDATE_HELP

    p.add_argument("--site-update", type=Path, help=SITE_UPDATE_HELP)
    a = p.parse_args(argv)
    for option in ("fingerprint", "format"):
        if getattr(a, option) and not a.exported:
            p.error(f"--{option}: only with --exported (a run folder has no export {option})")
    from lnm_jax import serving
    from lnm_jax.evaluation.evaluate import predict_manifest
    from lnm_jax.run import Run

    if a.exported:  # the functions the export folder's own predict.py runs
        model = serving.load(a.exported, a.format or "stablehlo", fingerprint=a.fingerprint)
        out = serving.predict_manifest(
            model,
            a.manifest,
            a.out,
            zero_fill_missing=a.zero_fill_missing,
            overwrite=a.overwrite,
            site_update=a.site_update,
        )
    else:
        out = predict_manifest(
            Run.open(a.workdir),
            a.manifest,
            a.out,
            checkpoint=a.checkpoint,
            zero_fill_missing=a.zero_fill_missing,
            overwrite=a.overwrite,
            site_update=a.site_update,
        )
    print(f"wrote {out}")
    from lnm_jax.export_files import METADATA
    from lnm_jax.run_files import RunFiles

    card = (a.exported if a.exported else RunFiles(a.workdir).evaluation(a.checkpoint)) / METADATA
    if (labelled := _labelled_rows(out)) and card.is_file():  # (helper-99: a site's labels, read by nothing)
        print(
            f"note: {labelled} of these patients have a label: lnm-jax external-validation --predictions {out} "
            f"--card {card} --out DIR reads them against the model's card (AUC, its cut-offs and calibration here)"
        )
    return 0


def _labelled_rows(predictions: Path) -> int:
    """How many rows of predict's CSV carry a label (the manifest's lnm column)."""
    import csv  # noqa: PLC0415

    with Path(predictions).open(newline="", encoding="utf-8") as f:
        return sum(1 for row in csv.DictReader(f) if (row.get(names.LABEL) or "").strip())


def cmd_gradcam(argv: list[str]) -> int:

    p = new_parser(
        prog="lnm-jax gradcam",
        description="Grad-CAM heatmaps of both image branches, for a split of the run or any manifest; maps as "
        "arrays (cams.npz) and, where the manifest has bmode_mask/ceus_mask, scored against the lesion "
        "(cam_scores.json: mass in lesion / lesion area, pointing game, a random-map baseline).",
    )
    p.add_argument("--workdir", required=True, type=Path, help=RUN_FOLDER_HELP)
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--split", default="test", choices=("train", "val", "test"), help="the run's patients to explain"
    )
    where.add_argument("--manifest", type=Path, help="any cohort manifest (new patients; labels optional)")
    p.add_argument("--out", type=Path, help="default: WORKDIR/gradcam_SPLIT (needed with --manifest)")
    p.add_argument("--checkpoint", choices=("best", "latest"), default="best", help=CHECKPOINT_HELP)
    p.add_argument("--method", choices=names.CAM_METHODS, default="gradcam", help="the class-activation method")
    p.add_argument(
        "--layer",
        default="auto",
        choices=("auto", *names.CAM_LAYERS),
        help="auto: the deepest stage whose map is at least 7x7 at the run's image size",
    )
    p.add_argument(
        "--target",
        choices=names.CAM_TARGETS,
        default="lnm",
        help="lnm: evidence for the positive class (the logit); no_lnm: against it (minus the logit)",
    )
    p.add_argument(
        "--threshold", type=probability_type, default=0.5, help="P(LNM) cut for correct/incorrect, in (0, 1)"
    )
    p.add_argument("--seed", type=seed_type, default=0, help="of the random-map baseline")
    p.add_argument(
        "--pointing-tolerance",
        type=float,
        default=15 / 224,
        help="the pointing game's tolerance as a fraction of the image side (default 15/224: Zhang et al.'s 15 px "
        "at 224 px); 0: the maximum must lie on a lesion pixel",
    )
    a = p.parse_args(argv)
    if not 0 <= a.pointing_tolerance < 1:
        p.error(f"--pointing-tolerance must be in [0, 1), not {a.pointing_tolerance}")
    from lnm_jax.explain.heatmaps import gradcam
    from lnm_jax.run import Run

    if a.manifest is not None and a.out is None:
        p.error("--manifest needs --out (the run folder is only read)")
    writes_run = a.out is None or a.out.resolve().is_relative_to(a.workdir.resolve())
    with hold(a.workdir, "gradcam") if writes_run else contextlib.nullcontext():  # a reader elsewhere: no lock
        res = gradcam(
            Run.open(a.workdir),
            split=a.split,
            manifest=a.manifest,
            out=a.out,
            checkpoint=a.checkpoint,
            method=a.method,
            layer=a.layer,
            target=a.target,
            threshold=a.threshold,
            seed=a.seed,
            pointing_tolerance=a.pointing_tolerance,
        )
    for note in res["notes"]:
        print(note)
    h, w = res["layer_size"]
    new, told = res["unlabelled"], []
    if sum(new.values()) < res["patients"]:
        told.append(f"{res['correct']} correct, {res['incorrect']} incorrect")
    if sum(new.values()):  # new patients: no label to be correct against
        told.append(
            f"{sum(new.values())} without a label: {new['predicted_positive']} predicted positive, "
            f"{new['predicted_negative']} negative"
        )
    print(
        f"{res['patients']} patients ({'; '.join(told)}), layer {res['layer']} ({h}x{w}): figures and grids in "
        f"{res['out']}"
    )
    return 0


def cmd_export(argv: list[str]) -> int:

    p = new_parser(
        prog="lnm-jax export",
        description="A trained model as a folder that runs without this package: predict.py, lnm_runtime/ "
        "(its preprocessing), requirements.txt, the program and weights, metadata.json and model_card.md.",
    )
    p.add_argument("--workdir", required=True, type=Path, help=RUN_FOLDER_HELP)
    p.add_argument("--checkpoint", choices=("best", "latest"), default="best", help=CHECKPOINT_HELP)
    p.add_argument("--out", required=True, type=Path, help="a new folder")
    p.add_argument(
        "--format",
        type=comma_list_type(names.EXPORT_FORMATS),
        default=names.EXPORT_FORMATS[0],
        help=f"comma list of {','.join(names.EXPORT_FORMATS)} (onnx: the onnx extra)",
    )
    p.add_argument(
        "--platforms",
        type=comma_list_type(names.EXPORT_PLATFORMS),
        default=",".join(names.EXPORT_PLATFORMS),
        help=f"comma list of jax.export platforms among {','.join(names.EXPORT_PLATFORMS)}",
    )
    a = p.parse_args(argv)
    from lnm_jax.export import export_run
    from lnm_jax.exported import fingerprint
    from lnm_jax.run import Run

    # a reader (export writes elsewhere): no lock; orbax commits a checkpoint by a rename
    md = export_run(
        Run.open(a.workdir),
        a.out,
        checkpoint=a.checkpoint,
        platforms=a.platforms,
        formats=a.format,
    )
    sizes = ", ".join(f"{k} {v / 1e6:.2f} MB" for k, v in md["export"]["bytes"].items())
    print(f"exported {md['name']} ({md['architecture']['parameters']:,} parameters) to {a.out}: {sizes}")
    print(
        f"fingerprint {fingerprint(a.out)}: publish it apart from the folder; predict --fingerprint and "
        "load(..., fingerprint=...) refuse any other folder"
    )
    return 0


def cmd_relocate(argv: list[str]) -> int:

    p = new_parser(
        prog="lnm-jax relocate",
        description="Point a trained run at its training cohort's manifest in a new place (the cohort, or the "
        "embedded cohort's cohort/ folder, moved): checked to be the cohort the run was split on, then config.json's "
        "data.manifest is set to it; nothing else changes.",
    )
    p.add_argument("--workdir", required=True, type=Path, help=RUN_FOLDER_HELP)
    p.add_argument("--manifest", required=True, type=Path, help="the run's training manifest where it is now")
    a = p.parse_args(argv)
    from lnm_jax.run import relocate_manifest

    with hold(a.workdir, "relocate"):
        path = relocate_manifest(a.workdir, a.manifest)
    print(f"{path}: data.manifest is now {a.manifest.resolve()} (the cohort the run was split on)")
    return 0


def cmd_convert_weights(argv: list[str]) -> int:

    p = new_parser(
        prog="lnm-jax convert-weights",
        description="Port a torchvision or Keras ResNet's weights to a backbone checkpoint (config model.init_from).",
    )
    p.add_argument(
        "--from", dest="source", required=True, choices=("torchvision", "keras"), help="the weights' framework"
    )
    p.add_argument(
        "--in",
        dest="path",
        required=True,
        type=Path,
        help="torchvision: .pth/.pt/.safetensors state_dict; keras: ResNet50 .h5/.weights.h5",
    )
    p.add_argument("--out", required=True, type=Path, help="new folder for the backbone checkpoint")
    from lnm_jax.names import TORCHVISION_BACKBONES

    p.add_argument(
        "--arch",
        default="resnet50",
        choices=TORCHVISION_BACKBONES,
        help="the network the weights are of (torchvision: any; keras: resnet50)",
    )
    p.add_argument(
        "--no-transform-input",
        dest="transform_input",
        action="store_false",
        help="inception_v3 only: the state_dict's model was built with transform_input=False (torchvision's "
        "ImageNet weights run with it on, the default: it is then folded into the first convolution, so the port "
        "takes standardised RGB as every other port does)",
    )
    a = p.parse_args(argv)
    if a.source == "keras" and a.arch != "resnet50":
        raise UsageError(f"--arch {a.arch}: the Keras import ports ResNet50 weights only")
    if not a.transform_input and (a.source, a.arch) != ("torchvision", "inception_v3"):
        raise UsageError("--no-transform-input is torchvision Inception-v3's setting (--arch inception_v3)")
    from lnm_jax.weights.io import convert_weights

    guard_output(a.out, kind="folder", can_overwrite=False)  # never into a run's state; a new folder
    meta = convert_weights(a.source, a.path, a.out, arch=a.arch, transform_input=a.transform_input)
    print(
        f"wrote {meta['arch']} ({meta['variant']}) backbone to {a.out}; use it with "
        f"--config.model.init_from={a.out} --config.model.variant={meta['variant']}"
    )
    return 0


def cmd_reproduce(argv: list[str]) -> int:
    from lnm_jax.config import base_config

    def extra(flags, fv):
        flags.DEFINE_string(
            "manifest",
            None,
            "cohort manifest (default: the config's, else the embedded synthetic cohort)",
            flag_values=fv,
        )
        flags.DEFINE_integer("folds", None, "K-fold cross-validation instead of one split", flag_values=fv)

    config, fv = parse_config_command("reproduce", argv, base_config, extra)
    overridden = {o.partition("=")[0].removeprefix("--config.") for o in split_overrides(argv, config)[0]}
    for option, field in (("folds", "protocol.folds"), ("manifest", "data.manifest")):
        if fv[option].present and field in overridden:  # one of them would be dropped in silence
            raise UsageError(f"--{option} and --config.{field} both given: they set one field; give one")
    from lnm_jax.protocol.reproduce import reproduce, table3_lines

    if fv.manifest:
        config.data.manifest = str(Path(fv.manifest).resolve())
    if fv.folds is not None:
        config.protocol.folds = fv.folds
    from lnm_jax.config import check_fields

    check_fields(config)  # (--folds included) exit 2 before a cohort is written, as train and validate
    with hold(fv.workdir, "reproduce", create=True):
        res = reproduce(config, fv.workdir)
    print("\n".join(table3_lines(res)))
    print(f"protocol finished in {res['wall_s'] / 60:.1f} min: {fv.workdir}")
    return 0


def cmd_convert_ddti(argv: list[str]) -> int:

    p = new_parser(
        prog="lnm-jax convert-ddti",
        description="DDTI (images/, xml/) -> cohort manifest of B-mode images with their nodule outlines as lesion "
        "masks (masks/ beside the manifest); label TI-RADS >= 4a, a demonstration label (not pathology).",
    )
    p.add_argument("--src", required=True, type=Path, help="the DDTI folder")
    p.add_argument("--out", required=True, type=Path, help="manifest CSV to write (masks/ goes beside it)")
    p.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    a = p.parse_args(argv)
    from lnm_jax.data.cohorts.ddti import convert_ddti

    summary = convert_ddti(a.src, a.out, overwrite=a.overwrite)
    skipped = summary.pop("skipped")
    print(f"wrote {a.out}: " + ", ".join(f"{k} {v}" for k, v in summary.items()))
    for line in skipped:
        print(f"  left out: {line}")
    return 0


def cmd_crop_to_lesion(argv: list[str]) -> int:

    p = new_parser(
        prog="lnm-jax crop-to-lesion",
        description="A copy of a manifest whose <input>_crop columns frame each masked image around its lesion "
        "(the mask's box grown by --margin on each side, squared where the image allows): lesion-aware framing "
        "for training and prediction.",
    )
    p.add_argument("--manifest", required=True, type=Path, help="a manifest with bmode_mask/ceus_mask columns")
    p.add_argument("--out", required=True, type=Path, help="the new manifest CSV")
    p.add_argument("--margin", type=float, default=0.25, help="of the lesion box's size, on each side")
    p.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    _framing_arguments(p)
    a = p.parse_args(argv)
    from lnm_jax.data.cohorts.lesion_crop import crop_to_lesion

    summary = crop_to_lesion(a.manifest, a.out, margin=a.margin, overwrite=a.overwrite, framing=_framing(a))
    print(f"wrote {a.out}: " + ", ".join(f"{k} {v}" for k, v in summary.items()))
    return 0


def cmd_convert_busbra(argv: list[str]) -> int:

    p = new_parser(prog="lnm-jax convert-busbra", description="BUS-BRA (Images/, bus_data.csv) -> cohort manifest.")
    p.add_argument("--src", required=True, type=Path, help="the BUS-BRA folder")
    p.add_argument("--out", required=True, type=Path, help="manifest CSV to write")
    p.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    a = p.parse_args(argv)
    from lnm_jax.data.cohorts.busbra import convert_busbra

    summary = convert_busbra(a.src, a.out, overwrite=a.overwrite)
    print(f"wrote {a.out}: " + ", ".join(f"{k} {v}" for k, v in summary.items()))
    return 0


def cmd_deidentify(argv: list[str]) -> int:

    p = new_parser(
        prog="lnm-jax deidentify",
        description="Write a de-identified copy of a cohort: pseudonymous patient ids, images cropped to their "
        "scan region, DICOM headers through the PS3.15 basic profile, a new manifest; the mapping to the "
        "original patients goes to a separate file.",
    )
    p.add_argument("--manifest", required=True, type=Path, help="the cohort manifest CSV to copy")
    p.add_argument("--out", required=True, type=Path, help="new folder for the copy (must not exist or be empty)")
    p.add_argument("--mapping", required=True, type=Path, help="CSV linking pseudonyms to patients; outside --out")
    p.add_argument("--keep-columns", default="", help="metadata columns to keep (comma-separated); default none")
    _framing_arguments(p)
    a = p.parse_args(argv)
    from lnm_jax.data.privacy.deidentify import deidentify

    keep = tuple(c.strip() for c in a.keep_columns.split(",") if c.strip())
    report = deidentify(a.manifest, a.out, a.mapping, keep_columns=keep, framing=_framing(a))
    print("\n".join(report.lines()))
    return 0


def cmd_demo(argv: list[str]) -> int:
    from lnm_jax.config import demo_config

    config, fv = parse_config_command("demo", argv, demo_config)
    from lnm_jax.demo import demo
    from lnm_jax.run import RunExistsError

    with hold(fv.workdir, "demo", create=True):
        try:
            print(demo(config, fv.workdir))
        except RunExistsError as e:  # demo takes no --resume (helper-81: it had been told to pass one)
            w = shlex.quote(str(fv.workdir))
            raise RunExistsError(
                f"{fv.workdir} already holds a run (a demo stopped before it finished?): finish it with lnm-jax train "
                f"--workdir {w} --resume, then lnm-jax evaluate --workdir {w}; or give demo a new --workdir"
            ) from e
    return 0


COMMANDS = {
    "synth": cmd_synth,
    "validate": cmd_validate,
    "norm-stats": cmd_norm_stats,
    "train": cmd_train,
    "pretrain": cmd_pretrain,
    "evaluate": cmd_evaluate,
    "availability": cmd_availability,
    "predict": cmd_predict,
    "external-validation": cmd_external_validation,
    "gradcam": cmd_gradcam,
    "export": cmd_export,
    "relocate": cmd_relocate,
    "convert-weights": cmd_convert_weights,
    "reproduce": cmd_reproduce,
    "convert-busbra": cmd_convert_busbra,
    "convert-ddti": cmd_convert_ddti,
    "crop-to-lesion": cmd_crop_to_lesion,
    "deidentify": cmd_deidentify,
    "demo": cmd_demo,
}


def _missing_config_field(e: BaseException) -> str | None:
    """The name of the field, quoted, with ml_collections' suggestion of a close one where it
    makes one, when ``e`` is a config's missing field (raised by ``ConfigDict`` itself: the
    config lacks a field the command reads), else None."""
    if not isinstance(e, AttributeError | KeyError):
        return None
    tb = e.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    code = tb.tb_frame.f_code if tb is not None else None
    if code is None or "ml_collections" not in code.co_filename or code.co_name not in ("__getattr__", "__getitem__"):
        return None
    inner = e.args[0] if e.args else e  # AttributeError(KeyError("'width'\nDid you mean ...?"))
    text = inner.args[0] if isinstance(inner, KeyError) and inner.args else inner
    field, *hint = str(text).splitlines()
    from lnm_jax.config import base_config, field_path

    group = tb.tb_frame.f_locals.get("self")  # the ConfigDict (group) that lacks the field
    siblings = group.keys() if hasattr(group, "keys") else ()
    path = field_path(field.strip("\"' "), siblings)
    # a field of the defaults is named as such; ml_collections' "did you mean" guess (another
    # field of the group) misleads there: the file lacks the field, nobody mistyped it
    known = "." in path or path in base_config()
    return f"'{path}'" + (f" ({hint[0].strip()})" if hint and not known else "")


def _run_config(args: list[str]) -> Path | None:
    """The ``config.json`` of the run folder a command's ``--workdir`` names, where there is one."""
    from lnm_jax.run_files import RunFiles

    for i, a in enumerate(args):
        if a.startswith("--workdir="):
            folder = a.split("=", 1)[1]
        elif a == "--workdir" and i + 1 < len(args):
            folder = args[i + 1]
        else:
            continue
        path = RunFiles(folder).config
        return path if path.is_file() else None
    return None


def _user_errors() -> tuple[type[BaseException], ...]:
    """Errors a user can fix (a bad manifest, a missing run, a changed config, a full disk,
    ...): their message is the whole report."""
    from lnm_jax.run_lock import RunFolderGoneError, RunLockedError
    from lnm_jax.training.checkpoint import CheckpointReplacedError
    from lnm_jax.training.loop import TrainingDivergedError
    from lnm_jax.weights.convert import WeightMismatchError

    return (
        ValueError,  # bad manifests, splits, configs, missing inputs, unreadable weights, ...
        RunLockedError,  # another process writes the run folder
        RunFolderGoneError,  # ... or it was removed or replaced under this one
        CheckpointReplacedError,  # ... and kept replacing the checkpoint a reader read
        OSError,  # missing files, existing runs, failed checkpoint saves
        ImportError,  # an optional package a file needs
        TrainingDivergedError,
        WeightMismatchError,  # a KeyError naming the tensor
    )


def _message(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror and e.filename and str(e.filename) not in str(e.args[-1]):
        return f"{e.filename}: {e.strerror}"  # e.g. a full disk while writing a file
    return str(e) or type(e).__name__


def _closed_pipe() -> int:
    """The reader of stdout stopped early (``lnm-jax validate M | head``): end quietly, exit 0
    as ``head`` expects, and keep Python from reporting the flush at exit."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    return 0


def entry_point() -> int:
    """The ``lnm-jax`` command (the console script): :func:`main` on ``sys.argv``, after the
    process has restarted under the allocator setting (``lnm_jax/host_memory.py``). Python code
    calls :func:`main`, which never restarts its caller."""
    from lnm_jax.host_memory import restart_with_huge_pages

    restart_with_huge_pages()
    code = main()
    if code in (EXIT_INTERRUPTED, EXIT_TERMINATED):
        # Stopped mid-work, its clean-up done and its one line said: library threads (XLA's,
        # orbax's, the loaders') may still be running, and the interpreter's teardown under
        # them crashed (a segmentation fault, exit 139 instead of 143, after a SIGTERM during
        # evaluate or gradcam). The process ends here, with the code a wrapper expects.
        with contextlib.suppress(OSError, ValueError):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)
    return code


def top_level_help() -> str:
    """``lnm-jax --help``: a usage line, then this module's docstring as plain text (its
    reStructuredText literals unmarked)."""
    usage = "usage: lnm-jax COMMAND [options]   (lnm-jax COMMAND --help: that command's options and defaults)"
    usage += "\n       lnm-jax --version   (the version, the commit or source digest of this code)"
    return f"{usage}\n\n{__doc__.strip().replace('``', '')}\n"


EXIT_INTERRUPTED = 130  # Ctrl-C (SIGINT), as a shell reports 128 + 2
EXIT_TERMINATED = 143  # SIGTERM, 128 + 15


class Terminated(KeyboardInterrupt):
    """SIGTERM (``timeout``, Slurm, ``docker stop``, systemd) taken as Ctrl-C is: a save in
    flight finishes, training writes the best epoch it holds between save points
    (``training/save_schedule.py``), then the command stops (exit 143)."""


def _raise_terminated(signum, frame):
    ask_stop(signum)
    raise Terminated()


def _raise_interrupted(signum, frame):
    ask_stop(signum)
    raise KeyboardInterrupt


@contextlib.contextmanager
def _sigterm_as_interrupt(stop: dict | None = None):
    """SIGTERM raises :class:`Terminated` in the main thread while a command runs, where no
    handler of the caller's is installed (the previous one is put back after); SIGINT, where
    Python's own handler is installed, raises KeyboardInterrupt as it does. Both record the
    stop (:data:`lnm_jax.fileio.STOP_ASKED`), which the training loops check at every step: an
    interrupt raised where the interpreter swallows it is not lost. ``stop`` gets the signal of a
    stop recorded (``"signal"``), read once the block ends."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    clear_stop()
    installed = {}
    if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        installed[signal.SIGTERM] = signal.signal(signal.SIGTERM, _raise_terminated)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        installed[signal.SIGINT] = signal.signal(signal.SIGINT, _raise_interrupted)
    try:
        yield
    finally:
        for sig, before in installed.items():
            signal.signal(sig, before)
        if stop is not None:
            stop["signal"] = stop_signal()
        clear_stop()  # (a command's stop is its own: not the next command's in this process)


def main(argv: list[str] | None = None) -> int:
    from lnm_jax.config import ConfigError

    argv = sys.argv[1:] if argv is None else list(argv)
    text_encoding.tolerant_console()
    debug = "--debug" in argv
    argv = [x for x in argv if x != "--debug"]
    name = argv[0] if argv else ""
    command = COMMANDS.get(name)
    if name in ("--version", "-V"):
        from lnm_jax.provenance import version_line  # noqa: PLC0415

        print(version_line())
        return 0
    if command is None:
        if name and name not in ("-h", "--help"):  # one line, as git says it (not the help above it)
            try:
                check_option_forms([name])  # -—help
            except UsageError as e:
                return _fail("", str(e), 2)
            near = difflib.get_close_matches(name, COMMANDS, n=1, cutoff=0.6)  # as a misspelt config field
            hint = f"; did you mean '{near[0]}'?" if near else "; lnm-jax --help lists them"
            return _fail("", f"unknown command '{name}'{hint}", 2)
        try:
            print(top_level_help())
        except BrokenPipeError:  # lnm-jax --help | head
            _closed_pipe()
        # no command is a usage error, as argparse makes a missing argument: the help, then exit 2
        return 0 if name else _fail("", "no command given (one of the above)", 2)
    if why := text_encoding.unnameable_arguments(argv[1:]):
        return _fail(name, why, 2)
    stop: dict = {}  # the signal of a stop the command recorded (_sigterm_as_interrupt)
    try:
        check_option_forms(argv[1:])
        with _sigterm_as_interrupt(stop):
            return command(argv[1:])
    except UsageError as e:
        return _fail(name, str(e), 2)
    except ConfigError as e:  # a config that cannot describe a run: bad arguments too
        return _fail(name, str(e), 2)
    except SystemExit as e:  # argparse: --help (0) or bad arguments (2)
        return e.code if isinstance(e.code, int) else 2
    except KeyboardInterrupt as e:  # (a SIGTERM whose Terminated was lost is raised again as KeyboardInterrupt)
        if isinstance(e, Terminated) or stop.get("signal") == signal.SIGTERM:
            return _fail(name, "terminated (SIGTERM)", EXIT_TERMINATED)
        return _fail(name, "interrupted", EXIT_INTERRUPTED)
    except BrokenPipeError:
        return _closed_pipe()
    except MemoryError:  # said before anything else is imported (helper-113: the handler's import failed too)
        if debug:
            raise
        return _fail(
            name,
            "out of memory (the host's): fewer patients at once (train.batch_size, train.eval_batch_size, "
            "data.num_threads), a smaller data.image_size, or a machine with more memory",
            1,
        )
    except Exception as e:
        if debug:
            raise
        if isinstance(e, OSError) and e.errno == errno.EPIPE:  # a closed pipe seen through another error
            return _closed_pipe()
        if isinstance(e, UnicodeError):  # a name or text the locale's encoding cannot hold (helper-109)
            return _fail(name, text_encoding.encoding_error_line(e), 1)
        if isinstance(e, _user_errors()):
            return _fail(name, _message(e), 1)
        if field := _missing_config_field(e):
            stored = _run_config(argv[1:])
            where = (
                f"{stored} lacks the field {field} that {name} reads: edited by hand?"
                if stored
                else f"the config lacks the field {field} that {name} reads: a run's config.json edited by hand, "
                "or a config file without it;"
            )
            return _fail(name, f"{where} restore the file from a copy or add the field", 1)
        return _fail(name, f"unexpected {type(e).__name__}: {_message(e)} (rerun with --debug for the traceback)", 1)


if __name__ == "__main__":
    sys.exit(entry_point())
