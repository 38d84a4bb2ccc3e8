"""TFDS builder for a cohort manifest (the manifest's folder is TFDS's ``manual_dir``).

Images are stored as their original encoded bytes (PNG or JPEG, grayscale or RGB, any size):
nothing is re-encoded at build time, and decoding, grayscale-to-RGB and resizing happen in the
input pipeline where the configured size is known.  A missing image is stored as empty bytes
with its ``has_*`` flag false; a missing flag or label as -1.

CEUS is a list of frames: one for a still image; for a clip, the ``clip_frames`` frames
sampled over its enhancement phase (:mod:`lnm_jax.data.clips`), PNG-encoded. The sampling
depends on ``clip_frames``, so the data folder is keyed by it as well as by the manifest.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from lnm_jax.data.clips import encode_png, is_clip, sample_clip
from lnm_jax.data.manifest import Cohort, read_manifest
from lnm_jax.names import BMODE, CEUS, LABEL, PATIENT_ID, US_LNM, has

ALL_SPLIT = "cohort"  # "all" is reserved by TFDS


class LnmCohort(tfds.core.GeneratorBasedBuilder):
    """One cohort: B-mode, CEUS, US-LNM flag, LNM label and availability per patient."""

    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {"1.0.0": "Manifest-backed cohort.", "1.1.0": "CEUS as a list of frames (clips)."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "manual_dir is the folder of the cohort's manifest CSV (columns patient_id, bmode, "
        "ceus, us_lnm, lnm; image paths relative to the CSV)."
    )

    def __init__(
        self, *, manifest_name: str = "manifest.csv", require_labels: bool = True, clip_frames: int = 1, **kwargs
    ):
        self._manifest_name = manifest_name
        self._require_labels = require_labels
        self._clip_frames = clip_frames
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        encoded = tfds.features.Tensor(shape=(), dtype=np.object_)
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    PATIENT_ID: tfds.features.Text(),
                    BMODE: encoded,
                    CEUS: tfds.features.Tensor(shape=(None,), dtype=np.object_),
                    US_LNM: tfds.features.Scalar(dtype=np.int64),
                    LABEL: tfds.features.Scalar(dtype=np.int64),
                    has(BMODE): tfds.features.Scalar(dtype=np.bool_),
                    has(CEUS): tfds.features.Scalar(dtype=np.bool_),
                    has(US_LNM): tfds.features.Scalar(dtype=np.bool_),
                }
            ),
            supervised_keys=None,
        )

    def _split_generators(self, dl_manager):
        manifest = Path(dl_manager.manual_dir) / self._manifest_name
        cohort = read_manifest(manifest, require_labels=self._require_labels, min_clip_frames=self._clip_frames)
        return {ALL_SPLIT: self._generate_examples(cohort)}

    def _generate_examples(self, cohort: Cohort):
        for p in cohort.patients:
            bmode, ceus = (p.bmode.read_bytes() if p.bmode else b""), self._ceus_frames(p.ceus)
            for encoded, path in [(bmode, p.bmode)] * bool(p.bmode) + [(f, p.ceus) for f in ceus]:
                check_decodes(encoded, p.patient_id, path)
            yield (
                p.patient_id,
                {
                    PATIENT_ID: p.patient_id,
                    BMODE: bmode,
                    CEUS: ceus,
                    US_LNM: -1 if p.us_lnm is None else p.us_lnm,
                    LABEL: -1 if p.lnm is None else p.lnm,
                    has(BMODE): p.bmode is not None,
                    has(CEUS): p.ceus is not None,
                    has(US_LNM): p.us_lnm is not None,
                },
            )

    def _ceus_frames(self, path: Path | None) -> list[bytes]:
        if path is None:
            return []
        if is_clip(path):
            return [encode_png(f) for f in sample_clip(path, self._clip_frames)]
        return [path.read_bytes()]


def check_decodes(encoded: bytes, patient_id: str, path: Path) -> None:
    """Decodes ``encoded`` with the decoder the input pipeline uses, so that an image it cannot
    read fails here, naming the patient and the file, not mid-epoch naming neither."""
    try:
        tf.io.decode_image(encoded, channels=3, expand_animations=False)
    except (tf.errors.InvalidArgumentError, tf.errors.UnknownError) as e:
        first = (e.message.strip().splitlines() or [""])[0]
        raise ValueError(f"patient {patient_id}: {path}: the input pipeline cannot decode this image ({first})") from e


def load_cohort(
    cohort: Cohort, data_dir: Path | str, *, require_labels: bool = True, clip_frames: int = 1
) -> tf.data.Dataset:
    """Builds (once per manifest content and clip length) and loads the cohort as a
    tf.data.Dataset.

    The TFDS data folder is keyed by the manifest's SHA-256, so an edited manifest gets a
    fresh build instead of stale records.
    """
    data_dir = Path(data_dir) / f"{cohort.sha256[:16]}_t{clip_frames}"
    tfds.disable_progress_bar()
    builder = LnmCohort(
        data_dir=str(data_dir), manifest_name=cohort.path.name, require_labels=require_labels, clip_frames=clip_frames
    )
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(cohort.path.parent)))
    read_config = tfds.ReadConfig(shuffle_seed=0, interleave_cycle_length=1)
    return builder.as_dataset(split=ALL_SPLIT, shuffle_files=False, read_config=read_config)
