"""evaluate@RUN: pure parts on hand-made rows, then the real hf backend on SmolLM2 (CLI as in dvc.yaml)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
import yaml
from typer.testing import CliRunner

from compress_distill.answers import grade
from compress_distill.benchmarks.demo import generate as demo_questions
from compress_distill.config import ConfigError, load_params, parse_params
from compress_distill.evaluation.metrics import eval_metrics
from compress_distill.llm.types import Completion
from compress_distill.metrics import RowCounter
from compress_distill.plan import find_run
from compress_distill.schema import PREDICTIONS, QUESTIONS, REJECTS, read_rows, read_table, write_rows
from compress_distill.stages import evaluate

REPO = Path(__file__).resolve().parents[2]
RUN = "smol-smol-lora-raw"


def q(i: int, **kw: object) -> dict:
    row = {
        "id": f"demo/eval/{i}",
        "dataset": "demo",
        "domain": "math",
        "group": "Math",
        "split": "eval",
        "question": f"What is {i} + 1?",
        "choices": [],
        "answer": str(i + 1),
        "answer_type": "numeric",
    }
    row.update(kw)
    return row


def completion(text: str, reasoning: str = "", finish: str = "stop", tokens: int = 10) -> Completion:
    return Completion(
        text=text,
        reasoning=reasoning,
        finish_reason=finish,
        prompt_tokens=5,
        completion_tokens=tokens,
        model="m",
    )


# --------------------------------------------------------------------------------------------- pure
def test_select_questions_rejects_and_caps() -> None:
    rows = [
        q(0),
        q(1, question="  "),
        q(2, answer=""),
        q(3, answer_type="essay"),
        q(0),
        q(4),
        q(5),
        q(6, dataset="other"),
    ]
    counter = RowCounter()
    kept, rejects = evaluate.select_questions(rows, max_per_dataset=2, counter=counter)
    assert [r["id"] for r in kept] == ["demo/eval/0", "demo/eval/4", "demo/eval/6"]
    assert counter.rows_in == 8
    assert dict(counter.rejects) == {
        "empty_question": 1,
        "empty_answer": 1,
        "bad_answer_type": 1,
        "duplicate_id": 1,
        "over_max_per_dataset": 1,
    }
    assert {r["reason"] for r in rejects} == {
        "empty_question",
        "empty_answer",
        "bad_answer_type",
        "duplicate_id",
    }


def test_build_requests_is_greedy_user_turn_only() -> None:
    (req,) = evaluate.build_requests([q(7)], max_tokens=64)
    assert req.messages == [{"role": "user", "content": "What is 7 + 1?"}]
    assert req.temperature == 0.0 and req.max_tokens == 64


def test_score_truncated_without_final_response_is_never_correct() -> None:
    questions = [q(41), q(1), q(2), q(3)]
    comps = [
        # cut inside the reasoning: the right number is there, but there is no final response
        completion("", reasoning="so the answer is 42", finish="length", tokens=32),
        completion("The answer is 2.", tokens=6),
        completion("The answer is 3.", reasoning="1 + 2 = 3", finish="length", tokens=32),  # cut after it
        completion("The answer is 5.", tokens=6),
    ]
    rows = evaluate.score(RUN, questions, comps, [5, 0, 4, 0], grade)
    assert [r["correct"] for r in rows] == [False, True, True, False]
    assert [r["truncated"] for r in rows] == [True, False, True, False]
    assert rows[0]["extracted"] is None and rows[1]["extracted"] == "2"
    assert rows[0]["reasoning_chars"] == len("so the answer is 42") and rows[0]["reasoning_tokens"] == 5
    assert set(rows[0]) == set(PREDICTIONS.names)
    m = evaluate.metrics_from_predictions(rows, questions)
    assert m["overall"]["accuracy"] == 0.5 and m["overall"]["truncation_rate"] == 0.5
    assert m["overall"]["mean_completion_tokens_excl_truncated"] == 6.0
    with pytest.raises(ValueError, match="every request"):
        evaluate.score(RUN, questions, comps[:2], [0, 0], grade)


def test_cut_inside_a_prefilled_think_block_is_never_graded() -> None:
    """Issue 10: vLLM/openai returned a cut Qwen3.5 trace as a final response with empty reasoning, and it was
    scored correct=True, reasoning_chars=0.  The evaluate stage re-splits before grading."""
    cut = "Let me think. Option B fits, so the answer is B"
    questions = [dict(q(0), answer="B", answer_type="letter", choices=["x", "y"]), q(1)]
    comps = [
        completion(cut, reasoning="", finish="length", tokens=32),  # the shape the old backends produced
        completion("The answer is 2.", reasoning="1 + 1", finish="length", tokens=32),  # cut after </think>
    ]
    fixed = evaluate.final_split(comps, think_prefilled=True)
    assert (fixed[0].text, fixed[0].reasoning) == ("", cut)
    assert fixed[1] is comps[1]  # already split: untouched
    rows = evaluate.score(RUN, questions, fixed, [9, 3], grade)
    assert [r["correct"] for r in rows] == [False, True]
    assert rows[0]["reasoning_chars"] == len(cut) and rows[0]["completion"] == ""
    # a template without a pre-filled think block: a cut plain answer is still an answer
    assert evaluate.final_split(comps, think_prefilled=False)[0].text == cut


def test_unknown_run_and_missing_model(tmp_path: Path) -> None:
    params = load_params(REPO / "params.yaml")
    with pytest.raises(ConfigError, match="not in the grid"):
        find_run(params, "nope")
    write_rows([q(0)], tmp_path / "eval.parquet", QUESTIONS)
    with pytest.raises(FileNotFoundError, match="train stage"):
        evaluate.run(
            params,
            RUN,
            tmp_path / "missing",
            tmp_path / "eval.parquet",
            tmp_path / "p.parquet",
            tmp_path / "m.json",
        )


def test_max_tokens_eval_overrides_the_global_cap() -> None:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["students"]["smol"]["max_tokens_eval"] = 7
    assert evaluate.max_new_tokens(parse_params(raw), "smol") == 7


# --------------------------------------------------------------------------------------------- real model
def demo_params(tmp: Path, cap: int) -> Path:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["evaluate"] = {
        "engine": {"backend": "hf", "device": "cpu", "dtype": "float32", "batch_size": 8},
        "max_new_tokens": cap,
        "max_per_dataset": None,
    }
    path = tmp / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.slow
def test_evaluate_smollm2_through_the_cli(
    tmp_path: Path, smol_dir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COMPRESS_DISTILL_LLM_CACHE", str(tmp_path / "llm-cache"))
    demo_params(tmp_path, cap=16)
    questions = demo_questions(0, 4, seed=0)
    # the only Medicine question is a reject: its group still gets a block, empty (n 0, null accuracy)
    bad = dict(questions[0], id="demo/eval/bad", answer_type="essay", group="Medicine", dataset="medqa")
    write_rows([*questions, bad], tmp_path / "data/questions/eval.parquet", QUESTIONS)
    dvc = yaml.safe_load((REPO / "dvc.yaml").read_text())
    argv = dvc["stages"]["evaluate"]["do"]["cmd"].replace("${key}", RUN).split()
    assert argv[:2] == ["compress-distill", "evaluate"]
    argv[argv.index("--model-dir") + 1] = smol_dir  # a base checkpoint stands in for models/RUN
    app = typer.Typer()
    app.command()(evaluate.main)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, argv[2:])
    assert result.exit_code == 0, result.output

    preds = read_table(tmp_path / f"data/predictions/{RUN}.parquet", PREDICTIONS).to_pylist()
    assert [p["question_id"] for p in preds] == [x["id"] for x in questions]  # every question, in order
    assert all(p["run"] == RUN for p in preds)
    for p in preds:
        assert 1 <= p["completion_tokens"] <= 16
        if p["truncated"]:
            assert p["completion_tokens"] == 16  # cut exactly at the cap
        if not p["completion"].strip():
            assert not p["correct"]
        assert (p["reasoning_tokens"] > 0) == bool(p["reasoning"])
    assert any(p["completion"] for p in preds)

    m = json.loads((tmp_path / f"metrics/eval/{RUN}.json").read_text())
    assert set(m) == {
        "overall",
        "groups",
        "datasets",
        "rows_in",
        "rows_out",
        "rejects",
        "wall_clock_s",
        "gpu_hours",
        "max_new_tokens",
        "model_params",
        "inference_flops",
    }
    assert m["max_new_tokens"] == 16
    assert m["inference_flops"] == 2.0 * m["model_params"] * sum(p["completion_tokens"] for p in preds)
    assert m["rows_in"] == 5 and m["rows_out"] == 4 and m["rejects"] == {"bad_answer_type": 1}
    assert m["gpu_hours"] == 0.0  # CPU engine
    cols = {k: [p[k] for p in preds] for k in PREDICTIONS.names}
    assert m["overall"] == pytest.approx(eval_metrics(cols)["overall"])
    assert set(m["groups"]) == {x["group"] for x in questions} | {"Medicine"}
    assert m["groups"]["Medicine"] == {"accuracy": None, "n": 0, "stderr": None, "ci95": None}
    assert m["datasets"]["medqa"]["n"] == 0
    assert (
        read_rows(tmp_path / f"data/predictions/{RUN}.rejects.parquet", REJECTS)[0]["id"] == "demo/eval/bad"
    )
    # the same numbers in lm-evaluation-harness's results layout, with which model, cap and commit
    lm = json.loads((tmp_path / f"results/{RUN}.json").read_text())
    assert lm["results"]["compress_distill"]["acc,none"] == pytest.approx(m["overall"]["accuracy"])
    assert lm["results"]["compress_distill"]["acc_stderr,none"] == pytest.approx(m["overall"]["stderr"])
    assert lm["config"]["model_id"] == "smollm2-135m-instruct" and lm["config"]["max_new_tokens"] == 16
    assert lm["config"]["adapter"] is None and len(lm["config"]["chat_template_sha256"]) == 64
    assert lm["git_hash"] and lm["model_name"] == "smollm2-135m-instruct"
    samples = (tmp_path / f"results/{RUN}.samples.jsonl").read_text().splitlines()
    assert [json.loads(s)["doc"]["id"] for s in samples] == [x["id"] for x in questions]


@pytest.mark.slow
def test_evaluate_lora_adapter_dir_matches_its_base(
    tmp_path: Path, smol_dir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """models/RUN as training writes it (PEFT adapter + tokenizer): a fresh LoRA (B = 0) answers like its base."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    monkeypatch.setenv("COMPRESS_DISTILL_LLM_CACHE", str(tmp_path / "llm-cache"))
    params = load_params(demo_params(tmp_path, cap=8))
    torch.manual_seed(0)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(smol_dir),
        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]),
    )
    adapter = tmp_path / "models" / RUN
    model.save_pretrained(adapter)
    AutoTokenizer.from_pretrained(smol_dir).save_pretrained(adapter)
    (adapter / "training_config.json").write_text(json.dumps({"base_model": "smollm2-135m-instruct"}))

    write_rows(demo_questions(0, 3, seed=1), tmp_path / "eval.parquet", QUESTIONS)
    outs = {}
    for name, model_dir in (("adapter", adapter), ("base", Path(smol_dir))):
        evaluate.run(
            params,
            RUN,
            model_dir,
            tmp_path / "eval.parquet",
            tmp_path / f"{name}.parquet",
            tmp_path / f"{name}.json",
        )
        outs[name] = read_rows(tmp_path / f"{name}.parquet", PREDICTIONS)
    assert [r["completion"] for r in outs["adapter"]] == [r["completion"] for r in outs["base"]]


def test_a_cap_outside_extra_caps_is_a_config_error(tmp_path: Path) -> None:
    from compress_distill.cli import app

    result = CliRunner().invoke(
        app,
        [
            "evaluate-cap",
            "--params",
            str(REPO / "params.yaml"),
            "--run",
            RUN,
            "--cap",
            "999",
            "--model-dir",
            str(tmp_path),
            "--out",
            str(tmp_path / "p"),
            "--metrics",
            str(tmp_path / "m.json"),
        ],
    )
    assert result.exit_code == 2 and "evaluate.extra_caps" in result.output


@pytest.mark.slow
def test_evaluate_cap_through_its_dvc_command(
    tmp_path: Path, smol_dir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """evaluate_cap@RUN-capN (dvc.yaml's command): the run decoded at the extra cap N, not the main one."""
    from compress_distill.cli import app

    monkeypatch.setenv("COMPRESS_DISTILL_LLM_CACHE", str(tmp_path / "llm-cache"))
    params = demo_params(tmp_path, cap=4)
    raw = yaml.safe_load(params.read_text())
    raw["evaluate"]["extra_caps"] = [12]
    params.write_text(yaml.safe_dump(raw))
    write_rows(demo_questions(0, 3, seed=2), tmp_path / "data/questions/eval.parquet", QUESTIONS)
    key = f"{RUN}-cap12"
    cmd = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["evaluate_cap"]["do"]["cmd"]
    argv = cmd.replace("${item.run}", RUN).replace("${item.cap}", "12").replace("${key}", key).split()
    argv[argv.index("--model-dir") + 1] = smol_dir
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, argv[1:])
    assert result.exit_code == 0, result.output
    preds = read_table(tmp_path / f"data/predictions/caps/{key}.parquet", PREDICTIONS).to_pylist()
    assert max(p["completion_tokens"] for p in preds) > 4 and all(p["completion_tokens"] <= 12 for p in preds)
    m = json.loads((tmp_path / f"metrics/eval/caps/{key}.json").read_text())
    assert m["max_new_tokens"] == 12 and m["overall"]["n_stopped"] == sum(not p["truncated"] for p in preds)
