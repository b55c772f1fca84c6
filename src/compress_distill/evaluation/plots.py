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
COMPRESSION_HIST = "compression_ratio_hist.csv"
LOSS_CURVES = "loss_curves.csv"
RATIO_BIN_WIDTH = 0.05  # compression ratio (chars / raw chars) per histogram bin


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
                "run": r.run,
                "teacher": r.teacher,
                "student": r.student,
                "method": r.method,
                "source": r.source,
                "median_reasoning_tokens": tokens,
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
def _pyplot():  # type: ignore[no-untyped-def]
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
            max(float(r["median_reasoning_tokens"]), 0.5),  # log axis: answer-only runs have 0 reasoning
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
    ax.set_xlabel("median reasoning tokens (log)")
    ax.set_ylabel("overall accuracy")
    ax.set_title("Accuracy vs. median reasoning tokens")
    ax.grid(alpha=0.3)
    return _svg(fig)


def svg_compression_hist(ratios: Mapping[tuple[str, str], Sequence[float]]) -> str:
    if not ratios:
        return _placeholder("No compressed traces found under the hub directory.")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.0, 3.8))
    for (teacher, compressor), values in ratios.items():
        counts = histogram(values, RATIO_BIN_WIDTH)
        total = sum(c for _, c in counts) or 1
        xs = [i * RATIO_BIN_WIDTH for i in range(len(counts))]
        ax.step(
            xs, [c / total for _, c in counts], where="post", label=f"{teacher} / {compressor} (n={total})"
        )
    ax.set_xlabel(f"compression ratio (chars vs raw), bins of {RATIO_BIN_WIDTH}; last bin: >= 1")
    ax.set_ylabel("share of traces")
    ax.set_title("Compression-ratio distribution")
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
