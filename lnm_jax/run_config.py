"""A run's config as its folder stores it: read and checked (``config.json`` against the
ranges of :mod:`lnm_jax.config` and against what its checkpoints record they were trained
with), compared with the config a resume is given (which fields a resume may change), and the
training split's own ``data.norm`` (``data.norm_from='train'``).

:class:`lnm_jax.run.Run` reads and writes a run through these; a reader that needs a run's
config without building it (``validate --workdir``, pretraining's resume) calls them directly.
"""

from __future__ import annotations

import contextlib
import copy
import json
from pathlib import Path

from ml_collections import ConfigDict

from lnm_jax import names, provenance
from lnm_jax.config import (
    KNOWN_BEFORE_ADDED,
    MODEL_FIELDS,
    base_config,
    config_problems,
    missing_fields,
    model_field_changes,
    norm_is_papers,
)
from lnm_jax.data.cohorts.manifest import Cohort
from lnm_jax.data.cohorts.splits import Split
from lnm_jax.data.pixels.sources import Framing
from lnm_jax.fileio import DamagedFileError, read_json, warn_once
from lnm_jax.run_files import RUN_INFO, RunFiles
from lnm_jax.training.checkpoint import CONFIG_KEY, MODEL_KEY


class ConfigMismatchError(ValueError):
    """A run was resumed with a config that describes another experiment."""


# Fields a resumed run may change; any other difference would silently mix two experiments.
RESUMABLE_FIELDS = (
    "data.manifest",  # the cohort moved: its content is checked against splits.json's manifest digest
    "train.epochs",
    "train.early_stop_patience",
    "train.log_every_steps",
    "train.max_loss",  # a guard against divergence, not part of the experiment
    "eval.",
    "model.lowering",  # a lowering choice: same parameters, same mathematics
    "model.batchnorm",  # how BatchNorm's gradient is computed: the same function and parameters
    # one device or every one: the same global batch and its BatchNorm statistics (helper-91: the
    # divisibility refusal's remedy, data_parallel=false, had been refused on resume)
    "train.data_parallel",
    # how fast, not what: threads, prefetching, the evaluation batch (BatchNorm in inference mode)
    "data.num_threads",
    "data.prefetch",
    "train.eval_batch_size",
    # when checkpoints are written, not what is trained (tests/test_training.py: bit for bit)
    "train.checkpoint_every_epochs",
    "train.checkpoint_every_steps",
)


# Fields of the config a checkpoint records (CONFIG_KEY) that config.json need not repeat when the
# run is read or resumed: those a resume may change, where files lie (the cohort's content is
# pinned by splits.json's manifest digest; a pretrained backbone is read only at the start), and
# the run's name (a label).
UNCHECKED_FIELDS = (*RESUMABLE_FIELDS, "data.tfds_dir", "model.init_from", "name")


class _Absent:
    def __repr__(self) -> str:
        return "absent"


ABSENT = _Absent()  # changed_fields: the value of a field the config lacks


def config_changes(stored: ConfigDict, config: ConfigDict, ignore: tuple[str, ...] = ()) -> list[str]:
    """Every field whose value differs between ``stored`` and ``config`` as ``field: old -> new``
    (:func:`changed_fields`)."""
    return [f"{k}: {old!r} -> {new!r}" for k, old, new in changed_fields(stored, config, ignore)]


def changed_fields(stored: ConfigDict | dict, config: ConfigDict, ignore: tuple[str, ...] = ()) -> list[tuple]:
    """``(field, stored value, config's value)`` for every field that differs, sorted, except
    fields starting with one of ``ignore`` and fields added since ``stored`` was written that
    ``config`` holds at their default; a field one of them lacks is :data:`ABSENT` there; paths
    compare resolved against the working directory (:func:`with_resolved_paths`)."""

    # paths as stored (absolute): a relative path typed in another invocation names the same file
    old, new = (_flat_config(with_resolved_paths(ConfigDict(c))) for c in (stored, config))
    for flat in (old, new):  # a field added since whose value before it is certain: that value
        for k, v in KNOWN_BEFORE_ADDED.items():  # (helper-93: a checkpoint's record without
            flat.setdefault(k, v)  # data.augment.clip crashed every command opening the run)
        with contextlib.suppress(KeyError, ValueError, TypeError):  # the inputs, however spelled ('triple' is
            flat["modalities"] = list(names.parse_modalities(flat["modalities"]))  # us_lnm,bmode,ceus: helper-112)
    default = _flat_config(base_config())
    changed = sorted(
        k
        for k in old.keys() | new.keys()
        if old.get(k) != new.get(k)
        and not (ignore and k.startswith(ignore))
        and not (k not in old and new.get(k) == default.get(k))  # a field added since, at its default
    )
    return [(k, old.get(k, ABSENT), new.get(k, ABSENT)) for k in changed]


def _flat_config(config: ConfigDict) -> dict:
    """``{'group.field': value}`` of every leaf, via JSON (so that a tuple and the list it was
    saved as compare equal)."""

    def flat(d, prefix=""):
        for k, v in d.items():
            if isinstance(v, dict):
                yield from flat(v, f"{prefix}{k}.")
            else:
                yield f"{prefix}{k}", v

    return dict(flat(json.loads(config.to_json())))


def check_resumable(stored: ConfigDict, config: ConfigDict, unread: tuple[str, ...] = ()) -> None:
    """Raises :class:`ConfigMismatchError` naming every field that differs, except those a
    resumed run may change and the ``unread`` ones (prefixes of fields the resuming process
    never reads: a pretraining's ``data.augment.``)."""
    if changed := config_changes(stored, config, (*RESUMABLE_FIELDS, *unread)):
        raise ConfigMismatchError("cannot resume with a different experiment; changed: " + ", ".join(changed))


def check_trained_config(config: ConfigDict, config_path: Path, meta: dict, where: Path) -> None:
    """:class:`DamagedFileError` naming ``config_path`` (the run's ``config.json``) where
    ``config`` says otherwise than checkpoint ``where`` (its metadata ``meta``) records it was
    trained with: first the fields that define the model (an edited backbone, input, image size
    or flag encoding would restore into another model or compute another function from the
    same weights), then every other field but :data:`UNCHECKED_FIELDS` (an edited learning
    rate would go on training, and be reported, as another experiment than the one trained),
    each named with its value and the trained one. A checkpoint saved before a record was kept
    is compared on what it holds."""
    remedy = "restore it from a copy, or set those fields back"
    if changes := model_field_changes(meta.get(MODEL_KEY) or {}, config):
        problem = f"it describes another model than checkpoint {where} was trained as ({'; '.join(changes)})"
        raise DamagedFileError.edited(config_path, problem, remedy)
    if CONFIG_KEY in meta:
        # a field deleted may be read as its default (a resume would train on with it): named
        # where that is not the trained value; one every run has (a model field with no default)
        # is left to the command that reads it, which names it as missing
        default = _flat_config(base_config())
        changes = []
        shown = lambda v: "absent" if v is ABSENT else json.dumps(v)  # noqa: E731
        for k, then, now in changed_fields(meta[CONFIG_KEY], config, UNCHECKED_FIELDS):
            if now is not ABSENT:
                changes.append(f"{k}: {shown(now)}, trained with {shown(then)}")
            elif k in default and default[k] != then and MODEL_FIELDS.get(k, ABSENT) is not None:
                changes.append(f"{k}: absent (its default {json.dumps(default[k])}), trained with {shown(then)}")
        if changes:
            listed = "; ".join(changes)
            problem = f"it describes another experiment than checkpoint {where} was trained in ({listed})"
            raise DamagedFileError.edited(config_path, problem, remedy)


def with_resolved_paths(config: ConfigDict) -> ConfigDict:
    """A copy of ``config`` whose paths (manifest, TFDS folder, pretrained backbone) are
    absolute, so that the stored run works from any directory."""
    config = copy.deepcopy(config)
    for group, key in (("data", "manifest"), ("data", "tfds_dir"), ("model", "init_from")):
        if value := config[group].get(key):
            config[group][key] = str(Path(value).expanduser().resolve())
    return config


NORM = "data.norm"  # warn_once's key: said once per process


def with_recorded_norm(config: ConfigDict, stored: ConfigDict) -> ConfigDict:
    """``config`` with the ``data.norm`` a run computed from its training split when it started
    (``stored``: its ``config.json``), where both say ``data.norm_from='train'``: a resume
    standardises as the first epochs did, not by the config's own values."""
    if config.data.norm_from != "train" or stored.data.norm_from != "train":
        return config
    config = copy.deepcopy(config)
    for name, stats in stored.data.norm.items():  # tuples, as a config's own (JSON read them as lists)
        config.data.norm[name] = ConfigDict({s: tuple(stats[s]) for s in ("mean", "std")})
    return config


def with_training_norm(config: ConfigDict, cohort: Cohort, split: Split) -> ConfigDict:
    """``config`` with ``data.norm`` computed from ``split``'s training patients alone
    (``data.norm_from='train'``): each input's per-channel mean and std over the pixels training
    feeds the model, at the configured size, framing and clip length
    (:func:`lnm_jax.data.loaders.loader.split_norm_stats`), as tuples rounded to 6 decimals.
    Neither validation nor test pixels enter it, so a K-fold protocol's runs each take their own
    (helper-90: ``norm-stats``' one holdout split held 9-14 of 20 of each fold's test patients)."""
    from lnm_jax.data.loaders.loader import split_norm_stats  # noqa: PLC0415

    if not norm_is_papers(config):  # (helper-91: values given beside norm_from='train' were dropped unsaid)
        warn_once("data.norm's values are not used: data.norm_from='train' computes them from the training split", NORM)
    stats = split_norm_stats(
        cohort,
        split.train,
        image_size=int(config.data.image_size),
        clip_frames=int(config.data.clip_frames),
        framing=Framing.from_config(config.data),
        inputs=[m for m in names.parse_modalities(config.modalities) if m in names.IMAGE_INPUTS],
    )
    config = copy.deepcopy(config)
    for name in config.data.norm:
        if name in stats:
            config.data.norm[name] = ConfigDict({s: tuple(stats[name][s]) for s in ("mean", "std")})
    return config


def load_config(workdir: Path | str) -> ConfigDict:
    """The config a run stored (``config.json``), its fields checked as a new config's are
    (:func:`lnm_jax.config.config_problems`): an edited or damaged one is one
    :class:`DamagedFileError` naming the file and every field outside its range or choices,
    before anything is built from it. FileNotFoundError where there is none, and
    :class:`DamagedFileError` where the folder holds checkpoints without it (a run that lost
    it, not a folder to start one in)."""
    files = RunFiles(workdir)
    path = files.config
    if not path.is_file():
        if files.checkpoints.is_dir():
            raise DamagedFileError(
                f"{path} is missing: {files.root} holds checkpoints but not the config they were trained with; "
                "restore it from a copy"
            )
        raise FileNotFoundError(f"{path} not found: is {workdir} a training run folder?")
    return read_config_json(path)


def written_by_other_code(run_info: Path) -> str | None:
    """Where the run record ``run_info`` (a ``run_info.json``, read as it is: a damaged one says
    nothing) names other lnm-jax code than this process runs (its ``source_sha256``), that code
    in words ("lnm-jax at commit 9ac5cf1..., this one 5e4742d..."); else None. A config.json
    another version wrote is then said to be that version's, not "edited or damaged"
    (helper-114: a newer run's field and an older run's missing one had been called tampering)."""
    try:
        info = json.loads(run_info.read_text(encoding="utf-8"))
        theirs = info.get("source_sha256")
    except (OSError, ValueError, AttributeError):
        return None
    if theirs == provenance.source_digest():
        return None

    def commit(git) -> str:
        return f"commit {git['commit'][:12]}" if isinstance(git, dict) and isinstance(git.get("commit"), str) else ""

    then, now = commit(info.get("git")), commit(provenance.git_commit())
    if not isinstance(theirs, str):
        return f"an earlier lnm-jax ({then or 'its record names no source digest'}; this one: {now or 'no commit'})"
    if then and then == now:  # (helper-115: one commit had been named as two codes)
        return f"other lnm-jax code at this very {then} (its files or these changed since, uncommitted)"
    return f"other lnm-jax code ({then or 'source ' + theirs[:12]}; this one: {now or 'another source'})"


def _lists_as_tuples(value, base: object = ABSENT):
    """A config read from JSON with a list where :func:`lnm_jax.config.base_config` holds a tuple
    as that tuple (JSON has none): an override of such a field had been "unexpected
    UnsupportedOperationError: Type <class 'list'>" on ``--config W/config.json`` (helper-115).
    A field the defaults hold as a list stays one."""
    if base is ABSENT:
        base = base_config().to_dict()
    if isinstance(value, dict):
        return {k: _lists_as_tuples(v, base.get(k) if isinstance(base, dict) else None) for k, v in value.items()}
    if isinstance(value, list) and isinstance(base, tuple):
        return tuple(value)
    return value


def read_config_json(path: Path | str) -> ConfigDict:
    """A run's stored config (a ``config.json``), checked as :func:`load_config` says; also what
    ``--config W/config.json`` starts a new run from (helper-100: a run redone from its own record)."""
    path = Path(path)
    config = ConfigDict(_lists_as_tuples(read_json(path)))
    problems = config_problems(config, stored=True)  # a value an older version trained with is read
    remedy = "restore it from a copy"
    if missing := missing_fields(config):  # (a default is no evidence of what the run was trained with)
        said = ", ".join(f"{k} (this version's default: {json.dumps(v)})" for k, v in missing.items())
        problems.append(f"it lacks {said}, which every run's config holds")
        remedy += ", or, where an older lnm-jax wrote the run, add the field with the value it trained with"
    # a field unknown here or missing may be another version's; a value out of range is an edit
    # whichever wrote it (helper-115: "train.epochs: -3" had been put down to another version)
    versioned = all(": not a field of the config" in p or p.startswith("it lacks ") for p in problems)
    if problems and versioned and (other := written_by_other_code(path.parent / RUN_INFO)):
        raise DamagedFileError(
            f"{path}: {'; '.join(problems)}: the run was written by {other}: a field this version does not know is "
            "a later version's (read the run with that lnm-jax or a later one), a field it lacks was added since "
            "(add it with the value that version trained with)"
        )
    if problems and not (path.parent / RUN_INFO).is_file():  # no run's record: a config.json written by hand
        raise DamagedFileError(  # (helper-112: it had been told it "was edited or is damaged")
            f"{path}: {'; '.join(problems)}: a config.json holds every field of a run's config, each in its range; "
            "start from a run's config.json or a built-in experiment (--config NAME, lnm_jax/configs/)"
        )
    if problems:
        raise DamagedFileError.edited(path, "; ".join(problems), remedy)
    for field, value in KNOWN_BEFORE_ADDED.items():  # a run stored before the field: its certain value
        group, key = field.rsplit(".", 1)
        if key not in config[group]:
            config[group][key] = value
    return config
