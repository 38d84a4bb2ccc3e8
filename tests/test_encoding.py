"""Text and file names whatever the locale (helper-109): every file written is UTF-8, a path the
locale cannot name as the checkpoint library does is refused in one line before anything runs,
the console escapes what it cannot show, and long output names keep their temporaries short."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

import lnm_jax

LNM = [sys.executable, "-m", "lnm_jax"]
ASCII_LOCALE = {"LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONIOENCODING": ""}
# calls whose receiver is a class or module that is no text file (PIL's Image.open, Run.open...)
NOT_FILES = {"Image", "Run", "os", "io", "tarfile", "zipfile", "gzip", "subprocess", "webbrowser", "cls"}


def _text_opens_without_encoding(tree: ast.AST) -> list[int]:
    """Lines of calls that read or write text without ``encoding=``: ``read_text``,
    ``write_text``, and ``open``/``.open`` in a text mode."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        keywords = {k.arg for k in node.keywords}
        f = node.func
        name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else None
        if name in ("read_text", "write_text") and "encoding" not in keywords:
            if isinstance(f, ast.Attribute) and not (isinstance(f.value, ast.Name) and f.value.id == "fileio"):
                found.append(node.lineno)  # (pathlib's; fileio's own write_text writes UTF-8)
        elif name == "open" and "encoding" not in keywords:
            if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id in NOT_FILES:
                continue
            at = 1 if isinstance(f, ast.Name) else 0  # open(path, mode) / path.open(mode)
            mode = next((k.value for k in node.keywords if k.arg == "mode"), None)
            mode = mode or (node.args[at] if len(node.args) > at else None)
            text = not (isinstance(mode, ast.Constant) and isinstance(mode.value, str) and "b" in mode.value)
            if text and not (isinstance(f, ast.Name) and node.args and _is_fd(node.args[0]) and mode is None):
                found.append(node.lineno)
    return found


def _is_fd(arg: ast.AST) -> bool:
    return isinstance(arg, ast.Name) and arg.id == "fd"


def test_every_text_file_is_read_and_written_as_utf8():
    """Under a locale whose encoding is not UTF-8, a model card had been written in ISO-8859-1
    (the bytes of a sealed export depending on the locale) and ASCII had failed on 'Männlich':
    every text open in the package names its encoding."""
    root = Path(lnm_jax.__file__).parent
    bad = {
        str(f.relative_to(root)): lines
        for f in sorted(root.rglob("*.py"))
        if (lines := _text_opens_without_encoding(ast.parse(f.read_text(encoding="utf-8"))))
    }
    assert not bad, bad


def _synth(out, env, **kw) -> subprocess.CompletedProcess:
    """``lnm-jax synth --out out`` (8 patients, 32 px) under ``env``."""
    cmd = [*LNM, "synth", "--out", str(out), "--patients", "8", "--size", "32"]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, errors="replace", **kw)


def _ascii_locale() -> dict[str, str]:
    env = {**os.environ, **ASCII_LOCALE}
    said = subprocess.run(
        [sys.executable, "-c", "import sys; print(sys.getfilesystemencoding())"],
        env=env,
        capture_output=True,
        text=True,
    ).stdout.strip()
    if said.lower().replace("-", "") in ("utf8",):
        pytest.skip(f"LC_ALL=C PYTHONUTF8=0 gives file names in {said} on this machine, not ASCII")
    return env


def test_a_locale_that_cannot_name_a_path_as_utf8_is_refused_before_anything_runs(tmp_path):
    """helper-109: under a non-UTF-8 locale a run folder named with an accent had its weights
    written to another folder (tensorstore names files in UTF-8), the run reported a success and
    every later command said its checkpoint could not be read."""
    env = _ascii_locale()
    out = tmp_path / "cohorte é"
    res = _synth(out, env)
    assert res.returncode == 2, res.stderr
    (line,) = res.stderr.strip().splitlines()
    # a relative path from an accented current folder too (helper-111: it had reached orbax as UTF-8)
    (tmp_path / "café").mkdir()
    rel = _synth("c", env, cwd=tmp_path / "café")
    assert rel.returncode == 2 and "holds characters beyond ASCII" in rel.stderr, rel.stderr
    assert not (tmp_path / "café" / "c").exists()
    assert "holds characters beyond ASCII, and this locale names files in ascii, not UTF-8" in line, line
    assert "PYTHONUTF8=1" in line and not out.exists()
    # a manifest's image path such a locale cannot name: one problem naming the file, not a traceback
    cohort = tmp_path / "c"
    _synth(cohort, None, check=True)
    manifest = cohort / "manifest.csv"
    text = manifest.read_text(encoding="utf-8")
    first = text.splitlines()[1].split(",")[1]
    os.rename(cohort / first, cohort / first.replace(".png", "é.png"))
    manifest.write_text(text.replace(first, first.replace(".png", "é.png")), encoding="utf-8")
    res = subprocess.run([*LNM, "validate", str(manifest)], env=env, capture_output=True, text=True, errors="replace")
    assert res.returncode == 1 and "cannot be named in this locale's file-name encoding, ascii" in res.stderr, (
        res.stderr
    )
    assert "Traceback" not in res.stderr


def test_a_console_that_cannot_show_a_path_escapes_it_and_the_command_succeeds(tmp_path):
    """helper-109: PYTHONIOENCODING=ascii made every command that finished its work exit 1 on
    its last line, the path it printed (export's fingerprint never shown)."""
    out = tmp_path / "cohorte é"
    env = {**os.environ, "PYTHONIOENCODING": "ascii"}
    res = _synth(out, env)
    assert res.returncode == 0, res.stderr
    assert "cohorte \\xe9" in res.stdout + res.stderr and (out / "manifest.csv").is_file()


def test_long_output_names_keep_their_temporaries_within_255_bytes(tmp_path):
    """helper-109: a legal 240-byte --out had failed, "File name too long", naming the
    temporary file (``.<name>.pid<PID>.tmp<suffix>``) an atomic write fills."""
    from lnm_jax.fileio import atomic_directory, write_text

    long_file = tmp_path / ("p" * 240 + ".csv")
    write_text(long_file, "a,b\n")
    assert long_file.read_text(encoding="utf-8") == "a,b\n"
    long_folder = tmp_path / ("e" * 250)
    for _ in range(2):  # and again over the first (the earlier folder kept aside while swapping)
        with atomic_directory(long_folder, replace=True) as d:
            (d / "x").write_text("1", encoding="utf-8")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([long_file.name, long_folder.name])
    # an evaluation folder a resume moves aside, named with its epoch (helper-111: every later resume had failed)
    from lnm_jax.run_files import superseded_name

    aside = superseded_name(tmp_path / ("eval_" + "t" * 245), 12)
    assert len(aside.name.encode()) <= 255 and aside.name.startswith("eval_t") and aside.name.endswith(".epoch-12")


def test_standard_output_is_no_output_path(tmp_path):
    """helper-109: ``predict --out -`` had written a file named "-" and pointed external-validation to it."""
    from lnm_jax.fileio import OutputPathError
    from lnm_jax.output_guard import guard_output

    with pytest.raises(OutputPathError, match="--out -: this command writes a file, not standard output"):
        guard_output("-")
    from lnm_jax.run_lock import hold

    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        with pytest.raises(ValueError, match="--workdir -: names a run folder, not standard output"):
            with hold("-", "train", create=True):
                pass
        assert not (tmp_path / "-").exists()
    finally:
        os.chdir(cwd)


def test_the_log_files_are_utf8(tmp_path):
    """helper-111: train.log's handler followed the locale (ISO-8859-1 bytes, or a record dropped under ASCII)."""
    import logging

    from lnm_jax.fileio import QuietFileHandler

    handler = QuietFileHandler(tmp_path / "train.log")
    log = logging.getLogger("lnm_jax.test_encoding")
    log.addHandler(handler)
    try:
        log.warning("sex Männlich")
    finally:
        log.removeHandler(handler)
        handler.close()
    assert handler.encoding == "utf-8" and "Männlich" in (tmp_path / "train.log").read_text(encoding="utf-8")
