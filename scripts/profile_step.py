"""Where a train step's time goes, per kind of operation, in JAX (XLA) and in PyTorch.

    python scripts/profile_step.py [--backbone resnet50 --image-size 224 --batch 8 --steps 2]
                                   [--mode train|inference] [--torch] [--top 15]

JAX: ``jax.profiler`` traces ``--steps`` compiled steps; every executed HLO instruction (a
thunk on CPU; on GPU each kernel on a device stream, matched by its ``hlo_op``, or by its
kernel name where it has none: :func:`attribute`) is matched to the compiled HLO and put in one
bucket:
convolution forward, convolution input-gradient, convolution filter-gradient, pooling
(reduce-window / select-and-scatter and the index arithmetic XLA expands them into),
reductions (BatchNorm statistics, gradient sums), layout copies/transposes, other elementwise
fusions, dot; and in phases (forward, backward, optimizer/loss, by the trace of each
fusion's root, so approximate where XLA fuses across them). PyTorch (``--torch``, ResNet-50
at width 64 only): ``torch.profiler`` self times of the same two-branch model, bucketed the
same way. Prints Markdown tables. TensorFlow-free.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import re
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp

sys.path.insert(0, str(Path(__file__).parent))
import benchmark  # noqa: E402  (the benchmark's batch and PyTorch model)

from lnm_jax.config import base_config  # noqa: E402
from lnm_jax.models.fusion import FusionClassifier  # noqa: E402
from lnm_jax.names import parse_modalities  # noqa: E402
from lnm_jax.training import state as state_lib  # noqa: E402
from lnm_jax.training.steps import make_eval_step, make_train_step  # noqa: E402

# name = shape op(  -- a shape may be a tuple, "(bf16[8,56,56,64]{3,2,1,0}, u8[0]{0})"
_INSTR = re.compile(r"^\s*(?:ROOT )?%(\S+) = (\((?:[^()]|\([^()]*\))*\)|\S+) (\S+?)\(")
_WINDOW = re.compile(r"window=\{size=([\dx]+)")


def _spatial(shape: str) -> int:
    dims = [int(d) for d in re.findall(r"\d+", shape.split("{")[0].split("[", 1)[1])]
    return dims[1] * dims[2] if len(dims) == 4 else 1


def classify_hlo(hlo_text: str) -> dict[str, str]:
    """Instruction name -> bucket, for every instruction of a compiled HLO module.

    A fusion is bucketed by what its computation holds; a convolution by its role: a forward
    convolution was traced outside ``transpose`` (the backward pass); of the backward ones
    (and of XLA's rewrites, which carry no trace), the filter gradient is the one whose window
    spans more positions than its output has (it slides the activations over the output
    gradient), the input gradient the other.
    """
    comps: dict[str, list[str]] = {}
    current = None
    for line in hlo_text.splitlines():
        if line and not line.startswith(" ") and "{" in line and "(" in line:
            current = line.split()[1 if line.startswith("ENTRY") else 0].lstrip("%")
            comps[current] = []
        elif current is not None:
            comps[current].append(line)

    def conv_bucket(line: str, shape: str) -> str:
        if "op_name=" in line and "transpose(" not in line:
            return "conv forward"  # traced outside the backward pass (train or inference)
        w = _WINDOW.search(line)
        window = 1
        for d in w.group(1).split("x") if w else []:
            window *= int(d)
        return "conv filter-grad" if window > _spatial(shape) else "conv input-grad"

    def custom_call_bucket(line: str, shape: str) -> str | None:
        """cuDNN convolutions and cuBLAS GEMMs, as XLA:GPU calls them."""
        target = _TARGET.search(line)
        target = target.group(1) if target else ""
        if "convBackwardFilter" in target:
            return "conv filter-grad"
        if "convBackwardInput" in target:
            return "conv input-grad"
        if "conv" in target.lower():  # convForward / convBiasActivationForward / a cuDNN fusion
            return "conv input-grad" if "transpose(" in line else "conv forward"
        if "gemm" in target.lower() or "matmul" in target.lower() or "cublas" in target.lower():
            return "dot"
        return None

    def body_bucket(lines: list[str]) -> str:
        ops = {m.group(3) for m in map(_INSTR.match, lines) if m}
        if ops & {"reduce-window", "select-and-scatter"}:
            return "pooling"
        if "custom-call" in ops:
            call = next(line for line in lines if " custom-call(" in line)
            if bucket := custom_call_bucket(call, _INSTR.match(call).group(2)):
                return bucket
        if "convolution" in ops:
            conv = next(line for line in lines if " convolution(" in line)
            return conv_bucket(conv, _INSTR.match(conv).group(2))
        if "dot" in ops:
            return "dot"
        if "reduce" in ops:
            return "reductions"
        if ops <= {"parameter", "copy", "transpose", "bitcast", "reshape", "constant", "broadcast"}:
            return "layout copies"
        if ops <= {"parameter", "iota", "constant", "broadcast", "reverse", "copy"}:
            return "pooling" if "iota" in ops else "layout copies"
        return "elementwise"

    out = {}
    for lines in comps.values():
        for line in lines:
            m = _INSTR.match(line)
            if not m:
                continue
            name, shape, op = m.groups()
            if op == "fusion":
                called = re.search(r"calls=%([\w.\-]+)", line)
                out[name] = body_bucket(comps.get(called.group(1), [])) if called else "other"
            elif op == "convolution":
                out[name] = conv_bucket(line, shape)
            elif op == "custom-call":
                out[name] = custom_call_bucket(line, shape) or "other"
            elif op in ("reduce-window", "select-and-scatter"):
                out[name] = "pooling"
            elif op in ("copy", "transpose"):
                out[name] = "layout copies"
            elif op == "reduce":
                out[name] = "reductions"
            elif op == "dot":
                out[name] = "dot"
    return out


_OP_NAME = re.compile(r'op_name="([^"]*)"')
_TARGET = re.compile(r'custom_call_target="([^"]*)"')

# A GPU kernel that names no HLO instruction (a library's own launch), by its name; first match.
_KERNEL_BUCKETS = [
    (re.compile(r"wgrad|backward_filter|bwd_filter", re.I), "conv filter-grad"),
    (re.compile(r"dgrad|backward_data|bwd_data", re.I), "conv input-grad"),
    (re.compile(r"fprop|implicit_gemm|conv", re.I), "conv forward"),
    (re.compile(r"gemm|matmul|cublas|cutlass", re.I), "dot"),
    (re.compile(r"reduce|batch_?norm|bn_", re.I), "reductions"),
    (re.compile(r"transpose|copy|memcpy|memset|nchw|nhwc", re.I), "layout copies"),
    (re.compile(r"fusion|elementwise", re.I), "elementwise"),
]
OPTIMIZER_PHASE = "optimizer, loss, other"


def _track_names(events: list[dict]) -> tuple[dict, dict]:
    """({pid: process name}, {(pid, tid): thread name}) from a trace's metadata events."""
    procs, threads = {}, {}
    for e in events:
        if e.get("ph") == "M" and e.get("name") == "process_name":
            procs[e["pid"]] = e.get("args", {}).get("name", "")
        elif e.get("ph") == "M" and e.get("name") == "thread_name":
            threads[(e["pid"], e.get("tid"))] = e.get("args", {}).get("name", "")
    return procs, threads


def attribute(events: list[dict], buckets_of: dict, phase_of: dict, steps: int = 1) -> dict:
    """A Chrome/Perfetto trace's op time per bucket, per phase and per op (ms per step).

    On an accelerator (processes named ``/device:...``), the kernels on its streams (threads
    named ``Stream ...``; every device thread if none is so named) are the denominator, so that
    nothing is counted twice (the ``XLA Ops`` / ``XLA Modules`` lines summarise the same time);
    a kernel goes to the bucket of its HLO instruction (``args.hlo_op``, else its name) or, with
    neither, of its kernel name (:data:`_KERNEL_BUCKETS`), else "other". Elementwise and
    reduction fusions of the optimizer/loss phase go to "optimizer". On the CPU (no device
    process), the events named like an HLO instruction (XLA:CPU's thunks). ``coverage``: the
    share of that time in a named bucket (not "other")."""
    procs, threads = _track_names(events)
    devices = {pid for pid, name in procs.items() if name.startswith("/device:")}
    spans = [e for e in events if e.get("ph") == "X" and "dur" in e]
    if devices:
        on_device = [e for e in spans if e["pid"] in devices]
        streams = [e for e in on_device if threads.get((e["pid"], e.get("tid")), "").startswith("Stream")]
        kernels = streams or on_device
    else:
        kernels = [e for e in spans if e["name"] in buckets_of]
    per_op, totals, phases = collections.Counter(), collections.Counter(), collections.Counter()
    bucket_of_op = {}
    for e in kernels:
        op = e.get("args", {}).get("hlo_op") or e["name"]
        if op in buckets_of:
            bucket, phase = buckets_of[op], phase_of.get(op, "unattributed")
        else:
            bucket = next((b for rx, b in _KERNEL_BUCKETS if rx.search(e["name"])), "other")
            phase = "unattributed"
        if phase == OPTIMIZER_PHASE and bucket in ("elementwise", "reductions"):
            bucket = "optimizer"
        ms = e["dur"] / 1e3 / steps
        per_op[op] += ms
        bucket_of_op[op] = bucket
        totals[bucket] += ms
        phases[phase] += ms
    busy = sum(totals.values())
    return {
        "totals": dict(totals),
        "phases": dict(phases),
        "top": [(ms, op, bucket_of_op[op]) for op, ms in per_op.most_common()],
        "busy_ms": busy,
        "coverage": 1.0 - totals.get("other", 0.0) / busy if busy else 0.0,
        "source": "device kernels" if devices else "host thunks",
    }


def phases_of_hlo(hlo_text: str) -> dict[str, str]:
    """Entry instruction name -> the phase its trace metadata names: 'backward' (under
    ``transpose``), 'forward' (the model, under ``jvp`` in a train step), 'optimizer, loss,
    other' (Adam, the plateau state, metrics), or 'unattributed' (XLA's own, no metadata)."""
    out = {}
    for line in hlo_text.split("\nENTRY", 1)[-1].splitlines():
        m = _INSTR.match(line)
        if not m:
            continue
        op_name = _OP_NAME.search(line)
        if op_name is None:
            out[m.group(1)] = "unattributed"
        elif "transpose(" in op_name.group(1):
            out[m.group(1)] = "backward"
        elif "jvp(" in op_name.group(1) or "FusionClassifier" in op_name.group(1):
            out[m.group(1)] = "forward"
        else:
            out[m.group(1)] = OPTIMIZER_PHASE
    return out


def profile_jax(model, batch_size: int, size: int, steps: int, mode: str) -> tuple[dict, list, float, dict]:
    """(bucket -> ms per step, [(ms per step, instruction, bucket)], wall ms per step,
    phase -> ms per step, :func:`attribute`'s whole result)."""
    host = benchmark.make_batch(0, batch_size, size)
    tx, plateau = state_lib.optimizers(base_config().train)  # the paper's Adam + plateau
    st = state_lib.create_train_state(model, jax.random.key(0), host, tx, plateau)
    batch = jax.device_put(host)
    if mode == "train":
        step = make_train_step(model, tx, None)
        lowered = step.lower(st, batch)
        holder = {"st": st}

        def run():
            holder["st"], m = step(holder["st"], batch)
            return m["loss"]
    else:
        step = make_eval_step(model, None)
        lowered = step.lower(st.params, st.batch_stats, batch)

        def run():
            return step(st.params, st.batch_stats, batch)

    hlo = lowered.compile().as_text()
    buckets_of, phase_of = classify_hlo(hlo), phases_of_hlo(hlo)
    jax.block_until_ready(run())
    jax.block_until_ready(run())
    with tempfile.TemporaryDirectory() as tmp:
        jax.profiler.start_trace(tmp, create_perfetto_trace=True)
        t0 = time.perf_counter()
        for _ in range(steps):
            out = run()
        jax.block_until_ready(out)
        wall = (time.perf_counter() - t0) / steps * 1e3
        jax.profiler.stop_trace()
        trace = glob.glob(f"{tmp}/**/*.trace.json.gz", recursive=True)[0]
        events = json.load(gzip.open(trace))["traceEvents"]
    res = attribute(events, buckets_of, phase_of, steps)
    return res["totals"], res["top"], wall, res["phases"], res


_TORCH_BUCKETS = [  # (substring of the aten op, bucket), first match wins
    ("convolution_backward", "conv backward (input + filter)"),
    ("convolution", "conv forward"),
    ("max_pool", "pooling"),
    ("batch_norm", "BatchNorm (fwd + bwd)"),
    ("addmm", "dot"),
    ("mm", "dot"),
    ("copy_", "layout copies"),
    ("contiguous", "layout copies"),
    ("adam", "optimizer"),
    ("_foreach", "optimizer"),
    ("threshold_backward", "elementwise"),
    ("relu", "elementwise"),
    ("add", "elementwise"),
    ("mul", "elementwise"),
    ("mean", "reductions"),
    ("sum", "reductions"),
]


def profile_torch(batch_size: int, size: int, steps: int, mode: str) -> tuple[dict, list, float]:
    """Self CPU time of each aten op of the benchmark's PyTorch model, bucketed."""
    from torch.profiler import ProfilerActivity, profile

    model, train, infer = benchmark.torch_model(batch_size, size, "float32", False)
    fn = train if mode == "train" else infer
    model.train(mode == "train")
    fn()
    fn()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        for _ in range(steps):
            fn()
        wall = (time.perf_counter() - t0) / steps * 1e3
    totals, top = collections.Counter(), []
    for ev in prof.key_averages():
        if ev.self_cpu_time_total <= 0 or not ev.key.startswith("aten::"):
            continue
        ms = ev.self_cpu_time_total / 1e3 / steps
        bucket = next((b for s, b in _TORCH_BUCKETS if s in ev.key), "other")
        totals[bucket] += ms
        top.append((ms, ev.key, bucket))
    return dict(totals), sorted(top, reverse=True), wall


def print_tables(title: str, totals: dict, top: list, wall: float, n_top: int, phases: dict | None = None) -> None:
    busy = sum(totals.values())
    print(f"\n### {title}: {wall:.0f} ms per step (ops busy {busy:.0f} ms summed over threads)\n")
    print("| bucket | ms per step | share |\n|---|---:|---:|")
    for b, ms in sorted(totals.items(), key=lambda kv: -kv[1]):
        print(f"| {b} | {ms:.1f} | {100 * ms / busy:.1f}% |")
    if phases:
        print("\n| phase | ms per step | share |\n|---|---:|---:|")
        for ph, ms in sorted(phases.items(), key=lambda kv: -kv[1]):
            print(f"| {ph} | {ms:.1f} | {100 * ms / busy:.1f}% |")
    print(f"\n| top {n_top} ops | bucket | ms per step |\n|---|---|---:|")
    for ms, name, b in top[:n_top]:
        print(f"| `{name}` | {b} | {ms:.1f} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    benchmark.add_model_args(p)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--lowering", default="auto", help="auto | cpu | xla (lnm_jax/models/lowering.py)")
    p.add_argument("--mode", choices=("train", "inference"), default="train")
    p.add_argument("--torch", action="store_true", help="also profile the PyTorch model (ResNet-50, width 64)")
    p.add_argument("--top", type=int, default=15)
    a = p.parse_args()
    dev = jax.devices()[0]
    print(
        f"{a.mode}: {a.setting} {a.backbone} w{a.width}, {a.image_size}px, batch {a.batch}, {a.dtype}; "
        f"{dev.platform} {dev.device_kind}; jax {jax.__version__}; lowering {a.lowering}"
    )
    model = FusionClassifier(
        parse_modalities(a.setting), backbone=a.backbone, width=a.width, dtype=jnp.dtype(a.dtype), lowering=a.lowering
    )
    totals, top, wall, phases, res = profile_jax(model, a.batch, a.image_size, a.steps, a.mode)
    print_tables("JAX / XLA", totals, top, wall, a.top, phases)
    print(f"\nattributed: {100 * res['coverage']:.1f}% of {res['busy_ms']:.1f} ms of {res['source']} per step")
    if a.torch and a.backbone == "resnet50" and a.width == 64 and a.setting == "triple":
        print_tables("PyTorch eager", *profile_torch(a.batch, a.image_size, a.steps, a.mode), a.top)


if __name__ == "__main__":
    main()
