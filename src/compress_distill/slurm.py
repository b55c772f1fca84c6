"""The SLURM client calls shared by ``grid`` (one job per DVC stage) and ``llm.launch`` (one job per server
replica): the scheduler options, the checks made before anything is submitted, ``sbatch``, ``squeue`` and
``scancel``.

Every check raises ``SlurmError`` (a ``UserError``: one line, exit code 2) with the fix the caller names in
``where`` -- the flag or params key that sets the value -- so the same rule reads right for both callers.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

from compress_distill.errors import UserError

# squeue states of a job that still holds (or waits for) its resources
ACTIVE = ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "RESIZING", "SUSPENDED")


class SlurmError(UserError):
    """The scheduler cannot do what is asked (no client, unknown partition, a node too small, a failed call)."""


@dataclass
class Slurm:
    """Scheduler options of every job of one submission."""

    partition: str | None = None
    account: str | None = None
    time: str | None = None  # time limit, e.g. "12:00:00"

    def directives(self) -> list[str]:
        """The ``sbatch`` options of the options that are set (``--partition=gpu`` ...)."""
        return [f"--{k}={v}" for k, v in asdict(self).items() if v]


def run(args: list[str]) -> str:
    """stdout of a SLURM client call; a failure is a ``SlurmError`` quoting its stderr."""
    done = subprocess.run(args, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SlurmError(f"`{shlex.join(args)}` failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    return done.stdout


def node_gpus(gres: str) -> int:
    """GPUs in an sinfo ``%G`` field: ``gpu:8``, ``gpu:h100:8(S:0-1)``, several comma-separated, ``(null)``."""
    total = 0
    for item in re.split(r",(?![^()]*\))", gres):
        parts = item.split("(")[0].split(":")
        if parts[0] == "gpu" and len(parts) >= 2 and parts[-1].isdigit():
            total += int(parts[-1])
    return total


def require_sbatch(fix: str) -> None:
    if shutil.which("sbatch") is None:
        raise SlurmError(f"sbatch not found on PATH: {fix}")


def partition_gpus(slurm: Slurm, where: str) -> tuple[str, int]:
    """(the partition jobs go to, the GPUs of its largest node); an unknown partition names ``where``."""
    partitions = {p.rstrip("*"): p.endswith("*") for p in run(["sinfo", "-h", "-o", "%P"]).split()}
    part = slurm.partition or next((p for p, default in partitions.items() if default), None)
    if part is None or part not in partitions:
        raise SlurmError(
            f"unknown SLURM partition {slurm.partition!r}: this cluster has {', '.join(partitions) or '(none)'}; "
            f"set {where}"
        )
    nodes = [line.split("|") for line in run(["sinfo", "-h", "-N", "-p", part, "-o", "%N|%G"]).splitlines()]
    return part, max((node_gpus(g) for _, g in nodes), default=0)


def sbatch(script: Path, after: list[str] | None = None) -> str:
    """Submit ``script``; its job id.  ``after``: job ids that must succeed first (cancelled otherwise)."""
    args = ["sbatch", "--parsable", "--kill-on-invalid-dep=yes"]
    if after:
        args.append("--dependency=afterok:" + ":".join(after))
    return run([*args, str(script)]).strip().split(";")[0]


def job_states(job_ids: list[str]) -> dict[str, str] | None:
    """squeue's state of each job it still knows (finished ones for ``MinJobAge``; absent: forgotten), or
    None when squeue could not answer (not installed, slurmctld busy): the caller asks again later."""
    if not job_ids:
        return {}
    if shutil.which("squeue") is None:
        return None
    out = subprocess.run(
        ["squeue", "-h", "-t", "all", "-j", ",".join(job_ids), "-o", "%i %T"],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:  # squeue fails this way only when it knows none of the ids
        return {} if "Invalid job id" in out.stderr else None
    return dict(line.split()[:2] for line in out.stdout.splitlines() if len(line.split()) >= 2)


def scancel(job_ids: list[str]) -> None:
    if job_ids:
        run(["scancel", *job_ids])
