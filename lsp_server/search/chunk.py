"""Cutting a file into search results: tree-sitter definitions named by their qualified name
(``TextWrapper.fill``), the top-level code between them as "block" chunks, line windows without a grammar.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from lsp_server import languages
from lsp_server.languages import Definition
from lsp_server.positions import utf16_len

log = logging.getLogger(__name__)

MAX_CHUNK_CHARS = 20_000
WINDOW_LINES = 40  # line-window fallback (and the most lines of top-level code in one block chunk)


@dataclass
class Chunk:
    """A piece of a file that means something on its own. Lines 0-based; characters are UTF-16 units."""

    name: str
    kind: str
    start_line: int
    start_char: int
    end_line: int
    end_char: int
    text: str

    @property
    def short_name(self) -> str:
        return self.name.rsplit(".", 1)[-1]


_CLASS_KINDS = {"class", "struct", "impl", "trait", "interface", "enum"}
_BODY_TYPES = ("body", "block", "list", "statement")  # where one-line members (`def f(): pass`) live
_FUNCTION_VALUES = {"arrow_function", "function_expression", "function", "generator_function"}
_C_NAMES = {"identifier", "field_identifier", "qualified_identifier", "destructor_name", "operator_name",
            "type_identifier", "template_function", "primitive_type"}


def _text(node) -> str:
    return node.text.decode("utf-8", "replace")


def _c_declarator_name(node) -> str | None:
    """Dig through pointer/function/reference declarators to the declared name."""
    current = node.child_by_field_name("declarator")
    for _ in range(8):
        if current is None:
            return None
        if current.type in _C_NAMES:
            return _text(current).replace("::", ".")
        nxt = current.child_by_field_name("declarator")
        if nxt is None:
            nxt = next((c for c in current.named_children if "declarator" in c.type or c.type in _C_NAMES), None)
        current = nxt
    return None


def _definition_name(node, language: str) -> str | None:
    """The declared name of a definition node, or None when it declares nothing worth a chunk."""
    t = node.type
    if t in ("lexical_declaration", "variable_declaration"):
        for decl in node.named_children:
            value = decl.child_by_field_name("value")
            if decl.type == "variable_declarator" and value is not None and value.type in _FUNCTION_VALUES:
                name = decl.child_by_field_name("name")
                return _text(name) if name is not None else None
        return None
    if language in ("c", "cpp") and t in ("function_definition", "type_definition"):
        return _c_declarator_name(node)
    if t in ("struct_specifier", "union_specifier", "enum_specifier", "class_specifier"):
        if node.child_by_field_name("body") is None:
            return None  # a use (`struct foo *p`), not a definition
    if t == "type_declaration":
        spec = next((c for c in node.named_children if c.type in ("type_spec", "type_alias")), None)
        name = spec.child_by_field_name("name") if spec is not None else None
        return _text(name) if name is not None else None
    if t == "impl_item":
        kind = node.child_by_field_name("type")
        return _text(kind) if kind is not None else None
    if t == "method_declaration" and language == "go":
        name = node.child_by_field_name("name")
        receiver = node.child_by_field_name("receiver")
        types = [] if receiver is None else _descendants_of_type(receiver, "type_identifier")
        if name is None:
            return None
        return f"{_text(types[0])}.{_text(name)}" if types else _text(name)
    name = node.child_by_field_name("name")
    if name is None:
        return "(anonymous)" if t == "namespace_definition" else None
    return _text(name).replace("::", ".")


def _descendants_of_type(node, node_type: str) -> list:
    found, stack = [], [node]
    while stack:
        n = stack.pop()
        if n.type == node_type:
            found.append(n)
        stack.extend(reversed(n.named_children))
    return found


def _unwrap(node, rules: dict[str, Definition]):
    """The definition inside a wrapper (decorators, `export`, `template<…>`), or None."""
    inner = node.child_by_field_name("definition") or node.child_by_field_name("declaration")
    if inner is not None and inner.type in rules:
        return inner
    return next((c for c in node.named_children if c.type in rules), None)


class _Lines:
    """Byte-column → UTF-16-column conversion for one file."""

    def __init__(self, data: bytes) -> None:
        self.lines = data.split(b"\n")

    def utf16(self, row: int, byte_col: int) -> int:
        if row >= len(self.lines):
            return 0
        return len(self.lines[row][:byte_col].decode("utf-8", "replace").encode("utf-16-le")) // 2


def chunk_file(path: str, data: bytes) -> list[Chunk]:
    """Chunks of one file: tree-sitter definitions plus top-level blocks, or line windows without a grammar."""
    spec = languages.spec_for(None, path)
    text = data.decode("utf-8", "replace")
    clean = text.encode("utf-8")  # invalid UTF-8 replaced: tree-sitter and our offsets see the same bytes
    tree = None
    if spec is not None:
        try:
            tree = languages.parse(text, spec.name)
        except Exception:  # a grammar crash on odd input must not stop indexing
            log.exception("tree-sitter failed on %s", path)
    if tree is None or spec is None:
        return _windows(path, text, 0, len(text.split("\n")), "block")
    lines = _Lines(clean)
    chunks: list[Chunk] = []
    covered: list[tuple[int, int]] = []
    _collect(tree.root_node, spec, [], clean, lines, chunks, covered, top=True)
    chunks.extend(_gaps(path, text, covered))
    chunks.sort(key=lambda c: (c.start_line, c.start_char))
    return chunks


def _collect(root, spec: languages.LanguageSpec, parents: list[str], data: bytes, lines: _Lines,
             chunks: list[Chunk], covered: list[tuple[int, int]], top: bool, parent_kind: str = "") -> None:
    """Depth-first (with an explicit stack: generated code nests deeply) over nodes that can hold definitions."""
    rules = spec.definitions
    stack = list(reversed(root.children))
    while stack:
        node = stack.pop()
        outer = node
        if node.type in spec.wrappers:
            inner = _unwrap(node, rules)
            if inner is None:
                stack.extend(reversed(node.children))
                continue
            node = inner
        rule = rules.get(node.type)
        name = _definition_name(node, spec.name) if rule else None
        if rule is None or name is None:
            if node.end_point[0] > node.start_point[0] or node.type.endswith(_BODY_TYPES):
                stack.extend(reversed(node.children))  # one-line expressions hold no definition: skipped
            continue
        kind, container = rule
        if kind == "function" and parent_kind in _CLASS_KINDS:
            kind = "method"
        qualified = ".".join(parents + [name])
        first = len(chunks)
        if container:
            _collect(node, spec, parents + [name], data, lines, chunks, covered, top=False, parent_kind=kind)
        members = chunks[first:]
        end_byte = outer.end_byte
        end_row, end_col = outer.end_point
        if members:  # the container's own chunk: its header up to the first member
            head = min((m for m in members), key=lambda m: m.start_line)
            end_row = max(outer.start_point[0], head.start_line - 1)
            end_col = len(lines.lines[end_row]) if end_row < len(lines.lines) else 0
            end_byte = sum(len(l) + 1 for l in lines.lines[:end_row]) + end_col
        body = data[outer.start_byte:max(outer.start_byte, end_byte)].decode("utf-8", "replace")
        start_row, start_col = outer.start_point
        chunks.append(Chunk(qualified, kind, start_row, lines.utf16(start_row, start_col), end_row,
                            lines.utf16(end_row, end_col), body[:MAX_CHUNK_CHARS]))
        if top:
            covered.append((outer.start_point[0], outer.end_point[0]))


def _gaps(path: str, text: str, covered: list[tuple[int, int]]) -> list[Chunk]:
    """Top-level code outside every definition (imports, constants, scripts), as block chunks."""
    all_lines = text.split("\n")
    taken = [False] * len(all_lines)
    for start, end in covered:
        for row in range(start, min(end, len(all_lines) - 1) + 1):
            taken[row] = True
    chunks: list[Chunk] = []
    row = 0
    while row < len(all_lines):
        if taken[row]:
            row += 1
            continue
        start = row
        while row < len(all_lines) and not taken[row]:
            row += 1
        chunks.extend(_windows(path, text, start, row, "block", all_lines))
    return chunks


def _windows(path: str, text: str, start: int, stop: int, kind: str,
             all_lines: list[str] | None = None) -> list[Chunk]:
    """Split lines [start, stop) into windows of at most WINDOW_LINES, preferring to cut at blank lines."""
    all_lines = all_lines if all_lines is not None else text.split("\n")
    base = os.path.basename(path)
    chunks: list[Chunk] = []
    row = start
    while row < stop:
        end = min(stop, row + WINDOW_LINES)
        if end < stop:
            for cut in range(end - 1, row + WINDOW_LINES // 2, -1):
                if not all_lines[cut].strip():
                    end = cut + 1
                    break
        body_lines = all_lines[row:end]
        body = "\n".join(body_lines)
        if len(body.strip()) >= 3:
            first = next(i for i, line in enumerate(body_lines) if line.strip())
            last = max(i for i, line in enumerate(body_lines) if line.strip())
            s, e = row + first, row + last
            chunks.append(Chunk(f"{base}:{s + 1}", kind, s, 0, e, utf16_len(all_lines[e]),
                                "\n".join(all_lines[s:e + 1])[:MAX_CHUNK_CHARS]))
        row = end
    return chunks
