"""Split completions into reasoning and final response, and render assistant targets per chat format.

Conventions handled by ``split_reasoning`` (docs/architecture.md §6):
- ``<think>R</think>F``                      -> (R, F)
- prefilled think (template opened the tag)  -> ``R</think>F`` -> (R, F)
- gpt-oss harmony channels                   -> analysis channel = R, final channel = F
- no think block at all                      -> ("", text)
- an unclosed ``<think>``                    -> (R, "")   a cut-off trace has no final response

``split_completion`` is the last step of EVERY backend (hf, vllm, openai): it adds what a bare text cannot
say -- whether the chat template opened the think block in the prompt (``think_prefilled``, detected once per
model from the rendered generation prompt by ``generation_prompt_format``) and what a server that splits
reasoning itself (vLLM ``--reasoning-parser``) returned.  The rules, in order:

1. a server that split the completion: non-empty ``server_reasoning`` is the reasoning and the content the
   final response;
2. otherwise the text is what the model produced after the prompt.  A completion cut at the cap
   (``finish_reason == "length"``) after a pre-filled ``<think>`` starts inside the block, so the tag is put
   back before ``split_reasoning``: cut before ``</think>``, it has an empty final response, exactly as a
   completion that opened the block in its own text.  A completion that ENDED its turn (``stop``) without
   ``</think>`` after a pre-filled block is read as its final response: that is also what a server's
   reasoning parser returns for an empty think block (an answer-only student), which the text alone
   cannot tell apart; a cut completion is never given that benefit of the doubt;
3. harmony (gpt-oss) texts keep their channel markers; the analysis channel is the reasoning, the final
   channel the response (a cut inside the analysis channel has no final response).

Evaluation re-applies the function to every finished ``Completion`` (its ``reasoning`` as
``server_reasoning``) before grading, so completions cached by older code obey the same rule.  That is a
no-op on completions split by these rules except one ambiguous shape -- cut at the cap after a pre-filled
think block, with no reasoning at all -- which it reads as a cut reasoning: never graded.

Chat formats, one rule each (``generation_prompt_format`` tells them apart from the rendered generation
prompt, so training targets and evaluation prompts always agree):
- ``think``:   the template pre-fills ``<think>`` (Qwen3.5); the assistant content is
  ``join_reasoning(reasoning, response)`` and the template keeps it verbatim after its pre-fill;
- ``harmony``: gpt-oss; the generation prompt ends with ``<|start|>assistant`` and the reasoning must live in
  the analysis channel, so the assistant message carries it as ``thinking`` (the field gpt-oss's template
  renders as ``<|channel|>analysis<|message|>...<|end|>``) and the response as ``content`` (final channel);
  ``<think>`` text inside the final channel would teach the student a format it is never read back in;
- ``plain``:   any other template (Llama-3.1 style, SmolLM2 ChatML): the think block is ordinary text.

Only ``str.find``/``rfind`` are used, so the cost is linear in the text length whatever it contains.
"""

from __future__ import annotations

from typing import Literal

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
_HARMONY_ANALYSIS = "<|channel|>analysis<|message|>"
_HARMONY_FINAL = "<|channel|>final<|message|>"
_HARMONY_ENDS = ("<|end|>", "<|return|>", "<|call|>")
# gpt-oss's generation prompt: the model itself writes the channel of the next message
HARMONY_GENERATION_PROMPT = "<|start|>assistant"

ChatFormatName = Literal["think", "harmony", "plain"]


def _harmony(text: str) -> tuple[str, str] | None:
    a = text.find(_HARMONY_ANALYSIS)
    f = text.rfind(_HARMONY_FINAL)
    if a < 0 and f < 0:
        return None

    def body(start: int) -> str:
        ends = [e for e in (text.find(tok, start) for tok in _HARMONY_ENDS) if e >= 0]
        return text[start : min(ends)] if ends else text[start:]

    reasoning = body(a + len(_HARMONY_ANALYSIS)) if a >= 0 else ""
    final = body(f + len(_HARMONY_FINAL)) if f >= 0 else ""
    return reasoning.strip(), final.strip()


def split_reasoning(text: str | None) -> tuple[str, str]:
    """Return ``(reasoning, final_response)``; see the module docstring for the cases."""
    if not text:
        return "", ""
    close = text.rfind(THINK_CLOSE)
    if close >= 0:
        head = text[:close]
        open_ = head.find(THINK_OPEN)
        reasoning = head[open_ + len(THINK_OPEN) :] if open_ >= 0 else head
        return reasoning.strip(), text[close + len(THINK_CLOSE) :].strip()
    open_ = text.find(THINK_OPEN)
    if open_ >= 0:
        # opened but never closed: generation stopped inside the reasoning
        return text[open_ + len(THINK_OPEN) :].strip(), ""
    harmony = _harmony(text)
    if harmony is not None:
        return harmony
    return "", text.strip()


def split_completion(
    text: str | None,
    finish_reason: str | None,
    think_prefilled: bool,
    *,
    server_reasoning: str | None = None,
) -> tuple[str, str]:
    """``(reasoning, final_response)`` of one completion, the same for every backend (module docstring).

    ``text`` is the generated text after the prompt (or a server's ``content``); ``server_reasoning`` is the
    reasoning a server split off itself (``None`` or empty when it did not).
    """
    text = text or ""
    if server_reasoning is not None and server_reasoning.strip():
        return server_reasoning.strip(), text.strip()
    if think_prefilled and finish_reason == "length" and not text.lstrip().startswith(THINK_OPEN):
        text = THINK_OPEN + text  # the template opened the block: a cut text starts inside it
    return split_reasoning(text)


def generation_prompt_format(prompt: str) -> ChatFormatName:
    """Which chat format a rendered generation prompt (``add_generation_prompt=True``) belongs to.

    ``think`` when the prompt ends inside an open think block (its last ``<think>`` is not closed),
    ``harmony`` when it ends with gpt-oss's ``<|start|>assistant``, else ``plain``.
    """
    if prompt.rfind(THINK_OPEN) > prompt.rfind(THINK_CLOSE):
        return "think"
    if prompt.rstrip().endswith(HARMONY_GENERATION_PROMPT):
        return "harmony"
    return "plain"


def assistant_message(content: str, reasoning: str, response: str, fmt: ChatFormatName) -> dict[str, str]:
    """The assistant turn of a training conversation in chat format ``fmt`` (module docstring).

    ``content`` is the target text with its think block (``join_reasoning``): the message for every format
    but harmony, where ``thinking`` (the reasoning) goes to the analysis channel and ``content`` (the
    response) to the final channel; a message without ``thinking`` renders the final channel only.
    """
    if fmt != "harmony":
        return {"role": "assistant", "content": content}
    message = {"role": "assistant", "content": response.strip()}
    if reasoning.strip():
        message["thinking"] = reasoning.strip()
    return message


def conversation(
    question: str,
    reasoning: str,
    response: str,
    fmt: ChatFormatName = "plain",
    *,
    keep_empty_think: bool = False,
) -> list[dict[str, str]]:
    """The training conversation of one trace: the user question (stripped), then the assistant target.

    The one rendering shared by the trainer (``training/data.py``, with the student's chat format) and the
    published ``messages`` / ``prompt`` / ``completion`` columns (``stages/build.py``, format ``plain``), so a
    dataset trained with TRL or Axolotl sees the same turns.  ``fmt == "think"`` (a generation prompt that
    pre-fills ``<think>``) keeps the empty think block of an answer-only target (``join_reasoning``), and so
    does ``keep_empty_think`` (params ``train.answer_only_think: keep_empty``, beyond the paper) for any format.
    """
    keep_empty = fmt == "think" or keep_empty_think
    return [
        {"role": "user", "content": question.strip()},
        assistant_message(
            join_reasoning(reasoning, response, think_prefilled=keep_empty), reasoning, response, fmt
        ),
    ]


def join_reasoning(reasoning: str, response: str, think_prefilled: bool = False) -> str:
    """The assistant text a student is trained on: the think block, then the final response.

    Without reasoning (answer-only) the whole think block is left out, as in the paper (§3.3: "replaces the
    think block with the empty string").  Except after a generation prompt that already opened ``<think>``
    (``think_prefilled``, docs/architecture.md §7, known traps): the student sees that open tag at inference
    too, so its target must close it -- the empty block stays, and its opening tag is the prompt's.
    """
    if reasoning.strip():
        return f"{THINK_OPEN}\n{reasoning.strip()}\n{THINK_CLOSE}\n\n{response.strip()}"
    if think_prefilled:
        return f"{THINK_OPEN}\n\n{THINK_CLOSE}\n\n{response.strip()}"
    return response.strip()


def middle_truncate(text: str, max_chars: int, marker: str = "\n[... {n} characters omitted ...]\n") -> str:
    """Keep both ends of ``text`` within ``max_chars`` (the judge must see the start and the conclusion)."""
    if len(text) <= max_chars:
        return text
    keep = max(max_chars - len(marker.format(n=len(text))), 0)
    head = keep // 2
    tail = keep - head
    omitted = len(text) - head - tail
    return text[:head] + marker.format(n=omitted) + (text[-tail:] if tail else "")
