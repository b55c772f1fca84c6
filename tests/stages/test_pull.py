"""pull: a published revision downloaded (autospecced snapshot_download copying a built folder), verified
by loading every config, swapped into place; a broken revision leaves the destination untouched."""

from __future__ import annotations

import functools
import logging
import shutil
from pathlib import Path
from unittest.mock import create_autospec

import pytest
from huggingface_hub import constants, snapshot_download

from compress_distill.errors import HubError, StageError, redact_logs
from compress_distill.metrics import read_metrics
from compress_distill.stages import build, pull
from tests.helpers.echo_server import echo_server, fake_token
from tests.helpers.traces import make_params, make_traces

REPO_ID = "my-org/compress-distill-traces"


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pull")
    traces, judgements = make_traces(root)
    build.run(make_params(), "smol", traces, judgements, root / "built", root / "build.json")
    return root / "built"


SHA = "89abcdef0123456789abcdef0123456789abcdef"


def fake_download(source: Path, cache: Path):  # type: ignore[no-untyped-def]
    """snapshot_download's exact signature (autospec); lays ``source`` out like the HF cache does -- blobs
    plus a ``snapshots/<commit>`` folder of symlinks -- and returns the snapshot folder."""

    def download(repo_id: str, **kwargs: object) -> str:
        snap = cache / f"datasets--{repo_id.replace('/', '--')}" / "snapshots" / SHA
        for f in source.rglob("*"):
            if f.is_file():
                blob = cache / "blobs" / f"{abs(hash(str(f)))}"
                blob.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(f, blob)
                link = snap / f.relative_to(source)
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to(blob)
        return str(snap)

    return create_autospec(snapshot_download, side_effect=download)


def test_pull_downloads_verifies_and_swaps_in(published: Path, tmp_path: Path) -> None:
    out = tmp_path / "data" / "hub" / "smol"
    out.mkdir(parents=True)
    (out / "stale.txt").write_text("from an earlier pull")
    download = fake_download(published, tmp_path / "hf-cache")
    m = pull.run(REPO_ID, "v1", out, tmp_path / "m.json", download=download)
    download.assert_called_once_with(repo_id=REPO_ID, repo_type="dataset", revision="v1")
    assert m == read_metrics(tmp_path / "m.json")
    assert m["configs"] == {
        "raw": 5,
        "compressed-concise": 4,
        "compressed-terse": 3,
        "truncated": 3,
        "answer-only": 5,
    }
    assert m["rows_in"] == m["rows_out"] == 20 and m["revision"] == "v1" and m["commit"] == SHA
    assert (out / "README.md").exists() and not (out / "stale.txt").exists()
    assert not any(p.is_symlink() for p in out.rglob("*"))  # real files, not links into the HF cache
    # no staging folder left; the (empty) rejects file beside the folder, as build writes it
    assert sorted(p.name for p in out.parent.iterdir()) == ["smol", "smol.rejects.parquet"]


def test_a_broken_revision_is_rejected_and_the_old_folder_kept(published: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(published, broken)
    card = (broken / "README.md").read_text(encoding="utf-8")
    (broken / "README.md").write_text(card.replace("num_examples: 5", "num_examples: 6", 1), encoding="utf-8")
    out = tmp_path / "hub" / "smol"
    out.mkdir(parents=True)
    (out / "keep.txt").write_text("previous pull")
    with pytest.raises(StageError, match="NonMatchingSplitsSizesError.*unchanged.*traces.revision"):
        pull.run(
            REPO_ID, "v2", out, tmp_path / "m.json", download=fake_download(broken, tmp_path / "hf-cache")
        )
    assert (out / "keep.txt").exists() and not (tmp_path / "m.json").exists()
    assert sorted(p.name for p in out.parent.iterdir()) == ["smol"]


def test_a_server_echoing_the_token_never_gets_it_printed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The real snapshot_download against a loopback server that quotes the Authorization header back."""
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    redact_logs()  # as the CLI does: httpcore's DEBUG log quotes the echoing response headers
    caplog.set_level(logging.DEBUG)
    token = fake_token()
    out = tmp_path / "hub" / "smol"
    with echo_server(401) as url:
        download = functools.partial(snapshot_download, endpoint=url, token=token, cache_dir=tmp_path / "hf")
        with pytest.raises(HubError) as info:
            pull.run(REPO_ID, "v1", out, tmp_path / "m.json", download=download)
    message = str(info.value)
    assert REPO_ID in message and "401" in message and "traces.revision" in message
    assert token not in message + caplog.text and "FAKEtoken" not in message + caplog.text
    assert not out.parent.exists() and not (tmp_path / "m.json").exists()
