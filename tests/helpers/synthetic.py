"""A synthetic but schema-exact pipeline output for a whole grid: the report's test and benchmark fixture.

Writes, under one root and for every run of ``plan.expand(params)``, what the real stages write --
``metrics/eval/RUN.json`` (computed by the real ``eval_metrics`` from the synthetic predictions),
``data/predictions/RUN.parquet``, ``metrics/train/RUN.json``, dvclive loss TSVs, and per teacher the built
``data/hub/T/<config>/train-00000-of-00001.parquet`` with judge columns on the compressed configs -- so
the report can be tested and timed at the paper's 55-run scale without training anything.

Accuracy follows a shared per-question difficulty, so runs on the same questions are positively correlated
like real ones (what the paired bootstrap exploits); the source sets the accuracy and length profile.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from compress_distill.config import Params
from compress_distill.evaluation.metrics import eval_metrics
from compress_distill.metrics import write_metrics
from compress_distill.names import VERDICTS, compressed_source, compressor_of
from compress_distill.plan import Run, expand_runs
from compress_distill.schema import PREDICTIONS, TRACES, to_table, write_table

# dataset -> (domain, eval group)
DATASETS: dict[str, tuple[str, str]] = {
    "gsm8k": ("math", "Math"),
    "arc_challenge": ("science", "Science"),
    "medqa": ("medical", "Medicine"),
    "commonsense_qa": ("commonsense", "Commonsense"),
    "hellaswag": ("commonsense", "OOD-Reasoning"),
    "mmlu_humanities": ("knowledge", "OOD-Knowledge"),
}
# source kind -> (accuracy, mean completion tokens, truncation rate)
PROFILE: dict[str, tuple[float, float, float]] = {
    "raw": (0.80, 1800.0, 0.02),
    "compressed": (0.76, 220.0, 0.003),
    "truncated": (0.72, 400.0, 0.001),
    "answer-only": (0.55, 4.0, 0.0),
}


def _kind(source: str) -> str:
    return source if compressor_of(source) is None else "compressed"


def _question_ids(n: int) -> list[tuple[str, str, str]]:
    names = list(DATASETS)
    return [
        (f"{names[i % len(names)]}/test/{i}", names[i % len(names)], DATASETS[names[i % len(names)]][1])
        for i in range(n)
    ]


def write_run(root: Path, run: str, spec: Run, difficulty: np.ndarray, seed: int, cap: int) -> None:
    rng = np.random.default_rng(seed)
    acc, mean_tokens, trunc_rate = PROFILE[_kind(spec.source)]
    if compressor_of(spec.source) is not None:
        acc -= 0.01 * (sum(map(ord, spec.source)) % 3)  # compressors differ a little
    qs = _question_ids(len(difficulty))
    noise = rng.random(len(qs)) < 0.1
    correct = (difficulty < acc) ^ noise
    truncated = rng.random(len(qs)) < trunc_rate
    tokens = np.where(truncated, cap, np.maximum(1, rng.gamma(2.0, mean_tokens / 2.0, len(qs)))).astype(int)
    correct &= ~truncated
    no_reasoning = spec.source == "answer-only"
    rows = [
        {
            "question_id": qid,
            "run": run,
            "group": group,
            "dataset": ds,
            "completion": "The answer is A.",
            "reasoning": "",
            "extracted": "A",
            "correct": bool(c),
            "completion_tokens": int(t),
            "reasoning_chars": 0 if no_reasoning else int(t * 4),
            "reasoning_tokens": 0 if no_reasoning else int(max(t - 8, 0)),
            "truncated": bool(cut),
        }
        for (qid, ds, group), c, t, cut in zip(qs, correct, tokens, truncated, strict=True)
    ]
    write_table(to_table(rows, PREDICTIONS), root / "data/predictions" / f"{run}.parquet")
    cols = {k: [r[k] for r in rows] for k in PREDICTIONS.names}
    n = len(rows)
    m = eval_metrics(cols)
    write_metrics(
        root / "metrics/eval" / f"{run}.json",
        {**m, "rows_in": n, "rows_out": n, "rejects": {}, "wall_clock_s": 60.0, "gpu_hours": 60.0 / 3600},
    )
    hours = {"raw": 2.5, "compressed": 0.6, "truncated": 0.4, "answer-only": 0.1}[_kind(spec.source)]
    tokens_m = {"raw": 600e6, "compressed": 90e6, "truncated": 75e6, "answer-only": 24e6}[_kind(spec.source)]
    final = {"raw": 0.31, "compressed": 0.45, "truncated": 0.40, "answer-only": 0.29}[_kind(spec.source)]
    write_metrics(
        root / "metrics/train" / f"{run}.json",
        {
            "trainable_tokens": int(tokens_m),
            "packed_sequences": int(tokens_m / 16384),
            "padding_fraction": 0.02,
            "wall_clock_s": hours * 3600,
            "tokens_per_s": tokens_m / (hours * 3600),
            "gpu_hours": hours * 8,
            "final_loss": final,
            "rows_in": 10,
            "rows_out": 10,
            "rejects": {},
        },
    )
    live = root / "plots/train" / run / "plots/metrics/train"
    live.mkdir(parents=True, exist_ok=True)
    steps = np.arange(1, 41)
    loss = final + 1.5 * np.exp(-steps / 8.0) + rng.normal(0, 0.01, len(steps))
    (live / "loss.tsv").write_text(
        "timestamp\tstep\tloss\n"
        + "".join(f"{1700000000000 + s}\t{s}\t{v:.4f}\n" for s, v in zip(steps, loss, strict=True))
    )


def write_hub(
    root: Path, teacher: str, compressors: list[str], n_traces: int, seed: int, injection: str | None = None
) -> None:
    """``data/hub/T/<config>/`` for raw, each compressed config (with judge columns), truncated, answer-only."""
    rng = np.random.default_rng(seed)
    qs = _question_ids(n_traces)
    raw_chars = rng.gamma(2.0, 3500.0, n_traces).astype(int) + 50

    def base(i: int, qid: str, ds: str, source: str, reasoning: str) -> dict[str, Any]:
        return {
            # an injected dataset name also reaches the judge table and the viewer's filter
            "id": f"{teacher}/{qid}",
            "question_id": qid,
            "dataset": f"{injection or ''}{ds}",
            "domain": DATASETS[ds][0],
            "question": f"{injection or ''}Question {i}: which option is right?",
            "answer": "A",
            "answer_type": "letter",
            "reasoning": reasoning,
            "response": "The answer is A.",
            "source": source,
            "reasoning_chars": len(reasoning),
            "reasoning_tokens": len(reasoning) // 4,
            "compression_ratio": len(reasoning) / raw_chars[i] if source != "answer-only" else 0.0,
            "teacher_model": f"org/{teacher}",
            "compressor_model": "",
            "prompt_hash": "0" * 12,
            "answer_preserved": None,
        }

    def text(i: int, n: int, tag: str) -> str:
        unit = f"[{tag} {i}] Step: eliminate options B-E; option A matches. "
        body = (unit * (n // len(unit) + 1))[:n]
        return f"{injection}\n{body}" if injection else body

    raw = [base(i, q, ds, "raw", text(i, int(raw_chars[i]), "raw")) for i, (q, ds, _) in enumerate(qs)]
    configs: dict[str, list[dict[str, Any]]] = {"raw": raw}
    for k, comp in enumerate(compressors):
        ratios = np.clip(rng.beta(2.0, 12.0 + 4 * k, n_traces), 0.01, 1.4)
        rows = []
        for i, (q, ds, _) in enumerate(qs):
            r = base(i, q, ds, compressed_source(comp), text(i, max(20, int(raw_chars[i] * ratios[i])), comp))
            verdict = VERDICTS[0] if rng.random() < 0.9 else VERDICTS[1 + int(rng.random() < 0.4)]
            r.update(
                compressor_model=f"org/{comp}",
                judge_faithfulness=5 if verdict == "faithful" else int(rng.integers(1, 4)),
                judge_coverage=int(rng.integers(3, 6)),
                judge_clarity=int(rng.integers(3, 6)),
                judge_verdict=verdict,
                judge_answer_alignment=bool(verdict != "unfaithful"),
                judge_failure_modes=[] if verdict == "faithful" else ["omitted_key_step"],
                judge_rationale=(injection or "") + f" judged {verdict}",
                judge_parse_status="ok",
            )
            rows.append(r)
        configs[compressed_source(comp)] = rows
    configs["truncated"] = [
        base(i, q, ds, "truncated", raw[i]["reasoning"][: max(20, raw_chars[i] // 10)])
        for i, (q, ds, _) in enumerate(qs)
    ]
    configs["answer-only"] = [base(i, q, ds, "answer-only", "") for i, (q, ds, _) in enumerate(qs)]
    for name, rows in configs.items():
        extra = [c for c in rows[0] if c not in TRACES.names]
        table = to_table([{k: r[k] for k in TRACES.names} for r in rows], TRACES)
        for c in extra:
            table = table.append_column(c, pa.array([r[c] for r in rows]))
        write_table(table, root / "data/hub" / teacher / name / "train-00000-of-00001.parquet")


def write_grid(
    root: Path,
    params: Params,
    n_questions: int = 300,
    n_traces: int = 200,
    seed: int = 0,
    injection: str | None = None,
    missing: tuple[str, ...] = (),
) -> list[str]:
    """Write the whole synthetic grid under ``root``; returns the run ids (``missing`` ones are skipped)."""
    runs = expand_runs(params)
    difficulty = np.random.default_rng(seed).random(n_questions)
    for i, (run, spec) in enumerate(runs.items()):
        if run in missing:
            continue
        write_run(root, run, spec, difficulty, seed + 1 + i, params.evaluate.max_new_tokens)
    for j, teacher in enumerate(params.grid.teachers):
        write_hub(root, teacher, list(params.compressors), n_traces, seed + 1000 + j, injection)
        write_metrics(
            root / "metrics/generate" / f"{teacher}.json",
            {"rows_in": 1, "rows_out": 1, "rejects": {}, "gpu_hours": 348.0 if j == 0 else 200.0},
        )
    (root / "metrics/bench").mkdir(parents=True, exist_ok=True)
    (root / "metrics/bench/ignored.json").write_text(json.dumps({"gpu_hours": 1e9}))
    return [r for r in runs if r not in missing]
