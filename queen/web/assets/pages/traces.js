// Traces: trace names (GET /api/v1/traces/names?search=, paged) and the timeline of one name
// (GET /api/v1/traces/by-name/{name}, paged), each event with its data.
import { api } from "../api.js";
import { h, json, link, num, pager, panel, searchBox, table, tag, time } from "../ui.js";

export const title = "Traces";

const PAGE = 50;

export async function render(view, route) {
  const [state, change] = route.filters({ search: "", name: "", offset: 0, eventOffset: 0 },
    () => Promise.all([loadNames(), loadTimeline()]));
  const names = h("div");
  const timeline = panel("Timeline");
  view.replaceChildren(
    h("div", { class: "split" },
      panel("Trace names",
        h("div", { class: "toolbar" },
          searchBox("Search trace names", state.search, (search) => change({ search, offset: 0 }), "search")),
        names),
      timeline));

  async function loadNames() {
    const answer = await api("/api/v1/traces/names", { query: { search: state.search, limit: PAGE, offset: state.offset } });
    if (!route.current()) return;
    names.replaceChildren(table([
      { title: "name", value: (t) => t.trace_name },
      { title: "events", value: (t) => num(t.trace_count), num: true },
      { title: "messages", value: (t) => num(t.message_count), num: true },
      { title: "last seen", value: (t) => time(t.last_seen) },
    ], answer.trace_names, {
      empty: "No traces recorded.",
      onRow: (t) => change({ name: t.trace_name, eventOffset: 0 }),
      selected: (t) => t.trace_name === state.name,
    }),
    pager({ offset: state.offset, limit: PAGE, total: answer.total, onPage: (offset) => change({ offset }) }));
  }

  async function loadTimeline() {
    if (!state.name) {
      timeline.replaceChildren(h("h2", {}, "Timeline"), h("div", { class: "empty" }, "Pick a trace name."));
      return;
    }
    const answer = await api(`/api/v1/traces/by-name/${encodeURIComponent(state.name)}`, {
      query: { limit: PAGE, offset: state.eventOffset },
    });
    if (!route.current()) return;
    timeline.replaceChildren(h("h2", {}, `Timeline of ${state.name}`),
      ...answer.traces.map((t) => h("div", { class: "panel", style: "margin-bottom: 8px" },
        h("div", { class: "toolbar" }, tag(t.event_type, "pending"), time(t.created_at),
          link(`/queues/${encodeURIComponent(t.queue_name)}`, `${t.queue_name} / ${t.partition_name}`),
          h("span", { class: "muted" }, t.transaction_id)),
        json(t.data))),
      pager({ offset: state.eventOffset, limit: PAGE, total: answer.total, onPage: (eventOffset) => change({ eventOffset }) }));
  }

  await Promise.all([loadNames(), loadTimeline()]);
  return null;
}
