"""publish@T (opt-in): push the built folder to the teacher's Hub dataset repo under a tag; write a receipt.

Layout: **one dataset repo per teacher**, ``Params.published_repo_id`` (``publish.repo_id`` with ``{teacher}``
filled in; a placeholder is required when ``grid.teachers`` has more than one teacher).  Each repo holds
exactly the folder ``build@T`` wrote -- configs ``raw``, ``compressed-<C>``, ``truncated``, ``answer-only``,
its own card and figure -- so ``load_dataset(repo, config)``, ``pull@T`` and the card's usage block read it
with no teacher prefix, a second teacher can never delete or overwrite the first one's files, and each
teacher's repo has its own release tags (``publish.tag``, e.g. ``v1`` in every repo).

One publish: ``create_repo(repo_type="dataset", exist_ok=True)``, then the files the build owns (README.md,
``*.parquet``, ``*.png``) are compared with the remote tree by content (LFS sha256, or the git blob id of a
regular file):
- ``publish.tag`` already exists: same files there -> nothing to do; other files -> one-line error (tags are
  immutable versions: set a new ``publish.tag``);
- the head of ``main`` already holds these files -> no new commit, the tag (if any) goes on that head;
- otherwise one ``upload_folder`` commit that also deletes remote shards and figures the new build no longer
  has (``delete_patterns``: a smaller rebuild must not leave ``train-00002-of-00003.parquet`` behind), then
  ``create_tag`` on that commit.

Credentials: ``huggingface_hub`` finds the token itself (``HF_TOKEN`` or the stored ``hf auth login``); this
module never reads, prints or stores it, and the receipt holds only ids and URLs.
"""

from __future__ import annotations

import fnmatch
import hashlib
import logging
from pathlib import Path
from typing import Annotated, Any

import typer

from compress_distill.config import ConfigError, Params, load_params, pick
from compress_distill.errors import hub_errors
from compress_distill.metrics import write_metrics
from compress_distill.schema import count_rows

log = logging.getLogger(__name__)

HUB_FIX = (
    "check publish.repo_id in params, the network (HF_ENDPOINT, proxies) and the login (`hf auth login` or "
    "HF_TOKEN with write access)"
)

# remote files owned by the build: anything matching and not re-uploaded by this commit is deleted
STALE_PATTERNS = ["*.parquet", "*.png"]
OWNED = ["README.md", *STALE_PATTERNS]  # what "the same data" compares (.gitattributes etc. are the Hub's)
MAIN = "main"


def folder_rows(folder: Path) -> dict[str, int]:
    """Rows per config directory (from Parquet footers; no data is read)."""
    out: dict[str, int] = {}
    for shard in sorted(folder.glob("*/*.parquet")):
        out[shard.parent.name] = out.get(shard.parent.name, 0) + count_rows(shard)
    return out


def _owned(path: str) -> bool:
    return any(fnmatch.fnmatch(path, pattern) for pattern in OWNED)


def file_digests(path: Path) -> tuple[str, str]:
    """``(sha256, git blob sha1)`` of a file: the Hub reports the first for LFS files, the second otherwise."""
    sha256, blob = hashlib.sha256(), hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):  # 1 MiB reads: shards may be large
            sha256.update(chunk)
            blob.update(chunk)
    return sha256.hexdigest(), blob.hexdigest()


def local_files(folder: Path) -> dict[str, tuple[str, str]]:
    """Repo path -> digests of every file of the built folder that a publish uploads."""
    return {
        p.relative_to(folder).as_posix(): file_digests(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and _owned(p.relative_to(folder).as_posix())
    }


def same_files(local: dict[str, tuple[str, str]], remote: list[Any]) -> bool:
    """Whether a remote tree (``list_repo_tree`` entries) holds exactly the build's files, byte for byte."""
    from huggingface_hub import RepoFile

    files = {e.path: e for e in remote if isinstance(e, RepoFile) and _owned(e.path)}
    if set(files) != set(local):
        return False
    for path, f in files.items():
        sha256, blob = local[path]
        remote_digest, local_digest = (f.lfs.sha256, sha256) if f.lfs is not None else (f.blob_id, blob)
        if remote_digest != local_digest:
            return False
    return True


def _tree(api: Any, repo_id: str, revision: str) -> list[Any]:
    return list(api.list_repo_tree(repo_id, recursive=True, revision=revision, repo_type="dataset"))


def run(
    params: Params, teacher: str, folder: str | Path, receipt: str | Path, *, api: Any = None
) -> dict[str, Any]:
    pick(params.teachers, teacher, "teacher")
    pub = params.publish
    repo_id = params.published_repo_id(teacher)
    if not pub.enabled or not repo_id:
        raise ConfigError(
            "publish is off: set publish.enabled: true and publish.repo_id: org/name in params (and log in with "
            "`hf auth login` or export HF_TOKEN), then run `compress-distill plan`"
        )
    folder = Path(folder)
    if not (folder / "README.md").exists():
        raise FileNotFoundError(
            f"{folder}/README.md not found: build the folder first (dvc repro build@{teacher})"
        )
    rows = folder_rows(folder)
    local = local_files(folder)
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi()

    with hub_errors(f"publishing {folder} to the Hub dataset {repo_id}", HUB_FIX):
        repo_url = api.create_repo(repo_id, repo_type="dataset", private=pub.private, exist_ok=True)
        dataset_url = str(repo_url).rstrip("/")
        refs = api.list_repo_refs(repo_id, repo_type="dataset")
        tags = {t.name: t.target_commit for t in refs.tags}
        head = next((b.target_commit for b in refs.branches if b.name == MAIN), None)
        if pub.tag and pub.tag in tags:
            if not same_files(local, _tree(api, repo_id, tags[pub.tag])):
                raise ConfigError(
                    f"tag {pub.tag!r} already exists on {repo_id} (commit {tags[pub.tag]}) for different data "
                    f"than {folder}; tags are immutable versions -- set a new publish.tag"
                )
            oid, created = tags[pub.tag], False
        elif head is not None and same_files(local, _tree(api, repo_id, head)):
            oid, created = head, False  # unchanged data: no empty commit
        else:
            commit = api.upload_folder(
                repo_id=repo_id,
                repo_type="dataset",
                folder_path=str(folder),
                commit_message=f"compress-distill build@{teacher}" + (f" ({pub.tag})" if pub.tag else ""),
                delete_patterns=STALE_PATTERNS,
            )
            oid, created = commit.oid, True
        tag_url = None
        if pub.tag:
            if pub.tag not in tags:
                api.create_tag(
                    repo_id,
                    tag=pub.tag,
                    revision=oid,
                    repo_type="dataset",
                    tag_message=f"compress-distill traces of teacher {teacher}",
                )
            tag_url = f"{dataset_url}/tree/{pub.tag}"
    total = sum(rows.values())
    result = {
        "rows_in": total,
        "rows_out": total,
        "rejects": {},
        "configs": rows,
        "teacher": teacher,
        "repo_id": repo_id,
        "private": pub.private,
        "commit": oid,
        "commit_url": f"{dataset_url}/commit/{oid}",
        "new_commit": created,
        "dataset_url": dataset_url,
        "tag": pub.tag,
        "tag_url": tag_url,
        "revision": pub.tag or oid,
    }
    write_metrics(receipt, result)
    log.info("published %s rows of %s to %s at %s (new commit: %s)", total, teacher, repo_id, oid, created)
    return result


def main(
    teacher: Annotated[str, typer.Option(help="teacher id whose folder is published")],
    folder: Annotated[Path, typer.Option("--hub-dir", help="built dataset folder (data/hub/T)")],
    receipt: Annotated[
        Path, typer.Option("--metrics", help="metrics JSON, the receipt: commit id and URLs (no token)")
    ],
    params: Annotated[Path, typer.Option(help="params file")] = Path("params.yaml"),
) -> None:
    """Publish the built dataset folder to the Hugging Face Hub under publish.tag (opt-in)."""
    r = run(load_params(params), teacher, folder, receipt)
    typer.echo(
        f"publish@{teacher}: {r['dataset_url']} commit {r['commit']}"
        + (f" tag {r['tag']}" if r["tag"] else "")
    )
