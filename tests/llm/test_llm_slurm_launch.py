"""One stage across many nodes: the openai backend's ``launch_slurm`` starts llama.cpp server replicas as jobs
of the loopback SLURM cluster (``tests/helpers/slurm_cluster.py``), fans a batch out over them, survives the
pre-emption of one, and cancels every job when the stage ends or fails."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from compress_distill.errors import UserError
from compress_distill.llm import ChatRequest, make_backend
from compress_distill.llm.openai_backend import OpenAIBackend
from tests.helpers.slurm_cluster import queue

pytestmark = pytest.mark.slow  # a SLURM cluster; the tests with llama.cpp are marked `server` too

MODEL = "smollm2-135m-instruct"


def _user(text: str, max_tokens: int) -> ChatRequest:
    return ChatRequest([{"role": "user", "content": text}], max_tokens=max_tokens)


def _engine(command: str, cache: Path, gpus: int = 1, **launch_slurm: Any) -> OpenAIBackend:
    backend = make_backend(
        {
            "backend": "openai",
            "model": MODEL,
            "launch": [command],
            "launch_slurm": {"replicas": 2, **launch_slurm},
            "gpus": gpus,  # per replica: the loopback node has 2
            "launch_timeout_s": 180,
            "max_concurrency": 1,
            "timeout_s": 60,
        },
        cache_dir=cache,
    )
    assert isinstance(backend, OpenAIBackend)
    backend.backoff_base_s = 0.05
    return backend


def _static_server(root: Path) -> str:
    """A stand-in server for the checks that never reach a model (see test_llm_launch.py)."""
    (root / "v1").mkdir(parents=True, exist_ok=True)
    (root / "v1" / "models").write_text('{"data": []}')
    return f"{{python}} -m http.server {{port}} --bind {{host}} --directory {root}"


def _gone(job_ids: list[str], within_s: float = 30.0) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if not set(job_ids) & set(queue()):
            return True
        time.sleep(0.5)
    return False


def test_bad_input_fails_in_one_line_before_anything_is_submitted(
    slurm: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    command = _static_server(tmp_path / "www")
    before = queue()
    cases = [
        (
            {"partition": "nope"},
            "unknown SLURM partition 'nope': this cluster has debug; set launch_slurm.partition",
        ),
        (
            {"gpus": 4},
            "replicas ask 4 GPUs (the engine's gpus) but the largest node of partition 'debug' has 2",
        ),
    ]
    for extra, message in cases:
        backend = _engine(command, tmp_path / "cache", **extra)
        with pytest.raises(UserError) as err, backend:
            backend.generate([_user("Hi", 1)])
        assert message in str(err.value) and "\n" not in str(err.value)
    monkeypatch.setenv("PATH", str(Path(sys.executable).parent))  # the venv's tools, no sbatch
    with (
        pytest.raises(UserError, match="sbatch not found on PATH") as err,
        _engine(command, tmp_path) as backend,
    ):
        backend.generate([_user("Hi", 1)])
    assert "\n" not in str(err.value)
    monkeypatch.undo()
    assert queue() == before
    assert not list((tmp_path / "cache").rglob("*.sbatch"))  # not even a script written


@pytest.mark.server
def test_replicas_serve_one_batch_and_are_cancelled_when_the_stage_ends(
    slurm: dict[str, str], llama_command: Callable[..., str], tmp_path: Path
) -> None:
    backend = _engine(llama_command(n_threads=1, host="{host}"), tmp_path / "cache")
    requests = [_user(f"What is {i} plus {i}?", 8) for i in range(6)]
    with backend:
        out = backend.generate(requests)
        pool = backend._servers
        jobs = list(pool.job_ids.values())
        assert len(jobs) == 2 and set(jobs) <= set(queue())  # two jobs, running
        urls = pool.base_urls
        assert len(set(urls)) == 2 and all(u.startswith(f"http://{os.uname().nodename}:") for u in urls)
    assert [c.completion_tokens > 0 for c in out] == [True] * 6
    assert sorted(backend.answered) == sorted(urls) and sum(backend.answered.values()) == 6  # both served
    assert _gone(jobs, within_s=1)  # close() waited until the jobs left the queue
    assert backend.stats.gpus == 2  # the GPU-hour ledger counts every replica's GPU


@pytest.mark.server
def test_a_preempted_replica_loses_no_finished_work_and_a_failed_stage_cancels_the_rest(
    slurm: dict[str, str], llama_command: Callable[..., str], tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    backend = _engine(llama_command(n_threads=1, host="{host}"), cache)
    requests = [_user(f"Name a colour, number {i}.", 24) for i in range(10)]
    killed: dict[str, Any] = {}

    def preempt() -> None:  # scancel one replica once it has finished a request, mid-batch
        while not killed.get("stop"):
            pool = backend._servers
            if pool is not None and pool.urls:
                replica, url = next(iter(pool.urls.items()))
                if backend.answered[url] >= 1:
                    killed.update(url=url, job=pool.job_ids[replica], at=sum(backend.answered.values()))
                    subprocess.run(["scancel", killed["job"]], check=True)
                    return
            time.sleep(0.02)

    thread = threading.Thread(target=preempt)
    thread.start()
    with pytest.raises(RuntimeError, match="stage failed"), backend:
        try:
            out = backend.generate(requests)
        finally:
            killed["stop"] = True
            thread.join()
        jobs = list(backend._servers.job_ids.values())
        assert killed and killed["at"] < len(requests), killed  # killed mid-batch
        assert _gone([killed["job"]])
        assert len(out) == len(requests) and len({c.request_hash for c in out}) == len(requests)
        # each request was answered once: nothing generated twice, the killed replica's work kept
        assert sum(backend.answered.values()) == len(requests) and backend.answered[killed["url"]] >= 1
        assert backend.attempts > len(requests)  # a request met the dead replica and moved to the live one
        raise RuntimeError("stage failed")  # the stage fails after the batch: the other replica is cancelled
    assert _gone(jobs, within_s=1)
    with _engine(llama_command(n_threads=1, host="{host}"), cache) as again:  # a re-run: all from the cache
        assert [c.text for c in again.generate(requests)] == [c.text for c in out]
        assert again.stats.cached == len(requests) and again._servers is None  # nothing submitted


# A stage holding one replica of a stand-in server, its lease renewed every 0.5 s and stale after 4 s.
_STAGE = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from compress_distill.llm import make_backend
    from compress_distill.llm import launch
    launch.LEASE_S, launch.LEASE_TOUCH_S = 4.0, 0.5
    backend = make_backend(
        {"backend": "openai", "model": "m", "launch": [sys.argv[1]], "launch_slurm": {"replicas": 1},
         "launch_timeout_s": 120},
        cache_dir=Path(sys.argv[2]),
    )
    backend._ensure_loaded()
    print(",".join(backend._servers.job_ids.values()), flush=True)
    time.sleep(600)
    """
)


@pytest.mark.parametrize(("sig", "within_s"), [(signal.SIGTERM, 1.0), (signal.SIGKILL, 20.0)])
def test_a_killed_stage_leaves_no_replica_running(
    slurm: dict[str, str], tmp_path: Path, sig: signal.Signals, within_s: float
) -> None:
    """SIGTERM (scancel of a grid job, a killed `dvc repro`): the stage cancels its replicas on the way out.
    SIGKILL (the OOM killer): nothing runs in the stage any more; the replicas stop once its lease is stale."""
    stage = subprocess.Popen(
        [sys.executable, "-c", _STAGE, _static_server(tmp_path / "www"), str(tmp_path / "cache")],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        jobs = stage.stdout.readline().strip().split(",")  # type: ignore[union-attr]
        assert jobs != [""] and set(jobs) <= set(queue())
        stage.send_signal(sig)
        assert stage.wait(60) == (143 if sig == signal.SIGTERM else -9)
        assert _gone(jobs, within_s=within_s)
    finally:
        if stage.poll() is None:
            stage.kill()


def test_replicas_the_cluster_cannot_place_in_time(slurm: dict[str, str], tmp_path: Path) -> None:
    """Three 1-GPU replicas on a 2-GPU node: the third stays PENDING.  With min_replicas 2 the stage goes on
    with two and cancels the third; without, it fails naming the pending job, and none is left behind."""
    from compress_distill.config import SlurmLaunchConfig
    from compress_distill.llm.launch import SlurmServerPool

    def pool(**cfg: Any) -> SlurmServerPool:
        return SlurmServerPool(
            _static_server(tmp_path / "www"), SlurmLaunchConfig(replicas=3, **cfg), gpus=1, timeout_s=8,
            log_dir=tmp_path / "servers", name="m",
        )  # fmt: skip

    with pool(min_replicas=2) as enough:
        assert len(enough.base_urls) == 2
        jobs = list(enough.job_ids.values())
        assert _gone([j for r, j in enough.job_ids.items() if r not in enough.urls])  # the pending one
    assert _gone(jobs, within_s=1)
    strict = pool()
    with pytest.raises(TimeoutError, match=r"1 of 3 SLURM replica\(s\) not healthy after 8 s .* is PENDING"):
        strict.start()
    assert _gone(list(strict.job_ids.values()), within_s=1)
