"""judge@T-C: an LLM judge annotates every compressed trace against its raw trace (paper Appendix G).

The judge sees the question, the canonical answer, the raw reasoning middle-truncated to
``judge.max_raw_chars`` (40k) and the compressed reasoning to ``judge.max_compressed_chars`` (12k) -- both
ends kept, so it always sees the start and the conclusion -- and answers under a JSON schema
(``schema.judge_json_schema()``; structured decoding in the engine), validated with ``schema.JudgeVerdict``.

``parse_status`` of each row: ``ok``; ``truncated`` (the reply hit ``max_tokens`` before the JSON closed --
the only realistic failure under structured decoding, Appendix G.1); ``invalid_json``; ``schema_error``
(parsable JSON that violates the schema).  A failed parse stays in the table with null scores, so every
compressed trace has a judgement row and ``build`` can join them all; in the metrics it is a reject
(``rows_out`` counts usable verdicts, ``rows_written`` every row).  Compressed rows whose raw trace is
missing or whose text is not valid UTF-8 are rejected without a row.

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

from compress_distill.config import Params, load_params
from compress_distill.metrics import write_metrics
from compress_distill.prompts import load_prompt, prompt_hash, render
from compress_distill.reasoning import middle_truncate
from compress_distill.schema import (
    FAILURE_MODES,
    JUDGEMENTS,
    TRACES,
    JudgeVerdict,
    iter_batches,
    judge_json_schema,
    read_table,
)
from compress_distill.stages.traces_common import (
    GroupMeans,
    Ledger,
    engine,
    engine_stats,
    parquet_sink,
    pick,
    request,
    split_overall,
    text_column,
)

log = logging.getLogger(__name__)

CHUNK_ROWS = 4_096  # raw rows per backend call (one chunk of prompts: ~4k x 50 kB at most)
PARSE_STATUSES = ("ok", "truncated", "invalid_json", "schema_error")


def _json_candidates(text: str) -> list[str]:
    """The reply itself, then without a Markdown fence, then its outermost ``{...}`` (servers without
    structured output sometimes wrap the object in prose or a code fence)."""
    text = text.strip()
    out = [text]
    if text.startswith("```"):
        body = text.split("\n", 1)[1] if "\n" in text else ""
        out.append(body.rsplit("```", 1)[0].strip())
    start, end = text.find("{"), text.rfind("}")
    if 0 <= start < end:
        out.append(text[start : end + 1])
    return out


def engine_schema(max_rationale_chars: int) -> dict[str, Any]:
    """The verdict's JSON schema for constrained decoding, its rationale capped at ``max_rationale_chars``."""
    schema = judge_json_schema()
    schema["properties"]["rationale"]["maxLength"] = max_rationale_chars
    return schema


def parse_verdict(text: str, finish_reason: str) -> tuple[str, JudgeVerdict | None, str]:
    """(parse_status, verdict or None, error detail)."""
    from pydantic import ValidationError

    obj: Any = None
    for candidate in _json_candidates(text or ""):
        try:
            obj = json.loads(candidate)
            break
        except json.JSONDecodeError:
            continue
    else:
        status = "truncated" if finish_reason == "length" else "invalid_json"
        return status, None, (text or "")
    try:
        return "ok", JudgeVerdict.model_validate(obj), ""
    except ValidationError as err:
        return "schema_error", None, f"{err.error_count()} schema error(s): {err.errors()[0]['msg']} | {text}"


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
    for j, rid in enumerate(comp_ids):
        ledger.seen()
        if rid in index:
            ledger.reject("duplicate_id", id=rid, detail="compressed id appears more than once")
        else:
            index[rid] = j
    matched: set[int] = set()

    stats = GroupMeans()
    modes: dict[str, Counter[str]] = defaultdict(Counter)
    statuses: Counter[str] = Counter()
    with engine(jc.engine, backend, cache_dir) as be, parquet_sink(out, JUDGEMENTS) as sink:
        for batch in iter_batches(
            raw, TRACES, batch_size=chunk_rows, columns=["id", "question", "answer", "reasoning"]
        ):
            ids = batch.column("id").to_pylist()
            pairs = [(k, index[r]) for k, r in enumerate(ids) if r in index and index[r] not in matched]
            if not pairs:
                continue
            questions = text_column(batch, "question")
            answers = text_column(batch, "answer")
            raws = text_column(batch, "reasoning")
            todo: list[int] = []
            requests = []
            for k, j in pairs:
                matched.add(j)
                texts = (questions[k], answers[k], raws[k], comp_text[j])
                if any(t is None for t in texts):
                    ledger.reject(
                        "non_utf8", id=comp_ids[j], detail="question, answer or a trace is not valid UTF-8"
                    )
                    continue
                prompt = render(
                    template,
                    question=questions[k],
                    answer=answers[k],
                    raw_reasoning=middle_truncate(raws[k], jc.max_raw_chars),
                    compressed_reasoning=middle_truncate(comp_text[j], jc.max_compressed_chars),
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
        ledger.write_rejects(out)
        llm = engine_stats(be)

    table = stats.table(scale={"pct_faithful": 100.0, "pct_aligned": 100.0})
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
    }
    write_metrics(metrics, result)
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
