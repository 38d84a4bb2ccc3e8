"""The built-in experiment `paper_bmode` (lnm_jax/configs/paper_bmode.py), kept at this path for
the commands and scripts that name it; `--config paper_bmode` names it from any folder."""

from lnm_jax.configs.paper_bmode import get_config  # noqa: F401
