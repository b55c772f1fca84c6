"""The report's readers on a hub folder written by the real build stage (hand-made traces and judgements)."""

from __future__ import annotations

from pathlib import Path

import pytest

from compress_distill.config import load_params
from compress_distill.evaluation import aggregate, traces
from compress_distill.schema import JUDGEMENTS, TRACES, write_rows
from compress_distill.stages import build

REPO = Path(__file__).resolve().parents[2]


def trace(i: int, source: str, reasoning: str, raw_len: int) -> dict:
    ds = "gsm8k" if i % 2 else "medqa"
    return {
        "id": f"{ds}/train/{i}",
        "question_id": f"{ds}/train/{i}",
        "dataset": ds,
        "domain": "math" if ds == "gsm8k" else "medical",
        "question": f"Q{i} <script>alert(1)</script>",
        "answer": "4",
        "answer_type": "numeric",
        "reasoning": reasoning,
        "response": "The answer is 4.",
        "source": source,
        "reasoning_chars": len(reasoning),
        "reasoning_tokens": len(reasoning) // 4,
        "compression_ratio": len(reasoning) / raw_len,
        "teacher_model": "t",
        "compressor_model": "",
        "prompt_hash": "abc",
        "answer_preserved": None,
    }


def judgement(i: int, verdict: str, faith: int, status: str = "ok") -> dict:
    ds = "gsm8k" if i % 2 else "medqa"
    return {
        "id": f"{ds}/train/{i}",
        "compressor": "concise",
        "faithfulness": faith,
        "coverage": 4,
        "clarity": 5,
        "verdict": verdict,
        "answer_alignment": verdict != "unfaithful",
        "failure_modes": [] if verdict == "faithful" else ["omitted_key_step"],
        "rationale": f"r{i}",
        "judge_model": "j",
        "parse_status": status,
    }


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hub")
    params = load_params(REPO / "params.yaml")  # teacher smol, compressors concise and terse
    tdir, jdir = root / "traces/smol", root / "judgements/smol"
    raw_text = {i: f"raw reasoning {i} " * 20 for i in range(6)}
    n = {i: len(t) for i, t in raw_text.items()}
    write_rows([trace(i, "raw", raw_text[i], n[i]) for i in range(6)], tdir / "raw.parquet", TRACES)
    # concise: 10% of the raw length; terse: 5%, and not judged (its judge stage has not run)
    write_rows(
        [trace(i, "compressed-concise", "c" * (n[i] // 10), n[i]) for i in range(6)],
        tdir / "compressed-concise.parquet",
        TRACES,
    )
    write_rows(
        [trace(i, "compressed-terse", "t" * (n[i] // 20), n[i]) for i in range(6)],
        tdir / "compressed-terse.parquet",
        TRACES,
    )
    verdicts = ["faithful", "faithful", "unfaithful", "partially_faithful", "faithful"]
    rows = [judgement(i, v, 5 if v == "faithful" else 2) for i, v in enumerate(verdicts)]
    rows.append(judgement(5, "faithful", 1, status="truncated"))  # unparsed: excluded from the means
    write_rows(rows, jdir / "concise.parquet", JUDGEMENTS)
    build.run(params, "smol", tdir, jdir, root / "data/hub/smol", root / "metrics/build/smol.json")
    return root / "data/hub"


def test_discover_and_compression(hub: Path) -> None:
    found = traces.discover(hub, ["smol", "absent"])
    assert set(found) == {"smol"}
    assert {"raw", "compressed-concise", "compressed-terse"} <= set(found["smol"])
    _, comp = aggregate.hub_frames(found)
    rows = aggregate.compression_by_dataset(comp).to_dicts()
    by = {r["compressor"]: r for r in rows if r["domain"] == aggregate.OVERALL}
    assert by["concise"]["n"] == 6 and by["concise"]["ratio_of_means"] == pytest.approx(0.1, abs=0.01)
    assert by["terse"]["ratio_of_means"] == pytest.approx(0.05, abs=0.01)
    assert by["concise"]["mean_ratio"] == pytest.approx(0.1, abs=0.01)
    # raw lengths joined from the raw config on the trace id (build keeps the ids)
    assert comp["raw_chars"].to_list() == [len(f"raw reasoning {i} " * 20) for i in range(6)] * 2
    assert {r["dataset"] for r in rows} == {"gsm8k", "medqa", ""}


def test_failure_modes_on_built_hub(hub: Path) -> None:
    _, comp = aggregate.hub_frames(traces.discover(hub, ["smol"]))
    modes = {r["compressor"]: r for r in aggregate.failure_modes(comp).to_dicts()}
    assert set(modes) == {"concise"}  # terse was never judged
    # 5 parsed verdicts (the truncated judge output is excluded), 2 not faithful, each tagged omitted_key_step
    assert (modes["concise"]["judged"], modes["concise"]["not_faithful"]) == (5, 2)
    assert modes["concise"]["omitted_key_step"] == 2 and modes["concise"]["answer_mismatch"] == 0


def test_judge_stats_skip_unparsed_and_unjudged(hub: Path) -> None:
    _, comp = aggregate.hub_frames(traces.discover(hub, ["smol"]))
    stats = aggregate.judge_stats(comp)["smol"]
    assert set(stats) == {"concise"}  # terse was never judged: no judge table, no crash
    overall = stats["concise"][("Overall", "")]
    assert overall["n"] == 5  # the truncated judge output is excluded
    assert overall["faithful"] == pytest.approx(3 / 5)
    assert overall["faithfulness"] == pytest.approx((5 + 5 + 2 + 2 + 5) / 5)
    assert overall["aligned"] == pytest.approx(4 / 5)
    assert stats["concise"][("medical", "medqa")]["n"] == 3


def test_viewer_pairs_join_raw_and_compressed(hub: Path) -> None:
    found = traces.discover(hub, ["smol"])
    pairs = traces.viewer_pairs(found, per_pair=6)
    concise = {p["id"]: p for p in pairs if p["compressor"] == "concise"}
    terse = [p for p in pairs if p["compressor"] == "terse"]
    assert len(concise) == 6 and len(terse) == 6
    assert all(p["verdict"] == "unjudged" for p in terse)  # judge not run for terse
    for tid, p in concise.items():
        i = int(tid.rsplit("/", 1)[1])
        assert p["raw"] == f"raw reasoning {i} " * 20  # joined to its own raw trace by id
        assert set(p["compressed"]) == {"c"}
        assert p["question"].endswith("<script>alert(1)</script>")  # raw text: escaping is the page's job
    assert concise["medqa/train/2"]["verdict"] == "unfaithful"
    assert concise["medqa/train/2"]["failure_modes"] == ["omitted_key_step"]
    assert concise["gsm8k/train/5"]["verdict"] == "unparsed (truncated)"

    # a small sample still carries every non-faithful trace (the verdict filter has something to show)
    small = [p for p in traces.viewer_pairs(found, per_pair=2) if p["compressor"] == "concise"]
    assert {"medqa/train/2", "gsm8k/train/3"} <= {p["id"] for p in small}
    assert len(small) <= 4  # 2 sampled + up to 2 non-faithful ones
