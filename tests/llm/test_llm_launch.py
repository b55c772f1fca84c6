"""Managed servers: placeholders, health waiting, failure reports, stopping on close, on error and on the
death of the launching process.  A static HTTP server with a ``v1/models`` file stands in for vLLM here;
the llama.cpp end-to-end run is in test_llm_openai.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from compress_distill.llm import make_backend
from compress_distill.llm.launch import ServerPool, render_command


def _static_server(root: Path) -> str:
    (root / "v1").mkdir(parents=True, exist_ok=True)
    (root / "v1" / "models").write_text('{"data": []}')
    return f"{{python}} -m http.server {{port}} --bind 127.0.0.1 --directory {root}"


def _gone(pid: int, within_s: float = 10.0) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def test_render_command_fills_placeholders_and_demands_a_port() -> None:
    argv = render_command("{python} -m srv --port {port} --name 'a b'", 8123)
    assert argv == [sys.executable, "-m", "srv", "--port", "8123", "--name", "a b"]
    with pytest.raises(ValueError, match=r"\{port\}"):
        render_command("vllm serve org/m", 1)


def test_pool_starts_healthy_servers_and_stops_them(tmp_path: Path) -> None:
    command = _static_server(tmp_path / "www")
    with ServerPool([command, command], timeout_s=30, log_dir=tmp_path / "logs") as pool:
        urls = pool.base_urls
        assert len(set(urls)) == 2
        for url in urls:
            assert httpx.get(f"{url}/models").status_code == 200
        pids = pool.pids
    assert all(_gone(pid) for pid in pids)


def test_a_server_that_exits_early_is_reported_with_its_log(tmp_path: Path) -> None:
    command = "{python} -c \"import sys; print('boom: no GPU'); sys.exit(3)\" {port}"
    pool = ServerPool([command], timeout_s=30, log_dir=tmp_path)
    with pytest.raises(RuntimeError, match=r"(?s)exited with code 3.*boom: no GPU"):
        pool.start()


def test_a_server_that_never_gets_healthy_times_out_and_is_killed(tmp_path: Path) -> None:
    pool = ServerPool(['{python} -c "import time; time.sleep(600)" {port}'], timeout_s=1.0, log_dir=tmp_path)
    with pytest.raises(TimeoutError, match="launch_timeout_s"):
        pool.start()
    assert pool.pids == [] and _gone(pool.servers[0].pid)  # stopped, not leaked


def test_backend_stops_its_servers_when_the_stage_fails(tmp_path: Path) -> None:
    cfg = {
        "backend": "openai",
        "model": "org/model",
        "launch": [_static_server(tmp_path / "www")],
        "launch_timeout_s": 30,
    }
    backend = make_backend(cfg, cache_dir=tmp_path / "cache")
    with pytest.raises(RuntimeError, match="stage failed"), backend:
        backend._ensure_loaded()  # what the first uncached generate() does
        pids = backend._servers.pids
        assert pids and backend.base_urls[0].startswith("http://127.0.0.1:")
        raise RuntimeError("stage failed")
    assert all(_gone(pid) for pid in pids)


_PARENT = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from compress_distill.llm.launch import ServerPool
    pool = ServerPool([sys.argv[1]], timeout_s=30, log_dir=Path(sys.argv[2]))
    pool.start()
    print(pool.pids[0], flush=True)
    time.sleep(600)
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_servers_die_with_a_sigkilled_parent(tmp_path: Path) -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", _PARENT, _static_server(tmp_path / "www"), str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        server_pid = int(parent.stdout.readline())  # type: ignore[union-attr]
        os.kill(server_pid, 0)
        os.kill(parent.pid, signal.SIGKILL)  # no atexit, no finally: only the kernel can clean up
        parent.wait(10)
        assert _gone(server_pid)
    finally:
        if parent.poll() is None:
            parent.kill()


# ------------------------------------------------------------------------------------------ on SLURM
def test_replica_script_asks_the_engines_gpus_and_runs_the_replica_entry_point(tmp_path: Path) -> None:
    from compress_distill.llm.launch import replica_script
    from compress_distill.slurm import Slurm

    script = replica_script(
        "vllm serve org/m --host {host} --port {port}",
        name="m-0",
        folder=tmp_path,
        lease=tmp_path / "m.lease",
        gpus=8,
        slurm=Slurm(partition="gpu", time="48:00:00"),
        sbatch_args=["--exclusive"],
        timeout_s=900,
    )
    directives = [line.removeprefix("#SBATCH ") for line in script.splitlines() if line.startswith("#SBATCH")]
    assert directives == [
        "--job-name=m-0",
        f"--output={tmp_path}/m-0.%j.log",
        "--nodes=1",
        "--ntasks=1",
        "--gres=gpu:8",
        "--partition=gpu",
        "--time=48:00:00",
        "--exclusive",
    ]
    last = script.splitlines()[-1]
    assert last.startswith(f"exec {sys.executable} -m compress_distill.llm.launch --command ")
    assert "'vllm serve org/m --host {host} --port {port}'" in last  # filled in on the node
    assert "--gres" not in replica_script(
        "x {port}", name="n", folder=tmp_path, lease=tmp_path / "l", gpus=0, slurm=Slurm(),
        sbatch_args=[], timeout_s=1,
    )  # fmt: skip


def test_render_command_fills_the_host() -> None:
    assert render_command("srv --host {host} --port {port}", 9, "node7") == [
        "srv",
        "--host",
        "node7",
        "--port",
        "9",
    ]
    assert render_command("srv --host {host} --port {port}", 9)[2] == "127.0.0.1"


@pytest.mark.parametrize(
    ("engine", "expected"),
    [
        (
            {"launch": ["a {port}", "b {port}"]},
            "exactly one launch command (got backend 'openai', 2 command(s))",
        ),
        ({"backend": "vllm", "model": "smollm2-135m-instruct"}, "needs backend 'openai'"),
        ({"launch_slurm": {"replicas": 2, "min_replicas": 3}}, "min_replicas 3 exceeds replicas 2"),
    ],
)
def test_launch_slurm_config_errors(engine: dict[str, object], expected: str) -> None:
    from compress_distill.config import ConfigError, backend_config

    cfg = {
        "backend": "openai",
        "model": "m",
        "launch": ["srv {port}"],
        "launch_slurm": {"replicas": 2},
        **engine,
    }
    with pytest.raises(ConfigError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        backend_config(cfg)
    ok = backend_config(
        {
            "backend": "openai",
            "model": "m",
            "launch": ["srv {port}"],
            "launch_slurm": {"replicas": 2},
            "gpus": 8,
        }
    )
    assert (ok.held_gpus, ok.job_gpus) == (16, 0)  # the ledger counts both replicas; the stage's own job none
