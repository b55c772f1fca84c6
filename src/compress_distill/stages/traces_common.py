"""Helpers shared by the trace stages (generate, compress, truncate, answer_only, judge, build).

What lives here is what every trace stage needs in the same form: the reject ledger behind each
``<out>.rejects.parquet`` (with the ``duplicate_id`` rule), a streaming Parquet sink into a staged path
(``staging.Staging`` renames it into place with the stage's other outputs), UTF-8-safe reads of text
columns, token counting with a model's own tokenizer, per-dataset means for the metrics tables, and
the backend lifecycle.  Heavy imports (transformers, the engine layer) stay inside functions.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from compress_distill.config import BackendConfig, ConfigError, SamplingConfig
from compress_distill.errors import UserError
from compress_distill.metrics import RowCounter
from compress_distill.schema import (
    REJECTS,
    TRACES,
    first_per_id,
    rejects_path,
    to_table,
    validate,
)
from compress_distill.staging import Staging

# Rejected rows keep this much of the offending text (chars): enough to see what went wrong, small enough
# that a corpus of runaway 1 MB generations does not turn the rejects file into a second copy of it.
DETAIL_CHARS = 2_000

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


# --------------------------------------------------------------------------------------------- rejects
class Ledger(RowCounter):
    """Row accounting plus the rejected rows themselves (id, reason, clipped detail)."""

    def __init__(self, stage: str) -> None:
        super().__init__()
        self.stage = stage
        self.rows: list[dict[str, str]] = []

    def reject(self, reason: str, n: int = 1, *, id: str = "", detail: str = "") -> None:
        super().reject(reason, n)
        self.rows.append({"id": id, "stage": self.stage, "reason": reason, "detail": clip(detail)})

    def drop_duplicates(self, table: pa.Table, seen: set[str], what: str = "input") -> pa.Table:
        """``table`` without rows whose ``id`` was already in ``seen`` (or earlier in ``table``); each
        dropped row is a ``duplicate_id`` reject.  The rows must already be counted as seen."""
        ids = table.column("id").to_pylist()
        keep = first_per_id(ids, seen)
        if all(keep):
            return table
        for rid, first in zip(ids, keep, strict=True):
            if not first:
                self.reject(
                    "duplicate_id",
                    id=rid or "",
                    detail=f"{what} id repeats an earlier row; the first one is kept",
                )
        return table.filter(pa.array(keep, pa.bool_()))

    def write_rejects(self, staging: Staging, out: str | Path) -> Path:
        """Stage ``<out>.rejects.parquet``: always written (possibly empty) so it is a stable DVC output."""
        path = staging.file(rejects_path(out))
        pq.write_table(to_table(self.rows, REJECTS), path, compression="zstd")
        return path


def clip(text: str | None, limit: int = DETAIL_CHARS) -> str:
    if not text:
        return ""
    text = safe_text(text)
    return text if len(text) <= limit else text[:limit] + f"... [{len(text) - limit} chars clipped]"


# --------------------------------------------------------------------------------------------- text
def is_utf8(text: str) -> bool:
    """False for strings that cannot be written as UTF-8 (lone surrogates from a broken decoder)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def safe_text(text: str) -> str:
    """``text`` with unencodable code points replaced, for storing what a bad row looked like."""
    return text if is_utf8(text) else text.encode("utf-8", "replace").decode("utf-8")


def text_column(table: pa.Table | pa.RecordBatch, name: str) -> list[str | None]:
    """A string column as Python strs; values that are not valid UTF-8 come back as ``None``.

    Arrow's ``string`` type does not guarantee valid UTF-8 in a file written by another tool; the fast
    path converts the whole column at once, and only a column that fails validation is decoded value by
    value so the bad rows can be rejected by id instead of crashing the stage.
    """
    col = table.column(name)
    try:
        col.validate(full=True)
    except pa.ArrowInvalid:
        raw = col.cast(pa.binary()) if isinstance(col, pa.ChunkedArray) else col.view(pa.binary())
        out: list[str | None] = []
        for value in raw.to_pylist():
            if value is None:
                out.append("")
                continue
            try:
                out.append(value.decode("utf-8"))
            except UnicodeDecodeError:
                out.append(None)
        return out
    return [("" if v is None else v) for v in col.to_pylist()]


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


# --------------------------------------------------------------------------------------------- tokens
@lru_cache(maxsize=8)
def load_tokenizer(model: str) -> Any:
    """The Rust tokenizer (``tokenizers.Tokenizer``) of a params model id, for batch counting and cutting."""
    from compress_distill.llm.tokens import load_tokenizer as load_hf_tokenizer

    backend = getattr(load_hf_tokenizer(model), "backend_tokenizer", None)
    if backend is None:
        raise RuntimeError(
            f"model {model!r} has no fast tokenizer (tokenizer.json); the trace stages count and cut tokens "
            "with the Rust tokenizer -- convert the tokenizer or pick a model that ships tokenizer.json"
        )
    return backend


def count_tokens(model: str, texts: Sequence[str]) -> list[int]:
    """Tokens per text in ``model``'s tokenizer, without special tokens (BOS/EOS are not reasoning).

    ``model`` is a tokenizer id: pass an engine's ``BackendConfig.tokenizer_id`` (its ``tokenizer`` key, else
    its ``model``), never a served model name.
    """
    if not texts:
        return []
    tok = load_tokenizer(model)
    return [len(e) for e in tok.encode_batch_fast(list(texts), add_special_tokens=False)]


def preflight_tokenizer(cfg: BackendConfig, key: str) -> Any:
    """Load the tokenizer a stage will count ``cfg``'s tokens with, at stage start: before any request.

    Params load already refuses a teacher/compressor whose tokenizer id is a bare served name; this catches
    an id that looks loadable and is not (a hosted API's ``org/model`` that is no Hub repo, a missing
    directory), which would otherwise fail in ``count_tokens`` after every request had been paid for.
    ``key`` is the params path of the engine (``compressors.concise``), named in the fix-it.
    """
    try:
        return load_tokenizer(cfg.tokenizer_id)
    except (OSError, ValueError, RuntimeError) as err:  # what from_pretrained raises for a missing tokenizer
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(
            f"{key}: cannot load the tokenizer {cfg.tokenizer_id!r} this stage counts tokens with "
            f"({reason}); "
            f"set {key}.tokenizer to a Hub id or local directory that holds the model's tokenizer "
            "(tokenizer.json), or make that one available"
        ) from None


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


def split_overall(table: dict[str, dict[str, float]]) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """``GroupMeans.table()`` -> (per-dataset blocks, overall block); overall is zeros when empty."""
    overall = table.pop("overall", {"n": 0})
    return table, overall
