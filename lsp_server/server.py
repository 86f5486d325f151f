"""The infill language server: the protocol, settings, the model and the features, put together.

Handlers stay thin (the jedi-language-server way): each feature is a `Feature` (see `lsp_server.feature`)
in its own package (`completion`, `edit`, `search`) that owns its state and registers its own handlers;
the work itself lives in those packages' plain modules and in `inference`. This module receives the
document notifications once and fans them out to every feature's hooks.
"""

from __future__ import annotations

import logging

from lsprotocol import types
from pygls.exceptions import JsonRpcException, JsonRpcInvalidParams
from pygls.lsp.server import LanguageServer
from pygls.protocol import LanguageServerProtocol

from lsp_server import __version__
from lsp_server.completion.feature import CompletionFeature
from lsp_server.config import Settings, describe_ignored
from lsp_server.edit.feature import EditFeature
from lsp_server.feature import Feature
from lsp_server.model import ModelService
from lsp_server.search.feature import SearchFeature

log = logging.getLogger(__name__)


class InfillProtocol(LanguageServerProtocol):
    """pygls drops a request whose params do not fit the protocol's types without answering it, and a
    client would wait forever; answer it with InvalidParams instead."""

    def structure_message(self, data):
        try:
            return super().structure_message(data)
        except JsonRpcException:
            if isinstance(data, dict) and "id" in data and "method" in data:
                error = JsonRpcInvalidParams(f"invalid params for {data['method']}")
                self._send_response(data["id"], error=error.to_response_error())
            raise


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
    def on_shutdown(ls: InfillServer, params: None) -> None:
        each("on_shutdown")

    @server.feature(types.WORKSPACE_DID_CHANGE_WATCHED_FILES)
    def did_change_watched(ls: InfillServer, params: types.DidChangeWatchedFilesParams) -> None:
        each("on_watched_files", list(params.changes))

    return server
