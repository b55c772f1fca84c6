"""``compress-distill``: one subcommand per DVC stage, plus ``plan``, ``profile``, ``grid`` and ``export-gguf``.

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
import yaml

from compress_distill import __version__
from compress_distill.config import ConfigError, load_params
from compress_distill.errors import DEBUG_ENV, guard, redact_logs, set_debug

app = typer.Typer(
    help="Compress-Distill: dataset factory and distillation benchmark for compressed reasoning traces.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    # plain click help: no "<bool>" metavars on flags, no boxes; -h as well as --help
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _plain(doc: str | None) -> str | None:
    """First line of a docstring as help text, without the RST literal markup (````x````) meant for Sphinx."""
    return doc.strip().splitlines()[0].replace("``", "") if doc and doc.strip() else None


def _version(value: bool) -> None:
    if value:
        typer.echo(f"compress-distill {__version__}")
        raise typer.Exit()


# subcommand name -> module under compress_distill.stages (each defines `main`)
STAGES: dict[str, str] = {
    "prepare": "prepare",
    "generate": "generate",
    "compress": "compress",
    "truncate": "truncate",
    "answer-only": "answer_only",
    "judge": "judge",
    "verify": "verify",
    "ift": "ift",
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
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="print the version and exit")
    ] = False,
) -> None:
    set_debug(debug)
    redact_logs()


for _name, _module in STAGES.items():
    _mod = importlib.import_module(f"compress_distill.stages.{_module}")
    app.command(_name, help=_plain(_mod.__doc__))(guard(_mod.main))


@app.command("export-gguf")
@guard
def export_gguf_cmd(
    adapter: Annotated[Path, typer.Option(help="LoRA student folder (models/RUN) holding the PEFT adapter")],
    out: Annotated[Path, typer.Option(help="GGUF adapter file to write (serve with llama.cpp --lora)")],
) -> None:
    """Export a LoRA student to a GGUF LoRA adapter for llama.cpp (llama-server --lora FILE)."""
    from compress_distill.training.gguf_export import main

    main(adapter, out)


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


PROFILES_DIR = Path("configs")


def profiles(configs: Path) -> dict[str, Path]:
    """The shipped profiles: the params files in ``configs``, i.e. YAML with a ``grid`` section (every params
    file has one, the accelerate configs beside them none).  A broken profile still lists; it fails on use."""
    found: dict[str, Path] = {}
    for path in sorted(configs.glob("*.yaml")):
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError:
            found[path.stem] = path  # cannot tell; listed, and load_params says what is wrong on use
            continue
        if isinstance(data, dict) and "grid" in data:
            found[path.stem] = path
    return found


@app.command("profile")
@guard
def profile_cmd(
    name: Annotated[str, typer.Argument(help="profile in configs/: e.g. 'paper'")],
    params: Annotated[Path, typer.Option(help="params file to replace")] = Path("params.yaml"),
    force: Annotated[
        bool, typer.Option("--force", help="replace a params file that matches no profile (local edits)")
    ] = False,
) -> None:
    """Switch params.yaml to a shipped profile (configs/NAME.yaml) and regenerate plan.yaml."""
    from compress_distill.plan import write_plan

    shipped = profiles(PROFILES_DIR)
    if name not in shipped:
        raise ConfigError(f"no profile {PROFILES_DIR / name}.yaml; available: {', '.join(shipped)}")
    src = shipped[name]
    if (
        params.exists()
        and not force
        and all(params.read_bytes() != path.read_bytes() for path in shipped.values())
    ):
        raise ConfigError(
            f"{params} differs from every profile in {PROFILES_DIR}/ (local edits would be lost); "
            f"copy it aside, or pass --force to replace it with {src}"
        )
    p = load_params(src)
    shutil.copyfile(src, params)
    write_plan(p, params.parent / "plan.yaml")
    typer.echo(f"{params} <- {src}; plan.yaml regenerated")


grid_app = typer.Typer(
    help="The pipeline's stale stages as cluster jobs (compress_distill.grid).", no_args_is_help=True
)
app.add_typer(grid_app, name="grid")


@grid_app.command("submit")
@guard
def grid_submit(
    executor: Annotated[
        str, typer.Option(help="slurm (one sbatch job per stage) or local (this machine, GPU slices)")
    ] = "slurm",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="write the job scripts, submit nothing")] = False,
    partition: Annotated[
        str | None, typer.Option(help="SLURM partition (default: topology.partition)")
    ] = None,
    account: Annotated[str | None, typer.Option(help="SLURM account (default: topology.account)")] = None,
    time: Annotated[
        str | None, typer.Option(help="SLURM time limit per job (default: topology.time)")
    ] = None,
    gpus: Annotated[
        int | None, typer.Option(help="local: GPUs to pack jobs onto (default: every GPU nvidia-smi lists)")
    ] = None,
    jobs: Annotated[
        int | None, typer.Option(help="local: jobs without GPUs at a time (default: CPUs)")
    ] = None,
    params: Annotated[Path, typer.Option(help="params file")] = Path("params.yaml"),
) -> None:
    """Submit every stale stage of the DVC graph as one job, dependencies following the DAG."""
    import os

    from compress_distill.grid import (
        STATE_DIR,
        GridError,
        run_local,
        status_lines,
        submit,
        visible_gpus,
    )
    from compress_distill.plan import expand
    from compress_distill.slurm import Slurm

    if executor not in ("slurm", "local"):
        raise GridError(f"unknown executor {executor!r}: use --executor slurm or --executor local")
    p = load_params(params)
    if executor == "local":
        local_gpus = visible_gpus() if gpus is None else gpus
        run_local(Path.cwd(), p, expand(p), local_gpus, jobs or os.cpu_count() or 1)
        lines, done, _ = status_lines(Path.cwd() / STATE_DIR)
        typer.echo("\n".join(lines))
        if not done:  # typer.Exit would pass through the error policy (guard) as a bug
            raise SystemExit(1)
        return
    topo = p.topology
    slurm = Slurm(partition or topo.partition, account or topo.account, time or topo.time)
    sub = submit(Path.cwd(), p, expand(p), slurm, dry_run)
    new = [job for stage, job in sub.jobs.items() if stage not in sub.carried]
    for job in new:
        gres = f" gpu:{job.gpus}" if job.gpus else ""
        typer.echo(f"{job.job_id or '-':>8} {job.stage}{gres}  {job.script}")
    verb = "wrote the scripts of" if dry_run else "submitted"
    kept = f" ({len(sub.carried)} done or queued earlier)" if sub.carried else ""
    typer.echo(
        f"{verb} {len(new)} jobs for commit {sub.commit[:12]}{kept}; `compress-distill grid status` follows them"
    )


@grid_app.command("status")
@guard
def grid_status() -> None:
    """Each job of the last submission: state and log; a failed job with its log tail (exit 1 until all
    completed)."""
    from compress_distill.grid import STATE_DIR, status_lines

    lines, done, _ = status_lines(Path.cwd() / STATE_DIR)
    typer.echo("\n".join(lines))
    if not done:  # typer.Exit would pass through the error policy (guard) as a bug
        raise SystemExit(1)


if __name__ == "__main__":  # pragma: no cover
    app()
