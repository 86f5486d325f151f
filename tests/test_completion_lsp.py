# mypy: disable-error-code="attr-defined"
"""Inline completion end to end: a real pytest-lsp client, the real server over JSON-RPC, the real model.

Documents are virtual (opened by URI under a folder that does not exist), so the tests also show the
server never reads or writes the workspace for completion.
"""

from __future__ import annotations

import argparse
import asyncio
from concurrent.futures import Future
from pathlib import Path

import pytest
import pytest_lsp
from lsp_support import SERVER, wait_for_model
from lsprotocol import types
from pygls.exceptions import JsonRpcException
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities

from lsp_server.positions import to_offset, to_position
from lsp_server.syntax import scan_brackets

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "tests" / "_completion_docs"  # never created: the documents live only in the client

INVENTORY = '''import json


def total_value(items):
    total = 0.0
    for item in items:
        total += item.price * item.quantity
    return total


def most_expensive(items):
    return max(items, key=lambda item: item.)
'''
CURSOR = INVENTORY.index("item.)") + len("item.")

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def open_doc(client: LanguageClient, name: str, text: str, language: str = "python", version: int = 1) -> str:
    uri = (DOCS / name).as_uri()
    client.text_document_did_open(types.DidOpenTextDocumentParams(
        text_document=types.TextDocumentItem(uri=uri, language_id=language, version=version, text=text)))
    return uri


def close_doc(client: LanguageClient, uri: str) -> None:
    """Close a test's document: an open copy of the same code would become other-file context for the next
    test's prompt (a real, but different, situation: the model then often sees nothing left to write)."""
    client.text_document_did_close(types.DidCloseTextDocumentParams(types.TextDocumentIdentifier(uri=uri)))


def replace_doc(client: LanguageClient, uri: str, text: str, version: int) -> None:
    client.text_document_did_change(types.DidChangeTextDocumentParams(
        text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
        content_changes=[types.TextDocumentContentChangeWholeDocument(text=text)]))


async def stats(client: LanguageClient) -> dict:
    """The server's completion counters (pygls hands custom results back as named tuples)."""
    result = await client.protocol.send_request_async("infill/stats", None)
    return result if isinstance(result, dict) else result._asdict()


async def warmed_after(client: LanguageClient, count: int, what: str) -> dict:
    """The counters once the server has finished a warm-up beyond `count` (`warmed`: what the typing
    benchmark waits for)."""
    for _ in range(600):
        now = await stats(client)
        if now["warmed"] > count:
            return now
        await asyncio.sleep(0.05)
    pytest.fail(f"{what} was not warmed within 30 s")


def position(text: str, offset: int) -> types.Position:
    line, character = to_position(text, offset)
    return types.Position(line=line, character=character)


async def inline(client: LanguageClient, uri: str, pos: types.Position,
                 invoked: bool = False) -> list[types.InlineCompletionItem]:
    kind = types.InlineCompletionTriggerKind.Invoked if invoked else types.InlineCompletionTriggerKind.Automatic
    result = await client.text_document_inline_completion_async(types.InlineCompletionParams(
        text_document=types.TextDocumentIdentifier(uri=uri), position=pos,
        context=types.InlineCompletionContext(trigger_kind=kind)))
    if result is None:
        return []
    return list(result.items if isinstance(result, types.InlineCompletionList) else result)


@pytest_lsp.fixture(config=ClientServerConfig(server_command=SERVER), scope="module")
async def client(lsp_client: LanguageClient):
    lsp_client.feature(types.CLIENT_REGISTER_CAPABILITY)(lambda params: None)
    caps = client_capabilities("visual-studio-code")
    caps.text_document.inline_completion = types.InlineCompletionClientCapabilities()
    result = await lsp_client.initialize_session(types.InitializeParams(
        capabilities=caps, initialization_options={"maxTokensSingleLine": 24, "noSuchSetting": 1}))
    lsp_client.init_result = result
    await wait_for_model(lsp_client)
    yield
    await lsp_client.shutdown_session()


@pytest.mark.asyncio(loop_scope="module")
async def test_advertises_inline_completion_and_fallback(client: LanguageClient) -> None:
    caps = client.init_result.capabilities
    assert caps.inline_completion_provider is not None
    assert caps.completion_provider is not None


@pytest.mark.asyncio(loop_scope="module")
async def test_inline_completion_inserts_at_cursor(client: LanguageClient) -> None:
    uri = open_doc(client, "inventory.py", INVENTORY)
    pos = position(INVENTORY, CURSOR)
    items = await inline(client, uri, pos)
    assert len(items) == 1
    item = items[0]
    assert item.range.start == pos and item.range.end == pos
    text = item.insert_text if isinstance(item.insert_text, str) else item.insert_text.value
    assert text.strip(), "an empty suggestion must not be offered"
    assert "\n" not in text, "mid-statement completion is single-line"
    assert not text.endswith(")"), "the closing bracket after the cursor must not be repeated"
    close_doc(client, uri)


@pytest.mark.asyncio(loop_scope="module")
async def test_non_ascii_before_cursor_uses_utf16_positions(client: LanguageClient) -> None:
    """A typed-through request after an emoji (2 UTF-16 units) only hits if positions convert exactly."""
    text = ('class User:\n    def __init__(self, name):\n        self.name = name\n\n'
            '    def label(self):\n        return "é😀 " + self.\n')
    cursor = text.index("self.\n") + len("self.")
    uri = open_doc(client, "emoji.py", text)
    first = await inline(client, uri, position(text, cursor))
    assert first, "expected a suggestion after `self.`"
    suggestion = first[0].insert_text
    assert first[0].range.start == position(text, cursor)
    assert position(text, cursor).character == len("        return \"é😀 \" + self.") + 1  # the emoji counts twice
    typed = text[:cursor] + suggestion[0] + text[cursor:]
    replace_doc(client, uri, typed, 2)
    second = await inline(client, uri, position(typed, cursor + 1))
    assert second and second[0].insert_text == suggestion[1:]
    close_doc(client, uri)


@pytest.mark.asyncio(loop_scope="module")
async def test_typing_the_suggestion_is_answered_from_it(client: LanguageClient) -> None:
    uri = open_doc(client, "typed.py", INVENTORY)
    items = await inline(client, uri, position(INVENTORY, CURSOR))
    suggestion = items[0].insert_text
    if len(suggestion) < 2:
        pytest.skip(f"suggestion {suggestion!r} too short to type through")
    before = await stats(client)
    typed = INVENTORY[:CURSOR] + suggestion[:2] + INVENTORY[CURSOR:]
    replace_doc(client, uri, typed, 2)
    again = await inline(client, uri, position(typed, CURSOR + 2))
    after = await stats(client)
    assert again and again[0].insert_text == suggestion[2:]
    assert after["typed_through"] == before["typed_through"] + 1
    assert after["generated"] == before["generated"], "typed-through must not run the model"
    close_doc(client, uri)


@pytest.mark.asyncio(loop_scope="module")
async def test_an_opened_document_is_warmed_before_it_is_asked(client: LanguageClient) -> None:
    """didOpen prefills the document's prompt in the background and counts it (`warmed`, what the typing
    benchmark waits for); the first request then finds most of its prompt in the cache."""
    text = "# stock-keeping helpers, warmed on open\n" + INVENTORY  # a first line no other test's prompt has
    before = await stats(client)
    uri = open_doc(client, "warmed.py", text)
    warm = await warmed_after(client, before["warmed"], "the opened document")
    await inline(client, uri, position(text, text.index("item.)") + len("item.")))
    after = await stats(client)
    assert after["generated"] == warm["generated"] + 1
    assert after["reuse_hits"] == warm["reuse_hits"] + 1, "the request did not reuse the warmed prompt"
    close_doc(client, uri)


@pytest.mark.asyncio(loop_scope="module")
async def test_the_cursor_notification_warms_where_the_cursor_rests(client: LanguageClient) -> None:
    """`infill/didMoveCursor` prefills the prompt where the cursor came to rest. In a file longer than the
    context, the open's warm-up (at the end) does not cover a place near the top; after the notification the
    first request there finds its prompt cached. Malformed notifications are ignored, not answered."""
    helpers = "".join(f"\n\ndef price_{i}(items):\n    return sum(item.price * {i} for item in items)\n"
                      for i in range(120))
    text = "# many small helpers, warmed where the cursor rests\n" + INVENTORY + helpers
    cursor = text.index("item.)") + len("item.")
    before = await stats(client)
    uri = open_doc(client, "cursor.py", text)
    opened = await warmed_after(client, before["warmed"], "the opened document")
    at = position(text, cursor)
    unopened = (DOCS / "never_opened.py").as_uri()
    malformed: list[object] = [
        None, [], {"textDocument": {"uri": uri}}, {"position": {"line": 0, "character": 0}},
        {"textDocument": {"uri": uri}, "position": {"line": -1, "character": 0}},
        {"textDocument": {"uri": uri}, "position": {"line": "3", "character": True}},
        {"textDocument": {"uri": uri}, "position": {"line": 10**6, "character": 0}},
        {"textDocument": {"uri": unopened}, "position": {"line": 0, "character": 0}}]
    for bad in malformed:
        client.protocol.notify("infill/didMoveCursor", bad)
    client.protocol.notify("infill/didMoveCursor", {"textDocument": {"uri": uri},
                                                    "position": {"line": at.line, "character": at.character}})
    warm = await warmed_after(client, opened["warmed"], "the cursor's position")
    await inline(client, uri, at)
    after = await stats(client)
    assert after["generated"] == warm["generated"] + 1
    assert after["reuse_hits"] == warm["reuse_hits"] + 1, "the request did not reuse the prompt warmed at the cursor"
    close_doc(client, uri)


def insert(client: LanguageClient, uri: str, text: str, offset: int, typed: str, version: int) -> str:
    """Type `typed` at `offset` (an incremental change, as editors send keystrokes); the new text."""
    at = position(text, offset)
    client.text_document_did_change(types.DidChangeTextDocumentParams(
        text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
        content_changes=[types.TextDocumentContentChangePartial(range=types.Range(start=at, end=at), text=typed)]))
    return text[:offset] + typed + text[offset:]


def computed(before: dict, after: dict) -> int:
    """Prompt tokens the requests between two counter readings computed (not found in the KV cache)."""
    return (after["prompt_tokens"] - before["prompt_tokens"]) - (after["reused_tokens"] - before["reused_tokens"])


async def open_warmed_at(client: LanguageClient, name: str, text: str, cursor: int) -> tuple[str, dict]:
    """Open a document, say the cursor rests at `cursor` (`infill/didMoveCursor`) and wait until that position
    is warmed: (uri, the counters then)."""
    before = await stats(client)
    uri = open_doc(client, name, text)
    opened = await warmed_after(client, before["warmed"], "the opened document")
    at = position(text, cursor)
    client.protocol.notify("infill/didMoveCursor", {"textDocument": {"uri": uri},
                                                    "position": {"line": at.line, "character": at.character}})
    return uri, await warmed_after(client, opened["warmed"], "the cursor's position")


@pytest.mark.asyncio(loop_scope="module")
async def test_typing_where_the_prompt_was_warmed_computes_only_what_was_typed(client: LanguageClient) -> None:
    """Keystrokes at a warmed position extend the warmed prompt (what was typed starts the FIM middle)
    instead of recomputing the code after the cursor, which a FIM prompt puts after the prefix. An edit
    elsewhere ends that: the next request lays its prompt out afresh and recomputes the suffix, and typing
    on extends that one."""
    head = "import json\n\n\ndef total_value(items):\n    total = 0.0\n    "
    tail = "\n    return total\n" + "".join(
        f"\n\ndef tax_{i}(items, rate={i}):\n    return total_value(items) * rate / 100\n" for i in range(6))
    text, cursor = head + tail, len(head)
    uri, warm = await open_warmed_at(client, "anchored.py", text, cursor)
    text = insert(client, uri, text, cursor, "for", 2)
    await inline(client, uri, position(text, cursor + 3))
    typed = await stats(client)
    assert typed["generated"] == warm["generated"] + 1 and typed["anchored"] == warm["anchored"] + 1
    assert 0 < computed(warm, typed) <= 6, "the keystroke recomputed more than what it typed"
    text = insert(client, uri, text, 0, "# totals\n", 3)  # an edit above: the anchor's text is gone
    await inline(client, uri, position(text, cursor + 3 + len("# totals\n")))
    moved = await stats(client)
    assert moved["generated"] == typed["generated"] + 1 and moved["anchored"] == typed["anchored"]
    assert computed(typed, moved) > 30, "the suffix after an edit above should have been recomputed"
    cursor += 3 + len("# totals\n")
    text = insert(client, uri, text, cursor, " x", 4)  # that fresh prompt is the anchor now
    await inline(client, uri, position(text, cursor + 2))
    again = await stats(client)
    assert again["anchored"] == moved["anchored"] + 1 and 0 < computed(moved, again) <= 6
    close_doc(client, uri)


@pytest.mark.asyncio(loop_scope="module")
async def test_a_closer_the_editor_inserted_keeps_the_prompt_and_is_not_suggested_again(
        client: LanguageClient) -> None:
    """VS Code types `(` as `()`. The closer it put after the cursor is not a change to the code after the
    anchor: the keystroke still computes only what was typed, and the suggestion ends before that closer
    (the line then has no closer too many)."""
    head = "import json\n\n\ndef total_value(items):\n    total = 0.0\n    for item in items:\n        total += "
    tail = "\n    return total\n" + "".join(
        f"\n\ndef tax_{i}(items, rate={i}):\n    return total_value(items) * rate / 100\n" for i in range(6))
    text, cursor = head + tail, len(head)
    uri, warm = await open_warmed_at(client, "closed.py", text, cursor)
    text = insert(client, uri, text, cursor, "round()", 2)
    items = await inline(client, uri, position(text, cursor + len("round(")))
    typed = await stats(client)
    assert typed["generated"] == warm["generated"] + 1 and typed["anchored"] == warm["anchored"] + 1
    assert 0 < computed(warm, typed) <= 8, "the editor's closer made the keystroke recompute the suffix"
    if items:
        line = head.rsplit("\n", 1)[1] + "round(" + items[0].insert_text + ")"
        assert "\n" in items[0].insert_text or scan_brackets(line, "python") == ("", ""), line
    close_doc(client, uri)


@pytest.mark.asyncio(loop_scope="module")
async def test_change_then_complete_sees_new_text(client: LanguageClient) -> None:
    uri = open_doc(client, "changed.py", "x = 1\n")
    text = INVENTORY.replace("most_expensive", "priciest")
    replace_doc(client, uri, text, 2)
    cursor = text.index("item.)") + len("item.")
    items = await inline(client, uri, position(text, cursor))
    assert items and items[0].range.start == position(text, cursor)
    close_doc(client, uri)


@pytest.mark.asyncio(loop_scope="module")
async def test_bad_positions_and_documents_get_empty_results(client: LanguageClient) -> None:
    uri = open_doc(client, "small.py", "def f():\n    return 1\n")
    assert await inline(client, (DOCS / "never_opened.py").as_uri(), types.Position(0, 0)) == []
    assert await inline(client, uri, types.Position(line=99, character=0)) == []
    # past the end of a line means the end of that line: allowed, answered at the line end
    items = await inline(client, uri, types.Position(line=1, character=500))
    assert all(i.range.start == types.Position(line=1, character=500) for i in items)
    binary = open_doc(client, "blob.py", "abc\x00\x01\x02def")
    assert await inline(client, binary, types.Position(line=0, character=3)) == []
    huge = open_doc(client, "huge.py", "x = 1\n" * 2_000_000)  # 12 MB
    assert await inline(client, huge, types.Position(line=10, character=5)) == []
    unknown = open_doc(client, "notes.weird", "Shopping list:\n- apples\n- ", language="no-such-language")
    await inline(client, unknown, types.Position(line=2, character=2))  # plain text: any answer, no error
    for done in (uri, binary, huge, unknown):
        close_doc(client, done)


@pytest.mark.asyncio(loop_scope="module")
async def test_malformed_params_are_an_lsp_error_not_a_crash(client: LanguageClient) -> None:
    # The typed client refuses to send bad params, so put the raw JSON-RPC message on the wire.
    answer: Future = Future()
    client.protocol._request_futures["malformed-1"] = answer
    client.protocol._result_types["malformed-1"] = None
    client.protocol._send_data({"jsonrpc": "2.0", "id": "malformed-1", "method": types.TEXT_DOCUMENT_INLINE_COMPLETION,
                                "params": {"textDocument": 3}})
    with pytest.raises(JsonRpcException):
        await asyncio.wait_for(asyncio.wrap_future(answer), 30)
    uri = open_doc(client, "alive.py", INVENTORY)
    assert await inline(client, uri, position(INVENTORY, CURSOR)), "the server must still answer"
    close_doc(client, uri)


@pytest.mark.asyncio(loop_scope="module")
async def test_cancel_request_stops_generation(client: LanguageClient) -> None:
    # A long file: its cold prefill alone takes over a second here, so the request is still running when
    # the cancel arrives, however quickly the model would answer.
    text = Path(argparse.__file__).read_text()[:8000] + "\n\ndef fibonacci(n):\n    "
    uri = open_doc(client, "cancel.py", text)
    params = types.InlineCompletionParams(
        text_document=types.TextDocumentIdentifier(uri=uri), position=position(text, len(text)),
        context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Invoked))
    future = asyncio.ensure_future(
        client.protocol.send_request_async(types.TEXT_DOCUMENT_INLINE_COMPLETION, params, msg_id="cancel-me"))
    # A cancel the server reads before it has dispatched the request is dropped as an unknown id (the
    # server's loop can be late to read while the model computes): the stats answer, which comes after the
    # request in the same stream, shows the request is in flight. Its cold prefill takes seconds.
    await stats(client)
    client.protocol.notify(types.CANCEL_REQUEST, types.CancelParams(id="cancel-me"))
    with pytest.raises(JsonRpcException, match="(?i)cancel"):
        await asyncio.wait_for(future, 120)
    assert await inline(client, uri, position(text, len(text))) is not None  # still serving


@pytest.mark.asyncio(loop_scope="module")
async def test_newer_request_for_same_document_supersedes_older(client: LanguageClient) -> None:
    text = "class Stack:\n    def __init__(self):\n        "
    uri = open_doc(client, "race.py", text)
    older = asyncio.ensure_future(inline(client, uri, position(text, len(text))))
    await asyncio.sleep(0.02)
    text2 = text + "self"
    replace_doc(client, uri, text2, 2)
    newer = await inline(client, uri, position(text2, len(text2)))
    stale = await older
    assert stale == [] or stale[0].range.start == position(text, len(text))
    assert all(i.range.start == position(text2, len(text2)) for i in newer)


@pytest.mark.asyncio(loop_scope="module")
async def test_configuration_disables_and_reenables(client: LanguageClient) -> None:
    uri = open_doc(client, "config.py", INVENTORY)
    pos = position(INVENTORY, CURSOR)
    client.workspace_did_change_configuration(types.DidChangeConfigurationParams(
        settings={"infill": {"disabledLanguages": ["python"]}}))
    await asyncio.sleep(0.2)
    assert await inline(client, uri, pos) == []
    client.workspace_did_change_configuration(types.DidChangeConfigurationParams(
        settings={"infill": {"disabledLanguages": []}}))
    await asyncio.sleep(0.2)
    assert await inline(client, uri, pos)
    close_doc(client, uri)


@pytest.mark.asyncio(loop_scope="module")
async def test_invoked_request_offers_several_distinct_suggestions_greedy_first(client: LanguageClient) -> None:
    """Typing gets one suggestion; an explicit request (trigger key, Alt+]) up to `suggestions` different
    ones: the typing answer first, then alternatives through the same post-processing."""
    uri = open_doc(client, "several.py", INVENTORY)
    pos = position(INVENTORY, CURSOR)
    typing = await inline(client, uri, pos)
    assert len(typing) == 1
    before = await stats(client)
    items = await inline(client, uri, pos, invoked=True)
    after = await stats(client)
    texts = [i.insert_text for i in items]
    assert texts[0] == typing[0].insert_text
    assert 2 <= len(texts) <= 3 and len(set(texts)) == len(texts), texts
    for item in items:
        assert item.range.start == pos and item.range.end == pos
        assert item.insert_text.strip() and "\n" not in item.insert_text, texts  # the single-line rule
        assert not item.insert_text.endswith(")"), texts  # the bracket rule: the suffix closes it
    assert after["alternatives"] > before["alternatives"]
    assert after["generated"] == before["generated"] + 1, "the greedy answer is generated once, not per item"

    client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings={"suggestions": 1}))
    await asyncio.sleep(0.2)
    try:
        assert len(await inline(client, uri, pos, invoked=True)) == 1
    finally:
        client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings={"suggestions": 3}))
        await asyncio.sleep(0.2)
    close_doc(client, uri)


# --- a client that asks before the model is ready ----------------------------------------------------

@pytest_lsp.fixture(config=ClientServerConfig(server_command=SERVER))
async def early_client(lsp_client: LanguageClient):
    """A server that has only just started (its model still loading), and a client that opted in to the
    pending and refresh notifications."""
    lsp_client.feature(types.CLIENT_REGISTER_CAPABILITY)(lambda params: None)
    lsp_client.pending_seen = []
    lsp_client.refreshed = []
    lsp_client.feature("infill/pending")(lambda params: lsp_client.pending_seen.append(params.pending))
    lsp_client.feature("infill/refreshInlineCompletion")(lambda params: lsp_client.refreshed.append(list(params.uris)))
    caps = client_capabilities("visual-studio-code")
    caps.text_document.inline_completion = types.InlineCompletionClientCapabilities()
    caps.experimental = {"infillPending": True, "infillRefresh": True}
    await lsp_client.initialize_session(types.InitializeParams(capabilities=caps,
                                                               initialization_options={"indexEnable": False}))
    yield
    await lsp_client.shutdown_session()


@pytest.mark.asyncio
async def test_requests_before_the_model_is_ready(early_client: LanguageClient) -> None:
    """While the model loads, a typing request gets nothing at once and an invoked one waits for the model;
    once it is ready the client is told to ask again for the document that got nothing. Every request is
    announced as pending, and the count returns to zero."""
    client = early_client
    typed_uri = open_doc(client, "early_typed.py", INVENTORY)
    asked_uri = open_doc(client, "early_asked.py", INVENTORY)
    pos = position(INVENTORY, CURSOR)
    assert await inline(client, typed_uri, pos) == []
    waited = await inline(client, asked_uri, pos, invoked=True)
    assert waited and waited[0].insert_text.strip(), "the invoked request did not wait for the model"
    for _ in range(100):
        if client.refreshed:
            break
        await asyncio.sleep(0.1)
    assert client.refreshed == [[typed_uri]]  # only the document answered empty
    assert client.pending_seen[:2] == [1, 0] and max(client.pending_seen) >= 1 and client.pending_seen[-1] == 0
    close_doc(client, asked_uri)  # its copy of the code would be other-file context that leaves nothing to write
    assert await inline(client, typed_uri, pos), "asked again, the typing request is answered"


# --- a client without inline completion gets ordinary completion items ------------------------------

@pytest_lsp.fixture(config=ClientServerConfig(server_command=SERVER), scope="module")
async def plain_client(lsp_client: LanguageClient):
    lsp_client.feature(types.CLIENT_REGISTER_CAPABILITY)(lambda params: None)
    caps = client_capabilities("visual-studio-code")
    caps.text_document.inline_completion = None
    await lsp_client.initialize_session(types.InitializeParams(capabilities=caps))
    await wait_for_model(lsp_client)
    yield
    await lsp_client.shutdown_session()


@pytest.mark.asyncio(loop_scope="module")
async def test_completion_fallback_for_clients_without_inline(plain_client: LanguageClient) -> None:
    uri = open_doc(plain_client, "fallback.py", INVENTORY)
    pos = position(INVENTORY, CURSOR)
    result = await plain_client.text_document_completion_async(types.CompletionParams(
        text_document=types.TextDocumentIdentifier(uri=uri), position=pos))
    assert isinstance(result, types.CompletionList) and result.is_incomplete
    assert len(result.items) == 1
    edit = result.items[0].text_edit
    assert edit.range.end == pos
    word_start = to_offset(INVENTORY, edit.range.start.line, edit.range.start.character)
    assert word_start == CURSOR, "no identifier before the cursor, so the edit starts at it"
    assert edit.new_text.strip() and "\n" not in edit.new_text
