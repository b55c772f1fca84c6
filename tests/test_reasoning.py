"""split_reasoning cases of DESIGN §6, join/middle-truncate helpers."""

from __future__ import annotations

import time

import pytest

from compress_distill.reasoning import join_reasoning, middle_truncate, split_reasoning


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
