"""One module per LSP feature: completion, edit, search."""
