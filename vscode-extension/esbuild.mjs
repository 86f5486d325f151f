// Bundles the extension (one CommonJS file, `vscode` external) and, with --tests, the unit tests of the
// pure modules (they never import `vscode`, so node's own test runner runs them without an editor).
import { build } from "esbuild";
import { readdirSync } from "node:fs";

const production = process.argv.includes("--production");
const common = { bundle: true, platform: "node", format: "cjs", target: "node18", logLevel: "warning" };

if (process.argv.includes("--tests")) {
  const entryPoints = readdirSync("test").filter((f) => f.endsWith(".test.ts")).map((f) => `test/${f}`);
  await build({ ...common, entryPoints, outdir: "dist-test", sourcemap: "inline" });
} else {
  await build({
    ...common,
    entryPoints: ["src/extension.ts"],
    outfile: "dist/extension.js",
    external: ["vscode"],
    minify: production,
    sourcemap: !production,
  });
}
