"""The ``lnm-jax`` command restarts itself once under glibc's huge-page allocator setting where
that can act, and never otherwise (lnm_jax/host_memory.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from lnm_jax import cli, host_memory

THP_AND_GLIBC = {"_glibc_version": (2, 36), "_kernel_thp": "madvise"}


@pytest.mark.parametrize(
    ("environ", "machine", "expected"),
    [
        ({}, THP_AND_GLIBC, "glibc.malloc.hugetlb=1"),
        ({"GLIBC_TUNABLES": "glibc.pthread.rseq=0"}, THP_AND_GLIBC, "glibc.pthread.rseq=0:glibc.malloc.hugetlb=1"),
        ({}, {**THP_AND_GLIBC, "_kernel_thp": "always"}, "glibc.malloc.hugetlb=1"),
        ({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, THP_AND_GLIBC, None),  # the user's own choice
        ({"LNM_JAX_HOST_MALLOC": "inherit"}, THP_AND_GLIBC, None),
        ({"LNM_JAX_HOST_MALLOC": " Off"}, THP_AND_GLIBC, None),
        ({"LNM_JAX_HOST_MALLOC": "0"}, THP_AND_GLIBC, None),
        ({"LNM_JAX_HOST_MALLOC": "hugepages"}, THP_AND_GLIBC, "glibc.malloc.hugetlb=1"),
        ({"LNM_JAX_HOST_MALLOC_SET": "1"}, THP_AND_GLIBC, None),  # restarted once already
        ({}, {**THP_AND_GLIBC, "_kernel_thp": "never"}, None),
        ({}, {**THP_AND_GLIBC, "_kernel_thp": None}, None),  # no THP setting to read
        ({}, {**THP_AND_GLIBC, "_glibc_version": (2, 34)}, None),  # no hugetlb tunable before 2.35
        ({}, {**THP_AND_GLIBC, "_glibc_version": None}, None),  # musl, or no glibc
    ],
)
def test_restart_environment(environ, machine, expected, monkeypatch):
    monkeypatch.setattr(sys, "platform", "linux")
    for name, value in machine.items():
        monkeypatch.setattr(host_memory, name, lambda value=value: value)
    got = host_memory.with_huge_pages({"HOME": "/h", **environ})
    if expected is None:
        assert got is None
    else:
        assert got == {"HOME": "/h", **environ, "GLIBC_TUNABLES": expected, "LNM_JAX_HOST_MALLOC_SET": "1"}


def test_an_unknown_choice_is_named_and_keeps_the_environment(monkeypatch, capsys):
    monkeypatch.setattr(sys, "platform", "linux")
    for name, value in THP_AND_GLIBC.items():
        monkeypatch.setattr(host_memory, name, lambda value=value: value)
    assert host_memory.with_huge_pages({"LNM_JAX_HOST_MALLOC": "hugepage"}) is None
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "LNM_JAX_HOST_MALLOC='hugepage'" in err and "inherit" in err


def test_only_the_console_script_restarts(monkeypatch, capsys):
    """``lnm-jax`` (cli.entry_point) restarts; cli.main, called from Python, never restarts its
    caller, not even without arguments (it reads sys.argv then)."""
    calls = []
    monkeypatch.setattr(host_memory, "restart_with_huge_pages", lambda: calls.append(1))
    monkeypatch.setattr(sys, "argv", ["lnm-jax", "--help"])
    assert cli.main() == 0
    assert cli.main(["--help"]) == 0
    assert calls == []
    assert cli.entry_point() == 0
    assert calls == [1]
    capsys.readouterr()


def test_closed_output_streams_do_not_stop_the_restart(monkeypatch):
    """``lnm-jax ... >&-``: Python's sys.stdout (or stderr) is None; the restart goes on."""
    execs = []
    monkeypatch.setattr(host_memory, "with_huge_pages", lambda environ: {"GLIBC_TUNABLES": host_memory.HUGE_PAGES})
    monkeypatch.setattr(host_memory.os, "execve", lambda *a: execs.append(a))
    monkeypatch.setattr(sys, "stdout", None)
    monkeypatch.setattr(sys, "stderr", None)
    host_memory.restart_with_huge_pages()
    assert len(execs) == 1 and execs[0][1] == sys.orig_argv


RESTARTED = r"""
import json, os, sys
from lnm_jax.host_memory import restart_with_huge_pages
print("start", flush=True)
restart_with_huge_pages()
print(json.dumps({"argv": sys.argv[1:], "tunables": os.environ.get("GLIBC_TUNABLES"), "pid": os.getpid()}))
"""


def test_restart_runs_the_same_command_line_once_under_the_setting():
    """End to end on this machine: one restart (the same PID, the same arguments), then the
    setting is in the environment; where it cannot act, no restart at all."""
    env = {k: v for k, v in os.environ.items() if k not in ("LNM_JAX_HOST_MALLOC", "LNM_JAX_HOST_MALLOC_SET")}
    env.pop("GLIBC_TUNABLES", None)
    cmd = [sys.executable, "-c", RESTARTED, "train", "--workdir", "w x"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    res = json.loads(lines[-1])
    assert res["argv"] == ["train", "--workdir", "w x"]
    if host_memory.with_huge_pages(env) is None:
        assert lines.count("start") == 1 and res["tunables"] is None
        pytest.skip("this machine has no glibc >= 2.35 with transparent huge pages: no restart (checked)")
    assert lines.count("start") == 2  # the process ran its command line a second time, once
    assert res["tunables"] == host_memory.HUGE_PAGES
