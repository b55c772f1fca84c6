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

from compress_distill.config import BackendConfig
from compress_distill.llm.cache import RequestCache, code_fingerprint, source_fingerprint
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


# ------------------------------------------------------------------------------------------ code identity
_ENGINE_SOURCE = '''"""A toy engine: shouts the prompt back (tests of the cache's code identity)."""

from typing import Any

from compress_distill.llm.base import CachedBackend
from compress_distill.llm.types import Completion

RUNS = []


class ShoutBackend(CachedBackend):
    name = "shout"

    def engine_id(self) -> dict[str, Any]:
        return {"backend": "shout", "model": self.model}

    def _load(self) -> None:
        pass

    def _run(self, requests, emit) -> None:
        RUNS.append(len(requests))
        for i, req in enumerate(requests):
            text = req.messages[-1]["content"].upper()
            emit(i, Completion(text, "", "stop", prompt_tokens=1, completion_tokens=1, model=self.model))
'''


def test_source_fingerprint_ignores_comments_docstrings_and_layout() -> None:
    base = (
        '"""Module doc."""\nimport os\n\n\nclass A:\n    """Doc."""\n\n'
        '    def f(self, x):\n        """Doc."""\n        return x + 1  # one\n'
    )
    same = (
        '"""Another module doc, longer."""\n# a new comment\nimport os\n\nclass A:\n    """New doc."""\n'
        "    def f( self, x ):\n        '''Other doc.'''\n\n        return (x + 1)\n"
    )
    assert source_fingerprint(base) == source_fingerprint(same)
    assert source_fingerprint(base) != source_fingerprint(base.replace("x + 1", "x + 2"))
    assert source_fingerprint(base) != source_fingerprint(base + "\n\ndef g():\n    return 1\n")
    # a string that is not the first statement is code, not a docstring
    not_a_docstring = base.replace("return x + 1", "'s'\n        return x + 1")
    assert source_fingerprint(base) != source_fingerprint(not_a_docstring)


def test_backend_identity_covers_its_module_and_the_reasoning_split(smol_dir: str, tmp_path: Path) -> None:
    from compress_distill.llm import make_backend

    backend = make_backend({"backend": "hf", "model": smol_dir, "device": "cpu"}, cache_dir=tmp_path)
    assert backend.code_modules() == ("compress_distill.llm.hf", "compress_distill.reasoning")
    assert json.loads(backend.engine_key)["code"] == code_fingerprint(backend.code_modules())
    assert backend.cache is not None
    assert json.loads((backend.cache.dir / "engine.json").read_text())["code"] == backend.code_id
    backend.close()


def test_comment_edit_replays_and_behaviour_edit_regenerates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine_file = tmp_path / "mods" / "shout_engine.py"
    engine_file.parent.mkdir()
    engine_file.write_text(_ENGINE_SOURCE)
    monkeypatch.syspath_prepend(str(engine_file.parent))
    import importlib

    module = importlib.import_module("shout_engine")
    cfg = BackendConfig(backend="hf", model="org/toy")  # never loaded: the toy engine has no weights
    request = [ChatRequest([{"role": "user", "content": "hello"}])]

    def generate() -> tuple[str, int]:
        with module.ShoutBackend(cfg, cache_dir=tmp_path / "cache") as backend:
            (done,) = backend.generate(request)
            return done.text, backend.stats.generated

    assert generate() == ("HELLO", 1)
    # comments and docstrings only: served from the cache, the engine gets no request
    engine_file.write_text(
        _ENGINE_SOURCE.replace('"""A toy engine', '# why: a comment\n"""A toy engine, reworded').replace(
            "        RUNS.append", "        # counted per call\n        RUNS.append"
        )
    )
    assert generate() == ("HELLO", 0)
    assert module.RUNS == [1]
    # a behaviour edit: a new cache namespace, so the new code generates
    engine_file.write_text(_ENGINE_SOURCE.replace(".upper()", ".upper() + '!'"))
    module = importlib.reload(module)
    assert generate() == ("HELLO!", 1)
    assert module.RUNS == [1]


_HF_GENERATE = """
import json, sys
from compress_distill.llm import ChatRequest, make_backend

cfg = {"backend": "hf", "model": sys.argv[1], "device": "cpu", "dtype": "float32"}
with make_backend(cfg, cache_dir=sys.argv[2]) as backend:
    (done,) = backend.generate([ChatRequest([{"role": "user", "content": "What is 2+2?"}], max_tokens=4)])
    print(json.dumps({"text": done.text, "generated": backend.stats.generated, "loaded": backend._loaded}))
"""

# appended to llm/hf.py: a behaviour change in what the backend emits
_HF_BEHAVIOUR_EDIT = """

_plain_run = HFBackend._run


def _marked_run(self, requests, emit):
    import dataclasses

    _plain_run(self, requests, lambda i, c: emit(i, dataclasses.replace(c, text=c.text + " [edited]")))


HFBackend._run = _marked_run
"""


@pytest.mark.slow
def test_hf_backend_edits_real_model(smol_dir: str, tmp_path: Path) -> None:
    """The finding: a behaviour edit of llm/hf.py replayed the old completions; a comment edit must not."""
    import os
    import shutil

    src = tmp_path / "src"
    package = Path(__file__).resolve().parents[2] / "src" / "compress_distill"
    shutil.copytree(package, src / "compress_distill", ignore=shutil.ignore_patterns("__pycache__"))
    hf = src / "compress_distill" / "llm" / "hf.py"
    original = hf.read_text()
    env = {**os.environ, "PYTHONPATH": str(src)}

    def generate() -> dict[str, object]:
        out = subprocess.run(
            [sys.executable, "-c", _HF_GENERATE, smol_dir, str(tmp_path / "cache")],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=True,
        ).stdout
        return json.loads(out.strip().splitlines()[-1])

    first = generate()
    assert first["generated"] == 1
    hf.write_text("# a comment added by a test\n" + original.replace('"""', '"""Reworded. ', 1))
    again = generate()
    assert again == {**first, "generated": 0, "loaded": False}  # served from the cache, model never loaded
    hf.write_text(original + _HF_BEHAVIOUR_EDIT)
    edited = generate()
    assert edited["generated"] == 1 and edited["text"] == f"{first['text']} [edited]"
