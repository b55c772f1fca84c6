"""Benchmark: answer extraction + verification over a corpus shaped like the paper's trace corpus.

Corpus: the Qwen3.5-397B teacher's 283,335 accepted traces (paper Appendix A, Table 4): per-dataset counts,
mean reasoning lengths in characters (log-normal around each mean) and each dataset's answer type (letters
for the multiple-choice sets, numbers for GSM8K / MultiArith / SVAMP).  Each trace is
``<think>reasoning</think>response``: the reasoning is long and restates numbers, letters and even "the answer
is ..." sentences (which must never win); the response is short and states the answer in one of several
styles (\\boxed, ####, "the answer is", bold, option text ...).  About 8% of responses give a wrong answer and
2% of traces are cut off inside the think block (never correct), so ``correct`` is known for every trace and
the agreement of each grader with it is reported beside its speed.

Timed: ``answers.grade`` over the whole corpus, generated in chunks so memory stays ~100 MB; generation is
outside the timed region.  Baseline, in the same run: plain math-verify ``parse`` + ``verify`` (default
settings, the usual reward-function call on the whole completion) on a random sample of the same corpus.

    .venv/bin/python bench/answers.py                 # full corpus, 2,000-trace baseline sample
    .venv/bin/python bench/answers.py --n 20000 --baseline-n 300
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import multiprocessing as mp
import os
import platform
import random
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compress_distill.answers import grade

REPO = Path(__file__).resolve().parents[1]

PAPER_TOTAL = 283_335


@dataclass(frozen=True)
class Source:
    name: str
    count: int  # accepted traces, Qwen3.5-397B teacher (Table 4)
    reasoning_chars: int  # mean reasoning length (Table 4)
    answer_type: str
    n_choices: int


SOURCES = (
    Source("aqua_rat", 87_441, 7_583, "letter", 5),
    Source("gsm8k", 7_186, 4_688, "numeric", 0),
    Source("multiarith", 416, 1_750, "numeric", 0),
    Source("svamp", 960, 2_926, "numeric", 0),
    Source("arc_challenge", 1_079, 4_264, "letter", 4),
    Source("gpqa_diamond", 135, 18_734, "letter", 4),
    Source("commonsense_qa", 8_593, 6_418, "letter", 5),
    Source("medexpqa", 395, 11_541, "letter", 4),
    Source("medmcqa", 167_277, 6_801, "letter", 4),
    Source("medqa", 9_778, 10_806, "letter", 4),
    Source("mmlu_medical", 33, 9_876, "letter", 4),
    Source("mmlu_stem", 42, 9_347, "letter", 4),
)
assert sum(s.count for s in SOURCES) == PAPER_TOTAL

SIGMA = 0.6  # log-normal spread of reasoning lengths (the paper gives means only)
WRONG_RATE = 0.08
CUT_RATE = 0.02  # traces stopped inside <think>: empty final response
EXPLANATION_CHARS = 600  # mean chars of a final response before its answer statement

_WORDS = [
    "so",
    "the",
    "total",
    "is",
    "then",
    "we",
    "need",
    "to",
    "compute",
    "each",
    "part",
    "first",
    "check",
    "whether",
    "option",
    "seems",
    "plausible",
    "but",
    "wait",
    "let",
    "me",
    "recount",
    "carefully",
    "since",
    "the",
    "question",
    "asks",
    "about",
    "patient",
    "drug",
    "dose",
    "because",
    "therefore",
    "answer",
    "consider",
    "alternative",
    "hypothesis",
    "mechanism",
    "value",
    "result",
    "step",
    "per",
    "hour",
    "apples",
    "cost",
    "dollars",
]
_OPTION_TEXTS = (
    "Paris",
    "increased cardiac output",
    "metformin",
    "12 hours",
    "the mitochondria",
    "hypokalemia",
    "a vector",
    "Rome",
    "decreased renal clearance",
    "insulin",
    "the ribosome",
    "none of the above",
    "Berlin",
    "aspirin",
)


def text_pool(rng: random.Random, chars: int, premature_answers: bool) -> str:
    """Deliberation-like text full of numbers and option letters; with ``premature_answers`` (reasoning only)
    also "so the answer is B? Or 12?" sentences, which the final response must never lose to."""
    words = _WORDS if premature_answers else [w for w in _WORDS if w != "answer"]
    parts: list[str] = []
    size = 0
    while size < chars:
        kind = rng.random() if premature_answers else rng.random() * 0.93
        if kind < 0.55:
            piece = " ".join(rng.choice(words) for _ in range(rng.randint(6, 18))) + "."
        elif kind < 0.8:
            a, b = rng.randint(2, 999), rng.randint(2, 99)
            piece = f"{a} * {b} = {a * b}, and {a * b} - {b} = {a * b - b}, so maybe {rng.randint(1, 5000)}."
        elif kind < 0.93:
            piece = f"Option {rng.choice('ABCDE')} says {rng.choice(_OPTION_TEXTS)}; ({rng.choice('ABCDE')}) looks wrong."
        else:
            piece = f"Hmm, so the answer is {rng.choice('ABCDE')}? Or {rng.randint(1, 500)}? Let me re-check."
        parts.append(piece)
        size += len(piece) + 1
    return "\n".join(parts) if rng.random() < 0.5 else " ".join(parts)


def explanation(rng: random.Random, pool: str) -> str:
    """The body of a final response before its answer statement (~600 chars, log-normal)."""
    length = int(min(rng.lognormvariate(math.log(EXPLANATION_CHARS) - 0.125, 0.5), 4_000))
    start = pool.find(" ", rng.randrange(len(pool) - length - 1)) + 1  # start on a word boundary
    return pool[start : start + length].rsplit(" ", 1)[0]


def letter_response(rng: random.Random, letter: str, text: str, body: str) -> str:
    lead = rng.choice(
        (
            "Comparing the options, the mechanism rules out the others.",
            "Options (A) and (C) contradict the findings; 2 of the 4 remaining facts point one way.",
            "The clinical picture fits best with one choice.",
            "",
        )
    )
    style = rng.randrange(8)
    if style == 0:
        answer = f"The correct answer is **{letter}) {text}**."
    elif style == 1:
        answer = f"**Answer: {letter}**"
    elif style == 2:
        answer = f"Final answer: $\\boxed{{{letter}}}$"
    elif style == 3:
        answer = f"Therefore, the answer is ({letter}) {text}."
    elif style == 4:
        answer = f"**{letter}. {text}**\n\nThis option matches every finding."
    elif style == 5:
        answer = f"The answer is {letter}."
    elif style == 6:
        answer = f"**Final Answer**\n\n{letter}"
    else:
        answer = f"Answer: {text}"
    return f"{body}\n\n{lead}\n\n{answer}".strip()


def numeric_response(rng: random.Random, value: int, body: str) -> str:
    a = rng.randint(2, 60)
    lead = f"First, {a} + {value + a} = {2 * a + value}. Then subtract {a} twice."
    shown = f"{value:,}" if value >= 1000 and rng.random() < 0.5 else str(value)
    style = rng.randrange(6)
    if style == 0:
        answer = f"#### {shown}"
    elif style == 1:
        answer = f"The answer is $\\boxed{{{shown}}}$."
    elif style == 2:
        answer = f"She earns **${shown}** in total."
    elif style == 3:
        answer = f"Therefore, the answer is {shown} apples."
    elif style == 4:
        answer = f"Total = {a} + {value - a} = {shown}"
    else:
        answer = f"**Final Answer:** {shown}"
    return f"{body}\n\n{lead}\n\n{answer}"


@dataclass(frozen=True)
class Trace:
    text: str
    gold: str
    answer_type: str
    choices: list[str] | None
    correct: bool  # by construction


@dataclass(frozen=True)
class Pools:
    reasoning: str  # sliced into think blocks
    response: str  # sliced into the explanation before the answer statement


def make_trace(rng: random.Random, src: Source, pools: Pools) -> Trace:
    pool = pools.reasoning
    mu = math.log(src.reasoning_chars) - SIGMA**2 / 2
    length = int(min(max(rng.lognormvariate(mu, SIGMA), 50), len(pool) - 1))
    start = rng.randrange(len(pool) - length)
    reasoning = pool[start : start + length]
    wrong = rng.random() < WRONG_RATE
    if rng.random() < CUT_RATE:  # generation hit the token cap inside the think block
        gold = "B" if src.answer_type == "letter" else "18"
        choices = rng.sample(_OPTION_TEXTS, src.n_choices) if src.n_choices else None
        return Trace(f"<think>\n{reasoning}", gold, src.answer_type, choices, False)
    if src.answer_type == "letter":
        choices = rng.sample(_OPTION_TEXTS, src.n_choices)
        gold_i = rng.randrange(src.n_choices)
        said_i = (gold_i + rng.randrange(1, src.n_choices)) % src.n_choices if wrong else gold_i
        response = letter_response(
            rng, "ABCDEFGHIJ"[said_i], choices[said_i], explanation(rng, pools.response)
        )
        gold = "ABCDEFGHIJ"[gold_i]
    else:
        choices = None
        value = rng.choice((rng.randint(1, 200), rng.randint(1000, 99_999)))
        response = numeric_response(
            rng, value + rng.randint(1, 9) if wrong else value, explanation(rng, pools.response)
        )
        gold = str(value)
    return Trace(f"<think>\n{reasoning}\n</think>\n\n{response}", gold, src.answer_type, choices, not wrong)


def corpus_plan(n: int, seed: int) -> list[Source]:
    """Which source each of ``n`` traces comes from: the paper's proportions, shuffled."""
    plan: list[Source] = []
    for src in SOURCES:
        plan.extend([src] * max(1, round(src.count * n / PAPER_TOTAL)))
    random.Random(seed).shuffle(plan)
    return plan[:n]


def run_ours(plan: list[Source], pool: Pools, seed: int, chunk: int) -> dict[str, float]:
    rng = random.Random(seed)
    timed = 0.0
    agree = 0
    chars = 0
    per_chunk: list[float] = []
    for lo in range(0, len(plan), chunk):
        traces = [make_trace(rng, src, pool) for src in plan[lo : lo + chunk]]  # not timed
        chars += sum(len(t.text) for t in traces)
        t0 = time.perf_counter()
        grades = [grade(t.text, t.gold, t.answer_type, t.choices) for t in traces]
        dt = time.perf_counter() - t0
        timed += dt
        per_chunk.append(len(traces) / dt)
        agree += sum(g.correct == t.correct for g, t in zip(grades, traces))
    return {
        "traces": len(plan),
        "seconds": timed,
        "traces_per_s": len(plan) / timed,
        "median_chunk_traces_per_s": statistics.median(per_chunk),
        "agreement_with_construction": agree / len(plan),
        "mean_trace_chars": chars / len(plan),
    }


def _parallel_worker(
    rank: int, workers: int, plan: list[Source], pools: Pools, seed: int, chunk: int, barrier: Any, out: Any
) -> None:
    agree = done = 0
    for r in range(math.ceil(len(plan) / (chunk * workers))):
        lo = (r * workers + rank) * chunk
        rng = random.Random(seed * 1_000_003 + r * workers + rank)
        traces = [make_trace(rng, src, pools) for src in plan[lo : lo + chunk]]  # not timed
        barrier.wait()  # every worker has its chunk: the parent starts the clock
        grades = [grade(t.text, t.gold, t.answer_type, t.choices) for t in traces]
        barrier.wait()  # every worker is done: the parent stops the clock
        agree += sum(g.correct == t.correct for g, t in zip(grades, traces))
        done += len(traces)
    out.put((done, agree))


def run_parallel(plan: list[Source], pools: Pools, seed: int, chunk: int, workers: int) -> dict[str, float]:
    """Wall-clock throughput with ``workers`` processes grading side by side (generation between barriers)."""
    ctx = mp.get_context("fork")  # children inherit the corpus plan and text pools without pickling
    barrier = ctx.Barrier(workers + 1)
    out = ctx.SimpleQueue()
    procs = [
        ctx.Process(target=_parallel_worker, args=(rank, workers, plan, pools, seed, chunk, barrier, out))
        for rank in range(workers)
    ]
    for proc in procs:
        proc.start()
    wall = 0.0
    rounds: list[float] = []
    for r in range(math.ceil(len(plan) / (chunk * workers))):
        barrier.wait()
        t0 = time.perf_counter()
        barrier.wait()
        dt = time.perf_counter() - t0
        wall += dt
        rounds.append(len(plan[r * workers * chunk : (r + 1) * workers * chunk]) / dt)
    parts = [out.get() for _ in procs]
    for proc in procs:
        proc.join()
        if proc.exitcode != 0:
            raise RuntimeError(f"bench worker exited with {proc.exitcode}")
    done = sum(p[0] for p in parts)
    return {
        "workers": workers,
        "traces": done,
        "seconds": wall,
        "traces_per_s": done / wall,
        "median_round_traces_per_s": statistics.median(rounds),
        "agreement_with_construction": sum(p[1] for p in parts) / done,
    }


def run_baseline(plan: list[Source], pool: Pools, seed: int, n: int) -> dict[str, float]:
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, StringExtractionConfig, parse, verify

    logging.getLogger("math_verify").setLevel(logging.ERROR)  # it logs every unparsable completion
    rng = random.Random(seed + 1)
    sample = [make_trace(rng, src, pool) for src in random.Random(seed + 2).sample(plan, min(n, len(plan)))]
    numeric_cfg = [LatexExtractionConfig(), ExprExtractionConfig()]
    # ours on the very same sample, median of 5 passes, right before the baseline: a ratio that machine load
    # drifting during the long corpus run cannot skew
    ours_passes = []
    for _ in range(5):
        t0 = time.perf_counter()
        for t in sample:
            grade(t.text, t.gold, t.answer_type, t.choices)
        ours_passes.append(time.perf_counter() - t0)
    agree = 0
    by_type: dict[str, list[float]] = {}
    t0 = time.perf_counter()
    for t in sample:
        t1 = time.perf_counter()
        # math-verify's documented usage: letters through StringExtractionConfig, numbers through the defaults
        cfg = [StringExtractionConfig()] if t.answer_type == "letter" else numeric_cfg
        gold = parse(t.gold, extraction_config=cfg)
        pred = parse(t.text, extraction_config=cfg)
        agree += bool(verify(gold, pred)) == t.correct
        by_type.setdefault(t.answer_type, []).append(time.perf_counter() - t1)
    dt = time.perf_counter() - t0
    return {
        "traces": len(sample),
        "seconds": dt,
        "traces_per_s": len(sample) / dt,
        "agreement_with_construction": agree / len(sample),
        "ours_same_sample_traces_per_s": len(sample) / statistics.median(ours_passes),
        **{f"{k}_traces_per_s": len(v) / sum(v) for k, v in sorted(by_type.items())},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=PAPER_TOTAL, help="traces in the corpus (paper: 283,335)")
    ap.add_argument("--baseline-n", type=int, default=2_000, help="traces graded by the math-verify baseline")
    ap.add_argument("--chunk", type=int, default=10_000, help="traces generated (untimed) per timed batch")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2, help="processes for the parallel run (0: skip it)")
    ap.add_argument("--out", type=Path, default=REPO / "metrics" / "bench" / "answers.json")
    args = ap.parse_args()

    pool = Pools(
        text_pool(random.Random(args.seed), 4_000_000, premature_answers=True),
        text_pool(random.Random(args.seed + 1), 1_000_000, premature_answers=False),
    )
    plan = corpus_plan(args.n, args.seed)
    # warm-up: regex compilation and caches are not what we measure
    run_ours(plan[:200], pool, args.seed + 99, 200)
    ours = run_ours(plan, pool, args.seed, args.chunk)
    par = run_parallel(plan, pool, args.seed, args.chunk, args.workers) if args.workers > 0 else None
    base = run_baseline(plan, pool, args.seed, args.baseline_n) if args.baseline_n > 0 else None

    ratio = ours["traces_per_s"] / base["traces_per_s"] if base else None
    full_corpus_s = PAPER_TOTAL / ours["traces_per_s"]
    print(f"corpus: {ours['traces']:,} traces, mean {ours['mean_trace_chars']:,.0f} chars/trace")
    print(
        f"ours, 1 process  : {ours['traces_per_s']:>10,.0f} traces/s  ({ours['seconds']:.2f} s for "
        f"{ours['traces']:,}; median chunk {ours['median_chunk_traces_per_s']:,.0f}/s)  "
        f"agreement {ours['agreement_with_construction']:.4f}"
    )
    if par:
        print(
            f"ours, {par['workers']} processes: {par['traces_per_s']:>10,.0f} traces/s  ({par['seconds']:.2f} s wall "
            f"for {par['traces']:,}; median round {par['median_round_traces_per_s']:,.0f}/s)  "
            f"agreement {par['agreement_with_construction']:.4f}"
        )
    if base:
        print(
            f"math-verify: {base['traces_per_s']:>9,.1f} traces/s  ({base['seconds']:.2f} s for {base['traces']:,})"
            f"  agreement {base['agreement_with_construction']:.4f}"
        )
        per_type = ", ".join(
            f"{k.removesuffix('_traces_per_s')} {v:,.0f}/s"
            for k, v in base.items()
            if k in ("letter_traces_per_s", "numeric_traces_per_s")
        )
        print(f"             by type: {per_type}")
        same = base["ours_same_sample_traces_per_s"] / base["traces_per_s"]
        print(
            f"ratio vs math-verify (both 1 process): {ratio:,.0f}x over the corpus run; {same:,.0f}x on the same "
            f"{base['traces']:,} traces ({base['ours_same_sample_traces_per_s']:,.0f} vs {base['traces_per_s']:,.0f}/s)"
        )
    print(
        f"whole paper corpus ({PAPER_TOTAL:,} traces): {full_corpus_s:.2f} s on 1 process"
        + (f", {PAPER_TOTAL / par['traces_per_s']:.2f} s on {par['workers']}" if par else "")
        + " (target < 15 s, >= 20,000 traces/s on 2 cores)"
    )

    result = {
        "corpus_traces": ours["traces"],
        "mean_trace_chars": round(ours["mean_trace_chars"], 1),
        "ours_traces_per_s": round(ours["traces_per_s"], 1),
        "ours_seconds": round(ours["seconds"], 3),
        "ours_median_chunk_traces_per_s": round(ours["median_chunk_traces_per_s"], 1),
        "ours_agreement": round(ours["agreement_with_construction"], 5),
        "paper_corpus_seconds": round(full_corpus_s, 3),
        "parallel_workers": par["workers"] if par else 0,
        "parallel_traces_per_s": round(par["traces_per_s"], 1) if par else None,
        "parallel_seconds": round(par["seconds"], 3) if par else None,
        "parallel_median_round_traces_per_s": round(par["median_round_traces_per_s"], 1) if par else None,
        "parallel_agreement": round(par["agreement_with_construction"], 5) if par else None,
        "paper_corpus_seconds_parallel": round(PAPER_TOTAL / par["traces_per_s"], 3) if par else None,
        "baseline_traces": base["traces"] if base else 0,
        "baseline_traces_per_s": round(base["traces_per_s"], 2) if base else None,
        "baseline_seconds": round(base["seconds"], 3) if base else None,
        "baseline_agreement": round(base["agreement_with_construction"], 5) if base else None,
        "baseline_letter_traces_per_s": round(base.get("letter_traces_per_s", 0.0), 2) if base else None,
        "baseline_numeric_traces_per_s": round(base.get("numeric_traces_per_s", 0.0), 2) if base else None,
        "speedup_vs_math_verify": round(ratio, 1) if ratio else None,
        "ours_same_sample_traces_per_s": round(base["ours_same_sample_traces_per_s"], 1) if base else None,
        "speedup_vs_math_verify_same_sample": (
            round(base["ours_same_sample_traces_per_s"] / base["traces_per_s"], 1) if base else None
        ),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(args.out)
    print(f"wrote {args.out.relative_to(REPO) if args.out.is_relative_to(REPO) else args.out}")


if __name__ == "__main__":
    main()
