"""verify@T: source ``compressed-verified`` -- per trace, the shortest compression that is verified.

Beyond the paper (its conclusion names answer-preservation verification as future work).  For every raw
trace of teacher T, the candidates are the outputs of every compressor (``compressed-<C>.parquet``); one
qualifies when

(a) a **verifier** model (``verify.engine``, configured like the judge's), reading only the question and
    the compressed reasoning (``prompts/verify.md``), reaches the canonical answer -- graded by the
    extraction cascade (``answers.grade``), not by a regex on the trace's tail; and
(b) the **judge** (``data/judgements/T/<C>.parquet``) parsed a verdict of ``faithful`` for it.

The shortest qualifying candidate (reasoning chars; ties: params order of the compressors) becomes the row,
its ``source`` set to ``compressed-verified`` and its ``prompt_hash`` extended with the verify prompt's.  If
none qualifies, ``verify.fallback`` decides: ``raw`` keeps the raw trace (ratio 1.0, ``compressor_model``
empty), ``drop`` rejects the trace (``no_verified_compression``).  Only candidates the judge calls
``faithful`` are sent to the verifier (the judge verdict is free, the verifier is not).

Outputs: ``<out>`` (TRACES), ``<out>.rejects.parquet``, and ``<out>.decisions.parquet`` (``VERIFY_DECISIONS``:
per trace the winner -- a compressor id, ``raw`` or ``dropped`` -- and why each shorter candidate lost).
Metrics: ``shares`` (fraction of decided traces each winner took), ``fallback_rate``, and per dataset the
mean chars, mean raw chars and ``ratio_of_means`` of the written rows.

Rejects: ``duplicate_id`` (a repeated raw id; the first row is kept), ``non_utf8`` (question or answer not
valid UTF-8), ``bad_gold_answer`` (cannot be graded), ``no_verified_compression`` (with ``fallback: drop``).
A repeated id within a compressed or judgement table: the first row counts (``repeated_ids`` in the metrics).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import pyarrow as pa
import pyarrow.parquet as pq
import typer

from compress_distill.answers import gold_error
from compress_distill.config import Params, VerifyConfig, load_params, pick
from compress_distill.errors import StageError
from compress_distill.llm.stage_engine import complete, engine, engine_stats, request
from compress_distill.names import VERIFIED, compressed_source
from compress_distill.prompts import load_prompt, prompt_hash, render
from compress_distill.reasoning import middle_truncate
from compress_distill.rejects import Ledger, text_column
from compress_distill.schema import (
    JUDGEMENTS,
    TRACES,
    VERIFY_DECISIONS,
    first_per_id,
    iter_batches,
    parquet_sink,
    read_table,
    to_table,
)
from compress_distill.staging import Staging
from compress_distill.stats import RATIO_OF_MEANS, TraceStats, mean, pct

log = logging.getLogger(__name__)
# per-dataset statistics of the written rows: lengths, ratio of means, % that fell back to the raw trace
STATS_SCHEMA = {"reasoning_chars": int, "raw_chars": int, "compression_ratio": float, "fallback": bool}
STATS = [
    mean("reasoning_chars", "mean_chars"),
    mean("raw_chars"),
    RATIO_OF_MEANS,
    mean("compression_ratio", "mean_ratio"),
    pct("fallback"),
]

CHUNK_ROWS = 4_096  # raw rows per verifier call (at most one request per compressor and row)
RAW, DROPPED = "raw", "dropped"  # decision winners that are not a compressor
FAITHFUL = "faithful"  # the judge verdict a candidate needs (schema.VERDICTS)


# --------------------------------------------------------------------------------------------- decision
@dataclass(frozen=True)
class Candidate:
    """One compressor's output for one trace, with what the judge and the verifier made of it."""

    compressor: str
    chars: int | None  # reasoning chars; None: the compressor has no row for this trace
    verdict: str | None = None  # judge verdict; None: no parsed judgement
    answered: bool | None = None  # the verifier reached the canonical answer; None: not asked
    extracted: str | None = None  # what the verifier's reply was graded as
    cut: bool = False  # the verifier's reply hit verify.sampling.max_tokens (never a verification)


def failure(c: Candidate) -> str | None:
    """Why candidate ``c`` does not qualify, or None when it does (it has a row, a ``faithful`` verdict
    and the verifier reached the canonical answer from it)."""
    if c.chars is None:
        return "no_compression"
    if c.verdict is None:
        return "not_judged"
    if c.verdict != FAITHFUL:
        return f"judged_{c.verdict}"
    if c.cut:
        return "verifier_reply_cut (raise verify.sampling.max_tokens)"
    if not c.answered:
        return f"answer_not_reached (got {c.extracted})" if c.extracted else "answer_not_reached (none)"
    return None


def needs_verifier(c: Candidate) -> bool:
    """Whether the verifier must read ``c``: only a judged-faithful output can still qualify."""
    return c.chars is not None and c.verdict == FAITHFUL


def choose(candidates: Sequence[Candidate], fallback: str) -> tuple[str, str]:
    """(winner, reasons): the shortest qualifying candidate's compressor (ties: the order given), else
    ``raw`` or ``dropped`` per ``fallback``; ``reasons`` says why each shorter candidate lost."""
    ranked = sorted(candidates, key=lambda c: (c.chars is None, c.chars or 0))  # stable: ties keep order
    lost: list[str] = []
    for c in ranked:
        why = failure(c)
        if why is None:
            return c.compressor, "; ".join(lost)
        lost.append(f"{c.compressor}: {why}")
    return (RAW if fallback == "raw" else DROPPED), "; ".join(lost) or "no compressor configured"


# --------------------------------------------------------------------------------------------- inputs
@dataclass
class Compressed:
    """One compressor's traces and verdicts, indexed by id (first row of an id)."""

    table: pa.Table
    index: dict[str, int]
    reasoning: list[str | None]
    verdicts: dict[str, str]  # id -> verdict, rows with parse_status ok only
    repeated: int


def load_compressed(traces: Path, judgements: Path, compressor: str, teacher: str) -> Compressed:
    if not traces.exists():
        raise StageError(f"{traces} is missing; run `dvc repro compress@{teacher}-{compressor}` first")
    if not judgements.exists():
        raise StageError(f"{judgements} is missing; run `dvc repro judge@{teacher}-{compressor}` first")
    table = read_table(traces, TRACES)
    ids = table.column("id").to_pylist()
    firsts = first_per_id(ids, set())
    index = {rid: j for j, (rid, first) in enumerate(zip(ids, firsts, strict=True)) if first}
    judged = read_table(judgements, JUDGEMENTS, columns=["id", "verdict", "parse_status"]).to_pylist()
    judged_first = first_per_id([r["id"] for r in judged], set())
    verdicts = {
        r["id"]: r["verdict"]
        for r, first in zip(judged, judged_first, strict=True)
        if first and r["parse_status"] == "ok"
    }
    return Compressed(
        table=table,
        index=index,
        reasoning=text_column(table, "reasoning"),
        verdicts=verdicts,
        repeated=firsts.count(False) + judged_first.count(False),
    )


def decisions_path(out: str | Path) -> Path:
    """``compressed-verified.parquet`` -> ``compressed-verified.decisions.parquet`` (beside it)."""
    out = Path(out)
    return out.with_name(f"{out.name.removesuffix('.parquet')}.decisions.parquet")


# --------------------------------------------------------------------------------------------- stage
def verifier_request(vc: VerifyConfig, template: str, question: str, reasoning: str) -> Any:
    """The verifier sees the question and the compressed reasoning only -- never the canonical answer."""
    prompt = render(template, question=question, reasoning=middle_truncate(reasoning, vc.max_reasoning_chars))
    return request(prompt, vc.sampling, seed=vc.sampling.seed)


def run(
    params: Params,
    teacher: str,
    traces_dir: str | Path,
    judgements_dir: str | Path,
    out: str | Path,
    metrics: str | Path,
    *,
    backend: Any = None,
    cache_dir: str | Path | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> dict[str, Any]:
    from compress_distill.answers import grade

    pick(params.teachers, teacher, "teacher")
    vc = params.verify
    if vc is None:
        raise StageError(
            "params have no `verify` section; add verify.engine (a backend like judge.engine) to build "
            f"source {compressed_source(VERIFIED)}"
        )
    traces_dir, judgements_dir = Path(traces_dir), Path(judgements_dir)
    template, vhash = load_prompt(vc.prompt), prompt_hash(vc.prompt)
    names = list(params.compressors)
    comp = {
        c: load_compressed(
            traces_dir / f"{compressed_source(c)}.parquet", judgements_dir / f"{c}.parquet", c, teacher
        )
        for c in names
    }
    ledger = Ledger("verify")
    stats = TraceStats(STATS_SCHEMA)
    winners: Counter[str] = Counter()
    seen_ids: set[str] = set()
    staging = Staging()
    decisions: list[dict[str, str]] = []
    with (
        engine(vc.engine, backend, cache_dir) as be,
        parquet_sink(staging.file(out), TRACES, out) as sink,
    ):
        for chunk in iter_batches(traces_dir / "raw.parquet", TRACES, batch_size=chunk_rows):
            ledger.seen(chunk.num_rows)
            chunk = ledger.drop_duplicates(chunk, seen_ids, "raw trace")
            questions, answers = text_column(chunk, "question"), text_column(chunk, "answer")
            meta = chunk.select(["id", "dataset", "answer_type", "reasoning_chars"]).to_pylist()
            # per valid row: its candidates, and the (compressor, text) pairs the verifier must read
            rows: list[tuple[int, list[Candidate]]] = []
            asks: list[tuple[int, str]] = []  # (position in rows, compressor)
            requests: list[Any] = []
            gold: dict[int, str] = {}  # row -> canonical answer (valid UTF-8)
            for k, m in enumerate(meta):
                question, answer = questions[k], answers[k]
                if question is None or answer is None:
                    ledger.reject("non_utf8", id=m["id"], detail="question or answer is not valid UTF-8")
                    continue
                gold[k] = answer
                if (problem := gold_error(answer, m["answer_type"])) is not None:
                    ledger.reject("bad_gold_answer", id=m["id"], detail=problem)
                    continue
                cands = []
                for c in names:
                    j = comp[c].index.get(m["id"])
                    text = comp[c].reasoning[j] if j is not None else None
                    cand = Candidate(
                        c, len(text) if text is not None else None, comp[c].verdicts.get(m["id"])
                    )
                    cands.append(cand)
                    if needs_verifier(cand) and text is not None:  # a candidate with no text has no length
                        asks.append((len(rows), c))
                        requests.append(verifier_request(vc, template, question, text))
                rows.append((k, cands))
            completions = complete(be, requests)
            graded: dict[tuple[int, str], tuple[bool, str | None, bool]] = {}
            for (r, c), done in zip(asks, completions, strict=True):
                k = rows[r][0]
                g = grade(done.text, gold[k], meta[k]["answer_type"])
                # a reply cut at max_tokens may stop on any number, even the right one: never a verification
                cut = done.finish_reason == "length"
                graded[(r, c)] = (g.correct and not cut, g.extracted, cut)
            out_rows = []
            for r, (k, cands) in enumerate(rows):
                cands = [
                    Candidate(c.compressor, c.chars, c.verdict, *graded[(r, c.compressor)])
                    if (r, c.compressor) in graded
                    else c
                    for c in cands
                ]
                winner, reasons = choose(cands, vc.fallback)
                rid, dataset = meta[k]["id"], meta[k]["dataset"]
                winners[winner] += 1
                decisions.append({"id": rid, "dataset": dataset, "winner": winner, "reasons": reasons})
                if winner == DROPPED:
                    ledger.reject("no_verified_compression", id=rid, detail=reasons)
                    continue
                row = verified_row(chunk, k, comp.get(winner), rid, vhash)
                out_rows.append(row)
                ledger.kept()
                stats.add(
                    [
                        {
                            "dataset": dataset,
                            "reasoning_chars": row["reasoning_chars"],
                            "raw_chars": meta[k]["reasoning_chars"],
                            "compression_ratio": row["compression_ratio"],
                            "fallback": winner == RAW,
                        }
                    ]
                )
            sink.write_rows(out_rows)
            log.info("verify@%s: %d/%d traces decided so far", teacher, len(decisions), ledger.rows_in)
        ledger.write_rejects(staging, out)
        llm = engine_stats(be)
    pq.write_table(
        to_table(decisions, VERIFY_DECISIONS), staging.file(decisions_path(out)), compression="zstd"
    )

    decided = len(decisions)
    per_dataset, overall = stats.blocks(STATS)
    result = {
        **ledger.as_dict(),
        "fallback": vc.fallback,
        # share of the decided traces (valid raw rows) each winner took; "raw"/"dropped" are the fallback
        "shares": {w: winners[w] / decided if decided else 0.0 for w in [*names, RAW, DROPPED]},
        "fallback_rate": (winners[RAW] + winners[DROPPED]) / decided if decided else 0.0,
        "overall": overall,  # over the written rows (raw fallbacks count as ratio 1)
        "datasets": per_dataset,
        "repeated_ids": {c: comp[c].repeated for c in names},
        "engine": llm,
        "verifier_model": vc.engine.model,
        "prompt_hash": vhash,
    }
    staging.metrics(metrics, result)
    staging.commit()  # outputs, then metrics: nothing lands unless all of it was computed
    return result


def verified_row(raw: pa.Table, k: int, winner: Compressed | None, rid: str, vhash: str) -> dict[str, Any]:
    """The output row: the winner's compressed row (``winner``), else raw row ``k`` as the fallback;
    source ``compressed-verified`` either way."""
    if winner is None:
        row = raw.slice(k, 1).to_pylist()[0]
        row |= {"compression_ratio": 1.0, "compressor_model": "", "answer_preserved": None}
    else:
        row = winner.table.slice(winner.index[rid], 1).to_pylist()[0]
        # verified: the verifier reached the canonical answer from this reasoning alone
        row |= {"prompt_hash": f"{row['prompt_hash']}+{vhash}", "answer_preserved": True}
    return row | {"source": compressed_source(VERIFIED)}


def main(
    teacher: Annotated[str, typer.Option(help="teacher id")],
    traces_dir: Annotated[Path, typer.Option(help="data/traces/T (raw and compressed-<C> traces)")],
    judgements_dir: Annotated[Path, typer.Option(help="data/judgements/T (one table per compressor)")],
    out: Annotated[Path, typer.Option(help="the verified-compression traces (compressed-verified) to write")],
    metrics: Annotated[Path, typer.Option(help="metrics JSON")],
    params: Annotated[Path, typer.Option(help="params file")] = Path("params.yaml"),
) -> None:
    """Verified compression: per trace the shortest faithful compression a verifier answers correctly."""
    r = run(load_params(params), teacher, traces_dir, judgements_dir, out, metrics)
    shares = ", ".join(f"{w} {v:.0%}" for w, v in r["shares"].items())
    typer.echo(
        f"verify@{teacher}: {r['rows_out']}/{r['rows_in']} rows; shares {shares}; "
        f"fallback rate {r['fallback_rate']:.0%}; rejects {r['rejects']}"
    )
