"""Shared fixtures: tiny synthetic cohorts (small images, few patients) for fast CPU tests."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from lnm_jax.data.pixels.clips import FFMPEG_NO_FORK_HOOK

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# the tests' own video writers (imageio's ffmpeg) start ffmpeg without forking this process, as
# lnm_jax's readers do (lnm_jax.data.pixels.clips.FFMPEG_NO_FORK_HOOK): where a worker's first
# video was written after JAX started, JAX's os.fork() warning came from the test, not the package
os.environ.setdefault(FFMPEG_NO_FORK_HOOK, "1")


def pytest_configure(config):
    """One persistent XLA compilation cache for the whole session: the controller makes it and
    its environment reaches every xdist worker and every subprocess test, so a program that
    several tests compile (the tiny configs' train and eval steps, a protocol's reruns) is
    compiled once: every program, however short its compile (kept from 0.5 s up, the 1,591 of
    1,762 compiles under it in one run of the suite were not kept, and those compiled again by
    another worker or subprocess took 18 s). It changes no result: the cache holds the very
    executable XLA would build (keyed by the program, the compile options and the jaxlib
    version); the folder name also carries the XLA flags, so a run under another
    --xla_cpu_max_isa never shares it."""
    if hasattr(config, "workerinput") or "JAX_COMPILATION_CACHE_DIR" in os.environ:
        return
    key = hashlib.sha256(os.environ.get("XLA_FLAGS", "").encode()).hexdigest()[:12]
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix=f"lnm_jax_xla_{key}_")
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    config._lnm_jax_xla_cache = os.environ["JAX_COMPILATION_CACHE_DIR"]


def pytest_unconfigure(config):
    folder = getattr(config, "_lnm_jax_xla_cache", None)
    if folder:
        shutil.rmtree(folder, ignore_errors=True)


# torchvision must be imported before TensorFlow in one process: importing it after TF loads
# triton (through torch._dynamo), whose LLVM clashes with TF's and segfaults (seen with
# tensorflow-cpu 2.21 + torch 2.14.1). The library never needs both; the test session does, but
# only where TensorFlow is installed: elsewhere the import (~5 s of CPU in every xdist worker)
# waits for the tests that use torchvision.
if importlib.util.find_spec("tensorflow") is not None:
    try:
        import torchvision  # noqa: F401
    except ImportError:
        pass

import pytest  # noqa: E402

from lnm_jax.data.synth.synthetic import SynthParams, generate_cohort  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _built_once(tmp_path_factory, worker_id: str, name: str, build) -> Path:
    """``build(folder)`` run once per test session and shared by every xdist worker: the first
    worker to get the lock builds, the others wait and reuse (pytest-xdist's recipe for session
    fixtures). Returns the folder."""
    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()
    root = base if worker_id == "master" else base.parent  # the session's folder, above the workers'
    folder = root / name
    with FileLock(str(root / f"{name}.lock")):
        if not (folder / ".built").is_file():
            shutil.rmtree(folder, ignore_errors=True)
            build(folder)
            (folder / ".built").touch()
    return folder


@pytest.fixture(scope="session")
def tiny_cohort(tmp_path_factory, worker_id) -> Path:
    """40 patients, 48x48 images, strong cues; returns the manifest path."""
    params = SynthParams(patients=40, size=48, seed=3, bmode_strength=3.0, ceus_strength=3.0)
    return _built_once(tmp_path_factory, worker_id, "tiny", lambda f: generate_cohort(f / "cohort", params)) / (
        "cohort/manifest.csv"
    )


@pytest.fixture(scope="session")
def learnable_cohort(tmp_path_factory, worker_id) -> Path:
    """120 patients, 64x64 images, strong image cues: enough for a short training run to learn."""
    params = SynthParams(patients=120, size=64, seed=11, bmode_strength=3.0, ceus_strength=3.0)
    return _built_once(tmp_path_factory, worker_id, "learnable", lambda f: generate_cohort(f / "cohort", params)) / (
        "cohort/manifest.csv"
    )


@pytest.fixture(scope="session")
def gpu_check_tiny(tmp_path_factory, worker_id) -> Path:
    """``scripts/gpu_check.py --tiny`` run once per session (every step at toy size on the CPU);
    returns its output folder. Its end-to-end training runs (``work/train_e2e``) also serve
    the TensorFlow-free job test."""
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.py"

    def build(folder):
        res = subprocess.run(
            [sys.executable, str(script), "--out", str(folder / "out"), "--tiny"],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]

    return _built_once(tmp_path_factory, worker_id, "gpu_check", build) / "out"


@pytest.fixture(scope="session")
def triple_run(tiny_cohort, tmp_path_factory, worker_id):
    """One triple run (two epochs on the tiny cohort), trained once per session for every test
    that needs a trained run: resume, prediction, evaluation, the CLI on a run. Tests that
    change a run work on a copy (``copy_run``)."""
    from support import tiny_config

    from lnm_jax.run import Run
    from lnm_jax.training.loop import train

    def build(folder):
        train(Run.create(tiny_config(tiny_cohort, "triple", epochs=2), folder / "run"))

    return Run.open(_built_once(tmp_path_factory, worker_id, "triple", build) / "run")


@pytest.fixture()
def copy_run(tmp_path):
    """``copy_run(run[, name])``: the run's folder copied under this test's tmp_path (as
    ``name``, default ``copy``), opened as a Run."""
    from lnm_jax.run import Run

    def copy(run, name="copy"):
        shutil.copytree(run.workdir, tmp_path / name)
        return Run.open(tmp_path / name)

    return copy
