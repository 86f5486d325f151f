"""Reading an edit's reply: extract the code, drop prose and echoed context, re-indent, validate.

Small models answer loosely (prose around the code, fences, the wrong indentation, a truncated block),
so nothing in the reply is trusted: the code is extracted, re-indented to the selection, and an edit that
would break a file that parsed before is refused with a message for the user.
"""

from __future__ import annotations

import re
import textwrap

from tree_sitter import Node

from lsp_server import languages
from lsp_server.edit.prompts import fim_lead
from lsp_server.edit.task import EditTask, language_name, scope_types

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
    scopes = scope_types(language)
    if not sel_nodes or any(n.type not in scopes for n in sel_nodes):
        return code
    nodes = tree.root_node.named_children
    last_def = max((i for i, n in enumerate(nodes) if n.type in scopes), default=None)
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
            code = textwrap.dedent(fim_lead(task) + code.lstrip("\n"))
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
