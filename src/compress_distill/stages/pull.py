"""pull@T (``traces.source: hub``): download a published trace revision into ``data/hub/T`` and verify it.

Training and evaluation then run from published traces with no teacher, compressor or judge at all.  The
revision (a tag such as ``v1``, a branch or a commit) is downloaded with ``snapshot_download`` into the
Hugging Face cache -- content-addressed and resumable, and its snapshot folder holds exactly that revision's
files, named by the resolved commit -- then copied into a fresh staging folder outside the DVC-tracked
paths (``staging.Staging``).  Every config of the card is loaded with ``datasets.load_dataset`` (which checks
each split's row count against the card's ``dataset_info``) and only then is the folder swapped into place,
so a broken or partial revision never replaces a good folder and no file of an earlier revision survives.
The token, if the repo is private, is found by ``huggingface_hub`` itself (``HF_TOKEN`` or the stored
login) and never touched here.
"""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from compress_distill.errors import StageError, hub_errors
from compress_distill.rejects import Ledger
from compress_distill.staging import Staging

log = logging.getLogger(__name__)


def verify(folder: Path) -> dict[str, int]:
    """Rows per config, by loading each config offline from ``folder`` (raises if any config is broken)."""
    import datasets

    if not (folder / "README.md").exists():
        raise FileNotFoundError(
            f"{folder} has no README.md: the revision is not a compress-distill dataset folder"
        )
    configs = datasets.get_dataset_config_names(str(folder))
    rows: dict[str, int] = {}
    # load_dataset materialises an Arrow copy; keep it in a scratch cache deleted right after
    with tempfile.TemporaryDirectory(prefix="pull-verify-") as cache:
        for config in configs:
            ds = datasets.load_dataset(str(folder), config, split="train", cache_dir=cache)
            rows[config] = ds.num_rows
            del ds
    return rows


def run(
    repo_id: str,
    revision: str,
    out_dir: str | Path,
    metrics: str | Path,
    *,
    download: Callable[..., Any] | None = None,
) -> dict[str, Any]:
    if download is None:
        from huggingface_hub import snapshot_download

        download = snapshot_download
    out_dir = Path(out_dir)
    with hub_errors(
        f"downloading revision {revision!r} of the Hub dataset {repo_id}",
        "check traces.repo_ids and traces.revision in params, the network (HF_ENDPOINT, proxies), the login "
        "(`hf auth login` or HF_TOKEN) for a private repo, and that HF_HUB_OFFLINE is unset",
    ):
        snapshot = Path(download(repo_id=repo_id, repo_type="dataset", revision=revision))
    from datasets.exceptions import DatasetsError

    # the `with` commits outputs then metrics on success and discards the staged copy on any failure
    with Staging() as staging:
        folder = staging.folder(out_dir)  # outside data/hub; swapped in whole only after verification
        # the cache's snapshot is symlinks into its blob store: copy the files themselves
        shutil.copytree(snapshot, folder, symlinks=False, dirs_exist_ok=True)
        try:
            rows = verify(folder)
        except DatasetsError as err:
            raise StageError(
                f"revision {revision!r} of {repo_id} does not load ({type(err).__name__}: {err}); the "
                f"destination {out_dir} is unchanged -- publish a fixed revision, or set traces.revision to a "
                "good one"
            ) from None
        ledger = Ledger("pull")  # a published revision is taken whole: every row is kept
        ledger.seen(sum(rows.values()))
        ledger.kept(sum(rows.values()))
        ledger.write_rejects(staging, out_dir)
        result = {
            **ledger.as_dict(),
            "configs": rows,
            "repo_id": repo_id,
            "revision": revision,
            # the HF cache names a snapshot folder by the commit the revision resolved to
            "commit": snapshot.name if re.fullmatch(r"[0-9a-f]{40}", snapshot.name) else None,
        }
        staging.metrics(metrics, result)
    log.info("pulled %s@%s into %s: %s", repo_id, revision, out_dir, rows)
    return result


def main(
    repo_id: Annotated[str, typer.Option(help="Hub dataset repo, org/name")],
    out_dir: Annotated[Path, typer.Option(help="destination folder (data/hub/T)")],
    metrics: Annotated[Path, typer.Option(help="metrics JSON: rows per config")],
    revision: Annotated[str, typer.Option(help="tag, branch or commit to download")] = "main",
) -> None:
    """Download a published trace revision from the Hub into data/hub/T and verify every config loads."""
    r = run(repo_id, revision, out_dir, metrics)
    typer.echo(
        f"pull: {repo_id}@{revision} -> {out_dir}: " + ", ".join(f"{c} {n}" for c, n in r["configs"].items())
    )
