"""Everything infill knows about each language, one row per language, and the grammars that parse them.

A row (`LanguageSpec`) maps an LSP language id and file extensions to a tree-sitter grammar wheel
(``tree-sitter-python`` …) and says what its node types mean to each part of infill: scopes (completion
and edit context), statement bodies (where a completion prompt may be cut), imports (kept when it is),
definitions and their wrappers (search chunks), what gets a doc comment and in which style, and how the
bracket lexer (`lsp_server.syntax`) skips strings and comments. Adding a language is adding a row and its
grammar wheel in pyproject.toml; `tests/test_languages.py` checks that every row is complete and names
only node types its grammar has.

Grammars load lazily and are cached: importing this module costs nothing, and a missing wheel degrades to
plain text instead of failing.
"""

from __future__ import annotations

import functools
import importlib
import logging
import re
from dataclasses import dataclass
from pathlib import PurePath

from tree_sitter import Language, Parser, Tree

log = logging.getLogger(__name__)

# Token lexers: brackets outside strings and comments; any other match is a string or comment, skipped whole.
PYTHON_TOKENS = re.compile(
    r"#[^\n]*"
    r"|\"\"\"[\s\S]*?(?:\"\"\"|\Z)|'''[\s\S]*?(?:'''|\Z)"
    r"|\"(?:\\.|[^\"\\\n])*(?:\"|(?=\n)|\Z)|'(?:\\.|[^'\\\n])*(?:'|(?=\n)|\Z)"
    r"|[()\[\]{}]")
C_TOKENS = re.compile(
    r"//[^\n]*|/\*[\s\S]*?(?:\*/|\Z)"
    r"|\"(?:\\.|[^\"\\\n])*(?:\"|(?=\n)|\Z)"
    r"|'(?:\\.[^'\n]{0,9}|[^'\\\n])'"  # a char literal ('\'', '\u{1F600}'); a Rust lifetime ('a) is not one
    r"|`(?:\\[\s\S]|[^`\\])*(?:`|\Z)"  # Go raw strings
    r"|[()\[\]{}]")
JS_TOKENS = re.compile(  # JavaScript/TypeScript: '...' is a string, `...` a template
    r"//[^\n]*|/\*[\s\S]*?(?:\*/|\Z)"
    r"|\"(?:\\.|[^\"\\\n])*(?:\"|(?=\n)|\Z)|'(?:\\.|[^'\\\n])*(?:'|(?=\n)|\Z)"
    r"|`(?:\\[\s\S]|[^`\\])*(?:`|\Z)"
    r"|[()\[\]{}]")
RUBY_TOKENS = re.compile(  # Ruby: # comments, "..." and '...' strings (no %w[] or heredocs)
    r"#[^\n]*"
    r"|\"(?:\\.|[^\"\\\n])*(?:\"|(?=\n)|\Z)|'(?:\\.|[^'\\\n])*(?:'|(?=\n)|\Z)"
    r"|[()\[\]{}]")

Definition = tuple[str, bool]  # a search chunk's kind, and whether its members get chunks of their own
_JS_DEFINITIONS: dict[str, Definition] = {
    "function_declaration": ("function", False), "generator_function_declaration": ("function", False),
    "class_declaration": ("class", True), "abstract_class_declaration": ("class", True),
    "class": ("class", True), "method_definition": ("method", False), "interface_declaration": ("interface", False),
    "type_alias_declaration": ("type", False), "enum_declaration": ("enum", False),
    "lexical_declaration": ("function", False), "variable_declaration": ("function", False),
    "internal_module": ("namespace", True), "module": ("namespace", True),
}
_C_DEFINITIONS: dict[str, Definition] = {
    "function_definition": ("function", False), "struct_specifier": ("struct", False),
    "union_specifier": ("struct", False), "enum_specifier": ("enum", False), "type_definition": ("type", False),
}
_TS_SCOPES = ("abstract_class_declaration", "class_declaration", "enum_declaration", "function_declaration",
              "generator_function_declaration", "interface_declaration", "method_definition")
_TS_BODIES = ("class_body", "enum_body", "expression_statement", "interface_body", "module", "program",
              "statement_block", "switch_body")
_TS_DOC_TARGETS = ("function_declaration", "class_declaration", "method_definition", "interface_declaration")


@dataclass(frozen=True)
class LanguageSpec:
    """A language we understand structurally: one row of the table."""

    name: str  # canonical LSP language id
    display_name: str  # in prompts and action titles ("Translate to C++")
    prose_names: tuple[str, ...]  # how a model's prose names it ("… in Golang"): cut from doc summaries
    module: str  # grammar wheel's import name
    function: str  # function in that module returning the grammar pointer
    extensions: tuple[str, ...]
    line_comment: str  # how a one-line comment starts (edit prompts, "code for this comment")
    tokens: re.Pattern[str]  # the bracket lexer's pattern (lsp_server.syntax)
    # Named definitions a cursor or selection sits in. Edit counts a python decorated_definition as one;
    # completion's scope is the definition itself, never its wrapper.
    scopes: tuple[str, ...]
    function_literals: tuple[str, ...]  # anonymous functions: a completion scope too, not an edit one
    bodies: tuple[str, ...]  # nodes whose children are statements: a line starting one is a clean cut
    imports: tuple[str, ...]  # kept when a completion prompt's prefix is cut, shown to edits
    definitions: dict[str, Definition]  # what search chunks, and how
    wrappers: tuple[str, ...]  # around a definition (decorators, export, template<…>): part of its chunk
    doc_targets: tuple[str, ...]  # definitions "Add docstring" documents
    doc_style: str  # docstring | rustdoc | godoc | javadoc | block | hash (see lsp_server.edit.docstring)
    type_hints: bool = False  # offers "Add type hints"
    aliases: tuple[str, ...] = ()


LANGUAGES: tuple[LanguageSpec, ...] = (
    LanguageSpec(
        "python", "Python", ("Python",), "tree_sitter_python", "language", (".py", ".pyi"), "#", PYTHON_TOKENS,
        scopes=("class_definition", "decorated_definition", "function_definition"), function_literals=(),
        bodies=("block", "expression_statement", "module"),
        imports=("future_import_statement", "import_from_statement", "import_statement"),
        definitions={"function_definition": ("function", False), "class_definition": ("class", True)},
        wrappers=("decorated_definition",), doc_targets=("function_definition", "class_definition"),
        doc_style="docstring", type_hints=True),
    LanguageSpec(
        "javascript", "JavaScript", ("JavaScript",), "tree_sitter_javascript", "language",
        (".js", ".mjs", ".cjs", ".jsx"), "//", JS_TOKENS,
        scopes=("class_declaration", "function_declaration", "generator_function_declaration", "method_definition"),
        function_literals=("arrow_function", "function_expression"),
        bodies=("class_body", "expression_statement", "program", "statement_block", "switch_body"),
        imports=("import_statement", "using_declaration"), definitions=_JS_DEFINITIONS, wrappers=("export_statement",),
        doc_targets=("function_declaration", "generator_function_declaration", "class_declaration",
                     "method_definition"),
        doc_style="block", aliases=("javascriptreact",)),
    LanguageSpec(
        "typescript", "TypeScript", ("TypeScript",), "tree_sitter_typescript", "language_typescript",
        (".ts", ".mts", ".cts"), "//", JS_TOKENS, scopes=_TS_SCOPES,
        function_literals=("arrow_function", "function_expression"), bodies=_TS_BODIES, imports=("import_statement",),
        definitions=_JS_DEFINITIONS, wrappers=("export_statement",), doc_targets=_TS_DOC_TARGETS, doc_style="block",
        type_hints=True),
    LanguageSpec(
        "typescriptreact", "TSX", ("TypeScript",), "tree_sitter_typescript", "language_tsx", (".tsx",), "//",
        JS_TOKENS, scopes=_TS_SCOPES, function_literals=("arrow_function", "function_expression"),
        bodies=_TS_BODIES, imports=("import_statement",), definitions=_JS_DEFINITIONS, wrappers=("export_statement",),
        doc_targets=_TS_DOC_TARGETS, doc_style="block", type_hints=True),
    LanguageSpec(
        "go", "Go", ("Go", "Golang"), "tree_sitter_go", "language", (".go",), "//", C_TOKENS,
        scopes=("function_declaration", "method_declaration", "type_declaration"), function_literals=("func_literal",),
        bodies=("block", "expression_statement", "field_declaration_list", "source_file", "statement_list"),
        imports=("import_declaration", "package_clause"),
        definitions={"function_declaration": ("function", False), "method_declaration": ("method", False),
                     "type_declaration": ("type", False)},
        wrappers=(), doc_targets=("function_declaration", "method_declaration", "type_declaration"),
        doc_style="godoc"),
    LanguageSpec(
        "rust", "Rust", ("Rust",), "tree_sitter_rust", "language", (".rs",), "//", C_TOKENS,
        scopes=("enum_item", "function_item", "impl_item", "mod_item", "struct_item", "trait_item"),
        function_literals=(),
        bodies=("block", "declaration_list", "expression_statement", "field_declaration_list", "match_block",
                "source_file"),
        imports=("extern_crate_declaration", "use_declaration"),
        definitions={"function_item": ("function", False), "struct_item": ("struct", False),
                     "enum_item": ("enum", False), "union_item": ("struct", False), "trait_item": ("trait", True),
                     "impl_item": ("impl", True), "mod_item": ("module", True), "macro_definition": ("macro", False),
                     "type_item": ("type", False)},
        wrappers=(), doc_targets=("function_item", "struct_item", "enum_item", "trait_item"), doc_style="rustdoc"),
    LanguageSpec(
        "java", "Java", ("Java",), "tree_sitter_java", "language", (".java",), "//", C_TOKENS,
        scopes=("class_declaration", "constructor_declaration", "enum_declaration", "interface_declaration",
                "method_declaration", "record_declaration"),
        function_literals=(),
        bodies=("block", "class_body", "enum_body", "expression_statement", "interface_body", "module", "program",
                "switch_block"),
        imports=("import_declaration", "package_declaration"),
        definitions={"class_declaration": ("class", True), "interface_declaration": ("interface", True),
                     "enum_declaration": ("enum", True), "record_declaration": ("class", True),
                     "method_declaration": ("method", False), "constructor_declaration": ("method", False)},
        wrappers=(),
        doc_targets=("method_declaration", "constructor_declaration", "class_declaration", "interface_declaration"),
        doc_style="javadoc"),
    LanguageSpec(
        "c", "C", ("C",), "tree_sitter_c", "language", (".c", ".h"), "//", C_TOKENS,
        scopes=("function_definition", "struct_specifier"), function_literals=(),
        bodies=("compound_statement", "declaration_list", "expression_statement", "field_declaration_list",
                "translation_unit"),
        imports=("preproc_include",), definitions=_C_DEFINITIONS, wrappers=(), doc_targets=("function_definition",),
        doc_style="block"),
    LanguageSpec(
        "cpp", "C++", ("C++",), "tree_sitter_cpp", "language", (".cpp", ".cc", ".cxx", ".hpp", ".hh", ".hxx"), "//",
        C_TOKENS, scopes=("class_specifier", "function_definition", "namespace_definition", "struct_specifier"),
        function_literals=(),
        bodies=("compound_statement", "declaration_list", "expression_statement", "field_declaration_list",
                "translation_unit"),
        imports=("preproc_include", "using_declaration"),
        definitions={**_C_DEFINITIONS, "class_specifier": ("class", True), "struct_specifier": ("struct", True),
                     "namespace_definition": ("namespace", True)},
        wrappers=("template_declaration",), doc_targets=("function_definition", "class_specifier"), doc_style="block",
        aliases=("c++",)),
    LanguageSpec(
        "ruby", "Ruby", ("Ruby",), "tree_sitter_ruby", "language", (".rb", ".rake", ".gemspec"), "#", RUBY_TOKENS,
        scopes=("class", "method", "module", "singleton_class", "singleton_method"),
        function_literals=("block", "do_block", "lambda"),
        bodies=("block_body", "body_statement", "do", "else", "program", "then"),
        imports=(),  # `require` is a method call: no node type of its own
        definitions={"class": ("class", True), "module": ("module", True), "singleton_class": ("class", True),
                     "method": ("function", False), "singleton_method": ("method", False)},
        wrappers=(), doc_targets=("class", "method", "module", "singleton_method"), doc_style="hash"),
)

_BY_ID: dict[str, LanguageSpec] = {}
for _spec in LANGUAGES:
    _BY_ID[_spec.name] = _spec
    for _alias in _spec.aliases:
        _BY_ID[_alias] = _spec
_BY_EXT: dict[str, LanguageSpec] = {ext: spec for spec in LANGUAGES for ext in spec.extensions}
_BY_NAME: dict[str, LanguageSpec] = {spec.name: spec for spec in LANGUAGES}


def named(name: str | None) -> LanguageSpec | None:
    """The row of a canonical language name (what `CompletionContext.language` and `EditTask.language` hold)."""
    return _BY_NAME.get(name or "")


def spec_for(language_id: str | None = None, path: str | None = None) -> LanguageSpec | None:
    """The language of a document, from its LSP language id first, its file name second."""
    if language_id and language_id.lower() in _BY_ID:
        return _BY_ID[language_id.lower()]
    if path:
        return _BY_EXT.get(PurePath(path).suffix.lower())
    return None


@functools.cache
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
