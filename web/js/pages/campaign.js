// pages/campaign.js — one campaign: its state and lifecycle buttons, and
// tabs for metrics (by variant, channel and day, with 95 % intervals), the
// script (editor, validate, simulate: editor.js), versions (diffs,
// rollback) and the audit trail.
//
// The lifecycle buttons send what the user asks and show what the server
// answers: the server owns the rules (allowed transitions, approval by
// another actor, If-Match), so a refused action shows the server's 409 or
// 403 with its reason rather than a rule copied into the console.  Actions
// the current status allows are highlighted (the campaign's
// allowed_actions).

import { api, get, post, describe, seg, ApiError } from "../api.js";
import { h, put, badge, table, notice, tile, fmtInt, fmtMoney, fmtCI, fmtPct, fmtTime, fmtJSON } from "../dom.js";
import { timeChart, intervalChart, dayTs } from "../charts.js";
import { scriptTab } from "../editor.js";

const ACTIONS = ["submit", "approve", "reject", "launch", "pause", "stop"];
const TABS = [["metrics", "Metrics"], ["script", "Script"], ["versions", "Versions"], ["audit", "Audit"]];

function rev(etag) {
  return etag ? Number(String(etag).replace(/[^0-9]/g, "")) : null;
}

export async function render(view, _ctx, id, tab) {
  tab = tab || "metrics";
  const base = "#/campaigns/" + seg(id);
  let camp = null;
  let cleanupTab = null;
  const head = h("div", { id: "campaign-head" });
  const actions = h("div", { class: "actions", id: "lifecycle" });
  const result = h("div", { id: "action-result" });
  const body = h("div", { id: "tab-body" });
  const tabs = h("nav", { class: "tabs", "aria-label": "Campaign sections" },
    TABS.map(([k, label]) => h("a", { href: `${base}/${k}`, class: k === tab ? "active" : null,
      dataset: { tab: k } }, label)));

  async function load() {
    const r = await api("GET", "/api/v1/campaigns/" + seg(id));
    camp = r.data;
    camp._rev = rev(r.etag) ?? camp.rev;
    drawHead();
  }

  function drawHead() {
    const c = camp;
    put(head,
      h("div", { class: "page-head" },
        h("h1", null, h("span", { class: "camp-name", id: "camp-name" }, c.name || c.id), " ", badge(c.status)),
        h("div", { class: "muted" }, h("code", null, c.id), ` · ${c.origin} · ${c.file || ""}`)),
      h("dl", { class: "facts" },
        h("dt", null, "status"), h("dd", { id: "camp-status", dataset: { status: c.status } }, c.status),
        h("dt", null, "channels"), h("dd", null, (c.channels || []).join(", ")),
        h("dt", null, "versions"), h("dd", null,
          `newest v${c.version}, live v${c.live_version ?? "—"}` +
          (c.pending_version ? `, v${c.pending_version} waiting for approval` : "")),
        h("dt", null, "candidate"), h("dd", null, c.candidate ? "yes (active and in schedule)" :
          `no (${c.status}${c.in_schedule ? "" : ", outside schedule"})`),
        h("dt", null, "owner"), h("dd", null, c.owner || "—"),
        h("dt", null, "updated"), h("dd", null, `${fmtTime(c.updated_at)} by ${c.updated_by || "?"}`),
        c.load && c.load.error ? [h("dt", null, "load error"), h("dd", { class: "error-text" }, c.load.error)] : null,
        c.description ? [h("dt", null, "description"), h("dd", null, c.description)] : null));
    const allowed = new Set(c.allowed_actions || []);
    const reason = h("input", { type: "text", class: "reason", placeholder: "reason (for reject)",
      "aria-label": "Reason for reject", maxlength: 1000 });
    put(actions,
      ACTIONS.map((a) => h("button", {
        type: "button", class: allowed.has(a) ? "primary" : "secondary", dataset: { action: a },
        title: allowed.has(a) ? `${a} (allowed from ${c.status})` : `${a} is not allowed from ${c.status}; the server will say why`,
        on: { click: () => act(a, a === "reject" && reason.value.trim() ? { reason: reason.value.trim() } : undefined) },
      }, a)),
      reason,
      h("span", { class: "muted" }, "allowed now: " + ([...allowed].join(", ") || "none")));
  }

  async function act(action, payload) {
    const before = camp.status;
    put(result, h("span", { class: "muted" }, `${action}…`));
    try {
      const r = await post(`/api/v1/campaigns/${seg(id)}/${action}`, payload, { ifMatch: camp._rev });
      camp = r.data;
      camp._rev = rev(r.etag) ?? camp.rev;
      drawHead();
      put(result, notice("ok", `${action}: ${before} → ${camp.status}`,
        r.data.send ? ` (send ${r.data.send.action}: ${r.data.send.ok ? "ok" : "failed"})` : ""));
    } catch (e) {
      const d = e instanceof ApiError ? e.detail : {};
      put(result, notice("error", h("strong", null, describe(e)),
        d.allowed ? h("div", null, `current: ${d.current}; allowed: ${d.allowed.join(", ") || "none"}`) : null,
        d.current_rev ? h("div", null, `the campaign is at rev ${d.current_rev}; reloaded`) : null));
      if (e.status === 409 || e.status === 412) await load().catch(() => {});
    }
  }

  try {
    await load();
  } catch (e) {
    put(view, notice("error", `Campaign ${id}: ${describe(e)}`), h("a", { href: "#/campaigns" }, "All campaigns"));
    return undefined;
  }
  put(view, h("p", { class: "crumbs" }, h("a", { href: "#/campaigns" }, "Campaigns"), " / ", id),
    head, actions, result, tabs, body);

  if (tab === "metrics") cleanupTab = await metricsTab(body, id);
  else if (tab === "script") cleanupTab = scriptTab(body, camp, { onSaved: () => load() });
  else if (tab === "versions") await versionsTab(body, id, () => camp._rev, async () => {
    await load();
  });
  else if (tab === "audit") await auditTab(body, id);
  return () => {
    if (typeof cleanupTab === "function") cleanupTab();
  };
}

// ---- metrics ------------------------------------------------------------

async function metricsTab(body, id) {
  const charts = [];
  const range = h("select", { "aria-label": "Range" },
    [7, 30, 90].map((n) => h("option", { value: String(n), selected: n === 30 }, `last ${n} days`)));
  const out = h("div", { id: "campaign-metrics" });
  put(body, h("div", { class: "toolbar" }, range), out);

  async function draw() {
    for (const c of charts.splice(0)) c.destroy();
    const days = Number(range.value);
    const to = new Date().toISOString().slice(0, 10);
    const from = new Date(Date.now() - (days - 1) * 86400000).toISOString().slice(0, 10);
    let m;
    try {
      m = await get(`/api/v1/analytics/campaigns/${seg(id)}?from=${from}&to=${to}`);
    } catch (e) {
      put(out, notice("error", "No metrics: " + describe(e)));
      return;
    }
    const t = m.totals;
    const dailyHost = h("div", { class: "chart-host" });
    const ctrHost = h("div", { class: "chart-host" });
    const variantRows = m.by_variant.map((v) => [v.variant, fmtInt(v.exposures), fmtInt(v.clicks),
      fmtCI(v.ctr), fmtInt(v.conversions), fmtCI(v.conversion_rate), fmtMoney(v.revenue)]);
    put(out,
      h("div", { class: "tiles" },
        tile("exposures", "Exposures", fmtInt(t.exposures), t.exposures, `${fmtInt(t.impressions)} impressions · ${fmtInt(t.sends)} sends`),
        tile("clicks", "Clicks", fmtInt(t.clicks), t.clicks, "CTR " + fmtCI(t.ctr)),
        tile("conversions", "Conversions", fmtInt(t.conversions), t.conversions, "rate " + fmtCI(t.conversion_rate)),
        tile("revenue", "Revenue", fmtMoney(t.revenue), t.revenue, `${m.from} … ${m.to}`)),
      h("section", { class: "card" }, h("h2", null, "By variant"),
        table(["variant", "exposures", "clicks", "CTR (95% CI)", "conversions", "conv. rate (95% CI)", "revenue"],
          variantRows, { id: "by-variant" }),
        h("div", { class: "two" },
          intervalChart(m.by_variant.map((v) => ({ label: v.variant, ...v.ctr })), fmtPct, { title: "CTR by variant, 95% interval" }),
          intervalChart(m.by_variant.map((v) => ({ label: v.variant, ...v.conversion_rate })), fmtPct,
            { title: "Conversion rate by variant, 95% interval" }))),
      h("section", { class: "card" }, h("h2", null, "By channel"),
        table(["channel", "exposures", "clicks", "CTR (95% CI)", "conversions", "revenue"],
          m.by_channel.map((c) => [c.channel, fmtInt(c.exposures), fmtInt(c.clicks), fmtCI(c.ctr),
            fmtInt(c.conversions), fmtMoney(c.revenue)]), { id: "by-channel" })),
      h("section", { class: "card" }, h("h2", null, "By day (UTC)"), dailyHost,
        h("h3", null, "CTR by day with its 95% interval"), ctrHost));
    const xs = m.by_day.map((d) => dayTs(d.day));
    charts.push(timeChart(dailyHost, {
      series: [{ label: "exposures", points: true }, { label: "clicks", points: true },
        { label: "conversions", points: true }, { label: "revenue", scale: "y2", dash: [4, 4] }],
      data: [xs, m.by_day.map((d) => d.exposures), m.by_day.map((d) => d.clicks),
        m.by_day.map((d) => d.conversions), m.by_day.map((d) => d.revenue)],
      yLabel: "events", y2Label: "revenue",
    }));
    const pct = (v) => (v === null || v === undefined ? null : v * 100);
    charts.push(timeChart(ctrHost, {
      series: [{ label: "CTR low %", color: "#9ecae1", width: 1 }, { label: "CTR %", color: "#1f77b4", points: true },
        { label: "CTR high %", color: "#9ecae1", width: 1 }],
      data: [xs, m.by_day.map((d) => pct(d.ctr.low)), m.by_day.map((d) => pct(d.ctr.value)),
        m.by_day.map((d) => pct(d.ctr.high))],
      bands: [{ series: [3, 1], fill: "rgba(31,119,180,0.15)" }],
      yLabel: "CTR %",
    }));
  }
  range.addEventListener("change", draw);
  await draw();
  return () => {
    for (const c of charts) c.destroy();
  };
}

// ---- versions -----------------------------------------------------------

function diffView(text) {
  const lines = text.replace(/\n$/, "").split("\n");
  return h("pre", { class: "diff", id: "version-diff" }, lines.map((l) =>
    h("span", { class: l.startsWith("+") ? "add" : l.startsWith("-") ? "del" : "ctx" }, l + "\n")));
}

async function versionsTab(body, id, getRev, reload) {
  const list = h("div", { id: "versions" });
  const detail = h("div", { id: "version-detail" });
  const msg = h("div");
  put(body, msg, list, detail);

  async function show(v, newest) {
    const diffFrom = v.version > 1 ? v.version - 1 : 0;
    try {
      const d = await get(`/api/v1/campaigns/${seg(id)}/versions/${v.version}` + (diffFrom ? `?diff=${diffFrom}` : ""));
      put(detail, h("h3", null, `Version ${v.version}` + (diffFrom ? ` — changes from version ${diffFrom}` : " — first version")),
        v.version !== newest ? h("button", { type: "button", class: "primary", dataset: { rollback: v.version },
          on: { click: () => rollback(v.version) } }, `Roll back to version ${v.version}`) : null,
        diffFrom ? diffView(d.diff) : h("pre", { class: "diff" }, d.source));
    } catch (e) {
      put(detail, notice("error", describe(e)));
    }
  }

  async function rollback(n, confirmed) {
    if (!confirmed) { // a second, explicit click instead of a modal dialog
      put(msg, notice("warn", `Save version ${n}'s script again as a new version? `,
        h("button", { type: "button", class: "primary", dataset: { confirmRollback: n },
          on: { click: () => rollback(n, true) } }, `Yes, roll back to version ${n}`)));
      return;
    }
    try {
      const r = await post(`/api/v1/campaigns/${seg(id)}/rollback`, { version: n }, { ifMatch: getRev() });
      put(msg, notice("ok", `Rolled back: version ${r.data.version} now holds version ${n}'s script` +
        (r.data.pending_version ? " (waiting for approval)" : "")));
      await reload();
      await draw();
    } catch (e) {
      put(msg, notice("error", describe(e)));
    }
  }

  async function draw() {
    let d;
    try {
      d = await get(`/api/v1/campaigns/${seg(id)}/versions?limit=100`);
    } catch (e) {
      put(list, notice("error", describe(e)));
      return;
    }
    put(list, table(["version", "state", "author", "saved", "origin", "size", "sha256"], d.versions.map((v) => ({
      props: { dataset: { version: v.version } },
      cells: [h("button", { type: "button", class: "link", on: { click: () => show(v, d.version) } }, `v${v.version}`),
        v.state || "", v.author, fmtTime(v.at), v.origin, fmtInt(v.size), h("code", null, (v.hash || "").slice(0, 12))],
    }))));
    if (d.versions.length) await show(d.versions[0], d.version);
  }
  await draw();
}

// ---- audit --------------------------------------------------------------

function changes(before, after) {
  if (!before || !after || typeof before !== "object" || typeof after !== "object") {
    return fmtJSON(after ?? before ?? "");
  }
  const keys = new Set([...Object.keys(before), ...Object.keys(after)]);
  const out = [];
  for (const k of keys) {
    if (k === "script" || k === "updated_at" || k === "rev") continue;
    const a = JSON.stringify(before[k]);
    const b = JSON.stringify(after[k]);
    if (a !== b) out.push(h("div", null, h("code", null, k), `: ${a ?? "—"} → ${b ?? "—"}`));
  }
  return out.length ? out : "—";
}

async function auditTab(body, id) {
  const out = h("div", { id: "audit" });
  put(body, out);
  try {
    const d = await get(`/api/v1/audit?object=${encodeURIComponent("campaign:" + id)}&limit=200`);
    put(out, table(["when", "actor", "action", "changes"], d.entries.map((e) => ({
      props: { dataset: { seq: e.seq } },
      cells: [fmtTime(e.at), e.actor, e.action, changes(e.before, e.after)],
    }))));
  } catch (e) {
    put(out, notice("error", describe(e)));
  }
}
