"""Managed local OpenAI-compatible servers (``launch:`` in an ``openai`` backend config).

Each ``launch`` entry is one server command, e.g. one ``vllm serve`` per data-parallel replica::

    launch:
      - vllm serve Qwen/Qwen3-8B --tensor-parallel-size 4 --port {port}
      - env CUDA_VISIBLE_DEVICES=4,5,6,7 vllm serve Qwen/Qwen3-8B --tensor-parallel-size 4 --port {port}

Placeholders: ``{port}`` (required) becomes a free loopback port, ``{python}`` the running interpreter (so
``{python} -m llama_cpp.server ...`` works inside a virtualenv without activating it).  Commands are split
with ``shlex`` and run without a shell.  The pool waits until every server answers ``GET /v1/models`` (or
``/health``) within ``launch_timeout_s``, and stops them all -- SIGTERM to each process group, SIGKILL after
a grace period -- on ``stop()``, on interpreter exit, and (Linux) when the parent dies even by SIGKILL,
through ``PR_SET_PDEATHSIG``.  Server output goes to a log file whose tail is quoted in every error.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Self

log = logging.getLogger(__name__)

HEALTH_PATHS = ("/v1/models", "/health")
STOP_GRACE_S = 15.0  # vLLM needs a few seconds to release GPU memory and its worker processes
_PORT_RETRIES = 2  # a port picked free can be taken before the server binds it; retry with a new one


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def render_command(command: str, port: int) -> list[str]:
    """argv of one launch entry with ``{port}`` and ``{python}`` filled in (pure, tested)."""
    if "{port}" not in command:
        raise ValueError(
            f"launch command {command!r} has no {{port}} placeholder; add e.g. `--port {{port}}` so each "
            "replica gets its own free port"
        )
    argv = shlex.split(command)
    return [a.replace("{port}", str(port)).replace("{python}", sys.executable) for a in argv]


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Ask the kernel to SIGTERM this child when the launching process dies (Linux only)."""
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        with contextlib.suppress(OSError):  # best effort: stop() and atexit still cover the normal paths
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return "(no log)"
    return "\n".join(line[:500] for line in text.splitlines()[-lines:])  # crash dumps have huge lines


class _Server:
    def __init__(self, command: str, log_path: Path) -> None:
        self.command = command
        self.log_path = log_path
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.pid = 0  # of the last process started (kept after stop, for diagnostics)
        self.base_url = ""

    def start(self) -> None:
        self.port = free_port()
        argv = render_command(self.command, self.port)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as out:
            out.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} port {self.port}\n".encode())
            out.flush()
            # start_new_session: the server and everything it forks share one process group we can kill
            self.proc = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=_die_with_parent,  # noqa: PLW1509 - it only calls prctl()
            )
        self.pid = self.proc.pid
        self.base_url = f"http://127.0.0.1:{self.port}/v1"

    def healthy(self) -> bool:
        import httpx

        for path in HEALTH_PATHS:
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}{path}", timeout=2.0).status_code == 200:
                    return True
            except httpx.HTTPError:
                continue  # not listening yet
        return False

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            log.warning("server on port %d ignored SIGTERM for %.0f s; killing it", self.port, STOP_GRACE_S)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # also reaps children that outlived their parent
        proc.wait()


class ServerPool:
    """Start, health-check and stop the servers of one ``launch`` list (see the module docstring)."""

    def __init__(self, commands: list[str], *, timeout_s: float, log_dir: Path, name: str = "server") -> None:
        if not commands:
            raise ValueError("ServerPool needs at least one launch command")
        for command in commands:
            render_command(command, 0)  # fail fast on a missing {port}
        self.timeout_s = timeout_s
        self.servers = [_Server(c, log_dir / f"{name}-{i}.log") for i, c in enumerate(commands)]
        self._started = False

    @property
    def base_urls(self) -> list[str]:
        return [s.base_url for s in self.servers]

    @property
    def pids(self) -> list[int]:
        return [s.proc.pid for s in self.servers if s.proc is not None]

    def start(self) -> list[str]:
        """Start every server and block until all are healthy; returns their ``/v1`` base URLs."""
        atexit.register(self.stop)
        self._started = True
        try:
            for server in self.servers:
                server.start()
            self._wait_healthy()
        except BaseException:
            self.stop()
            raise
        log.info("launched %d server(s): %s", len(self.servers), ", ".join(self.base_urls))
        return self.base_urls

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + self.timeout_s
        waiting = list(self.servers)
        restarts = {id(s): 0 for s in self.servers}
        while waiting:
            for server in list(waiting):
                assert server.proc is not None
                code = server.proc.poll()
                if code is not None:
                    tail = _tail(server.log_path)
                    if "address already in use" in tail.lower() and restarts[id(server)] < _PORT_RETRIES:
                        restarts[id(server)] += 1
                        server.start()
                        continue
                    raise RuntimeError(
                        f"launched server exited with code {code} before it became healthy: "
                        f"{server.command!r}\nlast lines of {server.log_path}:\n{tail}"
                    )
                if server.healthy():
                    waiting.remove(server)
            if not waiting:
                return
            if time.monotonic() > deadline:
                server = waiting[0]
                raise TimeoutError(
                    f"{len(waiting)} launched server(s) not healthy after {self.timeout_s:.0f} s "
                    f"(launch_timeout_s); first: {server.command!r}\nlast lines of {server.log_path}:\n"
                    f"{_tail(server.log_path)}"
                )
            time.sleep(0.5)

    def dead(self) -> list[str]:
        """One note (command, exit code, log tail) per launched server that has exited."""
        notes = []
        for server in self.servers:
            code = server.proc.poll() if server.proc is not None else None
            if code is not None:
                notes.append(
                    f"launched server {server.command!r} exited with code {code}; last lines of "
                    f"{server.log_path}:\n{_tail(server.log_path, 10)}"
                )
        return notes

    def stop(self) -> None:
        """Stop every server (idempotent)."""
        for server in self.servers:
            server.stop()
        if self._started:
            atexit.unregister(self.stop)
            self._started = False

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
