"""A run: its folder, config, cohort, split, data, model and restored state, each loaded once.

Every stage (train, evaluate, calibrate, predict, Grad-CAM, availability, the protocol) and
every CLI command takes a :class:`Run`: the manifest is validated, the split checked, the
model built and a checkpoint restored once per process, and stages hand each other the live
object instead of a folder to re-read.

    run = Run.create(config, workdir)      # a new run (or resume=True to continue one)
    best = train(run)                      # lnm_jax.training.loop
    result = evaluate(run)                 # lnm_jax.evaluation.evaluate, same objects
    run = Run.open(workdir)                # a finished run, as its folder recorded it

The run's stored config and what a resume may change are :mod:`lnm_jax.run_config`; its record
of the processes that trained it and its identity, :mod:`lnm_jax.run_record`.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import hashlib
import json
import shlex
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import jax
import numpy as np
from ml_collections import ConfigDict

from lnm_jax import names
from lnm_jax.config import (
    model_fields,
    write_config,
)
from lnm_jax.data.cohorts.manifest import Cohort, manifest_checks, read_manifest
from lnm_jax.data.cohorts.splits import (
    NEW_RUN,
    Split,
    check_patients,
    check_stored,
    load_splits,
    make_splits,
    save_splits,
    split_digest,
)
from lnm_jax.data.cohorts.survey import GEOMETRY_COLUMNS, survey
from lnm_jax.data.pixels.sources import Framing
from lnm_jax.data.synth.synthetic import SynthParams, generate_cohort, generator_params
from lnm_jax.fileio import (
    DamagedFileError,
    check_seal,
    content_digest,
    discard_made,
    is_int,
    is_number,
    read_json,
    sealed,
    warn_once,
    write_csv,
    write_json,
)
from lnm_jax.models.fusion import build_model, check_config
from lnm_jax.output_guard import refuse_export_folder
from lnm_jax.portable import preprocessing_digest
from lnm_jax.preflight import (
    check_disk_space,
    check_host_memory,
    check_inputs_present,
    check_lesion_masks,
    check_pretraining,
    check_trainable,
    flag_warnings,
    prevalence_warning,
)
from lnm_jax.run_config import (
    check_resumable,
    check_trained_config,
    load_config,
    with_recorded_norm,
    with_resolved_paths,
    with_training_norm,
)
from lnm_jax.run_files import GENERATOR, MANIFEST, RunFiles, refuse_nested_run
from lnm_jax.run_lock import check_held, folder_gone
from lnm_jax.run_record import (
    check_same_run,
    read_run_info,
    recorded_before,
    recorded_identity,
    run_identity,
    write_run_record,
)
from lnm_jax.training import sharding
from lnm_jax.training import state as state_lib
from lnm_jax.training.checkpoint import (
    CONFIG_KEY,
    DIGEST_KEY,
    IMAGES_KEY,
    MODEL_KEY,
    PREPROCESSING_KEY,
    RUN_KEY,
    SPLIT_KEY,
    CheckpointCorruptError,
    RunCheckpoints,
)
from lnm_jax.training.steps import inference_variables, make_eval_step, predict, step_inputs

REFERENCE_KEY = "reference"  # intensity_reference.json: the summary, beside its run's identity and seal


class RunExistsError(FileExistsError):
    """A new run was asked for in a folder that already holds one."""


T = TypeVar("T")
# how often a reading of a run's checkpoints is tried again where a training process replaced
# them while they were read (predict, export and evaluate of a run still training take no lock)
READ_TRIES = 5


def _saved_steps(files: RunFiles) -> dict[str, tuple[str, ...]]:
    """Each checkpoint kind's saved step folders, by name (a listing, nothing read)."""
    if not files.checkpoints.is_dir():
        return {}
    return {k.name: tuple(sorted(x.name for x in k.iterdir())) for k in files.checkpoints.iterdir() if k.is_dir()}


def read_while_trained(files: RunFiles, read: Callable[[], T]) -> T:
    """``read()``, a reading of the run's checkpoints, tried again where it failed because a
    training process on the same run replaced a checkpoint while it was read (its steps
    changed meanwhile; helper-60: predict --checkpoint best during training failed once in six
    on "checkpoints/latest/52: No such file or directory"); a failure with the checkpoints as
    they were is raised as it is, and one that keeps coming with them changing is said as such."""
    for attempt in range(READ_TRIES):
        before = _saved_steps(files)
        try:
            return read()
        except Exception as e:
            if _saved_steps(files) == before:
                raise
            if attempt == READ_TRIES - 1:
                raise DamagedFileError(
                    f"{files.checkpoints}: replaced by a training in progress each of the {READ_TRIES} times they were "
                    "read: run the command again when that training has finished"
                ) from e
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


def trained_checkpoint(files: RunFiles) -> tuple[dict, Path] | None:
    """The metadata and folder of the run's newest epoch checkpoint ('latest', else 'best'),
    its JSON only; None where the run has none yet (:func:`read_while_trained`)."""
    if not files.checkpoints.is_dir():
        return None

    def read():
        ckpts = RunCheckpoints(files.checkpoints, create=False, kinds=("latest", "best"), log=files.train_log)
        try:
            for kind in ("latest", "best"):
                if ckpts.latest_epoch(kind) is not None:
                    return ckpts.meta(kind)
            return None
        finally:
            ckpts.close()

    return read_while_trained(files, read)


def check_best(ckpts: RunCheckpoints, *, resuming: bool = False) -> None:
    """That the run's 'best' checkpoint is the one its training saved as best, before it is read
    (``evaluate``, ``predict``, ``export``) or a resume goes on: FileNotFoundError where
    'latest' records a best epoch but 'best' is gone (a resume had gone on without a word, and
    ``evaluate`` then found no best); one
    :class:`~lnm_jax.training.checkpoint.CheckpointCorruptError` naming the checkpoint where its
    epoch is not the best epoch its own record names (a 'latest' copied over it) or, for a reader
    (not ``resuming``), where the 'latest' checkpoint of the same or a later epoch names another
    epoch best. helper-81: each had been evaluated and carded as the best epoch. A best ahead of
    'latest' (training stopped between the two saves, once or twice) passes: a resume redoes
    those epochs, and a reader reads a state the run reached. A resume goes on past a 'latest'
    that names another best (its redone epoch may not improve again); readers are refused."""
    best_at, latest_at = ckpts.latest_epoch("best"), ckpts.latest_epoch("latest")
    latest = ckpts.meta("latest") if latest_at is not None else None
    named = int(latest[0].get("best", {}).get("epoch", 0) or 0) if latest else 0
    remedy = "restore checkpoints/best from a copy, or evaluate --checkpoint latest"
    if best_at is None:
        if named >= 1:
            raise FileNotFoundError(
                f"{ckpts.directory('best')} holds no checkpoint, but {latest[1]} records epoch {named} as the run's "
                "best (by validation AUC), saved there: deleted, or its save failed (a full disk?); restore it from a "
                "copy (evaluate, predict and export read it), or train a new run in another folder"
            )
        return
    meta, where = ckpts.meta("best")
    epoch, own = meta.get("epoch"), meta.get("best", {}).get("epoch")
    if own is not None and own != epoch:
        raise CheckpointCorruptError(
            f"checkpoint {where} is not the run's best: it holds epoch {epoch}, whose record names epoch {own} the "
            f"best (a 'latest' checkpoint copied over it?); {remedy}"
        )
    if not resuming and latest and epoch is not None and epoch <= latest[0]["epoch"] and named != epoch:
        raise CheckpointCorruptError(
            f"checkpoint {where} holds epoch {epoch}, but {latest[1]} (epoch {latest[0]['epoch']}) records epoch "
            f"{named} as the run's best: another copy's checkpoint, or one left by a stopped attempt?; {remedy}"
        )


def load_trained_config(workdir: Path | str) -> ConfigDict:
    """A trained run's ``config.json`` (:func:`load_config`), checked against the record of its
    newest checkpoint (:func:`check_trained_config`): what a reader that builds the run's model
    without restoring it (``validate --workdir``) takes."""
    config = load_config(workdir)
    files = RunFiles(workdir)
    if trained := trained_checkpoint(files):
        check_trained_config(config, files.config, *trained)
        check_trained_split(files, *trained)
    return config


def check_trained_split(files: RunFiles, meta: dict, where: Path) -> None:
    """:class:`DamagedFileError` naming ``splits.json`` where it is missing, or splits the
    patients otherwise than checkpoint ``where`` (its metadata ``meta``) was trained on."""
    if not files.splits.is_file():
        raise DamagedFileError(
            f"{files.splits} is missing: the patient split checkpoint {where} was trained on (which patients are "
            "train, val and test); restore it from a copy"
        )
    if SPLIT_KEY in meta and split_digest(load_splits(files.splits)[0][0]) != meta[SPLIT_KEY]:
        raise _other_split(files, where)


def _other_split(files: RunFiles, where: Path) -> DamagedFileError:
    problem = f"its train, val and test patients are not those checkpoint {where} was trained with"
    return DamagedFileError.edited(files.splits, problem, "restore it from a copy")


def check_manifest_found(config: ConfigDict, files: RunFiles) -> None:
    """FileNotFoundError naming ``config.json`` where the stored config's training manifest is
    not there: the cohort moved, and its path is the run's, which the user may never have typed."""
    if config.data.manifest and not Path(config.data.manifest).is_file():
        raise FileNotFoundError(
            f"{files.config}: data.manifest {config.data.manifest} (the cohort this run was trained on) is not "
            f"found: if it moved, set data.manifest there to its new place: lnm-jax relocate --workdir "
            f"{files.root} --manifest NEW_PLACE.csv (its content is checked against {files.splits.name})"
        )


def relocate_manifest(workdir: Path | str, manifest: Path | str) -> Path:
    """Points a trained run at its cohort's manifest in a new place (the cohort moved, or the
    embedded cohort's ``cohort/`` folder did): the manifest is read as the run reads one and
    checked to be the cohort the run was split on (its content against ``splits.json``'s
    digest, every split patient present), then ``config.json``'s ``data.manifest`` is set to
    its absolute path, the one field changed, atomically. Returns ``config.json``'s path.
    :class:`DamagedFileError` naming ``splits.json`` when the manifest is another cohort or
    there is no split; ManifestError naming the manifest when it cannot be read."""
    files = RunFiles(workdir)
    config = load_config(files.root)
    if not files.splits.is_file():
        raise DamagedFileError(
            f"{files.splits} is missing: without the run's split there is nothing to check {manifest} against; "
            "restore it from a copy"
        )
    moved = ConfigDict(config.to_dict())
    moved.data.manifest = str(Path(manifest).resolve())
    not_this = (
        f"{manifest} is not, byte for byte, the manifest this run was split on (a row or column edited, added, "
        "dropped or reordered counts: the run's record is of the file's bytes, so a reordered copy is another file "
        "to it, though the split and training ignore row order): give relocate that cohort's manifest, its content "
        "as when the run was split"
    )
    cohort = read_manifest(moved.data.manifest, **manifest_checks(moved.data))
    stored_split(moved, cohort, files, not_this)
    check_images_unchanged(files, cohort)
    check_held(files.root)  # (helper-111: a replacing run's config.json had been overwritten with this one's)
    # the stored record with that one field changed: the config as read fills a field added since
    # an earlier version wrote it (helper-114: relocate had written data.augment.clip into such a
    # run, which the version that made it then refused)
    stored = ConfigDict(read_json(files.config))
    stored.data.manifest = moved.data.manifest
    write_config(files.config, stored)
    return files.config


def check_images_unchanged(
    files: RunFiles, cohort: Cohort, digests: dict[tuple[str, str], str] | None = None, remedy: str = ""
) -> None:
    """ValueError naming the first image of ``cohort`` whose content is not the one the run
    recorded when it was created (``image_geometry.csv``'s ``sha256``): a manifest of the same
    bytes whose images are other files (another patient's under the same name, a re-export,
    an image edited in place) is another cohort. ``digests``: ``(patient, input) -> sha256``
    already computed (a resume's survey), else each file is read. ``remedy`` ends the line
    (relocate's by default). A run recorded before image digests warns once that only the
    manifest's content could be checked."""
    rows = recorded_images(files)
    if not rows or "sha256" not in rows[0]:
        warn_once(
            f"{files.image_geometry} records no image digests (a run from before they were recorded): the "
            "manifest's content was checked, its images were not",
            ("unrecorded images", str(files.root)),
        )
        return
    remedy = remedy or "relocate takes the run's cohort moved, not another"
    patients = cohort.by_id()
    masks = {names.mask(i): i for i in names.IMAGE_INPUTS}  # a lesion head's targets, recorded as images are
    for r in rows:
        p, kind = patients.get(r[names.PATIENT_ID]), "lesion mask" if r["input"] in masks else "image"
        if p is None:
            path = None
        else:
            path = p.mask(masks[r["input"]]) if r["input"] in masks else getattr(p, r["input"], None)
        where = f"{cohort.path}: patient {r[names.PATIENT_ID]}"
        if path is None:
            said = r["input"] if r["input"] in masks else f"{r['input']} image"
            raise ValueError(f"{where} has no {said}; the run was trained on one: this is another cohort")
        now = digests.get((r[names.PATIENT_ID], r["input"])) if digests is not None else content_digest(path)
        if now != r["sha256"]:
            raise ValueError(
                f"{where}, {r['input']} {path}: not the {kind} the run was trained on (its content differs from "
                f"{files.image_geometry.name}'s record); {remedy}"
            )


def records_masks(config: ConfigDict, files: RunFiles, resume: bool) -> bool:
    """Whether the run's ``image_geometry.csv`` records its lesion masks by content (rows
    ``<input>_mask``): where they are training targets (``train.lesion_loss_weight`` > 0), but
    for a resume of a run whose record holds none (written before masks were recorded): its
    checkpoints' image digest is of the images alone, and a record rewritten with masks had made
    the run unreadable (helper-82)."""
    if not config.train.get("lesion_loss_weight", 0.0):
        return False
    rows = recorded_images(files) if resume and files.checkpoints.exists() else None
    masks = {names.mask(i) for i in names.IMAGE_INPUTS}
    return rows is None or any(r.get("input") in masks for r in rows)


def images_digest(rows: list[dict] | None) -> str | None:
    """SHA-256 of the images a run was trained on, from ``image_geometry.csv``'s rows (each
    patient's and input's ``sha256``, sorted; paths left out, so that a cohort moved with
    ``relocate`` keeps it), recorded in every checkpoint (:data:`IMAGES_KEY`): an image changed
    and its digest in that file edited to match (helper-60) then disagrees with the checkpoints.
    None where the rows hold no digests (a run from before they were recorded)."""
    if not rows or "sha256" not in rows[0]:
        return None
    held = sorted((r[names.PATIENT_ID], r["input"], r["sha256"]) for r in rows)
    return hashlib.sha256(json.dumps(held, separators=(",", ":")).encode()).hexdigest()


def recorded_images(files: RunFiles) -> list[dict] | None:
    """``image_geometry.csv``'s rows, or None where the run has none."""
    try:
        with files.image_geometry.open(newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))
    except OSError:
        return None


CHANGED_IMAGES = (
    "restore the image the run was trained on, or train a new run on the changed cohort (a model and its "
    "evaluation are of the images it was trained on)"
)


def synth_params(config: ConfigDict) -> SynthParams:
    return SynthParams(**config.data.synth.to_dict())


def resolve_cohort(config: ConfigDict, files: RunFiles, *, synthesise: bool = True) -> Cohort:
    """Validates ``data.manifest``, or (empty) synthesises the embedded cohort into the run's
    ``cohort/`` once and reuses it while its parameters match. ``synthesise=False`` (a trained
    run opened to be read): an empty manifest needs the cohort the run synthesised; without
    one, :class:`DamagedFileError` naming ``config.json`` (a reader writes nothing); and the
    cohort's warnings, said when the run trained, are not said again (helper-123: ``predict``
    had printed the training cohort's blank images before a new site's own problems, read as
    theirs)."""
    checks = {**manifest_checks(config.data), "warn": synthesise}
    if config.data.manifest:
        return read_manifest(config.data.manifest, **checks)
    params = synth_params(config)
    generator = files.cohort / GENERATOR
    if not synthesise and not generator.is_file():
        raise DamagedFileError(
            f"{files.config}: data.manifest is empty (the embedded synthetic cohort), but {files.cohort} holds "
            f"none: if the run's {files.cohort.name}/ folder moved, move it back or point the run at its {MANIFEST} "
            f"(lnm-jax relocate --workdir {files.root} --manifest ITS_{MANIFEST}); if the run was trained on another "
            f"manifest, point it at that one (either is checked against {files.splits.name})"
        )
    if (stored := generator_params(files.cohort)) is not None:
        if stored != params:
            raise ValueError(
                f"{files.cohort} holds a synthetic cohort with other parameters ({dataclasses.asdict(stored)}); "
                "use a fresh --workdir"
            )
    else:
        generate_cohort(files.cohort, params, progress=True)
    return read_manifest(files.cohort / MANIFEST, **checks)


def split_document(config: ConfigDict, cohort: Cohort) -> dict:
    """What ``splits.json`` records beside the split itself: the labels, and every setting the
    split depends on (:data:`lnm_jax.data.cohorts.splits.SETTING_KEYS`; ``protocol.folds`` > 0: the
    k-fold splits of ``lnm-jax reproduce``)."""
    sc, folds = config.data.split, int(config.protocol.folds)
    return dict(
        method=f"{folds}-fold" if folds else "holdout",
        seed=sc.seed,
        test_fraction=None if folds else sc.test_fraction,  # k-fold: each fold is 1/k
        val_fraction=sc.val_fraction,
        manifest_sha256=cohort.sha256,
        labels={p.patient_id: p.lnm for p in cohort.patients},
    )


def stored_split(config: ConfigDict, cohort: Cohort, files: RunFiles, fix: str = NEW_RUN) -> Split | None:
    """The split ``files.splits`` holds, if any, once checked to match the manifest and every
    split setting of ``config`` (a mismatch's message ends with ``fix``)."""
    if not files.splits.is_file():
        return None
    splits, doc = load_splits(files.splits)
    check_stored(doc, split_document(config, cohort), files.splits, fix)
    check_patients(splits, cohort.ids, files.splits)
    return splits[0]


class RunData:
    """A cohort's splits as batches: training batches through the loader the config names
    (``data.loader``: grain, the default, no TensorFlow; or TFDS + tf.data, built the first time
    training asks for a batch), evaluation batches (validation, test, ``evaluate``, ``predict``,
    Grad-CAM) through grain whatever the loader (the same pixels: the TFDS path's agree with
    grain's to float32 rounding), so that a run trained through TFDS is evaluated, scored and
    explained without TensorFlow and in one patient order (helper-95: ``evaluate``, ``predict``
    and ``gradcam`` of such a run had asked for TensorFlow, which their users need not have)."""

    def __init__(
        self, config: ConfigDict, cohort: Cohort, split: Split | None, tfds_dir: Path, *, require_labels: bool = True
    ):
        from lnm_jax.data.loaders.loader import BatchSettings, GrainSource  # noqa: PLC0415

        self.config = config
        self.cohort = cohort
        self.split = split
        self.norm = config.data.norm.to_dict()
        self._validation: list | None = None  # validation_batches' device-resident batches
        settings = BatchSettings.from_config(config)
        processes = {"process_index": jax.process_index(), "process_count": jax.process_count()}
        kind = config.data.get("loader", "grain")
        if kind not in ("grain", "tfds"):
            raise ValueError(f"data.loader must be 'grain' or 'tfds', got {kind!r}")
        self.source = GrainSource(cohort, settings, **processes)  # evaluation's, and grain training's
        self._training = None

        def training_source():
            if self._training is None:
                self._training = self.source
                if kind == "tfds":
                    pipeline = _tfds_pipeline()
                    self._training = pipeline.TfdsSource(
                        cohort, settings, tfds_dir, require_labels=require_labels, **processes
                    )
            return self._training

        self._training_source = training_source

    def ids(self, subset: str) -> tuple[str, ...]:
        return tuple(self.cohort.ids) if subset == "all" else self.split.subset(subset)

    def train_batches(self, epoch: int, state: dict | None = None):
        """``(loader state after the batch, batch)`` pairs of one training epoch (this process's rows of
        each global batch), resumed after the batch whose state ``state`` is."""
        return self._training_source().train_batches(self.ids("train"), epoch, state)

    def eval_batches(self, subset: str):
        return self.source.eval_batches(self.ids(subset))

    def validation_batches(self, mesh=None):
        """The validation split's batches as the training loop reads them every epoch (for
        :func:`~lnm_jax.training.steps.predict`). With ``data.on_device``: read once, their step
        inputs put on the device(s) (sharded over ``mesh``), and kept, as ``(numpy batch, device
        inputs)`` pairs (nothing in an evaluation batch is random: every epoch's are the same).
        Read through the loader every epoch, the H200's validation of 655 patients and the epoch's
        summaries took 0.6-0.9 s after 0.9 s of steps (2026-12-04, ``scripts/train_e2e.py``).
        Else the loader's numpy batches, read anew."""
        if not self.config.data.on_device:
            return self.eval_batches("val")
        if self._validation is None:
            self._validation = [(b, sharding.place_batch(step_inputs(b), mesh)) for b in self.eval_batches("val")]
        return self._validation

    def train_arrays(self) -> dict:
        """The decoded training split as numpy arrays ([0, 1] images, not yet augmented or
        normalised), for a device-resident cohort (``data.on_device``)."""
        return self._training_source().arrays(self.ids("train"))

    def device_epochs(self, mesh=None):
        """``epoch_batches(epoch, loader_state)``: one training epoch as ``((loader state,
        host batch), device batch)`` pairs, resumed after the batch whose state is given; from
        a device-resident cohort (``data.on_device``: the split decoded once, augmented in
        JAX) or from the host loader prefetched to the device(s). ``mesh``: shard each batch
        over it (data parallelism), else one device."""
        config = self.config
        if config.data.on_device:
            from lnm_jax.data.loaders.on_device import DeviceCohort  # noqa: PLC0415

            on_device = DeviceCohort(
                self.train_arrays(),
                batch_size=config.train.batch_size,
                norm=self.norm,
                augment=config.data.augment.to_dict(),
                seed=config.seed,
                sharding=None if mesh is None else sharding.batch_sharding(mesh),
                replicated=None if mesh is None else sharding.replicated(mesh),
            )

            def device_resident(epoch, loader_state):
                start = loader_state["next_index"] if loader_state else 0
                return ((({"next_index": k}, b), b) for k, b in enumerate(on_device.epoch(epoch, start), start + 1))

            return device_resident

        def put(pair):
            # (loader state, batch): this process's rows of the global batch
            return sharding.place_batch(step_inputs(pair[1]), mesh, local=True)

        def host_loader(epoch, loader_state):
            return sharding.prefetch_to_device(self.train_batches(epoch, loader_state), put)

        return host_loader

    def steps_per_epoch(self) -> int:
        return len(self.ids("train")) // self.config.train.batch_size


def check_split(config: ConfigDict, cohort: Cohort, split: Split) -> None:
    """What training ``config``'s model on ``split`` of ``cohort`` would trip on, checked before
    anything is written (by :meth:`Run.create`, and by ``lnm-jax reproduce`` for every planned
    run and split before its first record): lesion masks for a lesion head in the training
    split, a training split of at least one batch, TensorFlow for ``data.loader='tfds'``; and
    warns, as ``validate`` does, of a US-LNM column the model cannot learn from or should not
    (:func:`~lnm_jax.preflight.flag_warnings`) and of a prevalence plain BCE calls one class at
    (:func:`~lnm_jax.preflight.prevalence_warning`): a run trained without ``validate`` had
    heard of neither (helper-121)."""
    check_lesion_masks(config, cohort, split.train)
    check_trainable(config, len(split.train))
    if warning := check_host_memory(config, len(cohort.patients)):  # (ValueError where it cannot fit at all)
        warn_once(warning.removeprefix("warning: "), key=("host memory", cohort.path))
    for said in flag_warnings(cohort, names.US_LNM in names.parse_modalities(config.modalities)):
        warn_once(said, key=("us_lnm", cohort.path, said))
    if warning := prevalence_warning(cohort, config):
        warn_once(warning.removeprefix("warning: "), key=("prevalence", cohort.path))
    if config.data.get("loader", "grain") == "tfds":
        _tfds_pipeline()  # TensorFlow importable, or one line saying what to install


def _tfds_pipeline():
    """The TensorFlow input path, or an error that says what to install."""
    try:
        from lnm_jax.data.loaders import pipeline  # noqa: PLC0415
    except ImportError as e:
        from lnm_jax.provenance import extra_install  # noqa: PLC0415

        raise ImportError(
            f"data.loader='tfds' needs TensorFlow ({e}); install it ({extra_install('tf')}), or use the "
            "default data.loader='grain'"
        ) from e
    return pipeline


def zero_batch(config: ConfigDict) -> dict:
    """A batch of zeros shaped as the evaluation batches, to initialise a model. Never a batch
    drawn from the cached datasets: an iterator abandoned after one batch leaves a partly
    filled ``tf.data`` cache that a later full pass may read as complete."""
    n, s, t = config.train.eval_batch_size, config.data.image_size, config.data.clip_frames
    ceus = (n, t, s, s, 3) if t > 1 else (n, s, s, 3)
    return {
        names.BMODE: np.zeros((n, s, s, 3), np.float32),
        names.CEUS: np.zeros(ceus, np.float32),
        names.US_LNM: np.zeros(n, np.float32),
        names.LABEL: np.zeros(n, np.int32),
        **{k: np.ones(n, bool) for k in names.AVAILABILITY_KEYS},
        names.VALID: np.ones(n, bool),
        names.PATIENT_ID: np.array([b""] * n, dtype=object),
    }


def check_pretrained_meta(config: ConfigDict) -> tuple[str, ...]:
    """The image branches ``config.model.init_from`` gives a backbone, checked from their
    ``backbone.json`` alone (no array read; :func:`~lnm_jax.weights.io.check_branch_backbones`:
    a missing folder, another architecture or variant, an old port: one line naming the
    folder). What a start can tell before it synthesises a cohort or reads one."""
    from lnm_jax.weights.io import check_branch_backbones  # noqa: PLC0415

    c = config.model
    branches = tuple(m for m in names.parse_modalities(config.modalities) if m in names.IMAGE_INPUTS)
    check_branch_backbones(c.init_from, branches, c.backbone, c.variant)
    return branches


def read_pretrained(config: ConfigDict, abstract=None) -> dict[str, tuple[dict, dict]]:
    """``{branch: (variables, meta)}``: ``config.model.init_from``'s backbone for each image
    branch (:func:`lnm_jax.weights.io.load_branch_backbones`), checked against the branches of
    the config's model: their ``backbone.json`` against its architecture and variant (before any
    array is read), then ValueError naming the folder and the first array whose shape differs
    (another width or architecture). ``abstract``: the model's variables' shapes (a train
    state's or ``model.init``'s ``params`` and ``batch_stats``), traced from the config when
    None. The errors of :func:`~lnm_jax.weights.io.backbone_meta` and
    :func:`~lnm_jax.weights.io.load_backbone` pass through (a missing folder, an old Keras port,
    damaged arrays), each one line naming the folder."""
    from lnm_jax.weights.io import branch_backbone_dirs, load_branch_backbones  # noqa: PLC0415

    c = config.model
    model = build_model(config)
    branches = check_pretrained_meta(config)
    loaded = load_branch_backbones(c.init_from, branches)
    folders = branch_backbone_dirs(c.init_from, branches)
    if abstract is None:  # shapes only: traced, neither compiled nor run
        init = functools.partial(model.init, train=False)
        abstract = jax.eval_shape(init, jax.random.key(config.seed), step_inputs(zero_batch(config)))
    for b, (variables, _) in loaded.items():
        fits = f"pretrained backbone {folders[b]} does not fit branch '{b}' of the config's model ({c.backbone}"
        fits += f", width {c.width}, {c.variant})"
        for coll in ("params", "batch_stats"):
            held = abstract.get(coll, {}) if isinstance(abstract, dict) else getattr(abstract, coll)
            # (a VGG-11 without BatchNorm has no batch_stats: helper-89's KeyError)
            want, got = held.get(f"{b}_backbone", {}), variables.get(coll, {})
            if jax.tree.structure(want) != jax.tree.structure(got):
                raise ValueError(f"{fits}: its {coll} name other layers (another architecture or variant)")
            for (path, w), g in zip(jax.tree_util.tree_leaves_with_path(want), jax.tree.leaves(got)):
                if tuple(w.shape) != np.shape(g):
                    where = f"{coll}{jax.tree_util.keystr(path)}"
                    raise ValueError(f"{fits}: {where} is {list(np.shape(g))} there, {list(w.shape)} in the model")
    return loaded


def check_init_from(config: ConfigDict, cohort: Cohort, test_ids) -> list[str]:
    """What a run started from ``config.model.init_from`` would be told or refused before it
    writes anything, for ``lnm-jax validate``: the notes of
    :func:`~lnm_jax.preflight.check_pretraining` (``test_ids``: the test split's patients, or
    None where no split is made: then its test-split check is skipped), and the backbone read
    and fitted by :func:`read_pretrained`. Its errors pass through. [] without ``init_from``."""
    if not config.model.get("init_from"):
        return []
    notes = check_pretraining(config, cohort, [] if test_ids is None else test_ids)
    read_pretrained(config)
    return notes


def recorded_run_id(files: RunFiles) -> str | None:
    """The run's identity as its ``run_info.json`` records it (checked), None without one."""
    return recorded_identity(files, read_run_info(files.run_info)) if files.run_info.is_file() else None


def read_intensity_reference(files: RunFiles, run_id: str | None, strict: bool = False) -> dict | None:
    """The training split's image intensities (:mod:`lnm_jax.evaluation.intensity`), as
    training recorded them; None for a run trained before they were recorded. The file is
    sealed and names its run (:data:`REFERENCE_KEY`, :data:`RUN_KEY`; ``run_id``: the run's,
    :func:`recorded_run_id`): an edited one (a range widened by hand) or another run's copied in
    is :class:`DamagedFileError` naming it; one written before it was sealed (the bare
    reference) is read with a warning, or, ``strict`` (``export``: helper-61's edited bare
    reference had been shipped), refused."""
    from lnm_jax.evaluation.intensity import reference_problem  # noqa: PLC0415

    path = files.intensity_reference
    if not path.is_file():
        return None
    remedy = "restore it from a copy, or delete it (predict then checks no intensities)"
    doc = read_json(path, remedy=remedy)
    if REFERENCE_KEY in doc:
        check_seal(doc, path, remedy, strict=strict)
        if run_id is not None and doc.get(RUN_KEY) != run_id:
            raise DamagedFileError.edited(path, "it was recorded by another run (copied in?)", remedy)
        ref = doc[REFERENCE_KEY]
    else:
        check_seal(doc, path, remedy, strict=strict)  # the bare reference of a run from before: a warning
        ref = doc
    if problem := reference_problem(ref):
        raise DamagedFileError.edited(path, problem, remedy)
    return ref


@dataclasses.dataclass(frozen=True)
class Predictor:
    """A restored checkpoint ready to predict: BatchNorm folded where the backbone allows."""

    model: object
    params: object
    batch_stats: object
    meta: dict
    mesh: object = None  # a data mesh: batches sharded over every device, as training's validation

    @functools.cached_property
    def step(self):
        return make_eval_step(self.model, self.mesh)

    @functools.cached_property
    def _placed(self) -> tuple:
        """(params, batch_stats) as the step takes them: replicated over the mesh once, not
        resharded at every batch; as they are without one."""
        if self.mesh is None:
            return self.params, self.batch_stats
        return sharding.replicate((self.params, self.batch_stats), self.mesh)

    def __call__(self, batches) -> dict[str, np.ndarray]:
        return predict(self.step, *self._placed, batches, self.mesh)


class Run:
    """One run folder's config, cohort, split, data, model and restored states."""

    def __init__(
        self, config: ConfigDict, workdir: Path | str, cohort: Cohort, split: Split | None, *, resume: bool = False
    ):
        self.config = config
        self.files = RunFiles(workdir)
        self.cohort = cohort
        self.split = split
        self.resume = resume
        self._record_pending = False  # config.json / run_info.json, deferred by a resume (create)
        self._recorded_before = None  # run_info.json before a resume (create)
        self._geometry = None  # image_geometry.csv's rows, deferred by a resume (create)
        self._made: list[Path] = []  # what this start made in the folder (create): discard_start
        self._states: dict[str, tuple] = {}
        self._stale_warned: set = set()  # stale calibrations already reported (temperature)
        self._predictors: dict[str, Predictor] = {}
        self._pretrained: dict | None = None  # model.init_from's backbones, read once
        self._check_images = False  # check the cohort's images against the record (open: readers)
        self.run_id: str | None = None  # the run's identity (run_identity), as run_info.json records it

    @property
    def workdir(self) -> Path:
        return self.files.root

    # ------------------------------------------------------------------ construction

    @classmethod
    def create(
        cls,
        config: ConfigDict,
        workdir: Path | str,
        *,
        resume: bool = False,
        split: Split | None = None,
        split_doc: dict | None = None,
    ) -> Run:
        """A run to train in ``workdir``. Everything that can be checked is checked before
        anything is written: the model at the configured size, the cohort (validated), its
        inputs against the model's, the split (a stored one must match the manifest and every
        split setting); a folder that holds a run is refused unless ``resume`` (then the
        configs must describe the same experiment). ``split`` (with its ``split_doc``) imposes
        a split, as the protocol does for its runs; otherwise one is made, or re-read."""
        files = RunFiles(workdir)
        refuse_export_folder(files.root, "--workdir")  # (helper-62: a training had written into one)
        refuse_nested_run(files.root)
        config = with_resolved_paths(config)
        check_config(config)
        if not resume and files.checkpoints.exists():
            if trained_checkpoint(files) is None:  # a first start killed in its first epoch (no discard ran)
                raise RunExistsError(
                    f"{files.root} holds a run that finished no epoch (killed in its first?): pass --resume to go on "
                    "with it (from its mid-epoch checkpoint where it saved one, else epoch 1), or use a new --workdir"
                )
            raise RunExistsError(f"{files.root} already holds a run; pass --resume or use a new --workdir")
        trained = trained_checkpoint(files) if resume else None
        stored = load_config(files.root) if resume and files.config.is_file() else None
        if stored is not None:
            config = with_recorded_norm(config, stored)
            check_resumable(stored, config)
        recorded_id = recorded_identity(files, recorded_before(files)) if trained else None
        if trained:  # before the cohort or the split is read: a hand-edited config.json is named as such
            check_same_run(recorded_id, *trained, files.run_info)
            check_trained_config(config, files.config, *trained)
            check_manifest_found(config, files)
            if split is None and not files.splits.is_file():
                raise DamagedFileError(
                    f"{files.splits} is missing: checkpoint {trained[1]} was trained on the split it held, which "
                    "cannot be drawn again with certainty; restore it from a copy (a new split could put training "
                    "patients in validation or test)"
                )
        if config.model.init_from and not (resume and files.checkpoints.exists()):  # (a resume reads none)
            # before a cohort is synthesised or read (helper-116: a missing backbone was said after
            # the embedded cohort's 80 s of synthesis); the arrays are read and fitted in _create
            check_pretrained_meta(config)
        # the embedded synthetic cohort is written here: removed again where this start goes no
        # further (helper-112: a refused batch size had left it, 51 MB, and the folder)
        synthesised = not config.data.manifest and not files.cohort.exists()
        try:
            return cls._create(config, files, resume, split, split_doc, trained, stored, synthesised)
        except BaseException:
            if synthesised and not files.config.is_file() and not folder_gone(files.root):
                shutil.rmtree(files.cohort, ignore_errors=True)
            raise

    @classmethod
    def _create(cls, config, files, resume, split, split_doc, trained, stored, synthesised) -> Run:
        """:meth:`create` from the cohort on (its checks of the folder and config done)."""
        cohort = resolve_cohort(config, files)
        check_inputs_present(config, cohort)
        images = survey(
            cohort,
            Framing.from_config(config.data),
            screens=False,
            image_size=int(config.data.image_size),
            masks=records_masks(config, files, resume),
        )
        if images.problems:
            raise ValueError(f"{cohort.path}: " + " | ".join(images.problems))
        for said in images.warnings:  # as validate says them
            warn_once(f"{cohort.path}: {said}", key=(cohort.path, said))
        save = split is not None  # an imposed split is recorded as given
        if split is None:
            split = stored_split(config, cohort, files)
            if split is None:
                if config.protocol.folds:
                    raise ValueError(
                        "protocol.folds is for `lnm-jax reproduce --folds K`; a run trains on one holdout split"
                    )
                (split,), save = make_splits(config, cohort), True
        check_split(config, cohort, split)
        if config.data.norm_from == "train" and stored is None:
            config = with_training_norm(config, cohort, split)
        # a resume records its config and process once its checkpoint has been read
        # (write_pending_record, from the loop): one that fails on a damaged checkpoint leaves the
        # run's record as it was, not describing an attempt that never trained
        pending = resume and files.checkpoints.exists() and files.config.is_file()
        before = recorded_before(files) if pending else None
        if pending and files.image_geometry.is_file():
            # the images the checkpoint was trained on, not others under their names: a resume
            # had trained on an image edited in place and rewritten the record to it
            check_images_unchanged(
                files,
                cohort,
                {(g[names.PATIENT_ID], g["input"]): g["sha256"] for g in images.geometry},
                remedy=CHANGED_IMAGES,
            )
        run = cls(config, files.root, cohort, split, resume=resume)
        if config.model.init_from and not (resume and files.checkpoints.exists()):  # a resume reads none
            for note in check_pretraining(config, cohort, split.test):
                print(note, file=sys.stderr)
            run.pretrained_backbones()  # read and fitted to the model's branches before any write
        state = run.abstract_state()  # shapes only: the space its checkpoints take, before anything is written
        kept = 1 if resume and trained is not None else 3  # (a resume's checkpoints hold their space already)
        states = kept + (1 if config.train.get("checkpoint_every_steps", 0) else 0)
        check_disk_space(files.root, sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state)), states=states)
        outputs = (files.checkpoints, files.history, files.tensorboard, files.intensity_reference, files.train_log)
        outputs += (files.tfds,)  # (the TFDS records a data.loader='tfds' start builds there: helper-95)
        made = [p for p in (files.root, *outputs) if not p.exists()]  # before this start writes anything
        made += [files.cohort] if synthesised else []  # (a diverged first start: the folder as it found it)
        files.root.mkdir(parents=True, exist_ok=True)
        records = (files.splits, files.config, files.run_info, files.image_geometry)
        new = [p for p in records if not p.exists()]
        try:
            if save:
                save_splits(files.splits, [split], **(split_doc or split_document(config, cohort)))
            if not pending:
                write_run_record(config, files, run_id=run_identity(config, split))
                write_csv(files.image_geometry, images.geometry, GEOMETRY_COLUMNS)
        except BaseException:  # a start that cannot record itself (a full disk) leaves none of it
            for p in new:
                p.unlink(missing_ok=True)
            raise
        run._record_pending = pending
        run._recorded_before = before
        run._made = [*new, *made] if files.config in new else []  # a first start's, not a resume's
        run.run_id = recorded_identity(files, before) if pending else run_identity(config, split)
        run._geometry = images.geometry
        return run

    def pretrained_backbones(self) -> dict[str, tuple[dict, dict]]:
        """``{branch: (variables, meta)}``: ``model.init_from``'s backbone for each image branch,
        read once by :func:`read_pretrained` (checked against the config's model)."""
        if self._pretrained is None:
            self._pretrained = read_pretrained(self.config, self.abstract_state())
        return self._pretrained

    def write_pending_record(self) -> None:
        """Writes ``config.json``, ``run_info.json`` and ``image_geometry.csv`` where
        :meth:`create` deferred them: a resume, once the training loop has read its checkpoint
        and history."""
        if self._record_pending:
            write_run_record(self.config, self.files, before=self._recorded_before)
            write_csv(self.files.image_geometry, self._geometry, GEOMETRY_COLUMNS)
            self._record_pending = False

    def discard_start(self) -> str | None:
        """Removes what this start made in the run folder (its records, history, events, the
        empty checkpoint folders, the folder itself where it made it), so that a first start that
        saved no checkpoint (it diverged in its first epoch, ran out of memory decoding its
        cohort, was stopped by Ctrl-C) leaves the folder as it found it: the same command starts
        it again, and a new start there, with a corrected config, is not taken for a resume of
        it. Process 0 of a job does it; a resume, or a start that saved a checkpoint (an epoch's
        or a mid-epoch one), keeps everything. Returns what was removed, as a clause for the
        error's message, or None where nothing was."""
        if not self._made or jax.process_index() != 0 or trained_checkpoint(self.files) is not None:
            return None
        if self.files.checkpoints.is_dir():  # a mid-epoch checkpoint is one to resume from too
            ckpts = RunCheckpoints(self.files.checkpoints, create=False, kinds=("progress",), log=self.files.train_log)
            try:
                if ckpts.latest_epoch("progress") is not None:
                    return None
            finally:
                ckpts.close()
        made, self._made = self._made, []
        if folder_gone(self.files.root):  # another process's folder may be there now (helper-110): nothing removed
            return None
        return discard_made(self.files.root, made)

    @classmethod
    def open(cls, workdir: Path | str) -> Run:
        """A trained run as its folder recorded it: config, cohort and split."""
        files = RunFiles(workdir)
        config = load_config(files.root)
        run_id = recorded_run_id(files)
        if trained := trained_checkpoint(files):  # config.json first: an edit of it is named as such
            check_same_run(run_id, *trained, files.run_info)
            check_trained_config(config, files.config, *trained)
        check_manifest_found(config, files)
        cohort = resolve_cohort(config, files, synthesise=False)
        check_inputs_present(config, cohort)
        split = stored_split(config, cohort, files)
        if split is None:
            raise DamagedFileError(
                f"{files.splits} is missing: the patient split {files.root} was trained on (which patients are "
                "train, val and test); restore it from a copy"
            )
        run = cls(config, files.root, cohort, split)
        run.run_id = run_id
        run._check_images = True  # a reader of its cohort reads the images it was trained on
        return run

    # ------------------------------------------------------------------ live objects

    @functools.cached_property
    def data(self) -> RunData:
        """The run's cohort as batches; for a run opened to be read (evaluate, Grad-CAM,
        availability), once its images are checked to be those it was trained on
        (:func:`check_images_unchanged`: an image edited in place since had been scored in silence)."""
        if self._check_images:
            check_images_unchanged(self.files, self.cohort, remedy=CHANGED_IMAGES)
        return RunData(self.config, self.cohort, self.split, self.tfds_dir)

    @property
    def tfds_dir(self) -> Path:
        return Path(self.config.data.tfds_dir) if self.config.data.tfds_dir else self.files.tfds

    def data_for(self, cohort: Cohort, records: Path) -> RunData:
        """Batches of another cohort (new patients, labels optional) prepared as this run's,
        its records built under ``records`` (not in the run folder, which stays read-only)."""
        return RunData(self.config, cohort, None, records, require_labels=False)

    @functools.cached_property
    def model(self):
        return build_model(self.config)

    @functools.cached_property
    def optimizer(self):
        """(Adam, plateau scheduler) as the config sets them."""
        return state_lib.optimizers(self.config.train)

    @functools.cached_property
    def _init_program(self):
        """The train state's initialisation program (:func:`lnm_jax.training.state.train_state_program`),
        one per run: its shapes and its values come from one trace of the model's ``init``."""
        return state_lib.train_state_program(self.model, *self.optimizer)

    def _init_args(self) -> tuple:
        """(key seeded from ``config.seed``, a zero batch): the initialisation program's inputs."""
        return jax.random.key(self.config.seed), step_inputs(zero_batch(self.config))

    def fresh_state(self) -> state_lib.TrainState:
        """The initial train state."""
        return self._init_program(*self._init_args())

    def abstract_state(self) -> state_lib.TrainState:
        """The train state's shapes and dtypes, without initialising a model."""
        return self._init_program.eval_shape(*self._init_args())

    def image_geometry(self) -> list[dict] | None:
        """The geometry rows of the images the run trains on (``image_geometry.csv``'s, or, for a
        start that has not written them yet, the ones it will), None where the run has none."""
        return self._geometry if self._geometry is not None else recorded_images(self.files)

    def checkpoints(self, *, create: bool = False) -> RunCheckpoints:
        """The run's checkpoints; each one saved records the config's model fields, the whole
        config, the split's digest and the run's identity (read back by :meth:`check_checkpoint`)."""
        images = images_digest(self.image_geometry())
        record = {
            MODEL_KEY: model_fields(self.config),
            CONFIG_KEY: json.loads(with_resolved_paths(self.config).to_json()),
            SPLIT_KEY: split_digest(self.split),
            **({RUN_KEY: self.run_id} if self.run_id else {}),
            **({IMAGES_KEY: images} if images else {}),
            # the decoding code that read its images, sealed with the checkpoint (the model card compares it)
            PREPROCESSING_KEY: preprocessing_digest(),
        }
        return RunCheckpoints(self.files.checkpoints, create=create, log=self.files.train_log, record=record)

    def restore(self, checkpoint: str = "best") -> tuple[state_lib.TrainState, dict]:
        """The train state and metadata of ``checkpoint`` ('best' | 'latest'), restored once."""
        if checkpoint not in self._states:

            def read():
                ckpts = self.checkpoints()
                try:
                    if checkpoint == "best":
                        check_best(ckpts)
                    self.check_checkpoint(*ckpts.meta(checkpoint))
                    # restored into the state's shapes, which need no initialisation to know
                    return ckpts.restore(checkpoint, self.abstract_state())
                finally:
                    ckpts.close()

            self._states[checkpoint] = read_while_trained(self.files, read)  # (a training may replace it meanwhile)
        return self._states[checkpoint]

    def check_checkpoint(self, meta: dict, where: Path) -> None:
        """:class:`DamagedFileError` naming the run's file that says otherwise than checkpoint
        ``where`` (its metadata ``meta``) records it was trained with: ``config.json``
        (:func:`check_trained_config`), or ``splits.json`` where its patients are split
        otherwise (a training patient moved into test would be scored as unseen). A checkpoint
        another run saved (:func:`check_same_run`), or one both disagree with, is named instead
        (:class:`CheckpointCorruptError`: copied in from another run folder)."""
        check_same_run(self.run_id, meta, where, self.files.run_info)
        if IMAGES_KEY in meta and not self.files.image_geometry.is_file():  # said as missing, not as edited
            raise DamagedFileError(
                f"{self.files.image_geometry} is missing: the record of the images checkpoint {where} was trained on "
                "(by content); restore it from a copy"
            )
        if IMAGES_KEY in meta and images_digest(recorded_images(self.files)) != meta[IMAGES_KEY]:
            raise DamagedFileError.edited(
                self.files.image_geometry,
                f"its images' digests are not those checkpoint {where} was trained on",
                "restore it from a copy (an image changed since is then named)",
            )
        other_split = SPLIT_KEY in meta and self.split is not None and split_digest(self.split) != meta[SPLIT_KEY]
        try:
            check_trained_config(self.config, self.files.config, meta, where)
        except DamagedFileError as e:
            if other_split:  # both records disagree with it: the checkpoint is the odd one
                raise CheckpointCorruptError(
                    f"checkpoint {where} was trained on another split than {self.files.splits.name} holds and as "
                    f"another model or experiment than {self.files.config.name} describes: another run's checkpoint? "
                    "restore this run's from a copy"
                ) from e
            raise
        if other_split:
            raise _other_split(self.files, where)

    def forget_checkpoints(self) -> None:
        """Drops restored states (training wrote new checkpoints)."""
        self._states.clear()
        self._predictors.clear()

    def release_data(self) -> None:
        """Drops the decoded cohort this run holds (:attr:`data`, read again when next asked for):
        a caller keeping finished runs alive, as ``reproduce`` keeps each setting's for its
        figures, holds one cohort, not one per run (helper-97: the memory check counts one)."""
        self.__dict__.pop("data", None)

    def temperature(self, checkpoint: str = "best", strict: bool = False) -> float | None:
        """The calibration temperature ``evaluate`` fitted on validation for ``checkpoint``, or
        None if it has not run, or (with a warning on stderr) if it was fitted for another
        state of that checkpoint (training resumed since): a stale temperature is never
        applied. ``strict``: a record without its seal is refused (:func:`check_seal`)."""
        path = self.files.calibration(checkpoint)
        if not path.is_file():
            return None
        refit = f"refit it: {self.evaluate_command(checkpoint)}"
        doc = read_json(path, required=("temperature",), remedy=refit)
        check_seal(doc, path, refit, strict=strict)
        t = doc["temperature"]
        if not is_number(t) or t <= 0:
            # a temperature <= 0 inverts or saturates every calibrated probability, silently
            raise DamagedFileError(f"{path}: temperature {t!r} is not a number > 0; {refit}")
        epoch, digest = doc.get("epoch"), doc.get(DIGEST_KEY)
        # a string epoch had been reported as fitted for "epoch 2, which is now epoch 2"
        if not is_int(epoch):
            raise DamagedFileError.edited(path, f"epoch {epoch!r} is not a whole number", refit)
        if digest is not None and not isinstance(digest, str):
            raise DamagedFileError.edited(path, f"{DIGEST_KEY} {digest!r} is not a string", refit)
        meta = self.predictor(checkpoint).meta
        fitted, now = (epoch, digest), (meta.get("epoch"), meta.get(DIGEST_KEY))
        if fitted[0] != now[0] or (fitted[1] is not None and fitted[1] != now[1]):
            if (checkpoint, fitted) not in self._stale_warned:  # once per command, however often asked
                self._stale_warned.add((checkpoint, fitted))
                print(
                    f"warning: {path.name} was fitted for the '{checkpoint}' checkpoint of epoch {fitted[0]}, which "
                    f"is now epoch {now[0]}: not applied (no calibrated probability); {refit}",
                    file=sys.stderr,
                )
            return None
        return float(doc["temperature"])

    def evaluate_command(self, checkpoint: str = "best") -> str:
        """The command line that evaluates ``checkpoint`` of this run (and fits its calibration)."""
        return f"lnm-jax evaluate --workdir {shlex.quote(str(self.workdir))} --checkpoint {checkpoint}"

    def check_records(self) -> None:
        """Reads the run's records that a command reads back after its work (``run_info.json``
        for the model card, the intensity reference), so that a damaged one fails before the
        command writes anything (:class:`DamagedFileError` naming it)."""
        if self.files.run_info.is_file():
            read_run_info(self.files.run_info)
        self.intensity_reference()

    def intensity_reference(self, strict: bool = False) -> dict | None:
        """:func:`read_intensity_reference` of this run."""
        return read_intensity_reference(self.files, self.run_id, strict=strict)

    def record_intensity_reference(self) -> dict:
        """Decodes the training split once (the loader's cache keeps it for the first epoch)
        and writes its intensity summary; returns it."""
        from tqdm import tqdm  # noqa: PLC0415

        from lnm_jax.evaluation import intensity  # noqa: PLC0415

        n = len(self.split.train)
        batches = tqdm(  # (on a terminal: the first decode of a large split had been silent for a minute)
            self.data.eval_batches("train"),
            total=-(-n // int(self.config.train.eval_batch_size)),
            desc=f"decoding the training split ({n} patients)",
            unit="batch",
            leave=False,
            disable=None,
        )
        ref = intensity.reference(intensity.features_of(batches, self.data.norm, names.IMAGE_INPUTS))
        if jax.process_index() == 0:
            write_json(self.files.intensity_reference, sealed({RUN_KEY: self.run_id, REFERENCE_KEY: ref}))
        return ref

    def computed_from(self, checkpoint: str = "best") -> dict:
        """The record an output keeps of the state it was computed from (availability's
        table, a Grad-CAM folder's ``checkpoint.json``, an export's source): the run folder,
        ``checkpoint``, its epoch and its state digest. A save that replaces that checkpoint
        moves the run's output folders whose record it no longer matches aside
        (:meth:`RunFiles.outputs_of`)."""
        meta = self.predictor(checkpoint).meta
        return {
            "run": str(Path(self.workdir).resolve()),  # as typed, it had named another folder read from elsewhere
            "checkpoint": checkpoint,
            "epoch": meta.get("epoch"),
            DIGEST_KEY: meta.get(DIGEST_KEY),
        }

    def predictor(self, checkpoint: str = "best") -> Predictor:
        if checkpoint not in self._predictors:
            state, meta = self.restore(checkpoint)
            model, params, stats = inference_variables(self.model, state, self.config.eval.fold_bn)
            self._predictors[checkpoint] = Predictor(model, params, stats, meta, self._eval_mesh())
        return self._predictors[checkpoint]

    def _eval_mesh(self):
        """The mesh ``evaluate``, ``predict`` and ``gradcam``'s scores run over: every device, as
        training's validation does (helper-88: they had run on device 0 alone), where the run
        trains data-parallel and the devices divide its evaluation batches; None otherwise."""
        n = jax.device_count()
        if n == 1 or not self.config.train.get("data_parallel", True) or self.config.train.eval_batch_size % n:
            return None
        return sharding.data_mesh()

    def predict(self, subset: str, checkpoint: str = "best", transform=None) -> dict[str, np.ndarray]:
        """Valid rows' patient ids, labels and logits of ``subset`` ('train' | 'val' | 'test');
        ``transform`` maps each batch first (e.g. withholding inputs)."""
        batches = self.data.eval_batches(subset)
        if transform is not None:
            batches = map(transform, batches)
        return self.predictor(checkpoint)(batches)
