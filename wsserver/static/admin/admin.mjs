// The operator dashboard (docs/ADMIN.md): login, the header, and one view at
// a time chosen by the URL's hash (`#users?user_id=42`).

import { credential, forget, isReadOnly, login, setReadOnly, settings } from "/admin/api.mjs";
import { codes } from "/admin/codes.mjs";
import { crm } from "/admin/crm.mjs";
import { h, statusLine } from "/admin/dom.mjs";
import { LOCALES, locale, setLocale, t } from "/admin/i18n.mjs";
import { overview } from "/admin/overview.mjs";
import { publish } from "/admin/publish.mjs";
import { rooms } from "/admin/rooms.mjs";
import { users } from "/admin/users.mjs";

const LANGUAGE = "wsserver.admin.locale";
const VIEWS = { overview, users, rooms, crm, codes, publish };
const MUTATING_VIEWS = new Set(["publish"]); // nothing to show without POST
let version = "";
let stopView = null;

function route() {
  const [name, search] = location.hash.slice(1).split("?");
  const allowed = (n) => n in VIEWS && !(isReadOnly() && MUTATING_VIEWS.has(n));
  return { name: allowed(name) ? name : "overview", params: new URLSearchParams(search ?? "") };
}

function header(loggedIn, current) {
  const language = h("select", { id: "language", "aria-label": t("language") },
    LOCALES.map((l) => h("option", { value: l, selected: l === locale() }, l === "zh-CN" ? "中文" : "English")));
  language.addEventListener("change", () => {
    sessionStorage.setItem(LANGUAGE, language.value);
    setLocale(language.value);
    render();
  });
  const nav = loggedIn
    ? h("nav", {}, Object.keys(VIEWS).filter((n) => !(isReadOnly() && MUTATING_VIEWS.has(n)))
      .map((n) => h("a", { href: "#" + n, class: n === current ? "active" : null, "data-view": n }, t(n))))
    : null;
  return [
    h("h1", {}, "wsserver ", h("small", {}, version)),
    nav,
    h("div", { class: "tools" },
      isReadOnly() ? h("span", { class: "badge", id: "read-only" }, t("read_only")) : null,
      language,
      loggedIn ? h("button", { id: "logout", onclick: () => { forget(); render(); } }, t("logout")) : null),
  ];
}

function loginForm(main) {
  const input = h("input", { id: "credential", name: "credential", type: "password", autocomplete: "off", required: true });
  const status = statusLine();
  const form = h("form", { class: "login stack", id: "login" },
    h("h2", {}, t("login_title")),
    h("p", { class: "muted" }, t("login_hint")),
    h("label", {}, h("span", {}, t("credential")), input),
    h("div", {}, h("button", { type: "submit" }, t("login"))),
    status);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      await login(input.value.trim());
      render();
    } catch (error) {
      status.fail(error);
    }
  });
  main.append(form);
  input.focus();
}

function render() {
  if (stopView) stopView();
  stopView = null;
  document.documentElement.lang = locale();
  document.title = t("title");
  const main = document.getElementById("app");
  main.replaceChildren();
  const loggedIn = Boolean(credential());
  const { name, params } = route();
  document.getElementById("top").replaceChildren(...header(loggedIn, name).filter(Boolean));
  if (!loggedIn) {
    loginForm(main);
    return;
  }
  const section = h("section", { id: "view-" + name });
  main.append(section);
  stopView = VIEWS[name](section, params) ?? null;
}

async function start() {
  const s = await settings();
  version = s.version;
  setReadOnly(s.read_only);
  document.body.dataset.readOnly = String(s.read_only);
  setLocale(sessionStorage.getItem(LANGUAGE) || s.locale);
  // the views update the hash with replaceState (no event): this is the operator's own navigation
  window.addEventListener("hashchange", render);
  window.addEventListener("admin:unauthorized", () => { forget(); render(); });
  render();
  document.body.dataset.ready = "true";
}

start().catch((error) => {
  // no settings (the dashboard was turned off meanwhile, the hub is down): say so
  document.getElementById("app").replaceChildren(h("p", { class: "status error", role: "alert" }, String(error.message ?? error)));
});
