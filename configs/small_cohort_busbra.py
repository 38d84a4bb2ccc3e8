"""The built-in experiment `small_cohort_busbra` (lnm_jax/configs/small_cohort_busbra.py), kept at this path for
the commands and scripts that name it; `--config small_cohort_busbra` names it from any folder."""

from lnm_jax.configs.small_cohort_busbra import get_config  # noqa: F401
