// referrals.js against a real broker and sandbox, started by tests/test_client_js.py, which
// passes BROKER_URL, BROKER_SHOP and BROKER_ISSUER_KEY. Run through pytest: `pytest tests/test_client_js.py`.
import assert from "node:assert/strict";
import { test } from "node:test";

import {
  ReferralsError,
  createReferralsClient,
  httpUrl,
  isKnownShareAction,
  shopperMessage,
} from "../referrals.js";

const BROKER = process.env.BROKER_URL;
const SHOP = process.env.BROKER_SHOP;
const ISSUER_KEY = process.env.BROKER_ISSUER_KEY;
assert.ok(BROKER && SHOP && ISSUER_KEY, "run through tests/test_client_js.py");

async function mint(customerId) {
  const response = await fetch(`${BROKER}/tokens`, {
    method: "POST",
    headers: { Authorization: `Bearer ${ISSUER_KEY}`, "Content-Type": "application/json" },
    body: JSON.stringify({ customer_id: customerId }),
  });
  assert.equal(response.status, 200);
  return (await response.json()).token;
}

/** A fetch that records what was sent, and hands every Refer2 answer a Consistency-Token. */
function recordingFetch() {
  const seen = [];
  let n = 0;
  const wrapped = async (url, init) => {
    seen.push({ fn: url.split("/").at(-1), headers: { ...init.headers } });
    const response = await fetch(url, init);
    if (!url.endsWith("/Refer2") || !response.ok || response.headers.has("Consistency-Token")) return response;
    // A broker without read-your-writes tokens: give the answer one, as a newer broker does.
    const headers = new Headers(response.headers);
    headers.set("Consistency-Token", `stub-${++n}`);
    return new Response(await response.arrayBuffer(), { status: response.status, headers });
  };
  return { seen, fetch: wrapped };
}

test("listReferrals answers the customer's history", async () => {
  const token = await mint("node-alice");
  const client = createReferralsClient({ baseUrl: BROKER, shop: SHOP, getToken: () => token });
  const history = await client.listReferrals();
  assert.ok(Array.isArray(history.referrals));
});

test("a send appears in the next read, which carries the send's Consistency-Token", async () => {
  const token = await mint("node-bob");
  const recorder = recordingFetch();
  const client = createReferralsClient({ baseUrl: BROKER, shop: SHOP, getToken: () => token, fetch: recorder.fetch });
  const seenTokens = [];
  const observed = createReferralsClient({
    baseUrl: BROKER, shop: SHOP, getToken: () => token, fetch: recorder.fetch,
    onResponse: (info) => seenTokens.push(info.consistencyToken),
  });
  await client.listReferrals();
  assert.equal(recorder.seen[0].headers["Consistency-Token"], undefined);
  const sent = await client.sendReferral({ channel: "telegram" });
  const history = await client.listReferrals();
  assert.ok(history.referrals.some((r) => r.referral_bhid === sent.referral.referral_bhid));
  const sendToken = recorder.seen.findLast((s) => s.fn === "Refer2") && recorder.seen.at(-1).headers["Consistency-Token"];
  assert.ok(sendToken, "the read after the send carries a Consistency-Token");
  // Another client of the page (another customer) sends no token of bob's.
  const carol = createReferralsClient({ baseUrl: BROKER, shop: SHOP, getToken: () => mint("node-carol"), fetch: recorder.fetch });
  await carol.listReferrals();
  assert.equal(recorder.seen.at(-1).headers["Consistency-Token"], undefined);
  await observed.sendReferral({ channel: "threads" });
  assert.ok(seenTokens.at(-1), "onResponse sees the Consistency-Token of a send");
});

test("the Consistency-Token is kept per customer when the token changes", async () => {
  let current = await mint("node-dave");
  const recorder = recordingFetch();
  const client = createReferralsClient({ baseUrl: BROKER, shop: SHOP, getToken: () => current, fetch: recorder.fetch });
  await client.sendReferral({ channel: "sms" });
  current = await mint("node-erin");
  await client.listReferrals();
  assert.equal(recorder.seen.at(-1).headers["Consistency-Token"], undefined, "erin never sent");
  current = await mint("node-dave");
  await client.listReferrals();
  assert.match(recorder.seen.at(-1).headers["Consistency-Token"], /./, "dave's token again");
});

test("identical sends by two customers on one page are two sends", async () => {
  const tokens = { a: await mint("node-frank"), b: await mint("node-grace") };
  let who = "a";
  const recorder = recordingFetch();
  const client = createReferralsClient({ baseUrl: BROKER, shop: SHOP, getToken: () => tokens[who], fetch: recorder.fetch });
  const first = await client.sendReferral({ channel: "whatsapp" });
  who = "b";
  const second = await client.sendReferral({ channel: "whatsapp" });
  assert.notEqual(first.referral.referral_bhid, second.referral.referral_bhid);
  assert.equal(recorder.seen.filter((s) => s.fn === "Refer2").length, 2);
  // The same customer's double click is still one send.
  const [x, y] = await Promise.all([
    client.sendReferral({ channel: "messenger" }),
    client.sendReferral({ channel: "messenger" }),
  ]);
  assert.equal(x, y);
  assert.equal(recorder.seen.filter((s) => s.fn === "Refer2").length, 3);
});

test("an invalid token is refreshed once, then the call succeeds", async () => {
  const calls = [];
  const fresh = await mint("node-heidi");
  const client = createReferralsClient({
    baseUrl: BROKER, shop: SHOP,
    getToken: ({ forceRefresh }) => { calls.push(forceRefresh); return forceRefresh ? fresh : "not.a.token"; },
  });
  await client.listReferrals();
  assert.deepEqual(calls, [false, true]);
});

test("a refusal is a ReferralsError with the broker's id and request id", async () => {
  const token = await mint("node-ivan");
  const client = createReferralsClient({ baseUrl: BROKER, shop: SHOP, getToken: () => token });
  await assert.rejects(client.sendReferral({ channel: "email", destination: "not an address" }), (error) => {
    assert.ok(error instanceof ReferralsError);
    assert.equal(error.id, "invalid_input");
    assert.equal(error.field, "destination");
    assert.ok(error.requestId);
    assert.equal(error.upstreamMessage, null);
    assert.equal(shopperMessage(error), error.message);
    return true;
  });
});

test("upstream_message is read from a problem body and preferred for shoppers", async () => {
  const body = {
    type: "urn:referral-broker:error:referral_program_disabled", title: "Refused", status: 422,
    id: "referral_program_disabled", message: "Bubblehouse refused the request.", retryable: false,
    request_id: "r1", upstream_status: 422, upstream_message: "Referrals are paused until Monday.",
  };
  const response = new Response(JSON.stringify(body), { status: 422, headers: { "Content-Type": "application/problem+json" } });
  const error = await ReferralsError.fromResponse(response);
  assert.equal(error.upstreamMessage, "Referrals are paused until Monday.");
  assert.equal(shopperMessage(error), "Referrals are paused until Monday.");
  assert.equal(error.message, "Bubblehouse refused the request.");
});

test("isKnownShareAction knows the sandbox's shapes and nothing else", () => {
  assert.ok(isKnownShareAction({ type: "none" }));
  assert.ok(isKnownShareAction({ type: "open_url", url: "https://wa.me/?text=x" }));
  assert.ok(isKnownShareAction({ type: "copy_link", link: "https://s.example/r/1" }));
  assert.ok(isKnownShareAction({ type: "show_qr_code", data: "https://s.example/r/1" }));
  for (const odd of [null, undefined, "open_url", [], {}, { type: "open_url" }, { type: "copy_link", link: 3 },
    { type: "launch_rocket", url: "https://x.example" }, { type: "toString" }, { type: "__proto__" }]) {
    assert.equal(isKnownShareAction(odd), false, JSON.stringify(odd));
  }
});

test("httpUrl lets only http and https through", () => {
  assert.equal(httpUrl("https://shop.example/r/1"), "https://shop.example/r/1");
  assert.equal(httpUrl("http://shop.example/"), "http://shop.example/");
  for (const bad of ["javascript:alert(1)", "JAVASCRIPT:alert(1)", "data:text/html,x", "//shop.example", "/r/1", "", null, 42, " javascript:x"]) {
    assert.equal(httpUrl(bad), null, String(bad));
  }
});
