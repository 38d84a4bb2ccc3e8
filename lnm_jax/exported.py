"""Load and run a model written by ``lnm-jax export``: needs only jax and numpy (no flax, no
TensorFlow, none of the project's training code), so a collaborator can run it anywhere JAX
runs.

    model = load("exported/")                  # a folder written by lnm-jax export
    out = model({"bmode": x, "ceus": c, "us_lnm": f, "has_bmode": hb, "has_ceus": hc, "has_us_lnm": hf})
    out["prob"], out["prob_calibrated"], out["logit"]   # each [B]

Inputs are the model's own (``model.inputs``): images as float32 in [0, 1] (RGB, resized to
``model.image_size``; a CEUS clip [B, T, H, W, 3]), the US-LNM flag as float32 0/1, and a
bool ``has_<input>`` per input (a missing image is zeroed inside; a model trained without
missing inputs expects every ``has_*`` true). The per-modality normalisation is applied
inside the program. The folder holds the serialised program (``model.jax_export``, StableHLO
for CPU and CUDA with a symbolic batch size), its weights (``weights.npz``) and
``metadata.json``; ``model_card.md`` describes it for a reader. With ``--format onnx`` it also
holds ``model.onnx`` (weights inside), which :func:`load_onnx` runs with onnxruntime and numpy
alone, called the same way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PROGRAM = "model.jax_export"
WEIGHTS = "weights.npz"
ONNX = "model.onnx"
METADATA = "metadata.json"
MODEL_CARD = "model_card.md"
OUTPUTS = ("logit", "prob", "prob_calibrated")


@dataclass(frozen=True)
class ExportedModel:
    """A deserialised program with its weights; call it on a dict of input arrays."""

    exported: object  # jax.export.Exported
    weights: tuple[np.ndarray, ...]
    metadata: dict

    @property
    def inputs(self) -> dict[str, dict]:
        """Input name -> {"shape": [...] with "B" for the batch, "dtype": ...}."""
        return self.metadata["inputs"]

    @property
    def image_size(self) -> int:
        return int(self.metadata["image_size"])

    def __call__(self, inputs: dict) -> dict[str, np.ndarray]:
        missing = sorted(set(self.inputs) - set(inputs))
        if missing:
            raise ValueError(f"missing inputs {missing}; the model takes {sorted(self.inputs)}")
        args = {k: np.asarray(inputs[k], dtype=self.inputs[k]["dtype"]) for k in self.inputs}
        out = self.exported.call(list(self.weights), args)
        return {k: np.asarray(v) for k, v in out.items()}


def _require(folder: Path, *files: str) -> None:
    for name in files:
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder / name} not found: is {folder} a folder written by lnm-jax export?")


def load(folder: Path | str) -> ExportedModel:
    """Reads a folder written by ``lnm-jax export`` (the StableHLO program)."""
    import jax  # noqa: PLC0415  (the ONNX loader needs no JAX)

    folder = Path(folder)
    _require(folder, PROGRAM, WEIGHTS, METADATA)
    exported = jax.export.deserialize(bytearray((folder / PROGRAM).read_bytes()))
    with np.load(folder / WEIGHTS) as npz:
        weights = tuple(npz[f"w{i}"] for i in range(len(npz.files)))
    metadata = json.loads((folder / METADATA).read_text())
    return ExportedModel(exported, weights, metadata)


@dataclass(frozen=True)
class OnnxModel:
    """The ONNX graph of an exported model in an onnxruntime session; called like
    :class:`ExportedModel` (needs only onnxruntime and numpy)."""

    session: object
    metadata: dict

    @property
    def inputs(self) -> dict[str, dict]:
        return self.metadata["inputs"]

    def __call__(self, inputs: dict) -> dict[str, np.ndarray]:
        feed = {k: np.asarray(inputs[k], dtype=self.inputs[k]["dtype"]) for k in self.inputs}
        return dict(zip(OUTPUTS, self.session.run(list(OUTPUTS), feed)))


def load_onnx(folder: Path | str, providers=("CPUExecutionProvider",)) -> OnnxModel:
    """Reads the ONNX graph of a folder exported with ``--format onnx``."""
    import onnxruntime  # noqa: PLC0415  (the onnx extra)

    folder = Path(folder)
    _require(folder, ONNX, METADATA)
    session = onnxruntime.InferenceSession(str(folder / ONNX), providers=list(providers))
    return OnnxModel(session, json.loads((folder / METADATA).read_text()))
