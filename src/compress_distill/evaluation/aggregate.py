"""The report's aggregations, on polars: every per-dataset, per-pair and per-run number a table or figure prints.

The per-trace aggregations (means, ratio of means) are ``stats``'s, the ones the trace stages' metrics use.

Two inputs, both already read: the built trace datasets (``data/hub/T/<config>``, flattened by ``hub_frames``
into one raw and one compressed frame) and the run grid (``RunResult``: eval/train metrics per run).  Every
function here is pure (frames or runs in, a frame or plain numbers out); formatting is ``tables.py``'s job.

Definitions follow the paper:
- compression ratios are ratios of means (mean compressed chars / mean raw chars, Tables 2 and 5); the mean of
  per-trace ratios is kept beside them as ``mean_ratio``;
- headline ranges (abstract, §5.3): over the compressed runs that have a raw run of the same teacher, student
  and method -- training-token fraction = trainable tokens / raw trainable tokens (12-30%), training speed-up
  = raw wall-clock / wall-clock (2.0-7.6x), output shortening = raw median reasoning tokens / median reasoning
  tokens (3-19x); the compressed length range is the pairs' ratios of means (8.6-21.0%);
- per-domain gaps (§6.4) = accuracy of a source minus the raw run's, per evaluation group, in points;
- Table 11 totals: GPU-hours of every run, of the main grid (all but truncated) and of the truncation ablation.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import polars as pl

from compress_distill import stats
from compress_distill.names import COMPRESSED_PREFIX, compressor_of

if TYPE_CHECKING:
    from compress_distill.evaluation.tables import RunResult
    from compress_distill.evaluation.traces import HubConfig

OVERALL = "Overall"  # domain label of a per-pair / per-teacher total row (its dataset is "")

_TRACE_SCHEMA: dict[str, Any] = {
    "teacher": pl.String,
    "id": pl.String,
    "dataset": pl.String,
    "domain": pl.String,
    "reasoning_chars": pl.Int64,
    "reasoning_tokens": pl.Int64,
}
_COMPRESSED_SCHEMA: dict[str, Any] = {
    **_TRACE_SCHEMA,
    "compressor": pl.String,
    "compression_ratio": pl.Float64,
    "judge_verdict": pl.String,
    "judge_faithfulness": pl.Float64,
    "judge_answer_alignment": pl.Boolean,
    "judge_parse_status": pl.String,
    "judge_failure_modes": pl.List(pl.String),
}


# --------------------------------------------------------------------------------------------- inputs
def _frame(cfg: HubConfig, schema: Mapping[str, Any], **constants: str) -> pl.DataFrame:
    """The config's columns of ``schema`` (absent ones as nulls) with ``constants`` added, in schema order."""
    wanted = [c for c in schema if c not in constants]
    df = pl.from_arrow(cfg.read(wanted))
    assert isinstance(df, pl.DataFrame)
    df = df.with_columns(
        *(pl.lit(v, pl.String).alias(k) for k, v in constants.items()),
        *(pl.lit(None, schema[c]).alias(c) for c in wanted if c not in df.columns),
    )
    return df.select([pl.col(c).cast(t) for c, t in schema.items()])


def hub_frames(hub: Mapping[str, Mapping[str, HubConfig]]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(raw, compressed) traces of every teacher, without text.

    ``compressed`` carries ``raw_chars``: the raw trace's length, joined on (teacher, id); a compressed row
    whose raw row is absent falls back to ``reasoning_chars / compression_ratio``.
    """
    raws = [_frame(c["raw"], _TRACE_SCHEMA, teacher=t) for t, c in hub.items() if "raw" in c]
    comps = [
        _frame(cfg, _COMPRESSED_SCHEMA, teacher=t, compressor=compressor)
        for t, configs in hub.items()
        for name, cfg in configs.items()
        if (compressor := compressor_of(name)) is not None
    ]
    raw = pl.concat(raws) if raws else pl.DataFrame(schema=_TRACE_SCHEMA)
    comp = pl.concat(comps) if comps else pl.DataFrame(schema=_COMPRESSED_SCHEMA)
    lengths = raw.select("teacher", "id", pl.col("reasoning_chars").alias("raw_chars")).unique(
        ["teacher", "id"]
    )
    comp = comp.join(lengths, on=["teacher", "id"], how="left").with_columns(
        pl.col("raw_chars")
        .cast(pl.Float64)
        .fill_null(
            pl.when(pl.col("compression_ratio") > 0).then(
                pl.col("reasoning_chars") / pl.col("compression_ratio")
            )
        )
    )
    return raw, comp


# --------------------------------------------------------------------------------------------- traces
def _with_totals(df: pl.DataFrame, keys: Sequence[str], aggs: Sequence[pl.Expr]) -> pl.DataFrame:
    """Per (keys, domain, dataset) rows, then one ``Overall`` row per ``keys`` (in first-seen key order)."""
    detail = df.group_by([*keys, "domain", "dataset"]).agg(aggs).sort([*keys, "domain", "dataset"])
    total = (
        df.group_by(keys, maintain_order=True)
        .agg(aggs)
        .with_columns(pl.lit(OVERALL).alias("domain"), pl.lit("").alias("dataset"))
    )
    order = df.select(keys).unique(maintain_order=True).with_row_index("_key")
    both = pl.concat([detail, total.select(detail.columns)]).with_columns(
        (pl.col("domain") == OVERALL).alias("_total")
    )
    return (
        both.join(order, on=list(keys)).sort(["_key", "_total"], maintain_order=True).drop("_key", "_total")
    )


def compression_by_dataset(comp: pl.DataFrame) -> pl.DataFrame:
    """Tables 2 and 5: per (teacher, compressor, domain, dataset) and per pair (``Overall``).

    Columns: ``n``, ``mean_chars``, ``mean_tokens``, ``mean_raw_chars``, ``ratio_of_means`` (the paper's
    ratio), ``mean_ratio`` (mean of per-trace ratios).
    """
    aggs = [pl.len().alias("n"), *stats.COMPRESSION]  # the compress stage's metrics use the same
    # the ratio of means is taken over rows whose raw length is known, so both sums cover the same traces
    known = comp.filter(pl.col("raw_chars").is_not_null() & (pl.col("raw_chars") > 0))
    return _with_totals(known, ["teacher", "compressor"], aggs)


def trace_generation(raw: pl.DataFrame) -> pl.DataFrame:
    """Table 4: accepted raw traces per (teacher, domain, dataset), mean reasoning chars and tokens."""
    return _with_totals(raw, ["teacher"], [pl.len().alias("n"), *stats.TRACE_LENGTHS])


def compressed_lengths(raw: pl.DataFrame, comp: pl.DataFrame) -> pl.DataFrame:
    """Figure 2: one row per trace -- ``teacher``, ``series`` (``raw`` or the compressor) and ``tokens``."""
    return pl.concat(
        [
            raw.select("teacher", pl.lit("raw").alias("series"), pl.col("reasoning_tokens").alias("tokens")),
            comp.select(
                "teacher", pl.col("compressor").alias("series"), pl.col("reasoning_tokens").alias("tokens")
            ),
        ]
    ).drop_nulls("tokens")


def length_quantiles(lengths: pl.DataFrame, q: float = 0.9) -> pl.DataFrame:
    """Per (teacher, series): ``n`` and the ``q`` quantile of tokens (the paper: p90 < 500 after compression)."""
    return lengths.group_by(["teacher", "series"], maintain_order=True).agg(
        pl.len().alias("n"), pl.col("tokens").quantile(q, interpolation="linear").alias("quantile")
    )


def judged(comp: pl.DataFrame) -> pl.DataFrame:
    """Compressed traces whose judge verdict parsed (status ``ok`` or no status, and a verdict present)."""
    return comp.filter(
        pl.col("judge_verdict").is_not_null() & pl.col("judge_parse_status").fill_null("ok").eq("ok")
    )


def judge_stats(comp: pl.DataFrame) -> dict[str, dict[str, dict[tuple[str, str], dict[str, Any]]]]:
    """Table 10 cells: ``{teacher: {compressor: {(domain, dataset): summary}}}`` with an (Overall, "") total.

    A summary is ``n`` (parsed verdicts), ``faithfulness`` (mean score), ``faithful`` (share of the verdict,
    not the score) and ``aligned`` (share with positive answer_alignment); a compressor never judged is absent.
    """
    aggs = [
        pl.len().alias("n"),
        pl.col("judge_faithfulness").mean().alias("faithfulness"),
        (pl.col("judge_verdict") == "faithful").mean().alias("faithful"),
        pl.col("judge_answer_alignment").cast(pl.Float64).mean().alias("aligned"),
    ]
    rows = judged(comp).with_columns(pl.col("domain", "dataset").fill_null("?"))
    out: dict[str, dict[str, dict[tuple[str, str], dict[str, Any]]]] = {}
    for r in _with_totals(rows, ["teacher", "compressor"], aggs).to_dicts():
        cell = {k: r[k] for k in ("n", "faithfulness", "faithful", "aligned")}
        out.setdefault(r["teacher"], {}).setdefault(r["compressor"], {})[(r["domain"], r["dataset"])] = cell
    return out


def failure_modes(comp: pl.DataFrame) -> pl.DataFrame:
    """Failure-mode table (paper Appendix G.2) per (teacher, compressor).

    ``judged`` counts traces whose verdict parsed; ``not_faithful`` those with another verdict than
    ``faithful``; one column per mode of ``schema.FAILURE_MODES`` counts the traces the judge tagged with it
    (a mode listed twice in one verdict counts once).
    """
    return (
        judged(comp)
        .group_by(["teacher", "compressor"], maintain_order=True)
        .agg(
            pl.len().alias("judged"),
            (pl.col("judge_verdict") != "faithful").sum().alias("not_faithful"),
            *stats.mode_counts("judge_failure_modes"),
        )
    )


# --------------------------------------------------------------------------------------------- runs
def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def runs_frame(runs: Iterable[RunResult]) -> pl.DataFrame:
    """One row per planned run: its grid coordinates and the eval/train numbers the aggregations use."""
    rows = []
    for r in runs:
        train = r.train or {}
        rows.append(
            {
                **r.coordinates(),
                "accuracy": _number(r.get("accuracy")),
                "median_reasoning_tokens": _number(r.get("median_reasoning_tokens")),
                "trainable_tokens": _number(train.get("trainable_tokens")),
                "wall_clock_s": _number(train.get("wall_clock_s")),
                "gpu_hours": _number(train.get("gpu_hours")),
                # train metrics name the GPUs per job `gpus`; older ones only `world_size`
                "gpus": _number(train.get("gpus", train.get("world_size"))),
            }
        )
    schema = {
        "run": pl.String,
        "teacher": pl.String,
        "student": pl.String,
        "method": pl.String,
        "source": pl.String,
        **dict.fromkeys(
            ["accuracy", "median_reasoning_tokens", "trainable_tokens", "wall_clock_s", "gpu_hours", "gpus"],
            pl.Float64,
        ),
    }
    return pl.DataFrame(rows, schema=schema)


def vs_raw(frame: pl.DataFrame) -> pl.DataFrame:
    """Every non-raw run joined with the raw run of the same teacher, student and method (``*_raw`` columns)."""
    cell = ["teacher", "student", "method"]
    raw = frame.filter(pl.col("source") == "raw").drop("run", "source")
    return frame.filter(pl.col("source") != "raw").join(raw, on=cell, how="inner", suffix="_raw")


def _range(values: pl.Series) -> dict[str, float | int | None]:
    v = values.drop_nulls().drop_nans().cast(pl.Float64).to_list()
    return {"min": min(v) if v else None, "max": max(v) if v else None, "n": len(v)}


def headline_ranges(
    frame: pl.DataFrame, compression: pl.DataFrame | None = None
) -> dict[str, dict[str, Any]]:
    """The abstract's ranges over the compressed runs (see the module docstring); ``{name: {min, max, n}}``."""
    pairs = vs_raw(frame).filter(pl.col("source").str.starts_with(COMPRESSED_PREFIX))

    def ratio(num: str, den: str) -> pl.Series:
        return pairs.select(
            pl.when(pl.col(den) > 0).then(pl.col(num) / pl.col(den)).otherwise(None).alias("r")
        )["r"]

    out = {
        "training_token_fraction": _range(ratio("trainable_tokens", "trainable_tokens_raw")),
        "training_speedup": _range(ratio("wall_clock_s_raw", "wall_clock_s")),
        "output_shortening": _range(ratio("median_reasoning_tokens_raw", "median_reasoning_tokens")),
    }
    if compression is not None:
        out["compressed_length"] = _range(compression.filter(pl.col("domain") == OVERALL)["ratio_of_means"])
    return out


def group_gaps(runs: Iterable[RunResult]) -> pl.DataFrame:
    """§6.4: per non-raw run and evaluation group, ``gap`` = (accuracy - raw accuracy) x 100 points.

    Long format: ``teacher, student, method, source, group, accuracy, accuracy_raw, gap, seeds``; a group
    missing from either run is absent.  A non-raw run is compared with the raw run of the same seed
    (``grid.seeds``), and the three numbers are the means over the ``seeds`` pairs.
    """
    rows = [
        {
            "teacher": r.teacher,
            "student": r.student,
            "method": r.method,
            "source": r.source,
            "seed": -1 if r.seed is None else r.seed,  # a join key: polars never matches null keys
            "group": g,
            "accuracy": _number((b or {}).get("accuracy")),
        }
        for r in runs
        for g, b in ((r.eval or {}).get("groups") or {}).items()
    ]
    schema = {k: pl.String for k in ("teacher", "student", "method", "source", "group")} | {
        "seed": pl.Int64,
        "accuracy": pl.Float64,
    }
    long = pl.DataFrame(rows, schema=schema).drop_nulls("accuracy")
    cell = ["teacher", "student", "method", "seed", "group"]
    raw = long.filter(pl.col("source") == "raw").drop("source")
    per_seed = (
        long.filter(pl.col("source") != "raw")
        .join(raw, on=cell, how="inner", suffix="_raw")
        .with_columns(((pl.col("accuracy") - pl.col("accuracy_raw")) * 100.0).alias("gap"))
    )
    return per_seed.group_by(["teacher", "student", "method", "source", "group"], maintain_order=True).agg(
        pl.col("accuracy").mean(),
        pl.col("accuracy_raw").mean(),
        pl.col("gap").mean(),
        pl.len().alias("seeds"),
    )


def compute_totals(frame: pl.DataFrame) -> dict[str, float]:
    """Table 11 totals: training GPU-hours of all runs, the main grid and the truncation ablation."""
    trunc = pl.col("source") == "truncated"
    sums = frame.select(
        pl.col("gpu_hours").sum().alias("all"),
        pl.col("gpu_hours").filter(~trunc).sum().alias("main_grid"),
        pl.col("gpu_hours").filter(trunc).sum().alias("truncation_ablation"),
    ).row(0, named=True)
    return {k: float(v or 0.0) for k, v in sums.items()}
