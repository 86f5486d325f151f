"""Code search end to end: a real pytest-lsp client drives the real server over a fixture workspace.

The server indexes the workspace on `initialized` (with `$/progress`), answers `infill.search` and
`workspace/symbol`, and follows edits: a buffer change (debounced), a file created on disk, a file deleted.
The real embedding model is used; the code model is not needed (the server loads it in the background,
search never waits for it). The index lives in a temporary directory (INFILL_INDEX_DIR).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
import pytest_lsp
from lsprotocol import types
from pygls.exceptions import JsonRpcException
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities

ROOT = Path(__file__).resolve().parents[1]
SERVER = [sys.executable, "-c",
          f"import sys; sys.path.insert(0, {str(ROOT)!r}); from lsp_server.cli import main; sys.exit(main(['serve']))"]
TMP = Path(tempfile.mkdtemp(prefix="infill-search-e2e-"))
WORKSPACE = TMP / "workspace"
INDEX_DIR = TMP / "index"
INDEX_TIMEOUT = 180  # the first run on a machine exports the embedding model (~15 s of a busy CPU)

FILES = {
    "app/config.py": '''
        import json


        def parseConfig(path):
            with open(path) as fh:
                return json.load(fh)


        class Mailer:
            def send_email(self, to, body):
                self.smtp.sendmail(to, body)
        ''',
    "app/geometry.py": '''
        import math


        def distance(a, b):
            return math.hypot(a.x - b.x, a.y - b.y)
        ''',
    "web/render.ts": '''
        export function renderPage(title: string): string {
          return `<h1>${title}</h1>`;
        }
        ''',
    "web/legacy.js": '''
        function oldTimerHelper(callback) {
          return setTimeout(callback, 1000);
        }
        ''',
    ".gitignore": "ignored/\n",
    "ignored/hidden.py": "def secret_hidden_function():\n    pass\n",
}

pytestmark = [pytest.mark.e2e]


def _make_workspace() -> None:
    for rel, text in FILES.items():
        path = WORKSPACE / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"))


_make_workspace()
CONFIG = ClientServerConfig(server_command=SERVER, server_env={**os.environ, "INFILL_INDEX_DIR": str(INDEX_DIR)})


@pytest_lsp.fixture(config=CONFIG, scope="module")
async def client(lsp_client: LanguageClient):
    registrations: list[types.Registration] = []

    @lsp_client.feature(types.CLIENT_REGISTER_CAPABILITY)
    def register(params: types.RegistrationParams) -> None:
        registrations.extend(params.registrations)

    lsp_client.registrations = registrations  # type: ignore[attr-defined]
    await lsp_client.initialize_session(types.InitializeParams(
        capabilities=client_capabilities("visual-studio-code"),
        workspace_folders=[types.WorkspaceFolder(uri=WORKSPACE.as_uri(), name="workspace")]))
    yield
    await lsp_client.shutdown_session()
    shutil.rmtree(TMP, ignore_errors=True)


async def search(client: LanguageClient, query, limit=10) -> list[dict]:
    return await client.workspace_execute_command_async(types.ExecuteCommandParams(
        command="infill.search", arguments=[{"query": query, "limit": limit}]))


async def wait_for_index(client: LanguageClient) -> str:
    """The end message of the server's indexing `$/progress`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + INDEX_TIMEOUT
    while loop.time() < deadline:
        for values in list(client.progress_reports.values()):
            if values and isinstance(values[0], types.WorkDoneProgressBegin) and values[0].title == "infill: indexing":
                end = next((v for v in values if isinstance(v, types.WorkDoneProgressEnd)), None)
                if end is not None:
                    return end.message or ""
        await asyncio.sleep(0.2)
    pytest.fail("indexing did not finish")


async def eventually(client: LanguageClient, query: str, check, timeout: float = 30) -> list[dict]:
    """Search until `check(results)` holds (updates are asynchronous and debounced)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        results = await search(client, query)
        if check(results) or loop.time() > deadline:
            return results
        await asyncio.sleep(0.3)


def names(results: list[dict]) -> list[str]:
    return [r["name"] for r in results]


@pytest.mark.asyncio(loop_scope="module")
async def test_indexes_on_initialized_with_progress(client: LanguageClient) -> None:
    message = await wait_for_index(client)
    assert message.startswith("indexed 4 files"), message  # .gitignore'd folder left out
    reports = [v for values in client.progress_reports.values() for v in values
               if isinstance(v, types.WorkDoneProgressReport)]
    assert any("embedded" in (getattr(r, "message", None) or "") for r in reports)
    assert any(r.method == types.WORKSPACE_DID_CHANGE_WATCHED_FILES 
               for r in client.registrations)  # type: ignore[attr-defined]


@pytest.mark.asyncio(loop_scope="module")
async def test_search_returns_ranked_locations(client: LanguageClient) -> None:
    await wait_for_index(client)
    results = await search(client, "parse config", 5)
    top = results[0]
    assert set(top) >= {"uri", "range", "name", "kind", "snippet", "score"}
    assert (top["name"], top["kind"]) == ("parseConfig", "function")
    assert top["uri"] == (WORKSPACE / "app/config.py").as_uri()
    assert top["range"]["start"] == {"line": 3, "character": 0}
    assert top["snippet"].startswith("def parseConfig(path):")
    assert [r["score"] for r in results] == sorted((r["score"] for r in results), reverse=True)
    assert len(results) <= 5
    assert names(await search(client, "how far apart are two points"))[0] == "distance"
    assert names(await search(client, "Mailer.send_email"))[0] == "Mailer.send_email"
    assert "secret_hidden_function" not in names(await search(client, "secret hidden function"))


@pytest.mark.asyncio(loop_scope="module")
async def test_workspace_symbol_merges_search(client: LanguageClient) -> None:
    await wait_for_index(client)
    symbols = await client.workspace_symbol_async(types.WorkspaceSymbolParams(query="send an email"))
    top = symbols[0]
    assert (top.name, top.kind, top.container_name) == ("Mailer.send_email", types.SymbolKind.Method, "app/config.py")
    assert top.location.uri == (WORKSPACE / "app/config.py").as_uri()
    # the picker asks as the user types: a half-typed name already finds it
    typed = await client.workspace_symbol_async(types.WorkspaceSymbolParams(query="parseCon"))
    assert typed[0].name == "parseConfig"
    assert await client.workspace_symbol_async(types.WorkspaceSymbolParams(query="")) == []


@pytest.mark.asyncio(loop_scope="module")
async def test_bad_queries(client: LanguageClient) -> None:
    await wait_for_index(client)
    assert await search(client, "") == []
    assert await search(client, "?!.;:()[]{}") == []
    assert isinstance(await search(client, "config " * 1500), list)  # 10,000 characters
    for arguments in ([], [{"limit": 3}], [{"query": 42}], [{"query": "x", "limit": -1}], ["just a string"]):
        with pytest.raises(JsonRpcException):
            await client.workspace_execute_command_async(
                types.ExecuteCommandParams(command="infill.search", arguments=arguments))


@pytest.mark.asyncio(loop_scope="module")
async def test_edit_then_search_sees_the_change(client: LanguageClient) -> None:
    await wait_for_index(client)
    path = WORKSPACE / "app/geometry.py"
    uri = path.as_uri()
    text = path.read_text()
    client.text_document_did_open(types.DidOpenTextDocumentParams(
        text_document=types.TextDocumentItem(uri=uri, language_id="python", version=1, text=text)))
    edited = text + "\n\ndef compute_checksum(data):\n    return sum(data) % 256\n"
    client.text_document_did_change(types.DidChangeTextDocumentParams(
        text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=2),
        content_changes=[types.TextDocumentContentChangeWholeDocument(text=edited)]))
    results = await eventually(client, "compute checksum", lambda r: r and r[0]["name"] == "compute_checksum")
    assert results[0]["name"] == "compute_checksum" and results[0]["uri"] == uri
    assert results[0]["range"]["start"]["line"] == edited.split("\n").index("def compute_checksum(data):")

    # closing without saving: the index goes back to what is on disk
    client.text_document_did_close(types.DidCloseTextDocumentParams(text_document=types.TextDocumentIdentifier(uri=uri)))
    results = await eventually(client, "compute checksum", lambda r: "compute_checksum" not in names(r))
    assert "compute_checksum" not in names(results)


@pytest.mark.asyncio(loop_scope="module")
async def test_created_and_deleted_files(client: LanguageClient) -> None:
    await wait_for_index(client)
    created = WORKSPACE / "app/zipper.py"
    created.write_text("def compress_archive(paths, target):\n    return len(paths)\n")
    client.workspace_did_change_watched_files(types.DidChangeWatchedFilesParams(changes=[
        types.FileEvent(uri=created.as_uri(), type=types.FileChangeType.Created)]))
    results = await eventually(client, "compress archive", lambda r: r and r[0]["name"] == "compress_archive")
    assert results[0]["name"] == "compress_archive"

    legacy = WORKSPACE / "web/legacy.js"
    assert "oldTimerHelper" in names(await search(client, "old timer helper"))
    legacy.unlink()
    client.workspace_did_change_watched_files(types.DidChangeWatchedFilesParams(changes=[
        types.FileEvent(uri=legacy.as_uri(), type=types.FileChangeType.Deleted)]))
    results = await eventually(client, "old timer helper", lambda r: "oldTimerHelper" not in names(r))
    assert "oldTimerHelper" not in names(results)
    assert all(r["uri"] != legacy.as_uri() for r in results)


FRESH = ClientServerConfig(server_command=SERVER,
                           server_env={**os.environ, "INFILL_INDEX_DIR": str(TMP / "fresh-index")})


@pytest_lsp.fixture(config=FRESH)
async def fresh_client(lsp_client: LanguageClient):
    """A server that has just started on the workspace with no index yet."""
    lsp_client.feature(types.CLIENT_REGISTER_CAPABILITY)(lambda params: None)
    await lsp_client.initialize_session(types.InitializeParams(
        capabilities=client_capabilities("visual-studio-code"),
        workspace_folders=[types.WorkspaceFolder(uri=WORKSPACE.as_uri(), name="workspace")]))
    yield
    await lsp_client.shutdown_session()


@pytest.mark.asyncio
async def test_search_before_the_first_index_pass_waits_for_it(fresh_client: LanguageClient) -> None:
    """Asked at once, before any index exists, the search waits for the first pass instead of answering
    "no results" for code that is there."""
    assert not any(isinstance(v, types.WorkDoneProgressEnd) for values in fresh_client.progress_reports.values()
                   for v in values if getattr(values[0], "title", "") == "infill: indexing")
    assert "parseConfig" in names(await search(fresh_client, "parseConfig"))
    symbols = await fresh_client.workspace_symbol_async(types.WorkspaceSymbolParams(query="renderPage"))
    assert symbols and symbols[0].name == "renderPage"
