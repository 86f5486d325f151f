import { test } from "node:test";
import assert from "node:assert/strict";
import { parseSearchResults, toPickItem } from "../src/search";
import { editArguments, editOutcome, parseEditResult, streamProgress, validateInstruction } from "../src/edit";

const range = (l1: number, c1: number, l2: number, c2: number) => ({ start: { line: l1, character: c1 }, end: { line: l2, character: c2 } });

test("search results: malformed entries are skipped, items show name, place and snippet", () => {
  const raw = [
    { uri: "file:///w/cfg.py", range: range(9, 0, 20, 0), name: "parse_config", kind: "function", snippet: "\ndef parse_config(path):\n    ...", score: 0.9 },
    { uri: "file:///w/x.py" },
    "garbage",
    { uri: "file:///w/y.py", range: range(0, 0, 1, 0), name: "", kind: "class", snippet: "x".repeat(500), score: 0.1 },
  ];
  const results = parseSearchResults(raw);
  assert.equal(results.length, 2);
  const item = toPickItem(results[0], (u) => u.replace("file:///w/", ""));
  assert.equal(item.label, "$(symbol-function) parse_config");
  assert.equal(item.description, "cfg.py:10");
  assert.equal(item.detail, "def parse_config(path):  ...");
  const long = toPickItem(results[1], (u) => u);
  assert.equal(long.label, "$(symbol-class) (chunk)");
  assert.ok(long.detail.length <= 160);
  assert.deepEqual(parseSearchResults(null), []);
  // top-level code is named after its place, which the description shows: its first line labels it
  const [block] = parseSearchResults([{ uri: "file:///w/s.py", range: range(0, 0, 2, 0), name: "s.py:1", kind: "block",
    snippet: "import json\nimport os\nDEBUG = 1", score: 0.5 }]);
  const row = toPickItem(block, (u) => u.replace("file:///w/", ""));
  assert.deepEqual([row.label, row.description, row.detail], ["$(symbol-misc) import json", "s.py:1", "import os  DEBUG = 1"]);
});

test("instruction validation", () => {
  assert.ok(validateInstruction("   "));
  assert.ok(validateInstruction("x".repeat(10_000)));
  assert.equal(validateInstruction("add a docstring"), undefined);
  assert.deepEqual(editArguments("file:///a.py", range(1, 0, 2, 0), 3, "  add types ", true), {
    uri: "file:///a.py", range: range(1, 0, 2, 0), version: 3, instruction: "add types", apply: true, preview: true,
  });
});

test("edit results: applied, discarded in the preview, or no change", () => {
  assert.equal(parseEditResult(null), undefined);
  assert.equal(parseEditResult({ diff: "x" }), undefined);
  const we = { documentChanges: [{ textDocument: { uri: "file:///a.py", version: 4 }, edits: [] }] };
  const applied = parseEditResult({ edit: we, diff: "--- a\n+++ b\n", applied: true, previewed: true });
  assert.deepEqual(applied, { edit: we, diff: "--- a\n+++ b\n", applied: true, previewed: true });
  assert.equal(editOutcome(applied), undefined);
  assert.match(editOutcome({ ...applied!, applied: false })!, /discarded/);
  assert.match(editOutcome({ ...applied!, applied: false, previewed: false })!, /not applied/);
  assert.match(editOutcome({ ...applied!, diff: " " })!, /no change/);
  assert.match(editOutcome(undefined)!, /no change/);
});


test("edit stream: the line count and last line of this document's edit, nothing else", () => {
  const uri = "file:///w/a.py";
  const text = "def mean(xs):\n    \"\"\"Average.\"\"\"\n\n    return sum(xs) / len(xs)\n";
  assert.equal(streamProgress({ uri, text, done: false }, uri), "3 lines written: return sum(xs) / len(xs)");
  assert.equal(streamProgress({ uri, text: "x = 1\n", done: false }, uri), "1 line written: x = 1");
  assert.equal(streamProgress({ uri: "file:///w/b.py", text, done: false }, uri), undefined);
  assert.equal(streamProgress({ uri, text, done: true }, uri), undefined);
  assert.equal(streamProgress({ uri, text: "\n  \n", done: false }, uri), undefined);
  assert.equal(streamProgress({ uri, text: 3 }, uri), undefined);
  assert.equal(streamProgress(null, uri), undefined);
  assert.ok(streamProgress({ uri, text: "y".repeat(200) }, uri)!.length < 90);
});
