// Building the page: elements from data, never HTML from strings.
// Every value shown (device_info, user agents, room names) comes from clients,
// so it is set as text, and no element carries an inline style or handler
// (the page's Content-Security-Policy forbids both).

import { t } from "/admin/i18n.mjs";

/** `h("button", {class: "x", onclick: fn}, "text", child)`: one element. */
export function h(tag, attrs, ...children) {
  const el = tag.startsWith("svg:")
    ? document.createElementNS("http://www.w3.org/2000/svg", tag.slice(4))
    : document.createElement(tag);
  for (const [key, value] of Object.entries(attrs ?? {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (value === true) el.setAttribute(key, "");
    else el.setAttribute(key, String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

/** A value as text: objects as compact JSON, nothing as a dash. */
export function show(value) {
  if (value === null || value === undefined || value === "") return "–";
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

/** Unix milliseconds as local date and time. */
export function when(ms) {
  return typeof ms === "number" && ms > 0 ? new Date(ms).toLocaleString() : "–";
}

/** Seconds as `3d 4h 5m 6s`. */
export function duration(seconds) {
  let s = Math.max(0, Math.floor(Number(seconds) || 0));
  const parts = [];
  for (const [unit, size] of [["d", 86400], ["h", 3600], ["m", 60]]) {
    if (s >= size || parts.length) parts.push(Math.floor(s / size) + unit);
    s %= size;
  }
  parts.push(s + "s");
  return parts.join(" ");
}

/** A table: `columns` are catalogue keys, `rows` arrays of cells (text or nodes). */
export function table(columns, rows, empty = "empty") {
  if (!rows.length) return h("p", { class: "muted" }, t(empty));
  return h("table", {},
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", {}, t(c))))),
    h("tbody", {}, rows.map((row) => h("tr", {}, row.map((cell) => h("td", {}, cell instanceof Node ? cell : show(cell)))))));
}

/** A labelled input. */
export function field(label, attrs) {
  return h("label", {}, h("span", {}, t(label)), h("input", attrs));
}

/** A stat card: a label and a big value. */
export function card(label, value, id) {
  return h("div", { class: "card", "data-stat": id }, h("div", { class: "label" }, t(label)), h("div", { class: "value" }, show(value)));
}

/** The line a view shows its last error or result on. */
export function statusLine() {
  const el = h("p", { class: "status", role: "status" });
  el.fail = (error) => { el.className = "status error"; el.setAttribute("role", "alert"); el.textContent = error.message; };
  el.ok = (text) => { el.className = "status ok"; el.setAttribute("role", "status"); el.textContent = text; };
  el.clear = () => { el.className = "status"; el.textContent = ""; };
  return el;
}
