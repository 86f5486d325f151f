"""Running an edit: prompt, generate, read the reply, validate; one retry that says what was wrong.

`run_edit` is exactly what `infill.edit` runs, so the benchmarks and tests call it directly.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from lsp_server.edit.docstring import doc_targets, run_docstring
from lsp_server.edit.prompts import Scope, chat_messages, enclosing_scope, fim_prompt, reply_prefix
from lsp_server.edit.reply import check_edit, process_reply
from lsp_server.edit.task import (
    DOCSTRING,
    Draft,
    EditCancelled,
    EditError,
    EditResult,
    EditTask,
    Progress,
    language_name,
    validate_instruction,
)

if TYPE_CHECKING:
    from inference.backend import Backend, Cancel


def run_edit(engine: Backend, task: EditTask, *, max_new_tokens: int,
             cancel: Cancel | None = None, progress: Progress | None = None,
             temperature: float = 0.0, draft: Draft | None = None) -> EditResult:
    """Generate, parse, re-indent and validate; retry once with a note; raise EditError if still bad.

    `draft`, if given, hears the replacement read from the reply so far at each line end (for a live
    preview); a retry starts its drafts afresh."""
    task = EditTask(task.text, task.start, task.end, validate_instruction(task.instruction),
                    task.language, task.target_language, task.preset)
    cancel = cancel or threading.Event()
    length = _model_length(engine)
    if length:  # a huge max_tokens setting must not leave the prompt no room
        max_new_tokens = max(1, min(max_new_tokens, length // 2))
    if task.preset == DOCSTRING and engine.is_instruct and doc_targets(task):
        return run_docstring(engine, task, cancel=cancel, progress=progress, draft=draft)
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
        on_line = None if draft is None else _drafts(task, prefix, not engine.is_instruct, draft)
        reply = prefix + _generate(engine, prompt, max_new_tokens, cancel, progress, attempt, temperature, on_line)
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


def _model_length(engine: Backend) -> int | None:
    """The engine's usable context in tokens (None when it doesn't say)."""
    length = getattr(engine, "max_length", None) or getattr(getattr(engine, "info", None), "context_length", None)
    return int(length) if length else None


def _prompt_budget(engine: Backend, max_new_tokens: int) -> int | None:
    """How many prompt tokens fit beside the reply (None when the engine doesn't say)."""
    length = _model_length(engine)
    return None if length is None else length - max_new_tokens - 1


def _too_long(engine: Backend, prompt: Any, max_new_tokens: int) -> bool:
    """A chat prompt the engine would have to cut (it cuts from the start: the instructions)."""
    budget = _prompt_budget(engine, max_new_tokens)
    if budget is None or not isinstance(prompt, str) or not hasattr(engine, "count_tokens"):
        return False
    return engine.count_tokens(prompt) > budget


def _same_code(a: str, b: str) -> bool:
    return a.split() == b.split()


def _prompt(engine: Backend, task: EditTask, scope: Scope, note: str | None,
            previous: str | None) -> tuple[Any, str]:
    """The prompt for this engine, and the text the reply is seeded with (part of the reply)."""
    if engine.is_instruct:
        prefix = reply_prefix(task)
        return engine.chat_prompt(chat_messages(task, scope, note, previous)) + prefix, prefix
    from inference import FimParts  # the inference package is only needed when a model runs

    before, after = fim_prompt(task, note)
    return FimParts(before, after), ""


def _drafts(task: EditTask, prefix: str, in_place: bool, draft: Draft) -> Callable[[str], None]:
    """Reply so far (complete lines) → the replacement it reads as, read the way the final reply is."""
    return lambda reply: draft(process_reply(task, prefix + reply, in_place=in_place))


def _generate(engine: Backend, prompt: Any, max_new_tokens: int, cancel: Cancel,
              progress: Progress | None, attempt: int, temperature: float,
              on_line: Callable[[str], None] | None = None) -> str:
    """Stream the reply, reporting progress per token and the complete lines so far to `on_line`;
    stops at the closing fence."""
    text = ""
    label = "writing the edit" if attempt == 1 else "retrying: the first answer did not parse"
    for i, delta in enumerate(engine.generate(prompt, max_new_tokens=max_new_tokens, stop=("```",),
                                              temperature=temperature, cancel=cancel)):
        text += delta
        if progress is not None:
            progress(f"{label} ({i + 1} tokens)", min(1.0, (i + 1) / max_new_tokens))
        if cancel.is_set():
            break
        if on_line is not None and "\n" in delta:
            on_line(text[:text.rfind("\n") + 1])
    return text
