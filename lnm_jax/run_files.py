"""The run folder's file names, defined once.

A run folder (``workdir``) holds::

    config.json            the experiment (ml_collections ConfigDict as JSON)
    run_info.json          provenance: versions, git commit, devices, XLA flags, command line
    splits.json            the patient-level split (checked against the manifest and config)
    cohort/                the synthetic cohort (when no manifest is given)
    tfds/                  the TFDS records of the cohort (unless data.tfds_dir names a shared one)
    checkpoints/{best,latest}/   orbax checkpoints
    metrics.jsonl          one JSON line per epoch; tb/: TensorBoard events of the same
    train.log              the checkpoint library's routine messages (kept off the console)
    eval_<checkpoint>/     metrics.json, predictions.csv, roc/reliability/decision-curve plots,
                           availability.{json,md}
    eval_<checkpoint>.epoch-<N>/, gradcam_<split>.epoch-<N>/   an output folder of epoch N's
                           checkpoint, moved aside when training replaced that checkpoint
    calibration_<checkpoint>.json   the temperature fitted on validation (used by predict)
    intensity_reference.json   the training split's image intensities (predict's outlier check)
    .lock, lock_owner.json     held by the one process writing the run (lnm_jax.run_lock)
    gradcam_<split>/       Grad-CAM figures, grids, index.csv, cams.npz (and cam_scores.json with masks)
    predictions.json       (protocol runs) validation and test probabilities of the best checkpoint

Only this module spells these names; every stage asks it for a path.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from lnm_jax.fileio import OutputPathError, is_temporary_output, read_json, short_name, temporary_name

CONFIG = "config.json"
RUN_INFO = "run_info.json"
SPLITS = "splits.json"
IMAGE_GEOMETRY = "image_geometry.csv"  # per patient and image: format, crop box, mm/pixel, frames, seconds, sha256
COHORT = "cohort"
TFDS = "tfds"
CHECKPOINTS = "checkpoints"
HISTORY = "metrics.jsonl"
TENSORBOARD = "tb"
TRAIN_LOG = "train.log"  # library messages kept off the console (orbax)
PREDICTIONS = "predictions.json"
INTENSITY_REFERENCE = "intensity_reference.json"
LOCK = ".lock"  # one writer at a time (lnm_jax.run_lock)
LOCK_OWNER = "lock_owner.json"
# the run's output folders (evaluate's, gradcam's); everything else in a run folder is its state
EVALUATION_PREFIX = "eval_"
GRADCAM_PREFIX = "gradcam_"

# Inside an evaluation folder.
METRICS = "metrics.json"
PREDICTIONS_CSV = "predictions.csv"
ROC = "roc.png"
RELIABILITY = "reliability.png"
DECISION_CURVE = "decision_curve.png"
CONVERGENCE = "convergence.png"  # the run's metrics.jsonl, epoch by epoch
AVAILABILITY_JSON = "availability.json"
AVAILABILITY_MD = "availability.md"

# Inside a Grad-CAM folder.
CAM_PATIENTS = "patients"
CAM_GRID_CORRECT = "grid_correct.png"
CAM_GRID_INCORRECT = "grid_incorrect.png"
# patients without a label (new ones), by the class predicted at the threshold
CAM_GRID_PREDICTED_POSITIVE = "grid_predicted_positive.png"
CAM_GRID_PREDICTED_NEGATIVE = "grid_predicted_negative.png"
CAM_INDEX = "index.csv"
CAM_ARRAYS = "cams.npz"  # every map as an array: '<patient>/<branch>' [S, S] in [0, 1], '<patient>/<branch>_raw'
CAM_SCORES = "cam_scores.json"  # the maps scored against the lesion masks (lnm_jax.explain.scores)
CAM_SOURCE = "checkpoint.json"  # the run, checkpoint, epoch and state digest the maps were computed with

# The records in a run's output folder that name the checkpoint and epoch they were computed
# for (each a JSON object with "checkpoint" and "epoch"): evaluate's, availability's, gradcam's.
OUTPUT_RECORDS = (METRICS, AVAILABILITY_JSON, CAM_SOURCE)
SUPERSEDED = ".epoch-"  # eval_latest.epoch-2: the folder of a checkpoint training has since replaced

# Inside a synthetic cohort folder (written by data.synthetic).
MANIFEST = "manifest.csv"
GENERATOR = "generator.json"
TRUTH = "truth.csv"

# A protocol folder (lnm-jax reproduce).
RESULTS = "results.json"
REPORT = "report.md"
PROTOCOL_RUNS = "runs"
PROTOCOL_PRETRAIN = "pretrain"  # reproduce with protocol.pretrain: the backbone of each split


def run_holding(path: Path | str) -> Path | None:
    """The nearest run folder (one holding ``config.json`` and ``run_info.json``) that is
    ``path`` or lies above it, resolved; None when there is none."""
    path = Path(path).resolve()
    return next((f for f in (path, *path.parents) if (f / CONFIG).is_file() and (f / RUN_INFO).is_file()), None)


def refuse_nested_run(path: Path | str, flag: str = "--workdir") -> None:
    """:class:`~lnm_jax.fileio.OutputPathError` where ``path``, a folder to make a run in, lies
    inside a trained run's folder (one holding ``checkpoints/``; a protocol folder, whose command
    places its own runs, has none): a run made in ``checkpoints/best/7`` is deleted by the host's
    next save (orbax keeps one step there), one made among its records is taken for the host's
    state (helper-81: both accepted, the host then unreadable)."""
    path = Path(path).resolve()
    host = run_holding(path.parent) if path.parent != path else None
    if host is None or not (host / CHECKPOINTS).is_dir():
        return
    state = state_holding(path)
    inner = state is not None and state[1] is not None and state[1] != path  # (path itself: made by a lock)
    part = f"lies in {state[1]}, part of" if inner else "lies inside"
    raise OutputPathError(
        f"{flag} {path} {part} the run folder {host} (its checkpoints, records and evaluations): a run made there "
        "would be taken for that run's files; choose a folder outside it"
    )


def state_holding(path: Path | str) -> tuple[Path, Path | None] | None:
    """``(run folder, entry)``: ``path`` is a run folder (entry None), or is or lies in that
    entry of the nearest run folder's state above it (:meth:`RunFiles.state`); None
    otherwise. How every ``--out`` is kept out of a run's checkpoints, records, logs and
    cohort, whichever command writes it."""
    path = Path(path).resolve()
    if (folder := run_holding(path)) is None:
        return None
    if folder == path:
        return folder, None
    entry = next((e for e in RunFiles(folder).state() if path == e or path.is_relative_to(e)), None)
    return (folder, entry) if entry is not None else None


def misplaced_output(path: Path | str, run: Path | str | None) -> str | None:
    """Why ``path``, a place outside every run folder's state (:func:`state_holding`), may not
    take a command's output, or None: inside a run folder, outputs live in its own
    ``eval_*`` / ``gradcam_*`` folders, which record the checkpoint they were computed from
    and which a resume moves aside (:meth:`RunFiles.outputs_of`), and only the command that
    reads that run (``run``) writes them. A new name beside the run's records (it then counted
    as the run's state, and the same command was refused the next time; a resume left it
    describing a replaced checkpoint) and another run's evaluation folder (evaluate --workdir A
    --out B/eval_best replaced B's) are refused."""
    path = Path(path).resolve()
    if (folder := run_holding(path)) is None or folder == path or not (folder / CHECKPOINTS).is_dir():
        return None  # (no checkpoints: a protocol folder, whose command places its own outputs)
    top = path.relative_to(folder).parts[0]
    name = temporary_name(top) or top  # the folder an atomic write is filling in its place
    ours = run is not None and Path(run).resolve() == folder
    if not name.startswith((EVALUATION_PREFIX, GRADCAM_PREFIX)):
        outputs = f"{EVALUATION_PREFIX}*/{GRADCAM_PREFIX}*"
        where = f"lies in the run folder {folder}, whose outputs go in its {outputs} folders"
        if not ours:  # (helper-60: an exported model's predict was told to name an eval_ folder, then refused it)
            return f"{where}, written only by a command that reads that run: choose a path outside the run"
        return (
            f"{where} (a resume moves them aside when it replaces their checkpoint): name such a folder "
            f"({EVALUATION_PREFIX}<name> for an evaluation, {GRADCAM_PREFIX}<name> for maps), or a path outside the run"
        )
    if not ours:
        return f"lies in {folder / name}, an output folder of the run {folder}: choose a path outside that run"
    return None


def superseded_name(folder: Path, epoch: int) -> Path:
    """Where an output folder of epoch ``epoch``'s checkpoint goes once training has replaced
    that checkpoint: ``eval_latest.epoch-2`` (``eval_latest.epoch-2.1`` ... when taken)."""
    name = short_name(folder.name)  # (helper-111: a 250-byte eval_ name's resume had failed)
    target = folder.with_name(f"{name}{SUPERSEDED}{epoch}")
    n = 0
    while target.exists():
        n += 1
        target = folder.with_name(f"{name}{SUPERSEDED}{epoch}.{n}")
    return target


def gradcam_name(split: str) -> str:
    """The name of a split's Grad-CAM folder (in a run folder, or in an evaluation folder)."""
    return f"{GRADCAM_PREFIX}{split}"


@dataclasses.dataclass(frozen=True)
class RunFiles:
    """Paths inside one run folder."""

    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    @property
    def config(self) -> Path:
        return self.root / CONFIG

    @property
    def run_info(self) -> Path:
        return self.root / RUN_INFO

    @property
    def splits(self) -> Path:
        return self.root / SPLITS

    @property
    def image_geometry(self) -> Path:
        return self.root / IMAGE_GEOMETRY

    @property
    def cohort(self) -> Path:
        return self.root / COHORT

    @property
    def tfds(self) -> Path:
        return self.root / TFDS

    @property
    def checkpoints(self) -> Path:
        return self.root / CHECKPOINTS

    @property
    def history(self) -> Path:
        return self.root / HISTORY

    @property
    def tensorboard(self) -> Path:
        return self.root / TENSORBOARD

    @property
    def train_log(self) -> Path:
        return self.root / TRAIN_LOG

    @property
    def predictions(self) -> Path:
        return self.root / PREDICTIONS

    @property
    def lock(self) -> Path:
        return self.root / LOCK

    @property
    def lock_owner(self) -> Path:
        return self.root / LOCK_OWNER

    @property
    def intensity_reference(self) -> Path:
        return self.root / INTENSITY_REFERENCE

    def evaluation(self, checkpoint: str) -> Path:
        return self.root / f"{EVALUATION_PREFIX}{checkpoint}"

    def calibration(self, checkpoint: str) -> Path:
        return self.root / f"calibration_{checkpoint}.json"

    def gradcam(self, split: str) -> Path:
        return self.root / gradcam_name(split)

    def outputs_of(self, checkpoint: str) -> dict[Path, int]:
        """The run's output folders (``eval_*``, ``gradcam_*``; none already moved aside) with
        a record (:data:`OUTPUT_RECORDS`) computed for ``checkpoint``: folder -> the epoch it
        names (the oldest, where its records disagree). A record that cannot be read is
        skipped: the folder is left to the command that reads it."""
        found: dict[Path, int] = {}
        outputs = (EVALUATION_PREFIX, GRADCAM_PREFIX)
        if not self.root.is_dir():
            return found
        for folder in sorted(self.root.iterdir()):
            if not folder.is_dir() or not folder.name.startswith(outputs) or SUPERSEDED in folder.name:
                continue
            for name in OUTPUT_RECORDS:
                try:
                    doc = read_json(folder / name)
                except (OSError, ValueError):
                    continue
                epoch = doc.get("epoch")
                if doc.get("checkpoint") == checkpoint and isinstance(epoch, int) and not isinstance(epoch, bool):
                    found[folder] = min(epoch, found.get(folder, epoch))
        return found

    def state(self) -> list[Path]:
        """Every entry of the run folder but its evaluation and Grad-CAM folders (and the
        temporary folders an output is written into before it is renamed): the records,
        checkpoints, cohort and logs that no command's ``--out`` may replace or lie inside (an
        output folder inside ``checkpoints/best`` is taken by orbax for a step, and every later
        read of the run fails). Empty when the folder does not exist."""
        if not self.root.is_dir():
            return []
        outputs = (EVALUATION_PREFIX, GRADCAM_PREFIX)
        return sorted(
            p
            for p in self.root.iterdir()
            if not (p.is_dir() and (p.name.startswith(outputs) or is_temporary_output(p)))
        )
