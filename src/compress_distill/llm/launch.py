"""Managed OpenAI-compatible servers (``launch:`` in an ``openai`` backend config): local processes, or
SLURM jobs across many nodes (``launch_slurm``).

Each ``launch`` entry is one server command, e.g. one ``vllm serve`` per data-parallel replica::

    launch:
      - vllm serve Qwen/Qwen3-8B --tensor-parallel-size 4 --port {port}
      - env CUDA_VISIBLE_DEVICES=4,5,6,7 vllm serve Qwen/Qwen3-8B --tensor-parallel-size 4 --port {port}

Placeholders: ``{port}`` (required) becomes a free port, ``{host}`` the address the server is reached at
(127.0.0.1 locally, the node's hostname on SLURM), ``{python}`` the running interpreter (so
``{python} -m llama_cpp.server ...`` works inside a virtualenv without activating it).  Commands are split
with ``shlex`` and run without a shell.  The pool waits until every server answers ``GET /v1/models`` (or
``/health``) within ``launch_timeout_s``, and stops them all -- SIGTERM to each process group, SIGKILL after
a grace period -- on ``stop()``, on interpreter exit, and (Linux) when the parent dies even by SIGKILL,
through ``PR_SET_PDEATHSIG``.  Server output goes to a log file whose tail is quoted in every error.

On SLURM (``SlurmServerPool``) the one ``launch`` command runs as ``launch_slurm.replicas`` batch jobs, each
with ``--gres=gpu:<the engine's gpus>``::

    launch: ["vllm serve Qwen/Qwen3-8B --tensor-parallel-size 8 --host {host} --port {port}"]
    launch_slurm: {replicas: 4, partition: gpu, time: "48:00:00", sbatch_args: ["--exclusive"]}

Each job runs ``serve_replica`` (this module as ``__main__``) on its node: a ``ServerPool`` of the command
on the node's hostname, whose URL it writes into the shared log folder (``address_file``) once healthy.  The
stage submits the jobs, reads the URLs, checks each from its side, fans requests out over them (the openai
backend) and cancels every job when it ends, fails, gets SIGTERM, or -- after a SIGKILL -- lets the
replicas stop themselves when its lease file goes stale.  A pre-empted replica loses only its in-flight
requests, which go to another replica; finished ones are already in the request cache.  The log folder (the
request cache's ``servers/``) must be on a disk every node mounts, as the repository is for ``grid submit``.
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
import threading
import time
from pathlib import Path
from typing import Any, Self

from compress_distill.config import SlurmLaunchConfig
from compress_distill.slurm import (
    ACTIVE,
    Slurm,
    SlurmError,
    job_states,
    partition_gpus,
    require_sbatch,
    sbatch,
    scancel,
)

log = logging.getLogger(__name__)

HEALTH_PATHS = ("/v1/models", "/health")
LOOPBACK = "127.0.0.1"  # where local servers listen and are reached
STOP_GRACE_S = 15.0  # vLLM needs a few seconds to release GPU memory and its worker processes
_PORT_RETRIES = 2  # a port picked free can be taken before the server binds it; retry with a new one


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def render_command(command: str, port: int, host: str = LOOPBACK) -> list[str]:
    """argv of one launch entry with ``{port}``, ``{host}`` and ``{python}`` filled in (pure, tested)."""
    if "{port}" not in command:
        raise ValueError(
            f"launch command {command!r} has no {{port}} placeholder; add e.g. `--port {{port}}` so each "
            "replica gets its own free port"
        )
    argv = shlex.split(command)
    fill = {"{port}": str(port), "{host}": host, "{python}": sys.executable}
    for placeholder, value in fill.items():
        argv = [a.replace(placeholder, value) for a in argv]
    return argv


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


def healthy(base_url: str) -> bool:
    """Whether the server at ``base_url`` (``http://host:port/v1``) answers a health path with 200."""
    import httpx

    root = base_url.removesuffix("/v1")
    for path in HEALTH_PATHS:
        try:
            if httpx.get(f"{root}{path}", timeout=2.0).status_code == 200:
                return True
        except httpx.HTTPError:
            continue  # not listening yet
    return False


class _Server:
    def __init__(self, command: str, log_path: Path, host: str = LOOPBACK) -> None:
        self.command = command
        self.log_path = log_path
        self.host = host
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.pid = 0  # of the last process started (kept after stop, for diagnostics)
        self.base_url = ""

    def start(self) -> None:
        self.port = free_port()
        argv = render_command(self.command, self.port, self.host)
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
        self.base_url = f"http://{self.host}:{self.port}/v1"

    def healthy(self) -> bool:
        return healthy(self.base_url)

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

    def __init__(
        self,
        commands: list[str],
        *,
        timeout_s: float,
        log_dir: Path,
        name: str = "server",
        host: str = LOOPBACK,
    ) -> None:
        if not commands:
            raise ValueError("ServerPool needs at least one launch command")
        for command in commands:
            render_command(command, 0)  # fail fast on a missing {port}
        self.timeout_s = timeout_s
        self.servers = [_Server(c, self.log_path(log_dir, name, i), host) for i, c in enumerate(commands)]
        self._started = False

    @staticmethod
    def log_path(log_dir: Path, name: str, i: int) -> Path:
        """The log of server ``i`` of the pool ``name``."""
        return log_dir / f"{name}-{i}.log"

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


# --------------------------------------------------------------------------------------------- on SLURM
LEASE_TOUCH_S = 10.0  # how often the stage renews its lease on the replicas
LEASE_S = 300.0  # a replica whose lease is this long unrenewed (the stage was SIGKILLed) stops itself
CANCEL_WAIT_S = 60.0  # stop() waits this long for cancelled jobs to leave the queue


def replica_script(
    command: str,
    *,
    name: str,
    folder: Path,
    lease: Path,
    gpus: int,
    slurm: Slurm,
    sbatch_args: list[str],
    timeout_s: float,
    lease_s: float = LEASE_S,
) -> str:
    """The sbatch script of one server replica: ``serve_replica`` on the node the job gets (pure, tested)."""
    directives = [
        f"--job-name={name}",
        f"--output={folder}/{_in_job(name, '%j')}.log",  # the log _log() reads
        "--nodes=1",
        "--ntasks=1",
        *([f"--gres=gpu:{gpus}"] if gpus else []),
        *slurm.directives(),
        *sbatch_args,
    ]
    serve = [
        sys.executable, "-m", "compress_distill.llm.launch",
        "--command", command, "--name", name, "--folder", str(folder), "--lease", str(lease),
        "--timeout-s", f"{timeout_s:g}", "--lease-s", f"{lease_s:g}",
    ]  # fmt: skip
    return "\n".join(
        [
            "#!/bin/bash",
            *(f"#SBATCH {d}" for d in directives),
            "# generated by compress-distill: one server replica of an openai engine's launch_slurm",
            # the stage's environment (PATH, PYTHONPATH, HF_HOME ...) comes with sbatch's default --export=ALL
            f"exec {shlex.join(serve)}",
            "",
        ]
    )


def _in_job(name: str, job_id: str) -> str:
    """The stem of every file replica ``name`` writes as job ``job_id`` (a requeued job writes anew)."""
    return f"{name}.{job_id}"


def address_file(folder: Path, name: str, job_id: str) -> Path:
    """Where the replica ``name`` of job ``job_id`` writes its base URL once healthy."""
    return folder / f"{_in_job(name, job_id)}.url"


def serve_replica(
    command: str, name: str, folder: Path, lease: Path, timeout_s: float, lease_s: float = LEASE_S
) -> int:
    """Inside a replica's job: start ``command`` on a free port of this node, wait until it is healthy,
    publish its URL (``address_file``), then serve until the job is cancelled (SIGTERM), the server exits or
    the stage's lease goes stale.  The server is stopped on the way out; returns the exit code of the job."""
    job_id = os.environ.get("SLURM_JOB_ID", str(os.getpid()))
    signal.signal(signal.SIGTERM, _exit_on_sigterm)  # scancel, pre-emption: unwind through the finally
    pool = ServerPool(
        [command], timeout_s=timeout_s, log_dir=folder, name=_in_job(name, job_id), host=socket.gethostname()
    )
    try:
        pool.start()
        url = pool.base_urls[0]
        published = address_file(folder, name, job_id)
        tmp = published.with_suffix(".tmp")
        tmp.write_text(url + "\n", encoding="utf-8")
        tmp.replace(published)  # the stage never reads half a URL
        print(f"serving {url} (log {pool.servers[0].log_path})", flush=True)
        renewed, seen = time.monotonic(), _mtime(lease)
        while True:
            time.sleep(2.0)
            if notes := pool.dead():
                print("\n".join(notes), flush=True)
                return 1
            # the lease's mtime is compared with itself, never with this node's clock (skew on shared disks)
            now_seen = _mtime(lease)
            if now_seen != seen:
                renewed, seen = time.monotonic(), now_seen
            if now_seen is None or time.monotonic() - renewed > lease_s:
                print(f"the stage's lease {lease} is gone or stale; stopping", flush=True)
                return 0
    finally:
        pool.stop()


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return None


class _Lease:
    """A file the stage touches every ``LEASE_TOUCH_S`` while it holds replicas (see ``serve_replica``)."""

    def __init__(self, path: Path, touch_s: float) -> None:
        self.path = path
        self.touch_s = touch_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, name="replica-lease", daemon=True)

    def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.touch()
        self._thread.start()

    def _renew(self) -> None:
        while not self._stop.wait(self.touch_s):
            with contextlib.suppress(FileNotFoundError):  # released meanwhile
                os.utime(self.path)

    def release(self) -> None:
        self._stop.set()
        self.path.unlink(missing_ok=True)


class SlurmServerPool:
    """Server replicas as SLURM jobs (``launch_slurm``): submit, find their URLs once healthy, cancel.

    Before the first ``sbatch``: no ``sbatch`` on PATH, an unknown partition or more GPUs than a node of the
    partition has is a ``SlurmError`` (one line).  ``start`` waits up to ``timeout_s`` for every replica
    (or ``min_replicas`` of them; the rest are cancelled), failing early with the log tail of a job that ended
    first.  ``stop`` -- at the end of the stage, on an error, on SIGTERM (turned into ``SystemExit`` while
    the pool runs) and at interpreter exit -- cancels every job and waits until they left the queue; after a
    SIGKILL the replicas stop themselves once the stage's lease file goes stale (``LEASE_S``).
    """

    def __init__(
        self, command: str, cfg: SlurmLaunchConfig, *, gpus: int, timeout_s: float, log_dir: Path, name: str
    ) -> None:
        render_command(command, 0)  # fail fast on a missing {port}
        self.command = command
        self.cfg = cfg
        self.gpus = gpus
        self.timeout_s = timeout_s
        self.folder = log_dir.resolve()  # on a disk every node mounts (the repository's, by default)
        self.slurm = Slurm(cfg.partition, cfg.account, cfg.time)
        stamp = f"{socket.gethostname()}-{os.getpid()}-{time.strftime('%Y%m%d%H%M%S')}"
        self.names = [f"{name}-{stamp}-{i}" for i in range(cfg.replicas)]
        self.job_ids: dict[str, str] = {}  # replica name -> job id
        self.urls: dict[str, str] = {}  # replica name -> base URL, once healthy
        self.lease_s = LEASE_S  # tests shorten it (with the lease's touch_s)
        self._lease = _Lease(self.folder / f"{name}-{stamp}.lease", LEASE_TOUCH_S)
        self._previous_sigterm: Any = None
        self._started = False

    @property
    def base_urls(self) -> list[str]:
        return list(self.urls.values())

    def check(self) -> None:
        """Refuse what the cluster cannot run, before anything is submitted."""
        where = "launch_slurm.partition of the engine"
        require_sbatch(
            "launch_slurm submits the engine's servers as SLURM jobs; run the stage on a SLURM login node or "
            "node, or remove launch_slurm from the engine"
        )
        part, most = partition_gpus(self.slurm, where)
        if self.gpus > most:
            raise SlurmError(
                f"launch_slurm replicas ask {self.gpus} GPUs (the engine's gpus) but the largest node of "
                f"partition {part!r} has {most}; lower the engine's gpus or set {where}"
            )

    def start(self) -> list[str]:
        """Submit every replica and block until they are healthy; returns their ``/v1`` base URLs."""
        self.check()
        self.folder.mkdir(parents=True, exist_ok=True)
        atexit.register(self.stop)
        self._started = True
        if threading.current_thread() is threading.main_thread():
            self._previous_sigterm = signal.signal(signal.SIGTERM, _exit_on_sigterm)
        try:
            self._lease.start()
            for replica in self.names:
                script = self.folder / f"{replica}.sbatch"
                script.write_text(
                    replica_script(
                        self.command, name=replica, folder=self.folder, lease=self._lease.path,
                        gpus=self.gpus, slurm=self.slurm, sbatch_args=self.cfg.sbatch_args,
                        timeout_s=self.timeout_s, lease_s=self.lease_s,
                    ),
                    encoding="utf-8",
                )  # fmt: skip
                self.job_ids[replica] = sbatch(script)
            self._wait_healthy()
        except BaseException:
            self.stop()
            raise
        log.info("%d SLURM replica(s) serving: %s", len(self.urls), ", ".join(self.base_urls))
        return self.base_urls

    def _log(self, replica: str) -> Path:
        return self.folder / f"{_in_job(replica, self.job_ids[replica])}.log"  # sbatch --output, %j filled

    def _note(self, replica: str, state: str) -> str:
        job = self.job_ids[replica]
        server_log = ServerPool.log_path(self.folder, _in_job(replica, job), 0)
        return (
            f"replica job {job} ({replica}) is {state}; last lines of {self._log(replica)}:\n"
            f"{_tail(self._log(replica), 10)}\nand of the server's log {server_log}:\n{_tail(server_log, 10)}"
        )

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + self.timeout_s
        waiting = list(self.names)
        while waiting:
            known = job_states([self.job_ids[r] for r in waiting])
            states = known if known is not None else {}
            for replica in list(waiting):
                url_file = address_file(self.folder, replica, self.job_ids[replica])
                if url_file.exists():
                    url = url_file.read_text(encoding="utf-8").strip()
                    if healthy(url):  # reachable from here too, not only on its node
                        self.urls[replica] = url
                        waiting.remove(replica)
                        continue
                state = states.get(self.job_ids[replica], "gone from the queue")
                if known is not None and state not in ACTIVE:  # None: squeue did not answer this time
                    raise RuntimeError(
                        f"a server replica ended before it became healthy: {self._note(replica, state)}"
                    )
            if not waiting:
                return
            if time.monotonic() > deadline:
                wanted = self.cfg.min_replicas or len(self.names)
                if len(self.urls) >= wanted:
                    log.warning(
                        "%d of %d replicas healthy after %.0f s (launch_timeout_s); cancelling the others: %s",
                        len(self.urls), len(self.names), self.timeout_s, ", ".join(waiting),
                    )  # fmt: skip
                    scancel([self.job_ids[r] for r in waiting])
                    return
                first = waiting[0]
                raise TimeoutError(
                    f"{len(waiting)} of {len(self.names)} SLURM replica(s) not healthy after {self.timeout_s:.0f} s "
                    f"(launch_timeout_s; {len(self.urls)} healthy, launch_slurm.min_replicas "
                    f"{wanted}); first: {self._note(first, states.get(self.job_ids[first], 'gone'))}"
                )
            time.sleep(1.0)

    def dead(self) -> list[str]:
        """One note (job, state, log tails) per serving replica whose job no longer runs."""
        states = job_states([self.job_ids[r] for r in self.urls])
        if states is None:
            return ["(squeue did not answer: the states of the replica jobs are unknown)"]
        return [
            self._note(r, states.get(self.job_ids[r], "gone from the queue"))
            for r in self.urls
            if states.get(self.job_ids[r]) != "RUNNING"
        ]

    def stop(self) -> None:
        """Cancel every replica job and wait until they left the queue (idempotent)."""
        if not self._started:
            return
        self._started = False
        atexit.unregister(self.stop)
        if self._previous_sigterm is not None:
            signal.signal(signal.SIGTERM, self._previous_sigterm)
            self._previous_sigterm = None
        self._lease.release()
        ids = list(self.job_ids.values())
        try:
            scancel(ids)
        except SlurmError as err:  # stop() runs in finally blocks: the wait below reports what stayed
            log.warning("%s", err)
        deadline = time.monotonic() + CANCEL_WAIT_S
        while time.monotonic() < deadline:
            states = job_states(ids)
            if states is not None and not any(s in ACTIVE for s in states.values()):
                return
            time.sleep(0.5)
        log.warning("replica jobs %s still in the queue %.0f s after scancel", ", ".join(ids), CANCEL_WAIT_S)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _exit_on_sigterm(signum: int, frame: object) -> None:
    """SIGTERM (scancel of the stage's job, a killed `dvc repro`) unwinds like Ctrl-C: the replicas are
    cancelled by the ``finally`` blocks and ``atexit`` on the way out."""
    raise SystemExit(128 + signum)


def _main(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="one server replica of launch_slurm (inside its SLURM job)")
    parser.add_argument("--command", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--folder", type=Path, required=True)
    parser.add_argument("--lease", type=Path, required=True)
    parser.add_argument("--timeout-s", type=float, required=True)
    parser.add_argument("--lease-s", type=float, default=LEASE_S)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    return serve_replica(args.command, args.name, args.folder, args.lease, args.timeout_s, args.lease_s)


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
