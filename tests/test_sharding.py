"""Data-parallel training over a device mesh equals single-device training on the same global
batch, started through the multi-host path. Each check runs in a subprocess with 8 forced host
(CPU) devices, so the main test process keeps its single device."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from support import BACKBONE, cpu_env

CHECK = textwrap.dedent("""
    import jax, jax.numpy as jnp, numpy as np, optax
    from lnm_jax.training.sharding import initialize
    initialize("localhost:{port}", num_processes=1, process_id=0)  # the multi-host start-up path
    from lnm_jax.config import base_config
    from lnm_jax.models.fusion import FusionClassifier
    from lnm_jax.training import state as S
    from lnm_jax.training.sharding import data_mesh, replicate, shard_batch, check_batch_size
    from lnm_jax.training.steps import make_train_step, make_eval_step, predict

    assert jax.device_count() == 8 and jax.process_count() == 1, jax.devices()
    model = FusionClassifier(("bmode", "us_lnm"), backbone={backbone!r}, width=8)  # one branch's BatchNorm
    r = np.random.default_rng(0)
    batches = [{{"bmode": r.standard_normal((16, 32, 32, 3)).astype(np.float32),
                "ceus": r.standard_normal((16, 32, 32, 3)).astype(np.float32),
                "us_lnm": r.integers(0, 2, 16).astype(np.float32),
                "lnm": r.integers(0, 2, 16).astype(np.int32),
                "valid": np.ones(16, bool)}} for _ in range(3)]
    # SGD, not Adam: Adam's first steps move every weight by ~lr whatever its gradient's size,
    # so the sign of a ~1e-12 gradient (which summation order decides) would flip a weight by
    # 2 lr; SGD keeps the comparison well-conditioned. The step and sharding are the same.
    tx = optax.sgd(0.05, momentum=0.9)
    plateau = S.make_plateau(base_config().train.plateau)

    def run(mesh):
        st = S.create_train_state(model, jax.random.key(0), batches[0], tx, plateau)
        if mesh is not None:
            st = replicate(st, mesh)
        step = make_train_step(model, tx, mesh)
        losses = []
        for b in batches:
            st, m = step(st, b if mesh is None else shard_batch(b, mesh))
            losses.append(float(m["loss"]))
        logits = predict(make_eval_step(model, mesh), st.params, st.batch_stats,
                         [{{**batches[0], "patient_id": np.array([b"p"] * 16)}}], mesh)["logit"]
        return st, losses, logits

    single = run(None)
    mesh = data_mesh()
    check_batch_size(16, mesh)
    sharded = run(mesh)
    assert sharded[0].params["head"]["kernel"].sharding.is_fully_replicated
    # Tolerances from the arithmetic, not from one machine. The sharded step computes the
    # same function; only the order of its fp32 sums differs: BatchNorm statistics and the
    # loss are reduced per device, then across the 8 devices. A sum of n fp32 terms in another
    # order moves by ~sqrt(n) u (u = 2^-24 = 6e-8; n <= 16 x 16 x 16 = 4096 per channel at the
    # stem: ~4e-6), and ~20 normalisations compound it: ~1e-5 relative on the logits and the
    # loss (1.09e-5 was seen on an Intel Xeon at step 3). rtol 1e-4 leaves 10x; a sharding
    # defect (per-device BatchNorm statistics over 2 rows, gradients summed instead of averaged
    # over the 8 devices) moves the loss at the percent level.
    np.testing.assert_allclose(single[1], sharded[1], rtol=1e-4)
    # Parameters after 3 momentum-SGD steps: |delta| <= lr x (1 + 0.9 + 0.9^2) x |delta grad|
    # ~ 0.05 x 2.7 x 1e-4 = 1.4e-5 for gradients of order one: atol 5e-5.
    for a, b in zip(jax.tree.leaves((single[0].params, single[0].batch_stats)),
                    jax.tree.leaves((sharded[0].params, sharded[0].batch_stats))):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=5e-5)
    np.testing.assert_allclose(single[2], sharded[2], rtol=1e-4, atol=1e-4)
    try:
        check_batch_size(12, mesh)
        raise AssertionError("12 rows on 8 devices must be refused")
    except ValueError as e:
        assert "not divisible by the 8 devices" in str(e)
    print("SHARDED-OK", jax.process_count(), max(abs(x - y) / abs(x) for x, y in zip(single[1], sharded[1])))
""")


def test_sharded_training_matches_single_device_on_8_devices_through_the_multihost_start():
    """One process, 8 forced CPU devices, started through jax.distributed (the multi-host
    path): the data-parallel steps reach what one device does on the same global batch."""
    code = CHECK.format(port=29000 + os.getpid() % 1000 + 500, backbone=BACKBONE)
    out = subprocess.run([sys.executable, "-c", code], env=cpu_env(8), capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "SHARDED-OK 1" in out.stdout


def test_training_loop_runs_data_parallel_on_8_devices(tmp_path):
    """The whole loop on 8 devices, from the host pipeline and from a device-resident cohort
    (one subprocess, one cohort, both input paths), and a resume of the second."""
    code = textwrap.dedent(f"""
        import json, jax
        from lnm_jax.config import base_config
        from lnm_jax.data.synth.synthetic import SynthParams, generate_cohort
        from lnm_jax.run import Run
        from lnm_jax.training.loop import train
        assert jax.device_count() == 8
        manifest = generate_cohort({str(tmp_path / "cohort")!r}, SynthParams(patients=40, size=32, seed=1))
        # batches the 8 devices do not divide: refused before the run writes anything (helper-88:
        # the mesh's check came after the records and the initialisation's compile, exit 1)
        import os
        from lnm_jax.config import ConfigError
        bad = base_config("bmode,us_lnm")
        bad.data.manifest, bad.data.image_size, bad.model.backbone, bad.model.width = str(manifest), 32, {BACKBONE!r}, 8
        bad.train.batch_size, bad.train.eval_batch_size = 6, 16
        try:
            Run.create(bad, {str(tmp_path)!r} + "/bad")
            raise SystemExit("not refused")
        except ConfigError as e:
            assert "train.batch_size: 6 is not divisible by the 8 devices" in str(e), e
            assert "eval_batch_size" not in str(e) and "data_parallel=false" in str(e), e
        assert not os.path.exists({str(tmp_path)!r} + "/bad")
        from lnm_jax.pretraining.pretrain import check_batches
        bad.pretrain.batch_size = 6  # (helper-91: said by the mesh after every image was decoded)
        try:
            check_batches(bad, [])
            raise SystemExit("pretrain not refused")
        except ConfigError as e:
            assert "pretrain.batch_size: 6 is not divisible by the 8 devices" in str(e), e
        print("REFUSED-OK")
        for on_device in (False, True):
            c = base_config("bmode,us_lnm")  # one image branch: the loop's data-parallel path
            c.data.manifest, c.data.image_size = str(manifest), 32
            c.model.backbone, c.model.width = {BACKBONE!r}, 8
            c.train.epochs, c.train.batch_size, c.train.eval_batch_size = 2, 8, 16
            c.data.on_device = on_device
            run = Run.create(c, {str(tmp_path)!r} + f"/run_{{on_device}}")
            train(run)
            rows = [json.loads(x) for x in open(run.files.history)]
            assert [r["epoch"] for r in rows] == [1, 2], rows
            print("LOOP-OK", on_device, rows[-1]["train_loss"])
        # a resume on the mesh: restored into the replicated shapes, no initialisation
        c.train.epochs = 3
        train(Run.create(c, run.workdir, resume=True))
        assert [json.loads(x)["epoch"] for x in open(run.files.history)] == [1, 2, 3]
        print("RESUME-OK")
        # evaluate's predictions over the 8 devices (helper-88: device 0 alone), equal to one device's
        import dataclasses, numpy as np
        from lnm_jax.run import Run as R
        opened = R.open(run.workdir)
        p = opened.predictor("best")
        assert p.mesh is not None and p.mesh.devices.size == 8
        on_mesh = opened.predict("test")
        one = dataclasses.replace(p, mesh=None)(opened.data.eval_batches("test"))
        assert list(on_mesh["patient_id"]) == list(one["patient_id"]) and len(one["patient_id"]) > 0
        np.testing.assert_allclose(on_mesh["logit"], one["logit"], rtol=1e-5, atol=1e-5)
        print("EVAL-MESH-OK")
        # resumed on one device: the same experiment (helper-91: the refusal's remedy had been refused)
        c.train.epochs, c.train.data_parallel = 4, False
        train(Run.create(c, run.workdir, resume=True))
        assert [json.loads(x)["epoch"] for x in open(run.files.history)] == [1, 2, 3, 4]
        print("ONE-DEVICE-RESUME-OK")
    """)
    out = subprocess.run([sys.executable, "-c", code], env=cpu_env(8), capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "LOOP-OK False" in out.stdout and "LOOP-OK True" in out.stdout and "RESUME-OK" in out.stdout
    assert "REFUSED-OK" in out.stdout and "EVAL-MESH-OK" in out.stdout and "ONE-DEVICE-RESUME-OK" in out.stdout


def test_prefetch_to_device_keeps_order_and_runs_ahead():
    from lnm_jax.training.sharding import prefetch_to_device

    calls = []

    def put(x):
        calls.append(x)
        return x * 10

    seen = []
    for host, dev in prefetch_to_device(iter(range(5)), put, size=2):
        seen.append((host, dev, len(calls)))
    # when batch k is handed out, batch k+1 is already on its way (until the end)
    assert seen == [(0, 0, 2), (1, 10, 3), (2, 20, 4), (3, 30, 5), (4, 40, 5)]
    assert list(prefetch_to_device(iter([]), put)) == []


TWO_PROCESS = textwrap.dedent("""
    import sys, jax, numpy as np, optax
    from lnm_jax.training.sharding import initialize, data_mesh, replicate, shard_batch, to_host
    initialize("localhost:{port}", num_processes=2, process_id=int(sys.argv[1]))
    from lnm_jax.config import base_config
    from lnm_jax.models.fusion import FusionClassifier
    from lnm_jax.training import state as S
    from lnm_jax.training.steps import make_train_step
    assert jax.process_count() == 2 and jax.device_count() == 8 and jax.local_device_count() == 4
    model = FusionClassifier(("bmode", "us_lnm"), backbone={backbone!r}, width=4)
    r = np.random.default_rng(0)  # both processes hold the same global batch
    b = {{"bmode": r.standard_normal((8, 32, 32, 3)).astype(np.float32),
         "us_lnm": r.integers(0, 2, 8).astype(np.float32), "lnm": r.integers(0, 2, 8).astype(np.int32),
         "valid": np.ones(8, bool)}}
    tx = optax.sgd(0.05, momentum=0.9)
    plateau = S.make_plateau(base_config().train.plateau)
    fresh = lambda: S.create_train_state(model, jax.random.key(0), b, tx, plateau)  # steps donate it
    mesh = data_mesh()
    sharded, stepn = replicate(fresh(), mesh), make_train_step(model, tx, mesh)
    for _ in range(2):
        sharded, mn = stepn(sharded, shard_batch(b, mesh))  # each process feeds its 4 rows
    logits = to_host(mn["logits"])  # the global batch's, gathered from both processes
    if jax.process_index() == 0:  # the reference: one device alone (process 0 is enough)
        single, step1 = fresh(), make_train_step(model, tx)
        for _ in range(2):
            single, m1 = step1(single, b)
        # the same summation-order argument as the 8-device check: rtol 1e-4
        np.testing.assert_allclose(float(mn["loss"]), float(m1["loss"]), rtol=1e-4)
        # logits of the second step (after one update): summation order moves them by ~1e-4
        np.testing.assert_allclose(logits, np.asarray(m1["logits"]), rtol=1e-4, atol=5e-4)
    print("TWO-PROCESS-OK", jax.process_index(), float(mn["loss"]))
""")


def test_two_local_processes_train_as_one_data_parallel_job():
    """jax.distributed on CPU: two processes x 4 devices reach what one device does on the
    same global batch (collectives over gloo)."""
    code = TWO_PROCESS.format(port=29000 + os.getpid() % 1000, backbone=BACKBONE)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(i)],
            env=cpu_env(4),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
        assert "TWO-PROCESS-OK" in out
