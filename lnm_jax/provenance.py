"""What produced a run: package versions, the git commit, the devices, XLA flags and the
command line, written to every run folder as ``run_info.json``.

Reproducibility is stated against this record: on the same machine kind with the same versions
a run is bitwise reproducible from its seeds; on another CPU (another instruction set, another
oneDNN/XLA kernel choice) fp32 sums run in another order, so numbers agree only within
the tolerances docs/demo.md states.
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


def git_commit(path: Path | None = None) -> dict | None:
    """The commit of the project's checkout (and whether it has uncommitted changes: then
    ``diff_sha256``, the SHA-256 of ``git diff HEAD``, so that two records of one commit with
    different edits are told apart, helper-92), or None when the package is not installed from
    a git checkout."""
    root = Path(path) if path else Path(__file__).resolve().parents[1]
    if not (root / ".git").exists():
        return None
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        diff = (
            subprocess.run(
                ["git", "-C", str(root), "diff", "HEAD", "--binary"], capture_output=True, timeout=30, check=True
            ).stdout
            if dirty
            else b""
        )
    except (OSError, subprocess.SubprocessError):
        return None
    out = {"commit": commit, "dirty": bool(dirty)}
    if dirty:
        out["diff_sha256"] = hashlib.sha256(diff).hexdigest()
    return out


def cpu_model() -> str:
    """The CPU's model name (what decides fp32 kernel choices on XLA:CPU)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
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
        "packages": package_versions(),
        "git": git_commit(),
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
