"""The test suite's own layout: shared helpers import the same way whatever set of folders pytest collects."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "paths",
    [
        ["tests/training/test_data.py", "tests/stages/test_truncate.py"],
        ["tests/stages/test_truncate.py", "tests/training/test_data.py"],
    ],
)
def test_helpers_import_in_any_collection_order(paths: list[str]) -> None:
    # ``from conftest import ...`` used to resolve to whichever conftest pytest loaded last
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *paths],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def test_conftest_files_hold_fixtures_only() -> None:
    offenders = [
        f"{path.relative_to(REPO)}:{n}"
        for path in (REPO / "tests").rglob("*.py")
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if line.lstrip().startswith(("from conftest import", "import conftest"))
    ]
    assert not offenders, f"import shared helpers from tests.helpers, not conftest: {offenders}"
