import { test } from "node:test";
import assert from "node:assert/strict";
import { missingServerMessage, resolveExecutable } from "../src/executable";

const files = new Set(["/usr/bin/infill", "/home/u/.venv/bin/infill", "/work/proj/tools/infill", "C:\\py\\Scripts\\infill.EXE"]);
const exists = (f: string) => files.has(f);

test("a bare name is found on PATH in order", () => {
  const sys = { env: { PATH: "/nope:/usr/bin" }, platform: "linux", exists };
  assert.equal(resolveExecutable("infill", sys), "/usr/bin/infill");
  assert.equal(resolveExecutable("other", sys), undefined);
  assert.equal(resolveExecutable("infill", { ...sys, env: {} }), undefined);
});

test("paths: absolute, ~ and relative to the workspace", () => {
  const sys = { env: {}, platform: "linux", exists, home: "/home/u" };
  assert.equal(resolveExecutable("~/.venv/bin/infill", sys), "/home/u/.venv/bin/infill");
  assert.equal(resolveExecutable("tools/infill", sys, "/work/proj"), "/work/proj/tools/infill");
  assert.equal(resolveExecutable("/missing/infill", sys), undefined);
  assert.equal(resolveExecutable("   ", sys), undefined);
});

test("Windows uses PATHEXT", () => {
  const sys = { env: { PATH: "C:\\py\\Scripts", PATHEXT: ".COM;.EXE" }, platform: "win32", exists };
  // path.join is POSIX on this test machine, so look up through a path the POSIX join produces too.
  files.add("C:\\py\\Scripts/infill.EXE");
  assert.equal(resolveExecutable("infill", sys), "C:\\py\\Scripts/infill.EXE");
});

test("the missing-server message names both fixes", () => {
  const msg = missingServerMessage("infill");
  assert.ok(msg.includes("python3 -m venv .venv && . .venv/bin/activate && pip install -e '.[coder]'"), msg);
  assert.match(msg, /infill\.serverPath/);
});
