"""The reject ledger of every stage, and the text hygiene it relies on.

``Ledger`` counts a stage's rows (``rows_in = rows_out + sum(rejects)``, checked by ``metrics``) and keeps the
rejected rows themselves (id, reason, clipped detail) for ``<out>.rejects.parquet``; it also applies the one
``duplicate_id`` rule at every stage boundary.  Text read from Parquet written by another tool may not be valid
UTF-8: ``text_column`` returns such values as ``None`` so a stage rejects the row by id instead of crashing.
This module imports no engine or model code, so any stage (report, pull) can keep a ledger cheaply.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from compress_distill.metrics import RowCounter
from compress_distill.schema import REJECTS, first_per_id, rejects_path, to_table
from compress_distill.staging import Staging

# Rejected rows keep this much of the offending text (chars): enough to see what went wrong, small enough
# that a corpus of runaway 1 MB generations does not turn the rejects file into a second copy of it.
DETAIL_CHARS = 2_000


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
