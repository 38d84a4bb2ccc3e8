"""Scoring patients with an exported model, without this package's training code.

This module and what it imports (names, fileio, exported, the manifest reader, the pixel
decoders, the patient record, the intensity check) need only numpy, Pillow and pydicom (and
imageio-ffmpeg for video clips); ``lnm-jax export`` copies them (found from the imports,
:func:`lnm_jax.portable.portable_modules`), unchanged but for the package name, into the export
folder as ``lnm_runtime``, beside a ``predict.py`` that calls :func:`main`. The folder
therefore decodes, frames and resizes an image with the very code that trained the model,
and ``lnm-jax predict --exported`` runs the same functions as the folder's own script.

From Python, with the folder on ``sys.path``::

    from lnm_runtime import load
    model = load()                                     # the folder it sits in; format="onnx" too
    out = model.predict({"bmode": ["a.png", img], "ceus": ["a.dcm", None], "us_lnm": [1, 0]})
    out["prob"], out["prob_calibrated"], out["logit"]  # each [B] float32
    out["intensity_outlier"]  # [B] str: inputs far outside the training intensities ('' none)

Each image entry is a file path (PNG/JPEG, DICOM, a clip: decoded, cropped to its scan region
and framed as in training) or an array already cropped to the scan region (uint8 scaled by
1/255, uint16 by 1/65535, float taken as [0, 1]; [H, W], [H, W, 1|3|4] or a clip [T, H, W, C]),
or None where the patient has no such image (a model not trained for missing inputs then
refuses). The flag is 0/1 or None.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np

from lnm_jax import names, text_encoding
from lnm_jax.data.cohorts.inputs import lacking, refuse_missing
from lnm_jax.data.cohorts.manifest import read_manifest
from lnm_jax.data.pixels import clips
from lnm_jax.data.pixels.decode import fit, over_black
from lnm_jax.data.pixels.sources import Framing, decode_input
from lnm_jax.data.records import decode_patient
from lnm_jax.evaluation import intensity
from lnm_jax.exported import (  # noqa: F401  (TEMPERATURE_BOUNDS and at_bound importable from here too)
    METADATA,
    PREDICT_SCRIPT,
    TEMPERATURE_BOUNDS,
    at_bound,
    load_onnx,
    takes_absent_inputs,
)
from lnm_jax.exported import load as load_program
from lnm_jax.fileio import check_seal, read_json, write_csv
from lnm_jax.output_guard import csv_header_starts, guard_output
from lnm_jax.run_files import METRICS  # (external-validation's record: read by --site-update)

PREDICTION_COLUMNS = (names.PATIENT_ID, "prob_lnm")  # how predict's own CSV starts
FORMATS = names.EXPORT_FORMATS  # (the one definition; names is copied with this module)


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-np.asarray(z, np.float64)))


# the column of a site's updated probability, sigmoid(a + b * logit) (:func:`read_site_update`)
SITE_COLUMN = "prob_lnm_site"


@dataclasses.dataclass(frozen=True)
class SiteUpdate:
    """The update ``sigmoid(intercept + slope * logit)`` external validation fitted on a site's
    labelled patients (``method``: one of :data:`lnm_jax.names.UPDATE_METHODS`; ``chosen_by``:
    "closed test" or "given"), and what it was fitted on, said."""

    intercept: float
    slope: float
    method: str
    chosen_by: str  # "closed test", "given", or "earlier record" (one written before the choice was kept)
    fitted_on: str
    said: str | None = None  # the record's note (a logistic update asked for, the intercept's taken: why)
    events: int | None = None  # the site's patients of its smaller class the update was fitted on

    def __call__(self, logit: float) -> float:
        """The site's probability of a patient whose model logit is ``logit``."""
        return float(sigmoid(self.intercept + self.slope * logit))

    def note(self) -> str:
        """The note ``predict`` gives with :data:`SITE_COLUMN`."""
        how = {"closed test": "chosen by the closed test", "given": "as asked"}.get(
            self.chosen_by, "an earlier lnm-jax's record"
        ) + (f": {self.said}" if self.said else "")
        if self.said and self.chosen_by == "given":  # another update than the one asked for (helper-116)
            how = f"not the update asked for: {self.said}"
        if self.method == "none":
            return (
                f"{SITE_COLUMN}: equals prob_lnm: for the site of {self.fitted_on} the closed test kept the model as "
                "it is (no update these patients support)"
                if self.chosen_by == "closed test"
                else f"{SITE_COLUMN}: equals prob_lnm (update 'none', as asked, for {self.fitted_on})"
            )
        formula = (
            f"sigmoid(logit {self.intercept:+.3f}), the intercept update"
            if self.method == "intercept"
            else f"sigmoid({self.intercept:+.3f} + {self.slope:.3f} * logit), the logistic recalibration"
        )
        few = (
            f"; fitted on {self.events} patient(s) of a class, fewer than {FEW_EVENTS}: an update that rests on so "
            "few moves with each one (its CI is in external validation's record)"
            if self.events is not None and self.events < FEW_EVENTS
            else ""
        )  # (helper-120: one event in 8 patients, applied with no word)
        return (
            f"{SITE_COLUMN}: {formula} ({how}) fitted on {self.fitted_on}: the site's risks, ranking unchanged; the "
            f"card's cut-offs are not this column's (choose one on the site's patients){few}"
        )


# a site update fitted on fewer patients of its smaller class than this is said to rest on few
FEW_EVENTS = 10


def read_site_update(path: Path | str, state: str | None) -> SiteUpdate:
    """The :class:`SiteUpdate` of ``lnm-jax external-validation``'s record at ``path`` (its
    ``--out`` folder or the ``metrics.json`` in it), for ``predict --site-update`` to apply to
    the site's next patients (Steyerberg, *Clinical Prediction Models*, ch. 20); a record written
    before ``site_update`` was kept gives its intercept update. ValueError in one line: a record
    that is not external validation's, edited (its seal), without a finite update, or of another
    model state than ``state`` (the model scoring), or where either state is not known."""
    path = Path(path)
    file = path / METRICS if path.is_dir() else path
    if path.is_dir() and not file.is_file():  # (helper-116: "siteC/metrics.json: No such file or directory")
        raise ValueError(f"{path} holds no {METRICS}: give the --out folder of lnm-jax external-validation")
    record = read_json(file, remedy="give the --out folder of lnm-jax external-validation")
    if "intercept_update" not in record or "site" not in record:
        raise ValueError(f"{file}: not lnm-jax external-validation's metrics.json (no intercept_update)")
    check_seal(record, file, remedy="run lnm-jax external-validation again", strict=True)
    theirs = record.get(names.STATE_DIGEST)
    if not (state and theirs):  # (helper-108: a record without one had been applied to any model)
        raise ValueError(
            f"{file}: "
            + ("names no model state" if not theirs else "is for a model state, and this model's is not known")
            + ": an update holds only for the model whose logits it was fitted to, which cannot be told here"
        )
    if theirs != state:
        raise ValueError(
            f"{file}: fitted for the model state {theirs[:12]}..., not this model's {state[:12]}...: an update "
            "holds for the model whose logits it was fitted to"
        )
    if "site_update" in record:  # (a record of an lnm-jax before it: the intercept update, below)
        u = record["site_update"]
        if u is None:
            raise ValueError(f"{file}: holds no site update: its fits did not converge on the site's patients")
        a, b, method, chosen_by, said = (u.get(k) for k in ("intercept", "slope", "method", "chosen_by", "note"))
    else:
        a, b, method, chosen_by, said = record["intercept_update"], 1.0, "intercept", "earlier record", None
    if method not in names.UPDATE_METHODS or not all(isinstance(v, (int, float)) and np.isfinite(v) for v in (a, b)):
        raise ValueError(f"{file}: the site update is {a!r}, {b!r} ({method!r}): the site's patients gave no update")
    site = record["site"]
    fitted_on = f"{site['n']} patients ({site['n_positive']} positive) of {record.get('predictions', file)}"
    events = min(int(site["n_positive"]), int(site["n"]) - int(site["n_positive"]))
    said = said if isinstance(said, str) else None
    return SiteUpdate(float(a), float(b), method, str(chosen_by), fitted_on, said, events)


SITE_UPDATE_HELP = (
    f"the --out folder of lnm-jax external-validation on this site's labelled patients: adds {SITE_COLUMN}, "
    "sigmoid(a + b * logit) with the update it fitted"
)


def guard_predictions(out_csv: Path | str, cohort, model_dir: Path | str, overwrite: bool) -> None:
    """Refuses ``predict --out`` onto the manifest, an image, a clip folder or the model's
    folder, or onto an existing file that is not an earlier prediction (unless ``overwrite``),
    before anything is scored (:func:`lnm_jax.output_guard.guard_output`)."""
    guard_output(
        out_csv,
        inputs=[*cohort.files(), model_dir],
        overwrite=overwrite,
        ours=lambda p: p.is_file() and csv_header_starts(p, PREDICTION_COLUMNS),
    )


def missing_inputs(cohort, inputs, *, learned: bool, trained_on_zeros: bool) -> dict[str, str]:
    """The inputs among ``inputs`` each patient of ``cohort`` lacks (patient id -> their names,
    space-separated; only patients who lack one), said on stderr in one line with how the model
    scores them: its learned 'absent' embedding in their place (``learned``: trained with
    ``model.missing_inputs``), zeros as it was trained on (``trained_on_zeros``:
    ``data.zero_fill_missing``), or zeros it never saw (the user's ``--zero-fill-missing``
    alone: a warning, as those probabilities are unreliable)."""
    missing = {i: set(ids) for i, ids in lacking(inputs, cohort).items()}  # input -> who lacks it
    lack = {p.patient_id: " ".join(i for i in missing if p.patient_id in missing[i]) for p in cohort.patients}
    lack = {pid: which for pid, which in lack.items() if which}
    if not lack:
        return lack
    if learned:
        level, how = (
            "note",
            "each scored with the model's learned 'absent' embedding in its place (model.missing_inputs)",
        )
    elif trained_on_zeros:
        level, how = "note", "each fed as zeros, as the model was trained (data.zero_fill_missing)"
    else:
        level, how = (
            "warning",
            (
                "each fed as zeros (--zero-fill-missing), which the model was not trained on: their probabilities are "
                "unreliable"
            ),
        )
    first = ", ".join(f"{pid} ({which})" for pid, which in list(lack.items())[:3]) + ", ..." * (len(lack) > 3)
    print(
        f"{level}: {len(lack)} of {len(cohort.patients)} patient(s) lack an input the model takes ("
        + ", ".join(f"{i} {len(ids)}" for i, ids in missing.items())
        + f"): {how}; {first} (column inputs_missing)",
        file=sys.stderr,
    )
    return lack


def write_predictions(
    cohort,
    logits: dict,
    calibrated: dict | None,
    out_csv: Path | str,
    flagged: dict | None = None,
    lacking: dict[str, str] | None = None,
    state: str | None = None,
    seen: dict[str, str] | None = None,
    site_update: SiteUpdate | None = None,
) -> Path:
    """``predict``'s CSV: one row per patient of ``cohort`` in manifest order, the probability
    (and, with ``calibrated``, each patient's calibrated one: ``sigmoid(logit / T)`` as the
    model computes it, :func:`calibrated_probabilities`), the class at 0.5,
    the label if known, (with the training intensities known) ``intensity_outlier``: the
    inputs of that patient far outside them (:mod:`lnm_jax.evaluation.intensity`), and (where
    any patient lacks an input, ``lacking``: :func:`missing_inputs`) ``inputs_missing``: the
    inputs that patient was scored without; ``state`` (the SHA-256 of the checkpoint's arrays the
    model is, :data:`names.STATE_DIGEST`), in every row as ``model_state_sha256``: the model a
    probability came from, as the card and an export's metadata name it; with ``seen`` (a run's
    predictions: :func:`lnm_jax.evaluation.seen.seen_patients`), :data:`names.SEEN_COLUMN`: the
    run's subset (``train``, ``val``) a patient is one of, empty for patients it has not seen;
    with ``site_update`` (:func:`read_site_update`), :data:`SITE_COLUMN`: the site's probability."""
    rows = []
    for q in cohort.patients:
        z = logits[q.patient_id]
        pr = float(sigmoid(z))
        row = {names.PATIENT_ID: q.patient_id, "prob_lnm": f"{pr:.6f}"}
        if calibrated is not None:
            row["prob_lnm_calibrated"] = f"{float(calibrated[q.patient_id]):.6f}"
        if site_update is not None:
            row[SITE_COLUMN] = f"{site_update(z):.6f}"
        row.update({"pred_at_0.5": int(pr >= 0.5), names.LABEL: "" if q.lnm is None else q.lnm})
        if flagged is not None:
            row["intensity_outlier"] = outlier_inputs(flagged, q.patient_id)
        if lacking:
            row["inputs_missing"] = lacking.get(q.patient_id, "")
        if state:
            row[names.MODEL_STATE_COLUMN] = state
        if seen is not None:
            row[names.SEEN_COLUMN] = seen.get(q.patient_id, "")
        rows.append(row)
    out_csv = Path(out_csv)
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    write_csv(out_csv, rows, list(rows[0]))
    return out_csv


def outlier_inputs(flagged: dict, patient_id: str) -> str:
    """The inputs of ``patient_id`` that :func:`lnm_jax.evaluation.intensity.outliers` flagged,
    space-separated ('' for none): the ``intensity_outlier`` column."""
    return " ".join(sorted({w.split(" ")[0] for w in flagged.get(patient_id, [])}))


# why predict writes no prob_lnm_calibrated column for a temperature at its bound (helper-92: the column
# had been written beside evaluate's "do not use it", the card calling the probabilities calibrated)
AT_BOUND_NOTE = (
    "no prob_lnm_calibrated column: the calibration temperature stopped at its search bound (T = {t:.3g}): no "
    "finite temperature fits the validation logits (the model card's warnings say why: they separate the classes "
    "at 0, sum no higher over the positives than over the negatives, are far too small or too large, or hold one "
    "value), and such probabilities sit near 0.5 or 0/1"
)


def calibrated_probabilities(logits: dict, temperature: float | None) -> dict | None:
    """``{patient: sigmoid(logit / temperature)}``, None without a temperature."""
    return None if temperature is None else {k: float(sigmoid(z / temperature)) for k, z in logits.items()}


# the largest difference between the program's prob_calibrated and sigmoid(logit / T) with the
# metadata's T that float32 arithmetic explains (a [0, 1] value: float32's spacing is 6e-8 there)
CALIBRATION_ATOL = 1e-5


def check_temperature(model, out: dict) -> None:
    """ValueError where ``model``'s program computed ``prob_calibrated`` with another temperature
    than its ``metadata.json`` states (an edited metadata: the CSV and the Python API had given
    two calibrated probabilities for one patient, helper-84), seen where the logits make them
    differ; a program exported without a temperature computes with 1."""
    stated = model.metadata.get("calibration_temperature")
    if stated is not None and at_bound(float(stated)):  # served as NaN (lnm_jax.exported.served): nothing to compare
        return
    want = sigmoid(np.asarray(out["logit"], np.float64) / (1.0 if stated is None else float(stated)))
    gap = float(np.abs(np.asarray(out["prob_calibrated"], np.float64) - want).max(initial=0.0))
    if gap > CALIBRATION_ATOL:
        raise ValueError(
            f"{model.folder}/{METADATA}: calibration_temperature {stated} is not the temperature of the program, whose "
            f"prob_calibrated differs from sigmoid(logit / {stated}) by up to {gap:.3g}: the folder was changed since "
            "its export; export it again"
        )


def intensity_check(ref: dict | None, features: dict, total: int, where: str) -> dict | None:
    """Outliers against the training intensities, warned on stderr; None without a reference
    (a run or export made before they were recorded, or its file deleted), said on stderr in
    one line naming ``where`` the reference would be."""
    if ref is None:
        print(
            f"warning: no training intensity reference in {where}: the images are not checked for intensities "
            "the model never saw (no intensity_outlier column)",
            file=sys.stderr,
        )
        return None
    flagged = intensity.outliers(ref, features)
    for line in intensity.warning_lines(flagged, total):
        print(line, file=sys.stderr)
    return flagged


def unit_rgb(array) -> np.ndarray:
    """An image array as float32 [..., H, W, 3] in [0, 1], as the decoder gives a file: uint8 by
    1/255, uint16 by 1/65535, float taken as [0, 1] (ValueError outside it), gray replicated,
    an alpha channel (grey + alpha: 2 channels; RGBA: 4) composited over black as a file's is
    (:func:`lnm_jax.data.pixels.decode.over_black`). [H, W] and [H, W, 1] are gray; a leading
    axis is a clip's frames ([T, H, W] grey frames: never 2 pixels wide, which is grey + alpha,
    nor 1, 3 or 4 frames, which is a picture channel-first: ValueError, helper-84's (3, H, W)
    PyTorch-layout picture had been read as a clip of its three channels)."""
    a = np.asarray(array)
    if a.dtype == np.uint8:
        a = a.astype(np.float32) / np.float32(255.0)
    elif a.dtype == np.uint16:
        a = a.astype(np.float32) / np.float32(65535.0)
    elif a.dtype.kind == "f":
        a = a.astype(np.float32)
        if a.size and (not np.all(np.isfinite(a)) or a.min() < 0.0 or a.max() > 1.0):
            raise ValueError("a float image must hold values in [0, 1] (uint8 and uint16 arrays are scaled)")
    else:
        raise ValueError(f"image arrays must be uint8, uint16 or float in [0, 1], not {a.dtype}")
    if a.ndim >= 3 and a.shape[-1] in (1, 2, 3, 4):
        if a.shape[-1] == 4:
            a = over_black(a)
        elif a.shape[-1] == 2:  # grey + alpha, as a file's (helper-61: read as a clip of frames 2 pixels wide)
            a = over_black(np.concatenate([np.repeat(a[..., :1], 3, axis=-1), a[..., 1:]], axis=-1))
        elif a.shape[-1] == 1:
            a = a[..., 0]
        if a.ndim >= 3 and a.shape[-1] == 3:
            return a
    if a.ndim not in (2, 3):
        raise ValueError(f"an image array is [H, W], [H, W, C] or a clip [T, H, W, C], not shape {np.shape(array)}")
    if a.ndim == 3 and a.shape[0] in (1, 3, 4):
        raise ValueError(
            f"an image array of shape {np.shape(array)} reads as channel-first (PyTorch's layout) or as "
            f"{a.shape[0]} grey frames: give a picture as [H, W, C] (numpy.moveaxis(a, 0, -1)), a clip as [T, H, W, C]"
        )
    return np.repeat(a[..., None], 3, axis=-1)


class Model:
    """An exported model with its preprocessing: :meth:`predict` takes images (paths or
    arrays), :meth:`__call__` the program's own arrays (``inputs``: name -> shape, dtype)."""

    def __init__(self, program, folder: Path):
        self.program, self.folder = program, Path(folder)
        self.metadata = program.metadata
        pre = self.metadata.get("preprocessing", self.metadata)  # exports before the section: top level
        self.image_size, self.clip_frames = int(pre["image_size"]), int(pre["clip_frames"])
        self.framing = Framing(**pre.get("framing", {}))
        self.model_inputs = list(self.metadata["architecture"]["inputs"])
        # a patient may lack an input: the model learned absent inputs, or was trained on zeros for them
        self.learned_absent = bool(self.metadata["architecture"]["missing_inputs"])
        self.trained_on_zeros = bool(pre.get("zero_fill_missing", False))
        self.missing_inputs = takes_absent_inputs(self.metadata)

    @property
    def inputs(self) -> dict[str, dict]:
        return self.program.inputs

    def __call__(self, arrays: dict, *, zero_fill_missing: bool = False) -> dict[str, np.ndarray]:
        """The program on its own arrays; a ``has_*`` false only where the model was trained for
        missing inputs, or with ``zero_fill_missing`` (zeros it never saw). ValueError where its
        ``prob_calibrated`` shows another temperature than the metadata's
        (:func:`check_temperature`). ``prob_calibrated`` is NaN where that temperature stopped at
        its search bound (the program's loaders see to it: :func:`lnm_jax.exported.served`)."""
        out = self.program(arrays, zero_fill_missing=zero_fill_missing)
        check_temperature(self, out)
        return out

    def _image(self, entry, name: str, row: int) -> np.ndarray:
        s, t = self.image_size, self.clip_frames
        if isinstance(entry, str | Path):
            return decode_input(Path(entry), name, size=s, patient_id=f"#{row}", clip_frames=t, framing=self.framing)
        if self.framing.field_of_view_mm > 0:
            raise ValueError(
                f"{name} #{row}: this model resamples images to {self.framing.field_of_view_mm:g} mm across, which "
                "needs the pixel spacing: pass the file (DICOM carries it), not an array"
            )
        img = unit_rgb(entry)
        if img.ndim == 4:  # a clip: the frames training samples (the peak frame for one)
            if name != names.CEUS:
                raise ValueError(f"{name} #{row}: a clip [T, H, W, C] is read for ceus only")
            curve = img.mean(axis=(1, 2, 3), dtype=np.float64)
            clips.check_length(f"{name} #{row}", len(curve), t)
            frames = np.stack([fit(f, s, None, 0.0) for f in img[clips.sample_indices(curve, t)]])
            return frames[0] if t == 1 else frames
        out = fit(img, s, None, 0.0)
        return np.repeat(out[None], t, axis=0) if name == names.CEUS and t > 1 else out

    def prepare(self, images: dict, *, zero_fill_missing: bool = False) -> dict[str, np.ndarray]:
        """The program's input arrays from ``images`` (input name -> a list over patients of a
        path, an array or None; ``us_lnm`` -> 0/1/None); ValueError naming the input and row.
        None is refused unless the model was trained for missing inputs or ``zero_fill_missing``
        (the CLI's ``--zero-fill-missing``: zeros in its place, which the model never saw)."""
        if unknown := sorted(set(images) - set(self.model_inputs)):
            raise ValueError(f"unknown input(s) {unknown}; this model takes {self.model_inputs}")
        if missing := [m for m in self.model_inputs if m not in images]:
            raise ValueError(f"no {missing} given; this model takes {self.model_inputs} (None for an absent one)")
        sizes = {len(v) for v in images.values()}
        if len(sizes) != 1:
            raise ValueError(f"every input needs one entry per patient; got lengths {sorted(sizes)}")
        (n,) = sizes
        out = {}
        for m in self.model_inputs:
            entries = list(images[m])
            present = [e is not None for e in entries]
            if not (self.missing_inputs or zero_fill_missing) and not all(present):
                raise ValueError(
                    f"{m} is None for row(s) {[i for i, p in enumerate(present) if not p][:10]}: this model was not "
                    "trained for missing inputs; zero_fill_missing=True scores it on zeros all the same"
                )
            if m == names.US_LNM:
                if bad := [(i, e) for i, e in enumerate(entries) if e is not None and not _is_flag(e)]:
                    i, e = bad[0]  # (helper-60: 2, -1, 0.5 and NaN had been scored, NaN as a NaN probability)
                    raise ValueError(
                        f"us_lnm of row {i} is {e!r} ({len(bad)} such): the flag is 0, 1 or None (absent), as the "
                        "manifest's us_lnm column"
                    )
                out[m] = np.array([float(e) if e is not None else 0.0 for e in entries], np.float32)
            else:
                shape = tuple(d for d in self.inputs[m]["shape"][1:])
                out[m] = np.stack(
                    [
                        self._image(e, m, i) if e is not None else np.zeros(shape, np.float32)
                        for i, e in enumerate(entries)
                    ]
                ).reshape((n, *shape))
            out[names.has(m)] = np.array(present, bool)
        return out

    def predict(self, images: dict, batch_size: int = 32, *, zero_fill_missing: bool = False) -> dict[str, np.ndarray]:
        """``{logit, prob, prob_calibrated}``, each float32 [B], for ``images`` (see
        :meth:`prepare`), in batches of ``batch_size``; with the training intensities known,
        ``intensity_outlier`` too: str [B], the inputs of each patient far outside them, as
        ``predict``'s column of that name (helper-84: an unscaled 16-bit array had been scored in
        silence, where the same pixels as a file were flagged)."""
        arrays = self.prepare(images, zero_fill_missing=zero_fill_missing)
        n = len(next(iter(arrays.values())))
        z = zero_fill_missing
        parts = [
            self({k: v[i : i + batch_size] for k, v in arrays.items()}, zero_fill_missing=z)
            for i in range(0, n, batch_size)
        ]
        out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        if (ref := self.metadata.get("intensity_reference")) is not None:
            ids = np.array([str(i).encode() for i in range(n)])
            batch = {**arrays, names.PATIENT_ID: ids, names.VALID: np.ones(n, bool)}
            flagged = intensity.outliers(ref, intensity.features_of([batch], IDENTITY_NORM, self.model_inputs))
            out["intensity_outlier"] = np.array([outlier_inputs(flagged, str(i)) for i in range(n)])
        return out


def _is_flag(value) -> bool:
    """Whether ``value`` is a US-LNM flag: the number 0 or 1 (int or float, numpy's too), not a
    bool, a string or NaN."""
    return (
        isinstance(value, int | float | np.integer | np.floating)
        and not isinstance(value, bool | np.bool_)
        and (value in (0, 1))
    )


def load(folder: Path | str, format: str = "stablehlo", fingerprint: str | None = None) -> Model:  # noqa: A002
    """An exported folder's model (its checksums and weights verified first; against the
    export's published ``fingerprint`` where given: :func:`lnm_jax.exported.fingerprint`).
    ``format``: the CLI's word, stablehlo or onnx."""
    if format not in FORMATS:
        raise ValueError(f"format {format!r} is not one of {FORMATS}")
    if format == "stablehlo":
        program = load_program(folder, fingerprint=fingerprint)
    else:
        program = load_onnx(folder, fingerprint=fingerprint)
    return Model(program, Path(folder))


# the normalisation of decoded_batches' images: none (they are in [0, 1])
IDENTITY_NORM = {k: {"mean": (0.0,) * 3, "std": (1.0,) * 3} for k in names.IMAGE_INPUTS}


def decoded_batches(
    cohort, image_size: int, clip_frames: int, framing: Framing, batch_size: int = 32, inputs=names.IMAGE_INPUTS
):
    """``cohort``'s patients decoded as training decodes one
    (:func:`lnm_jax.data.records.decode_patient`; the image ``inputs`` only, the model's), in
    manifest order, as batches of numpy arrays in [0, 1] (:data:`IDENTITY_NORM`) with
    ``patient_id`` and ``valid``."""
    for start in range(0, len(cohort.patients), batch_size):
        chunk = cohort.patients[start : start + batch_size]
        records = [decode_patient(p, image_size, clip_frames, framing, inputs=inputs) for p in chunk]
        batch = {k: np.stack([r[k] for r in records]) for k in records[0]}
        yield {**batch, names.VALID: np.ones(len(chunk), bool)}


def intensity_lines(cohort, reference: dict, inputs, image_size: int, clip_frames: int, framing: Framing) -> list[str]:
    """The warnings ``predict`` gives ``cohort`` against a run's training intensities
    (``reference``), for ``validate --workdir``: it had said OK where predict then warned of
    every patient (helper-84: B-mode and CEUS columns swapped, an image dimmed or inverted)."""
    batches = decoded_batches(cohort, image_size, clip_frames, framing, inputs=inputs)
    flagged = intensity.outliers(reference, intensity.features_of(batches, IDENTITY_NORM, inputs))
    return intensity.warning_lines(flagged, len(cohort), consequence=intensity.TO_PREDICT)


def predict_manifest(
    model: Model,
    manifest: Path | str,
    out_csv: Path | str,
    *,
    zero_fill_missing: bool = False,
    overwrite: bool = False,
    batch_size: int = 32,
    site_update: Path | str | None = None,
) -> Path:
    """``predict``'s CSV for every patient of ``manifest`` (labels optional), in manifest order,
    scored by an exported ``model``: each patient decoded as training decodes one
    (:func:`lnm_jax.data.records.decode_patient`), the training intensities checked; with
    ``site_update`` (external validation's record, :func:`read_site_update`), the site's
    updated probability too."""
    cohort = read_manifest(
        manifest,
        require_labels=False,
        min_clip_frames=model.clip_frames,
        framing=model.framing,
        inputs=model.model_inputs,  # a B-mode model's site needs no CEUS column
    )
    guard_predictions(out_csv, cohort, model.folder, overwrite)
    state = ((model.metadata.get("export") or {}).get("source") or {}).get(names.STATE_DIGEST)
    update = read_site_update(site_update, state) if site_update is not None else None
    if not (model.missing_inputs or zero_fill_missing):
        refuse_missing(cohort, model.model_inputs, f"{model.folder}", "--zero-fill-missing")
    lacking = missing_inputs(
        cohort, model.model_inputs, learned=model.learned_absent, trained_on_zeros=model.trained_on_zeros
    )
    logits = {}
    batches = decoded_batches(
        cohort, model.image_size, model.clip_frames, model.framing, batch_size, inputs=model.model_inputs
    )
    tapped, features = intensity.tap(batches, IDENTITY_NORM, model.model_inputs)
    calibrated = {}
    for batch in tapped:
        out = model({k: batch[k] for k in model.inputs}, zero_fill_missing=zero_fill_missing)
        ids = [pid.decode() for pid in batch[names.PATIENT_ID]]
        logits.update(zip(ids, map(float, out["logit"])))
        calibrated.update(zip(ids, map(float, out["prob_calibrated"])))  # the program's, as the Python API's
    flagged = intensity_check(
        model.metadata.get("intensity_reference"), features, len(cohort), f"the metadata of {model.folder}"
    )
    for warning in model.metadata.get("warnings", []):  # what evaluate found about this model
        print(f"warning (model card): {warning}", file=sys.stderr)
    fitted = model.metadata.get("calibration_temperature") is not None
    if fitted and at_bound(model.metadata["calibration_temperature"]):
        print(f"note: {AT_BOUND_NOTE.format(t=model.metadata['calibration_temperature'])}", file=sys.stderr)
        fitted = False
    if update is not None:
        print(f"note: {update.note()}", file=sys.stderr)
    return write_predictions(
        cohort, logits, calibrated if fitted else None, out_csv, flagged, lacking, state, site_update=update
    )


def main(argv=None, folder: Path | str | None = None) -> int:
    """``python DIR/predict.py --manifest M --out probs.csv``: the columns of ``lnm-jax
    predict``. Bad input: one line on stderr, exit 2."""
    p = argparse.ArgumentParser(
        prog=PREDICT_SCRIPT,
        description="Score every patient of a manifest CSV with this exported model (columns patient_id, "
        "bmode, ceus, us_lnm as for lnm-jax; paths relative to the manifest).",
    )
    if folder is None:
        p.add_argument("--model", type=Path, required=True, help="the exported folder")
    p.add_argument("--manifest", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path, help="the predictions CSV to write")
    p.add_argument("--format", choices=FORMATS, default="stablehlo", help="which program runs it (onnx: onnxruntime)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--zero-fill-missing", action="store_true", help="feed an input a patient lacks as zeros")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier predictions CSV at --out")
    p.add_argument("--fingerprint", help=names.FINGERPRINT_HELP)
    p.add_argument("--site-update", type=Path, help=SITE_UPDATE_HELP)
    text_encoding.tolerant_console()  # (no checkpoint library here: a locale's own file names are read as such)
    a = p.parse_args(argv)
    try:
        model = load(folder if folder is not None else a.model, a.format, a.fingerprint)
        out = predict_manifest(
            model,
            a.manifest,
            a.out,
            zero_fill_missing=a.zero_fill_missing,
            overwrite=a.overwrite,
            batch_size=a.batch_size,
            site_update=a.site_update,
        )
    except (ValueError, OSError, ImportError) as e:  # a manifest's problems: one line each
        said = text_encoding.encoding_error_line(e) if isinstance(e, UnicodeError) else str(e).strip()
        print(f"predict.py: error: {said or type(e).__name__}", file=sys.stderr)
        return 1  # as lnm-jax for bad input; 2 is a usage error (argparse)
    n = sum(1 for _ in out.open(encoding="utf-8")) - 1
    print(f"wrote {n} predictions to {out}")
    return 0


__all__ = ["Model", "load", "main", "predict_manifest", "unit_rgb"]
