"""The ``openai`` backend against a real llama.cpp server on loopback, started through ``launch:``, with
faults injected by a loopback proxy: 429s, 5xx, slow answers, dropped connections, malformed bodies."""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from compress_distill.llm import ChatRequest, make_backend
from compress_distill.llm.base import BackendError
from compress_distill.llm.openai_backend import OpenAIBackend

pytestmark = [pytest.mark.slow, pytest.mark.server]  # real model / server: deselect with -m 'not slow'

MODEL = "smollm2-135m-instruct"


def _user(text: str, **kw: object) -> ChatRequest:
    return ChatRequest([{"role": "user", "content": text}], **kw)  # type: ignore[arg-type]


QUESTIONS = [f"What is {i} plus {i}?" for i in range(1, 7)]


@pytest.fixture(scope="module")
def server(
    llama_command: Callable[..., str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OpenAIBackend]:
    """One llama.cpp server for the module, launched (and finally stopped) by an openai backend."""
    cache = tmp_path_factory.mktemp("launch")
    backend = make_backend(
        {
            "backend": "openai",
            "model": MODEL,
            "launch": [llama_command(n_threads=1)],  # one thread: no spin-waiting on a busy box
            "launch_timeout_s": 120,
            "max_concurrency": 1,
        },
        cache_dir=cache,
        use_cache=False,
    )
    assert isinstance(backend, OpenAIBackend)
    backend.generate([_user("Hi", max_tokens=1)])  # starts the server
    pids = backend._servers.pids
    yield backend
    backend.close()
    for pid in pids:  # launched servers are gone once the backend is closed
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


@pytest.fixture(scope="module")
def reference(server: OpenAIBackend) -> list[str]:
    """Greedy answers straight from the server, no proxy: what every faulty run must reproduce."""
    return [c.text for c in server.generate([_user(q, max_tokens=8) for q in QUESTIONS])]


# The llama.cpp server answers one request at a time (~0.3 s for 8 tokens, a few s on a very busy box), so the
# client timeout must cover some queueing; the "slow" fault outlasts it.
TIMEOUT_S = 6.0


def _through(proxies: list[str], tmp: Path, **cfg: object) -> OpenAIBackend:
    backend = make_backend(
        {
            "backend": "openai",
            "model": MODEL,
            "base_urls": proxies,
            "max_retries": 3,
            "timeout_s": TIMEOUT_S,
            "max_concurrency": 1,
            **cfg,
        },
        cache_dir=tmp,
    )
    assert isinstance(backend, OpenAIBackend)
    backend.backoff_base_s = 0.02  # keep the test quick; the schedule itself is tested in the pure tests
    return backend


def test_launched_server_answers_with_usage_and_finish_reasons(
    server: OpenAIBackend, reference: list[str]
) -> None:
    out = server.generate([_user(QUESTIONS[0], max_tokens=8), _user("Count to fifty.", max_tokens=3)])
    assert out[0].text == reference[0] and out[0].prompt_tokens > 0 and 0 < out[0].completion_tokens <= 8
    assert out[1].finish_reason == "length" and out[1].completion_tokens == 3
    assert all(u.startswith("http://127.0.0.1:") for u in server.base_urls)


def test_faults_are_retried_and_the_batch_completes_without_duplicates(
    server: OpenAIBackend, reference: list[str], fault_proxy: Callable, tmp_path: Path
) -> None:
    script = {
        QUESTIONS[0]: ["429", "500"],
        QUESTIONS[1]: ["drop"],
        QUESTIONS[2]: ["malformed"],
        QUESTIONS[3]: ["slow"],
        QUESTIONS[4]: ["503", "drop_mid"],
        QUESTIONS[5]: [],
    }

    def plan(rid: str, attempt: int) -> str | None:
        faults = script[rid]
        return faults[attempt - 1] if attempt <= len(faults) else None

    attempts: Counter[str] = Counter()  # shared: a retry may go to the other endpoint
    forwarded: Counter[str] = Counter()
    proxies = [fault_proxy(server.base_urls[0], plan, attempts, forwarded) for _ in range(2)]
    for proxy in proxies:
        proxy.slow_s = TIMEOUT_S + 2
    with _through([p.base_url for p in proxies], tmp_path) as backend:
        out = backend.generate([_user(q, max_tokens=8) for q in QUESTIONS])
    assert [c.text for c in out] == reference
    assert len({c.request_hash for c in out}) == len(QUESTIONS)
    for q in QUESTIONS:
        assert attempts[q] == len(script[q]) + 1  # each fault cost exactly one retry
        assert forwarded[q] == 1  # the real server saw every request once: no duplicate completions
    assert backend.attempts == sum(attempts.values())
    assert all(p.seen for p in proxies)  # requests were spread over both endpoints


def test_attempts_are_bounded_and_finished_work_survives_a_failed_batch(
    server: OpenAIBackend, reference: list[str], fault_proxy: Callable, tmp_path: Path
) -> None:
    broken = {QUESTIONS[2]}
    proxy = fault_proxy(server.base_urls[0], lambda rid, attempt: "500" if rid in broken else None)
    requests = [_user(q, max_tokens=8) for q in QUESTIONS[:4]]
    with _through([proxy.base_url], tmp_path, max_retries=2) as backend, pytest.raises(BackendError) as err:
        backend.generate(requests)
    assert "1 of 4 request(s) failed" in str(err.value) and "gave up after 3 attempt(s)" in str(err.value)
    assert proxy.attempts[QUESTIONS[2]] == 3  # max_retries 2 -> at most 3 attempts
    broken.clear()  # the server recovers; the re-run sends only the request that failed
    with _through([proxy.base_url], tmp_path) as again:
        out = again.generate(requests)
        assert again.stats.cached == 3 and again.stats.generated == 1
    assert [c.text for c in out] == reference[:4]
    assert proxy.forwarded[QUESTIONS[2]] == 1 and all(proxy.forwarded[q] == 1 for q in QUESTIONS[:4])


def test_client_errors_are_not_retried(server: OpenAIBackend, fault_proxy: Callable, tmp_path: Path) -> None:
    proxy = fault_proxy(server.base_urls[0], lambda rid, attempt: "400")
    with _through([proxy.base_url], tmp_path) as backend, pytest.raises(BackendError, match="HTTP 400"):
        backend.generate([_user(QUESTIONS[0], max_tokens=4)])
    assert proxy.attempts[QUESTIONS[0]] == 1


def test_api_key_is_sent_but_never_leaks(
    server: OpenAIBackend,
    fault_proxy: Callable,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    secret = "sk-" + "test-7f3a9c2e51d84b06"  # assembled at run time: secret scanners
    monkeypatch.setenv("COMPRESS_DISTILL_TEST_KEY", secret)
    leaky = {QUESTIONS[1]}
    proxy = fault_proxy(server.base_urls[0], lambda rid, attempt: "echo_auth_500" if rid in leaky else None)
    backend = _through([proxy.base_url], tmp_path, max_retries=1, api_key_env="COMPRESS_DISTILL_TEST_KEY")
    with caplog.at_level(logging.DEBUG), backend, pytest.raises(BackendError) as err:
        backend.generate([_user(q, max_tokens=4) for q in QUESTIONS[:2]])
    assert proxy.auth and all(a == f"Bearer {secret}" for a in proxy.auth)  # the key is really used
    assert "bad auth" in str(err.value) and "***" in str(err.value)  # the echoed body is quoted, redacted
    assert secret not in str(err.value) and secret not in repr(err.value)
    assert secret not in caplog.text
    for file in tmp_path.rglob("*"):
        if file.is_file():
            assert secret.encode() not in file.read_bytes(), file
    monkeypatch.delenv("COMPRESS_DISTILL_TEST_KEY")
    with pytest.raises(BackendError, match="COMPRESS_DISTILL_TEST_KEY.*export"):
        _through([proxy.base_url], tmp_path, api_key_env="COMPRESS_DISTILL_TEST_KEY")


def test_json_schema_through_response_format(server: OpenAIBackend) -> None:
    schema = {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"]}
    [completion] = server.generate([_user("What is 2+2? Reply as JSON.", max_tokens=24, json_schema=schema)])
    assert completion.finish_reason == "stop"
    assert isinstance(json.loads(completion.text)["answer"], int)
