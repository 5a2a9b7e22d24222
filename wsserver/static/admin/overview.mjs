// The live overview: /api/stats and /api/nodes polled while the page is
// visible (Page Visibility API), rates from the difference of two samples,
// and a chart of the last minutes.

import { get } from "/admin/api.mjs";
import { lineChart } from "/admin/chart.mjs";
import { card, duration, h, statusLine, table, when } from "/admin/dom.mjs";
import { t } from "/admin/i18n.mjs";

export const POLL_MS = 2000;
const WINDOW = 150; // samples kept: five minutes at POLL_MS

// kept across views, so coming back to the overview keeps the chart's history
const samples = { connections: [], rates: [], last: null };

export function overview(root) {
  const cards = h("div", { class: "cards", id: "stats" });
  const chart = h("div", { id: "chart" });
  const nodes = h("div", { id: "nodes" });
  const status = statusLine();
  root.append(h("h2", {}, t("overview")), status, cards, h("h3", {}, t("chart_title")), chart, h("h3", {}, t("nodes")), nodes);
  let timer = null;
  let stopped = false;
  let running = false; // a sample in flight

  async function sample() {
    try {
      const [stats, list] = await Promise.all([get("/api/stats"), get("/api/nodes")]);
      if (stopped) return;
      const now = performance.now();
      const { last } = samples;
      let rateIn = null;
      let rateOut = null;
      if (last) {
        const seconds = (now - last.at) / 1000;
        rateIn = Math.max(0, (stats.messages.in - last.in) / seconds);
        rateOut = Math.max(0, (stats.messages.out - last.out) / seconds);
        samples.rates.push(rateIn + rateOut);
      }
      samples.last = { at: now, in: stats.messages.in, out: stats.messages.out };
      samples.connections.push(stats.connections.total);
      for (const series of [samples.connections, samples.rates]) if (series.length > WINDOW) series.shift();
      render(stats, list.nodes, rateIn, rateOut);
      status.clear();
    } catch (error) {
      if (!stopped) status.fail(error);
    }
  }

  function render(stats, nodeList, rateIn, rateOut) {
    const c = stats.connections;
    const rate = (v) => (v === null ? "–" : (Math.round(v * 10) / 10).toString());
    cards.replaceChildren(
      card("connections_total", c.total, "connections"),
      card("connections_user", c.user, "user"),
      card("connections_device", c.device, "device"),
      card("connections_pending", c.pending, "pending"),
      card("users", stats.users, "users"),
      card("groups", stats.groups, "groups"),
      card("rooms", stats.rooms, "rooms"),
      card("messages_in_rate", rate(rateIn), "in_rate"),
      card("messages_out_rate", rate(rateOut), "out_rate"),
      card("mailboxes", `${stats.mailboxes.count} / ${stats.mailboxes.messages}`, "mailboxes"),
      card("uptime", duration(stats.uptime), "uptime"),
      card("version", stats.version, "version"),
    );
    chart.replaceChildren(lineChart([
      { label: t("connections_total"), values: samples.connections, cls: "s1" },
      { label: t("messages_rate"), values: samples.rates, cls: "s2" },
    ], WINDOW));
    nodes.replaceChildren(table(
      ["node_id", "name", "version", "connections_total", "users", "uptime", "last_seen"],
      nodeList.map((n) => [n.node_id, n.name, n.version, n.connections, n.users, duration(n.uptime), when(n.last_seen)]),
    ));
  }

  async function loop() {
    timer = null;
    if (running) return;
    running = true;
    await sample();
    running = false;
    if (!stopped && document.visibilityState === "visible") timer = setTimeout(loop, POLL_MS);
  }

  function visibility() {
    if (document.visibilityState === "visible") {
      if (timer === null && !running) loop();
    } else {
      clearTimeout(timer);
      timer = null;
      samples.last = null; // no rate across the pause
    }
  }

  document.addEventListener("visibilitychange", visibility);
  if (document.visibilityState === "visible") loop();
  return () => {
    stopped = true;
    clearTimeout(timer);
    document.removeEventListener("visibilitychange", visibility);
  };
}
