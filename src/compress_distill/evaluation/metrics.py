"""Pure scoring and efficiency formulas (docs/architecture.md §6, §7): no I/O, no models, numpy only.

Conventions, chosen so that every run produces a well-defined metrics file and ``dvc metrics diff`` never
sees NaN (``write_metrics`` turns non-finite floats into null, and DVC drops null keys from its tables):

- ``accuracy`` = share of records graded correct; ``stderr`` = binomial standard error sqrt(p (1 - p) / n);
  ``ci95`` = 1.96 x stderr, the half-width of the normal 95% interval: the paper's Table 7 prints this as
  its "±" (Math 0.596 ± 0.023 at n = 1,753).  An empty block (a group or dataset with no records) has
  ``n = 0`` and ``accuracy = stderr = ci95 = None``.
- ``mean_completion_tokens`` averages over ALL records, truncated ones included (they cost the cap).
- ``mean_completion_tokens_excl_truncated`` averages over records that stopped on their own; ``None`` when
  every record was truncated (there is no such record to average).
- ``truncation_rate`` = share of records with ``finish_reason == "length"`` (1.0 for an all-truncated run).
- ``median_reasoning_chars`` / ``median_reasoning_tokens`` over all records (a run that emits no think block
  has median 0).
- ``acc_per_1k_tokens = accuracy / mean_completion_tokens * 1000`` (docs/architecture.md §7; reproduces the
  paper's Table 9 from Tables 3 and 9: 0.862 at 1,827 tokens gives 0.4717).  ``None`` when no tokens were
  emitted.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from compress_distill.names import EVAL_GROUPS

# z of a two-sided 95% normal interval: the paper's Table 7 "±" is Z95 x binomial standard error
Z95 = 1.96

# Columns of the predictions table the formulas read.
EFFICIENCY_COLUMNS = ("correct", "completion_tokens", "truncated", "reasoning_chars", "reasoning_tokens")


def _floats(values: Iterable[Any]) -> np.ndarray:
    return np.asarray([float(v) for v in values], dtype=np.float64)


def median(values: Iterable[Any]) -> float | None:
    arr = _floats(values)
    return float(np.median(arr)) if arr.size else None


def mean(values: Iterable[Any]) -> float | None:
    arr = _floats(values)
    return float(arr.mean()) if arr.size else None


def ci95(stderr: float | None) -> float | None:
    """Half-width of the 95% normal interval (the paper's Table 7 "±") from a standard error."""
    return None if stderr is None else Z95 * stderr


def binomial_stderr(accuracy: float, n: int) -> float:
    return math.sqrt(accuracy * (1.0 - accuracy) / n)


def accuracy_block(correct: Sequence[bool]) -> dict[str, float | int | None]:
    """``{"accuracy", "n", "stderr", "ci95"}`` of one slice of records (binomial standard error)."""
    n = len(correct)
    if n == 0:
        return {"accuracy": None, "n": 0, "stderr": None, "ci95": None}
    p = sum(bool(c) for c in correct) / n
    se = binomial_stderr(p, n)
    return {"accuracy": p, "n": n, "stderr": se, "ci95": ci95(se)}


def acc_per_1k_tokens(accuracy: float | None, mean_completion_tokens: float | None) -> float | None:
    """Accuracy per 1,000 generated tokens; ``None`` when undefined (no records or no tokens)."""
    if accuracy is None or not mean_completion_tokens:
        return None
    return accuracy / mean_completion_tokens * 1000.0


def efficiency_block(
    correct: Sequence[bool],
    completion_tokens: Sequence[int],
    truncated: Sequence[bool],
    reasoning_chars: Sequence[int],
    reasoning_tokens: Sequence[int],
) -> dict[str, float | int | None]:
    """The ``overall`` block: accuracy block plus the inference-efficiency statistics (Table 9)."""
    n = len(correct)
    if not (len(completion_tokens) == len(truncated) == len(reasoning_chars) == len(reasoning_tokens) == n):
        raise ValueError("efficiency_block: all columns must have one value per record")
    block = accuracy_block(correct)
    kept = [t for t, cut in zip(completion_tokens, truncated, strict=True) if not cut]
    mean_tokens = mean(completion_tokens)
    stopped = accuracy_block([c for c, cut in zip(correct, truncated, strict=True) if not cut])
    block.update(
        # accuracy on the records that stopped on their own (not cut at the decoding cap), next to all records
        accuracy_stopped=stopped["accuracy"],
        n_stopped=stopped["n"],
        mean_completion_tokens=mean_tokens,
        mean_completion_tokens_excl_truncated=mean(kept),
        truncation_rate=(sum(bool(t) for t in truncated) / n) if n else None,
        median_reasoning_chars=median(reasoning_chars),
        median_reasoning_tokens=median(reasoning_tokens),
        acc_per_1k_tokens=acc_per_1k_tokens(block["accuracy"], mean_tokens),
    )
    return block


def _column(rows: Mapping[str, Sequence[Any]], name: str) -> list[Any]:
    if name not in rows:
        raise KeyError(f"predictions lack column {name!r}; columns: {sorted(rows)}")
    return list(rows[name])


def eval_metrics(
    rows: Mapping[str, Sequence[Any]],
    groups: Iterable[str] | None = None,
    datasets: Iterable[str] | None = None,
) -> dict[str, Any]:
    """``{"overall", "groups", "datasets"}`` (docs/architecture.md §6) from predictions given as columns.

    ``groups`` / ``datasets`` name blocks that must appear even when they have no records (an empty group
    gets ``n = 0`` and null accuracy); blocks for every value present in the rows are always added.
    """
    correct = [bool(c) for c in _column(rows, "correct")]
    overall = efficiency_block(
        correct,
        [int(t or 0) for t in _column(rows, "completion_tokens")],
        [bool(t) for t in _column(rows, "truncated")],
        [int(c or 0) for c in _column(rows, "reasoning_chars")],
        [int(t or 0) for t in _column(rows, "reasoning_tokens")],
    )

    def blocks(key: str, wanted: Iterable[str] | None) -> dict[str, Any]:
        labels = _column(rows, key)
        by: dict[str, list[bool]] = {str(w): [] for w in (wanted or [])}
        for label, ok in zip(labels, correct, strict=True):
            by.setdefault(str(label), []).append(ok)
        return {name: accuracy_block(by[name]) for name in order_groups(by)}

    return {"overall": overall, "groups": blocks("group", groups), "datasets": blocks("dataset", datasets)}


def order_groups(names: Iterable[str]) -> list[str]:
    """The paper's group order first (``names.EVAL_GROUPS``), then the rest alphabetically."""
    names = list(dict.fromkeys(names))
    known = [g for g in EVAL_GROUPS if g in names]
    return known + sorted(n for n in names if n not in EVAL_GROUPS)


# --------------------------------------------------------------------------------------------- vs raw
def retention(accuracy: float | None, raw_accuracy: float | None) -> float | None:
    """Share of the raw run's accuracy kept (0.830 / 0.866 = 0.958)."""
    if accuracy is None or not raw_accuracy:
        return None
    return accuracy / raw_accuracy


def efficiency_gain(acc_per_1k: float | None, raw_acc_per_1k: float | None) -> float | None:
    """How many times more accuracy per generated token than the raw run."""
    if acc_per_1k is None or not raw_acc_per_1k:
        return None
    return acc_per_1k / raw_acc_per_1k


@dataclass(frozen=True)
class PairedBootstrap:
    """Source-minus-raw accuracy on the same questions, with a percentile confidence interval."""

    n: int  # questions answered by both runs
    delta: float | None  # accuracy(source) - accuracy(raw) on those questions
    ci_low: float | None
    ci_high: float | None
    retention: float | None  # accuracy(source) / accuracy(raw) on those questions
    retention_ci_low: float | None
    retention_ci_high: float | None
    p_not_worse: float | None  # share of resamples where the source is at least as accurate as raw
    samples: int

    def as_dict(self) -> dict[str, float | int | None]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def paired_bootstrap(
    source_correct: Sequence[bool],
    raw_correct: Sequence[bool],
    samples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> PairedBootstrap:
    """Paired bootstrap of the accuracy difference between two runs graded on the same questions.

    Resampling questions with replacement only changes how many questions fall in each of the four
    (source correct?, raw correct?) cells, so drawing the four cell counts from one multinomial per resample
    is the exact same distribution as resampling indices -- at O(samples) instead of O(samples x n) work,
    which keeps the report fast at the paper's 15k-question scale.
    """
    if len(source_correct) != len(raw_correct):
        raise ValueError("paired_bootstrap needs the two runs aligned on the same questions")
    n = len(source_correct)
    if n == 0:
        return PairedBootstrap(0, None, None, None, None, None, None, None, samples)
    s = np.asarray(source_correct, dtype=bool)
    r = np.asarray(raw_correct, dtype=bool)
    cells = np.array([(s & r).sum(), (s & ~r).sum(), (~s & r).sum(), (~s & ~r).sum()], dtype=np.float64)
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(n, cells / n, size=samples).astype(np.float64)
    both, s_only, r_only = draws[:, 0], draws[:, 1], draws[:, 2]
    deltas = (s_only - r_only) / n
    raw_hits = both + r_only
    defined = raw_hits > 0  # retention is undefined in a resample where raw got nothing right
    ratios = (both + s_only)[defined] / raw_hits[defined]
    tail = (1.0 - confidence) / 2.0 * 100.0
    lo, hi = np.percentile(deltas, [tail, 100.0 - tail])
    rlo, rhi = np.percentile(ratios, [tail, 100.0 - tail]) if ratios.size else (None, None)
    acc_s, acc_r = s.mean(), r.mean()
    return PairedBootstrap(
        n=n,
        delta=float(acc_s - acc_r),
        ci_low=float(lo),
        ci_high=float(hi),
        retention=float(acc_s / acc_r) if acc_r > 0 else None,
        retention_ci_low=None if rlo is None else float(rlo),
        retention_ci_high=None if rhi is None else float(rhi),
        p_not_worse=float((deltas >= 0).mean()),
        samples=samples,
    )


# --------------------------------------------------------------------------------------------- traces
def histogram(values: Iterable[float], bin_width: float = 0.05, upper: float = 1.0) -> list[tuple[str, int]]:
    """Fixed-width bins on [0, upper) plus one overflow bin ``>=upper`` (compressors can lengthen a trace).

    Labels are zero-padded ranges (``0.05-0.10``) so they sort in numeric order as text.
    """
    if bin_width <= 0 or upper <= 0:
        raise ValueError("histogram: bin_width and upper must be positive")
    n_bins = round(upper / bin_width)
    counts = [0] * (n_bins + 1)
    for v in values:
        if v is None or not math.isfinite(v):
            continue
        idx = min(int(max(v, 0.0) / bin_width + 1e-9), n_bins)
        counts[idx] += 1
    labels = [f"{i * bin_width:.2f}-{(i + 1) * bin_width:.2f}" for i in range(n_bins)] + [f">={upper:.2f}"]
    return list(zip(labels, counts, strict=True))


# --------------------------------------------------------------------------------------------- cost
def energy_kwh(gpu_hours: float, watts_per_gpu_hour: float) -> float:
    """GPU-hours x average draw per GPU (W, incl. PUE) -> kWh."""
    return gpu_hours * watts_per_gpu_hour / 1000.0


def co2_kg(kwh: float, g_co2_per_kwh: float) -> float:
    return kwh * g_co2_per_kwh / 1000.0
