"""Train-step and inference throughput (patients/s) of a fusion config on whatever device JAX
sees. TensorFlow-free: runs on accelerator images without the data stack.

    python scripts/benchmark_train_step.py --setting triple --backbone resnet50 \
        --image-size 224 --batch-sizes 8 --steps 5

Random inputs; one compile per batch size (excluded from timing); the clock stops only after
``block_until_ready``. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

from lnm_jax.models.fusion import FusionClassifier, parse_modalities
from lnm_jax.training import state as state_lib
from lnm_jax.training.steps import make_eval_step, make_train_step


def make_batch(rng, batch_size: int, size: int) -> dict:
    r = np.random.default_rng(rng)
    return {"bmode": jnp.asarray(r.standard_normal((batch_size, size, size, 3), np.float32)),
            "ceus": jnp.asarray(r.standard_normal((batch_size, size, size, 3), np.float32)),
            "us_lnm": jnp.asarray(r.integers(0, 2, batch_size).astype(np.float32)),
            "lnm": jnp.asarray(r.integers(0, 2, batch_size).astype(np.int32)),
            "valid": jnp.ones(batch_size, bool)}


def bench(model, batch_size: int, size: int, steps: int, warmup: int) -> dict:
    batch = make_batch(0, batch_size, size)
    tx = state_lib.make_optimizer(1e-3)
    plateau = state_lib.make_plateau(dict(factor=0.1, patience=5, rtol=1e-4, cooldown=0, min_scale=0.0))
    state = state_lib.create_train_state(model, jax.random.key(0), batch, tx, plateau)
    train_step, eval_step = make_train_step(model, tx), make_eval_step(model)

    t0 = time.perf_counter()
    for _ in range(warmup):
        state, m = train_step(state, batch)
    jax.block_until_ready(m["loss"])
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(steps):
        state, m = train_step(state, batch)
    jax.block_until_ready(m["loss"])
    train_s = (time.perf_counter() - t0) / steps

    logits = eval_step(state.params, state.batch_stats, batch)
    jax.block_until_ready(logits)
    t0 = time.perf_counter()
    for _ in range(steps):
        logits = eval_step(state.params, state.batch_stats, batch)
    jax.block_until_ready(logits)
    infer_s = (time.perf_counter() - t0) / steps
    return {"batch": batch_size, "train_step_s": train_s, "train_patients_s": batch_size / train_s,
            "infer_patients_s": batch_size / infer_s, "warmup_s": compile_s}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--setting", default="triple")
    p.add_argument("--backbone", default="resnet50")
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--batch-sizes", default="8")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    a = p.parse_args()
    model = FusionClassifier(parse_modalities(a.setting), backbone=a.backbone, width=a.width,
                             dtype=jnp.dtype(a.dtype))
    dev = jax.devices()[0]
    print(f"device: {dev.platform} {dev.device_kind} x{jax.device_count()}; jax {jax.__version__}; "
          f"host {platform.processor() or platform.machine()}; {a.setting} {a.backbone} "
          f"w{a.width} {a.image_size}px {a.dtype}")
    print("| batch | train step (s) | train patients/s | inference patients/s | warm-up incl. compile (s) |")
    print("|---:|---:|---:|---:|---:|")
    for bs in (int(x) for x in a.batch_sizes.split(",")):
        r = bench(model, bs, a.image_size, a.steps, a.warmup)
        print(f"| {r['batch']} | {r['train_step_s']:.3f} | {r['train_patients_s']:.2f} | "
              f"{r['infer_patients_s']:.2f} | {r['warmup_s']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
