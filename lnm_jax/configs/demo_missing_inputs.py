"""The demo, as one model for every availability pattern: learned 'absent' inputs and
modality dropout (each input hidden at rate 0.3 in training). Evaluate it per pattern with
``lnm-jax availability --workdir W [--dedicated no_ceus=RUN ...]``."""

from lnm_jax.config import demo_config


def get_config():
    c = demo_config()
    c.name = "demo_missing_inputs"
    c.model.missing_inputs = True
    c.model.modality_dropout = 0.3
    return c
