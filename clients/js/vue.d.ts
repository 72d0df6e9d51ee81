// Type declarations for vue.js: <ReferralWidget> for Vue 3.

import type { DefineComponent } from "vue";

import type { TokenProvider } from "./referrals.js";
import type { WidgetMessagesOverride } from "./referral-widget.js";

export interface ReferralWidgetProps {
  broker: string;
  shop: string;
  version?: string;
  tokenUrl?: string;
  getToken?: TokenProvider;
  lang?: string;
  channels?: string | string[];
  theme?: "light" | "dark" | "auto";
  currency?: string;
  timeout?: string | number;
  linkChannel?: string;
  messages?: WidgetMessagesOverride;
}

/** Emits `loaded`, `sent`, `error`, `link-copied`, `shared` with the widget event's detail. */
export declare const ReferralWidget: DefineComponent<ReferralWidgetProps>;
export declare const EVENTS: Readonly<Record<"loaded" | "sent" | "error" | "link-copied" | "shared", string>>;
