"""The demo generator: seeded, every answer type, answers correct by construction."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from compress_distill.benchmarks import demo
from compress_distill.schema import QUESTIONS, to_table


def test_same_seed_same_rows_and_other_seed_other_rows() -> None:
    assert demo.generate(24, 12, seed=3) == demo.generate(24, 12, seed=3)
    assert demo.generate(24, 12, seed=3) != demo.generate(24, 12, seed=4)


def test_train_rows_do_not_depend_on_eval_size() -> None:
    a = [r for r in demo.generate(16, 4, seed=0) if r["split"] == "train"]
    b = [r for r in demo.generate(16, 40, seed=0) if r["split"] == "train"]
    assert a == b


def test_shape_types_groups_and_distinct_texts() -> None:
    rows = demo.generate(24, 12, seed=0)
    to_table(rows, QUESTIONS)
    assert Counter(r["split"] for r in rows) == {"train": 24, "eval": 12}
    assert [r["id"] for r in rows[:2]] == ["demo/train/0", "demo/train/1"] and rows[24]["id"] == "demo/eval/0"
    assert Counter(r["answer_type"] for r in rows if r["split"] == "eval") == {
        "numeric": 6,
        "letter": 3,
        "boolean": 3,
    }
    assert {r["group"] for r in rows if r["split"] == "eval"} == {"Math", "Commonsense", "OOD-Reasoning"}
    assert len({r["question"] for r in rows}) == len(rows)


def test_answers_are_correct_by_construction() -> None:
    rows = demo.generate(200, 100, seed=7)
    letters = Counter()
    for r in rows:
        nums = [int(n) for n in re.findall(r"\b\d+\b", r["question"])]
        assert len(nums) == 2 and all(2 <= n <= 9 for n in nums), r["question"]
        if r["answer_type"] == "numeric":
            assert r["answer"] == str(sum(nums)) and r["choices"] == []
        elif r["answer_type"] == "boolean":
            assert r["answer"] == ("yes" if nums[0] > nums[1] else "no")
        else:
            # "X has a things and Y has b things. Who has more things?" -> the option naming the larger holder
            first, second = re.match(r"(\w+) has \d+ \w+ and (\w+) has", r["question"]).groups()  # type: ignore[union-attr]
            winner = first if nums[0] > nums[1] else second
            assert r["choices"][ord(r["answer"]) - 65] == winner
            assert r["question"].endswith(f"\n\nA. {r['choices'][0]}\nB. {r['choices'][1]}")
            letters[r["answer"]] += 1
    assert letters["A"] > 10 and letters["B"] > 10  # the gold letter is not always in one position


def test_negative_sizes_are_an_error() -> None:
    with pytest.raises(ValueError, match="demo sizes"):
        demo.generate(-1, 2)
