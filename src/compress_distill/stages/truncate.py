"""truncate@T: raw reasoning cut to the token length of compressor C's trace for the same id (length-matched).

Paper §3.3 (traces-truncated ablation): the raw trace is tokenised with the tokenizer of the most
aggressive compressor (``truncate[T].compressor``; Ministral in the paper) and cut to the token length of
that compressor's compressed trace; the final response is kept unchanged.  The budget is the compressed
row's ``reasoning_tokens``, which ``compress`` counts in the same tokenizer (recounted here if missing).

Speed (the paper corpus is ~0.6 billion raw tokens; see ``bench/data_plane.py``): only the needed prefix of
each raw trace is tokenised.  The budget is ~10% of a raw trace (Table 5 ratios 0.05-0.25), and tokenising
all of it would be ~10x the work.  The prefix is cut at a *pretokenizer boundary* -- a whitespace character
right after a letter or digit -- where GPT-2/Llama-3/Tekken-style regex pretokenizers and SentencePiece's
Metaspace all end a pre-token, so the tokens of the prefix are exactly the first tokens of the whole text
(a test checks this against full encodes).  If the prefix holds fewer tokens than the budget it is doubled
until it does or the whole trace is used.  The cut point is the end offset of the budget-th token, so the
truncated reasoning is always an exact prefix of the raw reasoning (no decode/re-encode drift).

Rows without a compressed counterpart (rejected by compress) are counted rejects; so are non-UTF-8 rows and
repeated ids (``duplicate_id``: the first row of an id is cut, never two rows with one budget); a repeated
id in the compressed table sets no second budget (its first row counts; ``compressed_repeated_ids``).
Streamed in batches of ``BATCH_ROWS`` with the Rust tokenizer's batch encode (parallel across cores).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Annotated, Any

import pyarrow as pa
import typer

from compress_distill.config import Params, load_params, pick
from compress_distill.llm.tokens import count_tokens, preflight_tokenizer
from compress_distill.rejects import Ledger, text_column
from compress_distill.schema import TRACES, first_per_id, iter_batches, parquet_sink, read_table
from compress_distill.staging import Staging
from compress_distill.stats import TRACE_LENGTHS, TraceStats, mean, pct

log = logging.getLogger(__name__)
# per-dataset statistics of the cut traces: lengths, mean per-trace ratio, % under budget without a cut
STATS_SCHEMA = {"reasoning_chars": int, "reasoning_tokens": int, "compression_ratio": float, "uncut": bool}
STATS = [*TRACE_LENGTHS, mean("compression_ratio", "mean_ratio"), pct("uncut")]

# ~8k traces x ~7 kB (Table 4) = ~60 MB of text per batch: one batch-encode call keeps all cores busy.
BATCH_ROWS = 8_192
# First prefix guess: budget x (chars per token seen so far) x 1.25, plus 32 chars.  Tokenising 25% more
# than needed is cheaper than a second encode for the rows whose text is sparser than average.
PREFIX_SLACK = 1.25
PREFIX_PAD_CHARS = 32
INITIAL_CHARS_PER_TOKEN = 4.0
# a whitespace character right after a letter or digit (not "_": regex pretokenizers treat it as punctuation)
_BOUNDARY = re.compile(r"(?<=[^\W_])\s")


def safe_prefix_end(text: str, at_least: int) -> int:
    """Smallest pretokenizer-boundary position >= ``at_least`` (``len(text)`` if there is none)."""
    if at_least >= len(text):
        return len(text)
    m = _BOUNDARY.search(text, max(at_least, 1))
    return m.start() if m else len(text)


class Cutter:
    """Cut texts to token budgets with one tokenizer; keeps a running chars-per-token estimate."""

    def __init__(self, tokenizer: Any) -> None:
        self.tok = tokenizer
        self.chars_per_token = INITIAL_CHARS_PER_TOKEN
        self.encoded_chars = 0
        self.encoded_tokens = 0

    def cut(self, texts: list[str], budgets: list[int]) -> tuple[list[int], list[int]]:
        """Per text: (end char offset, tokens kept).  Kept tokens = min(budget, tokens in the text)."""
        ends = [0] * len(texts)
        kept = [0] * len(texts)
        want = {
            i: int(b * self.chars_per_token * PREFIX_SLACK) + PREFIX_PAD_CHARS
            for i, (t, b) in enumerate(zip(texts, budgets, strict=True))
            if b > 0 and t
        }
        while want:
            order = list(want)
            stops = [safe_prefix_end(texts[i], want[i]) for i in order]
            encs = self.tok.encode_batch(
                [texts[i][:s] for i, s in zip(order, stops, strict=True)], add_special_tokens=False
            )
            again: dict[int, int] = {}
            for i, stop, enc in zip(order, stops, encs, strict=True):
                n, budget = len(enc), budgets[i]
                self.encoded_chars += stop
                self.encoded_tokens += n
                if n >= budget:
                    # end offset of the budget-th token (a byte-level token inside a multi-byte char maps to
                    # that whole char, so the cut never splits a character)
                    ends[i], kept[i] = enc.token_to_chars(budget - 1)[1], budget
                elif stop >= len(texts[i]):
                    ends[i], kept[i] = len(texts[i]), n  # the whole raw trace is within the budget
                else:
                    again[i] = max(2 * stop, stop + PREFIX_PAD_CHARS)
            want = again
            if self.encoded_tokens:
                self.chars_per_token = self.encoded_chars / self.encoded_tokens
        return ends, kept


def _budgets(path: str | Path, model: str) -> tuple[dict[str, tuple[int, str]], int]:
    """(id -> (token budget, prompt hash), repeated ids ignored) from the compressed table; missing counts
    are recomputed.  A repeated id keeps its first row's budget (``schema.first_per_id``)."""
    table = read_table(path, TRACES, columns=["id", "reasoning_tokens", "prompt_hash"])
    first = first_per_id(table.column("id").to_pylist(), set())
    repeats = first.count(False)
    table = table.filter(pa.array(first)) if repeats else table
    ids = table.column("id").to_pylist()
    tokens = table.column("reasoning_tokens").to_pylist()
    hashes = table.column("prompt_hash").to_pylist()
    missing = [i for i, t in enumerate(tokens) if t is None]
    if missing:
        reasoning = read_table(path, TRACES, columns=["reasoning"])
        reasoning = reasoning.filter(pa.array(first)) if repeats else reasoning
        texts = text_column(reasoning.take(missing), "reasoning")
        for i, n in zip(missing, count_tokens(model, [t or "" for t in texts]), strict=True):
            tokens[i] = n
    return {i: (int(t), h or "") for i, t, h in zip(ids, tokens, hashes, strict=True)}, repeats


def run(
    params: Params,
    teacher: str,
    raw: str | Path,
    compressed: str | Path,
    out: str | Path,
    metrics: str | Path,
    *,
    batch_rows: int = BATCH_ROWS,
) -> dict[str, Any]:
    cfg = pick(params.truncate, teacher, "truncate teacher")
    ccfg = pick(params.compressors, cfg.compressor, "compressor")
    model = ccfg.model
    cutter = Cutter(preflight_tokenizer(ccfg, f"compressors.{cfg.compressor}"))
    budgets, compressed_repeats = _budgets(compressed, ccfg.tokenizer_id)
    ledger = Ledger("truncate")
    stats = TraceStats(STATS_SCHEMA)
    budget_tokens = 0
    seen_ids: set[str] = set()

    staging = Staging()
    with parquet_sink(staging.file(out), TRACES, out) as sink:
        for batch in iter_batches(raw, TRACES, batch_size=batch_rows):
            ledger.seen(batch.num_rows)
            batch = ledger.drop_duplicates(batch, seen_ids, "raw trace")
            ids = batch.column("id").to_pylist()
            texts = text_column(batch, "reasoning")
            datasets = batch.column("dataset").to_pylist()
            keep: list[int] = []
            kept_texts: list[str] = []
            for i, (rid, text) in enumerate(zip(ids, texts, strict=True)):
                if text is None:
                    ledger.reject("non_utf8", id=rid, detail="raw reasoning is not valid UTF-8")
                elif rid not in budgets:
                    ledger.reject("no_compressed_counterpart", id=rid, detail=f"no {cfg.compressor} trace")
                elif not text.strip():
                    ledger.reject("empty_reasoning", id=rid)
                elif budgets[rid][0] <= 0:
                    ledger.reject("zero_budget", id=rid, detail="the compressed trace has no tokens")
                else:
                    keep.append(i)
                    kept_texts.append(text)
            if not keep:
                continue
            kept_budgets = [budgets[ids[i]][0] for i in keep]
            ends, n_tokens = cutter.cut(kept_texts, kept_budgets)
            cut = [t[:e] for t, e in zip(kept_texts, ends, strict=True)]
            chars = [len(c) for c in cut]
            ratios = [len(c) / len(t) for c, t in zip(cut, kept_texts, strict=True)]
            stats.add(
                {
                    "dataset": datasets[i],
                    "reasoning_chars": c,
                    "reasoning_tokens": n,
                    "compression_ratio": r,
                    "uncut": n < b,
                }
                for i, c, n, r, b in zip(keep, chars, n_tokens, ratios, kept_budgets, strict=True)
            )
            budget_tokens += sum(kept_budgets)
            n = len(keep)
            table = batch.take(pa.array(keep, pa.int64()))
            replace = {
                "reasoning": pa.array(cut, pa.string()),
                "source": pa.array(["truncated"] * n, pa.string()),
                "reasoning_chars": pa.array(chars, pa.int64()),
                "reasoning_tokens": pa.array(n_tokens, pa.int64()),
                "compression_ratio": pa.array(ratios, pa.float64()),
                "compressor_model": pa.array([model] * n, pa.string()),  # whose tokenizer set the budget
                "prompt_hash": pa.array([budgets[ids[i]][1] for i in keep], pa.string()),
                "answer_preserved": pa.nulls(n, pa.bool_()),
            }
            for name, col in replace.items():
                table = table.set_column(table.schema.get_field_index(name), name, col)
            sink.write_table(table)  # response, question, answer ... carried over unchanged
            ledger.kept(n)
        ledger.write_rejects(staging, out)

    per_dataset, overall = stats.blocks(STATS)
    result = {
        **ledger.as_dict(),
        "overall": overall,
        "datasets": per_dataset,
        "budget_tokens": budget_tokens,
        "tokenized_chars": cutter.encoded_chars,
        "tokenized_tokens": cutter.encoded_tokens,
        "tokenizer_model": ccfg.tokenizer_id,
        "compressor": cfg.compressor,
        "compressed_repeated_ids": compressed_repeats,  # ignored rows of the budget table (first row wins)
    }
    staging.metrics(metrics, result)
    staging.commit()  # outputs, then metrics: nothing lands unless all of it was computed
    return result


def main(
    teacher: Annotated[str, typer.Option(help="teacher id (a key of `truncate` in params)")],
    raw: Annotated[Path, typer.Option(help="raw traces")],
    compressed: Annotated[Path, typer.Option(help="compressed traces that set each row's token budget")],
    out: Annotated[Path, typer.Option(help="truncated traces to write")],
    metrics: Annotated[Path, typer.Option(help="metrics JSON")],
    params: Annotated[Path, typer.Option(help="params file")] = Path("params.yaml"),
) -> None:
    """Cut raw traces to the token length of the most aggressive compressor's traces (length-matched)."""
    r = run(load_params(params), teacher, raw, compressed, out, metrics)
    typer.echo(f"truncate@{teacher}: {r['rows_out']}/{r['rows_in']} rows; rejects {r['rejects']}")
