"""What a params ``model`` string points at, and a cheap fingerprint of those weights for the cache key.

A ``model`` may be
(a) a packaged alias (``smollm2-135m-instruct``) -> the converted checkpoint of ``modelhub.resolve_model``;
(b) a local Hugging Face directory or a Hub id;
(c) a PEFT adapter directory (it holds ``adapter_config.json``), as the training stage writes to
    ``models/RUN/``: the base comes from its ``training_config.json`` ``base_model`` (a params model id, so
    aliases work) or else from the adapter's ``base_model_name_or_path``;
(d) a fully fine-tuned checkpoint directory (same as (b)).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from compress_distill.modelhub import resolve_model

# Files hashed by content (small, and they change what the model does); everything else by size + mtime.
_CONTENT_HASHED = (".json", ".jinja", ".txt", ".model", ".py", ".yaml")
_CONTENT_HASH_MAX_BYTES = 8 << 20  # tokenizer.json of large vocabularies is ~10-30 MB: stat those instead


@dataclass(frozen=True)
class ResolvedModel:
    weights: str  # ``from_pretrained`` argument of the (base) weights
    adapter: str | None  # PEFT adapter directory merged on top, if any
    tokenizer: str  # directory or id holding the tokenizer and its chat template


def resolve_local_model(model: str) -> ResolvedModel:
    """Resolve a params model id to base weights, optional adapter and tokenizer (see the module doc)."""
    path = Path(model)
    if path.is_dir() and (path / "adapter_config.json").exists():
        base = _adapter_base(path)
        weights = resolve_model(base)
        has_tokenizer = (path / "tokenizer_config.json").exists() or (path / "tokenizer.json").exists()
        return ResolvedModel(
            weights=weights, adapter=str(path), tokenizer=str(path) if has_tokenizer else weights
        )
    weights = resolve_model(model)
    return ResolvedModel(weights=weights, adapter=None, tokenizer=weights)


def _adapter_base(adapter_dir: Path) -> str:
    training = adapter_dir / "training_config.json"
    if training.exists():
        try:
            base = json.loads(training.read_text(encoding="utf-8")).get("base_model")
        except json.JSONDecodeError as err:
            raise ValueError(f"{training} is not valid JSON ({err}); re-run the training stage") from None
        if base:
            return str(base)
    config = json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))
    base = config.get("base_model_name_or_path")
    if not base:
        raise ValueError(
            f'cannot tell the base model of the adapter in {adapter_dir}: add "base_model" to its '
            "training_config.json or base_model_name_or_path to adapter_config.json"
        )
    return str(base)


def fingerprint(model: str) -> str:
    """Identity of the weights behind ``model``: a digest for local files, the id itself for Hub ids.

    Local directories hash small config/tokenizer files by content and weight files by (name, size,
    mtime_ns), so a retrained ``models/RUN/`` gets a new identity without reading gigabytes.  A Hub id is
    taken at face value (pin the revision in the id or clear the cache when the Hub repo changes).
    """
    path = Path(model)
    if not path.exists():
        return f"hub:{model}"
    digest = hashlib.sha256()
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    for file in files:
        stat = file.stat()
        digest.update(file.name.encode())
        if file.suffix in _CONTENT_HASHED and stat.st_size <= _CONTENT_HASH_MAX_BYTES:
            digest.update(hashlib.sha256(file.read_bytes()).digest())
        else:
            digest.update(f"{stat.st_size}:{stat.st_mtime_ns}".encode())
    return f"local:{digest.hexdigest()[:32]}"


def resolved_fingerprint(resolved: ResolvedModel) -> dict[str, str]:
    out = {"weights": fingerprint(resolved.weights)}
    if resolved.adapter:
        out["adapter"] = fingerprint(resolved.adapter)
    if resolved.tokenizer not in (resolved.weights, resolved.adapter):
        out["tokenizer"] = fingerprint(resolved.tokenizer)
    return out
