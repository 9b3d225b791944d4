// /builds and /buildsets: the filter form, the table and its pages, all from the JSON API
// (/api/builds, /api/buildsets). The filters live in the page's address, so a filtered view
// is a link to share.
"use strict";
(function () {
  const form = document.getElementById("filters");
  const out = document.getElementById("history");
  if (!form || !out) return;
  const kind = form.dataset.kind;  // "builds" or "buildsets"
  const LIMIT = 50;

  function params() {
    const query = new URLSearchParams();
    for (const [key, value] of new FormData(form)) if (value) query.set(key, value);
    return query;
  }

  function cell(content, cls) { return lm.el("td", { class: cls }, content); }

  function link(href, text) { return href ? lm.el("a", { href, text }) : ""; }

  function buildRow(b) {
    return lm.el("tr", {},
      cell(link(b.url, b.uuid.slice(0, 12))),
      cell(link(`/job/${encodeURIComponent(b.job)}`, b.job)),
      cell(b.project),
      cell(link(`/builds?change=${b.change}`, `${b.change},${b.patchset}`)),
      cell(b.pipeline),
      cell(b.result, b.result),
      cell(lm.duration(b.duration)),
      cell(b.end_time ? b.end_time.replace("T", " ").slice(0, 19) : ""),
      cell(link(b.log_view || b.log_url, b.log_url ? "log" : "")),
      cell(b.known_failures.map((k) => link(k.bug, k.signature))));
  }

  function buildsetRow(s) {
    return lm.el("tr", {},
      cell(link(s.url, s.uuid.slice(0, 12))),
      cell(s.project),
      cell(link(`/buildsets?change=${s.change}`, `${s.change},${s.patchset}`)),
      cell(s.pipeline + (s.queue ? ` (${s.queue})` : "")),
      cell(s.result, s.result),
      cell(s.changes_key),
      cell(s.end_time ? s.end_time.replace("T", " ").slice(0, 19) : ""),
      cell(s.reason || ""));
  }

  const HEADS = {
    builds: ["build", "job", "project", "change", "pipeline", "result", "duration", "ended",
             "log", "known failure"],
    buildsets: ["buildset", "project", "change", "pipeline", "result", "tested with",
                "ended", "reason"],
  };

  async function load(offset) {
    const query = params();
    query.set("limit", String(LIMIT));
    if (offset) query.set("offset", String(offset));
    const shown = params();
    if (offset) shown.set("offset", String(offset));
    history.replaceState(null, "", `${location.pathname}?${shown}`);
    let body;
    try {
      body = await lm.getJSON(`/api/${kind}?${query}`);
    } catch (err) {
      out.replaceChildren();
      lm.showError(out, err.message);
      return;
    }
    lm.showError(out, "");
    const rows = body[kind].map(kind === "builds" ? buildRow : buildsetRow);
    const table = lm.el("table", {},
      lm.el("thead", {}, lm.el("tr", {}, HEADS[kind].map((h) => lm.el("th", { text: h })))),
      lm.el("tbody", {}, rows.length ? rows
        : lm.el("tr", {}, lm.el("td", { colspan: HEADS[kind].length, class: "muted",
                                         text: `no ${kind} match these filters` }))));
    const pager = lm.el("div", { class: "pager" },
      offset ? lm.el("button", { type: "button", text: "newer",
                                 onclick: () => load(Math.max(0, offset - LIMIT)) }) : "",
      lm.el("span", { class: "muted", text: `${offset + 1}–${offset + rows.length}` }),
      body.next_offset !== null ? lm.el("button", { type: "button", text: "older",
                                                     onclick: () => load(body.next_offset) })
        : "");
    out.replaceChildren(table, pager);
  }

  form.addEventListener("submit", (event) => { event.preventDefault(); load(0); });
  const start = Number(new URLSearchParams(location.search).get("offset") || 0);
  load(Number.isFinite(start) && start > 0 ? start : 0);
})();
