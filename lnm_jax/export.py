"""``lnm-jax export``: a trained run's model as a self-contained folder that runs where neither
this package nor flax is installed.

    DIR/predict.py          python DIR/predict.py --manifest M --out probs.csv (lnm-jax predict's columns)
    DIR/lnm_runtime/        from lnm_runtime import load (DIR on sys.path): model.predict(images)
    DIR/requirements.txt    pip install -r DIR/requirements.txt (jax, numpy, flatbuffers, Pillow, pydicom, ...)
    DIR/model.jax_export, weights.npz [, model.onnx], metadata.json, model_card.md, SHA256SUMS

``lnm_runtime`` is a copy of :func:`portable_modules` (``serving.py`` and every module of this
package it imports), this package's own decoding, framing, resize, manifest reading and program
loading, with only the package name changed: the export preprocesses an image with the code
that trained the model, not a description of it. Before the folder is committed, its
``lnm_runtime`` is imported in a subprocess that cannot import this package or flax
(:func:`check_runtime`): an export that would not run elsewhere is never written.

The program is the inference function with BatchNorm folded where the backbone allows it,
1x1 convolutions and max pools as XLA's own ops (the CPU lowering of training is a speed choice
of one backend; the exported program serves CPU and CUDA alike), the per-modality normalisation
inside, and three outputs: the logit, the probability and the probability calibrated with the
temperature ``evaluate`` fitted on validation. It is serialised with ``jax.export`` (StableHLO,
a symbolic batch size) for CPU and CUDA; the weights are an argument saved beside it, not
constants baked into it. A model card is written with it.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import jax
import jax.export  # a submodule `import jax` loads only from jax 0.8 (helper-117: jax 0.6 and 0.7)
import jax.numpy as jnp
import numpy as np

from lnm_jax import names
from lnm_jax.export_files import LICENSE
from lnm_jax.exported import (
    CHECKSUMS,
    ONNX,
    OUTPUTS,
    PREDICT_SCRIPT,
    PROGRAM,
    REQUIREMENTS,
    RUNTIME,
    WEIGHTS,
    load,
    load_onnx,
    write_checksums,
)
from lnm_jax.fileio import atomic_directory, json_text
from lnm_jax.model_card import PREPROCESSING_CHANGED, PREPROCESSING_UNRECORDED, input_spec, metadata, write_card
from lnm_jax.output_guard import guard_output
from lnm_jax.portable import NOT_PORTABLE, PACKAGE, portable_modules
from lnm_jax.provenance import license_text
from lnm_jax.run import Run
from lnm_jax.training.steps import inference_variables

PLATFORMS = names.EXPORT_PLATFORMS
FORMATS = names.EXPORT_FORMATS
# model.onnx's opset: 21, the newest onnxruntime 1.20 runs (ONNX Runtime's compatibility table),
# so that a colleague's older onnxruntime runs it. jax2onnx 0.17's default, 23, needs onnxruntime
# >= 1.23: 1.20.1 and 1.22.0 refused such a file while requirements.txt allowed them (a fresh-user
# trial); an export at 21 ran in 1.20.1 equal to the live model (1e-6, the CSV's rounding).
ONNX_OPSET = 21
ONNXRUNTIME = "onnxruntime>=1.20"  # the requirement that ONNX_OPSET sets
ONNX_PROVIDERS = ("CPUExecutionProvider",)  # what the parity tests run; CUDA's provider takes the same file


def inference_function(run: Run, checkpoint: str = "best"):
    """(fn(weights, inputs) -> {logit, prob, prob_calibrated}, weights): the exported program
    before export; ``weights`` is the flat list of the model's variables."""
    state, _ = run.restore(checkpoint)
    model, params, stats = inference_variables(run.model.clone(lowering="xla"), state, fold_bn=True)
    variables = {"params": params, **({"batch_stats": stats} if stats else {})}
    leaves, treedef = jax.tree.flatten(variables)
    temperature = run.temperature(checkpoint, strict=True) or 1.0  # none fitted: prob_calibrated = prob
    norm = run.config.data.norm.to_dict()
    inputs = names.parse_modalities(run.config.modalities)

    def fn(weights, batch):
        x = dict(batch)
        for m in inputs:
            if m in names.IMAGE_INPUTS:
                present = batch[names.has(m)].astype(jnp.float32).reshape((-1,) + (1,) * (batch[m].ndim - 1))
                mean, std = jnp.asarray(norm[m]["mean"], jnp.float32), jnp.asarray(norm[m]["std"], jnp.float32)
                x[m] = (batch[m] - mean) / std * present  # as the input pipeline: a missing image is zero
        logit = model.apply(jax.tree.unflatten(treedef, weights), x, train=False)["logit"].astype(jnp.float32)
        out = {"logit": logit, "prob": jax.nn.sigmoid(logit), "prob_calibrated": jax.nn.sigmoid(logit / temperature)}
        return {k: out[k] for k in OUTPUTS}

    return fn, [np.asarray(w) for w in leaves]


# what the program's source locations keep of a file's path: from the package's folder on
# (lnm_jax/models/resnet.py, flax/linen/module.py), not where it is installed (site-packages,
# dist-packages, a --target folder, a checkout; / or \\ separators); of any other file its name
SOURCE_PATH_PREFIX = r"^.*[/\\](?=lnm_jax[/\\])|^.*[/\\](?:site|dist)-packages[/\\]|^.*[/\\]"
# for the export's duration: each operation located by its innermost frame outside JAX (a
# model's line), not by the whole stack that called export
LOCATION_SETTINGS = {
    "jax_hlo_source_file_canonicalization_regex": SOURCE_PATH_PREFIX,
    "jax_include_full_tracebacks_in_locations": False,
}


@contextlib.contextmanager
def _source_paths_relative():
    """The serialised program's source locations say the model's line of each operation, its
    file named from its package's folder on (XLA's canonicalisation), for the export's
    duration (:data:`LOCATION_SETTINGS`): they had named the exporter's install and the stack
    that called export (``/home/NAME/venv/lib/python3.11/site-packages/lnm_jax/...``, the
    ``lnm-jax`` script, ``<frozen runpy>`` under ``python -m``), so one run, code and versions
    exported from two installs, or by the console script and by ``python -m lnm_jax``, gave two
    programs and two fingerprints (helper-117, helper-119)."""
    before = {name: getattr(jax.config, name) for name in LOCATION_SETTINGS}
    try:
        for name, value in LOCATION_SETTINGS.items():
            jax.config.update(name, value)
        yield
    finally:
        for name, value in before.items():
            jax.config.update(name, value)


def _input_structs(spec: dict, batch) -> dict:
    return {
        k: jax.ShapeDtypeStruct(tuple(batch if d == "B" else d for d in v["shape"]), jnp.dtype(v["dtype"]))
        for k, v in spec.items()
    }


def _runtime_init(md: dict) -> str:
    return f'''"""The runtime of the exported model in the folder above this package: {md["name"]}, {md["version"]}.

Written by lnm-jax export: a copy of lnm_jax's decoding, framing, manifest reading and program
loading (lnm_jax.serving and what it imports), the package name changed to lnm_runtime.

    import sys; sys.path.insert(0, "path/to/export")
    from lnm_runtime import load
    model = load()                      # this export; load(format="onnx") runs model.onnx
    out = model.predict({{"bmode": [path_or_array, ...], ...}})   # out["prob"], out["prob_calibrated"]
"""

from pathlib import Path

from {RUNTIME}.serving import Model, main, predict_manifest, unit_rgb
from {RUNTIME}.serving import load as _load

FOLDER = Path(__file__).resolve().parent.parent


def load(folder=None, format="stablehlo", fingerprint=None):  # noqa: A002
    """This export's model (or another export folder's), checksums verified (and against the
    export's published ``fingerprint``, 'sha256:...', where given)."""
    return _load(FOLDER if folder is None else folder, format, fingerprint)


__all__ = ["FOLDER", "Model", "load", "main", "predict_manifest", "unit_rgb"]
'''


PREDICT_PY = f'''"""Score a manifest with the model of this folder: python predict.py --manifest M --out probs.csv

Needs what requirements.txt lists (pip install -r requirements.txt); not lnm_jax, not flax.
Before any of {RUNTIME} is imported, its files are checked against {CHECKSUMS} (and that file
against --fingerprint, where given), and no compiled bytecode is read: a planted or stale
__pycache__ file would run instead of the checked source (helper-61).
"""

import atexit
import hashlib
import importlib.util
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
RUNTIME = HERE / "{RUNTIME}"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _fail(why: str) -> None:
    sys.exit(f"predict.py: error: {{why}}")


def _fingerprint_asked():
    for i, arg in enumerate(sys.argv):
        name = arg.split("=", 1)[0]
        if name != "--fingerprint" and len(name) > 3 and "--fingerprint".startswith(name):
            _fail(f"{{name}}: give --fingerprint in full (it is checked before the runtime is imported)")
        if arg == "--fingerprint" and i + 1 < len(sys.argv):
            return sys.argv[i + 1]
        if name == "--fingerprint" and "=" in arg:
            return arg.split("=", 1)[1]
    return None


def _checked_runtime() -> None:
    sums = HERE / "{CHECKSUMS}"
    if not sums.is_file():
        _fail(f"{{sums}} is missing: every file of an export is checked against it")
    if (given := _fingerprint_asked()) is not None:
        if _sha256(sums) != given.strip().lower().removeprefix("sha256:"):
            _fail(f"{{HERE}}: its fingerprint is not the one asked for (another export, or its files changed)")
    listed = {{}}
    for line in sums.read_text(encoding="utf-8").splitlines():
        digest, _, name = line.partition("  ")
        listed[name.strip()] = digest.strip()
    folders = {{Path(n).parent.as_posix() for n in listed}}
    for path in sorted(RUNTIME.rglob("*")):  # nothing in the runtime but its listed files (its bytecode is not read)
        rel = path.relative_to(HERE).as_posix()
        if "__pycache__" not in path.parts and rel not in listed and rel not in folders:
            _fail(f"{{path}} is not a file lnm-jax export wrote (not in {CHECKSUMS}): remove it or export again")
    for name, digest in listed.items():
        path = HERE / name
        if name.startswith("{RUNTIME}/") and not (path.is_file() and _sha256(path) == digest):
            _fail(f"{{path}} is not the file lnm-jax export wrote: export the model again")
    sys.dont_write_bytecode = True
    sys.pycache_prefix = tempfile.mkdtemp(prefix="{RUNTIME}_")  # the folder's __pycache__ is never read
    atexit.register(shutil.rmtree, sys.pycache_prefix, True)
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]  # no module here shadows an installed one
    # this folder's runtime by its location, whatever else on sys.path is named alike
    init, where = RUNTIME / "__init__.py", [str(RUNTIME)]
    spec = importlib.util.spec_from_file_location("{RUNTIME}", init, submodule_search_locations=where)
    module = importlib.util.module_from_spec(spec)
    sys.modules["{RUNTIME}"] = module
    spec.loader.exec_module(module)


_checked_runtime()
from {RUNTIME}.serving import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(folder=HERE))
'''


def _vendored(source: str) -> str:
    """A module's source with the package's own imports pointed at the runtime copy."""
    return re.sub(rf"\b{PACKAGE}\.", f"{RUNTIME}.", source).replace(f"from {PACKAGE} import", f"from {RUNTIME} import")


# The distribution each import of the runtime (lnm_runtime) comes from: the ones every export
# needs; jax (stablehlo), imageio_ffmpeg (a CEUS input) and onnxruntime (onnx) as requirements()
# adds them. tests/test_export.py checks that every third-party import of the portable modules
# (portable.third_party_imports) is one of these.
RUNTIME_REQUIREMENTS = {
    "numpy": "numpy>=1.26",
    "PIL": "pillow>=10",
    "simplejpeg": "simplejpeg>=1.9",
    "pydicom": "pydicom>=3.0",
    "tqdm": "tqdm>=4.66",
}
CONDITIONAL_IMPORTS = ("jax", "imageio_ffmpeg", "onnxruntime")


def requirements(md: dict, formats) -> list[str]:
    """What the export folder needs: jax (at least the exporting version: jax.export reads
    programs of older versions, not newer), flatbuffers (its serialisation), numpy, Pillow
    (images) with simplejpeg (libjpeg-turbo's warnings on a damaged JPEG), pydicom (DICOM) and
    tqdm (the manifest check's progress bar), imageio-ffmpeg (its bundled ffmpeg) for a model
    with a CEUS input (video clips), onnxruntime for model.onnx."""
    out = list(RUNTIME_REQUIREMENTS.values())
    if "stablehlo" in formats:
        out[:0] = [f"jax>={jax.__version__}", "flatbuffers>=24"]
    if names.CEUS in md["architecture"]["inputs"]:
        out.append("imageio-ffmpeg>=0.5")
    if "onnx" in formats:
        out.append(ONNXRUNTIME)
    return out


def write_runtime(folder: Path, md: dict, formats) -> None:
    """``lnm_runtime/`` (the portable modules), ``predict.py``, ``requirements.txt`` and the
    licence they are handed on under (``LICENSE``)."""
    src = Path(__file__).resolve().parent
    pkg = folder / RUNTIME
    for rel in portable_modules():
        dest = pkg / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(_vendored((src / rel).read_text(encoding="utf-8")), encoding="utf-8")
    for d in (p for p in pkg.rglob("*") if p.is_dir()):  # sub-packages: empty (no lnm_jax aliases)
        (d / "__init__.py").write_text("", encoding="utf-8")
    (pkg / "__init__.py").write_text(_runtime_init(md), encoding="utf-8")
    (folder / PREDICT_SCRIPT).write_text(PREDICT_PY, encoding="utf-8")
    (folder / LICENSE).write_text(license_text(), encoding="utf-8")
    (folder / REQUIREMENTS).write_text(
        f"# pip install -r {REQUIREMENTS}: what predict.py and lnm_runtime need (not lnm_jax, not flax)\n"
        + "\n".join(requirements(md, formats))
        + "\n",
        encoding="utf-8",
    )


RUNTIME_CHECK = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ImportError(f"{{name}} is not installed where the export runs")
sys.meta_path.insert(0, Block())
sys.path.insert(0, {folder!r})
import lnm_runtime, lnm_runtime.serving
"""


def check_runtime(folder: Path) -> None:
    """Imports the folder's ``lnm_runtime`` in a fresh interpreter where this package and the
    training stack cannot be imported; RuntimeError with the failure otherwise."""
    code = RUNTIME_CHECK.format(blocked={PACKAGE, *NOT_PORTABLE}, folder=str(folder))
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONDONTWRITEBYTECODE": "1"}  # (no __pycache__ in the export)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    if res.returncode != 0:
        last = (res.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise RuntimeError(f"the export's lnm_runtime does not import without {PACKAGE}: {last}")


def _write_onnx(fn, weights, spec: dict, path: Path, md: dict) -> str:
    """The same inference function as an ONNX graph (weights as initializers, batch 'B'),
    through jax2onnx: it converts the jaxpr the StableHLO program comes from, so both formats
    hold one function. ``md`` goes into the graph's ``metadata_props`` (``lnm_jax.metadata``:
    the whole metadata.json document; and the fields a viewer such as Netron shows:
    task, label, classes, image size, normalisation, temperature, thresholds). Returns the
    converter's version."""
    try:
        import jax2onnx  # noqa: PLC0415  (the onnx extra)
        from jax2onnx import to_onnx  # noqa: PLC0415
    except ImportError as e:
        from lnm_jax.provenance import extra_install  # noqa: PLC0415

        raise ImportError(f"ONNX export needs the converter and runtime: {extra_install('onnx')}") from e
    keys = list(spec)
    constants = [jnp.asarray(w) for w in weights]

    def positional(*xs):
        out = fn(constants, dict(zip(keys, xs)))
        return tuple(out[k] for k in OUTPUTS)

    structs = [jax.ShapeDtypeStruct(tuple(v["shape"]), jnp.dtype(v["dtype"])) for v in spec.values()]  # "B": symbolic
    serde = logging.getLogger("onnx_ir.serde")  # says it skips shape-only values' types, four times a model
    level = serde.level
    serde.setLevel(logging.ERROR)
    try:
        model = to_onnx(
            positional, structs, model_name="lnm_jax", opset=ONNX_OPSET, input_names=keys, output_names=list(OUTPUTS)
        )
    finally:
        serde.setLevel(level)
    model.doc_string = f"{md['name']}: {md['task']['name']} ({md['version']}). See model_card.md."
    for key, value in onnx_metadata(md).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    path.write_bytes(model.SerializeToString())
    try:
        return importlib.metadata.version("jax2onnx")
    except importlib.metadata.PackageNotFoundError:
        return getattr(jax2onnx, "__version__", "unknown")


def onnx_metadata(md: dict) -> dict[str, str]:
    """The ONNX ``metadata_props`` of an export (strings; JSON where structured)."""
    task, pre = md["task"], md["preprocessing"]
    return {
        "lnm_jax.metadata": json_text(md),
        "task": task["name"],
        "label": task["label"],
        "positive_class": task["positive"],
        "negative_class": task["negative"],
        "inputs": json_text(md["inputs"]),
        "outputs": json_text(md["outputs"]),
        "image_size": str(pre["image_size"]),
        "normalisation": json_text(pre["normalisation"]),
        "calibration_temperature": json_text(md["calibration_temperature"]),
        "thresholds": json_text(md["thresholds"]),
        "intended_use": task["intended_use"],
        "licence": task["licence"],
    }


def export_run(
    run: Run, out: Path | str, *, checkpoint: str = "best", platforms=PLATFORMS, formats=("stablehlo",)
) -> dict:
    """Writes the program (``formats``: 'stablehlo' and/or 'onnx'), the weights, the runtime
    (``lnm_runtime/``, ``predict.py``, ``requirements.txt``), ``metadata.json`` and
    ``model_card.md`` to ``out`` (a new folder, written atomically); returns the metadata with
    the artefact sizes (``export.bytes``: each file's, and each folder's, named ``name/``, as
    the sum of its files')."""
    if unknown := set(formats) - set(FORMATS):
        raise ValueError(f"unknown export format(s) {sorted(unknown)}, expected some of {list(FORMATS)}")
    # a new folder, never inside the run folder it reads
    guard_output(out, inputs=[run.workdir], kind="folder", can_overwrite=False)
    fn, weights = inference_function(run, checkpoint)
    spec = input_spec(run.config)
    md = metadata(run, checkpoint, strict=True)  # what is handed on: unsealed records refused
    for line in md["limits"]:  # said to the exporter too, not only in the card the colleague reads
        if line.startswith((PREPROCESSING_CHANGED, PREPROCESSING_UNRECORDED)):
            print(f"warning: {line}", file=sys.stderr)
    info = {"formats": list(formats), "jax": jax.__version__, "requirements": requirements(md, formats)}
    with atomic_directory(out) as tmp:
        if "stablehlo" in formats:
            (batch,) = jax.export.symbolic_shape("B")
            with _source_paths_relative():
                exported = jax.export.export(jax.jit(fn), platforms=tuple(platforms))(
                    [jax.ShapeDtypeStruct(w.shape, w.dtype) for w in weights], _input_structs(spec, batch)
                )
            (tmp / PROGRAM).write_bytes(exported.serialize())
            np.savez(tmp / WEIGHTS, **{f"w{i}": w for i, w in enumerate(weights)})
            info["stablehlo"] = {"platforms": list(platforms), "serialization": "jax.export"}
        if "onnx" in formats:
            version = _write_onnx(fn, weights, spec, tmp / ONNX, md)
            info["onnx"] = {
                "converter": f"jax2onnx {version}",
                "opset": ONNX_OPSET,
                "runtime": ONNXRUNTIME,
                "providers": list(ONNX_PROVIDERS),
            }
        info["source"] = run.computed_from(checkpoint)  # state_sha256: the checkpoint's arrays, as stored
        md = {**md, "export": info}
        write_runtime(tmp, md, formats)
        check_runtime(tmp)
        write_card(md, tmp)
        write_checksums(tmp)  # every file, the runtime, metadata and card included
    out = Path(out)
    md["export"]["bytes"] = {}
    for p in sorted(out.iterdir()):  # a folder (lnm_runtime/) by the bytes of the files in it
        files = [f for f in p.rglob("*") if f.is_file()] if p.is_dir() else [p]
        md["export"]["bytes"][p.name + "/" * p.is_dir()] = sum(f.stat().st_size for f in files)
    if "stablehlo" in formats:
        load(out)  # what was written loads
    if "onnx" in formats:
        load_onnx(out, providers=ONNX_PROVIDERS)
    return md
