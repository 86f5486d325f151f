"""Edit with instruction end to end: a real pytest-lsp client, the real server, the real default model.

The client plays an editor: it keeps its own copy of each document, applies `workspace/applyEdit` only
when the edit's version matches its document (like VS Code and Neovim do), then sends `didChange`.
Tests that need no model (code action list, stale version, bad input) run first and fast.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Union

import pytest
import pytest_lsp
from lsp_support import MODEL_TIMEOUT, SERVER, wait_for_model
from lsprotocol import types
from pygls.exceptions import JsonRpcException
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities

from lsp_server import languages
from lsp_server.positions import to_offset

ROOT = Path(__file__).resolve().parents[1]

AVERAGE = '''import math


def average(numbers):
    total = 0
    for n in numbers:
        total += n
    return total / len(numbers)


def norm(x, y):
    return math.sqrt(x * x + y * y)
'''

# Long enough that reading it (prefill) takes the model a few seconds: cancel and close land mid-edit.
BIG = "import math\n\n" + "\n\n".join(
    f"def average_{i}(numbers):\n    total = 0\n    for n in numbers:\n        total += n\n"
    "    return total / len(numbers)\n"
    for i in range(30))

pytestmark = [pytest.mark.e2e]


class Editor:
    """The client's side of the documents: text, version, and the edits it was asked to apply."""

    def __init__(self, client: LanguageClient) -> None:
        self.client = client
        self.docs: dict[str, tuple[str, int]] = {}
        self.applied: list[types.ApplyWorkspaceEditParams] = []
        self.refused: list[types.ApplyWorkspaceEditParams] = []
        self.declined: list[types.ApplyWorkspaceEditParams] = []
        self.decline = False  # the user answers a preview that needs confirmation with "Discard"
        client.feature(types.WORKSPACE_APPLY_EDIT)(self.handler())

    def handler(self):
        return lambda params: self.apply_edit(params)

    def open(self, name: str, text: str, language: str = "python") -> str:
        uri = (ROOT / "tests" / "_edit_docs" / name).as_uri()
        self.docs[uri] = (text, 1)
        self.client.text_document_did_open(types.DidOpenTextDocumentParams(
            text_document=types.TextDocumentItem(uri=uri, language_id=language, version=1, text=text)))
        return uri

    def change(self, uri: str, text: str) -> None:
        version = self.docs[uri][1] + 1
        self.docs[uri] = (text, version)
        self.client.text_document_did_change(types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
            content_changes=[types.TextDocumentContentChangeWholeDocument(text=text)]))

    def close(self, uri: str) -> None:
        self.client.text_document_did_close(types.DidCloseTextDocumentParams(
            text_document=types.TextDocumentIdentifier(uri=uri)))

    def apply_edit(self, params: types.ApplyWorkspaceEditParams) -> types.ApplyWorkspaceEditResult:
        for change in params.edit.document_changes or []:
            uri, version = change.text_document.uri, change.text_document.version
            if uri not in self.docs or self.docs[uri][1] != version:
                self.refused.append(params)
                return types.ApplyWorkspaceEditResult(applied=False, failure_reason="version mismatch")
        needs_confirmation = any(a.needs_confirmation for a in (params.edit.change_annotations or {}).values())
        if self.decline and needs_confirmation:
            self.declined.append(params)
            return types.ApplyWorkspaceEditResult(applied=False)  # what VS Code answers a discarded preview
        self.applied.append(params)
        for change in params.edit.document_changes or []:
            text = self.docs[change.text_document.uri][0]
            for e in sorted(change.edits, key=lambda e: (e.range.start.line, e.range.start.character), reverse=True):
                start = to_offset(text, e.range.start.line, e.range.start.character)
                end = to_offset(text, e.range.end.line, e.range.end.character)
                text = text[:start] + e.new_text + text[end:]
            self.change(change.text_document.uri, text)
        return types.ApplyWorkspaceEditResult(applied=True)

    def text(self, uri: str) -> str:
        return self.docs[uri][0]

    def version(self, uri: str) -> int:
        return self.docs[uri][1]


def span(text: str, fragment: str) -> types.Range:
    """The LSP range of a fragment of text (UTF-16 positions)."""
    from lsp_server.positions import to_position

    start = text.index(fragment)
    (l1, c1), (l2, c2) = to_position(text, start), to_position(text, start + len(fragment))
    return types.Range(start=types.Position(line=l1, character=c1), end=types.Position(line=l2, character=c2))


def range_json(rng: types.Range) -> dict:
    return {"start": {"line": rng.start.line, "character": rng.start.character},
            "end": {"line": rng.end.line, "character": rng.end.character}}


def _command_or_code_action(obj, _type):
    """lsprotocol structures every result item that has a "command" key as a Command, including a
    CodeAction whose command is an object; tell them apart by the type of "command"."""
    if isinstance(obj.get("command"), str):
        return _converter.structure(obj, types.Command)
    return _converter.structure(obj, types.CodeAction)


_converter = None
UNASKED_STREAM: list = []  # infill/editStream notifications the module's client (not opted in) received
EVENTS: list[tuple[str, Any]] = []  # the streaming client's ("stream" | "apply", params), in arrival order


@pytest_lsp.fixture(config=ClientServerConfig(server_command=SERVER), scope="module")
async def client(lsp_client: LanguageClient):
    global _converter
    _converter = lsp_client.protocol._converter
    # the typing.Union object is the key lsprotocol's converter looks up: `X | Y` is another object
    _converter.register_structure_hook(Union[types.Command, types.CodeAction], _command_or_code_action)  # noqa: UP007
    # other features register file watchers dynamically; an editor accepts that
    lsp_client.feature(types.CLIENT_REGISTER_CAPABILITY)(lambda params: None)
    caps = client_capabilities("visual-studio-code")
    caps.experimental = {"infillEditWithInstruction": True}
    lsp_client.feature("infill/editStream")(lambda params: UNASKED_STREAM.append(params))  # not opted in
    await lsp_client.initialize_session(types.InitializeParams(
        capabilities=caps, initialization_options={"edit_max_tokens": 160}))
    yield
    await lsp_client.shutdown_session()


@pytest.fixture(scope="module")
def editor(client: LanguageClient) -> Editor:
    return Editor(client)


async def execute(client: LanguageClient, args: dict, msg_id: str | None = None):
    return await client.protocol.send_request_async(
        types.WORKSPACE_EXECUTE_COMMAND,
        types.ExecuteCommandParams(command="infill.edit", arguments=[args]), msg_id=msg_id)


async def code_actions(client: LanguageClient, uri: str, rng: types.Range, only=None) -> list[types.CodeAction]:
    return await client.text_document_code_action_async(types.CodeActionParams(
        text_document=types.TextDocumentIdentifier(uri=uri), range=rng,
        context=types.CodeActionContext(diagnostics=[], only=only))) or []


async def wait_for_edit_progress(client: LanguageClient, seen: set) -> str:
    """The token of a new "infill: edit" progress (the edit has started reading the code)."""
    for _ in range(1200):
        for token, values in list(client.progress_reports.items()):
            if token in seen or not values:
                continue
            begin = values[0]
            if isinstance(begin, types.WorkDoneProgressBegin) and begin.title == "infill: edit":
                seen.add(token)
                return token
        await asyncio.sleep(0.05)
    pytest.fail("no edit progress")


def titles(actions: list[types.CodeAction]) -> list[str]:
    return [a.title for a in actions]


# --- no model needed ---------------------------------------------------------------------------------


@pytest.mark.asyncio(loop_scope="module")
async def test_code_action_list(client: LanguageClient, editor: Editor) -> None:
    uri = editor.open("actions.py", AVERAGE)
    actions = await code_actions(client, uri, span(AVERAGE, AVERAGE[AVERAGE.index("def "
                                                                                  "average"):AVERAGE.index("\n\n\ndef "
                                                                                                           "norm")]))
    assert titles(actions) == ["Edit with instruction…", "Add docstring", "Add type hints", "Fix the bug", "Simplify",
                               "Add error handling", "Translate to JavaScript", "Translate to Rust"]
    ask = actions[0].command
    assert ask.command == "infill.editWithInstruction" and ask.arguments[0]["version"] == 1
    for action in actions[1:]:
        args = action.command.arguments[0]
        assert action.command.command == "infill.edit" and args["uri"] == uri and args["version"] == 1
        assert args["instruction"] and action.kind == "refactor.rewrite.infill"
    assert actions[-1].command.arguments[0]["targetLanguage"] == "rust"

    # an empty selection under a comment: write code for it
    doc = "def squares(xs):\n    # return the squares of xs\n    \n"
    uri2 = editor.open("comment.py", doc)
    pos = types.Position(line=2, character=4)
    actions = await code_actions(client, uri2, types.Range(start=pos, end=pos))
    assert titles(actions) == ["Edit with instruction…", "Write code for this comment"]
    assert "return the squares of xs" in actions[1].command.arguments[0]["instruction"]

    # an empty selection elsewhere: nothing preset; a client filtering for quick fixes: nothing at all
    pos = types.Position(line=0, character=3)
    assert titles(await code_actions(client, uri2, types.Range(start=pos, end=pos))) == ["Edit with instruction…"]
    assert await code_actions(client, uri, span(AVERAGE, "total = 0"), only=[types.CodeActionKind.QuickFix]) == []
    assert len(await code_actions(client, uri, span(AVERAGE, "total = 0"), only=[types.CodeActionKind.Refactor])) > 1


@pytest.mark.asyncio(loop_scope="module")
async def test_go_file_has_no_type_hint_action(client: LanguageClient, editor: Editor) -> None:
    doc = "package main\n\nfunc Add(a, b int) int {\n\treturn a + b\n}\n"
    uri = editor.open("add.go", doc, "go")
    names = titles(await code_actions(client, uri, span(doc, "func Add(a, b int) int {\n\treturn a + b\n}")))
    assert "Add docstring" in names and "Add type hints" not in names and "Translate to Rust" in names


@pytest.mark.asyncio(loop_scope="module")
async def test_stale_version_is_refused(client: LanguageClient, editor: Editor) -> None:
    uri = editor.open("stale.py", AVERAGE)
    editor.change(uri, AVERAGE + "\n")  # the user typed after asking
    applied = len(editor.applied)
    with pytest.raises(JsonRpcException) as err:
        await execute(client, {"uri": uri, "range": range_json(span(AVERAGE, "total = 0")), "version": 1,
                               "instruction": "Start the total at 0.0"})
    assert err.value.code == -32801 and "changed" in err.value.message
    assert len(editor.applied) == applied and editor.text(uri) == AVERAGE + "\n"


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("args, words", [
    ({"instruction": ""}, "empty"),
    ({"instruction": "x" * 10_000}, "too long"),
    ({"range": {"start": {"line": 99, "character": 0}, "end": {"line": 100, "character": 0}}}, "outside"),
    ({"range": {"start": {"line": 3, "character": 0}, "end": {"line": 1, "character": 0}}}, "before it starts"),
    ({"range": "everything"}, "range"),
    ({"uri": "file:///nowhere/never-opened.py"}, "not open"),
    ({"targetLanguage": "cobol"}, "targetLanguage"),
])
async def test_bad_input_is_a_clear_error(client: LanguageClient, editor: Editor, args: dict, words: str) -> None:
    uri = editor.open("bad.py", AVERAGE)
    request = {"uri": uri, "range": range_json(span(AVERAGE, "total = 0")), "version": editor.version(uri),
               "instruction": "Start at zero"} | args
    applied = len(editor.applied)
    with pytest.raises(JsonRpcException) as err:
        await execute(client, request)
    assert err.value.code == -32602 and words in err.value.message
    assert len(editor.applied) == applied and editor.text(uri) == AVERAGE


@pytest.mark.asyncio(loop_scope="module")
async def test_arguments_that_are_not_an_object_are_a_clear_error(client: LanguageClient) -> None:
    with pytest.raises(JsonRpcException) as err:
        await client.workspace_execute_command_async(
            types.ExecuteCommandParams(command="infill.edit", arguments=["file:///x.py", 3]))
    assert err.value.code == -32602 and "one object argument" in err.value.message


# --- with the real model -----------------------------------------------------------------------------


def first_statement_is_docstring(text: str, function: str) -> bool:
    tree = languages.parse(text, "python")
    for node in tree.root_node.named_children:
        if node.type == "function_definition" and node.child_by_field_name("name").text.decode() == function:
            body = node.child_by_field_name("body").named_children
            return bool(body) and body[0].type == "expression_statement" and body[0].named_children[0].type == "string"
    return False


@pytest.mark.slow
@pytest.mark.asyncio(loop_scope="module")
async def test_preset_add_docstring_is_applied_with_the_document_version(client: LanguageClient,
                                                                        editor: Editor) -> None:
    await wait_for_model(client)
    uri = editor.open("docstring.py", AVERAGE)
    selection = AVERAGE[AVERAGE.index("def average"):AVERAGE.index("\n\n\ndef norm") + 1]
    actions = await code_actions(client, uri, span(AVERAGE, selection))
    docstring = next(a for a in actions if a.title == "Add docstring")
    result = await client.workspace_execute_command_async(types.ExecuteCommandParams(
        command=docstring.command.command, arguments=docstring.command.arguments))
    assert result["applied"] is True
    applied = editor.applied[-1]
    assert applied.edit.document_changes[0].text_document.version == 1  # the version the action was made for
    new = editor.text(uri)
    assert editor.version(uri) == 2 and new != AVERAGE
    assert first_statement_is_docstring(new, "average")
    assert not languages.parse(new, "python").root_node.has_error
    # everything outside the selection is byte-identical
    start = AVERAGE.index(selection)
    assert new.startswith(AVERAGE[:start]) and new.endswith(AVERAGE[start + len(selection):])
    assert result["diff"].startswith("--- a/docstring.py\n+++ b/docstring.py\n") and '"""' in result["diff"]


@pytest.mark.slow
@pytest.mark.asyncio(loop_scope="module")
async def test_write_code_for_a_comment_on_an_empty_selection_with_non_ascii_text(client: LanguageClient,
                                                                                  editor: Editor) -> None:
    """An empty range inserts new code; positions are UTF-16 (the emoji before it is two units)."""
    await wait_for_model(client)
    doc = "# café 🎉 utilities\n\n\ndef squares(xs):\n    # return the squares of xs 🎉\n    \n"
    uri = editor.open("squares.py", doc)
    pos = types.Position(line=5, character=4)
    action = next(a for a in await code_actions(client, uri, types.Range(start=pos, end=pos))
                  if a.title == "Write code for this comment")
    result = await client.workspace_execute_command_async(types.ExecuteCommandParams(
        command=action.command.command, arguments=action.command.arguments))
    assert result["applied"] is True
    new = editor.text(uri)
    head = doc[:to_offset(doc, 5, 4)]  # everything before the cursor
    assert new.startswith(head) and len(new) > len(doc)  # inserted at the cursor, nothing before it touched
    assert not languages.parse(new, "python").root_node.has_error
    body = new[len(head):]
    assert body.strip() and "def squares" not in body  # new code, not a copy of the enclosing header


@pytest.mark.slow
@pytest.mark.asyncio(loop_scope="module")
async def test_instruction_edit_preview_then_apply(client: LanguageClient, editor: Editor) -> None:
    await wait_for_model(client)
    doc = "def avg(xs):\n    return sum(xs) / len(xs)\n"
    uri = editor.open("rename.py", doc)
    args = {"uri": uri, "range": range_json(span(doc, doc)), "version": 1,
            "instruction": "Rename the function avg to mean.", "apply": False}
    applied_before = len(editor.applied)
    preview = await execute(client, args)
    assert preview["applied"] is False and editor.text(uri) == doc and len(editor.applied) == applied_before
    change = preview["edit"]["documentChanges"][0]
    assert change["textDocument"] == {"uri": uri, "version": 1}
    (text_edit,) = change["edits"]
    start, end = text_edit["range"]["start"], text_edit["range"]["end"]
    previewed = doc[:to_offset(doc, start["line"], start["character"])] + text_edit["newText"] \
        + doc[to_offset(doc, end["line"], end["character"]):]
    assert previewed != doc and not languages.parse(previewed, "python").root_node.has_error
    assert preview["diff"].startswith("--- a/rename.py\n+++ b/rename.py\n")

    applied = await execute(client, args | {"apply": True})
    assert applied["applied"] is True and applied["diff"] == preview["diff"]  # greedy decoding: the same edit
    assert editor.applied[-1].edit.document_changes[0].text_document.version == 1
    assert editor.text(uri) == previewed and editor.version(uri) == 2
    assert UNASKED_STREAM == []  # no opt-in, no stream


@pytest.mark.slow
@pytest.mark.asyncio(loop_scope="module")
async def test_reply_that_breaks_the_file_is_refused(client: LanguageClient, editor: Editor) -> None:
    """A reply cut short by the token budget is broken code; the server retries, then refuses it."""
    await wait_for_model(client)
    uri = editor.open("broken.py", AVERAGE)
    selection = AVERAGE[AVERAGE.index("def average"):AVERAGE.index("\n\n\ndef norm") + 1]
    client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings={"edit_max_tokens": 12}))
    try:
        with pytest.raises(JsonRpcException) as err:
            await execute(client, {"uri": uri, "range": range_json(span(AVERAGE, selection)), "version": 1,
                                   "instruction": "Add a docstring and type hints."})
    finally:
        client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings={"edit_max_tokens": 160}))
    assert err.value.code == -32803
    assert "Edit refused" in err.value.message and "not parse" in err.value.message
    assert editor.text(uri) == AVERAGE and editor.version(uri) == 1


@pytest.mark.slow
@pytest.mark.asyncio(loop_scope="module")
async def test_cancel_request_stops_the_edit_and_applies_nothing(client: LanguageClient, editor: Editor) -> None:
    await wait_for_model(client)
    uri = editor.open("cancel.py", BIG)
    seen = set(client.progress_reports)
    args = {"uri": uri, "range": range_json(span(BIG, BIG)), "version": 1,
            "instruction": "Add docstrings and type hints to every function."}
    request = asyncio.ensure_future(execute(client, args, msg_id="edit-to-cancel"))
    token = await wait_for_edit_progress(client, seen)
    client.protocol.notify("$/cancelRequest", types.CancelParams(id="edit-to-cancel"))
    with pytest.raises(JsonRpcException) as err:
        await request
    assert err.value.code == -32800
    await wait_for_end(client, token)
    assert editor.text(uri) == BIG and not [a for a in editor.applied
                                               if a.edit.document_changes[0].text_document.uri == uri]
    # the document is free again: a new edit is not refused as overlapping (it is cancelled at once too)
    seen = set(client.progress_reports)
    request = asyncio.ensure_future(execute(client, args, msg_id="edit-to-cancel-2"))
    token = await wait_for_edit_progress(client, seen)
    # the progress cancel button
    client.window_work_done_progress_cancel(types.WorkDoneProgressCancelParams(token=token))
    with pytest.raises(JsonRpcException) as err:
        await request
    assert err.value.code == -32800 and "cancelled" in err.value.message
    assert editor.text(uri) == BIG


async def wait_for_end(client: LanguageClient, token: str) -> None:
    for _ in range(400):
        if any(isinstance(v, types.WorkDoneProgressEnd) for v in client.progress_reports[token]):
            return
        await asyncio.sleep(0.05)
    pytest.fail("the edit's progress never ended")


@pytest.mark.slow
@pytest.mark.asyncio(loop_scope="module")
async def test_overlapping_edit_and_close_during_generation(client: LanguageClient, editor: Editor) -> None:
    await wait_for_model(client)
    uri = editor.open("overlap.py", BIG)
    seen = set(client.progress_reports)
    args = {"uri": uri, "range": range_json(span(BIG, BIG)), "version": 1,
            "instruction": "Add docstrings and type hints to every function."}
    first = asyncio.ensure_future(execute(client, args))
    await wait_for_edit_progress(client, seen)
    # a newer edit of the same document replaces the running one: that one stops, applying nothing
    second = asyncio.ensure_future(execute(client, args | {"instruction": "Add type hints to every function."}))
    with pytest.raises(JsonRpcException) as err:
        await first
    assert err.value.code == -32800 and "newer edit" in err.value.message
    await wait_for_edit_progress(client, seen)
    editor.close(uri)
    with pytest.raises(JsonRpcException) as err:
        await second
    assert "closed" in err.value.message
    assert editor.text(uri) == BIG and not [a for a in editor.applied
                                               if a.edit.document_changes[0].text_document.uri == uri]


@pytest.mark.slow
@pytest.mark.asyncio(loop_scope="module")
async def test_edit_is_previewed_for_confirmation_and_a_declined_preview_changes_nothing(
        client: LanguageClient, editor: Editor) -> None:
    """A client with change annotations gets the edit annotated needsConfirmation (VS Code shows Refactor
    Preview); "Discard" is the user's answer, not an error. `preview: false` applies a plain edit."""
    await wait_for_model(client)
    doc = "def avg(xs):\n    return sum(xs) / len(xs)\n"
    uri = editor.open("confirm.py", doc)
    args = {"uri": uri, "range": range_json(span(doc, doc)), "version": 1,
            "instruction": "Rename the function avg to mean."}
    editor.decline = True
    try:
        declined = await execute(client, args)
    finally:
        editor.decline = False
    assert declined["applied"] is False and declined["previewed"] is True
    assert editor.text(uri) == doc and editor.version(uri) == 1
    sent = editor.declined[-1].edit
    (annotation_id, annotation), = sent.change_annotations.items()
    assert annotation.needs_confirmation is True and annotation.label.startswith("infill: Rename")
    (text_edit,) = sent.document_changes[0].edits
    assert isinstance(text_edit, types.AnnotatedTextEdit) and text_edit.annotation_id == annotation_id
    assert sent.document_changes[0].text_document.version == 1

    applied = await execute(client, args | {"preview": False})
    assert applied["applied"] is True and applied["previewed"] is False
    plain = editor.applied[-1].edit
    assert not plain.change_annotations
    assert not isinstance(plain.document_changes[0].edits[0], types.AnnotatedTextEdit)
    assert editor.text(uri) != doc and editor.version(uri) == 2

    with pytest.raises(JsonRpcException) as err:
        await execute(client, args | {"preview": "yes", "version": 2})
    assert err.value.code == -32602 and "preview" in err.value.message


@pytest_lsp.fixture(config=ClientServerConfig(server_command=SERVER))
async def loading_client(lsp_client: LanguageClient):
    """A server that has only just started: its model is still loading."""
    lsp_client.feature(types.CLIENT_REGISTER_CAPABILITY)(lambda params: None)
    await lsp_client.initialize_session(types.InitializeParams(
        capabilities=client_capabilities("visual-studio-code"),
        initialization_options={"edit_max_tokens": 160, "indexEnable": False}))
    yield
    await lsp_client.shutdown_session()


@pytest.mark.slow
@pytest.mark.asyncio
async def test_edit_asked_for_while_the_model_loads_waits_for_it(loading_client: LanguageClient) -> None:
    """No "still loading" error: the edit's progress says it waits for the model, then the edit lands."""
    editor = Editor(loading_client)
    doc = "def avg(xs):\n    return sum(xs) / len(xs)\n"
    uri = editor.open("early.py", doc)
    result = await execute(loading_client, {"uri": uri, "range": range_json(span(doc, doc)), "version": 1,
                                            "instruction": "Rename the function avg to mean.", "preview": False})
    edit_reports = [values for values in loading_client.progress_reports.values()
                    if isinstance(values[0], types.WorkDoneProgressBegin) and values[0].title == "infill: edit"]
    assert len(edit_reports) == 1
    # the server reports this only when the model was not ready as the edit started
    assert any(isinstance(v, types.WorkDoneProgressReport) and v.message == "waiting for the model to load"
               for v in edit_reports[0]), edit_reports[0]
    assert result["applied"] is True and editor.text(uri) != doc


# --- the edit streamed into a preview (infill/editStream) ---------------------------------------------


@pytest_lsp.fixture(config=ClientServerConfig(server_command=SERVER))
async def streaming_client(lsp_client: LanguageClient):
    """A client that opted in to `infill/editStream`, a draft at every line end (intervalMs 0)."""
    lsp_client.feature(types.CLIENT_REGISTER_CAPABILITY)(lambda params: None)
    EVENTS.clear()
    lsp_client.feature("infill/editStream")(lambda params: EVENTS.append(("stream", params)))
    caps = client_capabilities("visual-studio-code")
    caps.experimental = {"infillEditStream": {"intervalMs": 0}}
    await lsp_client.initialize_session(types.InitializeParams(
        capabilities=caps, initialization_options={"edit_max_tokens": 160, "indexEnable": False}))
    yield
    await lsp_client.shutdown_session()


class StreamingEditor(Editor):
    """An editor that also notes when each edit is applied, among the stream notifications."""

    def apply_edit(self, params: types.ApplyWorkspaceEditParams) -> types.ApplyWorkspaceEditResult:
        EVENTS.append(("apply", params))
        return super().apply_edit(params)


def streamed(client: LanguageClient) -> list:
    return [params for kind, params in EVENTS if kind == "stream"]


@pytest.mark.slow
@pytest.mark.asyncio
async def test_edit_streams_its_text_before_the_edit_arrives(streaming_client: LanguageClient) -> None:
    """Drafts arrive in order, before the applyEdit, end with the edit's own new text, and change no file."""
    editor = StreamingEditor(streaming_client)
    await wait_for_model(streaming_client)
    doc = "def avg(xs):\n    return sum(xs) / len(xs)\n"
    uri = editor.open("stream.py", doc)
    result = await execute(streaming_client, {"uri": uri, "range": range_json(span(doc, doc)), "version": 1,
                                              "instruction": "Rename the function avg to mean.", "preview": False})
    assert result["applied"] is True
    kinds = [kind for kind, _ in EVENTS]
    assert kinds[-1] == "apply" and kinds.count("apply") == 1, kinds  # every draft came before the edit
    drafts = streamed(streaming_client)
    assert len(drafts) >= 2, kinds  # at least one line before the end, then the end
    assert [d.done for d in drafts] == [False] * (len(drafts) - 1) + [True]
    assert len({d.id for d in drafts}) == 1 and drafts[0].id is not None
    for d in drafts:
        assert (d.uri, d.version) == (uri, 1) and d.text.strip()
        assert (d.range.start.line, d.range.start.character, d.range.end.line, d.range.end.character) == (0, 0, 2, 0)
    (text_edit,) = editor.applied[-1].edit.document_changes[0].edits
    assert drafts[-1].text == text_edit.new_text  # the last draft is the edit itself
    assert drafts[0].text != drafts[-1].text  # the first one was partial
    assert not hasattr(drafts[-1], "error")
    assert editor.version(uri) == 2  # only the applyEdit changed the document


@pytest.mark.slow
@pytest.mark.asyncio
async def test_cancelled_edit_ends_its_stream_and_changes_nothing(streaming_client: LanguageClient) -> None:
    editor = StreamingEditor(streaming_client)
    await wait_for_model(streaming_client)
    doc = "def avg(xs):\n    return sum(xs) / len(xs)\n\n\ndef norm(x, y):\n    return (x * x + y * y) ** 0.5\n"
    uri = editor.open("stream_cancel.py", doc)
    request = asyncio.ensure_future(execute(streaming_client, {
        "uri": uri, "range": range_json(span(doc, doc)), "version": 1,
        "instruction": "Add type hints and a docstring to every function."}, msg_id="stream-to-cancel"))
    for _ in range(2400):  # the first draft: the model is writing
        if streamed(streaming_client) or request.done():
            break
        await asyncio.sleep(0.05)
    assert streamed(streaming_client) and not request.done()
    streaming_client.protocol.notify("$/cancelRequest", types.CancelParams(id="stream-to-cancel"))
    with pytest.raises(JsonRpcException) as err:
        await request
    assert err.value.code == -32800
    for _ in range(200):  # the server answers the cancel at once; the stream ends once generation stopped
        if streamed(streaming_client)[-1].done:
            break
        await asyncio.sleep(0.05)
    last = streamed(streaming_client)[-1]
    assert last.done is True and last.cancelled is True and "cancelled" in last.error
    assert [d.done for d in streamed(streaming_client)].count(True) == 1
    assert editor.text(uri) == doc and editor.version(uri) == 1 and not editor.applied


class PreviewingEditor(Editor):
    """An editor whose user takes their time over a preview: an edit that needs confirmation is answered
    only once `decide` is set (VS Code answers applyEdit when Refactor Preview is applied or discarded)."""

    def __init__(self, client: LanguageClient) -> None:
        self.decide = asyncio.Event()
        self.previewing = asyncio.Event()
        super().__init__(client)

    def handler(self):
        async def apply(params: types.ApplyWorkspaceEditParams) -> types.ApplyWorkspaceEditResult:
            if any(a.needs_confirmation for a in (params.edit.change_annotations or {}).values()):
                self.previewing.set()
                await self.decide.wait()
            return self.apply_edit(params)
        return apply


@pytest.mark.slow
@pytest.mark.asyncio
async def test_a_newer_edit_does_not_wait_for_the_answer_to_a_preview(streaming_client: LanguageClient) -> None:
    """The newest edit of a document replaces one still being written, but one already written and waiting
    in the user's preview is theirs to answer: the newer edit runs meanwhile, and the older one, answered
    later, no longer fits the document and is refused."""
    editor = PreviewingEditor(streaming_client)
    await wait_for_model(streaming_client)
    doc = "def avg(xs):\n    return sum(xs) / len(xs)\n"
    uri = editor.open("previewing.py", doc)
    args = {"uri": uri, "range": range_json(span(doc, doc)), "version": 1,
            "instruction": "Rename the function avg to mean."}
    first = asyncio.ensure_future(execute(streaming_client, args))
    await asyncio.wait_for(editor.previewing.wait(), MODEL_TIMEOUT)
    second = await asyncio.wait_for(execute(streaming_client, args | {"preview": False}), MODEL_TIMEOUT)
    assert second["applied"] is True and editor.version(uri) == 2
    editor.decide.set()
    with pytest.raises(JsonRpcException) as err:
        await first
    assert err.value.code == -32803 and "not applied" in err.value.message
    assert editor.version(uri) == 2 and len(editor.applied) == 1
