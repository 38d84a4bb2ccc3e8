"""Experiments as config files: each module's ``get_config()`` returns a checked
``ml_collections.ConfigDict`` built from :mod:`lnm_jax.config`. Name one by its module name on
any command (``--config paper_triple``: built in, so an installed package has them; helper-117)
or copy one as the template of your own file (``--config my_experiment.py``)."""
