"""End to end: a real `dvc repro` of a shrunken demo in a temporary git repo, then commit comparison.

This is the integration test of the whole product: every stage runs for real on SmolLM2 (CPU), the built
folder loads through `datasets.load_dataset`, a second repro is a no-op, a params change re-runs only the
stages that read it, and `dvc metrics diff` / `dvc params diff` show what changed between two commits.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]


def _sh(args: list[str], cwd: Path, timeout: float = 900, stdout_only: bool = False) -> str:
    env = {
        **os.environ,
        "PATH": f"{BIN}:{os.environ['PATH']}",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }
    proc = subprocess.run(
        args, check=False, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    if proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
        )
    return proc.stdout if stdout_only else proc.stdout + proc.stderr


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
    repo = tmp_path_factory.mktemp("demo") / "repo"
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    for rel in tracked:
        if rel.startswith(("tests/", "bench/")) or not (REPO / rel).exists():
            continue
        dest = repo / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, dest)
    params_path = repo / "params.yaml"
    params_path.write_text(yaml.safe_dump(_shrink(yaml.safe_load(params_path.read_text())), sort_keys=False))
    _sh(["git", "init", "-q"], repo)
    _sh(["compress-distill", "plan"], repo)
    _sh(["git", "add", "-A"], repo)
    _sh(["git", "commit", "-qm", "demo"], repo)
    _sh(["dvc", "repro"], repo, timeout=1500)
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
    out = _sh(["dvc", "repro"], demo_repo)
    elapsed = time.perf_counter() - start
    assert "Running stage" not in out
    assert elapsed < 60, f"no-op repro took {elapsed:.1f} s"


def test_prompt_edit_reruns_only_dependent_stages(demo_repo: Path) -> None:
    prompt = demo_repo / "prompts" / "compress" / "terse.md"
    original = prompt.read_text()
    prompt.write_text(original + "\nBe brief.\n")
    try:
        out = _sh(["dvc", "status", "--json"], demo_repo, stdout_only=True)
        changed = set(json.loads(out))
        assert "compress@smol-terse" in changed and "compress@smol-concise" not in changed  # its own prompt
        assert not {s for s in changed if s.startswith(("generate", "prepare", "train", "evaluate"))}
    finally:
        prompt.write_text(original)


def test_compare_commits(demo_repo: Path) -> None:
    _sh(["git", "add", "-A"], demo_repo)
    _sh(["git", "commit", "-qm", "demo results"], demo_repo)
    params_path = demo_repo / "params.yaml"
    params = yaml.safe_load(params_path.read_text())
    params["evaluate"]["max_new_tokens"] = 8
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))
    # only evaluation (and the report, downstream) reads evaluate.*: every run's evaluation is stale, nothing
    # upstream is
    runs = yaml.safe_load((demo_repo / "plan.yaml").read_text())["plan"]["runs"]
    stale = set(json.loads(_sh(["dvc", "status", "--json"], demo_repo, stdout_only=True)))
    assert {f"evaluate@{run}" for run in runs} <= stale, stale
    assert all(s.startswith(("evaluate", "report")) for s in stale), stale
    # one evaluation re-run is enough for a metrics diff between the commits (each costs a model load): the
    # raw run's, whose student reasons past 8 tokens (an answer-only student may not)
    raw = next(run for run, item in runs.items() if item["source"] == "raw")
    out = _sh(["dvc", "repro", f"evaluate@{raw}"], demo_repo)
    assert out.count("Running stage") == 1 and f"Running stage 'evaluate@{raw}'" in out, out

    params_diff = json.loads(_sh(["dvc", "params", "diff", "--json"], demo_repo, stdout_only=True))
    change = params_diff["params.yaml"]["evaluate.max_new_tokens"]
    assert (change["old"], change["new"]) == (32, 8)

    metrics_diff = json.loads(_sh(["dvc", "metrics", "diff", "--json"], demo_repo, stdout_only=True))
    eval_files = [f for f in metrics_diff if f.startswith("metrics/eval/")]
    assert eval_files == [f"metrics/eval/{raw}.json"], metrics_diff
    assert "overall.mean_completion_tokens" in metrics_diff[eval_files[0]]
    table = _sh(["dvc", "metrics", "diff"], demo_repo)
    # every stage's metrics file is in git (a too-broad ignore rule once hid metrics/build/)
    assert "failed to load" not in table
    # the human-readable table lists the same keys
    assert "overall.mean_completion_tokens" in table
