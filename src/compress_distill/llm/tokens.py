"""Tokenizer helpers shared by the engines and the stages: chat formats, prompts, stop tokens, counts.

``load_tokenizer`` gives a model's transformers tokenizer (chat template, special tokens); ``fast_tokenizer``
its Rust tokenizer, cached, which ``count_tokens`` and the truncate stage count and cut tokens with.

``ChatFormat`` is what every backend needs to know about the model it serves, computed once per model by the
same code (``chat_format`` / ``load_chat_format``): whether the template pre-fills ``<think>`` or speaks
harmony (``reasoning.generation_prompt_format`` of its rendered generation prompt; it drives
``reasoning.split_completion``), and the tokens that end a turn -- the trained end-of-turn token the training
stage records in ``training_config.json`` (LoRA adapters and full checkpoints alike), the EOS of tokenizer and
generation config, and the end-of-turn markers of known chat formats.  hf stops on them directly, vLLM gets
them as ``stop_token_ids``, OpenAI-compatible servers as ``stop`` (and ``stop_token_ids``, vLLM's extension).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compress_distill.config import BackendConfig, ConfigError
from compress_distill.reasoning import ChatFormatName, generation_prompt_format

if TYPE_CHECKING:
    from compress_distill.llm.resolve import ResolvedModel

# End-of-turn / end-of-text markers of the chat formats we meet (ChatML, Llama 3, Gemma, gpt-oss harmony).
# Only those present in a tokenizer's vocabulary are used.
_END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<|end_of_text|>", "<end_of_turn>", "<|endoftext|>", "<|return|>")
# In harmony (gpt-oss) ``<|end|>`` closes the analysis message *inside* a turn; stopping there would cut the
# final answer off, so it is never a stop token when ``<|return|>`` exists.
_HARMONY_MARKERS = ("<|channel|>", "<|return|>")


# written by the training stage next to the weights (training/trainer.py TRAINING_CONFIG)
TRAINING_CONFIG = "training_config.json"
_PROBE = [{"role": "user", "content": "?"}]  # any user turn: only the generation prompt's tail matters


@dataclass(frozen=True)
class ChatFormat:
    """How one model's chat template frames a completion (module docstring)."""

    name: ChatFormatName  # think (pre-filled <think>) | harmony (gpt-oss) | plain
    stop_token_ids: tuple[int, ...] = ()  # the trained end-of-turn token first
    stop_tokens: tuple[str, ...] = ()  # the same tokens as text, for OpenAI-compatible ``stop``

    @property
    def think_prefilled(self) -> bool:
        return self.name == "think"

    @property
    def harmony(self) -> bool:
        return self.name == "harmony"


# A model known only by a served name (no local tokenizer): the server's own template, stops and split apply.
SERVER_DEFINED = ChatFormat("plain")


def load_tokenizer(model: str, **kwargs: Any) -> Any:
    """The tokenizer behind a params model id (alias, Hub id, local dir, adapter dir)."""
    from transformers import AutoTokenizer

    from compress_distill.llm.resolve import resolve_local_model

    return AutoTokenizer.from_pretrained(resolve_local_model(model).tokenizer, **kwargs)


def is_harmony(tokenizer: Any) -> bool:
    """True for gpt-oss style tokenizers, whose reasoning lives between special channel tokens."""
    vocab = tokenizer.get_vocab()
    return all(marker in vocab for marker in _HARMONY_MARKERS)


def generation_prompt(tokenizer: Any, messages: list[dict[str, str]], **template_kwargs: Any) -> str:
    """``messages`` rendered by the tokenizer's chat template, with the generation prompt."""
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            f"the tokenizer of {getattr(tokenizer, 'name_or_path', '?')!r} has no chat template; give the "
            "student a `chat_template` file in params or use an instruction-tuned model"
        )
    return str(
        tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, **template_kwargs)
    )


def chat_prompt_ids(tokenizer: Any, messages: list[dict[str, str]], **template_kwargs: Any) -> list[int]:
    """Token ids of ``messages`` rendered by the tokenizer's chat template, with the generation prompt."""
    text = generation_prompt(tokenizer, messages, **template_kwargs)
    # The template already placed BOS and friends; letting the tokenizer add them again doubles them.
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def stop_token_ids(tokenizer: Any, generation_eos: int | list[int] | None = None) -> list[int]:
    """Token ids that end a generated turn: EOS of tokenizer and generation config plus end-of-turn markers."""
    ids: list[int] = []

    def add(value: int | list[int] | None) -> None:
        if value is None:
            return
        for v in value if isinstance(value, list) else [value]:
            if v is not None and int(v) not in ids:
                ids.append(int(v))

    add(tokenizer.eos_token_id)
    add(generation_eos)
    vocab = tokenizer.get_vocab()
    for marker in _END_OF_TURN:
        if marker in vocab:
            add(vocab[marker])
    if is_harmony(tokenizer) and "<|end|>" in vocab:
        ids = [i for i in ids if i != vocab["<|end|>"]]
    if not ids:
        raise ValueError(
            f"tokenizer {getattr(tokenizer, 'name_or_path', '?')!r} defines no EOS or end-of-turn token; "
            "generation would never stop"
        )
    return ids


def template_format(tokenizer: Any, template_kwargs: dict[str, Any] | None = None) -> ChatFormatName:
    """``think`` | ``harmony`` | ``plain``: ``reasoning.generation_prompt_format`` of the template's prompt."""
    return generation_prompt_format(generation_prompt(tokenizer, _PROBE, **(template_kwargs or {})))


def chat_format(
    tokenizer: Any,
    *,
    generation_eos: int | list[int] | None = None,
    trained_eot: int | None = None,
    template_kwargs: dict[str, Any] | None = None,
) -> ChatFormat:
    """The chat format of ``tokenizer``'s template rendered with ``template_kwargs`` (module docstring)."""
    name = template_format(tokenizer, template_kwargs)
    ids = stop_token_ids(tokenizer, generation_eos)
    if trained_eot is not None:
        ids = [trained_eot] + [i for i in ids if i != trained_eot]
    tokens = tokenizer.convert_ids_to_tokens(ids)
    return ChatFormat(name, tuple(ids), tuple(str(t) for t in tokens))


def trained_eot_id(model_dir: str | Path) -> int | None:
    """The end-of-turn token id the training stage trained and recorded for ``model_dir`` (None if none)."""
    path = Path(model_dir) / TRAINING_CONFIG
    if not path.is_file():
        return None
    try:
        eot = json.loads(path.read_text(encoding="utf-8")).get("eot_token_id")
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); re-run the training stage") from None
    return int(eot) if isinstance(eot, int) and eot >= 0 else None


def saved_generation_eos(*model_dirs: str | Path | None) -> list[int]:
    """``eos_token_id`` of the local ``generation_config.json`` files of ``model_dirs`` (base weights, then
    the adapter or checkpoint); a Hub id has none here (the engines read the Hub's themselves)."""
    ids: list[int] = []
    for model_dir in model_dirs:
        path = Path(model_dir) / "generation_config.json" if model_dir else None
        if path is None or not path.is_file():
            continue
        eos = json.loads(path.read_text(encoding="utf-8")).get("eos_token_id")
        ids += [int(e) for e in (eos if isinstance(eos, list) else [eos]) if isinstance(e, int)]
    return ids


def load_chat_format(resolved: ResolvedModel, template_kwargs: dict[str, Any] | None = None) -> ChatFormat:
    """``chat_format`` of a resolved model: its tokenizer, generation config and trained end-of-turn token."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolved.tokenizer)
    model_dir = resolved.adapter or resolved.weights
    return chat_format(
        tokenizer,
        generation_eos=saved_generation_eos(resolved.weights, resolved.adapter),
        trained_eot=trained_eot_id(model_dir),
        template_kwargs=template_kwargs,
    )


# --------------------------------------------------------------------------------------------- counting
@lru_cache(maxsize=8)
def fast_tokenizer(model: str) -> Any:
    """The Rust tokenizer (``tokenizers.Tokenizer``) of a params model id, for batch counting and cutting."""
    backend = getattr(load_tokenizer(model), "backend_tokenizer", None)
    if backend is None:
        raise RuntimeError(
            f"model {model!r} has no fast tokenizer (tokenizer.json); the stages count and cut tokens "
            "with the Rust tokenizer -- convert the tokenizer or pick a model that ships tokenizer.json"
        )
    return backend


def count_tokens(model: str, texts: Sequence[str]) -> list[int]:
    """Tokens per text in ``model``'s tokenizer, without special tokens (BOS/EOS are not reasoning).

    ``model`` is a tokenizer id: pass an engine's ``BackendConfig.tokenizer_id`` (its ``tokenizer`` key, else
    its ``model``) or a model directory, never a served model name.
    """
    if not texts:
        return []
    tok = fast_tokenizer(model)
    return [len(e) for e in tok.encode_batch_fast(list(texts), add_special_tokens=False)]


def preflight_tokenizer(cfg: BackendConfig, key: str) -> Any:
    """Load the tokenizer a stage will count ``cfg``'s tokens with, at stage start: before any request.

    Params load already refuses a teacher/compressor whose tokenizer id is a bare served name; this catches
    an id that looks loadable and is not (a hosted API's ``org/model`` that is no Hub repo, a missing
    directory), which would otherwise fail in ``count_tokens`` after every request had been paid for.
    ``key`` is the params path of the engine (``compressors.concise``), named in the fix-it.
    """
    where = Path(cfg.tokenizer_id)
    if (where.is_absolute() or cfg.tokenizer_id.startswith(".")) and not where.exists():
        # a path, not a Hub id: say which key holds it rather than what the tokenizer loader made of it
        key_path = f"{key}.tokenizer" if cfg.tokenizer else f"{key}.model"
        raise ConfigError(
            f"{key_path}: the model directory {cfg.tokenizer_id} does not exist; fix the path, or produce the "
            "model first (dvc repro)"
        )
    try:
        return fast_tokenizer(cfg.tokenizer_id)
    except (OSError, ValueError, RuntimeError) as err:  # what from_pretrained raises for a missing tokenizer
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(
            f"{key}: cannot load the tokenizer {cfg.tokenizer_id!r} this stage counts tokens with "
            f"({reason}); "
            f"set {key}.tokenizer to a Hub id or local directory that holds the model's tokenizer "
            "(tokenizer.json), or make that one available"
        ) from None
