// Drives VS Code for the web (code-server) in headless Chromium: waits for the infill status bar item to
// say the model is ready, types in a file, re-triggers inline suggestions until ghost text shows, takes a
// screenshot, accepts with Tab and saves. Prints one JSON line for tests/test_vscode.py to check.
// Input: one JSON argument {url, file, typed, screenshot, acceptedScreenshot, readyTimeoutMs, ghostTimeoutMs}.
import { chromium } from "playwright-core";

const opts = JSON.parse(process.argv[2]);
const log = (...a) => console.error(`[e2e ${new Date().toISOString().slice(11, 19)}]`, ...a);
const result = { ok: false, statusSeen: [], ghost: null, error: null, blocked: [] };

const loopback = (u) => {
  try {
    const { protocol, hostname } = new URL(u);
    if (protocol === "data:" || protocol === "blob:") return true;
    return hostname === "127.0.0.1" || hostname === "localhost" || hostname === "[::1]";
  } catch {
    return false;
  }
};

const browser = await chromium.launch({
  executablePath: opts.chromium ?? "/usr/bin/chromium",
  headless: true,
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-quic",
    "--no-first-run", "--disable-component-update", "--disable-sync",
  ], // playwright gives every launch a fresh temporary --user-data-dir
});
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  // Nothing leaves the machine: every non-loopback request from the page is refused.
  await context.route("**/*", (route) => {
    const url = route.request().url();
    if (loopback(url)) return route.continue();
    result.blocked.push(url.slice(0, 120));
    return route.abort();
  });
  const page = await context.newPage();
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

  // The status bar item tells when the server's model is ready ("infill" with no spinner).
  result.statusItems = await page.locator(".statusbar-item").evaluateAll((els) => els.map((e) => e.id));
  const item = page.locator('[id="infill.infill.infill.status"]').first();
  const readyBy = Date.now() + opts.readyTimeoutMs;
  let last = "";
  for (;;) {
    const text = ((await item.textContent({ timeout: 1000 }).catch(() => "")) ?? "").trim();
    if (text !== last) {
      last = text;
      result.statusSeen.push(text);
      log("status:", JSON.stringify(text));
    }
    if (/^infill$/.test(text)) break;
    if (/not installed|stopped|error/.test(text)) throw new Error(`status bar says "${text}"`);
    if (Date.now() > readyBy) throw new Error(`model not ready after ${opts.readyTimeoutMs} ms (status "${text}")`);
    await page.waitForTimeout(1000);
  }

  // Type at the end of the file, then ask for inline suggestions until ghost text shows.
  await editor.click();
  await page.keyboard.press("Control+End");
  await page.keyboard.type(opts.typed, { delay: 30 });
  const ghost = page.locator(".monaco-editor .ghost-text-decoration, .monaco-editor .ghost-text-decoration-preview");
  const ghostBy = Date.now() + opts.ghostTimeoutMs;
  let tries = 0;
  while (!(await ghost.first().isVisible().catch(() => false))) {
    if (Date.now() > ghostBy) throw new Error(`no ghost text after ${opts.ghostTimeoutMs} ms and ${tries} triggers`);
    tries++;
    await page.keyboard.press("Alt+Backslash"); // editor.action.inlineSuggest.trigger
    await ghost.first().waitFor({ state: "visible", timeout: 8000 }).catch(() => {});
  }
  const inline = (await ghost.allTextContents()).join("");
  const below = (await page.locator(".monaco-editor .ghost-text").allTextContents()).join("\n");
  result.ghost = { inline: inline.replace(/\u00a0/g, " "), block: below.replace(/\u00a0/g, " "), triggers: tries };
  log("ghost text:", JSON.stringify(result.ghost));
  await page.screenshot({ path: opts.screenshot });

  await page.keyboard.press("Tab");
  await page.waitForTimeout(500);
  result.ghostAfterTab = await ghost.first().isVisible().catch(() => false);
  await page.keyboard.press("Control+S");
  await page.waitForTimeout(1500);
  if (opts.acceptedScreenshot) await page.screenshot({ path: opts.acceptedScreenshot });
  result.ok = true;
} catch (err) {
  result.error = String(err?.message ?? err);
  try {
    const pages = browser.contexts().flatMap((c) => c.pages());
    if (pages[0] && opts.failureScreenshot) await pages[0].screenshot({ path: opts.failureScreenshot });
  } catch {}
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
