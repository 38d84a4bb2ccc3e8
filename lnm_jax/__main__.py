"""``python -m lnm_jax ...``: the ``lnm-jax`` command where its console script is not on PATH
(a venv not activated, a notebook's ``!python -m lnm_jax validate M``)."""

import sys

from lnm_jax.cli import entry_point

if __name__ == "__main__":
    sys.exit(entry_point())
