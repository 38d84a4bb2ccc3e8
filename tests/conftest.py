"""Shared fixtures: tiny synthetic cohorts (small images, few patients) for fast CPU tests."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# torchvision must be imported before TensorFlow in one process: importing it after TF loads
# triton (through torch._dynamo), whose LLVM clashes with TF's and segfaults (seen with
# tensorflow-cpu 2.21 + torch 2.14.1). The library never needs both; the test session does.
try:
    import torchvision  # noqa: F401
except ImportError:
    pass

import pytest  # noqa: E402

from lnm_jax.data.synthetic import SynthParams, generate_cohort  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def tiny_cohort(tmp_path_factory) -> Path:
    """40 patients, 48x48 images, strong cues; returns the manifest path."""
    out = tmp_path_factory.mktemp("tiny") / "cohort"
    return generate_cohort(out, SynthParams(patients=40, size=48, seed=3, bmode_strength=3.0,
                                            ceus_strength=3.0))


@pytest.fixture(scope="session")
def learnable_cohort(tmp_path_factory) -> Path:
    """120 patients, 64x64 images, strong image cues: enough for a short training run to learn."""
    out = tmp_path_factory.mktemp("learnable") / "cohort"
    return generate_cohort(out, SynthParams(patients=120, size=64, seed=11, bmode_strength=3.0,
                                            ceus_strength=3.0))


@pytest.fixture(scope="session")
def triple_run(tiny_cohort, tmp_path_factory):
    """One triple run (two epochs on the tiny cohort), trained once per test process for every
    test that needs a trained run: resume, prediction, evaluation, the CLI on a run. Tests that
    change a run work on a copy (``copy_run``)."""
    from lnm_jax.run import Run
    from lnm_jax.training.loop import train
    from support import tiny_config

    run = Run.create(tiny_config(tiny_cohort, "triple", epochs=2), tmp_path_factory.mktemp("triple") / "run")
    train(run)
    return run


@pytest.fixture()
def copy_run(tmp_path):
    """``copy_run(run)``: the run's folder copied under this test's tmp_path, opened as a Run."""
    import shutil

    from lnm_jax.run import Run

    def copy(run):
        shutil.copytree(run.workdir, tmp_path / "copy")
        return Run.open(tmp_path / "copy")

    return copy
