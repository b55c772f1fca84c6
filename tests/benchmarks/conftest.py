"""Fixtures for the loader tests: the Hub-shaped mirror in tests/fixtures/hub and a private datasets cache."""

from __future__ import annotations

from pathlib import Path

import pytest

MIRROR = Path(__file__).resolve().parents[1] / "fixtures" / "hub"


@pytest.fixture(scope="session")
def hub_mirror() -> Path:
    return MIRROR


@pytest.fixture(scope="session")
def ds_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A datasets cache private to the test session, so runs never reuse (or pollute) ~/.cache."""
    return tmp_path_factory.mktemp("datasets-cache")
