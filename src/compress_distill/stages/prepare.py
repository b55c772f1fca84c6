"""prepare: load the benchmarks of ``prepare.datasets`` into data/questions/{train,eval}.parquet.

Before any row is read, the pre-flight (``benchmarks.sources.resolve``) checks access to gated repos and
turns every source's pin into the commit sha that is then read and recorded under ``sources`` in
metrics/prepare.json.  Order of operations, each step counted in metrics/prepare.json
(rows_in = rows_out + rejects):
1. load and convert every split the registry uses (records that cannot become questions: per-reason rejects);
2. drop repeated ids (``duplicate_id``) and exact-duplicate questions within train and within eval (the
   first occurrence is kept);
3. cap eval at ``max_eval_per_dataset`` per dataset (seeded sample);
4. drop train questions whose normalised text is also an eval question (train/eval overlap: a student
   trained on a trace of an eval question would be scored on something it has seen);
5. cap train at ``max_per_dataset`` per dataset (seeded sample).
Capping after de-duplication gives exactly the cap whenever a dataset has enough distinct questions, and
capping eval before the overlap check removes only train rows that collide with eval rows actually kept.
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import pyarrow.parquet as pq
import typer

from compress_distill.config import Params, load_params
from compress_distill.metrics import RowCounter
from compress_distill.schema import QUESTIONS, REJECTS, first_per_id, to_table
from compress_distill.schema import rejects_path as _rejects_path
from compress_distill.staging import Staging

if TYPE_CHECKING:
    from huggingface_hub import HfApi

Row = dict[str, Any]


def normalise(question: str) -> str:
    """Text identity for the overlap check: Unicode NFKC, case-folded, whitespace collapsed."""
    return " ".join(unicodedata.normalize("NFKC", question).casefold().split())


def _sample_key(seed: int, row_id: str) -> str:
    # Rank rows by a seeded hash of their id: the kept set depends on (seed, ids) only, not on load order,
    # and raising the cap keeps a superset of the rows kept before.
    return hashlib.sha256(f"{seed}:{row_id}".encode()).hexdigest()


def cap_per_dataset(rows: list[Row], cap: int | None, seed: int) -> tuple[list[Row], list[Row]]:
    """Keep at most ``cap`` rows per dataset, chosen by seeded hash; returns (kept, dropped), order kept."""
    if cap is None:
        return rows, []
    by_ds: dict[str, list[Row]] = defaultdict(list)
    for r in rows:
        by_ds[r["dataset"]].append(r)
    chosen = {
        r["id"]
        for group in by_ds.values()
        for r in sorted(group, key=lambda r: _sample_key(seed, r["id"]))[:cap]
    }
    return [r for r in rows if r["id"] in chosen], [r for r in rows if r["id"] not in chosen]


def drop_duplicates(rows: Iterable[Row]) -> tuple[list[Row], list[Row]]:
    """Exact duplicates of the rendered question text (same split); the first occurrence stays."""
    seen: set[str] = set()
    kept: list[Row] = []
    dropped: list[Row] = []
    for r in rows:
        (dropped if r["question"] in seen else kept).append(r)
        seen.add(r["question"])
    return kept, dropped


def drop_overlap(train: list[Row], eval_rows: list[Row]) -> tuple[list[Row], list[Row]]:
    eval_texts = {normalise(r["question"]) for r in eval_rows}
    kept: list[Row] = []
    dropped: list[Row] = []
    for r in train:
        (dropped if normalise(r["question"]) in eval_texts else kept).append(r)
    return kept, dropped


def _revision(resolved: dict[str, Any], hub_id: str | None) -> str | None:
    return resolved[hub_id].load_revision if hub_id in resolved else None


def run(
    params: Params,
    out_dir: str | Path,
    metrics_path: str | Path,
    *,
    cache_dir: str | Path | None = None,
    rejects_path: str | Path | None = None,
    hub_api: Callable[[], HfApi] | None = None,
) -> dict[str, Any]:
    """Build the questions tables; returns the metrics written to ``metrics_path``.

    ``cache_dir`` is the datasets cache (default: ~/.cache/huggingface/datasets); the rejected records
    (schema.REJECTS) go to ``rejects_path`` (default ``<out_dir>.rejects.parquet``, the one naming rule);
    ``hub_api`` makes the Hub client of the pre-flight (default ``sources.hub_api``).
    """
    from compress_distill.benchmarks import registry, sources

    cfg = params.prepare
    # pre-flight: fails in one line (gated, missing, unreachable, pin mismatch) before anything is downloaded
    resolved = sources.resolve(cfg.datasets, cfg.revisions, cfg.hub_mirror, hub_api or sources.hub_api)
    counter = RowCounter()
    rejected: list[Row] = []
    per_ds: dict[str, Counter[str]] = {}
    loaded: list[Row] = []
    for dataset_id in cfg.datasets:
        res = registry.load(
            dataset_id,
            hub_mirror=cfg.hub_mirror,
            cache_dir=cache_dir,
            demo_sizes=(cfg.demo.n_train, cfg.demo.n_eval),
            seed=cfg.seed,
            revision=_revision(resolved, registry.get_spec(dataset_id).hub_id),
        )
        counter.seen(res.rows_in)
        for reason, n in res.rejects.items():
            counter.reject(reason, n)
        rejected += res.rejected
        per_ds[dataset_id] = Counter(rows_in=res.rows_in, rejected=sum(res.rejects.values()))
        loaded += res.rows

    def drop(rows: list[Row], reason: str) -> None:
        counter.reject(reason, len(rows))
        for r in rows:
            per_ds[r["dataset"]]["rejected"] += 1
            rejected.append(
                {"id": r["id"], "stage": "prepare", "reason": reason, "detail": r["question"][:200]}
            )

    first = first_per_id([r["id"] for r in loaded], set())
    drop([r for r, f in zip(loaded, first, strict=True) if not f], "duplicate_id")
    loaded = [r for r, f in zip(loaded, first, strict=True) if f]
    train, dup_train = drop_duplicates(r for r in loaded if r["split"] == "train")
    eval_rows, dup_eval = drop_duplicates(r for r in loaded if r["split"] == "eval")
    drop(dup_train + dup_eval, "duplicate")
    eval_rows, capped_eval = cap_per_dataset(eval_rows, cfg.max_eval_per_dataset, cfg.seed)
    drop(capped_eval, "max_eval_per_dataset")
    train, overlap = drop_overlap(train, eval_rows)
    drop(overlap, "train_eval_overlap")
    for r in overlap:
        per_ds[r["dataset"]]["overlap"] += 1
    train, capped_train = cap_per_dataset(train, cfg.max_per_dataset, cfg.seed)
    drop(capped_train, "max_per_dataset")

    out = Path(out_dir)
    staging = Staging()
    for path, rows, schema in (
        (out / "train.parquet", train, QUESTIONS),
        (out / "eval.parquet", eval_rows, QUESTIONS),
        (Path(rejects_path) if rejects_path is not None else _rejects_path(out), rejected, REJECTS),
    ):
        pq.write_table(to_table(rows, schema), staging.file(path), compression="zstd")
    counter.kept(len(train) + len(eval_rows))

    groups: dict[str, Counter[str]] = defaultdict(Counter)
    for split, rows in (("train", train), ("eval", eval_rows)):
        for r in rows:
            per_ds[r["dataset"]][split] += 1
            groups[r["group"]][split] += 1
    metrics: dict[str, Any] = {
        **counter.as_dict(),
        "train": len(train),
        "eval": len(eval_rows),
        "train_eval_overlap": len(overlap),
        # flat numbers only (DVC drops lists); every key present for every dataset so diffs line up
        "datasets": {
            d: {k: c[k] for k in ("rows_in", "train", "eval", "rejected", "overlap")}
            for d, c in per_ds.items()
        },
        "groups": {g: {k: c[k] for k in ("train", "eval")} for g, c in sorted(groups.items())},
        # the commit each Hub repo was read at, for provenance (the dataset card quotes it)
        "sources": {hub_id: src.as_metrics() for hub_id, src in resolved.items()},
    }
    staging.metrics(metrics_path, metrics)
    staging.commit()  # both tables and the rejects, then the metrics
    return metrics


def main(
    params: Annotated[Path, typer.Option(help="params file")] = Path("params.yaml"),
    out_dir: Annotated[Path, typer.Option(help="directory for train.parquet and eval.parquet")] = Path(
        "data/questions"
    ),
    metrics: Annotated[Path, typer.Option(help="metrics JSON")] = Path("metrics/prepare.json"),
    rejects: Annotated[Path | None, typer.Option(help="optional Parquet of rejected records")] = None,
    check_sources: Annotated[
        bool,
        typer.Option("--check-sources", help="compare each source's pin with its Hub branch head, then exit"),
    ] = False,
    mirror_commands: Annotated[
        Path | None,
        typer.Option(
            help="print the `hf download` commands that fill a mirror folder at the pins, then exit"
        ),
    ] = None,
) -> None:
    """Load the benchmark questions (Hub or mirror) into data/questions/{train,eval}.parquet."""
    from compress_distill.benchmarks import sources

    p = load_params(params)
    if check_sources:
        for check in sources.check_pins(p.prepare.datasets, p.prepare.revisions):
            typer.echo(check.line())
        return
    if mirror_commands is not None:
        for line in sources.mirror_commands(p.prepare.datasets, p.prepare.revisions, mirror_commands):
            typer.echo(line)
        return
    m = run(p, out_dir, metrics, rejects_path=rejects)
    typer.echo(
        f"prepare: {m['train']} train / {m['eval']} eval questions from {len(m['datasets'])} dataset(s); "
        f"rejects {m['rejects']}"
    )
