"""answer_only@T: the answer-only ablation -- the whole think block removed, the final response kept.

Paper §3.3: the student is trained on the final response alone, so the rows carry an empty ``reasoning``
(``reasoning.join_reasoning`` renders no think block, or closes the one a pre-filled template opens).  The raw
reasoning column is never even read, and every column operation is vectorised in Arrow, so the paper's
283k traces take seconds (``bench/data_plane.py``).

Rejects: ``duplicate_id`` (the first row of an id is kept), ``empty_response`` (no final response means
nothing to train on) and ``non_utf8``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import pyarrow as pa
import pyarrow.compute as pc
import typer

from compress_distill.config import Params, load_params, pick
from compress_distill.rejects import Ledger, text_column
from compress_distill.schema import TRACES, iter_batches, parquet_sink
from compress_distill.staging import Staging
from compress_distill.stats import TraceStats, mean

BATCH_ROWS = 65_536  # no reasoning text is read: a batch is a few MB of questions and responses
_TEXT = ("question", "answer", "response")


def _utf8_ok(batch: pa.Table) -> pa.Array:
    """Boolean mask of rows whose text columns are valid UTF-8 (validated per column, decoded only if bad)."""
    ok = pa.array([True] * batch.num_rows, pa.bool_())  # typed: a batch emptied by duplicate_id is 0 rows
    for name in _TEXT:
        try:
            batch.column(name).validate(full=True)
        except pa.ArrowInvalid:
            ok = pc.and_(ok, pa.array([v is not None for v in text_column(batch, name)]))
    return ok


def run(
    params: Params,
    teacher: str,
    raw: str | Path,
    out: str | Path,
    metrics: str | Path,
    *,
    batch_rows: int = BATCH_ROWS,
) -> dict[str, Any]:
    pick(params.teachers, teacher, "teacher")
    columns = [n for n in TRACES.names if n != "reasoning"]
    ledger = Ledger("answer_only")
    stats = TraceStats({"response_chars": int})
    seen_ids: set[str] = set()
    staging = Staging()
    with parquet_sink(staging.file(out), TRACES, out) as sink:
        for batch in iter_batches(raw, TRACES, batch_size=batch_rows, columns=columns):
            ledger.seen(batch.num_rows)
            batch = ledger.drop_duplicates(batch, seen_ids, "raw trace")
            utf8 = _utf8_ok(batch)
            # a non-UTF-8 response cannot be trimmed; blank it before the emptiness test (it is rejected anyway)
            response = pc.if_else(utf8, batch.column("response"), pa.scalar("", pa.string()))
            empty = pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(pc.fill_null(response, ""))), 0)
            keep = pc.and_(utf8, pc.invert(empty))
            if not pc.all(keep).as_py():
                ids = batch.column("id").to_pylist()
                for rid, good, blank in zip(ids, utf8.to_pylist(), empty.to_pylist(), strict=True):
                    if not good:
                        ledger.reject(
                            "non_utf8", id=rid, detail="question, answer or response is not valid UTF-8"
                        )
                    elif blank:
                        ledger.reject("empty_response", id=rid, detail="no final response to keep")
                batch = batch.filter(keep)
            m = batch.num_rows
            table = batch.append_column("reasoning", pa.array([""] * m, pa.string()))
            replace = {
                "source": pa.array(["answer-only"] * m, pa.string()),
                "reasoning_chars": pa.array([0] * m, pa.int64()),
                "reasoning_tokens": pa.array([0] * m, pa.int64()),
                "compression_ratio": pa.array([0.0] * m, pa.float64()),
                "compressor_model": pa.array([""] * m, pa.string()),
                "answer_preserved": pa.nulls(m, pa.bool_()),
            }
            for name, col in replace.items():
                table = table.set_column(table.schema.get_field_index(name), name, col)
            sink.write_table(table)
            ledger.kept(m)
            stats.add_table(
                pa.table(
                    {
                        "dataset": table.column("dataset"),
                        "response_chars": pc.utf8_length(table.column("response")),
                    }
                )
            )
        ledger.write_rejects(staging, out)
    per_dataset, overall = stats.blocks([mean("response_chars")])
    result = {**ledger.as_dict(), "overall": overall, "datasets": per_dataset}
    staging.metrics(metrics, result)
    staging.commit()  # outputs, then metrics: nothing lands unless all of it was computed
    return result


def main(
    teacher: Annotated[str, typer.Option(help="teacher id")],
    raw: Annotated[Path, typer.Option(help="raw traces")],
    out: Annotated[Path, typer.Option(help="answer-only rows to write")],
    metrics: Annotated[Path, typer.Option(help="metrics JSON")],
    params: Annotated[Path, typer.Option(help="params file")] = Path("params.yaml"),
) -> None:
    """Answer-only ablation: drop the think block, keep the final response."""
    r = run(load_params(params), teacher, raw, out, metrics)
    typer.echo(f"answer_only@{teacher}: {r['rows_out']}/{r['rows_in']} rows; rejects {r['rejects']}")
