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

document.addEventListener("DOMContentLoaded", () => {
  if (document.body.dataset.page === "dashboard") setInterval(refreshDashboard, 2000);
});
