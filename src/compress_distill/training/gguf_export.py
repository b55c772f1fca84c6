"""A trained LoRA student (the PEFT adapter folder the training stage writes to ``models/RUN/``) as a GGUF LoRA
adapter: the only form llama.cpp serves adapters in (``llama-server --lora FILE``, llama-cpp-python's server
``--lora_path FILE``), next to the base model's own GGUF.

What llama.cpp expects (read from its ``convert_lora_to_gguf.py`` and the adapter loader):

- metadata: ``general.architecture`` of the base (``llama``), ``general.type = adapter``,
  ``adapter.type = lora`` and ``adapter.lora.alpha`` (float32); llama.cpp scales each product by
  ``alpha / rank`` with the rank read off the tensors, which is PEFT's plain LoRA scaling;
- per adapted Linear, the base tensor's GGUF name with ``.lora_a`` (PEFT's ``lora_A``, rank x in) and
  ``.lora_b`` (``lora_B``, out x rank) appended: ``model.layers.3.self_attn.q_proj`` ->
  ``blk.3.attn_q.weight.lora_a`` / ``.lora_b``.  Names come from the ``gguf`` package's tensor map;
- the rows of ``q_proj`` and ``k_proj`` reordered as the base weights were when the base was converted
  (HF's rotate-half RoPE layout -> GGUF's interleaved pairs, per head; ``k_proj`` over the KV heads).  The
  update is ``B @ A``, so only B's rows move.

Exported as float32 whatever the base's quantisation (a rank-64 adapter of an 8B model is ~0.7 GB).  Adapters
this cannot express exactly -- DoRA, rsLoRA, per-module ranks or alphas, extra trained modules, biases,
embeddings or the LM head, architectures other than Llama's -- are refused with one line, never approximated.
``lora_gguf`` is the pure mapping (tested on small arrays); ``export`` reads the folder and writes the file.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import typer

from compress_distill.errors import UserError
from compress_distill.schema import umask_mode

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
# HF architectures llama.cpp converts as ``llama`` (SmolLM2, Llama-3.1-8B): gguf architecture name
LLAMA_ARCHITECTURES = {"LlamaForCausalLM": "llama"}
_PEFT_PREFIX = "base_model.model."  # PEFT's prefix of every saved adapter key
_LORA_SUFFIXES = {".lora_A.weight": "lora_a", ".lora_B.weight": "lora_b"}
# q_proj rows are permuted over the attention heads, k_proj rows over the KV heads (module docstring)
_ROPE_PERMUTED = {"q_proj": "num_attention_heads", "k_proj": "num_key_value_heads"}
_FIX = "train the student with the project's LoRA (train.lora) or serve it with the hf or vllm backend"


class GGUFExportError(UserError, ValueError):
    """An adapter the GGUF export cannot express exactly; the message says what and how to fix it."""


@dataclass(frozen=True)
class LoraGGUF:
    """A GGUF LoRA adapter, ready to write: architecture, alpha, rank and float32 tensors by GGUF name."""

    arch: str
    alpha: float
    rank: int
    tensors: dict[str, np.ndarray]


def rope_permute_rows(rows: np.ndarray, n_head: int) -> np.ndarray:
    """``rows`` (a q/k projection's output rows, or its LoRA B) reordered per head from HF's rotate-half
    layout to GGUF's interleaved rotary pairs, as llama.cpp's converter reorders the base weights."""
    n = rows.shape[0]
    if n % (2 * n_head):
        raise GGUFExportError(f"{n} rows do not split into {n_head} heads of rotary pairs")
    return rows.reshape(n_head, 2, n // n_head // 2, *rows.shape[1:]).swapaxes(1, 2).reshape(rows.shape)


def check_adapter_config(config: Mapping[str, Any], where: str) -> tuple[float, int]:
    """``(alpha, rank)`` of a plain LoRA ``adapter_config.json``; anything else is refused in one line."""
    refusals = [
        (config.get("peft_type", "LORA") != "LORA", f"peft_type is {config.get('peft_type')!r}, not LORA"),
        (bool(config.get("use_dora")), "it is a DoRA adapter (use_dora)"),
        (bool(config.get("use_rslora")), "it scales by rank-stabilised LoRA (use_rslora)"),
        (bool(config.get("rank_pattern")), "it has per-module ranks (rank_pattern)"),
        (bool(config.get("alpha_pattern")), "it has per-module alphas (alpha_pattern)"),
        (bool(config.get("modules_to_save")), f"it trains whole modules {config.get('modules_to_save')}"),
        (config.get("bias", "none") != "none", f"it trains biases (bias: {config.get('bias')!r})"),
    ]
    for refused, why in refusals:
        if refused:
            raise GGUFExportError(f"{where}: cannot export to GGUF: {why}; {_FIX}")
    try:
        return float(config["lora_alpha"]), int(config["r"])
    except (KeyError, TypeError, ValueError) as err:
        raise GGUFExportError(
            f"{where}: no valid lora_alpha / r ({err}); re-run the training stage"
        ) from None


def lora_gguf(
    adapter_config: Mapping[str, Any],
    base_config: Mapping[str, Any],
    state: Mapping[str, np.ndarray],
    where: str = ADAPTER_CONFIG,
) -> LoraGGUF:
    """The GGUF LoRA adapter of a PEFT LoRA adapter (pure; module docstring).

    ``adapter_config`` is the adapter's ``adapter_config.json``, ``base_config`` the base model's
    ``config.json``, ``state`` the adapter's tensors by PEFT key; ``where`` names the adapter in errors.
    """
    import gguf

    alpha, rank = check_adapter_config(adapter_config, where)
    architecture = (base_config.get("architectures") or ["?"])[0]
    arch = LLAMA_ARCHITECTURES.get(architecture)
    if arch is None:
        raise GGUFExportError(
            f"{where}: base architecture {architecture} has no GGUF LoRA export here (supported: "
            f"{', '.join(LLAMA_ARCHITECTURES)}); serve this student with the hf or vllm backend"
        )
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, int(base_config["num_hidden_layers"]))
    pairs: dict[str, dict[str, np.ndarray]] = {}
    for key in sorted(state):
        suffix = next((s for s in _LORA_SUFFIXES if key.endswith(s)), "")
        module = key.removeprefix(_PEFT_PREFIX).removesuffix(suffix)
        target = names.get_name(module) if suffix else None
        if target is None or not target.startswith("blk."):
            raise GGUFExportError(
                f"{where}: tensor {key} is not the LoRA A or B of a transformer-block Linear; "
                f"embeddings, the LM head and extra trained modules cannot be exported to GGUF; {_FIX}"
            )
        pairs.setdefault(module, {})[_LORA_SUFFIXES[suffix]] = np.asarray(state[key], dtype=np.float32)
    if not pairs:
        raise GGUFExportError(f"{where}: the adapter holds no LoRA tensors; re-run the training stage")
    tensors: dict[str, np.ndarray] = {}
    for module, ab in pairs.items():
        if set(ab) != {"lora_a", "lora_b"}:
            raise GGUFExportError(f"{where}: {module} has lora_A or lora_B only; re-run the training stage")
        a, b = ab["lora_a"], ab["lora_b"]
        if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[1]:
            raise GGUFExportError(
                f"{where}: {module} has lora_A {a.shape} and lora_B {b.shape}, not (rank, in) and "
                "(out, rank); re-run the training stage"
            )
        heads_key = _ROPE_PERMUTED.get(module.rsplit(".", 1)[-1])
        if heads_key is not None:
            n_head = int(base_config.get(heads_key) or base_config["num_attention_heads"])
            b = rope_permute_rows(b, n_head)
        base_name = f"{names.get_name(module)}.weight"  # checked above: a blk.N tensor
        tensors[f"{base_name}.lora_a"] = np.ascontiguousarray(a)
        tensors[f"{base_name}.lora_b"] = np.ascontiguousarray(b)
    return LoraGGUF(arch=arch, alpha=alpha, rank=rank, tensors=tensors)


def write_lora_gguf(lora: LoraGGUF, out: Path, name: str) -> None:
    """Write ``lora`` to ``out`` atomically (a temp file in the same folder, renamed)."""
    import gguf

    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    os.close(fd)
    tmp = umask_mode(tmp_name)
    try:
        writer = gguf.GGUFWriter(tmp, arch=lora.arch)
        writer.add_type(gguf.GGUFType.ADAPTER)
        writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
        writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, lora.alpha)
        writer.add_name(name)
        for tensor_name, array in lora.tensors.items():
            writer.add_tensor(tensor_name, array)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def export(adapter_dir: Path, out: Path) -> LoraGGUF:
    """Read the PEFT adapter in ``adapter_dir`` and its base model's config; write the GGUF adapter ``out``."""
    from safetensors.torch import load_file
    from transformers import AutoConfig

    from compress_distill.llm.resolve import resolve_local_model

    config_path, weights_path = adapter_dir / ADAPTER_CONFIG, adapter_dir / ADAPTER_WEIGHTS
    for path in (config_path, weights_path):
        if not path.is_file():
            raise GGUFExportError(
                f"--adapter {adapter_dir}: no {path.name}, so not a LoRA student folder; pass models/RUN of a "
                "LoRA run (dvc repro trains it)"
            )
    try:
        adapter_config = json.loads(config_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise GGUFExportError(f"{config_path} is not valid JSON ({err}); re-run the training stage") from None
    base = resolve_local_model(str(adapter_dir)).weights
    base_config = AutoConfig.from_pretrained(base).to_dict()
    state = {key: t.float().numpy() for key, t in load_file(weights_path, device="cpu").items()}
    lora = lora_gguf(adapter_config, base_config, state, where=str(config_path))
    write_lora_gguf(lora, out, name=adapter_dir.name)
    return lora


def main(adapter: Path, out: Path) -> None:
    """``compress-distill export-gguf``: export, then say what was written."""
    lora = export(adapter, out)
    typer.echo(
        f"wrote {out}: {len(lora.tensors) // 2} adapted {lora.arch} tensors, rank {lora.rank}, "
        f"alpha {lora.alpha:g}"
    )
