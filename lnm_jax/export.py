"""``lnm-jax export``: a trained run's model as a self-contained folder that runs with jax and
numpy alone (:mod:`lnm_jax.exported` loads it).

The program is the inference function with BatchNorm folded where the backbone allows it,
1x1 convolutions as XLA convolutions (the CPU GEMM lowering of training is a speed choice of
one backend; the exported program serves CPU and CUDA alike), the per-modality normalisation
inside, and three outputs: the logit, the probability and the probability calibrated with the
temperature ``evaluate`` fitted on validation. It is serialised with ``jax.export`` (StableHLO,
a symbolic batch size) for CPU and CUDA; the weights are an argument saved beside it, not
constants baked into it. A model card is written with it.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from lnm_jax import names
from lnm_jax.exported import ONNX, OUTPUTS, PROGRAM, WEIGHTS, load, load_onnx, write_checksums
from lnm_jax.fileio import atomic_directory, guard_output
from lnm_jax.model_card import input_spec, write_model_card
from lnm_jax.run import Run
from lnm_jax.training.checkpoint import DIGEST_KEY
from lnm_jax.training.steps import inference_variables

PLATFORMS = names.EXPORT_PLATFORMS
FORMATS = names.EXPORT_FORMATS
ONNX_OPSET = 23  # jax2onnx 0.17's default; onnxruntime >= 1.20 runs it
ONNX_PROVIDERS = ("CPUExecutionProvider",)  # what the parity tests run; CUDA's provider takes the same file


def inference_function(run: Run, checkpoint: str = "best"):
    """(fn(weights, inputs) -> {logit, prob, prob_calibrated}, weights): the exported program
    before export; ``weights`` is the flat list of the model's variables."""
    state, _ = run.restore(checkpoint)
    model, params, stats = inference_variables(run.model.clone(lowering="xla"), state, fold_bn=True)
    variables = {"params": params, **({"batch_stats": stats} if stats else {})}
    leaves, treedef = jax.tree.flatten(variables)
    temperature = run.temperature(checkpoint) or 1.0  # none fitted: prob_calibrated = prob
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


def _input_structs(spec: dict, batch) -> dict:
    return {
        k: jax.ShapeDtypeStruct(tuple(batch if d == "B" else d for d in v["shape"]), jnp.dtype(v["dtype"]))
        for k, v in spec.items()
    }


def _write_onnx(fn, weights, spec: dict, path: Path) -> str:
    """The same inference function as an ONNX graph (weights as initializers, batch 'B'),
    through jax2onnx: it converts the jaxpr the StableHLO program comes from, so both formats
    hold one function. Returns the converter's version."""
    try:
        import jax2onnx  # noqa: PLC0415  (the onnx extra)
        from jax2onnx import to_onnx  # noqa: PLC0415
    except ImportError as e:
        raise ImportError("ONNX export needs the onnx extra: pip install -e '.[onnx]' (jax2onnx, onnxruntime)") from e
    keys = list(spec)
    constants = [jnp.asarray(w) for w in weights]

    def positional(*xs):
        out = fn(constants, dict(zip(keys, xs)))
        return tuple(out[k] for k in OUTPUTS)

    structs = [jax.ShapeDtypeStruct(tuple(v["shape"]), jnp.dtype(v["dtype"])) for v in spec.values()]  # "B": symbolic
    model = to_onnx(
        positional, structs, model_name="lnm_jax", opset=ONNX_OPSET, input_names=keys, output_names=list(OUTPUTS)
    )
    path.write_bytes(model.SerializeToString())
    return getattr(jax2onnx, "__version__", "unknown")


def export_run(
    run: Run, out: Path | str, *, checkpoint: str = "best", platforms=PLATFORMS, formats=("stablehlo",)
) -> dict:
    """Writes the program (``formats``: 'stablehlo' and/or 'onnx'), the weights,
    ``metadata.json`` and ``model_card.md`` to ``out`` (a new folder, written atomically);
    returns the metadata with the artefact sizes."""
    if unknown := set(formats) - set(FORMATS):
        raise ValueError(f"unknown export format(s) {sorted(unknown)}, expected some of {list(FORMATS)}")
    # a new folder, never inside the run folder it reads
    guard_output(out, inputs=[run.workdir], kind="folder", can_overwrite=False)
    fn, weights = inference_function(run, checkpoint)
    spec = input_spec(run.config)
    info = {"formats": list(formats), "jax": jax.__version__}
    with atomic_directory(out) as tmp:
        if "stablehlo" in formats:
            (batch,) = jax.export.symbolic_shape("B")
            exported = jax.export.export(jax.jit(fn), platforms=tuple(platforms))(
                [jax.ShapeDtypeStruct(w.shape, w.dtype) for w in weights], _input_structs(spec, batch)
            )
            (tmp / PROGRAM).write_bytes(exported.serialize())
            np.savez(tmp / WEIGHTS, **{f"w{i}": w for i, w in enumerate(weights)})
            info["stablehlo"] = {"platforms": list(platforms), "serialization": "jax.export"}
        if "onnx" in formats:
            version = _write_onnx(fn, weights, spec, tmp / ONNX)
            info["onnx"] = {"converter": f"jax2onnx {version}", "opset": ONNX_OPSET, "providers": list(ONNX_PROVIDERS)}
        meta = run.predictor(checkpoint).meta
        info["source"] = {
            "run": str(run.workdir),
            "checkpoint": checkpoint,
            "epoch": meta.get("epoch"),
            "state_sha256": meta.get(DIGEST_KEY),  # the checkpoint's arrays, as stored with it
        }
        md = write_model_card(run, tmp, checkpoint, extra={"export": info})
        write_checksums(tmp)  # every file, the metadata and card included
    out = Path(out)
    md["export"]["bytes"] = {p.name: p.stat().st_size for p in sorted(out.iterdir())}
    if "stablehlo" in formats:
        load(out)  # what was written loads
    if "onnx" in formats:
        load_onnx(out, providers=ONNX_PROVIDERS)
    return md
