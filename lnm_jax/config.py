"""Experiment configuration defaults (``ml_collections.ConfigDict``).

The files under ``configs/`` are thin: each returns one of these, so every experiment is a
config file and every field can be overridden on the command line
(``--config.train.epochs=3``).
"""

from __future__ import annotations

from ml_collections import ConfigDict

from lnm_jax.names import PAPER_NORM, SETTINGS


def base_config(setting: str = "triple") -> ConfigDict:
    """The paper's protocol: ResNet-50 branches at 224x224, Adam 1e-3 + plateau drop."""
    c = ConfigDict()
    c.name = f"paper_{setting}"
    c.seed = 0
    # 'us_lnm' | 'bmode' | 'ceus' | 'dual' | 'triple' | a comma list such as 'bmode,us_lnm'.
    c.modalities = setting

    c.data = ConfigDict()
    # Cohort manifest CSV; empty = synthesise the embedded cohort (data.synth) into WORKDIR/cohort.
    c.data.manifest = ""
    c.data.image_size = 224
    # CEUS frames per patient: 1 = one still (the paper; the peak frame of a clip); T > 1
    # samples T frames over a clip's enhancement phase (stills are repeated T times).
    c.data.clip_frames = 1
    # 'grain' (default; no TensorFlow: PIL decode, numpy augmentation in grain's threads) or
    # 'tfds' (TFDS records + tf.data; needs the [tf] extra). Both give the same batches.
    c.data.loader = "grain"
    c.data.num_threads = 2  # grain: threads decoding and augmenting batches ahead of the step
    c.data.prefetch = 4  # grain: batches prepared ahead
    # Keep decoded, resized images in host memory after their first epoch.
    c.data.cache = True
    # Where the TFDS records of the cohort are built; empty = WORKDIR/tfds. Runs that share a
    # manifest (lnm-jax reproduce) share one folder and build it once.
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
    # modality_dropout: the rate at which training hides each present input (needs the former).
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
            # lowering: 1x1 convs as XLA convolutions ('xla') or as GEMMs
            # ('cpu': 1.7x faster train steps on XLA:CPU); 'auto' = 'cpu' on
            # the CPU backend, else 'xla' (models/lowering.py)
            lowering="auto",
            # Beyond the paper (models/fusion.py): 'concat' is its single dense head over every
            # feature; 'late' gives each input its own logit and combines them with a small
            # learned layer. input_heads: per-input logits (trained by train.aux_loss_weight)
            # beside the concat head. flag_encoding: 'raw' (0/1) | 'centred' (-1/+1).
            fusion="concat",
            input_heads=False,
            flag_encoding="raw",
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
    c.train.early_stop_patience = 0  # epochs without validation-AUC gain; 0 = off
    # Small-cohort fine-tuning (all off for the paper): the per-input heads' loss weight (needs
    # model.input_heads or model.fusion='late'); epochs with the pretrained image branches frozen
    # (needs model.init_from) before full fine-tuning; the image branches' learning rate as a
    # fraction of train.learning_rate; AdamW's decoupled weight decay on kernels.
    c.train.aux_loss_weight = 0.0
    c.train.freeze_backbone_epochs = 0
    c.train.backbone_lr_scale = 1.0
    c.train.weight_decay = 0.0
    # Stop as diverged when an epoch's mean train loss exceeds this (0 = off). A BCE of 100 puts
    # probability e^-100 on the true class on average; healthy runs stay near ln 2 = 0.69.
    c.train.max_loss = 100.0
    c.train.log_every_steps = 10
    # Also checkpoint every N steps within an epoch (model, optimizer and the loader's iterator
    # state), so that --resume continues mid-epoch on exactly the next batch; 0 = epoch ends only.
    c.train.checkpoint_every_steps = 0
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
            table2_modalities=("bmode", "ceus"),
            settings=tuple(SETTINGS),
            permutations=1000,
            threshold=0.5,
            folds=0,
            gradcam=True,
            # Pretrain (`lnm-jax pretrain`, config.pretrain) once per split, leaving out that
            # split's test patients, and start every image run of model.backbone from it.
            pretrain=False,
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
    and a late fusion that gives the flag its log-odds (README, "Bringing your own cohort").

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
