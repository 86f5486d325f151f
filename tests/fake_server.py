"""A stdlib HTTP server on 127.0.0.1 standing in for a serving engine, with the pieces a test needs to
write its answers (status, a streamed event), for tests of protocol corner cases and of what leaves the
machine. A real llama.cpp server for the tests that need one is in `llama_server`."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Callable

Handler = Callable[[http.server.BaseHTTPRequestHandler], None]


class FakeServer:
    """A stdlib HTTP server on 127.0.0.1 whose `/v1/completions` answer a test chooses."""

    def __init__(self, answer: Handler, models: tuple[str, ...] = ("qwen2.5-coder-1.5b",), port: int = 0) -> None:
        owner = self

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                listing = {"models": [{"name": m} for m in models]} if self.path == "/api/tags" else \
                    {"data": [{"id": m} for m in models]}
                send(self, 200, json.dumps(listing).encode(), "application/json")

            def do_POST(self) -> None:
                owner.bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                owner.paths.append(self.path)
                answer(self)

        self.bodies: list[dict] = []
        self.paths: list[str] = []
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), H)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def send(h, status: int, body: bytes, ctype: str) -> None:
    h.send_response(status)
    h.send_header("Content-Type", ctype)
    h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    h.wfile.write(body)


def stream_start(h) -> None:
    h.send_response(200)
    h.send_header("Content-Type", "text/event-stream")
    h.send_header("Connection", "close")
    h.end_headers()


def event(h, text: str | None = None, finish: str | None = None, raw: str | None = None) -> None:
    payload = raw if raw is not None else json.dumps({"choices": [{"text": text or "", "finish_reason": finish}]})
    h.wfile.write(f"data: {payload}\n\n".encode())
    h.wfile.flush()
