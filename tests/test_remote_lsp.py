# mypy: disable-error-code="attr-defined"
"""`infill serve` on a real llama.cpp server (xllamacpp, the default model's GGUF), end to end through
pytest-lsp: once with `backend.kind = "llama.cpp"` (`/infill`) and once with `"openai"` (`/v1/completions`,
prompts templated here). Inline completion, an edit, cancel, a killed and restarted backend, a wrong key."""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from pathlib import Path

import pytest
import pytest_lsp
from lsp_support import SERVER, wait_for_model
from lsprotocol import types
from pygls.exceptions import JsonRpcException
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities

from lsp_server import languages
from lsp_server.positions import to_offset, to_position

pytestmark = [pytest.mark.e2e]

DOCS = Path(__file__).resolve().parent / "_remote_docs"
ADD = "def add(a, b):\n    return "
# A long prompt (its prefill takes the CPU server seconds) ending where the model writes for a long time.
PRIMES = Path(argparse.__file__).read_text()[:6000] + \
    "\n\n# the first hundred prime numbers, one per line\nPRIMES = [\n    2,\n    3,\n    5,\n    7,\n"


def _position(text: str, offset: int) -> types.Position:
    line, character = to_position(text, offset)
    return types.Position(line=line, character=character)


def _open(client: LanguageClient, name: str, text: str) -> str:
    uri = (DOCS / name).as_uri()
    client.text_document_did_open(types.DidOpenTextDocumentParams(
        text_document=types.TextDocumentItem(uri=uri, language_id="python", version=1, text=text)))
    return uri


async def _inline(client: LanguageClient, uri: str, text: str, msg_id: str | None = None) -> list[str]:
    params = types.InlineCompletionParams(
        text_document=types.TextDocumentIdentifier(uri=uri), position=_position(text, len(text)),
        context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Invoked))
    result = await client.protocol.send_request_async(types.TEXT_DOCUMENT_INLINE_COMPLETION, params, msg_id=msg_id)
    items = [] if result is None else (result.items if isinstance(result, types.InlineCompletionList) else result)
    return [item.insert_text if isinstance(item.insert_text, str) else item.insert_text.value for item in items]


def _errors(client: LanguageClient) -> list[str]:
    return [m.message for m in client.messages if m.type == types.MessageType.Error]


@pytest_lsp.fixture(config=ClientServerConfig(server_command=SERVER), scope="module",
                    params=["llama.cpp", "openai"])
async def client(lsp_client: LanguageClient, request, llama_server):
    lsp_client.feature(types.CLIENT_REGISTER_CAPABILITY)(lambda params: None)
    lsp_client.applied = []

    def apply_edit(params: types.ApplyWorkspaceEditParams) -> types.ApplyWorkspaceEditResult:
        lsp_client.applied.append(params)
        return types.ApplyWorkspaceEditResult(applied=True)

    lsp_client.feature(types.WORKSPACE_APPLY_EDIT)(apply_edit)
    caps = client_capabilities("visual-studio-code")
    caps.text_document.inline_completion = types.InlineCompletionClientCapabilities()
    caps.experimental = {"infillEditWithInstruction": True}
    lsp_client.kind = request.param
    await lsp_client.initialize_session(types.InitializeParams(capabilities=caps, initialization_options={
        "infill": {"backend": {"url": llama_server.url, "kind": request.param, "timeoutMs": 20000},
                   "maxTokensMultiLine": 400, "latencyBudgetMs": 60000, "contextTokens": 1200, "editMaxTokens": 160}}))
    await wait_for_model(lsp_client)
    yield
    await lsp_client.shutdown_session()


@pytest.mark.asyncio(loop_scope="module")
async def test_inline_completion_from_the_server(client: LanguageClient, llama_server) -> None:
    before = llama_server.metrics()["requests_processing"], llama_server.metrics()["prompt_tokens_total"]
    uri = _open(client, f"add-{client.kind}.py", ADD)
    items = await _inline(client, uri, ADD)
    assert items and items[0].strip(), "a suggestion from the llama.cpp server"
    assert llama_server.metrics()["prompt_tokens_total"] > before[1]  # it did come from the server
    assert _errors(client) == []


@pytest.mark.asyncio(loop_scope="module")
async def test_edit_applies(client: LanguageClient) -> None:
    doc = "def avg(xs):\n    return sum(xs) / len(xs)\n"
    uri = _open(client, f"rename-{client.kind}.py", doc)
    end = _position(doc, len(doc))
    result = await client.protocol.send_request_async(types.WORKSPACE_EXECUTE_COMMAND, types.ExecuteCommandParams(
        command="infill.edit", arguments=[{
            "uri": uri, "version": 1, "instruction": "Rename the function avg to mean.",
            "range": {"start": {"line": 0, "character": 0}, "end": {"line": end.line, "character": end.character}}}]))
    assert result["applied"] is True and client.applied
    (change,) = client.applied[-1].edit.document_changes
    (edit,) = change.edits
    new = doc[:to_offset(doc, edit.range.start.line, edit.range.start.character)] + edit.new_text + \
        doc[to_offset(doc, edit.range.end.line, edit.range.end.character):]
    assert new != doc and not languages.parse(new, "python").root_node.has_error


@pytest.mark.asyncio(loop_scope="module")
async def test_cancel_closes_the_stream(client: LanguageClient, llama_server) -> None:
    uri = _open(client, f"primes-{client.kind}.py", PRIMES)
    deadline = time.monotonic() + 60
    await asyncio.sleep(0.5)
    while llama_server.busy_slots():  # the server warming its cache for the opened document
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)
    before = llama_server.metrics()["tokens_predicted_total"]
    future = asyncio.ensure_future(_inline(client, uri, PRIMES, msg_id=f"cancel-{client.kind}"))
    await client.protocol.send_request_async("infill/stats", None)  # answered after the request is dispatched
    while not llama_server.decoding():  # the server has read the prompt and is writing the answer for us
        assert time.monotonic() < deadline and not future.done(), "the request never reached the server"
        await asyncio.sleep(0.05)
    client.protocol.notify(types.CANCEL_REQUEST, types.CancelParams(id=f"cancel-{client.kind}"))
    with pytest.raises(JsonRpcException, match="(?i)cancel"):
        await asyncio.wait_for(future, 30)
    cancelled_at = time.monotonic()
    while llama_server.busy_slots() and time.monotonic() - cancelled_at < 5:
        await asyncio.sleep(0.05)
    assert llama_server.busy_slots() == 0, "the server's slot is free soon after the cancel"
    assert llama_server.metrics()["tokens_predicted_total"] - before < 400  # it did not finish the 400 tokens


@pytest.mark.asyncio(loop_scope="module")
async def test_killed_backend_one_message_then_works_after_restart(client: LanguageClient, llama_server) -> None:
    # Each document is the other's context. A finished one: shown an unfinished `return ` line in another
    # file, this model copies it and rightly answers nothing (what made this test look like a restart bug).
    area = "import math\n\n\ndef area(r):\n    return math.pi * r * r\n"
    first, second = _open(client, f"outage1-{client.kind}.py", ADD), _open(client, f"outage2-{client.kind}.py", area)
    llama_server.kill()
    try:
        assert await _inline(client, first, ADD) == []
        assert await _inline(client, second, area) == []
        await asyncio.sleep(0.3)
        errors = [m for m in _errors(client) if "cannot reach" in m]
        assert len(errors) == 1, _errors(client)  # one message, not one per request
        assert llama_server.url in errors[0] and "start the serving engine" in errors[0]
    finally:
        llama_server.start()
    assert await _inline(client, first, ADD), "the next request after the restart is served"


@pytest_lsp.fixture(config=ClientServerConfig(server_command=SERVER, server_env={
    **os.environ, "INFILL_TEST_KEY": "not-the-key"}), scope="module")
async def keyed_client(lsp_client: LanguageClient, keyed_llama_server):
    caps = client_capabilities("visual-studio-code")
    caps.text_document.inline_completion = types.InlineCompletionClientCapabilities()
    await lsp_client.initialize_session(types.InitializeParams(capabilities=caps, initialization_options={
        "backend": {"url": keyed_llama_server.url, "kind": "llama.cpp", "apiKeyEnv": "INFILL_TEST_KEY"}}))
    await wait_for_model(lsp_client)
    yield
    await lsp_client.shutdown_session()


@pytest.mark.asyncio(loop_scope="module")
async def test_wrong_api_key_is_the_401_message(keyed_client: LanguageClient, keyed_llama_server) -> None:
    uri = _open(keyed_client, "keyed.py", ADD)
    assert await _inline(keyed_client, uri, ADD) == []
    await asyncio.sleep(0.3)
    errors = _errors(keyed_client)
    assert len(errors) == 1 and "refused the API key (HTTP 401)" in errors[0] and "INFILL_TEST_KEY" in errors[0]
    assert "not-the-key" not in errors[0]
