"""The auxiliary lesion-segmentation head (model.lesion_head + train.lesion_loss_weight): masks
reach the batches framed and augmented with their images, the loss is the documented BCE + soft
Dice, its gradient reaches the head and the branch, and a run trains at tiny size."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image
from support import BACKBONE, tiny_config

from lnm_jax import names
from lnm_jax.data.cohorts.manifest import read_manifest
from lnm_jax.data.loaders import augment as augment_lib
from lnm_jax.data.loaders.loader import DecodedCohort, collate
from lnm_jax.data.records import decode_lesion
from lnm_jax.models.fusion import FusionClassifier, check_config
from lnm_jax.training.state import init_variables
from lnm_jax.training.steps import LESION_DICE_SMOOTH, lesion_loss

# geometric changes only (contrast 1, brightness 0), so that an image's pixels are its warp's
AUG = {"translate": 0.2, "flip": True, "scale_min": 0.7, "scale_max": 1.3, "contrast_min": 1.0, "contrast_max": 1.0}
AUG["brightness"] = 0.0


def test_augmentation_moves_a_mask_with_its_image():
    """An image whose every channel is its mask, augmented with photometric changes off: the
    augmented image's channel is the augmented mask (same draw, same warp), and the lesion moved."""
    lesion = np.zeros((32, 32), np.float32)
    lesion[4:12, 6:14] = 1.0
    img = np.repeat(lesion[..., None], 3, axis=-1)
    for seed in range(4):
        out, moved = augment_lib.augment(img, np.random.default_rng(seed), AUG, lesion)
        np.testing.assert_allclose(out[..., 0], moved, atol=1e-6)
        assert moved.min() >= 0.0 and moved.max() <= 1.0 + 1e-6
    assert np.abs(moved - lesion).sum() > 1.0
    assert augment_lib.augment(img, np.random.default_rng(0), AUG)[1] is None


def test_records_carry_framed_masks_only_when_asked(tiny_cohort):
    cohort = read_manifest(tiny_cohort)
    plain, with_masks = DecodedCohort(cohort.patients, 32), DecodedCohort(cohort.patients, 32, masks=True)
    assert names.mask(names.BMODE) not in plain[0]
    batch = collate([with_masks[i] for i in range(3)], rows=4)
    for m in names.IMAGE_INPUTS:
        assert batch[names.mask(m)].shape == (4, 32, 32)
        assert batch[names.has(names.mask(m))].tolist() == [True, True, True, False]  # the padding row has none
        np.testing.assert_array_equal(batch[names.mask(m)][0], decode_lesion(cohort.patients[0], m, 32))
        assert batch[names.mask(m)][0].max() > 0.5  # the synthetic nodule is inside


def _hand_loss(z: np.ndarray, t: np.ndarray) -> float:
    """BCE (mean over cells) + soft Dice of one [h, w] map, written out in numpy."""
    p = 1.0 / (1.0 + np.exp(-z))
    bce = np.mean(-(t * np.log(p) + (1 - t) * np.log(1 - p)))
    dice = 1.0 - (2.0 * np.sum(p * t) + LESION_DICE_SMOOTH) / (np.sum(p) + np.sum(t) + LESION_DICE_SMOOTH)
    return bce + dice


def test_lesion_loss_equals_a_hand_computation():
    """Maps at the mask's resolution (no resize): rows without a mask, or padding rows, do not
    count; the inputs' losses are averaged."""
    rng = np.random.default_rng(0)
    z = {m: rng.normal(size=(3, 4, 4)).astype(np.float32) for m in names.IMAGE_INPUTS}
    masks = {m: (rng.random((3, 4, 4)) < 0.4).astype(np.float32) for m in names.IMAGE_INPUTS}
    batch = {names.mask(m): masks[m] for m in names.IMAGE_INPUTS}
    batch[names.has(names.mask(names.BMODE))] = np.array([True, False, True])
    batch[names.has(names.mask(names.CEUS))] = np.array([True, True, True])
    weights = np.array([1.0, 1.0, 0.0], np.float32)  # row 2: padding
    expected_b = _hand_loss(z[names.BMODE][0], masks[names.BMODE][0])
    expected_c = np.mean([_hand_loss(z[names.CEUS][i], masks[names.CEUS][i]) for i in (0, 1)])
    got = lesion_loss({m: jnp.asarray(v) for m, v in z.items()}, batch, jnp.asarray(weights))
    np.testing.assert_allclose(float(got), (expected_b + expected_c) / 2, rtol=1e-5)


def test_lesion_loss_resizes_the_mask_to_the_map():
    """A lesion in the top-left quarter of a 32x32 mask is a target in the top-left of a 4x4
    map: the loss is lower for logits that say so than for their mirror image."""
    t = np.zeros((1, 32, 32), np.float32)
    t[0, :16, :16] = 1.0
    batch = {names.mask(names.BMODE): t, names.has(names.mask(names.BMODE)): np.array([True])}
    right = np.full((1, 4, 4), -4.0, np.float32)
    right[0, :2, :2] = 4.0
    loss = lambda z: float(lesion_loss({names.BMODE: jnp.asarray(z)}, batch, jnp.ones(1)))  # noqa: E731
    assert loss(right) < 0.2 < loss(right[:, ::-1, ::-1])


def test_the_lesion_loss_trains_the_head_and_the_branch():
    model = FusionClassifier(modalities=(names.BMODE,), backbone=BACKBONE, width=8, lesion_head="stage2")
    x = np.random.default_rng(0).random((2, 32, 32, 3)).astype(np.float32)
    t = np.zeros((2, 32, 32), np.float32)
    t[:, 8:20, 8:20] = 1.0
    batch = {
        names.BMODE: x,
        names.US_LNM: np.zeros(2, np.float32),
        names.mask(names.BMODE): t,
        names.has(names.mask(names.BMODE)): np.ones(2, bool),
    }
    # each as one program (eagerly, every layer's op compiles on its own: ~350 small programs)
    variables = init_variables(model, jax.random.key(0), batch)
    out = jax.jit(model.apply)(variables, batch)
    assert out["lesion_logits"][names.BMODE].shape == (2, 4, 4)  # stage2 of a 32 px ResNet: 1/8

    def loss(params):
        out, _ = model.apply({**variables, "params": params}, batch, train=True, mutable=["batch_stats"])
        return lesion_loss(out["lesion_logits"], batch, jnp.ones(2))

    grads = jax.jit(jax.grad(loss))(variables["params"])
    head = f"{names.BMODE}_lesion_head"
    assert float(jnp.abs(grads[head]["kernel"]).sum()) > 0
    stem = jax.tree.leaves(grads[f"{names.BMODE}_backbone"])
    assert sum(float(jnp.abs(g).sum()) for g in stem) > 0


def test_config_refuses_a_lesion_head_it_cannot_train(tiny_cohort):
    c = tiny_config(tiny_cohort, "dual")
    c.model.lesion_head = "stage3"
    with pytest.raises(ValueError, match="go together"):
        check_config(c)
    c.train.lesion_loss_weight = 1.0
    check_config(c)
    c.data.on_device = True
    with pytest.raises(ValueError, match="data.on_device=False"):
        check_config(c)
    c.data.on_device = False
    c.modalities = "us_lnm"
    with pytest.raises(ValueError, match="needs an image input"):
        check_config(c)


def test_a_run_with_a_lesion_head_trains_and_records_its_loss(tiny_cohort, tmp_path):
    from lnm_jax.exported import MODEL_CARD
    from lnm_jax.model_card import metadata, write_card
    from lnm_jax.run import Run
    from lnm_jax.training.loop import train

    cohort = Path(shutil.copytree(Path(tiny_cohort).parent, tmp_path / "cohort")) / Path(tiny_cohort).name
    c = tiny_config(cohort, "dual", epochs=1)
    c.model.lesion_head, c.train.lesion_loss_weight = "stage2", 1.0
    run = Run.create(c, tmp_path / "run")
    train(run)
    record = json.loads(run.files.history.read_text().splitlines()[-1])
    assert 0.0 < record["train_lesion_loss"] < record["train_loss"]
    card = metadata(run)
    write_card(card, tmp_path / "card")
    assert card["architecture"]["lesion_head"] == "stage2"
    assert "lesion-segmentation head at stage2" in (tmp_path / "card" / MODEL_CARD).read_text()
    # the masks are training targets: recorded as the images are, and one changed since is named
    # (helper-81: masks shifted by 4 px were trained on by a resume, unsaid)
    with open(run.files.image_geometry, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["input"] == "bmode_mask"]
    assert len(rows) == len(run.cohort) and all(len(r["sha256"]) == 64 for r in rows)
    mask = run.cohort.patients[0].mask("bmode")
    shifted = np.roll(np.asarray(Image.open(mask)), 4, axis=1)
    Image.fromarray(shifted).save(mask)
    c.train.epochs = 2
    with pytest.raises(ValueError, match=r"bmode_mask .*: not the lesion mask the run was trained on"):
        Run.create(c, tmp_path / "run", resume=True)


@pytest.mark.parametrize("kept", ["none", "test split only"])
def test_a_lesion_head_without_training_masks_is_refused_before_training(tiny_cohort, tmp_path, kept):
    """No mask at all, or masks only on patients the split puts in the test set: the loss
    would be zero at every step, so the run is refused before anything is written."""
    import csv

    from lnm_jax.data.cohorts.splits import make_splits
    from lnm_jax.run import Run

    c = tiny_config(tiny_cohort, "dual", epochs=1)
    c.model.lesion_head, c.train.lesion_loss_weight = "stage2", 1.0
    test = set(make_splits(c, read_manifest(tiny_cohort))[0].test) if kept != "none" else set()
    rows = list(csv.DictReader(tiny_cohort.open()))
    edited = tmp_path / "manifest.csv"
    with edited.open("w", newline="") as f:
        writer = csv.DictWriter(f, list(rows[0]))
        writer.writeheader()
        for r in rows:
            r = {
                k: (str(tiny_cohort.parent / v) if v and k in (*names.IMAGE_INPUTS, *names.MASK_COLUMNS) else v)
                for k, v in r.items()
            }
            if r[names.PATIENT_ID] not in test:
                r.update(dict.fromkeys(names.MASK_COLUMNS, ""))
            writer.writerow(r)
    c.data.manifest = str(edited)
    with pytest.raises(ValueError, match="no patient in the training split has one") as e:
        Run.create(c, tmp_path / "run")
    assert ("none for training" in str(e.value)) == (kept != "none")
    assert not (tmp_path / "run").exists()


def test_a_resumed_lesion_head_run_keeps_its_record_of_masks_as_it_was(tmp_path):
    """A run recorded before masks were (image_geometry.csv without <input>_mask rows) and
    resumed by this version: its record is rewritten without them, as its checkpoints' image
    digest is of the images alone (helper-82: rewritten with them, the run was unreadable). A
    new run, or one that records them, records them; a run without a lesion head none."""
    from lnm_jax.fileio import write_csv
    from lnm_jax.run import records_masks
    from lnm_jax.run_files import RunFiles

    files = RunFiles(tmp_path / "run")
    c = tiny_config(tmp_path / "m.csv", "dual", epochs=1)
    c.train.lesion_loss_weight = 1.0
    assert records_masks(c, files, resume=False) and records_masks(c, files, resume=True)  # nothing recorded yet
    files.checkpoints.mkdir(parents=True)
    image = {"patient_id": "P1", "input": "bmode", "sha256": "a" * 64}
    write_csv(files.image_geometry, [image], ["patient_id", "input", "sha256"])
    assert not records_masks(c, files, resume=True)  # an older record: kept without masks
    assert records_masks(c, files, resume=False)
    write_csv(files.image_geometry, [image, {**image, "input": "bmode_mask"}], ["patient_id", "input", "sha256"])
    assert records_masks(c, files, resume=True)
    c.train.lesion_loss_weight = 0.0
    assert not records_masks(c, files, resume=False)
