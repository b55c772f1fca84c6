"""Which code produced an artefact: the git commit the dataset card and the lm-eval results record."""

from __future__ import annotations

import subprocess
from pathlib import Path


def git_commit(cwd: Path | None = None) -> str:
    """``git rev-parse HEAD`` of the working directory, or a note saying why there is none."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10, check=False
        )
    except FileNotFoundError:
        return "unknown (git not installed)"
    return out.stdout.strip() if out.returncode == 0 else "unknown (not a git checkout)"
