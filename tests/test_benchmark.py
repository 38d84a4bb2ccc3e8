"""The train-step benchmark runs (tiny sizes) and stays TensorFlow-free."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "benchmark.py"


def test_benchmark_smoke_and_no_tensorflow():
    code = (f"import sys, runpy; sys.argv = ['b', '--backbone', 'resnet18', '--width', '4', "
            f"'--image-size', '16', '--batch-sizes', '2', '--steps', '1', '--warmup', '1', "
            f"'--dtypes', 'float32,bfloat16']; "
            f"runpy.run_path({str(SCRIPT)!r}, run_name='__main__'); "
            f"assert 'tensorflow' not in sys.modules, 'benchmark imported TensorFlow'")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [line for line in out.stdout.splitlines() if line.startswith("| jax |")]
    assert len(rows) == 2 and all(float(r.split("|")[5]) > 0 for r in rows), out.stdout


def test_torch_comparison_smoke():
    """The PyTorch side runs (tiny: ResNet-50 triple at 32x32, batch 2, one step)."""
    spec = importlib.util.spec_from_file_location("bench", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    r = mod.bench_torch(2, 32, steps=1, warmup=1, dtype="float32", compile_=False)
    assert r["train_s"] > 0 and r["infer_s"] > 0


def test_script_is_importable():
    spec = importlib.util.spec_from_file_location("bench", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert callable(mod.bench)


def test_cpu_tuning_table_smoke():
    """One variant of the XLA:CPU settings table, tiny sizes (its rows parse as numbers)."""
    script = SCRIPT.with_name("cpu_tuning.py")
    out = subprocess.run([sys.executable, str(script), "--image-size", "32", "--batch", "2", "--steps", "1",
                          "--backbone", "resnet18", "--width", "4", "--variants", "single-threaded Eigen"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [r for r in out.stdout.splitlines() if r.startswith("| single-threaded Eigen |")]
    assert len(rows) == 1 and float(rows[0].split("|")[2]) > 0, out.stdout
