"""Smoke test on real public ultrasound images (DDTI thyroid, BUS-BRA breast) from
../shared/data; skipped with the reason where that folder is absent."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from conftest import SHARED_DATA

from lnm_jax.data.cohorts.manifest import read_manifest
from lnm_jax.data.loaders.loader import BatchSettings, GrainSource
from lnm_jax.names import PAPER_NORM

DDTI = SHARED_DATA / "ddti" / "images"
BUSBRA = SHARED_DATA / "busbra-dev"

needs_data = pytest.mark.skipif(
    not (DDTI.is_dir() and (BUSBRA / "bus_data.csv").is_file()),
    reason=f"real ultrasound data not found at {SHARED_DATA} (DDTI and BUS-BRA; see docs/testing.md)",
)


@needs_data
def test_reads_real_ddti_and_busbra_images(tmp_path):
    """A mixed manifest of real images (RGB JPEG thyroid B-mode; grayscale PNG breast views of
    different sizes) validates and goes through the pipeline."""
    ddti = sorted(DDTI.glob("*.jpg"))[:6]
    with (BUSBRA / "bus_data.csv").open() as f:
        ids = [r["ID"] for r in csv.DictReader(f)]
    pairs = [i[:-2] for i in ids if i.endswith("-l") and f"{i[:-2]}-r" in ids][:3]
    rows = [f"D{k},{p},{ddti[k + 3]},{k % 2},{k % 2}" for k, p in enumerate(ddti[:3])]
    rows += [f"B{k},{BUSBRA}/Images/{p}-l.png,{BUSBRA}/Images/{p}-r.png,,{(k + 1) % 2}" for k, p in enumerate(pairs)]
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("patient_id,bmode,ceus,us_lnm,lnm\n" + "\n".join(rows) + "\n")
    cohort = read_manifest(manifest)
    assert len(cohort) == 6
    s = BatchSettings(
        image_size=64, clip_frames=1, cache=True, norm=PAPER_NORM, augment={}, batch_size=8, eval_batch_size=8, seed=0
    )
    source = GrainSource(cohort, s)
    b = next(source.eval_batches(cohort.ids))
    assert b["bmode"].shape == (8, 64, 64, 3) and b["valid"].sum() == 6
    assert np.isfinite(b["bmode"]).all() and np.abs(b["bmode"][b["valid"]]).max() > 0.5
    stats = source.normalisation_stats(cohort.ids)
    assert 0.05 < stats["bmode"]["mean"][0] < 0.6
