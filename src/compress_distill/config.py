"""Typed params: one pydantic model per section of ``params.yaml``.

Everything a stage reads comes through here, so a typo or an impossible value fails at load time with a
message that names the key, the offending value and the valid choices -- never deep inside a stage after an
hour of generation.  Stages read only the keys they declare in ``dvc.yaml`` (``generate.rounds``), but the
whole file is validated on every load so a broken profile is caught by the first stage that runs.
"""

from __future__ import annotations

import difflib
import fnmatch
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from compress_distill.errors import UserError, looks_like_credential, redact
from compress_distill.names import IFT, PLAIN_SOURCES, VERIFIED, compressed_source

# Dataset ids of the question registry (compress_distill.benchmarks.registry must define exactly these;
# a test keeps the two in sync).  Kept here because config may import nothing else of the package.
DATASET_IDS: tuple[str, ...] = (
    "demo",
    "gsm8k",
    "multiarith",
    "svamp",
    "aqua_rat",
    "arc_challenge",
    "gpqa_diamond",
    "commonsense_qa",
    "medqa",
    "medmcqa",
    "medexpqa",
    "mmlu_stem",
    "mmlu_medical",
    "hellaswag",
    "winogrande",
    "piqa",
    "arc_easy",
    "boolq",
    "truthfulqa",
    "mmlu_humanities",
    "mmlu_social_sciences",
    "mmlu_other",
)

# Short aliases for models that ship inside a PyPI package (no hub download at run time).
MODEL_ALIASES: tuple[str, ...] = ("smollm2-135m-instruct",)

Backend = Literal["hf", "vllm", "openai"]
BACKENDS: tuple[str, ...] = get_args(Backend)
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # a POSIX environment variable name
Method = Literal["lora", "full"]  # training methods
METHODS: tuple[str, ...] = get_args(Method)


class ConfigError(UserError, ValueError):
    """A params problem, phrased as what to change."""


class Section(BaseModel):
    """Base of every params section: unknown keys are errors, assignments are validated."""

    # allow_inf_nan=False: YAML's .inf/.nan pass every bound (.inf > 0), e.g. an infinite learning rate
    # trained an all-NaN adapter; they are refused at load as "train.lora.learning_rate: ... finite number"
    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False, allow_inf_nan=False)


_SERVED_NAME_HINT = " A name an OpenAI-compatible server serves (e.g. 'gpt-4o-mini') needs backend 'openai'."


def is_loadable_model_id(model: str) -> bool:
    """Whether ``model`` names weights/tokenizer we can load: a packaged alias, a Hub id or a local path."""
    return model in MODEL_ALIASES or "/" in model or Path(model).exists()


def _check_model_id(model: str, what: str = "model", extra_hint: str = "") -> str:
    """Accept a packaged alias, a Hub id (``org/name``) or an existing local path."""
    if is_loadable_model_id(model):
        return model
    close = difflib.get_close_matches(model, MODEL_ALIASES, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ValueError(
        f"unknown {what} {model!r}: use a packaged alias ({', '.join(MODEL_ALIASES)}), a Hub id like "
        f"'org/name', or a local directory.{hint}{extra_hint}"
    )


# --------------------------------------------------------------------------------------------- engines
class SlurmLaunchConfig(Section):
    """``launch_slurm``: the engine's one ``launch`` command runs as ``replicas`` SLURM jobs, one server each
    on the ``gpus`` of the engine (``--gres=gpu:N``), reached at the node's hostname (``llm/launch.py``)."""

    replicas: int = Field(1, ge=1)
    # go on with the replicas healthy after launch_timeout_s when at least this many are (the others are
    # cancelled); None: all of them, else the stage fails
    min_replicas: int | None = Field(None, ge=1)
    partition: str | None = None  # None: the cluster's default partition
    account: str | None = None
    time: str | None = None  # SLURM time limit of each replica, e.g. "48:00:00"
    # more sbatch options, e.g. ["--exclusive", "--constraint=h100"] (one replica per node)
    sbatch_args: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _min_within_replicas(self) -> SlurmLaunchConfig:
        if self.min_replicas is not None and self.min_replicas > self.replicas:
            raise ValueError(
                f"min_replicas {self.min_replicas} exceeds replicas {self.replicas}; lower it or drop it (all)"
            )
        return self


class BackendConfig(Section):
    """How to reach one model (docs/architecture.md §6).  The same keys drive a laptop, a GPU node and a
    cluster."""

    backend: Backend = "hf"
    # hf/vllm: a packaged alias, Hub id or local directory; openai: the name the server serves the model
    # under, sent as is (``gpt-4o-mini``, a vLLM ``--served-model-name``)
    model: str
    # tokenizer the stages count (and truncate cuts) this engine's tokens with; None = ``model``'s own.
    # Needed on the openai backend when ``model`` is a served name rather than a Hub id or local directory.
    tokenizer: str | None = None
    # hf
    device: Literal["cpu", "cuda", "auto"] = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    batch_size: int = Field(16, ge=1)
    # vllm: GPUs per model replica (tensor parallelism); vllm and hf: replicas, each on its own GPUs (hf: one
    # whole model per CUDA device).  gpus, when set, must be their product: the engine uses every GPU its job
    # is given
    tensor_parallel_size: int = Field(1, ge=1)
    data_parallel_size: int = Field(1, ge=1)
    max_model_len: int | None = Field(None, ge=16)
    gpu_memory_utilization: float = Field(0.9, gt=0.0, le=1.0)
    quantization: str | None = None
    reasoning_parser: str | None = None
    # extra chat-template kwargs, e.g. {"reasoning_effort": "high"} for gpt-oss
    chat_template_kwargs: dict[str, Any] = Field(default_factory=dict)
    # openai
    base_urls: list[str] = Field(default_factory=list)
    api_key_env: str | None = None
    max_concurrency: int = Field(8, ge=1)
    max_retries: int = Field(5, ge=0)
    timeout_s: float = Field(600.0, gt=0)
    # managed servers: each entry is one server command; "{port}" is filled in per replica ("{host}" too)
    launch: list[str] = Field(default_factory=list)
    launch_timeout_s: float = Field(900.0, gt=0)
    # run the launch command as SLURM jobs instead of local processes (None: local)
    launch_slurm: SlurmLaunchConfig | None = None
    # GPUs this engine occupies (0 on CPU): what its stage's grid job is given (SLURM --gres, the local
    # executor's slice; hf and vllm must use every one) and what the GPU-hour ledger counts; with launch_slurm
    # the GPUs of each replica's job (the stage's own job then needs none)
    gpus: int = Field(0, ge=0)

    @field_validator("model")
    @classmethod
    def _model(cls, v: str, info: ValidationInfo) -> str:
        if info.data.get("backend") == "openai":
            if not v.strip() or v != v.strip():
                raise ValueError(
                    "the openai backend sends `model` as the served model name: give the exact name the "
                    "server serves (e.g. 'gpt-4o-mini'), without surrounding spaces"
                )
            return v
        return _check_model_id(v, extra_hint=_SERVED_NAME_HINT)

    @field_validator("tokenizer")
    @classmethod
    def _tokenizer(cls, v: str | None) -> str | None:
        return None if v is None else _check_model_id(v, what="tokenizer")

    @property
    def tokenizer_id(self) -> str:
        """The model id whose tokenizer counts this engine's tokens (``tokenizer``, else ``model``)."""
        return self.tokenizer or self.model

    @field_validator("api_key_env")
    @classmethod
    def _key_env_is_a_name(cls, v: str | None) -> str | None:
        # Guard against the commonest leak: pasting the key itself where its variable name belongs.  The
        # message never repeats the value (see _format_errors), and a value shaped like a credential that
        # would pass as a name (gsk_..., long mixed-case strings) is refused too.
        if v is not None and (not _ENV_NAME.fullmatch(v) or looks_like_credential(v)):
            raise ValueError(
                "api_key_env takes the NAME of an environment variable (e.g. OPENAI_API_KEY), "
                "never the key itself; remove the key from params (and revoke it if this file was shared), "
                "then export it under a name and put that name here"
            )
        return v

    @property
    def parallel_gpus(self) -> int:
        """GPUs the engine's replicas span on the hf and vllm backends (tensor x data parallel size)."""
        return self.tensor_parallel_size * self.data_parallel_size

    @model_validator(mode="after")
    def _parallel_sizes(self) -> BackendConfig:
        tp, dp = self.tensor_parallel_size, self.data_parallel_size
        if self.backend == "openai":
            if tp > 1 or dp > 1:
                raise ValueError(
                    "tensor_parallel_size and data_parallel_size are for backends vllm and hf; an openai "
                    "backend's server sets its own (launch: ['vllm serve ... --tensor-parallel-size 8 --port "
                    "{port}']) and its replicas are the entries of base_urls or launch: drop these keys"
                )
            return self
        if self.backend == "hf" and tp > 1:
            raise ValueError(
                f"tensor_parallel_size {tp} on backend 'hf', which runs one whole model per device: use "
                "data_parallel_size for several GPUs (one replica each), or backend 'vllm' for tensor parallelism"
            )
        if self.backend == "hf" and dp > 1 and self.device == "cpu":
            raise ValueError(
                f"data_parallel_size {dp} on device 'cpu': the hf backend's replicas run one per CUDA device; "
                "set device: cuda (or auto), or data_parallel_size: 1"
            )
        if self.gpus and self.parallel_gpus != self.gpus:
            raise ValueError(
                f"tensor_parallel_size {tp} x data_parallel_size {dp} = {self.parallel_gpus} GPUs but gpus is "
                f"{self.gpus}: gpus is what this engine's job is given, and the engine must use every one; set "
                f"data_parallel_size to gpus / tensor_parallel_size, or gpus to {self.parallel_gpus}"
            )
        return self

    @model_validator(mode="after")
    def _openai_needs_endpoint(self) -> BackendConfig:
        if self.backend == "openai" and not self.base_urls and not self.launch:
            raise ValueError(
                "backend 'openai' needs base_urls (a list of http://host:port/v1 endpoints) or a launch: "
                "command list that starts local servers"
            )
        if self.launch_slurm is not None and (self.backend != "openai" or len(self.launch) != 1):
            raise ValueError(
                "launch_slurm runs `replicas` SLURM jobs of one server command: it needs backend 'openai' and "
                f"exactly one launch command (got backend {self.backend!r}, {len(self.launch)} command(s))"
            )
        return self

    @property
    def held_gpus(self) -> int:
        """GPUs the engine holds while it runs: every replica's when its servers are SLURM jobs."""
        return self.gpus * (self.launch_slurm.replicas if self.launch_slurm else 1)

    @property
    def job_gpus(self) -> int:
        """GPUs the stage's own process needs: none when its servers are SLURM jobs of their own."""
        return 0 if self.launch_slurm else self.gpus


class StudentEngineConfig(BackendConfig):
    """``evaluate.engine``: the student engine's backend keys, validated at load.  Its ``model`` is each
    run's trained student (``models/RUN``), filled in at run time by ``for_model``; params never set it."""

    model: str = Field("", exclude=True)  # left out of dumps: a dumped params file must load again

    @field_validator("model")
    @classmethod
    def _model(cls, v: str, info: ValidationInfo) -> str:
        raise ValueError(
            "the student engine serves each run's trained model (models/RUN), filled in at run time; "
            "remove this key"
        )

    def for_model(self, model_dir: str | Path) -> BackendConfig:
        """The backend config of one run: these keys, with ``model`` the run's model directory."""
        return backend_config({**self.model_dump(exclude={"model"}), "model": str(model_dir)})


class SamplingConfig(Section):
    temperature: float = Field(0.0, ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_tokens: int = Field(512, ge=1)
    seed: int | None = 0


# --------------------------------------------------------------------------------------------- prepare
class DemoConfig(Section):
    n_train: int = Field(24, ge=1)
    n_eval: int = Field(12, ge=1)


class PrepareConfig(Section):
    datasets: list[str]
    # cap per dataset and split; None keeps everything (the paper)
    max_per_dataset: int | None = Field(None, ge=1)
    max_eval_per_dataset: int | None = Field(None, ge=1)
    seed: int = 0
    demo: DemoConfig = Field(default_factory=DemoConfig)
    # Local directory that mirrors Hub repos as <org>/<name>/...; None reads the Hub (or HF cache)
    hub_mirror: str | None = None
    # Hub repo id -> commit sha (or branch) read instead of the registry's pin (benchmarks/registry.py PINS)
    revisions: dict[str, str] = Field(default_factory=dict)

    @field_validator("datasets")
    @classmethod
    def _datasets(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError(f"the dataset list is empty; choose from: {', '.join(DATASET_IDS)}")
        bad = [d for d in v if d not in DATASET_IDS]
        if bad:
            raise ValueError(f"unknown dataset id(s) {bad}; valid ids: {', '.join(DATASET_IDS)}")
        if len(set(v)) != len(v):
            raise ValueError(f"dataset ids listed twice: {sorted({d for d in v if v.count(d) > 1})}")
        return v


# --------------------------------------------------------------------------------------------- traces
class TeacherConfig(BackendConfig):
    """A teacher is an engine plus its generation settings."""


class CompressorConfig(BackendConfig):
    pass


class GenerateConfig(Section):
    rounds: int = Field(4, ge=1)
    prompt: str = "prompts/teacher.md"
    sampling: SamplingConfig = Field(default_factory=lambda: SamplingConfig(temperature=0.7, max_tokens=1024))
    # completions without a think block: "reject" (counted no_reasoning; reasoning teachers, the paper) or
    # "last_line": the last non-empty line is the final response, the text above it the reasoning
    # (chain-of-thought from an instruct model that never writes <think>, e.g. the SmolLM2 demo teacher)
    untagged: Literal["reject", "last_line"] = "reject"


class CompressConfig(Section):
    prompt: str = "prompts/compress_generic.md"
    # optional per-domain prompt files (the paper's future work); domains not listed use `prompt`
    domain_prompts: dict[str, str] = Field(default_factory=dict)
    # optional per-compressor prompt files (compressor id -> file); override `prompt` for that compressor
    prompts: dict[str, str] = Field(default_factory=dict)
    sampling: SamplingConfig = Field(default_factory=lambda: SamplingConfig(temperature=0.3, max_tokens=1024))
    # keep only rows whose compressed reasoning still reaches the canonical answer (beyond the paper)
    require_answer_preserved: bool = False

    # compressor id -> the prompts it reads (beyond the paper): "domain" (the default) picks
    # domain_prompts[domain] where one is listed, "generic" always `prompt`.  One grid compares the two by
    # listing two compressors with the same engine, one of each (params.yaml: concise vs domain).
    prompt_sets: dict[str, Literal["generic", "domain"]] = Field(default_factory=dict)

    def prompt_for(self, compressor: str, domain: str) -> str:
        """Precedence: per-compressor prompt, then per-domain prompt (unless the compressor's prompt set is
        ``generic``), then the generic one."""
        domain_prompt = (
            None if self.prompt_sets.get(compressor) == "generic" else self.domain_prompts.get(domain)
        )
        return self.prompts.get(compressor) or domain_prompt or self.prompt

    def prompt_files(self, compressor: str) -> list[str]:
        """Every file ``prompt_for`` can pick for ``compressor``, whatever the domain: its DVC deps."""
        unlisted = self.prompts.get(compressor) or self.prompt  # a domain without its own prompt
        return sorted({unlisted, *(self.prompt_for(compressor, d) for d in self.domain_prompts)})


class TruncateConfig(Section):
    # compressor whose tokenizer and trace lengths define the token budget (the most aggressive one)
    compressor: str


class JudgeConfig(Section):
    engine: BackendConfig
    prompt: str = "prompts/judge.md"
    max_raw_chars: int = Field(40_000, ge=100)
    max_compressed_chars: int = Field(12_000, ge=100)
    # the rationale's length bound in the decoding grammar (characters; schema.JudgeVerdict allows 2000): a
    # small judge that loops inside the rationale ("no, no, no, ...") then still closes its JSON within
    # sampling.max_tokens instead of being cut off unparsed
    max_rationale_chars: int = Field(2000, ge=1, le=2000)
    sampling: SamplingConfig = Field(default_factory=lambda: SamplingConfig(temperature=0.0, max_tokens=512))


class VerifyConfig(Section):
    """Source ``compressed-verified`` (beyond the paper): per trace, the shortest compression that a verifier
    model, reading only the question and the compressed reasoning, answers correctly and that the judge
    calls ``faithful``."""

    engine: BackendConfig
    prompt: str = "prompts/verify.md"
    sampling: SamplingConfig = Field(default_factory=lambda: SamplingConfig(temperature=0.0, max_tokens=512))
    # no compression qualifies: train on the raw trace ("raw") or leave the trace out ("drop")
    fallback: Literal["raw", "drop"] = "raw"
    # compressed reasoning is middle-truncated to this many chars for the verifier (as the judge's input)
    max_reasoning_chars: int = Field(12_000, ge=100)


class IftConfig(Section):
    """Source ``ift`` (beyond the paper; arXiv 2509.22193): the same teacher answering the same questions
    without reasoning, for instruction tuning a (larger) student at equal compute.  Rejection-sampled like
    ``generate`` (``generate.rounds`` rounds, graded by the same answer cascade) on the questions of the
    teacher's ``raw`` traces; the rows carry no reasoning."""

    # the teacher's prompt without the think instruction
    prompt: str = "prompts/ift.md"
    # teacher id -> chat-template kwargs merged over teachers.<T>.chat_template_kwargs that switch its
    # reasoning off: {enable_thinking: false} (Qwen3.5), {reasoning_effort: low} (gpt-oss, which always reasons:
    # its lowest effort; the reasoning is dropped and only the final answer kept)
    chat_template_kwargs: dict[str, dict[str, Any]] = Field(default_factory=dict)
    # an answer without reasoning is short: a small cap (tokens) keeps a teacher that reasons anyway from
    # running long, and such a completion ends "truncated", counted apart
    sampling: SamplingConfig = Field(default_factory=lambda: SamplingConfig(temperature=0.7, max_tokens=512))


class BuildConfig(Section):
    license: str = "apache-2.0"
    shard_rows: int = Field(50_000, ge=1)
    pretty_name: str = "Compress-Distill traces"
    # also publish config `attempts`: every teacher attempt with its extraction rule and correctness
    # (preference pairs, error analysis); off by default (it holds the incorrect answers too)
    attempts: bool = False
    # also publish config `eval-questions`: the evaluation split's questions and answers (off by default:
    # a published test set ends up in future training corpora)
    eval_questions: bool = False


TEACHER_SLOT = "{teacher}"  # placeholder in publish.repo_id


class PublishConfig(Section):
    enabled: bool = False
    # one Hub dataset repo per teacher: `{teacher}` in the id is replaced by the teacher id (required when
    # grid.teachers has more than one teacher; see Params.published_repo_id)
    repo_id: str | None = None
    tag: str | None = None
    private: bool = False

    @model_validator(mode="after")
    def _repo_when_enabled(self) -> PublishConfig:
        if self.enabled and not self.repo_id:
            raise ValueError("publish.enabled is true but publish.repo_id is empty; set it to 'org/name'")
        return self


class TracesConfig(Section):
    source: Literal["generate", "hub"] = "generate"
    # with source: hub -- one published dataset repo per teacher id
    repo_ids: dict[str, str] = Field(default_factory=dict)
    revision: str = "main"


# --------------------------------------------------------------------------------------------- students
class StudentConfig(Section):
    model: str
    chat_template: str | None = None  # path to a Jinja template for base models that ship none
    max_tokens_eval: int | None = None

    @field_validator("model")
    @classmethod
    def _model(cls, v: str) -> str:
        return _check_model_id(v)


class LoraConfig(Section):
    r: int = Field(64, ge=1)
    alpha: int = Field(128, ge=1)
    dropout: float = Field(0.05, ge=0.0, lt=1.0)
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    learning_rate: float = Field(2e-4, gt=0)


class FullConfig(Section):
    learning_rate: float = Field(1e-5, gt=0)


class TrainConfig(Section):
    seq_len: int = Field(16_384, ge=32)
    micro_batch_size: int = Field(1, ge=1)
    grad_accum: int = Field(8, ge=1)
    epochs: float = Field(1.0, gt=0)
    max_steps: int | None = Field(None, ge=1)
    warmup_ratio: float = Field(0.1, ge=0.0, lt=1.0)
    weight_decay: float = Field(0.0, ge=0.0)
    max_grad_norm: float = Field(1.0, gt=0)
    gradient_checkpointing: bool = True
    packing: bool = True
    # rows longer than seq_len: drop them (counted) or truncate them (counted)
    overlong: Literal["drop", "truncate"] = "drop"
    # epochs: `epochs` passes over the run's own source; compute_matched: `epochs` x reference tokens
    # (budget_tokens, else the teacher's raw source); flops: every run trains to flops_budget training FLOPs
    # (~6 x the student's parameters x trained tokens, flops.py), whatever its source and student
    budget: Literal["epochs", "compute_matched", "flops"] = "epochs"
    # compute_matched reference: trainable tokens per epoch every source is trained on; None = the same
    # teacher's raw source tokenised for this student (data/hub/<teacher>/raw)
    budget_tokens: int | None = Field(None, ge=1)
    # budget flops: training FLOPs of every run (e.g. 1e18; the train metrics' train_flops of a reference
    # run trained by epochs tell what one epoch of a source costs)
    flops_budget: float | None = Field(None, gt=0)
    save_every_steps: int = Field(50, ge=1)
    seed: int = 0
    # share of the source's rows held out for the validation loss (paper §4: 5%), picked by hashing each row
    # id with `seed`; 0 disables.  Any fraction > 0 holds out at least 1 row of a source with >= 2 rows and
    # always leaves at least 1 row to train on.
    val_fraction: float = Field(0.05, ge=0.0, le=0.5)
    # answer-only targets (rows without reasoning): "strip" drops the whole think block (paper §3.3); "keep_empty"
    # trains "<think>\n\n</think>\n\n" before the response (beyond the paper).  A template whose generation
    # prompt pre-fills <think> (Qwen3.5) always closes the block it opened.
    answer_only_think: Literal["strip", "keep_empty"] = "strip"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    lora: LoraConfig = Field(default_factory=LoraConfig)
    full: FullConfig = Field(default_factory=FullConfig)

    @model_validator(mode="after")
    def _budget(self) -> TrainConfig:
        if self.budget == "flops" and self.flops_budget is None:
            raise ValueError(
                "train.budget is flops but train.flops_budget is not set; give the training FLOPs of every run "
                "(e.g. 1e18), or use budget: epochs"
            )
        return self


class EvaluateConfig(Section):
    engine: StudentEngineConfig = Field(default_factory=StudentEngineConfig)
    max_new_tokens: int = Field(8192, ge=1)
    max_per_dataset: int | None = Field(None, ge=1)
    # beyond the paper: every run evaluated again at each of these decoding caps (tokens), an extra
    # evaluate variant `evaluate_cap@<run>-cap<N>`, to show how much the main cap understates a source
    extra_caps: list[int] = Field(default_factory=list)

    @field_validator("extra_caps")
    @classmethod
    def _caps(cls, v: list[int]) -> list[int]:
        if any(c < 1 for c in v) or len(set(v)) != len(v):
            raise ValueError("extra_caps must be distinct positive token counts, e.g. [16384]")
        return v


class ReportConfig(Section):
    watts_per_gpu_hour: float = Field(805.0, gt=0)  # 700 W H100 SXM TDP x PUE 1.15
    g_co2_per_kwh: float = Field(79.0, ge=0)
    bootstrap_samples: int = Field(1000, ge=10)
    seed: int = 0
    # the report's first lines: what this run is and what it is not (the demo says "a smoke test")
    note: str = ""


# --------------------------------------------------------------------------------------------- grid
class GridExclusion(Section):
    """Runs matching every given field are left out of the grid."""

    teacher: str | None = None
    student: str | None = None
    method: Method | None = None
    source: str | None = None
    # a seed of grid.seeds: spread measured on some run groups only, e.g. {source: ift, seed: 1}
    seed: int | None = None


class GridConfig(Section):
    teachers: list[str]
    students: list[str]
    methods: list[Method]
    # "raw", "compressed-<C>", "truncated", "answer-only", "compressed-verified", "ift"
    sources: list[str]
    exclude: list[GridExclusion] = Field(default_factory=list)
    # beyond the paper: every run trained once per seed (overriding train.seed); None: one run with
    # train.seed.  Run names gain "-s<seed>" only when more than one seed is listed.
    seeds: list[int] | None = None

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and (not v or len(set(v)) != len(v) or any(s < 0 for s in v)):
            raise ValueError("grid.seeds must be a non-empty list of distinct seeds >= 0, e.g. [0, 1, 2]")
        return v


# --------------------------------------------------------------------------------------------- topology
STRATEGIES = ("single", "ddp", "fsdp2")


class TopologyRule(Section):
    """GPUs of the train runs matching every given field (shell-style patterns: ``source: compressed-*``)."""

    teacher: str | None = None
    student: str | None = None
    method: Method | None = None
    source: str | None = None
    # GPUs of one run, all on one node (one rank per GPU); 0: no GPU (CPU ranks)
    gpus: int = Field(ge=0)
    # ranks `accelerate launch` starts; None: one per GPU (or 1 without GPUs).  Without GPUs, ranks > 1 form a
    # gloo (CPU) DDP group -- how the CPU tests exercise the launch
    processes: int | None = Field(None, ge=1)
    # None: single for one rank, fsdp2 (full shard) for full fine-tuning on GPUs, ddp otherwise
    strategy: Literal["single", "ddp", "fsdp2"] | None = None

    def matches(self, run: dict[str, str]) -> bool:
        fields = {
            "teacher": self.teacher,
            "student": self.student,
            "method": self.method,
            "source": self.source,
        }
        return all(fnmatch.fnmatchcase(run[k], v) for k, v in fields.items() if v is not None)

    @model_validator(mode="after")
    def _consistent(self) -> TopologyRule:
        ranks = self.ranks
        if self.gpus and ranks != self.gpus:
            raise ValueError(
                f"processes {ranks} with gpus {self.gpus}: a GPU run starts one rank per GPU; drop processes "
                "or set it to gpus"
            )
        if self.strategy == "single" and ranks > 1:
            raise ValueError(
                f"strategy 'single' runs one process but {ranks} ranks are asked; use ddp or fsdp2"
            )
        if self.strategy in ("ddp", "fsdp2") and ranks == 1:
            raise ValueError(
                f"strategy {self.strategy!r} needs 2 or more ranks (gpus or processes); use single"
            )
        if self.strategy == "fsdp2" and not self.gpus:
            raise ValueError("strategy 'fsdp2' needs GPUs (gpus >= 2); CPU ranks use ddp")
        return self

    @property
    def ranks(self) -> int:
        return self.processes or max(self.gpus, 1)


class TopologyConfig(Section):
    """How many GPUs each train run gets and how its ranks split the work (docs/architecture.md §7; paper Table 11).

    ``train`` rules are tried in order and the first match wins; a run no rule matches is one process on
    ``default_gpus`` GPUs.  The result is written per run into plan.yaml and the stage command, so changing
    one run's GPUs re-runs that run only.
    """

    gpus_per_node: int = Field(8, ge=1)  # a run never spans nodes (the paper: one node per run)
    default_gpus: int = Field(0, ge=0)
    train: list[TopologyRule] = Field(default_factory=list)
    # SLURM defaults of `compress-distill grid submit` (flags override them)
    partition: str | None = None
    account: str | None = None
    time: str | None = None  # SLURM time limit, e.g. "12:00:00"

    @model_validator(mode="after")
    def _fits_a_node(self) -> TopologyConfig:
        for i, rule in enumerate(self.train):
            if rule.gpus > self.gpus_per_node or (rule.gpus and self.gpus_per_node % rule.gpus):
                raise ValueError(
                    f"train[{i}] asks {rule.gpus} GPUs but a node has {self.gpus_per_node} "
                    "(topology.gpus_per_node): a run uses one node, so its GPUs must divide the node's"
                )
        if self.default_gpus > self.gpus_per_node:
            raise ValueError(f"default_gpus {self.default_gpus} exceeds gpus_per_node {self.gpus_per_node}")
        return self

    def rule_for(self, run: dict[str, str]) -> TopologyRule:
        """The first rule matching ``run``, else one process on ``default_gpus``."""
        for rule in self.train:
            if rule.matches(run):
                return rule
        return TopologyRule(gpus=self.default_gpus, processes=1 if self.default_gpus <= 1 else None)


# --------------------------------------------------------------------------------------------- root
class Params(Section):
    seed: int = 0
    prepare: PrepareConfig
    teachers: dict[str, TeacherConfig]
    compressors: dict[str, CompressorConfig]
    generate: GenerateConfig = Field(default_factory=GenerateConfig)
    compress: CompressConfig = Field(default_factory=CompressConfig)
    truncate: dict[str, TruncateConfig] = Field(default_factory=dict)  # teacher id -> settings
    judge: JudgeConfig
    # None: no verify stage and no `compressed-verified` source
    verify: VerifyConfig | None = None
    # None: no ift stage and no `ift` source
    ift: IftConfig | None = None
    build: BuildConfig = Field(default_factory=BuildConfig)
    publish: PublishConfig = Field(default_factory=PublishConfig)
    traces: TracesConfig = Field(default_factory=TracesConfig)
    students: dict[str, StudentConfig]
    train: TrainConfig = Field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)
    grid: GridConfig
    topology: TopologyConfig = Field(default_factory=TopologyConfig)

    @field_validator("teachers", "compressors")
    @classmethod
    def _tokens_countable(cls, v: dict[str, BackendConfig], info: ValidationInfo) -> dict[str, BackendConfig]:
        # generate, compress and truncate count these engines' output tokens with their tokenizer
        for ident, cfg in v.items():
            if not is_loadable_model_id(cfg.tokenizer_id):
                key = f"{info.field_name}.{ident}"
                raise ValueError(
                    f"{key}.model {cfg.model!r} is a served model name, not a Hub id or local directory, so "
                    f"the trace stages cannot count its tokens: set {key}.tokenizer to a Hub id or local "
                    "directory holding its tokenizer"
                )
        return v

    @model_validator(mode="after")
    def _cross_refs(self) -> Params:
        def known(kind: str, ids: list[str], valid: dict[str, Any]) -> None:
            bad = [i for i in ids if i not in valid]
            if bad:
                raise ValueError(f"{kind} {bad} not defined; defined: {', '.join(valid) or '(none)'}")

        for ident in [*self.teachers, *self.compressors, *self.students]:
            if not ident or any(ch in ident for ch in "@/ .") or ident != ident.lower():
                raise ValueError(
                    f"id {ident!r} must be a short lower-case token without '@', '/', '.' or spaces "
                    "(it becomes part of DVC stage names and file paths)"
                )
        overlap = set(self.teachers) & set(self.compressors)
        if overlap:
            raise ValueError(f"ids {sorted(overlap)} are used for both a teacher and a compressor")
        known("grid.teachers", self.grid.teachers, self.teachers)
        known("compress.prompts", list(self.compress.prompts), self.compressors)
        known("compress.prompt_sets", list(self.compress.prompt_sets), self.compressors)
        both = [
            c for c, v in self.compress.prompt_sets.items() if v == "domain" and c in self.compress.prompts
        ]
        if both:
            raise ValueError(
                f"compress.prompt_sets says 'domain' for {both}, but compress.prompts gives them their own prompt, "
                "which always wins; drop one of the two"
            )
        known("grid.students", self.grid.students, self.students)
        known("truncate teachers", list(self.truncate), self.teachers)
        known("truncate.*.compressor", [t.compressor for t in self.truncate.values()], self.compressors)
        for key, engine in self.engines():
            # an openai backend's servers may sit on other nodes; hf and vllm run inside the stage's job
            if engine.backend != "openai" and engine.parallel_gpus > self.topology.gpus_per_node:
                raise ValueError(
                    f"{key}: tensor_parallel_size x data_parallel_size = {engine.parallel_gpus} GPUs but a node "
                    f"has {self.topology.gpus_per_node} (topology.gpus_per_node) and an engine runs on one node; "
                    "lower them, or spread replicas over nodes with backend openai (base_urls or launch)"
                )
        for i, rule in enumerate(self.topology.train):
            for kind, value, valid in (
                ("teacher", rule.teacher, self.teachers),
                ("student", rule.student, self.students),
            ):
                if value is not None and not any(fnmatch.fnmatchcase(v, value) for v in valid):
                    raise ValueError(
                        f"topology.train[{i}].{kind} {value!r} matches no {kind}; defined: {', '.join(valid)}"
                    )
        if VERIFIED in self.compressors:
            raise ValueError(
                f"compressor id {VERIFIED!r} is reserved for source {compressed_source(VERIFIED)!r} (the verify "
                "stage); rename that compressor"
            )
        valid_sources = [*PLAIN_SOURCES, *map(compressed_source, self.compressors)]
        if self.verify is not None:
            valid_sources.append(compressed_source(VERIFIED))
        elif compressed_source(VERIFIED) in self.grid.sources:
            raise ValueError(
                f"grid.sources lists {compressed_source(VERIFIED)!r} but params have no `verify` section; add "
                "verify.engine (a backend like judge.engine) or drop the source"
            )
        if self.ift is not None:
            known("ift.chat_template_kwargs", list(self.ift.chat_template_kwargs), self.teachers)
        elif IFT in self.grid.sources:
            raise ValueError(
                f"grid.sources lists {IFT!r} but params have no `ift` section; add ift: {{}} (prompt "
                "prompts/ift.md) or drop the source"
            )
        known("grid.sources", self.grid.sources, dict.fromkeys(valid_sources))
        repo_id = self.publish.repo_id
        if self.publish.enabled and repo_id and TEACHER_SLOT not in repo_id and len(self.grid.teachers) > 1:
            raise ValueError(
                f"publish.repo_id {repo_id!r} names one repo but grid.teachers has {len(self.grid.teachers)} "
                f"teachers and each publishes to a repo of its own: put {TEACHER_SLOT} in it, e.g. "
                f"'{repo_id}-{TEACHER_SLOT}'"
            )
        if self.traces.source == "hub":
            missing = [t for t in self.grid.teachers if t not in self.traces.repo_ids]
            if missing:
                raise ValueError(
                    f"traces.source is 'hub' but traces.repo_ids has no repo for teacher(s) {missing}; "
                    "add e.g. traces.repo_ids.<teacher>: org/name"
                )
        return self

    def engines(self) -> list[tuple[str, BackendConfig]]:
        """Every model engine of the params with its key path (``teachers.qwen397b``, ``judge.engine``)."""
        out: list[tuple[str, BackendConfig]] = [
            *((f"teachers.{k}", v) for k, v in self.teachers.items()),
            *((f"compressors.{k}", v) for k, v in self.compressors.items()),
            ("judge.engine", self.judge.engine),
        ]
        if self.verify is not None:
            out.append(("verify.engine", self.verify.engine))
        out.append(("evaluate.engine", self.evaluate.engine))
        return out

    def published_repo_id(self, teacher: str) -> str | None:
        """The Hub dataset repo that holds ``teacher``'s traces: ``publish.repo_id`` with ``{teacher}`` filled
        in (one repo per teacher, so teachers never touch each other's files or tags)."""
        repo_id = self.publish.repo_id
        return repo_id.replace(TEACHER_SLOT, teacher) if repo_id else None


def _format_errors(err: ValidationError, source: str, root: type[BaseModel] | None = None) -> str:
    lines = [f"invalid params in {source}:"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(root)"
        if e["type"] == "extra_forbidden":
            parent = e["loc"][:-1]
            model = _model_at(root or Params, parent)
            valid = ", ".join(model.model_fields) if model else "?"
            close = difflib.get_close_matches(str(e["loc"][-1]), list(model.model_fields) if model else [], 1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            lines.append(f"  - {key}: unknown key{hint}; valid keys here: {valid}")
        elif e["type"] == "missing":
            lines.append(f"  - {key}: required key is missing")
        else:
            msg = e["msg"].removeprefix("Value error, ")
            shown = _shown_input(e)
            lines.append(f"  - {key}: {msg} (got {shown})" if shown else f"  - {key}: {msg}")
    return "\n".join(lines)


def _shown_input(error: Any) -> str | None:
    """The offending value as the message quotes it: never a dict, never anything shaped like a secret."""
    if "input" not in error or isinstance(error["input"], dict):
        return None
    shown = repr(error["input"])
    if error["loc"] and error["loc"][-1] == "api_key_env":
        return None  # whatever was put there may be the key itself
    return redact(shown)


def _model_at(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """Walk field annotations along an error location to find the section model, for 'valid keys'."""
    import typing

    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(str(part))
            if field is None:
                continue  # a dict key (e.g. a teacher id): the dict's value type was already unwrapped
            current = field.annotation
        # unwrap dict[str, X], list[X], X | None
        while (origin := typing.get_origin(current)) is not None:
            args = [a for a in typing.get_args(current) if a is not type(None)]
            current = args[-1] if origin is dict else args[0]
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def parse_params(data: dict[str, Any], source: str = "params") -> Params:
    try:
        return Params.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_errors(err, source)) from None


def load_params(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"params file {path} not found; run from the repository root or pass --params")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of sections, got {type(data).__name__}")
    return parse_params(data, str(path))


def backend_config(cfg: dict[str, Any] | BackendConfig) -> BackendConfig:
    """Validate a backend dict (the public ``make_backend`` accepts either form)."""
    if isinstance(cfg, BackendConfig):
        return cfg
    try:
        return BackendConfig.model_validate(cfg)
    except ValidationError as err:
        raise ConfigError(_format_errors(err, "backend config", BackendConfig)) from None


def pick(mapping: Mapping[str, Any], key: str, what: str) -> Any:
    """``mapping[key]`` with an error that lists the defined ids (``--teacher qwen`` typo -> fix-it)."""
    if key not in mapping:
        raise ConfigError(
            f"{what} {key!r} is not defined in params; defined: {', '.join(mapping) or '(none)'}"
        )
    return mapping[key]
