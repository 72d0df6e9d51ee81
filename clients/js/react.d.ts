// Type declarations for react.js: <ReferralWidget> for React 18 and 19.

import type { ReactElement, ReactNode } from "react";

import type { TokenProvider } from "./referrals.js";
import type {
  ReferralErrorDetail,
  ReferralLinkCopiedDetail,
  ReferralSharedDetail,
  ReferralsLoadedDetail,
  ReferralWidgetAttributes,
  WidgetMessagesOverride,
} from "./referral-widget.js";
import type { ReferResponse } from "./referrals.js";

export interface ReferralWidgetProps {
  broker: string;
  shop: string;
  version?: string;
  tokenUrl?: string;
  getToken?: TokenProvider;
  lang?: string;
  channels?: string | readonly string[];
  theme?: "light" | "dark" | "auto";
  currency?: string;
  timeout?: number;
  linkChannel?: string;
  messages?: WidgetMessagesOverride;
  /** The shop's incentive text, shown under the title (the `incentive` slot). */
  incentive?: ReactNode;
  className?: string;
  id?: string;
  children?: ReactNode;
  onLoaded?: (detail: ReferralsLoadedDetail, event: CustomEvent<ReferralsLoadedDetail>) => void;
  onSent?: (detail: ReferResponse, event: CustomEvent<ReferResponse>) => void;
  onError?: (detail: ReferralErrorDetail, event: CustomEvent<ReferralErrorDetail>) => void;
  onLinkCopied?: (detail: ReferralLinkCopiedDetail, event: CustomEvent<ReferralLinkCopiedDetail>) => void;
  onShared?: (detail: ReferralSharedDetail, event: CustomEvent<ReferralSharedDetail>) => void;
}

export declare function ReferralWidget(props: ReferralWidgetProps): ReactElement;
export declare const ATTRIBUTES: Readonly<Record<string, keyof ReferralWidgetAttributes>>;
export declare const EVENTS: Readonly<Record<string, string>>;

// <referral-widget> itself in React's JSX (the automatic runtime's namespace).
declare module "react" {
  namespace JSX {
    interface IntrinsicElements {
      "referral-widget": ReferralWidgetAttributes & {
        ref?: unknown;
        className?: string;
        id?: string;
        children?: ReactNode;
      };
    }
  }
}
