"""The project's vocabulary, defined once: input names, settings, batch keys and the paper's
normalisation constants.

Every layer (data, models, training, evaluation) imports these names from here; none of them
spells an input name as a literal. This module imports nothing heavy (no TensorFlow, no JAX),
so the config module and the models can both read it.
"""

from __future__ import annotations

BMODE = "bmode"
CEUS = "ceus"
US_LNM = "us_lnm"  # the sonographer's binary call: cervical nodes abnormal
LABEL = "lnm"  # pathology-confirmed lymph node metastasis
PATIENT_ID = "patient_id"
VALID = "valid"  # false on the padding rows of a fixed-shape evaluation batch
INPUT_LOGIT = "logit_"  # + an input name: that input's own head's logit in a model's predictions

IMAGE_INPUTS = (BMODE, CEUS)
INPUTS = (BMODE, CEUS, US_LNM)  # canonical order: the fused feature concatenates in it

# The paper's five input settings (Table 3).
SETTINGS = {
    "us_lnm": (US_LNM,),
    "bmode": (BMODE,),
    "ceus": (CEUS,),
    "dual": (BMODE, CEUS),
    "triple": (BMODE, CEUS, US_LNM),
}
SETTING_LABELS = {
    "us_lnm": "US-LNM",
    "bmode": "B-mode",
    "ceus": "CEUS",
    "dual": "dual (B-mode + CEUS)",
    "triple": "triple (B-mode + CEUS + US-LNM)",
}

# The paper's per-modality statistics of [0, 1]-scaled RGB images.
PAPER_NORM = {
    BMODE: {"mean": (0.190, 0.201, 0.223), "std": (0.123, 0.129, 0.142)},
    CEUS: {"mean": (0.226, 0.153, 0.092), "std": (0.231, 0.169, 0.114)},
}


def has(name: str) -> str:
    """The batch key of an input's availability mask (``has_bmode`` ...)."""
    return f"has_{name}"


def mask(name: str) -> str:
    """The manifest column of an image input's lesion mask (``bmode_mask`` ...)."""
    return f"{name}_mask"


MASK_COLUMNS = tuple(mask(m) for m in IMAGE_INPUTS)


def picture_file(patient_id: str, name: str, suffix: str = "") -> str:
    """The file (relative to its manifest) in which a cohort this package writes (synthetic,
    de-identified) keeps ``patient_id``'s input ``name`` (``suffix``: '.png', '.dcm', or '' for
    a clip's folder of frames)."""
    return f"images/{patient_id}_{name}{suffix}"


def mask_file(patient_id: str, name: str) -> str:
    """The file of ``patient_id``'s lesion mask of input ``name`` in such a cohort."""
    return picture_file(patient_id, f"{name}_mask", ".png")


AVAILABILITY_KEYS = tuple(has(m) for m in INPUTS)
# A training batch's lesion masks (only when the lesion head is trained: train.lesion_loss_weight):
# <input>_mask [B, S, S] float32, the framed mask, and has_<input>_mask.
LESION_KEYS = MASK_COLUMNS + tuple(has(m) for m in MASK_COLUMNS)
# What a jitted step consumes of a batch (patient ids stay on the host).
STEP_KEYS = INPUTS + AVAILABILITY_KEYS + (LABEL, VALID) + LESION_KEYS

# Names the command line offers before it imports the modules that use them (a fast --help).
CAM_METHODS = ("gradcam", "hirescam", "gradcam++")  # lnm_jax.explain.gradcam
CAM_TARGETS = ("lnm", "no_lnm")  # evidence for LNM (the logit) or against it (minus the logit)
# the image backbones by name (model.backbone; lnm_jax.models.backbones builds them)
BACKBONES = ("resnet10", "resnet18", "resnet34", "resnet50", "vgg11", "vgg11_bn", "inception_v3")
# how an image branch starts without pretrained weights, as the card and reproduce's report say it:
# every convolution takes Flax's default kernel initialiser (helper-89: the words had said He)
RANDOM_INIT = "random initialisation (Flax's default for every convolution: LeCun normal, not torchvision's He fan-out)"
# a checkpoint's record of its arrays' SHA-256 (training.checkpoint.DIGEST_KEY), and the column of
# predict's CSV that names the state its probabilities came from (helper-92: nothing linked a row to a model)
STATE_DIGEST = "state_sha256"
MODEL_STATE_COLUMN = "model_state_sha256"
# predict's column naming, for a run's predictions, each patient who is one of the run's training
# ("train") or validation ("val") patients (by id or by picture: lnm_jax.evaluation.seen); empty
# for the others. An export cannot tell (it holds no patient): its CSV has no such column
SEEN_COLUMN = "seen_by_run"
# the updates of a model's probabilities to a new site, simplest first (Steyerberg, Clinical
# Prediction Models, 2nd ed., 2019, ch. 20, methods 1-3): sigmoid(a + b * logit); and how
# external-validation chooses one ("closed-test": from the site's patients)
UPDATE_METHODS = ("none", "intercept", "logistic")
UPDATE_CHOICES = ("closed-test", *UPDATE_METHODS)
# those torchvision ships (ResNet-10 is the tests' own): convert-weights and verify_weights.py port them
TORCHVISION_BACKBONES = tuple(b for b in BACKBONES if b != "resnet10")
# how the fused model combines its inputs (model.fusion) and encodes the flag (model.flag_encoding)
FUSIONS = ("concat", "late")
FLAG_ENCODINGS = ("raw", "centred")
# how the backbones' 1x1 convolutions and 3x3 stride-2 max pools are expressed to XLA
# (model.lowering; lnm_jax.models.lowering)
LOWERINGS = ("auto", "xla", "cpu", "slices")
# how a ResNet's BatchNorm is differentiated in training (model.batchnorm; lnm_jax.models.batchnorm)
BATCHNORMS = ("auto", "flax", "fused")
# how a training step updates BatchNorm's running variance: with the batch's biased variance
# (flax's) or the unbiased one, x N/(N-1) (PyTorch's; Ioffe & Szegedy 2015, Algorithm 2)
RUNNING_VARS = ("biased", "unbiased")
# how a ResNet's 7x7 stride-2 stem is computed (model.stem; lnm_jax.models.lowering.resolve_stem)
STEMS = ("auto", "conv7", "space_to_depth")
# a CEUS dual display's contrast side (data.ceus_region; lnm_jax.data.pixels.sources)
CEUS_REGIONS = ("auto", "left", "right")
CAM_LAYERS = ("stem", "stage1", "stage2", "stage3", "stage4")  # the backbones' hooked maps, shallow to deep
EXPORT_FORMATS = ("stablehlo", "onnx")  # lnm_jax.export
EXPORT_PLATFORMS = ("cpu", "cuda")
# backbone.json's record of a pretraining's images: the content key (manifest.picture_keys) of
# each, which a run started from the backbone checks its test patients against
PRETRAINED_PICTURES = "pretrained_pictures"
SPLITS = ("train", "val", "test")  # the patient-level split's subsets (lnm_jax.data.cohorts.splits)
FINGERPRINT_HELP = (  # lnm_jax.exported.fingerprint; predict.py and lnm-jax predict --exported
    "the export's fingerprint as its publisher gave it (sha256:..., printed by lnm-jax export): refuse any other "
    "folder, even one whose SHA256SUMS was rewritten to match changed files"
)
# lnm_jax.evaluation.availability: pattern -> the inputs it withholds
AVAILABILITY_PATTERNS = {
    "all": (),
    "no_ceus": (CEUS,),
    "no_flag": (US_LNM,),
    "bmode_only": (CEUS, US_LNM),
    "no_bmode": (BMODE,),
    "ceus_only": (BMODE, US_LNM),
}


def parse_modalities(spec) -> tuple[str, ...]:
    """'triple' | 'bmode,ceus' | ('bmode', 'ceus') -> the canonical ordered tuple."""
    if isinstance(spec, str):
        names = SETTINGS.get(spec) or tuple(s.strip() for s in spec.split(",") if s.strip())
    else:
        names = tuple(spec)
    unknown = [n for n in names if n not in INPUTS]
    if unknown or not names:
        raise ValueError(
            f"modalities must be a non-empty subset of {INPUTS} or one of {sorted(SETTINGS)}, got {spec!r}"
        )
    return tuple(m for m in INPUTS if m in names)


def modalities_spelling(spec) -> str | None:
    """What is loose in how ``spec`` names its inputs, which :func:`parse_modalities` reads all
    the same: an input named twice or an empty item (``'bmode,bmode'``, ``'us_lnm,bmode,'``);
    None where nothing is. A new config is refused for it (helper-112: stored as written); a run
    stored with it reads as it trained (helper-115)."""
    if not isinstance(spec, str) or spec in SETTINGS:
        return None
    items = [s.strip() for s in spec.split(",")]
    if "" in items:
        return f"{spec!r} has an empty item"
    if len(set(items)) < len(items):
        return f"{spec!r} names an input twice: each once"
    return None


def setting_name(inputs: tuple[str, ...]) -> str | None:
    """The paper's name for a set of inputs ('dual', ...), or None for another combination."""
    return next((k for k, v in SETTINGS.items() if v == tuple(inputs)), None)
