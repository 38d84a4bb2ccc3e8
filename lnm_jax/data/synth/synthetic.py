"""Synthetic PTC cohort: the embedded default, with a known Bayes-optimal AUC.

Generative model (all draws seeded; patient i uses ``default_rng([seed, i])``):

* ``lnm ~`` exactly ``round(prevalence * n)`` positives, shuffled.
* Two latent suspicion scores, conditionally independent given the label:
  ``s_bmode ~ N(d_b * lnm, 1)`` and ``s_ceus ~ N(d_c * lnm, 1)``; ``d`` is the cue strength.
* The US-LNM flag is a noisy reading of the label: ``P(flag=1 | lnm=1) = sensitivity``,
  ``P(flag=0 | lnm=0) = specificity`` (paper: 38.6% / 90.0%), independent of the images.
* Each image is a deterministic, monotone rendering of its latent ``u = Phi(s - d/2)`` on top
  of label-independent nuisance (nodule position, size, shape, speckle, gain):
  B-mode: a Rayleigh-speckled thyroid texture with a hypoechoic nodule whose darkness,
  margin irregularity and number of microcalcification dots grow with ``u``;
  CEUS: a contrast-tinted perfusion image of the same nodule whose enhancement drops and
  turns heterogeneous with a brighter peripheral ring as ``u`` grows.

Clip mode (``clip_frames`` >= 4) writes each CEUS as a folder of frames with time-intensity
curves: contrast arrives, peaks (the peak frame is the still image above) and washes out. A
third latent ``s_ceus_dynamic ~ N(d_t * lnm, 1)`` (``ceus_dynamic_strength``) sets only the
nodule's wash-out rate relative to the parenchyma, so a model that sees the clip's dynamics
can reach an AUC that no single frame allows.

Because the images carry exactly the latent (up to rendering quantisation), the Bayes-optimal
AUC of each input set follows in closed form (:func:`bayes_auc`); a trained model is judged
against it.  Age and sex are label-dependent metadata (never model inputs), nodule size is
label-independent.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
from pathlib import Path

import numpy as np
from PIL import Image

from lnm_jax.data.cohorts.manifest import write_manifest
from lnm_jax.data.pixels.dicom import COMPRESSIONS
from lnm_jax.data.threads import cpus, ordered_map
from lnm_jax.fileio import (
    SEED_RANGE,
    DamagedFileError,
    atomic_directory,
    is_int,
    is_number,
    is_seed,
    json_text,
    read_json,
)
from lnm_jax.names import BMODE, CEUS, LABEL, MASK_COLUMNS, PATIENT_ID, SETTINGS, US_LNM, mask, mask_file, picture_file
from lnm_jax.run_files import GENERATOR, MANIFEST, TRUTH


@dataclasses.dataclass(frozen=True)
class SynthParams:
    patients: int = 308
    prevalence: float = 0.513
    bmode_strength: float = 1.5
    ceus_strength: float = 1.6
    flag_sensitivity: float = 0.386
    flag_specificity: float = 0.900
    size: int = 256
    p_missing_bmode: float = 0.0
    p_missing_ceus: float = 0.0
    p_missing_flag: float = 0.0
    clip_frames: int = 0  # 0: CEUS stills; >= 4: CEUS clips of this many frames
    ceus_dynamic_strength: float = 0.0  # the wash-out cue, seen only in clips
    seed: int = 0
    # 'png': the images themselves; 'dicom': the same images on scanner screens, as a hospital
    # sends them (lnm_jax/data/synth/synthetic_dicom.py): banner, scales, CEUS dual display, PHI.
    format: str = "png"
    dicom_compression: str = "jpeg"  # 'none' | 'rle' | 'jpeg' (baseline, YBR_FULL_422)
    dicom_zoom: float = 0.0  # depth settings differ by up to this factor (spacing follows)

    # each field as `lnm-jax synth --help` describes it
    HELP = {
        "patients": "number of patients (>= 2)",
        "prevalence": "fraction with lymph node metastasis, in (0, 1)",
        "bmode_strength": "the B-mode image cue's effect size d (0: no signal)",
        "ceus_strength": "the CEUS image cue's effect size d (0: no signal)",
        "flag_sensitivity": "the US-LNM flag's sensitivity for LNM, in (0, 1)",
        "flag_specificity": "the US-LNM flag's specificity, in (0, 1)",
        "size": "side of the written images in pixels (>= 32)",
        "p_missing_bmode": "fraction of patients without a B-mode image, in [0, 1)",
        "p_missing_ceus": "fraction of patients without a CEUS image, in [0, 1)",
        "p_missing_flag": "fraction of patients without the US-LNM flag, in [0, 1)",
        "clip_frames": "0: CEUS stills; >= 4: CEUS clips of this many frames",
        "ceus_dynamic_strength": "the wash-out cue's effect size, seen only in clips (needs --clip-frames)",
        "seed": "random seed of the cohort",
        "format": "png (the images) or dicom (the same images on scanner screens, as a hospital sends them)",
        "dicom_compression": "DICOM pixel encoding: none, rle or jpeg",
        "dicom_zoom": "DICOM depth settings differ by up to this factor, in [0, 0.5)",
    }

    def __post_init__(self):
        # every parameter's kind first (a generator.json edited by hand, a NaN on the command
        # line): whole numbers, finite real numbers, text; then the ranges below
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            kind, ok = {
                int: ("a whole number", is_int(value)),
                float: ("a finite number", is_number(value)),
                str: ("text", isinstance(value, str)),
            }[type(f.default)]
            if not ok:
                raise ValueError(f"{f.name} must be {kind}, got {value!r}")
        if self.patients < 2:
            raise ValueError(f"patients must be >= 2, got {self.patients}")
        if not is_seed(self.seed):
            raise ValueError(f"seed must be {SEED_RANGE}, got {self.seed}")
        for name in ("prevalence", "flag_sensitivity", "flag_specificity"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in (0, 1), got {getattr(self, name)}")
        for name in ("p_missing_bmode", "p_missing_ceus", "p_missing_flag"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.size < 32:
            raise ValueError(f"size must be >= 32 pixels, got {self.size}")
        if self.clip_frames and self.clip_frames < 4:
            raise ValueError(f"clip_frames must be 0 (stills) or >= 4, got {self.clip_frames}")
        if self.ceus_dynamic_strength and not self.clip_frames:
            raise ValueError("ceus_dynamic_strength needs clips (clip_frames >= 4)")
        if self.format not in ("png", "dicom"):
            raise ValueError(f"format must be 'png' or 'dicom', got {self.format!r}")
        if self.dicom_compression not in COMPRESSIONS:
            raise ValueError(f"dicom_compression must be one of {COMPRESSIONS}, got {self.dicom_compression!r}")
        if not 0.0 <= self.dicom_zoom < 0.5:
            raise ValueError(f"dicom_zoom must be in [0, 0.5), got {self.dicom_zoom}")


def _phi(x):
    from scipy import special  # noqa: PLC0415  (lazy: lnm-jax synth --help stays fast)

    return 0.5 * (1.0 + special.erf(np.asarray(x) / math.sqrt(2.0)))


def sample_latents(params: SynthParams, n: int | None = None, seed: int | None = None) -> dict:
    """Draws labels, latent scores and flags (no images): the generative model's core."""
    n = params.patients if n is None else n
    rng = np.random.default_rng([params.seed if seed is None else seed, 2**31 - 1])
    lnm = np.zeros(n, np.int64)
    lnm[: int(round(params.prevalence * n))] = 1
    rng.shuffle(lnm)
    s_bmode = params.bmode_strength * lnm + rng.standard_normal(n)
    s_ceus = params.ceus_strength * lnm + rng.standard_normal(n)
    p_flag = np.where(lnm == 1, params.flag_sensitivity, 1.0 - params.flag_specificity)
    us_lnm = (rng.random(n) < p_flag).astype(np.int64)
    # drawn last, so that stills cohorts keep every earlier draw
    s_dyn = params.ceus_dynamic_strength * lnm + rng.standard_normal(n)
    return {LABEL: lnm, "s_bmode": s_bmode, "s_ceus": s_ceus, US_LNM: us_lnm, "s_ceus_dynamic": s_dyn}


def _strengths(params: SynthParams, temporal: bool) -> dict[str, float]:
    """Cue strength per image input; CEUS pools its static and (clips) dynamic cues."""
    dyn = params.ceus_dynamic_strength if temporal else 0.0
    return {BMODE: params.bmode_strength, CEUS: math.hypot(params.ceus_strength, dyn)}


def bayes_auc(params: SynthParams, temporal: bool = True) -> dict[str, float]:
    """Closed-form Bayes-optimal AUC of each setting (complete inputs). ``temporal=False``:
    of a model that sees one CEUS frame of a clip (the dynamic cue is then out of reach).

    With conditionally independent inputs the log-likelihood ratio is
    ``d*g + L(flag)`` where ``g ~ N(d*lnm, 1)`` pools the image latents
    (``d = sqrt(d_b^2 + d_c^2)``) and ``L`` is the flag's log-likelihood ratio; the AUC of
    that score is ``sum_{f1,f0} P(f1|1) P(f0|0) Phi((d^2 + L(f1) - L(f0)) / (d*sqrt 2))``.
    The flag alone has tied scores: its AUC is (sensitivity + specificity) / 2.
    """
    sens, spec = params.flag_sensitivity, params.flag_specificity
    p1 = {1: sens, 0: 1 - sens}  # P(flag | lnm=1)
    p0 = {1: 1 - spec, 0: spec}  # P(flag | lnm=0)
    llr = {f: math.log(p1[f] / p0[f]) for f in (0, 1)}
    out = {}
    for name, inputs in SETTINGS.items():
        d = math.sqrt(sum(_strengths(params, temporal).get(i, 0.0) ** 2 for i in inputs))
        if US_LNM not in inputs:
            out[name] = float(_phi(d / math.sqrt(2.0)))
        elif d == 0.0:
            out[name] = 0.5 * (sens + spec)
        else:
            out[name] = float(
                sum(
                    p1[f1] * p0[f0] * _phi((d * d + llr[f1] - llr[f0]) / (d * math.sqrt(2.0)))
                    for f1 in (0, 1)
                    for f0 in (0, 1)
                )
            )
    return out


def bayes_scores(latents: dict, params: SynthParams, inputs: tuple[str, ...], temporal: bool = True) -> np.ndarray:
    """The Bayes-optimal score (log-likelihood ratio) of each patient from the latents of
    ``inputs``; its AUC on a split is the best any model can reach on those patients."""
    score = np.zeros(len(latents[LABEL]))
    strength = {BMODE: params.bmode_strength, CEUS: params.ceus_strength}
    if temporal and CEUS in inputs and params.ceus_dynamic_strength:
        score += params.ceus_dynamic_strength * np.asarray(latents["s_ceus_dynamic"], float)
    for name in inputs:
        if name == US_LNM:
            sens, spec = params.flag_sensitivity, params.flag_specificity
            flag = np.asarray(latents[US_LNM])
            score += np.where(flag == 1, math.log(sens / (1 - spec)), math.log((1 - sens) / spec))
        else:
            score += strength[name] * np.asarray(latents[f"s_{name}"], float)
    return score


def generator_params(cohort_dir: Path | str) -> SynthParams | None:
    """The parameters :func:`generate_cohort` drew the cohort in ``cohort_dir`` with (its
    ``generator.json``; parameters added since it was written count at their defaults), or None
    where the folder holds no such record (not a synthetic cohort). A record that cannot be read,
    names a parameter this version does not know or holds one out of range raises
    :class:`lnm_jax.fileio.DamagedFileError` naming it."""
    path = Path(cohort_dir) / GENERATOR
    if not path.is_file():
        return None
    stored = read_json(path, required=("params",))["params"]
    if not isinstance(stored, dict):
        raise DamagedFileError(f"{path}: 'params' is not an object")
    if unknown := sorted(set(stored) - {f.name for f in dataclasses.fields(SynthParams)}):
        raise DamagedFileError(f"{path}: parameters this version of lnm_jax does not know: {unknown}")
    try:
        return dataclasses.replace(SynthParams(), **stored)
    except (TypeError, ValueError) as e:
        raise DamagedFileError(f"{path}: {e}") from None


def temporal_reference(params: SynthParams, clip_frames: int) -> bool:
    """Whether the Bayes-optimal reference of a model that reads ``clip_frames`` CEUS frames
    (``data.clip_frames``) of this cohort includes the clips' temporal cue: not where it reads
    stills (1) of a clip cohort (:func:`bayes_auc`'s ``temporal``)."""
    return not (clip_frames == 1 and params.clip_frames)


def read_truth(cohort_dir: Path | str) -> dict[str, np.ndarray]:
    """The latents written beside a synthetic cohort (``truth.csv``), keyed like
    :func:`sample_latents`, plus ``patient_id`` and the nodule ellipse (``nodule_*``). A file
    missing, or that is not the table :func:`generate_cohort` wrote (a column missing, a value
    not a number), raises :class:`lnm_jax.fileio.DamagedFileError` naming it."""
    path = Path(cohort_dir) / TRUTH
    if not path.is_file():
        raise DamagedFileError(f"{path} is missing: the generator's record of each patient's latents")
    try:
        t = np.atleast_1d(np.genfromtxt(path, delimiter=",", names=True, dtype=None, encoding="utf-8"))
        out = {
            PATIENT_ID: t[PATIENT_ID].astype(str),
            LABEL: t[LABEL].astype(np.int64),
            "s_bmode": t["s_bmode"].astype(np.float64),
            "s_ceus": t["s_ceus"].astype(np.float64),
            US_LNM: t["us_lnm_true_reading"].astype(np.int64),
            "s_ceus_dynamic": t["s_ceus_dynamic"].astype(np.float64),
        }
        out.update({k: t[k].astype(np.float64) for k in t.dtype.names if k.startswith("nodule_")})
    except (ValueError, TypeError, KeyError, IndexError) as e:
        raise DamagedFileError(f"{path}: not the table lnm-jax synth wrote ({e})") from None
    if not all(np.isfinite(v).all() for k, v in out.items() if k != PATIENT_ID):
        raise DamagedFileError(f"{path}: holds a value that is not a finite number")
    return out


def _smooth_noise(rng, size: int, sigma: float) -> np.ndarray:
    """Zero-mean, unit-std low-frequency field."""
    from scipy import ndimage  # noqa: PLC0415  (lazy: lnm-jax synth --help stays fast)

    f = ndimage.gaussian_filter(rng.standard_normal((size, size)), sigma, mode="wrap")
    return (f - f.mean()) / (f.std() + 1e-8)


def _nodule_geometry(rng, size: int) -> dict:
    return {
        "cx": rng.uniform(0.35, 0.65) * size,
        "cy": rng.uniform(0.40, 0.62) * size,
        "a": rng.uniform(0.14, 0.18) * size,
        "b": rng.uniform(0.11, 0.14) * size,
        "angle": rng.uniform(-0.4, 0.4),
        "harmonics": rng.integers(3, 10, size=4),
        "coef": rng.dirichlet(np.ones(4)),
        "phase": rng.uniform(0, 2 * np.pi, size=4),
    }


def _nodule_field(geom: dict, size: int, irregularity: float):
    """Returns (rho / boundary radius, soft inside-mask) on the pixel grid."""
    from scipy import special  # noqa: PLC0415  (lazy: lnm-jax synth --help stays fast)

    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    dx, dy = xx - geom["cx"], yy - geom["cy"]
    c, s = math.cos(geom["angle"]), math.sin(geom["angle"])
    u, v = (c * dx + s * dy) / geom["a"], (-s * dx + c * dy) / geom["b"]
    rho, theta = np.hypot(u, v), np.arctan2(v, u)
    boundary = 1.0 + irregularity * sum(
        w * np.cos(k * theta + p) for w, k, p in zip(geom["coef"], geom["harmonics"], geom["phase"])
    )
    r = rho / boundary
    edge = 1.5 / min(geom["a"], geom["b"])  # ~1.5 px soft edge
    mask = special.expit((1.0 - r) / edge)
    return r, mask


def render_bmode(u: float, geom: dict, rng, size: int) -> np.ndarray:
    """Grayscale B-mode (uint8 HxW): darker, more irregular, more calcified nodule as u grows."""
    from scipy import ndimage  # noqa: PLC0415  (lazy: lnm-jax synth --help stays fast)

    depth = np.linspace(0.0, 1.0, size)[:, None]
    tissue = 0.55 * (1.0 - 0.35 * depth) * (1.0 + 0.12 * _smooth_noise(rng, size, size / 16))
    tissue[: max(2, size // 25)] *= 1.6  # skin / strap-muscle interface
    r, mask = _nodule_field(geom, size, irregularity=0.03 + 0.22 * u)
    mean = tissue * (1.0 - mask) + tissue * (0.72 - 0.42 * u) * mask
    speckle = rng.rayleigh(scale=math.sqrt(2.0 / math.pi), size=(size, size))
    speckle = ndimage.gaussian_filter(speckle, 0.7)
    speckle /= speckle.mean()
    img = mean * speckle
    n_calc = int(round(1 + 11 * u))
    sigma = max(1.0, size / 80.0)  # dots survive downsampling to CPU-sized inputs
    yy, xx = np.mgrid[0:size, 0:size]
    inside = np.argwhere(r < 0.75)
    if len(inside):
        for y, x in inside[rng.integers(0, len(inside), size=n_calc)]:
            img += 0.65 * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * sigma**2))
    img *= rng.uniform(0.95, 1.05)  # overall gain
    return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _ceus_fields(u: float, geom: dict, rng, size: int):
    """Peak-enhancement intensity of the parenchyma and of the nodule (ring included)."""
    parenchyma = 0.30 * (1.0 + 0.2 * _smooth_noise(rng, size, size / 12))
    r, mask = _nodule_field(geom, size, irregularity=0.05)
    patches = _smooth_noise(rng, size, size / 40)
    nodule = (0.52 - 0.26 * u) * (1.0 + (0.08 + 0.55 * u) * patches)
    ring = np.exp(-(((r - 1.0) / 0.12) ** 2))
    return parenchyma * (1.0 - mask), nodule * mask + 0.42 * u * ring


def _ceus_frame(intensity: np.ndarray, rng) -> np.ndarray:
    """Microbubble speckle and the contrast tint -> uint8 HxWx3."""
    from scipy import ndimage  # noqa: PLC0415  (lazy: lnm-jax synth --help stays fast)

    size = intensity.shape[0]
    bubbles = ndimage.gaussian_filter(rng.gamma(4.0, 0.25, size=(size, size)), 0.7)
    intensity = np.clip(intensity * bubbles / bubbles.mean(), 0.0, 1.0)
    rgb = np.stack([intensity**0.85, 0.72 * intensity**1.15, 0.45 * intensity**1.6], axis=-1)
    return (np.clip(rgb, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def render_ceus(u: float, geom: dict, rng, size: int) -> np.ndarray:
    """Contrast-tinted CEUS (uint8 HxWx3): homogeneous enhancement for low u; hypo-enhanced,
    patchy, ring-enhancing nodule for high u."""
    parenchyma, nodule = _ceus_fields(u, geom, rng, size)
    return _ceus_frame(parenchyma + nodule, rng)


def time_intensity(t: np.ndarray, t_peak: float, washout: float) -> np.ndarray:
    """Enhancement over normalised time: 5% before arrival (t_peak - 0.2), a smoothstep
    wash-in to 1 at ``t_peak``, exponential wash-out at rate ``washout`` after it."""
    arrival = t_peak - 0.2
    x = np.clip((t - arrival) / (t_peak - arrival), 0.0, 1.0)
    wash_in = 0.05 + 0.95 * x * x * (3 - 2 * x)
    return np.where(t <= t_peak, wash_in, np.exp(-washout * (t - t_peak)))


def render_ceus_clip(u: float, u_dynamic: float, geom: dict, rng, size: int, frames: int) -> np.ndarray:
    """A CEUS clip (uint8 [frames, H, W, 3]) whose peak frame looks like :func:`render_ceus`;
    the nodule washes out faster than the parenchyma as ``u_dynamic`` grows."""
    parenchyma, nodule = _ceus_fields(u, geom, rng, size)
    t = np.linspace(0.0, 1.0, frames)
    peak = int(np.clip(round(0.3 * (frames - 1)) + rng.integers(-1, 2), 2, frames - 2))
    a_par = time_intensity(t, t[peak], washout=0.8)
    a_nod = time_intensity(t, t[peak], washout=0.4 + 3.6 * u_dynamic)
    return np.stack([_ceus_frame(parenchyma * ap + nodule * an, rng) for ap, an in zip(a_par, a_nod)])


def generate_cohort(
    out_dir: Path | str, params: SynthParams, *, progress: bool = False, workers: int | None = None
) -> Path:
    """Writes ``images/``, ``manifest.csv``, ``truth.csv`` and ``generator.json`` to ``out_dir``.

    Everything is built in a temporary sibling folder and renamed into place at the end, so an
    interrupted run leaves nothing half-written. ``out_dir`` must not exist or be empty.

    ``workers``: threads rendering patients (:mod:`lnm_jax.data.threads`; 2 threads render 2.0x
    as fast on 2 cores, measured). Each patient draws from its own seed, so the images, manifest
    and truth are the same for any number (DICOM files differ only in their UIDs, new on every
    run); None picks :func:`default_workers`; ValueError for anything else than None or a whole
    number >= 1. The progress bar (``progress``) is closed before an error propagates.
    """
    if workers is not None and (not is_int(workers) or workers < 1):
        raise ValueError(f"workers must be a whole number >= 1 or None, got {workers!r}")
    with atomic_directory(out_dir) as tmp:
        _write_cohort(tmp, params, progress, default_workers(params) if workers is None else workers)
    return Path(out_dir) / MANIFEST


# CPU seconds to render and write one 256 px patient (B-mode, CEUS still, two masks), measured
# on one x86-64 core (200 patients in 16 s); a clip frame costs about a still
_SECONDS_PER_PATIENT_256 = 0.08


def default_workers(params: SynthParams) -> int:
    """Threads for :func:`generate_cohort`: one per half second of estimated rendering (at
    least one), at most the CPUs this process may run on."""
    images = 1 + max(params.clip_frames, 1)
    seconds = params.patients * (params.size / 256) ** 2 * _SECONDS_PER_PATIENT_256 * images / 2
    return max(1, min(cpus(), int(seconds / 0.5)))


def _write_cohort(root: Path, params: SynthParams, progress: bool, workers: int) -> None:
    (root / "images").mkdir()
    lat = sample_latents(params)
    n = params.patients
    width = max(3, len(str(n)))
    # chunks of at most 16 patients, several per worker: uneven ones even out, the bar moves often
    step = max(1, min(16, -(-n // (4 * workers))))
    chunks = [range(s, min(s + step, n)) for s in range(0, n, step)]
    rows, truth = [], []
    render = functools.partial(_render_patients, root, params, lat, width)
    with contextlib.ExitStack() as stack:
        bar = None
        if progress:
            from tqdm import tqdm  # noqa: PLC0415

            bar = stack.enter_context(tqdm(total=n, desc="synth", unit="patient"))  # closed on error too
        for part in ordered_map(render, chunks, workers):
            for row, t in part:
                rows.append(row)
                truth.append(t)
            if bar is not None:
                bar.update(len(part))
    masks = [c for c in MASK_COLUMNS if any(c in r for r in rows)]
    write_manifest(root / MANIFEST, rows, extra_columns=(*masks, "age", "sex", "nodule_size_mm"))
    with (root / TRUTH).open("w", encoding="utf-8") as f:
        cols = list(truth[0])
        f.write(",".join(cols) + "\n")
        for t in truth:
            f.write(",".join(f"{t[c]:.6f}" if isinstance(t[c], float) else str(t[c]) for c in cols) + "\n")
    (root / GENERATOR).write_text(
        json_text(
            {
                "params": dataclasses.asdict(params),
                "bayes_auc": bayes_auc(params),
                "bayes_auc_single_ceus_frame": bayes_auc(params, temporal=False),
                "model": __doc__.strip(),
            },
            indent=2,
        ),
        encoding="utf-8",
    )


def _render_patients(root: Path, params: SynthParams, lat: dict, width: int, indices: range) -> list[tuple[dict, dict]]:
    """Renders and writes patients ``indices`` under ``root``: their manifest and truth rows."""
    return [_render_patient(root, params, lat, width, i) for i in indices]


def _render_patient(root: Path, params: SynthParams, lat: dict, width: int, i: int) -> tuple[dict, dict]:
    """Patient ``i``'s images and masks written under ``root``; its manifest row and truth row."""
    rng = np.random.default_rng([params.seed, i])
    pid = f"SYN{i:0{width}d}"
    y = int(lat[LABEL][i])
    u_b = float(_phi(lat["s_bmode"][i] - params.bmode_strength / 2))
    u_c = float(_phi(lat["s_ceus"][i] - params.ceus_strength / 2))
    u_t = float(_phi(lat["s_ceus_dynamic"][i] - params.ceus_dynamic_strength / 2))
    geom = _nodule_geometry(rng, params.size)
    missing = rng.random(3) < (params.p_missing_bmode, params.p_missing_ceus, params.p_missing_flag)
    if missing[0] and missing[1] and missing[2]:
        missing[2] = False  # every patient keeps at least one input
    row = {PATIENT_ID: pid, LABEL: y, US_LNM: None if missing[2] else int(lat[US_LNM][i])}
    bmode = None if missing[0] else render_bmode(u_b, geom, rng, params.size)
    if missing[1]:
        ceus = None
    elif params.clip_frames:
        ceus = render_ceus_clip(u_c, u_t, geom, rng, params.size, params.clip_frames)
    else:
        ceus = render_ceus(u_c, geom, rng, params.size)
    if params.format == "dicom":
        row.update(_write_dicom(root, pid, i, params, bmode, ceus, u_b, geom))
    else:
        row.update(_write_png(root, pid, bmode, ceus))
        row.update(_write_masks(root, pid, row, u_b, geom, params.size))
    row["age"] = int(np.clip(rng.normal(41 if y else 47, 12), 18, 85))
    row["sex"] = "M" if rng.random() < (0.40 if y else 0.25) else "F"
    row["nodule_size_mm"] = round(2 * geom["a"] / params.size * 40.0, 1)
    return row, {
        PATIENT_ID: pid,
        LABEL: y,
        "s_bmode": lat["s_bmode"][i],
        "s_ceus": lat["s_ceus"][i],
        "us_lnm_true_reading": int(lat[US_LNM][i]),
        "s_ceus_dynamic": lat["s_ceus_dynamic"][i],
        "u_ceus_dynamic": u_t,
        "u_bmode": u_b,
        "u_ceus": u_c,
        # nodule ellipse as fractions of the image side (where the cues sit)
        **{f"nodule_{k}": geom[k] / (1.0 if k == "angle" else params.size) for k in ("cx", "cy", "a", "b", "angle")},
    }


def _write_png(root: Path, pid: str, bmode, ceus) -> dict[str, str]:
    cells = {}
    if bmode is not None:
        cells[BMODE] = picture_file(pid, BMODE, ".png")
        Image.fromarray(bmode, "L").save(root / cells[BMODE])
    if ceus is not None and ceus.ndim == 4:
        cells[CEUS] = picture_file(pid, CEUS)
        (root / cells[CEUS]).mkdir()
        for k, frame in enumerate(ceus):
            Image.fromarray(frame, "RGB").save(root / cells[CEUS] / f"frame_{k:03d}.png")
    elif ceus is not None:
        cells[CEUS] = picture_file(pid, CEUS, ".png")
        Image.fromarray(ceus, "RGB").save(root / cells[CEUS])
    return cells


def _write_masks(root: Path, pid: str, row: dict, u_b: float, geom: dict, size: int) -> dict[str, str]:
    """Each present image's nodule outline as a binary PNG (0/255, its image's size): the
    lesion masks Grad-CAM is scored against. The boundary is the one the image was drawn with
    (B-mode: its label-dependent irregularity; CEUS: the perfusion map's)."""
    cells = {}
    for name, irregularity in ((BMODE, 0.03 + 0.22 * u_b), (CEUS, 0.05)):
        if name in row:
            cells[mask(name)] = mask_file(pid, name)
            inside = _nodule_field(geom, size, irregularity)[1] > 0.5
            Image.fromarray(inside.astype(np.uint8) * 255, "L").save(root / cells[mask(name)])
    return cells


def _write_dicom(root: Path, pid: str, i: int, params: SynthParams, bmode, ceus, u_b: float, geom) -> dict[str, str]:
    from lnm_jax.data.synth import synthetic_dicom  # noqa: PLC0415

    # the dual display's low-MI B-mode reference: the same nodule, from the screen's stream
    reference = None
    if ceus is not None:
        ref_rng = np.random.default_rng([synthetic_dicom.SCREEN_STREAM, params.seed, i, 1])
        reference = render_bmode(u_b, geom, ref_rng, params.size)
    return synthetic_dicom.write_patient(
        root / "images",
        pid,
        i,
        seed=params.seed,
        bmode=bmode,
        ceus=ceus,
        reference=reference,
        zoom_range=params.dicom_zoom,
        compression=params.dicom_compression,
    )


# Named starting points for `lnm-jax synth --preset`; explicit values override them.
PRESETS = {
    "default": {},
    # cue strengths giving the paper's single-modality AUCs (B-mode 0.72, CEUS 0.73)
    "paper": {"bmode_strength": 0.824, "ceus_strength": 0.867},
}


def preset_params(preset: str = "default", **overrides) -> SynthParams:
    """``SynthParams`` of a preset, with ``overrides`` (explicit values) on top."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset '{preset}', expected one of {sorted(PRESETS)}")
    return SynthParams(**{**PRESETS[preset], **overrides})


def describe(params: SynthParams) -> str:
    """The generator's Bayes-optimal AUC of every setting, as printed by ``lnm-jax synth``."""
    text = "Bayes-optimal AUC: " + ", ".join(f"{k} {v:.3f}" for k, v in bayes_auc(params).items())
    if params.clip_frames:
        text += "\n  from one CEUS frame: " + ", ".join(
            f"{k} {v:.3f}" for k, v in bayes_auc(params, temporal=False).items()
        )
    return text
