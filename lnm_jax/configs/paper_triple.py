"""The paper's 'triple' setting: ResNet-50 per image branch, 224x224, Adam 1e-3 + plateau."""

from lnm_jax.config import base_config


def get_config():
    return base_config("triple")
