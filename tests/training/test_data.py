"""Targets and loss masks on the real SmolLM2 tokenizer: only assistant tokens and the end-of-turn are trained."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from compress_distill.reasoning import join_reasoning
from compress_distill.training.data import (
    Encoded,
    TemplateError,
    encode_rows,
    load_chat_template,
    read_source,
    source_shards,
    split_validation,
    validation_size,
)
from compress_distill.training.packing import IGNORE, row_targets
from tests.helpers.training import trace_rows, write_source


def row(question: str, reasoning: str, response: str, ident: str = "r") -> dict[str, str]:
    return {"id": ident, "question": question, "reasoning": reasoning, "response": response}


def trained_text(tok, enc, i: int = 0) -> str:  # type: ignore[no-untyped-def]
    return tok.decode(enc.ids[i][enc.n_prompt[i] :].tolist())


def test_only_assistant_and_eot_are_trained(smol_tokenizer) -> None:  # type: ignore[no-untyped-def]
    tok = smol_tokenizer
    enc = encode_rows(tok, [row("What is 2 + 3?", "2 plus 3 is 5.", "The answer is 5.")], seq_len=512)
    ids, p = enc.ids[0], enc.n_prompt[0]
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": "What is 2 + 3?"}], tokenize=False, add_generation_prompt=True
    )
    # untrained part: exactly the inference prompt (system + user turn + assistant header)
    assert tok.decode(ids[:p].tolist()) == prompt
    assert ids[:p].tolist() == tok(prompt, add_special_tokens=False)["input_ids"]
    # trained part: the assistant content and the end-of-turn token, nothing after it
    assert trained_text(tok, enc) == join_reasoning("2 plus 3 is 5.", "The answer is 5.") + "<|im_end|>"
    assert ids[-1] == tok.convert_tokens_to_ids("<|im_end|>") == enc.eot_token_id
    assert enc.eot_token == "<|im_end|>"
    # the shifted targets: first target predicts the first assistant token; the EOT is a target
    tgt = row_targets(ids, p)
    assert (tgt[: p - 1] == IGNORE).all() and tgt[-1] == IGNORE
    assert tgt[p - 1 : -1].tolist() == ids[p:].tolist()
    assert enc.trainable_tokens == int((tgt != IGNORE).sum())


def test_think_block_then_response(smol_tokenizer) -> None:  # type: ignore[no-untyped-def]
    enc = encode_rows(smol_tokenizer, [row("Q?", "  first\nsecond  ", "Final: B")], seq_len=512)
    text = trained_text(smol_tokenizer, enc)
    assert text == "<think>\nfirst\nsecond\n</think>\n\nFinal: B<|im_end|>"


def test_answer_only_target_is_the_response_alone(smol_tokenizer) -> None:  # type: ignore[no-untyped-def]
    # paper §3.3: the whole think block is stripped (it used to keep "<think>\n\n</think>\n\n")
    rows = trace_rows(3, source="answer-only")
    enc = encode_rows(smol_tokenizer, rows, seq_len=512)
    for i in range(3):
        assert trained_text(smol_tokenizer, enc, i) == rows[i]["response"] + "<|im_end|>"


def test_answer_only_option_keeps_the_empty_think_block(smol_tokenizer) -> None:  # type: ignore[no-untyped-def]
    """Issue 10 item 5: strip by default (above), keep the empty block only when params ask for it; rows with
    reasoning are rendered the same either way."""
    rows = [*trace_rows(2, source="answer-only"), row("Q?", "2 and 2", "B", "r")]
    enc = encode_rows(smol_tokenizer, rows, seq_len=512, answer_only_think="keep_empty")
    for i in range(2):
        expected = "<think>\n\n</think>\n\n" + rows[i]["response"] + "<|im_end|>"
        assert trained_text(smol_tokenizer, enc, i) == expected
    assert trained_text(smol_tokenizer, enc, 2) == "<think>\n2 and 2\n</think>\n\nB<|im_end|>"
    stripped = encode_rows(smol_tokenizer, rows, seq_len=512)
    assert trained_text(smol_tokenizer, stripped, 2) == trained_text(smol_tokenizer, enc, 2)


# Generation prompts that pre-fill "<think>\n" (Qwen3.5): one template writes the assistant content verbatim,
# the other (Qwen3's style) re-renders the think block itself from the content's </think>.
PREFILL_VERBATIM = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n<think>\n{% endif %}"
)
PREFILL_QWEN = (
    "{% for m in messages %}{% if m['role'] == 'assistant' %}"
    "{% set c = m['content'] %}{% set r = '' %}"
    "{% if '</think>' in c %}{% set r = c.split('</think>')[0].split('<think>')[-1].strip('\n') %}"
    "{% set c = c.split('</think>')[-1].lstrip('\n') %}{% endif %}"
    "<|im_start|>assistant\n<think>\n{{ r }}\n</think>\n\n{{ c }}<|im_end|>\n"
    "{% else %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n<think>\n{% endif %}"
)


@pytest.mark.parametrize("template", [PREFILL_VERBATIM, PREFILL_QWEN], ids=["verbatim", "qwen-style"])
def test_prefilled_think_template_closes_the_block_it_opened(smol_dir: str, template: str) -> None:
    """The generation prompt opens <think> at inference, so an answer-only target cannot drop the block: it
    closes it and answers (deliberately the one case that keeps an empty block, docs/architecture.md §7, known
    traps)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smol_dir)
    tok.chat_template = template
    rows = [row("Q?", "", "The answer is 4.", "ao"), row("Q?", "2 and 2", "B", "r")]
    enc = encode_rows(tok, rows, seq_len=256)
    assert tok.decode(enc.ids[0][: enc.n_prompt[0]].tolist()).endswith("<|im_start|>assistant\n<think>\n")
    assert trained_text(tok, enc, 0) == "\n</think>\n\nThe answer is 4.<|im_end|>"
    assert trained_text(tok, enc, 1) == "2 and 2\n</think>\n\nB<|im_end|>"


def test_overlong_policy_and_rejects_are_counted(smol_tokenizer) -> None:  # type: ignore[no-untyped-def]
    long_reasoning = "many words here " * 60
    rows = [
        row("short?", "a", "b", "ok"),
        row("long?", long_reasoning, "b", "long"),
        row("", "a", "b", "noq"),
        row("empty?", "", "  ", "notarget"),
        row("prompt " * 200, "a", "b", "bigprompt"),
    ]
    dropped = encode_rows(smol_tokenizer, rows, seq_len=96, overlong="drop")
    assert dropped.row_ids == ["ok"]
    assert dropped.counter.as_dict() == {
        "rows_in": 5,
        "rows_out": 1,
        "rejects": {"empty_question": 1, "empty_target": 1, "overlong": 1, "prompt_overlong": 1},
    }
    cut = encode_rows(smol_tokenizer, rows, seq_len=96, overlong="truncate")
    assert cut.row_ids == ["ok", "long"] and cut.rows_truncated == 1
    assert len(cut.ids[1]) == 96 and cut.ids[1][-1] != cut.eot_token_id  # the EOT is lost: documented
    assert cut.counter.as_dict()["rejects"] == {"empty_question": 1, "empty_target": 1, "prompt_overlong": 1}


def test_template_without_end_of_turn_token_is_refused(smol_dir: str) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smol_dir)
    tok.chat_template = (
        "{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}"
    )
    with pytest.raises(TemplateError, match="end-of-turn"):
        encode_rows(tok, [row("Q?", "r", "A")], seq_len=256)


def test_template_that_drops_the_think_block_is_refused(smol_dir: str, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smol_dir)
    template = tmp_path / "strip.jinja"
    template.write_text(
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
        "{% if m['role'] == 'assistant' %}{{ m['content'].split('</think>')[-1] | trim }}"
        "{% else %}{{ m['content'] }}{% endif %}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}",
        encoding="utf-8",
    )
    load_chat_template(tok, template)
    with pytest.raises(TemplateError, match="drops the think block"):
        encode_rows(tok, [row("Q?", "secret reasoning", "A")], seq_len=256)
    tok.chat_template = None
    with pytest.raises(TemplateError, match="no chat template"):
        load_chat_template(tok, None)


def test_source_folder_shards_are_read_together(tmp_path: Path) -> None:
    folder = write_source(tmp_path, "smol", "raw", trace_rows(10), shards=3)
    assert [p.name for p in source_shards(folder)] == [
        "train-00000-of-00003.parquet",
        "train-00001-of-00003.parquet",
        "train-00002-of-00003.parquet",
    ]
    table = read_source(folder)
    assert table.num_rows == 10 and table.column_names == ["id", "question", "reasoning", "response"]
    with pytest.raises(FileNotFoundError, match="build the traces"):
        source_shards(tmp_path / "missing")


@pytest.mark.parametrize(
    ("n", "fraction", "expected"),
    [
        (0, 0.05, 0),
        (1, 0.05, 0),
        (2, 0.05, 1),
        (8, 0.05, 1),
        (19, 0.05, 1),
        (100, 0.05, 5),
        (1000, 0.05, 50),
        (100, 0.0, 0),
        (2, 0.5, 1),
        (3, 0.5, 2),
        (10, 0.25, 2),
    ],
)
def test_validation_size(n: int, fraction: float, expected: int) -> None:
    assert validation_size(n, fraction) == expected


def fake_rows(n: int) -> Encoded:
    enc = Encoded()
    for i in range(n):
        enc.ids.append(np.arange(5 + i % 7, dtype=np.int32))
        enc.n_prompt.append(3)
        enc.row_ids.append(f"demo/train/{i}")
        enc.counter.seen()
        enc.counter.kept()
    return enc


def test_validation_split_is_seeded_by_id_and_disjoint() -> None:
    enc = fake_rows(200)
    train, val = split_validation(enc, 0.05, seed=0)
    assert len(val) == 10 and len(train) == 190
    assert set(train.row_ids).isdisjoint(val.row_ids)
    assert set(train.row_ids) | set(val.row_ids) == set(enc.row_ids)
    # each held-out row keeps its own tokens
    for rid, ids in zip(val.row_ids, val.ids, strict=True):
        assert ids.tolist() == enc.ids[enc.row_ids.index(rid)].tolist()
    # deterministic and by id: the same ids whatever the row order; another seed holds out other rows
    assert split_validation(enc, 0.05, seed=0)[1].row_ids == val.row_ids
    order = list(range(200))[::-1]
    assert sorted(split_validation(enc.subset(order), 0.05, seed=0)[1].row_ids) == sorted(val.row_ids)
    assert set(split_validation(enc, 0.05, seed=1)[1].row_ids) != set(val.row_ids)
    # the row accounting stays with the training part
    assert train.counter.as_dict()["rows_out"] == 200 and val.counter.as_dict()["rows_in"] == 0
    # disabled
    train0, val0 = split_validation(enc, 0.0, seed=0)
    assert len(val0) == 0 and train0.row_ids == enc.row_ids


def test_lengths_are_long_tailed_in_the_fixture(smol_tokenizer) -> None:  # type: ignore[no-untyped-def]
    enc = encode_rows(smol_tokenizer, trace_rows(60), seq_len=1024)
    lengths = np.array(enc.lengths)
    assert lengths.max() > 2 * np.median(lengths)  # the packing tests rely on a real spread
