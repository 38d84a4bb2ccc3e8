"""Host memory: the glibc allocator settings the ``lnm-jax`` command runs under on Linux.

XLA:CPU takes every execution's buffers fresh from ``malloc``; glibc serves large ones with
``mmap`` and returns them on ``free``, so every step faults its activations in again, 4 KiB at a
time. The triple ResNet-50 train step at batch 8, 224 px, fp32 faulted in about 538,000 pages a
step (1.0 s of its 6.3 CPU-s in the kernel). With ``glibc.malloc.hugetlb=1`` (glibc >= 2.35)
malloc asks for transparent huge pages (2 MiB) and the same step faults about 2,500: 2.41-2.47
-> 2.78-2.88 patients/s on this repository's 2-core CPU (docs/benchmarks.md, "Host memory").

glibc reads ``GLIBC_TUNABLES`` only when a process starts, so the ``lnm-jax`` command restarts
itself once with the setting (:func:`restart_with_huge_pages`, before JAX is imported or anything
is written) where it is missing, glibc is >= 2.35 and the kernel's transparent huge pages are
``madvise`` or ``always``. ``LNM_JAX_HOST_MALLOC=inherit`` (or ``off``, ``0``, ``no``,
``false``; any case) keeps the environment as it is; another value is named in one line on stderr
and also keeps it. Only the console script restarts (``cli.entry_point``); ``cli.main`` called
from Python never does. A Python program that calls the package (``train(run)``) gets huge pages
by starting its interpreter with the variable (``GLIBC_TUNABLES=glibc.malloc.hugetlb=1 python
my.py``): setting ``os.environ`` inside the program is too late. Processes the command starts
inherit the setting. It is recorded in ``run_info.json`` (``glibc_tunables``). Allocation only:
no computed value changes; peak memory may rise a little (+60 MB on a tiny run).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

HUGE_PAGES = "glibc.malloc.hugetlb=1"
TUNABLES = "GLIBC_TUNABLES"
OPT_OUT = "LNM_JAX_HOST_MALLOC"  # 'inherit' (or off, 0, no, false; any case): the environment as it is
OPT_OUT_VALUES = ("inherit", "off", "0", "no", "false")
RESTARTED = "LNM_JAX_HOST_MALLOC_SET"  # set in the restarted process: never a second restart
THP_SETTING = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def _glibc_version() -> tuple[int, int] | None:
    try:
        name, version = os.confstr("CS_GNU_LIBC_VERSION").split()  # 'glibc 2.36'
        major, minor = version.split(".")[:2]
        return (int(major), int(minor)) if name == "glibc" else None
    except (AttributeError, ValueError, OSError):
        return None


def _kernel_thp() -> str | None:
    """The kernel's transparent-huge-page mode ('always', 'madvise', 'never'), or None."""
    try:
        text = THP_SETTING.read_text(encoding="utf-8")
    except OSError:
        return None
    return text[text.index("[") + 1 : text.index("]")] if "[" in text else None


def appended_tunables(environ: Mapping[str, str], tunables: str) -> str:
    """``GLIBC_TUNABLES`` of ``environ`` with ``tunables`` ('name=value:...') appended after any
    already set (glibc reads them left to right)."""
    return ":".join(t for t in (environ.get(TUNABLES, ""), tunables) if t)


def with_huge_pages(environ: Mapping[str, str]) -> dict[str, str] | None:
    """The environment to restart with: ``environ`` with :data:`HUGE_PAGES` appended to
    ``GLIBC_TUNABLES``; None where a restart would change nothing (not Linux with glibc >= 2.35,
    transparent huge pages off, the setting already there) or ``LNM_JAX_HOST_MALLOC=inherit``."""
    choice = environ.get(OPT_OUT, "").strip().lower()
    if choice not in ("", "hugepages"):
        if choice not in OPT_OUT_VALUES:
            print(
                f"lnm-jax: {OPT_OUT}={environ[OPT_OUT]!r} is neither 'inherit' nor 'hugepages'; "
                "the environment is kept as it is",
                file=sys.stderr,
            )
        return None
    if RESTARTED in environ or not sys.platform.startswith("linux"):
        return None
    current = environ.get(TUNABLES, "")
    if "glibc.malloc.hugetlb=" in current or (_glibc_version() or (0, 0)) < (2, 35):
        return None
    if _kernel_thp() not in ("always", "madvise"):
        return None
    return {**environ, TUNABLES: appended_tunables(environ, HUGE_PAGES), RESTARTED: "1"}


def restart_with_huge_pages() -> None:
    """Replaces this process by the same command line (``sys.orig_argv``) under
    :func:`with_huge_pages`' environment; returns without doing anything where that is None.
    Call it first thing, before any file is written."""
    env = with_huge_pages(os.environ)
    if env is None or not sys.executable or not getattr(sys, "orig_argv", None):  # an embedded interpreter
        return
    for stream in (sys.stdout, sys.stderr):  # None where the descriptor is closed (lnm-jax ... >&-)
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            pass
    try:
        os.execve(sys.executable, sys.orig_argv, env)
    except OSError:  # the interpreter cannot be run again: go on as the process is
        return


MEMINFO = Path("/proc/meminfo")


def available_bytes() -> int | None:
    """The memory the kernel estimates a new allocation can have without swapping
    (``MemAvailable`` of ``/proc/meminfo``, Linux >= 3.14), in bytes; None where it is not
    known (another system, an older kernel)."""
    try:
        for line in MEMINFO.read_text(encoding="utf-8").splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024  # kB
    except (OSError, ValueError, IndexError):
        return None
    return None
