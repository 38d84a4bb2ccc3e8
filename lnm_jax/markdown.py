"""Text that a cohort or a config supplies, in the Markdown files lnm-jax writes (model cards,
reports): shown as written, inside the line or table cell it was put in.

A manifest column's values (subgroups, Table 1) and a config's free text (``task.*``,
``name``) had gone into ``model_card.md`` raw: a ``|`` added a column, a line break ended the
table or started a heading, and HTML (``<script>``, ``<img onerror=...>``) reached renderers
that pass it through, in a card an export hands on (helper-118). Standard library only."""

from __future__ import annotations

import re


def inline(text: object) -> str:
    """``text`` as literal inline Markdown (CommonMark backslash escapes, so that a plain-text
    reader still reads it): ``<`` escaped (no HTML tag or autolink reaches a renderer), ``[`` and
    ``]`` (no link or image: helper-119's ``![x](https://attacker.example/p.png)`` had rendered
    as an image fetched from that site), ``*`` and ``_`` where they could open or close emphasis,
    ``|`` (no new table column), ``\\`` and backticks (no escape undone, no code span swallowing
    what follows); line breaks and other control characters as spaces (no new line, heading or
    table row). For text a cohort or config supplies, not for lnm-jax's own Markdown."""
    s = str(text).replace("\\", "\\\\")
    for ch in "|<`[]*":
        s = s.replace(ch, "\\" + ch)
    s = re.sub(r"(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])", r"\\_", s)  # (age_group stays as written)
    return "".join(" " if (ord(ch) < 32 or ord(ch) == 127) else ch for ch in s)
