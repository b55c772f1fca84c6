"""Math word problems: GSM8K, MultiArith, SVAMP (numeric answers) and AQUA-RAT (lettered options)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from compress_distill.benchmarks.common import (
    Converted,
    RowReject,
    canonical_number,
    is_missing,
    letter_index,
    multiple_choice,
    text,
)


def gsm8k(rec: Mapping[str, Any], row_id: str) -> Converted:
    """The gold is the last line of the worked solution, ``#### 1,234``; commas and '$' are stripped."""
    solution = text(rec, "answer")
    if "####" not in solution:
        raise RowReject("bad_answer", "solution has no '#### N' line")
    return Converted(text(rec, "question"), [], canonical_number(solution.split("####")[-1]))


def multiarith(rec: Mapping[str, Any], row_id: str) -> Converted:
    # final_ans is a string column on ChilleD/MultiArith ("change dtype of final_ans to str")
    return Converted(text(rec, "question"), [], canonical_number(rec.get("final_ans")))


def svamp(rec: Mapping[str, Any], row_id: str) -> Converted:
    """Body + " " + Question (what question_concat holds); Answer may be float64 (8.0 -> '8') or a string."""
    body, question = text(rec, "Body"), text(rec, "Question")
    return Converted(f"{body} {question}", [], canonical_number(rec.get("Answer")))


_OPTION_PREFIX = re.compile(r"^\s*\(?([A-Ea-e])\s*\)\s*")


def aqua_rat(rec: Mapping[str, Any], row_id: str) -> Converted:
    """Options carry their own ``A)`` prefix (spacing varies): strip it, then re-letter in order."""
    options = rec.get("options") or []
    stripped = []
    for i, opt in enumerate(options):
        raw = "" if is_missing(opt) else str(opt)  # multiple_choice rejects the empty option
        m = _OPTION_PREFIX.match(raw)
        if m and m.group(1).upper() != "ABCDE"[i]:
            raise RowReject("bad_choices", f"option {i} is labelled {m.group(1)!r}")
        stripped.append(raw[m.end() :] if m else raw)
    return multiple_choice(text(rec, "question"), stripped, letter_index(rec.get("correct"), len(stripped)))
