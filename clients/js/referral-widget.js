// referral-widget.js: <referral-widget>, a drop-in referral panel built on referrals.js.
//
//   <script type="module" src="https://broker.example/static/1.0.0/referral-widget.js"
//           integrity="sha384-..." crossorigin="anonymous"></script>
//   <referral-widget broker="https://broker.example" shop="my-shop"
//                    token-url="/account/referral-token"></referral-widget>
//
// No dependencies beyond referrals.js (imported beside this file); the QR code is drawn by the
// small encoder at the end of this file, with no network call. Types: referral-widget.d.ts.
// Browsers: those with Object.hasOwn and private methods (Chrome/Edge 94+, Firefox 93+,
// Safari 15.4+); styles are adopted stylesheets where the browser has them (Safari 16.4+), a
// <style> element otherwise.

import {
  CHANNELS,
  DEFAULT_VERSION,
  createReferralsClient,
  httpUrl,
  isKnownShareAction,
} from "./referrals.js";

const own = (object, key) => object != null && typeof object === "object" && Object.hasOwn(object, key);
const isRecord = (value) => value != null && typeof value === "object" && !Array.isArray(value);
const text = (value) => (typeof value === "string" && value.trim() ? value : null);

/** Channel names that are the same in every language (brands); others are translated. */
const BRANDS = {
  facebook: "Facebook", messenger: "Messenger", whatsapp: "WhatsApp", twitter: "X (Twitter)",
  instagram: "Instagram", threads: "Threads", telegram: "Telegram", sms: "SMS",
};

// The built-in wording: each key, then its words in the languages of the first line, one a
// line and in that order (an empty line: the English words). `{name}` placeholders are filled
// in; "one|other" is a plural, chosen by `{count}` through Intl.PluralRules. Kept as one text
// rather than an object a language because the keys, written once, keep the widget small.
const WORDS = `en de fr es it nl pt
title
  Refer a friend
  Freunde werben
  Parrainer un ami
  Invita a un amigo
  Invita un amico
  Nodig een vriend uit
  Indique um amigo
yourLink
  Your referral link
  Dein Empfehlungslink
  Votre lien de parrainage
  Tu enlace de invitación
  Il tuo link di invito
  Jouw uitnodigingslink
  Seu link de indicação
getLink
  Get my link
  Meinen Link holen
  Obtenir mon lien
  Obtener mi enlace
  Ottieni il mio link
  Mijn link ophalen
  Obter meu link
copy
  Copy link
  Link kopieren
  Copier le lien
  Copiar enlace
  Copia link
  Link kopiëren
  Copiar link
copied
  Link copied.
  Link kopiert.
  Lien copié.
  Enlace copiado.
  Link copiato.
  Link gekopieerd.
  Link copiado.
share
  Share…
  Teilen…
  Partager…
  Compartir…
  Condividi…
  Delen…
  Compartilhar…
invite
  Invite a friend
  Freund einladen
  Inviter un ami
  Invitar a un amigo
  Invita un amico
  Vriend uitnodigen
  Convidar um amigo
channel
  Share by
  Teilen per
  Partager par
  Compartir por
  Condividi tramite
  Delen via
  Compartilhar por
destination
  Friend's email
  E-Mail-Adresse deines Freundes
  E-mail de votre ami
  Correo de tu amigo
  Email del tuo amico
  E-mailadres van je vriend
  E-mail do seu amigo
send
  Send invitation
  Einladung senden
  Envoyer l'invitation
  Enviar invitación
  Invia invito
  Uitnodiging versturen
  Enviar convite
sending
  Sending…
  Wird gesendet…
  Envoi…
  Enviando…
  Invio…
  Versturen…
  Enviando…
sent
  Your invitation is ready.
  Deine Einladung ist bereit.
  Votre invitation est prête.
  Tu invitación está lista.
  Il tuo invito è pronto.
  Je uitnodiging is klaar.
  Seu convite está pronto.
loading
  Loading your referrals…
  Deine Empfehlungen werden geladen…
  Chargement de vos parrainages…
  Cargando tus invitaciones…
  Caricamento dei tuoi inviti…
  Je uitnodigingen worden geladen…
  Carregando suas indicações…
loaded
  {count} referral|{count} referrals
  {count} Empfehlung|{count} Empfehlungen
  {count} parrainage|{count} parrainages
  {count} invitación|{count} invitaciones
  {count} invito|{count} inviti
  {count} uitnodiging|{count} uitnodigingen
  {count} indicação|{count} indicações
history
  Your referrals
  Deine Empfehlungen
  Vos parrainages
  Tus invitaciones
  I tuoi inviti
  Jouw uitnodigingen
  Suas indicações
empty
  You have not referred anyone yet.
  Du hast noch niemanden geworben.
  Vous n'avez encore parrainé personne.
  Todavía no has invitado a nadie.
  Non hai ancora invitato nessuno.
  Je hebt nog niemand uitgenodigd.
  Você ainda não indicou ninguém.
more
  Show more
  Mehr anzeigen
  Afficher plus
  Ver más
  Mostra altri
  Meer tonen
  Mostrar mais
retry
  Try again
  Erneut versuchen
  Réessayer
  Reintentar
  Riprova
  Opnieuw proberen
  Tentar novamente
open
  Open {channel}
  {channel} öffnen
  Ouvrir {channel}
  Abrir {channel}
  Apri {channel}
  {channel} openen
  Abrir {channel}
qr
  QR code for your referral link
  QR-Code für deinen Empfehlungslink
  QR code de votre lien de parrainage
  Código QR de tu enlace de invitación
  Codice QR del tuo link di invito
  QR-code van je uitnodigingslink
  Código QR do seu link de indicação
sentOn
  Sent {date}
  Gesendet am {date}
  Envoyé le {date}
  Enviada el {date}
  Inviato il {date}
  Verstuurd op {date}
  Enviado em {date}
acceptedOn
  Joined {date}
  Beigetreten am {date}
  Inscrit le {date}
  Se unió el {date}
  Iscritto il {date}
  Aangemeld op {date}
  Entrou em {date}
points
  {count} point|{count} points
  {count} Punkt|{count} Punkte
  {count} point|{count} points
  {count} punto|{count} puntos
  {count} punto|{count} punti
  {count} punt|{count} punten
  {count} ponto|{count} pontos
reward
  Reward: {reward}
  Prämie: {reward}
  Récompense : {reward}
  Recompensa: {reward}
  Premio: {reward}
  Beloning: {reward}
  Recompensa: {reward}
coupon
  Code {code}
  Code {code}
  Code {code}
  Código {code}
  Codice {code}
  Code {code}
  Código {code}
joined
  {count} friend joined|{count} friends joined
  {count} Freund beigetreten|{count} Freunde beigetreten
  {count} ami inscrit|{count} amis inscrits
  {count} amigo se unió|{count} amigos se unieron
  {count} amico iscritto|{count} amici iscritti
  {count} vriend aangemeld|{count} vrienden aangemeld
  {count} amigo entrou|{count} amigos entraram
earned
  {reward} earned
  Verdient: {reward}
  Gains : {reward}
  Ganado: {reward}
  Guadagnato: {reward}
  Verdiend: {reward}
  Ganho: {reward}
noRewards
  No rewards yet
  Noch keine Prämien
  Pas encore de récompense
  Aún sin recompensas
  Nessun premio ancora
  Nog geen beloningen
  Nenhuma recompensa ainda
new
  New
  Neu
  Nouveau
  Nueva
  Nuovo
  Nieuw
  Novo
shareText
  {link}






status.invited
  Invited
  Eingeladen
  Invité
  Invitado
  Invitato
  Uitgenodigd
  Convidado
status.qualified
  Qualified
  Qualifiziert
  Qualifié
  Cualificado
  Qualificato
  Gekwalificeerd
  Qualificado
status.approved
  Approved
  Bestätigt
  Validé
  Aprobado
  Approvato
  Goedgekeurd
  Aprovado
status.rejected
  Rejected
  Abgelehnt
  Refusé
  Rechazado
  Rifiutato
  Afgewezen
  Recusado
status.expired
  Expired
  Abgelaufen
  Expiré
  Caducado
  Scaduto
  Verlopen
  Expirado
status.pending
  Pending
  Ausstehend
  En attente
  Pendiente
  In attesa
  In behandeling
  Pendente
channel.email
  Email
  E-Mail
  E-mail
  Correo electrónico
  Email
  E-mail
  E-mail
channel.qr-code
  QR code
  QR-Code
  QR code
  Código QR
  Codice QR
  QR-code
  Código QR
channel.custom-personal
  Personal message
  Persönliche Nachricht
  Message personnel
  Mensaje personal
  Messaggio personale
  Persoonlijk bericht
  Mensagem pessoal
channel.custom-social
  Social post
  Beitrag
  Publication
  Publicación
  Post social
  Bericht op sociale media
  Publicação
error.signin
  Sign in to refer your friends.
  Melde dich an, um Freunde zu werben.
  Connectez-vous pour parrainer vos amis.
  Inicia sesión para invitar a tus amigos.
  Accedi per invitare i tuoi amici.
  Log in om je vrienden uit te nodigen.
  Entre na sua conta para indicar amigos.
error.destination
  Please enter a valid email address.
  Bitte gib eine gültige E-Mail-Adresse ein.
  Saisissez une adresse e-mail valide.
  Introduce un correo electrónico válido.
  Inserisci un indirizzo email valido.
  Vul een geldig e-mailadres in.
  Digite um e-mail válido.
error.rate
  Too many attempts. Try again in {duration}.
  Zu viele Versuche. Versuche es in {duration} erneut.
  Trop de tentatives. Réessayez dans {duration}.
  Demasiados intentos. Inténtalo de nuevo en {duration}.
  Troppi tentativi. Riprova tra {duration}.
  Te veel pogingen. Probeer het over {duration} opnieuw.
  Muitas tentativas. Tente novamente em {duration}.
error.network
  The referral service can't be reached. Check your connection.
  Der Empfehlungsdienst ist nicht erreichbar. Prüfe deine Verbindung.
  Le service de parrainage est injoignable. Vérifiez votre connexion.
  No se puede conectar con el servicio. Comprueba tu conexión.
  Il servizio inviti non è raggiungibile. Controlla la connessione.
  De service is niet bereikbaar. Controleer je verbinding.
  Não foi possível conectar. Verifique sua conexão.
error.unavailable
  Referrals are unavailable right now.
  Empfehlungen sind gerade nicht verfügbar.
  Le parrainage est indisponible pour le moment.
  Las invitaciones no están disponibles ahora.
  Gli inviti non sono disponibili al momento.
  Uitnodigingen zijn nu niet beschikbaar.
  As indicações não estão disponíveis agora.
error.account
  Your account wasn't found. Sign out and in again.
  Dein Konto wurde nicht gefunden. Melde dich ab und wieder an.
  Votre compte est introuvable. Reconnectez-vous.
  No encontramos tu cuenta. Vuelve a iniciar sesión.
  Account non trovato. Esci e accedi di nuovo.
  Je account is niet gevonden. Log uit en weer in.
  Conta não encontrada. Saia e entre novamente.
error.refused
  This invitation couldn't be sent.
  Diese Einladung konnte nicht gesendet werden.
  Cette invitation n'a pas pu être envoyée.
  No se pudo enviar esta invitación.
  Non è stato possibile inviare questo invito.
  Deze uitnodiging kon niet worden verstuurd.
  Não foi possível enviar este convite.
error.generic
  Something went wrong. Try again.
  Etwas ist schiefgelaufen. Versuche es erneut.
  Une erreur est survenue. Veuillez réessayer.
  Algo salió mal. Inténtalo de nuevo.
  Si è verificato un errore. Riprova.
  Er ging iets mis. Probeer het opnieuw.
  Algo deu errado. Tente novamente.`;

/** The built-in wording, by language: `{ en: { title: "Refer a friend", ... }, de: ... }`. */
export const MESSAGES = parseWords(WORDS);

function parseWords(words) {
  const [head, ...lines] = words.split("\n");
  const langs = head.split(" ");
  const tables = Object.fromEntries(langs.map((lang) => [lang, {}]));
  for (let at = 0; at < lines.length; at += langs.length + 1) {
    langs.forEach((lang, i) => {
      const value = lines[at + 1 + i].trim();
      const [one, other] = value.split("|");
      if (value) tables[lang][lines[at]] = other === undefined ? value : { one, other };
    });
  }
  return Object.freeze(Object.fromEntries(langs.map((lang) => [lang, Object.freeze(tables[lang])])));
}

// Languages a shop added (addMessages), over the built-in ones; and the widgets on the page,
// so that words added later reach them.
const LANGUAGES = new Map(Object.entries(MESSAGES));
const LIVE = new Set();

/**
 * Add a language, or replace words of one, for every widget on the page: `addMessages("pl",
 * {...})`. Missing keys fall back to English.
 */
export function addMessages(lang, messages) {
  const code = String(lang).toLowerCase();
  LANGUAGES.set(code, { ...(LANGUAGES.get(code) || {}), ...(isRecord(messages) ? messages : {}) });
  for (const widget of LIVE) widget.relabel();
}

// The channels offered as share links for the standing link when there is no share sheet.
const SHARE_LINKS = {
  whatsapp: (link, words) => `https://wa.me/?text=${encodeURIComponent(words)}`,
  facebook: (link) => `https://www.facebook.com/sharer/sharer.php?u=${encodeURIComponent(link)}`,
  twitter: (link, words) => `https://x.com/intent/tweet?text=${encodeURIComponent(words)}`,
  telegram: (link) => `https://t.me/share/url?url=${encodeURIComponent(link)}`,
  email: (link, words) => `mailto:?body=${encodeURIComponent(words)}`,
};

const CSS = `
:host { display: block; font: var(--referral-widget-font, inherit); }
:host([hidden]), [hidden] { display: none !important; }
.root { --bg: var(--referral-widget-bg, #fff); --fg: var(--referral-widget-fg, #1f1f1f);
  --muted: var(--referral-widget-muted, #555); --border: var(--referral-widget-border, #8a8d91);
  --accent: var(--referral-widget-accent, #0b57d0); --accent-fg: var(--referral-widget-accent-fg, #fff);
  --error: var(--referral-widget-error, #b3261e); --success: var(--referral-widget-success, #146c2e);
  --row: var(--referral-widget-row-bg, transparent); --focus: var(--referral-widget-focus, var(--accent));
  --radius: var(--referral-widget-radius, 12px); --r: calc(var(--radius) * .66); color: var(--fg); color-scheme: light; }
.dark { --bg: var(--referral-widget-bg, #1f1f1f); --fg: var(--referral-widget-fg, #ececec);
  --muted: var(--referral-widget-muted, #c2c2c2); --border: var(--referral-widget-border, #8e9196);
  --accent: var(--referral-widget-accent, #a8c7fa); --accent-fg: var(--referral-widget-accent-fg, #062e6f);
  --error: var(--referral-widget-error, #ffb4ab); --success: var(--referral-widget-success, #8fd69f); color-scheme: dark; }
.panel { background: var(--bg); border: 1px solid var(--border); border-radius: var(--radius);
  padding: 1rem 1.25rem 1.25rem; }
h2 { font-size: 1.25em; margin: 0; line-height: 1.3; }
h3 { font-size: 1em; margin: 1.25rem 0 .5rem; line-height: 1.3; }
.incentive { margin: .25rem 0 0; }
.incentive ::slotted(*) { margin: 0; }
p { margin: 0; }
.summary { list-style: none; margin: .75rem 0 0; padding: 0; display: flex; flex-wrap: wrap; gap: .25rem 1.25rem; }
.summary li { font-weight: 600; }
input, select, button, .button { box-sizing: border-box; min-height: 2.75rem; font: inherit;
  line-height: 1.25; border-radius: var(--r); padding: .5rem .8rem; margin: 0; }
input, select { border: 1px solid var(--border); color: var(--fg); background: var(--bg); width: 100%; min-width: 0; }
input[aria-invalid="true"] { border-color: var(--error); border-width: 2px; }
button, .button { border: 1px solid var(--accent); cursor: pointer; background: var(--accent);
  color: var(--accent-fg); font-weight: 600; text-decoration: none; display: inline-flex;
  align-items: center; justify-content: center; gap: .5em; white-space: nowrap; }
.secondary { background: var(--bg); color: var(--fg); border-color: var(--border); }
button:disabled { cursor: progress; opacity: .8; }
:focus-visible { outline: 3px solid var(--focus); outline-offset: 2px; }
.row { display: flex; flex-wrap: wrap; gap: .5rem; align-items: flex-end; }
.row > .grow { flex: 1 1 10rem; min-width: 0; }
form.row > label { flex: 1 1 12rem; display: flex; flex-direction: column; gap: .3rem; min-width: 0; }
.label { font-weight: 600; font-size: .9em; }
.spinner { display: none; width: 1em; height: 1em; border: 2px solid currentColor;
  border-right-color: transparent; border-radius: 50%; animation: spin .8s linear infinite; }
[aria-busy="true"] > .spinner { display: inline-block; }
.message { margin: .75rem 0 0; }
.message.error, .state { color: var(--error); font-weight: 600; }
.state { display: flex; flex-wrap: wrap; gap: .75rem; align-items: center; justify-content: space-between;
  border: 1px solid var(--error); border-radius: var(--r); padding: .75rem 1rem; margin: 1rem 0 0; }
.dev { margin: .75rem 0 0; font: .85em/1.4 ui-monospace, monospace; color: var(--muted);
  border-left: 3px solid var(--border); padding-left: .5rem; }
.share, .more { margin-top: .75rem; }
.share:empty, .message:empty { display: none; }
.share > * + * { margin-top: .5rem; }
.qr { background: #fff; padding: 8px; border-radius: 8px; width: var(--qr, 168px); max-width: 100%; height: auto; display: block; }
.rows { list-style: none; margin: 0; padding: 0; display: grid; gap: .5rem; }
.rows > li { display: grid; grid-template-columns: 7.5rem minmax(0, 1fr) auto; gap: .125rem 1rem;
  align-items: baseline; padding: .6rem .75rem; border: 1px solid var(--border);
  border-radius: var(--r); background: var(--row); }
.rows > li.new { border-left: 6px solid var(--accent); padding-left: calc(.75rem - 5px); }
.rows > li.note { display: block; color: var(--muted); border-style: dashed; }
.status { font-weight: 700; }
.status[data-status="approved"] { color: var(--success); }
.status[data-status="rejected"] { color: var(--error); }
.what { overflow-wrap: anywhere; }
.what .muted { margin-left: .5em; }
.when { grid-column: 2 / -1; font-size: .9em; }
.reward { grid-column: 3; grid-row: 1; text-align: end; font-weight: 600; }
.tag { font-size: .8em; font-weight: 700; color: var(--accent-fg); background: var(--accent);
  border-radius: 999px; padding: 0 .5em; margin-left: .5em; }
.muted { color: var(--muted); }
.sr { position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0); white-space: nowrap; }
.skeleton { display: block; height: 1.25em; border-radius: 6px; background: var(--border); opacity: .3;
  animation: pulse 1.2s ease-in-out infinite alternate; }
.rows > li.skel { display: block; }
.chips { display: flex; flex-wrap: wrap; gap: .5rem; margin-top: .5rem; }
@keyframes spin { to { transform: rotate(360deg); } }
@keyframes pulse { to { opacity: .12; } }
@media (max-width: 520px) {
  .panel { padding: .875rem; }
  form.row > * { flex: 1 1 100%; }
  .rows > li { grid-template-columns: minmax(0, 1fr); }
  .rows > li > * { grid-column: 1; grid-row: auto; text-align: start; }
  .what .muted { display: block; margin: 0; }
}
@media (prefers-reduced-motion: reduce) { *, *::before { animation: none !important; transition: none !important; } }
`;

// One stylesheet for every widget on the page, adopted by each shadow root: a constructed
// sheet is not subject to a page's style-src, where a <style> element is.
let sheet = null;
function adoptStyles(root) {
  if ("adoptedStyleSheets" in root && typeof CSSStyleSheet === "function" && "replaceSync" in CSSStyleSheet.prototype) {
    if (!sheet) { sheet = new CSSStyleSheet(); sheet.replaceSync(CSS); }
    root.adoptedStyleSheets = [sheet];
    return null;
  }
  const style = document.createElement("style");
  style.textContent = CSS;
  return style;
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

function newKey() {
  return Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, "0")).join("");
}

class WidgetProblem extends Error {
  constructor(id, message, cause) {
    super(message, cause === undefined ? undefined : { cause });
    this.id = id;
    this.status = 0;
  }
}

/** A token provider that asks the merchant's own URL (same origin, with its cookies). */
function tokenFromUrl(url) {
  let cached = null;
  return async ({ forceRefresh }) => {
    const fresh = cached && (!cached.expiresAt || cached.expiresAt - Date.now() > 30_000);
    if (forceRefresh || !fresh) {
      cached = null;
      let response;
      try {
        response = await fetch(url, { credentials: "same-origin", cache: "no-store", headers: { Accept: "application/json" } });
      } catch (error) {
        throw new WidgetProblem("token_source_failed", `token-url ${url} could not be fetched`, error);
      }
      if (response.status === 401 || response.status === 403) {
        throw new WidgetProblem("missing_token", `token-url answered HTTP ${response.status}: nobody is signed in`);
      }
      const body = response.ok ? await response.json().catch(() => null) : null;
      if (!body || typeof body.token !== "string" || !body.token) {
        throw new WidgetProblem("token_source_failed", `token-url ${url} answered HTTP ${response.status} without {"token": "..."}`);
      }
      cached = { token: body.token, expiresAt: Date.parse(body.expires_at || "") || null };
    }
    return cached.token;
  };
}

// Importable where there is no DOM (Node, for the QR encoder and its tests).
const Element = globalThis.HTMLElement ?? class {};
const CONNECTION = new Set(["broker", "shop", "version", "token-url"]);
const PAGE = 10; // rows shown at first, and added by each "show more"
// Developer faults: shown to the shopper as error.unavailable (or network), to the developer in full.
const DEVELOPER = new Set(["broker_unreachable", "no_token_source", "token_source_failed", "widget_not_configured"]);

export class ReferralWidget extends Element {
  static observedAttributes = ["broker", "shop", "version", "token-url", "lang", "channels",
    "theme", "currency", "timeout", "link-channel"];

  #getToken = null;
  #tokenGeneration = 0;
  #messages = {};
  #client = null;
  #connection = null; // what the client was made from; a change makes a new one
  #ui = null;
  #labels = []; // [node, key, attribute?]: the static words, set again on every relabel
  #state = "loading"; // loading | ready | error
  #loadError = null;
  #loads = 0;
  #referrals = [];
  #shown = PAGE;
  #sentRow = null; // the referral of the latest send, highlighted, kept until the list has it
  #ownLink = null; // the standing link got with "Get my link"
  #share = null; // { action, referral } of the latest send, for the share area
  #notice = null; // { key | text, values, error, quiet }
  #dev = null; // { id, message }
  #busy = null; // "send" | "link" while a Refer2 is in flight
  #lastSend = null; // { channel, destination, key }: the same referral again reuses its key
  #scheduled = false;
  #media = null;

  constructor() {
    super();
    this.attachShadow({ mode: "open" });
  }

  /** A token provider for pages that mint tokens otherwise than through `token-url`. */
  get getToken() { return this.#getToken; }
  set getToken(provider) {
    this.#getToken = typeof provider === "function" ? provider : null;
    this.#tokenGeneration++;
    this.#schedule();
  }

  /** The merchant's own wording, over the built-in words: `{ send: "Invite" }` for every
   * language, or `{ de: { send: "Einladen" } }` for one. Applied in place. */
  get messages() { return this.#messages; }
  set messages(value) { this.#messages = isRecord(value) ? { ...value } : {}; this.#schedule(); }

  /** The referrals shown, newest first as Bubblehouse ordered them (rows that are objects). */
  get referrals() { return this.#referrals.slice(); }

  connectedCallback() {
    LIVE.add(this);
    this.#media ??= globalThis.matchMedia?.("(prefers-color-scheme: dark)") ?? null;
    this.#media?.addEventListener?.("change", this.#onScheme);
    this.#schedule();
  }

  disconnectedCallback() {
    LIVE.delete(this);
    this.#media?.removeEventListener?.("change", this.#onScheme);
  }

  attributeChangedCallback(name, before, after) { if (before !== after) this.#schedule(); }

  #onScheme = () => this.#applyTheme();

  /** Read the history again from the broker. */
  refresh() { return this.#load(); }

  /** Set every word again (after addMessages, or a change of the page's language). */
  relabel() { if (this.#ui) this.#relabel(); }

  get language() {
    const wanted = [this.getAttribute("lang"), this.parentElement?.closest("[lang]")?.getAttribute("lang"),
      document.documentElement.lang, navigator.language, "en"];
    for (const tag of wanted) {
      const code = String(tag || "").toLowerCase();
      if (LANGUAGES.has(code)) return code;
      if (LANGUAGES.has(code.split("-")[0])) return code.split("-")[0];
    }
    return "en";
  }

  #word(key) {
    const lang = this.language;
    for (const table of [this.#messages[lang], this.#messages, LANGUAGES.get(lang), MESSAGES.en]) {
      if (own(table, key) && (typeof table[key] === "string" || isRecord(table[key]))) return table[key];
    }
    return null;
  }

  t(key, values = {}) {
    let words = this.#word(key) ?? key;
    const lang = this.language;
    if (isRecord(words)) {
      const category = new Intl.PluralRules(lang).select(Number(values.count) || 0);
      words = own(words, category) ? words[category] : own(words, "other") ? words.other : key;
    }
    return String(words).replace(/\{(\w+)\}/g, (whole, name) => {
      if (!own(values, name)) return whole;
      const value = values[name];
      return typeof value === "number" ? new Intl.NumberFormat(lang).format(value) : String(value);
    });
  }

  get channels() {
    const raw = this.getAttribute("channels");
    const listed = raw ? raw.split(",").map((c) => c.trim()).filter((c) => /^[a-z0-9][a-z0-9-]{0,63}$/.test(c)) : [];
    return listed.length ? listed : [...CHANNELS];
  }

  /** "light" or "dark": the `theme` attribute; `auto` follows the page's color-scheme, then the system. */
  get scheme() {
    const theme = (this.getAttribute("theme") || "light").toLowerCase();
    if (theme === "dark" || theme === "light") return theme;
    if (theme !== "auto") return "light";
    for (const node of [this, document.documentElement]) {
      const declared = getComputedStyle(node).colorScheme || "";
      const dark = /\bdark\b/.test(declared), light = /\blight\b/.test(declared);
      if (dark !== light) return dark ? "dark" : "light";
    }
    return this.#media?.matches ? "dark" : "light";
  }

  #label(channel) {
    const name = String(channel ?? "");
    return this.#word(`channel.${name}`) !== null ? this.t(`channel.${name}`)
      : own(BRANDS, name) ? BRANDS[name] : name.replace(/-/g, " ");
  }

  #status(status) {
    return this.#word(`status.${status}`) !== null ? this.t(`status.${status}`) : status;
  }

  // Changes arrive in bursts (a framework sets several attributes and properties at once):
  // apply them once, after the burst. Words, language, theme and channels change in place;
  // only a change of broker, shop, version or token source makes a new client and reads again.
  #schedule() {
    if (this.#scheduled) return;
    this.#scheduled = true;
    queueMicrotask(() => {
      this.#scheduled = false;
      if (!this.isConnected) return;
      if (!this.#ui) this.#build();
      this.#relabel();
      const connection = [...CONNECTION].map((name) => this.getAttribute(name)).join("\n") + `\n${this.#tokenGeneration}`;
      if (connection !== this.#connection) {
        this.#connection = connection;
        this.#connect();
      }
    });
  }

  #connect() {
    const broker = this.getAttribute("broker");
    const shop = this.getAttribute("shop");
    const tokenUrl = this.getAttribute("token-url");
    const getToken = this.#getToken || (tokenUrl ? tokenFromUrl(tokenUrl) : null);
    this.#client = null;
    this.#loads++;
    if (!broker || !shop) {
      const missing = [!broker && "broker", !shop && "shop"].filter(Boolean).join(" and ");
      return this.#loadFailed(new WidgetProblem("widget_not_configured", `the ${missing} attribute is missing`));
    }
    if (!getToken) {
      // A page may set getToken a moment after the element connects: wait a little first.
      this.#state = "loading";
      this.#render();
      const loads = this.#loads;
      setTimeout(() => {
        if (loads === this.#loads && !this.#client) {
          this.#loadFailed(new WidgetProblem("no_token_source", "no token source: set the token-url attribute or the getToken property"));
        }
      }, 1000);
      return;
    }
    this.#client = createReferralsClient({ baseUrl: broker, shop, version: this.getAttribute("version") || DEFAULT_VERSION, getToken });
    this.#load();
  }

  #bind(node, key, attribute) {
    this.#labels.push([node, key, attribute]);
    return node;
  }

  #build() {
    const b = (tag, attrs, key) => this.#bind(h(tag, attrs), key);
    const channel = h("select", { id: "channel", part: "channel", name: "channel", onchange: () => this.#syncDestination() });
    const destination = h("input", { id: "destination", part: "destination", name: "destination", type: "email", autocomplete: "off", inputmode: "email", spellcheck: "false" });
    const sendLabel = h("span", {});
    const send = h("button", { type: "submit", part: "send" }, h("span", { class: "spinner", "aria-hidden": "true" }), sendLabel);
    const destinationLabel = h("label", { part: "label", class: "destination" }, b("span", { class: "label" }, "destination"), destination);
    const form = h("form", { part: "form", class: "row", novalidate: true, onsubmit: (event) => { event.preventDefault(); this.#send(); } },
      h("label", { part: "label" }, b("span", { class: "label" }, "channel"), channel), destinationLabel, send);
    const ui = {
      channel, destination, send, sendLabel, destinationLabel, form,
      root: h("div", { class: "root" }),
      section: h("section", { class: "panel", part: "panel", "aria-labelledby": "title" }),
      dev: h("p", { class: "dev", part: "developer-message", hidden: true }),
      state: h("div", { class: "state", part: "error-state", hidden: true }),
      summary: h("ul", { class: "summary", part: "summary" }),
      link: h("div", { part: "your-link", class: "your-link" }),
      status: h("p", { class: "message", part: "message", role: "status" }),
      alert: h("p", { class: "message error", part: "message", role: "alert", id: "alert" }),
      share: h("div", { class: "share", part: "share" }),
      list: h("ul", { class: "rows", part: "history", "aria-labelledby": "history-title", "aria-busy": "true" }),
      more: h("button", { type: "button", class: "secondary more", part: "more", hidden: true, onclick: () => { this.#shown += PAGE; this.#renderHistory(); } }),
      linkTitle: b("h3", { id: "link-title" }, "yourLink"),
      historyTitle: b("h3", { id: "history-title" }, "history"),
    };
    this.#bind(ui.more, "more");
    this.#ui = ui;
    ui.section.append(
      h("header", {}, b("h2", { id: "title", part: "title" }, "title"),
        h("div", { class: "incentive", part: "incentive" }, h("slot", { name: "incentive" }))),
      ui.dev, ui.state, ui.summary, ui.linkTitle, ui.link,
      b("h3", { id: "invite-title" }, "invite"), form, ui.status, ui.alert, ui.share,
      ui.historyTitle, ui.list, ui.more);
    ui.root.append(ui.section);
    const style = adoptStyles(this.shadowRoot);
    this.shadowRoot.replaceChildren(...(style ? [style] : []), ui.root);
  }

  #relabel() {
    const ui = this.#ui;
    ui.section.setAttribute("lang", this.language);
    for (const [node, key, attribute] of this.#labels) {
      if (attribute) node.setAttribute(attribute, this.t(key)); else node.textContent = this.t(key);
    }
    // The channel list, keeping the shopper's choice.
    const chosen = ui.channel.value;
    ui.channel.replaceChildren(...this.channels.map((c) => h("option", { value: c }, this.#label(c))));
    if (this.channels.includes(chosen)) ui.channel.value = chosen;
    this.#syncDestination();
    this.#applyTheme();
    this.#render();
  }

  #applyTheme() {
    this.#ui?.root.classList.toggle("dark", this.scheme === "dark");
  }

  #syncDestination() {
    const email = this.#ui.channel.value === "email";
    this.#ui.destinationLabel.hidden = !email;
    this.#ui.destination.required = email;
  }

  #emit(name, detail) {
    this.dispatchEvent(new CustomEvent(name, { detail, bubbles: true, composed: true }));
  }

  #say(notice) {
    this.#notice = notice;
    this.#renderNotice();
  }

  #renderNotice() {
    const { status, alert } = this.#ui;
    const notice = this.#notice;
    const words = notice ? notice.text ?? this.t(notice.key, notice.values) : "";
    status.textContent = notice && !notice.error ? words : "";
    status.classList.toggle("sr", Boolean(notice?.quiet));
    alert.textContent = notice?.error ? words : "";
  }

  // Everything that depends on the data and the words.
  #render() {
    const ui = this.#ui;
    if (!ui) return;
    const ready = this.#state === "ready";
    ui.list.setAttribute("aria-busy", String(this.#state === "loading"));
    ui.state.hidden = this.#state !== "error";
    ui.summary.hidden = this.#state === "error";
    ui.linkTitle.hidden = ui.link.hidden = !ready;
    ui.historyTitle.hidden = this.#state === "error";
    if (this.#state === "error") {
      ui.state.replaceChildren(h("p", { role: "alert" }, this.#shopperWords(this.#loadError, "load")),
        h("button", { type: "button", class: "secondary", part: "retry", onclick: () => this.#retry() }, this.t("retry")));
    }
    ui.dev.hidden = !this.#dev;
    ui.dev.textContent = this.#dev ? `referral-widget (${this.#dev.id}): ${this.#dev.message}` : "";
    this.#renderSummary();
    this.#renderLink();
    this.#renderHistory();
    this.#renderNotice();
    if (this.#share) this.#renderShare();
    ui.sendLabel.textContent = this.t(this.#busy === "send" ? "sending" : "send");
  }

  #renderSummary() {
    const { summary } = this.#ui;
    if (this.#state !== "ready") {
      summary.replaceChildren(...[0, 1, 2].map(() => h("li", { "aria-hidden": "true" }, h("span", { class: "skeleton", part: "skeleton" }, "\u00a0".repeat(16)))));
      return;
    }
    const rows = this.#referrals;
    const sent = new Set(rows.map((r, i) => (typeof r.referral_bhid === "string" ? r.referral_bhid : `#${i}`))).size;
    const joined = rows.filter((r) => r.accepted_at || r.acceptance_bhid).length;
    const approved = rows.filter((r) => r.status === "approved");
    const points = approved.reduce((sum, r) => sum + (Number(r.reward_pts) || 0), 0);
    const money = approved.reduce((sum, r) => sum + (Number(r.reward_amount) || 0), 0);
    const earned = [points ? this.t("points", { count: points }) : null, money ? this.#money(money) : null].filter(Boolean).join(", ");
    summary.replaceChildren(
      h("li", { part: "summary-sent" }, this.t("loaded", { count: sent })),
      h("li", { part: "summary-joined" }, this.t("joined", { count: joined })),
      h("li", { part: "summary-earned" }, earned ? this.t("earned", { reward: earned }) : this.t("noRewards")));
  }

  #money(value) {
    const lang = this.language;
    const currency = this.getAttribute("currency");
    if (currency) {
      try { return new Intl.NumberFormat(lang, { style: "currency", currency }).format(value); } catch { /* not an ISO 4217 code */ }
    }
    return new Intl.NumberFormat(lang, { minimumFractionDigits: value % 1 ? 2 : 0, maximumFractionDigits: 2 }).format(value);
  }

  // The standing link: one the shopper got with "Get my link", or the newest sharable one in
  // the history. Never a Refer2 by itself: getting one takes the shopper's click.
  #standingLink() {
    if (this.#ownLink) return this.#ownLink;
    const usable = this.#referrals.filter((r) => r.status !== "expired" && httpUrl(r.link));
    const linkChannel = this.getAttribute("link-channel") || "custom-personal";
    const best = usable.find((r) => r.channel === linkChannel)
      ?? usable.find((r) => r.channel === "custom-personal" || r.channel === "custom-social")
      ?? usable.find((r) => r.channel !== "email");
    return best ? httpUrl(best.link) : null;
  }

  #renderLink() {
    const { link } = this.#ui;
    if (this.#state !== "ready") return;
    const url = this.#standingLink();
    if (!url) {
      const button = h("button", { type: "button", part: "get-link", "aria-busy": String(this.#busy === "link"), disabled: Boolean(this.#busy),
        onclick: () => this.#getLink() }, h("span", { class: "spinner", "aria-hidden": "true" }), h("span", {}, this.t("getLink")));
      link.replaceChildren(h("div", { class: "row" }, button));
      return;
    }
    const box = h("input", { class: "grow", readonly: true, value: url, "aria-labelledby": "link-title", part: "link" });
    const actions = [h("button", { type: "button", part: "copy", onclick: () => this.#copy(url, box) }, this.t("copy"))];
    const words = this.t("shareText", { link: url });
    const chips = [];
    if (typeof navigator.share === "function") {
      actions.push(h("button", { type: "button", class: "secondary", part: "share-button", onclick: () => this.#shareSheet(url, words) }, this.t("share")));
    } else {
      for (const channel of this.channels.filter((c) => own(SHARE_LINKS, c))) {
        chips.push(h("a", { class: "button secondary", part: "share-channel", href: SHARE_LINKS[channel](url, words.includes(url) ? words : `${words} ${url}`),
          target: "_blank", rel: "noopener noreferrer", "data-channel": channel,
          onclick: () => this.#emit("referral-shared", { channel, url }) }, this.#label(channel)));
      }
    }
    link.replaceChildren(h("div", { class: "row" }, box, ...actions), ...(chips.length ? [h("div", { class: "chips" }, ...chips)] : []));
  }

  #renderHistory() {
    const { list, more } = this.#ui;
    if (this.#state === "loading") {
      list.replaceChildren(h("li", { class: "sr" }, this.t("loading")),
        ...[0, 1, 2].map(() => h("li", { class: "skel", "aria-hidden": "true" }, h("span", { class: "skeleton", part: "skeleton" }))));
      more.hidden = true;
      return;
    }
    if (this.#state === "error") {
      list.replaceChildren();
      more.hidden = true;
      return;
    }
    const dateFormat = new Intl.DateTimeFormat(this.language, { dateStyle: "medium" });
    const date = (value) => {
      const parsed = Date.parse(typeof value === "string" ? value : "");
      return Number.isNaN(parsed) ? null : dateFormat.format(parsed);
    };
    const rows = this.#referrals.slice(0, this.#shown).map((r) => {
      const status = String(r.status ?? "");
      const points = Number(r.reward_pts);
      const money = Number(r.reward_amount);
      const reward = [points ? this.t("points", { count: points }) : null, money ? this.#money(money) : null,
        text(r.coupon_code) ? this.t("coupon", { code: r.coupon_code }) : null].filter(Boolean).join(", ");
      const when = [date(r.sent_at) && this.t("sentOn", { date: date(r.sent_at) }),
        date(r.accepted_at) && this.t("acceptedOn", { date: date(r.accepted_at) })].filter(Boolean).join(" · ");
      const isNew = this.#sentRow && r.referral_bhid === this.#sentRow.referral_bhid;
      return h("li", { part: "referral", class: isNew ? "new" : null, "data-status": status },
        h("span", { class: "status", "data-status": status }, this.#status(status)),
        h("span", { class: "what" }, this.#label(r.channel),
          text(r.destination) ? h("span", { class: "muted" }, String(r.destination)) : null,
          isNew ? h("span", { class: "tag" }, this.t("new")) : null),
        reward ? h("span", { class: "reward" }, this.t("reward", { reward })) : null,
        when ? h("span", { class: "when muted" }, when) : null);
    });
    if (!this.#referrals.length) rows.push(h("li", { class: "note", part: "empty" }, this.t("empty")));
    list.replaceChildren(...rows);
    more.hidden = this.#referrals.length <= this.#shown;
  }

  #retry() {
    this.#dev = null;
    if (this.#client) this.#load(); else { this.#connection = null; this.#schedule(); }
  }

  // The broker's answer within `timeout` seconds (default 10, above the broker's own upstream
  // timeout of 5): a broker that never answers ends as a timeout, not a spinner forever.
  async #within(call) {
    const controller = new AbortController();
    const seconds = Number(this.getAttribute("timeout")) > 0 ? Number(this.getAttribute("timeout")) : 10;
    const timer = setTimeout(() => controller.abort(), seconds * 1000);
    try {
      return await call(controller.signal);
    } catch (error) {
      if (controller.signal.aborted) throw new WidgetProblem("timeout", `no answer from the broker within ${seconds} s`, error);
      throw error;
    } finally {
      clearTimeout(timer);
    }
  }

  async #load({ quiet = false } = {}) {
    const client = this.#client;
    if (!client) return;
    const loads = ++this.#loads;
    if (!quiet || this.#state !== "ready") {
      this.#state = "loading";
      this.#render();
    }
    let answer = null, failure = null;
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        answer = await this.#within((signal) => client.listReferrals({ signal }));
        failure = null;
        break;
      } catch (error) {
        failure = error;
        // A read is safe to repeat: once, after a short pause, when the broker says it may help.
        if (attempt || !error?.retryable || (error.retryAfter ?? 1) > 5) break;
        await new Promise((resolve) => setTimeout(resolve, 1000 * (error.retryAfter ?? 1)));
        if (loads !== this.#loads) return;
      }
    }
    if (loads !== this.#loads) return;
    if (!failure && !(isRecord(answer) && Array.isArray(answer.referrals))) {
      failure = new WidgetProblem("unexpected_response", "CustomerReferrals2 answered without a referrals list");
    }
    if (failure) {
      if (quiet && this.#state === "ready") return; // the list shown stays; the send succeeded
      return this.#loadFailed(failure);
    }
    const fresh = answer.referrals.filter(isRecord); // a null or a string in the list is skipped
    // Read-your-writes even against an older broker: a row just sent stays until the list has it.
    const sent = this.#sentRow;
    const missing = sent && !fresh.some((r) => r.referral_bhid === sent.referral_bhid);
    this.#referrals = missing ? [sent, ...fresh] : fresh;
    this.#state = "ready";
    this.#loadError = null;
    this.#dev = null;
    if (!quiet) this.#notice = { key: "loaded", values: { count: this.#referrals.length }, quiet: true };
    this.#render();
    this.#emit("referrals-loaded", { referrals: fresh, response: answer });
  }

  #loadFailed(error) {
    this.#state = "error";
    this.#loadError = error;
    this.#report(error);
    this.#render();
  }

  // The event, and for a developer's fault a console warning and a visible line.
  #report(error) {
    let id = typeof error?.id === "string" ? error.id : "token_source_failed";
    let message = String(error?.message || error);
    if (id === "network_error" && navigator.onLine !== false) {
      id = "broker_unreachable";
      message = `no answer from the broker at ${this.getAttribute("broker")}: is it running, and is ${location.origin} in its BROKER_CORS_ORIGINS?`;
    }
    if (id !== error?.id && typeof error === "object" && error) error.widgetId = id;
    if (DEVELOPER.has(id)) {
      this.#dev = { id, message };
      console.warn(`referral-widget: ${id}: ${message}`);
    }
    const problem = isRecord(error?.body) && id === error.id ? error.body : { id, status: error?.status ?? 0, message };
    this.#emit("referral-error", problem);
  }

  // The widget's own words for a failure, chosen by id and status. Bubblehouse's text comes
  // only where the broker passes it on (a Refer2 refusal, as upstream_message).
  #shopperWords(error, during) {
    const id = error?.widgetId || error?.id || "";
    const status = error?.status ?? 0;
    // The shop's words from Bubblehouse: a send it refused with a 4xx. The broker passes them on
    // for nothing else (never with one of its own ids); a 401 or a 429 keeps the widget's words.
    const refusal = status >= 400 && status < 500 && status !== 401 && status !== 429;
    if (during === "send" && refusal && text(error?.upstreamMessage)) return error.upstreamMessage;
    if (id === "missing_token" || id === "invalid_token") return this.t("error.signin");
    if (id === "invalid_input" && error.field === "destination") return this.t("error.destination");
    if (id === "rate_limit_exceeded" || status === 429) {
      const seconds = Math.max(1, Number(error.retryAfter) || 1);
      const duration = new Intl.NumberFormat(this.language, { style: "unit", unit: "second", unitDisplay: "long" }).format(seconds);
      return this.t("error.rate", { duration });
    }
    if (id === "network_error" || id === "broker_unreachable") return this.t("error.network");
    if (/customer/.test(id) && status >= 400 && status < 500) return this.t("error.account");
    if (DEVELOPER.has(id) || id.startsWith("upstream_") || id === "timeout" || id === "unexpected_response" || status >= 500) return this.t("error.unavailable");
    if (during === "send" && status >= 400 && status < 500 && status !== 409) return this.t("error.refused");
    return this.t("error.generic");
  }

  async #refer(body, kind) {
    const client = this.#client;
    if (!client || this.#busy) return null;
    const last = this.#lastSend;
    const key = last && last.channel === body.channel && last.destination === body.destination ? last.key : newKey();
    this.#busy = kind;
    const { send, destination } = this.#ui;
    const hadFocus = this.shadowRoot.activeElement === send;
    send.disabled = true;
    send.setAttribute("aria-busy", String(kind === "send"));
    destination.removeAttribute("aria-invalid");
    this.#share = null;
    this.#ui.share.replaceChildren();
    this.#say(kind === "send" ? { key: "sending" } : null);
    this.#render();
    try {
      const answer = await this.#within((signal) => client.sendReferral({ ...body, idempotencyKey: key, signal }));
      this.#lastSend = { ...body, key }; // the same referral again is a replay, never a second one
      return answer;
    } catch (error) {
      // After a lost answer the same referral keeps its key, so a retry is at most once.
      const lost = error?.id === "network_error" || error?.id === "timeout";
      this.#lastSend = lost ? { ...body, key } : null;
      this.#sendFailed(error);
      return null;
    } finally {
      this.#busy = null;
      send.disabled = false;
      send.setAttribute("aria-busy", "false");
      this.#ui.sendLabel.textContent = this.t("send");
      if (hadFocus) send.focus();
    }
  }

  async #send() {
    const { channel, destination } = this.#ui;
    const body = { channel: channel.value, destination: channel.value === "email" ? destination.value.trim() : undefined };
    const answer = await this.#refer(body, "send");
    if (answer) this.#sent(answer, { clear: true });
  }

  async #getLink() {
    const answer = await this.#refer({ channel: this.getAttribute("link-channel") || "custom-personal", destination: undefined }, "link");
    if (!answer) return this.#render();
    this.#ownLink = httpUrl(answer?.referral?.link);
    this.#sent(answer, { clear: false });
  }

  // A successful send stays a success whatever happens after it: a failure to draw the share
  // area (a QR code, a link of an unexpected shape) falls back to the plain link box.
  #sent(answer, { clear }) {
    const referral = isRecord(answer?.referral) ? answer.referral : null;
    this.#notice = { key: "sent" };
    if (clear) this.#ui.destination.value = "";
    if (referral) {
      this.#sentRow = referral;
      this.#referrals = [referral, ...this.#referrals.filter((r) => r.referral_bhid !== referral.referral_bhid)];
    }
    this.#share = clear ? { action: answer?.share_action, referral } : null;
    try {
      this.#render();
    } catch (error) {
      console.warn("referral-widget: the answer could not be shown in full", error);
      this.#ui.share.replaceChildren(...this.#linkBox(httpUrl(referral?.link)));
    }
    this.#emit("referral-sent", answer);
    this.#load({ quiet: true });
  }

  #linkBox(url) {
    if (!url) return [];
    const box = h("input", { class: "grow", readonly: true, value: url, "aria-label": this.t("yourLink"), part: "link" });
    return [h("div", { class: "row" }, box, h("button", { type: "button", class: "secondary", part: "copy", onclick: () => this.#copy(url, box) }, this.t("copy")))];
  }

  #renderShare() {
    const { action, referral } = this.#share;
    const link = httpUrl(referral?.link);
    const items = [];
    if (isKnownShareAction(action)) {
      if (action.type === "open_url" && httpUrl(action.url)) {
        items.push(h("div", { class: "row" }, h("a", { class: "button", part: "share-link", href: httpUrl(action.url), target: "_blank", rel: "noopener noreferrer",
          onclick: () => this.#emit("referral-shared", { channel: String(referral?.channel ?? ""), url: link }) },
        this.t("open", { channel: this.#label(referral?.channel) }))));
      } else if (action.type === "copy_link" && httpUrl(action.link)) {
        const url = httpUrl(action.link);
        items.push(...this.#linkBox(url));
        if (typeof navigator.share === "function") {
          items[0].append(h("button", { type: "button", class: "secondary", part: "share-button", onclick: () => this.#shareSheet(url, text(action.text) ?? url) }, this.t("share")));
        }
      } else if (action.type === "show_qr_code") {
        const url = httpUrl(action.link) || link;
        const data = text(action.data) ?? url;
        try {
          if (data) items.push(qrSvg(data, this.t("qr")));
        } catch {
          // Too long for any QR version: the link alone.
        }
        items.push(...this.#linkBox(url));
      }
    } else if (action != null || link) {
      // A shape this widget does not know (Bubblehouse may send others): a plain link.
      const url = httpUrl(action?.url) || httpUrl(action?.link) || link;
      if (url) items.push(h("a", { href: url, target: "_blank", rel: "noopener noreferrer", part: "share-link" }, url));
    }
    this.#ui.share.replaceChildren(...items);
  }

  async #shareSheet(url, words) {
    try {
      await navigator.share({ url, text: words === url ? undefined : words });
      this.#emit("referral-shared", { channel: "share-sheet", url });
    } catch {
      // The shopper closed the sheet.
    }
  }

  async #copy(url, box) {
    try {
      await navigator.clipboard.writeText(url);
    } catch {
      box.select();
      document.execCommand?.("copy");
    }
    this.#say({ key: "copied" });
    this.#emit("referral-link-copied", { url });
  }

  #sendFailed(error) {
    const id = error?.id;
    if (id === "invalid_input" && error.field === "destination") {
      const { destination } = this.#ui;
      destination.setAttribute("aria-invalid", "true");
      destination.setAttribute("aria-describedby", "alert");
      destination.focus();
    }
    this.#say({ text: this.#shopperWords(error, "send"), error: true });
    this.#report(error);
    this.#render();
  }
}

if (typeof customElements !== "undefined" && !customElements.get("referral-widget")) {
  customElements.define("referral-widget", ReferralWidget);
}

// --- QR code: byte mode, error correction level M, versions 1-40 (up to 2331 bytes) --------

// Per version 1-40: error-correction codewords per block, and the number of blocks (level M).
const QR_EC = [10, 16, 26, 18, 24, 16, 18, 22, 22, 26, 30, 22, 22, 24, 24, 28, 28, 26, 26, 26,
  26, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28];
const QR_BLOCKS = [1, 1, 1, 2, 2, 4, 4, 4, 5, 5, 5, 8, 9, 9, 10, 10, 11, 13, 14, 16, 17, 17,
  18, 20, 21, 23, 25, 26, 28, 29, 31, 33, 35, 37, 38, 40, 43, 45, 47, 49];
// GF(256) with the polynomial 0x11d: EXP twice over, so a product needs no modulo.
const EXP = [];
const LOG = [];
for (let i = 0, x = 1; i < 255; i++, x = (x << 1) ^ (x & 0x80 ? 0x11d : 0)) { EXP[i] = EXP[i + 255] = x; LOG[x] = i; }
const gfMul = (a, b) => (a && b ? EXP[LOG[a] + LOG[b]] : 0);

// All codewords of a version: its modules less the function patterns, in bytes.
function qrCodewords(version) {
  let modules = (16 * version + 128) * version + 64;
  if (version >= 2) {
    const aligns = Math.floor(version / 7) + 2;
    modules -= (25 * aligns - 10) * aligns - 55;
    if (version >= 7) modules -= 36;
  }
  return Math.floor(modules / 8);
}

// The centres of the alignment patterns on either axis.
function qrAlignment(version) {
  if (version === 1) return [];
  const count = Math.floor(version / 7) + 2;
  const step = version === 32 ? 26 : Math.ceil((version * 4 + 4) / (count * 2 - 2)) * 2;
  const positions = [6];
  for (let at = version * 4 + 10; positions.length < count; at -= step) positions.splice(1, 0, at);
  return positions;
}

// The error-correction codewords of one block: the remainder by the generator polynomial.
function reedSolomon(data, degree) {
  let gen = [1];
  for (let i = 0; i < degree; i++) gen = [...gen, 0].map((c, j) => c ^ gfMul(gen[j - 1], EXP[i]));
  const rest = new Array(degree).fill(0);
  for (const byte of data) {
    const factor = byte ^ rest.shift();
    rest.push(0);
    for (let j = 0; j < degree; j++) rest[j] ^= gfMul(gen[j + 1], factor);
  }
  return rest;
}

// The eight mask patterns: a data module is inverted where its pattern gives 0.
const QR_MASKS = [(x, y) => (x + y) % 2, (x, y) => y % 2, (x) => x % 3, (x, y) => (x + y) % 3,
  (x, y) => (Math.floor(x / 3) + Math.floor(y / 2)) % 2, (x, y) => ((x * y) % 2) + ((x * y) % 3),
  (x, y) => (((x * y) % 2) + ((x * y) % 3)) % 2, (x, y) => (((x + y) % 2) + ((x * y) % 3)) % 2];

/** The QR code of `text` as rows of booleans (true: dark); `mask` forces a mask pattern. */
export function qrModules(text, { mask } = {}) {
  const bytes = new TextEncoder().encode(text);
  const dataCodewords = (v) => qrCodewords(v) - QR_EC[v - 1] * QR_BLOCKS[v - 1];
  let version = 1;
  while (version <= 40 && 4 + (version < 10 ? 8 : 16) + 8 * bytes.length > 8 * dataCodewords(version)) version++;
  if (version > 40) throw new RangeError("text too long for a QR code (at most 2331 bytes)");
  const bits = [];
  const put = (value, length) => { for (let i = length - 1; i >= 0; i--) bits.push((value >>> i) & 1); };
  put(4, 4);
  put(bytes.length, version < 10 ? 8 : 16);
  bytes.forEach((b) => put(b, 8));
  const total = 8 * dataCodewords(version);
  put(0, Math.min(4, total - bits.length));
  put(0, (8 - (bits.length % 8)) % 8);
  for (let pad = 0xec; bits.length < total; pad ^= 0xec ^ 0x11) put(pad, 8);
  const data = [];
  for (let i = 0; i < bits.length; i += 8) data.push(bits.slice(i, i + 8).reduce((a, b) => (a << 1) | b, 0));
  // Blocks: the short ones first, the long ones one data codeword longer; then interleaved.
  const ec = QR_EC[version - 1], count = QR_BLOCKS[version - 1], all = qrCodewords(version);
  const short = count - (all % count), shortData = Math.floor(all / count) - ec;
  const blocks = [];
  for (let i = 0, at = 0; i < count; i++) {
    const k = shortData + (i < short ? 0 : 1);
    blocks.push(data.slice(at, at + k));
    at += k;
  }
  const codewords = [];
  for (let i = 0; i <= shortData; i++) for (const b of blocks) if (i < b.length) codewords.push(b[i]);
  const ecBlocks = blocks.map((b) => reedSolomon(b, ec));
  for (let i = 0; i < ec; i++) for (const b of ecBlocks) codewords.push(b[i]);

  // The function patterns (a module set is true or false; null is free for data).
  const size = 17 + 4 * version;
  const grid = Array.from({ length: size }, () => new Array(size).fill(null));
  const set = (x, y, dark) => { grid[y][x] = dark; };
  for (let i = 0; i < size; i++) { set(6, i, i % 2 === 0); set(i, 6, i % 2 === 0); }
  for (const [cx, cy] of [[3, 3], [size - 4, 3], [3, size - 4]]) {
    for (let dy = -4; dy <= 4; dy++) for (let dx = -4; dx <= 4; dx++) {
      const d = Math.max(Math.abs(dx), Math.abs(dy));
      if (grid[cy + dy]?.[cx + dx] !== undefined) set(cx + dx, cy + dy, d !== 2 && d !== 4);
    }
  }
  const align = qrAlignment(version);
  const last = align.at(-1);
  for (const ax of align) for (const ay of align) {
    if ((ax === 6 && (ay === 6 || ay === last)) || (ax === last && ay === 6)) continue;
    for (let dy = -2; dy <= 2; dy++) for (let dx = -2; dx <= 2; dx++) set(ax + dx, ay + dy, Math.max(Math.abs(dx), Math.abs(dy)) !== 1);
  }
  // Format information (level M is 00, then the mask), in both copies, and the dark module.
  const drawFormat = (g, m) => {
    let rem = m;
    for (let i = 0; i < 10; i++) rem = (rem << 1) ^ ((rem >>> 9) * 0x537);
    const f = ((m << 10) | rem) ^ 0x5412;
    for (let i = 0; i < 15; i++) {
      const dark = ((f >>> i) & 1) === 1;
      g[i < 6 ? i : i < 8 ? i + 1 : size - 15 + i][8] = dark;
      g[8][i < 8 ? size - 1 - i : i < 9 ? 7 : 14 - i] = dark;
    }
    g[size - 8][8] = true;
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
  // The data, in two-module columns zigzagging up and down from the right (remainder bits 0).
  const free = [];
  let i = 0;
  for (let right = size - 1; right >= 1; right -= 2) {
    if (right === 6) right = 5;
    for (let vert = 0; vert < size; vert++) {
      for (let j = 0; j < 2; j++) {
        const x = right - j;
        const y = ((right + 1) & 2) === 0 ? size - 1 - vert : vert;
        if (grid[y][x] === null) {
          grid[y][x] = ((codewords[i >>> 3] >>> (7 - (i & 7))) & 1) === 1;
          free.push([x, y]);
          i++;
        }
      }
    }
  }
  const masked = (m) => {
    const out = grid.map((row) => row.slice());
    for (const [x, y] of free) out[y][x] = out[y][x] !== !QR_MASKS[m](x, y);
    drawFormat(out, m);
    return out;
  };
  if (mask !== undefined) return masked(mask);
  let best = null, lowest = Infinity;
  for (let m = 0; m < 8; m++) {
    const candidate = masked(m);
    const score = penalty(candidate);
    if (score < lowest) { best = candidate; lowest = score; }
  }
  return best;
}

// The specification's four penalty rules (runs, 2x2 blocks, finder look-alikes, balance).
function penalty(m) {
  const size = m.length;
  let score = 0, dark = 0;
  for (const line of [...m, ...m[0].map((_, x) => m.map((row) => row[x]))]) {
    const text = line.map(Number).join("");
    for (const run of text.match(/0{5,}|1{5,}/g) || []) score += run.length - 2;
    score += 40 * (text.match(/(?=10111010000|00001011101)/g) || []).length;
  }
  for (let y = 0; y < size; y++) for (let x = 0; x < size; x++) {
    const d = m[y][x];
    if (d) dark++;
    if (x < size - 1 && y < size - 1 && d === m[y][x + 1] && d === m[y + 1][x] && d === m[y + 1][x + 1]) score += 3;
  }
  return score + 10 * Math.floor(Math.abs((dark * 100) / (size * size) - 50) / 5);
}

function qrSvg(text, label) {
  const modules = qrModules(text);
  const size = modules.length + 8;
  let path = "";
  modules.forEach((row, y) => row.forEach((dark, x) => { if (dark) path += `M${x + 4} ${y + 4}h1v1h-1z`; }));
  const ns = "http://www.w3.org/2000/svg";
  const node = (tag, attributes) => {
    const made = document.createElementNS(ns, tag);
    for (const [name, value] of Object.entries(attributes)) made.setAttribute(name, value);
    return made;
  };
  const svg = node("svg", { viewBox: `0 0 ${size} ${size}`, class: "qr", part: "qr", role: "img", "aria-label": label,
    "shape-rendering": "crispEdges" });
  // Two pixels a module at least, so that a long link's dense code stays readable.
  svg.style.setProperty("--qr", `${Math.max(168, size * 2)}px`);
  svg.append(node("path", { d: path, fill: "#000" }));
  return svg;
}
