"""The GPU check: every measurement this project needs from an accelerator, prepared to run in
short slots and to write Markdown tables a person can paste (docs/benchmarks.md#gpu-check). All
steps take about 22 minutes on an H200 (measured 2026-11-30): a 15-minute slot runs some of them
(``--only``, ``--candidates``), within ``--budget``.

    python scripts/gpu_check.py --out gpu_check            # one NVIDIA GPU, no TensorFlow
    python scripts/gpu_check.py --out /tmp/check --tiny    # any CPU: every step at toy size (tested)

Steps, in order of importance, each in its own process(es) (``scripts/benchmark.py`` also puts
every framework, dtype and batch size in its own), each writing ``OUT/<step>.md``:

1. ``environment``: GPU name, driver and memory (nvidia-smi), Python, JAX, Flax, optax, PyTorch.
2. ``step_vs_torch``: JAX bf16 batch 256 vs PyTorch eager AMP and ``torch.compile`` AMP
   (channels_last), measured in one invocation (the only JAX/PyTorch ratios this check states).
3. ``profile``: the bf16 train step's kernel time by bucket and phase (``scripts/profile_step.py``;
   XLA:GPU command buffers off, so that each kernel is traced under its own HLO instruction).
4. ``train_e2e``: ``lnm-jax train`` end to end, device-resident data on and off, validation and
   checkpoints inside the wall time (``scripts/train_e2e.py``; 4,096 synthetic patients, eleven
   epochs, checkpoints whenever the last save is done (``train.checkpoint_every_epochs=0``: on
   the H200 a save of the paper's state outlasted several epochs), epochs 3-11 timed; the loop's
   thread sampled).
5. ``candidates``: the bf16 batch-256 step under each of ``benchmark.CANDIDATES`` (XLA:GPU
   flag sets, BatchNorm statistics in bf16, the 7x7 stem (the default is the space-to-depth one
   on a GPU), the two branches stacked
   under ``vmap``), in ``CANDIDATE_ORDER`` or ``--candidates``, speed-ups against the default
   measured in the same invocation (``--tiny``: the default and the stem only, on a one-branch
   model; the others are tested in tests/test_models.py and tests/test_benchmark.py).
6. ``step_jax``: JAX bf16 batch 128 and 512, fp32 (TF32) batch 256.
7. ``export``: exported StableHLO and ONNX inference vs the live model
   (``scripts/benchmark_export.py``).

Inference with BatchNorm folded is a column of the step tables. The steps share JAX's
persistent compilation cache (``OUT/work/jax_cache``). ``OUT/summary.md`` lists every
step with its status and wall time. A step that fails, times out or does not fit the remaining
``--budget`` is one line there, never a traceback (a timed-out step's whole process group is
killed, so no measuring child holds the GPU into the next step); without PyTorch the
comparison runs JAX alone and says so; without a GPU every step runs on what JAX sees and the
summary says that first.
Needs no TensorFlow (said in the summary when it is installed: the steps never import it).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PAPER = ["--setting", "triple", "--backbone", "resnet50", "--width", "64", "--image-size", "224"]
# toy sizes for a CPU: the same steps and code paths (PyTorch compares torchvision's models at
# width 64: ResNet-18, at 32 px, there)
TINY_MODEL = ["--setting", "bmode,us_lnm", "--backbone", "resnet10", "--width", "4", "--image-size", "32"]
TINY_TORCH = ["--setting", "triple", "--backbone", "resnet10", "--width", "64", "--image-size", "32"]


# the profile's: each kernel traced under its own HLO instruction, so that every one has a phase
PROFILE_XLA_FLAGS = "--xla_gpu_enable_command_buffer="

# benchmark.CANDIDATES in the order the full check measures them: the GPU defaults before the
# sliced max pools and the written-out BatchNorm gradient (each 1.03x on an H200, 2026-12-04; not
# yet measured together against them), those not yet measured on a GPU, then those measured on
# an H200 (docs/benchmarks.md): the 7x7 stem; the two now in the default (the same programs as
# the default there); the rest none faster, the 1x1 GEMMs crashing XLA:GPU's compiler. A budget
# that runs out keeps the rows measured
CANDIDATE_ORDER = [
    "default",
    "XLA max pools and flax BatchNorm",
    "command buffers off",
    "Triton GEMM for all dots",
    "no Triton GEMM",
    "7x7 stem",
    "BatchNorm gradient written out",
    "max pools as slices",
    "autotune level 4",
    "BatchNorm statistics in bf16",
    "cuDNN runtime fusion",
    "branches stacked (vmap)",
    "1x1 GEMMs and sliced max pools",
]


# a step not run by this call whose table an earlier call into the same --out left
KEPT = "not run now: its table is an earlier call's (same folder)"


def steps(out: Path, tiny: bool, torch: bool, candidates: list[str] | None = None, gpu: bool = True) -> list[dict]:
    """The check's steps: name, title, command lines (run one after another into one file) and
    a time limit in seconds, at paper size or ``tiny``; ``candidates`` (full size only): those
    of ``CANDIDATE_ORDER`` to measure, default all. ``gpu`` False (no GPU seen): the profile
    runs without its XLA:GPU flag, which changes nothing on a CPU but the compilation cache's
    key, so that its programs are the ones the candidates' default row compiles again."""
    py = sys.executable
    bench, profile = str(HERE / "benchmark.py"), str(HERE / "profile_step.py")
    model = TINY_MODEL if tiny else PAPER
    short = ["--steps", "1", "--warmup", "1"] if tiny else ["--steps", "10", "--warmup", "2"]
    batch = (lambda b: "2") if tiny else str  # noqa: E731
    vs_torch = [py, bench, *(TINY_TORCH if tiny else PAPER), *short, "--dtypes", "bfloat16"]
    vs_torch += ["--batch-sizes", batch(256)] + (["--torch", "--torch-compile"] if torch else [])
    if tiny:  # torch.compile's CPU compile alone takes minutes: eager stands for it here
        vs_torch = [c for c in vs_torch if c != "--torch-compile"]
    e2e = [py, str(HERE / "train_e2e.py"), "--workdir", str(out / "work" / "train_e2e")]
    # saving whenever the last save is done, epochs 3-11 timed (train_e2e.py; `--checkpoint-every-epochs
    # 5` times the last 5, one save point and its wait for the one before); the tiny run saves every
    # epoch over 3
    e2e_size = ["--tiny"] if tiny else ["--patients", "4096", "--epochs", "11"]
    e2e += [*e2e_size, "--checkpoint-every-epochs", "1" if tiny else "0", "--host-profile", "30"]
    export = [py, str(HERE / "benchmark_export.py"), "--untrained"]  # on its own synthetic patients
    export += ["--backbone", "resnet10", "--width", "4", "--image-size", "32", "--batch-sizes", "1,2", "--repeats", "1"]
    export += ["--stablehlo-only"]  # tiny: the ONNX conversion is tests/test_export.py's
    if not tiny:
        export = export[: export.index("--backbone")] + ["--batch-sizes", "1,256", "--repeats", "5"]
    cand = [py, bench, *model, *short, "--dtypes", "bfloat16", "--batch-sizes", batch(256), "--candidates"]
    cand += ["default,space-to-depth stem" if tiny else ",".join(candidates or CANDIDATE_ORDER)]
    return [
        {"name": "step_vs_torch", "title": "Train step, inference: JAX vs PyTorch", "cmds": [vs_torch], "limit": 240},
        {
            "name": "profile",
            "title": "Where the bf16 train step's time goes" + (" (XLA:GPU command buffers off)" if gpu else ""),
            "cmds": [[py, profile, *model, "--dtype", "bfloat16", "--batch", batch(256), "--steps", "2"]],
            "limit": 120,
            # with command buffers on, the 2026-11-30 H200 trace named most kernels' HLO op
            # 'command_buffer_N': buckets came from kernel names, 55% of the time had no phase
            "xla_flags": PROFILE_XLA_FLAGS if gpu else "",
        },
        {"name": "train_e2e", "title": "lnm-jax train end to end", "cmds": [e2e], "limit": 420},
        {
            "name": "candidates",
            "title": "Candidates for the bf16 train step (each the same function; one process each)",
            "cmds": [cand],
            "limit": 300,
        },
        {
            "name": "step_jax",
            "title": "Train step and inference: JAX at other batch sizes and precisions",
            "cmds": [[py, bench, *model, *short, "--dtypes", "float32", "--batch-sizes", "2"]]
            if tiny
            else [
                [py, bench, *model, *short, "--dtypes", "bfloat16", "--batch-sizes", "128,512"],
                [py, bench, *model, *short, "--dtypes", "float32", "--batch-sizes", "256"],
            ],
            "limit": 180,
        },
        {"name": "export", "title": "Exported model inference", "cmds": [export], "limit": 120},
    ]


def _probe(code: str) -> str:
    """What a fresh interpreter prints for ``code`` (one line), or why it could not."""
    try:
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        return "no answer in 120 s"
    lines = (res.stdout.strip() or res.stderr.strip() or "no output").splitlines()
    return lines[-1][:200]


def environment() -> tuple[str, bool, bool]:
    """(the environment table, a GPU seen by JAX, PyTorch usable: installed, and where there is
    a GPU also importable; without one a broken install fails the PyTorch row, in one line)."""
    rows = []
    if shutil.which("nvidia-smi"):
        q = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm", "--format=csv,noheader"],
            capture_output=True,
            text=True,
        )
        rows.append(("GPU (nvidia-smi)", q.stdout.strip().replace("\n", "; ") or q.stderr.strip()))
    else:
        rows.append(("GPU (nvidia-smi)", "nvidia-smi not found"))
    rows.append(("python", sys.version.split()[0]))
    jax_line = _probe(
        "import jax, flax, optax; d = jax.devices()[0]; "
        "print(f'jax {jax.__version__}, flax {flax.__version__}, optax {optax.__version__}; '"
        "f'{jax.device_count()} x {d.platform} {d.device_kind}')"
    )
    rows.append(("JAX", jax_line))
    gpu = " gpu " in f" {jax_line.lower()} " or "x gpu" in jax_line.lower()
    torch = importlib.util.find_spec("torch") is not None
    if not torch:
        torch_line = "not installed: the PyTorch rows are skipped"
    elif gpu or shutil.which("nvidia-smi"):  # what CUDA this torch was built with and sees: only an import says
        torch_line = _probe(
            "import torch, torchvision; c = torch.cuda.is_available(); "
            "print(f'torch {torch.__version__}, torchvision {torchvision.__version__}, '"
            "f'CUDA {torch.version.cuda if c else \"not available\"}')"
        )
    else:  # no GPU to ask about: the installed versions, without the ~6 s import
        torch_line = (
            f"torch {_version('torch')}, torchvision {_version('torchvision')} (installed package versions), "
            "CUDA not available (no GPU)"
        )
    torch = torch and torch_line.startswith("torch ")
    rows.append(("PyTorch", torch_line))
    tf = importlib.util.find_spec("tensorflow") is not None
    rows.append(("TensorFlow", "installed (no step imports it)" if tf else "not installed"))
    table = "| what | version / device |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows) + "\n"
    return table, gpu, torch


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "(no version recorded)"


def _one_line(stderr: str, returncode: int) -> str:
    """The exception a failed command ended with (not the traceback), else its last line."""
    lines = stderr.strip().splitlines() or [f"exit {returncode}, no output"]
    raised = [x for x in lines if re.match(r"^[\w.]+(Error|Exception|Interrupt|Exit): ", x)]
    return (raised or lines)[-1][:240]


def e2e_table(stdout: str) -> str:
    """train_e2e.py's output with its JSON lines as a table (the other lines kept above it)."""
    rows = [json.loads(x) for x in stdout.splitlines() if x.startswith("{")]
    if not rows:
        return stdout
    other = "".join(f"{x}\n" for x in stdout.splitlines() if x.strip() and not x.startswith("{"))
    keys = [
        "on_device",
        "checkpoint_every_epochs",
        "train_patients",
        "epochs",
        "timed_epochs",
        "setup_s",
        "wall_s_all_epochs",
        "patients_per_s_steps_only",
        "patients_per_s_whole_epoch",
        "checkpoints_and_log_s_per_epoch",
        "timed_cycles_s",
        "device",
    ]
    lines = ["| " + " | ".join(keys) + " | whole epoch / steps only |", "|" + "---|" * (len(keys) + 1)]
    for r in rows:
        share = r["patients_per_s_whole_epoch"] / r["patients_per_s_steps_only"]
        lines.append("| " + " | ".join(str(r[k]) for k in keys) + f" | {100 * share:.0f}% |")
    return other + "\n" + "\n".join(lines) + "\n"


def _run(cmd: list[str], limit: float, env: dict | None = None) -> subprocess.CompletedProcess:
    """``cmd`` with its output captured, in a process group of its own: at ``limit`` seconds the
    whole group is killed (a benchmark's measuring child too, which would otherwise go on
    holding the GPU and its memory into the next step), returncode None then."""
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True
    )
    try:
        stdout, stderr = proc.communicate(timeout=limit)
        return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        return subprocess.CompletedProcess(cmd, None, stdout, stderr)


def child_env(out: Path, xla_flags: str = "") -> dict:
    """The steps' environment: this one, with JAX's persistent compilation cache in
    ``OUT/work/jax_cache`` unless one is set (programs that two steps compile alike, the
    default bf16 step of the comparison and of the candidates, compile once; the warm-up
    column of a later step is shorter then, its step times are the same), and ``xla_flags``
    added to XLA_FLAGS."""
    env = dict(os.environ)
    env.setdefault("JAX_COMPILATION_CACHE_DIR", str(out / "work" / "jax_cache"))
    if xla_flags:
        env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {xla_flags}".strip()
    return env


def run_step(step: dict, out: Path, deadline: float) -> dict:
    """Runs one step's commands into ``OUT/<name>.md``; returns its summary row."""
    t0 = time.perf_counter()
    left = deadline - time.monotonic()
    if left < 30:
        return {"step": step["name"], "status": f"skipped: {left:.0f} s of the budget left", "wall_s": 0.0, "file": ""}
    parts, status, env = [f"## {step['title']}\n"], "ok", child_env(out, step.get("xla_flags", ""))
    for cmd in step["cmds"]:
        limit = min(step["limit"], max(deadline - time.monotonic(), 1))
        shown = " ".join(
            "python" if c == sys.executable else str(Path(c).relative_to(HERE.parent)) if c.startswith(str(HERE)) else c
            for c in cmd
        )
        flags = f"XLA_FLAGS='{step['xla_flags']}' " if step.get("xla_flags") else ""
        parts.append(f"`{flags}{shown}`\n")
        res = _run(cmd, limit, env)
        parts.append(e2e_table(res.stdout) if step["name"] == "train_e2e" else res.stdout)
        if res.returncode is None:  # timed out: the rows measured before the limit are kept
            status = f"timed out after {limit:.0f} s"
            parts.append(f"{status}\n")
            break
        if res.returncode != 0:
            status = f"failed: {_one_line(res.stderr, res.returncode)}"
            parts.append(f"{status}\n")
            break
        failed = [x for x in res.stdout.splitlines() if "| failed: " in x]
        if failed and status == "ok":
            status = f"ok, {len(failed)} row(s) failed (in the table)"
    (out / f"{step['name']}.md").write_text("\n".join(parts))
    return {"step": step["name"], "status": status, "wall_s": time.perf_counter() - t0, "file": f"{step['name']}.md"}


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--out", type=Path, required=True, help="folder for the Markdown tables (created; work/ holds the e2e runs)"
    )
    p.add_argument("--tiny", action="store_true", help="toy sizes: every step on a CPU in about a minute")
    p.add_argument("--budget", type=float, default=460.0, help="seconds for all steps (a step left no time is skipped)")
    p.add_argument("--only", default="", help="comma list of steps to run (default: all)")
    p.add_argument(
        "--candidates",
        default="",
        help=f"comma list of the candidates step's rows, in order (default: all, {', '.join(CANDIDATE_ORDER)})",
    )
    a = p.parse_args(argv)
    known = [s["name"] for s in steps(a.out, a.tiny, False)]
    chosen = [c.strip() for c in a.only.split(",") if c.strip()]
    if unknown := [c for c in chosen if c not in known]:
        p.error(f"--only: unknown step(s) {', '.join(unknown)}; the steps: {', '.join(known)}")
    candidates = [c.strip() for c in a.candidates.split(",") if c.strip()]
    if unknown := [c for c in candidates if c not in CANDIDATE_ORDER]:
        p.error(f"--candidates: unknown {', '.join(unknown)}; the candidates: {', '.join(CANDIDATE_ORDER)}")
    a.out.mkdir(parents=True, exist_ok=True)
    ran = [n for n in known if not chosen or n in chosen]
    for name in ran:  # a rerun leaves no stale table of these steps; the other steps' tables stay
        (a.out / f"{name}.md").unlink(missing_ok=True)
    if "train_e2e" in ran:
        shutil.rmtree(a.out / "work" / "train_e2e", ignore_errors=True)  # nor its cohort and runs
    deadline = time.monotonic() + a.budget
    t0 = time.perf_counter()
    table, gpu, torch = environment()
    (a.out / "environment.md").write_text("## Environment\n\n" + table)
    rows = [{"step": "environment", "status": "ok", "wall_s": time.perf_counter() - t0, "file": "environment.md"}]
    for step in steps(a.out, a.tiny, torch, candidates, gpu):
        if step["name"] in ran:
            rows.append(run_step(step, a.out, deadline))
            print(f"[gpu_check] {rows[-1]['step']}: {rows[-1]['status']} ({rows[-1]['wall_s']:.0f} s)", flush=True)
        elif (a.out / f"{step['name']}.md").is_file():  # e.g. the first of two calls into one folder
            rows.append({"step": step["name"], "status": KEPT, "wall_s": 0.0, "file": f"{step['name']}.md"})
    notes = []
    if not gpu:
        notes.append("No GPU seen by JAX: every step ran on the CPU (figures are not GPU figures).")
    if not torch:
        notes.append("PyTorch not importable: the comparison ran JAX alone.")
    summary = (
        f"# GPU check{' (tiny sizes)' if a.tiny else ''}\n\n"
        + "".join(f"{n}\n\n" for n in notes)
        + table
        + "\n| step | status | wall (s) | file |\n|---|---|---:|---|\n"
        + "\n".join(f"| {r['step']} | {r['status']} | {r['wall_s']:.0f} | {r['file'] or '-'} |" for r in rows)
        + f"\n\nTotal {time.perf_counter() - t0:.0f} s.\n"
    )
    (a.out / "summary.md").write_text(summary)
    print(summary)
    return rows


if __name__ == "__main__":
    main()
