// Shared by the Nodes, TEs and Publications pages: fetch an API every few seconds and hand the
// answer to the page's render function (no reload; errors in a banner, polling goes on).
"use strict";
lm.poll = function poll(url, root, render, every = 3000) {
  async function refresh() {
    try {
      const view = await lm.getJSON(url);
      lm.showError(root.parentElement, "");
      root.replaceChildren(...render(view));
    } catch (err) {
      lm.showError(root.parentElement, err.message);
    }
    setTimeout(refresh, every);
  }
  refresh();
};
lm.table = function table(headers, rows) {
  return lm.el("table", {},
    lm.el("thead", {}, lm.el("tr", {}, headers.map((h) => lm.el("th", {}, h)))),
    lm.el("tbody", {}, rows.map((cells) => lm.el("tr", {}, cells.map((c) => lm.el("td", {}, c))))));
};
lm.stuckLines = (stuck) => stuck.map((s) =>
  lm.el("p", { class: "stuck" }, `stuck: ${s.what} (${s.failures} round(s)): ${s.error || ""}`));
