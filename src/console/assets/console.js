// keyflow console: one page, four views chosen by the URL's hash (#/workflows, #/instance/<id>,
// #/dlq, #/health). Everything comes from this instance's /api; nothing from elsewhere.
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);
const el = (tag, attrs = {}, ...children) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v; else if (k.startsWith("data-")) e.setAttribute(k, v); else e[k] = v;
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(c == null ? "" : String(c)));
  return e;
};
const time = (ms) => (ms ? new Date(Number(ms)).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z") : "");
let overview = null;
let refresh = null;

// With http.auth.token set, every read needs the token too: it goes with every call.
async function api(path, options = {}) {
  const token = $("#token").value;
  const headers = { ...(options.headers || {}), ...(token ? { Authorization: `Bearer ${token}` } : {}) };
  const r = await fetch(path, { ...options, headers });
  const type = r.headers.get("content-type") || "";
  const body = type.includes("json") ? await r.json() : await r.text();
  if (!r.ok) throw new Error((body && body.error) || `HTTP ${r.status}`);
  return body;
}

function show(page) {
  for (const s of document.querySelectorAll(".page")) s.hidden = s.id !== `page-${page}`;
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.page === page);
}

// A failed read (no token, a wrong one, the instance gone) is said above the page.
const banner = (e) => { $("#banner").textContent = e ? e.message : ""; $("#banner").hidden = !e; };
// One refresh at a time: the next starts 2 s after the last one ended, however slow it was.
const every = (f) => {
  const id = { stopped: false };
  const tick = () => { if (!id.stopped) f().then(() => banner(null), banner).finally(() => { if (!id.stopped) id.timer = setTimeout(tick, 2000); }); };
  id.timer = setTimeout(tick, 2000);
  return id;
};
const stop = (id) => { if (id) { id.stopped = true; clearTimeout(id.timer); } };

async function route() {
  stop(refresh);
  const [, page = "workflows", ...rest] = location.hash.split("/");
  const arg = decodeURIComponent(rest.join("/"));
  show(page);
  try {
    banner(null);
    if (page === "workflows") { refresh = every(workflows); await workflows(); }
    else if (page === "instance") { $("#instance-id").value = arg; if (arg) await instance(arg); }
    else if (page === "dlq") await deadLetters();
    else if (page === "health") { refresh = every(health); await health(); }
  } catch (e) {
    banner(e);
  }
}

// Workflows: the diagram with live counts and rates, and the same figures as tables.
async function workflows() {
  overview = await api("/api/overview");
  $("#application").textContent = overview.application;
  $("#workflows-empty").hidden = overview.workflows.length > 0;
  const root = $("#workflows");
  for (const w of overview.workflows) {
    // One box per version running; a workflow that never changed shows no version.
    let box = root.querySelector(`[data-workflow="${CSS.escape(w.name)}"][data-version="${w.version}"]`);
    if (!box) {
      box = el("div", { class: "workflow", "data-workflow": w.name, "data-version": w.version },
        el("h2", {}, w.versions > 1 ? `${w.name} · version ${w.version}` : w.name), el("p", { class: "muted" }, w.description),
        el("div", { class: "bar" }, el("label", {}, "Zoom ", zoomPicker())),
        el("div", { class: "diagram" }),
        el("div", { class: "columns" },
          el("table", { class: "states" }, el("thead", {}, el("tr", {}, el("th", {}, "State"), el("th", {}, "Instances"))), el("tbody")),
          el("table", { class: "transitions" }, el("thead", {}, el("tr", {}, el("th", {}, "From"), el("th", {}, "To"), el("th", {}, "On"), el("th", {}, "Actions"), el("th", {}, "Per minute"))), el("tbody"))));
      // Several versions run: the newest one's box moves instances to it (with the token).
      const newest = Math.max(...overview.workflows.filter((x) => x.name === w.name).map((x) => x.version));
      if (w.versions > 1 && w.version === newest) box.append(migrateForm(w));
      root.append(box);
    }
    const svg = await api(`/api/workflows/${encodeURIComponent(w.name)}/diagram.svg?version=${w.version}`);
    const diagram = box.querySelector(".diagram");
    diagram.innerHTML = svg.replace(/^<\?xml[^>]*>/, "");
    zoom(diagram);
    box.querySelector(".states tbody").replaceChildren(...w.states.map((s) =>
      el("tr", {}, el("td", {}, s.terminal ? `${s.name} (end)` : s.name),
        el("td", { class: "num count", "data-state": s.name }, s.instances > 0
          ? el("a", { href: "#", title: "list them", onclick: (e) => { e.preventDefault(); listInstances(box, w, s.name, ""); } }, s.instances)
          : s.instances))));
    box.querySelector(".transitions tbody").replaceChildren(...w.transitions.map((t) =>
      el("tr", { class: `kind-${t.kind}` }, el("td", {}, t.from), el("td", {}, t.to), el("td", {}, t.label), el("td", {}, t.actions),
        el("td", { class: "num" }, t.perMinute == null ? "–" : t.perMinute.toFixed(1)))));
  }
}

// The instances in a state of a version, a page at a time (by instance id, over the group).
async function listInstances(box, w, state, after) {
  let list = box.querySelector(".instance-list");
  if (!list || after === "") {
    list?.remove();
    list = el("div", { class: "instance-list", "data-state": state },
      el("h3", {}, `In ${state}`), el("table", {}, el("thead", {}, el("tr", {}, el("th", {}, "Instance"), el("th", {}, "Step"), el("th", {}, "Since"))), el("tbody")),
      el("button", { type: "button", class: "more", hidden: true }, "More"));
    box.append(list);
  }
  const more = list.querySelector(".more");
  more.disabled = true; // one page at a time: a second click would add the same rows again
  const q = new URLSearchParams({ state, version: w.version, limit: 50, ...(after ? { after } : {}) });
  try {
    const page = await api(`/api/workflows/${encodeURIComponent(w.name)}/instances?${q}`);
    list.querySelector("tbody").append(...page.instances.map((i) =>
      el("tr", {}, el("td", {}, el("a", { href: `#/instance/${encodeURIComponent(i.id)}` }, i.id)), el("td", { class: "num" }, i.step), el("td", {}, time(i.since)))));
    more.hidden = !page.next;
    more.onclick = () => listInstances(box, w, state, page.next);
    banner(null);
  } catch (e) {
    banner(e); // a peer did not answer: "More" asks again from the same place
  } finally {
    more.disabled = false;
  }
}

// Migration to this version, as `keyflow workflow migrate`: a dry run first shows the counts; a
// mapping names where the states the version lacks go (`review=in-review, ...`).
function migrateForm(w) {
  const mapping = el("input", { class: "mapping", placeholder: "old=new, ...", autocomplete: "off" });
  const from = el("input", { class: "from", placeholder: "any", size: 4, autocomplete: "off" });
  const msg = el("p", { class: "message migrate-message" });
  const run = async (dryRun) => {
    const map = Object.fromEntries(mapping.value.split(",").map((p) => p.split("=").map((x) => x.trim())).filter((p) => p.length === 2 && p[0]));
    const body = { to: w.version, mapping: map, dryRun, ...(from.value.trim() ? { from: Number(from.value) } : {}) };
    if (!dryRun && !confirm(`Move the instances to version ${w.version} of ${w.name}?`)) return;
    try {
      const r = await api("/api/workflows/migrate", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
      const moves = r.moves.map(([v, s, t, n]) => `version ${v} ${s} → ${t}: ${n}`).join("; ");
      msg.className = "message migrate-message";
      msg.textContent = r.instances === 0 ? "nothing to migrate" : `${r.sent ? "sent" : "dry run"}: ${r.instances} instance(s) (${moves}) as ${r.name}`;
    } catch (e) {
      msg.textContent = e.message; msg.className = "message error migrate-message";
    }
  };
  return el("div", { class: "migrate bar" },
    el("label", {}, "Migrate from version ", from), el("label", {}, " mapping ", mapping),
    el("button", { type: "button", class: "dry-run", onclick: () => run(true) }, "Dry run"),
    el("button", { type: "button", class: "migrate-now", onclick: () => run(false) }, `Migrate to version ${w.version}`), msg);
}

// The laid-out diagram is wide; it is shown at a chosen share of its natural size (or fitted).
function zoomPicker() {
  const pick = el("select", { className: "zoom" }, ...[["fit", "fit"], ["0.6", "60%"], ["1", "100%"]].map(([v, t]) => el("option", { value: v }, t)));
  pick.value = sessionStorage.getItem("keyflow.zoom") || "0.6";
  pick.addEventListener("change", () => {
    sessionStorage.setItem("keyflow.zoom", pick.value);
    for (const d of document.querySelectorAll(".diagram")) zoom(d);
  });
  return pick;
}

function zoom(diagram) {
  const svg = diagram.querySelector("svg");
  if (!svg) return;
  const factor = sessionStorage.getItem("keyflow.zoom") || "0.6";
  const natural = Number(svg.getAttribute("width")) || 1000;
  svg.style.width = factor === "fit" ? "100%" : `${Math.round(natural * Number(factor))}px`;
}

// One instance: state, variables, pending timers, the audit trail as a timeline.
async function instance(id) {
  const msg = $("#instance-message");
  msg.textContent = ""; msg.className = "message";
  $("#instance-view").hidden = true;
  try {
    const { instance: i, timers } = await api(`/api/instances/${encodeURIComponent(id)}`);
    $("#instance-title").textContent = i.id;
    $("#instance-state").textContent = i.state;
    $("#instance-workflow").textContent = `${i.workflow} · version ${i.version ?? 1}`;
    $("#instance-step").textContent = i.step;
    $("#timeline").replaceChildren(...i.history.map((h) =>
      el("li", { "data-step": h.step }, el("span", { class: "when" }, `${time(h.at)} · step ${h.step}`), `${h.from} → ${h.to} on ${h.event}`)));
    $("#variables tbody").replaceChildren(...Object.entries(i.variables).map(([k, v]) =>
      el("tr", {}, el("th", {}, k), el("td", {}, typeof v === "string" ? v : JSON.stringify(v)))));
    $("#timers").replaceChildren(...(timers.length ? timers.map((t) => el("li", {}, `${t.name} due ${time(t.due)}`)) : [el("li", { class: "muted" }, "none")]));
    $("#instance-view").hidden = false;
  } catch (e) {
    msg.textContent = e.message; msg.className = "message error";
  }
}

$("#instance-form").addEventListener("submit", (e) => {
  e.preventDefault();
  location.hash = `#/instance/${encodeURIComponent($("#instance-id").value.trim())}`;
});

// Dead letters: list with the CLI's filters, one decoded, redrive and purge after a confirmation.
async function deadLetters() {
  const msg = $("#dlq-message");
  if (!overview) overview = await api("/api/overview");
  $("#changes-off").hidden = overview.changes;
  for (const b of [$("#redrive"), $("#purge")]) b.disabled = !overview.changes;
  const q = new URLSearchParams(new FormData($("#dlq-filter")));
  try {
    const r = await api(`/api/dlq?${q}`);
    $("#dead-letters tbody").replaceChildren(...r.deadLetters.map((d) =>
      el("tr", { "data-id": d.id },
        el("td", {}, el("input", { type: "checkbox", value: d.id, className: "pick" })),
        el("td", {}, el("a", { href: "#", onclick: (e) => { e.preventDefault(); detail(d.id); } }, d.id)),
        el("td", {}, time(d.at)), el("td", {}, d.class), el("td", {}, `${d.source.topic || "–"}/${d.source.partition ?? ""}@${d.source.offset ?? ""}`),
        el("td", {}, d.key), el("td", {}, d.message), el("td", { class: "handled" }, d.handled ? d.handled.action : ""))));
    if (!r.deadLetters.length) msg.textContent = `no dead letters on ${r.topic} match`;
  } catch (e) {
    msg.textContent = e.message; msg.className = "message error";
  }
}

async function detail(id) {
  const pre = $("#dlq-detail");
  pre.hidden = false;
  try { pre.textContent = JSON.stringify(await api(`/api/dlq/${encodeURIComponent(id)}`), null, 2); } catch (e) { pre.textContent = e.message; }
}

$("#dlq-filter").addEventListener("submit", (e) => { e.preventDefault(); $("#dlq-message").textContent = ""; deadLetters(); });
// Kept for this tab only; a new token reloads the view with it.
$("#token").value = sessionStorage.getItem("keyflow.token") || "";
$("#token").addEventListener("change", () => {
  sessionStorage.setItem("keyflow.token", $("#token").value);
  if (!$("#banner").hidden) route(); // a read was refused: try again with the new token
});

let pending = null;
function ask(action) {
  const ids = [...document.querySelectorAll("input.pick:checked")].map((c) => c.value);
  const msg = $("#dlq-message");
  msg.className = "message";
  if (!ids.length) { msg.textContent = "select dead letters first"; return; }
  pending = { action, ids };
  $("#confirm-text").textContent = `${action === "redrive" ? "Redrive" : "Purge"} ${ids.length} dead letter(s): ${ids.join(", ")}?`;
  $("#confirm").hidden = false;
}
$("#redrive").addEventListener("click", () => ask("redrive"));
$("#purge").addEventListener("click", () => ask("purge"));
$("#confirm-no").addEventListener("click", () => { pending = null; $("#confirm").hidden = true; });
$("#confirm-yes").addEventListener("click", async () => {
  $("#confirm").hidden = true;
  const msg = $("#dlq-message");
  const { action, ids } = pending;
  pending = null;
  try {
    const r = await api(`/api/dlq/${action}`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ ids }),
    });
    msg.className = "message";
    msg.textContent = `${action === "redrive" ? "redrove" : "purged"} ${r.done.length}` + (r.skipped.length ? `; ${r.skipped.length} already handled` : "");
    await deadLetters();
  } catch (e) {
    msg.textContent = `refused: ${e.message}`; msg.className = "message error";
  }
});

// Health: every instance of the group, from the same figures as /metrics.
async function health() {
  const h = await api("/api/health");
  $("#application").textContent = h.application;
  $("#health tbody").replaceChildren(...h.instances.map((i) => i.reachable === false
    ? el("tr", {}, el("td", {}, i.name), el("td", { colSpan: 10, class: "muted" }, "unreachable"))
    : el("tr", { "data-instance": i.name }, el("td", {}, i.name), el("td", {}, i.running ? "yes" : "no"), el("td", {}, i.restoring ? "yes" : "no"),
      el("td", {}, i.partitions.join(", ")), el("td", { class: "num" }, i.lagTotal), el("td", { class: "num" }, i.processed),
      el("td", { class: "num" }, i.commits), el("td", { class: "num" }, `${i.meanCommitMs.toFixed(1)} ms`), el("td", { class: "num" }, i.aborts),
      el("td", { class: "num" }, i.deadLettered), el("td", { class: "num" }, i.restoredRecords))));
  $("#lag tbody").replaceChildren(...h.instances.flatMap((i) => (i.lag || []).map((l) =>
    el("tr", {}, el("td", {}, i.name), el("td", {}, l.topic), el("td", { class: "num" }, l.partition), el("td", { class: "num" }, l.lag)))));
}

window.addEventListener("hashchange", route);
route();
