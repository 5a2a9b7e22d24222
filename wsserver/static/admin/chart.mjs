// A small line chart drawn as inline SVG by this page's own code: each series
// scaled to its own maximum over the window, newest sample on the right.

import { h, show } from "/admin/dom.mjs";
import { t } from "/admin/i18n.mjs";

const WIDTH = 600;
const HEIGHT = 140;
const PAD = 6;
const HEADROOM = 1.2; // the maximum drawn below the top edge

/** `series`: [{label, values: [number], cls}], `capacity`: samples across the width. */
export function lineChart(series, capacity) {
  const svg = h("svg:svg", { viewBox: `0 0 ${WIDTH} ${HEIGHT}`, preserveAspectRatio: "none", class: "chart", role: "img" });
  svg.append(h("svg:rect", { x: 0, y: 0, width: WIDTH, height: HEIGHT, class: "chart-bg" }));
  for (let i = 1; i < 4; i++) {
    const y = PAD + ((HEIGHT - 2 * PAD) * i) / 4;
    svg.append(h("svg:line", { x1: 0, x2: WIDTH, y1: y, y2: y, class: "grid" }));
  }
  const step = (WIDTH - 2 * PAD) / Math.max(1, capacity - 1);
  const legend = [];
  for (const { label, values, cls } of series) {
    const max = Math.max(1, ...values);
    const offset = capacity - values.length;
    const points = values.map((v, i) => {
      const x = PAD + (offset + i) * step;
      const y = HEIGHT - PAD - ((HEIGHT - 2 * PAD) * v) / (max * HEADROOM);
      return `${x.toFixed(1)},${y.toFixed(1)}`;
    });
    if (points.length) svg.append(h("svg:polyline", { points: points.join(" "), class: "line " + cls }));
    const now = values.length ? values[values.length - 1] : null;
    legend.push(h("span", { class: "legend " + cls }, `${label}: ${show(now === null ? null : round(now))} (${t("max")} ${round(max)})`));
  }
  return h("figure", { class: "chart-box" }, svg, h("figcaption", {}, legend));
}

const round = (v) => (Number.isInteger(v) ? v : Math.round(v * 10) / 10);
