"""Medical exam questions: MedQA (USMLE, 4 options), MedMCQA, MedExpQA (English)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from compress_distill.benchmarks.common import (
    Converted,
    RowReject,
    is_missing,
    letter_index,
    multiple_choice,
    text,
)


def medqa(rec: Mapping[str, Any], row_id: str) -> Converted:
    """GBaker/MedQA-USMLE-4-options: ``options`` is a struct {A, B, C, D}; the gold letter, ``answer_idx``."""
    options = rec.get("options") or {}
    keys = sorted(k for k in options if not is_missing(options[k]))
    if keys != list("ABCDE"[: len(keys)]):
        raise RowReject("bad_choices", f"option keys {keys}")
    choices = [options[k] for k in keys]
    return multiple_choice(text(rec, "question"), choices, letter_index(rec.get("answer_idx"), len(choices)))


def medmcqa(rec: Mapping[str, Any], row_id: str) -> Converted:
    """``opa``..``opd``, ``cop`` an int 0..3 (a ClassLabel); the test split has ``cop == -1``: unlabeled."""
    cop = rec.get("cop")
    if cop is None or is_missing(cop):
        raise RowReject("unlabeled", "cop is null")
    choices = [rec.get(k) for k in ("opa", "opb", "opc", "opd")]
    return multiple_choice(text(rec, "question"), choices, int(cop))


def medexpqa(rec: Mapping[str, Any], row_id: str) -> Converted:
    """``options`` is keyed "1".."5" (the 5th is null on 4-option exams) and ``correct_option`` is 1-based.

    Missing options (null, NaN, blank) are dropped and the rest lettered in key order; the gold index is the
    correct key's position among the kept keys (the lighteval adapter's rule).  Values must arrive decoded:
    a NaN left in a column makes datasets type it ``Json``, whose raw Arrow values are JSON text (``'"e"'``);
    ``hub.iter_records`` reads through the decoding Python formatter for that reason.
    """
    options = rec.get("options") or {}
    keys = sorted((k for k in options if not is_missing(options[k])), key=int)
    correct = rec.get("correct_option")
    if correct is None or is_missing(correct):
        raise RowReject("unlabeled", "correct_option is null")
    try:
        gold = keys.index(str(int(correct)))
    except ValueError:
        raise RowReject("bad_answer", f"correct_option {correct!r} not among options {keys}") from None
    return multiple_choice(text(rec, "full_question"), [options[k] for k in keys], gold)
