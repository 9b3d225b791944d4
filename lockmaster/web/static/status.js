// The status page: renders /api/status, and again every 2 s without reloading the page.
// Filters (project, change) live in the URL's query string; /change/<N> is a change's deep link
// (the page filtered to it, its rows highlighted), as is /#change-<N>.
"use strict";
(() => {
  const POLL_MS = 2000;
  const root = document.getElementById("status");
  const form = document.getElementById("filters");
  const updated = document.getElementById("updated");
  const deepChange = root.dataset.change || "";
  let scrolled = false;
  let timer = null;

  function currentFilters() {
    const params = new URLSearchParams(location.search);
    return { project: params.get("project") || "", change: deepChange || params.get("change") || "" };
  }

  function highlighted() {
    const f = currentFilters();
    if (f.change) return f.change.split(",")[0];
    const m = /^#change-(\d+)/.exec(location.hash);
    return m ? m[1] : "";
  }

  function bar(progress, state) {
    const pct = progress === null || progress === undefined ? null : Math.round(progress * 100);
    const outer = lm.el("div", { class: "bar", role: "progressbar", "aria-valuemin": "0",
      "aria-valuemax": "100", "aria-valuenow": pct === null ? null : String(pct),
      title: pct === null ? "no estimate yet" : `${pct}%` });
    const inner = lm.el("div", { class: `fill ${state || ""}` });
    inner.style.width = pct === null ? "100%" : `${pct}%`;
    if (pct === null) inner.classList.add("unknown");
    outer.append(inner);
    return outer;
  }

  function jobRow(job) {
    const state = job.state, cls = job.state;  // a final result (SUCCESS...) or running/waiting
    const times = [];
    if (job.elapsed !== null) times.push(`${lm.duration(job.elapsed)} elapsed`);
    if (!job.final && job.remaining !== null) times.push(`~${lm.duration(job.remaining)} left`);
    if (!job.final && job.remaining === null && job.estimated === null) times.push("no estimate");
    const why = job.waiting ? job.waiting.text : (job.reason && job.state !== "SUCCESS" ? job.reason : "");
    return lm.el("tr", { class: "job", "data-job": job.name },
      lm.el("td", {}, job.log_url ? lm.el("a", { href: `/logs?url=${encodeURIComponent(job.log_url)}` }, job.name) : job.name,
        job.voting ? "" : lm.el("span", { class: "muted" }, " (non-voting)")),
      lm.el("td", { class: `state ${cls}` }, state + (job.attempt > 1 ? ` (attempt ${job.attempt})` : "")),
      lm.el("td", { class: "progress-cell" }, bar(job.progress, cls)),
      lm.el("td", { class: "times" }, times.join(", ")),
      lm.el("td", { class: "why muted" }, why || ""));
  }

  function itemCard(pipeline, queue, item, mark) {
    const est = item.estimate || {};
    const facts = [];
    if (item.stack.length) facts.push(`tested on ${item.stack.join(" ")} + ${item.change}`);
    if (item.in_queue !== null) facts.push(`${lm.duration(item.in_queue)} in queue`);
    if (est.remaining !== null && est.remaining !== undefined) facts.push(`~${lm.duration(est.remaining)} left`);
    else facts.push("no estimate");
    if (est.starts_in) facts.push(`starts in ~${lm.duration(est.starts_in)}`);
    const link = `/change/${item.number}`;
    const card = lm.el("section", {
        class: `card item ${item.failing ? "failing" : ""} ${mark ? "highlight" : ""}`,
        id: `${pipeline.name}-${queue.name}-${item.anchor}`.replace(/[^A-Za-z0-9_-]/g, "_"),
        "data-number": String(item.number), "data-change": item.change },
      lm.el("header", { class: "item-head" },
        lm.el("span", { class: "pos" }, `#${item.position}`),
        lm.el("a", { class: "change-link", href: link, title: "link to this change" }, item.change),
        lm.el("span", { class: "project" }, item.project),
        item.branch ? lm.el("span", { class: "muted" }, item.branch) : null,
        lm.el("span", { class: `item-state ${item.state.replace(/ /g, "-")}` }, item.state),
        lm.el("span", { class: "muted facts" }, facts.join(" · "))),
      bar(item.progress, item.failing ? "FAILURE" : "running"),
      item.waiting ? lm.el("p", { class: `why ${item.waiting.kind === "stuck" ? "stuck" : ""}` },
        item.waiting.text) : null,
      item.operator.map((line) => lm.el("p", { class: "muted" }, line)),
      item.merge_error ? lm.el("p", { class: "bad" }, item.merge_error) : null,
      item.jobs.length ? lm.el("table", { class: "jobs" },
        lm.el("thead", {}, lm.el("tr", {}, ["job", "state", "progress", "time", "why"].map(
          (h) => lm.el("th", {}, h)))),
        lm.el("tbody", {}, item.jobs.map(jobRow))) : null);
    return card;
  }

  function render(view) {
    const mark = highlighted();
    const out = [];
    let shown = 0;
    for (const pipeline of view.pipelines) {
      const section = lm.el("section", { class: "pipeline", "data-pipeline": pipeline.name },
        lm.el("h2", {}, `${pipeline.name} `, lm.el("span", { class: "muted" }, `(${pipeline.manager})`)));
      for (const queue of pipeline.queues) {
        const head = lm.el("h3", {}, `queue ${queue.name}`, lm.el("span", { class: "muted" },
          queue.window ? ` — window ${queue.window}, ${queue.items.length} item(s)` : ` — ${queue.items.length} item(s)`));
        section.append(head);
        for (const stuck of queue.stuck) section.append(lm.el("p", { class: "stuck" }, stuck.text));
        for (const item of queue.items) {
          shown += 1;
          section.append(itemCard(pipeline, queue, item, mark && String(item.number) === mark));
        }
      }
      for (const what of pipeline.unanswered) {
        section.append(lm.el("p", { class: "stuck" }, `not answering (is its worker running?): ${what}`));
      }
      if (!pipeline.queues.length && !pipeline.unanswered.length) {
        section.append(lm.el("p", { class: "muted" }, "empty"));
      }
      out.push(section);
    }
    if (!shown && (view.filters.project || view.filters.change)) {
      const said = view.filters.change
        ? `Change ${view.filters.change} is in no pipeline now: it may have finished (its report is in the review system).`
        : "Nothing queued matches the filter.";
      out.unshift(lm.el("p", { class: "muted", id: "no-match" }, said));
    }
    root.replaceChildren(...out);
    updated.textContent = `updated ${new Date(view.generated_at * 1000).toLocaleTimeString()}`;
    if (mark && !scrolled) {
      const first = root.querySelector(".highlight");
      if (first) { first.scrollIntoView({ block: "center" }); scrolled = true; }
    }
  }

  async function refresh() {
    clearTimeout(timer);
    const f = currentFilters();
    const params = new URLSearchParams();
    if (f.project) params.set("project", f.project);
    if (f.change) params.set("change", f.change);
    try {
      const view = await lm.getJSON(`/api/status?${params}`);
      lm.showError(root.parentElement, "");
      render(view);
    } catch (err) {
      lm.showError(root.parentElement, err.message);
      if (err.status === 400) return;  // a bad filter: nothing to poll until it is fixed
    }
    timer = setTimeout(refresh, POLL_MS);
  }

  const f = currentFilters();
  form.project.value = f.project;
  form.change.value = f.change;
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const params = new URLSearchParams();
    if (form.project.value.trim()) params.set("project", form.project.value.trim());
    if (form.change.value.trim()) params.set("change", form.change.value.trim());
    const query = params.toString() ? `?${params}` : "";
    // A change's deep link is that change: another filter is the status page's.
    if (deepChange) { location.assign(`/${query}`); return; }
    history.replaceState(null, "", `${location.pathname}${query}`);
    scrolled = false;
    refresh();
  });
  window.addEventListener("hashchange", () => { scrolled = false; refresh(); });
  refresh();
})();
