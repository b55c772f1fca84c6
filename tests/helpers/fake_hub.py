"""An in-memory Hugging Face Hub behind ``create_autospec(HfApi)`` and ``create_autospec(snapshot_download)``.

Autospec makes every call fail like the real client would on a wrong name or argument; the side effects keep
repos as commits of ``path -> bytes`` with a ``main`` branch and tags, so publish and pull run against the
state they themselves changed.  The tree listing reports what the Hub reports: LFS files (Parquet, PNG) with
the content's sha256 and the pointer's git id, regular files with the content's git blob id.
"""

from __future__ import annotations

import fnmatch
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest.mock import create_autospec

from huggingface_hub import CommitInfo, GitRefInfo, GitRefs, HfApi, RepoFile, RepoUrl, snapshot_download

LFS = ("*.parquet", "*.png")
ENDPOINT = "https://huggingface.co/datasets"


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(f"blob {len(data)}\0".encode() + data).hexdigest()


@dataclass
class Repo:
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)
    main: str = ""
    tags: dict[str, str] = field(default_factory=dict)

    def commit(self, files: dict[str, bytes], message: str) -> str:
        oid = hashlib.sha1(repr((self.main, message, sorted(files.items()))).encode()).hexdigest()
        self.commits[oid] = dict(files)
        self.main = oid
        return oid


class FakeHub:
    def __init__(self, cache: Path) -> None:
        self.repos: dict[str, Repo] = {}
        self.cache = cache
        self.api = create_autospec(HfApi, instance=True)
        self.api.create_repo.side_effect = self.create_repo
        self.api.upload_folder.side_effect = self.upload_folder
        self.api.list_repo_refs.side_effect = self.list_repo_refs
        self.api.list_repo_tree.side_effect = self.list_repo_tree
        self.api.create_tag.side_effect = self.create_tag
        self.download = create_autospec(snapshot_download, side_effect=self.snapshot)

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        repo = self.repos[repo_id]
        oid = repo.main if revision == "main" else repo.tags.get(revision, revision)
        return repo.commits[oid]

    # ------------------------------------------------------------------ HfApi
    def create_repo(self, repo_id: str, **kwargs: Any) -> RepoUrl:
        if repo_id not in self.repos:
            repo = self.repos[repo_id] = Repo()
            repo.commit({".gitattributes": b"*.parquet filter=lfs\n"}, "initial commit")
        return RepoUrl(f"{ENDPOINT}/{repo_id}")

    def upload_folder(
        self, *, repo_id: str, folder_path: str, commit_message: str, **kwargs: Any
    ) -> CommitInfo:
        repo = self.repos[repo_id]
        root = Path(folder_path)
        new = {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}
        files = {
            path: data
            for path, data in repo.commits[repo.main].items()
            if not any(fnmatch.fnmatch(path, pat) for pat in kwargs.get("delete_patterns") or [])
        }
        oid = repo.commit(files | new, commit_message)
        return CommitInfo(
            commit_url=f"{ENDPOINT}/{repo_id}/commit/{oid}",
            commit_message=commit_message,
            commit_description="",
            oid=oid,
        )

    def list_repo_refs(self, repo_id: str, **kwargs: Any) -> GitRefs:
        repo = self.repos[repo_id]
        return GitRefs(
            branches=[GitRefInfo(name="main", ref="refs/heads/main", target_commit=repo.main)],
            converts=[],
            tags=[GitRefInfo(name=t, ref=f"refs/tags/{t}", target_commit=c) for t, c in repo.tags.items()],
        )

    def list_repo_tree(self, repo_id: str, path_in_repo: str | None = None, **kwargs: Any) -> list[RepoFile]:
        out = []
        for path, data in self.files(repo_id, kwargs.get("revision") or "main").items():
            if any(fnmatch.fnmatch(path, pat) for pat in LFS):
                sha256 = hashlib.sha256(data).hexdigest()
                pointer = (
                    f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {len(data)}\n"
                )
                lfs = {"size": len(data), "oid": sha256, "pointerSize": len(pointer)}
                out.append(RepoFile(path=path, size=len(data), oid=git_blob_id(pointer.encode()), lfs=lfs))
            else:
                out.append(RepoFile(path=path, size=len(data), oid=git_blob_id(data)))
        return out

    def create_tag(self, repo_id: str, *, tag: str, revision: str | None = None, **kwargs: Any) -> None:
        repo = self.repos[repo_id]
        assert tag not in repo.tags, f"tag {tag} exists (the real Hub answers 409)"
        repo.tags[tag] = revision or repo.main

    # ------------------------------------------------------------------ snapshot_download
    def snapshot(self, repo_id: str, **kwargs: Any) -> str:
        """Lay the revision out as the HF cache does (``snapshots/<commit>``) and return that folder."""
        repo = self.repos[repo_id]
        revision = kwargs.get("revision") or "main"
        oid = repo.main if revision == "main" else repo.tags.get(revision, revision)
        snap = self.cache / f"datasets--{repo_id.replace('/', '--')}" / "snapshots" / oid
        for path, data in repo.commits[oid].items():
            (snap / path).parent.mkdir(parents=True, exist_ok=True)
            (snap / path).write_bytes(data)
        return str(snap)
