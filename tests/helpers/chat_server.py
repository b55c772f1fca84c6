"""A real OpenAI-compatible chat endpoint on loopback: one fixed reply, every request body recorded, and an
optional gate that holds every reply until the test opens it (to keep a stage mid-run for as long as needed).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class ChatServer(ThreadingHTTPServer):
    reply: str
    bodies: list[dict[str, Any]]
    gate: threading.Event  # replies wait until it is set

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class _Handler(BaseHTTPRequestHandler):
    server: ChatServer

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.bodies.append(body)
        self.server.gate.wait(120)
        answer = json.dumps(
            {
                "choices": [
                    {"message": {"role": "assistant", "content": self.server.reply}, "finish_reason": "stop"}
                ],
                "usage": {"prompt_tokens": 50, "completion_tokens": 12},
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def chat_server(reply: str, *, open_gate: bool = True) -> Iterator[ChatServer]:
    """Serve ``reply`` to every chat request; with ``open_gate=False`` replies wait for ``server.gate.set()``."""
    server = ChatServer(("127.0.0.1", 0), _Handler)
    server.reply, server.bodies, server.gate = reply, [], threading.Event()
    if open_gate:
        server.gate.set()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.gate.set()  # a held request must not keep shutdown waiting
        server.shutdown()
        server.server_close()
        thread.join()
