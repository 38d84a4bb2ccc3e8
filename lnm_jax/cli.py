"""The ``lnm-jax`` command.

    lnm-jax synth     --out DIR [--patients 308 --seed 0 ...]   write a synthetic cohort
    lnm-jax validate  MANIFEST [--no-labels]                     check a manifest, write nothing
    lnm-jax norm-stats --manifest M [--image-size 224 --seed 0]  per-modality mean/std of a train split
    lnm-jax train     --config configs/paper_triple.py --workdir W [--resume] [--config.x.y=v ...]
    lnm-jax evaluate  --workdir W [--checkpoint best|latest]
    lnm-jax availability --workdir W [--dedicated no_ceus=RUN ...]  metrics per availability pattern
    lnm-jax predict   --workdir W --manifest NEW.csv --out probs.csv
    lnm-jax gradcam   --workdir W [--split test --out DIR --method gradcam|hirescam|gradcam++]
    lnm-jax convert-weights --from torchvision|keras --in FILE --out DIR [--arch resnet50]
    lnm-jax reproduce --workdir W [--manifest M] [--folds K] [--config configs/reproduce_cpu.py]
                                                                 the paper's protocol: Tables 1-3, figures
    lnm-jax convert-busbra --src BUSBRA_DIR --out MANIFEST.csv  a BUS-BRA release as a cohort manifest
    lnm-jax demo      --workdir W                                synth + train + evaluate

Commands that take a config accept ml_collections overrides (``--config.train.epochs=3``);
without ``--config`` they start from the built-in defaults (``configs/demo.py`` for demo,
``configs/paper_triple.py`` otherwise).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

COMMANDS = ("synth", "validate", "norm-stats", "train", "evaluate", "availability", "predict", "gradcam",
            "convert-weights", "reproduce", "convert-busbra", "demo")


def _fail(msg: str, code: int = 2) -> int:
    print(f"lnm-jax: error: {msg}", file=sys.stderr)
    return code


# ------------------------------------------------------------------------- plain commands

def cmd_synth(argv: list[str]) -> int:
    from lnm_jax.data.synthetic import SynthParams, bayes_auc, generate_cohort

    defaults = SynthParams()
    p = argparse.ArgumentParser(prog="lnm-jax synth", description="Write a synthetic cohort.")
    p.add_argument("--out", required=True, type=Path)
    for f in dataclasses.fields(SynthParams):
        p.add_argument(f"--{f.name.replace('_', '-')}", type=type(f.default), default=f.default)
    p.add_argument("--preset", choices=("default", "paper"), default="default",
                   help="'paper': cue strengths giving the paper's single-modality AUCs "
                        "(B-mode 0.72, CEUS 0.73)")
    a = p.parse_args(argv)
    kwargs = {f.name: getattr(a, f.name) for f in dataclasses.fields(SynthParams)}
    if a.preset == "paper":
        for name, val in (("bmode_strength", 0.824), ("ceus_strength", 0.867)):
            if kwargs[name] == getattr(defaults, name):
                kwargs[name] = val
    try:
        params = SynthParams(**kwargs)
        t0 = time.perf_counter()
        manifest = generate_cohort(a.out, params, progress=True)
    except (ValueError, FileExistsError) as e:
        return _fail(str(e))
    print(f"wrote {params.patients} patients to {manifest} in {time.perf_counter() - t0:.1f}s")
    print("Bayes-optimal AUC: " + ", ".join(f"{k} {v:.3f}" for k, v in bayes_auc(params).items()))
    if params.clip_frames:
        print("  from one CEUS frame: " + ", ".join(
            f"{k} {v:.3f}" for k, v in bayes_auc(params, temporal=False).items()))
    return 0


def cmd_validate(argv: list[str]) -> int:
    from lnm_jax.data.manifest import ManifestError, read_manifest

    p = argparse.ArgumentParser(prog="lnm-jax validate", description="Validate a cohort manifest.")
    p.add_argument("manifest", type=Path)
    p.add_argument("--no-labels", action="store_true", help="lnm may be missing (new patients)")
    a = p.parse_args(argv)
    try:
        cohort = read_manifest(a.manifest, require_labels=not a.no_labels)
    except ManifestError as e:
        print(e, file=sys.stderr)
        return 1
    labels = [x for x in cohort.labels if x is not None]
    print(f"{a.manifest}: OK, {len(cohort)} patients, {sum(labels)} LNM-positive; available "
          + ", ".join(f"{k} {v}" for k, v in cohort.availability().items())
          + (f"; metadata columns: {', '.join(cohort.metadata_columns)}" if cohort.metadata_columns else ""))
    return 0


def cmd_norm_stats(argv: list[str]) -> int:
    import tempfile

    from lnm_jax.data import pipeline
    from lnm_jax.data.manifest import ManifestError, read_manifest
    from lnm_jax.data.splits import holdout_split
    from lnm_jax.data.tfds_builder import load_cohort

    p = argparse.ArgumentParser(prog="lnm-jax norm-stats",
                                description="Per-modality mean/std of the training split.")
    p.add_argument("--manifest", required=True, type=Path)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--seed", type=int, default=0, help="split seed (config data.split.seed)")
    p.add_argument("--out", type=Path, help="also write the JSON here")
    a = p.parse_args(argv)
    try:
        cohort = read_manifest(a.manifest)
    except ManifestError as e:
        print(e, file=sys.stderr)
        return 1
    split = holdout_split(cohort.ids, cohort.labels, seed=a.seed)
    # TFDS reports its build on stdout; keep stdout for the JSON alone.
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(sys.stderr):
        ds = pipeline.decoded_dataset(load_cohort(cohort, tmp), split.train, a.image_size, cache=False)
        stats = pipeline.normalisation_stats(ds)
    text = json.dumps(stats, indent=2)
    print(text)
    print("use with: " + " ".join(f"--config.data.norm.{k}.{s}='({','.join(map(str, v[s]))})'"
                                  for k, v in stats.items() for s in ("mean", "std")), file=sys.stderr)
    if a.out:
        a.out.write_text(text)
    return 0


# ------------------------------------------------------------------- config-driven commands

def _parse_config_command(name: str, argv: list[str], default_factory, extra) -> tuple:
    """absl flags + ml_collections config flags for one sub-command."""
    from absl import flags
    from ml_collections import config_flags

    fv = flags.FlagValues()
    full = [f"lnm-jax {name}"] + argv  # config_flags reads overrides from this argv
    if any(x == "--config" or x.startswith("--config=") for x in argv):
        config_flags.DEFINE_config_file("config", None, "experiment config file", flag_values=fv,
                                        sys_argv=full)
    else:
        config_flags.DEFINE_config_dict("config", default_factory(), "experiment config",
                                        flag_values=fv, sys_argv=full)
    flags.DEFINE_string("workdir", None, "run folder", flag_values=fv, required=True)
    extra(flags, fv)
    try:
        fv(full)
    except flags.Error as e:
        raise SystemExit(_fail(f"{name}: {e}"))
    return fv.config, fv


def _no_extra(flags, fv):
    pass


def cmd_train(argv: list[str]) -> int:
    from lnm_jax.config import base_config
    from lnm_jax.data.manifest import ManifestError
    from lnm_jax.experiment import load_config
    from lnm_jax.training.loop import NonFiniteLossError, RunExistsError, train

    default = base_config
    pre_p = argparse.ArgumentParser(add_help=False)
    pre_p.add_argument("--workdir")
    pre_p.add_argument("--resume", action="store_true")
    pre, _ = pre_p.parse_known_args(argv)
    if pre.resume and pre.workdir and (Path(pre.workdir) / "config.json").is_file():
        default = lambda: load_config(Path(pre.workdir))  # noqa: E731  resume: the run's own config
    def extra(flags, fv):
        flags.DEFINE_bool("resume", False, "continue from the latest checkpoint", flag_values=fv)
        flags.DEFINE_bool("distributed", False, "multi-host: start jax.distributed first (address, "
                          "process count and id from JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, "
                          "JAX_PROCESS_ID or the cluster)", flag_values=fv)

    config, fv = _parse_config_command("train", argv, default, extra)
    if fv.distributed:
        from lnm_jax.training.sharding import initialize
        initialize()
    try:
        best = train(config, fv.workdir, resume=fv.resume)
    except (ManifestError, NonFiniteLossError, RunExistsError) as e:
        return _fail(str(e), 1)
    print(f"best validation AUC {best['val_auc']:.4f} at epoch {best['epoch']}; run in {fv.workdir}")
    return 0


def cmd_evaluate(argv: list[str]) -> int:
    from lnm_jax.evaluation.run import evaluate

    p = argparse.ArgumentParser(prog="lnm-jax evaluate", description="Evaluate a run's checkpoint.")
    p.add_argument("--workdir", required=True, type=Path)
    p.add_argument("--checkpoint", choices=("best", "latest"), default="best")
    p.add_argument("--splits", default="val,test", help="comma list of train,val,test")
    p.add_argument("--out", type=Path)
    a = p.parse_args(argv)
    res = evaluate(a.workdir, checkpoint=a.checkpoint, subsets=tuple(a.splits.split(",")), out=a.out)
    _print_eval(res)
    return 0


def _print_eval(res: dict) -> None:
    for s, m in res["splits"].items():
        lo, hi = m["auc_ci"]
        line = (f"{s:5s} n={m['n']:4d}  AUC {m['auc']:.3f} (95% CI {lo:.3f}-{hi:.3f})  "
                f"@0.5 sens {m['at_0.5']['sensitivity']:.3f} spec {m['at_0.5']['specificity']:.3f} "
                f"acc {m['at_0.5']['accuracy']:.3f}")
        if "at_youden" in m:
            y = m["at_youden"]
            line += (f"  @youden({y['threshold']:.2f}) sens {y['sensitivity']:.3f} "
                     f"spec {y['specificity']:.3f} acc {y['accuracy']:.3f}")
        print(line)
        c = m["calibration"]
        print(f"      calibration: ECE {c['ece']:.3f}, Brier {c['brier']:.3f}; with temperature "
              f"{res['temperature_from_val']:.2f} (fitted on val): ECE {c['ece_temperature_scaled']:.3f}, "
              f"Brier {c['brier_temperature_scaled']:.3f}")
    print(f"metrics, ROC and predictions in {res['out']}")


def cmd_availability(argv: list[str]) -> int:
    from lnm_jax.evaluation.availability import PATTERNS, evaluate_availability

    p = argparse.ArgumentParser(prog="lnm-jax availability",
                                description="Metrics of a missing-input run per availability pattern.")
    p.add_argument("--workdir", required=True, type=Path)
    p.add_argument("--checkpoint", choices=("best", "latest"), default="best")
    p.add_argument("--split", default="test", choices=("val", "test"))
    p.add_argument("--dedicated", action="append", default=[], metavar="PATTERN=RUN",
                   help=f"a run trained on that pattern's inputs alone; PATTERN in {sorted(PATTERNS)}")
    p.add_argument("--out", type=Path)
    a = p.parse_args(argv)
    dedicated = {}
    for item in a.dedicated:
        name, sep, folder = item.partition("=")
        if not sep or name not in PATTERNS:
            return _fail(f"--dedicated wants PATTERN=RUN with PATTERN in {sorted(PATTERNS)}, got {item!r}")
        dedicated[name] = Path(folder)
    try:
        res = evaluate_availability(a.workdir, checkpoint=a.checkpoint, subset=a.split,
                                    dedicated=dedicated, out=a.out)
    except ValueError as e:
        return _fail(str(e), 1)
    print(Path(res["out"], "availability.md").read_text(), end="")
    print(f"written to {res['out']}/availability.{{json,md}}")
    return 0


def cmd_predict(argv: list[str]) -> int:
    from lnm_jax.data.manifest import ManifestError
    from lnm_jax.evaluation.run import predict_manifest

    p = argparse.ArgumentParser(prog="lnm-jax predict", description="P(LNM) for new patients.")
    p.add_argument("--workdir", required=True, type=Path)
    p.add_argument("--manifest", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--checkpoint", choices=("best", "latest"), default="best")
    a = p.parse_args(argv)
    try:
        out = predict_manifest(a.workdir, a.manifest, a.out, checkpoint=a.checkpoint)
    except ManifestError as e:
        print(e, file=sys.stderr)
        return 1
    print(f"wrote {out}")
    return 0


def cmd_gradcam(argv: list[str]) -> int:
    from lnm_jax.explain.gradcam import METHODS, TARGETS
    from lnm_jax.explain.run import gradcam

    p = argparse.ArgumentParser(prog="lnm-jax gradcam",
                                description="Grad-CAM heatmaps of both image branches.")
    p.add_argument("--workdir", required=True, type=Path)
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--out", type=Path, help="default: WORKDIR/gradcam_SPLIT")
    p.add_argument("--checkpoint", choices=("best", "latest"), default="best")
    p.add_argument("--method", choices=METHODS, default="gradcam")
    p.add_argument("--layer", default="stage4", choices=("stem", "stage1", "stage2", "stage3", "stage4"))
    p.add_argument("--target", choices=sorted(TARGETS), default="lnm",
                   help="lnm: evidence for LNM (the logit); no_lnm: against it (minus the logit)")
    p.add_argument("--threshold", type=float, default=0.5, help="for correct/incorrect")
    a = p.parse_args(argv)
    res = gradcam(a.workdir, split=a.split, out=a.out, checkpoint=a.checkpoint, method=a.method,
                  layer=a.layer, target=a.target, threshold=a.threshold)
    print(f"{res['patients']} patients ({res['correct']} correct, {res['incorrect']} incorrect): "
          f"figures in {res['out']}/patients, grids {res['out']}/grid_correct.png and grid_incorrect.png")
    return 0


def cmd_convert_weights(argv: list[str]) -> int:
    from lnm_jax.weights.convert import WeightMismatchError, from_keras_resnet50, from_torchvision
    from lnm_jax.weights.io import read_keras_resnet50, read_torch_state_dict, save_backbone

    p = argparse.ArgumentParser(prog="lnm-jax convert-weights",
                                description="Port a torchvision or Keras ResNet's weights to a "
                                            "backbone checkpoint (config model.init_from).")
    p.add_argument("--from", dest="source", required=True, choices=("torchvision", "keras"))
    p.add_argument("--in", dest="path", required=True, type=Path,
                   help="torchvision: .pth/.pt/.safetensors state_dict; keras: ResNet50 .h5/.weights.h5")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--arch", default="resnet50", choices=("resnet18", "resnet34", "resnet50"))
    a = p.parse_args(argv)
    try:
        if a.source == "torchvision":
            variables, variant = from_torchvision(read_torch_state_dict(a.path), a.arch), "torchvision"
        else:
            if a.arch != "resnet50":
                return _fail("Keras import supports ResNet50 only")
            variables, variant = from_keras_resnet50(read_keras_resnet50(a.path)), "keras_v1"
        save_backbone(a.out, variables, {"arch": a.arch, "variant": variant, "source": a.source,
                                         "file": str(a.path.resolve())})
    except (WeightMismatchError, FileNotFoundError, FileExistsError, ValueError) as e:
        return _fail(str(e), 1)
    print(f"wrote {a.arch} ({variant}) backbone to {a.out}; use it with "
          f"--config.model.init_from={a.out} --config.model.variant={variant}")
    return 0


def cmd_reproduce(argv: list[str]) -> int:
    from lnm_jax.config import base_config
    from lnm_jax.data.manifest import ManifestError
    from lnm_jax.data.splits import SplitError
    from lnm_jax.protocol.reproduce import reproduce

    def extra(flags, fv):
        flags.DEFINE_string("manifest", None, "cohort manifest (default: the config's, else the "
                            "embedded synthetic cohort)", flag_values=fv)
        flags.DEFINE_integer("folds", None, "K-fold cross-validation instead of one split",
                             flag_values=fv)

    config, fv = _parse_config_command("reproduce", argv, lambda: base_config("triple"), extra)
    if fv.manifest:
        config.data.manifest = str(Path(fv.manifest).resolve())
    if fv.folds is not None:
        config.protocol.folds = fv.folds
    try:
        res = reproduce(config, fv.workdir)
    except (ManifestError, SplitError) as e:
        return _fail(str(e), 1)
    for row in res["table3"]["rows"].values():
        lo, hi = row["auc_ci_delong"]
        print(f"{row['setting']:7s} test AUC {row['auc']:.3f} ({lo:.3f}-{hi:.3f})  sens "
              f"{row['sensitivity']:.3f} spec {row['specificity']:.3f} acc {row['accuracy']:.3f}")
    print(f"protocol finished in {res['wall_s'] / 60:.1f} min: {fv.workdir}/report.md")
    return 0


def cmd_convert_busbra(argv: list[str]) -> int:
    from lnm_jax.data.busbra import convert_busbra

    p = argparse.ArgumentParser(prog="lnm-jax convert-busbra",
                                description="BUS-BRA (Images/, bus_data.csv) -> cohort manifest.")
    p.add_argument("--src", required=True, type=Path, help="the BUS-BRA folder")
    p.add_argument("--out", required=True, type=Path, help="manifest CSV to write")
    a = p.parse_args(argv)
    try:
        summary = convert_busbra(a.src, a.out)
    except (ValueError, FileExistsError) as e:
        return _fail(str(e), 1)
    print(f"wrote {a.out}: " + ", ".join(f"{k} {v}" for k, v in summary.items()))
    return 0


def cmd_demo(argv: list[str]) -> int:
    from lnm_jax.config import demo_config
    from lnm_jax.evaluation.run import evaluate
    from lnm_jax.training.loop import train

    config, fv = _parse_config_command("demo", argv, demo_config, _no_extra)
    t0 = time.perf_counter()
    train(config, fv.workdir)
    res = evaluate(fv.workdir)
    wall = time.perf_counter() - t0
    _print_eval(res)
    ref = res.get("synthetic_reference")
    if ref and ref["bayes_auc"] is not None:
        auc = res["splits"]["test"]["auc"]
        print(f"test AUC {auc:.3f}; Bayes-optimal AUC of these inputs: {ref['bayes_auc']:.3f} "
              f"(generator), {ref['oracle_auc_test']:.3f} (on these test patients); "
              f"gap to the generator's {ref['bayes_auc'] - auc:+.3f}")
    print(f"demo finished in {wall:.0f}s; run folder {fv.workdir}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print(__doc__)
        return 0 if not argv or argv[0] in ("-h", "--help") else _fail(f"unknown command '{argv[0]}'")
    try:
        return globals()[f"cmd_{argv[0].replace('-', '_')}"](argv[1:])
    except FileNotFoundError as e:  # a run folder, checkpoint or file that is not there
        return _fail(str(e), 1)


if __name__ == "__main__":
    sys.exit(main())
