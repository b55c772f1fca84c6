"""The dataset card stands on its own: citation, attribution and licences, every column, prompts verbatim,
settings, statistics, an example row, limitations and a usage block with the real repo id."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from compress_distill.attribution import BENCHMARKS, UNKNOWN_LICENSE, model_license
from compress_distill.card import COLUMNS, MIXED_LICENSE
from compress_distill.config import DATASET_IDS
from compress_distill.stages import build
from tests.helpers.traces import make_params, make_traces

LLAMA = "meta-llama/Llama-3.3-70B-Instruct"


def build_card(root: Path, **overrides: object) -> tuple[Path, str]:
    traces, judgements = make_traces(root)
    folder = root / "hub" / "smol"
    build.run(make_params(**overrides), "smol", traces, judgements, folder, root / "m.json")
    return folder, (folder / "README.md").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def card(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    return build_card(
        tmp_path_factory.mktemp("card"),
        **{"publish.enabled": True, "publish.repo_id": "my-org/cd-traces-{teacher}", "publish.tag": "v1"},
    )


def section(text: str, title: str) -> str:
    assert f"\n## {title}" in text, title
    return text.split(f"\n## {title}", 1)[1].split("\n## ", 1)[0]


def test_yaml_validates_with_huggingface_hub(card: tuple[Path, str]) -> None:
    from huggingface_hub import DatasetCard

    folder, text = card
    data = DatasetCard(text).data.to_dict()
    assert data["license"] == "apache-2.0"
    assert data["source_datasets"] == ["GBaker/MedQA-USMLE-4-options", "openai/gsm8k"]
    assert {c["config_name"] for c in data["configs"]} == {p.name for p in folder.iterdir() if p.is_dir()}


def test_every_column_of_every_config_is_described(card: tuple[Path, str]) -> None:
    folder, text = card
    columns = section(text, "Columns")
    names = {n for shard in folder.glob("*/*.parquet") for n in pq.read_schema(shard).names}
    assert len(names) == 29
    for name in names:
        assert f"- `{name}`: {COLUMNS[name]}" in columns
    assert "undocumented" not in columns


def test_prompts_are_embedded_verbatim_with_settings(card: tuple[Path, str]) -> None:
    _, text = card
    params = make_params()
    prompts = section(text, "Prompts (verbatim)")
    for path in [
        params.generate.prompt,
        params.compress.prompt,
        params.judge.prompt,
        *params.compress.prompts.values(),
    ]:
        assert Path(path).read_text(encoding="utf-8").rstrip() in prompts
    method = section(text, "How the data was made")
    assert f"up to {params.generate.rounds} times" in method and "'temperature': 0.7" in method
    assert "first correct attempt" in method and "not re-verified" in method
    assert f"{params.judge.max_raw_chars:,}" in method and "compressor `terse`" in method


def test_usage_block_has_the_real_repo_id_and_trl_and_axolotl(card: tuple[Path, str]) -> None:
    _, text = card
    usage = section(text, "Usage")
    assert (
        'load_dataset("my-org/cd-traces-smol", "compressed-concise", split="train", revision="v1")' in usage
    )
    assert "SFTTrainer(" in usage and "type: chat_template" in usage and "field_messages: messages" in usage
    assert "roles_to_train: [assistant]" in usage and "path: my-org/cd-traces-smol" in usage
    assert "traces: {source: hub, repo_ids: {smol: my-org/cd-traces-smol}, revision: v1}" in usage
    assert "<org>/<name>" not in usage


def test_usage_without_a_repo_id_says_what_to_fill_in(tmp_path: Path) -> None:
    _, text = build_card(tmp_path)
    usage = section(text, "Usage")
    assert 'load_dataset("<org>/<name>", "compressed-concise"' in usage and "publish.repo_id" in usage


def test_example_row_statistics_limitations_and_citation(card: tuple[Path, str]) -> None:
    _, text = card
    example = section(text, "Example row")
    assert (
        '"id": "t0"' in example
        and '"role": "assistant"' in example
        and '"judge_verdict": "faithful"' in example
    )
    assert "| **overall** | 4 |" in section(text, "Per-dataset statistics")
    limits = section(text, "Limitations")
    assert "`compressed-concise` 2 of 4 rows with a readable verdict" in limits
    assert "`compressed-terse` not judged" in limits and "not re-verified" in limits
    cite = section(text, "Citation")
    assert "@misc{griot2026compressdistill" in cite
    assert "Compress-Distill: Reasoning Trace Compression for Efficient Knowledge Distillation" in cite
    assert "Griot, Maxime and Scotti, Paul Steven and Abraham, Tanishq Mathew" in cite
    assert "cobbe2021gsm8k" in cite and "jin2021medqa" in cite and "hendrycks2021mmlu" not in cite
    sources = section(text, "Source benchmarks")
    assert "[`openai/gsm8k`](https://huggingface.co/datasets/openai/gsm8k) | mit" in sources
    assert "GBaker/MedQA-USMLE-4-options" in sources and "see the dataset card" in sources


def test_llama_outputs_carry_the_llama_licence(tmp_path: Path) -> None:
    from huggingface_hub import DatasetCard

    _, text = build_card(tmp_path, **{"compressors.concise.model": LLAMA})
    data = DatasetCard(text).data.to_dict()
    assert data["license"] == "other" and data["license_name"] == MIXED_LICENSE
    licences = section(text, "Licences")
    assert f"| `{LLAMA}` | compressor `concise` | [Llama 3.3 Community License](" in licences
    assert "beginning of its name" in licences
    assert "| `smollm2-135m-instruct` | teacher `smol`, compressor `terse`, judge | [apache-2.0](" in licences


def test_model_licence_map() -> None:
    assert model_license("meta-llama/Llama-3.3-70B-Instruct").name == "Llama 3.3 Community License"
    assert model_license("meta-llama/Llama-3.1-8B").name == "Llama 3.1 Community License"
    assert model_license("openai/gpt-oss-120b").name == "apache-2.0"
    assert model_license("Qwen/Qwen3.5-397B-A17B-FP8").name == "apache-2.0"
    assert model_license("someone/unknown-model").name == UNKNOWN_LICENSE == "see the model card"


def test_every_benchmark_has_a_citation() -> None:
    assert set(BENCHMARKS) == set(DATASET_IDS) - {"demo"}
    assert all(b.bibtex.startswith("@") and b.bibtex.endswith("}") for b in BENCHMARKS.values())
    assert "not revealed in plain text" in BENCHMARKS["gpqa_diamond"].terms


def attempt(qid: str, k: int, correct: bool) -> dict:
    return {"question_id": qid, "teacher": "smol", "round": k, "attempt": k, "reasoning": "r", "response": "x",
            "extracted": "4" if correct else "5", "extraction_rule": "answer_is", "correct": correct,
            "prompt_tokens": 10, "completion_tokens": 20, "finish_reason": "stop", "request_hash": f"h{qid}{k}"}  # fmt: skip


def test_attempts_config_is_opt_in_and_documented(tmp_path: Path) -> None:
    import datasets

    from compress_distill.schema import ATTEMPTS, write_rows

    traces, judgements = make_traces(tmp_path)
    assert not (build_card(tmp_path / "off")[0] / "attempts").exists()  # off by default
    params = make_params(**{"build.attempts": True})
    with pytest.raises(FileNotFoundError, match=r"generate@smol"):
        build.run(params, "smol", traces, judgements, tmp_path / "hub" / "smol", tmp_path / "m.json")
    rows = [
        attempt("gsm8k/train/0", 0, False),
        attempt("gsm8k/train/0", 1, True),
        attempt("medqa/train/3", 0, True),
    ]
    write_rows(rows, traces / "attempts.parquet", ATTEMPTS)
    m = build.run(params, "smol", traces, judgements, tmp_path / "hub" / "smol", tmp_path / "m.json")
    assert m["configs"]["attempts"]["rows"] == 3 and m["rows_in"] == m["rows_out"] == 23
    folder = tmp_path / "hub" / "smol"
    ds = datasets.load_dataset(str(folder), "attempts", split="train", cache_dir=str(tmp_path / "cache"))
    assert ds.num_rows == 3 and ds[0]["extraction_rule"] == "answer_is" and "messages" not in ds.column_names
    text = (folder / "README.md").read_text(encoding="utf-8")
    columns = section(text, "Columns")
    for name in ATTEMPTS.names:
        assert f"- `{name}`: {COLUMNS[name]}" in columns
    stats = section(text, "Per-dataset statistics")
    assert "| gsm8k | 2 | 1 | 50.0 |" in stats and "| **overall** | 3 | 2 | 66.7 |" in stats
    assert "`attempts` holds incorrect answers" in section(text, "Limitations")


def test_eval_questions_config_is_opt_in_and_documented(tmp_path: Path) -> None:
    import datasets

    from compress_distill.config import ConfigError
    from compress_distill.schema import QUESTIONS
    from tests.helpers.traces import question, write_questions

    traces, judgements = make_traces(tmp_path)
    eval_path = write_questions(
        tmp_path / "eval.parquet",
        [question(f"gsm8k/test/{i}", f"What is {i} + 1?", str(i + 1), dataset="gsm8k") for i in range(3)],
    )
    params = make_params(**{"build.eval_questions": True})
    out = tmp_path / "hub" / "smol"
    with pytest.raises(ConfigError, match="--eval-questions"):
        build.run(params, "smol", traces, judgements, out, tmp_path / "m.json")
    m = build.run(params, "smol", traces, judgements, out, tmp_path / "m.json", eval_questions=eval_path)
    assert m["configs"]["eval-questions"]["rows"] == 3 and m["rows_in"] == m["rows_out"] == 23
    ds = datasets.load_dataset(str(out), "eval-questions", split="train", cache_dir=str(tmp_path / "cache"))
    assert ds["answer"] == ["1", "2", "3"]
    text = (out / "README.md").read_text(encoding="utf-8")
    for name in QUESTIONS.names:
        assert f"- `{name}`: {COLUMNS[name]}" in section(text, "Columns")
    assert "| gsm8k | 3 |" in section(text, "Per-dataset statistics")
    assert "`eval-questions` is a test set" in section(text, "Limitations")
