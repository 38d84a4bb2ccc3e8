"""The built-in experiment `small_cohort` (lnm_jax/configs/small_cohort.py), kept at this path for
the commands and scripts that name it; `--config small_cohort` names it from any folder."""

from lnm_jax.configs.small_cohort import get_config  # noqa: F401
