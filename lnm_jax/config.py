"""Experiment configuration defaults (``ml_collections.ConfigDict``).

The files under ``lnm_jax/configs/`` are thin: each returns one of these, so every experiment is a
config file and every field can be overridden on the command line
(``--config.train.epochs=3``).
"""

from __future__ import annotations

import difflib
import json

from ml_collections import ConfigDict, FieldReference

from lnm_jax.fileio import SEED_RANGE, is_number, is_seed, problems_text, write_text
from lnm_jax.names import (
    BACKBONES,
    BATCHNORMS,
    CAM_LAYERS,
    FLAG_ENCODINGS,
    FUSIONS,
    IMAGE_INPUTS,
    LOWERINGS,
    PAPER_NORM,
    RUNNING_VARS,
    SETTINGS,
    STEMS,
    modalities_spelling,
    parse_modalities,
)
from lnm_jax.task import PAPER as PAPER_TASK


def write_config(path, config: ConfigDict) -> None:
    """A run's config as the JSON its readers load (``ConfigDict`` of :func:`read_json`),
    written atomically: the one format of a stored config (training's and pretraining's)."""
    write_text(path, config.to_json(indent=2))


def base_config(setting: str = "triple") -> ConfigDict:
    """The paper's protocol: ResNet-50 branches at 224x224, Adam 1e-3 + plateau drop."""
    c = ConfigDict()
    c.name = f"paper_{setting}"
    c.seed = 0
    # 'us_lnm' | 'bmode' | 'ceus' | 'dual' | 'triple' | a comma list such as 'bmode,us_lnm'.
    c.modalities = setting

    # What the model predicts, in words (lnm_jax/task.py): label and class names, the flag's
    # meaning, intended use, licence. Plots, validate, reports and the model card read it.
    c.task = ConfigDict(PAPER_TASK.to_dict())

    c.data = ConfigDict()
    # Cohort manifest CSV; empty = synthesise the embedded cohort (data.synth) into WORKDIR/cohort.
    c.data.manifest = ""
    c.data.image_size = 224
    # CEUS frames per patient: 1 = one still (the paper; the peak frame of a clip); T > 1
    # samples T frames over a clip's enhancement phase (stills are repeated T times).
    c.data.clip_frames = 1
    # 'grain' (default; no TensorFlow: PIL decode, numpy augmentation in grain's threads) or
    # 'tfds' (TFDS records + tf.data; needs the [tf] extra) for training batches: each patient's
    # pixels the same, their grouping and augmentation draws not; evaluation reads through grain.
    c.data.loader = "grain"
    c.data.num_threads = 2  # grain: threads decoding and augmenting batches ahead of the step
    c.data.prefetch = 4  # grain: batches prepared ahead
    # Keep decoded, resized images in host memory after their first epoch.
    c.data.cache = True
    # Where the TFDS records of the cohort are built; empty = WORKDIR/tfds. Runs that share it
    # (lnm-jax reproduce) build each content once (a folder per manifest, pictures and decoder).
    c.data.tfds_dir = ""
    c.data.shuffle_buffer = 4096  # tfds only (grain shuffles the whole split)
    # Hold the decoded training split on the accelerator(s) and augment there, in JAX
    # (lnm_jax/data/loaders/on_device.py): for small cohorts on fast devices.
    c.data.on_device = False
    # A patient who lacks an input the model takes is refused unless the model was trained for
    # missing inputs (model.missing_inputs); True feeds such an input as zeros instead (the
    # paper's model never saw a zero image: an explicit opt-in, e.g. for single-view cohorts).
    c.data.zero_fill_missing = False
    # Physical scale: > 0 resamples every image (cropped to its scan region) to
    # field_of_view_mm / image_size mm per pixel, aspect kept, centred in the square, so that a
    # lesion's size in pixels does not follow the depth setting; needs every image's spacing
    # (DICOM PhysicalDeltaX/Y, or a <input>_mm_per_pixel manifest column). 0: the paper's way,
    # the scan region resized to the square.
    c.data.field_of_view_mm = 0.0
    # A CEUS dual display (contrast + low-MI B-mode side by side): which region is the contrast
    # image. 'auto': the more coloured one (refused when both look alike); 'left' | 'right'.
    c.data.ceus_region = "auto"
    # DICOM files must be ultrasound (Modality US, an ultrasound storage class); True also
    # accepts secondary captures (a scanner's screen saved as SC, Modality OT or US).
    c.data.accept_secondary_capture = False
    c.data.split = ConfigDict(dict(test_fraction=0.2, val_fraction=0.2, seed=0))
    # Tuples, so that `--config.data.norm.bmode.mean='(0.2, 0.2, 0.2)'` overrides them.
    c.data.norm = ConfigDict({k: {"mean": tuple(v["mean"]), "std": tuple(v["std"])} for k, v in PAPER_NORM.items()})
    # Where data.norm comes from: 'config' (the values above: the paper's, or norm-stats' given
    # by hand) | 'train' (each run's own training split, computed when it starts and recorded in
    # its config.json: a K-fold protocol's runs each take their own, none seeing its test fold).
    c.data.norm_from = "config"
    c.data.augment = ConfigDict(
        dict(
            enabled=True,
            translate=0.1,
            scale_min=0.9,
            scale_max=1.1,
            flip=True,
            contrast_min=0.8,
            contrast_max=1.2,
            brightness=0.1,
            # clip the augmented image to [0, 1]: False keeps contrast and brightness invertible
            # (a clip had blacked out a CEUS clip's dark frames before the contrast arrives:
            # lnm_jax/data/loaders/augment.py); runs stored before this field clipped
            clip=False,
        )
    )
    c.data.synth = ConfigDict(
        dict(
            patients=308,
            seed=0,
            size=256,
            prevalence=0.513,
            bmode_strength=1.5,
            ceus_strength=1.6,
            flag_sensitivity=0.386,
            flag_specificity=0.900,
        )
    )

    # init_from: a backbone converted by `lnm-jax convert-weights` (e.g. ImageNet weights) that
    # initialises every image branch; the head starts fresh. variant: 'torchvision' | 'keras_v1'.
    # missing_inputs: learned 'absent' embeddings + availability indicators (beyond the paper);
    # modality_dropout: p, the probability with which training draws to hide each present input
    # (needs the former); a row whose draws would hide all its n present inputs keeps them all,
    # so an input is hidden at the rate p - p**n, below p (triple, all present: 0.273 at 0.3,
    # 0.171 at 0.9; at most 0.385, at p = 0.577); a row with one present input, never.
    c.model = ConfigDict(
        dict(
            backbone="resnet50",
            width=64,
            dtype="float32",
            init_from="",
            variant="torchvision",
            missing_inputs=False,
            modality_dropout=0.0,
            temporal_pool="mean",  # CEUS clips: 'mean' | 'attention'
            # lowering: 1x1 convs and 3x3 stride-2 max pools as XLA's ops ('xla')
            # or as GEMMs and strided slices ('cpu': faster train steps on
            # XLA:CPU); 'slices': XLA's convs, the max pools as slices; 'auto' = 'cpu' on the
            # CPU backend, 'slices' on a GPU, else 'xla' (models/lowering.py)
            lowering="auto",
            # Beyond the paper (models/fusion.py): 'concat' is its single dense head over every
            # feature; 'late' gives each input its own logit and combines them with a small
            # learned layer. input_heads: per-input logits (trained by train.aux_loss_weight)
            # beside the concat head. flag_encoding: 'raw' (0/1) | 'centred' (-1/+1).
            fusion="concat",
            input_heads=False,
            flag_encoding="raw",
            # An auxiliary lesion-segmentation head on the image branches at this layer
            # ('stage1'..'stage4'; '' none), trained on the manifest's bmode_mask/ceus_mask
            # columns with train.lesion_loss_weight (models/fusion.py; docs/gradcam.md).
            lesion_head="",
            # Performance variants of the ResNets, the same function (models/resnet.py):
            # stem: 'auto' (space_to_depth on a GPU, conv7 elsewhere: models/lowering.py) | 'conv7' |
            # 'space_to_depth' (the 7x7 stem as a 4x4 conv on 2x2 blocks; even image sizes),
            # bn_float32_reductions=False (BatchNorm statistics in the activation dtype),
            # batchnorm: 'flax' (nn.BatchNorm, differentiated by JAX) | 'fused' (its training
            # gradient written out: two reductions a layer, models/batchnorm.py) | 'auto'
            # (fused on a GPU, flax elsewhere: models/lowering.py).
            stem="auto",
            bn_float32_reductions=True,
            batchnorm="auto",
            # how a training step updates BatchNorm's running variance: 'biased' (flax's; every
            # result of this project) | 'unbiased' (x N/(N-1): PyTorch's, for runs to match one)
            bn_running_var="biased",
        )
    )

    c.train = ConfigDict()
    c.train.epochs = 100
    c.train.batch_size = 8
    c.train.eval_batch_size = 16
    c.train.learning_rate = 1e-3
    # head_min_scale: the head group's plateau scale never goes below it (0: as the backbones')
    c.train.plateau = ConfigDict(
        dict(factor=0.1, patience=5, rtol=1e-4, cooldown=0, min_scale=1e-3, head_min_scale=0.0)
    )
    c.train.early_stop_patience = 0  # epochs without a new best (higher val AUC, or equal at lower val loss); 0 = off
    # Small-cohort fine-tuning (all off for the paper): the per-input heads' loss weight (needs
    # model.input_heads or model.fusion='late'); epochs with the pretrained image branches frozen
    # (those loaded from model.init_from; without it nothing is frozen: frozen_backbone_epochs)
    # before full fine-tuning; the image branches' learning rate as a fraction of
    # train.learning_rate; AdamW's decoupled weight decay on kernels.
    c.train.aux_loss_weight = 0.0
    c.train.freeze_backbone_epochs = 0
    # The lesion head's loss weight (BCE + soft Dice against the framed lesion masks of the
    # patients that have one; needs model.lesion_head); 0 = off.
    c.train.lesion_loss_weight = 0.0
    c.train.backbone_lr_scale = 1.0
    c.train.weight_decay = 0.0
    # Class weighting for imbalanced cohorts: a positive patient's loss term x pos_weight
    # (1: the paper's plain BCE); 'balanced': the training split's negatives / positives.
    c.train.pos_weight = FieldReference(1.0, field_type=object)  # a number or 'balanced'
    # Stop as diverged when an epoch's mean train loss exceeds this (0 = off). A BCE of 100 puts
    # probability e^-100 on the true class on average; healthy runs stay near ln 2 = 0.69.
    c.train.max_loss = 100.0
    c.train.log_every_steps = 10
    # Also checkpoint every N steps within an epoch (model, optimizer and the loader's iterator
    # state), so that --resume continues mid-epoch on exactly the next batch; 0 = epoch ends only.
    c.train.checkpoint_every_steps = 0
    # Write the 'latest' checkpoint every N epochs and at the last (early stop included); an
    # improving epoch between two is held in host memory and written as 'best' at the next, or
    # before training stops on an error. 1: every epoch. A save of the paper's model costs
    # seconds, more than a GPU epoch of a small cohort (lnm_jax/training/save_schedule.py);
    # 0: every epoch at which the previous save (written in the background) is done, so that
    # training does not wait for saves.
    c.train.checkpoint_every_epochs = 1
    # Shard each batch over all devices (hosts included) when there is more than one.
    c.train.data_parallel = True

    # `lnm-jax pretrain` (lnm_jax/pretraining/pretrain.py): SimCLR on the manifests' images, the
    # downstream test split left out; the backbone, width and image size are model.* / data.*.
    # positives: 'image' (two views of one image) | 'patient' (the second view from another
    # image of the same patient). shared_backbone: one backbone for both image inputs, else one
    # each. augment: ultrasound views (lnm_jax/pretraining/views.py).
    c.pretrain = ConfigDict(
        dict(
            method="simclr",
            shared_backbone=True,
            positives="image",
            epochs=100,
            batch_size=128,
            learning_rate=1e-3,
            weight_decay=1e-4,
            warmup_epochs=5,
            temperature=0.2,
            projection_hidden=0,  # 0: the backbone's feature width
            projection_dim=64,
            checkpoint_every_epochs=5,
            probe=True,
            augment=dict(
                crop_area_min=0.35,
                rotation_deg=10.0,
                flip=True,
                gain=0.25,
                contrast_min=0.7,
                contrast_max=1.3,
                gamma_min=0.7,
                gamma_max=1.4,
                speckle=0.15,
            ),
        )
    )

    # fold_bn: predict and explain with BatchNorm folded into the convs (ResNets; same outputs)
    c.eval = ConfigDict(dict(bootstrap=2000, ci_level=0.95, seed=0, fold_bn=True))

    # `lnm-jax reproduce`: the paper's Tables 2 (backbones on each image modality, judged on
    # the validation part of the training set) and 3 (input settings on the test set).
    c.protocol = ConfigDict(
        dict(
            backbones=("resnet50", "vgg11", "inception_v3"),
            table2_modalities=IMAGE_INPUTS,
            settings=tuple(SETTINGS),
            permutations=1000,
            threshold=0.5,
            folds=0,
            gradcam=True,
            # Pretrain (`lnm-jax pretrain`, config.pretrain) once per split, leaving out that
            # split's test patients, and start every image run of model.backbone from it.
            pretrain=False,
            # more manifests whose images (all of them: no label is read) join each split's
            # pretraining, e.g. another cohort's unlabeled ultrasound (`--manifest M2` of pretrain)
            pretrain_manifests=(),
        )
    )
    return c


def demo_config() -> ConfigDict:
    """Sized for 2 CPU cores: small images, a narrow ResNet-18 per branch, a short schedule.

    924 synthetic patients (3x the paper's 308): trained from scratch on the paper's 196
    training patients, this model's test AUC on 62 patients ranged from 0.78 to 0.88 across
    seeds and small schedule changes in our runs; with 3x the patients it learns the cues
    more reliably and the 185-patient test set judges it with about half the noise.
    """
    c = base_config("triple")
    c.name = "demo_triple"
    c.data.image_size = 64
    c.data.synth.size = 128
    c.data.synth.patients = 924
    c.model.backbone = "resnet18"
    c.model.width = 16
    c.train.epochs = 30
    c.train.batch_size = 16
    c.train.eval_batch_size = 64
    c.train.plateau.patience = 4
    return c


def reproduce_cpu_config() -> ConfigDict:
    """`lnm-jax reproduce` sized for 2 CPU cores: the demo's cohort and schedule, every
    backbone at width 16 (a quarter of the channels) on 80x80 images (Inception-v3 needs 75)."""
    c = demo_config()
    c.name = "reproduce_cpu"
    c.data.image_size = 80
    c.model.backbone = "resnet50"
    c.model.width = 16
    c.protocol.backbones = ("resnet50", "vgg11", "inception_v3")
    c.eval.bootstrap = 1000
    return c


def small_cohort_config() -> ConfigDict:
    """A real cohort of a few hundred patients, on 2 CPU cores: `lnm-jax pretrain` (SimCLR on the
    cohort's own images, its test split left out), then fine-tuning with every input's own head
    and a late fusion that gives the flag its log-odds (docs/small_cohorts.md).

    Fine-tuning: the pretrained branches frozen for the first epochs (the heads settle on
    features that are not yet moving), then all trained; the heads at 1e-2 and the branches at
    1e-3 (AdamW, decay 1e-4 on kernels); a plateau drop that never takes the heads below 1e-3;
    early stopping on validation AUC. Set model.init_from to the pretraining's backbone.
    """
    c = base_config("triple")
    c.name = "small_cohort"
    c.data.image_size = 128
    c.model.backbone = "resnet18"
    c.model.width = 16
    c.model.fusion = "late"
    c.model.flag_encoding = "centred"
    c.train.epochs = 40
    c.train.batch_size = 16
    c.train.eval_batch_size = 64
    c.train.learning_rate = 1e-2
    c.train.backbone_lr_scale = 0.1
    c.train.weight_decay = 1e-4
    c.train.aux_loss_weight = 1.0
    c.train.freeze_backbone_epochs = 5
    c.train.early_stop_patience = 10
    c.train.plateau.patience = 4
    c.train.plateau.head_min_scale = 0.1
    c.pretrain.epochs = 60
    c.pretrain.batch_size = 128
    c.eval.bootstrap = 1000
    # `lnm-jax reproduce` with this config: pretraining per split, the one backbone
    c.protocol.pretrain = True
    c.protocol.backbones = (c.model.backbone,)
    return c


# ------------------------------------------------------------------------------ checking


class ConfigError(ValueError):
    """A config whose fields cannot describe a run; one line per problem, each naming the
    field and what it may be. Raised before anything is written."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__(problems_text(problems, "config problem"))


# field -> (test, what it may be). The model-specific checks (backbone, image size per
# backbone, fusion options) are lnm_jax.models.fusion.check_config's.
def _range(lo=None, hi=None, *, lo_open=False, hi_open=False, integer=False):
    def test(x):
        if not is_number(x) or (integer and not isinstance(x, int)):
            return False
        if lo is not None and (x <= lo if lo_open else x < lo):
            return False
        return not (hi is not None and (x >= hi if hi_open else x > hi))

    kind = "an integer" if integer else "a number"
    bounds = []
    if lo is not None:
        bounds.append(f"{'>' if lo_open else '>='} {lo:g}")
    if hi is not None:
        bounds.append(f"{'<' if hi_open else '<='} {hi:g}")
    return test, f"{kind} {' and '.join(bounds)}" if bounds else kind


def _one_of(*choices):
    return (lambda x: x in choices), f"one of {', '.join(repr(c) for c in choices)}"


NORM_SOURCES = ("config", "train")  # data.norm_from
POSITIVE_INT = _range(1, integer=True)
NON_NEGATIVE_INT = _range(0, integer=True)
NON_NEGATIVE = _range(0)
POSITIVE = _range(0, lo_open=True)
FRACTION = _range(0, 1, lo_open=True, hi_open=True)
SEED = (is_seed, SEED_RANGE)
FIELD_RULES = {
    "seed": SEED,
    "data.image_size": POSITIVE_INT,
    "data.clip_frames": POSITIVE_INT,
    "data.loader": _one_of("grain", "tfds"),
    "data.num_threads": NON_NEGATIVE_INT,
    "data.prefetch": NON_NEGATIVE_INT,
    "data.shuffle_buffer": POSITIVE_INT,
    "data.field_of_view_mm": NON_NEGATIVE,
    "data.ceus_region": _one_of("auto", "left", "right"),
    "data.norm_from": _one_of(*NORM_SOURCES),
    "data.split.test_fraction": FRACTION,
    "data.split.val_fraction": FRACTION,
    "data.split.seed": SEED,
    "data.augment.translate": _range(0, 0.5),
    "data.augment.scale_min": POSITIVE,
    "data.augment.scale_max": POSITIVE,
    "data.augment.contrast_min": POSITIVE,
    "data.augment.contrast_max": POSITIVE,
    "data.augment.brightness": _range(0, 1),
    "data.augment.clip": _one_of(True, False),
    "data.synth.patients": _range(2, integer=True),
    "data.synth.size": _range(8, integer=True),
    "data.synth.prevalence": FRACTION,
    "data.synth.seed": SEED,
    "model.width": POSITIVE_INT,
    "model.dtype": _one_of("float32", "bfloat16", "float16"),
    "model.variant": _one_of("torchvision", "keras_v1"),
    "model.modality_dropout": _range(0, 1, hi_open=True),
    "model.temporal_pool": _one_of("mean", "attention"),
    "model.lowering": _one_of(*LOWERINGS),
    "model.fusion": _one_of(*FUSIONS),
    "model.backbone": _one_of(*BACKBONES),
    "model.flag_encoding": _one_of(*FLAG_ENCODINGS),
    "train.epochs": POSITIVE_INT,
    "train.batch_size": POSITIVE_INT,
    "train.eval_batch_size": POSITIVE_INT,
    "train.learning_rate": POSITIVE,
    "train.plateau.factor": _range(0, 1, lo_open=True),
    "train.plateau.patience": NON_NEGATIVE_INT,  # >= 1 for a run to train: NEW_RUN_RULES
    "train.plateau.rtol": NON_NEGATIVE,
    "train.plateau.cooldown": NON_NEGATIVE_INT,
    "train.plateau.min_scale": _range(0, 1),
    "train.plateau.head_min_scale": _range(0, 1),
    "train.early_stop_patience": NON_NEGATIVE_INT,
    "train.aux_loss_weight": NON_NEGATIVE,
    "train.lesion_loss_weight": NON_NEGATIVE,
    "model.lesion_head": _one_of("", *CAM_LAYERS),
    "model.stem": _one_of(*STEMS),
    "model.bn_float32_reductions": _one_of(True, False),
    "model.batchnorm": _one_of(*BATCHNORMS),
    "model.bn_running_var": _one_of(*RUNNING_VARS),
    "train.freeze_backbone_epochs": NON_NEGATIVE_INT,
    "train.backbone_lr_scale": NON_NEGATIVE,
    "train.weight_decay": NON_NEGATIVE,
    "train.pos_weight": (lambda x: x == "balanced" or (is_number(x) and x > 0), "a number > 0 or 'balanced'"),
    "train.max_loss": NON_NEGATIVE,
    "train.log_every_steps": POSITIVE_INT,
    "train.checkpoint_every_steps": NON_NEGATIVE_INT,
    "train.checkpoint_every_epochs": NON_NEGATIVE_INT,
    "pretrain.epochs": POSITIVE_INT,
    "pretrain.batch_size": _range(2, integer=True),
    "pretrain.learning_rate": POSITIVE,
    "pretrain.weight_decay": NON_NEGATIVE,
    "pretrain.warmup_epochs": NON_NEGATIVE_INT,
    "pretrain.temperature": POSITIVE,
    "pretrain.projection_hidden": NON_NEGATIVE_INT,
    "pretrain.projection_dim": POSITIVE_INT,
    "pretrain.checkpoint_every_epochs": POSITIVE_INT,
    "pretrain.positives": _one_of("image", "patient"),
    # pretraining's views (lnm_jax/pretraining/views.py): a gamma <= 0 had given a NaN loss in
    # epoch 1, after the pretraining folder was written
    "pretrain.augment.crop_area_min": _range(0, 1, lo_open=True),
    "pretrain.augment.rotation_deg": _range(0, 180),
    "pretrain.augment.flip": _one_of(True, False),
    "pretrain.augment.gain": _range(0, 1, hi_open=True),
    "pretrain.augment.contrast_min": POSITIVE,
    "pretrain.augment.contrast_max": POSITIVE,
    "pretrain.augment.gamma_min": POSITIVE,
    "pretrain.augment.gamma_max": POSITIVE,
    "pretrain.augment.speckle": NON_NEGATIVE,
    "eval.bootstrap": NON_NEGATIVE_INT,  # 0: DeLong intervals only
    "eval.ci_level": FRACTION,
    "eval.seed": SEED,
    "protocol.permutations": NON_NEGATIVE_INT,
    "protocol.threshold": FRACTION,
    "protocol.folds": (lambda x: isinstance(x, int) and (x == 0 or x >= 2), "0 (one holdout split) or an integer >= 2"),
}


def _get(config, dotted: str):
    node = config
    for part in dotted.split("."):
        if not hasattr(node, "keys") or part not in node:
            return _MISSING
        node = node[part]
    return node


_MISSING = object()


# The fields that define what a trained model computes: its inputs, architecture and
# preprocessing (not how it was trained, nor where its cohort lies). Each checkpoint records
# their values (:func:`model_fields`); a run whose config.json no longer says the same (a field
# edited or deleted by hand) is refused when a checkpoint is read (:func:`model_field_changes`)
# rather than computing another function from the same weights. The value is the default a run
# stored before the field existed is read with (None: every stored run has the field).
MODEL_FIELDS = {
    "modalities": None,
    "model.backbone": None,
    "model.width": None,
    "model.dtype": None,
    "model.variant": None,
    "model.missing_inputs": None,
    "model.temporal_pool": None,
    "model.fusion": "concat",
    "model.input_heads": False,
    "model.flag_encoding": "raw",
    "model.lesion_head": "",
    "model.stem": "conv7",
    "model.bn_float32_reductions": True,
    "model.bn_running_var": "biased",
    "data.image_size": None,
    "data.clip_frames": None,
    "data.norm": None,
    "data.field_of_view_mm": 0.0,
    "data.ceus_region": "auto",
    "data.zero_fill_missing": False,
}


def model_field(config, field: str):
    """The value ``config`` gives a field of :data:`MODEL_FIELDS`, its default where a run
    stored before the field existed lacks it; a group (``data.norm``) as plain dicts and lists."""
    value = _get(config, field)
    if value is _MISSING:
        value = MODEL_FIELDS[field]
    if hasattr(value, "to_dict"):
        value = value.to_dict()
    if field == "modalities" and isinstance(value, str):  # a setting's name as the inputs it stands for
        try:
            value = ",".join(parse_modalities(value))
        except ValueError:
            pass  # config_problems names it
    return json.loads(json.dumps(value))  # tuples as lists: compared as a JSON record reads


def model_fields(config) -> dict:
    """Every field of :data:`MODEL_FIELDS` as ``config`` gives it (a checkpoint's record)."""
    return {f: model_field(config, f) for f in MODEL_FIELDS}


def model_field_changes(recorded: dict, config) -> list[str]:
    """One line per field of ``recorded`` (a checkpoint's :func:`model_fields`) that ``config``
    gives otherwise or lacks: ``data.image_size: 32, trained with 64``. A field the record does
    not hold (a checkpoint written before it was recorded) is not compared; one deleted whose
    default is the trained value changes nothing and is not reported, nor one every run has
    (no default: the command that reads it names it as missing)."""
    out = []
    for field, then in recorded.items():
        if field not in MODEL_FIELDS or (now := model_field(config, field)) == then:
            continue  # a field deleted whose default is the trained value changes nothing
        absent = _get(config, field) is _MISSING
        if absent and MODEL_FIELDS[field] is None:
            continue  # a field every run has: the command that reads it names it (field_path)
        if absent:
            out.append(f"{field}: absent (read as {json.dumps(now)}), trained with {json.dumps(then)}")
            continue
        # a group (data.norm): only the values inside it that differ, each by its full name
        for name, shown, was in _group_changes(field, now, then):
            out.append(f"{name}: {shown}, trained with {json.dumps(was)}")
    return out


def _group_changes(name: str, now, then) -> list[tuple[str, str, object]]:
    """``(full name, value shown, trained value)`` of each leaf that differs between ``now`` and
    ``then`` (the same leaf where either is no JSON object; 'absent' where ``now`` lacks it)."""
    if not (isinstance(now, dict) and isinstance(then, dict)):
        return [] if now == then else [(name, json.dumps(now), then)]
    out = []
    for key in sorted(now.keys() | then.keys(), key=str):
        if key not in now:
            out.append((f"{name}.{key}", "absent", then[key]))
        else:
            out += _group_changes(f"{name}.{key}", now[key], then.get(key))
    return out


# the groups of fields every config has (a stored one included) and the checks below read
CHECKED_GROUPS = ("data", "model", "train", "eval", "data.augment", "data.split", "data.norm")


def _type_rule(default) -> tuple[tuple[type, ...], str] | None:
    """The types a field whose default is ``default`` takes, and how a message names them."""
    if isinstance(default, bool):
        return (bool,), "true or false"
    if isinstance(default, int):
        return (int,), "an integer"
    if isinstance(default, float):
        return (int, float), "a number"
    if isinstance(default, str):
        return (str,), "a string"
    if isinstance(default, tuple | list):
        return (tuple, list), "a list"
    return None


def type_problems(config) -> list[str]:
    """Every field of ``config`` whose value is not of its default's type (:func:`base_config`):
    a hand-edited ``config.json`` with ``"fold_bn": "false"`` (a string, which Python takes as
    true) or ``"epochs": "30"``; every group of the defaults given as something else than a
    group; every field the defaults lack (a misspelt name, with the close one). Fields
    :data:`FIELD_RULES` checks and the ``data.norm`` entries (checked by :func:`config_problems`)
    are left to those checks; a field the config lacks is not a problem here (a run stored
    before the field existed)."""
    tree = base_config().to_dict()
    defaults, groups = _flatten(tree), _groups(tree)
    problems = [
        f"{g}: {value!r} is not a group of fields"
        for g in groups
        if g not in CHECKED_GROUPS and (value := _get(config, g)) is not _MISSING and not hasattr(value, "keys")
    ]
    for field, default in defaults.items():
        rule = _type_rule(default)
        if rule is None or field in FIELD_RULES or field.startswith("data.norm."):
            continue
        value = _get(config, field)
        types, allowed = rule
        if value is not _MISSING and (not isinstance(value, types) or (bool not in types and isinstance(value, bool))):
            problems.append(f"{field}: {value!r} is not {allowed}")
    known = set(defaults) | set(groups)
    given = _flatten(config.to_dict()) if hasattr(config, "to_dict") else {}
    for field in given:
        if field not in known and not field.startswith("data.norm."):
            close = difflib.get_close_matches(field, sorted(known), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            problems.append(f"{field}: not a field of the config{hint}")
    return problems


def field_path(field: str, siblings) -> str:
    """The dotted name of ``field`` in :func:`base_config`, found from the fields a config's
    group still has (``siblings``, the group that lacks ``field``): the one group of the
    defaults that holds ``field`` and every sibling; ``field`` itself where none or several do
    (``width`` -> ``model.width``, for a field deleted from a run's ``config.json``)."""
    tree = base_config().to_dict()
    siblings = set(siblings)
    found = [
        g
        for g in ["", *_groups(tree)]
        if hasattr(group := (_get(tree, g) if g else tree), "keys") and field in group and siblings <= set(group)
    ]
    return f"{found[0]}.{field}".lstrip(".") if len(found) == 1 else field


def _groups(tree: dict, prefix: str = "") -> list[str]:
    """The dotted names of every group of fields (a nested dict) of ``tree``."""
    out = []
    for k, v in tree.items():
        if isinstance(v, dict):
            out += [f"{prefix}{k}", *_groups(v, f"{prefix}{k}.")]
    return out


def _flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


# Rules narrower than FIELD_RULES' for a config that is to train (a new run, a resume), not for
# a stored run's config read back: the values an older version trained with stay readable.
NEW_RUN_RULES = {
    # optax counts epochs without a gain and cuts when the count equals patience: at 0 it cut on
    # every improving epoch and never on a flat one (a fresh-user trial against PyTorch)
    "train.plateau.patience": (POSITIVE_INT[0], "an integer >= 1 (epochs without a validation-loss gain before a cut)"),
}


def config_problems(config, stored: bool = False) -> list[str]:
    """Every field of ``config`` outside its range or choices (:data:`FIELD_RULES`, and, unless
    ``stored`` (a trained run's config read back), :data:`NEW_RUN_RULES`), and the relations
    between fields (augmentation min <= max, split fractions < 1), one line each:
    ``train.learning_rate: -1 is not a number > 0``."""
    problems = []
    groups = {g: _get(config, g) for g in CHECKED_GROUPS}
    for g, v in groups.items():
        if not hasattr(v, "keys"):
            problems.append(f"{g}: {'missing' if v is _MISSING else f'{v!r} is not a group of fields'}")
    if problems:  # the checks below read these groups
        return problems
    for field, (test, allowed) in [*FIELD_RULES.items(), *(() if stored else NEW_RUN_RULES.items())]:
        value = _get(config, field)
        if value is not _MISSING and not test(value):
            problems.append(f"{field}: {value!r} is not {allowed}")
    problems += type_problems(config)
    pretrain_augment = config.get("pretrain", {}).get("augment", {})
    for group, a, pairs in (
        ("data.augment", config.data.augment, (("scale_min", "scale_max"), ("contrast_min", "contrast_max"))),
        ("pretrain.augment", pretrain_augment, (("contrast_min", "contrast_max"), ("gamma_min", "gamma_max"))),
    ):
        for lo, hi in pairs:
            if is_number(a.get(lo)) and is_number(a.get(hi)) and a[lo] > a[hi]:
                problems.append(f"{group}.{lo}: {a[lo]!r} is above {group}.{hi} ({a[hi]!r})")
    test, val = config.data.split.get("test_fraction"), config.data.split.get("val_fraction")
    if is_number(test) and is_number(val) and test + val >= 1:
        problems.append(f"data.split: test_fraction + val_fraction = {test + val:g}, leaving no training set")
    pc = config.get("protocol")
    if pc is not None and pc.get("pretrain_manifests") and not pc.get("pretrain", False):
        problems.append(
            f"protocol.pretrain_manifests: {tuple(pc.pretrain_manifests)!r} is read only with protocol.pretrain=True"
        )
    if pc is not None:  # each by its own name (helper-112: a bad backbone had been said as model.backbone's)
        listed = lambda field: v if isinstance(v := pc.get(field), list | tuple) else ()  # noqa: E731  (else: a type problem)
        for field in ("settings", "table2_modalities"):
            for i, spec in enumerate(listed(field)):
                try:
                    inputs = parse_modalities(spec)
                except ValueError as e:
                    problems.append(f"protocol.{field}[{i}]: {e}")
                    continue
                if field == "table2_modalities" and not any(m in IMAGE_INPUTS for m in inputs):
                    problems.append(
                        f"protocol.table2_modalities[{i}]: {spec!r} has no image input (Table 2 compares the "
                        "backbones on an image input)"
                    )
        for i, backbone in enumerate(listed("backbones")):
            if backbone not in BACKBONES:
                problems.append(f"protocol.backbones[{i}]: {backbone!r} is not one of {', '.join(BACKBONES)}")
        if isinstance(pc.get("settings"), list | tuple) and not pc.settings:  # (helper-116: a Table 3 of nothing)
            problems.append("protocol.settings: empty: Table 3 compares at least one input setting")
        for field in ("settings", "table2_modalities", "backbones"):  # (helper-115: each run trained twice)
            items = [str(v) for v in listed(field)]
            if twice := sorted({v for v in items if items.count(v) > 1}):
                problems.append(f"protocol.{field}: {', '.join(map(repr, twice))} given twice: each once")
    if "modalities" not in config:
        problems.append("modalities: absent (the model's inputs, e.g. 'triple' or 'bmode,us_lnm')")
    modalities = config.get("modalities", "triple")
    try:  # another type than a string: type_problems names it
        images = [m for m in parse_modalities(modalities) if m in IMAGE_INPUTS] if isinstance(modalities, str) else []
    except ValueError as e:
        problems.append(f"modalities: {e}")
        images = []
    if not stored and (loose := modalities_spelling(modalities)):
        problems.append(f"modalities: {loose}")
    problems += [f"data.norm: no entry for '{m}', an input of modalities" for m in images if m not in config.data.norm]
    for name, stats in config.data.norm.items():
        for key in ("mean", "std"):
            given = stats.get(key) if hasattr(stats, "get") else None
            v = tuple(given) if isinstance(given, list | tuple) else ()
            if len(v) != 3 or not all(is_number(x) for x in v) or (key == "std" and min(v) <= 0):
                need = "three numbers > 0" if key == "std" else "three numbers"
                problems.append(f"data.norm.{name}.{key}: {given!r} is not {need}")
    if not any(p.startswith("data.synth") for p in problems):
        problems += _synth_problems(config.data.get("synth"))
    return problems


def _synth_problems(synth) -> list[str]:
    """The embedded cohort's parameters as its generator checks them (every strength finite,
    rates in range, clips and formats consistent), named with their field; the generator
    would otherwise refuse them only once the run folder exists."""
    from lnm_jax.data.synth.synthetic import SynthParams  # noqa: PLC0415

    if not hasattr(synth, "to_dict"):
        return []
    try:
        SynthParams(**synth.to_dict())
    except TypeError as e:  # a field the generator does not know: type_problems names unknown keys
        return [f"data.synth: {e}"]
    except ValueError as e:
        return [f"data.synth.{e}"]
    return []


def check_fields(config) -> None:
    """:class:`ConfigError` listing :func:`config_problems`, if any."""
    if problems := config_problems(config):
        raise ConfigError(problems)


# groups whose fields are named by the cohort or the task, not by this version's schema: a
# config holds the inputs it has (DDTI's task has no CEUS), so none of theirs is required
OPEN_GROUPS = ("task.inputs.", "data.norm.")


def norm_is_papers(config) -> bool:
    """Whether ``config``'s ``data.norm`` is the paper's statistics (:data:`PAPER_NORM`) for
    every input it lists: the default, not values given by hand (e.g. from ``norm-stats``)."""
    as_lists = lambda v: {s: [float(x) for x in v[s]] for s in ("mean", "std")}  # noqa: E731
    return all(as_lists(v) == as_lists(PAPER_NORM[k]) for k, v in config.data.norm.items() if k in PAPER_NORM)


# Fields added since runs were first stored whose value in a run stored before them is certain,
# not a guess: read as that value (before data.norm_from, data.norm was always the config's;
# before data.augment.clip, augmentation always clipped to [0, 1]; before model.bn_running_var,
# the running variance was the biased one; before model.batchnorm, flax's BatchNorm
# differentiated by JAX; before train.checkpoint_every_epochs, 'latest' was saved every epoch).
# helper-114: a run of 2026-12-06 was refused as edited for lacking model.bn_running_var; every
# field added since tests/fixtures/config_7797d27.json (2026-12-02) is here or refused by a test.
KNOWN_BEFORE_ADDED = {
    "data.norm_from": "config",
    "data.augment.clip": True,
    "model.bn_running_var": "biased",
    "model.batchnorm": "flax",
    "train.checkpoint_every_epochs": 1,
}


def missing_fields(config, stored: bool = True) -> dict[str, object]:
    """The fields every config of this version holds (:func:`base_config`'s, less
    :data:`OPEN_GROUPS`, and for a ``stored`` run's config :data:`KNOWN_BEFORE_ADDED`) that
    ``config`` lacks, each with this version's default: a run's ``config.json`` edited by hand
    (helper-60: a deleted ``data.augment.flip`` passed every check, and a resume failed on it
    with a KeyError after writing to the run folder), written by an older version without the
    field, or a config file's ``get_config()`` without it (``stored=False``)."""
    held, base = set(config_keys(config)), base_config()
    out = {}
    for k in config_keys(base):
        if k not in held and not k.startswith(OPEN_GROUPS) and not (stored and k in KNOWN_BEFORE_ADDED):
            value = base
            for part in k.split("."):
                value = value[part]
            out[k] = value
    return out


def config_keys(config, prefix: str = "") -> list[str]:
    """Every leaf field of ``config`` as a dotted name (for closest-name suggestions)."""
    out = []
    for k, v in config.items():
        out += config_keys(v, f"{prefix}{k}.") if hasattr(v, "items") else [f"{prefix}{k}"]
    return out


def frozen_backbone_epochs(config) -> int:
    """The epochs the image branches train frozen: ``train.freeze_backbone_epochs`` where they
    are loaded from ``model.init_from``, else 0 (a random backbone frozen in inference mode
    gives features that were never normalised: the small-cohort config's 5 epochs apply to
    pretrained branches only, and its command without a pretraining trains them from the first
    epoch)."""
    return int(config.train.get("freeze_backbone_epochs", 0)) if config.model.get("init_from") else 0
