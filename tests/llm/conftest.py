"""Fixtures of the engine-layer tests: a fault-injecting loopback proxy and llama.cpp server commands."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.helpers.llm import PREFILLED_THINK_TEMPLATE, FaultProxy, Plan, llama_server_command


@pytest.fixture
def fault_proxy() -> Iterator[Callable[[str, Plan], FaultProxy]]:
    proxies: list[FaultProxy] = []

    def make(
        upstream: str, plan: Plan, attempts: Counter[str] | None = None, forwarded: Counter[str] | None = None
    ) -> FaultProxy:
        proxy = FaultProxy(
            upstream=upstream.removesuffix("/v1"),
            plan=plan,
            attempts=attempts if attempts is not None else Counter(),
            forwarded=forwarded if forwarded is not None else Counter(),
        ).start()
        proxies.append(proxy)
        return proxy

    yield make
    for proxy in proxies:
        proxy.stop()


@pytest.fixture(scope="session")
def llama_command() -> Callable[..., str]:
    """Factory of llama.cpp server launch commands (skips when llama-cpp-python is not installed)."""
    llama_server_command()  # importorskip once, up front
    return llama_server_command


@pytest.fixture
def prefilled_student(smol_dir: str, tmp_path: Path) -> Path:
    """A student directory: SmolLM2's weights (linked), a saved tokenizer whose template pre-fills <think>."""
    from transformers import AutoTokenizer

    out = tmp_path / "student"
    out.mkdir()
    for file in Path(smol_dir).iterdir():
        if file.suffix in (".safetensors", ".json") and not file.name.startswith(("tokenizer", "special")):
            (out / file.name).symlink_to(file)
    tok = AutoTokenizer.from_pretrained(smol_dir)
    tok.chat_template = PREFILLED_THINK_TEMPLATE
    tok.save_pretrained(out)
    # the same template for llama-cpp-python's server (--chat_format hf-tokenizer-config)
    (out / "server_chat_format.json").write_text(
        json.dumps(
            {
                "chat_template": PREFILLED_THINK_TEMPLATE,
                "bos_token": "<|im_start|>",
                "eos_token": "<|im_end|>",
            }
        )
    )
    return out


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Iterator[None]:
    """Decode on one torch thread while these tests run.

    On a shared 2-core machine (other test suites running), torch's OpenMP threads spin-wait for each other:
    81 SmolLM2 tokens took 93 s with 2 threads and 11 s with 1 (16 s with OMP_WAIT_POLICY=PASSIVE).
    Outputs are the same either way; only the wall time changes.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
