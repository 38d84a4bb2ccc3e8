"""A run's record of the processes that trained it (``run_info.json``): written sealed at each
start and resume, the records before a resume kept oldest first, and the run's identity (the
SHA-256 of its config and split) that every checkpoint it saves carries, so that another run's
checkpoint copied into its folder is named as such.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import jax
from ml_collections import ConfigDict

from lnm_jax import provenance
from lnm_jax.config import write_config
from lnm_jax.data.cohorts.splits import Split, split_digest
from lnm_jax.fileio import SEAL_KEY, DamagedFileError, check_seal, read_json, sealed, write_json
from lnm_jax.run_config import with_resolved_paths
from lnm_jax.run_files import RunFiles
from lnm_jax.training.checkpoint import RUN_KEY, CheckpointCorruptError

RESUMED_FROM = "earlier"  # run_info.json: the records of the processes before a resume, oldest first


def read_run_info(path: Path, remedy: str = "restore it from a copy, or move it aside") -> dict:
    """A run's ``run_info.json``, checked as its readers use it
    (:func:`lnm_jax.provenance.run_info_problem`) and against its seal (:func:`check_seal`: the
    training's versions, devices and commit reach an export's model card, where an edited one
    had passed unsaid): one :class:`DamagedFileError` naming the file where it is damaged or
    edited; a record written before it was sealed is read with a warning (and an export states
    none of it: :func:`lnm_jax.model_card.metadata`)."""
    info = read_json(path, remedy=remedy)
    if problem := provenance.run_info_problem(info):
        raise DamagedFileError.edited(path, problem, remedy)
    if SEAL_KEY in info:
        check_seal(info, path, f"{remedy}; or delete its {SEAL_KEY} to read it unverified (an export then omits it)")
    else:
        check_seal(info, path, "an export's model card leaves the training environment out")  # the warning
    return info


def recorded_before(files: RunFiles) -> dict | None:
    """``run_info.json`` as the processes before a resume left it (None where there is none),
    read when the resume starts, so that a damaged one fails before anything trains."""
    if not files.run_info.is_file():
        return None
    remedy = "restore it from a copy, or move it aside to go on without those records"
    record = read_run_info(files.run_info, remedy)
    earlier = record.get(RESUMED_FROM, [])
    if not isinstance(earlier, list) or not all(isinstance(r, dict) for r in earlier):
        raise DamagedFileError(f"{files.run_info}: '{RESUMED_FROM}' is not a list of records: {remedy}")
    return record


def run_identity(config: ConfigDict, split: Split) -> str:
    """SHA-256 of the config a run was created with and of its split: the run's identity, which
    ``run_info.json`` and every checkpoint it saves record (:data:`RUN_KEY`), so that another
    run's checkpoint copied into its folder is named as such. Two runs with the same identity
    trained the same experiment (a run is deterministic); a resume keeps the identity."""
    record = {"config": json.loads(with_resolved_paths(config).to_json()), "split": split_digest(split)}
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()


def recorded_identity(files: RunFiles, info: dict | None) -> str | None:
    """The run identity ``run_info.json`` (read as ``info``) records, or None (a run recorded
    before it was kept); :class:`DamagedFileError` where it is no string."""
    rid = (info or {}).get(RUN_KEY)
    if rid is not None and not isinstance(rid, str):
        raise DamagedFileError.edited(files.run_info, f"'{RUN_KEY}' is {rid!r}, not a string", "restore it from a copy")
    return rid


def check_same_run(run_id: str | None, meta: dict, where: Path, record: Path) -> None:
    """:class:`CheckpointCorruptError` where checkpoint ``where`` (its metadata ``meta``) was
    saved by another run than the one whose identity is ``run_id``; :class:`DamagedFileError`
    naming ``record`` (the run's ``run_info.json``) where it records none while the checkpoint
    does (deleted: helper-60's swapped-in checkpoint was then blamed on config.json)."""
    if run_id is None and RUN_KEY in meta:
        raise DamagedFileError.edited(
            record,
            f"it holds no {RUN_KEY}, while checkpoint {where} records the run that saved it",
            "restore it from a copy (a checkpoint copied in from another run is then named)",
        )
    if run_id is not None and RUN_KEY in meta and meta[RUN_KEY] != run_id:
        raise CheckpointCorruptError(
            f"checkpoint {where} was saved by another run than this folder's ({RUN_KEY} {meta[RUN_KEY][:12]}... "
            f"there, {run_id[:12]}... in run_info.json): copied in from another run folder? restore this run's "
            "from a copy"
        )


def write_run_record(
    config: ConfigDict, files: RunFiles, *, before: dict | None = None, run_id: str | None = None
) -> None:
    """Writes ``config.json`` and ``run_info.json`` (process 0 of a multi-host job only): this
    process's record and the run's identity ``run_id`` (:func:`run_identity`); a resume passes
    the record before it (:func:`recorded_before`), kept, with its own earlier ones, oldest
    first, under ``run_info.json``'s ``"earlier"``, so a run resumed on another machine or
    version still says which one trained its first epochs, and its identity carried over. The
    record is sealed (:func:`lnm_jax.fileio.sealed`, over the earlier records too, which are kept
    without their own seals)."""
    if jax.process_index() == 0:
        info = provenance.run_info()
        if before is not None:
            before = {k: v for k, v in before.items() if k != SEAL_KEY}
            run_id = run_id or before.get(RUN_KEY)
            if note := resumed_elsewhere_note(before, info):
                print(f"note: {note}", file=sys.stderr)
            info[RESUMED_FROM] = [*before.pop(RESUMED_FROM, []), before]
        if run_id is not None:
            info[RUN_KEY] = run_id
        write_config(files.config, config)
        write_json(files.run_info, sealed(info))


# what a process records that changes the arithmetic of the steps it runs (provenance.py)
RESUME_SENSITIVE = (
    *("backend", "device_kind", "device_count", "cpu", "cpu_features", "usable_cpus"),
    *("jax_settings", "xla_flags", "compile_options", "packages", "source_sha256"),
)


def resumed_elsewhere_note(before: dict, now: dict) -> str | None:
    """A line where a resume runs with another value of :data:`RESUME_SENSITIVE` than the
    process before it recorded (a record without the field says nothing): its epochs are then
    not bitwise those of an uninterrupted run (helper-100: one core against two moved a 10-epoch
    run's best epoch and test AUC by 0.005)."""
    said = []
    for k in RESUME_SENSITIVE:
        then, here = before.get(k), now.get(k)
        if k not in before or then == here:
            continue
        if isinstance(then, dict) and isinstance(here, dict):  # packages, settings: those both name, differing
            differ = {n: (then[n], here[n]) for n in then.keys() & here.keys() if then[n] != here[n]}
            if differ:
                said.append(f"{k} " + ", ".join(f"{n} {a} before, {b} now" for n, (a, b) in sorted(differ.items())))
            continue
        if k == "source_sha256":  # the code itself: by its commits where both name one (helper-114)
            commits = [((r.get("git") or {}).get("commit") or "")[:12] for r in (before, now)]
            said.append(
                f"lnm_jax at commit {commits[0]} before, {commits[1]} now"
                if all(commits) and commits[0] != commits[1]
                else "lnm_jax's source (another source_sha256)"
            )
            continue
        said.append(f"{k} {json.dumps(then)} before, {json.dumps(here)} now")
    if not said:
        return None
    said = "; ".join(said)
    return (
        f"resumed with other settings than the process before ({said}): the epochs from here are not bitwise "
        "what an uninterrupted run's would be"
    )
