// react.js: <ReferralWidget> for React 18 and 19, a thin wrapper of <referral-widget>.
//
//   import { ReferralWidget } from "@referral-broker/client/react";
//   <ReferralWidget broker="https://referrals.shop.example" shop="my-shop"
//                   tokenUrl="/account/referral-token" onSent={(answer) => ...} />
//
// React is the page's own (a peer dependency); nothing else is imported. Types: react.d.ts.

import { createElement, useEffect, useLayoutEffect, useRef } from "react";

import "./referral-widget.js";

/** The widget's attributes, by their React prop name. */
export const ATTRIBUTES = Object.freeze({
  broker: "broker", shop: "shop", version: "version", tokenUrl: "token-url", lang: "lang",
  channels: "channels", theme: "theme", currency: "currency", timeout: "timeout",
  linkChannel: "link-channel",
});

/** The widget's events, by their React prop name; handlers get the event's detail. */
export const EVENTS = Object.freeze({
  onLoaded: "referrals-loaded", onSent: "referral-sent", onError: "referral-error",
  onLinkCopied: "referral-link-copied", onShared: "referral-shared",
});

// Properties must reach the element before its first read (a microtask after it connects):
// a layout effect runs in the commit, before that. On a server there is no element.
const useEarlyEffect = typeof document === "undefined" ? useEffect : useLayoutEffect;

export function ReferralWidget(props) {
  const ref = useRef(null);
  const latest = useRef(props);
  latest.current = props;
  const { getToken, messages, incentive, className, id, children } = props;
  useEarlyEffect(() => { ref.current.getToken = getToken ?? null; }, [getToken]);
  useEarlyEffect(() => { ref.current.messages = messages ?? {}; }, [messages]);
  useEffect(() => {
    const element = ref.current;
    const listeners = Object.entries(EVENTS).map(([prop, name]) => [name, (event) => latest.current[prop]?.(event.detail, event)]);
    for (const [name, listener] of listeners) element.addEventListener(name, listener);
    return () => { for (const [name, listener] of listeners) element.removeEventListener(name, listener); };
  }, []);
  const attributes = { ref, className, id };
  for (const [prop, name] of Object.entries(ATTRIBUTES)) {
    const value = props[prop];
    if (value != null) attributes[name] = Array.isArray(value) ? value.join(",") : String(value);
  }
  const slotted = incentive == null ? null : createElement("div", { slot: "incentive", key: "incentive" }, incentive);
  return createElement("referral-widget", attributes, slotted, children);
}
