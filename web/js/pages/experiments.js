// pages/experiments.js — the experiment list (GET /api/v1/experiments):
// status, campaign, variants with their weights, whether decide uses it
// and the declared winner; files that do not load are listed with their
// error.  Names are written by marketers and shown as text.

import { get, describe, seg } from "../api.js";
import { h, put, badge, table, notice, fmtTime } from "../dom.js";

/** The definition's variants as "A 50% · B 50%". */
export function weights(def) {
  return ((def && def.variants) || []).map((v) => `${v.id} ${Math.round((v.weight ?? 0) * 1000) / 10}%`).join(" · ");
}

/** The campaign(s) an experiment covers. */
export function campaignsOf(def) {
  if (!def) return [];
  return def.campaigns || (def.campaign_id ? [def.campaign_id] : []);
}

export async function render(view) {
  const list = h("div", { id: "experiment-list" });
  const errors = h("div", { id: "experiment-errors" });
  const msg = h("div");

  put(view, h("div", { class: "page-head" }, h("h1", null, "Experiments")), msg,
    h("section", { class: "card" }, list), errors);
  let d;
  try {
    d = await get("/api/v1/experiments");
  } catch (e) {
    put(msg, notice("error", "Could not list experiments: " + describe(e)));
    return undefined;
  }
  put(list, table(["id", "name", "status", "campaign", "variants", "live", "winner", "updated"],
    d.experiments.map((x) => ({
      props: { dataset: { experiment: x.id } },
      cells: [h("a", { href: "#/experiments/" + seg(x.id) }, x.id), x.name || "", badge(x.status),
        campaignsOf(x.definition).map((c, i) => [i ? ", " : "", h("a", { href: "#/campaigns/" + seg(c) }, c)]),
        weights(x.definition), x.live ? "yes" : "no", x.winner || "—",
        `${fmtTime(x.updated_at)} by ${x.updated_by || "?"}`],
    }))));
  if (d.errors && d.errors.length) {
    put(errors, h("section", { class: "card" }, h("h2", null, "Files that do not load"),
      table(["file", "error"], d.errors.map((e) => ({ props: { class: "row-error" },
        cells: [h("code", null, e.file), h("span", { class: "error-text" },
          typeof e.error === "string" ? e.error : (e.error && e.error.message) || "")] })))));
  }
  return undefined;
}
