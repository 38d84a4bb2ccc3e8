"""`lnm-jax reproduce` on BUS-BRA (public breast ultrasound; see ../shared/data/README.md),
CPU-sized as lnm_jax/configs/reproduce_cpu.py. The two views stand in for B-mode and CEUS, BI-RADS >= 4
for the US-LNM flag, malignancy for LNM. Normalisation: the training split's own statistics
(`lnm-jax norm-stats --manifest M --image-size 80`, split seed 0), not the paper's thyroid ones.

    lnm-jax convert-busbra --src ../shared/data/busbra-dev --out runs/busbra/manifest.csv
    lnm-jax reproduce --config reproduce_busbra --manifest runs/busbra/manifest.csv \\
        --workdir runs/busbra/protocol
"""

from ml_collections import ConfigDict

from lnm_jax.config import reproduce_cpu_config
from lnm_jax.data.cohorts import busbra


def get_config():
    c = reproduce_cpu_config()
    c.name = "reproduce_busbra"
    c.data.norm = ConfigDict(busbra.NORM)
    c.task = ConfigDict(busbra.TASK)
    # Single-view patients have no second view ('ceus'): the paper's settings feed it as zeros,
    # as the project's BUS-BRA figures were measured (model.missing_inputs learns it instead).
    c.data.zero_fill_missing = True
    return c
