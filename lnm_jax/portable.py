"""The modules of this package an export carries (``lnm_runtime``: decoding, framing, manifest
reading, program loading), and the digest of their source that tells whether the code that
preprocesses an image is the code a model was trained with (:func:`preprocessing_digest`,
recorded in every ``run_info.json`` and compared by the model card).

Reads source files only (no JAX): :mod:`lnm_jax.provenance` records the digest of every
process that writes a run.
"""

from __future__ import annotations

import ast
import functools
import hashlib
from pathlib import Path

PACKAGE = "lnm_jax"
SERVING = "serving.py"  # the runtime's entry: what the export folder's predict.py and lnm_runtime call
# Modules that must never reach the runtime: the training stack, or what needs it.
NOT_PORTABLE = ("flax", "optax", "orbax", "grain", "sklearn", "tensorflow", "ml_collections", "matplotlib")


def portable_modules() -> tuple[str, ...]:
    """The files of this package the export folder carries: :data:`SERVING` and every module of
    the package it imports, at any depth and inside functions too (read from their source with
    ``ast``, so that a new import travels without a list to keep by hand). ValueError when one
    of them imports the training stack (:data:`NOT_PORTABLE`)."""
    root = Path(__file__).resolve().parent
    todo, seen = [SERVING], set()
    while todo:
        rel = todo.pop()
        if rel in seen:
            continue
        seen.add(rel)
        for node in ast.walk(ast.parse((root / rel).read_text(encoding="utf-8"), rel)):
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                mods = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            for mod in mods:
                top = mod.split(".")[0]
                if top in NOT_PORTABLE:
                    raise ValueError(f"{PACKAGE}/{rel} imports {mod}: it cannot run in an export folder")
                if top != PACKAGE:
                    continue
                parts = mod.split(".")[1:]
                if parts and (root / Path(*parts).with_suffix(".py")).is_file():  # a module, not a package
                    todo.append(Path(*parts).with_suffix(".py").as_posix())
    return tuple(sorted(seen))


def third_party_imports() -> set[str]:
    """The top-level names of every module outside the standard library and this package that
    :func:`portable_modules` import (anywhere in their source): what an export's
    ``requirements.txt`` must provide (helper-98: a progress bar's ``tqdm``, imported by the
    manifest reader, had reached the export folder unlisted, and a colleague's ``predict.py``
    failed on it)."""
    import sys  # noqa: PLC0415

    root, out = Path(__file__).resolve().parent, set()
    for rel in portable_modules():
        for node in ast.walk(ast.parse((root / rel).read_text(encoding="utf-8"), rel)):
            if isinstance(node, ast.Import):
                tops = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                tops = [node.module.split(".")[0]]
            else:
                continue
            out |= {t for t in tops if t not in sys.stdlib_module_names and t not in (PACKAGE, "__future__")}
    return out


@functools.cache
def preprocessing_digest() -> str:
    """SHA-256 of the :func:`portable_modules`' source (each file's path and bytes, in order):
    the same value wherever this package's decoding, framing and manifest reading are the same
    code, whatever else changed. Computed once per process (0.1 s: every module parsed), which
    asks for it at each run record, checkpoint reader and model card."""
    root, h = Path(__file__).resolve().parent, hashlib.sha256()
    for rel in portable_modules():
        h.update(rel.encode() + b"\0" + (root / rel).read_bytes() + b"\0")
    return h.hexdigest()
