// /tes: each TE label's broker: TEs by state, leases held, the queue of waiting holders.
"use strict";
(() => {
  const root = document.getElementById("tes");
  lm.poll("/api/tes", root, (view) => {
    const out = [];
    for (const b of view.brokers) {
      const states = Object.entries(b.by_state).filter(([, n]) => n).map(([s, n]) => `${n} ${s}`);
      out.push(lm.el("section", { class: "card broker", "data-label": b.label },
        lm.el("h2", {}, `label ${b.label}`), lm.el("p", {}, states.join(", ") || "no TEs"),
        b.draining_hosts.length ? lm.el("p", { class: "muted" }, `draining: ${b.draining_hosts.join(", ")}`) : null,
        lm.stuckLines(b.stuck),
        lm.table(["TE", "state", "holder", "lease", "expires", "note"], b.tes.map((t) =>
          [t.te, t.state, t.holder || "", t.lease || "", t.expires ? new Date(t.expires * 1000).toLocaleTimeString() : "",
           t.reason || t.operator || ""])),
        lm.el("h3", {}, `Queue (${b.queue.length} waiting)`),
        b.queue.length ? lm.table(["#", "holder", "lease", "waiting"], b.queue.map((w) =>
          [String(w.position + 1), w.holder, w.lease, lm.duration(w.waiting)])) : lm.el("p", { class: "muted" }, "nobody waits")));
    }
    for (const u of view.unanswered) out.push(lm.el("p", { class: "stuck" }, `${u.label} not answering: ${u.error}`));
    if (!out.length) out.push(lm.el("p", { class: "muted" }, "No TE hosts are configured."));
    return out;
  });
})();
