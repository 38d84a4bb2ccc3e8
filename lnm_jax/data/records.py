"""One patient of a manifest as the arrays a model takes (before normalisation): the record
the input pipeline, ``predict`` and an exported model's ``predict.py`` all build, so that
every path feeds a model the same pixels."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from lnm_jax.data.cohorts.manifest import Patient
from lnm_jax.data.pixels.masks import decode_mask
from lnm_jax.data.pixels.sources import DEFAULT_FRAMING, Framing, decode_input
from lnm_jax.names import BMODE, CEUS, IMAGE_INPUTS, LABEL, PATIENT_ID, US_LNM, has, mask


def decode_lesion(p: Patient, name: str, size: int, framing: Framing = DEFAULT_FRAMING) -> np.ndarray | None:
    """float32 [S, S] in [0, 1]: the patient's lesion mask for image input ``name`` framed as
    the model sees that image (:func:`lnm_jax.data.pixels.masks.decode_mask`); None where the
    manifest gives no mask."""
    path = p.mask(name)
    if path is None:
        return None
    return decode_mask(path, getattr(p, name), name, size=size, options=p.image_options(name), framing=framing)


def decode_patient(
    p: Patient,
    image_size: int,
    clip_frames: int = 1,
    framing: Framing = DEFAULT_FRAMING,
    *,
    masks: bool = False,
    inputs: Sequence[str] = IMAGE_INPUTS,
) -> dict:
    """``{bmode: [S, S, 3], ceus: [S, S, 3] (or [T, S, S, 3] with clip_frames T > 1), us_lnm,
    label (-1 unknown), has_<input> (bool), patient_id (bytes)}``: images float32 in [0, 1],
    cropped and framed (:func:`lnm_jax.data.pixels.sources.decode_input`), zeros where the
    patient has no such image; the flag 0 where unknown. ImageDecodeError names the patient
    and the file. ``masks``: also ``<input>_mask`` [S, S] (:func:`decode_lesion`; zeros where
    none) and ``has_<input>_mask``, for the lesion head's loss. ``inputs``: the image inputs
    to decode (a model's); another is neither read nor held (zeros, ``has_<input>`` False), as
    a B-mode model never reads a CEUS file (helper-89: every epoch had decoded and augmented
    it)."""
    s, t = image_size, clip_frames
    shapes = {BMODE: (s, s, 3), CEUS: (s, s, 3) if t == 1 else (t, s, s, 3)}
    held = {k: getattr(p, k) is not None and k in inputs for k in IMAGE_INPUTS}
    images = {
        k: np.zeros(shapes[k], np.float32)
        if not held[k]
        else decode_input(
            getattr(p, k),
            k,
            size=s,
            patient_id=p.patient_id,
            clip_frames=t,
            options=p.image_options(k),
            framing=framing,
        )
        for k in IMAGE_INPUTS
    }
    return {
        **images,
        US_LNM: np.float32(max(p.us_lnm or 0, 0)),
        LABEL: np.int32(-1 if p.lnm is None else p.lnm),
        has(BMODE): held[BMODE],
        has(CEUS): held[CEUS],
        has(US_LNM): p.us_lnm is not None,
        PATIENT_ID: p.patient_id.encode(),
        **(_lesions(p, image_size, framing, held) if masks else {}),
    }


def _lesions(p: Patient, size: int, framing: Framing, held: Mapping[str, bool]) -> dict:
    out = {}
    for k in IMAGE_INPUTS:
        lesion = decode_lesion(p, k, size, framing) if held[k] else None
        out[mask(k)] = np.zeros((size, size), np.float32) if lesion is None else lesion
        out[has(mask(k))] = lesion is not None
    return out
