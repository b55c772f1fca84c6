"""The vLLM backend's request translation (pure, runs everywhere) and its missing-vLLM message."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from compress_distill.config import backend_config
from compress_distill.llm import ChatRequest, make_backend
from compress_distill.llm.resolve import ResolvedModel
from compress_distill.llm.vllm_backend import (
    INSTALL_HINT,
    chat_kwargs,
    completion_fields,
    deal,
    engine_kwargs,
    gpu_slices,
    is_harmony,
    lora_spec,
    sampling_kwargs,
)

QWEN = backend_config(
    {
        "backend": "vllm",
        "model": "Qwen/Qwen3.5-397B-A17B-FP8",
        "tensor_parallel_size": 8,
        "max_model_len": 16384,
        "gpu_memory_utilization": 0.92,
        "reasoning_parser": "qwen3",
        "quantization": "fp8",
    }
)
GPTOSS = backend_config(
    {
        "backend": "vllm",
        "model": "openai/gpt-oss-120b",
        "tensor_parallel_size": 8,
        "reasoning_parser": "openai_gptoss",
        "chat_template_kwargs": {"reasoning_effort": "high"},
    }
)


def test_engine_kwargs_carry_parallelism_memory_and_quantization() -> None:
    kw = engine_kwargs(QWEN, ResolvedModel(QWEN.model, None, QWEN.model))
    assert kw == {
        "model": QWEN.model,
        "tokenizer": QWEN.model,
        "tensor_parallel_size": 8,
        "gpu_memory_utilization": 0.92,
        "max_model_len": 16384,
        "quantization": "fp8",
        "reasoning_parser": "qwen3",
    }
    bf16 = backend_config({"backend": "vllm", "model": "org/m", "dtype": "bfloat16"})
    kw = engine_kwargs(bf16, ResolvedModel("org/m", None, "org/m"))
    assert kw["dtype"] == "bfloat16" and "max_model_len" not in kw and "quantization" not in kw


def test_adapter_directories_become_lora_requests(tmp_path: Path) -> None:
    (tmp_path / "adapter_config.json").write_text(
        json.dumps({"r": 64, "base_model_name_or_path": "org/base"})
    )
    resolved = ResolvedModel("org/base", str(tmp_path), str(tmp_path))
    kw = engine_kwargs(backend_config({"backend": "vllm", "model": "org/base"}), resolved)
    assert kw["enable_lora"] is True and kw["max_lora_rank"] == 64 and kw["tokenizer"] == str(tmp_path)
    assert lora_spec(resolved) == {"lora_name": tmp_path.name, "lora_int_id": 1, "lora_path": str(tmp_path)}
    assert lora_spec(ResolvedModel("org/base", None, "org/base")) is None


def test_sampling_kwargs_map_every_request_field() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    req = ChatRequest(
        [{"role": "user", "content": "q"}],
        temperature=0.6,
        top_p=0.95,
        max_tokens=16000,
        seed=3,
        json_schema=schema,
    )
    assert sampling_kwargs(req, harmony=False) == {
        "temperature": 0.6,
        "top_p": 0.95,
        "max_tokens": 16000,
        "skip_special_tokens": True,
        "seed": 3,
        "structured_outputs": {"json": schema},
    }
    greedy = sampling_kwargs(ChatRequest([{"role": "user", "content": "q"}]), harmony=True)
    assert greedy["temperature"] == 0.0 and "seed" not in greedy and "structured_outputs" not in greedy
    assert greedy["skip_special_tokens"] is False  # harmony channel markers must survive detokenisation


def test_chat_kwargs_and_harmony_detection() -> None:
    assert chat_kwargs(GPTOSS, use_tqdm=False) == {
        "use_tqdm": False,
        "add_generation_prompt": True,
        "chat_template_kwargs": {"reasoning_effort": "high"},
    }
    assert "chat_template_kwargs" not in chat_kwargs(QWEN, use_tqdm=True)
    assert is_harmony(GPTOSS) and not is_harmony(QWEN)
    assert is_harmony(backend_config({"backend": "vllm", "model": "openai/gpt-oss-20b"}))


def test_completion_fields_split_think_blocks_and_harmony() -> None:
    qwen = completion_fields(
        "Let me add.\n</think>\n\nThe answer is 4.", 12, 30, "stop", think_prefilled=True
    )
    assert (qwen["reasoning"], qwen["text"]) == ("Let me add.", "The answer is 4.")
    harmony = completion_fields(
        "<|channel|>analysis<|message|>2+2=4<|end|><|start|>assistant<|channel|>final<|message|>4",
        9,
        20,
        "stop",
        think_prefilled=False,
    )
    assert (harmony["reasoning"], harmony["text"]) == ("2+2=4", "4")
    cut = completion_fields("<think>still thinking", 100, 20, "length", think_prefilled=False)
    assert (cut["text"], cut["finish_reason"], cut["completion_tokens"], cut["prompt_tokens"]) == (
        "",
        "length",
        100,
        20,
    )
    # issue 10: cut inside the think block the template pre-filled -- no tag in the text at all
    prefilled = completion_fields("so the answer is B", 100, 20, "length", think_prefilled=True)
    assert (prefilled["reasoning"], prefilled["text"]) == ("so the answer is B", "")
    assert completion_fields("plain", 1, 1, None, think_prefilled=False)["finish_reason"] == "stop"


def test_sampling_kwargs_carry_the_models_stop_tokens() -> None:
    req = ChatRequest([{"role": "user", "content": "q"}])
    assert sampling_kwargs(req, harmony=False, stop_token_ids=(151645, 151643))["stop_token_ids"] == [
        151645,
        151643,
    ]


def test_data_parallel_replicas_each_get_the_tensor_parallel_size_and_their_own_gpus() -> None:
    # TP4 x DP2 (the paper's Llama-3.3-70B compressor): two LLM(tensor_parallel_size=4) processes, one per half
    # of the node; vLLM's own data_parallel_size is never passed to an in-process LLM
    cfg = backend_config(
        {"backend": "vllm", "model": "org/m", "tensor_parallel_size": 4, "data_parallel_size": 2, "gpus": 8}
    )
    kw = engine_kwargs(cfg, ResolvedModel("org/m", None, "org/m"))
    assert kw["tensor_parallel_size"] == 4 and "data_parallel_size" not in kw
    assert gpu_slices(cfg.data_parallel_size, cfg.tensor_parallel_size, "0,1,2,3,4,5,6,7") == [
        "0,1,2,3",
        "4,5,6,7",
    ]


def test_data_parallel_gpu_slices_and_dealing() -> None:
    assert gpu_slices(2, 4, None) == ["0,1,2,3", "4,5,6,7"]
    assert gpu_slices(8, 1, "0,1,2,3,4,5,6,7") == [str(i) for i in range(8)]
    assert gpu_slices(2, 2, "4,5,6,7") == ["4,5", "6,7"]
    with pytest.raises(ValueError, match="needs 8 GPUs"):
        gpu_slices(2, 4, "0,1,2,3")
    assert deal(5, 2) == [[0, 2, 4], [1, 3]]
    assert sorted(i for shard in deal(11, 8) for i in shard) == list(range(11))


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_missing_vllm_says_how_to_install(smol_dir: str, tmp_path: Path) -> None:
    backend = make_backend(
        {"backend": "vllm", "model": smol_dir}, cache_dir=tmp_path
    )  # constructing is cheap
    with pytest.raises(ImportError, match=r"pip install -e '\.\[gpu\]'"):
        backend.generate([ChatRequest([{"role": "user", "content": "hi"}], max_tokens=4)])
    assert "gpu extra" in INSTALL_HINT
    backend.close()


@pytest.mark.gpu
def test_vllm_generates_on_gpu(smol_dir: str, tmp_path: Path) -> None:
    pytest.importorskip("vllm")
    from compress_distill.schema import JudgeVerdict, judge_json_schema

    with make_backend(
        {"backend": "vllm", "model": smol_dir, "gpu_memory_utilization": 0.3, "max_model_len": 2048},
        cache_dir=tmp_path,
    ) as backend:
        out = backend.generate(
            [
                ChatRequest([{"role": "user", "content": "What is 2+2?"}], max_tokens=32),
                ChatRequest(
                    [{"role": "user", "content": "Judge 2+2=4 against 'two plus two is four'. JSON."}],
                    max_tokens=256,
                    json_schema=judge_json_schema(),
                ),
            ]
        )
    assert out[0].text and out[0].completion_tokens > 0
    if out[1].finish_reason == "stop":
        JudgeVerdict.model_validate_json(out[1].text)


@pytest.mark.gpu
def test_vllm_prefilled_think_cut_reads_as_on_hf(prefilled_student: Path, tmp_path: Path) -> None:
    """Issue 10 on the real engine: a cut inside the pre-filled think block has no final response, as on hf."""
    pytest.importorskip("vllm")
    req = ChatRequest([{"role": "user", "content": "Explain at length why 2 + 2 = 4."}], max_tokens=12)
    outs = []
    for cfg in (
        {"backend": "hf", "device": "cpu", "dtype": "float32"},
        {"backend": "vllm", "gpu_memory_utilization": 0.3, "max_model_len": 2048},
    ):
        with make_backend({**cfg, "model": str(prefilled_student)}, cache_dir=tmp_path) as backend:
            outs.append(backend.generate([req])[0])
            if cfg["backend"] == "vllm":
                assert backend.format is not None and backend.format.think_prefilled
    hf, vllm = outs
    assert (vllm.finish_reason, vllm.text, vllm.completion_tokens) == ("length", "", 12)
    assert (hf.finish_reason, hf.text) == ("length", "") and vllm.reasoning
