"""Edit with instruction, as plain logic: prompt, reply parsing, re-indentation, parse validation.

Knows nothing of LSP: it takes a document's text, a selection (string offsets) and an instruction, and
returns the replacement text or raises `EditError` with a message meant for the user. The feature in
`lsp_server.edit.feature` turns positions into offsets and results into a versioned `WorkspaceEdit`.

Small models answer loosely (prose around the code, fences, the wrong indentation, a truncated block),
so the pipeline does not trust the reply: it extracts the code, re-indents it to the selection, and
refuses an edit that would break a file that parsed before (after one retry that says what was wrong).
"""

from __future__ import annotations

import difflib
import re
import textwrap
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Protocol

from tree_sitter import Node

from lsp_server import languages

MAX_INSTRUCTION_CHARS = 2000
DOCSTRING = "docstring"  # the structured "Add docstring" preset
CONTEXT_CHARS = 2400  # enclosing scope shown to the model: a small model drowns in more
IMPORT_LINES = 20

# Tree-sitter node types that are a function/class-like scope.
SCOPE_TYPES = frozenset({
    "function_definition", "class_definition", "decorated_definition",  # python, c, cpp
    "function_declaration", "generator_function_declaration", "class_declaration", "method_definition",
    "interface_declaration", "enum_declaration", "abstract_class_declaration",  # js/ts/java
    "method_declaration", "constructor_declaration", "record_declaration", "type_declaration",  # java/go
    "function_item", "impl_item", "trait_item", "struct_item", "enum_item", "mod_item",  # rust
    "class_specifier", "struct_specifier", "namespace_definition",  # c/cpp
})

# Display names for prompts and action titles.
LANGUAGE_NAMES = {
    "python": "Python", "javascript": "JavaScript", "typescript": "TypeScript", "typescriptreact": "TSX",
    "go": "Go", "rust": "Rust", "java": "Java", "c": "C", "cpp": "C++",
}

SYSTEM_PROMPT = (
    "You are an expert programmer who edits code. Follow the instruction exactly, keep everything "
    "else unchanged, and reply with the complete edited code in one fenced code block, without explanations."
)


class EditError(Exception):
    """An edit we refuse; the message says why, in words for the user."""


class EditCancelled(EditError):
    """The user cancelled the edit; nothing is applied."""


class GenerationEngine(Protocol):
    """The part of `inference.Engine` an edit needs (so tests and benchmarks can name it)."""

    supports_fim: bool
    is_instruct: bool

    def chat_prompt(self, messages: list[dict]) -> str: ...

    def generate(self, prompt: Any, **kwargs: Any) -> Iterable[str]: ...


@dataclass(frozen=True)
class EditTask:
    """One edit: the document, the selected span [start, end) in string offsets, and what to do."""

    text: str
    start: int
    end: int
    instruction: str
    language: str | None = None  # canonical grammar name of the document (None: plain text)
    target_language: str | None = None  # set for translations: the replacement's language
    preset: str | None = None  # "docstring": documented structurally (see `run_docstring`)

    @property
    def selection(self) -> str:
        return self.text[self.start:self.end]

    @property
    def line_start(self) -> int:
        """Offset of the start of the line holding the selection's start."""
        return self.text.rfind("\n", 0, self.start) + 1

    @property
    def before_on_line(self) -> str:
        """The text between the start of the line and the selection."""
        return self.text[self.line_start:self.start]

    @property
    def selection_block(self) -> str:
        """The selection as a dedented block (with its line's indentation when it starts after it)."""
        lead = self.before_on_line if not self.before_on_line.strip() else ""
        return textwrap.dedent(lead + self.selection).strip("\n")

    @property
    def indent(self) -> str:
        """The indentation the replacement gets: the selection's line, or for an insertion on a
        blank line the nearest non-blank line above (the comment the code is written for)."""
        line_end = self.text.find("\n", self.line_start)
        line = self.text[self.line_start: len(self.text) if line_end < 0 else line_end]
        if line.strip() or self.selection.strip():
            return _leading_ws(line)
        for above in reversed(self.text[:self.line_start].splitlines()):
            if above.strip():
                return _leading_ws(above)
        return ""

    @property
    def output_language(self) -> str | None:
        return self.target_language or self.language


@dataclass
class Scope:
    """What the model sees around the selection: the file's imports and the enclosing function/class."""

    imports: str = ""
    enclosing: str = ""  # source of the innermost scope that strictly contains the selection


@dataclass
class EditResult:
    """A validated replacement for the task's selection."""

    replacement: str
    new_text: str
    attempts: int
    replies: list[str] = field(default_factory=list)


def validate_instruction(instruction: Any) -> str:
    """The instruction, trimmed; an EditError for an empty or oversized one."""
    if not isinstance(instruction, str) or not instruction.strip():
        raise EditError("The instruction is empty: say what to change.")
    instruction = instruction.strip()
    if len(instruction) > MAX_INSTRUCTION_CHARS:
        raise EditError(
            f"The instruction is too long ({len(instruction)} characters, at most {MAX_INSTRUCTION_CHARS})."
        )
    return instruction


# ---------------------------------------------------------------------------------------------------
# Context and prompts


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
    imports = [
        data[n.start_byte:n.end_byte].decode("utf-8", "replace")
        for n in tree.root_node.named_children if n.type in languages.IMPORT_TYPES
    ]
    scope = _innermost_scope(tree.root_node, start_b, end_b)
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


def _innermost_scope(root: Node, start_b: int, end_b: int) -> Node | None:
    """The smallest scope node strictly larger than the selection that contains it."""
    best = None
    node = root.descendant_for_byte_range(start_b, max(start_b, end_b - 1)) if end_b > start_b else \
        root.descendant_for_byte_range(start_b, start_b)
    while node is not None:
        covers = node.start_byte <= start_b and end_b <= node.end_byte
        bigger = node.end_byte - node.start_byte > end_b - start_b
        if node.type in SCOPE_TYPES and covers and bigger:
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


def language_name(language: str | None) -> str:
    return LANGUAGE_NAMES.get(language or "", language or "code")


DOC_COMMENT = {
    "python": "Add a docstring to this code: a short summary line, then the arguments and return value.",
    "rust": "Add /// doc comments to this code that say what it does, its arguments and its return value.",
    "go": "Add a Go doc comment above this code that says what it does.",
    "java": "Add a Javadoc comment to this code with @param and @return tags.",
}
DEFAULT_DOC_COMMENT = "Add a documentation comment (JSDoc/Doxygen style /** ... */) above this code."
TYPED_LANGUAGES = {"python", "typescript", "typescriptreact"}


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
    presets = [Preset("Add docstring", DOC_COMMENT.get(language or "", DEFAULT_DOC_COMMENT), preset=DOCSTRING)]
    if language in TYPED_LANGUAGES:
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
    prefix = task.text[:task.line_start] + "\n".join(lines) + "\n" + _fim_lead(task)
    return prefix, task.text[task.end:]


def _fim_lead(task: EditTask) -> str:
    """What the FIM prefix ends with: the code before a mid-line selection, else the indentation."""
    return task.before_on_line if task.before_on_line.strip() else task.indent


def _one_line(text: str) -> str:
    return " ".join(text.split())


# ---------------------------------------------------------------------------------------------------
# Reply parsing

_FENCE = re.compile(r"^[ \t]*(```|~~~)[ \t]*([\w+#.-]*)[^\n]*$", re.MULTILINE)
_PROSE_START = re.compile(
    r"^(here|this|the|sure|certainly|note|explanation|in this|i |i'|it |below|above|you can|we |"
    r"let me|let's|okay|ok,|to |these|that|now|first|then|finally|also|output|example|usage|"
    r"changes|step \d)", re.IGNORECASE)
_WORD = re.compile(r"^[A-Za-z][A-Za-z'’-]*[,.:;!?)]*$")


def extract_code(reply: str) -> str:
    """The code in a model's reply: the first fenced block if any, else the reply minus prose."""
    blocks = _fenced_blocks(reply)
    code = next((b for b in blocks if b.strip()), None)
    if code is None:  # no fence, or only empty ones: whatever is not a fence and not prose
        code = _drop_prose(_FENCE.sub("", reply))
    return code.strip("\n")


def _fenced_blocks(reply: str) -> list[str]:
    """Contents of ``` fenced blocks; an unclosed last fence runs to the end (a truncated reply)."""
    blocks = []
    fences = list(_FENCE.finditer(reply))
    i = 0
    while i < len(fences):
        opening = fences[i]
        body_start = opening.end() + 1
        closing = fences[i + 1] if i + 1 < len(fences) else None
        body_end = closing.start() if closing else len(reply)
        blocks.append(reply[body_start:body_end])
        i += 2
    return blocks


def is_prose(line: str) -> bool:
    """A line that reads as an English sentence rather than code."""
    stripped = line.strip()
    if not stripped or line[:1] in " \t":
        return False
    if stripped.endswith(("{", ";", "}", ")")) and not stripped.endswith("."):
        return False
    tokens = stripped.split()
    words = sum(1 for t in tokens if _WORD.match(t))
    if _PROSE_START.match(stripped) and words >= 2 and words >= 0.6 * len(tokens):
        return True
    return stripped[0].isupper() and len(tokens) >= 4 and words >= 0.8 * len(tokens)


def _drop_prose(reply: str) -> str:
    """Drop prose paragraphs before the first code line and everything from a prose line after it."""
    lines = reply.splitlines()
    first = next((i for i, line in enumerate(lines) if line.strip() and not is_prose(line)), None)
    if first is None:
        return ""
    kept = []
    for line in lines[first:]:
        if is_prose(line):
            break
        kept.append(line)
    return "\n".join(kept).rstrip()


def trim_to_definitions(code: str, selection: str, language: str | None) -> str:
    """If the selection was only definitions, drop trailing non-definition statements from the reply
    (a model's "example usage" after the function is not part of the edit)."""
    if not language or not code.strip():
        return code
    sel_tree = languages.parse(textwrap.dedent(selection), language)
    tree = languages.parse(code, language)
    if sel_tree is None or tree is None or sel_tree.root_node.has_error:
        return code
    sel_nodes = [n for n in sel_tree.root_node.named_children if n.type != "comment"]
    if not sel_nodes or any(n.type not in SCOPE_TYPES for n in sel_nodes):
        return code
    nodes = tree.root_node.named_children
    last_def = max((i for i, n in enumerate(nodes) if n.type in SCOPE_TYPES), default=None)
    if last_def is None or last_def == len(nodes) - 1:
        return code
    data = code.encode("utf-8")
    return data[:nodes[last_def].end_byte].decode("utf-8", "replace")


# ---------------------------------------------------------------------------------------------------
# Re-indentation and validation


def reindent(code: str, task: EditTask) -> str:
    """Fit a dedented block to the selection: its indentation, tabs or spaces, its trailing newline,
    and for an insertion, lines of its own."""
    indent = task.indent
    use_tabs = "\t" in indent
    lines = textwrap.dedent(code if use_tabs else code.expandtabs(4)).splitlines()
    blank_lead = not task.before_on_line.strip()
    out = []
    for i, line in enumerate(lines):
        if use_tabs:  # the model indents with spaces; the file with tabs
            body = line.lstrip(" ")
            spaces = len(line) - len(body)
            line = "\t" * (spaces // 4) + " " * (spaces % 4) + body
        if not line.strip():
            out.append("")
        elif i == 0:
            out.append((indent[len(task.before_on_line):] if blank_lead else "") + line)
        else:
            out.append(indent + line)
    result = "\n".join(out)
    if task.selection:
        return result + "\n" if task.selection.endswith("\n") else result
    if not blank_lead:  # inserting at the end of a line (after a comment): start a new line
        result = "\n" + indent + result
    newline = task.text.find("\n", task.end)
    rest_of_line = task.text[task.end: len(task.text) if newline < 0 else newline]
    if rest_of_line.strip():  # text after the cursor goes on its own line, keeping its indentation
        result += "\n" + indent
    elif task.end == len(task.text):  # at the end of the file: end with a newline
        result += "\n"
    return result


def syntax_problem(text: str, language: str | None) -> str | None:
    """Where the text fails to parse (one line for the user), or None if it parses or can't be checked."""
    if not language:
        return None
    tree = languages.parse(text, language)
    if tree is None or not tree.root_node.has_error:
        return None
    node = _first_error(tree.root_node)
    if node is None:
        return "syntax error"
    line = node.start_point[0]
    snippet = text.splitlines()[line].strip() if line < len(text.splitlines()) else ""
    kind = "missing " + node.type if node.is_missing else "syntax error"
    return f"{kind} at line {line + 1}: {snippet[:60]!r}"


def _first_error(node: Node) -> Node | None:
    if node.is_error or node.is_missing:
        return node
    for child in node.children:
        if child.has_error or child.is_missing:
            found = _first_error(child)
            if found is not None:
                return found
    return None


def check_edit(task: EditTask, replacement: str) -> str | None:
    """Why the replacement must not be applied, or None when it is fine.

    A translation is checked on its own in the target language; any other edit is checked on the
    whole new file, and only if the file parsed before (we don't blame the model for an old error).
    """
    if not replacement.strip():
        return "the model's reply contained no code"
    if task.target_language:
        problem = syntax_problem(replacement, task.target_language)
        return f"the {language_name(task.target_language)} code does not parse ({problem})" if problem else None
    if syntax_problem(task.text, task.language) is not None:
        return None
    new_text = task.text[:task.start] + replacement + task.text[task.end:]
    problem = syntax_problem(new_text, task.language)
    return f"the edited file would not parse ({problem})" if problem else None


def process_reply(task: EditTask, reply: str, in_place: bool = False) -> str:
    """Reply → replacement: extract the code, drop trailing extras, re-indent.

    A chat reply is a block of its own (dedented); an in-place (FIM) reply continues the selection's
    line, so its lines already carry the file's indentation.
    """
    code = _drop_markers(extract_code(reply))
    if in_place:
        if not task.before_on_line.strip():
            code = textwrap.dedent(_fim_lead(task) + code.lstrip("\n"))
        elif code.strip():  # mid-line: the reply is the replacement as it stands
            return code + ("\n" if task.selection.endswith("\n") else "")
    if not task.target_language:
        code = trim_to_definitions(code, task.selection_block, task.language)
        if not in_place:
            code = trim_overlap(code, task)
    if not code.strip():
        return ""
    return reindent(code, task)


def _drop_markers(code: str) -> str:
    """Remove the prompt's placeholders if the model echoed them (a marker line goes entirely)."""
    lines = [line for line in code.split("\n") if "<the code to edit>" not in line]
    return "\n".join(lines).replace("<CURSOR>", "")


OVERLAP_LINES = 10


def trim_overlap(code: str, task: EditTask) -> str:
    """Drop the lines a reply repeats from around the selection (a function header above a selected
    statement, a closing brace below it): they are already in the file and would be doubled."""
    selected = {line.strip() for line in task.selection.splitlines() if line.strip()}
    before = [line.strip() for line in task.text[:task.line_start].splitlines() if line.strip()][-OVERLAP_LINES:]
    after = [line.strip() for line in task.text[task.end:].splitlines() if line.strip()][:OVERLAP_LINES]
    if task.selection and not task.selection.endswith("\n"):
        after = after[1:] if task.text[task.end:].split("\n", 1)[0].strip() else after  # rest of the end line
    lines = code.splitlines()
    while lines and (not lines[0].strip() or (lines[0].strip() in before and lines[0].strip() not in selected)):
        lines.pop(0)
    while lines and (not lines[-1].strip() or (lines[-1].strip() in after and lines[-1].strip() not in selected)):
        lines.pop()
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------
# Running an edit


Progress = Callable[[str, float | None], None]


def run_edit(engine: GenerationEngine, task: EditTask, *, max_new_tokens: int,
             cancel: threading.Event | None = None, progress: Progress | None = None,
             temperature: float = 0.0) -> EditResult:
    """Generate, parse, re-indent and validate; retry once with a note; raise EditError if still bad."""
    task = EditTask(task.text, task.start, task.end, validate_instruction(task.instruction),
                    task.language, task.target_language, task.preset)
    cancel = cancel or threading.Event()
    length = _model_length(engine)
    if length:  # a huge max_tokens setting must not leave the prompt no room
        max_new_tokens = max(1, min(max_new_tokens, length // 2))
    if task.preset == DOCSTRING and engine.is_instruct and doc_targets(task):
        return run_docstring(engine, task, cancel=cancel, progress=progress)
    scope = enclosing_scope(task) if engine.is_instruct else Scope()
    replies: list[str] = []
    problem: str | None = None
    note_override: str | None = None
    for attempt in (1, 2):
        note = None if attempt == 1 else note_override or (
            f"That is not right: {problem}. Reply with the complete, corrected "
            f"{language_name(task.output_language)} code only, in one code block.")
        prompt, prefix = _prompt(engine, task, scope, note, replies[-1] if replies else None)
        if _too_long(engine, prompt, max_new_tokens) and (scope.imports or scope.enclosing):
            scope = Scope()  # the context is a nicety; drop it before refusing
            prompt, prefix = _prompt(engine, task, scope, note, replies[-1] if replies else None)
        if _too_long(engine, prompt, max_new_tokens):
            raise EditError(f"The selection is too long for the model: its prompt would be "
                            f"{engine.count_tokens(prompt)} tokens, at most "
                            f"{_prompt_budget(engine, max_new_tokens)} fit. Select less code.")
        reply = prefix + _generate(engine, prompt, max_new_tokens, cancel, progress, attempt, temperature)
        replies.append(reply)
        if cancel.is_set():
            raise EditCancelled("The edit was cancelled.")
        replacement = process_reply(task, reply, in_place=not engine.is_instruct)
        problem = check_edit(task, replacement)
        if problem is None and _same_code(replacement, task.selection):
            problem = "the model proposed no change"
            note_override = f"You returned the code unchanged. {task.instruction}"
        if problem is None:
            new_text = task.text[:task.start] + replacement + task.text[task.end:]
            return EditResult(replacement, new_text, attempt, replies)
    raise EditError(f"Edit refused: {problem}. The file is unchanged.")


def _model_length(engine: GenerationEngine) -> int | None:
    """The engine's usable context in tokens (None when it doesn't say)."""
    length = getattr(engine, "max_length", None) or getattr(getattr(engine, "info", None), "context_length", None)
    return int(length) if length else None


def _prompt_budget(engine: GenerationEngine, max_new_tokens: int) -> int | None:
    """How many prompt tokens fit beside the reply (None when the engine doesn't say)."""
    length = _model_length(engine)
    return None if length is None else length - max_new_tokens - 1


def _too_long(engine: GenerationEngine, prompt: Any, max_new_tokens: int) -> bool:
    """A chat prompt the engine would have to cut (it cuts from the start: the instructions)."""
    budget = _prompt_budget(engine, max_new_tokens)
    if budget is None or not isinstance(prompt, str) or not hasattr(engine, "count_tokens"):
        return False
    return engine.count_tokens(prompt) > budget


def _same_code(a: str, b: str) -> bool:
    return a.split() == b.split()


def _prompt(engine: GenerationEngine, task: EditTask, scope: Scope, note: str | None,
            previous: str | None) -> tuple[Any, str]:
    """The prompt for this engine, and the text the reply is seeded with (part of the reply)."""
    if engine.is_instruct:
        prefix = reply_prefix(task)
        return engine.chat_prompt(chat_messages(task, scope, note, previous)) + prefix, prefix
    from inference import FimParts  # the inference package is only needed when a model runs

    before, after = fim_prompt(task, note)
    return FimParts(before, after), ""


def _generate(engine: GenerationEngine, prompt: Any, max_new_tokens: int, cancel: threading.Event,
              progress: Progress | None, attempt: int, temperature: float) -> str:
    """Stream the reply, reporting progress per token; stops at the closing fence."""
    text = ""
    label = "writing the edit" if attempt == 1 else "retrying: the first answer did not parse"
    for i, delta in enumerate(engine.generate(prompt, max_new_tokens=max_new_tokens, stop=("```",),
                                              temperature=temperature, cancel=cancel)):
        text += delta
        if progress is not None:
            progress(f"{label} ({i + 1} tokens)", min(1.0, (i + 1) / max_new_tokens))
        if cancel.is_set():
            break
    return text


# ---------------------------------------------------------------------------------------------------
# Docstrings, structurally: the model only writes a one-sentence summary per definition, and we put it
# where the language wants it. A small model asked to "add a docstring" tends to rewrite the function;
# this way the rest of the file stays byte-identical whatever the model says.

DOC_TARGETS = {
    "python": {"function_definition", "class_definition"},
    "javascript": {"function_declaration", "generator_function_declaration", "class_declaration", "method_definition"},
    "typescript": {"function_declaration", "class_declaration", "method_definition", "interface_declaration"},
    "typescriptreact": {"function_declaration", "class_declaration", "method_definition", "interface_declaration"},
    "go": {"function_declaration", "method_declaration", "type_declaration"},
    "rust": {"function_item", "struct_item", "enum_item", "trait_item"},
    "java": {"method_declaration", "constructor_declaration", "class_declaration", "interface_declaration"},
    "c": {"function_definition"},
    "cpp": {"function_definition", "class_specifier"},
}
WRAPPERS = {"export_statement", "template_declaration", "declaration"}  # doc goes before these
MAX_DOC_TARGETS = 8
_LANG_SUFFIX = re.compile(r"\s+(in|using) (Python|Java|JavaScript|TypeScript|Go|Golang|Rust|C\+\+|C)\b.*$")


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
    types = DOC_TARGETS.get(task.language or "")
    if not types or not task.selection.strip():
        return []
    tree = languages.parse(task.text, task.language)
    if tree is None:
        return []
    data = task.text.encode("utf-8")
    to_str = lambda b: len(data[:b].decode("utf-8", "replace"))  # noqa: E731
    targets = []

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
    name = named.text.decode("utf-8", "replace") if named is not None else ""
    kind = "class" if "class" in node.type or "interface" in node.type else \
        "type" if node.type in {"struct_item", "enum_item", "trait_item", "type_declaration"} else \
        "method" if node.type in {"method_definition", "method_declaration"} or _inside_class(node) else "function"
    if task.language == "python":
        body = node.child_by_field_name("body")
        if body is None or not body.children or body.start_point[0] == node.start_point[0]:
            return None  # a one-line definition: no line to put the docstring on
        first = body.children[0]
        if first.type == "expression_statement" and first.named_children and first.named_children[0].type == "string":
            return None  # already documented
        offset = to_str(first.start_byte)
        line_start = task.text.rfind("\n", 0, offset) + 1
        return DocTarget(node, name, kind, offset, task.text[line_start:offset])
    outer = node.parent if node.parent is not None and node.parent.type in WRAPPERS else node
    previous = outer.prev_named_sibling
    if previous is not None and "comment" in previous.type and previous.end_point[0] >= outer.start_point[0] - 1:
        return None  # already documented
    offset = to_str(outer.start_byte)
    if offset < task.start:
        return None
    line_start = task.text.rfind("\n", 0, offset) + 1
    indent = task.text[line_start:offset]
    return DocTarget(node, name, kind, offset, indent if not indent.strip() else "")


def _inside_class(node: Node) -> bool:
    parent = node.parent
    while parent is not None:
        if parent.type in SCOPE_TYPES and ("class" in parent.type or parent.type == "impl_item"):
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


def render_doc(target: DocTarget, summary: str, language: str | None) -> str:
    """The text inserted at `target.offset`: the doc comment and what restores the line's indentation."""
    if language == "python":
        return f'"""{summary.replace(chr(34) * 3, chr(39) * 3).rstrip(chr(92))}"""\n{target.indent}'
    summary = summary.replace("*/", "* /")
    if language == "rust":
        return f"/// {summary}\n{target.indent}"
    if language == "go":
        lead = summary[0].lower() + summary[1:] if summary[:2] != summary[:2].upper() else summary
        return f"// {target.name} {lead}\n{target.indent}" if target.name else f"// {summary}\n{target.indent}"
    return f"/** {summary} */\n{target.indent}"


def run_docstring(engine: GenerationEngine, task: EditTask, *, cancel: threading.Event | None = None,
                  progress: Progress | None = None) -> EditResult:
    """Document each definition in the selection with a one-sentence summary the model writes."""
    cancel = cancel or threading.Event()
    targets = doc_targets(task)
    replies = []
    inserts: list[tuple[int, str]] = []
    data = task.text.encode("utf-8")
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
            inserts.append((target.offset, render_doc(target, summary, task.language)))
    if not inserts:
        raise EditError("Edit refused: the model wrote no description. The file is unchanged.")
    replacement = task.selection
    for offset, doc in sorted(inserts, reverse=True):
        rel = offset - task.start
        replacement = replacement[:rel] + doc + replacement[rel:]
    problem = check_edit(task, replacement)
    if problem is not None:
        raise EditError(f"Edit refused: {problem}. The file is unchanged.")
    return EditResult(replacement, task.text[:task.start] + replacement + task.text[task.end:], 1, replies)


def unified_diff(old: str, new: str, path: str = "file") -> str:
    """A unified diff between two versions of a document (what a client previews)."""
    return "".join(difflib.unified_diff(
        old.splitlines(keepends=True), new.splitlines(keepends=True), f"a/{path}", f"b/{path}"))


def _leading_ws(line: str) -> str:
    return line[: len(line) - len(line.lstrip(" \t"))]
