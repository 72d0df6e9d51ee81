// build.mjs: the published, minified files with source maps, that the broker serves.
//
//   node build.mjs [outdir]        (default: dist/ beside this file, which is committed)
//
// Writes referrals.js (the client, minified), referral-widget.js (the widget bundled with the
// client into one self-contained module, so the integrity of one <script> tag covers all it
// runs), their .map files, and copies of the two .d.ts files; then prints each file's size raw,
// gzip and brotli.
//
// esbuild bundles and minifies (the widget's stylesheet as CSS, its words without their indent);
// terser then renames again and compresses what is left (its names, chosen by how often each is
// used, gzip better: about 0.3 KB less on the widget). Its map is chained to esbuild's, so the
// published maps point into the sources.
//
// The output is deterministic: the same sources and the same tools give the same bytes,
// wherever outdir is (the maps name their sources relative to dist/). tests/e2e/test_client_js.py
// rebuilds and compares with the committed dist/, so the two never drift apart.
import { copyFile, mkdir, readFile, writeFile } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { brotliCompressSync, gzipSync } from "node:zlib";

import { build, transform } from "esbuild";
import { minify } from "terser";

const here = dirname(fileURLToPath(import.meta.url));
const dist = join(here, "dist");
const outdir = resolve(process.argv[2] ?? dist);
// name -> bundled: the widget carries the client inside it; the client has no imports.
const SOURCES = { "referrals.js": false, "referral-widget.js": true };
const TYPES = ["referrals.d.ts", "referral-widget.d.ts"];
const TARGET = ["chrome94", "edge94", "firefox93", "safari15.4"];
// The widget's stylesheet and its table of words: the template literals after `const CSS =` and
// `const WORDS =`, with no ${} in them.
const STYLESHEET = /(const CSS = `)([^`$]*)(`;)/;
const WORDS = /(const WORDS = `)([^`$]*)(`;)/;

// Minifies the widget's two big literals, which a JS minifier keeps as they are: the stylesheet
// as CSS, and the words without the indentation that makes them readable (each line is trimmed
// when read). Later lines keep their numbers, so esbuild's map stays true to the source.
const compactLiterals = {
  name: "compact-literals",
  setup(builder) {
    builder.onLoad({ filter: /referral-widget\.js$/ }, async ({ path }) => {
      let source = await readFile(path, "utf8");
      const stylesheet = STYLESHEET.exec(source);
      if (!stylesheet || !WORDS.test(source)) throw new Error(`${path}: no const CSS or const WORDS literal to compact`);
      const { code } = await transform(stylesheet[2], { loader: "css", minify: true, target: TARGET });
      const lines = stylesheet[2].split("\n").length - 1;
      source = source.replace(STYLESHEET, (_, open, __, close) => open + code.trim() + close + "\n".repeat(lines));
      source = source.replace(WORDS, (_, open, words, close) => open + words.replace(/\n[ \t]+/g, "\n") + close);
      return { contents: source, loader: "js" };
    });
  },
};

await mkdir(outdir, { recursive: true });
for (const [name, bundle] of Object.entries(SOURCES)) {
  const result = await build({
    entryPoints: [join(here, name)],
    // Laid out as if in dist/, whatever outdir is, so the maps' relative paths do not change.
    outfile: join(dist, name),
    write: false,
    bundle,
    minify: true,
    sourcemap: "external",
    sourcesContent: true,
    format: "esm",
    target: TARGET,
    legalComments: "none",
    logLevel: "warning",
    plugins: bundle ? [compactLiterals] : [],
  });
  const code = result.outputFiles.find((file) => file.path.endsWith(".js")).text;
  const map = result.outputFiles.find((file) => file.path.endsWith(".map")).text;
  const final = await minify(code, {
    module: true,
    ecma: 2020,
    // Function expressions become arrows and object methods shorthand: nothing here is
    // constructed with `new` from a function expression or reads a method's prototype.
    compress: { passes: 2, unsafe_arrows: true, unsafe_methods: true },
    mangle: true,
    sourceMap: { content: map, url: `${name}.map`, includeSources: true },
  });
  // The maps carry the sources as written (the stylesheet unminified), not as esbuild read them.
  const chained = JSON.parse(final.map);
  chained.sourcesContent = await Promise.all(chained.sources.map((source) => readFile(join(dist, source), "utf8")));
  await writeFile(join(outdir, name), `${final.code}\n`);
  await writeFile(join(outdir, `${name}.map`), JSON.stringify(chained));
}
for (const name of TYPES) await copyFile(join(here, name), join(outdir, name));

const sizes = {};
for (const name of Object.keys(SOURCES)) {
  const body = await readFile(join(outdir, name));
  sizes[name] = { raw: body.length, gzip: gzipSync(body, { level: 9 }).length, br: brotliCompressSync(body).length };
}
const files = [...Object.keys(SOURCES).flatMap((n) => [n, `${n}.map`]), ...TYPES];
console.log(JSON.stringify({ outdir, files, sizes }, null, 2));
