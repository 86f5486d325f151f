import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { SERVER_KEYS, completionEnabled, serverSettings } from "../src/settings";

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
  const values: Record<string, unknown> = { serverPath: "/x/infill", editPreview: true, model: "", maxTokensSingleLine: 20 };
  const out = serverSettings((k) => values[k]);
  assert.deepEqual(out, { model: null, maxTokensSingleLine: 20 });
});

test("completion is off when disabled globally or for the language", () => {
  assert.equal(completionEnabled({}, "python"), true);
  assert.equal(completionEnabled({ enable: false }, "python"), false);
  assert.equal(completionEnabled({ disabledLanguages: ["markdown"] }, "markdown"), false);
  assert.equal(completionEnabled({ disabledLanguages: ["markdown"] }, "python"), true);
  assert.equal(completionEnabled({ disabledLanguages: "markdown" }, "markdown"), true); // malformed: ignored
});
