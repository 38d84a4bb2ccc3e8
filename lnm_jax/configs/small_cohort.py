"""Pretraining + fine-tuning for a real cohort of a few hundred patients on 2 CPU cores
(docs/small_cohorts.md):

    lnm-jax pretrain --config small_cohort --manifest M --workdir W/pretrain
    lnm-jax train --config small_cohort --config.data.manifest=M \\
        --config.model.init_from=W/pretrain/backbone --workdir W/run
    lnm-jax evaluate --workdir W/run
"""

from lnm_jax.config import small_cohort_config


def get_config():
    return small_cohort_config()
