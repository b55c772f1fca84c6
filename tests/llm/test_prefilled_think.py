"""A template that pre-fills <think> (Qwen3.5) must not turn a cut-off reasoning into a final response."""

from __future__ import annotations

from compress_distill.llm import ChatRequest, make_backend


def test_prefilled_think_cut_at_cap_has_no_final_response(smol_dir: str) -> None:
    backend = make_backend(
        {"backend": "hf", "model": smol_dir, "device": "cpu", "dtype": "float32", "batch_size": 2},
        use_cache=False,
    )
    backend._ensure_loaded()  # noqa: SLF001 - swap in a Qwen3.5-style template before the first request
    tok = backend.tokenizer
    tok.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n<think>\n{% endif %}"
    )
    req = ChatRequest(messages=[{"role": "user", "content": "Explain at length why 2 + 2 = 4."}], max_tokens=12)
    [out] = backend.generate([req])
    backend.close()
    assert out.finish_reason == "length"
    assert out.text == ""  # no </think> was produced: nothing to grade
    assert out.reasoning  # the generated tokens are reasoning
