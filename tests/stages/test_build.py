"""build@T: shards, card YAML that matches the data, judge join, figure, provenance, offline load_dataset."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pytest
import yaml

from compress_distill.errors import StageError
from compress_distill.metrics import read_metrics
from compress_distill.stages import build
from tests.helpers.traces import SMOL, make_params, make_traces

SECRET = "sk-topsecret-123"


def params(shard_rows: int = 2):  # type: ignore[no-untyped-def]
    return make_params(
        **{
            "build.shard_rows": shard_rows,
            "compressors.concise.launch": [f"serve --api-key {SECRET}"],
            "teachers.smol.api_key_env": "MY_KEY_VAR",
        }
    )


def card_header(folder: Path) -> dict:
    text = (folder / "README.md").read_text(encoding="utf-8")
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("build")
    traces, judgements = make_traces(root)
    m = build.run(params(), "smol", traces, judgements, root / "hub" / "smol", root / "m.json")
    return root, root / "hub" / "smol", m


def test_layout_shards_and_metrics(built) -> None:  # type: ignore[no-untyped-def]
    root, folder, m = built
    assert sorted(p.name for p in (folder / "raw").iterdir()) == [
        f"train-0000{k}-of-00003.parquet" for k in range(3)
    ]
    assert sorted(p.name for p in (folder / "compressed-terse").iterdir()) == [
        "train-00000-of-00002.parquet",
        "train-00001-of-00002.parquet",
    ]
    assert (folder / "compression_ratio.png").stat().st_size > 1_000
    assert m == read_metrics(root / "m.json")
    assert {c: v["rows"] for c, v in m["configs"].items()} == {
        "raw": 5,
        "compressed-concise": 4,
        "compressed-terse": 3,
        "truncated": 3,
        "answer-only": 5,
    }
    assert m["rows_in"] == m["rows_out"] == 20 and m["rejects"] == {}
    assert not list(folder.parent.glob(".smol.*"))  # no staging folder left behind


def test_card_yaml_matches_the_data_and_every_config_loads_offline(built, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import datasets

    _, folder, m = built
    header = card_header(folder)
    assert header["license"] == "apache-2.0" and "reasoning" in header["tags"]
    assert header["task_categories"] and header["pretty_name"]
    names = [c["config_name"] for c in header["configs"]]
    assert names == ["raw", "compressed-concise", "compressed-terse", "truncated", "answer-only"]
    infos = {i["config_name"]: i for i in header["dataset_info"]}
    for name in names:
        ds = datasets.load_dataset(str(folder), name, split="train", cache_dir=str(tmp_path / "cache"))
        info = infos[name]
        assert ds.num_rows == m["configs"][name]["rows"] == info["splits"][0]["num_examples"]
        assert [f["name"] for f in info["features"]] == list(ds.features)
        assert info["download_size"] == sum(p.stat().st_size for p in (folder / name).iterdir())
    concise = datasets.load_dataset(
        str(folder), "compressed-concise", split="train", cache_dir=str(tmp_path / "cache")
    )
    by_id = {r["id"]: r for r in concise}
    assert by_id["t0"]["judge_verdict"] == "faithful" and by_id["t0"]["judge_faithfulness"] == 5
    assert by_id["t2"]["judge_parse_status"] == "truncated" and by_id["t2"]["judge_faithfulness"] is None
    assert by_id["t3"]["judge_parse_status"] is None  # no judgement row for this trace
    assert by_id["t0"]["judge_model"] == SMOL and by_id["t0"]["judge_failure_modes"] == []
    terse = datasets.load_dataset(
        str(folder), "compressed-terse", split="train", cache_dir=str(tmp_path / "cache")
    )
    assert not any(c.startswith("judge_") for c in terse.column_names)  # no judgements for terse


def test_card_body_stats_figure_and_provenance_without_secrets(built) -> None:  # type: ignore[no-untyped-def]
    _, folder, _ = built
    text = (folder / "README.md").read_text(encoding="utf-8")
    assert "](compression_ratio.png)" in text
    assert re.search(r"git commit: `([0-9a-f]{40}|unknown \(.*\))`", text)
    assert "aaaaaaaaaaaa+bbbbbbbbbbbb" in text and SMOL in text
    assert re.search(r"prompts/teacher\.md` \(sha256 `[0-9a-f]{12}`\)", text)
    # per-dataset table of the judged config: gsm8k has t0 (faithful, 5) and t1 (partially, 3)
    row = next(
        line for line in text.split("### `compressed-concise`")[1].splitlines() if line.startswith("| gsm8k")
    )
    assert "| 2 |" in row and "| 4.00 | 50.0 | 100.0 |" in row
    assert SECRET not in text and "MY_KEY_VAR" not in text and "launch" not in text


def test_rebuild_removes_stale_shards(tmp_path: Path) -> None:
    traces, judgements = make_traces(tmp_path)
    out = tmp_path / "hub" / "smol"
    build.run(params(shard_rows=2), "smol", traces, judgements, out, tmp_path / "m.json")
    build.run(params(shard_rows=100), "smol", traces, judgements, out, tmp_path / "m.json")
    assert [p.name for p in (out / "raw").iterdir()] == ["train-00000-of-00001.parquet"]
    assert card_header(out)["dataset_info"][0]["splits"][0]["num_examples"] == 5


def test_missing_compressed_config_says_which_stage_to_run(tmp_path: Path) -> None:
    traces, judgements = make_traces(tmp_path)
    (traces / "compressed-terse.parquet").unlink()
    with pytest.raises(FileNotFoundError, match="dvc repro compress@smol-terse"):
        build.run(params(), "smol", traces, judgements, tmp_path / "hub" / "smol", tmp_path / "m.json")
    assert not (tmp_path / "hub" / "smol").exists()


def test_an_empty_source_stops_the_build_with_its_cause(tmp_path: Path) -> None:
    traces, judgements = make_traces(tmp_path, n_raw=0)
    out = tmp_path / "hub" / "smol"
    with pytest.raises(StageError, match=r"raw.parquet has no rows.*raw.rejects.parquet"):
        build.run(params(), "smol", traces, judgements, out, tmp_path / "m.json")
    assert not out.exists() and not list((tmp_path / "hub").glob("*"))  # staged outside data/hub


def test_stage_chain_from_questions_to_a_loadable_folder(tmp_path: Path) -> None:
    """generate -> compress x2 -> truncate -> answer_only -> judge -> build with a scripted engine: the
    stages agree on ids, budgets and provenance, and the folder loads."""
    import json

    import datasets

    from compress_distill.stages import answer_only, compress, generate, judge, truncate
    from tests.helpers.traces import ScriptedBackend, completion, prompt_of, question, write_questions

    def engine(req):  # type: ignore[no-untyped-def]
        p = prompt_of(req)
        if req.json_schema is not None:
            return completion(
                json.dumps(
                    {
                        "faithfulness": 5,
                        "coverage": 5,
                        "clarity": 4,
                        "verdict": "faithful",
                        "answer_alignment": True,
                        "failure_modes": [],
                        "rationale": "ok",
                    }
                )
            )
        if p.startswith(("You are given", "Compress the reasoning")):
            return completion(
                "Add: 2 + 3 = 5. The answer is 5." if "2 + 3" in p else "Sum is 9. The answer is 9."
            )
        if "2 + 3" in p:
            return completion(
                "The answer is 5.", "I need 2 + 3. Counting up from 2: 3, 4, 5. So it is 5. " * 3
            )
        return completion("The answer is 9.", "4 + 5: four plus five is nine, since 5 + 4 = 9 as well. " * 3)

    q = write_questions(
        tmp_path / "q.parquet",
        [
            question("demo/train/0", "What is 2 + 3?", "5"),
            question("demo/train/1", "What is 4 + 5?", "9", dataset="gsm8k"),
        ],
    )
    p = make_params()
    t, j, m = tmp_path / "traces" / "smol", tmp_path / "judgements" / "smol", tmp_path / "metrics"
    be = ScriptedBackend(engine)
    generate.run(p, "smol", q, t, m / "g.json", backend=be)
    for c in ("concise", "terse"):
        compress.run(
            p, "smol", c, t / "raw.parquet", t / f"compressed-{c}.parquet", m / f"c-{c}.json", backend=be
        )
        judge.run(
            p,
            "smol",
            c,
            t / "raw.parquet",
            t / f"compressed-{c}.parquet",
            j / f"{c}.parquet",
            m / f"j-{c}.json",
            backend=be,
        )
    truncate.run(
        p, "smol", t / "raw.parquet", t / "compressed-terse.parquet", t / "truncated.parquet", m / "t.json"
    )
    answer_only.run(p, "smol", t / "raw.parquet", t / "answer-only.parquet", m / "a.json")
    out = build.run(p, "smol", t, j, tmp_path / "hub" / "smol", m / "b.json")
    assert {c: v["rows"] for c, v in out["configs"].items()} == {
        "raw": 2,
        "compressed-concise": 2,
        "compressed-terse": 2,
        "truncated": 2,
        "answer-only": 2,
    }
    cache = str(tmp_path / "cache")
    rows = {
        c: {
            r["id"]: r
            for r in datasets.load_dataset(str(tmp_path / "hub" / "smol"), c, split="train", cache_dir=cache)
        }
        for c in out["configs"]
    }
    raw, terse, trunc = (
        rows["raw"]["demo/train/0"],
        rows["compressed-terse"]["demo/train/0"],
        rows["truncated"]["demo/train/0"],
    )
    assert (
        terse["response"]
        == raw["response"]
        == trunc["response"]
        == rows["answer-only"]["demo/train/0"]["response"]
    )
    assert (
        raw["reasoning"].startswith(trunc["reasoning"])
        and trunc["reasoning_tokens"] == terse["reasoning_tokens"]
    )
    assert trunc["prompt_hash"] == terse["prompt_hash"] and terse["prompt_hash"].startswith(
        raw["prompt_hash"] + "+"
    )
    assert rows["compressed-concise"]["demo/train/1"]["judge_verdict"] == "faithful"
    assert terse["answer_preserved"] is True and terse["judge_parse_status"] == "ok"
    # the stage I/O convention along the chain: a rejects file beside every output (empty here), row accounting
    # in every metrics file, and nothing but outputs in the folders the stages wrote
    from compress_distill.metrics import read_metrics
    from compress_distill.schema import read_rows, rejects_path

    outputs = [
        t / f"{n}.parquet"
        for n in ("raw", "compressed-concise", "compressed-terse", "truncated", "answer-only")
    ]
    outputs += [j / "concise.parquet", j / "terse.parquet", tmp_path / "hub" / "smol"]
    assert all(read_rows(rejects_path(o)) == [] for o in outputs)
    for f in m.iterdir():
        metrics = read_metrics(f)
        assert metrics["rows_in"] == metrics["rows_out"] + sum(metrics["rejects"].values()), f
    assert sorted(p.name for p in t.iterdir()) == sorted(
        [o.name for o in outputs[:5]] + [rejects_path(o).name for o in outputs[:5]] + ["attempts.parquet"]
    )
    assert sorted(p.name for p in (tmp_path / "hub").iterdir()) == ["smol", "smol.rejects.parquet"]


def test_outputs_get_the_umask_modes_not_temp_file_modes(tmp_path: Path) -> None:
    # issue 13: mkstemp/mkdtemp create 0600/0700 and the atomic rename passed those modes on to the outputs
    traces, judgements = make_traces(tmp_path)
    out = tmp_path / "hub" / "smol"
    old = os.umask(0o022)
    try:
        build.run(params(), "smol", traces, judgements, out, tmp_path / "m.json")
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "m.json").stat().st_mode) == 0o644  # metrics: schema.atomic_path
    for path in out.rglob("*"):
        assert stat.S_IMODE(path.stat().st_mode) == (0o755 if path.is_dir() else 0o644), path
