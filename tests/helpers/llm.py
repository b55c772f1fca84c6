"""Helpers of the engine-layer tests: a fault-injecting loopback proxy, llama.cpp server commands, a
template that pre-fills <think>."""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest


def llama_server_command(n_threads: int = 2, n_ctx: int = 1024, host: str = "127.0.0.1") -> str:
    """``launch`` entry serving the packaged SmolLM2 GGUF with llama-cpp-python's OpenAI server (``host``:
    ``{host}`` for the address ``launch`` gives it, e.g. a SLURM node's hostname)."""
    pytest.importorskip(
        "llama_cpp.server", reason="llama-cpp-python[server] is in the test extra: make setup-test"
    )
    from compress_distill.modelhub import smollm2_gguf

    return (
        f"{{python}} -m llama_cpp.server --model {smollm2_gguf()} --host {host} --port {{port}} "
        f"--n_ctx {n_ctx} --n_threads {n_threads} --n_threads_batch {n_threads} --verbose False"
    )


# --------------------------------------------------------------------------------------------- fault proxy
# A fault is one of: "429", "500", "503", "400", "slow", "drop", "drop_mid", "malformed", "echo_auth_500".
Plan = Callable[[str, int], str | None]  # (request id, attempt number from 1) -> fault or None (forward)


@dataclass
class FaultProxy:
    """HTTP/1.1 proxy on loopback between the client and a real server; injects faults per request.

    Requests are identified by the content of their last message.  ``attempts`` counts every request that
    reached the proxy (pass one Counter to several proxies to count across them), ``forwarded`` those passed
    to the real server, ``auth`` the Authorization headers seen, ``bodies`` the request bodies, ``seen`` the
    requests this proxy received.
    """

    upstream: str  # http://127.0.0.1:PORT (no /v1)
    plan: Plan
    slow_s: float = 3.0
    attempts: Counter[str] = field(default_factory=Counter)
    forwarded: Counter[str] = field(default_factory=Counter)
    auth: list[str] = field(default_factory=list)
    bodies: list[dict] = field(default_factory=list)  # every request body received, parsed
    seen: int = 0
    port: int = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> FaultProxy:
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
            self.port = server.sockets[0].getsockname()[1]
            self._server = server
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        async def shutdown() -> None:
            self._server.close()
            handlers = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in handlers:  # e.g. a "slow" fault still sleeping
                task.cancel()
            await asyncio.gather(*handlers, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        import httpx

        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                method, path, _ = line.decode().split(" ", 2)
                headers: dict[str, str] = {}
                while (h := await reader.readline()) not in (b"\r\n", b"\n", b""):
                    name, value = h.decode().split(":", 1)
                    headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", 0)))
                rid = ""
                if body:
                    self.bodies.append(json.loads(body))
                    rid = self.bodies[-1]["messages"][-1]["content"]
                    self.attempts[rid] += 1
                    self.seen += 1
                    self.auth.append(headers.get("authorization", ""))
                fault = self.plan(rid, self.attempts[rid]) if rid else None
                if fault == "drop":
                    writer.close()
                    return
                if fault == "slow":
                    await asyncio.sleep(self.slow_s)  # past the client's timeout: it gives up first
                    writer.close()
                    return
                if fault == "drop_mid":
                    writer.write(
                        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n"
                        b'{"choices": [{"mess'
                    )
                    await writer.drain()
                    writer.close()
                    return
                if fault == "malformed":
                    await self._respond(writer, 200, b'{"id": "x", "choices": [{"message": ', {})
                    continue
                if fault in ("429", "500", "503", "400"):
                    extra = {"Retry-After": "0"} if fault == "429" else {}
                    await self._respond(writer, int(fault), b'{"error": {"message": "injected"}}', extra)
                    continue
                if fault == "echo_auth_500":  # a server that leaks the key into its error body
                    msg = json.dumps({"error": f"bad auth {headers.get('authorization', '')}"}).encode()
                    await self._respond(writer, 500, msg, {})
                    continue
                async with httpx.AsyncClient(timeout=120) as client:
                    up = await client.request(
                        method,
                        self.upstream + path,
                        content=body,
                        headers={"content-type": "application/json"},
                    )
                if rid:
                    self.forwarded[rid] += 1
                await self._respond(writer, up.status_code, up.content, {})
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            if not writer.is_closing():
                writer.close()

    @staticmethod
    async def _respond(writer: asyncio.StreamWriter, status: int, body: bytes, extra: dict[str, str]) -> None:
        head = [
            f"HTTP/1.1 {status} X",
            "Content-Type: application/json",
            f"Content-Length: {len(body)}",
            *(f"{k}: {v}" for k, v in extra.items()),
        ]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        await writer.drain()


# A Qwen3.5-style template (the generation prompt pre-fills <think>) that renders the same prompt for
# transformers (add_generation_prompt) and for llama-cpp-python's hf-tokenizer-config chat format, which
# appends an empty assistant message instead.
PREFILLED_THINK_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'assistant' and not m['content'] %}"
    "<|im_start|>assistant\n<think>\n"
    "{% else %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n<think>\n{% endif %}"
)
