"""One test per loader, through datasets.load_dataset on the Hub-shaped fixtures; quirks on single records."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from compress_distill.benchmarks import commonsense, math_word, medical, mmlu, multiple_choice, registry
from compress_distill.benchmarks.common import BenchmarkError, RowReject, canonical_number
from compress_distill.schema import QUESTIONS, to_table

_CACHE: dict[str, registry.LoadResult] = {}


@pytest.fixture
def load(hub_mirror: Path, ds_cache: Path):  # type: ignore[no-untyped-def]
    def _load(dataset_id: str) -> registry.LoadResult:
        if dataset_id not in _CACHE:
            _CACHE[dataset_id] = registry.load(dataset_id, hub_mirror=hub_mirror, cache_dir=ds_cache)
        res = _CACHE[dataset_id]
        to_table(res.rows, QUESTIONS)  # every row fits the questions schema
        spec = registry.get_spec(dataset_id)
        for r in res.rows:
            assert r["dataset"] == dataset_id and r["domain"] == spec.domain and r["group"] == spec.group
            assert r["answer_type"] == spec.answer_type and r["id"].startswith(f"{dataset_id}/")
            if r["answer_type"] == "letter":  # the gold letter names one of the rendered options
                i = "ABCDEFGHIJ".index(r["answer"])
                assert f"\n{r['answer']}. {r['choices'][i]}" in r["question"]
        return res

    return _load


def by_id(res: registry.LoadResult) -> dict[str, dict[str, Any]]:
    return {r["id"]: r for r in res.rows}


def splits(res: registry.LoadResult) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in res.rows:
        out[r["split"]] = out.get(r["split"], 0) + 1
    return out


# --------------------------------------------------------------------------------------------- math
def test_gsm8k(load) -> None:  # type: ignore[no-untyped-def]
    res = load("gsm8k")
    rows = by_id(res)
    assert splits(res) == {"train": 4, "eval": 2}
    assert rows["gsm8k/train/1"]["answer"] == "1200"  # '#### 1,200' with the comma stripped
    assert rows["gsm8k/train/3"]["answer"] == "13"  # '#### $13'
    assert rows["gsm8k/test/1"] == {
        "id": "gsm8k/test/1",
        "dataset": "gsm8k",
        "domain": "math",
        "group": "Math",
        "split": "eval",
        "question": "Sara had 9 pens and lost 4. How many are left?",
        "choices": [],
        "answer": "5",
        "answer_type": "numeric",
    }
    assert res.rejects == {"bad_answer": 1} and res.rejected[0]["id"] == "gsm8k/train/4"
    assert res.rows_in == 7


def test_multiarith(load) -> None:  # type: ignore[no-untyped-def]
    res = load("multiarith")
    assert splits(res) == {"train": 2, "eval": 1}
    assert by_id(res)["multiarith/test/0"]["answer"] == "12"


def test_svamp_is_train_only_and_floats_are_canonical(load) -> None:  # type: ignore[no-untyped-def]
    res = load("svamp")
    rows = by_id(res)
    assert splits(res) == {"train": 3}  # Hub train + test both feed trace generation
    # a NaN Answer (pandas-read JSON) is a counted reject, never the number 'nan'
    assert res.rejects == {"bad_answer": 1} and res.rejected[0]["id"] == "svamp/test/1"
    assert rows["svamp/train/0"]["question"] == (
        "Jack had 8 pens. Mary gave him 3 more pens. How many pens does Jack have now?"
    )
    assert rows["svamp/train/0"]["answer"] == "11"  # 11.0
    assert rows["svamp/train/1"]["answer"] == "3.5"
    assert rows["svamp/test/0"]["split"] == "train" and rows["svamp/test/0"]["answer"] == "8"


def test_aqua_rat_reads_only_the_raw_config_and_strips_prefixes(load) -> None:  # type: ignore[no-untyped-def]
    res = load("aqua_rat")
    rows = by_id(res)
    assert splits(res) == {"train": 2, "eval": 1}  # validation is unused; 'tokenized' never mixed in
    assert rows["aqua_rat/train/0"]["choices"] == ["30", "40", "45", "50", "60"]
    assert rows["aqua_rat/train/1"]["choices"][0] == "15"  # 'A) 15'
    assert rows["aqua_rat/train/0"]["answer"] == "B"
    assert rows["aqua_rat/test/0"]["question"].startswith("A square has side 5. What is its area?\n\nA. 10\n")


# --------------------------------------------------------------------------------------------- science
def test_arc_challenge_numeric_labels(load) -> None:  # type: ignore[no-untyped-def]
    res = load("arc_challenge")
    rows = by_id(res)
    assert splits(res) == {"train": 2, "eval": 1}
    assert rows["arc_challenge/train/1"]["answer"] == "C"  # answerKey '3' among labels '1'..'4'
    assert "\nC. a copper wire" in rows["arc_challenge/train/1"]["question"]
    assert rows["arc_challenge/test/0"]["choices"] == ["Venus", "Earth", "Mercury", "Mars", "Jupiter"]
    assert rows["arc_challenge/test/0"]["answer"] == "C"


def test_arc_easy_is_ood_eval_only(load) -> None:  # type: ignore[no-untyped-def]
    res = load("arc_easy")
    assert splits(res) == {"eval": 1}
    assert res.rows[0]["group"] == "OOD-Reasoning" and res.rows[0]["answer"] == "C"


def test_gpqa_diamond_shuffles_the_correct_text_with_a_fixed_seed(load) -> None:  # type: ignore[no-untyped-def]
    res = load("gpqa_diamond")
    assert splits(res) == {"train": 3}
    first, second, third = res.rows
    assert first["choices"][ord(first["answer"]) - 65] == "sqrt(k/m)"  # trailing newline stripped
    assert second["choices"][ord(second["answer"]) - 65] == "thionyl chloride"
    assert "sodium chloride [title] in water" in second["choices"]  # GPQA text is never WikiHow-cleaned
    # brackets are chemistry: [Co(NH3)6]3+ must not become '3+' (the HellaSwag cleaner's effect)
    assert third["choices"][ord(third["answer"]) - 65] == "[Co(NH3)6]3+"
    assert sorted(third["choices"]) == sorted(
        ["[Co(NH3)6]3+", "[Co(NH3)6]2+", "[CoCl6]3-", "Co3+ with [NH3] = 6 M"]
    )
    assert "[Co(NH3)6]Cl3" in third["question"]
    # the empty CSV cell (NaN) is a reject, not an option 'nan'
    assert res.rejects == {"empty_field": 1} and res.rejected[0]["id"] == "gpqa_diamond/train/3"
    # the same order on every load
    rec = {
        "Question": "Q?",
        "Correct Answer": "right",
        "Incorrect Answer 1": "w1",
        "Incorrect Answer 2": "w2",
        "Incorrect Answer 3": "w3",
    }
    runs = {tuple(multiple_choice.gpqa(rec, "gpqa_diamond/train/7").choices) for _ in range(3)}
    assert len(runs) == 1
    golds = {multiple_choice.gpqa(rec, f"gpqa_diamond/train/{i}").answer for i in range(40)}
    assert golds == set("ABCD")  # the correct answer is not parked in one position


def test_mmlu_stem_trains_on_dev_and_filters_subjects(load) -> None:  # type: ignore[no-untyped-def]
    res = load("mmlu_stem")
    rows = by_id(res)
    assert set(rows) == {"mmlu_stem/dev/0", "mmlu_stem/test/0", "mmlu_stem/test/1"}  # astronomy is unused
    assert rows["mmlu_stem/dev/0"]["split"] == "train" and rows["mmlu_stem/test/1"]["answer"] == "B"
    assert (
        rows["mmlu_stem/test/0"]["question"]
        == "What is the order of the group Z_6?\n\nA. 2\nB. 3\nC. 6\nD. 12"
    )


# --------------------------------------------------------------------------------------------- commonsense
def test_commonsense_qa_evaluates_on_validation(load) -> None:  # type: ignore[no-untyped-def]
    res = load("commonsense_qa")
    assert splits(res) == {"train": 2, "eval": 1}
    assert by_id(res)["commonsense_qa/validation/0"]["answer"] == "A"
    assert len(by_id(res)["commonsense_qa/train/1"]["choices"]) == 5


def test_hellaswag_preprocessing(load) -> None:  # type: ignore[no-untyped-def]
    res = load("hellaswag")
    row, wikihow = res.rows
    assert row["id"] == "hellaswag/validation/0" and row["group"] == "OOD-Reasoning"
    assert "Making a sandwich: A man puts two slices of bread on a plate. He\n" in row["question"]
    assert row["choices"][1] == "throws the plate. out the window."
    assert row["answer"] == "A"
    # WikiHow markup ([header], [title], [step]) is removed as lm-eval's HellaSwag preprocess does
    assert (
        "Home and Garden: How to dry wet shoes. Remove the insoles. Take them out gently."
        in wikihow["question"]
    )
    assert "[" not in wikihow["question"]
    assert wikihow["choices"][2] == "Stuff the shoes with newspaper. Replace it every few hours."
    assert wikihow["answer"] == "C"


def test_winogrande_options(load) -> None:  # type: ignore[no-untyped-def]
    (row,) = load("winogrande").rows  # winogrande_xl validation only; winogrande_xs is not read
    assert row["choices"] == ["Anna", "Maria"] and row["answer"] == "B"
    assert "because _ was celebrating" in row["question"]


def test_piqa_sol1_sol2(load) -> None:  # type: ignore[no-untyped-def]
    (row,) = load("piqa").rows
    assert row["id"] == "piqa/validation/0"
    assert row["choices"] == ["Fill them with water.", "Stuff them with newspaper."] and row["answer"] == "B"


def test_boolq_yes_no_and_question_mark(load) -> None:  # type: ignore[no-untyped-def]
    res = load("boolq")
    assert splits(res) == {"eval": 2}
    row = res.rows[0]
    assert row["answer"] == "no" and row["answer_type"] == "boolean" and row["choices"] == []
    assert row["question"] == (
        "Water is a liquid at room temperature.\n\nQuestion: Is water dry? Answer yes or no."
    )


def test_truthfulqa_mc1_is_shuffled(load) -> None:  # type: ignore[no-untyped-def]
    res = load("truthfulqa")
    assert splits(res) == {"eval": 2}
    first, second = res.rows
    assert first["choices"][ord(first["answer"]) - 65] == "It passes through your digestive system."
    assert second["choices"][ord(second["answer"]) - 65] == "No, it is too narrow to see."
    # on the Hub the true answer is always index 0; after the seeded shuffle it is not always 'A'
    assert {r["answer"] for r in res.rows} != {"A"}


def test_mmlu_ood_groups(load) -> None:  # type: ignore[no-untyped-def]
    assert [r["id"] for r in load("mmlu_humanities").rows] == ["mmlu_humanities/test/5"]
    assert [r["id"] for r in load("mmlu_social_sciences").rows] == ["mmlu_social_sciences/test/6"]
    other = load("mmlu_other").rows
    assert [r["id"] for r in other] == ["mmlu_other/test/7"]  # clinical_knowledge belongs to Medical
    assert all(r["group"] == "OOD-Knowledge" and r["split"] == "eval" for r in other)


# --------------------------------------------------------------------------------------------- medicine
def test_medqa(load) -> None:  # type: ignore[no-untyped-def]
    res = load("medqa")
    assert splits(res) == {"train": 2, "eval": 1}
    row = by_id(res)["medqa/train/1"]
    assert row["answer"] == "C" and row["choices"][2] == "vitamin C" and row["group"] == "Medicine"


def test_medmcqa_cop(load) -> None:  # type: ignore[no-untyped-def]
    res = load("medmcqa")
    assert splits(res) == {"train": 2, "eval": 1}  # test (cop == -1) is never read
    assert res.rejects == {"empty_choice": 1} and res.rejected[0]["id"] == "medmcqa/train/2"  # opd null
    assert by_id(res)["medmcqa/train/0"]["answer"] == "B"
    assert by_id(res)["medmcqa/validation/0"]["answer"] == "C"


def test_medexpqa_one_based_and_null_fifth_option(load) -> None:  # type: ignore[no-untyped-def]
    res = load("medexpqa")
    rows = by_id(res)
    assert rows["medexpqa/train/0"]["choices"] == ["ECG", "MRI", "colonoscopy", "skin biopsy"]
    assert rows["medexpqa/train/0"]["answer"] == "A"
    assert rows["medexpqa/train/1"]["answer"] == "B"
    assert rows["medexpqa/test/0"]["answer"] == "E"
    # the NaN options make datasets type option "5" as Json: decoded, "ECG" is not the quoted '"ECG"'
    assert rows["medexpqa/test/0"]["choices"] == ["CT scan", "ultrasound", "PET", "x-ray", "ECG"]
    assert rows["medexpqa/test/1"]["choices"] == [
        "calcium gluconate",
        "[insulin] and glucose",
        "salbutamol",
        "furosemide",
    ]
    assert (
        "[K+] = 6.8 mmol/L" in rows["medexpqa/test/1"]["question"]
        and rows["medexpqa/test/1"]["answer"] == "A"
    )
    assert splits(res) == {"train": 2, "eval": 2} and not res.rejects


def test_mmlu_medical(load) -> None:  # type: ignore[no-untyped-def]
    res = load("mmlu_medical")
    assert sorted(by_id(res)) == [
        "mmlu_medical/dev/1",
        "mmlu_medical/test/3",
        "mmlu_medical/test/4",
        "mmlu_medical/test/8",
    ]
    assert by_id(res)["mmlu_medical/test/4"]["answer"] == "C"


# --------------------------------------------------------------------------------------------- bad input
def _copy_repo(src: Path, dst_root: Path, repo: str) -> Path:
    dst = dst_root / repo
    shutil.copytree(src / repo, dst)
    return dst


def test_missing_column_names_the_column_and_dataset(hub_mirror: Path, tmp_path: Path) -> None:
    repo = _copy_repo(hub_mirror, tmp_path, "openai/gsm8k")
    for f in (repo / "main").glob("*.parquet"):
        pq.write_table(pq.read_table(f).drop_columns(["answer"]), f)
    with pytest.raises(BenchmarkError, match=r"dataset 'gsm8k'.*no column\(s\) \['answer'\]"):
        registry.load("gsm8k", hub_mirror=tmp_path, cache_dir=tmp_path / "cache")


def test_missing_mirror_repo_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(BenchmarkError, match="HiTZ/MedExpQA does not exist; mirror the Hub repo"):
        registry.load("medexpqa", hub_mirror=tmp_path)


def test_unreadable_repo_is_a_benchmark_error(hub_mirror: Path, tmp_path: Path) -> None:
    repo = _copy_repo(hub_mirror, tmp_path, "google/boolq")
    (repo / "data" / "validation-00000-of-00001.parquet").write_bytes(b"not parquet")
    with pytest.raises(BenchmarkError, match="dataset 'boolq': cannot load"):
        registry.load("boolq", hub_mirror=tmp_path, cache_dir=tmp_path / "cache")


def test_mmlu_reads_only_the_dev_and_test_files(hub_mirror: Path, tmp_path: Path) -> None:
    # load_dataset(cais/mmlu, "all", split="dev") builds every split of the config, auxiliary_train included
    # (~100k rows); with unreadable aux/validation files only a loader that never opens them succeeds.
    repo = _copy_repo(hub_mirror, tmp_path, "cais/mmlu")
    for split in ("auxiliary_train", "validation"):
        (repo / "all" / f"{split}-00000-of-00001.parquet").write_bytes(b"not parquet")
    res = registry.load("mmlu_stem", hub_mirror=tmp_path, cache_dir=tmp_path / "cache")
    assert sorted(r["id"] for r in res.rows) == ["mmlu_stem/dev/0", "mmlu_stem/test/0", "mmlu_stem/test/1"]
    other = registry.load("mmlu_other", hub_mirror=tmp_path, cache_dir=tmp_path / "cache")
    assert [r["id"] for r in other.rows] == ["mmlu_other/test/7"]


BRACKETED = "[Co(NH3)6]3+ and [Na+]"
# one minimal record per converter, with BRACKETED in a question and an option: only HellaSwag (WikiHow
# markup) may drop brackets, every other benchmark's brackets are content
BRACKET_RECORDS = {
    "gsm8k": (math_word.gsm8k, {"question": f"q {BRACKETED}?", "answer": "x\n#### 3"}),
    "multiarith": (math_word.multiarith, {"question": f"q {BRACKETED}?", "final_ans": "3"}),
    "svamp": (math_word.svamp, {"Body": f"b {BRACKETED}.", "Question": "q?", "Answer": 3.0}),
    "aqua_rat": (
        math_word.aqua_rat,
        {"question": f"q {BRACKETED}?", "options": [f"A){BRACKETED}", "B)2"], "correct": "A"},
    ),
    "keyed_choices": (
        multiple_choice.keyed_choices,
        {
            "question": f"q {BRACKETED}?",
            "choices": {"text": [BRACKETED, "y"], "label": ["A", "B"]},
            "answerKey": "A",
        },
    ),
    "gpqa": (
        multiple_choice.gpqa,
        {
            "Question": f"q {BRACKETED}?",
            "Correct Answer": BRACKETED,
            "Incorrect Answer 1": "w1",
            "Incorrect Answer 2": "w2",
            "Incorrect Answer 3": "w3",
        },
    ),
    "truthfulqa": (
        multiple_choice.truthfulqa_mc1,
        {"question": f"q {BRACKETED}?", "mc1_targets": {"choices": [BRACKETED, "y"], "labels": [1, 0]}},
    ),
    "medqa": (
        medical.medqa,
        {
            "question": f"q {BRACKETED}?",
            "options": {"A": BRACKETED, "B": "y", "C": "z", "D": "w"},
            "answer_idx": "A",
        },
    ),
    "medmcqa": (
        medical.medmcqa,
        {"question": f"q {BRACKETED}?", "opa": BRACKETED, "opb": "b", "opc": "c", "opd": "d", "cop": 0},
    ),
    "medexpqa": (
        medical.medexpqa,
        {
            "full_question": f"q {BRACKETED}?",
            "options": {"1": BRACKETED, "2": "b", "5": None},
            "correct_option": 1,
        },
    ),
    "mmlu": (mmlu.mmlu, {"question": f"q {BRACKETED}?", "choices": [BRACKETED, "b", "c", "d"], "answer": 0}),
    "winogrande": (
        commonsense.winogrande,
        {"sentence": f"{BRACKETED} _ fits.", "option1": BRACKETED, "option2": "b", "answer": "1"},
    ),
    "piqa": (commonsense.piqa, {"goal": f"g {BRACKETED}", "sol1": BRACKETED, "sol2": "b", "label": 0}),
    "boolq": (commonsense.boolq, {"question": "is it", "passage": f"p {BRACKETED}.", "answer": True}),
}


@pytest.mark.parametrize("name", sorted(BRACKET_RECORDS))
def test_brackets_survive_every_loader_but_hellaswag(name: str) -> None:
    fn, rec = BRACKET_RECORDS[name]
    conv = fn(rec, "x/train/0")
    assert conv.question.count(BRACKETED) >= 1
    if conv.choices:
        assert BRACKETED in conv.choices


@pytest.mark.parametrize("missing", [None, float("nan"), "", "  "])
def test_missing_values_are_rejects_never_text(missing: object) -> None:
    nan_option = {"question": "q", "opa": "a", "opb": missing, "opc": "c", "opd": "d", "cop": 0}
    assert reject_reason(medical.medmcqa, nan_option) == "empty_choice"
    assert reject_reason(math_word.gsm8k, {"question": missing, "answer": "#### 3"}) == "empty_field"
    assert (
        reject_reason(mmlu.mmlu, {"question": "q", "choices": list("abcd"), "answer": missing}) == "unlabeled"
    )
    assert reject_reason(medical.medmcqa, {**nan_option, "opb": "b", "cop": missing}) == "unlabeled"
    gpqa = {
        "Question": "q",
        "Correct Answer": "r",
        "Incorrect Answer 1": "a",
        "Incorrect Answer 2": missing,
        "Incorrect Answer 3": "c",
    }
    assert reject_reason(multiple_choice.gpqa, gpqa) == "empty_field"
    # MedExpQA drops a missing 5th option (4-option exams) instead of rendering it
    conv = medical.medexpqa(
        {"full_question": "q", "options": {"1": "a", "2": "b", "5": missing}, "correct_option": 2}, "x"
    )
    assert conv.choices == ["a", "b"] and conv.answer == "B"


def reject_reason(fn, rec: dict[str, Any]) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(RowReject) as info:
        fn(rec, "x/test/0")
    return info.value.reason


def test_unlabeled_rows_are_rejects_not_errors() -> None:
    choices = {"label": list("ABCDE"), "text": list("vwxyz")}
    assert (
        reject_reason(multiple_choice.keyed_choices, {"question": "q", "choices": choices, "answerKey": ""})
        == "unlabeled"
    )
    assert (
        reject_reason(
            medical.medmcqa, {"question": "q", "opa": "a", "opb": "b", "opc": "c", "opd": "d", "cop": -1}
        )
        == "unlabeled"
    )
    hs = {"activity_label": "a", "ctx_a": "b", "ctx_b": "c", "endings": ["1", "2", "3", "4"], "label": ""}
    assert reject_reason(commonsense.hellaswag, hs) == "unlabeled"
    wg = {"sentence": "x _ y", "option1": "a", "option2": "b", "answer": ""}
    assert reject_reason(commonsense.winogrande, wg) == "unlabeled"
    assert (
        reject_reason(commonsense.piqa, {"goal": "g", "sol1": "a", "sol2": "b", "label": -1}) == "unlabeled"
    )
    assert reject_reason(mmlu.mmlu, {"question": "q", "choices": list("abcd"), "answer": None}) == "unlabeled"


def test_malformed_rows_are_counted_rejects() -> None:
    assert reject_reason(math_word.gsm8k, {"question": "", "answer": "#### 3"}) == "empty_field"
    assert reject_reason(math_word.multiarith, {"question": "q", "final_ans": "seven"}) == "bad_answer"
    assert (
        reject_reason(math_word.aqua_rat, {"question": "q", "options": ["A)1", "B)2"], "correct": "E"})
        == "bad_answer"
    )
    assert (
        reject_reason(math_word.aqua_rat, {"question": "q", "options": ["B)1", "A)2"], "correct": "A"})
        == "bad_choices"
    )
    choices = {"label": ["A", "B"], "text": ["x", "y"]}
    assert (
        reject_reason(multiple_choice.keyed_choices, {"question": "q", "choices": choices, "answerKey": "C"})
        == "bad_answer"
    )
    assert (
        reject_reason(
            medical.medexpqa,
            {"full_question": "q", "options": {"1": "a", "2": "b", "5": None}, "correct_option": 5},
        )
        == "bad_answer"
    )
    assert (
        reject_reason(medical.medqa, {"question": "q", "options": {"A": "x", "B": "y"}, "answer_idx": "D"})
        == "bad_answer"
    )
    assert reject_reason(commonsense.boolq, {"question": "q", "passage": "p", "answer": None}) == "unlabeled"
    assert (
        reject_reason(
            multiple_choice.truthfulqa_mc1,
            {"question": "q", "mc1_targets": {"choices": ["a", "b"], "labels": [1, 1]}},
        )
        == "bad_answer"
    )
    assert (
        reject_reason(
            commonsense.winogrande, {"sentence": "no blank", "option1": "a", "option2": "b", "answer": "1"}
        )
        == "bad_question"
    )
    assert (
        reject_reason(mmlu.mmlu, {"question": "q", "choices": ["a", "", "c", "d"], "answer": 0})
        == "empty_choice"
    )


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("1,234", "1234"),
        (8.0, "8"),
        ("8.0", "8"),
        (3.5, "3.5"),
        ("$13", "13"),
        ("-0.50", "-0.5"),
        (" 42. ", "42"),
        ("1e3", "1000"),
        (0.1, "0.1"),
        ("007", "7"),
    ],
)
def test_canonical_number(raw: object, canonical: str) -> None:
    assert canonical_number(raw) == canonical


@pytest.mark.parametrize("raw", ["", None, "twelve", "1/2", True, "1.2.3"])
def test_canonical_number_rejects(raw: object) -> None:
    with pytest.raises(RowReject, match="bad_answer"):
        canonical_number(raw)
