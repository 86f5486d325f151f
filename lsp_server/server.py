"""The infill language server: the protocol, settings, the model and the features, put together.

Handlers stay thin (the jedi-language-server way): each feature is a `Feature` (see `lsp_server.feature`)
in its own package (`completion`, `edit`, `search`) that owns its state and registers its own handlers;
the work itself lives in those packages' plain modules and in `inference`. This module receives the
document notifications once and fans them out to every feature's hooks.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import os
from typing import Any
from urllib.parse import unquote

from lsprotocol import types
from pygls.exceptions import FeatureRequestError, JsonRpcException, JsonRpcInvalidParams
from pygls.lsp.server import LanguageServer
from pygls.protocol import LanguageServerProtocol, lsp_method
from pygls.workspace import TextDocument, Workspace

from lsp_server import __version__
from lsp_server.completion.feature import CompletionFeature
from lsp_server.config import Settings, describe_ignored
from lsp_server.edit.feature import EditFeature
from lsp_server.feature import Feature
from lsp_server.model import ModelService
from lsp_server.positions import _LINE_END, clamped_offset
from lsp_server.search.feature import SearchFeature

log = logging.getLogger(__name__)


class InfillProtocol(LanguageServerProtocol):
    """pygls's protocol with two of its leaks mended: a request whose params do not fit the protocol's
    types is answered with InvalidParams (pygls drops it unanswered, and the client waits forever), and a
    notification's handler is forgotten once it has run (`_handle_notification`)."""

    def _handle_notification(self, method_name: str, params: Any) -> None:
        """pygls 2.1 files every notification handler's future (didOpen, didChange, didClose, ours) in
        `_request_futures` under a fresh id, where only a response or a `$/cancelRequest` would remove it —
        neither comes for a notification. Each keystroke left ~1.3 KB behind: the server process grew 3.5 MB
        per 1,000 requests of the 10,000-request soak, in every window (reliability-2026-12-03.md)."""
        known = set(self._request_futures)
        super()._handle_notification(method_name, params)
        for msg_id in self._request_futures.keys() - known:
            self._request_futures[msg_id].add_done_callback(functools.partial(self._forget, msg_id))

    def _forget(self, msg_id: str | int, _done: object) -> None:
        self._request_futures.pop(msg_id, None)

    def structure_message(self, data):
        try:
            return super().structure_message(data)
        except JsonRpcException:
            if isinstance(data, dict) and "id" in data and "method" in data:
                error = JsonRpcInvalidParams(f"invalid params for {data['method']}")
                self._send_response(data["id"], error=error.to_response_error())
            raise

    @lsp_method(types.INITIALIZE)
    def lsp_initialize(self, params: types.InitializeParams):
        """Always count positions in UTF-16: pygls would pick the client's first choice (Neovim lists
        UTF-8 first), but every position conversion here (`lsp_server.positions`) counts UTF-16 units."""
        if params.capabilities.general is not None:
            params.capabilities.general.position_encodings = None
        return (yield from super().lsp_initialize(params))


class InfillDocument(TextDocument):
    """A document whose incremental changes follow LSP's rules, which pygls 2.0 gets wrong in three ways
    (found by tests/test_fuzz_lsp.py): it splits lines at form feeds, U+2028 and other Unicode breaks that
    LSP does not count, so every position after one lands elsewhere; a character past the end of a line
    lands after the line break (or, on the last line, before the last character) instead of at the line
    end; a range that ends before it starts duplicates text. Here only \\n, \\r\\n and \\r end lines,
    positions past a line's end mean its end, past the last line the document's end, and a reversed range
    is read start-to-end."""

    @property
    def lines(self) -> list[str]:
        source = self.source
        starts = [0] + [m.end() for m in _LINE_END.finditer(source)]
        lines = [source[a:b] for a, b in zip(starts, starts[1:] + [len(source)])]
        return lines if lines[-1] else lines[:-1]

    def _apply_incremental_change(self, change: types.TextDocumentContentChangePartial) -> None:
        text = self.source
        rng = change.range
        start = clamped_offset(text, rng.start.line, rng.start.character)
        end = clamped_offset(text, rng.end.line, rng.end.character)
        start, end = min(start, end), max(start, end)
        self._source = text[:start] + change.text + text[end:]


class InfillWorkspace(Workspace):
    """pygls's workspace, holding `InfillDocument`s."""

    def _create_text_document(self, doc_uri: str, source: str | None = None, version: int | None = None,
                              language_id: str | None = None) -> TextDocument:
        return InfillDocument(doc_uri, source=source, version=version, language_id=language_id,
                              sync_kind=self._sync_kind, position_codec=self._position_codec)


def use_infill_workspace(ls: LanguageServer, params: types.InitializeParams) -> None:
    """Swap the workspace pygls just made on `initialize` for an `InfillWorkspace` (no document is open yet)."""
    old = ls.workspace
    ls.protocol._workspace = InfillWorkspace(old.root_uri, ls._text_document_sync_kind,
                                             params.workspace_folders or [], old.position_encoding)


class InfillServer(LanguageServer):
    """The language server, its settings and its model."""

    def __init__(self) -> None:
        super().__init__("infill", __version__, protocol_cls=InfillProtocol, max_workers=4)
        self.settings = Settings()
        self.model = ModelService(self)
        self.warned_settings: set[str] = set()  # keys already reported: each is said once per server
        self.pending_warnings: list[str] = []  # found in `initialize`, shown once the client is initialized

    def ignored_settings(self, keys: list[str]) -> list[str]:
        """The warnings for ignored keys not reported before (a misspelt key is said once, not per change)."""
        fresh = [key for key in keys if key not in self.warned_settings]
        self.warned_settings.update(fresh)
        for key in fresh:
            log.info("ignored setting %r", key)
        return [describe_ignored(key) for key in fresh]

    def warn(self, message: str) -> None:
        self.window_show_message(types.ShowMessageParams(type=types.MessageType.Warning, message=message))

    def report_server_error(self, error: Exception, source) -> None:
        """pygls pops up "Error in server: …" in the editor for a notification it could not handle (a
        didChange for a document never opened, a malformed message): the client's mistake, not something
        the user can act on. Log it to the client's output instead."""
        log.error("could not handle a client message: %r", error)
        if source is not FeatureRequestError:  # a request's error goes back in its response already
            self.window_log_message(types.LogMessageParams(type=types.MessageType.Error,
                                                           message=f"infill: could not handle a message: {error!r}"))


def create_server() -> InfillServer:
    """Build a server with every feature registered (one server per process or test)."""
    server = InfillServer()
    features: list[Feature] = [cls(server) for cls in (CompletionFeature, EditFeature, SearchFeature)]
    for feature in features:
        feature.register()

    def each(hook: str, *args) -> None:
        for feature in features:
            try:
                getattr(feature, hook)(*args)
            except Exception:  # one feature's bug must not take the others (or the server) down
                log.exception("%s.%s failed", type(feature).__name__, hook)

    @server.feature(types.INITIALIZE)
    def on_initialize(ls: InfillServer, params: types.InitializeParams) -> None:
        use_infill_workspace(ls, params)
        ls.pending_warnings = ls.ignored_settings(ls.settings.update(params.initialization_options or {}))

    @server.feature(types.INITIALIZED)
    def on_initialized(ls: InfillServer, params: types.InitializedParams) -> None:
        for message in ls.pending_warnings:
            ls.warn(message)
        ls.pending_warnings = []
        ls.model.load_in_background()
        each("on_initialized")

    @server.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)
    def on_config(ls: InfillServer, params: types.DidChangeConfigurationParams) -> None:
        for message in ls.ignored_settings(ls.settings.update(params.settings or {})):
            ls.warn(message)
        ls.model.load_in_background()
        each("on_settings")

    @server.feature(types.TEXT_DOCUMENT_DID_OPEN)
    def did_open(ls: InfillServer, params: types.DidOpenTextDocumentParams) -> None:
        each("on_open", params.text_document.uri)

    @server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
    def did_change(ls: InfillServer, params: types.DidChangeTextDocumentParams) -> None:
        each("on_change", params.text_document.uri, list(params.content_changes))

    @server.feature(types.TEXT_DOCUMENT_DID_SAVE)
    def did_save(ls: InfillServer, params: types.DidSaveTextDocumentParams) -> None:
        each("on_save", params.text_document.uri)

    @server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(ls: InfillServer, params: types.DidCloseTextDocumentParams) -> None:
        each("on_close", params.text_document.uri)

    @server.feature(types.SHUTDOWN)
    async def on_shutdown(ls: InfillServer, params: None) -> None:
        each("on_shutdown")
        # The model's worker process ends now, not after a generation in flight. Closing waits for it to
        # exit (or kills it): on a thread, so the loop answers what arrives meanwhile, and `shutdown` is
        # answered once no child is left, so `exit` never leaves one behind.
        await asyncio.to_thread(ls.model.close)

    @server.feature(types.WORKSPACE_DID_CHANGE_WATCHED_FILES)
    def did_change_watched(ls: InfillServer, params: types.DidChangeWatchedFilesParams) -> None:
        each("on_watched_files", list(params.changes))

    if os.environ.get("INFILL_TEST_HOOKS") == "1":
        @server.feature("infill/_document")
        def document_digest(ls: InfillServer, params) -> dict | None:
            """The server's view of a document, for tests that compare it with the client's (test-only)."""
            uri = params.get("uri") if isinstance(params, dict) else getattr(params, "uri", None)
            doc = ls.workspace.text_documents.get(unquote(uri)) if isinstance(uri, str) else None
            if doc is None:
                return None
            data = doc.source.encode("utf-8", "surrogatepass")
            return {"version": doc.version, "length": len(doc.source), "sha256": hashlib.sha256(data).hexdigest()}

    return server
