"""judge@T-C: an LLM judge annotates every compressed trace against its raw trace (paper Appendix G).

The judge sees the question, the canonical answer, the raw reasoning middle-truncated to
``judge.max_raw_chars`` (40k) and the compressed reasoning to ``judge.max_compressed_chars`` (12k) -- both
ends kept, so it always sees the start and the conclusion -- and answers under a JSON schema
(``engine_schema``: ``schema.judge_json_schema()`` with the consistency rule as one ``anyOf`` branch per
verdict, so a constrained engine cannot write a verdict that contradicts its score), validated with
``schema.JudgeVerdict``.

``parse_status`` of each row (``PARSE_STATUSES``): ``ok``; ``truncated`` (the reply hit ``max_tokens``
before the JSON closed -- the only realistic failure under structured decoding, Appendix G.1);
``invalid_json``; ``schema_error`` (JSON that violates the strict schema: no bool for a score, no "yes" for a
boolean); ``inconsistent`` (a verdict that contradicts its own faithfulness score, ``inconsistency``).  When
a reply holds several JSON objects the last valid one is the verdict.  A failed parse stays in the table
with null scores, so every compressed trace has a judgement row and ``build`` can join them all; in the
metrics it is a reject (``rows_out`` counts usable verdicts, ``rows_written`` every row).  Compressed rows whose raw trace is
missing or whose text is not valid UTF-8 are rejected without a row, and so is a repeated compressed id
(``duplicate_id``); a repeated raw id is judged against its first row only (``raw_repeated_ids``).

Metrics mirror paper Table 10 per dataset: N, mean faithfulness, % faithful (verdict, not score),
% answer-aligned, plus coverage, clarity and failure-mode counts.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import pyarrow as pa
import typer

from compress_distill.config import JudgeConfig, Params, load_params, pick
from compress_distill.llm.stage_engine import complete, engine, engine_stats, request
from compress_distill.names import FAILURE_MODES
from compress_distill.prompts import load_prompt, prompt_hash, render
from compress_distill.reasoning import middle_truncate
from compress_distill.rejects import Ledger, text_column
from compress_distill.schema import (
    JUDGEMENTS,
    TRACES,
    JudgeVerdict,
    first_per_id,
    iter_batches,
    judge_json_schema,
    parquet_sink,
    read_table,
)
from compress_distill.staging import Staging
from compress_distill.stats import TraceStats, mean, mode_counts, pct

log = logging.getLogger(__name__)

CHUNK_ROWS = 4_096  # raw rows per backend call (one chunk of prompts: ~4k x 50 kB at most)
PARSE_STATUSES = ("ok", "truncated", "invalid_json", "schema_error", "inconsistent")

# Faithfulness scores (Appendix G's 1-5 scale) that contradict each verdict.  3 is the scale's midpoint and
# fits any verdict; a score on the far side of it does not: "faithful" with 1-2 (claims largely unsupported)
# or "unfaithful" with 4-5 (claims supported) cannot both be the judge's opinion, so neither is counted.
# "partially_faithful" fits every score.
CONTRADICTING_FAITHFULNESS: dict[str, range] = {"faithful": range(1, 3), "unfaithful": range(4, 6)}
# per-dataset statistics of the parsed verdicts (paper Table 10), failure modes counted per trace
STATS_SCHEMA = {
    "faithfulness": int,
    "coverage": int,
    "clarity": int,
    "faithful": bool,
    "aligned": bool,
    "failure_modes": list[str],
}
STATS = [*(mean(k) for k in ("faithfulness", "coverage", "clarity")), pct("faithful"), pct("aligned")]
STATS += mode_counts("failure_modes")


def inconsistency(v: JudgeVerdict) -> str | None:
    """Why verdict ``v`` contradicts its own faithfulness score, or None when it does not."""
    if v.faithfulness in CONTRADICTING_FAITHFULNESS.get(v.verdict, range(0)):
        return f"verdict {v.verdict!r} contradicts faithfulness {v.faithfulness} (1-5 scale)"
    return None


def _json_values(text: str) -> tuple[list[Any], bool]:
    """Every JSON value in a reply, in order, and whether an object opens after the last one and never closes.

    A reply that is one JSON document (bare or in a Markdown fence) is that one value; otherwise each
    top-level ``{...}`` in the prose is decoded (servers without structured output wrap the object in prose
    or fences, and some write a draft before the final object)."""
    text = text.strip()
    whole = [text]
    if text.startswith("```"):
        body = text.split("\n", 1)[1] if "\n" in text else ""
        whole.append(body.rsplit("```", 1)[0].strip())
    for candidate in whole:
        try:
            return [json.loads(candidate)], False
        except json.JSONDecodeError:
            continue
    decoder = json.JSONDecoder()
    values: list[Any] = []
    pos, unclosed = 0, False
    while (start := text.find("{", pos)) >= 0:
        try:
            value, pos = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            unclosed, pos = True, start + 1
            continue
        values.append(value)
        unclosed = False
    return values, unclosed


FACULTY_SCORES = range(1, 6)  # Appendix G's 1-5 scale


def engine_schema(max_rationale_chars: int) -> dict[str, Any]:
    """The verdict's JSON schema for constrained decoding: one ``anyOf`` branch per verdict, the verdict written
    first and then only the faithfulness scores that do not contradict it (``CONTRADICTING_FAITHFULNESS``), so a
    structured-output engine cannot produce an ``inconsistent`` verdict (the demo's SmolLM2 wrote "faithful"
    with 1/5 on every row); the rationale is capped at ``max_rationale_chars``.  Every object it admits is a
    valid ``JudgeVerdict``; ``parse_verdict`` still checks consistency for engines without structured output."""
    base = judge_json_schema()
    base["properties"]["rationale"]["maxLength"] = max_rationale_chars
    verdicts = base["properties"]["verdict"]["enum"]
    branches = []
    for verdict in verdicts:
        contradicting = CONTRADICTING_FAITHFULNESS.get(verdict, range(0))
        fits = [score for score in FACULTY_SCORES if score not in contradicting]
        # xgrammar (hf backend) writes properties in the order given: verdict first, so it constrains the scores
        properties = {
            "verdict": {"type": "string", "const": verdict},
            "faithfulness": {"type": "integer", "enum": fits},
            **{k: v for k, v in base["properties"].items() if k not in ("verdict", "faithfulness")},
        }
        branches.append(
            {
                "type": "object",
                "properties": properties,
                "required": list(properties),
                "additionalProperties": False,
            }
        )
    return {"title": base["title"], "anyOf": branches}


def parse_verdict(text: str, finish_reason: str) -> tuple[str, JudgeVerdict | None, str]:
    """(parse_status, verdict or None, error detail): the LAST schema-valid object of the reply is the verdict
    (a judge that revises itself ends with its final answer); it is ``inconsistent`` when it contradicts its
    own faithfulness score.  With no valid object: ``truncated`` when the reply was cut inside an object,
    ``schema_error`` when it holds JSON (the last value's first error), ``invalid_json`` otherwise."""
    from pydantic import ValidationError

    values, unclosed = _json_values(text or "")
    error: ValidationError | None = None
    for value in reversed(values):
        try:
            v = JudgeVerdict.model_validate(value)
        except ValidationError as err:
            error = error or err
            continue
        reason = inconsistency(v)
        return ("inconsistent", None, f"{reason} | {text}") if reason else ("ok", v, "")
    if finish_reason == "length" and (unclosed or not values):  # cut before an object closed
        return "truncated", None, (text or "")
    if error is None:
        return "invalid_json", None, (text or "")
    first = error.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "(root)"
    return "schema_error", None, f"{error.error_count()} schema error(s): {where}: {first['msg']} | {text}"


def judge_prompt(template: str, jc: JudgeConfig, question: str, answer: str, raw: str, comp: str) -> str:
    """The judge's prompt: both traces middle-truncated to their ``judge.max_*_chars`` (start and end kept)."""
    return render(
        template,
        question=question,
        answer=answer,
        raw_reasoning=middle_truncate(raw, jc.max_raw_chars),
        compressed_reasoning=middle_truncate(comp, jc.max_compressed_chars),
    )


def judgement_row(
    rid: str, compressor: str, model: str, status: str, v: JudgeVerdict | None
) -> dict[str, Any]:
    return {
        "id": rid,
        "compressor": compressor,
        "faithfulness": v.faithfulness if v else None,
        "coverage": v.coverage if v else None,
        "clarity": v.clarity if v else None,
        "verdict": v.verdict if v else None,
        "answer_alignment": v.answer_alignment if v else None,
        "failure_modes": list(v.failure_modes) if v else None,
        "rationale": v.rationale if v else None,
        "judge_model": model,
        "parse_status": status,
    }


def verdict_stats(dataset: str, v: JudgeVerdict) -> dict[str, Any]:
    """The numbers of a parsed verdict that paper Table 10 averages per dataset."""
    return {
        "dataset": dataset,
        "faithfulness": v.faithfulness,
        "coverage": v.coverage,
        "clarity": v.clarity,
        "faithful": v.verdict == "faithful",  # the verdict, not the score
        "aligned": v.answer_alignment,
        "failure_modes": list(v.failure_modes),
    }


# --------------------------------------------------------------------------------------------- I/O
@dataclass
class _Compressed:
    """The compressed traces to judge (ids, datasets, reasoning), indexed by the first row of each id."""

    ids: list[str]
    datasets: list[str]
    texts: list[str | None]
    index: dict[str, int]  # id -> row of its first occurrence
    matched: set[int] = field(default_factory=set)  # rows that met their raw trace

    @classmethod
    def read(cls, path: str | Path, ledger: Ledger) -> _Compressed:
        comp = read_table(path, TRACES, columns=["id", "dataset", "reasoning"])
        ids = comp.column("id").to_pylist()
        ledger.seen(len(ids))
        index: dict[str, int] = {}
        for j, (rid, first) in enumerate(zip(ids, first_per_id(ids, set()), strict=True)):
            if first:
                index[rid] = j
            else:
                ledger.reject("duplicate_id", id=rid, detail="repeated compressed id; the first row is kept")
        return cls(ids, comp.column("dataset").to_pylist(), text_column(comp, "reasoning"), index)

    def unmatched(self) -> list[str]:
        """Ids of first rows that never met a raw trace."""
        return [rid for j, rid in enumerate(self.ids) if j not in self.matched and self.index.get(rid) == j]


@dataclass
class _Judge:
    """One judge run: the request of each (raw, compressed) pair, and the bookkeeping of its batches."""

    compressor: str
    jc: JudgeConfig
    template: str
    comp: _Compressed
    ledger: Ledger
    stats: TraceStats = field(default_factory=lambda: TraceStats(STATS_SCHEMA))
    statuses: Counter[str] = field(default_factory=Counter)
    raw_seen: set[str] = field(default_factory=set)
    raw_repeats: int = 0  # repeated raw ids: the first raw row of an id is the one judged against

    def requests(self, batch: pa.Table) -> tuple[list[int], list[Any]]:
        """(compressed rows, their judge requests) of the raw rows in ``batch`` that have a compressed row."""
        ids = batch.column("id").to_pylist()
        first = first_per_id(ids, self.raw_seen)
        self.raw_repeats += first.count(False)
        pairs = [(k, self.comp.index[r]) for k, r in enumerate(ids) if first[k] and r in self.comp.index]
        texts = {c: text_column(batch, c) for c in ("question", "answer", "reasoning")} if pairs else {}
        schema = engine_schema(self.jc.max_rationale_chars)
        todo, requests = [], []
        for k, j in pairs:
            self.comp.matched.add(j)
            fields = [texts["question"][k], texts["answer"][k], texts["reasoning"][k], self.comp.texts[j]]
            if any(f is None for f in fields):
                detail = "question, answer or a trace is not valid UTF-8"
                self.ledger.reject("non_utf8", id=self.comp.ids[j], detail=detail)
                continue
            prompt = judge_prompt(self.template, self.jc, *fields)  # type: ignore[arg-type]
            todo.append(j)
            requests.append(request(prompt, self.jc.sampling, seed=self.jc.sampling.seed, json_schema=schema))
        return todo, requests

    def batch(self, be: Any, batch: pa.Table) -> list[dict[str, Any]]:
        """Judge one batch of raw rows (one ``generate`` call); returns a judgement row per request."""
        todo, requests = self.requests(batch)
        rows = []
        for j, c in zip(todo, complete(be, requests), strict=True):
            rid = self.comp.ids[j]
            status, v, detail = parse_verdict(c.text, c.finish_reason)
            self.statuses[status] += 1
            rows.append(judgement_row(rid, self.compressor, self.jc.engine.model, status, v))
            if v is None:
                self.ledger.reject(status, id=rid, detail=detail)
            else:
                self.ledger.kept()
                self.stats.add([verdict_stats(self.comp.datasets[j], v)])
        return rows

    def metrics(self) -> dict[str, Any]:
        per_dataset, overall = self.stats.blocks(STATS)
        for block in (*per_dataset.values(), overall):
            block["failure_modes"] = {m: block.pop(m, 0) for m in FAILURE_MODES}
        return {
            **self.ledger.as_dict(),
            "rows_written": sum(self.statuses.values()),
            "parse_status": {s: self.statuses.get(s, 0) for s in PARSE_STATUSES},
            "overall": overall,
            "datasets": per_dataset,  # paper Table 10
            "raw_repeated_ids": self.raw_repeats,  # ignored raw rows (first row of an id wins)
        }


def run(
    params: Params,
    teacher: str,
    compressor: str,
    raw: str | Path,
    compressed: str | Path,
    out: str | Path,
    metrics: str | Path,
    *,
    backend: Any = None,
    cache_dir: str | Path | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> dict[str, Any]:
    pick(params.teachers, teacher, "teacher")
    pick(params.compressors, compressor, "compressor")
    jc = params.judge
    ledger = Ledger("judge")
    job = _Judge(compressor, jc, load_prompt(jc.prompt), _Compressed.read(compressed, ledger), ledger)
    staging = Staging()
    out_file = staging.file(out)  # staged (and locked against a concurrent run) before a model loads
    with engine(jc.engine, backend, cache_dir) as be, parquet_sink(out_file, JUDGEMENTS, out) as sink:
        columns = ["id", "question", "answer", "reasoning"]
        for batch in iter_batches(raw, TRACES, batch_size=chunk_rows, columns=columns):
            sink.write_rows(job.batch(be, batch))
            log.info("judge@%s-%s: %d judged so far", teacher, compressor, sum(job.statuses.values()))
        for rid in job.comp.unmatched():
            ledger.reject("missing_raw", id=rid, detail="no raw trace with this id")
        ledger.write_rejects(staging, out)
        llm = engine_stats(be)
    result = {
        **job.metrics(),
        "engine": llm,
        "judge_model": jc.engine.model,
        "prompt_hash": prompt_hash(jc.prompt),
    }
    staging.metrics(metrics, result)
    staging.commit()  # outputs, then metrics: nothing lands unless all of it was computed
    return result


def main(
    teacher: Annotated[str, typer.Option(help="teacher id")],
    compressor: Annotated[str, typer.Option(help="compressor id whose traces are judged")],
    raw: Annotated[Path, typer.Option(help="raw traces")],
    compressed: Annotated[Path, typer.Option(help="compressed traces to judge")],
    out: Annotated[Path, typer.Option(help="judgements table to write")],
    metrics: Annotated[Path, typer.Option(help="metrics JSON (paper Table 10 per dataset)")],
    params: Annotated[Path, typer.Option(help="params file")] = Path("params.yaml"),
) -> None:
    """Judge compressed traces against raw ones under a JSON schema (paper Appendix G)."""
    r = run(load_params(params), teacher, compressor, raw, compressed, out, metrics)
    typer.echo(
        f"judge@{teacher}-{compressor}: {r['rows_out']}/{r['rows_in']} verdicts parsed; "
        f"parse status {r['parse_status']}; rejects {r['rejects']}"
    )
