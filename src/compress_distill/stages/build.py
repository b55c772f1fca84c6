"""build@T: the Hub-ready dataset folder ``data/hub/T`` -- one config per source, sharded Parquet, a card.

Layout (what ``datasets.load_dataset(folder_or_repo, config)`` reads, offline or from the Hub)::

    data/hub/T/README.md                                   dataset card: YAML configs + dataset_info, stats
    data/hub/T/compression_ratio.png                       figure referenced from the card
    data/hub/T/<config>/train-00000-of-0000N.parquet       build.shard_rows rows per shard

Configs: ``raw``, ``compressed-<C>`` for every compressor in params (the judge's columns joined on, prefixed
``judge_``), and ``truncated`` / ``answer-only`` / ``compressed-verified`` / ``ift`` when their files exist.  Every config also carries the
train-ready ``messages`` / ``prompt`` / ``completion`` columns (CHAT_COLUMNS).  A source with no rows stops the
build with its cause (``datasets`` cannot load an empty split, so such a config could never be used).  Everything is streamed batch by
batch (Arrow, never the corpus as Python objects); the judge join is vectorised (``pc.index_in`` + ``take``).
The folder is assembled in a staging area outside every DVC-tracked path and swapped in whole with the
metrics (``staging.Staging``), so a killed build leaves the previous folder intact and no stray file in
``data/hub``, and a finished one never holds stale shards.  A repeated id within a source is a
``duplicate_id`` reject (``data/hub/T.rejects.parquet``, beside the folder): the first row is published.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import typer

from compress_distill.config import ConfigError, Params, load_params, pick
from compress_distill.errors import StageError
from compress_distill.names import IFT, VERIFIED, compressed_source, compressor_of
from compress_distill.reasoning import conversation
from compress_distill.rejects import Ledger
from compress_distill.schema import (
    ATTEMPTS,
    JUDGEMENTS,
    QUESTIONS,
    ROW_GROUP_ROWS,
    TRACES,
    count_rows,
    first_per_id,
    iter_batches,
    read_table,
    rejects_path,
)
from compress_distill.staging import Staging

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
# train-ready columns, rendered by reasoning.conversation exactly as the project's trainer renders its targets:
# `messages` (user, assistant) for Axolotl's chat_template type and TRL; `prompt` / `completion` (the same two
# turns, split) so TRL's SFTTrainer trains on the assistant turn only with no user code
TURNS = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
CHAT_COLUMNS = pa.schema([("messages", TURNS), ("prompt", TURNS), ("completion", TURNS)])
JUDGED_SCHEMA = pa.schema(
    [
        *TRACES,
        *(JUDGEMENTS.field(src).with_name(dst) for src, dst in JUDGE_COLUMNS.items()),
        *CHAT_COLUMNS,
    ]
)
PLAIN_SCHEMA = pa.schema([*TRACES, *CHAT_COLUMNS])
# optional configs: every teacher attempt as generate logged it, correct or not (build.attempts), and the
# evaluation split's questions (build.eval_questions)
ATTEMPTS_CONFIG = "attempts"
EVAL_CONFIG = "eval-questions"
EXTRA_SCHEMAS = {ATTEMPTS_CONFIG: ATTEMPTS, EVAL_CONFIG: QUESTIONS}


@dataclass
class Source:
    config: str
    path: Path
    judgements: Path | None = None

    @property
    def schema(self) -> pa.Schema:
        if self.config in EXTRA_SCHEMAS:
            return EXTRA_SCHEMAS[self.config]
        return JUDGED_SCHEMA if self.judgements else PLAIN_SCHEMA


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
    example: dict[str, Any] | None = None  # the first row, shown on the card
    judged_rows: int | None = (
        None  # rows with a readable judge verdict; None for a config the judge never saw
    )

    def add_extra(self, table: pa.Table) -> None:
        """An optional config (EXTRA_SCHEMAS): per dataset ``n`` and ``correct`` (attempts; 0 for questions)."""
        self.rows += table.num_rows
        self.num_bytes += table.nbytes
        if "dataset" in table.column_names:
            datasets = table.column("dataset")
        else:  # attempts: the dataset is the question_id's prefix
            datasets = pc.list_element(pc.split_pattern(table.column("question_id"), "/"), 0)
        correct = (
            pc.fill_null(table.column("correct"), False)
            if "correct" in table.column_names
            else pa.array([False] * table.num_rows)
        )
        t = pa.table({"dataset": datasets, "correct": correct})
        agg = t.group_by("dataset").aggregate([("correct", "count"), ("correct", "sum")])
        for row in agg.to_pylist():
            block = self.datasets.setdefault(row["dataset"], {"n": 0.0, "correct": 0.0})
            block["n"] += row["correct_count"]
            block["correct"] += row["correct_sum"] or 0

    def add(self, table: pa.Table, judged: bool) -> None:
        if self.example is None and table.num_rows:
            self.example = table.slice(0, 1).to_pylist()[0]
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
            self.judged_rows = (self.judged_rows or 0) + int(pc.sum(ok.cast(pa.int64())).as_py() or 0)
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
        out: dict[str, dict[str, float]] = {}
        for name, b in [*blocks.items(), ("overall", total)]:
            n = b.get("n", 0.0)
            row: dict[str, float] = {"n": int(n)}  # counts stay ints (the card prints them so)
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


def sources(
    params: Params, teacher: str, traces_dir: Path, judgements_dir: Path, eval_questions: Path | None = None
) -> list[Source]:
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
                compressed_source(c),
                need(traces_dir / f"{compressed_source(c)}.parquet", f"compress@{teacher}-{c}"),
                judged if judged.exists() else None,
            )
        )
    for name in ("truncated", "answer-only", compressed_source(VERIFIED), IFT):
        if (traces_dir / f"{name}.parquet").exists():
            out.append(Source(name, traces_dir / f"{name}.parquet"))
    if params.build.attempts:
        out.append(Source(ATTEMPTS_CONFIG, need(traces_dir / "attempts.parquet", f"generate@{teacher}")))
    if params.build.eval_questions:
        if eval_questions is None:
            raise ConfigError(
                "build.eval_questions is true but build got no --eval-questions file; pass "
                "data/questions/eval.parquet (dvc.yaml does)"
            )
        out.append(Source(EVAL_CONFIG, need(Path(eval_questions), "prepare")))
    return out


def _judge_lookup(path: Path) -> tuple[pa.Array, pa.Table]:
    """(ids, judge columns renamed with the ``judge_`` prefix) of a judgements table."""
    table = read_table(path, JUDGEMENTS)
    cols = table.select(list(JUDGE_COLUMNS)).rename_columns(list(JUDGE_COLUMNS.values()))
    return table.column("id").combine_chunks(), cols


def chat_columns(batch: pa.Table) -> dict[str, pa.Array]:
    """``messages``, ``prompt`` and ``completion`` of every row (see CHAT_COLUMNS)."""
    turns = [
        conversation(q or "", r or "", f or "")
        for q, r, f in zip(
            *(batch.column(c).to_pylist() for c in ("question", "reasoning", "response")), strict=True
        )
    ]
    return {
        "messages": pa.array(turns, TURNS),
        "prompt": pa.array([t[:1] for t in turns], TURNS),
        "completion": pa.array([t[1:] for t in turns], TURNS),
    }


def _batches(src: Source) -> Any:
    """Rows of one config, judge columns joined (null where the judge has no row for an id), chat columns
    appended."""
    lookup = _judge_lookup(src.judgements) if src.judgements else None
    for batch in iter_batches(src.path, TRACES, batch_size=BATCH_ROWS):
        if lookup is not None:
            ids, judged = lookup
            pos = pc.index_in(batch.column("id"), value_set=ids)
            extra = judged.take(pos)
            for name in extra.column_names:
                batch = batch.append_column(name, extra.column(name))
        for name, column in chat_columns(batch).items():
            batch = batch.append_column(name, column)
        yield batch


def first_rows(src: Source, ledger: Ledger) -> list[bool]:
    """Per row of ``src``: True for the first row of its id; repeats are ``duplicate_id`` rejects (a
    published config never holds two rows of one id)."""
    ids = read_table(src.path, TRACES, columns=["id"]).column("id").to_pylist()
    keep = first_per_id(ids, set())
    ledger.seen(len(ids))
    for rid, first in zip(ids, keep, strict=True):
        if not first:
            ledger.reject("duplicate_id", id=rid or "", detail=f"{src.config}: repeated id; first row kept")
    return keep


def write_config(src: Source, out_dir: Path, shard_rows: int, ledger: Ledger) -> ConfigStats:
    """Stream one source into ``out_dir/<config>/train-0000k-of-0000n.parquet`` shards."""
    stats = ConfigStats()
    extra = src.config in EXTRA_SCHEMAS
    # attempts repeat their question_id by design (one row per attempt), questions are prepare's (unique by
    # construction): nothing to de-duplicate
    keep = [True] * count_rows(src.path) if extra else first_rows(src, ledger)
    if extra:
        ledger.seen(len(keep))
    total = sum(keep)
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
    shard, in_shard, offset = 0, 0, 0
    writer = pq.ParquetWriter(paths[0], src.schema, compression="zstd")
    try:
        batches = iter_batches(src.path, src.schema, batch_size=BATCH_ROWS) if extra else _batches(src)
        for batch in batches:
            mask, offset = keep[offset : offset + batch.num_rows], offset + batch.num_rows
            batch = batch if all(mask) else batch.filter(pa.array(mask, pa.bool_()))
            if extra:
                stats.add_extra(batch)
            else:
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
    ledger.kept(stats.rows)
    return stats


def run(
    params: Params,
    teacher: str,
    traces_dir: str | Path,
    judgements_dir: str | Path,
    out_dir: str | Path,
    metrics: str | Path,
    eval_questions: str | Path | None = None,
    prepare_metrics: str | Path | None = None,
) -> dict[str, Any]:
    """``prepare_metrics`` (metrics/prepare.json) gives the card the Hub commit each benchmark was read at."""
    from compress_distill.card import render_card, write_figure

    pick(params.teachers, teacher, "teacher")
    traces_dir, judgements_dir, out_dir = Path(traces_dir), Path(judgements_dir), Path(out_dir)
    srcs = sources(
        params, teacher, traces_dir, judgements_dir, Path(eval_questions) if eval_questions else None
    )
    ledger = Ledger("build")
    staging = Staging()
    tmp = staging.folder(out_dir)  # staged outside data/hub, swapped in whole on commit
    built: dict[str, ConfigStats] = {}
    schemas: dict[str, pa.Schema] = {}
    for src in srcs:
        built[src.config] = write_config(src, tmp, params.build.shard_rows, ledger)
        schemas[src.config] = src.schema
        log.info("build@%s: %s -> %d rows", teacher, src.config, built[src.config].rows)
    write_figure(
        tmp / FIGURE,
        {
            c: np.concatenate(s.ratios) if s.ratios else np.array([])
            for c, s in built.items()
            if compressor_of(c) is not None or c == "truncated"
        },
    )
    (tmp / "README.md").write_text(
        render_card(
            params,
            teacher,
            built,
            schemas,
            FIGURE,
            prepare_metrics=Path(prepare_metrics) if prepare_metrics else None,
        ),
        encoding="utf-8",
    )
    ledger.write_rejects(staging, out_dir)  # data/hub/T.rejects.parquet: beside the folder, never published

    result = {
        **ledger.as_dict(),
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
    staging.metrics(metrics, result)
    staging.commit()  # folder (one RENAME_EXCHANGE), rejects, then metrics
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
    eval_questions: Annotated[
        Path | None,
        typer.Option(help="data/questions/eval.parquet (config eval-questions, build.eval_questions)"),
    ] = None,
    prepare_metrics: Annotated[
        Path | None,
        typer.Option(help="metrics/prepare.json: the benchmark commits the card quotes as provenance"),
    ] = None,
) -> None:
    """Build the Hub-ready dataset folder: one config per source, Parquet shards, dataset card."""
    r = run(
        load_params(params),
        teacher,
        traces_dir,
        judgements_dir,
        out_dir,
        metrics,
        eval_questions,
        prepare_metrics,
    )
    typer.echo(f"build@{teacher}: " + ", ".join(f"{c} {v['rows']} rows" for c, v in r["configs"].items()))
