"""lnm_jax: multimodality CNN for cervical lymph node metastasis prediction (JAX/Flax).

Layout: ``data`` (cohorts, manifests, splits, tf.data input), ``models`` (Flax backbones
and the fusion classifier), ``training`` (train state, jitted steps, loop, checkpoints),
``evaluation`` (metrics and plots), ``cli`` (the ``lnm-jax`` command).
"""

__version__ = "0.1.0"
