"""Does a hospital-format cohort train like the PNG cohort it shows? (issue 16's end-to-end
check; a measurement, not a test: about 10 minutes on 2 CPU cores.)

Synthesises the demo's cohort twice from the same seed, as PNG files and as DICOM scanner
screens (JPEG baseline YBR_FULL_422, banner with PHI burned in, CEUS dual display, PHI in the
headers), de-identifies the DICOM copy (pseudonyms, scan-region crop, basic-profile headers),
and trains the demo's model on each: PNG, DICOM as received (same patient ids, so the same
split as PNG: the difference is decoding and JPEG alone), DICOM de-identified (new ids, so
another split). Prints each run's test AUC and wall time.

    python scripts/dicom_cohort_check.py --out /tmp/dicom_check [--seeds 0,1]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from lnm_jax import run_files as F


def sh(*args: str) -> str:
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "lnm_jax.cli", *args], check=True, capture_output=True, text=True)
    print(f"  [{time.perf_counter() - t0:.0f}s] lnm-jax {' '.join(args[:1])}", flush=True)
    return out.stdout


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seeds", default="0", help="training seeds (comma-separated)")
    p.add_argument("--config", default="demo")
    a = p.parse_args()
    out = a.out
    synth = ["--patients", "924", "--size", "128", "--seed", "0"]
    sh("synth", "--out", str(out / "png"), *synth)
    sh("synth", "--out", str(out / "dicom"), *synth, "--format", "dicom")
    sh(
        "deidentify",
        "--manifest",
        str(out / "dicom/manifest.csv"),
        "--out",
        str(out / "deid"),
        "--mapping",
        str(out / "deid_mapping.csv"),
    )
    results = {}
    for seed in a.seeds.split(","):
        for name in ("png", "dicom", "deid"):
            work = out / f"run_{name}_s{seed}"
            t0 = time.perf_counter()
            manifest = out / name / F.MANIFEST
            sh(
                "train",
                "--config",
                a.config,
                "--workdir",
                str(work),
                f"--config.data.manifest={manifest}",
                f"--config.seed={seed}",
            )
            sh("evaluate", "--workdir", str(work))
            metrics = json.loads((F.RunFiles(work).evaluation("best") / F.METRICS).read_text())
            results[f"{name} seed {seed}"] = {
                "test_auc": round(metrics["splits"]["test"]["auc"], 4),
                "wall_s": round(time.perf_counter() - t0),
            }
            print(name, seed, results[f"{name} seed {seed}"], flush=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
