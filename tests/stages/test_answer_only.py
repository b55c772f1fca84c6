"""answer_only@T: think block removed, final response and metadata kept, bad rows counted; CLI wiring."""

from __future__ import annotations

from pathlib import Path

import yaml
from typer.testing import CliRunner

from compress_distill.metrics import read_metrics
from compress_distill.schema import REJECTS, TRACES, read_rows
from compress_distill.stages import answer_only
from tests.helpers.traces import REPO, make_params, trace, write_params, write_traces


def test_reasoning_removed_response_kept(tmp_path: Path) -> None:
    raw = write_traces(
        tmp_path / "raw.parquet",
        [
            trace("a", "long thinking " * 50, response="The answer is 4."),
            trace("b", "more thinking", response="   ", dataset="medqa"),
            trace("c", "thinking", response="The answer is 5."),
            trace("d", "thinking", response="The answer is (B).", dataset="medqa"),
        ],
        invalid_utf8={2: "response"},
    )
    m = answer_only.run(
        make_params(), "smol", raw, tmp_path / "ao.parquet", tmp_path / "m.json", batch_rows=3
    )
    out = read_rows(tmp_path / "ao.parquet", TRACES)
    assert [r["id"] for r in out] == ["a", "d"]
    a = out[0]
    assert a["reasoning"] == "" and a["response"] == "The answer is 4." and a["source"] == "answer-only"
    assert (a["reasoning_chars"], a["reasoning_tokens"], a["compression_ratio"]) == (0, 0, 0.0)
    assert (
        a["question"] == "What is 2 + 2?"
        and a["prompt_hash"] == "aaaaaaaaaaaa"
        and a["answer_preserved"] is None
    )
    assert m == read_metrics(tmp_path / "m.json")
    assert (m["rows_in"], m["rows_out"], m["rejects"]) == (4, 2, {"empty_response": 1, "non_utf8": 1})
    assert {r["id"]: r["reason"] for r in read_rows(tmp_path / "ao.rejects.parquet", REJECTS)} == {
        "b": "empty_response",
        "c": "non_utf8",
    }
    assert m["datasets"]["demo"]["n"] == 1 and m["datasets"]["medqa"]["mean_response_chars"] == 18


def test_cli_options_match_dvc_yaml(tmp_path: Path) -> None:
    """Every trace stage's dvc.yaml command line parses against its Typer ``main`` (help only: no work)."""
    from compress_distill.cli import app

    stages = yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    runner = CliRunner()
    for name in (
        "generate",
        "compress",
        "truncate",
        "answer_only",
        "judge",
        "verify",
        "build",
        "publish",
        "pull",
    ):
        cmd = stages[name]["do"]["cmd"].split()
        assert cmd[0] == "compress-distill"
        options = [tok for tok in cmd[2:] if tok.startswith("--")]
        result = runner.invoke(app, [cmd[1], "--help"])
        assert result.exit_code == 0, result.output
        for opt in options:
            assert opt in result.output, f"{name}: {opt} missing from `{cmd[1]} --help`"


def test_cli_runs_the_stage(tmp_path: Path) -> None:
    from compress_distill.cli import app

    write_traces(tmp_path / "raw.parquet", [trace("a", "r", response="The answer is 4.")])
    params = write_params(tmp_path / "params.yaml", make_params())
    result = CliRunner().invoke(
        app,
        [
            "answer-only",
            "--params",
            str(params),
            "--teacher",
            "smol",
            "--raw",
            str(tmp_path / "raw.parquet"),
            "--out",
            str(tmp_path / "ao.parquet"),
            "--metrics",
            str(tmp_path / "m.json"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "1/1 rows" in result.output
    bad = CliRunner().invoke(
        app,
        [
            "answer-only",
            "--params",
            str(params),
            "--teacher",
            "nope",
            "--raw",
            str(tmp_path / "raw.parquet"),
            "--out",
            str(tmp_path / "x.parquet"),
            "--metrics",
            str(tmp_path / "x.json"),
        ],
    )
    assert bad.exit_code != 0 and "defined: smol" in bad.output
