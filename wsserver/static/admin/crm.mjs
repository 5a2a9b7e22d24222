// A CRM group (seed 000): its counters and its LINE accounts.

import { get, query, seg } from "/admin/api.mjs";
import { card, h, show, statusLine, table } from "/admin/dom.mjs";
import { t } from "/admin/i18n.mjs";

const KNOWN = new Set(["line_account_id", "name", "online_status"]);

export function crm(root, params) {
  const groupInput = h("input", { name: "group_id", required: true, value: params.get("group_id") ?? "" });
  const form = h("form", { class: "row", id: "crm-search" },
    h("label", {}, h("span", {}, t("group_id")), groupInput),
    h("button", { type: "submit" }, t("show")));
  const status = statusLine();
  const result = h("div", { id: "crm-result" });
  root.append(h("h2", {}, t("crm_view")), form, status, result);

  async function load() {
    const group = groupInput.value.trim();
    if (!group) return;
    history.replaceState(null, "", "#crm" + query({ group_id: group }));
    try {
      const [stats, accounts] = await Promise.all([
        get("/api/groups/" + seg(group) + "/stats"), get("/api/groups/" + seg(group) + "/accounts"),
      ]);
      result.replaceChildren(
        h("div", { class: "cards" },
          ["total_accounts", "online_accounts", "total_incoming", "today_incoming", "duplicate_incoming", "today_duplicate"]
            .map((k) => card(k, stats[k], k))),
        h("h3", {}, t("accounts")),
        table(["line_account_id", "name", "online_status", "details"],
          accounts.accounts.map((a) => [a.line_account_id, a.name, a.online_status,
            Object.entries(a).filter(([k]) => !KNOWN.has(k)).map(([k, v]) => `${k}=${show(v)}`).join("  ")]), "no_accounts"),
      );
      status.clear();
    } catch (error) {
      status.fail(error);
    }
  }

  form.addEventListener("submit", (event) => { event.preventDefault(); load(); });
  load();
}
