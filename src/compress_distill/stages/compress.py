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
from pathlib import Path
from typing import Annotated, Any

import typer

from compress_distill.answers import gold_error
from compress_distill.config import Params, load_params, pick
from compress_distill.evaluation.metrics import with_ratio_of_means
from compress_distill.llm.stage_engine import engine, engine_stats, request
from compress_distill.llm.tokens import count_tokens, preflight_tokenizer
from compress_distill.names import compressed_source
from compress_distill.prompts import load_prompt, prompt_hash, render
from compress_distill.rejects import Ledger, is_utf8, text_column
from compress_distill.schema import TRACES, iter_batches, parquet_sink, trace_row
from compress_distill.staging import Staging
from compress_distill.stats import GroupMeans, split_overall

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


def prompt_path(params: Params, compressor: str, domain: str) -> str:
    """Precedence: per-compressor prompt, then per-domain prompt, then the generic one."""
    return params.compress.prompt_for(compressor, domain)


def answer_preserved(compressed: str, answer: str, answer_type: str) -> bool:
    from compress_distill.answers import extract_answer, is_correct

    found = extract_answer(compressed[-CONCLUSION_CHARS:], answer_type, None)
    return is_correct(found.value if found else None, answer, answer_type)


def _input_reject(reasoning: str) -> tuple[str, str] | None:
    if not reasoning.strip():
        return "empty_reasoning", ""
    if len(reasoning) > MAX_INPUT_CHARS:
        return (
            "too_long",
            f"{len(reasoning)} reasoning chars > MAX_INPUT_CHARS={MAX_INPUT_CHARS}: {reasoning[:500]}",
        )
    return None


def _output_reject(out: str, raw: str, finish_reason: str) -> str | None:
    if finish_reason == "length":
        return "truncated_output"
    if not is_utf8(out):
        return "non_utf8_output"
    if not out:
        return "empty_output"
    if len(out) > len(raw):
        return "longer_than_raw"
    return None


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
    sampling = params.compress.sampling
    require = params.compress.require_answer_preserved
    ledger = Ledger("compress")
    stats = GroupMeans()
    used_prompts: dict[str, str] = {}  # path -> hash, for provenance in the metrics
    seen_ids: set[str] = set()

    preflight_tokenizer(ccfg, f"compressors.{compressor}")  # fails here, not after every request is paid
    staging = Staging()
    with engine(ccfg, backend, cache_dir) as be, parquet_sink(staging.file(out), TRACES, out) as sink:
        for chunk in iter_batches(raw, TRACES, batch_size=chunk_rows):
            ledger.seen(chunk.num_rows)
            chunk = ledger.drop_duplicates(chunk, seen_ids, "raw trace")
            reasonings = text_column(chunk, "reasoning")
            responses = text_column(chunk, "response")
            questions = text_column(chunk, "question")
            answers = text_column(chunk, "answer")
            meta = chunk.select(
                ["id", "question_id", "dataset", "domain", "answer_type", "teacher_model", "prompt_hash"]
            ).to_pylist()
            todo: list[int] = []
            inputs: dict[int, tuple[str, str]] = {}  # row -> (raw reasoning, canonical answer), valid UTF-8
            requests = []
            for i, row in enumerate(meta):
                question, reasoning, answer = questions[i], reasonings[i], answers[i]
                if question is None or reasoning is None or answer is None or responses[i] is None:
                    ledger.reject(
                        "non_utf8", id=row["id"], detail="a text column of this row is not valid UTF-8"
                    )
                    continue
                bad = _input_reject(reasoning)
                if bad is None and (problem := gold_error(answer, row["answer_type"])) is not None:
                    bad = ("bad_gold_answer", problem)
                if bad:
                    ledger.reject(bad[0], id=row["id"], detail=bad[1])
                    continue
                path = prompt_path(params, compressor, row["domain"])
                used_prompts.setdefault(path, prompt_hash(path))
                prompt = render(
                    load_prompt(path),
                    question=question,
                    reasoning=reasoning,
                    answer=answer,
                    domain=row["domain"],
                    dataset=row["dataset"],
                )
                todo.append(i)
                inputs[i] = (reasoning, answer)
                requests.append(request(prompt, sampling, seed=sampling.seed))
            completions = be.generate(requests) if requests else []
            if len(completions) != len(requests):
                raise RuntimeError(
                    f"backend returned {len(completions)} completions for {len(requests)} requests; "
                    "the engine contract is one completion per request, in order"
                )
            keep: list[tuple[int, str, bool]] = []
            for i, c in zip(todo, completions, strict=True):
                row, (raw_text, answer) = meta[i], inputs[i]
                text = (c.text or "").strip()
                reason = _output_reject(text, raw_text, c.finish_reason)
                if reason:
                    ledger.reject(reason, id=row["id"], detail=text)
                    continue
                preserved = answer_preserved(text, answer, row["answer_type"])
                if require and not preserved:
                    ledger.reject("answer_not_preserved", id=row["id"], detail=text)
                    continue
                keep.append((i, text, preserved))

            tokens = count_tokens(ccfg.tokenizer_id, [t for _, t, _ in keep])
            rows = []
            for (i, text, preserved), n_tok in zip(keep, tokens, strict=True):
                row, (raw_text, _) = meta[i], inputs[i]
                path = prompt_path(params, compressor, row["domain"])
                ratio = len(text) / len(raw_text)
                ledger.kept()
                stats.add(
                    row["dataset"],
                    chars=len(text),
                    tokens=n_tok,
                    ratio=ratio,
                    raw_chars=len(raw_text),
                    pct_answer_preserved=bool(preserved),
                )
                rows.append(
                    trace_row(
                        id=row["id"],
                        question_id=row["question_id"],
                        dataset=row["dataset"],
                        domain=row["domain"],
                        question=questions[i],
                        answer=answers[i],
                        answer_type=row["answer_type"],
                        reasoning=text,
                        response=responses[i],  # the teacher's final response, re-attached unchanged
                        source=compressed_source(compressor),
                        reasoning_chars=len(text),
                        reasoning_tokens=n_tok,  # in the compressor's tokenizer (truncate relies on it)
                        compression_ratio=ratio,
                        teacher_model=row["teacher_model"],
                        compressor_model=ccfg.model,
                        prompt_hash=f"{row['prompt_hash']}+{used_prompts[path]}",
                        answer_preserved=preserved,
                    )
                )
            sink.write_rows(rows)
            log.info(
                "compress@%s-%s: %d/%d rows kept so far", teacher, compressor, ledger.rows_out, ledger.rows_in
            )
        ledger.write_rejects(staging, out)
        llm = engine_stats(be)

    per_dataset, overall = split_overall(stats.table(scale={"pct_answer_preserved": 100.0}))
    # paper Tables 2/5 aggregate as ratio_of_means; mean_ratio (mean of per-trace ratios) stays beside it
    overall = with_ratio_of_means(overall)
    per_dataset = {d: with_ratio_of_means(b) for d, b in per_dataset.items()}
    result = {
        **ledger.as_dict(),
        "overall": overall,
        "datasets": per_dataset,  # paper Table 5: mean_chars, mean_tokens, ratio_of_means per dataset
        "require_answer_preserved": require,
        "engine": llm,
        "compressor_model": ccfg.model,
        "prompt_hashes": used_prompts,
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
