"""`lnm-jax export`: the model as a folder that runs with jax + numpy alone, equal to the live
model; `predict --exported` equal to `predict --workdir`; the model card.

Tolerance: the exported program computes the live model's function with 1x1 convolutions as
XLA convolutions instead of the GEMMs training uses on the CPU, i.e. the same fp32 products
summed in another order. Each sum of K <= 9 * 512 terms moves by ~sqrt(K) u relative (u = 6e-8)
and ~20 layers compound that, about 1e-5 relative on logits of order 1: logits compare at
atol 1e-4 (the issue's parity bound)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
from support import cpu_env, new_patients, tiny_config

from lnm_jax import names
from lnm_jax.cli import main
from lnm_jax.export import export_run
from lnm_jax.exported import METADATA, MODEL_CARD, load, load_onnx
from lnm_jax.run import Run

ATOL = 1e-4

BLOCKER = """
import importlib.abc, sys
ALLOWED = {"lnm_jax", "lnm_jax.exported"}
BLOCKED = {"flax", "optax", "orbax", "tensorflow", "tensorflow_datasets", "ml_collections", "torch", "keras"}
BLOCKED |= set(sys.argv[1:])  # the ONNX check blocks jax too
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in BLOCKED or (name.startswith("lnm_jax") and name not in ALLOWED):
            raise ImportError(f"blocked: {name}")
sys.meta_path.insert(0, Block())
"""


def random_inputs(spec: dict, n: int, seed: int = 0, missing: bool = False) -> dict:
    r = np.random.default_rng(seed)
    out = {}
    for k, v in spec.items():
        shape = [n if d == "B" else d for d in v["shape"]]
        if v["dtype"] == "bool":
            out[k] = r.random(n) > 0.4 if missing else np.ones(n, bool)
        else:
            out[k] = r.random(shape).astype(np.float32)
    if names.US_LNM in out:
        out[names.US_LNM] = (r.random(n) > 0.5).astype(np.float32) * out[names.has(names.US_LNM)]
    return out


def live_logits(run: Run, inputs: dict) -> np.ndarray:
    """The live model (as `predict --workdir` runs it) on ``inputs`` normalised as the input
    pipeline normalises."""
    norm = run.config.data.norm.to_dict()
    batch = dict(inputs)
    for m in names.IMAGE_INPUTS:
        if m in batch:
            present = batch[names.has(m)].astype(np.float32).reshape((-1,) + (1,) * (batch[m].ndim - 1))
            batch[m] = (batch[m] - np.float32(norm[m]["mean"])) / np.float32(norm[m]["std"]) * present
    p = run.predictor("best")
    return np.asarray(p.step(p.params, p.batch_stats, batch)["logit"])


def test_export_runs_without_the_training_stack_and_equals_the_live_model(triple_run, tiny_cohort, tmp_path):
    out = tmp_path / "exported"
    args = ["export", "--workdir", str(triple_run.workdir), "--out", str(out), "--format", "stablehlo,onnx"]
    assert main(args) == 0
    md = json.loads((out / METADATA).read_text())
    assert md["export"]["stablehlo"]["platforms"] == ["cpu", "cuda"] and md["export"]["onnx"]["opset"] == 23
    assert md["architecture"]["inputs"] == ["bmode", "ceus", "us_lnm"]
    assert "Not a medical device" in (out / MODEL_CARD).read_text()
    model = load(out)
    for n in (1, 7):
        x = random_inputs(model.inputs, n, seed=n)
        np.savez(tmp_path / f"x{n}.npz", **x)
        np.save(tmp_path / f"live{n}.npy", live_logits(triple_run, x))
    code = BLOCKER + (
        "import numpy as np\nfrom lnm_jax.exported import load\n"
        f"m = load({str(out)!r})\n"
        "for n in (1, 7):\n"
        f"    x = dict(np.load({str(tmp_path)!r} + f'/x{{n}}.npz'))\n"
        "    out = m(x)\n"
        f"    np.save({str(tmp_path)!r} + f'/exported{{n}}.npy', out['logit'])\n"
        "    assert out['prob'].shape == (n,)\n"
        "import sys; assert 'flax' not in sys.modules and 'tensorflow' not in sys.modules\n"
    )
    onnx_code = BLOCKER + (
        "import numpy as np\nfrom lnm_jax.exported import load_onnx\n"
        f"m = load_onnx({str(out)!r})\n"
        "for n in (1, 7):\n"
        f"    x = dict(np.load({str(tmp_path)!r} + f'/x{{n}}.npz'))\n"
        f"    np.save({str(tmp_path)!r} + f'/onnx{{n}}.npy', m(x)['logit'])\n"
        "import sys; assert 'jax' not in sys.modules\n"
    )
    for program, blocked in ((code, []), (onnx_code, ["jax", "jaxlib"])):
        res = subprocess.run(
            [sys.executable, "-c", program, *blocked], env=cpu_env(), capture_output=True, text=True, timeout=300
        )
        assert res.returncode == 0, res.stderr[-3000:]
    for n in (1, 7):
        for fmt in ("exported", "onnx"):
            np.testing.assert_allclose(
                np.load(tmp_path / f"{fmt}{n}.npy"), np.load(tmp_path / f"live{n}.npy"), atol=ATOL
            )
    # predict --exported gives predict --workdir's probabilities
    new = new_patients(tiny_cohort, tmp_path / "new.csv", 7)
    args = ["predict", "--manifest", str(new), "--out"]
    assert main([*args, str(tmp_path / "w.csv"), "--workdir", str(triple_run.workdir)]) == 0
    assert main([*args, str(tmp_path / "e.csv"), "--exported", str(out)]) == 0
    by_run, by_export = (list(csv.DictReader((tmp_path / f).open())) for f in ("w.csv", "e.csv"))
    assert [r["patient_id"] for r in by_export] == [r["patient_id"] for r in by_run]
    for a, b in zip(by_run, by_export):
        assert abs(float(a["prob_lnm"]) - float(b["prob_lnm"])) <= ATOL / 4  # |d sigmoid| <= |d logit| / 4


def _untrained_run(config, workdir) -> Run:
    """A run whose 'best' checkpoint is its initial state: what export does to it does not
    depend on training."""
    run = Run.create(config, workdir)
    ckpts = run.checkpoints(create=True)
    ckpts.save("best", 0, run.fresh_state(), {"epoch": 0, "best": {}})
    ckpts.close()
    return Run.open(workdir)


@pytest.mark.parametrize("variant", ["missing_inputs", "clip"])
def test_missing_input_and_clip_models_export_with_their_inputs(variant, tiny_cohort, tmp_path):
    config = tiny_config(tiny_cohort, "ceus,us_lnm")  # one image branch and the flag: both variants
    config.model.width = 4
    if variant == "missing_inputs":
        config.model.missing_inputs = True
    else:
        config.data.clip_frames = 3
        config.model.temporal_pool = "attention"
    run = _untrained_run(config, tmp_path / "run")
    export_run(run, tmp_path / "x", formats=("stablehlo", "onnx"))
    model = load(tmp_path / "x")
    if variant == "clip":
        assert model.inputs[names.CEUS]["shape"] == ["B", 3, 32, 32, 3]
    x = random_inputs(model.inputs, 7, missing=variant == "missing_inputs")
    live = live_logits(run, x)
    np.testing.assert_allclose(model(x)["logit"], live, atol=ATOL)
    np.testing.assert_allclose(load_onnx(tmp_path / "x")(x)["logit"], live, atol=ATOL)
