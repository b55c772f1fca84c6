"""Benchmark the evaluate and report stages; prints figures side by side and writes metrics/bench/evaluation.json.

1. evaluate@RUN on SmolLM2-135M (hf backend, CPU, fp32): the stage with its engine batching the questions
   vs. the same stage fed one question per ``generate`` call (a per-question loop), same questions, same
   greedy cap, durable cache off, model loaded before timing.  Reports median wall-clock, completion
   tokens/s, the speed-up and how many completions agree (batching changes logits only by float rounding).
2. report on a synthetic 55-run grid (``plan.expand`` of configs/paper.yaml): 15,000 predictions per run
   (the paper's per-run eval size), 5,000 traces per hub config; median build time.

    .venv/bin/python bench/evaluation.py [--questions 16] [--max-new-tokens 48] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from compress_distill.benchmarks.demo import generate as demo_questions
from compress_distill.config import load_params, parse_params
from compress_distill.llm import ChatRequest, make_backend
from compress_distill.modelhub import resolve_model
from compress_distill.schema import PREDICTIONS, QUESTIONS, read_rows, write_rows
from compress_distill.stages import evaluate, report

REPO = Path(__file__).resolve().parents[1]
# the synthetic grid is a test helper, not part of the installed package
sys.path.insert(0, str(REPO))
from tests.helpers.synthetic import write_grid

RUN = "smol-smol-lora-raw"


class PerQuestion:
    """A real backend driven one request per ``generate`` call: the naive evaluation loop."""

    def __init__(self, backend: Any) -> None:
        self.backend = backend
        self.model = backend.model
        self.stats = backend.stats

    def generate(self, requests: list[ChatRequest]) -> list[Any]:
        return [self.backend.generate([r])[0] for r in requests]

    def close(self) -> None:
        self.backend.close()


def bench_evaluate(tmp: Path, n: int, cap: int, repeats: int) -> dict[str, Any]:
    smol = resolve_model("smollm2-135m-instruct")
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["evaluate"] = {
        "engine": {"backend": "hf", "device": "cpu", "dtype": "float32", "batch_size": n},
        "max_new_tokens": cap,
        "max_per_dataset": None,
    }
    params = parse_params(raw)
    questions = tmp / "eval.parquet"
    write_rows(demo_questions(0, n, seed=0), questions, QUESTIONS)

    def engine(batch: int) -> Any:
        cfg = {**raw["evaluate"]["engine"], "batch_size": batch, "model": smol}
        be = make_backend(cfg, use_cache=False)
        be.generate([ChatRequest([{"role": "user", "content": "Hi"}], max_tokens=2)])  # load before timing
        return be

    batched, looped = engine(n), PerQuestion(engine(1))
    times: dict[str, list[float]] = {"batched": [], "loop": []}
    tokens: dict[str, int] = {}
    preds: dict[str, list[dict[str, Any]]] = {}
    for rep in range(repeats):
        # alternate the order so a noisy neighbour does not always hit the same variant
        for name, be in (
            (("batched", batched), ("loop", looped))
            if rep % 2 == 0
            else (("loop", looped), ("batched", batched))
        ):
            out = tmp / f"{name}.parquet"
            t0 = time.perf_counter()
            evaluate.run(params, RUN, Path(smol), questions, out, tmp / f"{name}.json", backend=be)
            times[name].append(time.perf_counter() - t0)
            preds[name] = read_rows(out, PREDICTIONS)
            tokens[name] = sum(p["completion_tokens"] for p in preds[name])
    batched.close()
    looped.close()
    med = {k: statistics.median(v) for k, v in times.items()}
    agree = sum(
        a["completion"] == b["completion"] for a, b in zip(preds["batched"], preds["loop"], strict=True)
    )
    acc = {k: sum(p["correct"] for p in v) / len(v) for k, v in preds.items()}
    return {
        "questions": n,
        "max_new_tokens": cap,
        "repeats": repeats,
        "batched_s": round(med["batched"], 3),
        "loop_s": round(med["loop"], 3),
        "speedup": round(med["loop"] / med["batched"], 2),
        "batched_tokens_per_s": round(tokens["batched"] / med["batched"], 1),
        "loop_tokens_per_s": round(tokens["loop"] / med["loop"], 1),
        "completion_tokens": tokens["batched"],
        "identical_completions": agree,
        "accuracy_batched": acc["batched"],
        "accuracy_loop": acc["loop"],
        "all_times_s": {k: [round(x, 3) for x in v] for k, v in times.items()},
    }


def bench_report(tmp: Path, repeats: int, n_questions: int, n_traces: int) -> dict[str, Any]:
    params = load_params(REPO / "configs/paper.yaml")
    t0 = time.perf_counter()
    runs = write_grid(tmp, params, n_questions=n_questions, n_traces=n_traces)
    setup = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        summary = report.run(
            params,
            tmp / "metrics",
            tmp / "data/predictions",
            tmp / "data/hub",
            tmp / "reports",
            tmp / "plots/report",
            tmp / "metrics/summary.json",
            tmp / "plots/train",
        )
        times.append(time.perf_counter() - t0)
    return {
        "runs": len(runs),
        "runs_reported": summary["rows_out"],
        "predictions_per_run": n_questions,
        "traces_per_config": n_traces,
        "bootstrap_samples": params.report.bootstrap_samples,
        "synthetic_grid_write_s": round(setup, 2),
        "report_build_s": round(statistics.median(times), 3),
        "all_times_s": [round(x, 3) for x in times],
        "index_html_mb": round((tmp / "reports/index.html").stat().st_size / 1e6, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--questions", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--report-questions", type=int, default=15_000)
    ap.add_argument("--report-traces", type=int, default=5_000)
    ap.add_argument("--out", type=Path, default=REPO / "metrics/bench/evaluation.json")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory() as d:
        ev = bench_evaluate(Path(d), args.questions, args.max_new_tokens, args.repeats)
    print(
        f"evaluate on SmolLM2-135M, {ev['questions']} questions, cap {ev['max_new_tokens']} tokens "
        f"(median of {ev['repeats']}):"
    )
    print(f"  batched engine     {ev['batched_s']:8.2f} s  {ev['batched_tokens_per_s']:7.1f} tok/s")
    print(f"  per-question loop  {ev['loop_s']:8.2f} s  {ev['loop_tokens_per_s']:7.1f} tok/s")
    print(
        f"  speed-up x{ev['speedup']}; identical completions {ev['identical_completions']}/{ev['questions']}; "
        f"accuracy {ev['accuracy_batched']:.3f} vs {ev['accuracy_loop']:.3f}"
    )
    with tempfile.TemporaryDirectory() as d:
        rp = bench_report(Path(d), args.repeats, args.report_questions, args.report_traces)
    print(
        f"report on a {rp['runs']}-run synthetic grid ({rp['predictions_per_run']:,} predictions per run, "
        f"{rp['traces_per_config']:,} traces per hub config, {rp['bootstrap_samples']} bootstrap samples):"
    )
    print(
        f"  build {rp['report_build_s']:.2f} s (median of {len(rp['all_times_s'])}), "
        f"index.html {rp['index_html_mb']} MB"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"evaluate": ev, "report": rp}, indent=2, sort_keys=True) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
