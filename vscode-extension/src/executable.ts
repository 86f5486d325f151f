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

/** The command that installs the server and its default model (the same as the project README's). */
export const INSTALL_COMMAND = "pip install -e '/path/to/infill[coder]'";

/** The notification shown when the server cannot be found: what happened and the two ways to fix it. */
export function missingServerMessage(command: string): string {
  return (
    `infill: the language server \`${command}\` was not found. ` +
    `Install it from a checkout of infill with \`${INSTALL_COMMAND}\` (then reload the window), ` +
    "or set `infill.serverPath` to the full path of the `infill` executable."
  );
}
