"""Read one split of a benchmark through ``datasets.load_dataset``, from the Hub or from a local mirror.

A mirror is a directory ``<hub_mirror>/<org>/<name>`` laid out exactly like the Hub repo at the pinned
revision (same file names and formats, README.md with YAML ``configs`` where the Hub has one).  The same call
reads either: ``load_dataset`` ignores ``revision`` for a local directory and infers configs and splits from
the card or the file names just as it does for a Hub repo, so the fixtures in tests/fixtures/hub exercise the
code path that a real prepare runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compress_distill.benchmarks.common import BenchmarkError, DatasetSpec

if TYPE_CHECKING:  # datasets costs ~1 s to import; keep `compress-distill --help` fast
    import datasets

BATCH_ROWS = 10_000  # rows converted to Python per Arrow batch: bounded memory on MedMCQA's 183k rows


def repo_path(spec: DatasetSpec, hub_mirror: str | Path | None) -> str:
    """The ``path`` argument of ``load_dataset``: the Hub id, or its folder in the mirror."""
    if spec.hub_id is None:
        raise BenchmarkError(f"dataset {spec.id!r} is generated locally and has no Hub repo")
    if hub_mirror is None:
        return spec.hub_id
    local = Path(hub_mirror) / spec.hub_id
    if not local.is_dir():
        raise BenchmarkError(
            f"dataset {spec.id!r}: prepare.hub_mirror is {str(hub_mirror)!r} but {local} does not exist; "
            f"mirror the Hub repo {spec.hub_id} (revision {spec.revision}) there, or set hub_mirror: null "
            "to read the Hub"
        )
    return str(local)


def load_split(
    spec: DatasetSpec,
    split: str,
    hub_mirror: str | Path | None = None,
    cache_dir: str | Path | None = None,
    revision: str | None = None,
) -> datasets.Dataset:
    """One Hub split, reduced to the columns the converter reads; a missing column is a BenchmarkError.

    ``revision`` is the commit prepare's pre-flight resolved (``sources.resolve``); None reads the branch.
    """
    from datasets import load_dataset

    path = repo_path(spec, hub_mirror)
    revision = revision or spec.revision
    kwargs: dict[str, Any] = {"split": split, "revision": revision}
    if spec.data_files:
        kwargs["data_files"] = {s: spec.data_files.format(split=s) for s in spec.splits}
    else:
        kwargs["name"] = spec.config
    if cache_dir is not None:
        kwargs["cache_dir"] = str(cache_dir)
    where = f"{path} (config {spec.config}, revision {revision}, split {split})"
    try:
        ds = load_dataset(path, **kwargs)
    except Exception as err:
        # Re-raised with what to check; the original stays chained for the traceback.
        hint = (
            "it is gated: request access at https://huggingface.co/datasets/"
            f"{spec.hub_id} and export HF_TOKEN or run `hf auth login`"
            if spec.gated
            else "check network access, the Hub id/revision in benchmarks/registry.py, or prepare.hub_mirror"
        )
        raise BenchmarkError(f"dataset {spec.id!r}: cannot load {where}: {err} -- {hint}") from err
    missing = [c for c in spec.columns if c not in ds.column_names]
    if missing:
        raise BenchmarkError(
            f"dataset {spec.id!r}: {where} has no column(s) {missing}; found {ds.column_names}. The repo's "
            "layout changed or the mirror is wrong: pin an older revision in benchmarks/registry.py or fix "
            "the files"
        )
    return ds.select_columns(list(spec.columns))


def iter_records(ds: datasets.Dataset) -> Iterator[dict[str, Any]]:
    """Rows as plain dicts, one batch at a time, decoded by the dataset's features.

    Decoding matters: a column datasets types ``Json`` (a NaN among MedExpQA's options does that) holds JSON
    text in Arrow, so raw Arrow rows would hand the loaders ``'"e"'`` for the option ``e``.
    """
    for batch in ds.iter(batch_size=BATCH_ROWS):
        columns = list(batch)
        n = len(batch[columns[0]]) if columns else 0
        for i in range(n):
            yield {c: batch[c][i] for c in columns}
