"""The built-in experiment `paper_dual` (lnm_jax/configs/paper_dual.py), kept at this path for
the commands and scripts that name it; `--config paper_dual` names it from any folder."""

from lnm_jax.configs.paper_dual import get_config  # noqa: F401
