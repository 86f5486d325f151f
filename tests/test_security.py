"""Security properties, each proven: search stays inside the workspace, the index and the model cache are
user-only, chat templates run sandboxed, nothing reaches the network by default.

(Pickled model files are refused in tests/test_engine.py; generated code runs only in benchmarks/sandbox.py,
tests/test_fim_quality.py.)
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import WalledWorkspace, write
from fake_server import FakeServer, event, stream_start
from lsp_support import SERVER, wait_for_model
from lsprotocol import types
from pytest_lsp import client_capabilities, make_test_lsp_client

from inference.cache import build_atomically, write_verified
from lsp_server.search.store import Index

ROOT = Path(__file__).resolve().parents[1]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- search never leaves the workspace ------------------------------------------------------------------

def test_search_never_indexes_or_returns_files_outside_the_workspace(walled_workspace: WalledWorkspace,
                                                                      tmp_path: Path) -> None:
    """Every way out of the workspace or into what it hides (`walled_workspace`), each holding a unique word
    that must never be found — by a full pass, by single-file events and by editor buffers."""
    ws = walled_workspace.root
    index = Index(ws, tmp_path / "index.sqlite3")
    index.update_all()
    # single-file events and buffers, as the server receives them
    for rel in walled_workspace.hidden:
        path = ws / rel
        index.update_file(path)
        index.update_file(path, text=path.read_text(errors="replace") if path.exists() else "def leaked():\n  pass\n")
    index.update_file(ws / ".." / "outside" / "buffer.py", text="def leaked_buffer_outside():\n    pass\n")
    index.update_file(ws / "big_buffer.py", text="def leaked_big_buffer():\n    pass\n" + "y = 2\n" * 300_000)

    paths = sorted(row[0] for row in index._conn.execute("SELECT path FROM files"))
    assert paths == [str(ws / rel) for rel in walled_workspace.visible]
    assert [h.name for h in index.search("visible function")] == ["visible_function"]
    for word in {*walled_workspace.hidden.values(), "leaked_buffer_outside", "leaked_big_buffer", "leaked"}:
        assert index.search(word) == [], word


# --- user-only files -----------------------------------------------------------------------------------

@pytest.fixture
def open_umask():
    old = os.umask(0o022)  # the usual default: files 0644, directories 0755
    yield
    os.umask(old)


def test_index_database_is_user_only(tmp_path: Path, open_umask) -> None:
    ws = write(tmp_path, "ws/a.py", "def a():\n    pass\n").parent
    db = tmp_path / "cache" / "index" / "ws.sqlite3"
    index = Index(ws, db)
    index.update_all()
    for directory in (tmp_path / "cache", tmp_path / "cache" / "index"):
        assert mode(directory) == 0o700, directory
    written = [p for p in db.parent.iterdir()]
    assert {p.name for p in written} >= {"ws.sqlite3", "ws.sqlite3-wal", "ws.sqlite3-shm"}
    for path in written:
        assert mode(path) == 0o600, path
    index.close()


def test_index_made_open_by_an_older_version_is_tightened(tmp_path: Path, open_umask, monkeypatch) -> None:
    ws = write(tmp_path, "ws/a.py", "def a():\n    pass\n").parent
    index_dir = tmp_path / "index"
    monkeypatch.setenv("INFILL_INDEX_DIR", str(index_dir))
    index_dir.mkdir()
    index_dir.chmod(0o755)
    first = Index(ws)
    first.close()
    first.db_path.chmod(0o644)
    Index(ws).close()
    assert mode(index_dir) == 0o700 and mode(first.db_path) == 0o600
    # a database put in a folder of the caller's choosing: the file is private, the folder left as it is
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o755)
    Index(ws, shared / "db.sqlite3").close()
    assert mode(shared) == 0o755 and mode(shared / "db.sqlite3") == 0o600


def test_model_cache_is_user_only(tmp_path: Path, open_umask) -> None:
    cache = tmp_path / "cache"

    def build(tmp: Path) -> None:  # a converter writing with the process umask
        (tmp / "model.onnx").write_bytes(b"weights")
        (tmp / "sub").mkdir()
        (tmp / "sub" / "config.json").write_text("{}")

    target = build_atomically(cache / "models" / "m-1234", build)
    for directory in (cache, cache / "models", target, target / "sub"):
        assert mode(directory) == 0o700, directory
    for path in [p for p in target.rglob("*") if p.is_file()]:
        assert mode(path) == 0o600, path
    import hashlib

    data = b"gguf bytes"
    part = write_verified(cache / "gguf" / "m.gguf", [data], size=len(data), sha256=hashlib.sha256(data).hexdigest())
    assert mode(part) == 0o600 and mode(part.parent) == 0o700


# --- chat templates run sandboxed ------------------------------------------------------------------------

def test_chat_template_attribute_access_is_refused(qwen_engine, tmp_path: Path) -> None:
    """A model's template is code from whoever shipped the model: rendered in Jinja's sandbox, a template
    reaching for Python internals is refused with a clear error, and nothing runs."""
    from inference import InferenceError
    from inference.tokenizer import read_chat_template

    marker = tmp_path / "pwned"
    (tmp_path / "chat_template.jinja").write_text(
        "{{ messages.__class__.__mro__[1].__subclasses__() }}"
        "{{ cycler.__init__.__globals__.os.system('touch " + str(marker) + "') }}")
    evil = read_chat_template(tmp_path)
    benign = qwen_engine._chat_template
    try:
        qwen_engine._chat_template = evil
        with pytest.raises(InferenceError, match="(?i)chat template.*refused.*unsafe"):
            qwen_engine.chat_prompt([{"role": "user", "content": "hi"}])
    finally:
        qwen_engine._chat_template = benign
    assert not marker.exists()


# --- no network by default --------------------------------------------------------------------------------

# Loaded into every Python process of the run through PYTHONPATH (server, client, converters): refuses and
# records any connection or name lookup that is not loopback or a local socket. With INFILL_NETGUARD_ONLY
# set to "host:port", that address alone is allowed and every attempt is recorded, allowed or not.
# (`socket.create_connection` and `urllib` go through `getaddrinfo` and `socket.connect`.)
NETGUARD = textwrap.dedent('''
    import errno, ipaddress, os, socket

    _LOG = os.environ["INFILL_NETGUARD_LOG"]
    _ONLY = os.environ.get("INFILL_NETGUARD_ONLY")

    def _local(host):
        if host in (None, "", "localhost"):
            return True
        try:
            return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
        except ValueError:
            return False

    def _check(what, host, port):
        allowed = f"{host}:{port}" == _ONLY if _ONLY else _local(host)
        if _ONLY or not allowed:
            with open(_LOG, "a") as fh:
                fh.write(f"{os.getpid()} {'allowed' if allowed else 'refused'} {what} {host}:{port}\\n")
        if not allowed:
            raise OSError(errno.ENETUNREACH, f"network refused by the test: {what} {host}:{port}")

    def _guard(name):
        original = getattr(socket.socket, name)

        def guarded(self, address, *args):
            if self.family in (socket.AF_INET, socket.AF_INET6):
                _check(name, address[0], address[1])
            return original(self, address, *args)
        setattr(socket.socket, name, guarded)

    for _name in ("connect", "connect_ex"):
        _guard(_name)
    _sendto = socket.socket.sendto

    def _guarded_sendto(self, data, *args):
        address = args[-1]
        if self.family in (socket.AF_INET, socket.AF_INET6):
            _check("sendto", address[0], address[1])
        return _sendto(self, data, *args)
    socket.socket.sendto = _guarded_sendto
    _getaddrinfo = socket.getaddrinfo

    def _guarded_getaddrinfo(host, port=None, *args, **kwargs):
        _check("getaddrinfo", host, port)
        return _getaddrinfo(host, port, *args, **kwargs)
    socket.getaddrinfo = _guarded_getaddrinfo
''')


def guarded_env(tmp_path: Path) -> tuple[dict[str, str], Path]:
    guard = tmp_path / "netguard"
    guard.mkdir()
    (guard / "sitecustomize.py").write_text(NETGUARD)
    log = tmp_path / "network.log"
    log.write_text("")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(guard), str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "INFILL_NETGUARD_LOG": str(log)}
    return env, log


def test_the_network_guard_catches_connections(tmp_path: Path) -> None:
    env, log = guarded_env(tmp_path)
    probe = ("import socket, urllib.request\n"
             "for call in (lambda: urllib.request.urlopen('http://example.com', timeout=2),\n"
             "             lambda: socket.create_connection(('93.184.216.34', 80), timeout=2)):\n"
             "    try:\n        call()\n    except OSError:\n        pass\n"
             "socket.socket().connect_ex(('127.0.0.1', 9))\n")  # loopback: allowed, not recorded
    subprocess.run([sys.executable, "-c", probe], env=env, check=True, timeout=60)
    attempts = log.read_text().splitlines()
    assert len(attempts) == 2 and "example.com" in attempts[0] and "93.184.216.34" in attempts[1], attempts
    # One address allowed: every attempt is recorded, and loopback elsewhere is refused too.
    log.write_text("")
    env["INFILL_NETGUARD_ONLY"] = "127.0.0.1:9"
    probe = ("import socket\n"
             "for port in (9, 10):\n"
             "    try:\n        socket.create_connection(('127.0.0.1', port), timeout=2)\n"
             "    except OSError:\n        pass\n")
    subprocess.run([sys.executable, "-c", probe], env=env, check=True, timeout=60)
    assert [line.split(" ", 1)[1] for line in log.read_text().splitlines()] == [
        "allowed getaddrinfo 127.0.0.1:9", "allowed connect 127.0.0.1:9", "refused getaddrinfo 127.0.0.1:10"]


@pytest.mark.slow
@pytest.mark.e2e
def test_demo_contacts_no_network(tmp_path: Path) -> None:
    """`infill demo` (server, client, default model, completion, edit, search) with every non-loopback
    connection and name lookup refused and recorded: nothing is tried."""
    env, log = guarded_env(tmp_path)
    env["INFILL_INDEX_DIR"] = str(tmp_path / "index")
    result = subprocess.run([sys.executable, "-m", "lsp_server.cli", "demo"], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert log.read_text() == "", f"network attempts: {log.read_text()}"


# --- with a remote backend, only its host ---------------------------------------------------------------

def _serving_engine(h) -> None:
    """A serving engine's answers: a FIM completion on /v1/completions, a fenced rewrite on chat."""
    stream_start(h)
    if h.path == "/v1/chat/completions":
        for piece in ("def mean(xs):\n", "    return sum(xs) / len(xs)\n", "```\n"):
            event(h, raw=json.dumps({"choices": [{"delta": {"content": piece}, "finish_reason": None}]}))
    else:
        event(h, "a + b")
    event(h, "", "stop")
    event(h, raw="[DONE]")


@pytest.mark.e2e
@pytest.mark.asyncio
async def test_a_remote_backend_is_the_only_host_contacted(tmp_path: Path) -> None:
    """`infill serve` with `backend.url` set: a completion and an edit come from the serving engine, and every
    connection and name lookup the server process makes goes to exactly that host and port (no model hub,
    no telemetry, no other local service)."""
    fake = FakeServer(_serving_engine)
    host, port = fake.httpd.server_address[:2]
    env, log = guarded_env(tmp_path)
    env.update(INFILL_NETGUARD_ONLY=f"{host}:{port}", INFILL_INDEX_DIR=str(tmp_path / "index"),
               INFILL_CACHE_DIR=str(tmp_path / "cache"))
    client = make_test_lsp_client()
    client.feature(types.CLIENT_REGISTER_CAPABILITY)(lambda params: None)
    applied: list[types.ApplyWorkspaceEditParams] = []
    client.feature(types.WORKSPACE_APPLY_EDIT)(
        lambda params: applied.append(params) or types.ApplyWorkspaceEditResult(applied=True))
    await client.start_io(*SERVER, env=env)
    try:
        caps = client_capabilities("visual-studio-code")
        caps.text_document.inline_completion = types.InlineCompletionClientCapabilities()
        await client.initialize_session(types.InitializeParams(capabilities=caps, initialization_options={
            "backend": {"url": fake.url, "kind": "openai"}, "indexEnable": False, "editPreview": False}))
        await wait_for_model(client)
        code = "def add(a, b):\n    return "
        uri = (tmp_path / "add.py").as_uri()
        client.text_document_did_open(types.DidOpenTextDocumentParams(
            text_document=types.TextDocumentItem(uri=uri, language_id="python", version=1, text=code)))
        result = await asyncio.wait_for(client.protocol.send_request_async(
            types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionParams(
                text_document=types.TextDocumentIdentifier(uri=uri), position=types.Position(line=1, character=11),
                context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Invoked))), 60)
        items = result.items if isinstance(result, types.InlineCompletionList) else result or []
        assert [item.insert_text for item in items] == ["a + b"]
        doc = "def avg(xs):\n    return sum(xs) / len(xs)\n"
        uri = (tmp_path / "avg.py").as_uri()
        client.text_document_did_open(types.DidOpenTextDocumentParams(
            text_document=types.TextDocumentItem(uri=uri, language_id="python", version=1, text=doc)))
        edit = await asyncio.wait_for(client.workspace_execute_command_async(types.ExecuteCommandParams(
            command="infill.edit", arguments=[{"uri": uri, "version": 1, "instruction": "Rename avg to mean.",
                                               "range": {"start": {"line": 0, "character": 0},
                                                         "end": {"line": 2, "character": 0}}}])), 60)
        assert edit["applied"] is True and applied
    finally:
        await client.shutdown_session()
        fake.close()
    assert "/v1/completions" in fake.paths and "/v1/chat/completions" in fake.paths
    attempts = [line.split(" ", 1)[1] for line in log.read_text().splitlines()]
    assert attempts and all(a.startswith("allowed ") for a in attempts), attempts
    assert {a.rsplit(" ", 1)[1] for a in attempts} == {f"{host}:{port}"}
