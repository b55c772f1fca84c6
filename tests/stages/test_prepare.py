"""The prepare stage end to end: every registry id from the Hub-shaped fixtures, the demo, accounting."""

from __future__ import annotations

from pathlib import Path
from unittest.mock import create_autospec

import httpx2
import pytest
import yaml
from huggingface_hub import HfApi
from huggingface_hub.errors import GatedRepoError
from typer.testing import CliRunner

from compress_distill.config import DATASET_IDS, Params, load_params
from compress_distill.metrics import read_metrics
from compress_distill.schema import QUESTIONS, read_rows, read_table
from compress_distill.stages import prepare

REPO = Path(__file__).resolve().parents[2]
MIRROR = REPO / "tests" / "fixtures" / "hub"


def params(**prepare_cfg: object) -> Params:
    p = load_params(REPO / "params.yaml")
    for key, value in prepare_cfg.items():
        setattr(p.prepare, key, value)
    return p


@pytest.fixture(scope="module")
def all_ids(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("prepare-all")
    p = params(datasets=list(DATASET_IDS), hub_mirror=str(MIRROR))
    m = prepare.run(
        p, out / "q", out / "prepare.json", cache_dir=out / "cache", rejects_path=out / "rej.parquet"
    )
    return out, m


def test_all_ids_from_the_mirror(all_ids: tuple[Path, dict]) -> None:
    out, m = all_ids
    train = read_rows(out / "q" / "train.parquet", QUESTIONS)
    eval_rows = read_rows(out / "q" / "eval.parquet", QUESTIONS)
    assert read_metrics(out / "prepare.json") == m
    assert m["rows_out"] == len(train) + len(eval_rows) == m["train"] + m["eval"]
    assert m["rows_in"] == m["rows_out"] + sum(m["rejects"].values())
    assert {r["split"] for r in train} == {"train"} and {r["split"] for r in eval_rows} == {"eval"}
    assert set(m["datasets"]) == set(DATASET_IDS)
    for d, c in m["datasets"].items():
        assert c["rows_in"] == c["train"] + c["eval"] + c["rejected"], d
        assert all(isinstance(v, int) for v in c.values())  # flat numbers only: DVC drops lists
    # svamp and gpqa never reach eval; OOD sets never reach train
    assert m["datasets"]["svamp"]["eval"] == 0 and m["datasets"]["gpqa_diamond"]["eval"] == 0
    assert m["datasets"]["hellaswag"]["train"] == 0 and m["groups"]["OOD-Knowledge"]["train"] == 0
    assert set(m["groups"]) == {
        "Math",
        "Science",
        "Medicine",
        "Commonsense",
        "OOD-Reasoning",
        "OOD-Knowledge",
    }
    assert len({r["id"] for r in train + eval_rows}) == len(train) + len(eval_rows)
    # every Hub repo's commit is recorded; the fixture mirror does not record one, and says so
    assert len(m["sources"]) == 16
    assert (
        m["sources"]["cais/mmlu"]["datasets"]
        == "mmlu_stem,mmlu_medical,mmlu_humanities,mmlu_social_sciences,mmlu_other"
    )
    assert {s["read_from"] for s in m["sources"].values()} == {"mirror"}
    assert {s["sha"] for s in m["sources"].values()} == {"unrecorded"}


def test_duplicates_overlap_and_bad_rows_are_counted(all_ids: tuple[Path, dict]) -> None:
    out, m = all_ids
    assert m["datasets"]["gsm8k"] == {"rows_in": 7, "train": 2, "eval": 2, "rejected": 3, "overlap": 1}
    assert m["rejects"]["duplicate"] == 1 and m["rejects"]["train_eval_overlap"] == 1
    assert m["train_eval_overlap"] == 1
    rejects = {r["id"]: r["reason"] for r in read_rows(out / "rej.parquet")}
    assert rejects == {
        "gsm8k/train/2": "duplicate",
        "gsm8k/train/3": "train_eval_overlap",
        "gsm8k/train/4": "bad_answer",
        # the fixtures' missing values: counted rejects, never the text 'nan' (tests/benchmarks/test_loaders.py)
        "svamp/test/1": "bad_answer",
        "gpqa_diamond/train/3": "empty_field",
        "medmcqa/train/2": "empty_choice",
    }
    assert {k: v for k, v in m["rejects"].items() if v} == {
        "bad_answer": 2,
        "duplicate": 1,
        "empty_choice": 1,
        "empty_field": 1,
        "train_eval_overlap": 1,
    }
    train_ids = {r["id"] for r in read_rows(out / "q" / "train.parquet")}
    assert "gsm8k/train/0" in train_ids and "gsm8k/train/2" not in train_ids


def test_demo_profile(tmp_path: Path) -> None:
    m = prepare.run(params(), tmp_path / "q", tmp_path / "m.json")  # params.yaml: datasets [demo]
    assert m["train"] == 24 and m["eval"] == 12 and m["rejects"].get("duplicate", 0) == 0
    eval_table = read_table(tmp_path / "q" / "eval.parquet", QUESTIONS)
    assert set(eval_table["answer_type"].to_pylist()) == {"numeric", "letter", "boolean"}
    assert len(m["groups"]) == 3


def test_caps_are_seeded_and_counted(tmp_path: Path) -> None:
    def run(seed: int, tag: str) -> tuple[dict, list[str]]:
        p = params(max_per_dataset=5, max_eval_per_dataset=3, seed=seed)
        m = prepare.run(p, tmp_path / tag, tmp_path / f"{tag}.json")
        ids = [r["id"] for r in read_rows(tmp_path / tag / "train.parquet")]
        return m, ids

    m, ids = run(0, "a")
    assert m["train"] == 5 and m["eval"] == 3
    assert m["rejects"]["max_per_dataset"] == 19 and m["rejects"]["max_eval_per_dataset"] == 9
    assert run(0, "b")[1] == ids
    assert run(1, "c")[1] != ids
    # the kept rows keep their original order
    assert ids == sorted(ids, key=lambda i: int(i.rsplit("/", 1)[1]))


def test_overlap_is_normalised_and_removed_from_train_only() -> None:
    def row(i: str, split: str, q: str) -> dict:
        return {"id": i, "dataset": "x", "split": split, "question": q}

    train = [row("x/train/0", "train", "What is  2+2?"), row("x/train/1", "train", "What is 3+3?")]
    eval_rows = [row("x/test/0", "eval", "what is 2+2?")]
    kept, dropped = prepare.drop_overlap(train, eval_rows)
    assert [r["id"] for r in kept] == ["x/train/1"] and [r["id"] for r in dropped] == ["x/train/0"]
    kept, dropped = prepare.drop_duplicates([train[0], row("x/train/2", "train", "What is  2+2?"), train[1]])
    assert [r["id"] for r in dropped] == ["x/train/2"] and len(kept) == 2


def test_cli_main(tmp_path: Path) -> None:
    cfg = yaml.safe_load((REPO / "params.yaml").read_text())
    cfg["prepare"]["demo"] = {"n_train": 4, "n_eval": 4}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(cfg))
    from compress_distill.cli import app  # the registered command, under the CLI's error policy

    args = [
        "prepare",
        "--params",
        str(tmp_path / "params.yaml"),
        "--out-dir",
        str(tmp_path / "q"),
        "--metrics",
        str(tmp_path / "m.json"),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "4 train / 4 eval" in result.output
    assert read_metrics(tmp_path / "m.json")["rows_out"] == 8

    cfg["prepare"]["datasets"] = ["gsm8k"]
    cfg["prepare"]["hub_mirror"] = str(tmp_path / "no-mirror")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(cfg))
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "openai/gsm8k does not exist" in result.output


# --------------------------------------------------------------------------------------------- Hub pre-flight
def _paper_like(tmp_path: Path, datasets: list[str]) -> list[str]:
    cfg = yaml.safe_load((REPO / "params.yaml").read_text())
    cfg["prepare"].update({"datasets": datasets, "hub_mirror": None})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(cfg))
    return [
        "--params",
        str(tmp_path / "params.yaml"),
        "--out-dir",
        str(tmp_path / "q"),
        "--metrics",
        str(tmp_path / "m.json"),
    ]


def test_gated_refusal_is_one_line_exit_2_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from compress_distill.benchmarks import registry, sources

    api = create_autospec(HfApi, instance=True)
    api.dataset_info.return_value.sha = "c" * 40
    response = httpx2.Response(403, request=httpx2.Request("GET", "https://huggingface.co/api/datasets/x"))
    api.auth_check.side_effect = GatedRepoError("403 Client Error: gated", response=response)
    monkeypatch.setattr(sources, "hub_api", lambda: api)

    def no_download(*args: object, **kwargs: object) -> None:
        raise AssertionError("a dataset was loaded before the pre-flight finished")

    monkeypatch.setattr(registry, "load", no_download)
    from compress_distill.cli import app  # the registered command, under the CLI's error policy

    result = CliRunner().invoke(app, ["prepare", *_paper_like(tmp_path, ["gsm8k", "gpqa_diamond", "medqa"])])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: dataset 'gpqa_diamond' is gated")
    assert "https://huggingface.co/datasets/Idavidrein/gpqa" in lines[0]
    assert "HF_TOKEN" in lines[0] and "hf auth login" in lines[0]
    assert not (tmp_path / "q").exists() and not (tmp_path / "m.json").exists()


def test_the_resolved_commit_is_what_load_dataset_reads_and_what_metrics_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Hub is replaced by the fixture mirror at the load_dataset boundary only: the revision it is asked
    for must be the sha the pre-flight resolved, and that sha lands in metrics/prepare.json."""
    import datasets

    from compress_distill.benchmarks import sources

    resolved = "d" * 40
    api = create_autospec(HfApi, instance=True)
    api.dataset_info.return_value.sha = resolved
    monkeypatch.setattr(sources, "hub_api", lambda: api)
    asked: list[tuple[str, str]] = []
    real = datasets.load_dataset

    def hub_is_the_mirror(path: str, **kwargs: object):  # type: ignore[no-untyped-def]
        asked.append((path, str(kwargs["revision"])))
        return real(str(MIRROR / path), **kwargs)

    monkeypatch.setattr(datasets, "load_dataset", hub_is_the_mirror)
    p = params(datasets=["gsm8k", "mmlu_other"], hub_mirror=None, revisions={"cais/mmlu": "e" * 40})
    m = prepare.run(p, tmp_path / "q", tmp_path / "m.json", cache_dir=tmp_path / "cache")
    assert set(asked) == {("openai/gsm8k", resolved), ("cais/mmlu", resolved)}
    api.dataset_info.assert_any_call("cais/mmlu", revision="e" * 40)  # the params override was asked for
    gsm = read_metrics(tmp_path / "m.json")["sources"]["openai/gsm8k"]
    assert gsm == m["sources"]["openai/gsm8k"]
    assert gsm["sha"] == resolved and gsm["pin"] == "registry" and gsm["read_from"] == "hub"
    assert m["sources"]["cais/mmlu"]["pin"] == "params"


def test_check_sources_without_network_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    from compress_distill.benchmarks import sources

    # the suite runs with HF_HUB_OFFLINE; lift it and point a real client at a refused local port instead
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(sources, "hub_api", lambda: HfApi(endpoint="http://127.0.0.1:9"))
    from compress_distill.cli import app

    result = CliRunner().invoke(app, ["prepare", *_paper_like(tmp_path, ["gsm8k"]), "--check-sources"])
    assert result.exit_code == 2 and "no pin was checked" in result.output
    assert not (tmp_path / "q").exists()


def test_the_dataset_card_quotes_the_commits_prepare_recorded(tmp_path: Path) -> None:
    from compress_distill.card import benchmark_sources

    assert "unknown (" in benchmark_sources(tmp_path / "metrics" / "prepare.json")
    p = params(datasets=["arc_challenge", "arc_easy"], hub_mirror=str(MIRROR))
    prepare.run(p, tmp_path / "q", tmp_path / "metrics" / "prepare.json", cache_dir=tmp_path / "cache")
    lines = benchmark_sources(tmp_path / "metrics" / "prepare.json")
    assert "- `allenai/ai2_arc` @ `unrecorded` (mirror, pin: registry) -> arc_challenge,arc_easy" in lines
