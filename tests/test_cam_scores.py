"""Grad-CAM scored against lesion masks: the scores equal a hand computation, and `gradcam
--manifest` on new patients writes the maps and scores consistently."""

from __future__ import annotations

import csv
import json
import math
import os
import re

import numpy as np
import pytest

from lnm_jax import run_files as F
from lnm_jax.cli import main
from lnm_jax.explain import scores as S


def test_lesion_scores_equal_a_hand_computation():
    cam = np.array([[0, 1, 0, 0], [0, 4, 1, 0], [0, 0, 0, 0], [2, 0, 0, 0]], np.float32)  # mass 8
    lesion = np.zeros((4, 4), np.float32)
    lesion[0:2, 1:3] = 1.0  # 4 of 16 pixels: area 0.25, holding 1 + 4 + 1 = 6 of the mass
    s = S.lesion_scores(cam, lesion)
    assert s["lesion_area"] == 0.25
    assert s["mass_in_lesion"] == pytest.approx(6 / 8)
    assert s["mass_ratio"] == pytest.approx((6 / 8) / 0.25)
    assert s["pointing_hit"] == 1.0  # the maximum (4) is inside
    strict = S.lesion_scores(cam, lesion, tolerance=0)
    cam[3, 0] = 9  # the maximum now outside
    assert S.lesion_scores(cam, lesion)["pointing_hit"] == 0.0
    flat = S.lesion_scores(np.ones((4, 4)), lesion, tolerance=0)
    with pytest.raises(ValueError, match="empty"):
        S.lesion_scores(cam, np.zeros((4, 4)))
    # the printed line says how many maps were constant and the pointing game's tolerance
    # (helper-57: "all (7 images)" over 5 scored maps)
    rows = [{**r, "random_mass_in_lesion": 0.25, "random_pointing_hit": 0.0} for r in (strict, flat)]
    rows = [{**r, "random_mass_ratio": 1.0, "branch": "bmode", "label": 0} for r in rows]
    line = S.summary_lines(S.summary_table(rows, ["bmode"]), "gradcam", "stage3")
    assert line == [
        "bmode gradcam stage3, all (2 images, 1 map constant, scored as uniform): mass in lesion / area 2.00 "
        "(random 1.00), pointing game within 0.0 px 0.62 (random 0.00)"
    ], line
    # maps no better than the random one on either score are said to point nowhere (helper-92:
    # a CEUS branch at chance had been listed without a word)
    low = [{**r, "random_mass_ratio": 9.0, "random_pointing_hit": 1.0} for r in rows]
    (said,) = S.summary_lines(S.summary_table(low, ["bmode"]), "gradcam", "stage3")
    assert said.endswith("; no better than a random map on either score: these maps do not point at the lesion")


def test_a_tied_maximum_plateau_is_scored_by_its_share_on_the_lesion():
    """A stage4 map's peak in a border cell, upsampled bilinearly, is a plateau whose first pixel
    in raster order is the image corner: argmax scored it a miss on a lesion holding a quarter of
    the plateau (the reviewer's example)."""
    cam = np.full((128, 128), 0.2)
    cam[0:16, 0:16] = 1.0  # the plateau: 256 tied maxima
    lesion = np.zeros((128, 128))
    lesion[8:40, 8:40] = 1.0  # holds rows/cols 8-15 of the plateau: 64 of its 256 pixels
    assert S.lesion_scores(cam, lesion, tolerance=0)["pointing_hit"] == 64 / 256
    # at the default tolerance (15/224 of 128 px = 8.57 px) the 64 plateau pixels above and left of
    # the lesion (a = 8 - row, b = 8 - col in 1..8) hit where a^2 + b^2 <= 73.47: 8+8+8+7+6+6+4+3 = 50
    assert S.lesion_scores(cam, lesion)["pointing_tolerance_px"] == pytest.approx(128 * 15 / 224)
    assert S.lesion_scores(cam, lesion)["pointing_hit"] == (256 - 64 + 50) / 256
    # the same plateau as cam_from makes it: its pixels equal up to float32 rounding
    import jax.numpy as jnp

    from lnm_jax.explain.gradcam import cam_from

    raw = np.full((1, 4, 4, 1), 0.2, np.float32)
    raw[0, 0, 0, 0] = 1.0
    up, _ = cam_from(jnp.asarray(raw), jnp.ones_like(jnp.asarray(raw)), "gradcam", (128, 128))
    assert S.lesion_scores(np.asarray(up[0]), lesion, tolerance=0)["pointing_hit"] == 64 / 256


def test_the_pointing_game_has_zhang_et_al_s_tolerance():
    """Zhang et al. (ECCV 2016) count a maximum within 15 px of the object a hit: 15/224 of the
    image side by default, 15 px at 224 px; tolerance=0 is the strict game."""
    lesion = np.zeros((224, 224))
    lesion[100:124, 100:124] = 1.0  # last lesion column 123
    for gap, hit in ((14, 1.0), (16, 0.0)):
        cam = np.zeros((224, 224))
        cam[110, 123 + gap] = 1.0  # gap px right of the lesion
        s = S.lesion_scores(cam, lesion)
        assert (s["pointing_hit"], s["pointing_tolerance_px"]) == (hit, pytest.approx(15.0)), gap
        assert S.lesion_scores(cam, lesion, tolerance=0)["pointing_hit"] == 0.0
    diagonal = np.zeros((224, 224))
    diagonal[123 + 10, 123 + 11] = 1.0  # sqrt(10^2 + 11^2) = 14.87 px from the corner pixel (123, 123)
    assert S.lesion_scores(diagonal, lesion)["pointing_hit"] == 1.0


def test_constant_maps_are_scored_as_uniform_and_both_arms_share_the_images():
    """A constant map had no score and was left out of the CAM's pointing game and mass ratio but
    not of the random map's: the two arms had different denominators."""
    lesion = np.zeros((4, 4))
    lesion[0:2, 1:3] = 1.0  # area 0.25
    for flat in (np.full((4, 4), 0.3), np.zeros((4, 4))):  # an all-zero map: no evidence, uniform too
        s = S.lesion_scores(flat, lesion, tolerance=0)
        assert (s["mass_in_lesion"], s["mass_ratio"], s["pointing_hit"], s["constant_map"]) == (0.25, 1.0, 0.25, 1.0)
    # within 1 px (tolerance 1/4 of the 4 px side) of the lesion: rows 0-1 whole (8) and (2, 1),
    # (2, 2) ((2, 0) is sqrt(2) px away): 10 of 16, a uniform guess's hit
    assert S.lesion_scores(np.ones((4, 4)), lesion, tolerance=0.25)["pointing_hit"] == 10 / 16
    peak = np.zeros((4, 4))
    peak[0, 1] = 1.0  # on the lesion: mass 1 of 1 inside, ratio 4
    rows = [
        {**S.lesion_scores(m, lesion, tolerance=0), "random_mass_ratio": rr, "random_mass_in_lesion": 0.25 * rr}
        for m, rr in ((peak, 2.0), (np.ones((4, 4)), 0.0))
    ]
    rows = [{**r, "random_pointing_hit": h, "random_constant_map": 0.0} for r, h in zip(rows, (0.0, 1.0))]
    cam, rnd = S.summarise(rows), S.summarise(rows, "random_")
    assert (cam["images"], cam["constant_maps"], rnd["images"], rnd["constant_maps"]) == (2, 1, 2, 0)
    assert cam["pointing_game"] == (1.0 + 0.25) / 2 and cam["mass_ratio_mean"] == (4.0 + 1.0) / 2
    assert rnd["pointing_game"] == 0.5 and rnd["mass_ratio_mean"] == 1.0
    # rows of a file written before (a constant map's scores null): out of both arms alike
    old = [{**r, "mass_ratio": None, "mass_in_lesion": None, "pointing_hit": None} for r in rows[1:]]
    cam, rnd = S.summarise(rows[:1] + old), S.summarise(rows[:1] + old, "random_")
    assert (cam["unscored"], rnd["unscored"], cam["constant_maps"]) == (1, 1, 1)
    assert (cam["pointing_game"], rnd["pointing_game"], rnd["mass_ratio_mean"]) == (1.0, 0.0, 2.0)


def _new_with_masks(manifest, out, n, masks=True):
    """The first ``n`` patients of ``manifest`` as new patients (no label), with their masks
    unless not ``masks``."""
    base = os.path.dirname(os.path.abspath(manifest))
    with open(manifest) as f:
        rows = list(csv.DictReader(f))[:n]
    cols = ["patient_id", "bmode", "ceus", "us_lnm", *(["bmode_mask", "ceus_mask"] if masks else [])]
    with open(out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        for r in rows:
            w.writerow({c: r[c] if c in ("patient_id", "us_lnm") else os.path.join(base, r[c]) for c in cols})
    return out


def test_gradcam_on_new_patients_writes_maps_and_scores(triple_run, tiny_cohort, tmp_path, capsys):
    new = _new_with_masks(tiny_cohort, tmp_path / "new.csv", 6)
    before = sorted(p.name for p in triple_run.workdir.iterdir())
    out = tmp_path / "cams"
    assert main(["gradcam", "--workdir", str(triple_run.workdir), "--manifest", str(new), "--out", str(out)]) == 0
    # no label, so no correct or incorrect: grids by the class predicted (helper-56: two grids of
    # "no patients" and "0 correct, 0 incorrect")
    captured = capsys.readouterr()
    said = re.search(r"6 patients \(6 without a label: (\d) predicted positive, (\d) negative\)", captured.out)
    assert said and int(said[1]) + int(said[2]) == 6
    # the run's own training and validation patients among them are said, as predict says them
    ids = [r["patient_id"] for r in csv.DictReader(open(new))]
    seen = sum(i in set(triple_run.split.subset("train")) | set(triple_run.split.subset("val")) for i in ids)
    assert seen and f"{seen} of these 6 patients" in captured.err and "optimistic" in captured.err
    grids = sorted(p.name for p in out.glob("grid_*.png"))
    assert grids == sorted([F.CAM_GRID_PREDICTED_POSITIVE, F.CAM_GRID_PREDICTED_NEGATIVE]), grids
    assert sorted(p.name for p in triple_run.workdir.iterdir()) == before  # the run is only read
    # standard JSON: a constant map's scores are null (fileio.json_text), never a NaN literal
    doc = json.loads((out / F.CAM_SCORES).read_text(), parse_constant=lambda c: pytest.fail(f"{c} in the JSON"))
    arrays = np.load(out / F.CAM_ARRAYS)
    assert len(doc["images"]) == 12  # 6 patients x 2 branches, every one with a mask
    for row in doc["images"]:
        key = f"{row['patient_id']}/{row['branch']}"
        again = S.lesion_scores(arrays[key], arrays[f"{key}_lesion"])
        for k in ("mass_in_lesion", "mass_ratio", "pointing_hit", "lesion_area"):
            assert row[k] == (None if math.isnan(again[k]) else pytest.approx(again[k], rel=1e-9)), (key, k)
        assert arrays[key].shape == (32, 32) and arrays[f"{key}_raw"].ndim == 2
    assert set(doc["summary"]) == {"bmode", "ceus"} and doc["layer"] and doc["method"] == "gradcam"
    # the pointing game's tolerance is written beside its scores: Zhang et al.'s 15/224 of the side
    assert doc["pointing_tolerance"] == 15 / 224 and doc["pointing_tolerance_px"] == pytest.approx(32 * 15 / 224)
    assert {row["pointing_tolerance_px"] for row in doc["images"]} == {doc["pointing_tolerance_px"]}
    assert doc["summary"]["bmode"]["all"]["cam"]["pointing_tolerance_px"] == doc["pointing_tolerance_px"]
    index = list(csv.DictReader((out / F.CAM_INDEX).open()))
    assert [r["lnm"] for r in index] == [""] * 6  # new patients: no label, no verdict
    assert main(["gradcam", "--workdir", str(triple_run.workdir), "--manifest", str(new)]) == 2  # --out is needed
    strict = tmp_path / "strict"
    args = ["gradcam", "--workdir", str(triple_run.workdir), "--manifest", str(new), "--out", str(strict)]
    assert main([*args, "--pointing-tolerance", "0"]) == 0
    assert "pointing game within 0.0 px" in capsys.readouterr().out
    assert json.loads((strict / F.CAM_SCORES).read_text())["pointing_tolerance_px"] == 0.0
    # the same --out again, for 3 patients without masks: the folder is this call's alone (the
    # earlier call's 12 scores and 6 figures had survived beside the new index, exit 0)
    fewer = _new_with_masks(tiny_cohort, tmp_path / "fewer.csv", 3, masks=False)
    assert main(["gradcam", "--workdir", str(triple_run.workdir), "--manifest", str(fewer), "--out", str(out)]) == 0
    ids = [r["patient_id"] for r in csv.DictReader((out / F.CAM_INDEX).open())]
    assert len(ids) == 3 and not (out / F.CAM_SCORES).exists()
    assert sorted(p.stem for p in (out / F.CAM_PATIENTS).iterdir()) == sorted(ids)
    assert {k.split("/")[0] for k in np.load(out / F.CAM_ARRAYS).files} == set(ids)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temporary folder left


def test_a_replaced_output_folder_is_kept_whole_when_its_writer_fails(tmp_path, monkeypatch):
    """``atomic_directory(replace=True)``: the earlier folder is replaced whole on success and
    kept as it was on a failure (an interrupt included), with no temporary sibling left."""
    from lnm_jax.fileio import OutputPathError, atomic_directory

    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("earlier")
    with pytest.raises(KeyboardInterrupt):
        with atomic_directory(out, replace=True) as fresh:
            (fresh / "new.txt").write_text("half")
            raise KeyboardInterrupt
    assert [p.name for p in tmp_path.iterdir()] == ["out"] and [p.name for p in out.iterdir()] == ["old.txt"]
    with atomic_directory(out, replace=True) as fresh:
        (fresh / "new.txt").write_text("whole")
    assert [p.name for p in tmp_path.iterdir()] == ["out"] and [p.name for p in out.iterdir()] == ["new.txt"]
    with pytest.raises(FileExistsError):  # without replace, a folder with files is refused
        with atomic_directory(out):
            pass
    # without replace, a second writer that filled the folder meanwhile is not replaced: refused,
    # saying so (it had been errno's bare "Directory not empty")
    other = tmp_path / "other"
    with pytest.raises(OutputPathError, match="written by another process while this one wrote it"):
        with atomic_directory(other) as fresh:
            (fresh / "mine.txt").write_text("second")
            other.mkdir()
            (other / "theirs.txt").write_text("first writer's")
    assert [p.name for p in other.iterdir()] == ["theirs.txt"]
    # a full disk inside the temporary folder is named as the output
    with pytest.raises(OSError, match=str(tmp_path / "full")):
        with atomic_directory(tmp_path / "full") as fresh:
            raise OSError(28, "No space left on device", str(fresh / "a.png"))
    # the current folder (--out .), or one holding it: refused before anything is written (the
    # swap had left the shell in a removed folder: the trial of 169449f)
    here = tmp_path / "here"
    (here / "below").mkdir(parents=True)
    for cwd in (here, here / "below"):
        monkeypatch.chdir(cwd)
        with pytest.raises(OutputPathError, match="is the current folder or holds it"):
            with atomic_directory(here):
                pass
    assert here.is_dir() and [p.name for p in here.iterdir()] == ["below"]


def test_evaluate_replaces_its_folder_whole_and_a_failed_one_leaves_it_as_it_was(triple_run, copy_run, monkeypatch):
    """A failed evaluate (a full disk) had left the new state's metrics.json beside the earlier
    evaluation's card, plots and lesion maps; a finished one kept an earlier one's files it did
    not write again. Now the earlier folder is kept whole on failure, replaced whole on success."""
    import errno

    from lnm_jax.evaluation import evaluate as E

    run = copy_run(triple_run)
    E.evaluate(run)
    folder = run.files.evaluation("best")
    (folder / "earlier.txt").write_text("a file the next evaluate does not write")
    before = {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(E, "plot_reliability", full)
    with pytest.raises(OSError):
        E.evaluate(run)
    assert {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()} == before
    assert [p.name for p in folder.parent.iterdir() if p.name.startswith(".")] == []
    monkeypatch.undo()
    res = E.evaluate(run)
    assert not (folder / "earlier.txt").exists() and (folder / F.METRICS).is_file()
    assert res["cam_scores"]["out"] == str(folder / E.LESION_MAPS) and (folder / E.LESION_MAPS / F.CAM_SCORES).is_file()


def test_chance_is_a_map_spread_over_the_picture_not_its_padding():
    """data.field_of_view_mm zero-pads a picture smaller than the square: a map spread evenly
    over the tissue, knowing nothing of the lesion, had scored mass in lesion / area 1.76-1.90
    against a printed random baseline of 1.02 (helper-80). With the picture's region the area
    is the lesion's share of the picture: that map scores 1, as does the random map, which is
    drawn over the picture; a map over the whole square scores the picture's share."""
    picture = np.zeros((32, 32))
    picture[8:24] = 1.0  # a landscape picture letterboxed into the square: half of it
    lesion = np.zeros((32, 32))
    lesion[12:16, 10:14] = 1.0
    spread = S.lesion_scores(picture, lesion, picture=picture)
    assert spread["mass_ratio"] == pytest.approx(1.0) and spread["lesion_area"] == pytest.approx(16 / 512)
    assert S.lesion_scores(picture, lesion)["mass_ratio"] == pytest.approx(2.0)  # as it had been scored
    square = np.ones((32, 32))
    square[0, 0] = 2.0  # not constant
    assert S.lesion_scores(square, lesion, picture=picture)["mass_ratio"] == pytest.approx(0.5, rel=0.01)
    rng = np.random.default_rng(0)
    noise = S.random_map(rng, (4, 4), 32, picture)
    assert noise[:8].max() == 0.0 and noise[24:].max() == 0.0 and noise[8:24].min() > 0.0
    ratios = [
        S.lesion_scores(S.random_map(rng, (8, 8), 32, picture), lesion, picture=picture)["mass_ratio"]
        for _ in range(400)
    ]
    # the mean of 400 maps: 0.995-1.013 over rng seeds 0-4, its SD 0.015 (a 6.7-SD margin)
    assert abs(np.mean(ratios) - 1.0) < 0.1, np.mean(ratios)
