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
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import yaml

from compress_distill.attribution import BENCHMARKS, PAPER_BIBTEX, model_license
from compress_distill.benchmarks.registry import SPECS
from compress_distill.config import BackendConfig, Params
from compress_distill.names import IFT, VERIFIED, compressed_source, compressor_of
from compress_distill.prompts import prompt_hash
from compress_distill.provenance import git_commit

if TYPE_CHECKING:
    from compress_distill.stages.build import ConfigStats

# YAML license_name when the rows carry several licences (see dataset_license)
MIXED_LICENSE = "mixed-model-output-licenses"
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
    compressed_source(
        VERIFIED
    ): "per trace the shortest compression the judge calls faithful and from which a "
    "verifier model alone reaches the canonical answer; else the raw trace (`verify.fallback`)",
    IFT: "the same teacher answering the same questions without reasoning (thinking off / lowest reasoning "
    "effort), graded like raw; instruction-tuning rows with an empty reasoning",
    "eval-questions": "the evaluation split's questions and canonical answers (what students are scored on); "
    "no traces",
    "attempts": "every teacher attempt, correct or not, with its extraction rule and correctness (preference "
    "pairs, error analysis); no train-ready columns",
}
# every column a config can have (judge_* on compressed configs only), in schema order; test_card checks that
# each column of each built config is described here
COLUMNS = {
    "id": "trace id, shared by every config of this teacher: join on it",
    "question_id": "question id `dataset/split/index` (index into the upstream Hub split)",
    "dataset": "benchmark id (see Source benchmarks)",
    "domain": "math, science, commonsense or medicine",
    "question": "question as shown to the teacher (lettered choices included)",
    "answer": "canonical answer of the benchmark",
    "answer_type": "how answers are extracted and compared: numeric, letter, boolean, latex or text",
    "reasoning": "the think block without its tags (empty for answer-only)",
    "response": "the teacher's final response after the think block, identical across configs",
    "source": "the config the row belongs to: raw, compressed-<C>, truncated or answer-only",
    "reasoning_chars": "characters of `reasoning`",
    "reasoning_tokens": "tokens of `reasoning` (teacher tokenizer for raw, compressor tokenizer otherwise)",
    "compression_ratio": "reasoning chars / raw reasoning chars of the same trace",
    "teacher_model": "model id of the teacher that wrote the trace",
    "compressor_model": "model id of the compressor (empty where no model rewrote the reasoning)",
    "prompt_hash": "sha256 prefixes of the prompt file(s) that produced the row (`teacher+compressor`)",
    "answer_preserved": "compressed reasoning alone still reaches the canonical answer (null: not applicable)",
    "judge_faithfulness": "judge score 1-5: the compressed reasoning keeps the raw reasoning's logic",
    "judge_coverage": "judge score 1-5: the key steps of the raw reasoning are kept",
    "judge_clarity": "judge score 1-5: the compressed reasoning reads clearly",
    "judge_verdict": "faithful, partially_faithful or unfaithful",
    "judge_answer_alignment": "the compressed reasoning supports the same final answer",
    "judge_failure_modes": "failure modes the judge named (list of strings)",
    "judge_rationale": "the judge's short justification",
    "judge_model": "model id of the judge",
    "judge_parse_status": "ok, or why the verdict could not be read (truncated, invalid_json, schema_error); "
    "scores are null unless ok, and null altogether where the judge has no row for the trace",
    "group": "evaluation group: Math, Science, Medicine, Commonsense, OOD-Reasoning, OOD-Knowledge "
    "(`eval-questions`)",
    "split": "train or eval (`eval-questions`)",
    "choices": "option texts without their letters, empty for open answers (`eval-questions`)",
    "teacher": "teacher id (`attempts`)",
    "round": "rejection-sampling round of the attempt, from 0 (`attempts`)",
    "attempt": "attempt index within the question (`attempts`)",
    "extracted": "answer extracted from the attempt's final response, null when none was found (`attempts`)",
    "extraction_rule": "which extraction rule found it (`attempts`)",
    "correct": "the extracted answer matches the canonical answer (`attempts`)",
    "prompt_tokens": "tokens of the teacher prompt (`attempts`)",
    "completion_tokens": "tokens the teacher generated (`attempts`)",
    "finish_reason": "stop, or length when the attempt was cut at the token cap (`attempts`)",
    "request_hash": "hash of the generation request (cache key; `attempts`)",
    "messages": "train-ready conversation `[{role: user, content: question}, {role: assistant, content: "
    "<think>\\nreasoning\\n</think>\\n\\nresponse}]`, exactly the target the project's own trainer uses",
    "prompt": "the user turn of `messages` (list of one message): TRL's prompt-completion format",
    "completion": "the assistant turn of `messages` (list of one message): TRL trains on it alone",
}


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


def benchmark_sources(prepare_metrics: Path | None) -> str:
    """The commit each benchmark repo was read at, from prepare's metrics (``sources``), as card lines."""
    if prepare_metrics is None or not prepare_metrics.exists():
        return f"- benchmark sources: unknown ({prepare_metrics or 'no prepare metrics'} not found at build time)\n"
    path = prepare_metrics
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
    if params.ift is not None:
        files[IFT] = params.ift.prompt
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


def card_yaml(
    params: Params, teacher: str, built: Mapping[str, ConfigStats], schemas: Mapping[str, pa.Schema]
) -> str:
    from datasets import DatasetInfo, Features, SplitDict, SplitInfo
    from datasets.info import DatasetInfosDict
    from huggingface_hub import DatasetCardData

    benchmark_ids = sorted({d for st in built.values() for d in st.datasets})

    configs = [
        {
            "config_name": c,
            "data_files": [{"split": "train", "path": f"{c}/train-*.parquet"}],
            **({"default": True} if c == "raw" else {}),
        }
        for c in built
    ]
    license_id = dataset_license(params, teacher, built)
    data = DatasetCardData(
        license=license_id,
        license_name=None if license_id != "other" else MIXED_LICENSE,
        source_datasets=sorted({sp.hub_id for d in benchmark_ids if (sp := SPECS.get(d)) and sp.hub_id})
        or None,
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


def _compressor(config: str) -> str | None:
    """The params compressor behind config ``compressed-<C>``; None for any other config, ``compressed-verified``
    included (the verify stage's pick among all compressors, described on its own)."""
    cid = compressor_of(config)
    return None if cid == VERIFIED else cid


def models_used(params: Params, teacher: str, built: Mapping[str, ConfigStats]) -> dict[str, str]:
    """Model id -> its role(s) in this folder: the teacher, the compressors of the built configs, the judge,
    the verifier of ``compressed-verified``."""
    roles: dict[str, list[str]] = {params.teachers[teacher].model: [f"teacher `{teacher}`"]}
    for c in built:
        if (cid := _compressor(c)) is not None:
            roles.setdefault(params.compressors[cid].model, []).append(f"compressor `{cid}`")
    if any(s.judged_rows is not None for s in built.values()):
        roles.setdefault(params.judge.engine.model, []).append("judge")
    if compressed_source(VERIFIED) in built and params.verify is not None:
        roles.setdefault(params.verify.engine.model, []).append("verifier")
    return {m: ", ".join(r) for m, r in roles.items()}


def dataset_license(params: Params, teacher: str, built: Mapping[str, ConfigStats]) -> str:
    """The YAML ``license``: ``build.license`` when every model whose text is in the rows shares it, else
    ``other`` (named MIXED_LICENSE; the card's Licences section lists each part)."""
    names = {model_license(m).name for m in models_used(params, teacher, built)}
    return params.build.license if names <= {params.build.license} else "other"


def _fence(text: str, lang: str = "text") -> str:
    """``text`` in a fenced block whose fence no run of backticks inside it can close."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{lang}\n{text.rstrip()}\n{fence}\n"


def _usage(params: Params, teacher: str, built: Mapping[str, ConfigStats]) -> str:
    repo = params.published_repo_id(teacher)
    revision = params.publish.tag or "main"
    repo_ref = repo or "<org>/<name>"
    config = next((c for c in built if compressor_of(c) is not None), "raw")
    unset = (
        ""
        if repo
        else "`publish.repo_id` was not set when this folder was built: replace `<org>/<name>` with the Hub "
        "repo you uploaded it to, or with the path of this folder.\n\n"
    )
    return (
        "## Usage\n\n"
        + unset
        + "With `datasets`:\n\n"
        + _fence(
            "from datasets import load_dataset\n\n"
            f'ds = load_dataset("{repo_ref}", "{config}", split="train", revision="{revision}")',
            "python",
        )
        + "\nWith TRL (the `prompt` / `completion` columns make `SFTTrainer` train on the assistant turn only, "
        "end-of-turn token included -- the same tokens the Compress-Distill trainer trains; no formatting "
        "function needed):\n\n"
        + _fence(
            "from datasets import load_dataset\nfrom trl import SFTConfig, SFTTrainer\n\n"
            f'ds = load_dataset("{repo_ref}", "{config}", split="train", revision="{revision}")\n'
            'trainer = SFTTrainer(model="HuggingFaceTB/SmolLM2-135M-Instruct", train_dataset=ds,\n'
            '                     args=SFTConfig(output_dir="out"))\ntrainer.train()',
            "python",
        )
        + "\nWith Axolotl (`chat_template` type on the `messages` column, loss on assistant turns and their "
        "end-of-turn token):\n\n"
        + _fence(
            "datasets:\n"
            f"  - path: {repo_ref}\n    name: {config}\n    revision: {revision}\n    split: train\n"
            "    type: chat_template\n    field_messages: messages\n"
            "    message_property_mappings: {role: role, content: content}\n"
            "    roles_to_train: [assistant]\n    train_on_eos: turn",
            "yaml",
        )
        + "\nWith the Compress-Distill pipeline (train and evaluate students with no teacher at all):\n\n"
        + _fence(
            f"traces: {{source: hub, repo_ids: {{{teacher}: {repo_ref}}}, revision: {revision}}}", "yaml"
        )
    )


def _example(built: Mapping[str, ConfigStats], max_chars: int = 400) -> str:
    config = next((c for c in built if compressor_of(c) is not None), next(iter(built)))
    row = built[config].example
    if row is None:
        return ""

    def cut(v: Any) -> Any:
        if isinstance(v, str) and len(v) > max_chars:
            return v[:max_chars] + f"... [{len(v) - max_chars:,} more characters]"
        if isinstance(v, list):
            return [cut(x) for x in v]
        if isinstance(v, dict):
            return {k: cut(x) for k, x in v.items()}
        return v

    body = json.dumps(cut(row), indent=2, ensure_ascii=False, default=str)
    return f"## Example row (`{config}`, long strings cut at {max_chars} characters)\n\n" + _fence(
        body, "json"
    )


def _method(params: Params, teacher: str, built: Mapping[str, ConfigStats]) -> str:
    g, c, j = params.generate, params.compress, params.judge
    lines = [
        "## How the data was made\n",
        f"- **Rejection sampling** (config `raw`): the teacher answers each training question up to {g.rounds} "
        f"times (sampling `{g.sampling.model_dump(exclude_none=True)}`); an attempt is kept when the answer "
        "extracted from its final response matches the canonical answer (type-specific extraction: numbers, "
        "letters, yes/no), and only the first correct attempt per question is kept. Completions without a think "
        + (
            "block are rejected."
            if g.untagged == "reject"
            else "block are split at their last non-empty line (the text above it is the reasoning)."
        ),
        f"- **Compression** (configs `compressed-<C>`): each raw reasoning is rewritten by the compressor "
        f"(sampling `{c.sampling.model_dump(exclude_none=True)}`) with the prompt below (per-compressor prompt, "
        "else per-domain prompt, else the generic one); the teacher's final response is re-attached unchanged. "
        + (
            "Rows whose compressed reasoning no longer reaches the canonical answer are dropped."
            if c.require_answer_preserved
            else "Compressions are not re-verified: `answer_preserved` records whether the answer survives."
        ),
    ]
    if "truncated" in built and teacher in params.truncate:
        lines.append(
            f"- **Truncation** (config `truncated`): each raw reasoning is cut to the token length of compressor "
            f"`{params.truncate[teacher].compressor}`'s trace of the same question (length-matched ablation)."
        )
    if "answer-only" in built:
        lines.append(
            "- **Answer only** (config `answer-only`): the think block is emptied, the response kept."
        )
    if IFT in built and params.ift is not None:
        lines.append(
            f"- **Instruction tuning** (config `{IFT}`): the teacher answers the questions of its raw traces "
            f"again with the prompt `{params.ift.prompt}` and chat-template kwargs "
            f"`{params.ift.chat_template_kwargs.get(teacher, {})}` (reasoning off); correct answers are kept "
            "as rows without reasoning."
        )
    lines.append(
        f"- **Judge**: `{j.engine.model}` rates each compressed trace against its raw trace (sampling "
        f"`{j.sampling.model_dump(exclude_none=True)}`; raw reasoning cut to {j.max_raw_chars:,} and compressed "
        f"to {j.max_compressed_chars:,} characters, keeping both ends) and answers in JSON; its columns are "
        "joined on `id` with the prefix `judge_`."
    )
    return "\n".join(lines) + "\n"


def _prompts(params: Params) -> str:
    out = ["## Prompts (verbatim)\n"]
    for role, path in _prompt_files(params).items():
        file = Path(path)
        if not file.exists():
            out.append(f"### {role}\n\n`{path}`: file not found at build time\n")
            continue
        out.append(
            f"### {role} (`{file.name}`, sha256 `{prompt_hash(file)}`)\n\n" + _fence(file.read_text("utf-8"))
        )
    return "\n".join(out)


def _licences(params: Params, teacher: str, built: Mapping[str, ConfigStats]) -> str:
    out = [
        "## Licences\n",
        (
            f"The curation (selection, configs, card) is released under `{params.build.license}`. The text in "
            "the rows is also the output of the models below and carries their terms, and the questions and "
            "answers come from the benchmarks listed under Source benchmarks, under theirs.\n"
        ),
        "| model | role | licence of its outputs | notes |",
        "|---|---|---|---|",
    ]
    for model, role in models_used(params, teacher, built).items():
        lic = model_license(model)
        name = f"[{lic.name}]({lic.url})" if lic.url else lic.name
        out.append(f"| `{model}` | {role} | {name} | {lic.note or '–'} |")
    return "\n".join(out) + "\n"


def _benchmarks(built: Mapping[str, ConfigStats], prepare_metrics: Path | None) -> str:
    ids = sorted({d for s in built.values() for d in s.datasets})
    out = [
        "## Source benchmarks\n",
        "| dataset | Hub id | licence (Hub card) | terms |",
        "|---|---|---|---|",
    ]
    for d in ids:
        spec, bench = SPECS.get(d), BENCHMARKS.get(d)
        hub = (
            f"[`{spec.hub_id}`](https://huggingface.co/datasets/{spec.hub_id})"
            if spec and spec.hub_id
            else "–"
        )
        if bench is None:
            out.append(f"| `{d}` | {hub} | synthetic (generated by this project) | – |")
        else:
            out.append(
                f"| `{d}` | {hub} | {bench.license or 'see the dataset card'} | {bench.terms or '–'} |"
            )
    return "\n".join(out) + "\n\n" + benchmark_sources(prepare_metrics)


def _limitations(params: Params, built: Mapping[str, ConfigStats]) -> str:
    coverage = ", ".join(
        f"`{c}` {s.judged_rows:,} of {s.rows:,} rows with a readable verdict"
        if s.judged_rows is not None
        else f"`{c}` not judged"
        for c, s in built.items()
        if compressor_of(c) is not None
    )
    ids = {d for s in built.values() for d in s.datasets}
    lines = [
        "## Limitations\n",
        (
            "- Only traces whose final answer matched the benchmark's answer are kept (rejection sampling): the "
            "reasoning itself is not verified and can be wrong or lucky, and questions the teacher never solved "
            "are absent, so the data is biased towards easier questions."
        ),
        "- Compressed traces are model rewrites and are "
        + (
            "filtered on `answer_preserved`"
            if params.compress.require_answer_preserved
            else "not re-verified"
        )
        + ": a compression can drop steps, change the logic or reach another answer; use the `judge_*` columns "
        "(an LLM judge, itself fallible) to filter.",
        "- Judge coverage: "
        + (coverage or "no compressed configs in this folder")
        + "; rows without a readable verdict have null `judge_*` scores.",
        "- `truncated` reasoning is cut mid-thought by design (an ablation, not a training recipe).",
        (
            "- `messages` / `completion` render the reasoning in `<think>` tags; chat formats with a separate "
            "reasoning channel (gpt-oss harmony) need the reasoning moved to their `thinking` field."
        ),
        "- English only; benchmark questions may be in the pre-training data of the models involved.",
    ]
    if "eval-questions" in built:
        lines.append(
            "- `eval-questions` is a test set: keep it out of training data, and expect it to leak into future "
            "web-scale corpora once published."
        )
    if "attempts" in built:
        lines.append(
            "- `attempts` holds incorrect answers and cut-off completions too (`correct`, `finish_reason`): "
            "filter before training on it."
        )
    lines += [
        f"- `{d}`: {BENCHMARKS[d].terms}." for d in sorted(ids) if d in BENCHMARKS and BENCHMARKS[d].terms
    ]
    return "\n".join(lines) + "\n"


def _citation(built: Mapping[str, ConfigStats]) -> str:
    ids = sorted({d for s in built.values() for d in s.datasets})
    entries = list(dict.fromkeys(BENCHMARKS[d].bibtex for d in ids if d in BENCHMARKS))
    return (
        "## Citation\n\nIf you use these traces, cite the Compress-Distill paper:\n\n"
        + _fence(PAPER_BIBTEX, "bibtex")
        + (
            "\nand the benchmarks the questions come from:\n\n" + _fence("\n\n".join(entries), "bibtex")
            if entries
            else ""
        )
    )


def _attempts_table(stats: ConfigStats) -> str:
    lines = ["| dataset | attempts | correct | % correct |", "|---|---|---|---|"]
    blocks = dict(sorted(stats.datasets.items()))
    total = {"n": sum(b["n"] for b in blocks.values()), "correct": sum(b["correct"] for b in blocks.values())}
    for name, b in [*blocks.items(), ("**overall**", total)]:
        pct = 100 * b["correct"] / b["n"] if b["n"] else None
        lines.append(f"| {name} | {_fmt(int(b['n']))} | {_fmt(int(b['correct']))} | {_fmt(pct)} |")
    return "\n".join(lines)


def _questions_table(stats: ConfigStats) -> str:
    lines = ["| dataset | questions |", "|---|---|"]
    blocks = dict(sorted(stats.datasets.items()))
    lines += [f"| {name} | {_fmt(int(b['n']))} |" for name, b in blocks.items()]
    lines.append(f"| **overall** | {_fmt(stats.rows)} |")
    return "\n".join(lines)


def render_card(
    params: Params,
    teacher: str,
    built: Mapping[str, ConfigStats],
    schemas: Mapping[str, pa.Schema],
    figure: str,
    *,
    cwd: Path | None = None,
    prepare_metrics: Path | None = None,
) -> str:
    t = params.teachers[teacher]
    parts = [f"---\n{card_yaml(params, teacher, built, schemas)}\n---\n", f"# {params.build.pretty_name}\n"]
    parts.append(
        f"Reasoning traces of teacher `{teacher}` (`{t.model}`) built by the Compress-Distill "
        "pipeline: verified-correct teacher traces, compressed rewrites by "
        "instruction-tuned LLMs, length-matched truncations and an answer-only ablation, one config each; every "
        "compressed trace carries an LLM judge's faithfulness verdict. All configs share the trace `id`, and "
        "every config has train-ready `messages` / `prompt` / `completion` columns.\n"
    )
    parts.append("## Configs\n\n| config | contents | rows | shards |\n|---|---|---|---|")
    for c, s in built.items():
        what = (
            DESCRIPTIONS[c]
            if (comp := _compressor(c)) is None
            else (
                f"raw reasoning rewritten by compressor `{comp}` "
                f"(`{params.compressors[comp].model}`), teacher's final response re-attached"
            )
        )
        parts.append(f"| `{c}` | {what} | {s.rows:,} | {s.shards} |")
    parts.append("\n" + _usage(params, teacher, built))
    parts.append(_example(built))
    parts.append("## Per-dataset statistics\n")
    for c, s in built.items():
        if "extraction_rule" in schemas[c].names:
            table = _attempts_table(s)
        elif "choices" in schemas[c].names:
            table = _questions_table(s)
        else:
            table = _stats_table(s, judged="judge_verdict" in schemas[c].names)
        parts.append(f"### `{c}`\n\n{table}\n")
    parts.append(f"## Compression ratio\n\n![Distribution of the per-trace compression ratio]({figure})\n")
    present = list(dict.fromkeys(n for schema in schemas.values() for n in schema.names))
    parts.append(
        "## Columns\n\n" + "\n".join(f"- `{n}`: {COLUMNS.get(n, 'undocumented')}" for n in present) + "\n"
    )
    parts.append(_method(params, teacher, built))
    parts.append(_prompts(params))
    parts.append(_licences(params, teacher, built))
    parts.append(_benchmarks(built, prepare_metrics))
    parts.append(_limitations(params, built))
    parts.append(_citation(built))

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
        f"- prompt hashes seen in the rows: {', '.join(f'`{h}`' for h in observed) or '–'}\n"
        "- prompt files (text under Prompts):\n" + "\n".join("  " + p for p in prompts) + "\n\n"
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
                bins=bins.tolist(),
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
