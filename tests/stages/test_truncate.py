"""truncate@T: prefix tokenisation equals full tokenisation, cuts are exact prefixes, rejects are counted."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from compress_distill.llm.tokens import fast_tokenizer
from compress_distill.metrics import read_metrics
from compress_distill.schema import REJECTS, TRACES, read_rows
from compress_distill.stages import truncate
from tests.helpers.traces import SMOL, make_params, trace, write_traces

WORDS = [
    "the",
    "answer",
    "is",
    "42",
    "1234567",
    "x^2",
    "=",
    "+",
    "(B)",
    "**Step",
    "1:**",
    "\n",
    "\n\n",
    "  ",
    "don't",
    "we'll",
    "naïve",
    "café",
    "√2",
    "≤",
    "日本語",
    "🙂",
    "---",
    "...",
    "internationalization",
    "_var_name",
    "snake_case",
    "\t",
    "3.14159",
    "e.g.,",
    "'quoted'",
    "https://example.org/a?b=c",
]


def random_text(rng: random.Random, n_words: int) -> str:
    return "".join(rng.choice(WORDS) + rng.choice(["", " ", " ", " ", "\n"]) for _ in range(n_words))


def reference_cut(tok, text: str, budget: int) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    """The slow definition: tokenise the whole text, cut after the budget-th token."""
    enc = tok.encode(text, add_special_tokens=False)
    if len(enc) <= budget:
        return len(text), len(enc)
    return enc.token_to_chars(budget - 1)[1], budget


def test_prefix_cut_equals_full_tokenisation_on_varied_text() -> None:
    tok = fast_tokenizer(SMOL)
    rng = random.Random(0)
    texts = [random_text(rng, rng.randint(1, 400)) for _ in range(300)]
    budgets = [rng.randint(1, 300) for _ in texts]
    expected = [reference_cut(tok, t, b) for t, b in zip(texts, budgets, strict=True)]
    cutter = truncate.Cutter(tok)
    assert list(zip(*cutter.cut(texts, budgets), strict=True)) == expected
    # the point of the prefix trick: far fewer characters tokenised than the corpus holds
    assert cutter.encoded_chars < sum(map(len, texts))
    # a far too optimistic first guess forces the doubling path on almost every row: same cuts
    stingy = truncate.Cutter(tok)
    stingy.chars_per_token = 0.2
    assert list(zip(*stingy.cut(texts, budgets), strict=True)) == expected


def test_safe_prefix_end_stops_after_a_letter_or_digit_before_whitespace() -> None:
    assert truncate.safe_prefix_end("abc def", 1) == 3
    assert truncate.safe_prefix_end("a_ b", 1) == len("a_ b")  # "_" is punctuation to regex pretokenizers
    assert truncate.safe_prefix_end("x. y z", 1) == 4
    assert truncate.safe_prefix_end("short", 99) == 5


def test_stage_cuts_to_the_compressed_token_length(tmp_path: Path) -> None:
    tok = fast_tokenizer(SMOL)
    long = "Let me think step by step about this problem. First, 17 times 3 is 51. " * 20
    raw = write_traces(
        tmp_path / "raw.parquet",
        [
            trace("a", long, response="The answer is 51.", answer="51"),
            trace("b", "Short reasoning.", response="The answer is 4."),
            trace("c", long),  # no compressed counterpart
            trace("d", long),  # not valid UTF-8
            trace("e", long, dataset="medqa"),
        ],
        invalid_utf8={3: "reasoning"},
    )
    comp = write_traces(
        tmp_path / "c.parquet",
        [
            trace("a", "17*3=51.", tokens=25, source="compressed-terse", prompt_hash="aaa+bbb"),
            trace("b", "short", tokens=50, source="compressed-terse"),
            trace("d", "x", tokens=5, source="compressed-terse"),
            trace("e", "y", tokens=None, source="compressed-terse"),  # count missing: recomputed here
        ],
    )
    # the params demo: truncate.smol.compressor = terse (SmolLM2's tokenizer)
    m = truncate.run(
        make_params(), "smol", raw, comp, tmp_path / "t.parquet", tmp_path / "m.json", batch_rows=2
    )
    out = {r["id"]: r for r in read_rows(tmp_path / "t.parquet", TRACES)}
    assert list(out) == ["a", "b", "e"]
    a = out["a"]
    assert long.startswith(a["reasoning"]) and a["reasoning_tokens"] == 25
    assert (len(a["reasoning"]), 25) == reference_cut(tok, long, 25)
    assert a["response"] == "The answer is 51." and a["source"] == "truncated"
    assert a["compression_ratio"] == pytest.approx(len(a["reasoning"]) / len(long))
    assert a["prompt_hash"] == "aaa+bbb" and a["compressor_model"] == SMOL and a["answer_preserved"] is None
    assert (
        out["b"]["reasoning"] == "Short reasoning." and out["b"]["reasoning_tokens"] < 50
    )  # shorter than budget
    assert out["e"]["reasoning_tokens"] == 1  # "y" is one token
    assert m == read_metrics(tmp_path / "m.json")
    assert m["rows_in"] == 5 and m["rows_out"] == 3
    assert m["rejects"] == {"no_compressed_counterpart": 1, "non_utf8": 1}
    assert {r["id"]: r["reason"] for r in read_rows(tmp_path / "t.rejects.parquet", REJECTS)} == {
        "c": "no_compressed_counterpart",
        "d": "non_utf8",
    }
    assert m["datasets"]["medqa"]["n"] == 1 and m["overall"]["pct_uncut"] == pytest.approx(100 / 3)
