"""Security properties, each proven: search stays inside the workspace, the index and the model cache are
user-only, chat templates run sandboxed, nothing reaches the network by default.

(Pickled model files are refused in tests/test_engine.py; generated code runs only in benchmarks/sandbox.py,
tests/test_fim_quality.py.)
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import WalledWorkspace, write

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
# records any connection or name lookup that is not loopback or a local socket.
NETGUARD = textwrap.dedent('''
    import errno, ipaddress, os, socket

    _LOG = os.environ["INFILL_NETGUARD_LOG"]

    def _local(host):
        if host in (None, "", "localhost"):
            return True
        try:
            return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
        except ValueError:
            return False

    def _refuse(what, target):
        with open(_LOG, "a") as fh:
            fh.write(f"{os.getpid()} {what} {target!r}\\n")
        raise OSError(errno.ENETUNREACH, f"network refused by the test: {what} {target!r}")

    def _guard(name):
        original = getattr(socket.socket, name)

        def guarded(self, address, *args):
            if self.family in (socket.AF_INET, socket.AF_INET6) and not _local(address[0]):
                _refuse(name, address)
            return original(self, address, *args)
        setattr(socket.socket, name, guarded)

    for _name in ("connect", "connect_ex"):
        _guard(_name)
    _sendto = socket.socket.sendto

    def _guarded_sendto(self, data, *args):
        address = args[-1]
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _local(address[0]):
            _refuse("sendto", address)
        return _sendto(self, data, *args)
    socket.socket.sendto = _guarded_sendto
    _getaddrinfo = socket.getaddrinfo

    def _guarded_getaddrinfo(host, *args, **kwargs):
        if not _local(host):
            _refuse("getaddrinfo", host)
        return _getaddrinfo(host, *args, **kwargs)
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
