"""The model's lifecycle in the server: loaded once, in the background, reloaded when settings name another.

Features ask `ready()` per request and answer empty while it is None, so a client typing during the
first minute (the default model is converted on first use) sees nothing rather than errors. An explicit
action (an edit, an invoked completion) waits instead (`wait_ready`, `until_ready`): the user asked, and
"still loading" would only make them ask again.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from lsprotocol import types

from inference import Backend, Engine, InferenceError
from inference.backend import Cancel
from inference.worker import WorkerBackend
from lsp_server.feature import ProgressReporter

if TYPE_CHECKING:
    from lsp_server.config import Settings
    from lsp_server.server import InfillServer

log = logging.getLogger(__name__)


class ModelService:
    """Loads the engine once, in the background, with `$/progress`; features ask `ready()` per request.

    Requests that arrive before the model is ready get empty results (never an error storm), and a
    settings change that names another model reloads it; the previous model keeps serving until the new
    one is ready, and stays when the new one fails to load (a typo in a setting costs nothing).
    """

    def __init__(self, server: InfillServer) -> None:
        self._server = server
        self._engine: Backend | None = None
        self._loading: threading.Thread | None = None
        self._lock = threading.Lock()
        self.error: str | None = None
        self._loaded_key: tuple | None = None
        self._on_ready: list[Callable[[Backend], None]] = []

    def ready(self) -> Backend | None:
        return self._engine

    def on_ready(self, callback: Callable[[Backend], None]) -> None:
        """Call back (on the loader thread) whenever a model finishes loading."""
        self._on_ready.append(callback)

    def load_in_background(self) -> None:
        key = backend_key(self._server.settings)
        with self._lock:
            if key == self._loaded_key and (self._engine is not None or self._loading is not None):
                return
            self._loaded_key = key
            thread = threading.Thread(target=self._load, args=(key,), name="infill-model", daemon=True)
            self._loading = thread
            thread.start()

    def wait(self, timeout: float | None = None) -> Backend | None:
        thread = self._loading
        if thread is not None:
            thread.join(timeout)
        return self._engine

    def _failed(self, error: str) -> None:
        with self._lock:
            self.error = error
            if self._loading is threading.current_thread():
                self._loading = None  # waiters stop waiting and see the error

    @property
    def loading(self) -> bool:
        """A model is being prepared (the first one, or a replacement)."""
        return self._loading is not None

    def wait_ready(self, cancel: Cancel | None = None, poll: float = 0.1) -> Backend | None:
        """Block (on a worker thread) until a model serves; None when loading failed, nothing is loading,
        or `cancel` is set first."""
        while self._engine is None and self._loading is not None:
            if cancel is not None and cancel.is_set():
                return None
            time.sleep(poll)
        return self._engine

    async def until_ready(self, poll: float = 0.1) -> Backend | None:
        """`wait_ready` for the event loop: cancelling the awaiting request stops the wait."""
        while self._engine is None and self._loading is not None:
            await asyncio.sleep(poll)
        return self._engine

    def _load(self, key: tuple) -> None:
        progress = ProgressReporter(self._server, "infill: preparing model")
        try:
            engine = open_backend(self._server.settings, progress.report, notify=self._warn,
                                  on_problem=self._problem)
        except InferenceError as exc:
            self._failed(str(exc))
            progress.end(f"failed: {exc}")
            self._server.window_show_message(
                types.ShowMessageParams(type=types.MessageType.Error, message=f"infill: {exc}")
            )
            return
        except Exception as exc:  # keep the server alive whatever the loader hits
            log.exception("model load failed")
            self._failed(f"model load failed: {exc}")
            progress.end(f"model load failed: {exc}")
            return
        with self._lock:
            if self._loading is threading.current_thread():
                self._loading = None  # cleared with the engine's arrival: a waiter never sees neither
            if self._loaded_key != key:  # settings changed while loading: this model is stale
                engine.close()
                return
            previous, self._engine = self._engine, engine
            self.error = None
        if previous is not None:
            previous.close()
        progress.end(f"{engine.info.name} ready on {engine.info.device}")
        for callback in self._on_ready:
            try:
                callback(engine)
            except Exception:
                log.exception("on_ready callback failed")

    def _warn(self, message: str) -> None:
        """A message for the user from the backend (its worker process stopped and restarts)."""
        log.warning("%s", message)
        self._server.window_show_message(types.ShowMessageParams(type=types.MessageType.Warning, message=message))

    def close(self) -> None:
        """Free the backend (the server shuts down): its worker process ends, requests in flight end empty.
        Waits for the worker to exit (killed after `inference.worker.EXIT_GRACE_S`): not on the event loop."""
        with self._lock:
            engine, self._engine, self._loaded_key = self._engine, None, None
        if engine is not None:
            engine.close()

    def _problem(self, message: str | None) -> None:
        """A backend that became unusable says so once (a message naming what to do); the next request
        tries it again, and a request that works clears the problem, so the next outage is shown too."""
        self.error = message
        if message is None:
            log.info("backend works again")
            return
        self._server.window_show_message(
            types.ShowMessageParams(type=types.MessageType.Error, message=f"infill: {message}"))


def backend_key(settings: Settings) -> tuple:
    """The settings that decide which backend serves: a change in any of them reloads it."""
    b = settings.backend
    if b.url:
        return ("remote", b.url, b.kind, b.model, b.api_key_env, b.timeout_ms, settings.family)
    return (settings.model, settings.family, settings.device, settings.precision, settings.model_worker)


def open_backend(settings: Settings, progress: Callable[[str, float | None], None], *,
                 notify: Callable[[str], None] | None = None,
                 on_problem: Callable[[str | None], None] | None = None) -> Backend:
    """The backend the settings name: the serving engine at `backend.url` when one is set, else the
    engine on the configured model, in a worker process unless `model_worker` is off. `notify` tells the
    user when the worker stopped and restarts; `on_problem` hears when a remote backend becomes unusable
    (a one-line message) and when it works again (None)."""
    b = settings.backend
    if b.url:
        from inference.remote import RemoteBackend, RemoteConfig

        progress(f"connecting to {b.url}", None)
        return RemoteBackend(RemoteConfig(b.url, b.kind, b.model, b.api_key_env, b.timeout_ms),
                             family=settings.family, on_problem=on_problem)
    if settings.model_worker:
        return WorkerBackend(settings.model, family=settings.family, device=settings.device,
                             precision=settings.precision, progress=progress, notify=notify)
    return Engine.load(settings.model, family=settings.family, device=settings.device,
                       precision=settings.precision, progress=progress)
