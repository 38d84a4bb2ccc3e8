"""How ``lnm-jax`` reads a command line: each plain command's options (argparse, every
refusal one line, ``lnm-jax <command>: error: ...``, exit 2) and a config-taking command's
config file and ``--config.FIELD=VALUE`` overrides (absl's config flags, which
ml_collections reads, with every problem said at once: an unknown field with the names it was
near, a value of the wrong type, a value outside its range).

Imports nothing heavy at module level: ``--help`` of every command stays fast
(tests/test_cli_help.py).
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
import unicodedata
from collections.abc import Iterable
from pathlib import Path

from lnm_jax.fileio import SEED_RANGE, DamagedFileError, is_seed


class UsageError(Exception):
    """Bad command-line arguments (exit 2)."""


def shown_default(value) -> bool:
    """Whether ``--help`` shows an option's default: not for none, a switch's off, an empty value."""
    return not (value is None or value is False or value in ("", []) or value == argparse.SUPPRESS)


class HelpFormatter(argparse.HelpFormatter):
    """argparse's help with each option's default where it has one (not for a switch, an
    option with no default, or one whose description already says it)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            action.option_strings
            and shown_default(default)
            and "default" not in text
            and not isinstance(action, argparse._HelpAction)
        ):
            text += " (default: %(default)s)"
        return text


def checked_type(test, allowed: str, cast=float, note: str = ""):
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
seed_type = checked_type(is_seed, SEED_RANGE, int)


# a probability cut (NaN fails the test)
probability_type = checked_type(lambda v: 0 < v < 1, "a probability in (0, 1)")


def config_value_type(field: str, cast=float):
    """argparse's type of an option that sets config ``field``: the config's own rule
    (:data:`lnm_jax.config.FIELD_RULES`), so the option and the field accept the same values
    (``--image-size 0`` had failed on a division by zero, ``-5`` printed statistics)."""
    from lnm_jax.config import FIELD_RULES

    test, allowed = FIELD_RULES[field]
    return checked_type(test, allowed, cast, f" (config {field})")


def comma_list_type(choices: tuple[str, ...]):
    """argparse's type of a comma list drawn from ``choices`` (returned as a tuple, in order)."""

    def parse(text: str) -> tuple[str, ...]:
        items = tuple(t.strip() for t in text.split(","))
        bad = [t for t in items if t not in choices]
        if bad or len(set(items)) != len(items):
            why = f"{', '.join(repr(t) for t in bad)} not among" if bad else f"{text!r} repeats an item of"
            raise argparse.ArgumentTypeError(f"{why} {', '.join(choices)}")
        return items

    return parse


class Parser(argparse.ArgumentParser):
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


def new_parser(**kwargs) -> argparse.ArgumentParser:
    """Every sub-command's argument parser: its help shows the options' defaults."""
    kwargs.setdefault("allow_abbrev", False)  # as absl's commands: --man is no --manifest
    return Parser(formatter_class=HelpFormatter, **kwargs)


def apply_overrides(config, overrides: list[str]):
    """``config`` with ``--config.a.b=VALUE`` overrides applied, read by absl's config flags as
    :func:`parse_config_command` reads train's (``--config.data.accept_secondary_capture=false``
    or ``=0`` alike); an unknown field, a wrong type or a missing value is one line."""
    from absl import flags
    from ml_collections import config_flags

    overrides = tuple_overrides(overrides, config)
    if problems := _override_problems(overrides, config):
        raise UsageError(" | ".join(problems + _known_override_problems(overrides, config)))
    if note := repeated_override_note(overrides):
        print(note, file=sys.stderr)
    fv, full = flags.FlagValues(), ["lnm-jax", *last_overrides_only(overrides)]
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


def tuple_overrides(overrides: list[str], config) -> list[str]:
    """``overrides`` (as :func:`split_overrides` writes them: ``--config.FIELD=VALUE``) with each
    of a field that holds a tuple, given as a bare comma list (``--config.protocol.settings=
    bmode,us_lnm``), written as the tuple of its items (``('bmode', 'us_lnm')``), as a list of
    numbers already reads (``data.norm.bmode.mean=0.5,0.5,0.5``). absl had read a list of names
    as one item, ``('bmode,us_lnm',)``: reproduce trained one setting of both inputs for two
    settings (helper-112). A value written as a tuple or list (``('bmode,us_lnm',)``), or with
    quotes (absl's ``'a','b'``, and ``"'a, b'"`` for one item holding a comma), is read as given."""
    out = []
    for x in overrides:
        key, eq, value = x.removeprefix("--config.").partition("=")
        if (
            x.startswith("--config.")
            and eq
            and isinstance(_held(config, key), tuple | list)  # (list: a run's config.json, read from JSON)
            and "," in value
            and value.lstrip()[:1] not in ("(", "[")
            and not any(q in value for q in "'\"")  # absl's own forms: 'a','b' and "'a, b'" (helper-115)
        ):
            items = [v.strip() for v in value.split(",")]
            value = ", ".join(v if _is_number_text(v) else repr(v) for v in items) + ("," * (len(items) == 1))
            x = f"--config.{key}=({value})"
        out.append(x)
    return out


def last_overrides_only(overrides: list[str]) -> list[str]:
    """``overrides`` (as :func:`split_overrides` writes them) with each config field's but its
    last dropped: what :func:`repeated_override_note` says is taken. absl appends a list field's
    repeats (``--config.protocol.settings=triple --config.protocol.settings=bmode`` had trained
    both, helper-116)."""
    fields = [x.removeprefix("--no").removeprefix("--").removeprefix("config.").partition("=")[0] for x in overrides]
    last = {f: i for i, f in enumerate(fields)}
    return [x for i, (x, f) in enumerate(zip(overrides, fields)) if last[f] == i]


def _is_number_text(text: str) -> bool:
    """Whether ``text`` is a number literal (an item absl reads as a number; ``nan`` is none)."""
    import ast  # noqa: PLC0415

    try:
        return isinstance(ast.literal_eval(text), int | float)
    except (ValueError, SyntaxError):
        return False


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
            form = f"--{key}={x}" if isinstance(switch_value(x), bool) else f"--{key}=true or --{key}=false"
            return (
                f"unexpected argument {x!r} after --{key}: a True/False option takes its value after "
                f"'=' ({form}); alone, --{key} sets it True"
            )
    many = len(leftover) > 1
    said = " ".join(repr(x) for x in leftover)
    return f"unexpected argument{'s' if many else ''} {said}: no option takes {'them' if many else 'it'}"


def builtin_configs() -> list[str]:
    """The names of the experiments :mod:`lnm_jax.configs` holds (``--config NAME``)."""
    import lnm_jax.configs  # noqa: PLC0415

    return sorted(f.stem for f in Path(lnm_jax.configs.__file__).parent.glob("*.py") if f.stem != "__init__")


def builtin_config(arg: Path | str) -> Path:
    """The config file ``--config ARG`` names: a bare name (no folder, no suffix) is the
    built-in experiment of :mod:`lnm_jax.configs` (an installed package has no repository
    ``configs/``: helper-117); anything else is a path. :class:`UsageError` for a bare name
    that is no built-in one, listing them."""
    import lnm_jax.configs  # noqa: PLC0415

    text = str(arg)
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", text):
        return Path(arg)
    if text not in builtin_configs():
        raise UsageError(
            f"--config {text}: no built-in config of that name ({', '.join(builtin_configs())}); a file of your "
            "own is given by its path (my_experiment.py, or a run's config.json)"
        )
    return Path(lnm_jax.configs.__file__).parent / f"{text}.py"


def load_config_file(path: Path | str):
    """``get_config()`` of a config file, or the config a run recorded (a ``config.json``, checked
    as a run's is); :class:`UsageError` (one line) when the file is missing, a folder, of
    another kind, does not parse, or defines no ``get_config``."""
    import importlib.util

    from lnm_jax.run_files import RunFiles

    path = builtin_config(path)
    if path.is_dir():
        raise UsageError(
            f"config file {path} is a folder: give a config file (lnm_jax/configs/*.py) or a run's config.json "
            f"({RunFiles(path).config} where it is a run folder)"
        )
    if not path.is_file():
        file, colon, _ = str(path).rpartition(":")
        if colon and Path(file).is_file():  # ml_collections' "file.py:ARG" (get_config(ARG))
            raise UsageError(
                f"config file {path}: the 'FILE:ARGUMENT' form is not read here (this project's get_config() takes "
                f"no argument): give --config {file}, and set fields with --config.FIELD=VALUE"
            )
        if path.exists():  # a FIFO or device (helper-119: said not to exist)
            raise UsageError(f"config file {path} is not a file (a FIFO or device): give a config file")
        same = f": the built-in one of that name is --config {path.stem}" if path.stem in builtin_configs() else ""
        raise UsageError(f"config file {path} does not exist{same}")
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
        raise UsageError(f"config file {path} defines no get_config() (see lnm_jax/configs/ for examples)")
    from ml_collections import ConfigDict  # noqa: PLC0415

    from lnm_jax.config import missing_fields  # noqa: PLC0415

    built = "build it from lnm_jax.config.base_config(), as lnm_jax/configs/*.py do"
    try:
        config = module.get_config()
    except Exception as e:  # noqa: BLE001  (helper-112: a float set on an int field had been "unexpected TypeError")
        import traceback  # noqa: PLC0415

        lines = [
            f.lineno for f in traceback.extract_tb(e.__traceback__) if Path(f.filename).resolve() == path.resolve()
        ]
        where = f", line {lines[-1]}" if lines else ""  # (helper-116: the line was not said)
        raise UsageError(f"config file {path}{where}: get_config() fails: {type(e).__name__}: {e}") from None
    if not isinstance(config, ConfigDict):
        raise UsageError(f"config file {path}: get_config() returns {type(config).__name__}, not a ConfigDict: {built}")
    if missing := missing_fields(config, stored=False):  # (helper-112: a run trained, then its config.json refused)
        said = ", ".join(f"{k} (default {v!r})" for k, v in missing.items())
        raise UsageError(f"config file {path}: get_config() lacks {said}, which every config holds: {built}")
    return config


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
            hint = f"; did you mean {', '.join(near)}?" if near else "; see lnm_jax/configs/ and lnm_jax/config.py"
            out.append(f"--config.{key}: no such config field{hint}")
    return out


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
    "demo": "Synthesise the embedded cohort, train lnm_jax/configs/demo.py on it and evaluate.",
}


def config_help(name: str, default_factory, fv) -> str:
    """``--help`` of a config-taking command: its flags, the config fields people change most
    (with the defaults of the config it starts from) and where the rest are."""
    from lnm_jax.config import config_keys

    config = default_factory()
    lines = [
        f"usage: lnm-jax {name} --workdir W [--config NAME|FILE] [--config.FIELD=VALUE ...] [options]",
        "",
        DESCRIPTIONS.get(name, ""),
        "",
        "options:",
        "  --workdir W            the run folder (required)",
        "  --config NAME|FILE     a built-in experiment by name (e.g. paper_triple, small_cohort), or a config file "
        "(FILE.py with get_config(), or a run's config.json); default: the command's own",
        f"  --config.FIELD=VALUE   override one field, e.g. --config.{'pretrain' if name == 'pretrain' else 'train'}"
        ".epochs=3",
    ]
    for flag in sorted(set(fv) - {"workdir", "config"}):
        lines.append(_flag_line(fv[flag]))
    lines += [
        "",
        "config fields people change most (values of the config this command starts from: --config FILE's, else "
        "the built-in one):",
    ]
    for field, what in COMMON_FIELDS + COMMAND_FIELDS.get(name, ()):
        node = config
        for part in field.split("."):
            node = node[part]
        lines.append(f"  {field:<28} {what} [{node!r}]")
    lines += [
        "",
        f"all {len(config_keys(config))} fields: lnm_jax/config.py; built-in experiments (--config NAME, files in "
        f"lnm_jax/configs/): {', '.join(builtin_configs())}",
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
    if shown_default(flag.default):
        text += f" [default: {flag.default}]"
    return f"  {name:<22} {text}"


def parse_config_command(name: str, argv: list[str], default_factory, extra=None) -> tuple:
    """absl flags + ml_collections config flags for one sub-command: ``(config, flag values)``.
    ``-h``/``--help`` prints :func:`config_help` and exits 0."""
    from absl import flags
    from ml_collections import config_flags

    fv = flags.FlagValues()
    if twice := repeated_option(argv, {"--config"}):  # (helper-112: the last of two files trained, unsaid)
        raise UsageError(twice)
    file = _config_file_arg(argv)
    if "-h" in argv or "--help" in argv:
        flags.DEFINE_string("workdir", None, "run folder", flag_values=fv)
        if extra is not None:
            extra(flags, fv)
        try:  # (helper-112: the built-in config's defaults had been shown for a file's)
            text = config_help(name, default_factory if file is None else lambda: load_config_file(file), fv)
        except UsageError as e:  # the help all the same, the built-in values, and why not the file's (helper-116)
            text = config_help(name, default_factory, fv) + f"\n\n(the values above are the built-in config's: {e})"
        print(text)
        raise SystemExit(0)
    base = default_factory() if file is None else load_config_file(file)  # a broken file: one line
    at = _config_file_at(argv)
    given = [x for i, x in enumerate(argv) if i not in at]
    if problems := _override_problems(given, base):  # before absl, which raises on the first
        raise UsageError(" | ".join(problems + _known_override_problems(given, base)))
    # each override as --config.FIELD=VALUE (a value-less one refused: absl would take the next
    # option as its value), its list fields' comma lists as tuples, the last of a field's repeats
    overrides, rest = split_overrides(given, base)
    overrides = tuple_overrides(overrides, base)
    if note := repeated_override_note(overrides):
        print(note, file=sys.stderr)
    # config_flags reads them from this argv, the file first (absl refuses an override before
    # --config FILE, which validate takes)
    full = [f"lnm-jax {name}", *(argv[i] for i in at), *last_overrides_only(overrides), *rest]
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
    single = {o for o in single if not o.startswith("--config")} | {"--config"}  # (helper-112: the last file trained)
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


def switch_value(text: str) -> bool | str:
    """A True/False switch's value as absl reads it (absl's own parser: true/t/1, false/f/0, any
    case); other text as given, for absl to refuse."""
    from absl import flags

    try:
        return flags.BooleanParser().parse(text)
    except ValueError:
        return text
