"""How long the server's event loop takes to answer while the model computes.

The server (`infill serve` over stdio, the real default model) is given a long generation: a FIM prompt
of about 1,750 tokens (a cold prefill: each round opens another standard-library module) and up to 128
new tokens, with the latency budget lifted so decoding runs to the end. While it runs, a client probes
the event loop, one probe every ~40 ms, each one that the server answers without the model:

- `change`: a `didChange` and an `inlineCompletion` for a document whose language is disabled (the
  empty path: the handler returns at once);
- `symbol`: a `workspace/symbol` request on a small indexed workspace (its answer also costs a query
  embedding and an SQLite query, so it shows CPU contention too: see its idle row);
- `cancel`: separate rounds cancel the long generation itself at a random moment (prefill or decode)
  and time the `$/cancelRequest` until the cancelled request's answer arrives.

Each probe's round trip is timed from the client; the same probes with the model idle are the floor.
Modes (same run, same machine): `inprocess` (the engine on a thread of the server, as before the
worker) and `worker` (the engine in its own process, `inference.worker`). Also reported: peak and
settled RSS of the server and its children, and a GIL check: the longest stall a 1 ms ticker thread
sees while the in-process engine prefills and decodes (the reason for the worker).

    flock /tmp/infill-cpu.lock python benchmarks/loop_latency.py [--rounds 4] [--cancel-rounds 12]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import statistics
import sys
import sysconfig
import tempfile
import threading
import time
import uuid
from pathlib import Path

import psutil
from lsprotocol import types
from pygls.lsp.client import LanguageClient

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lsp_server.positions import to_position  # noqa: E402

STDLIB = Path(sysconfig.get_paths()["stdlib"])
LONG_MODULES = ["argparse", "difflib", "tarfile", "inspect", "smtplib", "calendar", "pathlib", "ftplib",
                "imaplib", "pydoc", "mailbox", "zipfile", "subprocess", "pickle", "typing", "socket",
                "threading", "configparser", "logging/__init__", "email/message", "http/client", "shutil",
                "tempfile", "gettext", "locale", "ssl", "turtle", "traceback", "random", "platform"]
WORKSPACE_FILES = ["textwrap", "shlex", "fnmatch"]
SETTINGS = {"contextTokens": 1800, "maxTokensMultiLine": 128, "latencyBudgetMs": 600000,
            "otherDocumentsTokens": 1, "disabledLanguages": ["plaintext"]}
PROBE_GAP_S = 0.04


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return round(s[min(len(s) - 1, int(q * len(s)))], 1)


def tree_rss(pid: int) -> tuple[float, float]:
    """(server MB, children MB) resident now."""
    try:
        proc = psutil.Process(pid)
        own = proc.memory_info().rss
        kids = sum(c.memory_info().rss for c in proc.children(recursive=True))
    except psutil.Error:
        return 0.0, 0.0
    return own / 2**20, kids / 2**20


class Server:
    """One `infill serve` with a pygls client, its model ready and its workspace indexed."""

    def __init__(self, mode: str, workspace: Path) -> None:
        self.mode = mode
        self.workspace = workspace
        self.client = LanguageClient("loop-latency", "0.1")
        self.ready = asyncio.Event()
        self.rss_peak = 0.0
        self._sampling = True
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        @self.client.feature(types.WINDOW_WORK_DONE_PROGRESS_CREATE)
        def _create(params):
            return None

        @self.client.feature(types.PROGRESS)
        def _progress(params):
            value = params.value if isinstance(params.value, dict) else vars(params.value)
            if value.get("kind") == "end" and " ready on " in (value.get("message") or ""):
                self.ready.set()

        @self.client.feature(types.CLIENT_REGISTER_CAPABILITY)
        def _register(params):
            return None

        await self.client.start_io(sys.executable, "-m", "lsp_server.cli", "serve", cwd=str(ROOT))
        self.process = self.client._server
        assert self.process is not None and self.process.stderr is not None  # start_io made it
        asyncio.ensure_future(_drain(self.process.stderr))
        self.pid = self.process.pid
        asyncio.ensure_future(self._sample_rss())
        await self.client.initialize_async(types.InitializeParams(
            root_uri=self.workspace.as_uri(),
            workspace_folders=[types.WorkspaceFolder(uri=self.workspace.as_uri(), name="ws")],
            initialization_options={**SETTINGS, "modelWorker": self.mode == "worker"},
            capabilities=types.ClientCapabilities(
                window=types.WindowClientCapabilities(work_done_progress=True),
                text_document=types.TextDocumentClientCapabilities(
                    inline_completion=types.InlineCompletionClientCapabilities()))))
        self.client.initialized(types.InitializedParams())
        await asyncio.wait_for(self.ready.wait(), 900)
        deadline = time.monotonic() + 300
        while not await self.symbol("split text into lines"):
            if time.monotonic() > deadline:
                raise RuntimeError("the workspace was not indexed in time")
            await asyncio.sleep(1)
        await asyncio.sleep(2)  # the model's warm-up and the index settle
        self.settled_rss = tree_rss(self.pid)

    async def _sample_rss(self) -> None:
        while self._sampling:
            own, kids = tree_rss(self.pid)
            self.rss_peak = max(self.rss_peak, own + kids)
            await asyncio.sleep(0.25)

    async def stop(self) -> float:
        """Shut down; seconds from `shutdown` to the process gone."""
        self._sampling = False
        t0 = time.perf_counter()
        await self.client.shutdown_async(None)
        self.client.exit(None)
        assert self.process is not None
        try:
            await asyncio.wait_for(self.process.wait(), 30)
        except asyncio.TimeoutError:
            self.process.kill()
        elapsed = time.perf_counter() - t0
        await self.client.stop()
        return elapsed

    # --------------------------------------------------------------------------------- requests
    def open(self, uri: str, text: str, language: str = "python") -> None:
        self.client.text_document_did_open(types.DidOpenTextDocumentParams(
            types.TextDocumentItem(uri=uri, language_id=language, version=1, text=text)))

    def close(self, uri: str) -> None:
        self.client.text_document_did_close(types.DidCloseTextDocumentParams(types.TextDocumentIdentifier(uri)))

    def inline(self, uri: str, text: str, offset: int, msg_id: str | None = None) -> asyncio.Future:
        line, character = to_position(text, offset)
        params = types.InlineCompletionParams(
            text_document=types.TextDocumentIdentifier(uri=uri), position=types.Position(line, character),
            context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Automatic))
        return asyncio.wrap_future(self.client.protocol.send_request(
            types.TEXT_DOCUMENT_INLINE_COMPLETION, params, msg_id=msg_id))

    async def symbol(self, query: str) -> list:
        return list(await self.client.workspace_symbol_async(types.WorkspaceSymbolParams(query=query)) or [])

    async def stats(self) -> dict:
        result = await self.client.protocol.send_request_async("infill/stats", None)
        return result if isinstance(result, dict) else result._asdict()


async def _drain(stream) -> None:
    while stream is not None and await stream.read(65536):
        pass


class Prober:
    """The probes, each a round trip the event loop alone should answer."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.uri = (ROOT / "benchmarks" / "_loop" / "notes.txt").as_uri()
        self.text = "notes\n"
        self.version = 1
        server.open(self.uri, self.text, language="plaintext")

    async def change(self) -> float:
        """didChange (one character typed) + inlineCompletion, answered empty (language disabled)."""
        t0 = time.perf_counter()
        offset = len(self.text)
        line, character = to_position(self.text, offset)
        self.version += 1
        self.server.client.text_document_did_change(types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=self.uri, version=self.version),
            content_changes=[types.TextDocumentContentChangePartial(
                range=types.Range(types.Position(line, character), types.Position(line, character)), text="x")]))
        self.text += "x"
        await self.server.inline(self.uri, self.text, len(self.text))
        return (time.perf_counter() - t0) * 1000

    async def symbol(self) -> float:
        t0 = time.perf_counter()
        await self.server.symbol("wrap a paragraph of text")
        return (time.perf_counter() - t0) * 1000


def long_document(module: str) -> tuple[str, int]:
    """About 2,000 tokens of real code and a new function to write: a multi-line FIM prompt."""
    source = (STDLIB / f"{module}.py").read_text(encoding="utf-8")
    head = source[: source.index("\n", min(len(source) - 1, 9000)) + 1]
    name = module.replace("/", "_").strip("_")
    text = head + f"\n\ndef summarize_{name}_options(values, limit=10):\n    "
    return text, len(text)


async def measure(mode: str, args: argparse.Namespace, modules: list[str], workspace: Path) -> dict:
    server = Server(mode, workspace)
    await server.start()
    prober = Prober(server)
    idle: dict[str, list[float]] = {"change": [], "symbol": []}
    for _ in range(args.idle_probes):
        idle["change"].append(await prober.change())
        idle["symbol"].append(await prober.symbol())
        await asyncio.sleep(PROBE_GAP_S)

    busy: dict[str, list[float]] = {"change": [], "symbol": [], "cancel": []}
    long_ms: list[float] = []
    before = await server.stats()
    for n in range(args.rounds):
        uri = (ROOT / "benchmarks" / "_loop" / f"long{n}.py").as_uri()
        text, offset = long_document(modules.pop())
        server.open(uri, text)
        t0 = time.perf_counter()
        pending = server.inline(uri, text, offset)
        kinds = ["change", "symbol"]
        i = 0
        while not pending.done():
            kind = kinds[i % 2]
            i += 1
            elapsed = await (prober.change() if kind == "change" else prober.symbol())
            if not pending.done():  # answered while the model computed
                busy[kind].append(elapsed)
            await asyncio.sleep(PROBE_GAP_S * random.uniform(0.5, 1.5))
        await pending
        long_ms.append((time.perf_counter() - t0) * 1000)
        server.close(uri)
    after = await server.stats()

    for n in range(args.cancel_rounds):
        uri = (ROOT / "benchmarks" / "_loop" / f"cancel{n}.py").as_uri()
        text, offset = long_document(modules.pop())
        server.open(uri, text)
        msg_id = f"cancel-{uuid.uuid4()}"
        pending = server.inline(uri, text, offset, msg_id=msg_id)
        await asyncio.sleep(random.uniform(0.2, args.cancel_within))
        if pending.done():
            continue
        t0 = time.perf_counter()
        server.client.protocol.notify(types.CANCEL_REQUEST, types.CancelParams(id=msg_id))
        try:
            await pending
        except Exception:  # RequestCancelled: the answer we are timing
            pass
        busy["cancel"].append((time.perf_counter() - t0) * 1000)
        server.close(uri)
        await asyncio.sleep(1.0)  # let the engine stop and the next round start cold

    exit_s = await server.stop()
    generated = after["generated"] - before["generated"]
    return {
        "mode": mode,
        **{f"{k}_p50_ms": pct(v, 0.5) for k, v in busy.items()},
        **{f"{k}_p99_ms": pct(v, 0.99) for k, v in busy.items()},
        **{f"{k}_max_ms": pct(v, 1.0) for k, v in busy.items()},
        **{f"{k}_n": len(v) for k, v in busy.items()},
        **{f"idle_{k}_p50_ms": pct(v, 0.5) for k, v in idle.items()},
        **{f"idle_{k}_p99_ms": pct(v, 0.99) for k, v in idle.items()},
        "long_request_ms": round(statistics.median(long_ms), 0) if long_ms else None,
        "prompt_tokens_per_request": round((after["prompt_tokens"] - before["prompt_tokens"]) / generated)
        if generated else None,
        "reused_tokens": after["reused_tokens"] - before["reused_tokens"],
        "generated_tokens_per_request": round((after.get("generated_tokens", 0)
                                               - before.get("generated_tokens", 0)) / generated, 1)
        if generated else None,
        "rss_server_mb": round(server.settled_rss[0]), "rss_children_mb": round(server.settled_rss[1]),
        "rss_total_mb": round(sum(server.settled_rss)), "rss_peak_mb": round(server.rss_peak),
        "shutdown_exit_s": round(exit_s, 2),
    }


def gil_check() -> dict:
    """The longest stall of a 1 ms ticker thread while the in-process engine prefills ~1,900 tokens and
    decodes 128: if onnxruntime-genai released the GIL in its forward pass, stalls would stay ~1 ms."""
    from inference import Engine

    engine = Engine.load()
    text, _ = long_document("argparse")
    stalls: list[float] = []
    running = threading.Event()
    running.set()

    def tick() -> None:
        last = time.perf_counter()
        while running.is_set():
            time.sleep(0.001)
            now = time.perf_counter()
            stalls.append((now - last) * 1000)
            last = now

    thread = threading.Thread(target=tick, daemon=True)
    thread.start()
    t0 = time.perf_counter()
    completion = engine.complete(text, max_new_tokens=128, lookup=False)
    running.clear()
    thread.join()
    engine.close()
    return {"gil_ticker_max_stall_ms": round(max(stalls), 1), "gil_ticker_p99_stall_ms": pct(stalls, 0.99),
            "gil_prefill_ms": round(completion.ttft_ms), "gil_prompt_tokens": completion.prompt_tokens,
            "gil_generated": completion.generated_tokens, "gil_total_ms": round((time.perf_counter() - t0) * 1000)}


async def run(args: argparse.Namespace) -> list[dict]:
    workspace = Path(tempfile.mkdtemp(prefix="infill-loop-ws-"))
    try:
        for name in WORKSPACE_FILES:
            shutil.copy(STDLIB / f"{name}.py", workspace / f"{name}.py")
        results = []
        for mode in args.modes.split(","):
            modules = list(LONG_MODULES)
            random.Random(0).shuffle(modules)
            results.append(await measure(mode, args, modules, workspace))
        return results
    finally:
        shutil.rmtree(workspace, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modes", default="inprocess,worker", help="comma-separated: inprocess, worker")
    parser.add_argument("--rounds", type=int, default=4, help="long generations probed")
    parser.add_argument("--cancel-rounds", type=int, default=12, help="long generations cancelled")
    parser.add_argument("--cancel-within", type=float, default=6.0, help="cancel at a random time up to this (s)")
    parser.add_argument("--idle-probes", type=int, default=40)
    parser.add_argument("--no-gil-check", action="store_true")
    args = parser.parse_args()
    if args.rounds + args.cancel_rounds > len(LONG_MODULES):
        parser.error(f"at most {len(LONG_MODULES)} rounds in all (one cold module each)")
    random.seed(1)
    results = asyncio.run(run(args))
    gil = {} if args.no_gil_check else gil_check()
    keys = [k for k in results[0] if k != "mode"]
    print(f"{'metric':<32}" + "".join(f"{r['mode']:>12}" for r in results)
          + ("      ratio" if len(results) == 2 else ""))
    for key in keys:
        values = [r[key] for r in results]
        ratio = ""
        if len(values) == 2 and isinstance(values[0], (int, float)) and values[0]:
            ratio = f"{values[1] / values[0]:>11.3f}" if isinstance(values[1], (int, float)) else ""
        print(f"{key:<32}" + "".join(f"{str(v):>12}" for v in values) + ratio)
    for key, value in gil.items():
        print(f"{key:<32}{str(value):>12}")
    summary = {"results": results, **gil}
    if len(results) == 2:
        base, new = results
        summary["ratios"] = {k: round(new[k] / base[k], 3) for k in keys
                             if isinstance(base[k], (int, float)) and isinstance(new[k], (int, float)) and base[k]}
    print("target: busy p99 <= 20 ms for change, symbol and cancel")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
