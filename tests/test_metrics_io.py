"""Metrics files: row accounting enforced, JSON-safe, atomic; prompts render and hash."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from compress_distill.metrics import AccountingError, RowCounter, read_metrics, write_metrics
from compress_distill.prompts import load_prompt, prompt_hash, render


def test_accounting_enforced(tmp_path: Path) -> None:
    with pytest.raises(AccountingError, match="rows_in=5"):
        write_metrics(tmp_path / "m.json", {"rows_in": 5, "rows_out": 3, "rejects": {"empty": 1}})
    assert not (tmp_path / "m.json").exists()
    write_metrics(tmp_path / "m.json", {"rows_in": 5, "rows_out": 3, "rejects": {"empty": 2}, "x": float("nan")})
    assert read_metrics(tmp_path / "m.json")["x"] is None
    json.loads((tmp_path / "m.json").read_text())


def test_row_counter() -> None:
    c = RowCounter()
    c.seen(4)
    c.kept(2)
    c.reject("too_long")
    c.reject("empty")
    assert c.as_dict() == {"rows_in": 4, "rows_out": 2, "rejects": {"empty": 1, "too_long": 1}}
    c.seen()
    with pytest.raises(AccountingError):
        c.as_dict()


def test_render_placeholders() -> None:
    assert render("Q: {{question}} {json: 1}", question="2+2?") == "Q: 2+2? {json: 1}"
    # a field value containing a placeholder is not re-expanded
    assert render("{{a}}|{{b}}", a="{{b}}", b="x") == "{{b}}|x"
    with pytest.raises(KeyError, match="reasoning"):
        render("{{question}} {{reasoning}}", question="q")


def test_shipped_prompts_render(repo_root: Path) -> None:
    fields = {"question": "q", "reasoning": "r", "answer": "a", "raw_reasoning": "r", "compressed_reasoning": "c"}
    for path in sorted((repo_root / "prompts").rglob("*.md")):
        assert render(load_prompt(path), **fields)
        assert len(prompt_hash(path)) == 12
