"""Checks the lower bounds ``pyproject.toml`` declares: installs the package into a new virtual
environment with every dependency held at the lowest version its bound admits (``name>=X``
installed as ``name==X``, JAX's jaxlib with it), then runs the user's path at toy size there:
a tiny run on the embedded synthetic cohort (``demo``), ``gradcam``, ``export`` and the exported
program's own ``predict.py``. helper-117 found two bounds no such install had met (orbax-checkpoint
0.11.0-0.11.13 refused a run's first checkpoint; ``jax.export`` is not loaded by ``import jax``
before jax 0.8); this script is how a bound is checked before it is written. Downloads from the
package index; not part of the test suite (minutes, and the network).

    python scripts/check_lowest_versions.py --workdir /tmp/lowest          # build, run, print a table
    python scripts/check_lowest_versions.py --workdir /tmp/lowest2 --print-constraints   # the pins only

Exit status 0 when every command ran, 1 otherwise (the failing command's last lines printed)."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tomllib
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# a jax release pins the jaxlib it needs to its own version
COMPANIONS = {"jax": ("jaxlib",)}
TINY = [
    "--config.data.synth.patients=60",
    "--config.data.synth.size=48",
    "--config.data.image_size=32",
    "--config.model.backbone=resnet10",
    "--config.model.width=4",
    "--config.train.epochs=2",
    "--config.train.batch_size=8",
    "--config.eval.bootstrap=50",
]


def lower_bounds(pyproject: Path = ROOT / "pyproject.toml") -> dict[str, str]:
    """``{name: X}`` for each of ``pyproject``'s base dependencies bounded below by ``>=X``
    (markers dropped; one without a lower bound is left to the resolver), with the companions
    of :data:`COMPANIONS`."""
    from packaging.requirements import Requirement  # noqa: PLC0415  (a dependency of the package)

    out = {}
    for spec in tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["dependencies"]:
        req = Requirement(spec)
        for low in (s.version for s in req.specifier if s.operator == ">="):
            for name in (req.name, *COMPANIONS.get(req.name.lower(), ())):
                out[name] = low
    return out


def lowest_release(py: str, name: str, bound: str) -> str:
    """The lowest release of ``name`` at or above ``bound`` that the index offers for the
    environment of interpreter ``py`` (``pip index versions``: a bound such as flatbuffers' 24
    names no release itself)."""
    from packaging.version import Version  # noqa: PLC0415  (pip's own dependency)

    res = subprocess.run([py, "-m", "pip", "index", "versions", name], capture_output=True, text=True, timeout=300)
    listed = re.search(r"Available versions:\s*(.+)", res.stdout)
    if res.returncode != 0 or not listed:
        raise SystemExit(f"cannot list the releases of {name}: {(res.stderr or res.stdout).strip()[-300:]}")
    found = [Version(v.strip()) for v in listed.group(1).split(",")]
    at_or_above = sorted(v for v in found if not v.is_prerelease and v >= Version(bound))
    if not at_or_above:
        raise SystemExit(f"no release of {name} at or above {bound} for this Python")
    return str(at_or_above[0])


def run(cmd: list[str], cwd: Path, limit: float = 1800) -> tuple[bool, str]:
    """(whether ``cmd`` exited 0, its last output lines)."""
    res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=limit)
    tail = "\n".join((res.stdout + res.stderr).strip().splitlines()[-8:])
    return res.returncode == 0, tail


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--workdir", type=Path, required=True, help="a new folder: the environment and the runs")
    p.add_argument("--print-constraints", action="store_true", help="make the environment, print the pins, stop")
    a = p.parse_args(argv)
    work = a.workdir.resolve()
    if work.exists() and any(work.iterdir()):
        p.error(f"--workdir {work} is not empty: give a new folder")
    work.mkdir(parents=True, exist_ok=True)
    venv.create(work / "venv", with_pip=True)
    py = str(work / "venv" / "bin" / "python")
    pins = [f"{name}=={lowest_release(py, name, bound)}" for name, bound in lower_bounds().items()]
    (work / "constraints.txt").write_text("\n".join(pins) + "\n", encoding="utf-8")
    if a.print_constraints:
        print("\n".join(pins))
        return 0
    lnm = str(work / "venv" / "bin" / "lnm-jax")
    steps = [
        ("install", [py, "-m", "pip", "install", "-q", "--no-compile", "-c", "constraints.txt", str(ROOT)]),
        ("demo (tiny)", [lnm, "demo", "--workdir", "run", *TINY]),
        ("gradcam", [lnm, "gradcam", "--workdir", "run"]),
        ("export", [lnm, "export", "--workdir", "run", "--out", "exported"]),
        ("exported predict.py", [py, "exported/predict.py", "--manifest", "run/cohort/manifest.csv", "--out", "p.csv"]),
    ]
    rows, ok_all = [], True
    for name, cmd in steps:
        ok, tail = run(cmd, work) if ok_all else (False, "not run: an earlier step failed")
        rows.append((name, "ok" if ok else "FAILED"))
        if not ok and ok_all:
            print(f"{name} failed: {' '.join(cmd)}\n{tail}", file=sys.stderr)
        ok_all &= ok
    from packaging.utils import canonicalize_name  # noqa: PLC0415

    versions = subprocess.run([py, "-m", "pip", "freeze"], capture_output=True, text=True).stdout
    held = {canonicalize_name(pin.split("==")[0]) for pin in pins}
    print("| step | result |\n|---|---|\n" + "\n".join(f"| {n} | {r} |" for n, r in rows))
    print("\nat: " + ", ".join(v for v in versions.split() if canonicalize_name(v.split("==")[0]) in held))
    return 0 if ok_all else 1


if __name__ == "__main__":
    sys.exit(main())
