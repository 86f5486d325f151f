/** Turning `infill.search` results into quick-pick items. Pure; malformed results are skipped, not fatal. */

export interface Position {
  line: number;
  character: number;
}
export interface Range {
  start: Position;
  end: Position;
}
export interface SearchResult {
  uri: string;
  range: Range;
  name: string;
  kind: string;
  snippet: string;
  score: number;
}

export interface PickItem {
  label: string;
  description: string;
  detail: string;
  result: SearchResult;
}

const isPos = (p: any): p is Position => p && Number.isInteger(p.line) && Number.isInteger(p.character);

/** Keep the well-formed results of whatever the server answered (a list, or null when it has none). */
export function parseSearchResults(raw: unknown): SearchResult[] {
  if (!Array.isArray(raw)) return [];
  const out: SearchResult[] = [];
  for (const r of raw as any[]) {
    if (!r || typeof r.uri !== "string" || !r.range || !isPos(r.range.start) || !isPos(r.range.end)) continue;
    out.push({
      uri: r.uri,
      range: { start: r.range.start, end: r.range.end },
      name: typeof r.name === "string" && r.name ? r.name : "(chunk)",
      kind: typeof r.kind === "string" ? r.kind : "",
      snippet: typeof r.snippet === "string" ? r.snippet : "",
      score: typeof r.score === "number" ? r.score : 0,
    });
  }
  return out;
}

const ICONS: Record<string, string> = {
  function: "symbol-function",
  method: "symbol-method",
  class: "symbol-class",
  struct: "symbol-struct",
  interface: "symbol-interface",
  enum: "symbol-enum",
  module: "symbol-module",
  variable: "symbol-variable",
  constant: "symbol-constant",
};

const clip = (text: string, max: number) => (text.length > max ? text.slice(0, max - 1) + "…" : text);

/** One quick-pick row: icon and name; where it is; the snippet's first meaningful lines.
 * Top-level code outside any definition (kind "block") is named after its place, which the description
 * already shows: its first line is the label instead. */
export function toPickItem(result: SearchResult, displayPath: (uri: string) => string): PickItem {
  const icon = ICONS[result.kind.toLowerCase()] ?? "symbol-misc";
  const lines = result.snippet
    .split(/\r?\n/)
    .map((l) => l.trim())
    .filter(Boolean);
  const block = result.kind.toLowerCase() === "block" && lines.length > 0;
  const name = block ? clip(lines.shift() as string, 80) : result.name;
  const detail = clip(lines.slice(0, 2).join("  "), 160);
  return {
    label: `$(${icon}) ${name}`,
    description: `${displayPath(result.uri)}:${result.range.start.line + 1}`,
    detail,
    result,
  };
}
