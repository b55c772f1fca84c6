"""A real HTTP server on loopback that refuses every request and echoes its credential back.

Some servers (and proxies) quote the request's Authorization header in their error bodies; the tests use this
one to check that no message of ours passes such an echo on.  Fake credentials are assembled at run time
(``fake_token``) so secret scanners do not flag the sources.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def fake_token(prefix: str = "hf_") -> str:
    return prefix + "FAKE" + "tokenThatMustNeverBePrinted" + "0123456789"


class _EchoHandler(BaseHTTPRequestHandler):
    status = 401
    pad = 0  # characters of filler before the echo, to place the credential where a message cuts text

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        auth = self.headers.get("Authorization", "")
        bare = auth.split()[-1] if auth else ""
        body = json.dumps(
            {"error": "." * self.pad + f"invalid credentials: {auth}", "detail": {"token": bare}}
        )
        payload = body.encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("X-Error-Message", f"bad credentials {auth}")  # huggingface_hub quotes this header
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_HEAD = do_DELETE = _answer

    def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
        pass


@contextmanager
def echo_server(status: int = 401, pad: int = 0) -> Iterator[str]:
    """Yield the base URL of a server answering ``status`` to everything, with the credential echoed (as the
    whole header and as the bare token) after ``pad`` filler characters."""
    handler = type("Handler", (_EchoHandler,), {"status": status, "pad": pad})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
