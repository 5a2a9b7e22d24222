// Publish one message (type, data as JSON, one target) and test the webhook
// receiver. Both send POSTs: the view is not offered in read-only mode.

import { post } from "/admin/api.mjs";
import { h, show, statusLine } from "/admin/dom.mjs";
import { t } from "/admin/i18n.mjs";

const TARGETS = ["user_id", "group_id", "room", "all"];

export function publish(root) {
  const type = h("input", { name: "type", required: true, value: "system_notification" });
  const data = h("textarea", { name: "data", rows: 5, spellcheck: "false" });
  data.value = JSON.stringify({ title: "wsserver", message: "hello", level: "info" }, null, 2);
  const target = h("select", { name: "target" }, TARGETS.map((k) => h("option", { value: k }, t("target_" + k))));
  const value = h("input", { name: "value" });
  const group = h("input", { name: "room_group_id" });
  const persist = h("input", { name: "persist", type: "checkbox" });
  const status = statusLine();
  const form = h("form", { class: "stack", id: "publish-form" },
    h("label", {}, h("span", {}, t("type")), type),
    h("label", {}, h("span", {}, t("data_json")), data),
    h("div", { class: "row" },
      h("label", {}, h("span", {}, t("target")), target),
      h("label", { class: "target-value" }, h("span", {}, t("target_value")), value),
      h("label", { class: "target-group" }, h("span", {}, t("group_id_optional")), group),
      h("label", { class: "inline target-persist" }, persist, h("span", {}, t("persist")))),
    h("div", {}, h("button", { type: "submit" }, t("send"))));
  const adapt = () => {
    form.dataset.target = target.value; // the CSS shows the inputs this target takes
  };
  target.addEventListener("change", adapt);
  adapt();

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    let payload;
    try {
      payload = JSON.parse(data.value);
    } catch (error) {
      status.fail(new Error(t("data_not_json", { error: error.message })));
      return;
    }
    const body = { type: type.value.trim(), data: payload };
    const kind = target.value;
    if (kind === "all") body.all = true;
    else body[kind] = value.value.trim();
    if (kind === "room" && group.value.trim()) body.group_id = group.value.trim();
    if (kind === "user_id" && persist.checked) body.persist = true;
    try {
      const reply = await post("/api/publish", body);
      status.ok(t("published", { delivered: reply.delivered, queued: reply.queued }));
    } catch (error) {
      status.fail(error);
    }
  });

  const hookStatus = statusLine();
  const hook = h("button", {
    id: "webhook-test",
    onclick: async () => {
      try {
        const r = await post("/api/webhooks/test");
        const text = t("webhook_result", { status: show(r.status), ms: r.elapsed_ms, error: r.error ?? "" });
        if (r.ok) hookStatus.ok(text);
        else hookStatus.fail(new Error(text));
      } catch (error) {
        hookStatus.fail(error);
      }
    },
  }, t("webhook_test"));

  root.append(h("h2", {}, t("publish_view")), form, status,
    h("h2", {}, t("webhooks")), h("p", { class: "muted" }, t("webhook_hint")), hook, hookStatus);
}
