"""The built-in experiment `demo` (lnm_jax/configs/demo.py), kept at this path for
the commands and scripts that name it; `--config demo` names it from any folder."""

from lnm_jax.configs.demo import get_config  # noqa: F401
