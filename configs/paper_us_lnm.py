"""The built-in experiment `paper_us_lnm` (lnm_jax/configs/paper_us_lnm.py), kept at this path for
the commands and scripts that name it; `--config paper_us_lnm` names it from any folder."""

from lnm_jax.configs.paper_us_lnm import get_config  # noqa: F401
