"""Two CPU speed-ups measured and not adopted (docs/benchmarks.md), kept so they can be re-run.

    python scripts/cpu_experiments.py branches-on-devices [--image-size 224 --batch 8 --steps 4]
    python scripts/cpu_experiments.py winograd [--batch 8 --steps 4]

``branches-on-devices``: the triple ResNet-50's two image branches, each on its own host device
(``--xla_force_host_platform_device_count=2``, weights stacked on a leading axis and split by
``shard_map``), against both branches on one device, in two child processes; the same Adam
train step on the same batch (the first step's losses must agree), then inference. It would change
the layout of every state the project stores, so it is a measurement, not an option.

``winograd``: the ResNet-50 3x3 stride-1 convolutions as Winograd F(2x2, 3x3) (Lavin & Gray,
"Fast Algorithms for Convolutional Neural Networks", CVPR 2016) written in jnp, against XLA's
convolution: forward, and forward + both gradients, per stage shape. TensorFlow-free.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from functools import partial


def _timed(fn, steps: int) -> float:
    """Seconds per call after two warm-up calls (compilation excluded): benchmark.py's clock."""
    import jax
    from benchmark import _time

    jax.block_until_ready(fn())
    jax.block_until_ready(fn())
    return _time(fn, steps)


def branches(mode: str, size: int, batch: int, steps: int) -> None:
    """One child: 'devices' (a branch per host device) or 'one' (both on one device)."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    from lnm_jax.models.backbones import backbone

    net = backbone("resnet50")
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.standard_normal((2, batch, size, size, 3), np.float32))
    flag = jnp.asarray(rng.integers(0, 2, batch).astype(np.float32))
    label = jnp.asarray(rng.integers(0, 2, batch).astype(np.float32))
    inits = [net.init(jax.random.key(i), images[0, :1], train=False) for i in range(2)]
    stacked = jax.tree.map(lambda a, b: jnp.stack([a, b]), *inits)
    head = jnp.asarray(rng.standard_normal(2 * 2048 + 1, np.float32) / np.sqrt(2 * 2048 + 1))
    params = {"branches": stacked["params"], "head": {"w": head, "b": jnp.zeros(())}}
    stats = stacked["batch_stats"]
    tx = optax.adam(1e-3)
    first = partial(jax.tree.map, lambda a: a[0])

    def one_branch(p, s, x, train):
        if not train:
            return net.apply({"params": p, "batch_stats": s}, x, train=False)["pooled"], s
        out, new = net.apply({"params": p, "batch_stats": s}, x, train=True, mutable=["batch_stats"])
        return out["pooled"], new["batch_stats"]

    if mode == "devices":
        mesh = Mesh(np.array(jax.devices()[:2]), ("branch",))
        split, whole = NamedSharding(mesh, P("branch")), NamedSharding(mesh, P())

        def both(p, s, x, train):
            @partial(jax.shard_map, mesh=mesh, in_specs=P("branch"), out_specs=P("branch"))
            def per_device(p, s, x):
                f, new = one_branch(first(p), first(s), x[0], train)
                return f[None], jax.tree.map(lambda a: a[None], new)

            return per_device(p, s, x)

        params = {"branches": jax.device_put(params["branches"], split), "head": jax.device_put(params["head"], whole)}
        stats, images = jax.device_put(stats, split), jax.device_put(images, split)
    else:

        def both(p, s, x, train):
            outs = [
                one_branch(jax.tree.map(lambda a, i=i: a[i], p), jax.tree.map(lambda a, i=i: a[i], s), x[i], train)
                for i in range(2)
            ]
            return jnp.stack([o[0] for o in outs]), jax.tree.map(lambda *a: jnp.stack(a), *[o[1] for o in outs])

    def logits(params, stats, x, train):
        f, new = both(params["branches"], stats, x, train)
        z = jnp.concatenate([f[0], f[1], flag[:, None]], -1) @ params["head"]["w"] + params["head"]["b"]
        return z, new

    def loss(params, stats, x):
        z, new = logits(params, stats, x, True)
        return optax.sigmoid_binary_cross_entropy(z, label).mean(), new

    @partial(jax.jit, donate_argnums=(0, 1, 2))
    def step(params, stats, opt, x):
        (value, new), grads = jax.value_and_grad(loss, has_aux=True)(params, stats, x)
        updates, opt = tx.update(grads, opt, params)
        return optax.apply_updates(params, updates), new, opt, value

    state = {"s": (params, stats, tx.init(params))}

    def train():
        *rest, value = step(*state["s"], images)
        state["s"] = tuple(rest)
        return value

    value = float(train())  # the first step's loss: the same parameters and batch in both modes
    train_s = _timed(train, steps)
    infer = jax.jit(lambda p, s, x: logits(p, s, x, False)[0])
    infer_s = _timed(lambda: infer(state["s"][0], state["s"][1], images), steps)
    print(f"| {mode} | {jax.device_count()} | {batch / train_s:.2f} | {batch / infer_s:.2f} | {value:.6f} |")


def winograd(batch: int, steps: int) -> None:
    import jax
    import jax.numpy as jnp
    import numpy as np

    bt = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], np.float32)
    g = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], np.float32)
    at = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], np.float32)

    def wino(x, w):  # 3x3 stride-1 'SAME', NHWC x HWIO; F(2x2, 3x3) on 4x4 tiles of stride 2
        n, h, wd, c = x.shape
        h2, w2 = -(-h // 2), -(-wd // 2)
        xp = jnp.pad(x, ((0, 0), (1, 1 + 2 * h2 - h), (1, 1 + 2 * w2 - wd), (0, 0)))
        d = [[xp[:, i : i + 2 * h2 : 2, j : j + 2 * w2 : 2, :] for j in range(4)] for i in range(4)]
        rows = [[sum(bt[a, i] * d[i][j] for i in range(4) if bt[a, i]) for j in range(4)] for a in range(4)]
        v = jnp.stack([sum(bt[b, j] * rows[a][j] for j in range(4) if bt[b, j]) for a in range(4) for b in range(4)])
        u = jnp.einsum("ai,ijck,bj->abck", g, w, g).reshape(16, c, -1)
        m = jnp.einsum("tpc,tck->tpk", v.reshape(16, -1, c), u).reshape(4, 4, n, h2, w2, -1)
        cols = [[sum(at[a, k] * m[k, j] for k in range(4) if at[a, k]) for j in range(4)] for a in range(2)]
        y = jnp.stack(
            [
                jnp.stack([sum(at[b, j] * cols[a][j] for j in range(4) if at[b, j]) for b in range(2)], 3)
                for a in range(2)
            ],
            2,
        )
        return y.reshape(n, 2 * h2, 2 * w2, -1)[:, :h, :wd, :]

    def xla(x, w):
        return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))

    def with_grads(f):
        return jax.jit(jax.grad(lambda x, w: jnp.sum(f(x, w) ** 2), argnums=(0, 1)))

    rng = np.random.default_rng(0)
    print("| pixels | channels | max rel. difference | forward (ms): XLA | Winograd | with gradients: XLA | Winograd |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for hw, c in ((56, 64), (28, 128), (14, 256), (7, 512)):  # ResNet-50's stages
        x = jnp.asarray(rng.standard_normal((batch, hw, hw, c), np.float32))
        w = jnp.asarray(rng.standard_normal((3, 3, c, c), np.float32) / np.sqrt(9 * c))
        ref = xla(x, w)
        diff = float(jnp.max(jnp.abs(wino(x, w) - ref)) / jnp.max(jnp.abs(ref)))
        ms = [
            1e3 * _timed(lambda f=f, x=x, w=w: f(x, w), steps)
            for f in (jax.jit(xla), jax.jit(wino), with_grads(xla), with_grads(wino))
        ]
        print(f"| {hw} | {c} | {diff:.1e} | " + " | ".join(f"{t:.1f}" for t in ms) + " |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("experiment", choices=("branches-on-devices", "winograd"))
    p.add_argument("--image-size", type=int, default=224, help="branches-on-devices only")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--child", choices=("devices", "one"), help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.experiment == "winograd":
        winograd(a.batch, a.steps)
    elif a.child:
        branches(a.child, a.image_size, a.batch, a.steps)
    else:  # each mode in a fresh process: the device count is fixed when XLA starts
        print("| branches | host devices | train patients/s | inference patients/s | first step's loss |")
        print("|---|---:|---:|---:|---:|")
        for mode in ("one", "devices"):
            flags = os.environ.get("XLA_FLAGS", "")
            if mode == "devices":
                flags = f"{flags} --xla_force_host_platform_device_count=2".strip()
            args = [sys.executable, __file__, a.experiment, "--child", mode]
            args += ["--image-size", str(a.image_size), "--batch", str(a.batch), "--steps", str(a.steps)]
            out = subprocess.run(
                args, env={**os.environ, "XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu"}, capture_output=True, text=True
            )
            rows = [line for line in out.stdout.splitlines() if line.startswith("|")]
            print(
                rows[-1]
                if out.returncode == 0 and rows
                else f"| {mode} | failed: {out.stderr.strip().splitlines()[-1:]} |"
            )


if __name__ == "__main__":
    main()
