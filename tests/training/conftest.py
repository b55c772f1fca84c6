"""Fixtures of the training tests: one torch thread, the SmolLM2 tokenizer."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture(autouse=True)
def one_torch_thread() -> Any:
    """Run training tests on one intra-op thread: on a shared 2-core machine, OpenMP's spin-waiting makes
    two threads 5-30x slower than one whenever other processes compete for the cores (measured)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def smol_tokenizer(smol_dir: str) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smol_dir)
