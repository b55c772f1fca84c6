"""The beyond-the-paper axes in one shrunken grid under a real ``dvc repro`` on the CPU demo models:
``train.budget: flops`` (every run trains to the same FLOPs), source ``ift`` paired with a second student
(``students:`` axis, the ift-only student), ``grid.seeds`` (mean and spread per run group) and the generic-vs-
domain compression prompts (the per-domain gap table).  One repro for the module: each costs minutes on 2
cores."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.dvc_repo import copy_repo, sh

FLOPS_BUDGET = 3e11  # ~370 input tokens of SmolLM2-135M (6 x 134.5M params per token): 2-3 packed bins
SEEDS = (0, 1)
SOURCES = ("raw", "compressed-concise", "compressed-domain")  # student smol; student big trains on ift
# the spread is measured on raw alone (every other group runs seed 0 only: each run costs ~25 s of 2 cores)
RUNS = (
    [f"smol-smol-lora-raw-s{seed}" for seed in SEEDS]
    + [f"smol-smol-lora-{src}-s0" for src in SOURCES[1:]]
    + ["smol-big-lora-ift-s0"]
)


def shrunken(params: dict[str, Any]) -> dict[str, Any]:
    """The demo shrunk to the four axes: a few questions, tokens and training steps per stage."""
    engine = params["compressors"]["concise"]
    params["prepare"]["demo"] = {"n_train": 8, "n_eval": 3}
    params["generate"].update({"rounds": 1})
    params["generate"]["sampling"]["max_tokens"] = 128
    # generic vs domain: one engine, two prompt sets (compress.prompt_sets)
    params["compressors"] = {"concise": engine, "domain": engine}
    params["compress"].update(
        {
            "prompts": {},
            "prompt_sets": {"concise": "generic", "domain": "domain"},
            "domain_prompts": {
                "math": "prompts/compress/math.md",
                "commonsense": "prompts/compress/commonsense.md",
            },
        }
    )
    for section in ("compress", "judge"):
        params[section]["sampling"]["max_tokens"] = 48
    params["ift"] = {"sampling": {"temperature": 0.7, "top_p": 0.95, "max_tokens": 24, "seed": 0}}
    params.pop("truncate")
    params.pop("verify")
    params["students"]["big"] = {"model": params["students"]["smol"]["model"]}  # the "larger" student
    params["train"].update(
        {
            "seq_len": 256,
            "max_steps": None,
            "budget": "flops",
            "flops_budget": FLOPS_BUDGET,
            "val_fraction": 0,
        }
    )
    params["evaluate"].update({"max_new_tokens": 12, "extra_caps": []})
    params["report"]["bootstrap_samples"] = 10
    params["grid"] = {
        "teachers": ["smol"],
        "students": ["smol", "big"],
        "methods": ["lora"],
        "sources": [*SOURCES, "ift"],
        "seeds": list(SEEDS),
        # reasoning traces on the small student, instruction tuning on the "larger" one, at equal FLOPs
        "exclude": [{"student": "smol", "source": "ift"}]
        + [{"student": "big", "source": src} for src in SOURCES]
        + [{"source": src, "seed": seed} for src in [*SOURCES[1:], "ift"] for seed in SEEDS[1:]],
    }
    return params


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = copy_repo(tmp_path_factory.mktemp("beyond") / "repo", shrunken)
    sh(["dvc", "repro"], repo, timeout=2400)
    return repo


def rows_of(md: Path) -> list[list[str]]:
    lines = [ln for ln in md.read_text().splitlines() if ln.startswith("| ")][1:]
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in lines]


def metrics(repo: Path, kind: str, name: str) -> dict[str, Any]:
    return json.loads((repo / "metrics" / kind / f"{name}.json").read_text())


@pytest.mark.slow
@pytest.mark.timeout(2700)
def test_every_run_trains_to_the_same_flops(repo: Path) -> None:
    plan = sh(["dvc", "status"], repo)
    assert "up to date" in plan.lower()
    for run in RUNS:
        m = metrics(repo, "train", run)
        assert m["flops_budget"] == FLOPS_BUDGET, run
        # reached: at the budget, at most one packed bin (seq_len 256 tokens) above it
        assert FLOPS_BUDGET <= m["train_flops"] < FLOPS_BUDGET + 6 * m["model_params"] * 256, run
    short = metrics(repo, "train", "smol-big-lora-ift-s0")  # short rows: more passes for the same FLOPs
    assert short["epochs_effective"] > metrics(repo, "train", "smol-smol-lora-raw-s0")["epochs_effective"]


@pytest.mark.slow
@pytest.mark.timeout(2700)
def test_ift_rows_are_graded_answers_without_reasoning(repo: Path) -> None:
    m = metrics(repo, "ift", "smol")
    assert m["rows_in"] == metrics(repo, "generate", "smol")["rows_out"]  # the raw traces' questions
    assert m["rows_in"] == m["rows_out"] + sum(m["rejects"].values())
    assert m["rows_out"] >= 1
    import pyarrow.parquet as pq

    ift = pq.read_table(repo / "data/hub/smol/ift").to_pylist()
    assert len(ift) == m["rows_out"] and {r["reasoning"] for r in ift} == {""}
    assert {r["source"] for r in ift} == {"ift"}
    assert metrics(repo, "eval", "smol-big-lora-ift-s0")["overall"]["n"] == 3
    assert not (repo / "metrics/eval/smol-big-lora-ift-s1.json").exists()  # excluded by seed


@pytest.mark.slow
@pytest.mark.timeout(2700)
def test_seeds_train_apart_and_the_report_gives_mean_and_spread(repo: Path) -> None:
    s0, s1 = (metrics(repo, "train", f"smol-smol-lora-raw-s{s}") for s in SEEDS)
    assert (s0["seed"], s1["seed"]) == SEEDS
    assert s0["final_loss"] != s1["final_loss"]  # another order and initialisation
    rows = {(r[2], r[1]): r for r in rows_of(repo / "reports/table_seed_spread.md")}
    assert set(rows) == {("Raw", "smol"), ("concise comp.", "smol"), ("domain comp.", "smol"), ("IFT", "big")}
    raw = rows[("Raw", "smol")]
    assert raw[4] == "0, 1" and raw[5] == "2"
    accs = [metrics(repo, "eval", f"smol-smol-lora-raw-s{s}")["overall"]["accuracy"] for s in SEEDS]
    assert raw[6] == f"{sum(accs) / 2:.3f}"
    assert raw[7] == f"{abs(accs[0] - accs[1]) / 2**0.5:.3f}"  # sample std of two values
    page = (repo / "reports/index.html").read_text()
    assert 'data-table="table_seed_spread"' in page


@pytest.mark.slow
@pytest.mark.timeout(2700)
def test_generic_and_domain_prompts_compress_and_the_gap_table_compares_them(repo: Path) -> None:
    lock = (repo / "dvc.lock").read_text()
    assert "prompts/compress/math.md" in lock and "prompts/compress/commonsense.md" in lock
    gaps = {r[2]: r for r in rows_of(repo / "reports/table_domain_gaps.md")}
    assert {"concise comp.", "domain comp."} <= set(gaps)
    header = (repo / "reports/table_domain_gaps.md").read_text()
    assert "Math" in header
    assert 'data-table="table_domain_gaps"' in (repo / "reports/index.html").read_text()
