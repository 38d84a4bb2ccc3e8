"""Measures the spread of the test suite's quality tests over seeds, the spread their margins
are set from (DEVELOPERS.md: a test of a trained model's quality takes its margin from the
spread measured over several seeds).

Each quality test reads its seed from LNM_TEST_SEED and records what it measured through
``support.record``; this script runs each one for seeds 0..N-1 (optionally with XLA:CPU held
to another instruction set) and prints mean, SD, min and max of every recorded value.

    python scripts/measure_test_margins.py [--seeds 5] [--first-seed 0] [--isa AVX2] [-k learns]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
QUALITY_TESTS = {
    "learns": "tests/test_training.py::test_short_run_learns_the_planted_signal",
    "missing_inputs": (
        "tests/test_missing_inputs.py::test_one_model_for_every_pattern_matches_the_dedicated_model_without_ceus"
    ),
    "clips": "tests/test_clips.py::test_clip_model_beats_the_single_frame_when_the_cue_is_temporal",
    "gradcam": "tests/test_gradcam.py::test_trained_model_cam_mass_falls_inside_the_cue_region",
    "fusion": (
        "tests/test_fusion.py::"
        "test_late_fusion_reaches_the_bayes_auc_of_a_strong_flag_and_an_image_where_the_paper_head_falls_short"
    ),
    "pretrain": "tests/test_pretrain.py::test_pretraining_lowers_its_loss_and_its_probe_beats_random_init",
}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--first-seed", type=int, default=0, help="seeds first..first+N-1 (to add seeds to a measurement)")
    p.add_argument("--isa", default="", help="XLA:CPU's highest instruction set, e.g. AVX2 (--xla_cpu_max_isa)")
    p.add_argument("-k", dest="only", default="", help="comma list of " + ",".join(QUALITY_TESTS))
    p.add_argument("--out", type=Path, help="JSON lines of every measurement (default: a temp file)")
    a = p.parse_args()
    out = a.out or Path(tempfile.mkstemp(suffix=".jsonl")[1])
    env = {**os.environ, "LNM_TEST_RECORD": str(out)}
    if a.isa:
        env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} --xla_cpu_max_isa={a.isa}".strip()
    names = [n for n in QUALITY_TESTS if not a.only or n in a.only.split(",")]
    for seed in range(a.first_seed, a.first_seed + a.seeds):
        for name in names:
            cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "0", QUALITY_TESTS[name]]
            res = subprocess.run(cmd, cwd=ROOT, env={**env, "LNM_TEST_SEED": str(seed)}, capture_output=True, text=True)
            print(f"seed {seed} {name}: {'passed' if res.returncode == 0 else 'FAILED'}", flush=True)
    values = defaultdict(list)
    for line in out.read_text().splitlines():
        row = json.loads(line)
        for k, v in row.items():
            if k not in ("test", "seed", "xla_flags") and isinstance(v, (int, float)):
                values[(row["test"], k)].append(v)
    print("\n| test | value | n | mean | SD | min | max |\n|---|---|---:|---:|---:|---:|---:|")
    for (test, key), v in sorted(values.items()):
        v = np.asarray(v, float)
        sd = v.std(ddof=1) if len(v) > 1 else float("nan")
        print(f"| {test} | {key} | {len(v)} | {v.mean():.4f} | {sd:.4f} | {v.min():.4f} | {v.max():.4f} |")
    print(f"\nmeasurements: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
