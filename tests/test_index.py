"""The search index without LSP: tokenisation, chunking per language, walking, the store, ranking, recovery.

Uses the real embedding model (exported once into the user cache, ~15 s the first time); each test gets
its own workspace and database under tmp_path.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import WalledWorkspace, write

from lsp_server.search import store
from lsp_server.search.chunk import WINDOW_LINES, chunk_file
from lsp_server.search.store import Index
from lsp_server.search.terms import query_terms, split_identifier, terms
from lsp_server.search.walk import read_source, walk

ROOT = Path(__file__).resolve().parents[1]
# int8 weights against the fp32 reference: ours min 0.97 on 968 stdlib texts, per-tensor int8 0.85
COSINE_TO_FP32 = 0.95


@pytest.fixture(scope="module")
def embedder():
    from inference.embed import Embedder

    return Embedder.load()


def names(path: str, source: str) -> list[tuple[str, str]]:
    return [(c.name, c.kind) for c in chunk_file(path, textwrap.dedent(source).encode())]


CONFIG_PY = '''
import json


def parseConfig(path):
    with open(path) as fh:
        return json.load(fh)


class Mailer:
    def send_email(self, to, body):
        self.smtp.sendmail(to, body)
'''


# --- tokenisation ----------------------------------------------------------------------------------


@pytest.mark.parametrize("word, parts", [
    ("parseConfig", ["parse", "config"]),
    ("parse_config", ["parse", "config"]),
    ("HTTPServer2", ["http", "server", "2"]),
    ("__init__", ["init"]),
    ("XMLHttpRequest", ["xml", "http", "request"]),
])
def test_split_identifier(word: str, parts: list[str]) -> None:
    assert split_identifier(word) == parts


def test_terms_keep_whole_identifier_and_parts() -> None:
    assert terms("x = parseConfig(p)") == ["x", "parseconfig", "parse", "config", "p"]


def test_query_terms_drop_stopwords_and_duplicates() -> None:
    assert query_terms("Where do we parse the config? parse_config") == ["parse", "config", "parseconfig"]
    assert query_terms("?!.,;") == []
    assert len(query_terms("word " * 5000)) == 1


# --- chunking --------------------------------------------------------------------------------------


def test_chunk_python_functions_methods_classes_and_blocks() -> None:
    got = names("m.py", '''
        import os
        LIMIT = 3

        @cache
        def top(): 
            return 1

        class TextWrapper:
            width = 70
            def fill(self, text):
                return text
            class Inner:
                def deep(self): pass
        ''')
    assert got == [("m.py:2", "block"), ("top", "function"), ("TextWrapper", "class"),
                   ("TextWrapper.fill", "method"), ("TextWrapper.Inner", "class"),
                   ("TextWrapper.Inner.deep", "method")]


def test_chunk_decorated_function_starts_at_decorator_and_class_chunk_is_its_header() -> None:
    chunks = {c.name: c for c in chunk_file("m.py", b"@cache\ndef f():\n    return 1\n\nclass A:\n    x = 1\n\n    def "
                                                    b"g(self):\n        pass\n")}
    assert chunks["f"].start_line == 0 and chunks["f"].text.startswith("@cache")
    assert chunks["A"].text == "class A:\n    x = 1\n" and chunks["A.g"].start_line == 7


@pytest.mark.parametrize("path, source, expected", [
    ("a.js", "export function parseConfig(p) { return 1 }\nconst f = (x) => x + 1;\nconst n = 3;\n"
             "class A {\n  m() { return 2 }\n}\n",
     [("parseConfig", "function"), ("f", "function"), ("a.js:3", "block"), ("A", "class"), ("A.m", "method")]),
    ("a.ts", "interface Point { x: number }\ntype Id = string;\nenum Color { Red }\n"
             "export default class Shape {\n  area(): number { return 0 }\n}\n",
     [("Point", "interface"), ("Id", "type"), ("Color", "enum"), ("Shape", "class"), ("Shape.area", "method")]),
    ("a.tsx", "function App() {\n  return <div/>;\n}\n", [("App", "function")]),
    ("a.go", "package main\n\ntype Server struct {\n\tx int\n}\n\nfunc (s *Server) Serve() error {\n\treturn nil\n}\n"
             "\nfunc main() {\n}\n",
     [("a.go:1", "block"), ("Server", "type"), ("Server.Serve", "method"), ("main", "function")]),
    ("a.rs", "struct P { x: i32 }\nimpl P {\n    fn new() -> Self { P { x: 1 } }\n}\nmod m {\n    pub fn inner() {}\n"
             "}\n",
     [("P", "struct"), ("P", "impl"), ("P.new", "method"), ("m", "module"), ("m.inner", "function")]),
    ("A.java", "class A {\n  A() {}\n  int get() { return 1; }\n}\n",
     [("A", "class"), ("A.A", "method"), ("A.get", "method")]),
    ("a.c", "#include <x.h>\nstruct P { int x; };\ntypedef struct { int y; } Q;\nstatic int *foo(int a) {\n  return "
            "0;\n}\n",
     [("a.c:1", "block"), ("P", "struct"), ("Q", "type"), ("foo", "function")]),
    ("a.cpp", "namespace ns {\nclass A {\n  void m() {}\n};\n}\ntemplate<class T> T id(T x) { return x; }\n"
              "int A::q() const { return 2; }\n",
     [("ns", "namespace"), ("ns.A", "class"), ("ns.A.m", "method"), ("id", "function"), ("A.q", "function")]),
    ("a.rb", 'require "json"\nmodule M\n  class Foo < Bar\n    def baz(a)\n      a + 1\n    end\n\n'
             '    def self.q\n    end\n  end\nend\ndef top\nend\n',
     [("a.rb:1", "block"), ("M", "module"), ("M.Foo", "class"), ("M.Foo.baz", "method"), ("M.Foo.q", "method"),
      ("top", "function")]),
])
def test_chunk_other_languages(path: str, source: str, expected: list[tuple[str, str]]) -> None:
    assert [(c.name, c.kind) for c in chunk_file(path, source.encode())] == expected


def test_chunk_without_grammar_uses_line_windows() -> None:
    text = "\n".join(f"line {i}" + ("\n" if i % 10 == 9 else "") for i in range(100))
    chunks = chunk_file("notes.md", text.encode())
    assert len(chunks) >= 3
    assert all(c.kind == "block" and c.end_line - c.start_line < WINDOW_LINES for c in chunks)
    covered = "\n".join(c.text for c in chunks)
    assert all(f"line {i}" in covered for i in range(100))


def test_chunk_positions_are_utf16() -> None:
    chunk = next(c for c in chunk_file("u.py", "x = '😀'; y = 1\nclass K:\n    def f(self): return '😀'\n".encode())
                 if c.name == "K.f")
    assert (chunk.start_line, chunk.start_char) == (2, 4)
    assert chunk.end_char == len("    def f(self): return '") + 2 + 1  # the emoji is two UTF-16 units


def test_chunk_invalid_utf8_and_deep_nesting_do_not_crash() -> None:
    assert chunk_file("bad.py", b"def f():\n    return '\xff\xfe'\n")[0].name == "f"
    deep = "x = " + "(" * 3000 + "1" + ")" * 3000 + "\n"
    assert chunk_file("deep.py", deep.encode())


# --- walking ---------------------------------------------------------------------------------------


def test_walk_honours_ignores_and_skips_binary_generated_symlinks(walled_workspace: WalledWorkspace) -> None:
    ws = walled_workspace.root
    found = sorted(p.relative_to(ws).as_posix() for p in walk(ws))
    assert found == sorted(walled_workspace.visible + walled_workspace.by_content)
    assert all(read_source(ws / rel) is None for rel in walled_workspace.by_content)
    assert len(list(walk(ws, max_files=1))) == 1


def test_read_source_rejects_binary_huge_and_generated(tmp_path: Path) -> None:
    assert read_source(write(tmp_path, "a.py", b"x = 1\0\n")) is None
    assert read_source(write(tmp_path, "b.py", "# Code generated by protoc. DO NOT EDIT.\nx = 1\n")) is None
    assert read_source(write(tmp_path, "c.py", "x = 1\n" * 10), size_limit=20) is None
    assert read_source(write(tmp_path, "d.py", "x = 1\n")) == b"x = 1\n"


# --- store and ranking -----------------------------------------------------------------------------


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    write(ws, "pkg/config.py", CONFIG_PY)
    write(ws, "pkg/util.py", "def clamp(value, low, high):\n    return max(low, min(high, value))\n")
    write(ws, "web/app.ts", "export function renderPage(title: string): string {\n  return `<h1>${title}</h1>`;\n}\n")
    return ws


def test_index_then_search_hybrid(workspace: Path, tmp_path: Path, embedder) -> None:
    index = Index(workspace, tmp_path / "db.sqlite3", embedder=embedder)
    stats = index.update_all()
    assert (stats.files, stats.files_changed) == (3, 3)
    assert stats.vectors == stats.chunks_embedded > 0
    top = index.search("parse config", 5)[0]
    assert (top.name, top.kind, Path(top.path).name) == ("parseConfig", "function", "config.py")
    assert top.as_dict()["uri"] == (workspace / "pkg/config.py").as_uri()
    assert top.as_dict()["range"]["start"] == {"line": 4, "character": 0}
    assert index.search("Mailer.send_email")[0].name == "Mailer.send_email"
    assert index.search("render the page title as html")[0].name == "renderPage"
    assert index.search("limit a number to a range", mode="vector")[0].name == "clamp"
    for bad in ("", "   ", "?!...;;", "\x00"):
        assert index.search(bad) == []
    t0 = time.perf_counter()
    index.search("config " * 1500)  # a 10,000-character query: bounded work, no error
    assert time.perf_counter() - t0 < 30  # no hang (speed is the benchmark's business)


def test_exact_symbol_name_ranks_first(workspace: Path, tmp_path: Path, embedder) -> None:
    write(workspace, "pkg/other.py", "def load(path):\n    '''clamp clamp clamp value to low and high'''\n")
    index = Index(workspace, tmp_path / "db.sqlite3", embedder=embedder)
    index.update_all()
    hits = index.search("clamp")
    assert hits[0].name == "clamp" and hits[0].score > hits[1].score


def test_keyword_search_works_without_embedder(workspace: Path, tmp_path: Path) -> None:
    index = Index(workspace, tmp_path / "db.sqlite3")
    stats = index.update_all()
    assert stats.vectors == 0
    assert index.search("send email", mode="hybrid")[0].name == "Mailer.send_email"
    assert index.search("send email", mode="vector") == []


def test_half_typed_last_word_matches_as_a_prefix(workspace: Path, tmp_path: Path) -> None:
    """Search runs as the user types: the word being typed matches what it starts."""
    index = Index(workspace, tmp_path / "db.sqlite3")
    index.update_all()
    assert [h.name for h in index.search("send ema", mode="bm25")][:1] == ["Mailer.send_email"]
    assert [h.name for h in index.search("renderPa", mode="bm25")][:1] == ["renderPage"]
    # Only while the word is being typed: after a space it is a finished word no chunk holds.
    assert index.search("ema ", mode="bm25") == []
    assert [h.name for h in index.search("ema", mode="bm25")][:1] == ["Mailer.send_email"]


def test_a_term_no_chunk_holds_does_not_blank_keyword_search(workspace: Path, tmp_path: Path) -> None:
    """A typo is left out instead of being the one term kept (in a small workspace every real term is
    "common")."""
    index = Index(workspace, tmp_path / "db.sqlite3")
    index.update_all()
    assert index.search("send email xyzzy", mode="bm25")[0].name == "Mailer.send_email"
    assert index.search("xyzzy", mode="bm25") == []


def test_incremental_update_rechunks_and_reembeds_only_changes(workspace: Path, tmp_path: Path, embedder) -> None:
    db = tmp_path / "db.sqlite3"
    index = Index(workspace, db, embedder=embedder)
    first = index.update_all()
    again = index.update_all()
    assert (again.files_changed, again.chunks_embedded) == (0, 0)
    index.close()

    write(workspace, "pkg/config.py", CONFIG_PY + "\n\ndef save_settings(path, data):\n    json.dump(data, open(path, "
                                                  "'w'))\n")
    (workspace / "web/app.ts").unlink()
    reopened = Index(workspace, db, embedder=embedder)  # reopening reuses the database
    stats = reopened.update_all()
    assert (stats.files_changed, stats.files_removed) == (1, 1)
    assert stats.chunks_embedded == 1  # only the new function; the unchanged ones keep their vectors
    assert stats.files == first.files - 1
    assert reopened.search("save settings")[0].name == "save_settings"
    assert all(h.name != "renderPage" for h in reopened.search("render page"))


def test_buffer_text_and_remove(workspace: Path, tmp_path: Path, embedder) -> None:
    index = Index(workspace, tmp_path / "db.sqlite3", embedder=embedder)
    index.update_all()
    assert index.update_file(workspace / "pkg/util.py", text="def wrap_text(s):\n    return s\n")
    index.embed_pending()
    assert index.search("wrap text")[0].name == "wrap_text"
    assert not any(h.name == "clamp" for h in index.search("clamp"))
    assert index.update_file(workspace / "pkg/util.py", text="def wrap_text(s):\n    return s\n") is False
    assert index.remove_file(workspace / "pkg") is True  # a deleted folder takes its files along
    assert index.counts()[0] == 1
    assert index.update_file(tmp_path / "elsewhere.py", text="def x(): pass\n") is False


def test_embedding_model_change_drops_vectors(workspace: Path, tmp_path: Path, embedder) -> None:
    db = tmp_path / "db.sqlite3"
    Index(workspace, db, embedder=embedder).update_all()
    from inference.embed import Embedder

    other = Embedder.load()
    other.model_id = "another-model"
    index = Index(workspace, db, embedder=other)
    assert index.counts()[2] == 0
    assert index.update_all().chunks_embedded > 0


def test_chunker_version_change_rebuilds(workspace: Path, tmp_path: Path, monkeypatch) -> None:
    db = tmp_path / "db.sqlite3"
    Index(workspace, db).update_all()
    monkeypatch.setattr(store, "CHUNKER_VERSION", store.CHUNKER_VERSION + 1)
    index = Index(workspace, db)
    assert index.counts() == (0, 0, 0)
    assert index.update_all().files_changed == 3


def test_corrupt_database_is_rebuilt(workspace: Path, tmp_path: Path) -> None:
    db = tmp_path / "db.sqlite3"
    first = Index(workspace, db)
    first.update_all()
    first.close()
    with open(db, "r+b") as fh:  # scribble over the middle of the file (pages, not just the header)
        fh.seek(4096)
        fh.write(os.urandom(8192))
    index = Index(workspace, db)
    assert index.update_all().files == 3
    assert index.search("clamp")[0].name == "clamp"
    index.close()
    db.write_bytes(b"not a database at all" * 100)
    assert Index(workspace, db).counts() == (0, 0, 0)


KILLED_WRITER = """
import os, sys
sys.path.insert(0, {root!r})
from lsp_server.search.store import Index
index = Index({ws!r}, {db!r})
conn = index._conn
conn.execute("BEGIN IMMEDIATE")
conn.execute("DELETE FROM chunks")
conn.execute("INSERT INTO files(path, hash) VALUES ('half', 'written')")
os._exit(9)  # killed mid-transaction
"""


def test_killed_writer_leaves_a_consistent_index(workspace: Path, tmp_path: Path) -> None:
    db = tmp_path / "db.sqlite3"
    before = Index(workspace, db)
    before.update_all()
    counts = before.counts()
    before.close()
    code = KILLED_WRITER.format(root=str(ROOT), ws=str(workspace), db=str(db))
    assert subprocess.run([sys.executable, "-c", code]).returncode == 9
    after = Index(workspace, db)
    assert after.counts() == counts
    assert after.update_all().files_changed == 0


CONCURRENT_WRITER = """
import sys
sys.path.insert(0, {root!r})
from lsp_server.search.store import Index
index = Index({ws!r}, {db!r})
for _ in range(3):
    index.update_all(embed=False)
    index.update_file({target!r}, text="def changed_{n}():\\n    pass\\n")
print(index.counts()[0])
"""


def test_two_processes_share_one_database(workspace: Path, tmp_path: Path) -> None:
    for i in range(30):
        write(workspace, f"many/m{i}.py", f"def function_{i}(x):\n    return x + {i}\n")
    db = tmp_path / "db.sqlite3"
    target = str(workspace / "pkg/util.py")
    procs = [subprocess.Popen([sys.executable, "-c", CONCURRENT_WRITER.format(
        root=str(ROOT), ws=str(workspace), db=str(db), target=target, n=n)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for n in range(2)]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    index = Index(workspace, db)
    files, chunks, _ = index.counts()
    assert files == 33
    dupes = index._conn.execute("SELECT count(*) FROM (SELECT path FROM files GROUP BY path HAVING count(*) > 1)")
    assert dupes.fetchone()[0] == 0
    fts = index._conn.execute("SELECT count(*) FROM chunks_fts").fetchone()[0]
    assert fts == chunks  # keyword rows and chunks stayed in step


def test_update_all_is_cancellable_and_bounded(tmp_path: Path) -> None:
    ws = tmp_path / "big"
    for i in range(200):
        write(ws, f"d{i % 7}/f{i}.py", f"def f{i}():\n    return {i}\n")
    index = Index(ws, tmp_path / "db.sqlite3")
    cancel = threading.Event()
    seen = []

    def progress(message: str, fraction) -> None:
        seen.append(message)
        cancel.set()

    stats = index.update_all(progress, cancel)
    assert stats.cancelled and stats.files < 200 and seen
    assert index.update_all(max_files=50).files == 50  # bounded walk (and files past the bound dropped)
    assert index.update_all().files == 200


# --- embeddings ------------------------------------------------------------------------------------


def test_embeddings_match_sentence_transformers(embedder) -> None:
    """The reference implementation of all-MiniLM-L6-v2 (PyTorch, fp32 weights) gives nearly the same
    vectors as ours (int8 weights), and ranks code for a query the same way."""
    from sentence_transformers import SentenceTransformer

    from inference.embed import MAX_TOKENS, source_dir

    texts = ["parse the config file", "def send_email(to, body):\n    smtp.sendmail(to, body)", "x", "word " * 200]
    ours = embedder.embed(texts)
    assert ours.shape == (4, 384) and np.allclose(np.linalg.norm(ours, axis=1), 1, atol=1e-5)
    reference = SentenceTransformer(str(source_dir()), device="cpu")
    reference.max_seq_length = MAX_TOKENS
    expected = reference.encode(texts, normalize_embeddings=True)
    assert np.all(np.sum(ours * expected, axis=1) > COSINE_TO_FP32)
    assert float(ours[0] @ ours[1]) < 0.5 and embedder.embed([]).shape == (0, 384)

    query = "read settings from a configuration file"
    code = ["def load_config(path):\n    with open(path) as f:\n        return json.load(f)",
            "def send_email(to, body):\n    smtp.sendmail(to, body)",
            "class Matrix:\n    def transpose(self):\n        return Matrix(zip(*self.rows))",
            "def parse_args(argv):\n    parser = argparse.ArgumentParser()\n    return parser.parse_args(argv)",
            "for row in rows:\n    total += row.price * row.quantity"]
    ours_rank = np.argsort(-(embedder.embed(code) @ embedder.embed([query])[0]))
    reference_rank = np.argsort(-(reference.encode(code, normalize_embeddings=True)
                                  @ reference.encode([query], normalize_embeddings=True)[0]))
    assert list(ours_rank) == list(reference_rank)


def test_the_search_model_is_exported_with_int8_weights(embedder) -> None:
    """The export keeps no fp32 weight matrix: the embedder is the language server's largest part."""
    import onnx

    model = onnx.load(str(Path(embedder._session._model_path)))
    large = [t for t in model.graph.initializer if np.prod(t.dims) > 100_000]
    assert len(large) > 30  # the token table and six layers' matrices
    assert all(t.data_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8) for t in large), [
        t.name for t in large if t.data_type not in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8)]


def test_a_new_export_version_gets_a_new_cache_key(tmp_path: Path, monkeypatch) -> None:
    """The remembered source hash is per export version: bumping it must rebuild, not reload the old graph."""
    from inference import embed

    monkeypatch.setenv("INFILL_CACHE_DIR", str(tmp_path))
    folder = embed.source_dir()
    first = embed._cached_source_hash(folder)
    assert embed._cached_source_hash(folder) == first  # remembered
    monkeypatch.setattr(embed, "EXPORT_VERSION", embed.EXPORT_VERSION + 1)
    assert embed._cached_source_hash(folder) not in (first, None)


def test_loading_removes_the_exports_of_other_versions(embedder, tmp_path: Path, monkeypatch) -> None:
    """Not only a new export: a version that runs beside another (an older one in another editor) leaves its
    export behind after this one's exists; the next load removes it (90 MB each)."""
    import shutil

    from inference.embed import Embedder

    cache = tmp_path / "cache"
    shutil.copytree(Path(embedder._session._model_path).parent, cache / "embed" / Path(
        embedder._session._model_path).parent.name)
    (cache / "embed" / "all-MiniLM-L6-v2-0123456789abcdef").mkdir()
    (cache / "embed" / "all-MiniLM-L6-v2-0123456789abcdef" / "model.onnx").write_bytes(b"an older export")
    monkeypatch.setenv("INFILL_CACHE_DIR", str(cache))
    Embedder.load()
    assert [p.name for p in (cache / "embed").glob("all-MiniLM-*")] == [Path(embedder._session._model_path).parent.name]


def test_an_export_of_another_version_is_removed(tmp_path: Path) -> None:
    from inference.embed import _remove_other_exports

    for name in ("all-MiniLM-L6-v2-0123456789abcdef", "all-MiniLM-L6-v2-fedcba9876543210"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.onnx").write_bytes(b"weights")
    (tmp_path / "sources.json").write_text("{}")
    _remove_other_exports(tmp_path / "all-MiniLM-L6-v2-fedcba9876543210")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["all-MiniLM-L6-v2-fedcba9876543210", "sources.json"]


def test_single_file_updates_follow_the_walker_rules(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    write(ws, ".gitignore", "build/\n")
    write(ws, "src/.gitignore", "local_*.py\n")
    rels = ["src/main.py", "src/sub/deep.py", "src/local_a.py", "build/o.py", "node_modules/a.js", ".git/x.py",
            "notes.bin"]
    for rel in rels:
        write(ws, rel, "def f():\n    pass\n")
    index = Index(ws, tmp_path / "db.sqlite3")
    walked = set(walk(ws))
    for rel in rels:
        path = (ws / rel).resolve()
        assert index.wants(path) == (path in walked), rel
        assert index.update_file(path) == (path in walked), rel  # events for ignored files index nothing
    assert index.counts()[0] == 2


def test_indexes_of_deleted_workspaces_are_removed_after_a_week(tmp_path: Path) -> None:
    """One database per folder ever opened would pile up in the cache (deleted checkouts, temporary folders):
    a week after its last write, an index whose workspace is gone is deleted — not one whose folder exists,
    not a recent one (a drive may come back), not a file that is not one of ours."""
    indexes = tmp_path / "index"
    made = {}
    for name in ("kept", "gone", "recent"):
        ws = write(tmp_path, f"{name}/a.py", "def a():\n    return 1\n").parent
        index = Index(ws, indexes / store.db_path_for(ws).name)
        index.update_all()
        index.close()
        made[name] = index.db_path
    foreign = indexes / "notes-0123456789abcdef.sqlite3"
    foreign.write_bytes(b"a file someone put here")
    for name in ("gone", "recent"):
        for path in (tmp_path / name).iterdir():
            path.unlink()
        (tmp_path / name).rmdir()
    week_ago = time.time() - store.ORPHAN_UNUSED_S - 60
    for path in [*indexes.iterdir()]:
        if not path.name.startswith("recent"):
            os.utime(path, (week_ago, week_ago))
    assert store.remove_orphans(indexes) == [made["gone"]]
    assert sorted(p.name.split("-")[0] for p in indexes.glob("*.sqlite3")) == ["kept", "notes", "recent"]
    assert not list(indexes.glob("gone-*"))  # its -wal and -shm too
