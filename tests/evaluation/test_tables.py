"""Table builders on hand-made and paper-shaped inputs: what each cell prints."""

from __future__ import annotations

import csv
import io
import math

from compress_distill.benchmarks.registry import SPECS
from compress_distill.evaluation import tables
from compress_distill.evaluation.tables import GridOrder, RunResult

ORDER = GridOrder(["qwen"], ["q08"], ["lora"], ["raw", "compressed-l70", "compressed-m14", "truncated"])


def test_table7_prints_the_95_percent_half_width() -> None:
    # paper Table 7, Qwen teacher, Qwen3.5-0.8B raw LoRA, Math: 0.596 ± 0.023 with n = 1,753
    se = math.sqrt(0.596 * 0.404 / 1753)
    with_ci = {"accuracy": 0.596, "n": 1753, "stderr": se, "ci95": 1.96 * se}
    older = {"accuracy": 0.596, "n": 1753, "stderr": se}  # a metrics file written before ci95 existed
    runs = [
        RunResult("a", "qwen", "q08", "lora", "raw", eval={"overall": with_ci, "groups": {"Math": with_ci}}),
        RunResult(
            "b", "qwen", "q08", "lora", "compressed-l70", eval={"overall": older, "groups": {"Math": older}}
        ),
    ]
    t = tables.group_accuracy_table(runs, ORDER)
    assert [row[4:] for row in t.rows] == [["0.596 ± 0.023"] * 2, ["0.596 ± 0.023"] * 2]
    assert "95%" in t.title and "1.96" in t.note


def test_table2_prints_the_ratio_of_means() -> None:
    rows = [
        {"teacher": "qwen", "compressor": "l70", "domain": "math", "dataset": "gsm8k", "n": 7186,
         "mean_chars": 612.0, "ratio_of_means": 0.1305, "mean_ratio": 0.16},
        {"teacher": "qwen", "compressor": "l70", "domain": "Overall", "dataset": "", "n": 283260,
         "mean_chars": 1008.4, "ratio_of_means": 0.1421, "mean_ratio": 0.171},
    ]  # fmt: skip
    t = tables.compression_table(rows)
    assert t.rows == [["qwen", "l70", "283,260", "1,008", "0.142", "0.171"]]  # the paper's Table 2 row
    assert t.columns[4] == "Ratio (of means)"
    t5 = tables.compression_by_dataset_table(rows)
    assert t5.rows == [
        ["qwen", "math", "gsm8k", "612", "—", "0.131"],  # Table 5: 612 / 4,688
        ["qwen", "Overall", "", "1,008", "—", "0.142"],
    ]


def test_table1_from_prepare_metrics_and_registry() -> None:
    prepare = {"datasets": {"gsm8k": {"train": 7473, "eval": 1319}, "svamp": {"train": 1000, "eval": 0}}}
    t = tables.datasets_table(prepare, SPECS)
    assert t.rows == [
        ["math", "gsm8k", "numeric", "train", "test", "7,473", "1,319"],
        ["math", "svamp", "numeric", ", ".join(SPECS["svamp"].train_splits), "—", "1,000", "—"],
    ]


def test_headline_table_formats_ranges() -> None:
    ranges = {
        "training_token_fraction": {"min": 0.1165, "max": 0.3032, "n": 28},
        "training_speedup": {"min": 2.0, "max": 7.6, "n": 28},
        "output_shortening": {"min": None, "max": None, "n": 0},
        "compressed_length": {"min": 0.086, "max": 0.086, "n": 1},
    }
    rows = {r[0]: r[1] for r in tables.headline_table(ranges).rows}
    assert rows["Training tokens (% of raw)"] == "12–30%"
    assert rows["Training speed-up (× raw wall-clock)"] == "2.0–7.6×"
    assert rows["Output shortening (× raw median reasoning tokens)"] == "—"
    assert rows["Compressed length (% of raw chars, ratio of means)"] == "8.6%"


def test_domain_gap_table_signed_points_in_grid_order() -> None:
    rows = [
        {"teacher": "qwen", "student": "q08", "method": "lora", "source": "truncated", "group": "Math", "gap": -47.3},
        {"teacher": "qwen", "student": "q08", "method": "lora", "source": "compressed-l70", "group": "Medicine",
         "gap": -1.1},
        {"teacher": "qwen", "student": "q08", "method": "lora", "source": "compressed-l70", "group": "Math", "gap": 2.0},
    ]  # fmt: skip
    t = tables.domain_gap_table(rows, ORDER)
    assert t.columns[4:] == ["Math", "Medicine"]
    assert t.rows == [
        ["qwen", "q08", "l70 comp.", "lora", "+2.0", "-1.1"],
        ["qwen", "q08", "Truncated", "lora", "-47.3", "—"],
    ]


def test_compute_table_rows_and_totals() -> None:
    runs = [
        RunResult("r", "qwen", "q08", "lora", "raw", train={"gpus": 4, "wall_clock_s": 1.1 * 3600,
                                                           "gpu_hours": 4.5, "trainable_tokens": 635e6}),
        RunResult("t", "qwen", "q08", "lora", "truncated", train={"gpus": 4, "wall_clock_s": 0.15 * 3600,
                                                                 "gpu_hours": 0.6, "trainable_tokens": 75e6}),
        RunResult("c", "qwen", "q08", "lora", "compressed-m14"),  # not trained yet: no row
    ]  # fmt: skip
    t = tables.compute_table(runs, ORDER)
    assert t.rows[0] == ["qwen", "q08", "lora", "Raw", "4", "1.1", "4.5", "635"]
    assert [r[1:] for r in t.rows[-3:]] == [
        ["main grid", "", "", "", "", "4.5", ""],
        ["truncation ablation", "", "", "", "", "0.6", ""],
        ["all", "", "", "", "", "5.1", ""],
    ]


def test_failure_mode_table_and_csv() -> None:
    row = {"teacher": "qwen", "compressor": "l70", "judged": 200, "not_faithful": 4,
           **dict.fromkeys(tables.FAILURE_MODES, 0), "omitted_key_step": 3, "answer_mismatch": 1}  # fmt: skip
    t = tables.failure_mode_table([row])
    cells = dict(zip(t.columns, t.rows[0], strict=True))
    assert cells["Not faithful"] == "4 (2.0%)" and cells["omitted_key_step"] == "3 (1.5%)"
    assert cells["contradiction"] == "0 (0.0%)"
    parsed = list(csv.reader(io.StringIO(t.to_csv())))
    assert parsed == [t.columns, t.rows[0]]


def _seeded(source: str, seed: int, acc: float, groups: dict[str, float] | None = None) -> RunResult:
    blocks = {g: {"accuracy": a, "n": 10} for g, a in (groups or {}).items()}
    return RunResult(
        f"qwen-q08-lora-{source}-s{seed}",
        "qwen",
        "q08",
        "lora",
        source,
        eval={"overall": {"accuracy": acc}, "groups": blocks},
        train={"train_flops": 1e18 + seed},
        seed=seed,
    )


def test_seed_spread_gives_mean_std_and_n_per_run_group() -> None:
    runs = [_seeded("raw", s, a) for s, a in ((0, 0.50), (1, 0.60), (2, 0.70))]
    runs += [_seeded("compressed-l70", 0, 0.40), RunResult("qwen-q08-lora-truncated-s0", "qwen", "q08", "lora",
             "truncated", seed=0)]  # fmt: skip
    rows = {r[2]: r for r in tables.seed_spread_table(runs, ORDER).rows}
    assert rows["Raw"][4:] == ["0, 1, 2", "3", "0.600", "0.100", "0.500–0.700", "1e+18"]
    assert rows["l70 comp."][4:8] == ["0", "1", "0.400", tables.DASH]  # one seed: no spread
    assert rows["Truncated"][5:9] == ["0", tables.DASH, tables.DASH, tables.DASH]  # not evaluated yet


def test_domain_gaps_pair_runs_of_the_same_seed_then_average() -> None:
    from compress_distill.evaluation import aggregate

    runs = [
        _seeded("raw", 0, 0.5, {"Math": 0.50}),
        _seeded("raw", 1, 0.5, {"Math": 0.70}),
        _seeded("compressed-l70", 0, 0.5, {"Math": 0.40}),  # -10 points vs its seed's raw
        _seeded("compressed-l70", 1, 0.5, {"Math": 0.50}),  # -20 points
    ]
    gaps = aggregate.group_gaps(runs).to_dicts()
    assert len(gaps) == 1 and gaps[0]["seeds"] == 2
    assert math.isclose(gaps[0]["gap"], -15.0)
    assert tables.domain_gap_table(gaps, ORDER).rows == [["qwen", "q08", "l70 comp.", "lora", "-15.0"]]
