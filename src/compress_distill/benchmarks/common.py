"""Shared pieces of the loaders: the spec of a source, row rejects, choice rendering, answer canonicalisation.

A loader turns one Hub record into ``(question, choices, answer)``; everything else a questions row carries
(id, dataset, domain, group, split, answer_type) comes from the spec, so the loaders stay small and pure.
A record that cannot become a question (no label, empty text, unparseable answer) raises ``RowReject`` with
a reason; the prepare stage counts it instead of failing the run or dropping it silently.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from compress_distill.errors import UserError
from compress_distill.names import AnswerType, EvalGroup

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"

# Fixed seed of the option shuffles (GPQA, TruthfulQA MC1).  It is a constant, not a param, so a question id
# always renders with the same option order and answer letter, whatever prepare.seed says.
SHUFFLE_SEED = 42


class BenchmarkError(UserError, ValueError):
    """A source cannot be loaded at all (missing column, unreachable repo); phrased as what to fix."""


class RowReject(Exception):
    """One record cannot become a question; ``reason`` is the metrics key it is counted under."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Converted:
    """What a loader makes of one record."""

    question: str  # rendered text, lettered choices included
    choices: list[str]  # option texts without letters; empty for numeric/boolean answers
    answer: str  # canonical: "A".., a decimal string, "yes"/"no"


# record -> Converted; ``row_id`` seeds per-row shuffles so they do not depend on row order or sampling
Converter = Callable[[Mapping[str, Any], str], Converted]


@dataclass(frozen=True)
class Pin:
    """The commit a Hub repo is read at unless ``prepare.revisions`` overrides it."""

    branch: str  # the branch the sha was taken from; what --check-sources compares against
    sha: str | None  # None: not pinned yet; prepare reads the branch head and records its sha
    verified: bool  # True once someone checked the sha against the Hub (dataset_info, the commit page)
    how: str  # where the sha comes from


@dataclass(frozen=True)
class DatasetSpec:
    """Where a benchmark lives on the Hub and how it maps onto the questions table."""

    id: str
    hub_id: str | None  # None: generated locally (the demo)
    config: str | None  # load_dataset(name=...); None for repos without YAML configs
    revision: str  # the branch: "main", or "refs/convert/parquet" for script repos (pins: registry.PINS)
    train_splits: tuple[str, ...]  # Hub splits feeding questions/train (traces are generated on these)
    eval_splits: tuple[str, ...]  # Hub splits feeding questions/eval (students are scored on these)
    domain: str  # subject domain (selects a compressor domain prompt)
    group: EvalGroup  # eval-report group (paper §4)
    answer_type: AnswerType
    columns: tuple[str, ...]  # columns the converter reads; checked before any row is converted
    convert: Converter | None = None
    # file pattern with a {split} placeholder, for layouts whose config names datasets cannot see: the
    # refs/convert/parquet branch stores <config>/<split>/0000.parquet with no YAML card, and load_dataset
    # would merge every config into one "default" (measured with datasets 5.2).  When set, `config` is
    # documentation only and the pattern selects the files.
    data_files: str | None = None
    # MMLU: keep only these values of the `subject` column
    subjects: tuple[str, ...] = ()
    # the Hub repo needs accepted terms and a token (prepare checks access before downloading anything)
    gated: bool = False
    note: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys([*self.train_splits, *self.eval_splits]))


# --------------------------------------------------------------------------------------------- helpers
def is_missing(value: Any) -> bool:
    """None, a float NaN (pandas-read CSV/JSON cells) or blank text: never rendered as 'nan' or ''."""
    if value is None:
        return True
    if isinstance(value, float):
        return math.isnan(value)
    return isinstance(value, str) and not value.strip()


def text(rec: Mapping[str, Any], key: str) -> str:
    """A required text field, stripped; empty, null or NaN is a reject, not a question with no text."""
    value = rec.get(key)
    if is_missing(value):
        raise RowReject("empty_field", f"{key} is empty")
    return str(value).strip()


def render_choices(stem: str, choices: Sequence[str]) -> str:
    """``stem`` then one ``A. option`` line per choice: the format lm-eval uses for MMLU-style prompts."""
    if len(choices) > len(LETTERS):
        raise RowReject("too_many_choices", f"{len(choices)} options")
    lines = "\n".join(f"{LETTERS[i]}. {c}" for i, c in enumerate(choices))
    return f"{stem.strip()}\n\n{lines}"


def multiple_choice(stem: str, choices: Sequence[Any], gold_index: int) -> Converted:
    """Render lettered options and the gold letter; empty options and bad indices are rejects."""
    opts = ["" if is_missing(c) else str(c).strip() for c in choices]
    if len(opts) < 2:
        raise RowReject("too_few_choices", f"{len(opts)} option(s)")
    if any(not o for o in opts):
        raise RowReject("empty_choice", f"options {opts!r}")
    if not 0 <= gold_index < len(opts):
        raise RowReject("unlabeled" if gold_index < 0 else "bad_answer", f"gold index {gold_index}")
    return Converted(render_choices(stem, opts), opts, LETTERS[gold_index])


def letter_index(letter: Any, n: int) -> int:
    """'A'..'Z' -> 0-based index; empty or missing means the record is unlabeled (e.g. a test split)."""
    if letter is None or str(letter).strip() == "":
        raise RowReject("unlabeled", "empty answer key")
    key = str(letter).strip().upper()
    if len(key) != 1 or key not in LETTERS[:n]:
        raise RowReject("bad_answer", f"answer {letter!r} is not one of {LETTERS[:n]}")
    return LETTERS.index(key)


def shuffled(options: Sequence[Any], gold_index: int, row_id: str) -> tuple[list[Any], int]:
    """Shuffle options with a per-row seed so the gold position leaks nothing and never changes between runs.

    Seeding by row id (not one sequential RNG as lm-eval's GPQA does) keeps each question's order independent
    of which other rows were loaded or sampled.
    """
    order = list(range(len(options)))
    random.Random(f"{SHUFFLE_SEED}:{row_id}").shuffle(order)
    return [options[i] for i in order], order.index(gold_index)


_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")


def canonical_number(value: Any) -> str:
    """'1,000' -> '1000', 8.0 -> '8', '$5' -> '5', '-0.50' -> '-0.5'; anything else is a bad_answer reject."""
    if isinstance(value, bool) or value is None:
        raise RowReject("bad_answer", f"not a number: {value!r}")
    raw = str(value).strip().replace(",", "").replace("$", "").rstrip(".").strip()
    if not _NUMBER.match(raw):
        raise RowReject("bad_answer", f"not a number: {value!r}")
    try:
        num = Decimal(raw)
    except InvalidOperation:  # pragma: no cover - the regex admits only Decimal-parsable text
        raise RowReject("bad_answer", f"not a number: {value!r}") from None
    if num == num.to_integral_value():
        return str(int(num))
    # plain positional notation, no exponent, no trailing zeros
    return format(num.normalize(), "f")


def yes_no(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    low = str(value).strip().lower()
    if low in ("true", "yes", "1"):
        return "yes"
    if low in ("false", "no", "0"):
        return "no"
    raise RowReject("bad_answer", f"not a boolean: {value!r}")
