"""The explicit Arrow schema of every table (docs/architecture.md §4) and atomic Parquet I/O.

Writes go through ``staging`` (staged outside DVC-tracked folders, renamed into place), so a stage killed
mid-write leaves either the previous file or the new one, never a torn file that a later stage would read.
Reads check the schema strictly and name the missing or mistyped column instead of casting it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field

from compress_distill.errors import UserError
from compress_distill.names import FailureMode, Verdict
from compress_distill.staging import atomic_path  # the one atomic-write helper (re-exported)

# --------------------------------------------------------------------------------------------- tables
QUESTIONS = pa.schema(
    [
        ("id", pa.string()),  # dataset/split/index, stable across runs
        ("dataset", pa.string()),
        ("domain", pa.string()),
        ("group", pa.string()),  # eval group: Math, Science, Medicine, Commonsense, OOD-Reasoning, ...
        ("split", pa.string()),  # train | eval
        ("question", pa.string()),  # rendered text incl. lettered choices
        ("choices", pa.list_(pa.string())),
        ("answer", pa.string()),  # canonical
        ("answer_type", pa.string()),  # numeric | letter | boolean | latex | text
    ]
)

ATTEMPTS = pa.schema(
    [
        ("question_id", pa.string()),
        ("teacher", pa.string()),
        ("round", pa.int32()),
        ("attempt", pa.int32()),
        ("reasoning", pa.string()),
        ("response", pa.string()),
        ("extracted", pa.string()),
        ("extraction_rule", pa.string()),
        ("correct", pa.bool_()),
        ("prompt_tokens", pa.int64()),
        ("completion_tokens", pa.int64()),
        ("finish_reason", pa.string()),
        ("request_hash", pa.string()),
    ]
)

# raw / compressed / truncated / answer-only: one row per accepted trace
TRACES = pa.schema(
    [
        ("id", pa.string()),
        ("question_id", pa.string()),
        ("dataset", pa.string()),
        ("domain", pa.string()),
        ("question", pa.string()),
        ("answer", pa.string()),
        ("answer_type", pa.string()),
        ("reasoning", pa.string()),
        ("response", pa.string()),
        ("source", pa.string()),  # raw | compressed-<C> | truncated | answer-only
        ("reasoning_chars", pa.int64()),
        ("reasoning_tokens", pa.int64()),
        ("compression_ratio", pa.float64()),  # reasoning chars / raw reasoning chars
        ("teacher_model", pa.string()),
        ("compressor_model", pa.string()),  # empty for sources that are not model-compressed
        ("prompt_hash", pa.string()),  # sha256 prefix of the prompt file(s) that produced the row
        ("answer_preserved", pa.bool_()),  # compressed reasoning alone still reaches the answer (null: n/a)
    ]
)

JUDGEMENTS = pa.schema(
    [
        ("id", pa.string()),
        ("compressor", pa.string()),
        ("faithfulness", pa.int8()),
        ("coverage", pa.int8()),
        ("clarity", pa.int8()),
        ("verdict", pa.string()),  # faithful | partially_faithful | unfaithful
        ("answer_alignment", pa.bool_()),
        ("failure_modes", pa.list_(pa.string())),
        ("rationale", pa.string()),
        ("judge_model", pa.string()),
        ("parse_status", pa.string()),  # one of stages.judge.PARSE_STATUSES
    ]
)

# verify@T: one row per trace it decided on -- which compressor's output became source compressed-verified,
# or why none did (stages.verify.choose)
VERIFY_DECISIONS = pa.schema(
    [
        ("id", pa.string()),
        ("dataset", pa.string()),
        ("winner", pa.string()),  # a compressor id, "raw" (fallback) or "dropped" (fallback: drop)
        ("reasons", pa.string()),  # why each shorter candidate lost: "terse: answer_not_reached (got 5)"
    ]
)

PREDICTIONS = pa.schema(
    [
        ("question_id", pa.string()),
        ("run", pa.string()),
        ("group", pa.string()),
        ("dataset", pa.string()),
        ("completion", pa.string()),
        ("reasoning", pa.string()),
        ("extracted", pa.string()),
        ("correct", pa.bool_()),
        ("completion_tokens", pa.int64()),
        ("reasoning_chars", pa.int64()),
        ("reasoning_tokens", pa.int64()),
        ("truncated", pa.bool_()),  # finish_reason == "length"
    ]
)

# rejected rows of any stage: what it was, why, and the offending text (clipped)
REJECTS = pa.schema(
    [
        ("id", pa.string()),
        ("stage", pa.string()),
        ("reason", pa.string()),
        ("detail", pa.string()),
    ]
)

TABLES: dict[str, pa.Schema] = {
    "questions": QUESTIONS,
    "attempts": ATTEMPTS,
    "traces": TRACES,
    "judgements": JUDGEMENTS,
    "verify_decisions": VERIFY_DECISIONS,
    "predictions": PREDICTIONS,
    "rejects": REJECTS,
}


class SchemaError(UserError, ValueError):
    """A table on disk lacks a column a stage needs, or holds one of another type (never cast)."""


# --------------------------------------------------------------------------------------------- helpers
def to_table(rows: Sequence[Mapping[str, Any]] | Mapping[str, Sequence[Any]], schema: pa.Schema) -> pa.Table:
    """Build a table with exactly ``schema``'s columns (extra keys are an error, missing ones too)."""
    if isinstance(rows, Mapping):
        cols = dict(rows)
    else:
        cols = (
            {name: [r[name] for r in rows] for name in schema.names}
            if rows
            else {n: [] for n in schema.names}
        )
        if rows:
            extra = set(rows[0]) - set(schema.names)
            if extra:
                raise SchemaError(f"rows carry columns not in the schema: {sorted(extra)}")
    missing = [n for n in schema.names if n not in cols]
    if missing:
        raise SchemaError(f"missing column(s) {missing}; schema has {schema.names}")
    try:
        return pa.table(
            {n: pa.array(cols[n], type=schema.field(n).type) for n in schema.names}, schema=schema
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
        raise SchemaError(f"cannot build table: {err}") from err


# Physical encodings of one logical type: a column stored with either is the same column (polars and
# pandas write large_string/large_list and dictionary-encoded categoricals; an integer width is storage, and
# the cast below is checked for overflow).  Anything else -- an int `question`, a string `faithfulness`, a
# bool score -- is an error.
def _kind(t: pa.DataType) -> str:
    if pa.types.is_dictionary(t):
        return _kind(t.value_type)
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return "string"
    if pa.types.is_integer(t):
        return "integer"
    if pa.types.is_floating(t):
        return "float"
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return f"list<{_kind(t.value_type)}>"
    return str(t)


FIX_HINT = (
    "Re-run the stage that writes it (dvc repro); a file from elsewhere needs that column converted to the "
    "expected type first (the pipeline never casts values)."
)


def validate(table: pa.Table, schema: pa.Schema, source: str = "table") -> pa.Table:
    """Check names and types strictly; returns the table in ``schema``'s column order, extras dropped.

    A column of the wrong type is a ``SchemaError`` naming the file, the column, both types and the fix --
    never a cast that would turn ids 0, 1 into "0", "1" or a bool into a score.  Only a different physical
    encoding of the same type (``_kind``) and an all-null column are converted.
    """
    missing = [n for n in schema.names if n not in table.column_names]
    if missing:
        raise SchemaError(f"{source}: missing column(s) {missing}; found {table.column_names}. {FIX_HINT}")
    for field in schema:
        got = table.schema.field(field.name).type
        if got == field.type:
            continue
        if pa.types.is_null(got):
            column: Any = pa.nulls(len(table), field.type)
        elif _kind(got) == _kind(field.type):
            try:
                column = table[field.name].cast(field.type)  # safe cast: an overflow is an error
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
                raise SchemaError(
                    f"{source}: column {field.name!r} has type {got}, expected {field.type}, and its values "
                    f"do not fit ({err}). {FIX_HINT}"
                ) from err
        else:
            raise SchemaError(
                f"{source}: column {field.name!r} has type {got}, expected {field.type}. {FIX_HINT}"
            )
        table = table.set_column(table.column_names.index(field.name), field.name, column)
    return table.select(schema.names)


def umask_mode(path: str | Path, *, executable: bool = False) -> Path:
    """Give a temp file or folder the mode a plain ``open``/``mkdir`` would (0666/0777 less the umask):
    ``tempfile.mkstemp``/``mkdtemp`` create 0600/0700, which the rename would pass on to the outputs, so
    outputs and reports would be unreadable to the rest of a shared group.  ``executable``: a script, 0777
    less the umask (not a fixed 0755, which drops the group's write bit under umask 002)."""
    path = Path(path)
    umask = os.umask(0)
    os.umask(umask)  # reading the umask needs setting it; restored at once
    os.chmod(path, (0o777 if path.is_dir() or executable else 0o666) & ~umask)
    return path


def first_per_id(ids: Sequence[str | None], seen: set[str]) -> list[bool]:
    """The id rule of every stage boundary: True for the first row of each id, False for a repeat.

    ``seen`` carries the ids met so far, so a stream of batches shares one set.  A repeated id is never
    passed on (two rows per id would be cut with one budget, judged twice and published twice); callers
    reject it as ``duplicate_id``.
    """
    keep = []
    for rid in ids:
        key = rid or ""
        keep.append(key not in seen)
        seen.add(key)
    return keep


def rejects_path(out: str | Path) -> Path:
    """The one naming rule of reject files: ``data/traces/T/raw.parquet`` -> ``data/traces/T/raw.rejects.parquet``;
    a folder output ``data/hub/T`` -> ``data/hub/T.rejects.parquet`` (beside it: the folder holds only the
    product).  Every stage writes it, empty when nothing is rejected, and dvc.yaml declares it."""
    out = Path(out)
    return out.with_name(f"{out.name.removesuffix('.parquet')}.rejects.parquet")


def write_table(table: pa.Table, path: str | Path, schema: pa.Schema | None = None) -> Path:
    """Atomically write ``table`` (validated against ``schema`` when given) as zstd Parquet."""
    if schema is not None:
        table = validate(table, schema, str(path))
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    return Path(path)


def write_rows(rows: Sequence[Mapping[str, Any]], path: str | Path, schema: pa.Schema) -> Path:
    return write_table(to_table(rows, schema), path)


def write_batches(batches: Iterable[pa.RecordBatch | pa.Table], path: str | Path, schema: pa.Schema) -> int:
    """Stream batches into one Parquet file atomically; returns the row count.  Memory: one batch."""
    n = 0
    with atomic_path(path) as tmp, pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
        for batch in batches:
            table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
            table = validate(table, schema, str(path))
            writer.write_table(table)
            n += table.num_rows
    return n


def read_table(
    path: str | Path, schema: pa.Schema | None = None, columns: list[str] | None = None
) -> pa.Table:
    """Read a Parquet file, validating it against ``schema`` (named columns only when ``columns``)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; run the stage that produces it (dvc repro)")
    table = pq.read_table(path, columns=columns)
    if schema is not None:
        sub = pa.schema([schema.field(c) for c in columns]) if columns else schema
        table = validate(table, sub, str(path))
    return table


def iter_batches(
    path: str | Path,
    schema: pa.Schema | None = None,
    batch_size: int = 8192,
    columns: list[str] | None = None,
) -> Iterator[pa.Table]:
    """Stream a Parquet file in batches (validated) so big corpora never sit in memory as Python objects."""
    pf = pq.ParquetFile(path)
    if schema is not None:
        sub = pa.schema([schema.field(c) for c in columns]) if columns else schema
        # validate names/types once on the file schema, cheaply
        validate(pf.schema_arrow.empty_table(), sub, str(path))
    for batch in pf.iter_batches(batch_size=batch_size, columns=columns):
        table = pa.Table.from_batches([batch])
        yield validate(table, sub, str(path)) if schema is not None else table


def read_rows(path: str | Path, schema: pa.Schema | None = None) -> list[dict[str, Any]]:
    return read_table(path, schema).to_pylist()


# --------------------------------------------------------------------------------------------- judge output
class JudgeVerdict(BaseModel):
    """The judge's structured verdict (paper Appendix G).

    Strict: a JSON ``true`` is not a score, ``"yes"`` not a boolean, ``"5"`` or ``5.0`` not an integer -- a
    judge that answers off-schema gets ``schema_error``, never a silently coerced value.
    """

    model_config = ConfigDict(extra="forbid", strict=True)

    faithfulness: int = Field(ge=1, le=5)
    coverage: int = Field(ge=1, le=5)
    clarity: int = Field(ge=1, le=5)
    verdict: Verdict
    answer_alignment: bool
    failure_modes: list[FailureMode] = Field(max_length=8)
    rationale: str = Field(max_length=2000)


def judge_json_schema() -> dict[str, Any]:
    """The verdict's JSON schema; the engine decodes under ``stages.judge.engine_schema``, built on it (verdict
    first, only the faithfulness scores that fit the verdict, the rationale capped)."""
    return JudgeVerdict.model_json_schema()


# --------------------------------------------------------------------------------------------- sinks
# Rows per Parquet row group of the trace tables: ~8k traces of ~7 kB reasoning (paper Table 4) is
# ~60 MB uncompressed, the scale at which readers stream efficiently without holding whole files.
ROW_GROUP_ROWS = 8_192


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
