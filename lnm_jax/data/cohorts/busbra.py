"""BUS-BRA (Gomez-Flores et al., Medical Physics 2024) as a cohort manifest.

The public release holds ``Images/bus_NNNN-{l,r,s}.png`` and ``bus_data.csv`` (one row per
image: ``ID, Case, Histology, Pathology, BIRADS, Device, ...``). It is the public cohort
closest in structure to the paper's: two views of one lesion, a biopsy-proven label and a
radiologist's reading. Mapping, per patient (``Case``): view ``-l`` -> ``bmode``, view ``-r``
-> ``ceus`` (the two image branches), BI-RADS >= 4 -> ``us_lnm`` (the clinical flag),
malignant -> ``lnm`` = 1. Single-view patients (``-s``) get that image as ``bmode`` and an
empty ``ceus``. Histology, BIRADS and Device are kept as metadata. Where the release has
``Masks/mask_NNNN-{l,r,s}.png`` (the ultrasonographer's lesion outline), it fills the
``bmode_mask`` / ``ceus_mask`` columns: the reference Grad-CAM is scored against, never a model
input. Images are referenced, not copied (paths relative to the manifest).
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

from lnm_jax.data.cohorts.manifest import write_manifest
from lnm_jax.data.cohorts.tables import (
    TableTextError,
    data_rows,
    delimiter_hint,
    repeated_columns,
    table_reader,
    table_text,
)
from lnm_jax.fileio import problems_text
from lnm_jax.names import BMODE, CEUS, LABEL, MASK_COLUMNS, PATIENT_ID, US_LNM, mask
from lnm_jax.output_guard import guard_output

PATHOLOGY = {"malignant": 1, "benign": 0}
VIEW = {"l": BMODE, "r": CEUS, "s": BMODE}
METADATA = ("Histology", "BIRADS", "Device")
SAME_FOR_ALL_VIEWS = ("Histology", "Device")  # a patient's, told again on each view's row
# a BI-RADS category: 4, 4.0 (as a float column writes it), 4a-4c (the ACR's subcategories of 4)
BIRADS = re.compile(r"([0-6])(?:\.0+|(?<=4)[abc])?", re.IGNORECASE)
COLUMNS = ("ID", "Pathology", "BIRADS")  # what the mapping reads

# BUS-BRA dev's per-view statistics at 80 px (`lnm-jax norm-stats --manifest M --image-size 80`,
# the training split of seed 0; grayscale, so one value per channel), for its configs.
NORM = {
    BMODE: {"mean": (0.327657,) * 3, "std": (0.184627,) * 3},
    CEUS: {"mean": (0.320388,) * 3, "std": (0.183157,) * 3},
}


# What a BUS-BRA model predicts (the ``task`` config section, lnm_jax/task.py), for its configs.
TASK = {
    "name": "malignancy of a breast lesion",
    "label": "malignant",
    "positive": "malignant",
    "negative": "benign",
    "label_source": "biopsy (histopathology), or follow-up for some benign lesions (BUS-BRA's Pathology column)",
    "flag": "BI-RADS>=4",
    "flag_meaning": "the radiologist's BI-RADS category is 4 or 5 (1) or 2-3 (0)",
    "inputs": {
        BMODE: "BUS-BRA view -l (or the single view -s): B-mode breast ultrasound",
        CEUS: "BUS-BRA view -r: a second B-mode view of the lesion (not contrast-enhanced)",
    },
    "intended_use": "Research only: studying the multimodality method on public breast ultrasound (P(malignant)).",
    "out_of_scope": "Clinical decisions; screening; thyroid or lymph node questions; scanners other than BUS-BRA's.",
    "licence": "code Apache-2.0; weights under BUS-BRA's MIT-style terms (its LICENSE.txt): cite the BUS-BRA article",
    "references": [
        "Gomez-Flores W, Gregorio-Calas MJ, Pereira WCA. BUS-BRA: a breast ultrasound dataset for assessing "
        "computer-aided diagnosis systems. Medical Physics",
    ],
}


def configured(config, name: str):
    """``config`` (a ConfigDict) set for BUS-BRA as its configs run it, named ``name``: its norm and
    task (above), and single-view patients' second view ('ceus') fed as zeros, as the project's
    BUS-BRA figures were measured (model.missing_inputs learns it instead)."""
    from ml_collections import ConfigDict  # noqa: PLC0415

    config.name = name
    config.data.norm = ConfigDict(NORM)
    config.task = ConfigDict(TASK)
    config.data.zero_fill_missing = True
    return config


def _as_read(rec: dict) -> dict:
    """A row's cells as this converter reads them (spaces around a cell and letter case do not
    count): two rows alike so are one row given twice."""
    return {k: (v or "").strip().casefold() for k, v in rec.items() if k is not None}


def convert_busbra(src: Path | str, out_csv: Path | str, *, overwrite: bool = False) -> dict[str, int]:
    """Writes the manifest; returns counts. Raises ValueError naming the row on bad input;
    :class:`lnm_jax.fileio.OutputPathError` when ``out_csv`` is ``bus_data.csv``, lies in
    ``Images/``, or is an existing file (unless ``overwrite``)."""
    src, out_csv = Path(src), Path(out_csv)
    table = src / "bus_data.csv"
    if not table.is_file() or not (src / "Images").is_dir():
        raise ValueError(f"{src} is not a BUS-BRA folder (needs bus_data.csv and Images/)")
    guard_output(out_csv, inputs=[table, src / "Images"], overwrite=overwrite)  # any manifest starts alike: no ``ours``
    try:
        text = table_text(table)
    except TableTextError as e:
        raise ValueError(f"{table}: {e}") from None
    reader = table_reader(text)
    header = reader.fieldnames or []
    where = f"{table}, line {max(reader.line_num, 1)}"  # the header's
    if twice := repeated_columns(header):  # the last copy's cells would be read in silence
        said = "; ".join(f"{h!r} is columns {', '.join(map(str, at))}" for h, at in twice.items())
        raise ValueError(f"{where}: a column is named more than once ({said}): which one holds the data?")
    if missing := [c for c in COLUMNS if c not in header]:
        if why := delimiter_hint(header):
            raise ValueError(f"{where}: {why}; bus_data.csv is comma-separated, as BUS-BRA ships it")
        raise ValueError(f"{where}: no column {', '.join(map(repr, missing))} (header: {', '.join(header)})")
    views, refused = _Views(src, out_csv, header), []  # refused: (line, why): every row refused, said at once
    for row, rec in data_rows(reader, text):
        try:
            views.take(row + 1, rec)
        except _RowError as e:
            refused.append((row + 1, str(e)))
    if len(refused) == 1:
        raise ValueError(f"{table}, line {refused[0][0]}: {refused[0][1]}")
    if refused:  # as validate names every problem of a manifest: one pass shows them all
        raise ValueError(f"{table}: {problems_text([f'line {n}: {why}' for n, why in refused], 'refused row')}")
    if not (patients := views.patients):
        raise ValueError(f"{where}: no rows under the header")
    rows = sorted(patients.values(), key=lambda r: r[PATIENT_ID])
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    masks = [c for c in MASK_COLUMNS if any(c in r for r in rows)]
    write_manifest(out_csv, rows, extra_columns=(*masks, *METADATA))
    return {
        "patients": len(rows),
        "two_views": sum(CEUS in r for r in rows),
        "single_view": sum(CEUS not in r for r in rows),
        "malignant": sum(r[LABEL] for r in rows),
        "birads_4_or_more": sum(r[US_LNM] for r in rows),
        "masks": sum(c in r for r in rows for c in MASK_COLUMNS),
    }


class _RowError(ValueError):
    """Why one row of ``bus_data.csv`` is refused (its line is the caller's to add)."""


@dataclasses.dataclass
class _Views:
    """The patients of ``bus_data.csv`` read so far, row by row (:meth:`take`), with what the
    rows after them are checked against."""

    src: Path
    out_csv: Path
    header: list[str]
    patients: dict[str, dict] = dataclasses.field(default_factory=dict)
    cases: dict[str, str] = dataclasses.field(default_factory=dict)  # BUS-BRA's Case -> the patient (ID number)
    case_of: dict[str, str] = dataclasses.field(default_factory=dict)  # and back
    seen: dict[str, tuple[int, dict]] = dataclasses.field(default_factory=dict)  # each view's ID -> line, cells

    def take(self, line: int, rec: dict) -> None:
        """Adds the row at ``line`` of ``bus_data.csv`` to ``patients`` (its view's image, label,
        flag and metadata), checked against the rows before it (``cases``, ``case_of``, ``seen``);
        :class:`_RowError` saying why the row is refused. A refused row adds no image."""
        m = re.fullmatch(r"bus_(\d+)-([lrs])", (rec.get("ID") or "").strip())
        if not m:
            case = (
                " (in lower case: BUS-BRA's image files are named so)"
                if re.fullmatch(r"bus_(\d+)-([lrs])", (rec.get("ID") or "").strip().lower())
                else ""
            )
            raise _RowError(f"ID {rec.get('ID')!r} is not bus_NNNN-l/r/s{case}")
        pathology = (rec.get("Pathology") or "").strip().lower()
        if pathology not in PATHOLOGY:
            raise _RowError(f"Pathology {rec.get('Pathology')!r} is not benign or malignant")
        if not (category := BIRADS.fullmatch((rec.get("BIRADS") or "").strip())):
            raise _RowError(f"BIRADS {rec.get('BIRADS')!r} is not a BI-RADS category (0-6, 4a-4c)")
        birads = int(category[1])
        image = self.src / "Images" / f"{m.group(0)}.png"
        if not image.is_file():
            raise _RowError(f"image {image} does not exist")
        if (before := self.seen.setdefault(m.group(0), (line, rec)))[0] != line:
            was, now = _as_read(before[1]), _as_read(rec)
            differ = [
                f"{k} {before[1].get(k)!r} there, {rec.get(k)!r} here" for k in self.header if was.get(k) != now.get(k)
            ]
            same = "the same row again" if not differ else f"another row under one ID: {'; '.join(differ)}"
            raise _RowError(f"ID {m.group(0)} is also line {before[0]}'s ({same})")
        pid = f"bus_{m.group(1)}"
        case = (rec.get("Case") or "").strip()
        if case and (other := self.cases.setdefault(case, pid)) != pid:
            raise _RowError(
                f"Case {case} is also {other}'s: one patient under two IDs would sit in training and test alike"
            )
        p = self.patients.setdefault(
            pid,
            {
                PATIENT_ID: pid,
                LABEL: PATHOLOGY[pathology],
                US_LNM: int(birads >= 4),
                **{k: (rec.get(k) or "").strip() for k in METADATA},
            },
        )
        if p[LABEL] != PATHOLOGY[pathology]:
            first = next(k for k, v in PATHOLOGY.items() if v == p[LABEL])
            raise _RowError(f"patient {pid}'s views disagree on Pathology ({first!r}, {pathology!r})")
        said = {"Case": self.case_of.setdefault(pid, case), **{k: p[k] for k in SAME_FOR_ALL_VIEWS}}
        for k, first in said.items():  # a row moved, or one column sorted apart from the others
            if first != (value := (rec.get(k) or "").strip()):
                raise _RowError(f"patient {pid}'s views disagree on {k} ({first!r}, {value!r})")
        if birads > int(BIRADS.fullmatch(p["BIRADS"])[1]):  # the patient's: its most suspicious view's (bus_0856: 4, 5)
            p["BIRADS"], p[US_LNM] = rec["BIRADS"].strip(), int(birads >= 4)
        column = VIEW[m.group(2)]
        if column in p:  # its -l and -s views, both B-mode
            first = next(i for i in self.seen if i.startswith(f"{pid}-") and VIEW[i[-1]] == column and i != m.group(0))
            raise _RowError(
                f"patient {pid} has views {first} (line {self.seen[first][0]}) and {m.group(0)}, "
                f"both read as its '{column}' image"
            )
        p[column] = _relative(image, self.out_csv)
        outline = self.src / "Masks" / f"mask_{m.group(1)}-{m.group(2)}.png"  # the ultrasonographer's lesion outline
        if outline.is_file():
            p[mask(column)] = _relative(outline, self.out_csv)


def _relative(path: Path, out_csv: Path) -> str:
    return os.path.relpath(os.path.abspath(path), os.path.abspath(out_csv.parent))
