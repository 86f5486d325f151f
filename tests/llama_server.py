"""A real llama.cpp HTTP server (PyPI `xllamacpp`, llama.cpp's own server code) on 127.0.0.1, for the remote
backend's tests and benchmark: the default model's GGUF, started in a child process so a test can kill it
and start it again on the same port."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

_SERVE = r"""
import sys, time, xllamacpp
params = xllamacpp.CommonParams()
params.model.path = sys.argv[1]
params.port = int(sys.argv[2])
params.n_ctx = 4096
params.n_parallel = 2
params.n_batch = 512  # llama.cpp drops /infill input_extra unless n_ctx_slot > n_batch + 2 * n_predict
params.endpoint_metrics = True
params.endpoint_slots = True
params.cpuparams.n_threads = 2
params.cpuparams_batch.n_threads = 2
if len(sys.argv) > 3:
    params.api_keys = [sys.argv[3]]
server = xllamacpp.Server(params)
print("listening", server.listening_address, flush=True)
while True:
    time.sleep(3600)
"""


def default_gguf() -> Path:
    """The default catalogue model's GGUF (assembled from its installed parts on first use)."""
    from inference import catalog

    entry, _ = catalog.default_model()
    return entry.gguf()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LlamaServer:
    """`start()`, `kill()`, `start()` again: the same URL each time."""

    def __init__(self, gguf: Path, api_key: str | None = None, log_path: Path | None = None) -> None:
        self.gguf, self.api_key, self.port = gguf, api_key, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._proc: subprocess.Popen | None = None

    def start(self, timeout: float = 180) -> None:
        args = [sys.executable, "-c", _SERVE, str(self.gguf), str(self.port)] + ([self.api_key] if self.api_key else [])
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self._proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy())
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"llama.cpp server exited with {self._proc.returncode}")
            try:
                if self.get("/health").get("status") == "ok":
                    return
            except OSError:
                pass
            time.sleep(0.3)
        self.kill()
        raise RuntimeError("llama.cpp server did not come up in time")

    def kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(10)
        self._proc = None

    def get(self, path: str) -> dict | list:
        request = urllib.request.Request(self.url + path)
        if self.api_key:
            request.add_header("Authorization", f"Bearer {self.api_key}")
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def metrics(self) -> dict[str, float]:
        """The Prometheus counters of `/metrics` (llamacpp:… names without the prefix)."""
        request = urllib.request.Request(self.url + "/metrics")
        if self.api_key:
            request.add_header("Authorization", f"Bearer {self.api_key}")
        with urllib.request.urlopen(request, timeout=10) as response:
            text = response.read().decode()
        values = {}
        for line in text.splitlines():
            if line.startswith("llamacpp:"):
                name, _, value = line.partition(" ")
                values[name.removeprefix("llamacpp:")] = float(value)
        return values

    def busy_slots(self) -> int:
        return sum(bool(slot.get("is_processing")) for slot in self.get("/slots"))

    def decoding(self) -> bool:
        """Whether a slot is past its prompt and generating tokens."""
        return any(slot.get("is_processing") and any(t.get("n_decoded", 0) > 0 for t in slot.get("next_token", []))
                   for slot in self.get("/slots"))
