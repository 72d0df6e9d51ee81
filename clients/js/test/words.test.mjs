// The widget's built-in words (the WORDS table of referral-widget.js, read into MESSAGES): every
// language says everything English says, with the same placeholders, and the typed keys of
// referral-widget.d.ts are exactly the English keys.
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { test } from "node:test";

import { MESSAGES } from "../referral-widget.js";

const LANGUAGES = ["en", "de", "fr", "es", "it", "nl", "pt"];
// Keys a language may leave to English: the share text is the bare link in every language.
const SAME_IN_EVERY_LANGUAGE = new Set(["shareText"]);
const placeholders = (text) => [...text.matchAll(/\{(\w+)\}/g)].map((m) => m[1]).sort();
const forms = (value) => (typeof value === "string" ? [value] : [value.one, value.other]);

test("the seven languages are read from the table, frozen", () => {
  assert.deepEqual(Object.keys(MESSAGES), LANGUAGES);
  assert.ok(Object.isFrozen(MESSAGES));
  for (const lang of LANGUAGES) assert.ok(Object.isFrozen(MESSAGES[lang]), lang);
  assert.equal(MESSAGES.de.title, "Freunde werben");
  assert.deepEqual(MESSAGES.en.loaded, { one: "{count} referral", other: "{count} referrals" });
});

test("every language has every English key but the shared ones, and no other", () => {
  const english = Object.keys(MESSAGES.en);
  for (const lang of LANGUAGES.slice(1)) {
    const missing = english.filter((key) => !Object.hasOwn(MESSAGES[lang], key) && !SAME_IN_EVERY_LANGUAGE.has(key));
    const extra = Object.keys(MESSAGES[lang]).filter((key) => !Object.hasOwn(MESSAGES.en, key));
    assert.deepEqual([missing, extra], [[], []], lang);
  }
});

test("a translation keeps English's placeholders, plurals and a non-empty text", () => {
  for (const lang of LANGUAGES) {
    for (const [key, value] of Object.entries(MESSAGES[lang])) {
      const english = MESSAGES.en[key];
      assert.equal(typeof value, typeof english, `${lang} ${key}: a plural where English has none, or the reverse`);
      for (const [i, form] of forms(value).entries()) {
        assert.ok(typeof form === "string" && form.trim() === form && form !== "", `${lang} ${key}: "${form}"`);
        assert.deepEqual(placeholders(form), placeholders(forms(english)[i]), `${lang} ${key}`);
      }
    }
  }
});

test("the typed message keys (WidgetMessageKey) are the English keys", async () => {
  const types = await readFile(new URL("../referral-widget.d.ts", import.meta.url), "utf8");
  const union = /export type WidgetMessageKey =([^;]*);/.exec(types)[1];
  const typed = [...union.matchAll(/"([^"]+)"/g)].map((m) => m[1]).sort();
  assert.deepEqual(typed, Object.keys(MESSAGES.en).sort());
});
