// vue.js: <ReferralWidget> for Vue 3, a thin wrapper of <referral-widget>.
//
//   import { ReferralWidget } from "@referral-broker/client/vue";
//   <ReferralWidget broker="https://referrals.shop.example" shop="my-shop"
//                   token-url="/account/referral-token" @sent="..." />
//
// Vue is the page's own (a peer dependency); nothing else is imported. Types: vue.d.ts.

import { defineComponent, h } from "vue";

import "./referral-widget.js";

/** The widget's events, by the name this component emits them under (with the detail). */
export const EVENTS = Object.freeze({
  loaded: "referrals-loaded", sent: "referral-sent", error: "referral-error",
  "link-copied": "referral-link-copied", shared: "referral-shared",
});

// "referral-link-copied" -> "onReferralLinkCopied": Vue listens to the hyphenated name.
const handlerName = (event) => "on" + event.replace(/(^|-)(\w)/g, (_, dash, c) => c.toUpperCase());

export const ReferralWidget = defineComponent({
  name: "ReferralWidget",
  props: {
    broker: { type: String, required: true },
    shop: { type: String, required: true },
    version: String,
    tokenUrl: String,
    getToken: Function,
    lang: String,
    channels: [String, Array],
    theme: String,
    currency: String,
    timeout: [String, Number],
    linkChannel: String,
    messages: Object,
  },
  emits: Object.keys(EVENTS),
  setup(props, { emit, slots }) {
    return () => {
      const data = {
        broker: props.broker, shop: props.shop, version: props.version, "token-url": props.tokenUrl,
        lang: props.lang, theme: props.theme, currency: props.currency, timeout: props.timeout,
        "link-channel": props.linkChannel,
        channels: Array.isArray(props.channels) ? props.channels.join(",") : props.channels,
        // Properties, not attributes (Vue's "." prefix).
        ".getToken": props.getToken ?? null,
        ".messages": props.messages ?? {},
      };
      for (const [name, event] of Object.entries(EVENTS)) data[handlerName(event)] = (e) => emit(name, e.detail);
      const incentive = slots.incentive ? [h("div", { slot: "incentive" }, slots.incentive())] : [];
      return h("referral-widget", data, [...incentive, ...(slots.default ? slots.default() : [])]);
    };
  },
});
