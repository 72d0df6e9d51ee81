// build.mjs: the published, minified files with source maps, that the broker serves.
//
//   node build.mjs [outdir]        (default: dist/ beside this file, which is committed)
//
// Writes referrals.js (the client, minified), referral-widget.js (the widget bundled with the
// client into one self-contained module, so the integrity of one <script> tag covers all it
// runs), their .map files, and copies of the two .d.ts files; then prints each file's size raw,
// gzip and brotli.
//
// The output is deterministic: the same sources and the same esbuild give the same bytes,
// wherever outdir is (the maps name their sources relative to dist/). tests/e2e/test_client_js.py
// rebuilds and compares with the committed dist/, so the two never drift apart.
import { copyFile, mkdir, readFile, writeFile } from "node:fs/promises";
import { basename, dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { brotliCompressSync, gzipSync } from "node:zlib";

import { build } from "esbuild";

const here = dirname(fileURLToPath(import.meta.url));
const dist = join(here, "dist");
const outdir = resolve(process.argv[2] ?? dist);
// name -> bundled: the widget carries the client inside it; the client has no imports.
const SOURCES = { "referrals.js": false, "referral-widget.js": true };
const TYPES = ["referrals.d.ts", "referral-widget.d.ts"];
const TARGET = ["chrome94", "edge94", "firefox93", "safari15.4"];

await mkdir(outdir, { recursive: true });
for (const [name, bundle] of Object.entries(SOURCES)) {
  const result = await build({
    entryPoints: [join(here, name)],
    // Laid out as if in dist/, whatever outdir is, so the maps' relative paths do not change.
    outfile: join(dist, name),
    write: false,
    bundle,
    minify: true,
    sourcemap: "linked",
    sourcesContent: true,
    format: "esm",
    target: TARGET,
    legalComments: "none",
    logLevel: "warning",
  });
  for (const file of result.outputFiles) await writeFile(join(outdir, basename(file.path)), file.contents);
}
for (const name of TYPES) await copyFile(join(here, name), join(outdir, name));

const sizes = {};
for (const name of Object.keys(SOURCES)) {
  const body = await readFile(join(outdir, name));
  sizes[name] = { raw: body.length, gzip: gzipSync(body, { level: 9 }).length, br: brotliCompressSync(body).length };
}
const files = [...Object.keys(SOURCES).flatMap((n) => [n, `${n}.map`]), ...TYPES];
console.log(JSON.stringify({ outdir, files, sizes }, null, 2));
