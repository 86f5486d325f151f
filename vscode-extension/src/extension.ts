/**
 * The infill extension: starts `infill serve`, lets vscode-languageclient wire inline completion
 * (LSP 3.18 `textDocument/inlineCompletion`; VS Code itself cycles, and accepts a word or a line), and
 * adds what plain LSP cannot: the edit and search commands with their UI, a debounce and a trigger key
 * for suggestions, and a status bar item fed by `$/progress` and the server's `infill/pending` that
 * toggles completions. Edits arrive as `workspace/applyEdit` annotated `needsConfirmation`, which VS Code
 * shows in its Refactor Preview. All decisions live in the pure modules next to this file; this one only
 * talks to VS Code.
 */
import * as fs from "node:fs";
import * as vscode from "vscode";
import {
  DidChangeConfigurationNotification,
  ExecuteCommandRequest,
  LanguageClient,
  LanguageClientOptions,
  ServerOptions,
  State,
} from "vscode-languageclient/node";
import { editArguments, editOutcome, parseEditResult, streamProgress, validateInstruction } from "./edit";
import { INSTALL_COMMAND, missingServerMessage, resolveExecutable } from "./executable";
import { PickItem, parseSearchResults, toPickItem } from "./search";
import { completionEnabled, cursorParams, debounceDelay, serverSettings } from "./settings";
import { StatusModel } from "./status";

/**
 * The server offers an "Edit with instruction…" code action only to clients that say (in this
 * experimental capability) they handle its client-side command, `infill.editWithInstruction`.
 */
const ASK_CAPABILITY = "infillEditWithInstruction";
/** The server's notifications this extension handles (editors/README.md, "Protocol notes"). */
const PENDING_CAPABILITY = "infillPending";
const REFRESH_CAPABILITY = "infillRefresh";
const PENDING_NOTIFICATION = "infill/pending";
const REFRESH_NOTIFICATION = "infill/refreshInlineCompletion";
/**
 * An edit's code as the server writes it. Refactor Preview cannot be streamed into, so the "editing…"
 * notification says how many lines are written and the last one.
 */
const STREAM_CAPABILITY = "infillEditStream";
const STREAM_NOTIFICATION = "infill/editStream";
/** The edit notifications showing now, by document URI (one edit per document: the server's rule). */
const editProgress = new Map<string, vscode.Progress<{ message?: string }>>();
// Per document: ends the "editing…" notification once the model has written the edit (its stream's last
// message), though the request itself answers only after the user applied or discarded the preview.
const editWritten = new Map<string, () => void>();
/**
 * Where the cursor came to rest, so the server warms its cache there before the first keystroke: LSP says
 * where the user types, never where they look (editors/README.md, "Protocol notes").
 */
const CURSOR_NOTIFICATION = "infill/didMoveCursor";
/** The cursor rests once it has not moved for this long: longer than the gap between two keystrokes. */
const CURSOR_REST_MS = 250;
let cursorTimer: NodeJS.Timeout | undefined;
/** A suggestion written faster than this shows no spinner (no flicker while typing). */
const SPINNER_DELAY_MS = 250;

let client: LanguageClient | undefined;
let extensionVersion = "";
let output: vscode.LogOutputChannel;
let statusItem: vscode.StatusBarItem;
const status = new StatusModel();
let spinnerTimer: NodeJS.Timeout | undefined;

function config(): vscode.WorkspaceConfiguration {
  return vscode.workspace.getConfiguration("infill");
}

function currentSettings() {
  const cfg = config();
  return serverSettings((key) => cfg.get(key));
}

export async function activate(context: vscode.ExtensionContext): Promise<void> {
  output = vscode.window.createOutputChannel("infill", { log: true });
  extensionVersion = String(context.extension.packageJSON.version ?? "");
  output.info(`infill extension ${extensionVersion}`);
  statusItem = vscode.window.createStatusBarItem("infill.status", vscode.StatusBarAlignment.Right, 100);
  statusItem.name = "infill";
  statusItem.command = "infill.statusClicked";
  context.subscriptions.push(output, statusItem);

  const command = (id: string, fn: (...args: any[]) => unknown) =>
    context.subscriptions.push(vscode.commands.registerCommand(id, fn));
  command("infill.suggest", () => vscode.commands.executeCommand("editor.action.inlineSuggest.trigger"));
  command("infill.toggleCompletions", toggleCompletions);
  command("infill.restartServer", restartServer);
  command("infill.editSelection", () => editWithInstruction(Boolean(config().get("editPreview"))));
  command("infill.editSelectionPreview", () => editWithInstruction(true));
  // The server's "Edit with instruction…" code action: its argument is {uri, range, version}.
  command("infill.editWithInstruction", (target?: EditTarget) =>
    editWithInstruction(Boolean(config().get("editPreview")), target),
  );
  command("infill.searchCode", searchCode);
  command("infill.showLog", () => output.show());
  command("infill.statusClicked", onStatusClicked);

  context.subscriptions.push(
    vscode.workspace.onDidChangeConfiguration(onConfigurationChanged),
    vscode.window.onDidChangeActiveTextEditor((editor) => {
      render();
      onCursorMoved(editor);
    }),
    vscode.window.onDidChangeTextEditorSelection((e) => onCursorMoved(e.textEditor)),
  );

  status.enabled = config().get<boolean>("enable", true);
  render();
  statusItem.show();
  await startClient();
}

export async function deactivate(): Promise<void> {
  await stopClient();
}

// ---------------------------------------------------------------------------------------------- server

async function startClient(): Promise<void> {
  const cfg = config();
  const command = (cfg.get<string>("serverPath") || "infill").trim();
  const cwd = vscode.workspace.workspaceFolders?.[0]?.uri.fsPath;
  const resolved = resolveExecutable(command, { env: process.env, platform: process.platform, exists: isExecutable }, cwd);
  if (!resolved) {
    status.setServer("missing");
    render();
    output.appendLine(missingServerMessage(command));
    void showMissingServer(command);
    return;
  }
  const serverOptions: ServerOptions = {
    command: resolved,
    // No `transport`: TransportKind.stdio would append `--stdio`, which `infill serve` does not take.
    args: cfg.get<string[]>("serverArgs", ["serve"]),
    options: cwd ? { cwd } : undefined,
  };
  const clientOptions: LanguageClientOptions = {
    documentSelector: [{ scheme: "file" }, { scheme: "untitled" }],
    outputChannel: output,
    // A function, so every (re)start sends the settings as they are then.
    initializationOptions: () => currentSettings(),
    middleware: {
      provideInlineCompletionItems: async (document, position, ctx, token, next) => {
        if (!completionEnabled(currentSettings(), document.languageId)) return null;
        // While typing, wait for a pause: VS Code cancels this request when the next key comes.
        const delay = ctx.triggerKind === vscode.InlineCompletionTriggerKind.Automatic ? debounceDelay(config().get("debounceMs")) : 0;
        if (delay && !(await pause(delay, token))) return null;
        return next(document, position, ctx, token);
      },
      handleWorkDoneProgress: (token, params, next) => {
        status.progress(token, params);
        render();
        next(token, params);
      },
    },
  };
  client = new LanguageClient("infill", "infill", serverOptions, clientOptions);
  client.registerFeature({
    fillClientCapabilities: (caps) => {
      caps.experimental = {
        ...(caps.experimental as object | undefined),
        [ASK_CAPABILITY]: true,
        [PENDING_CAPABILITY]: true,
        [REFRESH_CAPABILITY]: true,
        [STREAM_CAPABILITY]: true,
      };
    },
    initialize: () => undefined,
    getState: () => ({ kind: "static" }),
    clear: () => undefined,
  });
  client.onDidChangeState((e) => {
    status.setServer(e.newState === State.Running ? "running" : e.newState === State.Starting ? "starting" : "stopped");
    render();
  });
  client.onNotification(PENDING_NOTIFICATION, (params: { pending?: unknown }) =>
    onPending(typeof params?.pending === "number" ? params.pending : 0),
  );
  client.onNotification(STREAM_NOTIFICATION, (params: { uri?: unknown; done?: unknown }) => {
    const progress = typeof params?.uri === "string" ? editProgress.get(params.uri) : undefined;
    const message = progress && streamProgress(params, params.uri as string);
    if (message) progress.report({ message });
    if (params?.done === true && typeof params.uri === "string") editWritten.get(params.uri)?.();
  });
  client.onNotification(REFRESH_NOTIFICATION, (params: { uris?: unknown }) =>
    onRefresh(Array.isArray(params?.uris) ? params.uris.filter((u): u is string => typeof u === "string") : []),
  );
  status.setServer("starting");
  render();
  try {
    await client.start();
    onCursorMoved(vscode.window.activeTextEditor);
  } catch (err) {
    status.setServer("stopped");
    render();
    output.appendLine(`infill: the server failed to start: ${errorText(err)}`);
    void vscode.window.showErrorMessage(`infill: the server failed to start: ${errorText(err)}`, "Show Log").then((c) => {
      if (c) output.show();
    });
  }
}

async function stopClient(): Promise<void> {
  const old = client;
  client = undefined;
  if (!old) return;
  try {
    await old.stop(2000);
  } catch {
    // already stopped or never started: nothing to undo
  }
  await old.dispose().catch(() => undefined);
}

async function restartServer(): Promise<void> {
  await stopClient();
  await startClient();
}

function isExecutable(file: string): boolean {
  try {
    fs.accessSync(file, fs.constants.X_OK);
    return fs.statSync(file).isFile();
  } catch {
    return false;
  }
}

async function showMissingServer(command: string): Promise<void> {
  const choice = await vscode.window.showErrorMessage(
    missingServerMessage(command),
    "Copy Install Command",
    "Open Settings",
    "Retry",
  );
  if (choice === "Copy Install Command") await vscode.env.clipboard.writeText(INSTALL_COMMAND);
  if (choice === "Open Settings") await vscode.commands.executeCommand("workbench.action.openSettings", "infill.serverPath");
  if (choice === "Retry") await restartServer();
}

function onConfigurationChanged(e: vscode.ConfigurationChangeEvent): void {
  if (!e.affectsConfiguration("infill")) return;
  status.enabled = config().get<boolean>("enable", true);
  render();
  if (e.affectsConfiguration("infill.serverPath") || e.affectsConfiguration("infill.serverArgs")) {
    void restartServer();
    return;
  }
  if (client?.state === State.Running) {
    void client.sendNotification(DidChangeConfigurationNotification.type, { settings: { infill: currentSettings() } });
  }
}

/** Resolve true after `ms`, or false as soon as the request is cancelled. */
function pause(ms: number, token: vscode.CancellationToken): Promise<boolean> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      sub.dispose();
      resolve(!token.isCancellationRequested);
    }, ms);
    const sub = token.onCancellationRequested(() => {
      clearTimeout(timer);
      sub.dispose();
      resolve(false);
    });
  });
}

/** Tell the server where the cursor is once it has rested (a click, a jump, another editor focused). */
function onCursorMoved(editor: vscode.TextEditor | undefined): void {
  if (cursorTimer) clearTimeout(cursorTimer);
  cursorTimer = undefined;
  if (!editor) return;
  cursorTimer = setTimeout(() => {
    cursorTimer = undefined;
    const running = client?.state === State.Running ? client : undefined;
    if (!running || vscode.window.activeTextEditor !== editor) return;
    const { uri, languageId } = editor.document;
    const { line, character } = editor.selection.active;
    const at = { uri: running.code2ProtocolConverter.asUri(uri), scheme: uri.scheme, languageId, line, character };
    const params = cursorParams(currentSettings(), at);
    if (params) void running.sendNotification(CURSOR_NOTIFICATION, params);
  }, CURSOR_REST_MS);
}

/** A model became ready: ask again in the active editor if its document got nothing while it loaded. */
function onRefresh(uris: string[]): void {
  const editor = vscode.window.activeTextEditor;
  if (!editor || !client) return;
  if (!uris.includes(client.code2ProtocolConverter.asUri(editor.document.uri))) return;
  output.info("infill: the model is ready, asking for a suggestion again");
  void vscode.commands.executeCommand("editor.action.inlineSuggest.trigger");
}

// ---------------------------------------------------------------------------------------------- status

/** The server is writing `count` suggestions: spin, once one takes longer than a keystroke's answer. */
function onPending(count: number): void {
  if (count <= 0) {
    if (spinnerTimer) clearTimeout(spinnerTimer);
    spinnerTimer = undefined;
    status.pending = 0;
    render();
    return;
  }
  if (status.pending > 0 || spinnerTimer) return;
  spinnerTimer = setTimeout(() => {
    spinnerTimer = undefined;
    status.pending = count;
    render();
  }, SPINNER_DELAY_MS);
}

function render(): void {
  const languageId = vscode.window.activeTextEditor?.document.languageId;
  status.disabledLanguage =
    languageId && status.enabled && !completionEnabled(currentSettings(), languageId) ? languageId : undefined;
  const view = status.view();
  statusItem.text = view.text;
  statusItem.tooltip = `${view.tooltip}\n\n${versionLine()}`;
}

/** The releases in use: this extension's, and the server's (its `serverInfo`, once it has started). */
function versionLine(): string {
  const server = client?.initializeResult?.serverInfo?.version;
  return `infill extension ${extensionVersion}` + (server ? ` · server ${server}` : "");
}

async function onStatusClicked(): Promise<void> {
  const action = status.view().action;
  if (action === "showFix") return showMissingServer((config().get<string>("serverPath") || "infill").trim());
  if (action === "restart") return restartServer();
  return toggleCompletions();
}

async function toggleCompletions(): Promise<void> {
  const cfg = config();
  const inspect = cfg.inspect<boolean>("enable");
  const target =
    inspect?.workspaceValue !== undefined ? vscode.ConfigurationTarget.Workspace : vscode.ConfigurationTarget.Global;
  // The configuration listener sends `workspace/didChangeConfiguration` and updates the status bar.
  await cfg.update("enable", !cfg.get<boolean>("enable", true), target);
}

// ---------------------------------------------------------------------------------------------- edit

function runningClient(): LanguageClient | undefined {
  if (client?.state === State.Running) return client;
  void vscode.window.showWarningMessage("infill: the server is not running (see the status bar).");
  return undefined;
}

interface EditTarget {
  uri?: string;
  range?: { start: { line: number; character: number }; end: { line: number; character: number } };
}

async function editWithInstruction(preview: boolean, target?: EditTarget): Promise<void> {
  const editor = vscode.window.activeTextEditor;
  if (!editor) {
    void vscode.window.showInformationMessage("infill: open a file and select the code to edit first.");
    return;
  }
  const c = runningClient();
  if (!c) return;
  const instruction = await vscode.window.showInputBox({
    title: preview ? "infill: Edit with Instruction (preview)" : "infill: Edit with Instruction",
    prompt: editor.selection.isEmpty ? "What code should be written here?" : "How should the selected code change?",
    placeHolder: "e.g. add error handling",
    validateInput: validateInstruction,
    ignoreFocusOut: true,
  });
  if (instruction === undefined) return;
  const document = editor.document;
  const uri = c.code2ProtocolConverter.asUri(document.uri);
  // A code action names its own range; the palette command edits the selection.
  const range = target?.uri === uri && target.range ? target.range : c.code2ProtocolConverter.asRange(editor.selection);
  // The server applies the edit through workspace/applyEdit; with preview, annotated `needsConfirmation`,
  // so VS Code opens its Refactor Preview and the request answers once the user applied or discarded it.
  const args = editArguments(uri, range, document.version, instruction, preview);
  let raw: unknown;
  let request: Promise<unknown> | undefined;
  try {
    await vscode.window.withProgress(
      { location: vscode.ProgressLocation.Notification, title: "infill: editing…", cancellable: true },
      (progress, token) => {
        editProgress.set(uri, progress);
        request = c.sendRequest(ExecuteCommandRequest.type, { command: "infill.edit", arguments: [args] }, token);
        const written = new Promise<void>((resolve) => editWritten.set(uri, resolve));
        return Promise.race([request, written]);
      },
    );
    raw = await request;
  } catch (err) {
    if (!isCancellation(err)) void vscode.window.showErrorMessage(`infill: edit failed: ${errorText(err)}`);
    return;
  } finally {
    editProgress.delete(uri);
    editWritten.delete(uri);
  }
  const message = editOutcome(parseEditResult(raw));
  if (message) void vscode.window.showInformationMessage(message);
}

// ---------------------------------------------------------------------------------------------- search

async function searchCode(): Promise<void> {
  const c = runningClient();
  if (!c) return;
  const pick = vscode.window.createQuickPick<PickItem & vscode.QuickPickItem>();
  pick.title = "infill: Search Code";
  pick.placeholder = "Describe the code you are looking for, e.g. “where the config is parsed”";
  pick.matchOnDescription = true;
  pick.matchOnDetail = true;
  let pending: vscode.CancellationTokenSource | undefined;
  let timer: NodeJS.Timeout | undefined;
  const run = async (query: string) => {
    pending?.cancel();
    const source = (pending = new vscode.CancellationTokenSource());
    if (!query.trim()) {
      pick.items = [];
      pick.busy = false;
      return;
    }
    pick.busy = true;
    try {
      const raw = await c.sendRequest(
        ExecuteCommandRequest.type,
        { command: "infill.search", arguments: [{ query, limit: 30 }] },
        source.token,
      );
      if (source.token.isCancellationRequested) return;
      const items = parseSearchResults(raw).map((r) => ({
        ...toPickItem(r, (u) => vscode.workspace.asRelativePath(vscode.Uri.parse(u))),
        alwaysShow: true, // ranked by the server: VS Code's own label filter would hide semantic matches
      }));
      pick.items = items;
      pick.title = items.length ? "infill: Search Code" : "infill: Search Code — no results";
    } catch (err) {
      if (!isCancellation(err)) pick.title = `infill: search failed: ${errorText(err)}`;
    } finally {
      if (pending === source) pick.busy = false;
    }
  };
  pick.onDidChangeValue((value) => {
    if (timer) clearTimeout(timer);
    timer = setTimeout(() => void run(value), 250);
  });
  pick.onDidAccept(async () => {
    const item = pick.selectedItems[0];
    if (!item) return;
    pick.hide();
    const range = c.protocol2CodeConverter.asRange(item.result.range);
    await vscode.window.showTextDocument(vscode.Uri.parse(item.result.uri), { selection: new vscode.Range(range.start, range.start) });
  });
  pick.onDidHide(() => {
    pending?.cancel();
    if (timer) clearTimeout(timer);
    pick.dispose();
  });
  pick.show();
}

// ---------------------------------------------------------------------------------------------- helpers

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function isCancellation(err: unknown): boolean {
  const code = (err as { code?: number })?.code;
  return code === -32800 || err instanceof vscode.CancellationError;
}
