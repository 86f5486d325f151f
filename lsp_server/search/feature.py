"""Code search over LSP: `infill.search` and `workspace/symbol`, over an index kept fresh in the background.

One worker thread owns every index write, in order: on `initialized` it opens one index per workspace
folder, brings it up to date (keyword search works as soon as a file is chunked), then loads the embedding
model and embeds what is new, reporting counts with cancellable `$/progress`. After that it applies the
queued updates: saves, debounced buffer changes, closes, watched-file events and deletions. A search that
arrives before the first pass has chunked the workspace waits for it (the indexing progress shows how far
it is); after that searches never wait, they rank whatever is indexed. The code model is not needed at all.

`infill.search` takes one argument `{"query": str, "limit": int}` and returns a JSON list of
`{uri, range, name, kind, snippet, score}`, best first.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from lsprotocol import types
from pygls.exceptions import JsonRpcInvalidParams
from pygls.uris import to_fs_path

from lsp_server.feature import AnyEvent, Feature, ProgressReporter
from lsp_server.search.store import MAX_RESULTS, Hit, Index, remove_orphans

log = logging.getLogger(__name__)

SEARCH_COMMAND = "infill.search"
DEFAULT_LIMIT = 20
SYMBOL_LIMIT = 50
DEBOUNCE_SECONDS = 1.0
OPEN_WAIT_SECONDS = 10.0  # a search right after start waits this long at most for the indexes to open
# The embedder's intra-op threads in the server: one, so that indexing leaves a core to the code model and a
# query's embedding does not wait for a second core the model holds (two: indexing 1.5x as fast, but
# workspace/symbol p99 23-28 ms instead of 18-20 while the model computes; loop-latency-2026-12-03.md).
EMBED_THREADS = 1
WATCHER_ID = "infill-search-watcher"

SYMBOL_KINDS = {
    "function": types.SymbolKind.Function, "method": types.SymbolKind.Method, "class": types.SymbolKind.Class,
    "struct": types.SymbolKind.Struct, "interface": types.SymbolKind.Interface, "enum": types.SymbolKind.Enum,
    "type": types.SymbolKind.TypeParameter, "trait": types.SymbolKind.Interface, "impl": types.SymbolKind.Class,
    "module": types.SymbolKind.Module, "namespace": types.SymbolKind.Namespace, "macro": types.SymbolKind.Function,
    "block": types.SymbolKind.Module,
}


def parse_arguments(arguments: tuple) -> tuple[str, int]:
    """`(query, limit)` from the command's arguments; a clear InvalidParams error otherwise."""
    arg = arguments[0] if len(arguments) == 1 else None
    if isinstance(arg, list) and len(arg) == 1:  # some clients wrap the argument list once more
        arg = arg[0]
    if not isinstance(arg, dict) or not isinstance(arg.get("query"), str):
        raise JsonRpcInvalidParams(f'{SEARCH_COMMAND} takes one argument {{"query": str, "limit": int}}')
    limit = arg.get("limit", DEFAULT_LIMIT)
    if limit is None:
        limit = DEFAULT_LIMIT
    if isinstance(limit, bool) or not isinstance(limit, (int, float)) or limit < 1:
        raise JsonRpcInvalidParams(f"{SEARCH_COMMAND}: limit must be a positive number, not {limit!r}")
    return arg["query"], min(int(limit), MAX_RESULTS)


class SearchFeature(Feature):
    """Background indexing and the search requests."""

    def __init__(self, server) -> None:
        super().__init__(server)
        self._indexes: list[Index] = []
        self._jobs: queue.Queue[tuple] = queue.Queue()
        self._worker: threading.Thread | None = None
        self._stop = threading.Event()
        self._timers: dict[str, threading.Timer] = {}
        self._lock = threading.Lock()
        self.idle = threading.Event()  # set whenever the queue is drained (tests and benchmarks wait on it)
        self._opened = threading.Event()  # set once the worker has opened the indexes (or failed to)
        self.chunked = threading.Event()  # set once the first pass has chunked every folder (or given up)

    def register(self) -> None:
        # pygls tags the handler with attributes, which bound methods cannot take: register plain functions.
        async def execute(*arguments: Any) -> list[dict]:
            return await self.execute(*arguments)

        async def workspace_symbol(params: types.WorkspaceSymbolParams):
            return await self.workspace_symbol(params)

        self.server.command(SEARCH_COMMAND)(execute)
        self.server.feature(types.WORKSPACE_SYMBOL)(workspace_symbol)

    # --- requests ------------------------------------------------------------------------------

    async def execute(self, *arguments: Any) -> list[dict]:
        """`infill.search`: ranked results as JSON."""
        query, limit = parse_arguments(arguments)
        await self._index_exists()
        hits = await self.off_loop(self.search, query, limit)
        return [hit.as_dict() for hit in hits]

    async def workspace_symbol(self, params: types.WorkspaceSymbolParams) -> list[types.WorkspaceSymbol]:
        """The same results in the editor's symbol picker (an empty query lists nothing)."""
        if not params.query.strip():
            return []
        await self._index_exists()
        hits = await self.off_loop(self.search, params.query, SYMBOL_LIMIT)
        return [self._symbol(hit) for hit in hits]

    async def _index_exists(self, poll: float = 0.1) -> None:
        """Wait while the first pass is still chunking a workspace no earlier session indexed: an answer from
        half an index (or none) would say "no results" for code that exists. An index left by an earlier
        session answers at once, while it is brought up to date. Cancelling the request stops the wait."""
        while self._worker is not None and not self.chunked.is_set() and not self._has_earlier_index():
            await asyncio.sleep(poll)

    def _has_earlier_index(self) -> bool:
        """Whether the opened indexes already hold files (from an earlier session)."""
        if not self._opened.is_set():
            return False
        try:
            return any(index.counts()[0] for index in list(self._indexes))
        except Exception:  # an index being rebuilt: wait for the pass
            return False

    def search(self, query: str, limit: int) -> list[Hit]:
        """Results from every workspace folder's index, merged by score."""
        if self._worker is not None:  # just started: what an earlier session indexed answers, not nothing
            self._opened.wait(OPEN_WAIT_SECONDS)
        hits: list[Hit] = []
        for index in list(self._indexes):
            try:
                hits.extend(index.search(query, limit))
            except Exception:  # a broken index answers nothing; the others still do
                log.exception("search in %s failed", index.root)
        hits.sort(key=lambda h: -h.score)
        return hits[:limit]

    def _symbol(self, hit: Hit) -> types.WorkspaceSymbol:
        """A hit as the symbol picker shows it: its container is the file's path in its workspace folder.
        Lexical (no `resolve`): the picker converts 50 hits per keystroke, on the event loop."""
        path = Path(hit.path)
        container = next((path.relative_to(i.root).as_posix() for i in self._indexes if path.is_relative_to(i.root)),
                         hit.path)
        rng = types.Range(start=types.Position(hit.start_line, hit.start_char),
                          end=types.Position(hit.end_line, hit.end_char))
        return types.WorkspaceSymbol(name=hit.name, kind=SYMBOL_KINDS.get(hit.kind, types.SymbolKind.Object),
                                     location=types.Location(uri=path.as_uri(), range=rng), container_name=container)

    # --- lifecycle hooks -----------------------------------------------------------------------

    def on_initialized(self) -> None:
        if self.server.settings.index_enable:
            self._start()

    def on_settings(self) -> None:
        if self.server.settings.index_enable:
            self._start()

    def on_save(self, uri: str) -> None:
        self._cancel_timer(uri)
        self._enqueue("file", uri)

    def on_change(self, uri: str, changes: list[types.TextDocumentContentChangeEvent]) -> None:
        """Re-index the buffer once typing pauses."""
        with self._lock:
            old = self._timers.pop(uri, None)
            if old is not None:
                old.cancel()
            timer = threading.Timer(DEBOUNCE_SECONDS, self._enqueue, args=("buffer", uri))
            timer.daemon = True
            self._timers[uri] = timer
        timer.start()

    def on_close(self, uri: str) -> None:
        self._cancel_timer(uri)
        self._enqueue("file", uri)  # the buffer may never have been saved: the disk is the truth again

    def on_watched_files(self, changes: list[types.FileEvent]) -> None:
        for change in changes:
            deleted = change.type == types.FileChangeType.Deleted
            self._enqueue("remove" if deleted else "file", change.uri)

    def on_shutdown(self) -> None:
        """Stop the worker (at the end of the current file or embedding batch)."""
        self._stop.set()
        self._jobs.put(("stop", ""))

    # --- the worker ----------------------------------------------------------------------------

    def _start(self) -> None:
        with self._lock:
            if self._worker is not None:
                return
            self._worker = threading.Thread(target=self._run, name="infill-index", daemon=True)
            self._worker.start()

    def _cancel_timer(self, uri: str) -> None:
        with self._lock:
            timer = self._timers.pop(uri, None)
        if timer is not None:
            timer.cancel()

    def _enqueue(self, kind: str, uri: str) -> None:
        if self._worker is None:
            return  # not indexing (disabled, or not initialized yet): the first full pass will see it
        self.idle.clear()
        self._jobs.put((kind, uri))

    def _roots(self) -> list[Path]:
        workspace = self.server.workspace
        paths = [to_fs_path(uri) for uri in workspace.folders] if workspace.folders else [workspace.root_path]
        return [Path(p).resolve() for p in paths if p and Path(p).is_dir()]

    def _run(self) -> None:
        try:
            self._open_indexes()
            self._register_watcher()  # first: files changed on disk during the first pass are seen too
            self._full_pass()
            while not self._stop.is_set():
                try:
                    job = self._jobs.get(timeout=0.5)
                except queue.Empty:
                    self.idle.set()
                    continue
                if job[0] == "stop":
                    break
                jobs = [job] + self._drain()
                self._apply(jobs)
                if sum(index.embed_pending(cancel=self._stop) for index in self._indexes):
                    self._release_embedder_memory()
                if self._jobs.empty():
                    self.idle.set()
        except Exception:
            log.exception("search indexing stopped")
            self.idle.set()
            self.chunked.set()

    def _drain(self) -> list[tuple]:
        jobs = []
        while True:
            try:
                jobs.append(self._jobs.get_nowait())
            except queue.Empty:
                return jobs

    def _open_indexes(self) -> None:
        """Open (checking, rebuilding if corrupt) every folder's index, so searches answer from it at once."""
        try:
            for root in self._roots():
                try:
                    self._indexes.append(Index(root))
                except Exception:
                    log.exception("cannot open the index of %s", root)
        finally:
            self._opened.set()
        try:
            for path in remove_orphans():
                log.info("removed %s: its workspace no longer exists", path.name)
        except OSError as exc:
            log.info("cannot look for indexes of deleted workspaces: %s", exc)

    def _full_pass(self) -> None:
        """Open every folder's index, chunk what changed, then embed it, with `$/progress`."""
        progress = ProgressReporter(self.server, "infill: indexing", cancellable=True)
        cancel = AnyEvent(progress.cancelled, self._stop)
        t0 = time.perf_counter()
        try:
            for index in self._indexes:
                index.update_all(progress.report, cancel, embed=False)
            self.chunked.set()  # keyword search answers from here on
            embedder = self._load_embedder(progress)
            for index in self._indexes:
                if embedder is not None and not cancel.is_set():
                    index.set_embedder(embedder)
                    index.embed_pending(progress.report, cancel)
            self._release_embedder_memory()
        except Exception as exc:
            log.exception("indexing failed")
            progress.end(f"indexing failed: {exc}")
            return
        finally:
            self.chunked.set()  # failed or cancelled: searches answer from what there is
        files = sum(i.counts()[0] for i in self._indexes)
        chunks = sum(i.counts()[1] for i in self._indexes)
        state = "cancelled" if cancel.is_set() else "indexed"
        progress.end(f"{state} {files} files, {chunks} chunks in {time.perf_counter() - t0:.1f}s")

    def _release_embedder_memory(self) -> None:
        """After a burst of embedding: the buffers it used go back (~50 MB after a workspace's first pass).
        Best effort: if ONNX Runtime refuses, the index and its searches are as good as before."""
        embedder = next((i.embedder for i in self._indexes if i.embedder is not None), None)
        if embedder is None:
            return
        try:
            embedder.release_memory()
        except Exception as exc:
            log.info("the search model kept its working memory: %s", exc)

    def _load_embedder(self, progress: ProgressReporter):
        """The embedding model, or None (keyword search only) when it cannot load."""
        try:
            from inference.embed import Embedder

            return Embedder.load(progress=lambda message: progress.report(message, None), threads=EMBED_THREADS)
        except Exception as exc:
            log.warning("semantic search off, keyword search only: %s", exc)
            self.server.window_log_message(types.LogMessageParams(
                type=types.MessageType.Warning, message=f"infill: semantic search unavailable ({exc})"))
            return None

    def _register_watcher(self) -> None:
        """Ask the client to tell us about file changes made outside the editor (if it can)."""
        if not self.client.watched_files_registration:
            return
        options = types.DidChangeWatchedFilesRegistrationOptions(
            watchers=[types.FileSystemWatcher(glob_pattern="**/*")])
        params = types.RegistrationParams(registrations=[types.Registration(
            id=WATCHER_ID, method=types.WORKSPACE_DID_CHANGE_WATCHED_FILES, register_options=options)])
        try:
            self.server.client_register_capability(params).result(timeout=5)
        except Exception as exc:
            log.info("file watcher registration refused: %s", exc)

    def _apply(self, jobs: list[tuple]) -> None:
        """Apply queued updates; for each file only the last job counts."""
        last: dict[str, str] = {}
        for kind, uri in jobs:
            last[uri] = kind
        for uri, kind in last.items():
            path = to_fs_path(uri)
            if path is None:
                continue
            index = self._index_for(Path(path))
            if index is None:
                continue
            try:
                if kind == "remove" or not Path(path).exists():
                    index.remove_file(path)
                elif kind == "buffer":
                    doc = self.server.workspace.text_documents.get(unquote(uri))
                    index.update_file(path, text=doc.source if doc is not None else None)
                elif Path(path).is_dir():
                    index.update_all(cancel=self._stop, embed=False)
                else:
                    index.update_file(path)
            except Exception:
                log.exception("index update for %s failed", path)

    def _index_for(self, path: Path) -> Index | None:
        path = path.resolve() if path.exists() else path
        matches = [i for i in self._indexes if path.is_relative_to(i.root)]
        return max(matches, key=lambda i: len(str(i.root)), default=None)

