"""The engine in a process of its own, so the server's event loop never waits on the model.

onnxruntime-genai holds the GIL through each forward pass (hundreds of ms for a prefill chunk on a busy
CPU), so an engine on a thread of the server freezes the event loop: a `$/cancelRequest`, a keystroke or
a `shutdown` waits behind the model (benchmarks/results/loop-latency-*.md). `WorkerBackend` runs the
same `Engine` in a child process and talks to it over the child's stdin/stdout, one JSON object per line:

    server → worker   {"op": "load", "model": …, "family": …, "device": …, "precision": …}
                      {"op": "generate" | "prefill", "id": n, "prompt": {"text": …} | {"fim": {…}}, …}
                      {"op": "cancel", "id": n}            {"op": "count", "id": n, "text": …}
    worker → server   {"progress": message, "fraction": f}   then {"ready": {…}} or {"error": message}
                      {"id": n, "at": k, "text": tail, "stats": […]}   one per generated token: the answer
                                                            so far is the previous one's first k chars + tail
                      {"id": n, "end": {…stats}}   {"id": n, "computed": tokens}   {"id": n, "error": message}

Stop strings and stop rules are applied here, in the server, with `StreamCut` on exactly the text the
engine would have checked (the worker sends the whole decoded answer at every token), so the worker
streams what the in-process engine streams; when one fires, the worker's generation is cancelled. The
worker stops at a stop string by itself too, so it wastes no tokens on it. Token counts and chat
prompts, needed on every keystroke, are computed here from the model's tokenizer.json (checked at start
against the engine's own counts; the worker counts when they differ). A worker that dies is restarted,
with one message to the user; requests it was serving end with `InferenceError` (completion answers
them empty). Closing the backend ends the worker within ~0.5 s (killed if it does not stop).
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import IO, Any

from inference import memory
from inference.backend import Cancel, Completion, GenerationStats, ModelInfo, Prompt, StopRule, StreamCut
from inference.errors import InferenceError
from inference.registry import FimParts
from inference.tokenizer import load_tokenizer, read_chat_template, render_chat, tokens_in

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
FORWARDED = ("seed", "lookup", "first_token_rank")  # generate() keyword arguments that cross the pipe as they are
FEATURES = ("supports_fim", "supports_repo_context", "heals_middle", "is_instruct")  # the engine's, told once
POLL_S = 0.02  # how often a waiting request looks at its caller's cancel
EXIT_GRACE_S = 0.5  # a closing worker that has not exited by then is killed
# The worker yields the CPU to the server: on a machine whose cores the model keeps busy, the event loop
# (and the editor) would otherwise wait for a scheduler slice to answer a keystroke.
WORKER_NICE = 5
RESTARTS_PER_MINUTE = 3  # more crashes than this and the worker is left down (a crash loop helps nobody)
COUNT_PROBES = ("def add(a, b):\n    return a + b\n", "  \tindent\r\n", "naïve café — 日本語 😀",
                "<|fim_prefix|>x<|fim_suffix|>", "")


# ------------------------------------------------------------------------------------------ protocol
def write_frame(stream: IO[bytes], lock: threading.Lock, message: dict) -> None:
    """One message as one line of ASCII JSON (lone surrogates and newlines travel escaped)."""
    data = (json.dumps(message, ensure_ascii=True, separators=(",", ":")) + "\n").encode("ascii")
    with lock:
        stream.write(data)
        stream.flush()


def prompt_to_json(prompt: Prompt) -> dict:
    if isinstance(prompt, FimParts):
        return {"fim": {"prefix": prompt.prefix, "suffix": prompt.suffix, "files": [list(f) for f in prompt.files],
                        "path": prompt.path, "middle": prompt.middle}}
    return {"text": prompt}


def prompt_from_json(data: dict) -> Prompt:
    if "fim" in data:
        fim = data["fim"]
        return FimParts(fim["prefix"], fim["suffix"], tuple((p, t) for p, t in fim["files"]), fim["path"],
                        fim.get("middle", ""))
    return str(data["text"])


def _common_prefix(a: str, b: str) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


# --------------------------------------------------------------------------------------- the server
class _Request:
    """A request in flight: the worker's frames for it, in order."""

    def __init__(self) -> None:
        self.frames: queue.Queue[dict] = queue.Queue()

    def next(self, cancel: Cancel | None) -> dict | None:
        """The next frame, or None once `cancel` is set."""
        while True:
            if cancel is not None and cancel.is_set():
                return None
            try:
                return self.frames.get(timeout=POLL_S if cancel is not None else None)
            except queue.Empty:
                continue


class WorkerBackend:
    """A `Backend` whose engine runs in a child process (see the module docstring)."""

    def __init__(self, model: str | None = None, *, family: str | None = None, device: str = "auto",
                 precision: str | None = None, progress: Callable[[str, float | None], None] | None = None,
                 notify: Callable[[str], None] | None = None) -> None:
        self._load = {"op": "load", "model": model, "family": family, "device": device, "precision": precision}
        self._notify = notify or (lambda message: log.warning("%s", message))
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._requests: dict[int, _Request] = {}
        self._ids = itertools.count(1)
        self._proc: subprocess.Popen[bytes] | None = None
        self._closed = False
        self._crashes: list[float] = []
        self._tokenizer: Any = None
        self._chat_template: Any = None
        self._env = dict(os.environ)  # a restarted worker runs as the first did (cache folder, precision)
        self._start(progress)

    # ------------------------------------------------------------------------------ what it is
    @property
    def supports_fim(self) -> bool:
        return self._features["supports_fim"]

    @property
    def supports_repo_context(self) -> bool:
        return self._features["supports_repo_context"]

    @property
    def heals_middle(self) -> bool:
        return self._features["heals_middle"]

    @property
    def is_instruct(self) -> bool:
        return self._features["is_instruct"]

    @property
    def pid(self) -> int | None:
        """The worker's process id (None while it is down)."""
        proc = self._proc
        return proc.pid if proc is not None else None

    def count_tokens(self, text: str) -> int:
        if self._tokenizer is not None:
            return tokens_in(self._tokenizer, text, self._special)
        request_id, request = self._submit({"op": "count", "text": text})
        try:
            frame = request.next(None) or {}
        finally:
            self._forget(request_id)
        if "count" not in frame:
            raise InferenceError(frame.get("error") or "the model process stopped")
        return int(frame["count"])

    def chat_prompt(self, messages: list[dict]) -> str:
        return render_chat(self._chat_template, messages, self.info.name)

    # ---------------------------------------------------------------------------------- generate
    def generate(self, prompt: Prompt, *, max_new_tokens: int = 64, stop: Sequence[str] = (),
                 stop_rule: StopRule | None = None, temperature: float = 0.0, cancel: Cancel | None = None,
                 max_decode_ms: float | None = None, stats: GenerationStats | None = None,
                 **kwargs: Any) -> Iterator[str]:
        """As `Engine.generate`; `seed`, `lookup` and `first_token_rank` are forwarded, other engine-only
        arguments refused."""
        unknown = set(kwargs) - set(FORWARDED)
        if unknown:
            raise TypeError(f"the worker backend cannot forward {sorted(unknown)}")
        stats = stats if stats is not None else GenerationStats()
        cut = StreamCut(stop, stop_rule)
        start = time.perf_counter()
        request_id, request = self._submit({
            "op": "generate", "prompt": prompt_to_json(prompt), "max_new_tokens": max_new_tokens,
            "stop": [s for s in stop if s], "temperature": temperature, "max_decode_ms": max_decode_ms, **kwargs})
        text, steps, done = "", 0, False
        try:
            while True:
                frame = request.next(cancel)
                if frame is None:
                    stats.finish_reason = "cancel"
                    break
                if "text" in frame:  # one more token: check the answer so far as the engine would
                    steps += 1
                    if steps == 1:
                        stats.ttft_ms = (time.perf_counter() - start) * 1000
                    text = text[:frame["at"]] + frame["text"]
                    (stats.prompt_tokens, stats.reused_tokens, stats.drafted_tokens,
                     stats.accepted_tokens) = frame["stats"]
                    delta, reason = cut.step(text)
                    if reason is not None:
                        stats.finish_reason = reason
                    if delta:
                        yield delta
                    if reason is not None:
                        break
                elif "end" in frame:  # the engine finished by itself (length, budget, EOS)
                    done = True
                    end = frame["end"]
                    if steps == 0:  # ended before its first token (EOS, or a budget of none)
                        stats.ttft_ms = (time.perf_counter() - start) * 1000
                    steps = end["generated_tokens"]
                    stats.prompt_tokens, stats.reused_tokens = end["prompt_tokens"], end["reused_tokens"]
                    stats.drafted_tokens, stats.accepted_tokens = end["drafted_tokens"], end["accepted_tokens"]
                    stats.finish_reason = end["finish_reason"]
                    if stats.finish_reason != "cancel" and (delta := cut.finish(text)):
                        yield delta
                    break
                else:
                    done = True
                    raise InferenceError(frame.get("error") or "the model process stopped")
        finally:
            if not done:
                self._cancel(request_id)
            self._forget(request_id)
            stats.generated_tokens = steps
            stats.total_ms = (time.perf_counter() - start) * 1000

    def complete(self, prompt: Prompt, **kwargs: Any) -> Completion:
        stats = GenerationStats()
        return stats.completion("".join(self.generate(prompt, stats=stats, **kwargs)))

    def prefill(self, prompt: Prompt, *, max_new_tokens: int = 64, cancel: Cancel | None = None) -> int:
        try:
            request_id, request = self._submit({"op": "prefill", "prompt": prompt_to_json(prompt),
                                                "max_new_tokens": max_new_tokens})
        except InferenceError:
            return 0
        frame = None
        try:
            frame = request.next(cancel)
        finally:
            if frame is None:
                self._cancel(request_id)
            self._forget(request_id)
        return int(frame.get("computed", 0)) if frame else 0

    def close(self) -> None:
        """End the worker: it exits when its stdin closes, and is killed if it has not within EXIT_GRACE_S."""
        with self._lock:
            self._closed = True
            proc, self._proc = self._proc, None
            self._fail_requests({"end": _cancelled()})
        if proc is not None:
            _stop(proc)

    # ---------------------------------------------------------------------------------- plumbing
    def _submit(self, message: dict) -> tuple[int, _Request]:
        with self._lock:
            proc = self._proc
            if proc is None or proc.stdin is None:
                raise InferenceError("the model process is not running (restarting or closed)")
            request_id = next(self._ids)
            request = self._requests[request_id] = _Request()
        try:
            write_frame(proc.stdin, self._write_lock, {**message, "id": request_id})
        except (OSError, ValueError):
            self._forget(request_id)
            raise InferenceError("the model process stopped") from None
        return request_id, request

    def _cancel(self, request_id: int) -> None:
        proc = self._proc
        if proc is not None and proc.stdin is not None:
            try:
                write_frame(proc.stdin, self._write_lock, {"op": "cancel", "id": request_id})
            except (OSError, ValueError):
                pass  # the worker is gone: nothing left to cancel

    def _forget(self, request_id: int) -> None:
        with self._lock:
            self._requests.pop(request_id, None)

    def _fail_requests(self, frame: dict) -> None:
        """Hand every request in flight a last frame (called with the lock held)."""
        for request in self._requests.values():
            request.frames.put(frame)
        self._requests.clear()

    def _start(self, progress: Callable[[str, float | None], None] | None) -> None:
        """Spawn a worker and wait until its model is loaded, passing its progress on."""
        proc = subprocess.Popen(
            [sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[1]); "
             "from inference.worker import main; sys.exit(main())", str(ROOT)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=None, env=self._env)
        assert proc.stdin is not None and proc.stdout is not None
        try:
            write_frame(proc.stdin, self._write_lock, self._load)
            ready = None
            for line in proc.stdout:
                frame = json.loads(line)
                if "progress" in frame:
                    if progress is not None:
                        progress(frame["progress"], frame.get("fraction"))
                elif "ready" in frame:
                    ready = frame["ready"]
                    break
                elif "error" in frame:
                    raise InferenceError(frame["error"])
            if ready is None:
                raise InferenceError(f"the model process exited while loading (exit code {proc.wait()})")
        except BaseException:
            _stop(proc)
            raise
        self._adopt(proc, ready)

    def _adopt(self, proc: subprocess.Popen[bytes], ready: dict) -> None:
        """Take a loaded worker into service."""
        self.info = ModelInfo(**ready["info"])
        self.max_length = int(ready["max_length"])
        self._features = {k: bool(ready.get(k)) for k in FEATURES}
        model_dir = Path(ready["model_dir"])
        self._chat_template = read_chat_template(model_dir)
        self._tokenizer, self._special = self._parent_tokenizer(model_dir, ready["probe_counts"])
        memory.trim_heap()  # loading it frees 55 MB more than it keeps (benchmarks/results/memory-2026-12-02.md)
        with self._lock:
            if self._closed:
                _stop(proc)
                return
            self._proc = proc
        threading.Thread(target=self._read, args=(proc,), name="infill-worker-reader", daemon=True).start()

    @staticmethod
    def _parent_tokenizer(model_dir: Path, expected: list[int]) -> tuple[Any, bool]:
        """tokenizer.json, with or without its special tokens, whichever counts exactly like the engine on
        the probes; (None, False) when neither does (the worker then counts)."""
        tokenizer = load_tokenizer(model_dir)
        if tokenizer is None:
            return None, False
        for special in (False, True):
            counts = [tokens_in(tokenizer, t, special) for t in COUNT_PROBES]
            if counts == expected:
                return tokenizer, special
        log.info("tokenizer.json counts differ from the engine's (%s): the model process counts tokens", model_dir)
        return None, False

    def _read(self, proc: subprocess.Popen[bytes]) -> None:
        """Route the worker's frames to their requests; when it dies unasked, restart it."""
        assert proc.stdout is not None
        for line in proc.stdout:
            try:
                frame = json.loads(line)
            except ValueError:
                log.warning("bad frame from the model process: %r", line[:200])
                continue
            with self._lock:
                request = self._requests.get(frame.get("id", -1))
            if request is not None:
                request.frames.put(frame)
        code = proc.wait()
        with self._lock:
            if self._proc is not proc:  # closed, or already replaced
                return
            self._proc = None
            self._fail_requests({"error": f"the model process stopped (exit code {code})"})
            now = time.monotonic()
            self._crashes = [t for t in self._crashes if now - t < 60] + [now]
            give_up = len(self._crashes) > RESTARTS_PER_MINUTE
        if give_up:
            self._notify(f"infill: the model process keeps stopping (exit code {code}); suggestions are off "
                         "until the server restarts or the model setting changes.")
            return
        self._notify(f"infill: the model process stopped (exit code {code}); restarting it.")
        threading.Thread(target=self._restart, name="infill-worker-restart", daemon=True).start()

    def _restart(self) -> None:
        try:
            self._start(None)
        except Exception as exc:
            self._notify(f"infill: the model process could not be restarted: {exc}")


def _cancelled() -> dict:
    return asdict(GenerationStats(finish_reason="cancel"))


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Close the worker's stdin (it exits at EOF); kill it if it is still there after EXIT_GRACE_S."""
    try:
        if proc.stdin is not None:
            proc.stdin.close()
    except OSError:
        pass
    try:
        proc.wait(timeout=EXIT_GRACE_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# --------------------------------------------------------------------------------------- the worker
def main() -> int:
    """The worker process: load the engine, then serve requests, each on a thread of its own (the engine
    serialises them and lets a warm-up yield to a real request), until stdin closes."""
    memory.limit_arenas()  # a thread per request: without the cap each new thread's arena keeps its own free memory
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # stray prints (conversion libraries) go to stderr, never into the frames
    sys.stdout = sys.stderr
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="infill-worker: %(levelname)s %(message)s")
    try:
        os.nice(WORKER_NICE)
    except (AttributeError, OSError):  # no nice on this platform: the worker still runs, at full priority
        pass
    lock = threading.Lock()

    def send(message: dict) -> None:
        try:
            write_frame(out, lock, message)
        except (OSError, ValueError):
            os._exit(0)  # the server is gone

    def progress(message: str, fraction: float | None = None) -> None:
        send({"progress": message, "fraction": fraction})

    stdin = sys.stdin.buffer
    load = json.loads(stdin.readline() or "{}")
    try:
        from inference.engine import Engine

        engine = Engine.load(load.get("model"), family=load.get("family"), device=load.get("device", "auto"),
                             precision=load.get("precision"), progress=progress)
    except InferenceError as exc:
        send({"error": str(exc)})
        return 1
    except Exception as exc:  # whatever the loader hits, the server gets one clear line
        log.exception("model load failed")
        send({"error": f"model load failed: {exc}"})
        return 1
    send({"ready": {"info": engine.info.as_dict(), "max_length": engine.max_length,
                    **{k: getattr(engine, k) for k in FEATURES}, "model_dir": str(engine.prepared.onnx_dir),
                    "probe_counts": [engine.count_tokens(t) for t in COUNT_PROBES]}})
    cancels: dict[int, threading.Event] = {}
    for line in stdin:
        message = json.loads(line)
        op, request_id = message.get("op"), message.get("id")
        if op == "cancel":
            event = cancels.get(request_id)
            if event is not None:
                event.set()
        elif op in ("generate", "prefill"):
            cancels[request_id] = threading.Event()
            threading.Thread(target=_serve, args=(engine, message, cancels, send), daemon=True).start()
        elif op == "count":
            send({"id": request_id, "count": engine.count_tokens(message["text"])})
    os._exit(0)  # stdin closed: the server closed us or died; generations in flight end with us


def _serve(engine: Any, message: dict, cancels: dict[int, threading.Event], send: Callable[[dict], None]) -> None:
    request_id = message["id"]
    cancel = cancels[request_id]
    try:
        prompt = prompt_from_json(message["prompt"])
        if message["op"] == "prefill":
            send({"id": request_id, "computed": engine.prefill(prompt, max_new_tokens=message["max_new_tokens"],
                                                               cancel=cancel)})
            return
        stats = GenerationStats()
        stops = tuple(message.get("stop") or ())
        sent = ""

        def each_token(text: str) -> bool:
            """Called by the engine with the whole answer at every token: send it; stop at a stop string."""
            nonlocal sent
            at = _common_prefix(sent, text)
            send({"id": request_id, "at": at, "text": text[at:],
                  "stats": [stats.prompt_tokens, stats.reused_tokens, stats.drafted_tokens, stats.accepted_tokens]})
            sent = text
            return any(s in text for s in stops)

        extra = {k: message[k] for k in FORWARDED if k in message}
        for _ in engine.generate(prompt, max_new_tokens=message["max_new_tokens"], stop_rule=each_token,
                                 temperature=message.get("temperature", 0.0), cancel=cancel,
                                 max_decode_ms=message.get("max_decode_ms"), stats=stats, **extra):
            pass
        send({"id": request_id, "end": asdict(stats)})
    except InferenceError as exc:
        send({"id": request_id, "error": str(exc)})
    except Exception as exc:  # a bug here must fail this request, not the worker
        log.exception("request failed")
        send({"id": request_id, "error": f"generation failed: {exc}"})
    finally:
        cancels.pop(request_id, None)


if __name__ == "__main__":
    sys.exit(main())
