"""How a stage drives an engine: one chat request per prompt, a backend opened for the stage and closed after
it, and the backend's usage counters as flat numbers for the stage's metrics file.

Heavy imports (the backends, transformers) happen inside the functions, so a stage's ``--help`` stays fast.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from compress_distill.config import BackendConfig, SamplingConfig


def request(
    prompt: str, sampling: SamplingConfig, *, seed: int | None, json_schema: dict[str, Any] | None = None
):
    from compress_distill.llm import ChatRequest

    return ChatRequest(
        messages=[{"role": "user", "content": prompt}],
        temperature=sampling.temperature,
        top_p=sampling.top_p,
        max_tokens=sampling.max_tokens,
        seed=seed,
        json_schema=json_schema,
    )


@contextlib.contextmanager
def engine(cfg: BackendConfig, backend: Any = None, cache_dir: str | Path | None = None) -> Iterator[Any]:
    """Yield ``backend`` if given (tests, callers that share one), else a new one closed on exit."""
    if backend is not None:
        yield backend
        return
    from compress_distill.llm import make_backend

    made = make_backend(cfg, cache_dir=cache_dir) if cache_dir is not None else make_backend(cfg)
    try:
        yield made
    finally:
        made.close()


def complete(backend: Any, requests: list[Any]) -> list[Any]:
    """``backend.generate(requests)``, checked against the engine contract: one completion per request, in
    order (a backend that drops or adds one would pair every later completion with the wrong row)."""
    completions = backend.generate(requests) if requests else []
    if len(completions) != len(requests):
        raise RuntimeError(
            f"backend returned {len(completions)} completions for {len(requests)} requests; "
            "the engine contract is one completion per request, in order"
        )
    return list(completions)


def engine_stats(backend: Any) -> dict[str, Any]:
    """The backend's usage counters (tokens, wall-clock, GPU-hours) as flat numbers for the metrics file."""
    stats = getattr(backend, "stats", None)
    if stats is None:
        return {}
    if callable(stats):
        stats = stats()
    # llm.accounting.BackendStats: llm_requests, llm_cached, llm_gpu_hours ...
    if hasattr(stats, "as_metrics"):
        return dict(stats.as_metrics())
    if dataclasses.is_dataclass(stats) and not isinstance(stats, type):
        stats = dataclasses.asdict(stats)
    elif hasattr(stats, "model_dump"):
        stats = stats.model_dump()
    elif not isinstance(stats, Mapping):
        stats = vars(stats)
    return {str(k): v for k, v in stats.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
