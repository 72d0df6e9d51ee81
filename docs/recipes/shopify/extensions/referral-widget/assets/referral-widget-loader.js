// Loads <referral-widget> from the broker that each widget names: the version the broker runs
// now, with that version's integrity, both read from its /static/manifest.json. The theme thus
// never pins a version or a hash, and the browser still checks the bytes it runs against the
// hash the broker published for them. Shopify adds this file to pages with the app block.
(() => {
  const brokers = new Set();
  for (const element of document.querySelectorAll("referral-widget[broker]")) {
    brokers.add(element.getAttribute("broker").replace(/\/+$/, ""));
  }
  for (const broker of brokers) {
    fetch(`${broker}/static/manifest.json`, { mode: "cors", credentials: "omit" })
      .then((answer) => (answer.ok ? answer.json() : Promise.reject(new Error(`HTTP ${answer.status}`))))
      .then((manifest) => {
        const widget = manifest.files["referral-widget.js"];
        const script = document.createElement("script");
        script.type = "module";
        script.src = new URL(widget.path, `${broker}/`).href;
        script.integrity = widget.integrity;
        script.crossOrigin = "anonymous";
        document.head.append(script);
      })
      .catch((error) => console.warn(`referral-widget: ${broker}/static/manifest.json could not be read`, error));
  }
})();
