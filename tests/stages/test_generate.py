"""generate@T: rejection sampling rounds, attempt outcomes, counted rejects, metrics, SIGKILL resume."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from compress_distill.metrics import read_metrics
from compress_distill.schema import ATTEMPTS, REJECTS, TRACES, read_rows
from compress_distill.stages import generate
from tests.helpers.traces import (
    SMOL,
    ScriptedBackend,
    completion,
    kill_then_resume,
    make_params,
    prompt_of,
    question,
    write_params,
    write_questions,
)

QUESTIONS = [
    question("demo/train/0", "EASY: what is 2 + 2?", "4"),
    question("demo/train/1", "LATE: what is 3 + 3?", "6"),
    question("demo/train/2", "HARD: what is 7 * 8?", "56"),
    question("demo/train/3", "CUT: what is 9 - 1?", "8", dataset="other"),
    question("demo/train/4", "BARE: is 5 > 2?", "yes", answer_type="boolean", dataset="other"),
]


def teacher_reply(req):  # type: ignore[no-untyped-def]
    p = prompt_of(req)
    if "EASY" in p:
        return completion("The answer is 4.", "2 plus 2 makes 4.", tokens=12)
    if "LATE" in p:  # wrong in round 1 (seed 0), right in round 2 (seed 1)
        return (
            completion("The answer is 6.", "3 and 3 is 6.")
            if req.seed == 1
            else completion("The answer is 5.", "hmm")
        )
    if "HARD" in p:
        return completion("The answer is 54.", "7 times 8 is 54?")
    if "CUT" in p:  # hit the token cap inside the reasoning: no final response
        return completion("", "9 minus 1 is ... let me carefully", finish_reason="length")
    return completion("The answer is yes.", "")  # BARE: right answer, no reasoning at all


@pytest.fixture
def generated(tmp_path: Path):  # type: ignore[no-untyped-def]
    q = write_questions(tmp_path / "questions.parquet", QUESTIONS)
    backend = ScriptedBackend(teacher_reply)
    p = make_params(**{"generate.untagged": "reject"})  # the paper: a reply without a think block is no trace
    m = generate.run(p, "smol", q, tmp_path / "out", tmp_path / "m.json", backend=backend)
    return tmp_path, backend, m


def test_rounds_submit_every_pending_question_once(generated) -> None:  # type: ignore[no-untyped-def]
    _, backend, m = generated
    assert [len(c) for c in backend.calls] == [5, 4]  # EASY left the pool after round 1
    assert {r.seed for r in backend.calls[0]} == {0} and {r.seed for r in backend.calls[1]} == {1}
    assert all("EASY" not in prompt_of(r) for r in backend.calls[1])
    assert all(r.temperature == 0.7 and r.max_tokens == 192 for c in backend.calls for r in c)
    assert m["rounds_run"] == 2 and m["accepted_by_round"] == {"1": 1, "2": 1}


def test_outputs_and_counted_rejects(generated) -> None:  # type: ignore[no-untyped-def]
    out, _, m = generated
    attempts = read_rows(out / "out" / "attempts.parquet", ATTEMPTS)
    raw = read_rows(out / "out" / "raw.parquet", TRACES)
    rejects = read_rows(out / "out" / "raw.rejects.parquet", REJECTS)
    assert len(attempts) == 9
    cut = next(a for a in attempts if a["question_id"] == "demo/train/3")
    assert cut["finish_reason"] == "length" and cut["correct"] is False
    easy = next(a for a in attempts if a["question_id"] == "demo/train/0")
    assert easy["correct"] and easy["extracted"] == "4" and easy["extraction_rule"] == "answer_is"
    assert [r["question_id"] for r in raw] == ["demo/train/0", "demo/train/1"]
    assert raw[1]["reasoning"] == "3 and 3 is 6." and raw[1]["response"] == "The answer is 6."
    assert raw[0]["source"] == "raw" and raw[0]["compression_ratio"] == 1.0 and raw[0]["reasoning_tokens"] > 0
    assert raw[0]["teacher_model"] == SMOL and len(raw[0]["prompt_hash"]) == 12
    assert {r["id"]: r["reason"] for r in rejects} == {
        "demo/train/2": "not_solved",
        "demo/train/3": "truncated",
        "demo/train/4": "no_reasoning",
    }
    assert m == read_metrics(out / "m.json")
    assert m["rows_in"] == 5 and m["rows_out"] == 2
    assert m["rejects"] == {"no_reasoning": 1, "not_solved": 1, "truncated": 1}
    assert m["attempt_outcomes"] == {
        "accepted": 2,
        "wrong": 3,
        "no_answer": 0,
        "truncated": 2,
        "no_reasoning": 2,
        "non_utf8": 0,
    }
    assert m["datasets"]["demo"]["accepted"] == 2 and m["datasets"]["other"]["accepted"] == 0
    assert m["datasets"]["demo"]["acceptance_rate"] == pytest.approx(2 / 3)
    assert m["overall"]["mean_reasoning_chars"] == pytest.approx((17 + 13) / 2)
    assert m["overall"]["mean_completion_tokens"] == pytest.approx(11)


def test_bad_questions_are_rejected_before_any_call(tmp_path: Path) -> None:
    rows = [
        question("q/0", "EASY: what is 2 + 2?", "4"),
        question("q/0", "EASY: duplicate id", "4"),
        question("q/1", "   ", "4"),
        question("q/2", "EASY: gold is not a number", "four"),
        question("q/3", "EASY: unknown type", "4", answer_type="essay"),
    ]
    backend = ScriptedBackend(teacher_reply)
    m = generate.run(
        make_params(**{"generate.rounds": 1}),
        "smol",
        write_questions(tmp_path / "q.parquet", rows),
        tmp_path / "out",
        tmp_path / "m.json",
        backend=backend,
    )
    assert [len(c) for c in backend.calls] == [1]
    assert m["rejects"] == {
        "duplicate_id": 1,
        "empty_question": 1,
        "bad_gold_answer": 1,
        "bad_answer_type": 1,
    }
    assert m["rows_out"] == 1


def test_non_utf8_completion_is_stored_safely_and_rejected(tmp_path: Path) -> None:
    backend = ScriptedBackend(lambda r: completion("The answer is 4.", "broken \udcff bytes"))
    m = generate.run(
        make_params(**{"generate.rounds": 1}),
        "smol",
        write_questions(tmp_path / "q.parquet", QUESTIONS[:1]),
        tmp_path / "out",
        tmp_path / "m.json",
        backend=backend,
    )
    assert m["rejects"] == {"non_utf8": 1}
    (attempt,) = read_rows(tmp_path / "out" / "attempts.parquet", ATTEMPTS)
    assert "\udcff" not in attempt["reasoning"] and attempt["reasoning"].startswith("broken")


def test_untagged_last_line_splits_instruct_completions(tmp_path: Path) -> None:
    """generate.untagged: last_line (the demo teacher never writes <think>): the last line answers."""
    replies = {
        "EASY": "2 plus 2 is 4.\nSo we add them.\n\nThe answer is 4.\n",
        "LATE": "The answer is 6.",  # one line: no reasoning
        "HARD": "7 * 8 = 56, the answer is 56.\nHope this helps!",  # the answer is not in the last line
    }
    backend = ScriptedBackend(lambda r: completion(next(v for k, v in replies.items() if k in prompt_of(r))))
    m = generate.run(
        make_params(**{"generate.rounds": 1, "generate.untagged": "last_line"}),
        "smol",
        write_questions(tmp_path / "q.parquet", QUESTIONS[:3]),
        tmp_path / "out",
        tmp_path / "m.json",
        backend=backend,
    )
    (raw,) = read_rows(tmp_path / "out" / "raw.parquet", TRACES)
    assert (raw["reasoning"], raw["response"]) == ("2 plus 2 is 4.\nSo we add them.", "The answer is 4.")
    assert m["rejects"] == {"no_reasoning": 1, "not_solved": 1}
    attempts = {a["question_id"]: a for a in read_rows(tmp_path / "out" / "attempts.parquet", ATTEMPTS)}
    assert (
        attempts["demo/train/2"]["response"] == "Hope this helps!"
        and attempts["demo/train/2"]["extracted"] is None
    )
    assert generate.split_last_line("only line") == ("", "only line")


def test_unknown_teacher_names_the_defined_ones(tmp_path: Path) -> None:
    from compress_distill.config import ConfigError

    with pytest.raises(ConfigError, match="defined: smol"):
        generate.run(
            make_params(),
            "qwen",
            tmp_path / "q.parquet",
            tmp_path,
            tmp_path / "m.json",
            backend=ScriptedBackend(teacher_reply),
        )


# --------------------------------------------------------------------------------------------- real engine
SMALL = {"teachers.smol.batch_size": 1, "generate.rounds": 1, "generate.sampling.max_tokens": 12}


@pytest.mark.slow
def test_sigkill_then_rerun_resumes_from_the_cache_with_the_real_hf_backend(tmp_path: Path) -> None:
    """Killed after its first completion was cached, the re-run serves that one from the cache, generates
    only the rest, and writes each question's attempt exactly once."""
    rows = [question(f"demo/train/{i}", f"What is {i} + {i}?", str(2 * i)) for i in range(2)]
    write_questions(tmp_path / "q.parquet", rows)
    write_params(tmp_path / "params.yaml", make_params(**SMALL))
    args = [
        "generate",
        "--params",
        "params.yaml",
        "--teacher",
        "smol",
        "--questions",
        "q.parquet",
        "--out-dir",
        "out",
        "--metrics",
        "m.json",
    ]
    kill_then_resume(args, tmp_path, tmp_path / "cache")
    m = read_metrics(tmp_path / "m.json")
    assert m["engine"]["llm_cached"] >= 1 and m["engine"]["llm_generated"] <= 1
    assert m["engine"]["llm_cached"] + m["engine"]["llm_generated"] == 2
    attempts = read_rows(tmp_path / "out" / "attempts.parquet", ATTEMPTS)
    assert sorted(a["question_id"] for a in attempts) == [r["id"] for r in rows]  # no duplicates
    assert all(a["request_hash"] for a in attempts)
    raw = read_rows(tmp_path / "out" / "raw.parquet", TRACES)
    assert m["rows_in"] == 2 == m["rows_out"] + sum(m["rejects"].values()) and len(raw) == m["rows_out"]


# --------------------------------------------------------------------------------------------- pure decisions
def test_question_reject_rules() -> None:
    ok = question("q", "What is 2 + 2?", "4")
    assert generate.question_reject(ok, ok["question"], ok["answer"]) is None
    assert generate.question_reject(ok, None, "4") == ("non_utf8", "question or answer is not valid UTF-8")
    assert generate.question_reject(ok, "  ", "4") == ("empty_question", "")
    assert generate.question_reject({**ok, "answer_type": "essay"}, "Q?", "4")[0] == "bad_answer_type"  # type: ignore[index]
    assert generate.question_reject(ok, "Q?", "four")[0] == "bad_gold_answer"  # type: ignore[index]


def _mode(untagged: str = "reject", needs_reasoning: bool = True) -> generate.Mode:
    mode = generate.generate_mode(make_params(), "smol")
    return dataclasses.replace(mode, untagged=untagged, needs_reasoning=needs_reasoning)


def test_read_attempt_outcomes() -> None:
    q = question("q", "What is 2 + 2?", "4")
    a = generate.read_attempt(q, completion("The answer is 4.", "2 and 2 make 4."), _mode())
    assert (a.outcome, a.extracted, a.rule, a.correct) == ("accepted", "4", "answer_is", True)
    assert generate.read_attempt(q, completion("The answer is 5.", "r"), _mode()).outcome == "wrong"
    assert generate.read_attempt(q, completion("no idea", "r"), _mode()).outcome == "no_answer"
    cut = generate.read_attempt(q, completion("The answer is 4.", "r", finish_reason="length"), _mode())
    assert (cut.outcome, cut.correct) == ("truncated", False)  # right but cut: never a trace
    bare = completion("2 and 2 make 4.\nThe answer is 4.")
    assert generate.read_attempt(q, bare, _mode()).outcome == "no_reasoning"
    split = generate.read_attempt(q, bare, _mode("last_line"))
    assert (split.outcome, split.reasoning, split.response) == (
        "accepted",
        "2 and 2 make 4.",
        "The answer is 4.",
    )
    broken = generate.read_attempt(q, completion("The answer is 4.", "bad \udcff text"), _mode())
    assert broken.outcome == "non_utf8"
    ift = generate.read_attempt(q, completion("The answer is 4.", "thinking"), _mode(needs_reasoning=False))
    assert (ift.outcome, ift.reasoning) == ("accepted", "")  # ift drops the reasoning it did not ask for


def test_attempt_and_trace_rows() -> None:
    q = question("q", "What is 2 + 2?", "4")
    c = completion("The answer is 4.", "2 and 2 make 4.", tokens=7)
    a = generate.read_attempt(q, c, _mode())
    row = generate.attempt_row(q, c, a, "smol", 2)
    assert set(row) == set(ATTEMPTS.names)
    assert (row["round"], row["attempt"], row["completion_tokens"], row["correct"]) == (2, 2, 7, True)
    t = generate.accepted_row(q, a, 5, _mode(), "abc")
    assert set(t) == set(TRACES.names)
    assert (t["id"], t["reasoning"], t["reasoning_chars"], t["reasoning_tokens"]) == (
        "q",
        "2 and 2 make 4.",
        15,
        5,
    )
    assert (t["source"], t["compression_ratio"], t["prompt_hash"]) == ("raw", 1.0, "abc")
