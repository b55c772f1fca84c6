"""Paper scale: the per-run topology (Table 11's GPU column) and the DVC graph as SLURM jobs on a real
one-node cluster on loopback (``tests/slurm_cluster.py``)."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from dvc_repo import copy_repo, env, sh

from compress_distill.config import ConfigError, load_params, parse_params
from compress_distill.grid import _node_gpus, graph_jobs
from compress_distill.plan import expand

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
    assert {name: r["gpus"] for name, r in runs.items()} == {name: table_11_gpus(r) for name, r in runs.items()}
    assert sum(r["gpus"] for r in runs.values()) == 312
    # global batch = micro-batch 1 x grad-accum 8 x GPUs: the paper's 32 or 64
    assert {params.train.micro_batch_size * params.train.grad_accum * r["processes"] for r in runs.values()} == {32, 64}
    strategies = Counter((r["student"] == "qwen08b", r["method"], r["strategy"]) for r in runs.values())
    # LoRA: DDP; full fine-tuning of 8B/9B/20B: FSDP2 full shard; the 0.8B fits unsharded
    assert set(strategies) == {(True, "lora", "ddp"), (True, "full", "ddp"), (False, "lora", "ddp"), (False, "full", "fsdp2")}
    fsdp = runs["qwen397b-gptoss20b-full-raw"]["launch"]
    assert fsdp.startswith("accelerate launch --config_file configs/accelerate_fsdp2.yaml --num_machines 1 --num_processes 8 ")
    assert fsdp.endswith(" -m compress_distill.cli train")
    assert "--num_processes 4 " in runs["qwen397b-llama8b-lora-compressed-llama70b"]["launch"]


def test_demo_runs_one_process_without_topology() -> None:
    runs = expand(load_params(REPO / "params.yaml"))["runs"]
    assert {(r["gpus"], r["processes"], r["strategy"], r["launch"]) for r in runs.values()} == {
        (0, 1, "single", "compress-distill train")
    }


def test_one_runs_gpu_count_changes_that_run_only() -> None:
    data = yaml.safe_load((REPO / "configs/paper.yaml").read_text())
    before = expand(parse_params(copy.deepcopy(data)))["runs"]
    data["topology"]["train"].insert(0, {"student": "llama8b", "method": "full", "source": "raw", "teacher": "qwen397b", "gpus": 4})
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
def test_topology_errors_name_the_key_and_the_fix(rule: dict[str, Any], gpus_per_node: int, expected: str) -> None:
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
    assert _node_gpus("gpu:8") == 8
    assert _node_gpus("gpu:h100:8(S:0-1)") == 8
    assert _node_gpus("gpu:a100:4,gpu:h100:4(S:0),shard:2") == 8
    assert _node_gpus("(null)") == 0
