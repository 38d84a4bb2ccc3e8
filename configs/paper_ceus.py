"""The built-in experiment `paper_ceus` (lnm_jax/configs/paper_ceus.py), kept at this path for
the commands and scripts that name it; `--config paper_ceus` names it from any folder."""

from lnm_jax.configs.paper_ceus import get_config  # noqa: F401
