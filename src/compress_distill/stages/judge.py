"""judge@T-C: an LLM judge annotates every compressed trace against its raw trace (paper Appendix G).

The judge sees the question, the canonical answer, the raw reasoning middle-truncated to
``judge.max_raw_chars`` (40k) and the compressed reasoning to ``judge.max_compressed_chars`` (12k) -- both
ends kept, so it always sees the start and the conclusion -- and answers under a JSON schema
(``schema.judge_json_schema()``; structured decoding in the engine), validated with ``schema.JudgeVerdict``.

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
from collections import Counter, defaultdict
from pathlib import Path
from typing import Annotated, Any

import typer

from compress_distill.config import Params, load_params, pick
from compress_distill.llm.stage_engine import engine, engine_stats, request
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
from compress_distill.stats import GroupMeans, split_overall

log = logging.getLogger(__name__)

CHUNK_ROWS = 4_096  # raw rows per backend call (one chunk of prompts: ~4k x 50 kB at most)
PARSE_STATUSES = ("ok", "truncated", "invalid_json", "schema_error", "inconsistent")

# Faithfulness scores (Appendix G's 1-5 scale) that contradict each verdict.  3 is the scale's midpoint and
# fits any verdict; a score on the far side of it does not: "faithful" with 1-2 (claims largely unsupported)
# or "unfaithful" with 4-5 (claims supported) cannot both be the judge's opinion, so neither is counted.
# "partially_faithful" fits every score.
CONTRADICTING_FAITHFULNESS: dict[str, range] = {"faithful": range(1, 3), "unfaithful": range(4, 6)}


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


def _row(rid: str, compressor: str, model: str, status: str, v: JudgeVerdict | None) -> dict[str, Any]:
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
    template, phash = load_prompt(jc.prompt), prompt_hash(jc.prompt)
    schema = engine_schema(jc.max_rationale_chars)
    ledger = Ledger("judge")

    comp = read_table(compressed, TRACES, columns=["id", "dataset", "reasoning"])
    comp_ids = comp.column("id").to_pylist()
    comp_data = comp.column("dataset").to_pylist()
    comp_text = text_column(comp, "reasoning")
    del comp
    index: dict[str, int] = {}
    ledger.seen(len(comp_ids))
    for j, (rid, first) in enumerate(zip(comp_ids, first_per_id(comp_ids, set()), strict=True)):
        if first:
            index[rid] = j
        else:
            ledger.reject("duplicate_id", id=rid, detail="repeated compressed id; the first row is kept")
    matched: set[int] = set()
    raw_seen: set[str] = set()
    raw_repeats = 0  # repeated raw ids: the first raw row of an id is the one judged against

    stats = GroupMeans()
    modes: dict[str, Counter[str]] = defaultdict(Counter)
    statuses: Counter[str] = Counter()
    staging = Staging()
    with (
        engine(jc.engine, backend, cache_dir) as be,
        parquet_sink(staging.file(out), JUDGEMENTS, out) as sink,
    ):
        for batch in iter_batches(
            raw, TRACES, batch_size=chunk_rows, columns=["id", "question", "answer", "reasoning"]
        ):
            ids = batch.column("id").to_pylist()
            raw_first = first_per_id(ids, raw_seen)
            raw_repeats += raw_first.count(False)
            pairs = [(k, index[r]) for k, r in enumerate(ids) if raw_first[k] and r in index]
            if not pairs:
                continue
            questions = text_column(batch, "question")
            answers = text_column(batch, "answer")
            raws = text_column(batch, "reasoning")
            todo: list[int] = []
            requests = []
            for k, j in pairs:
                matched.add(j)
                question, answer, raw_text, comp = questions[k], answers[k], raws[k], comp_text[j]
                if question is None or answer is None or raw_text is None or comp is None:
                    ledger.reject(
                        "non_utf8", id=comp_ids[j], detail="question, answer or a trace is not valid UTF-8"
                    )
                    continue
                prompt = render(
                    template,
                    question=question,
                    answer=answer,
                    raw_reasoning=middle_truncate(raw_text, jc.max_raw_chars),
                    compressed_reasoning=middle_truncate(comp, jc.max_compressed_chars),
                )
                todo.append(j)
                requests.append(request(prompt, jc.sampling, seed=jc.sampling.seed, json_schema=schema))
            completions = be.generate(requests) if requests else []
            if len(completions) != len(requests):
                raise RuntimeError(
                    f"backend returned {len(completions)} completions for {len(requests)} requests; "
                    "the engine contract is one completion per request, in order"
                )
            rows = []
            for j, c in zip(todo, completions, strict=True):
                status, v, detail = parse_verdict(c.text, c.finish_reason)
                statuses[status] += 1
                rows.append(_row(comp_ids[j], compressor, jc.engine.model, status, v))
                if v is None:
                    ledger.reject(status, id=comp_ids[j], detail=detail)
                    continue
                ledger.kept()
                stats.add(
                    comp_data[j],
                    faithfulness=v.faithfulness,
                    coverage=v.coverage,
                    clarity=v.clarity,
                    pct_faithful=v.verdict == "faithful",
                    pct_aligned=v.answer_alignment,
                )
                for m in set(v.failure_modes):
                    modes[comp_data[j]][m] += 1
                    modes["overall"][m] += 1
            sink.write_rows(rows)
            log.info("judge@%s-%s: %d judged so far", teacher, compressor, sum(statuses.values()))
        for j, rid in enumerate(comp_ids):
            if j not in matched and index.get(rid) == j:
                ledger.reject("missing_raw", id=rid, detail="no raw trace with this id")
        ledger.write_rejects(staging, out)
        llm = engine_stats(be)

    # blocks of numbers, each gaining a dict of failure-mode counts below
    table: dict[str, dict[str, Any]] = dict(stats.table(scale={"pct_faithful": 100.0, "pct_aligned": 100.0}))
    for group, block in table.items():
        block["failure_modes"] = {m: modes[group].get(m, 0) for m in FAILURE_MODES}
    per_dataset, overall = split_overall(table)
    if not overall.get("failure_modes"):
        overall["failure_modes"] = dict.fromkeys(FAILURE_MODES, 0)
    result = {
        **ledger.as_dict(),
        "rows_written": sum(statuses.values()),
        "parse_status": {s: statuses.get(s, 0) for s in PARSE_STATUSES},
        "overall": overall,
        "datasets": per_dataset,  # paper Table 10
        "engine": llm,
        "judge_model": jc.engine.model,
        "prompt_hash": phash,
        "raw_repeated_ids": raw_repeats,  # ignored raw rows (first row of an id wins)
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
