"""compress@T-C: prompt choice, response re-attached, ratio, answer_preserved, every reject reason, resume."""

from __future__ import annotations

from pathlib import Path

import pytest

from compress_distill.metrics import read_metrics
from compress_distill.schema import REJECTS, TRACES, read_rows
from compress_distill.stages import compress
from tests.helpers.traces import (
    REPO,
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

LONG = "First I add 2 and 2. " * 10 + "So 2 + 2 = 4, the answer is 4."  # 241 chars


def compressor_reply(req):  # type: ignore[no-untyped-def]
    p = prompt_of(req)
    if "ROW-longer" in p:
        return completion(LONG + " and more words " * 5)
    if "ROW-empty" in p:
        return completion("   ")
    if "ROW-cut" in p:
        return completion("2 + 2 = ", finish_reason="length")
    if "ROW-lost" in p:
        return completion("Add the numbers.")  # no answer in the conclusion
    return completion("2 + 2 = 4. The answer is 4.")


def rows() -> list[dict]:
    q = "ROW-{} What is 2 + 2?"
    return [
        trace("t/ok", LONG, question=q.format("ok"), response="Final: **4**"),
        trace("t/med", LONG, question=q.format("med"), domain="medicine", dataset="medqa"),
        trace("t/longer", LONG, question=q.format("longer")),
        trace("t/empty", LONG, question=q.format("empty")),
        trace("t/cut", LONG, question=q.format("cut")),
        trace("t/lost", LONG, question=q.format("lost")),
        trace("t/blank", "  ", question=q.format("blank")),
        trace("t/huge", "x" * 1_000_000, question=q.format("huge")),
        trace("t/bytes", LONG, question=q.format("bytes")),
        trace("t/gold", LONG, question=q.format("gold"), answer="four"),
    ]


def run(tmp_path: Path, compressor: str = "concise", **overrides):  # type: ignore[no-untyped-def]
    raw = write_traces(tmp_path / "raw.parquet", rows(), invalid_utf8={8: "reasoning"})
    backend = ScriptedBackend(compressor_reply)
    p = make_params(**overrides)
    m = compress.run(
        p,
        "smol",
        compressor,
        raw,
        tmp_path / f"c-{compressor}.parquet",
        tmp_path / "m.json",
        backend=backend,
        chunk_rows=4,
    )
    return backend, m, read_rows(tmp_path / f"c-{compressor}.parquet", TRACES)


def test_rows_kept_with_response_unchanged_and_ratio(tmp_path: Path) -> None:
    backend, _, out = run(tmp_path)
    assert [r["id"] for r in out] == ["t/ok", "t/med", "t/lost"]
    ok = out[0]
    assert ok["reasoning"] == "2 + 2 = 4. The answer is 4." and ok["response"] == "Final: **4**"
    assert ok["source"] == "compressed-concise" and ok["compressor_model"] == SMOL
    assert ok["compression_ratio"] == pytest.approx(len(ok["reasoning"]) / len(LONG))
    assert ok["reasoning_chars"] == len(ok["reasoning"]) and 5 < ok["reasoning_tokens"] < 20
    assert ok["prompt_hash"].startswith("aaaaaaaaaaaa+") and ok["answer_preserved"] is True
    assert out[2]["answer_preserved"] is False
    # chunks of 4 rows; the 1 MB, blank, non-UTF-8 and ungradable rows never reach the engine (the third
    # chunk holds only such rows, so it makes no call at all)
    assert [len(c) for c in backend.calls] == [4, 2]
    sent = [prompt_of(r) for c in backend.calls for r in c]
    assert not any("ROW-huge" in s or "ROW-blank" in s or "ROW-bytes" in s or "ROW-gold" in s for s in sent)
    assert all(r.temperature == 0.3 for c in backend.calls for r in c)


def test_every_reject_is_counted_with_a_reason(tmp_path: Path) -> None:
    _, m, _ = run(tmp_path)
    assert m == read_metrics(tmp_path / "m.json")
    assert m["rows_in"] == 10 and m["rows_out"] == 3
    assert m["rejects"] == {
        "longer_than_raw": 1,
        "empty_output": 1,
        "truncated_output": 1,
        "empty_reasoning": 1,
        "too_long": 1,
        "non_utf8": 1,
        "bad_gold_answer": 1,
    }
    rejects = {r["id"]: r for r in read_rows(tmp_path / "c-concise.rejects.parquet", REJECTS)}
    assert rejects["t/huge"]["reason"] == "too_long" and len(rejects["t/huge"]["detail"]) < 3_000
    assert set(rejects) == {"t/longer", "t/empty", "t/cut", "t/blank", "t/huge", "t/bytes", "t/gold"}
    assert {r["stage"] for r in rejects.values()} == {"compress"}
    # paper Table 5 per dataset
    assert m["datasets"]["medqa"]["n"] == 1 and m["datasets"]["demo"]["n"] == 2
    assert m["overall"]["mean_chars"] == pytest.approx((27 + 27 + 16) / 3)
    assert m["overall"]["pct_answer_preserved"] == pytest.approx(200 / 3)
    assert set(m["datasets"]["demo"]) >= {"mean_chars", "mean_tokens", "mean_ratio", "ratio_of_means"}


def test_ratio_of_means_beside_mean_ratio(tmp_path: Path) -> None:
    # paper Tables 2/5: mean compressed chars / mean raw chars; the mean of per-trace ratios differs
    _, m, out = run(tmp_path)
    raw_chars = [r["reasoning_chars"] / r["compression_ratio"] for r in out]
    chars = [r["reasoning_chars"] for r in out]
    assert m["overall"]["ratio_of_means"] == pytest.approx(sum(chars) / sum(raw_chars))
    assert m["overall"]["mean_ratio"] == pytest.approx(sum(r["compression_ratio"] for r in out) / len(out))
    demo = [r for r in out if r["dataset"] == "demo"]
    assert m["datasets"]["demo"]["ratio_of_means"] == pytest.approx(
        sum(r["reasoning_chars"] for r in demo)
        / sum(r["reasoning_chars"] / r["compression_ratio"] for r in demo)
    )


def test_require_answer_preserved_filters_and_counts(tmp_path: Path) -> None:
    _, m, out = run(tmp_path, **{"compress.require_answer_preserved": True})
    assert [r["id"] for r in out] == ["t/ok", "t/med"]
    assert m["rejects"]["answer_not_preserved"] == 1 and m["rows_out"] == 2


def test_prompt_precedence_compressor_then_domain_then_generic(tmp_path: Path) -> None:
    med = tmp_path / "medical.md"
    med.write_text("MEDICAL PROMPT {{question}} {{reasoning}}", encoding="utf-8")
    overrides = {"compress.domain_prompts": {"medicine": str(med)}}
    backend, _, _ = run(tmp_path, "concise", **overrides)
    by_q = {prompt_of(r).split("ROW-")[1].split()[0]: prompt_of(r) for c in backend.calls for r in c}
    assert by_q["med"].startswith("MEDICAL PROMPT") and by_q["ok"].startswith("You are given a question")
    backend, _, _ = run(tmp_path, "terse", **overrides)  # compress.prompts.terse beats the domain prompt
    assert all(prompt_of(r).startswith("Compress the reasoning") for c in backend.calls for r in c)


# --------------------------------------------------------------------------------------------- real engine
@pytest.mark.slow
def test_sigkill_then_rerun_resumes_from_the_cache_with_the_real_hf_backend(tmp_path: Path) -> None:
    reasoning = "We need 2 + 2. Two plus two is four because counting two more after two gives four. " * 3
    write_traces(
        tmp_path / "raw.parquet", [trace(f"t/{i}", reasoning, question=f"What is 2 + {i}?") for i in range(2)]
    )
    write_params(
        tmp_path / "params.yaml",
        make_params(**{"compressors.concise.batch_size": 1, "compress.sampling.max_tokens": 12}),
    )
    args = [
        "compress",
        "--params",
        "params.yaml",
        "--teacher",
        "smol",
        "--compressor",
        "concise",
        "--raw",
        "raw.parquet",
        "--out",
        "c.parquet",
        "--metrics",
        "m.json",
    ]
    kill_then_resume(args, tmp_path, tmp_path / "cache")
    m = read_metrics(tmp_path / "m.json")
    assert m["engine"]["llm_cached"] >= 1 and m["engine"]["llm_cached"] + m["engine"]["llm_generated"] == 2
    out = read_rows(tmp_path / "c.parquet", TRACES)
    assert len({r["id"] for r in out}) == len(out) == m["rows_out"]
    assert m["rows_in"] == 2 == m["rows_out"] + sum(m["rejects"].values())
    # 12 new tokens cannot close a rewrite: SmolLM2's outputs are counted as truncated, never kept silently
    assert set(m["rejects"]) <= {"truncated_output", "empty_output", "longer_than_raw"}


# the generic-vs-domain axis as a grid sets it up (configs/paper.yaml): the shipped domain prompts, a second
# compressor with concise's engine, and concise pinned to the generic prompt
DOMAIN_AXIS = {
    "compress.domain_prompts": {
        d: str(REPO / f"prompts/compress/{d}.md") for d in ("math", "science", "medicine", "commonsense")
    },
    "compressors.domain": {"backend": "hf", "model": SMOL, "device": "cpu"},
    "compress.prompt_sets": {"concise": "generic", "domain": "domain"},
}


def test_shipped_domain_prompts_versus_the_generic_prompt_set(tmp_path: Path) -> None:
    """The generic-vs-domain axis: `domain` reads the shipped prompt of each row's domain, `concise`
    (compress.prompt_sets: generic) the generic prompt for every row; the metrics name the files used."""
    backend, m, _ = run(tmp_path, "domain", **DOMAIN_AXIS)
    by_q = {prompt_of(r).split("ROW-")[1].split()[0]: prompt_of(r) for c in backend.calls for r in c}
    assert "Keep every symbolic computation verbatim" in by_q["ok"]  # a math row
    assert "drug names, doses, contraindications" in by_q["med"]  # a medicine row
    assert {Path(p).name for p in m["prompt_hashes"]} == {"math.md", "medicine.md"}
    backend, m, _ = run(tmp_path, "concise", **DOMAIN_AXIS)
    assert all(prompt_of(r).startswith("You are given a question") for c in backend.calls for r in c)
    assert [Path(p).name for p in m["prompt_hashes"]] == ["generic.md"]


def test_a_compressor_cannot_have_its_own_prompt_and_the_domain_set() -> None:
    from compress_distill.config import ConfigError

    with pytest.raises(ConfigError, match="own prompt, which always wins"):
        make_params(**{"compress.prompt_sets": {"terse": "domain"}})


# --------------------------------------------------------------------------------------------- pure decisions
def _row(reasoning: str = "2 and 2 make 4, so the answer is 4.", **kw):  # type: ignore[no-untyped-def]
    return {**trace("t", reasoning), **kw}


def test_input_reject_rules() -> None:
    assert compress.input_reject(_row()) is None
    assert compress.input_reject(_row(response=None))[0] == "non_utf8"  # type: ignore[index]
    assert compress.input_reject(_row(" \n")) == ("empty_reasoning", "")
    assert compress.input_reject(_row("x" * (compress.MAX_INPUT_CHARS + 1)))[0] == "too_long"  # type: ignore[index]
    assert compress.input_reject(_row(answer="four"))[0] == "bad_gold_answer"  # type: ignore[index]


def test_read_compression_decides_each_reply() -> None:
    row = _row()
    kept = compress.read_compression(completion("  2+2=4, the answer is 4. "), row, False)
    assert kept == compress.Compression("2+2=4, the answer is 4.", True)
    assert (
        compress.read_compression(completion("2+2=4", finish_reason="length"), row, False)[0]
        == "truncated_output"
    )  # type: ignore[index]
    assert compress.read_compression(completion(" "), row, False) == ("empty_output", "")
    assert (
        compress.read_compression(completion(row["reasoning"] + " more"), row, False)[0] == "longer_than_raw"
    )  # type: ignore[index]
    assert compress.read_compression(completion("bad \udcff"), row, False)[0] == "non_utf8_output"  # type: ignore[index]
    lost = compress.read_compression(completion("2 and 2 make five."), row, False)
    assert lost == compress.Compression("2 and 2 make five.", False)
    assert compress.read_compression(completion("2 and 2 make five."), row, True)[0] == "answer_not_preserved"  # type: ignore[index]


def test_compressed_trace_keeps_the_teacher_response() -> None:
    row = _row(prompt_hash="aaaaaaaaaaaa")
    t = compress.compressed_trace(
        row, compress.Compression("2+2=4.", True), 3, "concise", "m", "bbbbbbbbbbbb"
    )
    assert set(t) == set(TRACES.names)
    assert (t["reasoning"], t["response"], t["source"]) == ("2+2=4.", row["response"], "compressed-concise")
    assert t["compression_ratio"] == pytest.approx(6 / len(row["reasoning"]))
    assert (t["reasoning_tokens"], t["compressor_model"], t["prompt_hash"]) == (
        3,
        "m",
        "aaaaaaaaaaaa+bbbbbbbbbbbb",
    )
    assert t["answer_preserved"] is True
