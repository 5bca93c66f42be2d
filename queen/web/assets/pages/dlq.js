// Dead letters (GET /api/v1/dlq, paged and filtered by queue), each with its payload and error;
// retry puts a message back in front of its consumers (POST .../retry), delete removes it.
import { api } from "../api.js";
import { facts, h, json, link, pager, panel, searchBox, table, time } from "../ui.js";

export const title = "Dead letters";

const PAGE = 50;

export async function render(view, route) {
  const [state, change] = route.filters({ queue: "", offset: 0 }, load);
  let chosen = null;
  const list = h("div");
  const detail = panel("Dead letter", h("div", { class: "empty" }, "Pick a message to see its payload and error."));
  const notice = h("div");
  view.replaceChildren(
    panel(null, h("div", { class: "toolbar" },
      searchBox("Queue (exact name)", state.queue, (queue) => change({ queue, offset: 0 }), "queue"), notice), list),
    detail);

  async function load() {
    const answer = await api("/api/v1/dlq", { query: { queue: state.queue, limit: PAGE, offset: state.offset } });
    if (!route.current()) return;
    list.replaceChildren(table([
      { title: "failed", value: (m) => time(m.failedAt) },
      { title: "queue", value: (m) => link(`/queues/${encodeURIComponent(m.queue)}`, m.queue) },
      { title: "partition", value: (m) => m.partition },
      { title: "group", value: (m) => (m.consumerGroup === "__QUEUE_MODE__" ? "(queue mode)" : m.consumerGroup) },
      { title: "error", value: (m) => m.errorMessage || "—" },
      { title: "retries", value: (m) => m.retryCount ?? 0, num: true },
      { title: "", value: (m) => h("span", {},
        h("button", { type: "button", "data-action": "retry", onclick: (e) => { e.stopPropagation(); act(m, "POST", "/retry", "Retried"); } }, "Retry"), " ",
        h("button", { type: "button", class: "danger", "data-action": "delete", onclick: (e) => { e.stopPropagation(); act(m, "DELETE", "", "Deleted"); } }, "Delete")) },
    ], answer.messages, {
      empty: "The dead-letter queue is empty.",
      onRow: (m) => { chosen = m; showDetail(); load().catch((error) => notice.replaceChildren(h("span", { class: "error" }, error.message))); },
      selected: (m) => chosen && m.transactionId === chosen.transactionId && m.partitionId === chosen.partitionId,
    }),
    pager({ offset: state.offset, limit: PAGE, total: answer.total, onPage: (offset) => change({ offset }) }));
  }

  async function act(m, method, suffix, done) {
    try {
      await api(`/api/v1/messages/${m.partitionId}/${encodeURIComponent(m.transactionId)}${suffix}`, { method });
      notice.replaceChildren(h("span", { class: "ok" }, `${done}: ${m.transactionId}`));
      if (chosen && chosen.transactionId === m.transactionId) {
        chosen = null;
        detail.replaceChildren(h("h2", {}, "Dead letter"), h("div", { class: "empty" }, `${done}.`));
      }
      await load();
    } catch (error) {
      notice.replaceChildren(h("span", { class: "error" }, error.message));
    }
  }

  function showDetail() {
    const m = chosen;
    detail.replaceChildren(h("h2", {}, "Dead letter"),
      facts([
        ["queue", `${m.queue} / ${m.partition}`], ["transaction", m.transactionId], ["error", m.errorMessage],
        ["retries", m.retryCount ?? 0], ["created", time(m.createdAt)], ["failed", time(m.failedAt)],
      ]),
      h("h2", { style: "margin-top: 12px" }, "Payload"), json(m.data));
  }

  await load();
  return null;
}
