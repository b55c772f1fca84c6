"""Training targets: chat-template rendering, assistant-only loss masks and the overlong policy.

Each trace row becomes one conversation rendered with the student's chat template:

    user      = question
    assistant = reasoning.join_reasoning(reasoning, response)   # think block, then the final response;
                                                                  # answer-only rows: the response alone

Answer-only rows carry no think block at all (the paper strips the whole block), except under a template
whose generation prompt pre-fills ``<think>`` (Qwen3.5): there the prompt already opened the block at
inference, so the target closes it (``\n</think>\n\n`` + response) -- see ``reasoning.join_reasoning``.
``train.answer_only_think: keep_empty`` (beyond the paper) keeps the empty block under every template.

Both turns come from ``reasoning.conversation``, the function that also renders the published ``messages``,
``prompt`` and ``completion`` columns (stages/build.py), so TRL or Axolotl trained on a published config sees
the same turns as this trainer.

Tokenisation mirrors inference exactly: the prompt (the template with ``add_generation_prompt=True``, which
may pre-fill ``<think>`` as Qwen3.5's does) is tokenised on its own and the completion (the rest of the
rendered conversation) on its own, then concatenated.  At evaluation the model sees the same prompt tokens and
produces the completion tokens, so the training boundary never splits a token differently from inference.

Loss mask: every completion token up to and including the end-of-turn token (the last special token the
template emits for the assistant turn, e.g. ``<|im_end|>``) is trained, and nothing else.  The EOT must be
trained or students never learn to stop (docs/architecture.md §7, known traps); text after it (a trailing
newline) is dropped from the row because it carries no loss and nothing follows it.  Since the trained span
is contiguous, a row is stored as ``(token ids, n_prompt)``: positions ``>= n_prompt`` are targets.

Overlong policy (``train.overlong``, rows longer than ``train.seq_len`` tokens):
- ``drop`` (the paper's default): the row is rejected, counted as ``overlong``;
- ``truncate``: the row keeps its first ``seq_len`` tokens (prompt and the head of the reasoning) and is
  counted in ``rows_truncated``; it loses its end-of-turn token, so use it only when overlong rows are rare.
Rows whose prompt alone fills ``seq_len`` have nothing to train and are rejected as ``prompt_overlong`` under
either policy; rows with an empty question or an empty target are rejected as ``empty_question`` /
``empty_target``.  ``rows_in == rows_out + sum(rejects)`` always holds.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from compress_distill.errors import UserError
from compress_distill.metrics import RowCounter
from compress_distill.reasoning import conversation, generation_prompt_format
from compress_distill.schema import TRACES, read_table

if TYPE_CHECKING:
    import pyarrow as pa

# columns of a source config the trainer reads (judge_* and provenance columns are ignored)
COLUMNS = ["id", "question", "reasoning", "response"]


class TemplateError(UserError, ValueError):
    """The student's chat template cannot produce assistant-only targets."""


@dataclass
class Encoded:
    """Tokenised rows: ``ids[i]`` (int32) with targets at positions ``>= n_prompt[i]``."""

    ids: list[np.ndarray] = field(default_factory=list)
    n_prompt: list[int] = field(default_factory=list)
    row_ids: list[str] = field(default_factory=list)
    counter: RowCounter = field(default_factory=RowCounter)
    rows_truncated: int = 0
    eot_token: str = ""
    eot_token_id: int = -1

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def lengths(self) -> list[int]:
        return [len(x) for x in self.ids]

    @property
    def trainable_tokens(self) -> int:
        """Tokens that carry loss (assistant tokens incl. EOT) over the whole source, one pass."""
        return int(sum(len(x) - p for x, p in zip(self.ids, self.n_prompt, strict=True)))

    @property
    def total_tokens(self) -> int:
        return int(sum(len(x) for x in self.ids))

    def subset(self, rows: Sequence[int], counter: RowCounter | None = None) -> Encoded:
        """Rows ``rows`` (in that order); the row accounting stays with ``counter`` (default: this one's)."""
        return replace(
            self,
            ids=[self.ids[i] for i in rows],
            n_prompt=[self.n_prompt[i] for i in rows],
            row_ids=[self.row_ids[i] for i in rows],
            counter=self.counter if counter is None else counter,
        )


# --------------------------------------------------------------------------------------------- validation
def validation_size(n_rows: int, fraction: float) -> int:
    """Rows held out of ``n_rows`` for ``train.val_fraction``: ``round(fraction x n)``, but at least 1 when
    the fraction is > 0 and there are >= 2 rows (a tiny demo source still reports a validation loss), and
    never every row (at least 1 is left to train on)."""
    if fraction <= 0 or n_rows < 2:
        return 0
    return min(n_rows - 1, max(1, round(fraction * n_rows)))


def split_validation(enc: Encoded, fraction: float, seed: int) -> tuple[Encoded, Encoded]:
    """``(train, validation)`` rows (paper §4: 5% held out).  The held-out rows are those whose
    ``sha256(seed:id)`` sort first, so the split depends only on the ids and the seed: it is the same on every
    rank and restart, the same for every source of a teacher that shares the ids (raw, compressed, ...), and
    a row keeps its side when the order of the shards changes.  The row accounting stays with ``train``."""
    n_val = validation_size(len(enc), fraction)
    order = sorted(
        range(len(enc)), key=lambda i: hashlib.sha256(f"{seed}:{enc.row_ids[i]}".encode()).digest()
    )
    held = set(order[:n_val])
    train = enc.subset([i for i in range(len(enc)) if i not in held])
    return train, enc.subset(sorted(held), counter=RowCounter())


# --------------------------------------------------------------------------------------------- source
def source_shards(data_dir: str | Path) -> list[Path]:
    """The Parquet shards of one source config folder (``train-0000k-of-0000n.parquet``)."""
    data_dir = Path(data_dir)
    shards = sorted(data_dir.glob("train-*.parquet"))
    if not shards:
        raise FileNotFoundError(
            f"no train-*.parquet shards in {data_dir}; build the traces (`dvc repro build@<teacher>`) or pull "
            "them from the Hub (traces.source: hub) first"
        )
    return shards


def read_source(data_dir: str | Path) -> pa.Table:
    """All rows of a source config (only the columns training needs, schema-checked)."""
    import pyarrow as pa

    tables = [read_table(p, TRACES, columns=COLUMNS) for p in source_shards(data_dir)]
    return pa.concat_tables(tables)


# --------------------------------------------------------------------------------------------- template
def load_chat_template(tokenizer: Any, template_path: str | Path | None) -> None:
    """Install ``template_path`` (a Jinja file) on ``tokenizer``; base models often ship no template."""
    if template_path is not None:
        path = Path(template_path)
        if not path.exists():
            raise TemplateError(f"chat template file {path} (students.<id>.chat_template) does not exist")
        tokenizer.chat_template = path.read_text(encoding="utf-8")
    if not getattr(tokenizer, "chat_template", None):
        raise TemplateError(
            f"tokenizer {getattr(tokenizer, 'name_or_path', '?')!r} has no chat template; set "
            "students.<id>.chat_template to a Jinja template file (e.g. one that closes each turn with a "
            "special end-of-turn token)"
        )


def render(
    tokenizer: Any, question: str, reasoning: str, response: str, *, keep_empty_think: bool = False
) -> tuple[str, str]:
    """``(prompt, completion)`` texts: the prompt as inference sees it, the rest as the model must produce it.

    ``keep_empty_think``: an answer-only target keeps an empty think block (``train.answer_only_think``)."""
    user = conversation(question, reasoning, response)[:1]
    prompt = tokenizer.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
    fmt = generation_prompt_format(prompt)
    # per chat format (reasoning.conversation): a pre-filled <think> (Qwen3.5) is decided on the prompt the
    # student sees at inference, so an answer-only target closes the block that prompt opens; gpt-oss gets
    # the reasoning in its analysis channel
    turns = conversation(question, reasoning, response, fmt, keep_empty_think=keep_empty_think)
    full = tokenizer.apply_chat_template(turns, tokenize=False)
    if not full.startswith(prompt):
        raise TemplateError(
            "the chat template renders the assistant turn differently from its generation prompt, so the "
            "training prompt would not match the inference prompt; set students.<id>.chat_template to a "
            f"template whose conversation starts with its generation prompt.\nprompt: {prompt[-200:]!r}\n"
            f"conversation: {full[len(prompt) - 200 : len(prompt) + 50]!r}"
        )
    completion = full[len(prompt) :]
    if reasoning.strip() and reasoning.strip() not in completion:
        raise TemplateError(
            "the chat template drops the think block from the assistant turn, so the student would never see "
            "the reasoning; set students.<id>.chat_template to a template that keeps assistant content verbatim"
        )
    return prompt, completion


def special_ids(tokenizer: Any) -> set[int]:
    """Ids of special tokens (the candidates for the end-of-turn marker)."""
    ids = set(getattr(tokenizer, "all_special_ids", []) or [])
    for idx, tok in (getattr(tokenizer, "added_tokens_decoder", {}) or {}).items():
        if getattr(tok, "special", False):
            ids.add(int(idx))
    return ids


def eot_cut(completion_ids: Sequence[int], specials: set[int], tokenizer: Any) -> int:
    """Length of the trained completion: up to and including the last special token (the EOT)."""
    for k in range(len(completion_ids) - 1, -1, -1):
        if completion_ids[k] in specials:
            tail = tokenizer.decode(list(completion_ids[k + 1 :]))
            if tail.strip():
                break  # text follows the last special token: it is not the turn's end
            return k + 1
    raise TemplateError(
        "the chat template does not close the assistant turn with a special end-of-turn token, so the student "
        "could never learn to stop; set students.<id>.chat_template to a template that ends each assistant "
        f"turn with one (e.g. <|im_end|>). Completion tail: {tokenizer.decode(list(completion_ids[-8:]))!r}"
    )


def encode_rows(
    tokenizer: Any,
    rows: Sequence[dict[str, Any]] | pa.Table,
    seq_len: int,
    overlong: Literal["drop", "truncate"] = "drop",
    batch_size: int = 1024,
    answer_only_think: Literal["strip", "keep_empty"] = "strip",
) -> Encoded:
    """Render, tokenise and mask every row; apply the overlong policy with counted rejects.

    ``answer_only_think`` (``train.answer_only_think``): what a row without reasoning trains before its
    response -- nothing (``strip``, the paper) or an empty think block (``keep_empty``)."""
    if not isinstance(rows, Sequence):
        rows = rows.to_pylist()
    out = Encoded()
    specials = special_ids(tokenizer)
    eot_ids: set[int] = set()
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        keep: list[dict[str, Any]] = []
        prompts: list[str] = []
        completions: list[str] = []
        for row in chunk:
            out.counter.seen()
            question = (row.get("question") or "").strip()
            reasoning = row.get("reasoning") or ""
            response = row.get("response") or ""
            if not question:
                out.counter.reject("empty_question")
                continue
            if not reasoning.strip() and not response.strip():
                out.counter.reject("empty_target")
                continue
            prompt, completion = render(
                tokenizer, question, reasoning, response, keep_empty_think=answer_only_think == "keep_empty"
            )
            keep.append(row)
            prompts.append(prompt)
            completions.append(completion)
        if not keep:
            continue
        # add_special_tokens=False: templates carry their own BOS where the model wants one, as at inference
        p_ids = tokenizer(prompts, add_special_tokens=False)["input_ids"]
        c_ids = tokenizer(completions, add_special_tokens=False)["input_ids"]
        for row, p, c in zip(keep, p_ids, c_ids, strict=True):
            cut = eot_cut(c, specials, tokenizer)
            eot_ids.add(c[cut - 1])
            ids = list(p) + list(c[:cut])
            if len(p) >= seq_len:
                out.counter.reject("prompt_overlong")
                continue
            if len(ids) > seq_len:
                if overlong == "drop":
                    out.counter.reject("overlong")
                    continue
                ids = ids[:seq_len]
                out.rows_truncated += 1
            out.ids.append(np.asarray(ids, dtype=np.int32))
            out.n_prompt.append(len(p))
            out.row_ids.append(str(row.get("id", "")))
            out.counter.kept()
    if len(eot_ids) > 1:
        names = sorted(tokenizer.convert_ids_to_tokens(sorted(eot_ids)))
        raise TemplateError(
            f"the chat template ends assistant turns with several tokens {names}; expected one"
        )
    if eot_ids:
        out.eot_token_id = eot_ids.pop()
        out.eot_token = tokenizer.convert_ids_to_tokens(out.eot_token_id)
    return out
