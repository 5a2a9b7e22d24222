// Activation codes: list, create, enable/disable, delete (a second click confirms).

import { del, get, isReadOnly, post, seg } from "/admin/api.mjs";
import { h, statusLine, table } from "/admin/dom.mjs";
import { t } from "/admin/i18n.mjs";

export function codes(root) {
  const status = statusLine();
  const list = h("div", { id: "code-list" });
  const mutate = !isReadOnly();
  root.append(h("h2", {}, t("codes_view")));
  if (mutate) {
    const code = h("input", { name: "code", required: true, autocomplete: "off" });
    const group = h("input", { name: "group_id", required: true });
    const name = h("input", { name: "name" });
    const form = h("form", { class: "row", id: "code-create" },
      h("label", {}, h("span", {}, t("code")), code),
      h("label", {}, h("span", {}, t("group_id")), group),
      h("label", {}, h("span", {}, t("name")), name),
      h("button", { type: "submit" }, t("create")));
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      try {
        const reply = await post("/api/activation-codes", { code: code.value.trim(), group_id: group.value.trim(), name: name.value.trim(), enabled: true });
        code.value = "";
        await load();
        status.ok(t(reply.created ? "code_created" : "code_replaced", { code: reply.code }));
      } catch (error) {
        status.fail(error);
      }
    });
    root.append(form);
  }
  root.append(status, list);

  async function change(action) {
    try {
      const text = await action();
      await load();
      status.ok(text);
    } catch (error) {
      status.fail(error);
    }
  }

  // The code whose delete button waits for its confirming click. Kept outside the
  // button: a reload of the list (after another change) re-creates the buttons,
  // and the confirmation must survive it.
  let armed = null;

  function confirmDelete(row) {
    const button = h("button", { class: "danger", "data-delete": row.code },
      t(armed?.code === row.code ? "confirm_delete" : "delete"));
    button.addEventListener("click", () => {
      if (armed?.code !== row.code) {
        if (armed) clearTimeout(armed.timer);
        const disarm = () => {
          armed = null;
          const current = list.querySelector(`button[data-delete="${CSS.escape(row.code)}"]`);
          if (current) current.textContent = t("delete");
        };
        armed = { code: row.code, timer: setTimeout(disarm, 8000) };
        button.textContent = t("confirm_delete");
        return;
      }
      clearTimeout(armed.timer);
      armed = null;
      change(async () => t("code_deleted", { code: row.code, closed: (await del("/api/activation-codes/" + seg(row.code))).closed }));
    });
    return button;
  }

  async function load() {
    try {
      const reply = await get("/api/activation-codes");
      const columns = ["code", "group_id", "name", "enabled", "connections_total"];
      if (mutate) columns.push("actions");
      list.replaceChildren(table(columns, reply.codes.map((c) => {
        const row = [c.code, c.group_id, c.name, c.enabled ? t("yes") : t("no"), c.connections];
        if (mutate) {
          row.push(h("span", { class: "actions" },
            h("button", {
              "data-toggle": c.code,
              onclick: () => change(async () => {
                await post("/api/activation-codes", { code: c.code, group_id: c.group_id, name: c.name, enabled: !c.enabled });
                return t(c.enabled ? "code_disabled" : "code_enabled", { code: c.code });
              }),
            }, c.enabled ? t("disable") : t("enable")),
            confirmDelete(c)));
        }
        return row;
      }), "no_codes"));
    } catch (error) {
      status.fail(error);
    }
  }

  load();
}
