"""Load and run the program of a model written by ``lnm-jax export``: needs only jax, numpy
and flatbuffers (jax.export's serialisation; no flax, no TensorFlow, none of the project's
training code). The export folder carries a copy of this module in ``lnm_runtime/`` (with the
preprocessing, :mod:`lnm_jax.serving`), so it runs where this package is not installed.

    model = load("exported/")                  # a folder written by lnm-jax export
    out = model({"bmode": x, "ceus": c, "us_lnm": f, "has_bmode": hb, "has_ceus": hc, "has_us_lnm": hf})
    out["prob"], out["prob_calibrated"], out["logit"]   # each [B]

Inputs are the model's own (``model.inputs``): images as float32 in [0, 1] (RGB, resized to
``model.image_size``; a CEUS clip [B, T, H, W, 3]), the US-LNM flag as float32 0/1, and a
bool ``has_<input>`` per input (a missing image is zeroed inside; a model trained without
missing inputs refuses a ``has_*`` false unless called with ``zero_fill_missing=True``). The
per-modality normalisation is applied inside the program. The folder holds the serialised
program (``model.jax_export``, StableHLO for CPU and CUDA with a symbolic batch size), its
weights (``weights.npz``) and ``metadata.json``; ``model_card.md`` describes it for a reader.
With ``--format onnx`` it also holds ``model.onnx`` (weights inside), which :func:`load_onnx`
runs with onnxruntime and numpy alone, called the same way.

``SHA256SUMS`` (the format ``sha256sum -c`` reads) lists every file's SHA-256: :func:`load`
and :func:`load_onnx` check them, and every weight array for NaN or inf, before anything is
scored; a swapped, edited, truncated or damaged file gives one :class:`ExportIntegrityError`
naming it. ``metadata.json`` also records the run and checkpoint the weights came from.

``SHA256SUMS`` attests only to the folder it is in: files changed together with it pass. The
export's :func:`fingerprint` (the SHA-256 of ``SHA256SUMS``, which ``lnm-jax export`` prints)
is one value to publish apart from the folder: ``load(folder, fingerprint=...)`` then refuses
any other folder, whatever its ``SHA256SUMS`` says.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lnm_jax import names
from lnm_jax.export_files import (  # noqa: F401  (the export folder's names, importable from here too)
    CHECKSUMS,
    METADATA,
    MODEL_CARD,
    ONNX,
    PREDICT_SCRIPT,
    PROGRAM,
    REQUIREMENTS,
    RUNTIME,
    WEIGHTS,
)


class ExportIntegrityError(ValueError):
    """An exported folder whose files are not those export wrote, or whose weights are not finite."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_checksums(folder: Path | str) -> None:
    """Writes ``SHA256SUMS`` over every other file of ``folder``, subfolders included (paths
    relative to it, ``sha256sum -c`` format; Python's ``__pycache__`` left out)."""
    folder = Path(folder)
    files = [
        p for p in sorted(folder.rglob("*")) if p.is_file() and p.name != CHECKSUMS and "__pycache__" not in p.parts
    ]
    lines = [f"{sha256_file(p)}  {p.relative_to(folder).as_posix()}" for p in files]
    (folder / CHECKSUMS).write_text("\n".join(lines) + "\n", encoding="utf-8")


def _described_files(folder: Path) -> list[str]:
    """The listed files of the folder but its programs (verified with the one loaded): the
    ``lnm_runtime`` copy, ``predict.py``, ``metadata.json``, ``model_card.md`` and
    ``requirements.txt``, every file a colleague reads or runs (helper-60: an edited model card
    had passed a load against the export's fingerprint, which ``sha256sum -c`` refused)."""
    sums = folder / CHECKSUMS
    if not sums.is_file():
        return []
    listed = [line.partition("  ")[2].strip() for line in sums.read_text(encoding="utf-8").splitlines()]
    return [name for name in listed if name not in (PROGRAM, WEIGHTS, ONNX)]


FINGERPRINT_PREFIX = "sha256:"


def fingerprint(folder: Path | str) -> str:
    """The export's fingerprint, ``"sha256:<64 hex digits>"``: the SHA-256 of its ``SHA256SUMS``,
    which lists every other file's, so no file can change without it changing. Publish it apart
    from the folder (a paper, a registry, an e-mail): a folder whose ``SHA256SUMS`` was rewritten
    to match changed files still passes :func:`verify` alone, not against this value."""
    return _fingerprint(Path(folder) / CHECKSUMS)


def _fingerprint(checksums: Path) -> str:
    return FINGERPRINT_PREFIX + sha256_file(checksums)


def _expected_fingerprint(value: str) -> str:
    digest = value.strip().lower().removeprefix(FINGERPRINT_PREFIX)
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise ValueError(
            f"fingerprint {value!r} is not a SHA-256 ('{FINGERPRINT_PREFIX}' and 64 hex digits, as lnm-jax export "
            "prints it)"
        )
    return FINGERPRINT_PREFIX + digest


def verify(folder: Path | str, files=None, fingerprint: str | None = None) -> None:
    """Checks ``files`` (default: every file listed) against ``SHA256SUMS``, and, given the
    export's published ``fingerprint`` (:func:`fingerprint`), ``SHA256SUMS`` itself against it;
    :class:`ExportIntegrityError` naming the first that differs or is missing, or when the
    folder has no ``SHA256SUMS`` (removed: nothing could be trusted; every export writes one).
    ValueError when ``fingerprint`` is not a SHA-256."""
    folder = Path(folder)
    sums = folder / CHECKSUMS
    expected = None if fingerprint is None else _expected_fingerprint(fingerprint)
    if not sums.is_file():
        raise ExportIntegrityError(
            f"{sums} is missing: every file of an export is checked against it (removed, or not a folder lnm-jax "
            "export wrote); export the model again"
        )
    if expected is not None and (found := _fingerprint(sums)) != expected:
        raise ExportIntegrityError(
            f"{folder}: its fingerprint is {found}, not the {expected} asked for: another export, or its files "
            f"were changed ({CHECKSUMS} with them); get the export of that fingerprint from its publisher"
        )
    listed = {}
    for line in sums.read_text(encoding="utf-8").splitlines():
        digest, _, name = line.partition("  ")
        listed[name.strip()] = digest.strip()
    for name in listed if files is None else files:
        if name not in listed:
            raise ExportIntegrityError(f"{folder / name} is not listed in {sums}: not a file export wrote")
        path = folder / name
        if not path.is_file():
            raise ExportIntegrityError(f"{path} is missing (listed in {sums})")
        if sha256_file(path) != listed[name]:
            raise ExportIntegrityError(
                f"{path} is not the file lnm-jax export wrote (its SHA-256 differs from {sums}): replaced, edited "
                "or damaged; export the model again"
            )


def _metadata(folder: Path) -> dict:
    try:
        return json.loads((folder / METADATA).read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise ExportIntegrityError(f"{folder / METADATA} is not valid JSON ({e})") from None


OUTPUTS = ("logit", "prob", "prob_calibrated")
TEMPERATURE_BOUNDS = (0.05, 20.0)  # where evaluate searches the calibration temperature


def at_bound(temperature: float, rtol: float = 1e-3) -> bool:
    """True when a fitted temperature stopped at a search bound (:data:`TEMPERATURE_BOUNDS`):
    no finite optimum lies inside (:func:`lnm_jax.evaluation.calibration.bound_cause` says why),
    so sigmoid(logit / T) is no calibration."""
    return any(abs(np.log(temperature / b)) < rtol * 10 for b in TEMPERATURE_BOUNDS)


def served(out: dict, metadata: dict) -> dict[str, np.ndarray]:
    """A program's outputs as numpy arrays, ``prob_calibrated`` NaN where the metadata's
    temperature stopped at its search bound (helper-99, helper-102: every loader of an export,
    ``load``, ``load_onnx`` and ``lnm_runtime``'s, had returned its exact 0s and 1s)."""
    out = {k: np.asarray(v) for k, v in out.items()}
    if (t := metadata.get("calibration_temperature")) is not None and at_bound(float(t)):
        out["prob_calibrated"] = np.full_like(out["prob_calibrated"], np.nan)
    return out


def takes_absent_inputs(metadata: dict) -> bool:
    """Whether an exported model was trained for patients who lack an input: with learned
    'absent' embeddings (``model.missing_inputs``) or on zeros in its place
    (``data.zero_fill_missing``); from its ``metadata.json``."""
    pre = metadata.get("preprocessing", metadata)  # exports before the section: top level
    return bool(metadata["architecture"]["missing_inputs"]) or bool(pre.get("zero_fill_missing", False))


def checked_inputs(inputs: dict, spec: dict, *, absent_ok: bool = True) -> dict[str, np.ndarray]:
    """The program's input arrays (``spec``: name -> shape, dtype), each as its dtype, checked
    as the program was trained to take them: every input given, the flag 0 or 1, an image's
    values finite and in [0, 1] (the program normalises them itself), and, unless
    ``absent_ok``, every ``has_<input>`` true; ValueError naming the input otherwise
    (helper-61: a flag of 0.5, 7 or NaN and images of 200.0 had been scored; a patient
    without an input had been scored on zeros by a model never trained on them)."""
    if missing := sorted(set(spec) - set(inputs)):
        raise ValueError(f"missing inputs {missing}; the model takes {sorted(spec)}")
    args = {}
    for k, want in spec.items():
        given = np.asarray(inputs[k])
        if want["dtype"] == "bool":  # an availability flag: bools, or 1/0 (helper-62: the string "False" read as true)
            if given.dtype != bool and not (given.dtype.kind in "iuf" and np.all((given == 0) | (given == 1))):
                raise ValueError(f"{k} holds {given.ravel()[:3].tolist()}: an availability flag is True/False (or 1/0)")
            if not absent_ok and not np.all(given):
                raise ValueError(
                    f"{k} is false for row(s) {np.flatnonzero(given == 0)[:10].tolist()}: this model was not trained "
                    "for missing inputs (its absent input would be zeros it never saw); zero_fill_missing=True scores "
                    "it so all the same"
                )
        a = args[k] = given.astype(want["dtype"])
        if a.dtype.kind != "f":
            continue
        if k == names.US_LNM and not np.all((a == 0) | (a == 1)):
            raise ValueError(f"{k} holds {a[(a != 0) & (a != 1)][:3].tolist()}: the flag is 0 or 1")
        if k != names.US_LNM and a.size and not (np.all(np.isfinite(a)) and a.min() >= 0.0 and a.max() <= 1.0):
            raise ValueError(f"{k} holds values outside [0, 1] or not finite: the program takes images in [0, 1]")
    return args


@dataclass(frozen=True)
class ExportedModel:
    """A deserialised program with its weights; call it on a dict of input arrays."""

    exported: object  # jax.export.Exported
    weights: tuple[np.ndarray, ...]
    metadata: dict

    @property
    def inputs(self) -> dict[str, dict]:
        """Input name -> {"shape": [...] with "B" for the batch, "dtype": ...}."""
        return self.metadata["inputs"]

    @property
    def image_size(self) -> int:
        return int(self.metadata["image_size"])

    def __call__(self, inputs: dict, *, zero_fill_missing: bool = False) -> dict[str, np.ndarray]:
        """``inputs`` checked (:func:`checked_inputs`; a ``has_*`` false only for a model trained
        for missing inputs, or with ``zero_fill_missing``), then scored."""
        absent_ok = zero_fill_missing or takes_absent_inputs(self.metadata)
        args = checked_inputs(inputs, self.inputs, absent_ok=absent_ok)
        return served(self.exported.call(list(self.weights), args), self.metadata)


def check_inputs_stated(folder: Path, metadata: dict, program_inputs: dict[str, tuple]) -> None:
    """ExportIntegrityError where ``metadata.json`` describes other inputs than the program takes
    (``program_inputs``: name -> shape, the batch as any non-integer) or than its own image size
    and clip length: an image size edited there (its checksums rewritten) had made predict stop
    on JAX's shape mismatch, naming no file (helper-84)."""
    stated = metadata.get("inputs", {})
    where = f"{folder / METADATA}"
    if set(stated) != set(program_inputs):
        raise ExportIntegrityError(
            f"{where} states inputs {sorted(stated)}, the program takes {sorted(program_inputs)}: the folder was "
            "changed since its export"
        )
    for name, shape in program_inputs.items():
        given = [d if isinstance(d, int) else "B" for d in shape]
        if list(stated[name]["shape"]) != given:
            raise ExportIntegrityError(
                f"{where} states input {name} of shape {stated[name]['shape']}, the program takes {given}: the folder "
                "was changed since its export"
            )
    for said in (metadata, metadata.get("preprocessing", {})):  # (stated at the top level and in preprocessing)
        if "image_size" not in said:
            continue
        size, frames = said["image_size"], said.get("clip_frames", 1)
        for name in names.IMAGE_INPUTS:  # an image [B, H, W, 3] or a clip [B, T, H, W, 3]
            shape = stated.get(name, {}).get("shape")
            clip = shape is not None and len(shape) == 5
            if shape is not None and (
                shape[-3:-1] != [size] * 2
                or (clip and shape[1] != frames)
                or (name == names.CEUS and clip != (frames > 1))
            ):
                raise ExportIntegrityError(
                    f"{where}: image_size {size} and clip_frames {frames} are not its input {name}'s shape {shape}: "
                    "the folder was changed since its export"
                )


def _require(folder: Path, *files: str) -> None:
    for name in files:
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder / name} not found: is {folder} a folder written by lnm-jax export?")


def load(folder: Path | str, fingerprint: str | None = None) -> ExportedModel:
    """Reads a folder written by ``lnm-jax export`` (the StableHLO program), verified first
    (:func:`verify`; against the export's published ``fingerprint`` where given)."""
    import jax  # noqa: PLC0415  (the ONNX loader needs no JAX)
    import jax.export  # noqa: PLC0415  (a submodule `import jax` loads only from jax 0.8: helper-117)

    folder = Path(folder)
    _require(folder, PROGRAM, WEIGHTS, METADATA)
    verify(folder, tuple(dict.fromkeys((PROGRAM, WEIGHTS, METADATA, *_described_files(folder)))), fingerprint)
    metadata = _metadata(folder)
    try:
        exported = jax.export.deserialize(bytearray((folder / PROGRAM).read_bytes()))
    except Exception as e:  # noqa: BLE001  (any failure to read the program names the file)
        raise ExportIntegrityError(f"{folder / PROGRAM} is not a serialised program ({type(e).__name__})") from e
    try:
        with np.load(folder / WEIGHTS, allow_pickle=False) as npz:
            weights = tuple(npz[f"w{i}"] for i in range(len(npz.files)))
    except Exception as e:  # noqa: BLE001  (a truncated or foreign file)
        raise ExportIntegrityError(f"{folder / WEIGHTS} cannot be read ({type(e).__name__}: {e})") from e
    bad = [i for i, w in enumerate(weights) if w.dtype.kind == "f" and not np.all(np.isfinite(w))]
    if bad:
        raise ExportIntegrityError(f"{folder / WEIGHTS}: {len(bad)} weight array(s) hold NaN or inf (e.g. w{bad[0]})")
    expected = [tuple(a.shape) for a in getattr(exported, "in_avals", ())[: len(weights)]]
    if expected and [tuple(w.shape) for w in weights] != expected:
        raise ExportIntegrityError(f"{folder / WEIGHTS}: its arrays' shapes are not those the program takes")
    (_, takes), _ = jax.tree_util.tree_unflatten(exported.in_tree, exported.in_avals)
    check_inputs_stated(folder, metadata, {k: tuple(v.shape) for k, v in takes.items()})
    return ExportedModel(exported, weights, metadata)


@dataclass(frozen=True)
class OnnxModel:
    """The ONNX graph of an exported model in an onnxruntime session; called like
    :class:`ExportedModel` (needs only onnxruntime and numpy)."""

    session: object
    metadata: dict

    @property
    def inputs(self) -> dict[str, dict]:
        return self.metadata["inputs"]

    def __call__(self, inputs: dict, *, zero_fill_missing: bool = False) -> dict[str, np.ndarray]:
        absent_ok = zero_fill_missing or takes_absent_inputs(self.metadata)
        feed = checked_inputs(inputs, self.inputs, absent_ok=absent_ok)
        return served(dict(zip(OUTPUTS, self.session.run(list(OUTPUTS), feed))), self.metadata)


def load_onnx(folder: Path | str, providers=("CPUExecutionProvider",), fingerprint: str | None = None) -> OnnxModel:
    """Reads the ONNX graph of a folder exported with ``--format onnx``, verified first
    (:func:`verify`; against the export's published ``fingerprint`` where given)."""
    folder = Path(folder)
    if (folder / METADATA).is_file() and not (folder / ONNX).is_file():  # (helper-87: "is DIR a folder ...?")
        raise FileNotFoundError(
            f"{folder} holds no {ONNX}: it was exported without ONNX; export it with --format stablehlo,onnx, or "
            "score it with its StableHLO program (--format stablehlo)"
        )
    _require(folder, ONNX, METADATA)
    verify(folder, tuple(dict.fromkeys((ONNX, METADATA, *_described_files(folder)))), fingerprint)
    metadata = _metadata(folder)
    onnx_info = metadata.get("export", {}).get("onnx", {})
    needed = onnx_info.get("runtime", "onnxruntime")
    try:
        import onnxruntime  # noqa: PLC0415  (the onnx extra)
    except ImportError as e:
        raise ImportError(
            f"{folder / ONNX} runs with onnxruntime, which is not installed here: pip install '{needed}' "
            f"(or pip install -r {folder / REQUIREMENTS})"
        ) from e
    try:
        session = onnxruntime.InferenceSession(str(folder / ONNX), providers=list(providers))
    except Exception as e:  # onnxruntime's own exception types (Fail, InvalidGraph...) derive from Exception
        where = f"{folder / ONNX} (ONNX opset {onnx_info.get('opset', '?')}): onnxruntime {onnxruntime.__version__}"
        if too_old := _runtime_too_old(e):  # the requirement is the remedy
            raise ImportError(f"{where} does not load it ({too_old}); this export needs {needed}") from e
        raise ValueError(f"{where} cannot load it: {_runtime_reason(e)}") from e
    check_inputs_stated(folder, metadata, {i.name: tuple(i.shape) for i in session.get_inputs()})
    return OnnxModel(session, metadata)


def _runtime_too_old(e: Exception) -> str | None:
    """The opset or IR version onnxruntime says it is limited to, where its refusal says so (a
    runtime older than the file): a phrase, else None."""
    text = str(e)
    if found := re.search(r"support for domain ai\.onnx is till opset (\d+)", text):
        return f"it runs ONNX opsets up to {found.group(1)}"
    if found := re.search(r"Unsupported model IR version: (\d+), max supported IR version: (\d+)", text):
        return f"it reads ONNX IR versions up to {found.group(2)}, the file's is {found.group(1)}"
    return None


def _runtime_reason(e: Exception) -> str:
    """onnxruntime's refusal's first line without the C++ source location and signature it puts
    before the reason (up to the signature's first ") " before a capital)."""
    first = (str(e).strip().splitlines() or [type(e).__name__])[0]
    return re.sub(r"failed:/\S+ .*?\) (?=[A-Z])", "failed: ", first)[:300]
