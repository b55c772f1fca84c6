"""evaluate@RUN: the student answers the eval split greedily; predictions plus accuracy/efficiency metrics.

The student is ``models/RUN`` (a PEFT adapter or full weights, with the tokenizer and chat template the
training stage saved) served by the engine layer: ``params.evaluate.engine`` picks the backend (hf batched
on CPU, vllm on a GPU node) and ``model`` is the model directory.  Every question is one user turn (the
training chat template: user message = question only), decoded greedily up to ``max_new_tokens`` and
stopped on the template's end-of-turn token by the backend.

Answers are graded on the final response only (``answers.grade``); a record cut at the token cap with no
final response is never correct.  Before grading, every completion goes once more through
``reasoning.split_completion`` with the student's chat format (``final_split``): a completion cut inside the
think block its template pre-filled (Qwen3.5) has no final response whichever backend -- or older cached
code -- produced it.  A killed evaluation resumes through the engine layer's durable request
cache: completions finished before the kill are served from it, keyed by weights fingerprint and request.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any

import pyarrow.parquet as pq
import typer

from compress_distill.config import BackendConfig, Params, load_params
from compress_distill.evaluation.lm_eval import chat_template_sha256, results_json, sample_records
from compress_distill.evaluation.metrics import eval_metrics
from compress_distill.flops import inference_flops, model_params
from compress_distill.llm.types import Backend, ChatRequest, Completion
from compress_distill.metrics import RowCounter
from compress_distill.names import ANSWER_TYPES
from compress_distill.plan import find_run
from compress_distill.provenance import git_commit
from compress_distill.reasoning import split_completion
from compress_distill.schema import (
    PREDICTIONS,
    QUESTIONS,
    REJECTS,
    first_per_id,
    read_table,
    rejects_path,
    to_table,
)
from compress_distill.staging import Staging, metrics_json

STAGE = "evaluate"


# --------------------------------------------------------------------------------------------- pure core
def max_new_tokens(params: Params, student: str) -> int:
    override = params.students[student].max_tokens_eval
    return override if override is not None else params.evaluate.max_new_tokens


def select_questions(
    rows: Sequence[Mapping[str, Any]], max_per_dataset: int | None, counter: RowCounter
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Valid eval questions (first ``max_per_dataset`` per dataset, file order) and reject rows."""
    kept: list[dict[str, Any]] = []
    rejects: list[dict[str, Any]] = []
    per_dataset: dict[str, int] = {}
    first = first_per_id([q.get("id") for q in rows], set())
    for q, is_first in zip(rows, first, strict=True):
        counter.seen()
        reason = None
        if not is_first:
            reason = "duplicate_id"
        elif not (q.get("question") or "").strip():
            reason = "empty_question"
        elif q.get("answer") is None or not str(q["answer"]).strip():
            reason = "empty_answer"
        elif q.get("answer_type") not in ANSWER_TYPES:
            reason = "bad_answer_type"
        elif max_per_dataset is not None and per_dataset.get(q["dataset"], 0) >= max_per_dataset:
            reason = "over_max_per_dataset"
        if reason:
            counter.reject(reason)
            if reason != "over_max_per_dataset":  # a cap is a choice, not bad data: no reject row
                rejects.append(
                    {
                        "id": q.get("id"),
                        "stage": STAGE,
                        "reason": reason,
                        "detail": f"answer_type={q.get('answer_type')!r}"[:200]
                        if reason == "bad_answer_type"
                        else "",
                    }
                )
            continue
        per_dataset[q["dataset"]] = per_dataset.get(q["dataset"], 0) + 1
        kept.append(dict(q))
    return kept, rejects


def build_requests(questions: Sequence[Mapping[str, Any]], max_tokens: int) -> list[ChatRequest]:
    """Greedy, one user turn holding the question only -- exactly the training chat template's prompt."""
    return [
        ChatRequest(
            messages=[{"role": "user", "content": q["question"]}],
            temperature=0.0,
            top_p=1.0,
            max_tokens=max_tokens,
        )
        for q in questions
    ]


GradeFn = Callable[[str, str, str, list[str] | None], Any]


def final_split(completions: Sequence[Completion], think_prefilled: bool) -> list[Completion]:
    """Completions re-split by ``reasoning.split_completion`` (module docstring); ``think_prefilled`` is the
    student's chat format.  A cut completion inside an open think block ends up with an empty ``text``."""
    out = []
    for c in completions:
        reasoning, text = split_completion(
            c.text, c.finish_reason, think_prefilled, server_reasoning=c.reasoning
        )
        same = (reasoning, text) == (c.reasoning, c.text)
        out.append(c if same else dataclasses.replace(c, reasoning=reasoning, text=text))
    return out


def score(
    run: str,
    questions: Sequence[Mapping[str, Any]],
    completions: Sequence[Completion],
    reasoning_tokens: Sequence[int],
    grade: GradeFn,
) -> list[dict[str, Any]]:
    """Prediction rows (``schema.PREDICTIONS``): grade the final response, mark truncation."""
    if not (len(questions) == len(completions) == len(reasoning_tokens)):
        raise ValueError(
            f"engine returned {len(completions)} completions for {len(questions)} requests; "
            "the backend must answer every request, in order"
        )
    rows = []
    for q, c, r_tok in zip(questions, completions, reasoning_tokens, strict=True):
        final = c.text or ""
        truncated = c.finish_reason == "length"
        extracted, correct = None, False
        if final.strip():
            g = grade(final, q["answer"], q["answer_type"], list(q.get("choices") or []) or None)
            extracted, correct = g.extracted, bool(g.correct)
        # docs/architecture.md §4: a record cut at the cap with no final response is never correct
        # (guaranteed above: an empty final response is not graded at all)
        rows.append(
            {
                "question_id": q["id"],
                "run": run,
                "group": q["group"],
                "dataset": q["dataset"],
                "completion": final,
                "reasoning": c.reasoning or "",
                "extracted": extracted,
                "correct": correct,
                "completion_tokens": int(c.completion_tokens),
                "reasoning_chars": len(c.reasoning or ""),
                "reasoning_tokens": int(r_tok),
                "truncated": truncated,
            }
        )
    return rows


def metrics_from_predictions(
    rows: Sequence[Mapping[str, Any]], questions: Sequence[Mapping[str, Any]]
) -> dict:
    """``overall``/``groups``/``datasets`` blocks; every group and dataset of the questions gets a block."""
    cols = {k: [r[k] for r in rows] for k in PREDICTIONS.names}
    return eval_metrics(
        cols,
        groups=[q["group"] for q in questions if q.get("group")],
        datasets=[q["dataset"] for q in questions if q.get("dataset")],
    )


# --------------------------------------------------------------------------------------------- engine glue
def engine_gpu_hours(backend: Any) -> float | None:
    """The engine's running GPU-hour total (``stats.gpu_hours``: GPUs held x (generation + load) s / 3600)."""
    hours = getattr(getattr(backend, "stats", None), "gpu_hours", None)
    return float(hours) if isinstance(hours, int | float) and not isinstance(hours, bool) else None


def usage(backend: Any, elapsed_s: float, cfg: BackendConfig, hours_before: float | None) -> dict[str, float]:
    """Wall-clock seconds and GPU-hours of this evaluation, for the cost ledger of the report.

    GPU-hours are the growth of the engine's own total during this call (a reused engine has history); a
    backend without stats is timed here with the ``gpus`` of its config.  The engine's other counters stay
    out of the metrics file so that ``dvc metrics diff`` lists the numbers of docs/architecture.md §6, not
    bookkeeping.
    """
    after = engine_gpu_hours(backend)
    hours = after - (hours_before or 0.0) if after is not None else cfg.held_gpus * elapsed_s / 3600.0
    return {"wall_clock_s": round(elapsed_s, 3), "gpu_hours": hours}


def lm_eval_config(
    params: Params, student: str, model_dir: Path, backend: str, cap: int, tokenizer: Any
) -> dict[str, Any]:
    """The ``config`` block of the lm-eval results (evaluation/lm_eval.py): which model, adapter and cap."""
    model_id = params.students[student].model
    adapter = str(model_dir) if (model_dir / "adapter_config.json").exists() else None
    return {
        "model": backend,
        # an adapter loads on its base; full weights are the model directory itself
        "model_args": f"pretrained={model_id},peft={adapter}" if adapter else f"pretrained={model_dir}",
        "model_id": model_id,
        "adapter": adapter,
        "max_new_tokens": cap,
        "gen_kwargs": {"do_sample": False, "max_gen_toks": cap},
        "chat_template_sha256": chat_template_sha256(getattr(tokenizer, "chat_template", None)),
        "limit": params.evaluate.max_per_dataset,
    }


def run(
    params: Params,
    run_name: str,
    model_dir: Path,
    questions_path: Path,
    out: Path,
    metrics_path: Path,
    backend: Backend | None = None,
    results: Path | None = None,
    cap: int | None = None,
) -> dict[str, Any]:
    """Evaluate one run; returns the metrics written to ``metrics_path``.

    ``results`` (optional, ``results/RUN.json``) also writes the run in lm-evaluation-harness's results
    layout, with its per-sample records beside it (``evaluation/lm_eval.py``).  ``cap`` (tokens) replaces the
    run's decoding cap (``max_new_tokens``): the ``evaluate_cap`` variants.

    ``backend`` (optional) is an already built engine for ``model_dir`` (benchmarks reuse one); by default
    one is made from ``params.evaluate.engine`` and closed at the end.  Resuming after a kill is the engine
    layer's job: its durable request cache returns every completion finished before the kill.
    """
    from compress_distill.answers import grade
    from compress_distill.llm import make_backend
    from compress_distill.llm.tokens import count_tokens, load_tokenizer, template_format

    spec = find_run(params, run_name)
    if not model_dir.exists():
        raise FileNotFoundError(
            f"model directory {model_dir} not found; run the train stage first (dvc repro train@{run_name})"
        )
    cfg = params.evaluate.engine.for_model(model_dir)
    cap = cap if cap is not None else max_new_tokens(params, spec.student)

    counter = RowCounter()
    all_rows = read_table(questions_path, QUESTIONS).to_pylist()
    questions, rejects = select_questions(all_rows, params.evaluate.max_per_dataset, counter)
    own = backend is None
    engine = make_backend(cfg) if backend is None else backend
    hours_before, start = engine_gpu_hours(engine), time.perf_counter()
    try:
        completions = engine.generate(build_requests(questions, cap)) if questions else []
        cost = usage(engine, time.perf_counter() - start, cfg, hours_before)
    finally:
        if own:
            engine.close()
    # reasoning length in the student's own tokens (its tokenizer is saved in the model directory)
    tokenizer = load_tokenizer(str(model_dir))
    prefilled = template_format(tokenizer, cfg.chat_template_kwargs) == "think"
    completions = final_split(completions, prefilled)
    r_tokens = count_tokens(str(model_dir), [c.reasoning or "" for c in completions])
    rows = score(run_name, questions, completions, r_tokens, grade)
    counter.kept(len(rows))

    # every group/dataset of the input gets a block, even if all its questions were rejects (n = 0, null)
    n_params = model_params(params.students[spec.student].model)
    metrics = {
        **metrics_from_predictions(rows, all_rows),
        **counter.as_dict(),
        **cost,
        "max_new_tokens": cap,
        # compute-matched comparisons (flops.py): ~2·N·generated tokens, N of the student's base config
        "model_params": n_params,
        "inference_flops": inference_flops(n_params, sum(r["completion_tokens"] for r in rows)),
    }
    staging = Staging()
    pq.write_table(to_table(rows, PREDICTIONS), staging.file(out), compression="zstd")
    pq.write_table(to_table(rejects, REJECTS), staging.file(rejects_path(out)), compression="zstd")
    if results is not None:
        config = lm_eval_config(params, spec.student, model_dir, cfg.backend, cap, tokenizer)
        doc = results_json(metrics, rows, config=config, git_hash=git_commit(), date=time.time())
        staging.file(results).write_text(metrics_json(doc), encoding="utf-8")
        staging.file(results.with_suffix(".samples.jsonl")).write_text(
            "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in sample_records(rows, questions)),
            encoding="utf-8",
        )
    staging.metrics(metrics_path, metrics)
    staging.commit()  # predictions, rejects (empty when none), results, then metrics
    return metrics


def main(
    params: Annotated[Path, typer.Option(help="params file")] = Path("params.yaml"),
    run_name: Annotated[
        str, typer.Option("--run", help="run id from plan.yaml (T-STUDENT-METHOD-SOURCE)")
    ] = "",
    model_dir: Annotated[
        Path, typer.Option(help="trained student: adapter or full weights + tokenizer")
    ] = Path("models"),
    questions: Annotated[Path, typer.Option(help="eval questions parquet")] = Path(
        "data/questions/eval.parquet"
    ),
    out: Annotated[Path, typer.Option(help="predictions parquet to write")] = Path(
        "data/predictions/run.parquet"
    ),
    metrics: Annotated[Path, typer.Option(help="metrics JSON to write")] = Path("metrics/eval/run.json"),
    results: Annotated[
        Path | None,
        typer.Option(help="also write lm-eval's results layout here (+ .samples.jsonl per-sample records)"),
    ] = None,
) -> None:
    """Evaluate a trained student on the eval split: predictions and accuracy/efficiency metrics."""
    if not run_name:
        raise typer.BadParameter("--run is required (a run id from plan.yaml)")
    m = run(load_params(params), run_name, model_dir, questions, out, metrics, results=results)
    o = m["overall"]
    acc = "n/a" if o["accuracy"] is None else f"{o['accuracy']:.3f}"
    typer.echo(
        f"evaluate {run_name}: accuracy {acc} on {o['n']} questions, truncation rate "
        f"{o['truncation_rate'] if o['truncation_rate'] is not None else 'n/a'}, wrote {out} and {metrics}"
    )
