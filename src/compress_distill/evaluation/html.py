"""Render ``reports/index.html``: one self-contained file (inline CSS, JS and SVG; no network).

Trace text is untrusted model output.  It reaches the page by two roads, both closed to markup:
- table cells and labels go through ``html.escape``;
- viewer data is embedded as JSON in a ``<script type="application/json">`` block with every ``<``, ``>``
  and ``&`` written as ``\\u003c``-style escapes (so neither ``</script>`` nor ``<!--`` can appear inside),
  and the viewer script inserts it with ``textContent`` only.
As defence in depth the page carries a Content-Security-Policy that lets only the one script holding this
build's nonce run, and forbids every network fetch.
"""

from __future__ import annotations

import hashlib
import html
import json
import re
from collections.abc import Mapping, Sequence
from importlib import resources
from typing import Any

from compress_distill.evaluation.tables import Table
from compress_distill.metrics import _clean  # NaN/inf -> null, the same rule as the metrics files

_PLACEHOLDER = re.compile(r"@@([A-Z_]+)@@")


def template() -> str:
    return resources.files("compress_distill.evaluation").joinpath("report.html").read_text(encoding="utf-8")


def script_json(data: Any) -> str:
    """JSON that is safe verbatim inside a ``<script>`` element (no ``</``, ``<!--``, ``]]>`` possible)."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return (
        text.replace("&", "\\u0026")
        .replace("<", "\\u003c")
        .replace(">", "\\u003e")
        # JSON allows these raw; older JS parsers treat them as line ends
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


def cards(items: Sequence[tuple[str, str]]) -> str:
    return (
        '<div class="cards">'
        + "".join(
            f'<div class="card"><b>{html.escape(value)}</b>{html.escape(label)}</div>'
            for label, value in items
        )
        + "</div>"
    )


def figure(svg: str, caption: str) -> str:
    """``svg`` is trusted markup produced by ``evaluation.plots``; the caption is escaped."""
    return f"<figure>{svg}<figcaption class='note'>{html.escape(caption)}</figcaption></figure>"


def render(
    *,
    subtitle: str,
    headline: Sequence[tuple[str, str]],
    tables: Sequence[Table],
    figures: Sequence[str],
    cost: Table,
    pairs: Sequence[Mapping[str, Any]],
    note: str = "",
) -> str:
    values = {
        "NOTE": f'<p class="lead">{html.escape(note)}</p>' if note else "",
        "SUBTITLE": html.escape(subtitle),
        "HEADLINE": cards(headline),
        "TABLES": "".join(t.to_html() for t in tables),
        "PLOTS": "".join(figures),
        "COST": cost.to_html(),
        "TRACE_JSON": script_json(_clean(list(pairs))),
    }
    # The nonce is derived from the page content: deterministic for identical inputs (DVC sees an unchanged
    # output), and not guessable by a trace author, whose text would have to contain its own hash.
    values["NONCE"] = hashlib.sha256("\x00".join(values[k] for k in sorted(values)).encode()).hexdigest()[:32]

    # one pass over the template only, so placeholder-like text inside inserted content is never expanded
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template())
