// System: this worker's process (GET /health, GET /metrics), the maintenance switches and the
// disk buffer (GET/POST /api/v1/system/maintenance[/pop]), the workers seen lately and the
// database (GET /api/v1/analytics/worker-metrics, /system-metrics, /postgres-stats when present).
import { api, optional, windowOf } from "../api.js";
import { timeChart } from "../chart.js";
import { bytes, every, facts, h, num, panel, seconds, table, time } from "../ui.js";
import { refreshBanners } from "../app.js";

export const title = "System";

function toggle(name, label, on, onChange) {
  return h("label", { class: "switch" },
    h("input", { type: "checkbox", name, checked: on, onchange: (e) => onChange(e.target.checked) }),
    h("span", {}, label), h("strong", { class: on ? "warn" : "ok" }, on ? "on" : "off"));
}

export async function render(view, route) {
  const process = panel("This worker");
  const maintenance = panel("Maintenance");
  const buffer = panel("Disk buffer");
  const workers = panel("Workers (last 5 minutes)");
  const machine = panel("CPU and memory of all workers (last hour)");
  const database = panel("Database");
  view.replaceChildren(h("div", { class: "grid" }, process, maintenance), h("div", { class: "grid" }, buffer, database),
    workers, machine);

  async function setMode(path, enabled) {
    try {
      await api(path, { method: "POST", body: { enabled } });
    } catch (error) {
      maintenance.append(h("div", { class: "error" }, error.message));
    }
    await loadState();
    refreshBanners();
  }

  async function loadState() {
    const [health, metrics, state] = await Promise.all([
      api("/health").catch((error) => ({ status: "unhealthy", database: error.message })),
      api("/metrics"),
      api("/api/v1/system/maintenance"),
    ]);
    if (!route.current()) return;
    process.replaceChildren(h("h2", {}, "This worker"), facts([
      ["status", h("span", { class: health.status === "healthy" ? "ok" : "error" }, `${health.status} (database ${health.database})`)],
      ["version", health.version], ["worker", health.worker_id], ["uptime", seconds(metrics.uptime)],
      ["requests", `${num(metrics.requests.total)} (${num(metrics.requests.rate)}/s)`],
      ["messages pushed", `${num(metrics.messages.total)} (${num(metrics.messages.rate)}/s)`],
      ["memory (RSS)", bytes(metrics.memory.rss)],
      ["CPU time", `${seconds(metrics.cpu.user / 1e6)} user, ${seconds(metrics.cpu.system / 1e6)} system`],
      ["database connections", `${num(metrics.database.poolSize)} slots, ${num(metrics.database.waitingRequests)} waiting`],
      ["parked long-polls", num(metrics.longPolls ? metrics.longPolls.parked : null)],
    ]));
    maintenance.replaceChildren(h("h2", {}, "Maintenance"),
      toggle("push-maintenance", "Push maintenance (pushes go to the disk buffer)", state.maintenanceMode,
        (on) => setMode("/api/v1/system/maintenance", on)),
      toggle("pop-maintenance", "Pop maintenance (pops answer empty)", state.popMaintenanceMode,
        (on) => setMode("/api/v1/system/maintenance/pop", on)));
    const stats = state.bufferStats || {};
    const failed = stats.failedFiles || {};
    buffer.replaceChildren(h("h2", {}, "Disk buffer"), facts([
      ["buffered pushes", num(state.bufferedMessages)],
      ["healthy", state.bufferHealthy ? "yes" : "no"],
      ["database reachable", stats.dbHealthy ? "yes" : "no"],
      ["failed records", num(stats.failedCount)],
      ["failed files", `${num(failed.count)} (${num(failed.totalMB)} MB)`],
    ]));
  }

  async function loadHistory() {
    const range = windowOf(60);
    const [workerMetrics, systemMetrics, postgres] = await Promise.all([
      optional("/api/v1/analytics/worker-metrics", { query: range }),
      optional("/api/v1/analytics/system-metrics", { query: range }),
      optional("/api/v1/analytics/postgres-stats"),
    ]);
    if (!route.current()) return;
    workers.replaceChildren(h("h2", {}, "Workers (last 5 minutes)"), workerMetrics ? table([
      { title: "host", value: (w) => w.hostname },
      { title: "worker", value: (w) => w.workerId, num: true },
      { title: "event loop lag avg / max", value: (w) => `${num(w.avgEventLoopLagMs)} / ${num(w.maxEventLoopLagMs)} ms`, num: true },
      { title: "free slots", value: (w) => num(w.freeSlots), num: true },
      { title: "db connections", value: (w) => num(w.dbConnections), num: true },
      { title: "job queue", value: (w) => num(w.jobQueueSize), num: true },
      { title: "messages", value: (w) => num(w.messagesProcessed), num: true },
      { title: "last seen", value: (w) => time(w.lastSeen) },
    ], workerMetrics.workers || [], { empty: "No worker has reported in the last 5 minutes." })
      : h("div", { class: "empty" }, "Worker metrics are not available."));
    // Summed over the workers (one replica each) per bucket: what the broker costs the machine.
    const buckets = new Map();
    for (const replica of (systemMetrics && systemMetrics.replicas) || []) {
      for (const point of replica.timeSeries || []) {
        const m = point.metrics || {};
        const sum = buckets.get(point.timestamp) || { t: point.timestamp, cpu: 0, rss: 0 };
        if (m.cpu) sum.cpu += (m.cpu.user_us.avg + m.cpu.system_us.avg) / 100; // percent x 100 (O37)
        if (m.memory) sum.rss += m.memory.rss_bytes.avg / 1048576;
        buckets.set(point.timestamp, sum);
      }
    }
    const points = [...buckets.values()].sort((a, b) => Date.parse(a.t) - Date.parse(b.t));
    const empty = systemMetrics ? "No samples yet." : "System metrics are not available.";
    machine.replaceChildren(h("h2", {}, "CPU and memory of all workers (last hour)"), h("div", { class: "grid" },
      timeChart(points, [{ key: "cpu", label: "CPU %" }], { empty }),
      timeChart(points, [{ key: "rss", label: "RSS MB" }], { empty })));
    if (!postgres) {
      database.replaceChildren(h("h2", {}, "Database"), h("div", { class: "empty" }, "Database statistics are not available."));
      return;
    }
    const cache = postgres.databaseCache || {};
    database.replaceChildren(h("h2", {}, "Database"), facts([
      ["database", postgres.database],
      ["cache hit ratio", cache.cacheHitRatio === null || cache.cacheHitRatio === undefined ? "—" : `${cache.cacheHitRatio} %`],
      ["shared buffers", (postgres.bufferConfig || {}).sharedBuffersSize || (postgres.bufferConfig || {}).sharedBuffers],
      ["active queries", num((postgres.activeQueries || []).length)],
    ]), table([
      { title: "table", value: (t) => t.table },
      { title: "size", value: (t) => t.totalSize, num: true },
      { title: "indexes", value: (t) => t.indexSize, num: true },
    ], (postgres.tableSizes || []).slice(0, 8), { empty: "No tables." }));
  }

  await loadHistory();
  return every(10_000, loadState);
}
