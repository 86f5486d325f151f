"""Replay typing a real source file through the language server and measure what the typist feels.

A module of the running interpreter's standard library (written by no one here) is opened with its
first part already present; the next characters are then typed one by one as incremental didChange
notifications, and at every word boundary the editor waits a 75 ms debounce and asks for an inline
completion, like VS Code or Neovim would; before the first key the cursor rests at the typing position,
and the replay says so as those clients do (`infill/didMoveCursor`; `--no-cursor` leaves it out). Reports
request latency (p50/p95), how often the prompt reused the KV cache of an earlier one, and how often the
answer came from the previous suggestion because the user typed what it predicted.

Baseline in the same run: the same server answering the same positions with a *cold* document each
time (a fresh URI, nothing cached), so the ratio shows what caching and warming buy on this machine.

The explicit path: at each of those cold positions, after the typing request, an *invoked* request
(InlineCompletionTriggerKind.Invoked: the trigger key, or cycling with Alt+]) asks for up to
`suggestions` different items; reported as its latency, the items it got and its ratio to the typing
request at the same position.

    python benchmarks/lsp_typing.py [--module textwrap] [--chars 1500] [--start 0.4]
    python benchmarks/lsp_typing.py --backend http://gpu-box:8080 --kind llama.cpp   # remote beside local
    python benchmarks/lsp_typing.py --backend start    # a llama.cpp server (xllamacpp) started here
    python benchmarks/lsp_typing.py --against '{"suffixTokens": 16}'   # a setting's cost, same run

`--auto-close` types as VS Code does by default: an opening bracket or quote also inserts its closer after the
cursor (where the source closes it on the same line), which is typed over later; the server takes those closers
for what they are (`typed_since`) rather than as a change to the code after the cursor.

`--keystroke-ms` sets the pace inside a word: 20 by default (a fast typist, who leaves no pause for the
server's pause-based warm-ups), 150 for an ordinary typist's 7 characters a second.

With `--backend`, the same typing is replayed twice in one run, through the in-process engine and through
the serving engine (`backend` setting), and the table shows both with their ratio; `prefix_reuse_rate`
is then how often the server's prompt cache held at least half the prompt (llama.cpp reports it as
`timings.cache_n`, OpenAI-compatible servers as `usage.prompt_tokens_details.cached_tokens`). With
`--against`, the second replay is the same server with other settings (`--settings` apply to both).

1,500 characters make about 200 requests: a p95 over fewer is decided by three or four of them (a cold
prefill after the context cut moved, one long suggestion) and swings by hundreds of ms between runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import sysconfig
import time
from pathlib import Path

from lsprotocol import types
from pygls.lsp.client import LanguageClient

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lsp_server.positions import to_position  # noqa: E402

DEBOUNCE_S = 0.075
KEYSTROKE_MS = 20.0  # a fast typist: 50 characters per second between completion requests (`--keystroke-ms`)


def word_boundary(prev: str, ch: str) -> bool:
    """Editors ask after a word ends or after punctuation that starts something new."""
    return (prev.isalnum() or prev == "_") and not (ch.isalnum() or ch == "_") or ch in ".(\n"


PAIRS = {"(": ")", "[": "]", "{": "}", '"': '"', "'": "'"}


def auto_closer(source: str, i: int) -> str:
    """The closer an editor with auto-closing brackets (VS Code's default) inserts when `source[i]` is typed:
    only where the source closes it later on the same line, so typing over it keeps the replay's text equal
    to the source's (a closer pushed onto another line by Enter would not be)."""
    opener = source[i]
    closer = PAIRS.get(opener, "")
    if not closer:
        return ""
    end = source.find("\n", i)
    depth = 0
    for ch in source[i + 1:end if end >= 0 else len(source)]:
        if opener in "\"'":
            if ch == opener:
                return closer
        elif ch == opener:
            depth += 1
        elif ch == closer:
            if depth == 0:
                return closer
            depth -= 1
    return ""


async def start_client(init_options: dict) -> tuple[LanguageClient, asyncio.Event]:
    client = LanguageClient("lsp-typing", "0.1")
    ready = asyncio.Event()

    @client.feature(types.WINDOW_WORK_DONE_PROGRESS_CREATE)
    def _create(params):
        return None

    @client.feature(types.PROGRESS)
    def _progress(params):
        value = params.value if isinstance(params.value, dict) else vars(params.value)
        if value.get("kind") == "end" and " ready on " in (value.get("message") or ""):
            ready.set()

    await client.start_io(sys.executable, "-m", "lsp_server.cli", "serve")
    assert client._server is not None and client._server.stderr is not None  # start_io made the process
    asyncio.ensure_future(_drain(client._server.stderr))
    await client.initialize_async(types.InitializeParams(
        capabilities=types.ClientCapabilities(
            window=types.WindowClientCapabilities(work_done_progress=True),
            text_document=types.TextDocumentClientCapabilities(
                inline_completion=types.InlineCompletionClientCapabilities())),
        initialization_options=init_options))
    client.initialized(types.InitializedParams())
    return client, ready


async def _drain(stream) -> None:
    while stream is not None and await stream.read(65536):
        pass


async def request(client: LanguageClient, uri: str, text: str, offset: int,
                  invoked: bool = False) -> tuple[float, list[str]]:
    line, character = to_position(text, offset)
    kind = types.InlineCompletionTriggerKind.Invoked if invoked else types.InlineCompletionTriggerKind.Automatic
    t0 = time.perf_counter()
    result = await client.text_document_inline_completion_async(types.InlineCompletionParams(
        text_document=types.TextDocumentIdentifier(uri=uri), position=types.Position(line, character),
        context=types.InlineCompletionContext(trigger_kind=kind)))
    elapsed = (time.perf_counter() - t0) * 1000
    items = result.items if isinstance(result, types.InlineCompletionList) else (result or [])
    return elapsed, [i.insert_text if isinstance(i.insert_text, str) else i.insert_text.value for i in items]


async def stats(client: LanguageClient) -> dict:
    result = await client.protocol.send_request_async("infill/stats", None)
    return result if isinstance(result, dict) else result._asdict()


async def warmed(client: LanguageClient, since: dict, timeout: float = 60.0) -> None:
    """Wait until the server has warmed the cache for the opened document (its `warmed` counter moved
    past `since`), so the first request does not also wait for the open's prefill (an editor opens a file
    seconds before one types). A server without the counter gets one second, as before it had one."""
    if "warmed" not in since:
        await asyncio.sleep(1.0)
        return
    deadline = time.perf_counter() + timeout
    while (await stats(client))["warmed"] <= since["warmed"]:
        if time.perf_counter() > deadline:
            raise TimeoutError(f"the opened document was not warmed within {timeout:.0f} s")
        await asyncio.sleep(0.05)


async def replay(args: argparse.Namespace, init_options: dict) -> dict:
    source_path = Path(sysconfig.get_paths()["stdlib"]) / f"{args.module}.py"
    source = source_path.read_text(encoding="utf-8")
    start = source.index("\n", int(len(source) * args.start)) + 1
    typed_end = min(len(source), start + args.chars)
    tail = source[typed_end:]
    client, ready = await start_client(init_options)
    await asyncio.wait_for(ready.wait(), 900)
    uri = (ROOT / "benchmarks" / "_typing" / source_path.name).as_uri()
    text = source[:start] + tail
    opened = await stats(client)
    client.text_document_did_open(types.DidOpenTextDocumentParams(
        types.TextDocumentItem(uri=uri, language_id="python", version=1, text=text)))
    await warmed(client, opened)  # as in an editor, where opening a file and typing are seconds apart
    if args.cursor:  # the cursor rests where typing starts: VS Code and Neovim say so (`infill/didMoveCursor`)
        line, character = to_position(text, start)
        rested = await stats(client)
        client.protocol.notify("infill/didMoveCursor", {"textDocument": {"uri": uri},
                                                        "position": {"line": line, "character": character}})
        await warmed(client, rested)
    before = last = await stats(client)
    latencies: list[float] = []
    computed: list[int] = []  # prompt tokens each request computed (0: typed through, or all reused)
    positions: list[int] = []
    version = 1
    closers = ""  # `--auto-close`: closing characters the editor inserted, waiting right after the cursor
    for i in range(start, typed_end):
        ch = source[i]
        offset = i  # where the character goes: the text is source[:i] + closers + tail
        if closers and ch == closers[0]:  # the editor types over its own closer: no change
            closers = closers[1:]
        else:
            insert = ch + (closer := auto_closer(source, i) if args.auto_close else "")
            closers = closer + closers
            line, character = to_position(text, offset)
            text = text[:offset] + insert + text[offset:]
            version += 1
            client.text_document_did_change(types.DidChangeTextDocumentParams(
                text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
                content_changes=[types.TextDocumentContentChangePartial(
                    range=types.Range(types.Position(line, character), types.Position(line, character)),
                    text=insert)]))
        if i > start and word_boundary(source[i - 1], ch):
            await asyncio.sleep(DEBOUNCE_S)
            elapsed, _ = await request(client, uri, text, offset + 1)
            latencies.append(elapsed)
            positions.append(offset + 1)
            now = await stats(client)  # what this request computed: explains a slow one
            computed.append(now["prompt_tokens"] - now["reused_tokens"] - last["prompt_tokens"] + last["reused_tokens"])
            last = now
        else:
            await asyncio.sleep(args.keystroke_ms / 1000)
    assert text == source[:typed_end] + closers + tail, "the replay's text left the source's"
    after = await stats(client)

    cold: list[float] = []  # baseline: the same positions, each in a fresh document (nothing cached)
    invoked: list[float] = []  # then an explicit request at the same position
    invoked_items: list[int] = []
    typing_there: list[float] = []  # the typing request it follows (cold) — the ratio's denominator
    for n, pos in enumerate(positions[:: max(1, len(positions) // args.cold_samples)][: args.cold_samples]):
        cold_uri = (ROOT / "benchmarks" / "_typing" / f"cold{n}.py").as_uri()
        cold_text = source[:pos] + tail
        client.text_document_did_open(types.DidOpenTextDocumentParams(
            types.TextDocumentItem(uri=cold_uri, language_id="python", version=1, text=cold_text)))
        elapsed, _ = await request(client, cold_uri, cold_text, pos)
        cold.append(elapsed)
        if args.invoked:
            t_inv, items = await request(client, cold_uri, cold_text, pos, invoked=True)
            if items:
                invoked.append(t_inv)
                invoked_items.append(len(items))
                typing_there.append(elapsed)
    await client.shutdown_async(None)
    client.exit(None)
    await client.stop()

    requests = after["requests"] - before["requests"]
    generated = after["generated"] - before["generated"]
    p = sorted(latencies)
    return {
        "module": args.module,
        "cursor": args.cursor,  # whether the replay said where the cursor rests before typing
        "auto_close": args.auto_close,
        "keystroke_ms": args.keystroke_ms,
        "requests": requests,
        "p50_ms": round(statistics.median(p), 1) if p else None,
        "p95_ms": round(p[min(len(p) - 1, int(0.95 * len(p)))], 1) if p else None,
        "mean_ms": round(statistics.fmean(p), 1) if p else None,
        "max_ms": round(p[-1], 1) if p else None,
        "over_1500_ms": sum(x > 1500 for x in p),
        "slowest_at": latencies.index(p[-1]) if p else None,  # which request (0: the first after opening)
        "first_ms": round(latencies[0], 1) if latencies else None,  # the first at the typing position
        "slowest_computed_tokens": computed[latencies.index(p[-1])] if p else None,
        # Without `infill/didMoveCursor` (`--no-cursor`: a plain LSP client) the first request at the typing
        # position computes the prompt there, as the open's warm-up covers the end of the file: every later
        # one is "once warm" (issue 11).
        "max_once_warm_ms": round(max(latencies[1:]), 1) if len(latencies) > 1 else None,
        "over_1500_once_warm": sum(x > 1500 for x in latencies[1:]),
        "prefix_reuse_rate": round((after["reuse_hits"] - before["reuse_hits"]) / generated, 3) if generated else 0.0,
        "reused_token_share": round((after["reused_tokens"] - before["reused_tokens"])
                                    / max(1, after["prompt_tokens"] - before["prompt_tokens"]), 3),
        **cost_split(before, after),
        # generations that extended the prompt computed where typing began (`Anchor`; 0 on older servers)
        "anchored_rate": round((after.get("anchored", 0) - before.get("anchored", 0)) / generated, 3)
        if generated else 0.0,
        "typed_through_rate":
            round((after["typed_through"] - before["typed_through"]) / requests, 3) if requests else 0.0,
        "cold_p50_ms": round(statistics.median(cold), 1) if cold else None,
        "p50_vs_cold": round(statistics.median(p) / statistics.median(cold), 3) if p and cold else None,
        "chars_typed": typed_end - start,
        "invoked_p50_ms": round(statistics.median(invoked), 1) if invoked else None,
        "invoked_items_mean": round(statistics.fmean(invoked_items), 2) if invoked_items else None,
        "invoked_vs_typing": round(statistics.median([a / b for a, b in zip(invoked, typing_there, strict=True)]), 3)
        if invoked else None,
    }


def cost_split(before: dict, after: dict) -> dict[str, float]:
    """Where a generated suggestion's time goes, per request on average: the prompt tokens computed (not
    reused from the cache) and the time to the first token, then the tokens decoded and the time after."""
    n = after["generated"] - before["generated"]
    if not n:
        return {}
    delta = {k: after.get(k, 0) - before.get(k, 0)
             for k in ("prompt_tokens", "reused_tokens", "generated_tokens", "first_token_ms", "generation_ms")}
    return {"computed_prompt_tokens": round((delta["prompt_tokens"] - delta["reused_tokens"]) / n, 1),
            "first_token_ms": round(delta["first_token_ms"] / n, 1),
            "decoded_tokens": round(delta["generated_tokens"] / n, 1),
            "decode_ms": round((delta["generation_ms"] - delta["first_token_ms"]) / n, 1)}


METRICS = ("requests", "p50_ms", "p95_ms", "mean_ms", "max_ms", "over_1500_ms", "slowest_at",
           "slowest_computed_tokens", "first_ms", "max_once_warm_ms", "over_1500_once_warm",
           "computed_prompt_tokens", "first_token_ms", "decoded_tokens", "decode_ms", "prefix_reuse_rate",
           "reused_token_share", "anchored_rate", "typed_through_rate", "cold_p50_ms", "p50_vs_cold", "invoked_p50_ms",
           "invoked_items_mean", "invoked_vs_typing")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--module", default="textwrap", help="standard-library module to replay")
    parser.add_argument("--chars", type=int, default=1500, help="characters to type")
    parser.add_argument("--start", type=float, default=0.4, help="share of the file present when it opens")
    parser.add_argument("--keystroke-ms", type=float, default=KEYSTROKE_MS,
                        help="pause between keystrokes inside a word (150: an ordinary typist, 7 per second)")
    parser.add_argument("--cold-samples", type=int, default=8)
    parser.add_argument("--no-cursor", dest="cursor", action="store_false",
                        help="do not say where the cursor rests before typing (a client without infill/didMoveCursor)")
    parser.add_argument("--auto-close", action="store_true",
                        help="type as an editor with auto-closing brackets and quotes does (VS Code's default)")
    parser.add_argument("--no-invoked", dest="invoked", action="store_false",
                        help="skip the explicit (invoked) requests after the cold ones")
    parser.add_argument("--backend", help="a serving engine's URL to replay through as well, or `start` for a "
                                          "llama.cpp server (xllamacpp) on the default model, started here")
    parser.add_argument("--kind", default="llama.cpp", choices=["openai", "llama.cpp", "ollama"])
    parser.add_argument("--api-key-env", default="")
    parser.add_argument("--settings", type=json.loads, default={}, metavar="JSON",
                        help="server settings (initializationOptions) for every replay, e.g. '{\"suffixTokens\": 16}'")
    parser.add_argument("--against", type=json.loads, default=None, metavar="JSON",
                        help="replay a second time with these settings on top, in the same run, and show the ratio")
    args = parser.parse_args()
    if args.backend and args.against is not None:
        parser.error("--backend and --against each make the second replay: use one")
    if not args.backend and args.against is None:
        result = asyncio.run(replay(args, args.settings))
        print(f"{'metric':<22}{'value':>12}")
        for key in METRICS:
            print(f"{key:<22}{str(result.get(key)):>12}")
        print(TARGETS)
        print(json.dumps({**result, "settings": args.settings}))
        return
    if args.against is not None:
        first = asyncio.run(replay(args, args.settings))
        second = asyncio.run(replay(args, {**args.settings, **args.against}))
        print_pair("settings", "against", first, second)
        print(json.dumps({"settings": args.settings, "against": args.against, "first": first, "second": second,
                          **ratios(first, second)}))
        return
    server = None
    url = args.backend
    if url == "start":
        sys.path.insert(0, str(ROOT / "tests"))
        from llama_server import LlamaServer, default_gguf

        server = LlamaServer(default_gguf())
        server.start()
        url = server.url
    try:
        local = asyncio.run(replay(args, args.settings))
        remote = asyncio.run(replay(args, {**args.settings, "backend": {"url": url, "kind": args.kind,
                                                                         "apiKeyEnv": args.api_key_env}}))
    finally:
        if server is not None:
            server.kill()
    print_pair("in-process", "remote", local, remote)
    print(json.dumps({"backend": url if server is None else "xllamacpp (started here)", "kind": args.kind,
                      "in_process": local, "remote": remote, **ratios(local, remote)}))


TARGETS = "targets (issue 11, 2 cores): p50 <= 200 ms, p95 <= 1,200 ms, no request > 1,500 ms once warm"


def print_pair(first_name: str, second_name: str, first: dict, second: dict) -> None:
    """Two replays side by side, with the second's ratio to the first."""
    print(f"{'metric':<22}{first_name:>12}{second_name:>12}{'ratio':>10}")
    for key in METRICS:
        a, b = first.get(key), second.get(key)
        ratio = round(b / a, 2) if isinstance(a, (int, float)) and isinstance(b, (int, float)) and a else ""
        print(f"{key:<22}{str(a):>12}{str(b):>12}{str(ratio):>10}")
    print(TARGETS)


def ratios(first: dict, second: dict) -> dict[str, float | None]:
    """The second replay's headline figures over the first's, for the JSON line."""
    return {f"{key}_ratio": round(second[key] / first[key], 3) if first.get(key) and second.get(key) else None
            for key in ("p50_ms", "p95_ms", "max_ms", "first_token_ms")}


if __name__ == "__main__":
    main()
