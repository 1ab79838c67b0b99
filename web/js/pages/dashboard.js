// pages/dashboard.js — live totals and rates, top campaigns, charts.
//
// Three cadences, so that an open dashboard costs decide nothing measurable
// (scripts/bench.sh measures each request):
//  - every POLL_MS while the tab is visible: GET /metrics (decides, offers,
//    events and hook errors as counters; rates are the counters'
//    differences between two polls) and GET /api/v1/outbox (queue depth),
//    both answered from memory and one LMDB stat;
//  - every TODAY_EVERY polls: GET /api/v1/analytics/dashboard for today only
//    (today's totals, the last 5 minutes' rates);
//  - every SLOW_MS, and on "Refresh": the dashboard over its default 30 days
//    (totals, top campaigns) and POST /api/v1/analytics/reports by day for
//    the chart.  The analytics queries read aggregate cells, and today's
//    costs almost as much as a month's cells would to skip over, so they
//    are asked for sparingly.

import { get, post, metricsText, describe, seg } from "../api.js";
import { h, put, tile, table, notice, fmtInt, fmtMoney, fmtRate, fmtCI } from "../dom.js";
import { parse, sum } from "../prom.js";
import { timeChart, dayTs } from "../charts.js";

const POLL_MS = 5000;
const TODAY_EVERY = 3; // polls: today's analytics every 15 s
const SLOW_MS = 300000; // the 30-day views every 5 minutes
const KEEP = 720; // live points kept: an hour at 5 s

// Live history survives leaving the page (the module stays loaded).
const hist = { t: [], decides: [], offers: [], events: [], errors: [] };
let prev = null; // {t, decides, offers, events, errors}

function counters(samples) {
  return {
    decides: sum(samples, "promod_http_requests_total", { route: "/api/v1/decide" }) || 0,
    offers: sum(samples, "promod_offers_served_total") || 0,
    events: sum(samples, "promod_events_ingested_total") || 0,
    errors: sum(samples, "promod_hook_errors_total") || 0,
  };
}

function rate(now, before, key, dt) {
  if (!before || dt <= 0) return null;
  const d = now[key] - before[key];
  return d < 0 ? null : d / dt; // a restart resets the counters
}

function push(t, r) {
  hist.t.push(t);
  for (const k of ["decides", "offers", "events", "errors"]) hist[k].push(r[k]);
  if (hist.t.length > KEEP) for (const k of Object.keys(hist)) hist[k].shift();
}

export async function render(view) {
  const status = h("span", { class: "muted", id: "dash-updated" }, "");
  const pauseBtn = h("button", { type: "button", class: "small" }, "Pause");
  const refreshBtn = h("button", { type: "button", class: "small", id: "dash-refresh" }, "Refresh 30 days");
  const tiles = h("div", { class: "tiles", id: "dash-tiles" });
  const liveHost = h("div", { class: "chart-host", id: "chart-live" });
  const dailyHost = h("div", { class: "chart-host", id: "chart-daily" });
  const top = h("div", { id: "dash-top" });
  const totals = h("div", { id: "dash-totals" });
  const err = h("div", { id: "dash-error" });
  put(view,
    h("div", { class: "page-head" }, h("h1", null, "Dashboard"),
      h("div", { class: "head-tools" }, status, refreshBtn, pauseBtn)),
    err, tiles,
    h("section", { class: "card" }, h("h2", null, "Live rates (per second)"), liveHost),
    h("section", { class: "card" }, h("h2", null, "Last 30 days (UTC days)"), dailyHost),
    h("section", { class: "card" }, h("h2", null, "Top campaigns (30 days, by revenue, then conversions, clicks)"), top),
    h("section", { class: "card" }, h("h2", null, "Totals (30 days)"), totals));

  let live = null;
  let daily = null;
  let timer = null;
  let slowTimer = null;
  let today = null; // the server's UTC day, "2026-03-01"
  let last30 = null;
  let dayDash = null; // today's dashboard, as last read
  let ticks = 0;
  let stopped = false;
  let paused = false;

  const drawLive = () => {
    const data = [hist.t.slice(), hist.decides.slice(), hist.offers.slice(), hist.events.slice(),
      hist.errors.slice()];
    if (!live) {
      live = timeChart(liveHost, {
        series: [{ label: "decides/s" }, { label: "offers/s" }, { label: "events/s" },
          { label: "hook errors/s", color: "#b00020" }],
        data, yLabel: "per second",
      });
    } else {
      live.update(data);
    }
  };

  async function poll() {
    timer = null;
    if (stopped) return;
    if (paused || document.hidden) {
      timer = setTimeout(poll, POLL_MS);
      return;
    }
    try {
      if (!today) await slow(); // the server's today (UTC), from the full dashboard
      if (!today) throw new Error("the 30-day dashboard did not answer");
      const wantDay = !dayDash || ticks % TODAY_EVERY === 0;
      const [text, dash, outbox] = await Promise.all([metricsText(),
        wantDay ? get(`/api/v1/analytics/dashboard?from=${today}&to=${today}&top=1`) : dayDash,
        get("/api/v1/outbox")]);
      dayDash = dash;
      ticks++;
      if (stopped) return;
      const t = Date.now() / 1000;
      const c = counters(parse(text));
      const dt = prev ? t - prev.t : 0;
      const r = {
        decides: rate(c, prev, "decides", dt), offers: rate(c, prev, "offers", dt),
        events: rate(c, prev, "events", dt), errors: rate(c, prev, "errors", dt),
      };
      prev = Object.assign({ t }, c);
      if (r.decides !== null) push(t, r);
      showTiles(c, r, dash, outbox);
      drawLive();
      put(err);
      put(status, `Updated ${new Date().toLocaleTimeString()} · live every ${POLL_MS / 1000} s, ` +
        `today's totals every ${(POLL_MS * TODAY_EVERY) / 1000} s, 30 days every ${SLOW_MS / 60000} min`);
      view.dataset.polls = String(Number(view.dataset.polls || 0) + 1);
    } catch (e) {
      if (stopped) return;
      put(err, notice("error", "Could not refresh: " + describe(e)));
    }
    if (!stopped) timer = setTimeout(poll, POLL_MS);
  }

  function showTiles(c, r, d, o) {
    const day = d.today;
    const last5 = (d.rates && d.rates.last_5m) || { per_second: {} };
    const ps = last5.per_second || {};
    put(tiles,
      tile("decides_per_s", "Decides / s", fmtRate(r.decides), r.decides ?? "", `${fmtInt(c.decides)} since start`),
      tile("offers_per_s", "Offers served / s", fmtRate(r.offers), r.offers ?? "", `${fmtInt(c.offers)} since start`),
      tile("impressions_today", "Impressions today", fmtInt(day.impressions), day.impressions,
        `${fmtRate(ps.impression ?? 0)}/s over 5 min`),
      tile("clicks_today", "Clicks today", fmtInt(day.clicks), day.clicks, "CTR " + fmtCI(day.ctr)),
      tile("conversions_today", "Conversions today", fmtInt(day.conversions), day.conversions,
        "rate " + fmtCI(day.conversion_rate)),
      tile("revenue_today", "Revenue today", fmtMoney(day.revenue), day.revenue,
        `${fmtMoney((last30 || {}).revenue)} in 30 days`),
      tile("hook_errors", "Hook errors", fmtInt(c.errors), c.errors,
        r.errors === null ? "since start" : `${fmtRate(r.errors)}/s now`),
      tile("outbox_queued", "Outbox depth", fmtInt(o.queued), o.queued,
        `${fmtInt(o.in_flight)} in flight · ${fmtInt(o.dead)} dead`));
  }

  function showTop(d) {
    put(top, table(["campaign", "impressions", "clicks", "CTR (95% CI)", "conversions", "conv. rate (95% CI)",
      "revenue"], d.top_campaigns.map((x) => ({
      props: { dataset: { campaign: x.campaign_id } },
      cells: [h("a", { href: "#/campaigns/" + seg(x.campaign_id) }, x.campaign_id), fmtInt(x.impressions),
        fmtInt(x.clicks), fmtCI(x.ctr), fmtInt(x.conversions), fmtCI(x.conversion_rate), fmtMoney(x.revenue)],
    }))));
    const t = d.totals;
    put(totals, h("dl", { class: "facts" },
      h("dt", null, "range"), h("dd", null, `${d.from} … ${d.to}`),
      h("dt", null, "impressions"), h("dd", { dataset: { total: "impressions" } }, fmtInt(t.impressions)),
      h("dt", null, "clicks"), h("dd", { dataset: { total: "clicks" } }, fmtInt(t.clicks)),
      h("dt", null, "conversions"), h("dd", { dataset: { total: "conversions" } }, fmtInt(t.conversions)),
      h("dt", null, "sends"), h("dd", null, fmtInt(t.sends)),
      h("dt", null, "revenue"), h("dd", { dataset: { total: "revenue" } }, fmtMoney(t.revenue)),
      h("dt", null, "CTR"), h("dd", null, fmtCI(t.ctr)),
      h("dt", null, "conversion rate"), h("dd", null, fmtCI(t.conversion_rate))));
  }

  // the 30-day views: totals, top campaigns, the daily chart
  async function slow() {
    clearTimeout(slowTimer);
    slowTimer = null;
    if (stopped) return;
    try {
      const d = await get("/api/v1/analytics/dashboard");
      if (stopped) return;
      today = d.to;
      last30 = d.totals;
      showTop(d);
      const days = [];
      for (let t = dayTs(d.from); t <= dayTs(d.to); t += 86400) days.push(new Date(t * 1000).toISOString().slice(0, 10));
      const metrics = ["impressions", "clicks", "conversions"];
      const r = await post("/api/v1/analytics/reports", { dimensions: ["day"], metrics, from: d.from, to: d.to });
      if (stopped) return;
      const cols = r.data.columns;
      const byDay = new Map(r.data.rows.map((row) => [row[0], row]));
      const data = [days.map(dayTs), ...metrics.map((m) => days.map((day) => {
        const row = byDay.get(day);
        return row ? row[cols.indexOf(m)] : 0;
      }))];
      if (!daily) {
        daily = timeChart(dailyHost, {
          series: [{ label: "impressions", points: true }, { label: "clicks", points: true },
            { label: "conversions", points: true }],
          data, yLabel: "events / day",
        });
      } else {
        daily.update(data);
      }
    } catch (e) {
      if (!stopped) put(err, notice("error", "Could not refresh the 30-day views: " + describe(e)));
    }
    if (!stopped) slowTimer = setTimeout(slow, SLOW_MS);
  }

  refreshBtn.addEventListener("click", () => slow());
  pauseBtn.addEventListener("click", () => {
    paused = !paused;
    pauseBtn.textContent = paused ? "Resume" : "Pause";
    if (!paused && !timer) poll();
  });
  const onVisible = () => {
    if (!document.hidden && !paused && timer) {
      clearTimeout(timer);
      poll();
    }
  };
  document.addEventListener("visibilitychange", onVisible);
  await poll();
  return () => {
    stopped = true;
    clearTimeout(timer);
    clearTimeout(slowTimer);
    document.removeEventListener("visibilitychange", onVisible);
    if (live) live.destroy();
    if (daily) daily.destroy();
  };
}
