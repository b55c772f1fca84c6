"""The DVC graph on a cluster: every stale stage as one SLURM job, dependencies following the DAG.

``compress-distill grid submit --executor slurm`` reads the pipeline of the current commit, takes the stages
``dvc status`` reports plus every stage downstream of them, and submits one ``sbatch`` job per stage:
``--gres=gpu:N`` from the topology (``plan.yaml``'s ``gpus`` of a train run, an engine's ``gpus`` for the
trace stages and evaluation), ``--dependency=afterok:...`` on the jobs of the stale stages it reads, and
partition/account/time from ``topology`` in params or the flags.  ``--dry-run`` writes the job scripts and
submits nothing.

Each job checks out the same commit in its own ``git worktree`` (under ``.dvc/tmp/grid/worktrees``) that uses
the main workspace's DVC cache, and there runs ``dvc repro --single-item`` on the stage's upstream stages in
order -- their outputs come back from DVC's run-cache, filled by the jobs before it -- then on the stage
itself; the worktree is removed when the job ends, so a job the scheduler kills leaves nothing in the main
workspace.  When the jobs are done, ``dvc repro`` in the main workspace restores every stage from the
run-cache without running a command, and ``dvc.lock``/metrics are committed as usual.  (DVC's run-cache keeps
a stage whose uncached outputs are metrics or plots, and skips one with an uncached plain out:
``dvc/stage/__init__.py``, ``no_cache_outs``.)

``grid status`` prints each job's state and log; a failed job with its log tail.  Its dependents are cancelled
by SLURM (``--kill-on-invalid-dep``), independent branches go on, and a second ``grid submit`` of the same
commit skips the stages whose job completed or is still queued or running.  Everything is checked before the
first ``sbatch``: no ``sbatch`` on PATH, an unknown partition or a stage asking more GPUs than a node of the
partition has (or a count that does not divide the node's) is a one-line error.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from compress_distill.config import Params
from compress_distill.errors import UserError
from compress_distill.schema import umask_mode
from compress_distill.slurm import (
    ACTIVE,
    Slurm,
    job_states,
    partition_gpus,
    require_sbatch,
    run,
    sbatch,
)

STATE_DIR = Path(".dvc/tmp/grid")  # git-ignored by DVC's own .dvc/.gitignore
MANIFEST = "grid.json"
LOG_TAIL_LINES = 20
CANCELLED = "cancelled"  # the exit record the local executor writes for a job it never started
DONE = "COMPLETED"


class GridError(UserError):
    """The grid cannot be submitted as asked (scheduler, partition, GPUs, workspace)."""


@dataclass
class Job:
    """One stage as one scheduler job."""

    stage: str  # DVC address, e.g. train@smol-smol-lora-raw
    gpus: int
    after: list[str]  # stale stages whose jobs must succeed first (direct upstream)
    upstream: list[str]  # every upstream stage, in order: restored from the run-cache before the stage runs
    job_id: str | None = None
    script: str = ""
    log: str = ""


@dataclass
class Submission:
    commit: str
    executor: str
    jobs: dict[str, Job] = field(default_factory=dict)
    # stages whose job came from an earlier submission of the commit (completed, queued or running)
    carried: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------- the graph
def stage_gpus(stage: str, params: Params, plan: dict[str, Any]) -> int:
    """GPUs the job of ``stage`` asks for: the train run's topology, the engine's ``gpus`` for the stages
    that serve a model (none when its servers are SLURM jobs of their own), none for the data stages."""
    family, _, key = stage.partition("@")
    if family == "train":
        return int(plan["runs"][key]["gpus"])
    if family == "generate":
        return params.teachers[key].job_gpus
    if family == "compress":
        return params.compressors[plan["compress"][key]["compressor"]].job_gpus
    if family == "judge":
        return params.judge.engine.job_gpus
    if family == "verify" and params.verify is not None:
        return params.verify.engine.job_gpus
    if family in ("evaluate", "evaluate_cap"):  # the cap variants serve the same student engine
        return params.evaluate.engine.job_gpus
    return 0


def graph_jobs(
    edges: dict[str, list[str]],
    stale: set[str],
    gpus: Callable[[str], int],
    skip: frozenset[str] = frozenset(),
) -> list[Job]:
    """Jobs for ``stale`` stages and everything downstream of them, in dependency order (pure).

    ``edges``: stage -> the stages whose outputs it reads.  ``skip``: stages already done or queued by an
    earlier submission of the same commit (they are waited for when queued, never submitted again).
    """
    order = _topological(edges)
    todo = set(stale)
    for stage in order:  # downstream of a stale stage is stale: its inputs are about to change
        if any(dep in todo for dep in edges[stage]):
            todo.add(stage)
    jobs = []
    for stage in order:
        if stage in todo and stage not in skip:
            upstream = [s for s in order if s in _ancestors(stage, edges)]
            after = [d for d in edges[stage] if d in todo]
            jobs.append(Job(stage=stage, gpus=gpus(stage), after=after, upstream=upstream))
    return jobs


def _ancestors(stage: str, edges: dict[str, list[str]]) -> set[str]:
    seen: set[str] = set()
    todo = list(edges[stage])
    while todo:
        s = todo.pop()
        if s not in seen:
            seen.add(s)
            todo += edges[s]
    return seen


def _topological(edges: dict[str, list[str]]) -> list[str]:
    """Stages with every dependency before its dependents; ties in name order (stable scripts)."""
    order: list[str] = []
    placed: set[str] = set()
    remaining = sorted(edges)
    while remaining:
        ready = [s for s in remaining if all(d in placed for d in edges[s])]
        if not ready:
            raise GridError(f"the DVC graph has a cycle among {remaining}; run `dvc dag` to see it")
        order += ready
        placed |= set(ready)
        remaining = [s for s in remaining if s not in placed]
    return order


def dvc_graph(root: Path) -> tuple[dict[str, list[str]], set[str]]:
    """(stage -> upstream stages, stages ``dvc status`` reports changed) of the pipeline in ``root``."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        graph = repo.index.graph  # edges stage -> the stage producing one of its deps
        edges = {s.addressing: sorted(d.addressing for d in graph.successors(s)) for s in graph.nodes}
        stale = set(repo.status())
    return edges, stale


# ---------------------------------------------------------------------------------------------- packing
@dataclass(frozen=True)
class Placement:
    """Where and when a job runs: node index and the GPUs of that node it holds (``CUDA_VISIBLE_DEVICES``)."""

    stage: str
    node: int
    gpus: tuple[int, ...]
    start: float = 0.0
    end: float = 0.0


class Packer:
    """Greedy list scheduling of a job graph onto nodes of ``gpus_per_node`` GPUs (one run per node).

    Whenever GPUs free up, the ready jobs (every ``after`` job finished) start in order of priority -- the
    longest weighted path from the job to the end of the graph (critical path first), then more GPUs first --
    each on the first node with a free aligned slice of its size (GPUs ``k*g .. k*g+g-1``: two 4-GPU runs
    share an 8-GPU node on NVLink halves).  Jobs without GPUs need only a CPU slot (``cpu_slots`` per node;
    None: unbounded).  The same object drives the simulation of ``bench/grid.py`` and could drive a local
    executor; it only decides, the caller runs.
    """

    def __init__(
        self,
        jobs: list[Job],
        nodes: int,
        gpus_per_node: int,
        weight: Callable[[str], float],
        cpu_slots: int | None = None,
    ) -> None:
        self.jobs = {j.stage: j for j in jobs}
        for job in jobs:
            if job.gpus > gpus_per_node:
                raise GridError(
                    f"stage {job.stage} asks {job.gpus} GPUs but a node has {gpus_per_node}; lower its GPUs "
                    "(topology.train or the engine's gpus)"
                )
        self.gpus_per_node = gpus_per_node
        self.free = [[True] * gpus_per_node for _ in range(nodes)]
        self.cpu_free = [cpu_slots if cpu_slots is not None else -1 for _ in range(nodes)]
        self.done: set[str] = set()
        self.failed: set[str] = set()
        self.running: dict[str, Placement] = {}
        dependents: dict[str, list[str]] = {s: [] for s in self.jobs}
        for job in jobs:
            for d in job.after:
                if d in dependents:
                    dependents[d].append(job.stage)
        self.priority: dict[str, float] = {}
        for job in reversed(jobs):  # jobs come in dependency order: dependents are already scored
            tail = max((self.priority[d] for d in dependents[job.stage]), default=0.0)
            self.priority[job.stage] = weight(job.stage) + tail
        self.dependents = dependents

    def _slice(self, node: int, g: int) -> tuple[int, ...] | None:
        free = self.free[node]
        for lo in range(0, self.gpus_per_node - g + 1, g):
            if all(free[lo : lo + g]):
                return tuple(range(lo, lo + g))
        return None

    def ready(self) -> list[Job]:
        waiting = [
            j
            for s, j in self.jobs.items()
            if s not in self.done and s not in self.running and s not in self.failed
            and all(d in self.done or d not in self.jobs for d in j.after)
        ]  # fmt: skip
        return sorted(waiting, key=lambda j: (-self.priority[j.stage], -j.gpus, j.stage))

    def start(self, now: float = 0.0) -> list[Placement]:
        """Place every ready job that fits now; marks them running."""
        placed = []
        for job in self.ready():
            for node in range(len(self.free)):
                gpus = self._slice(node, job.gpus) if job.gpus else ()
                if gpus is None or (not job.gpus and self.cpu_free[node] == 0):
                    continue
                for g in gpus:
                    self.free[node][g] = False
                if not job.gpus and self.cpu_free[node] > 0:  # -1: unbounded
                    self.cpu_free[node] -= 1
                place = Placement(job.stage, node, gpus, start=now)
                self.running[job.stage] = place
                placed.append(place)
                break
        return placed

    def finish(self, stage: str, ok: bool = True) -> list[str]:
        """Release ``stage``'s GPUs; a failure cancels its dependents (returned), the rest go on."""
        place = self.running.pop(stage)
        for g in place.gpus:
            self.free[place.node][g] = True
        if not place.gpus and self.cpu_free[place.node] >= 0:
            self.cpu_free[place.node] += 1
        if ok:
            self.done.add(stage)
            return []
        cancelled, todo = [], list(self.dependents[stage])
        self.failed.add(stage)
        while todo:
            s = todo.pop()
            if s not in self.failed:
                self.failed.add(s)
                cancelled.append(s)
                todo += self.dependents[s]
        return cancelled

    @property
    def finished(self) -> bool:
        return not self.running and not self.ready()


def simulate(jobs: list[Job], hours: dict[str, float], nodes: int, gpus_per_node: int) -> list[Placement]:
    """The packer's schedule of ``jobs`` with known durations (``hours`` per stage): every placement with
    its start and end; the makespan is the largest end."""
    packer = Packer(jobs, nodes, gpus_per_node, lambda s: hours[s])
    now, ends, out = 0.0, {}, []
    while not packer.finished:
        for place in packer.start(now):
            ends[place.stage] = now + hours[place.stage]
        if not packer.running:
            raise GridError("the job graph cannot progress: a job waits for one that never runs")
        now = min(ends[s] for s in packer.running)
        for stage in [s for s in packer.running if ends[s] <= now]:
            place = packer.running[stage]
            out.append(Placement(stage, place.node, place.gpus, place.start, ends[stage]))
            packer.finish(stage)
    return out


# ---------------------------------------------------------------------------------------------- scripts
def job_script(job: Job, root: Path, commit: str, state: Path, slurm: Slurm | None, cache_dir: Path) -> str:
    """The job script of ``job`` (sbatch directives when ``slurm``): a worktree of ``commit`` sharing ``root``'s DVC cache, the upstream
    stages restored from the run-cache, the stage run, the worktree removed, the exit code recorded."""
    name = job.stage
    directives = []
    if slurm is not None:
        directives = [f"--job-name={name}", f"--output={state}/logs/{name}.%j.log"]
        if job.gpus:
            directives.append(f"--gres=gpu:{job.gpus}")
        directives += slurm.directives()
    q = shlex.quote
    wt = state / "worktrees" / name
    repro = shlex.join(["dvc", "repro", "--single-item", *job.upstream, name])
    bin_dir = Path(sys.executable).parent
    lines = [
        "#!/bin/bash",
        *(f"#SBATCH {d}" for d in directives),
        "# generated by `compress-distill grid submit`; one DVC stage of commit " + commit,
        "set -euo pipefail",
        f"export PATH={q(str(bin_dir))}:$PATH",
        'job="${SLURM_JOB_ID:-$GRID_JOB_ID}"',  # SLURM's job id, or the local executor's
        f'wt={q(str(wt))}."$job"',
        f'rc_file={q(str(state / "status" / name))}."$job".rc',
        "finish() { rc=$?; cd /; git -C " + q(str(root)) + ' worktree remove --force "$wt" || true; '
        'echo "$rc" > "$rc_file"; }',
        "trap finish EXIT",
        f'git -C {q(str(root))} worktree add --detach "$wt" {commit}',
        'cd "$wt"',
        # the job's code is the commit's, whatever is installed
        'export PYTHONPATH="$wt/src${PYTHONPATH:+:$PYTHONPATH}"',
        f"dvc config --local cache.dir {q(str(cache_dir))}",
        repro,
        "",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- slurm
def check_cluster(jobs: list[Job], slurm: Slurm) -> None:
    """Refuse, before anything is submitted: no sbatch, unknown partition, GPUs a node cannot give."""
    require_sbatch(
        "run `grid submit` on a SLURM login node (Debian: apt-get install slurm-client), or write the job "
        "scripts only with --dry-run"
    )
    part, most = partition_gpus(slurm, "--partition or topology.partition")
    for job in jobs:
        if job.gpus > most:
            raise GridError(
                f"stage {job.stage} asks {job.gpus} GPUs but the largest node of partition {part!r} has {most}; "
                "lower its GPUs in params (topology.train, or the engine's gpus) or choose another partition"
            )
        if job.gpus and most % job.gpus:
            raise GridError(
                f"stage {job.stage} asks {job.gpus} GPUs, not a divisor of the {most} of a node in partition "
                f"{part!r}: runs could not pack onto nodes; use a divisor (topology.train)"
            )


def job_state(job: Job, state: Path) -> str:
    """COMPLETED / FAILED (exit N) from the job's own exit record, else the scheduler's word."""
    rc_file = state / "status" / f"{job.stage}.{job.job_id}.rc"
    if rc_file.exists():
        rc = rc_file.read_text().strip()
        if rc == CANCELLED:
            return "CANCELLED (a job it depends on failed)"
        return DONE if rc == "0" else f"FAILED (exit {rc})"
    if job.job_id and (known := (job_states([job.job_id]) or {}).get(job.job_id)):
        return known
    return "UNKNOWN (not in the queue, no exit record)"


# ---------------------------------------------------------------------------------------------- commands
def _git(root: Path, *args: str) -> str:
    return run(["git", "-C", str(root), *args]).strip()


def _check_clean(root: Path, outs: set[str]) -> None:
    """The jobs run the commit: refuse uncommitted edits of anything but dvc.lock and stage outputs."""
    dirty = []
    for line in _git(root, "status", "--porcelain", "--untracked-files=no").splitlines():
        path = line[3:].split(" -> ")[-1]
        if path != "dvc.lock" and not any(path == o or path.startswith(o.rstrip("/") + "/") for o in outs):
            dirty.append(path)
    if dirty:
        raise GridError(
            f"uncommitted changes in {', '.join(dirty[:5])}: the jobs run commit HEAD; commit them first "
            "(git add -A && git commit)"
        )


def load_submission(state: Path) -> Submission | None:
    path = state / MANIFEST
    if not path.exists():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    return Submission(data["commit"], data["executor"], {k: Job(**v) for k, v in data["jobs"].items()})


@dataclass
class Prepared:
    """What both executors start from: the commit, the graph, the jobs still to run, the shared cache."""

    root: Path
    state: Path
    commit: str
    edges: dict[str, list[str]]
    jobs: list[Job]
    carried: dict[str, Job]
    cache_dir: Path


def prepare(
    root: Path, params: Params, plan: dict[str, Any], keep_previous: bool, state: Path | None
) -> Prepared:
    """Check the workspace, read the graph and list the jobs, minus (``keep_previous``) those an earlier
    submission of the same commit completed or still has queued."""
    from dvc.repo import Repo

    root = root.resolve()
    state = (state or root / STATE_DIR).resolve()
    commit = _git(root, "rev-parse", "HEAD")
    with Repo(str(root)) as repo:
        outs = {str(Path(o.fs_path).relative_to(root)) for s in repo.index.stages for o in s.outs}
        cache_dir = Path(repo.cache.local_cache_dir).resolve()  # cache.dir (holds files/ and runs/)
    _check_clean(root, outs)
    edges, stale = dvc_graph(root)
    previous = load_submission(state)
    carried: dict[str, Job] = {}
    if keep_previous and previous and previous.commit == commit:
        for stage, job in previous.jobs.items():
            status = job_state(job, state)
            if status == DONE or status in ACTIVE:
                carried[stage] = job
    jobs = graph_jobs(edges, stale, lambda s: stage_gpus(s, params, plan), skip=frozenset(carried))
    for d in ("scripts", "logs", "status", "worktrees"):
        (state / d).mkdir(parents=True, exist_ok=True)
    return Prepared(root, state, commit, edges, jobs, carried, cache_dir)


def _write_script(p: Prepared, job: Job, slurm: Slurm | None) -> None:
    script = p.state / "scripts" / f"{job.stage}.sh"
    script.write_text(job_script(job, p.root, p.commit, p.state, slurm, p.cache_dir), encoding="utf-8")
    umask_mode(script, executable=True)
    job.script = str(script)


def _save(sub: Submission, state: Path) -> None:
    tmp = state / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(asdict(sub), indent=2), encoding="utf-8")
    tmp.replace(state / MANIFEST)


def submit(
    root: Path, params: Params, plan: dict[str, Any], slurm: Slurm, dry_run: bool, state: Path | None = None
) -> Submission:
    """Write (and unless ``dry_run`` submit) one SLURM job per stale stage; the manifest lands in ``state``."""
    p = prepare(root, params, plan, keep_previous=not dry_run, state=state)
    if not dry_run:
        check_cluster(p.jobs, slurm)
    sub = Submission(p.commit, "slurm", dict(p.carried), list(p.carried))
    for job in p.jobs:
        _write_script(p, job, slurm)
        if not dry_run:
            # a completed job of an earlier submission is not waited for (SLURM may have forgotten its id)
            waits = [
                sub.jobs[d].job_id
                for d in job.after
                if d in sub.jobs and (d not in p.carried or job_state(p.carried[d], p.state) in ACTIVE)
            ]
            job.job_id = sbatch(Path(job.script), [w for w in waits if w])
            job.log = str(p.state / "logs" / f"{job.stage}.{job.job_id}.log")
        sub.jobs[job.stage] = job
    if not dry_run:
        _save(sub, p.state)
    return sub


def visible_gpus() -> int:
    """GPUs of this machine (``nvidia-smi -L``; 0 without it)."""
    if shutil.which("nvidia-smi") is None:
        return 0
    out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=False)
    return sum(line.startswith("GPU ") for line in out.stdout.splitlines()) if out.returncode == 0 else 0


def run_local(
    root: Path,
    params: Params,
    plan: dict[str, Any],
    gpus: int,
    parallel: int,
    state: Path | None = None,
    poll_s: float = 1.0,
) -> Submission:
    """Run the job graph on this machine with the SLURM jobs' scripts, started by the ``Packer`` on free
    GPU slices (``CUDA_VISIBLE_DEVICES``; two 4-GPU runs share an 8-GPU node) and, for jobs without GPUs,
    ``parallel`` processes at a time; returns when every job ended.  A failed job's dependents are
    cancelled, the others go on."""
    p = prepare(root, params, plan, keep_previous=False, state=state)
    if gpus == 0 and (needy := [j.stage for j in p.jobs if j.gpus]):
        raise GridError(
            f"stage(s) {', '.join(needy[:3])} need GPUs and this machine has none: run on a GPU node, or set "
            "their GPUs to 0 in params (topology.train, the engines' gpus)"
        )
    packer = Packer(p.jobs, 1, max(gpus, 1), lambda s: 1.0, cpu_slots=parallel)
    sub = Submission(p.commit, "local")
    stamp = time.strftime("%Y%m%d%H%M%S")
    for job in p.jobs:
        _write_script(p, job, None)
        job.job_id = f"local-{stamp}-{len(sub.jobs)}"
        job.log = str(p.state / "logs" / f"{job.stage}.{job.job_id}.log")
        sub.jobs[job.stage] = job
    _save(sub, p.state)
    procs: dict[str, subprocess.Popen[bytes]] = {}
    while not packer.finished:
        for place in packer.start():
            job = sub.jobs[place.stage]
            env = {**os.environ, "GRID_JOB_ID": str(job.job_id)}
            if place.gpus:
                env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, place.gpus))
            with open(job.log, "wb") as log:
                procs[job.stage] = subprocess.Popen(
                    ["bash", job.script], stdout=log, stderr=subprocess.STDOUT, env=env
                )
        time.sleep(poll_s)
        for stage, proc in list(procs.items()):
            if proc.poll() is not None:
                del procs[stage]
                for gone in packer.finish(stage, ok=proc.returncode == 0):
                    record = p.state / "status" / f"{gone}.{sub.jobs[gone].job_id}.rc"
                    record.write_text(CANCELLED + "\n", encoding="utf-8")
    return sub


def status_lines(state: Path) -> tuple[list[str], bool, bool]:
    """One line per job (stage, id, state, log), a failed job's log tail under it; whether all completed,
    whether one failed."""
    sub = load_submission(state)
    if sub is None:
        raise GridError(f"no submission in {state}: run `compress-distill grid submit` first")
    lines, all_done, failed = [f"commit {sub.commit[:12]}: {len(sub.jobs)} jobs"], True, False
    for stage, job in sub.jobs.items():
        st = job_state(job, state)
        all_done &= st == DONE
        lines.append(f"{stage:<50} {job.job_id:>8} {st:<24} {job.log}")
        failed |= st.startswith("FAILED")
        if st.startswith("FAILED") and job.log and Path(job.log).exists():
            tail = Path(job.log).read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
            lines += [f"    | {t}" for t in tail]
    return lines, all_done, failed
