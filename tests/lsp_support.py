"""What the end-to-end tests share: how to start the server, how to wait for its model, and a raw JSON-RPC
client for tests that must see every byte the server writes."""

from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from lsprotocol import types
from pytest_lsp import LanguageClient

ROOT = Path(__file__).resolve().parents[1]
# The server from this checkout, whatever is installed: the same code the tests import.
SERVER = [sys.executable, "-c",
          f"import sys; sys.path.insert(0, {str(ROOT)!r}); from lsp_server.cli import main; sys.exit(main(['serve']))"]
MODEL_TIMEOUT = 900  # the first run converts the embedded model into the cache


async def wait_for_model(client: LanguageClient) -> None:
    """Until the server reports the model ready (its `$/progress` ends with "… ready on …")."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + MODEL_TIMEOUT
    while loop.time() < deadline:
        for values in list(client.progress_reports.values()):
            for value in values:
                if isinstance(value, types.WorkDoneProgressEnd) and value.message:
                    if " ready on " in value.message:
                        return
                    if value.message.startswith("failed"):
                        pytest.fail(f"model failed to load: {value.message}")
        await asyncio.sleep(0.5)
    pytest.fail("model not ready in time")


class RawServer:
    """`infill serve` as a subprocess spoken to in raw JSON-RPC, with every byte of its stdout checked.

    pytest-lsp's client parses what it can and drops the rest; protocol fuzzing needs the opposite: bytes
    outside a `Content-Length` frame land in `garbage`, server-to-client requests are answered by
    `answer(method, params)` (on the reader thread), notifications are kept, and each request can be
    waited for with a bound.
    """

    def __init__(self, command: list[str], env: dict[str, str], stderr_path: Path,
                 answer: Callable[[str, Any], Any] | None = None) -> None:
        self._stderr = open(stderr_path, "wb")
        self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
                                     env=env)
        self.answer = answer or (lambda method, params: None)
        self.responses: dict[Any, dict] = {}
        self.notifications: list[dict] = []
        self.server_requests: list[dict] = []
        self.garbage: list[bytes] = []
        self._cond = threading.Condition()
        self._send_lock = threading.Lock()
        self._ids = itertools.count(1)
        self._reader = threading.Thread(target=self._read, name="raw-lsp-reader", daemon=True)
        self._reader.start()

    # --- writing ---------------------------------------------------------------------------------
    def send(self, message: dict) -> None:
        body = json.dumps(message).encode("utf-8")  # ASCII: lone surrogates travel as \ud800 escapes
        with self._send_lock:
            self.proc.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
            self.proc.stdin.flush()

    def notify(self, method: str, params: Any = None) -> None:
        self.send({"jsonrpc": "2.0", "method": method, "params": params})

    def request(self, method: str, params: Any = None, msg_id: Any = None) -> Any:
        """Send a request without waiting; its id."""
        msg_id = next(self._ids) if msg_id is None else msg_id
        self.send({"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params})
        return msg_id

    def wait(self, msg_id: Any, timeout: float) -> dict:
        """The response message (with `result` or `error`); TimeoutError when none came within `timeout`."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while msg_id not in self.responses:
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None and not self._reader.is_alive():
                    raise TimeoutError(f"no answer to request {msg_id!r} within {timeout} s")
                self._cond.wait(min(left, 0.5))
            return self.responses.pop(msg_id)

    def call(self, method: str, params: Any = None, timeout: float = 60) -> dict:
        return self.wait(self.request(method, params), timeout)

    # --- reading ---------------------------------------------------------------------------------
    def _read(self) -> None:
        stream = self.proc.stdout
        while True:
            length = None
            while True:
                line = stream.readline()
                if not line:
                    return
                if line == b"\r\n":
                    break
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length" and value.strip().isdigit():
                    length = int(value)
                elif name.strip().lower() != b"content-type":
                    self.garbage.append(line)
            if length is None:
                self.garbage.append(b"<headers without Content-Length>")
                continue
            body = stream.read(length)
            try:
                message = json.loads(body)
            except ValueError:
                self.garbage.append(body)
                continue
            if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
                self.garbage.append(body)
            elif "method" in message and "id" in message:
                self._answer(message)
            elif "method" in message:
                with self._cond:
                    self.notifications.append(message)
            elif "id" in message and ("result" in message or "error" in message):
                with self._cond:
                    self.responses[message["id"]] = message
                    self._cond.notify_all()
            else:
                self.garbage.append(body)

    def _answer(self, message: dict) -> None:
        with self._cond:
            self.server_requests.append(message)
        try:
            reply = {"jsonrpc": "2.0", "id": message["id"], "result": self.answer(message["method"],
                                                                                   message.get("params"))}
        except Exception as exc:  # the test's answer failed: tell the server, as an editor would
            reply = {"jsonrpc": "2.0", "id": message["id"], "error": {"code": -32603, "message": str(exc)}}
        self.send(reply)

    def close(self, timeout: float = 10) -> int | None:
        """shutdown + exit; the exit code (None if it had to be killed)."""
        try:
            if self.proc.poll() is None:
                self.wait(self.request("shutdown"), timeout)
                self.notify("exit")
            return self.proc.wait(timeout)
        except (TimeoutError, subprocess.TimeoutExpired, OSError):
            self.proc.kill()
            self.proc.wait()
            return None
        finally:
            self._stderr.close()
