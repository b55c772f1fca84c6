"""Data parallelism of the engines without a GPU: the hf backend's batches and replica devices, the threads that
run them, and the check of tensor x data parallel sizes against the GPUs a process sees (issue 11)."""

from __future__ import annotations

import threading
import time

import pytest

from compress_distill.config import backend_config
from compress_distill.llm import ChatRequest
from compress_distill.llm.base import BackendError, check_parallel_fit, deal
from compress_distill.llm.hf import plan_batches, replica_devices, run_on_replicas


def _req(max_tokens: int = 8, schema: dict | None = None) -> ChatRequest:
    return ChatRequest([{"role": "user", "content": "q"}], max_tokens=max_tokens, json_schema=schema)


def test_batches_group_by_schema_and_budget_longest_prompt_first() -> None:
    schema = {"type": "object"}
    requests = [_req(), _req(), _req(schema=schema), _req(), _req(max_tokens=50), _req()]
    lens = [10, 30, 5, 20, 40, 95]
    batches, too_long = plan_batches(requests, lens, max_positions=100, batch_size=2)
    # request 5 has 5 positions left: its budget is 5, a group of its own; request 4 is capped at 50 - fits
    assert batches == [
        ([1, 3], 8, ""),
        ([0], 8, ""),
        ([2], 8, '{"type": "object"}'),
        ([4], 50, ""),
        ([5], 5, ""),
    ]
    assert too_long == []
    batches, too_long = plan_batches([_req(), _req()], [100, 3], max_positions=100, batch_size=4)
    assert batches == [([1], 8, "")] and too_long == [0]
    # without a known context every request keeps its own max_tokens
    assert plan_batches([_req(max_tokens=9)], [10_000], None, 1) == ([([0], 9, "")], [])


def test_replica_devices_one_whole_model_per_cuda_device() -> None:
    assert replica_devices("cpu", 1, 0) == ["cpu"] and replica_devices("cuda", 1, 8) == ["cuda"]
    assert replica_devices("cuda", 4, 8) == ["cuda:0", "cuda:1", "cuda:2", "cuda:3"]
    with pytest.raises(
        BackendError, match="data_parallel_size 4 puts one replica on each of 4 CUDA devices but"
    ):
        replica_devices("cuda", 4, 2)
    with pytest.raises(BackendError, match="this process sees 0"):
        replica_devices("cpu", 2, 0)


def test_every_batch_runs_once_on_its_dealt_replica_and_finishes_in_the_calling_thread() -> None:
    ran: list[tuple[int, int, str]] = []
    finished: dict[int, list[list[int]]] = {}
    caller = threading.current_thread().name

    def generate(replica: int, b: int) -> list[list[int]]:
        time.sleep(0.01 * (b % 3))  # batches complete out of order
        ran.append((replica, b, threading.current_thread().name))
        return [[b, replica]]

    def finish(b: int, ids: list[list[int]]) -> None:
        assert threading.current_thread().name == caller and b not in finished
        finished[b] = ids

    run_on_replicas(["cuda:0", "cuda:1", "cuda:2"], 7, generate, finish)
    assert finished == {b: [[b, b % 3]] for b in range(7)}
    assert sorted((r, b) for r, b, _ in ran) == sorted((b % 3, b) for b in range(7))
    assert {name for _, _, name in ran} == {"hf-dp0", "hf-dp1", "hf-dp2"}
    # more replicas than batches: the idle ones start no thread
    one: dict[int, list[list[int]]] = {}
    run_on_replicas(["cuda:0", "cuda:1"], 1, lambda r, b: [[r]], one.__setitem__)
    assert one == {0: [[0]]}


def test_a_failing_replica_stops_the_others_and_names_its_device() -> None:
    started: list[int] = []

    def generate(replica: int, b: int) -> list[list[int]]:
        started.append(b)
        if b == 1:
            raise RuntimeError("CUDA out of memory")
        time.sleep(0.05)
        return [[b]]

    with pytest.raises(
        BackendError, match=r"hf: the replica on cuda:1 failed: RuntimeError: CUDA out of memory"
    ):
        run_on_replicas(["cuda:0", "cuda:1"], 20, generate, lambda b, ids: None)
    # replica 0 saw the stop between batches: far fewer than its 10 batches ran
    assert len(started) < 10


def test_parallel_sizes_against_the_gpus_a_process_sees() -> None:
    cfg = backend_config(
        {"backend": "vllm", "model": "org/m", "tensor_parallel_size": 4, "data_parallel_size": 2}
    )
    assert check_parallel_fit(cfg, 8) is None
    with pytest.raises(BackendError, match="x data_parallel_size 2 needs 8 GPUs but this process sees 4"):
        check_parallel_fit(cfg, 4)
    idle = check_parallel_fit(cfg.model_copy(update={"data_parallel_size": 1}), 8)
    assert idle is not None and "uses 4 of the 8 GPUs" in idle and "raise data_parallel_size" in idle
    assert deal(5, 2) == [[0, 2, 4], [1, 3]]
