"""FLOP accounting of a run (beyond the paper): compute-matched comparisons need a common currency.

The standard dense-transformer estimates (Kaplan et al. 2020, "Scaling Laws for Neural Language Models"):
training costs about 6 FLOPs per parameter per trained token (forward 2 + backward 4), inference about
2 FLOPs per parameter per generated token.  ``N`` is the student's parameter count, read off its model
config (``AutoConfig`` + empty weights: nothing is downloaded beyond the config, nothing allocated), the
embeddings included.  The estimate ignores attention's sequence-length term and, for LoRA, the backward
pass that frozen weights skip -- the same rule for every run, which is what a comparison needs.
"""

from __future__ import annotations

import math
from functools import lru_cache

TRAIN_FLOPS_PER_PARAM_TOKEN = 6.0  # forward 2 + backward 4
INFERENCE_FLOPS_PER_PARAM_TOKEN = 2.0  # forward only


@lru_cache(maxsize=16)
def model_params(model: str) -> int:
    """Parameters of ``model`` (a params model id: packaged alias, Hub id or local dir) from its config."""
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    from compress_distill.modelhub import resolve_model

    config = AutoConfig.from_pretrained(resolve_model(model))
    with init_empty_weights():
        skeleton = AutoModelForCausalLM.from_config(config)
    # tied input/output embeddings are one tensor once tied (``parameters()`` yields it once); a skeleton
    # built under init_empty_weights is not tied yet, and would count SmolLM2's 28M embedding twice
    skeleton.tie_weights()
    return sum(p.numel() for p in skeleton.parameters())


def train_flops(n_params: int, tokens: int) -> float:
    """≈ 6·N·tokens: ``tokens`` are the (non-padding) input tokens the run trained on."""
    return TRAIN_FLOPS_PER_PARAM_TOKEN * n_params * tokens


def inference_flops(n_params: int, generated_tokens: int) -> float:
    """≈ 2·N·generated tokens (prompt tokens are not counted, as in the issue's definition)."""
    return INFERENCE_FLOPS_PER_PARAM_TOKEN * n_params * generated_tokens


def tokens_for_flops(n_params: int, flops: float) -> int:
    """Trained tokens that reach ``flops`` training FLOPs on a model of ``n_params`` parameters (rounded up):
    the token budget of ``train.budget: flops``."""
    return math.ceil(flops / (TRAIN_FLOPS_PER_PARAM_TOKEN * n_params))
