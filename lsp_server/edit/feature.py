"""Edit with instruction over LSP: code actions, the `infill.edit` command, versioned `applyEdit`.

Flow: `textDocument/codeAction` offers preset edits ("Add docstring", "Fix the bug" …) whose command
is `infill.edit` with the instruction filled in, so any client runs them without custom code, plus
"Edit with instruction…" (command `infill.editWithInstruction`, handled by clients that can ask the user
for text, which then call `infill.edit`). `infill.edit` generates on a worker thread with cancellable
`$/progress`, validates (see `lsp_server.edit.run`), and applies a `TextDocumentEdit` carrying the document
version, so an edit never lands on text it was not made for.

An edit asked for while the model is still loading waits for it (the progress says so) instead of failing.
A newer edit of a document replaces the one being written for it (that one answers RequestCancelled).
Clients that opt in hear the edit's text while it is written (`lsp_server.edit.stream`), only as a preview.
With `preview` (default: the `editPreview` setting) and a client that takes change annotations, the edit
is annotated `needsConfirmation`, so the editor shows it (VS Code: Refactor Preview, per-hunk accept)
and applies it only when the user accepts; a declined preview is not an error.

`infill.edit` arguments: one object
`{uri, range, version, instruction, apply=true, preview?, targetLanguage?, preset?}`;
result: `{edit: WorkspaceEdit, diff: str, applied: bool, previewed: bool, attempts: int}`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import unquote

from lsprotocol import types
from pygls.exceptions import JsonRpcException, JsonRpcInvalidParams, JsonRpcRequestCancelled

from lsp_server import languages
from lsp_server.edit.prompts import preset_instructions
from lsp_server.edit.run import run_edit
from lsp_server.edit.stream import STREAM_CAPABILITY, STREAM_NOTIFICATION, EditStream, stream_interval
from lsp_server.edit.task import (
    DOCSTRING,
    Draft,
    EditCancelled,
    EditError,
    EditResult,
    EditTask,
    unified_diff,
    validate_instruction,
)
from lsp_server.feature import AnyEvent, Feature, ProgressReporter
from lsp_server.positions import encodable, to_offset

log = logging.getLogger(__name__)

EDIT_COMMAND = "infill.edit"
ASK_COMMAND = "infill.editWithInstruction"  # client-side: ask for an instruction, then run infill.edit
ASK_CAPABILITY = "infillEditWithInstruction"  # client capabilities.experimental flag that enables it
ACTION_KIND = "refactor.rewrite.infill"
REQUEST_FAILED = -32803  # LSP RequestFailed: the request was valid but could not be carried out
CONTENT_MODIFIED = -32801
ANNOTATION_ID = "infill-edit"

@dataclass
class _Running:
    """An edit in flight on one document."""

    cancel: threading.Event = field(default_factory=threading.Event)
    closed: bool = False
    superseded: bool = False  # a newer edit of the same document replaced it
    # Set once the model is done with it: a newer edit waits for that, not for the user's answer to the
    # preview of an edit already written (VS Code's Refactor Preview answers applyEdit only then).
    generated: asyncio.Event = field(default_factory=asyncio.Event)


class EditFeature(Feature):
    """Code actions and the `infill.edit` command."""

    def __init__(self, server) -> None:
        super().__init__(server)
        self._running: dict[str, _Running] = {}
        self._lock = threading.Lock()

    def register(self) -> None:
        # pygls tags handlers with attributes, which bound methods can't carry: register closures.
        def code_action(params: types.CodeActionParams) -> list[types.CodeAction]:
            return self.code_actions(params)

        async def edit_command(*arguments: Any) -> dict:
            return await self.execute(*arguments)

        self.server.feature(
            types.TEXT_DOCUMENT_CODE_ACTION,
            types.CodeActionOptions(code_action_kinds=[ACTION_KIND], resolve_provider=False),
        )(code_action)
        self.server.command(EDIT_COMMAND)(edit_command)

    # --- lifecycle hooks ---------------------------------------------------------------------------

    def on_close(self, uri: str) -> None:
        with self._lock:
            running = self._running.get(_key(uri))
        if running is not None:  # stop generating: the result could not be applied anyway
            running.closed = True
            running.cancel.set()

    # --- code actions ------------------------------------------------------------------------------

    def code_actions(self, params: types.CodeActionParams) -> list[types.CodeAction]:
        """Preset edits for the selection (or code for the comment above an empty one)."""
        doc = self._document(params.text_document.uri)
        if doc is None or not self._wants(params.context.only):
            return []
        text = encodable(doc.source)
        try:
            start = to_offset(text, params.range.start.line, params.range.start.character)
            end = to_offset(text, params.range.end.line, params.range.end.character)
        except ValueError:
            return []
        if end < start:
            return []
        spec = languages.spec_for(doc.language_id, doc.path)
        language = spec.name if spec else None
        base = {"uri": params.text_document.uri, "range": _range_json(params.range), "version": doc.version}
        actions = []
        if self.client.experimental(ASK_CAPABILITY):
            actions.append(_action("Edit with instruction…", ASK_COMMAND, dict(base)))
        if text[start:end].strip():
            for preset in preset_instructions(language, self.server.settings.translate_languages):
                actions.append(_action(preset.title, EDIT_COMMAND, base | preset.arguments()))
        elif end == start:
            comment = comment_above(text, start, languages.comment_prefix(doc.language_id, doc.path))
            if comment:
                actions.append(_action("Write code for this comment", EDIT_COMMAND,
                                       dict(base, instruction=f"Write the code this comment asks for: {comment}")))
        return actions

    def _wants(self, only: Sequence[types.CodeActionKind | str] | None) -> bool:
        kinds = [str(getattr(k, "value", k)) for k in only or ()]
        return not kinds or any(ACTION_KIND == k or ACTION_KIND.startswith(k + ".") for k in kinds)

    # --- the command -------------------------------------------------------------------------------

    async def execute(self, *arguments: Any) -> dict:
        """`infill.edit`: generate, validate, apply (unless apply=false); return the edit and a diff."""
        request = self._parse_arguments(arguments)
        uri, version = request["uri"], request["version"]
        doc = self._document(uri)
        if doc is None:
            raise JsonRpcInvalidParams(f"infill.edit: {uri} is not open in the editor.")
        if version is not None and doc.version != version:
            raise JsonRpcException(f"The document changed (now version {doc.version}, the edit was for "
                                   f"version {version}); nothing was edited.", CONTENT_MODIFIED)
        version = doc.version
        text = encodable(doc.source)
        rng: types.Range = request["range"]
        try:
            start = to_offset(text, rng.start.line, rng.start.character)
            end = to_offset(text, rng.end.line, rng.end.character)
        except ValueError as exc:
            raise JsonRpcInvalidParams(f"infill.edit: the range is outside the document ({exc}).") from None
        if end < start:
            raise JsonRpcInvalidParams("infill.edit: the range ends before it starts.")
        engine = self.server.model.ready()
        if engine is None and not self.server.model.loading:  # failed, or not started: waiting would not help
            why = self.server.model.error or "no model is loaded"
            raise JsonRpcException(f"infill: {why}.", REQUEST_FAILED)
        spec = languages.spec_for(doc.language_id, doc.path)
        task = EditTask(text, start, end, request["instruction"], spec.name if spec else None,
                             request["target_language"], request["preset"])

        key = _key(uri)
        with self._lock:  # the newest edit of a document wins: the one running stops, then this one runs
            previous = self._running.get(key)
            running = self._running[key] = _Running()
        stream = self._stream(uri, version, rng)
        try:
            self._cancel_on_cancel_request(running.cancel)
            if previous is not None:
                previous.superseded = True
                previous.cancel.set()
                await previous.generated.wait()
                _check_still_wanted(running)
            result = await self.off_loop(self._generate, engine, task, running.cancel,
                                         stream.draft if stream else None)
            running.generated.set()
            _check_still_wanted(running)
            if isinstance(result, EditCancelled):
                raise JsonRpcRequestCancelled("The edit was cancelled; nothing was applied.")
            if isinstance(result, EditError):
                raise JsonRpcException(str(result), REQUEST_FAILED)
            current = self._document(uri)
            if current is None or current.version != version:
                raise JsonRpcException("The document changed while the edit was being written; nothing was "
                                       "applied.", CONTENT_MODIFIED)
            if stream is not None:  # before the edit itself, so the preview ends as the edit arrives
                stream.finish(result.replacement)
            label = f"infill: {request['instruction'][:60]}"
            previewed = bool(request["apply"] and request["preview"] and self.client.change_annotations)
            workspace_edit = self._workspace_edit(uri, version, rng, result.replacement,
                                                  label if previewed else None)
            diff = unified_diff(text, result.new_text, PurePosixPath(unquote(uri)).name or "document")
            applied = False
            if request["apply"] and self.client.apply_edit:
                response = await self.server.workspace_apply_edit_async(types.ApplyWorkspaceEditParams(
                    edit=workspace_edit, label=label))
                if not response.applied and not (previewed and not response.failure_reason):
                    reason = response.failure_reason or "the editor refused it (the document may have changed)"
                    raise JsonRpcException(f"The edit was not applied: {reason}.", REQUEST_FAILED)
                applied = bool(response.applied)  # a declined preview is the user's answer, not an error
            return {"edit": self.server.protocol._converter.unstructure(workspace_edit), "diff": diff,
                    "applied": applied, "previewed": previewed, "attempts": result.attempts}
        except JsonRpcException as exc:
            if stream is not None:
                stream.fail(exc.message, cancelled=exc.code == JsonRpcRequestCancelled.CODE)
            raise
        except BaseException:  # the request's task cancelled, or a bug: the preview must still end
            if stream is not None:
                stream.fail("The edit stopped; nothing was applied.", cancelled=True)
            raise
        finally:
            with self._lock:
                if self._running.get(key) is running:
                    self._running.pop(key)
            running.generated.set()

    def _stream(self, uri: str, version: int, rng: types.Range) -> EditStream | None:
        """The preview stream of this edit, for a client that opted in (None otherwise).

        Drafts come from the worker thread and go out through the event loop (the transport is the loop's),
        queued before the command's answer, so a client hears them in order and before the edit."""
        interval = stream_interval(self.client.experimental_value(STREAM_CAPABILITY))
        if interval is None:
            return None
        loop = asyncio.get_running_loop()
        loop_thread = threading.get_ident()
        notify = self.server.protocol.notify

        def send(params: dict[str, Any]) -> None:
            if threading.get_ident() == loop_thread:
                notify(STREAM_NOTIFICATION, params)
                return
            try:
                loop.call_soon_threadsafe(notify, STREAM_NOTIFICATION, params)
            except RuntimeError:  # the loop is closed (the server is exiting): a preview is not worth failing
                pass

        head = {"id": self.server.protocol.msg_id, "uri": uri, "version": version, "range": _range_json(rng)}
        return EditStream(send, head, interval)

    def _generate(self, engine, task: EditTask, cancel: threading.Event,
                  draft: Draft | None = None) -> EditResult | EditError:
        """Worker thread: run the edit with cancellable progress (waiting first for a model still loading);
        errors are returned, not raised."""
        progress = ProgressReporter(self.server, "infill: edit", cancellable=True)
        either = AnyEvent(cancel, progress.cancelled)  # the request's cancel or the progress cancel button

        def report(message: str, fraction: float | None) -> None:
            progress.report(message, fraction)

        try:
            if engine is None:
                report("waiting for the model to load", None)
                engine = self.server.model.wait_ready(cancel)
                if engine is None:
                    why = "The edit was cancelled." if cancel.is_set() else \
                        f"infill: {self.server.model.error or 'the model did not load'}."
                    progress.end(why)
                    return EditCancelled(why) if cancel.is_set() else EditError(why)
            report("reading the code", 0.0)
            result = run_edit(engine, task, max_new_tokens=self.server.settings.edit_max_tokens,
                                   cancel=either, progress=report, temperature=self.server.settings.temperature,
                                   draft=draft)
            progress.end(f"done ({result.attempts} attempt{'s' if result.attempts > 1 else ''})")
            return result
        except EditError as exc:
            progress.end(str(exc))
            return exc
        except Exception as exc:  # the model failed: a clear error for this request, the server lives on
            log.exception("edit failed")
            progress.end(f"failed: {exc}")
            return EditError(f"The edit failed: {exc}")

    def _cancel_on_cancel_request(self, cancel: threading.Event) -> None:
        """Set `cancel` when the client sends `$/cancelRequest` for this executeCommand request.

        pygls cancels the request's future but not the coroutine running the command (it runs under a
        future of its own), so we watch the request's future.
        """
        protocol = self.server.protocol
        future = protocol._request_futures.get(protocol.msg_id) if protocol.msg_id is not None else None
        if future is not None:
            future.add_done_callback(lambda f: cancel.set() if f.cancelled() else None)

    def _workspace_edit(self, uri: str, version: int, rng: types.Range, new_text: str,
                        confirm: str | None = None) -> types.WorkspaceEdit:
        """A versioned `TextDocumentEdit`, or plain `changes` for clients without documentChanges. With
        `confirm` (a label), the edit carries a change annotation that needs the user's confirmation."""
        if not self.client.versioned_edits:
            return types.WorkspaceEdit(changes={uri: [types.TextEdit(range=rng, new_text=new_text)]})
        text_edit: types.TextEdit | types.AnnotatedTextEdit = types.TextEdit(range=rng, new_text=new_text)
        annotations = None
        if confirm is not None:
            text_edit = types.AnnotatedTextEdit(range=rng, new_text=new_text, annotation_id=ANNOTATION_ID)
            annotations = {ANNOTATION_ID: types.ChangeAnnotation(
                label=confirm, needs_confirmation=True, description="written by the model: review before applying")}
        return types.WorkspaceEdit(document_changes=[types.TextDocumentEdit(
            text_document=types.OptionalVersionedTextDocumentIdentifier(uri=uri, version=version),
            edits=[text_edit])], change_annotations=annotations)

    def _parse_arguments(self, arguments: tuple[Any, ...]) -> dict:
        """Validate the command's one argument object; a clear InvalidParams for anything else."""
        if len(arguments) != 1 or not isinstance(arguments[0], dict):
            raise JsonRpcInvalidParams(
                "infill.edit takes one object argument: {uri, range, version, instruction, apply?}.")
        raw = arguments[0]
        uri = raw.get("uri")
        if not isinstance(uri, str) or not uri:
            raise JsonRpcInvalidParams("infill.edit: 'uri' must be a document URI.")
        try:
            rng = self.server.protocol._converter.structure(raw.get("range"), types.Range)
        except Exception:
            raise JsonRpcInvalidParams("infill.edit: 'range' must be an LSP range "
                                       "{start: {line, character}, end: {line, character}}.") from None
        version = raw.get("version")
        if version is not None and (not isinstance(version, int) or isinstance(version, bool)):
            raise JsonRpcInvalidParams("infill.edit: 'version' must be the document's version number.")
        try:
            instruction = validate_instruction(raw.get("instruction"))
        except EditError as exc:
            raise JsonRpcInvalidParams(f"infill.edit: {exc}") from None
        target = raw.get("targetLanguage")
        target_spec = languages.spec_for(target) if isinstance(target, str) else None
        if target is not None and target_spec is None:
            raise JsonRpcInvalidParams(f"infill.edit: unknown targetLanguage {target!r}.")
        preset = raw.get("preset")
        if preset is not None and preset != DOCSTRING:
            raise JsonRpcInvalidParams(f"infill.edit: unknown preset {preset!r}.")
        preview = raw.get("preview", self.server.settings.edit_preview)
        if not isinstance(preview, bool):
            raise JsonRpcInvalidParams("infill.edit: 'preview' must be true or false.")
        return {"uri": uri, "range": rng, "version": version, "instruction": instruction, "preset": preset,
                "apply": raw.get("apply", True) is not False, "preview": preview,
                "target_language": target_spec.name if target_spec else None}

    def _document(self, uri: str):
        """The open document for a URI, or None (never a file read from disk)."""
        docs = self.server.workspace.text_documents
        return docs.get(uri) or docs.get(unquote(uri))


def comment_above(text: str, offset: int, prefix: str) -> str | None:
    """The comment on the cursor's line (cursor after it) or on the nearest line above a blank cursor
    line; None when there is no such comment. Consecutive comment lines are joined."""
    line_start = text.rfind("\n", 0, offset) + 1
    line_end = text.find("\n", offset)
    line = text[line_start: len(text) if line_end < 0 else line_end]
    lines = text[:line_start].splitlines()
    if line.strip():
        if not line.strip().startswith(prefix) or text[offset:len(text) if line_end < 0 else line_end].strip():
            return None
        lines.append(line)
    block = []
    for previous in reversed(lines):
        stripped = previous.strip()
        if not stripped.startswith(prefix):
            break
        block.append(stripped[len(prefix):].strip())
    block = [b for b in reversed(block) if b]
    return " ".join(block) if block else None


def _check_still_wanted(running: _Running) -> None:
    """Raise the error that says why an edit must not be applied: its document closed, a newer edit of
    the document replaced it, or it was cancelled."""
    if running.closed:
        raise JsonRpcException("The document was closed during the edit; nothing was applied.", REQUEST_FAILED)
    if running.superseded:
        raise JsonRpcRequestCancelled("A newer edit of this document replaced this one; nothing was applied.")
    if running.cancel.is_set():
        raise JsonRpcRequestCancelled("The edit was cancelled; nothing was applied.")


def _action(title: str, command: str, args: dict) -> types.CodeAction:
    return types.CodeAction(title=title, kind=ACTION_KIND,
                            command=types.Command(title=title, command=command, arguments=[args]))


def _range_json(rng: types.Range) -> dict:
    return {"start": {"line": rng.start.line, "character": rng.start.character},
            "end": {"line": rng.end.line, "character": rng.end.character}}


def _key(uri: str) -> str:
    return unquote(uri)
