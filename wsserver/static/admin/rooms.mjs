// Rooms of a group with member counts, and a room's members.

import { get, query, seg } from "/admin/api.mjs";
import { h, statusLine, table } from "/admin/dom.mjs";
import { t } from "/admin/i18n.mjs";

export function rooms(root, params) {
  const groupInput = h("input", { name: "group_id", value: params.get("group_id") ?? "" });
  const form = h("form", { class: "row", id: "room-search" },
    h("label", {}, h("span", {}, t("group_id_optional")), groupInput),
    h("button", { type: "submit" }, t("list")));
  const status = statusLine();
  const list = h("div", { id: "room-list" });
  const members = h("div", { id: "room-members" });
  root.append(h("h2", {}, t("rooms_view")), form, status, list, members);

  async function load() {
    history.replaceState(null, "", "#rooms" + query({ group_id: groupInput.value.trim() }));
    try {
      const reply = await get("/api/rooms" + query({ group_id: groupInput.value.trim() }));
      list.replaceChildren(table(["room", "group_id", "members", "connections_total", "actions"],
        reply.rooms.map((r) => [r.room, r.group_id, r.members, r.connections,
          h("button", { onclick: () => show(r) }, t("show_members"))]), "no_rooms"));
      members.replaceChildren();
      status.clear();
    } catch (error) {
      status.fail(error);
    }
  }

  async function show(room) {
    try {
      const reply = await get("/api/rooms/" + seg(room.room) + "/members" + query({ group_id: room.group_id }));
      members.replaceChildren(h("h3", {}, t("members_of", { room: room.room })),
        table(["user_id", "username", "user_type", "connections_total"],
          reply.members.map((m) => [m.user_id, m.username, m.user_type, m.connections]), "no_members"));
    } catch (error) {
      status.fail(error);
    }
  }

  form.addEventListener("submit", (event) => { event.preventDefault(); load(); });
  load();
}
