"""The language table: every row complete, and every node type it names one its grammar really has."""

from __future__ import annotations

import dataclasses

import pytest

from lsp_server import languages
from lsp_server.edit.docstring import render_doc

# Fields a language may leave empty, and why: not every grammar has anonymous functions that deserve a
# scope of their own, wrappers around definitions, import statements of their own (Ruby's `require` is a
# method call), or aliases.
MAY_BE_EMPTY = {"function_literals", "wrappers", "imports", "aliases", "type_hints"}
DOC_STYLES = {"docstring", "rustdoc", "godoc", "javadoc", "block", "hash"}


def node_types(spec: languages.LanguageSpec) -> set[str]:
    grammar = languages.grammar(spec.name)
    assert grammar is not None, f"the grammar wheel {spec.module} is not installed"
    return {kind for i in range(grammar.node_kind_count) if (kind := grammar.node_kind_for_id(i))}


@pytest.mark.parametrize("spec", languages.LANGUAGES, ids=lambda s: s.name)
def test_every_language_fills_every_field(spec: languages.LanguageSpec) -> None:
    empty = [f.name for f in dataclasses.fields(spec) if not getattr(spec, f.name) and f.name not in MAY_BE_EMPTY]
    assert not empty, f"{spec.name} leaves {empty} empty"
    assert spec.doc_style in DOC_STYLES
    assert spec.tokens.search("x(").group() == "("  # the lexer finds brackets in code…
    assert spec.tokens.search(f"{spec.line_comment} (").group() != "("  # …and skips them in comments


@pytest.mark.parametrize("spec", languages.LANGUAGES, ids=lambda s: s.name)
def test_every_node_type_a_row_names_is_in_its_grammar(spec: languages.LanguageSpec) -> None:
    known = node_types(spec)
    named = {
        "scopes": spec.scopes, "function_literals": spec.function_literals, "bodies": spec.bodies,
        "imports": spec.imports, "wrappers": spec.wrappers, "doc_targets": spec.doc_targets,
    }
    unknown = {field: sorted(set(types) - known) for field, types in named.items() if set(types) - known}
    assert not unknown, f"{spec.name}: node types its grammar does not have: {unknown}"
    assert set(spec.doc_targets) <= set(spec.definitions) | set(spec.scopes)


def test_ids_and_extensions_name_one_language_each() -> None:
    ids = [name for spec in languages.LANGUAGES for name in (spec.name, *spec.aliases)]
    extensions = [ext for spec in languages.LANGUAGES for ext in spec.extensions]
    assert len(ids) == len(set(ids)) and len(extensions) == len(set(extensions))
    for spec in languages.LANGUAGES:
        assert languages.spec_for(spec.name) is spec and languages.named(spec.name) is spec
        assert all(languages.spec_for(None, f"x{ext}") is spec for ext in spec.extensions)


@pytest.mark.parametrize("style", sorted(DOC_STYLES))
def test_every_doc_style_renders_a_comment(style: str) -> None:
    spec = next((s for s in languages.LANGUAGES if s.doc_style == style), None)
    if spec is None:
        pytest.skip(f"no language uses the {style} style")
    target = type("Target", (), {"indent": "    ", "name": "f"})()
    doc = render_doc(target, "Does things.", spec.name)
    assert "Does things." in doc or "does things." in doc
    assert doc.endswith("\n    ")  # the documented line keeps its indentation
