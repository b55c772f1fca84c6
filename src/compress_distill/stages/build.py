"""build@T: the Hub-ready dataset folder ``data/hub/T`` -- one config per source, sharded Parquet, a card.

Layout (what ``datasets.load_dataset(folder_or_repo, config)`` reads, offline or from the Hub)::

    data/hub/T/README.md                                   dataset card: YAML configs + dataset_info, stats
    data/hub/T/compression_ratio.png                       figure referenced from the card
    data/hub/T/<config>/train-00000-of-0000N.parquet       build.shard_rows rows per shard

Configs: ``raw``, ``compressed-<C>`` for every compressor in params (the judge's columns joined on, prefixed
``judge_``), and ``truncated`` / ``answer-only`` when their files exist.  A source with no rows stops the
build with its cause (``datasets`` cannot load an empty split, so such a config could never be used).  Everything is streamed batch by
batch (Arrow, never the corpus as Python objects); the judge join is vectorised (``pc.index_in`` + ``take``).
The folder is assembled beside the destination and swapped in at the end, so a killed build leaves the
previous folder intact and a finished one never holds stale shards.
"""

from __future__ import annotations

import logging
import math
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import typer

from compress_distill.config import Params, load_params
from compress_distill.metrics import write_metrics
from compress_distill.schema import JUDGEMENTS, TRACES, iter_batches, read_table, umask_mode
from compress_distill.stages.traces_common import (
    ROW_GROUP_ROWS,
    StageError,
    count_rows,
    pick,
    rejects_path,
    swap_dir,
)

log = logging.getLogger(__name__)

BATCH_ROWS = 8_192
SPLIT = "train"
FIGURE = "compression_ratio.png"
# judgement columns carried onto compressed configs; `judge_model` already has the prefix
JUDGE_COLUMNS = {
    name: (name if name.startswith("judge_") else f"judge_{name}")
    for name in JUDGEMENTS.names
    if name not in ("id", "compressor")
}
JUDGED_SCHEMA = pa.schema(
    [*TRACES, *(JUDGEMENTS.field(src).with_name(dst) for src, dst in JUDGE_COLUMNS.items())]
)


@dataclass
class Source:
    config: str
    path: Path
    judgements: Path | None = None

    @property
    def schema(self) -> pa.Schema:
        return JUDGED_SCHEMA if self.judgements else TRACES


@dataclass
class ConfigStats:
    """What the card and metrics report about one config, accumulated batch by batch."""

    rows: int = 0
    shards: int = 0
    num_bytes: int = 0  # Arrow in-memory bytes (dataset_info num_bytes / dataset_size)
    download_size: int = 0  # Parquet bytes on disk
    datasets: dict[str, dict[str, float]] = field(default_factory=dict)
    ratios: list[np.ndarray] = field(default_factory=list)
    prompt_hashes: set[str] = field(default_factory=set)
    models: set[str] = field(default_factory=set)

    def add(self, table: pa.Table, judged: bool) -> None:
        self.rows += table.num_rows
        self.num_bytes += table.nbytes
        self.ratios.append(table.column("compression_ratio").to_numpy(zero_copy_only=False))
        self.prompt_hashes.update(h for h in pc.unique(table.column("prompt_hash")).to_pylist() if h)
        for col in ("teacher_model", "compressor_model"):
            self.models.update(m for m in pc.unique(table.column(col)).to_pylist() if m)
        cols = {
            "n": ("id", "count"),
            "chars": ("reasoning_chars", "sum"),
            "tokens": ("reasoning_tokens", "sum"),
            "ratio": ("compression_ratio", "sum"),
        }
        t = table.select(["dataset", "id", "reasoning_chars", "reasoning_tokens", "compression_ratio"])
        if judged:
            ok = pc.equal(table.column("judge_parse_status"), "ok")
            t = t.append_column("judged", ok.cast(pa.int64()))
            t = t.append_column(
                "faith", pc.if_else(ok, table.column("judge_faithfulness").cast(pa.int64()), 0)
            )
            t = t.append_column(
                "faithful", pc.and_(ok, pc.equal(table.column("judge_verdict"), "faithful")).cast(pa.int64())
            )
            t = t.append_column(
                "aligned", pc.and_(ok, table.column("judge_answer_alignment")).cast(pa.int64())
            )
            cols |= {k: (k, "sum") for k in ("judged", "faith", "faithful", "aligned")}
        agg = t.group_by("dataset").aggregate(list(cols.values()))
        for row in agg.to_pylist():
            block = self.datasets.setdefault(row["dataset"], dict.fromkeys(cols, 0.0))
            for key, (col, fn) in cols.items():
                block[key] += row[f"{col}_{fn}"] or 0

    def table(self) -> dict[str, dict[str, float]]:
        """Per dataset (and overall): n, mean chars/tokens/ratio, judge N, mean faithfulness, % faithful/aligned."""
        blocks = dict(sorted(self.datasets.items()))
        total: dict[str, float] = {}
        for b in blocks.values():
            for k, v in b.items():
                total[k] = total.get(k, 0.0) + v
        out = {}
        for name, b in [*blocks.items(), ("overall", total)]:
            n = b.get("n", 0.0)
            row = {"n": int(n)}
            if n:
                row |= {f"mean_{k}": b[k] / n for k in ("chars", "tokens", "ratio")}
            judged = b.get("judged")
            if judged is not None:
                row["judged"] = int(judged)
                if judged:
                    row |= {
                        "mean_faithfulness": b["faith"] / judged,
                        "pct_faithful": 100 * b["faithful"] / judged,
                        "pct_aligned": 100 * b["aligned"] / judged,
                    }
            out[name] = row
        return out


def sources(params: Params, teacher: str, traces_dir: Path, judgements_dir: Path) -> list[Source]:
    """The configs to build, in card order; raw and every compressed config are required."""

    def need(path: Path, stage: str) -> Path:
        if not path.exists():
            raise FileNotFoundError(
                f"{path} is missing; run `dvc repro {stage}` first (or compress-distill {stage.split('@')[0]})"
            )
        return path

    out = [Source("raw", need(traces_dir / "raw.parquet", f"generate@{teacher}"))]
    for c in params.compressors:
        judged = judgements_dir / f"{c}.parquet"
        out.append(
            Source(
                f"compressed-{c}",
                need(traces_dir / f"compressed-{c}.parquet", f"compress@{teacher}-{c}"),
                judged if judged.exists() else None,
            )
        )
    for name in ("truncated", "answer-only"):
        if (traces_dir / f"{name}.parquet").exists():
            out.append(Source(name, traces_dir / f"{name}.parquet"))
    return out


def _judge_lookup(path: Path) -> tuple[pa.Array, pa.Table]:
    """(ids, judge columns renamed with the ``judge_`` prefix) of a judgements table."""
    table = read_table(path, JUDGEMENTS)
    cols = table.select(list(JUDGE_COLUMNS)).rename_columns(list(JUDGE_COLUMNS.values()))
    return table.column("id").combine_chunks(), cols


def _batches(src: Source) -> Any:
    """Rows of one config, judge columns joined (null where the judge has no row for an id)."""
    lookup = _judge_lookup(src.judgements) if src.judgements else None
    for batch in iter_batches(src.path, TRACES, batch_size=BATCH_ROWS):
        if lookup is not None:
            ids, judged = lookup
            pos = pc.index_in(batch.column("id"), value_set=ids)
            extra = judged.take(pos)
            for name in extra.column_names:
                batch = batch.append_column(name, extra.column(name))
        yield batch


def write_config(src: Source, out_dir: Path, shard_rows: int) -> ConfigStats:
    """Stream one source into ``out_dir/<config>/train-0000k-of-0000n.parquet`` shards."""
    stats = ConfigStats()
    total = count_rows(src.path)
    if total == 0:
        # `datasets` cannot load a zero-row split ("Instruction 'train' corresponds to no data"), so a card
        # announcing this config would promise something unloadable: stop and point at the cause instead.
        raise StageError(
            f"{src.path} has no rows, so config {src.config!r} cannot be built (datasets cannot load an empty "
            f"split); see the rejects in the metrics of the stage that wrote it and "
            f"{rejects_path(src.path).name} beside it"
        )
    n_shards = max(1, math.ceil(total / shard_rows))
    folder = out_dir / src.config
    folder.mkdir(parents=True)
    paths = [folder / f"{SPLIT}-{k:05d}-of-{n_shards:05d}.parquet" for k in range(n_shards)]
    shard, in_shard = 0, 0
    writer = pq.ParquetWriter(paths[0], src.schema, compression="zstd")
    try:
        for batch in _batches(src):
            stats.add(batch, judged=src.judgements is not None)
            start = 0
            while start < batch.num_rows:
                if in_shard == shard_rows:
                    writer.close()
                    shard, in_shard = shard + 1, 0
                    writer = pq.ParquetWriter(paths[shard], src.schema, compression="zstd")
                take = min(shard_rows - in_shard, batch.num_rows - start)
                writer.write_table(batch.slice(start, take), row_group_size=ROW_GROUP_ROWS)
                start += take
                in_shard += take
    finally:
        writer.close()
    if stats.rows != total or shard != n_shards - 1:
        raise RuntimeError(
            f"{src.path}: wrote {stats.rows} rows in {shard + 1} shards, expected {total} in {n_shards}"
        )
    stats.shards = n_shards
    stats.download_size = sum(p.stat().st_size for p in paths)
    return stats


def run(
    params: Params,
    teacher: str,
    traces_dir: str | Path,
    judgements_dir: str | Path,
    out_dir: str | Path,
    metrics: str | Path,
) -> dict[str, Any]:
    from compress_distill.stages.card import render_card, write_figure

    pick(params.teachers, teacher, "teacher")
    traces_dir, judgements_dir, out_dir = Path(traces_dir), Path(judgements_dir), Path(out_dir)
    srcs = sources(params, teacher, traces_dir, judgements_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = umask_mode(tempfile.mkdtemp(prefix=f".{out_dir.name}.build-", dir=out_dir.parent))
    try:
        built: dict[str, ConfigStats] = {}
        schemas: dict[str, pa.Schema] = {}
        for src in srcs:
            built[src.config] = write_config(src, tmp, params.build.shard_rows)
            schemas[src.config] = src.schema
            log.info("build@%s: %s -> %d rows", teacher, src.config, built[src.config].rows)
        write_figure(
            tmp / FIGURE,
            {
                c: np.concatenate(s.ratios) if s.ratios else np.array([])
                for c, s in built.items()
                if c.startswith("compressed-") or c == "truncated"
            },
        )
        (tmp / "README.md").write_text(render_card(params, teacher, built, schemas, FIGURE), encoding="utf-8")
        swap_dir(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # only left behind when something above failed

    rows = sum(s.rows for s in built.values())
    result = {
        "rows_in": rows,
        "rows_out": rows,
        "rejects": {},
        "configs": {
            c: {
                "rows": s.rows,
                "shards": s.shards,
                "num_bytes": s.num_bytes,
                "download_size": s.download_size,
            }
            for c, s in built.items()
        },
    }
    write_metrics(metrics, result)
    return result


def main(
    teacher: Annotated[str, typer.Option(help="teacher id")],
    traces_dir: Annotated[
        Path, typer.Option(help="data/traces/T (raw, compressed-*, truncated, answer-only)")
    ],
    judgements_dir: Annotated[Path, typer.Option(help="data/judgements/T (one table per compressor)")],
    out_dir: Annotated[Path, typer.Option(help="Hub-ready dataset folder to write")],
    metrics: Annotated[Path, typer.Option(help="metrics JSON")],
    params: Annotated[Path, typer.Option(help="params file")] = Path("params.yaml"),
) -> None:
    """Build the Hub-ready dataset folder: one config per source, Parquet shards, dataset card."""
    r = run(load_params(params), teacher, traces_dir, judgements_dir, out_dir, metrics)
    typer.echo(f"build@{teacher}: " + ", ".join(f"{c} {v['rows']} rows" for c, v in r["configs"].items()))
