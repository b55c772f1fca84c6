"""Pure parts of the OpenAI-compatible backend: request bodies, response parsing, backoff, balancing."""

from __future__ import annotations

import pytest

from compress_distill.llm import ChatRequest
from compress_distill.llm.openai_backend import (
    MalformedResponse,
    _Balancer,
    _is_schema_dialect_error,
    backoff_s,
    chat_body,
    parse_chat_response,
)

SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}


def test_chat_body_standard_and_llama_cpp_schema_dialects() -> None:
    req = ChatRequest(
        [{"role": "user", "content": "q"}],
        temperature=0.3,
        top_p=0.9,
        max_tokens=64,
        seed=5,
        json_schema=SCHEMA,
    )
    body = chat_body("org/m", req)
    assert body["model"] == "org/m" and body["messages"] == req.messages and body["seed"] == 5
    assert (body["temperature"], body["top_p"], body["max_tokens"]) == (0.3, 0.9, 64)
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "response", "schema": SCHEMA, "strict": True},
    }
    assert chat_body("m", req, schema_style="json_object")["response_format"] == {
        "type": "json_object",
        "schema": SCHEMA,
    }
    plain = chat_body("m", ChatRequest([{"role": "user", "content": "q"}]), {"reasoning_effort": "high"})
    assert "seed" not in plain and "response_format" not in plain
    assert (
        plain["chat_template_kwargs"] == {"reasoning_effort": "high"} and plain["reasoning_effort"] == "high"
    )
    with pytest.raises(ValueError, match="schema_style"):
        chat_body("m", req, schema_style="xml")


def _answer(message: dict, finish: str | None = "stop", usage: dict | None = None) -> dict:
    return {
        "choices": [{"message": message, "finish_reason": finish}],
        "usage": usage if usage is not None else {"prompt_tokens": 7, "completion_tokens": 3},
    }


def test_parse_prefers_the_servers_reasoning_field() -> None:
    vllm = parse_chat_response(_answer({"content": "4", "reasoning_content": " add 2 and 2 "}))
    assert (vllm["text"], vllm["reasoning"], vllm["prompt_tokens"], vllm["completion_tokens"]) == (
        "4",
        "add 2 and 2",
        7,
        3,
    )
    newer = parse_chat_response(_answer({"content": "4", "reasoning": "add"}))
    assert newer["reasoning"] == "add"
    inline = parse_chat_response(_answer({"content": "<think>add</think> 4"}))
    assert (inline["reasoning"], inline["text"]) == ("add", "4")
    cut = parse_chat_response(_answer({"content": "<think>adding forever"}, finish="length"))
    assert (cut["text"], cut["finish_reason"]) == ("", "length")
    bare = parse_chat_response(_answer({"content": None}, finish=None, usage={}))
    assert (bare["text"], bare["finish_reason"], bare["prompt_tokens"]) == ("", "stop", 0)


@pytest.mark.parametrize(
    "data", [{}, {"choices": []}, {"choices": [{}]}, {"choices": [{"message": {"content": 3}}]}, [], "html"]
)
def test_parse_rejects_what_is_not_a_chat_completion(data: object) -> None:
    with pytest.raises(MalformedResponse):
        parse_chat_response(data)


def test_backoff_is_jittered_exponential_capped_and_honours_retry_after() -> None:
    for attempt in range(8):
        delays = [backoff_s(attempt, base=0.5, cap=30.0) for _ in range(200)]
        assert all(0.0 <= d <= min(30.0, 0.5 * 2**attempt) for d in delays)
        assert len(set(delays)) > 100  # jitter: retries of many clients do not synchronise
    assert backoff_s(0, base=0.5, cap=30.0, retry_after=5.0) >= 5.0
    assert backoff_s(0, base=0.5, cap=30.0, retry_after=3600.0) == 30.0


def test_balancer_spreads_and_never_exceeds_the_per_endpoint_cap() -> None:
    urls = ["a", "b", "c"]
    balancer = _Balancer(urls)
    held = [balancer.acquire() for _ in range(3 * 4)]  # 3 endpoints x max_concurrency 4 workers
    assert {u: held.count(u) for u in urls} == {"a": 4, "b": 4, "c": 4}
    balancer.release("b")
    assert balancer.acquire() == "b"  # the only endpoint with room
    balancer.release("a")
    balancer.release("c")
    assert balancer.acquire(avoid="a") == "c"  # a retry moves away from the endpoint that just failed
    assert _Balancer(["only"]).acquire(avoid="only") == "only"


def test_balancer_routes_around_an_endpoint_that_refused_a_connection() -> None:
    balancer = _Balancer(["a", "b"], down_s=60.0)
    balancer.down("a")  # a pre-empted replica: nobody listens there any more
    assert [balancer.acquire() for _ in range(4)] == ["b"] * 4  # though "a" has nothing in flight
    balancer.down("b")
    assert balancer.acquire() in ("a", "b")  # all down: try them anyway rather than fail the request
    quick = _Balancer(["a", "b"], down_s=0.0)
    quick.down("a")
    assert {quick.acquire() for _ in range(2)} == {"a", "b"}  # back in the rotation once down_s passed


def test_schema_dialect_detection_is_narrow() -> None:
    llama_cpp = (
        "1 validation error: {'loc': ('body', 'response_format', 'type'), 'msg': \"Input should be "
        "'text' or 'json_object'\", 'input': 'json_schema'}"
    )
    assert _is_schema_dialect_error(500, llama_cpp)
    assert not _is_schema_dialect_error(500, "CUDA out of memory")
    assert not _is_schema_dialect_error(400, "invalid json_schema: unsupported keyword")
    assert not _is_schema_dialect_error(429, llama_cpp)
