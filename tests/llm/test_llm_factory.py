"""make_backend: validation, cache location, lifecycle, accounting; tokenizer helpers; model resolution."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from compress_distill.config import ConfigError
from compress_distill.llm import ChatRequest, make_backend
from compress_distill.llm.accounting import BackendStats
from compress_distill.llm.base import BackendError
from compress_distill.llm.factory import CACHE_ENV
from compress_distill.llm.resolve import fingerprint, resolve_local_model
from compress_distill.llm.tokens import (
    chat_prompt_ids,
    count_tokens,
    fast_tokenizer,
    load_tokenizer,
    stop_token_ids,
)


def test_bad_configs_fail_with_the_key_named() -> None:
    with pytest.raises(ConfigError, match="batch_size"):
        make_backend({"backend": "hf", "model": "smollm2-135m-instruct", "batch_size": 0})
    with pytest.raises(ConfigError, match="base_urls"):
        make_backend({"backend": "openai", "model": "org/m"})
    with pytest.raises(ConfigError, match="never the key itself"):
        make_backend(
            {"backend": "openai", "model": "org/m", "base_urls": ["http://x/v1"], "api_key_env": "sk-abc123"}
        )
    with pytest.raises(ConfigError, match="unknown key"):
        make_backend({"backend": "hf", "model": "smollm2-135m-instruct", "batchsize": 4})


def test_cache_location_default_env_and_argument(
    smol_dir: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(CACHE_ENV, raising=False)
    cfg = {"backend": "hf", "model": smol_dir}
    backend = make_backend(cfg)
    assert backend.cache is not None and backend.cache.root == tmp_path / ".cache" / "llm"
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "elsewhere"))
    assert make_backend(cfg).cache.root == tmp_path / "elsewhere"  # type: ignore[union-attr]
    assert make_backend(cfg, cache_dir=tmp_path / "arg").cache.root == tmp_path / "arg"  # type: ignore[union-attr]
    assert make_backend(cfg, use_cache=False).cache is None


def test_closed_backends_refuse_work(smol_dir: str, tmp_path: Path) -> None:
    with make_backend({"backend": "hf", "model": smol_dir}, cache_dir=tmp_path) as backend:
        assert backend.generate([]) == []
    with pytest.raises(BackendError, match="closed"):
        backend.generate([ChatRequest([{"role": "user", "content": "hi"}])])
    backend.close()  # twice is fine
    with pytest.raises(TypeError, match="ChatRequest"):
        make_backend({"backend": "hf", "model": smol_dir}, cache_dir=tmp_path).generate(["hi"])  # type: ignore[list-item]


def test_engine_identity_separates_dtypes_and_template_kwargs(smol_dir: str, tmp_path: Path) -> None:
    def key(**cfg: object) -> str:
        backend = make_backend(
            {"backend": "hf", "model": smol_dir, "device": "cpu", **cfg}, cache_dir=tmp_path
        )
        return backend.request_keys([ChatRequest([{"role": "user", "content": "q"}])])[0]

    assert key() == key(batch_size=3)  # batching does not change what a request means
    assert len({key(), key(dtype="bfloat16"), key(chat_template_kwargs={"enable_thinking": False})}) == 3


def test_stats_metrics_and_gpu_hours() -> None:
    stats = BackendStats(
        requests=10, cached=4, generated=6, completion_tokens=600, wall_clock_s=1800.0, load_s=1800.0, gpus=8
    )
    assert stats.gpu_hours == 8.0
    metrics = stats.as_metrics()
    assert metrics["llm_gpu_hours"] == 8.0 and metrics["llm_cached"] == 4
    assert metrics["llm_completion_tokens_per_s"] == pytest.approx(600 / 1800, abs=0.01)
    assert all(isinstance(v, int | float) for v in metrics.values())  # flat numbers for DVC


def test_tokenizer_helpers(smol_dir: str) -> None:
    tok = load_tokenizer("smollm2-135m-instruct")
    ids = chat_prompt_ids(tok, [{"role": "user", "content": "hi"}])
    assert ids.count(tok.convert_tokens_to_ids("<|im_start|>")) == 3  # system, user, generation prompt
    assert tok.decode(ids).endswith("<|im_start|>assistant\n")
    assert tok.convert_tokens_to_ids("<|im_end|>") in stop_token_ids(tok)
    text = "The quick brown fox jumps over the lazy dog. " * 3
    n = count_tokens("smollm2-135m-instruct", [text, ""])
    # the stages' counts (the cached Rust tokenizer) are the transformers tokenizer's, without special tokens
    assert n[1] == 0 and n[0] == len(tok(text, add_special_tokens=False)["input_ids"]) > 20
    assert fast_tokenizer("smollm2-135m-instruct") is fast_tokenizer("smollm2-135m-instruct")


def test_adapter_directories_resolve_their_base(smol_dir: str, tmp_path: Path) -> None:
    adapter = tmp_path / "run"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(
        json.dumps({"base_model_name_or_path": "org/unused", "r": 8})
    )
    (adapter / "training_config.json").write_text(json.dumps({"base_model": "smollm2-135m-instruct"}))
    resolved = resolve_local_model(str(adapter))
    assert (
        resolved.weights == smol_dir and resolved.adapter == str(adapter) and resolved.tokenizer == smol_dir
    )
    (adapter / "training_config.json").unlink()
    assert resolve_local_model(str(adapter)).weights == "org/unused"  # falls back to the adapter's own field
    (adapter / "adapter_config.json").write_text(json.dumps({"r": 8}))
    with pytest.raises(ValueError, match="base_model"):
        resolve_local_model(str(adapter))
    # a retrained run directory gets a new identity
    before = fingerprint(str(adapter))
    (adapter / "adapter_model.safetensors").write_bytes(b"new weights")
    assert fingerprint(str(adapter)) != before and fingerprint("org/name") == "hub:org/name"


def test_progress_logs_lines_off_a_terminal_and_shows_a_bar_on_one(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from compress_distill.progress import Progress, progress_line

    # stderr is captured here, so not a terminal (a cluster job's log): a line per interval and at the end
    with Progress(4, "hf:test", interval_s=0.0) as bar:
        bar.update(1, 30)
        bar.update(3, 10)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2 and "hf:test: 1/4 requests (25%)" in lines[0] and "ETA" in lines[0]
    assert "hf:test: 4/4 requests (100%)" in lines[1] and "ETA 00:00:00" in lines[1]
    with Progress(3, "hf:test", interval_s=3600.0) as bar:  # the interval bounds the lines: the end only
        bar.update(1, 5)
        bar.update(2, 5)
    assert len(capsys.readouterr().err.splitlines()) == 1
    assert progress_line("gen", 10, 40, 500, 5.0) == "gen: 10/40 requests (25%), 100.0 tok/s, ETA 00:00:15"
    with Progress(2, "hf:test", enabled=True) as bar:
        bar.update(1, 10)
        bar._last_postfix = 0.0  # force the (rate-limited) postfix refresh
        bar.update(1, 10)
    err = capsys.readouterr().err
    assert "hf:test" in err and "2/2" in err and "tok/s" in err


def test_one_tokenizer_api() -> None:
    # stages/traces_common.py used to define its own load_tokenizer/count_tokens (Rust tokenizer, model id)
    # beside llm/tokens.py's (transformers tokenizer object) under the same names
    import ast

    src = Path(__file__).resolve().parents[2] / "src" / "compress_distill"
    names = {"load_tokenizer", "fast_tokenizer", "count_tokens", "preflight_tokenizer"}
    defined = sorted(
        f"{path.relative_to(src)}:{node.name}"
        for path in src.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.FunctionDef) and node.name in names
    )
    assert defined == [f"llm/tokens.py:{n}" for n in sorted(names)]
