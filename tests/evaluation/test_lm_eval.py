"""The evaluation in lm-evaluation-harness's results layout: the numbers of the flat metrics file, per task."""

from __future__ import annotations

import hashlib

import pytest

from compress_distill.evaluation.lm_eval import (
    OVERALL_TASK,
    chat_template_sha256,
    results_json,
    sample_records,
)
from compress_distill.evaluation.metrics import eval_metrics
from compress_distill.schema import PREDICTIONS


def pred(qid: str, dataset: str, group: str, correct: bool, truncated: bool = False) -> dict:
    return {"question_id": qid, "run": "r", "group": group, "dataset": dataset, "completion": f"answer {qid}",
            "reasoning": "", "extracted": "4" if correct else "5", "correct": correct, "completion_tokens": 7,
            "reasoning_chars": 0, "reasoning_tokens": 0, "truncated": truncated}  # fmt: skip


ROWS = [
    pred("gsm8k/test/0", "gsm8k", "Math", True),
    pred("gsm8k/test/1", "gsm8k", "Math", False),
    pred("gsm8k/test/2", "gsm8k", "Math", True),
    pred("medqa/test/0", "medqa", "Medicine", True, truncated=True),
]
QUESTIONS = [
    {"id": r["question_id"], "question": "q?", "answer": "4", "answer_type": "numeric"} for r in ROWS
]
CONFIG = {"model": "hf", "model_id": "org/student", "adapter": "models/r", "max_new_tokens": 64}


def test_results_follow_lm_eval_layout_with_the_metrics_numbers() -> None:
    metrics = eval_metrics({k: [r[k] for r in ROWS] for k in PREDICTIONS.names}, groups=["Math", "Science"])
    doc = results_json(metrics, ROWS, config=CONFIG, git_hash="abc123", date=1.5)
    gsm8k = doc["results"]["gsm8k"]
    assert gsm8k["alias"] == "gsm8k" and gsm8k["acc,none"] == pytest.approx(2 / 3)
    assert gsm8k["acc_stderr,none"] == pytest.approx(metrics["datasets"]["gsm8k"]["stderr"])
    assert doc["results"][OVERALL_TASK]["acc,none"] == pytest.approx(0.75)
    assert doc["results"]["Science"]["acc,none"] is None  # a group with no questions: null, as in metrics
    assert doc["group_subtasks"]["Math"] == ["gsm8k"] and doc["group_subtasks"]["Medicine"] == ["medqa"]
    assert doc["n-samples"]["gsm8k"] == {"original": 3, "effective": 3} and doc["n-shot"]["medqa"] == 0
    assert doc["higher_is_better"]["gsm8k"] == {"acc": True}
    assert doc["config"] == CONFIG and doc["git_hash"] == "abc123" and doc["model_name"] == "org/student"
    assert doc["date"] == 1.5


def test_sample_records_carry_lm_eval_fields() -> None:
    records = sample_records(ROWS, QUESTIONS)
    assert [(r["task"], r["doc_id"]) for r in records] == [
        ("gsm8k", 0),
        ("gsm8k", 1),
        ("gsm8k", 2),
        ("medqa", 0),
    ]
    first = records[0]
    assert first["resps"] == [["answer gsm8k/test/0"]] and first["filtered_resps"] == ["4"]
    assert first["target"] == "4" and first["acc"] == 1.0 and first["metrics"] == ["acc"]
    assert records[1]["acc"] == 0.0 and records[3]["truncated"] is True


def test_chat_template_hash() -> None:
    assert chat_template_sha256("{{ x }}") == hashlib.sha256(b"{{ x }}").hexdigest()
    assert chat_template_sha256(None) is None
    assert chat_template_sha256({"b": "2", "a": "1"}) == chat_template_sha256({"a": "1", "b": "2"})
