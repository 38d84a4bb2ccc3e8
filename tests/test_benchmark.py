"""The train-step benchmark runs (tiny sizes) and stays TensorFlow-free."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support import BACKBONE

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "benchmark.py"
# the scripts' model options at smoke-test size
TINY = ["--backbone", BACKBONE, "--width", "4", "--image-size", "32", "--steps", "1"]
ONE_BRANCH = ["--setting", "bmode,us_lnm"]  # the scripts' paths, at half the compile time of triple


def _load(name: str):
    """A script of scripts/ as a module (scripts import their sibling benchmark.py)."""
    spec = importlib.util.spec_from_file_location(name, SCRIPT.with_name(f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        spec.loader.exec_module(mod)
    finally:
        sys.path.remove(str(SCRIPT.parent))
    return mod


def test_benchmark_mfu_is_against_the_precision_used_and_a_failed_child_is_one_row():
    b = _load("benchmark")
    per_image = b.TRAIN_GFLOP_PER_IMAGE_224["resnet50"]
    assert b.train_gflop_per_patient("triple", 224, 64) == 2 * per_image  # two images
    assert b.train_gflop_per_patient("bmode,us_lnm", 112, 32) == per_image / 16
    assert b.train_gflop_per_patient("triple", 224, 64, "resnet18") < per_image  # ResNet-18: 1.82 of 4.1 GMAC
    assert b.train_gflop_per_patient("triple", 224, 64, "vgg11") is None  # no stated count: no MFU
    assert b.precision_used("bfloat16", "gpu") == "bf16 tensor"
    assert b.precision_used("float32", "gpu") == "tf32 tensor"  # JAX's and cuDNN's default for fp32 inputs
    assert b.precision_used("float32", "gpu", highest=True) == "fp32"
    assert b.precision_used("float32", "cpu") == "fp32" and b.precision_used("bfloat16", "cpu") == "bf16 inputs"
    assert b.peak_tflops("fp32", "cpu") is None and b.peak_tflops("fp32", "gpu") == 67.0  # no MFU on CPU
    spec = {
        "framework": "jax",
        "dtype": "float32",
        "batch": 2,
        "setting": "bmode",
        "backbone": "nope",
        "width": 4,
        "image_size": 16,
        "steps": 1,
        "warmup": 1,
        "lowering": "auto",
        "highest": False,
    }
    r = b.run_child(spec, timeout=120)
    assert set(r) == {"error"} and "\n" not in r["error"] and "nope" in r["error"]


def test_host_malloc_reaches_every_measured_process_and_glibc_reads_it(monkeypatch):
    """--host-malloc gives both frameworks' children the same GLIBC_TUNABLES, after any already
    set; glibc's loader reads every setting back as given (a tunable glibc cannot parse would be
    ignored silently)."""
    import shutil

    b = _load("benchmark")
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.pthread.rseq=0")
    for framework in ("jax", "torch eager", "torch.compile"):
        env = b.child_env({"framework": framework}, "hugepages")
        assert env["GLIBC_TUNABLES"] == "glibc.pthread.rseq=0:glibc.malloc.hugetlb=1"
    assert b.child_env({"framework": "jax"}, "inherit")["GLIBC_TUNABLES"] == "glibc.pthread.rseq=0"
    monkeypatch.delenv("GLIBC_TUNABLES")
    assert "GLIBC_TUNABLES" not in b.child_env({}, "inherit")
    loader = shutil.which("ld.so") or "/lib64/ld-linux-x86-64.so.2"
    if sys.platform != "linux" or not Path(loader).exists():
        pytest.skip("glibc's loader is needed to read the settings back")
    for name, tunables in b.HOST_MALLOC.items():
        if not tunables:
            continue
        res = subprocess.run(
            [loader, "--list-tunables"], env=b.child_env({}, name), capture_output=True, text=True, timeout=30
        )
        if res.returncode != 0:
            pytest.skip(f"{loader} --list-tunables: {res.stderr.strip()[:100]} (glibc < 2.33)")
        listed = dict(line.split(": ", 1) for line in res.stdout.splitlines() if ": " in line)
        for setting in tunables.split(":"):
            key, value = setting.split("=")
            assert int(listed[key].split()[0], 0) == int(value), (name, key, listed.get(key))


def test_script_is_importable():
    assert callable(_load("benchmark").bench)


def test_ratios_are_taken_within_a_round_and_given_with_their_median():
    """--rounds: each ratio pairs the two rows of one round (a round one framework failed has
    none), and several rounds give the median, then every round's value in order."""
    per_round = _load("benchmark").per_round
    torch = [{"round": i, "infer_s": s} for i, s in enumerate((2.0, 1.0, 3.0))]
    jax_ = [{"round": i, "infer_s": 1.0, "infer_folded_s": s} for i, s in enumerate((1.0, 1.0, 2.0))]
    assert per_round(torch, jax_, "infer_s", "infer_folded_s") == "1.50 (2.00, 1.00, 1.50)"
    assert per_round(torch[:1], jax_[:1], "infer_s", "infer_s") == "2.00"
    assert per_round(torch[1:], jax_[:1], "infer_s", "infer_s") == "-"  # no round in common
    assert per_round(torch, [{**m, "infer_folded_s": None} for m in jax_], "infer_s", "infer_folded_s") == "-"
    assert per_round(torch, jax_[::2], "infer_s", "infer_s") == "2.50 (2.00, 3.00)"  # round 1 failed for one


def test_cpu_tuning_table_smoke():
    """One variant of the XLA:CPU settings table in two alternated rounds, tiny sizes (its rows
    name their round and parse as numbers)."""
    script = SCRIPT.with_name("cpu_tuning.py")
    args = [*TINY, *ONE_BRANCH, "--batch", "2", "--variants", "single-threaded Eigen", "--rounds", "2"]
    out = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [r.split("|") for r in out.stdout.splitlines() if r.startswith("| single-threaded Eigen |")]
    assert [r[2].strip() for r in rows] == ["1", "2"], out.stdout
    assert all(float(r[3]) > 0 and float(r[4]) > 0 for r in rows), out.stdout
    # the CPUs the measuring processes may use (their affinity), not the machine's count
    assert f"{len(os.sched_getaffinity(0))} CPUs this process may run on" in out.stdout.splitlines()[0], out.stdout


def test_cpu_tuning_variant_names_pass_through_its_comma_list():
    assert not [n for n in _load("cpu_tuning").VARIANTS if "," in n]  # --variants splits on commas


def test_profile_buckets_forward_and_both_gradients_of_a_convolution():
    import jax
    import jax.numpy as jnp
    from jax import lax

    profile = _load("profile_step")

    def loss(x, w):
        y = lax.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return jnp.sum(jax.nn.relu(y) ** 2)

    x, w = jnp.ones((2, 8, 8, 3)), jnp.ones((3, 3, 3, 4))
    buckets = profile.classify_hlo(jax.jit(jax.grad(loss, (0, 1))).lower(x, w).compile().as_text())
    assert {"conv forward", "conv input-grad", "conv filter-grad"} <= set(buckets.values())
    inference = profile.classify_hlo(jax.jit(loss).lower(x, w).compile().as_text())
    assert "conv forward" in inference.values() and not {"conv input-grad", "conv filter-grad"} & set(
        inference.values()
    )


def _rows(md: str, first_cell: str) -> list[list[str]]:
    """The cells of a Markdown table's rows whose first cell is ``first_cell``."""
    return [[c.strip() for c in r.split("|")[1:-1]] for r in md.splitlines() if r.startswith(f"| {first_cell} |")]


def test_gpu_check_runs_every_step_at_tiny_size(gpu_check_tiny, tmp_path):
    """scripts/gpu_check.py end to end on the CPU at toy sizes: every step ok, each table with
    its rows (JAX and PyTorch steps, the profile's buckets and phases, both end-to-end modes, the
    exported program), and a step that gets no time is one line in the summary."""
    out = gpu_check_tiny
    summary = (out / "summary.md").read_text()
    assert "No GPU seen by JAX" in summary
    for step in ("step_vs_torch", "train_e2e", "candidates", "profile", "step_jax", "export"):
        assert _rows(summary, step)[0][1] == "ok", summary
    vs = (out / "step_vs_torch.md").read_text()
    assert _rows(vs, "jax") and _rows(vs, "torch eager"), vs
    ratios = _rows(vs, "torch eager")[-1]  # JAX/PyTorch, same invocation: train, inference, BN-folded
    assert len(ratios) == 6 and all(float(c) > 0 for c in ratios[3:]), vs
    step = (out / "step_jax.md").read_text()
    assert [r[1] for r in _rows(step, "jax")] == ["float32"], step  # bf16 in the other steps
    assert all(float(r[5]) > 0 for r in _rows(step, "jax"))  # train patients/s
    # the options the measuring process built its programs with, as this process (same XLA_FLAGS) would
    from lnm_jax import compile_options as co

    built = "; ".join(f"{k} {json.dumps(co.compiler_options(v) or {}, sort_keys=True)}" for k, v in co.KINDS.items())
    assert f"compile options (jax float32 2): {built}; XLA_FLAGS '{os.environ.get('XLA_FLAGS', '')}'" in step, step
    profile = (out / "profile.md").read_text()
    buckets = {r[0]: float(r[1]) for r in _rows(profile, "conv forward") + _rows(profile, "conv filter-grad")}
    assert buckets.get("conv forward", 0) > 0 and buckets.get("conv filter-grad", 0) > 0, profile
    assert float(_rows(profile, "forward")[0][1]) > 0 and float(_rows(profile, "backward")[0][1]) > 0
    e2e = (out / "train_e2e.md").read_text()
    assert [r[0] for r in _rows(e2e, "True") + _rows(e2e, "False")] == ["True", "False"], e2e
    # where the loop's thread spent the timed epochs, sampled: the loop itself on every stack
    assert all(float(r[1].rstrip("%")) > 50 for r in _rows(e2e, "`loop.py:train`")) and "`loop.py:train`" in e2e, e2e
    candidates = (out / "candidates.md").read_text()
    assert [r[0] for r in _rows(candidates, "space-to-depth stem")] == ["space-to-depth stem"], candidates
    export = (out / "export.md").read_text()
    assert len(_rows(export, "1")) == 1 and len(_rows(export, "2")) == 1, export
    # every row of every step measured (a JAX child that imported TensorFlow fails its row)
    for f in out.glob("*.md"):
        assert "| failed: " not in f.read_text(), f.name
    # no budget left: a step is skipped with one line and writes no table
    import time

    gc = _load("gpu_check")
    step = gc.steps(tmp_path, True, False)[0]
    row = gc.run_step(step, tmp_path, deadline=time.monotonic() + 1)
    assert row["status"].startswith("skipped:") and row["file"] == "" and not (tmp_path / f"{step['name']}.md").exists()


# An XLA:GPU module as the profiler's trace names it (tests/fixtures/gpu_train_step.hlo): cuDNN
# convolutions as custom-calls (tuple shapes), fusions, a layout copy, the optimizer's fusion
# traced outside the model.
GPU_HLO = (Path(__file__).parent / "fixtures" / "gpu_train_step.hlo").read_text()


def _gpu_trace() -> list[dict]:
    """Two steps of the module above in the Chrome/Perfetto JSON the JAX profiler writes on a
    GPU: kernels on a stream (with ``hlo_op`` where XLA launched them), the same time again on
    the ``XLA Ops`` summary line and a host thunk (neither may count), and two library kernels
    that name no HLO instruction."""
    meta = [
        {"ph": "M", "name": "process_name", "pid": 1, "args": {"name": "/device:GPU:0 (NVIDIA H200)"}},
        {"ph": "M", "name": "process_name", "pid": 2, "args": {"name": "/host:CPU"}},
        {"ph": "M", "name": "thread_name", "pid": 1, "tid": 13, "args": {"name": "Stream #13(Compute)"}},
        {"ph": "M", "name": "thread_name", "pid": 1, "tid": 90, "args": {"name": "XLA Ops"}},
    ]
    kernels = [  # (kernel name, hlo_op or None, microseconds over the two steps)
        ("sm90_xmma_fprop_implicit_gemm_bf16f32_nhwckrsc_nhwc", "custom-call.1", 4000),
        ("sm90_xmma_dgrad_implicit_gemm_bf16f32_nhwckrsc_nhwc", "custom-call.2", 3000),
        ("sm90_xmma_wgrad_implicit_gemm_bf16f32_nhwckrsc_nhwc", "custom-call.3", 5000),
        ("loop_maximum_fusion", "loop_maximum_fusion", 1000),
        ("input_reduce_fusion", "input_reduce_fusion", 800),
        ("loop_adam_fusion", "loop_adam_fusion", 600),
        ("copy_5", "copy.5", 300),
        ("cudnn::bn_fw_tr_1C11_kernel_NCHW", None, 200),
        ("void cub::DeviceRadixSortOnesweepKernel", None, 100),
    ]
    events = [
        {"ph": "X", "pid": 1, "tid": 13, "ts": i * 10000, "dur": d, "name": k, "args": {"hlo_op": op} if op else {}}
        for i, (k, op, d) in enumerate(kernels)
    ]
    events += [{"ph": "X", "pid": 1, "tid": 90, "ts": 0, "dur": 4000, "name": "custom-call.1", "args": {}}]
    events += [{"ph": "X", "pid": 2, "tid": 1, "ts": 0, "dur": 50, "name": "custom-call.1", "args": {}}]
    return meta + events


def test_gpu_profile_attribution_on_a_recorded_trace_shape():
    """Every kernel of a GPU trace lands in the bucket its HLO instruction (or its library
    name) says, each counted once, in ms per step; >= 90% of kernel time is attributed."""
    profile = _load("profile_step")
    buckets, phases = profile.classify_hlo(GPU_HLO), profile.phases_of_hlo(GPU_HLO)
    assert buckets["custom-call.1"] == "conv forward"
    assert buckets["custom-call.2"] == "conv input-grad" and buckets["custom-call.3"] == "conv filter-grad"
    res = profile.attribute(_gpu_trace(), buckets, phases, steps=2)
    assert res["source"] == "device kernels"
    expected = {
        "conv forward": 2.0,
        "conv input-grad": 1.5,
        "conv filter-grad": 2.5,
        "elementwise": 0.5,
        "reductions": 0.5,  # the reduce fusion 0.4 + cuDNN's BatchNorm kernel 0.1
        "optimizer": 0.3,
        "layout copies": 0.15,
        "other": 0.05,
    }
    assert res["totals"] == pytest.approx(expected)
    assert res["busy_ms"] == pytest.approx(7.5)
    assert res["coverage"] == pytest.approx(1 - 0.05 / 7.5) and res["coverage"] >= 0.9
    assert res["phases"]["backward"] == pytest.approx(1.5 + 2.5 + 0.4)


def test_every_xla_flag_candidate_is_one_xla_reads():
    """The GPU check's XLA flag sets and the CPU tuning table's parse (XLA aborts on an unknown
    flag; the CPU build reads the XLA:GPU flags too) and leave a computation's result alone;
    every CPU variant can be named in ``--variants`` (a comma list)."""
    variants = _load("cpu_tuning").VARIANTS
    assert not [name for name in variants if "," in name]
    flags = " ".join(c["xla_flags"] for c in _load("benchmark").CANDIDATES.values() if "xla_flags" in c)
    flags += " " + " ".join(f for f, _ in variants.values() if f)
    code = "import jax.numpy as jnp; print(float(jnp.arange(5.0) @ jnp.arange(5.0)))"
    env = {**os.environ, "XLA_FLAGS": flags}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert res.returncode == 0 and res.stdout.strip() == "30.0", res.stderr[-1000:]


def test_every_model_candidate_builds_the_model_it_measures():
    """Each of benchmark.CANDIDATES builds its row's model at toy size (a candidate that set the
    lowering once failed only on the GPU: the lowering was passed twice), and can be named in
    ``--candidates`` (a comma list)."""
    import jax
    import jax.numpy as jnp

    bench = _load("benchmark")
    assert not [name for name in bench.CANDIDATES if "," in name]
    batch = {k: jnp.asarray(v) for k, v in bench.make_batch(0, 2, 32).items()}
    for name in bench.CANDIDATES:
        spec = dict(setting="triple", backbone=BACKBONE, width=4, dtype="bfloat16", lowering="auto", candidate=name)
        init = bench.candidate_model(spec).init
        jax.eval_shape(lambda b, init=init: init(jax.random.key(0), b, train=True), batch)


def test_gpu_check_orders_every_candidate_once():
    """The full check's candidate order names each of benchmark.CANDIDATES once, 'default' first
    (the speed-ups are taken against it), but the space-to-depth stem, which is the default on a
    GPU (model.stem='auto'); the profile's XLA flags are a candidate's."""
    gc, candidates = _load("gpu_check"), _load("benchmark").CANDIDATES
    order = gc.CANDIDATE_ORDER
    assert order[0] == "default" and len(order) == len(set(order))
    assert set(order) == set(candidates) - {"space-to-depth stem"}
    # the profile runs with the command-buffers-off candidate's flags (spelled in one place each)
    assert gc.PROFILE_XLA_FLAGS == candidates["command buffers off"]["xla_flags"]


def test_a_timed_out_gpu_check_step_leaves_no_process_behind(tmp_path):
    """A step past its limit is killed with its whole process group: a benchmark's measuring
    child would otherwise hold the GPU (and JAX's 75% of its memory) into the next step. The
    output printed before the limit is kept, and the step ends at its limit."""
    pid_file = tmp_path / "child.pid"
    code = (
        "import subprocess, sys, time; "
        "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
        f"open({str(pid_file)!r}, 'w').write(str(c.pid)); print('measured row', flush=True); time.sleep(60)"
    )
    import time

    t0 = time.monotonic()
    res = _load("gpu_check")._run([sys.executable, "-c", code], limit=5)
    assert time.monotonic() - t0 < 5 + 20  # not held until the child's own end (60 s)
    assert res.returncode is None and "measured row" in res.stdout
    child = int(pid_file.read_text())
    for _ in range(50):  # the kill is asynchronous: give the kernel a moment to reap
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        with open(f"/proc/{child}/stat") as f:
            if f.read().split(")")[-1].split()[0] == "Z":  # a zombie: dead, not yet reaped by init
                break
        time.sleep(0.1)
    else:
        raise AssertionError(f"the step's child {child} outlived the step's limit")


def test_a_second_gpu_check_call_into_one_folder_keeps_the_first_calls_tables(tmp_path):
    """Two calls of one slot (``--only`` each) into one --out: the second replaces only its own
    steps' tables and lists the first's as kept; a call of every step clears them all."""
    gc = _load("gpu_check")
    (tmp_path / "profile.md").write_text("## the first call's profile\n")
    (tmp_path / "step_jax.md").write_text("## a stale step_jax table\n")
    rows = {r["step"]: r for r in gc.main(["--out", str(tmp_path), "--tiny", "--only", "step_jax", "--budget", "0"])}
    assert (tmp_path / "profile.md").read_text() == "## the first call's profile\n"
    assert rows["profile"]["status"] == gc.KEPT and rows["step_jax"]["status"].startswith("skipped:")
    assert not (tmp_path / "step_jax.md").exists() and "train_e2e" not in rows
    assert gc.KEPT in (tmp_path / "summary.md").read_text()
    gc.main(["--out", str(tmp_path), "--tiny", "--budget", "0"])
    assert not (tmp_path / "profile.md").exists()


@pytest.mark.parametrize(
    ("args", "says"),
    [
        ([], "is not empty: the script writes a new cohort and runs there"),
        # saving every 5 over 3 epochs: no save point in the timed cycles, a rate without checkpoints
        (
            ["--checkpoint-every-epochs", "5"],
            "the rate is taken over the last 5 epoch(s), which must hold a save point and its wait for the one "
            "before (saves run in the background), after the first epoch (it compiles); use --epochs 11 or more",
        ),
    ],
)
def test_train_e2e_refuses_what_it_cannot_measure_in_one_line(tmp_path, args, says):
    (tmp_path / "cohort").mkdir()
    script = Path(__file__).resolve().parents[1] / "scripts" / "train_e2e.py"
    res = subprocess.run(
        [sys.executable, str(script), "--workdir", str(tmp_path), "--tiny", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines()[-1].endswith(says), res.stderr


def test_a_crashed_child_is_named_by_its_signal_and_fatal_line():
    """A measuring child that XLA aborts (a fatal check: the '1x1 GEMMs' candidate on an H200)
    is its signal and the check's line, not the stack dump's last frame (which the table showed);
    a raised exception is the exception's line."""
    bench = _load("benchmark")
    fatal = "F1204 14:43:01.1 123 gemm.cc:55] Check failed: a == b"
    dump = f"{fatal}\n*** Check failure stack trace: ***\n    @ 0x6b Py_RunMain"
    assert bench.child_error(-6, dump) == f"crashed (SIGABRT): {fatal}"
    assert bench.child_error(-9, "") == "crashed (SIGKILL)"
    assert bench.child_error(1, "Traceback ...\nValueError: bad size\nnote: JAX's") == "ValueError: bad size"
