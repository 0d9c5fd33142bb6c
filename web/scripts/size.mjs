// Prints the package's size as a browser app ships it: dist/ bundled and
// minified with esbuild, then gzipped (level 9). "with dependencies"
// bundles partysocket and inngest/realtime too; "package only" leaves
// them external. Run with `npm run size` (after `npm run build`).
import { build } from "esbuild";
import { gzipSync } from "node:zlib";

async function measure(entry, external) {
  const r = await build({
    entryPoints: [entry],
    bundle: true,
    minify: true,
    format: "esm",
    platform: "browser",
    target: "es2022",
    write: false,
    external,
    logLevel: "silent",
  });
  const code = r.outputFiles[0].contents;
  return { min: code.length, gzip: gzipSync(code, { level: 9 }).length };
}

const kb = (n) => `${(n / 1024).toFixed(1)} KiB`;
const rows = [
  ["@switchyard/client, package only", await measure("dist/index.js", ["partysocket", "inngest", "inngest/*", "react"])],
  ["@switchyard/client with partysocket and inngest/realtime", await measure("dist/index.js", ["react"])],
  ["@switchyard/client/react (hook), package only", await measure("dist/react.js", ["partysocket", "inngest", "inngest/*", "react"])],
];
for (const [what, s] of rows) console.log(`${what}: ${kb(s.min)} minified, ${kb(s.gzip)} gzipped (${s.min} / ${s.gzip} bytes)`);
