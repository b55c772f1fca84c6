"""Helpers of the trace-stage tests: params with absolute prompt paths, table builders, a scripted in-test
backend for the pure cores, and the SIGKILL-and-resume harness run against the real hf backend."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from compress_distill.config import Params
from compress_distill.llm.types import ChatRequest, Completion
from compress_distill.schema import JUDGEMENTS, QUESTIONS, TRACES, write_rows

REPO = Path(__file__).resolve().parents[2]
SMOL = "smollm2-135m-instruct"


# --------------------------------------------------------------------------------------------- params
def make_params(**overrides: Any) -> Params:
    """The demo params with prompt paths made absolute (tests run from any cwd); ``overrides`` are
    dotted keys, e.g. ``{"generate.rounds": 1}``."""
    data = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    data["generate"]["prompt"] = str(REPO / data["generate"]["prompt"])
    data["compress"]["prompt"] = str(REPO / data["compress"]["prompt"])
    data["compress"]["prompts"] = {k: str(REPO / v) for k, v in data["compress"]["prompts"].items()}
    data["compress"]["domain_prompts"] = {
        k: str(REPO / v) for k, v in data["compress"]["domain_prompts"].items()
    }
    data["judge"]["prompt"] = str(REPO / data["judge"]["prompt"])
    for dotted, value in overrides.items():
        node = data
        *path, last = dotted.split(".")
        for key in path:
            node = node.setdefault(key, {})
        node[last] = value
    from compress_distill.config import parse_params

    return parse_params(data, "test params")


def write_params(path: Path, params: Params) -> Path:
    path.write_text(yaml.safe_dump(params.model_dump(mode="json"), sort_keys=False), encoding="utf-8")
    return path


# --------------------------------------------------------------------------------------------- tables
def question(
    qid: str,
    text: str,
    answer: str,
    answer_type: str = "numeric",
    dataset: str = "demo",
    domain: str = "math",
    choices: list[str] | None = None,
) -> dict[str, Any]:
    return {
        "id": qid,
        "dataset": dataset,
        "domain": domain,
        "group": "Math",
        "split": "train",
        "question": text,
        "choices": choices or [],
        "answer": answer,
        "answer_type": answer_type,
    }


def write_questions(path: Path, rows: list[dict[str, Any]]) -> Path:
    write_rows(rows, path, QUESTIONS)
    return path


def trace(
    tid: str,
    reasoning: str,
    response: str = "The answer is 4.",
    *,
    answer: str = "4",
    answer_type: str = "numeric",
    dataset: str = "demo",
    domain: str = "math",
    source: str = "raw",
    question: str = "What is 2 + 2?",
    tokens: int | None = None,
    ratio: float = 1.0,
    prompt_hash: str = "aaaaaaaaaaaa",
    compressor_model: str = "",
) -> dict[str, Any]:
    return {
        "id": tid,
        "question_id": tid,
        "dataset": dataset,
        "domain": domain,
        "question": question,
        "answer": answer,
        "answer_type": answer_type,
        "reasoning": reasoning,
        "response": response,
        "source": source,
        "reasoning_chars": len(reasoning),
        "reasoning_tokens": tokens if tokens is not None else max(1, len(reasoning) // 4),
        "compression_ratio": ratio,
        "teacher_model": SMOL,
        "compressor_model": compressor_model,
        "prompt_hash": prompt_hash,
        "answer_preserved": None,
    }


def write_traces(path: Path, rows: list[dict[str, Any]], invalid_utf8: dict[int, str] | None = None) -> Path:
    """Write trace rows; ``invalid_utf8`` maps row index -> column whose value becomes the bytes ff fe
    (Arrow string columns written by other tools are not guaranteed to be valid UTF-8)."""
    write_rows(rows, path, TRACES)
    if invalid_utf8:
        table = pq.read_table(path)
        for name in set(invalid_utf8.values()):
            values = [v.encode("utf-8") for v in table.column(name).to_pylist()]
            for i, col in invalid_utf8.items():
                if col == name:
                    values[i] = b"\xff\xfe broken " + values[i]
            arr = pa.array(values, pa.binary()).view(pa.string())
            table = table.set_column(table.schema.get_field_index(name), name, arr)
        pq.write_table(table, path)
    return path


# a small trace folder of teacher smol, as the trace stages leave it (for build / publish / pull)
def judgement(tid: str, status: str = "ok", verdict: str = "faithful", faith: int = 5) -> dict:
    ok = status == "ok"
    return {
        "id": tid,
        "compressor": "concise",
        "faithfulness": faith if ok else None,
        "coverage": 4 if ok else None,
        "clarity": 5 if ok else None,
        "verdict": verdict if ok else None,
        "answer_alignment": True if ok else None,
        "failure_modes": [] if ok else None,
        "rationale": "fine" if ok else None,
        "judge_model": SMOL,
        "parse_status": status,
    }


def make_traces(root: Path, n_raw: int = 5) -> tuple[Path, Path]:
    traces, judgements = root / "traces" / "smol", root / "judgements" / "smol"
    ids = [f"t{i}" for i in range(n_raw)]
    ds = ["gsm8k", "gsm8k", "medqa", "medqa", "medqa"][:n_raw]
    long = "thinking about it " * 40
    write_traces(traces / "raw.parquet", [trace(i, long, dataset=d) for i, d in zip(ids, ds, strict=True)])
    write_traces(
        traces / "compressed-concise.parquet",
        [
            trace(
                i,
                long[: 100 + 10 * k],
                dataset=d,
                source="compressed-concise",
                ratio=(100 + 10 * k) / len(long),
                compressor_model=SMOL,
                prompt_hash="aaaaaaaaaaaa+bbbbbbbbbbbb",
            )
            for k, (i, d) in enumerate(zip(ids[:4], ds, strict=False))
        ],
    )
    write_traces(
        traces / "compressed-terse.parquet",
        [
            trace(
                i,
                long[:50],
                dataset=d,
                source="compressed-terse",
                ratio=50 / len(long),
                compressor_model=SMOL,
            )
            for i, d in zip(ids[:3], ds, strict=False)
        ],
    )
    write_traces(
        traces / "truncated.parquet",
        [
            trace(i, long[:60], dataset=d, source="truncated", ratio=60 / len(long))
            for i, d in zip(ids[:3], ds, strict=False)
        ],
    )
    write_traces(
        traces / "answer-only.parquet",
        [
            trace(i, "", dataset=d, source="answer-only", ratio=0.0, tokens=0)
            for i, d in zip(ids, ds, strict=True)
        ],
    )
    judgements.mkdir(parents=True)
    write_rows(
        [
            judgement("t0"),
            judgement("t1", verdict="partially_faithful", faith=3),
            judgement("t2", "truncated"),
        ][: max(0, min(3, n_raw))],
        judgements / "concise.parquet",
        JUDGEMENTS,
    )
    # not inputs of the folder: attempts and rejects tables beside the traces are ignored
    write_traces(traces / "raw.rejects.parquet", [])
    return traces, judgements


# --------------------------------------------------------------------------------------------- backend
@dataclass
class ScriptedBackend:
    """Engine-contract stand-in for unit tests of the pure cores: ``reply(request) -> Completion`` decides
    each completion; every ``generate`` call is recorded."""

    reply: Callable[[ChatRequest], Completion]
    model: str = SMOL
    calls: list[list[ChatRequest]] = field(default_factory=list)
    closed: bool = False

    def generate(self, requests: list[ChatRequest]) -> list[Completion]:
        self.calls.append(list(requests))
        return [self.reply(r) for r in requests]

    def close(self) -> None:
        self.closed = True


def completion(text: str, reasoning: str = "", finish_reason: str = "stop", tokens: int = 10) -> Completion:
    return Completion(
        text=text,
        reasoning=reasoning,
        finish_reason=finish_reason,
        prompt_tokens=20,
        completion_tokens=tokens,
        model=SMOL,
        request_hash="h",
    )


def prompt_of(req: ChatRequest) -> str:
    return req.messages[-1]["content"]


# --------------------------------------------------------------------------------------------- SIGKILL
def cache_lines(cache: Path) -> int:
    """Completions durably written to the request cache (complete JSONL lines of every segment)."""
    return sum(p.read_bytes().count(b"\n") for p in cache.rglob("*.jsonl"))


def kill_then_resume(
    args: list[str], cwd: Path, cache: Path, *, min_done: int = 1, timeout: float = 240
) -> str:
    """Run ``compress-distill ARGS``, SIGKILL it once ``min_done`` completions are cached, run it again to
    the end; returns the second run's stdout.  Fails if the first run finished before it could be killed."""
    # one torch thread: the test machine is shared, and oversubscribed OpenMP threads spin instead of working
    env = {
        **os.environ,
        "COMPRESS_DISTILL_LLM_CACHE": str(cache),
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": "1",
    }
    cmd = [sys.executable, "-m", "compress_distill.cli", *args]
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    try:
        while cache_lines(cache) < min_done:
            if proc.poll() is not None:
                out = proc.stdout.read().decode() if proc.stdout else ""
                pytest.fail(f"stage exited (rc={proc.returncode}) before it could be killed:\n{out}")
            if time.monotonic() > deadline:
                pytest.fail("no completion was cached before the timeout")
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout:
            proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout
