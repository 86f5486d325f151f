"""Code search: walk a workspace, chunk its files, store and rank the chunks.

The index is plain Python over SQLite (FTS5) and numpy, usable from the CLI and the benchmarks without a
server; only `feature` speaks LSP and keeps the index fresh in the background.
"""
