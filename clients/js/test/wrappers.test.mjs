// The React and Vue wrappers (react.js, vue.js) against minimal stand-ins of the frameworks
// (test/standins): attributes, properties, the incentive slot and the events they forward.
import assert from "node:assert/strict";
import { register } from "node:module";
import { test } from "node:test";

register("./standins/hooks.mjs", import.meta.url);
const react = await import("../react.js");
const { effects } = await import("react");
const vue = await import("../vue.js");

const getToken = async () => "token";

test("React: props become attributes, properties and event handlers on <referral-widget>", () => {
  const seen = [];
  const tree = react.ReferralWidget({
    broker: "https://b.example", shop: "s", tokenUrl: "/t", channels: ["email", "sms"],
    linkChannel: "custom-social", theme: "dark", timeout: 8, incentive: "Give €10",
    getToken, messages: { send: "Invite" }, onSent: (detail) => seen.push(["sent", detail]),
    onLinkCopied: (detail) => seen.push(["copied", detail]),
  });
  assert.equal(tree.type, "referral-widget");
  assert.deepEqual(
    [tree.props.broker, tree.props["token-url"], tree.props.channels, tree.props["link-channel"], tree.props.timeout],
    ["https://b.example", "/t", "email,sms", "custom-social", "8"],
  );
  assert.equal(tree.props.tokenUrl, undefined);
  assert.deepEqual(tree.props.children[0].props, { slot: "incentive", key: "incentive", children: ["Give €10"] });
  const element = new EventTarget();
  tree.props.ref.current = element;
  const cleanups = effects.map((effect) => effect());
  assert.equal(element.getToken, getToken);
  assert.deepEqual(element.messages, { send: "Invite" });
  element.dispatchEvent(new CustomEvent("referral-sent", { detail: { referral: 1 } }));
  element.dispatchEvent(new CustomEvent("referral-link-copied", { detail: { url: "u" } }));
  assert.deepEqual(seen, [["sent", { referral: 1 }], ["copied", { url: "u" }]]);
  cleanups.forEach((cleanup) => cleanup?.());
  element.dispatchEvent(new CustomEvent("referral-sent", { detail: {} }));
  assert.equal(seen.length, 2);
});

test("Vue: props become attributes and properties; the widget's events are emitted", () => {
  const emitted = [];
  const render = vue.ReferralWidget.setup(
    { broker: "https://b.example", shop: "s", tokenUrl: "/t", channels: ["email", "sms"], getToken, messages: { send: "Invite" } },
    { emit: (name, detail) => emitted.push([name, detail]), slots: { incentive: () => ["Give €10"] } },
  );
  const vnode = render();
  assert.equal(vnode.type, "referral-widget");
  assert.deepEqual([vnode.props["token-url"], vnode.props.channels], ["/t", "email,sms"]);
  assert.equal(vnode.props[".getToken"], getToken);
  assert.deepEqual(vnode.props[".messages"], { send: "Invite" });
  assert.deepEqual(vnode.children[0], { type: "div", props: { slot: "incentive" }, children: ["Give €10"] });
  vnode.props.onReferralLinkCopied({ detail: { url: "u" } });
  vnode.props.onReferralShared({ detail: { channel: "share-sheet", url: "u" } });
  vnode.props.onReferralsLoaded({ detail: { referrals: [] } });
  assert.deepEqual(emitted, [["link-copied", { url: "u" }], ["shared", { channel: "share-sheet", url: "u" }], ["loaded", { referrals: [] }]]);
  assert.deepEqual(vue.ReferralWidget.emits, ["loaded", "sent", "error", "link-copied", "shared"]);
});
