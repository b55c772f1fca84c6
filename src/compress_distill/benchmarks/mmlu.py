"""MMLU (``cais/mmlu``): the in-distribution STEM and Medical subject groups and three OOD-Knowledge groups.

All five groups are read from the ``all`` config's files (one per split, with a ``subject`` column) and
filtered by subject, so a full prepare downloads two small files (dev, test) instead of 57 subject configs.
The files are named through ``data_files``: ``load_dataset(..., "all", split="dev")`` would also download
and convert ``auxiliary_train`` (~100k rows, ~161 MB) because a builder prepares every split of its config.

Subject lists.  The paper gives only sizes (Table 1): MMLU-STEM "9 subjects", dev 45 / test 1,274, and
MMLU-Medical "7 subjects", dev 35 / test 1,417.
- Medical: the only 7-subject set drawn from the medical/biology subjects whose test sizes sum to 1,417 is
  Hendrycks' "health" subcategory without human_aging (checked by enumeration against the per-subject
  counts in HF-legacy ``hendrycks_test/dataset_infos.json``).  It differs from MultiMedQA's 6 (which adds
  college_biology and lacks nutrition and virology: 1,089 test questions).
- STEM: 52 nine-subject subsets of Hendrycks' 18 STEM subjects sum to 1,274; the paper does not say which
  it used.  We take the one that keeps the most mathematics/chemistry/computing subjects (the reasoning-heavy
  part of STEM, where traces matter): its counts match Table 1 exactly.  The other 9 STEM subjects are unused.
- OOD-Knowledge: Hendrycks' humanities (13) and social sciences (12) unchanged; "other" is Hendrycks' 14
  minus the 7 Medical subjects (they are in distribution), leaving 7.  No subject is in two groups.
"""

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

STEM: tuple[str, ...] = (
    "abstract_algebra",  # test 100
    "college_biology",  # 144
    "college_chemistry",  # 100
    "college_computer_science",  # 100
    "college_mathematics",  # 100
    "electrical_engineering",  # 145
    "high_school_chemistry",  # 203
    "high_school_mathematics",  # 270
    "machine_learning",  # 112   -> 1,274
)
MEDICAL: tuple[str, ...] = (
    "anatomy",  # 135
    "clinical_knowledge",  # 265
    "college_medicine",  # 173
    "medical_genetics",  # 100
    "nutrition",  # 306
    "professional_medicine",  # 272
    "virology",  # 166   -> 1,417
)
HUMANITIES: tuple[str, ...] = (
    "formal_logic",
    "high_school_european_history",
    "high_school_us_history",
    "high_school_world_history",
    "international_law",
    "jurisprudence",
    "logical_fallacies",
    "moral_disputes",
    "moral_scenarios",
    "philosophy",
    "prehistory",
    "professional_law",
    "world_religions",
)
SOCIAL_SCIENCES: tuple[str, ...] = (
    "econometrics",
    "high_school_geography",
    "high_school_government_and_politics",
    "high_school_macroeconomics",
    "high_school_microeconomics",
    "high_school_psychology",
    "human_sexuality",
    "professional_psychology",
    "public_relations",
    "security_studies",
    "sociology",
    "us_foreign_policy",
)
OTHER: tuple[str, ...] = (
    "business_ethics",
    "global_facts",
    "human_aging",
    "management",
    "marketing",
    "miscellaneous",
    "professional_accounting",
)


def mmlu(rec: Mapping[str, Any], row_id: str) -> Converted:
    """``choices`` (4 strings) and ``answer`` an int 0..3 (ClassLabel A..D)."""
    answer = rec.get("answer")
    if answer is None or is_missing(answer):
        raise RowReject("unlabeled", "answer is null")
    if isinstance(answer, str):  # a copy stored as letters instead of the ClassLabel int
        answer = letter_index(answer, 4)
    return multiple_choice(text(rec, "question"), list(rec.get("choices") or []), int(answer))
