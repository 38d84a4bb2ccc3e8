"""The built-in experiment `reproduce_busbra` (lnm_jax/configs/reproduce_busbra.py), kept at this path for
the commands and scripts that name it; `--config reproduce_busbra` names it from any folder."""

from lnm_jax.configs.reproduce_busbra import get_config  # noqa: F401
