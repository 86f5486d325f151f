"""Which tree-sitter grammar parses which document.

One table maps LSP language ids and file extensions to the per-language grammar wheels
(``tree-sitter-python`` …). Grammars load lazily and are cached: importing this module costs
nothing, and a missing wheel degrades to plain text instead of failing.
"""

from __future__ import annotations

import functools
import importlib
import logging
from dataclasses import dataclass
from pathlib import PurePath

from tree_sitter import Language, Parser, Tree

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LanguageSpec:
    """A language we understand structurally."""

    name: str  # canonical LSP language id
    module: str  # grammar wheel's import name
    function: str  # function in that module returning the grammar pointer
    extensions: tuple[str, ...]
    line_comment: str  # how a one-line comment starts (edit prompts, "code for this comment")
    aliases: tuple[str, ...] = ()


LANGUAGES: tuple[LanguageSpec, ...] = (
    LanguageSpec("python", "tree_sitter_python", "language", (".py", ".pyi"), "#"),
    LanguageSpec("javascript", "tree_sitter_javascript", "language", (".js", ".mjs", ".cjs", ".jsx"), "//",
                 ("javascriptreact",)),
    LanguageSpec("typescript", "tree_sitter_typescript", "language_typescript", (".ts", ".mts", ".cts"), "//"),
    LanguageSpec("typescriptreact", "tree_sitter_typescript", "language_tsx", (".tsx",), "//"),
    LanguageSpec("go", "tree_sitter_go", "language", (".go",), "//"),
    LanguageSpec("rust", "tree_sitter_rust", "language", (".rs",), "//"),
    LanguageSpec("java", "tree_sitter_java", "language", (".java",), "//"),
    LanguageSpec("c", "tree_sitter_c", "language", (".c", ".h"), "//"),
    LanguageSpec("cpp", "tree_sitter_cpp", "language", (".cpp", ".cc", ".cxx", ".hpp", ".hh", ".hxx"), "//",
                 ("c++",)),
)

# Tree-sitter node types that import something (kept when a prompt's prefix is cut, given to edits).
IMPORT_TYPES = frozenset({
    "import_statement", "import_from_statement", "future_import_statement",  # python, js/ts
    "import_declaration", "package_clause", "package_declaration",  # go, java
    "use_declaration", "extern_crate_declaration",  # rust
    "preproc_include", "using_declaration",  # c/cpp
})

_BY_ID: dict[str, LanguageSpec] = {}
for _spec in LANGUAGES:
    _BY_ID[_spec.name] = _spec
    for _alias in _spec.aliases:
        _BY_ID[_alias] = _spec
_BY_EXT: dict[str, LanguageSpec] = {ext: spec for spec in LANGUAGES for ext in spec.extensions}


def spec_for(language_id: str | None = None, path: str | None = None) -> LanguageSpec | None:
    """The language of a document, from its LSP language id first, its file name second."""
    if language_id and language_id.lower() in _BY_ID:
        return _BY_ID[language_id.lower()]
    if path:
        return _BY_EXT.get(PurePath(path).suffix.lower())
    return None


@functools.lru_cache(maxsize=None)
def grammar(name: str) -> Language | None:
    """The tree-sitter Language for a canonical language name, or None if its wheel is missing."""
    spec = _BY_ID.get(name)
    if spec is None:
        return None
    try:
        module = importlib.import_module(spec.module)
        return Language(getattr(module, spec.function)())
    except (ImportError, AttributeError, ValueError) as exc:  # a broken or missing wheel: plain text
        log.warning("tree-sitter grammar for %s unavailable (%s); using plain text", name, exc)
        return None


def parser_for(name: str) -> Parser | None:
    """A fresh parser for the language (parsers are cheap and not thread-safe, so never shared)."""
    language = grammar(name)
    return Parser(language) if language is not None else None


def parse(text: str, name: str) -> Tree | None:
    """Parse text as the named language; None when the language has no grammar here."""
    parser = parser_for(name)
    if parser is None:
        return None
    return parser.parse(text.encode("utf-8"))


def comment_prefix(language_id: str | None, path: str | None = None) -> str:
    """How to start a one-line comment in this language (``#`` for unknown ones)."""
    spec = spec_for(language_id, path)
    return spec.line_comment if spec else "#"
