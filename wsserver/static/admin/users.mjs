// A user: online status, devices (connections), waiting messages, latest task
// states, and kick.

import { get, isReadOnly, post, query, seg } from "/admin/api.mjs";
import { field, h, show, statusLine, table, when } from "/admin/dom.mjs";
import { t } from "/admin/i18n.mjs";

export function users(root, params) {
  const userInput = h("input", { name: "user_id", required: true, value: params.get("user_id") ?? "" });
  const groupInput = h("input", { name: "group_id", value: params.get("group_id") ?? "" });
  const form = h("form", { class: "row", id: "user-search" },
    h("label", {}, h("span", {}, t("user_id")), userInput),
    h("label", {}, h("span", {}, t("group_id_optional")), groupInput),
    h("button", { type: "submit" }, t("search")));
  const status = statusLine();
  const result = h("div", { id: "user-result" });
  root.append(h("h2", {}, t("users_view")), form, status, result);

  async function search() {
    const userId = userInput.value.trim();
    if (!userId) return;
    const filter = query({ group_id: groupInput.value.trim() });
    history.replaceState(null, "", "#users" + query({ user_id: userId, group_id: groupInput.value.trim() }));
    try {
      const base = "/api/users/" + seg(userId);
      const [online, devices, tasks] = await Promise.all([
        get(base + "/online" + filter), get(base + "/connections" + filter), get(base + "/tasks" + filter),
      ]);
      render(userId, online, devices.connections, tasks.tasks);
      status.clear();
    } catch (error) {
      status.fail(error);
    }
  }

  function render(userId, online, devices, tasks) {
    const reason = h("input", { name: "reason", placeholder: t("kick_reason_placeholder") });
    const kick = async (target) => {
      const body = { ...target };
      if (reason.value.trim()) body.reason = reason.value.trim();
      if (groupInput.value.trim()) body.group_id = groupInput.value.trim();
      try {
        const reply = await post("/api/users/" + seg(userId) + "/kick", body);
        status.ok(t("kicked_n", { n: reply.kicked }));
        await search();
        status.ok(t("kicked_n", { n: reply.kicked }));
      } catch (error) {
        status.fail(error);
      }
    };
    const mutate = !isReadOnly();
    const columns = ["device_id", "device_info", "ip", "user_agent", "connected_at", "last_seen", "user_type", "group_id", "rooms"];
    const rows = devices.map((d) => {
      const row = [d.device_id, d.device_info, d.ip, d.user_agent, when(d.connected_at), when(d.last_seen), d.user_type, d.group_id, (d.rooms ?? []).join(", ")];
      if (mutate) row.push(h("button", { class: "danger", "data-conn": d.conn_id, onclick: () => kick({ conn_id: d.conn_id }) }, t("kick")));
      return row;
    });
    if (mutate) columns.push("actions");
    result.replaceChildren(
      h("div", { class: "cards" },
        h("div", { class: "card", "data-stat": "online" }, h("div", { class: "label" }, t("online")),
          h("div", { class: "value " + (online.is_online ? "yes" : "no") }, online.is_online ? t("yes") : t("no"))),
        h("div", { class: "card" }, h("div", { class: "label" }, t("connections_total")), h("div", { class: "value" }, show(online.connections))),
        h("div", { class: "card", "data-stat": "mailbox" }, h("div", { class: "label" }, t("mailbox")), h("div", { class: "value" }, show(online.mailbox)))),
      h("h3", {}, t("devices")),
      mutate ? h("div", { class: "row" },
        h("label", {}, h("span", {}, t("kick_reason")), reason),
        devices.length ? h("button", { class: "danger", id: "kick-all", onclick: () => kick({}) }, t("kick_all")) : null) : null,
      table(columns, rows, "no_devices"),
      h("h3", {}, t("tasks")),
      table(["task_id", "task_type", "status", "progress", "updated_at"],
        tasks.map((k) => [k.task_id, k.task_type, k.status, progress(k.data), when(k.updated_at)]), "no_tasks"),
    );
  }

  form.addEventListener("submit", (event) => { event.preventDefault(); search(); });
  if (userInput.value) search();
}

function progress(data) {
  if (!data) return "–";
  if (data.total) return `${data.completed ?? 0}/${data.total} (${data.progress ?? 0}%)`;
  return data.progress !== undefined ? `${data.progress}%` : "–";
}
