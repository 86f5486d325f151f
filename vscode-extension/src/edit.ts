/** The `infill.edit` request and its answer, and the client-side checks around them. Pure. */
import type { Range } from "./search";

export interface EditArgs {
  uri: string;
  range: Range;
  version: number;
  instruction: string;
  /** The server asks VS Code to apply it; with `preview`, as an edit that needs confirmation (Refactor Preview). */
  apply: boolean;
  preview: boolean;
}

export interface EditResult {
  /** The WorkspaceEdit the server computed. */
  edit: unknown;
  /** Unified diff of the change. */
  diff: string;
  /** VS Code applied it (false also when the user discarded the preview). */
  applied: boolean;
  /** It was shown for confirmation first. */
  previewed: boolean;
}

/** Longest instruction sent; the server refuses longer ones anyway, this just says so before waiting. */
export const MAX_INSTRUCTION = 2000;

/** An error message for the input box, or undefined when the instruction can be sent. */
export function validateInstruction(text: string): string | undefined {
  if (!text.trim()) return "Say what to change, e.g. “add error handling”.";
  if (text.length > MAX_INSTRUCTION) return `Keep the instruction under ${MAX_INSTRUCTION} characters.`;
  return undefined;
}

/** The single argument of `workspace/executeCommand infill.edit`: applied by VS Code, previewed or not. */
export function editArguments(uri: string, range: Range, version: number, instruction: string, preview: boolean): EditArgs {
  return { uri, range, version, instruction: instruction.trim(), apply: true, preview };
}

/** Read the server's answer; undefined when it is not an edit (e.g. the server refused with null). */
export function parseEditResult(raw: unknown): EditResult | undefined {
  if (!raw || typeof raw !== "object") return undefined;
  const r = raw as Record<string, unknown>;
  if (!r.edit || typeof r.edit !== "object") return undefined;
  return { edit: r.edit, diff: typeof r.diff === "string" ? r.diff : "", applied: r.applied === true, previewed: r.previewed === true };
}

/** What to tell the user once the server answered an edit, or undefined to say nothing. */
export function editOutcome(result: EditResult | undefined): string | undefined {
  if (!result || !result.diff.trim()) return "infill: the model proposed no change.";
  if (result.applied) return undefined; // the change is in the file: that says it
  if (result.previewed) return "infill: edit discarded; the file is unchanged.";
  return "infill: the edit was not applied.";
}

/**
 * What the "infill: editing…" notification says while the server writes an edit for `uri`, from its
 * `infill/editStream` notification (editors/README.md): the line count and the last line so far.
 * Undefined for another document's edit, the end of the stream, or anything malformed.
 */
export function streamProgress(params: unknown, uri: string): string | undefined {
  if (!params || typeof params !== "object") return undefined;
  const p = params as Record<string, unknown>;
  if (p.uri !== uri || p.done === true || typeof p.text !== "string") return undefined;
  const lines = p.text.split("\n").filter((l) => l.trim());
  if (!lines.length) return undefined;
  const last = lines[lines.length - 1].trim();
  const shown = last.length > 60 ? `${last.slice(0, 59)}…` : last;
  return `${lines.length} line${lines.length === 1 ? "" : "s"} written: ${shown}`;
}
