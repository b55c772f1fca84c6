"""The PEFT LoRA -> GGUF LoRA mapping on small arrays: llama.cpp's tensor names, shapes, the q/k RoPE row order
and the adapter metadata; unsupported adapters refused in one line.  The real round trip (a trained SmolLM2
student served by llama.cpp) is tests/llm/test_llm_openai_lora.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from compress_distill.training.gguf_export import GGUFExportError, lora_gguf, write_lora_gguf
from tests.test_cli_errors import cli, one_line_error

N_LAYERS, HIDDEN, N_HEAD, N_KV, HEAD_DIM, FFN, RANK = 2, 16, 4, 2, 4, 24, 3
BASE = {
    "architectures": ["LlamaForCausalLM"],
    "num_hidden_layers": N_LAYERS,
    "hidden_size": HIDDEN,
    "num_attention_heads": N_HEAD,
    "num_key_value_heads": N_KV,
    "intermediate_size": FFN,
}
ADAPTER = {"peft_type": "LORA", "r": RANK, "lora_alpha": 8, "bias": "none", "use_dora": False}
# HF module -> (GGUF name in block N, out features, in features)
MODULES = {
    "self_attn.q_proj": ("attn_q", N_HEAD * HEAD_DIM, HIDDEN),
    "self_attn.k_proj": ("attn_k", N_KV * HEAD_DIM, HIDDEN),
    "self_attn.v_proj": ("attn_v", N_KV * HEAD_DIM, HIDDEN),
    "self_attn.o_proj": ("attn_output", HIDDEN, N_HEAD * HEAD_DIM),
    "mlp.gate_proj": ("ffn_gate", FFN, HIDDEN),
    "mlp.up_proj": ("ffn_up", FFN, HIDDEN),
    "mlp.down_proj": ("ffn_down", HIDDEN, FFN),
}


def peft_state(seed: int = 0) -> dict[str, np.ndarray]:
    """An adapter's tensors under PEFT's saved keys, every paper target in every layer."""
    rng = np.random.default_rng(seed)
    state = {}
    for layer in range(N_LAYERS):
        for module, (_, out, inp) in MODULES.items():
            key = f"base_model.model.model.layers.{layer}.{module}"
            state[f"{key}.lora_A.weight"] = rng.standard_normal((RANK, inp)).astype(np.float32)
            state[f"{key}.lora_B.weight"] = rng.standard_normal((out, RANK)).astype(np.float32)
    return state


def interleaved(rows: np.ndarray, n_head: int) -> np.ndarray:
    """GGUF's rotary row order written out index by index: in each head, HF row j*half + i (rotate-half:
    first halves, then second halves) becomes row 2*i + j (interleaved pairs)."""
    head = rows.shape[0] // n_head
    half = head // 2
    out = np.empty_like(rows)
    for h in range(n_head):
        for i in range(half):
            for j in range(2):
                out[h * head + 2 * i + j] = rows[h * head + j * half + i]
    return out


def test_tensor_names_shapes_and_rope_order_are_llama_cpps() -> None:
    state = peft_state()
    lora = lora_gguf(ADAPTER, BASE, state)
    assert (lora.arch, lora.alpha, lora.rank) == ("llama", 8.0, RANK)
    expected = {
        f"blk.{layer}.{name}.weight.lora_{part}"
        for layer in range(N_LAYERS)
        for name, _, _ in MODULES.values()
        for part in "ab"
    }
    assert set(lora.tensors) == expected
    for layer in range(N_LAYERS):
        for module, (name, out, inp) in MODULES.items():
            key = f"base_model.model.model.layers.{layer}.{module}"
            a, b = (
                lora.tensors[f"blk.{layer}.{name}.weight.lora_a"],
                lora.tensors[f"blk.{layer}.{name}.weight.lora_b"],
            )
            assert a.shape == (RANK, inp) and b.shape == (out, RANK) and a.dtype == b.dtype == np.float32
            np.testing.assert_array_equal(a, state[f"{key}.lora_A.weight"])  # A is never reordered
            heads = {"attn_q": N_HEAD, "attn_k": N_KV}.get(name)
            hf_b = state[f"{key}.lora_B.weight"]
            np.testing.assert_array_equal(b, hf_b if heads is None else interleaved(hf_b, heads))
    # the update llama.cpp adds, B @ A, is the HF update with its rows in GGUF's order
    key = "base_model.model.model.layers.1.self_attn.k_proj"
    hf_delta = state[f"{key}.lora_B.weight"] @ state[f"{key}.lora_A.weight"]
    gguf_delta = lora.tensors["blk.1.attn_k.weight.lora_b"] @ lora.tensors["blk.1.attn_k.weight.lora_a"]
    np.testing.assert_allclose(gguf_delta, interleaved(hf_delta, N_KV), rtol=1e-6)


def test_written_file_is_a_gguf_lora_adapter(tmp_path: Path) -> None:
    import gguf

    lora = lora_gguf(ADAPTER, BASE, peft_state())
    out = tmp_path / "sub" / "student.gguf"
    write_lora_gguf(lora, out, name="smol-smol-lora-raw")
    reader = gguf.GGUFReader(out)

    def field(key: str) -> object:
        return reader.fields[key].contents()

    assert field("general.architecture") == "llama" and field("general.type") == "adapter"
    assert field("adapter.type") == "lora" and field("adapter.lora.alpha") == 8.0
    assert field("general.name") == "smol-smol-lora-raw"
    read = {t.name: t for t in reader.tensors}
    assert set(read) == set(lora.tensors)
    for name, array in lora.tensors.items():
        np.testing.assert_array_equal(np.asarray(read[name].data).reshape(array.shape), array)
    assert [p.name for p in out.parent.iterdir()] == ["student.gguf"]  # no temp file left behind


@pytest.mark.parametrize(
    ("adapter", "base", "extra_key", "needle"),
    [
        ({"use_dora": True}, {}, None, "DoRA adapter (use_dora)"),
        ({"use_rslora": True}, {}, None, "use_rslora"),
        ({"rank_pattern": {"q_proj": 8}}, {}, None, "rank_pattern"),
        ({"modules_to_save": ["lm_head"]}, {}, None, "trains whole modules"),
        ({"bias": "lora_only"}, {}, None, "biases"),
        ({"peft_type": "IA3"}, {}, None, "not LORA"),
        ({}, {"architectures": ["Qwen3_5ForCausalLM"]}, None, "Qwen3_5ForCausalLM"),
        ({}, {}, "base_model.model.lm_head.lora_A.weight", "lm_head.lora_A.weight"),
        ({}, {}, "base_model.model.model.layers.0.self_attn.q_proj.base_layer.weight", "base_layer"),
    ],
)
def test_adapters_gguf_cannot_express_are_refused_in_one_line(
    adapter: dict, base: dict, extra_key: str | None, needle: str
) -> None:
    state = peft_state()
    if extra_key:
        state[extra_key] = np.zeros((RANK, HIDDEN), np.float32)
    with pytest.raises(GGUFExportError) as err:
        lora_gguf({**ADAPTER, **adapter}, {**BASE, **base}, state, where="models/x/adapter_config.json")
    msg = str(err.value)
    assert needle in msg and "models/x/adapter_config.json" in msg and "\n" not in msg


def test_half_a_pair_is_refused() -> None:
    state = peft_state()
    del state["base_model.model.model.layers.1.mlp.up_proj.lora_B.weight"]
    with pytest.raises(GGUFExportError, match=r"model.layers.1.mlp.up_proj has lora_A or lora_B only"):
        lora_gguf(ADAPTER, BASE, state)


def test_cli_refuses_a_folder_without_an_adapter(tmp_path: Path) -> None:
    full = tmp_path / "models" / "smol-smol-full-raw"
    full.mkdir(parents=True)
    (full / "config.json").write_text(json.dumps(BASE))
    proc = cli("export-gguf", "--adapter", str(full), "--out", str(tmp_path / "x.gguf"), cwd=tmp_path)
    one_line_error(proc, "--adapter", "adapter_config.json", "LoRA")
    assert not (tmp_path / "x.gguf").exists()
