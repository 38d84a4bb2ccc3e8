"""End-to-end training throughput: `lnm-jax train` at paper size on a synthetic cohort, with the
decoded training split held on the accelerator (``data.on_device``) and fed from the host by
the grain loader, reporting patients/s over whole epochs (validation and checkpoints included:
the loop's ``epoch_cycle_s``, from one epoch's line to the next, over the epochs after the
first, which compiles; its ``epoch_time_s`` stops before the epoch's checkpoints are saved).
Epoch k's cycle holds epoch k-1's saves, so the average over epochs 2..E counts the saves of
epochs 1..E-1. ``--checkpoint-every-epochs N`` (``train.checkpoint_every_epochs``) writes them
every N epochs and at the last: over E = N + 1 epochs the timed cycles (epochs 2..E) hold one
save point, what a run saving every N epochs spends per epoch on average (an improving epoch
between save points costs a copy of the state to the host, in its cycle too); E - 1 must be a
multiple of N (else the timed cycles would hold more or fewer save points than one every N). ``--tiny`` runs
E = 3 epochs, and the GPU check's toy run saves every 2: epoch 1 held on the host, epoch 2 a save
point whose saves (the process's first) fall in epoch 3's cycle.
Needs no TensorFlow (the run fails if it imports it).

    python scripts/train_e2e.py --patients 3000 --epochs 3        # a GPU: ResNet-50, 224 px, bf16, batch 256
    python scripts/train_e2e.py --epochs 6 --checkpoint-every-epochs 5   # the same, saving every 5 epochs
    python scripts/train_e2e.py --tiny                            # any CPU: the same path at toy size
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from lnm_jax import host_memory

if __name__ == "__main__":  # as the lnm-jax command runs, under its allocator setting; before JAX loads
    host_memory.restart_with_huge_pages()
# JAX, the model and the loop are imported once the arguments are accepted (in main and run_one):
# a refused argument costs no import (8-9 s of CPU, here, when they were imported above)

TINY = dict(patients=48, size=32, backbone="resnet10", width=4, dtype="float32", batch_size=8, epochs=3, threads=2)


def run_one(manifest: Path, workdir: Path, a, on_device: bool) -> dict:
    from lnm_jax.config import base_config
    from lnm_jax.metric_writer import read_history
    from lnm_jax.run import Run
    from lnm_jax.training.loop import train

    c = base_config("triple")
    c.data.manifest, c.data.image_size, c.data.on_device = str(manifest), a.size, on_device
    c.data.num_threads = a.threads
    c.model.backbone, c.model.width, c.model.dtype = a.backbone, a.width, a.dtype
    c.train.epochs, c.train.batch_size, c.train.eval_batch_size = a.epochs, a.batch_size, a.batch_size
    c.train.checkpoint_every_epochs = a.checkpoint_every_epochs
    c.eval.bootstrap = 0
    t0 = time.perf_counter()
    run = Run.create(c, workdir)  # the manifest checked, the cohort surveyed, the splits drawn
    t1 = time.perf_counter()
    train(run)
    wall = time.perf_counter() - t1
    history = read_history(run.files.history)
    steps = run.data.steps_per_epoch()
    later = history[1:]  # the first epoch includes compilation
    if not later:
        raise SystemExit(f"{workdir}: fewer than 2 epochs ran (early stop?): no epoch was timed")
    patients = steps * a.batch_size  # per epoch
    steps_s = sum(patients / r["train_patients_per_s"] for r in later) / len(later)  # the same epochs
    cycle_s = sum(r["epoch_cycle_s"] for r in later) / len(later)  # steps, validation, checkpoints, log
    between_s = sum(r["epoch_cycle_s"] - r["epoch_time_s"] for r in later) / len(later)
    return {
        "on_device": on_device,
        "checkpoint_every_epochs": a.checkpoint_every_epochs,
        "train_patients": len(run.split.train),
        "patients_per_epoch": patients,
        "epochs": len(history),
        "setup_s": round(t1 - t0, 2),
        "wall_s_all_epochs": round(wall, 2),
        "patients_per_s_steps_only": round(patients / steps_s, 1),
        "patients_per_s_whole_epoch": round(patients / cycle_s, 1),
        "checkpoints_and_log_s_per_epoch": round(between_s, 2),
    }


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", type=Path, required=True)
    p.add_argument("--patients", type=int, default=3000)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--backbone", default="resnet50")
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--epochs", type=int, default=3, help="at least 2: the first compiles, the others are timed")
    p.add_argument("--threads", type=int, default=8, help="grain threads (data.num_threads)")
    p.add_argument(
        "--checkpoint-every-epochs",
        type=int,
        default=1,
        help="train.checkpoint_every_epochs: latest (and a held best) written every N epochs and at the last",
    )
    p.add_argument("--tiny", action="store_true", help=f"toy sizes for a CPU: {TINY}")
    a = p.parse_args(argv)
    if a.tiny:
        for k, v in TINY.items():
            setattr(a, k, v)
    if a.checkpoint_every_epochs < 1:
        p.error("--checkpoint-every-epochs must be at least 1")
    if a.epochs < 2:
        p.error("--epochs must be at least 2: the first epoch compiles, the whole-epoch rate is taken over the others")
    n, timed = a.checkpoint_every_epochs, a.epochs - 1  # the timed cycles hold the saves of epochs 1..E-1
    if timed % n:
        p.error(
            f"--epochs {a.epochs} with --checkpoint-every-epochs {n}: the timed epochs 2..{a.epochs} would hold "
            f"{timed // n} save point(s) in {timed} cycles, not one every {n}, and the whole-epoch rate would not "
            f"be a run's; use --epochs {(timed // n + 1) * n + 1} (1 + a multiple of {n})"
        )
    if a.workdir.exists() and any(a.workdir.iterdir()):
        p.error(f"--workdir {a.workdir} is not empty: the script writes a new cohort and runs there")
    import jax

    from lnm_jax.data.synth.synthetic import SynthParams, generate_cohort
    from lnm_jax.fileio import write_json

    params = SynthParams(patients=a.patients, size=int(a.size * 1.15), seed=0)
    t0 = time.perf_counter()
    manifest = generate_cohort(a.workdir / "cohort", params)
    print(
        f"cohort: {a.patients} synthetic patients at {params.size} px in {time.perf_counter() - t0:.1f} s", flush=True
    )
    device = jax.devices()[0].device_kind
    rows = []
    for on_device in (True, False):  # each row printed when measured: a time limit keeps the first
        rows.append(run_one(manifest, a.workdir / f"on_device_{on_device}", a, on_device))
        print(json.dumps({**rows[-1], "device": device}), flush=True)
    info = {"device": device, "tensorflow_imported": "tensorflow" in sys.modules, **vars(a)}
    info["workdir"] = str(a.workdir)
    write_json(a.workdir / "train_e2e.json", {"info": info, "rows": rows})
    if info["tensorflow_imported"]:
        raise SystemExit("TensorFlow was imported: the accelerator path must not need it")
    return rows


if __name__ == "__main__":
    main()
