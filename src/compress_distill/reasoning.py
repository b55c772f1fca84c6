"""Split completions into reasoning and final response, and assemble think-block targets.

Conventions handled (DESIGN §6):
- ``<think>R</think>F``                      -> (R, F)
- prefilled think (template opened the tag)  -> ``R</think>F`` -> (R, F)
- gpt-oss harmony channels                   -> analysis channel = R, final channel = F
- no think block at all                      -> ("", text)
- an unclosed ``<think>``                    -> (R, "")   a cut-off trace has no final response

Only ``str.find``/``rfind`` are used, so the cost is linear in the text length whatever it contains.
"""

from __future__ import annotations

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
_HARMONY_ANALYSIS = "<|channel|>analysis<|message|>"
_HARMONY_FINAL = "<|channel|>final<|message|>"
_HARMONY_ENDS = ("<|end|>", "<|return|>", "<|call|>")


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


def prefills_think(prompt: str) -> bool:
    """True when a rendered generation prompt ends inside a think block it opened (Qwen3.5's template)."""
    return prompt.rstrip().endswith(THINK_OPEN)


def join_reasoning(reasoning: str, response: str, think_prefilled: bool = False) -> str:
    """The assistant text a student is trained on: the think block, then the final response.

    Without reasoning (answer-only) the whole think block is left out, as in the paper (§3.3: "replaces the
    think block with the empty string").  Except after a generation prompt that already opened ``<think>``
    (``think_prefilled``, DESIGN §7 known traps): the student sees that open tag at inference too, so its
    target must close it -- the empty block stays, and its opening tag is the prompt's.
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
