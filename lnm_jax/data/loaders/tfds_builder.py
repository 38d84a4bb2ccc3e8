"""TFDS builder for a cohort manifest (the manifest's folder is TFDS's ``manual_dir``).

Every image is read by the one decoder (:mod:`lnm_jax.data.pixels.sources` and
:mod:`lnm_jax.data.pixels.decode`: EXIF orientation, bit depth, palettes, DICOM, scan-region
crop) and stored as the PNG of those pixels at their own size: 8-bit where the source is 8-bit
(exactly), else 16-bit gray or 8-bit colour (:func:`encode_unit_png`). ``tf.io.decode_image``
never sees the original file, so both input paths read the same picture; resizing happens in
the input pipeline where the configured size is known. A missing image is stored as empty
bytes with its ``has_*`` flag false; a missing flag or label as -1.

CEUS is a list of frames: one for a still image; for a clip, the ``clip_frames`` frames
sampled over its enhancement phase (:mod:`lnm_jax.data.pixels.clips`). The sampling depends on
``clip_frames``, so the data folder is keyed by it as well as by the manifest.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from lnm_jax.data.cohorts.manifest import Cohort, read_manifest
from lnm_jax.data.pixels import sources
from lnm_jax.names import BMODE, CEUS, LABEL, PATIENT_ID, US_LNM, has
from lnm_jax.run_files import MANIFEST

ALL_SPLIT = "cohort"  # "all" is reserved by TFDS


class LnmCohort(tfds.core.GeneratorBasedBuilder):
    """One cohort: B-mode, CEUS, US-LNM flag, LNM label and availability per patient."""

    VERSION = tfds.core.Version("1.2.0")
    RELEASE_NOTES = {
        "1.0.0": "Manifest-backed cohort.",
        "1.1.0": "CEUS as a list of frames (clips).",
        "1.2.0": "Every image through the one decoder (EXIF orientation, bit depth, palettes), stored as PNG.",
    }
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "manual_dir is the folder of the cohort's manifest CSV (columns patient_id, bmode, "
        "ceus, us_lnm, lnm; image paths relative to the CSV)."
    )

    def __init__(
        self,
        *,
        manifest_name: str = MANIFEST,
        require_labels: bool = True,
        clip_frames: int = 1,
        ceus_region: str = "auto",
        accept_secondary_capture: bool = False,
        **kwargs,
    ):
        self._manifest_name = manifest_name
        self._require_labels = require_labels
        self._clip_frames = clip_frames
        self._ceus_region = ceus_region
        self._accept_secondary_capture = accept_secondary_capture
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
        cohort = read_manifest(
            manifest,
            require_labels=self._require_labels,
            min_clip_frames=self._clip_frames,
            framing=sources.Framing(
                ceus_region=self._ceus_region, accept_secondary_capture=self._accept_secondary_capture
            ),
        )
        return {ALL_SPLIT: self._generate_examples(cohort)}

    def _generate_examples(self, cohort: Cohort):
        for p in cohort.patients:
            bmode, ceus = self._decoded(p, self._bmode, BMODE), self._decoded(p, self._ceus_frames, CEUS)
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

    @staticmethod
    def _decoded(p, encode, name: str):
        """``encode(p)``; a file the decoder cannot read fails naming the patient and the file."""
        try:
            return encode(p)
        except (OSError, ValueError) as e:  # PIL's, the decoder's and DICOM's errors
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise ValueError(
                f"patient {p.patient_id}: {getattr(p, name)}: the input pipeline cannot decode this image ({first})"
            ) from e

    def _source(self, p, name: str) -> sources.Source:
        return sources.resolve(getattr(p, name), name, p.image_options(name), self._ceus_region)

    # Every image goes through the one decoder (sources -> decode), framed, and is stored as a
    # PNG of those pixels (8-bit exactly, 16-bit gray kept): tf.io.decode_image never sees the
    # original file, so EXIF orientation, bit depth and palettes are read as on the grain path.
    def _bmode(self, p) -> bytes:
        if p.bmode is None:
            return b""
        return encode_unit_png(sources.read_still(self._source(p, BMODE)))

    def _ceus_frames(self, p) -> list[bytes]:
        if p.ceus is None:
            return []
        src = self._source(p, CEUS)
        if src.still_frame is None:
            return [encode_unit_png(f) for f in sources.read_clip(src, self._clip_frames)]
        return [encode_unit_png(sources.read_still(src))]


def encode_unit_png(img: np.ndarray) -> bytes:
    """A [0, 1] float RGB image as PNG: 8-bit when every value is a multiple of 1/255 (an 8-bit
    source, stored exactly), else 16-bit gray when the channels agree, else 8-bit RGB."""
    import io  # noqa: PLC0415

    from PIL import Image  # noqa: PLC0415

    eight = np.round(img * 255.0)
    buf = io.BytesIO()
    if np.abs(eight / 255.0 - img).max() < 1e-6:
        Image.fromarray(eight.astype(np.uint8), "RGB").save(buf, format="PNG")
    elif np.array_equal(img[..., 0], img[..., 1]) and np.array_equal(img[..., 0], img[..., 2]):
        Image.fromarray(np.round(img[..., 0] * 65535.0).astype(np.uint16)).save(buf, format="PNG")
    else:
        Image.fromarray(eight.astype(np.uint8), "RGB").save(buf, format="PNG")
    return buf.getvalue()


def check_decodes(encoded: bytes, patient_id: str, path: Path) -> None:
    """Decodes ``encoded`` with the decoder the input pipeline uses, so that an image it cannot
    read fails here, naming the patient and the file, not mid-epoch naming neither."""
    try:
        tf.io.decode_image(encoded, channels=3, expand_animations=False)
    except (tf.errors.InvalidArgumentError, tf.errors.UnknownError) as e:
        first = (e.message.strip().splitlines() or [""])[0]
        raise ValueError(f"patient {patient_id}: {path}: the input pipeline cannot decode this image ({first})") from e


def load_cohort(
    cohort: Cohort,
    data_dir: Path | str,
    *,
    require_labels: bool = True,
    clip_frames: int = 1,
    ceus_region: str = "auto",
    accept_secondary_capture: bool = False,
) -> tf.data.Dataset:
    """Builds (once per cohort content and reading) and loads the cohort as a tf.data.Dataset.

    The TFDS data folder is keyed by :func:`records_key`: what its records hold (the manifest,
    every picture's decoded pixels, the clip length and framing, the decoding code), so that an
    image edited in place, another cohort under the same manifest text or a changed decoder gets
    a fresh build, never another's records (helper-95: the key had been the manifest's text
    alone, and a shared ``data.tfds_dir`` fed an edited image's old pixels in silence). Two
    processes building one folder at once: the later one reads what the first built. A damaged
    folder is named with the remedy (delete it) in one line."""
    data_dir = Path(data_dir) / records_key(cohort, clip_frames, ceus_region, accept_secondary_capture)
    tfds.disable_progress_bar()

    def prepared() -> LnmCohort:
        builder = LnmCohort(
            data_dir=str(data_dir),
            manifest_name=cohort.path.name,
            require_labels=require_labels,
            clip_frames=clip_frames,
            ceus_region=ceus_region,
            accept_secondary_capture=accept_secondary_capture,
        )
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(cohort.path.parent)))
        return builder

    try:
        builder = prepared()
    except Exception:  # noqa: BLE001  (TFDS's rename onto a folder another process finished meanwhile)
        if not (data_dir / "lnm_cohort" / str(LnmCohort.VERSION) / "dataset_info.json").is_file():
            raise
        builder = prepared()  # (built: only read)
    read_config = tfds.ReadConfig(shuffle_seed=0, interleave_cycle_length=1)
    return builder.as_dataset(split=ALL_SPLIT, shuffle_files=False, read_config=read_config)


def records_key(cohort: Cohort, clip_frames: int, ceus_region: str, accept_secondary_capture: bool) -> str:
    """The name of the TFDS folder of ``cohort`` read so: the first 16 hex digits of the SHA-256
    of the manifest's bytes, each patient's pictures (:attr:`Patient.pictures`: the decoded
    pixels' digests where the manifest was read with its images checked, as every run reads it),
    the clip length, the framing, the builder's version and the decoding code
    (:func:`lnm_jax.portable.preprocessing_digest`), then ``_t<clip_frames>``."""
    from lnm_jax.portable import preprocessing_digest  # noqa: PLC0415

    h = hashlib.sha256()
    for part in (
        cohort.sha256,
        cohort.pictures_text(),
        repr((clip_frames, ceus_region, accept_secondary_capture, str(LnmCohort.VERSION))),
        preprocessing_digest(),
    ):
        h.update(part.encode() + b"\0")
    return f"{h.hexdigest()[:16]}_t{clip_frames}"
