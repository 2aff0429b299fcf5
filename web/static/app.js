// Slipway's small, hand-written script: live updates of server-rendered pages.
// Data from the API is only ever inserted as text (textContent), never as HTML.
"use strict";

const ICONS = { success: "✔", failure: "✘", error: "⚠", running: "▶", leased: "▶", pending: "…",
                queued: "…", blocked: "⏸", cancelled: "⊘", skipped: "↷" };

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  for (const c of children) e.append(c);
  return e;
}

function statusBadge(status) {
  const icon = el("span", { "aria-hidden": "true" }, ICONS[status] || "•");
  return el("span", { class: "status status-" + status }, icon, " " + status);
}

function duration(p) {
  if (!p.started_at) return "";
  const end = p.finished_at || Date.now();
  const s = Math.max(0, Math.round((end - p.started_at) / 1000));
  return s < 60 ? s + "s" : Math.floor(s / 60) + "m " + (s % 60) + "s";
}

function shortRef(r) {
  return (r || "").replace(/^refs\/(heads|tags)\//, "");
}

function dashboardRow(p) {
  const link = el("a", { href: "/pipelines/" + p.id }, p.repo + " #" + p.number);
  const commit = el("td", {}, el("code", {}, (p.commit || "").slice(0, 12)), " " + (p.message || "").split("\n")[0]);
  return el("tr", { "data-id": String(p.id) },
    el("td", {}, statusBadge(p.status)), el("td", {}, link), el("td", {}, shortRef(p.ref)),
    commit, el("td", {}, p.author || ""), el("td", {}, duration(p)), el("td", {}, p.triggered_by || ""));
}

async function refreshDashboard() {
  const body = document.getElementById("pipelines");
  try {
    const r = await fetch("/api/v1/pipelines?limit=25", { credentials: "same-origin" });
    if (!r.ok) throw new Error(r.status);
    const list = await r.json();
    if (list.length) body.replaceChildren(...list.map(dashboardRow));
    document.getElementById("live-note").textContent = "Updates live.";
  } catch (e) {
    document.getElementById("live-note").textContent = "Live updates paused (" + e.message + "); retrying.";
  }
}

function setStatus(badge, status) {
  if (!badge || badge.dataset.status === status) return;
  badge.dataset.status = status;
  badge.className = "status status-" + status;
  badge.replaceChildren(el("span", { "aria-hidden": "true" }, ICONS[status] || "•"), " ",
    el("span", { class: "text" }, status));
}

// Images the run pushed, as they are reported (text only).
function renderImages(root, images) {
  const list = root.querySelector('[data-role="images"]');
  if (!list || list.children.length === images.length) return;
  const host = list.dataset.host;
  list.replaceChildren(...images.map((i) => {
    const pull = host + "/" + i.pull;
    const input = el("input", { class: "copy", readonly: "", value: pull });
    return el("li", {}, el("strong", {}, i.repository), " " + i.tags.join(", ") + " ",
      el("span", { class: "muted" }, "(job " + i.job + ", step " + i.step + ")"), el("br"),
      el("code", { class: "digest" }, i.digest), el("br"),
      el("label", {}, "Pull by digest ", input));
  }));
  const none = root.querySelector('[data-role="no-images"]');
  if (none && images.length) none.hidden = true;
}

// The pipeline page: statuses and durations from the API, no reload.
async function refreshPipeline(root, timer) {
  try {
    const r = await fetch("/api/v1/pipelines/" + root.dataset.id, { credentials: "same-origin" });
    if (!r.ok) throw new Error(r.status);
    const p = await r.json();
    setStatus(root.querySelector('[data-role="pipeline-status"]'), p.status);
    root.querySelector('[data-role="pipeline-duration"]').textContent = duration(p);
    for (const job of p.jobs) {
      const card = root.querySelector('[data-job="' + job.id + '"]');
      if (!card) continue;
      setStatus(card.querySelector('[data-role="job-status"]'), job.status);
      card.querySelector('[data-role="job-duration"]').textContent = duration(job);
      for (const step of job.steps) {
        const li = card.querySelector('[data-step="' + step.position + '"]');
        if (!li) continue;
        setStatus(li.querySelector('[data-role="step-status"]'), step.status);
        li.querySelector('[data-role="step-duration"]').textContent = duration(step);
      }
    }
    const active = p.status === "pending" || p.status === "running";
    const cancel = root.querySelector('[data-role="cancel"]');
    if (cancel) cancel.hidden = !active;
    renderImages(root, p.images || []);
    if (!active) clearInterval(timer.id);
  } catch (e) {
    /* keep the last known state; the next poll retries */
  }
}

// Deploy pages: the server renders the live part (`?live=1`); it is parsed
// and swapped in, unless someone is typing a comment in it.
const ENDED = /^(succeeded|failed|superseded|rejected|expired)$/;
async function refreshLive(root, timer) {
  const typing = [...root.querySelectorAll("input:not([type=hidden])")].some((i) => i.value || i === document.activeElement);
  if (typing) return;
  const note = document.getElementById("live-note");
  try {
    const r = await fetch(root.dataset.src, { credentials: "same-origin" });
    // Signed out: the answer is the sign-in page, not the live part.
    if (r.redirected) throw new Error("signed out; reload to sign in");
    if (!r.ok) throw new Error(r.status);
    const doc = new DOMParser().parseFromString(await r.text(), "text/html");
    root.replaceChildren(...doc.body.childNodes);
    if (note) note.textContent = "Updates live.";
    const state = root.querySelector('[data-role="state"]');
    if (state && ENDED.test(state.dataset.state)) {
      clearInterval(timer.id);
      if (note) note.textContent = "";
    }
  } catch (e) {
    if (note) note.textContent = "Live updates paused (" + e.message + "); retrying.";
  }
}

document.addEventListener("DOMContentLoaded", () => {
  const page = document.body.dataset.page;
  const live = document.getElementById("live");
  if (live && live.dataset.follow === "true") {
    const timer = {};
    timer.id = setInterval(() => refreshLive(live, timer), 1000);
  }
  if (page === "dashboard") setInterval(refreshDashboard, 2000);
  if (page === "pipeline") {
    const root = document.getElementById("pipeline");
    const timer = {};
    if (root.dataset.active === "true") timer.id = setInterval(() => refreshPipeline(root, timer), 1000);
  }
  for (const b of document.querySelectorAll("button[data-copy]")) {
    b.addEventListener("click", async () => {
      try { await navigator.clipboard.writeText(b.dataset.copy); b.textContent = "Copied"; }
      catch (e) { b.previousElementSibling?.querySelector("input")?.select(); }
    });
  }
});
