"""A one-node SLURM cluster on loopback for the tests: munged, slurmctld and slurmd from Debian's slurm-wlm.

Everything lives under one temporary directory (munge key and socket, slurm.conf, state, spool, logs) and the
daemons listen on non-default ports, so the cluster neither needs nor touches a system-wide SLURM or munge.
The node is named by ``hostname`` (slurmd refuses to start as a node whose name is not its own) and offers
``GPUS`` count-only GPU gres (no device files): enough for ``--gres=gpu:N`` to be scheduled and checked.
Clients find the cluster through ``SLURM_CONF``.  Runs as root (the daemons' SlurmUser), as on these machines.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

GPUS = 2  # count-only gres of the node
PARTITION = "debug"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def slurm_conf(root: Path, node: str, cpus: int, memory_mb: int) -> str:
    return f"""\
ClusterName=loopback
SlurmctldHost={node}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={root}/munge/munge.socket
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1
MinJobAge=600
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
GresTypes=gpu
NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mb} Gres=gpu:{GPUS} State=UNKNOWN
PartitionName={PARTITION} Nodes={node} Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:8
"""


def _wait(what: str, ok: object, log: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ok():  # type: ignore[operator]
            return
        time.sleep(0.3)
    tail = log.read_text(errors="replace")[-3000:] if log.exists() else "(no log)"
    raise RuntimeError(f"{what} did not come up within {timeout:.0f} s; {log}:\n{tail}")


@contextmanager
def loopback_cluster(root: Path) -> Iterator[dict[str, str]]:
    """Start munged, slurmctld and slurmd under ``root``; yield the client environment; stop them."""
    for d in ("munge", "state", "spool", "log"):
        (root / d).mkdir(parents=True, exist_ok=True)
    node = socket.gethostname()
    conf = root / "slurm.conf"
    memory_mb = max(1024, os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20 - 1024)
    conf.write_text(slurm_conf(root, node, os.cpu_count() or 1, memory_mb))
    # plain files stand in for the device nodes: slurmd only counts them (task/none binds nothing)
    (root / "dev").mkdir(exist_ok=True)
    for i in range(GPUS):
        (root / "dev" / f"gpu{i}").touch()
    (root / "gres.conf").write_text(f"NodeName={node} Name=gpu File={root}/dev/gpu[0-{GPUS - 1}]\n")
    key = root / "munge" / "munge.key"
    subprocess.run(
        ["mungekey", "--create", "--keyfile", str(key), "--force"], check=True, capture_output=True
    )
    key.chmod(0o600)
    env = {**os.environ, "SLURM_CONF": str(conf)}
    munge_sock = root / "munge" / "munge.socket"
    started: list[Path] = []
    try:
        subprocess.run(
            ["munged", "--force", f"--socket={munge_sock}", f"--key-file={key}",
             f"--pid-file={root}/munge/munged.pid", f"--log-file={root}/log/munged.log",
             f"--seed-file={root}/munge/munged.seed"],
            check=True, capture_output=True,
        )  # fmt: skip
        started.append(root / "munge" / "munged.pid")
        subprocess.run(["slurmctld", "-f", str(conf)], check=True, env=env, capture_output=True)
        started.append(root / "slurmctld.pid")
        subprocess.run(["slurmd", "-f", str(conf)], check=True, env=env, capture_output=True)
        started.append(root / "slurmd.pid")

        def idle() -> bool:
            out = subprocess.run(
                ["sinfo", "-h", "-o", "%t"], env=env, capture_output=True, text=True, check=False
            )
            return out.returncode == 0 and out.stdout.strip() in ("idle", "mix", "alloc")

        _wait("the loopback SLURM node", idle, root / "log" / "slurmd.log")
        yield {"SLURM_CONF": str(conf)}
    finally:
        if started:  # cancel what the tests left queued or running, then wait for the steps to end
            subprocess.run(
                ["scancel", "--full", "--partition", PARTITION], env=env, capture_output=True, check=False
            )
            _wait("the cancelled jobs", lambda: not queue(env), root / "log" / "slurmctld.log", timeout=60)
        for pid_file in reversed(started):  # only the daemons this fixture started, by their pid
            if pid_file.exists():
                try:
                    os.kill(int(pid_file.read_text().split()[0]), 15)
                except ProcessLookupError:
                    pass
        time.sleep(1)


def queue(env: dict[str, str] | None = None) -> list[str]:
    """Ids of the jobs queued or running (default: the cluster ``SLURM_CONF`` in ``os.environ`` names)."""
    out = subprocess.run(["squeue", "-h", "-o", "%i"], env=env, capture_output=True, text=True, check=False)
    return out.stdout.split()


def have_slurm() -> bool:
    return all(shutil.which(b) for b in ("sbatch", "slurmctld", "slurmd", "munged", "mungekey"))
