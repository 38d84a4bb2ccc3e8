"""The documentation works: docs/python.md's code runs as written, the README stays short, and
every relative link of the README and of docs/*.md points to a file that exists."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
MAX_README_LINES = 220

# A fenced block: its info string (```python, ```python no-run, ```bash ...) and its body.
FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.M | re.S)
# Inline links and images: [text](target) / ![alt](target), target without spaces.
LINK = re.compile(r"!?\[[^\]\n]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
SKIP = "no-run"


def python_blocks(path: Path) -> list[tuple[int, str, bool]]:
    """(first line number, code, runnable) of each ```python block of ``path``, in order."""
    text = path.read_text()
    blocks = []
    for m in FENCE.finditer(text):
        words = m.group(1).split()
        if words and words[0] == "python":
            line = text.count("\n", 0, m.start(2)) + 1
            blocks.append((line, m.group(2), SKIP not in words[1:]))
    return blocks


def test_python_md_runs():
    """Every ```python block of docs/python.md, in order, in one namespace; the ```python no-run
    blocks (they need a trained run folder) are only compiled."""
    path = DOCS / "python.md"
    blocks = python_blocks(path)
    assert sum(run for _, _, run in blocks) >= 5, "docs/python.md lost its runnable examples"
    namespace: dict = {"__name__": "docs_python_md"}
    for line, code, run in blocks:
        # Padding with newlines makes a traceback name the line of docs/python.md itself.
        program = compile("\n" * (line - 1) + code, str(path), "exec")
        if run:
            exec(program, namespace)
    cams = namespace["cams"]
    assert cams["bmode"].shape == (4, 32, 32)
    assert float(namespace["metrics"]["loss"]) > 0


def _code_free(text: str) -> str:
    """``text`` without fenced blocks and inline code spans, where a bracket is not a link."""
    return re.sub(r"`[^`\n]*`", "", FENCE.sub("", text))


def relative_links(path: Path) -> list[str]:
    """The targets of ``path``'s links that are neither URLs nor anchors in the same file."""
    targets = LINK.findall(_code_free(path.read_text()))
    return [t for t in targets if not re.match(r"[a-z][a-z0-9+.-]*:|#|//", t, re.I)]


def anchors(path: Path) -> set[str]:
    """GitHub's anchors of ``path``'s headings: lower case, punctuation dropped, spaces to '-'."""
    headings = re.findall(r"^#{1,6}[ \t]+(.+?)[ \t]*$", FENCE.sub("", path.read_text()), re.M)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


def markdown_files() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_exist(path):
    broken = []
    for target in relative_links(path):
        file, _, anchor = unquote(target).partition("#")
        dest = path.parent / file
        if not dest.exists() or (anchor and dest.suffix == ".md" and anchor not in anchors(dest)):
            broken.append(target)
    assert not broken, f"{path.relative_to(ROOT)}: links to missing files or headings: {broken}"


def test_readme_is_short_and_links_every_doc():
    lines = README.read_text().splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines (at most {MAX_README_LINES})"
    linked = {Path(t.partition("#")[0]).name for t in relative_links(README)}
    unlinked = [p.name for p in sorted(DOCS.glob("*.md")) if p.name not in linked]
    assert not unlinked, f"docs not linked from README.md: {unlinked}"


def test_link_and_anchor_finders(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "# The paper's protocol: `lnm-jax reproduce`\n## (e) Grad-CAM\n"
        "[a](docs/x.md#y) ![img](pic.png) [w](https://e.org) [s](#top) `[no](code.md)`\n"
        "```\n[no](f.md)\n# not a heading\n```\n"
    )
    assert relative_links(page) == ["docs/x.md#y", "pic.png"]
    assert anchors(page) == {"the-papers-protocol-lnm-jax-reproduce", "e-grad-cam"}
