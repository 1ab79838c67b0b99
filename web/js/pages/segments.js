// pages/segments.js — the segments (GET /api/v1/segments) with each one's
// exact size and state from GET /api/v1/segments/{id}/size, files that do
// not load with their error, and for a chosen segment ("#/segments/<id>")
// its definition and first members (GET /api/v1/segments/{id}/customers
// ?limit=20).  Names, conditions and customer ids are data: shown as text.

import { get, describe, seg } from "../api.js";
import { h, put, badge, table, notice, fmtInt, fmtJSON, fmtTime } from "../dom.js";

const MEMBERS = 20;

async function sizeOf(id) {
  try {
    return await get(`/api/v1/segments/${seg(id)}/size`);
  } catch (e) {
    return { error: describe(e) };
  }
}

async function detail(out, id) {
  let d;
  let m;
  try {
    [d, m] = await Promise.all([get(`/api/v1/segments/${seg(id)}`),
      get(`/api/v1/segments/${seg(id)}/customers?limit=${MEMBERS}`)]);
  } catch (e) {
    put(out, notice("error", `Segment ${id}: ${describe(e)}`));
    return;
  }
  put(out, h("section", { class: "card", id: "segment-detail", dataset: { segment: d.id } },
    h("h2", { id: "segment-name" }, d.name || d.id),
    h("dl", { class: "facts" },
      h("dt", null, "id"), h("dd", null, d.id),
      h("dt", null, "kind"), h("dd", null, d.kind),
      h("dt", null, "file"), h("dd", null, h("code", null, d.file || "—")),
      h("dt", null, "members"), h("dd", { id: "segment-size", dataset: { size: m.size } }, fmtInt(m.size), " ", badge(m.state)),
      h("dt", null, "used by"), h("dd", null, (d.used_by || []).length ? fmtJSON(d.used_by) : "—")),
    d.file_error ? notice("warn", "The file does not load; its previous version serves: ", fmtJSON(d.file_error)) : null,
    d.conditions !== undefined && d.conditions !== null
      ? [h("h3", null, "Conditions"), h("pre", { class: "code" }, JSON.stringify(d.conditions, null, 2))]
      : d.source ? [h("h3", null, "Source"), h("pre", { class: "code" }, d.source)] : null,
    h("h3", null, m.customers.length < m.size ? `First ${m.customers.length} of ${fmtInt(m.size)} members` : "Members"),
    h("ol", { id: "segment-members", class: "members" },
      m.customers.map((c) => h("li", { dataset: { customer: typeof c === "string" ? c : c.id } },
        typeof c === "string" ? c : fmtJSON(c))))));
}

export async function render(view, ctx, id) {
  const list = h("div", { id: "segment-list" });
  const errors = h("div", { id: "segment-errors" });
  const msg = h("div");
  const more = h("div", { id: "segment-more" });
  put(view, h("div", { class: "page-head" }, h("h1", null, "Segments")), msg,
    h("section", { class: "card" }, list), errors, more);
  let d;
  try {
    d = await get("/api/v1/segments");
  } catch (e) {
    put(msg, notice("error", "Could not list segments: " + describe(e)));
    return undefined;
  }
  const sizes = await Promise.all(d.segments.map((s) => sizeOf(s.id)));
  put(list, table(["id", "name", "kind", "members", "state", "time based", "depends on", "loaded"],
    d.segments.map((s, i) => ({
      props: { dataset: { segment: s.id, size: sizes[i].size }, class: s.id === id ? "selected" : null },
      cells: [h("a", { href: "#/segments/" + seg(s.id) }, s.id), s.name || "", s.kind,
        sizes[i].error ? h("span", { class: "error-text" }, sizes[i].error) : fmtInt(sizes[i].size),
        badge(sizes[i].state || s.state), s.time_based ? "yes" : "no", (s.depends_on || []).join(", "),
        fmtTime(s.loaded_at)],
    }))));
  if (d.errors && d.errors.length) {
    put(errors, h("section", { class: "card" }, h("h2", null, "Files that do not load"),
      table(["file", "error"], d.errors.map((e) => ({ props: { class: "row-error" },
        cells: [h("code", null, e.file), h("span", { class: "error-text" }, e.error)] })))));
  }
  if (id) await detail(more, id);
  return undefined;
}
