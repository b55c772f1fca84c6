"""The student trainer: LoRA or full fine-tuning over packed, assistant-masked rows.

One loop serves a laptop and a cluster: it runs single-process by default and unchanged under
``accelerate launch`` (DDP, or FSDP2 with ``configs/accelerate_fsdp2.yaml``).  Choices, and why:

- **Schedule.** Units (packed bins, or single rows without packing) are streamed in a seeded permutation per
  epoch until the token budget is met: ``epochs x trainable tokens`` of the source, or under
  ``budget: compute_matched`` ``epochs x reference tokens`` (``train.budget_tokens``, else the same teacher's
  ``raw`` source), so every source sees the same number of trained tokens (to within one bin); under
  ``budget: flops`` until the trained input tokens reach ``train.flops_budget / (6 x parameters)``, so every
  run, whatever its source and student, costs the same training FLOPs (to within one bin; ``flops.py``).
  ``max_steps`` overrides the budget with an exact step count.  Every rank derives the same schedule, so no
  sampler state has to be saved: resuming is "skip to step N".
- **Loss.** Sum of per-token cross-entropy over the step's micro-batches divided by the step's total target
  count (known up front from the schedule), i.e. the token-weighted mean over the whole optimizer step, exact
  under gradient accumulation and across ranks (x world size, because DDP/FSDP average gradients).
- **Optimiser.** AdamW (bitsandbytes 8-bit on a single CUDA device when installed, as in the paper; fused
  torch AdamW otherwise), cosine schedule with ``warmup_ratio`` linear warm-up, global-norm clipping.
  Weight decay skips biases and norm weights (1-D tensors).
- **LoRA targets.** Exactly ``train.lora.target_modules`` (the paper's seven projections); a target that
  matches no Linear layer is an error listing the model's Linear layer names.  Linear-attention projections
  (Gated DeltaNet) are adapted only when named there.
- **Health.** A non-finite loss or gradient norm stops the run before that step's update
  (``TrainingDiverged``): no weights, no metrics.
- **Validation.** The held-out rows' loss (``train.val_fraction``) at every checkpoint step and after the last
  step, in eval mode; it goes into the loss history (dvclive ``val_loss``) and the metrics.
- **Precision.** bf16 autocast on CUDA (LoRA base weights stored in bf16, adapters and full-FT master weights
  in fp32, TF32 matmuls allowed); fp32 on CPU, where results are bitwise reproducible.
- **Checkpoints.** ``accelerate.save_state`` (model, optimiser, scheduler, every RNG) every
  ``save_every_steps`` into ``checkpoint_dir/checkpoint-N`` (written under a temporary name, renamed when
  complete; only the newest is kept).  For LoRA only the trainable tensors are stored.  A checkpoint whose
  fingerprint (run, train/student params, data shards, world size) differs is ignored.  The loss history
  travels with the checkpoint and is replayed into dvclive, so the curve of a resumed run is the curve of an
  uninterrupted one.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from compress_distill.config import ConfigError, Method, StudentConfig, TrainConfig
from compress_distill.progress import Progress, progress_log
from compress_distill.schema import umask_mode
from compress_distill.training.data import Encoded
from compress_distill.training.packing import (
    check_packing,
    has_linear_attention,
    loss_sum,
    pack_bfd,
    packed_batch,
    padded_batch,
    plain_causal,
    register_varlen_sdpa,
)

log = logging.getLogger(__name__)

CHECKPOINT_PREFIX = "checkpoint-"
PROGRESS_FILE = "progress.json"
TRAINING_CONFIG = "training_config.json"


@dataclass
class TrainJob:
    """Everything one training run needs besides the encoded rows."""

    run: str
    base_model: str  # the params id (e.g. "smollm2-135m-instruct"); evaluation resolves it again
    model_path: str  # what from_pretrained loads (modelhub.resolve_model(base_model))
    method: Method
    source: str
    cfg: TrainConfig
    student: StudentConfig
    out_dir: Path
    checkpoint_dir: Path
    live_dir: Path | None = None
    teacher: str = ""
    student_id: str = ""
    reference_tokens: int | None = None  # compute_matched: trainable tokens per epoch every source matches
    data_fingerprint: str = ""
    flops_tokens: int | None = None  # budget flops: input tokens (prompt + target) that reach the budget


@dataclass
class Schedule:
    """The deterministic order of units (bins or rows) and how each step splits them over ranks."""

    units: list[list[int]]  # row indices per unit
    order: list[int]  # stream of unit indices, epoch after epoch
    micro_batch_size: int
    grad_accum: int
    world_size: int
    epochs_effective: float
    unit_targets: list[int] = field(default_factory=list)
    unit_tokens: list[int] = field(default_factory=list)

    @property
    def global_batch(self) -> int:
        return self.micro_batch_size * self.grad_accum * self.world_size

    @property
    def steps(self) -> int:
        return math.ceil(len(self.order) / self.global_batch)

    def step_units(self, step: int) -> list[int]:
        return self.order[step * self.global_batch : (step + 1) * self.global_batch]

    def step_targets(self, step: int) -> int:
        return sum(self.unit_targets[u] for u in self.step_units(step))

    def step_tokens(self, step: int) -> int:
        return sum(self.unit_tokens[u] for u in self.step_units(step))

    def micro_batches(self, step: int, rank: int) -> list[tuple[list[int], bool]]:
        """This rank's micro-batches of ``step`` as (units, active).  Every rank gets the same count (FSDP
        collectives need it); a rank short of data repeats a unit with ``active=False`` (zero loss weight)."""
        units = self.step_units(step)
        mbs = [units[i : i + self.micro_batch_size] for i in range(0, len(units), self.micro_batch_size)]
        per_rank = math.ceil(len(mbs) / self.world_size)
        mine = [(mb, True) for mb in mbs[rank :: self.world_size]]
        mine += [(mbs[0], False)] * (per_rank - len(mine))
        return mine


def build_schedule(
    enc: Encoded,
    cfg: TrainConfig,
    world_size: int,
    reference_tokens: int | None,
    flops_tokens: int | None = None,
) -> Schedule:
    if len(enc) == 0:
        raise ValueError("no rows left to train on (all rejected); see the rejects in the metrics file")
    n_prompt = enc.n_prompt
    lengths = enc.lengths
    units = pack_bfd(lengths, cfg.seq_len) if cfg.packing else [[i] for i in range(len(enc))]
    unit_targets = [sum(lengths[i] - n_prompt[i] for i in u) for u in units]
    unit_tokens = [sum(lengths[i] for i in u) for u in units]
    source_targets = sum(unit_targets)
    # what the budget counts per unit: target tokens (epochs, compute_matched) or every non-padding input
    # token, the tokens the ~6·N·tokens FLOP estimate counts (flops)
    counted = unit_targets
    if cfg.budget == "flops":
        if not flops_tokens:
            raise ConfigError("train.budget is flops but no token budget (train.flops_budget) was given")
        target, counted = float(flops_tokens), unit_tokens
    elif cfg.budget == "compute_matched":
        if not reference_tokens:
            raise ConfigError("train.budget is compute_matched but no reference token count was given")
        target = cfg.epochs * reference_tokens
    else:
        target = cfg.epochs * source_targets
    gb = cfg.micro_batch_size * cfg.grad_accum * world_size
    want_units = cfg.max_steps * gb if cfg.max_steps else None
    order: list[int] = []
    seen = 0  # what the budget counts
    seen_targets = 0
    epoch = 0
    while (seen < target) if want_units is None else (len(order) < want_units):
        # one fresh permutation per epoch, seeded by (seed, epoch): identical on every rank and every restart
        for u in np.random.default_rng([cfg.seed, epoch]).permutation(len(units)).tolist():
            if (seen >= target) if want_units is None else (len(order) >= want_units):
                break
            order.append(u)
            seen += counted[u]
            seen_targets += unit_targets[u]
        epoch += 1
    return Schedule(
        units=units,
        order=order,
        micro_batch_size=cfg.micro_batch_size,
        grad_accum=cfg.grad_accum,
        world_size=world_size,
        epochs_effective=seen_targets / source_targets if source_targets else 0.0,
        unit_targets=unit_targets,
        unit_tokens=unit_tokens,
    )


def warmup_steps(warmup_ratio: float, total_steps: int) -> int:
    """Linear warm-up length in optimizer steps: ``ceil(ratio x steps)``, capped at ``total_steps - 1``.
    HF's warm-up starts at learning rate 0, so a warm-up that rounds up to every step (ceil(0.1 x 1) = 1 of
    1) would leave the whole run at learning rate 0, the model untouched; the cap keeps the last rate > 0."""
    return max(0, min(math.ceil(warmup_ratio * total_steps), total_steps - 1))


class TrainingDiverged(ConfigError):
    """A non-finite loss or gradient norm: the run stops before the update, writing no weights or metrics.

    A params problem in practice (a learning rate far too high, no clipping), so it is reported like one."""


def check_finite(
    run: str, step: int, total: int, loss: float, grad_norm: float, lr_key: str, lr: float
) -> None:
    """Raise ``TrainingDiverged`` unless this step's loss and gradient norm are finite numbers."""
    if math.isfinite(loss) and math.isfinite(grad_norm):
        return
    raise TrainingDiverged(
        f"training {run} diverged at step {step} of {total}: loss {loss}, gradient norm {grad_norm}; "
        f"no weights or metrics were written; lower {lr_key} (now {lr:g}) or train.max_grad_norm, and check "
        "the source rows"
    )


def validation_loss(
    model: Any,
    accelerator: Any,
    val: Encoded,
    cfg: TrainConfig,
    make_batch: Callable[[list[tuple[np.ndarray, int]]], dict[str, Any]],
) -> float:
    """Token-weighted mean cross-entropy over the validation rows' targets, in eval mode (no dropout).

    The rows are batched like training rows (packed bins of ``seq_len``, or one row each), one bin per
    forward, dealt round-robin over the ranks; a rank short of bins repeats one with zero weight, since FSDP
    forwards are collective.  Consumes no RNG, so a run's weights do not depend on when it validated."""
    import torch

    units = pack_bfd(val.lengths, cfg.seq_len) if cfg.packing else [[i] for i in range(len(val))]
    world, rank = accelerator.num_processes, accelerator.process_index
    per_rank = math.ceil(len(units) / world)
    mine = [(u, True) for u in units[rank::world]]
    mine += [(units[0], False)] * (per_rank - len(mine))
    totals = torch.zeros(2, dtype=torch.float64, device=accelerator.device)  # (loss sum, target count)
    model.eval()
    with torch.no_grad(), accelerator.autocast():
        for unit, active in mine:
            batch = make_batch([(val.ids[i], val.n_prompt[i]) for i in unit])
            loss, n = loss_sum(model, batch, device=accelerator.device)
            if active:
                totals += torch.stack([loss.double(), loss.new_tensor(float(n), dtype=torch.float64)])
    model.train()
    loss_total, count = accelerator.reduce(totals, reduction="sum").tolist()
    return loss_total / count if count else float("nan")


# --------------------------------------------------------------------------------------------- model
def _device_kind(cfg: TrainConfig) -> str:
    import torch

    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device is cuda but no CUDA device is visible; set train.device: cpu or auto")
    if cfg.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return cfg.device


def attention_implementation(device: str, packing: bool, config: Any) -> str:
    """flash-attn's varlen kernels when installed on CUDA; else, for packed rows of a plain causal model, SDPA
    per packed sample (``sdpa_varlen``); else SDPA with the block-diagonal mask transformers derives from
    ``position_ids`` (padded rows, sliding-window or sink attention)."""
    if device == "cuda" and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    if packing and plain_causal(config):
        return register_varlen_sdpa()
    return "sdpa"


def lora_targets(model: Any, wanted: Sequence[str]) -> list[str]:
    """The configured ``train.lora.target_modules``, checked against the model's Linear layers.

    Exactly these are adapted (the paper's seven projections by default): nothing is added behind the
    user's back -- adapting the Linear layers of linear-attention blocks (Gated DeltaNet ``in_proj_*``)
    changes capacity, so it takes naming them in params.  A target matches like peft's: the full module name or its
    dotted suffix.  One that matches nothing is an error listing the model's Linear layer names.
    """
    import torch

    linear = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    unmatched = [t for t in wanted if not any(n == t or n.endswith(f".{t}") for n in linear)]
    if unmatched or not wanted:
        leaves = sorted({n.rsplit(".", 1)[-1] for n in linear})
        raise ConfigError(
            f"train.lora.target_modules {list(wanted)}: {unmatched or 'empty list'} match no Linear layer of "
            f"this model; set it to names among its Linear layers: {', '.join(leaves)}"
        )
    return list(dict.fromkeys(wanted))


def add_lora(model: Any, cfg: TrainConfig) -> tuple[Any, list[str]]:
    """Wrap ``model`` with peft LoRA on exactly ``train.lora.target_modules`` (see ``lora_targets``)."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    targets = lora_targets(model, cfg.lora.target_modules)
    peft_cfg = PeftLoraConfig(
        r=cfg.lora.r,
        lora_alpha=cfg.lora.alpha,
        lora_dropout=cfg.lora.dropout,
        target_modules=targets,
        bias="none",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, peft_cfg), targets


def make_optimizer(model: Any, lr: float, weight_decay: float, device: str, distributed: bool) -> Any:
    import torch

    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    groups = [g for g in groups if g["params"]]
    if device == "cuda" and not distributed and importlib.util.find_spec("bitsandbytes") is not None:
        import bitsandbytes as bnb  # the paper's adamw_bnb_8bit: optimiser state in 8 bits

        return bnb.optim.AdamW8bit(groups, lr=lr)
    return torch.optim.AdamW(groups, lr=lr, fused=device == "cuda")


# --------------------------------------------------------------------------------------------- checkpoints
def fingerprint(job: TrainJob, world_size: int) -> str:
    """What a checkpoint must match to be resumed: params of the run, its data and the world size."""
    blob = json.dumps(
        {
            "run": job.run,
            "method": job.method,
            "base_model": job.base_model,
            "train": job.cfg.model_dump(mode="json"),
            "student": job.student.model_dump(mode="json"),
            "data": job.data_fingerprint,
            "reference_tokens": job.reference_tokens,
            "world_size": world_size,
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def latest_checkpoint(root: Path, fp: str) -> tuple[Path, dict[str, Any]] | None:
    if not root.exists():
        return None
    found = []
    for d in root.glob(f"{CHECKPOINT_PREFIX}*"):
        prog = d / PROGRESS_FILE
        if d.is_dir() and prog.exists():
            state = json.loads(prog.read_text(encoding="utf-8"))
            if state.get("fingerprint") == fp:
                found.append((int(state["step"]), d, state))
            else:
                log.warning("ignoring checkpoint %s: it belongs to other params or data", d)
    if not found:
        return None
    _, path, state = max(found, key=lambda t: t[0])
    return path, state


class _TrainableStateHooks:
    """accelerate save/load hooks that store only trainable tensors (LoRA: adapters only, ~MBs, not GBs)."""

    def __init__(self, accelerator: Any) -> None:
        self.accelerator = accelerator

    def save(self, models: list[Any], weights: list[dict[str, Any]], output_dir: str) -> None:
        from safetensors.torch import save_file

        for i, model in enumerate(models):
            names = {n for n, p in model.named_parameters() if p.requires_grad}
            state = {k: v.detach().cpu().contiguous() for k, v in weights[i].items() if k in names}
            if self.accelerator.is_main_process:
                save_file(state, str(Path(output_dir) / f"trainable_{i}.safetensors"))
        weights.clear()  # accelerate itself then writes no (full) model file

    def load(self, models: list[Any], input_dir: str) -> None:
        from safetensors.torch import load_file

        for i, model in enumerate(models):
            state = load_file(str(Path(input_dir) / f"trainable_{i}.safetensors"))
            names = {n for n, p in model.named_parameters() if p.requires_grad}
            if set(state) != names:
                raise RuntimeError(
                    f"checkpoint {input_dir} holds {len(state)} trainable tensors, the model has {len(names)}; "
                    "delete the checkpoint directory to start over"
                )
            model.load_state_dict(state, strict=False)  # the frozen rest comes from the base model
        models.clear()


# --------------------------------------------------------------------------------------------- training
def _seed_everything(seed: int) -> None:
    from transformers import set_seed

    set_seed(seed)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    from compress_distill.schema import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


class _Live:
    """dvclive logger of the loss curve (main process only); ``None`` dir disables it."""

    def __init__(self, live_dir: Path | None, enabled: bool) -> None:
        self.live = None
        if live_dir is not None and enabled:
            from dvclive import Live

            # dvcyaml=False: the plot is declared in dvc.yaml; save_dvc_exp=False: DVC runs us, not vice versa
            self.live = Live(dir=str(live_dir), dvcyaml=False, save_dvc_exp=False, report=None, resume=False)

    CURVES = ("loss", "lr", "grad_norm", "tokens_per_s")

    def log(self, step: int, values: dict[str, float]) -> None:
        if self.live is None:
            return
        self.live.step = step
        for k in self.CURVES:
            self.live.log_metric(k, values[k])
        if "val_loss" in values:  # measured at checkpoint steps and the last step only
            self.live.log_metric("val_loss", values["val_loss"])
        self.live.make_summary()

    def close(self) -> None:
        if self.live is not None:
            self.live.end()


def train(job: TrainJob, enc: Encoded, tokenizer: Any, val: Encoded | None = None) -> dict[str, Any]:
    """Train one run on encoded rows; writes ``job.out_dir`` and returns the run's statistics.

    ``val``: held-out rows (``data.split_validation``), whose loss is measured at every checkpoint step and
    after the last step.  A non-finite loss or gradient norm raises ``TrainingDiverged`` before that step's
    update, so nothing is written."""
    import torch
    from accelerate import Accelerator
    from transformers import AutoConfig, AutoModelForCausalLM, get_cosine_schedule_with_warmup

    cfg = job.cfg
    t_start = time.perf_counter()
    device = _device_kind(cfg)
    accelerator = Accelerator(cpu=device == "cpu", mixed_precision="bf16" if device == "cuda" else "no")
    world, rank = accelerator.num_processes, accelerator.process_index
    fsdp = accelerator.distributed_type.name == "FSDP"
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    schedule = build_schedule(enc, cfg, world, job.reference_tokens, job.flops_tokens)
    total_steps = schedule.steps
    _seed_everything(cfg.seed)

    attn = attention_implementation(device, cfg.packing, AutoConfig.from_pretrained(job.model_path))
    # LoRA keeps the frozen base in bf16 on GPU (half the memory); full FT keeps fp32 master weights.
    load_dtype = torch.bfloat16 if device == "cuda" and job.method == "lora" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(job.model_path, dtype=load_dtype, attn_implementation=attn)
    model.config.use_cache = False
    linear_attn = has_linear_attention(model)
    # explicit boundaries for the varlen kernels (flash-attn, sdpa_varlen, linear attention); plain SDPA
    # derives its block-diagonal mask from position_ids
    boundaries = attn != "sdpa" or linear_attn
    fsdp_ckpt = bool(fsdp and getattr(accelerator.state.fsdp_plugin, "activation_checkpointing", False))
    if cfg.gradient_checkpointing and not fsdp_ckpt:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

    targets: list[str] = []
    if job.method == "lora":
        model, targets = add_lora(model, cfg)
        lr, lr_key = cfg.lora.learning_rate, "train.lora.learning_rate"
    else:
        lr, lr_key = cfg.full.learning_rate, "train.full.learning_rate"
    trainable_params = sum(p.numel() for p in model.parameters() if p.requires_grad)

    optimizer = make_optimizer(model, lr, cfg.weight_decay, device, distributed=world > 1)
    model, optimizer = accelerator.prepare(model, optimizer)
    if cfg.packing and len(enc) >= 2:
        # on the real (prepared) model, before any update: packed rows must not see each other.  Every rank
        # runs it (FSDP forwards are collective).  Probe rows: 24-token row tails (assistant text, distinct per
        # row; heads share the system prompt).  Tolerance is relative to the logit scale (see check_packing).
        probe = [(enc.ids[i][-24:], 1) for i in range(min(3, len(enc)))]
        tol = 1e-3 if device == "cpu" else 3e-2
        with accelerator.autocast():
            check_packing(model, probe, boundaries, device=accelerator.device, tol=tol)
    raw_opt = getattr(optimizer, "optimizer", optimizer)
    warmup = warmup_steps(cfg.warmup_ratio, total_steps)
    scheduler = get_cosine_schedule_with_warmup(raw_opt, warmup, total_steps)
    # not accelerator.prepare(scheduler): its wrapper steps once per process, which would distort the schedule
    accelerator.register_for_checkpointing(scheduler)
    hooks = _TrainableStateHooks(accelerator)
    if not fsdp:
        accelerator.register_save_state_pre_hook(hooks.save)
        accelerator.register_load_state_pre_hook(hooks.load)

    fp = fingerprint(job, world)
    start_step, history, tokens_done, train_seconds = 0, [], 0, 0.0
    resumed = latest_checkpoint(job.checkpoint_dir, fp)
    if resumed is not None:
        path, state = resumed
        accelerator.load_state(str(path))
        start_step, history = int(state["step"]), list(state["history"])
        tokens_done, train_seconds = int(state["tokens_done"]), float(state["train_seconds"])
        if accelerator.is_main_process:
            progress_log().info(
                "train %s: resumed from %s (step %d of %d)", job.run, path, start_step, total_steps
            )

    live = _Live(job.live_dir, accelerator.is_main_process)
    for rec in history:  # replay: the curve of a resumed run equals that of an uninterrupted one
        live.log(rec["step"], rec)

    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    seqs = list(zip(enc.ids, enc.n_prompt, strict=True))

    def make_batch(rows: list[tuple[np.ndarray, int]]) -> dict[str, Any]:
        return packed_batch(rows, boundaries=boundaries) if cfg.packing else padded_batch(rows, pad_id)

    def batch_of(units: Sequence[int]) -> dict[str, Any]:
        return make_batch([seqs[i] for u in units for i in schedule.units[u]])

    slots = 0  # token slots computed (incl. padding) and real tokens, this process, for the padding fraction
    real = 0
    # one progress display for the run (rank 0): a bar on a terminal, a line a minute in a job log
    progress = (
        Progress(total_steps, f"train {job.run}", unit="steps", initial=start_step)
        if accelerator.is_main_process
        else None
    )
    model.train()
    for step in range(start_step, total_steps):
        t0, c0 = time.perf_counter(), time.process_time()
        n_targets = schedule.step_targets(step)
        micro = schedule.micro_batches(step, rank)
        step_loss = torch.zeros((), device=accelerator.device)
        for i, (units, active) in enumerate(micro):
            batch = batch_of(units)
            sync = i == len(micro) - 1
            ctx = contextlib.nullcontext() if sync else accelerator.no_sync(model)
            with ctx, accelerator.autocast():
                loss, _ = loss_sum(model, batch, device=accelerator.device)
                weight = (world / n_targets) if active else 0.0
                accelerator.backward(loss * weight)
            if active:
                step_loss += loss.detach()
                slots += batch["input_ids"].numel()
                real += (
                    int(batch["attention_mask"].sum())
                    if "attention_mask" in batch
                    else batch["input_ids"].numel()
                )
        grad_norm = float(
            accelerator.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], cfg.max_grad_norm)
        )
        step_lr = float(scheduler.get_last_lr()[0])  # the rate this step's update uses
        mean_loss = float(accelerator.reduce(step_loss, reduction="sum")) / n_targets
        # both are global (reduced over ranks), so every rank stops here together
        check_finite(job.run, step + 1, total_steps, mean_loss, grad_norm, lr_key, lr)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        seconds = time.perf_counter() - t0
        train_seconds += seconds
        tokens_done += schedule.step_tokens(step)
        rec = {
            "step": step + 1,
            "loss": mean_loss,
            "lr": step_lr,
            "grad_norm": grad_norm,
            "tokens_per_s": schedule.step_tokens(step) / seconds,
            "seconds": seconds,
            # CPU time of this process: on a shared CPU it measures the work, not the neighbours' load
            "cpu_seconds": time.process_time() - c0,
            "tokens": schedule.step_tokens(step),  # real (non-padding) input tokens of the step, all ranks
        }
        validate = (step + 1) % cfg.save_every_steps == 0 or step + 1 == total_steps
        if val is not None and len(val) and validate:
            rec["val_loss"] = validation_loss(model, accelerator, val, cfg, make_batch)
        history.append(rec)
        live.log(step + 1, rec)
        if progress is not None:
            progress.update(1, rec["tokens"], extra=f"loss {mean_loss:.4f}, lr {step_lr:.2e}")
        if (step + 1) % cfg.save_every_steps == 0 and step + 1 < total_steps:
            _save_checkpoint(accelerator, job, step + 1, fp, history, tokens_done, train_seconds)
    if progress is not None:
        progress.close()
    live.close()

    stats = {
        "steps": total_steps,
        "resumed_from_step": start_step,
        "packed_sequences": len(schedule.units) if cfg.packing else 0,
        "units_trained": len(schedule.order),
        "epochs_effective": schedule.epochs_effective,
        "trainable_tokens": enc.trainable_tokens,
        "trained_target_tokens": sum(schedule.unit_targets[u] for u in schedule.order),
        "trained_tokens": sum(schedule.unit_tokens[u] for u in schedule.order),
        "padding_fraction": 1.0 - real / slots if slots else 0.0,
        # packed bins left empty if each were padded to seq_len (what padding-to-length packers waste)
        "bin_slack_fraction": (
            1.0 - enc.total_tokens / (len(schedule.units) * cfg.seq_len) if cfg.packing else 0.0
        ),
        "train_seconds": train_seconds,
        "tokens_per_s": tokens_done / train_seconds if train_seconds > 0 else 0.0,
        "final_loss": history[-1]["loss"] if history else float("nan"),
        "history": history,
        "first_loss": history[0]["loss"] if history else float("nan"),
        # the last validation loss (after the final step); NaN without validation rows
        "val_loss": next((r["val_loss"] for r in reversed(history) if "val_loss" in r), float("nan")),
        "val_rows": len(val) if val is not None else 0,
        "trainable_params": trainable_params,
        "gpus": world if device == "cuda" else 0,
        "world_size": world,
    }
    _save_outputs(
        accelerator,
        model,
        tokenizer,
        job,
        enc,
        stats,
        attn,
        {"lora_target_modules": targets, "lr": lr},
    )
    if accelerator.is_main_process:
        shutil.rmtree(job.checkpoint_dir, ignore_errors=True)  # finished: nothing left to resume
    accelerator.wait_for_everyone()
    stats["wall_clock_s"] = time.perf_counter() - t_start
    return stats


def _save_checkpoint(
    accelerator: Any,
    job: TrainJob,
    step: int,
    fp: str,
    history: list[dict[str, float]],
    tokens_done: int,
    train_seconds: float,
) -> None:
    root = job.checkpoint_dir
    tmp = root / f".{CHECKPOINT_PREFIX}{step}.tmp"
    final = root / f"{CHECKPOINT_PREFIX}{step}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    if accelerator.is_main_process:
        state = {
            "fingerprint": fp,
            "step": step,
            "history": history,
            "tokens_done": tokens_done,
            "train_seconds": train_seconds,
        }
        _write_json(tmp / PROGRESS_FILE, state)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)  # a checkpoint exists completely or not at all
        for old in root.glob(f"{CHECKPOINT_PREFIX}*"):
            if old != final:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def _save_outputs(
    accelerator: Any,
    model: Any,
    tokenizer: Any,
    job: TrainJob,
    enc: Encoded,
    stats: dict[str, Any],
    attn: str,
    extra: dict[str, Any],
) -> None:
    """Write adapter or full weights, tokenizer and training_config.json into ``out_dir`` atomically."""
    import tempfile

    state_dict = accelerator.get_state_dict(model)  # gathers FSDP shards; collective, every rank calls it
    if not accelerator.is_main_process:
        return
    unwrapped = accelerator.unwrap_model(model)
    out = job.out_dir
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = umask_mode(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        # the base as params name it (Hub id or packaged alias), not the local path from_pretrained read
        # (job.model_path, a cache folder on this machine), in adapter_config.json and in PEFT's README.md
        # (which reads the base model's name_or_path): the outputs must load on other machines
        for peft_cfg in (getattr(unwrapped, "peft_config", None) or {}).values():
            peft_cfg.base_model_name_or_path = job.base_model
        base = unwrapped.get_base_model() if hasattr(unwrapped, "get_base_model") else unwrapped
        base.name_or_path = base.config.name_or_path = job.base_model
        unwrapped.save_pretrained(tmp, state_dict=state_dict, safe_serialization=True)
        if job.method == "full" and enc.eot_token_id >= 0:
            gen = unwrapped.generation_config
            eos = gen.eos_token_id if isinstance(gen.eos_token_id, list) else [gen.eos_token_id]
            if enc.eot_token_id not in eos:  # generation must stop at the trained end-of-turn token
                gen.eos_token_id = [e for e in eos if e is not None] + [enc.eot_token_id]
                gen.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        config = {
            "run": job.run,
            "base_model": job.base_model,
            "method": job.method,
            "source": job.source,
            "teacher": job.teacher,
            "student": job.student_id,
            "train": job.cfg.model_dump(mode="json"),
            "student_config": job.student.model_dump(mode="json"),
            "eot_token": enc.eot_token,
            "eot_token_id": enc.eot_token_id,
            "attn_implementation": attn,
            "reference_tokens": job.reference_tokens,
            "steps": stats["steps"],
            "epochs_effective": stats["epochs_effective"],
            **extra,
        }
        _write_json(tmp / TRAINING_CONFIG, config)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def data_fingerprint(paths: Sequence[Path]) -> str:
    """sha256 over the source shards' bytes (streamed, 1 MiB at a time)."""
    h = hashlib.sha256()
    for p in paths:
        h.update(p.name.encode())
        with open(p, "rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
    return h.hexdigest()[:16]
