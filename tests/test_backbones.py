"""VGG-11 and Inception-v3: torchvision layouts (weights port one-to-one and reproduce
torchvision's features), the common intermediates, and their use in the fusion model."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from support import compiled, drawn_variables

from lnm_jax.models.backbones import backbone, min_image_size
from lnm_jax.models.fusion import FusionClassifier
from lnm_jax.weights.convert import WeightMismatchError, from_torchvision, to_torchvision
from lnm_jax.weights.verify import torchvision_pooled


def _torch_model(arch):
    torchvision = pytest.importorskip("torchvision")
    import torch

    from lnm_jax.weights.verify import randomise_torch_bn

    torch.manual_seed(0)
    if arch == "inception_v3":  # as inception_v3(weights=...) builds it: transform_input on
        model = torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=True, transform_input=True)
    else:
        model = getattr(torchvision.models, arch)(weights=None)
    if arch != "vgg11":
        randomise_torch_bn(model, image_size=128)
    return model.eval()


@pytest.mark.parametrize("arch,size,dim", [("vgg11", 64, 512), ("vgg11_bn", 64, 512), ("inception_v3", 96, 2048)])
def test_torchvision_weights_port_and_reproduce_the_pooled_feature(arch, size, dim):
    model = _torch_model(arch)
    sd = {k: v.numpy() for k, v in model.state_dict().items()}
    variables = from_torchvision(sd, arch)
    x = np.random.default_rng(0).standard_normal((2, size, size, 3)).astype(np.float32)
    out = compiled(backbone(arch).apply)(variables, jnp.asarray(x))  # one program, not one per operation
    ref = torchvision_pooled(model, arch, x)  # Inception-v3's transform_input included
    assert out["pooled"].shape == (2, dim)
    np.testing.assert_allclose(np.asarray(out["pooled"]), ref, atol=2e-4, rtol=1e-4)
    # and back: every trunk tensor of torchvision's state_dict is produced (Inception-v3's as
    # the state_dict of a model without transform_input: those it was ported as)
    if arch == "inception_v3":
        variables = from_torchvision(sd, arch, transform_input=False)
    back = to_torchvision(variables)
    trunk = {k for k in sd if not k.startswith(("classifier.", "fc.", "AuxLogits."))}
    assert trunk == set(back)
    for k in trunk - {k for k in trunk if k.endswith("num_batches_tracked")}:
        np.testing.assert_array_equal(back[k], sd[k])
    # a wrong architecture is refused, naming a tensor
    with pytest.raises(WeightMismatchError):
        from_torchvision(sd, "resnet18")


def test_inception_stem_computes_transform_input_in_training_and_evaluation():
    """The folded first convolution + BatchNorm on standardised z equal torchvision's
    transform_input, convolution and BatchNorm on the same z, with batch statistics (training:
    the batch's variance too) and with running ones; float64, so only rounding separates them."""
    from lnm_jax.weights.convert import IMAGENET_MEAN_RGB, IMAGENET_STD_RGB, inception_transform_input_stem

    r = np.random.default_rng(0)
    z = r.standard_normal((4, 9, 9, 3))
    w = r.standard_normal((3, 3, 3, 5))
    mean, var = r.standard_normal(5), r.uniform(0.5, 2, 5)
    t = z * (np.asarray(IMAGENET_STD_RGB) / 0.5) + (np.asarray(IMAGENET_MEAN_RGB) - 0.5) / 0.5

    def conv(x, k):  # torchvision's Conv2d_1a_3x3: 3x3, stride 2, no padding (NHWC, HWIO)
        patches = np.lib.stride_tricks.sliding_window_view(x, (3, 3), axis=(1, 2))[:, ::2, ::2]
        return np.einsum("nyxjhw,hwjc->nyxc", patches, k)

    w2, mean2 = inception_transform_input_stem(w, mean)
    ref, ours = conv(t, w), conv(z, w2)
    np.testing.assert_allclose((ours - mean2) / np.sqrt(var), (ref - mean) / np.sqrt(var), rtol=1e-12, atol=1e-12)
    centred = lambda y: y - y.mean(axis=(0, 1, 2))  # noqa: E731
    np.testing.assert_allclose(centred(ours), centred(ref), rtol=1e-12, atol=1e-12)
    # not the identity: the kernel and the mean both move
    assert np.abs(w2 - w).max() > 0.1 and np.abs(mean2 - mean).max() > 0.1


@pytest.mark.parametrize("arch", ["vgg11", "vgg11_bn", "inception_v3"])
def test_backbones_give_the_common_intermediates_in_the_fusion_model(arch):
    size = max(min_image_size(arch), 32)
    # one image branch (CEUS, one of two patients without it: masked BatchNorm) and the flag
    model = FusionClassifier(("ceus", "us_lnm"), backbone=arch, width=4, missing_inputs=True)
    r = np.random.default_rng(0)
    batch = {
        "ceus": r.standard_normal((2, size, size, 3)).astype(np.float32),
        "us_lnm": np.ones(2, np.float32),
        "has_ceus": np.array([True, False]),
        "has_us_lnm": np.ones(2, bool),
    }
    # any values: eval_shape traces init, nothing is compiled for it (Inception-v3's init program
    # alone took 20 s of XLA:CPU compile at level 0)
    variables = drawn_variables(model, batch, train=False)
    out, _ = compiled(lambda v, b: model.apply(v, b, train=True, mutable=["batch_stats"]))(variables, batch)
    for k in ("stem", "stage1", "stage2", "stage3", "stage4", "pooled"):
        assert k in out["ceus"]
    assert np.isfinite(np.asarray(out["logit"])).all()


def test_inception_refuses_images_below_its_minimum():
    with pytest.raises(ValueError, match="at least 75x75"):
        backbone("inception_v3", width=4).init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)))
    with pytest.raises(ValueError, match="ResNets only"):
        backbone("vgg11", variant="keras_v1")
