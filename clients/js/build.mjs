// build.mjs: the published, minified files with source maps, for the broker to serve.
//
//   node build.mjs [outdir]        (default: dist/ beside this file)
//
// Writes referrals.js, referral-widget.js (each minified ES modules for the supported browsers, imports kept as they
// are, so the widget still imports ./referrals.js beside it), their .map files, and copies of
// the two .d.ts files, then prints each file's size raw, gzip and brotli.
import { copyFile, mkdir, readFile } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { brotliCompressSync, gzipSync } from "node:zlib";

import { build } from "esbuild";

const here = dirname(fileURLToPath(import.meta.url));
const outdir = resolve(process.argv[2] ?? join(here, "dist"));
const SOURCES = ["referrals.js", "referral-widget.js"];
const TYPES = ["referrals.d.ts", "referral-widget.d.ts"];

await mkdir(outdir, { recursive: true });
for (const name of SOURCES) {
  await build({
    entryPoints: [join(here, name)],
    outfile: join(outdir, name),
    bundle: false,
    minify: true,
    sourcemap: "linked",
    sourcesContent: true,
    format: "esm",
    target: ["chrome94", "edge94", "firefox93", "safari15.4"],
    legalComments: "none",
    logLevel: "warning",
  });
}
for (const name of TYPES) await copyFile(join(here, name), join(outdir, name));

const sizes = {};
for (const name of SOURCES) {
  const body = await readFile(join(outdir, name));
  sizes[name] = { raw: body.length, gzip: gzipSync(body, { level: 9 }).length, br: brotliCompressSync(body).length };
}
console.log(JSON.stringify({ outdir, files: [...SOURCES.flatMap((n) => [n, `${n}.map`]), ...TYPES], sizes }, null, 2));
