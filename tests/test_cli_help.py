"""Every command of the table answers --help / -h, fast: without importing JAX, Flax, orbax,
grain or TensorFlow (the imports that make a command take seconds to start), and config-taking
commands list the fields people change most (issue 29)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from support import cpu_env

from lnm_jax.cli import COMMANDS

SCRIPT = r"""
import argparse, contextlib, io, json, sys
from lnm_jax.cli import COMMANDS, main
out, undescribed, command = {}, set(), None
add_argument = argparse._ActionsContainer.add_argument
def described(self, *args, **kwargs):  # every option a command's parser defines, and its help
    action = add_argument(self, *args, **kwargs)
    if action.option_strings and not action.help and getattr(self, "add_help", True):  # not a pre-parser
        undescribed.add(f"{command} {'/'.join(action.option_strings)}")
    return action
argparse._ActionsContainer.add_argument = described
for name in COMMANDS:
    command = name
    for flag in ("--help", "-h"):
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            rc = main([name, flag])
        out[f"{name} {flag}"] = {"rc": rc, "text": buf.getvalue()}
buf = io.StringIO()
with contextlib.redirect_stdout(buf):
    out["top"] = {"rc": main(["--help"]), "text": buf.getvalue()}
for argv in ([], ["tarin"]):  # no command, a misspelt one: the same help, and a usage error
    buf, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(err):
        out[f"lnm-jax {' '.join(argv)}".strip()] = {"rc": main(argv), "text": buf.getvalue(), "err": err.getvalue()}
HEAVY = {"jax", "flax", "orbax", "grain", "tensorflow", "torch", "scipy"}
heavy = sorted({m.split(".")[0] for m in sys.modules} & HEAVY)
print(json.dumps({"help": out, "heavy": heavy, "undescribed": sorted(undescribed)}))
"""


def test_every_command_answers_help_without_heavy_imports():
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=cpu_env(), timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    res = json.loads(done.stdout.strip().splitlines()[-1])
    assert res["heavy"] == [], f"--help imported {res['heavy']}"
    top = res["help"].pop("top")
    assert top["rc"] == 0 and top["text"].startswith("usage: lnm-jax COMMAND") and "``" not in top["text"], top
    # 'lnm-jax' alone exited 0, as if it had done something (fresh-user trial)
    r = res["help"].pop("lnm-jax")
    assert r["rc"] == 2 and r["text"] == top["text"] and r["err"].startswith("lnm-jax: error: no command given"), r
    # a mistyped command: one line, not the help before it (the trial of a3f0dab)
    r = res["help"].pop("lnm-jax tarin")
    assert r["rc"] == 2 and r["text"] == "" and r["err"].startswith("lnm-jax: error: unknown command 'tarin'; did"), r
    assert set(res["help"]) == {f"{n} {f}" for n in COMMANDS for f in ("--help", "-h")}
    for key, r in res["help"].items():
        assert r["rc"] == 0 and "usage: lnm-jax" in r["text"], (key, r)
    assert res["undescribed"] == [], "options --help does not describe: " + ", ".join(res["undescribed"])
    for name in ("train", "pretrain", "reproduce", "demo"):
        text = res["help"][f"{name} --help"]["text"]
        for field in ("modalities", "data.manifest", "data.image_size", "train.epochs", "model.init_from"):
            assert field in text, (name, field)
        assert "configs/" in text
    # defaults are shown (none were: fresh-user trial), and the absl options read as the others do
    # (it showed '--include_test', '--fold' with no value and absl's 'repeat this option' note)
    assert "--seed SEED           of the random-map baseline (default: 0)" in res["help"]["gradcam --help"]["text"]
    pretrain = res["help"]["pretrain --help"]["text"]
    assert "--fold N " in pretrain and "--include-test " in pretrain and "--manifest MANIFEST " in pretrain
    assert "_test" not in pretrain and "repeat this option to specify" not in pretrain


SCRIPTS = sorted((Path(__file__).resolve().parents[1] / "scripts").glob("*.py"))
SCRIPTS_HELP = r"""
import contextlib, io, json, runpy, sys
out = {}
for path in sys.argv[1:]:
    sys.argv, buf, err = [path, "--help"], io.StringIO(), io.StringIO()
    sys.path.insert(0, path.rsplit("/", 1)[0])  # as 'python scripts/x.py' runs it
    try:
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(err):
            runpy.run_path(path, run_name="__main__")
        rc = "returned"  # ran its job instead of answering --help
    except SystemExit as e:
        rc = e.code or 0
    except Exception as e:  # a traceback, as delong_ci_coverage.py gave (int('--help'))
        rc = repr(e)
    out[path] = {"rc": rc, "text": buf.getvalue()[:200]}
print(json.dumps(out))
"""


def test_every_script_answers_help_without_running():
    """``python scripts/X.py --help`` prints its usage and exits 0 for every script (four had run
    their whole job or raised ``int('--help')``). One process for all: imports are shared."""
    assert len(SCRIPTS) >= 10
    done = subprocess.run(
        [sys.executable, "-c", SCRIPTS_HELP, *map(str, SCRIPTS)],
        capture_output=True,
        text=True,
        env=cpu_env(),
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    res = json.loads(done.stdout.strip().splitlines()[-1])
    wrong = {
        Path(k).name: r for k, r in res.items() if r["rc"] != 0 or not r["text"].startswith(f"usage: {Path(k).name}")
    }
    assert wrong == {}, wrong


def test_python_m_lnm_jax_is_the_command():
    """``python -m lnm_jax`` runs the ``lnm-jax`` command (a venv not activated, a notebook)."""
    done = subprocess.run([sys.executable, "-m", "lnm_jax", "--help"], capture_output=True, text=True, env=cpu_env())
    assert done.returncode == 0 and done.stdout.startswith("usage: lnm-jax COMMAND"), done
    done = subprocess.run([sys.executable, "-m", "lnm_jax", "tarin"], capture_output=True, text=True, env=cpu_env())
    assert done.returncode == 2 and "unknown command 'tarin'" in done.stderr, done


def test_an_impossible_option_value_is_a_usage_error_naming_it(capsys):
    """Option values that had been accepted (exit 0 with a meaningless result, or a late
    internal error): ``export --platforms foo`` wrote a folder no machine could score with,
    ``norm-stats --image-size 0`` failed on a division by zero and ``-5`` printed statistics,
    ``--field-of-view-mm -1`` passed where the config field refuses it, ``evaluate --splits foo``
    was an 'unexpected KeyError', ``gradcam --threshold 2`` / ``nan`` built its grids. Each is
    exit 2 with one line naming the option, before anything is read."""
    from lnm_jax.cli import main

    for argv, said in (
        (["export", "--workdir", "w", "--out", "o", "--platforms", "foo"], "--platforms: 'foo' not among cpu"),
        (["export", "--workdir", "w", "--out", "o", "--format", "stablehlo,stablehlo"], "repeats an item of"),
        (["norm-stats", "--manifest", "m", "--image-size", "0"], "--image-size: 0 is not an integer >= 1"),
        (["norm-stats", "--manifest", "m", "--image-size", "-5"], "(config data.image_size)"),
        (["norm-stats", "--manifest", "m", "--field-of-view-mm", "-1"], "-1.0 is not a number >= 0"),
        (["norm-stats", "--manifest", "m", "--clip-frames", "0"], "(config data.clip_frames)"),
        (["norm-stats", "--manifest", "m", "--test-fraction", "1.5"], "(config data.split.test_fraction)"),
        (["evaluate", "--workdir", "w", "--splits", "foo"], "--splits: 'foo' not among train, val, test"),
        (["evaluate", "--workdir", "w", "--splits", "val,"], "'' not among"),
        (["gradcam", "--workdir", "w", "--threshold", "2"], "--threshold: 2.0 is not a probability in (0, 1)"),
        (["gradcam", "--workdir", "w", "--threshold", "nan"], "nan is not a probability"),
    ):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and said in err[0] and err[0].startswith(f"lnm-jax {argv[0]}: error: argument"), err


def test_every_config_problem_is_said_at_once_a_wrong_type_too(capsys, tmp_path):
    """helper-86: an override of the wrong type (``--config.eval.seed=1.5``) was said alone, the
    other overrides' range problems hidden behind it, where the docs say every problem is listed
    at once. Now both kinds, one line each, exit 2, before anything is read or written."""
    from lnm_jax.cli import main

    for argv, said in (
        (
            ["validate", "m.csv", "--config.seed=-1", "--config.eval.seed=1.5", "--config.data.split.seed=4294967296"],
            ["--config.eval.seed=1.5: the field holds an integer", "seed: -1 is not", "data.split.seed: 4294967296"],
        ),
        (
            [
                "train",
                "--workdir",
                str(tmp_path / "w"),
                "--config.train.epochs",
                "abc",
                "--config.train.learning_rate=-1",
            ],
            ["--config.train.epochs=abc: the field holds an integer", "train.learning_rate: -1.0 is not a number > 0"],
        ),  # (the value after a space, as absl takes it)
        (  # beside a misspelt key too (helper-87: the key said alone)
            ["validate", "m.csv", "--config.train.epohcs=2", "--config.eval.seed", "1.5", "--config.seed=-1"],
            ["--config.train.epohcs: no such config field", "--config.eval.seed=1.5: the field", "seed: -1 is not"],
        ),
        (  # another library's name for a field (helper-89: arch was offered batchnorm, variant, width)
            ["validate", "m.csv", "--config.model.arch=vgg11", "--config.train.lr=0.1"],
            ["--config.model.arch: no such config field; did you mean model.backbone,", "mean train.learning_rate"],
        ),
    ):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and all(s in err[0] for s in said), err
    assert not (tmp_path / "w").exists()


def test_a_mistyped_option_is_named_with_the_one_meant(capsys):
    """helper-56: ``predict --manfest M`` said "the following arguments are required:
    --manifest" (the consequence, not the typo), and ``validate M --no-lables`` named no
    option. The mistyped option is named, with the nearest one the command takes."""
    from lnm_jax.cli import main

    for argv, said in (
        (
            ["predict", "--workdir", "w", "--manfest", "m.csv", "--out", "p.csv"],
            "'--manfest' (did you mean --manifest?)",
        ),
        (["evaluate", "--workdir", "w", "--splts", "test"], "unrecognised option '--splts' (did you mean --splits?)"),
        (["norm-stats", "--manifest=m.csv", "--image-sise=32"], "'--image-sise' (did you mean --image-size?)"),
        (["validate", "m.csv", "--no-lables"], "'--no-lables': no option takes it (did you mean --no-labels?)"),
        (["predict", "--workdir", "w", "--manifest", "m", "--out", "p", "--xyzzy"], "unrecognised option '--xyzzy'"),
    ):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and said in err[0] and err[0].startswith(f"lnm-jax {argv[0]}: error: "), err


def test_an_override_reads_alike_in_every_command(capsys, tmp_path):
    """``--config.FIELD VALUE`` (a space, not ``=``) is read as train reads it (absl's config
    flags) by validate too, where it had been "unrecognized arguments: left". A value after a
    True/False override with a space is refused naming the '=' form: absl reads the bare flag as
    True, and ``--config.data.accept_secondary_capture False`` had trained with secondary captures
    accepted, its ``False`` dropped in silence. A stray argument is refused by both."""
    from lnm_jax.cli import main
    from lnm_jax.command_line import (
        UsageError,
        apply_overrides,
        check_option_forms,
        parse_config_command,
        split_overrides,
    )
    from lnm_jax.config import base_config

    for given in (
        ["--config.data.ceus_region", "left"],
        ["--config.data.ceus_region=right", "--config.data.image_size", "64"],
        ["--config.train.epochs", "-3", "--config.train.learning_rate", "1e-4"],
        ["--config.data.accept_secondary_capture"],
        ["--config.data.accept_secondary_capture=False", "--config.model.backbone", "resnet18"],
        ["--config.data.accept_secondary_capture=false", "--config.data.image_size=0x40"],  # absl's spellings
        ["--config.data.accept_secondary_capture=1", "--noconfig.data.cache"],
    ):
        trained, _ = parse_config_command("train", ["--workdir", "w", *given], base_config)
        overrides, rest = split_overrides(given, base_config())
        assert rest == [] and apply_overrides(base_config(), overrides).to_dict() == trained.to_dict(), given
    assert trained.data.accept_secondary_capture is True and trained.data.cache is False
    for argv, said in (
        (
            ["train", "--workdir", "w", "--config.data.accept_secondary_capture", "False"],
            "unexpected argument 'False' after --config.data.accept_secondary_capture: a True/False option "
            "takes its value after '=' (--config.data.accept_secondary_capture=False)",
        ),
        (["validate", "m.csv", "--config.data.accept_secondary_capture", "False"], "(--config.data.accept_secondary"),
        (["train", "--workdir", "w", "stray"], "unexpected argument 'stray': no option takes it"),
        (["validate", "m.csv", "x", "y"], "unexpected arguments 'x' 'y': no option takes them"),
        (["validate", "m.csv", "--config.data.image_size"], "--config.data.image_size: give a value, --config.data"),
        (["train", "--workdir", "w", "--config.data.image_size"], "--config.data.image_size: give a value, --config"),
        (["validate", "m.csv", "--config.data.accept_secondary_capture=no"], "the field holds True or False, not 'no'"),
        (["train", "--workdir", "w", "--config.data.accept_secondary_capture=no"], "holds True or False, not 'no'"),
        (["train", "--workdir", "w", "--resume=yes"], "--resume=yes: a True/False option is true or false, not 'yes'"),
        # a value no run takes: exit 2 in validate as in train (validate had failed on a 0.0
        # fraction with "unexpected StopIteration", and said other config problems with exit 1)
        (["validate", "m.csv", "--config.data.split.val_fraction=0.0"], "data.split.val_fraction: 0.0 is not"),
        (["validate", "m.csv", "--config.train.epochs=-1"], "1 config problem: train.epochs: -1 is not an integer"),
        (["train", "--workdir", "w", "--config.train.epochs=-1"], "1 config problem: train.epochs: -1 is not an int"),
        # the trial of 7a5e1c4: a value-less override took the next option as its value; a value
        # the switch refuses was suggested after '='; a shortened option was taken by validate only
        (["validate", "m.csv", "--config.model.backbone", "--config.train.epochs=3"], "--config.model.backbone: give"),
        (["train", "--workdir", "w", "--config.model.backbone", "--config.train.epochs=3"], "backbone: give a value"),
        (
            ["validate", "m.csv", "--config.data.cache", "yes"],
            "(--config.data.cache=true or --config.data.cache=false)",
        ),
        (["validate", "--man", "m.csv"], "unexpected argument '--man': no option takes it"),
        (["reproduce", "--workdir", str(tmp_path / "w3"), "--folds", "1"], "protocol.folds: 1 is not"),
        (["reproduce", "--workdir", str(tmp_path / "w3"), "--folds=x"], "--folds=x: an integer, not 'x'"),
        # an override before --config FILE: read as validate reads it (absl had refused the order)
        (["train", "--workdir", "w", "--config.train.epochs=-1", "--config", "demo"], "train.epochs: -1"),
        # --noX with a value: train's pre-reading had said argparse's "ignored explicit argument",
        # the others "config override: --noresume=false does not take an argument"
        (["train", "--workdir", "w", "--noresume=false"], "--noresume=false: --noresume takes no value; it sets"),
        (["pretrain", "--workdir", "w", "--noresume=1"], "--noresume=1: --noresume takes no value; it sets resume"),
        (
            ["validate", "m.csv", "--noconfig.data.cache=0"],
            "--noconfig.data.cache=0: --noconfig.data.cache takes no value; it sets config.data.cache False",
        ),
        (["train", "--workdir", "w", "--nodistributed", "1"], "unexpected argument '1' after --nodistributed: --no"),
        (["validate", "m.csv", "--noconfig.data.cache", "False"], "'False' after --noconfig.data.cache: --noconfig"),
        # one dash: absl takes -resume as --resume, which train's choice of config had not seen
        # (a paper-size run had started on a folder with no run), and -config.F skipped F's check
        (["train", "--workdir", str(tmp_path / "w4"), "-resume"], "-resume: one dash; an option takes two (--resume)"),
        (["train", "--workdir", "w", "-config.train.epohcs=3"], "an option takes two (--config.train.epohcs)"),
        (["validate", "m.csv", "-config.data.cache", "0"], "-config.data.cache: one dash; an option takes two"),
        (["pretrain", "-workdir", "w", "--manifest", "m.csv"], "-workdir: one dash; an option takes two (--workdir)"),
        (["predict", "--workdir", "w", "-manifest", "m.csv"], "-manifest: one dash; an option takes two"),
        # a hyphenated switch's value, in the command's words (absl's raw tuple had been printed)
        (["pretrain", "--workdir", "w", "--include-test=yes"], "--include-test=yes: a True/False option is true"),
        # argparse's switches: a yes/no after one had been a second manifest, '=' argparse's words
        (["validate", "--manifest", "m.csv", "--no-labels", "false"], "'false' after --no-labels: --no-labels takes"),
        (["norm-stats", "--manifest", "m.csv", "--overwrite=no"], "--overwrite=no: --overwrite takes no value"),
        # the trial of 169449f: an empty path is the current folder (train --workdir= --resume had
        # trained a new run into it); a single-valued option given twice had taken the last value
        (["train", "--workdir=", "--resume"], "--workdir: give a path, not an empty value"),
        (["train", "--workdir", " ", "--resume"], "--workdir: give a path, not an empty value"),
        (["export", "--workdir", "w", "--out="], "--out: give a path, not an empty value"),
        (["train", "--workdir", "--resume"], "--workdir: give a path before --resume, or --workdir=PATH"),
        (["predict", "--workdir", "w", "--manifest", "a.csv", "--manifest=b.csv"], "--manifest is given 2 times"),
        (["train", "--workdir", "a", "--workdir", "b"], "--workdir is given 2 times: it takes one value"),
        (["reproduce", "--workdir", "a", "--folds", "3", "--folds=5"], "--folds is given 2 times"),
        (["validate", "m.csv", "--no-labels", "0"], "unexpected argument '0' after --no-labels: --no-labels takes"),
        # the trial of a3f0dab: a dash for '--' (argparse had said --workdir was missing); an option
        # and the config field it sets both given (reproduce had taken --folds in silence)
        (["evaluate", "\u2014workdir", "w"], "\u2014workdir: begins with em dash (U+2014), not '--' (an editor"),
        (["predict", "--out", "\u2014x.csv"], "write --x.csv (a value that begins with it goes after '=', --OPTION"),
        (["train", "\u2013workdir", "w"], "begins with en dash (U+2013), not '--' (an editor or a chat may have"),
        (["predict", "\u2212\u2212workdir", "w"], "begins with minus sign (U+2212), not '--' (an editor or a chat"),
        (["validate", "m.csv", "-\u2014no-labels"], "-\u2014no-labels: begins with em dash (U+2014), not '--' (an ed"),
        (["reproduce", "--workdir", str(tmp_path / "w3"), "--folds", "5", "--config.protocol.folds=3"], "--folds and"),
        (["reproduce", "--workdir", "w", "--manifest=a", "--config.data.manifest", "a"], "--manifest and --config."),
        # --resume on a folder with no pretraining: refused, as train's (it had started afresh)
        (
            ["pretrain", "--workdir", str(tmp_path / "w4"), "--manifest", "m.csv", "--resume"],
            f"--resume: {tmp_path / 'w4'} holds no pretraining run (no pretrain_inputs.json); drop --resume",
        ),
    ):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and said in err[0] and err[0].startswith(f"lnm-jax {argv[0]}: error: "), err

    def resume(flags, fv):  # a command's own True/False switch, as train and pretrain define --resume
        flags.DEFINE_bool("resume", False, "continue", flag_values=fv)

    with pytest.raises(UsageError, match="unexpected argument 'False' after --resume: .* '=' .--resume=False."):
        parse_config_command("train", ["--workdir", "w", "--resume", "False"], base_config, resume)
    for given, held in (("--resume=False", False), ("--resume=true", True), ("--noresume", False), ("--resume", True)):
        assert parse_config_command("train", ["--workdir", "w", given], base_config, resume)[1].resume is held
    assert main(["\u2014help"]) == 2  # the command word too, in one line without the help
    out, err = capsys.readouterr()
    assert not out and err.startswith("lnm-jax: error: \u2014help: begins with em dash (U+2014)"), err
    assert not (tmp_path / "w3").exists()  # reproduce refused its --folds before writing a cohort
    assert not (tmp_path / "w4").exists()
    # a negative number after an option is a value, not a one-dash option; -h is help
    check_option_forms(["--config.train.epochs", "-3", "--config.train.learning_rate", "-1e-3", "-h", "--workdir", "w"])
    check_option_forms(["--manifest", "m.csv", "--", "-weird.csv"])  # after '--': arguments
    # an override repeated is absl's (the last one), as a base command line with one appended,
    # and said (helper-50's trial of a3f0dab: a second --config.data.manifest had been taken in
    # silence); the same value twice is not
    capsys.readouterr()
    repeated = ["--workdir", "w", "--config.train.epochs=3", "--config.data.manifest", "a.csv"]
    repeated += ["--config.train.epochs=4"]
    assert parse_config_command("train", [*repeated, "--config.data.manifest=b.csv"], base_config)[0].train.epochs == 4
    assert capsys.readouterr().err == (
        "note: --config.train.epochs is given 2 times (3, 4): the last, 4, is taken; --config.data.manifest is given "
        "2 times (a.csv, b.csv): the last, b.csv, is taken\n"
    )
    parse_config_command("train", ["--workdir", "w", "--config.train.epochs=3", "--config.train.epochs=3"], base_config)
    assert parse_config_command("train", ["--workdir", "w", "--noconfig.data.zero_fill_missing"], base_config)
    assert not capsys.readouterr().err
    # a pretraining folder with no inputs record: one line, with --resume or without
    (tmp_path / "pw" / "checkpoints").mkdir(parents=True)
    for resume in ([], ["--resume"]):
        assert main(["pretrain", "--workdir", str(tmp_path / "pw"), "--manifest", "m.csv", *resume]) == 1
        assert "holds a pretraining run without its pretrain_inputs.json" in capsys.readouterr().err
    # the form the refusal names is taken by train, whose own pre-reading had refused it
    # ("lnm-jax: error: argument --resume: ignored explicit argument 'False'")
    assert main(["train", "--workdir", str(tmp_path), "--resume=False", "--config.train.epochs=-1"]) == 2
    assert "train.epochs: -1" in capsys.readouterr().err
    # a relation between fields the model checks is a config value's problem too: exit 2, as the
    # README says, one line, no folder (helper-77: exit 1)
    assert main(["train", "--workdir", str(tmp_path / "w7"), "--config.data.image_size=7"]) == 2
    err = capsys.readouterr().err
    assert "needs data.image_size >= 32, got 7" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "w7").exists()


def test_a_run_folder_not_given_or_a_file_is_one_line_saying_so(capsys, tmp_path):
    """helper-50's trial of a3f0dab: ``train`` and ``pretrain`` without ``--workdir`` said absl's
    "flag --workdir=None: Flag --workdir must have a value other than None", and a file given as
    ``--workdir`` said mkdir's bare "File exists". Each is one line saying what --workdir is;
    the file is left as it was."""
    from lnm_jax.cli import main

    afile = tmp_path / "notes.txt"
    afile.write_text("mine\n")
    (tmp_path / "link").symlink_to(tmp_path / "gone")
    for argv, rc, said in (
        (["train"], 2, "lnm-jax train: error: --workdir is required: the run folder, --workdir DIR"),
        (["pretrain", "--manifest", "m.csv"], 2, "lnm-jax pretrain: error: --workdir is required: the run folder"),
        (["train", "--workdir", str(afile)], 1, f"lnm-jax train: error: {afile} is a file, not a folder: --workdir "),
        (["pretrain", "--workdir", str(afile), "--manifest", "m.csv"], 1, f"error: {afile} is a file, not a folder"),
        # (helper-52's trial of eaf6508: "File exists", "Not a directory")
        (
            ["train", "--workdir", str(afile / "run")],
            1,
            f"error: {afile / 'run'} lies below {afile}, a file: --workdir",
        ),
        (["train", "--workdir", str(tmp_path / "link")], 1, f"link to {tmp_path / 'gone'}, which does not exist: "),
    ):
        assert main(argv) == rc, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and said in err[0], err
    assert afile.read_text() == "mine\n"


def test_a_demo_into_a_folder_holding_a_run_says_how_to_finish_it(capsys, tmp_path):
    """A demo stopped after training (Ctrl-C) was told to "pass --resume", which demo does not
    take (helper-81): it names train --resume and evaluate on the folder, or a new folder."""
    from lnm_jax.cli import main

    (tmp_path / "w" / "checkpoints").mkdir(parents=True)
    assert main(["demo", "--workdir", str(tmp_path / "w")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    w = tmp_path / "w"
    assert len(err) == 1 and err[0].endswith(
        f"finish it with lnm-jax train --workdir {w} --resume, then lnm-jax evaluate --workdir {w}; or give demo "
        "a new --workdir"
    ), err


def test_a_runs_config_json_is_a_config_file_a_new_run_starts_from(triple_run, tmp_path):
    """helper-100: ``train --config W/config.json`` (a run redone from its own record) died with
    "unexpected AttributeError: 'NoneType' object has no attribute 'loader'"; a folder given as
    the file was said not to exist. A run's config.json is read as the run's is, overrides apply
    on top; a folder, another kind of file and an edited config.json are one line each."""
    import json

    from lnm_jax.command_line import UsageError, parse_config_command
    from lnm_jax.config import base_config

    stored = triple_run.files.config
    argv = ["--config", str(stored), "--workdir", "w", "--config.train.epochs=1", "--config.data.split.seed=3"]
    config, _ = parse_config_command("train", argv, base_config)
    recorded = json.loads(stored.read_text())
    recorded["train"]["epochs"], recorded["data"]["split"]["seed"] = 1, 3
    assert json.loads(config.to_json()) == recorded
    for given, said in (
        (triple_run.workdir, "is a folder: give a config file"),
        (triple_run.files.history, "is neither a Python config"),
    ):
        with pytest.raises(UsageError, match=said):
            parse_config_command("train", ["--config", str(given), "--workdir", "w"], base_config)
    with pytest.raises(UsageError, match=r"metrics.json is no run's config.json"):  # (helper-102)
        other = tmp_path / "metrics.json"
        other.write_text(json.dumps({"splits": {"test": {"at_0.5": {}}}}))
        parse_config_command("train", ["--config", str(other), "--workdir", "w"], base_config)
    edited = tmp_path / "config.json"
    edited.write_text(json.dumps({**json.loads(stored.read_text()), "modalities": "bmode,nothing"}))
    with pytest.raises(UsageError, match=r"config.json.*modalities") as e:
        parse_config_command("train", ["--config", str(edited), "--workdir", "w"], base_config)
    # no run's record beside it: one written by hand, not "edited or damaged" (helper-112)
    assert "a config.json holds every field of a run's config" in str(e.value) and "edited" not in str(e.value)


def test_the_top_level_help_lists_every_command():
    """helper-103: ``lnm-jax --help`` (the cli module's docstring) did not list external-validation."""
    import lnm_jax.cli as cli

    listed = {line.split()[1] for line in cli.__doc__.splitlines() if line.strip().startswith("lnm-jax ")}
    assert set(cli.COMMANDS) <= listed, set(cli.COMMANDS) - listed


def test_a_config_file_is_checked_whole_before_anything_is_written(tmp_path, capsys):
    """helper-112: a config file whose get_config() lacked a field trained a run whose own
    config.json every later command refused (or failed on a KeyError after writing); a value of
    the wrong type set inside get_config() was "unexpected TypeError"; ``--config`` given twice
    trained the last file unsaid; ``--config FILE.py:ARG`` was "does not exist"; ``--help``
    showed the built-in config's values for a file's. Each is one line naming the file, exit 2,
    nothing written."""
    from lnm_jax.cli import main

    def config_file(name: str, body: str):
        path = tmp_path / f"{name}.py"
        path.write_text("from lnm_jax.config import base_config\n\n\ndef get_config():\n" + body)
        return path

    lacking = config_file("lacking", "    c = base_config()\n    del c.eval['fold_bn']\n    return c\n")
    typed = config_file("typed", "    c = base_config()\n    c.model.width = 16.5\n    return c\n")
    plain = config_file("plain", "    return {'data': {}}\n")
    small = config_file("small", "    c = base_config()\n    c.data.image_size = 48\n    return c\n")
    cases = {
        (str(lacking),): r"lacking.py: get_config\(\) lacks eval.fold_bn \(default True\)",
        (str(typed),): r"typed.py, line 6: get_config\(\) fails: TypeError",  # its line (helper-116)
        (str(plain),): r"plain.py: get_config\(\) returns dict, not a ConfigDict",
        (f"{small}:x",): r"small.py:x: the 'FILE:ARGUMENT' form is not read here",
        (str(small), str(lacking)): "--config is given 2 times: it takes one value",
    }
    for files, said in cases.items():
        argv = ["train", "--workdir", str(tmp_path / "w"), *[x for f in files for x in ("--config", f)]]
        assert main(argv) == 2, files
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and re.search(said, err[0]), (files, err)
    assert not (tmp_path / "w").exists()
    assert main(["train", "--config", str(small), "--help"]) == 0
    assert re.search(r"data.image_size .* \[48\]", capsys.readouterr().out)
    # a broken file: the help all the same, with the built-in values and why (helper-116)
    assert main(["train", "--config", str(lacking), "--help"]) == 0
    assert "(the values above are the built-in config's: config file" in capsys.readouterr().out


def test_a_list_field_given_as_a_comma_list_is_its_items(tmp_path):
    """helper-112: ``--config.protocol.settings=bmode,us_lnm`` was read as one setting of both
    inputs, ``('bmode,us_lnm',)`` (numbers were split, names not); a bad setting or backbone was
    said as ``modalities``' or ``model.backbone``'s; ``modalities=bmode,bmode`` was stored as
    written, and a resume spelling a run's inputs otherwise (``us_lnm,bmode,ceus`` for
    ``triple``) was "a different experiment"."""
    from lnm_jax.command_line import parse_config_command
    from lnm_jax.config import base_config, config_problems
    from lnm_jax.run_config import check_resumable

    def parsed(*overrides):
        return parse_config_command("reproduce", ["--workdir", "w", *overrides], base_config)[0]

    assert parsed("--config.protocol.settings=bmode, us_lnm").protocol.settings == ("bmode", "us_lnm")
    assert parsed("--config.protocol.settings", "bmode,us_lnm").protocol.settings == ("bmode", "us_lnm")
    assert parsed("--config.protocol.settings=('bmode,us_lnm',)").protocol.settings == ("bmode,us_lnm",)
    assert parsed("--config.data.norm.bmode.mean=0.5,0.5,0.5").data.norm.bmode.mean == (0.5, 0.5, 0.5)
    # repeated: the last is taken, as the note says (helper-116: absl had appended the repeats)
    twice_given = parsed("--config.protocol.settings=triple", "--config.protocol.settings", "bmode,us_lnm")
    assert twice_given.protocol.settings == ("bmode", "us_lnm")
    # absl's own quoted forms are read as absl reads them (helper-115: quotes had joined the names)
    assert parsed("--config.protocol.settings='bmode','us_lnm'").protocol.settings == ("bmode", "us_lnm")
    one = parsed("--config.protocol.pretrain_manifests='/d/site A, 2024/m.csv'").protocol.pretrain_manifests
    assert one == ("/d/site A, 2024/m.csv",)
    # a run's config.json as the file: its lists are the fields' tuples, overridden alike
    stored = tmp_path / "run" / "config.json"
    stored.parent.mkdir()
    stored.write_text(base_config().to_json())
    (stored.parent / "run_info.json").write_text("{}")
    from_json = parsed("--config", str(stored), "--config.protocol.settings=bmode,us_lnm")
    assert from_json.protocol.settings == ("bmode", "us_lnm")
    c = base_config()
    c.protocol.settings, c.protocol.backbones, c.protocol.table2_modalities = (
        ("quad",),
        ("resnet18,vgg11",),
        ("us_lnm",),
    )
    problems = config_problems(c)
    assert any(p.startswith("protocol.settings[0]: modalities must be") for p in problems), problems
    assert "protocol.backbones[0]: 'resnet18,vgg11' is not one of" in " ".join(problems)
    assert "protocol.table2_modalities[0]: 'us_lnm' has no image input" in " ".join(problems)
    c.protocol.settings = ()
    assert "protocol.settings: empty: Table 3 compares at least one input setting" in config_problems(c)
    c.protocol.settings, c.protocol.backbones = ("bmode", "bmode"), ("vgg11", "vgg11")
    assert {
        "protocol.settings: 'bmode' given twice: each once",
        "protocol.backbones: 'vgg11' given twice: each once",
    } <= set(config_problems(c))
    twice = base_config()
    twice.modalities = "bmode,bmode"
    assert "modalities: 'bmode,bmode' names an input twice: each once" in config_problems(twice)
    assert not config_problems(twice, stored=True)  # a run an earlier version stored so reads (helper-115)
    spelled = base_config()
    spelled.modalities = "us_lnm,bmode,ceus"
    check_resumable(base_config(), spelled)  # the same inputs: no other experiment


def test_built_in_experiments_are_named_without_a_repository(tiny_cohort, tmp_path, monkeypatch, capsys):
    """helper-117: an installed package had none of the config files its help and docs name
    (``--config configs/paper_triple.py`` does not exist outside a checkout). The experiments
    live in the package (``lnm_jax/configs``) and a bare name selects one from any folder; an
    unknown name lists them; a path to a missing file names the built-in of its name."""
    from lnm_jax.cli import main
    from lnm_jax.command_line import UsageError, builtin_configs, load_config_file
    from lnm_jax.config import base_config, small_cohort_config

    monkeypatch.chdir(tmp_path)  # no configs/ folder here
    assert {"paper_triple", "small_cohort", "demo", "reproduce_cpu"} <= set(builtin_configs())
    assert load_config_file("paper_triple").to_dict() == base_config("triple").to_dict()
    assert load_config_file("small_cohort").to_dict() == small_cohort_config().to_dict()
    with pytest.raises(UsageError, match=r"--config paper_trple: no built-in config of that name \(demo, "):
        load_config_file("paper_trple")
    with pytest.raises(UsageError, match=r"configs/paper_triple.py does not exist: the built-in one of that name is "):
        load_config_file("configs/paper_triple.py")
    os.mkfifo(tmp_path / "fifo.py")  # (helper-119: said not to exist)
    with pytest.raises(UsageError, match=r"fifo.py is not a file \(a FIFO or device\)"):
        load_config_file(tmp_path / "fifo.py")
    assert main(["validate", str(tiny_cohort), "--config", "small_cohort"]) == 0
    assert "config" not in capsys.readouterr().err


def test_version_names_the_code_where_the_version_number_cannot(capsys):
    """helper-117: the version stays 0.1.0 across every commit and there was no ``--version``:
    it names the commit (or that there is no checkout) and the source digest every run records."""
    from lnm_jax import __version__, provenance
    from lnm_jax.cli import main

    for flag in ("--version", "-V"):
        assert main([flag]) == 0
        line = capsys.readouterr().out.strip()
        assert line.startswith(f"lnm-jax {__version__}, ") and line.endswith(provenance.source_digest()[:12])
        git = provenance.git_commit()
        assert (f"commit {git['commit'][:12]}" if git else "no git checkout") in line


def test_every_built_in_experiment_loads_and_checks():
    """Each of lnm_jax/configs (what --config NAME selects, installed or not) loads and passes the
    checks a run makes of its config before anything is written."""
    from lnm_jax.command_line import builtin_configs, load_config_file
    from lnm_jax.config import config_problems

    for name in builtin_configs():
        assert config_problems(load_config_file(name)) == [], name
    # the repository's configs/ keeps every path commands and scripts name (the shared cases pass
    # --config $PROJECT/configs/demo.py), each the built-in of its name
    shims = Path(__file__).resolve().parents[1] / "configs"
    assert sorted(p.stem for p in shims.glob("*.py")) == builtin_configs()
    for name in builtin_configs():
        assert load_config_file(shims / f"{name}.py").to_dict() == load_config_file(name).to_dict(), name
