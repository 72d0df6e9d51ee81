// Type declarations for referrals.js, the storefront client of the referral broker.

/** How long (ms) after a successful send an identical one is taken for a double click. */
export declare const DOUBLE_SEND_WINDOW_MS: number;

/** The error ids the broker answers with (spec section 4). */
export type BrokerErrorId =
  | "missing_token"
  | "invalid_token"
  | "invalid_issuer_key"
  | "customer_identity_does_not_match_token"
  | "deanonymize_not_allowed"
  | "invalid_global_api_version"
  | "invalid_input"
  | "invalid_json"
  | "not_found"
  | "method_not_allowed"
  | "idempotency_key_reused"
  | "payload_too_large"
  | "unsupported_media_type"
  | "rate_limit_exceeded"
  | "upstream_misconfigured"
  | "upstream_error"
  | "upstream_unavailable"
  | "upstream_timeout"
  | "internal_error";

/** Ids raised by the client itself: `network_error` (status 0) and `unexpected_response`. */
export type ClientErrorId = "network_error" | "unexpected_response";

/**
 * Every id a storefront may see. Bubblehouse's own 4xx ids (for example
 * `no_customers_match_customer_identity`) pass through the broker, hence the open string.
 */
export type ReferralsErrorId = BrokerErrorId | ClientErrorId | (string & {});

/** The ids of `BrokerErrorId` and `ClientErrorId`, in the order of the spec's table. */
export declare const ERROR_IDS: readonly (BrokerErrorId | ClientErrorId)[];

/** Reasons given with `invalid_token`. */
export type InvalidTokenReason =
  | "expired"
  | "malformed"
  | "signature"
  | "unknown_key"
  | "audience"
  | "subject"
  | "not_yet_valid"
  | "missing_claim"
  | "lifetime";

/** The documented referral channels (ReferralChannel1); the enum is open. */
export type ReferralChannel =
  | "email"
  | "sms"
  | "facebook"
  | "messenger"
  | "whatsapp"
  | "twitter"
  | "instagram"
  | "threads"
  | "telegram"
  | "qr-code"
  | "custom-personal"
  | "custom-social"
  | (string & {});

export declare const CHANNELS: readonly ReferralChannel[];
export declare const DEFAULT_VERSION: "v2023061";

/** ReferralStatus3 (newest), tolerant of older and future values. */
export type ReferralStatus =
  | "invited"
  | "qualified"
  | "approved"
  | "rejected"
  | "expired"
  | "pending"
  | (string & {});

/** One row of the referral history (Referral2); unknown fields pass through. */
export interface Referral {
  /** Bubblehouse id (bubbleflake); not unique per row when a shared link was used many times. */
  referral_bhid: string;
  acceptance_bhid?: string | null;
  channel: ReferralChannel;
  /** Masked (anonymized) in CustomerReferrals2. */
  destination?: string | null;
  status: ReferralStatus;
  link?: string | null;
  /** RFC 3339, UTC. */
  sent_at: string;
  accepted_at?: string | null;
  updated_at?: string;
  reward_pts?: number | null;
  /** Monetary string with six decimals, e.g. "4.990000". */
  reward_pts_value?: string | null;
  reward_amount?: string | null;
  coupon_code?: string | null;
  [field: string]: unknown;
}

/**
 * Referral counts and earnings totals. Bubblehouse names such a field without publishing its
 * name or shape: `summary` and these members are the broker's sandbox's guess (modelled on
 * Bubblehouse's CustomerReferralStats3). Read them as optional.
 */
export interface ReferralSummary {
  sent?: number;
  approved?: number;
  rejected?: number;
  earned_pts?: number;
  [field: string]: unknown;
}

/**
 * CustomerReferrals2's answer, unchanged by the broker. Its order is Bubblehouse's (the sandbox
 * answers newest first, which Bubblehouse does not promise), and `destination` is masked in a
 * format Bubblehouse does not document (the sandbox writes `f***@example.com`).
 */
export interface CustomerReferralsResponse {
  summary?: ReferralSummary;
  referrals: Referral[];
  [field: string]: unknown;
}

/**
 * What the page should do next to finish sharing (Bubblehouse's ReferralShareAction1).
 *
 * Bubblehouse does not document this type's members, so it is opaque here: an object whose
 * members are unknown. Narrow it with `isKnownShareAction` before using a member, and give the
 * shopper a plain link (the referral's `link`) for any shape the guard does not know.
 */
export interface ShareAction {
  readonly [member: string]: unknown;
}

/**
 * The shapes the broker's sandbox produces. They are the sandbox's guesses, not Bubblehouse's
 * documented type: the real service may send other shapes.
 */
export type KnownShareAction =
  | { type: "none"; [member: string]: unknown }
  | { type: "open_url"; url: string; link?: string; [member: string]: unknown }
  | { type: "copy_link"; link: string; text?: string; [member: string]: unknown }
  | { type: "show_qr_code"; link?: string; data?: string; [member: string]: unknown };

/** True when `action` is one of the `KnownShareAction` shapes (with the members they need). */
export declare function isKnownShareAction(action: unknown): action is KnownShareAction;

/** `value` when it is an absolute `http:` or `https:` URL, otherwise null: safe as an `href`. */
export declare function httpUrl(value: unknown): string | null;

/**
 * What to show a shopper for a failure: Bubblehouse's shop-configured `upstream_message` when
 * the broker passed one on, otherwise the broker's own `message`.
 */
export declare function shopperMessage(error: ReferralsError | { message?: string }): string;

/** Refer2's answer, unchanged by the broker. */
export interface ReferResponse {
  message?: string | null;
  referral: Referral;
  share_action?: ShareAction | null;
  [field: string]: unknown;
}

/** The broker's problem document (RFC 9457 plus Bubblehouse's `id`, `message`). */
export interface ProblemBody {
  type: string;
  title: string;
  status: number;
  id: ReferralsErrorId;
  message: string;
  retryable: boolean;
  request_id: string;
  retry_after?: number;
  reason?: InvalidTokenReason;
  field?: string;
  upstream_status?: number;
  /**
   * Bubblehouse's own words for a 4xx refusal (for Refer2: text the shop configured for its
   * shoppers), control characters removed, at most 500 characters. Prefer it over `message`
   * when present.
   */
  upstream_message?: string;
  [field: string]: unknown;
}

export interface ReferralsErrorInit {
  id: ReferralsErrorId;
  status?: number;
  message?: string;
  retryable?: boolean;
  requestId?: string | null;
  retryAfter?: number | null;
  field?: string | null;
  reason?: string | null;
  upstreamStatus?: number | null;
  upstreamMessage?: string | null;
  idempotencyKey?: string | null;
  replayed?: boolean;
  body?: ProblemBody | null;
  cause?: unknown;
}

/**
 * Every failure of a client call, except two that pass through unchanged: an abort (the
 * signal's AbortError) and whatever your getToken throws.
 */
export declare class ReferralsError extends Error {
  constructor(init: ReferralsErrorInit);
  readonly name: "ReferralsError";
  /** Stable id: branch on this. */
  readonly id: ReferralsErrorId;
  /** HTTP status; 0 when no answer arrived (`network_error`). */
  readonly status: number;
  /** Safe to show a shopper or a developer. */
  readonly message: string;
  /** True when the same call may succeed later (after `retryAfter` seconds when given). */
  readonly retryable: boolean;
  /** The broker's X-Request-ID: quote it in support requests. Null when no answer arrived. */
  readonly requestId: string | null;
  /** Seconds to wait before retrying (from `retry_after` / `Retry-After`), or null. */
  readonly retryAfter: number | null;
  /** The offending input field, for `invalid_input`. */
  readonly field: string | null;
  /** Why the token was refused, for `invalid_token`. */
  readonly reason: InvalidTokenReason | (string & {}) | null;
  readonly upstreamStatus: number | null;
  /** Bubblehouse's own text (`upstream_message`): show it to the shopper when present. */
  readonly upstreamMessage: string | null;
  /**
   * For sendReferral: the send's Idempotency-Key. After `network_error`, pass it back as
   * `idempotencyKey` to retry this same send safely; the broker answers a key it has seen with
   * the answer it recorded for it.
   */
  readonly idempotencyKey: string | null;
  /** True when the broker replayed the recorded answer of an earlier send with this key. */
  readonly replayed: boolean;
  /** The full problem document, when the broker sent one. */
  readonly body: ProblemBody | null;
  /** Read a non-2xx broker Response (for callers that use fetch directly). */
  static fromResponse(
    response: Response,
    options?: { idempotencyKey?: string | null },
  ): Promise<ReferralsError>;
}

/** Called by the client before each call (false) and once after an invalid token (true). */
export type TokenProvider = (options: { forceRefresh: boolean }) => Promise<string> | string;

/** What the client saw of one HTTP answer (for logs, metrics, debug panels). */
export interface ResponseInfo {
  function: string;
  status: number;
  ok: boolean;
  requestId: string | null;
  /** RFC 9211 Cache-Status, e.g. "broker; hit; ttl=42" or "broker; fwd=stale". */
  cacheStatus: string | null;
  rateLimit: string | null;
  rateLimitPolicy: string | null;
  idempotencyKey: string | null;
  /** The broker's `Idempotent-Replayed: true`: a recorded answer, Bubblehouse not called. */
  replayed: boolean;
  /** Refer2's `Consistency-Token` (opaque); the client sends it back on this customer's reads. */
  consistencyToken: string | null;
}

export interface ReferralsClientOptions {
  /** The broker's origin, e.g. "https://referrals.shop.example". */
  baseUrl: string;
  /** The Bubblehouse shop slug. */
  shop: string;
  /** Global API version in the path; default "v2023061". */
  version?: string;
  getToken: TokenProvider;
  /** A fetch implementation; default globalThis.fetch. */
  fetch?: typeof fetch;
  /** Observer of every HTTP answer; its exceptions are ignored. */
  onResponse?: (info: ResponseInfo) => void;
}

export interface ListReferralsOptions {
  signal?: AbortSignal;
}

export interface SendReferralOptions {
  channel: ReferralChannel;
  /** Required (an email address) for channel "email"; omit otherwise. */
  destination?: string | null;
  /**
   * Reuse the key of an earlier attempt of the same send (error.idempotencyKey after a
   * network_error) to retry it safely; omitted, a fresh key (crypto.randomUUID) is made.
   */
  idempotencyKey?: string;
  /** Ignored when the call joins an identical send (in flight, or just succeeded). */
  signal?: AbortSignal;
}

export interface CallOptions {
  signal?: AbortSignal;
  idempotencyKey?: string;
}

export interface ReferralsClient {
  /**
   * The customer's referral history (POST CustomerReferrals2 with `{}`). After a send by the
   * same customer it carries that send's `Consistency-Token`, so the new referral is in it.
   */
  listReferrals(options?: ListReferralsOptions): Promise<CustomerReferralsResponse>;
  /**
   * Send a referral (POST Refer2 with an Idempotency-Key). Never retried automatically after a
   * network error or a 5xx. Identical sends by the same customer (the token's subject) made
   * while one is in flight, or within DOUBLE_SEND_WINDOW_MS after it succeeded (a double
   * click), share its result.
   */
  sendReferral(options: SendReferralOptions): Promise<ReferResponse>;
  /** Low-level: POST `body` to `<baseUrl>/api/<version>/<shop>/<fn>` with the token protocol. */
  call<T = unknown>(fn: string, body?: Record<string, unknown>, options?: CallOptions): Promise<T>;
  readonly baseUrl: string;
  readonly shop: string;
  readonly version: string;
}

export declare function createReferralsClient(options: ReferralsClientOptions): ReferralsClient;
