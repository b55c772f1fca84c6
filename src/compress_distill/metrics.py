"""Stage metrics files: small flat JSON in git, written atomically, with row accounting.

Every stage reports ``rows_in``, ``rows_out`` and ``rejects`` (per reason); ``check_accounting`` enforces
``rows_in == rows_out + sum(rejects)`` before anything is written, so a lost row is a crash, not a number.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from compress_distill.staging import Staging, json_safe

_clean = json_safe  # the name evaluation.html imports: NaN/inf -> null, as in the metrics files


class AccountingError(RuntimeError):
    pass


def check_accounting(rows_in: int, rows_out: int, rejects: Mapping[str, int]) -> None:
    total = rows_out + sum(rejects.values())
    if rows_in != total:
        raise AccountingError(
            f"row accounting broken: rows_in={rows_in} but rows_out={rows_out} + rejects={dict(rejects)} = {total}"
        )


def check_metrics(metrics: Mapping[str, Any]) -> None:
    """Row accounting of a metrics dict that reports rows (``rows_in``/``rows_out``/``rejects``)."""
    if {"rows_in", "rows_out", "rejects"} <= set(metrics):
        check_accounting(int(metrics["rows_in"]), int(metrics["rows_out"]), metrics["rejects"])


def write_metrics(path: str | Path, metrics: Mapping[str, Any]) -> Path:
    """Write ``metrics`` alone, atomically (a stage with outputs uses ``Staging.metrics`` instead, so the
    metrics land after its outputs); NaN/inf become null; verifies row accounting when present."""
    with Staging() as st:
        st.metrics(path, metrics)
    return Path(path)


def read_metrics(path: str | Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text(encoding="utf-8"))


class RowCounter:
    """Tally of a stage's rows: ``rows_in`` seen, ``rows_out`` kept, rejects by reason."""

    def __init__(self) -> None:
        self.rows_in = 0
        self.rows_out = 0
        self.rejects: Counter[str] = Counter()

    def seen(self, n: int = 1) -> None:
        self.rows_in += n

    def kept(self, n: int = 1) -> None:
        self.rows_out += n

    def reject(self, reason: str, n: int = 1) -> None:
        self.rejects[reason] += n

    def as_dict(self) -> dict[str, Any]:
        check_accounting(self.rows_in, self.rows_out, self.rejects)
        return {
            "rows_in": self.rows_in,
            "rows_out": self.rows_out,
            "rejects": dict(sorted(self.rejects.items())),
        }
