/** The `infill.edit` request and its answer, and the client-side checks around them. Pure. */
import type { Range } from "./search";

export interface EditArgs {
  uri: string;
  range: Range;
  version: number;
  instruction: string;
  apply: boolean;
}

export interface TextEdit {
  range: Range;
  newText: string;
}

export interface EditResult {
  /** The WorkspaceEdit the server computed (applied already when `apply` was true). */
  edit: unknown;
  /** Unified diff of the change, for a preview. */
  diff: string;
}

/** Longest instruction sent; the server refuses longer ones anyway, this just says so before waiting. */
export const MAX_INSTRUCTION = 2000;

/** An error message for the input box, or undefined when the instruction can be sent. */
export function validateInstruction(text: string): string | undefined {
  if (!text.trim()) return "Say what to change, e.g. “add error handling”.";
  if (text.length > MAX_INSTRUCTION) return `Keep the instruction under ${MAX_INSTRUCTION} characters.`;
  return undefined;
}

/** The single argument of `workspace/executeCommand infill.edit`. */
export function editArguments(uri: string, range: Range, version: number, instruction: string, apply: boolean): EditArgs {
  return { uri, range, version, instruction: instruction.trim(), apply };
}

/** Read the server's answer; undefined when it is not an edit (e.g. the server refused with null). */
export function parseEditResult(raw: unknown): EditResult | undefined {
  if (!raw || typeof raw !== "object") return undefined;
  const r = raw as Record<string, unknown>;
  if (!r.edit || typeof r.edit !== "object") return undefined;
  return { edit: r.edit, diff: typeof r.diff === "string" ? r.diff : "" };
}

/** The text edits of `uri` inside a WorkspaceEdit (`documentChanges` or `changes`). */
export function editsFor(workspaceEdit: unknown, uri: string): TextEdit[] {
  const we = workspaceEdit as any;
  const out: TextEdit[] = [];
  for (const dc of Array.isArray(we?.documentChanges) ? we.documentChanges : []) {
    if (dc?.textDocument?.uri === uri && Array.isArray(dc.edits)) out.push(...dc.edits);
  }
  if (we?.changes && Array.isArray(we.changes[uri])) out.push(...we.changes[uri]);
  return out;
}

/** The version a WorkspaceEdit expects `uri` to have, if it says. */
export function expectedVersion(workspaceEdit: unknown, uri: string): number | undefined {
  const we = workspaceEdit as any;
  for (const dc of Array.isArray(we?.documentChanges) ? we.documentChanges : []) {
    if (dc?.textDocument?.uri === uri && Number.isInteger(dc.textDocument.version)) return dc.textDocument.version;
  }
  return undefined;
}

/**
 * Apply LSP text edits to a text (positions are UTF-16 code units, which is what JS strings index), for
 * the "after" side of a preview. Edits are applied from the end so earlier offsets stay valid.
 */
export function applyTextEdits(text: string, edits: TextEdit[]): string {
  const lineStarts = [0];
  for (let i = 0; i < text.length; i++) if (text[i] === "\n") lineStarts.push(i + 1);
  const offset = (p: { line: number; character: number }): number => {
    if (p.line >= lineStarts.length) return text.length;
    const start = lineStarts[p.line];
    const end = p.line + 1 < lineStarts.length ? lineStarts[p.line + 1] - 1 : text.length;
    return Math.min(start + p.character, end);
  };
  const sorted = edits
    .map((e) => ({ start: offset(e.range.start), end: offset(e.range.end), newText: e.newText }))
    .sort((a, b) => b.start - a.start || b.end - a.end);
  let out = text;
  for (const e of sorted) out = out.slice(0, e.start) + e.newText + out.slice(e.end);
  return out;
}
