"""FLOP accounting (flops.py): N read off the model config equals the loaded model's parameter count, and the
6·N·tokens / 2·N·tokens rules."""

from __future__ import annotations

import pytest

from compress_distill import flops


def test_training_and_inference_rules() -> None:
    assert flops.train_flops(1_000, 10) == 60_000.0
    assert flops.inference_flops(1_000, 10) == 20_000.0


@pytest.mark.slow
def test_n_from_the_config_matches_the_real_model() -> None:
    from transformers import AutoModelForCausalLM

    from compress_distill.modelhub import resolve_model

    model = AutoModelForCausalLM.from_pretrained(resolve_model("smollm2-135m-instruct"))
    assert flops.model_params("smollm2-135m-instruct") == sum(p.numel() for p in model.parameters())
