"""What every feature builds on: lifecycle hooks, the client's capabilities, progress, work off the loop.

A feature (completion, edit, search) is a class with its own state that registers its own handlers (the
esbonio way). The server owns the document notifications, which pygls lets only one handler receive, and
fans them out to the hooks here. This module needs the server only for type checking, so the features
import it and the server imports the features, without a cycle.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from lsprotocol import types

if TYPE_CHECKING:
    from pygls.lsp.server import LanguageServer

    from lsp_server.server import InfillServer

T = TypeVar("T")


class Feature:
    """One user-visible feature with its own state and lifecycle.

    `register` adds the feature's requests and commands; the `on_*` hooks receive what the server hears
    for every feature. A hook that raises is logged and the others still run.
    """

    def __init__(self, server: InfillServer) -> None:
        self.server = server

    @property
    def client(self) -> ClientCapabilities:
        """What the connected client can do (all False before `initialize`)."""
        return ClientCapabilities(self.server.client_capabilities)

    async def off_loop(self, fn: Callable[..., T], *args: Any) -> T:
        """Run blocking work (the model, the index) on a worker thread: the event loop never waits on it."""
        return await asyncio.to_thread(fn, *args)

    def register(self) -> None:
        """Register this feature's requests and commands on the server."""

    def on_initialized(self) -> None:
        """The client is ready: start background work (indexing, warming)."""

    def on_settings(self) -> None:
        """Settings changed (`server.settings` already holds the new values)."""

    def on_open(self, uri: str) -> None:
        """A document was opened (its text is in the workspace)."""

    def on_change(self, uri: str, changes: list[types.TextDocumentContentChangeEvent]) -> None:
        """A document changed; `changes` say where the user is typing (the workspace holds the new text)."""

    def on_save(self, uri: str) -> None:
        """A document was saved."""

    def on_close(self, uri: str) -> None:
        """A document was closed (the disk is the truth for it again)."""

    def on_watched_files(self, changes: list[types.FileEvent]) -> None:
        """Files changed outside the editor."""

    def on_shutdown(self) -> None:
        """The client asked the server to shut down: stop background work."""


class ClientCapabilities:
    """The few client capabilities the features ask about, as booleans (the raw ones nest four deep)."""

    def __init__(self, caps: types.ClientCapabilities | None) -> None:
        self._caps = caps

    @property
    def snippets(self) -> bool:
        """Completion items may be snippets."""
        doc = self._caps.text_document if self._caps else None
        completion = doc.completion if doc else None
        return bool(completion and completion.completion_item and completion.completion_item.snippet_support)

    @property
    def inline_completion(self) -> bool:
        """The client shows `textDocument/inlineCompletion` as ghost text."""
        return bool(self._caps and self._caps.text_document and self._caps.text_document.inline_completion)

    @property
    def work_done_progress(self) -> bool:
        """The client shows server-initiated `$/progress`."""
        return bool(self._caps and self._caps.window and self._caps.window.work_done_progress)

    @property
    def apply_edit(self) -> bool:
        """The client takes `workspace/applyEdit`."""
        return bool(self._caps and self._caps.workspace and self._caps.workspace.apply_edit)

    @property
    def versioned_edits(self) -> bool:
        """A `WorkspaceEdit` may carry versioned `documentChanges` (assumed unless the client says otherwise)."""
        workspace_edit = self._caps.workspace.workspace_edit if self._caps and self._caps.workspace else None
        return workspace_edit is None or bool(workspace_edit.document_changes)

    @property
    def change_annotations(self) -> bool:
        """A `WorkspaceEdit` may carry change annotations (e.g. `needsConfirmation`: VS Code then shows its
        Refactor Preview before applying)."""
        workspace_edit = self._caps.workspace.workspace_edit if self._caps and self._caps.workspace else None
        return bool(workspace_edit and workspace_edit.change_annotation_support is not None)

    @property
    def watched_files_registration(self) -> bool:
        """The server may register a file watcher dynamically."""
        watched = self._caps.workspace.did_change_watched_files if self._caps and self._caps.workspace else None
        return bool(watched and watched.dynamic_registration)

    def experimental(self, flag: str) -> bool:
        """An infill-specific client flag under `capabilities.experimental`."""
        return bool(self.experimental_value(flag))

    def experimental_value(self, flag: str) -> Any:
        """The raw value of an infill-specific client flag (a flag may carry options: `{"intervalMs": 0}`)."""
        experimental = self._caps.experimental if self._caps else None
        return experimental.get(flag) if isinstance(experimental, dict) else None


class AnyEvent:
    """Set when any of its events is: what the engine and the loops poll between steps.

    Combines a request's cancel with the progress cancel button, or with a server shutdown. `set` sets
    the first event (the request's own).
    """

    def __init__(self, *events: threading.Event) -> None:
        self._events = events

    def is_set(self) -> bool:
        return any(e.is_set() for e in self._events)

    def set(self) -> None:
        self._events[0].set()


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
        if ClientCapabilities(server.client_capabilities).work_done_progress:
            self._token = str(uuid.uuid4())
            try:
                server.work_done_progress.create(self._token).result(timeout=5)
            except Exception:  # the client refused or did not answer: no progress, work goes on
                server.work_done_progress.tokens.pop(self._token, None)
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
        self._server.work_done_progress.tokens.pop(self._token, None)  # pygls keeps every token's future
        self._token = None
