"""compress@T-C: rewrite each raw trace shorter with compressor C; the teacher's final response is kept as is.

Paper §3.2: one generic prompt, low temperature (``compress.sampling``, 0.3), per-row character
compression ratio ``len(compressed reasoning) / len(raw reasoning)``.  Beyond the paper, the prompt may be
chosen per compressor (``compress.prompts[C]``) or per domain (``compress.domain_prompts[domain]``), in that
order of precedence over ``compress.prompt``; and each row records ``answer_preserved``: whether the
conclusion of the compressed reasoning alone still yields the canonical answer (the extraction cascade on its
last ``CONCLUSION_CHARS`` characters).  ``compress.require_answer_preserved`` drops the rows that do not.

Rejects (counted, written to ``<out>.rejects.parquet``):
- input rows: ``duplicate_id`` (an id already seen: the first row is kept), ``non_utf8`` (a text column is not valid UTF-8), ``bad_gold_answer`` (cannot be graded), ``empty_reasoning`` (nothing to compress),
  ``too_long`` (reasoning over ``MAX_INPUT_CHARS``: rejected, not clipped -- a compressor that sees a
  clipped trace writes a trace with a hole in it, which the dataset would then present as faithful);
- outputs: ``truncated_output`` (``finish_reason == "length"``), ``empty_output``, ``longer_than_raw``,
  ``non_utf8_output``, and ``answer_not_preserved`` when params require it.

Rows are processed in chunks of ``CHUNK_ROWS`` (one ``generate`` call each; the engine batches inside it),
so memory is bounded by one chunk whatever the corpus size.  A killed run replays finished requests from
the backend's durable cache and rewrites the output from scratch; outputs and metrics are staged and
renamed into place together (``staging.Staging``): no duplicates, and a failure leaves the previous ones.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import pyarrow as pa
import typer

from compress_distill.answers import gold_error
from compress_distill.config import BackendConfig, Params, load_params, pick
from compress_distill.llm.stage_engine import complete, engine, engine_stats, request
from compress_distill.llm.tokens import count_tokens, preflight_tokenizer
from compress_distill.llm.types import Completion
from compress_distill.names import compressed_source
from compress_distill.prompts import load_prompt, prompt_hash, render
from compress_distill.rejects import Ledger, is_utf8, text_column
from compress_distill.schema import TRACES, iter_batches, parquet_sink, trace_row
from compress_distill.staging import Staging
from compress_distill.stats import COMPRESSION, TraceStats, pct

log = logging.getLogger(__name__)

# 200k chars ~ 50k tokens: 3x the paper's 16,384-token teacher cap and 10x the longest mean trace of
# Table 4 (GPQA Diamond, 18.7k chars), so only runaway generations (e.g. a 1 MB loop) are rejected.
MAX_INPUT_CHARS = 200_000
# The "conclusion" checked for answer_preserved: the last 1,000 chars (~250 tokens) hold the final step and
# any "so the answer is ..." line, without letting an intermediate value early in the trace count.
CONCLUSION_CHARS = 1_000
# Rows per backend call: big enough for vLLM's continuous batching to stay saturated, small enough that
# one chunk of prompts and completions (~4k x 10 kB) stays far below a GB.
CHUNK_ROWS = 4_096
TEXT_COLUMNS = ("question", "reasoning", "answer", "response")
META_COLUMNS = ["id", "question_id", "dataset", "domain", "answer_type", "teacher_model", "prompt_hash"]
# per-dataset statistics of the kept rows (paper Table 5): lengths, ratio of means, % answer preserved
STATS_SCHEMA = {
    "reasoning_chars": int,
    "reasoning_tokens": int,
    "raw_chars": int,
    "compression_ratio": float,
    "answer_preserved": bool,
}
STATS = [*COMPRESSION, pct("answer_preserved")]

Reject = tuple[str, str]  # (reason, detail) of a counted reject


# --------------------------------------------------------------------------------------------- decisions
def prompt_path(params: Params, compressor: str, domain: str) -> str:
    """Precedence: per-compressor prompt, then per-domain prompt, then the generic one."""
    return params.compress.prompt_for(compressor, domain)


def answer_preserved(compressed: str, answer: str, answer_type: str) -> bool:
    from compress_distill.answers import extract_answer, is_correct

    found = extract_answer(compressed[-CONCLUSION_CHARS:], answer_type, None)
    return is_correct(found.value if found else None, answer, answer_type)


def input_reject(row: dict[str, Any]) -> Reject | None:
    """Why a raw trace row (its ``TEXT_COLUMNS`` decoded, None where not UTF-8) is not sent, else None."""
    if any(row[k] is None for k in TEXT_COLUMNS):
        return "non_utf8", "a text column of this row is not valid UTF-8"
    reasoning = row["reasoning"]
    if not reasoning.strip():
        return "empty_reasoning", ""
    if len(reasoning) > MAX_INPUT_CHARS:
        return (
            "too_long",
            f"{len(reasoning)} reasoning chars > MAX_INPUT_CHARS={MAX_INPUT_CHARS}: {reasoning[:500]}",
        )
    if (problem := gold_error(row["answer"], row["answer_type"])) is not None:
        return "bad_gold_answer", problem
    return None


def output_reject(out: str, raw: str, finish_reason: str) -> str | None:
    if finish_reason == "length":
        return "truncated_output"
    if not is_utf8(out):
        return "non_utf8_output"
    if not out:
        return "empty_output"
    if len(out) > len(raw):
        return "longer_than_raw"
    return None


@dataclass(frozen=True)
class Compression:
    text: str  # the compressed reasoning, stripped
    preserved: bool  # answer_preserved of its conclusion


def read_compression(c: Completion, row: dict[str, Any], require_preserved: bool) -> Compression | Reject:
    """The compressor's reply ``c`` to raw trace ``row``: kept as a ``Compression`` or a counted reject."""
    text = (c.text or "").strip()
    reason = output_reject(text, row["reasoning"], c.finish_reason)
    if reason:
        return reason, text
    preserved = answer_preserved(text, row["answer"], row["answer_type"])
    if require_preserved and not preserved:
        return "answer_not_preserved", text
    return Compression(text, preserved)


def compressed_trace(
    row: dict[str, Any], comp: Compression, tokens: int, compressor: str, model: str, phash: str
) -> dict[str, Any]:
    """The output row: ``row`` with its reasoning compressed; ``phash`` the compress prompt's hash."""
    return trace_row(
        **{
            k: row[k] for k in ("id", "question_id", "dataset", "domain", "question", "answer", "answer_type")
        },
        reasoning=comp.text,
        response=row["response"],  # the teacher's final response, re-attached unchanged
        source=compressed_source(compressor),
        reasoning_chars=len(comp.text),
        reasoning_tokens=tokens,  # in the compressor's tokenizer (truncate relies on it)
        compression_ratio=len(comp.text) / len(row["reasoning"]),
        teacher_model=row["teacher_model"],
        compressor_model=model,
        prompt_hash=f"{row['prompt_hash']}+{phash}",
        answer_preserved=comp.preserved,
    )


# --------------------------------------------------------------------------------------------- I/O
def _rows(chunk: pa.Table) -> list[dict[str, Any]]:
    """A chunk's rows as dicts; a text that is not valid UTF-8 is None (``text_column``)."""
    texts = {k: text_column(chunk, k) for k in TEXT_COLUMNS}
    meta = chunk.select(META_COLUMNS).to_pylist()
    return [{**m, **{k: v[i] for k, v in texts.items()}} for i, m in enumerate(meta)]


@dataclass
class _Compressor:
    """One compress run: the prompt per row, and the bookkeeping of its chunks."""

    params: Params
    compressor: str
    cfg: BackendConfig
    ledger: Ledger
    stats: TraceStats = field(default_factory=lambda: TraceStats(STATS_SCHEMA))
    used_prompts: dict[str, str] = field(default_factory=dict)  # path -> hash, for provenance in the metrics

    def prompt(self, row: dict[str, Any]) -> tuple[str, str]:
        """(prompt hash, rendered prompt) of the compress request for ``row``."""
        path = prompt_path(self.params, self.compressor, row["domain"])
        phash = self.used_prompts.setdefault(path, prompt_hash(path))
        fields = {k: row[k] for k in ("question", "reasoning", "answer", "domain", "dataset")}
        return phash, render(load_prompt(path), **fields)

    def chunk(self, be: Any, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Compress one chunk of valid-id rows (one ``generate`` call); returns the kept output rows."""
        todo = []
        for row in rows:
            if bad := input_reject(row):
                self.ledger.reject(bad[0], id=row["id"], detail=bad[1])
            else:
                todo.append((row, *self.prompt(row)))
        sampling = self.params.compress.sampling
        completions = complete(be, [request(p, sampling, seed=sampling.seed) for _, _, p in todo])
        keep: list[tuple[dict[str, Any], str, Compression]] = []
        for (row, phash, _), c in zip(todo, completions, strict=True):
            got = read_compression(c, row, self.params.compress.require_answer_preserved)
            if isinstance(got, Compression):
                keep.append((row, phash, got))
            else:
                self.ledger.reject(got[0], id=row["id"], detail=got[1])
        tokens = count_tokens(self.cfg.tokenizer_id, [comp.text for _, _, comp in keep])
        out = [
            compressed_trace(row, comp, n, self.compressor, self.cfg.model, phash)
            for (row, phash, comp), n in zip(keep, tokens, strict=True)
        ]
        self.ledger.kept(len(out))
        self.stats.add(
            {**{k: r[k] for k in ("dataset", *STATS_SCHEMA) if k in r}, "raw_chars": len(row["reasoning"])}
            for r, (row, _, _) in zip(out, keep, strict=True)
        )
        return out


def run(
    params: Params,
    teacher: str,
    compressor: str,
    raw: str | Path,
    out: str | Path,
    metrics: str | Path,
    *,
    backend: Any = None,
    cache_dir: str | Path | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> dict[str, Any]:
    ccfg = pick(params.compressors, compressor, "compressor")
    pick(params.teachers, teacher, "teacher")
    ledger = Ledger("compress")
    job = _Compressor(params, compressor, ccfg, ledger)
    seen_ids: set[str] = set()
    preflight_tokenizer(ccfg, f"compressors.{compressor}")  # fails here, not after every request is paid
    staging = Staging()
    out_file = staging.file(out)  # staged (and locked against a concurrent run) before a model loads
    with engine(ccfg, backend, cache_dir) as be, parquet_sink(out_file, TRACES, out) as sink:
        for chunk in iter_batches(raw, TRACES, batch_size=chunk_rows):
            ledger.seen(chunk.num_rows)
            sink.write_rows(job.chunk(be, _rows(ledger.drop_duplicates(chunk, seen_ids, "raw trace"))))
            log.info(
                "compress@%s-%s: %d/%d rows kept so far", teacher, compressor, ledger.rows_out, ledger.rows_in
            )
        ledger.write_rejects(staging, out)
        llm = engine_stats(be)
    per_dataset, overall = job.stats.blocks(STATS)
    result = {
        **ledger.as_dict(),
        "overall": overall,
        "datasets": per_dataset,  # paper Table 5: mean_chars, mean_tokens, ratio_of_means per dataset
        "require_answer_preserved": params.compress.require_answer_preserved,
        "engine": llm,
        "compressor_model": ccfg.model,
        "prompt_hashes": job.used_prompts,
    }
    staging.metrics(metrics, result)
    staging.commit()  # outputs, then metrics: nothing lands unless all of it was computed
    return result


def main(
    teacher: Annotated[str, typer.Option(help="teacher id whose raw traces are compressed")],
    compressor: Annotated[str, typer.Option(help="compressor id (a key of `compressors` in params)")],
    raw: Annotated[Path, typer.Option(help="raw traces (generate's raw.parquet)")],
    out: Annotated[Path, typer.Option(help="compressed traces to write")],
    metrics: Annotated[Path, typer.Option(help="metrics JSON (paper Table 5 per dataset)")],
    params: Annotated[Path, typer.Option(help="params file")] = Path("params.yaml"),
) -> None:
    """Compress raw traces with one compressor (teacher's final response re-attached unchanged)."""
    r = run(load_params(params), teacher, compressor, raw, out, metrics)
    typer.echo(
        f"compress@{teacher}-{compressor}: {r['rows_out']}/{r['rows_in']} kept, ratio of means "
        f"{r['overall'].get('ratio_of_means') or 0.0:.3f}; rejects {r['rejects']}"
    )
