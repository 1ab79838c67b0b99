// pages/campaigns.js — the campaign list with status filters and search,
// and a form to start a new campaign from a template (POST
// /api/v1/campaigns: it starts as a draft).

import { get, post, describe, seg } from "../api.js";
import { h, put, badge, table, notice, fmtTime } from "../dom.js";

const STATUSES = ["draft", "pending_approval", "approved", "active", "paused", "stopped", "archived"];

const TEMPLATE = (id) => `-- ${id}: a new campaign (a draft until launched)
return {
  id       = "${id}",
  name     = "${id}",
  channels = { "web" },
  priority = 10,
  variants = {
    { id = "A", weight = 50, content = { headline = "Hello {{first_name|there}}" } },
    { id = "B", weight = 50, content = { headline = "Welcome back" } },
  },
  eligible = function(p, ctx)
    return true
  end,
}
`;

export async function render(view, ctx) {
  let status = "";
  let q = "";
  let cursor = null;
  const rows = [];
  const list = h("div", { id: "campaign-list" });
  const more = h("button", { type: "button", class: "small", hidden: true }, "Load more");
  const msg = h("div");
  const chips = h("div", { class: "chips", role: "group", "aria-label": "Filter by status" });
  const search = h("input", { type: "search", placeholder: "Search id or name", "aria-label": "Search" });

  function drawChips() {
    put(chips, ["", ...STATUSES].map((st) => h("button", {
      type: "button", class: ["chip", st === status ? "on" : null], dataset: { status: st || "current" },
      "aria-pressed": st === status ? "true" : "false",
      on: { click: () => {
        status = st;
        drawChips();
        load(true);
      } },
    }, st ? st.replace("_", " ") : "all current")));
  }

  async function load(reset) {
    if (reset) {
      rows.length = 0;
      cursor = null;
    }
    const params = new URLSearchParams({ limit: "100" });
    if (status) params.set("status", status);
    if (q) params.set("q", q);
    if (cursor) params.set("cursor", cursor);
    try {
      const d = await get("/api/v1/campaigns?" + params);
      rows.push(...d.campaigns);
      cursor = d.next_cursor || null;
      more.hidden = !cursor;
      put(msg);
      draw();
    } catch (e) {
      put(msg, notice("error", "Could not list campaigns: " + describe(e)));
    }
  }

  function draw() {
    put(list, table(["id", "name", "status", "channels", "candidate", "version (live)", "updated"],
      rows.map((c) => ({
        props: { dataset: { campaign: c.id } },
        cells: [h("a", { href: "#/campaigns/" + seg(c.id) }, c.id), c.name || "", badge(c.status),
          (c.channels || []).join(", "), c.candidate ? "yes" : "no",
          `${c.version}${c.live_version && c.live_version !== c.version ? ` (${c.live_version})` : ""}` +
            (c.pending_version ? ` · v${c.pending_version} waiting` : ""),
          `${fmtTime(c.updated_at)} by ${c.updated_by || "?"}`],
      }))));
  }

  let searchTimer = null;
  search.addEventListener("input", () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(() => {
      q = search.value.trim();
      load(true);
    }, 250);
  });
  more.addEventListener("click", () => load(false));

  // new campaign
  const newId = h("input", { type: "text", placeholder: "new-campaign-id", "aria-label": "New campaign id",
    pattern: "[A-Za-z0-9_.:@-]{1,128}" });
  const newMsg = h("div");
  const form = h("form", { class: "inline-form", on: { submit: async (e) => {
    e.preventDefault();
    const id = newId.value.trim();
    if (!id) return;
    try {
      await post("/api/v1/campaigns", { id, name: id, script: TEMPLATE(id) });
      ctx.go("#/campaigns/" + seg(id) + "/script");
    } catch (err) {
      put(newMsg, notice("error", describe(err)));
    }
  } } }, newId, h("button", { type: "submit" }, "New campaign"), newMsg);

  drawChips();
  put(view,
    h("div", { class: "page-head" }, h("h1", null, "Campaigns"), form),
    h("div", { class: "toolbar" }, chips, search), msg, list, more);
  await load(true);
  return () => clearTimeout(searchTimer);
}
