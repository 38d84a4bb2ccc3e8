"""`lnm-jax reproduce` sized for 2 CPU cores: the paper's protocol (Tables 1-3, figures,
statistics) with every backbone at width 16 (a quarter of the channels) on 80x80 images
(Inception-v3 needs at least 75), 30 epochs. On the embedded synthetic cohort (924 patients,
as the demo) unless --manifest names another, e.g. BUS-BRA via `lnm-jax convert-busbra`."""

from lnm_jax.config import demo_config


def get_config():
    c = demo_config()
    c.name = "reproduce_cpu"
    c.data.image_size = 80
    c.model.backbone = "resnet50"
    c.model.width = 16
    c.protocol.backbones = ("resnet50", "vgg11", "inception_v3")
    c.eval.bootstrap = 1000
    return c
