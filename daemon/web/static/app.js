// dupwatch serve: review groups, decide, search by image. Plain DOM, no framework, no network beyond this server.
"use strict";
const CSRF = document.querySelector('meta[name="csrf-token"]').content;
const PAGE_SIZE = Number(document.querySelector('meta[name="page-size"]').content) || 50;
const VIEW = document.body.dataset.view;
const state = { tier: "copy", page: 1, pages: 1, gen: null, groups: [], focus: 0, lastAction: null, groupCount: null };

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v !== null && v !== undefined && v !== false) node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}
const thumbUrl = (p) => "/api/thumb?path=" + encodeURIComponent(p);
const previewUrl = (p) => "/api/preview?path=" + encodeURIComponent(p);
const mb = (n) => (n >= 1e9 ? (n / 1e9).toFixed(2) + " GB" : n >= 1e6 ? (n / 1e6).toFixed(1) + " MB" : Math.round(n / 1e3) + " KB");
const base = (p) => p.split("/").pop();
// paths shown relative to the watched folder that holds them (the full path is the tooltip)
const shown = (p) => {
  const root = (state.roots || []).filter((r) => p.startsWith(r.replace(/\/$/, "") + "/")).sort((a, b) => b.length - a.length)[0];
  return root ? p.slice(root.replace(/\/$/, "").length + 1) : p;
};

function toast(text, bad = false) {
  const t = document.getElementById("toast");
  t.textContent = text;
  t.className = bad ? "bad" : "";
  t.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => (t.hidden = true), 6000);
}

async function post(url, body = {}) {
  const r = await fetch(url, {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": CSRF },
    body: JSON.stringify(body),
  });
  let data = {};
  try { data = await r.json(); } catch (e) { data = { error: r.statusText }; }
  return { ok: r.ok, status: r.status, data };
}

// -- review ----------------------------------------------------------------------------------------------------------

async function loadGroups() {
  const r = await fetch(`/api/groups?tier=${state.tier}&page=${state.page}&size=${PAGE_SIZE}`);
  const data = await r.json();
  state.page = data.page; state.pages = data.pages; state.gen = data.gen; state.groups = data.groups; state.roots = data.roots;
  state.focus = Math.min(state.focus, Math.max(0, data.groups.length - 1));
  const s = data.summary;
  document.getElementById("summary").textContent =
    `${s.groups} ${data.noun}, ${s.files} files, ${mb(s.reclaimable_bytes)} reclaimable`;
  document.getElementById("pageinfo").textContent = `page ${data.page} of ${data.pages}`;
  renderGroups();
  loadLog();
}

function renderGroups() {
  const box = document.getElementById("groups");
  box.replaceChildren();
  if (!state.groups.length) {
    box.append(el("p", { class: "empty", id: "no-groups" }, "No groups here: nothing to review."));
    return;
  }
  state.groups.forEach((g, i) => box.append(groupCard(g, i)));
  focusGroup(state.focus, false);
}

function groupCard(g, i) {
  const similar = g.tier === "similar";
  const title = `${similar ? "Similar shots" : "Copies"}, group ${g.id}`;
  const card = el("article", { class: "group", id: `group-${g.id}`, "data-group": g.id, onclick: () => focusGroup(i, false) });
  card.append(
    el("h3", {}, title, " ",
      el("span", { class: "why" }, `${g.members.length} files, ${mb(g.reclaimable)} reclaimable; keeper: ${g.keeper_reason}`)),
  );
  const members = el("div", { class: "members" });
  g.members.forEach((m, n) => {
    const cls = "member" + (m.keeper ? " keeper" : "") + (m.protected ? " protected" : "");
    const img = el("img", { src: thumbUrl(m.path), alt: base(m.path), loading: "lazy", onclick: () => showLarge([m.path]) });
    const buttons = [];
    if (!m.keeper) buttons.push(el("button", { class: "keep", onclick: () => setKeeper(g, m.path) }, `Keep this (${n + 1})`));
    if (!similar) buttons.push(el("button", { class: "not-dup", onclick: () => ignoreMember(g, m.path) }, "Not a duplicate"));
    const other = g.members.find((x) => x.path !== m.path);
    if (other) buttons.push(el("button", { onclick: () => showLarge([g.keeper === m.path ? other.path : g.keeper, m.path]) }, "Compare"));
    members.append(el("div", { class: cls, "data-path": m.path },
      img,
      el("div", { class: "badge" }, m.keeper ? "KEEP" : m.protected ? "reference (kept)" : ""),
      el("div", { class: "name", title: m.path }, shown(m.path)),
      el("div", { class: "facts" }, `${m.width}×${m.height} ${m.format || ""}, ${mb(m.size)}` +
        (m.sharpness != null ? `, sharpness ${m.sharpness}` : "") + (m.taken_at ? `, ${m.taken_at}` : "")),
      ...buttons));
  });
  card.append(members);
  const table = el("table", { class: "pairs" }, el("tr", {}, ...["files", "tier", "cosine", "inliers", "view", "overlap", "changed"].map((h) => el("th", {}, h))));
  for (const p of g.pairs) {
    table.append(el("tr", {}, el("td", {}, `${base(p.a)} ↔ ${base(p.b)}`), el("td", {}, el("span", { class: "tier " + p.tier }, p.tier)),
      el("td", {}, p.cosine), el("td", {}, p.inliers ?? ""), el("td", {}, p.view),
      el("td", {}, p.overlap != null ? p.overlap.toFixed(2) : ""), el("td", {}, p.changed != null ? p.changed.toFixed(3) : "")));
  }
  card.append(table);
  const acts = el("div", { class: "actions" },
    el("button", { class: "danger resolve", onclick: () => resolveGroup(g) },
      similar ? "Keep the best shot, move the other takes (r)" : "Resolve: move the others away (r)"));
  if (!similar) acts.append(el("button", { class: "ignore-group", onclick: () => ignoreGroup(g) }, "Not duplicates (n)"));
  card.append(acts);
  return card;
}

function focusGroup(i, scroll = true) {
  const cards = document.querySelectorAll(".group");
  if (!cards.length) return;
  state.focus = Math.max(0, Math.min(i, cards.length - 1));
  cards.forEach((c, n) => c.classList.toggle("focus", n === state.focus));
  if (scroll) cards[state.focus].scrollIntoView({ block: "nearest", behavior: "smooth" });
}

async function setKeeper(g, path) {
  const r = await post(`/api/groups/${g.id}/keeper`, { path, tier: g.tier });
  if (!r.ok) return toast(r.data.error, true);
  toast(`keeping ${base(path)} in group ${g.id}`);
  loadGroups();
}

async function ignoreMember(g, path) {
  const r = await post(`/api/groups/${g.id}/ignore`, { path, tier: g.tier });
  if (!r.ok) return toast(r.data.error, true);
  toast(`${base(path)} is no duplicate of the others of group ${g.id}`);
  loadGroups();
}

async function ignoreGroup(g) {
  const r = await post(`/api/groups/${g.id}/ignore`, { tier: g.tier });
  if (!r.ok) return toast(r.data.error, true);
  toast(`group ${g.id}: not duplicates (remembered)`);
  loadGroups();
}

async function resolveGroup(g) {
  const r = await post(`/api/groups/${g.id}/resolve`, { tier: g.tier, mode: document.getElementById("mode").value });
  if (!r.ok) {
    const why = (r.data.refused || []).map((x) => `${base(x.path)}: ${x.reason}`).join("; ");
    return toast(`${r.data.error}${why ? " — " + why : ""}`, true);
  }
  state.lastAction = r.data.action;
  const extra = r.data.refused.length + r.data.failed.length;
  toast(`action #${r.data.action}: ${r.data.moved} files moved to ${r.data.to}` + (extra ? `, ${extra} refused or failed` : "") + " — u to undo");
  loadGroups();
}

async function undoAction(id) {
  const r = await post(`/api/actions/${id}/undo`);
  if (!r.ok || !r.data.undone) {
    return toast(`action #${id} is NOT undone: ${(r.data.refused || [r.data.error]).join("; ")}`, true);
  }
  toast(`action #${id} undone: ${r.data.restored} files put back`);
  loadGroups();
}

async function unignore(id) {
  const r = await post(`/api/ignored/${id}/unignore`);
  if (!r.ok) return toast(r.data.error, true);
  toast(`decision #${id} taken back`);
  loadGroups();
}

async function loadLog() {
  const data = await (await fetch("/api/log")).json();
  const box = document.getElementById("log");
  box.replaceChildren();
  for (const a of data.actions) {
    const what = `#${a.id} ${a.mode}: ${a.done}/${a.files} files, ${mb(a.bytes)} → ${a.target || "trash"}`;
    box.append(el("div", { class: "entry action", "data-action": a.id }, what, " ",
      a.undone ? el("em", {}, "undone") : el("button", { class: "undo", onclick: () => undoAction(a.id) }, "Undo")));
  }
  for (const d of data.ignored) {
    const a = d.paths_a.map(base).join(", ") || "(gone)";
    const b = d.paths_b.map(base).join(", ") || "(gone)";
    box.append(el("div", { class: "entry ignored" }, `not duplicates: ${a} ≠ ${b} `,
      el("button", { class: "unignore", onclick: () => unignore(d.id) }, "Take back")));
  }
  if (!box.children.length) box.append(el("p", { class: "empty" }, "Nothing done yet."));
  const active = data.actions.find((a) => !a.undone);
  state.lastAction = active ? active.id : null;
}

// -- large view ------------------------------------------------------------------------------------------------------

function showLarge(paths) {
  const box = document.getElementById("lightbox");
  const inner = document.getElementById("lightbox-inner");
  inner.className = paths.length > 1 ? "two" : "";
  inner.replaceChildren(...paths.map((p) => el("figure", {}, el("img", { src: previewUrl(p), alt: base(p) }), el("figcaption", {}, p))));
  box.hidden = false;
}
function closeOverlays() {
  document.getElementById("lightbox").hidden = true;
  document.getElementById("help").hidden = true;
}

// -- search ----------------------------------------------------------------------------------------------------------

async function runSearch(ev) {
  ev.preventDefault();
  const form = new FormData();
  const file = document.getElementById("image").files[0];
  const path = document.getElementById("path").value.trim();
  if (file) form.append("image", file);
  else if (path) form.append("path", path);
  else return toast("choose an image or give a path", true);
  form.append("k", document.getElementById("k").value);
  const results = document.getElementById("results");
  results.replaceChildren(el("p", { class: "empty" }, "searching…"));
  const q = document.getElementById("query");
  q.replaceChildren(file ? el("img", { src: URL.createObjectURL(file), alt: "query" }) : el("p", {}, path));
  const r = await fetch("/api/search", { method: "POST", body: form });
  const data = await r.json();
  if (!r.ok) { results.replaceChildren(); return toast(data.error, true); }
  results.replaceChildren();
  if (!data.results.length) results.append(el("p", { class: "empty" }, "No photos in the database yet."));
  for (const h of data.results) {
    results.append(el("div", { class: "hit", "data-path": h.path },
      el("img", { src: thumbUrl(h.path), alt: base(h.path), loading: "lazy", onclick: () => showLarge([h.path]) }),
      el("div", {}, el("span", { class: "tier " + (h.tier || "lookalike") }, h.tier || "look-alike"), ` cosine ${h.cosine.toFixed(3)}`),
      el("div", { class: "facts" }, (h.inliers != null ? `${h.inliers} inliers, ` : "") + (h.view !== "identity" ? h.view + ", " : "") + (h.group ? `group ${h.group}` : "")),
      el("div", { class: "name" }, h.path)));
  }
}

// -- live ------------------------------------------------------------------------------------------------------------

function connectLive() {
  const source = new EventSource("/api/events");
  source.addEventListener("status", (ev) => {
    const s = JSON.parse(ev.data);
    const d = s.daemon;
    const daemon = d ? `daemon ${d.state}: queue ${d.queue}, processed ${d.processed}, ${d.duplicates} duplicates found` : "daemon not running";
    document.getElementById("status").textContent =
      `${s.files} photos · ${s.groups} duplicate groups · ${s.similar_groups} similar-shot groups · ${s.errors} errors · ${daemon}`;
    if (VIEW === "review" && state.gen !== null && s.gen !== state.gen) {
      if (state.groupCount !== null && s.groups > state.groupCount) toast(`${s.groups - state.groupCount} new duplicate group(s)`);
      loadGroups();
    }
    state.groupCount = s.groups;
  });
  source.onerror = () => { document.getElementById("status").textContent = "reconnecting…"; };
}

// -- keys ------------------------------------------------------------------------------------------------------------

function onKey(ev) {
  if (ev.target.matches("input, select, textarea") || ev.ctrlKey || ev.metaKey || ev.altKey) return;
  if (ev.key === "Escape") return closeOverlays();
  if (ev.key === "?") { document.getElementById("help").hidden = false; return; }
  if (VIEW !== "review") return;
  const g = state.groups[state.focus];
  if (ev.key === "j") focusGroup(state.focus + 1);
  else if (ev.key === "k") focusGroup(state.focus - 1);
  else if (ev.key === "ArrowRight" && state.page < state.pages) { state.page++; loadGroups(); }
  else if (ev.key === "ArrowLeft" && state.page > 1) { state.page--; loadGroups(); }
  else if (ev.key === "u" && state.lastAction) undoAction(state.lastAction);
  else if (!g) return;
  else if (ev.key === "r") resolveGroup(g);
  else if (ev.key === "n" && g.tier !== "similar") ignoreGroup(g);
  else if (ev.key === "c" && g.members.length > 1) showLarge([g.keeper, g.members.find((m) => m.path !== g.keeper).path]);
  else if (/^[1-9]$/.test(ev.key) && g.members[Number(ev.key) - 1]) setKeeper(g, g.members[Number(ev.key) - 1].path);
}

document.addEventListener("keydown", onKey);
document.getElementById("lightbox").addEventListener("click", closeOverlays);
document.getElementById("help").addEventListener("click", closeOverlays);
if (VIEW === "review") {
  document.getElementById("tier").addEventListener("change", (ev) => { state.tier = ev.target.value; state.page = 1; loadGroups(); });
  document.getElementById("prev").addEventListener("click", () => { if (state.page > 1) { state.page--; loadGroups(); } });
  document.getElementById("next").addEventListener("click", () => { if (state.page < state.pages) { state.page++; loadGroups(); } });
  document.getElementById("help-button").addEventListener("click", () => (document.getElementById("help").hidden = false));
  loadGroups();
} else {
  document.getElementById("search-form").addEventListener("submit", runSearch);
  const drop = document.getElementById("drop");
  drop.addEventListener("dragover", (ev) => { ev.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (ev) => {
    ev.preventDefault(); drop.classList.remove("over");
    document.getElementById("image").files = ev.dataTransfer.files;
  });
}
connectLive();
