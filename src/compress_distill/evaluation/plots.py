"""Plot data for DVC (CSV under ``plots/report/``) and the same figures as inline SVG for the HTML report.

The CSVs are what ``dvc plots show`` / ``dvc plots diff`` read (declared in dvc.yaml's top-level ``plots``);
the SVGs are drawn with matplotlib's Agg/SVG backend (imported lazily) with a fixed hash salt and no date,
so the same data gives byte-identical figures.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from compress_distill.evaluation.metrics import histogram
from compress_distill.evaluation.tables import RunResult, source_label
from compress_distill.schema import atomic_path

ACCURACY_VS_TOKENS = "accuracy_vs_tokens.csv"
ACCURACY_VS_FLOPS = "accuracy_vs_flops.csv"
COMPRESSION_HIST = "compression_ratio_hist.csv"
LOSS_CURVES = "loss_curves.csv"
LENGTHS_BY_DATASET = "lengths_by_dataset.csv"
LENGTH_HIST = "compressed_length_hist.csv"
RATIO_BIN_WIDTH = 0.05  # compression ratio (chars / raw chars) per histogram bin
# Figure 2 bins, in tokens: log-spaced edges so raw (thousands) and compressed (hundreds) lengths share an
# axis; the paper's reading point is 500 tokens ("all but the longest 10% ... shorter than 500")
LENGTH_EDGES = (0, 50, 100, 200, 300, 500, 750, 1000, 1500, 2000, 3000, 5000, 7500, 10000, 15000, 20000)


def write_csv(path: Path, rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> Path:
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


# --------------------------------------------------------------------------------------------- data
def accuracy_vs_tokens_rows(runs: Iterable[RunResult]) -> list[dict[str, Any]]:
    """Figure 4: one point per evaluated run."""
    rows = []
    for r in runs:
        acc, tokens = r.get("accuracy"), r.get("median_reasoning_tokens")
        if acc is None or tokens is None:
            continue
        rows.append(
            {
                **r.coordinates(),
                "median_reasoning_tokens": tokens,
                "accuracy": round(acc, 6),
            }
        )
    return rows


def accuracy_vs_flops_rows(runs: Iterable[RunResult]) -> list[dict[str, Any]]:
    """Compute-matched view (beyond the paper): one point per run with train and eval FLOPs (flops.py)."""
    rows = []
    for r in runs:
        acc = r.get("accuracy")
        train = (r.train or {}).get("train_flops")
        infer = (r.eval or {}).get("inference_flops")
        if acc is None or train is None or infer is None:
            continue
        rows.append(
            {
                **r.coordinates(),
                "train_flops": train,
                "inference_flops": infer,
                "total_flops": train + infer,
                "accuracy": round(acc, 6),
            }
        )
    return rows


def compression_hist_rows(ratios: Mapping[tuple[str, str], Sequence[float]]) -> list[dict[str, Any]]:
    """Figure 2: compression-ratio counts per (teacher, compressor) in fixed bins.

    ``bin`` carries the pair as a prefix so DVC's one-series bar template shows each pair's bins together.
    """
    rows = []
    for (teacher, compressor), values in ratios.items():
        for label, count in histogram(values, RATIO_BIN_WIDTH):
            rows.append(
                {
                    "bin": f"{teacher}/{compressor} {label}",
                    "count": count,
                    "teacher": teacher,
                    "compressor": compressor,
                    "range": label,
                }
            )
    return rows


def lengths_by_dataset_rows(
    generation: Sequence[Mapping[str, Any]], compression: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """Figure 1: mean reasoning chars per (teacher, dataset) of the raw traces and of each compressor."""
    rows = [
        {
            "teacher": r["teacher"],
            "dataset": r["dataset"] or r["domain"],
            "series": "raw",
            "mean_chars": r["mean_chars"],
        }
        for r in generation
    ]
    rows += [
        {
            "teacher": r["teacher"],
            "dataset": r["dataset"] or r["domain"],
            "series": r["compressor"],
            "mean_chars": r["mean_chars"],
        }
        for r in compression
    ]
    return rows


def length_label(i: int) -> str:
    """Zero-padded bin labels (``00050-00100``; last ``>=20000``) so they sort numerically as text."""
    if i == len(LENGTH_EDGES) - 1:
        return f">={LENGTH_EDGES[-1]:05d}"
    return f"{LENGTH_EDGES[i]:05d}-{LENGTH_EDGES[i + 1]:05d}"


def length_bin(tokens: float) -> int:
    return next(
        (i for i in range(len(LENGTH_EDGES) - 1) if tokens < LENGTH_EDGES[i + 1]), len(LENGTH_EDGES) - 1
    )


def length_hist_rows(lengths: Mapping[tuple[str, str], Sequence[float]]) -> list[dict[str, Any]]:
    """Figure 2: trace counts per token-length bin for each (teacher, series), series = raw or a compressor."""
    rows = []
    for (teacher, series), values in lengths.items():
        counts = [0] * len(LENGTH_EDGES)
        for v in values:
            counts[length_bin(v)] += 1
        rows += [
            {
                "bin": f"{teacher}/{series} {length_label(i)}",
                "count": c,
                "teacher": teacher,
                "series": series,
                "range": length_label(i),
            }
            for i, c in enumerate(counts)
        ]
    return rows


def read_dvclive_curves(
    train_plots_dir: Path, runs: Iterable[str]
) -> dict[str, dict[str, list[tuple[float, float]]]]:
    """``{run: {metric: [(step, value), ...]}}`` from dvclive TSVs (``plots/train/RUN/plots/metrics/**.tsv``).

    Only metrics whose name contains "loss" are kept (Figure 3); runs without curves are absent.
    """
    curves: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for run in runs:
        root = train_plots_dir / run
        if not root.is_dir():
            continue
        for tsv in sorted(root.rglob("*.tsv")):
            metric = tsv.stem
            if "loss" not in metric:
                continue
            rel = tsv.relative_to(root).with_suffix("").as_posix()
            name = rel.split("plots/metrics/", 1)[-1]
            with open(tsv, encoding="utf-8", newline="") as fh:
                reader = csv.DictReader(fh, delimiter="\t")
                if (
                    not reader.fieldnames
                    or "step" not in reader.fieldnames
                    or metric not in reader.fieldnames
                ):
                    raise ValueError(
                        f"{tsv}: expected dvclive columns 'step' and {metric!r}, found {reader.fieldnames}; "
                        "re-run the train stage"
                    )
                points = [(float(row["step"]), float(row[metric])) for row in reader if row[metric] != ""]
            if points:
                curves.setdefault(run, {})[name] = points
    return curves


def loss_rows(curves: Mapping[str, Mapping[str, Sequence[tuple[float, float]]]]) -> list[dict[str, Any]]:
    return [
        {"run": run, "metric": metric, "step": step, "loss": value}
        for run, per in curves.items()
        for metric, points in per.items()
        for step, value in points
    ]


# --------------------------------------------------------------------------------------------- SVG
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.hashsalt": "compress-distill", "svg.fonttype": "none", "font.size": 9})
    return plt


def _svg(fig: Any) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None}, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    text = buf.getvalue()
    # inline SVG in HTML: drop the XML prolog and DOCTYPE, keep the <svg> element
    return text[text.index("<svg") :]


def _placeholder(message: str) -> str:
    import html

    return f'<p class="empty">{html.escape(message)}</p>'


def svg_accuracy_vs_tokens(rows: Sequence[Mapping[str, Any]]) -> str:
    return _svg_accuracy_scatter(
        rows,
        "median_reasoning_tokens",
        "median reasoning tokens (log)",
        "Accuracy vs. median reasoning tokens",
    )


def svg_accuracy_vs_flops(rows: Sequence[Mapping[str, Any]]) -> str:
    return _svg_accuracy_scatter(
        rows, "total_flops", "total FLOPs, training + evaluation (log)", "Accuracy vs. total compute"
    )


def _svg_accuracy_scatter(rows: Sequence[Mapping[str, Any]], x: str, xlabel: str, title: str) -> str:
    """One point per run: shape = data source, colour = student, hollow = LoRA; log x."""
    if not rows:
        return _placeholder("No evaluated runs yet.")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.0, 4.2))
    sources = list(dict.fromkeys(r["source"] for r in rows))
    students = list(dict.fromkeys(r["student"] for r in rows))
    markers = "osD^v<>PX*"
    cmap = plt.get_cmap("tab10")
    for r in rows:
        ax.scatter(
            max(float(r[x]), 0.5),  # log axis: answer-only runs have 0 reasoning tokens
            float(r["accuracy"]),
            marker=markers[sources.index(r["source"]) % len(markers)],
            color=cmap(students.index(r["student"]) % 10),
            facecolors="none" if r["method"] == "lora" else None,
            s=36,
        )
    from matplotlib.lines import Line2D

    handles = [
        Line2D([], [], marker=markers[i % len(markers)], linestyle="", color="gray", label=source_label(s))
        for i, s in enumerate(sources)
    ] + [
        Line2D([], [], marker="o", linestyle="", color=cmap(i % 10), label=s) for i, s in enumerate(students)
    ]
    ax.legend(
        handles=handles,
        fontsize=7,
        loc="best",
        title="shape: data, colour: student; hollow = LoRA",
        title_fontsize=7,
    )
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("overall accuracy")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return _svg(fig)


def svg_lengths_by_dataset(rows: Sequence[Mapping[str, Any]]) -> str:
    """Figure 1: per teacher, mean reasoning chars per dataset, raw against each compressor (log x)."""
    if not rows:
        return _placeholder("No trace datasets found under the hub directory.")
    plt = _pyplot()
    teachers = list(dict.fromkeys(r["teacher"] for r in rows))
    series = list(dict.fromkeys(r["series"] for r in rows))
    fig, axes = plt.subplots(1, len(teachers), figsize=(7.0, 0.6 + 0.32 * _n_datasets(rows)), squeeze=False)
    cmap = plt.get_cmap("tab10")
    height = 0.8 / max(len(series), 1)
    for ax, teacher in zip(axes[0], teachers, strict=True):
        mine = [r for r in rows if r["teacher"] == teacher]
        datasets = list(dict.fromkeys(r["dataset"] for r in mine))
        for k, name in enumerate(series):
            values = {r["dataset"]: r["mean_chars"] for r in mine if r["series"] == name}
            ys = [i + k * height for i, d in enumerate(datasets) if values.get(d)]
            xs = [values[d] for d in datasets if values.get(d)]
            ax.barh(ys, xs, height=height, color=cmap(k % 10), label=name)
        ax.set_yticks([i + height * (len(series) - 1) / 2 for i in range(len(datasets))], datasets)
        ax.invert_yaxis()
        ax.set_xscale("log")
        ax.set_xlabel("mean reasoning chars (log)")
        ax.set_title(f"teacher {teacher}")
        ax.grid(alpha=0.3, axis="x")
    axes[0][0].legend(fontsize=7)
    return _svg(fig)


def _n_datasets(rows: Sequence[Mapping[str, Any]]) -> int:
    per: dict[str, set[str]] = {}
    for r in rows:
        per.setdefault(r["teacher"], set()).add(r["dataset"])
    return max((len(v) for v in per.values()), default=1) * max(len({r["series"] for r in rows}), 1)


def svg_length_hist(
    lengths: Mapping[tuple[str, str], Sequence[float]], p90: Mapping[tuple[str, str], float]
) -> str:
    """Figure 2: distribution of reasoning lengths (tokens) of raw and compressed traces, with each p90."""
    if not lengths:
        return _placeholder("No trace datasets found under the hub directory.")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.0, 3.8))
    xs = [LENGTH_EDGES[1] / 2, *LENGTH_EDGES[1:]]  # log axis: the first bin (0-50) drawn from 25
    for (teacher, series), values in lengths.items():
        counts = [0] * len(LENGTH_EDGES)
        for v in values:
            counts[length_bin(v)] += 1
        total = sum(counts) or 1
        q = p90.get((teacher, series))
        label = f"{teacher} / {series} (n={total}" + (f", p90 {q:,.0f})" if q is not None else ")")
        ax.step(
            xs, [c / total for c in counts], where="post", ls="--" if series == "raw" else "-", label=label
        )
    ax.axvline(500, color="gray", lw=0.8, ls=":")
    ax.set_xscale("log")
    ax.set_xlabel(f"reasoning length (tokens, log); last bin: >= {LENGTH_EDGES[-1]:,}")
    ax.set_ylabel("share of traces")
    ax.set_title("Reasoning length before and after compression")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return _svg(fig)


def svg_loss_curves(
    curves: Mapping[str, Mapping[str, Sequence[tuple[float, float]]]], runs: Mapping[str, RunResult]
) -> str:
    if not curves:
        return _placeholder("No training loss curves found (dvclive TSVs under plots/train/RUN/).")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.0, 4.0))
    cmap = plt.get_cmap("tab10")
    sources = list(dict.fromkeys(runs[r].source for r in curves if r in runs))
    for run, per in curves.items():
        info = runs.get(run)
        color = cmap(sources.index(info.source) % 10) if info else "gray"
        style = "--" if info and info.method == "lora" else "-"
        for metric, points in per.items():
            if not metric.endswith("loss") or "eval" in metric:
                continue
            # validation loss (train.val_fraction): markers at the steps it was measured, same colour
            fmt = "o" + style if metric.endswith("val_loss") else style
            ax.plot([p[0] for p in points], [p[1] for p in points], fmt, color=color, lw=1, alpha=0.8, ms=3)
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=cmap(i % 10), label=source_label(s)) for i, s in enumerate(sources)]
    handles += [
        Line2D([], [], color="gray", ls="--", label="LoRA"),
        Line2D([], [], color="gray", label="full"),
        Line2D([], [], color="gray", marker="o", ms=3, ls="", label="validation"),
    ]
    ax.legend(handles=handles, fontsize=7)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss")
    ax.set_title("Training loss per run")
    ax.grid(alpha=0.3)
    return _svg(fig)
