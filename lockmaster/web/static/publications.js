// /publications: the publish queue and the recent publications with their mirror syncs.
"use strict";
(() => {
  const root = document.getElementById("publications");
  lm.poll("/api/publications", root, (view) => {
    const out = [];
    if (!view.repository) return [lm.el("p", { class: "muted" }, "Nothing has been published yet.")];
    out.push(lm.el("h2", {}, `Queue of ${view.repository}`));
    const open = view.queue.filter((e) => !["done", "failed"].includes(e.state));
    out.push(open.length ? lm.table(["#", "change", "state", "snapshot", "detail"], open.map((e) =>
      [String(e.sequence), e.change, e.state, e.snapshot || "", e.detail || ""])) : lm.el("p", { class: "muted" }, "empty"));
    out.push(lm.el("h2", {}, "Recent publications"));
    for (const p of view.recent) {
      out.push(lm.el("section", { class: "card publication" },
        lm.el("h3", {}, p.change || p.workflow_id, p.snapshot ? lm.el("span", { class: "muted" }, ` as ${p.snapshot}`) : ""),
        p.error ? lm.el("p", { class: "bad" }, p.error) : null,
        p.steps.length ? lm.table(["step", "state", "attempts", "detail"], p.steps.map((s) =>
          [s.url ? lm.el("a", { href: s.url }, s.name) : s.name, lm.el("span", { class: s.state }, s.state),
           String(s.attempts), s.detail || ""])) : null));
    }
    return out;
  });
})();
