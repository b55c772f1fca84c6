"""Helpers of the training tests: trace folders laid out like the trace factory's, small params files, a tiny
Qwen3.5 model."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import yaml

from compress_distill.schema import TRACES, write_rows

REPO = Path(__file__).resolve().parents[2]


def trace_rows(n: int, seed: int = 0, source: str = "raw", max_steps: int = 12) -> list[dict[str, Any]]:
    """Arithmetic traces with a long-tailed number of reasoning steps; answer-only rows have no reasoning."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        a, b = rng.randint(2, 99), rng.randint(2, 99)
        steps = min(max_steps, int(rng.paretovariate(1.5)))
        reasoning = (
            ""
            if source == "answer-only"
            else " ".join(
                f"Step {k + 1}: {a} plus {b} makes {a + b}, so I keep {a + b}." for k in range(steps)
            )
        )
        rows.append(
            {
                "id": f"demo/train/{i}",
                "question_id": f"demo/train/{i}",
                "dataset": "demo",
                "domain": "math",
                "question": f"What is {a} + {b}?",
                "answer": str(a + b),
                "answer_type": "numeric",
                "reasoning": reasoning,
                "response": f"The answer is {a + b}.",
                "source": source,
                "reasoning_chars": len(reasoning),
                "reasoning_tokens": len(reasoning.split()),
                "compression_ratio": 1.0,
                "teacher_model": "smollm2-135m-instruct",
                "compressor_model": "",
                "prompt_hash": "0" * 12,
                "answer_preserved": None,
            }
        )
    return rows


def write_source(root: Path, teacher: str, source: str, rows: list[dict[str, Any]], shards: int = 1) -> Path:
    folder = root / teacher / source
    per = -(-len(rows) // shards)
    for k in range(shards):
        write_rows(rows[k * per : (k + 1) * per], folder / f"train-{k:05d}-of-{shards:05d}.parquet", TRACES)
    return folder


def write_params(path: Path, methods: tuple[str, ...] = ("lora",), **train: Any) -> Path:
    """The demo params with the given train overrides (tiny by default) and the grid methods."""
    data = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    data["train"].update(
        {"seq_len": 128, "micro_batch_size": 1, "grad_accum": 1, "save_every_steps": 100, "device": "cpu"}
    )
    data["train"]["lora"].update({"r": 4, "alpha": 8})
    for section in ("lora", "full"):  # nested sections are merged, not replaced
        data["train"][section].update(train.pop(section, {}))
    data["train"].update(train)
    data["grid"]["methods"] = list(methods)
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def tiny_qwen35():  # type: ignore[no-untyped-def]
    """A 2-layer Qwen3.5 text model (one Gated DeltaNet layer) from config: random weights, no download."""
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.models.qwen3_5 import Qwen3_5TextConfig

    cfg = Qwen3_5TextConfig(
        vocab_size=128,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        linear_num_value_heads=4,
        linear_num_key_heads=2,
        linear_key_head_dim=16,
        linear_value_head_dim=16,
        layer_types=["linear_attention", "full_attention"],
    )
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(cfg, attn_implementation="sdpa").eval()
