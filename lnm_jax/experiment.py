"""A run's data: resolve the cohort (manifest or synthetic), its splits and its batches.

Glue between the data layer and training/evaluation. A run folder (``workdir``) holds:
``config.json``, ``splits.json``, ``cohort/`` (synthetic cohorts only), ``tfds/``,
``checkpoints/``, ``metrics.jsonl``, ``tb/`` and the evaluation outputs.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from ml_collections import ConfigDict

from lnm_jax.data import pipeline
from lnm_jax.data.manifest import Cohort, read_manifest
from lnm_jax.data.splits import Split, holdout_split, load_splits, save_splits
from lnm_jax.data.synthetic import SynthParams, generate_cohort
from lnm_jax.data.tfds_builder import load_cohort


def synth_params(config: ConfigDict) -> SynthParams:
    return SynthParams(**config.data.synth.to_dict())


def resolve_cohort(config: ConfigDict, workdir: Path) -> Cohort:
    """Validates ``data.manifest``, or (empty) synthesises the embedded cohort into
    ``workdir/cohort`` once and reuses it while its parameters match."""
    if config.data.manifest:
        return read_manifest(config.data.manifest, min_clip_frames=config.data.clip_frames)
    out = workdir / "cohort"
    params = synth_params(config)
    if (out / "generator.json").is_file():
        stored = json.loads((out / "generator.json").read_text())["params"]
        if stored != dataclasses.asdict(params):
            raise ValueError(f"{out} holds a synthetic cohort with other parameters "
                             f"({stored}); use a fresh --workdir")
    else:
        generate_cohort(out, params, progress=True)
    return read_manifest(out / "manifest.csv", min_clip_frames=config.data.clip_frames)


def run_split(config: ConfigDict, cohort: Cohort, workdir: Path) -> Split:
    """The run's patient-level split, created once and re-read (and checked) after."""
    path = workdir / "splits.json"
    if path.is_file():
        splits, doc = load_splits(path)
        if doc["manifest_sha256"] != cohort.sha256:
            raise ValueError(f"{path} was made for another manifest (sha256 "
                             f"{doc['manifest_sha256'][:12]} != {cohort.sha256[:12]})")
        return splits[0]
    sc = config.data.split
    split = holdout_split(cohort.ids, cohort.labels, seed=sc.seed,
                          test_fraction=sc.test_fraction, val_fraction=sc.val_fraction)
    save_splits(path, [split], seed=sc.seed, method="holdout",
                labels={p.patient_id: p.lnm for p in cohort.patients},
                manifest_sha256=cohort.sha256)
    return split


class RunData:
    """Decoded, cached datasets of a run's splits and their batch iterators."""

    def __init__(self, config: ConfigDict, cohort: Cohort, split: Split | None, workdir: Path,
                 *, require_labels: bool = True):
        self.config = config
        self.cohort = cohort
        self.split = split
        tfds_dir = Path(config.data.tfds_dir) if config.data.tfds_dir else workdir / "tfds"
        self._all = load_cohort(cohort, tfds_dir, require_labels=require_labels,
                                clip_frames=config.data.clip_frames)
        self._decoded: dict[str, object] = {}
        self.norm = config.data.norm.to_dict()

    def ids(self, subset: str) -> tuple[str, ...]:
        return tuple(self.cohort.ids) if subset == "all" else self.split.subset(subset)

    def decoded(self, subset: str):
        if subset not in self._decoded:
            self._decoded[subset] = pipeline.decoded_dataset(
                self._all, self.ids(subset), self.config.data.image_size, self.config.data.cache,
                self.config.data.clip_frames)
        return self._decoded[subset]

    def train_batches(self, epoch: int):
        c = self.config
        ds = pipeline.batches(self.decoded("train"), batch_size=c.train.batch_size, norm=self.norm,
                              train=True, seed=c.seed, epoch=epoch, augment=c.data.augment.to_dict(),
                              shuffle_buffer=c.data.shuffle_buffer)
        return pipeline.as_numpy(ds, c.train.batch_size)

    def eval_batches(self, subset: str):
        c = self.config
        ds = pipeline.batches(self.decoded(subset), batch_size=c.train.eval_batch_size,
                              norm=self.norm, train=False)
        return pipeline.as_numpy(ds, c.train.eval_batch_size)

    def sample_batch(self) -> dict:
        """A batch of zeros shaped as the evaluation batches, to initialise a model. Never a
        batch drawn from the cached datasets: an iterator abandoned after one batch leaves a
        partly filled ``tf.data`` cache that a later full pass may read as complete."""
        import numpy as np  # noqa: PLC0415

        c = self.config
        n, s, t = c.train.eval_batch_size, c.data.image_size, c.data.clip_frames
        ceus = (n, t, s, s, 3) if t > 1 else (n, s, s, 3)
        return {"bmode": np.zeros((n, s, s, 3), np.float32), "ceus": np.zeros(ceus, np.float32),
                "us_lnm": np.zeros(n, np.float32), "lnm": np.zeros(n, np.int32),
                **{f"has_{k}": np.ones(n, bool) for k in ("bmode", "ceus", "us_lnm")},
                "valid": np.ones(n, bool), "patient_id": np.array([b""] * n, dtype=object)}

    def train_arrays(self) -> dict:
        """The decoded training split as numpy arrays ([0, 1] images, not yet augmented or
        normalised), for a device-resident cohort (``data.on_device``)."""
        import numpy as np  # noqa: PLC0415

        parts = list(self.decoded("train").batch(256).as_numpy_iterator())
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0] if k != "patient_id"}

    def steps_per_epoch(self) -> int:
        return pipeline.num_batches(len(self.ids("train")), self.config.train.batch_size, True)


def open_run(workdir: Path | str) -> RunData:
    """A trained run's data as its folder recorded it: config, cohort and split."""
    workdir = Path(workdir)
    config = load_config(workdir)
    cohort = resolve_cohort(config, workdir)
    return RunData(config, cohort, run_split(config, cohort, workdir), workdir)


def save_config(config: ConfigDict, workdir: Path) -> None:
    (workdir / "config.json").write_text(config.to_json(indent=2))


def load_config(workdir: Path) -> ConfigDict:
    path = Path(workdir) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is {workdir} a training run folder?")
    return ConfigDict(json.loads(path.read_text()))
