/**
 * The infill extension: starts `infill serve`, lets vscode-languageclient wire inline completion
 * (LSP 3.18 `textDocument/inlineCompletion`), and adds what plain LSP cannot: the edit and search
 * commands with their UI, and a status bar item fed by `$/progress` that toggles completions.
 * All decisions live in the pure modules next to this file; this one only talks to VS Code.
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
import { applyTextEdits, editArguments, editsFor, expectedVersion, parseEditResult, validateInstruction } from "./edit";
import { INSTALL_COMMAND, missingServerMessage, resolveExecutable } from "./executable";
import { PickItem, parseSearchResults, toPickItem } from "./search";
import { completionEnabled, serverSettings } from "./settings";
import { StatusModel } from "./status";

/**
 * The server offers an "Edit with instruction…" code action only to clients that say (in this
 * experimental capability) they handle its client-side command, `infill.editWithInstruction`.
 */
const ASK_CAPABILITY = "infillEditWithInstruction";
const PREVIEW_SCHEME = "infill-preview";

let client: LanguageClient | undefined;
let extensionVersion = "";
let output: vscode.LogOutputChannel;
let statusItem: vscode.StatusBarItem;
const status = new StatusModel();
const previews = new Map<string, string>();
const previewChanged = new vscode.EventEmitter<vscode.Uri>();

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
  context.subscriptions.push(output, statusItem, previewChanged);

  const command = (id: string, fn: (...args: any[]) => unknown) =>
    context.subscriptions.push(vscode.commands.registerCommand(id, fn));
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
    vscode.workspace.registerTextDocumentContentProvider(PREVIEW_SCHEME, {
      onDidChange: previewChanged.event,
      provideTextDocumentContent: (uri) => previews.get(uri.toString()) ?? "",
    }),
    vscode.workspace.onDidChangeConfiguration(onConfigurationChanged),
    vscode.window.onDidChangeActiveTextEditor(() => render()),
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
      provideInlineCompletionItems: (document, position, ctx, token, next) =>
        completionEnabled(currentSettings(), document.languageId) ? next(document, position, ctx, token) : null,
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
      caps.experimental = { ...(caps.experimental as object | undefined), [ASK_CAPABILITY]: true };
    },
    initialize: () => undefined,
    getState: () => ({ kind: "static" }),
    clear: () => undefined,
  });
  client.onDidChangeState((e) => {
    status.setServer(e.newState === State.Running ? "running" : e.newState === State.Starting ? "starting" : "stopped");
    render();
  });
  status.setServer("starting");
  render();
  try {
    await client.start();
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

// ---------------------------------------------------------------------------------------------- status

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
  const args = editArguments(uri, range, document.version, instruction, !preview);
  let raw: unknown;
  try {
    raw = await vscode.window.withProgress(
      { location: vscode.ProgressLocation.Notification, title: "infill: editing…", cancellable: true },
      (_progress, token) => c.sendRequest(ExecuteCommandRequest.type, { command: "infill.edit", arguments: [args] }, token),
    );
  } catch (err) {
    if (!isCancellation(err)) void vscode.window.showErrorMessage(`infill: edit failed: ${errorText(err)}`);
    return;
  }
  const result = parseEditResult(raw);
  if (!result || !result.diff.trim()) {
    void vscode.window.showInformationMessage("infill: the model proposed no change.");
    return;
  }
  if (preview) await previewAndApply(c, document, uri, result.edit, result.diff);
}

/** Show the diff the server returned beside the file; apply the same edit only if the user says so. */
async function previewAndApply(
  c: LanguageClient,
  document: vscode.TextDocument,
  uri: string,
  edit: unknown,
  diff: string,
): Promise<void> {
  const name = document.uri.path.split("/").pop() || "edit";
  const previewUri = vscode.Uri.from({ scheme: PREVIEW_SCHEME, path: `/${name}.diff`, query: String(Date.now()) });
  previews.set(previewUri.toString(), diff);
  previewChanged.fire(previewUri);
  const doc = await vscode.workspace.openTextDocument(previewUri);
  await vscode.languages.setTextDocumentLanguage(doc, "diff");
  await vscode.window.showTextDocument(doc, { viewColumn: vscode.ViewColumn.Beside, preview: true, preserveFocus: true });
  const choice = await vscode.window.showInformationMessage("infill: apply this edit?", "Apply", "Side by Side", "Discard");
  if (choice === "Side by Side") {
    const after = vscode.Uri.from({ scheme: PREVIEW_SCHEME, path: `/${name}`, query: `after-${Date.now()}` });
    previews.set(after.toString(), applyTextEdits(document.getText(), editsFor(edit, uri)));
    await vscode.commands.executeCommand("vscode.diff", document.uri, after, `${name} ↔ infill edit`);
    return previewAndApply(c, document, uri, edit, diff);
  }
  previews.delete(previewUri.toString());
  if (choice !== "Apply") return;
  const expected = expectedVersion(edit, uri);
  if (expected !== undefined && expected !== document.version) {
    void vscode.window.showWarningMessage("infill: the file changed since the preview; run the edit again.");
    return;
  }
  const applied = await vscode.workspace.applyEdit(await c.protocol2CodeConverter.asWorkspaceEdit(edit as Parameters<typeof c.protocol2CodeConverter.asWorkspaceEdit>[0] & object));
  if (!applied) void vscode.window.showWarningMessage("infill: VS Code refused the edit (the file changed?).");
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
