"""A template that pre-fills <think> (Qwen3.5) must not turn a cut-off reasoning into a final response.

The real SmolLM2, served from a student directory whose saved tokenizer carries a Qwen3.5-style template
(``prefilled_student`` in conftest): each backend reads the chat format from the model directory once, at
load, by the same code -- hf in-process, openai against a real llama.cpp server rendering the same template."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from compress_distill.llm import ChatRequest, make_backend
from compress_distill.llm.openai_backend import OpenAIBackend

pytestmark = pytest.mark.slow  # real model
PROMPT = [{"role": "user", "content": "Explain at length why 2 + 2 = 4."}]


def test_prefilled_think_cut_at_cap_has_no_final_response(prefilled_student: Path) -> None:
    student = prefilled_student
    backend = make_backend(
        {"backend": "hf", "model": str(student), "device": "cpu", "dtype": "float32", "batch_size": 2},
        use_cache=False,
    )
    req = ChatRequest(PROMPT, max_tokens=12)
    [out] = backend.generate([req])
    backend.close()
    assert out.finish_reason == "length"
    assert out.text == ""  # no </think> was produced: nothing to grade
    assert out.reasoning  # the generated tokens are reasoning


@pytest.mark.gpu
def test_prefilled_think_cut_on_gpu_bf16_reads_as_on_cpu(prefilled_student: Path) -> None:
    """The same cut through hf bf16 on CUDA: the same Completion shape as on the CPU (greedy bf16 tokens may
    differ from fp32 ones on a near-tie, so the reasoning text itself is not compared)."""
    student = prefilled_student
    req = ChatRequest(PROMPT, max_tokens=12)
    outs = []
    for device, dtype in (("cpu", "float32"), ("cuda", "bfloat16")):
        with make_backend(
            {"backend": "hf", "model": str(student), "device": device, "dtype": dtype}, use_cache=False
        ) as backend:
            outs.append(backend.generate([req])[0])
    cpu, gpu = outs
    assert (gpu.finish_reason, gpu.text, gpu.completion_tokens) == (cpu.finish_reason, cpu.text, 12)
    assert gpu.text == "" and gpu.reasoning


@pytest.mark.server
def test_prefilled_think_cut_through_a_real_openai_server(
    prefilled_student: Path, llama_command: Callable[..., str], tmp_path: Path
) -> None:
    """Issue 10: the openai backend returned this cut as a final response with empty reasoning."""
    student = prefilled_student
    chat_format = student / "server_chat_format.json"
    launch = (
        f"{llama_command(n_threads=1)} --chat_format hf-tokenizer-config "
        f"--hf_tokenizer_config_path {chat_format}"
    )
    with make_backend(
        {"backend": "openai", "model": str(student), "launch": [launch], "launch_timeout_s": 120},
        cache_dir=tmp_path / "cache",
        use_cache=False,
    ) as backend:
        assert isinstance(backend, OpenAIBackend)
        [out] = backend.generate([ChatRequest(PROMPT, max_tokens=12)])
        fmt = backend.format
    assert fmt.think_prefilled and fmt.stop_tokens[0] == "<|im_end|>"  # sent as `stop` with every request
    assert out.finish_reason == "length" and out.completion_tokens == 12
    assert out.text == "" and out.reasoning  # the cut is reasoning: nothing to grade
