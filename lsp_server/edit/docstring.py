"""Docstrings, structurally: the model only writes a one-sentence summary per definition, and the summary
goes where the language wants it.

A small model asked to "add a docstring" tends to rewrite the function; this way the rest of the file
stays byte-identical whatever the model says.
"""

from __future__ import annotations

import re
import textwrap
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tree_sitter import Node

from lsp_server import languages
from lsp_server.edit.prompts import CONTEXT_CHARS
from lsp_server.edit.reply import check_edit
from lsp_server.edit.task import Draft, EditCancelled, EditError, EditResult, EditTask, Progress, scope_types

if TYPE_CHECKING:
    from inference.backend import Backend, Cancel

# A C/C++ declaration with declarators (`class Foo {…} foo;`): its doc goes before the whole declaration,
# like before a language's wrappers; the search index chunks the specifier alone, so it is no wrapper there.
DOC_BEFORE = ("declaration",)
MAX_DOC_TARGETS = 8
DOC_WIDTH_MIN, DOC_WIDTH_MAX = 79, 120  # columns a doc comment wraps within (`line_width`)
_PROSE_NAMES = sorted({name for spec in languages.LANGUAGES for name in spec.prose_names}, key=len, reverse=True)
_LANG_SUFFIX = re.compile(r"\s+(in|using) (" + "|".join(map(re.escape, _PROSE_NAMES)) + r")\b.*$")


@dataclass
class DocTarget:
    """A definition in the selection that gets a doc comment, and where it goes."""

    node: Node
    name: str
    kind: str  # "function" | "method" | "class" | "type"
    offset: int  # string offset where the doc text is inserted
    indent: str


def doc_targets(task: EditTask) -> list[DocTarget]:
    """Definitions fully inside the selection that have no doc yet, outermost first."""
    spec = languages.named(task.language)
    types = spec.doc_targets if spec else ()
    if not types or not task.selection.strip():
        return []
    tree = languages.parse(task.text, task.language) if task.language else None
    if tree is None:
        return []
    data = task.text.encode("utf-8")
    to_str = lambda b: len(data[:b].decode("utf-8", "replace"))  # noqa: E731
    targets: list[DocTarget] = []

    def visit(node: Node) -> None:
        start, end = to_str(node.start_byte), to_str(node.end_byte)
        if end <= task.start or start >= task.end or len(targets) >= MAX_DOC_TARGETS:
            return
        if node.type in types and start >= task.start and end <= task.end:
            target = _doc_target(task, node, to_str)
            if target is not None:
                targets.append(target)
        for child in node.named_children:
            visit(child)

    visit(tree.root_node)
    return targets


def _doc_target(task: EditTask, node: Node, to_str: Callable[[int], int]) -> DocTarget | None:
    named = node.child_by_field_name("name")
    if named is None and node.type == "function_definition":  # c/cpp: the name is in the declarator
        decl = node.child_by_field_name("declarator")
        while decl is not None and decl.child_by_field_name("declarator") is not None:
            decl = decl.child_by_field_name("declarator")
        named = decl
    if named is None and node.type == "type_declaration":
        spec = next((c for c in node.named_children if c.type == "type_spec"), None)
        named = spec.child_by_field_name("name") if spec is not None else None
    name = named.text.decode("utf-8", "replace") if named is not None and named.text is not None else ""
    kind = "class" if "class" in node.type or "interface" in node.type else \
        "type" if node.type in {"struct_item", "enum_item", "trait_item", "type_declaration"} else \
        "method" if node.type in {"method_definition", "method_declaration"} or _inside_class(node, task.language) \
        else "function"
    if languages.named(task.language).doc_style == "docstring":  # type: ignore[union-attr]  # parsed: known
        body = node.child_by_field_name("body")
        if body is None or not body.children or body.start_point[0] == node.start_point[0]:
            return None  # a one-line definition: no line to put the docstring on
        first = body.children[0]
        if first.type == "expression_statement" and first.named_children and first.named_children[0].type == "string":
            return None  # already documented
        offset = to_str(first.start_byte)
        line_start = task.text.rfind("\n", 0, offset) + 1
        return DocTarget(node, name, kind, offset, task.text[line_start:offset])
    wrappers = languages.named(task.language).wrappers + DOC_BEFORE  # type: ignore[union-attr]  # parsed
    outer = node.parent if node.parent is not None and node.parent.type in wrappers else node
    previous = outer.prev_named_sibling
    if previous is not None and "comment" in previous.type and previous.end_point[0] >= outer.start_point[0] - 1:
        return None  # already documented
    offset = to_str(outer.start_byte)
    if offset < task.start:
        return None
    line_start = task.text.rfind("\n", 0, offset) + 1
    indent = task.text[line_start:offset]
    return DocTarget(node, name, kind, offset, indent if not indent.strip() else "")


def _inside_class(node: Node, language: str | None) -> bool:
    scopes = scope_types(language)
    parent = node.parent
    while parent is not None:
        if parent.type in scopes and ("class" in parent.type or parent.type == "impl_item"):
            return True
        parent = parent.parent
    return False


def summary_messages(code: str, language: str | None, kind: str) -> list[dict]:
    return [{"role": "system", "content": "You are an expert programmer who documents code."},
            {"role": "user", "content": f"```{language or ''}\n{code}\n```\n"
                                        f"In one short sentence, what does this {kind} do?"}]


def clean_summary(reply: str) -> str:
    """The first sentence of a reply, without "in Python"-style tails, capitalised, ending in a period."""
    sentence = reply.strip().strip("`\"' ").split("\n")[0]
    sentence = re.split(r"(?<=[.!?])\s", sentence, maxsplit=1)[0].rstrip(".!? ")
    sentence = _LANG_SUFFIX.sub("", sentence).strip()
    if not sentence:
        return ""
    return sentence[0].upper() + sentence[1:] + "."


def _starts_with_verb(reply: str) -> bool:
    """ "calculates the sum…" reads well on its own; "is a helper that…" needs "This function" before it."""
    words = reply.split()
    return bool(words) and words[0].isalpha() and words[0].endswith("s") and words[0] not in {"is", "was", "has"}


def line_width(text: str) -> int:
    """How long a file lets its lines run: its longest line, but at least PEP 8's 79 and at most 120 (one
    long URL must not stretch every doc comment). A doc that fits stays on one line; a longer one wraps
    inside it, as the file's own comments do."""
    longest = max((len(line.rstrip().expandtabs(4)) for line in text.splitlines()), default=0)
    return min(DOC_WIDTH_MAX, max(DOC_WIDTH_MIN, longest))


def render_doc(target: DocTarget, summary: str, language: str | None, width: int = DOC_WIDTH_MIN) -> str:
    """The text inserted at `target.offset`: the doc comment, wrapped within `width` columns counted from
    the line's start, and what restores the line's indentation."""
    spec = languages.named(language)
    style = spec.doc_style if spec else "block"
    room = max(20, width - len(target.indent.expandtabs(4)))
    if style == "docstring":
        text = f'"""{summary.replace(chr(34) * 3, chr(39) * 3).rstrip(chr(92))}'
        lines = _wrap(text, room, "")
        if len(lines[-1]) + 3 <= room:
            lines[-1] += '"""'
        else:  # the closing quotes on a line of their own
            lines.append('"""')
        return _join(lines, target.indent)
    summary = summary.replace("*/", "* /")
    if style in ("rustdoc", "hash", "godoc"):
        lead = {"rustdoc": "/// ", "hash": "# ", "godoc": "// "}[style]
        if style == "godoc" and target.name:  # Go's convention: the comment starts with the name
            acronym = summary[:2] == summary[:2].upper()
            summary = f"{target.name} {summary if acronym else summary[0].lower() + summary[1:]}"
        return _join(_wrap(lead + summary, room, lead), target.indent)
    if len(summary) + 7 <= room:
        return f"/** {summary} */\n{target.indent}"
    return _join(["/**", *_wrap(" * " + summary, room, " * "), " */"], target.indent)


def _wrap(text: str, room: int, lead: str) -> list[str]:
    """`text` in lines of at most `room` columns, each after the first starting with `lead`; words are never
    broken (a long identifier or URL runs past instead)."""
    return textwrap.wrap(text, room, subsequent_indent=lead, break_long_words=False, break_on_hyphens=False) or [text]


def _join(lines: list[str], indent: str) -> str:
    """Lines of a doc comment at the definition's indentation, and the definition's own indentation after."""
    return "".join(f"{line}\n{indent}" for line in lines)


def run_docstring(engine: Backend, task: EditTask, *, cancel: Cancel | None = None,
                  progress: Progress | None = None, draft: Draft | None = None) -> EditResult:
    """Document each definition in the selection with a one-sentence summary the model writes;
    `draft` hears the selection with the docs written so far after each one."""
    cancel = cancel or threading.Event()
    targets = doc_targets(task)
    replies = []
    inserts: list[tuple[int, str]] = []
    data = task.text.encode("utf-8")
    width = line_width(task.text)
    for i, target in enumerate(targets):
        if progress is not None:
            progress(f"documenting {target.name or target.kind}", i / max(1, len(targets)))
        line_start = data.rfind(b"\n", 0, target.node.start_byte) + 1
        code = textwrap.dedent(data[line_start:target.node.end_byte].decode("utf-8", "replace"))
        if len(code) > CONTEXT_CHARS:
            code = code[:CONTEXT_CHARS].rsplit("\n", 1)[0] + "\n..."
        seed = f"This {target.kind}"
        prompt = engine.chat_prompt(summary_messages(code, task.language, target.kind)) + seed
        reply = "".join(engine.generate(prompt, max_new_tokens=48, stop=("\n",), temperature=0.0, cancel=cancel))
        if cancel.is_set():
            raise EditCancelled("The edit was cancelled.")
        replies.append(seed + reply)
        summary = "" if len(reply.split()) < 2 else clean_summary(reply if _starts_with_verb(reply) else seed + reply)
        if summary:
            inserts.append((target.offset, render_doc(target, summary, task.language, width)))
            if draft is not None:
                draft(_with_docs(task, inserts))
    if not inserts:
        raise EditError("Edit refused: the model wrote no description. The file is unchanged.")
    replacement = _with_docs(task, inserts)
    problem = check_edit(task, replacement)
    if problem is not None:
        raise EditError(f"Edit refused: {problem}. The file is unchanged.")
    return EditResult(replacement, task.text[:task.start] + replacement + task.text[task.end:], 1, replies)


def _with_docs(task: EditTask, inserts: list[tuple[int, str]]) -> str:
    """The selection with each doc text inserted at its (document) offset."""
    replacement = task.selection
    for offset, doc in sorted(inserts, reverse=True):
        rel = offset - task.start
        replacement = replacement[:rel] + doc + replacement[rel:]
    return replacement
