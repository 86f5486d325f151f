"""What the model is asked for an edit: the context around the selection, the presets, the prompts.

Chat models get the enclosing scope, the dedented selection and the instruction; FIM models get the
instruction as comments in place. Small models drown in context, so it is clipped to CONTEXT_CHARS.
"""

from __future__ import annotations

from dataclasses import dataclass

from tree_sitter import Node

from lsp_server import languages
from lsp_server.edit.task import DOCSTRING, EditTask, language_name, scope_types

CONTEXT_CHARS = 2400  # enclosing scope shown to the model: a small model drowns in more
IMPORT_LINES = 20

SYSTEM_PROMPT = (
    "You are an expert programmer who edits code. Follow the instruction exactly, keep everything "
    "else unchanged, and reply with the complete edited code in one fenced code block, without explanations."
)


@dataclass
class Scope:
    """What the model sees around the selection: the file's imports and the enclosing function/class."""

    imports: str = ""
    enclosing: str = ""  # source of the innermost scope that strictly contains the selection



def enclosing_scope(task: EditTask) -> Scope:
    """Imports and the innermost function/class around the selection, found with tree-sitter."""
    if not task.language:
        return Scope()
    tree = languages.parse(task.text, task.language)
    if tree is None:
        return Scope()
    data = task.text.encode("utf-8")
    start_b = len(task.text[:task.start].encode("utf-8"))
    end_b = start_b + len(task.selection.encode("utf-8"))
    import_types = spec.imports if (spec := languages.named(task.language)) else ()
    imports = [
        data[n.start_byte:n.end_byte].decode("utf-8", "replace")
        for n in tree.root_node.named_children if n.type in import_types
    ]
    scope = _innermost_scope(tree.root_node, start_b, end_b, scope_types(task.language))
    enclosing = ""
    if scope is not None:  # the scope's source, the selection in it replaced by a marker comment
        first = len(data[:data.rfind(b"\n", 0, scope.start_byte) + 1].decode("utf-8", "replace"))
        last = len(data[:scope.end_byte].decode("utf-8", "replace"))
        if task.before_on_line.strip():  # mid-line: mark the spot in the line
            enclosing = task.text[first:task.start] + "<the code to edit>" + task.text[task.end:last]
        else:
            what = "<the code to edit>" if task.selection.strip() else "<CURSOR>"
            marker = f"{task.indent}{languages.comment_prefix(task.language)} {what}\n"
            rest = task.text[task.end:last]
            enclosing = task.text[first:task.line_start] + marker + (rest[1:] if rest.startswith("\n")
                                                                      and not task.selection.endswith("\n") else rest)
        enclosing = _clip_around(enclosing.rstrip(), task.line_start - first)
    return Scope(imports="\n".join(imports[:IMPORT_LINES]), enclosing=enclosing)


def _innermost_scope(root: Node, start_b: int, end_b: int, scopes: tuple[str, ...]) -> Node | None:
    """The smallest scope node strictly larger than the selection that contains it."""
    best = None
    node = root.descendant_for_byte_range(start_b, max(start_b, end_b - 1)) if end_b > start_b else \
        root.descendant_for_byte_range(start_b, start_b)
    while node is not None:
        covers = node.start_byte <= start_b and end_b <= node.end_byte
        bigger = node.end_byte - node.start_byte > end_b - start_b
        if node.type in scopes and covers and bigger:
            best = node
            break
        node = node.parent
    return best


def _clip_around(source: str, offset: int) -> str:
    """At most CONTEXT_CHARS of source, centred on offset, cut at line boundaries."""
    if len(source) <= CONTEXT_CHARS:
        return source
    lo = max(0, offset - CONTEXT_CHARS // 2)
    hi = min(len(source), lo + CONTEXT_CHARS)
    lo = source.rfind("\n", 0, lo) + 1 if lo else 0
    return source[lo:hi].rsplit("\n", 1)[0] + "\n..."


DOC_INSTRUCTIONS = {  # by the language's doc_style
    "docstring": "Add a docstring to this code: a short summary line, then the arguments and return value.",
    "rustdoc": "Add /// doc comments to this code that say what it does, its arguments and its return value.",
    "godoc": "Add a Go doc comment above this code that says what it does.",
    "javadoc": "Add a Javadoc comment to this code with @param and @return tags.",
    "hash": "Add a comment above this code, in lines starting with #, that says what it does.",
}
DEFAULT_DOC_INSTRUCTION = "Add a documentation comment (JSDoc/Doxygen style /** ... */) above this code."


@dataclass(frozen=True)
class Preset:
    """A code action that needs no typing: its title, the instruction it sends, and how it runs."""

    title: str
    instruction: str
    target_language: str | None = None  # translations
    preset: str | None = None  # a structured edit (DOCSTRING) instead of a free rewrite

    def arguments(self) -> dict:
        """The extra `infill.edit` arguments this preset sends."""
        args: dict[str, str] = {"instruction": self.instruction}
        if self.target_language:
            args["targetLanguage"] = self.target_language
        if self.preset:
            args["preset"] = self.preset
        return args


def preset_instructions(language: str | None, translate_to: list[str]) -> list[Preset]:
    """The preset actions on a selection, in menu order."""
    spec = languages.named(language)
    doc = DOC_INSTRUCTIONS.get(spec.doc_style, DEFAULT_DOC_INSTRUCTION) if spec else DEFAULT_DOC_INSTRUCTION
    presets = [Preset("Add docstring", doc, preset=DOCSTRING)]
    if spec is not None and spec.type_hints:
        presets.append(Preset("Add type hints",
                              "Add type hints to every parameter and return value. Keep the code otherwise unchanged."))
    presets += [
        Preset("Fix the bug", "Find and fix the bug in this code. Keep its name and signature."),
        Preset("Simplify", "Simplify this code without changing what it does."),
        Preset("Add error handling", "Add error handling to this code: check bad inputs and handle failures."),
    ]
    for target in translate_to:
        spec = languages.spec_for(target)
        if spec is None or spec.name == language:
            continue
        name = language_name(spec.name)
        presets.append(Preset(f"Translate to {name}",
                              f"Translate this code to {name}, keeping the same behaviour and names.", spec.name))
    return presets


def chat_messages(task: EditTask, scope: Scope, retry_note: str | None = None,
                  previous_reply: str | None = None) -> list[dict]:
    """Messages for an instruct model: the context, the selection (dedented) and the instruction."""
    lang = task.language or ""
    name = language_name(task.language)
    parts: list[str] = []
    context = scope.enclosing if scope.enclosing.strip() else ""
    if scope.imports and scope.imports not in context:
        context = scope.imports + ("\n\n" + context if context else "")
    selection = task.selection_block
    if task.selection.strip():
        if context:
            parts.append(f"Context from the file:\n```{lang}\n{context.rstrip()}\n```")
        parts.append(f"{name} code to edit:\n```{lang}\n{selection}\n```")
        if task.target_language:
            parts.append(f"Instruction: {task.instruction}\n"
                         f"Reply with the {language_name(task.target_language)} code only.")
        else:
            parts.append(f"Instruction: {task.instruction}\nReply with the edited code only.")
    else:
        before = task.text[max(0, task.start - CONTEXT_CHARS // 2):task.start]
        after = task.text[task.end:task.end + CONTEXT_CHARS // 4]
        if scope.imports and scope.imports not in before:
            before = scope.imports + "\n...\n" + before
        parts.append(f"{name} file, the new code goes at <CURSOR>:\n```{lang}\n{before}<CURSOR>{after}\n```")
        parts.append(f"Instruction: {task.instruction}\nReply with only the new code to insert at <CURSOR>.")
    messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": "\n\n".join(parts)}]
    if retry_note:
        if previous_reply is not None:
            messages.append({"role": "assistant", "content": previous_reply})
        messages.append({"role": "user", "content": retry_note})
    return messages


def reply_prefix(task: EditTask) -> str:
    """What the assistant's reply is started with, so even a chatty model answers with code."""
    return f"```{task.output_language or ''}\n"


def fim_prompt(task: EditTask, retry_note: str | None = None) -> tuple[str, str]:
    """(prefix, suffix) for a base/FIM model: the instruction (and the old code) as comments in place."""
    comment = languages.comment_prefix(task.language)
    indent = task.indent
    lines = []
    if task.selection.strip():
        lines.append(f"{indent}{comment} Original code:")
        for line in task.selection_block.splitlines():
            lines.append(f"{indent}{comment} {line}".rstrip())
        lines.append(f"{indent}{comment} Rewritten: {_one_line(task.instruction)}")
    else:
        lines.append(f"{indent}{comment} {_one_line(task.instruction)}")
    if retry_note:
        lines.append(f"{indent}{comment} Note: {_one_line(retry_note)}")
    # The comments go on lines of their own above the selection's line; the middle then continues
    # that line exactly where the selection starts.
    prefix = task.text[:task.line_start] + "\n".join(lines) + "\n" + fim_lead(task)
    return prefix, task.text[task.end:]


def fim_lead(task: EditTask) -> str:
    """What the FIM prefix ends with: the code before a mid-line selection, else the indentation."""
    return task.before_on_line if task.before_on_line.strip() else task.indent


def _one_line(text: str) -> str:
    return " ".join(text.split())
