// A storefront's TypeScript, compiled with tsc --strict against the package's declarations.
import {
  createReferralsClient,
  httpUrl,
  isKnownShareAction,
  ReferralsError,
  shopperMessage,
  type ReferResponse,
} from "@referral-broker/client";
import "@referral-broker/client/widget";
import { addMessages, MESSAGES, qrModules } from "@referral-broker/client/widget";
import { ReferralWidget as ReactReferralWidget } from "@referral-broker/client/react";
import { ReferralWidget as VueReferralWidget } from "@referral-broker/client/vue";

const client = createReferralsClient({
  baseUrl: "https://referrals.shop.example",
  shop: "my-shop",
  getToken: async ({ forceRefresh }) => (forceRefresh ? "fresh" : "cached"),
});

export async function send(destination: string): Promise<string> {
  try {
    const answer: ReferResponse = await client.sendReferral({ channel: "email", destination });
    const action = answer.share_action;
    if (isKnownShareAction(action)) {
      switch (action.type) {
        case "open_url":
          return action.url;
        case "copy_link":
          return action.link;
        case "show_qr_code":
          return action.data ?? action.link ?? "";
        case "none":
          return "";
      }
    }
    // An unfamiliar shape: nothing of it is typed, so it can only be narrowed by hand.
    const unknownUrl: unknown = action?.["url"];
    return httpUrl(unknownUrl) ?? httpUrl(answer.referral.link) ?? "";
  } catch (error) {
    if (error instanceof ReferralsError) {
      const words: string = shopperMessage(error);
      const shop: string | null = error.upstreamMessage;
      return shop ?? words;
    }
    throw error;
  }
}

const widget = document.createElement("referral-widget");
widget.setAttribute("broker", "https://referrals.shop.example");
widget.getToken = async () => "token";
widget.messages = { send: "Invite a friend", de: { send: "Freunde einladen" } };
widget.setAttribute("theme", "auto");
const scheme: "light" | "dark" = widget.scheme;
widget.addEventListener("referral-sent", (event) => {
  const bhid: string = event.detail.referral.referral_bhid;
  console.log(bhid);
});
widget.addEventListener("referral-error", (event) => console.log(event.detail.id));
widget.addEventListener("referrals-loaded", (event) => console.log(event.detail.referrals.length));
document.body.append(widget);
const modules: boolean[][] = qrModules("https://shop.example/r/abc");
const title = MESSAGES.de.title ?? "";
console.log(modules.length, typeof title === "string" ? title : title.other, scheme);
widget.addEventListener("referral-link-copied", (event) => console.log(event.detail.url));
widget.addEventListener("referral-shared", (event) => console.log(event.detail.channel));
addMessages("pl", {
  send: "Wyślij zaproszenie",
  loaded: { one: "{count} polecenie", few: "{count} polecenia", other: "{count} poleceń" },
});
const inMarkup: JSX.IntrinsicElements["referral-widget"] = { broker: "b", "token-url": "/t", theme: "dark" };
const element = ReactReferralWidget({
  broker: "https://referrals.shop.example",
  shop: "my-shop",
  tokenUrl: "/account/referral-token",
  theme: "auto",
  onSent: (answer) => console.log(answer.referral.referral_bhid),
  onShared: (detail) => console.log(detail.channel, detail.url),
});
console.log(inMarkup, element.key, VueReferralWidget);
