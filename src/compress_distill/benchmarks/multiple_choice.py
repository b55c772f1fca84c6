"""Lettered multiple choice with a keyed gold: ARC (Challenge, Easy), CommonsenseQA, GPQA, TruthfulQA."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from compress_distill.benchmarks.common import Converted, RowReject, multiple_choice, shuffled, text


def keyed_choices(rec: Mapping[str, Any], row_id: str) -> Converted:
    """ARC and CommonsenseQA: ``choices = {text: [...], label: [...]}`` and ``answerKey`` naming one label.

    Some ARC rows label options '1'..'5' instead of 'A'..'E'; looking the key up among the row's own labels
    (lm-eval's ``doc_to_target``) handles both, and the options are re-lettered A.. in their given order.
    CommonsenseQA's test split has ``answerKey == ""``: unlabeled.
    """
    choices = rec.get("choices") or {}
    texts, labels = list(choices.get("text") or []), [str(x).strip() for x in choices.get("label") or []]
    if len(texts) != len(labels):
        raise RowReject("bad_choices", f"{len(texts)} texts but {len(labels)} labels")
    key = str(rec.get("answerKey") or "").strip()
    if not key:
        raise RowReject("unlabeled", "empty answerKey")
    if key not in labels:
        raise RowReject("bad_answer", f"answerKey {key!r} not among labels {labels}")
    return multiple_choice(text(rec, "question"), texts, labels.index(key))


def gpqa(rec: Mapping[str, Any], row_id: str) -> Converted:
    r"""The gold is the *text* in ``Correct Answer``; it is shuffled among the three incorrect answers.

    Options are only stripped (answers carry trailing newlines).  lm-eval's GPQA utils reuse HellaSwag's
    WikiHow preprocess, whose ``\[.*?\]`` deletion turns ``[Co(NH3)6]3+`` into ``3+``; GPQA has no WikiHow
    markup, so brackets stay.  The shuffle is seeded per row (``common.shuffled``) so the letter never moves.
    """
    options = [
        text(rec, k)
        for k in ("Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3", "Correct Answer")
    ]
    opts, gold = shuffled(options, 3, row_id)
    return multiple_choice(text(rec, "Question"), opts, gold)


def truthfulqa_mc1(rec: Mapping[str, Any], row_id: str) -> Converted:
    """MC1: exactly one label is 1 and it is always the first choice, so the choices are shuffled (seeded)."""
    targets = rec.get("mc1_targets") or {}
    choices, labels = list(targets.get("choices") or []), list(targets.get("labels") or [])
    if len(choices) != len(labels) or labels.count(1) != 1:
        raise RowReject("bad_answer", f"mc1 labels {labels} need exactly one 1 per choice")
    opts, gold = shuffled(choices, labels.index(1), row_id)  # missing texts: multiple_choice rejects them
    return multiple_choice(text(rec, "question"), opts, gold)
