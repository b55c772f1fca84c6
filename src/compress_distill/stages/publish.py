"""publish@T (opt-in): push the built folder to a Hub dataset repo under a tag; write a receipt.

``create_repo(repo_type="dataset", exist_ok=True)``, then one ``upload_folder`` commit that also deletes
remote shards and figures the new build no longer has (``delete_patterns``: a smaller rebuild must not
leave ``train-00002-of-00003.parquet`` behind), then ``create_tag`` on that commit.  Re-running with the
tag already on the same commit is a no-op; a tag on another commit is an error (tags are versions: bump
``publish.tag``).

Credentials: ``huggingface_hub`` finds the token itself (``HF_TOKEN`` or the stored ``hf auth login``); this
module never reads, prints or stores it, and the receipt holds only ids and URLs.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

import typer

from compress_distill.config import ConfigError, Params, load_params
from compress_distill.errors import hub_errors
from compress_distill.metrics import write_metrics
from compress_distill.stages.traces_common import count_rows, pick

log = logging.getLogger(__name__)

HUB_FIX = (
    "check publish.repo_id in params, the network (HF_ENDPOINT, proxies) and the login (`hf auth login` or "
    "HF_TOKEN with write access)"
)

# remote files owned by the build: anything matching and not re-uploaded by this commit is deleted
STALE_PATTERNS = ["*.parquet", "*.png"]


def folder_rows(folder: Path) -> dict[str, int]:
    """Rows per config directory (from Parquet footers; no data is read)."""
    out: dict[str, int] = {}
    for shard in sorted(folder.glob("*/*.parquet")):
        out[shard.parent.name] = out.get(shard.parent.name, 0) + count_rows(shard)
    return out


def run(
    params: Params, teacher: str, folder: str | Path, receipt: str | Path, *, api: Any = None
) -> dict[str, Any]:
    pick(params.teachers, teacher, "teacher")
    pub = params.publish
    if not pub.enabled or not pub.repo_id:
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
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi()

    with hub_errors(f"publishing {folder} to the Hub dataset {pub.repo_id}", HUB_FIX):
        repo_url = api.create_repo(pub.repo_id, repo_type="dataset", private=pub.private, exist_ok=True)
        commit = api.upload_folder(
            repo_id=pub.repo_id,
            repo_type="dataset",
            folder_path=str(folder),
            commit_message=f"compress-distill build@{teacher}" + (f" ({pub.tag})" if pub.tag else ""),
            delete_patterns=STALE_PATTERNS,
        )
        dataset_url = str(repo_url).rstrip("/")
        tag_url = None
        if pub.tag:
            refs = api.list_repo_refs(pub.repo_id, repo_type="dataset")
            existing = {t.name: t.target_commit for t in refs.tags}
            if pub.tag not in existing:
                api.create_tag(
                    pub.repo_id,
                    tag=pub.tag,
                    revision=commit.oid,
                    repo_type="dataset",
                    tag_message=f"compress-distill traces of teacher {teacher}",
                )
            elif existing[pub.tag] != commit.oid:
                raise ConfigError(
                    f"tag {pub.tag!r} already exists on {pub.repo_id} at commit {existing[pub.tag]}, not at the "
                    f"new commit {commit.oid}; tags are immutable versions -- set a new publish.tag"
                )
            tag_url = f"{dataset_url}/tree/{pub.tag}"
    total = sum(rows.values())
    result = {
        "rows_in": total,
        "rows_out": total,
        "rejects": {},
        "configs": rows,
        "repo_id": pub.repo_id,
        "private": pub.private,
        "commit": commit.oid,
        "commit_url": commit.commit_url,
        "dataset_url": dataset_url,
        "tag": pub.tag,
        "tag_url": tag_url,
        "revision": pub.tag or commit.oid,
    }
    write_metrics(receipt, result)
    log.info("published %s rows of %s to %s at %s", total, teacher, pub.repo_id, commit.oid)
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
