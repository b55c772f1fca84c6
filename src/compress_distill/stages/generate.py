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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import pyarrow as pa
import pyarrow.compute as pc
import typer

from compress_distill.answers import gold_error
from compress_distill.config import BackendConfig, Params, SamplingConfig, load_params, pick
from compress_distill.llm.stage_engine import complete, engine, engine_stats, request
from compress_distill.llm.tokens import count_tokens, preflight_tokenizer
from compress_distill.llm.types import Completion
from compress_distill.names import ANSWER_TYPES
from compress_distill.prompts import load_prompt, prompt_hash, render
from compress_distill.rejects import Ledger, is_utf8, safe_text, text_column
from compress_distill.schema import (
    ATTEMPTS,
    QUESTIONS,
    TRACES,
    ParquetSink,
    first_per_id,
    parquet_sink,
    read_table,
    trace_row,
)
from compress_distill.staging import Staging
from compress_distill.stats import TraceStats, mean

log = logging.getLogger(__name__)

# attempt outcome -> reject reason of a question that ends the last round with that outcome
FINAL_REASON = {
    "wrong": "not_solved",
    "no_answer": "not_solved",
    "truncated": "truncated",
    "no_reasoning": "no_reasoning",
    "non_utf8": "non_utf8",
}
# per-dataset means of the accepted traces (paper Table 4); reasoning_tokens in the teacher's tokenizer
STATS_SCHEMA = {"reasoning_chars": int, "reasoning_tokens": int, "completion_tokens": int}
STATS = [mean(c) for c in STATS_SCHEMA]
DUPLICATE = ("duplicate_id", "repeated question id; the first row is kept")


# --------------------------------------------------------------------------------------------- decisions
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


def generate_mode(params: Params, teacher: str) -> Mode:
    """Mode ``generate`` of teacher ``teacher``: reasoning traces, source ``raw``."""
    gen = params.generate
    tcfg = pick(params.teachers, teacher, "teacher")
    return Mode("generate", "raw", "attempts.parquet", gen.prompt, gen.sampling, tcfg, True, gen.untagged)


def question_reject(row: dict[str, Any], text: str | None, gold: str | None) -> tuple[str, str] | None:
    """(reason, detail) when a question row cannot be asked at all, else None (before any model call)."""
    if text is None or gold is None:
        return "non_utf8", "question or answer is not valid UTF-8"
    if not text.strip():
        return "empty_question", ""
    if row["answer_type"] not in ANSWER_TYPES:
        return "bad_answer_type", f"answer_type={row['answer_type']!r}"
    if (problem := gold_error(gold, row["answer_type"])) is not None:
        return "bad_gold_answer", problem
    return None


@dataclass(frozen=True)
class Attempt:
    """One completion of a question, read and graded: its outcome and the columns of its attempts row."""

    reasoning: str
    response: str
    outcome: str  # attempt_outcome's
    extracted: str | None
    rule: str | None  # the extraction rule that found ``extracted``
    correct: bool  # right answer and not cut by the token cap


def read_attempt(q: dict[str, Any], c: Completion, mode: Mode) -> Attempt:
    """Split completion ``c`` into reasoning and final response, grade the response against ``q``'s
    canonical answer and decide the attempt's outcome.  Pure: no I/O, no model."""
    from compress_distill.answers import grade

    reasoning, response = c.reasoning or "", c.text or ""
    if not mode.needs_reasoning:
        reasoning = ""
    elif not reasoning and mode.untagged == "last_line":
        reasoning, response = split_last_line(response)
    g = grade(response, q["answer"], q["answer_type"], q["choices"] or None) if is_utf8(response) else None
    extracted, right = (g.extracted, g.correct) if g else (None, False)
    return Attempt(
        reasoning=reasoning,
        response=response,
        outcome=attempt_outcome(reasoning, response, c.finish_reason, right, extracted, mode.needs_reasoning),
        extracted=extracted,
        rule=g.rule if g else None,
        correct=right and c.finish_reason != "length",
    )


def attempt_row(q: dict[str, Any], c: Completion, a: Attempt, teacher: str, round_no: int) -> dict[str, Any]:
    return {
        "question_id": q["id"],
        "teacher": teacher,
        "round": round_no,
        "attempt": round_no,  # one attempt per pending question per round
        "reasoning": safe_text(a.reasoning),
        "response": safe_text(a.response),
        "extracted": a.extracted,
        "extraction_rule": a.rule,
        "correct": a.correct,
        "prompt_tokens": c.prompt_tokens,
        "completion_tokens": c.completion_tokens,
        "finish_reason": c.finish_reason,
        "request_hash": c.request_hash,
    }


def accepted_row(q: dict[str, Any], a: Attempt, tokens: int, mode: Mode, phash: str) -> dict[str, Any]:
    """The output row (``<source>.parquet``) of an accepted attempt."""
    return trace_row(
        id=q["id"],  # one accepted trace per question: the trace id is the question id
        question_id=q["id"],
        dataset=q["dataset"],
        domain=q["domain"],
        question=q["question"],
        answer=q["answer"],
        answer_type=q["answer_type"],
        reasoning=a.reasoning,
        response=a.response,
        source=mode.source,
        reasoning_chars=len(a.reasoning),
        reasoning_tokens=tokens,
        # vs raw: 1 for raw itself, 0 for rows without reasoning (as answer-only)
        compression_ratio=1.0 if mode.needs_reasoning else 0.0,
        teacher_model=mode.engine.model,
        compressor_model="",
        prompt_hash=phash,
        answer_preserved=None,
    )


# --------------------------------------------------------------------------------------------- I/O
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
        ledger.seen()
        bad = question_reject(row, text, gold) if is_first else DUPLICATE
        if bad:
            ledger.reject(bad[0], id=row["id"] or "", detail=bad[1])
        else:
            valid.append({**row, "question": text, "answer": gold})
    return valid


@dataclass
class _Rounds:
    """One generate run's rounds: what each round asks, and where its attempts and accepted traces go."""

    teacher: str
    mode: Mode
    template: str
    phash: str
    ledger: Ledger
    stats: TraceStats = field(default_factory=lambda: TraceStats(STATS_SCHEMA))
    outcomes: Counter[str] = field(default_factory=Counter)  # attempt level
    last: dict[str, Attempt] = field(default_factory=dict)  # question id -> its latest failed attempt
    accepted_by_round: Counter[str] = field(default_factory=Counter)
    rounds_run: int = 0

    def ask(self, q: dict[str, Any], seed: int) -> Any:
        fields = {k: q[k] for k in ("question", "dataset", "domain", "answer_type")}
        return request(render(self.template, **fields), self.mode.sampling, seed=seed)

    def round(
        self, be: Any, pending: list[dict[str, Any]], sinks: tuple[ParquetSink, ParquetSink]
    ) -> list[dict[str, Any]]:
        """Ask every pending question once (one ``generate`` call: paper §3.1), write the attempts and the
        accepted traces; returns the questions still pending."""
        self.rounds_run += 1
        seed = round_seed(self.mode.sampling.seed, self.rounds_run)
        log.info("%s@%s round %d: %d pending", self.mode.stage, self.teacher, self.rounds_run, len(pending))
        completions = complete(be, [self.ask(q, seed) for q in pending])
        done = [(q, c, read_attempt(q, c, self.mode)) for q, c in zip(pending, completions, strict=True)]
        self.outcomes.update(a.outcome for _, _, a in done)
        sinks[0].write_rows([attempt_row(q, c, a, self.teacher, self.rounds_run) for q, c, a in done])
        sinks[1].write_rows(self.accept([d for d in done if d[2].outcome == "accepted"]))
        failed = [(q, a) for q, _, a in done if a.outcome != "accepted"]
        self.last.update((q["id"], a) for q, a in failed)
        return [q for q, _ in failed]

    def accept(self, accepted: list[tuple[dict[str, Any], Completion, Attempt]]) -> list[dict[str, Any]]:
        """The ``raw.parquet`` rows of this round's accepted attempts, counted and added to the statistics."""
        tokens = count_tokens(self.mode.engine.tokenizer_id, [a.reasoning for _, _, a in accepted])
        rows = [
            accepted_row(q, a, n, self.mode, self.phash)
            for (q, _, a), n in zip(accepted, tokens, strict=True)
        ]
        if rows:
            self.ledger.kept(len(rows))
            self.accepted_by_round[str(self.rounds_run)] += len(rows)
        self.stats.add(
            {
                **{k: r[k] for k in ("dataset", "reasoning_chars", "reasoning_tokens")},
                "completion_tokens": c.completion_tokens,
            }
            for r, (_, c, _) in zip(rows, accepted, strict=True)
        )
        return rows

    def metrics(self, asked: Counter[str]) -> dict[str, Any]:
        per_dataset, overall = self.stats.blocks(STATS)
        datasets = {}
        for ds, n_asked in sorted(asked.items()):
            block = per_dataset.get(ds, {"n": 0})
            datasets[ds] = {
                "questions": n_asked,
                "accepted": int(block["n"]),
                "acceptance_rate": block["n"] / n_asked if n_asked else 0.0,
                **{k: v for k, v in block.items() if k != "n"},
            }
        n_attempts = sum(self.outcomes.values())
        ledger = self.ledger
        return {
            **ledger.as_dict(),
            "acceptance_rate": ledger.rows_out / ledger.rows_in if ledger.rows_in else 0.0,
            "rounds_run": self.rounds_run,
            "attempts": n_attempts,
            "attempt_outcomes": {k: self.outcomes.get(k, 0) for k in ("accepted", *FINAL_REASON)},
            "attempt_truncation_rate": self.outcomes["truncated"] / n_attempts if n_attempts else 0.0,
            "accepted_by_round": dict(self.accepted_by_round),
            "overall": {k: v for k, v in overall.items() if k != "n"},
            "datasets": datasets,
        }


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
    mode = generate_mode(params, teacher)
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
    preflight_tokenizer(mode.engine, f"teachers.{teacher}")  # fails here, not after every request is paid
    out_dir = Path(out_dir)
    out = out_dir / f"{mode.source}.parquet"
    ledger = Ledger(mode.stage)
    rounds = _Rounds(teacher, mode, load_prompt(mode.prompt), prompt_hash(mode.prompt), ledger)
    pending = _questions(Path(questions), ledger, only)
    asked = Counter(q["dataset"] for q in pending)
    staging = Staging()
    # staged (and locked against a concurrent run) before the engine loads a model
    attempts_file, out_file = staging.file(out_dir / mode.attempts), staging.file(out)
    with (
        engine(mode.engine, backend, cache_dir) as be,
        parquet_sink(attempts_file, ATTEMPTS) as attempts_out,
        parquet_sink(out_file, TRACES, out) as rows_out,
    ):
        while pending and rounds.rounds_run < params.generate.rounds:
            pending = rounds.round(be, pending, (attempts_out, rows_out))
        for q in pending:
            last = rounds.last[q["id"]]
            ledger.reject(FINAL_REASON[last.outcome], id=q["id"], detail=last.response)
        ledger.write_rejects(staging, out)
        llm = engine_stats(be)
    result = {
        **rounds.metrics(asked),
        "engine": llm,
        "teacher_model": mode.engine.model,
        "prompt_hash": rounds.phash,
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
