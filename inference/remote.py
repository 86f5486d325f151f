"""A serving engine a team already runs (llama.cpp server, vLLM/SGLang/LM Studio, Ollama), as a `Backend`.

Prompts are built here, with the family's template from `inference.registry`, so every kind sees the same
FIM prompt; llama.cpp's `/infill` is the exception that proves the rule (it renders the model's own FIM
tokens and repository format from the parts, and answers 501 for a model without them: then the
`/v1/completions` path takes over). Streaming is always on: stop strings and stop rules are applied here
by `StreamCut`, and the moment one fires, or `cancel` is set, the HTTP response is closed, which is how
every engine learns to free its slot.

The HTTP is the standard library's (`http.client`): one connection per request, every socket read with
a timeout, a watchdog thread that shuts a request's socket down when its `cancel` is set (a read blocked
on a slow first byte returns at once), a cap on how much an answer may send. What a user can act on
(unreachable, 401/403, unknown model, timeout, HTML instead of an API, a 5xx mid-stream) is one
`InferenceError` line naming the URL; the backend stays usable and tries again on the next request.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import logging
import math
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from urllib.parse import urlsplit

from inference.backend import Cancel, Completion, GenerationStats, ModelInfo, Prompt, StopRule, StreamCut, over_budget
from inference.errors import InferenceError
from inference.registry import FAMILIES, Family, FimParts, family_by_name

log = logging.getLogger(__name__)

KINDS = ("openai", "llama.cpp", "ollama")
MAX_RESPONSE_BYTES = 4 * 2**20  # a completion is a few KB; more is a misconfigured URL or a runaway server
MAX_LINE_BYTES = 256 * 2**10
MAX_CHARS_PER_TOKEN = 64  # an answer longer than this per token asked for is not an answer (and stop checks stay cheap)
BYTES_PER_TOKEN = 3  # count_tokens estimate: code runs ~3.5-4 UTF-8 bytes per BPE token, so this over-counts
Problem = Callable[[str | None], None]


@dataclass(frozen=True)
class RemoteConfig:
    """Where the serving engine is and how to talk to it (the `backend` setting)."""

    url: str
    kind: str = "openai"
    model: str = ""  # empty: the first model `GET /v1/models` (Ollama: `/api/tags`) lists
    api_key_env: str = ""  # name of the environment variable holding a bearer token
    timeout_ms: int = 30_000  # connect, and each read (the first byte of an answer included)


class RemoteError(InferenceError):
    """A request the serving engine did not answer usefully; the message says what to do."""


class ChatPrompt(str):
    """A chat prompt that remembers its messages, so that it goes to a chat endpoint (which applies the
    model's own template on the server) while it reads as text for token counts and logs. Text appended
    to it (an edit's seeded reply) becomes the start of the assistant's message."""

    messages: tuple[dict, ...]
    seed: str

    def __new__(cls, messages: Sequence[dict], seed: str = "") -> ChatPrompt:
        text = "".join(f"<|{m.get('role', 'user')}|>\n{m.get('content', '')}\n" for m in messages)
        obj = super().__new__(cls, f"{text}<|assistant|>\n{seed}")
        obj.messages, obj.seed = tuple(messages), seed
        return obj

    def __add__(self, other: str) -> ChatPrompt:
        return ChatPrompt(self.messages, self.seed + str(other))


def detect_remote_family(model_id: str, explicit: str | None = None) -> Family:
    """The family of a served model, from the `family` setting or its id (`Qwen/Qwen2.5-Coder-7B`,
    `qwen2.5-coder:1.5b-base`, a GGUF path …); `plain` (prefix-only prompts) when the id says nothing."""
    if explicit:
        return family_by_name(explicit)
    name = model_id.lower().replace("_", "-").replace(" ", "-")
    hints = (("qwen2.5-coder", "qwen2.5-coder"), ("qwen2.5coder", "qwen2.5-coder"), ("qwen-coder", "qwen2.5-coder"),
             ("qwen3-coder", "qwen2.5-coder"), ("codegemma", "codegemma"), ("starcoder", "starcoder"),
             ("santacoder", "santacoder"), ("deepseek-coder", "deepseek-coder"), ("codellama", "codellama"),
             ("code-llama", "codellama"))
    for hint, family in hints:
        if hint in name:
            return family_by_name(family)
    return next(f for f in FAMILIES if f.name == "plain")


@dataclass(eq=False)  # identity: each request is watched on its own
class _Request:
    sock: socket.socket | None
    cancel: Cancel | None
    cancelled: bool = False


class _Watchdog:
    """One daemon thread per process: shuts down the socket of a request whose `cancel` is set, so a
    read blocked on the server returns at once and the server sees the connection close."""

    def __init__(self) -> None:
        self._active: set[_Request] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def watch(self, request: _Request) -> None:
        if request.cancel is None:
            return
        with self._lock:
            self._active.add(request)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="infill-remote-cancel", daemon=True)
                self._thread.start()

    def forget(self, request: _Request) -> None:
        with self._lock:
            self._active.discard(request)

    def _run(self) -> None:
        while True:
            time.sleep(0.02)
            with self._lock:
                fired = [r for r in self._active if r.cancel is not None and r.cancel.is_set()]
                for r in fired:
                    self._active.discard(r)
            for request in fired:
                request.cancelled = True
                _shutdown(request.sock)


_WATCHDOG = _Watchdog()


def _shutdown(sock: socket.socket | None) -> None:
    if sock is None:
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


class _Response:
    """An open streaming answer: its lines, read with a size cap; `close()` drops the connection."""

    def __init__(self, conn: http.client.HTTPConnection, response: http.client.HTTPResponse, request: _Request,
                 url: str) -> None:
        self._conn, self._response, self._request, self._url = conn, response, request, url
        self._read = 0

    @property
    def cancelled(self) -> bool:
        return self._request.cancelled or (self._request.cancel is not None and self._request.cancel.is_set())

    def lines(self) -> Iterator[str]:
        while True:
            try:
                raw = self._response.readline(MAX_LINE_BYTES + 1)
            except TimeoutError:
                raise RemoteError(f"{self._url} stopped answering mid-stream (timeout); "
                                  "check the server's load, or raise backend.timeoutMs") from None
            except (OSError, http.client.HTTPException, ValueError) as exc:
                if self.cancelled:
                    return
                raise RemoteError(f"the stream from {self._url} was cut ({type(exc).__name__}); "
                                  "check that the server is still running") from None
            if not raw:
                return
            self._read += len(raw)
            if len(raw) > MAX_LINE_BYTES or self._read > MAX_RESPONSE_BYTES:
                what = (f"a line of more than {MAX_LINE_BYTES // 2**10} KB" if len(raw) > MAX_LINE_BYTES
                        else f"more than {MAX_RESPONSE_BYTES // 2**20} MB")
                raise RemoteError(f"{self._url} sent {what}; is backend.url the serving engine's address?")
            yield raw.decode("utf-8", errors="replace").rstrip("\r\n")

    def close(self) -> None:
        _WATCHDOG.forget(self._request)
        _shutdown(self._request.sock)
        try:
            self._conn.close()
        except Exception:
            pass


class RemoteBackend:
    """A `Backend` over HTTP. Construction does not need the server up: what it needs to know (model id,
    context length, chat template, FIM support) is asked on the first request and asked again after a
    failure, so a server started (or restarted) later is picked up by the next request."""

    def __init__(self, config: RemoteConfig, *, family: str | None = None, on_problem: Problem | None = None,
                 warn: Callable[[str], None] | None = None) -> None:
        if config.kind not in KINDS:
            raise InferenceError(f"unknown backend.kind {config.kind!r}; use one of: {', '.join(KINDS)}")
        parts = urlsplit(config.url.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InferenceError(f"backend.url {config.url!r} is not an http(s) URL; "
                                 "write it like http://gpu-box:8080")
        try:
            self._port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise InferenceError(f"backend.url {config.url!r} has a bad port") from None
        self.config = config
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        base = parts.path.rstrip("/")
        self._base = base[:-3] if base.endswith("/v1") else base  # accept the OpenAI-style base URL too
        self.url = f"{parts.scheme}://{parts.netloc}{self._base}"
        self._timeout = max(0.1, config.timeout_ms / 1000)
        self._explicit_family = family
        self._on_problem = on_problem
        self._problem: str | None = None
        self._probed = False
        self._native_fim = config.kind == "llama.cpp"  # until /infill answers 501
        self._chat = True
        self.model = config.model
        self.served_models: list[str] = []
        self.family = detect_remote_family(config.model, family)
        self.max_length = 4096 if config.kind != "ollama" else 2048
        if not self._https and not _is_loopback(self._host):
            (warn or log.warning)(f"infill: backend.url {self.url} is plain http: code is sent over the network "
                                  "unencrypted; use https, or a tunnel, outside a trusted network")
        self.info = self._model_info()
        try:
            self.probe()
        except RemoteError as exc:  # not fatal: reported, and asked again on the next request
            self._report(str(exc))

    # ------------------------------------------------------------------------------ capabilities
    @property
    def supports_fim(self) -> bool:
        return self._native_fim or self.family.supports_fim

    @property
    def supports_repo_context(self) -> bool:
        return self.family.repo_tokens is not None or self._native_fim

    @property
    def heals_middle(self) -> bool:
        """No: a server would continue a middle that ends mid-word from the tokenizer's split of it (HumanEval
        lines cut mid-word here: 68 passed this way against 86 laid out afresh, of 161)."""
        return False

    @property
    def is_instruct(self) -> bool:
        return self._chat

    @property
    def native_fim(self) -> bool:
        """Whether FIM goes to llama.cpp's `/infill` (the server renders the model's own tokens)."""
        return self._native_fim

    def count_tokens(self, text: str) -> int:
        """An estimate, by design: context fitting calls this many times per keystroke, and a tokenizer
        round trip each time would cost more than the completion. One token per 3 UTF-8 bytes over-counts
        code a little (BPE code tokenizers average 3.5-4), so a fitted prompt stays inside its budget."""
        return math.ceil(len(text.encode("utf-8", errors="replace")) / BYTES_PER_TOKEN)

    def chat_prompt(self, messages: list[dict]) -> str:
        return ChatPrompt(messages)

    # ---------------------------------------------------------------------------------- discovery
    def probe(self) -> None:
        """Ask the server which model it serves, how long its context is and what it can do."""
        if self.config.kind == "ollama":
            found = _objects(self._get_json("/api/tags").get("models"))
            raw = [m.get("name") or m.get("model") for m in found]
        else:
            found = _objects(self._get_json("/v1/models").get("data"))
            raw = [m.get("id") for m in found]
        names: list[str] = [n for n in raw if isinstance(n, str)]
        self.served_models = names
        wanted = self.config.model
        if wanted and names and wanted not in names and f"{wanted}:latest" not in names:
            raise RemoteError(f"{self.url} does not serve model {wanted!r} (it serves: "
                              f"{', '.join(names[:5])}); fix backend.model, or leave it empty to use the served one")
        for entry in found:  # vLLM says how long its context is; llama.cpp's meta.n_ctx_train is not that
            length = entry.get("max_model_len")
            if entry.get("id") == (wanted or (names[0] if names else None)) and isinstance(length, int) and length > 0:
                self.max_length = length
        if not self.config.model:
            if not names:
                raise RemoteError(f"{self.url} lists no models; load one on the server, or set backend.model")
            self.model = names[0]
        self.family = detect_remote_family(self.model, self._explicit_family)
        if self.config.kind == "llama.cpp":
            props = self._get_json("/props")
            n_ctx = (props.get("default_generation_settings") or {}).get("n_ctx")
            if isinstance(n_ctx, int) and n_ctx > 0:
                self.max_length = n_ctx  # one slot's context: what one request may use
            self._chat = bool(props.get("chat_template"))
        self.info = self._model_info()
        self._probed = True

    def _model_info(self) -> ModelInfo:
        return ModelInfo(name=self.model or "(served model)", source=f"{self.config.kind} server",
                         family=self.family.name, fim=self.supports_fim, instruct=self._chat, device="remote",
                         device_reason=f"backend.url {self.url}", precision="server's", reason="backend.url is set",
                         path=self.url, size_mb=0.0, context_length=self.max_length)

    def _ensure_probed(self) -> None:
        if not self._probed:
            self.probe()

    # ----------------------------------------------------------------------------------- generate
    def generate(self, prompt: Prompt, *, max_new_tokens: int = 64, stop: Sequence[str] = (),
                 stop_rule: StopRule | None = None, temperature: float = 0.0, cancel: Cancel | None = None,
                 max_decode_ms: float | None = None, stats: GenerationStats | None = None,
                 first_token_rank: int = 0) -> Iterator[str]:
        """Stream text deltas from the server; raises `RemoteError` (once per outage it is also passed
        to `on_problem`) when the server cannot be used. Text already streamed stays streamed. A serving
        engine cannot start an answer at a chosen first token: `first_token_rank` > 0 streams nothing
        (the request gets its greedy suggestion only)."""
        stats = stats if stats is not None else GenerationStats()
        if first_token_rank > 0:
            stats.finish_reason = "length"
            return
        stops = tuple(dict.fromkeys([*stop, *self.family.stop_tokens]))
        cut = StreamCut(stops, stop_rule)
        start = time.perf_counter()
        budget = over_budget(max_decode_ms, start, stats)
        text = ""
        try:
            self._ensure_probed()
            response, read = self._open(prompt, max_new_tokens, list(stop), temperature, cancel, stats)
        except RemoteError as exc:
            self._report(str(exc))
            stats.finish_reason = "error"
            raise
        try:
            for piece in read(response):
                if not stats.ttft_ms:
                    stats.ttft_ms = (time.perf_counter() - start) * 1000
                text += piece
                stats.generated_tokens += 1
                if len(text) > MAX_CHARS_PER_TOKEN * max(1, max_new_tokens):  # it ignores max_tokens
                    raise RemoteError(f"{self.url} sent far more than the {max_new_tokens} tokens asked for; "
                                      "is backend.url the serving engine's address?")
                delta, reason = cut.step(text, budget)
                if reason is not None:
                    stats.finish_reason = reason
                if delta:
                    yield delta
                if reason is not None:
                    return
                if cancel is not None and cancel.is_set():
                    stats.finish_reason = "cancel"
                    return
            if response.cancelled:
                stats.finish_reason = "cancel"
                return
            if rest := cut.finish(text):
                yield rest
            self._report(None)
        except RemoteError as exc:
            if response.cancelled:
                stats.finish_reason = "cancel"
                return
            self._report(str(exc))
            stats.finish_reason = "error"
            raise
        finally:
            response.close()  # at once: the server frees the slot when the connection drops
            stats.total_ms = (time.perf_counter() - start) * 1000

    def complete(self, prompt: Prompt, **kwargs) -> Completion:
        stats = GenerationStats()
        return stats.completion("".join(self.generate(prompt, stats=stats, **kwargs)))

    def prefill(self, prompt: Prompt, *, max_new_tokens: int = 64, cancel: Cancel | None = None) -> int:
        """llama.cpp: evaluate the prompt into a slot's cache without generating (`n_predict: 0`), so the
        request that follows reuses it. Other kinds have no cheap warm-up call: 0."""
        if self.config.kind != "llama.cpp" or not self._probed or self._problem is not None:
            return 0
        stats = GenerationStats()
        try:
            response, read = self._open(prompt, 0, [], 0.0, cancel, stats)
        except RemoteError:
            return 0
        try:
            for _ in read(response):
                pass
        except RemoteError:
            return 0
        finally:
            response.close()
        return max(0, stats.prompt_tokens - stats.reused_tokens)

    def close(self) -> None:
        """Nothing held between requests (one connection per request)."""

    # ------------------------------------------------------------------------------- per protocol
    def _open(self, prompt: Prompt, max_new_tokens: int, stop: list[str], temperature: float,
              cancel: Cancel | None, stats: GenerationStats):
        """The open response for this prompt and the reader of its stream."""
        kind = self.config.kind
        if isinstance(prompt, ChatPrompt):
            if kind == "ollama":
                body = {"model": self.model, "messages": _chat_messages(prompt), "stream": True,
                        "options": _ollama_options(max_new_tokens, temperature, stop)}
                return self._post("/api/chat", body, cancel), lambda r: self._read_ollama(r, stats, "message")
            body = {"model": self.model, "messages": _chat_messages(prompt), "stream": True,
                    "max_tokens": max_new_tokens, "temperature": temperature, "stream_options": {"include_usage": True}}
            if stop:
                body["stop"] = stop
            if prompt.seed:  # continue the seeded assistant message (llama.cpp does so by itself)
                body.update(continue_final_message=True, add_generation_prompt=False)
            return self._post("/v1/chat/completions", body, cancel), lambda r: self._read_openai(r, stats, chat=True)
        if kind == "llama.cpp" and isinstance(prompt, FimParts) and self._native_fim:
            body = {"input_prefix": prompt.prefix, "input_suffix": prompt.suffix,
                    "prompt": prompt.middle,  # after its FIM middle token, so its prompt cache holds the rest
                    "input_extra": [{"filename": path, "text": text} for path, text in prompt.files],
                    "cache_prompt": True, "stream": True, "n_predict": max_new_tokens, "temperature": temperature,
                    "timings_per_token": True}  # how much of the prompt its cache held, before we hang up
            if stop:
                body["stop"] = stop
            try:
                return self._post("/infill", body, cancel), lambda r: self._read_llama(r, stats)
            except _NotImplemented:
                log.info("%s has no FIM tokens for /infill (501): templated prompts from now on", self.url)
                self._native_fim = False
                self.info = self._model_info()
        text = self._render(prompt)
        stats.prompt_tokens = self.count_tokens(text)
        if kind == "ollama":
            body = {"model": self.model, "prompt": text, "raw": True, "stream": True,
                    "options": _ollama_options(max_new_tokens, temperature, stop)}
            return self._post("/api/generate", body, cancel), lambda r: self._read_ollama(r, stats, "response")
        body = {"model": self.model, "prompt": text, "stream": True, "max_tokens": max_new_tokens,
                "temperature": temperature, "stream_options": {"include_usage": True}}  # never `suffix`
        if stop:
            body["stop"] = stop
        return self._post("/v1/completions", body, cancel), lambda r: self._read_openai(r, stats, chat=False)

    def _render(self, prompt: Prompt) -> str:
        """The client-built prompt: the family's FIM template (other files first, where it has a
        repository format), or the text as given."""
        if isinstance(prompt, FimParts):
            if prompt.files and self.family.repo_tokens is None:
                prompt = replace(prompt, files=())
            return self.family.render(prompt)
        return str(prompt)

    def _read_openai(self, response: _Response, stats: GenerationStats, *, chat: bool) -> Iterator[str]:
        ended = False
        for data in _sse(response, self.url):
            if data is _DONE:
                ended = True
                break
            _raise_stream_error(data, self.url)
            for choice in data.get("choices") or []:
                delta = (choice.get("delta") or {}).get("content") if chat else choice.get("text")
                if isinstance(delta, str) and delta:
                    yield delta
                if choice.get("finish_reason"):
                    stats.finish_reason = "eos" if choice["finish_reason"] == "stop" else str(choice["finish_reason"])
            usage = data.get("usage")
            if isinstance(usage, dict):
                stats.prompt_tokens = int(usage.get("prompt_tokens") or stats.prompt_tokens)
                cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens")
                stats.reused_tokens = int(cached or 0)
            _llama_timings(data, stats)
        _check_ended(ended, response, self.url)

    def _read_llama(self, response: _Response, stats: GenerationStats) -> Iterator[str]:
        ended = False
        for data in _sse(response, self.url):
            if data is _DONE:
                break
            _raise_stream_error(data, self.url)
            _llama_timings(data, stats)
            content = data.get("content")
            if isinstance(content, str) and content:
                yield content
            if data.get("stop"):
                stats.finish_reason = "eos" if data.get("stop_type") in ("eos", "word") else "length"
                ended = True
        _check_ended(ended, response, self.url)

    def _read_ollama(self, response: _Response, stats: GenerationStats, field: str) -> Iterator[str]:
        ended = False
        for line in response.lines():
            if not line.strip():
                continue
            data = _json_line(line, self.url)
            _raise_stream_error(data, self.url)
            piece = data.get(field)
            if isinstance(piece, dict):
                piece = piece.get("content")
            if isinstance(piece, str) and piece:
                yield piece
            if data.get("done"):
                stats.finish_reason = "eos" if data.get("done_reason") == "stop" else "length"
                stats.prompt_tokens = int(data.get("prompt_eval_count") or stats.prompt_tokens)
                ended = True
                break
        _check_ended(ended, response, self.url)

    # --------------------------------------------------------------------------------------- HTTP
    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
        if self.config.api_key_env:
            key = os.environ.get(self.config.api_key_env, "")
            if key:
                headers["Authorization"] = f"Bearer {key}"
        return headers

    def _connect(self, path: str, method: str, body: bytes | None, cancel: Cancel | None
                 ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse, _Request]:
        cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        conn = cls(self._host, self._port, timeout=self._timeout)
        request = _Request(None, cancel)
        try:
            conn.connect()
            request.sock = conn.sock
            _WATCHDOG.watch(request)
            conn.request(method, self._base + path, body=body, headers=self._headers())
            return conn, conn.getresponse(), request
        except TimeoutError:
            conn.close()
            _WATCHDOG.forget(request)
            raise RemoteError(f"{self.url} did not answer within {self.config.timeout_ms} ms; check the server "
                              "(is it overloaded?), or raise backend.timeoutMs") from None
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            _WATCHDOG.forget(request)
            if request.cancelled:
                raise _Cancelled() from None
            reason = getattr(exc, "strerror", None) or type(exc).__name__
            raise RemoteError(f"cannot reach {self.url} ({reason}); start the serving engine there, "
                              "or fix backend.url") from None

    def _post(self, path: str, body: dict, cancel: Cancel | None) -> _Response:
        try:
            conn, response, request = self._connect(path, "POST", json.dumps(body).encode(), cancel)
        except _Cancelled:
            return _CancelledResponse()
        stream = _Response(conn, response, request, self.url)
        if response.status == 200 and "html" not in (response.getheader("Content-Type") or "").lower():
            return stream
        detail = _error_detail(response)
        stream.close()
        if response.status == 501 and path == "/infill":
            raise _NotImplemented()
        raise self._status_error(response.status, detail, path)

    def _get_json(self, path: str) -> dict:
        conn, response, request = self._connect(path, "GET", None, None)
        try:
            if response.status != 200:
                raise self._status_error(response.status, _error_detail(response), path)
            if "html" in (response.getheader("Content-Type") or "").lower():
                raise self._status_error(200, "<html>", path)
            raw = response.read(MAX_RESPONSE_BYTES + 1)
            if len(raw) > MAX_RESPONSE_BYTES:
                raise RemoteError(f"{self.url}{path} sent more than {MAX_RESPONSE_BYTES // 2**20} MB; "
                                  "is backend.url the serving engine's address?")
            return _json_line(raw.decode("utf-8", errors="replace"), self.url)
        except TimeoutError:
            raise RemoteError(f"{self.url} did not answer within {self.config.timeout_ms} ms; "
                              "check the server, or raise backend.timeoutMs") from None
        except (OSError, http.client.HTTPException) as exc:
            raise RemoteError(f"the answer from {self.url}{path} was cut ({type(exc).__name__}); "
                              "check that the server is still running") from None
        finally:
            _WATCHDOG.forget(request)
            conn.close()

    def _status_error(self, status: int, detail: str, path: str) -> RemoteError:
        where = f"{self.url}{path}"
        if detail.lstrip().lower().startswith(("<!doctype", "<html")):
            return RemoteError(f"{where} answered a web page (HTTP {status}), not the {self.config.kind} API; "
                               "check backend.url and backend.kind")
        if status in (401, 403):
            env = self.config.api_key_env
            fix = (f"check the key in the environment variable {env}" if env and os.environ.get(env)
                   else f"put the key in the environment variable {env} and restart the editor" if env
                   else "set backend.apiKeyEnv to the name of an environment variable holding the key")
            return RemoteError(f"{self.url} refused the API key (HTTP {status}); {fix}")
        if status == 404 and "model" in detail.lower():
            return RemoteError(f"{self.url} does not know model {self.model!r} ({detail}); fix backend.model")
        if status == 404:
            return RemoteError(f"{where} does not exist (HTTP 404); check backend.kind "
                               f"({self.config.kind!r}) and backend.url")
        if status >= 500:
            return RemoteError(f"{self.url} failed (HTTP {status}: {detail}); see the server's log")
        return RemoteError(f"{where} answered HTTP {status}: {detail}")

    def _report(self, problem: str | None) -> None:
        """Tell the owner when the server becomes unusable and when it works again (not per request)."""
        if problem is not None:
            self._probed = False  # ask again next time: the server may come back with another model
        if problem == self._problem:
            return
        self._problem = problem
        if problem is not None:
            log.warning("infill: %s", problem)
        if self._on_problem is not None:
            try:
                self._on_problem(problem)
            except Exception:
                log.exception("on_problem callback failed")


class _NotImplemented(Exception):
    """`/infill` answered 501: the model has no FIM tokens."""


class _Cancelled(Exception):
    """The request was cancelled while connecting."""


class _CancelledResponse(_Response):
    """What a request cancelled before its answer reads as: nothing."""

    def __init__(self) -> None:  # noqa: D107 - no connection behind it
        self._request = _Request(None, None, cancelled=True)

    def lines(self) -> Iterator[str]:
        return iter(())

    def close(self) -> None:
        pass


_DONE: dict = {}  # the `data: [DONE]` event


def _check_ended(ended: bool, response: _Response, url: str) -> None:
    """A stream that stops without its end marker was cut (the server died or a proxy dropped it)."""
    if not ended and not response.cancelled:
        raise RemoteError(f"the stream from {url} ended before the answer did; check that the server is "
                          "still running (and any proxy's timeouts)")


def _sse(response: _Response, url: str) -> Iterator[dict]:
    """The JSON events of a server-sent event stream (`data: {...}`, `[DONE]`, comments and pings skipped)."""
    for line in response.lines():
        if not line or line.startswith(":"):
            continue
        if line.startswith("data:"):
            payload = line[5:].strip()
            if payload == "[DONE]":
                yield _DONE
                return
            yield _json_line(payload, url)
        elif line.startswith("error:"):
            yield {"error": line[6:].strip()}
        elif line.startswith(("event:", "id:", "retry:")):
            continue
        else:
            raise RemoteError(f"{url} did not answer with an event stream (got {line[:40]!r}); "
                              "check backend.url and backend.kind")


def _json_line(text: str, url: str) -> dict:
    try:
        data = json.loads(text)
    except ValueError:
        start = text.lstrip()[:40]
        what = "a web page" if start.lower().startswith(("<!doctype", "<html")) else repr(start)
        raise RemoteError(f"{url} answered {what}, not JSON; check backend.url and backend.kind") from None
    if not isinstance(data, dict):
        raise RemoteError(f"{url} answered unexpected JSON; check backend.url and backend.kind")
    return data


def _raise_stream_error(data: dict, url: str) -> None:
    error = data.get("error")
    if error:
        message = error.get("message") if isinstance(error, dict) else str(error)
        raise RemoteError(f"{url} failed mid-answer: {str(message)[:200]}; see the server's log")


def _llama_timings(data: dict, stats: GenerationStats) -> None:
    """llama.cpp's own count of the prompt: evaluated now (`prompt_n`) and reused from its cache (`cache_n`)."""
    timings = data.get("timings")
    if isinstance(timings, dict) and isinstance(timings.get("prompt_n"), int):
        stats.reused_tokens = int(timings.get("cache_n") or 0)
        stats.prompt_tokens = stats.reused_tokens + int(timings["prompt_n"])


def _objects(value: object) -> list[dict]:
    """The JSON objects of a list an answer should hold (anything else: none)."""
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _error_detail(response: http.client.HTTPResponse) -> str:
    """A short reason from an error answer's body (JSON `error.message`, or its first characters)."""
    try:
        raw = response.read(64 * 1024).decode("utf-8", errors="replace")
    except (OSError, http.client.HTTPException):
        return f"HTTP {response.status}"
    try:
        data = json.loads(raw)
        error = data.get("error", data) if isinstance(data, dict) else data
        message = error.get("message") if isinstance(error, dict) else error
        return str(message)[:200] if message else raw[:200]
    except ValueError:
        return raw.strip()[:200] or f"HTTP {response.status}"


def _chat_messages(prompt: ChatPrompt) -> list[dict]:
    messages = [dict(m) for m in prompt.messages]
    if prompt.seed:
        messages.append({"role": "assistant", "content": prompt.seed})
    return messages


def _ollama_options(max_new_tokens: int, temperature: float, stop: list[str]) -> dict:
    options: dict = {"num_predict": max_new_tokens, "temperature": temperature}
    if stop:
        options["stop"] = stop
    return options


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False

