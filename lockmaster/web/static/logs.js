// The log viewer: line anchors (#L42, #L40-L50), shift-click ranges, and tailing a running
// build's log through /api/logs/<path>?offset=N (logs_pages.py). Lines are built with
// textContent only: a log is never parsed as HTML.
"use strict";
(function () {
  const log = document.getElementById("log");
  if (!log) return;
  const state = document.getElementById("log-state");
  const follow = document.getElementById("follow");
  let offset = Number(log.dataset.offset);
  let count = Number(log.dataset.lines);
  let continued = log.dataset.continued === "1";
  let anchorStart = null;

  function parseHash() {
    const m = /^#L(\d+)(?:-L?(\d+))?$/.exec(location.hash);
    if (!m) return null;
    const a = Number(m[1]), b = Number(m[2] || m[1]);
    return [Math.min(a, b), Math.max(a, b)];
  }

  function highlight(scroll) {
    for (const line of log.querySelectorAll(".line.hl")) line.classList.remove("hl");
    const range = parseHash();
    if (!range) return;
    for (let n = range[0]; n <= Math.min(range[1], count); n++) {
      const line = document.getElementById("L" + n);
      if (line) line.classList.add("hl");
    }
    const first = document.getElementById("L" + range[0]);
    if (scroll && first) first.scrollIntoView({ block: "center" });
  }

  log.addEventListener("click", (event) => {
    const link = event.target.closest("a.ln");
    if (!link) return;
    event.preventDefault();
    const n = Number(link.textContent);
    if (event.shiftKey && anchorStart !== null && anchorStart !== n) {
      const a = Math.min(anchorStart, n), b = Math.max(anchorStart, n);
      history.replaceState(null, "", `#L${a}-L${b}`);
    } else {
      anchorStart = n;
      history.replaceState(null, "", `#L${n}`);
    }
    highlight(false);
  });
  window.addEventListener("hashchange", () => highlight(true));

  function addLine(text, severity) {
    count += 1;
    const line = lm.el("span", { class: severity ? `line ${severity}` : "line", id: "L" + count },
      lm.el("a", { class: "ln", href: "#L" + count, text: String(count) }),
      lm.el("span", { class: "t", text }));
    log.append(line);  // each line is a block: a "\n" between them would double the spacing
  }

  function append(lines) {
    for (const [index, item] of lines.entries()) {
      if (index === 0 && continued && count > 0) {
        // The previous slice ended inside this line: it goes on.
        document.getElementById("L" + count).querySelector(".t").append(item.text);
      } else {
        addLine(item.text, item.severity);
      }
    }
  }

  let errorIndex = -1;
  document.getElementById("next-error").addEventListener("click", () => {
    const errors = log.querySelectorAll(".line.error");
    if (!errors.length) { state.textContent = "no error lines"; return; }
    errorIndex = (errorIndex + 1) % errors.length;
    const line = errors[errorIndex];
    history.replaceState(null, "", "#" + line.id);
    highlight(false);
    line.scrollIntoView({ block: "center" });
  });

  async function tail() {
    let body;
    try {
      body = await lm.getJSON(`/api/logs/${log.dataset.path}?offset=${offset}`);
    } catch (err) {
      if (err.status === 416) { location.reload(); return; }
      state.textContent = `could not read more: ${err.message}; trying again`;
      setTimeout(tail, 5000);
      return;
    }
    append(body.lines);
    continued = body.continued;
    offset = body.next_offset;
    highlight(false);
    if (follow.checked && body.lines.length) window.scrollTo(0, document.body.scrollHeight);
    if (body.next_offset < body.size) {
      state.textContent = `loading: ${offset} of ${body.size} bytes`;
      setTimeout(tail, 0);
    } else if (body.running) {
      state.className = "running";
      state.textContent = "running: new lines appear as they arrive";
      setTimeout(tail, 2000);
    } else {
      state.className = "muted";
      state.textContent = `${body.size} bytes, complete`;
    }
  }

  highlight(true);
  if (log.dataset.more === "1") tail();
})();
