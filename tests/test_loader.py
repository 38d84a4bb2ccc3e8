"""The input path: the grain loader's batches (shapes, dtypes, normalisation, augmentation only
in training, determinism, missing inputs, clips), its numpy decode and augmentation against
TensorFlow's and JAX's, and the TFDS path giving the same batches."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from lnm_jax.config import base_config
from lnm_jax.data.cohorts.manifest import read_manifest
from lnm_jax.data.cohorts.splits import holdout_split
from lnm_jax.data.loaders import augment as augment_lib
from lnm_jax.data.loaders.loader import BatchSettings, GrainSource
from lnm_jax.data.pixels.decode import decode_image
from lnm_jax.data.synth.synthetic import SynthParams, generate_cohort
from lnm_jax.names import PAPER_NORM

AUG = base_config().data.augment.to_dict()  # the paper's augmentation, as configured
SIZE = 32
IDENTITY = {k: {"mean": (0, 0, 0), "std": (1, 1, 1)} for k in ("bmode", "ceus")}
# Resampling positions are (i + 0.5) / scale - 0.5, computed in float32 by TensorFlow (float64
# here): an error of up to ~size * 2^-24 pixels = 1.4e-5 at 224 px, times a slope of at most 1
# (values in [0, 1] change by at most 1 per pixel); with the float32 sums' own rounding, 5e-5.
RESAMPLE_ATOL = 5e-5


def settings(**kw) -> BatchSettings:
    base = dict(
        image_size=SIZE,
        clip_frames=1,
        cache=True,
        norm=PAPER_NORM,
        augment={**AUG, "enabled": False},
        batch_size=4,
        eval_batch_size=5,
        seed=0,
    )
    return BatchSettings(**{**base, **kw})


@pytest.fixture(scope="module")
def data(tiny_cohort):
    cohort = read_manifest(tiny_cohort)
    return cohort, holdout_split(cohort.ids, cohort.labels, seed=0)


def _train(source, ids, epoch=0):
    return [b for _, b in source.train_batches(ids, epoch)]


def test_batch_shapes_dtypes_and_eval_padding(data):
    cohort, split = data
    batches = list(GrainSource(cohort, settings()).eval_batches(split.test))
    n = len(split.test)
    assert len(batches) == -(-n // 5)
    b = batches[0]
    assert b["bmode"].shape == (5, SIZE, SIZE, 3) and b["bmode"].dtype == np.float32
    assert b["ceus"].shape == (5, SIZE, SIZE, 3) and b["ceus"].dtype == np.float32
    assert b["us_lnm"].dtype == np.float32 and b["lnm"].dtype == np.int32
    assert b["has_bmode"].dtype == bool and b["valid"].all()
    assert sum(int(x["valid"].sum()) for x in batches) == n
    last = batches[-1]
    assert not last["bmode"][~last["valid"]].any()  # padding rows are zeros
    ids = [i.decode() for x in batches for i, v in zip(x["patient_id"], x["valid"]) if v]
    assert ids == list(split.test)  # evaluation keeps the split's order


def test_normalised_training_split_has_zero_mean_unit_std(data):
    cohort, split = data
    stats = GrainSource(cohort, settings()).normalisation_stats(split.train)
    assert stats["ceus"]["mean"][0] > stats["ceus"]["mean"][2]  # the warm CEUS tint
    batches = list(GrainSource(cohort, settings(norm=stats)).eval_batches(split.train))
    for key in ("bmode", "ceus"):
        x = np.concatenate([b[key][b["valid"]] for b in batches]).astype(np.float64)
        np.testing.assert_allclose(x.mean(axis=(0, 1, 2)), 0.0, atol=1e-3)
        np.testing.assert_allclose(x.std(axis=(0, 1, 2)), 1.0, atol=1e-3)


def test_grayscale_becomes_rgb(data):
    cohort, split = data
    b = next(GrainSource(cohort, settings(norm=IDENTITY)).eval_batches(split.val))
    np.testing.assert_array_equal(b["bmode"][..., 0], b["bmode"][..., 1])
    assert not np.array_equal(b["ceus"][..., 0], b["ceus"][..., 2])
    assert 0.0 <= b["bmode"].min() and b["bmode"].max() <= 1.0


def test_augmentation_only_in_training_and_seeded(data):
    cohort, split = data
    plain_source = GrainSource(cohort, settings())
    plain = {i: x for b in plain_source.eval_batches(split.train) for i, x in zip(b["patient_id"], b["bmode"])}
    aug = GrainSource(cohort, settings(augment=AUG, seed=1))
    t1, t2, t3 = _train(aug, split.train, 2), _train(aug, split.train, 2), _train(aug, split.train, 3)
    for a, b in zip(t1, t2):  # same seed and epoch: identical batches
        np.testing.assert_array_equal(a["patient_id"], b["patient_id"])
        np.testing.assert_array_equal(a["bmode"], b["bmode"])
    assert not all(np.array_equal(a["patient_id"], b["patient_id"]) for a, b in zip(t1, t3))
    changed = [not np.allclose(x, plain[i]) for b in t1 for i, x in zip(b["patient_id"], b["bmode"])]
    assert all(changed)
    assert len(t1) == len(split.train) // 4 and all(b["valid"].all() for b in t1)  # last partial batch dropped
    no_aug = _train(GrainSource(cohort, settings(seed=1)), split.train, 2)
    assert all(np.allclose(x, plain[i]) for b in no_aug for i, x in zip(b["patient_id"], b["bmode"]))
    # the batches do not depend on the number of threads preparing them
    one_thread = _train(GrainSource(cohort, settings(augment=AUG, seed=1, num_threads=1)), split.train, 2)
    for a, b in zip(t1, one_thread):
        np.testing.assert_array_equal(a["bmode"], b["bmode"])


def test_each_process_reads_its_rows_of_the_global_batch(data):
    """Two processes' training batches are the halves of the one-process global batch."""
    cohort, split = data
    s = settings(augment=AUG, seed=3)
    whole = _train(GrainSource(cohort, s), split.train, 1)
    halves = [_train(GrainSource(cohort, s, process_index=p, process_count=2), split.train, 1) for p in (0, 1)]
    for k, b in enumerate(whole):
        for key in ("bmode", "ceus", "lnm", "patient_id"):
            np.testing.assert_array_equal(np.concatenate([halves[0][k][key], halves[1][k][key]]), b[key])


def test_only_the_models_image_inputs_are_decoded(data, monkeypatch):
    """helper-89: a B-mode or flag-only model's batches decoded, resized and augmented every
    CEUS image of every epoch. Its loader reads only the inputs the model takes (a config's
    modalities): the others are zeros with ``has_<input>`` False, never read."""
    from lnm_jax.data import records

    cohort, split = data
    read = []
    real = records.decode_input
    monkeypatch.setattr(records, "decode_input", lambda path, name, **kw: read.append(name) or real(path, name, **kw))
    for modalities, want in (("bmode", {"bmode"}), ("us_lnm", set()), ("triple", {"bmode", "ceus"})):
        c = base_config(modalities)
        c.data.image_size, c.data.cache = SIZE, False
        read.clear()
        batches = list(GrainSource(cohort, BatchSettings.from_config(c)).eval_batches(split.test))
        assert set(read) == want, (modalities, set(read))
        for k in ("bmode", "ceus"):
            if k not in want:
                assert not any(b[f"has_{k}"].any() or b[k].any() for b in batches)


def test_missing_inputs_are_zero_and_masked(tmp_path):
    manifest = generate_cohort(
        tmp_path / "m", SynthParams(patients=30, size=32, p_missing_ceus=0.5, p_missing_flag=0.5, seed=5)
    )
    cohort = read_manifest(manifest)
    b = next(GrainSource(cohort, settings(image_size=16, eval_batch_size=30)).eval_batches(cohort.ids))
    by_id = cohort.by_id()
    for i, pid in enumerate(b["patient_id"]):
        p = by_id[pid.decode()]
        assert b["has_ceus"][i] == p.has("ceus") and b["has_us_lnm"][i] == p.has("us_lnm")
        if not p.has("ceus"):
            assert not b["ceus"][i].any()
        if not p.has("us_lnm"):
            assert b["us_lnm"][i] == 0.0
    assert (~b["has_ceus"]).sum() > 0 and (~b["has_us_lnm"]).sum() > 0


def test_numpy_augmentation_is_the_jax_one(data):
    """Same parameters, same output: the host loader's numpy transform and the device-resident
    cohort's JAX transform (float32 coordinates there, float64 here: ~size * 2^-24 pixels)."""
    import jax.numpy as jnp

    from lnm_jax.data.loaders.on_device import apply_augmentation

    strong = {**AUG, "translate": 0.3, "scale_min": 0.6, "scale_max": 1.4}  # reaches the reflected borders
    for shape in ((SIZE, SIZE, 3), (SIZE - 12, SIZE + 8, 3)):  # a non-square image too
        img = np.random.default_rng(0).random(shape).astype(np.float32)
        for seed in range(6):
            p = augment_lib.draw(np.random.default_rng(seed), shape[:2], strong)
            for clip in (False, True):
                expected = apply_augmentation(jnp.asarray(img), {k: jnp.asarray(v) for k, v in p.items()}, clip)
                np.testing.assert_allclose(augment_lib.apply(img, p, clip), np.asarray(expected), atol=RESAMPLE_ATOL)
    img = np.random.default_rng(0).random((SIZE, SIZE, 3)).astype(np.float32)
    # one draw per clip: a clip of identical frames stays identical, and is changed
    out, _ = augment_lib.augment(np.stack([img] * 4), np.random.default_rng(1), AUG)
    for k in range(1, 4):
        np.testing.assert_array_equal(out[k], out[0])
    assert np.abs(out[0] - img).mean() > 0.01


def test_a_non_square_image_is_scaled_and_shifted_about_its_own_centre():
    """helper-92: rows were scaled about the width's centre and shifted by a fraction of the
    width (a 40x80 impulse at row 10 scaled 1.2 landed on row 4, not 8.1). Each axis has its own
    centre ((h - 1) / 2, (w - 1) / 2) and the shift is a fraction of that axis's length: the
    numpy, JAX (and, test_on_device.py, TensorFlow) transforms alike."""
    import jax.numpy as jnp

    from lnm_jax.data.loaders.on_device import apply_augmentation

    h, w = 40, 80
    img = np.zeros((h, w, 3), np.float32)
    img[10, 60] = 1.0
    plain = {"flip": False, "contrast": 1.0, "brightness": 0.0}
    # scaled 1.2 about (19.5, 39.5): row 19.5 + 1.2 (10 - 19.5) = 8.1, column 39.5 + 1.2 (60 - 39.5) = 64.1
    for p, (row, col) in (
        ({**plain, "translate": np.zeros(2), "scale": 1.2}, (8.1, 64.1)),
        ({**plain, "translate": np.array([4.0, -3.0]), "scale": 1.0}, (7.0, 64.0)),
    ):
        for out in (augment_lib.warp(img, p), np.asarray(apply_augmentation(jnp.asarray(img), p))):
            plane = out[..., 0]
            mass = plane.sum()
            centroid = (plane * np.arange(h)[:, None]).sum() / mass, (plane * np.arange(w)).sum() / mass
            np.testing.assert_allclose(centroid, (row, col), atol=0.05)
    # the drawn shift is a fraction of each axis: x of the width, y of the height
    p = augment_lib.draw(np.random.default_rng(0), (h, w), {**AUG, "translate": 0.5})
    q = augment_lib.draw(np.random.default_rng(0), 1, {**AUG, "translate": 0.5})
    np.testing.assert_allclose(p["translate"], q["translate"] * np.array([w, h]))


def test_augmentation_keeps_what_lies_near_black():
    """helper-92: brightness added, then a clip to [0, 1], blacked out a CEUS clip's frames
    before the contrast arrives (mean 0.012) in a third of draws. Unclipped (the default), every
    draw is invertible: the frame's structure survives any brightness and contrast drawn; with
    ``data.augment.clip`` (runs stored before the field) it clips as before."""
    r = np.random.default_rng(0)
    dark = (0.03 * r.random((SIZE, SIZE, 3))).astype(np.float32)
    p = {"translate": np.zeros(2), "scale": 1.0, "flip": False, "contrast": 0.9, "brightness": -0.1}
    out = augment_lib.apply(dark, p)
    mean = dark.mean(axis=(0, 1))
    np.testing.assert_allclose(out, (dark - mean) * 0.9 + mean - 0.1, atol=1e-6)
    assert (augment_lib.apply(dark, p, clip=True) == 0).all()  # the clip's: nothing left
    assert AUG["clip"] is False
    # a whole clip through the loader's entry point, brightness drawn as configured
    frames = np.stack([dark] * 3)
    for seed in range(20):
        got, _ = augment_lib.augment(frames, np.random.default_rng(seed), AUG)
        assert np.std(got[0]) > 0.5 * np.std(dark)  # never flattened to a constant


def test_an_image_the_patient_lacks_is_not_augmented(tmp_path, monkeypatch):
    """helper-92: each batch augmented the all-zero images of patients without CEUS (and of
    inputs the model does not take), then multiplied them by zero. Only present images are
    augmented; their draws are unchanged (each input its own generator)."""
    manifest = generate_cohort(tmp_path / "m", SynthParams(patients=16, size=32, p_missing_ceus=0.5, seed=5))
    cohort = read_manifest(manifest)
    calls = []
    real = augment_lib.augment
    monkeypatch.setattr(augment_lib, "augment", lambda img, *a, **k: calls.append(img.any()) or real(img, *a, **k))
    batches = _train(GrainSource(cohort, settings(augment=AUG, image_size=16)), cohort.ids)
    present = sum(int(b["has_ceus"].sum() + b["has_bmode"].sum()) for b in batches)
    assert len(calls) == present and all(calls)
    assert all(not b["ceus"][~b["has_ceus"]].any() for b in batches)


# ------------------------------------------------------------------ against TensorFlow


@pytest.mark.tf
@pytest.mark.parametrize("shape", [(256, 256), (300, 411, 3), (50, 40), (SIZE, SIZE, 3)])
def test_decode_and_resize_equal_tensorflow(shape):
    tf = pytest.importorskip("tensorflow", reason="TensorFlow not installed (pip install -e '.[tf]')")
    a = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    for size in (SIZE, 224):
        img = tf.image.convert_image_dtype(tf.io.decode_image(buf.getvalue(), channels=3), tf.float32)
        ref = tf.clip_by_value(tf.image.resize(img, (size, size), antialias=True), 0.0, 1.0).numpy()
        np.testing.assert_allclose(decode_image(buf.getvalue(), size), ref, atol=RESAMPLE_ATOL)


@pytest.mark.tf
def test_grain_and_tfds_paths_give_the_same_batches(data, tmp_path):
    """Augmentation off, the two loaders give the same evaluation batches (same decode, same
    normalisation; each keeps the split's patients, TFDS in its own record order) and training
    batches of the same patients."""
    pytest.importorskip("tensorflow", reason="TensorFlow not installed (pip install -e '.[tf]')")
    from lnm_jax.data.loaders.pipeline import TfdsSource

    cohort, split = data
    s = settings()
    grain_src, tfds_src = GrainSource(cohort, s), TfdsSource(cohort, s, tmp_path / "tfds")
    # a B-mode model's batches alike: its CEUS neither decoded nor held, in either path
    bmode = settings(inputs=("bmode",))
    for grain_one, tfds_one in (
        (grain_src, tfds_src),
        (GrainSource(cohort, bmode), TfdsSource(cohort, bmode, tmp_path / "tfds")),
    ):
        rows = {}
        for name, src in (("grain", grain_one), ("tfds", tfds_one)):
            rows[name] = {
                pid: {k: b[k][i] for k in b if k != "patient_id"}
                for b in src.eval_batches(split.test)
                for i, pid in enumerate(b["patient_id"])
                if b["valid"][i]
            }
        assert sorted(rows["grain"]) == sorted(rows["tfds"]) == sorted(p.encode() for p in split.test)
        for pid, g in rows["grain"].items():
            t = rows["tfds"][pid]
            for k in g:
                # normalised values: the [0, 1] tolerance over the smallest std
                np.testing.assert_allclose(g[k], t[k], atol=RESAMPLE_ATOL / 0.114, err_msg=f"{pid} {k}")
    assert not any(r["has_ceus"] for r in rows["tfds"].values())
    train_ids = {
        name: sorted(i for _, b in src.train_batches(split.train, 0) for i in b["patient_id"])
        for name, src in (("grain", grain_src), ("tfds", tfds_src))
    }
    assert len(train_ids["grain"]) == len(train_ids["tfds"]) == len(split.train) // 4 * 4


@pytest.mark.tf
def test_tfds_builder_features(data, tmp_path):
    pytest.importorskip("tensorflow", reason="TensorFlow not installed (pip install -e '.[tf]')")
    from lnm_jax.data.loaders.tfds_builder import load_cohort

    cohort, _ = data
    examples = list(load_cohort(cohort, tmp_path / "tfds").as_numpy_iterator())
    assert len(examples) == len(cohort)
    ex = examples[0]
    assert set(ex) == {"patient_id", "bmode", "ceus", "us_lnm", "lnm", "has_bmode", "has_ceus", "has_us_lnm"}
    p = cohort.by_id()[ex["patient_id"].decode()]
    # the one decoder's pixels, stored as PNG: the same picture as the grain path reads
    np.testing.assert_array_equal(decode_image(ex["bmode"], 48), decode_image(p.bmode.read_bytes(), 48))
    assert ex["lnm"] == p.lnm and ex["us_lnm"] == p.us_lnm and ex["has_ceus"]


@pytest.mark.tf
def test_a_run_trains_from_the_tfds_path(tiny_cohort, tmp_path):
    pytest.importorskip("tensorflow", reason="TensorFlow not installed (pip install -e '.[tf]')")
    from support import tiny_config

    from lnm_jax.metric_writer import read_history
    from lnm_jax.run import Run
    from lnm_jax.training.loop import train

    config = tiny_config(tiny_cohort, "bmode,us_lnm", epochs=1)
    config.data.loader = "tfds"
    run = Run.create(config, tmp_path / "run")
    train(run)
    (row,) = read_history(run.files.history)
    assert np.isfinite(row["train_loss"]) and np.isfinite(row["val_auc"])
    assert any((tmp_path / "run" / "tfds").iterdir())  # the records were built


def test_a_held_cohort_keeps_grey_and_missing_images_in_less_memory_with_the_same_values(tmp_path):
    """helper-94: every patient's two images were held as full float32 RGB whatever they held
    (363 KB a patient at 128 px). A grey image is held as one channel, a missing one as a
    broadcast zero: the same values (every batch equal to decoding without the cache)."""
    from lnm_jax.data.loaders.loader import DecodedCohort

    manifest = generate_cohort(tmp_path / "m", SynthParams(patients=12, size=32, p_missing_ceus=0.5, seed=3))
    cohort = read_manifest(manifest)
    held, fresh = (DecodedCohort(cohort.patients, 16, cache=c) for c in (True, False))
    for i in range(len(cohort.patients)):
        a, b = held[i], fresh[i]
        for k in ("bmode", "ceus"):
            np.testing.assert_array_equal(a[k], b[k])
            assert a[k].shape == b[k].shape and a[k].dtype == b[k].dtype == np.float32
        if not b["has_ceus"]:
            assert a["ceus"].base is not None and a["ceus"].strides == (0, 0, 0)  # nothing held
        if np.array_equal(b["bmode"][..., 0], b["bmode"][..., 2]):
            assert a["bmode"].strides[-1] == 0  # one channel held
    assert any(not held[i]["has_ceus"] for i in range(len(cohort.patients)))
    # batches from the held cohort equal the uncached ones, augmentation and all
    s = settings(augment=AUG, image_size=16)
    for x, y in zip(
        _train(GrainSource(cohort, s), cohort.ids),
        _train(GrainSource(cohort, settings(augment=AUG, image_size=16, cache=False)), cohort.ids),
    ):
        for k in ("bmode", "ceus"):
            np.testing.assert_array_equal(x[k], y[k])


def test_a_cohort_too_large_to_hold_is_refused_before_training_and_said_where_it_may_not_fit():
    """helper-94: nothing estimated the memory a held cohort takes; a large one was decoded for
    minutes, then a MemoryError (or the kernel's kill, unsaid)."""
    from lnm_jax.data.loaders.loader import held_bytes
    from lnm_jax.preflight import check_host_memory

    c = base_config("triple")
    c.data.image_size = 224
    low, high = held_bytes(3000, 224, 1, ("bmode", "ceus"))
    assert (low, high) == (3000 * 2 * 224 * 224 * 4, 3000 * 2 * 224 * 224 * 4 * 3)
    with pytest.raises(
        ValueError, match=r"takes 1\.1-3\.4 GiB .* 0\.5 GiB of memory are available: --config\.data\.cache=False"
    ):
        check_host_memory(c, 3000, available=2**29)
    assert "warning: the decoded cohort held in memory" in check_host_memory(c, 3000, available=2 * 2**30)
    assert check_host_memory(c, 3000, available=8 * 2**30) is None
    c.data.cache = False
    assert check_host_memory(c, 3000, available=2**29) is None
    b = base_config("bmode")  # an input the model does not take holds nothing
    b.data.image_size = 224
    assert "takes 0.6-1.7 GiB" in check_host_memory(b, 3000, available=2**30)


@pytest.mark.tf
def test_tfds_records_follow_the_pictures_and_a_tfds_run_needs_no_tensorflow_to_evaluate(
    tiny_cohort, tmp_path, monkeypatch, capsys
):
    """helper-95: (1) the TFDS folder was keyed by the manifest's text alone: an image edited in
    place fed its old pixels from a shared data.tfds_dir in silence; (2) a run trained through
    TFDS could be evaluated, scored and explained only with TensorFlow; (3) a fixed contrast
    (min = max) crashed TensorFlow's random contrast; (4) damaged records were a raw
    DataLossError. Now the key holds every picture's pixels, evaluation reads through grain,
    a fixed factor is applied as such and damaged records are one line naming the folder."""
    import shutil

    from PIL import Image
    from support import tiny_config

    tf = pytest.importorskip("tensorflow", reason="TensorFlow not installed (pip install -e '.[tf]')")

    import lnm_jax.run as run_module
    from lnm_jax.cli import main
    from lnm_jax.data.loaders.pipeline import TfdsSource, _augment_image
    from lnm_jax.data.loaders.tfds_builder import records_key
    from lnm_jax.run import Run
    from lnm_jax.training.loop import train

    cohort_dir = tmp_path / "cohort"
    shutil.copytree(tiny_cohort.parent, cohort_dir)
    manifest = cohort_dir / tiny_cohort.name
    config = tiny_config(manifest, "bmode,us_lnm", epochs=1)
    config.data.loader, config.data.tfds_dir = "tfds", str(tmp_path / "shared")
    run = Run.create(config, tmp_path / "run")
    train(run)
    key = records_key(run.cohort, 1, "auto", False)
    assert (tmp_path / "shared" / key).is_dir()
    # (1) one picture edited in place, the manifest's text unchanged: another folder
    first = read_manifest(manifest).patients[0]
    original = first.bmode.read_bytes()
    with Image.open(first.bmode) as im:
        inverted = Image.eval(im.convert("L"), lambda v: 255 - v)
    inverted.save(first.bmode)
    assert records_key(read_manifest(manifest), 1, "auto", False) != key
    first.bmode.write_bytes(original)
    assert records_key(read_manifest(manifest), 1, "auto", False) == key

    # (2) evaluated and scored without TensorFlow's input path
    def no_tensorflow():
        raise ImportError("data.loader='tfds' needs TensorFlow (No module named 'tensorflow')")

    monkeypatch.setattr(run_module, "_tfds_pipeline", no_tensorflow)
    assert main(["evaluate", "--workdir", str(tmp_path / "run")]) == 0, capsys.readouterr().err
    monkeypatch.undo()
    # (3) a fixed contrast factor
    aug = {"translate": 0.1, "scale_min": 0.9, "scale_max": 1.1, "flip": True, "contrast_min": 1.0}
    aug |= {"contrast_max": 1.0, "brightness": 0.0, "clip": False}
    img = np.random.default_rng(0).random((8, 8, 3)).astype(np.float32)
    assert np.isfinite(_augment_image(tf.constant(img), tf.constant([1, 2], tf.int64), aug).numpy()).all()
    # (4) damaged records: one line naming the folder
    (record,) = (tmp_path / "shared" / key).rglob("*.tfrecord*")
    record.write_bytes(record.read_bytes()[: record.stat().st_size // 2])
    source = TfdsSource(run.cohort, run.data.source.settings, tmp_path / "shared")
    with pytest.raises(
        ValueError, match=f"the TFDS records in {tmp_path / 'shared' / key} cannot be read .* delete"
    ) as e:
        list(source.train_batches(run.split.train, 1))
    assert "function_node" not in str(e.value) and "[Op:" not in str(e.value), e.value  # TensorFlow's words alone
