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

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from lnm_jax import names
from lnm_jax.exported import PROGRAM, WEIGHTS, load
from lnm_jax.fileio import atomic_directory
from lnm_jax.model_card import input_spec, write_model_card
from lnm_jax.run import Run
from lnm_jax.training.steps import inference_variables

PLATFORMS = ("cpu", "cuda")


def inference_function(run: Run, checkpoint: str = "best"):
    """(fn(weights, inputs) -> {logit, prob, prob_calibrated}, weights): the exported program
    before export; ``weights`` is the flat list of the model's variables."""
    state, _ = run.restore(checkpoint)
    model, params, stats = inference_variables(run.model.clone(lowering="xla"), state, fold_bn=True)
    variables = {"params": params, **({"batch_stats": stats} if stats else {})}
    leaves, treedef = jax.tree.flatten(variables)
    cal = run.files.calibration(checkpoint)
    temperature = float(json.loads(cal.read_text())["temperature"]) if cal.is_file() else 1.0
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
        return {"logit": logit, "prob": jax.nn.sigmoid(logit), "prob_calibrated": jax.nn.sigmoid(logit / temperature)}

    return fn, [np.asarray(w) for w in leaves]


def export_run(run: Run, out: Path | str, *, checkpoint: str = "best", platforms=PLATFORMS) -> dict:
    """Writes the program, weights, ``metadata.json`` and ``model_card.md`` to ``out`` (a new
    folder, written atomically); returns the metadata with the artefact sizes."""
    fn, weights = inference_function(run, checkpoint)
    (batch,) = jax.export.symbolic_shape("B")
    spec = input_spec(run.config)
    args = {
        k: jax.ShapeDtypeStruct(tuple(batch if d == "B" else d for d in v["shape"]), jnp.dtype(v["dtype"]))
        for k, v in spec.items()
    }
    exported = jax.export.export(jax.jit(fn), platforms=tuple(platforms))(
        [jax.ShapeDtypeStruct(w.shape, w.dtype) for w in weights], args
    )
    with atomic_directory(out) as tmp:
        (tmp / PROGRAM).write_bytes(exported.serialize())
        np.savez(tmp / WEIGHTS, **{f"w{i}": w for i, w in enumerate(weights)})
        md = write_model_card(run, tmp, checkpoint)
        md["export"] = {"platforms": list(platforms), "jax": jax.__version__, "format": "jax.export (StableHLO)"}
        (tmp / "metadata.json").write_text(json.dumps(md, indent=2))
    out = Path(out)
    md["export"]["bytes"] = {p.name: p.stat().st_size for p in sorted(out.iterdir())}
    load(out)  # what was written loads
    return md
