"""``openai`` backend: any OpenAI-compatible chat endpoint -- many ``vllm serve`` replicas, a hosted API, or
servers started from ``launch:``, as local processes or (``launch_slurm``) SLURM jobs (see ``llm.launch``).

- async (httpx), at most ``max_concurrency`` requests in flight per endpoint; every attempt goes to the
  least-busy endpoint, so requests spread over all ``base_urls`` and a dead replica gets routed around: an
  endpoint that refuses connections (a pre-empted replica) is skipped for ``DOWN_S``, and a request that was
  in flight on it is retried on another endpoint;
- retries with exponential backoff and full jitter (``Retry-After`` honoured) on 408/409/425/429/5xx,
  timeouts, dropped connections and malformed bodies, at most ``max_retries`` retries per request; other
  4xx answers are the caller's mistake and fail at once;
- JSON schemas go out as OpenAI ``response_format: {"type": "json_schema", ...}`` (vLLM, llama.cpp's
  ``llama-server``, hosted APIs).  llama-cpp-python's server only knows ``{"type": "json_object", "schema":
  ...}``: when an endpoint rejects the first form with a validation error naming both, that endpoint is
  switched to the second form for the rest of the run;
- the reasoning comes from the message's ``reasoning_content`` / ``reasoning`` field when the server
  splits it (vLLM with ``--reasoning-parser``), else from the content; both shapes go through
  ``reasoning.split_completion`` with the model's ``tokens.ChatFormat``, like every backend's output, so a
  completion cut inside a pre-filled think block (Qwen3.5) has no final response;
- stops: a model that resolves to local files (a packaged alias or a directory such as a trained student,
  LoRA adapters included) gets its ChatFormat's end-of-turn tokens in every request, as ``stop`` strings
  and as vLLM's ``stop_token_ids`` (vLLM matches stop strings only in the detokenised text, where special
  tokens are skipped); a Hub id or a served name (``gpt-4o-mini``) is left to the server's own template,
  stops and reasoning split, since its tokenizer cannot be read without a download; a harmony (gpt-oss)
  model also gets ``skip_special_tokens: false`` (vLLM), so its channel markers reach the split;
- the API key is read from the environment variable named by ``api_key_env``; it is sent only in the
  Authorization header and scrubbed from every error message this module raises or logs.

A request that exhausts its retries fails the batch only after every other request has finished (and been
cached), so a re-run sends just the failures.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from compress_distill.config import MODEL_ALIASES, BackendConfig
from compress_distill.errors import redact
from compress_distill.llm.base import BackendError, CachedBackend, Emit
from compress_distill.llm.resolve import resolve_local_model, resolved_fingerprint
from compress_distill.llm.tokens import SERVER_DEFINED, ChatFormat, load_chat_format
from compress_distill.llm.types import ChatRequest, Completion
from compress_distill.reasoning import split_completion

log = logging.getLogger(__name__)

RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
BACKOFF_BASE_S = 0.5  # first retry waits up to 0.5 s, then 1, 2, 4 ... (full jitter)
BACKOFF_MAX_S = 30.0
_BODY_SNIPPET = 300  # characters of an error body quoted in messages
DOWN_S = 30.0  # an endpoint that refused a connection gets no request for this long (unless all are down)


# --------------------------------------------------------------------------------------------- pure parts
def chat_body(
    model: str,
    req: ChatRequest,
    chat_template_kwargs: dict[str, Any] | None = None,
    schema_style: str = "json_schema",
    fmt: ChatFormat = SERVER_DEFINED,
) -> dict[str, Any]:
    """The JSON body of ``POST /chat/completions`` for one request (``fmt`` supplies the stops)."""
    body: dict[str, Any] = {
        "model": model,
        "messages": req.messages,
        "temperature": req.temperature,
        "top_p": req.top_p,
        "max_tokens": req.max_tokens,
    }
    if req.seed is not None:
        body["seed"] = req.seed
    if fmt.stop_tokens:
        body["stop"] = list(fmt.stop_tokens)
        body["stop_token_ids"] = list(fmt.stop_token_ids)  # vLLM extension (module docstring)
    if fmt.harmony:
        # vLLM extension: without a reasoning parser, harmony's channel markers must survive detokenisation
        # for split_completion to tell the analysis channel from the final one (as in the vllm backend)
        body["skip_special_tokens"] = False
    if req.json_schema is not None:
        if schema_style == "json_schema":
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "response", "schema": req.json_schema, "strict": True},
            }
        elif schema_style == "json_object":
            body["response_format"] = {"type": "json_object", "schema": req.json_schema}
        else:
            raise ValueError(f"unknown schema_style {schema_style!r}")
    if chat_template_kwargs:
        body["chat_template_kwargs"] = dict(chat_template_kwargs)  # vLLM extension
        if "reasoning_effort" in chat_template_kwargs:  # the OpenAI name of the same knob (gpt-oss)
            body["reasoning_effort"] = chat_template_kwargs["reasoning_effort"]
    return body


class MalformedResponse(ValueError):
    """A 200 answer that is not a chat completion (truncated body, HTML from a proxy ...): retried."""


def parse_chat_response(data: Any, think_prefilled: bool = False) -> dict[str, Any]:
    """Completion fields from a chat-completions JSON answer (pure, tested)."""
    try:
        choice = data["choices"][0]
        message = choice["message"]
        content = message.get("content") or ""
        if not isinstance(content, str):
            raise TypeError("content is not a string")
    except (KeyError, IndexError, TypeError, AttributeError) as err:
        raise MalformedResponse(f"not a chat completion ({type(err).__name__}: {err})") from None
    server_reasoning = message.get("reasoning_content") or message.get("reasoning")
    finish = choice.get("finish_reason") or "stop"
    reasoning, text = split_completion(
        content,
        finish,
        think_prefilled,
        server_reasoning=server_reasoning if isinstance(server_reasoning, str) else None,
    )
    usage = data.get("usage") or {}
    return {
        "text": text,
        "reasoning": reasoning,
        "finish_reason": finish,
        "prompt_tokens": int(usage.get("prompt_tokens") or 0),
        "completion_tokens": int(usage.get("completion_tokens") or 0),
    }


def is_local_model(model: str) -> bool:
    """A packaged alias or a model directory: its tokenizer, template and stops can be read here."""
    return model in MODEL_ALIASES or Path(model).is_dir()


def served_chat_format(model: str, template_kwargs: dict[str, Any] | None = None) -> ChatFormat:
    """The ChatFormat of a served model: read from its local files, else the server's (module docstring)."""
    if not is_local_model(model):
        log.info("openai: %s is not a local model; the server's template, stops and split apply", model)
        return SERVER_DEFINED
    return load_chat_format(resolve_local_model(model), template_kwargs)


def backoff_s(
    attempt: int, base: float = BACKOFF_BASE_S, cap: float = BACKOFF_MAX_S, retry_after: float | None = None
) -> float:
    """Full-jitter exponential backoff before retry number ``attempt`` (0-based); Retry-After is a floor."""
    delay = random.uniform(0.0, min(cap, base * (2**attempt)))
    if retry_after is not None:
        delay = max(delay, min(retry_after, cap))
    return delay


def _is_schema_dialect_error(status: int, text: str) -> bool:
    """llama-cpp-python's answer to ``response_format.type == "json_schema"`` (a 500 wrapping a 422)."""
    return (
        status in (400, 422, 500)
        and "response_format" in text
        and "json_object" in text
        and ("json_schema" in text)
    )


class _Balancer:
    """Least-busy endpoint choice among those not marked down; with (endpoints x max_concurrency) workers no
    endpoint exceeds its cap while all are up."""

    def __init__(self, urls: list[str], down_s: float = DOWN_S) -> None:
        self.urls = urls
        self.in_flight = dict.fromkeys(urls, 0)
        self.down_s = down_s
        self.down_until = dict.fromkeys(urls, 0.0)  # time.monotonic() before which the endpoint is skipped
        self._turn = 0

    def down(self, url: str) -> None:
        """``url`` refused a connection: route around it for ``down_s``."""
        self.down_until[url] = time.monotonic() + self.down_s

    def acquire(self, avoid: str | None = None) -> str:
        now = time.monotonic()
        up = [u for u in self.urls if self.down_until[u] <= now] or self.urls
        candidates = [u for u in up if u != avoid] or up
        self._turn += 1
        order = candidates[self._turn % len(candidates) :] + candidates[: self._turn % len(candidates)]
        url = min(order, key=lambda u: self.in_flight[u])
        self.in_flight[url] += 1
        return url

    def release(self, url: str) -> None:
        self.in_flight[url] -= 1


# --------------------------------------------------------------------------------------------- backend
class OpenAIBackend(CachedBackend):
    """OpenAI-compatible HTTP endpoints; see the module docstring."""

    name = "openai"

    def __init__(self, cfg: BackendConfig, *, cache_dir: Path | None, use_cache: bool = True) -> None:
        super().__init__(cfg, cache_dir=cache_dir, use_cache=use_cache)
        self.backoff_base_s = BACKOFF_BASE_S
        self.backoff_max_s = BACKOFF_MAX_S
        self._servers: Any = None
        self._urls: list[str] = [u.rstrip("/") for u in cfg.base_urls]
        self._schema_style: dict[str, str] = {}
        self.format = SERVER_DEFINED  # the model's ChatFormat when it resolves to local files (_load)
        self.attempts = 0  # HTTP attempts made (retries included), for tests and benchmarks
        self.answered: Counter[str] = Counter()  # completions per endpoint URL, for tests and benchmarks
        self._log_dir = (cache_dir or Path(".cache/llm")) / "servers"
        self._api_key = self._read_key()

    def _read_key(self) -> str | None:
        if not self.cfg.api_key_env:
            return None
        key = os.environ.get(self.cfg.api_key_env)
        if not key:
            raise BackendError(
                f"api_key_env names {self.cfg.api_key_env!r} but that environment variable is empty or unset; "
                f"export {self.cfg.api_key_env}=... before running the stage"
            )
        return key

    def _redact(self, text: str) -> str:
        return redact(text, [self._api_key])

    def engine_id(self) -> dict[str, Any]:
        # base_urls are left out on purpose: adding replicas must not invalidate finished work.  The launch
        # commands are in: they decide which weights and flags serve the model.  A local model's files are in
        # too: its template and trained end-of-turn token decide the stops and the split (a retrained student).
        local = resolved_fingerprint(resolve_local_model(self.model)) if is_local_model(self.model) else {}
        return {
            "backend": "openai",
            "model": self.model,
            **local,
            "launch": list(self.cfg.launch),
            "chat_template_kwargs": self.cfg.chat_template_kwargs,
        }

    @property
    def base_urls(self) -> list[str]:
        return list(self._urls)

    def _load(self) -> None:
        self.format = served_chat_format(self.model, self.cfg.chat_template_kwargs)
        if self.cfg.launch:
            from compress_distill.llm.launch import ServerPool, SlurmServerPool

            name = Path(self.model).name or "server"
            if self.cfg.launch_slurm is not None:
                self._servers = SlurmServerPool(
                    self.cfg.launch[0],
                    self.cfg.launch_slurm,
                    gpus=self.cfg.gpus,
                    timeout_s=self.cfg.launch_timeout_s,
                    log_dir=self._log_dir,
                    name=name,
                )
            else:
                self._servers = ServerPool(
                    self.cfg.launch, timeout_s=self.cfg.launch_timeout_s, log_dir=self._log_dir, name=name
                )
            self._urls = [u.rstrip("/") for u in self.cfg.base_urls] + self._servers.start()

    def _unload(self) -> None:
        if self._servers is not None:
            self._servers.stop()
            self._servers = None

    # ---------------------------------------------------------------------------------------- running
    def _run(self, requests: list[ChatRequest], emit: Emit) -> None:
        try:
            asyncio.get_running_loop()
            inside_loop = True
        except RuntimeError:
            inside_loop = False
        if not inside_loop:
            asyncio.run(self._run_async(requests, emit))
            return
        # Called from inside an event loop (a notebook): run ours on a private thread.
        error: list[BaseException] = []

        def target() -> None:
            try:
                asyncio.run(self._run_async(requests, emit))
            except BaseException as err:  # noqa: BLE001 - re-raised in the caller's thread below
                error.append(err)

        thread = threading.Thread(target=target, name="openai-backend")
        thread.start()
        thread.join()
        if error:
            raise error[0]

    async def _run_async(self, requests: list[ChatRequest], emit: Emit) -> None:
        import httpx

        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        timeout = httpx.Timeout(self.cfg.timeout_s, connect=min(30.0, self.cfg.timeout_s))
        workers = len(self._urls) * self.cfg.max_concurrency
        limits = httpx.Limits(max_connections=workers, max_keepalive_connections=workers)
        balancer = _Balancer(self._urls)
        queue = iter(range(len(requests)))
        failures: list[tuple[int, str]] = []

        async with httpx.AsyncClient(timeout=timeout, limits=limits, headers=headers) as client:

            async def worker() -> None:
                for i in queue:  # a shared iterator: each index is taken by exactly one worker
                    try:
                        fields = await self._one(client, balancer, requests[i])
                    except BackendError as err:
                        failures.append((i, str(err)))
                        continue
                    emit(i, Completion(model=self.model, **fields))

            await asyncio.gather(*(worker() for _ in range(min(workers, len(requests)))))
        if failures:
            first_i, first = failures[0]
            raise BackendError(
                f"{len(failures)} of {len(requests)} request(s) failed after up to {self.cfg.max_retries} "
                f"retries (the others are cached; re-run to retry only the failures). First, request "
                f"{first_i}: {first}{self._dead_servers()}"
            )

    def _dead_servers(self) -> str:
        """Why launched servers stopped answering, if they did (their log tails)."""
        if self._servers is None:
            return ""
        return "".join(f"\n{self._redact(note)}" for note in self._servers.dead())

    async def _one(self, client: Any, balancer: _Balancer, req: ChatRequest) -> dict[str, Any]:
        import httpx

        last_error = "no attempt made"
        url: str | None = None
        retries = 0
        while True:
            url = balancer.acquire(avoid=url)
            retry_after: float | None = None
            try:
                self.attempts += 1
                style = self._schema_style.get(url, "json_schema")
                body = chat_body(self.model, req, self.cfg.chat_template_kwargs, style, self.format)
                try:
                    resp = await client.post(f"{url}/chat/completions", json=body)
                finally:
                    balancer.release(url)
                if resp.status_code == 200:
                    try:
                        fields = parse_chat_response(resp.json(), self.format.think_prefilled)
                    except (json.JSONDecodeError, UnicodeDecodeError) as err:
                        raise MalformedResponse(f"invalid JSON ({err})") from None
                    self.answered[url] += 1
                    return fields
                text = resp.text[:4000]
                if (
                    req.json_schema is not None
                    and style == "json_schema"
                    and _is_schema_dialect_error(resp.status_code, text)
                ):
                    # Not a fault: at most once per endpoint, so it does not use up a retry.
                    log.info("%s rejects response_format json_schema; using json_object+schema there", url)
                    self._schema_style[url] = "json_object"
                    continue
                snippet = self._redact(text)[:_BODY_SNIPPET]  # redacted first: a cut may split a key
                if resp.status_code not in RETRY_STATUS:
                    raise BackendError(f"{url} answered HTTP {resp.status_code} (not retryable): {snippet}")
                last_error = f"HTTP {resp.status_code}: {snippet}"
                header = resp.headers.get("retry-after")
                if header is not None:
                    try:
                        retry_after = float(header)
                    except ValueError:
                        retry_after = None  # an HTTP date: fall back to our own backoff
            except MalformedResponse as err:
                last_error = f"malformed response from {url}: {self._redact(str(err))}"
            except httpx.TimeoutException as err:
                if isinstance(err, httpx.ConnectTimeout):  # an unreachable node (pre-empted, down)
                    balancer.down(url)
                last_error = f"timeout after {self.cfg.timeout_s:g} s talking to {url} ({type(err).__name__})"
            except httpx.TransportError as err:  # refused, reset, dropped mid-body, protocol errors
                if isinstance(err, httpx.ConnectError):  # nobody listens there (any more)
                    balancer.down(url)
                last_error = f"connection problem with {url}: {type(err).__name__}: {self._redact(str(err))}"
            if retries >= self.cfg.max_retries:
                raise BackendError(f"gave up after {retries + 1} attempt(s): {last_error}")
            delay = backoff_s(retries, self.backoff_base_s, self.backoff_max_s, retry_after)
            retries += 1
            log.debug("retry %d/%d in %.2f s after %s", retries, self.cfg.max_retries, delay, last_error)
            await asyncio.sleep(delay)

    def __del__(self) -> None:  # a forgotten close() must not leave launched servers running
        servers = getattr(self, "_servers", None)
        if servers is not None:
            servers.stop()
