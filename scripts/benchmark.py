"""Train-step and inference throughput (patients/s) of the fusion model on whatever devices
JAX sees, and, when torch/torchvision import, of the same two-branch model in PyTorch.

    python scripts/benchmark.py --setting triple --backbone resnet50 \
        --image-size 224 --batch-sizes 8,64 --dtypes float32,bfloat16 [--torch] [--torch-compile]

Every framework, dtype and batch size is measured in its own process (JAX preallocates 75% of
a GPU: a PyTorch run beside it died of out-of-memory), and the JAX/PyTorch ratio is computed
only between rows of one invocation. ``--rounds N`` measures every row N times, alternated, and
takes each ratio within a round (the frameworks measured minutes apart, not tens of minutes):
the median, then every round's value (a shared 2-core machine moved each framework's own rate by
up to 19% between invocations). JAX: the batch is sharded over all devices (data
parallel) when there are several. PyTorch (one device): eager, optionally ``torch.compile``; on
GPU ``bfloat16`` means AMP autocast and channels_last. Random inputs; warm-up (compile)
excluded; clocks stop after the device is done. MFU on GPU: :func:`train_gflop_per_patient`
against the dense peak of the precision the step actually runs in (bf16 tensor, TF32 tensor
for fp32 inputs, true fp32 with ``--jax-precision-highest``; :data:`PEAK_TFLOPS_BY_PRECISION`),
with the device and versions on every row. A measurement that fails prints one line in its
row. TensorFlow-free. Prints Markdown tables a user can paste.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from lnm_jax import compile_options, host_memory, names
from lnm_jax.names import parse_modalities

# JAX, Flax and the model are imported by the functions that measure JAX (_time, bench,
# measure_one): the parent process, which only starts children and prints their rows, and the
# PyTorch children never load them (2-3 s of CPU each here).

# training GFLOP of one 224-px image at width 64: forward MACs (torchvision's model table:
# ResNet-50 4.1 G, ResNet-18 1.82 G; ResNet-10 is ResNet-18 less one basic block per stage, two
# 3x3 convs of 0.116 GMAC each at every stage: 1.82 - 8 x 0.116 = 0.89 G) x2 FLOP per MAC x3
# (forward + two backward products)
TRAIN_GFLOP_PER_IMAGE_224 = {"resnet50": 24.7, "resnet18": 10.9, "resnet10": 5.35}

# Candidates for the GPU step (``--candidates``; one row each, each in its own process): XLA:GPU
# flag sets (names as XLA reads them from XLA_FLAGS; an unknown flag fails its row only) and
# model variants that compute the same function (lnm_jax/models/resnet.py; tests/test_models.py).
CANDIDATES = {
    "default": {},
    "cuDNN runtime fusion": {
        "xla_flags": "--xla_gpu_use_runtime_fusion=true --xla_gpu_experimental_enable_conv_fusion=true"
    },
    "Triton GEMM for all dots": {"xla_flags": "--xla_gpu_triton_gemm_any=true"},
    "no Triton GEMM": {"xla_flags": "--xla_gpu_enable_triton_gemm=false"},
    "autotune level 4": {"xla_flags": "--xla_gpu_autotune_level=4"},
    "command buffers off": {"xla_flags": "--xla_gpu_enable_command_buffer="},
    "BatchNorm statistics in bf16": {"model": {"bn_float32_reductions": False}},
    # BatchNorm's training gradient written out: two reductions a layer (models/batchnorm.py)
    "BatchNorm gradient written out": {"model": {"batchnorm": "fused"}},
    # the GPU defaults before 2026-12-04's (model.lowering and model.batchnorm 'auto' took the two above)
    "XLA max pools and flax BatchNorm": {"model": {"lowering": "xla", "batchnorm": "flax"}},
    # the max pools' gradient as a loop fusion, not a scatter; and the 1x1 convolutions as GEMMs too
    "max pools as slices": {"model": {"lowering": "slices"}},
    "1x1 GEMMs and sliced max pools": {"model": {"lowering": "cpu"}},
    # model.stem's default, 'auto', is the space-to-depth stem on a GPU and the 7x7 one elsewhere
    "space-to-depth stem": {"model": {"stem": "space_to_depth"}},
    "7x7 stem": {"model": {"stem": "conv7"}},
    # the two image branches as one vmapped computation over stacked weights (models/fusion.py)
    "branches stacked (vmap)": {"model": {"branches": "stacked"}},
}


def make_batch(seed: int, batch_size: int, size: int) -> dict:
    r = np.random.default_rng(seed)
    return {
        names.BMODE: r.standard_normal((batch_size, size, size, 3), np.float32),
        names.CEUS: r.standard_normal((batch_size, size, size, 3), np.float32),
        names.US_LNM: r.integers(0, 2, batch_size).astype(np.float32),
        names.LABEL: r.integers(0, 2, batch_size).astype(np.int32),
        names.VALID: np.ones(batch_size, bool),
    }


def add_model_args(p: argparse.ArgumentParser) -> None:
    """The model options every benchmark script shares (the paper's triple ResNet-50 at 224)."""
    p.add_argument("--setting", default="triple")
    p.add_argument("--backbone", default="resnet50")
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--image-size", type=int, default=224)


def _rate(patients_per_s: float) -> str:
    """Three significant digits at CPU rates, whole patients at accelerator rates."""
    return f"{patients_per_s:.0f}" if patients_per_s >= 100 else f"{patients_per_s:.3g}"


def _time(fn, steps: int) -> float:
    import jax

    t0 = time.perf_counter()
    for _ in range(steps):
        out = fn()
    jax.block_until_ready(out)
    return (time.perf_counter() - t0) / steps


def bench(model, batch_size: int, size: int, steps: int, warmup: int) -> dict:
    """JAX train step and inference, data-parallel over all devices if there are several."""
    import jax

    from lnm_jax.config import base_config
    from lnm_jax.models.backbones import bn_epsilon, can_fold_bn
    from lnm_jax.models.folding import fold_batchnorm
    from lnm_jax.training import sharding
    from lnm_jax.training import state as state_lib
    from lnm_jax.training.steps import make_eval_step, make_train_step, step_options

    host = make_batch(0, batch_size, size)
    paper = base_config()
    tx, plateau = state_lib.optimizers(paper.train)  # the paper's Adam + plateau
    state = state_lib.create_train_state(model, jax.random.key(0), host, tx, plateau)
    mesh = None
    if jax.device_count() > 1:
        mesh = sharding.data_mesh()
        sharding.check_batch_size(batch_size, mesh)
        state = sharding.replicate(state, mesh)
        batch = sharding.shard_batch(host, mesh)
    else:
        batch = jax.device_put(host)
    # the paper's loss, as a run's loop builds its step
    train_step = make_train_step(model, tx, mesh, **step_options(paper, np.asarray(host[names.LABEL])))
    eval_step = make_eval_step(model, mesh)
    holder = {"state": state}

    def train():
        holder["state"], m = train_step(holder["state"], batch)
        return m["loss"]

    t0 = time.perf_counter()
    for _ in range(warmup):
        jax.block_until_ready(train())
    warm = time.perf_counter() - t0
    train_s = _time(train, steps)
    st = holder["state"]
    jax.block_until_ready(eval_step(st.params, st.batch_stats, batch))
    infer_s = _time(lambda: eval_step(st.params, st.batch_stats, batch), steps)
    out = {"train_s": train_s, "infer_s": infer_s, "warmup_s": warm, "infer_folded_s": None}
    if can_fold_bn(model.backbone):  # inference with BatchNorm folded into the convs
        folded = model.clone(fold_bn=True)
        fparams = jax.jit(lambda p, s: fold_batchnorm(p, s, bn_epsilon(model.backbone, model.variant)))(
            st.params, st.batch_stats
        )
        fstep = make_eval_step(folded, mesh)
        jax.block_until_ready(fstep(fparams, {}, batch))
        out["infer_folded_s"] = _time(lambda: fstep(fparams, {}, batch), steps)
    return out


# the backbones torchvision builds as ours are built at width 64 (--backbone): pooled feature width
# --ynn, as the header says it
YNN_SETTING = {
    "project": "as the project sets them (the train step's reductions only, none in inference)",
    "xla-default": "XLA:CPU's default in every program (--ynn xla-default)",
}

TORCH_BACKBONES = {"resnet10": 512, "resnet18": 512, "resnet50": 2048}


def torchvision_backbone(name: str):
    """A randomly initialised torchvision backbone of :data:`TORCH_BACKBONES`; ResNet-10 is
    torchvision's ``ResNet(BasicBlock, [1, 1, 1, 1])``, which it builds but names no constructor for."""
    import torchvision

    if name == "resnet10":
        from torchvision.models.resnet import BasicBlock, ResNet

        return ResNet(BasicBlock, [1, 1, 1, 1])
    return getattr(torchvision.models, name)()


def torch_model(batch_size: int, size: int, dtype: str, compile_: bool, backbone: str = "resnet50"):
    """The same two-branch ResNet + flag model in PyTorch (torchvision backbones, one of
    :data:`TORCH_BACKBONES`), with one Adam train step and one inference pass on a fixed random
    batch as closures."""
    import torch

    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    amp = dtype == "bfloat16"

    class Fusion(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bmode = torchvision_backbone(backbone)
            self.ceus = torchvision_backbone(backbone)
            self.bmode.fc = torch.nn.Identity()
            self.ceus.fc = torch.nn.Identity()
            self.head = torch.nn.Linear(2 * TORCH_BACKBONES[backbone] + 1, 1)

        def forward(self, b, c, f):
            return self.head(torch.cat([self.bmode(b), self.ceus(c), f[:, None]], 1))[:, 0]

    model = Fusion().to(dev)
    fmt = torch.channels_last if dev.type == "cuda" else torch.contiguous_format
    model = model.to(memory_format=fmt)
    host = make_batch(0, batch_size, size)
    b, c = (
        torch.from_numpy(host[k]).permute(0, 3, 1, 2).contiguous(memory_format=fmt).to(dev) for k in names.IMAGE_INPUTS
    )
    f = torch.from_numpy(host[names.US_LNM]).to(dev)
    y = torch.from_numpy(host[names.LABEL]).float().to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    fwd = torch.compile(model) if compile_ else model
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp)

    def train():
        opt.zero_grad(set_to_none=True)
        with autocast:
            logits = fwd(b, c, f)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), y)
        loss.backward()
        opt.step()

    def infer():
        with torch.no_grad(), autocast:
            fwd(b, c, f)

    return model, train, infer


def bench_torch(
    batch_size: int, size: int, steps: int, warmup: int, dtype: str, compile_: bool, backbone: str = "resnet50"
) -> dict:
    """Train-step and inference seconds of ``torch_model`` (eager or ``torch.compile``)."""
    import torch

    model, train, infer = torch_model(batch_size, size, dtype, compile_, backbone)

    def sync():
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    model.train()
    t0 = time.perf_counter()
    for _ in range(warmup):
        train()
    sync()
    warm = time.perf_counter() - t0

    def timed(fn):
        sync()
        t = time.perf_counter()
        for _ in range(steps):
            fn()
        sync()
        return (time.perf_counter() - t) / steps

    train_s = timed(train)
    model.eval()
    infer()
    infer_s = timed(infer)
    return {"train_s": train_s, "infer_s": infer_s, "warmup_s": warm}


# Dense peaks of one H100/H200 SXM by the precision the matmuls and convolutions actually run
# in (NVIDIA's H100 datasheet): bf16 on tensor cores; fp32 inputs run on TF32 tensor cores
# under JAX's default precision and cuDNN's default (torch.backends.cudnn.allow_tf32); true
# fp32 (--jax-precision highest) on the non-tensor units.
PEAK_TFLOPS_BY_PRECISION = {"bf16 tensor": 989.0, "tf32 tensor": 494.5, "fp32": 67.0}


def precision_used(dtype: str, platform_: str, highest: bool = False) -> str:
    """The arithmetic a setting's matmuls and convolutions run in on this platform: on GPU the
    units of :data:`PEAK_TFLOPS_BY_PRECISION`; on CPU fp32 for fp32 inputs, and for bf16 inputs
    "bf16 inputs" (whether XLA:CPU or PyTorch computes them in bf16 or widens them to fp32 is
    theirs to choose, op by op)."""
    if platform_ != "gpu":
        return "fp32" if dtype == "float32" else f"{dtype.replace('bfloat16', 'bf16')} inputs"
    if dtype == "bfloat16":
        return "bf16 tensor"
    return "fp32" if highest else "tf32 tensor"


def peak_tflops(precision: str, platform_: str) -> float | None:
    """The dense peak MFU is taken against: a GPU's, by precision; None on CPU (no stated peak
    for a host's cores: no MFU)."""
    return PEAK_TFLOPS_BY_PRECISION.get(precision) if platform_ == "gpu" else None


def train_gflop_per_patient(setting: str, image_size: int, width: int, backbone: str = "resnet50") -> float | None:
    """Training GFLOP of one patient: 3x the forward FLOPs (forward + two backward products) of
    each image branch, :data:`TRAIN_GFLOP_PER_IMAGE_224` (ResNet-50 at 224 px and width 64: 24.7
    GFLOP per image, 4.1 GMAC) scaled by pixels and by width squared; the flag and the head are
    negligible. None for a backbone without a stated count (no MFU then). The one place the
    count is derived."""
    if backbone not in TRAIN_GFLOP_PER_IMAGE_224:
        return None
    images = sum(m in names.IMAGE_INPUTS for m in parse_modalities(setting))
    return images * TRAIN_GFLOP_PER_IMAGE_224[backbone] * (image_size / 224) ** 2 * (width / 64) ** 2


def candidate_model(spec: dict):
    """The FusionClassifier a JAX row measures: ``spec``'s setting, backbone, width, dtype and
    lowering, with its candidate's model fields (they win over the command line's lowering)."""
    import jax.numpy as jnp

    from lnm_jax.models.fusion import FusionClassifier

    return FusionClassifier(
        parse_modalities(spec["setting"]),
        backbone=spec["backbone"],
        width=spec["width"],
        dtype=jnp.dtype(spec["dtype"]),
        **{"lowering": spec["lowering"], **CANDIDATES[spec.get("candidate", "default")].get("model", {})},
    )


def measure_one(spec: dict) -> dict:
    """One framework at one dtype and batch size, in this process (what a child runs). A JAX
    measurement that imported TensorFlow fails (the accelerator path must not need it)."""
    if spec["framework"] == "jax":
        import jax

        if spec.get("inference_options") == "step":  # the evaluation programs built as the train step
            compile_options.INFERENCE.update(compile_options.STEP)
        if spec.get("ynn") == "xla-default":  # every program with XLA:CPU's own YNNPACK fusions
            for kind in compile_options.KINDS.values():
                kind.get("cpu", {}).pop(compile_options.YNN_FUSIONS, None)
        if spec.get("highest"):
            jax.config.update("jax_default_matmul_precision", "highest")
        model = candidate_model(spec)
        r = bench(model, spec["batch"], spec["image_size"], spec["steps"], spec["warmup"])
        if "tensorflow" in sys.modules:
            raise RuntimeError("the JAX benchmark imported TensorFlow: the accelerator path must not need it")
        dev = jax.devices()[0]
        return {
            **r,
            "platform": dev.platform,
            "device": f"{dev.device_kind} x{jax.device_count()}",
            "versions": f"jax {jax.__version__}",
            # what this process's programs were built with (its XLA_FLAGS win over the project's)
            "compile_options": {k: compile_options.compiler_options(v) or {} for k, v in compile_options.KINDS.items()},
            "xla_flags": os.environ.get("XLA_FLAGS", ""),
        }
    import torch  # noqa: PLC0415

    compile_ = spec["framework"] == "torch.compile"
    r = bench_torch(
        spec["batch"], spec["image_size"], spec["steps"], spec["warmup"], spec["dtype"], compile_, spec["backbone"]
    )
    cuda = torch.cuda.is_available()
    device = torch.cuda.get_device_name(0) if cuda else platform.processor() or platform.machine()
    return {**r, "platform": "gpu" if cuda else "cpu", "device": device, "versions": f"torch {torch.__version__}"}


# glibc's allocator settings for every measured process, JAX's and PyTorch's alike (glibc reads
# GLIBC_TUNABLES only at process start, so they are given to each child). The default is what the
# lnm-jax command runs under (lnm_jax/host_memory.py: transparent huge pages for malloc);
# measured in docs/benchmarks.md ("Host memory").
HOST_MALLOC = {
    "hugepages": host_memory.HUGE_PAGES,
    "inherit": "",  # the environment as it is
    # also keep freed memory for reuse (one arena, no mmap, no trimming): no page faults at all
    "hugepages+retain": (
        f"{host_memory.HUGE_PAGES}:glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:"
        "glibc.malloc.trim_threshold=1099511627776"
    ),
}


def child_env(spec: dict, host_malloc: str = "hugepages") -> dict:
    """The environment of the child that measures ``spec``: this one, plus the candidate's XLA
    flags and the ``HOST_MALLOC`` setting (appended to any GLIBC_TUNABLES already set)."""
    env = dict(os.environ)
    if flags := CANDIDATES[spec.get("candidate", "default")].get("xla_flags"):
        env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {flags}".strip()
    if tunables := HOST_MALLOC[host_malloc]:
        env[host_memory.TUNABLES] = host_memory.appended_tunables(env, tunables)
    return env


def run_child(spec: dict, timeout: int, host_malloc: str = "hugepages") -> dict:
    """``spec`` measured in a fresh interpreter (no framework shares a process or a device
    allocator with another: JAX preallocates 75% of a GPU); {"error": one line} when it fails."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--one", json.dumps(spec)]
    env = child_env(spec, host_malloc)
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"over {timeout} s"}
    for line in reversed(res.stdout.splitlines()):
        if line.startswith(RESULT):
            return json.loads(line[len(RESULT) :])
    return {"error": child_error(res.returncode, res.stderr)}


def child_error(returncode: int, stderr: str) -> str:
    """One line for a measuring child that printed no result: the exception it raised (not
    JAX's notes after it); for a process killed by a signal (XLA's fatal checks abort), the
    signal and the fatal log line, not the last frame of the stack dump after it."""
    lines = stderr.strip().splitlines() or [f"exit {returncode}, no output"]
    if returncode < 0:
        fatal = [x for x in lines if re.match(r"^F\d{4} ", x) or "Check failed" in x]
        name = signal.Signals(-returncode).name if -returncode in signal.valid_signals() else str(-returncode)
        return f"crashed ({name})" + (f": {fatal[0][:200]}" if fatal else "")
    raised = [x for x in lines if re.match(r"^[\w.]+(Error|Exception|Interrupt): ", x)]
    return (raised or lines)[-1][:200]


RESULT = "RESULT "


def print_compile_options(results: dict) -> None:
    """The XLA compile options the JAX rows' processes built their programs with, by kind
    (lnm_jax/compile_options.py; an option the process's XLA_FLAGS set is not passed, the flags
    win), and those XLA_FLAGS: one line per distinct setting, naming its rows."""
    sets: dict[str, list[str]] = {}
    for (name, dt, bs), r in results.items():
        if "compile_options" in r:
            kinds = "; ".join(f"{k} {json.dumps(v, sort_keys=True)}" for k, v in r["compile_options"].items())
            kinds += f"; XLA_FLAGS '{r['xla_flags']}'"
            sets.setdefault(kinds, []).append(f"{name} {dt} {bs}")
    for kinds, rows in sets.items():
        print(f"\ncompile options ({', '.join(rows)}): {kinds}")


def per_round(slow: list[dict], fast: list[dict], slow_key: str, fast_key: str) -> str:
    """The ratio ``slow[slow_key] / fast[fast_key]`` (seconds over seconds: how many times
    faster ``fast`` is) of the measurements of each round both have, as a table cell: the one
    value, or with several rounds their median and then every round's value in round order
    ("1.21 (1.24, 0.93, 1.21)"); "-" where no round has both."""
    by_round = {m["round"]: m for m in fast if m.get(fast_key)}
    values = [m[slow_key] / by_round[m["round"]][fast_key] for m in slow if m["round"] in by_round]
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{float(np.median(values)):.2f} ({', '.join(f'{v:.2f}' for v in values)})"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p)
    p.add_argument("--batch-sizes", default="8")
    p.add_argument("--dtypes", default="float32", help="comma list of float32,bfloat16")
    p.add_argument("--lowering", default="auto", help="auto | xla | cpu | slices (lnm_jax/models/lowering.py)")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--torch", action="store_true", help="also the PyTorch model (triple, ResNet-18/50 at width 64)")
    p.add_argument("--torch-compile", action="store_true", help="also torch.compile")
    p.add_argument("--jax-precision-highest", action="store_true", help="fp32 matmuls in true fp32 (not TF32)")
    p.add_argument(
        "--inference-options",
        default="inference",
        choices=("inference", "step"),
        help="compile options of the inference programs (lnm_jax/compile_options.py): the project's "
        "INFERENCE kind (on CPU: no YNNPACK fusions) or the train step's (on CPU: YNNPACK for reductions only)",
    )
    p.add_argument(
        "--ynn",
        default="project",
        choices=tuple(YNN_SETTING),
        help="YNNPACK library fusions on CPU: the project's (compile_options.py: the train step's reductions "
        "only, none in inference) or XLA:CPU's default in every program (dots, convolutions, reductions)",
    )
    p.add_argument("--timeout", type=int, default=900, help="seconds per measurement (each in its own process)")
    p.add_argument(
        "--candidates",
        default="",
        help=f"'all' or a comma list of JAX variants, one row each (instead of the plain JAX row): {list(CANDIDATES)}",
    )
    p.add_argument(
        "--host-malloc",
        default="hugepages",
        choices=list(HOST_MALLOC),
        help="glibc allocator settings for every measured process, both frameworks (HOST_MALLOC)",
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="measure every row this many times, alternated (each time in a fresh process); each ratio is then "
        "taken within a round, and the median given with every round's value",
    )
    p.add_argument("--one", help=argparse.SUPPRESS)  # a child: one measurement, printed as RESULT {json}
    a = p.parse_args()
    if a.one:
        print(RESULT + json.dumps(measure_one(json.loads(a.one))), flush=True)
        return
    if a.rounds < 1:
        p.error("--rounds: at least 1")
    chosen = list(CANDIDATES) if a.candidates == "all" else [c.strip() for c in a.candidates.split(",") if c.strip()]
    unknown = [c for c in chosen if c not in CANDIDATES]
    if unknown:
        raise SystemExit(f"--candidates: unknown {unknown}; known: {list(CANDIDATES)}")
    # (row label, framework, JAX candidate): every row a child measures
    rows = [(f"jax [{c}]", "jax", c) for c in chosen] or [("jax", "jax", "default")]
    if a.torch and a.backbone in TORCH_BACKBONES and a.setting == "triple" and a.width == 64:
        rows += [(f, f, "default") for f in ["torch eager"] + (["torch.compile"] if a.torch_compile else [])]
    elif a.torch:
        print(
            f"PyTorch: compared only for torchvision's models (--setting triple --backbone "
            f"{'|'.join(TORCH_BACKBONES)} --width 64)"
        )
    gflop = train_gflop_per_patient(a.setting, a.image_size, a.width, a.backbone)
    flops = f"{gflop:.3g} GFLOP" if gflop else "no stated FLOP count"
    ynn = "as XLA_FLAGS sets them" if compile_options.set_by_user(compile_options.YNN_FUSIONS) else YNN_SETTING[a.ynn]
    print(
        f"{a.setting} {a.backbone} w{a.width} {a.image_size}px; lowering {a.lowering}; "
        f"inference programs built as the '{a.inference_options}' kind, YNNPACK fusions "
        f"{ynn} "
        f"(the options each process used: after the table); {flops} per patient "
        f"per train step; host {platform.processor() or platform.machine()}; each row measured in its own process; "
        f"host malloc {a.host_malloc} ({child_env({}, a.host_malloc).get('GLIBC_TUNABLES') or 'no GLIBC_TUNABLES'})"
    )
    print(
        "| framework | dtype | precision | batch | train step (s) | train patients/s | inference patients/s "
        "| inference, BN folded | MFU (train, vs that precision's peak) | warm-up (s) | device | versions |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|")
    results: dict[tuple, list[dict]] = {}  # (row label, dtype, batch) -> one measurement per round
    grid = [(dt, bs) for dt in a.dtypes.split(",") for bs in (int(x) for x in a.batch_sizes.split(","))]
    for round_ in range(a.rounds):
        for dt, bs in grid:
            for name, framework, candidate in rows:
                spec = {
                    "framework": framework,
                    "candidate": candidate,
                    "dtype": dt,
                    "batch": bs,
                    "setting": a.setting,
                    "backbone": a.backbone,
                    "width": a.width,
                    "image_size": a.image_size,
                    "steps": a.steps,
                    "warmup": a.warmup,
                    "lowering": a.lowering,
                    "highest": a.jax_precision_highest,
                    "inference_options": a.inference_options,
                    "ynn": a.ynn,
                }
                r = run_child(spec, a.timeout, a.host_malloc)
                if "error" in r:
                    print(f"| {name} | {dt} | - | {bs} | failed: {r['error']} |", flush=True)
                    continue
                results.setdefault((name, dt, bs), []).append({**r, "candidate": candidate, "round": round_})
                precision = precision_used(dt, r["platform"], a.jax_precision_highest and framework == "jax")
                mfu, peak = "-", peak_tflops(precision, r["platform"])
                if peak and gflop:
                    mfu = f"{100 * gflop * bs / r['train_s'] / (peak * 1e3):.1f}%"
                folded = _rate(bs / r["infer_folded_s"]) if r.get("infer_folded_s") else "-"
                print(
                    f"| {name} | {dt} | {precision} | {bs} | {r['train_s']:.4f} | "
                    f"{_rate(bs / r['train_s'])} | "
                    f"{_rate(bs / r['infer_s'])} | {folded} | {mfu} | {r['warmup_s']:.1f} | {r['device']} | "
                    f"{r['versions']} |",
                    flush=True,
                )
    print_compile_options({k: v[0] for k, v in results.items()})
    # ratios only between runs of this invocation, each within one round
    ratios = [(k, v) for k, v in results.items() if k[0] != "jax" and ("jax",) + k[1:] in results]
    if ratios:
        # the folded column: JAX's BatchNorm-folded inference (what predict, evaluate and Grad-CAM run)
        # against the other framework's plain inference
        print(
            "\n| vs | dtype | batch | JAX/PyTorch train | JAX/PyTorch inference | JAX BN-folded/PyTorch inference |"
            "\n|---|---|---:|---:|---:|---:|"
        )
        for (name, dt, bs), r in ratios:
            j = results[("jax", dt, bs)]
            cells = " | ".join(
                [
                    per_round(r, j, "train_s", "train_s"),
                    per_round(r, j, "infer_s", "infer_s"),
                    per_round(r, j, "infer_s", "infer_folded_s"),
                ]
            )
            print(f"| {name} | {dt} | {bs} | {cells} |")
    default = "jax [default]"
    variants = [(k, v) for k, v in results.items() if k[0].startswith("jax [") and (default,) + k[1:] in results]
    if chosen and "default" not in chosen:
        print("\nno speed-ups: they are taken against a 'default' row of the same invocation (add it to --candidates)")
    if len(variants) > 1:
        print("\n| candidate | dtype | batch | train speed-up vs default | inference speed-up vs default |")
        print("|---|---|---:|---:|---:|")
        for (_, dt, bs), r in variants:
            d = results[(default, dt, bs)]
            speedups = f"{per_round(d, r, 'train_s', 'train_s')} | {per_round(d, r, 'infer_s', 'infer_s')}"
            print(f"| {r[0]['candidate']} | {dt} | {bs} | {speedups} |")


if __name__ == "__main__":
    main()
