"""Code search quality and speed on a corpus nobody here wrote: the running interpreter's standard library.

Retrieval set: every function and method (module level or inside classes) with a docstring; the query is
the docstring's first sentence, the target is the function, whose docstring is removed from the indexed
text (a copy of the library is indexed, so the answer is never in the haystack verbatim). Test suites
(`test/`, `tests/`, `idle_test/`) and site-packages are left out unless --include-tests.

Reports MRR@10 and recall@10 for BM25 alone, vectors alone and the hybrid (what `infill.search` serves),
indexing throughput (files/s, chunks/s, chunking and embedding included) and the latency of full hybrid
searches (query embedding + both rankers + fusion + result rows) over the whole index.

    python benchmarks/search_quality.py                  # whole stdlib: ~10-20 min on 2 cores (embedding)
    python benchmarks/search_quality.py --max-files 60   # a quick look

Search runs as the user types, so a second set asks each query half-typed (cut inside its last long word,
`--typed-queries` of them): the hybrid as served, where that word matches as a prefix, against the same
text taken as finished words (a trailing space), the ranking before prefixes were matched.

Prints a human table, then one JSON line.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import random
import re
import shutil
import statistics
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lsp_server.search.store import Index, fuse  # noqa: E402

TEST_DIRS = {"test", "tests", "idle_test", "site-packages", "__pycache__"}
MODES = ("bm25", "vector", "hybrid")


@dataclass
class Case:
    query: str
    path: str  # relative to the library root
    name: str  # qualified name as the chunker names it (Class.method)


def stdlib_files(root: Path, include_tests: bool, max_files: int | None) -> list[Path]:
    files = []
    for path in sorted(root.rglob("*.py")):
        parts = set(path.relative_to(root).parts[:-1])
        if "site-packages" in parts or "__pycache__" in parts:
            continue
        if not include_tests and parts & TEST_DIRS:
            continue
        files.append(path)
    return files[:max_files] if max_files else files


def first_sentence(doc: str) -> str:
    """The docstring's first sentence (up to the first full stop or blank line), on one line."""
    para = doc.strip().split("\n\n", 1)[0]
    para = " ".join(para.split())
    match = re.match(r"(.+?[.!?])(\s|$)", para)
    return (match.group(1) if match else para).strip()


def _functions(tree: ast.Module):
    """(qualified name, node) for module-level functions and methods of (nested) classes."""
    stack: list[tuple[str, ast.AST]] = [("", tree)]
    while stack:
        prefix, node = stack.pop()
        for child in getattr(node, "body", []):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield prefix + child.name, child
            elif isinstance(child, ast.ClassDef):
                stack.append((prefix + child.name + ".", child))


def strip_docstrings(text: str, rel: str) -> tuple[str, list[Case]]:
    """The file without its functions' docstrings, and one case per function whose docstring went."""
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return text, []
    lines = text.split("\n")
    cases: list[Case] = []
    edits: list[tuple[int, int, str | None]] = []  # (first line, last line, replacement) 0-based
    for name, fn in _functions(tree):
        doc = ast.get_docstring(fn, clean=True)
        if not doc or not fn.body:
            continue
        node = fn.body[0]
        first, last = node.lineno - 1, node.end_lineno - 1
        before = lines[first].encode()[:node.col_offset].decode("utf-8", "replace")
        after = lines[last].encode()[node.end_col_offset:].decode("utf-8", "replace")
        if before.strip() or after.strip() not in ("", ";"):
            continue  # docstring shares its line with code: leave the function out of the set
        query = first_sentence(doc)
        if not re.search(r"[A-Za-z]", query):
            continue
        replacement = before + "pass" if len(fn.body) == 1 else None
        edits.append((first, last, replacement))
        cases.append(Case(query, rel, name))
    for first, last, replacement in sorted(edits, reverse=True):
        lines[first:last + 1] = [replacement] if replacement is not None else []
    return "\n".join(lines), cases


def build_workspace(root: Path, files: list[Path], target: Path) -> list[Case]:
    cases: list[Case] = []
    for path in files:
        rel = path.relative_to(root).as_posix()
        text = path.read_bytes().decode("utf-8", "replace")
        stripped, found = strip_docstrings(text, rel)
        out = target / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(stripped, encoding="utf-8")
        cases.extend(found)
    return cases


def half_typed(query: str) -> str | None:
    """The query part-way through typing: up to the first half of its last word of four letters or more."""
    words = list(re.finditer(r"[^\W\d_]{4,}", query))
    if not words:
        return None
    last = words[-1]
    return query[:last.start() + (len(last.group()) + 1) // 2]


def reciprocal_rank(ids: list[int], targets: set[int]) -> float:
    """1/rank of the first target among ids, 0 when none is there."""
    rank = next((i + 1 for i, cid in enumerate(ids) if cid in targets), None)
    return 1.0 / rank if rank else 0.0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))] if ordered else 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-files", type=int, help="index only the first N library files (quick runs)")
    parser.add_argument("--include-tests", action="store_true", help="index the test suites too")
    parser.add_argument("--latency-queries", type=int, default=300, help="full searches timed for p50/p95")
    parser.add_argument("--queries", type=int, help="evaluate at most N cases (deterministic sample)")
    parser.add_argument("--typed-queries", type=int, default=1000, help="half-typed queries evaluated (sample)")
    parser.add_argument("--workdir", type=Path, help="keep the stripped library and index here (and reuse them on"
                        " the next run: throughput then measures an up-to-date index, see 'reused')")
    args = parser.parse_args()

    from inference.embed import Embedder

    library = Path(sysconfig.get_paths()["stdlib"])
    files = stdlib_files(library, args.include_tests, args.max_files)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="infill-search-bench-"))
    reused = (work / "index.sqlite3").exists()
    try:
        workspace = work / "stdlib"
        cases = build_workspace(library, files, workspace)
        embedder = Embedder.load(progress=lambda m: print(f"[bench] {m}", file=sys.stderr))
        index = Index(workspace, work / "index.sqlite3", embedder=embedder)

        t0 = time.perf_counter()
        last = [0.0]

        def progress(message: str, fraction: float | None) -> None:
            if time.monotonic() - last[0] > 10:
                last[0] = time.monotonic()
                print(f"[bench] {message}", file=sys.stderr, flush=True)

        chunked = index.update_all(progress, embed=False)
        chunk_seconds = time.perf_counter() - t0
        embedded = index.embed_pending(progress)
        index_seconds = time.perf_counter() - t0
        n_files, n_chunks, n_vectors = index.counts()

        keys: dict[tuple[str, str], set[int]] = {}
        for cid, path, name in index._conn.execute(
                "SELECT c.id, f.path, c.name FROM chunks c JOIN files f ON f.id=c.file_id"):
            keys.setdefault((Path(path).relative_to(workspace).as_posix(), name), set()).add(cid)
        cases = [c for c in cases if (c.path, c.name) in keys]
        if args.queries and len(cases) > args.queries:
            cases = random.Random(0).sample(cases, args.queries)
        vectors = embedder.embed([c.query for c in cases], batch_size=64)

        reciprocal: dict[str, list[float]] = {m: [] for m in MODES}
        found = {m: 0 for m in MODES}
        for case, vec in zip(cases, vectors):
            targets = keys[(case.path, case.name)]
            found_ids = index.candidates(case.query, query_vector=vec)  # each ranker once; fused per mode
            for mode in MODES:
                ids, _ = fuse(found_ids, 10, mode) if found_ids is not None else ([], [])
                reciprocal[mode].append(reciprocal_rank(ids, targets))
                found[mode] += reciprocal[mode][-1] > 0

        typed_cases = [(c, q) for c in random.Random(2).sample(cases, min(args.typed_queries, len(cases)))
                       if (q := half_typed(c.query))]
        typed_vectors: Any = embedder.embed([q for _c, q in typed_cases], batch_size=64) if typed_cases else []
        typed: dict[str, list[float]] = {"prefix": [], "words": []}
        for (case, query), vec in zip(typed_cases, typed_vectors):
            targets = keys[(case.path, case.name)]
            for variant, text in (("prefix", query), ("words", query + " ")):
                typed[variant].append(reciprocal_rank(index.rank(text, 10, query_vector=vec)[0], targets))

        sample = random.Random(1).sample(cases, min(args.latency_queries, len(cases)))
        index.search("warm up", 10)
        latencies, cpu = [], []
        load_before = os.getloadavg()[0]
        for case in sample:
            t, c = time.perf_counter(), time.process_time()
            index.search(case.query, 10)
            latencies.append((time.perf_counter() - t) * 1000)
            cpu.append((time.process_time() - c) * 1000)
        load = (load_before + os.getloadavg()[0]) / 2
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)

    n = max(len(cases), 1)
    result = {
        "corpus": f"Python {sys.version.split()[0]} stdlib" + (" + tests" if args.include_tests else ""),
        "queries": len(cases),
        "files": n_files, "chunks": n_chunks, "vectors": n_vectors,
        **{f"mrr10_{m}": round(sum(reciprocal[m]) / n, 4) for m in MODES},
        **{f"recall10_{m}": round(found[m] / n, 4) for m in MODES},
        "typed_queries": len(typed["prefix"]),
        **{f"mrr10_typed_{v}": round(sum(r) / max(len(r), 1), 4) for v, r in typed.items()},
        "index_seconds": round(index_seconds, 1),
        "chunk_seconds": round(chunk_seconds, 1),
        "files_per_s": round(n_files / index_seconds, 2),
        "chunks_per_s": round(n_chunks / index_seconds, 2),
        "chunking_files_per_s": round(chunked.files_changed / max(chunk_seconds, 1e-9), 1),
        "embedded_per_s": round(embedded / max(index_seconds - chunk_seconds, 1e-9), 1),
        "query_p50_ms": round(statistics.median(latencies), 2) if latencies else None,
        "query_p95_ms": round(percentile(latencies, 0.95), 2) if latencies else None,
        "query_p50_cpu_ms": round(statistics.median(cpu), 2) if cpu else None,
        "load_average": round(load, 2),
        "cores": os.cpu_count(),
        "latency_queries": len(latencies),
        "reused": reused,
    }
    print(f"\nCode search on {result['corpus']}: {n_files} files, {n_chunks} chunks, {len(cases)} queries\n")
    print(f"{'ranker':<8} {'MRR@10':>8} {'recall@10':>10}")
    for m in MODES:
        print(f"{m:<8} {result[f'mrr10_{m}']:>8.4f} {result[f'recall10_{m}']:>10.4f}")
    print(f"\nhalf-typed ({result['typed_queries']} queries, hybrid): MRR@10 {result['mrr10_typed_prefix']:.4f}"
          f" with the last word as a prefix, {result['mrr10_typed_words']:.4f} as finished words")
    print(f"\nindexing: {index_seconds:.1f} s  ({result['files_per_s']} files/s, {result['chunks_per_s']} chunks/s;"
          f" chunking alone {result['chunking_files_per_s']} files/s, embedding {result['embedded_per_s']} chunks/s)")
    print(f"hybrid query latency over {len(latencies)} searches: p50 {result['query_p50_ms']} ms,"
          f" p95 {result['query_p95_ms']} ms (CPU time p50 {result['query_p50_cpu_ms']} ms;"
          f" load average {result['load_average']} on {result['cores']} cores)\n")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
