"""Helpers shared by the test modules (imported as ``support``: pytest puts tests/ on the path)."""

from __future__ import annotations

import os

from lnm_jax.config import base_config

# The quality tests' scenarios are seeded by this (default 0); scripts/measure_test_margins.py
# reruns them over several seeds to measure the spread their margins are set from.
SEED = int(os.environ.get("LNM_TEST_SEED", "0"))


# The backbone of the tests' models: ResNet-10 (one basic block per stage), the smallest ResNet.
# A test of behaviour (a step, a checkpoint, a command) needs a ResNet, not a deep one; ResNet-10
# traces, compiles and trains in about three quarters of ResNet-18's time. A quality test's margin
# comes from the seed spread measured with its backbone (scripts/measure_test_margins.py): the
# learning and Grad-CAM tests were measured with ResNet-10; the others keep QUALITY_BACKBONE,
# with which ResNet-10 spread too far (2026-12-01, 5 seeds: all three inputs minus B-mode + flag
# SD 0.036 against 0.009, late fusion's gap SD 0.010 against 0.005, the clip gain SD 0.10 against
# 0.064, the pretraining probe's gain SD 0.046 against 0.031).
BACKBONE = "resnet10"
QUALITY_BACKBONE = "resnet18"


def tiny_config(manifest, setting="dual", epochs=2, backbone=BACKBONE):
    """A run small enough for a test: 32 px, ``backbone`` (ResNet-10) of width 8, two epochs."""
    c = base_config(setting)
    c.data.manifest = str(manifest)
    c.data.image_size = 32
    c.model.backbone = backbone
    c.model.width = 8
    c.train.epochs = epochs
    c.train.batch_size = 8
    c.train.eval_batch_size = 16
    c.eval.bootstrap = 200
    return c


def model_config(setting="triple", *, width=8, batch=8, data=None, model=None):
    """A config for a model-only test (no cohort): 32 px, ResNet-10 of ``width``, ``batch`` rows
    in ``lnm_jax.run.zero_batch``; ``data`` and ``model`` fields set over it."""
    c = base_config(setting)
    c.data.image_size, c.model.backbone, c.model.width, c.train.eval_batch_size = 32, BACKBONE, width, batch
    for group, fields in (("data", data), ("model", model)):
        for k, v in (fields or {}).items():
            c[group][k] = v
    return c


def saved_at_the_end(c):
    """``c`` (a config, changed in place and returned) writing its run's checkpoints at the last
    epoch only (``train.checkpoint_every_epochs`` = ``train.epochs``; an early stop is a save
    point too): the best epoch is held on the host until then. The history, the best and the
    latest states are bit for bit those of saving every epoch (the loop's ``SaveSchedule``;
    test_training.py: test_epochs_between_save_points_cost_no_result), without each epoch's
    orbax saves (0.2-0.5 s of CPU each at test size, 1-2 an epoch). For the quality tests, which
    judge what a run learns, not its checkpoints; their margins were measured saving every
    epoch, which gives the same values."""
    c.train.checkpoint_every_epochs = c.train.epochs
    return c


def compiled(fn):
    """``fn`` as one program compiled with the train step's options (``compile_options.STEP``),
    for a test that calls a model outside a run: run eagerly, every operation is compiled on its
    own for each new shape (a ResNet's forward pass: ~100 programs, seconds in all), and
    ``jax.jit``'s default builds at LLVM -O3, slower to compile than the step's -O1."""
    from lnm_jax import compile_options  # noqa: PLC0415

    return compile_options.jit(fn, kind=compile_options.STEP)


def drawn_variables(model, *args, seed: int = 0, **kwargs) -> dict:
    """Variables of ``model.init(key, *args, **kwargs)``'s structure (``jax.eval_shape``: nothing
    compiled or run), their values drawn by numpy from ``seed``: kernels (2-D and up) normal with
    std 1/sqrt(fan_in), as flax's default LeCun-normal ones; BatchNorm scales uniform in
    [0.5, 1.5]; other 1-D parameters (biases, BatchNorm offsets, absent-input embeddings) of
    either sign, magnitude uniform in [0.5, 1.5]: no term of a formula is zero, and about half
    of the units stay below ReLU's threshold; BatchNorm statistics as ``init`` sets them (means
    0, variances 1), and any other collection (``perturbations``, Grad-CAM's) zeros, as ``init``
    sets it. Unstacked models only (a stacked model's leading branch axis would count in fan_in):
    stack drawn variables instead. For a test of a function of any values, whose tolerances do
    not come from values measured with ``init``'s: ``init`` itself is one program of
    per-parameter random initialisers (~2-4 s to compile per model on 2 cores; eagerly, one
    program per shape)."""
    import jax  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415

    r = np.random.default_rng(seed)

    def draw(path, leaf):
        collection, name = (str(getattr(p, "key", p)) for p in (path[0], path[-1]))
        if collection == "batch_stats":
            return (np.zeros if name == "mean" else np.ones)(leaf.shape, leaf.dtype)
        if collection != "params":  # flax's perturb() (Grad-CAM's gradients): zeros, as init's
            return np.zeros(leaf.shape, leaf.dtype)
        if len(leaf.shape) >= 2:
            return (r.standard_normal(leaf.shape) / np.sqrt(np.prod(leaf.shape[:-1]))).astype(leaf.dtype)
        magnitude = r.uniform(0.5, 1.5, leaf.shape)
        sign = 1.0 if name == "scale" else r.choice([-1.0, 1.0], leaf.shape)
        return (sign * magnitude).astype(leaf.dtype)

    shapes = jax.eval_shape(lambda *a: model.init(jax.random.key(seed), *a, **kwargs), *args)
    return jax.tree_util.tree_map_with_path(draw, shapes)


def auc_as_evaluated(predictions: dict) -> float:
    """The AUC ``evaluate`` reports for a subset's predictions (``Run.predict``'s: labels and
    logits, scored as ``evaluate`` scores them, through a float64 sigmoid), without the rest of
    ``evaluate``'s work (bootstrap, plots, Grad-CAM, model card): what a quality test needs."""
    from lnm_jax import names  # noqa: PLC0415
    from lnm_jax.evaluation import metrics as M  # noqa: PLC0415

    return M.safe_auc(predictions[names.LABEL], M.sigmoid(predictions["logit"]))


def cpu_env(devices: int | None = None) -> dict:
    """The environment of a subprocess test: CPU only, ``devices`` forced host devices, keeping
    any XLA flags of the caller (e.g. ``--xla_cpu_max_isa`` when the suite runs under another
    instruction set)."""
    flags = os.environ.get("XLA_FLAGS", "")
    if devices:
        flags = f"{flags} --xla_force_host_platform_device_count={devices}".strip()
    return {**os.environ, "XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu"}


def record(test: str, **values) -> None:
    """Appends a quality test's measured values to $LNM_TEST_RECORD (one JSON line), so that
    scripts/measure_test_margins.py can collect them over seeds; a no-op otherwise."""
    path = os.environ.get("LNM_TEST_RECORD")
    if path:
        import json  # noqa: PLC0415

        with open(path, "a") as f:
            f.write(
                json.dumps({"test": test, "seed": SEED, "xla_flags": os.environ.get("XLA_FLAGS", ""), **values}) + "\n"
            )


def new_patients(manifest, out, n: int):
    """The first ``n`` patients of ``manifest`` as a manifest of new patients (no ``lnm``
    column, absolute image paths) at ``out``."""
    import csv  # noqa: PLC0415

    with open(manifest) as f:
        rows = list(csv.DictReader(f))[:n]
    with open(out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["patient_id", "bmode", "ceus", "us_lnm"])
        w.writeheader()
        base = os.path.dirname(os.path.abspath(manifest))
        w.writerows(
            {
                "patient_id": r["patient_id"],
                "us_lnm": r["us_lnm"],
                **{k: os.path.join(base, r[k]) for k in ("bmode", "ceus")},
            }
            for r in rows
        )
    return out


def own_pictures(path, n: int) -> list[str]:
    """``n`` pictures made from the PNG or JPEG still at ``path``, beside it
    (``<stem>_<k><suffix>``; their names returned), each its own: copy k is rolled by k/(n+1) of
    the image's height and width (a ramp or a lesion moves: no copy is a near-duplicate of
    another, ``similar_image``) and told apart by its middle sample too (+37, +74, ... modulo its
    depth). One picture named by two patients of a manifest is refused (``shared_image``), so a
    test's rows each take their own picture made from a filler image."""
    from pathlib import Path  # noqa: PLC0415

    import numpy as np  # noqa: PLC0415
    from PIL import Image  # noqa: PLC0415

    path = Path(path)
    with Image.open(path) as im:
        pixels = np.array(im)
    names = []
    for k in range(1, n + 1):
        h, w = pixels.shape[:2]
        copy = np.roll(pixels, (k * h // (n + 1), k * w // (n + 1)), axis=(0, 1))
        middle = copy.size // 2 + copy.shape[1] // 2 * (copy.size // copy.shape[0] // copy.shape[1])
        copy.flat[middle] = (int(copy.flat[middle]) + 37 * k) % (256 if copy.dtype == np.uint8 else 65536)
        out = path.with_name(f"{path.stem}_{k}{path.suffix}")
        Image.fromarray(copy).save(out, quality=95)
        names.append(out.name)
    return names
