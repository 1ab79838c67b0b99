// charts.js — time series with uPlot (vendored, web/vendor/README.md) and
// interval charts drawn as SVG.
//
// uPlot draws on a canvas and writes its legend with textContent, so
// series names from campaign files stay text; it needs no inline <style>
// (its CSS is a file), which keeps the console inside its CSP.  The
// per-variant interval chart is a handful of lines and dots, simpler as
// SVG built with dom.js than bent out of a time-series library.

import uPlot from "../vendor/uPlot-1.6.32.esm.js";
import { h, s } from "./dom.js";

export const palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b"];

/**
 * A time-series chart in `host`.  `series`: [{label, color?, scale?,
 * band?: [lowIdx, highIdx]}], `data`: [xs (unix seconds), ys...].
 * Returns {update(data), destroy()}; the chart follows the host's width.
 */
export function timeChart(host, { series, data, height = 220, yLabel, y2Label, bands }) {
  const opts = {
    width: Math.max(300, host.clientWidth || 600),
    height,
    cursor: { drag: { x: true, y: false } },
    scales: { x: { time: true } },
    axes: [
      {},
      { label: yLabel || "", size: 60 },
    ],
    series: [{ label: "time" }].concat(series.map((x, i) => ({
      label: x.label,
      stroke: x.color || palette[i % palette.length],
      width: x.width || 2,
      fill: x.fill || undefined,
      dash: x.dash || undefined,
      scale: x.scale || "y",
      show: x.show !== false,
      spanGaps: false,
      points: { show: x.points || false },
    }))),
    bands: bands || [],
  };
  if (series.some((x) => x.scale === "y2")) {
    opts.axes.push({ scale: "y2", side: 1, label: y2Label || "", size: 60, grid: { show: false } });
  }
  const plot = new uPlot(opts, data, host);
  const ro = new ResizeObserver(() => {
    const w = Math.max(300, host.clientWidth);
    if (Math.abs(w - plot.width) > 2) plot.setSize({ width: w, height });
  });
  ro.observe(host);
  return {
    plot,
    update(d) {
      plot.setData(d);
    },
    destroy() {
      ro.disconnect();
      plot.destroy();
    },
  };
}

/**
 * Interval chart: one row per item, a line from low to high and a dot at
 * the value (e.g. CTR per variant with its 95 % interval).  `rows`:
 * [{label, value, low, high}] (value null = no data); `fmt` formats axis
 * and values.  Returns an <svg>.
 */
export function intervalChart(rows, fmt, { title } = {}) {
  const rowH = 28;
  const left = 120;
  const width = 560;
  const right = 90;
  const top = title ? 26 : 8;
  const height = top + rows.length * rowH + 26;
  let max = 0;
  for (const r of rows) if (r.high !== null && r.high !== undefined) max = Math.max(max, r.high);
  max = max > 0 ? max * 1.05 : 1;
  const x = (v) => left + ((width - left - right) * v) / max;
  const svg = s("svg", {
    class: "interval-chart", viewBox: `0 0 ${width} ${height}`, role: "img",
    "aria-label": title || "intervals",
  });
  if (title) svg.appendChild(s("text", { x: 4, y: 16, class: "chart-title" }, title));
  const axisY = top + rows.length * rowH + 4;
  svg.appendChild(s("line", { x1: left, x2: width - right, y1: axisY, y2: axisY, class: "axis" }));
  for (let i = 0; i <= 4; i++) {
    const v = (max * i) / 4;
    svg.appendChild(s("line", { x1: x(v), x2: x(v), y1: top, y2: axisY, class: "gridline" }));
    svg.appendChild(s("text", { x: x(v), y: axisY + 16, class: "tick", "text-anchor": "middle" }, fmt(v)));
  }
  rows.forEach((r, i) => {
    const y = top + i * rowH + rowH / 2;
    const color = palette[i % palette.length];
    svg.appendChild(s("text", { x: left - 8, y: y + 4, "text-anchor": "end", class: "label" },
      String(r.label).slice(0, 18)));
    if (r.value === null || r.value === undefined) {
      svg.appendChild(s("text", { x: left + 4, y: y + 4, class: "muted-text" }, "no data"));
      return;
    }
    svg.appendChild(s("line", { x1: x(r.low), x2: x(r.high), y1: y, y2: y, stroke: color, "stroke-width": 3,
      class: "ci" }));
    svg.appendChild(s("line", { x1: x(r.low), x2: x(r.low), y1: y - 6, y2: y + 6, stroke: color, "stroke-width": 2 }));
    svg.appendChild(s("line", { x1: x(r.high), x2: x(r.high), y1: y - 6, y2: y + 6, stroke: color, "stroke-width": 2 }));
    svg.appendChild(s("circle", { cx: x(r.value), cy: y, r: 5, fill: color, class: "point" }));
    svg.appendChild(s("text", { x: width - right + 6, y: y + 4, class: "value" }, fmt(r.value)));
  });
  return h("figure", { class: "chart" }, svg);
}

/** Unix seconds of a UTC day "2026-03-01". */
export function dayTs(day) {
  return Date.parse(day + "T00:00:00Z") / 1000;
}
