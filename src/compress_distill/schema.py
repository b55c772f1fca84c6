"""The explicit Arrow schema of every table (docs/architecture.md §4) and atomic Parquet I/O.

Writes go to a temporary file in the destination directory and are renamed into place, so a stage killed
mid-write leaves either the previous file or the new one, never a torn file that a later stage would read.
Reads check the schema and name the missing or mistyped column instead of failing somewhere downstream.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from compress_distill.errors import UserError

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
        ("parse_status", pa.string()),  # ok | truncated | invalid_json | schema_error
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
    "predictions": PREDICTIONS,
    "rejects": REJECTS,
}

FAILURE_MODES = (
    "contradiction",
    "unsupported_claim",
    "omitted_key_step",
    "answer_mismatch",
    "overcompression",
    "incoherent",
    "empty_original",
    "empty_compressed",
)
VERDICTS = ("faithful", "partially_faithful", "unfaithful")
ANSWER_TYPES = ("numeric", "letter", "boolean", "latex", "text")


class SchemaError(UserError, ValueError):
    """A table on disk does not have the columns a stage needs."""


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


def validate(table: pa.Table, schema: pa.Schema, source: str = "table") -> pa.Table:
    """Check names and types; returns the table cast to ``schema`` (column order fixed, extras dropped)."""
    missing = [n for n in schema.names if n not in table.column_names]
    if missing:
        raise SchemaError(
            f"{source}: missing column(s) {missing}; found {table.column_names}. "
            "Re-run the stage that writes it (dvc repro) or check the file's origin."
        )
    for field in schema:
        got = table.schema.field(field.name).type
        if got != field.type and not (pa.types.is_null(got)):
            try:
                table = table.set_column(
                    table.column_names.index(field.name), field.name, table[field.name].cast(field.type)
                )
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
                raise SchemaError(
                    f"{source}: column {field.name!r} has type {got}, expected {field.type}; re-run the stage "
                    "that writes it (dvc repro) or fix the tool that made the file"
                ) from err
        elif pa.types.is_null(got):
            table = table.set_column(
                table.column_names.index(field.name), field.name, pa.nulls(len(table), field.type)
            )
    return table.select(schema.names)


def umask_mode(path: str | Path) -> Path:
    """Give a temp file or folder the mode a plain ``open``/``mkdir`` would (0666/0777 less the umask):
    ``tempfile.mkstemp``/``mkdtemp`` create 0600/0700, which the rename would pass on to the outputs, so
    outputs and reports would be unreadable to the rest of a shared group."""
    path = Path(path)
    umask = os.umask(0)
    os.umask(umask)  # reading the umask needs setting it; restored at once
    os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~umask)
    return path


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path beside ``path``; rename it over ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = umask_mode(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


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
    with atomic_path(path) as tmp:
        with pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
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
def _judge_model():  # type: ignore[no-untyped-def]
    """The judge's structured verdict (paper Appendix G) as a pydantic model; built lazily."""
    from typing import Literal

    from pydantic import BaseModel, ConfigDict, Field

    class JudgeVerdict(BaseModel):
        model_config = ConfigDict(extra="forbid")

        faithfulness: int = Field(ge=1, le=5)
        coverage: int = Field(ge=1, le=5)
        clarity: int = Field(ge=1, le=5)
        verdict: Literal["faithful", "partially_faithful", "unfaithful"]
        answer_alignment: bool
        failure_modes: list[
            Literal[
                "contradiction",
                "unsupported_claim",
                "omitted_key_step",
                "answer_mismatch",
                "overcompression",
                "incoherent",
                "empty_original",
                "empty_compressed",
            ]
        ] = Field(max_length=8)
        rationale: str = Field(max_length=2000)

    return JudgeVerdict


JudgeVerdict = _judge_model()


def judge_json_schema() -> dict[str, Any]:
    """JSON schema handed to the engine for constrained decoding of the judge's reply."""
    return JudgeVerdict.model_json_schema()
