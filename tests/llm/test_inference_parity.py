"""One inference path: identical raw model outputs give identical ``Completion`` fields through the hf
(token decoding), vllm (offline output translation) and openai (chat-completions response, with and without
a server-side reasoning split) paths, and every backend's request carries the model's end-of-turn stops.

Reproduces issue 10: with a template that pre-fills <think> (Qwen3.5), a completion cut at the cap was
returned by vllm and openai as a final response with empty reasoning (and graded), while hf restored it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from compress_distill.config import backend_config
from compress_distill.llm import ChatRequest, make_backend
from compress_distill.llm.hf import decode_completion
from compress_distill.llm.openai_backend import chat_body, parse_chat_response, served_chat_format
from compress_distill.llm.resolve import resolve_local_model
from compress_distill.llm.tokens import SERVER_DEFINED, ChatFormat, chat_format, load_chat_format
from compress_distill.llm.vllm_backend import completion_fields, is_harmony, sampling_kwargs

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "chat_formats"
FIELDS = ("text", "reasoning", "finish_reason", "completion_tokens")

CUT = "Let me see. B looks right, so the answer is B"
# (raw generated text after the prompt, finish reason, expected (reasoning, final response))
QWEN_CASES = [
    # cut at the cap inside the pre-filled think block: the reported bug (graded correct, reasoning_chars 0)
    (CUT, "length", (CUT, "")),
    ("Add 2 and 2.\n</think>\n\nThe answer is 4.", "stop", ("Add 2 and 2.", "The answer is 4.")),
    ("Add 2 and 2.\n</think>\n\nThe answer", "length", ("Add 2 and 2.", "The answer")),  # cut in the answer
    ("\n</think>\n\nB", "stop", ("", "B")),  # an answer-only student: empty think block
]
HARMONY_CASES = [
    (
        "<|channel|>analysis<|message|>2+2=4<|end|><|start|>assistant<|channel|>final<|message|>4",
        "stop",
        ("2+2=4", "4"),
    ),
    ("<|channel|>analysis<|message|>so the answer is 4", "length", ("so the answer is 4", "")),
]


def _tokenizer(family: str) -> object:
    return AutoTokenizer.from_pretrained(FIXTURES / family)


def _hf(tok: object, fmt: ChatFormat, raw: str, finish: str, keep_specials: bool) -> dict:
    ids = tok(raw, add_special_tokens=False)["input_ids"]
    if finish == "stop":
        ids = ids + [fmt.stop_token_ids[0]]  # the model ended its turn
        return decode_completion(tok, ids, len(ids) + 10, fmt, keep_specials=keep_specials)
    return decode_completion(tok, ids, len(ids), fmt, keep_specials=keep_specials)  # the cap ran out


def _openai(content: str | None, finish: str, n: int, fmt: ChatFormat, **message: str | None) -> dict:
    data = {
        "choices": [{"message": {"content": content, **message}, "finish_reason": finish}],
        "usage": {"prompt_tokens": 5, "completion_tokens": n},
    }
    return parse_chat_response(data, fmt.think_prefilled)


def _pick(fields: dict) -> tuple:
    return tuple(fields[k] for k in FIELDS)


@pytest.mark.parametrize(("raw", "finish", "expected"), QWEN_CASES)
def test_prefilled_think_parity_hf_vllm_openai(raw: str, finish: str, expected: tuple[str, str]) -> None:
    tok = _tokenizer("qwen3.5")
    fmt = chat_format(tok)
    assert fmt.think_prefilled
    hf = _hf(tok, fmt, raw, finish, keep_specials=False)
    n = hf["completion_tokens"]
    vllm = completion_fields(raw, n, 5, finish, think_prefilled=fmt.think_prefilled)
    openai = _openai(raw, finish, n, fmt)
    assert (hf["reasoning"], hf["text"]) == expected
    assert _pick(hf) == _pick(vllm) == _pick(openai)


def test_server_side_reasoning_shapes_map_onto_the_same_rule() -> None:
    fmt = chat_format(_tokenizer("qwen3.5"))
    # a vLLM reasoning parser that leaves a cut, never-closed reasoning in the content (older qwen3 parser)
    old = _openai(CUT, "length", 16, fmt, reasoning_content=None)
    # one that returns it as reasoning with no content (newer parsers, and gpt-oss's)
    new = _openai(None, "length", 16, fmt, reasoning_content=CUT)
    newer = _openai(None, "length", 16, fmt, reasoning=CUT)
    assert _pick(old) == _pick(new) == _pick(newer) == ("", CUT, "length", 16)
    done = _openai("The answer is 4.", "stop", 9, fmt, reasoning_content="Add 2 and 2.")
    assert (done["reasoning"], done["text"]) == ("Add 2 and 2.", "The answer is 4.")


@pytest.mark.parametrize(("raw", "finish", "expected"), HARMONY_CASES)
def test_harmony_parity_hf_vllm_openai(raw: str, finish: str, expected: tuple[str, str]) -> None:
    tok = _tokenizer("gpt-oss")
    fmt = chat_format(tok)
    assert fmt.harmony and not fmt.think_prefilled
    hf = _hf(tok, fmt, raw, finish, keep_specials=True)
    n = hf["completion_tokens"]
    vllm = completion_fields(raw, n, 5, finish, think_prefilled=False)
    # vLLM serve with --reasoning-parser openai_gptoss splits the channels itself
    split = _openai(expected[1] or None, finish, n, fmt, reasoning_content=expected[0])
    assert (hf["reasoning"], hf["text"]) == expected
    assert _pick(hf) == _pick(vllm) == _pick(split)


def _student(tmp_path: Path, family: str, eot: str, run: str) -> Path:
    """A student directory as the training stage writes it (adapter, tokenizer, training_config.json)."""
    out = tmp_path / "models" / run
    shutil.copytree(FIXTURES / family, out)
    tok = AutoTokenizer.from_pretrained(out)
    (out / "adapter_config.json").write_text(json.dumps({"r": 8, "base_model_name_or_path": "org/base"}))
    (out / "training_config.json").write_text(
        json.dumps(
            {"base_model": "org/base", "eot_token": eot, "eot_token_id": tok.convert_tokens_to_ids(eot)}
        )
    )
    return out


def test_every_backend_request_carries_the_trained_end_of_turn_stop(tmp_path: Path) -> None:
    student = _student(tmp_path, "qwen3.5", "<|im_end|>", "qwen397b-qwen08b-lora-raw")
    resolved = resolve_local_model(str(student))
    assert resolved.adapter == str(student) and resolved.weights == "org/base"
    fmt = load_chat_format(resolved)
    eot = AutoTokenizer.from_pretrained(student).convert_tokens_to_ids("<|im_end|>")
    assert fmt.stop_token_ids[0] == eot and fmt.stop_tokens[0] == "<|im_end|>" and fmt.think_prefilled
    req = ChatRequest([{"role": "user", "content": "q"}], max_tokens=64)
    # vLLM: stop_token_ids (vLLM itself reads only the base model's generation config)
    assert sampling_kwargs(req, harmony=False, stop_token_ids=fmt.stop_token_ids)["stop_token_ids"] == list(
        fmt.stop_token_ids
    )
    # OpenAI-compatible servers: `stop`, plus vLLM's `stop_token_ids` extension
    assert served_chat_format(str(student)) == fmt
    body = chat_body(str(student), req, fmt=fmt)
    assert body["stop"][0] == "<|im_end|>" and body["stop_token_ids"] == list(fmt.stop_token_ids)
    # a served name or Hub id: the server's own template and stops (nothing to read without a download)
    assert served_chat_format("org/some-served-model") == SERVER_DEFINED
    assert "stop" not in chat_body("org/m", req)
    assert "stop_token_ids" not in sampling_kwargs(req, harmony=False)


def test_a_gpt_oss_student_directory_is_recognised_by_its_template_not_its_name(tmp_path: Path) -> None:
    student = _student(tmp_path, "gpt-oss", "<|return|>", "gptoss120b-gptoss20b-full-raw")
    cfg = backend_config({"backend": "vllm", "model": str(student)})
    assert not is_harmony(cfg)  # the paper's run ids say "gptoss": the name alone misses the format
    fmt = load_chat_format(resolve_local_model(str(student)))
    assert fmt.harmony and fmt.stop_tokens[0] == "<|return|>" and "<|end|>" not in fmt.stop_tokens
    req = ChatRequest([{"role": "user", "content": "q"}])
    # channel markers are special tokens: kept in the text on both vLLM paths, so the split can see them
    assert sampling_kwargs(req, harmony=fmt.harmony)["skip_special_tokens"] is False
    assert chat_body(str(student), req, fmt=fmt)["skip_special_tokens"] is False
    assert "skip_special_tokens" not in chat_body("m", req, fmt=ChatFormat("think", (7,), ("<|im_end|>",)))


def test_openai_cache_key_follows_a_local_students_files(tmp_path: Path) -> None:
    """Stops and split come from the student's files, so a retrained student must not reuse cached answers."""
    student = _student(tmp_path, "qwen3.5", "<|im_end|>", "qwen397b-qwen08b-lora-raw")
    cfg = {"backend": "openai", "model": str(student), "base_urls": ["http://127.0.0.1:9/v1"]}
    before = make_backend(cfg, cache_dir=tmp_path / "cache").engine_key
    config = json.loads((student / "training_config.json").read_text())
    config["eot_token_id"] = 0
    (student / "training_config.json").write_text(json.dumps(config))
    assert make_backend(cfg, cache_dir=tmp_path / "cache").engine_key != before
    served = {"backend": "openai", "model": "org/served", "base_urls": ["http://127.0.0.1:9/v1"]}
    assert "weights" not in json.loads(make_backend(served, cache_dir=tmp_path / "cache").engine_key)
