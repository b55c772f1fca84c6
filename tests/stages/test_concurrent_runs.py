"""Concurrent runs (bad-input corpus): two processes writing the same outputs, and two stages side by side.

The same stage started twice on the same outputs (by hand, or two ``dvc repro`` in one workspace) used to
run both to the end, pay every request twice and rename their outputs and metrics into place interleaved,
so the metrics on disk could describe the other run's table.  Now the second is refused at once with one
line naming the holder and the lock file (exit 2), before it loads a model or sends a request; the first
finishes undisturbed.  Stages with different outputs do not block each other, and a killed run leaves no
stale lock.  (Two ``dvc repro`` in one workspace: DVC's own repository lock refuses the second; the output
lock covers every other way to start a stage twice.)  Real subprocesses of the CLI, talking to a real loopback OpenAI-compatible server whose replies
are held until the test releases them, so the first run is provably mid-stage while the second starts.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from compress_distill.metrics import read_metrics
from compress_distill.schema import TRACES, read_rows
from tests.helpers.chat_server import ChatServer, chat_server
from tests.helpers.traces import (
    SMOL,
    make_params,
    question,
    trace,
    write_params,
    write_questions,
    write_traces,
)

REPLY = "2 and 2 make 4.\nThe answer is 4."  # graded right; untagged, so split at its last line


@pytest.fixture
def held() -> Iterator[ChatServer]:
    """A teacher endpoint that holds every reply until ``server.gate.set()``."""
    with chat_server(REPLY, open_gate=False) as server:
        yield server


def _generate_args(tmp_path: Path, server: ChatServer) -> list[str]:
    teacher = {"backend": "openai", "model": "gpt-4o-mini", "tokenizer": SMOL, "base_urls": [server.url]}
    params = make_params(**{"teachers.smol": teacher, "generate.rounds": 1, "generate.untagged": "last_line"})
    write_params(tmp_path / "params.yaml", params)
    rows = [question(f"demo/train/{i}", f"Q{i}: what is 2 + 2?", "4") for i in range(3)]
    write_questions(tmp_path / "questions.parquet", rows)
    out = ["--out-dir", "data/traces/smol", "--metrics", "metrics/generate/smol.json"]
    return [
        "generate",
        "--teacher",
        "smol",
        *out,
        "--params",
        "params.yaml",
        "--questions",
        "questions.parquet",
    ]


def _cli(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "compress_distill.cli", *args]


def _env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "COMPRESS_DISTILL_LLM_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}


def _start(args: list[str], tmp_path: Path, server: ChatServer) -> subprocess.Popen[str]:
    """Start the CLI; returns once it is mid-stage (its first request reached the held server)."""
    proc = subprocess.Popen(
        _cli(args),
        cwd=tmp_path,
        env=_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 240
    while not server.bodies:
        if proc.poll() is not None:
            pytest.fail(
                f"the first run exited (rc={proc.returncode}) before it was mid-stage:\n{proc.stdout.read() if proc.stdout else ''}"
            )
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("the first run sent no request in time")
        time.sleep(0.05)
    return proc


def _run(args: list[str], tmp_path: Path, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        _cli(args),
        cwd=tmp_path,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _finish(proc: subprocess.Popen[str]) -> str:
    out, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, out
    return out


def _consistent(tmp_path: Path) -> dict:
    """The outputs on disk and the metrics beside them describe one and the same run."""
    m = read_metrics(tmp_path / "metrics/generate/smol.json")
    raw = read_rows(tmp_path / "data/traces/smol/raw.parquet", TRACES)
    assert m["rows_in"] == m["rows_out"] + sum(m["rejects"].values())
    assert len(raw) == m["rows_out"] == len({r["id"] for r in raw})
    return m


def test_a_second_run_on_the_same_outputs_is_refused_and_another_stage_is_not(
    tmp_path: Path, held: ChatServer
) -> None:
    args = _generate_args(tmp_path, held)
    first = _start(args, tmp_path, held)
    second = _run(args, tmp_path, timeout=120)  # before the lock, it waited on the held server
    lines = second.stderr.strip().splitlines()
    assert second.returncode == 2, second.stderr
    assert len(lines) == 1 and "Traceback" not in second.stderr, second.stderr
    assert "data/traces/smol" in lines[0] and "is being written by another run" in lines[0]
    assert f"pid {first.pid} " in lines[0] and "lock file" in lines[0] and "run again" in lines[0]

    # a different stage (answer-only@smol, its own outputs) runs to the end meanwhile
    write_traces(tmp_path / "old_raw.parquet", [trace("a", "2 and 2 make 4."), trace("b", "3 and 1 make 4.")])
    other = ["--out", "data/traces/smol/answer-only.parquet", "--metrics", "metrics/answer_only/smol.json"]
    ao = _run(
        ["answer-only", "--teacher", "smol", "--raw", "old_raw.parquet", *other, "--params", "params.yaml"],
        tmp_path,
    )
    assert ao.returncode == 0, ao.stdout + ao.stderr
    assert read_metrics(tmp_path / "metrics/answer_only/smol.json")["rows_out"] == 2
    assert first.poll() is None  # still held: the two stages ran at the same time

    held.gate.set()
    _finish(first)
    assert len(held.bodies) == 3  # the refused run sent nothing: every question was asked once
    assert _consistent(tmp_path)["rows_out"] == 3
    again = _run(args, tmp_path)  # the lock went with the first run
    assert again.returncode == 0, again.stdout + again.stderr
    assert len(held.bodies) == 3  # replayed from the request cache


def test_a_killed_run_leaves_no_stale_lock(tmp_path: Path, held: ChatServer) -> None:
    args = _generate_args(tmp_path, held)
    first = _start(args, tmp_path, held)
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=60)
    held.gate.set()
    done = _run(args, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert _consistent(tmp_path)["rows_out"] == 3
