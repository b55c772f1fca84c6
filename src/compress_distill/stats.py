"""Per-dataset running means for the trace stages' metrics tables (paper Tables 4, 5 and 10 per dataset).

A stage streams its rows once; ``GroupMeans`` keeps sums per dataset and for ``overall`` so the metrics file
gets ``{dataset: {"n": N, "mean_<k>": ...}}`` without holding the rows.  No engine or model code here.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from typing import Any


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
