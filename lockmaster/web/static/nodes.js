// /nodes: each pool's nodes by state against its quota, its nodes, its waiting requests.
"use strict";
(() => {
  const root = document.getElementById("nodes");
  const quota = (used, max) => (max === null || max === undefined ? `${used}` : `${used} / ${max}`);
  lm.poll("/api/nodes", root, (view) => {
    const out = [];
    for (const pool of view.pools) {
      const states = Object.entries(pool.by_state).filter(([, n]) => n).map(([s, n]) => `${n} ${s}`);
      out.push(lm.el("section", { class: "card pool", "data-pool": pool.pool },
        lm.el("h2", {}, `${pool.pool} `, lm.el("span", { class: "muted" }, `(${pool.driver})`),
          pool.enabled ? "" : lm.el("span", { class: "bad" }, ` disabled: ${pool.disabled_reason || ""}`)),
        lm.el("div", { class: "kv" },
          lm.el("span", {}, "servers"), lm.el("span", {}, quota(pool.used.servers, pool.quota.max_servers)),
          pool.quota.max_cores !== null ? [lm.el("span", {}, "cores"), lm.el("span", {}, quota(pool.used.cores, pool.quota.max_cores))] : null,
          pool.quota.max_ram !== null ? [lm.el("span", {}, "RAM (MiB)"), lm.el("span", {}, quota(pool.used.ram, pool.quota.max_ram))] : null,
          lm.el("span", {}, "by state"), lm.el("span", {}, states.join(", ") || "no nodes"),
          lm.el("span", {}, "requests waiting"), lm.el("span", {}, String(pool.requests.length))),
        lm.stuckLines(pool.stuck),
        pool.nodes.length ? lm.table(["node", "label", "state", "host", "held"], pool.nodes.map((n) =>
          [n.id, n.label, n.state, n.host || "", n.hold_reason ? `${n.hold_reason}${n.held_by ? " (" + n.held_by + ")" : ""}` : ""])) : null,
        pool.requests.length ? [lm.el("h3", {}, "Waiting requests, in the order they are served"),
          lm.table(["#", "request", "for", "labels", "waiting"], pool.requests.map((r) =>
            [String(r.position + 1), r.id, r.holder, r.labels.join(" "), lm.duration(r.waiting)]))] : null));
    }
    for (const u of view.unanswered) out.push(lm.el("p", { class: "stuck" }, `${u.pool} not answering: ${u.error}`));
    if (!out.length) out.push(lm.el("p", { class: "muted" }, "No node pools are configured."));
    return out;
  });
})();
