"""Paper scale: the per-run topology (Table 11's GPU column) and the DVC graph as SLURM jobs on a real
one-node cluster on loopback (``tests/slurm_cluster.py``)."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from compress_distill.config import ConfigError, load_params, parse_params
from compress_distill.grid import graph_jobs, stage_gpus
from compress_distill.plan import expand
from compress_distill.slurm import node_gpus
from tests.helpers.dvc_repo import copy_repo, env, sh

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------ topology
def table_11_gpus(run: dict[str, str]) -> int:
    """The GPU column of the paper's Table 11, as the paper states it (Appendix H.1)."""
    if run["student"] == "qwen08b":
        return 4
    if run["student"] == "gptoss20b":
        return 8
    return 4 if run["source"].startswith("compressed-") else 8  # 8B/9B


def test_paper_topology_reproduces_table_11() -> None:
    params = load_params(REPO / "configs/paper.yaml")
    runs = expand(params)["runs"]
    assert len(runs) == 55
    assert {name: r["gpus"] for name, r in runs.items()} == {
        name: table_11_gpus(r) for name, r in runs.items()
    }
    assert sum(r["gpus"] for r in runs.values()) == 312
    # global batch = micro-batch 1 x grad-accum 8 x GPUs: the paper's 32 or 64
    assert {
        params.train.micro_batch_size * params.train.grad_accum * r["processes"] for r in runs.values()
    } == {32, 64}
    strategies = Counter((r["student"] == "qwen08b", r["method"], r["strategy"]) for r in runs.values())
    # LoRA: DDP; full fine-tuning of 8B/9B/20B: FSDP2 full shard; the 0.8B fits unsharded
    assert set(strategies) == {
        (True, "lora", "ddp"),
        (True, "full", "ddp"),
        (False, "lora", "ddp"),
        (False, "full", "fsdp2"),
    }
    fsdp = runs["qwen397b-gptoss20b-full-raw"]["launch"]
    assert fsdp.startswith(
        "accelerate launch --config_file configs/accelerate_fsdp2.yaml --num_machines 1 --num_processes 8 "
    )
    assert fsdp.endswith(" -m compress_distill.cli train")
    assert "--num_processes 4 " in runs["qwen397b-llama8b-lora-compressed-llama70b"]["launch"]


def test_every_model_stage_asks_the_gpus_its_engine_uses() -> None:
    """Issue 11: each job's --gres is the tensor x data parallel size of the engine it serves; verify and the
    evaluate_cap variants used to ask for none."""
    data = yaml.safe_load((REPO / "configs/paper.yaml").read_text(encoding="utf-8"))
    data["verify"] = {"engine": {**data["judge"]["engine"]}}
    data["evaluate"]["extra_caps"] = [16384]
    params = parse_params(data)
    plan = expand(params)
    run = "qwen397b-llama8b-lora-raw"
    asked = {
        stage: stage_gpus(stage, params, plan)
        for stage in (
            "prepare",
            "generate@qwen397b",
            "compress@qwen397b-llama70b",
            "compress@qwen397b-ministral14b",
            "judge@qwen397b-ministral14b",
            "verify@qwen397b",
            f"train@{run}",
            f"evaluate@{run}",
            f"evaluate_cap@{run}-cap16384",
            "report",
        )
    }
    assert asked == {
        "prepare": 0,
        "generate@qwen397b": 8,  # TP8
        "compress@qwen397b-llama70b": 8,  # TP4 x DP2
        "compress@qwen397b-ministral14b": 8,  # TP1 x DP8
        "judge@qwen397b-ministral14b": 8,
        "verify@qwen397b": 8,
        f"train@{run}": 8,
        f"evaluate@{run}": 8,  # TP1 x DP8: every GPU of the node
        f"evaluate_cap@{run}-cap16384": 8,
        "report": 0,
    }


def test_demo_runs_one_process_without_topology() -> None:
    runs = expand(load_params(REPO / "params.yaml"))["runs"]
    assert {(r["gpus"], r["processes"], r["strategy"], r["launch"]) for r in runs.values()} == {
        (0, 1, "single", "compress-distill train")
    }


def test_one_runs_gpu_count_changes_that_run_only() -> None:
    data = yaml.safe_load((REPO / "configs/paper.yaml").read_text())
    before = expand(parse_params(copy.deepcopy(data)))["runs"]
    data["topology"]["train"].insert(
        0, {"student": "llama8b", "method": "full", "source": "raw", "teacher": "qwen397b", "gpus": 4}
    )
    after = expand(parse_params(data))["runs"]
    changed = [name for name in before if before[name] != after[name]]
    assert changed == ["qwen397b-llama8b-full-raw"]
    assert after[changed[0]]["gpus"] == 4 and "--num_processes 4 " in after[changed[0]]["launch"]


@pytest.mark.parametrize(
    ("rule", "gpus_per_node", "expected"),
    [
        ({"gpus": 3}, 8, "topology: train[0] asks 3 GPUs but a node has 8 (topology.gpus_per_node)"),
        ({"gpus": 16}, 8, "a run uses one node, so its GPUs must divide the node's"),
        ({"student": "qwen8b", "gpus": 4}, 8, "topology.train[0].student 'qwen8b' matches no student"),
        ({"gpus": 0, "processes": 2, "strategy": "fsdp2"}, 8, "strategy 'fsdp2' needs GPUs"),
        ({"gpus": 4, "processes": 2}, 8, "a GPU run starts one rank per GPU"),
    ],
)
def test_topology_errors_name_the_key_and_the_fix(
    rule: dict[str, Any], gpus_per_node: int, expected: str
) -> None:
    data = yaml.safe_load((REPO / "configs/paper.yaml").read_text())
    data["topology"] = {"gpus_per_node": gpus_per_node, "train": [rule]}
    with pytest.raises(ConfigError) as err:
        parse_params(data)
    assert expected in str(err.value)


# ------------------------------------------------------------------------------------------ job graph
EDGES = {"a": [], "b": ["a"], "c": ["b"], "d": ["a"], "e": ["c", "d"]}


def test_stale_stages_and_their_downstream_become_jobs_in_dag_order() -> None:
    jobs = graph_jobs(EDGES, {"b"}, lambda s: 2 if s == "c" else 0)
    assert [j.stage for j in jobs] == ["b", "c", "e"]
    by = {j.stage: j for j in jobs}
    assert by["b"].after == [] and by["c"].after == ["b"] and by["e"].after == ["c"]  # d is up to date
    assert by["e"].upstream == ["a", "b", "d", "c"] and by["c"].gpus == 2
    # a second submission skips what an earlier one completed or queued
    assert [j.stage for j in graph_jobs(EDGES, {"b"}, lambda s: 0, skip=frozenset({"b"}))] == ["c", "e"]


def test_gpus_of_a_node_from_sinfo_gres() -> None:
    assert node_gpus("gpu:8") == 8
    assert node_gpus("gpu:h100:8(S:0-1)") == 8
    assert node_gpus("gpu:a100:4,gpu:h100:4(S:0),shard:2") == 8
    assert node_gpus("(null)") == 0


# ------------------------------------------------------------------------------------------ on SLURM
def tiny_demo(params: dict[str, Any]) -> dict[str, Any]:
    """The demo shrunk to its smallest full pipeline: one compressor, one run, a handful of tokens."""
    params["prepare"]["demo"] = {"n_train": 8, "n_eval": 3}
    params["compressors"] = {"terse": params["compressors"]["terse"]}
    params["compress"]["prompts"] = {"terse": "prompts/compress/terse.md"}
    params["generate"]["rounds"] = 1
    params["generate"]["sampling"]["max_tokens"] = 128  # fewer: SmolLM2 rarely finishes, nothing to train on
    for section in ("compress", "judge"):
        params[section]["sampling"]["max_tokens"] = 64
    params["train"].update({"seq_len": 256, "max_steps": 1})
    params["evaluate"]["max_new_tokens"] = 16
    params["report"]["bootstrap_samples"] = 10
    params["grid"]["sources"] = ["raw"]
    params.pop("verify", None)  # beyond-the-paper stages stay out: the 10 stages of the paper's pipeline
    params["evaluate"]["extra_caps"] = []
    return params


@pytest.fixture(scope="module")
def sequential(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """What a plain sequential `dvc repro` of the tiny demo computes: the reference both executors must match
    (run once for the module: each full run of the pipeline costs minutes on 2 cores)."""
    repo = copy_repo(tmp_path_factory.mktemp("sequential") / "repo", tiny_demo)
    sh(["dvc", "repro"], repo, timeout=1500)
    return outcome(repo / "metrics")


def grid(
    repo: Path, *args: str, extra_env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["compress-distill", "grid", *args],
        cwd=repo, env=env(extra_env), capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


def queue() -> list[str]:
    return subprocess.run(
        ["squeue", "-h", "-o", "%i"], capture_output=True, text=True, check=True
    ).stdout.split()


@pytest.mark.slow
def test_bad_input_fails_in_one_line_before_anything_is_submitted(
    tmp_path: Path, slurm: dict[str, str]
) -> None:
    def gpu_run(params: dict[str, Any]) -> dict[str, Any]:
        params = tiny_demo(params)
        params["topology"] = {"train": [{"gpus": 4}]}  # the loopback node has 2 GPUs
        return params

    repo = copy_repo(tmp_path / "repo", gpu_run)
    before = queue()
    cases = {
        ("--partition", "nope"): "unknown SLURM partition 'nope': this cluster has debug",
        (): "stage train@smol-smol-lora-raw asks 4 GPUs but the largest node of partition 'debug' has 2",
    }
    for args, message in cases.items():
        done = grid(repo, "submit", *args)
        assert (done.returncode, done.stdout) == (2, ""), done.stderr
        assert done.stderr.count("\n") == 1 and message in done.stderr, done.stderr
    # no sbatch on PATH: a PATH holding only git and the venv's tools
    bare = tmp_path / "bin"
    bare.mkdir()
    (bare / "git").symlink_to(shutil.which("git") or "/usr/bin/git")
    done = grid(repo, "submit", extra_env={"PATH": f"{env()['PATH'].split(':')[0]}:{bare}"})
    assert done.returncode == 2 and "sbatch not found on PATH" in done.stderr and done.stderr.count("\n") == 1
    assert queue() == before
    # --dry-run needs no cluster: it writes the scripts, --gres from the topology
    done = grid(repo, "submit", "--dry-run", "--partition", "gpu", "--time", "1:00:00")
    assert done.returncode == 0, done.stderr
    script = (repo / ".dvc/tmp/grid/scripts/train@smol-smol-lora-raw.sh").read_text()
    assert "#SBATCH --gres=gpu:4\n" in script and "#SBATCH --partition=gpu\n" in script
    assert "#SBATCH --time=1:00:00\n" in script
    assert "--gres" not in (repo / ".dvc/tmp/grid/scripts/prepare.sh").read_text()
    assert queue() == before


def outcome(metrics_dir: Path) -> dict[str, Any]:
    """What a run computed (row accounting, losses, accuracy), without timings."""
    keep = (
        "rows_in",
        "rows_out",
        "rejects",
        "final_loss",
        "first_loss",
        "steps",
        "trained_tokens",
        "overall",
    )
    return {
        str(p.relative_to(metrics_dir)): {k: v for k, v in json.loads(p.read_text()).items() if k in keep}
        for p in sorted(metrics_dir.rglob("*.json"))
    }


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_grid_on_slurm_then_dvc_repro_restores_without_running(
    tmp_path: Path, slurm: dict[str, str], sequential: dict[str, Any]
) -> None:
    repo = copy_repo(tmp_path / "grid", tiny_demo)
    done = grid(repo, "submit", "--executor", "slurm")
    assert done.returncode == 0, done.stderr
    # prepare, generate, compress, judge, truncate, answer_only, build, train, evaluate, report
    assert "submitted 10 jobs" in done.stdout, done.stdout
    deadline = time.monotonic() + 1500
    while True:
        status = grid(repo, "status")
        if status.returncode == 0 or "FAILED" in status.stdout or time.monotonic() > deadline:
            break
        time.sleep(5)
    assert status.returncode == 0, status.stdout + status.stderr
    assert status.stdout.count("COMPLETED") == 10
    # a second submission of the same commit submits nothing new
    again = grid(repo, "submit")
    assert (
        again.returncode == 0
        and "submitted 0 jobs" in again.stdout
        and "(10 done or queued earlier)" in again.stdout
    )
    # the main workspace: every stage comes back from the run-cache, no command runs
    repro = sh(["dvc", "repro"], repo)
    assert "Running stage" not in repro, repro
    assert repro.count("is cached - skipping run") == 10, repro
    assert json.loads(sh(["dvc", "status", "--json"], repo).strip().splitlines()[-1]) == {}
    assert not list((repo / ".dvc/tmp/grid/worktrees").iterdir())  # every job removed its worktree
    assert json.loads((repo / "metrics/train/smol-smol-lora-raw.json").read_text())["rows_out"] > 0
    # the same numbers as a sequential run
    assert outcome(repo / "metrics") == sequential


# ------------------------------------------------------------------------------------------ packing
def test_packer_shares_a_node_between_two_four_gpu_runs_and_cancels_after_a_failure() -> None:
    from compress_distill.grid import Job, Packer, simulate

    jobs = [
        Job("up", 8, [], []),
        Job("a", 4, ["up"], ["up"]),
        Job("b", 4, ["up"], ["up"]),
        Job("c", 8, ["up"], ["up"]),
        Job("d", 0, ["a"], ["up", "a"]),
    ]
    hours = {"up": 2.0, "a": 1.0, "b": 1.0, "c": 1.0, "d": 0.5}
    placed = {p.stage: p for p in simulate(jobs, hours, nodes=1, gpus_per_node=8)}
    assert (placed["a"].start, placed["b"].start) == (2.0, 2.0)  # side by side on the two halves
    assert {placed["a"].gpus, placed["b"].gpus} == {(0, 1, 2, 3), (4, 5, 6, 7)}
    assert placed["c"].start == 3.0 and placed["d"].start == 3.0 and placed["d"].gpus == ()
    assert max(p.end for p in placed.values()) == 4.0
    packer = Packer(jobs, nodes=1, gpus_per_node=8, weight=hours.__getitem__)
    assert [p.stage for p in packer.start()] == ["up"]
    packer.finish("up")
    assert sorted(p.stage for p in packer.start()) == ["a", "b"]  # c (8 GPUs) waits for the node
    assert packer.finish("a", ok=False) == ["d"]  # its dependent is cancelled, b and c go on
    packer.finish("b")
    assert [p.stage for p in packer.start()] == ["c"]
    packer.finish("c")
    assert packer.finished and packer.failed == {"a", "d"}


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_local_executor_runs_the_graph_in_parallel_processes_then_dvc_repro_runs_nothing(
    tmp_path: Path, sequential: dict[str, Any]
) -> None:
    repo = copy_repo(tmp_path / "local", tiny_demo)
    done = grid(repo, "submit", "--executor", "local", "--jobs", "2", timeout=1500)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("COMPLETED") == 10, done.stdout
    # compress and answer_only both wait only for generate: with 2 slots they overlap
    logs = repo / ".dvc/tmp/grid/logs"
    assert {p.name.split(".")[0] for p in logs.iterdir()} >= {"compress@smol-terse", "answer_only@smol"}
    repro = sh(["dvc", "repro"], repo)
    assert "Running stage" not in repro and repro.count("is cached - skipping run") == 10, repro
    assert not list((repo / ".dvc/tmp/grid/worktrees").iterdir())
    assert outcome(repo / "metrics") == sequential  # parallel processes, the same numbers


def test_every_stage_keeps_dvcs_run_cache() -> None:
    """An uncached plain out (``cache: false`` under ``outs``) switches DVC's run-cache off for its stage
    (dvc/stage/__init__.py, ``no_cache_outs``): after a grid run, `dvc repro` would run that stage again.
    Uncached metrics and plots keep it."""
    from dvc.repo import Repo

    with Repo(str(REPO)) as repo:
        plain = {
            s.addressing: [o.def_path for o in s.outs if not o.use_cache and not (o.is_metric or o.is_plot)]
            for s in repo.index.stages
        }
    assert {stage: outs for stage, outs in plain.items() if outs} == {}


def test_status_reports_a_failed_job_with_its_log_tail(tmp_path: Path) -> None:
    from compress_distill.grid import CANCELLED, Job, Submission, _save, status_lines

    state = tmp_path / "grid"
    for d in ("status", "logs"):
        (state / d).mkdir(parents=True)
    jobs = {
        "prepare": Job("prepare", 0, [], [], job_id="1", log=str(state / "logs/prepare.1.log")),
        "generate@t": Job(
            "generate@t", 2, ["prepare"], ["prepare"], job_id="2", log=str(state / "logs/g.2.log")
        ),
        "build@t": Job("build@t", 0, ["generate@t"], ["prepare", "generate@t"], job_id="3"),
    }
    _save(Submission("c0ffee" * 7, "local", jobs), state)
    (state / "status/prepare.1.rc").write_text("0\n")
    (state / "status/generate@t.2.rc").write_text("1\n")
    (state / "status/build@t.3.rc").write_text(CANCELLED + "\n")
    Path(jobs["generate@t"].log).write_text(
        "".join(f"line {i}\n" for i in range(40)) + "error: CUDA out of memory\n"
    )
    lines, done, failed = status_lines(state)
    assert (done, failed) == (False, True)
    text = "\n".join(lines)
    assert (
        "COMPLETED" in lines[1] and "FAILED (exit 1)" in lines[2] and str(state / "logs/g.2.log") in lines[2]
    )
    assert (
        "    | error: CUDA out of memory" in text and "    | line 21" in text and "    | line 20" not in text
    )
    assert "CANCELLED (a job it depends on failed)" in text


@pytest.mark.slow
def test_a_failed_slurm_job_cancels_its_dependents(tmp_path: Path, slurm: dict[str, str]) -> None:
    from compress_distill.grid import Job, job_state
    from compress_distill.slurm import sbatch

    scripts = {}
    for name, body in {"bad": "exit 3", "after": "true"}.items():
        scripts[name] = tmp_path / f"{name}.sh"
        scripts[name].write_text(f"#!/bin/bash\n#SBATCH --output={tmp_path}/{name}.log\n{body}\n")
    bad = Job("bad", 0, [], [], job_id=sbatch(scripts["bad"], []))
    after = Job("after", 0, ["bad"], ["bad"], job_id=sbatch(scripts["after"], [str(bad.job_id)]))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and job_state(after, tmp_path) in ("PENDING", "RUNNING"):
        time.sleep(1)
    assert job_state(bad, tmp_path) == "FAILED"  # no exit record (not a grid script): the scheduler's word
    assert job_state(after, tmp_path) == "CANCELLED"
