"""CLI habits (issue 13): -h and --version, plain help text, and a ``profile`` command that lists only
profiles and keeps a params file with local edits unless told --force.  Runs the real entry point."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from compress_distill import __version__

REPO = Path(__file__).resolve().parents[1]


def cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    env = {"PYTHONPATH": str(REPO / "src"), "PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin"}
    return subprocess.run(
        [sys.executable, "-m", "compress_distill.cli", *args],
        check=False,
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_version_and_short_help() -> None:
    assert cli("--version").stdout.strip() == f"compress-distill {__version__}"
    top = cli("-h")
    assert top.returncode == 0 and "Commands:" in top.stdout


@pytest.mark.parametrize(
    "command", ["prepare", "build", "pull", "train", "evaluate", "report", "profile", "export-gguf"]
)
def test_help_has_no_rst_markup_or_bool_metavars(command: str) -> None:
    r = cli(command, "-h")
    assert r.returncode == 0, r.stderr
    assert "``" not in r.stdout and "<bool>" not in r.stdout, r.stdout


@pytest.fixture
def repo_copy(tmp_path: Path) -> Path:
    shutil.copytree(REPO / "configs", tmp_path / "configs")
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    return tmp_path


def test_profile_lists_only_profiles(repo_copy: Path) -> None:
    r = cli("profile", "nope", cwd=repo_copy)
    assert r.returncode == 2
    assert r.stderr.strip().endswith("available: demo, paper"), r.stderr  # not accelerate_fsdp2


def test_profile_keeps_local_edits_unless_forced(repo_copy: Path) -> None:
    params = repo_copy / "params.yaml"
    edited = params.read_text(encoding="utf-8").replace("n_train: ", "n_train: 1")
    params.write_text(edited, encoding="utf-8")
    refused = cli("profile", "paper", cwd=repo_copy)
    assert refused.returncode == 2 and "--force" in refused.stderr, refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    assert params.read_text(encoding="utf-8") == edited
    forced = cli("profile", "paper", "--force", cwd=repo_copy)
    assert forced.returncode == 0, forced.stderr
    assert params.read_bytes() == (repo_copy / "configs" / "paper.yaml").read_bytes()
    # a params file equal to a profile is switched without --force
    back = cli("profile", "demo", cwd=repo_copy)
    assert back.returncode == 0, back.stderr
    assert params.read_bytes() == (repo_copy / "configs" / "demo.yaml").read_bytes()
