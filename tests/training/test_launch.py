"""The train topology under a real ``dvc repro``: plan writes the launch into the stage command, 2 gloo ranks
(``accelerate launch``, DDP) end with the weights of one process accumulating both ranks' micro-batches, and a
run's GPU count is a dep of that run only."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from safetensors.torch import load_file

from tests.helpers.dvc_repo import Background, copy_repo, sh
from tests.helpers.training import trace_rows, write_source

RUN = "smol-smol-lora-raw"
STAGE = f"train@{RUN}"


def tiny_train(grad_accum: int, topology: dict[str, Any]) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def edit(params: dict[str, Any]) -> dict[str, Any]:
        params["train"].update(
            {
                "seq_len": 96,
                "micro_batch_size": 1,
                "grad_accum": grad_accum,
                "max_steps": 2,
                "device": "cpu",
                "save_every_steps": 100,
            }
        )
        params["train"]["lora"].update({"r": 4, "alpha": 8, "dropout": 0.0, "learning_rate": 0.003})
        params["topology"] = topology
        return params

    return edit


def stage_status(repo: Path, stage: str) -> Any:
    return json.loads(sh(["dvc", "status", "--json", stage], repo).strip().splitlines()[-1])


@pytest.mark.slow
def test_two_gloo_ranks_under_dvc_repro_match_one_process(tmp_path: Path) -> None:
    rows = trace_rows(6, max_steps=2)
    # one process accumulating 2 micro-batches vs 2 ranks x 1 micro-batch: the same 2 bins per step
    single = copy_repo(tmp_path / "single", tiny_train(2, {}))
    ddp = copy_repo(
        tmp_path / "ddp", tiny_train(1, {"train": [{"method": "lora", "gpus": 0, "processes": 2}]})
    )
    started = {}
    for repo in (single, ddp):
        write_source(repo / "data" / "hub", "smol", "raw", rows)
        # independent repos, one thread per process: the two runs share the cores instead of queueing
        args = ["dvc", "repro", "--single-item", STAGE]
        log = repo.with_suffix(".log")
        started[repo] = Background(args, repo, log, extra_env={"OMP_NUM_THREADS": "1"})
    try:
        out = {repo: run.wait(timeout=900) for repo, run in started.items()}
    finally:
        for run in started.values():
            run.stop()
    lock = {r: yaml.safe_load((r / "dvc.lock").read_text())["stages"][STAGE]["cmd"] for r in (single, ddp)}
    assert lock[single].startswith("compress-distill train ")
    # --multi_gpu makes accelerate start torchrun workers; with train.device cpu they form a gloo (MULTI_CPU)
    # group.  (`--cpu --num_processes 2` would start a single process.)
    assert lock[ddp].startswith("accelerate launch --multi_gpu --num_machines 1 --num_processes 2 ")
    assert out[ddp].count(f"{RUN}: 2 steps") == 1  # only the main rank reports
    # the same weights: same schedule, token-weighted loss scaled by world size (dropout off: per-rank RNG)
    a, b = (load_file(str(r / "models" / RUN / "adapter_model.safetensors")) for r in (single, ddp))
    assert a.keys() == b.keys() and len(a) > 0
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-5
    moved = max(float(b[k].abs().max()) for k in b if "lora_B" in k)
    assert moved > 1e-4  # lora_B starts at zero: the comparison is not between two untouched adapters
    one, two = (json.loads((r / "metrics" / "train" / f"{RUN}.json").read_text()) for r in (single, ddp))
    assert (one["world_size"], two["world_size"]) == (1, 2)
    assert one["global_batch_size"] == two["global_batch_size"] == 2
    assert two["trained_tokens"] == one["trained_tokens"]
    assert two["final_loss"] == pytest.approx(one["final_loss"], rel=1e-5)

    # another run's GPU count is not a dep of this run; its own is
    params = yaml.safe_load((ddp / "params.yaml").read_text())
    params["topology"]["train"].insert(0, {"source": "answer-only", "gpus": 0, "processes": 2})
    (ddp / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh(["compress-distill", "plan"], ddp)
    assert stage_status(ddp, STAGE) == {}
    params["topology"]["train"] = [{"source": "answer-only", "gpus": 0, "processes": 2}]
    (ddp / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh(["compress-distill", "plan"], ddp)
    assert STAGE in stage_status(ddp, STAGE)
