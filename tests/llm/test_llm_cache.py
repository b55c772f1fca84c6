"""The durable request cache: round trips, torn writes, corruption, concurrent readers, addressing."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from compress_distill.llm.cache import RequestCache
from compress_distill.llm.types import ChatRequest, Completion


def _completion(text: str, **kw: object) -> Completion:
    fields = {
        "reasoning": "",
        "finish_reason": "stop",
        "prompt_tokens": 3,
        "completion_tokens": 5,
        "model": "m",
    }
    fields.update(kw)
    return Completion(text=text, **fields)  # type: ignore[arg-type]


def _key(i: int) -> str:
    return ChatRequest([{"role": "user", "content": f"q{i}"}]).key("engine")


def test_round_trip_and_persistence(tmp_path: Path) -> None:
    completion = _completion(
        'réponse ✓ \n"quoted"', reasoning="think\u2028more", finish_reason="length", extra={"attempts": 2}
    )
    with RequestCache(tmp_path, "engine-a", {"backend": "hf"}) as cache:
        cache.put(_key(1), completion)
        hit = cache.get(_key(1))
        assert hit is not None and hit.cached and hit.text == completion.text
        assert cache.get(_key(2)) is None
    reopened = RequestCache(tmp_path, "engine-a")
    hit = reopened.get(_key(1))
    assert hit is not None
    assert (hit.text, hit.reasoning, hit.finish_reason, hit.extra) == (
        completion.text,
        completion.reasoning,
        "length",
        {"attempts": 2},
    )
    assert hit.cached and hit.request_hash == _key(1)
    assert json.loads((reopened.dir / "engine.json").read_text())["backend"] == "hf"
    # another engine id is another namespace: never served across engines
    assert RequestCache(tmp_path, "engine-b").get(_key(1)) is None


def test_torn_last_line_is_ignored(tmp_path: Path) -> None:
    cache = RequestCache(tmp_path, "e")
    cache.put_many([(_key(i), _completion(f"t{i}")) for i in range(3)])
    segment = next(cache.dir.glob("*.jsonl"))
    cache.close()
    # a writer SIGKILLed in the middle of its last line
    with open(segment, "ab") as fh:
        fh.write(b'{"k":"' + _key(9).encode() + b'","c":{"text":"half')
    reader = RequestCache(tmp_path, "e")
    assert len(reader) == 3 and reader.get(_key(9)) is None
    assert reader.corrupt_lines == 0  # a torn tail is expected, not corruption
    # the next run writes its own segment; the torn tail stays harmless
    reader.put(_key(9), _completion("whole"))
    again = RequestCache(tmp_path, "e")
    assert again.get(_key(9)).text == "whole"  # type: ignore[union-attr]
    assert [again.get(_key(i)).text for i in range(3)] == ["t0", "t1", "t2"]  # type: ignore[union-attr]


def test_malformed_lines_are_reported_and_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cache = RequestCache(tmp_path, "e")
    cache.put(_key(1), _completion("ok"))
    cache.close()
    segment = next(cache.dir.glob("*.jsonl"))
    good_line = segment.read_bytes()
    # garbage between two good lines, and an entry whose body is damaged after its key
    damaged = b'{"k":"' + _key(2).encode() + b'","c":{"text": nope}\n'
    segment.write_bytes(b"garbage line\n" + good_line + damaged)
    with caplog.at_level(logging.WARNING):
        reader = RequestCache(tmp_path, "e")
        assert reader.get(_key(1)).text == "ok"  # type: ignore[union-attr]
        assert reader.get(_key(2)) is None  # damaged body: regenerated, never served
    assert reader.corrupt_lines == 2
    assert "malformed" in caplog.text and "regenerated" in caplog.text


def test_keys_are_never_shared_between_different_requests() -> None:
    base = ChatRequest([{"role": "user", "content": "q"}], temperature=0.7, seed=1, max_tokens=10)
    variants = [
        ChatRequest([{"role": "user", "content": "q "}], temperature=0.7, seed=1, max_tokens=10),
        ChatRequest(
            [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}],
            temperature=0.7,
            seed=1,
            max_tokens=10,
        ),
        ChatRequest([{"role": "user", "content": "q"}], temperature=0.8, seed=1, max_tokens=10),
        ChatRequest([{"role": "user", "content": "q"}], temperature=0.7, seed=2, max_tokens=10),
        ChatRequest([{"role": "user", "content": "q"}], temperature=0.7, seed=1, max_tokens=11),
        ChatRequest([{"role": "user", "content": "q"}], temperature=0.7, seed=1, max_tokens=10, top_p=0.9),
        ChatRequest(
            [{"role": "user", "content": "q"}],
            temperature=0.7,
            seed=1,
            max_tokens=10,
            json_schema={"type": "object"},
        ),
    ]
    keys = {base.key("m")} | {v.key("m") for v in variants} | {base.key("m2")}
    assert len(keys) == len(variants) + 2
    assert base.key("m") == ChatRequest(
        [{"role": "user", "content": "q"}], temperature=0.7, seed=1, max_tokens=10
    ).key("m")


_WRITER = textwrap.dedent(
    """
    import sys, time
    from compress_distill.llm.cache import RequestCache
    from compress_distill.llm.types import ChatRequest, Completion
    cache = RequestCache(sys.argv[1], "shared")
    for i in range(int(sys.argv[2])):
        key = ChatRequest([{"role": "user", "content": f"q{i}"}]).key("engine")
        cache.put(key, Completion(text=f"answer {i} " + "x" * (i * 37 % 5000), reasoning="", finish_reason="stop",
                                  prompt_tokens=i, completion_tokens=i, model="m"))
        time.sleep(0.002)
    cache.close()
    """
)


def test_concurrent_reader_sees_only_complete_entries(tmp_path: Path) -> None:
    n = 300
    writer = subprocess.Popen([sys.executable, "-c", _WRITER, str(tmp_path), str(n)])
    reader = RequestCache(tmp_path, "shared")
    seen: set[int] = set()
    deadline = time.monotonic() + 60
    while len(seen) < n and time.monotonic() < deadline:
        reader.refresh()
        for i in range(n):
            if i in seen:
                continue
            hit = reader.get(_key(i))
            if hit is not None:
                # a hit is always the whole entry of *its* request
                assert hit.text == f"answer {i} " + "x" * (i * 37 % 5000) and hit.prompt_tokens == i
                seen.add(i)
        if writer.poll() is not None:
            reader.refresh()
    assert writer.wait(30) == 0
    reader.refresh()
    assert all(reader.get(_key(i)) is not None for i in range(n))
    assert reader.corrupt_lines == 0
