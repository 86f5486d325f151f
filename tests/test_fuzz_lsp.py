"""Protocol fuzzing: random interleavings of what editors send, against the real server and a tiny model.

A hypothesis state machine opens, edits (incrementally and whole, past the end, with CRLF, lone \\r, form
feeds, U+2028, emoji and lone surrogates, 10 MB and binary-looking text, unknown languageIds), closes and
re-opens documents, asks for completions, code actions, edits and searches at valid and invalid places
with malformed arguments, cancels requests that exist and that do not, sends settings of the wrong types,
out-of-order versions and requests for documents never opened. After every step:

- every request got a result or a JSON-RPC error within REQUEST_BOUND seconds;
- nothing reached stdout outside a JSON-RPC frame;
- the server's view of every document (version and text, read with the test-only `infill/_document`
  request, enabled by INFILL_TEST_HOOKS=1) equals the client's;
- no file on disk changed (the client accepts or refuses `workspace/applyEdit`, which edits buffers, and
  refuses an edit for a version it no longer has, as editors do);
- the process is alive; at the end it shuts down cleanly.

One server serves every example (starting one costs seconds); each example closes what it opened. The
client's document model is written here from the LSP specification, independently of the server's.
Failing examples hypothesis found are kept below as plain regression tests.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test
from lsp_support import SERVER, RawServer

REQUEST_BOUND = 60.0  # seconds: generous for a loaded 2-core CI machine; a hang is minutes, not seconds
CONTENT_MODIFIED, REQUEST_CANCELLED, INTERNAL_ERROR = -32801, -32800, -32603

WORKSPACE_FILES = {
    "pkg/config.py": "import json\n\n\ndef load_config(path):\n    with open(path) as fh:\n"
                     "        return json.load(fh)\n",
    "pkg/util.py": "def clamp(value, low, high):\n    return max(low, min(high, value))\n",
    "web/app.ts": "export function render(title: string): string {\n  return title;\n}\n",
    ".gitignore": "ignored/\n",
    "ignored/secret.py": "TOKEN = 'do not index'\n",
}
# Documents the client may open: files on disk, files that exist only in the editor (a space and non-ASCII
# in the name: percent-encoded URIs), and one outside the workspace folder.
DOC_PATHS = ["pkg/config.py", "pkg/util.py", "web/app.ts", "new file.py", "ünïcode/ñ.rs", "../outside.py"]


# --- the client's document model (LSP: lines end at \n, \r\n or \r; positions count UTF-16 units) -------

def _lines(text: str) -> list[tuple[int, int]]:
    """(start, content end) of each line."""
    spans, start = [], 0
    for m in re.finditer(r"\r\n|\r|\n", text):
        spans.append((start, m.start()))
        start = m.end()
    spans.append((start, len(text)))
    return spans


def client_offset(text: str, line: int, character: int) -> int:
    """Where an edit at (line, character) lands: past a line's end is its end, past the last line the end of
    the text; a position inside a surrogate pair is after the pair."""
    spans = _lines(text)
    if line >= len(spans):
        return len(text)
    start, end = spans[line]
    units = 0
    for i in range(start, end):
        if units >= character:
            return i
        units += 2 if ord(text[i]) > 0xFFFF else 1
    return end


def apply_change(text: str, rng: dict, new_text: str) -> str:
    a = client_offset(text, rng["start"]["line"], rng["start"]["character"])
    b = client_offset(text, rng["end"]["line"], rng["end"]["character"])
    a, b = min(a, b), max(a, b)
    return text[:a] + new_text + text[b:]


def digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def snapshot(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


# --- strategies -----------------------------------------------------------------------------------------

PIECES = ["def f(x):\n", "    return x\n", "class A:\n", "    pass", "x = 1", "é", "日本", "😀", "🎉x", "\r\n", "\r",
          "\n", "\t", " ", "\x0c", "\u2028", "\x85", "\x00\x01\x02", "\ud800", "\udfff", "import os\n", "#", "'''",
          "}", "(", "self.", "\ufeff", "a" * 40]
# As the server reads it: "\ud800" + "\udfff" side by side are one character once through JSON.
texts = st.lists(st.sampled_from(PIECES), max_size=30).map(lambda parts: json.loads(json.dumps("".join(parts))))
INT32_MAX = 2**31 - 1  # LSP's integer: versions past it are malformed messages, dropped whole
ints = st.integers(0, 12) | st.integers(-3, INT32_MAX) | st.just(INT32_MAX)
small = st.integers(0, 12)
positions = st.fixed_dictionaries({"line": small, "character": small | st.integers(13, 500)})
ranges = st.fixed_dictionaries({"start": positions, "end": positions})
languages = st.sampled_from(["python", "typescript", "rust", "plaintext", "no-such-language", ""])
json_values = st.recursive(st.none() | st.booleans() | st.integers(-5, 10**12) | st.floats(allow_nan=True)
                           | st.text(max_size=20), lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=6)
SETTING_KEYS = ["enable", "disabledLanguages", "maxTokensSingleLine", "maxTokensMultiLine", "latencyBudgetMs",
                "temperature", "contextTokens", "otherDocumentsTokens", "suffixTokens", "editMaxTokens",
                "translateLanguages", "indexEnable", "noSuchSetting", "model"]


class ServerHarness:
    """The one server the examples share, and what the client knows."""

    def __init__(self, root: Path, raw: RawServer) -> None:
        self.root = root
        self.raw = raw
        self.docs: dict[str, dict] = {}  # uri -> {"text", "version"}: what the client has open
        self.lock = threading.Lock()
        self.accept_edits = True
        self.applied = self.refused_stale = self.refused = 0
        self.disk = snapshot(root)

    def apply_edit(self, params: dict) -> dict:
        """Apply a WorkspaceEdit to the client's buffers (never the disk) if its versions are current."""
        edit = params["edit"]
        changes = [(c["textDocument"]["uri"], c["textDocument"].get("version"), c["edits"])
                   for c in edit.get("documentChanges") or []]
        changes += [(uri, None, edits) for uri, edits in (edit.get("changes") or {}).items()]
        with self.lock:
            for uri, version, _ in changes:
                doc = self.docs.get(uri)
                if doc is None or (version is not None and version != doc["version"]):
                    self.refused_stale += 1
                    return {"applied": False, "failureReason": "the document changed"}
            if not self.accept_edits:
                self.refused += 1
                return {"applied": False, "failureReason": "refused"}
            for uri, _version, edits in changes:
                doc = self.docs[uri]
                text = doc["text"]
                for e in sorted(edits, key=lambda e: (e["range"]["start"]["line"], e["range"]["start"]["character"]),
                                reverse=True):
                    text = apply_change(text, e["range"], e["newText"])
                doc["text"], doc["version"] = text, min(doc["version"] + 1, INT32_MAX)
                # an editor tells the server what it did to its buffer
                self.raw.notify("textDocument/didChange", {"textDocument": {"uri": uri, "version": doc["version"]},
                                                           "contentChanges": [{"text": text}]})
            self.applied += 1
        return {"applied": True}


HARNESS: ServerHarness | None = None


def answer(method: str, params: Any) -> Any:
    """The client's side of server-to-client requests."""
    harness = HARNESS
    if method == "workspace/applyEdit":
        return harness.apply_edit(params) if harness else {"applied": False}
    if method == "workspace/configuration":
        return [None for _ in (params or {}).get("items", [])]
    return None  # window/workDoneProgress/create, client/registerCapability




def answered(response: dict) -> dict:
    """A result, or an error that says what was wrong: never InternalError, pygls' answer for an exception
    the server did not handle."""
    assert ("result" in response) != ("error" in response), response
    if "error" in response:
        error = response["error"]
        assert isinstance(error.get("code"), int) and isinstance(error.get("message"), str), response
        assert error["code"] != INTERNAL_ERROR, f"an unhandled exception: {error['message'][:2000]}"
    return response


class LspFuzz(RuleBasedStateMachine):
    """One example: a random session against the shared server."""

    def __init__(self) -> None:
        super().__init__()
        assert HARNESS is not None
        self.h = HARNESS
        self.opened: set[str] = set()

    # --- helpers ----------------------------------------------------------------------------------
    def uri(self, rel: str) -> str:
        return (self.h.root / rel).resolve().as_uri() if not rel.startswith("..") else \
            (self.h.root.parent / rel[3:]).as_uri()

    def call(self, method: str, params: Any) -> dict:
        """A request that must be answered, with a result or an error, within the bound."""
        return answered(self.h.raw.call(method, params, timeout=REQUEST_BOUND))

    def open_uris(self) -> list[str]:
        with self.h.lock:
            return sorted(self.h.docs)

    # --- documents ---------------------------------------------------------------------------------
    @rule(rel=st.sampled_from(DOC_PATHS), text=texts, language=languages, version=ints)
    def open(self, rel: str, text: str, language: str, version: int) -> None:
        uri = self.uri(rel)
        with self.h.lock:
            self.h.docs[uri] = {"text": text, "version": version}
            self.h.raw.notify("textDocument/didOpen", {"textDocument": {
                "uri": uri, "languageId": language, "version": version, "text": text}})
        self.opened.add(uri)

    @precondition(lambda self: len(self.opened) < 3)
    @rule(rel=st.sampled_from(DOC_PATHS), kind=st.sampled_from(["huge", "binary"]))
    def open_big(self, rel: str, kind: str) -> None:
        text = "x = 1\n" * 1_750_000 if kind == "huge" else "".join(map(chr, range(0, 0x2000))) * 20  # 10.5 MB
        self.open(rel, text, "python", 1)

    @precondition(lambda self: self.opened)
    @rule(data=st.data(), changes=st.lists(st.tuples(ranges, texts), min_size=1, max_size=4), bump=st.integers(-2, 3))
    def change_incremental(self, data, changes, bump: int) -> None:
        uri = data.draw(st.sampled_from(self.open_uris()))
        with self.h.lock:
            doc = self.h.docs[uri]
            for rng, text in changes:
                doc["text"] = apply_change(doc["text"], rng, text)
            doc["version"] = min(doc["version"] + bump, INT32_MAX)  # out-of-order and repeated versions too
            self.h.raw.notify("textDocument/didChange", {
                "textDocument": {"uri": uri, "version": doc["version"]},
                "contentChanges": [{"range": rng, "text": text} for rng, text in changes]})

    @precondition(lambda self: self.opened)
    @rule(data=st.data(), text=texts)
    def change_full(self, data, text: str) -> None:
        uri = data.draw(st.sampled_from(self.open_uris()))
        with self.h.lock:
            doc = self.h.docs[uri]
            doc["text"], doc["version"] = text, min(doc["version"] + 1, INT32_MAX)
            self.h.raw.notify("textDocument/didChange", {"textDocument": {"uri": uri, "version": doc["version"]},
                                                         "contentChanges": [{"text": text}]})

    @rule(rel=st.sampled_from(DOC_PATHS), change=st.tuples(ranges, texts))
    def change_unopened(self, rel: str, change) -> None:
        uri = self.uri(rel)
        if uri in self.h.docs:
            return
        self.h.raw.notify("textDocument/didChange", {"textDocument": {"uri": uri, "version": 3},
                                                     "contentChanges": [{"range": change[0], "text": change[1]}]})

    @precondition(lambda self: self.opened)
    @rule(data=st.data(), save=st.booleans())
    def close(self, data, save: bool) -> None:
        uri = data.draw(st.sampled_from(self.open_uris()))
        with self.h.lock:
            if save:
                self.h.raw.notify("textDocument/didSave", {"textDocument": {"uri": uri}})
            self.h.raw.notify("textDocument/didClose", {"textDocument": {"uri": uri}})
            del self.h.docs[uri]
        self.opened.discard(uri)

    # --- requests ----------------------------------------------------------------------------------
    def some_uri(self, data) -> str:
        return data.draw(st.sampled_from(self.open_uris() + [self.uri(r) for r in DOC_PATHS] + ["untitled:Untitled-1"]))

    @rule(data=st.data(), pos=positions, inline=st.booleans())
    def complete(self, data, pos: dict, inline: bool) -> None:
        uri = self.some_uri(data)
        if inline:
            response = self.call("textDocument/inlineCompletion", {
                "textDocument": {"uri": uri}, "position": pos, "context": {"triggerKind": 2}})
        else:
            response = self.call("textDocument/completion", {"textDocument": {"uri": uri}, "position": pos})
        assert "result" in response, f"bad input gets an empty result, not an error: {response}"
        result = response.get("result")
        items = result.get("items", []) if isinstance(result, dict) else result or []
        for item in items:  # a suggestion is anchored where it was asked for
            rng = item.get("range") or (item.get("textEdit") or {}).get("range")
            if rng is not None and inline:
                assert rng["start"] == pos, (rng, pos)

    @rule(data=st.data(), pos=positions, malformed=st.none() | json_values)
    def cursor_rests(self, data, pos: dict, malformed) -> None:
        """`infill/didMoveCursor` anywhere (or malformed): a warm-up at most, never an answer or a crash."""
        params = {"textDocument": {"uri": self.some_uri(data)}, "position": pos} if malformed is None else malformed
        self.h.raw.notify("infill/didMoveCursor", params)

    @rule(data=st.data(), rng=ranges, only=st.none() | st.lists(st.sampled_from(["refactor", "quickfix", "", "x"])))
    def code_action(self, data, rng: dict, only) -> None:
        context: dict = {"diagnostics": []}
        if only is not None:
            context["only"] = only
        response = self.call("textDocument/codeAction", {"textDocument": {"uri": self.some_uri(data)},
                                                         "range": rng, "context": context})
        for action in response.get("result") or []:
            assert action["command"]["command"] in ("infill.edit", "infill.editWithInstruction")

    @rule(data=st.data(), rng=ranges, instruction=st.sampled_from(["Add a docstring", "", "x" * 5000, None, 3]),
          version=st.none() | ints, accept=st.booleans(), malformed=st.none() | json_values,
          then_change=st.booleans())
    def edit(self, data, rng, instruction, version, accept: bool, malformed, then_change: bool) -> None:
        uri = self.some_uri(data)
        args = [malformed] if malformed is not None else [
            {"uri": uri, "range": rng, "version": version, "instruction": instruction}]
        self.h.accept_edits = accept
        msg_id = self.h.raw.request("workspace/executeCommand", {"command": "infill.edit", "arguments": args})
        if then_change and uri in self.h.docs:  # the user types while the edit is written
            self.change_full_uri(uri, self.h.docs[uri]["text"] + "#")
        answered(self.h.raw.wait(msg_id, REQUEST_BOUND))

    def change_full_uri(self, uri: str, text: str) -> None:
        with self.h.lock:
            doc = self.h.docs[uri]
            doc["text"], doc["version"] = text, min(doc["version"] + 1, INT32_MAX)
            self.h.raw.notify("textDocument/didChange", {"textDocument": {"uri": uri, "version": doc["version"]},
                                                         "contentChanges": [{"text": text}]})

    @rule(query=st.text(max_size=30) | st.sampled_from(["clamp", "load config", "TOKEN", "secret", "*", '"', "NEAR("]),
          limit=st.none() | ints | json_values, malformed=st.none() | json_values, symbol=st.booleans())
    def search(self, query: str, limit, malformed, symbol: bool) -> None:
        if symbol:
            response = self.call("workspace/symbol", {"query": query})
        else:
            args = [malformed] if malformed is not None else [{"query": query, "limit": limit}]
            response = self.call("workspace/executeCommand", {"command": "infill.search", "arguments": args})
        for hit in response.get("result") or []:  # never anything outside the workspace or ignored
            location = hit.get("location", hit)
            path = location["uri"]
            assert path.startswith(self.h.root.as_uri() + "/"), path
            assert "/ignored/" not in path, path

    @rule(data=st.data(), pos=positions, known=st.booleans())
    def cancel(self, data, pos: dict, known: bool) -> None:
        uri = self.some_uri(data)
        msg_id = self.h.raw.request("textDocument/inlineCompletion", {
            "textDocument": {"uri": uri}, "position": pos, "context": {"triggerKind": 1}})
        self.h.raw.notify("$/cancelRequest", {"id": msg_id if known else "no-such-request"})
        response = answered(self.h.raw.wait(msg_id, REQUEST_BOUND))
        if "error" in response:
            assert response["error"]["code"] == REQUEST_CANCELLED, response

    @rule(values=st.dictionaries(st.sampled_from(SETTING_KEYS), json_values, max_size=4), nested=st.booleans())
    def configure(self, values: dict, nested: bool) -> None:
        if isinstance(values.get("model"), str):
            values["model"] = "no-such-model-" + values["model"]  # a typo: the loaded model must keep serving
        self.h.raw.notify("workspace/didChangeConfiguration", {"settings": {"infill": values} if nested else values})

    @rule(method=st.sampled_from(["textDocument/inlineCompletion", "textDocument/codeAction", "workspace/symbol",
                                  "workspace/executeCommand", "no/suchMethod", "textDocument/hover"]),
          params=json_values)
    def malformed_request(self, method: str, params) -> None:
        self.call(method, params)

    # --- invariants ----------------------------------------------------------------------------------
    @invariant()
    def alive_and_quiet(self) -> None:
        assert self.h.raw.proc.poll() is None, "the server exited"
        assert not self.h.raw.garbage, f"bytes outside the protocol on stdout: {self.h.raw.garbage[:3]!r}"
        popups = [n for n in list(self.h.raw.notifications) if n["method"] == "window/showMessage"
                  and not n["params"]["message"].startswith("infill: ")]  # a bad model setting is worth one
        assert not popups, f"error pop-ups for the client's own mistakes: {popups[:3]}"

    @invariant()
    def documents_agree(self) -> None:
        with self.h.lock:
            expected = {uri: dict(doc) for uri, doc in self.h.docs.items()}
        for uri, doc in expected.items():
            seen = self.call("infill/_document", {"uri": uri})["result"]
            assert seen is not None, f"the server lost {uri}"
            assert (seen["version"], seen["length"], seen["sha256"]) == \
                (doc["version"], len(doc["text"]), digest(doc["text"])), f"{uri}: server and client disagree"

    @invariant()
    def disk_unchanged(self) -> None:
        assert snapshot(self.h.root) == self.h.disk

    def teardown(self) -> None:
        for uri in list(self.opened):
            with self.h.lock:
                if uri in self.h.docs:
                    self.h.raw.notify("textDocument/didClose", {"textDocument": {"uri": uri}})
                    del self.h.docs[uri]
        self.h.raw.notify("workspace/didChangeConfiguration", {"settings": {"infill": RESET_SETTINGS}})


RESET_SETTINGS = {"enable": True, "disabledLanguages": [], "maxTokensSingleLine": 8, "maxTokensMultiLine": 16,
                  "latencyBudgetMs": 1000, "temperature": 0.0, "contextTokens": 256, "otherDocumentsTokens": 32,
                  "suffixTokens": 32, "editMaxTokens": 48, "indexEnable": True}


# --- the server -----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fuzz_server(tiny_model, tiny_cache: Path, qwen_engine, tmp_path_factory: pytest.TempPathFactory):
    """`infill serve` on a small workspace with the tiny random model (exported by `qwen_engine`)."""
    global HARNESS
    base = tmp_path_factory.mktemp("fuzz")
    root = base / "ws"
    for rel, text in WORKSPACE_FILES.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    (base / "outside.py").write_text("def outside_secret():\n    return 1\n")
    os.symlink(base / "outside.py", root / "link_out.py")  # a symlink out of the workspace
    with pytest.MonkeyPatch.context() as mp:  # the search model beside the tiny one (exported once, ~15 s)
        mp.setenv("INFILL_CACHE_DIR", str(tiny_cache))
        from inference.embed import Embedder

        Embedder.load()
    env = {**os.environ, "INFILL_CACHE_DIR": str(tiny_cache), "INFILL_INDEX_DIR": str(base / "index"),
           "INFILL_TEST_HOOKS": "1"}
    raw = RawServer(SERVER, env, base / "server.log", answer)
    HARNESS = ServerHarness(root, raw)
    model = str(tiny_model("qwen2.5-coder", "qwen2"))
    init = raw.call("initialize", {
        "processId": os.getpid(), "rootUri": root.as_uri(),
        "workspaceFolders": [{"uri": root.as_uri(), "name": "ws"}],
        "capabilities": {"window": {"workDoneProgress": True},
                         "workspace": {"applyEdit": True, "workspaceEdit": {"documentChanges": True},
                                       "didChangeWatchedFiles": {"dynamicRegistration": True}},
                         "textDocument": {"inlineCompletion": {}, "synchronization": {"didSave": True}},
                         # edits stream their text too (infill/editStream): a preview, never a file change
                         "experimental": {"infillEditStream": {"intervalMs": 0}}},
        "initializationOptions": {"model": model, "precision": "fp32", **RESET_SETTINGS}}, timeout=120)
    assert "result" in init, init
    raw.notify("initialized", {})
    wait_ready(raw)
    yield HARNESS
    code = raw.close()
    HARNESS = None
    assert code == 0, f"the server did not shut down cleanly (exit {code}); log: {base / 'server.log'}"


def wait_ready(raw: RawServer, timeout: float = 300) -> None:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for note in list(raw.notifications):
            value = (note.get("params") or {}).get("value") or {}
            if note["method"] == "$/progress" and value.get("kind") == "end":
                message = value.get("message") or ""
                assert not message.startswith("failed"), message
                if " ready on " in message:
                    return
        time.sleep(0.2)
    pytest.fail("the tiny model did not load")


FUZZ_SETTINGS = settings(max_examples=int(os.environ.get("INFILL_FUZZ_EXAMPLES", "25")), stateful_step_count=30,
                         deadline=None, derandomize=not os.environ.get("INFILL_FUZZ_RANDOM"),
                         suppress_health_check=list(HealthCheck), print_blob=True,
                         phases=[p for p in Phase if p != Phase.shrink or not os.environ.get("INFILL_FUZZ_NO_SHRINK")])


def test_protocol_fuzz(fuzz_server: ServerHarness) -> None:
    run_state_machine_as_test(LspFuzz, settings=FUZZ_SETTINGS)
    assert fuzz_server.raw.proc.poll() is None
    h = fuzz_server
    sent = next(h.raw._ids) - 1
    streams: dict = {}  # each edit's infill/editStream notifications: drafts, then at most one end, last
    for note in list(h.raw.notifications):
        if note["method"] == "infill/editStream":
            streams.setdefault(note["params"]["id"], []).append(note["params"])
    for notes in streams.values():
        assert not any(n["done"] for n in notes[:-1]), notes
    print(f"fuzz: {FUZZ_SETTINGS.max_examples} examples, {sent} requests answered, {len(h.raw.server_requests)} "
          f"server requests, applyEdit applied {h.applied} / refused stale {h.refused_stale} / refused {h.refused}, "
          f"{len(streams)} edits streamed")


# --- regressions: what the fuzzing found ------------------------------------------------------------------

def fresh_doc(h: ServerHarness, name: str, text: str, version: int = 1) -> str:
    uri = (h.root / name).as_uri()
    h.raw.notify("textDocument/didOpen", {"textDocument": {"uri": uri, "languageId": "python", "version": version,
                                                           "text": text}})
    return uri


def server_text_digest(h: ServerHarness, uri: str) -> dict:
    return h.raw.call("infill/_document", {"uri": uri}, timeout=REQUEST_BOUND)["result"]


@pytest.mark.parametrize("text, rng, insert, expected", [
    # a form feed, U+2028 and NEL are not line ends in LSP: line 1 is after the \n
    ("a\x0cb\nc", ((1, 0), (1, 0)), "X", "a\x0cb\nXc"),
    ("a\u2028b\nc", ((1, 1), (1, 1)), "X", "a\u2028b\ncX"),
    ("a\x85b\nc", ((0, 3), (0, 3)), "X", "a\x85bX\nc"),
    # past the end of a line is its end: not after the line break, not before the last character
    ("ab\ncd", ((0, 3), (0, 3)), "X", "abX\ncd"),
    ("ab\ncd", ((1, 9), (1, 9)), "X", "ab\ncdX"),
    # past the last line is the end of the document
    ("ab\ncd", ((7, 0), (7, 0)), "X", "ab\ncdX"),
    # a range given end first covers the same text
    ("abcdef", ((0, 4), (0, 1)), "X", "aXef"),
    # inside a surrogate pair rounds up to after the emoji (as the server's position conversion does)
    ("😀b", ((0, 1), (0, 1)), "X", "😀Xb"),
])
def test_incremental_changes_follow_lsp_line_rules(fuzz_server: ServerHarness, text, rng, insert, expected) -> None:
    h = fuzz_server
    uri = fresh_doc(h, "regression.py", text)
    (sl, sc), (el, ec) = rng
    lsp_range = {"start": {"line": sl, "character": sc}, "end": {"line": el, "character": ec}}
    assert apply_change(text, lsp_range, insert) == expected  # the client model says so too
    h.raw.notify("textDocument/didChange", {"textDocument": {"uri": uri, "version": 2},
                                            "contentChanges": [{"range": lsp_range, "text": insert}]})
    assert server_text_digest(h, uri) == {"version": 2, "length": len(expected), "sha256": digest(expected)}
    h.raw.notify("textDocument/didClose", {"textDocument": {"uri": uri}})


@pytest.mark.parametrize("method", ["textDocument/inlineCompletion", "textDocument/codeAction"])
def test_lone_surrogate_in_a_document_is_not_an_internal_error(fuzz_server: ServerHarness, method: str) -> None:
    """A broken UTF-16 buffer (a lone surrogate, legal in JSON) made the parser's UTF-8 encode raise."""
    h = fuzz_server
    text = "def f(x):\n    y = '\ud800'\n    return "
    uri = fresh_doc(h, "surrogate.py", text)
    pos = {"line": 2, "character": 11}
    params = {"textDocument": {"uri": uri}, "position": pos, "context": {"triggerKind": 1}} if "inline" in method \
        else {"textDocument": {"uri": uri}, "range": {"start": {"line": 0, "character": 0}, "end": pos},
              "context": {"diagnostics": []}}
    response = answered(h.raw.call(method, params, timeout=REQUEST_BOUND))
    assert "result" in response, response
    h.raw.notify("textDocument/didClose", {"textDocument": {"uri": uri}})


def test_change_for_an_unopened_document_pops_nothing_up(fuzz_server: ServerHarness) -> None:
    """pygls showed "Error in server: KeyError(…)" in the editor for a didChange it had no document for."""
    h = fuzz_server
    before = len([n for n in list(h.raw.notifications) if n["method"] == "window/showMessage"])
    uri = (h.root / "never_opened.py").as_uri()
    h.raw.notify("textDocument/didChange", {"textDocument": {"uri": uri, "version": 2},
                                            "contentChanges": [{"text": "x = 1\n"}]})
    h.raw.call("infill/stats", None, timeout=REQUEST_BOUND)  # answered after the notification was handled
    assert len([n for n in list(h.raw.notifications) if n["method"] == "window/showMessage"]) == before
    assert h.raw.proc.poll() is None


def test_percent_encoded_uri_gets_completions(fuzz_server: ServerHarness) -> None:
    """pygls keys documents by the unquoted URI; completion looked them up quoted and found nothing."""
    h = fuzz_server
    text = "def clamp(value, low, high):\n    return "
    uri = fresh_doc(h, "with space.py", text)
    assert "%20" in uri
    pos = {"line": 1, "character": 11}
    before = h.raw.call("infill/stats", None, timeout=REQUEST_BOUND)["result"]
    h.raw.call("textDocument/inlineCompletion", {"textDocument": {"uri": uri}, "position": pos,
                                                 "context": {"triggerKind": 1}}, timeout=REQUEST_BOUND)
    after = h.raw.call("infill/stats", None, timeout=REQUEST_BOUND)["result"]
    assert after["generated"] == before["generated"] + 1, "the model never ran: the document was not found"
    h.raw.notify("textDocument/didClose", {"textDocument": {"uri": uri}})


def test_position_encoding_is_always_utf16(tmp_path: Path) -> None:
    """pygls picks the client's first position encoding (Neovim lists UTF-8 first); every conversion here
    counts UTF-16 units, so the server must announce UTF-16 whatever the client prefers."""
    raw = RawServer(SERVER, {**os.environ, "INFILL_INDEX_DIR": str(tmp_path / "index")}, tmp_path / "log")
    try:
        init = raw.call("initialize", {"processId": None, "rootUri": None, "capabilities": {
            "general": {"positionEncodings": ["utf-8", "utf-32", "utf-16"]}},
            "initializationOptions": {"indexEnable": False, "model": "no-such-model"}}, timeout=REQUEST_BOUND)
        assert init["result"]["capabilities"].get("positionEncoding", "utf-16") == "utf-16"
    finally:
        assert raw.close() == 0


def test_exit_while_the_search_model_exports_is_clean(tiny_model, tiny_cache: Path, qwen_engine,
                                                     tmp_path: Path) -> None:
    """`exit` with the code model loaded while the indexer embeds (its search model just exported with
    torch) ended in SIGABRT ("terminate called without an active exception") from native destructors at
    interpreter finalization."""
    workspace = tmp_path / "ws"
    shutil.copytree(Path(__file__).resolve().parents[1] / "lsp_server", workspace)  # enough chunks to embed a while
    (workspace / "a.py").write_text("def f():\n    return 1\n")
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "models").symlink_to(tiny_cache / "models")  # the tiny model's export, but no search model yet
    env = {**os.environ, "INFILL_CACHE_DIR": str(cache), "INFILL_INDEX_DIR": str(tmp_path / "index")}
    raw = RawServer(SERVER, env, tmp_path / "log")
    raw.call("initialize", {"processId": None, "rootUri": workspace.as_uri(), "capabilities": {
        "window": {"workDoneProgress": True}}, "initializationOptions": {
        "model": str(tiny_model("qwen2.5-coder", "qwen2")), "precision": "fp32"}}, timeout=REQUEST_BOUND)
    raw.notify("initialized", {})
    wait_ready(raw)
    import time

    deadline = time.monotonic() + REQUEST_BOUND
    while not any("embedded " in json.dumps(n) for n in list(raw.notifications)):
        assert time.monotonic() < deadline, "the search model never started embedding"
        time.sleep(0.1)
    raw.notify("textDocument/didOpen", {"textDocument": {"uri": (workspace / "a.py").as_uri(), "languageId": "python",
                                                         "version": 1, "text": "def f():\n    return "}})
    raw.call("textDocument/inlineCompletion", {"textDocument": {"uri": (workspace / "a.py").as_uri()},
                                               "position": {"line": 1, "character": 11}, "context": {"triggerKind": 1}},
             timeout=REQUEST_BOUND)
    assert raw.close() == 0, (tmp_path / "log").read_text()[-2000:]


def test_document_digest_hook_is_off_by_default(tmp_path: Path) -> None:
    raw = RawServer(SERVER, {k: v for k, v in os.environ.items() if k != "INFILL_TEST_HOOKS"}
                    | {"INFILL_INDEX_DIR": str(tmp_path / "index")}, tmp_path / "log")
    try:
        raw.call("initialize", {"processId": None, "rootUri": None, "capabilities": {},
                                "initializationOptions": {"indexEnable": False, "model": "no-such-model"}},
                 timeout=REQUEST_BOUND)
        answer_ = raw.call("infill/_document", {"uri": "file:///x.py"}, timeout=REQUEST_BOUND)
        assert answer_.get("error", {}).get("code") == -32601, answer_  # MethodNotFound
    finally:
        assert raw.close() == 0


def test_the_checker_sees_stray_stdout(tmp_path: Path) -> None:
    """The fuzz invariant relies on RawServer noticing bytes outside frames: a fake server that prints."""
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "result": None})
    fake = ("import sys; sys.stdout.write('debug print\\n'); "
            f"sys.stdout.write('Content-Length: {len(body)}\\r\\n\\r\\n' + {body!r}); sys.stdout.flush()")
    raw = RawServer([sys.executable, "-c", fake], dict(os.environ), tmp_path / "log")
    assert raw.wait(1, timeout=30) == {"jsonrpc": "2.0", "id": 1, "result": None}
    assert raw.garbage == [b"debug print\n"]
    raw.proc.wait(30)
