// One queue: its totals and configuration (GET /api/v1/resources/queues?name=), its partitions a
// page at a time with lag, oldest pending message and leases (GET /api/v1/resources/partitions),
// and its traffic per second over the last hour (GET /api/v1/status?queue=).
import { api, optional, windowOf } from "../api.js";
import { completedBuckets, timeChart } from "../chart.js";
import { ageOf, cards, every, facts, h, link, num, pager, panel, searchBox, select, table, tag, time } from "../ui.js";

export const title = (route) => `Queue ${route.params.queue}`;

const PAGE = 50;

function leaseCell(p) {
  const lease = p.leases || {};
  if (lease.expired > 0) return tag(`stuck since ${time(lease.expiresAt)}`, "stuck");
  if (lease.active > 0) return tag(`leased until ${time(lease.expiresAt)}`, "processing");
  return "—";
}

export async function render(view, route) {
  const name = route.params.queue;
  const enc = encodeURIComponent(name);
  const [state, change] = route.filters({ search: "", leases: "", offset: 0 }, loadPartitions);
  const summary = h("div");
  const config = panel("Configuration");
  const ops = panel("Operations per second (last hour)");
  const partitions = h("div");
  view.replaceChildren(
    summary,
    h("div", { class: "toolbar" },
      link(`/messages?queue=${enc}`, "Messages"), "·",
      link(`/dlq?queue=${enc}`, "Dead letters"), "·",
      link(`/consumers?queue=${enc}`, "Consumer groups")),
    h("div", { class: "split" }, ops, config),
    panel("Partitions",
      h("div", { class: "toolbar" },
        searchBox("Search partition names", state.search, (search) => change({ search, offset: 0 }), "partition-search"),
        select("leases", [["", "all partitions"], ["held", "with a lease"], ["stuck", "with a stuck lease"]],
          state.leases, (leases) => change({ leases, offset: 0 }))),
      partitions));

  async function loadSummary() {
    const answer = await api("/api/v1/resources/queues", { query: { name, limit: 1 } });
    if (!route.current()) return;
    const queue = answer.queues[0];
    if (!queue) {
      summary.replaceChildren(h("div", { class: "panel error" }, "Queue not found."));
      return;
    }
    summary.replaceChildren(cards([
      ["partitions", num(queue.partitions), "partitions"],
      ["stored", num(queue.messages.total), "total"],
      ["pending", num(queue.messages.pending), "pending"],
      ["processing", num(queue.messages.processing), "processing"],
    ]));
    const o = queue.options || {};
    config.replaceChildren(h("h2", {}, "Configuration"), facts([
      ["namespace", queue.namespace || "—"], ["task", queue.task || "—"], ["priority", num(queue.priority)],
      ["lease time", `${num(o.leaseTime)} s`], ["retry limit", num(o.retryLimit)],
      ["retry delay", `${num(o.retryDelay)} ms`], ["TTL", `${num(o.ttl)} s`],
      ["max size", o.maxSize ? num(o.maxSize) : "unlimited"],
      ["dead-letter after retries", o.dlqAfterMaxRetries ? "yes" : "no"],
      ["retention", o.retentionEnabled ? `${num(o.retentionSeconds)} s` : "off"],
      ["encryption", o.encryptionEnabled ? "on" : "off"], ["created", time(queue.createdAt)],
    ]));
    const status = await optional("/api/v1/status", { query: { ...windowOf(60), queue: name } });
    if (!route.current()) return;
    ops.replaceChildren(h("h2", {}, "Operations per second (last hour)"), timeChart(
      completedBuckets(status),
      [{ key: "ingestedPerSecond", label: "push/s" }, { key: "popPerSecond", label: "pop/s" }, { key: "processedPerSecond", label: "ack/s" }],
      { empty: status ? "No completed minute with traffic yet." : "Per-queue history is not available." }));
  }

  async function loadPartitions() {
    const answer = await api("/api/v1/resources/partitions", {
      query: { queue: name, search: state.search, leases: state.leases, limit: PAGE, offset: state.offset },
    });
    if (!route.current()) return;
    partitions.replaceChildren(table([
      { title: "partition", value: (p) => link(`/messages?queue=${enc}&partition=${encodeURIComponent(p.name)}`, p.name) },
      { title: "stored", value: (p) => num(p.messages.total), num: true },
      { title: "pending", value: (p) => num(p.messages.pending), num: true },
      { title: "processing", value: (p) => num(p.messages.processing), num: true },
      { title: "completed", value: (p) => num(p.messages.completed), num: true },
      { title: "dead letters", value: (p) => num(p.messages.deadLetter), num: true },
      { title: "lag", value: (p) => (p.oldestPending ? ageOf(p.oldestPending) : "—"), num: true },
      { title: "oldest pending", value: (p) => time(p.oldestPending) },
      { title: "newest", value: (p) => time(p.newestMessage) },
      { title: "lease", value: leaseCell },
    ], answer.partitions, { empty: "No partition matches." }),
    pager({ offset: state.offset, limit: PAGE, total: answer.total, onPage: (offset) => change({ offset }) }));
  }

  return every(10_000, () => Promise.all([loadSummary(), loadPartitions()]));
}
