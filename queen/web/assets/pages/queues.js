// Queues: one page of queues at a time, filtered by the server (GET /api/v1/resources/queues with
// search / namespace / task / limit / offset), so it stays quick with thousands of queues.
import { api } from "../api.js";
import { every, h, link, num, pager, panel, searchBox, table, time } from "../ui.js";

export const title = "Queues";

const PAGE = 50;

export async function render(view, route) {
  const [state, change] = route.filters({ search: "", namespace: "", task: "", offset: 0 }, load);
  const list = h("div");
  view.replaceChildren(panel(null,
    h("div", { class: "toolbar" },
      searchBox("Search queue names", state.search, (search) => change({ search, offset: 0 }), "search"),
      searchBox("Namespace (exact)", state.namespace, (namespace) => change({ namespace, offset: 0 }), "namespace"),
      searchBox("Task (exact)", state.task, (task) => change({ task, offset: 0 }), "task")),
    list));

  async function load() {
    // One row more than shown tells whether a next page exists without counting every queue.
    const answer = await api("/api/v1/resources/queues", {
      query: { search: state.search, namespace: state.namespace, task: state.task, limit: PAGE + 1, offset: state.offset },
    });
    if (!route.current()) return;
    const rows = answer.queues.slice(0, PAGE);
    list.replaceChildren(table([
      { title: "queue", value: (q) => link(`/queues/${encodeURIComponent(q.name)}`, q.name) },
      { title: "namespace", value: (q) => q.namespace || "—" },
      { title: "task", value: (q) => q.task || "—" },
      { title: "partitions", value: (q) => num(q.partitions), num: true },
      { title: "stored", value: (q) => num(q.messages.total), num: true },
      { title: "pending", value: (q) => num(q.messages.pending), num: true },
      { title: "processing", value: (q) => num(q.messages.processing), num: true },
      { title: "created", value: (q) => time(q.createdAt) },
    ], rows, { empty: state.search || state.namespace || state.task ? "No queue matches." : "No queues yet." }),
    pager({
      offset: state.offset, limit: PAGE, count: rows.length, hasMore: answer.queues.length > PAGE,
      onPage: (offset) => change({ offset }),
    }));
  }

  return every(15_000, load);
}
