// Type declarations for referral-widget.js: the <referral-widget> custom element.

import type {
  CustomerReferralsResponse,
  ProblemBody,
  ReferResponse,
  Referral,
  TokenProvider,
} from "./referrals.js";

/** The keys of the built-in wording; a merchant's `messages` may replace any of them. */
export type WidgetMessageKey =
  | "title" | "channel" | "destination" | "send" | "sending" | "sent" | "loading" | "loaded"
  | "history" | "empty" | "share" | "copy" | "copied" | "open" | "link" | "qr" | "sentOn"
  | "acceptedOn" | "points" | "reward" | "coupon" | "custom-personal" | "custom-social"
  | "status.invited" | "status.qualified" | "status.approved" | "status.rejected"
  | "status.expired" | "status.pending" | "error.signin" | "error.destination" | "error.rate"
  | "error.network" | "error.unavailable" | "error.generic";

/** Wording for one language; `{name}` placeholders are filled in (e.g. `{seconds}`). */
export type WidgetMessages = Partial<Record<WidgetMessageKey, string>> & Record<string, string>;

/** The built-in languages: English, German and French. */
export declare const MESSAGES: Readonly<Record<"en" | "de" | "fr", Readonly<Record<WidgetMessageKey, string>>>>;

/** Detail of `referrals-loaded`: the history as Bubblehouse sent it. */
export interface ReferralsLoadedDetail {
  referrals: Referral[];
  response: CustomerReferralsResponse;
}

/** Detail of `referral-error`: the broker's problem document, or the client's own shape. */
export type ReferralErrorDetail = ProblemBody | { id: string; status: number; message: string };

export interface ReferralWidgetEventMap extends HTMLElementEventMap {
  "referrals-loaded": CustomEvent<ReferralsLoadedDetail>;
  "referral-sent": CustomEvent<ReferResponse>;
  "referral-error": CustomEvent<ReferralErrorDetail>;
}

/**
 * `<referral-widget broker shop version token-url lang channels>`: the customer's referral
 * history and a form to send one, in an open shadow root (parts: `panel`, `title`, `form`,
 * `label`, `channel`, `destination`, `send`, `message`, `share`, `share-link`, `link`, `qr`,
 * `history`, `referral`). Events bubble and are composed.
 */
export declare class ReferralWidget extends HTMLElement {
  static readonly observedAttributes: string[];
  /** A token provider, for pages that mint tokens otherwise than through `token-url`. */
  getToken: TokenProvider | null;
  /** The merchant's own wording, over the built-in messages of the current language. */
  messages: WidgetMessages;
  /** The referrals shown (a copy). */
  readonly referrals: Referral[];
  /** "en", "de" or "fr": from `lang`, the closest `[lang]`, the document, or the browser. */
  readonly language: "en" | "de" | "fr";
  /** The channels offered: the `channels` attribute, or the twelve documented ones. */
  readonly channels: string[];
  /** One message in the current language, placeholders filled in. */
  t(key: WidgetMessageKey | (string & {}), values?: Record<string, string | number>): string;
  /** Read the history again from the broker. */
  refresh(): Promise<void>;
  connectedCallback(): void;
  attributeChangedCallback(): void;
  addEventListener<K extends keyof ReferralWidgetEventMap>(
    type: K,
    listener: (this: ReferralWidget, event: ReferralWidgetEventMap[K]) => unknown,
    options?: boolean | AddEventListenerOptions,
  ): void;
  addEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject,
    options?: boolean | AddEventListenerOptions,
  ): void;
}

/** The QR code of `text` (byte mode, level M) as rows of modules, true for dark. */
export declare function qrModules(text: string, options?: { mask?: number }): boolean[][];

declare global {
  interface HTMLElementTagNameMap {
    "referral-widget": ReferralWidget;
  }
  interface HTMLElementEventMap {
    "referrals-loaded": CustomEvent<ReferralsLoadedDetail>;
    "referral-sent": CustomEvent<ReferResponse>;
    "referral-error": CustomEvent<ReferralErrorDetail>;
  }
}
