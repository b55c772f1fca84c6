"""verify@T (source compressed-verified): the shortest compression that the judge calls faithful and from
which a verifier model alone reaches the canonical answer; raw or drop fallback; decisions, shares, CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

from compress_distill.config import ConfigError
from compress_distill.metrics import read_metrics
from compress_distill.schema import JUDGEMENTS, REJECTS, TRACES, VERIFY_DECISIONS, read_rows, write_rows
from compress_distill.stages import verify
from tests.helpers.traces import (
    REPO,
    SMOL,
    ScriptedBackend,
    completion,
    make_params,
    prompt_of,
    trace,
    write_traces,
)

Q = "What is 8 + 9?"
RAW_TEXT = "RAWTRACE: eight plus nine, let me count carefully ... " * 4


def judged(tid: str, compressor: str, verdict: str = "faithful", status: str = "ok") -> dict:
    ok = status == "ok"
    return {
        "id": tid,
        "compressor": compressor,
        "faithfulness": 5 if ok else None,
        "coverage": 4 if ok else None,
        "clarity": 4 if ok else None,
        "verdict": verdict if ok else None,
        "answer_alignment": True if ok else None,
        "failure_modes": [] if ok else None,
        "rationale": "r" if ok else None,
        "judge_model": SMOL,
        "parse_status": status,
    }


def params(**over):
    engine = {"backend": "hf", "model": SMOL, "device": "cpu"}
    return make_params(
        **{
            "verify.engine": engine,
            "verify.prompt": str(REPO / "prompts/verify.md"),
            # two candidates per trace (the demo's third compressor is left out)
            "compressors": {"concise": engine, "terse": engine},
            "compress.prompt_sets": {"concise": "generic"},
            "grid.sources": ["raw", "compressed-concise", "compressed-terse", "compressed-verified"],
            **over,
        }
    )


def comp(tid: str, text: str, c: str) -> dict:
    return trace(
        tid,
        text,
        answer="17",
        question=Q,
        source=f"compressed-{c}",
        ratio=len(text) / len(RAW_TEXT),
        compressor_model=SMOL,
        prompt_hash="aaaaaaaaaaaa+cccccccccccc",
    )


def make_inputs(tmp: Path) -> tuple[Path, Path]:
    traces, judgements = tmp / "traces", tmp / "judgements"
    raw = [
        trace(f"t{i}", RAW_TEXT, answer="17", question=Q, dataset="gsm8k" if i < 3 else "medqa")
        for i in range(5)
    ]
    write_traces(traces / "raw.parquet", [*raw, raw[0]])  # t0 twice: a duplicate_id reject
    write_traces(
        traces / "compressed-concise.parquet",
        [
            comp("t0", "8 + 9 = 17, so seventeen.", "concise"),
            comp("t1", "8 + 9 = 17, so seventeen.", "concise"),
            comp("t2", "8 + 9 = 17, so seventeen, clearly.", "concise"),
            comp("t3", "8 + 9 = 17.", "concise"),
        ],
    )
    write_traces(
        traces / "compressed-terse.parquet",
        [
            comp("t0", "WRONG: 16.", "terse"),  # shorter, faithful per the judge, but the verifier gets 16
            comp("t1", "8+9=17", "terse"),  # shorter, but only partially faithful
            comp("t2", "8+9=17", "terse"),  # shortest and qualifies
            comp("t3", "8+9=17", "terse"),  # judge could not parse a verdict
        ],
    )
    judgements.mkdir(parents=True)
    write_rows(
        [
            judged("t0", "concise"),
            judged("t1", "concise"),
            judged("t2", "concise"),
            judged("t3", "concise", "unfaithful"),
        ],
        judgements / "concise.parquet",
        JUDGEMENTS,
    )
    write_rows(
        [
            judged("t0", "terse"),
            judged("t1", "terse", "partially_faithful"),
            judged("t2", "terse"),
            judged("t3", "terse", status="invalid_json"),
        ],
        judgements / "terse.parquet",
        JUDGEMENTS,
    )
    return traces, judgements


def verifier(req) -> object:
    text = prompt_of(req)
    return completion("It says 16.\nThe answer is 16." if "WRONG" in text else "The answer is 17.")


def test_shortest_verified_faithful_wins_else_raw(tmp_path: Path) -> None:
    traces, judgements = make_inputs(tmp_path)
    be = ScriptedBackend(verifier)
    out = tmp_path / "traces" / "compressed-verified.parquet"
    m = verify.run(params(), "smol", traces, judgements, out, tmp_path / "m.json", backend=be, chunk_rows=4)

    rows = {r["id"]: r for r in read_rows(out, TRACES)}
    assert set(rows) == {"t0", "t1", "t2", "t3", "t4"}
    # t0: terse is shorter and judged faithful, but the verifier reached 16, not 17 -> concise
    assert rows["t0"]["reasoning"] == "8 + 9 = 17, so seventeen." and rows["t2"]["reasoning"] == "8+9=17"
    assert rows["t1"]["reasoning"] == "8 + 9 = 17, so seventeen."
    assert all(r["source"] == "compressed-verified" for r in rows.values())
    assert rows["t2"]["answer_preserved"] is True and rows["t2"]["prompt_hash"].count("+") == 2
    # t3 (no faithful candidate) and t4 (no compression at all) fall back to the raw trace
    for tid in ("t3", "t4"):
        assert rows[tid]["reasoning"] == RAW_TEXT and rows[tid]["compression_ratio"] == 1.0
        assert rows[tid]["compressor_model"] == "" and rows[tid]["answer_preserved"] is None

    # the verifier read only faithful candidates, never the raw trace nor the canonical answer's line
    prompts = [prompt_of(r) for call in be.calls for r in call]
    assert len(prompts) == 5  # t0 x2, t1 concise, t2 x2
    assert all("RAWTRACE" not in p and Q in p for p in prompts)

    decisions = {
        d["id"]: d
        for d in read_rows(tmp_path / "traces" / "compressed-verified.decisions.parquet", VERIFY_DECISIONS)
    }
    assert {k: d["winner"] for k, d in decisions.items()} == {
        "t0": "concise",
        "t1": "concise",
        "t2": "terse",
        "t3": "raw",
        "t4": "raw",
    }
    assert decisions["t0"]["reasons"] == "terse: answer_not_reached (got 16)"
    assert decisions["t1"]["reasons"] == "terse: judged_partially_faithful"
    assert decisions["t3"]["reasons"] == "terse: not_judged; concise: judged_unfaithful"
    assert decisions["t4"]["reasons"] == "concise: no_compression; terse: no_compression"

    assert m == read_metrics(tmp_path / "m.json")
    assert (m["rows_in"], m["rows_out"], m["rejects"]) == (6, 5, {"duplicate_id": 1})
    assert m["shares"] == {"concise": 0.4, "terse": 0.2, "raw": 0.4, "dropped": 0.0}
    assert m["fallback_rate"] == pytest.approx(0.4)
    chars = [len(rows[t]["reasoning"]) for t in sorted(rows)]
    assert m["overall"]["ratio_of_means"] == pytest.approx(sum(chars) / (5 * len(RAW_TEXT)))
    assert m["datasets"]["medqa"]["pct_fallback"] == 100.0
    assert [
        r["reason"] for r in read_rows(tmp_path / "traces" / "compressed-verified.rejects.parquet", REJECTS)
    ] == ["duplicate_id"]


def test_drop_fallback_rejects_the_trace(tmp_path: Path) -> None:
    traces, judgements = make_inputs(tmp_path)
    out = tmp_path / "v.parquet"
    m = verify.run(
        params(**{"verify.fallback": "drop"}),
        "smol",
        traces,
        judgements,
        out,
        tmp_path / "m.json",
        backend=ScriptedBackend(verifier),
    )
    assert sorted(r["id"] for r in read_rows(out, TRACES)) == ["t0", "t1", "t2"]
    assert m["rejects"] == {"duplicate_id": 1, "no_verified_compression": 2}
    assert m["rows_in"] == m["rows_out"] + 3 and m["shares"]["dropped"] == 0.4 and m["fallback_rate"] == 0.4
    rejected = {
        r["id"]: r["detail"]
        for r in read_rows(tmp_path / "v.rejects.parquet", REJECTS)
        if r["reason"] == "no_verified_compression"
    }
    assert rejected["t3"] == "terse: not_judged; concise: judged_unfaithful"


def test_failure_reasons_and_ties() -> None:
    assert verify.failure(verify.Candidate("c", 10, "faithful", False, "17")) == "answer_not_reached (got 17)"
    won = verify.choose(
        [verify.Candidate("a", 5, "faithful", True), verify.Candidate("b", 5, "faithful", True)], "raw"
    )
    assert won == ("a", "")  # ties: params order


def test_a_verifier_reply_cut_at_max_tokens_never_verifies(tmp_path: Path) -> None:
    """A reply that hit ``verify.sampling.max_tokens`` may stop on any number: even a correct one is no proof."""
    traces, judgements = make_inputs(tmp_path)
    cut = ScriptedBackend(lambda req: completion("The answer is 17", finish_reason="length"))
    m = verify.run(
        params(), "smol", traces, judgements, tmp_path / "v.parquet", tmp_path / "m.json", backend=cut
    )
    assert m["shares"]["raw"] == 1.0 and m["fallback_rate"] == 1.0
    reasons = {d["id"]: d["reasons"] for d in read_rows(tmp_path / "v.decisions.parquet", VERIFY_DECISIONS)}
    cut_reason = "verifier_reply_cut (raise verify.sampling.max_tokens)"
    assert reasons["t2"] == f"terse: {cut_reason}; concise: {cut_reason}"


def test_params_rules() -> None:
    with pytest.raises(ConfigError, match="no `verify` section"):
        make_params(**{"verify": None, "grid.sources": ["raw", "compressed-verified"]})
    with pytest.raises(ConfigError, match="reserved"):
        make_params(**{"compressors.verified": {"backend": "hf", "model": SMOL}})
    assert "compressed-verified" in params(**{"grid.sources": ["raw", "compressed-verified"]}).grid.sources


def test_missing_judgements_say_which_stage(tmp_path: Path) -> None:
    from compress_distill.errors import StageError

    traces, judgements = make_inputs(tmp_path)
    (judgements / "terse.parquet").unlink()
    with pytest.raises(StageError, match=r"dvc repro judge@smol-terse"):
        verify.run(
            params(),
            "smol",
            traces,
            judgements,
            tmp_path / "v.parquet",
            tmp_path / "m.json",
            backend=ScriptedBackend(verifier),
        )


def test_build_publishes_the_verified_config(tmp_path: Path) -> None:
    """build@T picks up compressed-verified beside the other sources (its decisions table is not a config)."""
    from compress_distill.stages import build

    traces, judgements = make_inputs(tmp_path)
    verify.run(
        params(),
        "smol",
        traces,
        judgements,
        traces / "compressed-verified.parquet",
        tmp_path / "v.json",
        backend=ScriptedBackend(verifier),
    )
    m = build.run(params(), "smol", traces, judgements, tmp_path / "hub" / "smol", tmp_path / "b.json")
    assert m["configs"]["compressed-verified"]["rows"] == 5
    assert sorted(p.name for p in (tmp_path / "hub" / "smol").iterdir() if p.is_dir()) == [
        "compressed-concise",
        "compressed-terse",
        "compressed-verified",
        "raw",
    ]
    card = (tmp_path / "hub" / "smol" / "README.md").read_text(encoding="utf-8")
    assert "| `compressed-verified` | per trace the shortest compression" in card


@pytest.mark.slow
def test_cli_with_the_real_hf_verifier(tmp_path: Path) -> None:
    """The dvc.yaml command line end to end with SmolLM2 as the verifier (real engine, real grading)."""
    import os
    import subprocess
    import sys

    from tests.helpers.traces import write_params

    make_inputs(tmp_path)
    write_params(
        tmp_path / "params.yaml", params(**{"verify.sampling.max_tokens": 24, "verify.engine.batch_size": 8})
    )
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "COMPRESS_DISTILL_LLM_CACHE": str(tmp_path / "cache"),
    }
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "compress_distill.cli",
            "verify",
            "--params",
            "params.yaml",
            "--teacher",
            "smol",
            "--traces-dir",
            "traces",
            "--judgements-dir",
            "judgements",
            "--out",
            "traces/compressed-verified.parquet",
            "--metrics",
            "m.json",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "fallback rate" in done.stdout
    m = read_metrics(tmp_path / "m.json")
    assert m["engine"]["llm_requests"] == 5  # the judged-faithful candidates only
    assert (m["rows_in"], m["rows_out"]) == (6, 5) and sum(m["shares"].values()) == pytest.approx(1.0)
    decisions = read_rows(tmp_path / "traces" / "compressed-verified.decisions.parquet", VERIFY_DECISIONS)
    assert {d["winner"] for d in decisions} <= {"concise", "terse", "raw"}
    assert {d["id"]: d["winner"] for d in decisions}["t3"] == "raw"  # nothing judged faithful: never verified
