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
  | "title" | "yourLink" | "getLink" | "copy" | "copied" | "share" | "invite" | "channel"
  | "destination" | "send" | "sending" | "sent" | "loading" | "loaded" | "history" | "empty"
  | "more" | "retry" | "open" | "qr" | "sentOn" | "acceptedOn" | "points" | "reward"
  | "coupon" | "joined" | "earned" | "noRewards" | "new" | "shareText"
  | "status.invited" | "status.qualified" | "status.approved" | "status.rejected"
  | "status.expired" | "status.pending"
  | "channel.email" | "channel.qr-code" | "channel.custom-personal"
  | "channel.custom-social"
  | "error.signin" | "error.destination" | "error.rate" | "error.network"
  | "error.unavailable" | "error.account" | "error.refused" | "error.generic";

/** A plural: one text per Intl.PluralRules category; `other` is the fallback. */
export type PluralText = Partial<Record<"zero" | "one" | "two" | "few" | "many", string>> & {
  other: string;
};

/** One message: a text with `{name}` placeholders, or a plural chosen by `{count}`. */
export type WidgetText = string | PluralText;

/** Wording for one language (keys of `WidgetMessageKey`, or `channel.<slug>` for any channel). */
export type WidgetMessages = Partial<Record<WidgetMessageKey, WidgetText>> & {
  [key: string]: WidgetText | undefined;
};

/** A merchant's `messages`: words for every language, and/or words per language code. */
export type WidgetMessagesOverride = {
  [keyOrLanguage: string]: WidgetText | WidgetMessages | undefined;
};

/** The built-in languages. */
export type WidgetLanguage = "en" | "de" | "fr" | "es" | "it" | "nl" | "pt";

/** The built-in wording, by language. */
export declare const MESSAGES: Readonly<Record<WidgetLanguage, Readonly<WidgetMessages>>>;

/** Add a language (`addMessages("pl", {...})`) or replace words of one, for every widget. */
export declare function addMessages(lang: string, messages: WidgetMessages): void;

/** Detail of `referrals-loaded`: the history as Bubblehouse sent it (non-object rows left out). */
export interface ReferralsLoadedDetail {
  referrals: Referral[];
  response: CustomerReferralsResponse;
}

/** The widget's own ids for a developer's mistake (with a console warning and a visible line). */
export type WidgetDeveloperErrorId =
  | "broker_unreachable"
  | "no_token_source"
  | "token_source_failed"
  | "widget_not_configured";

/** Detail of `referral-error`: the broker's problem document, or the widget's own shape. */
export type ReferralErrorDetail =
  | ProblemBody
  | { id: WidgetDeveloperErrorId | "timeout" | (string & {}); status: number; message: string };

/** Detail of `referral-link-copied`. */
export interface ReferralLinkCopiedDetail {
  url: string;
}

/** Detail of `referral-shared`: `share-sheet` (Web Share), or the channel of a share link. */
export interface ReferralSharedDetail {
  channel: "share-sheet" | (string & {});
  url: string | null;
}

export interface ReferralWidgetEventMap extends HTMLElementEventMap {
  "referrals-loaded": CustomEvent<ReferralsLoadedDetail>;
  "referral-sent": CustomEvent<ReferResponse>;
  "referral-error": CustomEvent<ReferralErrorDetail>;
  "referral-link-copied": CustomEvent<ReferralLinkCopiedDetail>;
  "referral-shared": CustomEvent<ReferralSharedDetail>;
}

/** The attributes of `<referral-widget>`, as markup (and JSX) writes them. */
export interface ReferralWidgetAttributes {
  broker?: string;
  shop?: string;
  version?: string;
  "token-url"?: string;
  lang?: string;
  /** Comma-separated channel slugs. */
  channels?: string;
  theme?: "light" | "dark" | "auto";
  /** ISO 4217 code for reward amounts, e.g. "EUR". */
  currency?: string;
  /** Seconds to wait for the broker (default 10). */
  timeout?: string | number;
  /** The channel of the standing link got with "Get my link" (default custom-personal). */
  "link-channel"?: string;
}

/**
 * `<referral-widget>`: the customer's referral history, a standing link to copy and share, and
 * a form to send a referral, in an open shadow root. Events bubble and are composed.
 */
export declare class ReferralWidget extends HTMLElement {
  static readonly observedAttributes: string[];
  /** A token provider, for pages that mint tokens otherwise than through `token-url`. */
  getToken: TokenProvider | null;
  /** The merchant's own wording, over the built-in words; applied in place. */
  messages: WidgetMessagesOverride;
  /** The referrals shown (a copy). */
  readonly referrals: Referral[];
  /** The language used: from `lang`, the closest `[lang]`, the document, or the browser. */
  readonly language: WidgetLanguage | (string & {});
  /** "light" or "dark", from the `theme` attribute (`auto`: the page's color-scheme). */
  readonly scheme: "light" | "dark";
  /** The channels offered: the `channels` attribute, or the twelve documented ones. */
  readonly channels: string[];
  /** One message in the current language, placeholders filled in. */
  t(key: WidgetMessageKey | (string & {}), values?: Record<string, string | number>): string;
  /** Read the history again from the broker. */
  refresh(): Promise<void>;
  /** Set every word again (after `addMessages`). */
  relabel(): void;
  connectedCallback(): void;
  disconnectedCallback(): void;
  attributeChangedCallback(name: string, before: string | null, after: string | null): void;
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

/** The QR code of `text` (byte mode, level M, versions 1-40) as rows of modules, true for dark. */
export declare function qrModules(text: string, options?: { mask?: number }): boolean[][];

declare global {
  interface HTMLElementTagNameMap {
    "referral-widget": ReferralWidget;
  }
  interface HTMLElementEventMap {
    "referrals-loaded": CustomEvent<ReferralsLoadedDetail>;
    "referral-sent": CustomEvent<ReferResponse>;
    "referral-error": CustomEvent<ReferralErrorDetail>;
    "referral-link-copied": CustomEvent<ReferralLinkCopiedDetail>;
    "referral-shared": CustomEvent<ReferralSharedDetail>;
  }
  /** JSX (Preact, Solid, React's classic global JSX): `<referral-widget broker=... />`. */
  namespace JSX {
    interface IntrinsicElements {
      "referral-widget": ReferralWidgetAttributes & {
        class?: string;
        className?: string;
        id?: string;
        children?: unknown;
        ref?: unknown;
        key?: string | number;
      };
    }
  }
}
