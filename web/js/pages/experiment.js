// pages/experiment.js — one experiment: its definition and state, the
// results (GET /api/v1/experiments/{id}/results) and the declare-winner
// action (POST /api/v1/experiments/{id}/winner {"variant"}).
//
// The sample-ratio check comes first and, on a mismatch, as a banner above
// everything else: the server's own warning text, because a mismatch means
// the other numbers cannot be trusted.  Per variant the page shows the
// API's counts and rates, and each variant's lift over control on the
// primary metric with its interval (fixed-horizon and the always-valid
// sequential one, which is the decision rule).  No statistic is computed
// here: every number is the server's.  Declaring a winner takes a second,
// explicit click; a refusal shows the server's 409 reason.

import { get, post, describe, seg, ApiError } from "../api.js";
import { h, put, badge, table, notice, fmtInt, fmtNum, fmtMoney, fmtPct, fmtTime } from "../dom.js";
import { intervalChart } from "../charts.js";
import { weights, campaignsOf } from "./experiments.js";

const pval = (v) => (v === null || v === undefined ? "—" : v < 0.0001 ? "< 0.0001" : v.toFixed(4));
const ci = (o) => (o && o.estimate !== null && o.estimate !== undefined
  ? `${fmtPct(o.estimate)} (${fmtPct(o.ci_low)} … ${fmtPct(o.ci_high)})` : "—");

function srmBlock(r) {
  const s = r.srm || {};
  const arms = Object.keys(s.observed || {});
  const detail = h("div", { class: "srm-detail" },
    `observed ${arms.map((a) => `${a} ${fmtInt(s.observed[a])}`).join(", ")}; expected ` +
    `${arms.map((a) => `${a} ${fmtNum((s.expected || {})[a])}`).join(", ")}; χ² ${fmtNum(s.chi2)}, p ${pval(s.p_value)}`);
  if (s.mismatch) {
    const text = (r.warnings || []).find((w) => /SAMPLE RATIO MISMATCH/.test(w)) ||
      "SAMPLE RATIO MISMATCH: do not trust these results";
    return h("div", { class: "notice srm-alert", role: "alert", id: "srm-warning", dataset: { pValue: s.p_value } },
      h("strong", null, text), detail);
  }
  return h("div", { class: "notice ok", id: "srm-ok", dataset: { pValue: s.p_value } },
    "Sample ratio as expected. ", detail);
}

function resultsView(r) {
  const primary = (r.metrics || []).find((m) => m.metric === r.primary_metric) || (r.metrics || [])[0];
  const cmps = primary ? primary.comparisons : [];
  const byVariant = new Map(cmps.map((c) => [c.variant, c]));
  const other = (r.warnings || []).filter((w) => !/SAMPLE RATIO MISMATCH/.test(w));
  const rec = r.recommendation || {};
  const variantRows = r.variants.map((v) => {
    const c = byVariant.get(v.id);
    return {
      props: { dataset: { variant: v.id, exposures: v.exposures, conversions: v.conversions } },
      cells: [v.id + (v.control ? " (control)" : ""), fmtPct(v.weight), fmtInt(v.exposures), fmtInt(v.conversions),
        fmtPct(v.conversion_rate), fmtMoney(v.revenue), fmtMoney(v.revenue_per_customer),
        c ? ci(c.lift) : "control", c ? ci(c.sequential) : "—", c ? pval(c.sequential && c.sequential.p_value) : "—",
        c ? fmtPct(c.chance_to_beat_control) : "—", c ? (c.significant ? "yes" : "no") : "—"],
    };
  });
  const rows = (key) => cmps.map((c) => ({ label: c.variant, value: c[key] && c[key].estimate,
    low: c[key] && c[key].ci_low, high: c[key] && c[key].ci_high }));
  const lifts = rows("lift");
  return [
    h("div", { class: "tiles" },
      h("div", { class: "tile", dataset: { kpi: "exposures", value: r.exposures } },
        h("div", { class: "tile-label" }, "Exposed customers"), h("div", { class: "tile-value" }, fmtInt(r.exposures)),
        h("div", { class: "tile-sub" }, `${r.from ? fmtTime(r.from) : "—"} … ${r.to ? fmtTime(r.to) : "now"}`)),
      h("div", { class: "tile", dataset: { kpi: "recommendation", value: rec.action } },
        h("div", { class: "tile-label" }, "Recommendation"), h("div", { class: "tile-value" }, rec.action || "—"),
        h("div", { class: "tile-sub", id: "exp-recommendation" }, rec.message || ""))),
    other.length ? notice("warn", other.map((w) => h("div", null, w))) : null,
    h("section", { class: "card" }, h("h2", null, `By variant — primary metric ${r.primary_metric}`),
      table(["variant", "weight", "exposed", "converted", "conv. rate", "revenue", "revenue / customer",
        "lift vs control (95% CI)", "sequential lift (CI)", "sequential p", "chance to beat control", "significant"],
      variantRows, { id: "exp-variants" }),
      lifts.length ? liftChart(lifts, "Lift over control, 95% interval") : null,
      lifts.length ? liftChart(rows("sequential"), "Lift over control, always-valid sequential interval") : null),
    r.holdout ? h("section", { class: "card", id: "exp-holdout" }, h("h2", null, "Holdout"),
      h("p", null, `${fmtInt(r.holdout.exposures)} held out; conversion lift of the treated `,
        ci(r.holdout.conversion_lift), `, incremental conversions ${fmtNum(r.holdout.incremental_conversions)}`)) : null,
    r.power ? h("section", { class: "card" }, h("h2", null, "Power"), h("dl", { class: "facts" },
      h("dt", null, "baseline"), h("dd", null, fmtPct(r.power.baseline)),
      h("dt", null, "needed per variant"), h("dd", null, fmtInt(r.power.needed_per_variant_sequential ?? r.power.needed_per_variant)),
      h("dt", null, "smallest arm"), h("dd", null, fmtInt(r.power.smallest_arm)),
      h("dt", null, "days still needed"), h("dd", null, fmtNum(r.power.days_needed)))) : null,
  ];
}

/** Lifts may be negative: the interval chart draws from 0, so shift to the lowest bound. */
function liftChart(rows, title) {
  const known = rows.filter((r) => r.value !== null && r.value !== undefined);
  if (!known.length) return h("p", { class: "muted" }, title + ": no data yet");
  const base = Math.min(0, ...known.map((r) => r.low ?? r.value));
  const shifted = rows.map((r) => (r.value === null || r.value === undefined ? r
    : { label: r.label, value: r.value - base, low: (r.low ?? r.value) - base, high: (r.high ?? r.value) - base }));
  return intervalChart(shifted, (v) => fmtPct(v + base), { title });
}

export async function render(view, ctx, id) {
  const head = h("div", { class: "page-head" });
  const srm = h("div", { id: "exp-srm" });
  const facts = h("div", { id: "exp-facts" });
  const winner = h("div", { id: "exp-winner", class: "toolbar" });
  const result = h("div", { id: "exp-result" });
  const body = h("div", { id: "exp-results" });
  let x;

  async function load() {
    x = await get(`/api/v1/experiments/${seg(id)}`);
    const def = x.definition || {};
    put(head, h("h1", { id: "exp-name" }, x.name || x.id),
      h("span", { id: "exp-status", dataset: { status: x.status } }, badge(x.status)));
    put(facts, h("dl", { class: "facts" },
      h("dt", null, "id"), h("dd", null, x.id),
      h("dt", null, "campaign"), h("dd", null, campaignsOf(def).map((c, i) =>
        [i ? ", " : "", h("a", { href: "#/campaigns/" + seg(c) }, c)])),
      h("dt", null, "variants"), h("dd", null, weights(def)),
      h("dt", null, "holdout"), h("dd", null, fmtPct(def.holdout || 0)),
      h("dt", null, "metric"), h("dd", null, def.metric || "conversion_rate"),
      h("dt", null, "live in decide"), h("dd", null, x.live ? "yes" : "no"),
      h("dt", null, "winner"), h("dd", { id: "exp-winner-id" }, x.winner || "—"),
      h("dt", null, "started"), h("dd", null, fmtTime(x.started_at)),
      (x.problems || []).length ? [h("dt", null, "problems"), h("dd", { class: "error-text" },
        x.problems.map((p) => h("div", null, typeof p === "string" ? p : JSON.stringify(p))))] : null));
    const allowed = (x.allowed_actions || []).includes("winner");
    const pick = h("select", { id: "winner-variant", "aria-label": "Winning variant" },
      (def.variants || []).map((v) => h("option", { value: v.id }, v.id)));
    put(winner, pick,
      h("button", { type: "button", class: allowed ? "primary" : "secondary", id: "btn-winner",
        title: allowed ? "Give this variant 100% of the traffic" : `not allowed from ${x.status}; the server will say why`,
        on: { click: () => declare(pick.value) } }, "Declare winner"));
  }

  async function results() {
    try {
      const r = await get(`/api/v1/experiments/${seg(id)}/results`);
      put(srm, srmBlock(r));
      put(body, resultsView(r));
    } catch (e) {
      put(srm);
      put(body, notice("error", "No results: " + describe(e)));
    }
  }

  async function declare(variant, confirmed) {
    if (!confirmed) { // a second, explicit click instead of a modal dialog
      put(result, notice("warn", `Conclude ${id} with ${variant} taking 100% of the traffic from the next decide? `,
        h("button", { type: "button", class: "primary", id: "btn-winner-confirm", dataset: { variant },
          on: { click: () => declare(variant, true) } }, `Yes, ${variant} wins`)));
      return;
    }
    const before = x.status;
    try {
      await post(`/api/v1/experiments/${seg(id)}/winner`, { variant });
      await load();
      put(result, notice("ok", `winner ${variant}: ${before} → ${x.status}`));
      await results();
    } catch (e) {
      const d = e instanceof ApiError ? e.detail : {};
      put(result, notice("error", h("strong", null, describe(e)),
        d.allowed ? h("div", null, `current: ${d.current}; allowed: ${d.allowed.join(", ") || "none"}`) : null));
    }
  }

  try {
    await load();
  } catch (e) {
    put(view, notice("error", `Experiment ${id}: ${describe(e)}`), h("a", { href: "#/experiments" }, "All experiments"));
    return undefined;
  }
  put(view, h("p", { class: "crumbs" }, h("a", { href: "#/experiments" }, "Experiments"), " / ", id),
    srm, head, h("section", { class: "card" }, facts, winner, result), body);
  await results();
  return undefined;
}
