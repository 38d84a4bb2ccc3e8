"""The whole job without TensorFlow: train -> evaluate -> predict -> gradcam in a process where
importing tensorflow (or Keras) fails, as on an accelerator image built for JAX."""

from __future__ import annotations

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
sys.meta_path[:] = [Hidden(f) for f in sys.meta_path]
try:
    import tensorflow
    raise SystemExit("the test failed to hide TensorFlow")
except ModuleNotFoundError:
    pass

from lnm_jax.cli import main
work, manifest = sys.argv[1], sys.argv[2]
config = [
    f"--config.data.manifest={manifest}", "--config.data.image_size=32", "--config.model.backbone=resnet18",
    "--config.model.width=4", "--config.train.epochs=1", "--config.train.batch_size=8",
    "--config.train.eval_batch_size=16", "--config.eval.bootstrap=20",
]
assert main(["train", "--workdir", work, *config]) == 0
assert main(["evaluate", "--workdir", work]) == 0
assert main(["predict", "--workdir", work, "--manifest", manifest, "--out", f"{work}/new.csv"]) == 0
assert main(["gradcam", "--workdir", work, "--split", "val"]) == 0
# the TFDS path says what to install
assert main(["train", "--workdir", f"{work}_tfds", *config, "--config.data.loader=tfds"]) == 1
assert not [m for m in sys.modules if m.split(".")[0] in ABSENT]
print("OK without TensorFlow")
"""


def test_train_evaluate_predict_gradcam_without_tensorflow(tiny_cohort, tmp_path):
    work = tmp_path / "run"
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(work), str(tiny_cohort)],
        capture_output=True,
        text=True,
        env=cpu_env(),
        timeout=600,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "OK without TensorFlow" in out.stdout
    assert "data.loader='tfds' needs TensorFlow" in out.stderr and "pip install -e '.[tf]'" in out.stderr
    assert (work / "eval_best" / "metrics.json").is_file() and (work / "new.csv").is_file()
    assert any(Path(work, "gradcam_val").glob("*.png"))
