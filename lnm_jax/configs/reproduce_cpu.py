"""`lnm-jax reproduce` sized for 2 CPU cores: the paper's protocol (Tables 1-3, figures,
statistics) with ResNet-50, VGG-11 and Inception-v3 at width 16 (a quarter of the channels) on
80x80 images (Inception-v3 needs at least 75), 30 epochs. On the embedded synthetic cohort (924
patients, as the demo) unless --manifest names another."""

from lnm_jax.config import reproduce_cpu_config


def get_config():
    return reproduce_cpu_config()
