"""Paper-shaped tables (Tables 1-11, failure modes, headline ranges, per-domain gaps, vs-raw, cost).

Every builder is pure: it takes the run grid with each run's eval/train metrics (``RunResult``), stage metrics,
or rows aggregated by ``evaluation.aggregate`` (``frame.to_dicts()``), and returns a ``Table`` that renders to
Markdown (``reports/*.md``), CSV (``reports/*.csv``) and HTML (``reports/index.html``).  A missing run or value prints as an em dash, never a crash: a partly
finished grid still gets a report.
"""

from __future__ import annotations

import csv
import html
import io
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from compress_distill.evaluation import aggregate
from compress_distill.evaluation.aggregate import OVERALL
from compress_distill.evaluation.metrics import ci95, order_groups
from compress_distill.names import FAILURE_MODES, IFT, compressor_of

DASH = "—"


@dataclass
class RunResult:
    """One run of the grid and whatever metrics exist for it so far."""

    run: str
    teacher: str
    student: str
    method: str
    source: str
    eval: dict[str, Any] | None = None  # metrics/eval/RUN.json
    train: dict[str, Any] | None = None  # metrics/train/RUN.json
    vs_raw: dict[str, Any] = field(default_factory=dict)  # retention, gain, bootstrap (see report stage)
    seed: int | None = None  # grid.seeds' seed of the run; None: the grid has no seeds axis

    @property
    def overall(self) -> dict[str, Any]:
        return (self.eval or {}).get("overall", {}) or {}

    def get(self, key: str) -> Any:
        return self.overall.get(key)

    def coordinates(self) -> dict[str, str]:
        """The run and its place in the grid: the leading columns of every per-run row (plots, frames)."""
        return {
            "run": self.run,
            "teacher": self.teacher,
            "student": self.student,
            "method": self.method,
            "source": self.source,
        }


@dataclass
class Table:
    key: str  # file stem under reports/, e.g. "table3_overall_accuracy"
    title: str
    columns: list[str]
    rows: list[list[str]]
    note: str = ""

    def to_markdown(self) -> str:
        def cell(text: str) -> str:
            return str(text).replace("|", "\\|").replace("\n", " ")

        lines = [f"## {self.title}", ""]
        if self.note:
            lines += [self.note, ""]
        lines.append("| " + " | ".join(cell(c) for c in self.columns) + " |")
        lines.append("|" + "|".join("---" for _ in self.columns) + "|")
        lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in self.rows]
        if not self.rows:
            lines.append("| " + " | ".join(["(no runs yet)"] + [""] * (len(self.columns) - 1)) + " |")
        return "\n".join(lines) + "\n"

    def to_csv(self) -> str:
        """The table as CSV: header then rows (the note is Markdown/HTML only)."""
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(self.columns)
        writer.writerows(self.rows)
        return buf.getvalue()

    def to_html(self) -> str:
        esc = html.escape
        head = "".join(f"<th>{esc(c)}</th>" for c in self.columns)
        body = "".join(
            "<tr>" + "".join(f"<td>{esc(str(c))}</td>" for c in row) + "</tr>" for row in self.rows
        )
        if not self.rows:
            body = f'<tr><td colspan="{len(self.columns)}">(no runs yet)</td></tr>'
        note = f'<p class="note">{esc(self.note)}</p>' if self.note else ""
        return (
            f'<section class="table" id="{esc(self.key)}"><h3>{esc(self.title)}</h3>{note}'
            f'<div class="scroll"><table data-table="{esc(self.key)}"><thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table></div></section>"
        )


# --------------------------------------------------------------------------------------------- formatting
def fmt(value: Any, spec: str = ".3f") -> str:
    if value is None or isinstance(value, bool):
        return DASH if value is None else str(value)
    try:
        return format(value, spec)
    except (TypeError, ValueError):
        return str(value)


def fmt_hours(hours: float | None) -> str:
    """Paper precision (0.1 h) for real runs, more digits for the seconds-long demo runs."""
    if hours is None:
        return DASH
    return f"{hours:.1f}" if hours >= 1 else f"{hours:.3g}"


def source_label(source: str) -> str:
    if source == "raw":
        return "Raw"
    if source == "answer-only":
        return "Answer-only"
    if source == "truncated":
        return "Truncated"
    if source == IFT:
        return "IFT"
    compressor = compressor_of(source)
    return source if compressor is None else f"{compressor} comp."


@dataclass(frozen=True)
class GridOrder:
    """Row order of every table: the order ids appear in ``params.grid``."""

    teachers: Sequence[str]
    students: Sequence[str]
    methods: Sequence[str]
    sources: Sequence[str]

    @staticmethod
    def _idx(seq: Sequence[str], value: str) -> int:
        return seq.index(value) if value in seq else len(seq)

    def key(self, r: RunResult, by: str = "tsms") -> tuple[int, ...]:
        """``tsms``: teacher, student, method, source; ``tssm``: teacher, student, source, method."""
        t, s = self._idx(self.teachers, r.teacher), self._idx(self.students, r.student)
        m, src = self._idx(self.methods, r.method), self._idx(self.sources, r.source)
        return (t, s, m, src) if by == "tsms" else (t, s, src, m)

    def compressed(self) -> list[str]:
        return [s for s in self.sources if compressor_of(s) is not None]


def _index(runs: Iterable[RunResult]) -> dict[tuple[str, str, str, str], RunResult]:
    """Runs by (teacher, student, method, source); with a seeds axis the first seed's run (the seed table
    gives the spread over seeds)."""
    out: dict[tuple[str, str, str, str], RunResult] = {}
    for r in runs:
        out.setdefault((r.teacher, r.student, r.method, r.source), r)
    return out


def _pairs(runs: Iterable[RunResult], order: GridOrder, sources: Iterable[str]) -> list[tuple[str, str, str]]:
    """(teacher, student, method) triples having a run in any of ``sources``, in grid order."""
    wanted = set(sources)
    picked = sorted((r for r in runs if r.source in wanted), key=order.key)
    return list(dict.fromkeys((r.teacher, r.student, r.method) for r in picked))


def _grid_table(
    key: str,
    title: str,
    runs: Sequence[RunResult],
    order: GridOrder,
    sources: Sequence[str],
    value: Callable[[RunResult], str],
    note: str = "",
) -> Table:
    idx = _index(runs)
    rows = []
    for t, s, m in _pairs(runs, order, sources):
        cells = [value(idx[(t, s, m, src)]) if (t, s, m, src) in idx else DASH for src in sources]
        rows.append([t, s, m, *cells])
    return Table(key, title, ["Teacher", "Student", "Method", *map(source_label, sources)], rows, note)


# --------------------------------------------------------------------------------------------- tables
def overall_accuracy_table(runs: Sequence[RunResult], order: GridOrder) -> Table:
    """Table 3: overall accuracy of the reasoning-trace runs (raw and each compressor)."""
    sources = [s for s in order.sources if s == "raw" or compressor_of(s) is not None]
    return _grid_table(
        "table3_overall_accuracy",
        "Table 3 — Overall accuracy (raw vs. compressed traces)",
        runs,
        order,
        sources,
        lambda r: fmt(r.get("accuracy")),
        "Greedy decoding; accuracy over all evaluation records.",
    )


def training_table(runs: Sequence[RunResult], order: GridOrder) -> Table:
    """Table 6: training wall-clock (h, with speed-up vs raw) and trainable tokens (M) per source."""
    idx = _index(runs)
    sources = list(order.sources)
    rows = []
    for t, s, m in _pairs(runs, order, sources):
        raw = idx.get((t, s, m, "raw"))
        raw_s = (raw.train or {}).get("wall_clock_s") if raw else None
        times, tokens = [], []
        for src in sources:
            r = idx.get((t, s, m, src))
            train = (r.train or {}) if r else {}
            secs, toks = train.get("wall_clock_s"), train.get("trainable_tokens")
            cell = fmt_hours(secs / 3600.0) if secs is not None else DASH
            if secs and raw_s and src != "raw":
                cell += f" (×{raw_s / secs:.1f})"
            times.append(cell)
            tokens.append(fmt(toks / 1e6, ".3g") if toks is not None else DASH)
        rows.append([t, s, m, *times, *tokens])
    columns = [
        "Teacher",
        "Student",
        "Method",
        *(f"Time (h) {source_label(x)}" for x in sources),
        *(f"Tokens (M) {source_label(x)}" for x in sources),
    ]
    return Table(
        "table6_training",
        "Table 6 — Training wall-clock and trainable tokens",
        columns,
        rows,
        "Time in hours with the speed-up over the raw run in parentheses; tokens are trainable (assistant) "
        "tokens of the source dataset, in millions.",
    )


def plus_minus(block: Mapping[str, Any]) -> str:
    """``accuracy ± 95% CI half-width`` as the paper's Table 7 prints it; older metrics without ``ci95`` get
    1.96 x their ``stderr``."""
    acc = block.get("accuracy")
    if acc is None:
        return DASH
    half = block.get("ci95")
    if half is None:
        half = ci95(block.get("stderr"))
    return f"{acc:.3f} ± {fmt(half)}"


def group_accuracy_table(runs: Sequence[RunResult], order: GridOrder) -> Table:
    """Table 7: per-group accuracy ± 95% CI half-width (1.96 x binomial SE), and overall."""
    done = [r for r in runs if r.eval]
    groups = order_groups(g for r in done for g in (r.eval or {}).get("groups", {}))
    rows = []
    for r in sorted(done, key=lambda r: order.key(r, "tssm")):
        blocks = (r.eval or {}).get("groups", {})
        cells = [plus_minus(blocks.get(g) or {}) for g in groups]
        rows.append([r.teacher, r.student, source_label(r.source), r.method, *cells, plus_minus(r.overall)])
    return Table(
        "table7_group_accuracy",
        "Table 7 — Accuracy per evaluation group (± 95% CI)",
        ["Teacher", "Student", "Data", "Method", *groups, "Overall"],
        rows,
        "± is the 95% confidence-interval half-width, 1.96 x the binomial standard error sqrt(p(1-p)/n), as "
        "in the paper's Table 7; a group with no records prints as a dash.",
    )


def truncation_ablation_table(runs: Sequence[RunResult], order: GridOrder) -> Table:
    """Table 8: length-matched truncation vs. the model-compressed sources (teachers with a truncated run)."""
    sources = ["truncated", *order.compressed(), "raw"]
    with_trunc = {(r.teacher, r.student, r.method) for r in runs if r.source == "truncated"}
    subset = [r for r in runs if (r.teacher, r.student, r.method) in with_trunc]
    return _grid_table(
        "table8_truncation_ablation",
        "Table 8 — Length-matched truncation ablation (overall accuracy)",
        subset,
        order,
        sources,
        lambda r: fmt(r.get("accuracy")),
        "Truncated cuts each raw trace to the token length of the compressed trace of the truncation "
        "compressor; raw is shown for reference.",
    )


def efficiency_table(runs: Sequence[RunResult], order: GridOrder) -> Table:
    """Table 9: inference-time efficiency."""
    rows = []
    for r in sorted((r for r in runs if r.eval), key=lambda r: order.key(r, "tssm")):
        rows.append(
            [
                r.teacher,
                r.student,
                source_label(r.source),
                r.method,
                fmt(r.get("mean_completion_tokens"), ",.0f"),
                fmt(r.get("mean_completion_tokens_excl_truncated"), ",.0f"),
                fmt(r.get("truncation_rate")),
                fmt(r.get("median_reasoning_chars"), ",.0f"),
                fmt(r.get("median_reasoning_tokens"), ",.0f"),
                fmt(r.get("acc_per_1k_tokens"), ".4f"),
            ]
        )
    return Table(
        "table9_inference_efficiency",
        "Table 9 — Inference-time efficiency",
        [
            "Teacher",
            "Student",
            "Data",
            "Method",
            "Avg. compl. tokens (all)",
            "Avg. compl. tokens (excl. trunc.)",
            "Trunc. rate",
            "Med. reason chars",
            "Med. reason tokens",
            "Acc / 1k tokens",
        ],
        rows,
        "Acc / 1k tokens = overall accuracy / mean completion tokens (all records) x 1000.",
    )


def vs_raw_table(runs: Sequence[RunResult], order: GridOrder) -> Table:
    """Retention and per-token efficiency gain vs. the matching raw run, with paired-bootstrap CIs."""
    rows = []
    for r in sorted((r for r in runs if r.vs_raw), key=lambda r: order.key(r, "tssm")):
        v = r.vs_raw
        ci = DASH
        if v.get("ci_low") is not None:
            ci = f"{v['delta']:+.3f} [{v['ci_low']:+.3f}, {v['ci_high']:+.3f}]"
        ret = DASH if v.get("retention") is None else f"{v['retention'] * 100:.1f}%"
        if v.get("retention_ci_low") is not None:
            ret += f" [{v['retention_ci_low'] * 100:.1f}, {v['retention_ci_high'] * 100:.1f}]"
        gain = DASH if v.get("efficiency_gain") is None else f"×{v['efficiency_gain']:.2f}"
        rows.append(
            [
                r.teacher,
                r.student,
                source_label(r.source),
                r.method,
                fmt(r.get("accuracy")),
                fmt(v.get("raw_accuracy")),
                ret,
                ci,
                fmt(v.get("p_not_worse"), ".3f"),
                fmt(r.get("acc_per_1k_tokens"), ".4f"),
                gain,
                str(v.get("n_paired", DASH)),
            ]
        )
    return Table(
        "table_vs_raw",
        "Retention and efficiency vs. raw (paired bootstrap)",
        [
            "Teacher",
            "Student",
            "Data",
            "Method",
            "Accuracy",
            "Raw accuracy",
            "Retention [95% CI]",
            "Δ accuracy [95% CI]",
            "P(Δ ≥ 0)",
            "Acc / 1k tokens",
            "Efficiency gain",
            "Paired n",
        ],
        rows,
        "Retention = accuracy / raw accuracy of the same teacher, student and method; efficiency gain = "
        "acc-per-1k-tokens ratio. Intervals: paired bootstrap over the questions both runs answered.",
    )


def judge_table(teacher: str, stats: Mapping[str, Mapping[tuple[str, str], Mapping[str, Any]]]) -> Table:
    """Table 10: judge verdicts per (domain, dataset) for each compressor of one teacher.

    ``stats[compressor][(domain, dataset)]`` = ``{"n", "faithfulness", "faithful", "aligned"}`` with the
    last two as shares; the key ``("Overall", "")`` holds the totals.
    """
    compressors = list(stats)
    keys = sorted({k for per in stats.values() for k in per if k != ("Overall", "")})
    keys.append(("Overall", ""))
    rows = []
    for domain, dataset in keys:
        cells = []
        for c in compressors:
            s = stats[c].get((domain, dataset))
            if not s:
                cells += [DASH] * 4
                continue
            cells += [
                f"{s['n']:,}",
                fmt(s.get("faithfulness"), ".2f"),
                DASH if s.get("faithful") is None else f"{s['faithful'] * 100:.1f}",
                DASH if s.get("aligned") is None else f"{s['aligned'] * 100:.1f}",
            ]
        rows.append([domain, dataset, *cells])
    columns = ["Domain", "Dataset"]
    for c in compressors:
        columns += [f"{c} N", f"{c} Faith.", f"{c} % Faithful", f"{c} % Align"]
    return Table(
        f"table10_judge_{teacher}",
        f"Table 10 — Judge verdicts on compressed traces (teacher {teacher})",
        columns,
        rows,
        "Faith. = mean faithfulness (1-5); % Faithful counts the verdict, not the score; % Align = share with "
        "positive answer_alignment. Rows whose judge output did not parse are excluded from the means.",
    )


def _is_total(row: Mapping[str, Any]) -> bool:
    return row.get("domain") == OVERALL


def compression_table(rows: Sequence[Mapping[str, Any]]) -> Table:
    """Table 2: per (teacher, compressor) mean compressed length and the ratio of means (the paper's ratio)."""
    out = [
        [
            r["teacher"],
            r["compressor"],
            f"{r['n']:,}",
            fmt(r.get("mean_chars"), ",.0f"),
            fmt(r.get("ratio_of_means")),
            fmt(r.get("mean_ratio")),
        ]
        for r in rows
        if _is_total(r)
    ]
    return Table(
        "table2_compression",
        "Table 2 — Compression per teacher and compressor",
        ["Teacher", "Compressor", "Traces", "Length (chars)", "Ratio (of means)", "Mean per-trace ratio"],
        out,
        "Ratio = mean compressed reasoning chars / mean raw reasoning chars (ratio of means, as every ratio in "
        "the paper); the mean of per-trace ratios is shown for reference.",
    )


def compression_by_dataset_table(rows: Sequence[Mapping[str, Any]]) -> Table:
    """Table 5: per (teacher, domain, dataset) and compressor: mean compressed chars, tokens, ratio of means."""
    compressors = list(dict.fromkeys(r["compressor"] for r in rows))
    cells: dict[tuple[str, str, str], dict[str, Mapping[str, Any]]] = {}
    for r in rows:
        cells.setdefault((r["teacher"], r["domain"], r["dataset"]), {})[r["compressor"]] = r
    out = []
    for (teacher, domain, dataset), per in cells.items():
        row = [teacher, domain, dataset]
        for c in compressors:
            x = per.get(c)
            row += (
                [DASH] * 3
                if x is None
                else [
                    fmt(x.get("mean_chars"), ",.0f"),
                    fmt(x.get("mean_tokens"), ",.0f"),
                    fmt(x.get("ratio_of_means")),
                ]
            )
        out.append(row)
    columns = ["Teacher", "Domain", "Dataset"]
    for c in compressors:
        columns += [f"{c} Avg. comp. (chars)", f"{c} Comp. tok", f"{c} Ratio"]
    return Table(
        "table5_compression_by_dataset",
        "Table 5 — Compression per dataset",
        columns,
        out,
        "Ratio = mean compressed chars / mean raw chars of the dataset (ratio of means); tokens in the "
        "compressor's tokenizer. Overall rows span every dataset of the teacher.",
    )


def trace_generation_table(
    rows: Sequence[Mapping[str, Any]], generate: Mapping[str, Mapping[str, Any]] | None = None
) -> Table:
    """Table 4: accepted raw traces per (teacher, domain, dataset), mean reasoning chars and tokens.

    ``generate`` maps a teacher to its ``metrics/generate/T.json``; when present its per-dataset
    ``mean_completion_tokens`` fills the paper's "Avg. Total (tok)" (the hub does not store completion
    tokens; pulled traces have no generate metrics and print a dash).
    """
    out = []
    for r in rows:
        gen = (generate or {}).get(r["teacher"]) or {}
        block = gen.get("overall", {}) if _is_total(r) else gen.get("datasets", {}).get(r["dataset"], {})
        out.append(
            [
                r["teacher"],
                r["domain"],
                r["dataset"],
                f"{r['n']:,}",
                fmt(r.get("mean_chars"), ",.0f"),
                fmt(r.get("mean_tokens"), ",.0f"),
                fmt((block or {}).get("mean_completion_tokens"), ",.0f"),
            ]
        )
    return Table(
        "table4_trace_generation",
        "Table 4 — Trace generation per dataset",
        [
            "Teacher",
            "Domain",
            "Dataset",
            "Total",
            "Avg. reason (chars)",
            "Avg. reason (tok)",
            "Avg. total (tok)",
        ],
        out,
        "Total = verified-correct traces kept; reasoning tokens in the teacher's tokenizer; Avg. total = mean "
        "completion tokens of the accepted attempt (from the generate metrics).",
    )


def datasets_table(prepare: Mapping[str, Any] | None, specs: Mapping[str, Any]) -> Table:
    """Table 1: per dataset its domain, answer type, splits and question counts (``metrics/prepare.json``).

    ``specs`` maps a dataset id to an object with ``domain``, ``answer_type``, ``train_splits`` and
    ``eval_splits`` (``benchmarks.registry.SPECS``).
    """
    per = (prepare or {}).get("datasets", {})
    out = []
    for ds, counts in per.items():
        spec = specs.get(ds)

        def attr(name: str, spec: Any = spec) -> str:
            v = getattr(spec, name, None)
            return DASH if not v else ", ".join(v) if isinstance(v, tuple | list) else str(v)

        out.append(
            [
                attr("domain"),
                ds,
                attr("answer_type"),
                attr("train_splits"),
                attr("eval_splits"),
                f"{counts.get('train', 0):,}" if counts.get("train") else DASH,
                f"{counts.get('eval', 0):,}" if counts.get("eval") else DASH,
            ]
        )
    out.sort(key=lambda r: (r[0], r[1]))
    return Table(
        "table1_datasets",
        "Table 1 — Datasets",
        ["Domain", "Dataset", "Answer type", "Train split", "Eval split", "Train", "Eval"],
        out,
        "Question counts after de-duplication, train/eval overlap removal and caps (metrics/prepare.json); "
        "a dash: the dataset has no such split.",
    )


def compute_table(runs: Sequence[RunResult], order: GridOrder) -> Table:
    """Table 11: GPUs, wall-clock, GPU-hours and trainable tokens per training run, with the paper's totals."""
    done = sorted((r for r in runs if r.train), key=lambda r: order.key(r, "tsms"))
    out = []
    for r in done:
        t = r.train or {}
        secs, toks = t.get("wall_clock_s"), t.get("trainable_tokens")
        out.append(
            [
                r.teacher,
                r.student,
                r.method,
                source_label(r.source),
                fmt(t.get("gpus", t.get("world_size")), "d"),
                fmt_hours(secs / 3600.0) if secs is not None else DASH,
                fmt_hours(t.get("gpu_hours")),
                fmt(toks / 1e6, ".3g") if toks is not None else DASH,
            ]
        )
    totals = aggregate.compute_totals(aggregate.runs_frame(done))
    for label, key in (
        ("main grid", "main_grid"),
        ("truncation ablation", "truncation_ablation"),
        ("all", "all"),
    ):
        out.append(["total", label, "", "", "", "", fmt_hours(totals[key]), ""])
    return Table(
        "table11_compute",
        "Table 11 — Compute per training run",
        ["Teacher", "Student", "Method", "Data", "GPUs", "Time (h)", "GPU-h", "Trainable tokens (M)"],
        out,
        "GPU-h = wall-clock x GPUs of the job; the main grid is every run but the truncation ablation (the paper: "
        "264.9 + 16.0 = 280.9 H100-h). CPU runs hold 0 GPUs.",
    )


def failure_mode_table(rows: Sequence[Mapping[str, Any]]) -> Table:
    """Paper Appendix G.2: how often the judge tagged each failure mode, per (teacher, compressor)."""
    out = []
    for r in rows:
        judged = r["judged"]

        def share(count: int, judged: int = judged) -> str:
            return f"{count:,} ({count / judged * 100:.1f}%)" if judged else DASH

        out.append(
            [
                r["teacher"],
                r["compressor"],
                f"{judged:,}",
                share(r["not_faithful"]),
                *(share(r[m]) for m in FAILURE_MODES),
            ]
        )
    return Table(
        "table_failure_modes",
        "Failure modes of compressed traces (judge, Appendix G.2)",
        ["Teacher", "Compressor", "Judged", "Not faithful", *FAILURE_MODES],
        out,
        "Counts of traces the judge tagged with each mode (a trace may carry several), with the share of judged "
        "traces; judge outputs that did not parse are excluded.",
    )


HEADLINES = (
    # key, label, how a value prints, the paper's range
    ("compressed_length", "Compressed length (% of raw chars, ratio of means)", "pct1", "8.6–21.0%"),
    ("training_token_fraction", "Training tokens (% of raw)", "pct0", "12–30%"),
    ("training_speedup", "Training speed-up (× raw wall-clock)", "x1", "2.0–7.6×"),
    ("output_shortening", "Output shortening (× raw median reasoning tokens)", "x0", "3–19×"),
)


def headline_value(value: float | None, style: str) -> str:
    if value is None:
        return DASH
    if style.startswith("pct"):
        return f"{value * 100:.{style[3:]}f}%"
    return f"{value:.{style[1:]}f}×"


def headline_range(r: Mapping[str, Any], style: str) -> str:
    if not r.get("n"):
        return DASH
    lo, hi = headline_value(r["min"], style), headline_value(r["max"], style)
    return hi if lo == hi else f"{lo.rstrip('%×')}–{hi}"


def headline_table(ranges: Mapping[str, Mapping[str, Any]]) -> Table:
    """The abstract's ranges computed from this grid, beside the paper's."""
    out = [
        [label, headline_range(ranges.get(key, {}), style), str(ranges.get(key, {}).get("n", 0)), paper]
        for key, label, style, paper in HEADLINES
    ]
    return Table(
        "table_headline_ranges",
        "Headline ranges",
        ["Quantity", "This grid", "Pairs", "Paper"],
        out,
        "Over compressed runs with a raw run of the same teacher, student and method (training tokens, speed-up, "
        "output shortening) and over (teacher, compressor) pairs (compressed length).",
    )


def domain_gap_table(rows: Sequence[Mapping[str, Any]], order: GridOrder) -> Table:
    """§6.4: accuracy of each source minus the raw run's, per evaluation group, in points (the mean over
    seeds when the grid has a seeds axis)."""
    groups = order_groups(r["group"] for r in rows)
    cells: dict[tuple[str, str, str, str], dict[str, float]] = {}
    for r in rows:
        cells.setdefault((r["teacher"], r["student"], r["method"], r["source"]), {})[r["group"]] = r["gap"]

    def key(k: tuple[str, str, str, str]) -> tuple[int, ...]:
        return order.key(RunResult("", *k), "tssm")

    out = [
        [t, s, source_label(src), m, *(fmt(per.get(g), "+.1f") for g in groups)]
        for (t, s, m, src), per in sorted(cells.items(), key=lambda kv: key(kv[0]))
    ]
    return Table(
        "table_domain_gaps",
        "Per-domain accuracy gap vs. raw (§6.4)",
        ["Teacher", "Student", "Data", "Method", *groups],
        out,
        "Accuracy of the source minus accuracy of the raw run of the same teacher, student and method (and "
        "seed; the mean over grid.seeds), in points per evaluation group; negative = raw is better.",
    )


def _mean_std(values: Sequence[float]) -> tuple[str, str]:
    """Mean and sample standard deviation (n - 1; a dash below 2 values) as printed cells."""
    if not values:
        return DASH, DASH
    mean = sum(values) / len(values)
    if len(values) < 2:
        return fmt(mean), DASH
    return fmt(mean), fmt((sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5)


def seed_spread_table(runs: Sequence[RunResult], order: GridOrder) -> Table:
    """Beyond the paper (``grid.seeds``): per run group (teacher, student, method, source) the mean and the
    spread across seeds of the overall accuracy and of the training FLOPs reached."""
    groups: dict[tuple[str, str, str, str], list[RunResult]] = {}
    for r in sorted(runs, key=lambda r: order.key(r, "tssm")):
        groups.setdefault((r.teacher, r.student, r.method, r.source), []).append(r)
    rows = []
    for (t, s, m, src), members in groups.items():
        accs = [float(a) for r in members if (a := r.get("accuracy")) is not None]
        flops = [float(f) for r in members if (f := (r.train or {}).get("train_flops")) is not None]
        seeds = ", ".join(DASH if r.seed is None else str(r.seed) for r in members)
        acc_mean, acc_std = _mean_std(accs)
        rows.append(
            [
                t,
                s,
                source_label(src),
                m,
                seeds,
                str(len(accs)),
                acc_mean,
                acc_std,
                f"{min(accs):.3f}–{max(accs):.3f}" if accs else DASH,
                f"{sum(flops) / len(flops):.3g}" if flops else DASH,
            ]
        )
    return Table(
        "table_seed_spread",
        "Spread across seeds (beyond the paper)",
        [
            "Teacher",
            "Student",
            "Data",
            "Method",
            "Seeds",
            "n",
            "Acc. mean",
            "Acc. std",
            "Acc. range",
            "Train FLOPs mean",
        ],
        rows,
        "Each run group trained once per grid.seeds seed (the seed replaces train.seed: row order, validation "
        "split, initialisation); n = evaluated seeds, std the sample standard deviation (n - 1), a dash for "
        "n < 2. Other tables show the first seed of each group.",
    )


def cost_table(ledger: Mapping[str, Any]) -> Table:
    """Cost ledger: GPU-hours and CPU-hours per stage of the current plan; ignored metrics files in the note."""
    gpu, cpu = ledger["gpu_hours"], ledger.get("cpu_hours", {})
    stages = sorted(set(gpu) | set(cpu))
    rows = [[stage, fmt(gpu.get(stage, 0.0), ".3f"), fmt(cpu.get(stage, 0.0), ".3f")] for stage in stages]
    rows.append(
        ["total", fmt(ledger["total_gpu_hours"], ".3f"), fmt(ledger.get("total_cpu_hours", 0.0), ".3f")]
    )
    note = (
        f"Energy {ledger['energy_kwh']:.3f} kWh at {ledger['watts_per_gpu_hour']:g} W per GPU-hour; "
        f"{ledger['co2_kg']:.3f} kg CO2eq at {ledger['g_co2_per_kwh']:g} g/kWh. Stages of the current plan "
        "only; CPU-hours are wall-clock hours of runs that held no GPU (machine-hours, not core-hours)."
    )
    if ledger.get("not_in_plan"):
        note += " Ignored, not in the current plan: " + ", ".join(ledger["not_in_plan"]) + "."
    return Table("table_cost", "Cost ledger", ["Stage", "GPU-hours", "CPU-hours"], rows, note)


def cap_sensitivity_table(
    runs: Sequence[RunResult], at_caps: Mapping[str, Sequence[Mapping[str, Any]]], order: GridOrder
) -> Table:
    """Beyond the paper: each run at its decoding cap and at every ``evaluate.extra_caps`` cap (``at_caps``:
    run -> those eval metrics), accuracy on all records next to the records that stopped on their own."""
    rows = []
    for r in sorted((r for r in runs if r.eval), key=lambda r: order.key(r, "tssm")):
        for m in [r.eval or {}, *sorted(at_caps.get(r.run, []), key=lambda m: m.get("max_new_tokens") or 0)]:
            o = m.get("overall") or {}
            rows.append(
                [
                    r.teacher,
                    r.student,
                    source_label(r.source),
                    r.method,
                    fmt(m.get("max_new_tokens"), ",d"),
                    fmt(o.get("accuracy")),
                    fmt(o.get("accuracy_stopped")),
                    f"{fmt(o.get('n_stopped'), 'd')}/{fmt(o.get('n'), 'd')}",
                    fmt(o.get("truncation_rate")),
                ]
            )
    return Table(
        "table_cap_sensitivity",
        "Decoding-cap sensitivity (beyond the paper)",
        [
            "Teacher",
            "Student",
            "Data",
            "Method",
            "Cap (tokens)",
            "Acc. (all)",
            "Acc. (stopped)",
            "Stopped/N",
            "Trunc. rate",
        ],
        rows,
        "Every run at its decoding cap and at each evaluate.extra_caps cap. Acc. (stopped): accuracy on the "
        "records that ended on their own, not cut at the cap; the gap to Acc. (all) is what the cap costs.",
    )
