"""Grid expansion: the paper's 55 runs from a compact spec, plan.yaml in sync, hub mode."""

from __future__ import annotations

import copy
from collections import Counter
from pathlib import Path

import yaml

from compress_distill.config import load_params, parse_params
from compress_distill.plan import expand, render

REPO = Path(__file__).resolve().parents[1]


def test_paper_grid_is_55_runs() -> None:
    runs = expand(load_params(REPO / "configs/paper.yaml"))["runs"]
    assert len(runs) == 55
    by_teacher = Counter(r["teacher"] for r in runs.values())
    truncated = [r for r in runs.values() if r["source"] == "truncated"]
    assert len(truncated) == 7 and {r["teacher"] for r in truncated} == {"qwen397b"}
    assert by_teacher["qwen397b"] - len(truncated) == 27
    assert by_teacher["gptoss120b"] == 21
    answer_only = [r for r in runs.values() if r["source"] == "answer-only"]
    assert len(answer_only) == 6 and all(r["student"] != "gptoss20b" for r in answer_only)
    assert not [r for r in runs.values() if r["student"] == "gptoss20b" and r["method"] == "lora"]
    assert "qwen397b-qwen9b-lora-compressed-llama70b" in runs


def test_committed_plan_matches_params() -> None:
    expected = render(expand(load_params(REPO / "params.yaml")))
    assert (REPO / "plan.yaml").read_text() == expected, "run `compress-distill plan` and commit plan.yaml"


def test_demo_plan_stages() -> None:
    plan = expand(load_params(REPO / "params.yaml"))
    assert set(plan["compress"]) == {"smol-concise", "smol-terse"}
    assert plan["truncate"] == {"smol": {"teacher": "smol", "compressor": "terse"}}
    assert plan["pull"] == {} and plan["publish"] == {}
    assert len(plan["runs"]) == 5


def test_hub_mode_replaces_trace_stages() -> None:
    data = yaml.safe_load((REPO / "params.yaml").read_text())
    data = copy.deepcopy(data)
    data["traces"] = {"source": "hub", "repo_ids": {"smol": "org/smol-traces"}, "revision": "v1"}
    plan = expand(parse_params(data))
    for family in ("generate", "compress", "judge", "truncate", "answer_only", "build", "publish"):
        assert plan[family] == {}
    assert plan["pull"] == {"smol": {"repo_id": "org/smol-traces", "revision": "v1"}}
    assert len(plan["runs"]) == 5
