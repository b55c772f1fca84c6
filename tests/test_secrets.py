"""Secrets never appear in a message: one ``redact`` for every message, ``api_key_env`` refuses a key where its
variable name belongs (without repeating it), and the openai backend's errors stay clean when a real
loopback server echoes the credential back.  Fake credentials are assembled at run time (scanners)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from compress_distill.config import ConfigError, backend_config, parse_params
from compress_distill.errors import looks_like_credential, redact, redact_logs
from compress_distill.llm import ChatRequest, make_backend
from compress_distill.llm.base import BackendError
from tests.helpers.echo_server import echo_server, fake_token

REPO = Path(__file__).resolve().parents[1]
RANDOM_40 = "Zq7" + "Lp2Xv9Kd4Rt8Wm1Nb6Hc3Fy5Gj0Su" + "Ae7Bo2Ci"  # opaque, no known prefix


def demo_params() -> dict:  # type: ignore[type-arg]
    return yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))


# --------------------------------------------------------------------------------------------- redact
@pytest.mark.parametrize(
    "secret",
    [fake_token("hf_"), fake_token("sk-"), fake_token("gsk_"), fake_token("sk-proj-"), RANDOM_40],
)
def test_credential_shapes_are_redacted(secret: str) -> None:
    assert looks_like_credential(secret)
    for text in (f"key={secret}", f"'{secret}'", f"Authorization: Bearer {secret}", f"{secret}\n"):
        assert secret not in redact(text) and "***" in redact(text)


def test_bearer_and_known_values_are_redacted(monkeypatch: pytest.MonkeyPatch) -> None:
    assert redact("Authorization: Bearer short.tok") == "Authorization: Bearer ***"
    assert redact("the key plainsecret99 was refused", ["plainsecret99"]) == "the key *** was refused"
    monkeypatch.setenv("MY_SERVICE_TOKEN", "plainsecret42")  # a secret-named variable: its value is a secret
    assert redact("got plainsecret42") == "got ***"


@pytest.mark.parametrize(
    "text",
    [
        "Qwen/Qwen3-235B-A22B-Thinking-2507",
        "deepseek-ai/DeepSeek-R1-Distill-Qwen-32B-FP8-Instruct",
        "commit 0123456789abcdef0123456789abcdef01234567",
        "/work/src/compress_distill/stages/traces_common.py",
        "CompressDistillTracesVersion2Final2026",
        "OPENAI_API_KEY",
        "teachers.smol.model: Input should be 'cpu', 'cuda' or 'auto'",
        "https://errors.pydantic.dev/2.11/v/literal_error",
    ],
)
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert not looks_like_credential(text)
    assert redact(text) == text


def test_log_messages_are_redacted(caplog: pytest.LogCaptureFixture) -> None:
    """The CLI routes every log record through redact (a library logging a request header, say)."""
    redact_logs()
    redact_logs()  # idempotent
    token = fake_token("hf_")
    with caplog.at_level(logging.INFO):
        logging.getLogger("some.library").info("sending headers %s", {"authorization": f"Bearer {token}"})
    assert "sending headers" in caplog.text and token not in caplog.text and "FAKE" not in caplog.text


# --------------------------------------------------------------------------------------------- params
@pytest.mark.parametrize("prefix", ["sk-", "gsk_", "hf_", ""])
def test_a_key_in_api_key_env_is_refused_without_being_repeated(prefix: str) -> None:
    key = fake_token(prefix) if prefix else RANDOM_40
    data = demo_params()
    data["teachers"]["smol"].update(backend="openai", base_urls=["http://127.0.0.1:9/v1"], api_key_env=key)
    with pytest.raises(ConfigError) as info:
        parse_params(data, "params.yaml")
    message = str(info.value)
    assert "teachers.smol.api_key_env" in message and "NAME of an environment variable" in message
    assert key not in message and "FAKE" not in message and "Zq7" not in message
    with pytest.raises(ConfigError) as info:
        backend_config(
            {"backend": "openai", "model": "org/m", "base_urls": ["http://x/v1"], "api_key_env": key}
        )
    assert key not in str(info.value)


def test_a_variable_name_is_accepted() -> None:
    cfg = backend_config(
        {"backend": "openai", "model": "org/m", "base_urls": ["http://x/v1"], "api_key_env": "GROQ_API_KEY"}
    )
    assert cfg.api_key_env == "GROQ_API_KEY"


def test_cli_never_prints_a_key_given_as_api_key_env(tmp_path: Path) -> None:
    """Before: ``gsk_...`` passed validation and the run printed it twice (traceback and message)."""
    key = fake_token("gsk_")
    data = demo_params()
    data["teachers"]["smol"].update(backend="openai", base_urls=["http://127.0.0.1:9/v1"], api_key_env=key)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(data), encoding="utf-8")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "compress_distill.cli",
            "generate",
            "--params",
            str(params),
            "--teacher",
            "smol",
            "--out-dir",
            str(tmp_path / "o"),
            "--metrics",
            str(tmp_path / "m.json"),
        ],
        check=False,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO / "src"), "HF_HUB_OFFLINE": "1"},
    )
    assert proc.returncode == 2 and "teachers.smol.api_key_env" in proc.stderr
    assert "FAKE" not in proc.stdout + proc.stderr and "Traceback" not in proc.stderr


# --------------------------------------------------------------------------------------------- openai
@pytest.mark.parametrize(("status", "pad"), [(401, 0), (500, 0), (401, 240), (500, 250)])
def test_openai_backend_errors_never_carry_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, status: int, pad: int
) -> None:
    """A real server echoing the Authorization header (401: not retried; 500: retried until given up).  The
    padded cases put the key across the point where the message cuts the body (it used to be cut first and
    redacted second, so half a key survived)."""
    key = fake_token("sk-")
    monkeypatch.setenv("COMPRESS_DISTILL_TEST_LLM_KEY", key)
    caplog.set_level(logging.DEBUG)
    with echo_server(status, pad=pad) as url:
        backend = make_backend(
            {
                "backend": "openai",
                "model": "org/m",
                "base_urls": [f"{url}/v1"],
                "max_retries": 1,
                "api_key_env": "COMPRESS_DISTILL_TEST_LLM_KEY",
            },
            cache_dir=tmp_path,
            use_cache=False,
        )
        backend.backoff_base_s = 0.01  # type: ignore[attr-defined]
        with pytest.raises(BackendError) as info:
            backend.generate([ChatRequest([{"role": "user", "content": "hi"}], max_tokens=1)])
        backend.close()
    message = str(info.value)
    assert f"HTTP {status}" in message and "invalid credentials" in message
    for fragment in (key, "FAKE", "tokenThatMust"):  # not even the part before a cut
        assert fragment not in message and fragment not in caplog.text
