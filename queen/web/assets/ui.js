// Small DOM and formatting helpers. Text always goes in as text nodes, never as HTML, so
// message payloads and names from the broker cannot inject markup.

export function h(tag, props = {}, ...children) {
  const element = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) element.addEventListener(key.slice(2), value);
    else if (key === "class") element.className = value;
    else if (key === "dataset") Object.assign(element.dataset, value);
    else if (key === "value") element.value = value;
    else element.setAttribute(key, value === true ? "" : value);
  }
  append(element, children);
  return element;
}

function append(element, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function link(href, ...children) {
  return h("a", { href, "data-link": true }, ...children);
}

export function panel(title, ...children) {
  return h("section", { class: "panel" }, title ? h("h2", {}, title) : null, ...children);
}

export function cards(items) {
  return h("div", { class: "cards" },
    items.map(([name, value, id]) => h("div", { class: "card", dataset: id ? { card: id } : undefined },
      h("div", { class: "value" }, value), h("div", { class: "name" }, name))));
}

// columns: [{title, value: row => node|text, num: bool}]
export function table(columns, rows, { onRow, empty = "Nothing here.", selected } = {}) {
  if (!rows.length) return h("div", { class: "empty" }, empty);
  return h("div", { class: "table-wrap" }, h("table", {},
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", { class: c.num ? "num" : "" }, c.title)))),
    h("tbody", {}, rows.map((row) => h("tr", {
      class: [onRow ? "clickable" : "", selected && selected(row) ? "selected" : ""].join(" ").trim(),
      onclick: onRow ? () => onRow(row) : undefined,
    }, columns.map((c) => h("td", { class: c.num ? "num" : "" }, c.value(row))))))));
}

export function facts(pairs) {
  return h("dl", { class: "facts" }, pairs.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v ?? "—")]));
}

// Either `total` is known, or `count` rows are shown and `hasMore` says whether a next page exists.
export function pager({ offset, limit, total, count, hasMore, onPage }) {
  const known = total !== undefined && total !== null;
  const last = known ? offset + limit >= total : !hasMore;
  const shown = known
    ? `${total === 0 ? 0 : offset + 1}–${Math.min(offset + limit, total)} of ${num(total)}`
    : (count ? `${offset + 1}–${offset + count}` : "");
  return h("div", { class: "pager" },
    h("button", { type: "button", disabled: offset === 0, onclick: () => onPage(Math.max(0, offset - limit)) }, "‹ Prev"),
    h("span", {}, shown),
    h("button", { type: "button", disabled: last, onclick: () => onPage(offset + limit) }, "Next ›"));
}

export function tag(text, kind) {
  return h("span", { class: `tag ${kind || text}` }, text);
}

export function errorBox(error) {
  return h("div", { class: "panel error" }, String(error.message || error));
}

export function num(value) {
  if (value === undefined || value === null || Number.isNaN(value)) return "—";
  return Number(value).toLocaleString("en-US", { maximumFractionDigits: 2 });
}

export function seconds(total) {
  if (total === undefined || total === null) return "—";
  const s = Math.max(0, Math.round(total));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
  return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
}

export function ageOf(iso) {
  if (!iso) return "—";
  return seconds((Date.now() - Date.parse(iso)) / 1000);
}

export function time(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  return d.toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
}

export function bytes(n) {
  if (n === undefined || n === null) return "—";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let value = Number(n);
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit += 1; }
  return `${value.toFixed(unit ? 1 : 0)} ${units[unit]}`;
}

export function json(value) {
  return h("pre", { class: "payload" }, JSON.stringify(value, null, 2));
}

// A text input that calls back after typing pauses, so filters hit the server once per edit.
export function searchBox(placeholder, value, onChange, name) {
  let timer;
  return h("input", {
    type: "search", placeholder, value: value || "", name,
    oninput: (event) => { clearTimeout(timer); timer = setTimeout(() => onChange(event.target.value.trim()), 300); },
  });
}

export function select(name, options, value, onChange) {
  return h("select", { name, onchange: (event) => onChange(event.target.value) },
    options.map(([v, label]) => h("option", { value: v, selected: v === value }, label)));
}

// Run `load` now and every `ms` while the page is shown; returns the page's cleanup.
export async function every(ms, load) {
  await load();
  // A failed refresh keeps the last good view; the next tick tries again.
  const timer = setInterval(() => load().catch((error) => console.warn("refresh failed", error)), ms);
  return () => clearInterval(timer);
}

export function rangePicker(ranges, current, onPick) {
  return h("div", { class: "range toolbar" }, Object.keys(ranges).map((key) =>
    h("button", { type: "button", class: key === current ? "on" : "", onclick: () => onPick(key) }, key)));
}
