"""infill's language server: LSP features over the local inference engine."""

__version__ = "0.1.0"
