"""Engine-layer benchmark, side by side in one run (docs/architecture.md §8): prints a table, writes
metrics/bench/backends.json.

(a) pipeline overhead = ``backend.generate`` wall time / the raw engine call on the same requests
    - hf: ``model.generate`` on the same left-padded batch (greedy, and seeded sampling whose per-row
      generators replace transformers' batch sampler);
    - openai: bare async HTTP calls (httpx, same concurrency) against the same llama.cpp server;
    target <= 1.05.  Each side runs ``--reps`` times alternately; medians are compared.
(b) cached-completion reads/s: a cache of ``--cached`` completions (1 KB answer + 2 KB reasoning each) served
    through ``backend.generate`` (hashing every request included) and through ``RequestCache.get`` alone;
    target >= 50,000/s.
(c) openai throughput against llama.cpp with 1 vs 4 parallel slots.  llama-cpp-python's server decodes one
    request at a time, so a "slot" is a replica started through ``launch:`` (what ``vllm serve`` replicas are
    on a GPU node); both runs share the machine's cores.

    .venv/bin/python bench/backends.py            # ~5-10 min on 2 busy cores
"""

from __future__ import annotations

import os

# Shared machines: idle OpenMP threads must sleep, not spin, or the neighbours' load decides the figures
# (81 SmolLM2 tokens: 93 s spinning vs 16 s passive on a busy 2-core box).  Set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from compress_distill.llm import ChatRequest, make_backend
from compress_distill.llm.base import CachedBackend
from compress_distill.modelhub import smollm2_gguf

OUT = Path("metrics/bench/backends.json")
TOPICS = [
    "the sea",
    "a cat",
    "bread",
    "winter",
    "a bridge",
    "music",
    "the moon",
    "a garden",
    "trains",
    "rain",
    "chess",
    "a library",
    "mountains",
    "coffee",
    "a river",
    "stars",
]


def _requests(n: int, max_tokens: int, **kw: Any) -> list[ChatRequest]:
    return [
        ChatRequest(
            [{"role": "user", "content": f"Write two sentences about {TOPICS[i % len(TOPICS)]}."}],
            max_tokens=max_tokens,
            **kw,
        )
        for i in range(n)
    ]


def _fresh_cache(backend: CachedBackend, root: Path) -> None:
    """Point the backend at an empty cache directory, so the next generate() really generates."""
    if backend._cache is not None:
        backend._cache.close()
    backend._cache = None
    backend._cache_root = root


def _median_pair(pipeline: list[float], raw: list[float]) -> dict[str, float]:
    p, r = statistics.median(pipeline), statistics.median(raw)
    return {"pipeline_s": round(p, 4), "raw_s": round(r, 4), "overhead_ratio": round(p / r, 4)}


class _EngineClock:
    """Wraps a callable (``model.generate``, ``AsyncClient.post``) and sums the seconds spent inside it.

    Inside one ``backend.generate`` run, wall time / engine time is the pipeline overhead with no
    run-to-run noise: both clocks see the same neighbours on a shared machine.
    """

    def __init__(self) -> None:
        self.seconds = 0.0

    def wrap(self, fn: Any) -> Any:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start

        return timed

    def wrap_async(self, fn: Any) -> Any:
        async def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return await fn(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start

        return timed


# --------------------------------------------------------------------------------------------- (a) hf
def _hf_pair(
    backend: Any, raw_generate: Any, clock: _EngineClock, requests: list[ChatRequest], reps: int, tmp: Path
) -> dict[str, Any]:
    """Alternate the raw ``model.generate`` and ``backend.generate`` on the same batch; medians and ratios."""
    import torch
    from transformers import GenerationConfig

    from compress_distill.llm.tokens import chat_prompt_ids

    prompts = [chat_prompt_ids(backend.tokenizer, r.messages) for r in requests]
    width = max(map(len, prompts))
    ids = torch.tensor([[backend._pad_id] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    sampled = requests[0].temperature > 0
    sample = {"do_sample": True, "temperature": requests[0].temperature, "top_p": requests[0].top_p}
    cfg = GenerationConfig(
        max_new_tokens=requests[0].max_tokens,
        eos_token_id=backend._stop_ids,
        pad_token_id=backend._pad_id,
        **(sample if sampled else {"do_sample": False}),
    )
    wall: dict[str, list[float]] = {"raw": [], "pipeline": []}
    cpu: dict[str, list[float]] = {"raw": [], "pipeline": []}
    in_run: list[float] = []
    tokens = 0
    for rep in range(reps):  # A B, B A, A B ...: a drifting machine load favours neither side
        for side in ("raw", "pipeline") if rep % 2 == 0 else ("pipeline", "raw"):
            torch.manual_seed(rep)
            _fresh_cache(backend, tmp / f"hf-{id(requests)}-{rep}")
            clock.seconds = 0.0
            start, cpu_start = time.perf_counter(), time.process_time()
            if side == "raw":
                with torch.inference_mode():
                    raw_generate(input_ids=ids, attention_mask=mask, generation_config=cfg)
            else:
                completions = backend.generate(requests)
                assert not any(c.cached for c in completions)
                tokens = sum(c.completion_tokens for c in completions)
            wall[side].append(time.perf_counter() - start)
            cpu[side].append(time.process_time() - cpu_start)
            if side == "pipeline":
                in_run.append(wall[side][-1] / clock.seconds)
    out = _median_pair(wall["pipeline"], wall["raw"])
    out["cpu_overhead_ratio"] = round(statistics.median(cpu["pipeline"]) / statistics.median(cpu["raw"]), 4)
    out["in_run_overhead_ratio"] = round(statistics.median(in_run), 4)
    out["completion_tokens"] = tokens
    return out


def bench_hf(reps: int, n: int, max_tokens: int, tmp: Path) -> dict[str, Any]:
    backend = make_backend(
        {"backend": "hf", "model": "smollm2-135m-instruct", "device": "cpu", "batch_size": n},
        cache_dir=tmp / "warm",
    )
    backend.generate(_requests(2, 2))  # load + warm-up
    model = backend.hf_model
    raw_generate = model.generate
    clock = _EngineClock()
    model.generate = clock.wrap(raw_generate)  # the backend's own calls are timed from now on
    out: dict[str, Any] = {"requests": n, "max_tokens": max_tokens, "batch_size": n}
    try:
        out["greedy"] = _hf_pair(backend, raw_generate, clock, _requests(n, max_tokens), reps, tmp)
        sampled = _requests(n, max_tokens, temperature=0.7, top_p=0.9, seed=1)
        out["seeded_sampling"] = _hf_pair(backend, raw_generate, clock, sampled, reps, tmp)
    finally:
        model.generate = raw_generate
        backend.close()
    return out


# --------------------------------------------------------------------------------------------- (a) openai
def _llama(replicas: int, threads: int) -> list[str]:
    cmd = (
        f"{{python}} -m llama_cpp.server --model {smollm2_gguf()} --host 127.0.0.1 --port {{port}} --n_ctx 1024 "
        f"--n_threads {threads} --n_threads_batch {threads} --verbose False"
    )
    return [cmd] * replicas


async def _bare_http(urls: list[str], requests: list[ChatRequest], concurrency: int) -> int:
    """The raw engine call: POST each request, parse nothing but usage.  Returns completion tokens."""
    import httpx

    queue = iter(requests)
    tokens = 0

    async def worker(url: str, client: httpx.AsyncClient) -> None:
        nonlocal tokens
        for req in queue:
            body = {
                "model": "m",
                "messages": req.messages,
                "max_tokens": req.max_tokens,
                "temperature": 0.0,
                "top_p": 1.0,
            }
            resp = await client.post(f"{url}/chat/completions", json=body)
            tokens += resp.json()["usage"]["completion_tokens"]

    async with httpx.AsyncClient(timeout=600) as client:
        await asyncio.gather(*(worker(u, client) for u in urls for _ in range(concurrency)))
    return tokens


def bench_openai_overhead(reps: int, n: int, max_tokens: int, tmp: Path) -> dict[str, Any]:
    import httpx

    backend = make_backend(
        {
            "backend": "openai",
            "model": "smollm2-135m-instruct",
            "launch": _llama(1, 1),
            "max_concurrency": 1,
            "launch_timeout_s": 300,
        },
        cache_dir=tmp / "oa",
    )
    backend.generate(_requests(1, 2))  # starts the server
    urls = backend.base_urls
    requests = _requests(n, max_tokens)
    pipeline, raw, in_run = [], [], []
    clock = _EngineClock()
    post = httpx.AsyncClient.post

    def run_raw() -> None:
        start = time.perf_counter()
        asyncio.run(_bare_http(urls, requests, 1))
        raw.append(time.perf_counter() - start)

    def run_pipeline(rep: int) -> None:
        _fresh_cache(backend, tmp / f"oa-{rep}")
        clock.seconds = 0.0
        httpx.AsyncClient.post = clock.wrap_async(post)  # one request in flight: the sum is the engine time
        try:
            start = time.perf_counter()
            backend.generate(requests)
            pipeline.append(time.perf_counter() - start)
        finally:
            httpx.AsyncClient.post = post
        in_run.append(pipeline[-1] / clock.seconds)

    for rep in range(reps):  # alternate the order, as for hf
        if rep % 2 == 0:
            run_raw()
            run_pipeline(rep)
        else:
            run_pipeline(rep)
            run_raw()
    backend.close()
    return {
        "requests": n,
        "max_tokens": max_tokens,
        **_median_pair(pipeline, raw),
        "in_run_overhead_ratio": round(statistics.median(in_run), 4),
    }


# --------------------------------------------------------------------------------------------- (b) cache
def bench_cache(n: int, tmp: Path) -> dict[str, Any]:
    from compress_distill.llm.types import Completion

    cfg = {"backend": "hf", "model": "smollm2-135m-instruct", "device": "cpu"}
    requests = [
        ChatRequest(
            [
                {"role": "system", "content": "You are a careful math teacher."},
                {"role": "user", "content": f"Question {i}: " + "Solve the problem step by step. " * 8},
            ],
            temperature=0.6,
            top_p=0.95,
            max_tokens=16000,
            seed=i,
        )
        for i in range(n)
    ]
    writer = make_backend(cfg, cache_dir=tmp / "cache")
    keys = writer.request_keys(requests)
    answer, reasoning = "The answer is 42. " * 56, "Let me think about it carefully. " * 62  # ~1 KB, ~2 KB
    start = time.perf_counter()
    batch = 1000
    for i in range(0, n, batch):
        writer.cache.put_many(
            [
                (
                    k,
                    Completion(
                        text=answer,
                        reasoning=reasoning,
                        finish_reason="stop",  # type: ignore[union-attr]
                        prompt_tokens=80,
                        completion_tokens=900,
                        model="m",
                    ),
                )
                for k in keys[i : i + batch]
            ]
        )
    write_s = time.perf_counter() - start
    writer.close()

    reader = make_backend(cfg, cache_dir=tmp / "cache")
    start = time.perf_counter()
    cache = reader.cache
    assert cache is not None
    index_s = time.perf_counter() - start
    # Wall clock on a shared machine mostly measures the neighbours: CPU seconds of this process are reported
    # beside it (reads per CPU-second = the rate on an otherwise idle core).
    start, cpu = time.perf_counter(), time.process_time()
    hits = sum(cache.get(k) is not None for k in keys)
    get_s, get_cpu = time.perf_counter() - start, time.process_time() - cpu
    start, cpu = time.perf_counter(), time.process_time()
    out = reader.generate(requests)
    generate_s, generate_cpu = time.perf_counter() - start, time.process_time() - cpu
    assert hits == n and all(c.cached for c in out) and reader.hf_model is None
    size = sum(f.stat().st_size for f in (tmp / "cache").rglob("*.jsonl"))
    return {
        "completions": n,
        "cache_mb": round(size / 2**20, 1),
        "write_per_s": round(n / write_s),
        "open_index_s": round(index_s, 3),
        "get_per_s": round(n / get_s),
        "get_per_cpu_s": round(n / get_cpu),
        "generate_cached_per_s": round(n / generate_s),
        "generate_cached_per_cpu_s": round(n / generate_cpu),
    }


# --------------------------------------------------------------------------------------------- (c) slots
def bench_slots(n: int, max_tokens: int, tmp: Path) -> dict[str, Any]:
    cores = os.cpu_count() or 1
    out: dict[str, Any] = {"requests": n, "max_tokens": max_tokens, "cpu_cores": cores}
    for slots in (1, 4):
        threads = 1  # same per-replica setting in both runs: only the number of slots changes
        backend = make_backend(
            {
                "backend": "openai",
                "model": "smollm2-135m-instruct",
                "launch": _llama(slots, threads),
                "max_concurrency": 1,
                "launch_timeout_s": 300,
            },
            cache_dir=tmp / f"slots-{slots}",
            use_cache=False,
        )
        backend.generate(_requests(slots, 2))  # start and warm every replica
        start = time.perf_counter()
        completions = backend.generate(_requests(n, max_tokens))
        elapsed = time.perf_counter() - start
        backend.close()
        tokens = sum(c.completion_tokens for c in completions)
        out[f"slots_{slots}"] = {
            "threads_per_replica": threads,
            "wall_s": round(elapsed, 2),
            "completion_tokens": tokens,
            "tokens_per_s": round(tokens / elapsed, 2),
            "requests_per_s": round(n / elapsed, 3),
        }
    out["speedup_4_vs_1"] = round(out["slots_4"]["tokens_per_s"] / out["slots_1"]["tokens_per_s"], 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=4)
    parser.add_argument("--cached", type=int, default=50_000)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    load_before = os.getloadavg()
    results: dict[str, Any] = {
        "cpu_cores": os.cpu_count(),
        "loadavg_before": [round(x, 2) for x in load_before],
    }
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        results["b_cache"] = bench_cache(args.cached, tmp)
        results["a_hf"] = bench_hf(args.reps, n=8, max_tokens=16, tmp=tmp)
        results["a_openai"] = bench_openai_overhead(args.reps, n=8, max_tokens=16, tmp=tmp)
        results["c_openai_slots"] = bench_slots(n=16, max_tokens=32, tmp=tmp)
    results["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]

    a_hf, a_oa, b, c = results["a_hf"], results["a_openai"], results["b_cache"], results["c_openai_slots"]
    rows = []
    for label in ("greedy", "seeded_sampling"):
        m = a_hf[label]
        rows += [
            (
                f"(a) hf {label}: backend.generate / model.generate (A/B, wall)",
                f"{m['pipeline_s']:.2f} s / {m['raw_s']:.2f} s",
                f"{m['overhead_ratio']:.3f}",
                "<= 1.05",
            ),
            (f"(a) hf {label}: same, process CPU seconds", "", f"{m['cpu_overhead_ratio']:.3f}", "<= 1.05"),
            (
                f"(a) hf {label}: in-run wall / time inside model.generate",
                "",
                f"{m['in_run_overhead_ratio']:.3f}",
                "<= 1.05",
            ),
        ]
    rows += [
        (
            "(a) openai: backend.generate / bare HTTP (A/B, wall)",
            f"{a_oa['pipeline_s']:.2f} s / {a_oa['raw_s']:.2f} s",
            f"{a_oa['overhead_ratio']:.3f}",
            "<= 1.05",
        ),
        (
            "(a) openai: in-run wall / time inside HTTP calls",
            "",
            f"{a_oa['in_run_overhead_ratio']:.3f}",
            "<= 1.05",
        ),
        (
            "(b) cached completions via backend.generate",
            f"{b['generate_cached_per_s']:,}/s wall, {b['generate_cached_per_cpu_s']:,}/CPU-s",
            "",
            ">= 50,000/s",
        ),
        (
            "(b) cached completions via RequestCache.get",
            f"{b['get_per_s']:,}/s wall, {b['get_per_cpu_s']:,}/CPU-s",
            "",
            "",
        ),
        (
            "(b) cache index on open",
            f"{b['open_index_s']:.2f} s for {b['completions']:,} ({b['cache_mb']} MB)",
            "",
            "",
        ),
        ("(c) llama.cpp 1 slot (1 thread)", f"{c['slots_1']['tokens_per_s']:.1f} tok/s", "", ""),
        (
            "(c) llama.cpp 4 slots (4 replicas x 1 thread)",
            f"{c['slots_4']['tokens_per_s']:.1f} tok/s",
            f"{c['speedup_4_vs_1']:.2f}x",
            "",
        ),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}}  {'value':<44} {'ratio':<8} target")
    for name, value, ratio, target in rows:
        print(f"{name:<{width}}  {value:<44} {ratio:<8} {target}")
    print(
        f"load average before/after: {results['loadavg_before']} / {results['loadavg_after']} "
        f"on {results['cpu_cores']} cores"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
