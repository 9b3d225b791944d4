// Helpers every page shares: fetching the JSON API and building elements without innerHTML
// (everything shown comes from change subjects and job names: never parse it as HTML).
"use strict";
const lm = {
  async getJSON(url) {
    const response = await fetch(url, { headers: { Accept: "application/json" } });
    let body = null;
    try { body = await response.json(); } catch (e) { body = null; }
    if (!response.ok) {
      const error = (body && body.error) || `${response.status} ${response.statusText}`;
      const hint = (body && body.hint) || "";
      const err = new Error(hint ? `${error} (${hint})` : error);
      err.status = response.status;
      throw err;
    }
    return body;
  },
  el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : value);
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  },
  duration(seconds) {
    if (seconds === null || seconds === undefined) return "";
    if (seconds < 1) return "<1s";
    seconds = Math.round(seconds);
    const h = Math.floor(seconds / 3600), m = Math.floor((seconds % 3600) / 60), s = seconds % 60;
    if (h) return `${h}h ${String(m).padStart(2, "0")}m`;
    if (m) return `${m}m ${String(s).padStart(2, "0")}s`;
    return `${s}s`;
  },
  showError(container, message) {
    let banner = container.querySelector(":scope > .error-banner");
    if (!message) { if (banner) banner.remove(); return; }
    if (!banner) { banner = lm.el("div", { class: "error-banner", role: "alert" });
                   container.prepend(banner); }
    banner.textContent = message;
  },
};
