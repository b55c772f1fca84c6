"""``compress-distill``: one subcommand per DVC stage, plus ``plan`` and ``profile``.

Each stage module owns a thin ``main`` (Typer-annotated) over its pure ``run``; this file only wires
them, and applies the error policy of ``compress_distill.errors`` to every command once: an expected
failure ends in one line and exit code 2, a bug in a traceback; ``--debug`` shows tracebacks of both.
Stage modules import heavy libraries (torch, transformers) inside functions, so ``--help`` is fast.
"""

from __future__ import annotations

import importlib
import shutil
from pathlib import Path
from typing import Annotated

import typer

from compress_distill.config import ConfigError, load_params
from compress_distill.errors import DEBUG_ENV, guard, redact_logs, set_debug

app = typer.Typer(
    help="Compress-Distill: dataset factory and distillation benchmark for compressed reasoning traces.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

# subcommand name -> module under compress_distill.stages (each defines `main`)
STAGES: dict[str, str] = {
    "prepare": "prepare",
    "generate": "generate",
    "compress": "compress",
    "truncate": "truncate",
    "answer-only": "answer_only",
    "judge": "judge",
    "verify": "verify",
    "build": "build",
    "publish": "publish",
    "pull": "pull",
    "train": "train",
    "evaluate": "evaluate",
    "evaluate-cap": "evaluate_cap",
    "report": "report",
}


@app.callback()
def _global_options(
    debug: Annotated[
        bool, typer.Option("--debug", envvar=DEBUG_ENV, help="show the traceback of expected errors too")
    ] = False,
) -> None:
    set_debug(debug)
    redact_logs()


for _name, _module in STAGES.items():
    _mod = importlib.import_module(f"compress_distill.stages.{_module}")
    app.command(_name, help=(_mod.__doc__ or "").strip().splitlines()[0] if _mod.__doc__ else None)(
        guard(_mod.main)
    )


@app.command("plan")
@guard
def plan_cmd(
    params: Annotated[Path, typer.Option(help="params file")] = Path("params.yaml"),
    out: Annotated[Path, typer.Option(help="plan file loaded by dvc.yaml")] = Path("plan.yaml"),
) -> None:
    """Expand params into plan.yaml: the stage fan-out and the run grid read by dvc.yaml."""
    from compress_distill.plan import expand, write_plan

    p = load_params(params)
    write_plan(p, out)
    runs = expand(p)["runs"]
    typer.echo(f"wrote {out}: {len(runs)} runs")


@app.command("profile")
@guard
def profile_cmd(
    name: Annotated[str, typer.Argument(help="profile in configs/: e.g. 'paper'")],
    params: Annotated[Path, typer.Option(help="params file to replace")] = Path("params.yaml"),
) -> None:
    """Switch params.yaml to a shipped profile (configs/NAME.yaml) and regenerate plan.yaml."""
    from compress_distill.plan import write_plan

    src = Path("configs") / f"{name}.yaml"
    if not src.exists():
        choices = sorted(p.stem for p in Path("configs").glob("*.yaml"))
        raise ConfigError(f"no profile {src}; available: {', '.join(choices)}")
    p = load_params(src)
    shutil.copyfile(src, params)
    write_plan(p, params.parent / "plan.yaml")
    typer.echo(f"params.yaml <- {src}; plan.yaml regenerated")


if __name__ == "__main__":  # pragma: no cover
    app()
