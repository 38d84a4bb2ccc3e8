"""The whole job without TensorFlow: train -> evaluate -> predict -> gradcam in a process where
importing tensorflow (or Keras) fails, as on an accelerator image built for JAX. Training is
scripts/train_e2e.py at toy size inside the GPU check (``gpu_check_tiny``: device-resident and
host-fed, a script that stops if TensorFlow was imported); evaluate, predict and gradcam run
here on a copy of its host-fed run."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from support import cpu_env

SCRIPT = """
import importlib.abc, sys
ABSENT = {"tensorflow", "keras", "tf_keras"}
class Hidden(importlib.abc.MetaPathFinder):
    # every finder, blind to TensorFlow: find_spec gives None and import raises
    # ModuleNotFoundError, exactly as where it is not installed
    def __init__(self, finder):
        self.finder = finder
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in ABSENT:
            return None
        return self.finder.find_spec(name, path, target) if hasattr(self.finder, "find_spec") else None
    def find_distributions(self, *args, **kwargs):  # installed packages' metadata, as importlib.metadata reads it
        return self.finder.find_distributions(*args, **kwargs) if hasattr(self.finder, "find_distributions") else ()
sys.meta_path[:] = [Hidden(f) for f in sys.meta_path]
try:
    import tensorflow
    raise SystemExit("the test failed to hide TensorFlow")
except ModuleNotFoundError:
    pass

from lnm_jax.cli import main
root, manifest = sys.argv[1], sys.argv[2]
work = f"{root}/on_device_False"
assert main(["evaluate", "--workdir", work]) == 0
assert main(["predict", "--workdir", work, "--manifest", manifest, "--out", f"{root}/new.csv"]) == 0
assert main(["gradcam", "--workdir", work, "--split", "val"]) == 0
# the TFDS path says what to install
# the TFDS path and the Keras weight import say what to install
config = [f"--config.data.manifest={manifest}", "--config.data.loader=tfds"]
assert main(["train", "--workdir", f"{root}/tfds", *config]) == 1
import os
assert not os.path.exists(f"{root}/tfds")  # refused before the run wrote its config and split
assert main(["convert-weights", "--from", "keras", "--in", manifest, "--out", f"{root}/keras"]) == 1
assert not [m for m in sys.modules if m.split(".")[0] in ABSENT]
print("OK without TensorFlow")
"""


def test_train_evaluate_predict_gradcam_without_tensorflow(gpu_check_tiny, tiny_cohort, tmp_path):
    trained = gpu_check_tiny / "work" / "train_e2e"
    rows = json.loads((trained / "train_e2e.json").read_text())["rows"]
    assert [r["on_device"] for r in rows] == [True, False] and all(r["patients_per_s_whole_epoch"] > 0 for r in rows)
    # saving every epoch in the background: epoch 3's cycle (the one timed) holds epoch 2's save
    # point, which waits for epoch 1's saves (orbax's per-array work: tenths of a second here)
    assert all(r["checkpoint_every_epochs"] == 1 and r["epochs"] == 3 and r["timed_epochs"] == "3-3" for r in rows)
    # the whole epoch (its checkpoints included) is never faster than its steps alone
    assert all(r["patients_per_s_whole_epoch"] <= r["patients_per_s_steps_only"] for r in rows), rows
    assert all(r["checkpoints_and_log_s_per_epoch"] > 0 for r in rows), rows
    assert json.loads((trained / "train_e2e.json").read_text())["info"]["tensorflow_imported"] is False
    shutil.copytree(trained / "on_device_False", tmp_path / "on_device_False")
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path), str(tiny_cohort)],
        capture_output=True,
        text=True,
        env=cpu_env(),
        timeout=600,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "OK without TensorFlow" in out.stdout
    assert "data.loader='tfds' needs TensorFlow" in out.stderr
    assert "reading a Keras weight file" in out.stderr and out.stderr.count("pip install -e '.[tf]'") == 2
    # what the extra adds, installable outside a checkout too (helper-117), read from the package's metadata
    from lnm_jax.provenance import extra_install

    assert extra_install("tf").startswith("pip install 'tensorflow") and out.stderr.count(extra_install("tf")) == 2
    work = tmp_path / "on_device_False"
    assert (work / "eval_best" / "metrics.json").is_file() and (tmp_path / "new.csv").is_file()
    assert any(Path(work, "gradcam_val").glob("*.png"))
