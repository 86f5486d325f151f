import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { SERVER_KEYS, completionEnabled, cursorParams, debounceDelay, serverSettings } from "../src/settings";

const pkg = JSON.parse(readFileSync(join(__dirname, "..", "package.json"), "utf8"));
const props = pkg.contributes.configuration.properties as Record<string, { default: unknown }>;

test("every server setting is a VS Code setting, and the defaults are what the server gets", () => {
  for (const key of SERVER_KEYS) assert.ok(props[`infill.${key}`], `infill.${key} missing from package.json`);
  const defaults = serverSettings((k) => props[`infill.${k}`]?.default);
  assert.equal(defaults.enable, true);
  assert.equal(defaults.model, null);
  assert.equal(defaults.device, "auto");
  assert.deepEqual(Object.keys(defaults).sort(), [...SERVER_KEYS].sort());
});

test("client-only settings never reach the server; empty model path means the default", () => {
  const values: Record<string, unknown> = { serverPath: "/x/infill", debounceMs: 75, model: "", maxTokensSingleLine: 20 };
  const out = serverSettings((k) => values[k]);
  assert.deepEqual(out, { model: null, maxTokensSingleLine: 20 });
});

test("the debounce is a sane number of milliseconds, anything else means none", () => {
  assert.equal(debounceDelay(75), 75);
  assert.equal(debounceDelay(0), 0);
  assert.equal(debounceDelay(-5), 0);
  assert.equal(debounceDelay("100"), 0);
  assert.equal(debounceDelay(Number.NaN), 0);
  assert.equal(debounceDelay(60_000), 5000);
  assert.equal(props["infill.debounceMs"].default, 75);
});

test("completion is off when disabled globally or for the language", () => {
  assert.equal(completionEnabled({}, "python"), true);
  assert.equal(completionEnabled({ enable: false }, "python"), false);
  assert.equal(completionEnabled({ disabledLanguages: ["markdown"] }, "markdown"), false);
  assert.equal(completionEnabled({ disabledLanguages: ["markdown"] }, "python"), true);
  assert.equal(completionEnabled({ disabledLanguages: "markdown" }, "markdown"), true); // malformed: ignored
});

test("a resting cursor is told to the server only where completion will be asked", () => {
  const at = { uri: "file:///w/a.py", scheme: "file", languageId: "python", line: 3, character: 7 };
  assert.deepEqual(cursorParams({}, at), { textDocument: { uri: "file:///w/a.py" }, position: { line: 3, character: 7 } });
  assert.ok(cursorParams({}, { ...at, scheme: "untitled", uri: "untitled:Untitled-1" }));
  assert.equal(cursorParams({}, { ...at, scheme: "output" }), undefined); // the output pane, a diff, settings
  assert.equal(cursorParams({}, { ...at, scheme: "git" }), undefined);
  assert.equal(cursorParams({ enable: false }, at), undefined);
  assert.equal(cursorParams({ disabledLanguages: ["python"] }, at), undefined);
});
