"""Cross-framework weights: ports verified against the real torchvision and Keras models."""

from __future__ import annotations

import json
import warnings

import jax
import numpy as np
import pytest
import torch
import torchvision

from lnm_jax.cli import main
from lnm_jax.weights import verify as V
from lnm_jax.weights.convert import (
    WeightMismatchError,
    from_keras_resnet50,
    from_torchvision,
    keras_caffe_input,
    standardised_rgb_stem,
    to_torchvision,
)
from lnm_jax.weights.io import KERAS_PORT_INPUT, keras_layer_weights, load_backbone, read_torch_state_dict

NO_KERAS = "Keras/TensorFlow not installed (pip install -e '.[tf]')"

X = np.random.default_rng(0).standard_normal((2, 160, 160, 3)).astype(np.float32)


def _torch_model(arch, seed=0):
    torch.manual_seed(seed)
    model = getattr(torchvision.models, arch)(weights=None)
    V.randomise_torch_bn(model, seed=seed)
    return model


def _numpy_sd(model):
    return {k: v.detach().numpy() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("arch", ["resnet18", "resnet34", "resnet50"])
def test_torchvision_port_matches_torchvision_stage_by_stage(arch):
    model = _torch_model(arch)
    ref = V.torchvision_stages(model, X)
    ours = V.flax_stages(from_torchvision(_numpy_sd(model), arch), arch, "torchvision", X, fc=V.torch_fc(model))
    diffs = V.compare(ours, ref)
    assert set(diffs) == set(V.STAGES)
    table, ok = V.report(diffs, ref)
    assert ok, table
    assert np.abs(ref["stage4"]).max() > 1.0  # non-trivial activations were compared


def test_export_back_to_torchvision_is_exact():
    model = _torch_model("resnet50", seed=1)
    sd = _numpy_sd(model)
    back = to_torchvision(from_torchvision(sd, "resnet50"))
    fresh = torchvision.models.resnet50(weights=None)
    result = fresh.load_state_dict({k: torch.from_numpy(v) for k, v in back.items()}, strict=False)
    assert result.missing_keys == ["fc.weight", "fc.bias"] and not result.unexpected_keys
    for k, v in back.items():
        if not k.endswith("num_batches_tracked"):
            np.testing.assert_array_equal(v, sd[k], err_msg=k)


def test_ports_hand_on_arrays_of_their_own():
    """A torch model trained on after its port (its running statistics updated in place) left
    the ported variables changed with it (a fresh-user trial: a running mean of zeros read back
    as -0.0004); and a state_dict from ``to_torchvision`` taken into torch tensors with
    ``torch.from_numpy`` and changed there changed the variables it came from."""
    model = _torch_model("resnet18")
    ported = from_torchvision(_numpy_sd(model), "resnet18")
    kept = {k: np.copy(v) for k, v in ported["batch_stats"]["bn1"].items()}
    back = to_torchvision(ported)
    model.train()(torch.from_numpy(X[:, :64, :64].transpose(0, 3, 1, 2).copy()))  # updates bn1's running stats in place
    for k, v in kept.items():
        np.testing.assert_array_equal(ported["batch_stats"]["bn1"][k], v, err_msg=k)
    for key in ("bn1.running_mean", "bn1.running_var"):  # as a torch optimiser or BatchNorm writes them
        torch.from_numpy(back[key]).add_(1.0)
    for k, v in kept.items():
        np.testing.assert_array_equal(ported["batch_stats"]["bn1"][k], v, err_msg=k)
    assert all(v.flags.writeable and v.flags.c_contiguous for v in back.values())


@pytest.mark.parametrize("arch,size", [("resnet18", 64), ("vgg11_bn", 32)])
def test_unbiased_running_variance_is_pytorchs(arch, size):
    """``model.bn_running_var='unbiased'``: a training step's running statistics are PyTorch's
    (x N/(N-1) for the variance), layer by layer, from the same ported weights and batch; with
    flax's default ('biased') the variances differ by that factor (1.6% at a 4x4 map of batch 4:
    a fresh-user trial measured the drift against PyTorch). Tolerance: float32 sums over up to
    16,384 values per channel through the layers, 1e-5 relative."""
    import jax

    from lnm_jax.models.backbones import backbone

    model = _torch_model(arch)
    ported = from_torchvision(_numpy_sd(model), arch)
    x = X[:4, :size, :size]
    model.train()(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()))  # updates its running statistics
    want = {k: v.detach().numpy() for k, v in model.state_dict().items() if k.endswith(("running_mean", "running_var"))}
    for running_var in ("unbiased", "biased"):
        net = backbone(arch, running_var=running_var)
        _, new = net.apply(ported, x, train=True, mutable=["batch_stats"])
        got = to_torchvision({"params": ported["params"], "batch_stats": jax.device_get(new["batch_stats"])})
        worst = max(float(np.max(np.abs(got[k] / want[k] - 1))) for k in want if k.endswith("running_var"))
        for k in want:
            if k.endswith("running_mean") or running_var == "unbiased":
                np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-6, err_msg=f"{running_var} {k}")
        if running_var == "biased":
            assert worst > 1e-3, worst  # the convention that differs, and that this test tells apart


def test_bn_running_var_is_a_checked_model_field():
    """``model.bn_running_var`` reaches the model a run builds, is recorded with its checkpoints
    (a model field: another value is another model), and only its two values are taken."""
    from lnm_jax.config import MODEL_FIELDS, base_config, config_problems
    from lnm_jax.models.fusion import build_model

    c = base_config("triple")
    assert build_model(c).bn_running_var == "biased" and MODEL_FIELDS["model.bn_running_var"] == "biased"
    c.model.bn_running_var = "unbiased"
    assert build_model(c).bn_running_var == "unbiased" and not config_problems(c)
    from lnm_jax.pretraining.pretrain import build_encoder  # the SimCLR pretraining's BatchNorms too

    assert build_encoder(c).running_var == "unbiased"
    c.model.bn_running_var = "bessel"
    assert config_problems(c) == ["model.bn_running_var: 'bessel' is not one of 'biased', 'unbiased'"]


@pytest.mark.tf
def test_keras_resnet50_port_matches_keras_stage_by_stage():
    keras = pytest.importorskip("keras", reason=NO_KERAS)

    model = keras.applications.ResNet50(
        weights=None, include_top=True, classifier_activation=None, input_shape=(160, 160, 3)
    )
    V.randomise_keras_bn(model, seed=2)
    # Keras takes its own (caffe) input of the pictures a port takes standardised, as RGB: the
    # port had read standardised RGB into weights expecting BGR at 58x the scale (helper-76)
    ref = V.keras_stages(model, keras_caffe_input(X))
    ours = V.flax_stages(
        from_keras_resnet50(keras_layer_weights(model)), "resnet50", "keras_v1", X, fc=V.keras_fc(model)
    )
    table, ok = V.report(V.compare(ours, ref), ref)
    assert ok, table


def test_mismatches_name_the_key():
    sd = _numpy_sd(torchvision.models.resnet18(weights=None))
    missing = {k: v for k, v in sd.items() if k != "layer3.1.bn2.running_var"}
    with pytest.raises(WeightMismatchError, match=r"layer3_1/bn2/var.*'layer3.1.bn2.running_var'"):
        from_torchvision(missing, "resnet18")
    extra = {**sd, "layer5.0.conv1.weight": np.zeros((1, 1, 1, 1), np.float32)}
    with pytest.raises(WeightMismatchError, match="unexpected source key 'layer5.0.conv1.weight'"):
        from_torchvision(extra, "resnet18")
    wrong = {**sd, "layer1.0.conv1.weight": np.zeros((64, 64, 1, 1), np.float32)}
    with pytest.raises(WeightMismatchError, match=r"shape mismatch at source key 'layer1.0.conv1.weight'"):
        from_torchvision(wrong, "resnet18")
    with pytest.raises(WeightMismatchError, match="problem"):
        from_torchvision(sd, "resnet50")  # an 18-layer state_dict is not a ResNet-50


@pytest.mark.tf
def test_keras_mismatch_names_the_layer():
    keras = pytest.importorskip("keras", reason=NO_KERAS)

    layers = keras_layer_weights(keras.applications.ResNet50(weights=None, include_top=False))
    del layers["conv3_block2_2_bn"]["moving_variance"]
    layers["conv3_block2_0_conv"] = {"kernel": np.zeros((1, 1, 256, 512), np.float32)}
    with pytest.raises(WeightMismatchError) as ei:
        from_keras_resnet50(layers)
    msg = str(ei.value)
    assert "missing tensor for batch_stats/layer2_1/bn2/var (source key 'conv3_block2_2_bn/moving_variance')" in msg
    assert "unexpected source key 'conv3_block2_0_conv/kernel'" in msg


@pytest.mark.tf
def test_convert_weights_command_pth_and_keras_files(tmp_path, capsys):
    model = _torch_model("resnet18", seed=3)
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, tmp_path / "r18.pth")
    assert read_torch_state_dict(tmp_path / "r18.pth").keys() == model.state_dict().keys()
    convert_r18 = ["convert-weights", "--from", "torchvision", "--in", str(tmp_path / "r18.pth"), "--arch", "resnet18"]
    convert_r18 += ["--out", str(tmp_path / "conv")]
    assert main(convert_r18) == 0
    variables, meta = load_backbone(tmp_path / "conv")
    assert meta["arch"] == "resnet18" and meta["variant"] == "torchvision"
    np.testing.assert_array_equal(
        variables["params"]["conv1"]["kernel"], model.conv1.weight.detach().numpy().transpose(2, 3, 1, 0)
    )
    # converting into an existing, non-empty folder fails and leaves it alone
    assert main(convert_r18) == 1
    assert (
        main(
            [
                "convert-weights",
                "--from",
                "torchvision",
                "--in",
                str(tmp_path / "r18.pth"),
                "--arch",
                "resnet50",
                "--out",
                str(tmp_path / "bad"),
            ]
        )
        == 1
    )
    assert "problems converting to resnet50" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()

    keras = pytest.importorskip("keras", reason=NO_KERAS)  # the Keras half needs the [tf] extra

    km = keras.applications.ResNet50(weights=None, include_top=False)
    km.save_weights(tmp_path / "k.weights.h5")
    assert (
        main(
            [
                "convert-weights",
                "--from",
                "keras",
                "--in",
                str(tmp_path / "k.weights.h5"),
                "--out",
                str(tmp_path / "kconv"),
            ]
        )
        == 0
    )
    kvars, kmeta = load_backbone(tmp_path / "kconv")
    assert kmeta["variant"] == "keras_v1" and kmeta["input"] == KERAS_PORT_INPUT
    kernel, bias = km.get_layer("conv1_conv").get_weights()
    np.testing.assert_array_equal(kvars["params"]["conv1"]["bias"], bias)
    np.testing.assert_array_equal(kvars["params"]["conv1"]["kernel"], standardised_rgb_stem(kernel))
    # a Keras port written before its stem took standardised RGB is refused, saying so
    with pytest.raises(ValueError, match="Keras port whose first convolution takes Keras's own input"):
        load_backbone(_without_input_statement(tmp_path / "kconv"))
    # the verification script on that notop file, as training.md has it run (it had failed with
    # "No such layer: input_layer_1", copying the body's input layer by name)
    # without Keras's warnings of the with-top model the notop file failed to load into (Keras 3.15:
    # "Skipping nested container ... Affected layers will retain their freshly-initialized weights")
    import warnings

    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        verify = ["--from", "keras", "--in", str(tmp_path / "k.weights.h5"), "--image-size", "64"]
        assert _verify_script().main(verify) == 0
    assert not [str(w.message) for w in said if issubclass(w.category, UserWarning)], [str(w.message) for w in said]


@pytest.mark.tf
def test_a_keras_file_that_is_no_resnet50_is_one_line_saying_why(tmp_path, capsys):
    """A fine-tuned Keras model holding a ResNet50 inside (a Sequential: its weights a level
    down) is refused in one line with the remedy; Keras's per-layer warnings (hundreds of lines)
    stay off the console and its reason is not cut at "Example error message for object ...:"
    (helper-76)."""
    keras = pytest.importorskip("keras", reason=NO_KERAS)

    inner = keras.applications.ResNet50(weights=None, include_top=False, input_shape=(64, 64, 3))
    tuned = keras.Sequential([inner, keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(1)])
    tuned.save_weights(tmp_path / "tuned.weights.h5")
    capsys.readouterr()
    args = ["convert-weights", "--from", "keras", "--in", str(tmp_path / "tuned.weights.h5"), "--out"]
    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        assert main([*args, str(tmp_path / "out")]) == 1
    assert not warned, [str(w.message)[:100] for w in warned[:3]]
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Example error message" not in err, err
    assert "conv1_conv: Layer 'conv1_conv' expected 2 variables, but received 0" in err
    assert "model.get_layer('resnet50').save_weights" in err and not (tmp_path / "out").exists()


def _verify_script():
    """scripts/verify_weights.py as a module."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "verify_weights", Path(__file__).resolve().parents[1] / "scripts" / "verify_weights.py"
    )
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def test_verify_script_passes_on_a_real_file_and_fails_on_a_corrupted_port(tmp_path, monkeypatch):
    script = _verify_script()
    model = _torch_model("resnet18", seed=4)
    torch.save(model.state_dict(), tmp_path / "r18.pth")
    args = ["--from", "torchvision", "--in", str(tmp_path / "r18.pth"), "--arch", "resnet18", "--image-size", "96"]
    assert script.main(args) == 0
    real = script.from_torchvision

    def corrupted(sd, arch):  # a port with a wrong BatchNorm epsilon-sized error
        v = real(sd, arch)
        v["batch_stats"]["layer2_0"]["bn1"]["var"] = v["batch_stats"]["layer2_0"]["bn1"]["var"] * 1.01
        return v

    monkeypatch.setattr(script, "from_torchvision", corrupted)
    assert script.main(args) == 1


def test_training_starts_from_converted_backbones(tmp_path):
    import jax

    from lnm_jax.config import base_config
    from lnm_jax.names import parse_modalities
    from lnm_jax.run import Run
    from lnm_jax.training.loop import load_pretrained
    from lnm_jax.weights.io import save_backbone

    model_t = _torch_model("resnet18", seed=5)
    converted = from_torchvision(_numpy_sd(model_t), "resnet18")
    save_backbone(tmp_path / "bb", converted, {"arch": "resnet18", "variant": "torchvision"})
    c = base_config("triple")
    c.model.backbone, c.model.width, c.model.init_from = "resnet18", 64, str(tmp_path / "bb")
    c.data.image_size, c.train.eval_batch_size = 32, 2
    run = Run(c, tmp_path / "run", cohort=None, split=None)  # the model and state, no data needed
    state = run.fresh_state()
    loaded = load_pretrained(run, state)
    assert parse_modalities(c.modalities) == run.model.modalities
    for b in ("bmode_backbone", "ceus_backbone"):
        for x, y in zip(jax.tree.leaves(loaded.params[b]), jax.tree.leaves(converted["params"])):
            np.testing.assert_array_equal(x, y)
        for x, y in zip(jax.tree.leaves(loaded.batch_stats[b]), jax.tree.leaves(converted["batch_stats"])):
            np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(loaded.params["head"]["kernel"], state.params["head"]["kernel"])
    c.model.backbone = "resnet50"
    with pytest.raises(ValueError, match="holds resnet18"):
        load_pretrained(Run(c, tmp_path / "run", cohort=None, split=None), state)


def test_a_backbone_whose_arrays_changed_or_hold_nan_is_refused_naming_it(tmp_path, capsys):
    """backbone.json records the SHA-256 of the arrays beside it: arrays swapped in from another
    backbone (the same names and shapes) had started a run from other weights in silence, and a
    NaN in them surfaced as "training diverged in epoch 1" after the run folder was written."""
    import json
    import shutil

    from lnm_jax.weights.io import META, VARIABLES_DIGEST, save_backbone

    def variables(value):
        return {"params": {"conv": {"kernel": np.full((3, 3, 3, 4), value, np.float32)}}, "batch_stats": {}}

    meta = {"arch": "resnet10", "variant": "torchvision"}
    save_backbone(tmp_path / "a", variables(0.5), meta)
    save_backbone(tmp_path / "b", variables(0.25), meta)
    loaded, read = load_backbone(tmp_path / "a")
    assert read[VARIABLES_DIGEST] and float(loaded["params"]["conv"]["kernel"][0, 0, 0, 0]) == 0.5
    shutil.rmtree(tmp_path / "a" / "variables")
    shutil.copytree(tmp_path / "b" / "variables", tmp_path / "a" / "variables")  # b's arrays, a's record
    with pytest.raises(ValueError, match=f"arrays are not the ones {META} recorded"):
        load_backbone(tmp_path / "a")
    save_backbone(tmp_path / "nan", variables(np.nan), meta)
    with pytest.raises(ValueError, match=r"\['params'\]\['conv'\]\['kernel'\] holds NaN or infinite values"):
        load_backbone(tmp_path / "nan")
    # written before backbones recorded a digest: read, with a warning once
    record = json.loads((tmp_path / "b" / META).read_text())
    del record[VARIABLES_DIGEST]
    (tmp_path / "b" / META).write_text(json.dumps(record))
    capsys.readouterr()
    load_backbone(tmp_path / "b")
    load_backbone(tmp_path / "b")
    assert capsys.readouterr().err.count(f"records no {VARIABLES_DIGEST}") == 1


def test_vgg11_weights_convert_verify_and_start_a_run_from_the_command_line(tmp_path, capsys):
    """helper-89: ``convert-weights`` and ``verify_weights.py`` offered ResNets only (the docs
    said VGG-11 and Inception-v3 port one-to-one), and a VGG-11 without BatchNorm, ported from
    Python, stopped ``train`` on a KeyError (its branch has no batch_stats). torchvision's VGG-11
    features: verified on their pooled feature (a corrupted port fails), converted by the
    command, and read into a run's branches."""
    from lnm_jax.config import base_config
    from lnm_jax.run import Run, read_pretrained
    from lnm_jax.training.loop import load_pretrained

    torch.manual_seed(0)
    sd = {k: v for k, v in torchvision.models.vgg11(weights=None).state_dict().items() if k.startswith("features.")}
    torch.save(sd, tmp_path / "vgg11.pth")
    script = _verify_script()
    args = ["--from", "torchvision", "--in", str(tmp_path / "vgg11.pth"), "--arch", "vgg11", "--image-size", "32"]
    assert script.main(args) == 0
    real = script.from_torchvision
    script.from_torchvision = lambda s, arch, **kw: _first_conv_scaled(real(s, arch, **kw), 1.01)
    assert script.main(args) == 1
    out = tmp_path / "w_vgg"
    convert = ["convert-weights", "--in", str(tmp_path / "vgg11.pth"), "--arch", "vgg11"]
    assert main([*convert, "--from", "torchvision", "--out", str(out)]) == 0
    assert main([*convert, "--from", "keras", "--out", str(tmp_path / "k")]) == 2
    assert "the Keras import ports ResNet50 weights only" in capsys.readouterr().err
    c = base_config("bmode")
    c.model.backbone, c.model.width, c.model.init_from = "vgg11", 64, str(out)
    c.data.image_size, c.train.eval_batch_size = 32, 2
    read_pretrained(c)  # (had raised KeyError: 'bmode_backbone')
    run = Run(c, tmp_path / "run", cohort=None, split=None)
    loaded = load_pretrained(run, run.fresh_state())
    want = from_torchvision({k: v.numpy() for k, v in sd.items()}, "vgg11")["params"]
    for x, y in zip(jax.tree.leaves(loaded.params["bmode_backbone"]), jax.tree.leaves(want)):
        np.testing.assert_array_equal(x, y)


def test_inception_ports_take_standardised_rgb_and_old_ports_are_refused(tmp_path, capsys):
    """helper-89: torchvision's ImageNet Inception-v3 runs ``transform_input`` (standardised RGB
    -> (x - 0.5) / 0.5) before its trunk; the port left it out, so a run's standardised images
    reached weights expecting other input (pooled features correlated 0.21 with torchvision's)
    unless the user set ``data.norm`` to 0.5 / 0.5 by hand. Now ``convert-weights`` folds it into
    the first convolution; ``verify_weights.py`` compares against torchvision's whole forward;
    ``--no-transform-input`` ports a model built without it as it is; an older port is refused."""
    from lnm_jax.weights.convert import inception_transform_input_stem
    from lnm_jax.weights.io import INCEPTION_PORT_INPUTS

    torch.manual_seed(0)
    model = torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=True)
    sd = model.state_dict()
    torch.save(sd, tmp_path / "inc.pth")
    script = _verify_script()
    args = ["--from", "torchvision", "--in", str(tmp_path / "inc.pth"), "--arch", "inception_v3", "--image-size", "80"]
    assert script.main(args) == 0  # against torchvision with transform_input on (its default for weights)
    convert = ["convert-weights", "--from", "torchvision", "--in", str(tmp_path / "inc.pth"), "--arch", "inception_v3"]
    assert main([*convert, "--out", str(tmp_path / "folded")]) == 0
    assert main([*convert, "--no-transform-input", "--out", str(tmp_path / "plain")]) == 0
    folded, fmeta = load_backbone(tmp_path / "folded")
    plain, pmeta = load_backbone(tmp_path / "plain")
    assert (fmeta["input"], pmeta["input"]) == (INCEPTION_PORT_INPUTS[True], INCEPTION_PORT_INPUTS[False])
    source_kernel = sd["Conv2d_1a_3x3.conv.weight"].numpy().transpose(2, 3, 1, 0)
    source_mean = sd["Conv2d_1a_3x3.bn.running_mean"].numpy()
    np.testing.assert_array_equal(plain["params"]["Conv2d_1a_3x3"]["conv"]["kernel"], source_kernel)
    want_kernel, want_mean = inception_transform_input_stem(source_kernel, source_mean)
    np.testing.assert_array_equal(folded["params"]["Conv2d_1a_3x3"]["conv"]["kernel"], want_kernel)
    np.testing.assert_array_equal(folded["batch_stats"]["Conv2d_1a_3x3"]["bn"]["mean"], want_mean)
    # the setting belongs to Inception-v3 alone
    assert (
        main(
            ["convert-weights", "--from", "torchvision", "--in", str(tmp_path / "inc.pth")]
            + ["--no-transform-input", "--out", str(tmp_path / "r")]
        )
        == 2
    )
    assert "--no-transform-input is torchvision Inception-v3's setting" in capsys.readouterr().err
    # a port written before the fold (no statement of its input) is refused, saying what to do
    with pytest.raises(ValueError, match="Inception-v3 port whose first convolution takes"):
        load_backbone(_without_input_statement(tmp_path / "folded"))


def _without_input_statement(folder):
    """``folder``, its backbone.json's statement of the input the port takes deleted (as a port
    written before the statement was)."""
    meta_file = folder / "backbone.json"
    meta = json.loads(meta_file.read_text())
    del meta["input"]
    meta_file.write_text(json.dumps(meta))
    return folder


def _first_conv_scaled(variables, factor):
    """``variables`` with every parameter of its first convolution scaled by ``factor``."""
    params = dict(variables["params"])
    first = sorted(params)[0]
    params[first] = {k: v * factor for k, v in params[first].items()}
    return {**variables, "params": params}


def test_verifying_a_keras_file_without_keras_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    """helper-126: without Keras the verification script ended in a traceback of "No module
    named 'keras'"; it says what to install, in one line, and exits 1."""
    import sys

    monkeypatch.setitem(sys.modules, "keras", None)  # (import keras then raises ImportError, installed or not)
    (tmp_path / "k.weights.h5").write_bytes(b"")
    assert _verify_script().main(["--from", "keras", "--in", str(tmp_path / "k.weights.h5")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("verifying a Keras file needs Keras and TensorFlow") and "[tf]" in err[0]
