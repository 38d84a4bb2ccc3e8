"""The one-command demo: the triple setting sized for 2 CPU cores on the synthetic cohort."""

from lnm_jax.config import demo_config


def get_config():
    return demo_config()
