"""Per-dataset trace statistics, on polars: the one definition of the numbers of paper Tables 2, 4, 5 and 10.

The trace stages (generate, compress, judge, truncate, answer-only, verify) and the report
(``evaluation.aggregate``) both aggregate per-trace numbers per dataset; the expressions live here so that a
stage's metrics file and the report's tables compute a mean, a percentage or a ratio of means the same way.
No engine or model code, and nothing of the report: a stage that imports this module does not re-run when a
report table changes.

A stage collects one row of numbers per kept trace (``TraceStats.add``, a chunk at a time, so memory is a few
numbers per trace, never the text) and aggregates once at the end (``TraceStats.blocks``) into
``{dataset: {"n": N, <aggregations>}}`` plus an ``overall`` block over every dataset.  Naming rule, defined
once (``mean``/``pct``): ``mean_<column>`` for a mean, ``pct_<column>`` for a share in percent (0-100).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import polars as pl
import pyarrow as pa

from compress_distill.names import FAILURE_MODES


def mean(column: str, name: str | None = None) -> pl.Expr:
    """Mean of ``column``, named ``mean_<column>`` unless ``name`` is given."""
    return pl.col(column).cast(pl.Float64).mean().alias(name or f"mean_{column}")


def pct(column: str) -> pl.Expr:
    """Share of true values of a boolean ``column`` in percent (0-100), named ``pct_<column>``."""
    return (pl.col(column).cast(pl.Float64).mean() * 100.0).alias(f"pct_{column}")


# The paper aggregates every compression ratio as a ratio of means (Tables 2 and 5: mean compressed chars /
# mean raw chars); the mean of per-trace ratios, larger since short traces compress less, is ``mean_ratio``.
RATIO_OF_MEANS = (pl.col("reasoning_chars").sum() / pl.col("raw_chars").sum()).alias("ratio_of_means")
TRACE_LENGTHS = (mean("reasoning_chars", "mean_chars"), mean("reasoning_tokens", "mean_tokens"))  # Table 4
COMPRESSION = (  # Tables 2 and 5, per compressed trace: its length, its raw trace's length and its ratio
    *TRACE_LENGTHS,
    mean("raw_chars"),
    RATIO_OF_MEANS,
    mean("compression_ratio", "mean_ratio"),
)


def mode_counts(column: str) -> list[pl.Expr]:
    """Per failure mode (paper Appendix G.2), the traces whose list ``column`` names it, one column per mode
    named after it (a mode listed twice in one verdict counts once)."""
    modes = pl.col(column).fill_null([]).list.unique()
    return [modes.list.contains(m).sum().alias(m) for m in FAILURE_MODES]


def _empty_block(aggs: Sequence[pl.Expr]) -> dict[str, Any]:
    """The ``overall`` block of a stage that kept nothing: ``n = 0`` and a ratio of means that is undefined."""
    names = {e.meta.output_name() for e in aggs}
    return {"n": 0, **({"ratio_of_means": None} if "ratio_of_means" in names else {})}


def by_dataset(
    frame: pl.DataFrame, aggs: Sequence[pl.Expr]
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """(``{dataset: block}`` in dataset order, ``overall`` block) of a frame with a ``dataset`` column;
    each block is ``{"n": rows, <aggs>}``.  An empty frame has no datasets and an ``overall`` of ``n = 0``."""
    if frame.is_empty():
        return {}, _empty_block(aggs)
    per = frame.group_by("dataset").agg(pl.len().alias("n"), *aggs).sort("dataset")
    overall = frame.select(pl.len().alias("n"), *aggs).row(0, named=True)
    return {r.pop("dataset"): r for r in per.to_dicts()}, overall


class TraceStats:
    """Per-trace numbers of one stage, collected a chunk at a time and aggregated per dataset at the end."""

    def __init__(self, schema: Mapping[str, Any]) -> None:
        """``schema``: the polars type of each value column (``dataset`` is added)."""
        self._schema = {"dataset": pl.String, **schema}
        self._frames: list[pl.DataFrame] = []

    def add(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """One row per kept trace: its ``dataset`` and a value for each column of the schema."""
        frame = pl.DataFrame(list(rows), schema=self._schema)
        if not frame.is_empty():
            self._frames.append(frame)

    def add_table(self, table: pa.Table) -> None:
        """The rows of an Arrow table with the ``dataset`` column and the schema's columns (vectorised)."""
        frame = pl.from_arrow(table.select(list(self._schema)))
        assert isinstance(frame, pl.DataFrame)  # a table converts to a frame, never to a series
        self._frames.append(frame.cast(self._schema))  # type: ignore[arg-type]

    def frame(self) -> pl.DataFrame:
        return pl.concat(self._frames) if self._frames else pl.DataFrame(schema=self._schema)

    def blocks(self, aggs: Sequence[pl.Expr]) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
        """``by_dataset`` of every row added so far."""
        return by_dataset(self.frame(), aggs)
