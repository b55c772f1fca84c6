"""The published configs are train-ready: TRL's SFTTrainer (the pinned version) builds its training set from a
built config with no user code and trains exactly the tokens the project's trainer trains."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from compress_distill.reasoning import join_reasoning
from compress_distill.stages import build
from compress_distill.training.data import encode_rows, load_chat_template, read_source
from tests.helpers.traces import make_params, make_traces


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("train-ready")
    traces, judgements = make_traces(root)
    build.run(make_params(), "smol", traces, judgements, root / "hub" / "smol", root / "m.json")
    return root / "hub" / "smol"


def test_every_config_carries_messages_prompt_and_completion(folder: Path) -> None:
    for config in ("raw", "compressed-concise", "compressed-terse", "truncated", "answer-only"):
        table = pq.read_table(folder / config)  # every shard
        for row in table.to_pylist():
            user = {"role": "user", "content": row["question"].strip()}
            assistant = {"role": "assistant", "content": join_reasoning(row["reasoning"], row["response"])}
            assert row["messages"] == [user, assistant], config
            assert row["prompt"] == [user] and row["completion"] == [assistant], config
    answer_only = pq.read_table(folder / "answer-only").to_pylist()[0]
    # answer-only: the response alone, no think block (paper §3.3), as the trainer renders it for a template
    # that does not pre-fill <think>
    assert answer_only["completion"][0]["content"] == answer_only["response"].strip()


@pytest.mark.slow
def test_trl_sft_trainer_trains_what_the_project_trainer_trains(
    folder: Path, smol_dir: str, tmp_path: Path
) -> None:
    import datasets
    from transformers import AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    config = "compressed-concise"
    ds = datasets.load_dataset(str(folder), config, split="train", cache_dir=str(tmp_path / "cache"))
    tokenizer = AutoTokenizer.from_pretrained(smol_dir)
    # no formatting function, no collator, no template: the config as published
    trainer = SFTTrainer(
        model=smol_dir,
        args=SFTConfig(output_dir=str(tmp_path / "trl"), report_to=[], bf16=False),  # bf16: CPU-only CI
        train_dataset=ds,
        processing_class=tokenizer,
    )
    trl_rows = {row["id"]: row for row in trainer.train_dataset}

    ours = AutoTokenizer.from_pretrained(smol_dir)
    load_chat_template(ours, None)
    enc = encode_rows(ours, read_source(folder / config), seq_len=4096)
    assert len(enc) == len(trl_rows) == 4
    for row_id, ids, n_prompt in zip(enc.row_ids, enc.ids, enc.n_prompt, strict=True):
        trl = trl_rows[row_id]
        ids = ids.tolist()
        trained = [k for k, label in enumerate(trl["labels"]) if label != -100]
        # same prompt and assistant tokens, end-of-turn included ...
        assert trl["input_ids"][: len(ids)] == ids
        assert trained[: len(ids) - n_prompt] == list(range(n_prompt, len(ids)))
        assert ids[-1] == enc.eot_token_id and trl["labels"][len(ids) - 1] == enc.eot_token_id
        # ... and beyond it only the newline the template writes after the end-of-turn token, which the
        # project's trainer drops (nothing follows it) and TRL keeps
        tail = trl["input_ids"][len(ids) :]
        assert len(tail) <= 1 and tokenizer.decode(tail).strip() == ""
