"""The paper's 'us_lnm' setting: the US-LNM flag alone (no image branch), Adam 1e-3 + plateau."""

from lnm_jax.config import base_config


def get_config():
    return base_config("us_lnm")
