"""The images of one or more cohort manifests as one unlabeled set, for self-supervised
pretraining, with the downstream test patients kept out.

Pretraining on the images of the patients a model will be tested on is leakage (the backbone
has seen them), so the patients ``exclude`` names (the downstream run's test split) are dropped
from the first manifest, and any image of another manifest that is the same file or the same
picture as one of theirs is dropped too (the same cohort passed twice, under another name, or
copied to another folder: :attr:`lnm_jax.data.cohorts.manifest.Patient.pictures`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from lnm_jax.data.cohorts.manifest import Cohort, pictures_among, recording
from lnm_jax.data.pixels.sources import DEFAULT_FRAMING, Framing, decode_input
from lnm_jax.names import IMAGE_INPUTS


@dataclasses.dataclass(frozen=True)
class ImageRef:
    """One image of a manifest: where it is, whose, which input."""

    source: int  # index of its manifest
    patient_id: str
    modality: str
    path: Path
    pictures: tuple[tuple, ...] = ()  # its manifest's picture keys (Patient.pictures), where read
    thumbnail: np.ndarray | None = dataclasses.field(default=None, compare=False)  # Patient.thumbnail, a still's


@dataclasses.dataclass(frozen=True)
class UnlabeledImages:
    """Decoded images ([N, S, S, 3] uint8, the [0, 1] image x 255), their input (index into
    ``IMAGE_INPUTS``) and patient (an integer per (manifest, patient)); ``refs`` in the same
    order; ``excluded``: the images left out as the downstream test split's; ``repeated``: the
    images left out as another kept one's file or recording (:func:`first_of_each`)."""

    images: np.ndarray
    modality: np.ndarray
    patient: np.ndarray
    refs: tuple[ImageRef, ...]
    excluded: tuple[ImageRef, ...]
    repeated: tuple[ImageRef, ...] = ()

    def __len__(self) -> int:
        return len(self.refs)


def image_refs(cohorts: Sequence[Cohort], modalities: Iterable[str] = IMAGE_INPUTS) -> list[ImageRef]:
    return [
        ImageRef(k, p.patient_id, m, Path(getattr(p, m)).resolve(), p.pictures.get(m, ()), p.thumbnail(m))
        for k, cohort in enumerate(cohorts)
        for p in cohort.patients
        for m in modalities
        if getattr(p, m) is not None
    ]


def split_out(refs: Sequence[ImageRef], exclude: Iterable[str]) -> tuple[list[ImageRef], list[ImageRef]]:
    """(kept, excluded): the first manifest's (source 0) patients in ``exclude``, and every image
    of any manifest that is one of their files or recordings (the same picture, a frame of
    their clip or cine, or one that holds a frame of theirs: :func:`~lnm_jax.data.cohorts.manifest.recording`)
    or nearly one of their stills (:func:`~lnm_jax.data.cohorts.manifest.pictures_among`)."""
    exclude = set(exclude)
    theirs = [r for r in refs if r.source == 0 and r.patient_id in exclude]
    paths = {r.path for r in theirs}
    among = pictures_among([(r.pictures, r.thumbnail) for r in refs], [(r.pictures, r.thumbnail) for r in theirs])
    out = [r.path in paths or hit is not None for r, hit in zip(refs, among)]
    return [r for r, o in zip(refs, out) if not o], [r for r, o in zip(refs, out) if o]


def first_of_each(refs: Sequence[ImageRef]) -> tuple[list[ImageRef], list[ImageRef]]:
    """(kept, repeated): each picture once, its first reference kept and every later one that
    is the same file or the same recording (:func:`~lnm_jax.data.cohorts.manifest.recording`)
    left out: a cohort's images listed again in another manifest (helper-96: a copied manifest
    pretrained every image twice, each copy a negative of its own twin in the loss)."""
    paths, seen, kept, repeated = set(), set(), [], []
    for r in refs:
        keys = {recording(k) for k in r.pictures}
        if r.path in paths or keys & seen:
            repeated.append(r)
            continue
        paths.add(r.path)
        seen |= keys
        kept.append(r)
    return kept, repeated


def collect(
    cohorts: Sequence[Cohort],
    *,
    image_size: int,
    exclude: Iterable[str] = (),
    modalities: Iterable[str] = IMAGE_INPUTS,
    framing: Framing = DEFAULT_FRAMING,
    threads: int = 2,
    progress: bool = True,
) -> UnlabeledImages:
    """Every image of ``cohorts`` (``modalities`` only) but the excluded ones, decoded and framed
    as training decodes them (:func:`lnm_jax.data.pixels.sources.decode_input`: scan-region crop,
    physical scale, CEUS peak frame of a clip), at ``image_size``."""
    modalities = tuple(modalities)
    kept, excluded = split_out(image_refs(cohorts, modalities), exclude)
    kept, repeated = first_of_each(kept)
    if not kept:
        raise ValueError("no images left to pretrain on (every image is excluded or the manifests hold none)")
    patients = [c.by_id() for c in cohorts]

    def load(ref: ImageRef) -> np.ndarray:
        p = patients[ref.source][ref.patient_id]
        img = decode_input(
            getattr(p, ref.modality),
            ref.modality,
            size=image_size,
            patient_id=p.patient_id,
            options=p.image_options(ref.modality),
            framing=framing,
        )
        return np.round(np.clip(img, 0.0, 1.0) * 255.0).astype(np.uint8)

    with ThreadPoolExecutor(max(threads, 1)) as pool:
        images = list(tqdm(pool.map(load, kept), total=len(kept), desc="decoding", unit="image", disable=not progress))
    ids: dict[tuple[int, str], int] = {}
    patient = np.array([ids.setdefault((r.source, r.patient_id), len(ids)) for r in kept], np.int32)
    return UnlabeledImages(
        images=np.stack(images),
        modality=np.array([IMAGE_INPUTS.index(r.modality) for r in kept], np.int32),
        patient=patient,
        refs=tuple(kept),
        excluded=tuple(excluded),
        repeated=tuple(repeated),
    )


def partners(patient: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """For each image, another image of the same patient drawn at random (itself when it is
    the patient's only one): the second view of a 'patient' positive pair."""
    out = np.arange(len(patient))
    order = np.argsort(patient, kind="stable")
    bounds = np.flatnonzero(np.diff(patient[order])) + 1
    for members in np.split(order, bounds):
        if len(members) > 1:
            for i in members:
                others = members[members != i]
                out[i] = others[rng.integers(len(others))]
    return out
