"""lnm_jax/configs/small_cohort.py on DDTI (public thyroid B-mode; ../shared/data/README.md): a B-mode-only
model of a demonstration label (TI-RADS >= 4a, a radiologist's rating, 83% positive), positives
weighted so that both classes count alike; the nodule outlines are lesion masks for scoring
Grad-CAM (docs/gradcam.md).

    lnm-jax convert-ddti --src ../shared/data/ddti --out runs/ddti/manifest.csv
    lnm-jax train --config small_cohort_ddti --config.data.manifest=runs/ddti/manifest.csv \\
        --workdir runs/ddti/run
"""

from ml_collections import ConfigDict

from lnm_jax.config import small_cohort_config
from lnm_jax.data.cohorts import ddti


def get_config():
    c = small_cohort_config()
    c.name = "small_cohort_ddti"
    c.modalities = "bmode"
    c.task = ConfigDict(ddti.TASK)
    c.train.pos_weight = "balanced"
    c.train.aux_loss_weight = 0.0  # one input: its head is the model's
    c.model.fusion = "concat"
    c.train.freeze_backbone_epochs = 0  # from scratch unless model.init_from is set
    c.protocol.pretrain = False
    return c
