// referrals.js: the storefront client of the referral broker.
//
// One dependency-free ES module, no build step. Install it from npm (this directory is the
// package), import it from the broker (`<broker>/static/<version>/referrals.js`, listed with its
// SRI hash in `<broker>/static/manifest.json`), or copy it into your storefront's assets.
//
//   import { createReferralsClient } from "https://broker.example/static/1.0.0/referrals.js";
//   const referrals = createReferralsClient({ baseUrl, shop, getToken });
//   const history = await referrals.listReferrals();
//   const sent = await referrals.sendReferral({ channel: "email", destination: "friend@example.com" });
//
// Types: referrals.d.ts beside this file.

/** How long after a successful send an identical one is taken for a double click. */
export const DOUBLE_SEND_WINDOW_MS = 2000;

/** The error ids a storefront should be ready for: the broker's, plus the client's own. */
export const ERROR_IDS = /* @__PURE__ */ Object.freeze([
  "missing_token",
  "invalid_token",
  "invalid_issuer_key",
  "customer_identity_does_not_match_token",
  "deanonymize_not_allowed",
  "invalid_global_api_version",
  "invalid_input",
  "invalid_json",
  "not_found",
  "method_not_allowed",
  "idempotency_key_reused",
  "payload_too_large",
  "unsupported_media_type",
  "rate_limit_exceeded",
  "upstream_misconfigured",
  "upstream_error",
  "upstream_unavailable",
  "upstream_timeout",
  "internal_error",
  // Raised by this client, never sent by the broker:
  "network_error", // fetch failed: offline, DNS, CORS refusal, connection reset (status 0)
  "unexpected_response", // an answer that is not the broker's JSON (e.g. a proxy's HTML page)
]);

/** The documented referral channels; the list is open, other slugs pass through. */
export const CHANNELS = Object.freeze([
  "email",
  "sms",
  "facebook",
  "messenger",
  "whatsapp",
  "twitter",
  "instagram",
  "threads",
  "telegram",
  "qr-code",
  "custom-personal",
  "custom-social",
]);

export const DEFAULT_VERSION = "v2023061";

/** Every failure of a client call. `id` is stable; branch on it, show `message`. */
export class ReferralsError extends Error {
  constructor({
    id,
    status = 0,
    message,
    retryable = false,
    requestId = null,
    retryAfter = null,
    field = null,
    reason = null,
    upstreamStatus = null,
    upstreamMessage = null,
    idempotencyKey = null,
    replayed = false,
    body = null,
    cause,
  }) {
    super(message || id, cause === undefined ? undefined : { cause });
    this.name = "ReferralsError";
    this.id = id;
    this.status = status;
    this.retryable = Boolean(retryable);
    this.requestId = requestId;
    this.retryAfter = retryAfter;
    this.field = field;
    this.reason = reason;
    this.upstreamStatus = upstreamStatus;
    this.upstreamMessage = upstreamMessage;
    this.idempotencyKey = idempotencyKey;
    this.replayed = Boolean(replayed);
    this.body = body;
  }

  /** Read a non-2xx `Response` of the broker into a ReferralsError (for direct fetch callers). */
  static async fromResponse(response, { idempotencyKey = null } = {}) {
    let body = null;
    try {
      const text = await response.text();
      body = text ? JSON.parse(text) : null;
    } catch {
      body = null;
    }
    const headerId = response.headers.get("X-Request-ID");
    const replayed = response.headers.get("Idempotent-Replayed") === "true";
    const retryAfter = parseRetryAfter(
      body && body.retry_after != null ? String(body.retry_after) : response.headers.get("Retry-After"),
    );
    if (!body || typeof body !== "object" || typeof body.id !== "string") {
      return new ReferralsError({
        id: "unexpected_response",
        status: response.status,
        message: `The broker answered HTTP ${response.status} without its JSON error body.`,
        retryable: response.status >= 500 || response.status === 429,
        requestId: headerId,
        retryAfter,
        idempotencyKey,
        replayed,
      });
    }
    return new ReferralsError({
      id: body.id,
      status: typeof body.status === "number" ? body.status : response.status,
      message: body.message || body.title || body.id,
      retryable: body.retryable === true,
      requestId: body.request_id || headerId,
      retryAfter,
      field: body.field ?? null,
      reason: body.reason ?? null,
      upstreamStatus: body.upstream_status ?? null,
      upstreamMessage:
        typeof body.upstream_message === "string" && body.upstream_message.trim()
          ? body.upstream_message
          : null,
      idempotencyKey,
      replayed,
      body,
    });
  }
}

/**
 * The words to show a shopper for a failure: Bubblehouse's own (shop-configured) text when the
 * broker passed it on as `upstream_message`, otherwise the broker's `message`.
 */
export function shopperMessage(error) {
  if (error == null || typeof error !== "object") return String(error ?? "");
  return error.upstreamMessage || error.message || String(error.id || "");
}

/** The share-action shapes the sandbox produces; Bubblehouse has not documented its own. */
const KNOWN_SHARE_ACTIONS = Object.freeze({
  none: () => true,
  open_url: (action) => typeof action.url === "string",
  copy_link: (action) => typeof action.link === "string",
  show_qr_code: (action) => typeof action.link === "string" || typeof action.data === "string",
});

/**
 * True when `action` is one of the share-action shapes this client knows (`none`, `open_url`
 * with `url`, `copy_link` with `link`, `show_qr_code` with `link` or `data`). These are the
 * sandbox's guesses: Bubblehouse does not document ReferralShareAction1, so treat anything else
 * as unknown and fall back to the referral's link.
 */
export function isKnownShareAction(action) {
  if (action == null || typeof action !== "object" || Array.isArray(action)) return false;
  const check = Object.hasOwn(KNOWN_SHARE_ACTIONS, action.type) ? KNOWN_SHARE_ACTIONS[action.type] : null;
  return check !== null && check(action);
}

/** `value` when it is an absolute http: or https: URL, otherwise null: safe for an `href`. */
export function httpUrl(value) {
  if (typeof value !== "string" || value === "") return null;
  try {
    const url = new URL(value);
    return url.protocol === "https:" || url.protocol === "http:" ? url.href : null;
  } catch {
    return null;
  }
}

/** Who a customer token is for (its `sub` claim), or the token itself if it cannot be read. */
function customerOf(token) {
  if (typeof token !== "string") return "";
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const claims = JSON.parse(atob(part + "=".repeat((4 - (part.length % 4)) % 4)));
    if (claims && typeof claims.sub === "string" && claims.sub) return `sub:${claims.sub}`;
  } catch {
    // Not a JWT we can read: the token itself stands for the customer.
  }
  return `token:${token}`;
}

function parseRetryAfter(value) {
  if (value == null || value === "") return null;
  const seconds = Number(value);
  if (Number.isFinite(seconds)) return Math.max(0, Math.ceil(seconds));
  const date = Date.parse(value);
  if (Number.isNaN(date)) return null;
  return Math.max(0, Math.ceil((date - Date.now()) / 1000));
}

function isAbort(error) {
  return error != null && typeof error === "object" && error.name === "AbortError";
}

function newIdempotencyKey() {
  if (globalThis.crypto && typeof globalThis.crypto.randomUUID === "function") {
    return globalThis.crypto.randomUUID();
  }
  // randomUUID needs a secure context (https or localhost); fall back to getRandomValues.
  const bytes = globalThis.crypto.getRandomValues(new Uint8Array(16));
  bytes[6] = (bytes[6] & 0x0f) | 0x40;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/**
 * Make a client for one shop.
 *
 * getToken({ forceRefresh }) must resolve to the customer's token (a string). The client asks
 * with forceRefresh false before each call (cache the token on your side) and with forceRefresh
 * true once when the broker says the token is invalid or expired; then it retries once.
 */
export function createReferralsClient({
  baseUrl,
  shop,
  version = DEFAULT_VERSION,
  getToken,
  fetch: fetchImpl,
  onResponse,
} = {}) {
  if (!baseUrl) throw new TypeError("createReferralsClient: baseUrl is required");
  if (!shop) throw new TypeError("createReferralsClient: shop is required");
  if (typeof getToken !== "function") {
    throw new TypeError("createReferralsClient: getToken must be a function");
  }
  const doFetch = fetchImpl || ((...args) => globalThis.fetch(...args));
  const root = `${String(baseUrl).replace(/\/+$/, "")}/api/${encodeURIComponent(version)}/${encodeURIComponent(shop)}`;
  const recentSends = new Map(); // identical sends in flight, or finished moments ago
  const consistency = new Map(); // customer -> the Consistency-Token of their last send
  let lastRefresh = null; // { stale: the refused token, promise: its replacement }

  // Calls refused for the same token share one refresh, even when they learn of it one after
  // the other; a token refused after a refresh gets a refresh of its own.
  function refreshToken(staleToken) {
    if (lastRefresh && lastRefresh.stale === staleToken) return lastRefresh.promise;
    const refresh = {
      stale: staleToken,
      promise: Promise.resolve().then(() => getToken({ forceRefresh: true })),
    };
    refresh.promise.catch(() => {
      if (lastRefresh === refresh) lastRefresh = null;
    });
    lastRefresh = refresh;
    return refresh.promise;
  }

  async function once(fn, body, token, { signal, idempotencyKey }) {
    const headers = { "Content-Type": "application/json", Accept: "application/json" };
    if (token) headers.Authorization = `Bearer ${token}`;
    if (idempotencyKey) headers["Idempotency-Key"] = idempotencyKey;
    const customer = customerOf(token);
    // Read-your-writes on any broker instance: a read after this customer's send carries the
    // send's token, and the broker never answers it from an older list.
    if (fn === "CustomerReferrals2" && consistency.has(customer)) {
      headers["Consistency-Token"] = consistency.get(customer);
    }
    let response;
    try {
      response = await doFetch(`${root}/${fn}`, {
        method: "POST",
        headers,
        body: JSON.stringify(body),
        mode: "cors",
        credentials: "omit",
        cache: "no-store",
        signal,
      });
    } catch (error) {
      if (isAbort(error)) throw error;
      throw new ReferralsError({
        id: "network_error",
        status: 0,
        message: "The referral service could not be reached. Check the connection and try again.",
        retryable: true,
        idempotencyKey: idempotencyKey || null,
        cause: error,
      });
    }
    if (typeof onResponse === "function") {
      try {
        onResponse({
          function: fn,
          status: response.status,
          ok: response.ok,
          requestId: response.headers.get("X-Request-ID"),
          cacheStatus: response.headers.get("Cache-Status"),
          rateLimit: response.headers.get("RateLimit"),
          rateLimitPolicy: response.headers.get("RateLimit-Policy"),
          idempotencyKey: idempotencyKey || null,
          replayed: response.headers.get("Idempotent-Replayed") === "true",
          consistencyToken: response.headers.get("Consistency-Token"),
        });
      } catch {
        // An observer's bug must not break the call.
      }
    }
    if (!response.ok) {
      throw await ReferralsError.fromResponse(response, { idempotencyKey: idempotencyKey || null });
    }
    const written = fn === "Refer2" ? response.headers.get("Consistency-Token") : null;
    if (written) consistency.set(customer, written);
    try {
      return await response.json();
    } catch (error) {
      if (isAbort(error)) throw error;
      throw new ReferralsError({
        id: "unexpected_response",
        status: response.status,
        message: "The broker's answer was not JSON.",
        retryable: false,
        requestId: response.headers.get("X-Request-ID"),
        idempotencyKey: idempotencyKey || null,
        cause: error,
      });
    }
  }

  // One call with the token protocol: a 401 invalid_token comes from the broker's own check,
  // before Bubblehouse is called, so one retry with a fresh token is safe even for Refer2.
  async function call(fn, body = {}, { signal, idempotencyKey, token: known } = {}) {
    const token = known === undefined ? await getToken({ forceRefresh: false }) : known;
    try {
      return await once(fn, body, token, { signal, idempotencyKey });
    } catch (error) {
      if (!(error instanceof ReferralsError) || error.status !== 401 || error.id !== "invalid_token") {
        throw error;
      }
      const fresh = await refreshToken(token);
      return once(fn, body, fresh, { signal, idempotencyKey });
    }
  }

  function listReferrals({ signal } = {}) {
    return call("CustomerReferrals2", {}, { signal });
  }

  async function sendReferral({ channel, destination, idempotencyKey, signal } = {}) {
    // Validation is the broker's: a missing or bad channel comes back as invalid_input.
    const body = { channel };
    if (destination != null && destination !== "") body.destination = destination;
    const token = await getToken({ forceRefresh: false });
    // A double click sends once: an identical send by the same customer made while the first
    // is in flight, or within DOUBLE_SEND_WINDOW_MS after it succeeded (a fast answer can beat
    // the second click), gets the first one's answer. Another customer's identical send on the
    // same page is a send of its own. A failed send is forgotten at once, so it can be retried.
    const dedupKey = JSON.stringify([
      customerOf(token),
      channel,
      body.destination ?? null,
      idempotencyKey ?? null,
    ]);
    const earlier = recentSends.get(dedupKey);
    if (earlier) return earlier;
    const forget = () => {
      if (recentSends.get(dedupKey) === promise) recentSends.delete(dedupKey);
    };
    // One key per logical send. After a network_error, pass error.idempotencyKey back in to
    // retry the same send: the broker runs it, or replays the answer it already gave.
    const key = idempotencyKey || newIdempotencyKey();
    const promise = call("Refer2", body, { signal, idempotencyKey: key, token }).then(
      (answer) => {
        setTimeout(forget, DOUBLE_SEND_WINDOW_MS);
        return answer;
      },
      (error) => {
        forget();
        throw error;
      },
    );
    recentSends.set(dedupKey, promise);
    return promise;
  }

  return Object.freeze({
    listReferrals,
    sendReferral,
    /** Low-level: POST any body to a broker function, with the same token protocol. */
    call,
    baseUrl: String(baseUrl).replace(/\/+$/, ""),
    shop,
    version,
  });
}
