"""A template that pre-fills <think> (Qwen3.5) must not turn a cut-off reasoning into a final response.

The real SmolLM2 on CPU, served from a student directory whose saved tokenizer carries a Qwen3.5-style
template: the backend reads the chat format from the model directory once, at load, as every backend does."""

from __future__ import annotations

from pathlib import Path

import pytest

from compress_distill.llm import ChatRequest, make_backend

pytestmark = pytest.mark.slow  # real model

QWEN35_STYLE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n<think>\n{% endif %}"
)


def prefilled_student(smol_dir: str, out: Path) -> Path:
    """SmolLM2's weights (linked) with a saved tokenizer whose template pre-fills <think>."""
    from transformers import AutoTokenizer

    out.mkdir(parents=True)
    for file in Path(smol_dir).iterdir():
        if file.suffix in (".safetensors", ".json") and not file.name.startswith(("tokenizer", "special")):
            (out / file.name).symlink_to(file)
    tok = AutoTokenizer.from_pretrained(smol_dir)
    tok.chat_template = QWEN35_STYLE
    tok.save_pretrained(out)
    return out


def test_prefilled_think_cut_at_cap_has_no_final_response(smol_dir: str, tmp_path: Path) -> None:
    student = prefilled_student(smol_dir, tmp_path / "student")
    backend = make_backend(
        {"backend": "hf", "model": str(student), "device": "cpu", "dtype": "float32", "batch_size": 2},
        use_cache=False,
    )
    req = ChatRequest([{"role": "user", "content": "Explain at length why 2 + 2 = 4."}], max_tokens=12)
    [out] = backend.generate([req])
    backend.close()
    assert out.finish_reason == "length"
    assert out.text == ""  # no </think> was produced: nothing to grade
    assert out.reasoning  # the generated tokens are reasoning


@pytest.mark.gpu
def test_prefilled_think_cut_on_gpu_bf16_reads_as_on_cpu(smol_dir: str, tmp_path: Path) -> None:
    """The same cut through hf bf16 on CUDA: the same Completion shape as on the CPU (greedy bf16 tokens may
    differ from fp32 ones on a near-tie, so the reasoning text itself is not compared)."""
    student = prefilled_student(smol_dir, tmp_path / "student")
    req = ChatRequest([{"role": "user", "content": "Explain at length why 2 + 2 = 4."}], max_tokens=12)
    outs = []
    for device, dtype in (("cpu", "float32"), ("cuda", "bfloat16")):
        with make_backend(
            {"backend": "hf", "model": str(student), "device": device, "dtype": dtype}, use_cache=False
        ) as backend:
            outs.append(backend.generate([req])[0])
    cpu, gpu = outs
    assert (gpu.finish_reason, gpu.text, gpu.completion_tokens) == (cpu.finish_reason, cpu.text, 12)
    assert gpu.text == "" and gpu.reasoning
