"""Generated DVC deps, checked with real DVC on a temporary git copy of the repository.

Each stage must depend on exactly the package modules its module imports (transitively) and the prompt files
it reads, so that `dvc status` marks the stages a code or prompt edit affects and no others; and DVC must
leave tracked files alone (it appends to `.gitignore` any cached output that git does not ignore yet).

No stage runs: every output gets a placeholder and `dvc commit -f` records the pipeline as up to date (it
saves outputs through the same ``Output.save`` -> ``Output.ignore`` path as `dvc repro`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PKG = "src/compress_distill"

# Stage families (dvc.yaml stage names) that import each module, read off the code by hand: a module edit
# must make stale exactly the instances of these families.
IMPORTERS: dict[str, set[str]] = {
    # answer grading: the teacher's attempts (ift runs generate's sampler, so it imports what generate
    # imports), the compressor's answer check, the verifier, the students
    "answers.py": {"generate", "ift", "compress", "verify", "evaluate", "evaluate_cap"},
    "reasoning.py": {
        "generate",
        "ift",
        "compress",
        "truncate",
        "judge",
        "verify",
        "build",
        "train",
        "evaluate",
        "evaluate_cap",
        "report",
    },
    # the engine code: the stages that generate, plus truncate (it counts tokens through llm.tokens)
    "llm/hf.py": {"generate", "ift", "compress", "truncate", "judge", "verify", "evaluate", "evaluate_cap"},
    "llm/cache.py": {
        "generate",
        "ift",
        "compress",
        "truncate",
        "judge",
        "verify",
        "evaluate",
        "evaluate_cap",
    },
    "schema.py": {
        "prepare",
        "generate",
        "ift",
        "compress",
        "truncate",
        "answer_only",
        "judge",
        "verify",
        "build",
        "train",
        "evaluate",
        "evaluate_cap",
        "report",
    },
    # the reject ledger: every trace stage and the report (never the engine code: report stays cheap)
    "rejects.py": {
        "generate",
        "ift",
        "compress",
        "truncate",
        "answer_only",
        "judge",
        "verify",
        "build",
        "report",
    },
    "card.py": {"build"},
    "training/trainer.py": {"train"},
}


def _sh(args: list[str], cwd: Path) -> str:
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    env |= {f"GIT_{who}_{what}": "t" for who in ("AUTHOR", "COMMITTER") for what in ("NAME", "EMAIL")}
    proc = subprocess.run(args, check=False, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        tail = f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        raise AssertionError(f"{' '.join(args)} failed ({proc.returncode}):\n{tail}")
    return proc.stdout


@pytest.fixture(scope="module")
def committed_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A git copy of the tracked files with every stage recorded as up to date in dvc.lock."""
    from dvc.repo import Repo

    repo = tmp_path_factory.mktemp("deps") / "repo"
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    for rel in tracked.split():
        if rel.startswith(("tests/", "bench/")) or not (REPO / rel).exists():
            continue
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, repo / rel)
    # the demo plans neither the cap variants nor source ift: switch both on so their stages are checked too
    params = yaml.safe_load((repo / "params.yaml").read_text(encoding="utf-8"))
    params["evaluate"]["extra_caps"] = [320]
    params["ift"] = {}
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    _sh([str(BIN / "compress-distill"), "plan", "--params", "params.yaml"], repo)
    _sh(["git", "init", "-q"], repo)
    _sh(["git", "add", "-A"], repo)
    _sh(["git", "commit", "-qm", "copy"], repo)
    with Repo(str(repo)) as dvc:
        for stage in dvc.index.stages:
            for entry in [*stage.deps, *stage.outs]:
                path = Path(entry.fs_path)
                if hasattr(entry, "params") or path.exists():
                    continue
                if path.suffix:  # a file output (parquet, json)
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_text("{}\n")
                else:  # a folder output
                    path.mkdir(parents=True, exist_ok=True)
                    (path / "placeholder").write_text("x\n")
    _sh(["dvc", "commit", "-f", "-q"], repo)
    assert _stale(repo) == set(), "placeholders should leave every stage up to date"
    return repo


def _stale(repo: Path) -> set[str]:
    return set(json.loads(_sh(["dvc", "status", "--json"], repo)))


def _stale_after_appending(repo: Path, rel: str, text: str) -> set[str]:
    """The stages `dvc status` calls stale once ``text`` is appended to file ``rel``; the file is restored."""
    path = repo / rel
    original = path.read_text()
    path.write_text(original + text)
    try:
        return _stale(repo)
    finally:
        path.write_text(original)


def _all_stages(repo: Path) -> set[str]:
    from dvc.repo import Repo

    with Repo(str(repo)) as dvc:
        return {stage.name for stage in dvc.index.stages}


def _families(stages: set[str]) -> set[str]:
    return {s.split("@")[0] for s in stages}


@pytest.mark.parametrize("module", sorted(IMPORTERS))
def test_module_edit_makes_exactly_its_importers_stale(committed_repo: Path, module: str) -> None:
    stale = _stale_after_appending(
        committed_repo, f"{PKG}/{module}", "\n\ndef _added_by_a_test() -> int:\n    return 1\n"
    )
    # every instance of those families (the fan-out shares the code), and nothing else
    assert stale == {s for s in _all_stages(committed_repo) if s.split("@")[0] in IMPORTERS[module]}
    assert _families(stale) == IMPORTERS[module]


def test_every_compressor_output_is_a_verify_dep(committed_repo: Path) -> None:
    """verify@T reads each compressor's traces and judgements (generated ``${item.inputs[i]}`` deps)."""
    for rel, also in (
        ("data/traces/smol/compressed-concise.parquet", {"judge@smol-concise"}),
        ("data/judgements/smol/terse.parquet", set()),
    ):
        stale = _stale_after_appending(committed_repo, rel, "changed\n")
        assert "verify@smol" in stale and also <= stale, (rel, stale)


def test_prompt_edit_makes_only_its_compressor_stale(committed_repo: Path) -> None:
    stale = _stale_after_appending(committed_repo, "prompts/compress/terse.md", "\nBe brief.\n")
    # build@smol too: its dataset card records every prompt file's hash
    assert stale == {"compress@smol-terse", "build@smol"}


def test_generic_prompt_edit_spares_compressors_with_their_own(committed_repo: Path) -> None:
    stale = _stale_after_appending(committed_repo, "prompts/compress/generic.md", "\nBe brief.\n")
    assert stale == {"compress@smol-concise", "build@smol"}


def test_dvc_leaves_tracked_files_alone(committed_repo: Path) -> None:
    # `dvc commit` saved every output (Output.save -> Output.ignore, as `dvc repro` does): no tracked change
    assert _sh(["git", "status", "--porcelain", "--untracked-files=no"], committed_repo) == ""
