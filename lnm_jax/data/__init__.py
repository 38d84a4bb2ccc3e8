"""Cohorts, pixels and loaders; never imports models or training. Sub-packages by
responsibility: ``pixels`` (the one decoder of every file), ``cohorts`` (manifests, splits,
validation's survey, converters), ``privacy`` (de-identification), ``synth`` (synthetic
cohorts), ``loaders`` (batches).

The modules that lived directly in ``lnm_jax.data`` before this layout keep their old import
paths (``from lnm_jax.data.sources import decode_input``) for scripts written against them:
the old name is the same module object as the new one, with a DeprecationWarning.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

MOVED = {
    **dict.fromkeys(("decode", "dicom", "clips", "sources"), "pixels"),
    **dict.fromkeys(("manifest", "splits", "survey", "busbra", "unlabeled"), "cohorts"),
    **dict.fromkeys(("phi", "deidentify"), "privacy"),
    **dict.fromkeys(("synthetic", "synthetic_dicom"), "synth"),
    **dict.fromkeys(("loader", "augment", "on_device", "pipeline", "tfds_builder"), "loaders"),
}


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """``lnm_jax.data.<old>`` -> ``lnm_jax.data.<package>.<old>`` (the same module object)."""

    def find_spec(self, fullname, path=None, target=None):
        head, _, tail = fullname.rpartition(".")
        if head == __name__ and tail in MOVED:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        return None  # a plain module, replaced in exec_module

    def exec_module(self, module):
        tail = module.__name__.rpartition(".")[2]
        new = f"{__name__}.{MOVED[tail]}.{tail}"
        warnings.warn(f"{module.__name__} moved to {new}", DeprecationWarning, stacklevel=2)
        sys.modules[module.__name__] = importlib.import_module(new)


if not any(isinstance(f, _MovedModules) for f in sys.meta_path):
    sys.meta_path.append(_MovedModules())
