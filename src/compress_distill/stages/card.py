"""The dataset card (README.md) and compression-ratio figure of a built trace folder.

The YAML header is produced with the same classes the Hub uses (``huggingface_hub.DatasetCardData`` and
``datasets.DatasetInfosDict``), so ``configs`` and ``dataset_info`` are exactly what ``load_dataset``
expects and verifies (it checks each split's ``num_examples`` against the data).  Provenance lists model
ids, prompt files and hashes, the params that shaped the data and the git commit -- and, by construction,
no secrets: backend settings are copied through a whitelist (no ``launch`` commands, endpoints or key
variable names).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import yaml

from compress_distill.config import BackendConfig, Params
from compress_distill.prompts import prompt_hash

if TYPE_CHECKING:
    from compress_distill.stages.build import ConfigStats

TAGS = ["reasoning", "chain-of-thought", "distillation", "trace-compression", "synthetic", "llm-as-a-judge"]
TASK_CATEGORIES = ["text-generation", "question-answering"]
# backend keys that describe a model's identity and decoding; everything else (launch commands, URLs, the
# name of a key variable, device placement) is deployment detail and may be private
BACKEND_KEYS = (
    "backend",
    "model",
    "dtype",
    "quantization",
    "max_model_len",
    "tensor_parallel_size",
    "data_parallel_size",
    "reasoning_parser",
    "chat_template_kwargs",
)

DESCRIPTIONS = {
    "raw": "verified-correct teacher traces (rejection sampling; first correct attempt per question)",
    "truncated": "raw reasoning cut to the token length of the most aggressive compressor's trace",
    "answer-only": "think block removed, final response kept (answer-only ablation)",
    "compressed-verified": "per trace the shortest compression the judge calls faithful and from which a "
    "verifier model alone reaches the canonical answer; else the raw trace (`verify.fallback`)",
}
COLUMNS = {
    "id": "trace id (shared by every config: join on it)",
    "question_id": "question id `dataset/split/index`",
    "question": "question as shown to the teacher (lettered choices included)",
    "answer": "canonical answer",
    "reasoning": "the think block (empty for answer-only)",
    "response": "the teacher's final response, identical across configs",
    "reasoning_chars": "characters of `reasoning`",
    "reasoning_tokens": "tokens of `reasoning` (teacher tokenizer for raw, compressor tokenizer otherwise)",
    "compression_ratio": "reasoning chars / raw reasoning chars",
    "prompt_hash": "sha256 prefixes of the prompt file(s) that produced the row (`teacher+compressor`)",
    "answer_preserved": "compressed reasoning alone still reaches the canonical answer (null: not applicable)",
    "judge_*": "LLM-judge verdict (paper Appendix G); null scores where `judge_parse_status` is not `ok`",
}


def git_commit(cwd: Path | None = None) -> str:
    """``git rev-parse HEAD`` of the working directory, or a note saying why there is none."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10, check=False
        )
    except FileNotFoundError:
        return "unknown (git not installed)"
    return out.stdout.strip() if out.returncode == 0 else "unknown (not a git checkout)"


def _engine(cfg: BackendConfig) -> dict[str, Any]:
    dumped = cfg.model_dump()
    return {k: dumped[k] for k in BACKEND_KEYS if dumped.get(k) not in (None, {}, [])}


def provenance_params(params: Params, teacher: str) -> dict[str, Any]:
    """The params that shaped this folder's data, secrets-free (see BACKEND_KEYS)."""
    out: dict[str, Any] = {
        "teacher": {"id": teacher, **_engine(params.teachers[teacher])},
        "generate": params.generate.model_dump(),
        "compressors": {c: _engine(cfg) for c, cfg in params.compressors.items()},
        "compress": params.compress.model_dump(),
        "judge": {**params.judge.model_dump(exclude={"engine"}), "engine": _engine(params.judge.engine)},
        "build": params.build.model_dump(),
    }
    if teacher in params.truncate:
        out["truncate"] = params.truncate[teacher].model_dump()
    return out


def benchmark_sources(cwd: Path | None = None) -> str:
    """The commit each benchmark repo was read at, from prepare's metrics (``sources``), as card lines."""
    path = (cwd or Path.cwd()) / "metrics" / "prepare.json"
    if not path.exists():
        return "- benchmark sources: unknown (metrics/prepare.json not found at build time)\n"
    recorded = json.loads(path.read_text(encoding="utf-8")).get("sources", {})
    lines = [
        f"  - `{hub_id}` @ `{s['sha']}` ({s['read_from']}, pin: {s['pin']}) -> {s['datasets']}\n"
        for hub_id, s in recorded.items()
    ]
    return "- benchmark sources (Hub commit read by prepare):\n" + ("".join(lines) or "  - none (demo set)\n")


def _prompt_files(params: Params) -> dict[str, str]:
    files = {
        "teacher": params.generate.prompt,
        "compress (generic)": params.compress.prompt,
        "judge": params.judge.prompt,
    }
    files |= {f"compress ({c})": p for c, p in params.compress.prompts.items()}
    files |= {f"compress (domain {d})": p for d, p in params.compress.domain_prompts.items()}
    return files


def _size_category(rows: int) -> str:
    for limit, label in (
        (1_000, "n<1K"),
        (10_000, "1K<n<10K"),
        (100_000, "10K<n<100K"),
        (1_000_000, "100K<n<1M"),
        (10_000_000, "1M<n<10M"),
    ):
        if rows < limit:
            return label
    return "10M<n<100M"


def card_yaml(params: Params, built: Mapping[str, ConfigStats], schemas: Mapping[str, pa.Schema]) -> str:
    from datasets import DatasetInfo, Features, SplitDict, SplitInfo
    from datasets.info import DatasetInfosDict
    from huggingface_hub import DatasetCardData

    configs = [
        {
            "config_name": c,
            "data_files": [{"split": "train", "path": f"{c}/train-*.parquet"}],
            **({"default": True} if c == "raw" else {}),
        }
        for c in built
    ]
    data = DatasetCardData(
        license=params.build.license,
        pretty_name=params.build.pretty_name,
        language=["en"],
        tags=TAGS,
        task_categories=TASK_CATEGORIES,
        size_categories=[_size_category(max((s.rows for s in built.values()), default=0))],
        configs=configs,
    )
    infos = DatasetInfosDict()
    for c, s in built.items():
        splits = SplitDict()
        splits.add(SplitInfo(name="train", num_bytes=s.num_bytes, num_examples=s.rows))
        infos[c] = DatasetInfo(
            features=Features.from_arrow_schema(schemas[c]),
            splits=splits,
            download_size=s.download_size,
            dataset_size=s.num_bytes,
            config_name=c,
        )
    infos.to_dataset_card_data(data)
    return data.to_yaml()


def _fmt(v: Any, digits: int = 1) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def _stats_table(stats: ConfigStats, judged: bool) -> str:
    head = ["dataset", "N", "mean reasoning chars", "mean reasoning tokens", "mean compression ratio"]
    if judged:
        head += ["judged", "mean faithfulness", "% faithful", "% aligned"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, row in stats.table().items():
        cells = [
            f"**{name}**" if name == "overall" else name,
            _fmt(row["n"]),
            _fmt(row.get("mean_chars"), 0),
            _fmt(row.get("mean_tokens"), 0),
            _fmt(row.get("mean_ratio"), 3),
        ]
        if judged:
            cells += [
                _fmt(row.get("judged")),
                _fmt(row.get("mean_faithfulness"), 2),
                _fmt(row.get("pct_faithful")),
                _fmt(row.get("pct_aligned")),
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render_card(
    params: Params,
    teacher: str,
    built: Mapping[str, ConfigStats],
    schemas: Mapping[str, pa.Schema],
    figure: str,
    *,
    cwd: Path | None = None,
) -> str:
    t = params.teachers[teacher]
    parts = [f"---\n{card_yaml(params, built, schemas)}\n---\n", f"# {params.build.pretty_name}\n"]
    parts.append(
        f"Reasoning traces of teacher `{teacher}` (`{t.model}`) built by the Compress-Distill "
        "pipeline: verified-correct teacher traces, compressed rewrites by "
        "instruction-tuned LLMs, length-matched truncations and an answer-only ablation, one config each; every "
        "compressed trace carries an LLM judge's faithfulness verdict. All configs share the trace `id`.\n"
    )
    parts.append("## Configs\n\n| config | contents | rows | shards |\n|---|---|---|---|")
    for c, s in built.items():
        what = DESCRIPTIONS.get(c) or (
            f"raw reasoning rewritten by compressor `{c.removeprefix('compressed-')}` "
            f"(`{params.compressors[c.removeprefix('compressed-')].model}`), teacher's final response re-attached"
        )
        parts.append(f"| `{c}` | {what} | {s.rows:,} | {s.shards} |")
    first_compressed = next((c for c in built if c.startswith("compressed-")), "raw")
    parts.append(
        "\n## Usage\n\n```python\nfrom datasets import load_dataset\n\n"
        f'ds = load_dataset("<this repo or folder>", "{first_compressed}", split="train")\n```\n'
    )
    parts.append("## Per-dataset statistics\n")
    for c, s in built.items():
        parts.append(f"### `{c}`\n\n{_stats_table(s, judged='judge_verdict' in schemas[c].names)}\n")
    parts.append(f"## Compression ratio\n\n![Distribution of the per-trace compression ratio]({figure})\n")
    parts.append("## Columns\n\n" + "\n".join(f"- `{k}`: {v}" for k, v in COLUMNS.items()) + "\n")

    prompts = []
    for role, path in _prompt_files(params).items():
        digest = prompt_hash(path) if Path(path).exists() else "file not found at build time"
        prompts.append(f"- {role}: `{path}` (sha256 `{digest}`)")
    observed = sorted({h for s in built.values() for h in s.prompt_hashes})
    models = sorted({m for s in built.values() for m in s.models})
    parts.append(
        "## Provenance\n\n"
        f"- teacher: `{teacher}` = `{t.model}`\n"
        + "".join(f"- compressor `{c}`: `{cfg.model}`\n" for c, cfg in params.compressors.items())
        + f"- judge: `{params.judge.engine.model}`\n"
        f"- models seen in the rows: {', '.join(f'`{m}`' for m in models) or '–'}\n"
        f"- git commit: `{git_commit(cwd)}`\n"
        + benchmark_sources(cwd)
        + f"- prompt hashes seen in the rows: {', '.join(f'`{h}`' for h in observed) or '–'}\n"
        "- prompt files:\n" + "\n".join("  " + p for p in prompts) + "\n\n"
        "Params that shaped this data:\n\n```yaml\n"
        + yaml.safe_dump(provenance_params(params, teacher), sort_keys=False, default_flow_style=False)
        + "```\n"
    )
    return "\n".join(parts)


def write_figure(path: Path, ratios: Mapping[str, np.ndarray]) -> None:
    """Histogram of per-trace compression ratios, one outline per config (compressed and truncated)."""
    import matplotlib

    matplotlib.use("Agg")  # headless: no display on build machines
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    bins = np.linspace(0.0, 1.0, 41)
    plotted = False
    for name, values in ratios.items():
        values = values[np.isfinite(values)]
        if values.size:
            ax.hist(
                np.clip(values, 0.0, 1.0),
                bins=bins,
                histtype="step",
                linewidth=1.6,
                label=f"{name} (n={values.size:,}, mean {values.mean():.3f})",
            )
            plotted = True
    if not plotted:
        ax.text(0.5, 0.5, "no compressed traces", ha="center", va="center", transform=ax.transAxes)
    else:
        ax.legend(fontsize=8)
    ax.set_xlabel("compression ratio (reasoning chars / raw reasoning chars)")
    ax.set_ylabel("traces")
    ax.set_title("Per-trace compression ratio")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
