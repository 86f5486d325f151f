import { test } from "node:test";
import assert from "node:assert/strict";
import { StatusModel } from "../src/status";

test("model preparation progress shows a percentage, then the idle state", () => {
  const s = new StatusModel();
  s.setServer("running");
  s.progress("t1", { kind: "begin", title: "infill: preparing model", percentage: 0 });
  s.progress("t1", { kind: "report", message: "exporting ONNX", percentage: 42 });
  assert.equal(s.view().text, "$(sync~spin) infill: preparing model 42%");
  assert.match(s.view().tooltip, /exporting ONNX/);
  s.progress("t1", { kind: "end", message: "SmolLM2 ready on cpu" });
  assert.equal(s.view().text, "$(sparkle) infill");
  assert.equal(s.view().action, "toggle");
});

test("a server that dies mid-progress leaves no spinner; restarting clears the old failure", () => {
  const s = new StatusModel();
  s.setServer("running");
  s.progress(7, { kind: "begin", title: "infill: indexing" });
  s.setServer("stopped");
  assert.equal(s.view().action, "restart");
  assert.doesNotMatch(s.view().text, /spin/);
  s.setServer("running");
  assert.equal(s.busy, false);
  s.progress("m", { kind: "begin", title: "infill: preparing model" });
  s.progress("m", { kind: "end", message: "failed: no model at /x" });
  assert.equal(s.view().text, "$(warning) infill: error");
  assert.match(s.view().tooltip, /no model at \/x/);
  s.setServer("starting");
  s.setServer("running");
  assert.equal(s.view().text, "$(sparkle) infill");
});

test("off, off for a language, missing server", () => {
  const s = new StatusModel();
  s.setServer("running");
  s.disabledLanguage = "markdown";
  assert.equal(s.view().text, "$(circle-slash) infill: off for markdown");
  s.enabled = false;
  assert.equal(s.view().text, "$(circle-slash) infill: off");
  s.setServer("missing");
  assert.equal(s.view().action, "showFix");
});

test("reports for unknown tokens are ignored", () => {
  const s = new StatusModel();
  s.setServer("running");
  s.progress("x", { kind: "report", message: "late", percentage: 50 });
  s.progress("x", { kind: "end" });
  assert.equal(s.view().text, "$(sparkle) infill");
});

test("a pending suggestion spins until the server says none is left; a dead server leaves no spinner", () => {
  const s = new StatusModel();
  s.setServer("running");
  s.pending = 1;
  assert.equal(s.view().text, "$(loading~spin) infill");
  assert.match(s.view().tooltip, /Writing a suggestion/);
  s.pending = 0;
  assert.equal(s.view().text, "$(sparkle) infill");
  s.pending = 2;
  s.progress("m", { kind: "begin", title: "infill: preparing model" });
  assert.equal(s.view().text, "$(sync~spin) infill: preparing model"); // progress says more than a spinner
  s.setServer("stopped");
  s.setServer("running");
  assert.equal(s.pending, 0);
  s.pending = 1;
  s.enabled = false;
  assert.equal(s.view().text, "$(circle-slash) infill: off");
});
