"""A trained model described for a reader: ``metadata.json`` (machine-readable, after the
MONAI-bundle convention) and ``model_card.md``, written by ``lnm-jax export`` and ``evaluate``.

Everything in the card is read from the live run (config, cohort, split, restored checkpoint)
and, where ``evaluate`` ran, its metrics: nothing is typed in by hand."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jax
import numpy as np

from lnm_jax import names, provenance
from lnm_jax import run_files as F
from lnm_jax.data.pixels.sources import Framing
from lnm_jax.exported import METADATA, MODEL_CARD
from lnm_jax.fileio import write_text
from lnm_jax.preflight import availability_patterns
from lnm_jax.run import Run
from lnm_jax.training.checkpoint import DIGEST_KEY

PAPER = (
    "Guang et al., A model for predicting lymph node metastasis of thyroid carcinoma: a multimodality "
    "convolutional neural network study. Quant Imaging Med Surg 2023;13(12):8370-8382"
)
INTENDED_USE = (
    "Research only: estimating P(cervical lymph node metastasis) of papillary thyroid carcinoma from B-mode "
    "and CEUS ultrasound and the sonographer's US-LNM call, to study the method. Not a medical device; not for "
    "clinical decisions."
)
LIMITS = [
    "Trained on one cohort: its performance elsewhere (other scanners, presets, centres, populations) is unknown "
    "until it is tested there.",
    "Probabilities are calibrated (temperature scaling) on this cohort's validation split only.",
    "Images must be prepared as in training: the scan region, RGB in [0, 1], resized to the input size.",
]


def input_spec(config) -> dict[str, dict]:
    """The model's inputs: name -> shape (``B`` = batch) and dtype."""
    s, t = config.data.image_size, config.data.clip_frames
    spec = {}
    for m in names.parse_modalities(config.modalities):
        if m == names.US_LNM:
            spec[m] = {"shape": ["B"], "dtype": "float32"}
        else:
            frames = [t] if m == names.CEUS and t > 1 else []
            spec[m] = {"shape": ["B", *frames, s, s, 3], "dtype": "float32"}
        spec[names.has(m)] = {"shape": ["B"], "dtype": "bool"}
    return spec


def _evaluation(run: Run, checkpoint: str, meta: dict) -> dict | None:
    """``evaluate``'s metrics of this checkpoint, or None when there are none or they were
    computed for another state of it (training resumed since): stale numbers never reach a card."""
    path = run.files.evaluation(checkpoint) / F.METRICS
    if not path.is_file():
        return None
    doc = json.loads(path.read_text())
    stored = doc.get(DIGEST_KEY)
    if doc.get("epoch") != meta.get("epoch") or (stored is not None and stored != meta.get(DIGEST_KEY)):
        return None
    return doc


def metadata(run: Run, checkpoint: str = "best", evaluation: dict | None = None) -> dict:
    """The machine-readable description of ``run``'s ``checkpoint``."""
    config = run.config
    state, meta = run.restore(checkpoint)
    evaluation = evaluation or _evaluation(run, checkpoint, meta)
    labels = [p.lnm for p in run.cohort.patients if p.lnm is not None]
    temperature = run.temperature(checkpoint)
    metrics = {}
    if evaluation:
        metrics = {
            s: {k: m.get(k) for k in ("n", "n_positive", "auc", "ci_level", "auc_ci_delong", "at_0.5", "at_threshold")}
            for s, m in evaluation["splits"].items()
        }
    return {
        "name": config.name,
        "version": f"epoch {meta['epoch']} ({checkpoint} checkpoint by validation AUC)",
        "task": "binary classification: P(LNM) per patient",
        "reimplements": PAPER,
        "architecture": {
            "inputs": list(names.parse_modalities(config.modalities)),
            "backbone": config.model.backbone,
            "width": config.model.width,
            "missing_inputs": bool(config.model.missing_inputs),
            "temporal_pool": config.model.temporal_pool if config.data.clip_frames > 1 else None,
            "parameters": int(sum(np.size(x) for x in jax.tree.leaves(state.params))),
            "head": "one dense layer over the concatenated pooled features (and availability indicators) + sigmoid",
        },
        "inputs": input_spec(config),
        "image_size": config.data.image_size,
        "clip_frames": config.data.clip_frames,
        # how images are cropped and scaled before the resize (lnm_jax.data.pixels.sources.Framing)
        "framing": dataclasses.asdict(Framing.from_config(config.data)),
        "normalisation": {
            k: {"mean": list(v["mean"]), "std": list(v["std"])} for k, v in config.data.norm.to_dict().items()
        },
        "thresholds": {
            "default": 0.5,
            "youden_from_val": evaluation.get("youden_threshold_from_val") if evaluation else None,
        },
        "calibration_temperature": temperature,
        # the training split's image intensities, which predict checks new patients against
        "intensity_reference": run.intensity_reference(),
        "training_cohort": {
            "manifest": config.data.manifest or "embedded synthetic cohort",
            "manifest_sha256": run.cohort.sha256,
            "patients": len(run.cohort),
            "lnm_positive": int(sum(labels)),
            "prevalence": float(np.mean(labels)) if labels else None,
            "availability_patterns": dict(availability_patterns(run.cohort)),
            "split": {s: len(run.split.subset(s)) for s in ("train", "val", "test")},
            "split_seed": config.data.split.seed,
        },
        "metrics": metrics,
        "intended_use": INTENDED_USE,
        "limits": LIMITS,
        "packages": provenance.package_versions(),
    }


def markdown(md: dict) -> str:
    """``model_card.md`` from :func:`metadata`."""
    a, c = md["architecture"], md["training_cohort"]
    lines = [
        f"# Model card: {md['name']}",
        "",
        f"{md['task']}; {md['version']}. Reimplements {md['reimplements']}.",
        "",
        "## Intended use",
        md["intended_use"],
        "",
        "## Architecture",
        f"Inputs {', '.join(a['inputs'])}; {a['backbone']} (width {a['width']}) per image input, not shared; "
        f"{a['head']}. {a['parameters']:,} parameters. Missing inputs: "
        f"{'learned absent embeddings + availability indicators' if a['missing_inputs'] else 'not supported'}"
        + (f"; CEUS clips of {md['clip_frames']} frames, {a['temporal_pool']} pooling." if a["temporal_pool"] else "."),
        "",
        "## Inputs",
        "| name | shape | dtype |",
        "|---|---|---|",
        *[f"| `{k}` | [{', '.join(map(str, v['shape']))}] | {v['dtype']} |" for k, v in md["inputs"].items()],
        "",
        "Images: cropped to the scan region (a DICOM file's SequenceOfUltrasoundRegions or the manifest's "
        "<input>_crop column)"
        + (
            f", resampled to {md['framing']['field_of_view_mm'] / md['image_size']:.3g} mm per pixel "
            f"({md['framing']['field_of_view_mm']:g} mm field of view, centred, zero-padded)"
            if md.get("framing", {}).get("field_of_view_mm")
            else ""
        )
        + f"; RGB float32 in [0, 1], resized to {md['image_size']}x{md['image_size']}; then (x - mean) / std "
        "per modality (inside the exported program), a missing image set to zero:",
        "",
        *[f"- {k}: mean {v['mean']}, std {v['std']}" for k, v in md["normalisation"].items()],
        "",
        "## Decision thresholds and calibration",
        f"- 0.5 on the probability (default); Youden's index on validation: {md['thresholds']['youden_from_val']}",
        f"- temperature (fitted on validation, `prob_calibrated = sigmoid(logit / T)`): "
        f"{md['calibration_temperature'] or 'none fitted (run lnm-jax evaluate)'}",
        "",
        "## Training cohort",
        f"{c['patients']} patients, {c['lnm_positive']} LNM-positive (prevalence {c['prevalence']:.3f}); manifest "
        f"`{c['manifest']}` (sha256 {c['manifest_sha256'][:16]}...); split seed {c['split_seed']}: train "
        f"{c['split']['train']}, validation {c['split']['val']}, test {c['split']['test']}.",
        "Availability patterns: " + ", ".join(f"{k or '(none)'} {v}" for k, v in c["availability_patterns"].items()),
        "",
        "## Metrics",
    ]
    if md["metrics"]:
        lines += [
            "| split | n | AUC | CI (DeLong) | sens@0.5 | spec@0.5 | sens@Youden | spec@Youden |",
            "|---|---:|---:|---|---:|---:|---:|---:|",
        ]
        for s, m in md["metrics"].items():
            lo, hi = m["auc_ci_delong"]
            t5, ty = m["at_0.5"], m["at_threshold"] or {}
            lines.append(
                f"| {s} | {m['n']} | {m['auc']:.3f} | {lo:.3f}-{hi:.3f} | {t5['sensitivity']:.3f} | "
                f"{t5['specificity']:.3f} | {ty.get('sensitivity', float('nan')):.3f} | "
                f"{ty.get('specificity', float('nan')):.3f} |"
            )
    else:
        lines.append("Not evaluated yet (run `lnm-jax evaluate`).")
    lines += [
        "",
        "## Limits",
        *[f"- {x}" for x in md["limits"]],
        "",
        "## Software",
        ", ".join(f"{k} {v}" for k, v in md["packages"].items()),
    ]
    return "\n".join(lines) + "\n"


def write_model_card(
    run: Run, out: Path | str, checkpoint: str = "best", evaluation: dict | None = None, extra: dict | None = None
) -> dict:
    """Writes ``metadata.json`` (with ``extra``'s sections added, e.g. an export's) and
    ``model_card.md`` to ``out``; returns the metadata."""
    md = {**metadata(run, checkpoint, evaluation), **(extra or {})}
    out = Path(out)
    write_text(out / METADATA, json.dumps(md, indent=2))
    write_text(out / MODEL_CARD, markdown(md))
    return md
