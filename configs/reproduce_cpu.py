"""The built-in experiment `reproduce_cpu` (lnm_jax/configs/reproduce_cpu.py), kept at this path for
the commands and scripts that name it; `--config reproduce_cpu` names it from any folder."""

from lnm_jax.configs.reproduce_cpu import get_config  # noqa: F401
