"""Tokenizer helpers shared by the engines and the stages: chat prompts, stop tokens, counts, truncation."""

from __future__ import annotations

from typing import Any

# End-of-turn / end-of-text markers of the chat formats we meet (ChatML, Llama 3, Gemma, gpt-oss harmony).
# Only those present in a tokenizer's vocabulary are used.
_END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<|end_of_text|>", "<end_of_turn>", "<|endoftext|>", "<|return|>")
# In harmony (gpt-oss) ``<|end|>`` closes the analysis message *inside* a turn; stopping there would cut the
# final answer off, so it is never a stop token when ``<|return|>`` exists.
_HARMONY_MARKERS = ("<|channel|>", "<|return|>")


def load_tokenizer(model: str, **kwargs: Any) -> Any:
    """The tokenizer behind a params model id (alias, Hub id, local dir, adapter dir)."""
    from transformers import AutoTokenizer

    from compress_distill.llm.resolve import resolve_local_model

    return AutoTokenizer.from_pretrained(resolve_local_model(model).tokenizer, **kwargs)


def is_harmony(tokenizer: Any) -> bool:
    """True for gpt-oss style tokenizers, whose reasoning lives between special channel tokens."""
    vocab = tokenizer.get_vocab()
    return all(marker in vocab for marker in _HARMONY_MARKERS)


def chat_prompt_ids(tokenizer: Any, messages: list[dict[str, str]], **template_kwargs: Any) -> list[int]:
    """Token ids of ``messages`` rendered by the tokenizer's chat template, with the generation prompt."""
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            f"the tokenizer of {getattr(tokenizer, 'name_or_path', '?')!r} has no chat template; give the "
            "student a `chat_template` file in params or use an instruction-tuned model"
        )
    text = tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True, **template_kwargs
    )
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


def count_tokens(tokenizer: Any, texts: list[str]) -> list[int]:
    """Token counts of plain texts (no special tokens), batched through the fast tokenizer."""
    if not texts:
        return []
    return [len(ids) for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]]


def truncate_to_tokens(tokenizer: Any, text: str, max_tokens: int) -> str:
    """The longest prefix of ``text`` made of its first ``max_tokens`` tokens, cut in the original text.

    Cutting by character offsets (not decode(ids[:n])) keeps the kept part byte-identical to the source.
    """
    if max_tokens < 0:
        raise ValueError(f"max_tokens must be >= 0, got {max_tokens}")
    if max_tokens == 0 or not text:
        return ""
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    offsets = enc["offset_mapping"]
    if len(offsets) <= max_tokens:
        return text
    return text[: offsets[max_tokens - 1][1]]
