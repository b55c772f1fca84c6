"""publish@T against an autospecced HfApi (wrong arguments fail) backed by an in-memory Hub: one repo per
teacher, no commit for unchanged data, immutable tags, pull reading it back, and no token anywhere."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from unittest.mock import create_autospec

import pytest
from huggingface_hub import HfApi, constants

from compress_distill.config import ConfigError
from compress_distill.errors import HubError, describe, redact_logs
from compress_distill.metrics import read_metrics
from compress_distill.stages import build, publish, pull
from tests.helpers.echo_server import echo_server
from tests.helpers.fake_hub import FakeHub
from tests.helpers.traces import SMOL, make_params, make_traces

# assembled at run time so secret scanners do not flag a (fake) token committed in the source
TOKEN = "hf_" + "FAKEtokenThatMustNeverBeWritten0123"
REPO_ID = "my-org/compress-distill-traces"


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("publish")
    traces, judgements = make_traces(root)
    out = root / "hub" / "smol"
    build.run(make_params(), "smol", traces, judgements, out, root / "build.json")
    return out


def fake_api():  # type: ignore[no-untyped-def]
    """A bare autospec: for the checks that must fail before any call."""
    return create_autospec(HfApi, instance=True)


def pub_params(**kw):  # type: ignore[no-untyped-def]
    return make_params(**{"publish.enabled": True, "publish.repo_id": REPO_ID, "publish.tag": "v1", **kw})


def built_files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_calls_and_receipt(
    folder: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    caplog.set_level(logging.DEBUG)
    hub = FakeHub(tmp_path / "cache")
    api = hub.api
    r = publish.run(
        pub_params(**{"publish.private": True}), "smol", folder, tmp_path / "receipt.json", api=api
    )
    api.create_repo.assert_called_once_with(REPO_ID, repo_type="dataset", private=True, exist_ok=True)
    api.upload_folder.assert_called_once()
    kwargs = api.upload_folder.call_args.kwargs
    assert kwargs["repo_id"] == REPO_ID and kwargs["repo_type"] == "dataset"
    assert Path(kwargs["folder_path"]) == folder and kwargs["delete_patterns"] == ["*.parquet", "*.png"]
    oid = hub.repos[REPO_ID].main
    api.create_tag.assert_called_once_with(
        REPO_ID,
        tag="v1",
        revision=oid,
        repo_type="dataset",
        tag_message="compress-distill traces of teacher smol",
    )
    for call in api.mock_calls:  # the token is huggingface_hub's business: never passed by us
        assert "token" not in call.kwargs
    receipt = read_metrics(tmp_path / "receipt.json")
    assert receipt == r
    assert receipt["commit"] == oid and receipt["new_commit"] is True
    assert receipt["tag_url"] == f"https://huggingface.co/datasets/{REPO_ID}/tree/v1"
    assert (
        receipt["dataset_url"] == f"https://huggingface.co/datasets/{REPO_ID}" and receipt["revision"] == "v1"
    )
    assert receipt["commit_url"] == f"https://huggingface.co/datasets/{REPO_ID}/commit/{oid}"
    assert receipt["configs"]["raw"] == 5 and receipt["rows_in"] == receipt["rows_out"] == 20
    assert hub.files(REPO_ID, "v1") == {".gitattributes": hub.files(REPO_ID)[".gitattributes"]} | built_files(
        folder
    )
    out, err = capsys.readouterr()
    blob = (tmp_path / "receipt.json").read_text() + caplog.text + out + err + json.dumps(r)
    assert TOKEN not in blob and "hf_" not in blob


@pytest.mark.parametrize("tag", ["v1", None])
def test_republishing_unchanged_data_makes_no_commit(folder: Path, tmp_path: Path, tag: str | None) -> None:
    hub = FakeHub(tmp_path / "cache")
    params = pub_params(**{"publish.tag": tag})
    first = publish.run(params, "smol", folder, tmp_path / "r1.json", api=hub.api)
    # a rebuild from the same traces is byte-identical, so it is the same data too
    traces, judgements = make_traces(tmp_path / "again")
    rebuilt = tmp_path / "again" / "hub" / "smol"
    build.run(make_params(), "smol", traces, judgements, rebuilt, tmp_path / "again" / "build.json")
    second = publish.run(params, "smol", rebuilt, tmp_path / "r2.json", api=hub.api)
    assert hub.api.upload_folder.call_count == 1 and hub.api.create_tag.call_count == (1 if tag else 0)
    assert second["commit"] == first["commit"] == hub.repos[REPO_ID].main
    assert first["new_commit"] is True and second["new_commit"] is False
    assert second["revision"] == (tag or first["commit"])


def test_a_tag_that_exists_for_other_data_is_a_one_line_error(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub = FakeHub(tmp_path / "cache")
    publish.run(pub_params(), "smol", folder, tmp_path / "r1.json", api=hub.api)
    v1 = hub.files(REPO_ID, "v1")
    root = tmp_path / "smaller"
    traces, judgements = make_traces(root, n_raw=4)
    smaller = root / "hub" / "smol"
    build.run(make_params(), "smol", traces, judgements, smaller, root / "build.json")
    with pytest.raises(ConfigError) as info:
        publish.run(pub_params(), "smol", smaller, tmp_path / "r2.json", api=hub.api)
    message = str(info.value)
    assert "\n" not in message and f"tag 'v1' already exists on {REPO_ID}" in message
    assert "different data" in message and "set a new publish.tag" in message
    assert hub.api.upload_folder.call_count == 1 and not (tmp_path / "r2.json").exists()
    assert hub.files(REPO_ID, "v1") == v1
    # the fix the message names: a new tag publishes, and stale shards of the bigger build are gone
    r = publish.run(pub_params(**{"publish.tag": "v2"}), "smol", smaller, tmp_path / "r2.json", api=hub.api)
    v2 = hub.files(REPO_ID, "v2")
    assert r["new_commit"] and {p for p in v2 if p != ".gitattributes"} == set(built_files(smaller))
    assert hub.files(REPO_ID, "v1") == v1  # an old version stays readable at its tag


def test_two_teachers_publish_to_their_own_repos_and_pull_back(tmp_path: Path) -> None:
    template = "my-org/compress-distill-traces-{teacher}"
    params = pub_params(
        **{
            "publish.repo_id": template,
            "teachers.big": {"backend": "hf", "model": SMOL, "device": "cpu"},
            "grid.teachers": ["smol", "big"],
        }
    )
    folders = {}
    for teacher, n_raw in (("smol", 5), ("big", 4)):
        root = tmp_path / teacher
        traces, judgements = make_traces(root, n_raw=n_raw)
        folders[teacher] = root / "hub" / teacher
        build.run(params, teacher, traces, judgements, folders[teacher], root / "build.json")
    hub = FakeHub(tmp_path / "cache")
    receipts = {t: publish.run(params, t, f, tmp_path / f"{t}.json", api=hub.api) for t, f in folders.items()}
    repos = {t: template.format(teacher=t) for t in folders}
    assert sorted(hub.repos) == sorted(repos.values())
    for t, repo in repos.items():
        assert receipts[t]["repo_id"] == repo and receipts[t]["dataset_url"].endswith(repo)
        assert {p for p in hub.files(repo, "v1") if p != ".gitattributes"} == set(built_files(folders[t]))
    # the second teacher left the first one's files and tag alone
    assert (
        hub.files(repos["smol"], "v1") == hub.files(repos["smol"])
        and len(hub.repos[repos["smol"]].commits) == 2
    )
    # and pull reads each teacher's repo back into data/hub/<teacher>
    for t, repo in repos.items():
        out = tmp_path / "pulled" / "data" / "hub" / t
        m = pull.run(repo, "v1", out, tmp_path / "pulled" / f"{t}.json", download=hub.download)
        assert m["configs"] == receipts[t]["configs"]
        pulled = built_files(out)
        assert pulled.pop(".gitattributes") and pulled == built_files(
            folders[t]
        )  # the Hub adds .gitattributes


def test_one_repo_for_several_teachers_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"publish.repo_id .* put \{teacher\} in it"):
        pub_params(
            **{
                "teachers.big": {"backend": "hf", "model": SMOL, "device": "cpu"},
                "grid.teachers": ["smol", "big"],
            }
        )


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
