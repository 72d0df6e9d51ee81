// referral-widget.js: <referral-widget>, a drop-in referral panel built on referrals.js.
//
//   <script type="module" src="https://broker.example/static/1.0.0/referral-widget.js"
//           integrity="sha384-..." crossorigin="anonymous"></script>
//   <referral-widget broker="https://broker.example" shop="my-shop"
//                    token-url="/account/referral-token"></referral-widget>
//
// No dependencies beyond referrals.js (imported beside this file); the QR code is drawn by the
// small encoder at the end of this file, with no network call. Types: referral-widget.d.ts.

import {
  CHANNELS,
  DEFAULT_VERSION,
  createReferralsClient,
  httpUrl,
  isKnownShareAction,
} from "./referrals.js";

const CHANNEL_NAMES = {
  email: "Email", sms: "SMS", facebook: "Facebook", messenger: "Messenger",
  whatsapp: "WhatsApp", twitter: "X (Twitter)", instagram: "Instagram", threads: "Threads",
  telegram: "Telegram", "qr-code": "QR code",
};

/** The built-in wording, by language. `{name}` placeholders are filled in. */
export const MESSAGES = Object.freeze({
  en: {
    title: "Refer a friend", channel: "Share by", destination: "Friend's email",
    send: "Send invitation", sending: "Sending…", sent: "Your invitation is ready.",
    loading: "Loading your referrals…", loaded: "{count} referrals", history: "Your referrals",
    empty: "You have not referred anyone yet.", share: "Share…", copy: "Copy link",
    copied: "Link copied.", open: "Open {channel}", link: "Your referral link",
    qr: "QR code for your referral link", sentOn: "Sent {date}", acceptedOn: "Joined {date}",
    points: "{points} points", reward: "Reward: {reward}", coupon: "Code {code}",
    "custom-personal": "Personal message", "custom-social": "Social post",
    "status.invited": "Invited", "status.qualified": "Qualified", "status.approved": "Approved",
    "status.rejected": "Rejected", "status.expired": "Expired", "status.pending": "Pending",
    "error.signin": "Please sign in to refer your friends.",
    "error.destination": "Please enter a valid email address for your friend.",
    "error.rate": "Too many attempts. Please try again in {seconds} seconds.",
    "error.network": "The referral service can't be reached. Check your connection and try again.",
    "error.unavailable": "Referrals are unavailable right now. Please try again in a moment.",
    "error.generic": "Something went wrong. Please try again.",
  },
  de: {
    title: "Freunde werben", channel: "Teilen per", destination: "E-Mail-Adresse deines Freundes",
    send: "Einladung senden", sending: "Wird gesendet…", sent: "Deine Einladung ist bereit.",
    loading: "Deine Empfehlungen werden geladen…", loaded: "{count} Empfehlungen",
    history: "Deine Empfehlungen", empty: "Du hast noch niemanden geworben.",
    share: "Teilen…", copy: "Link kopieren", copied: "Link kopiert.", open: "{channel} öffnen",
    link: "Dein Empfehlungslink", qr: "QR-Code für deinen Empfehlungslink",
    sentOn: "Gesendet am {date}", acceptedOn: "Beigetreten am {date}", points: "{points} Punkte",
    reward: "Prämie: {reward}", coupon: "Code {code}",
    "custom-personal": "Persönliche Nachricht", "custom-social": "Beitrag",
    "status.invited": "Eingeladen", "status.qualified": "Qualifiziert",
    "status.approved": "Bestätigt", "status.rejected": "Abgelehnt",
    "status.expired": "Abgelaufen", "status.pending": "Ausstehend",
    "error.signin": "Bitte melde dich an, um Freunde zu werben.",
    "error.destination": "Bitte gib eine gültige E-Mail-Adresse ein.",
    "error.rate": "Zu viele Versuche. Bitte versuche es in {seconds} Sekunden erneut.",
    "error.network": "Der Empfehlungsdienst ist nicht erreichbar. Prüfe deine Verbindung.",
    "error.unavailable": "Empfehlungen sind gerade nicht verfügbar. Bitte versuche es gleich noch einmal.",
    "error.generic": "Etwas ist schiefgelaufen. Bitte versuche es erneut.",
  },
  fr: {
    title: "Parrainer un ami", channel: "Partager par", destination: "E-mail de votre ami",
    send: "Envoyer l'invitation", sending: "Envoi…", sent: "Votre invitation est prête.",
    loading: "Chargement de vos parrainages…", loaded: "{count} parrainages",
    history: "Vos parrainages", empty: "Vous n'avez encore parrainé personne.",
    share: "Partager…", copy: "Copier le lien", copied: "Lien copié.", open: "Ouvrir {channel}",
    link: "Votre lien de parrainage", qr: "QR code de votre lien de parrainage",
    sentOn: "Envoyé le {date}", acceptedOn: "Inscrit le {date}", points: "{points} points",
    reward: "Récompense : {reward}", coupon: "Code {code}",
    "custom-personal": "Message personnel", "custom-social": "Publication",
    "status.invited": "Invité", "status.qualified": "Qualifié", "status.approved": "Validé",
    "status.rejected": "Refusé", "status.expired": "Expiré", "status.pending": "En attente",
    "error.signin": "Connectez-vous pour parrainer vos amis.",
    "error.destination": "Saisissez une adresse e-mail valide.",
    "error.rate": "Trop de tentatives. Réessayez dans {seconds} secondes.",
    "error.network": "Le service de parrainage est injoignable. Vérifiez votre connexion.",
    "error.unavailable": "Le parrainage est indisponible pour le moment. Réessayez dans un instant.",
    "error.generic": "Une erreur est survenue. Veuillez réessayer.",
  },
});

const STYLE = `
:host { display: block; --_bg: #ffffff; --_fg: #1f1f1f; --_muted: #555555; --_border: #c4c7cc;
  --_accent: #0b57d0; --_accent-fg: #ffffff; --_error: #b3261e; --_success: #146c2e;
  --_row: #f4f6f8; color: var(--referral-widget-fg, var(--_fg));
  font: var(--referral-widget-font, 15px/1.5 system-ui, sans-serif); }
@media (prefers-color-scheme: dark) { :host { --_bg: #1f1f1f; --_fg: #ececec; --_muted: #c2c2c2;
  --_border: #5f6368; --_accent: #a8c7fa; --_accent-fg: #062e6f; --_error: #ffb4ab;
  --_success: #8fd69f; --_row: #2b2b2b; } }
:host([hidden]), [hidden] { display: none !important; }
.panel { background: var(--referral-widget-bg, var(--_bg)); border: 1px solid var(--referral-widget-border, var(--_border));
  border-radius: var(--referral-widget-radius, 12px); padding: 1rem 1.25rem; }
h2 { font-size: 1.2em; margin: 0 0 .75rem; } h3 { font-size: 1em; margin: 1.25rem 0 .5rem; }
form { display: flex; flex-wrap: wrap; gap: .75rem; align-items: end; }
label { display: flex; flex-direction: column; gap: .25rem; font-weight: 600; font-size: .9em; }
select, input, button, .button { font: inherit; border-radius: 8px; padding: .45rem .7rem; }
select, input { border: 1px solid var(--referral-widget-border, var(--_border)); color: inherit;
  background: var(--referral-widget-bg, var(--_bg)); min-width: 12rem; }
input[aria-invalid="true"] { border-color: var(--referral-widget-error, var(--_error)); }
button, .button { border: 1px solid var(--referral-widget-accent, var(--_accent)); cursor: pointer;
  background: var(--referral-widget-accent, var(--_accent)); color: var(--referral-widget-accent-fg, var(--_accent-fg));
  font-weight: 600; text-decoration: none; display: inline-block; }
button.secondary, .button.secondary { background: transparent; color: inherit; }
button[aria-disabled="true"] { opacity: .7; cursor: progress; }
:focus-visible { outline: 3px solid var(--referral-widget-accent, var(--_accent)); outline-offset: 2px; }
.message:empty { display: none; } .message { margin: .75rem 0 0; }
.message.error { color: var(--referral-widget-error, var(--_error)); font-weight: 600; }
.share { display: flex; flex-wrap: wrap; gap: .5rem; align-items: center; margin-top: .5rem; }
.share:empty { display: none; } .share input { flex: 1 1 16rem; }
.qr { background: #fff; padding: 8px; border-radius: 8px; width: 168px; height: 168px; }
ul { list-style: none; margin: 0; padding: 0; display: grid; gap: .5rem; }
li { background: var(--_row); border-radius: 8px; padding: .5rem .75rem; display: flex;
  flex-wrap: wrap; gap: .25rem 1rem; align-items: baseline; }
li.new { outline: 2px solid var(--referral-widget-accent, var(--_accent)); animation: arrive .6s ease-out; }
.status { font-weight: 700; } .status[data-status="approved"] { color: var(--referral-widget-success, var(--_success)); }
.status[data-status="rejected"] { color: var(--referral-widget-error, var(--_error)); }
.muted { color: var(--referral-widget-muted, var(--_muted)); }
@keyframes arrive { from { transform: translateY(-4px); } to { transform: none; } }
@media (prefers-reduced-motion: reduce) { li.new { animation: none; } * { transition: none !important; } }
`;

// Monetary strings ("10.000000") for display: two decimals at most, never through a float.
function amount(value) {
  const [whole, fraction = ""] = String(value).split(".");
  const cents = fraction.replace(/0+$/, "");
  return cents ? `${whole}.${fraction.slice(0, 2).padEnd(2, "0")}` : whole;
}

function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value == null || value === false) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  node.append(...children.flat().filter((child) => child != null && child !== false));
  return node;
}

function fill(text, values = {}) {
  return String(text).replace(/\{(\w+)\}/g, (whole, key) => (key in values ? String(values[key]) : whole));
}

/** A token provider that asks the merchant's own URL (same origin, with its cookies). */
function tokenFromUrl(url) {
  let cached = null;
  return async ({ forceRefresh }) => {
    const fresh = cached && (!cached.expiresAt || cached.expiresAt - Date.now() > 30_000);
    if (forceRefresh || !fresh) {
      const response = await fetch(url, { credentials: "same-origin", cache: "no-store", headers: { Accept: "application/json" } });
      const body = response.ok ? await response.json().catch(() => null) : null;
      if (!body || typeof body.token !== "string") {
        cached = null;
        const failure = new Error(`token-url answered HTTP ${response.status} without a token`);
        failure.id = "missing_token";
        throw failure;
      }
      cached = { token: body.token, expiresAt: Date.parse(body.expires_at || "") || null };
    }
    return cached.token;
  };
}

// Importable where there is no DOM (Node, for the QR encoder and its tests).
const Element = globalThis.HTMLElement ?? class {};

export class ReferralWidget extends Element {
  static observedAttributes = ["broker", "shop", "version", "token-url", "lang", "channels"];

  #client = null;
  #getToken = null;
  #messages = {};
  #referrals = [];
  #sentRow = null; // the referral of the latest send, highlighted, kept until the list has it
  #sending = false;
  #retryKey = null; // the Idempotency-Key of a send whose answer was lost, for one safe retry
  #pending = false;
  #ui = null;

  constructor() {
    super();
    this.attachShadow({ mode: "open" });
  }

  /** A token provider for pages that mint tokens otherwise than through `token-url`. */
  get getToken() { return this.#getToken; }
  set getToken(provider) { this.#getToken = typeof provider === "function" ? provider : null; this.#changed(); }

  /** The merchant's own wording, merged over the built-in messages of the current language. */
  get messages() { return this.#messages; }
  set messages(value) { this.#messages = value && typeof value === "object" ? { ...value } : {}; this.#changed(); }

  /** The referrals shown, newest first as Bubblehouse ordered them. */
  get referrals() { return this.#referrals.slice(); }

  connectedCallback() { this.#changed(); }
  attributeChangedCallback() { this.#changed(); }

  /** Read the history again from the broker. */
  refresh() { return this.#load(); }

  get language() {
    const wanted = (this.getAttribute("lang") || this.closest("[lang]")?.getAttribute("lang")
      || document.documentElement.lang || navigator.language || "en").toLowerCase();
    return MESSAGES[wanted.slice(0, 2)] ? wanted.slice(0, 2) : "en";
  }

  t(key, values) {
    const text = this.#messages[key] ?? MESSAGES[this.language][key] ?? MESSAGES.en[key] ?? key;
    return fill(text, values);
  }

  get channels() {
    const raw = this.getAttribute("channels");
    const listed = raw ? raw.split(",").map((c) => c.trim()).filter((c) => /^[a-z0-9][a-z0-9-]{0,63}$/.test(c)) : [];
    return listed.length ? listed : [...CHANNELS];
  }

  // Attribute and property changes arrive in bursts: rebuild once, after the burst.
  #changed() {
    if (this.#pending || !this.isConnected) return;
    this.#pending = true;
    queueMicrotask(() => {
      this.#pending = false;
      if (!this.isConnected) return;
      this.#render();
      this.#client = this.#makeClient();
      if (this.#client) this.#load();
    });
  }

  #makeClient() {
    const broker = this.getAttribute("broker");
    const shop = this.getAttribute("shop");
    const tokenUrl = this.getAttribute("token-url");
    const getToken = this.#getToken || (tokenUrl ? tokenFromUrl(tokenUrl) : null);
    if (!broker || !shop || !getToken) return null;
    return createReferralsClient({ baseUrl: broker, shop, version: this.getAttribute("version") || DEFAULT_VERSION, getToken });
  }

  #label(channel) {
    if (CHANNEL_NAMES[channel]) return CHANNEL_NAMES[channel];
    return channel.startsWith("custom-") ? this.t(channel) : channel;
  }

  #render() {
    const t = (key, values) => this.t(key, values);
    const channel = h("select", { id: "channel", part: "channel", name: "channel", onchange: () => this.#syncDestination() },
      this.channels.map((c) => h("option", { value: c }, this.#label(c) === c ? c.replace(/-/g, " ") : this.#label(c))));
    const destination = h("input", { id: "destination", part: "destination", name: "destination", type: "email", autocomplete: "off", inputmode: "email", spellcheck: "false" });
    const send = h("button", { type: "submit", part: "send" }, t("send"));
    const status = h("p", { class: "message", part: "message", role: "status" });
    const alert = h("p", { class: "message error", part: "message", role: "alert", id: "alert" });
    const share = h("div", { class: "share", part: "share" });
    const list = h("ul", { part: "history", "aria-labelledby": "history-title", "aria-busy": "true" });
    const form = h("form", { part: "form", novalidate: true, onsubmit: (event) => { event.preventDefault(); this.#send(); } },
      h("label", { part: "label" }, t("channel"), channel),
      h("label", { part: "label", class: "destination" }, t("destination"), destination),
      send);
    this.shadowRoot.replaceChildren(
      h("style", {}, STYLE),
      h("section", { class: "panel", part: "panel", "aria-labelledby": "title", lang: this.language },
        h("h2", { id: "title", part: "title" }, t("title")), form, status, alert, share,
        h("h3", { id: "history-title" }, t("history")), list));
    this.#ui = { channel, destination, send, status, alert, share, list, destinationLabel: form.querySelector(".destination") };
    this.#syncDestination();
    this.#renderHistory();
  }

  #syncDestination() {
    const email = this.#ui.channel.value === "email";
    this.#ui.destinationLabel.hidden = !email;
    this.#ui.destination.required = email;
  }

  #say(text, { error = false } = {}) {
    this.#ui.status.textContent = error ? "" : text;
    this.#ui.alert.textContent = error ? text : "";
  }

  #emit(name, detail) {
    this.dispatchEvent(new CustomEvent(name, { detail, bubbles: true, composed: true }));
  }

  async #load({ quiet = false } = {}) {
    const client = this.#client;
    if (!client) return;
    this.#ui.list.setAttribute("aria-busy", "true");
    if (!quiet) this.#say(this.t("loading"));
    let answer;
    try {
      answer = await client.listReferrals();
    } catch (error) {
      // A read is safe to repeat: once, after a short pause, when the broker says it may help.
      if (error?.retryable && (error.retryAfter ?? 1) <= 5) {
        await new Promise((resolve) => setTimeout(resolve, 1000 * (error.retryAfter ?? 1)));
        try { answer = await client.listReferrals(); } catch (again) { error = again; }
      }
      if (!answer) {
        if (client === this.#client) this.#fail(error);
        return;
      }
    }
    if (client !== this.#client) return;
    const fresh = Array.isArray(answer?.referrals) ? answer.referrals : [];
    // Read-your-writes even against an older broker: a row just sent stays until the list has it.
    const sent = this.#sentRow;
    const missing = sent && !fresh.some((r) => r.referral_bhid === sent.referral_bhid);
    this.#referrals = missing ? [sent, ...fresh] : fresh.slice();
    this.#renderHistory();
    if (!quiet) this.#say(this.t("loaded", { count: this.#referrals.length }));
    this.#emit("referrals-loaded", { referrals: fresh, response: answer });
  }

  #renderHistory() {
    const { list } = this.#ui;
    const date = (value) => {
      const parsed = Date.parse(value || "");
      return Number.isNaN(parsed) ? null : new Intl.DateTimeFormat(this.language, { dateStyle: "medium" }).format(parsed);
    };
    list.replaceChildren(...this.#referrals.map((r) => {
      const status = String(r.status ?? "");
      const reward = [r.reward_pts ? this.t("points", { points: r.reward_pts }) : null,
        r.reward_amount ? amount(r.reward_amount) : null,
        r.coupon_code ? this.t("coupon", { code: r.coupon_code }) : null].filter(Boolean).join(", ");
      const sent = date(r.sent_at);
      const accepted = date(r.accepted_at);
      const isNew = this.#sentRow && r.referral_bhid === this.#sentRow.referral_bhid;
      return h("li", { part: "referral", class: isNew ? "new" : null, "data-status": status },
        h("span", { class: "status", "data-status": status }, this.t(`status.${status}`) === `status.${status}` ? status : this.t(`status.${status}`)),
        h("span", {}, this.#label(String(r.channel ?? ""))),
        r.destination ? h("span", { class: "muted" }, String(r.destination)) : null,
        sent ? h("span", { class: "muted" }, this.t("sentOn", { date: sent })) : null,
        accepted ? h("span", { class: "muted" }, this.t("acceptedOn", { date: accepted })) : null,
        reward ? h("span", {}, this.t("reward", { reward })) : null);
    }));
    if (!this.#referrals.length) list.append(h("li", { class: "muted" }, this.t("empty")));
    list.setAttribute("aria-busy", "false");
  }

  async #send() {
    const client = this.#client;
    const { channel, destination, send } = this.#ui;
    if (!client || this.#sending) return;
    const body = { channel: channel.value };
    if (body.channel === "email") body.destination = destination.value.trim();
    const retry = this.#retryKey && this.#retryKey.channel === body.channel && this.#retryKey.destination === body.destination;
    if (retry) body.idempotencyKey = this.#retryKey.key;
    this.#sending = true;
    send.setAttribute("aria-disabled", "true");
    destination.removeAttribute("aria-invalid");
    this.#ui.share.replaceChildren();
    this.#say(this.t("sending"));
    try {
      const answer = await client.sendReferral(body);
      this.#retryKey = null;
      this.#sent(answer);
    } catch (error) {
      // After a lost answer, the next click retries the same send with its key: never twice.
      this.#retryKey = error?.id === "network_error" && error.idempotencyKey
        ? { key: error.idempotencyKey, channel: body.channel, destination: body.destination } : null;
      this.#fail(error);
    } finally {
      this.#sending = false;
      send.removeAttribute("aria-disabled");
    }
  }

  #sent(answer) {
    const referral = answer && typeof answer.referral === "object" && answer.referral ? answer.referral : null;
    this.#say(typeof answer?.message === "string" && answer.message ? answer.message : this.t("sent"));
    this.#ui.destination.value = "";
    if (referral) {
      this.#sentRow = referral;
      this.#referrals = [referral, ...this.#referrals.filter((r) => r.referral_bhid !== referral.referral_bhid)];
      this.#renderHistory();
    }
    this.#showShare(answer?.share_action, referral);
    this.#emit("referral-sent", answer);
    this.#load({ quiet: true });
  }

  #showShare(action, referral) {
    const link = httpUrl(referral?.link);
    const items = [];
    const linkBox = (url) => h("input", { readonly: true, value: url, "aria-label": this.t("link"), part: "link" });
    if (isKnownShareAction(action)) {
      if (action.type === "open_url" && httpUrl(action.url)) {
        items.push(h("a", { class: "button", part: "share-link", href: httpUrl(action.url), target: "_blank", rel: "noopener noreferrer" },
          this.t("open", { channel: this.#label(referral?.channel) })));
      } else if (action.type === "copy_link" && httpUrl(action.link)) {
        const url = httpUrl(action.link);
        if (typeof navigator.share === "function") {
          items.push(h("button", { type: "button", onclick: () => navigator.share({ url, text: typeof action.text === "string" ? action.text : undefined }).catch(() => {}) }, this.t("share")));
        }
        const box = linkBox(url);
        items.push(box, h("button", { type: "button", class: "secondary", onclick: () => this.#copy(url, box) }, this.t("copy")));
      } else if (action.type === "show_qr_code") {
        const url = httpUrl(action.link) || link;
        const data = typeof action.data === "string" && action.data ? action.data : url;
        if (data) items.push(qrSvg(data, this.t("qr")));
        if (url) items.push(linkBox(url));
      }
    } else if (action != null || link) {
      // A shape this widget does not know (Bubblehouse may send others): a plain link.
      const url = httpUrl(action?.url) || httpUrl(action?.link) || link;
      if (url) items.push(h("a", { href: url, target: "_blank", rel: "noopener noreferrer", part: "share-link" }, url));
    }
    this.#ui.share.replaceChildren(...items);
  }

  async #copy(url, box) {
    try {
      await navigator.clipboard.writeText(url);
    } catch {
      box.select();
      document.execCommand?.("copy");
    }
    this.#say(this.t("copied"));
  }

  #fail(error) {
    const id = error?.id;
    let text = error?.upstreamMessage; // Bubblehouse's (the shop's own) words come first
    if (!text) {
      if (id === "missing_token" || id === "invalid_token") text = this.t("error.signin");
      else if (id === "invalid_input" && error.field === "destination") text = this.t("error.destination");
      else if (id === "rate_limit_exceeded") text = this.t("error.rate", { seconds: error.retryAfter ?? 1 });
      else if (id === "network_error") text = this.t("error.network");
      else if (/^upstream_/.test(id || "")) text = this.t("error.unavailable");
      else text = this.t("error.generic");
    }
    if (id === "invalid_input" && error.field === "destination") {
      this.#ui.destination.setAttribute("aria-invalid", "true");
      this.#ui.destination.setAttribute("aria-describedby", "alert");
      this.#ui.destination.focus();
    }
    this.#say(text, { error: true });
    this.#ui.list.setAttribute("aria-busy", "false");
    const problem = error?.body || { id: id || "internal_error", status: error?.status ?? 0, message: String(error?.message || error) };
    this.#emit("referral-error", problem);
  }
}

if (typeof customElements !== "undefined" && !customElements.get("referral-widget")) {
  customElements.define("referral-widget", ReferralWidget);
}

// --- QR code: byte mode, error correction level M, versions 1-10 (up to 213 bytes) ---------

// Per version: EC codewords per block, then [blocks, data codewords] for groups 1 and 2.
const QR_BLOCKS = [null, [10, 1, 16, 0, 0], [16, 1, 28, 0, 0], [26, 1, 44, 0, 0], [18, 2, 32, 0, 0],
  [24, 2, 43, 0, 0], [16, 4, 27, 0, 0], [18, 4, 31, 0, 0], [22, 2, 38, 2, 39], [22, 3, 36, 2, 37],
  [26, 4, 43, 1, 44]];
const QR_ALIGN = [null, [], [6, 18], [6, 22], [6, 26], [6, 30], [6, 34], [6, 22, 38], [6, 24, 42],
  [6, 26, 46], [6, 28, 50]];
const EXP = new Uint8Array(512);
const LOG = new Uint8Array(256);
for (let i = 0, x = 1; i < 255; i++, x = (x << 1) ^ (x & 0x80 ? 0x11d : 0)) { EXP[i] = x; LOG[x] = i; }
for (let i = 255; i < 512; i++) EXP[i] = EXP[i - 255];
const gfMul = (a, b) => (a && b ? EXP[LOG[a] + LOG[b]] : 0);

function reedSolomon(data, degree) {
  let gen = [1];
  for (let i = 0; i < degree; i++) {
    const next = new Array(gen.length + 1).fill(0);
    gen.forEach((c, j) => { next[j] ^= c; next[j + 1] ^= gfMul(c, EXP[i]); });
    gen = next;
  }
  const rest = new Array(degree).fill(0);
  for (const byte of data) {
    const factor = byte ^ rest.shift();
    rest.push(0);
    for (let j = 0; j < degree; j++) rest[j] ^= gfMul(gen[j + 1], factor);
  }
  return rest;
}

/** The QR code of `text` as rows of booleans (true: dark); `mask` forces a mask pattern. */
export function qrModules(text, { mask } = {}) {
  const bytes = new TextEncoder().encode(text);
  let version = 1;
  const capacity = (v) => { const b = QR_BLOCKS[v]; return b[1] * b[2] + b[3] * b[4]; };
  while (version <= 10 && 4 + (version < 10 ? 8 : 16) + 8 * bytes.length > 8 * capacity(version)) version++;
  if (version > 10) throw new RangeError("text too long for this QR encoder (at most 213 bytes)");
  const bits = [];
  const put = (value, length) => { for (let i = length - 1; i >= 0; i--) bits.push((value >>> i) & 1); };
  put(4, 4);
  put(bytes.length, version < 10 ? 8 : 16);
  bytes.forEach((b) => put(b, 8));
  const total = 8 * capacity(version);
  put(0, Math.min(4, total - bits.length));
  put(0, (8 - (bits.length % 8)) % 8);
  for (let pad = 0xec; bits.length < total; pad ^= 0xec ^ 0x11) put(pad, 8);
  const data = [];
  for (let i = 0; i < bits.length; i += 8) data.push(bits.slice(i, i + 8).reduce((a, b) => (a << 1) | b, 0));
  const [ec, n1, k1, n2, k2] = QR_BLOCKS[version];
  const blocks = [];
  for (let i = 0, at = 0; i < n1 + n2; i++) {
    const k = i < n1 ? k1 : k2;
    blocks.push(data.slice(at, at + k));
    at += k;
  }
  const codewords = [];
  for (let i = 0; i < Math.max(k1, k2); i++) for (const b of blocks) if (i < b.length) codewords.push(b[i]);
  const ecBlocks = blocks.map((b) => reedSolomon(b, ec));
  for (let i = 0; i < ec; i++) for (const b of ecBlocks) codewords.push(b[i]);

  const size = 17 + 4 * version;
  const grid = Array.from({ length: size }, () => new Array(size).fill(false));
  const fixed = Array.from({ length: size }, () => new Array(size).fill(false));
  const setIn = (g, x, y, dark) => { g[y][x] = dark; fixed[y][x] = true; };
  const set = (x, y, dark) => setIn(grid, x, y, dark);
  for (let i = 0; i < size; i++) { set(6, i, i % 2 === 0); set(i, 6, i % 2 === 0); }
  for (const [cx, cy] of [[3, 3], [size - 4, 3], [3, size - 4]]) {
    for (let dy = -4; dy <= 4; dy++) for (let dx = -4; dx <= 4; dx++) {
      const d = Math.max(Math.abs(dx), Math.abs(dy));
      const x = cx + dx, y = cy + dy;
      if (x >= 0 && x < size && y >= 0 && y < size) set(x, y, d !== 2 && d !== 4);
    }
  }
  const align = QR_ALIGN[version];
  for (const ax of align) for (const ay of align) {
    const corner = (ax === 6 && ay === 6) || (ax === 6 && ay === align.at(-1)) || (ax === align.at(-1) && ay === 6);
    if (corner) continue;
    for (let dy = -2; dy <= 2; dy++) for (let dx = -2; dx <= 2; dx++) set(ax + dx, ay + dy, Math.max(Math.abs(dx), Math.abs(dy)) !== 1);
  }
  const drawFormat = (g, m) => {
    const value = m; // level M is 00
    const set = (x, y, dark) => setIn(g, x, y, dark);
    let rem = value;
    for (let i = 0; i < 10; i++) rem = (rem << 1) ^ ((rem >>> 9) * 0x537);
    const f = ((value << 10) | rem) ^ 0x5412;
    const bit = (i) => ((f >>> i) & 1) === 1;
    for (let i = 0; i <= 5; i++) set(8, i, bit(i));
    set(8, 7, bit(6)); set(8, 8, bit(7)); set(7, 8, bit(8));
    for (let i = 9; i < 15; i++) set(14 - i, 8, bit(i));
    for (let i = 0; i < 8; i++) set(size - 1 - i, 8, bit(i));
    for (let i = 8; i < 15; i++) set(8, size - 15 + i, bit(i));
    set(8, size - 8, true);
  };
  drawFormat(grid, 0);
  if (version >= 7) {
    let rem = version;
    for (let i = 0; i < 12; i++) rem = (rem << 1) ^ ((rem >>> 11) * 0x1f25);
    const v = (version << 12) | rem;
    for (let i = 0; i < 18; i++) {
      const dark = ((v >>> i) & 1) === 1;
      const a = size - 11 + (i % 3), b = Math.floor(i / 3);
      set(a, b, dark); set(b, a, dark);
    }
  }
  let i = 0;
  for (let right = size - 1; right >= 1; right -= 2) {
    if (right === 6) right = 5;
    for (let vert = 0; vert < size; vert++) {
      for (let j = 0; j < 2; j++) {
        const x = right - j;
        const y = ((right + 1) & 2) === 0 ? size - 1 - vert : vert;
        if (!fixed[y][x] && i < codewords.length * 8) {
          grid[y][x] = ((codewords[i >>> 3] >>> (7 - (i & 7))) & 1) === 1;
          i++;
        }
      }
    }
  }
  const MASKS = [(x, y) => (x + y) % 2 === 0, (x, y) => y % 2 === 0, (x) => x % 3 === 0,
    (x, y) => (x + y) % 3 === 0, (x, y) => (Math.floor(x / 3) + Math.floor(y / 2)) % 2 === 0,
    (x, y) => ((x * y) % 2) + ((x * y) % 3) === 0, (x, y) => (((x * y) % 2) + ((x * y) % 3)) % 2 === 0,
    (x, y) => (((x + y) % 2) + ((x * y) % 3)) % 2 === 0];
  const masked = (m) => {
    const out = grid.map((row, y) => row.map((dark, x) => (fixed[y][x] ? dark : dark !== MASKS[m](x, y))));
    drawFormat(out, m);
    return out;
  };
  if (mask !== undefined) return masked(mask);
  let best = null;
  for (let m = 0; m < 8; m++) {
    const candidate = masked(m);
    const score = penalty(candidate);
    if (!best || score < best.score) best = { score, candidate };
  }
  return best.candidate;
}

// The specification's four penalty rules (runs, 2x2 blocks, finder look-alikes, balance).
function penalty(m) {
  const size = m.length;
  let score = 0, dark = 0;
  const lines = [...m, ...m[0].map((_, x) => m.map((row) => row[x]))];
  for (const line of lines) {
    let run = 1;
    for (let i = 1; i <= size; i++) {
      if (i < size && line[i] === line[i - 1]) run++;
      else { if (run >= 5) score += run - 2; run = 1; }
    }
    const text = line.map((d) => (d ? "1" : "0")).join("");
    score += 40 * (text.match(/(?=(10111010000|00001011101))/g) || []).length;
  }
  for (let y = 0; y < size; y++) for (let x = 0; x < size; x++) {
    if (m[y][x]) dark++;
    if (x < size - 1 && y < size - 1 && m[y][x] === m[y][x + 1] && m[y][x] === m[y + 1][x] && m[y][x] === m[y + 1][x + 1]) score += 3;
  }
  return score + 10 * Math.floor(Math.abs((dark * 100) / (size * size) - 50) / 5);
}

function qrSvg(text, label) {
  const modules = qrModules(text);
  const size = modules.length + 8;
  let path = "";
  modules.forEach((row, y) => row.forEach((dark, x) => { if (dark) path += `M${x + 4} ${y + 4}h1v1h-1z`; }));
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${size} ${size}`);
  svg.setAttribute("class", "qr");
  svg.setAttribute("part", "qr");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", label);
  svg.setAttribute("shape-rendering", "crispEdges");
  const shape = document.createElementNS(ns, "path");
  shape.setAttribute("d", path);
  shape.setAttribute("fill", "#000");
  svg.append(shape);
  return svg;
}
