"""The registry: in sync with config.DATASET_IDS, splits per the paper's Table 1, MMLU subject groups."""

from __future__ import annotations

import re

import pytest

from compress_distill.benchmarks import mmlu
from compress_distill.benchmarks.common import BenchmarkError
from compress_distill.benchmarks.registry import PINS, SPECS, get_spec
from compress_distill.config import DATASET_IDS
from compress_distill.names import ANSWER_TYPES, EVAL_GROUPS


def test_registry_ids_equal_config_ids() -> None:
    assert set(SPECS) == set(DATASET_IDS)
    assert all(spec.id == key for key, spec in SPECS.items())


def test_get_spec_unknown_id_names_the_valid_ones() -> None:
    with pytest.raises(BenchmarkError, match="unknown dataset id 'gsm8'; valid ids: .*gsm8k"):
        get_spec("gsm8")


@pytest.mark.parametrize("spec", [s for s in SPECS.values() if s.hub_id], ids=lambda s: s.id)
def test_hub_specs_are_complete(spec) -> None:  # type: ignore[no-untyped-def]
    assert spec.group in EVAL_GROUPS and spec.answer_type in ANSWER_TYPES
    assert spec.convert is not None and spec.columns and spec.revision
    assert spec.train_splits or spec.eval_splits
    assert not set(spec.train_splits) & set(spec.eval_splits)
    # a data_files pattern is needed where datasets cannot see config names (the converted branch) and for
    # MMLU, whose `all` config would otherwise also build auxiliary_train
    needs_files = spec.revision == "refs/convert/parquet" or spec.hub_id == "cais/mmlu"
    assert (spec.data_files is not None) == needs_files
    if spec.data_files:
        assert "{split}" in spec.data_files and spec.config in spec.data_files
    # the pin belongs to the branch the spec reads
    assert PINS[spec.hub_id].branch == spec.revision
    assert spec.gated == (spec.hub_id == "Idavidrein/gpqa")


def test_every_source_has_a_pin_entry_and_shas_are_full() -> None:
    assert set(PINS) == {s.hub_id for s in SPECS.values() if s.hub_id}
    for hub_id, pin in PINS.items():
        assert pin.sha is None or re.fullmatch(r"[0-9a-f]{40}", pin.sha), hub_id
        assert pin.how, hub_id
        # nothing has been checked against the Hub from here yet: a pin turns verified only after a check
        assert not pin.verified, hub_id


def test_splits_follow_table_1() -> None:
    def splits(d: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
        return SPECS[d].train_splits, SPECS[d].eval_splits

    # no labeled held-out split: trace generation only; SVAMP's 1,000 = Hub train + test
    assert splits("svamp") == (("train", "test"), ())
    assert splits("gpqa_diamond") == (("train",), ())
    # hidden test labels: evaluate on validation
    assert splits("commonsense_qa") == (("train",), ("validation",))
    assert splits("medmcqa") == (("train",), ("validation",))
    for d in ("gsm8k", "multiarith", "aqua_rat", "arc_challenge", "medqa", "medexpqa"):
        assert splits(d) == (("train",), ("test",)), d
    for d in ("mmlu_stem", "mmlu_medical"):
        assert splits(d) == (("dev",), ("test",)), d
    ood = [d for d, s in SPECS.items() if s.group.startswith("OOD")]
    assert sorted(ood) == sorted(
        [
            "hellaswag",
            "winogrande",
            "piqa",
            "arc_easy",
            "boolq",
            "truthfulqa",
            "mmlu_humanities",
            "mmlu_social_sciences",
            "mmlu_other",
        ]
    )
    assert all(SPECS[d].train_splits == () for d in ood)


# test-split sizes from HF-legacy hendrycks_test/dataset_infos.json, for the subjects the groups use
MMLU_TEST_SIZES = {
    "abstract_algebra": 100,
    "college_biology": 144,
    "college_chemistry": 100,
    "college_computer_science": 100,
    "college_mathematics": 100,
    "electrical_engineering": 145,
    "high_school_chemistry": 203,
    "high_school_mathematics": 270,
    "machine_learning": 112,
    "anatomy": 135,
    "clinical_knowledge": 265,
    "college_medicine": 173,
    "medical_genetics": 100,
    "nutrition": 306,
    "professional_medicine": 272,
    "virology": 166,
}


def test_mmlu_groups_match_table_1_sizes_and_are_disjoint() -> None:
    assert len(mmlu.STEM) == 9 and sum(MMLU_TEST_SIZES[s] for s in mmlu.STEM) == 1274  # dev 45 = 9 x 5
    assert len(mmlu.MEDICAL) == 7 and sum(MMLU_TEST_SIZES[s] for s in mmlu.MEDICAL) == 1417  # dev 35
    groups = [mmlu.STEM, mmlu.MEDICAL, mmlu.HUMANITIES, mmlu.SOCIAL_SCIENCES, mmlu.OTHER]
    flat = [s for g in groups for s in g]
    assert len(flat) == len(set(flat)) == 9 + 7 + 13 + 12 + 7
    assert SPECS["mmlu_medical"].subjects == mmlu.MEDICAL and SPECS["mmlu_other"].subjects == mmlu.OTHER
