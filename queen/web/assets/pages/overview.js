// Overview: counts and queue depth sampled by this page (GET /api/v1/resources/overview every
// 10 s), the most lagging consumer groups (GET /api/v1/consumer-groups), and every 30 s the
// throughput over the chosen range (GET /api/v1/status) and the deepest queues
// (GET /api/v1/resources/queues).
import { api, optional, windowOf } from "../api.js";
import { completedBuckets, timeChart } from "../chart.js";
import { cards, every, h, link, num, panel, rangePicker, seconds, table } from "../ui.js";

export const title = "Overview";

const RANGES = { "1h": 60, "6h": 360, "24h": 1440 };
const REFRESH_MS = 10_000;
const SLOW_EVERY = 3; // throughput history and the deepest queues: every 30 s
const DEPTH_KEY = "queen.depth";
const DEPTH_KEEP_MS = 3_600_000;

// The broker keeps no history of queue depth, so the page keeps its own samples for the
// browser tab's session (sessionStorage survives moving between pages).
function recordDepth(overview) {
  const now = Date.now();
  let samples = [];
  try { samples = JSON.parse(sessionStorage.getItem(DEPTH_KEY) || "[]"); } catch { samples = []; }
  samples.push({ t: now, pending: overview.messages.pending, processing: overview.messages.processing });
  samples = samples.filter((s) => s.t > now - DEPTH_KEEP_MS);
  sessionStorage.setItem(DEPTH_KEY, JSON.stringify(samples));
  return samples;
}

export async function render(view, route) {
  const [state, change] = route.filters({ range: "1h" }, loadHistory);
  const counts = h("div");
  const throughput = panel("Throughput (messages per second)");
  const depth = panel("Queue depth (sampled by this page)");
  const queues = panel("Deepest queues");
  const groups = panel("Consumer groups by lag");
  const picker = () => rangePicker(RANGES, state.range, (range) => change({ range }));
  const pickerBox = h("div", {}, picker());
  view.replaceChildren(counts, h("div", { class: "grid" }, h("div", {}, pickerBox, throughput), depth),
    h("div", { class: "grid" }, queues, groups));

  // Ranking queues by depth counts every queue's partitions: done on the slower cadence.
  async function loadDeepest() {
    const queueList = await api("/api/v1/resources/queues");
    if (!route.current()) return;
    const deepest = [...queueList.queues]
      .sort((a, b) => b.messages.pending + b.messages.processing - a.messages.pending - a.messages.processing)
      .slice(0, 8);
    queues.replaceChildren(h("h2", {}, "Deepest queues"), table([
      { title: "queue", value: (q) => link(`/queues/${encodeURIComponent(q.name)}`, q.name) },
      { title: "partitions", value: (q) => num(q.partitions), num: true },
      { title: "pending", value: (q) => num(q.messages.pending), num: true },
      { title: "processing", value: (q) => num(q.messages.processing), num: true },
      { title: "stored", value: (q) => num(q.messages.total), num: true },
    ], deepest, { empty: "No queues yet: push a message to create one." }));
  }

  async function loadHistory() {
    pickerBox.replaceChildren(picker());
    const status = await optional("/api/v1/status", { query: windowOf(RANGES[state.range] || RANGES["1h"]) });
    const points = completedBuckets(status);
    throughput.replaceChildren(h("h2", {}, "Throughput (messages per second)"), timeChart(points, [
      { key: "ingestedPerSecond", label: "pushed/s" },
      { key: "popPerSecond", label: "popped/s" },
      { key: "processedPerSecond", label: "acked/s" },
    ], { empty: status ? "No completed minute in this range yet." : "Throughput history is not available." }));
  }

  async function loadNow() {
    const [overview, groupList] = await Promise.all([
      api("/api/v1/resources/overview"),
      api("/api/v1/consumer-groups"),
    ]);
    if (!route.current()) return;
    const m = overview.messages;
    counts.replaceChildren(cards([
      ["queues", num(overview.queues), "queues"],
      ["partitions", num(overview.partitions), "partitions"],
      ["messages stored", num(m.total), "total"],
      ["pending", num(m.pending), "pending"],
      ["processing", num(m.processing), "processing"],
      ["dead letters", num(m.deadLetter), "deadLetter"],
      ["avg lag", seconds(overview.lag.time.avg), "lagAvg"],
      ["max lag", seconds(overview.lag.time.max), "lagMax"],
      ["pushed/s (5 min)", num(overview.throughput.ingestedPerSecond), "ingested"],
      ["acked/s (5 min)", num(overview.throughput.processedPerSecond), "processed"],
    ]));
    depth.replaceChildren(h("h2", {}, "Queue depth (sampled by this page)"), timeChart(recordDepth(overview), [
      { key: "pending", label: "pending" },
      { key: "processing", label: "processing" },
    ]));
    const lagging = [...groupList].sort((a, b) => (b.maxTimeLag || 0) - (a.maxTimeLag || 0)).slice(0, 8);
    groups.replaceChildren(h("h2", {}, "Consumer groups by lag"), table([
      { title: "group", value: (g) => g.name === "__QUEUE_MODE__" ? "(queue mode)" : g.name },
      { title: "queue", value: (g) => link(`/queues/${encodeURIComponent(g.queueName)}`, g.queueName) },
      { title: "max lag", value: (g) => seconds(g.maxTimeLag), num: true },
      { title: "partitions lagging", value: (g) => num(g.partitionsWithLag), num: true },
      { title: "state", value: (g) => g.state },
    ], lagging, { empty: "No consumer has popped yet." }));
  }

  let tick = 0;
  return every(REFRESH_MS, () => {
    const slow = tick++ % SLOW_EVERY === 0 ? [loadHistory(), loadDeepest()] : [];
    return Promise.all([loadNow(), ...slow]);
  });
}
