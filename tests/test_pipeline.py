"""End to end: a real `dvc repro` of a shrunken demo in a temporary git repo, then commit comparison.

This is the integration test of the whole product: every stage runs for real on SmolLM2 (CPU), the built
folder loads through `datasets.load_dataset`, a second repro is a no-op, a params change re-runs only the
stages that read it, and `dvc metrics diff` / `dvc params diff` show what changed between two commits.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml

from tests.helpers.dvc_repo import copy_repo, sh

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]


def _shrink(params: dict) -> dict:
    """The demo, smaller: same stages and fan-out, fewer questions and tokens (minutes -> about two)."""
    params["prepare"]["demo"] = {"n_train": 16, "n_eval": 6}
    params["generate"]["rounds"] = 2
    params["generate"]["sampling"]["max_tokens"] = 96
    params["compress"]["sampling"]["max_tokens"] = 96
    params["judge"]["sampling"]["max_tokens"] = 96
    params["train"]["seq_len"] = 256
    params["train"]["max_steps"] = 3  # six students: what is tested is the wiring, not how well they learn
    params["evaluate"]["max_new_tokens"] = 32
    # the cap-sensitivity variants are a stage of their own, tested through their dvc command in
    # tests/stages/test_evaluate.py: here they would double every evaluation (the test's slowest part)
    params["evaluate"]["extra_caps"] = []
    return params


@pytest.fixture(scope="module")
def demo_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = copy_repo(tmp_path_factory.mktemp("demo") / "repo", _shrink)
    sh(["dvc", "repro"], repo, timeout=1500)
    return repo


def test_repro_builds_every_output(demo_repo: Path) -> None:
    from datasets import load_dataset

    plan = yaml.safe_load((demo_repo / "plan.yaml").read_text())["plan"]
    for run in plan["runs"]:
        metrics = json.loads((demo_repo / "metrics" / "eval" / f"{run}.json").read_text())
        assert {"overall", "groups", "datasets"} <= set(metrics)
        assert metrics["rows_in"] == metrics["rows_out"] + sum(metrics["rejects"].values())
        assert (demo_repo / "models" / run).is_dir()
    for family in (
        "prepare.json",
        "generate/smol.json",
        "compress/smol-terse.json",
        "judge/smol-concise.json",
        "truncate/smol.json",
        "answer_only/smol.json",
        "build/smol.json",
    ):
        m = json.loads((demo_repo / "metrics" / family).read_text())
        assert m["rows_in"] == m["rows_out"] + sum(m["rejects"].values()), family
    hub = demo_repo / "data" / "hub" / "smol"
    card = (hub / "README.md").read_text()
    assert "configs:" in card
    raw = load_dataset(str(hub), "raw", split="train")
    assert raw.num_rows == json.loads((demo_repo / "metrics/generate/smol.json").read_text())["rows_out"]
    assert (demo_repo / "reports" / "index.html").stat().st_size > 1000
    assert json.loads((demo_repo / "metrics" / "summary.json").read_text())


def test_second_repro_is_a_no_op(demo_repo: Path) -> None:
    start = time.perf_counter()
    out = sh(["dvc", "repro"], demo_repo)
    elapsed = time.perf_counter() - start
    assert "Running stage" not in out
    assert elapsed < 60, f"no-op repro took {elapsed:.1f} s"


def test_prompt_edit_reruns_only_dependent_stages(demo_repo: Path) -> None:
    prompt = demo_repo / "prompts" / "compress" / "terse.md"
    original = prompt.read_text()
    prompt.write_text(original + "\nBe brief.\n")
    try:
        out = sh(["dvc", "status", "--json"], demo_repo, stdout_only=True)
        changed = set(json.loads(out))
        assert "compress@smol-terse" in changed and "compress@smol-concise" not in changed  # its own prompt
        assert not {s for s in changed if s.startswith(("generate", "prepare", "train", "evaluate"))}
    finally:
        prompt.write_text(original)


def test_compare_commits(demo_repo: Path) -> None:
    sh(["git", "add", "-A"], demo_repo)
    sh(["git", "commit", "-qm", "demo results"], demo_repo)
    params_path = demo_repo / "params.yaml"
    params = yaml.safe_load(params_path.read_text())
    params["evaluate"]["max_new_tokens"] = 8
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))
    # only evaluation (and the report, downstream) reads evaluate.*: every run's evaluation is stale, nothing
    # upstream is
    runs = yaml.safe_load((demo_repo / "plan.yaml").read_text())["plan"]["runs"]
    stale = set(json.loads(sh(["dvc", "status", "--json"], demo_repo, stdout_only=True)))
    assert {f"evaluate@{run}" for run in runs} <= stale, stale
    assert all(s.startswith(("evaluate", "report")) for s in stale), stale
    # one evaluation re-run is enough for a metrics diff between the commits (each costs a model load): the
    # raw run's, whose student reasons past 8 tokens (an answer-only student may not)
    raw = next(run for run, item in runs.items() if item["source"] == "raw")
    out = sh(["dvc", "repro", f"evaluate@{raw}"], demo_repo)
    assert out.count("Running stage") == 1 and f"Running stage 'evaluate@{raw}'" in out, out

    params_diff = json.loads(sh(["dvc", "params", "diff", "--json"], demo_repo, stdout_only=True))
    change = params_diff["params.yaml"]["evaluate.max_new_tokens"]
    assert (change["old"], change["new"]) == (32, 8)

    metrics_diff = json.loads(sh(["dvc", "metrics", "diff", "--json"], demo_repo, stdout_only=True))
    eval_files = [f for f in metrics_diff if f.startswith("metrics/eval/")]
    assert eval_files == [f"metrics/eval/{raw}.json"], metrics_diff
    assert "overall.mean_completion_tokens" in metrics_diff[eval_files[0]]
    table = sh(["dvc", "metrics", "diff"], demo_repo)
    # every stage's metrics file is in git (a too-broad ignore rule once hid metrics/build/)
    assert "failed to load" not in table
    # the human-readable table lists the same keys
    assert "overall.mean_completion_tokens" in table
