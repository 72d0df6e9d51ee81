// The widget's own QR encoder, checked module for module against qrcode-generator (a maintained
// library, a devDependency only): for every version the encoder supports, one of its eight mask
// patterns gives exactly the library's symbol.
import assert from "node:assert/strict";
import { test } from "node:test";

import qrcode from "qrcode-generator";

import { qrModules } from "../referral-widget.js";

function library(text) {
  const code = qrcode(0, "M");
  code.addData(text, "Byte");
  code.make();
  const n = code.getModuleCount();
  return Array.from({ length: n }, (_, r) => Array.from({ length: n }, (_, c) => code.isDark(r, c)));
}

test("every version 1-10 matches qrcode-generator under one of the eight masks", () => {
  const lengths = [1, 14, 20, 26, 40, 62, 84, 106, 122, 152, 180, 213];
  const versions = new Set();
  for (const length of lengths) {
    const text = "https://shop.example/r/" + "abcdefghij".repeat(30).slice(0, Math.max(0, length - 23));
    const theirs = JSON.stringify(library(text.slice(0, length)));
    const matches = [0, 1, 2, 3, 4, 5, 6, 7].filter((mask) => JSON.stringify(qrModules(text.slice(0, length), { mask })) === theirs);
    assert.equal(matches.length, 1, `length ${length}`);
    versions.add((qrModules(text.slice(0, length)).length - 17) / 4);
  }
  assert.deepEqual([...versions].sort((a, b) => a - b), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
});

test("the chosen mask is one of the valid symbols, and text beyond version 10 is refused", () => {
  const text = "https://shop.example/r/QR-42";
  const chosen = JSON.stringify(qrModules(text));
  assert.ok([0, 1, 2, 3, 4, 5, 6, 7].some((mask) => JSON.stringify(qrModules(text, { mask })) === chosen));
  assert.throws(() => qrModules("x".repeat(214)), RangeError);
});
