"""An edit as data: the document, the selected span, the instruction; what comes back; what can go wrong.

Knows nothing of LSP (`feature` turns positions into offsets and results into a versioned `WorkspaceEdit`)
and nothing of the model: edits run on any `inference.Backend`.
"""

from __future__ import annotations

import difflib
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lsp_server import languages
from lsp_server.syntax import leading_whitespace

MAX_INSTRUCTION_CHARS = 2000
DOCSTRING = "docstring"  # the structured "Add docstring" preset

Progress = Callable[[str, float | None], None]
Draft = Callable[[str], None]  # the replacement so far, as the model writes it (a preview, never applied)


class EditError(Exception):
    """An edit we refuse; the message says why, in words for the user."""


class EditCancelled(EditError):
    """The user cancelled the edit; nothing is applied."""


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
            return leading_whitespace(line)
        for above in reversed(self.text[:self.line_start].splitlines()):
            if above.strip():
                return leading_whitespace(above)
        return ""

    @property
    def output_language(self) -> str | None:
        return self.target_language or self.language


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


def language_name(language: str | None) -> str:
    """How prompts and titles name a language ("C++"); the id itself for one without a row."""
    spec = languages.named(language)
    return spec.display_name if spec else language or "code"


def unified_diff(old: str, new: str, path: str = "file") -> str:
    """A unified diff between two versions of a document (what a client previews)."""
    return "".join(difflib.unified_diff(
        old.splitlines(keepends=True), new.splitlines(keepends=True), f"a/{path}", f"b/{path}"))


def scope_types(language: str | None) -> tuple[str, ...]:
    """An edit's scopes: the language's named definitions (a python decorated definition among them)."""
    spec = languages.named(language)
    return spec.scopes if spec else ()
