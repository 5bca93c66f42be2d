// The shell: client-side routing (history API), the health dot, maintenance banners and the
// refresh button. Each page is a module exporting `title` and `render(view, route)`;
// `render` may return a function the shell calls when the page is left.
import { api } from "./api.js";
import { errorBox, h } from "./ui.js";

const ROUTES = [
  [/^\/$/, "overview"],
  [/^\/queues$/, "queues"],
  [/^\/queues\/(?<queue>[^/]+)$/, "queue"],
  [/^\/consumers$/, "consumers"],
  [/^\/messages$/, "messages"],
  [/^\/dlq$/, "dlq"],
  [/^\/traces$/, "traces"],
  [/^\/system$/, "system"],
];
const SHELL_POLL_MS = 30_000;

let leave = null;
let generation = 0;

function decoded(text) {
  try {
    return decodeURIComponent(text);
  } catch {
    return text; // a malformed escape: the name as typed
  }
}

function match(pathname) {
  for (const [pattern, page] of ROUTES) {
    const found = pattern.exec(pathname);
    if (found) {
      const params = Object.fromEntries(
        Object.entries(found.groups || {}).map(([k, v]) => [k, decoded(v)]));
      return { page, params };
    }
  }
  return null;
}

async function show() {
  const mine = ++generation;
  if (leave) { leave(); leave = null; }
  const view = document.getElementById("view");
  const found = match(window.location.pathname);
  document.querySelectorAll("#nav a").forEach((a) => {
    const nav = a.dataset.nav;
    const here = window.location.pathname;
    a.classList.toggle("active", nav === "/" ? here === "/" : here === nav || here.startsWith(`${nav}/`));
  });
  if (!found) {
    view.replaceChildren(h("section", { class: "panel" }, "No such page. ", h("a", { href: "/", "data-link": true }, "Back to the overview")));
    document.getElementById("title").textContent = "Not found";
    view.dataset.ready = "1";
    return;
  }
  const module = await import(`./pages/${found.page}.js`);
  if (mine !== generation) return;
  const route = {
    params: found.params,
    query: new URLSearchParams(window.location.search),
    // A page's filters live in the address (replaced, not pushed: the page reloads its own
    // data), so a reload or a shared link shows the same view. `defaults` names the keys; a
    // numeric default makes the key a non-negative number. Returns [state, change(values)].
    filters(defaults, reload) {
      const state = {};
      for (const [key, fallback] of Object.entries(defaults)) {
        const raw = route.query.get(key);
        state[key] = raw === null ? fallback : typeof fallback === "number" ? Math.max(0, Number(raw) || 0) : raw;
      }
      const change = (values) => {
        Object.assign(state, values);
        const query = new URLSearchParams();
        for (const [key, value] of Object.entries(state)) if (value !== defaults[key]) query.set(key, value);
        const search = query.toString();
        window.history.replaceState({}, "", `${window.location.pathname}${search ? `?${search}` : ""}`);
        Promise.resolve(reload()).catch((error) => view.prepend(errorBox(error)));
      };
      return [state, change];
    },
    current: () => mine === generation,
  };
  document.getElementById("title").textContent =
    typeof module.title === "function" ? module.title(route) : module.title;
  document.title = `${document.getElementById("title").textContent} · queen`;
  view.replaceChildren(h("div", { class: "muted" }, "Loading…"));
  view.dataset.page = found.page;
  view.dataset.ready = "";
  let cleanup = null;
  try {
    cleanup = await module.render(view, route);
  } catch (error) {
    if (mine === generation) view.replaceChildren(errorBox(error));
  }
  if (mine === generation) {
    leave = cleanup || null;
    view.dataset.ready = "1";
  } else if (cleanup) {
    cleanup();
  }
}

export function navigate(target) {
  if (target !== `${window.location.pathname}${window.location.search}`) {
    window.history.pushState({}, "", target);
  }
  show();
}

async function pollHealth() {
  const box = document.getElementById("health");
  let healthy = false;
  let label = "server unreachable";
  try {
    const response = await fetch("/health");
    const body = await response.json();
    healthy = body.status === "healthy" || body.status === "ok";
    label = `${healthy ? "connected" : "database down"} · v${body.version}`;
  } catch {
    healthy = false;
  }
  box.querySelector(".dot").className = `dot ${healthy ? "ok" : "bad"}`;
  box.querySelector(".label").textContent = label;
}

export async function refreshBanners() {
  const banners = document.getElementById("banners");
  let state;
  try {
    state = await api("/api/v1/system/maintenance");
  } catch {
    banners.replaceChildren();
    return;
  }
  const items = [];
  if (state.maintenanceMode) items.push(h("span", { class: "banner" }, `Push maintenance on · ${state.bufferedMessages} buffered`));
  if (state.popMaintenanceMode) items.push(h("span", { class: "banner" }, "Pop maintenance on"));
  const stats = state.bufferStats || {};
  if (!state.maintenanceMode && state.bufferedMessages > 0) items.push(h("span", { class: "banner" }, `${state.bufferedMessages} pushes in the disk buffer`));
  if (stats.failedCount > 0) items.push(h("span", { class: "banner bad" }, `${stats.failedCount} buffered records failed (${(stats.failedFiles || {}).totalMB || 0} MB)`));
  if (stats.dbHealthy === false) items.push(h("span", { class: "banner bad" }, "Database unreachable: pushes go to the disk buffer"));
  banners.replaceChildren(...items);
}

document.addEventListener("click", (event) => {
  const anchor = event.target.closest("a[data-link]");
  if (!anchor || event.metaKey || event.ctrlKey || event.shiftKey || event.button !== 0) return;
  event.preventDefault();
  navigate(anchor.getAttribute("href"));
});
window.addEventListener("popstate", show);
document.getElementById("refresh").addEventListener("click", () => { show(); refreshBanners(); });
pollHealth();
refreshBanners();
setInterval(pollHealth, SHELL_POLL_MS);
setInterval(refreshBanners, SHELL_POLL_MS);
show();
