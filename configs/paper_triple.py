"""The built-in experiment `paper_triple` (lnm_jax/configs/paper_triple.py), kept at this path for
the commands and scripts that name it; `--config paper_triple` names it from any folder."""

from lnm_jax.configs.paper_triple import get_config  # noqa: F401
