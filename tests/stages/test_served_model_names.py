"""Served model names on the openai backend, and the tokenizer its token counts come from (issue 10, Also).

An OpenAI-compatible server names its model whatever it was told (``gpt-4o-mini``, a vLLM
``--served-model-name``): the openai backend sends that name as is.  Stages that count tokens (generate,
compress, truncate) need a tokenizer for it: the engine's ``tokenizer:`` key, else its ``model`` when that
is a packaged alias, Hub id or local directory.  A teacher or compressor with neither fails at params load,
and a tokenizer that does not load fails at stage start -- before a single request is paid for.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from compress_distill.config import BackendConfig, ConfigError, backend_config
from compress_distill.llm.tokens import count_tokens
from compress_distill.schema import TRACES, read_rows
from compress_distill.stages import compress
from tests.helpers.chat_server import ChatServer
from tests.helpers.chat_server import chat_server as serve
from tests.helpers.traces import SMOL, make_params, trace, write_traces

REPLY = "2 + 2 = 4. The answer is 4."


# --------------------------------------------------------------------------------------------- config
def openai(model: str, **extra: Any) -> dict[str, Any]:
    return {"backend": "openai", "model": model, "base_urls": ["http://127.0.0.1:9/v1"], **extra}


@pytest.mark.parametrize("name", ["gpt-4o-mini", "my-served-qwen", "llama3.1:8b", "Qwen/Qwen3-8B"])
def test_openai_backend_accepts_any_served_model_name(name: str) -> None:
    assert backend_config(openai(name)).model == name


@pytest.mark.parametrize("name", ["", "  ", " gpt-4o-mini"])
def test_openai_model_name_must_be_a_plain_non_empty_string(name: str) -> None:
    with pytest.raises(ConfigError, match=r"model: .*served model name"):
        backend_config(openai(name))


@pytest.mark.parametrize("backend", ["hf", "vllm"])
def test_local_backends_still_refuse_a_name_they_cannot_load(backend: str) -> None:
    with pytest.raises(ConfigError, match=r"unknown model 'gpt-4o-mini'.*backend 'openai'"):
        backend_config({"backend": backend, "model": "gpt-4o-mini"})


def test_tokenizer_key_is_validated_with_a_fix_it() -> None:
    assert backend_config(openai("gpt-4o-mini", tokenizer=SMOL)).tokenizer_id == SMOL
    assert backend_config(openai("gpt-4o-mini", tokenizer="Qwen/Qwen3-8B")).tokenizer_id == "Qwen/Qwen3-8B"
    assert backend_config(openai("Qwen/Qwen3-8B")).tokenizer_id == "Qwen/Qwen3-8B"  # the model itself
    with pytest.raises(ConfigError, match=r"tokenizer: unknown tokenizer 'smollm2-135m'.*Did you mean"):
        backend_config(openai("gpt-4o-mini", tokenizer="smollm2-135m"))


@pytest.mark.parametrize("section", ["teachers", "compressors"])
def test_a_counted_engine_without_a_tokenizer_fails_at_load(section: str) -> None:
    engine_id = "smol" if section == "teachers" else "concise"
    with pytest.raises(ConfigError) as err:
        make_params(**{f"{section}.{engine_id}": openai("gpt-4o-mini")})
    msg = str(err.value)
    assert f"{section}.{engine_id}" in msg
    assert f"set {section}.{engine_id}.tokenizer" in msg and "'gpt-4o-mini'" in msg
    ok = make_params(**{f"{section}.{engine_id}": openai("gpt-4o-mini", tokenizer=SMOL)})
    assert getattr(ok, section)[engine_id].tokenizer_id == SMOL


def test_a_judge_needs_no_tokenizer() -> None:
    """The judge's tokens are never counted by a stage (its usage is in the engine stats)."""
    params = make_params(**{"judge.engine": openai("gpt-4o-mini")})
    assert params.judge.engine.model == "gpt-4o-mini"


# --------------------------------------------------------------------------------------------- stage
@pytest.fixture
def chat_server() -> Iterator[ChatServer]:
    """A real OpenAI-compatible endpoint on loopback that records every request body it is sent."""
    with serve(REPLY) as server:
        yield server


def _compress(tmp_path: Path, server: ChatServer, **engine: Any) -> dict[str, Any]:
    params = make_params(
        **{"compressors.concise": {"backend": "openai", "base_urls": [server.url], **engine}}
    )
    rows = [trace(f"t/{i}", f"Row {i}: first I add 2 and 2. " * 8 + "So 4.") for i in range(3)]
    raw = write_traces(tmp_path / "raw.parquet", rows)
    out, metrics = tmp_path / "c.parquet", tmp_path / "m.json"
    return compress.run(params, "smol", "concise", raw, out, metrics, cache_dir=tmp_path / "cache")


@pytest.mark.parametrize("where", ["hub", "local"])
def test_a_tokenizer_that_does_not_load_fails_before_any_request(
    tmp_path: Path, chat_server: ChatServer, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """Used to crash in count_tokens after every compression had been paid for."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the id is not in the local cache: fail fast, no network
    if where == "hub":  # a hosted API's "org/model" name that is no Hub repo
        model = "no-such-org/served-compressor"
    else:  # a local directory that holds no tokenizer
        (tmp_path / "served").mkdir()
        model = str(tmp_path / "served")
    with pytest.raises(ConfigError, match=r"compressors\.concise\.tokenizer") as err:
        _compress(tmp_path, chat_server, model=model)
    assert repr(model) in str(err.value)
    assert chat_server.bodies == []
    assert not (tmp_path / "c.parquet").exists()


def test_served_name_with_a_configured_tokenizer_compresses_and_counts(
    tmp_path: Path, chat_server: ChatServer
) -> None:
    metrics = _compress(tmp_path, chat_server, model="gpt-4o-mini", tokenizer=SMOL)
    assert [b["model"] for b in chat_server.bodies] == ["gpt-4o-mini"] * 3  # the served name, sent as is
    rows = read_rows(tmp_path / "c.parquet", TRACES)
    assert [r["reasoning"] for r in rows] == [REPLY] * 3
    assert [r["reasoning_tokens"] for r in rows] == count_tokens(SMOL, [REPLY]) * 3  # SmolLM2's tokens
    assert [r["compressor_model"] for r in rows] == ["gpt-4o-mini"] * 3
    assert metrics["rows_out"] == 3


def test_tokenizer_id_is_the_model_when_unset() -> None:
    cfg = BackendConfig(backend="hf", model=SMOL)
    assert cfg.tokenizer is None and cfg.tokenizer_id == SMOL
