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

const link = (length) => ("https://shop.example/r/" + "abcdefghij".repeat(240)).slice(0, length);

function matchingMasks(text) {
  const theirs = JSON.stringify(library(text));
  return [0, 1, 2, 3, 4, 5, 6, 7].filter((mask) => JSON.stringify(qrModules(text, { mask })) === theirs);
}

test("versions 1-10 match qrcode-generator under one of the eight masks", () => {
  const versions = new Set();
  for (const length of [1, 14, 20, 26, 40, 62, 84, 106, 122, 152, 180, 213]) {
    assert.equal(matchingMasks(link(length)).length, 1, `length ${length}`);
    versions.add((qrModules(link(length)).length - 17) / 4);
  }
  assert.deepEqual([...versions].sort((a, b) => a - b), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
});

test("long links take the larger versions, up to 40 (2331 bytes), and match the library", () => {
  const versions = new Set();
  for (const length of [214, 251, 331, 412, 560, 666, 858, 1091, 1370, 1857, 2331]) {
    assert.equal(matchingMasks(link(length)).length, 1, `length ${length}`);
    versions.add((qrModules(link(length)).length - 17) / 4);
  }
  assert.ok(versions.has(11) && versions.has(40), [...versions].join(","));
  assert.ok(versions.size >= 10);
});

test("the chosen mask is one of the valid symbols, and text beyond version 40 is refused", () => {
  const text = "https://shop.example/r/QR-42";
  const chosen = JSON.stringify(qrModules(text));
  assert.ok([0, 1, 2, 3, 4, 5, 6, 7].some((mask) => JSON.stringify(qrModules(text, { mask })) === chosen));
  assert.throws(() => qrModules("x".repeat(2332)), RangeError);
});
