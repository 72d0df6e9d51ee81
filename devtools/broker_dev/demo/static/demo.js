// demo.js: the demo storefront's page logic. Loads referrals.js from the broker's origin.

const $ = (selector) => document.querySelector(selector);

/** Build an element; children are nodes or strings (always text, never HTML). */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value == null || value === false) continue;
    if (name === "class") el.className = value;
    else if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child == null || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

const CHANNEL_LABELS = {
  email: "Email",
  sms: "SMS / iMessage",
  facebook: "Facebook",
  messenger: "Messenger",
  whatsapp: "WhatsApp",
  twitter: "X (Twitter)",
  instagram: "Instagram",
  threads: "Threads",
  telegram: "Telegram",
  "qr-code": "QR code",
  "custom-personal": "Personal message",
  "custom-social": "Social post",
};

// What a storefront should do with each error id; shown in every error box.
const ADVICE = {
  missing_token: "The page called without a token. Sign the customer in (or fix getToken) and try again.",
  invalid_token: "referrals.js asks getToken for a fresh token and retries once by itself; if that fails too, sign the customer in again.",
  invalid_issuer_key: "Only the merchant's server sees this: its issuer key is wrong. Never call /tokens from a browser.",
  customer_identity_does_not_match_token: "Do not send a customer field from the browser: the token already names the customer.",
  deanonymize_not_allowed: "Customer tokens cannot see unmasked destinations. Drop deanonymize.",
  invalid_global_api_version: "The client's version option names a version the broker does not serve. A deployment problem.",
  invalid_input: "Point the shopper at the named field and let them correct it.",
  invalid_json: "A bug in the calling code: the body must be a JSON object.",
  not_found: "Wrong shop or function in the URL: check the client's baseUrl and shop.",
  method_not_allowed: "A bug in the calling code: use POST.",
  idempotency_key_reused: "An Idempotency-Key was reused for a different send. Start a new send (new key).",
  payload_too_large: "The body is over 16 KiB. A bug in the calling code.",
  unsupported_media_type: "Send Content-Type: application/json.",
  rate_limit_exceeded: "Wait retry-after seconds, then let the shopper try again (a new send). Do not loop.",
  upstream_misconfigured: "The broker's own Bubblehouse credentials are wrong. Tell the shop's operator; retrying will not help.",
  upstream_error: "Bubblehouse failed. Offer to try again in a moment. The broker remembers this answer for this send's key, so trying again is a new send; Bubblehouse hands back the same referral if the first one went through.",
  upstream_unavailable: "Bubblehouse cannot be reached. Offer a retry in a moment.",
  upstream_timeout: "Bubblehouse did not answer in time; the send may still have happened. Never retry by yourself: let the shopper check the history and try again if it is missing.",
  internal_error: "A bug in the broker. Quote the request id to its operator.",
  network_error: "No answer reached the page (offline, or the origin is not allowed). For a send, retry with the same Idempotency-Key: the broker runs it once or replays its answer.",
  unexpected_response: "Something between the page and the broker answered instead of the broker. Check the baseUrl and proxies.",
};

const dateFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
const numberFormat = new Intl.NumberFormat();

function formatDate(value) {
  if (!value) return "—";
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? String(value) : dateFormat.format(date);
}

function humanize(key) {
  const text = String(key).replace(/_pts$/, " points").replace(/_/g, " ");
  return text.charAt(0).toUpperCase() + text.slice(1);
}

function channelLabel(channel) {
  return CHANNEL_LABELS[channel] || channel || "—";
}

function money(value) {
  const amount = Number(value);
  return Number.isFinite(amount) ? amount.toFixed(2) : String(value);
}

function rewardText(referral) {
  const parts = [];
  if (referral.reward_pts) parts.push(`${numberFormat.format(referral.reward_pts)} pts`);
  if (referral.reward_amount && Number(referral.reward_amount) !== 0) parts.push(money(referral.reward_amount));
  if (referral.coupon_code) parts.push(`coupon ${referral.coupon_code}`);
  return parts.length ? parts.join(" · ") : "—";
}

// ---- boot ----------------------------------------------------------------------------------

const state = {
  config: null,
  lib: null,
  client: null,
  session: null, // { customerId, email, token, expiresAt }
  tokenRequests: 0,
  lastReferralBhid: null,
};

function fatal(message) {
  const box = $("#fatal");
  box.hidden = false;
  box.replaceChildren(h("strong", {}, "The demo cannot start. "), message);
  $("#connection").textContent = "Not connected";
}

async function boot() {
  try {
    const response = await fetch("/demo/config", { cache: "no-store" });
    state.config = await response.json();
  } catch {
    fatal("The demo app did not give its configuration (/demo/config).");
    return;
  }
  const { brokerUrl, shop, version } = state.config;
  try {
    // Cross-origin module import: the broker must send CORS headers on /static/ too.
    state.lib = await import(`${brokerUrl}/static/referrals.js`);
    // The widget module brings the QR encoder (and defines <referral-widget>, unused here).
    state.widget = await import(`${brokerUrl}/static/referral-widget.js`);
  } catch {
    fatal(`referrals.js could not be loaded from ${brokerUrl}/static/referrals.js (is the broker running, and does it allow this origin?).`);
    return;
  }
  const connection = $("#connection");
  connection.replaceChildren("Broker ", h("code", {}, brokerUrl), " · shop ", h("code", {}, shop), " · ", h("code", {}, version));

  state.client = state.lib.createReferralsClient({
    baseUrl: brokerUrl,
    shop,
    version,
    getToken,
    onResponse: logResponse,
  });

  const select = $("#channel");
  for (const channel of state.lib.CHANNELS) {
    select.append(h("option", { value: channel }, channelLabel(channel)));
  }
  select.value = "whatsapp";
  select.addEventListener("change", syncDestination);
  syncDestination();

  for (const radio of document.querySelectorAll('input[name="customer"]')) {
    radio.addEventListener("change", syncCustomer);
  }
  $("#login-form").addEventListener("submit", onLogin);
  $("#logout-button").addEventListener("click", onLogout);
  $("#send-form").addEventListener("submit", onSend);
  $("#refresh-button").addEventListener("click", () => loadHistory());
  for (const button of document.querySelectorAll("[data-scenario]")) {
    button.addEventListener("click", () => runScenario(button));
  }
  document.body.dataset.ready = "true";
}

function syncDestination() {
  const isEmail = $("#channel").value === "email";
  $("#destination-field").hidden = !isEmail;
  $("#destination").required = isEmail;
}

function syncCustomer() {
  const custom = document.querySelector('input[name="customer"]:checked').value === "custom";
  $("#custom-field").hidden = !custom;
  if (custom) $("#custom-id").focus();
}

function setSignedIn(signedIn) {
  $("#send-button").disabled = !signedIn;
  $("#refresh-button").disabled = !signedIn;
  $("#logout-button").hidden = !signedIn;
  for (const button of document.querySelectorAll("[data-scenario]")) button.disabled = !signedIn;
}

// ---- tokens: the merchant's server mints them ------------------------------------------------

async function requestToken(customerId, email, ttl) {
  state.tokenRequests += 1;
  const body = { customer_id: customerId };
  if (email) body.email = email;
  if (ttl) body.ttl = ttl;
  const response = await fetch("/demo/login", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
    cache: "no-store",
  });
  if (!response.ok) throw await state.lib.ReferralsError.fromResponse(response);
  return response.json();
}

/** The token provider handed to referrals.js: cached, refreshed when asked or near expiry. */
async function getToken({ forceRefresh }) {
  const session = state.session;
  if (!session) {
    throw new state.lib.ReferralsError({ id: "missing_token", status: 401, message: "Sign a customer in first." });
  }
  const expiresSoon = session.expiresAt && Date.parse(session.expiresAt) - Date.now() < 30_000;
  if (forceRefresh || !session.token || expiresSoon) {
    const minted = await requestToken(session.customerId, session.email);
    session.token = minted.token;
    session.expiresAt = minted.expires_at;
    renderSession(forceRefresh ? "Token refreshed by the client after the broker refused the old one." : null);
  }
  return session.token;
}

function renderSession(note) {
  const s = state.session;
  const box = $("#session");
  if (!s) {
    box.replaceChildren();
    return;
  }
  box.replaceChildren(
    h("p", {}, "Signed in as ", h("span", { class: "who" }, s.customerId), s.email ? ` (${s.email})` : ""),
    h("p", { class: "help" }, `Customer token valid until ${formatDate(s.expiresAt)}.`),
    ...(note ? [h("p", { class: "help" }, note)] : []),
  );
}

async function onLogin(event) {
  event.preventDefault();
  const choice = document.querySelector('input[name="customer"]:checked').value;
  const customInput = $("#custom-id");
  const customerId = choice === "custom" ? customInput.value.trim() : choice;
  customInput.removeAttribute("aria-invalid");
  if (!customerId) {
    customInput.setAttribute("aria-invalid", "true");
    $("#session").replaceChildren(h("p", {}, "Enter a customer id."));
    customInput.focus();
    return;
  }
  const email = $("#email").value.trim();
  const button = $("#login-button");
  button.disabled = true;
  button.setAttribute("aria-busy", "true");
  try {
    const minted = await requestToken(customerId, email);
    state.session = { customerId, email, token: minted.token, expiresAt: minted.expires_at };
    renderSession();
    setSignedIn(true);
    $("#send-result").replaceChildren();
    $("#error-result").replaceChildren();
    await loadHistory();
  } catch (error) {
    state.session = null;
    setSignedIn(false);
    $("#session").replaceChildren(problemBox(error, "Sign-in failed"));
  } finally {
    button.disabled = false;
    button.removeAttribute("aria-busy");
  }
}

function onLogout() {
  state.session = null;
  setSignedIn(false);
  renderSession();
  $("#summary").replaceChildren();
  $("#history-rows").replaceChildren();
  $("#history-table").hidden = true;
  $("#move-result").replaceChildren();
  $("#history-status").textContent = "Sign in to see the customer's referrals.";
  $("#send-result").replaceChildren();
  $("#error-result").replaceChildren();
}

// ---- history -----------------------------------------------------------------------------------

let historyController = null;
let lastListInfo = null;

async function loadHistory() {
  if (!state.session) return;
  historyController?.abort();
  const controller = new AbortController();
  historyController = controller;
  const status = $("#history-status");
  status.textContent = "Loading referrals…";
  try {
    const data = await state.client.listReferrals({ signal: controller.signal });
    renderHistory(data);
    return data;
  } catch (error) {
    if (error.name === "AbortError") return;
    status.replaceChildren(problemBox(error, "Could not load the referral history"));
  } finally {
    if (historyController === controller) historyController = null;
  }
}

function cacheNote(cacheStatus) {
  if (!cacheStatus) return "";
  if (/fwd=stale/.test(cacheStatus)) return "served stale from the broker's cache while Bubblehouse fails";
  if (/;\s*hit/.test(cacheStatus)) return "from the broker's cache";
  if (/collapsed/.test(cacheStatus)) return "fetched once for several concurrent requests";
  if (/fwd=/.test(cacheStatus)) return "fresh from Bubblehouse";
  return cacheStatus;
}

function renderHistory(data) {
  const referrals = Array.isArray(data?.referrals) ? data.referrals : [];
  const summary = data && typeof data.summary === "object" && data.summary ? data.summary : null;
  const dl = $("#summary");
  dl.replaceChildren();
  if (summary) {
    for (const [key, value] of Object.entries(summary)) {
      if (value == null || typeof value === "object") continue;
      const shown = typeof value === "number" ? numberFormat.format(value) : String(value);
      dl.append(h("div", {}, h("dt", {}, humanize(key)), h("dd", {}, shown)));
    }
  }
  const rows = $("#history-rows");
  rows.replaceChildren();
  for (const referral of referrals) {
    const status = String(referral.status || "unknown");
    const isNew = state.lastReferralBhid && referral.referral_bhid === state.lastReferralBhid;
    rows.append(
      h(
        "tr",
        { class: isNew ? "new" : null, "data-referral": referral.referral_bhid || null },
        h("td", { "data-label": "Status" }, h("span", { class: `badge ${status.replace(/[^a-z0-9_-]/gi, "")}` }, humanize(status))),
        h("td", { "data-label": "Channel" }, channelLabel(referral.channel)),
        h("td", { "data-label": "Sent to", class: "mono" }, referral.destination || "—"),
        h("td", { "data-label": "Sent" }, formatDate(referral.sent_at)),
        h("td", { "data-label": "Accepted" }, formatDate(referral.accepted_at)),
        h("td", { "data-label": "Reward" }, rewardText(referral)),
        h(
          "td",
          { class: "link", "data-label": "Link" },
          // Only http(s) links become an href: a javascript: or data: URL stays text.
          state.lib.httpUrl(referral.link)
            ? h("a", { href: state.lib.httpUrl(referral.link), target: "_blank", rel: "noopener noreferrer" }, referral.link)
            : referral.link || "—",
        ),
        h("td", { class: "moves", "data-label": "Sandbox" }, moveButtons(referral, status)),
      ),
    );
  }
  $("#history-table").hidden = referrals.length === 0;
  const where = cacheNote(lastListInfo?.cacheStatus);
  const count = referrals.length === 1 ? "1 referral" : `${referrals.length} referrals`;
  $("#history-status").textContent =
    referrals.length === 0 ? "No referrals yet: send the first one." : `${count}${where ? `, ${where}` : ""}.`;
}

// ---- a referral's life (sandbox only) ------------------------------------------------------------

// What the sandbox's control API can make of a referral, as Bubblehouse would over time.
const MOVES = [
  ["qualified", "Mark qualified"],
  ["approved", "Approve"],
  ["rejected", "Reject"],
];

function moveButtons(referral, status) {
  const bhid = typeof referral.referral_bhid === "string" ? referral.referral_bhid : "";
  if (!bhid) return "—";
  const what = `${channelLabel(referral.channel)} referral sent ${formatDate(referral.sent_at)}`;
  return h(
    "div",
    { class: "move-buttons", role: "group", "aria-label": `Move on: ${what}` },
    MOVES.filter(([target]) => target !== status).map(([target, label]) =>
      h(
        "button",
        {
          type: "button",
          class: "button small",
          "data-move": target,
          // The visible label first, so voice control by the visible name still works.
          "aria-label": `${label}: ${what}`,
          onclick: (event) => moveReferral(bhid, target, event.currentTarget),
        },
        label,
      ),
    ),
  );
}

/** The demo's server changes the status at the sandbox and drops the broker's cached copy. */
async function moveReferral(bhid, target, button) {
  const out = $("#move-result");
  const group = button.closest(".move-buttons");
  for (const b of group.querySelectorAll("button")) b.disabled = true;
  button.setAttribute("aria-busy", "true");
  out.replaceChildren(h("div", { class: "notice" }, "Moving the referral on…"));
  try {
    const token = await getToken({ forceRefresh: false });
    const response = await fetch(`/demo/referrals/${encodeURIComponent(bhid)}`, {
      method: "POST",
      headers: { "Content-Type": "application/json", Authorization: `Bearer ${token}` },
      body: JSON.stringify({ status: target }),
      cache: "no-store",
    });
    if (!response.ok) throw await state.lib.ReferralsError.fromResponse(response);
    state.lastReferralBhid = bhid;
    await loadHistory();
    out.replaceChildren(
      okNote(
        `Referral now ${humanize(target).toLowerCase()}`,
        "The sandbox changed it, the demo's server called POST /invalidations, and the history was read again: the broker asked Bubblehouse instead of answering from its cache.",
      ),
    );
    // The rows were redrawn: keep keyboard focus in the same row.
    const row = [...document.querySelectorAll("#history-rows tr")].find((tr) => tr.dataset.referral === bhid);
    row?.querySelector("[data-move]")?.focus();
  } catch (error) {
    out.replaceChildren(problemBox(error, "The referral was not moved on"));
    for (const b of group.querySelectorAll("button")) b.disabled = false;
  } finally {
    button.removeAttribute("aria-busy");
  }
}

// ---- send ------------------------------------------------------------------------------------------

async function onSend(event) {
  event.preventDefault();
  const channel = $("#channel").value;
  const destinationInput = $("#destination");
  const destination = channel === "email" ? destinationInput.value.trim() : undefined;
  destinationInput.removeAttribute("aria-invalid");
  if (channel === "email" && !destinationInput.checkValidity()) {
    destinationInput.setAttribute("aria-invalid", "true");
    $("#send-result").replaceChildren(h("div", { class: "notice" }, "Enter your friend's email address."));
    destinationInput.focus();
    return;
  }
  await send({ channel, destination });
}

async function send(options) {
  const button = $("#send-button");
  const result = $("#send-result");
  button.setAttribute("aria-busy", "true");
  result.replaceChildren(h("div", { class: "notice" }, "Sending…"));
  try {
    // A double click calls this twice; referrals.js joins the second call to the first.
    const answer = await state.client.sendReferral(options);
    state.lastReferralBhid = answer?.referral?.referral_bhid || null;
    result.replaceChildren(successBox(answer));
    await loadHistory();
  } catch (error) {
    result.replaceChildren(problemBox(error, "The referral was not sent", options));
  } finally {
    button.removeAttribute("aria-busy");
  }
}

function successBox(answer) {
  const referral = answer?.referral || {};
  return h(
    "div",
    { class: "notice ok" },
    h("h3", {}, answer?.message || "Referral sent"),
    h("p", {}, `Channel: ${channelLabel(referral.channel)}`, referral.destination ? ` · to ${referral.destination}` : ""),
    shareAction(answer?.share_action, referral),
  );
}

// share_action is opaque (Bubblehouse does not document ReferralShareAction1): only the shapes
// isKnownShareAction knows are acted on; anything else gets a plain link, and only http(s)
// URLs ever become an href.
function shareAction(action, referral) {
  const { httpUrl, isKnownShareAction } = state.lib;
  if (action == null || (isKnownShareAction(action) && action.type === "none")) {
    return h("p", { class: "share" }, "Nothing more to do: Bubblehouse takes it from here.");
  }
  if (!isKnownShareAction(action)) {
    const url = httpUrl(action?.url) || httpUrl(action?.link) || httpUrl(referral.link);
    const type = typeof action?.type === "string" ? action.type : "unknown";
    return h(
      "div",
      { class: "share", "data-share": "unknown" },
      h("p", {}, `A share action this page does not know ("${type}"). Your referral link:`),
      url ? h("p", {}, h("a", { href: url, target: "_blank", rel: "noopener noreferrer" }, url)) : h("p", {}, "—"),
    );
  }
  const link = httpUrl(action.link) || httpUrl(action.url) || httpUrl(referral.link);
  switch (action.type) {
    case "open_url":
      if (!httpUrl(action.url)) return link ? copyBox(link) : h("p", { class: "share" }, "—");
      return h(
        "div",
        { class: "share" },
        h("p", {}, `Finish sharing in ${channelLabel(referral.channel)}:`),
        h(
          "p",
          {},
          h("a", { class: "button primary", href: httpUrl(action.url), target: "_blank", rel: "noopener noreferrer" }, `Open ${channelLabel(referral.channel)} ↗`),
        ),
      );
    case "copy_link":
      return copyBox(link);
    default: // show_qr_code
      return qrBox(typeof action.data === "string" && action.data ? action.data : link);
  }
}

function copyBox(link) {
  const input = h("input", { readonly: true, value: link, "aria-label": "Referral link" });
  const status = h("span", { role: "status", "aria-live": "polite" });
  const copy = async () => {
    try {
      await navigator.clipboard.writeText(link);
      status.textContent = "Link copied to the clipboard.";
    } catch {
      input.focus();
      input.select();
      status.textContent = "Copy is blocked here: the link is selected, press Ctrl+C (⌘C).";
    }
  };
  const box = h(
    "div",
    { class: "share" },
    h("label", {}, "Your referral link"),
    input,
    h("div", { class: "actions" }, h("button", { type: "button", class: "button", onclick: copy }, "Copy link"), status),
  );
  queueMicrotask(copy); // the share action asks for the copy; do it at once, as the block would
  return box;
}

/** The link as a real QR code, drawn in text by the widget's own encoder (no network call). */
function qrText(link) {
  const modules = state.widget.qrModules(link);
  const quiet = new Array(modules.length + 4).fill(false);
  const rows = [quiet, quiet, ...modules.map((row) => [false, false, ...row, false, false]), quiet, quiet];
  return rows.map((row) => row.map((dark) => (dark ? "██" : "  ")).join("")).join("\n");
}

function qrBox(link) {
  return h(
    "div",
    { class: "share qr" },
    h("pre", { "aria-hidden": "true" }, qrText(link || "")),
    h(
      "div",
      {},
      h("p", {}, "Show this code to your friend."),
      h("p", { class: "qr-link mono" }, link || ""),
      h("p", { class: "help" }, "A scannable QR code, drawn by referral-widget.js's encoder with no network call."),
    ),
  );
}

// ---- error boxes ---------------------------------------------------------------------------------

function problemBox(error, heading, retrySend) {
  const isReferralsError = state.lib && error instanceof state.lib.ReferralsError;
  const e = isReferralsError
    ? error
    : { id: "internal_error", status: 0, message: String(error?.message || error), retryable: false, requestId: null, retryAfter: null };
  const rows = [
    ["id", h("code", {}, e.id)],
    ["status", String(e.status)],
    ["message", e.message],
    // Bubblehouse's own words (for Refer2, the shop's text for shoppers): show these first.
    ...(e.upstreamMessage ? [["shop's words", e.upstreamMessage]] : []),
    ["request id", e.requestId ? h("code", {}, e.requestId) : "—"],
    ["retryable", e.retryable ? "yes" : "no"],
    ["retry after", e.retryAfter != null ? `${e.retryAfter} s` : "—"],
  ];
  if (e.reason) rows.push(["reason", h("code", {}, e.reason)]);
  if (e.field) rows.push(["field", h("code", {}, e.field)]);
  if (e.upstreamStatus) rows.push(["upstream status", String(e.upstreamStatus)]);
  if (e.idempotencyKey) rows.push(["idempotency key", h("code", {}, e.idempotencyKey)]);
  if (e.replayed) rows.push(["replayed", "yes: the broker's recorded answer for this key"]);
  const advice = ADVICE[e.id];
  // After a network error the same key is right (the broker runs the send once, or replays
  // what it answered); after an answer, the key replays that answer, so trying again is new.
  const sameKey = e.id === "network_error" && e.idempotencyKey;
  const canRetrySend = retrySend && e.retryable;
  return h(
    "div",
    { class: "problem", "data-error-id": e.id },
    h("h3", {}, heading),
    e.upstreamMessage ? h("p", { class: "upstream-message" }, h("strong", {}, "The shop says: "), e.upstreamMessage) : null,
    h("dl", {}, rows.map(([term, value]) => [h("dt", {}, term), h("dd", { "data-field": term }, value)])),
    advice ? h("p", { class: "advice" }, h("strong", {}, "What the storefront does: "), advice) : null,
    canRetrySend
      ? h(
          "div",
          { class: "actions" },
          h(
            "button",
            {
              type: "button",
              class: "button",
              onclick: () => send(sameKey ? { ...retrySend, idempotencyKey: e.idempotencyKey } : { ...retrySend }),
            },
            sameKey ? "Retry this send (same Idempotency-Key)" : "Try again",
          ),
        )
      : null,
  );
}

// ---- explain errors ---------------------------------------------------------------------------

async function setFault(fault) {
  const response = await fetch("/demo/fault", {
    method: fault ? "POST" : "DELETE",
    headers: fault ? { "Content-Type": "application/json" } : {},
    body: fault ? JSON.stringify(fault) : undefined,
  });
  if (!response.ok) throw await state.lib.ReferralsError.fromResponse(response);
}

function spoil(token) {
  // Change the signature's first character: still a well-formed JWT, but it no longer verifies.
  const cut = token.lastIndexOf(".") + 1;
  const first = token.charAt(cut);
  return token.slice(0, cut) + (first === "A" ? "B" : "A") + token.slice(cut + 1);
}

async function directFetch(fn, body, token) {
  const { brokerUrl, shop, version } = state.config;
  return fetch(`${brokerUrl}/api/${version}/${shop}/${fn}`, {
    method: "POST",
    headers: { "Content-Type": "application/json", Authorization: `Bearer ${token}` },
    body: JSON.stringify(body),
  });
}

function note(title, ...lines) {
  return h("div", { class: "notice" }, h("h3", {}, title), lines.map((line) => h("p", {}, line)));
}

function okNote(title, ...lines) {
  return h("div", { class: "notice ok" }, h("h3", {}, title), lines.map((line) => h("p", {}, line)));
}

const SCENARIOS = {
  async identity(out) {
    const other = state.session.customerId === "alice" ? "bob" : "alice";
    out.push(note("Mismatched identity", `The page asks for the history of "${other}" with ${state.session.customerId}'s token, using fetch directly.`));
    const token = await getToken({ forceRefresh: false });
    const response = await directFetch("CustomerReferrals2", { customer: { shopid: other } }, token);
    const error = await state.lib.ReferralsError.fromResponse(response);
    out.push(problemBox(error, `HTTP ${response.status}: the broker refused before calling Bubblehouse`));
  },

  async token(out) {
    const token = spoil(await getToken({ forceRefresh: false }));
    const response = await directFetch("CustomerReferrals2", {}, token);
    out.push(problemBox(await state.lib.ReferralsError.fromResponse(response), "A spoiled token, sent with fetch directly"));
    // The same with referrals.js: it asks getToken for a fresh token once and retries.
    const calls = [];
    const client = state.lib.createReferralsClient({
      ...state.config,
      baseUrl: state.config.brokerUrl,
      getToken: async ({ forceRefresh }) => {
        calls.push(forceRefresh);
        return forceRefresh ? getToken({ forceRefresh: true }) : token;
      },
      onResponse: logResponse,
    });
    const data = await client.listReferrals();
    out.push(
      okNote(
        "The same call through referrals.js succeeds",
        `getToken was called ${calls.length} times (forceRefresh: ${calls.join(", ")}); the retry with the fresh token got ${data.referrals?.length ?? 0} referrals.`,
        "Tokens that expired are refused the same way (invalid_token, reason expired) and recovered the same way.",
      ),
    );
  },

  async "rate-limit"(out) {
    await setFault({ rate_limit: true, times: 1, functions: ["Refer2"] });
    out.push(note("Sandbox rate limiting", "The sandbox answers the next Refer2 with 429, as Bubblehouse does when a customer sends too fast."));
    await expectError(out, () => state.client.sendReferral({ channel: "custom-social" }), "Refer2 was rate limited");
  },

  async failing(out) {
    out.push(note("Sandbox failing", "The sandbox answers the next CustomerReferrals2 and the next Refer2 with 500."));
    await setFault({ status: 500, times: 1, functions: ["CustomerReferrals2"] });
    try {
      const data = await state.client.listReferrals();
      const cacheStatus = lastListInfo?.cacheStatus || "";
      const how = /fwd=stale/.test(cacheStatus)
        ? "served stale: Bubblehouse failed, so the broker answered with its older copy."
        : /;\s*hit/.test(cacheStatus)
          ? "answered from the broker's fresh cache; Bubblehouse was not even asked. Once the copy is older than BROKER_CACHE_TTL, the broker serves it stale while Bubblehouse fails."
          : "answered by Bubblehouse.";
      out.push(
        okNote(
          "The history read still worked",
          `CustomerReferrals2 (Cache-Status: ${cacheStatus || "none"}): ${data.referrals?.length ?? 0} referrals, ${how}`,
        ),
      );
    } catch (error) {
      out.push(problemBox(error, "The history read failed (no cached copy to serve)"));
    }
    await setFault({ status: 500, times: 1, functions: ["Refer2"] });
    await expectError(out, () => state.client.sendReferral({ channel: "custom-social" }), "Refer2 failed upstream", { channel: "custom-social" });
  },

  async slow(out) {
    await setFault({ delay: 2, times: 1, functions: ["Refer2"] });
    const started = performance.now();
    const answer = await state.client.sendReferral({ channel: "custom-social" });
    const seconds = ((performance.now() - started) / 1000).toFixed(1);
    out.push(okNote("Slow, but within the broker's timeout", `Refer2 answered after ${seconds} s: ${answer.message || "referral sent"}.`, "Show progress while a send is running; keep the button from sending twice."));
    await loadHistory();
  },

  async timeout(out) {
    await setFault({ delay: 8, times: 1, functions: ["Refer2"] });
    out.push(note("Sandbox too slow", "The sandbox waits 8 s before answering the next Refer2; the broker gives up at its upstream timeout."));
    const started = performance.now();
    try {
      const answer = await state.client.sendReferral({ channel: "custom-social" });
      out.push(okNote("It answered after all", `After ${((performance.now() - started) / 1000).toFixed(1)} s: ${answer.message || "referral sent"} (the broker's timeout is longer than 8 s).`));
    } catch (error) {
      out.push(problemBox(error, `Refer2 gave up after ${((performance.now() - started) / 1000).toFixed(1)} s`, { channel: "custom-social" }));
    }
  },
};

async function expectError(out, action, heading, retrySend) {
  try {
    await action();
    out.push(note("No error this time", "The call succeeded (was the sandbox fault already used up?)."));
  } catch (error) {
    out.push(problemBox(error, heading, retrySend));
  }
}

async function runScenario(button) {
  const name = button.dataset.scenario;
  const result = $("#error-result");
  const buttons = document.querySelectorAll("[data-scenario]");
  for (const b of buttons) b.disabled = true;
  button.setAttribute("aria-busy", "true");
  result.replaceChildren(h("div", { class: "notice" }, "Running…"));
  const out = [];
  try {
    await SCENARIOS[name](out);
  } catch (error) {
    out.push(problemBox(error, "Unexpected failure of the demo"));
  } finally {
    try {
      await setFault(null);
    } catch {
      // The sandbox may be gone; the result box says what happened.
    }
    result.replaceChildren(...out);
    button.removeAttribute("aria-busy");
    for (const b of buttons) b.disabled = !state.session;
    result.dataset.done = name;
  }
}

// ---- request log -------------------------------------------------------------------------------

function logResponse(info) {
  if (info.function === "CustomerReferrals2" && info.ok) lastListInfo = info;
  const list = $("#log");
  const time = new Date().toLocaleTimeString();
  list.prepend(
    h(
      "li",
      {},
      h("span", { class: "muted" }, time),
      h("code", {}, info.function),
      h("span", { class: info.ok ? "status-ok" : "status-bad" }, String(info.status)),
      info.cacheStatus ? h("span", {}, `Cache-Status: ${info.cacheStatus}`) : null,
      info.rateLimit ? h("span", { class: "muted" }, `RateLimit: ${info.rateLimit}`) : null,
      info.requestId ? h("span", { class: "muted" }, `request ${info.requestId}`) : null,
    ),
  );
  while (list.children.length > 30) list.lastElementChild.remove();
}

boot();
