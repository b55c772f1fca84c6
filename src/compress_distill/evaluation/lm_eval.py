"""One evaluation in lm-evaluation-harness's results layout, so tools built for lm-eval can read a run.

``results/RUN.json`` follows the ``results_<date>.json`` file of lm-eval 0.4:

- ``results.<task>``: ``alias``, ``acc,none`` and ``acc_stderr,none`` per benchmark dataset (the task name is
  the dataset id), plus one entry per evaluation group and ``compress_distill`` for all questions;
- ``groups`` / ``group_subtasks``: the paper's groups (Math, Science, ...) and the datasets in each;
- ``n-samples``, ``n-shot`` (0: every question is one user turn), ``higher_is_better``, ``versions``;
- ``config``: the student's model id (params), the adapter directory when it is one, ``max_new_tokens``, the
  sha256 of the chat template the student answered with, greedy ``gen_kwargs`` and the git commit;
- ``git_hash``, ``date`` (Unix seconds) and ``model_name`` at the top level, as lm-eval writes them.

``acc`` is the share of questions graded correct and ``acc_stderr`` the binomial standard error of
``evaluation/metrics.py`` -- the numbers of ``metrics/eval/RUN.json``, which stays flat for DVC.  Per-sample
records go to ``results/RUN.samples.jsonl``, one line per question in lm-eval's sample fields (``doc_id``,
``doc``, ``target``, ``resps``, ``filtered_resps``, ``filter``, ``metrics``, ``acc``) plus its ``task``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

OVERALL_TASK = "compress_distill"
VERSION = 1.0  # of these tasks' definition (prompt = question only, greedy, graded on the final response)


def chat_template_sha256(template: str | Mapping[str, str] | None) -> str | None:
    """sha256 of a tokenizer's chat template (named variants hashed in key order); None without one."""
    if not template:
        return None
    text = (
        template if isinstance(template, str) else "\n".join(f"{k}\n{template[k]}" for k in sorted(template))
    )
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _entry(alias: str, block: Mapping[str, Any]) -> dict[str, Any]:
    return {"alias": alias, "acc,none": block["accuracy"], "acc_stderr,none": block["stderr"]}


def results_json(
    metrics: Mapping[str, Any],
    rows: Sequence[Mapping[str, Any]],
    *,
    config: Mapping[str, Any],
    git_hash: str,
    date: float,
) -> dict[str, Any]:
    """The lm-eval results document of one run (module docstring); ``metrics`` is the flat metrics file's
    ``overall`` / ``groups`` / ``datasets`` blocks, ``rows`` the predictions (for the group -> task map)."""
    datasets, groups = metrics["datasets"], metrics["groups"]
    subtasks: dict[str, list[str]] = {g: [] for g in groups}
    for row in rows:
        members = subtasks.setdefault(str(row["group"]), [])
        if row["dataset"] not in members:
            members.append(str(row["dataset"]))
    tasks = [*datasets, *groups, OVERALL_TASK]
    results = {d: _entry(d, b) for d, b in datasets.items()}
    results |= {g: _entry(g, b) for g, b in groups.items()}
    results[OVERALL_TASK] = _entry(OVERALL_TASK, metrics["overall"])
    return {
        "results": results,
        "groups": {g: results[g] for g in [*groups, OVERALL_TASK]},
        "group_subtasks": {**{g: sorted(t) for g, t in subtasks.items()}, OVERALL_TASK: list(groups)},
        "configs": {d: {"task": d, "output_type": "generate_until", "num_fewshot": 0} for d in datasets},
        "versions": dict.fromkeys(tasks, VERSION),
        "n-shot": dict.fromkeys(datasets, 0),
        "higher_is_better": {t: {"acc": True} for t in tasks},
        "n-samples": {d: {"original": b["n"], "effective": b["n"]} for d, b in datasets.items()},
        "config": dict(config),
        "git_hash": git_hash,
        "date": date,
        "model_name": config.get("model_id"),
    }


def sample_records(rows: Sequence[Mapping[str, Any]], questions: Sequence[Mapping[str, Any]]) -> list[dict]:
    """lm-eval per-sample records of the predictions ``rows`` (aligned with ``questions``, in order)."""
    out: list[dict] = []
    doc_ids: dict[str, int] = {}
    for row, q in zip(rows, questions, strict=True):
        task = str(row["dataset"])
        doc_ids[task] = doc_ids.get(task, -1) + 1
        out.append(
            {
                "task": task,
                "doc_id": doc_ids[task],
                "doc": {"id": q["id"], "question": q["question"], "answer_type": q["answer_type"]},
                "target": q["answer"],
                "resps": [[row["completion"]]],
                "filtered_resps": [row["extracted"]],
                "filter": "none",
                "metrics": ["acc"],
                "acc": 1.0 if row["correct"] else 0.0,
                "truncated": bool(row["truncated"]),
                "completion_tokens": row["completion_tokens"],
            }
        )
    return out
