"""The ``lnm-jax`` command: each sub-command parses its arguments and calls one library
function; errors a user can fix are printed as one line and exit 1 (bad arguments: 2).

    lnm-jax synth     --out DIR [--patients 308 --seed 0 ...]   write a synthetic cohort
    lnm-jax validate  MANIFEST [--no-labels] [--workdir W | --config C]
                                                                 check a manifest against a model, write nothing
    lnm-jax norm-stats --manifest M [--image-size 224 --seed 0]  per-modality mean/std of a train split
    lnm-jax train     --config configs/paper_triple.py --workdir W [--resume] [--config.x.y=v ...]
    lnm-jax pretrain  --manifest M [--manifest M2 ...] --workdir W [--config configs/small_cohort.py]
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
    lnm-jax reproduce --workdir W [--manifest M] [--folds K] [--config configs/reproduce_cpu.py]
                                                                 the paper's protocol: Tables 1-3, figures
    lnm-jax convert-busbra --src BUSBRA_DIR --out MANIFEST.csv  a BUS-BRA release as a cohort manifest
    lnm-jax convert-ddti --src DDTI_DIR --out MANIFEST.csv     DDTI thyroid B-mode with nodule masks
    lnm-jax crop-to-lesion --manifest M --out NEW.csv [--margin 0.25]  crop columns around each lesion mask
    lnm-jax deidentify --manifest M --out DIR --mapping FILE [--keep-columns age,sex]
                                                                 a de-identified, cropped copy of a cohort
    lnm-jax demo      --workdir W                                synth + train + evaluate

Commands that take a config accept ml_collections overrides (``--config.train.epochs=3``);
without ``--config`` they start from the built-in defaults (``configs/demo.py`` for demo,
``configs/small_cohort.py`` for pretrain, ``configs/paper_triple.py`` otherwise). A failure prints one line,
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
import re
import shlex
import signal
import sys
import threading
import unicodedata
from collections.abc import Iterable
from pathlib import Path

from lnm_jax import names, text_encoding
from lnm_jax.fileio import SEED_RANGE, STOP_ASKED, DamagedFileError, is_seed
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


class UsageError(Exception):
    """Bad command-line arguments (exit 2)."""


def _fail(command: str, msg: str, code: int) -> int:
    prog = f"lnm-jax {command}" if command else "lnm-jax"
    print(f"{prog}: error: {msg}", file=sys.stderr)
    return code


# ------------------------------------------------------------------------- plain commands


def _shown_default(value) -> bool:
    """Whether ``--help`` shows an option's default: not for none, a switch's off, an empty value."""
    return not (value is None or value is False or value in ("", []) or value == argparse.SUPPRESS)


class _HelpFormatter(argparse.HelpFormatter):
    """argparse's help with each option's default where it has one (not for a switch, an
    option with no default, or one whose description already says it)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            action.option_strings
            and _shown_default(default)
            and "default" not in text
            and not isinstance(action, argparse._HelpAction)
        ):
            text += " (default: %(default)s)"
        return text


def _checked(test, allowed: str, cast=float, note: str = ""):
    """argparse's type of an option whose value must pass ``test``: ``cast`` of the text, else a
    usage error naming the option, the value and what it may be (``allowed``, then ``note``)."""

    def parse(text: str):
        try:
            value = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {allowed}{note}") from None
        if not test(value):
            raise argparse.ArgumentTypeError(f"{value!r} is not {allowed}{note}")
        return value

    return parse


# a --seed: a whole number every library here takes as a seed (lnm_jax.fileio.MAX_SEED)
_seed = _checked(is_seed, SEED_RANGE, int)
# a probability cut (NaN fails the test)
_probability = _checked(lambda v: 0 < v < 1, "a probability in (0, 1)")


def _config_value(field: str, cast=float):
    """argparse's type of an option that sets config ``field``: the config's own rule
    (:data:`lnm_jax.config.FIELD_RULES`), so the option and the field accept the same values
    (``--image-size 0`` had failed on a division by zero, ``-5`` printed statistics)."""
    from lnm_jax.config import FIELD_RULES

    test, allowed = FIELD_RULES[field]
    return _checked(test, allowed, cast, f" (config {field})")


def _comma_list(choices: tuple[str, ...]):
    """argparse's type of a comma list drawn from ``choices`` (returned as a tuple, in order)."""

    def parse(text: str) -> tuple[str, ...]:
        items = tuple(t.strip() for t in text.split(","))
        bad = [t for t in items if t not in choices]
        if bad or len(set(items)) != len(items):
            why = f"{', '.join(repr(t) for t in bad)} not among" if bad else f"{text!r} repeats an item of"
            raise argparse.ArgumentTypeError(f"{why} {', '.join(choices)}")
        return items

    return parse


class _Parser(argparse.ArgumentParser):
    """argparse's parser whose usage error is the one line every failure of this CLI is
    (``lnm-jax <command>: error: ...``, exit 2), without the usage block before it (``--help``
    shows that)."""

    def error(self, message: str):
        if m := re.fullmatch(r"argument ([\w-]+)(?:/[\w-]+)*: ignored explicit argument '(.*)'", message):
            message = f"{m[1]}={m[2]}: {m[1]} takes no value; give it alone to set it, leave it out for not"
        unknown = [x for x in getattr(self, "_given", []) if unknown_option(x, self._option_string_actions)]
        if unknown and message.startswith(("the following arguments are required", "unrecognized arguments")):
            # the option mistyped, not the one it left out (helper-56: --manfest said as "--manifest required")
            message = f"unrecognised option {unknown[0].partition('=')[0]!r}{did_you_mean(unknown[0], self)}"
        self.exit(2, f"{self.prog}: error: {message}\n")

    def parse_known_args(self, args=None, namespace=None):
        """argparse's, with a yes/no word after a switch refused in one line: ``validate M
        --no-labels false`` had read ``false`` as a second manifest."""
        args = sys.argv[1:] if args is None else list(args)
        self._given = args[: args.index("--") if "--" in args else None]
        switches = {
            s
            for a in self._actions
            if isinstance(a, argparse._StoreConstAction | argparse._StoreTrueAction | argparse._StoreFalseAction)
            for s in a.option_strings
        }
        single = {s for a in self._actions if isinstance(a, argparse._StoreAction) for s in a.option_strings}
        if twice := repeated_option(args, single):
            self.error(twice)
        for before, x in zip(args, args[1:]):
            if before in switches and x.lower() in _SWITCH_WORDS:
                self.error(
                    f"unexpected argument {x!r} after {before}: {before} takes no value; give it alone to set it, "
                    "leave it out for not"
                )
        return super().parse_known_args(args, namespace)


def unknown_option(arg: str, known: Iterable[str]) -> bool:
    """Whether ``arg`` is written as an option (``--x`` or ``--x=v``) that is not one of ``known``."""
    return arg.startswith("--") and len(arg) > 2 and arg.partition("=")[0] not in known


def did_you_mean(arg: str, parser: argparse.ArgumentParser) -> str:
    """ " (did you mean --x?)" naming the option of ``parser`` closest to the mistyped ``arg``
    (difflib's ratio over 0.6), or ""."""
    options = [o for o in parser._option_string_actions if o.startswith("--")]
    near = difflib.get_close_matches(arg.partition("=")[0], options, n=1)
    return f" (did you mean {near[0]}?)" if near else ""


def repeated_option(argv: list[str], single: set[str]) -> str | None:
    """The line refusing an option of ``single`` (those that take one value) given twice in
    ``argv`` (``--manifest A --manifest B``), whose last value had been taken in silence; None
    where none is."""
    given = [x.partition("=")[0] for x in argv[: argv.index("--") if "--" in argv else None]]
    twice = next((o for o in dict.fromkeys(given) if o in single and given.count(o) > 1), None)
    return twice and f"{twice} is given {given.count(twice)} times: it takes one value (give it once)"


def repeated_override_note(overrides: list[str]) -> str | None:
    """A note naming each config field set more than once among ``overrides`` (as
    :func:`split_overrides` writes them: ``--config.FIELD=VALUE``, ``--noconfig.FIELD``) and the
    value taken: absl's, the last (a base command line with one override appended is how
    experiments are varied), said rather than taken in silence
    (``--config.data.manifest=a.csv ... --config.data.manifest=b.csv``); None where none is."""
    values: dict[str, list[str]] = {}
    for x in overrides:
        field, _, value = x.removeprefix("--no").removeprefix("--").removeprefix("config.").partition("=")
        values.setdefault(field, []).append("False" if x.startswith("--noconfig.") else value)
    said = [
        f"--config.{f} is given {len(v)} times ({', '.join(v)}): the last, {v[-1]}, is taken"
        for f, v in values.items()
        if len(v) > 1 and len(set(v)) > 1
    ]
    return ("note: " + "; ".join(said)) if said else None


# words that say a True/False value, refused after a switch that takes none
_SWITCH_WORDS = {"true", "false", "t", "f", "1", "0", "yes", "no", "y", "n", "on", "off"}


# other libraries' names for a config field (timm's and torchvision's "arch", "lr"), suggested where
# spelling alone does not reach them (helper-89: --config.model.arch was offered batchnorm, variant, width)
FIELD_SYNONYMS = {"arch": "backbone", "architecture": "backbone", "network": "backbone", "lr": "learning_rate"}


def _parser(**kwargs) -> argparse.ArgumentParser:
    """Every sub-command's argument parser: its help shows the options' defaults."""
    kwargs.setdefault("allow_abbrev", False)  # as absl's commands: --man is no --manifest
    return _Parser(formatter_class=_HelpFormatter, **kwargs)


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

    p = _parser(prog="lnm-jax synth", description="Write a synthetic cohort.")
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

    p = _parser(
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
    pre = _parser(prog="lnm-jax validate", add_help=False)  # the config the overrides apply to: their types
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
    from lnm_jax.data.cohorts.manifest import ManifestError, grouped, manifest_checks, read_manifest
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
            print(f"of the {len(e.readable)} rows read without a problem:", *images.lines, sep="\n")
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


def apply_overrides(config, overrides: list[str]):
    """``config`` with ``--config.a.b=VALUE`` overrides applied, read by absl's config flags as
    :func:`parse_config_command` reads train's (``--config.data.accept_secondary_capture=false``
    or ``=0`` alike); an unknown field, a wrong type or a missing value is one line."""
    from absl import flags
    from ml_collections import config_flags

    if problems := _override_problems(overrides, config):
        raise UsageError(" | ".join(problems + _known_override_problems(overrides, config)))
    if note := repeated_override_note(overrides):
        print(note, file=sys.stderr)
    fv, full = flags.FlagValues(), ["lnm-jax", *overrides]
    config_flags.DEFINE_config_dict("config", config, "experiment config", flag_values=fv, sys_argv=full)
    if left := _read_flags(fv, full, config):
        raise UsageError(leftover_line(left, overrides, config))
    return fv.config


def _read_flags(fv, full: list[str], base) -> list[str]:
    """Parses ``full`` (a program name, then arguments) into ``fv``; returns the arguments no
    flag took. A refused value is one line naming the override (:func:`_wrong_type_line`)."""
    from absl import flags

    try:
        return fv(full)[1:]
    except flags.Error as e:
        wrong = _WRONG_TYPE.match(str(e))
        if unset := re.match(r"flag --([\w-]+)=None: Flag --\1 must have a value other than None", str(e)):
            raise UsageError(f"--{unset[1]} is required: the {fv[unset[1]].help}, --{unset[1]} DIR") from e
        if bare := re.match(r"Missing value for flag --config\.([\w.]+)", str(e)):
            raise UsageError(f"--config.{bare[1]}: give a value, --config.{bare[1]}=VALUE") from e
        if number := re.match(r"flag --([\w-]+)=(.*?): invalid literal for int", str(e)):  # a command's own option
            raise UsageError(f"--{number[1]}={number[2]}: an integer, not {number[2]!r}") from e
        if switch := re.match(r"flag --([\w-]+)=(.*?): \('Non-boolean", str(e)):  # a command's own switch
            raise UsageError(
                f"--{switch[1]}={switch[2]}: a True/False option is true or false, not {switch[2]!r}"
            ) from e
        if wrong and (line := _wrong_type_line(base, *wrong.groups()[:2])):
            raise UsageError(" | ".join(_every_override_problem(full, base) or [line])) from e
        raise UsageError(str(e)) from e
    except ValueError as e:
        if negated := re.match(r"--no([\w.-]+)=(\S*) does not take an argument", str(e)):  # absl's words
            raise UsageError(f"--no{negated[1]}={negated[2]}: {negated_line(negated[1])}") from e
        raise UsageError(f"config override: {' '.join(str(e).strip().strip(chr(39)).split())}") from e
    except (AttributeError, KeyError, TypeError) as e:  # ml_collections on a bad override
        raise UsageError(f"config override: {' '.join(str(e).strip().strip(chr(39)).split())}") from e


# what a config field of each type holds, for a refused override's line
_KINDS = {bool: "True or False", int: "an integer", float: "a number", str: "text"}


_WRONG_TYPE = re.compile(r"flag --config\.([\w.]+)=(.*?): (invalid literal|could not convert|\('Non-boolean)")


def _every_override_problem(full: list[str], base) -> list[str]:
    """Every ``--config.KEY=VALUE`` of ``full`` refused for its value's type (one line each,
    :func:`_wrong_type_line`), then every range problem of the config the others make
    (:func:`lnm_jax.config.config_problems`): all at once, as other config problems are
    (helper-86: absl stops at the first, and a type error had hidden every other problem)."""
    from absl import flags
    from ml_collections import config_flags

    from lnm_jax.config import config_problems

    def parsed(overrides: list[str]):
        fv, argv = flags.FlagValues(), ["lnm-jax", *overrides]
        config = base.copy_and_resolve_references()
        config_flags.DEFINE_config_dict("config", config, "experiment config", flag_values=fv, sys_argv=argv)
        fv(argv)
        return fv.config

    typed, good = [], []
    for arg in split_overrides(full[1:], base)[0]:  # (each as --config.FIELD=VALUE, however written)
        try:
            parsed([arg])
            good.append(arg)
        except flags.Error as e:
            wrong = _WRONG_TYPE.match(str(e))
            typed.append((wrong and _wrong_type_line(base, *wrong.groups()[:2])) or str(e))
    return typed + config_problems(parsed(good))


def _known_override_problems(argv: list[str], base) -> list[str]:
    """Beside an unknown key's line, the problems of the overrides of ``argv`` that name fields
    (:func:`_every_override_problem`), so that every problem is said at once (helper-87: a wrong
    type beside a misspelt key waited for the next try); [] where they cannot be read apart."""
    try:
        overrides = split_overrides(argv, base)[0]
    except UsageError:  # a value-less override: said on the next try, as before
        return []
    from absl import flags

    known = [o for o in overrides if not _override_problems([o], base)]
    try:
        return _every_override_problem(["lnm-jax", *known], base) if known else []
    except (flags.Error, ValueError):  # the unknown key's line alone, as before
        return []


def _wrong_type_line(config, key: str, text: str) -> str | None:
    """The line for ``--config.KEY=TEXT`` refused for its type (``1.5`` for an integer field,
    where ml_collections' own message is Python's ``invalid literal for int()``); None when
    ``key`` names no field of a known type."""
    held = _KINDS.get(type(_held(config, key)))
    return f"--config.{key}={text}: the field holds {held}, not {text!r}" if held else None


def _held(config, key: str):
    """The value of config field ``key`` (dotted), or None where ``config`` has no such field."""
    node = config
    try:
        for part in key.split("."):
            node = node[part]
    except (KeyError, TypeError):
        return None
    return node


def split_overrides(argv: list[str], config) -> tuple[list[str], list[str]]:
    """``(overrides, rest)``: the ``--config.FIELD`` overrides of ``argv``, each written
    ``--config.FIELD=VALUE``, and its other arguments. The rules are absl's config flags', which
    read train's: ``--config.FIELD VALUE`` is ``--config.FIELD=VALUE``; a True/False field
    never takes the next argument (a bare ``--config.FLAG`` is ``--config.FLAG=True``, and a
    ``False`` after it is left over: :func:`leftover_line`). ``config``: the config they apply to,
    whose field types say which fields are True/False."""
    overrides, rest, i = [], [], 0
    while i < len(argv):
        x = argv[i]
        if x.startswith("--noconfig."):  # absl's False for a True/False field
            overrides.append(x)
        elif not x.startswith("--config.") or "=" in x:
            (overrides if x.startswith("--config.") else rest).append(x)
        elif isinstance(_held(config, x.removeprefix("--config.")), bool):
            overrides.append(f"{x}=True")
        elif i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            overrides.append(f"{x}={argv[i + 1]}")
            i += 1
        else:  # absl would take the next option as its value
            raise UsageError(f"{x}: give a value, {x}=VALUE")
        i += 1
    return overrides, rest


_ONE_DASH = re.compile(r"-([A-Za-z][\w.-]+)(=.*)?")
# an option whose two hyphens an editor or a chat joined into a dash (en, em, minus, ...):
# argparse had said its options were missing, absl that nothing took the arguments
_DASHES = "\u2010-\u2015\u2212\ufe58\ufe63\uff0d"
_OTHER_DASH = re.compile(rf"-?([{_DASHES}])[{_DASHES}-]?(?=[A-Za-z])")


def check_option_forms(argv: list[str]) -> None:
    """Refuses an option written with one dash (``-resume``, ``-config.train.epochs=3``) in one
    line naming its two-dash form. absl, which reads train's, pretrain's, reproduce's and demo's
    options, takes ``-resume`` as ``--resume``, where this CLI's own readings of them (train's
    ``--resume`` before its config is chosen, an override's field checked by name) see no option:
    ``train -resume`` had resumed against the built-in config, and ``-config.F`` skipped the
    field's check. Every command refuses the form alike. A value that starts with a dash and a
    letter is written after ``=`` (``--OPTION=-value``); ``-h``, negative numbers and what follows
    ``--`` pass. An option begun with a dash that is not a hyphen (``—workdir``: an editor's or a
    chat's em or en dash for ``--``) is said so. An empty path (``--workdir=``, ``--out ""``) is
    refused too: it is read as the current folder, and ``train --workdir= --resume`` had trained a
    new run into it."""
    for i, x in enumerate(argv):
        if x == "--":  # what follows is arguments, not options
            return
        if m := _OTHER_DASH.match(x):
            raise UsageError(
                f"{x}: begins with {unicodedata.name(m.group(1)).lower()} (U+{ord(m.group(1)):04X}), not '--' "
                f"(an editor or a chat may have joined the two hyphens): write --{x[m.end() :]} (a value that "
                "begins with it goes after '=', --OPTION=VALUE, a file name after '--')"
            )
        if _ONE_DASH.fullmatch(x):
            raise UsageError(
                f"{x}: one dash; an option takes two (-{x.split('=')[0]}), and a value that starts with '-' "
                f"goes after '=' (--OPTION={x})"
            )
        name, eq, value = x.partition("=")
        if name not in _PATH_OPTIONS:
            continue
        given = value if eq else argv[i + 1] if i + 1 < len(argv) else None
        if given is not None and not given.strip():
            raise UsageError(f"{name}: give a path, not an empty value (it would be read as the current folder)")
        if not eq and given is not None and given.startswith("--"):  # absl would take the option as the path
            raise UsageError(f"{name}: give a path before {given}, or {name}=PATH")


# options that name a file or folder: an empty value is refused (``--workdir=`` had trained into
# the current folder, skipping train's --resume check)
_PATH_OPTIONS = {"--workdir", "--out", "--manifest", "--src", "--mapping", "--exported", "--config"}


def negated_line(key: str) -> str:
    """What ``--noKEY`` is, for a value given to it: absl's False for the True/False ``KEY``."""
    return f"--no{key} takes no value; it sets {key} False, as --{key}=false does"


def leftover_line(leftover: list[str], argv: list[str], config, switches: Iterable[str] = ()) -> str:
    """The line refusing arguments no option took (``leftover``) from a command's ``argv``. A
    value written with a space after a True/False override (``--config.data.accept_secondary_capture
    False``) or after one of the command's True/False ``switches`` (``--resume False``) is named
    as such: absl reads the bare flag as True and leaves the value, which had been dropped in
    silence."""

    def switch(key: str) -> bool:
        return key in switches or (key.startswith("config.") and isinstance(_held(config, key[7:]), bool))

    for before, x in zip(argv, argv[1:]):
        key = before.removeprefix("--")
        if x in leftover and key.startswith("no") and switch(key[2:]):
            return f"unexpected argument {x!r} after --{key}: {negated_line(key[2:])}"
        if x in leftover and switch(key):
            form = f"--{key}={x}" if isinstance(_switch_value(x), bool) else f"--{key}=true or --{key}=false"
            return (
                f"unexpected argument {x!r} after --{key}: a True/False option takes its value after "
                f"'=' ({form}); alone, --{key} sets it True"
            )
    many = len(leftover) > 1
    said = " ".join(repr(x) for x in leftover)
    return f"unexpected argument{'s' if many else ''} {said}: no option takes {'them' if many else 'it'}"


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


def load_config_file(path: Path | str):
    """``get_config()`` of a config file, or the config a run recorded (a ``config.json``, checked
    as a run's is); :class:`UsageError` (one line) when the file is missing, a folder, of
    another kind, does not parse, or defines no ``get_config``."""
    import importlib.util

    from lnm_jax.run_files import RunFiles

    path = Path(path)
    if path.is_dir():
        raise UsageError(
            f"config file {path} is a folder: give a config file (configs/*.py) or a run's config.json "
            f"({RunFiles(path).config} where it is a run folder)"
        )
    if not path.is_file():
        raise UsageError(f"config file {path} does not exist")
    if path.suffix.lower() == ".json":  # a run's recorded config: the run redone from its record
        from lnm_jax.run_config import read_config_json  # noqa: PLC0415

        try:
            return read_config_json(path)
        except DamagedFileError as e:
            raise UsageError(str(e)) from None
        except (ValueError, TypeError, AttributeError) as e:  # (helper-102: a metrics.json: "does not accept dots")
            raise UsageError(f"config file {path} is no run's config.json ({type(e).__name__}: {e})") from None
    if path.suffix != ".py":
        raise UsageError(f"config file {path} is neither a Python config (.py, defining get_config) nor a config.json")
    spec = importlib.util.spec_from_file_location(f"lnm_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except SyntaxError as e:
        raise UsageError(f"config file {path}, line {e.lineno}: {e.msg}") from None
    except Exception as e:  # noqa: BLE001  (whatever the file raises, in one line)
        raise UsageError(f"config file {path} fails to load: {type(e).__name__}: {e}") from None
    if not callable(getattr(module, "get_config", None)):
        raise UsageError(f"config file {path} defines no get_config() (see configs/ for examples)")
    return module.get_config()


def _override_problems(argv: list[str], config) -> list[str]:
    """One line per ``--config.a.b=v`` override whose key ``config`` lacks (with the closest
    valid names: by spelling, or by initials as ``lr`` for ``learning_rate``), or that names a
    group of fields rather than one."""

    from lnm_jax.config import config_keys

    keys = config_keys(config)
    out = []
    for arg in argv:
        if not arg.startswith("--config."):
            continue
        key = arg.removeprefix("--config.").split("=", 1)[0]
        node, found = config, True
        for part in key.split("."):
            if not hasattr(node, "keys") or part not in node:
                found = False
                break
            node = node[part]
        if found and hasattr(node, "keys") and "=" in arg:
            out.append(f"--config.{key} is a group of fields, not a field: set one, e.g. --config.{key}.FIELD=VALUE")
        elif not found:
            section, _, leaf = key.rpartition(".")
            siblings = [k for k in keys if k.rpartition(".")[0] == section]
            initials = [k for k in siblings if "".join(w[0] for w in k.rpartition(".")[2].split("_")) == leaf]
            other = [k for k in siblings if k.rpartition(".")[2] == FIELD_SYNONYMS.get(leaf)]  # arch -> backbone
            near = list(dict.fromkeys(other + initials + difflib.get_close_matches(key, keys, n=3, cutoff=0.6)))[:3]
            hint = f"; did you mean {', '.join(near)}?" if near else "; see configs/ and lnm_jax/config.py"
            out.append(f"--config.{key}: no such config field{hint}")
    return out


def cmd_norm_stats(argv: list[str]) -> int:
    from lnm_jax.config import base_config  # noqa: PLC0415  (its defaults: one definition)

    d = base_config().data
    p = _parser(prog="lnm-jax norm-stats", description="Per-modality mean/std of the training split.")
    p.add_argument("--manifest", required=True, type=Path, help="the cohort manifest CSV")
    p.add_argument(
        "--image-size",
        type=_config_value("data.image_size", int),
        default=d.image_size,
        help="config data.image_size (pixels)",
    )
    p.add_argument("--seed", type=_seed, default=d.split.seed, help="split seed (config data.split.seed)")
    p.add_argument("--out", type=Path, help="also write the JSON here")
    p.add_argument(
        "--field-of-view-mm",
        type=_config_value("data.field_of_view_mm"),
        default=d.field_of_view_mm,
        help="config data.field_of_view_mm",
    )
    _framing_arguments(p)
    p.add_argument(
        "--clip-frames",
        type=_config_value("data.clip_frames", int),
        default=d.clip_frames,
        help="config data.clip_frames: the CEUS clip frames training feeds",
    )
    fractions = {k: _config_value(f"data.split.{k}_fraction") for k in ("test", "val")}
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


# The config fields people change most, shown by --help of every config-taking command.
COMMON_FIELDS = (
    ("modalities", "inputs: us_lnm | bmode | ceus | dual | triple, or a comma list such as bmode,us_lnm"),
    ("data.manifest", "cohort manifest CSV; empty: the embedded synthetic cohort"),
    ("data.image_size", "side of the square each image is resized to, in pixels"),
    ("train.epochs", "training epochs"),
    ("train.learning_rate", "Adam's learning rate"),
    ("model.backbone", "resnet10 | resnet18 | resnet34 | resnet50 | vgg11 | inception_v3 ..."),
    ("model.init_from", "a pretrained backbone (lnm-jax convert-weights or pretrain)"),
    ("model.fusion", "concat (the paper's head) | late (per-input heads, for small cohorts)"),
)
# ... and those of one command
COMMAND_FIELDS = {
    "train": (
        (
            "train.checkpoint_every_epochs",
            "save 'latest' every N epochs and at the last epoch; 0: each epoch whose previous save has finished",
        ),
    ),
    "pretrain": (
        ("pretrain.epochs", "SimCLR epochs"),
        ("pretrain.batch_size", "images per SimCLR batch (each backbone needs at least one batch of images)"),
        ("pretrain.shared_backbone", "one backbone for every image input (else one per input)"),
    ),
    "reproduce": (
        ("protocol.folds", "K-fold cross-validation (0: the paper's 8:2 split)"),
        ("protocol.pretrain", "a SimCLR pretraining per split, the test patients left out"),
        ("protocol.pretrain_manifests", "more manifests for every split's pretraining"),
    ),
}
DESCRIPTIONS = {
    "train": "Train a model (the paper's triple ResNet-50 by default) in a run folder.",
    "pretrain": "Self-supervised (SimCLR) backbones from the manifests' images, for model.init_from.",
    "reproduce": "The paper's protocol: Tables 1-3 and the figures, in one folder.",
    "demo": "Synthesise the embedded cohort, train configs/demo.py on it and evaluate.",
}


def config_help(name: str, default_factory, fv) -> str:
    """``--help`` of a config-taking command: its flags, the config fields people change most
    (with the defaults of the config it starts from) and where the rest are."""
    from lnm_jax.config import config_keys

    config = default_factory()
    lines = [
        f"usage: lnm-jax {name} --workdir W [--config FILE] [--config.FIELD=VALUE ...] [options]",
        "",
        DESCRIPTIONS.get(name, ""),
        "",
        "options:",
        "  --workdir W            the run folder (required)",
        "  --config FILE          a config file (configs/*.py: get_config()); default: the built-in one",
        f"  --config.FIELD=VALUE   override one field, e.g. --config.{'pretrain' if name == 'pretrain' else 'train'}"
        ".epochs=3",
    ]
    for flag in sorted(set(fv) - {"workdir", "config"}):
        lines.append(_flag_line(fv[flag]))
    lines += ["", "config fields people change most (default of this command's config):"]
    for field, what in COMMON_FIELDS + COMMAND_FIELDS.get(name, ()):
        node = config
        for part in field.split("."):
            node = node[part]
        lines.append(f"  {field:<28} {what} [{node!r}]")
    lines += [
        "",
        f"all {len(config_keys(config))} fields: lnm_jax/config.py; experiments as files: configs/ "
        "(paper_*.py, demo.py, small_cohort.py, reproduce_*.py)",
    ]
    return "\n".join(lines)


ABSL_MULTI_NOTE = "repeat this option to specify a list of values"  # what absl appends to a multi flag's help


def _flag_line(flag) -> str:
    """One option of :func:`config_help`: ``--name VALUE`` (the value's kind; none for a switch),
    its description, whether it repeats, and its default where it has one."""
    multi = ABSL_MULTI_NOTE in flag.help
    text = " ".join(flag.help.replace(ABSL_MULTI_NOTE, "").split()).rstrip(";")
    kind = flag.flag_type()
    name = f"--{flag.name}" if kind == "bool" else f"--{flag.name} {'N' if kind == 'int' else flag.name.upper()}"
    if multi:
        text += " (repeat the option for more)"
    if _shown_default(flag.default):
        text += f" [default: {flag.default}]"
    return f"  {name:<22} {text}"


def parse_config_command(name: str, argv: list[str], default_factory, extra=None) -> tuple:
    """absl flags + ml_collections config flags for one sub-command: ``(config, flag values)``.
    ``-h``/``--help`` prints :func:`config_help` and exits 0."""
    from absl import flags
    from ml_collections import config_flags

    fv = flags.FlagValues()
    if "-h" in argv or "--help" in argv:
        flags.DEFINE_string("workdir", None, "run folder", flag_values=fv)
        if extra is not None:
            extra(flags, fv)
        print(config_help(name, default_factory, fv))
        raise SystemExit(0)
    # config_flags reads overrides from this argv, the file first wherever it was given (absl
    # refuses an override before --config FILE, which validate takes)
    at = _config_file_at(argv)
    full = [f"lnm-jax {name}", *(argv[i] for i in at), *(x for i, x in enumerate(argv) if i not in at)]
    file = _config_file_arg(argv)
    base = default_factory() if file is None else load_config_file(file)  # a broken file: one line
    if problems := _override_problems(argv, base):  # before absl, which raises on the first
        raise UsageError(" | ".join(problems + _known_override_problems(argv, base)))
    overrides, _ = split_overrides(argv, base)  # a value-less override: absl would take the next option as its value
    if note := repeated_override_note(overrides):
        print(note, file=sys.stderr)
    if file is not None and file.suffix == ".py":
        config_flags.DEFINE_config_file("config", None, "experiment config file", flag_values=fv, sys_argv=full)
    elif file is not None:  # a config.json, read above: its values are the base the overrides apply to
        full = [x for i, x in enumerate(full) if i == 0 or i > len(at)]
        config_flags.DEFINE_config_dict("config", base, "experiment config", flag_values=fv, sys_argv=full)
    else:
        config_flags.DEFINE_config_dict("config", base, "experiment config", flag_values=fv, sys_argv=full)
    flags.DEFINE_string("workdir", None, "run folder", flag_values=fv, required=True)
    if extra is not None:
        extra(flags, fv)
    # the command's own options (an override repeated is absl's: the last one, appended to a base line)
    single = {f"--{n}" for n in fv if not fv[n].boolean and not isinstance(fv[n], flags.MultiFlag)}
    single = {o for o in single if not o.startswith("--config")}
    if twice := repeated_option(argv, single):
        raise UsageError(twice)
    if left := _read_flags(fv, full, base):
        raise UsageError(leftover_line(left, argv, base, [n for n in fv if fv[n].boolean]))
    return fv.config, fv


def _config_file_at(argv: list[str]) -> list[int]:
    """The positions in ``argv`` of ``--config FILE`` (both) and ``--config=FILE``, in order."""
    return [
        i for i, x in enumerate(argv) if x.startswith("--config=") or x == "--config" or argv[i - 1 : i] == ["--config"]
    ]


def _config_file_arg(argv: list[str]) -> Path | None:
    """The file of the first ``--config FILE`` / ``--config=FILE``, or None."""
    for i in _config_file_at(argv):
        if argv[i].startswith("--config="):
            return Path(argv[i].removeprefix("--config="))
        if argv[i] != "--config":  # the FILE after --config
            return Path(argv[i])
    return None


def _switch_value(text: str) -> bool | str:
    """A True/False switch's value as absl reads it (absl's own parser: true/t/1, false/f/0, any
    case); other text as given, for absl to refuse."""
    from absl import flags

    try:
        return flags.BooleanParser().parse(text)
    except ValueError:
        return text


def cmd_train(argv: list[str]) -> int:
    from lnm_jax.config import base_config
    from lnm_jax.run_files import RunFiles

    pre = _parser(prog="lnm-jax train", add_help=False)
    pre.add_argument("--workdir")
    # read as absl reads the switch below (--resume, --resume=false, --noresume); a value after a
    # space is taken here and refused by absl, as a leftover
    pre.add_argument("--resume", nargs="?", const="true", default="false", type=_switch_value)
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

    p = _parser(prog="lnm-jax evaluate", description="Evaluate a run's checkpoint.")
    p.add_argument("--workdir", required=True, type=Path, help=RUN_FOLDER_HELP)
    p.add_argument("--checkpoint", choices=("best", "latest"), default="best", help=CHECKPOINT_HELP)
    p.add_argument("--splits", type=_comma_list(names.SPLITS), default="val,test", help="comma list of train,val,test")
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

    p = _parser(prog="lnm-jax availability", description="Metrics of a missing-input run per availability pattern.")
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

    p = _parser(
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
    p.add_argument("--seed", type=_seed, default=0, help="the bootstrap's seed")
    a = p.parse_args(argv)
    if a.bootstrap < 0:
        p.error(f"--bootstrap {a.bootstrap}: a count of resamples, 0 or more")
    from lnm_jax.evaluation.external import external_lines, external_validation

    print(external_lines(external_validation(a.predictions, a.card, a.out, n_boot=a.bootstrap, seed=a.seed)))
    return 0


def cmd_predict(argv: list[str]) -> int:

    p = _parser(prog="lnm-jax predict", description="P(LNM) for new patients.")
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

    p = _parser(
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
    p.add_argument("--threshold", type=_probability, default=0.5, help="P(LNM) cut for correct/incorrect, in (0, 1)")
    p.add_argument("--seed", type=_seed, default=0, help="of the random-map baseline")
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

    p = _parser(
        prog="lnm-jax export",
        description="A trained model as a folder that runs without this package: predict.py, lnm_runtime/ "
        "(its preprocessing), requirements.txt, the program and weights, metadata.json and model_card.md.",
    )
    p.add_argument("--workdir", required=True, type=Path, help=RUN_FOLDER_HELP)
    p.add_argument("--checkpoint", choices=("best", "latest"), default="best", help=CHECKPOINT_HELP)
    p.add_argument("--out", required=True, type=Path, help="a new folder")
    p.add_argument(
        "--format",
        type=_comma_list(names.EXPORT_FORMATS),
        default=names.EXPORT_FORMATS[0],
        help=f"comma list of {','.join(names.EXPORT_FORMATS)} (onnx: the onnx extra)",
    )
    p.add_argument(
        "--platforms",
        type=_comma_list(names.EXPORT_PLATFORMS),
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

    p = _parser(
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

    p = _parser(
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

    p = _parser(
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

    p = _parser(
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

    p = _parser(prog="lnm-jax convert-busbra", description="BUS-BRA (Images/, bus_data.csv) -> cohort manifest.")
    p.add_argument("--src", required=True, type=Path, help="the BUS-BRA folder")
    p.add_argument("--out", required=True, type=Path, help="manifest CSV to write")
    p.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    a = p.parse_args(argv)
    from lnm_jax.data.cohorts.busbra import convert_busbra

    summary = convert_busbra(a.src, a.out, overwrite=a.overwrite)
    print(f"wrote {a.out}: " + ", ".join(f"{k} {v}" for k, v in summary.items()))
    return 0


def cmd_deidentify(argv: list[str]) -> int:

    p = _parser(
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
    return f"{usage}\n\n{__doc__.strip().replace('``', '')}\n"


EXIT_INTERRUPTED = 130  # Ctrl-C (SIGINT), as a shell reports 128 + 2
EXIT_TERMINATED = 143  # SIGTERM, 128 + 15


class Terminated(KeyboardInterrupt):
    """SIGTERM (``timeout``, Slurm, ``docker stop``, systemd) taken as Ctrl-C is: a save in
    flight finishes, training writes the best epoch it holds between save points
    (``training/save_schedule.py``), then the command stops (exit 143)."""


def _raise_terminated(signum, frame):
    STOP_ASKED.set()
    raise Terminated()


def _raise_interrupted(signum, frame):
    STOP_ASKED.set()
    raise KeyboardInterrupt


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """SIGTERM raises :class:`Terminated` in the main thread while a command runs, where no
    handler of the caller's is installed (the previous one is put back after); SIGINT, where
    Python's own handler is installed, raises KeyboardInterrupt as it does. Both record the
    stop (:data:`lnm_jax.fileio.STOP_ASKED`), which the training loops check at every step: an
    interrupt raised where the interpreter swallows it is not lost."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    STOP_ASKED.clear()
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
        STOP_ASKED.clear()  # (a command's stop is its own: not the next command's in this process)


def main(argv: list[str] | None = None) -> int:
    from lnm_jax.config import ConfigError

    argv = sys.argv[1:] if argv is None else list(argv)
    text_encoding.tolerant_console()
    debug = "--debug" in argv
    argv = [x for x in argv if x != "--debug"]
    name = argv[0] if argv else ""
    command = COMMANDS.get(name)
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
    try:
        check_option_forms(argv[1:])
        with _sigterm_as_interrupt():
            return command(argv[1:])
    except UsageError as e:
        return _fail(name, str(e), 2)
    except ConfigError as e:  # a config that cannot describe a run: bad arguments too
        return _fail(name, str(e), 2)
    except SystemExit as e:  # argparse: --help (0) or bad arguments (2)
        return e.code if isinstance(e.code, int) else 2
    except Terminated:
        return _fail(name, "terminated (SIGTERM)", EXIT_TERMINATED)
    except KeyboardInterrupt:
        return _fail(name, "interrupted", EXIT_INTERRUPTED)
    except BrokenPipeError:
        return _closed_pipe()
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
