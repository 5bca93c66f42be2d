// Message browser: a filtered page of messages created within a window (GET /api/v1/messages
// ?queue&partition&status&from&limit&offset) and one message with its
// payload (GET /api/v1/messages/{partitionId}/{transactionId}), with retry, dead-letter, delete.
import { api, windowOf } from "../api.js";
import { facts, h, json, link, pager, panel, searchBox, select, table, tag, time } from "../ui.js";

export const title = "Messages";

const PAGE = 50;
// The listing covers a window of creation times (the broker's default is the last hour).
const SINCE = { "1h": 60, "24h": 1440, "7d": 10080, "30d": 43200 };
const STATUSES = [["", "any status"], ["pending", "pending"], ["processing", "processing"],
  ["completed", "completed"], ["dead_letter", "dead letter"]];

export async function render(view, route) {
  const [state, change] = route.filters({ queue: "", partition: "", status: "", since: "1h", offset: 0 }, load);
  let chosen = null;
  const list = h("div");
  const detail = panel("Message", h("div", { class: "empty" }, "Pick a message to see its payload."));
  view.replaceChildren(
    panel(null, h("div", { class: "toolbar" },
      searchBox("Queue (exact name)", state.queue, (queue) => change({ queue, offset: 0 }), "queue"),
      searchBox("Partition (exact name)", state.partition, (partition) => change({ partition, offset: 0 }), "partition"),
      select("status", STATUSES, state.status, (status) => change({ status, offset: 0 })),
      select("since", Object.keys(SINCE).map((key) => [key, `created in the last ${key}`]), state.since,
        (since) => change({ since, offset: 0 }))), list),
    detail);

  async function load() {
    const answer = await api("/api/v1/messages", {
      query: {
        queue: state.queue, partition: state.partition, status: state.status, limit: PAGE, offset: state.offset,
        from: windowOf(SINCE[state.since] || SINCE["1h"]).from,
      },
    });
    if (!route.current()) return;
    list.replaceChildren(table([
      { title: "created", value: (m) => time(m.createdAt) },
      { title: "queue", value: (m) => link(`/queues/${encodeURIComponent(m.queue)}`, m.queue) },
      { title: "partition", value: (m) => m.partition },
      { title: "status", value: (m) => tag(m.status) },
      { title: "transaction", value: (m) => m.transactionId },
      { title: "trace", value: (m) => m.traceId || "—" },
    ], answer.messages, {
      empty: "No message matches.",
      onRow: (m) => { chosen = m; Promise.all([showDetail(), load()]).catch(report); },
      selected: (m) => chosen && m.transactionId === chosen.transactionId && m.partitionId === chosen.partitionId,
    }),
    pager({ offset: state.offset, limit: PAGE, total: answer.total, onPage: (offset) => change({ offset }) }));
  }

  function report(error) {
    detail.append(h("div", { class: "error" }, error.message));
  }

  async function act(method, suffix, done) {
    const base = `/api/v1/messages/${chosen.partitionId}/${encodeURIComponent(chosen.transactionId)}`;
    try {
      await api(`${base}${suffix}`, { method });
      await done();
      await load();
    } catch (error) {
      report(error);
    }
  }

  async function showDetail() {
    const m = await api(`/api/v1/messages/${chosen.partitionId}/${encodeURIComponent(chosen.transactionId)}`);
    detail.replaceChildren(h("h2", {}, "Message"),
      h("div", { class: "toolbar" },
        h("button", { type: "button", onclick: () => act("POST", "/retry", showDetail) }, "Retry"),
        h("button", { type: "button", onclick: () => act("POST", "/dlq", showDetail) }, "Move to dead letters"),
        h("button", { type: "button", class: "danger", onclick: () => {
          if (window.confirm("Delete this message?")) act("DELETE", "", () => { chosen = null; detail.replaceChildren(h("h2", {}, "Message"), h("div", { class: "empty" }, "Deleted.")); });
        } }, "Delete")),
      facts([
        ["queue", `${m.queue} / ${m.partition}`], ["status", tag(m.status)], ["transaction", m.transactionId],
        ["created", time(m.createdAt)], ["lease expires", time(m.leaseExpiresAt)], ["trace", m.traceId],
        ["retries", m.retryCount ?? "—"], ["error", m.errorMessage], ["encrypted", m.isEncrypted ? "yes" : "no"],
        ["groups", (m.consumerGroups || []).map((g) => `${g.name === "__QUEUE_MODE__" ? "queue mode" : g.name}: ${g.consumed ? "consumed" : g.deadLettered ? "dead letter" : "pending"}`).join(", ") || "—"],
      ]),
      h("h2", { style: "margin-top: 12px" }, "Payload"), json(m.payload));
  }

  await load();
  return null;
}
