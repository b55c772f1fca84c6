"""A LoRA student served by llama.cpp stops at its trained end-of-turn token (issue 10 item 2).

The real chain on CPU: a tiny LoRA run of the training stage on SmolLM2, ``compress-distill export-gguf``,
llama-cpp-python's server on loopback with the packaged SmolLM2 GGUF and ``--lora_path``, and the openai
backend pointed at the student folder, so its requests carry the student's recorded end-of-turn token as
``stop``.  A loopback proxy between them records the request bodies.  The same questions on the base GGUF
alone show that the adapter is what changes the answers.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from compress_distill.llm import ChatRequest, make_backend
from compress_distill.llm.types import Completion
from tests.helpers.training import trace_rows, write_params, write_source
from tests.test_cli_errors import cli

pytestmark = [pytest.mark.slow, pytest.mark.server]  # real model, training and server

RUN = "smol-smol-lora-raw"
QUESTIONS = ["What is 12 + 30?", "What is 7 + 55?"]  # the shape of the training rows (trace_rows)
MAX_TOKENS = 64
TEMPLATE_MARKERS = ("<|im_end|>", "<|im_start|>", "<|endoftext|>")


@pytest.fixture(scope="module")
def student(tmp_path_factory: pytest.TempPathFactory, smol_dir: str) -> Path:
    """A 10-step LoRA student of the training stage (rank 4), trained on 'Step k: ...' reasoning traces."""
    import torch

    from compress_distill.stages.train import run

    root = tmp_path_factory.mktemp("lora-student")
    data = write_source(root / "hub", "smol", "raw", trace_rows(8, max_steps=3))
    params = write_params(
        root / "params.yaml", max_steps=10, seq_len=128, save_every_steps=100, lora={"learning_rate": 0.003}
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run(params, RUN, data, root / "models" / RUN, root / "m.json", root / "live")
    finally:
        torch.set_num_threads(threads)
    return root / "models" / RUN


def _ask(cfg: dict, cache: Path) -> list[Completion]:
    requests = [ChatRequest([{"role": "user", "content": q}], max_tokens=MAX_TOKENS) for q in QUESTIONS]
    with make_backend(
        {"launch_timeout_s": 120, "max_concurrency": 1, **cfg}, cache_dir=cache, use_cache=False
    ) as backend:
        return backend.generate(requests)


def test_exported_lora_student_served_by_llama_cpp_stops_at_its_end_of_turn(
    student: Path, llama_command: Callable[..., str], fault_proxy: Callable, tmp_path: Path
) -> None:
    adapter = tmp_path / f"{RUN}.gguf"
    proc = cli("export-gguf", "--adapter", str(student), "--out", str(adapter), cwd=tmp_path)
    assert proc.returncode == 0 and adapter.is_file(), proc.stderr[-2000:]
    eot = json.loads((student / "training_config.json").read_text())["eot_token"]
    assert eot == "<|im_end|>"

    base = _ask(
        {"backend": "openai", "model": "smollm2-135m-instruct", "launch": [llama_command(1)]}, tmp_path
    )
    launch = f"{llama_command(n_threads=1)} --lora_path {adapter}"
    with make_backend(
        {"backend": "openai", "model": str(student), "launch": [launch], "launch_timeout_s": 120},
        cache_dir=tmp_path / "launch",
        use_cache=False,
    ) as served:
        served.generate([ChatRequest([{"role": "user", "content": "Hi"}], max_tokens=1)])  # starts it
        proxy = fault_proxy(served.base_urls[0], lambda rid, attempt: None)  # records, never faults
        tuned = _ask({"backend": "openai", "model": str(student), "base_urls": [proxy.base_url]}, tmp_path)

    # every request carried the student's recorded end-of-turn token as its first stop
    assert len(proxy.bodies) == len(QUESTIONS)
    assert all(body["stop"][0] == eot for body in proxy.bodies), proxy.bodies
    for out in tuned:
        # stopped at the end of the trained turn: before the cap, no template token, nothing after the answer
        assert out.finish_reason == "stop" and 0 < out.completion_tokens < MAX_TOKENS, out
        assert not any(m in out.text + out.reasoning for m in TEMPLATE_MARKERS), out
        assert re.fullmatch(r"The answer is \d+\.", out.text), out.text
        assert out.reasoning.startswith("Step 1:"), out.reasoning  # the trained reasoning shape
    # the adapter is loaded: the base model answers the same questions differently, without that shape
    for b, t in zip(base, tuned, strict=True):
        assert b.text != t.text and "Step 1:" not in b.reasoning + b.text, b
