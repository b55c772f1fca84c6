"""Prompt files: load, hash for provenance, render ``{{name}}`` placeholders.

Placeholders use double braces and plain replacement (not ``str.format``) so prompts may contain JSON
or LaTeX braces, and so a question that itself contains ``{{...}}`` is never re-expanded.
"""

from __future__ import annotations

import hashlib
import re
from functools import lru_cache
from pathlib import Path

_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")


@lru_cache(maxsize=64)
def load_prompt(path: str | Path) -> str:
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"prompt file {p} not found; check the prompt path in params.yaml")
    return p.read_text(encoding="utf-8")


def prompt_hash(path: str | Path) -> str:
    """First 12 hex digits of the prompt's sha256: recorded on every row the prompt produced."""
    return hashlib.sha256(load_prompt(path).encode("utf-8")).hexdigest()[:12]


def render(template: str, **fields: str) -> str:
    """Fill every ``{{name}}`` in one pass; a missing field is an error naming it."""
    missing = sorted({m for m in _PLACEHOLDER.findall(template) if m not in fields})
    if missing:
        raise KeyError(f"prompt needs field(s) {missing}; got {sorted(fields)}")
    return _PLACEHOLDER.sub(lambda m: fields[m.group(1)], template)
