"""Shared fixtures: the real SmolLM2 checkpoint, GPU skipping, repo paths."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Tests never reach the Hub (docs/architecture.md §5): fail fast instead of hanging on a download.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Spinning OpenMP workers starve each other when tests start torch subprocesses on 2 cores.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:  # pragma: no cover - torch is a hard dependency
        return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _cuda_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (run `make test-gpu` on a GPU machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def smol_dir() -> str:
    """Local HF checkpoint of SmolLM2-135M-Instruct, converted once from the packaged GGUF."""
    from compress_distill.modelhub import resolve_model

    return resolve_model("smollm2-135m-instruct")


@pytest.fixture(scope="session")
def slurm() -> object:
    """A one-node SLURM cluster on loopback for the whole run (``tests/helpers/slurm_cluster.py``); yields the client
    environment (``SLURM_CONF``), also set in ``os.environ`` while it runs."""
    import tempfile

    from tests.helpers.slurm_cluster import have_slurm, loopback_cluster

    if not have_slurm():
        pytest.skip("SLURM not installed: `make setup-test` installs Debian's slurm-wlm and munge")
    with tempfile.TemporaryDirectory(prefix="slurm-") as root, loopback_cluster(Path(root)) as client_env:
        before = os.environ.get("SLURM_CONF")
        os.environ.update(client_env)
        yield client_env
        if before is None:
            os.environ.pop("SLURM_CONF")
        else:
            os.environ["SLURM_CONF"] = before
