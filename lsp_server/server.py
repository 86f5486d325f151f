"""The infill language server: capabilities, settings, the model's lifecycle, and the features.

Handlers stay thin (the jedi-language-server way): each feature is a class in ``lsp_server.features``
that owns its state and registers its own handlers; the work itself lives in plain modules
(``context``, ``postprocess``, ``index``) and in ``inference``.
"""

from __future__ import annotations

import logging
import threading
import uuid
from typing import Callable

from lsprotocol import types
from pygls.exceptions import JsonRpcException, JsonRpcInvalidParams
from pygls.lsp.server import LanguageServer
from pygls.protocol import LanguageServerProtocol

from inference import Engine, InferenceError
from lsp_server import __version__
from lsp_server.config import Settings

log = logging.getLogger(__name__)


class ModelService:
    """Loads the engine once, in the background, with `$/progress`; features ask `ready()` per request.

    Requests that arrive before the model is ready get empty results (never an error storm), and a
    settings change that names another model reloads it; the previous model keeps serving until the new
    one is ready, and stays when the new one fails to load (a typo in a setting costs nothing).
    """

    def __init__(self, server: "InfillServer") -> None:
        self._server = server
        self._engine: Engine | None = None
        self._loading: threading.Thread | None = None
        self._lock = threading.Lock()
        self.error: str | None = None
        self._loaded_key: tuple | None = None
        self._on_ready: list[Callable[[Engine], None]] = []

    def ready(self) -> Engine | None:
        return self._engine

    def on_ready(self, callback: Callable[[Engine], None]) -> None:
        """Call back (on the loader thread) whenever a model finishes loading."""
        self._on_ready.append(callback)

    def load_in_background(self) -> None:
        s = self._server.settings
        key = (s.model, s.family, s.device, s.precision)
        with self._lock:
            if key == self._loaded_key and (self._engine is not None or self._loading is not None):
                return
            self._loaded_key = key
            self._loading = threading.Thread(target=self._load, args=(key,), name="infill-model", daemon=True)
            self._loading.start()

    def wait(self, timeout: float | None = None) -> Engine | None:
        thread = self._loading
        if thread is not None:
            thread.join(timeout)
        return self._engine

    def _load(self, key: tuple) -> None:
        model, family, device, precision = key
        progress = ProgressReporter(self._server, "infill: preparing model")
        try:
            engine = Engine.load(model, family=family, device=device, precision=precision, progress=progress.report)
        except InferenceError as exc:
            self.error = str(exc)
            progress.end(f"failed: {exc}")
            self._server.window_show_message(
                types.ShowMessageParams(type=types.MessageType.Error, message=f"infill: {exc}")
            )
            return
        except Exception as exc:  # keep the server alive whatever the loader hits
            log.exception("model load failed")
            self.error = f"model load failed: {exc}"
            progress.end(self.error)
            return
        finally:
            self._loading = None
        with self._lock:
            if self._loaded_key != key:  # settings changed while loading: this model is stale
                return
            self._engine = engine
            self.error = None
        progress.end(f"{engine.info.name} ready on {engine.info.device}")
        for callback in self._on_ready:
            try:
                callback(engine)
            except Exception:
                log.exception("on_ready callback failed")


class ProgressReporter:
    """Work-done progress that degrades to nothing when the client does not support it.

    Create it on a worker thread, never on the event loop: creating the token waits for the client's
    answer, which the event loop itself must read. Reporting is safe from any thread.
    """

    def __init__(self, server: LanguageServer, title: str, cancellable: bool = False) -> None:
        self._server = server
        self._title = title
        self._token: str | None = None
        self._cancellable = cancellable
        self.cancelled = threading.Event()
        caps = server.client_capabilities
        if caps and caps.window and caps.window.work_done_progress:
            self._token = str(uuid.uuid4())
            try:
                server.work_done_progress.create(self._token).result(timeout=5)
            except Exception:  # the client refused or did not answer: no progress, work goes on
                self._token = None
        if self._token is not None:
            server.work_done_progress.begin(
                self._token, types.WorkDoneProgressBegin(title=title, cancellable=cancellable, percentage=0)
            )
            # pygls cancels this future when the client sends window/workDoneProgress/cancel.
            server.work_done_progress.tokens[self._token].add_done_callback(lambda _f: self.cancelled.set())

    def report(self, message: str, fraction: float | None = None) -> None:
        if self._token is None:
            return
        percentage = None if fraction is None else max(0, min(100, int(fraction * 100)))
        self._server.work_done_progress.report(
            self._token, types.WorkDoneProgressReport(message=message, percentage=percentage)
        )

    def end(self, message: str) -> None:
        if self._token is None:
            return
        self._server.work_done_progress.end(self._token, types.WorkDoneProgressEnd(message=message))
        self._token = None


class Feature:
    """One user-visible feature with its own state and lifecycle (the esbonio way).

    `register` adds the feature's own requests and commands. Document notifications can have only one
    handler in pygls, so the server receives them once and fans them out to these hooks.
    """

    def __init__(self, server: "InfillServer") -> None:
        self.server = server

    def register(self) -> None:
        """Register this feature's requests and commands on the server."""

    def on_initialized(self) -> None:
        """The client is ready: start background work (indexing, warming)."""

    def on_settings(self) -> None:
        """Settings changed (`server.settings` already holds the new values)."""

    def on_open(self, uri: str) -> None: ...

    def on_change(self, uri: str) -> None: ...

    def on_edit(self, uri: str, changes: list) -> None:
        """The same change as `on_change`, with its content changes (where the user is typing)."""

    def on_save(self, uri: str) -> None: ...

    def on_close(self, uri: str) -> None: ...

    def on_watched_files(self, changes: list[types.FileEvent]) -> None: ...


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


def create_server() -> InfillServer:
    """Build a server with every feature registered (one server per process or test)."""
    from lsp_server.features.completion import CompletionFeature
    from lsp_server.features.edit import EditFeature
    from lsp_server.features.search import SearchFeature

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
        ignored = ls.settings.update(params.initialization_options or {})
        if ignored:
            log.info("ignored settings: %s", ignored)

    @server.feature(types.INITIALIZED)
    def on_initialized(ls: InfillServer, params: types.InitializedParams) -> None:
        ls.model.load_in_background()
        each("on_initialized")

    @server.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)
    def on_config(ls: InfillServer, params: types.DidChangeConfigurationParams) -> None:
        ignored = ls.settings.update(params.settings or {})
        if ignored:
            ls.window_log_message(
                types.LogMessageParams(type=types.MessageType.Info, message=f"infill: ignored settings {ignored}")
            )
        ls.model.load_in_background()
        each("on_settings")

    @server.feature(types.TEXT_DOCUMENT_DID_OPEN)
    def did_open(ls: InfillServer, params: types.DidOpenTextDocumentParams) -> None:
        each("on_open", params.text_document.uri)

    @server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
    def did_change(ls: InfillServer, params: types.DidChangeTextDocumentParams) -> None:
        each("on_change", params.text_document.uri)
        each("on_edit", params.text_document.uri, list(params.content_changes))

    @server.feature(types.TEXT_DOCUMENT_DID_SAVE)
    def did_save(ls: InfillServer, params: types.DidSaveTextDocumentParams) -> None:
        each("on_save", params.text_document.uri)

    @server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(ls: InfillServer, params: types.DidCloseTextDocumentParams) -> None:
        each("on_close", params.text_document.uri)

    @server.feature(types.WORKSPACE_DID_CHANGE_WATCHED_FILES)
    def did_change_watched(ls: InfillServer, params: types.DidChangeWatchedFilesParams) -> None:
        each("on_watched_files", list(params.changes))

    return server
