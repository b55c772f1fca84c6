"""report: summary metrics, the paper's tables, DVC plot data and a self-contained HTML report.

Reads every run's ``metrics/eval/RUN.json`` and ``metrics/train/RUN.json``, the predictions (for paired
bootstrap intervals against the raw run on the same questions), the built trace datasets under
``data/hub/T`` (compression, trace-generation and judge statistics, trace viewer), ``metrics/prepare.json``
(Table 1), ``metrics/generate/T.json`` (Table 4's completion tokens), the dvclive loss curves and the GPU-
and CPU-hours of every metrics file of the current plan (cost ledger).  Aggregations: ``evaluation.aggregate``.
Writes:

- ``metrics/summary.json``: flat per-run numbers, vs-raw comparisons, judge/compression stats, headline
  ranges, cost;
- ``reports/table*.md`` and ``reports/table*.csv`` (Tables 1-11, headline ranges, per-domain gaps, failure
  modes, vs-raw, cost) and ``reports/tables.md`` (all of them);
- ``reports/index.html``: one self-contained page with the tables, Figures 1-4 and the trace viewer;
- ``plots/report/*.csv``: the data of ``dvc plots`` (accuracy vs tokens, compression-ratio and length
  histograms, mean lengths per dataset, loss).

Runs without metrics yet are reported as missing (``rejects.missing_eval_metrics``), never a crash, so a
partly finished grid still gets a report.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any

import polars as pl
import typer

from compress_distill.benchmarks import registry
from compress_distill.config import Params, ReportConfig, load_params
from compress_distill.evaluation import aggregate, tables, traces
from compress_distill.evaluation import html as html_report
from compress_distill.evaluation import plots as plotting
from compress_distill.evaluation.metrics import (
    co2_kg,
    efficiency_gain,
    energy_kwh,
    paired_bootstrap,
    retention,
)
from compress_distill.evaluation.tables import GridOrder, RunResult, Table
from compress_distill.metrics import RowCounter, read_metrics
from compress_distill.names import compressor_of
from compress_distill.plan import check_current, expand, expand_runs
from compress_distill.rejects import Ledger
from compress_distill.schema import PREDICTIONS, read_table
from compress_distill.staging import Staging, metrics_json

# per-run numbers copied from metrics/eval/RUN.json (overall block) into the summary
OVERALL_KEYS = (
    "accuracy",
    "n",
    "stderr",
    "ci95",
    "mean_completion_tokens",
    "mean_completion_tokens_excl_truncated",
    "truncation_rate",
    "median_reasoning_chars",
    "median_reasoning_tokens",
    "acc_per_1k_tokens",
)
TRAIN_KEYS = ("wall_clock_s", "gpu_hours", "trainable_tokens", "final_loss", "tokens_per_s")


# --------------------------------------------------------------------------------------------- inputs
def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        data = read_metrics(path)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); re-run the stage that writes it") from err
    if not isinstance(data, dict):
        raise TypeError(f"{path} must hold a JSON object, got {type(data).__name__}")
    return data


def load_runs(params: Params, metrics_dir: Path) -> list[RunResult]:
    """The planned grid (``plan.expand_runs``) with whatever eval/train metrics exist."""
    out = []
    for name, r in expand_runs(params).items():
        out.append(
            RunResult(
                run=name,
                teacher=r.teacher,
                student=r.student,
                method=r.method,
                source=r.source,
                eval=_read_json(metrics_dir / "eval" / f"{name}.json"),
                train=_read_json(metrics_dir / "train" / f"{name}.json"),
                seed=r.seed,
            )
        )
    return out


def load_cap_evals(params: Params, metrics_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """Run -> the eval metrics of its ``evaluate_cap`` variants that exist (``metrics/eval/caps``)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for key, item in expand(params)["evaluate_cap"].items():
        if (m := _read_json(metrics_dir / "eval" / "caps" / f"{key}.json")) is not None:
            out.setdefault(item["run"], []).append(m)
    return out


def _correct_by_question(path: Path) -> dict[str, bool] | None:
    if not path.exists():
        return None
    t = read_table(path, PREDICTIONS, columns=["question_id", "correct"])
    return dict(zip(t["question_id"].to_pylist(), (bool(c) for c in t["correct"].to_pylist()), strict=True))


def compare_with_raw(runs: list[RunResult], predictions_dir: Path, cfg: ReportConfig) -> None:
    """Fill ``vs_raw`` of every non-raw run whose raw counterpart (same teacher/student/method and seed) was
    evaluated."""
    by_key = {(r.teacher, r.student, r.method, r.source, r.seed): r for r in runs}
    cache: dict[str, dict[str, bool] | None] = {}

    def preds(run: str) -> dict[str, bool] | None:
        if run not in cache:
            cache[run] = _correct_by_question(predictions_dir / f"{run}.parquet")
        return cache[run]

    for r in runs:
        raw = by_key.get((r.teacher, r.student, r.method, "raw", r.seed))
        if r.source == "raw" or raw is None or not r.eval or not raw.eval:
            continue
        v: dict[str, Any] = {
            "raw_accuracy": raw.get("accuracy"),
            "retention": retention(r.get("accuracy"), raw.get("accuracy")),
            "efficiency_gain": efficiency_gain(r.get("acc_per_1k_tokens"), raw.get("acc_per_1k_tokens")),
        }
        mine, theirs = preds(r.run), preds(raw.run)
        if mine is not None and theirs is not None:
            common = sorted(mine.keys() & theirs.keys())
            boot = paired_bootstrap(
                [mine[q] for q in common], [theirs[q] for q in common], cfg.bootstrap_samples, cfg.seed
            )
            v.update(
                n_paired=boot.n,
                delta=boot.delta,
                ci_low=boot.ci_low,
                ci_high=boot.ci_high,
                retention_ci_low=boot.retention_ci_low,
                retention_ci_high=boot.retention_ci_high,
                p_not_worse=boot.p_not_worse,
            )
        r.vs_raw = v


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def gpu_hours_of(metrics: dict[str, Any]) -> float | None:
    """A stage's GPU-hours: its top-level ``gpu_hours``, else its engine's ``llm_gpu_hours``, else the sum of
    its top-level ``*_gpu_hours`` keys.

    generate, compress and judge nest the engine's counters under ``engine`` (``BackendStats.as_metrics``);
    train and evaluate report ``gpu_hours`` at the top.  A stage that reports both counts once.
    """
    if _number(metrics.get("gpu_hours")):
        return float(metrics["gpu_hours"])
    engine = metrics.get("engine")
    if isinstance(engine, dict) and _number(engine.get("llm_gpu_hours")):
        return float(engine["llm_gpu_hours"])
    parts = [float(v) for k, v in metrics.items() if k.endswith("_gpu_hours") and _number(v)]
    return sum(parts) if parts else None


def wall_hours_of(metrics: dict[str, Any]) -> float | None:
    """A stage's wall-clock hours: top-level ``wall_clock_s``, else its engine's generation + load seconds."""
    if _number(metrics.get("wall_clock_s")):
        return float(metrics["wall_clock_s"]) / 3600.0
    engine = metrics.get("engine")
    if isinstance(engine, dict):
        secs = [float(engine[k]) for k in ("llm_wall_clock_s", "llm_load_s") if _number(engine.get(k))]
        if secs:
            return sum(secs) / 3600.0
    return None


# plan.yaml family -> the metrics folder(s) its instances write ``<key>.json`` into (dvc.yaml's `metrics:`)
PLAN_METRICS: dict[str, tuple[str, ...]] = {
    "generate": ("generate",),
    "compress": ("compress",),
    "judge": ("judge",),
    "truncate": ("truncate",),
    "answer_only": ("answer_only",),
    "build": ("build",),
    "publish": ("publish",),
    "pull": ("pull",),
    "runs": ("train", "eval"),
    "verify": ("verify",),
    "evaluate_cap": ("eval/caps",),
}
SINGLE_METRICS = ("prepare.json",)  # stages without a fan-out, always planned
NOT_STAGES = ("bench",)  # metrics/bench holds benchmarks, not pipeline stages


def planned_metrics(params: Params, metrics_dir: Path) -> dict[Path, str]:
    """Every metrics file the current plan writes -> its stage (the folder name, or the file stem)."""
    plan = expand(params)
    out = {metrics_dir / name: Path(name).stem for name in SINGLE_METRICS}
    for family, folders in PLAN_METRICS.items():
        for key in plan.get(family, {}):
            for folder in folders:
                out[metrics_dir / folder / f"{key}.json"] = folder
    return out


def cost_ledger(params: Params, metrics_dir: Path, cfg: ReportConfig, skip: set[Path]) -> dict[str, Any]:
    """GPU-hours per stage of the current plan, CPU-hours of its runs that held no GPU, energy and CO2.

    Only the metrics files of ``plan.expand(params)`` count; any other JSON under ``metrics/`` (a run of an
    older plan, a renamed compressor) is listed in ``not_in_plan`` and ignored.  A stage instance that held no
    GPU (0 GPU-hours) on a measured wall-clock is a CPU run: its hours go to ``cpu_hours`` -- hours of the CPU
    machine, not core-hours.  ``metrics/bench`` and the report's own summary (``skip``) are not stages.
    """
    planned = planned_metrics(params, metrics_dir)
    gpu: dict[str, float] = {}
    cpu: dict[str, float] = {}
    for path, stage in sorted(planned.items()):
        metrics = _read_json(path)
        if metrics is None:
            continue
        hours = gpu_hours_of(metrics)
        if hours:
            gpu[stage] = gpu.get(stage, 0.0) + hours
        elif (wall := wall_hours_of(metrics)) is not None:
            cpu[stage] = cpu.get(stage, 0.0) + wall
    wanted = {p.resolve() for p in planned} | skip
    ignored = [
        path.relative_to(metrics_dir).as_posix()
        for path in sorted(metrics_dir.rglob("*.json"))
        if path.resolve() not in wanted and path.relative_to(metrics_dir).parts[0] not in NOT_STAGES
    ]
    total = sum(gpu.values())
    kwh = energy_kwh(total, cfg.watts_per_gpu_hour)
    return {
        "gpu_hours": dict(sorted(gpu.items())),
        "total_gpu_hours": total,
        "cpu_hours": dict(sorted(cpu.items())),
        "total_cpu_hours": sum(cpu.values()),
        "energy_kwh": kwh,
        "co2_kg": co2_kg(kwh, cfg.g_co2_per_kwh),
        "watts_per_gpu_hour": cfg.watts_per_gpu_hour,
        "g_co2_per_kwh": cfg.g_co2_per_kwh,
        "not_in_plan": ignored,
        "ignored_metrics_files": len(ignored),
    }


# --------------------------------------------------------------------------------------------- summary
def summarise(
    runs: list[RunResult],
    ledger: dict[str, Any],
    judge: dict[str, dict[str, dict[tuple[str, str], dict[str, Any]]]],
    compression: list[dict[str, Any]],
    counter: RowCounter,
    ranges: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """``metrics/summary.json``: nested objects of numbers only (DVC flattens them; it drops lists)."""
    per_run: dict[str, dict[str, Any]] = {}
    for r in runs:
        if not r.eval:
            continue
        row = {k: r.get(k) for k in OVERALL_KEYS}
        for k in TRAIN_KEYS:
            if r.train and isinstance(r.train.get(k), int | float):
                row[f"train_{k}"] = r.train[k]
        v = r.vs_raw
        if v:
            row.update(
                retention_vs_raw=v.get("retention"),
                efficiency_gain_vs_raw=v.get("efficiency_gain"),
                delta_vs_raw=v.get("delta"),
                delta_vs_raw_ci_low=v.get("ci_low"),
                delta_vs_raw_ci_high=v.get("ci_high"),
            )
        per_run[r.run] = row
    judge_out = {
        t: {c: {k: v for k, v in cells[("Overall", "")].items()} for c, cells in per.items()}
        for t, per in judge.items()
    }
    comp_out: dict[str, dict[str, Any]] = {}
    for s in compression:
        if s["domain"] != aggregate.OVERALL:
            continue
        comp_out.setdefault(s["teacher"], {})[s["compressor"]] = {
            "n": s["n"],
            "mean_chars": s["mean_chars"],
            "ratio_of_means": s["ratio_of_means"],
            "mean_ratio": s["mean_ratio"],
        }
    cost = {
        k: ledger[k]
        for k in (
            "gpu_hours",
            "total_gpu_hours",
            "cpu_hours",
            "total_cpu_hours",
            "energy_kwh",
            "co2_kg",
            "ignored_metrics_files",
        )
    }
    return {
        "runs": per_run,
        "judge": judge_out,
        "compression": comp_out,
        "headline": ranges or {},
        "cost": cost,
        **counter.as_dict(),
    }


def headline_metrics(
    runs: list[RunResult], compression: dict[str, dict[str, dict[str, Any]]]
) -> dict[str, dict[str, float]]:
    """``metrics/headline/RUN.json``: five numbers per evaluated run, so ``dvc metrics show metrics/headline``
    is one screen row per run (the summary has ~30 numbers per run).  ``compression_ratio``: chars of the
    run's source over raw chars (ratio of means; raw is 1); absent, like any number a run lacks, rather than
    null, which DVC would print as a column of "None"."""
    out: dict[str, dict[str, float]] = {}
    for r in runs:
        if not r.eval:
            continue
        ratio: float | None = 1.0 if r.source == "raw" else None
        if r.source.startswith(aggregate.COMPRESSED_PREFIX):
            comp = compression.get(r.teacher, {}).get(r.source.removeprefix(aggregate.COMPRESSED_PREFIX), {})
            ratio = comp.get("ratio_of_means")
        row = {
            "accuracy": r.get("accuracy"),
            "acc_per_1k": r.get("acc_per_1k_tokens"),  # accuracy per 1,000 completion tokens
            "retention": r.vs_raw.get("retention"),  # accuracy / the same teacher's raw run's
            "reasoning_tokens": r.get("median_reasoning_tokens"),  # median per answer
            "compression_ratio": ratio,
        }
        out[r.run] = {k: round(float(v), 4) for k, v in row.items() if v is not None}
    return out


def short_labels(runs: list[RunResult]) -> dict[str, str]:
    """Run id -> the parts of it that vary over the grid (the demo: its source, e.g. ``compressed-terse``).
    ``metrics/headline.json`` is keyed by these: ``dvc exp show`` prints a key shared by several metrics
    files with the file's path in front, which makes per-run files unreadable there."""
    fields = ("teacher", "student", "method", "source")
    varying = [f for f in fields if len({getattr(r, f) for r in runs}) > 1] or ["source"]
    seeded = len({r.seed for r in runs}) > 1  # grid.seeds with several seeds: the label keeps s<seed>

    def label(r: RunResult) -> str:
        parts = [getattr(r, f) for f in fields if f in varying]
        return "-".join(parts + ([f"s{r.seed}"] if seeded else []))

    return {r.run: label(r) for r in runs}


def _headline(
    runs: list[RunResult], ledger: dict[str, Any], pairs: int, ranges: dict[str, dict[str, Any]]
) -> list[tuple[str, str]]:
    done = [r for r in runs if r.eval and r.get("accuracy") is not None]
    items = [("runs evaluated", f"{len(done)} / {len(runs)}")]
    if done:
        best = max(done, key=lambda r: r.get("accuracy"))
        items.append((f"best accuracy ({best.run})", f"{best.get('accuracy'):.3f}"))
    rets = [
        r.vs_raw["retention"]
        for r in runs
        if r.vs_raw.get("retention") is not None and compressor_of(r.source) is not None
    ]
    if rets:
        items.append(
            ("median retention of compressed runs vs raw", f"{sorted(rets)[len(rets) // 2] * 100:.1f}%")
        )
    items += [
        (label, tables.headline_range(ranges[key], style))
        for key, label, style, _ in tables.HEADLINES
        if ranges.get(key, {}).get("n")
    ]
    items += [
        ("GPU-hours (all stages)", f"{ledger['total_gpu_hours']:.2f}"),
        ("CPU-hours (runs without a GPU)", f"{ledger['total_cpu_hours']:.2f}"),
        ("energy", f"{ledger['energy_kwh']:.2f} kWh"),
        ("CO2eq", f"{ledger['co2_kg']:.2f} kg"),
        ("trace pairs in the viewer", str(pairs)),
    ]
    return items


# --------------------------------------------------------------------------------------------- stage
def run(
    params: Params,
    metrics_dir: Path,
    predictions_dir: Path,
    hub_dir: Path,
    out_dir: Path,
    plots_dir: Path,
    summary_path: Path,
    train_plots_dir: Path = Path("plots/train"),
    headline_dir: Path | None = None,
) -> dict[str, Any]:
    cfg = params.report
    g = params.grid
    order = GridOrder(g.teachers, g.students, g.methods, g.sources)

    runs = load_runs(params, metrics_dir)
    counter = Ledger("report")
    for r in runs:
        counter.seen()
        if r.eval:
            counter.kept()
        else:
            counter.reject("missing_eval_metrics", id=r.run, detail="no metrics/eval file for this run")
    # everything is written into staged folders (outside the DVC outs) and swapped in with the summary last
    staging = Staging()
    reports, plots = staging.folder(out_dir), staging.folder(plots_dir)
    compare_with_raw(runs, predictions_dir, cfg)
    headline_dir = headline_dir or summary_path.parent / "headline"
    by_label = headline_dir.with_suffix(".json")  # the same numbers keyed by short run label
    own = {summary_path.resolve(), by_label.resolve(), *(p.resolve() for p in headline_dir.glob("*.json"))}
    ledger = cost_ledger(params, metrics_dir, cfg, skip=own)

    hub = traces.discover(hub_dir, g.teachers)
    raw_traces, comp_traces = aggregate.hub_frames(hub)
    compression_frame = aggregate.compression_by_dataset(comp_traces)
    compression = compression_frame.to_dicts()
    generation = aggregate.trace_generation(raw_traces).to_dicts()
    lengths_frame = aggregate.compressed_lengths(raw_traces, comp_traces)
    lengths = _series(lengths_frame, "series", "tokens")
    p90 = {
        (r["teacher"], r["series"]): r["quantile"]
        for r in aggregate.length_quantiles(lengths_frame, 0.9).to_dicts()
    }
    ratios = _series(comp_traces.drop_nulls("compression_ratio"), "compressor", "compression_ratio")
    judge = aggregate.judge_stats(comp_traces)
    pairs = traces.viewer_pairs(hub)
    curves = plotting.read_dvclive_curves(train_plots_dir, [r.run for r in runs])
    ranges = aggregate.headline_ranges(aggregate.runs_frame(runs), compression_frame)
    gaps = aggregate.group_gaps(runs).to_dicts()
    generate_metrics = {t: _read_json(metrics_dir / "generate" / f"{t}.json") or {} for t in g.teachers}

    # ---- DVC plot data
    acc_rows = plotting.accuracy_vs_tokens_rows(runs)
    plotting.write_csv(
        plots / plotting.ACCURACY_VS_TOKENS,
        acc_rows,
        ["run", "teacher", "student", "method", "source", "median_reasoning_tokens", "accuracy"],
    )
    flops_rows = plotting.accuracy_vs_flops_rows(runs)
    plotting.write_csv(
        plots / plotting.ACCURACY_VS_FLOPS,
        flops_rows,
        [
            "run",
            "teacher",
            "student",
            "method",
            "source",
            "train_flops",
            "inference_flops",
            "total_flops",
            "accuracy",
        ],
    )
    plotting.write_csv(
        plots / plotting.COMPRESSION_HIST,
        plotting.compression_hist_rows(ratios),
        ["bin", "count", "teacher", "compressor", "range"],
    )
    length_rows = plotting.lengths_by_dataset_rows(generation, compression)
    plotting.write_csv(
        plots / plotting.LENGTHS_BY_DATASET, length_rows, ["teacher", "dataset", "series", "mean_chars"]
    )
    plotting.write_csv(
        plots / plotting.LENGTH_HIST,
        plotting.length_hist_rows(lengths),
        ["bin", "count", "teacher", "series", "range"],
    )
    plotting.write_csv(
        plots / plotting.LOSS_CURVES, plotting.loss_rows(curves), ["run", "metric", "step", "loss"]
    )

    # ---- tables
    all_tables: list[Table] = [
        tables.headline_table(ranges),
        tables.datasets_table(_read_json(metrics_dir / "prepare.json"), registry.SPECS),
        tables.compression_table(compression),
        tables.overall_accuracy_table(runs, order),
        tables.trace_generation_table(generation, generate_metrics),
        tables.compression_by_dataset_table(compression),
        tables.training_table(runs, order),
        tables.group_accuracy_table(runs, order),
        tables.domain_gap_table(gaps, order),
        tables.truncation_ablation_table(runs, order),
        tables.efficiency_table(runs, order),
        tables.vs_raw_table(runs, order),
        *(tables.judge_table(t, s) for t, s in judge.items()),
        tables.failure_mode_table(aggregate.failure_modes(comp_traces).to_dicts()),
        tables.compute_table(runs, order),
        tables.cap_sensitivity_table(runs, load_cap_evals(params, metrics_dir), order),
        tables.seed_spread_table(runs, order),
    ]
    cost = tables.cost_table(ledger)
    for t in [*all_tables, cost]:  # a fresh folder: no table of a teacher no longer in the grid survives
        _write_text(reports / f"{t.key}.md", t.to_markdown())
        _write_text(reports / f"{t.key}.csv", t.to_csv())
    _write_text(
        reports / "tables.md",
        "# Compress-Distill tables\n\n"
        + (f"> {cfg.note}\n\n" if cfg.note else "")
        + "\n".join(t.to_markdown() for t in [*all_tables, cost]),
    )

    # ---- HTML
    by_run = {r.run: r for r in runs}
    figures = [
        html_report.figure(
            plotting.svg_lengths_by_dataset(length_rows),
            "Figure 1 analogue: mean reasoning length per dataset, raw traces against each compressor.",
        ),
        html_report.figure(
            plotting.svg_length_hist(lengths, p90),
            "Figure 2 analogue: distribution of reasoning lengths (tokens) of raw and compressed traces; "
            "p90 per series in the legend, 500 tokens dotted.",
        ),
        html_report.figure(
            plotting.svg_accuracy_vs_tokens(acc_rows),
            "Figure 4 analogue: accuracy against median reasoning tokens per run.",
        ),
        html_report.figure(
            plotting.svg_loss_curves(curves, by_run), "Figure 3 analogue: training loss curves."
        ),
        html_report.figure(
            plotting.svg_accuracy_vs_flops(flops_rows),
            "Beyond the paper: accuracy against total FLOPs per run (training ~6·N·tokens + evaluation "
            "~2·N·generated tokens, N the student's parameters).",
        ),
    ]
    page = html_report.render(
        subtitle=f"{len(runs)} planned runs · teachers {', '.join(g.teachers)} · students {', '.join(g.students)}",
        headline=_headline(runs, ledger, len(pairs), ranges),
        tables=all_tables,
        figures=figures,
        cost=cost,
        pairs=pairs,
        note=cfg.note,
    )
    _write_text(reports / "index.html", page)

    summary = summarise(runs, ledger, judge, compression, counter, ranges)
    headline = headline_metrics(runs, summary["compression"])
    staged_headline = staging.folder(headline_dir)  # replaced whole: a run no longer in the grid drops out
    for name, numbers in headline.items():
        (staged_headline / f"{name}.json").write_text(metrics_json(numbers), encoding="utf-8")
    labels = short_labels(runs)
    staging.metrics(by_label, {labels[name]: numbers for name, numbers in headline.items()})
    counter.write_rejects(staging, out_dir)  # reports.rejects.parquet: planned runs without eval metrics
    staging.metrics(summary_path, summary)
    staging.commit()  # the folders, the rejects, then the summary
    return summary


def _series(frame: pl.DataFrame, by: str, value: str) -> dict[tuple[str, str], list[float]]:
    """``{(teacher, <by>): [value, ...]}`` in first-seen order: the per-trace values a histogram bins."""
    return {
        (str(k[0]), str(k[1])): part[value].to_list()
        for k, part in frame.group_by(["teacher", by], maintain_order=True)
    }


def _write_text(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")  # inside a staged folder: the commit makes it atomic


def main(
    params: Annotated[Path, typer.Option(help="params file")] = Path("params.yaml"),
    metrics_dir: Annotated[Path, typer.Option(help="root of every stage's metrics JSON")] = Path("metrics"),
    predictions_dir: Annotated[Path, typer.Option(help="folder of RUN.parquet predictions")] = Path(
        "data/predictions"
    ),
    hub_dir: Annotated[Path, typer.Option(help="built trace datasets, one folder per teacher")] = Path(
        "data/hub"
    ),
    out_dir: Annotated[Path, typer.Option(help="where tables (*.md) and index.html go")] = Path("reports"),
    plots_dir: Annotated[Path, typer.Option(help="CSV plot data for dvc plots")] = Path("plots/report"),
    summary: Annotated[Path, typer.Option(help="summary metrics JSON")] = Path("metrics/summary.json"),
    train_plots_dir: Annotated[Path, typer.Option(help="dvclive folders of the train stages")] = Path(
        "plots/train"
    ),
    headline_dir: Annotated[
        Path, typer.Option(help="one small metrics JSON per run (accuracy, acc/1k, retention, ...)")
    ] = Path("metrics/headline"),
) -> None:
    """Build the report: summary metrics, paper tables, DVC plot data and reports/index.html."""
    p = load_params(params)
    check_current(p, params.parent / "plan.yaml")  # report depends on grid and traces: it notices an edit
    s = run(
        p,
        metrics_dir,
        predictions_dir,
        hub_dir,
        out_dir,
        plots_dir,
        summary,
        train_plots_dir,
        headline_dir,
    )
    typer.echo(
        f"report: {s['rows_out']}/{s['rows_in']} runs with metrics; {out_dir / 'index.html'}, {summary}"
    )
