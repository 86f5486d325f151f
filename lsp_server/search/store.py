"""The search index of one workspace: SQLite (FTS5 + vectors), kept up to date file by file, and ranking.

One database per workspace (WAL, busy timeout, so two servers can share it), FTS5 (BM25) over
identifier-split terms, embeddings as float32 blobs keyed by the hash of the text they embed — a file
edit re-embeds only the chunks whose text changed. A schema, chunker or embedding-model change rebuilds;
a corrupt file is deleted and rebuilt, never served. `Index.search` fuses BM25 and cosine similarity by
reciprocal rank, exact symbol names first.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

import numpy as np

from lsp_server.search.chunk import chunk_file
from lsp_server.search.terms import (
    MAX_QUERY_CHARS,
    MAX_QUERY_TERMS,
    identifiers,
    normalize_name,
    query_terms,
    split_identifier,
    terms,
)
from lsp_server.search.walk import MAX_FILES, indexable_name, read_source, usable_source, walk, walked_to

if TYPE_CHECKING:
    from inference.backend import Cancel
    from inference.embed import Embedder

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
CHUNKER_VERSION = 2  # bump when lsp_server.search.chunk changes what it produces: the index rebuilds
RRF_K = 10  # tuned on the stdlib retrieval set: 10 beat 30 and 60 (MRR@10 .379 vs .372 vs .370)
CANDIDATES = 100  # per ranker, before fusion
MIN_PREFIX_CHARS = 2  # a half-typed last word shorter than this is not matched as a prefix
COMMON_TERM_SHARE = 0.1  # query terms in more than this share of chunks are left out of BM25
MAX_RESULTS = 200  # the most results one search returns
ORPHAN_UNUSED_S = 7 * 24 * 3600  # a gone workspace's index is deleted after a week unused (a drive may come back)
EMBED_HEAD_CHARS = 600  # the embedder sees MAX_TOKENS tokens; no need to tokenize the whole chunk

Progress = Callable[[str, "float | None"], None]


def embed_text(name: str, kind: str, rel_path: str, text: str) -> str:
    """What the embedder sees: the name in words, where it lives, then the head of the code."""
    words = " ".join(split_identifier(name)) if kind != "block" else ""
    place = " ".join(split_identifier(rel_path.rsplit(".", 1)[0]))
    return f"{words} ({kind} in {place}):\n{text[:EMBED_HEAD_CHARS]}"


def index_dir() -> Path:
    """Where databases live: ``$INFILL_INDEX_DIR``, else ``<cache>/index`` (``$INFILL_CACHE_DIR`` honoured)."""
    override = os.environ.get("INFILL_INDEX_DIR")
    if override:
        return Path(override)
    from inference.cache import cache_root

    return cache_root() / "index"


def db_path_for(root: Path) -> Path:
    """One database per workspace, named by a hash of its absolute path."""
    return index_dir() / f"{root.resolve().name or 'root'}-{_digest(str(root.resolve()))}.sqlite3"


def _digest(root: str) -> str:
    return hashlib.sha256(root.encode("utf-8", "surrogateescape")).hexdigest()[:16]


def remove_orphans(directory: Path | None = None, unused_s: float = ORPHAN_UNUSED_S) -> list[Path]:
    """Delete the databases of workspaces that no longer exist and that no server used for `unused_s`
    (a deleted checkout, a temporary folder): one per folder ever opened would otherwise pile up. A
    database is only deleted when the workspace it records hashes to its name (it is one of ours)."""
    removed = []
    now = time.time()
    for path in (directory or index_dir()).glob("*.sqlite3"):
        name = re.fullmatch(r".*-([0-9a-f]{16})\.sqlite3", path.name)
        if name is None or now - _last_write(path) < unused_s:
            continue
        root = _recorded_root(path)
        if root is None or _digest(root) != name.group(1) or Path(root).exists():
            continue
        _delete_database(path)
        removed.append(path)
    return removed


def _delete_database(path: Path) -> None:
    """A database and the files SQLite keeps beside it."""
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def _last_write(path: Path) -> float:
    """When a server last wrote to a database (its write-ahead log is written first)."""
    times = []
    for suffix in ("", "-wal"):
        try:
            times.append(os.stat(f"{path}{suffix}").st_mtime)
        except OSError:
            pass
    return max(times, default=time.time())


def _recorded_root(path: Path) -> str | None:
    """The workspace folder a database was made for, or None when it cannot be read."""
    try:
        conn = sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True, timeout=1)
        try:
            row = conn.execute("SELECT value FROM meta WHERE key='root'").fetchone()
        finally:
            conn.close()
    except sqlite3.Error:
        return None
    return row[0] if row else None


_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS files(
    id INTEGER PRIMARY KEY, path TEXT UNIQUE NOT NULL, hash TEXT NOT NULL, size INTEGER, mtime_ns INTEGER);
CREATE TABLE IF NOT EXISTS chunks(
    id INTEGER PRIMARY KEY, file_id INTEGER NOT NULL REFERENCES files(id) ON DELETE CASCADE,
    name TEXT NOT NULL, name_lower TEXT, short_lower TEXT, norm TEXT, kind TEXT NOT NULL,
    start_line INTEGER, start_char INTEGER, end_line INTEGER, end_char INTEGER,
    text TEXT NOT NULL, embed_hash TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS chunks_file ON chunks(file_id);
CREATE INDEX IF NOT EXISTS chunks_name ON chunks(name_lower);
CREATE INDEX IF NOT EXISTS chunks_short ON chunks(short_lower);
CREATE INDEX IF NOT EXISTS chunks_norm ON chunks(norm);
CREATE INDEX IF NOT EXISTS chunks_embed ON chunks(embed_hash);
CREATE TABLE IF NOT EXISTS vectors(hash TEXT PRIMARY KEY, vec BLOB NOT NULL);
CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5(name, path, body, tokenize='porter unicode61');
"""
_TABLES = ("chunks_fts", "vectors", "chunks", "files", "meta")


@dataclass
class Hit:
    """One search result."""

    path: str
    name: str
    kind: str
    start_line: int
    start_char: int
    end_line: int
    end_char: int
    snippet: str
    score: float

    def as_dict(self) -> dict:
        """The LSP wire shape: ``{uri, range, name, kind, snippet, score}`` (+ ``path``)."""
        return {
            "uri": Path(self.path).as_uri(),
            "range": {"start": {"line": self.start_line, "character": self.start_char},
                      "end": {"line": self.end_line, "character": self.end_char}},
            "name": self.name, "kind": self.kind, "snippet": self.snippet, "score": round(self.score, 6),
            "path": self.path,
        }


@dataclass
class Candidates:
    """What each ranker found for one query, best first."""

    bm25: list[int]
    vector: list[int]
    exact: list[int]


def fuse(found: Candidates, limit: int, mode: str = "hybrid") -> tuple[list[int], list[float]]:
    """Reciprocal rank fusion of the rankers `mode` uses; exact symbol names outrank every fused score."""
    fused: dict[int, float] = {}
    lists = {"bm25": [found.bm25], "vector": [found.vector]}.get(mode, [found.bm25, found.vector])
    for ranked in lists:
        for rank, cid in enumerate(ranked):
            fused[cid] = fused.get(cid, 0.0) + 1.0 / (RRF_K + rank + 1)
    if mode == "hybrid":
        for cid in found.exact:
            fused[cid] = fused.get(cid, 0.0) + 1.0
    best = sorted(fused.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]
    return [cid for cid, _ in best], [score for _, score in best]


@dataclass
class IndexStats:
    files: int = 0
    chunks: int = 0
    vectors: int = 0
    files_seen: int = 0
    files_changed: int = 0
    files_removed: int = 0
    chunks_embedded: int = 0
    seconds: float = 0.0
    cancelled: bool = False

    def as_dict(self) -> dict:
        return asdict(self)


class Index:
    """A workspace's search index. Thread-safe: one connection, one lock, short transactions.

    `embedder` may be None (keyword search only) and can be attached later with `set_embedder`.
    """

    def __init__(self, root: Path | str, db_path: Path | None = None, embedder: Embedder | None = None) -> None:
        self.root = Path(root).resolve()
        self.db_path = Path(db_path) if db_path is not None else db_path_for(self.root)
        self._lock = threading.RLock()
        self._embedder: Embedder | None = None
        self._writes = 0  # bumped on our own commits; PRAGMA data_version covers other processes' commits
        self._matrix_key: tuple | None = None
        self._df_key: tuple | None = None
        self._df: dict[str, int] = {}
        self._df_total = 0
        self._matrix_ids = np.zeros(0, dtype=np.int64)
        self._matrix = np.zeros((0, 384), dtype=np.float32)
        self._conn = self._open()
        if embedder is not None:
            self.set_embedder(embedder)

    # --- opening, versions, recovery -----------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        from inference.cache import make_private_dir  # here: importing `inference` loads the model runtime

        # The index holds the user's code: user-only, like the cache (an explicitly given folder is only
        # created so, never re-permissioned).
        make_private_dir(self.db_path.parent, tighten=self.db_path.parent == index_dir())
        try:  # created 0600 here: SQLite gives its -wal and -shm files the database file's permissions
            os.close(os.open(self.db_path, os.O_RDWR | os.O_CREAT, 0o600))
            if self.db_path.stat().st_mode & 0o077:
                self.db_path.chmod(0o600)  # an index made by an older version
        except OSError as exc:
            raise sqlite3.OperationalError(f"cannot open {self.db_path}: {exc}") from None
        conn = sqlite3.connect(str(self.db_path), timeout=30, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA busy_timeout=30000")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        return conn

    def _open(self) -> sqlite3.Connection:
        """Open, check integrity and versions; rebuild on corruption or on a schema/chunker change."""
        try:
            conn = self._connect()
            if conn.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                raise sqlite3.DatabaseError("quick_check failed")
            self._migrate(conn)
            return conn
        except sqlite3.DatabaseError as exc:
            log.warning("index %s is unusable (%s); rebuilding", self.db_path, exc)
            try:
                conn.close()
            except Exception:
                pass
            _delete_database(self.db_path)
            conn = self._connect()
            self._migrate(conn)
            return conn

    def _migrate(self, conn: sqlite3.Connection) -> None:
        expected = {"schema": str(SCHEMA_VERSION), "chunker": str(CHUNKER_VERSION)}
        conn.execute("BEGIN IMMEDIATE")
        try:
            has_meta = conn.execute("SELECT 1 FROM sqlite_master WHERE name='meta'").fetchone()
            current = dict(conn.execute("SELECT key, value FROM meta").fetchall()) if has_meta else {}
            if has_meta and any(current.get(k) != v for k, v in expected.items()):
                log.info("index %s: version changed %s -> %s; rebuilding", self.db_path, current, expected)
                for table in _TABLES:
                    conn.execute(f"DROP TABLE IF EXISTS {table}")
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.executemany("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)",
                             [*expected.items(), ("root", str(self.root))])
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def set_embedder(self, embedder: Embedder | None) -> None:
        """Use this embedder; vectors made by another model are dropped (and re-made by `embed_pending`)."""
        with self._lock:
            self._embedder = embedder
            if embedder is None:
                return
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            row = conn.execute("SELECT value FROM meta WHERE key='embed_model'").fetchone()
            if row is None or row[0] != embedder.model_id:
                conn.execute("DELETE FROM vectors")
                conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('embed_model', ?)", (embedder.model_id,))
            conn.execute("COMMIT")
            self._writes += 1

    @property
    def embedder(self) -> Embedder | None:
        return self._embedder

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # --- writing -------------------------------------------------------------------------------

    def rel(self, path: Path) -> str:
        try:
            return path.resolve().relative_to(self.root).as_posix()
        except ValueError:
            return path.as_posix()

    def wants(self, path: Path) -> bool:
        """Would `walk` index this file? (For single-file events: ignored folders, ignore files, names.)"""
        return walked_to(self.root, path)

    def update_file(self, path: Path | str, text: str | None = None, walked: bool = False) -> bool:
        """(Re)index one file from disk, or from an editor buffer's `text`; True when its chunks changed.

        A file that became unindexable (deleted, binary, huge, ignored) is removed. `walked`: the caller
        (`update_all`) already applied the ignore rules.
        """
        path = Path(path).resolve()
        if not path.is_relative_to(self.root):
            return False
        if not walked and not self.wants(path):
            return self.remove_file(path)
        if text is not None:
            data = text.encode("utf-8", "surrogatepass")
            if not usable_source(data):  # a buffer is held to the same rules as a file (a 10 MB log pasted in)
                return self.remove_file(path)
            size, mtime = len(data), -1  # -1: a buffer, not the disk; the next full pass re-reads the file
        else:
            read = read_source(path) if indexable_name(path) else None
            if read is None:
                return self.remove_file(path)
            data = read
            st = path.stat()
            size, mtime = st.st_size, st.st_mtime_ns
        digest = hashlib.blake2b(data, digest_size=16).hexdigest()
        with self._lock:
            row = self._conn.execute("SELECT hash FROM files WHERE path=?", (str(path),)).fetchone()
            if row is not None and row[0] == digest:
                self._conn.execute("UPDATE files SET size=?, mtime_ns=? WHERE path=?", (size, mtime, str(path)))
                return False
        chunks = chunk_file(str(path), data)  # outside the lock: searches go on while we parse
        rel = self.rel(path)
        rows = []
        for c in chunks:
            etext = embed_text(c.name, c.kind, rel, c.text)
            block = c.kind == "block"
            rows.append((c, etext, hashlib.blake2b(etext.encode("utf-8", "replace"), digest_size=16).hexdigest(),
                         None if block else c.name.lower(), None if block else c.short_name.lower(),
                         None if block else normalize_name(c.short_name) or None))
        path_terms = " ".join(terms(rel))
        with self._lock:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                self._delete_file_rows(str(path))
                cur = conn.execute("INSERT INTO files(path, hash, size, mtime_ns) VALUES (?, ?, ?, ?)",
                                   (str(path), digest, size, mtime))
                file_id = cur.lastrowid
                for c, _etext, ehash, name_lower, short_lower, norm in rows:
                    cur = conn.execute(
                        "INSERT INTO chunks(file_id, name, name_lower, short_lower, norm, kind, start_line,"
                        " start_char, end_line, end_char, text, embed_hash) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                        (file_id, c.name, name_lower, short_lower, norm, c.kind, c.start_line, c.start_char,
                         c.end_line, c.end_char, c.text, ehash))
                    name_terms = "" if c.kind == "block" else " ".join(terms(c.name))
                    conn.execute("INSERT INTO chunks_fts(rowid, name, path, body) VALUES (?, ?, ?, ?)",
                                 (cur.lastrowid, name_terms, path_terms, " ".join(terms(c.text))))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            self._writes += 1
        return True

    def _delete_file_rows(self, path: str) -> bool:
        conn = self._conn
        row = conn.execute("SELECT id FROM files WHERE path=?", (path,)).fetchone()
        if row is None:
            return False
        conn.execute("DELETE FROM chunks_fts WHERE rowid IN (SELECT id FROM chunks WHERE file_id=?)", (row[0],))
        conn.execute("DELETE FROM chunks WHERE file_id=?", (row[0],))
        conn.execute("DELETE FROM files WHERE id=?", (row[0],))
        return True

    def remove_file(self, path: Path | str) -> bool:
        """Forget a file, or every file under a directory (a deleted folder); True if anything went."""
        path = str(Path(path).resolve()) if Path(path).is_absolute() else str(self.root / path)
        with self._lock:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                paths = [r[0] for r in conn.execute(
                    "SELECT path FROM files WHERE path=? OR substr(path, 1, ?)=?",
                    (path, len(path) + 1, path.rstrip(os.sep) + os.sep))]
                for p in paths:
                    self._delete_file_rows(p)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            if paths:
                self._writes += 1
            return bool(paths)

    def update_all(self, progress: Progress | None = None, cancel: Cancel | None = None,
                   max_files: int = MAX_FILES, embed: bool = True) -> IndexStats:
        """Bring the whole workspace up to date: new/changed files re-chunked, vanished ones removed, then embed."""
        t0 = time.perf_counter()
        stats = IndexStats()
        with self._lock:
            known = {p: (s, m) for p, s, m in self._conn.execute("SELECT path, size, mtime_ns FROM files")}
        seen: set[str] = set()
        last = 0.0
        for path in walk(self.root, max_files, cancel):
            if cancel is not None and cancel.is_set():
                break
            stats.files_seen += 1
            key = str(path.resolve())
            seen.add(key)
            try:
                st = path.stat()
            except OSError:
                continue
            if known.get(key) == (st.st_size, st.st_mtime_ns):
                continue  # unchanged since last time: not even read
            try:
                stats.files_changed += self.update_file(path, walked=True)
            except (OSError, sqlite3.Error) as exc:
                log.warning("index: %s skipped: %s", path, exc)
            if progress and time.monotonic() - last > 0.25:
                last = time.monotonic()
                progress(f"{stats.files_seen} files scanned, {stats.files_changed} indexed", None)
        stats.cancelled = cancel is not None and cancel.is_set()
        if not stats.cancelled:
            for gone in set(known) - seen:
                stats.files_removed += self.remove_file(gone)
            self._prune_vectors()
        if embed and not stats.cancelled:
            stats.chunks_embedded = self.embed_pending(progress, cancel)
            stats.cancelled = cancel is not None and cancel.is_set()
        stats.files, stats.chunks, stats.vectors = self.counts()
        stats.seconds = time.perf_counter() - t0
        return stats

    def _prune_vectors(self) -> None:
        with self._lock:
            self._conn.execute("DELETE FROM vectors WHERE hash NOT IN (SELECT embed_hash FROM chunks)")

    def pending_embeddings(self) -> int:
        with self._lock:
            return self._conn.execute(
                "SELECT count(DISTINCT embed_hash) FROM chunks WHERE embed_hash NOT IN (SELECT hash FROM vectors)"
            ).fetchone()[0]

    def embed_pending(self, progress: Progress | None = None, cancel: Cancel | None = None,
                      batch: int = 64) -> int:
        """Embed every chunk text that has no vector yet; returns how many were embedded.

        Batches are drawn at random, so two servers on one workspace rarely embed the same texts twice.
        """
        embedder = self._embedder
        if embedder is None:
            return 0
        total = self.pending_embeddings()
        done = 0
        while not (cancel is not None and cancel.is_set()):
            with self._lock:
                rows = self._conn.execute(
                    "SELECT c.embed_hash, c.name, c.kind, f.path, c.text FROM chunks c JOIN files f ON f.id=c.file_id"
                    " WHERE c.embed_hash NOT IN (SELECT hash FROM vectors) GROUP BY c.embed_hash ORDER BY random() "
                    "LIMIT ?",
                    (batch,)).fetchall()
            if not rows:
                break
            texts = [embed_text(name, kind, self.rel(Path(path)), text) for _h, name, kind, path, text in rows]
            vectors = embedder.embed(texts)
            with self._lock:
                self._conn.execute("BEGIN IMMEDIATE")
                self._conn.executemany("INSERT OR REPLACE INTO vectors(hash, vec) VALUES (?, ?)",
                                       [(r[0], v.astype(np.float32).tobytes()) for r, v in zip(rows, vectors)])
                self._conn.execute("COMMIT")
                self._writes += 1
            done += len(rows)
            if progress:
                progress(f"embedded {done}/{max(total, done)} chunks", done / max(total, done, 1))
        return done

    def counts(self) -> tuple[int, int, int]:
        """(files, chunks, vectors) in the index."""
        with self._lock:
            c = self._conn
            return (c.execute("SELECT count(*) FROM files").fetchone()[0],
                    c.execute("SELECT count(*) FROM chunks").fetchone()[0],
                    c.execute("SELECT count(*) FROM vectors").fetchone()[0])

    # --- searching -----------------------------------------------------------------------------

    def search(self, query: str, limit: int = 20, mode: str = "hybrid",
               query_vector: np.ndarray | None = None) -> list[Hit]:
        """Ranked chunks for a natural-language or keyword query; [] for a query with no words."""
        ids, scores = self.rank(query, limit, mode, query_vector)
        return self._hits(ids, scores)

    def rank(self, query: str, limit: int = 20, mode: str = "hybrid",
             query_vector: np.ndarray | None = None) -> tuple[list[int], list[float]]:
        """Chunk ids and scores, best first (`search` without building results)."""
        limit = max(1, min(int(limit), MAX_RESULTS))
        found = self.candidates(query, max(CANDIDATES, limit), query_vector, mode)
        return fuse(found, limit, mode) if found is not None else ([], [])

    def candidates(self, query: str, n: int = CANDIDATES, query_vector: np.ndarray | None = None,
                   mode: str = "hybrid") -> Candidates | None:
        """Each ranker's top `n` chunk ids (only the rankers `mode` needs); None for a query with no words."""
        typed = (query or "")[:MAX_QUERY_CHARS]
        query = typed.strip()
        words = query_terms(query)
        if not words:
            if not re.search(r"[^\W_]", query):
                return None
            words = terms(query)[:MAX_QUERY_TERMS]  # only stopwords ("where is it"): use them after all
        if mode in ("hybrid", "bm25"):
            words = self._complete_last_word(typed, words)
        return Candidates(
            bm25=self._bm25(words, n) if mode in ("hybrid", "bm25") else [],
            vector=self._nearest(query, query_vector, n) if mode in ("hybrid", "vector") else [],
            exact=self._exact(query) if mode == "hybrid" else [])

    def _complete_last_word(self, query: str, words: list[str]) -> list[str]:
        """Match a half-typed last word as a prefix (``load sett`` finds ``settings``).

        Search runs as the user types (the quick pick, ``workspace/symbol``), so a query that ends inside a
        word usually ends in a term no chunk has. Such terms of the last word (the whole word and its last
        part) become prefix terms, written ``term*``; a term the index holds stays exact, so a finished
        query ranks as before. A query ending in a space or punctuation has no half-typed word.
        """
        last = identifiers(query) if query[-1:].isalnum() else []
        if not last:
            return words
        parts = terms(last[-1])
        open_ended = {t for t in (parts[0], parts[-1]) if len(t) >= MIN_PREFIX_CHARS}
        out = []
        for w in words:
            if w in open_ended and self._frequency(w) == 0:
                w += "*"
            out.append(w)
        return out

    def _bm25(self, words: list[str], limit: int) -> list[int]:
        selective = self._selective(words)
        if not selective:
            return []
        match = " OR ".join(_fts_term(w) for w in selective)
        with self._lock:
            try:
                return [r[0] for r in self._conn.execute(
                    "SELECT rowid FROM chunks_fts WHERE chunks_fts MATCH ? ORDER BY bm25(chunks_fts, 8.0, 2.0, 1.0)"
                    " LIMIT ?", (match, limit))]
            except sqlite3.OperationalError as exc:  # a term FTS5 still refuses: no keyword hits, not an error
                log.info("fts query %r failed: %s", match, exc)
                return []

    def _selective(self, words: list[str]) -> list[str]:
        """The query's terms minus those in most chunks (``return``, ``self``): they barely move BM25 but
        make FTS5 score nearly every row. Terms no chunk holds go too: left alone, such a term (a typo, a
        half-typed word) would be all that is kept and match nothing. Frequencies are cached until the next
        commit."""
        counts = [(df, w) for w in words if (df := self._frequency(w))]
        keep = [w for df, w in counts if df <= COMMON_TERM_SHARE * self._df_total]
        return keep or [w for _df, w in sorted(counts)[:2]]

    def _frequency(self, term: str) -> int:
        """How many chunks hold `term` (a ``term*`` prefix counts every completion)."""
        with self._lock:
            key = self._data_key()
            if self._df_key != key:
                self._df_key, self._df = key, {}
                self._df_total = self._conn.execute("SELECT count(*) FROM chunks").fetchone()[0]
            if term not in self._df:
                self._df[term] = self._conn.execute(
                    "SELECT count(*) FROM chunks_fts WHERE chunks_fts MATCH ?", (_fts_term(term),)).fetchone()[0]
            return self._df[term]

    def _data_key(self) -> tuple[int, int]:
        """Changes whenever the database does (our commits, or another connection's)."""
        return self._writes, self._conn.execute("PRAGMA data_version").fetchone()[0]

    def _exact(self, query: str) -> list[int]:
        if len(query) > 200:
            return []
        lower = query.lower()
        norm = normalize_name(query) if len(query.split()) <= 4 else ""
        with self._lock:
            return [r[0] for r in self._conn.execute(
                "SELECT id FROM chunks WHERE name_lower=? OR short_lower=? OR (norm=? AND norm != '') LIMIT 50",
                (lower, lower, norm or None))]

    def _nearest(self, query: str, query_vector: np.ndarray | None, limit: int) -> list[int]:
        if query_vector is None:
            if self._embedder is None:
                return []
            query_vector = self._embedder.embed([query])[0]
        ids, matrix = self._vectors()
        if len(ids) == 0:
            return []
        with _one_blas_thread():  # a matrix-vector product is memory-bound: a second thread only adds waiting
            sims = matrix @ query_vector.astype(np.float32)
        k = min(limit, len(ids))
        top = np.argpartition(-sims, k - 1)[:k]
        top = top[np.argsort(-sims[top], kind="stable")]
        return [int(i) for i in ids[top]]

    def _vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """The in-memory (chunk ids, unit vectors) matrix, reloaded only after a commit (ours or another's)."""
        with self._lock:
            key = self._data_key()
            if key != self._matrix_key:
                rows = self._conn.execute(
                    "SELECT c.id, v.vec FROM chunks c JOIN vectors v ON v.hash=c.embed_hash ORDER BY c.id").fetchall()
                self._matrix_ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
                blob = b"".join(r[1] for r in rows)
                self._matrix = np.frombuffer(blob, dtype=np.float32).reshape(len(rows), -1) if rows else \
                    np.zeros((0, 384), dtype=np.float32)
                self._matrix_key = key
            return self._matrix_ids, self._matrix

    def _hits(self, ids: list[int], scores: list[float]) -> list[Hit]:
        if not ids:
            return []
        marks = ",".join("?" * len(ids))
        with self._lock:
            rows = {r[0]: r for r in self._conn.execute(
                "SELECT c.id, f.path, c.name, c.kind, c.start_line, c.start_char, c.end_line, c.end_char, c.text"
                f" FROM chunks c JOIN files f ON f.id=c.file_id WHERE c.id IN ({marks})", ids)}
        hits = []
        for cid, score in zip(ids, scores):
            r = rows.get(cid)
            if r is not None:  # deleted between ranking and fetching
                hits.append(Hit(r[1], r[2], r[3], r[4], r[5], r[6], r[7], snippet(r[8]), score))
        return hits


def _fts_term(term: str) -> str:
    """One FTS5 query term: quoted (so FTS5 syntax in it is literal), ``*`` kept outside as a prefix mark."""
    return f'"{term[:-1]}"*' if term.endswith("*") else f'"{term}"'


_BLAS = None


def _one_blas_thread():
    """Context manager limiting numpy's BLAS to one thread (a no-op without threadpoolctl)."""
    global _BLAS
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        import contextlib

        return contextlib.nullcontext()
    if _BLAS is None:
        _BLAS = ThreadpoolController()
    return _BLAS.limit(limits=1, user_api="blas")


def snippet(text: str, max_lines: int = 6, max_chars: int = 400) -> str:
    """The first few non-blank lines of a chunk."""
    lines = [line.rstrip() for line in text.split("\n")]
    while lines and not lines[0].strip():
        lines.pop(0)
    out = "\n".join(lines[:max_lines])
    return out if len(out) <= max_chars else out[:max_chars - 1] + "…"

