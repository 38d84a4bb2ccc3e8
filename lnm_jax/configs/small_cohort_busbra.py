"""lnm_jax/configs/small_cohort.py on BUS-BRA (public breast ultrasound; ../shared/data/README.md), as
lnm_jax/configs/reproduce_busbra.py maps it: views -l/-r as the two image branches, BI-RADS >= 4 as the
flag, malignancy as the label; the training split's own normalisation; single-view patients'
second view fed as zeros, as the project's BUS-BRA figures were measured.

    lnm-jax convert-busbra --src ../shared/data/busbra-dev --out runs/busbra/manifest.csv
    lnm-jax pretrain --config small_cohort_busbra --manifest runs/busbra/manifest.csv \\
        --workdir runs/busbra/pretrain
    lnm-jax train --config small_cohort_busbra --config.data.manifest=runs/busbra/manifest.csv \\
        --config.model.init_from=runs/busbra/pretrain/backbone --workdir runs/busbra/small_cohort
"""

from lnm_jax.config import small_cohort_config
from lnm_jax.data.cohorts import busbra


def get_config():
    return busbra.configured(small_cohort_config(), "small_cohort_busbra")
