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
  ERROR_IDS,
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
  instagram: "Instagram", threads: "Threads", telegram: "Telegram",
};

/** The built-in wording, by language. `{name}` placeholders are filled in; an object of
 * Intl.PluralRules categories (`one`, `other`, ...) is a plural, chosen by `{count}`. */
export const MESSAGES = Object.freeze({
  en: {
    title: "Refer a friend", yourLink: "Your referral link", getLink: "Get my link",
    copy: "Copy link", copied: "Link copied.", share: "Share…", invite: "Invite a friend",
    channel: "Share by", destination: "Friend's email", send: "Send invitation",
    sending: "Sending…", sent: "Your invitation is ready.", loading: "Loading your referrals…",
    loaded: { one: "{count} referral", other: "{count} referrals" }, history: "Your referrals",
    empty: "You have not referred anyone yet.", more: "Show more", retry: "Try again",
    open: "Open {channel}", link: "Your referral link", qr: "QR code for your referral link",
    sentOn: "Sent {date}", acceptedOn: "Joined {date}",
    points: { one: "{count} point", other: "{count} points" }, reward: "Reward: {reward}",
    coupon: "Code {code}", joined: { one: "{count} friend joined", other: "{count} friends joined" },
    earned: "{reward} earned", noRewards: "No rewards yet", new: "New", shareText: "{link}",
    "status.invited": "Invited", "status.qualified": "Qualified", "status.approved": "Approved",
    "status.rejected": "Rejected", "status.expired": "Expired", "status.pending": "Pending",
    "channel.email": "Email", "channel.sms": "SMS", "channel.qr-code": "QR code",
    "channel.custom-personal": "Personal message", "channel.custom-social": "Social post",
    "error.signin": "Please sign in to refer your friends.",
    "error.destination": "Please enter a valid email address for your friend.",
    "error.rate": "Too many attempts. Please try again in {duration}.",
    "error.network": "The referral service can't be reached. Check your connection and try again.",
    "error.timeout": "The referral service is taking too long to answer. Please try again.",
    "error.unavailable": "Referrals are unavailable right now. Please try again in a moment.",
    "error.account": "We couldn't find your customer account. Please sign out and in again.",
    "error.refused": "This invitation couldn't be sent.",
    "error.setup": "Referrals can't be shown here right now.",
    "error.generic": "Something went wrong. Please try again.",
  },
  de: {
    title: "Freunde werben", yourLink: "Dein Empfehlungslink", getLink: "Meinen Link holen",
    copy: "Link kopieren", copied: "Link kopiert.", share: "Teilen…", invite: "Freund einladen",
    channel: "Teilen per", destination: "E-Mail-Adresse deines Freundes", send: "Einladung senden",
    sending: "Wird gesendet…", sent: "Deine Einladung ist bereit.",
    loading: "Deine Empfehlungen werden geladen…",
    loaded: { one: "{count} Empfehlung", other: "{count} Empfehlungen" },
    history: "Deine Empfehlungen", empty: "Du hast noch niemanden geworben.",
    more: "Mehr anzeigen", retry: "Erneut versuchen", open: "{channel} öffnen",
    link: "Dein Empfehlungslink", qr: "QR-Code für deinen Empfehlungslink",
    sentOn: "Gesendet am {date}", acceptedOn: "Beigetreten am {date}",
    points: { one: "{count} Punkt", other: "{count} Punkte" }, reward: "Prämie: {reward}",
    coupon: "Code {code}",
    joined: { one: "{count} Freund beigetreten", other: "{count} Freunde beigetreten" },
    earned: "Verdient: {reward}", noRewards: "Noch keine Prämien", new: "Neu",
    "status.invited": "Eingeladen", "status.qualified": "Qualifiziert",
    "status.approved": "Bestätigt", "status.rejected": "Abgelehnt",
    "status.expired": "Abgelaufen", "status.pending": "Ausstehend",
    "channel.email": "E-Mail", "channel.sms": "SMS", "channel.qr-code": "QR-Code",
    "channel.custom-personal": "Persönliche Nachricht", "channel.custom-social": "Beitrag",
    "error.signin": "Bitte melde dich an, um Freunde zu werben.",
    "error.destination": "Bitte gib eine gültige E-Mail-Adresse ein.",
    "error.rate": "Zu viele Versuche. Bitte versuche es in {duration} erneut.",
    "error.network": "Der Empfehlungsdienst ist nicht erreichbar. Prüfe deine Verbindung und versuche es erneut.",
    "error.timeout": "Der Empfehlungsdienst antwortet gerade nicht. Bitte versuche es erneut.",
    "error.unavailable": "Empfehlungen sind gerade nicht verfügbar. Bitte versuche es gleich noch einmal.",
    "error.account": "Dein Kundenkonto wurde nicht gefunden. Bitte melde dich ab und wieder an.",
    "error.refused": "Diese Einladung konnte nicht gesendet werden.",
    "error.setup": "Empfehlungen können hier gerade nicht angezeigt werden.",
    "error.generic": "Etwas ist schiefgelaufen. Bitte versuche es erneut.",
  },
  fr: {
    title: "Parrainer un ami", yourLink: "Votre lien de parrainage", getLink: "Obtenir mon lien",
    copy: "Copier le lien", copied: "Lien copié.", share: "Partager…", invite: "Inviter un ami",
    channel: "Partager par", destination: "E-mail de votre ami", send: "Envoyer l'invitation",
    sending: "Envoi…", sent: "Votre invitation est prête.",
    loading: "Chargement de vos parrainages…",
    loaded: { one: "{count} parrainage", other: "{count} parrainages" },
    history: "Vos parrainages", empty: "Vous n'avez encore parrainé personne.",
    more: "Afficher plus", retry: "Réessayer", open: "Ouvrir {channel}",
    link: "Votre lien de parrainage", qr: "QR code de votre lien de parrainage",
    sentOn: "Envoyé le {date}", acceptedOn: "Inscrit le {date}",
    points: { one: "{count} point", other: "{count} points" }, reward: "Récompense : {reward}",
    coupon: "Code {code}", joined: { one: "{count} ami inscrit", other: "{count} amis inscrits" },
    earned: "Gains : {reward}", noRewards: "Pas encore de récompense", new: "Nouveau",
    "status.invited": "Invité", "status.qualified": "Qualifié", "status.approved": "Validé",
    "status.rejected": "Refusé", "status.expired": "Expiré", "status.pending": "En attente",
    "channel.email": "E-mail", "channel.sms": "SMS", "channel.qr-code": "QR code",
    "channel.custom-personal": "Message personnel", "channel.custom-social": "Publication",
    "error.signin": "Connectez-vous pour parrainer vos amis.",
    "error.destination": "Saisissez une adresse e-mail valide.",
    "error.rate": "Trop de tentatives. Réessayez dans {duration}.",
    "error.network": "Le service de parrainage est injoignable. Vérifiez votre connexion et réessayez.",
    "error.timeout": "Le service de parrainage met trop de temps à répondre. Réessayez.",
    "error.unavailable": "Le parrainage est indisponible pour le moment. Réessayez dans un instant.",
    "error.account": "Votre compte client est introuvable. Déconnectez-vous puis reconnectez-vous.",
    "error.refused": "Cette invitation n'a pas pu être envoyée.",
    "error.setup": "Le parrainage ne peut pas être affiché ici pour le moment.",
    "error.generic": "Une erreur est survenue. Veuillez réessayer.",
  },
  es: {
    title: "Invita a un amigo", yourLink: "Tu enlace de invitación", getLink: "Obtener mi enlace",
    copy: "Copiar enlace", copied: "Enlace copiado.", share: "Compartir…",
    invite: "Invitar a un amigo", channel: "Compartir por", destination: "Correo de tu amigo",
    send: "Enviar invitación", sending: "Enviando…", sent: "Tu invitación está lista.",
    loading: "Cargando tus invitaciones…",
    loaded: { one: "{count} invitación", other: "{count} invitaciones" },
    history: "Tus invitaciones", empty: "Todavía no has invitado a nadie.", more: "Ver más",
    retry: "Reintentar", open: "Abrir {channel}", link: "Tu enlace de invitación",
    qr: "Código QR de tu enlace de invitación", sentOn: "Enviada el {date}",
    acceptedOn: "Se unió el {date}", points: { one: "{count} punto", other: "{count} puntos" },
    reward: "Recompensa: {reward}", coupon: "Código {code}",
    joined: { one: "{count} amigo se unió", other: "{count} amigos se unieron" },
    earned: "Ganado: {reward}", noRewards: "Aún sin recompensas", new: "Nueva",
    "status.invited": "Invitado", "status.qualified": "Cualificado",
    "status.approved": "Aprobado", "status.rejected": "Rechazado",
    "status.expired": "Caducado", "status.pending": "Pendiente",
    "channel.email": "Correo electrónico", "channel.sms": "SMS", "channel.qr-code": "Código QR",
    "channel.custom-personal": "Mensaje personal", "channel.custom-social": "Publicación",
    "error.signin": "Inicia sesión para invitar a tus amigos.",
    "error.destination": "Introduce un correo electrónico válido.",
    "error.rate": "Demasiados intentos. Inténtalo de nuevo en {duration}.",
    "error.network": "No se puede conectar con el servicio de invitaciones. Comprueba tu conexión e inténtalo de nuevo.",
    "error.timeout": "El servicio de invitaciones tarda demasiado en responder. Inténtalo de nuevo.",
    "error.unavailable": "Las invitaciones no están disponibles ahora. Inténtalo de nuevo en un momento.",
    "error.account": "No encontramos tu cuenta de cliente. Cierra sesión y vuelve a entrar.",
    "error.refused": "No se pudo enviar esta invitación.",
    "error.setup": "Las invitaciones no se pueden mostrar aquí ahora.",
    "error.generic": "Algo salió mal. Inténtalo de nuevo.",
  },
  it: {
    title: "Invita un amico", yourLink: "Il tuo link di invito", getLink: "Ottieni il mio link",
    copy: "Copia link", copied: "Link copiato.", share: "Condividi…", invite: "Invita un amico",
    channel: "Condividi tramite", destination: "Email del tuo amico", send: "Invia invito",
    sending: "Invio…", sent: "Il tuo invito è pronto.", loading: "Caricamento dei tuoi inviti…",
    loaded: { one: "{count} invito", other: "{count} inviti" }, history: "I tuoi inviti",
    empty: "Non hai ancora invitato nessuno.", more: "Mostra altri", retry: "Riprova",
    open: "Apri {channel}", link: "Il tuo link di invito",
    qr: "Codice QR del tuo link di invito", sentOn: "Inviato il {date}",
    acceptedOn: "Iscritto il {date}", points: { one: "{count} punto", other: "{count} punti" },
    reward: "Premio: {reward}", coupon: "Codice {code}",
    joined: { one: "{count} amico iscritto", other: "{count} amici iscritti" },
    earned: "Guadagnato: {reward}", noRewards: "Nessun premio ancora", new: "Nuovo",
    "status.invited": "Invitato", "status.qualified": "Qualificato",
    "status.approved": "Approvato", "status.rejected": "Rifiutato",
    "status.expired": "Scaduto", "status.pending": "In attesa",
    "channel.email": "Email", "channel.sms": "SMS", "channel.qr-code": "Codice QR",
    "channel.custom-personal": "Messaggio personale", "channel.custom-social": "Post social",
    "error.signin": "Accedi per invitare i tuoi amici.",
    "error.destination": "Inserisci un indirizzo email valido.",
    "error.rate": "Troppi tentativi. Riprova tra {duration}.",
    "error.network": "Il servizio inviti non è raggiungibile. Controlla la connessione e riprova.",
    "error.timeout": "Il servizio inviti non risponde. Riprova.",
    "error.unavailable": "Gli inviti non sono disponibili al momento. Riprova tra poco.",
    "error.account": "Non troviamo il tuo account cliente. Esci e accedi di nuovo.",
    "error.refused": "Non è stato possibile inviare questo invito.",
    "error.setup": "Gli inviti non possono essere mostrati qui al momento.",
    "error.generic": "Si è verificato un errore. Riprova.",
  },
  nl: {
    title: "Nodig een vriend uit", yourLink: "Jouw uitnodigingslink",
    getLink: "Mijn link ophalen", copy: "Link kopiëren", copied: "Link gekopieerd.",
    share: "Delen…", invite: "Vriend uitnodigen", channel: "Delen via",
    destination: "E-mailadres van je vriend", send: "Uitnodiging versturen",
    sending: "Versturen…", sent: "Je uitnodiging is klaar.",
    loading: "Je uitnodigingen worden geladen…",
    loaded: { one: "{count} uitnodiging", other: "{count} uitnodigingen" },
    history: "Jouw uitnodigingen", empty: "Je hebt nog niemand uitgenodigd.",
    more: "Meer tonen", retry: "Opnieuw proberen", open: "{channel} openen",
    link: "Jouw uitnodigingslink", qr: "QR-code van je uitnodigingslink",
    sentOn: "Verstuurd op {date}", acceptedOn: "Aangemeld op {date}",
    points: { one: "{count} punt", other: "{count} punten" }, reward: "Beloning: {reward}",
    coupon: "Code {code}",
    joined: { one: "{count} vriend aangemeld", other: "{count} vrienden aangemeld" },
    earned: "Verdiend: {reward}", noRewards: "Nog geen beloningen", new: "Nieuw",
    "status.invited": "Uitgenodigd", "status.qualified": "Gekwalificeerd",
    "status.approved": "Goedgekeurd", "status.rejected": "Afgewezen",
    "status.expired": "Verlopen", "status.pending": "In behandeling",
    "channel.email": "E-mail", "channel.sms": "Sms", "channel.qr-code": "QR-code",
    "channel.custom-personal": "Persoonlijk bericht",
    "channel.custom-social": "Bericht op sociale media",
    "error.signin": "Log in om je vrienden uit te nodigen.",
    "error.destination": "Vul een geldig e-mailadres in.",
    "error.rate": "Te veel pogingen. Probeer het over {duration} opnieuw.",
    "error.network": "De uitnodigingsservice is niet bereikbaar. Controleer je verbinding en probeer het opnieuw.",
    "error.timeout": "De uitnodigingsservice reageert te traag. Probeer het opnieuw.",
    "error.unavailable": "Uitnodigingen zijn nu niet beschikbaar. Probeer het zo opnieuw.",
    "error.account": "We kunnen je klantaccount niet vinden. Log uit en weer in.",
    "error.refused": "Deze uitnodiging kon niet worden verstuurd.",
    "error.setup": "Uitnodigingen kunnen hier nu niet worden getoond.",
    "error.generic": "Er ging iets mis. Probeer het opnieuw.",
  },
  pt: {
    title: "Indique um amigo", yourLink: "Seu link de indicação", getLink: "Obter meu link",
    copy: "Copiar link", copied: "Link copiado.", share: "Compartilhar…",
    invite: "Convidar um amigo", channel: "Compartilhar por", destination: "E-mail do seu amigo",
    send: "Enviar convite", sending: "Enviando…", sent: "Seu convite está pronto.",
    loading: "Carregando suas indicações…",
    loaded: { one: "{count} indicação", other: "{count} indicações" },
    history: "Suas indicações", empty: "Você ainda não indicou ninguém.", more: "Mostrar mais",
    retry: "Tentar novamente", open: "Abrir {channel}", link: "Seu link de indicação",
    qr: "Código QR do seu link de indicação", sentOn: "Enviado em {date}",
    acceptedOn: "Entrou em {date}", points: { one: "{count} ponto", other: "{count} pontos" },
    reward: "Recompensa: {reward}", coupon: "Código {code}",
    joined: { one: "{count} amigo entrou", other: "{count} amigos entraram" },
    earned: "Ganho: {reward}", noRewards: "Nenhuma recompensa ainda", new: "Novo",
    "status.invited": "Convidado", "status.qualified": "Qualificado",
    "status.approved": "Aprovado", "status.rejected": "Recusado",
    "status.expired": "Expirado", "status.pending": "Pendente",
    "channel.email": "E-mail", "channel.sms": "SMS", "channel.qr-code": "Código QR",
    "channel.custom-personal": "Mensagem pessoal", "channel.custom-social": "Publicação",
    "error.signin": "Entre na sua conta para indicar amigos.",
    "error.destination": "Digite um e-mail válido.",
    "error.rate": "Muitas tentativas. Tente novamente em {duration}.",
    "error.network": "Não foi possível acessar o serviço de indicações. Verifique sua conexão e tente novamente.",
    "error.timeout": "O serviço de indicações está demorando para responder. Tente novamente.",
    "error.unavailable": "As indicações não estão disponíveis agora. Tente novamente em instantes.",
    "error.account": "Não encontramos sua conta de cliente. Saia e entre novamente.",
    "error.refused": "Não foi possível enviar este convite.",
    "error.setup": "As indicações não podem ser exibidas aqui agora.",
    "error.generic": "Algo deu errado. Tente novamente.",
  },
});

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
.root { --_bg: #ffffff; --_fg: #1f1f1f; --_muted: #555555; --_border: #8a8d91; --_accent: #0b57d0;
  --_accent-fg: #ffffff; --_error: #b3261e; --_success: #146c2e; color-scheme: light;
  --bg: var(--referral-widget-bg, var(--_bg)); --fg: var(--referral-widget-fg, var(--_fg));
  --muted: var(--referral-widget-muted, var(--_muted)); --border: var(--referral-widget-border, var(--_border));
  --accent: var(--referral-widget-accent, var(--_accent)); --accent-fg: var(--referral-widget-accent-fg, var(--_accent-fg));
  --error: var(--referral-widget-error, var(--_error)); --success: var(--referral-widget-success, var(--_success));
  --row: var(--referral-widget-row-bg, transparent); --focus: var(--referral-widget-focus, var(--accent));
  --radius: var(--referral-widget-radius, 12px); color: var(--fg); }
.root.dark { --_bg: #1f1f1f; --_fg: #ececec; --_muted: #c2c2c2; --_border: #8e9196; --_accent: #a8c7fa;
  --_accent-fg: #062e6f; --_error: #ffb4ab; --_success: #8fd69f; color-scheme: dark; }
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
  line-height: 1.25; border-radius: calc(var(--radius) * .66); padding: .5rem .8rem; margin: 0; }
input, select { border: 1px solid var(--border); color: var(--fg); background: var(--bg); width: 100%; min-width: 0; }
input[readonly] { color: var(--fg); }
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
.message:empty { display: none; }
.message.error, .state { color: var(--error); font-weight: 600; }
.state { display: flex; flex-wrap: wrap; gap: .75rem; align-items: center; justify-content: space-between;
  border: 1px solid var(--error); border-radius: calc(var(--radius) * .66); padding: .75rem 1rem; margin: 1rem 0 0; }
.dev { margin: .75rem 0 0; font: .85em/1.4 ui-monospace, monospace; color: var(--muted);
  border-left: 3px solid var(--border); padding-left: .5rem; }
.share { margin-top: .75rem; }
.share:empty { display: none; }
.share > * + * { margin-top: .5rem; }
.qr { background: #fff; padding: 8px; border-radius: 8px; width: var(--qr, 168px); max-width: 100%; height: auto; display: block; }
.rows { list-style: none; margin: 0; padding: 0; display: grid; gap: .5rem; }
.rows > li { display: grid; grid-template-columns: 7.5rem minmax(0, 1fr) auto; gap: .125rem 1rem;
  align-items: baseline; padding: .6rem .75rem; border: 1px solid var(--border);
  border-radius: calc(var(--radius) * .66); background: var(--row); }
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
.more { margin-top: .75rem; }
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
// Developer faults: shown to the shopper as error.setup (or network), to the developer in full.
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
      message = `the broker at ${this.getAttribute("broker")} did not answer: check the broker attribute, that the broker runs, and that this page's origin (${location.origin}) is in BROKER_CORS_ORIGINS`;
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
    // The shop's words from Bubblehouse: a send refused with a 4xx of Bubblehouse's own id only.
    const refusal = status >= 400 && status < 500 && status !== 401 && status !== 429 && !ERROR_IDS.includes(id);
    if (during === "send" && refusal && text(error?.upstreamMessage)) return error.upstreamMessage;
    if (id === "missing_token" || id === "invalid_token") return this.t("error.signin");
    if (id === "invalid_input" && error.field === "destination") return this.t("error.destination");
    if (id === "rate_limit_exceeded" || status === 429) {
      const seconds = Math.max(1, Number(error.retryAfter) || 1);
      const duration = new Intl.NumberFormat(this.language, { style: "unit", unit: "second", unitDisplay: "long" }).format(seconds);
      return this.t("error.rate", { duration });
    }
    if (id === "network_error") return this.t("error.network");
    if (id === "timeout" || id === "upstream_timeout") return this.t("error.timeout");
    if (DEVELOPER.has(id)) return this.t(id === "broker_unreachable" ? "error.network" : "error.setup");
    if (/customer/.test(id) && status >= 400 && status < 500) return this.t("error.account");
    if (id.startsWith("upstream_") || id === "unexpected_response" || status >= 500) return this.t("error.unavailable");
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
    const box = h("input", { class: "grow", readonly: true, value: url, "aria-label": this.t("link"), part: "link" });
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
const EXP = new Uint8Array(512);
const LOG = new Uint8Array(256);
for (let i = 0, x = 1; i < 255; i++, x = (x << 1) ^ (x & 0x80 ? 0x11d : 0)) { EXP[i] = x; LOG[x] = i; }
for (let i = 255; i < 512; i++) EXP[i] = EXP[i - 255];
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

function qrAlignment(version) {
  if (version === 1) return [];
  const count = Math.floor(version / 7) + 2;
  const step = version === 32 ? 26 : Math.ceil((version * 4 + 4) / (count * 2 - 2)) * 2;
  const positions = [6];
  for (let at = version * 4 + 10; positions.length < count; at -= step) positions.splice(1, 0, at);
  return positions;
}

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
  // Blocks: the short ones first, the long ones one data codeword longer.
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
  const align = qrAlignment(version);
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
  // Two pixels a module at least, so that a long link's dense code stays readable.
  svg.style.setProperty("--qr", `${Math.max(168, size * 2)}px`);
  const shape = document.createElementNS(ns, "path");
  shape.setAttribute("d", path);
  shape.setAttribute("fill", "#000");
  svg.append(shape);
  return svg;
}
