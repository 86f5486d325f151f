/**
 * The server's settings as VS Code settings: `infill.<key>` mirrors `lsp_server/config.py` field by field
 * (camelCase here, snake_case there). Pure, so node's test runner checks it without an editor.
 */

/** Keys forwarded to the server, in `initializationOptions` and `workspace/didChangeConfiguration`. */
export const SERVER_KEYS = [
  "model",
  "family",
  "device",
  "precision",
  "maxTokensSingleLine",
  "maxTokensMultiLine",
  "latencyBudgetMs",
  "temperature",
  "contextTokens",
  "otherDocumentsTokens",
  "suffixTokens",
  "suggestions",
  "enable",
  "disabledLanguages",
  "editMaxTokens",
  "translateLanguages",
  "indexEnable",
  "backend",
  "editPreview",
  "modelWorker",
] as const;

export type ServerSettings = Partial<Record<(typeof SERVER_KEYS)[number], unknown>>;

/**
 * Read the server's settings through `get` (a `WorkspaceConfiguration.get` for section "infill").
 * Unset keys are left out so the server keeps its own defaults; an empty model/family path means
 * "the default", which the server spells `null`.
 */
export function serverSettings(get: (key: string) => unknown): ServerSettings {
  const out: ServerSettings = {};
  for (const key of SERVER_KEYS) {
    const value = get(key);
    if (value === undefined) continue;
    if ((key === "model" || key === "family" || key === "precision") && (value === "" || value === null)) {
      out[key] = null;
      continue;
    }
    out[key] = value;
  }
  return out;
}

/** Whether inline completion should be asked for in a document of this language. */
export function completionEnabled(settings: ServerSettings, languageId: string): boolean {
  if (settings.enable === false) return false;
  const disabled = Array.isArray(settings.disabledLanguages) ? settings.disabledLanguages : [];
  return !disabled.includes(languageId);
}

/** Milliseconds to wait after a keystroke before asking for a suggestion (client side; 0: at once). */
export function debounceDelay(value: unknown): number {
  return typeof value === "number" && Number.isFinite(value) && value > 0 ? Math.min(value, 5000) : 0;
}

/** Where a cursor rests: the document (URI as the server knows it, its scheme, its language) and the position. */
export interface CursorAt {
  uri: string;
  scheme: string;
  languageId: string;
  line: number;
  character: number;
}

/**
 * The `infill/didMoveCursor` notification's params for a resting cursor (the server warms its cache there),
 * or undefined where no completion will be asked: another scheme (output panes, diffs, settings) or a
 * language or global switch that turns completion off.
 */
export function cursorParams(settings: ServerSettings, at: CursorAt): object | undefined {
  if (at.scheme !== "file" && at.scheme !== "untitled") return undefined;
  if (!completionEnabled(settings, at.languageId)) return undefined;
  return { textDocument: { uri: at.uri }, position: { line: at.line, character: at.character } };
}
