"""`lnm-jax export`: the model as a folder that runs with jax + numpy alone, equal to the live
model; `predict --exported` equal to `predict --workdir`; the model card.

Tolerance: the exported program computes the live model's function with 1x1 convolutions as
XLA convolutions instead of the GEMMs training uses on the CPU, i.e. the same fp32 products
summed in another order. Each sum of K <= 9 * 512 terms moves by ~sqrt(K) u relative (u = 6e-8)
and ~20 layers compound that, about 1e-5 relative on logits of order 1: logits compare at
atol 1e-4 (the issue's parity bound)."""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from support import cpu_env, new_patients, tiny_config

from lnm_jax import names, provenance
from lnm_jax.cli import main
from lnm_jax.export import export_run
from lnm_jax.export_files import PROGRAM
from lnm_jax.exported import METADATA, MODEL_CARD, fingerprint, load, load_onnx
from lnm_jax.fileio import sealed
from lnm_jax.run import Run

ATOL = 1e-4

# The subprocesses below can import neither this package nor flax & co.: only the folder's own
# lnm_runtime (and jax, numpy, Pillow, pydicom; the ONNX check blocks jax too).
BLOCKER = """
import importlib.abc, sys
BLOCKED = {"lnm_jax", "flax", "optax", "orbax", "grain", "tensorflow", "tensorflow_datasets", "ml_collections",
           "torch", "keras", "sklearn"}
BLOCKED |= set(sys.argv[1:])
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"blocked: {name}")
sys.meta_path.insert(0, Block())
"""


def random_inputs(spec: dict, n: int, seed: int = 0, missing: bool = False) -> dict:
    r = np.random.default_rng(seed)
    out = {}
    for k, v in spec.items():
        shape = [n if d == "B" else d for d in v["shape"]]
        if v["dtype"] == "bool":
            out[k] = r.random(n) > 0.4 if missing else np.ones(n, bool)
        else:
            out[k] = r.random(shape).astype(np.float32)
    if names.US_LNM in out:
        out[names.US_LNM] = (r.random(n) > 0.5).astype(np.float32) * out[names.has(names.US_LNM)]
    return out


def live_logits(run: Run, inputs: dict) -> np.ndarray:
    """The live model (as `predict --workdir` runs it) on ``inputs`` normalised as the input
    pipeline normalises."""
    norm = run.config.data.norm.to_dict()
    batch = dict(inputs)
    for m in names.IMAGE_INPUTS:
        if m in batch:
            present = batch[names.has(m)].astype(np.float32).reshape((-1,) + (1,) * (batch[m].ndim - 1))
            batch[m] = (batch[m] - np.float32(norm[m]["mean"])) / np.float32(norm[m]["std"]) * present
    p = run.predictor("best")
    return np.asarray(p.step(p.params, p.batch_stats, batch)["logit"])


def _blocked(code: str, *blocked: str) -> None:
    res = subprocess.run(
        [sys.executable, "-c", BLOCKER + code, *blocked], env=cpu_env(), capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 0, res.stderr[-3000:]


def _probs(path) -> dict[str, dict]:
    return {r["patient_id"]: r for r in csv.DictReader(open(path))}


def test_export_runs_without_the_package_and_equals_the_live_model(triple_run, tiny_cohort, tmp_path, capsys):
    """The folder runs where lnm_jax and flax cannot be imported: its program equals the live
    model at batch 1 and 7 (StableHLO and ONNX), its ``predict.py`` writes ``lnm-jax predict
    --workdir``'s CSV (same columns; probabilities to 1e-5: logits agree to ~1e-5 relative,
    see the module docstring, a sigmoid's slope is <= 1/4, and the CSV rounds to 1e-6), and
    ``lnm_runtime.load().predict`` gives the same from file paths and from arrays (predict.py
    checks the folder against the fingerprint export printed)."""
    out = tmp_path / "exported"
    args = ["export", "--workdir", str(triple_run.workdir), "--out", str(out), "--format", "stablehlo,onnx"]
    capsys.readouterr()
    assert main(args) == 0
    # the line export prints lists every entry of the folder, lnm_runtime/ with its files' bytes
    listed = capsys.readouterr().out.split(": ", 1)[1].split("\n")[0].split(", ")
    assert sorted(x.rsplit(" ", 2)[0] for x in listed) == sorted(p.name + "/" * p.is_dir() for p in out.iterdir())
    md = json.loads((out / METADATA).read_text())
    assert md["export"]["stablehlo"]["platforms"] == ["cpu", "cuda"]
    # the program's source locations name files from their package on, not where this one is installed
    # (helper-117: two installs of one code had exported two programs, two fingerprints)
    program = (out / PROGRAM).read_bytes()
    assert b"lnm_jax/models/" in program and b"site-packages" not in program
    # nor the stack that called export (helper-119: the console script, python -m's runpy and a uv
    # layout gave three fingerprints): here pytest's and this file's frames
    assert b"_pytest" not in program and b"test_export.py" not in program
    assert str(Path(names.__file__).resolve().parents[1]).encode() not in program
    # the graph's opset is the one the requirement's onnxruntime runs (jax2onnx's default, 23,
    # had been written under "onnxruntime>=1.20", which runs opsets up to 21: a fresh-user trial)
    import onnx

    graph_opset = {o.domain: o.version for o in onnx.load(str(out / "model.onnx")).opset_import}[""]
    assert md["export"]["onnx"]["opset"] == graph_opset == 21
    assert md["export"]["onnx"]["runtime"] == "onnxruntime>=1.20" in (out / "requirements.txt").read_text()
    card = (out / MODEL_CARD).read_text()
    assert "ONNX opset 21 (jax2onnx" in card
    # how this model's CEUS input is prepared, not only the rule (helper-77)
    assert "This model's CEUS input: a clip's peak frame (T = 1), a still image as it is." in card
    assert md["architecture"]["inputs"] == ["bmode", "ceus", "us_lnm"]
    assert "Not a medical device" in (out / MODEL_CARD).read_text()
    # lnm_jax's licence goes with the copy of its modules (stop 87's leftover: an export held none)
    assert (out / "LICENSE").read_text().split() == (Path(names.__file__).parents[1] / "LICENSE").read_text().split()
    reqs = [x.split(">=")[0] for x in (out / "requirements.txt").read_text().splitlines() if not x.startswith("#")]
    assert reqs == [
        "jax",
        "flatbuffers",
        "numpy",
        "pillow",
        "simplejpeg",
        "pydicom",
        "tqdm",
        "imageio-ffmpeg",
        "onnxruntime",
    ]
    model = load(out)
    for n in (1, 7):
        x = random_inputs(model.inputs, n, seed=n)
        np.savez(tmp_path / f"x{n}.npz", **x)
        np.save(tmp_path / f"live{n}.npy", live_logits(triple_run, x))
    t = str(tmp_path)
    for fmt, blocked in (("stablehlo", []), ("onnx", ["jax", "jaxlib"])):
        _blocked(
            f"sys.path.insert(0, {str(out)!r})\nimport numpy as np\nfrom lnm_runtime import load\n"
            f"m = load(format={fmt!r})\n"
            "for n in (1, 7):\n"
            f"    x = dict(np.load({t!r} + f'/x{{n}}.npz'))\n"
            "    o = m(x)\n"
            "    assert o['prob'].shape == (n,)\n"
            f"    np.save({t!r} + f'/{fmt}{{n}}.npy', o['logit'])\n",
            *blocked,
        )
    for n in (1, 7):
        for fmt in ("stablehlo", "onnx"):
            np.testing.assert_allclose(
                np.load(tmp_path / f"{fmt}{n}.npy"), np.load(tmp_path / f"live{n}.npy"), atol=ATOL
            )
    # a model not trained for missing inputs refuses a has_* false in its own call unless told
    # to feed zeros it never saw (the CLI's --zero-fill-missing; it had scored them in silence)
    x = random_inputs(model.inputs, 3, seed=3)
    x[names.has(names.CEUS)][1] = False
    for loaded in (model, load_onnx(out)):
        with pytest.raises(ValueError, match=r"has_ceus is false for row\(s\) \[1\]: this model was not trained"):
            loaded(x)
        np.testing.assert_allclose(loaded(x, zero_fill_missing=True)["logit"], live_logits(triple_run, x), atol=ATOL)
    _onnxruntime_refusals_are_one_line(out)
    # the folder's own predict.py (no lnm_jax) == predict --workdir == predict --exported
    new = new_patients(tiny_cohort, tmp_path / "new.csv", 7)
    args = ["predict", "--manifest", str(new), "--out"]
    assert main([*args, str(tmp_path / "w.csv"), "--workdir", str(triple_run.workdir)]) == 0
    assert main([*args, str(tmp_path / "e.csv"), "--exported", str(out)]) == 0
    # the ONNX graph from the command too (helper-84: only predict.py and load() ran it)
    assert main([*args, str(tmp_path / "e_onnx.csv"), "--exported", str(out), "--format", "onnx"]) == 0
    for fmt in ("stablehlo", "onnx"):
        _blocked(
            "import runpy\n"
            f"sys.argv = ['predict.py', '--manifest', {str(new)!r}, '--out', {t!r} + '/{fmt}.csv', "
            f"'--format', {fmt!r}, '--fingerprint', {fingerprint(out)!r}]\n"
            "try:\n"
            f"    runpy.run_path({str(out / 'predict.py')!r}, run_name='__main__')\n"
            "except SystemExit as e:\n"
            "    assert e.code == 0, e.code\n"
        )
    # a planted __pycache__ file (a timestamp pyc that matches the checked source's mtime and size,
    # of other code) is never read by predict.py (helper-61: it ran instead of the checked source)
    import importlib.util
    from importlib._bootstrap_external import _code_to_timestamp_pyc

    src = out / "lnm_runtime" / "serving.py"
    planted = Path(importlib.util.cache_from_source(str(src)))
    planted.parent.mkdir(exist_ok=True)
    code = compile("raise SystemExit(7)\n", str(src), "exec")
    planted.write_bytes(_code_to_timestamp_pyc(code, int(src.stat().st_mtime), src.stat().st_size))
    _blocked(
        "import runpy\n"
        f"sys.argv = ['predict.py', '--manifest', {str(new)!r}, '--out', {t!r} + '/planted.csv']\n"
        "try:\n"
        f"    runpy.run_path({str(out / 'predict.py')!r}, run_name='__main__')\n"
        "except SystemExit as e:\n"
        "    assert e.code == 0, e.code\n"
    )
    planted.unlink()
    assert _probs(tmp_path / "planted.csv") == _probs(tmp_path / "stablehlo.csv")
    # helper-62: an lnm_runtime elsewhere on sys.path ran instead of the folder's; a file in the
    # runtime that SHA256SUMS does not list (a package shadowing a checked module) ran; an
    # abbreviated --fingerprint was checked only after the import
    shadow = tmp_path / "shadow" / "lnm_runtime"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise SystemExit(9)\n")
    env = {**cpu_env(), "PYTHONPATH": str(shadow.parent)}
    script = [sys.executable, str(out / "predict.py"), "--manifest", str(new), "--out"]
    res = subprocess.run([*script, str(tmp_path / "shadowed.csv")], env=env, capture_output=True, text=True)
    assert res.returncode == 0 and _probs(tmp_path / "shadowed.csv") == _probs(tmp_path / "stablehlo.csv"), res.stderr
    extra = out / "lnm_runtime" / "names"
    extra.mkdir()
    (extra / "__init__.py").write_text("raise SystemExit(9)\n")
    for argv, said in (
        ([], f"{extra} is not a file lnm-jax export wrote (not in SHA256SUMS)"),
        (["--fingerp", fingerprint(out)], "--fingerp: give --fingerprint in full"),
    ):
        res = subprocess.run([*script, str(tmp_path / "x.csv"), *argv], env=cpu_env(), capture_output=True, text=True)
        assert res.returncode == 1 and said in res.stderr, res.stderr
        shutil.rmtree(extra, ignore_errors=True)
    assert not (tmp_path / "x.csv").exists()
    by_run = _probs(tmp_path / "w.csv")
    for other in ("e.csv", "e_onnx.csv", "stablehlo.csv", "onnx.csv"):
        got = _probs(tmp_path / other)
        assert list(got) == list(by_run)  # manifest order
        for pid, row in by_run.items():
            assert list(got[pid]) == [c for c in row if c != "seen_by_run"]  # the same columns (an export knows no run)
            for k in [c for c in row if c.startswith("prob_lnm")]:
                assert abs(float(got[pid][k]) - float(row[k])) <= 1e-5, (other, pid, k)
            assert got[pid]["pred_at_0.5"] == row["pred_at_0.5"] or abs(float(row["prob_lnm"]) - 0.5) < 1e-5
    # Python: file paths and arrays (decoded elsewhere, uint8) give predict's probabilities
    rows = list(csv.DictReader(open(new)))
    from PIL import Image  # noqa: PLC0415

    paths = {m: [r[m] for r in rows] for m in ("bmode", "ceus")}
    arrays = {m: [np.asarray(Image.open(p)) for p in paths[m]] for m in paths}
    flags = [int(r["us_lnm"]) for r in rows]
    np.savez(tmp_path / "arrays.npz", **{f"{m}{i}": a for m in arrays for i, a in enumerate(arrays[m])})
    (tmp_path / "inputs.json").write_text(json.dumps({**paths, "us_lnm": flags}))
    _blocked(
        f"sys.path.insert(0, {str(out)!r})\nimport json, numpy as np\nfrom lnm_runtime import load\n"
        f"a = np.load({t!r} + '/arrays.npz')\nx = json.load(open({t!r} + '/inputs.json'))\nm = load()\n"
        "by_path = m.predict(x)['prob']\n"
        "x.update({k: [a[f'{k}{i}'] for i in range(len(x[k]))] for k in ('bmode', 'ceus')})\n"
        "by_array = m.predict(x, batch_size=3)['prob']\n"
        f"np.save({t!r} + '/py.npy', np.stack([by_path, by_array]))\n"
    )
    by_path, by_array = np.load(tmp_path / "py.npy")
    expected = np.array([float(by_run[r["patient_id"]]["prob_lnm"]) for r in rows])
    np.testing.assert_allclose(by_path, expected, atol=1e-5)
    np.testing.assert_allclose(by_array, by_path, atol=1e-6)  # the same pixels, batches of 3 vs 7


def _untrained_run(config, workdir) -> Run:
    """A run whose 'best' checkpoint is its initial state: what export does to it does not
    depend on training."""
    run = Run.create(config, workdir)
    ckpts = run.checkpoints(create=True)
    ckpts.save("best", 0, run.fresh_state(), {"epoch": 0, "best": {}})
    ckpts.close()
    return Run.open(workdir)


@pytest.mark.parametrize("variant", ["missing_inputs", "clip"])
def test_missing_input_and_clip_models_export_with_their_inputs(variant, tiny_cohort, tmp_path):
    config = tiny_config(tiny_cohort, "ceus,us_lnm")  # one image branch and the flag: both variants
    config.model.width = 4
    if variant == "missing_inputs":
        config.model.missing_inputs = True
    else:
        config.data.clip_frames = 3
        config.model.temporal_pool = "attention"
    run = _untrained_run(config, tmp_path / "run")
    export_run(run, tmp_path / "x", formats=("stablehlo", "onnx"))
    model = load(tmp_path / "x")
    if variant == "clip":
        assert model.inputs[names.CEUS]["shape"] == ["B", 3, 32, 32, 3]
    x = random_inputs(model.inputs, 7, missing=variant == "missing_inputs")
    live = live_logits(run, x)
    np.testing.assert_allclose(model(x)["logit"], live, atol=ATOL)
    np.testing.assert_allclose(load_onnx(tmp_path / "x")(x)["logit"], live, atol=ATOL)


def test_a_single_input_model_predicts_a_manifest_of_that_input_alone(tiny_cohort, tmp_path, capsys):
    """A site with B-mode images only, and a B-mode model: ``predict`` (on the run and from its
    export) had refused a manifest without ``ceus`` and ``us_lnm`` columns, and read and checked
    those columns' files and cells where given, though the model takes neither (every manifest
    was read whole). Now only the model's inputs are read; the columns not read are said."""
    from lnm_jax import serving
    from lnm_jax.data.cohorts.manifest import MISSING_COLUMN, ManifestError, read_manifest
    from lnm_jax.evaluation.evaluate import predict_manifest

    config = tiny_config(tiny_cohort, "bmode")
    config.model.width = 4
    run = _untrained_run(config, tmp_path / "run")
    rows = [{**r, "bmode": tiny_cohort.parent / r["bmode"]} for r in list(csv.DictReader(tiny_cohort.open()))[:4]]
    only = tmp_path / "bmode_only.csv"
    only.write_text("patient_id,bmode\n" + "".join(f"n{k},{r['bmode']}\n" for k, r in enumerate(rows)))
    with pytest.raises(ManifestError) as e:  # read whole, as training reads a cohort: refused
        read_manifest(only, require_labels=False)
    assert {p.code for p in e.value.problems} == {MISSING_COLUMN}
    # other inputs' columns given, their cells unreadable: not read, so not refused, and said
    more = tmp_path / "with_others.csv"
    more.write_text(  # (CEUS_Crop: an unread column in another spelling, not kept as metadata)
        "patient_id,bmode,ceus,ceus_mask,us_lnm,CEUS_Crop\n"
        + "".join(f"n{k},{r['bmode']},gone.png,gone_mask.png,maybe,1\n" for k, r in enumerate(rows))
    )
    capsys.readouterr()
    by_run = {
        r["patient_id"]: float(r["prob_lnm"])
        for r in csv.DictReader(predict_manifest(run, only, tmp_path / "a.csv").open())
    }
    others = {
        r["patient_id"]: float(r["prob_lnm"])
        for r in csv.DictReader(predict_manifest(run, more, tmp_path / "b.csv").open())
    }
    assert others == by_run and len(by_run) == 4
    said = capsys.readouterr().err
    assert f"note: {more}: column(s) ceus, ceus_mask, us_lnm, CEUS_Crop not read (the inputs read: bmode)" in said, said
    assert read_manifest(more, require_labels=False, inputs=("bmode",), warn=False).metadata_columns == ()
    export_run(run, tmp_path / "x", formats=("stablehlo",))
    exported = serving.predict_manifest(serving.load(tmp_path / "x"), more, tmp_path / "c.csv")
    got = {r["patient_id"]: float(r["prob_lnm"]) for r in csv.DictReader(exported.open())}
    assert got.keys() == by_run.keys()
    np.testing.assert_allclose([got[k] for k in by_run], list(by_run.values()), atol=ATOL)


def test_model_card_describes_the_configured_model_and_task(tiny_cohort, tmp_path):
    """A BUS-BRA-style late-fusion model's card says late fusion, malignant/benign and BI-RADS,
    never LNM; its environment is the training run's (run_info.json), not this process's."""
    from ml_collections import ConfigDict

    from lnm_jax.data.cohorts import busbra
    from lnm_jax.model_card import markdown, metadata

    config = tiny_config(tiny_cohort, "triple")
    config.model.width = 4
    config.model.fusion = "late"
    config.task = ConfigDict(busbra.TASK)
    config.train.pos_weight = "balanced"
    config.data.zero_fill_missing = True  # as lnm_jax/configs/reproduce_busbra.py: its single-view patients
    run = _untrained_run(config, tmp_path / "run")
    info = json.loads(run.files.run_info.read_text())
    info["packages"]["jax"] = "0.0.1-training"
    run.files.run_info.write_text(json.dumps(sealed(info)))  # as a training on that version wrote it
    md = metadata(run)
    card = markdown(md)
    assert md["architecture"]["fusion"] == "late" and card.count("late fusion") == 1
    assert "the paper's head" not in card
    assert md["architecture"]["feature_sizes"] == {"bmode": 32, "ceus": 32, "us_lnm": 1}  # a ResNet-10/18 of width 4
    assert "LNM" not in card and "papillary thyroid" not in card
    assert "malignant = 1, benign = 0" in card and "BI-RADS>=4" in card and "P(malignant)" in card
    # what predict does with a patient who lacks an input, as it does it (helper-56: "not supported:
    # every input is required", on a model that scores such a patient with zeros)
    assert md["preprocessing"]["zero_fill_missing"] is True
    assert "- Missing inputs: fed as zeros (an image of zeros after normalisation, a flag of 0), as in training" in card
    assert md["hyperparameters"]["pos_weight"] == "balanced"
    assert md["training_environment"]["packages"]["jax"] == "0.0.1-training" and "jax 0.0.1-training" in card
    # the source digest, which tells code apart where no commit does (an installed wheel: helper-117)
    digest = info["source_sha256"]
    assert md["training_environment"]["source_sha256"] == digest and f"; source sha256 {digest[:12]}." in card
    assert md["written_with"]["source_sha256"] == provenance.source_digest()
    assert set(md) >= {"task", "inputs", "outputs", "preprocessing", "training_cohort", "hyperparameters", "limits"}
    assert md["preprocessing"]["resize"].startswith("antialiased bilinear")


def test_runtime_takes_the_runs_zero_fill_decision():
    """A run trained with data.zero_fill_missing scores a patient who lacks an image (as
    predict --workdir does); the export carries that decision, and without it refuses."""
    from types import SimpleNamespace

    from lnm_jax.serving import Model

    def model(zero_fill):
        md = {
            "architecture": {"inputs": ["bmode", "ceus"], "missing_inputs": False},
            "preprocessing": {"image_size": 8, "clip_frames": 1, "framing": {}, "zero_fill_missing": zero_fill},
        }
        spec = {k: {"shape": ["B", 8, 8, 3], "dtype": "float32"} for k in ("bmode", "ceus")}
        return Model(SimpleNamespace(metadata=md, inputs=spec), ".")

    images = {"bmode": [np.zeros((16, 16), np.uint8)] * 2, "ceus": [np.zeros((16, 16, 3), np.uint8), None]}
    arrays = model(True).prepare(images)
    assert arrays["has_ceus"].tolist() == [True, False] and not arrays["ceus"][1].any()
    with pytest.raises(ValueError, match="not trained for missing inputs; zero_fill_missing=True scores it"):
        model(False).prepare(images)
    assert model(False).prepare(images, zero_fill_missing=True)["has_ceus"].tolist() == [True, False]


def test_a_card_says_when_its_preprocessing_code_is_not_the_trained_one(triple_run, monkeypatch, capsys, tmp_path):
    """helper-60: an export carries this package's decoding and framing code as it is at export
    time; a run trained at one commit and exported at a later one, with uncommitted changes,
    said only the training commit. Every checkpoint records the digest of that code in its
    sealed metadata (helper-61: a record in run_info.json could be edited); a card written with
    other code says so in its limits, naming both commits (or that they are one commit whose
    files changed), and export says it on the console too; a checkpoint without the record is
    said to be one."""
    import lnm_jax.model_card as mc
    from lnm_jax.export import export_run
    from lnm_jax.portable import preprocessing_digest

    meta = triple_run.restore("best")[1]
    assert meta["preprocessing_sha256"] == preprocessing_digest()
    said = (mc.PREPROCESSING_CHANGED, mc.PREPROCESSING_UNRECORDED)
    assert not [x for x in mc.metadata(triple_run, "best")["limits"] if x.startswith(said)]
    monkeypatch.setattr(mc, "preprocessing_digest", lambda: "0" * 64)  # the code changed since training
    capsys.readouterr()
    export_run(triple_run, tmp_path / "ex")
    assert f"warning: {mc.PREPROCESSING_CHANGED}" in capsys.readouterr().err
    assert mc.PREPROCESSING_CHANGED in (tmp_path / "ex" / "model_card.md").read_text()
    a, b = {"commit": "a" * 40, "dirty": False}, {"commit": "b" * 40, "dirty": True}
    now = {"git": b, "preprocessing_sha256": "1" * 64}
    assert mc._preprocessing_limits(None, a, now) == [mc.PREPROCESSING_UNRECORDED]
    assert mc._preprocessing_limits("1" * 64, a, now) == []
    assert (
        "(trained at commit aaaaaaaaaaaa, written at commit bbbbbbbbbbbb with uncommitted changes)"
        in (mc._preprocessing_limits("2" * 64, a, now)[0])
    )
    assert (
        "(both at commit bbbbbbbbbbbb: its files changed since, uncommitted)"
        in (mc._preprocessing_limits("2" * 64, b, now)[0])
    )


def test_a_card_of_ones_own_cohort_says_its_task_description_is_the_default(triple_run, monkeypatch):
    """helper-60: a cohort of the user's own trained with task.* left at this package's default
    got a card stating its labels were "established by pathology after neck dissection"; the
    card now says the description is the default, not one given for the cohort."""
    import lnm_jax.model_card as mc
    from lnm_jax.config import base_config

    assert mc.DEFAULT_TASK_LIMIT not in mc.metadata(triple_run, "best")["limits"]  # synthetic: said so instead
    monkeypatch.setattr(mc, "synthetic", lambda config: False)
    md = mc.metadata(triple_run, "best")
    assert mc.DEFAULT_TASK_LIMIT in md["limits"]
    # said on the Task line itself too (helper-104: the caveat came 93 lines below the claim)
    task_line = next(line for line in mc.markdown(md).splitlines() if line.startswith("- Task:"))
    assert task_line.endswith("(this package's default description, not stated for this cohort: see Limits).")
    described = base_config()
    described.task.label_source = "histology of the dissected nodes, this hospital"
    assert mc._default_task(base_config()) and not mc._default_task(described)


def test_the_runtime_takes_a_flag_of_0_or_1_only():
    """helper-60: the Python API scored a US-LNM flag of 2, -1, 0.5 or NaN (NaN as a NaN
    probability) where the manifest's column refuses any but 0, 1 and empty; now refused alike,
    naming the row."""
    from types import SimpleNamespace

    from lnm_jax.serving import Model

    md = {
        "architecture": {"inputs": ["us_lnm"], "missing_inputs": True},
        "preprocessing": {"image_size": 8, "clip_frames": 1, "framing": {}, "zero_fill_missing": False},
    }
    model = Model(SimpleNamespace(metadata=md, inputs={"us_lnm": {"shape": ["B"], "dtype": "float32"}}), ".")
    good = [0, 1, 0.0, 1.0, np.int64(1), np.float32(0), None]
    assert model.prepare({"us_lnm": good})["us_lnm"].tolist() == [0, 1, 0, 1, 1, 0, 0]
    for bad in (2, -1, 0.5, float("nan"), True, "1"):
        with pytest.raises(
            ValueError, match=rf"us_lnm of row 1 is {re.escape(repr(bad))} \(1 such\): the flag is 0, 1"
        ):
            model.prepare({"us_lnm": [0, bad]})
    # the program's own call checks its arrays as well (helper-61: a flag of 0.5 or NaN, images of 200.0 scored)
    from lnm_jax.exported import checked_inputs

    spec = {"us_lnm": {"shape": ["B"], "dtype": "float32"}, "bmode": {"shape": ["B", 2, 2, 3], "dtype": "float32"}}
    image = np.full((1, 2, 2, 3), 0.5)
    assert checked_inputs({"us_lnm": [1.0], "bmode": image}, spec)["us_lnm"].tolist() == [1.0]
    for flag, img, said in (
        ([0.5], image, r"us_lnm holds \[0.5\]: the flag is 0 or 1"),
        ([np.nan], image, r"us_lnm holds \[nan\]"),
        ([1], image * 400, r"bmode holds values outside \[0, 1\]"),
        ([1], image * np.nan, r"bmode holds values outside \[0, 1\] or not finite"),
    ):
        with pytest.raises(ValueError, match=said):
            checked_inputs({"us_lnm": flag, "bmode": img}, spec)
    with pytest.raises(ValueError, match=r"missing inputs \['bmode'\]"):
        checked_inputs({"us_lnm": [1]}, spec)
    # an availability flag: bools, or 1/0 (helper-62: the strings "False" and "0" read as present)
    flags = {"has_bmode": {"shape": ["B"], "dtype": "bool"}}
    for good in ([True], [1], [0.0]):
        checked_inputs({"has_bmode": good}, flags)
    for bad in (["False"], [0.5], [np.nan], [-1]):
        with pytest.raises(ValueError, match="has_bmode holds .*: an availability flag is True/False"):
            checked_inputs({"has_bmode": bad}, flags)


def test_patients_scored_without_an_input_are_named_with_how(capsys):
    """predict (run or export) names the patients scored without an input and how the model
    took its place: a note where it was trained so, a warning where zeros are the user's
    opt-in alone (helper-56: a zero-filled patient was scored in silence)."""
    from types import SimpleNamespace

    from lnm_jax.serving import missing_inputs

    def patient(pid, *have):
        return SimpleNamespace(patient_id=pid, has=lambda i: i in have)

    inputs = ("bmode", "ceus", "us_lnm")
    cohort = SimpleNamespace(
        patients=[patient("A", *inputs), patient("B", "bmode", "us_lnm"), patient("C", "bmode"), patient("D", *inputs)]
    )
    for learned, zeros, said in (
        (
            True,
            False,
            "note: 2 of 4 patient(s) lack an input the model takes (ceus 2, us_lnm 1): each scored with "
            "the model's learned 'absent' embedding in its place (model.missing_inputs); B (ceus), C (ceus us_lnm) "
            "(column inputs_missing)",
        ),
        (
            False,
            True,
            "note: 2 of 4 patient(s) lack an input the model takes (ceus 2, us_lnm 1): each fed as zeros, "
            "as the model was trained (data.zero_fill_missing); B (ceus), C (ceus us_lnm)",
        ),
        (
            False,
            False,
            "warning: 2 of 4 patient(s) lack an input the model takes (ceus 2, us_lnm 1): each fed as "
            "zeros (--zero-fill-missing), which the model was not trained on: their probabilities are unreliable",
        ),
    ):
        assert missing_inputs(cohort, inputs, learned=learned, trained_on_zeros=zeros) == {
            "B": "ceus",
            "C": "ceus us_lnm",
        }
        assert said in capsys.readouterr().err
    whole = SimpleNamespace(patients=[patient("A", *inputs)])
    assert missing_inputs(whole, inputs, learned=False, trained_on_zeros=True) == {}
    assert capsys.readouterr().err == ""


def _onnxruntime_refusals_are_one_line(out):
    """An onnxruntime that cannot load ``out``'s model.onnx (its opset too new for it: 1.20.1's
    words below) or none installed: an ImportError naming the file and the requirement, which
    predict.py prints as its one error line (it had printed onnxruntime's traceback)."""
    from unittest import mock

    import onnxruntime

    said = (
        "[ONNXRuntimeError] : 1 : FAIL : Load model from model.onnx failed:/onnxruntime_src/onnxruntime/core/graph/"
        "model_load_utils.h:46 void onnxruntime::model_load_utils::ValidateOpsetForDomain(const std::unordered_map<"
        "std::string, int>&, bool, const std::string&, int) ONNX Runtime only *guarantees* support for models stamped "
        "with official released onnx opset versions. Opset 23 is under development and support for this is limited. "
        "Current official support for domain ai.onnx is till opset 21."
    )

    class Fail(Exception):  # onnxruntime.capi.onnxruntime_pybind11_state.Fail derives from Exception alone
        pass

    with mock.patch.object(onnxruntime, "InferenceSession", side_effect=Fail(said)):
        with pytest.raises(ImportError) as refused:
            load_onnx(out)
    line = str(refused.value)
    assert "\n" not in line and "onnxruntime_src" not in line, line
    assert re.fullmatch(
        rf"{re.escape(str(out / 'model.onnx'))} \(ONNX opset 21\): onnxruntime \S+ does not load it \(it runs ONNX "
        r"opsets up to 21\); this export needs onnxruntime>=1\.20",
        line,
    ), line
    # an onnxruntime older still (1.17.3) refuses the file's IR version first, in other words
    older = said.split("failed:")[0] + (
        "failed:/onnxruntime_src/onnxruntime/core/graph/model.cc:179 onnxruntime::Model::Model(onnx::ModelProto&&, "
        "const onnxruntime::logging::Logger&) Unsupported model IR version: 10, max supported IR version: 9"
    )
    with mock.patch.object(onnxruntime, "InferenceSession", side_effect=Fail(older)):
        with pytest.raises(ImportError, match=r"\(it reads ONNX IR versions up to 9, the file's is 10\); this export"):
            load_onnx(out)
    # another failure (a graph this runtime cannot run, memory) is not blamed on its version: a
    # ValueError with onnxruntime's reason, its C++ signature left out but nothing after it
    other = said.split("failed:")[0] + (
        "failed:/onnxruntime_src/onnxruntime/core/graph/graph.cc:1 void onnxruntime::Graph::Check(const "
        "onnxruntime::ModelOptions&) Node (/conv/Conv) Op (Conv) [ShapeInferenceError] shapes disagree"
    )
    with mock.patch.object(onnxruntime, "InferenceSession", side_effect=Fail(other)):
        with pytest.raises(ValueError) as failed:
            load_onnx(out)
    line = str(failed.value)
    assert line.endswith(
        "cannot load it: [ONNXRuntimeError] : 1 : FAIL : Load model from model.onnx failed: Node (/conv/Conv) "
        "Op (Conv) [ShapeInferenceError] shapes disagree"
    ), line
    assert "needs" not in line and "onnxruntime_src" not in line
    with mock.patch.dict(sys.modules, {"onnxruntime": None}), pytest.raises(ImportError, match="not installed here"):
        load_onnx(out)


def test_a_plain_install_has_what_the_stablehlo_export_needs():
    """`lnm-jax export` (StableHLO, the default) runs on `pip install -e .`: every package the
    export folder requires, but the ONNX runtime (the [onnx] extra), is a dependency of the
    package itself (flatbuffers was not: jax.export serialises with it, jax does not declare it)."""
    import re
    import tomllib
    from pathlib import Path

    from lnm_jax.export import requirements

    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
    name = lambda req: re.split(r"[<>=!~; \[]", req, maxsplit=1)[0].lower().replace("_", "-")  # noqa: E731
    declared = {name(r) for r in project["dependencies"]}
    md = {"architecture": {"inputs": list(names.INPUTS)}}
    needed = {name(r) for r in requirements(md, ("stablehlo",))}
    assert needed <= declared, needed - declared
    assert name(requirements(md, ("onnx",))[-1]) in {name(r) for r in project["optional-dependencies"]["onnx"]}


def test_every_import_of_the_runtime_is_in_its_requirements():
    """helper-98: a progress bar's ``tqdm``, imported by the manifest reader the export carries,
    was in no export's requirements.txt: a colleague's ``predict.py`` failed on it. Every
    third-party module the portable modules import (read from their source) is a requirement
    of the export that needs it."""
    from lnm_jax.export import CONDITIONAL_IMPORTS, RUNTIME_REQUIREMENTS, requirements
    from lnm_jax.portable import third_party_imports

    imports = third_party_imports()
    assert "tqdm" in imports and "numpy" in imports  # (what the reading finds)
    assert imports <= set(RUNTIME_REQUIREMENTS) | set(CONDITIONAL_IMPORTS), imports - set(RUNTIME_REQUIREMENTS)
    listed = requirements({"architecture": {"inputs": ["bmode", "ceus", "us_lnm"]}}, ("stablehlo", "onnx"))
    distributions = {"PIL": "pillow", "imageio_ffmpeg": "imageio-ffmpeg"}
    for name in imports:
        assert any(r.startswith(distributions.get(name, name)) for r in listed), (name, listed)


def test_the_runtime_returns_no_calibrated_probability_from_a_temperature_at_its_bound():
    """helper-99, helper-102: every loader of an export (``exported.load``, ``load_onnx``,
    ``lnm_runtime``'s) returned exact 0s and 1s as ``prob_calibrated`` from a temperature that
    stopped at its search bound, where predict's CSV leaves the column out: both program
    wrappers serve it as NaN; a fitted temperature's values pass unchanged."""
    from types import SimpleNamespace

    from lnm_jax import exported

    z = np.array([-3.0, 0.5, 4.0], np.float32)
    spec = {"us_lnm": {"shape": ["B"], "dtype": "float32"}, "has_us_lnm": {"shape": ["B"], "dtype": "bool"}}
    inputs = {"us_lnm": np.array([0.0, 1.0, 1.0], np.float32), "has_us_lnm": np.ones(3, bool)}

    def outputs(t):
        calibrated = (1 / (1 + np.exp(-z / t))).astype(np.float32)
        return {"logit": z, "prob": 1 / (1 + np.exp(-z)), "prob_calibrated": calibrated}

    for t, nan in ((exported.TEMPERATURE_BOUNDS[0], True), (1.5, False)):
        md = {"inputs": spec, "calibration_temperature": t, "architecture": {"missing_inputs": False}}
        program = SimpleNamespace(call=lambda weights, args, t=t: outputs(t))
        session = SimpleNamespace(run=lambda names_, feed, t=t: [outputs(t)[k] for k in names_])
        for model in (exported.ExportedModel(program, (), md), exported.OnnxModel(session, md)):
            got = model(inputs)["prob_calibrated"]
            if nan:
                assert np.isnan(got).all()
            else:
                np.testing.assert_allclose(got, 1 / (1 + np.exp(-z / 1.5)), rtol=1e-6)


def test_a_card_says_when_its_evaluation_was_made_by_other_code(triple_run):
    """helper-114: an export of a run evaluated by an earlier lnm-jax said only the card writer's
    commit (its Youden threshold described by a rule the evaluating version did not use), and a
    slope that could not be estimated read "the calibration slope - -> -". The evaluating code
    is named, and a limit says when it is not this code."""
    import lnm_jax.model_card as mc

    now = {"git": {"commit": "b" * 40, "dirty": False}}
    assert mc._evaluation_limits({"source_sha256": provenance.source_digest()}, now) == []
    assert mc._evaluation_limits(None, now) == []
    earlier = {"source_sha256": "0" * 64, "git": {"commit": "a" * 40, "dirty": False}}
    (line,) = mc._evaluation_limits(earlier, now)
    assert "(evaluated at commit aaaaaaaaaaaa, written at commit bbbbbbbbbbbb): run lnm-jax evaluate again" in line
    # an evaluation from before the source digest was kept (helper-115: taken for this code): its
    # commit tells where it is this clean commit, else it is said unknown
    undigested = {"git": {"commit": "a" * 40, "dirty": False}}
    (line,) = mc._evaluation_limits(undigested, now)
    assert "cannot compare with its own (the evaluation recorded no source digest; evaluated at commit aaaa" in line
    assert mc._evaluation_limits({"git": now["git"]}, now) == []
    (line,) = mc._evaluation_limits({"source_sha256": "1" * 64, "git": now["git"]}, now)  # one commit, other files
    assert "at this same commit bbbbbbbbbbbb (its files or these differ: uncommitted changes)" in line
    test = {"brier": 0.26, "brier_temperature_scaled": 0.3, "slope": float("nan"), "slope_temperature_scaled": None}
    text = mc.calibration_limit(0.31, {"test": test}, 13)
    assert "- -> -" not in text and "left the calibration slope unestimated" in text
    md = mc.metadata(triple_run, "best", evaluation={"splits": {}, "evaluated_by": {"git": earlier["git"]}})
    assert md["evaluated_with"] == earlier["git"]
    assert "- Evaluated with: commit aaaaaaaaaaaa (the evaluation's record)." in mc.markdown(md)


def test_text_from_a_config_or_a_cohort_stays_inside_its_line_and_cell(tiny_cohort, tmp_path):
    """helper-118: a config's ``task`` text and a manifest column's values went into the card
    raw: a ``|`` added a table column, a line break ended the table or began a heading, HTML
    reached renderers that pass it through (the card travels with exports)."""
    from lnm_jax.markdown import inline
    from lnm_jax.model_card import markdown, metadata
    from lnm_jax.protocol.cohort_table import cohort_table_markdown

    config = tiny_config(tiny_cohort, "dual")
    config.model.width = 4
    config.name = "site<b>A</b>"
    config.task.positive = "<img src=x onerror=alert(1)>"
    config.task.intended_use = "ok | broken | table\n# Injected heading\n<script>alert(1)</script>"
    md = metadata(_untrained_run(config, tmp_path / "run"))
    md["subgroups"] = [
        {"variable": "note", "level": "a | b\nc", "n": 4, "positive": 2, "auc": 0.5, "auc_ci": (0.1, 0.9)},
        {"variable": "note", "level": "<script>x</script>", "n": 4, "positive": 2, "auc": None, "auc_ci": None},
    ]
    card = markdown(md)
    lines = card.splitlines()
    assert not any(line.startswith("# Injected") for line in lines)
    assert not re.search(r"(?<!\\)<(script|img|b>)", card)  # every tag's < escaped
    assert "# Model card: site\\<b>A\\</b>" in lines
    assert "- Intended use: ok \\| broken \\| table # Injected heading \\<script>alert(1)\\</script>" in lines
    rows = [line for line in lines if line.startswith("| note |")]
    assert rows == [
        "| note | a \\| b c | 4 | 2 | 0.500 (0.100-0.900) |",
        "| note | \\<script>x\\</script> | 4 | 2 | one class |",
    ]
    table = cohort_table_markdown(
        [{"variable": "site|x", "level": "1\n2", "a": "3", "p": None, "method": ""}], {"a": ["p1"]}
    )
    assert table.splitlines()[2] == "| site\\|x | 1 2 | 3 |  |  |"
    assert inline("C:\\data\\|x`y`") == "C:\\\\data\\\\\\|x\\`y\\`"  # an escape in the text is not undone
    # no link or image (helper-119: an image fetched from the sender's site), no emphasis; age_group as written
    assert inline("![x](https://a.example/p.png) **b** _e_ age_group") == (
        "!\\[x\\](https://a.example/p.png) \\*\\*b\\*\\* \\_e\\_ age_group"
    )
