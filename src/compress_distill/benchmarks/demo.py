"""The demo set: seeded, MultiArith-like word problems plus two-option letter items and yes/no items.

Every answer type the CPU demo needs flows through it (numeric, letter, boolean), spread over three eval
groups so the report has groups to compare.  Items are deliberately easy -- one addition of two numbers
below 10, or a comparison of two such numbers -- because the demo teacher is SmolLM2-135M and rejection
sampling needs it to be right some of the time (two-option items are right half the time by chance).
Answers are computed from the same numbers that are written into the text, so they are correct by
construction.  Same (seed, n_train, n_eval) -> same rows; train rows do not depend on n_eval.
"""

from __future__ import annotations

import random
from typing import Any

from compress_distill.benchmarks.common import render_choices

DATASET = "demo"
NAMES = ("Tom", "Mia", "Sam", "Ana", "Leo", "Zoe", "Ben", "Eva", "Max", "Ivy", "Kai", "Lily")
ITEMS = ("apples", "books", "coins", "pens", "cards", "shells", "stickers", "marbles", "cookies", "stamps")
# cycle of item kinds: half arithmetic, a quarter lettered choice, a quarter yes/no
KINDS = ("numeric", "letter", "numeric", "boolean")
MAX_TRIES = 1000  # redraws per item before the template space counts as exhausted


def _numeric(rng: random.Random) -> tuple[str, list[str], str, str, str, str]:
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    a, b = rng.randint(2, 9), rng.randint(2, 9)  # >= 2 keeps the plural nouns grammatical
    if rng.random() < 0.5:
        q = f"{name} has {a} {item}. {name} gets {b} more {item}. How many {item} does {name} have now?"
    else:
        q = f"There are {a} {item} on the table and {b} {item} in a box. How many {item} are there in all?"
    return q, [], str(a + b), "numeric", "math", "Math"


def _two_people(rng: random.Random) -> tuple[str, str, str, int, int]:
    n1, n2 = rng.sample(NAMES, 2)
    a, b = rng.sample(range(2, 10), 2)  # distinct, so "more" always has an answer
    return n1, n2, rng.choice(ITEMS), a, b


def _letter(rng: random.Random) -> tuple[str, list[str], str, str, str, str]:
    n1, n2, item, a, b = _two_people(rng)
    choices = [n1, n2] if rng.random() < 0.5 else [n2, n1]
    winner = n1 if a > b else n2
    stem = f"{n1} has {a} {item} and {n2} has {b} {item}. Who has more {item}?"
    return (
        render_choices(stem, choices),
        choices,
        "AB"[choices.index(winner)],
        "letter",
        "commonsense",
        "Commonsense",
    )


def _boolean(rng: random.Random) -> tuple[str, list[str], str, str, str, str]:
    n1, n2, item, a, b = _two_people(rng)
    q = f"{n1} has {a} {item}. {n2} has {b} {item}. Does {n1} have more {item} than {n2}? Answer yes or no."
    return q, [], "yes" if a > b else "no", "boolean", "math", "OOD-Reasoning"


_MAKERS = {"numeric": _numeric, "letter": _letter, "boolean": _boolean}


def generate(n_train: int, n_eval: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n_train`` train rows then ``n_eval`` eval rows (questions schema), all question texts distinct."""
    if n_train < 0 or n_eval < 0:
        raise ValueError(f"demo sizes must be >= 0, got n_train={n_train}, n_eval={n_eval}")
    rng = random.Random(f"demo:{seed}")
    seen: set[str] = set()
    rows: list[dict[str, Any]] = []
    for split, n in (("train", n_train), ("eval", n_eval)):
        for i in range(n):
            kind = KINDS[i % len(KINDS)]
            for _ in range(MAX_TRIES):
                question, choices, answer, answer_type, domain, group = _MAKERS[kind](rng)
                if question not in seen:
                    break
            else:
                raise ValueError(
                    f"the demo templates ran out of distinct {kind} questions after {len(seen)} items; "
                    "lower prepare.demo.n_train / n_eval"
                )
            seen.add(question)
            rows.append(
                {
                    "id": f"{DATASET}/{split}/{i}",
                    "dataset": DATASET,
                    "domain": domain,
                    "group": group,
                    "split": split,
                    "question": question,
                    "choices": choices,
                    "answer": answer,
                    "answer_type": answer_type,
                }
            )
    return rows
