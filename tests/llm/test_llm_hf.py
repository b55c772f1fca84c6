"""The ``hf`` backend on the real SmolLM2-135M-Instruct (CPU): generation, stops, JSON schema, determinism,
adapters, de-duplication and the cache path.  Few requests and small max_tokens keep it quick on 2 cores."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from compress_distill.llm import ChatRequest, make_backend
from compress_distill.llm.hf import HFBackend
from compress_distill.llm.tokens import chat_prompt_ids
from compress_distill.schema import JudgeVerdict, judge_json_schema

pytestmark = [pytest.mark.slow]  # real model / server: deselect with -m 'not slow'


def _user(text: str, **kw: object) -> ChatRequest:
    return ChatRequest([{"role": "user", "content": text}], **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def hf(smol_dir: str) -> Iterator[HFBackend]:
    """One loaded model for the module; no durable cache, so every call really generates."""
    backend = make_backend(
        {"backend": "hf", "model": smol_dir, "device": "cpu", "batch_size": 4}, use_cache=False
    )
    assert isinstance(backend, HFBackend)
    yield backend
    backend.close()


def test_generation_order_tokens_and_finish_reasons(hf: HFBackend) -> None:
    requests = [
        _user("Say hello.", max_tokens=40),
        _user("Count from one to one hundred, separated by commas.", max_tokens=3),
        _user("What is the capital of France? Answer with one word.", max_tokens=12),
    ]
    out = hf.generate(requests)
    assert len(out) == 3
    for req, completion in zip(requests, out, strict=True):
        # prompt_tokens identifies which request a completion belongs to (the prompts differ in length)
        assert completion.prompt_tokens == len(chat_prompt_ids(hf.tokenizer, req.messages))
        assert 0 < completion.completion_tokens <= req.max_tokens
        assert completion.model == hf.model and not completion.cached and len(completion.request_hash) == 64
        assert "<|im_end|>" not in completion.text and "<|im_start|>" not in completion.text
    assert out[0].finish_reason == "stop" and out[0].completion_tokens < 40 and out[0].text.strip()
    assert out[1].finish_reason == "length" and out[1].completion_tokens == 3 and out[1].truncated
    assert "paris" in out[2].text.lower()


def test_json_schema_output_parses_into_the_judge_verdict(hf: HFBackend) -> None:
    prompt = (
        "Original: 2+2 is 4 because two plus two makes four. Compressed: 2+2=4. Judge whether the "
        "compressed reasoning is faithful. Answer in JSON."
    )
    [completion] = hf.generate([_user(prompt, max_tokens=120, json_schema=judge_json_schema())])
    assert completion.finish_reason == "stop", completion.text
    verdict = JudgeVerdict.model_validate_json(completion.text)
    assert 1 <= verdict.faithfulness <= 5
    # properties come out in the schema's order (xgrammar follows the order it was given)
    assert list(json.loads(completion.text)) == list(judge_json_schema()["properties"])


def test_greedy_is_deterministic(hf: HFBackend) -> None:
    requests = [_user("Name a fruit.", max_tokens=10), _user("Name a colour.", max_tokens=10)]
    first = [c.text for c in hf.generate(requests)]
    second = [c.text for c in hf.generate(requests)]
    assert first == second and all(first)


def test_seeded_sampling_is_deterministic_whatever_the_batch(hf: HFBackend) -> None:
    story = _user("Tell a story about a cat.", temperature=1.0, top_p=0.95, max_tokens=12, seed=7)
    alone = hf.generate([story])[0].text
    # same request, now in a batch with mates of other lengths (left padding) and other seeds
    mates = [
        _user(
            "Write a long poem about the sea and the sky and the wind.",
            temperature=0.8,
            max_tokens=12,
            seed=1,
        ),
        _user("Hi", temperature=1.0, max_tokens=12, seed=2),
    ]
    batched = hf.generate([mates[0], story, mates[1]])[1].text
    assert batched == alone
    other_seed = hf.generate(
        [_user("Tell a story about a cat.", temperature=1.0, top_p=0.95, max_tokens=12, seed=8)]
    )[0].text
    assert other_seed != alone


def test_row_sampler_draws_from_the_nucleus_with_independent_rows() -> None:
    import torch

    from compress_distill.llm.hf import _RowSampler

    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))

    def frequencies(top_p: float, draws: int = 4000) -> list[float]:
        sampler = _RowSampler([1.0], [top_p], [11], "cpu")
        counts = torch.zeros(4)
        for _ in range(draws):
            counts[sampler(None, logits.clone().unsqueeze(0)).argmax()] += 1
        return (counts / draws).tolist()

    assert frequencies(1.0) == pytest.approx([0.5, 0.3, 0.15, 0.05], abs=0.03)
    # top_p 0.7 keeps {0.5, 0.3}: the smallest prefix reaching 0.7, renormalised
    assert frequencies(0.7) == pytest.approx([0.625, 0.375, 0.0, 0.0], abs=0.03)
    # a row's stream depends on its seed only, not on its position or its neighbours
    vocab = torch.randn(3, 1000)
    alone = _RowSampler([0.9], [0.95], [5], "cpu")
    crowd = _RowSampler([0.0, 1.3, 0.9], [1.0, 0.5, 0.95], [1, 2, 5], "cpu")
    for _ in range(20):
        step = torch.randn(1000)
        vocab[2] = step
        assert alone(None, step.clone().unsqueeze(0)).argmax() == crowd(None, vocab.clone())[2].argmax()


def test_prompt_longer_than_the_context_is_an_empty_length_completion(hf: HFBackend) -> None:
    [completion] = hf.generate([_user("word " * 9000, max_tokens=8)])
    assert (completion.text, completion.finish_reason, completion.completion_tokens) == ("", "length", 0)
    assert completion.prompt_tokens > 8192 and completion.extra["error"] == "prompt_too_long"


def test_duplicates_are_generated_once_and_the_cache_serves_reruns(smol_dir: str, tmp_path: Path) -> None:
    cfg = {"backend": "hf", "model": smol_dir, "device": "cpu", "batch_size": 4}
    same = _user("Name an animal.", max_tokens=6)
    unseeded = _user("Name a tree.", temperature=1.0, max_tokens=6)  # independent draws, never merged
    requests = [same, _user("Name a river.", max_tokens=6), same, unseeded, unseeded]
    with make_backend(cfg, cache_dir=tmp_path) as backend:
        out = backend.generate(requests)
        assert backend.stats.generated == 4 and backend.stats.deduplicated == 1
        assert out[0].text == out[2].text and out[0].request_hash == out[2].request_hash
        assert out[3].request_hash != out[4].request_hash
        assert (
            backend.stats.completion_tokens > 0
            and backend.stats.wall_clock_s > 0
            and backend.stats.load_s > 0
        )
    with make_backend(cfg, cache_dir=tmp_path) as again:
        rerun = again.generate(requests)
        assert again.stats.cached == 5 and again.stats.generated == 0
        assert again.hf_model is None  # fully cached: the model was never loaded
    assert [c.text for c in rerun] == [c.text for c in out] and all(c.cached for c in rerun)
    metrics = again.stats.as_metrics()
    assert metrics["llm_cached"] == 5 and metrics["llm_gpu_hours"] == 0.0


def test_peft_adapter_directory_is_merged_and_matches_the_unmerged_adapter(
    smol_dir: str, tmp_path: Path
) -> None:
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = AutoModelForCausalLM.from_pretrained(smol_dir, dtype=torch.float32)
    peft = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    torch.manual_seed(0)
    for name, param in peft.named_parameters():
        if "lora_B" in name:  # B starts at zero; make the adapter actually change the model
            torch.nn.init.normal_(param, std=0.05)
    adapter = tmp_path / "models" / "run"
    peft.save_pretrained(adapter)
    AutoTokenizer.from_pretrained(smol_dir).save_pretrained(adapter)
    (adapter / "training_config.json").write_text(json.dumps({"base_model": smol_dir, "method": "lora"}))

    request = _user("What is 3+4?", max_tokens=8)
    with make_backend({"backend": "hf", "model": str(adapter), "device": "cpu"}, use_cache=False) as backend:
        merged = backend.generate([request])[0]
        assert backend.resolved.adapter == str(adapter) and backend.resolved.weights == smol_dir
        ids = chat_prompt_ids(backend.tokenizer, request.messages)
        stop_ids = set(backend._stop_ids)
    reference = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(smol_dir, dtype=torch.float32), adapter
    ).eval()
    with torch.inference_mode():
        gen = reference.generate(
            input_ids=torch.tensor([ids]),
            max_new_tokens=8,
            do_sample=False,
            eos_token_id=sorted(stop_ids),
            pad_token_id=2,
        )
    new = [t for t in gen[0, len(ids) :].tolist()]
    cut = next((k for k, t in enumerate(new) if t in stop_ids), len(new))
    tokenizer = AutoTokenizer.from_pretrained(smol_dir)
    assert merged.text == tokenizer.decode(new[:cut], skip_special_tokens=True).strip()


def _parallel_requests() -> list[ChatRequest]:
    return [
        _user("Name a fruit.", max_tokens=8),
        _user("Tell a story about a cat.", temperature=1.0, top_p=0.95, max_tokens=8, seed=7),
        _user("Is 2+2=4? Answer in JSON.", max_tokens=40, json_schema=judge_json_schema()),
        _user("Count from one to ten.", max_tokens=6),
        _user("Name a colour.", max_tokens=8),
    ]


def test_batches_dealt_over_two_replicas_answer_as_one_replica(smol_dir: str) -> None:
    """Issue 11: with data_parallel_size N the hf backend deals its batches over N replicas, one thread each
    (one per CUDA device: test_data_parallel_on_two_gpus); here two real replicas on the CPU run that path.
    Completions come back in request order and equal a single replica's."""
    from collections import Counter

    requests = _parallel_requests()
    with make_backend(
        {"backend": "hf", "model": smol_dir, "device": "cpu", "batch_size": 2}, use_cache=False
    ) as backend:
        assert isinstance(backend, HFBackend)
        alone = backend.generate(requests)
        backend._replicas.append(("cpu", backend._load_model(backend.tokenizer, "cpu")))
        calls: Counter[int] = Counter()
        for r, (_, model) in enumerate(backend._replicas):
            model.generate = lambda *a, _g=model.generate, _r=r, **k: (calls.update([_r]), _g(*a, **k))[1]
        dealt = backend.generate(requests)
    assert calls == {0: 2, 1: 2}  # 4 batches (the JSON request is a group of its own), 2 per replica
    assert [(c.text, c.completion_tokens, c.finish_reason) for c in dealt] == [
        (c.text, c.completion_tokens, c.finish_reason) for c in alone
    ]
    assert dealt[2].text.startswith('{"faithfulness": ')  # the grammar ran on the replica (cut at 40 tokens)


@pytest.mark.gpu
def test_data_parallel_on_two_gpus(smol_dir: str) -> None:
    import torch

    if torch.cuda.device_count() < 2:
        pytest.skip("needs 2 CUDA devices")
    requests = _parallel_requests()
    cfg = {"backend": "hf", "model": smol_dir, "device": "cuda", "dtype": "float32", "batch_size": 1}
    with make_backend(cfg, use_cache=False) as one:
        alone = one.generate(requests)
    with make_backend({**cfg, "data_parallel_size": 2, "gpus": 2}, use_cache=False) as two:
        assert isinstance(two, HFBackend)
        dealt = two.generate(requests)
        assert [d for d, _ in two._replicas] == ["cuda:0", "cuda:1"]
        assert {str(next(m.parameters()).device) for _, m in two._replicas} == {"cuda:0", "cuda:1"}
    assert [c.text for c in dealt] == [c.text for c in alone]


@pytest.mark.gpu
def test_bf16_on_cuda(smol_dir: str) -> None:
    import time

    with make_backend(
        {"backend": "hf", "model": smol_dir, "device": "cuda", "dtype": "bfloat16", "batch_size": 32},
        use_cache=False,
    ) as backend:
        requests = [_user(f"Write a sentence about the number {i}.", max_tokens=64) for i in range(32)]
        backend.generate(requests[:2])  # warm-up (CUDA context, kernels)
        start = time.perf_counter()
        out = backend.generate(requests)
        elapsed = time.perf_counter() - start
        seeded = _user("Tell a story.", temperature=1.0, max_tokens=16, seed=3)
        assert backend.generate([seeded])[0].text == backend.generate([requests[0], seeded])[1].text
    tokens = sum(c.completion_tokens for c in out)
    print(f"hf bf16 cuda: {tokens} tokens in {elapsed:.2f} s = {tokens / elapsed:.0f} tok/s at batch 32")
    assert backend.dtype == "bfloat16" and all(c.text for c in out)
