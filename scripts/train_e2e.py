"""End-to-end training throughput: `lnm-jax train` at paper size on a synthetic cohort, with the
decoded training split held on the accelerator (``data.on_device``) and fed from the host by
the grain loader, reporting patients/s over whole epochs (validation and checkpoints included:
the loop's ``epoch_cycle_s``, from one epoch's line to the next; its ``epoch_time_s`` stops
before the epoch's checkpoints are saved). ``--checkpoint-every-epochs N``
(``train.checkpoint_every_epochs``) writes them every N epochs and at the last, in the background
(``training/save_schedule.py``): a save point copies the state on the device, and the next one
waits for its save to finish. Epoch k's cycle holds what follows epoch k-1's line: that wait and
the copy where k-1 is a save point, the copy of an improving epoch's state otherwise. The rate is
taken over the last N cycles (epochs E-N+1..E), which hold one save point and its wait for the
one before, what a run saving every N epochs spends per epoch once past its start: E >= 2N + 1
(N = 0, saving whenever the last save is done: epochs 3..E, E >= 5).
Each row also lists the timed epochs' cycles with, in brackets, their steps and validation
(``timed_cycles_s``): a save point's wait shows in the cycle after it.
``--tiny`` runs E = 3 epochs, and the GPU check's toy run saves every epoch.
Needs no TensorFlow (the run fails if it imports it).

    python scripts/train_e2e.py --patients 3000 --epochs 3        # a GPU: ResNet-50, 224 px, bf16, batch 256
    python scripts/train_e2e.py --epochs 11 --checkpoint-every-epochs 5   # the same, saving every 5 epochs
    python scripts/train_e2e.py --tiny --feed device               # any CPU: the same path at toy size
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path

from lnm_jax import host_memory

if __name__ == "__main__":  # as the lnm-jax command runs, under its allocator setting; before JAX loads
    host_memory.restart_with_huge_pages()
# JAX, the model and the loop are imported once the arguments are accepted (in main and run_one):
# a refused argument costs no import (8-9 s of CPU, here, when they were imported above)

TINY = dict(patients=48, size=32, backbone="resnet10", width=4, dtype="float32", batch_size=8, epochs=3, threads=2)


class MainThreadSampler:
    """Where the training loop's thread spends the timed epochs' wall time: every ``interval``
    seconds, once the run's history holds ``after`` lines, the main thread's Python stack is
    sampled (``sys._current_frames``), so a wait in C (a device-to-host copy, the wait for a
    background save) counts as the Python line that waits. ``table(n)`` lists the ``n``
    functions on most sampled stacks (inclusive share) and the ``n`` innermost ones (self)."""

    def __init__(self, history: Path, after: int, interval: float = 0.002):
        import threading

        self.history, self.after, self.interval = history, after, interval
        self.samples: list[tuple[str, ...]] = []
        self._stop = threading.Event()
        self._main = threading.main_thread().ident
        self._thread = threading.Thread(target=self._run, name="e2e-sampler", daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _lines(self) -> int:
        try:
            return self.history.read_text().count("\n")
        except OSError:
            return 0

    def _run(self) -> None:
        while not self._stop.is_set() and self._lines() < self.after:
            time.sleep(0.05)
        while not self._stop.is_set():
            frame, stack = sys._current_frames().get(self._main), []
            while frame is not None:
                code = frame.f_code
                stack.append(f"{Path(code.co_filename).name}:{code.co_name}")
                frame = frame.f_back
            self.samples.append(tuple(stack))
            time.sleep(self.interval)

    def table(self, n: int) -> str:
        from collections import Counter

        total = len(self.samples)
        if not total:
            return "no samples (the timed epochs did not start)"
        inclusive = Counter(f for stack in self.samples for f in set(stack))
        own = Counter(stack[0] for stack in self.samples if stack)
        lines = [f"main thread over the timed epochs: {total} samples every {self.interval * 1e3:.0f} ms", ""]
        lines += ["| function (file:name) | on the stack | innermost |", "|---|---:|---:|"]
        for name in sorted(
            set(dict(inclusive.most_common(n))) | set(dict(own.most_common(n))), key=lambda k: -inclusive[k]
        ):
            lines.append(f"| `{name}` | {inclusive[name] / total:.1%} | {own[name] / total:.1%} |")
        return "\n".join(lines)


def min_epochs(n: int) -> int:
    """The fewest epochs a run saving every ``n`` epochs is timed over (0: whenever the last
    save is done): the first compiles; 2n + 1 holds a save point's wait for the one before; with
    n = 0, epochs 3 on, after the first save's."""
    return 2 * n + 1 if n else 5


def timed_epochs(a) -> int:
    """How many of the last epochs the rate is taken over: N, or (N = 0) all from the third."""
    return a.checkpoint_every_epochs or a.epochs - 2


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
    if a.host_profile:
        try:  # the samples so far are printed when a time limit stops the run (SIGTERM: see main)
            with MainThreadSampler(run.files.history, a.epochs - timed_epochs(a)) as sampler:
                train(run)
        finally:
            print(sampler.table(a.host_profile), flush=True)
    else:
        train(run)
    wall = time.perf_counter() - t1
    history = read_history(run.files.history)
    steps = run.data.steps_per_epoch()
    later = history[-timed_epochs(a) :]  # one save point's period (the module's docstring)
    if len(history) < min_epochs(a.checkpoint_every_epochs):
        raise SystemExit(f"{workdir}: {len(history)} of {a.epochs} epochs ran (early stop?): too few to time")
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
        "timed_epochs": f"{later[0]['epoch']}-{later[-1]['epoch']}",
        # each timed epoch's cycle and, of it, its steps and validation: where a wait for saves shows
        "timed_cycles_s": " / ".join(f"{r['epoch_cycle_s']:.2f} ({r['epoch_time_s']:.2f})" for r in later),
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
    p.add_argument("--epochs", type=int, default=3, help="at least 2N + 1 (N: --checkpoint-every-epochs; 5 for N = 0)")
    p.add_argument("--threads", type=int, default=8, help="grain threads (data.num_threads)")
    p.add_argument(
        "--checkpoint-every-epochs",
        type=int,
        default=1,
        help="train.checkpoint_every_epochs: latest (and a held best) written every N epochs and at the last "
        "(0: whenever the last save is done)",
    )
    p.add_argument(
        "--feed",
        choices=("both", "device", "host"),
        default="both",
        help="the training split held on the device (data.on_device), fed by the host loader, or both (one row each)",
    )
    p.add_argument(
        "--host-profile",
        type=int,
        default=0,
        metavar="N",
        help="sample the training loop's thread over the timed epochs; print the N functions it spends most time in",
    )
    p.add_argument("--tiny", action="store_true", help=f"toy sizes for a CPU: {TINY}")
    a = p.parse_args(argv)
    if a.tiny:
        for k, v in TINY.items():
            setattr(a, k, v)
    if a.checkpoint_every_epochs < 0:
        p.error("--checkpoint-every-epochs must be at least 0")
    n = a.checkpoint_every_epochs
    if a.epochs < min_epochs(n):
        which = f"{n} epoch(s), which must hold a save point and its wait for the one before" if n else "epochs 3 on"
        p.error(
            f"--epochs {a.epochs} with --checkpoint-every-epochs {n}: the rate is taken over the last {which} (saves "
            f"run in the background), after the first epoch (it compiles); use --epochs {min_epochs(n)} or more"
        )
    if a.workdir.exists() and any(a.workdir.iterdir()):
        p.error(f"--workdir {a.workdir} is not empty: the script writes a new cohort and runs there")
    if a.host_profile:  # a time limit's SIGTERM stops training as Ctrl-C does: the table is printed
        signal.signal(signal.SIGTERM, signal.default_int_handler)
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
    feeds = {"both": (True, False), "device": (True,), "host": (False,)}[a.feed]
    for on_device in feeds:  # each row printed when measured: a time limit keeps the first
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
