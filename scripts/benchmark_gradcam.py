"""Cost of a batch of Grad-CAMs relative to plain inference (same model, batch, device).

    python scripts/benchmark_gradcam.py --setting triple --backbone resnet50 --image-size 224 --batch 8

Both are jitted and warmed up; the clock stops after ``block_until_ready``. The CAM call
differentiates only from the chosen layer's activations to the logit, so its cost should be
about one forward pass (target <= 1.3x inference). TensorFlow-free.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import benchmark  # noqa: E402  (the model options the benchmark scripts share)

from lnm_jax.explain.gradcam import METHODS, make_cam_fn  # noqa: E402
from lnm_jax.models.fusion import FusionClassifier  # noqa: E402
from lnm_jax.names import parse_modalities  # noqa: E402
from lnm_jax.training.steps import make_eval_step  # noqa: E402


def timed(fn, *args, repeats: int) -> float:
    jax.block_until_ready(fn(*args))
    best = float("inf")
    for _ in range(repeats):  # best of N: the least disturbed run
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    benchmark.add_model_args(p)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--layer", default="stage4")
    p.add_argument("--repeats", type=int, default=5)
    a = p.parse_args()
    model = FusionClassifier(parse_modalities(a.setting), backbone=a.backbone, width=a.width)
    r = np.random.default_rng(0)
    shape = (a.batch, a.image_size, a.image_size, 3)
    batch = {
        "bmode": jnp.asarray(r.standard_normal(shape), jnp.float32),
        "ceus": jnp.asarray(r.standard_normal(shape), jnp.float32),
        "us_lnm": jnp.asarray(r.integers(0, 2, a.batch), jnp.float32),
    }
    v = jax.jit(lambda: model.init(jax.random.key(0), batch))()
    params, stats = v["params"], v["batch_stats"]
    dev = jax.devices()[0]
    print(
        f"device: {dev.platform} {dev.device_kind}; {a.setting} {a.backbone} w{a.width} "
        f"{a.image_size}px batch {a.batch}, layer {a.layer}"
    )
    infer = timed(make_eval_step(model), params, stats, batch, repeats=a.repeats)
    print("| method | time (s) | / inference |")
    print("|---|---:|---:|")
    print(f"| inference | {infer:.3f} | 1.00 |")
    for method in METHODS:
        t = timed(make_cam_fn(model, layer=a.layer, method=method), params, stats, batch, repeats=a.repeats)
        print(f"| {method} | {t:.3f} | {t / infer:.2f} |", flush=True)


if __name__ == "__main__":
    main()
