"""A trained model described for a reader: ``metadata.json`` (machine-readable, after the
MONAI-bundle convention) and ``model_card.md``, written by ``lnm-jax export`` and ``evaluate``.

Everything in the card is read from the live run (config, cohort, split, restored checkpoint)
and, where ``evaluate`` ran, its metrics: nothing is typed in by hand."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import numpy as np
from ml_collections import ConfigDict

from lnm_jax import names, provenance
from lnm_jax import run_files as F
from lnm_jax.config import base_config, frozen_backbone_epochs, norm_is_papers
from lnm_jax.data.pixels.clips import PHASE_LEVEL
from lnm_jax.data.pixels.sources import Framing
from lnm_jax.evaluation.intensity import OUTLIER_Z
from lnm_jax.evaluation.summary import KEYS as SUMMARY_KEYS
from lnm_jax.evaluation.summary import threshold_text
from lnm_jax.exported import METADATA, MODEL_CARD, at_bound
from lnm_jax.fileio import SEAL_KEY, DamagedFileError, check_seal, is_real, read_json, warn_once, write_json, write_text
from lnm_jax.markdown import inline
from lnm_jax.memo import cache_where_hashable
from lnm_jax.portable import preprocessing_digest
from lnm_jax.preflight import availability_patterns
from lnm_jax.provenance import commit_text, uncommitted_text
from lnm_jax.run import Run, trained_checkpoint, zero_batch
from lnm_jax.run_record import read_run_info
from lnm_jax.task import Task
from lnm_jax.training.checkpoint import CONFIG_KEY, DIGEST_KEY, PREPROCESSING_KEY
from lnm_jax.training.steps import resolve_pos_weight

SCHEMA = "lnm_jax model card 2"  # the layout of metadata.json (MONAI bundle and Hugging Face card fields)
# the summary keys the card's metrics table copies (the loss left out; calibration has its own table)
METRIC_KEYS = tuple(k for k in SUMMARY_KEYS if k not in ("loss", "calibration"))
SYNTHETIC_LIMIT = "Trained on a synthetic cohort: a demonstration of the pipeline, not a model of patients."

LIMITS = [
    "Trained on one cohort: its performance elsewhere (other scanners, presets, centres, populations) is unknown "
    "until it is tested there.",
    "Images must be prepared as in training (the export's lnm_runtime does it): the scan region, RGB in [0, 1], "
    "framed and resized as described under Preprocessing.",
    # (helper-92: the card said nothing of what predict does with an input unlike training's)
    f"Out-of-distribution input: predict flags a patient (column intensity_outlier, naming the input) whose "
    f"image's mean or SD lies more than {OUTLIER_Z:g} robust SDs from the training split's median and outside its "
    "range, and scores it all the same (its probability an extrapolation). Nothing else is checked: another "
    "scanner, depth or pathology within those intensities passes unflagged.",
]
CALIBRATED = "A calibration temperature was fitted on validation"  # how the sentence below starts
# (helper-99: "Probabilities are calibrated" whatever the test split said; the demo's T made test Brier worse)
CALIBRATED_TEXT = (
    CALIBRATED + " (T = {t:.3g}, {n} patients, in-sample there): prob_calibrated = sigmoid(logit / T) is not "
    "calibrated by that alone; the calibration table gives ECE, Brier, intercept and slope before and after T on "
    "each split{test}."
)
PREVALENCE_LIMIT = (
    "Probabilities and the 0.5 and Youden cut-offs carry the training cohort's prevalence ({p}): at a site with "
    "another, the mean predicted risk moves away from the observed rate, and a cut-off's predictive values and "
    "net benefit change (its sensitivity and specificity change with the case mix); re-fit the intercept and "
    "choose the cut-off on that site's own labelled patients (lnm-jax external-validation) before acting on them."
)


def calibration_limit(temperature: float | None, calibration: dict, n_val: int) -> str:
    """The card's limit on calibration: no temperature fitted, one at its search bound, or one
    fitted on ``n_val`` validation patients with what it changed on test (``calibration``: the
    summaries' calibration entries by split)."""
    if temperature is None:
        return UNCALIBRATED
    if at_bound(temperature):
        return CALIBRATION_AT_BOUND.format(t=temperature)
    test = ""
    if (c := calibration.get("test")) and "brier_temperature_scaled" in c:
        slopes = (c.get("slope"), c.get("slope_temperature_scaled"))
        test = f"; on test it moved Brier {c['brier']:.3f} -> {c['brier_temperature_scaled']:.3f} and " + (
            f"the calibration slope {_fmt(slopes[0])} -> {_fmt(slopes[1])}"
            if all(_fmt(s) != "-" for s in slopes)  # (helper-114: "the calibration slope - -> -")
            else "left the calibration slope unestimated (a test split of one class, logits that separate the "
            "classes or hold one value, a fit that does not converge, or an evaluation that did not record it)"
        )
    return CALIBRATED_TEXT.format(t=temperature, n=n_val, test=test)


CALIBRATION_AT_BOUND = (  # (helper-92: the card had said "calibrated" beside evaluate's "do not use it")
    "The calibration temperature stopped at its search bound (T = {t:.3g}; the warnings say why): prob_calibrated "
    "is no calibration; predict writes no such column, and the exported model returns it as NaN."
)
UNCALIBRATED = (
    "Probabilities are not calibrated: no temperature is fitted for this checkpoint (prob_calibrated = prob); "
    "run lnm-jax evaluate to fit one on validation."
)


def unscored_cams(config, evaluated: bool) -> str:
    """The card's limit where no Grad-CAM score is recorded, saying why: the model takes no
    image, reads CEUS clips (Grad-CAM explains still images), has not been evaluated (evaluate
    scores the maps where the test split has lesion masks), or its test split has no masks."""
    inputs = names.parse_modalities(config.modalities)
    if not any(b in inputs for b in names.IMAGE_INPUTS):
        why = "it takes no image"
    elif config.data.clip_frames > 1 and names.CEUS in inputs:
        why = "it reads CEUS clips; Grad-CAM explains still images only"
    elif not evaluated:
        why = "it has not been evaluated: lnm-jax evaluate scores them where the test split has lesion masks"
    else:
        why = "no lesion masks in its test split"
    return f"Grad-CAM maps of this model have not been scored against lesion outlines ({why})."


OUTPUTS = {
    "logit": {"shape": ["B"], "dtype": "float32", "range": "(-inf, inf)", "meaning": "log-odds of the positive class"},
    "prob": {"shape": ["B"], "dtype": "float32", "range": "[0, 1]", "meaning": "sigmoid(logit)"},
    "prob_calibrated": {
        "shape": ["B"],
        "dtype": "float32",
        "range": "[0, 1]",
        "meaning": "sigmoid(logit / T), T fitted on validation (= prob when none was fitted; NaN where T stopped at "
        "its search bound)",
    },
}
RESIZE = (
    "antialiased bilinear (triangle kernel widened by the downscale factor; the weights of tf.image.resize(..., "
    "antialias=True) and jax.image.resize), as two per-axis weight matrices: lnm_jax/data/pixels/decode.py "
    "(lnm_runtime/data/pixels/decode.py in an export)"
)
DECODE = (
    "PNG/JPEG by Pillow with EXIF orientation, an ICC profile, PNG sBIT and gAMA applied; 8-bit modes / 255, "
    "16-bit gray / 65535, gray replicated to RGB, transparent pixels composited over black; DICOM by pydicom "
    "(VOI/palette/YBR handled, header-checked), cropped to its SequenceOfUltrasoundRegions; clips: of the "
    "time-intensity curve (each frame's mean pixel value), the peak frame (T = 1), or T frames spread evenly (in "
    "seconds where the frames' times are known) over the enhancement phase, from the first to the last frame at "
    f"or above {PHASE_LEVEL:.0%} of the rise from the first frame to the peak: sample_indices in "
    "lnm_jax/data/pixels/clips.py (lnm_runtime/data/pixels/clips.py in an export)"
)


def input_spec(config) -> dict[str, dict]:
    """The model's inputs: name -> shape (``B`` = batch) and dtype."""
    s, t = config.data.image_size, config.data.clip_frames
    spec = {}
    for m in names.parse_modalities(config.modalities):
        if m == names.US_LNM:
            spec[m] = {"shape": ["B"], "dtype": "float32"}
        else:
            frames = [t] if m == names.CEUS and t > 1 else []
            spec[m] = {"shape": ["B", *frames, s, s, 3], "dtype": "float32"}
        spec[names.has(m)] = {"shape": ["B"], "dtype": "bool"}
    return spec


def _number_or_null(x) -> bool:
    return x is None or is_real(x)


def _pair(x) -> bool:
    """A CI as a record holds it: [lo, hi], each a number or null."""
    return isinstance(x, list) and len(x) == 2 and all(map(_number_or_null, x))


def evaluation_problem(doc: dict) -> str | None:
    """What is wrong with ``evaluate``'s metrics as a card reads them (one phrase, or None):
    ``splits`` an object of per-subset objects whose :data:`METRIC_KEYS` are numbers (or null),
    pairs of them, or objects of them (or of pairs); ``calibration`` such an object or null; ``warnings`` a
    list of strings; ``single_inputs`` and ``cam_scores`` objects or null; the validation
    threshold and temperature numbers (or null)."""
    splits = doc.get("splits")
    if not isinstance(splits, dict):
        return f"'splits' is {splits!r}, not an object"
    for s, m in splits.items():
        if not isinstance(m, dict):
            return f"'splits'.'{s}' is {m!r}, not an object"
        for k in (*METRIC_KEYS, "calibration"):
            v = m.get(k)
            table = isinstance(v, dict) and all(_number_or_null(x) or _pair(x) for x in v.values())
            if not (_number_or_null(v) or _pair(v) or table) or (k == "at_0.5" and not table):
                return f"'splits'.'{s}'.'{k}' is {v!r}"
    for k in ("youden_threshold_from_val", "temperature_from_val"):
        if not _number_or_null(doc.get(k)):
            return f"'{k}' is {doc[k]!r}, not a number"
    if not (doc.get("youden_threshold_ci") is None or _pair(doc["youden_threshold_ci"])):
        return f"'youden_threshold_ci' is {doc['youden_threshold_ci']!r}, not null or [lo, hi]"
    if not isinstance(doc.get("temperature_at_bound"), bool | None):
        return f"'temperature_at_bound' is {doc['temperature_at_bound']!r}, not true or false"
    warnings = doc.get("warnings", [])
    if not isinstance(warnings, list) or not all(isinstance(w, str) for w in warnings):
        return f"'warnings' is {warnings!r}, not a list of lines"
    for k in ("single_inputs", "cam_scores"):
        if not isinstance(doc.get(k), dict | None):
            return f"'{k}' is {doc[k]!r}, not an object"
    return None


def _evaluation(run: Run, checkpoint: str, meta: dict, strict: bool = False) -> dict | None:
    """``evaluate``'s metrics of this checkpoint, or None when there are none or they were
    computed for another state of it (training resumed since): stale numbers never reach a card.
    Checked against their seal (helper-60: a test AUC and a decision threshold edited by hand
    had reached an export's card and metadata); ``strict`` (export): an unsealed one refused."""
    path = run.files.evaluation(checkpoint) / F.METRICS
    if not path.is_file():
        return None
    doc = read_json(path)
    check_seal(doc, path, "run lnm-jax evaluate again to rewrite it", strict=strict)
    if problem := evaluation_problem(doc):
        raise DamagedFileError.edited(path, problem, "run lnm-jax evaluate again to rewrite it")
    stored = doc.get(DIGEST_KEY)
    if doc.get("epoch") != meta.get("epoch") or (stored is not None and stored != meta.get(DIGEST_KEY)):
        if strict:  # (helper-62: an export's card said "not evaluated" of a run evaluated at another state, unsaid)
            warn_once(
                f"{path} was computed for another state of the '{checkpoint}' checkpoint (epoch {doc.get('epoch')}, "
                f"now {meta.get('epoch')}): left out of the card and metadata; run {run.evaluate_command(checkpoint)}",
                key=("stale evaluation", path),
            )
        return None
    return doc


def _head(config, inputs) -> str:
    m = config.model
    flag = " (the flag as -1/+1)" if names.US_LNM in inputs and m.get("flag_encoding", "raw") == "centred" else ""
    absent = "; a missing input replaced by a learned 'absent' embedding, availability indicators added" * bool(
        m.missing_inputs
    )
    if m.get("fusion", "concat") == "late":
        return (
            "late fusion: each input its own logit (Dense(1) on its pooled feature" + flag + "), combined by a "
            "learned Dense(1) over those logits (initialised to their sum)" + absent + "; sigmoid"
        )
    heads = "; per-input Dense(1) heads trained beside it (auxiliary losses)" if m.get("input_heads") else ""
    return "the paper's head: one Dense(1) over the concatenated pooled features" + flag + absent + heads + "; sigmoid"


def _feature_sizes(run: Run, state) -> dict[str, int]:
    """Each input's feature width as it enters the fusion (the pooled backbone output; 1 for
    the flag), from the model's shapes (``jax.eval_shape``: nothing is computed)."""
    batch = {k: v[:1] for k, v in zero_batch(run.config).items() if k in names.STEP_KEYS}
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    shapes = jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype), (variables, batch))
    widths = _pooled_widths(run.model, *_frozen(shapes))
    return {m: 1 if m == names.US_LNM else widths[m] for m in names.parse_modalities(run.config.modalities)}


def _frozen(shapes) -> tuple:
    """A pytree of ShapeDtypeStructs as (its structure, its leaves' shapes and dtypes): hashable."""
    leaves, tree = jax.tree.flatten(shapes)
    return tree, tuple((tuple(x.shape), str(x.dtype)) for x in leaves)


@cache_where_hashable(maxsize=16)  # (a model with an unhashable field: traced for its card alone)
def _pooled_widths(model, tree, leaves: tuple) -> dict[str, int]:
    """The pooled feature width of each image input of ``model`` for inputs of these shapes; one
    trace per model and shapes in a process (a card is written by evaluate, export and reproduce:
    the model traced each time, 47 times in the test suite)."""
    variables, batch = jax.tree.unflatten(tree, [jax.ShapeDtypeStruct(s, d) for s, d in leaves])
    out = jax.eval_shape(lambda v, b: model.apply(v, b, train=False), variables, batch)
    return {m: int(v["pooled"].shape[-1]) for m, v in out.items() if isinstance(v, dict) and "pooled" in v}


NO_RUN_INFO = "the run folder has no run_info.json"
UNSEALED_RUN_INFO = (
    f"run_info.json holds no {SEAL_KEY} (written before records were sealed, or its seal deleted): its versions "
    "and commit are not verified, so an export does not state them"
)


def _training_environment(run: Run, strict: bool = False) -> tuple[dict | None, str | None]:
    """(the training process's provenance, or None; why it is not stated, or None): from
    ``run_info.json`` (versions, devices, commit), not this process's, since a card describes
    how the weights were made. Checked against its seal (an edited one refused); ``strict``
    (``export``): one without its seal is not stated, as unverified (the card says why)."""
    path = run.files.run_info
    if not path.is_file():
        return None, NO_RUN_INFO
    info = read_run_info(path)
    if strict and SEAL_KEY not in info:
        return None, UNSEALED_RUN_INFO
    # source_sha256: what tells code apart where no commit is recorded (an installed wheel; helper-117)
    keep = ("created", "python", "platform", "cpu", "backend", "device_kind", "device_count", "packages", "git")
    keep += ("source_sha256",)
    return {k: info[k] for k in keep if k in info}, None


def _hyperparameters(config) -> dict:
    t, m = config.train, config.model
    return {
        "optimizer": "AdamW" if t.get("weight_decay", 0.0) else "Adam",
        "learning_rate": t.learning_rate,
        "backbone_lr_scale": t.get("backbone_lr_scale", 1.0),
        "weight_decay": t.get("weight_decay", 0.0),
        "batch_size": t.batch_size,
        "epochs": t.epochs,
        "early_stop_patience": t.early_stop_patience,
        "plateau": t.plateau.to_dict(),
        "loss": "binary cross-entropy on the logit"
        + (f" + {t.aux_loss_weight} x the per-input heads' BCE" if t.get("aux_loss_weight", 0.0) else "")
        + (
            f" + {t.lesion_loss_weight} x the lesion head's BCE + soft Dice against the lesion masks"
            if t.get("lesion_loss_weight", 0.0)
            else ""
        ),
        "pos_weight": t.get("pos_weight", 1.0),
        "freeze_backbone_epochs": frozen_backbone_epochs(config),
        "augmentation": config.data.augment.to_dict(),
        "modality_dropout": m.get("modality_dropout", 0.0),
        "init_from": m.get("init_from") or names.RANDOM_INIT,
        "dtype": m.dtype,
        "seed": config.seed,
    }


def _trained_config(run: Run, meta: dict):
    """The config the run's training last saved a checkpoint with (its newest checkpoint's
    record, else ``meta``'s, the card's checkpoint), where ``config.json`` may differ: its
    fields that may change on a resume (``train.epochs``, ``train.early_stop_patience``) are
    not checked against the checkpoints, and one edited by hand had reached the card
    (helper-81). ``config.json`` where no checkpoint records one (saved before they did)."""
    newest = trained_checkpoint(run.files)
    recorded = (newest[0] if newest else meta).get(CONFIG_KEY) or meta.get(CONFIG_KEY)
    return ConfigDict(recorded) if recorded else run.config


def synthetic(config) -> bool:
    """Whether the run trained on a synthetic cohort: the embedded one, or a manifest that
    ``lnm-jax synth`` wrote (its generator.json beside it)."""
    manifest = config.data.manifest
    return not manifest or (Path(manifest).parent / F.GENERATOR).is_file()


SYNTHETIC_LABELS = "the synthetic generator (lnm_jax/data/synth): drawn with the images, no patients"


def described_task(task: Task, is_synthetic: bool) -> Task:
    """``task`` as a card or a report describes it: on a synthetic cohort its labels and images
    are the generator's, whatever the task says they stand for (helper-104: the reproduce report
    said "label from pathology after neck dissection" of the synthetic cohort). A task described
    so already is returned as it is (a report reads a ``results.json`` that records it)."""
    if not is_synthetic or task.label_source == SYNTHETIC_LABELS:
        return task
    return dataclasses.replace(
        task, label_source=SYNTHETIC_LABELS, inputs={k: f"synthetic {v}" for k, v in task.inputs.items()}
    )


# said where a cohort of the user's own was trained with the task's description left as this
# package's default (helper-60: a card stated "established by pathology after neck dissection" of
# a cohort nobody had described)
DEFAULT_TASK_LIMIT = (
    "The task's description above (the label, its source, the inputs, the intended use) is this package's default "
    "for the paper's task (config task.*), not one given for this cohort: where its labels or images are otherwise, "
    "train with task.* set (docs/export.md)."
)


def _default_task(config) -> bool:
    """Whether ``config``'s task description is :func:`lnm_jax.config.base_config`'s, untouched."""
    return config.task.to_dict() == base_config().task.to_dict()


def training_spacing(run, inputs) -> dict | None:
    """Per image input the model takes, what the training split's images say of their physical
    scale (``image_geometry.csv``'s ``mm_per_pixel_x``, from DICOM regions or the manifest's
    ``<input>_mm_per_pixel``): ``{images, with_spacing, mm_per_pixel: [min, median, max] or
    None}`` of the scan region before its resize; None for a run without the record. A new
    site's images at another depth show the lesion at another size in pixels, which the card
    had left unsaid (stop 81's new-site trial)."""
    rows = run.image_geometry()
    if rows is None or run.split is None:
        return None
    train = set(run.split.train)
    out = {}
    for m in (i for i in inputs if i in names.IMAGE_INPUTS):
        mine = [r for r in rows if r["input"] == m and r[names.PATIENT_ID] in train]
        mm = sorted(float(r["mm_per_pixel_x"]) for r in mine if r.get("mm_per_pixel_x"))
        out[m] = {
            "images": len(mine),
            "with_spacing": len(mm),
            "mm_per_pixel": [mm[0], float(np.median(mm)), mm[-1]] if mm else None,
        }
    return out


def normalisation_source(config) -> str:
    """Where a run's ``data.norm`` came from, in the card's words (``data.norm_from``)."""
    if config.data.get("norm_from", "config") == "train":
        return "of the training split's own pixels (data.norm_from='train'), computed when the run started"
    if norm_is_papers(config):
        return "the values the package ships for the paper's cohort (names.PAPER_NORM), not this cohort's"
    return "as set in the config (data.norm; e.g. from lnm-jax norm-stats)"


def metadata(
    run: Run,
    checkpoint: str = "best",
    evaluation: dict | None = None,
    temperature: float | None = None,
    strict: bool = False,
) -> dict:
    """The machine-readable description of ``run``'s ``checkpoint``: every field read from the
    run (config, ``run_info.json``, cohort, split, checkpoint, ``evaluate``'s metrics).
    ``temperature``: the calibration temperature just fitted (``evaluate``, which builds the
    card before writing anything), instead of the one stored in the run folder. ``strict``
    (``export``): the stored metrics and temperature are refused without their seal."""
    config = run.config
    task = described_task(Task.from_config(config), synthetic(config))
    state, meta = run.restore(checkpoint)
    evaluation = evaluation or _evaluation(run, checkpoint, meta, strict)
    labels = [p.lnm for p in run.cohort.patients if p.lnm is not None]
    temperature = run.temperature(checkpoint, strict) if temperature is None else temperature
    inputs = list(names.parse_modalities(config.modalities))
    metrics, calibration = {}, {}
    if evaluation:
        for s, m in evaluation["splits"].items():
            metrics[s] = {k: m.get(k) for k in METRIC_KEYS}
            calibration[s] = m.get("calibration")
    params = state.params
    environment, unstated = _training_environment(run, strict)
    now = {
        "git": provenance.git_commit(),
        "preprocessing_sha256": preprocessing_digest(),
        "source_sha256": provenance.source_digest(),
    }
    return {
        "schema": SCHEMA,
        "name": config.name,
        "version": f"epoch {meta['epoch']} ({checkpoint} checkpoint by validation AUC)",
        # the checkpoint's arrays, as predict's CSV names them in every row (names.MODEL_STATE_COLUMN)
        names.STATE_DIGEST: meta.get(names.STATE_DIGEST),
        "task": {**task.to_dict(), "type": f"binary classification: {task.prob} per patient"},
        "architecture": {
            "inputs": inputs,
            "backbone": config.model.backbone,
            "width": config.model.width,
            "branches": "one backbone per image input, not shared",
            "feature_sizes": _feature_sizes(run, state),
            "fusion": config.model.get("fusion", "concat"),
            "head": _head(config, inputs),
            "missing_inputs": bool(config.model.missing_inputs),
            "temporal_pool": config.model.temporal_pool if config.data.clip_frames > 1 else None,
            # an auxiliary 1x1-conv lesion-segmentation head at this layer of each image branch,
            # trained on the masks; not part of the prediction
            "lesion_head": config.model.get("lesion_head", "") or None,
            "parameters": int(sum(np.size(x) for x in jax.tree.leaves(params))),
        },
        "inputs": input_spec(config),
        "outputs": OUTPUTS,
        "preprocessing": {
            "image_size": config.data.image_size,
            "clip_frames": config.data.clip_frames,
            "value_range": [0.0, 1.0],
            "decode": DECODE,
            # how images are cropped and scaled before the resize (lnm_jax.data.pixels.sources.Framing)
            "framing": dataclasses.asdict(Framing.from_config(config.data)),
            "resize": RESIZE,
            "normalisation": {  # the model's image inputs' (helper-91: an input it lacks had been listed)
                k: {"mean": list(v["mean"]), "std": list(v["std"])}
                for k, v in config.data.norm.to_dict().items()
                if k in inputs
            },
            "normalisation_applied": "inside the exported program: (x - mean) / std, a missing image set to zero",
            "normalisation_from": normalisation_source(config),
            # trained with a missing image fed as zeros (data.zero_fill_missing): predict does the same
            "zero_fill_missing": bool(config.data.get("zero_fill_missing", False)),
        },
        # kept at the top level too: exports written before the preprocessing section read them there
        "image_size": config.data.image_size,
        "clip_frames": config.data.clip_frames,
        "framing": dataclasses.asdict(Framing.from_config(config.data)),
        "thresholds": {
            "default": 0.5,
            "youden_from_val": evaluation.get("youden_threshold_from_val") if evaluation else None,
            "youden_ci": (evaluation or {}).get("youden_threshold_ci"),
        },
        "calibration_temperature": temperature,
        "calibration": calibration,
        # the training split's image intensities, which predict checks new patients against
        "intensity_reference": run.intensity_reference(strict),
        "training_cohort": {
            "manifest": config.data.manifest or "embedded synthetic cohort",
            "manifest_sha256": run.cohort.sha256,
            "patients": len(run.cohort),
            "positive": int(sum(labels)),
            "prevalence": float(np.mean(labels)) if labels else None,
            "availability_patterns": dict(availability_patterns(run.cohort)),
            "split": {s: len(run.split.subset(s)) for s in ("train", "val", "test")},
            # each subset's positives (helper-104: the training split's were nowhere)
            "split_positive": {
                s: sum(int(run.cohort.by_id()[i].lnm or 0) for i in run.split.subset(s))
                for s in ("train", "val", "test")
            },
            "split_seed": config.data.split.seed,
            "synthetic": synthetic(config),
            "pixel_spacing": training_spacing(run, inputs),
        },
        "hyperparameters": {
            **_hyperparameters(_trained_config(run, meta)),
            "pos_weight_value": resolve_pos_weight(
                config.train.get("pos_weight", 1.0), [run.cohort.by_id()[i].lnm for i in run.split.subset("train")]
            ),
        },
        "single_inputs": (evaluation or {}).get("single_inputs"),
        "metrics": metrics,
        # how the bootstrap CIs were drawn (helper-92: the card gave neither count nor seed)
        "bootstrap": {"resamples": int(config.eval.bootstrap), "seed": int(config.eval.seed)},
        # test AUC per subgroup of the manifest's columns (lnm_jax.evaluation.subgroups)
        "subgroups": (evaluation or {}).get("subgroups"),
        # a synthetic cohort's ceiling (evaluate's Bayes-optimal reference), None elsewhere
        "bayes_auc": ((evaluation or {}).get("synthetic_reference") or {}).get("bayes_auc"),
        "warnings": (evaluation or {}).get("warnings", []),
        # Grad-CAM of the test split against the lesion masks (evaluate, where the cohort has them)
        "image_evidence": (evaluation or {}).get("cam_scores"),
        "limits": LIMITS
        + [calibration_limit(temperature, calibration, len(run.split.subset("val")))]
        + ([PREVALENCE_LIMIT.format(p=f"{np.mean(labels):.3f}")] if labels else [])
        + ([] if (evaluation or {}).get("cam_scores") else [unscored_cams(config, evaluation is not None)])
        + ([SYNTHETIC_LIMIT] if synthetic(config) else [])
        + ([DEFAULT_TASK_LIMIT] if not synthetic(config) and _default_task(config) else [])
        + _preprocessing_limits(meta.get(PREPROCESSING_KEY), (environment or {}).get("git"), now)
        + _evaluation_limits((evaluation or {}).get("evaluated_by"), now),
        "training_environment": environment,
        "evaluated_with": ((evaluation or {}).get("evaluated_by") or {}).get("git"),
        **({"training_environment_unstated": unstated} if unstated else {}),
        "packages": provenance.package_versions(),  # of the process that wrote this card
        "written_with": now,
    }


PREPROCESSING_CHANGED = (
    "The decoding and framing code of this card (lnm_runtime in an export) is not the code the model was trained with"
)
PREPROCESSING_UNRECORDED = (
    "Whether this card's decoding and framing code (lnm_runtime in an export) is the code the model was trained "
    "with is not recorded (a checkpoint from before that record)."
)


def _preprocessing_limits(recorded: str | None, was: dict | None, now: dict) -> list[str]:
    """The card's limit where the decoding and framing code of the process that writes it (the
    code an export carries, an evaluation reads with) is not the code the checkpoint was trained
    with (``recorded``: its sealed metadata's :data:`PREPROCESSING_KEY`, from
    :func:`lnm_jax.portable.preprocessing_digest`; helper-60: an export carried the code of a
    later commit, with uncommitted changes, and said only the training commit; helper-61: a
    record in the unsealed run_info.json could be edited), or where that is not recorded (a
    checkpoint from before the record). ``was``: the training's git record."""
    if recorded == now["preprocessing_sha256"]:
        return []
    if recorded is None:
        return [PREPROCESSING_UNRECORDED]
    git = now.get("git")
    if git and was and git["commit"] == was["commit"]:  # (helper-61: "trained at X, written at X")
        where = f" (both at commit {git['commit'][:12]}: its files changed since, uncommitted)"
    else:
        where = f" (trained at {commit_text(was)}, written at {commit_text(git)})" if git or was else ""
    return [f"{PREPROCESSING_CHANGED}{where}: a file may be read otherwise than in training."]


def _evaluation_limits(evaluated_by: dict | None, now: dict) -> list[str]:
    """The card's limit where its metrics, cut-offs and calibration were computed by other lnm-jax
    code than writes it (``evaluated_by``: the evaluation's sealed process record; helper-114:
    an export of a run evaluated by an earlier version said only the writer's commit, its Youden
    threshold described by a rule that version did not use)."""
    if not evaluated_by:
        return []
    then, source = evaluated_by.get("git"), evaluated_by.get("source_sha256")
    if source == provenance.source_digest():
        return []
    if source is None:  # an evaluation before the digest was kept: its commit, where both name one, tells
        git = now.get("git")
        if then and git and then.get("commit") == git.get("commit") and not (then.get("dirty") or git.get("dirty")):
            return []
        what = "by lnm-jax code this card cannot compare with its own (the evaluation recorded no source digest"
        what += f"; evaluated at {commit_text(then)}, written at {commit_text(git)})"
    elif then and now.get("git") and then.get("commit") == now["git"].get("commit"):  # (helper-116: X and X)
        what = f"by other lnm-jax code at this same {commit_text(then)} (its files or these differ: uncommitted "
        what += "changes)"
    else:
        what = f"by other lnm-jax code (evaluated at {commit_text(then)}, written at {commit_text(now.get('git'))})"
    return [
        f"The metrics, cut-offs and calibration on this card were computed {what}: run lnm-jax evaluate again for "
        "this version's."
    ]


def _fmt(x, spec=".3f") -> str:
    return "-" if x is None or (isinstance(x, float) and x != x) else format(x, spec)


def _spacing_text(spacing: dict | None) -> str:
    """The card's words for :func:`training_spacing` ('' where the run has no record)."""
    if not spacing:
        return ""
    parts = []
    for m, s in spacing.items():
        if s["mm_per_pixel"]:
            lo, mid, hi = s["mm_per_pixel"]
            parts.append(
                f"{m} {s['with_spacing']} of {s['images']} with a pixel spacing, {lo:.3g}-{hi:.3g} mm per pixel "
                f"(median {mid:.3g}) before the resize"
            )
        else:
            parts.append(f"{m} none of {s['images']} with a pixel spacing (their size in mm unknown)")
    return "; ".join(parts) + (
        "; a site imaging at another depth shows lesions at another size in pixels "
        "(data.field_of_view_mm resamples to one scale)"
    )


def _metric_rows(metrics: dict) -> list[str]:
    rows = [
        "| split | n | positive | AUC | 95% CI (DeLong) | 95% CI (bootstrap) | sens@0.5 | spec@0.5 | sens@Youden "
        "| spec@Youden |",
        "|---|---:|---:|---:|---|---|---:|---:|---:|---:|",
    ]
    for s, m in metrics.items():
        dl, bs = m.get("auc_ci_delong") or [None] * 2, m.get("auc_ci_bootstrap") or [None] * 2
        t5, ty = m["at_0.5"], m.get("at_threshold") or {}
        rows.append(
            f"| {s} | {m['n']} | {m['n_positive']} | {_fmt(m['auc'])} | {_fmt(dl[0])}-{_fmt(dl[1])} | "
            f"{_fmt(bs[0])}-{_fmt(bs[1])} | {_fmt(t5['sensitivity'])} | {_fmt(t5['specificity'])} | "
            f"{_fmt(ty.get('sensitivity'))} | {_fmt(ty.get('specificity'))} |"
        )
    return rows


def _with_ci(d: dict, k: str, sep: str = " to ") -> str:
    """``d[k]`` and its CI ``d[k + '_ci']`` as "v (lo{sep}hi)"; the value alone without a CI, "-"
    without either."""
    if f"{k}_ci" not in d:
        return _fmt(d.get(k))
    lo, hi = d[f"{k}_ci"] or [None, None]
    return f"{_fmt(d.get(k))} ({_fmt(lo)}{sep}{_fmt(hi)})"


def _cutoff_rows(metrics: dict) -> list[str]:
    """Each split at each cut-off: sensitivity, specificity, PPV and NPV with Wilson 95% CIs
    (PPV and NPV at that split's prevalence; - where not recorded)."""
    rows = [
        "| split | cut-off | sensitivity (CI) | specificity (CI) | PPV (CI) | NPV (CI) |",
        "|---|---:|---:|---:|---:|---:|",
    ]

    for s, m in metrics.items():
        for at in ("at_0.5", "at_threshold"):
            if t := m.get(at):
                cut = threshold_text(t["threshold"])
                cells = " | ".join(_with_ci(t, k, "-") for k in ("sensitivity", "specificity", "ppv", "npv"))
                rows.append(f"| {s} | {cut} | {cells} |")
    return rows


def _calibration_rows(calibration: dict) -> list[str]:
    """The calibration table: ECE, Brier, calibration intercept and slope (95% CI; Van Calster
    et al. 2016), each before and after the temperature (- where none is usable)."""
    rows = [
        "| split | ECE | Brier | intercept (CI) | slope (CI) | ECE after T | Brier after T | intercept after T "
        "| slope after T |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    for s, c in calibration.items():
        if c:
            rows.append(
                f"| {s} | {_fmt(c.get('ece'))} | {_fmt(c.get('brier'))} | {_with_ci(c, 'intercept')} "
                f"| {_with_ci(c, 'slope')} | {_fmt(c.get('ece_temperature_scaled'))} "
                f"| {_fmt(c.get('brier_temperature_scaled'))} | {_with_ci(c, 'intercept_temperature_scaled')} "
                f"| {_with_ci(c, 'slope_temperature_scaled')} |"
            )
    return rows


def _literal(x):
    """``x`` (a str, or lists and dicts of them) with every str as literal inline Markdown
    (:func:`lnm_jax.markdown.inline`)."""
    if isinstance(x, str):
        return inline(x)
    if isinstance(x, list):
        return [_literal(v) for v in x]
    if isinstance(x, dict):
        return {k: _literal(v) for k, v in x.items()}
    return x


def markdown(md: dict) -> str:
    """``model_card.md`` from :func:`metadata` (the sections of a Hugging Face model card:
    details, uses, how to start, training, evaluation, limits, environment, citation)."""
    a, c, pre, h = md["architecture"], md["training_cohort"], md["preprocessing"], md["hyperparameters"]
    t = _literal(md["task"])  # a config's free text, shown as written (helper-118: HTML, a table broken)
    framing = pre["framing"]
    export = md.get("export")
    lines = [
        f"# Model card: {inline(md['name'])}",
        "",
        f"{t['type']}: {t['name']}. {md['version']}"
        + (f"; state sha256 `{md[names.STATE_DIGEST]}`" if md.get(names.STATE_DIGEST) else "")
        + ".",
        "",
        *(
            [
                "**A synthetic demonstration, not a clinical model:** trained and evaluated on a synthetic cohort "
                "(lnm_jax/data/synth); its numbers measure the generator's settings"
                + (
                    f" (the generator's Bayes-optimal AUC for these inputs: {_fmt(md['bayes_auc'])})"
                    if md.get("bayes_auc") is not None
                    else ""
                )
                + ", not skill on patients.",
                "",
            ]
            if c.get("synthetic")
            else []
        ),
        "## Model details",
        f"- Task: {t['name']}; label {t['label']} ({t['positive']} = 1, {t['negative']} = 0), established by "
        f"{t['label_source']}"
        # (helper-104: the caveat came 93 lines below the claim)
        + (
            " (this package's default description, not stated for this cohort: see Limits)"
            if DEFAULT_TASK_LIMIT in md["limits"]
            else ""
        )
        + ".",
        f"- Architecture: inputs {', '.join(a['inputs'])}; "
        + (
            f"{a['backbone']} (width {a['width']}) per image input, {a['branches'].split(', ')[1]}; pooled features "
            if set(a["inputs"]) & set(names.IMAGE_INPUTS)
            else "no image input; features "  # the flag alone (helper-89: a backbone had been named)
        )
        + ", ".join(f"{k} {v}" for k, v in a["feature_sizes"].items())
        + f"; {a['head']}. {a['parameters']:,} parameters."
        + (f" CEUS clips of {pre['clip_frames']} frames, {a['temporal_pool']} pooling." if a["temporal_pool"] else "")
        + (
            f" Trained with an auxiliary lesion-segmentation head at {a['lesion_head']} (not used in prediction)."
            if a.get("lesion_head")
            else ""
        ),
        "- Missing inputs: "
        + (
            "handled (learned absent embeddings)."
            if a["missing_inputs"]
            else "fed as zeros (an image of zeros after normalisation, a flag of 0), as in training "
            "(data.zero_fill_missing); predict names the patients scored so."
            if pre.get("zero_fill_missing")
            else "not supported: every input is required (the program's has_<input> flags must all be true; "
            "predict --zero-fill-missing feeds an absent one as zeros, which this model never saw)."
        ),
        f"- Licence: {t['licence']}.",
        "- References: " + "; ".join(t["references"]) + ".",
        "",
        "## Uses",
        f"- Intended use: {t['intended_use']}",
        f"- Out of scope: {t['out_of_scope']}",
        "",
        "## Inputs and outputs",
        "| name | shape | dtype | meaning |",
        "|---|---|---|---|",
        *[
            f"| `{k}` | [{', '.join(map(str, v['shape']))}] | {v['dtype']} | {_input_meaning(k, t)} |"
            for k, v in md["inputs"].items()
        ],
        *[
            f"| `{k}` (output) | [{', '.join(v['shape'])}] | {v['dtype']} | {v['meaning']}, {v['range']} |"
            for k, v in md["outputs"].items()
        ],
        "",
        "## Preprocessing (shipped in the export's `lnm_runtime`)",
        f"- Decoding: {pre['decode']}.",
        *(
            [
                "- This model's CEUS input: "
                + (
                    "a clip's peak frame (T = 1), a still image as it is."
                    if pre["clip_frames"] == 1
                    else f"clips of T = {pre['clip_frames']} frames over the enhancement phase (a still image "
                    f"repeated {pre['clip_frames']} times)."
                )
            ]
            if names.CEUS in a["inputs"]
            else []
        ),
        "- Framing: cropped to the scan region (DICOM ultrasound regions or the manifest's `<input>_crop`)"
        + (
            f", resampled to {framing['field_of_view_mm'] / pre['image_size']:.3g} mm per pixel "
            f"({framing['field_of_view_mm']:g} mm field of view, centred, zero-padded)"
            if framing.get("field_of_view_mm")
            else ", the crop resized to the square (aspect not kept, as the paper)"
        )
        + f"; CEUS dual display: the {framing.get('ceus_region', 'auto')} region.",
        f"- Resize to {pre['image_size']}x{pre['image_size']}: {pre['resize']}.",
        *(
            [
                f"- Values: RGB float32 in [0, 1]; normalisation {pre['normalisation_applied']}; mean and std "
                f"{pre.get('normalisation_from', 'as configured')}:",
                *[f"  - {k}: mean {v['mean']}, std {v['std']}" for k, v in pre["normalisation"].items()],
            ]
            if pre["normalisation"]
            else ["- No image input: nothing is decoded or normalised; the flag is taken as 0 or 1."]
        ),
        "",
    ]
    if export:
        lines += [
            "## How to get started",
            "```",
            "pip install -r requirements.txt          # " + ", ".join(export.get("requirements", [])),
            "python predict.py --manifest patients.csv --out probs.csv",
            "```",
            "From Python (this folder on `sys.path`): `from lnm_runtime import load; "
            "load().predict({'bmode': [path_or_array, ...], ...})['prob']`.",
            *(
                [
                    f"- `model.onnx`: ONNX opset {onnx['opset']} ({onnx['converter']}), run with {onnx['runtime']} "
                    "(`--format onnx`; onnxruntime's own session takes the inputs above, prepared as below)."
                ]
                if (onnx := export.get("onnx"))
                else []
            ),
            "",
        ]
    lines += [
        "## Training",
        f"- Cohort: {c['patients']} patients, {c['positive']} {t['positive']} (prevalence {_fmt(c['prevalence'])}); "
        f"manifest `{c['manifest']}` (sha256 {c['manifest_sha256'][:16]}...); split seed {c['split_seed']}, by "
        "patient, stratified by the label, near copies of a picture kept in one subset: "
        + ", ".join(
            f"{name} {c['split'][s]}"
            + (f" ({c['split_positive'][s]} {t['positive']})" if "split_positive" in c else "")
            for s, name in (("train", "train"), ("val", "validation"), ("test", "test"))
        )
        + ".",
        "- Availability patterns: " + ", ".join(f"{k or '(none)'} {v}" for k, v in c["availability_patterns"].items()),
        *[f"- Physical scale of the training images: {x}." for x in [_spacing_text(c.get("pixel_spacing"))] if x],
        f"- Optimiser {h['optimizer']}, learning rate {h['learning_rate']:g} "
        f"(image branches x{h['backbone_lr_scale']:g}), "
        f"weight decay {h['weight_decay']:g}, batch {h['batch_size']}, up to {h['epochs']} epochs, plateau drop x"
        f"{h['plateau']['factor']:g} after {h['plateau']['patience']} epochs, early stopping "
        f"{h['early_stop_patience'] or 'off'}; loss: {h['loss']}, positives weighted {h['pos_weight_value']:.3g} "
        f"(train.pos_weight {h['pos_weight']}); "
        f"branches frozen for the first {h['freeze_backbone_epochs']} epochs; initialised from {h['init_from']}; "
        f"{h['dtype']}; seed {h['seed']}.",
        "- Augmentation: " + ", ".join(f"{k} {v}" for k, v in h["augmentation"].items()) + ".",
        "",
        "## Evaluation",
    ]
    if md["metrics"]:
        lines += _metric_rows(md["metrics"])
        lines += [
            "",
            "Thresholds (on `prob`, the uncalibrated probability; a patient is called positive at prob >= it): "
            + (
                f"0.5, and Youden's index on validation: {threshold_text(youden)} (halfway between two validation "
                "scores"
                + (
                    (
                        f"; {_fmt(ci[0])}-{_fmt(ci[1])} over bootstrap resamples of the validation patients"
                        if all(x is not None and x == x for x in ci)
                        else "; no bootstrap interval: a class of one validation patient, or resamples that choose "
                        "no cut-off"  # (helper-120: "- - over bootstrap resamples", unexplained)
                    )
                    if (ci := md["thresholds"].get("youden_ci"))
                    else ""
                )
                + "). "
                if (youden := md["thresholds"]["youden_from_val"]) is not None
                else "0.5 only: no Youden threshold (no cut-off has J > 0 on validation, or it holds one class). "
            )
            + f"Calibration temperature (fitted on validation, `prob_calibrated = sigmoid(logit / T)`): "
            f"{_fmt(md['calibration_temperature'])}.",
            *(
                # (helper-90: the val row read as a second held-out result)
                [
                    "Only the test row is out of sample: the checkpoint was chosen by its validation AUC, and "
                    "Youden's threshold and the temperature were fitted on validation, so the val row is optimistic."
                ]
                if "val" in md["metrics"]
                else []
            ),
            "",
            *_cutoff_rows(md["metrics"]),
            "",
            *_calibration_rows(md["calibration"]),
            "",
            # (helper-104: the calibration plot and decision curve could not be found from the card)
            f"Figures in the folder evaluate wrote this card to (not copied into an export): {F.ROC}, {F.RELIABILITY} "
            f"(Wilson 95% CIs, patients per bin), {F.DECISION_CURVE}, {F.CONVERGENCE}.",
        ]
        lines += [f"\n**Warning:** {w}" for w in md.get("warnings", [])]
    else:  # (helper-92: this line had hung off the Grad-CAM section, under every card without masks)
        lines.append("Not evaluated yet (run `lnm-jax evaluate`): no metrics, thresholds or calibration to report.")
    if (boot := md.get("bootstrap")) and md["metrics"]:
        lines += [
            "",
            f"Bootstrap CIs: {boot['resamples']} resamples of the patients within each class, seed {boot['seed']} "
            "(eval.bootstrap, eval.seed); DeLong CIs on the logit scale (docs/evaluation.md).",
        ]
    if rows := md.get("subgroups"):
        lines += [
            "",
            "Test split by subgroup of the manifest's columns (AUC with its DeLong 95% CI; a number column split "
            "at its test median; small subgroups, wide intervals, and many of them: read none alone):",
            "",
            "| variable | level | n | positive | AUC (95% CI) |",
            "|---|---|---:|---:|---|",
            *[
                f"| {inline(r['variable'])} | {inline(r['level'])} | {r['n']} | {r['positive']} | "
                + (
                    f"{_fmt(r['auc'])} ({_fmt(r['auc_ci'][0])}-{_fmt(r['auc_ci'][1])})"
                    if r["auc"] is not None
                    else "one class"
                )
                + " |"
                for r in rows
            ],
        ]
    if guard := md.get("single_inputs"):
        splits = list(guard["fused_auc"])
        lines += [
            "",
            f"Each input alone ({'/'.join(splits)} AUC, its own head or the flag's value): "
            + ", ".join(
                f"{m} " + "/".join(_fmt(a.get(s)) for s in splits) for m, a in guard.get("input_auc", {}).items()
            )
            + "; the fused model "
            + "/".join(_fmt(guard["fused_auc"][s]) for s in splits)
            + (
                ". **The fused model is below one of its own inputs on validation.**"
                if guard.get("fused_below_best_single")
                else "."
            ),
        ]
    if ev := md.get("image_evidence"):
        from lnm_jax.explain.scores import summary_lines  # noqa: PLC0415

        lines += [
            "",
            "## Image evidence (Grad-CAM against the lesion masks, test split)",
            "Mass in lesion / lesion area (1 = chance) and the pointing game, beside a random map's:",
            *[f"- {x}" for x in summary_lines(ev["summary"], ev["method"], ev["layer"])],
        ]
    env = md.get("training_environment") or {}
    lines += [
        "",
        "## Limits",
        *[f"- {x}" for x in md["limits"]],
        "",
        "## Environment",
        f"- Training started {(env or {}).get('created', 'at an unrecorded time')} (run_info.json).",
        "- Trained with: "
        + (
            f"{env.get('backend', '?')} ({env.get('device_kind', '?')} x{env.get('device_count', '?')}"
            + (f"; {env['cpu']}" if env.get("cpu") else "")
            + "), "
            f"Python {env.get('python', '?')}, "
            + ", ".join(f"{k} {v}" for k, v in env.get("packages", {}).items())
            + (f"; commit {env['git']['commit'][:12]}{uncommitted_text(env['git'])}" if env.get("git") else "")
            + (f"; source sha256 {env['source_sha256'][:12]}" if env.get("source_sha256") else "")
            if env
            else f"unknown ({md.get('training_environment_unstated', NO_RUN_INFO)})"
        )
        + ".",
        *(
            [f"- Evaluated with: {commit_text(md['evaluated_with'])} (the evaluation's record)."]
            if md.get("evaluated_with")
            else []
        ),
        "- Card written with: "
        + ", ".join(f"{k} {v}" for k, v in md["packages"].items())
        + (f"; {commit_text(md['written_with']['git'])}" if (md.get("written_with") or {}).get("git") else "")
        + (
            f"; source sha256 {md['written_with']['source_sha256'][:12]}"
            if (md.get("written_with") or {}).get("source_sha256")
            else ""
        )
        + ".",
    ]
    if not c.get("synthetic"):
        lines += ["", *AUTHORS_SECTION]
    return "\n".join(lines) + "\n"


# what a card written by a program cannot know and a paper's reviewer checks (TRIPOD+AI, Collins et
# al. BMJ 2024;385:e078378; CLAIM 2024): said as open on every card of a real cohort (helper-104)
AUTHORS_SECTION = [
    "## To be completed by the authors",
    "This card was written by lnm-jax from the run's files; it cannot know the following, which TRIPOD+AI "
    "(2024) and CLAIM (2024) ask a report to state:",
    "- Data source, centres and setting, and the dates of recruitment (TRIPOD+AI 5a-6a; CLAIM 7).",
    "- Eligibility criteria and how patients were selected, with a flow of excluded ones (TRIPOD+AI 6b, 20a; "
    "CLAIM 8, 33).",
    "- How the outcome was established (pathology, the dissection levels, the interval after imaging) and whether "
    "its assessors knew the images or the flag; the same for who set US-LNM (TRIPOD+AI 8, 9c; CLAIM 14-18).",
    "- Scanners, probes, presets and contrast agent (CLAIM 13); the rationale for the sample size (TRIPOD+AI 10).",
    "- Ethics approval and consent, funding and conflicts, data and code availability, patient and public "
    "involvement (TRIPOD+AI 17-19).",
    "- Run-to-run variability: this card is one training run (one seed); the README's demo moved its test AUC "
    "0.906-0.922 and its Youden threshold 0.41-0.91 over seeds 0-3.",
]


def _input_meaning(name: str, task: dict) -> str:
    if name.startswith("has_"):
        return f"whether the patient has {name[4:]}"
    if name == names.US_LNM:
        return f"{task['flag']}: {task['flag_meaning']}"
    return task["inputs"].get(name, name)


def write_card(md: dict, out: Path | str) -> None:
    """Writes ``metadata.json`` and ``model_card.md`` of ``md`` to ``out``."""
    out = Path(out)
    write_json(out / METADATA, md)
    write_text(out / MODEL_CARD, markdown(md))
