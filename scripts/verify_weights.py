"""Verify a weight file's port: our Flax ResNet vs the source framework, stage by stage.

    python scripts/verify_weights.py --from torchvision --in resnet50.pth [--arch resnet50]
    python scripts/verify_weights.py --from torchvision --in vgg11.pth --arch vgg11   # VGG/Inception: pooled feature
    python scripts/verify_weights.py --from keras --in resnet50_weights.h5

Builds the source model (torchvision or Keras) with the file's weights, ports them, runs both
on the same random images, prints the max abs difference per stage and exits 1 if any stage
is above tolerance (stages 1e-3, pooled feature and logits 1e-4, fp32).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from lnm_jax.names import TORCHVISION_BACKBONES
from lnm_jax.weights import verify as V
from lnm_jax.weights.convert import from_keras_resnet50, from_torchvision, keras_caffe_input
from lnm_jax.weights.io import keras_layer_weights, keras_module, load_keras_weights, read_torch_state_dict


def _vgg_or_inception(a, x: np.ndarray):
    """``(reference, ours)``: the pooled feature of torchvision's VGG-11 / Inception-v3 holding
    the file's weights and of our port of them ((None, None), said, where the file does not fit
    torchvision's model). Their classifiers read other tensors than the pooled feature (VGG's the
    7x7 map flattened), so the pooled feature is the comparison."""
    import torch
    import torchvision

    sd = read_torch_state_dict(a.path)
    if a.arch == "inception_v3":  # torchvision_pooled runs its transform_input where it is on
        model = torchvision.models.inception_v3(
            weights=None, aux_logits=False, init_weights=False, transform_input=a.transform_input
        )
    else:
        model = getattr(torchvision.models, a.arch)(weights=None)
    result = model.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith(("fc.", "classifier."))]
    unexpected = [k for k in result.unexpected_keys if not k.startswith("AuxLogits.")]
    if missing or unexpected:
        print(
            f"state_dict does not fit torchvision {a.arch}: missing {missing}, unexpected {unexpected}", file=sys.stderr
        )
        return None, None
    port = from_torchvision(sd, a.arch, transform_input=a.transform_input if a.arch == "inception_v3" else True)
    ours = V.flax_stages(port, a.arch, "torchvision", x)
    return {"pooled": V.torchvision_pooled(model, a.arch, x)}, {"pooled": ours["pooled"]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--from", dest="source", required=True, choices=("torchvision", "keras"))
    p.add_argument("--in", dest="path", required=True)
    p.add_argument("--arch", default="resnet50", choices=TORCHVISION_BACKBONES)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--no-transform-input",
        dest="transform_input",
        action="store_false",
        help="inception_v3: the file's model was built with transform_input=False (as lnm-jax convert-weights)",
    )
    a = p.parse_args(argv)
    x = np.random.default_rng(a.seed).standard_normal((a.batch, a.image_size, a.image_size, 3)).astype(np.float32)
    if a.source == "torchvision" and not a.arch.startswith("resnet"):
        ref, ours = _vgg_or_inception(a, x)
        if ref is None:
            return 1
    elif a.source == "torchvision":
        import torch
        import torchvision

        sd = read_torch_state_dict(a.path)
        model = getattr(torchvision.models, a.arch)(weights=None)
        result = model.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}, strict=False)
        missing = [k for k in result.missing_keys if not k.startswith("fc.")]
        if missing or result.unexpected_keys:
            print(
                f"state_dict does not fit torchvision {a.arch}: missing {missing}, unexpected {result.unexpected_keys}",
                file=sys.stderr,
            )
            return 1
        has_fc = "fc.weight" in sd
        ref = V.torchvision_stages(model, x)
        ours = V.flax_stages(
            from_torchvision(sd, a.arch), a.arch, "torchvision", x, fc=V.torch_fc(model) if has_fc else None
        )
        if not has_fc:
            ref.pop("logits")
    else:
        try:
            keras = keras_module("verifying a Keras file")
        except ImportError as e:  # (helper-126: a traceback of "No module named 'keras'")
            print(e, file=sys.stderr)
            return 1

        if a.arch != "resnet50":
            print("Keras verification supports ResNet50 only", file=sys.stderr)
            return 1
        model = keras.applications.ResNet50(
            weights=None, include_top=True, classifier_activation=None, input_shape=(a.image_size, a.image_size, 3)
        )
        try:
            load_keras_weights(model, a.path)  # (a notop file's failed try: its warnings are not said)
            has_top = True
        except ValueError:
            body = keras.applications.ResNet50(
                weights=None, include_top=False, input_shape=(a.image_size, a.image_size, 3)
            )
            body.load_weights(a.path)
            # the body copied into the model with a (random) top, layer by layer: those with weights
            # (an input layer has none, and Keras names a second model's input_layer_1: a notop file
            # had failed here with "No such layer", a fresh-user trial)
            for layer in body.layers:
                if layer.weights:
                    model.get_layer(layer.name).set_weights(layer.get_weights())
            has_top = False
        ref = V.keras_stages(model, keras_caffe_input(x))  # the same pictures in Keras's own input
        ours = V.flax_stages(
            from_keras_resnet50(keras_layer_weights(model)),
            "resnet50",
            "keras_v1",
            x,
            fc=V.keras_fc(model) if has_top else None,
        )
        if not has_top:
            ref.pop("logits")
    table, ok = V.report(V.compare(ours, ref), ref)
    print(f"{a.source} {a.arch} from {a.path}, {a.batch} random images {a.image_size}px")
    print(table)
    print("OK: within tolerance" if ok else "FAILED: above tolerance")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
