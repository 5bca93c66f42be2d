// Consumer groups with their lag (GET /api/v1/consumer-groups) and the partitions lagging behind
// a threshold (GET /api/v1/consumer-groups/lagging?minLagSeconds=).
import { api } from "../api.js";
import { every, h, link, num, pager, panel, searchBox, seconds, table, time } from "../ui.js";

export const title = "Consumer groups";

const PAGE = 50;

const groupName = (name) => (name === "__QUEUE_MODE__" ? "(queue mode)" : name);

export async function render(view, route) {
  const [state, change] = route.filters({ queue: "", minLag: 60, offset: 0, lagOffset: 0 }, load);
  const groups = h("div");
  const lagging = h("div");
  const minLagInput = h("input", { type: "number", min: 0, value: state.minLag, name: "minLag", style: "width: 90px",
    onchange: (e) => change({ minLag: Math.max(0, Number(e.target.value) || 0), lagOffset: 0 }) });
  view.replaceChildren(
    panel("Groups",
      h("div", { class: "toolbar" },
        searchBox("Filter by queue", state.queue, (queue) => change({ queue, offset: 0, lagOffset: 0 }), "queue")),
      groups),
    panel("Lagging partitions", h("div", { class: "toolbar" }, "lag of at least", minLagInput, "seconds"), lagging));

  async function load() {
    const [all, behind] = await Promise.all([
      api("/api/v1/consumer-groups"),
      api("/api/v1/consumer-groups/lagging", { query: { minLagSeconds: state.minLag } }),
    ]);
    if (!route.current()) return;
    const matches = (queue) => !state.queue || (queue || "").includes(state.queue);
    const rows = all.filter((g) => matches(g.queueName))
      .sort((a, b) => (b.maxTimeLag || 0) - (a.maxTimeLag || 0));
    groups.replaceChildren(table([
      { title: "group", value: (g) => groupName(g.name) },
      { title: "queue", value: (g) => link(`/queues/${encodeURIComponent(g.queueName)}`, g.queueName) },
      { title: "mode", value: (g) => g.subscriptionMode || "—" },
      { title: "state", value: (g) => g.state },
      { title: "members", value: (g) => num(g.members), num: true },
      { title: "partitions lagging", value: (g) => num(g.partitionsWithLag), num: true },
      { title: "max lag", value: (g) => seconds(g.maxTimeLag), num: true },
    ], rows.slice(state.offset, state.offset + PAGE), { empty: "No consumer group has popped yet." }),
    pager({ offset: state.offset, limit: PAGE, total: rows.length, onPage: (offset) => change({ offset }) }));
    const late = behind.filter((p) => matches(p.queue_name));
    lagging.replaceChildren(table([
      { title: "group", value: (p) => groupName(p.consumer_group) },
      { title: "queue", value: (p) => link(`/queues/${encodeURIComponent(p.queue_name)}`, p.queue_name) },
      { title: "partition", value: (p) => p.partition_name },
      { title: "messages behind", value: (p) => num(p.offset_lag), num: true },
      { title: "lag", value: (p) => seconds(p.time_lag_seconds), num: true },
      { title: "oldest unconsumed", value: (p) => time(p.oldest_unconsumed_at) },
      { title: "lease holder", value: (p) => p.worker_id || "—" },
    ], late.slice(state.lagOffset, state.lagOffset + PAGE), { empty: "No partition lags that much." }),
    pager({ offset: state.lagOffset, limit: PAGE, total: late.length, onPage: (lagOffset) => change({ lagOffset }) }));
  }

  return every(15_000, load);
}
