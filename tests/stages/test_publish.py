"""publish@T against an autospecced HfApi (wrong arguments fail), tag handling, and no token anywhere."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from unittest.mock import create_autospec

import pytest
from huggingface_hub import CommitInfo, GitRefInfo, GitRefs, HfApi, RepoUrl, constants

from compress_distill.config import ConfigError
from compress_distill.errors import HubError, describe, redact_logs
from compress_distill.metrics import read_metrics
from compress_distill.stages import build, publish
from tests.helpers.echo_server import echo_server
from tests.helpers.traces import make_params, make_traces

# assembled at run time so secret scanners do not flag a (fake) token committed in the source
TOKEN = "hf_" + "FAKEtokenThatMustNeverBeWritten0123"
REPO_ID = "my-org/compress-distill-traces"
OID = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("publish")
    traces, judgements = make_traces(root)
    out = root / "hub" / "smol"
    build.run(make_params(), "smol", traces, judgements, out, root / "build.json")
    return out


def fake_api(tags: list[GitRefInfo] | None = None):  # type: ignore[no-untyped-def]
    api = create_autospec(HfApi, instance=True)
    api.create_repo.return_value = RepoUrl(f"https://huggingface.co/datasets/{REPO_ID}")
    api.upload_folder.return_value = CommitInfo(
        commit_url=f"https://huggingface.co/datasets/{REPO_ID}/commit/{OID}",
        commit_message="m",
        commit_description="",
        oid=OID,
    )
    api.list_repo_refs.return_value = GitRefs(branches=[], converts=[], tags=tags or [])
    return api


def pub_params(**kw):  # type: ignore[no-untyped-def]
    return make_params(**{"publish.enabled": True, "publish.repo_id": REPO_ID, "publish.tag": "v1", **kw})


def test_calls_and_receipt(
    folder: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    caplog.set_level(logging.DEBUG)
    api = fake_api()
    r = publish.run(
        pub_params(**{"publish.private": True}), "smol", folder, tmp_path / "receipt.json", api=api
    )
    api.create_repo.assert_called_once_with(REPO_ID, repo_type="dataset", private=True, exist_ok=True)
    api.upload_folder.assert_called_once()
    kwargs = api.upload_folder.call_args.kwargs
    assert kwargs["repo_id"] == REPO_ID and kwargs["repo_type"] == "dataset"
    assert Path(kwargs["folder_path"]) == folder and kwargs["delete_patterns"] == ["*.parquet", "*.png"]
    api.create_tag.assert_called_once_with(
        REPO_ID,
        tag="v1",
        revision=OID,
        repo_type="dataset",
        tag_message="compress-distill traces of teacher smol",
    )
    for call in api.mock_calls:  # the token is huggingface_hub's business: never passed by us
        assert "token" not in call.kwargs
    receipt = read_metrics(tmp_path / "receipt.json")
    assert receipt == r
    assert (
        receipt["commit"] == OID
        and receipt["tag_url"] == f"https://huggingface.co/datasets/{REPO_ID}/tree/v1"
    )
    assert (
        receipt["dataset_url"] == f"https://huggingface.co/datasets/{REPO_ID}" and receipt["revision"] == "v1"
    )
    assert receipt["configs"]["raw"] == 5 and receipt["rows_in"] == receipt["rows_out"] == 20
    out, err = capsys.readouterr()
    blob = (tmp_path / "receipt.json").read_text() + caplog.text + out + err + json.dumps(r)
    assert TOKEN not in blob and "hf_" not in blob


def test_tag_already_on_this_commit_is_a_no_op(folder: Path, tmp_path: Path) -> None:
    api = fake_api(tags=[GitRefInfo(name="v1", ref="refs/tags/v1", target_commit=OID)])
    publish.run(pub_params(), "smol", folder, tmp_path / "r.json", api=api)
    api.create_tag.assert_not_called()


def test_tag_on_another_commit_is_an_error(folder: Path, tmp_path: Path) -> None:
    api = fake_api(tags=[GitRefInfo(name="v1", ref="refs/tags/v1", target_commit="f" * 40)])
    with pytest.raises(ConfigError, match="set a new publish.tag"):
        publish.run(pub_params(), "smol", folder, tmp_path / "r.json", api=api)
    assert not (tmp_path / "r.json").exists()


def test_no_tag_publishes_the_commit(folder: Path, tmp_path: Path) -> None:
    api = fake_api()
    r = publish.run(pub_params(**{"publish.tag": None}), "smol", folder, tmp_path / "r.json", api=api)
    api.create_tag.assert_not_called()
    api.list_repo_refs.assert_not_called()
    assert r["revision"] == OID and r["tag_url"] is None


def test_disabled_or_unbuilt_is_a_clear_error(folder: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="publish.enabled: true"):
        publish.run(make_params(), "smol", folder, tmp_path / "r.json", api=fake_api())
    with pytest.raises(FileNotFoundError, match="dvc repro build@smol"):
        publish.run(pub_params(), "smol", tmp_path / "nothing", tmp_path / "r.json", api=fake_api())


def test_autospec_rejects_a_wrong_call() -> None:
    """The guard the other tests rely on: a misspelled argument fails like the real HfApi would."""
    api = fake_api()
    with pytest.raises(TypeError):
        api.upload_folder(repo_id=REPO_ID, folder=".", repo_type="dataset")


@pytest.mark.parametrize("status", [401, 500])
def test_a_server_echoing_the_token_never_gets_it_printed(
    folder: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
    status: int,
) -> None:
    """The real HfApi against a loopback server that quotes the Authorization header in its error (as some
    proxies do): the error says what failed and what to check, and holds no part of the token."""
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    redact_logs()  # as the CLI does: httpcore's DEBUG log quotes the echoing response headers
    caplog.set_level(logging.DEBUG)
    with echo_server(status) as url:
        api = HfApi(endpoint=url, token=TOKEN)
        with pytest.raises(HubError) as info:
            publish.run(pub_params(), "smol", folder, tmp_path / "r.json", api=api)
    message = str(info.value)
    assert REPO_ID in message and str(status) in message and "publish.repo_id" in message
    assert info.value.__cause__ is None and info.value.__suppress_context__  # the raw error is not chained
    line = describe(info.value) or ""
    out, err = capsys.readouterr()
    for text in (message, line, caplog.text, out, err):
        assert TOKEN not in text and "FAKEtoken" not in text
    assert not (tmp_path / "r.json").exists()
