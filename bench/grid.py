"""Benchmark: the grid packer (``compress_distill.grid.Packer``) on the paper's jobs, 1 to 8 nodes of 8 GPUs.

Jobs, simulated with the packer's own scheduling code: the upstream stages of each teacher with Appendix H.4's
wall-clock on one 8-GPU node (teacher pass 43.5 h, Llama-3.3-70B compression 8 h 19 m, Ministral-3-14B 1 h 09 m;
only the Qwen teacher's times are reported, the gpt-oss-120B teacher is given the same), then the 55 student
runs with Table 11's wall-clock and GPU count (the GPU count is checked against ``configs/paper.yaml``'s
topology).  Each run waits for the upstream job of its source (raw and answer-only: the teacher pass;
compressed: its compression; truncated: the compression that sets its budget).  Judge, build and evaluation
have no published times and are left out.

Reported per node count: the packer's makespan, sequential ``dvc repro`` (sum of wall-clock) and the lower
bound max(total GPU-hours / GPUs, longest chain); target: makespan within 1.15x of the bound everywhere.

    .venv/bin/python bench/grid.py            # writes metrics/bench/grid.json
"""

from __future__ import annotations

import argparse
from pathlib import Path

from compress_distill.config import load_params
from compress_distill.grid import Job, simulate
from compress_distill.metrics import write_metrics
from compress_distill.plan import expand

REPO = Path(__file__).resolve().parents[1]
GPUS_PER_NODE = 8
NODES = (1, 2, 4, 8)
TARGET = 1.15

# Appendix H.4: hours on one 8-GPU node
UPSTREAM_HOURS = {"generate": 43.5, "compress-llama70b": 8 + 19 / 60, "compress-ministral14b": 1 + 9 / 60}

# Table 11: run -> (GPUs, wall-clock hours)
TABLE_11: dict[str, tuple[int, float]] = {
    "qwen397b-qwen08b-lora-raw": (4, 1.1),
    "qwen397b-qwen08b-lora-answer-only": (4, 0.1),
    "qwen397b-qwen08b-lora-truncated": (4, 0.1),
    "qwen397b-qwen08b-lora-compressed-llama70b": (4, 0.2),
    "qwen397b-qwen08b-lora-compressed-ministral14b": (4, 0.1),
    "qwen397b-qwen08b-full-raw": (4, 1.1),
    "qwen397b-qwen08b-full-answer-only": (4, 0.1),
    "qwen397b-qwen08b-full-truncated": (4, 0.1),
    "qwen397b-qwen08b-full-compressed-llama70b": (4, 0.2),
    "qwen397b-qwen08b-full-compressed-ministral14b": (4, 0.1),
    "qwen397b-llama8b-lora-raw": (8, 2.7),
    "qwen397b-llama8b-lora-answer-only": (8, 0.1),
    "qwen397b-llama8b-lora-truncated": (8, 0.3),
    "qwen397b-llama8b-lora-compressed-llama70b": (4, 0.8),
    "qwen397b-llama8b-lora-compressed-ministral14b": (4, 0.6),
    "qwen397b-llama8b-full-raw": (8, 3.1),
    "qwen397b-llama8b-full-answer-only": (8, 0.1),
    "qwen397b-llama8b-full-truncated": (8, 0.3),
    "qwen397b-llama8b-full-compressed-llama70b": (4, 0.9),
    "qwen397b-llama8b-full-compressed-ministral14b": (4, 0.6),
    "qwen397b-qwen9b-lora-raw": (8, 2.7),
    "qwen397b-qwen9b-lora-answer-only": (8, 0.1),
    "qwen397b-qwen9b-lora-truncated": (8, 0.3),
    "qwen397b-qwen9b-lora-compressed-llama70b": (4, 0.8),
    "qwen397b-qwen9b-lora-compressed-ministral14b": (4, 0.6),
    "qwen397b-qwen9b-full-raw": (8, 3.3),
    "qwen397b-qwen9b-full-answer-only": (8, 0.2),
    "qwen397b-qwen9b-full-truncated": (8, 0.4),
    "qwen397b-qwen9b-full-compressed-llama70b": (4, 1.0),
    "qwen397b-qwen9b-full-compressed-ministral14b": (4, 0.8),
    "qwen397b-gptoss20b-full-raw": (8, 3.1),
    "qwen397b-gptoss20b-full-truncated": (8, 0.5),
    "qwen397b-gptoss20b-full-compressed-llama70b": (8, 0.6),
    "qwen397b-gptoss20b-full-compressed-ministral14b": (8, 0.5),
    "gptoss120b-qwen08b-lora-raw": (4, 0.6),
    "gptoss120b-qwen08b-lora-compressed-llama70b": (4, 0.2),
    "gptoss120b-qwen08b-lora-compressed-ministral14b": (4, 0.1),
    "gptoss120b-qwen08b-full-raw": (4, 0.5),
    "gptoss120b-qwen08b-full-compressed-llama70b": (4, 0.2),
    "gptoss120b-qwen08b-full-compressed-ministral14b": (4, 0.1),
    "gptoss120b-llama8b-lora-raw": (8, 1.4),
    "gptoss120b-llama8b-lora-compressed-llama70b": (4, 0.6),
    "gptoss120b-llama8b-lora-compressed-ministral14b": (4, 0.5),
    "gptoss120b-llama8b-full-raw": (8, 1.5),
    "gptoss120b-llama8b-full-compressed-llama70b": (4, 0.7),
    "gptoss120b-llama8b-full-compressed-ministral14b": (4, 0.6),
    "gptoss120b-qwen9b-lora-raw": (8, 1.3),
    "gptoss120b-qwen9b-lora-compressed-llama70b": (4, 0.7),
    "gptoss120b-qwen9b-lora-compressed-ministral14b": (4, 0.6),
    "gptoss120b-qwen9b-full-raw": (8, 1.7),
    "gptoss120b-qwen9b-full-compressed-llama70b": (4, 0.8),
    "gptoss120b-qwen9b-full-compressed-ministral14b": (4, 0.7),
    "gptoss120b-gptoss20b-full-raw": (8, 1.6),
    "gptoss120b-gptoss20b-full-compressed-llama70b": (8, 0.5),
    "gptoss120b-gptoss20b-full-compressed-ministral14b": (8, 0.5),
}


def paper_jobs() -> tuple[list[Job], dict[str, float]]:
    """The paper's upstream stages and 55 runs as jobs in dependency order, with their hours."""
    params = load_params(REPO / "configs" / "paper.yaml")
    runs = expand(params)["runs"]
    if set(runs) != set(TABLE_11):
        raise SystemExit(f"configs/paper.yaml's grid differs from Table 11: {set(runs) ^ set(TABLE_11)}")
    jobs, hours = [], {}
    for teacher in params.grid.teachers:
        gen = f"generate@{teacher}"
        jobs.append(Job(gen, GPUS_PER_NODE, [], []))
        hours[gen] = UPSTREAM_HOURS["generate"]
        for c in params.compressors:
            stage = f"compress@{teacher}-{c}"
            jobs.append(Job(stage, GPUS_PER_NODE, [gen], [gen]))
            hours[stage] = UPSTREAM_HOURS[f"compress-{c}"]
    for name, run in runs.items():
        gpus, wall = TABLE_11[name]
        if run["gpus"] != gpus:
            raise SystemExit(f"{name}: topology gives {run['gpus']} GPUs, Table 11 {gpus}")
        teacher, source = run["teacher"], run["source"]
        if source.startswith("compressed-"):
            up = f"compress@{teacher}-{source.removeprefix('compressed-')}"
        elif source == "truncated":
            up = f"compress@{teacher}-{params.truncate[teacher].compressor}"
        else:
            up = f"generate@{teacher}"
        jobs.append(Job(f"train@{name}", gpus, [up], [up]))
        hours[f"train@{name}"] = wall
    return jobs, hours


def longest_chain(jobs: list[Job], hours: dict[str, float]) -> float:
    finish: dict[str, float] = {}
    for job in jobs:  # dependency order
        finish[job.stage] = hours[job.stage] + max((finish[d] for d in job.after), default=0.0)
    return max(finish.values())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "metrics" / "bench" / "grid.json")
    a = ap.parse_args()
    jobs, hours = paper_jobs()
    gpu_hours = sum(hours[j.stage] * j.gpus for j in jobs)
    sequential = sum(hours.values())
    chain = longest_chain(jobs, hours)
    print(
        f"{len(jobs)} jobs, {gpu_hours:.1f} GPU-hours, sequential {sequential:.1f} h, longest chain {chain:.1f} h"
    )
    print(f"{'nodes':>5}{'makespan h':>12}{'sequential h':>14}{'bound h':>9}{'ratio':>7}{'GPU use':>9}")
    out: dict[str, float] = {"gpu_hours": gpu_hours, "sequential_h": sequential, "longest_chain_h": chain}
    worst = 0.0
    for nodes in NODES:
        placements = simulate(jobs, hours, nodes, GPUS_PER_NODE)
        makespan = max(p.end for p in placements)
        bound = max(gpu_hours / (nodes * GPUS_PER_NODE), chain)
        ratio = makespan / bound
        worst = max(worst, ratio)
        use = gpu_hours / (makespan * nodes * GPUS_PER_NODE)
        print(f"{nodes:>5}{makespan:>12.1f}{sequential:>14.1f}{bound:>9.1f}{ratio:>7.3f}{use:>9.1%}")
        out |= {
            f"nodes{nodes}_makespan_h": makespan,
            f"nodes{nodes}_bound_h": bound,
            f"nodes{nodes}_ratio": ratio,
        }
    out["worst_ratio"] = worst
    print(f"\nworst makespan / lower bound: {worst:.3f} (target <= {TARGET})")
    write_metrics(a.out, out)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
