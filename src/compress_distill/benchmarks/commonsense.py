"""OOD-reasoning sets: HellaSwag, WinoGrande, PIQA (lettered options) and BoolQ (yes/no)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from compress_distill.benchmarks.common import Converted, RowReject, is_missing, multiple_choice, text, yes_no

_BRACKETS = re.compile(r"\[.*?\]")


def clean_wikihow(s: str) -> str:
    """lm-eval's HellaSwag preprocess: ' [title]' -> '. ', drop the [header]/[step] markup of the WikiHow
    contexts, collapse double spaces.  HellaSwag only: elsewhere brackets are content ([Co(NH3)6]3+)."""
    s = s.strip().replace(" [title]", ". ")
    s = _BRACKETS.sub("", s)
    return s.replace("  ", " ")


def _int_label(value: Any, mapping: Mapping[str, int] | None = None) -> int:
    """Labels: '0'..'3' strings (HellaSwag), '1'/'2' (WinoGrande) or ints (PIQA); '' or -1 is unlabeled."""
    if is_missing(value) or str(value).strip() == "-1":
        raise RowReject("unlabeled", "no label")
    key = str(value).strip()
    if mapping is not None:
        if key not in mapping:
            raise RowReject("bad_answer", f"label {value!r} not in {sorted(mapping)}")
        return mapping[key]
    try:
        return int(key)
    except ValueError:
        raise RowReject("bad_answer", f"label {value!r} is not an integer") from None


def hellaswag(rec: Mapping[str, Any], row_id: str) -> Converted:
    """lm-eval's preprocessing: ``activity_label: ctx_a ctx_b.capitalize()``, WikiHow artifacts removed."""
    ctx_b = str(rec.get("ctx_b") or "")
    context = clean_wikihow(f"{text(rec, 'activity_label')}: {text(rec, 'ctx_a')} {ctx_b.capitalize()}")
    endings = ["" if is_missing(e) else clean_wikihow(str(e)) for e in rec.get("endings") or []]
    stem = f"Which ending is the most plausible continuation of the text?\n\n{context}"
    return multiple_choice(stem, endings, _int_label(rec.get("label")))


def winogrande(rec: Mapping[str, Any], row_id: str) -> Converted:
    """``sentence`` holds one ``_`` blank; ``answer`` is '1'/'2' (option1/option2), '' on the test split."""
    sentence = text(rec, "sentence")
    if "_" not in sentence:
        raise RowReject("bad_question", "sentence has no '_' blank")
    stem = f"Which option correctly fills the blank (_) in the sentence?\n\n{sentence}"
    gold = _int_label(rec.get("answer"), {"1": 0, "2": 1})
    return multiple_choice(stem, [rec.get("option1"), rec.get("option2")], gold)


def piqa(rec: Mapping[str, Any], row_id: str) -> Converted:
    """``label`` 0 means sol1, 1 means sol2; the test split's -1 is unlabeled."""
    stem = f"Which solution better achieves the goal?\n\nGoal: {text(rec, 'goal')}"
    return multiple_choice(stem, [rec.get("sol1"), rec.get("sol2")], _int_label(rec.get("label")))


def boolq(rec: Mapping[str, Any], row_id: str) -> Converted:
    """Questions are lower-case without '?': capitalise and append it (lm-eval appends '?' too)."""
    question = text(rec, "question").rstrip("?").strip()
    question = question[:1].upper() + question[1:] + "?"
    rendered = f"{text(rec, 'passage')}\n\nQuestion: {question} Answer yes or no."
    if is_missing(rec.get("answer")):
        raise RowReject("unlabeled", "answer is null")
    return Converted(rendered, [], yes_no(rec.get("answer")))
