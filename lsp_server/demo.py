"""`infill demo`: the whole product through a real LSP client, on a shipped sample file.

Starts `infill serve` as a subprocess, connects pygls' LanguageClient over stdio, opens the sample,
and prints what an editor would show: an inline completion at a marked position, an edit ("Add
docstring", previewed as a diff, not applied) and a code-search result — each with its timing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path
from typing import Union

from lsprotocol import types
from pygls.lsp.client import LanguageClient

from lsp_server.positions import to_position

CURSOR_MARK = "item.)"  # the demo asks for a completion right after this "item."
READY_TIMEOUT_S = float(os.environ.get("INFILL_DEMO_TIMEOUT", 900))  # first run converts the default model


def run_demo(args: argparse.Namespace) -> int:
    return asyncio.run(_demo(args))


async def _demo(args: argparse.Namespace) -> int:
    sample = Path(str(resources.files("lsp_server") / "samples" / "sample.py"))
    text = sample.read_text(encoding="utf-8")
    uri = sample.as_uri()
    client = LanguageClient("infill-demo", "0.1")
    converter = client.protocol._converter
    # lsprotocol reads any result item with a "command" key as a Command, even a CodeAction whose
    # command is an object; tell them apart by that key's type. (The typing.Union object is the key the
    # converter looks up: `X | Y` would be another object.)
    converter.register_structure_hook(
        Union[types.Command, types.CodeAction],  # noqa: UP007
        lambda obj, _t: converter.structure(obj, types.Command if isinstance(obj.get("command"), str)
                                            else types.CodeAction))
    ready = asyncio.Event()

    @client.feature(types.WINDOW_WORK_DONE_PROGRESS_CREATE)
    def _create(params: types.WorkDoneProgressCreateParams) -> None:
        return None

    @client.feature(types.PROGRESS)
    def _progress(params: types.ProgressParams) -> None:
        value = params.value if isinstance(params.value, dict) else vars(params.value)  # pygls leaves it raw
        message = value.get("message") or value.get("title")
        if message and value.get("kind") != "report":  # begin and end lines; reports are too chatty here
            print(f"  [server] {message}", flush=True)
        if value.get("kind") == "end" and "ready" in (message or ""):
            ready.set()

    @client.feature(types.WINDOW_SHOW_MESSAGE)
    def _show(params: types.ShowMessageParams) -> None:
        print(f"  [server] {params.message}", flush=True)

    options = {}
    if args.model:
        options["model"] = args.model
    if args.family:
        options["family"] = args.family
    if args.device:
        options["device"] = args.device
    print(f"starting `infill serve` and opening {sample.name}", flush=True)
    await client.start_io(sys.executable, "-m", "lsp_server.cli", "serve")
    server_log = Path(tempfile.gettempdir()) / "infill-demo-server.log"
    assert client._server is not None and client._server.stderr is not None  # start_io made the process
    drain = asyncio.create_task(_drain(client._server.stderr, server_log))  # an unread pipe would block the server
    try:
        await client.initialize_async(types.InitializeParams(
            capabilities=types.ClientCapabilities(
                window=types.WindowClientCapabilities(work_done_progress=True),
                text_document=types.TextDocumentClientCapabilities(
                    inline_completion=types.InlineCompletionClientCapabilities())),
            root_uri=sample.parent.as_uri(),
            workspace_folders=[types.WorkspaceFolder(uri=sample.parent.as_uri(), name="samples")],
            initialization_options=options))
        client.initialized(types.InitializedParams())
        client.text_document_did_open(types.DidOpenTextDocumentParams(
            types.TextDocumentItem(uri=uri, language_id="python", version=1, text=text)))
        started = time.monotonic()
        try:
            await asyncio.wait_for(ready.wait(), READY_TIMEOUT_S)
        except asyncio.TimeoutError:
            print(f"the model did not become ready in time; server log: {server_log}", file=sys.stderr)
            return 1
        print(f"model ready after {time.monotonic() - started:.1f} s\n", flush=True)
        await _show_completion(client, uri, text)
        await _show_edit(client, uri, text)
        await _show_search(client)
    finally:
        try:
            await asyncio.wait_for(client.shutdown_async(None), 10)
            client.exit(None)
        except Exception:
            pass
        await client.stop()
        drain.cancel()
    return 0


async def _drain(stream: asyncio.StreamReader | None, log: Path) -> None:
    """Copy the server's stderr to a log file."""
    if stream is None:
        return
    with open(log, "wb") as fh:
        while chunk := await stream.read(65536):
            fh.write(chunk)
            fh.flush()


async def _show_completion(client: LanguageClient, uri: str, text: str) -> None:
    offset = text.rindex(CURSOR_MARK) + len(CURSOR_MARK) - 1
    line, character = to_position(text, offset)
    params = types.InlineCompletionParams(
        text_document=types.TextDocumentIdentifier(uri=uri), position=types.Position(line, character),
        context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Invoked))
    t0 = time.perf_counter()
    result = await client.text_document_inline_completion_async(params)
    cold = (time.perf_counter() - t0) * 1000
    t0 = time.perf_counter()
    await client.text_document_inline_completion_async(params)
    warm = (time.perf_counter() - t0) * 1000
    items = result.items if isinstance(result, types.InlineCompletionList) else (result or [])
    suggestion = items[0].insert_text if items else ""
    shown = text[:offset].splitlines()[-1]
    print("== Insert (textDocument/inlineCompletion) ==")
    print(f"  {shown}\u2588{text[offset:].splitlines()[0]}")
    print(f"  suggestion: {suggestion!r}")
    print(f"  latency: {cold:.0f} ms first request, {warm:.0f} ms repeated\n", flush=True)


async def _show_edit(client: LanguageClient, uri: str, text: str) -> None:
    """Ask for code actions on a function, as an editor does, and preview the "Add docstring" one."""
    start = text.index("def total_value")
    end = text.index("\n\n\n", start)
    range_ = types.Range(types.Position(*to_position(text, start)), types.Position(*to_position(text, end)))
    actions = await client.text_document_code_action_async(types.CodeActionParams(
        text_document=types.TextDocumentIdentifier(uri=uri), range=range_,
        context=types.CodeActionContext(diagnostics=[])))
    titles = [a.title for a in actions or []]
    print("== Edit (textDocument/codeAction on total_value → infill.edit, preview only) ==")
    print(f"  code actions: {', '.join(titles)}")
    action = next((a for a in actions or [] if a.title == "Add docstring"), None)
    command = getattr(action, "command", None)
    if not isinstance(command, types.Command) or not command.arguments:
        print("  no 'Add docstring' action offered\n")
        return
    arguments = [{**(command.arguments[0] or {}), "apply": False}]
    t0 = time.perf_counter()
    try:
        result = await client.workspace_execute_command_async(types.ExecuteCommandParams(
            command=command.command, arguments=arguments))
    except Exception as exc:  # the edit feature reports refusals as LSP errors
        print(f"  refused: {exc}\n")
        return
    elapsed = (time.perf_counter() - t0) * 1000
    diff = result.get("diff", "") if isinstance(result, dict) else getattr(result, "diff", "")
    for line in (diff or "(no change)").splitlines():
        print(f"  {line}")
    print(f"  latency: {elapsed:.0f} ms\n", flush=True)


async def _show_search(client: LanguageClient) -> None:
    query = "sum of price times quantity"
    t0 = time.perf_counter()
    try:
        results = await client.workspace_execute_command_async(types.ExecuteCommandParams(
            command="infill.search", arguments=[{"query": query, "limit": 3}]))
    except Exception as exc:
        print(f"== Search (infill.search) ==\n  failed: {exc}\n")
        return
    elapsed = (time.perf_counter() - t0) * 1000
    print(f"== Search (infill.search {query!r}) ==")
    for hit in results or []:
        hit = hit if isinstance(hit, dict) else vars(hit)
        line = hit["range"]["start"]["line"] + 1 if isinstance(hit.get("range"), dict) else "?"
        print(f"  {hit.get('score', 0):.3f}  {Path(hit['uri']).name}:{line}  {hit.get('name')}")
    print(f"  latency: {elapsed:.0f} ms\n", flush=True)
