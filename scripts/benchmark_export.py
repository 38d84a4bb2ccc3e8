"""Sizes, load and inference times of an exported model (StableHLO via jax.export, ONNX via
jax2onnx in onnxruntime) and their parity with the live JAX model.

    python scripts/benchmark_export.py --workdir RUN [--batch-sizes 1,8] [--repeats 5]
    python scripts/benchmark_export.py --untrained [--manifest M] [--backbone resnet50 --image-size 224]

``--untrained`` builds a run whose checkpoint is its initial state (sizes and times do not
depend on training): the paper's triple ResNet-50 at 224x224 by default, on ``--manifest`` or
on 16 synthetic patients. Without the ONNX converter (the ``[onnx]`` extra) only StableHLO is
measured, and the first line says so. Each format is loaded
in this process after export; times are wall-clock medians over ``--repeats`` calls after one
warm-up call (which compiles the StableHLO program for this machine).
"""

from __future__ import annotations

import argparse
import importlib.util
import tempfile
import time
from pathlib import Path

import numpy as np

from lnm_jax import names
from lnm_jax.config import base_config
from lnm_jax.data.synth.synthetic import SynthParams, generate_cohort
from lnm_jax.export import export_run
from lnm_jax.exported import load, load_onnx
from lnm_jax.run import Run


def untrained_run(manifest: Path, workdir: Path, backbone: str, image_size: int, width: int = 64) -> Run:
    config = base_config("triple")
    config.data.manifest = str(manifest)
    config.data.image_size = image_size
    config.model.backbone = backbone
    config.model.width = width
    run = Run.create(config, workdir)
    ckpts = run.checkpoints(create=True)
    ckpts.save("best", 0, run.fresh_state(), {"epoch": 0, "best": {}})
    ckpts.close()
    return Run.open(workdir)


def inputs(spec: dict, n: int, seed: int = 0) -> dict:
    """Inputs the program takes (the exported call checks them): availability true, the flag
    0 or 1, images uniform in [0, 1]."""
    r = np.random.default_rng(seed)
    out = {}
    for k, v in spec.items():
        shape = [n if d == "B" else d for d in v["shape"]]
        if v["dtype"] == "bool":
            out[k] = np.ones(n, bool)
        elif k == names.US_LNM:
            out[k] = r.integers(0, 2, shape).astype(np.float32)
        else:
            out[k] = r.random(shape, np.float32)
    return out


def timed(fn, repeats: int) -> tuple[float, float]:
    """(first call s, median of the next ``repeats`` calls s)."""
    t = time.perf_counter()
    fn()
    first = time.perf_counter() - t
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return first, float(np.median(times))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", type=Path)
    p.add_argument("--untrained", action="store_true")
    p.add_argument("--manifest", type=Path)
    p.add_argument("--backbone", default="resnet50")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--batch-sizes", default="1,8")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--stablehlo-only", action="store_true", help="measure the StableHLO program alone")
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if a.untrained:
            manifest = a.manifest or generate_cohort(tmp / "cohort", SynthParams(patients=16, size=a.image_size))
            run = untrained_run(manifest, tmp / "run", a.backbone, a.image_size, a.width)
        else:
            run = Run.open(a.workdir)
        onnx_ok = importlib.util.find_spec("jax2onnx") is not None and importlib.util.find_spec("onnxruntime")
        if a.stablehlo_only:
            onnx_ok = False
        elif not onnx_ok:
            print("ONNX: not measured (the converter or runtime is not installed: pip install -e '.[onnx]')")
        formats = ("stablehlo", "onnx") if onnx_ok else ("stablehlo",)
        t = time.perf_counter()
        md = export_run(run, tmp / "exported", formats=formats)
        print(
            f"model: {md['name']}, {md['architecture']['backbone']} at {md['image_size']}px, "
            f"{md['architecture']['parameters']:,} parameters; export ({', '.join(formats)}) "
            f"{time.perf_counter() - t:.1f} s"
        )
        print("artefacts: " + ", ".join(f"{k} {v / 1e6:.1f} MB" for k, v in md["export"]["bytes"].items()))
        t = time.perf_counter()
        hlo = load(tmp / "exported")
        t_hlo = time.perf_counter() - t
        t = time.perf_counter()
        onnx = load_onnx(tmp / "exported") if onnx_ok else None
        t_onnx = time.perf_counter() - t
        print(f"load: StableHLO {t_hlo:.2f} s" + (f", ONNX session {t_onnx:.2f} s" if onnx else ""))
        predictor = run.predictor("best")
        print(
            "| batch | StableHLO first call (compile) s | StableHLO s/call | ONNX Runtime s/call | "
            "max abs logit diff vs live: StableHLO | ONNX |"
        )
        print("|---:|---:|---:|---:|---:|---:|")
        norm = run.config.data.norm.to_dict()
        for n in (int(b) for b in a.batch_sizes.split(",")):
            x = inputs(hlo.inputs, n)
            batch = dict(x)
            for m in ("bmode", "ceus"):
                batch[m] = (x[m] - np.float32(norm[m]["mean"])) / np.float32(norm[m]["std"])
            live = np.asarray(predictor.step(predictor.params, predictor.batch_stats, batch)["logit"])
            first, hlo_s = timed(lambda x=x: hlo(x), a.repeats)
            d_hlo = np.abs(hlo(x)["logit"] - live).max()
            onnx_s, d_onnx = "-", "-"
            if onnx is not None:
                onnx_s = f"{timed(lambda x=x: onnx(x), a.repeats)[1]:.3f}"
                d_onnx = f"{np.abs(onnx(x)['logit'] - live).max():.1e}"
            print(f"| {n} | {first:.2f} | {hlo_s:.3f} | {onnx_s} | {d_hlo:.1e} | {d_onnx} |")


if __name__ == "__main__":
    main()
