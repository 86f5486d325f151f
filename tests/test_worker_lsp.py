"""The server with its model in a worker process, end to end over JSON-RPC, on a tiny random model.

A worker frozen with SIGSTOP stands for a model that computes for as long as the test likes: the event
loop must answer everything else meanwhile, a cancel must answer at once, a kill must give empty
results and one message, and shutdown must not wait for it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import textwrap
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
import pytest_asyncio
from lsp_support import ROOT, SERVER, wait_for_model
from lsprotocol import types
from pytest_lsp import LanguageClient, client_capabilities, make_test_lsp_client

DOCS = Path(__file__).resolve().parents[1] / "tests" / "_worker_docs"  # never created: documents live in the client
CODE = "import os\n\n\ndef list_files(root):\n    names = []\n    for name in os.listdir(root):\n        "
NOTES = "shopping list\n"


async def start_server(model_dir: Path, cache: Path, command: list[str] = SERVER) -> LanguageClient:
    client = make_test_lsp_client()
    client.feature(types.CLIENT_REGISTER_CAPABILITY)(lambda params: None)
    await client.start_io(*command, env={**os.environ, "INFILL_CACHE_DIR": str(cache)})
    caps = client_capabilities("visual-studio-code")
    caps.text_document.inline_completion = types.InlineCompletionClientCapabilities()
    await client.initialize_session(types.InitializeParams(capabilities=caps, initialization_options={
        "model": str(model_dir), "precision": "fp32", "disabledLanguages": ["plaintext"], "indexEnable": False}))
    await wait_for_model(client)
    return client


def worker_pid(client: LanguageClient) -> int | None:
    for child in psutil.Process(client._server.pid).children():
        try:
            if "inference.worker" in " ".join(child.cmdline()):
                return child.pid
        except psutil.Error:
            continue
    return None


def open_doc(client: LanguageClient, name: str, text: str, language: str) -> str:
    uri = (DOCS / name).as_uri()
    client.text_document_did_open(types.DidOpenTextDocumentParams(
        text_document=types.TextDocumentItem(uri=uri, language_id=language, version=1, text=text)))
    return uri


def inline(client: LanguageClient, uri: str, text: str, msg_id: str | None = None) -> asyncio.Future:
    line = text.count("\n")
    params = types.InlineCompletionParams(
        text_document=types.TextDocumentIdentifier(uri=uri),
        position=types.Position(line=line, character=len(text) - text.rfind("\n") - 1),
        context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Automatic))
    return asyncio.wrap_future(client.protocol.send_request(types.TEXT_DOCUMENT_INLINE_COMPLETION, params,
                                                            msg_id=msg_id))


def items(result) -> list:
    if result is None:
        return []
    return list(result.items if isinstance(result, types.InlineCompletionList) else result)


@pytest_asyncio.fixture
async def server(tiny_model, tiny_cache, qwen_engine):  # qwen_engine: the tiny model is exported already
    client = await start_server(tiny_model("qwen2.5-coder", "qwen2"), tiny_cache)
    yield client
    if client._server.returncode is None:
        pid = worker_pid(client)
        if pid is not None:
            os.kill(pid, signal.SIGCONT)
        await client.shutdown_session()


@pytest.mark.asyncio
async def test_the_event_loop_answers_while_the_model_is_busy(server: LanguageClient) -> None:
    reports = [getattr(v, "message", None) or "" for values in server.progress_reports.values() for v in values
               if isinstance(v, types.WorkDoneProgressReport)]
    assert any(m.startswith("loading ") for m in reports), "the worker's load progress reaches $/progress"
    code = open_doc(server, "busy.py", CODE, "python")
    notes = open_doc(server, "notes.txt", NOTES, "plaintext")
    pid = worker_pid(server)
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)  # the model is now busy for as long as this test wants
    busy_id = f"busy-{uuid.uuid4()}"
    busy = inline(server, code, CODE, msg_id=busy_id)
    await asyncio.sleep(0.3)
    assert not busy.done()

    for version in range(2, 6):  # keystrokes in another document, each with a completion request
        text = NOTES + "x" * (version - 1)
        server.text_document_did_change(types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=notes, version=version),
            content_changes=[types.TextDocumentContentChangeWholeDocument(text=text)]))
        answer = await asyncio.wait_for(inline(server, notes, text), 5)
        assert items(answer) == []
    symbols = await asyncio.wait_for(server.workspace_symbol_async(types.WorkspaceSymbolParams(query="files")), 5)
    assert not symbols
    assert not busy.done(), "the busy request is still waiting for the model"

    server.protocol.notify(types.CANCEL_REQUEST, types.CancelParams(id=busy_id))
    try:
        result = await asyncio.wait_for(busy, 5)
        assert items(result) == []
    except asyncio.TimeoutError:
        pytest.fail("the cancelled request was not answered while the model was busy")
    except Exception as exc:  # RequestCancelled is the expected answer
        assert "cancel" in str(exc).lower()

    os.kill(pid, signal.SIGCONT)
    answer = await asyncio.wait_for(inline(server, code, CODE), 60)  # the model serves again
    assert isinstance(items(answer), list)


@pytest.mark.asyncio
async def test_a_killed_worker_restarts_with_one_message_and_requests_in_flight_answer_empty(
        server: LanguageClient) -> None:
    code = open_doc(server, "killed.py", CODE, "python")
    pid = worker_pid(server)
    os.kill(pid, signal.SIGSTOP)
    pending = inline(server, code, CODE)
    await asyncio.sleep(0.3)
    os.kill(pid, signal.SIGKILL)
    assert items(await asyncio.wait_for(pending, 10)) == [], "an empty result, not an error"

    deadline = time.monotonic() + 60
    while worker_pid(server) in (None, pid) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    assert worker_pid(server) not in (None, pid), "the worker was not restarted"
    answer = None
    while time.monotonic() < deadline:  # once it has loaded, completion works again
        answer = await asyncio.wait_for(inline(server, code, CODE + " "), 30)
        if "restarting" in " ".join(m.message for m in server.messages) and worker_pid(server):
            break
    assert isinstance(items(answer), list)
    warnings = [m for m in server.messages if "model process" in m.message]
    assert len(warnings) == 1 and "restarting" in warnings[0].message


@pytest.mark.asyncio
async def test_shutdown_and_exit_do_not_wait_for_the_model(server: LanguageClient) -> None:
    code = open_doc(server, "shutdown.py", CODE, "python")
    pid = worker_pid(server)
    os.kill(pid, signal.SIGSTOP)  # a generation that would never end
    pending = inline(server, code, CODE)
    await asyncio.sleep(0.3)
    start = time.monotonic()
    await asyncio.wait_for(server.shutdown_session(), 10)
    await asyncio.wait_for(server._server.wait(), 10)
    assert time.monotonic() - start < 5, "shutdown + exit should take about a second at most"
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    pending.cancel()


# The server with the worker's stop (close: stdin closed, wait for the exit, kill after a grace period)
# held until the test creates the file argv[3]; argv[2] is created when it is reached. A worker slow to
# exit, without any test depending on how long anything takes.
HELD_STOP = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    sys.path.insert(0, sys.argv[1])
    import inference.worker as worker
    stop = worker._stop

    def held_stop(proc):
        Path(sys.argv[2]).touch()
        deadline = time.monotonic() + 60  # a bound, so a broken test cannot leave the server hanging
        while not Path(sys.argv[3]).exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        stop(proc)

    worker._stop = held_stop
    from lsp_server.cli import main
    sys.exit(main(["serve"]))
""")


async def until(condition: Callable[[], bool]) -> None:
    while not condition():
        await asyncio.sleep(0.02)


@pytest.mark.asyncio
async def test_the_event_loop_answers_while_shutdown_waits_for_the_worker(tiny_model, tiny_cache, qwen_engine,
                                                                           tmp_path: Path) -> None:
    """`shutdown` closes the model, which waits for the worker process to exit: that wait must not hold
    the event loop. Proven by order, not by time: while the wait is held, a request is answered, and
    `shutdown` is answered only after the wait ends, with the worker gone."""
    reached, release = tmp_path / "stop-reached", tmp_path / "stop-release"
    command = [sys.executable, "-c", HELD_STOP, str(ROOT), str(reached), str(release)]
    client = await start_server(tiny_model("qwen2.5-coder", "qwen2"), tiny_cache, command)
    try:
        pid = worker_pid(client)
        assert pid is not None
        shutdown = asyncio.ensure_future(client.shutdown_async(None))
        try:
            await asyncio.wait_for(until(reached.exists), 60)
            try:
                await asyncio.wait_for(client.workspace_symbol_async(types.WorkspaceSymbolParams(query="x")), 10)
            except asyncio.TimeoutError:
                pytest.fail("no answer while shutdown waited for the worker: the wait holds the event loop")
            assert not shutdown.done(), "shutdown answered before the worker had exited"
        finally:
            release.touch()
        await asyncio.wait_for(shutdown, 30)
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        client.exit(None)
        await asyncio.wait_for(client._server.wait(), 10)
    finally:
        if client._server.returncode is None:
            client._server.kill()
