"""ift@T (source ift): the same teacher on the same questions (those of its raw traces) without reasoning;
graded by the answer cascade, the reasoning a teacher returns anyway dropped, rejects counted."""

from __future__ import annotations

from pathlib import Path

import pytest

from compress_distill.config import ConfigError
from compress_distill.metrics import read_metrics
from compress_distill.schema import ATTEMPTS, REJECTS, TRACES, read_rows
from compress_distill.stages import ift
from tests.helpers.traces import (
    REPO,
    ScriptedBackend,
    completion,
    make_params,
    prompt_of,
    question,
    trace,
    write_questions,
    write_traces,
)

QUESTIONS = [
    question("demo/train/0", "PLAIN: what is 2 + 2?", "4"),
    question("demo/train/1", "EFFORT: what is 3 + 3?", "6"),
    question("demo/train/2", "WRONG: what is 7 * 8?", "56"),
    question("demo/train/3", "UNSOLVED: what is 9 - 1?", "8"),  # no raw trace: not asked
]


def reply(req):  # type: ignore[no-untyped-def]
    p = prompt_of(req)
    if "PLAIN" in p:
        return completion("The answer is 4.")
    if "EFFORT" in p:  # gpt-oss at reasoning_effort low still reasons: the reasoning is dropped
        return completion("The answer is 6.", "3 and 3 make 6.")
    return completion("The answer is 54.")


def params(**over):  # type: ignore[no-untyped-def]
    return make_params(
        **{
            "ift": {
                "prompt": str(REPO / "prompts/ift.md"),
                "chat_template_kwargs": {"smol": {"enable_thinking": False}},
            },
            "generate.rounds": 2,
            "grid.sources": ["raw", "ift"],
            **over,
        }
    )


def test_answers_without_reasoning_on_the_raw_questions(tmp_path: Path) -> None:
    q = write_questions(tmp_path / "questions.parquet", QUESTIONS)
    raw = write_traces(
        tmp_path / "traces/raw.parquet",
        [trace(f"demo/train/{i}", "some reasoning") for i in range(3)],
    )
    backend = ScriptedBackend(reply)
    out = tmp_path / "traces"
    m = ift.run(params(), "smol", q, raw, out, tmp_path / "m.json", backend=backend)

    asked = [prompt_of(r) for call in backend.calls for r in call]
    assert not any("UNSOLVED" in p for p in asked)  # only the raw traces' questions
    assert all("without explaining your reasoning" in p and "<think>" not in p for p in asked)
    assert [len(call) for call in backend.calls] == [3, 1]  # round 2 asks the wrong one again
    rows = {r["id"]: r for r in read_rows(out / "ift.parquet", TRACES)}
    assert sorted(rows) == ["demo/train/0", "demo/train/1"]
    assert {
        (r["source"], r["reasoning"], r["reasoning_chars"], r["compression_ratio"]) for r in rows.values()
    } == {("ift", "", 0, 0.0)}
    assert rows["demo/train/1"]["response"] == "The answer is 6."
    assert [r["correct"] for r in read_rows(out / "ift.attempts.parquet", ATTEMPTS)] == [
        True,
        True,
        False,
        False,
    ]
    rejects = read_rows(out / "ift.rejects.parquet", REJECTS)
    assert [(r["id"], r["reason"]) for r in rejects] == [("demo/train/2", "not_solved")]
    assert (m["rows_in"], m["rows_out"], m["rejects"]) == (3, 2, {"not_solved": 1})
    assert read_metrics(tmp_path / "m.json")["rows_out"] == 2


def test_reasoning_is_switched_off_by_chat_template_kwargs_per_teacher() -> None:
    p = params(**{"teachers.smol.chat_template_kwargs": {"reasoning_effort": "high", "keep": 1}})
    engine = ift.mode(p, "smol").engine
    assert engine.chat_template_kwargs == {"reasoning_effort": "high", "keep": 1, "enable_thinking": False}
    assert p.teachers["smol"].chat_template_kwargs == {"reasoning_effort": "high", "keep": 1}  # untouched
    with pytest.raises(ConfigError, match="no `ift` section"):
        ift.mode(make_params(), "smol")
