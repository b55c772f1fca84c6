"""report stage on synthetic grids: summary, paper tables, plot data for dvc.yaml, cost ledger, CLI."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from typer.testing import CliRunner

from compress_distill.config import Params, load_params
from compress_distill.evaluation import tables
from compress_distill.plan import expand
from compress_distill.stages import report
from tests.helpers.synthetic import write_grid

REPO = Path(__file__).resolve().parents[2]


def run_report(params: Params, root: Path) -> dict[str, Any]:
    """The report stage over the folders of ``root`` laid out as the demo's dvc.yaml lays them out."""
    return report.run(
        params,
        root / "metrics",
        root / "data/predictions",
        root / "data/hub",
        root / "reports",
        root / "plots/report",
        root / "metrics/summary.json",
        root / "plots/train",
    )


def build(root: Path, params_file: str = "params.yaml", **kw):  # type: ignore[no-untyped-def]
    params = load_params(REPO / params_file)
    write_grid(root, params, **kw)
    return params, run_report(params, root)


def rows_of(md: Path) -> list[list[str]]:
    lines = [ln for ln in md.read_text().splitlines() if ln.startswith("|")]
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in lines[2:]]


def test_demo_grid_summary_tables_and_plots(tmp_path: Path) -> None:
    params, s = build(tmp_path, n_questions=120, n_traces=30)
    runs = expand(params)["runs"]
    assert s["rows_in"] == len(runs) == s["rows_out"] and s["rejects"] == {}
    on_disk = json.loads((tmp_path / "metrics/summary.json").read_text())
    assert on_disk["runs"].keys() == runs.keys()

    # retention / efficiency gain against the raw run of the same teacher, student, method
    raw_run = "smol-smol-lora-raw"
    raw = json.loads((tmp_path / f"metrics/eval/{raw_run}.json").read_text())["overall"]
    for name in runs:
        row = on_disk["runs"][name]
        m = json.loads((tmp_path / f"metrics/eval/{name}.json").read_text())["overall"]
        assert row["accuracy"] == pytest.approx(m["accuracy"])
        if name == raw_run:
            assert "retention_vs_raw" not in row
            continue
        assert row["retention_vs_raw"] == pytest.approx(m["accuracy"] / raw["accuracy"])
        assert row["efficiency_gain_vs_raw"] == pytest.approx(
            m["acc_per_1k_tokens"] / raw["acc_per_1k_tokens"]
        )
        assert row["delta_vs_raw_ci_low"] <= row["delta_vs_raw"] <= row["delta_vs_raw_ci_high"]
        assert row["delta_vs_raw"] == pytest.approx(m["accuracy"] - raw["accuracy"])  # same questions
        assert row["train_wall_clock_s"] > 0

    # the numbers in summary.json are all flat numbers (DVC drops lists)
    def walk(v):  # type: ignore[no-untyped-def]
        if isinstance(v, dict):
            for x in v.values():
                walk(x)
        else:
            assert v is None or isinstance(v, int | float), v

    walk(on_disk)

    # cost ledger: train (8 GPU x h per synthetic run) + eval + generate; metrics/bench is not a stage
    cost = on_disk["cost"]
    assert set(cost["gpu_hours"]) == {"eval", "generate", "train"}
    assert cost["gpu_hours"]["generate"] == pytest.approx(348.0)
    assert cost["total_gpu_hours"] == pytest.approx(sum(cost["gpu_hours"].values()))
    assert cost["energy_kwh"] == pytest.approx(cost["total_gpu_hours"] * 0.805)
    assert cost["co2_kg"] == pytest.approx(cost["energy_kwh"] * 0.079)

    # tables
    reports = tmp_path / "reports"
    t3 = rows_of(reports / "table3_overall_accuracy.md")
    assert t3 == [
        [
            "smol",
            "smol",
            "lora",
            f"{on_disk['runs'][raw_run]['accuracy']:.3f}",
            f"{on_disk['runs']['smol-smol-lora-compressed-concise']['accuracy']:.3f}",
            f"{on_disk['runs']['smol-smol-lora-compressed-terse']['accuracy']:.3f}",
            f"{on_disk['runs']['smol-smol-lora-compressed-verified']['accuracy']:.3f}",
        ]
    ]
    t7 = (reports / "table7_group_accuracy.md").read_text()
    assert "| Math | Science | Medicine | Commonsense | OOD-Reasoning | OOD-Knowledge | Overall |" in t7
    assert len(rows_of(reports / "table7_group_accuracy.md")) == len(runs)
    assert len(rows_of(reports / "table9_inference_efficiency.md")) == len(runs)
    assert len(rows_of(reports / "table8_truncation_ablation.md")) == 1
    assert len(rows_of(reports / "table_vs_raw.md")) == len(runs) - 1
    judge = rows_of(reports / "table10_judge_smol.md")
    assert judge[-1][0] == "Overall" and judge[-1][2] == "30"
    assert (reports / "tables.md").read_text().count("## Table") >= 7
    assert (reports / "index.html").stat().st_size > 10_000

    # plot CSVs carry the columns dvc.yaml's top-level plots declare
    dvc = yaml.safe_load((REPO / "dvc.yaml").read_text())
    for entry in dvc["plots"]:
        (spec,) = entry.values()
        for path, y in spec["y"].items():
            with open(tmp_path / path) as fh:
                header = next(csv.reader(fh))
            assert spec["x"] in header and y in header, (path, header)
    with open(tmp_path / "plots/report/accuracy_vs_tokens.csv") as fh:
        assert len(list(csv.DictReader(fh))) == len(runs)
    with open(tmp_path / "plots/report/loss_curves.csv") as fh:
        assert {r["run"] for r in csv.DictReader(fh)} == set(runs)
    # compute-matched view: one point per run, total = train (6·N·tokens) + eval (2·N·generated tokens)
    with open(tmp_path / "plots/report/accuracy_vs_flops.csv") as fh:
        points = {r["run"]: r for r in csv.DictReader(fh)}
    assert points.keys() == set(runs)
    for name, p in points.items():
        train = json.loads((tmp_path / f"metrics/train/{name}.json").read_text())["train_flops"]
        assert float(p["total_flops"]) == pytest.approx(train + float(p["inference_flops"]))
    assert "Accuracy vs. total compute" in (reports / "index.html").read_text()


def test_partial_grid_and_missing_hub(tmp_path: Path) -> None:
    params = load_params(REPO / "params.yaml")
    runs = list(expand(params)["runs"])
    write_grid(tmp_path, params, n_questions=40, n_traces=10, missing=(runs[0],))  # the raw run is missing
    s = report.run(
        params,
        tmp_path / "metrics",
        tmp_path / "data/predictions",
        tmp_path / "nowhere",
        tmp_path / "reports",
        tmp_path / "plots/report",
        tmp_path / "metrics/summary.json",
        tmp_path / "no-live",
    )
    assert s["rows_in"] == len(runs) and s["rows_out"] == len(runs) - 1
    assert s["rejects"] == {"missing_eval_metrics": 1}
    assert s["judge"] == {} and s["compression"] == {}
    assert not list((tmp_path / "reports").glob("table10_*.md"))
    t3 = rows_of(tmp_path / "reports/table3_overall_accuracy.md")
    assert t3[0][3] == "—"  # no raw run yet
    assert rows_of(tmp_path / "reports/table_vs_raw.md") == [["(no runs yet)", *[""] * 11]]


def test_paper_grid_55_runs(tmp_path: Path) -> None:
    _, s = build(tmp_path, "configs/paper.yaml", n_questions=60, n_traces=20)
    assert s["rows_out"] == 55
    reports = tmp_path / "reports"
    assert len(rows_of(reports / "table3_overall_accuracy.md")) == 14  # 7 student/method pairs x 2 teachers
    assert len(rows_of(reports / "table7_group_accuracy.md")) == 55
    assert len(rows_of(reports / "table8_truncation_ablation.md")) == 7  # Qwen-teacher ablation
    assert len(rows_of(reports / "table_vs_raw.md")) == 55 - 14
    assert {p.name for p in reports.glob("table10_*.md")} == {
        "table10_judge_qwen397b.md",
        "table10_judge_gptoss120b.md",
    }


def test_cli_matches_dvc_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    params = load_params(REPO / "params.yaml")
    write_grid(tmp_path, params, n_questions=30, n_traces=8)
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    dvc = yaml.safe_load((REPO / "dvc.yaml").read_text())
    argv = dvc["stages"]["report"]["cmd"].split()
    assert argv[:2] == ["compress-distill", "report"]
    app = typer.Typer()
    app.command()(report.main)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, argv[2:])
    assert result.exit_code == 0, result.output
    assert "6/6 runs" in result.output
    assert (tmp_path / "reports/index.html").exists() and (tmp_path / "metrics/summary.json").exists()


def test_gpu_hours_of_prefers_the_stage_total() -> None:
    assert report.gpu_hours_of({"gpu_hours": 2.0, "llm_gpu_hours": 2.0}) == 2.0
    assert report.gpu_hours_of({"llm_gpu_hours": 1.5, "rows_in": 3}) == 1.5
    assert report.gpu_hours_of({"gpu_hours": True}) is None
    assert report.gpu_hours_of({"rows_in": 3}) is None


def test_report_before_any_run(tmp_path: Path) -> None:
    s = report.run(
        load_params(REPO / "params.yaml"),
        tmp_path / "metrics",
        tmp_path / "preds",
        tmp_path / "hub",
        tmp_path / "reports",
        tmp_path / "plots",
        tmp_path / "metrics/summary.json",
        tmp_path / "live",
    )
    assert s["rows_out"] == 0 and s["rejects"] == {"missing_eval_metrics": 6} and s["runs"] == {}
    assert s["cost"]["total_gpu_hours"] == 0
    # planned rows are listed with dashes; tables of finished runs only are empty
    assert rows_of(tmp_path / "reports/table3_overall_accuracy.md") == [
        ["smol", "smol", "lora", "—", "—", "—", "—"]
    ]
    assert rows_of(tmp_path / "reports/table9_inference_efficiency.md")[0][0] == "(no runs yet)"
    assert (tmp_path / "reports/index.html").exists()


def _stage_metrics(root: Path, rel: str, data: dict) -> None:
    path = root / "metrics" / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"rows_in": 1, "rows_out": 1, "rejects": {}, **data}))


def test_cost_ledger_counts_engine_stages_and_only_planned_runs(tmp_path: Path) -> None:
    params = load_params(REPO / "params.yaml")
    write_grid(tmp_path, params, n_questions=20, n_traces=6)
    # what generate/compress/judge really write: the engine's counters nested under "engine"
    # (docs/architecture.md §5)
    _stage_metrics(
        tmp_path, "generate/smol.json", {"engine": {"llm_gpu_hours": 348.0, "llm_wall_clock_s": 1.0}}
    )
    _stage_metrics(tmp_path, "compress/smol-concise.json", {"engine": {"llm_gpu_hours": 66.5}})
    _stage_metrics(tmp_path, "compress/smol-terse.json", {"engine": {"llm_gpu_hours": 9.2}})
    _stage_metrics(tmp_path, "judge/smol-concise.json", {"engine": {"llm_gpu_hours": 2.0}})
    # runs of an older plan: their metrics files are still on disk
    _stage_metrics(tmp_path, "train/smol-old-full-raw.json", {"gpu_hours": 1000.0, "wall_clock_s": 5.0})
    _stage_metrics(tmp_path, "eval/smol-old-full-raw.json", {"gpu_hours": 10.0})
    _stage_metrics(tmp_path, "compress/smol-gone.json", {"engine": {"llm_gpu_hours": 500.0}})
    s = run_report(params, tmp_path)
    cost = s["cost"]
    planned = expand(params)["runs"]
    train = sum(json.loads((tmp_path / f"metrics/train/{r}.json").read_text())["gpu_hours"] for r in planned)
    assert cost["gpu_hours"]["generate"] == pytest.approx(348.0)
    assert cost["gpu_hours"]["compress"] == pytest.approx(66.5 + 9.2)
    assert cost["gpu_hours"]["judge"] == pytest.approx(2.0)
    assert cost["gpu_hours"]["train"] == pytest.approx(train)
    assert cost["total_gpu_hours"] == pytest.approx(sum(cost["gpu_hours"].values()))
    assert cost["ignored_metrics_files"] == 3
    md = (tmp_path / "reports/table_cost.md").read_text()
    for rel in ("train/smol-old-full-raw.json", "eval/smol-old-full-raw.json", "compress/smol-gone.json"):
        assert rel in md


def test_cost_ledger_reports_cpu_hours_of_cpu_runs(tmp_path: Path) -> None:
    params = load_params(REPO / "params.yaml")
    runs = list(expand(params)["runs"])
    # a CPU-only demo: every stage holds no GPU, so its cost is wall-clock hours on the CPU machine
    _stage_metrics(
        tmp_path,
        "generate/smol.json",
        {"engine": {"llm_gpu_hours": 0.0, "llm_wall_clock_s": 3600.0, "llm_load_s": 360.0}},
    )
    _stage_metrics(tmp_path, f"train/{runs[0]}.json", {"gpu_hours": 0.0, "wall_clock_s": 1800.0, "gpus": 0})
    _stage_metrics(tmp_path, f"eval/{runs[0]}.json", {"gpu_hours": 0.0, "wall_clock_s": 720.0})
    ledger = report.cost_ledger(params, tmp_path / "metrics", params.report, skip=set())
    assert ledger["total_gpu_hours"] == 0.0
    assert ledger["cpu_hours"] == pytest.approx({"generate": 1.1, "train": 0.5, "eval": 0.2})
    assert ledger["total_cpu_hours"] == pytest.approx(1.8)
    assert tables.cost_table(ledger).rows[-1] == ["total", "0.000", "1.800"]


def test_report_has_the_papers_missing_artefacts(tmp_path: Path) -> None:
    params = load_params(REPO / "params.yaml")
    write_grid(tmp_path, params, n_questions=60, n_traces=12)
    _stage_metrics(tmp_path, "prepare.json", {"datasets": {"gsm8k": {"train": 24, "eval": 12}}})
    _stage_metrics(
        tmp_path,
        "generate/smol.json",
        {
            "datasets": {"gsm8k": {"mean_completion_tokens": 1689.0}},
            "overall": {"mean_completion_tokens": 2015.4},
        },
    )
    s = run_report(params, tmp_path)
    reports = tmp_path / "reports"
    keys = [
        "table1_datasets",
        "table2_compression",
        "table4_trace_generation",
        "table5_compression_by_dataset",
        "table11_compute",
        "table_failure_modes",
        "table_headline_ranges",
        "table_domain_gaps",
    ]
    page = (reports / "index.html").read_text()
    for key in keys:
        assert (reports / f"{key}.md").exists() and (reports / f"{key}.csv").exists(), key
        assert f'data-table="{key}"' in page, key
    assert rows_of(reports / "table1_datasets.md") == [
        ["math", "gsm8k", "numeric", "train", "test", "24", "12"]
    ]
    t4 = {(r[0], r[2]): r for r in rows_of(reports / "table4_trace_generation.md")}
    assert t4[("smol", "gsm8k")][6] == "1,689" and t4[("smol", "")][6] == "2,015"
    assert len(rows_of(reports / "table_domain_gaps.md")) == len(expand(params)["runs"]) - 1
    # Table 2 and the summary carry the ratio of means of the hub's traces
    hub = json.loads((tmp_path / "metrics/summary.json").read_text())["compression"]["smol"]["concise"]
    assert s["compression"]["smol"]["concise"] == hub and hub["n"] == 12
    assert rows_of(reports / "table2_compression.md")[0][4] == f"{hub['ratio_of_means']:.3f}"
    assert set(s["headline"]) == {"compressed_length", "training_token_fraction", "training_speedup",
                                  "output_shortening"}  # fmt: skip
    # Figure 2: lengths, not ratios -- every raw and compressed trace counted once per (teacher, series)
    with open(tmp_path / "plots/report/compressed_length_hist.csv") as fh:
        hist = list(csv.DictReader(fh))
    per_series: dict[str, int] = {}
    for row in hist:
        per_series[row["series"]] = per_series.get(row["series"], 0) + int(row["count"])
    assert per_series == {"raw": 12, "concise": 12, "terse": 12}
    assert "Figure 1 analogue" in page and "Figure 2 analogue: distribution of reasoning lengths" in page


def test_cap_sensitivity_table_puts_each_extra_cap_under_its_run(tmp_path: Path) -> None:
    """evaluate.extra_caps: the evaluate_cap metrics (metrics/eval/caps/<run>-cap<N>.json) sit in the report
    under their run, accuracy on all records next to those that stopped on their own; they are planned
    metrics, never "not in plan"."""
    from compress_distill.plan import cap_variant

    params = load_params(REPO / "params.yaml")
    cap = 320  # the demo leaves the cap variants out (they double its evaluations): this test adds one
    params.evaluate.extra_caps = [cap]
    write_grid(tmp_path, params, n_questions=40, n_traces=10)
    run = "smol-smol-lora-raw"
    at_cap = json.loads((tmp_path / f"metrics/eval/{run}.json").read_text())
    at_cap["overall"] |= {
        "accuracy": 0.5,
        "accuracy_stopped": 0.8,
        "n_stopped": 25,
        "n": 40,
        "truncation_rate": 0.375,
    }
    at_cap["max_new_tokens"] = cap
    (tmp_path / "metrics/eval/caps").mkdir(parents=True)
    (tmp_path / f"metrics/eval/caps/{cap_variant(run, cap)}.json").write_text(json.dumps(at_cap))
    summary = run_report(params, tmp_path)
    rows = rows_of(tmp_path / "reports/table_cap_sensitivity.md")
    raw_rows = [r for r in rows if r[2] == "Raw"]
    assert len(rows) == len(expand(params)["runs"]) + 1 and len(raw_rows) == 2
    assert raw_rows[1][4:] == [f"{cap:,d}", "0.500", "0.800", "25/40", "0.375"]
    assert summary["cost"]["ignored_metrics_files"] == 0


def test_headline_metrics_are_a_few_numbers_per_run(tmp_path: Path) -> None:
    # issue 13: summary.json holds ~30 numbers per run, too wide for `dvc metrics show` / `dvc exp show`
    params, s = build(tmp_path, n_questions=30, n_traces=8)
    runs = expand(params)["runs"]
    headline = tmp_path / "metrics/headline"
    files = {p.stem: json.loads(p.read_text()) for p in headline.glob("*.json")}
    assert files.keys() == runs.keys()
    keys = {"accuracy", "acc_per_1k", "retention", "reasoning_tokens", "compression_ratio"}
    for run, numbers in files.items():
        assert set(numbers) <= keys and all(isinstance(v, int | float) for v in numbers.values()), numbers
        assert numbers["accuracy"] == pytest.approx(s["runs"][run]["accuracy"], abs=1e-4)
    assert files["smol-smol-lora-raw"]["compression_ratio"] == 1.0
    assert "retention" not in files["smol-smol-lora-raw"]
    terse = files["smol-smol-lora-compressed-terse"]
    assert terse["retention"] == pytest.approx(
        s["runs"]["smol-smol-lora-compressed-terse"]["retention_vs_raw"], abs=1e-4
    )
    assert terse["compression_ratio"] == pytest.approx(
        s["compression"]["smol"]["terse"]["ratio_of_means"], abs=1e-4
    )
    # declared in dvc.yaml; a run that left the grid loses its file; the report's own files are no stage's
    dvc = yaml.safe_load((REPO / "dvc.yaml").read_text())
    assert {"metrics/headline": {"cache": False}} in dvc["stages"]["report"]["metrics"]
    # the same numbers by short label (what varies over the grid): short, unique column names in dvc exp show
    by_label = json.loads((tmp_path / "metrics/headline.json").read_text())
    assert by_label["raw"] == files["smol-smol-lora-raw"] and len(by_label) == len(runs)
    assert {"metrics/headline.json": {"cache": False}} in dvc["stages"]["report"]["metrics"]
    (headline / "smol-smol-full-raw.json").write_text("{}")
    _, again = build(tmp_path, n_questions=30, n_traces=8)
    assert not (headline / "smol-smol-full-raw.json").exists()
    assert again["cost"]["ignored_metrics_files"] == s["cost"]["ignored_metrics_files"]


def test_the_demo_report_says_first_what_it_is_and_is_not(tmp_path: Path) -> None:
    # issue 13: a newcomer reading the demo report took its numbers for results
    build(tmp_path, n_questions=30, n_traces=8)
    page = (tmp_path / "reports/index.html").read_text(encoding="utf-8")
    top = page[page.index("<h1>") : page.index('<section id="summary">')]
    assert "smoke test of the whole pipeline" in top and "135M" in top and "CPU" in top
    assert "not evidence about the paper" in top
    tables_md = (tmp_path / "reports/tables.md").read_text(encoding="utf-8").splitlines()
    assert "smoke test" in tables_md[2] and tables_md[2].startswith("> ")
    assert load_params(REPO / "configs/paper.yaml").report.note == ""  # the paper's report has no such caveat
