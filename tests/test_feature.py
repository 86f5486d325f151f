"""The feature base: the server fans notifications out to every feature's hooks, once, and reads the
client's capabilities for them."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future
from types import SimpleNamespace

import pytest
from lsprotocol import types

from lsp_server.completion.feature import CompletionFeature
from lsp_server.edit.feature import EditFeature
from lsp_server.feature import AnyEvent, ClientCapabilities, ProgressReporter
from lsp_server.search.feature import SearchFeature
from lsp_server.server import create_server

FEATURES = (CompletionFeature, EditFeature, SearchFeature)


def record(monkeypatch: pytest.MonkeyPatch, hook: str) -> list[tuple]:
    calls: list[tuple] = []
    for cls in FEATURES:
        monkeypatch.setattr(cls, hook, lambda self, *args, name=cls.__name__: calls.append((name, *args)))
    return calls


def test_lsp_shutdown_reaches_every_feature(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = record(monkeypatch, "on_shutdown")
    server = create_server()
    asyncio.run(server.protocol.fm.features[types.SHUTDOWN](None))  # async: the model closes off the loop
    assert sorted(calls) == [("CompletionFeature",), ("EditFeature",), ("SearchFeature",)]


def test_a_change_notification_calls_on_change_once_per_feature_with_its_changes(monkeypatch) -> None:
    calls = record(monkeypatch, "on_change")
    server = create_server()
    change = types.TextDocumentContentChangeWholeDocument(text="x = 1\n")
    params = types.DidChangeTextDocumentParams(
        text_document=types.VersionedTextDocumentIdentifier(uri="file:///a.py", version=2), content_changes=[change])
    server.protocol.fm.features[types.TEXT_DOCUMENT_DID_CHANGE](params)
    assert sorted(calls) == [(name, "file:///a.py", [change]) for name in
                             ("CompletionFeature", "EditFeature", "SearchFeature")]


def test_client_capabilities_default_to_nothing_but_versioned_edits() -> None:
    caps = ClientCapabilities(None)
    assert not (caps.snippets or caps.inline_completion or caps.work_done_progress or caps.apply_edit
                or caps.watched_files_registration or caps.experimental("infillEditWithInstruction"))
    assert caps.versioned_edits


def test_client_capabilities_read_what_the_client_says() -> None:
    caps = ClientCapabilities(types.ClientCapabilities(
        workspace=types.WorkspaceClientCapabilities(
            apply_edit=True, workspace_edit=types.WorkspaceEditClientCapabilities(document_changes=False),
            did_change_watched_files=types.DidChangeWatchedFilesClientCapabilities(dynamic_registration=True)),
        text_document=types.TextDocumentClientCapabilities(
            completion=types.CompletionClientCapabilities(
                completion_item=types.ClientCompletionItemOptions(snippet_support=True)),
            inline_completion=types.InlineCompletionClientCapabilities()),
        window=types.WindowClientCapabilities(work_done_progress=True),
        experimental={"infillEditWithInstruction": True, "infillEditStream": {"intervalMs": 0}}))
    assert caps.snippets and caps.inline_completion and caps.work_done_progress and caps.apply_edit
    assert caps.watched_files_registration and caps.experimental("infillEditWithInstruction")
    assert not caps.versioned_edits and not caps.experimental("other")
    assert caps.experimental_value("infillEditStream") == {"intervalMs": 0}  # a flag may carry options
    assert caps.experimental_value("other") is None and ClientCapabilities(None).experimental_value("x") is None


def test_any_event_is_set_by_any_and_sets_the_first() -> None:
    first, second = threading.Event(), threading.Event()
    either = AnyEvent(first, second)
    assert not either.is_set()
    second.set()
    assert either.is_set() and not first.is_set()
    second.clear()
    either.set()
    assert first.is_set() and either.is_set()


def test_notifications_and_progress_leave_nothing_behind(monkeypatch: pytest.MonkeyPatch) -> None:
    """pygls 2.1 keeps every notification handler's future (pygls's own generator handlers such as didChange,
    and async ones such as ours) waiting for a response that never comes, and every progress token's: one
    left behind per keystroke, the server's slow growth in the 10,000-request soak."""
    server = create_server()
    proto = server.protocol
    seen: list[int] = []

    @server.feature("infill/testNotification")
    async def note(params) -> None:
        seen.append(params)

    async def notify() -> None:
        for i in range(50):
            proto._handle_notification(types.SET_TRACE, types.SetTraceParams(value=types.TraceValue.Off))
            proto._handle_notification("infill/testNotification", i)
        for _ in range(5):
            await asyncio.sleep(0.01)

    asyncio.run(notify())
    assert len(seen) == 50 and proto._request_futures == {}

    monkeypatch.setattr(proto, "_send_data", lambda data: None)  # no client: progress goes nowhere
    proto.client_capabilities = types.ClientCapabilities(
        window=types.WindowClientCapabilities(work_done_progress=True))
    monkeypatch.setattr(server.work_done_progress, "create",
                        lambda token: _answered(server.work_done_progress.tokens, token))
    progress = ProgressReporter(server, "indexing")
    progress.report("half", 0.5)
    progress.end("done")
    assert server.work_done_progress.tokens == {} and not progress.cancelled.is_set()


def _answered(tokens: dict, token: str) -> Future:
    """`window/workDoneProgress/create` as a client answers it: pygls files the token's future first."""
    tokens[token] = Future()
    done: Future = Future()
    done.set_result(None)
    return done


def test_search_gives_the_models_memory_back_and_a_refusal_does_not_stop_indexing() -> None:
    """After a burst of embedding the search feature asks its model to hand its buffers back; that is memory
    hygiene, so an ONNX Runtime that refuses must not end the indexer's thread (it would stop re-indexing)."""
    class Embedder:
        def __init__(self, fails: bool) -> None:
            self.fails, self.calls = fails, 0

        def release_memory(self) -> None:
            self.calls += 1
            if self.fails:
                raise RuntimeError("arena shrinkage not supported")

    feature = SearchFeature(create_server())
    for fails in (False, True):
        embedder = Embedder(fails)
        feature._indexes = [SimpleNamespace(embedder=None), SimpleNamespace(embedder=embedder)]  # type: ignore[list-item]
        feature._release_embedder_memory()
        assert embedder.calls == 1
