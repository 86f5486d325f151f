"""Inline completion (placeholder until the engine lands)."""

from __future__ import annotations

from lsp_server.server import Feature


class CompletionFeature(Feature):
    """Inline completion and its `textDocument/completion` fallback."""
