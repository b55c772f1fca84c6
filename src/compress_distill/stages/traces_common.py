"""Helpers shared by the trace stages (generate, compress, truncate, answer_only, judge, build).

What lives here is what every trace stage needs in the same form: a streaming Parquet sink into a staged
path (``staging.Staging`` renames it into place with the stage's other outputs), token counting with a model's own tokenizer, per-dataset means for the metrics tables, and
the backend lifecycle.  Heavy imports (transformers, the engine layer) stay inside functions.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from compress_distill.config import BackendConfig, ConfigError, SamplingConfig
from compress_distill.errors import UserError
from compress_distill.schema import (
    TRACES,
    to_table,
    validate,
)

# Rows per Parquet row group of the trace tables: ~8k traces of ~7 kB reasoning (paper Table 4) is
# ~60 MB uncompressed, the scale at which readers stream efficiently without holding whole files.
ROW_GROUP_ROWS = 8_192


# --------------------------------------------------------------------------------------------- params
class StageError(UserError, RuntimeError):
    """An input a stage cannot work with (e.g. an upstream stage accepted no rows); the message says why."""


def pick(mapping: Mapping[str, Any], key: str, what: str) -> Any:
    """``mapping[key]`` with an error that lists the defined ids (``--teacher qwen`` typo -> fix-it)."""
    if key not in mapping:
        raise ConfigError(
            f"{what} {key!r} is not defined in params; defined: {', '.join(mapping) or '(none)'}"
        )
    return mapping[key]


# --------------------------------------------------------------------------------------------- sinks
class ParquetSink:
    """Rows or tables streamed into one (staged) Parquet file.

    Empty inputs produce a valid file with the schema and no row groups (``datasets`` cannot read a
    zero-row row group, see ``build``).
    """

    def __init__(self, writer: pq.ParquetWriter, schema: pa.Schema, path: Path) -> None:
        self._writer = writer
        self.schema = schema
        self.path = path
        self.rows = 0

    def write_rows(self, rows: Sequence[Mapping[str, Any]]) -> None:
        if rows:
            self.write_table(to_table(rows, self.schema))

    def write_table(self, table: pa.Table) -> None:
        if table.num_rows:
            self._writer.write_table(
                validate(table, self.schema, str(self.path)), row_group_size=ROW_GROUP_ROWS
            )
            self.rows += table.num_rows


@contextlib.contextmanager
def parquet_sink(
    path: str | Path, schema: pa.Schema, name: str | Path | None = None
) -> Iterator[ParquetSink]:
    """Stream into ``path`` (a ``Staging.file`` path: atomicity is the transaction's job); ``name`` is
    the destination, for messages."""
    writer = pq.ParquetWriter(path, schema, compression="zstd")
    try:
        yield ParquetSink(writer, schema, Path(name or path))
    finally:
        writer.close()


def trace_row(**fields: Any) -> dict[str, Any]:
    """One row of the TRACES schema; a missing field is an error here, not a null in the dataset."""
    missing = [n for n in TRACES.names if n not in fields]
    extra = [n for n in fields if n not in TRACES.names]
    if missing or extra:
        raise ValueError(f"trace row: missing {missing}, unknown {extra}")
    return fields


def count_rows(path: str | Path) -> int:
    return pq.ParquetFile(path).metadata.num_rows


# ---------------------------------------------------------------------------------------------- gold
def gold_error(answer: str, answer_type: str) -> str | None:
    """Why a canonical answer cannot be graded (``answers`` raises ValueError naming it), or None."""
    from compress_distill.answers import is_correct

    try:
        is_correct(None, answer, answer_type)
    except ValueError as err:
        return str(err)
    return None


# --------------------------------------------------------------------------------------------- engines
def request(
    prompt: str, sampling: SamplingConfig, *, seed: int | None, json_schema: dict[str, Any] | None = None
):
    from compress_distill.llm import ChatRequest

    return ChatRequest(
        messages=[{"role": "user", "content": prompt}],
        temperature=sampling.temperature,
        top_p=sampling.top_p,
        max_tokens=sampling.max_tokens,
        seed=seed,
        json_schema=json_schema,
    )


@contextlib.contextmanager
def engine(cfg: BackendConfig, backend: Any = None, cache_dir: str | Path | None = None) -> Iterator[Any]:
    """Yield ``backend`` if given (tests, callers that share one), else a new one closed on exit."""
    if backend is not None:
        yield backend
        return
    from compress_distill.llm import make_backend

    made = make_backend(cfg, cache_dir=cache_dir) if cache_dir is not None else make_backend(cfg)
    try:
        yield made
    finally:
        made.close()


def engine_stats(backend: Any) -> dict[str, Any]:
    """The backend's usage counters (tokens, wall-clock, GPU-hours) as flat numbers for the metrics file."""
    stats = getattr(backend, "stats", None)
    if stats is None:
        return {}
    if callable(stats):
        stats = stats()
    # llm.accounting.BackendStats: llm_requests, llm_cached, llm_gpu_hours ...
    if hasattr(stats, "as_metrics"):
        return dict(stats.as_metrics())
    if dataclasses.is_dataclass(stats) and not isinstance(stats, type):
        stats = dataclasses.asdict(stats)
    elif hasattr(stats, "model_dump"):
        stats = stats.model_dump()
    elif not isinstance(stats, Mapping):
        stats = vars(stats)
    return {str(k): v for k, v in stats.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


# --------------------------------------------------------------------------------------------- stats
class GroupMeans:
    """Running sums per group (dataset) for the per-dataset metrics tables; ``overall`` spans all groups."""

    def __init__(self) -> None:
        self._n: dict[str, int] = defaultdict(int)
        self._sums: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))

    def add(self, group: str, **values: float | bool) -> None:
        for g in (group, "overall"):
            self._n[g] += 1
            sums = self._sums[g]
            for k, v in values.items():
                sums[k] += float(v)

    def add_sums(self, group: str, n: int, sums: Mapping[str, float]) -> None:
        """Add pre-aggregated sums (a vectorised batch) for ``n`` rows of ``group``."""
        for g in (group, "overall"):
            self._n[g] += n
            for k, v in sums.items():
                self._sums[g][k] += float(v)

    def n(self, group: str = "overall") -> int:
        return self._n.get(group, 0)

    def table(
        self, prefix: str = "mean_", scale: Mapping[str, float] | None = None
    ) -> dict[str, dict[str, float]]:
        """``{group: {"n": N, "mean_<k>": sum/N}}``; ``scale`` multiplies (e.g. 100 for percentages)."""
        scale = scale or {}
        out: dict[str, dict[str, float]] = {}
        for g in sorted(self._n, key=lambda x: (x == "overall", x)):
            n = self._n[g]
            row: dict[str, float] = {"n": n}
            for k, s in self._sums[g].items():
                name = k if k.startswith(("pct_", "mean_")) else f"{prefix}{k}"
                row[name] = (s / n) * scale.get(k, 1.0) if n else 0.0
            out[g] = row
        return out


def split_overall(table: dict[str, dict[str, Any]]) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """``GroupMeans.table()`` -> (per-dataset blocks, overall block); overall is zeros when empty."""
    overall = table.pop("overall", {"n": 0})
    return table, overall
