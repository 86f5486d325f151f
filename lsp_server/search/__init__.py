"""Code search: walk a workspace, chunk its files, store and rank the chunks.

* **Walk** (`walk`): ``.gitignore`` / ``.ignore`` / ``.infillignore`` (pathspec, nested), no symlink out of the
  workspace, no binary, generated or huge files, a bounded number of files.
* **Chunk** (`chunk`): tree-sitter definitions (functions, methods, classes, types …) named by their
  qualified name (``TextWrapper.fill``); the top-level code between them becomes "block" chunks; files
  without a grammar fall back to line windows.
* **Terms** (`terms`): identifiers split into the words people search with.
* **Store** (`store.Index`): one SQLite database per workspace, FTS5 (BM25) and embeddings; BM25 and cosine
  similarity fused by reciprocal rank, exact symbol names first.

All of it is plain Python, usable from the CLI and the benchmarks without a server; only `feature`
speaks LSP and keeps the index fresh in the background.
"""
