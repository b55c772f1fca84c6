"""Training throughput, side by side in one run on the same model and rows:

1. this trainer, exact best-fit-decreasing packing (``compress_distill.training``);
2. TRL ``SFTTrainer`` with padding-free BFD packing (``packing=True, padding_free=True``), fed the very same
   token ids and completion masks;
3. no packing: this trainer with ``packing: false`` (rows padded to the longest of each micro-batch), with as
   many rows per micro-batch as a packed bin holds on average, so every method takes the same number of rows
   per optimiser step.

Row lengths are long-tailed like the paper's traces: raw Qwen traces average ~2,240 trainable tokens
(635M tokens over ~283k traces, Table 6) in 16,384-token bins, i.e. a mean near 14% of the bin with a long
right tail.  Here lengths are log-normal (sigma 0.9) scaled to ``--seq-len`` the same way.

Throughput = real (non-padding) tokens per second of training step (forward, backward, clip, optimiser),
steady state: every method first trains one warm-up step in the same process, and the first timed step is
dropped.  Also reported: padding fraction (padding slots computed / slots computed) and bin slack (bin
capacity left empty), and on a GPU an MFU estimate.  Writes metrics/bench/training.json.

    .venv/bin/python bench/training.py            # CPU: SmolLM2-135M, LoRA r 8, seq 1024, ~10 minutes
    .venv/bin/python bench/training.py --device cuda --seq-len 16384 --rows 2000
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from compress_distill.config import LoraConfig, StudentConfig, TrainConfig
from compress_distill.metrics import write_metrics
from compress_distill.modelhub import resolve_model
from compress_distill.training.data import Encoded, encode_rows
from compress_distill.training.packing import pack_bfd
from compress_distill.training.trainer import TrainJob, train

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads; see compress_distill.stages.train
REPO = Path(__file__).resolve().parents[1]
MODEL = "smollm2-135m-instruct"
WORDS = [
    "so",
    "the",
    "value",
    "carries",
    "over",
    "to",
    "the",
    "next",
    "term",
    "and",
    "we",
    "check",
    "it",
    "against",
    "the",
    "constraint",
    "again",
]
PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}  # dense bf16 tensor-core peak per GPU


MEAN_FRACTION, SIGMA = 2240 / 16384, 0.9  # paper: mean raw trace / bin; log-normal spread


def paper_lengths(n: int, seq_len: int, seed: int) -> np.ndarray:
    """Token lengths: log-normal with mean MEAN_FRACTION x seq_len (median = mean / e^(sigma^2 / 2))."""
    median = MEAN_FRACTION * seq_len / np.exp(SIGMA**2 / 2)
    return np.clip(np.random.default_rng(seed).lognormal(np.log(median), SIGMA, n), 8, seq_len).astype(int)


def trace_rows(n: int, seq_len: int, seed: int) -> list[dict[str, str]]:
    """Synthetic traces whose token lengths follow ``paper_lengths`` (SmolLM2: ~1.3 tokens per word here,
    ~45 tokens of template and question)."""
    rng = np.random.default_rng(seed)
    words = np.maximum((paper_lengths(n, seq_len, seed) - 45) / 1.3, 4).astype(int)
    rows = []
    for i, w in enumerate(words):
        a, b = rng.integers(2, 999, 2)
        text = " ".join(WORDS[j % len(WORDS)] for j in rng.integers(0, len(WORDS), w))
        rows.append(
            {"id": str(i), "question": f"What is {a} + {b}?", "reasoning": text, "response": f"{a + b}"}
        )
    return rows


def run_ours(
    enc: Encoded, tokenizer: Any, cfg: TrainConfig, device: str, tag: str, work: Path
) -> dict[str, Any]:
    job = TrainJob(
        run=f"bench-{tag}",
        base_model=MODEL,
        model_path=resolve_model(MODEL),
        method="lora",
        source="raw",
        cfg=cfg,
        student=StudentConfig(model=MODEL),
        out_dir=work / tag / "model",
        checkpoint_dir=work / tag / "ckpt",
    )
    stats = train(job, enc, tokenizer)
    steps = stats["history"][1:]  # the first step of a run pays one-off costs
    return {
        **throughput([(r["seconds"], r["cpu_seconds"], r["tokens"]) for r in steps]),
        "steps": stats["steps"],
        "padding_fraction": stats["padding_fraction"],
        "bin_slack_fraction": stats["bin_slack_fraction"],
        "final_loss": stats["final_loss"],
        "tokens": stats["trained_tokens"],
    }


def throughput(steps: list[tuple[float, float, int]]) -> dict[str, float]:
    """Tokens per wall second and per CPU second of the process, from (wall s, CPU s, tokens) per step."""
    tokens = sum(n for _, _, n in steps)
    return {
        "tokens_per_s": tokens / sum(w for w, _, _ in steps),
        "tokens_per_cpu_s": tokens / sum(c for _, c, _ in steps),
        "median_step_tokens_per_s": statistics.median(n / w for w, _, n in steps),
    }


def run_trl(enc: Encoded, cfg: TrainConfig, device: str, work: Path) -> dict[str, Any]:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    data = Dataset.from_dict(
        {
            "input_ids": [ids.tolist() for ids in enc.ids],
            "completion_mask": [[0] * p + [1] * (len(ids) - p) for ids, p in zip(enc.ids, enc.n_prompt)],
        }
    )
    bf16 = device == "cuda"
    dtype = torch.bfloat16 if bf16 else torch.float32
    attn = "flash_attention_2" if device == "cuda" and _has("flash_attn") else "sdpa"
    model = AutoModelForCausalLM.from_pretrained(resolve_model(MODEL), dtype=dtype, attn_implementation=attn)
    peft_cfg = LoraConfig(
        r=cfg.lora.r,
        lora_alpha=cfg.lora.alpha,
        lora_dropout=cfg.lora.dropout,
        target_modules=list(cfg.lora.target_modules),
        task_type="CAUSAL_LM",
    )
    args = SFTConfig(
        output_dir=str(work / "trl"),
        per_device_train_batch_size=cfg.micro_batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.lora.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=cfg.warmup_ratio,
        num_train_epochs=1,
        max_grad_norm=cfg.max_grad_norm,
        packing=True,
        packing_strategy="bfd",
        padding_free=True,
        max_length=cfg.seq_len,
        completion_only_loss=True,
        gradient_checkpointing=cfg.gradient_checkpointing,
        bf16=bf16,
        use_cpu=device == "cpu",
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        seed=cfg.seed,
        dataloader_num_workers=0,
    )
    times: list[tuple[float, float]] = []
    tokens: list[int] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, *a: Any, **k: Any) -> None:
            self.t0, self.c0 = time.perf_counter(), time.process_time()
            tokens.append(0)

        def on_step_end(self, *a: Any, **k: Any) -> None:
            times.append((time.perf_counter() - self.t0, time.process_time() - self.c0))

    class Counting(SFTTrainer):
        def training_step(self, model: Any, inputs: dict[str, Any], num_items_in_batch: Any = None) -> Any:
            tokens[-1] += int(inputs["input_ids"].numel())  # padding-free: one row, every token real
            return super().training_step(model, inputs, num_items_in_batch)

    trainer = Counting(model=model, args=args, train_dataset=data, peft_config=peft_cfg, callbacks=[Clock()])
    packed = trainer.train_dataset
    capacity = len(packed) * cfg.seq_len
    out = trainer.train()
    steady = [(w, c, n) for (w, c), n in zip(times, tokens, strict=True)][1:]
    return {
        **throughput(steady),
        "steps": len(times),
        "padding_fraction": 0.0,  # padding-free: one flattened row per micro-batch
        "bin_slack_fraction": 1.0 - sum(len(x) for x in packed["input_ids"]) / capacity,
        "final_loss": float(out.training_loss),
        "tokens": sum(tokens),
    }


def paper_scale_slack(n: int = 283_000, seq_len: int = 16_384) -> float:
    lengths = paper_lengths(n, seq_len, seed=0).tolist()
    bins = pack_bfd(lengths, seq_len)
    return 1.0 - sum(lengths) / (len(bins) * seq_len)


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def mfu(tokens_per_s: float, n_params: int, device: str) -> float | None:
    """Model FLOPs utilisation of LoRA training: ~4N FLOPs per token (forward 2N, input gradients 2N; frozen
    weights get no weight gradients), attention FLOPs left out (a lower bound at these lengths)."""
    if device != "cuda":
        return None
    import torch

    name = torch.cuda.get_device_name()
    peak = next((v for k, v in PEAK_FLOPS.items() if k in name), None)
    return tokens_per_s * 4 * n_params / peak if peak else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--seq-len", type=int, default=1024)
    ap.add_argument("--rows", type=int, default=0, help="rows to train on (default: ~20 bins' worth)")
    ap.add_argument(
        "--threads", type=int, default=0, help="torch threads (default: 1 on CPU, see ratio basis)"
    )
    ap.add_argument("--out", type=Path, default=REPO / "metrics" / "bench" / "training.json")
    a = ap.parse_args()

    import torch
    from transformers import AutoTokenizer

    if a.threads or a.device == "cpu":
        torch.set_num_threads(a.threads or 1)
    tokenizer = AutoTokenizer.from_pretrained(resolve_model(MODEL))
    rows = trace_rows(a.rows or int(20 / MEAN_FRACTION), a.seq_len, seed=0)
    enc = encode_rows(tokenizer, rows, a.seq_len, overlong="drop")
    lengths = np.array(enc.lengths)
    # the demo's LoRA settings (params.yaml), one packed bin per optimiser step
    cfg = TrainConfig(
        seq_len=a.seq_len,
        micro_batch_size=1,
        grad_accum=1,
        gradient_checkpointing=a.device == "cuda",
        device=a.device,
        save_every_steps=10_000,
        lora=LoraConfig(r=8, alpha=16, learning_rate=5e-4),
    )
    rows_per_bin = max(1, round(len(enc) / max(1, -(-int(lengths.sum()) // a.seq_len))))
    print(
        f"{len(enc)} rows, {int(lengths.sum())} tokens, length median {int(np.median(lengths))} / mean "
        f"{lengths.mean():.0f} / p99 {int(np.percentile(lengths, 99))} / max {lengths.max()} (bin {a.seq_len}); "
        f"unpacked micro-batch: {rows_per_bin} rows; torch threads {torch.get_num_threads()}"
    )
    warm = encode_rows(tokenizer, trace_rows(6, a.seq_len, seed=1), a.seq_len, overlong="drop")
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        # one untimed warm-up step in this process (allocator, oneDNN/cuBLAS plans, lazy imports)
        run_ours(warm, tokenizer, cfg.model_copy(update={"max_steps": 2}), a.device, "warmup", work)
        results["ours_packed"] = run_ours(enc, tokenizer, cfg, a.device, "packed", work)
        results["trl_padding_free"] = run_trl(enc, cfg, a.device, work)
        unpacked = cfg.model_copy(update={"packing": False, "micro_batch_size": rows_per_bin})
        results["unpacked"] = run_ours(enc, tokenizer, unpacked, a.device, "unpacked", work)

    # ratios on a shared CPU use CPU seconds of the (single-threaded) process: wall time there mostly
    # measures what the neighbours run; on a GPU, wall time
    basis = "tokens_per_cpu_s" if a.device == "cpu" else "tokens_per_s"
    ours = results["ours_packed"][basis]
    summary = {
        "device": a.device if a.device == "cpu" else torch.cuda.get_device_name(),
        "model": MODEL,
        "seq_len": a.seq_len,
        "rows": len(enc),
        "tokens": int(lengths.sum()),
        "torch_threads": torch.get_num_threads(),
        "ratio_basis": basis,
        "speedup_vs_trl": ours / results["trl_padding_free"][basis],
        "speedup_vs_unpacked": ours / results["unpacked"][basis],
        # the paper's scale: ~283k raw traces into 16,384-token bins (packing only, no training)
        "paper_scale_bin_slack_fraction": paper_scale_slack(),
        "mfu": mfu(results["ours_packed"]["tokens_per_s"], sum(p.numel() for p in _base_params()), a.device),
    }
    head = f"{'method':<18}{'tok/s':>9}{'tok/cpu-s':>11}{'median':>9}{'steps':>7}{'padding':>9}{'slack':>8}"
    print(f"\n{head}{'loss':>8}")
    for name, r in results.items():
        print(
            f"{name:<18}{r['tokens_per_s']:>9.1f}{r['tokens_per_cpu_s']:>11.1f}{r['median_step_tokens_per_s']:>9.1f}"
            f"{r['steps']:>7}{r['padding_fraction']:>9.3f}{r['bin_slack_fraction']:>8.3f}{r['final_loss']:>8.3f}"
        )
    print(
        f"\n({basis}) ours / TRL: {summary['speedup_vs_trl']:.2f}x (target >= 1.0)   ours / unpacked: "
        f"{summary['speedup_vs_unpacked']:.2f}x (target >= 2.0)   ours padding "
        f"{results['ours_packed']['padding_fraction']:.1%}, bin slack "
        f"{results['ours_packed']['bin_slack_fraction']:.1%} here, "
        f"{summary['paper_scale_bin_slack_fraction']:.2%} at the paper's scale (target <= 5%)"
        + (f"   MFU {summary['mfu']:.1%}" if summary["mfu"] else "")
    )
    flat = {**summary, **{f"{m}_{k}": v for m, r in results.items() for k, v in r.items()}}
    write_metrics(a.out, flat)
    print(f"wrote {a.out}")


def _base_params() -> Any:
    from transformers import AutoConfig, AutoModelForCausalLM

    with __import__("torch").device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(resolve_model(MODEL)))
    return model.parameters()


if __name__ == "__main__":
    main()
