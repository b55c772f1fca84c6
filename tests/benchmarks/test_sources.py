"""prepare's pre-flight: gated access, pins resolved to commits, mirror commits, --check-sources.

There is no network here: the Hub client is ``create_autospec(HfApi, instance=True)`` (calls must match the
real signatures) raising the exceptions huggingface_hub's ``hf_raise_for_status`` raises, or a real HfApi
pointed at a refused local port where the behaviour without network is what is tested.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace
from unittest.mock import create_autospec

import httpx2
import huggingface_hub.constants
import pytest
from huggingface_hub import HfApi
from huggingface_hub.errors import (
    GatedRepoError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from compress_distill.benchmarks import sources
from compress_distill.benchmarks.registry import PINS
from compress_distill.config import ConfigError

SHA_A = "a" * 40
SHA_B = "b" * 40


def http_error(cls: type, status: int, hub_id: str = "Idavidrein/gpqa") -> Exception:
    url = f"https://huggingface.co/api/datasets/{hub_id}/auth-check"
    response = httpx2.Response(status, request=httpx2.Request("GET", url))
    return cls(f"{status} Client Error: access to dataset {hub_id} is restricted", response=response)


def hub(heads: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    """An autospecced HfApi whose dataset_info returns ``heads[revision]`` (default: a sha per revision)."""
    api = create_autospec(HfApi, instance=True)

    def info(repo_id: str, *, revision: str | None = None, **_: object) -> SimpleNamespace:
        return SimpleNamespace(
            sha=(heads or {}).get(revision or "", SHA_A if revision in (None, "main") else SHA_B)
        )

    api.dataset_info.side_effect = info
    return api


def one_line(err: pytest.ExceptionInfo[BaseException]) -> str:
    msg = str(err.value)
    assert "\n" not in msg
    return msg


# --------------------------------------------------------------------------------------------- gated
@pytest.mark.parametrize(
    "refusal",
    [http_error(GatedRepoError, 403), http_error(RepositoryNotFoundError, 401)],
    ids=["gated-403", "no-token-401"],
)
def test_gated_refusal_is_one_line_with_the_page_and_the_token(refusal: Exception) -> None:
    api = hub()
    api.auth_check.side_effect = refusal
    with pytest.raises(sources.SourceError) as err:
        sources.resolve(["gsm8k", "gpqa_diamond"], {}, None, lambda: api)
    msg = one_line(err)
    assert "dataset 'gpqa_diamond'" in msg and "https://huggingface.co/datasets/Idavidrein/gpqa" in msg
    assert "HF_TOKEN" in msg and "hf auth login" in msg
    api.auth_check.assert_called_once_with("Idavidrein/gpqa", repo_type="dataset")


def test_only_gated_sources_are_access_checked_and_every_pin_becomes_a_sha() -> None:
    api = hub()
    got = sources.resolve(["gsm8k", "gpqa_diamond", "arc_challenge", "arc_easy"], {}, None, lambda: api)
    api.auth_check.assert_called_once_with("Idavidrein/gpqa", repo_type="dataset")
    assert list(got) == ["openai/gsm8k", "Idavidrein/gpqa", "allenai/ai2_arc"]  # ARC's two sets: one repo
    assert got["allenai/ai2_arc"].datasets == ("arc_challenge", "arc_easy")
    # the registry pin is what is asked for; the sha the Hub answers is what is read and recorded
    gsm = got["openai/gsm8k"]
    assert gsm.requested == PINS["openai/gsm8k"].sha and gsm.origin == "registry" and not gsm.verified
    assert gsm.load_revision == gsm.sha == SHA_B
    # unpinned (GPQA): the branch head is resolved to a sha, so the run still records a commit
    gpqa = got["Idavidrein/gpqa"]
    assert gpqa.origin == "branch" and gpqa.requested == "main" and gpqa.sha == SHA_A
    assert gpqa.as_metrics() == {
        "datasets": "gpqa_diamond",
        "branch": "main",
        "requested": "main",
        "pin": "branch",
        "pin_verified": False,
        "sha": SHA_A,
        "read_from": "hub",
    }


def test_params_override_wins_over_the_registry_pin() -> None:
    api = hub({SHA_A: SHA_A})
    got = sources.resolve(["gsm8k"], {"openai/gsm8k": SHA_A}, None, lambda: api)
    api.dataset_info.assert_called_once_with("openai/gsm8k", revision=SHA_A)
    assert got["openai/gsm8k"].origin == "params" and got["openai/gsm8k"].sha == SHA_A


def test_unknown_override_names_the_params_key_and_the_valid_repos() -> None:
    with pytest.raises(
        ConfigError, match=r"prepare\.revisions: unknown source\(s\) \['openai/gsm9k'\].*openai/gsm8k"
    ):
        sources.resolve(["gsm8k"], {"openai/gsm9k": SHA_A}, None, hub)


def test_missing_pin_on_the_hub_is_one_line() -> None:
    api = hub()
    api.dataset_info.side_effect = http_error(RevisionNotFoundError, 404, "openai/gsm8k")
    with pytest.raises(sources.SourceError) as err:
        sources.resolve(["gsm8k"], {"openai/gsm8k": SHA_A}, None, lambda: api)
    assert f"revision {SHA_A} (params pin) does not exist" in one_line(err)
    assert "prepare.revisions['openai/gsm8k']" in str(err.value)


@pytest.fixture
def online(monkeypatch: pytest.MonkeyPatch) -> None:
    """Lift the suite's HF_HUB_OFFLINE for a test whose client points at a refused local port."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)


@pytest.mark.usefixtures("online")
def test_no_network_is_one_line_that_points_at_the_mirror() -> None:
    # a real client against a refused local port: what an air-gapped node sees
    with pytest.raises(sources.SourceError) as err:
        sources.resolve(["gsm8k"], {}, None, lambda: HfApi(endpoint="http://127.0.0.1:9"))
    msg = one_line(err)
    assert "cannot reach the Hugging Face Hub to read openai/gsm8k (ConnectError" in msg
    assert "prepare.hub_mirror" in msg


def test_offline_mode_reads_a_sha_pin_from_the_cache_but_not_a_branch() -> None:
    assert (
        huggingface_hub.constants.HF_HUB_OFFLINE
    )  # tests/conftest.py: the real client raises OfflineModeIsEnabled
    api = HfApi()
    got = sources.resolve(["gsm8k"], {}, None, lambda: api)
    assert got["openai/gsm8k"].sha == PINS["openai/gsm8k"].sha
    with pytest.raises(
        sources.SourceError, match="cannot reach the Hugging Face Hub to read ChilleD/MultiArith"
    ):
        sources.resolve(["multiarith"], {}, None, lambda: api)  # unpinned: no commit to read offline


# --------------------------------------------------------------------------------------------- mirror
def mirror_of(hub_mirror: Path, root: Path, repo: str, shas: list[str]) -> Path:
    """A copy of a fixture repo with the metadata `hf download --local-dir` writes (first line: the commit)."""
    dst = root / repo
    shutil.copytree(hub_mirror / repo, dst)
    files = [p for p in dst.rglob("*") if p.is_file()]
    for i, f in enumerate(files):
        meta = dst / sources.MIRROR_METADATA / f"{f.relative_to(dst)}.metadata"
        meta.parent.mkdir(parents=True, exist_ok=True)
        meta.write_text(f"{shas[i % len(shas)]}\netag\n1700000000.0\n", encoding="utf-8")
    return dst


def test_mirror_records_the_commit_it_was_downloaded_at(hub_mirror: Path, tmp_path: Path) -> None:
    mirror_of(hub_mirror, tmp_path, "openai/gsm8k", [SHA_A])
    got = sources.resolve(["gsm8k"], {"openai/gsm8k": SHA_A}, tmp_path, hub)
    assert got["openai/gsm8k"].sha == SHA_A and got["openai/gsm8k"].as_metrics()["read_from"] == "mirror"
    # the fixture mirror itself records nothing: read, but the card says the commit is unrecorded
    plain = sources.resolve(["gsm8k"], {}, hub_mirror, hub)
    assert plain["openai/gsm8k"].sha is None and plain["openai/gsm8k"].as_metrics()["sha"] == "unrecorded"


def test_mirror_of_another_commit_than_the_pin_is_refused(hub_mirror: Path, tmp_path: Path) -> None:
    mirror_of(hub_mirror, tmp_path, "openai/gsm8k", [SHA_B])
    with pytest.raises(sources.SourceError) as err:
        sources.resolve(["gsm8k"], {"openai/gsm8k": SHA_A}, tmp_path, hub)
    assert f"holds commit {SHA_B} but the pin (params) is {SHA_A}" in one_line(err)


def test_mirror_mixing_commits_is_refused(hub_mirror: Path, tmp_path: Path) -> None:
    mirror_of(hub_mirror, tmp_path, "openai/gsm8k", [SHA_A, SHA_B])
    with pytest.raises(sources.SourceError, match="mixes files of commits"):
        sources.resolve(["gsm8k"], {}, tmp_path, hub)


def test_missing_mirror_folder_is_refused_before_any_load(hub_mirror: Path, tmp_path: Path) -> None:
    mirror_of(hub_mirror, tmp_path, "openai/gsm8k", [SHA_A])
    with pytest.raises(sources.SourceError) as err:
        sources.resolve(["gsm8k", "medexpqa"], {"openai/gsm8k": SHA_A}, tmp_path, hub)
    assert "HiTZ/MedExpQA does not exist" in one_line(err) and "hf download --repo-type dataset" in str(
        err.value
    )


def test_mirror_commands_download_each_repo_once_at_its_pin(tmp_path: Path) -> None:
    lines = sources.mirror_commands(
        ["arc_challenge", "arc_easy", "hellaswag"], {"Rowan/hellaswag": SHA_A}, tmp_path / "mirror"
    )
    assert lines == [
        (
            f"hf download --repo-type dataset allenai/ai2_arc --revision {PINS['allenai/ai2_arc'].sha} "
            f"--local-dir {tmp_path / 'mirror' / 'allenai/ai2_arc'}"
        ),
        (
            f"hf download --repo-type dataset Rowan/hellaswag --revision {SHA_A} "
            f"--local-dir {tmp_path / 'mirror' / 'Rowan/hellaswag'}"
        ),
    ]


# --------------------------------------------------------------------------------------------- --check-sources
def test_check_pins_reports_each_source_against_its_branch_head() -> None:
    gsm8k_pin = PINS["openai/gsm8k"].sha
    api = hub({"main": gsm8k_pin or "", "refs/convert/parquet": SHA_B})
    checks = {c.hub_id: c for c in sources.check_pins(["gsm8k", "svamp", "hellaswag"], {}, lambda: api)}
    assert checks["openai/gsm8k"].status == "same as head"
    assert checks["ChilleD/SVAMP"].status == "differs from head"
    assert checks["Rowan/hellaswag"].status == "unpinned (follows the branch)"
    api.dataset_info.assert_any_call("Rowan/hellaswag", revision="refs/convert/parquet")
    assert "(registry, unverified)" in checks["openai/gsm8k"].line()


@pytest.mark.usefixtures("online")
def test_check_pins_says_clearly_when_the_hub_is_unreachable() -> None:
    with pytest.raises(sources.SourceError, match="no pin was checked"):
        sources.check_pins(["gsm8k"], {}, lambda: HfApi(endpoint="http://127.0.0.1:9"))
