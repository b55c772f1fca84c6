"""split_reasoning / split_completion cases of docs/architecture.md §6, chat-format rules,
join/middle-truncate helpers."""

from __future__ import annotations

import time

import pytest

from compress_distill.reasoning import (
    assistant_message,
    generation_prompt_format,
    join_reasoning,
    middle_truncate,
    split_completion,
    split_reasoning,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<think>add 2 and 3</think>The answer is 5.", ("add 2 and 3", "The answer is 5.")),
        ("<think>\nmulti\nline\n</think>\n\nFinal: 7", ("multi\nline", "Final: 7")),
        ("prefilled reasoning</think>The answer is B", ("prefilled reasoning", "The answer is B")),
        ("<think>cut off mid-way, the answer is 42", ("cut off mid-way, the answer is 42", "")),
        ("no think at all, answer 3", ("", "no think at all, answer 3")),
        ("", ("", "")),
        ("<think></think>just the answer", ("", "just the answer")),
        ("<think>a</think>b<think>c</think>d", ("a</think>b<think>c", "d")),
        (
            "<|channel|>analysis<|message|>think here<|end|><|start|>assistant<|channel|>final<|message|>42<|return|>",
            ("think here", "42"),
        ),
    ],
)
def test_split(text: str, expected: tuple[str, str]) -> None:
    assert split_reasoning(text) == expected


def test_none_is_empty() -> None:
    assert split_reasoning(None) == ("", "")


def test_split_is_linear_on_adversarial_input() -> None:
    text = "<think>" * 200_000 + "{" * 500_000
    start = time.perf_counter()
    split_reasoning(text)
    assert time.perf_counter() - start < 1.0


def test_join_round_trips() -> None:
    joined = join_reasoning("step 1\nstep 2", "The answer is 3.")
    assert split_reasoning(joined) == ("step 1\nstep 2", "The answer is 3.")
    assert split_reasoning(join_reasoning("", "B")) == ("", "B")


def test_middle_truncate_keeps_both_ends() -> None:
    text = "START" + "x" * 10_000 + "END"
    out = middle_truncate(text, 500)
    assert out.startswith("START") and out.endswith("END") and len(out) <= 500
    assert "characters omitted" in out
    assert middle_truncate("short", 500) == "short"


@pytest.mark.parametrize(
    ("text", "finish", "prefilled", "expected"),
    [
        # the template opened <think>: a cut text is all reasoning (issue 10: it was graded as an answer)
        ("so the answer is B", "length", True, ("so the answer is B", "")),
        ("steps\n</think>\n\nThe answer is B", "stop", True, ("steps", "The answer is B")),
        ("steps\n</think>\n\nThe ans", "length", True, ("steps", "The ans")),
        ("<think>re-opened anyway", "length", True, ("re-opened anyway", "")),
        # ended its turn without </think>: the response (what a server parser gives for an empty block)
        ("B", "stop", True, ("", "B")),
        # no pre-fill: a cut plain answer stays an answer; a block opened in the text still has none
        ("The answer is 4 because", "length", False, ("", "The answer is 4 because")),
        ("<think>cut inside", "length", False, ("cut inside", "")),
        ("<|channel|>analysis<|message|>cut in analysis", "length", False, ("cut in analysis", "")),
        (None, "stop", True, ("", "")),
    ],
)
def test_split_completion(text: str | None, finish: str, prefilled: bool, expected: tuple[str, str]) -> None:
    assert split_completion(text, finish, prefilled) == expected


def test_split_completion_takes_a_servers_reasoning_field() -> None:
    assert split_completion("4", "stop", True, server_reasoning=" add ") == ("add", "4")
    assert split_completion("", "length", True, server_reasoning="cut") == ("cut", "")
    # no reasoning from the server: the content is read as the model's raw text
    assert split_completion("cut", "length", True, server_reasoning="") == ("cut", "")
    assert split_completion("4", "stop", True, server_reasoning=None) == ("", "4")


def test_generation_prompt_format() -> None:
    assert generation_prompt_format("<|im_start|>assistant\n<think>\n") == "think"
    assert generation_prompt_format("<|im_start|>assistant\n<think>\n\n</think>\n\n") == "plain"  # no-think
    assert generation_prompt_format("<|end|><|start|>assistant") == "harmony"
    assert generation_prompt_format("<|start_header_id|>assistant<|end_header_id|>\n\n") == "plain"


def test_assistant_message_per_format() -> None:
    joined = join_reasoning("r", "F")
    assert assistant_message(joined, "r", "F", "think") == {"role": "assistant", "content": joined}
    assert assistant_message(joined, "r", "F", "plain") == {"role": "assistant", "content": joined}
    assert assistant_message(joined, " r ", " F ", "harmony") == {
        "role": "assistant",
        "content": "F",
        "thinking": "r",
    }
    empty = assistant_message(join_reasoning("", "F"), "", "F", "harmony")
    assert empty == {"role": "assistant", "content": "F"}
