"""What every backend shares: cache look-up, de-duplication, ordering, progress and accounting.

An engine subclass implements three things:

- ``engine_id()``  a JSON-able dict of everything besides the request that changes the output (backend,
  weights fingerprint, dtype, chat-template kwargs ...); it namespaces the cache, together with the
  fingerprint of the code that shapes completions (``code_modules``: the subclass's module and
  ``OUTPUT_MODULES``), so editing that code's behaviour -- not its comments -- regenerates;
- ``_load()``      load the model / start servers (called once, lazily: a fully cached re-run loads nothing);
- ``_run(requests, emit)``  generate every request and call ``emit(i, completion)`` once per index as soon
  as that completion is final, so the base writes it to the durable cache straight away.

Request keys: ``ChatRequest.key(engine_key)``.  Identical deterministic requests (greedy, or sampled with a
seed) in one call are generated once and shared.  Sampled requests without a seed are independent draws:
the n-th identical copy gets its own key (``key#n``), so each copy is generated, and a resumed run gets
back the very draws it made before the kill.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

from compress_distill.config import BackendConfig
from compress_distill.errors import UserError
from compress_distill.llm.accounting import BackendStats
from compress_distill.llm.cache import RequestCache, code_fingerprint
from compress_distill.llm.types import ChatRequest, Completion
from compress_distill.progress import Progress

log = logging.getLogger(__name__)

Emit = Callable[[int, Completion], None]

# Modules besides a backend's own whose code shapes the completions it returns: the reasoning/final split.
OUTPUT_MODULES: tuple[str, ...] = ("compress_distill.reasoning",)


class BackendError(UserError, RuntimeError):
    """The engine could not complete a batch (the completions it did finish are cached)."""


def deal(n: int, replicas: int) -> list[list[int]]:
    """Indices ``0 .. n-1`` (requests or batches) dealt round-robin over data-parallel replicas: each gets a
    similar mix of long and short work when the items are sorted by length."""
    return [list(range(r, n, replicas)) for r in range(replicas)]


def check_parallel_fit(cfg: BackendConfig, visible: int) -> str | None:
    """Whether the engine's replicas (``tensor_parallel_size`` x ``data_parallel_size`` GPUs) fit the ``visible``
    CUDA devices of this process: a ``BackendError`` when they do not, a warning line when some would stay
    idle (the engine should use every GPU its job is given), else None."""
    need = cfg.parallel_gpus
    sizes = f"tensor_parallel_size {cfg.tensor_parallel_size} x data_parallel_size {cfg.data_parallel_size}"
    if need > visible:
        raise BackendError(
            f"{cfg.backend}: {sizes} needs {need} GPUs but this process sees {visible}; give the job {need} GPUs "
            "(the engine's gpus; CUDA_VISIBLE_DEVICES) or lower the sizes in the engine's params"
        )
    if need < visible:
        return (
            f"{sizes} uses {need} of the {visible} GPUs this process sees; raise data_parallel_size to use them "
            "all, or give the job fewer (the engine's gpus; CUDA_VISIBLE_DEVICES)"
        )
    return None


class CachedBackend:
    """Base of the ``hf``, ``vllm`` and ``openai`` backends (see the module docstring)."""

    name = "base"

    def __init__(self, cfg: BackendConfig, *, cache_dir: Path | None, use_cache: bool = True) -> None:
        self.cfg = cfg
        self.model = cfg.model
        self.stats = BackendStats(gpus=cfg.held_gpus)
        self._cache_root = cache_dir
        self._use_cache = use_cache
        self._cache: RequestCache | None = None
        self._engine_key: str | None = None
        self._code_id: str | None = None
        self._loaded = False
        self._closed = False

    # ------------------------------------------------------------------------------------ subclass API
    def engine_id(self) -> dict[str, Any]:
        raise NotImplementedError

    def _load(self) -> None:
        raise NotImplementedError

    def _run(self, requests: list[ChatRequest], emit: Emit) -> None:
        raise NotImplementedError

    def _unload(self) -> None:
        """Release the model / stop servers; called once by ``close``."""

    def code_modules(self) -> tuple[str, ...]:
        """Modules whose code shapes this engine's completions (part of its cache identity)."""
        return (type(self).__module__, *OUTPUT_MODULES)

    # ------------------------------------------------------------------------------------ public API
    @property
    def code_id(self) -> str:
        """Fingerprint of ``code_modules`` (see ``llm.cache.code_fingerprint``)."""
        if self._code_id is None:
            self._code_id = code_fingerprint(self.code_modules())
        return self._code_id

    @property
    def engine_key(self) -> str:
        if self._engine_key is None:
            identity = {**self.engine_id(), "code": self.code_id}
            self._engine_key = json.dumps(identity, sort_keys=True, separators=(",", ":"))
        return self._engine_key

    @property
    def cache(self) -> RequestCache | None:
        """The durable request cache of this engine (None when caching is off)."""
        if self._use_cache and self._cache is None and self._cache_root is not None:
            info = {
                "backend": self.name,
                "model": self.model,
                "engine_key_sha256": hashlib.sha256(self.engine_key.encode()).hexdigest(),
                "code": self.code_id,
            }
            self._cache = RequestCache(self._cache_root, self.engine_key, info)
        return self._cache

    def request_keys(self, requests: list[ChatRequest]) -> list[str]:
        """Content addresses of ``requests`` under this engine (see the module docstring)."""
        engine = self.engine_key
        keys: list[str] = []
        copies: Counter[str] = Counter()
        for req in requests:
            key = req.key(engine)
            if req.temperature > 0 and req.seed is None:
                n = copies[key]
                copies[key] += 1
                key = hashlib.sha256(f"{key}#{n}".encode()).hexdigest()
            keys.append(key)
        return keys

    def generate(self, requests: list[ChatRequest]) -> list[Completion]:
        """Completions for ``requests``, in the same order; cached ones are not regenerated."""
        if self._closed:
            raise BackendError(f"the {self.name} backend for {self.model!r} is closed; make a new one")
        start = time.perf_counter()
        requests = list(requests)
        for req in requests:
            if not isinstance(req, ChatRequest):
                raise TypeError(f"generate() takes ChatRequest objects, got {type(req).__name__}")
        keys = self.request_keys(requests)
        cache = self.cache
        if cache is not None:
            cache.refresh()  # pick up what other processes finished since we opened the cache
        results: list[Completion | None] = [None] * len(requests)
        pending: dict[str, list[int]] = {}
        for i, key in enumerate(keys):
            if key in pending:
                pending[key].append(i)
                continue
            hit = cache.get(key) if cache is not None else None
            if hit is not None:
                results[i] = hit
                self.stats.cached += 1
            else:
                pending[key] = [i]
        if pending:
            self._ensure_loaded()
            todo = list(pending)
            done = [False] * len(todo)
            with Progress(len(todo), f"{self.name}:{Path(self.model).name}") as bar:

                def emit(j: int, completion: Completion) -> None:
                    if done[j]:
                        raise BackendError(
                            f"engine returned request {j} twice (a bug in the {self.name} backend)"
                        )
                    done[j] = True
                    key = todo[j]
                    completion.model = self.model
                    completion.request_hash = key
                    completion.cached = False
                    if cache is not None:
                        cache.put(key, completion)
                    slots = pending[key]
                    results[slots[0]] = completion
                    for i in slots[1:]:
                        results[i] = dataclasses.replace(completion, extra=dict(completion.extra))
                    self.stats.generated += 1
                    self.stats.deduplicated += len(slots) - 1
                    self.stats.prompt_tokens += completion.prompt_tokens
                    self.stats.completion_tokens += completion.completion_tokens
                    bar.update(len(slots), completion.completion_tokens)

                try:
                    self._run([requests[pending[k][0]] for k in todo], emit)
                finally:
                    self.stats.wall_clock_s += time.perf_counter() - start
            missing = done.count(False)
            if missing:
                raise BackendError(f"the {self.name} engine returned no completion for {missing} request(s)")
        else:
            self.stats.wall_clock_s += time.perf_counter() - start
        self.stats.requests += len(requests)
        log.info(
            "%s %s: %d requests, %d cached, %d generated in %.1f s",
            self.name,
            self.model,
            len(requests),
            len(requests) - sum(len(v) for v in pending.values()),
            len(pending),
            time.perf_counter() - start,
        )
        return results  # type: ignore[return-value]  # every slot was filled above

    def _ensure_loaded(self) -> None:
        if not self._loaded:
            start = time.perf_counter()
            self._load()
            self._loaded = True
            self.stats.load_s += time.perf_counter() - start

    def close(self) -> None:
        """Release the model, stop launched servers, flush the cache.  Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._loaded:
                self._unload()
        finally:
            if self._cache is not None:
                self._cache.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} model={self.model!r}>"
