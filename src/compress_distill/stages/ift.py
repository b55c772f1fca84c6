"""ift@T: source ``ift`` -- the same teacher answering the same questions without reasoning (beyond the paper).

The companion question of arXiv 2509.22193: does distilling reasoning into a small student beat instruction
tuning a larger one at equal compute?  The instruction-tuning rows come from the same teacher on the same
questions (those of its ``raw`` traces, so every source of a teacher covers one question set), asked with
``ift.prompt`` (no think instruction) and ``ift.chat_template_kwargs[T]`` merged over the teacher's own
(``enable_thinking: false`` for Qwen3.5, ``reasoning_effort: low`` for gpt-oss, whose reasoning is dropped).
Rejection sampling, grading and rejects are ``generate``'s (``generate.sample`` in mode ``ift``):
``generate.rounds`` rounds, the answer read from the final response by the extraction cascade, one attempt
per pending question per round; an accepted row has an empty ``reasoning`` and the teacher's reply as
``response``.  ``rows_in`` counts the questions of the raw traces.

Outputs: ``data/traces/T/ift.parquet`` (+ ``ift.rejects.parquet``), every attempt in
``data/traces/T/ift.attempts.parquet``, metrics as ``generate``'s.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from compress_distill.config import ConfigError, Params, load_params, pick
from compress_distill.names import IFT
from compress_distill.schema import TRACES, read_table
from compress_distill.stages.generate import Mode, sample


def mode(params: Params, teacher: str) -> Mode:
    """Mode ``ift`` of teacher ``teacher``: the ift prompt and sampling, the teacher's engine with its
    reasoning switched off by ``ift.chat_template_kwargs[teacher]``."""
    if params.ift is None:
        raise ConfigError(
            "params have no `ift` section; add ift: {} (prompt prompts/ift.md) to build source ift"
        )
    tcfg = pick(params.teachers, teacher, "teacher")
    kwargs = {**tcfg.chat_template_kwargs, **params.ift.chat_template_kwargs.get(teacher, {})}
    engine = tcfg.model_copy(update={"chat_template_kwargs": kwargs})
    return Mode(
        stage="ift",
        source=IFT,
        attempts=f"{IFT}.attempts.parquet",
        prompt=params.ift.prompt,
        sampling=params.ift.sampling,
        engine=engine,
        needs_reasoning=False,
        untagged=params.generate.untagged,
    )


def run(
    params: Params,
    teacher: str,
    questions: str | Path,
    raw: str | Path,
    out_dir: str | Path,
    metrics: str | Path,
    *,
    backend: Any = None,
    cache_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Write ``out_dir/ift.parquet`` (+ rejects), ``out_dir/ift.attempts.parquet`` and metrics."""
    ask = mode(params, teacher)
    only = set(read_table(raw, TRACES, columns=["question_id"]).column("question_id").to_pylist())
    return sample(
        params, teacher, ask, questions, out_dir, metrics, only=only, backend=backend, cache_dir=cache_dir
    )


def main(
    teacher: Annotated[str, typer.Option(help="teacher id (a key of `teachers` in params)")],
    raw: Annotated[Path, typer.Option(help="the teacher's raw traces: their questions are asked")],
    out_dir: Annotated[Path, typer.Option(help="writes ift.parquet and ift.attempts.parquet here")],
    metrics: Annotated[Path, typer.Option(help="metrics JSON")],
    params: Annotated[Path, typer.Option(help="params file")] = Path("params.yaml"),
    questions: Annotated[Path, typer.Option(help="questions table")] = Path("data/questions/train.parquet"),
) -> None:
    """Answers without reasoning from the same teacher on the same questions (source ift)."""
    r = run(load_params(params), teacher, questions, raw, out_dir, metrics)
    typer.echo(
        f"ift@{teacher}: {r['rows_out']}/{r['rows_in']} questions answered in {r['rounds_run']} round(s); "
        f"rejects {r['rejects']}"
    )
