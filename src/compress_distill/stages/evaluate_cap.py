"""evaluate_cap@RUN-capN: run RUN evaluated again at decoding cap N (``evaluate.extra_caps``, beyond the paper).

The paper's 8,192-token cap cuts long answers, and a cut record is never correct, so the cap understates
the sources that reason longest.  This stage is ``evaluate`` with the cap replaced (same student, questions,
grading); its metrics carry ``max_new_tokens`` and, like every eval, ``accuracy_stopped`` (accuracy on the
records that ended on their own) next to ``accuracy`` on all records.  The report's cap-sensitivity table
lists each run at its own cap and at every extra cap.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from compress_distill.config import ConfigError, load_params
from compress_distill.plan import cap_variant
from compress_distill.stages import evaluate


def main(
    run_name: Annotated[str, typer.Option("--run", help="run id from plan.yaml (T-STUDENT-METHOD-SOURCE)")],
    cap: Annotated[int, typer.Option(help="decoding cap in tokens (one of evaluate.extra_caps)")],
    model_dir: Annotated[Path, typer.Option(help="trained student of the run")],
    out: Annotated[Path, typer.Option(help="predictions parquet to write")],
    metrics: Annotated[Path, typer.Option(help="metrics JSON to write")],
    questions: Annotated[Path, typer.Option(help="eval questions parquet")] = Path(
        "data/questions/eval.parquet"
    ),
    params: Annotated[Path, typer.Option(help="params file")] = Path("params.yaml"),
) -> None:
    """Evaluate a run again at an extra decoding cap (evaluate.extra_caps)."""
    p = load_params(params)
    if cap not in p.evaluate.extra_caps:
        raise ConfigError(
            f"--cap {cap} is not in evaluate.extra_caps {p.evaluate.extra_caps}; add it there (the plan makes "
            f"the stage {cap_variant(run_name, cap)} from it)"
        )
    m = evaluate.run(p, run_name, model_dir, questions, out, metrics, cap=cap)
    o = m["overall"]
    typer.echo(
        f"evaluate_cap {cap_variant(run_name, cap)}: accuracy {o['accuracy']}, on records that stopped on "
        f"their own {o['accuracy_stopped']} ({o['n_stopped']}/{o['n']}); wrote {out} and {metrics}"
    )
