"""A copy of this repository as a fresh git + DVC project, for tests that run the real ``dvc repro``."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
GIT_ENV = {
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@t",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@t",
}


def env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of commands run in a copy: the venv's tools first on PATH, a git identity."""
    return {**os.environ, **GIT_ENV, "PATH": f"{BIN}:{os.environ['PATH']}", **(extra or {})}


def sh(
    args: list[str],
    cwd: Path,
    timeout: float = 900,
    extra_env: dict[str, str] | None = None,
    stdout_only: bool = False,
) -> str:
    """Run ``args`` in ``cwd``; stdout + stderr (stdout alone with ``stdout_only``: JSON to parse), an
    AssertionError with both on failure."""
    proc = subprocess.run(
        args, cwd=cwd, env=env(extra_env), capture_output=True, text=True, timeout=timeout, check=False
    )
    if proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
        )
    return proc.stdout if stdout_only else proc.stdout + proc.stderr


class Background:
    """A command started in ``cwd`` and left running, its stdout + stderr in ``log``: independent pipeline runs
    of one test module then share the cores instead of queueing (most of a stage is single-threaded start-up:
    imports, model load, DVC's checks).  ``wait`` returns the output, an AssertionError with it on failure or
    timeout; ``stop`` ends the command's whole process group (its stages too) if it still runs."""

    def __init__(
        self, args: list[str], cwd: Path, log: Path, extra_env: dict[str, str] | None = None
    ) -> None:
        self.args = args
        self.log = log
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                args,
                cwd=cwd,
                env=env(extra_env),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait(self, timeout: float) -> str:
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            rc = None
        text = self.log.read_text(errors="replace")
        if rc != 0:
            verdict = f"still running after {timeout:.0f} s" if rc is None else f"failed ({rc})"
            raise AssertionError(f"{' '.join(self.args)} {verdict}:\n{text[-8000:]}")
        return text

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def copy_repo(dest: Path, edit: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> Path:
    """A git repo at ``dest`` with this repo's tracked files (not tests/ or bench/), ``params.yaml`` passed
    through ``edit``, the plan regenerated and everything committed."""
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    for rel in tracked.split():
        if rel.startswith(("tests/", "bench/")) or not (REPO / rel).exists():
            continue
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, dest / rel)
    params_path = dest / "params.yaml"
    params = yaml.safe_load(params_path.read_text())
    if edit is not None:
        params = edit(params)
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))
    sh(["git", "init", "-q"], dest)
    sh(["compress-distill", "plan"], dest)
    sh(["git", "add", "-A"], dest)
    sh(["git", "commit", "-qm", "copy"], dest)
    return dest
