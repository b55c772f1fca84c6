"""generate@T: rejection-sample teacher traces; keep every attempt and the first verified trace per question.

Paper §3.1 / docs/architecture.md §7: each round submits every pending question in ONE ``backend.generate``
call (one attempt per question per round, so vLLM sees the whole round as one batch), grades the final
response with the extraction cascade (``answers.grade``), and removes the questions answered correctly before
the next round; at most ``generate.rounds`` rounds.

Outcome of one attempt, in the order they are checked:

- ``non_utf8``      the completion holds text that cannot be stored as UTF-8 (a broken decoder)
- ``truncated``     ``finish_reason == "length"``: the token cap cut it; counted apart from wrong answers and
                    never accepted (a cut trace has no trustworthy final response)
- ``no_reasoning``  the answer is right but there is no reasoning (no think block, or an empty one): the
                    product is reasoning traces, so this is not a trace; the question stays in the pool.
                    With ``generate.untagged: last_line`` (instruct teachers that never write ``<think>``,
                    like the SmolLM2 demo) a completion without a think block is split instead: its last
                    non-empty line is the final response and the text above it the reasoning; the answer is
                    still read from the final response only
- ``accepted``      right answer with reasoning: the trace goes to ``raw.parquet`` and the question leaves
- ``no_answer``     nothing could be extracted from the final response
- ``wrong``         an answer was extracted and it does not match the canonical one

A question still pending after the last round is a counted reject whose reason is its last attempt's
outcome (``wrong``/``no_answer`` -> ``not_solved``).  Questions that cannot be asked at all (empty text,
a canonical answer the cascade cannot grade, unknown answer type, a duplicate id, non-UTF-8 text) are rejected before round 1.

Resumability: every completion lands in the backend's durable request cache the moment it is generated,
and each round's requests are a pure function of params and the previous rounds' (cached) results, so a
killed run replays finished requests from the cache and regenerates only the rest; the outputs are
rebuilt from scratch in a staging area and renamed into place with the metrics (``staging.Staging``), so
there are never duplicate rows and a failed run leaves the previous outputs and metrics as they were.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import pyarrow as pa
import pyarrow.compute as pc
import typer

from compress_distill.answers import gold_error
from compress_distill.config import BackendConfig, Params, SamplingConfig, load_params, pick
from compress_distill.llm.stage_engine import engine, engine_stats, request
from compress_distill.llm.tokens import count_tokens, preflight_tokenizer
from compress_distill.names import ANSWER_TYPES
from compress_distill.prompts import load_prompt, prompt_hash, render
from compress_distill.rejects import Ledger, is_utf8, safe_text, text_column
from compress_distill.schema import (
    ATTEMPTS,
    QUESTIONS,
    TRACES,
    first_per_id,
    parquet_sink,
    read_table,
    trace_row,
)
from compress_distill.staging import Staging
from compress_distill.stats import GroupMeans, split_overall

log = logging.getLogger(__name__)

# attempt outcome -> reject reason of a question that ends the last round with that outcome
FINAL_REASON = {
    "wrong": "not_solved",
    "no_answer": "not_solved",
    "truncated": "truncated",
    "no_reasoning": "no_reasoning",
    "non_utf8": "non_utf8",
}


def split_last_line(text: str) -> tuple[str, str]:
    """(reasoning, final response) of a completion without a think block (``generate.untagged: last_line``):
    the last non-empty line answers, everything above it reasons.  A one-line reply has no reasoning."""
    body = text.rstrip()
    cut = body.rfind("\n")
    return (body[:cut].strip(), body[cut + 1 :].strip()) if cut >= 0 else ("", body.strip())


def round_seed(base: int | None, round_no: int) -> int:
    """Seed of round ``round_no`` (1-based).  Rounds must differ: an identical request would be answered
    from the request cache with the same failed completion, so even an unseeded config gets base 0."""
    return (base or 0) + round_no - 1


def attempt_outcome(
    reasoning: str,
    response: str,
    finish_reason: str,
    correct: bool,
    extracted: str | None,
    needs_reasoning: bool = True,
) -> str:
    if not (is_utf8(reasoning) and is_utf8(response)):
        return "non_utf8"
    if finish_reason == "length":
        return "truncated"
    if correct:
        return "accepted" if reasoning.strip() or not needs_reasoning else "no_reasoning"
    return "no_answer" if extracted is None else "wrong"


def _questions(path: Path, ledger: Ledger, only: set[str] | None = None) -> list[dict[str, Any]]:
    """Valid question rows (with an id in ``only``, if given); bad ones are rejected here with a reason
    (before any model call)."""
    table = read_table(path, QUESTIONS)
    if only is not None:
        table = table.filter(pc.is_in(table.column("id"), pa.array(sorted(only), pa.string())))
    texts = text_column(table, "question")
    answers = text_column(table, "answer")
    rows = table.drop_columns(["question", "answer"]).to_pylist()
    first = first_per_id([r["id"] for r in rows], set())
    valid: list[dict[str, Any]] = []
    for row, text, gold, is_first in zip(rows, texts, answers, first, strict=True):
        qid = row["id"] or ""
        ledger.seen()
        if not is_first:
            ledger.reject("duplicate_id", id=qid, detail="repeated question id; the first row is kept")
        elif text is None or gold is None:
            ledger.reject("non_utf8", id=qid, detail="question or answer is not valid UTF-8")
        elif not text.strip():
            ledger.reject("empty_question", id=qid)
        elif row["answer_type"] not in ANSWER_TYPES:
            ledger.reject("bad_answer_type", id=qid, detail=f"answer_type={row['answer_type']!r}")
        elif (problem := gold_error(gold, row["answer_type"])) is not None:
            ledger.reject("bad_gold_answer", id=qid, detail=problem)
        else:
            valid.append({**row, "question": text, "answer": gold})
    return valid


@dataclass(frozen=True)
class Mode:
    """What one rejection-sampling stage asks and keeps: ``generate`` (reasoning traces, source ``raw``) or
    ``ift`` (answers without reasoning, source ``ift``: stages/ift.py)."""

    stage: str  # ledger and log name
    source: str  # the rows' `source` and the output file stem: <out_dir>/<source>.parquet
    attempts: str  # file name of every attempt, in out_dir
    prompt: str
    sampling: SamplingConfig
    engine: BackendConfig
    # reasoning traces need reasoning (else `no_reasoning`); ift drops whatever reasoning the engine returns
    # (gpt-oss reasons even at its lowest effort) and trains on the final response alone
    needs_reasoning: bool
    untagged: str  # generate.untagged: how a completion without a think block splits (reasoning mode only)


def run(
    params: Params,
    teacher: str,
    questions: str | Path,
    out_dir: str | Path,
    metrics: str | Path,
    *,
    backend: Any = None,
    cache_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Write ``out_dir/attempts.parquet``, ``out_dir/raw.parquet`` (+ ``raw.rejects.parquet``) and metrics."""
    tcfg = pick(params.teachers, teacher, "teacher")
    gen = params.generate
    mode = Mode("generate", "raw", "attempts.parquet", gen.prompt, gen.sampling, tcfg, True, gen.untagged)
    return sample(params, teacher, mode, questions, out_dir, metrics, backend=backend, cache_dir=cache_dir)


def sample(
    params: Params,
    teacher: str,
    mode: Mode,
    questions: str | Path,
    out_dir: str | Path,
    metrics: str | Path,
    *,
    only: set[str] | None = None,
    backend: Any = None,
    cache_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Rejection-sample ``mode``'s rows of ``teacher`` for the questions (those with an id in ``only``, if
    given: the others are no input of this stage) in ``generate.rounds`` rounds; write every attempt,
    the accepted rows, their rejects and the metrics."""
    from compress_distill.answers import grade

    tcfg = mode.engine
    preflight_tokenizer(tcfg, f"teachers.{teacher}")  # fails here, not after every request is paid
    gen = params.generate
    template, phash = load_prompt(mode.prompt), prompt_hash(mode.prompt)
    out_dir = Path(out_dir)
    out = out_dir / f"{mode.source}.parquet"
    ledger = Ledger(mode.stage)
    pool = _questions(Path(questions), ledger, only)
    asked_per_dataset = Counter(q["dataset"] for q in pool)

    outcomes: Counter[str] = Counter()  # attempt level
    last_outcome: dict[str, tuple[str, str]] = {}  # question id -> (outcome, response) of its latest attempt
    accepted_by_round: Counter[str] = Counter()
    stats = GroupMeans()  # accepted traces, per dataset (paper Table 4)
    rounds_run = 0

    staging = Staging()
    with (
        engine(tcfg, backend, cache_dir) as be,
        parquet_sink(staging.file(out_dir / mode.attempts), ATTEMPTS) as attempts_out,
        parquet_sink(staging.file(out), TRACES, out) as raw_out,
    ):
        pending = pool
        for round_no in range(1, gen.rounds + 1):
            if not pending:
                break
            rounds_run = round_no
            seed = round_seed(mode.sampling.seed, round_no)
            requests = [
                request(
                    render(
                        template,
                        question=q["question"],
                        dataset=q["dataset"],
                        domain=q["domain"],
                        answer_type=q["answer_type"],
                    ),
                    mode.sampling,
                    seed=seed,
                )
                for q in pending
            ]
            log.info("%s@%s round %d: %d pending questions", mode.stage, teacher, round_no, len(requests))
            completions = be.generate(requests)  # the whole round in one call (paper §3.1)
            if len(completions) != len(requests):
                raise RuntimeError(
                    f"backend returned {len(completions)} completions for {len(requests)} requests; "
                    "the engine contract is one completion per request, in order"
                )
            attempt_rows: list[dict[str, Any]] = []
            accepted: list[
                tuple[dict[str, Any], Any, str, str]
            ] = []  # question, completion, reasoning, response
            still_pending: list[dict[str, Any]] = []
            for q, c in zip(pending, completions, strict=True):
                reasoning, response = c.reasoning or "", c.text or ""
                if not mode.needs_reasoning:
                    reasoning = ""
                elif not reasoning and mode.untagged == "last_line":
                    reasoning, response = split_last_line(response)
                g = (
                    grade(response, q["answer"], q["answer_type"], q["choices"] or None)
                    if is_utf8(response)
                    else None
                )
                correct = bool(g and g.correct) and c.finish_reason != "length"
                extracted = g.extracted if g else None
                outcome = attempt_outcome(
                    reasoning,
                    response,
                    c.finish_reason,
                    bool(g and g.correct),
                    extracted,
                    mode.needs_reasoning,
                )
                outcomes[outcome] += 1
                attempt_rows.append(
                    {
                        "question_id": q["id"],
                        "teacher": teacher,
                        "round": round_no,
                        "attempt": round_no,  # one attempt per pending question per round
                        "reasoning": safe_text(reasoning),
                        "response": safe_text(response),
                        "extracted": extracted,
                        "extraction_rule": g.rule if g else None,
                        "correct": correct,
                        "prompt_tokens": c.prompt_tokens,
                        "completion_tokens": c.completion_tokens,
                        "finish_reason": c.finish_reason,
                        "request_hash": c.request_hash,
                    }
                )
                if outcome == "accepted":
                    accepted.append((q, c, reasoning, response))
                else:
                    last_outcome[q["id"]] = (outcome, response)
                    still_pending.append(q)
            attempts_out.write_rows(attempt_rows)
            del attempt_rows

            tokens = count_tokens(tcfg.tokenizer_id, [r for _, _, r, _ in accepted])
            raw_rows = []
            for (q, c, reasoning, response), n_tok in zip(accepted, tokens, strict=True):
                last_outcome.pop(q["id"], None)
                ledger.kept()
                accepted_by_round[str(round_no)] += 1
                stats.add(
                    q["dataset"],
                    reasoning_chars=len(reasoning),
                    reasoning_tokens=n_tok,
                    completion_tokens=c.completion_tokens,
                )
                raw_rows.append(
                    trace_row(
                        id=q["id"],  # one accepted trace per question: the trace id is the question id
                        question_id=q["id"],
                        dataset=q["dataset"],
                        domain=q["domain"],
                        question=q["question"],
                        answer=q["answer"],
                        answer_type=q["answer_type"],
                        reasoning=reasoning,
                        response=response,
                        source=mode.source,
                        reasoning_chars=len(reasoning),
                        reasoning_tokens=n_tok,
                        # vs raw: 1 for raw itself, 0 for rows without reasoning (as answer-only)
                        compression_ratio=1.0 if mode.needs_reasoning else 0.0,
                        teacher_model=tcfg.model,
                        compressor_model="",
                        prompt_hash=phash,
                        answer_preserved=None,
                    )
                )
            raw_out.write_rows(raw_rows)
            pending = still_pending

        for q in pending:
            outcome, response = last_outcome[q["id"]]
            ledger.reject(FINAL_REASON[outcome], id=q["id"], detail=response)
        ledger.write_rejects(staging, out)
        llm = engine_stats(be)

    per_dataset, overall = split_overall(stats.table())
    datasets = {}
    for ds, asked in sorted(asked_per_dataset.items()):
        block = per_dataset.get(ds, {"n": 0})
        datasets[ds] = {
            "questions": asked,
            "accepted": int(block["n"]),
            "acceptance_rate": block["n"] / asked if asked else 0.0,
            **{k: v for k, v in block.items() if k != "n"},
        }
    n_attempts = sum(outcomes.values())
    result = {
        **ledger.as_dict(),
        "acceptance_rate": ledger.rows_out / ledger.rows_in if ledger.rows_in else 0.0,
        "rounds_run": rounds_run,
        "attempts": n_attempts,
        "attempt_outcomes": {k: outcomes.get(k, 0) for k in ("accepted", *FINAL_REASON)},
        "attempt_truncation_rate": outcomes["truncated"] / n_attempts if n_attempts else 0.0,
        "accepted_by_round": dict(accepted_by_round),
        "overall": {k: v for k, v in overall.items() if k != "n"},
        "datasets": datasets,
        "engine": llm,
        "teacher_model": tcfg.model,
        "prompt_hash": phash,
    }
    staging.metrics(metrics, result)
    staging.commit()  # outputs, then metrics: nothing lands unless all of it was computed
    return result


def main(
    teacher: Annotated[str, typer.Option(help="teacher id (a key of `teachers` in params)")],
    out_dir: Annotated[Path, typer.Option(help="writes attempts.parquet and raw.parquet here")],
    metrics: Annotated[Path, typer.Option(help="metrics JSON (paper Table 4 per dataset)")],
    params: Annotated[Path, typer.Option(help="params file")] = Path("params.yaml"),
    questions: Annotated[Path, typer.Option(help="questions table")] = Path("data/questions/train.parquet"),
) -> None:
    """Rejection-sample teacher traces (every attempt kept; first verified trace per question accepted)."""
    r = run(load_params(params), teacher, questions, out_dir, metrics)
    typer.echo(
        f"generate@{teacher}: {r['rows_out']}/{r['rows_in']} questions accepted in {r['rounds_run']} round(s); "
        f"rejects {r['rejects']}"
    )
