"""Kill and resume: a process generating a batch is SIGKILLed mid-way; the re-run regenerates nothing that
had finished and gives the same greedy outputs as an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from compress_distill.llm import ChatRequest, make_backend

pytestmark = [pytest.mark.slow]  # real model / server: deselect with -m 'not slow'

# Same-length prompts (one digit differs) so the batches of the resumed run have the same composition as
# the uninterrupted run's: greedy outputs can then be compared exactly.
PROMPTS = [f"What is {i} times {i}?" for i in range(1, 5)]
MAX_TOKENS = 10

_CHILD = textwrap.dedent(
    """
    import json, sys
    from compress_distill.llm import ChatRequest, make_backend
    cfg, cache, prompts, max_tokens = json.loads(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3]), int(sys.argv[4])
    backend = make_backend(cfg, cache_dir=cache)
    backend.generate([ChatRequest([{"role": "user", "content": p}], max_tokens=max_tokens) for p in prompts])
    print("finished all", flush=True)
    """
)


def _cached_lines(cache: Path) -> int:
    return sum(f.read_bytes().count(b"\n") for f in cache.rglob("*.jsonl"))


def test_sigkill_mid_batch_then_resume(smol_dir: str, tmp_path: Path) -> None:
    cfg = {"backend": "hf", "model": smol_dir, "device": "cpu", "batch_size": 2}
    cache = tmp_path / "cache"
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, json.dumps(cfg), str(cache), json.dumps(PROMPTS), str(MAX_TOKENS)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},  # like this process (see _one_torch_thread)
    )
    try:
        deadline = time.monotonic() + 600
        while _cached_lines(cache) < 2:  # the first batch of two is on disk
            assert child.poll() is None, "the child ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == -signal.SIGKILL and "finished all" not in child.stdout.read()  # type: ignore[union-attr]
    finished = _cached_lines(cache)
    assert 2 <= finished < len(PROMPTS)

    requests = [ChatRequest([{"role": "user", "content": p}], max_tokens=MAX_TOKENS) for p in PROMPTS]
    with make_backend(cfg, cache_dir=cache) as resumed:
        out = resumed.generate(requests)
        # nothing that had finished was issued again; only the rest was generated
        assert resumed.stats.cached == finished and resumed.stats.generated == len(PROMPTS) - finished
    with make_backend(cfg, use_cache=False) as uninterrupted:
        expected = uninterrupted.generate(requests)
    assert [c.text for c in out] == [c.text for c in expected]
    assert [c.completion_tokens for c in out] == [c.completion_tokens for c in expected]
    assert sum(c.cached for c in out) == finished
