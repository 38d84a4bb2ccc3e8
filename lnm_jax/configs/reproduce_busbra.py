"""`lnm-jax reproduce` on BUS-BRA (public breast ultrasound; see ../shared/data/README.md),
CPU-sized as lnm_jax/configs/reproduce_cpu.py. The two views stand in for B-mode and CEUS, BI-RADS >= 4
for the US-LNM flag, malignancy for LNM. Normalisation: the training split's own statistics
(`lnm-jax norm-stats --manifest M --image-size 80`, split seed 0), not the paper's thyroid ones.

    lnm-jax convert-busbra --src ../shared/data/busbra-dev --out runs/busbra/manifest.csv
    lnm-jax reproduce --config reproduce_busbra --manifest runs/busbra/manifest.csv \\
        --workdir runs/busbra/protocol
"""

from lnm_jax.config import reproduce_cpu_config
from lnm_jax.data.cohorts import busbra


def get_config():
    return busbra.configured(reproduce_cpu_config(), "reproduce_busbra")
