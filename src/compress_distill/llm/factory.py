"""``make_backend``: params dict (or ``BackendConfig``) in, ready backend out.

    from compress_distill.llm import ChatRequest, make_backend

    with make_backend({"backend": "hf", "model": "smollm2-135m-instruct"}) as backend:
        completions = backend.generate([ChatRequest([{"role": "user", "content": "2+2?"}], max_tokens=32)])
        metrics.update(backend.stats.as_metrics())   # tokens, wall clock, GPU-hours for the stage metrics

The durable request cache lives in ``.cache/llm`` under the current directory (the repository root when a
stage runs under DVC) -- deliberately not under ``data/`` or any other DVC output: DVC deletes a stage's
outputs before re-running it, and the cache is what lets a killed stage resume.  ``$COMPRESS_DISTILL_LLM_CACHE``
overrides the location; ``cache_dir=`` overrides both.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from compress_distill.config import BackendConfig, backend_config
from compress_distill.llm.base import CachedBackend

CACHE_ENV = "COMPRESS_DISTILL_LLM_CACHE"
DEFAULT_CACHE_DIR = Path(".cache") / "llm"


def default_cache_dir() -> Path:
    """``$COMPRESS_DISTILL_LLM_CACHE`` or ``./.cache/llm`` (absolute, resolved at call time)."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser().resolve() if env else (Path.cwd() / DEFAULT_CACHE_DIR)


def make_backend(
    cfg: dict[str, Any] | BackendConfig, *, cache_dir: str | Path | None = None, use_cache: bool = True
) -> CachedBackend:
    """Build the backend named by ``cfg["backend"]`` (hf | vllm | openai).

    Nothing heavy happens here: the model loads (or servers start) on the first ``generate`` that has an
    uncached request, so a fully cached re-run never touches the engine.  ``use_cache=False`` turns the
    durable cache off (benchmarks, determinism tests).
    """
    config = backend_config(cfg)
    root = Path(cache_dir).expanduser().resolve() if cache_dir is not None else default_cache_dir()
    if config.backend == "hf":
        from compress_distill.llm.hf import HFBackend

        return HFBackend(config, cache_dir=root, use_cache=use_cache)
    if config.backend == "vllm":
        from compress_distill.llm.vllm_backend import VLLMBackend

        return VLLMBackend(config, cache_dir=root, use_cache=use_cache)
    if config.backend == "openai":
        from compress_distill.llm.openai_backend import OpenAIBackend

        return OpenAIBackend(config, cache_dir=root, use_cache=use_cache)
    raise ValueError(f"unknown backend {config.backend!r}")  # pragma: no cover - pydantic's Literal guards it
