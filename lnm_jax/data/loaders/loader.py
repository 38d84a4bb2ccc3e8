"""The default input path: grain over the cohort manifest, no TensorFlow.

decode (PIL) -> grayscale-to-RGB -> resize (antialiased bilinear) -> in-memory cache ->
(train: seeded per-epoch shuffle + the paper's augmentation, numpy) -> per-modality
normalisation -> fixed-shape batches with a ``valid`` mask. The batches are those of the TFDS
path (:mod:`lnm_jax.data.loaders.pipeline`): same keys, shapes, dtypes, decode and normalisation.

Determinism: epoch ``e``'s order is a grain shuffle seeded by ``(seed, e)``, and each record's
augmentation draws from its own generator seeded by ``(seed, e, position in the epoch, input)``,
so a batch depends only on the seed, the epoch and its index, never on threads or timing.
An epoch is a ``grain.MapDataset`` of batches, iterated by grain's prefetching iterator
(``data.num_threads`` threads); that iterator's state (``get_state``) is what a mid-epoch
checkpoint stores, and ``set_state`` resumes on exactly the next batch.

Multi-host: every process draws the same global batches and decodes only its own rows of
each (the rows its devices hold), as :func:`lnm_jax.training.sharding.shard_batch` expects.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence

import grain
import numpy as np
import threadpoolctl

from lnm_jax.data.cohorts.manifest import Cohort, Patient
from lnm_jax.data.loaders import augment as augment_lib
from lnm_jax.data.pixels.sources import DEFAULT_FRAMING, Framing
from lnm_jax.data.records import decode_patient
from lnm_jax.fileio import json_text, write_text
from lnm_jax.names import (
    AVAILABILITY_KEYS,
    CEUS,
    IMAGE_INPUTS,
    LABEL,
    LESION_KEYS,
    PAPER_NORM,
    PATIENT_ID,
    US_LNM,
    VALID,
    has,
    mask,
    parse_modalities,
)
from lnm_jax.output_guard import guard_output

SEED_STREAM = 0x4C4E4D  # separates the loader's generators from other users of the run seed


class DecodedCohort:
    """Random access to a cohort's patients, decoded to [0, 1] float32 images of one size
    (zeros where an image is missing), each decoded once and kept in memory when ``cache``;
    cropped to the scan region and framed per ``framing`` (:mod:`lnm_jax.data.pixels.sources`);
    with ``masks``, each record also holds its framed lesion masks
    (:func:`lnm_jax.data.records.decode_patient`)."""

    def __init__(
        self,
        patients: Sequence[Patient],
        image_size: int,
        clip_frames: int = 1,
        cache: bool = True,
        framing: Framing = DEFAULT_FRAMING,
        masks: bool = False,
        inputs: Sequence[str] = IMAGE_INPUTS,
    ):
        self.patients = tuple(patients)
        self.image_size, self.clip_frames, self.cache, self.framing = image_size, clip_frames, cache, framing
        self.masks, self.inputs = masks, tuple(inputs)
        self._index = {p.patient_id: i for i, p in enumerate(self.patients)}
        self._cache: dict[int, dict] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.patients)

    def index(self, patient_ids: Sequence[str]) -> np.ndarray:
        missing = [i for i in patient_ids if i not in self._index]
        if missing:
            raise KeyError(f"patient(s) not in the cohort: {', '.join(missing[:5])}")
        return np.array([self._index[i] for i in patient_ids], dtype=np.int64)

    def __getitem__(self, i: int) -> dict:
        i = int(i)
        if (hit := self._cache.get(i)) is not None:
            return hit
        record = self._decode(self.patients[i])
        if self.cache:
            record = compact(record)
            with self._lock:
                self._cache.setdefault(i, record)
        return record

    def _decode(self, p: Patient) -> dict:
        return decode_patient(p, self.image_size, self.clip_frames, self.framing, masks=self.masks, inputs=self.inputs)


def compact(record: Mapping) -> dict:
    """``record`` with each image held in less memory, the same values (read-only views): an
    image of zeros (missing, or an input the model does not take) as one zero broadcast to its
    shape, a grey one (equal channels, as a B-mode is fed) as its first channel broadcast to
    three. A cohort held decoded had taken two full float32 RGB images per patient whatever
    they held (helper-94: 363 KB a patient at 128 px); a grey B-mode now takes a third of that,
    a missing image nothing."""
    out = dict(record)
    for k in IMAGE_INPUTS:
        a = record[k]
        if not a.any():
            out[k] = np.broadcast_to(np.zeros((), a.dtype), a.shape)
        elif np.array_equal(a[..., 0], a[..., 1]) and np.array_equal(a[..., 0], a[..., 2]):
            out[k] = np.broadcast_to(np.ascontiguousarray(a[..., :1]), a.shape)
    return out


def held_bytes(
    patients: int, image_size: int, clip_frames: int = 1, inputs: Sequence[str] = IMAGE_INPUTS
) -> tuple[int, int]:
    """The least and the most memory (bytes) a :class:`DecodedCohort` of ``patients`` holds once
    every record is decoded (``data.cache``): each of ``inputs`` grey (one float32 channel) or
    in colour (three), a CEUS clip ``clip_frames`` frames; an input not taken holds nothing."""
    pixels = image_size * image_size * 4
    frames = sum((clip_frames if k == CEUS else 1) for k in inputs if k in IMAGE_INPUTS)
    return patients * frames * pixels, patients * frames * pixels * 3


def normalise(record: Mapping, stats: Mapping) -> dict:
    """Per-modality normalisation; a missing image stays exactly zero."""
    out = dict(record)
    for k in IMAGE_INPUTS:
        mean, std = stats[k]
        out[k] = (record[k] - mean) / std * np.float32(record[has(k)])
    return out


def _stats(norm: Mapping) -> dict:
    return {k: (np.asarray(norm[k]["mean"], np.float32), np.asarray(norm[k]["std"], np.float32)) for k in IMAGE_INPUTS}


def collate(records: Sequence[Mapping], rows: int) -> dict[str, np.ndarray]:
    """Stacks ``records`` into a batch of ``rows`` rows, zero-padded, with the ``valid`` mask
    (and the lesion masks where the records hold them)."""
    n = len(records)
    out = {}
    lesions = LESION_KEYS if records and LESION_KEYS[0] in records[0] else ()
    for k in (*IMAGE_INPUTS, US_LNM, LABEL, *AVAILABILITY_KEYS, *lesions):
        v = np.stack([r[k] for r in records])
        if n < rows:
            v = np.concatenate([v, np.zeros((rows - n,) + v.shape[1:], v.dtype)])
        out[k] = v
    ids = np.array([r[PATIENT_ID] for r in records] + [b""] * (rows - n), dtype=object)
    out[PATIENT_ID] = ids
    out[VALID] = np.arange(rows) < n
    return out


def epoch_seed(seed: int, epoch: int) -> int:
    """grain's shuffle seed of one epoch (a 32-bit integer, as grain takes)."""
    return int(np.random.SeedSequence([SEED_STREAM, seed, epoch]).generate_state(1, np.uint32)[0])


def train_epoch(
    cohort: DecodedCohort,
    rows: np.ndarray,
    *,
    batch_size: int,
    norm: Mapping,
    seed: int,
    epoch: int,
    augment: Mapping | None = None,
    process_index: int = 0,
    process_count: int = 1,
) -> grain.MapDataset:
    """One training epoch: full batches (the last partial one dropped) of the cohort rows
    ``rows``, shuffled by ``(seed, epoch)``, augmented when ``augment`` is enabled (a lesion
    mask moved with its image)."""
    aug = dict(augment) if augment and augment.get("enabled", False) else None
    stats = _stats(norm)
    if batch_size % process_count:
        raise ValueError(f"batch size {batch_size} is not divisible by the {process_count} processes")
    per_process = batch_size // process_count
    offset = process_index * per_process  # this process's first row of every global batch

    def make(k: int, order: np.ndarray) -> dict:
        local = order[offset : offset + per_process]
        records = []
        for j, i in enumerate(local):
            r = dict(cohort[rows[i]])
            if aug is not None:
                position = k * batch_size + offset + j
                for m, name in enumerate(IMAGE_INPUTS):
                    if not r.get(has(name)):  # an image the patient lacks or the model does not take: zeros
                        continue  # (each input draws from its own generator: the others' draws are unchanged)
                    rng = np.random.default_rng([SEED_STREAM, seed, epoch, position, m])
                    r[name], lesion = augment_lib.augment(r[name], rng, aug, r.get(mask(name)))
                    if lesion is not None:
                        r[mask(name)] = lesion
            records.append(normalise(r, stats))
        return collate(records, len(local))

    order = grain.MapDataset.range(len(rows)).shuffle(seed=epoch_seed(seed, epoch))
    return order.batch(batch_size, drop_remainder=True, batch_fn=np.asarray).map_with_index(make)


def eval_dataset(cohort: DecodedCohort, rows: np.ndarray, *, batch_size: int, norm: Mapping) -> grain.MapDataset:
    """Every row of ``rows`` in order, in global batches of ``batch_size`` (the last one padded)."""
    stats = _stats(norm)

    def make(k: int) -> dict:
        chunk = rows[k * batch_size : (k + 1) * batch_size]
        return collate([normalise(cohort[i], stats) for i in chunk], batch_size)

    return grain.MapDataset.range(math.ceil(len(rows) / batch_size)).map(make)


def iterate(
    dataset: grain.MapDataset, *, num_threads: int = 2, prefetch: int = 4, state: dict | None = None
) -> grain.DatasetIterator:
    """grain's prefetching iterator over ``dataset`` (``num_threads`` worker threads), resumed
    at ``state`` (a ``get_state()`` of an earlier iterator over the same dataset) when given."""
    options = grain.ReadOptions(num_threads=max(num_threads, 1), prefetch_buffer_size=max(prefetch, 1))
    it = iter(dataset.to_iter_dataset(options))
    if state is not None:
        it.set_state(state)
    return it


def stacked(cohort: DecodedCohort, rows: np.ndarray) -> dict[str, np.ndarray]:
    """The rows' decoded [0, 1] images and flags as numpy arrays (not augmented or normalised),
    for a device-resident cohort."""
    b = collate([cohort[i] for i in rows], len(rows))
    return {k: v for k, v in b.items() if k not in (PATIENT_ID, VALID)}


def normalisation_stats(batches: Iterable[Mapping[str, np.ndarray]]) -> dict[str, dict[str, list[float]]]:
    """Per-modality, per-channel mean and std of [0, 1] images (patients who have that image
    only), accumulated in float64 over all pixels (clips too), so that the result does not
    depend on batching. ``batches``: dicts with the image keys and their ``has_*`` masks."""
    sums = {k: np.zeros(3) for k in IMAGE_INPUTS}
    sq = {k: np.zeros(3) for k in IMAGE_INPUTS}
    count = dict.fromkeys(IMAGE_INPUTS, 0)
    for b in batches:
        for k in IMAGE_INPUTS:
            pixels = b[k][np.asarray(b[has(k)], bool)].astype(np.float64).reshape(-1, 3)
            if len(pixels):
                sums[k] += pixels.sum(axis=0)
                sq[k] += (pixels**2).sum(axis=0)
                count[k] += len(pixels)
    out = {}
    for k in IMAGE_INPUTS:
        if count[k] == 0:
            out[k] = {"mean": list(PAPER_NORM[k]["mean"]), "std": list(PAPER_NORM[k]["std"])}
            continue
        mean = sums[k] / count[k]
        std = np.sqrt(np.maximum(sq[k] / count[k] - mean**2, 1e-12))
        out[k] = {"mean": [round(float(m), 6) for m in mean], "std": [round(float(s), 6) for s in std]}
    return out


def chunks(cohort: DecodedCohort, rows: np.ndarray, size: int = 32) -> Iterator[dict[str, np.ndarray]]:
    """The rows' decoded records, unnormalised, in batches of ``size``."""
    for start in range(0, len(rows), size):
        part = rows[start : start + size]
        yield collate([cohort[i] for i in part], len(part))


@dataclasses.dataclass(frozen=True)
class BatchSettings:
    """What a run's config says about its batches (``data.*``, ``train.*batch_size``, ``seed``)."""

    image_size: int
    clip_frames: int
    cache: bool
    norm: dict
    augment: dict
    batch_size: int
    eval_batch_size: int
    seed: int
    shuffle_buffer: int = 4096
    num_threads: int = 2
    prefetch: int = 4
    framing: Framing = DEFAULT_FRAMING
    masks: bool = False  # decode lesion masks into the batches (the lesion head's loss)
    inputs: tuple[str, ...] = IMAGE_INPUTS  # the image inputs the model takes: only those are decoded

    @classmethod
    def from_config(cls, config) -> BatchSettings:
        d = config.data
        return cls(
            image_size=d.image_size,
            clip_frames=d.clip_frames,
            cache=d.cache,
            norm=d.norm.to_dict(),
            augment=d.augment.to_dict(),
            batch_size=config.train.batch_size,
            eval_batch_size=config.train.eval_batch_size,
            seed=config.seed,
            shuffle_buffer=d.shuffle_buffer,
            num_threads=d.get("num_threads", 2),
            prefetch=d.get("prefetch", 4),
            framing=Framing.from_config(d),
            masks=bool(config.train.get("lesion_loss_weight", 0.0)),
            inputs=tuple(m for m in parse_modalities(config.modalities) if m in IMAGE_INPUTS),
        )


class GrainSource:
    """A cohort's batches as a run asks for them, through grain (no TensorFlow). Training
    batches hold this process's rows of each global batch; evaluation batches are global."""

    def __init__(self, cohort: Cohort, settings: BatchSettings, *, process_index: int = 0, process_count: int = 1):
        self.settings = settings
        self.process_index, self.process_count = process_index, process_count
        self.decoded = DecodedCohort(
            cohort.patients,
            settings.image_size,
            settings.clip_frames,
            settings.cache,
            settings.framing,
            masks=settings.masks,
            inputs=settings.inputs,
        )

    def train_batches(self, ids: Sequence[str], epoch: int, state: dict | None = None) -> Iterator[tuple[dict, dict]]:
        """``(iterator state after the batch, batch)`` pairs of one epoch, from ``state`` when given."""
        s = self.settings
        ds = train_epoch(
            self.decoded,
            self.decoded.index(ids),
            batch_size=s.batch_size,
            norm=s.norm,
            seed=s.seed,
            epoch=epoch,
            augment=s.augment,
            process_index=self.process_index,
            process_count=self.process_count,
        )
        it = iterate(ds, num_threads=s.num_threads, prefetch=s.prefetch, state=state)
        with self._one_blas_thread():
            for batch in it:
                yield it.get_state(), batch

    def eval_batches(self, ids: Sequence[str]) -> Iterator[dict]:
        s = self.settings
        ds = eval_dataset(self.decoded, self.decoded.index(ids), batch_size=s.eval_batch_size, norm=s.norm)
        with self._one_blas_thread():
            yield from iterate(ds, num_threads=s.num_threads, prefetch=s.prefetch)

    def _one_blas_thread(self):
        """While grain's threads prepare batches, numpy's BLAS (the resize and augmentation
        matrix products) runs one thread per call: the threads are the parallelism, and BLAS's own
        threads on top of them oversubscribe the cores (measured on 2 cores: 72 -> 130 decoded
        patients/s with 2 loader threads)."""
        if self.settings.num_threads <= 1:
            return contextlib.nullcontext()
        return threadpoolctl.threadpool_limits(limits=1, user_api="blas")

    def arrays(self, ids: Sequence[str]) -> dict[str, np.ndarray]:
        return stacked(self.decoded, self.decoded.index(ids))

    def normalisation_stats(self, ids: Sequence[str]) -> dict:
        return normalisation_stats(chunks(self.decoded, self.decoded.index(ids)))


def split_norm_stats(
    cohort: Cohort,
    ids: Sequence[str],
    *,
    image_size: int,
    clip_frames: int = 1,
    framing: Framing = DEFAULT_FRAMING,
    inputs: Sequence[str] = IMAGE_INPUTS,
) -> dict[str, dict[str, list[float]]]:
    """Per-modality, per-channel mean and std (:func:`normalisation_stats`) of the patients
    ``ids`` of ``cohort`` (a run's training split), decoded as training decodes them: at
    ``image_size``, framed by ``framing``, a CEUS clip's ``clip_frames`` frames; the image
    ``inputs`` only (another keeps the paper's statistics, which nothing reads)."""
    decoded = DecodedCohort(
        cohort.patients, image_size, clip_frames=clip_frames, cache=False, framing=framing, inputs=inputs
    )
    return normalisation_stats(chunks(decoded, decoded.index(ids)))


def manifest_norm_stats(
    manifest,
    *,
    image_size: int = 224,
    seed: int = 0,
    out=None,
    framing: Framing = DEFAULT_FRAMING,
    overwrite: bool = False,
    clip_frames: int = 1,
    test_fraction: float = 0.2,
    val_fraction: float = 0.2,
) -> dict:
    """``lnm-jax norm-stats``: per-modality mean/std of a manifest's training split (the split
    ``data.split.seed`` and its fractions make), over the pixels training feeds the model (a
    CEUS clip's ``clip_frames`` frames, as ``data.clip_frames``; 1: its peak frame), printed as
    JSON on stdout and as config overrides on stderr;
    also written to ``out`` when given (atomically; never onto an input, nor over an existing
    file unless ``overwrite``)."""
    import sys  # noqa: PLC0415

    from lnm_jax.data.cohorts.manifest import read_manifest  # noqa: PLC0415
    from lnm_jax.data.cohorts.splits import holdout_split, near_copy_groups, said_under  # noqa: PLC0415

    cohort = read_manifest(
        manifest,
        min_clip_frames=clip_frames,
        framing=framing,
    )
    if out:
        # a run's intensity_reference.json has this very shape: an existing file needs --overwrite
        guard_output(out, inputs=cohort.files(), overwrite=overwrite)
    with said_under(cohort.path):  # named as make_splits names it
        split = holdout_split(
            cohort.ids,
            cohort.labels,
            seed=seed,
            test_fraction=test_fraction,
            val_fraction=val_fraction,
            together=near_copy_groups(cohort),
        )
    stats = split_norm_stats(cohort, split.train, image_size=image_size, clip_frames=clip_frames, framing=framing)
    text = json_text(stats, indent=2)
    print(text)
    print(
        "use with: "
        + " ".join(
            f"--config.data.norm.{k}.{s}='({','.join(map(str, v[s]))})'"
            for k, v in stats.items()
            for s in ("mean", "std")
        ),
        file=sys.stderr,
    )
    print(  # values carry no record of their split: a run that draws another one would standardise
        # by its own test patients' pixels, unsaid (--config.data.norm_from=train takes each run's own)
        f"note: these are the training pixels of the split drawn with seed {seed} (test fraction {test_fraction:g}, "
        f"validation {val_fraction:g}); a run with another split seed, other fractions or folds would be "
        "standardised by pixels of its own test patients: there, --config.data.norm_from=train computes each "
        "run's own from its training split",
        file=sys.stderr,
    )
    if out:
        write_text(out, text)
    return stats
