"""Reading framework weight files into numpy, and storing converted backbones (orbax).

torch is imported only to read ``.pth``/``.pt`` files; ``.safetensors`` needs only the
``safetensors`` package; Keras ``.h5``/``.weights.h5`` files are read through Keras itself.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from lnm_jax.fileio import atomic_directory, error_line, json_text, off_main_thread, read_json, warn_once

META = "backbone.json"
META_REQUIRED = ("arch", "variant")  # what backbone.json must name: checked against the config it starts
# backbone.json's SHA-256 of the arrays written beside it (training.checkpoint.state_digest):
# a backbone whose arrays changed after it was written (a flipped bit, an edited or swapped file)
# is refused when read, rather than starting a run from other weights
VARIABLES_DIGEST = "variables_sha256"
# backbone.json's statement of the input a port's first convolution takes: a Keras port's
# standardised RGB (weights.convert.standardised_rgb_stem); a Keras port without it took Keras's
# caffe input (BGR, 0-255) and is refused. A torchvision Inception-v3 port's: standardised RGB
# with torchvision's transform_input folded into its stem (convert.inception_transform_input_stem),
# or as trained without that step; one without a statement wants (x - 0.5) / 0.5 and is refused
INPUT = "input"
KERAS_PORT_INPUT = "rgb standardised: (x - caffe means / 255) / ImageNet std"
INCEPTION_PORT_INPUTS = {
    True: "rgb standardised: torchvision's transform_input folded into Conv2d_1a_3x3",
    False: "as the state_dict's model took it (built with transform_input=False)",
}


def read_torch_state_dict(path: Path | str) -> dict[str, np.ndarray]:
    """A torchvision state_dict as numpy arrays; unwraps {'state_dict': ...} / {'model': ...}
    and DataParallel's 'module.' prefix."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weight file {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.numpy import load_file

        try:
            sd: Any = load_file(str(path))
        except Exception as e:  # noqa: BLE001  (safetensors' own error type, or a bad header)
            raise ValueError(f"{path} is not a readable .safetensors file ({error_line(e)})") from e
    else:
        try:
            import torch
        except ImportError as e:
            raise ImportError(f"reading {path} needs torch (pip install torch), or convert it to .safetensors") from e
        try:
            sd = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001  (pickle, zip and torch errors alike)
            # torch's message advises weights_only=False, which would run the file's code: not shown
            reason = " ".join(
                para.strip()
                for para in str(e).split("\n\n")
                if para.strip() and "weights_only" not in para and "documentation" not in para
            )
            reason = " ".join(reason.split())
            if "GLOBAL" in reason:
                raise ValueError(
                    f"{path} holds Python objects besides tensors, which could run code when loaded, so it is "
                    f"refused ({reason}); save the model's state_dict() or a .safetensors file instead"
                ) from e
            raise ValueError(f"{path} is not a readable PyTorch weight file ({reason or error_line(e)})") from e
        for wrapper in ("state_dict", "model"):
            if isinstance(sd, dict) and wrapper in sd and isinstance(sd[wrapper], dict):
                sd = sd[wrapper]
        sd = {k: v.detach().cpu().numpy() for k, v in sd.items() if hasattr(v, "detach")}
    return {k.removeprefix("module."): np.asarray(v) for k, v in sd.items()}


def keras_layer_weights(model) -> dict[str, dict[str, np.ndarray]]:
    """``{layer_name: {weight_name: array}}`` of a built Keras model."""
    out = {}
    for layer in model.layers:
        ws = {w.name.split("/")[-1].split(":")[0]: np.asarray(w.numpy()) for w in layer.weights}
        if ws:
            out[layer.name] = ws
    return out


def read_keras_resnet50(path: Path | str) -> dict[str, dict[str, np.ndarray]]:
    """Loads a Keras ResNet50 weight file (with or without the classifier top)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weight file {path} does not exist")
    keras = keras_module(f"reading a Keras weight file ({path})")
    errors = []
    for include_top in (False, True):
        model = keras.applications.ResNet50(weights=None, include_top=include_top)
        try:
            load_keras_weights(model, path)
            return keras_layer_weights(model)
        except (ValueError, KeyError, OSError) as e:
            errors.append(f"{'with' if include_top else 'without'} the classifier top: {_keras_reason(e)}")
    raise ValueError(f"{path} is not a Keras ResNet50 weight file ({'; '.join(errors)})")


def keras_module(purpose: str):
    """The ``keras`` module (with TensorFlow: the [tf] extra); ImportError saying that
    ``purpose`` ("reading a Keras weight file (X)") needs it and how to install it where it is
    missing (helper-126: the verification script had ended in a ModuleNotFoundError traceback)."""
    try:
        import keras  # noqa: PLC0415
    except ImportError as e:
        from lnm_jax.provenance import extra_install  # noqa: PLC0415

        raise ImportError(f"{purpose} needs Keras and TensorFlow ({e}); install them: {extra_install('tf')}") from e
    return keras


def load_keras_weights(model, path: Path | str) -> None:
    """``model.load_weights(path)`` (a Keras model), Keras's warnings said only where it loads:
    a try that fails (a file without the classifier top loaded into a model with one) warns on
    its way, one line per layer (335 lines), or of the model it then leaves ("Skipping nested
    container ... Affected layers will retain their freshly-initialized weights", Keras 3.15: a
    fresh-user's verification printed it of a model it discarded), which says nothing of the file.
    Raises what ``load_weights`` raises."""
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        model.load_weights(str(path))
    for w in said:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def _keras_reason(e: Exception) -> str:
    """Keras's refusal to load a weight file in one phrase: its count and its example's reason
    (its message ends its first line at "Example error message for object ...:", the reason on
    the lines after, then a variable's values); where the ResNet's layers are not at the file's
    top, the likely cause: a model holding a ResNet50 inside (a fine-tuned keras.Sequential)."""
    lines = [x.strip() for x in str(e).splitlines() if x.strip()]
    if not lines:
        return type(e).__name__
    first = re.sub(r"\.?\s*Example error message for object .*$", "", lines[0])
    named = re.search(r"Example error message for object <\w+ name=([^,>]+)", lines[0])
    reason = lines[1].split(" Target variable:")[0] if len(lines) > 1 and lines[0].endswith(":") else ""
    said = f"{first}; {named.group(1)}: {reason}" if named and reason else f"{first} {reason}".strip()
    if re.search(r"expected \d+ variables, but received 0 variables", reason):
        said += (
            " (no ResNet50 layer at the file's top: another network, or a model that holds a ResNet50 inside, such "
            "as a fine-tuned keras.Sequential, whose weights sit a level down; save the inner one's, "
            "model.get_layer('resnet50').save_weights('resnet50.weights.h5'))"
        )
    return said


def save_backbone(out_dir: Path | str, variables: dict, meta: dict) -> None:
    """Writes an orbax checkpoint of ``{'params', 'batch_stats'}`` plus ``backbone.json``;
    written to a temporary folder first, so a failure leaves nothing behind. ``meta`` names at
    least the ``arch`` and its ``variant`` (ValueError otherwise)."""
    from lnm_jax.training.checkpoint import state_digest  # noqa: PLC0415

    missing = [k for k in META_REQUIRED if k not in meta]
    if missing:
        raise ValueError(f"a backbone's {META} must name {', '.join(missing)}")
    variables = jax.device_get(variables)
    meta = {**meta, VARIABLES_DIGEST: state_digest(variables)}
    with atomic_directory(out_dir) as tmp:
        with ocp.StandardCheckpointer() as ckpt:
            off_main_thread(ckpt.save, tmp / "variables", variables)
        (tmp / META).write_text(json_text(meta, indent=2), encoding="utf-8")


def backbone_meta(path: Path | str) -> dict:
    """The meta of the backbone :func:`save_backbone` wrote at ``path`` (no array read).
    FileNotFoundError (no ``backbone.json``), ``DamagedFileError`` (not a JSON object naming the
    ``arch`` and ``variant``), each one line naming the backbone."""
    path = Path(path).resolve()
    if not path.exists():  # it said "not a converted backbone", as if the folder were there
        raise FileNotFoundError(
            f"{path} does not exist: give a backbone made with 'lnm-jax convert-weights' or 'lnm-jax pretrain'"
        )
    if not (path / META).is_file():
        raise FileNotFoundError(
            f"{path} is not a converted backbone (no {META}); make one with 'lnm-jax convert-weights'"
        )
    meta = read_json(path / META, required=META_REQUIRED, remedy="convert or pretrain it again")
    if meta.get("source") == "keras" and meta.get(INPUT) != KERAS_PORT_INPUT:  # wherever its record is read
        raise ValueError(
            f"backbone {path} is a Keras port whose first convolution takes Keras's own input (BGR, 0-255), not the "
            f"standardised RGB images a run feeds it (ported before 2026-12-06): convert it again with lnm-jax "
            "convert-weights --from keras"
        )
    if (meta.get("source"), meta.get("arch")) == ("torchvision", "inception_v3") and (
        meta.get(INPUT) not in INCEPTION_PORT_INPUTS.values()
    ):
        raise ValueError(
            f"backbone {path} is a torchvision Inception-v3 port whose first convolution takes (x - 0.5) / 0.5 "
            "(torchvision's transform_input left out; ported before 2026-12-07), not the standardised RGB images a "
            "run feeds it: convert it again with lnm-jax convert-weights --from torchvision --arch inception_v3"
        )
    return meta


def load_backbone(path: Path | str) -> tuple[dict, dict]:
    """Reads what :func:`save_backbone` wrote: (variables as numpy, meta). Errors, each one line
    naming the backbone: those of :func:`backbone_meta`; ValueError when its arrays cannot be
    read, differ from the :data:`VARIABLES_DIGEST` its ``backbone.json`` recorded, or hold a
    NaN or an infinity (naming the first such array). A backbone written before backbones
    recorded a digest is read with a warning (once per folder) that its arrays are unchecked."""
    from lnm_jax.training.checkpoint import non_finite_paths, state_digest  # noqa: PLC0415

    path = Path(path).resolve()
    meta = backbone_meta(path)
    redo = "convert or pretrain it again"
    try:
        with ocp.StandardCheckpointer() as ckpt:
            variables = off_main_thread(ckpt.restore, path / "variables")
    except Exception as e:  # noqa: BLE001  (any failed read is a damaged backbone)
        raise ValueError(
            f"converted backbone {path} cannot be read ({error_line(e)}); it is damaged or incomplete: {redo}"
        ) from e
    if bad := non_finite_paths(variables):
        raise ValueError(f"backbone {path}: {bad[0]} holds NaN or infinite values; it is damaged: {redo}")
    recorded = meta.get(VARIABLES_DIGEST)
    if recorded is None:
        warn_once(
            f"{path / META} records no {VARIABLES_DIGEST} (written before backbones recorded one): its arrays are "
            "read unchecked",
            key=("unfingerprinted", path),
        )
    elif state_digest(variables) != recorded:
        raise ValueError(
            f"backbone {path}: its arrays are not the ones {META} recorded ({VARIABLES_DIGEST}); they were changed "
            f"or damaged since it was written: {redo}"
        )
    return variables, meta


def branch_backbone_dirs(path: Path | str, branches: tuple[str, ...]) -> dict[str, Path]:
    """``{branch: folder}``: the backbone at ``path`` for every branch, or, where ``path`` holds
    one folder per branch (``path/<branch>/``), each branch's own. FileNotFoundError naming the
    branches a per-input folder lacks."""
    path = Path(path).resolve()
    if (path / META).is_file() or not any((path / b / META).is_file() for b in branches):
        return dict.fromkeys(branches, path)
    missing = [b for b in branches if not (path / b / META).is_file()]
    if missing:
        raise FileNotFoundError(f"{path} holds per-input backbones but none for {', '.join(missing)}")
    return {b: path / b for b in branches}


def check_branch_backbones(path: Path | str, branches: tuple[str, ...], arch: str, variant: str) -> None:
    """That ``path`` gives every branch a backbone of ``arch`` and ``variant`` (their metas
    only, no array read): what training would trip on, checked before a run writes anything."""
    for branch, folder in branch_backbone_dirs(path, branches).items():
        meta = backbone_meta(folder)
        if (meta.get("arch"), meta.get("variant")) != (arch, variant):
            raise ValueError(
                f"{path} holds {meta.get('arch')} ({meta.get('variant')}) for '{branch}' "
                f"but the config asks for {arch} ({variant})"
            )


def load_branch_backbones(path: Path | str, branches: tuple[str, ...]) -> dict[str, tuple[dict, dict]]:
    """``{branch: (variables, meta)}``: the backbones of :func:`branch_backbone_dirs`, each
    read once."""
    read = {}
    out = {}
    for branch, folder in branch_backbone_dirs(path, branches).items():
        if folder not in read:
            read[folder] = load_backbone(folder)
        out[branch] = read[folder]
    return out


def convert_weights(
    source: str, path: Path | str, out_dir: Path | str, *, arch: str = "resnet50", transform_input: bool = True
) -> dict:
    """``lnm-jax convert-weights``: ports a torchvision state_dict (any ResNet/VGG/Inception
    arch of ours) or a Keras ResNet50 weight file to a backbone checkpoint; returns its meta.
    ``transform_input``: torchvision Inception-v3's (``convert.from_torchvision``)."""
    from lnm_jax.weights.convert import from_keras_resnet50, from_torchvision  # noqa: PLC0415

    path = Path(path)
    if source == "torchvision":
        variables = from_torchvision(read_torch_state_dict(path), arch, transform_input=transform_input)
        variant = "torchvision"
    elif source == "keras":
        if arch != "resnet50":
            raise ValueError("Keras import supports ResNet50 only")
        variables, variant = from_keras_resnet50(read_keras_resnet50(path)), "keras_v1"
    else:
        raise ValueError(f"unknown weight source '{source}', expected 'torchvision' or 'keras'")
    meta = {"arch": arch, "variant": variant, "source": source, "file": str(path.resolve())}
    if source == "keras":
        meta[INPUT] = KERAS_PORT_INPUT
    elif arch == "inception_v3":
        meta[INPUT] = INCEPTION_PORT_INPUTS[transform_input]
    save_backbone(out_dir, variables, meta)
    return meta
