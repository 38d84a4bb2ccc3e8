"""The built-in experiment `demo_missing_inputs` (lnm_jax/configs/demo_missing_inputs.py), kept at this path for
the commands and scripts that name it; `--config demo_missing_inputs` names it from any folder."""

from lnm_jax.configs.demo_missing_inputs import get_config  # noqa: F401
