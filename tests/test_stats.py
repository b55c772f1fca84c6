"""stats: the per-dataset trace statistics of the stages' metrics and of the report, on polars."""

from __future__ import annotations

import polars as pl
import pyarrow as pa
import pytest

from compress_distill import stats
from compress_distill.evaluation import aggregate
from compress_distill.names import FAILURE_MODES


def test_by_dataset_blocks_and_naming_rule() -> None:
    ts = stats.TraceStats({"chars": int, "ok": bool})
    ts.add([{"dataset": "b", "chars": 10, "ok": True}, {"dataset": "a", "chars": 4, "ok": False}])
    ts.add([])  # an empty chunk adds nothing
    ts.add([{"dataset": "b", "chars": 20, "ok": False}])
    per, overall = ts.blocks([stats.mean("chars"), stats.pct("ok")])
    assert list(per) == ["a", "b"]
    assert per["b"] == {"n": 2, "mean_chars": 15.0, "pct_ok": 50.0}
    assert overall == {"n": 3, "mean_chars": pytest.approx(34 / 3), "pct_ok": pytest.approx(100 / 3)}


def test_empty_stats_have_no_datasets_and_an_empty_overall() -> None:
    ts = stats.TraceStats({"reasoning_chars": int, "raw_chars": int})
    assert ts.blocks([stats.mean("reasoning_chars")]) == ({}, {"n": 0})
    # a ratio of means over nothing is undefined (null), not 0/0
    assert ts.blocks([stats.RATIO_OF_MEANS]) == ({}, {"n": 0, "ratio_of_means": None})


def test_add_table_is_the_vectorised_add() -> None:
    ts = stats.TraceStats({"response_chars": int})
    ts.add_table(pa.table({"dataset": ["a", "a"], "response_chars": pa.array([3, 5], pa.int32())}))
    assert ts.blocks([stats.mean("response_chars")])[1] == {"n": 2, "mean_response_chars": 4.0}


def test_mode_counts_count_a_mode_once_per_trace() -> None:
    frame = pl.DataFrame(
        {"dataset": ["a", "a", "b"], "failure_modes": [["contradiction", "contradiction"], [], None]}
    )
    _, overall = stats.by_dataset(frame, stats.mode_counts("failure_modes"))
    assert overall == {"n": 3, **dict.fromkeys(FAILURE_MODES, 0), "contradiction": 1}


def test_stage_and_report_compute_the_compression_table_the_same_way() -> None:
    """The compress stage's per-dataset block and the report's Table 5 row come from one definition."""
    comp = pl.DataFrame(
        {
            "teacher": ["t"] * 3,
            "compressor": ["c"] * 3,
            "domain": ["math"] * 3,
            "dataset": ["gsm8k", "gsm8k", "math500"],
            "reasoning_chars": [100, 50, 30],
            "reasoning_tokens": [25, 12, 8],
            "raw_chars": [1000.0, 200.0, 300.0],
            "compression_ratio": [0.1, 0.25, 0.1],
        }
    )
    per, overall = stats.by_dataset(comp, stats.COMPRESSION)
    report = aggregate.compression_by_dataset(comp).to_dicts()
    by_key = {r["dataset"] or aggregate.OVERALL: r for r in report}
    for name, block in [*per.items(), (aggregate.OVERALL, overall)]:
        row = by_key[name]
        assert {k: row[k] for k in block} == pytest.approx(block)
    assert overall["ratio_of_means"] == pytest.approx(180 / 1500)
