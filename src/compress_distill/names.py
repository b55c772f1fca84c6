"""The project's enumerations and naming rules, each defined once.

The ``Literal`` types type the models (the judge's verdict, a benchmark spec); the tuples derived from them are
what code validates against, counts and lists.  Standard library only, so light modules (``answers.py``, the
benchmark loaders) import it without pulling in pyarrow.
"""

from __future__ import annotations

from typing import Literal, get_args

# How a gold answer is graded (answers.py); one per question.
AnswerType = Literal["numeric", "letter", "boolean", "latex", "text"]
ANSWER_TYPES: tuple[str, ...] = get_args(AnswerType)

# The paper's evaluation groups, in its table order (Table 7).
EvalGroup = Literal["Math", "Science", "Medicine", "Commonsense", "OOD-Reasoning", "OOD-Knowledge"]
EVAL_GROUPS: tuple[str, ...] = get_args(EvalGroup)

# The judge's enumerations (paper Appendix G).
FailureMode = Literal[
    "contradiction",
    "unsupported_claim",
    "omitted_key_step",
    "answer_mismatch",
    "overcompression",
    "incoherent",
    "empty_original",
    "empty_compressed",
]
Verdict = Literal["faithful", "partially_faithful", "unfaithful"]
FAILURE_MODES: tuple[str, ...] = get_args(FailureMode)
VERDICTS: tuple[str, ...] = get_args(Verdict)

# A source (trace config, traces file stem, last part of a run id) is one of these or ``compressed-<C>``.
# ``ift``: the teacher's answers without reasoning (stages/ift.py), for instruction tuning at equal compute.
IFT = "ift"
PLAIN_SOURCES: tuple[str, ...] = ("raw", "truncated", "answer-only", IFT)
COMPRESSED_PREFIX = "compressed-"
# The verify stage's pick among all compressors is source ``compressed-verified``, so no compressor may be
# called ``verified``.
VERIFIED = "verified"


def compressed_source(compressor: str) -> str:
    """The source name of compressor ``compressor``'s traces: ``compressed-<C>``."""
    return COMPRESSED_PREFIX + compressor


def compressor_of(source: str) -> str | None:
    """The compressor id of a ``compressed-<C>`` source; ``None`` for any other source."""
    return source.removeprefix(COMPRESSED_PREFIX) if source.startswith(COMPRESSED_PREFIX) else None
