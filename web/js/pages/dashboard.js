// pages/dashboard.js — live totals and rates, top campaigns, charts.
//
// Short polling every POLL_MS while the tab is visible: GET /metrics
// (decides, offers, events and hook errors as counters; rates are the
// counters' differences between two polls), GET /api/v1/analytics/dashboard
// (today's and the range's totals, top campaigns) and GET /api/v1/outbox
// (queue depth).  Each is a read the server answers from counters and
// aggregates; `scripts/bench.sh` measures what a poller costs decide.  The
// daily chart comes from POST /api/v1/analytics/reports, once a minute.

import { get, post, metricsText, describe, seg } from "../api.js";
import { h, put, tile, table, notice, fmtInt, fmtMoney, fmtRate, fmtCI } from "../dom.js";
import { parse, sum } from "../prom.js";
import { timeChart, dayTs } from "../charts.js";

const POLL_MS = 5000;
const REPORT_MS = 60000;
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

function daysAgo(n) {
  const d = new Date(Date.now() - n * 86400000);
  return d.toISOString().slice(0, 10);
}

export async function render(view) {
  const status = h("span", { class: "muted", id: "dash-updated" }, "");
  const pauseBtn = h("button", { type: "button", class: "small" }, "Pause");
  const tiles = h("div", { class: "tiles", id: "dash-tiles" });
  const liveHost = h("div", { class: "chart-host", id: "chart-live" });
  const dailyHost = h("div", { class: "chart-host", id: "chart-daily" });
  const top = h("div", { id: "dash-top" });
  const totals = h("div", { id: "dash-totals" });
  const err = h("div", { id: "dash-error" });
  put(view,
    h("div", { class: "page-head" }, h("h1", null, "Dashboard"),
      h("div", { class: "head-tools" }, status, pauseBtn)),
    err, tiles,
    h("section", { class: "card" }, h("h2", null, "Live rates (per second)"), liveHost),
    h("section", { class: "card" }, h("h2", null, "Last 30 days (UTC days)"), dailyHost),
    h("section", { class: "card" }, h("h2", null, "Top campaigns (30 days)"), top),
    h("section", { class: "card" }, h("h2", null, "Totals (30 days)"), totals));

  let live = null;
  let daily = null;
  let timer = null;
  let reportTimer = null;
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
      const [text, dash, outbox] = await Promise.all([metricsText(), get("/api/v1/analytics/dashboard"),
        get("/api/v1/outbox")]);
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
      showTop(dash);
      drawLive();
      put(err);
      put(status, "Updated " + new Date().toLocaleTimeString() + " · every " + POLL_MS / 1000 + " s");
      view.dataset.polls = String(Number(view.dataset.polls || 0) + 1);
    } catch (e) {
      if (stopped) return;
      put(err, notice("error", "Could not refresh: " + describe(e)));
    }
    if (!stopped) timer = setTimeout(poll, POLL_MS);
  }

  function showTiles(c, r, d, o) {
    const today = d.today;
    const last5 = (d.rates && d.rates.last_5m) || { per_second: {} };
    const ps = last5.per_second || {};
    put(tiles,
      tile("decides_per_s", "Decides / s", fmtRate(r.decides), r.decides ?? "", `${fmtInt(c.decides)} since start`),
      tile("offers_per_s", "Offers served / s", fmtRate(r.offers), r.offers ?? "", `${fmtInt(c.offers)} since start`),
      tile("impressions_today", "Impressions today", fmtInt(today.impressions), today.impressions,
        `${fmtRate(ps.impression ?? 0)}/s over 5 min`),
      tile("clicks_today", "Clicks today", fmtInt(today.clicks), today.clicks, "CTR " + fmtCI(today.ctr)),
      tile("conversions_today", "Conversions today", fmtInt(today.conversions), today.conversions,
        "rate " + fmtCI(today.conversion_rate)),
      tile("revenue_today", "Revenue today", fmtMoney(today.revenue), today.revenue,
        `${fmtMoney(d.totals.revenue)} in 30 days`),
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

  async function report() {
    reportTimer = null;
    if (stopped) return;
    try {
      const from = daysAgo(29);
      const to = daysAgo(0);
      const r = await post("/api/v1/analytics/reports", {
        dimensions: ["day"], metrics: ["impressions", "clicks", "conversions"], from, to,
      });
      if (stopped) return;
      const cols = r.data.columns;
      const byDay = new Map(r.data.rows.map((row) => [row[0], row]));
      const xs = [];
      const ys = [[], [], []];
      for (let i = 29; i >= 0; i--) {
        const day = daysAgo(i);
        const row = byDay.get(day);
        xs.push(dayTs(day));
        for (let k = 0; k < 3; k++) ys[k].push(row ? row[cols.indexOf(["impressions", "clicks", "conversions"][k])] : 0);
      }
      const data = [xs, ...ys];
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
      if (!stopped) put(dailyHost, notice("error", "Daily report unavailable: " + describe(e)));
    }
    if (!stopped) reportTimer = setTimeout(report, REPORT_MS);
  }

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
  report();
  return () => {
    stopped = true;
    clearTimeout(timer);
    clearTimeout(reportTimer);
    document.removeEventListener("visibilitychange", onVisible);
    if (live) live.destroy();
    if (daily) daily.destroy();
  };
}
