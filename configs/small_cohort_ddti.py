"""The built-in experiment `small_cohort_ddti` (lnm_jax/configs/small_cohort_ddti.py), kept at this path for
the commands and scripts that name it; `--config small_cohort_ddti` names it from any folder."""

from lnm_jax.configs.small_cohort_ddti import get_config  # noqa: F401
