"""What produced a run: package versions, the git commit, the devices, XLA flags and the
command line, written to every run folder as ``run_info.json``.

Reproducibility is stated against this record: on the same machine kind with the same versions,
the same number of usable cores and the same JAX settings a run is bitwise reproducible from its
seeds; with another core count XLA:CPU splits the train step's sums otherwise (one float32 unit
at the first step, seed-sized after some epochs, helper-100), and on another CPU (another
instruction set, another oneDNN/XLA kernel choice) fp32 sums run in another order, so numbers
agree only within the tolerances docs/demo.md states.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

from lnm_jax.fileio import is_int
from lnm_jax.portable import preprocessing_digest

PACKAGES = (
    "jax",
    "jaxlib",
    "flax",
    "optax",
    "orbax-checkpoint",
    "numpy",
    "ml-collections",
    "tensorflow",
    "tensorflow-cpu",
    "tensorflow-datasets",
    "scikit-learn",
    # what decoding and the statistics read with (helper-92: the card had named none of them)
    "grain",
    "pillow",
    "pydicom",
    "simplejpeg",
    "scipy",
    "lnm_jax",
)


def package_versions() -> dict[str, str]:
    """Installed versions of the packages a run's numbers depend on (absent ones omitted)."""
    out = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


DISTRIBUTION = "lnm_jax"


def extra_install(extra: str) -> str:
    """How to add the package's optional ``extra`` (``tf``, ``onnx``, ``dicom``) where it is
    missing: the packages it adds on this machine, read from the installed distribution's
    metadata (pyproject.toml their one definition), then the checkout's form. helper-117: the
    hints said ``pip install -e '.[tf]'`` alone, which fails outside a checkout."""
    from packaging.requirements import Requirement  # noqa: PLC0415  (matplotlib's dependency)

    checkout = f"in a checkout: pip install -e '.[{extra}]'"
    try:
        reqs = [Requirement(r) for r in importlib.metadata.requires(DISTRIBUTION) or ()]
    except importlib.metadata.PackageNotFoundError:
        return checkout
    env = {"extra": extra}
    wanted = [str(r).split(";")[0] for r in reqs if r.marker is not None and r.marker.evaluate(env)]
    if not wanted:
        return checkout
    quoted = " ".join(f"'{w}'" for w in wanted)
    return f"pip install {quoted} (the [{extra}] extra of {DISTRIBUTION}; {checkout})"


def license_text() -> str:
    """The text of the licence lnm_jax is distributed under: the installed distribution's
    licence file (``License-File`` in its metadata), else a checkout's ``LICENSE`` beside
    ``pyproject.toml`` (an editable install's metadata lists it, but not where it is). An export
    hands on a copy of lnm_jax's modules, which Apache-2.0 (section 4(a)) hands on with the
    licence (stop 87's leftover: an export held none). ``FileNotFoundError`` where neither is."""
    try:
        dist = importlib.metadata.distribution(DISTRIBUTION)
        named = set(dist.metadata.get_all("License-File") or ())
        files = [f.locate() for f in dist.files or () if f.name in named or str(f) in named]
    except importlib.metadata.PackageNotFoundError:
        files = []
    root = Path(__file__).resolve().parents[1]
    if (root / "pyproject.toml").is_file():
        files.append(root / "LICENSE")
    for path in files:
        if Path(path).is_file():
            return Path(path).read_text(encoding="utf-8")
    raise FileNotFoundError(f"{DISTRIBUTION}'s licence text is in neither its installed metadata nor a checkout")


def git_commit(path: Path | None = None) -> dict | None:
    """The commit of the project's checkout (and whether it has uncommitted changes: then
    ``diff_sha256``, the SHA-256 of ``git diff HEAD`` and of the package's untracked source
    files, so that two records of one commit with different edits are told apart, helper-92),
    or None when the package is not installed from a git checkout of its own: no ``.git`` at
    ``path`` (default: the folder above the package), or one in which none of the package's
    files is tracked (helper-117: a wheel installed with ``--target`` into a folder that is
    another project's repository had been recorded at that project's commit). A package file
    the commit does not hold (a new module not yet added) is an uncommitted change."""
    root = Path(path) if path else Path(__file__).resolve().parents[1]
    package = root / __package__
    if not (root / ".git").exists():
        return None

    def git(*args: str, timeout: float = 10) -> bytes:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, timeout=timeout, check=True).stdout

    try:
        tracked = set(git("ls-files", "-z", "--", package.name).decode().split("\0")) - {""}
        if not tracked:
            return None
        commit = git("rev-parse", "HEAD").decode().strip()
        dirty = git("status", "--porcelain", "--untracked-files=no").strip()
        untracked = sorted(
            f.relative_to(root).as_posix()
            for f in package.rglob("*.py")
            if f.relative_to(root).as_posix() not in tracked
        )
        diff = git("diff", "HEAD", "--binary", timeout=30) if dirty else b""
    except (OSError, subprocess.SubprocessError, UnicodeDecodeError, ValueError):
        return None
    out = {"commit": commit, "dirty": bool(dirty or untracked)}
    if out["dirty"]:
        h = hashlib.sha256(diff)
        for name in untracked:  # (git diff shows no untracked file)
            h.update(b"\0" + name.encode() + b"\0" + (root / name).read_bytes())
        out["diff_sha256"] = h.hexdigest()
    return out


def uncommitted_text(git: dict) -> str:
    """' (uncommitted changes, diff sha256 ...)' of a dirty checkout's record (:func:`git_commit`),
    '' of a clean one."""
    if not git.get("dirty"):
        return ""
    return f" (uncommitted changes{', diff sha256 ' + git['diff_sha256'][:16] if git.get('diff_sha256') else ''})"


def commit_text(git: dict | None) -> str:
    """A commit record (:func:`git_commit`) in a sentence: 'commit abc123456789 with uncommitted
    changes', or 'no recorded commit'."""
    if not git:
        return "no recorded commit"
    return f"commit {git['commit'][:12]}" + (" with uncommitted changes" if git.get("dirty") else "")


def made_with() -> dict:
    """The code and packages of this process (no devices: those are a run's ``run_info.json``),
    for an artefact made outside a run folder, such as a pretrained backbone's ``backbone.json``."""
    return {"packages": package_versions(), "git": git_commit(), "source_sha256": source_digest()}


def version_line() -> str:
    """``lnm-jax --version``: the package version, then what tells code apart where the version
    does not (it is 0.1.0 throughout; helper-117): the commit of a checkout (and whether it has
    uncommitted changes), and the SHA-256 of the package's source, which every run records
    (``run_info.json``'s ``source_sha256``) whether or not it came from a checkout."""
    from lnm_jax import __version__  # noqa: PLC0415

    git = git_commit()
    code = "no git checkout" if git is None else f"commit {git['commit'][:12]}{uncommitted_text(git)}"
    return f"lnm-jax {__version__}, {code}, source sha256 {source_digest()[:12]}"


def usable_cpus() -> int:
    """The cores this process may run on (its affinity: taskset, a container's cpuset, a batch
    scheduler's allocation), which XLA:CPU sizes its thread pool and its sums' split by."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


# the instruction-set features that change which kernels XLA:CPU, oneDNN and Eigen run (x86, Arm)
ISA_FEATURES = (
    *("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16"),
    *("avx512_fp16", "amx_tile", "amx_bf16", "amx_int8", "asimd", "sve", "sve2", "bf16", "i8mm"),
)


def cpu_features() -> list[str]:
    """Which of :data:`ISA_FEATURES` this CPU has (``/proc/cpuinfo``'s flags; empty elsewhere):
    one model name can come with or without AVX-512, enabled or not (helper-100)."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.split(":", 1)[0].strip() in ("flags", "Features"):
                have = set(line.split(":", 1)[1].split())
                return [f for f in ISA_FEATURES if f in have]
    except OSError:
        pass
    return []


# JAX settings that change a run's numbers and are set outside its config (environment
# variables JAX_*, or jax.config.update in a notebook): random streams, precision
JAX_SETTINGS = (
    "jax_enable_x64",
    "jax_threefry_partitionable",
    "jax_default_prng_impl",
    "jax_random_seed_offset",  # (helper-102: JAX_RANDOM_SEED_OFFSET=1 drew other numbers from every key)
    "jax_default_matmul_precision",
)


def jax_settings() -> dict:
    """:data:`JAX_SETTINGS` as this process has them (helper-100: JAX_THREEFRY_PARTITIONABLE=0
    drew other initial weights, JAX_ENABLE_X64=1 computed a step at another precision, and the
    record of either run was the default's)."""
    import jax  # noqa: PLC0415

    out = {}
    for name in JAX_SETTINGS:
        value = getattr(jax.config, name, None)
        out[name] = value if isinstance(value, bool | int | float | type(None)) else str(value)
    return out


def source_digest() -> str:
    """SHA-256 of this package's Python source (each file's path and bytes, in path order): the
    code that ran, where no git checkout records it (an installed wheel, a copy)."""
    root, h = Path(__file__).resolve().parent, hashlib.sha256()
    for f in sorted(root.rglob("*.py")):
        h.update(f.relative_to(root).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


def cpu_model() -> str:
    """The CPU's model name (what decides fp32 kernel choices on XLA:CPU)."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run_info(argv: list[str] | None = None, kinds: Iterable[str] | None = None) -> dict:
    """The provenance record of this process (imports JAX to read its devices); its compile
    options are those of ``kinds`` (names of :data:`lnm_jax.compile_options.KINDS`: the kinds of
    program the process builds, e.g. only 'inference' for an evaluation), default every kind."""
    import jax  # noqa: PLC0415  (only when a run is written)

    from lnm_jax.compile_options import KINDS, compiler_options  # noqa: PLC0415  (imports JAX)

    devices = jax.devices()
    return {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": list(sys.argv if argv is None else argv),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_features": cpu_features(),
        "usable_cpus": usable_cpus(),
        "packages": package_versions(),
        "git": git_commit(),
        "source_sha256": source_digest(),
        "jax_settings": jax_settings(),
        # the decoding and framing code's digest: an export or evaluation by other code is said so
        "preprocessing_sha256": preprocessing_digest(),
        "backend": jax.default_backend(),
        "device_kind": devices[0].device_kind,
        "device_count": jax.device_count(),
        "local_device_count": jax.local_device_count(),
        "process_count": jax.process_count(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "glibc_tunables": os.environ.get("GLIBC_TUNABLES", ""),  # the allocator setting (host_memory.py)
        # what this backend's programs are compiled with, by kind (compile_options.py)
        "compile_options": {
            name: compiler_options(kind) or {} for name, kind in KINDS.items() if kinds is None or name in kinds
        },
    }


# what run_info() records that a reader (a model card, a resume) uses, by type
_TEXT = ("created", "python", "platform", "cpu", "backend", "device_kind")
_COUNTS = ("device_count", "local_device_count", "process_count")


def run_info_problem(info: object) -> str | None:
    """What is wrong with a stored :func:`run_info` record as a reader uses it (one phrase, or
    None): its texts strings, its device counts integers, ``packages`` an object of version
    strings, ``git`` null or an object with a ``commit`` string and a ``dirty`` flag."""
    if not isinstance(info, dict):
        return "it is not an object"
    for k in _TEXT:
        if k in info and not isinstance(info[k], str):
            return f"'{k}' is {info[k]!r}, not a string"
    for k in _COUNTS:
        if k in info and not is_int(info[k]):
            return f"'{k}' is {info[k]!r}, not an integer"
    packages = info.get("packages", {})
    if not isinstance(packages, dict) or not all(isinstance(v, str) for v in packages.values()):
        return f"'packages' is {packages!r}, not an object of versions"
    git = info.get("git")
    if git is not None and not (
        isinstance(git, dict) and isinstance(git.get("commit"), str) and isinstance(git.get("dirty"), bool)
    ):
        return f"'git' is {git!r}, not null or an object with a commit and a dirty flag"
    return None
