"""Fine-tune one student run (LoRA or full) on a source config with assistant-only loss and exact packing.

The run id names teacher, student, method and source (``compress_distill.plan``); its rows come from
``data/hub/<teacher>/<source>/train-*.parquet``.  Targets: the student's chat template with user = question
and assistant = think block + final response; loss on assistant tokens and the end-of-turn token only.
Rows longer than ``train.seq_len`` are dropped or truncated per ``train.overlong`` and counted
(``compress_distill.training.data``).  Outputs: ``--out-dir`` (LoRA adapter or full weights, tokenizer,
``training_config.json`` with ``base_model``), ``--metrics`` (row accounting, trainable tokens, packed
sequences, padding, wall-clock, tokens/s, GPU-hours, final loss, validation loss) and the dvclive loss curve
in ``--live-dir``.  ``train.val_fraction`` of the rows (paper §4: 5%) are held out by id and never trained
on; ``rows_out`` counts them with the trained rows, ``val_rows`` says how many.  A run whose loss or gradient norm
turns non-finite stops with an error and writes neither weights nor metrics.

A killed run resumes from its newest checkpoint (``--checkpoint-dir``, default ``models/.checkpoints/<run>``,
outside the DVC output so ``dvc repro`` does not delete it) and ends with the weights of an uninterrupted run.
Multi-GPU: ``topology.train`` in params gives the run its GPUs and strategy, and ``compress-distill plan``
writes the matching ``accelerate launch ... -m compress_distill.cli train`` into the stage command
(``plan.train_launch``); ``world_size`` and ``global_batch_size`` (micro-batch x grad-accum x ranks) are in the
metrics.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from compress_distill.config import ConfigError, load_params
from compress_distill.flops import model_params, tokens_for_flops, train_flops
from compress_distill.staging import Staging

log = logging.getLogger(__name__)


def default_checkpoint_dir(out_dir: Path) -> Path:
    return out_dir.parent / ".checkpoints" / out_dir.name


def reference_tokens(tokenizer: Any, data_dir: Path, cfg: Any, own: int, source: str) -> int:
    """compute_matched reference: ``train.budget_tokens`` or the trainable tokens of the teacher's raw source
    tokenised for this student, less its validation rows (the same split as every source of the teacher)."""
    from compress_distill.training.data import encode_rows, read_source, split_validation

    if cfg.budget_tokens:
        return int(cfg.budget_tokens)
    if source == "raw":
        return own
    raw_dir = data_dir.parent / "raw"
    if not raw_dir.exists():
        raise ConfigError(
            f"train.budget is compute_matched but the reference source {raw_dir} does not exist; build the raw "
            "source of this teacher or set train.budget_tokens"
        )
    raw = encode_rows(tokenizer, read_source(raw_dir), cfg.seq_len, cfg.overlong)
    return split_validation(raw, cfg.val_fraction, cfg.seed)[0].trainable_tokens


def run(
    params_path: Path,
    run_id: str,
    data_dir: Path,
    out_dir: Path,
    metrics_path: Path,
    live_dir: Path | None = None,
    checkpoint_dir: Path | None = None,
) -> dict[str, Any]:
    """Train run ``run_id`` on ``data_dir``; returns the metrics written to ``metrics_path``."""
    # Idle OpenMP threads sleep instead of spinning.  Read when torch loads, so only effective when this is the
    # first import of torch (the CLI).  On a shared 2-core CPU, spinning threads made every training step
    # 10-25x slower whenever other processes held the cores (measured: 17-32 s vs 1.1-1.5 s per step).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import pyarrow as pa
    from accelerate import PartialState
    from transformers import AutoTokenizer

    from compress_distill.modelhub import resolve_model
    from compress_distill.plan import find_run
    from compress_distill.schema import first_per_id
    from compress_distill.training.data import (
        encode_rows,
        load_chat_template,
        read_source,
        source_shards,
        split_validation,
    )
    from compress_distill.training.trainer import TrainJob, data_fingerprint, train

    # the model folder and the metrics are staged and committed together by the main process at the end, so
    # a failed run leaves the previous model and metrics (and no stray folder inside models/).  PartialState
    # is not asked yet: the trainer's Accelerator must be the first to set up the process group, so the rank
    # comes from the launcher's RANK (torchrun, accelerate): only the main process locks the outputs.
    staging = Staging(lock=os.environ.get("RANK", "0") == "0")

    t0 = time.perf_counter()
    params = load_params(params_path)
    spec = find_run(params, run_id)
    student = params.students[spec.student]
    # grid.seeds: the run's seed replaces train.seed (row order, validation split, initialisation, dropout)
    cfg = params.train if spec.seed is None else params.train.model_copy(update={"seed": spec.seed})
    n_params = model_params(student.model)
    model_path = resolve_model(student.model)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    load_chat_template(tokenizer, student.chat_template)

    source = read_source(data_dir)
    first = first_per_id(source.column("id").to_pylist(), set())
    repeats = first.count(False)  # a pulled revision may repeat an id: its first row is trained on, once
    enc, val = split_validation(
        encode_rows(
            tokenizer,
            source.filter(pa.array(first)) if repeats else source,
            cfg.seq_len,
            cfg.overlong,
            answer_only_think=cfg.answer_only_think,
        ),
        cfg.val_fraction,
        cfg.seed,
    )
    reference = (
        reference_tokens(tokenizer, data_dir, cfg, enc.trainable_tokens, spec.source)
        if cfg.budget == "compute_matched"
        else None
    )
    job = TrainJob(
        run=run_id,
        base_model=student.model,
        model_path=model_path,
        method=spec.method,
        source=spec.source,
        cfg=cfg,
        student=student,
        out_dir=staging.folder(out_dir),  # only the main process writes into it
        checkpoint_dir=checkpoint_dir or default_checkpoint_dir(out_dir),
        live_dir=live_dir,
        teacher=spec.teacher,
        student_id=spec.student,
        reference_tokens=reference,
        data_fingerprint=data_fingerprint(source_shards(data_dir)),
        flops_tokens=(
            tokens_for_flops(n_params, cfg.flops_budget)
            if cfg.budget == "flops" and cfg.flops_budget
            else None
        ),
    )
    stats = train(job, enc, tokenizer, val)
    wall = time.perf_counter() - t0
    accounting = enc.counter.as_dict()
    if repeats:
        accounting["rows_in"] += repeats
        accounting["rejects"] = dict(sorted({**accounting["rejects"], "duplicate_id": repeats}.items()))
    metrics = {
        **accounting,
        "rows_truncated": enc.rows_truncated,
        "trainable_tokens": stats["trainable_tokens"],
        "trained_tokens": stats["trained_tokens"],
        "trained_target_tokens": stats["trained_target_tokens"],
        "reference_tokens": reference or 0,  # 0: budget is epochs of this source
        "packed_sequences": stats["packed_sequences"],
        "padding_fraction": stats["padding_fraction"],
        "bin_slack_fraction": stats["bin_slack_fraction"],
        "steps": stats["steps"],
        "epochs_effective": stats["epochs_effective"],
        "resumed_from_step": stats["resumed_from_step"],
        "wall_clock_s": wall,
        "train_seconds": stats["train_seconds"],
        "tokens_per_s": stats["tokens_per_s"],
        "gpus": stats["gpus"],
        "world_size": stats["world_size"],
        # sequences (packed bins) per optimizer step over all ranks: the paper's 1 x 8 x 4 or 8 GPUs = 32 or 64
        "global_batch_size": cfg.micro_batch_size * cfg.grad_accum * stats["world_size"],
        "gpu_hours": wall / 3600.0 * stats["gpus"],
        "first_loss": stats["first_loss"],
        "final_loss": stats["final_loss"],
        "val_loss": stats["val_loss"],  # null when train.val_fraction is 0 or the source has one row
        "val_rows": stats["val_rows"],  # held out of rows_out (train.val_fraction)
        "trainable_params": stats["trainable_params"],
        # compute-matched comparisons (flops.py): N of the student's config, ~6·N·trained tokens
        "model_params": n_params,
        "train_flops": train_flops(n_params, stats["trained_tokens"]),
        # train.budget flops: the FLOPs every run trains to (0: another budget); train_flops is what this run
        # reached, at most one packed bin above it
        "flops_budget": cfg.flops_budget if cfg.budget == "flops" and cfg.flops_budget else 0.0,
        "seed": cfg.seed,
    }
    if PartialState().is_main_process:
        staging.metrics(metrics_path, metrics)
        staging.commit()  # the model folder (one RENAME_EXCHANGE), then the metrics
    else:
        staging.discard()
    return metrics


def main(
    run_id: Annotated[
        str, typer.Option("--run", help="run id from plan.yaml (teacher-student-method-source)")
    ],
    data: Annotated[
        Path, typer.Option("--data-dir", help="source config folder: data/hub/<teacher>/<source>")
    ],
    out_dir: Annotated[Path, typer.Option(help="model output folder: models/<run>")],
    metrics: Annotated[Path, typer.Option(help="metrics JSON: metrics/train/<run>.json")],
    params: Annotated[Path, typer.Option(help="params file")] = Path("params.yaml"),
    live_dir: Annotated[Path | None, typer.Option(help="dvclive folder for the loss curve")] = None,
    checkpoint_dir: Annotated[
        Path | None, typer.Option(help="resumable checkpoints (default: models/.checkpoints/<run>)")
    ] = None,
) -> None:
    """Fine-tune one student run (LoRA or full) on a source config."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    from accelerate import PartialState

    result = run(params, run_id, data, out_dir, metrics, live_dir, checkpoint_dir)
    if PartialState().is_main_process:
        typer.echo(
            f"{run_id}: {result['steps']} steps, final loss {result['final_loss']:.4f}, "
            f"{result['tokens_per_s']:.0f} tok/s, {result['rows_out']}/{result['rows_in']} rows -> {out_dir}"
        )


if __name__ == "__main__":  # `python -m compress_distill.stages.train` / `accelerate launch -m ...`
    typer.run(main)
