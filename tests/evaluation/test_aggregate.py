"""The report's polars aggregations, fed with the paper's own printed numbers (Tables 2, 4, 5, 6, 7, 11)."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from compress_distill.config import load_params
from compress_distill.evaluation import aggregate, traces
from compress_distill.evaluation.tables import RunResult
from tests.helpers.paper import table11_runs
from tests.helpers.synthetic import write_hub

REPO = Path(__file__).resolve().parents[2]

# Table 4 (accepted traces, mean raw reasoning chars) and Table 5 (mean compressed chars and printed ratio per
# compressor: Llama-3.3-70B, Ministral-3-14B), per teacher, in the paper's dataset order.
DATASETS = ["AQUA-RAT", "GSM8k", "MultiArith", "SVAMP", "ARC-Challenge", "GPQA Diamond", "CommonsenseQA",
            "MedExpQA", "MedMCQA", "MedQA"]  # fmt: skip
PAPER = {
    "qwen": {
        "n": [87441, 7186, 416, 960, 1079, 135, 8593, 395, 167277, 9778],
        "raw": [7583, 4688, 1750, 2926, 4264, 18734, 6418, 11541, 6801, 10806],
        "l70": [1034, 612, 443, 522, 911, 1658, 862, 1317, 1002, 1369],
        "l70_ratio": [0.136, 0.131, 0.253, 0.178, 0.214, 0.089, 0.134, 0.114, 0.147, 0.127],
        "m14": [478, 296, 221, 294, 522, 1020, 564, 1113, 677, 1044],
        "m14_ratio": [0.063, 0.063, 0.126, 0.101, 0.122, 0.054, 0.088, 0.096, 0.100, 0.097],
        "overall": {"l70": (1008, 0.142), "m14": (613, 0.086)},
    },
    "gptoss": {
        "n": [89796, 7268, 413, 967, 1079, 152, 8434, 395, 163480, 9850],
        "raw": [3360, 1878, 716, 1368, 1554, 13407, 4292, 5321, 4043, 4537],
        "l70": [722, 505, 332, 418, 624, 1446, 706, 1185, 833, 1094],
        "l70_ratio": [0.215, 0.269, 0.464, 0.306, 0.401, 0.108, 0.164, 0.223, 0.206, 0.241],
        "m14": [438, 263, 160, 239, 439, 1012, 538, 1051, 610, 954],
        "m14_ratio": [0.130, 0.140, 0.224, 0.175, 0.282, 0.076, 0.125, 0.198, 0.151, 0.210],
        "overall": {"l70": (793, 0.210), "m14": (554, 0.147)},
    },
}


def paper_compressed() -> pl.DataFrame:
    """One row per trace with the paper's per-dataset means (283k rows per pair, as the paper's corpus)."""
    frames = []
    for teacher, t in PAPER.items():
        for comp in ("l70", "m14"):
            for ds, n, raw, chars in zip(DATASETS, t["n"], t["raw"], t[comp], strict=True):
                frames.append(
                    pl.DataFrame(
                        {
                            "teacher": [teacher] * n,
                            "compressor": [comp] * n,
                            "domain": ["d"] * n,
                            "dataset": [ds] * n,
                            "reasoning_chars": [chars] * n,
                            "reasoning_tokens": [chars // 3] * n,
                            "raw_chars": [float(raw)] * n,
                            "compression_ratio": [chars / raw] * n,
                        }
                    )
                )
    return pl.concat(frames)


def test_ratio_of_means_reproduces_tables_2_and_5() -> None:
    table = aggregate.compression_by_dataset(paper_compressed())
    exact, cells = 0, 0
    for teacher, t in PAPER.items():
        for comp in ("l70", "m14"):
            rows = table.filter((pl.col("teacher") == teacher) & (pl.col("compressor") == comp))
            for ds, printed in zip(DATASETS, t[f"{comp}_ratio"], strict=True):
                got = rows.filter(pl.col("dataset") == ds)["ratio_of_means"].item()
                cells += 1
                exact += round(got, 3) == printed
                assert got == pytest.approx(printed, abs=1.5e-3)  # the means are printed rounded to 1 char
            overall = rows.filter(pl.col("domain") == aggregate.OVERALL).row(0, named=True)
            chars, ratio = t["overall"][comp]
            # Table 2's Length column (the per-dataset means it averages are themselves rounded)
            assert overall["mean_chars"] == pytest.approx(chars, abs=1)
            assert round(overall["ratio_of_means"], 3) == ratio  # all four overall cells exact
            # the mean of per-trace ratios is what the report printed before, and it is not the paper's
            assert round(overall["mean_ratio"], 3) != ratio
    assert cells == 40 and exact >= 36


def test_headline_compressed_length_range() -> None:
    table = aggregate.compression_by_dataset(paper_compressed())
    runs = aggregate.runs_frame([])
    r = aggregate.headline_ranges(runs, table)["compressed_length"]
    assert (round(r["min"] * 100, 1), round(r["max"] * 100, 1), r["n"]) == (8.6, 21.0, 4)  # the abstract


# Table 6: (teacher, student, method) -> raw tokens (M), then per source (tokens M, printed speed-up).
TABLE6 = {
    ("qwen", "q08", "lora"): (635, {"answer-only": (25, 16.8), "truncated": (75, 7.8), "compressed-l70": (102, 5.9), "compressed-m14": (74, 7.6)}),
    ("qwen", "q08", "full"): (635, {"answer-only": (25, 15.8), "truncated": (75, 7.6), "compressed-l70": (102, 5.8), "compressed-m14": (74, 7.3)}),
    ("qwen", "l8", "lora"): (589, {"answer-only": (23, 28.0), "truncated": (71, 9.4), "compressed-l70": (97, 3.5), "compressed-m14": (71, 4.8)}),
    ("qwen", "l8", "full"): (589, {"answer-only": (23, 24.8), "truncated": (71, 9.1), "compressed-l70": (97, 3.6), "compressed-m14": (71, 4.9)}),
    ("qwen", "q9", "lora"): (635, {"answer-only": (24, 22.0), "truncated": (74, 8.2), "compressed-l70": (102, 3.2), "compressed-m14": (74, 4.4)}),
    ("qwen", "q9", "full"): (635, {"answer-only": (24, 19.2), "truncated": (74, 8.0), "compressed-l70": (102, 3.3), "compressed-m14": (74, 4.4)}),
    ("qwen", "g20", "full"): (600, {"truncated": (88, 6.4), "compressed-l70": (113, 5.1), "compressed-m14": (87, 6.3)}),
    ("gptoss", "q08", "lora"): (315, {"compressed-l70": (81, 3.6), "compressed-m14": (69, 4.1)}),
    ("gptoss", "q08", "full"): (315, {"compressed-l70": (81, 3.5), "compressed-m14": (69, 3.9)}),
    ("gptoss", "l8", "lora"): (298, {"compressed-l70": (78, 2.2), "compressed-m14": (66, 2.6)}),
    ("gptoss", "l8", "full"): (298, {"compressed-l70": (78, 2.3), "compressed-m14": (66, 2.6)}),
    ("gptoss", "q9", "lora"): (315, {"compressed-l70": (81, 2.0), "compressed-m14": (69, 2.3)}),
    ("gptoss", "q9", "full"): (315, {"compressed-l70": (81, 2.0), "compressed-m14": (69, 2.3)}),
    ("gptoss", "g20", "full"): (310, {"compressed-l70": (94, 3.2), "compressed-m14": (83, 3.5)}),
}  # fmt: skip


def test_headline_training_ranges_from_table6() -> None:
    runs = []
    for (t, s, m), (raw_tokens, sources) in TABLE6.items():
        for src, (tokens, speed) in sources.items():
            cell = f"{m}/{src}"  # one raw twin per source carries that source's printed speed-up
            runs.append(
                RunResult(
                    f"{t}-{s}-{cell}",
                    t,
                    s,
                    cell,
                    src,
                    train={"trainable_tokens": tokens * 1e6, "wall_clock_s": 3600.0},
                )
            )
            runs.append(
                RunResult(
                    f"{t}-{s}-{cell}-raw",
                    t,
                    s,
                    cell,
                    "raw",
                    train={"trainable_tokens": raw_tokens * 1e6, "wall_clock_s": 3600.0 * speed},
                )
            )
    r = aggregate.headline_ranges(aggregate.runs_frame(runs))
    frac, speed = r["training_token_fraction"], r["training_speedup"]
    # "compressed traces reduce training tokens to 12-30% of raw, speed up training by 2.0-7.6x"
    assert (round(frac["min"] * 100), round(frac["max"] * 100)) == (12, 30)
    assert (speed["min"], speed["max"]) == pytest.approx((2.0, 7.6))
    assert (
        frac["n"] == speed["n"] == 28
    )  # compressed runs only: truncated (9.4x) and answer-only (28x) excluded


def test_headline_output_shortening_is_the_median_reasoning_ratio() -> None:
    runs = [
        RunResult("raw", "t", "s", "lora", "raw", eval={"overall": {"median_reasoning_tokens": 1900.0}}),
        RunResult(
            "c", "t", "s", "lora", "compressed-c", eval={"overall": {"median_reasoning_tokens": 100.0}}
        ),
        RunResult(
            "d", "t", "s", "lora", "compressed-d", eval={"overall": {"median_reasoning_tokens": 633.3}}
        ),
        RunResult("tr", "t", "s", "lora", "truncated", eval={"overall": {"median_reasoning_tokens": 1.0}}),
    ]
    r = aggregate.headline_ranges(aggregate.runs_frame(runs))["output_shortening"]
    assert (round(r["min"]), round(r["max"]), r["n"]) == (3, 19, 2)


# Table 7, Qwen teacher, Full: Medicine and Science accuracy of raw / Llama-70B / Ministral-14B
TABLE7_FULL = {
    "l8": {"Medicine": (0.671, 0.611, 0.599), "Science": (0.834, 0.803, 0.794)},
    "q9": {"Medicine": (0.770, 0.723, 0.711), "Science": (0.951, 0.937, 0.928)},
    "g20": {"Medicine": (0.718, 0.652, 0.633), "Science": (0.927, 0.902, 0.893)},
}


def test_group_gaps_reproduce_section_6_4() -> None:
    runs = []
    for student, groups in TABLE7_FULL.items():
        for k, src in enumerate(["raw", "compressed-l70", "compressed-m14"]):
            blocks = {g: {"accuracy": accs[k], "n": 100} for g, accs in groups.items()}
            runs.append(RunResult(f"{student}-{src}", "qwen", student, "full", src, eval={"groups": blocks}))
    gaps = aggregate.group_gaps(runs)
    assert gaps.height == 12 and (gaps["gap"] < 0).all()  # source minus raw: raw wins everywhere here

    def advantage(group: str) -> tuple[float, float]:
        g = -gaps.filter(pl.col("group") == group)["gap"]
        return round(g.min(), 1), round(g.max(), 1)

    # "Medicine shows the largest raw advantage (4.7-8.5 points) and Science the smallest (1.4-4.0 points)"
    assert advantage("Medicine") == (4.7, 8.5)
    assert advantage("Science") == (1.4, 4.0)


def test_table11_gpu_hour_totals() -> None:
    runs = table11_runs()
    totals = aggregate.compute_totals(aggregate.runs_frame(runs))
    # "training consumes 280.9 H100-hours ... The seven truncation ablations add 16.0 H100-h over the 264.9"
    assert {k: round(v, 1) for k, v in totals.items()} == {
        "all": 280.9, "main_grid": 264.9, "truncation_ablation": 16.0
    }  # fmt: skip


def test_hub_frames_join_raw_lengths_and_count_failure_modes(tmp_path: Path) -> None:
    params = load_params(REPO / "params.yaml")
    write_hub(tmp_path, "smol", list(params.compressors), 40, seed=3)
    hub = traces.discover(tmp_path / "data/hub", ["smol"])
    raw, comp = aggregate.hub_frames(hub)
    assert raw.height == 40 and comp.height == 80
    # raw_chars is the raw row's length, joined on id
    assert (comp["raw_chars"] == comp.join(raw, on=["teacher", "id"])["reasoning_chars_right"]).all()
    table = aggregate.compression_by_dataset(comp)
    overall = table.filter(pl.col("domain") == aggregate.OVERALL)
    assert overall["compressor"].to_list() == list(params.compressors) and overall["n"].to_list() == [40, 40]
    per_pair = comp.filter(pl.col("compressor") == "concise")
    assert overall["ratio_of_means"][0] == pytest.approx(
        per_pair["reasoning_chars"].sum() / per_pair["raw_chars"].sum()
    )
    modes = aggregate.failure_modes(comp)
    row = modes.filter(pl.col("compressor") == "concise").row(0, named=True)
    verdicts = per_pair["judge_verdict"].to_list()
    assert row["judged"] == 40 and row["not_faithful"] == sum(v != "faithful" for v in verdicts)
    assert row["omitted_key_step"] == row["not_faithful"] and row["contradiction"] == 0  # synthetic: one mode
    stats = aggregate.trace_generation(raw)
    assert stats.filter(pl.col("domain") == aggregate.OVERALL)["n"].item() == 40
    assert stats["n"].sum() == 80  # per-dataset rows + the total
