// The Flywheel admin console: a single-page app over the gateway's REST API.
// No framework and no build step; everything is drawn by this file (charts are inline SVG).
import { barChart, lineChart, sparkline, PALETTE } from "/console/static/chart.js";

const KEY_STORAGE = "flywheel.apiKey";
const FINAL = new Set(["succeeded", "failed", "rejected", "cancelled"]);
const $ = (sel, root = document) => root.querySelector(sel);

// --- DOM helper: h("tag", {attrs}, ...children); text is always set as text, never as HTML ---
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") el.addEventListener(name.slice(2), value);
    else if (name === "class") el.className = value;
    else if (name === "style") el.style.cssText = value; // CSSOM: allowed by the page's CSP
    else if (name in el && typeof value !== "string") el[name] = value;
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

const fmt = {
  num: (n, digits = 0) => (typeof n === "number" && Number.isFinite(n)
    ? n.toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits }) : "–"),
  score: (n) => (typeof n === "number" ? n.toFixed(4) : "–"),
  time: (iso) => (iso ? new Date(iso).toLocaleString("en-GB", { hour12: false }) : "–"),
  pct: (n) => (typeof n === "number" ? `${(n * 100).toFixed(1)}%` : "–"),
};

function badge(text, kind = text) {
  return h("span", { class: `badge ${kind}` }, text);
}

function table(headers, rows, { caption, empty = "Nothing yet." } = {}) {
  const head = h("tr", {}, headers.map((x) => {
    const [label, cls] = Array.isArray(x) ? x : [x, ""];
    return h("th", { scope: "col", class: cls }, label);
  }));
  const body = rows.length ? rows
    : [h("tr", {}, h("td", { colspan: headers.length, class: "muted" }, empty))];
  return h("div", { class: "table-wrap" },
    h("table", {}, caption ? h("caption", { class: "muted" }, caption) : null, h("thead", {}, head),
      h("tbody", {}, body)));
}

// --- toast and confirmation dialog ---
let toastTimer;
function toast(message, bad = false) {
  const el = $("#toast");
  el.textContent = message;
  el.className = `toast show${bad ? " bad" : ""}`;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { el.className = "toast"; }, 5000);
}

function confirmAction(title, text, okLabel = "Confirm") {
  const dialog = $("#confirm");
  $("#confirm-title").textContent = title;
  $("#confirm-text").textContent = text;
  $("#confirm-ok").textContent = okLabel;
  const opener = document.activeElement;
  dialog.returnValue = "";
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => {
      if (opener instanceof HTMLElement) opener.focus();
      resolve(dialog.returnValue === "ok");
    }, { once: true });
    dialog.showModal();
    $("#confirm-cancel").focus();
  });
}

// --- the API: Bearer key from session storage, problem+json errors ---
class ApiError extends Error {
  constructor(status, detail) { super(detail); this.status = status; }
}

function apiKey() { return sessionStorage.getItem(KEY_STORAGE); }

async function api(path, { method = "GET", body } = {}) {
  const key = apiKey();
  if (!key) throw new ApiError(401, "not signed in");
  let response;
  try {
    response = await fetch(path, {
      method,
      headers: { Authorization: `Bearer ${key}`, Accept: "application/json",
        ...(body !== undefined ? { "Content-Type": "application/json" } : {}) },
      body: body !== undefined ? JSON.stringify(body) : undefined,
    });
  } catch (error) {
    throw new ApiError(0, `the gateway cannot be reached (${error.message})`);
  }
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = text; }
  if (!response.ok) {
    const detail = (data && typeof data === "object" && (data.detail || data.title)) || response.statusText;
    // A key that is not valid, or not an admin's, signs out; a tenant admin's key refused a
    // page that spans tenants (operator scope) stays signed in and the page says why.
    if (response.status === 401 || (response.status === 403 && !/'operator' scope/.test(String(detail)))) {
      signOut(String(detail));
    }
    throw new ApiError(response.status, String(detail));
  }
  return data;
}

// --- who the key is (GET /v1/whoami), asked once per sign-in ---
let identity = null;
async function whoami() {
  identity = identity || api("/v1/whoami").catch((error) => { identity = null; throw error; });
  return identity;
}

// An operator's tenant selector (null for a tenant's key: it sees only its own tenant).
// `allLabel`: the choice that names no tenant ("every tenant", or the key's own).
async function tenantPicker(id, allLabel, onChange) {
  let me;
  try { me = await whoami(); } catch { return null; }
  if (!me.operator) return null;
  const select = h("select", { id }, h("option", { value: "" }, allLabel));
  try {
    const counts = await api("/v1/admin/tenants");
    for (const c of counts) select.append(h("option", { value: c.tenant }, `${c.tenant} (${fmt.num(c.items)} items)`));
  } catch { /* the key's own tenant still works */ }
  select.addEventListener("change", () => onChange(select.value));
  return h("div", { class: "field" }, h("label", { for: id }, "Tenant"), select);
}

// --- session ---
function showSignedIn(signedIn) {
  $("#login").hidden = signedIn;
  $("#nav").hidden = !signedIn;
  $("#who").hidden = !signedIn;
  $("#page").hidden = !signedIn;
  if (signedIn) {
    const key = apiKey();
    $("#who-label").textContent = `admin key …${key.slice(-4)}`;
  }
}

function signOut(reason = "") {
  sessionStorage.removeItem(KEY_STORAGE);
  identity = null;
  stopPage();
  $("#page").replaceChildren();
  showSignedIn(false);
  $("#login-error").textContent = reason;
  $("#api-key").value = "";
  $("#api-key").focus();
}

async function signIn(event) {
  event.preventDefault();
  const key = $("#api-key").value.trim();
  if (!key) return;
  sessionStorage.setItem(KEY_STORAGE, key);
  $("#login-error").textContent = "";
  try {
    await api("/v1/admin/tenants");
  } catch (error) {
    if (error.status === 401 || error.status === 403) return; // signOut() showed why
    toast(`Signed in, but: ${error.message}`, true);
  }
  showSignedIn(true);
  if (!location.hash || location.hash === "#/") location.hash = "#/overview";
  else route();
}

// --- pages and routing ---
let stopFns = [];
function stopPage() { for (const stop of stopFns) stop(); stopFns = []; }

function every(ms, fn) {
  let busy = false;
  const tick = async () => {
    if (busy) return;
    busy = true;
    try { await fn(); } finally { busy = false; }
  };
  tick();
  const id = setInterval(tick, ms);
  stopFns.push(() => clearInterval(id));
}

function errorBox(error) {
  return h("p", { class: "error", role: "alert" }, error instanceof Error ? error.message : String(error));
}

// Overview ---------------------------------------------------------------------------------
const offsetHistory = new Map(); // topic -> {t, end}; persists across visits
const rateHistory = [];          // total events/s, newest last

function overviewPage(root) {
  const health = h("section", { class: "card", "aria-labelledby": "h-health" },
    h("h3", { id: "h-health" }, "Components"), h("p", { class: "muted" }, "Checking…"));
  const flow = h("section", { class: "card", "aria-labelledby": "h-flow" },
    h("h3", { id: "h-flow" }, "Topics and consumer lag"), h("p", { class: "muted" }, "Loading…"));
  const dead = h("section", { class: "card", "aria-labelledby": "h-dead" },
    h("h3", { id: "h-dead" }, "Dead letters"), h("p", { class: "muted" }, "Loading…"));
  const history = h("section", { class: "card", "aria-labelledby": "h-history" },
    h("h3", { id: "h-history" }, "The last hour"), h("p", { class: "muted" }, "Loading…"));
  root.append(h("h2", {}, "Overview"), h("div", { class: "grid" }, health, h("div", {}, flow, history, dead)));

  // Events/s and lag over time, from Prometheus's history (operator scope; see docs/operations.md).
  every(30000, async () => {
    try {
      const data = await api("/v1/admin/metrics/history?window=1h");
      const named = (list, name) => list.map((x) => ({ name: name(x.labels), points: x.points }));
      if (!data.available) {
        history.replaceChildren(h("h3", { id: "h-history" }, "The last hour"),
          h("p", { class: "muted" }, `No history: ${data.detail}`));
        return;
      }
      history.replaceChildren(h("h3", { id: "h-history" }, "The last hour"),
        h("h4", {}, "Events/s per topic"),
        h("div", { class: "chart" }, lineChart(named(data.series.events_per_s, (l) => l.topic),
          { label: "events per second per topic, last hour" })),
        h("h4", {}, "Consumer lag per group and topic"),
        h("div", { class: "chart" }, lineChart(named(data.series.lag, (l) => `${l.group} / ${l.topic}`),
          { label: "consumer lag per group and topic, last hour" })));
    } catch (error) {
      history.replaceChildren(h("h3", { id: "h-history" }, "The last hour"), errorBox(error));
    }
  });

  every(10000, async () => {
    try {
      const components = await api("/v1/admin/status");
      const healthy = components.filter((c) => c.healthy).length;
      health.replaceChildren(h("h3", { id: "h-health" }, "Components"),
        h("div", { class: "stats" }, h("div", {}, h("div", { class: "stat" }, `${healthy}/${components.length}`),
          h("span", { class: "muted" }, "healthy"))),
        table(["Component", "Health", ["URL", "hide-narrow"], ["PID", "num hide-narrow"], "Detail"],
          components.map((c) => h("tr", {},
            h("td", {}, c.name),
            h("td", {}, c.healthy ? badge("healthy", "ok") : badge("down", "bad")),
            h("td", { class: "mono hide-narrow" }, c.url || ""),
            h("td", { class: "num hide-narrow" }, c.pid ?? "–"),
            h("td", { class: "muted" }, c.detail || "")))));
    } catch (error) {
      health.replaceChildren(h("h3", { id: "h-health" }, "Components"), errorBox(error));
    }
  });

  every(5000, async () => {
    try {
      const topics = await api("/v1/admin/topics");
      const now = performance.now();
      let total = 0; let known = false;
      const rows = [];
      for (const t of topics) {
        const prev = offsetHistory.get(t.topic);
        let rate = null;
        if (prev && now > prev.t) {
          rate = Math.max(0, (t.end_offset - prev.end) / ((now - prev.t) / 1000));
          total += rate; known = true;
        }
        offsetHistory.set(t.topic, { t: now, end: t.end_offset });
        const groups = t.groups.length ? t.groups : [null];
        groups.forEach((g, i) => rows.push(h("tr", {},
          i === 0 ? h("td", { rowspan: groups.length }, t.topic) : null,
          i === 0 ? h("td", { class: "num", rowspan: groups.length }, fmt.num(t.end_offset)) : null,
          i === 0 ? h("td", { class: "num", rowspan: groups.length }, rate === null ? "…" : fmt.num(rate, 1)) : null,
          h("td", {}, g ? g.group : h("span", { class: "muted" }, "no group")),
          h("td", { class: "num" }, g ? fmt.num(g.lag) : "–"))));
      }
      if (known) { rateHistory.push(total); if (rateHistory.length > 60) rateHistory.shift(); }
      flow.replaceChildren(h("h3", { id: "h-flow" }, "Topics and consumer lag"),
        h("div", { class: "stats" },
          h("div", {}, h("div", { class: "stat" }, known ? fmt.num(total, 1) : "…"),
            h("span", { class: "muted" }, "events/s, all topics")),
          h("div", { class: "chart", style: "flex:1 1 12rem" },
            sparkline(rateHistory, { label: "events per second over the last polls" }))),
        table(["Topic", ["Events", "num"], ["Events/s", "num"], "Group", ["Lag", "num"]], rows));
    } catch (error) {
      flow.replaceChildren(h("h3", { id: "h-flow" }, "Topics and consumer lag"), errorBox(error));
    }
  });

  every(15000, async () => {
    try {
      const letters = await api("/v1/admin/dlq?letters=0");
      dead.replaceChildren(h("h3", { id: "h-dead" }, "Dead letters"),
        table(["Topic", ["Letters", "num"], ["Not redriven", "num"]], letters.map((d) => h("tr", {},
          h("td", {}, h("a", { href: `#/dlq/${encodeURIComponent(d.topic)}`, class: "dlq-link" }, d.topic)),
          h("td", { class: "num" }, fmt.num(d.total)),
          h("td", { class: "num" }, d.pending ? badge(fmt.num(d.pending), "warn") : "0")))));
    } catch (error) {
      dead.replaceChildren(h("h3", { id: "h-dead" }, "Dead letters"), errorBox(error));
    }
  });
}

// Search ----------------------------------------------------------------------------------
function parseValue(text) {
  const t = text.trim();
  if (/^(true|false|null|-?\d+(\.\d+)?([eE][+-]?\d+)?)$/.test(t) || /^[[{"]/.test(t)) {
    try { return JSON.parse(t); } catch { /* a plain string */ }
  }
  return text;
}

let filterSeq = 0;
function filterRow(key = "", value = "") {
  const n = ++filterSeq;
  const row = h("div", { class: "row filter" },
    h("div", { class: "field" }, h("label", { for: `fk-${n}` }, "Key"),
      h("input", { id: `fk-${n}`, class: "filter-key", value: key, autocomplete: "off" })),
    h("div", { class: "field" }, h("label", { for: `fv-${n}` }, "Value"),
      h("input", { id: `fv-${n}`, class: "filter-value", value, autocomplete: "off" })),
    h("button", { type: "button", class: "secondary small", "aria-label": `Remove filter ${n}`,
      onclick: () => row.remove() }, "Remove"));
  return row;
}

function searchPage(root) {
  const filters = h("div", { class: "filters" });
  const results = h("section", { class: "card", "aria-labelledby": "h-results", "aria-live": "polite" },
    h("h3", { id: "h-results" }, "Results"), h("p", { class: "muted" }, "Run a search to see results."));
  const form = h("form", { id: "search-form", onsubmit: runSearch },
    h("div", { class: "row" },
      h("div", { class: "field grow" }, h("label", { for: "q" }, "Query"),
        h("input", { id: "q", name: "query", required: true, autocomplete: "off", placeholder: "what are you looking for?" })),
      h("div", { class: "field" }, h("label", { for: "mode" }, "Mode"),
        h("select", { id: "mode", name: "mode" }, h("option", { value: "vector" }, "vector"),
          h("option", { value: "hybrid" }, "hybrid"))),
      h("div", { class: "field" }, h("label", { for: "k" }, "k"),
        h("input", { id: "k", name: "k", type: "number", min: 1, max: 100, value: 10, required: true }))),
    h("fieldset", { class: "card" }, h("legend", {}, "Metadata filters"), filters,
      h("button", { type: "button", class: "secondary small", onclick: () => {
        const row = filterRow(); filters.append(row); $(".filter-key", row).focus();
      } }, "Add filter")),
    h("button", { type: "submit" }, "Search"));
  // An operator searches as any tenant (?tenant=); a tenant's key searches its own items.
  let tenant = "";
  (async () => {
    const picker = await tenantPicker("search-tenant", "this key's tenant", (value) => { tenant = value; });
    if (picker) $(".row", form).append(picker);
  })();
  const tenants = h("section", { class: "card", "aria-labelledby": "h-tenants" },
    h("h3", { id: "h-tenants" }, "Items per tenant"), h("p", { class: "muted" }, "Loading…"));
  root.append(h("h2", {}, "Search playground"),
    h("div", { class: "grid" }, h("section", { class: "card" }, form), tenants), results);

  async function runSearch(event) {
    event.preventDefault();
    const body = { query: $("#q").value, k: Number($("#k").value) || 10, mode: $("#mode").value, filters: {} };
    for (const row of filters.querySelectorAll(".filter")) {
      const key = $(".filter-key", row).value.trim();
      if (key) body.filters[key] = parseValue($(".filter-value", row).value);
    }
    const button = $("button[type=submit]", form);
    button.disabled = true;
    try {
      const asTenant = tenant;
      const found = await api(`/v1/search${asTenant ? `?tenant=${encodeURIComponent(asTenant)}` : ""}`,
        { method: "POST", body });
      results.replaceChildren(h("h3", { id: "h-results" }, "Results"),
        h("p", { id: "search-summary" }, `${found.results.length} results from model version `,
          h("strong", { id: "answered-by" }, found.model_version), ` in ${fmt.num(found.took_ms, 1)} ms`,
          asTenant ? ` (as tenant ${asTenant})` : "",
          body.mode === "hybrid" ? hybridSummary(found.fusion_weight ?? 0.5) : ""),
        table(["#", "Id", "Result", ["Score", "num"], ["Metadata", "hide-narrow"]], found.results.map((r, i) =>
          h("tr", { class: "result", "data-id": r.id }, h("td", {}, i + 1),
            h("td", { class: "mono" }, h("a", { href: itemHref(r.id, asTenant), class: "item-link",
              "aria-label": `Item ${r.id}` }, r.id)),
            h("td", {}, h("strong", { class: "result-title" }, r.title || h("span", { class: "muted" }, "(no title)")),
              r.snippet ? h("p", { class: "snippet" }, r.snippet) : null),
            h("td", { class: "num" }, fmt.score(r.score), scoreParts(r.score_parts)),
            h("td", { class: "mono hide-narrow" }, Object.keys(r.metadata || {}).length ? JSON.stringify(r.metadata) : ""))),
        { empty: "No results." }));
    } catch (error) {
      results.replaceChildren(h("h3", { id: "h-results" }, "Results"), errorBox(error));
    } finally {
      button.disabled = false;
    }
  }

  (async () => {
    try {
      const counts = await api("/v1/admin/tenants");
      const total = counts.reduce((sum, c) => sum + c.items, 0);
      tenants.replaceChildren(h("h3", { id: "h-tenants" }, "Items per tenant"),
        table(["Tenant", ["Items", "num"]], counts.map((c) => h("tr", {}, h("td", {}, c.tenant),
          h("td", { class: "num" }, fmt.num(c.items)))), { caption: `${fmt.num(total)} items in all`, empty: "No items indexed." }));
    } catch (error) {
      tenants.replaceChildren(h("h3", { id: "h-tenants" }, "Items per tenant"), errorBox(error));
    }
  })();
  $("#q").focus();
}

// A hybrid result's score, in its parts: each ranking's rank and score ("–": not a candidate there).
function scoreParts(parts) {
  if (!parts) return null;
  const part = (name, p, digits) => h("div", { class: `part part-${name}` },
    p ? `${name} #${p.rank} (${fmt.num(p.score, digits)})` : `${name} –`);
  return h("div", { class: "muted parts" }, part("vector", parts.vector, 3), part("keyword", parts.keyword, 2));
}

// The fused score's formula at the weight of the version that answered (its training chose it).
function hybridSummary(weight) {
  const share = (value) => String(+value.toFixed(2));
  return `. Hybrid score: ${share(weight)} × vector + ${share(1 - weight)} × keyword, each normalised ` +
    "to [0, 1] over its candidates (the answering version's weight).";
}

// Item -------------------------------------------------------------------------------------
function itemHref(id, tenant = "") {
  return `#/item/${encodeURIComponent(tenant)}/${encodeURIComponent(id)}`;
}

function itemPage(root, [tenant = "", id = ""] = []) {
  const card = h("section", { class: "card", id: "item", "aria-labelledby": "h-item" },
    h("h3", { id: "h-item" }, "Item"), h("p", { class: "muted" }, "Loading…"));
  root.append(h("h2", {}, "Item ", h("span", { class: "mono" }, id)),
    h("p", {}, h("a", { href: "#/search", onclick: (event) => {
      if (history.length > 1) { event.preventDefault(); history.back(); }
    } }, "Back to search")), card);
  (async () => {
    try {
      const item = await api(`/v1/content/${encodeURIComponent(id)}${tenant ? `?tenant=${encodeURIComponent(tenant)}` : ""}`);
      const searchable = new Set(item.searchable_in || []);
      card.replaceChildren(h("h3", { id: "h-item" }, item.title || h("span", { class: "muted" }, "(no title)")),
        h("dl", { class: "facts" },
          h("dt", {}, "Id"), h("dd", { class: "mono" }, item.id),
          tenant ? [h("dt", {}, "Tenant"), h("dd", {}, tenant)] : null,
          h("dt", {}, "Item version"), h("dd", { id: "item-version" }, fmt.num(item.version)),
          h("dt", {}, "Indexed"), h("dd", {}, fmt.time(item.indexed_at)),
          h("dt", {}, "Searchable with"), h("dd", { id: "item-searchable" },
            searchable.size ? [...searchable].map((v) => badge(`v${v}`, "ok")).flatMap((x, i) => (i ? [" ", x] : [x]))
              : h("span", { class: "muted" }, "no model version yet"))),
        h("h4", {}, "Indexes"),
        table(["Model version", "Status", "Serving", ["Chunks", "num"], ["Of item version", "num"]],
          (item.indexes || []).map((x) => h("tr", {},
            h("td", {}, `v${x.version}`), h("td", {}, badge(x.status)), h("td", {}, x.active ? badge("active") : "–"),
            h("td", { class: "num" }, fmt.num(x.chunks)), h("td", { class: "num" }, x.item_version ?? "–"))),
          { empty: "No model version has an index." }),
        h("h4", {}, "Metadata"), h("pre", { id: "item-metadata" }, JSON.stringify(item.metadata || {}, null, 2)),
        h("h4", {}, "Text"), h("pre", { id: "item-text" }, item.text || ""));
    } catch (error) {
      card.replaceChildren(h("h3", { id: "h-item" }, "Item"), errorBox(error));
    }
  })();
}

// Tasks -------------------------------------------------------------------------------------
function taskLinks(task) {
  const out = [];
  for (const [name, value] of Object.entries(task.links || {})) {
    if (typeof value === "string" && /^https?:\/\//.test(value)) {
      out.push(h("a", { href: value, target: "_blank", rel: "noopener noreferrer" },
        name === "mlflow_run" ? "MLflow run" : name));
    } else if (value) {
      out.push(h("span", { class: "mono" }, `${name}: ${typeof value === "string" ? value : JSON.stringify(value)}`));
    }
  }
  return out.length ? out.flatMap((x, i) => (i ? [" ", x] : [x])) : "–";
}

function tasksPage(root) {
  const typeSelect = h("select", { id: "task-type" }, ["all", "training", "deploy", "reindex"].map((t) =>
    h("option", { value: t === "all" ? "" : t }, t)));
  const list = h("div", { "aria-live": "polite" }, h("p", { class: "muted" }, "Loading…"));
  const updated = h("span", { class: "muted" });
  const filters = h("div", { class: "row" }, h("div", { class: "field" }, h("label", { for: "task-type" }, "Type"), typeSelect),
    updated);
  root.append(h("h2", {}, "Tasks"), h("section", { class: "card" }, filters, list));
  let tenant = "";
  let operator = false;
  const load = async () => {
    try {
      const type = typeSelect.value;
      const tasks = await api(`/v1/tasks?limit=50${type ? `&type=${type}` : ""}${tenant ? `&tenant=${encodeURIComponent(tenant)}` : ""}`);
      updated.textContent = `updated ${new Date().toLocaleTimeString("en-GB", { hour12: false })}, every 2 s`;
      list.replaceChildren(table(["Task", "Type", ...(operator ? ["Tenant"] : []), "Status", "Stage", "Progress",
        ["Updated", "hide-narrow"], "Error", "Links", "Action"],
        tasks.map((t) => {
          // A finished task is done whatever stage it stopped at (a rejection can come early).
          const progress = FINAL.has(t.status) ? 1 : (typeof t.progress === "number" ? t.progress : 0);
          return h("tr", { class: "task", "data-task-id": t.id, "data-status": t.status },
            h("td", { class: "mono" }, t.id), h("td", {}, t.type), operator ? h("td", {}, t.tenant || "–") : null,
            h("td", {}, badge(t.status)),
            h("td", { class: "task-stage" }, t.stage || "–"),
            h("td", {}, h("progress", { max: 1, value: progress, "aria-label": `progress of ${t.id}` }),
              ` ${Math.round(progress * 100)}%`),
            h("td", { class: "hide-narrow" }, fmt.time(t.updated_at)),
            h("td", { class: `task-error ${t.error ? "error" : "muted"}` }, t.error || "–"),
            h("td", {}, taskLinks(t)), h("td", {}, taskAction(t)));
        }), { empty: "No tasks yet: request a training run on the Models page." }));
    } catch (error) {
      list.replaceChildren(errorBox(error));
    }
  };

  // Cancel a task that has not ended; retry one that failed or was cancelled (both confirmed).
  function taskAction(t) {
    if (!FINAL.has(t.status)) {
      return h("button", { type: "button", class: "small", disabled: Boolean(t.cancel_requested_at),
        "aria-label": `Cancel task ${t.id}`, onclick: () => act(t, "cancel") },
      t.cancel_requested_at ? "Cancelling…" : "Cancel");
    }
    if (t.status === "failed" || t.status === "cancelled") {
      return h("button", { type: "button", class: "small", "aria-label": `Retry task ${t.id}`,
        onclick: () => act(t, "retry") }, "Retry");
    }
    return "–";
  }

  async function act(t, action) {
    const cancel = action === "cancel";
    const ok = await confirmAction(cancel ? `Cancel ${t.type} task ${t.id}?` : `Retry ${t.type} task ${t.id}?`,
      cancel ? (t.status === "pending" ? "It will not run." : "It stops at its next step; a training run registers nothing.")
        : "Its request runs again from the start (a training run as a new run linked to this one).",
      cancel ? "Cancel task" : "Retry task");
    if (!ok) return;
    try {
      const done = await api(`/v1/tasks/${encodeURIComponent(t.id)}/${action}`, { method: "POST" });
      toast(cancel ? `Task ${t.id}: ${done.status === "cancelled" ? "cancelled" : "stopping at its next step"}.`
        : `Retry requested: task ${done.task_id}.`);
      await load();
    } catch (error) {
      toast(`${cancel ? "Cancel" : "Retry"} failed: ${error.message}`, true);
    }
  }

  typeSelect.addEventListener("change", load);
  (async () => {
    const picker = await tenantPicker("task-tenant", "every tenant", (value) => { tenant = value; load(); });
    if (picker) { operator = true; filters.insertBefore(picker, updated); load(); }
  })();
  every(2000, load);
}

// Models ------------------------------------------------------------------------------------
const PREFERRED_METRICS = ["ndcg@10", "mrr@10", "recall@10"];
const SHARE_KEYS = ["share", "weight", "split", "fraction", "traffic", "percent"];

function numericEntries(obj) {
  return Object.entries(obj || {}).filter(([, v]) => typeof v === "number" && Number.isFinite(v));
}

function metricOrder(versions) {
  const names = new Set();
  for (const v of versions) for (const [k] of numericEntries(v.metrics)) names.add(k);
  const lower = (s) => s.toLowerCase();
  return [...names].sort((a, b) => {
    const ia = PREFERRED_METRICS.indexOf(lower(a)); const ib = PREFERRED_METRICS.indexOf(lower(b));
    return (ia < 0 ? 99 : ia) - (ib < 0 ? 99 : ib) || a.localeCompare(b);
  });
}

function shareOf(version) {
  for (const [k, v] of numericEntries(version.traffic)) {
    const key = k.toLowerCase();
    if (key.includes("percent")) return v / 100;
    if (SHARE_KEYS.some((x) => key.includes(x))) return v;
  }
  return null;
}

// Fields shown in their own columns; anything else a newer gateway adds lands in "Other".
const KNOWN_FIELDS = new Set(["version", "status", "active", "dim", "created_at", "activated_at", "metrics", "traffic",
  "searches", "clicked_searches", "ctr", "mrr", "adjustments", "lineage", "owner"]);

// Where a version comes from: its base, owner, training data, gate and MLflow run.
function lineageCell(v) {
  const l = v.lineage;
  const owner = v.owner ? `owned by ${v.owner}` : "shared";
  if (!l) return h("div", { class: "lineage" }, h("span", {}, "base model"), " · ", h("span", { class: "muted" }, owner));
  const stats = Object.entries(l.dataset || {}).filter(([, x]) => typeof x === "number")
    .map(([k, x]) => `${k.replaceAll("_", " ")} ${fmt.num(x)}`).join(", ");
  const gate = l.gate || {};
  return h("div", { class: "lineage" },
    h("div", {}, `from v${l.base_version ?? "?"}`, " · ", owner),
    stats ? h("div", { class: "muted" }, `data: ${stats}`) : null,
    h("div", {}, "gate ", badge(gate.decision || "–", gate.decision === "passed" ? "ok" : "warn"),
      typeof gate.margin === "number" ? ` margin ${fmt.num(gate.margin, 3)}` : "",
      gate.reason ? h("span", { class: "muted" }, ` (${gate.reason})`) : null),
    h("div", {}, h("span", { class: "mono" }, l.training_run), l.mlflow_run && /^https?:\/\//.test(l.mlflow_run)
      ? [" ", h("a", { href: l.mlflow_run, target: "_blank", rel: "noopener noreferrer", class: "mlflow-link" }, "MLflow run")]
      : null));
}

function extraFields(version) {
  const out = [];
  for (const [k, v] of Object.entries(version)) {
    if (KNOWN_FIELDS.has(k) || v === null || v === undefined) continue;
    // The serving form's measurements are long: its form and why, not the whole record.
    if (k === "serving" && typeof v === "object" && v.form) {
      out.push(`serves ${v.form}${typeof v.reason === "string" ? ` (${v.reason.slice(0, 120)})` : ""}`);
      continue;
    }
    out.push(`${k}: ${typeof v === "number" ? fmt.num(v, 4) : JSON.stringify(v)}`);
  }
  const adj = version.adjustments || {};
  if (Object.keys(adj).length) {
    out.unshift(`improver revision ${adj.revision ?? "–"}${adj.adjusted_chunks !== undefined ? `, ${adj.adjusted_chunks} chunks nudged` : ""}`);
  }
  return out;
}

function modelsPage(root) {
  const overview = h("section", { class: "card", "aria-labelledby": "h-versions" },
    h("h3", { id: "h-versions" }, "Versions"), h("p", { class: "muted" }, "Loading…"));
  const chart = h("section", { class: "card chart", "aria-labelledby": "h-chart" },
    h("h3", { id: "h-chart" }, "Evaluation metrics"));
  const reindexVersion = h("select", { id: "reindex-version", name: "model_version", required: true });
  const trainForm = h("form", { id: "train-form", onsubmit: requestTraining },
    h("div", { class: "row" },
      h("div", { class: "field" }, h("label", { for: "recipe" }, "Recipe"),
        h("select", { id: "recipe" },
          h("option", { value: "" }, "the trainer's default"),
          h("option", { value: "linear-map" }, "linear map after the model"),
          h("option", { value: "fine-tune" }, "fine-tune the model"))),
      h("div", { class: "field" }, h("label", { for: "epochs" }, "Epochs"),
        h("input", { id: "epochs", type: "number", min: 1, max: 100, placeholder: "recipe's default" })),
      h("div", { class: "field" }, h("label", { for: "min-sessions" }, "Min sessions"),
        h("input", { id: "min-sessions", type: "number", min: 1, value: 100, required: true })),
      h("div", { class: "field" }, h("label", { for: "gate-margin" }, "Gate margin"),
        h("input", { id: "gate-margin", type: "number", min: 0, max: 1, step: 0.001, value: 0, required: true }))),
    h("button", { type: "submit" }, "Request training"),
    h("p", { id: "train-result", "aria-live": "polite" }));
  const reindexForm = h("form", { id: "reindex-form", onsubmit: startReindex },
    h("div", { class: "row" },
      h("div", { class: "field" }, h("label", { for: "reindex-version" }, "Model version"), reindexVersion),
      h("label", { class: "inline" }, h("input", { type: "checkbox", id: "reindex-activate", checked: true }),
        "activate when done")),
    h("button", { type: "submit" }, "Start reindex"),
    h("p", { id: "reindex-result", "aria-live": "polite" }));
  root.append(h("h2", {}, "Models"), overview,
    h("div", { class: "grid" }, chart,
      h("div", {}, h("section", { class: "card", "aria-labelledby": "h-train" }, h("h3", { id: "h-train" }, "Training"), trainForm),
        h("section", { class: "card", "aria-labelledby": "h-reindex" }, h("h3", { id: "h-reindex" }, "Reindex"), reindexForm))));

  // An operator may look at and act on another tenant's lineage (?tenant=); training and
  // reindex requests act on the key's own tenant.
  let tenant = "";
  const forTenant = (path) => (tenant ? `${path}${path.includes("?") ? "&" : "?"}tenant=${encodeURIComponent(tenant)}` : path);
  (async () => {
    const picker = await tenantPicker("models-tenant", "this key's tenant", (value) => {
      tenant = value;
      for (const b of root.querySelectorAll("#train-form button, #reindex-form button")) b.disabled = Boolean(tenant);
      load();
    });
    if (picker) overview.before(h("div", { class: "row" }, picker,
      h("span", { class: "muted" }, "Training and reindex requests act on this key's own tenant.")));
  })();

  async function load() {
    let data;
    try {
      data = await api(forTenant("/v1/models"));
    } catch (error) {
      overview.replaceChildren(h("h3", { id: "h-versions" }, "Versions"), errorBox(error));
      return;
    }
    const versions = data.versions || [];
    const metrics = metricOrder(versions);
    const shares = versions.map((v) => [v.version, shareOf(v)]).filter(([, x]) => x !== null && x > 0);
    const ab = data.ab_split;
    const split = h("div", {},
      h("h4", {}, "A/B split"),
      ab ? h("p", { id: "ab-split" }, `Candidate v${ab.candidate_version} serves ${fmt.num(ab.percent, 1)}% of sessions; `,
        `the active v${data.active_version} serves the rest.`)
        : h("p", { class: "muted", id: "ab-split" }, "No A/B split: the active version serves all traffic."),
      shares.length ? [
        h("div", { class: "split", role: "img", "aria-label": shares.map(([v, x]) => `version ${v}: ${fmt.pct(x)}`).join(", ") },
          shares.map(([v, x], i) => h("span", { style: `width:${(x * 100).toFixed(2)}%;background:${PALETTE[i % PALETTE.length]}`, title: `version ${v}: ${fmt.pct(x)}` }))),
        h("div", { class: "legend" }, shares.map(([v, x], i) => h("span", {},
          h("span", { class: "swatch", style: `background:${PALETTE[i % PALETTE.length]}` }), `v${v} ${fmt.pct(x)}`)))] : null,
      data.online_sessions !== undefined && data.online_sessions !== null
        ? h("p", { class: "muted" }, `Click-through from ${fmt.num(data.online_sessions)} sessions`,
          data.online_window_days ? ` in the last ${fmt.num(data.online_window_days, 1)} days.` : ".") : null);
    const online = (v, k, digits) => (typeof v[k] === "number" ? fmt.num(v[k], digits) : "–");
    overview.replaceChildren(h("h3", { id: "h-versions" }, "Versions"),
      h("p", {}, "Active version: ", h("strong", { id: "active-version" }, data.active_version ?? "none")),
      split,
      table(["Version", "Status", ["Created", "hide-narrow"], ...metrics.map((m) => [m, "num"]),
        ["Traffic", "num"], ["Clicked / searches", "num hide-narrow"], ["CTR", "num"], ["MRR (online)", "num hide-narrow"],
        "Lineage", ["Other", "hide-narrow"], "Action"],
      versions.map((v) => h("tr", { "data-version": v.version },
        // "active" once: the status says it (a second badge only if the two ever disagree).
        h("td", {}, h("strong", {}, v.version), v.active && v.status !== "active" ? [" ", badge("serving", "active")] : null),
        h("td", {}, badge(v.status)),
        h("td", { class: "hide-narrow" }, fmt.time(v.created_at)),
        metrics.map((m) => h("td", { class: "num" }, fmt.num((v.metrics || {})[m], 4))),
        h("td", { class: "num" }, shareOf(v) === null ? "–" : fmt.pct(shareOf(v))),
        h("td", { class: "num hide-narrow" }, typeof v.searches === "number"
          ? `${fmt.num(v.clicked_searches ?? 0)} / ${fmt.num(v.searches)}` : "–"),
        h("td", { class: "num" }, typeof v.ctr === "number" ? fmt.pct(v.ctr) : "–"),
        h("td", { class: "num hide-narrow" }, online(v, "mrr", 3)),
        h("td", {}, lineageCell(v)),
        h("td", { class: "muted hide-narrow" }, extraFields(v).join("; ") || "–"),
        // The active version serves already: nothing to activate.
        h("td", {}, v.active ? h("span", { class: "muted" }, "serving") : h("button", {
          type: "button", class: "small", disabled: v.status === "building" || v.status === "failed",
          "aria-label": `Activate version ${v.version}`, onclick: () => activate(v.version),
        }, "Activate")))), { empty: "No model versions." }));
    // The chart compares held-out scores (0..1) from training; the improver's own figures
    // (revisions, chunk counts) stay in the table.
    const scored = metrics.filter((m) => !m.startsWith("improver_"));
    const series = scored.map((m, i) => ({ name: m, color: PALETTE[i % PALETTE.length] }));
    chart.replaceChildren(h("h3", { id: "h-chart" }, "Evaluation metrics"),
      scored.length
        ? barChart(versions.map((v) => ({ label: `v${v.version}`, values: scored.map((m) => (v.metrics || {})[m] ?? null) })),
          series, { label: `evaluation metrics per model version: ${scored.join(", ")}` })
        : h("p", { class: "muted" }, "No evaluation metrics yet: they come from training runs."));
    const chosen = reindexVersion.value;
    reindexVersion.replaceChildren(...versions.map((v) => h("option", { value: v.version }, `v${v.version}`)));
    if (chosen) reindexVersion.value = chosen;
  }

  async function activate(version) {
    const ok = await confirmAction(`Activate version ${version}?`,
      `Search switches to version ${version} at once, for this tenant only. The current version stays for rollback.`,
      `Activate v${version}`);
    if (!ok) return;
    try {
      const done = await api(forTenant(`/v1/models/${encodeURIComponent(version)}/activate`), { method: "POST" });
      toast(`Version ${done.active_version} is active (was ${done.previous_version ?? "none"}).`);
      await load();
    } catch (error) {
      toast(`Activation failed: ${error.message}`, true);
    }
  }

  async function requestTraining(event) {
    event.preventDefault();
    const body = { min_sessions: Number($("#min-sessions").value), gate_margin: Number($("#gate-margin").value) };
    if ($("#recipe").value) body.recipe = $("#recipe").value;
    if ($("#epochs").value) body.epochs = Number($("#epochs").value);
    const how = `${body.recipe ?? "the trainer's default recipe"}, ${body.epochs ?? "its default"} epoch(s)`;
    const ok = await confirmAction("Request a training run?",
      `This tenant's model learns from its sessions (${how}, at least ${body.min_sessions} sessions); `
      + `if the candidate passes the gate (margin ${body.gate_margin}), it is rolled out and the corpus re-embedded.`,
      "Start training");
    if (!ok) return;
    try {
      const accepted = await api("/v1/training-runs", { method: "POST", body });
      $("#train-result").replaceChildren("Training requested: ", h("a", { href: "#/tasks", id: "train-task" }, accepted.task_id));
      toast("Training requested.");
    } catch (error) {
      $("#train-result").replaceChildren(errorBox(error));
    }
  }

  async function startReindex(event) {
    event.preventDefault();
    const version = reindexVersion.value;
    const ok = await confirmAction(`Reindex with version ${version}?`,
      `The whole corpus is re-embedded with version ${version}; search is not affected until it is done.`, "Start reindex");
    if (!ok) return;
    try {
      const accepted = await api("/v1/reindex", { method: "POST",
        body: { model_version: version, activate: $("#reindex-activate").checked } });
      $("#reindex-result").replaceChildren("Reindex started: ", h("a", { href: "#/tasks" }, accepted.task_id));
    } catch (error) {
      $("#reindex-result").replaceChildren(errorBox(error));
    }
  }

  every(10000, load);
}

// Dead letters -----------------------------------------------------------------------------
function dlqPage(root, [only = ""] = []) {
  const list = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  const detail = h("section", { class: "card", id: "letter", tabindex: -1, "aria-labelledby": "h-letter" },
    h("h3", { id: "h-letter" }, "Letter"), h("p", { class: "muted" }, "Choose a letter to inspect it."));
  root.append(h("h2", {}, "Dead letters", only ? [" of ", h("span", { class: "mono", id: "dlq-topic" }, only)] : null),
    h("div", { class: "row" }, h("button", { type: "button", class: "secondary", onclick: () => load() }, "Refresh"),
      only ? h("a", { href: "#/dlq" }, "All topics") : null),
    list, detail);

  async function load() {
    try {
      const topics = (await api("/v1/admin/dlq?letters=20")).filter((t) => !only || t.topic === only);
      if (!topics.length) { list.replaceChildren(h("p", { class: "muted" }, `No dead-letter topic ${only}.`)); return; }
      list.replaceChildren(...topics.map((t) => h("section", { class: "card", "data-topic": t.topic },
        h("div", { class: "row" }, h("h3", {}, t.topic),
          h("span", { class: "muted" }, `${fmt.num(t.total)} letters, ${fmt.num(t.pending)} not redriven`),
          h("button", { type: "button", class: "small", disabled: !t.pending, onclick: () => redrive(t.topic, t.pending) },
            `Redrive ${t.topic}`)),
        t.letters.length ? table(["Position", "Key", ["From", "hide-narrow"], "Error", ""], t.letters.map((x) => h("tr", {},
          h("td", { class: "mono" }, `${x.partition}@${x.offset}`), h("td", { class: "mono" }, x.key ?? "–"),
          h("td", { class: "mono hide-narrow" }, x.original), h("td", {}, x.error.slice(0, 160)),
          h("td", {}, h("button", { type: "button", class: "secondary small",
            "aria-label": `Inspect letter ${x.partition}@${x.offset} of ${t.topic}`,
            onclick: () => inspect(t.topic, x.partition, x.offset) }, "Inspect")))))
          : h("p", { class: "muted" }, "No letters."))));
    } catch (error) {
      list.replaceChildren(errorBox(error));
    }
  }

  async function inspect(topic, partition, offset) {
    try {
      const letter = await api(`/v1/admin/dlq/${encodeURIComponent(topic)}/${partition}/${offset}`);
      let value = letter.value;
      try { value = JSON.stringify(JSON.parse(value), null, 2); } catch { /* not JSON */ }
      detail.replaceChildren(h("h3", { id: "h-letter" }, `${topic} ${partition}@${offset}`),
        h("p", {}, h("strong", {}, "Error: "), letter.error || "–"),
        h("p", {}, h("strong", {}, "From: "), h("span", { class: "mono" }, letter.original),
          h("strong", {}, "  Key: "), h("span", { class: "mono" }, letter.key ?? "–"),
          h("strong", {}, "  At: "), fmt.time(new Date(letter.timestamp_ms).toISOString())),
        h("h4", {}, "Headers"), h("pre", {}, JSON.stringify(letter.headers, null, 2)),
        h("h4", {}, "Value"), h("pre", {}, value ?? "(tombstone)"));
      detail.focus();
    } catch (error) {
      detail.replaceChildren(h("h3", { id: "h-letter" }, "Letter"), errorBox(error));
    }
  }

  async function redrive(topic, pending) {
    const ok = await confirmAction(`Redrive ${topic}?`,
      `${pending} letters go back to their original topic, byte for byte; consumers process them again.`, "Redrive");
    if (!ok) return;
    try {
      const done = await api(`/v1/admin/dlq/${encodeURIComponent(topic)}/redrive`, { method: "POST", body: {} });
      toast(`${done.redriven} letters redriven from ${done.topic}.`);
      await load();
    } catch (error) {
      toast(`Redrive failed: ${error.message}`, true);
    }
  }

  load();
}

const PAGES = {
  overview: ["Overview", overviewPage], search: ["Search", searchPage], tasks: ["Tasks", tasksPage],
  models: ["Models", modelsPage], dlq: ["Dead letters", dlqPage], item: ["Item", itemPage],
};
// Pages reached from another page (not in the navigation): the page the navigation marks.
const NAV_OF = { item: "search" };

let firstRoute = true;
function route() {
  if (!apiKey()) { showSignedIn(false); $("#api-key").focus(); return; }
  const [first, ...rest] = location.hash.replace(/^#\/?/, "").split("/");
  const name = first || "overview";
  const args = rest.map((x) => { try { return decodeURIComponent(x); } catch { return x; } });
  const [title, render] = PAGES[name] || PAGES.overview;
  stopPage();
  const page = $("#page");
  page.replaceChildren();
  for (const link of document.querySelectorAll("nav a")) {
    if (link.dataset.page === (PAGES[name] ? NAV_OF[name] || name : "overview")) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  document.title = `${title} · Flywheel console`;
  render(page, args);
  if (!firstRoute && !page.contains(document.activeElement)) $("#main").focus();
  firstRoute = false;
}

$("#login-form").addEventListener("submit", signIn);
// The skip link must not change the hash: that is the router's.
$(".skip").addEventListener("click", (event) => { event.preventDefault(); $("#main").focus(); });
$("#sign-out").addEventListener("click", () => signOut());
window.addEventListener("hashchange", route);
showSignedIn(Boolean(apiKey()));
route();
