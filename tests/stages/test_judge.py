"""judge@T-C: Appendix G prompt (middle-truncated traces), structured output, parse statuses, Table 10."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from compress_distill.metrics import read_metrics
from compress_distill.names import FAILURE_MODES
from compress_distill.prompts import load_prompt
from compress_distill.schema import JUDGEMENTS, REJECTS, judge_json_schema, read_rows
from compress_distill.stages import judge
from tests.helpers.traces import (
    SMOL,
    ScriptedBackend,
    completion,
    kill_then_resume,
    make_params,
    prompt_of,
    trace,
    write_params,
    write_traces,
)


def verdict(**kw) -> str:  # type: ignore[no-untyped-def]
    v = {
        "faithfulness": 5,
        "coverage": 4,
        "clarity": 5,
        "verdict": "faithful",
        "answer_alignment": True,
        "failure_modes": [],
        "rationale": "Keeps every step.",
    } | kw
    return json.dumps(v)


def test_parse_verdict_statuses() -> None:
    assert judge.parse_verdict(verdict(), "stop")[0] == "ok"
    assert judge.parse_verdict(f"```json\n{verdict()}\n```", "stop")[0] == "ok"
    assert judge.parse_verdict(f"Here you go: {verdict()} Thanks.", "stop")[0] == "ok"
    assert judge.parse_verdict(verdict()[:40], "length")[0] == "truncated"
    assert judge.parse_verdict("I think it is faithful.", "stop")[0] == "invalid_json"
    status, v, detail = judge.parse_verdict(verdict(faithfulness=7), "stop")
    assert (status, v) == ("schema_error", None)
    assert "less than or equal to 5" in detail
    assert judge.parse_verdict(verdict(failure_modes=["made_up_mode"]), "stop")[0] == "schema_error"
    assert judge.parse_verdict("[1, 2]", "stop")[0] == "schema_error"


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("faithfulness", True),  # bool is not a score (lax pydantic stored it as 1)
        ("faithfulness", "5"),
        ("faithfulness", 5.0),
        ("coverage", False),
        ("answer_alignment", "yes"),  # lax pydantic stored it as True
        ("answer_alignment", 1),
        ("failure_modes", "omitted_key_step"),
        ("rationale", 3),
    ],
)
def test_verdict_schema_is_strict(key: str, value: object) -> None:
    status, v, detail = judge.parse_verdict(verdict(**{key: value}), "stop")
    assert (status, v) == ("schema_error", None), detail
    assert key in detail


@pytest.mark.parametrize(
    ("faithfulness", "label", "status"),
    [
        (1, "faithful", "inconsistent"),
        (2, "faithful", "inconsistent"),
        (3, "faithful", "ok"),
        (5, "faithful", "ok"),
        (5, "unfaithful", "inconsistent"),
        (4, "unfaithful", "inconsistent"),
        (3, "unfaithful", "ok"),
        (1, "unfaithful", "ok"),
        (1, "partially_faithful", "ok"),
        (5, "partially_faithful", "ok"),
    ],
)
def test_verdict_contradicting_its_own_score_is_inconsistent(
    faithfulness: int, label: str, status: str
) -> None:
    got, v, detail = judge.parse_verdict(verdict(faithfulness=faithfulness, verdict=label), "stop")
    assert got == status, detail
    assert (v is None) == (status == "inconsistent")
    if status == "inconsistent":
        assert label in detail and f"faithfulness {faithfulness}" in detail


def test_last_valid_json_object_of_a_reply_wins() -> None:
    draft = verdict(faithfulness=2, verdict="partially_faithful", rationale="draft")
    final = verdict(faithfulness=5, verdict="faithful", rationale="final")
    for reply in (
        f"First thought: {draft}\nOn reflection: {final}",
        f"{draft}{final}",
        f"```json\n{draft}\n```\n```json\n{final}\n```",
        f"{draft} then {final} and a stray {{not json}} brace",
        f'{final} ignore this {{"faithfulness": 9}}',  # a later object that is invalid is skipped
    ):
        status, v, _ = judge.parse_verdict(reply, "stop")
        assert status == "ok" and v is not None and v.rationale == "final", reply
    # two valid objects: the later one, even when it is the less favourable verdict
    status, v, _ = judge.parse_verdict(f"{final} {draft}", "stop")
    assert status == "ok" and v is not None and v.rationale == "draft"
    # every object invalid: the last one's error is reported
    status, v, detail = judge.parse_verdict(f"{verdict(clarity=9)} {verdict(coverage=0)}", "stop")
    assert (status, v) == ("schema_error", None) and "coverage" in detail
    # cut before any valid object closed
    assert judge.parse_verdict(f"{verdict(clarity=9)} {final[:50]}", "length")[0] == "truncated"


def test_parse_statuses_and_enumerations_are_defined_once() -> None:
    from compress_distill.names import VERDICTS
    from compress_distill.schema import JudgeVerdict

    assert judge.PARSE_STATUSES == ("ok", "truncated", "invalid_json", "schema_error", "inconsistent")
    props = JudgeVerdict.model_json_schema()
    assert tuple(props["properties"]["verdict"]["enum"]) == VERDICTS
    assert tuple(props["properties"]["failure_modes"]["items"]["enum"]) == FAILURE_MODES


def judge_reply(req):  # type: ignore[no-untyped-def]
    p = prompt_of(req)
    if "ID-bad-json" in p:
        return completion("faithful, mostly")
    if "ID-cut" in p:
        return completion(verdict()[:30], finish_reason="length")
    if "ID-unfaithful" in p:
        return completion(
            verdict(
                faithfulness=2,
                verdict="unfaithful",
                answer_alignment=False,
                failure_modes=["omitted_key_step", "answer_mismatch"],
            )
        )
    return completion(verdict())


@pytest.fixture
def judged(tmp_path: Path):  # type: ignore[no-untyped-def]
    huge = "HEAD-OF-RAW " + "filler words " * 10_000 + " TAIL-OF-RAW"  # 130k chars > 40k
    raw_rows = [
        trace("a", huge, question="ID-ok"),
        trace("b", "raw b", question="ID-unfaithful", dataset="medqa"),
        trace("c", "raw c", question="ID-bad-json"),
        trace("d", "raw d", question="ID-cut"),
        trace("e", "raw e", question="ID-bytes"),
    ]
    raw = write_traces(tmp_path / "raw.parquet", raw_rows, invalid_utf8={4: "reasoning"})
    comp = write_traces(
        tmp_path / "c.parquet",
        [
            trace("a", "C-HEAD " + "short " * 5_000 + " C-TAIL", source="compressed-concise"),  # 30k > 12k
            trace("b", "comp b", source="compressed-concise", dataset="medqa"),
            trace("c", "comp c", source="compressed-concise"),
            trace("d", "comp d", source="compressed-concise"),
            trace("e", "comp e", source="compressed-concise"),
            trace("z", "orphan", source="compressed-concise"),  # no raw trace
        ],
    )
    backend = ScriptedBackend(judge_reply)
    m = judge.run(
        make_params(),
        "smol",
        "concise",
        raw,
        comp,
        tmp_path / "j.parquet",
        tmp_path / "m.json",
        backend=backend,
        chunk_rows=2,
    )
    return tmp_path, backend, m


def test_prompt_holds_both_ends_of_middle_truncated_traces(judged) -> None:  # type: ignore[no-untyped-def]
    _, backend, _ = judged
    reqs = [r for c in backend.calls for r in c]
    assert len(reqs) == 4  # e is not valid UTF-8, z has no raw trace
    first = prompt_of(reqs[0])
    assert "HEAD-OF-RAW" in first and "TAIL-OF-RAW" in first and "C-HEAD" in first and "C-TAIL" in first
    assert "characters omitted" in first and 40_000 + 12_000 < len(first) < 40_000 + 12_000 + 3_000
    assert "Canonical answer: 4" in first
    schema = judge.engine_schema(make_params().judge.max_rationale_chars)  # the grammar bounds the rationale
    assert all(r.json_schema == schema and r.temperature == 0.0 for r in reqs)


def test_rows_statuses_and_table_10_metrics(judged) -> None:  # type: ignore[no-untyped-def]
    tmp_path, _, m = judged
    rows = {r["id"]: r for r in read_rows(tmp_path / "j.parquet", JUDGEMENTS)}
    assert {k: v["parse_status"] for k, v in rows.items()} == {
        "a": "ok",
        "b": "ok",
        "c": "invalid_json",
        "d": "truncated",
    }
    assert (
        rows["a"]["faithfulness"] == 5
        and rows["a"]["judge_model"] == SMOL
        and rows["a"]["compressor"] == "concise"
    )
    assert rows["b"]["failure_modes"] == ["omitted_key_step", "answer_mismatch"]
    assert (
        rows["c"]["faithfulness"] is None
        and rows["c"]["verdict"] is None
        and rows["c"]["failure_modes"] is None
    )
    assert m == read_metrics(tmp_path / "m.json")
    assert (m["rows_in"], m["rows_out"], m["rows_written"]) == (6, 2, 4)
    assert m["rejects"] == {"invalid_json": 1, "truncated": 1, "non_utf8": 1, "missing_raw": 1}
    assert m["parse_status"] == {
        "ok": 2,
        "truncated": 1,
        "invalid_json": 1,
        "schema_error": 0,
        "inconsistent": 0,
    }
    assert m["overall"]["n"] == 2 and m["overall"]["mean_faithfulness"] == 3.5
    assert m["overall"]["pct_faithful"] == 50.0 and m["overall"]["pct_aligned"] == 50.0
    assert m["datasets"]["medqa"]["failure_modes"]["answer_mismatch"] == 1
    assert set(m["overall"]["failure_modes"]) == set(FAILURE_MODES)
    rejects = {r["id"]: r["reason"] for r in read_rows(tmp_path / "j.rejects.parquet", REJECTS)}
    assert rejects == {"c": "invalid_json", "d": "truncated", "e": "non_utf8", "z": "missing_raw"}


def test_inconsistent_verdict_is_a_counted_reject_with_null_scores(tmp_path: Path) -> None:
    def reply(req):  # type: ignore[no-untyped-def]
        if "ID-contradicts" in prompt_of(req):  # "faithful" with the lowest faithfulness score
            return completion(verdict(faithfulness=1, rationale="Invents a constant."))
        return completion(verdict())

    raws = [trace("a", "raw a"), trace("b", "raw b", question="ID-contradicts")]
    raw = write_traces(tmp_path / "raw.parquet", raws)
    comps = [trace(i, f"comp {i}", source="compressed-concise") for i in "ab"]
    comp = write_traces(tmp_path / "c.parquet", comps)
    m = judge.run(
        make_params(),
        "smol",
        "concise",
        raw,
        comp,
        tmp_path / "j.parquet",
        tmp_path / "m.json",
        backend=ScriptedBackend(reply),
    )
    rows = {r["id"]: r for r in read_rows(tmp_path / "j.parquet", JUDGEMENTS)}
    assert rows["b"]["parse_status"] == "inconsistent"
    assert rows["b"]["faithfulness"] is None and rows["b"]["verdict"] is None
    assert rows["a"]["parse_status"] == "ok" and rows["a"]["faithfulness"] == 5
    assert m["parse_status"]["inconsistent"] == 1 and m["rejects"] == {"inconsistent": 1}
    assert (m["rows_in"], m["rows_out"], m["rows_written"]) == (2, 1, 2)
    assert m["overall"]["n"] == 1 and m["overall"]["pct_faithful"] == 100.0
    [rej] = read_rows(tmp_path / "j.rejects.parquet", REJECTS)
    assert rej["id"] == "b" and rej["reason"] == "inconsistent" and "faithfulness 1" in rej["detail"]


@pytest.mark.slow
def test_sigkill_then_rerun_resumes_from_the_cache_with_the_real_hf_backend(tmp_path: Path) -> None:
    """Real SmolLM2 under the xgrammar JSON-schema processor; 24 tokens cannot finish the object, so the
    rows come back as counted ``truncated`` verdicts -- but each is generated once across the kill."""
    write_traces(tmp_path / "raw.parquet", [trace(f"t/{i}", f"2 + {i} = {2 + i}") for i in range(2)])
    write_traces(
        tmp_path / "c.parquet", [trace(f"t/{i}", f"{2 + i}", source="compressed-concise") for i in range(2)]
    )
    write_params(
        tmp_path / "params.yaml",
        make_params(**{"judge.engine.batch_size": 1, "judge.sampling.max_tokens": 24}),
    )
    args = [
        "judge",
        "--params",
        "params.yaml",
        "--teacher",
        "smol",
        "--compressor",
        "concise",
        "--raw",
        "raw.parquet",
        "--compressed",
        "c.parquet",
        "--out",
        "j.parquet",
        "--metrics",
        "m.json",
    ]
    kill_then_resume(args, tmp_path, tmp_path / "cache")
    m = read_metrics(tmp_path / "m.json")
    assert m["engine"]["llm_cached"] >= 1 and m["engine"]["llm_cached"] + m["engine"]["llm_generated"] == 2
    rows = read_rows(tmp_path / "j.parquet", JUDGEMENTS)
    assert sorted(r["id"] for r in rows) == ["t/0", "t/1"]
    assert all(r["parse_status"] in judge.PARSE_STATUSES for r in rows)
    assert m["rows_in"] == 2 == m["rows_out"] + sum(m["rejects"].values())


def grammar_reply(v: dict[str, object]) -> str:
    """A verdict as the hf backend's grammar writes it: the verdict first, no free whitespace."""
    return json.dumps({"verdict": v["verdict"]} | v, separators=(", ", ": "))


@pytest.mark.parametrize("label", ["faithful", "partially_faithful", "unfaithful"])
def test_the_decoding_grammar_admits_only_verdicts_consistent_with_their_score(label: str) -> None:
    # issue 13: under the stored schema SmolLM2 wrote "faithful" with faithfulness 1 on every demo row, all
    # counted `inconsistent`; the engine's schema lets it write only scores that fit the verdict it chose
    import xgrammar as xgr

    grammar = xgr.Grammar.from_json_schema(json.dumps(judge.engine_schema(160)), any_whitespace=False)
    for score in range(1, 6):
        reply = grammar_reply(json.loads(verdict(verdict=label, faithfulness=score)))
        accepted = xgr.testing._is_grammar_accept_string(grammar, reply)
        assert accepted == (judge.parse_verdict(reply, "stop")[0] == "ok"), reply
    # the verdict comes first so that it constrains the score, not the other way round
    assert not xgr.testing._is_grammar_accept_string(grammar, json.dumps(json.loads(verdict())))


@pytest.mark.slow
def test_the_real_judge_under_the_engine_schema_gives_a_consistent_verdict(smol_dir: str) -> None:
    # issue 13, a demo row: SmolLM2 answered {"faithfulness": 1, ..., "verdict": "faithful", ...} (inconsistent)
    from compress_distill.llm import ChatRequest, make_backend
    from compress_distill.prompts import load_prompt, render

    prompt = render(
        load_prompt(make_params().judge.prompt),
        question="Ana has 3 shells. Zoe has 2 shells. Does Ana have more shells than Zoe? Answer yes or no.",
        answer="yes",
        raw_reasoning="Step 1: Identify the given answer\nAna has 3 shells.\nStep 2: Apply the question's "
        "format\nAnswer: Yes\nStep 3: Provide the answer\nAna has 3 shells.",
        compressed_reasoning="Ana has 3 shells.",
    )
    request = ChatRequest(
        [{"role": "user", "content": prompt}], max_tokens=320, json_schema=judge.engine_schema(160)
    )
    with make_backend({"backend": "hf", "model": smol_dir, "device": "cpu"}, use_cache=False) as backend:
        [reply] = backend.generate([request])
    status, v, detail = judge.parse_verdict(reply.text, reply.finish_reason)
    assert status == "ok" and v is not None, detail
    assert next(iter(json.loads(reply.text))) == "verdict"


def test_the_decoding_grammar_closes_a_looping_rationale() -> None:
    # issue 13: SmolLM2 looped inside the rationale ("no, no, no, ...") until the token cap: 2 of 10 parsed
    import xgrammar as xgr

    def reply(rationale: str) -> str:
        return grammar_reply(json.loads(verdict(rationale=rationale)))

    grammar = xgr.Grammar.from_json_schema(json.dumps(judge.engine_schema(160)), any_whitespace=False)
    assert xgr.testing._is_grammar_accept_string(grammar, reply("no, " * 40))  # 160 characters
    assert not xgr.testing._is_grammar_accept_string(grammar, reply("no, " * 40 + "n"))
    assert judge_json_schema()["properties"]["rationale"]["maxLength"] == 2000  # the stored bound stays


# --------------------------------------------------------------------------------------------- pure decisions
def test_judge_prompt_middle_truncates_both_traces() -> None:
    jc = make_params(**{"judge.max_raw_chars": 1000, "judge.max_compressed_chars": 400}).judge
    raw, comp = "R" * 500 + "x" * 5000 + "END-RAW", "C" * 200 + "y" * 2000 + "END-COMP"
    prompt = judge.judge_prompt(load_prompt(jc.prompt), jc, "What is 2 + 2?", "4", raw, comp)
    assert "What is 2 + 2?" in prompt and "END-RAW" in prompt and "END-COMP" in prompt
    assert "x" * 2000 not in prompt and "y" * 1000 not in prompt  # the middles were cut


def test_judgement_row_and_verdict_stats() -> None:
    status, v, _ = judge.parse_verdict(
        verdict(failure_modes=["contradiction"], verdict="partially_faithful", faithfulness=3), "stop"
    )
    assert status == "ok" and v is not None
    row = judge.judgement_row("t1", "concise", SMOL, status, v)
    assert set(row) == set(JUDGEMENTS.names)
    assert (row["faithfulness"], row["failure_modes"], row["parse_status"]) == (3, ["contradiction"], "ok")
    empty = judge.judgement_row("t2", "concise", SMOL, "invalid_json", None)
    assert empty["parse_status"] == "invalid_json" and all(
        empty[k] is None for k in ("faithfulness", "verdict")
    )
    s = judge.verdict_stats("gsm8k", v)
    assert s == {
        "dataset": "gsm8k",
        "faithfulness": 3,
        "coverage": 4,
        "clarity": 5,
        "faithful": False,  # the verdict counts, not the score
        "aligned": True,
        "failure_modes": ["contradiction"],
    }
