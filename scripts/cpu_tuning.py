"""What each XLA:CPU setting does to the fusion model's train step and inference, side by
side with PyTorch eager on the same CPU.

    python scripts/cpu_tuning.py [--image-size 224 --batch 8 --steps 3] [--rounds 3] [--no-torch]

Every variant runs ``scripts/benchmark.py`` in a fresh process (XLA reads its flags
once per process) with the variant's environment; the table gives train and inference
patients/s (each patient's images through the chosen backbone), inference with BatchNorm folded into the convs, and
the ratio to the baseline (the first variant's first round). ``--rounds N`` measures the chosen
variants N times, alternated (round 1 of each, then round 2, ...): where a machine's speed
drifts between runs, as the 2-core machines here do, a difference between variants counts only
where it holds in every round. TensorFlow-free.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from lnm_jax.data.threads import cpus
from lnm_jax.provenance import cpu_model

BENCH = Path(__file__).with_name("benchmark.py")
# benchmark.py's throughput table, by column (its header)
COLUMNS = (
    "framework",
    "dtype",
    "precision",
    "batch",
    "train step (s)",
    "train patients/s",
    "inference patients/s",
    "inference, BN folded",
    "MFU",
    "warm-up (s)",
    "device",
    "versions",
)

# name -> (extra XLA_FLAGS, extra benchmark arguments); all but the first on the default
# lowering (1x1 convolutions as GEMMs on CPU, lnm_jax/models/lowering.py)
VARIANTS = {
    "XLA convolutions everywhere (lowering=xla)": ("", ["--lowering", "xla"]),
    "1x1 convs as GEMMs (lowering=cpu; default)": ("", []),
    # lnm_jax/compile_options.py: the train step with YNNPACK for reductions only (STEP), inference
    # without YNNPACK (INFERENCE); or inference built as the step; or XLA's YNNPACK default everywhere
    "inference compiled as the train step (YNNPACK reductions)": ("", ["--inference-options", "step"]),
    "XLA's YNNPACK default everywhere (dots+convolutions+reductions)": ("", ["--ynn", "xla-default"]),
    # YNNPACK fusion types through XLA_FLAGS, which win over the project's options in every program
    # (XLA's default: individual dots, individual convolutions, reductions; '-x'/'+x' edits it)
    "YNNPACK reductions only in every program (XLA_FLAGS)": ("--xla_cpu_experimental_ynn_fusion_type=reduce", []),
    "YNNPACK reductions+convolutions (XLA_FLAGS)": (
        "--xla_cpu_experimental_ynn_fusion_type=reduce,individual_convolution",
        [],
    ),
    "YNNPACK default less dots (XLA_FLAGS)": ("--xla_cpu_experimental_ynn_fusion_type=-individual_dot", []),
    "YNNPACK default plus elementwise (XLA_FLAGS)": ("--xla_cpu_experimental_ynn_fusion_type=+eltwise", []),
    "oneDNN for dots/convs": ("--xla_cpu_use_onednn=true", []),
    "XNNPACK": ("--xla_cpu_use_xnnpack=true", []),
    "fast math": ("--xla_cpu_enable_fast_math=true", []),
    "single-threaded Eigen": ("--xla_cpu_multi_thread_eigen=false", []),
    "512-bit vectors": ("--xla_cpu_prefer_vector_width=512", []),
    "concurrency-optimized scheduler": ("--xla_cpu_enable_concurrency_optimized_scheduler=true", []),
    # library fusions of newer XLA:CPU (flag names and fusion types read from jaxlib 0.10.2's help)
    "oneDNN fusions: dot+eltwise": ("--xla_cpu_experimental_onednn_fusion_type=dot,eltwise", []),
    "XNNPACK fusions: dot+eltwise+reduce": ("--xla_cpu_experimental_xnn_fusion_type=dot,eltwise,reduce", []),
    "XNNPACK graph fusion (greedy)": (
        "--xla_cpu_experimental_xnn_graph_fusion_mode=XNN_GRAPH_FUSION_MODE_GREEDY "
        "--xla_cpu_experimental_xnn_fusion_type=dot,eltwise,reduce",
        [],
    ),
    "YNNPACK fusions: dot+eltwise+reduce": ("--xla_cpu_experimental_ynn_fusion_type=dot,eltwise,reduce", []),
    "oneDNN custom calls (legacy rewriter)": (
        "--xla_cpu_use_onednn=true --xla_cpu_experimental_onednn_custom_call=true",
        [],
    ),
    "bfloat16 compute": ("", ["--dtypes", "bfloat16"]),
    # the batch split over two host CPU devices (benchmark.py runs data-parallel over every device
    # it sees), each device's program executed on its own thread
    "two host devices: data-parallel (XLA_FLAGS)": ("--xla_force_host_platform_device_count=2", []),
}


def run(name: str, flags: str, extra: list[str], common: list[str], torch: bool) -> list[list[str]]:
    env = {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": (os.environ.get("XLA_FLAGS", "") + " " + flags).strip(),
        "PYTHONPATH": str(BENCH.parents[1]) + os.pathsep + os.environ.get("PYTHONPATH", ""),
    }
    args = [sys.executable, str(BENCH), *common, *extra] + (["--torch"] if torch else [])
    out = subprocess.run(args, env=env, capture_output=True, text=True)
    if out.returncode:
        print(f"{name}: failed\n{out.stderr[-1500:]}", file=sys.stderr)
        return []
    rows = [
        [c.strip() for c in line.strip().strip("|").split("|")]
        for line in out.stdout.splitlines()
        if line.startswith(("| jax |", "| torch eager |"))
    ]
    return [r for r in rows if len(r) == len(COLUMNS)]  # the throughput table, not the ratio table


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma list of variant names: {list(VARIANTS)}")
    p.add_argument("--rounds", type=int, default=1, help="measure the variants this many times, alternated")
    p.add_argument("--no-torch", action="store_true", help="no PyTorch eager row")
    p.add_argument("--backbone", default="resnet50", help="PyTorch runs for resnet10/resnet18/resnet50 at width 64")
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--setting", default="triple", help="the inputs, as the benchmark's --setting")
    a = p.parse_args()
    chosen = [n for n in a.variants.split(",") if n]
    if unknown := [n for n in chosen if n not in VARIANTS]:
        p.error(f"--variants: unknown {unknown}; known: {list(VARIANTS)}")
    if a.rounds < 1:
        p.error("--rounds: at least 1")
    common = [
        "--setting",
        a.setting,
        "--backbone",
        a.backbone,
        "--width",
        str(a.width),
        "--image-size",
        str(a.image_size),
        "--batch-sizes",
        str(a.batch),
        "--steps",
        str(a.steps),
        "--warmup",
        "2",
    ]
    print(
        f"{a.setting} {a.backbone} (width {a.width}), {a.image_size}x{a.image_size}, batch {a.batch}; {cpu_model()}, "
        f"{cpus()} CPUs this process may run on (of {os.cpu_count()} on the machine)\n"
    )
    print("| variant | round | train patients/s | inference patients/s | inference, BN folded | train vs baseline |")
    print("|---|---:|---:|---:|---:|---:|")
    base = None
    for r in range(1, a.rounds + 1):
        for name in chosen:
            flags, extra = VARIANTS[name]
            torch = name == chosen[0] and not a.no_torch  # PyTorch beside the first variant, every round
            for row in run(name, flags, extra, common, torch=torch):
                label = name if row[0] == "jax" else "PyTorch eager (same CPU)"
                train = float(row[COLUMNS.index("train patients/s")])
                infer, folded = row[COLUMNS.index("inference patients/s")], row[COLUMNS.index("inference, BN folded")]
                base = base or train
                cells = f"{train:.2f} | {float(infer):.2f} | {folded} | {train / base:.2f}"
                print(f"| {label} | {r} | {cells} |", flush=True)


if __name__ == "__main__":
    main()
