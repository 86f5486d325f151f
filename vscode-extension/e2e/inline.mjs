// Drives VS Code for the web (code-server) in headless Chromium for tests/test_vscode.py and prints one
// JSON line with what it saw. One JSON argument:
//   {scenario: "inline" | "missing" | "search" | "edit", url, file, path, typed, typedAfterRestart?, codeServerPid?,
//    chromium, screenshot, acceptedScreenshot?, cycleScreenshot?, failureScreenshot?, readyTimeoutMs, ghostTimeoutMs}
// With codeServerPid, `servers` in the result lists the command lines of the infill servers running under
// code-server at the end.
// "inline": wait for the infill status bar item to say the model is ready, type, trigger (Alt+\, the
//   extension's infill.suggest) until ghost text shows, watching for the pending spinner; screenshot; cycle
//   with Alt+] / Alt+[; accept a word (Ctrl+Right), then the rest (Tab), save; then, with codeServerPid,
//   kill the infill server (a crash), wait until the extension has it running again, type the start of a
//   function (a suggestion of several lines), save, get its ghost text, accept its first line (Shift+Tab)
//   and save again: `beforeAcceptLine` and `ghostAfterRestart.lines` let the test check what was inserted.
// "edit": the "Edit with instruction…" code action; the edit opens in VS Code's Refactor Preview; Apply.
// "missing": the server executable does not exist: expect the status item and the notification's fix.
import { chromium } from "playwright-core";
import { readdirSync, readFileSync } from "node:fs";

const opts = JSON.parse(process.argv[2]);
const log = (...a) => console.error(`[e2e ${new Date().toISOString().slice(11, 19)}]`, ...a);
const result = { ok: false, scenario: opts.scenario, statusSeen: [], ghost: null, error: null, blocked: [] };

const loopback = (u) => {
  try {
    const { protocol, hostname } = new URL(u);
    if (protocol === "data:" || protocol === "blob:") return true;
    return hostname === "127.0.0.1" || hostname === "localhost" || hostname === "[::1]";
  } catch {
    return false;
  }
};

/** PIDs of `infill serve` processes started under the given process (never anyone else's). */
function infillServers(rootPid) {
  const parent = new Map();
  const cmd = new Map();
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, "utf8");
      parent.set(Number(name), Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]));
      cmd.set(Number(name), readFileSync(`/proc/${name}/cmdline`, "utf8").split("\0"));
    } catch {}
  }
  const under = (pid) => {
    for (let p = pid, n = 0; p > 1 && n < 50; p = parent.get(p) ?? 0, n++) if (p === rootPid) return true;
    return false;
  };
  return [...cmd.entries()]
    .filter(([pid, argv]) => under(pid) && argv.includes("serve") && argv.some((a) => /infill/.test(a)))
    .map(([pid]) => pid);
}

/** A process's command line (the test checks which `infill` the extension started). */
const argvOf = (pid) => {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").filter(Boolean);
  } catch {
    return [];
  }
};

const browser = await chromium.launch({
  executablePath: opts.chromium ?? "/usr/bin/chromium",
  headless: true,
  // playwright gives every launch a fresh temporary --user-data-dir
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-quic",
    "--no-first-run", "--disable-component-update", "--disable-sync"],
});
let page;
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  // Nothing leaves the machine: every non-loopback request from the page is refused.
  await context.route("**/*", (route) => {
    const url = route.request().url();
    if (loopback(url)) return route.continue();
    result.blocked.push(url.slice(0, 120));
    return route.abort();
  });
  page = await context.newPage();
  page.on("pageerror", (e) => log("page error:", String(e).slice(0, 200)));
  await page.goto(opts.url, { waitUntil: "domcontentloaded" });
  await page.locator(".monaco-workbench").waitFor({ timeout: 60_000 });
  log("workbench loaded");

  // Open the file through Quick Open.
  await page.locator(".monaco-workbench").click({ position: { x: 640, y: 400 } }).catch(() => {});
  await page.keyboard.press("Control+P");
  await page.locator(".quick-input-widget input").waitFor({ timeout: 20_000 });
  await page.keyboard.type(opts.file);
  await page.locator(".quick-input-list .monaco-list-row", { hasText: opts.file }).first().waitFor({ timeout: 20_000 });
  await page.waitForTimeout(300);
  await page.keyboard.press("Enter");
  const editor = page.locator(".part.editor .monaco-editor").first();
  await editor.waitFor({ timeout: 30_000 });
  log("file open");

  // The extension's status bar item (id: publisher.extension.item).
  const item = page.locator('[id="infill.infill.infill.status"]').first();
  let last = "";
  const statusText = async () => {
    const text = ((await item.textContent({ timeout: 1000 }).catch(() => "")) ?? "").trim();
    if (text !== last) {
      last = text;
      result.statusSeen.push(text);
      log("status:", JSON.stringify(text));
    }
    return text;
  };
  const waitStatus = async (want, timeoutMs, fail) => {
    const by = Date.now() + timeoutMs;
    for (;;) {
      const text = await statusText();
      if (want.test(text)) return text;
      if (fail && fail.test(text)) throw new Error(`status bar says "${text}"`);
      if (Date.now() > by) throw new Error(`status bar still "${text}" after ${timeoutMs} ms (waiting for ${want})`);
      await page.waitForTimeout(500);
    }
  };

  if (opts.scenario === "search") {
    await waitStatus(opts.expectStatus ? new RegExp(opts.expectStatus) : /^infill/, opts.readyTimeoutMs, /not installed|stopped/);
    await page.keyboard.press("F1");
    await page.locator(".quick-input-widget input").waitFor({ timeout: 20_000 });
    await page.keyboard.type("infill: Search Code");
    await page.locator(".quick-input-list .monaco-list-row", { hasText: "Search Code" }).first().waitFor({ timeout: 20_000 });
    await page.keyboard.press("Enter");
    // Our quick pick, not the palette still closing (its input holds "infill: Search Code" too): keys
    // sent before it has focus land in the editor.
    const input = page.locator('.quick-input-widget input[placeholder^="Describe the code"]');
    await input.waitFor({ timeout: 20_000 });
    await input.focus();
    // The index is built in the background after start: ask again until the result shows.
    const row = page.locator(".quick-input-list .monaco-list-row", { hasText: opts.expectName }).first();
    const by = Date.now() + opts.ghostTimeoutMs;
    for (let tries = 0; !(await row.isVisible().catch(() => false)); tries++) {
      if (Date.now() > by) throw new Error(`no search result named ${opts.expectName} after ${tries} queries`);
      await page.keyboard.press("Control+A");
      // One input event: the rows can only be this query's (typed key by key on a busy machine, the
      // debounce lets a half-typed query through, and its rows may show until the last answer lands).
      await page.keyboard.insertText(opts.query);
      await row.waitFor({ timeout: 10_000 }).catch(() => statusText());
    }
    // The quick pick is busy while a query is in flight: read the rows of the settled answer.
    await page.locator(".quick-input-widget .quick-input-progress.active").waitFor({ state: "hidden", timeout: 10_000 }).catch(() => {});
    const rows = page.locator(".quick-input-list .monaco-list-row");
    result.searchRows = (await rows.allTextContents()).map((t) => t.replace(/\s+/g, " ").trim());
    log("search rows:", JSON.stringify(result.searchRows.slice(0, 3)));
    await page.screenshot({ path: opts.screenshot });
    await page.keyboard.press("Enter");
    await page.locator(".tab.active", { hasText: opts.expectFile }).waitFor({ timeout: 20_000 });
    const cursor = page.locator(".statusbar-item", { hasText: /^Ln \d+, Col \d+/ }).first();
    result.cursor = ((await cursor.textContent()) ?? "").trim();
    result.activeTab = ((await page.locator(".tab.active").first().textContent()) ?? "").trim();
    result.ok = true;
  } else if (opts.scenario === "edit") {
    await waitStatus(/^infill$/, opts.readyTimeoutMs, /not installed|stopped|error/);
    // Select lines [selectFrom, selectTo] (1-based) with Go to Line and shift+arrows.
    const select = async () => {
      await editor.click();
      await page.keyboard.press("Control+G");
      await page.keyboard.type(String(opts.selectFrom));
      await page.keyboard.press("Enter");
      await page.keyboard.press("Home");
      await page.keyboard.press("Home");
      for (let i = opts.selectFrom; i <= opts.selectTo; i++) await page.keyboard.press("Shift+ArrowDown");
    };
    // The server's code actions for the selection (Ctrl+.): the extension announced it can ask for an
    // instruction, so "Edit with instruction…" must be among them.
    const action = page.locator(".action-widget .action-list-item, .action-widget .monaco-list-row", { hasText: "Edit with instruction" }).first();
    for (let tries = 0; tries < 3 && !(await action.isVisible().catch(() => false)); tries++) {
      await select();
      await page.keyboard.press("Control+Period");
      await action.waitFor({ timeout: 8000 }).catch(() => {});
    }
    result.codeActions = (await page.locator(".action-widget .action-list-item, .action-widget .monaco-list-row").allTextContents())
      .map((t) => t.trim()).filter(Boolean);
    log("code actions:", JSON.stringify(result.codeActions));
    if (!(await action.isVisible().catch(() => false))) throw new Error(`no "Edit with instruction…" code action: ${result.codeActions}`);
    // Choosing it runs the extension's own command (infill.editWithInstruction) with the action's range.
    await action.click();
    // The input box's prompt (not the palette, which also says "Edit with Instruction").
    await page.locator(".quick-input-widget", { hasText: "How should the selected code change?" }).waitFor({ timeout: 20_000 });
    await page.keyboard.type(opts.instruction);
    await page.keyboard.press("Enter");
    // The edit arrives annotated needsConfirmation: VS Code's Refactor Preview opens in the panel.
    const panel = page.locator(".bulk-edit-panel").first();
    const failed = page.locator(".notifications-toasts .notification-toast", { hasText: /edit failed|no change/ }).first();
    await Promise.race([panel.waitFor({ timeout: opts.ghostTimeoutMs }), failed.waitFor({ timeout: opts.ghostTimeoutMs })]);
    if (await failed.isVisible().catch(() => false)) {
      // The server refused (e.g. the model's edit would not parse): the user must see why.
      result.refused = ((await failed.locator(".notification-list-item-message").textContent()) ?? "").trim();
      log("edit refused:", result.refused);
      await page.screenshot({ path: opts.screenshot });
      result.ok = true;
      throw null;
    }
    await page.waitForTimeout(1000);
    result.previewRows = (await panel.locator(".monaco-list-row").allTextContents()).map((t) => t.replace(/\s+/g, " ").trim());
    log("refactor preview:", JSON.stringify(result.previewRows));
    // Nothing is written before the user says so: the file's tab is not dirty.
    result.dirtyBeforeApply = await page.locator(".tab.dirty", { hasText: opts.file }).count();
    // Open the change's diff (a click on the file's row).
    await panel.locator(".monaco-list-row", { hasText: opts.file }).first().click().catch(() => {});
    await page.waitForTimeout(1500);
    // Changes that need confirmation start unticked (VS Code's per-change review): tick the file's box.
    const box = panel.locator(".monaco-list-row", { hasText: opts.file }).first().locator(".monaco-checkbox, .monaco-custom-toggle").first();
    result.tickedBeforeApply = await box.evaluate((e) => e.classList.contains("checked") || e.getAttribute("aria-checked") === "true").catch(() => null);
    await box.click();
    await page.waitForTimeout(500);
    result.tickedAfterClick = await box.evaluate((e) => e.classList.contains("checked") || e.getAttribute("aria-checked") === "true").catch(() => null);
    log("ticked before/after:", result.tickedBeforeApply, result.tickedAfterClick);
    // The picture after the tick: the preview's diff shows only ticked changes (both sides are the same before).
    await page.waitForTimeout(1000);
    await page.screenshot({ path: opts.screenshot });
    const apply = panel.getByRole("button", { name: /^Apply/ }).first();
    if (await apply.isVisible().catch(() => false)) await apply.click();
    else {
      await panel.click();
      await page.keyboard.press("Control+Enter");
    }
    await panel.waitFor({ state: "hidden", timeout: 20_000 }).catch(() => {});
    await page.waitForTimeout(1000);
    await page.locator(".tab", { hasText: opts.file }).first().click();
    await page.keyboard.press("Control+S");
    await page.waitForTimeout(1500);
    result.ok = true;
  } else if (opts.scenario === "missing") {
    await waitStatus(/not installed/, 60_000);
    const toast = page.locator(".notifications-toasts .notification-toast", { hasText: "was not found" }).first();
    await toast.waitFor({ timeout: 30_000 });
    result.notification = ((await toast.textContent()) ?? "").replace(/\s+/g, " ");
    await page.screenshot({ path: opts.screenshot });
    result.ok = true;
  } else {
    const ghost = page.locator(".monaco-editor .ghost-text-decoration, .monaco-editor .ghost-text-decoration-preview");
    const nbsp = (t) => t.replace(/\u00a0/g, " ");
    /** The suggestion on screen, line by line: the ghost text on the cursor's line, then the lines VS Code
     * shows below it (a view zone holding .suggest-preview-text, one .view-line each). */
    const ghostLines = async () => [
      nbsp((await ghost.allTextContents()).join("")),
      ...(await page.locator(".monaco-editor .suggest-preview-text .view-line").allTextContents()).map(nbsp),
    ];
    /** Type at the end of the file. */
    const typeAtEnd = async (typed) => {
      await editor.click();
      await page.keyboard.press("Control+End");
      await page.keyboard.type(typed, { delay: 30 });
    };
    /** Ask for inline suggestions until ghost text shows. */
    const getGhost = async () => {
      const by = Date.now() + opts.ghostTimeoutMs;
      let tries = 0;
      while (!(await ghost.first().isVisible().catch(() => false))) {
        if (Date.now() > by) throw new Error(`no ghost text after ${opts.ghostTimeoutMs} ms and ${tries} triggers`);
        tries++;
        await page.keyboard.press("Alt+Backslash"); // infill.suggest: an explicit request (several suggestions)
        // Each trigger cancels the request in flight, so wait longer each time: on a busy 2-core
        // machine a cold prompt can take several seconds, and re-triggering too early never lets it finish.
        const wait = Math.min(5000 * tries, 30_000, Math.max(1000, by - Date.now()));
        await ghost.first().waitFor({ state: "visible", timeout: wait }).catch(() => {});
      }
      await page.waitForTimeout(300); // the lines below the cursor's are drawn in a view zone just after
      const lines = await ghostLines();
      log("ghost text:", JSON.stringify(lines), "after", tries, "triggers");
      return { inline: lines[0], lines, triggers: tries };
    };
    const typeAndGetGhost = async (typed) => {
      await typeAtEnd(typed);
      return getGhost();
    };

    // The pending spinner ($(loading~spin) in the status item) while the server writes a suggestion.
    let watching = true;
    result.spinnerSeen = false;
    const watchSpinner = (async () => {
      while (watching) {
        if (await item.locator(".codicon-loading").count().catch(() => 0)) result.spinnerSeen = true;
        await page.waitForTimeout(50);
      }
    })();
    await waitStatus(/^infill$/, opts.readyTimeoutMs, /not installed|stopped|error/);
    result.ghost = await typeAndGetGhost(opts.typed);
    watching = false;
    await watchSpinner;
    await page.screenshot({ path: opts.screenshot });
    // Cycling: Alt+] shows the next of the server's suggestions, Alt+[ goes back.
    const ghostNow = async () => (await ghost.allTextContents()).join("").replace(/\u00a0/g, " ");
    result.cycled = [result.ghost.inline];
    for (const key of ["Alt+BracketRight", "Alt+BracketRight", "Alt+BracketLeft", "Alt+BracketLeft"]) {
      await page.keyboard.press(key);
      await page.waitForTimeout(key === "Alt+BracketRight" && result.cycled.length === 1 ? 8000 : 1500);
      result.cycled.push(await ghostNow());
    }
    log("cycled through:", JSON.stringify(result.cycled));
    if (result.cycled.at(-1) !== result.ghost.inline) {
      // back to the first suggestion, whatever the order
      for (let i = 0; i < 3 && (await ghostNow()) !== result.ghost.inline; i++) {
        await page.keyboard.press("Alt+BracketRight");
        await page.waitForTimeout(1000);
      }
    }
    if (opts.cycleScreenshot) await page.screenshot({ path: opts.cycleScreenshot });
    // Accept the next word (Ctrl+Right): the rest stays as ghost text; Tab takes the rest.
    await page.keyboard.press("Control+ArrowRight");
    await page.waitForTimeout(1000);
    result.ghostAfterWord = await ghostNow();
    log("after accepting a word:", JSON.stringify(result.ghostAfterWord));
    await page.keyboard.press("Tab");
    await page.waitForTimeout(500);
    await page.keyboard.press("Escape"); // dismiss whatever the server suggests next
    await page.keyboard.press("Control+S");
    await page.waitForTimeout(1500);
    if (opts.acceptedScreenshot) await page.screenshot({ path: opts.acceptedScreenshot });

    // A click on the status item turns completions off (no ghost text), another turns them back on.
    await item.click();
    await waitStatus(/^infill: off$/, 10_000);
    await editor.click();
    await page.keyboard.press("Control+End");
    await page.keyboard.type("\n# the end", { delay: 30 });
    await page.keyboard.press("Alt+Backslash");
    await page.waitForTimeout(6000);
    result.ghostWhileOff = await ghost.first().isVisible().catch(() => false);
    await item.click();
    await waitStatus(/^infill$/, 10_000);

    if (opts.codeServerPid && opts.typedAfterRestart) {
      const before = infillServers(opts.codeServerPid);
      if (before.length !== 1) throw new Error(`expected one infill server under code-server, found ${before}`);
      process.kill(before[0], "SIGKILL");
      log("killed infill server", before[0]);
      const by = Date.now() + 60_000;
      let after = [];
      while (!(after = infillServers(opts.codeServerPid).filter((p) => p !== before[0])).length) {
        if (Date.now() > by) throw new Error("the extension did not restart the server within 60 s");
        await statusText();
        await page.waitForTimeout(500);
      }
      result.restartedServer = { before: before[0], after: after[0] };
      await waitStatus(/^infill$/, opts.readyTimeoutMs, /not installed|stopped|error/);
      // The start of a function: a suggestion of several lines. Saved first, so the test knows the file
      // before Shift+Tab (the extension's binding for acceptNextLine) and can tell one line from all.
      await typeAtEnd(opts.typedAfterRestart);
      await page.keyboard.press("Control+S");
      await page.waitForTimeout(1500);
      result.beforeAcceptLine = readFileSync(opts.path, "utf8");
      result.ghostAfterRestart = await getGhost();
      await page.keyboard.press("Shift+Tab");
      await page.waitForTimeout(500);
      result.ghostAfterLine = await ghostLines(); // the rest of the suggestion, still offered
      log("after accepting a line:", JSON.stringify(result.ghostAfterLine));
      await page.keyboard.press("Escape");
      await page.keyboard.press("Control+S");
      await page.waitForTimeout(1500);
    }
    result.ok = true;
  }
} catch (err) {
  if (err !== null) result.error = String(err?.message ?? err); // null: a scenario ended early, on purpose
  if (page && opts.failureScreenshot) await page.screenshot({ path: opts.failureScreenshot }).catch(() => {});
} finally {
  // Which servers the extension is running now (code-server is still up: the test stops it afterwards).
  if (opts.codeServerPid) result.servers = infillServers(opts.codeServerPid).map(argvOf);
  await browser.close();
}
console.log(JSON.stringify(result));
