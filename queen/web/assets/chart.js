// Time-series charts on the vendored uPlot (assets/vendor/uplot, MIT).
import uPlot from "./vendor/uplot/uPlot.esm.js";
import { h } from "./ui.js";

const COLORS = ["#3867d6", "#20a464", "#e69b00", "#d64545", "#8854d0", "#0fb9b1"];

// uPlot stretches a lone sample over years: a short series is shown over its last minute.
function xScale(xs) {
  const last = xs[xs.length - 1];
  return last - xs[0] < 60 ? { time: true, range: [last - 60, last + 1] } : { time: true };
}

// points: [{t: Date|ms|iso, <key>: number}], series: [{key, label}]
export function timeChart(points, series, { height = 220, empty = "No data in this range yet." } = {}) {
  const box = h("div", { class: "chart" });
  if (!points.length) {
    box.append(h("div", { class: "empty" }, empty));
    return box;
  }
  const xs = points.map((p) => new Date(p.t).getTime() / 1000);
  const data = [xs, ...series.map((s) => points.map((p) => (p[s.key] ?? null)))];
  const options = {
    width: 600,
    height,
    cursor: { drag: { x: false, y: false } },
    // Counts and rates: the y axis starts at zero so a flat line does not look like a swing.
    scales: { x: xScale(xs), y: { range: (u, min, max) => [0, max > 0 ? max * 1.1 : 1] } },
    axes: [{}, { size: 60 }],
    series: [{}, ...series.map((s, i) => ({
      label: s.label,
      stroke: COLORS[i % COLORS.length],
      fill: series.length === 1 ? `${COLORS[i % COLORS.length]}22` : undefined,
      width: 2,
      points: { show: points.length < 3 },
    }))],
  };
  const plot = new uPlot(options, data, box);
  // Fit the chart to its panel once it is in the page, and again whenever the panel resizes.
  const resize = () => {
    const width = box.clientWidth;
    if (width > 0) plot.setSize({ width, height });
  };
  new ResizeObserver(resize).observe(box);
  requestAnimationFrame(resize);
  return box;
}

// The throughput buckets of GET /api/v1/status as chart points, oldest first, without the bucket
// still filling (operations spec §9.3): a partial minute would read as a drop in traffic.
export function completedBuckets(status) {
  if (!status || !Array.isArray(status.throughput)) return [];
  const width = (status.bucketMinutes || 1) * 60_000;
  return status.throughput
    .filter((b) => Date.parse(b.timestamp) + width <= Date.now())
    .map((b) => ({ t: b.timestamp, ...b }))
    .reverse();
}
