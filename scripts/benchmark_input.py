"""Input throughput: decoded + augmented patients per second, grain (numpy augmentation in its
threads, or the JAX augmentation of ``data.on_device`` on the batches) against the TFDS +
tf.data path, at the paper's 224x224.

    python scripts/benchmark_input.py --patients 128 --threads 1     # under `taskset -c 0`: per core
    python scripts/benchmark_input.py --patients 128 --threads 2

Each row is one epoch over the cohort after a warm-up epoch: 'cold' decodes every image
(cache off: PNG decode + resize + augmentation + normalisation), 'cached' only augments and
normalises (the decoded images kept in memory, the training default). TensorFlow rows need the
[tf] extra and are skipped without it.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from lnm_jax import names
from lnm_jax.config import base_config
from lnm_jax.data.cohorts.manifest import read_manifest
from lnm_jax.data.loaders.loader import BatchSettings, GrainSource
from lnm_jax.data.synth.synthetic import SynthParams, generate_cohort
from lnm_jax.fileio import write_json


def epoch_rate(batches_of_epoch, patients: int) -> float:
    """Patients per second over one whole epoch, after one warm-up epoch."""
    for _ in batches_of_epoch(0):
        pass
    t0 = time.perf_counter()
    n = sum(len(b[names.LABEL]) for b in batches_of_epoch(1))
    assert n == patients, (n, patients)
    return n / (time.perf_counter() - t0)


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--patients", type=int, default=128)
    p.add_argument("--size", type=int, default=224, help="input size (the synthetic images are 1.15x larger)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=2, help="grain threads; tf.data's private thread pool")
    p.add_argument("--out", type=Path, help="also write the rows as JSON")
    a = p.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        manifest = generate_cohort(Path(tmp) / "c", SynthParams(patients=a.patients, size=int(a.size * 1.15), seed=0))
        cohort = read_manifest(manifest)
        ids = cohort.ids[: a.patients // a.batch_size * a.batch_size]
        c = base_config()
        aug = c.data.augment.to_dict()

        def settings(cache: bool) -> BatchSettings:
            return BatchSettings(
                image_size=a.size,
                clip_frames=1,
                cache=cache,
                norm=c.data.norm.to_dict(),
                augment=aug,
                batch_size=a.batch_size,
                eval_batch_size=a.batch_size,
                seed=0,
                num_threads=a.threads,
            )

        for cache in (False, True):
            src = GrainSource(cohort, settings(cache))
            rate = epoch_rate(lambda e, src=src: (b for _, b in src.train_batches(ids, e)), len(ids))
            rows.append({"path": "grain + numpy augmentation", "cache": cache, "patients_per_s": rate})

        rows.append(jax_augmentation_row(cohort, ids, settings(True), aug, c.data.norm.to_dict()))
        try:
            import tensorflow as tf

            tf.config.threading.set_inter_op_parallelism_threads(a.threads)
            tf.config.threading.set_intra_op_parallelism_threads(a.threads)
            from lnm_jax.data.loaders.pipeline import TfdsSource
        except ImportError as e:
            print(f"tf.data rows skipped: {e}")
        else:
            for cache in (False, True):
                src = TfdsSource(cohort, settings(cache), Path(tmp) / "tfds")
                rate = epoch_rate(lambda e, src=src: (b for _, b in src.train_batches(ids, e)), len(ids))
                rows.append({"path": "TFDS + tf.data", "cache": cache, "patients_per_s": rate})
    for r in rows:
        r.update(threads=a.threads, size=a.size, batch=a.batch_size)
        print(
            f"{r['path']:42s} cache={str(r['cache']):5s}  {r['patients_per_s']:8.1f} patients/s  ({a.threads} threads)"
        )
    if a.out:
        write_json(a.out, rows)
    return rows


def jax_augmentation_row(cohort, ids, settings, aug, norm) -> dict:
    """The decoded, cached images augmented and normalised by the device-resident cohort's jitted
    JAX function (here on the CPU; on a GPU it runs beside the step)."""
    import jax

    from lnm_jax.data.loaders.on_device import DeviceCohort

    src = GrainSource(cohort, settings)
    dev = DeviceCohort(src.arrays(ids), batch_size=settings.batch_size, norm=norm, augment=aug, seed=0)

    def epoch(e):
        for b in dev.epoch(e):
            jax.block_until_ready(b)
            yield {names.LABEL: np.asarray(b[names.LABEL])}

    return {
        "path": "cached + JAX augmentation (data.on_device)",
        "cache": True,
        "patients_per_s": epoch_rate(epoch, len(ids)),
    }


if __name__ == "__main__":
    main()
