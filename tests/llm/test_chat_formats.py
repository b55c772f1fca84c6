"""Chat formats per student family, on tokenizer fixtures laid out like the Hub's (tests/fixtures/chat_formats,
written by tests/fixtures/make_chat_format_fixtures.py): Qwen3.5 pre-fills <think>, gpt-oss speaks harmony
(reasoning in the analysis channel), Llama-3.1-8B base ships no template and the paper profile gives it one.
Training targets and evaluation prompts come from the same template, read by the same rule."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import AutoTokenizer

from compress_distill.config import load_params
from compress_distill.llm.tokens import chat_format, generation_prompt, template_format
from compress_distill.reasoning import split_completion, split_reasoning
from compress_distill.training.data import TemplateError, encode_rows, load_chat_template, render

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "chat_formats"
QUESTION = "What is 2 + 2?"
ROW = {"id": "r0", "question": QUESTION, "reasoning": "Add two and two.", "response": "The answer is 4."}


def tokenizer(family: str) -> object:
    return AutoTokenizer.from_pretrained(FIXTURES / family)


def test_each_family_is_told_apart_by_its_generation_prompt() -> None:
    assert template_format(tokenizer("qwen3.5")) == "think"
    assert template_format(tokenizer("gpt-oss")) == "harmony"
    llama = tokenizer("llama-3.1-base")
    load_chat_template(llama, REPO / "configs/chat_templates/llama-3.1.jinja")
    assert template_format(llama) == "plain"


def test_gpt_oss_target_puts_the_reasoning_in_the_analysis_channel() -> None:
    tok = tokenizer("gpt-oss")
    prompt, completion = render(tok, QUESTION, ROW["reasoning"], ROW["response"])
    # the evaluation prompt is the training prompt: the model writes its channels itself
    assert prompt == generation_prompt(tok, [{"role": "user", "content": QUESTION}])
    assert completion == (
        "<|channel|>analysis<|message|>Add two and two.<|end|>"
        "<|start|>assistant<|channel|>final<|message|>The answer is 4.<|return|>"
    )
    assert "<think>" not in completion  # before: the think block was text inside the final channel
    # what the student learns to write is read back into the same reasoning and response
    generated = completion.removesuffix("<|return|>")
    assert split_completion(generated, "stop", False) == (ROW["reasoning"], ROW["response"])
    cut = completion[: completion.index("<|end|>") - 4]  # cut at the cap inside the analysis channel
    assert split_completion(cut, "length", False) == ("Add two and", "")
    enc = encode_rows(tok, [ROW], seq_len=4096)
    assert enc.eot_token == "<|return|>" and len(enc) == 1


def test_qwen35_target_continues_the_prefilled_think_block() -> None:
    tok = tokenizer("qwen3.5")
    prompt, completion = render(tok, QUESTION, ROW["reasoning"], ROW["response"])
    assert prompt.endswith("<|im_start|>assistant\n<think>\n")
    assert completion == "Add two and two.\n</think>\n\nThe answer is 4.<|im_end|>\n"
    fmt = chat_format(tok)
    assert fmt.think_prefilled and fmt.stop_tokens[-1] == "<|im_end|>"
    generated = completion.removesuffix("<|im_end|>\n")
    assert split_completion(generated, "stop", fmt.think_prefilled) == (ROW["reasoning"], ROW["response"])
    cut = "Add two and two, so the answer is"
    assert split_completion(cut, "length", fmt.think_prefilled) == (cut, "")


def test_llama_31_base_ships_no_template_and_the_paper_profile_sets_one() -> None:
    tok = tokenizer("llama-3.1-base")
    with pytest.raises(TemplateError, match="students.<id>.chat_template"):
        load_chat_template(tok, None)
    template = load_params(REPO / "configs/paper.yaml").students["llama8b"].chat_template
    assert template is not None and (REPO / template).is_file()
    load_chat_template(tok, REPO / template)
    prompt, completion = render(tok, QUESTION, ROW["reasoning"], ROW["response"])
    assert prompt == (
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nWhat is 2 + 2?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    assert completion == "<think>\nAdd two and two.\n</think>\n\nThe answer is 4.<|eot_id|>"
    enc = encode_rows(tok, [ROW], seq_len=4096)
    assert enc.eot_token == "<|eot_id|>"  # trained, and a stop at evaluation:
    fmt = chat_format(tok, trained_eot=enc.eot_token_id)
    assert fmt.stop_tokens[0] == "<|eot_id|>" and not fmt.think_prefilled
    assert split_reasoning(completion.removesuffix("<|eot_id|>")) == (ROW["reasoning"], ROW["response"])


def test_stops_put_the_trained_end_of_turn_first_and_never_harmonys_inner_end() -> None:
    qwen = tokenizer("qwen3.5")
    im_end = qwen.convert_tokens_to_ids("<|im_end|>")
    fmt = chat_format(qwen, trained_eot=im_end)
    assert fmt.stop_token_ids[0] == im_end and len(set(fmt.stop_token_ids)) == len(fmt.stop_token_ids)
    assert fmt.stop_tokens == tuple(qwen.convert_ids_to_tokens(list(fmt.stop_token_ids)))
    oss = chat_format(tokenizer("gpt-oss"))
    assert "<|return|>" in oss.stop_tokens and "<|end|>" not in oss.stop_tokens  # <|end|> closes analysis
