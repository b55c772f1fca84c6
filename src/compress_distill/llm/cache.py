"""Durable, content-addressed request cache shared by every backend.

Why it exists: a teacher stage can run for hours; when it is killed (SIGKILL, pre-emption, OOM) the re-run
must send only the requests that had not finished.  So every completion is written to disk the moment it
is known, and the next run looks each request up before generating.

Layout (``root`` is ``.cache/llm`` by default, see ``llm.factory``)::

    root/<engine-digest>/engine.json                     what produced these completions (no secrets)
    root/<engine-digest>/<time_ns>-<pid>-<rand>.jsonl    one append-only segment per writer process

One line per completion: ``{"k":"<64 hex request key>","c":{...Completion fields...}}\\n``.  The key
(``ChatRequest.key(engine_id)``) is a SHA-256 over everything that changes the output, so a completion is
never served for a different request (a collision would need a SHA-256 collision).

Durability and concurrency:
- each writer owns its segment and appends a whole line with one unbuffered ``os.write`` on an
  ``O_APPEND`` descriptor, so a completion reaches the kernel as soon as ``put`` returns (a SIGKILL of the
  process loses nothing already put; only a power cut can, as nothing is fsync'ed per line);
- a line without its trailing newline is a torn write from a killed writer (or a write in flight): it is
  never indexed, and since nobody else appends to that segment it stays harmlessly at the end;
- readers index only complete lines, so any number of processes may read while others write.

Only an index (key -> segment, offset, length) is kept in memory, so caches with millions of long traces
need not fit in RAM; a hit is a slice of a read-only ``mmap`` of its segment plus one ``json.loads``.
``bench/backends.py`` measures ~145k ``get``/s and ~60k fully cached ``backend.generate`` requests/s per
CPU-second (3 KB completions; hashing each request is the other half), and ~0.3 s to index 50k entries.

Code identity: the engine id includes ``code_fingerprint`` of the modules that shape a completion (the
backend's own module and the reasoning split, see ``CachedBackend.code_modules``), so a behaviour change
there regenerates instead of replaying completions the old code made.  The fingerprint hashes each module's
syntax tree without docstrings: comments, docstrings and formatting never invalidate the cache (a Python
upgrade that changes ``ast.dump``'s format does, once).
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import json
import logging
import mmap
import os
import secrets
import threading
import time
from collections.abc import Iterable
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, Self

from compress_distill.llm.types import Completion

log = logging.getLogger(__name__)

_PREFIX = b'{"k":"'
_KEY_LEN = 64  # hex digits of a SHA-256
_SCAN_CHUNK = 64 << 20  # bytes read at a time when indexing a segment (bounded memory)
_COMPLETION_FIELDS = frozenset(f.name for f in fields(Completion))


def source_fingerprint(source: str) -> str:
    """SHA-256 (hex) of the code in ``source``, blind to comments, docstrings and formatting.

    ``ast.dump`` holds no comments and (by default) no positions; docstrings -- the first string statement
    of a module, class or function body -- are dropped before dumping.
    """
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            first = node.body[0] if node.body else None
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            ):
                node.body = node.body[1:]
    return hashlib.sha256(ast.dump(tree).encode("utf-8")).hexdigest()


def code_fingerprint(modules: Iterable[str]) -> str:
    """16 hex digits identifying the code of ``modules`` (dotted names, imported if need be), read from
    their source files now: an edited file counts even before the process re-imports it."""
    parts: list[str] = []
    for name in sorted(set(modules)):
        path = getattr(importlib.import_module(name), "__file__", None)
        if path is None:
            raise ValueError(f"module {name} has no source file to fingerprint; define backends in .py files")
        parts.append(f"{name}={source_fingerprint(Path(path).read_text(encoding='utf-8'))}")
    return hashlib.sha256("\n".join(parts).encode("utf-8")).hexdigest()[:16]


class RequestCache:
    """Append-only completion store for one engine (see the module docstring)."""

    def __init__(self, root: str | Path, engine_id: str, engine_info: dict[str, Any] | None = None) -> None:
        self.root = Path(root)
        self.engine_id = engine_id
        self.dir = self.root / hashlib.sha256(engine_id.encode("utf-8")).hexdigest()[:24]
        self.dir.mkdir(parents=True, exist_ok=True)
        info = self.dir / "engine.json"
        if engine_info is not None and not info.exists():
            tmp = info.with_name(f".engine.{os.getpid()}.{secrets.token_hex(4)}.json")
            tmp.write_text(json.dumps(engine_info, indent=2, sort_keys=True) + "\n", encoding="utf-8")
            os.replace(tmp, info)
        self._lock = threading.Lock()
        self._index: dict[str, tuple[int, int, int]] = {}  # key -> (segment number, offset, length)
        self._segments: list[Path] = []
        self._segment_no: dict[Path, int] = {}
        self._scanned: dict[Path, int] = {}  # bytes of complete lines already indexed, per segment
        self._maps: dict[int, mmap.mmap] = {}  # segment number -> read-only map
        self._write_fd: int | None = None
        self._write_path: Path | None = None
        self._write_size = 0
        self.corrupt_lines = 0
        self.refresh()

    # ------------------------------------------------------------------------------------------ reading
    def refresh(self) -> int:
        """Index complete lines appended since the last call (by any process); returns how many were new."""
        new = 0
        with self._lock:
            for path in sorted(self.dir.glob("*.jsonl")):
                if path == self._write_path:
                    continue  # our own lines are indexed as they are written
                new += self._scan(path)
        return new

    def _scan(self, path: Path) -> int:
        start = self._scanned.get(path, 0)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return 0
        if size <= start:
            return 0
        no = self._segment_no.get(path)
        if no is None:
            no = self._segment_no[path] = len(self._segments)
            self._segments.append(path)
        new = bad = 0
        base = start  # file offset of blob[0]
        carry = b""
        with open(path, "rb") as fh:
            fh.seek(start)
            while chunk := fh.read(_SCAN_CHUNK):
                blob = carry + chunk
                end = blob.rfind(b"\n") + 1  # bytes after the last newline: torn, or still being written
                pos = 0
                while pos < end:
                    nl = blob.index(b"\n", pos)
                    if (
                        blob.startswith(_PREFIX, pos)
                        and blob[pos + 6 + _KEY_LEN : pos + 7 + _KEY_LEN] == b'"'
                    ):
                        key = blob[pos + 6 : pos + 6 + _KEY_LEN].decode("ascii", "replace")
                        if key not in self._index:  # the first copy wins; later copies are identical re-runs
                            self._index[key] = (no, base + pos, nl + 1 - pos)
                            new += 1
                    else:
                        bad += 1
                    pos = nl + 1
                base += end
                carry = blob[end:]
        self._scanned[path] = base
        if bad:
            self.corrupt_lines += bad
            log.warning("request cache %s: skipped %d malformed line(s) in %s", self.dir, bad, path.name)
        return new

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, key: str) -> bool:
        return key in self._index

    def get(self, key: str) -> Completion | None:
        """The stored completion for ``key`` (marked ``cached=True``), or None."""
        loc = self._index.get(key)
        if loc is None:
            return None
        no, offset, length = loc
        view = self._maps.get(no)
        if view is None or offset + length > len(view):  # first read, or the segment grew since mapping
            view = self._map(no)
        raw = view[offset : offset + length]
        try:
            entry = json.loads(raw.decode("utf-8", "surrogatepass"))  # str in: skips json's encoding sniffing
            if entry["k"] != key:
                raise ValueError("key mismatch")
            data = entry["c"]
            if not data.keys() <= _COMPLETION_FIELDS:  # written by a newer version: keep what we know
                data = {k: v for k, v in data.items() if k in _COMPLETION_FIELDS}
            data["cached"] = True
            data["request_hash"] = key
            return Completion(**data)
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            # A damaged line must not crash a resume or be served: drop it and regenerate the request.
            with self._lock:
                self._index.pop(key, None)
                self.corrupt_lines += 1
            log.warning(
                "request cache %s: unreadable entry for %s… (%s); it will be regenerated",
                self.dir,
                key[:12],
                err,
            )
            return None

    def _map(self, no: int) -> mmap.mmap:
        """Read-only map of a segment: a hit is then a slice, not a system call."""
        old = self._maps.pop(no, None)
        if old is not None:
            old.close()
        with open(self._segments[no], "rb") as fh:
            view = self._maps[no] = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        return view

    # ------------------------------------------------------------------------------------------ writing
    def put(self, key: str, completion: Completion) -> None:
        """Append one completion; it is in the kernel's page cache (safe from SIGKILL) when this returns."""
        self.put_many([(key, completion)])

    def put_many(self, items: list[tuple[str, Completion]]) -> None:
        if not items:
            return
        lines: list[bytes] = []
        for key, completion in items:
            if len(key) != _KEY_LEN:
                raise ValueError(f"cache keys are {_KEY_LEN}-hex-digit SHA-256 digests, got {key!r}")
            body = asdict(completion)
            body.pop("cached", None)
            body["request_hash"] = key
            lines.append(
                _PREFIX
                + key.encode("ascii")
                + b'","c":'
                + json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogatepass")
                + b"}\n"
            )
        blob = b"".join(lines)
        with self._lock:
            fd = self._writer()
            written = 0
            while written < len(blob):  # os.write may be partial for huge blobs; keep the order
                written += os.write(fd, blob[written:])
            no = self._segment_no[self._write_path]  # type: ignore[index]
            offset = self._write_size
            for (key, _), line in zip(items, lines, strict=True):
                self._index.setdefault(key, (no, offset, len(line)))
                offset += len(line)
            self._write_size = offset

    def _writer(self) -> int:
        if self._write_fd is None:
            name = f"{time.time_ns()}-{os.getpid()}-{secrets.token_hex(4)}.jsonl"
            path = self.dir / name
            # 0666 less the umask, like any file ``open`` creates: a group-shared cache stays group-writable
            self._write_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_EXCL, 0o666)
            self._write_path = path
            self._write_size = 0
            self._segment_no[path] = len(self._segments)
            self._segments.append(path)
        return self._write_fd

    def close(self) -> None:
        with self._lock:
            if self._write_fd is not None:
                os.fsync(self._write_fd)  # survive a power cut too, once per run
                os.close(self._write_fd)
                self._scanned[self._write_path] = self._write_size  # type: ignore[index]
                self._write_fd = None
                self._write_path = None
            for view in self._maps.values():
                view.close()
            self._maps.clear()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
