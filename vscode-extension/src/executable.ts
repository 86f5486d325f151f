/** Finding the `infill` executable before starting it, so a missing one gets a message with the fix. */
import * as path from "node:path";
import * as os from "node:os";

export interface Platform {
  env: Record<string, string | undefined>;
  platform: string;
  exists: (file: string) => boolean;
  home?: string;
}

/**
 * The absolute path `command` runs, or undefined when there is none: a path (absolute, relative to
 * `cwd`, or `~/…`) must exist; a bare name is looked up on PATH (with PATHEXT on Windows).
 */
export function resolveExecutable(command: string, sys: Platform, cwd?: string): string | undefined {
  const name = command.trim();
  if (!name) return undefined;
  const expanded = name.startsWith("~/") ? path.join(sys.home ?? os.homedir(), name.slice(2)) : name;
  const isWin = sys.platform === "win32";
  const exts = isWin ? ["", ...(sys.env.PATHEXT ?? ".EXE;.CMD;.BAT").split(";").filter(Boolean)] : [""];
  const withExts = (base: string) => exts.map((e) => base + e).find((f) => sys.exists(f));
  if (expanded.includes("/") || (isWin && expanded.includes("\\"))) {
    const full = path.isAbsolute(expanded) ? expanded : path.resolve(cwd ?? process.cwd(), expanded);
    return withExts(full);
  }
  const dirs = (sys.env.PATH ?? sys.env.Path ?? "").split(isWin ? ";" : ":").filter(Boolean);
  for (const dir of dirs) {
    const found = withExts(path.join(dir, expanded));
    if (found) return found;
  }
  return undefined;
}

/**
 * The command that installs the server and its default model, run in a checkout of infill: the project
 * README's, word for word (tests/test_docs.py compares them).
 */
export const INSTALL_COMMAND = "python3 -m venv .venv && . .venv/bin/activate && pip install -e '.[coder]'";

/** The notification shown when the server cannot be found: what happened and the two ways to fix it. */
export function missingServerMessage(command: string): string {
  return (
    `infill: the language server \`${command}\` was not found. ` +
    `Install it in a checkout of infill with \`${INSTALL_COMMAND}\`, then set \`infill.serverPath\` to ` +
    "the checkout's `.venv/bin/infill` (or put it on your PATH) and reload the window."
  );
}
