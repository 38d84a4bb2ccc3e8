"""tf.data pipeline: shapes, dtypes, normalisation, augmentation only in training, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from lnm_jax.config import base_config
from lnm_jax.data import pipeline
from lnm_jax.data.manifest import read_manifest
from lnm_jax.data.splits import holdout_split
from lnm_jax.data.synthetic import SynthParams, generate_cohort
from lnm_jax.data.tfds_builder import load_cohort

AUG = base_config().data.augment.to_dict()  # the paper's augmentation, as configured
SIZE = 32


@pytest.fixture(scope="module")
def data(tiny_cohort, tmp_path_factory):
    cohort = read_manifest(tiny_cohort)
    split = holdout_split(cohort.ids, cohort.labels, seed=0)
    ds = load_cohort(cohort, tmp_path_factory.mktemp("tfds"))
    return cohort, split, ds


def _batches(decoded, **kw):
    return list(pipeline.as_numpy(pipeline.batches(decoded, **kw), kw["batch_size"]))


def test_tfds_builder_features(data):
    cohort, _, ds = data
    examples = list(ds.as_numpy_iterator())
    assert len(examples) == len(cohort)
    ex = examples[0]
    assert set(ex) == {"patient_id", "bmode", "ceus", "us_lnm", "lnm", "has_bmode", "has_ceus", "has_us_lnm"}
    by_id = cohort.by_id()
    p = by_id[ex["patient_id"].decode()]
    assert ex["bmode"] == p.bmode.read_bytes()  # original encoded bytes, not re-encoded
    assert ex["lnm"] == p.lnm and ex["us_lnm"] == p.us_lnm and ex["has_ceus"]


def test_batch_shapes_dtypes_and_eval_padding(data):
    _, split, ds = data
    dec = pipeline.decoded_dataset(ds, split.test, SIZE)
    batches = _batches(dec, batch_size=5, norm=pipeline.PAPER_NORM, train=False)
    n = len(split.test)
    assert len(batches) == pipeline.num_batches(n, 5, train=False)
    b = batches[0]
    assert b["bmode"].shape == (5, SIZE, SIZE, 3) and b["bmode"].dtype == np.float32
    assert b["ceus"].shape == (5, SIZE, SIZE, 3) and b["ceus"].dtype == np.float32
    assert b["us_lnm"].dtype == np.float32 and b["lnm"].dtype == np.int32
    assert b["has_bmode"].dtype == bool and b["valid"].all()
    assert sum(int(x["valid"].sum()) for x in batches) == n
    ids = [i.decode() for x in batches for i, v in zip(x["patient_id"], x["valid"]) if v]
    assert sorted(ids) == sorted(split.test)


def test_normalised_training_split_has_zero_mean_unit_std(data):
    _, split, ds = data
    dec = pipeline.decoded_dataset(ds, split.train, SIZE)
    stats = pipeline.normalisation_stats(dec)
    assert stats["ceus"]["mean"][0] > stats["ceus"]["mean"][2]  # the warm CEUS tint
    batches = _batches(dec, batch_size=4, norm=stats, train=False)
    for key in ("bmode", "ceus"):
        x = np.concatenate([b[key][b["valid"]] for b in batches]).astype(np.float64)
        np.testing.assert_allclose(x.mean(axis=(0, 1, 2)), 0.0, atol=1e-3)
        np.testing.assert_allclose(x.std(axis=(0, 1, 2)), 1.0, atol=1e-3)


def test_grayscale_becomes_rgb(data):
    _, split, ds = data
    b = _batches(
        pipeline.decoded_dataset(ds, split.val, SIZE),
        batch_size=4,
        norm={k: {"mean": (0, 0, 0), "std": (1, 1, 1)} for k in ("bmode", "ceus")},
        train=False,
    )[0]
    np.testing.assert_array_equal(b["bmode"][..., 0], b["bmode"][..., 1])
    assert not np.array_equal(b["ceus"][..., 0], b["ceus"][..., 2])
    assert 0.0 <= b["bmode"].min() and b["bmode"].max() <= 1.0


def test_augmentation_only_in_training_and_seeded(data):
    _, split, ds = data
    dec = pipeline.decoded_dataset(ds, split.train, SIZE)
    norm = pipeline.PAPER_NORM
    ev1 = _batches(dec, batch_size=4, norm=norm, train=False)
    ev2 = _batches(dec, batch_size=4, norm=norm, train=False, augment=AUG, epoch=3)
    for a, b in zip(ev1, ev2):  # evaluation ignores augmentation and epoch
        np.testing.assert_array_equal(a["bmode"], b["bmode"])
    plain = {i: x for b in ev1 for i, x in zip(b["patient_id"], b["bmode"])}
    t1 = _batches(dec, batch_size=4, norm=norm, train=True, augment=AUG, seed=1, epoch=2)
    t2 = _batches(dec, batch_size=4, norm=norm, train=True, augment=AUG, seed=1, epoch=2)
    t3 = _batches(dec, batch_size=4, norm=norm, train=True, augment=AUG, seed=1, epoch=3)
    for a, b in zip(t1, t2):  # same seed and epoch: identical batches
        np.testing.assert_array_equal(a["patient_id"], b["patient_id"])
        np.testing.assert_array_equal(a["bmode"], b["bmode"])
    assert not all(np.array_equal(a["patient_id"], b["patient_id"]) for a, b in zip(t1, t3))
    changed = [not np.allclose(x, plain[i]) for b in t1 for i, x in zip(b["patient_id"], b["bmode"])]
    assert all(changed)
    assert len(t1) == len(split.train) // 4  # training drops the last partial batch
    no_aug = _batches(dec, batch_size=4, norm=norm, train=True, augment={**AUG, "enabled": False}, seed=1)
    assert all(np.allclose(x, plain[i]) for b in no_aug for i, x in zip(b["patient_id"], b["bmode"]))


def test_missing_inputs_are_zero_and_masked(tmp_path):
    manifest = generate_cohort(
        tmp_path / "m", SynthParams(patients=30, size=32, p_missing_ceus=0.5, p_missing_flag=0.5, seed=5)
    )
    cohort = read_manifest(manifest)
    dec = pipeline.decoded_dataset(load_cohort(cohort, tmp_path / "tfds"), cohort.ids, 16)
    b = _batches(dec, batch_size=30, norm=pipeline.PAPER_NORM, train=False)[0]
    by_id = cohort.by_id()
    for i, pid in enumerate(b["patient_id"]):
        p = by_id[pid.decode()]
        assert b["has_ceus"][i] == p.has("ceus") and b["has_us_lnm"][i] == p.has("us_lnm")
        if not p.has("ceus"):
            assert not b["ceus"][i].any()
        if not p.has("us_lnm"):
            assert b["us_lnm"][i] == 0.0
    assert (~b["has_ceus"]).sum() > 0 and (~b["has_us_lnm"]).sum() > 0
