"""Expand params into the DVC fan-out (``plan.yaml``): stage instances and the run grid.

``dvc.yaml`` cannot compute, so the pure expansion lives here and is written to ``plan.yaml`` (committed,
loaded by ``dvc.yaml`` through ``vars``).  ``compress-distill plan`` rewrites it; ``make demo`` runs that
before ``dvc repro`` and a test keeps the committed file in sync with ``params.yaml``.

The paper's 55-run grid comes from a compact spec plus exclusions (docs/architecture.md §7), never from a hand list.
Each run's item also carries its topology (``gpus``, ``processes``, ``strategy``) and ``launch``, the command
that starts it (``train_launch``): ``dvc.yaml``'s train command begins with ``${item.launch}``, and the
item is a param dep of that run alone, so one run's GPU count re-runs that run only.

Code and prompt dependencies are generated too, so that editing a module or a prompt file marks exactly the
stages that import or read it.  DVC's templating cannot put a list into ``deps`` (``${...}`` must resolve to
a string there: ``dvc/parsing/interpolate.py:validate_value``), so ``write_plan`` also rewrites one block
per stage in ``dvc.yaml``: the lines after the marker comment (``CODE_MARKER``) to the end of that stage's
``deps`` list.  The block lists the stage's data inputs where their number depends on params
(``${item.inputs[i]}``: verify reads one traces and one judgements file per compressor), its prompt files (``${item.prompts[i]}``, resolved per stage
instance from ``plan.yaml``) and the static import closure of ``compress_distill.stages.<stage>`` inside
the package: every ``import``/``from`` anywhere in a module (function-local ones too, relative ones
resolved), the package ``__init__.py`` files on the way, and package data files a module names
(``evaluation/report.html``).  Hand-written deps (data) stay above the marker.
"""

from __future__ import annotations

import ast
import hashlib
import re
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any

import yaml

from compress_distill.config import ConfigError, GridExclusion, Method, Params, TopologyConfig
from compress_distill.names import IFT, VERIFIED, compressed_source, compressor_of


def run_id(teacher: str, student: str, method: str, source: str, seed: int | None = None) -> str:
    """``teacher-student-method-source``, with ``-s<seed>`` when the grid lists more than one seed."""
    base = f"{teacher}-{student}-{method}-{source}"
    return base if seed is None else f"{base}-s{seed}"


def cap_variant(run: str, cap: int) -> str:
    """The key of run ``run`` evaluated at decoding cap ``cap`` (tokens): ``<run>-cap<cap>``."""
    return f"{run}-cap{cap}"


@dataclass(frozen=True)
class Run:
    """One run of the grid: ``student`` fine-tuned with ``method`` on teacher ``teacher``'s ``source`` traces."""

    teacher: str
    student: str
    method: Method
    source: str  # raw | compressed-<C> | truncated | answer-only | compressed-verified | ift
    seed: int | None = None  # grid.seeds' seed, which overrides train.seed; None: train.seed
    seed_in_name: bool = False  # grid.seeds lists more than one seed

    @property
    def id(self) -> str:
        """The run's name in stage names, file names and metrics (``run_id``)."""
        seed = self.seed if self.seed_in_name else None
        return run_id(self.teacher, self.student, self.method, self.source, seed)

    def item(self) -> dict[str, Any]:
        """The run's coordinates in ``plan.yaml`` (its train stage's param dep): ``seed`` only when the grid
        lists seeds, so a grid without seeds plans exactly what it planned before the axis existed."""
        item: dict[str, Any] = {
            "teacher": self.teacher,
            "student": self.student,
            "method": self.method,
            "source": self.source,
        }
        return item if self.seed is None else {**item, "seed": self.seed}


def _excluded(run: Run, rules: list[GridExclusion]) -> bool:
    for rule in rules:
        fields = {k: v for k, v in rule.model_dump().items() if v is not None}
        if fields and all(getattr(run, k) == v for k, v in fields.items()):
            return True
    return False


def source_available(params: Params, teacher: str, source: str) -> bool:
    """A run needs its source config to exist for that teacher."""
    if source == "truncated":
        return teacher in params.truncate
    if source == compressed_source(VERIFIED):
        return params.verify is not None
    if source == IFT:
        return params.ift is not None
    compressor = compressor_of(source)
    if compressor is not None:
        return compressor in params.compressors
    return source in ("raw", "answer-only")


def expand_runs(params: Params) -> dict[str, Run]:
    """The run grid of ``params.grid`` (sources a teacher lacks and excluded runs left out), by run id."""
    g = params.grid
    seeds: list[int | None] = list(g.seeds) if g.seeds is not None else [None]
    runs: dict[str, Run] = {}
    for teacher in g.teachers:
        for student in g.students:
            for method in g.methods:
                for source in g.sources:
                    for seed in seeds:
                        run = Run(teacher, student, method, source, seed, len(seeds) > 1)
                        if not source_available(params, teacher, source) or _excluded(run, g.exclude):
                            continue
                        runs[run.id] = run
    return runs


def find_run(params: Params, run: str) -> Run:
    """The grid's run named ``run``; a ``ConfigError`` listing the defined runs when there is none."""
    runs = expand_runs(params)
    if run not in runs:
        listed = ", ".join(list(runs)[:8]) + (f" ... ({len(runs)} in all)" if len(runs) > 8 else "")
        raise ConfigError(
            f"run {run!r} is not in the grid of params (grid.*); defined runs: {listed or '(none)'}; "
            "pass one of them, or edit grid.* in the params file and run `compress-distill plan`"
        )
    return runs[run]


# ------------------------------------------------------------------------------------- train launch
FSDP2_CONFIG = "configs/accelerate_fsdp2.yaml"
# the train subcommand under the CLI's error policy; accelerate runs it as a module in every rank
TRAIN_MODULE = "-m compress_distill.cli train"
# torchrun's rendezvous port of a multi-rank run: offset per run so that two runs sharing a node (two 4-GPU
# jobs on one 8-GPU node) do not collide on the default 29500
_PORT_BASE, _PORT_SPAN = 29500, 2000


def train_launch(run: str, spec: dict[str, str], topology: TopologyConfig) -> dict[str, Any]:
    """GPUs, ranks, strategy and the command prefix that starts run ``run`` (its ``cmd`` in dvc.yaml).

    single: ``compress-distill train``; ddp: ``accelerate launch --multi_gpu`` (gloo ranks when the run has
    no GPU and ``train.device`` is cpu); fsdp2: ``accelerate launch`` with ``configs/accelerate_fsdp2.yaml``
    (FULL_SHARD, the paper's full fine-tuning).
    """
    rule = topology.rule_for(spec)
    ranks = rule.ranks
    strategy = rule.strategy or (
        "single" if ranks == 1 else "fsdp2" if spec["method"] == "full" and rule.gpus else "ddp"
    )
    port = _PORT_BASE + int(hashlib.sha256(run.encode()).hexdigest(), 16) % _PORT_SPAN
    common = f"--num_machines 1 --num_processes {ranks} --main_process_port {port}"
    launch = {
        "single": "compress-distill train",
        "ddp": f"accelerate launch --multi_gpu {common} --mixed_precision no --dynamo_backend no {TRAIN_MODULE}",
        "fsdp2": f"accelerate launch --config_file {FSDP2_CONFIG} {common} {TRAIN_MODULE}",
    }[strategy]
    return {"gpus": rule.gpus, "processes": ranks, "strategy": strategy, "launch": launch}


def _padded(files: list[str], length: int) -> list[str]:
    """``files`` repeated at the end up to ``length``: dvc.yaml indexes one count per family, and a
    repeated dep is harmless (DVC hashes it twice)."""
    return files + files[-1:] * (length - len(files))


def expand(params: Params) -> dict[str, Any]:
    """All foreach dicts of ``dvc.yaml``; empty dicts switch a stage family off.

    ``prompts`` in an item: the prompt files that stage instance reads (its DVC deps, see ``CODE_MARKER``).
    """
    teachers = list(params.grid.teachers)
    generating = params.traces.source == "generate"
    compressor_prompts = {c: params.compress.prompt_files(c) for c in params.compressors}
    width = max(map(len, compressor_prompts.values()), default=1)
    verify_prompt = [params.verify.prompt] if params.verify is not None else []
    ift_prompt = [params.ift.prompt] if params.ift is not None else []
    used_prompts = sorted(
        {
            params.generate.prompt,
            params.judge.prompt,
            *verify_prompt,
            *ift_prompt,
            *chain(*compressor_prompts.values()),
        }
    )
    plan: dict[str, Any] = {
        "generate": (
            {t: {"teacher": t, "prompts": [params.generate.prompt]} for t in teachers} if generating else {}
        ),
        "compress": (
            {
                f"{t}-{c}": {"teacher": t, "compressor": c, "prompts": _padded(compressor_prompts[c], width)}
                for t in teachers
                for c in params.compressors
            }
            if generating
            else {}
        ),
        "judge": (
            {
                f"{t}-{c}": {"teacher": t, "compressor": c, "prompts": [params.judge.prompt]}
                for t in teachers
                for c in params.compressors
            }
            if generating
            else {}
        ),
        "truncate": (
            {
                t: {"teacher": t, "compressor": params.truncate[t].compressor}
                for t in teachers
                if t in params.truncate
            }
            if generating
            else {}
        ),
        "answer_only": {t: {"teacher": t} for t in teachers} if generating else {},
        # inputs: every compressor's traces and judgements (a list: DVC deps are indexed, see CODE_MARKER)
        "verify": (
            {
                t: {
                    "teacher": t,
                    "prompts": [params.verify.prompt],
                    "inputs": [
                        path
                        for c in params.compressors
                        for path in (
                            f"data/traces/{t}/{compressed_source(c)}.parquet",
                            f"data/judgements/{t}/{c}.parquet",
                        )
                    ],
                }
                for t in teachers
            }
            if generating and params.verify is not None
            else {}
        ),
        # beyond the paper: source ift, the teacher's answers without reasoning (stages/ift.py)
        "ift": (
            {t: {"teacher": t, "prompts": ift_prompt} for t in teachers}
            if generating and params.ift is not None
            else {}
        ),
        "build": (
            # the dataset card records the hash of the prompt files (card.py); those the stages use
            # are deps (one named but unused may be absent: the card says so, DVC would refuse to run)
            {t: {"teacher": t, "prompts": used_prompts} for t in teachers} if generating else {}
        ),
        "publish": {t: {"teacher": t} for t in teachers} if generating and params.publish.enabled else {},
        "pull": (
            {}
            if generating
            else {
                t: {"repo_id": params.traces.repo_ids[t], "revision": params.traces.revision}
                for t in teachers
            }
        ),
        "runs": {
            rid: {**run.item(), **train_launch(rid, run.item(), params.topology)}
            for rid, run in expand_runs(params).items()
        },
    }
    # beyond the paper: each run evaluated again at every extra decoding cap (stage evaluate_cap)
    plan["evaluate_cap"] = {
        cap_variant(run, cap): {"run": run, "cap": cap}
        for run in plan["runs"]
        for cap in params.evaluate.extra_caps
    }
    return plan


HEADER = "# Generated by `compress-distill plan` from params.yaml -- do not edit; re-run the command.\n"


class _NoAliases(yaml.SafeDumper):
    """Write shared sub-dicts out in full: anchors/aliases would make plan.yaml hard to read."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def render(plan: dict[str, Any]) -> str:
    # Nested under one `plan` key: DVC always loads params.yaml as template vars too, and a top-level
    # `truncate`/`compress` here would collide with the params sections of the same name.
    return HEADER + yaml.dump({"plan": plan}, Dumper=_NoAliases, sort_keys=True, default_flow_style=False)


# ------------------------------------------------------------------------------ generated code deps
PACKAGE = "compress_distill"
CODE_MARKER = "# generated by `compress-distill plan`: prompts and imports of"
# marker line, then the generated list items up to the end of the deps list (same indent, "- " items)
_BLOCK = re.compile(
    rf"^(?P<indent>[ ]*){re.escape(CODE_MARKER)} (?P<module>[\w/]+\.py)[ ]*\n"
    r"(?P<body>(?:(?P=indent)- .*\n)*)",
    re.MULTILINE,
)


def package_modules(src: Path) -> dict[str, Path]:
    """Dotted module name -> file for every module of the package under ``src`` (a package is its
    ``__init__.py``)."""
    modules: dict[str, Path] = {}
    for path in sorted((src / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _imported(module: str, tree: ast.Module, is_package: bool, modules: dict[str, Path]) -> set[str]:
    """Package modules named by any import statement in ``tree`` (function-local ones included), with
    the parent packages that importing them runs."""
    package = module if is_package else module.rpartition(".")[0]
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: level 1 is this package, each further level one parent up
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names += [base] + [f"{base}.{alias.name}" for alias in node.names]
    found: set[str] = set()
    for name in names:
        while name:
            if name in modules:
                found.add(name)
            name = name.rpartition(".")[0]
    return found


def _data_files(path: Path, tree: ast.Module) -> set[Path]:
    """Non-Python files next to ``path`` that the module names in a string literal (templates it reads)."""
    siblings = {p.name: p for p in path.parent.iterdir() if p.is_file() and p.suffix not in (".py", ".pyc")}
    named = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    return {siblings[name] for name in named & siblings.keys()}


def import_closure(module: str, src: Path) -> list[str]:
    """Files (relative to ``src``'s parent, i.e. the repo root) that importing ``module`` can execute
    or read, sorted."""
    modules = package_modules(src)
    if module not in modules:
        raise ValueError(f"no module {module} under {src}; a stage must be named like its module in stages/")
    seen: set[str] = set()
    files: set[Path] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = modules[name]
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        files |= {path} | _data_files(path, tree)
        todo += _imported(name, tree, path.name == "__init__.py", modules) - seen
    return sorted(p.relative_to(src.parent).as_posix() for p in files)


# plan families whose items list the prompt files each stage instance reads
PROMPT_FAMILIES = ("generate", "compress", "judge", "build", "verify", "ift")
# plan families whose items list data files each stage instance reads (``inputs``: one per compressor)
INPUT_FAMILIES = ("verify",)


def stage_deps(stage_file: str, plan: dict[str, Any], src: Path) -> list[str]:
    """Generated deps of the dvc.yaml stage run by ``stage_file`` (``stages/<stage>.py``, the stage
    named like its module): its data inputs and prompt files by index, then the module's import closure."""
    stage = Path(stage_file).stem
    prompts: list[str] = []
    for key, families in (("inputs", INPUT_FAMILIES), ("prompts", PROMPT_FAMILIES)):
        if stage in families:
            # a family without instances (hub mode) keeps one line; DVC never resolves it
            width = max((len(item[key]) for item in plan[stage].values()), default=1)
            prompts += [f"${{item.{key}[{i}]}}" for i in range(width)]
    module = ".".join([PACKAGE, *Path(stage_file).with_suffix("").parts])
    return prompts + import_closure(module, src)


def render_dvc_yaml(text: str, plan: dict[str, Any], src: Path) -> str:
    """``text`` (dvc.yaml) with every generated deps block rewritten (see the module docstring)."""

    def block(match: re.Match[str]) -> str:
        indent = match["indent"]
        lines = [f"{indent}- {dep}\n" for dep in stage_deps(match["module"], plan, src)]
        return f"{indent}{CODE_MARKER} {match['module']}\n" + "".join(lines)

    return _BLOCK.sub(block, text)


def _replace(path: Path, text: str) -> None:
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)


def check_current(params: Params, path: str | Path = "plan.yaml") -> None:
    """Stop when ``plan.yaml`` is not what ``params`` expand to.  dvc.yaml fans out from plan.yaml, so a grid
    changed in params alone (``dvc exp run -S grid.sources=[raw]``) would otherwise change no stage at all."""
    path = Path(path)
    if path.exists() and path.read_text(encoding="utf-8") != render(expand(params)):
        raise ConfigError(
            f"{path} does not match the params (grid, ids or traces.source changed without re-planning); "
            "run `compress-distill plan`, then `dvc repro` (or `dvc exp run`) again"
        )


def write_plan(params: Params, path: str | Path = "plan.yaml") -> Path:
    """Write ``plan.yaml`` and, when ``dvc.yaml`` and ``src/`` sit next to it, its generated deps blocks."""
    path = Path(path)
    plan = expand(params)
    _replace(path, render(plan))
    dvc_yaml, src = path.parent / "dvc.yaml", path.parent / "src"
    if dvc_yaml.exists() and (src / PACKAGE).is_dir():
        _replace(dvc_yaml, render_dvc_yaml(dvc_yaml.read_text(encoding="utf-8"), plan, src))
    return path
