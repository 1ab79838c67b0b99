// pages/outbox.js — the delivery queue (depth, in flight, failures by
// reason, per channel) and the dead letters, with redrive for admin keys
// only (POST /api/v1/outbox/dead/redrive needs the admin role; a marketer
// sees the letters and no redrive controls).

import { get, post, describe } from "../api.js";
import { h, put, tile, table, notice, fmtInt, fmtNum, fmtTime, fmtJSON } from "../dom.js";

export async function render(view, ctx) {
  const admin = ctx.can("admin");
  const tiles = h("div", { class: "tiles", id: "outbox-tiles" });
  const channels = h("div", { id: "outbox-channels" });
  const failures = h("div", { id: "outbox-failures" });
  const dead = h("div", { id: "dead-letters" });
  const msg = h("div", { id: "outbox-msg" });
  const chanFilter = h("input", { type: "text", placeholder: "channel", "aria-label": "Filter by channel" });
  const campFilter = h("input", { type: "text", placeholder: "campaign", "aria-label": "Filter by campaign" });
  const more = h("button", { type: "button", class: "small", hidden: true }, "Next page");
  let after = 0;
  let next = null;
  const selected = new Set();

  const redrive = admin
    ? h("div", { class: "toolbar", id: "redrive-tools" },
      h("button", { type: "button", class: "primary", id: "btn-redrive-selected", on: { click: () => doRedrive(false) } },
        "Redrive selected"),
      h("button", { type: "button", id: "btn-redrive-all", on: { click: () => doRedrive(true) } },
        "Redrive all (filtered)"))
    : h("p", { class: "muted", id: "redrive-note" }, "Redriving dead letters needs an admin key.");

  async function summary() {
    const o = await get("/api/v1/outbox");
    put(tiles,
      tile("queued", "Queued", fmtInt(o.queued), o.queued),
      tile("in_flight", "In flight", fmtInt(o.in_flight), o.in_flight),
      tile("dead", "Dead letters", fmtInt(o.dead), o.dead),
      tile("sent", "Sent", fmtInt(o.sent), o.sent),
      tile("failed_attempts", "Failed attempts", fmtInt(o.failed_attempts), o.failed_attempts),
      tile("held", "Held", fmtInt(o.held), o.held, `timers pending ${fmtInt(o.timers_pending)}`));
    put(channels, table(["channel", "queued", "in flight", "dead", "sent", "failed attempts", "concurrency", "rate /s"],
      Object.entries(o.channels || {}).map(([name, c]) => [name, fmtInt(c.queued), fmtInt(c.in_flight), fmtInt(c.dead),
        fmtInt(c.sent), fmtInt(c.failed_attempts), fmtInt(c.concurrency), fmtNum(c.rate)])));
    put(failures, table(["reason", "failures"], Object.entries(o.failures || {}).map(([k, v]) => [k, fmtInt(v)])));
  }

  async function letters() {
    const p = new URLSearchParams({ limit: "50" });
    if (after) p.set("after", String(after));
    if (chanFilter.value.trim()) p.set("channel", chanFilter.value.trim());
    if (campFilter.value.trim()) p.set("campaign", campFilter.value.trim());
    const d = await get("/api/v1/outbox/dead?" + p);
    next = d.next_after;
    more.hidden = next === null || next === undefined;
    const cols = ["id", "channel", "campaign", "customer", "attempts", "reason", "error", "dead at", "message"];
    if (admin) cols.unshift("");
    put(dead, table(cols, d.items.map((x) => {
      const cells = [String(x.id), x.channel, x.campaign || "", x.customer || "", fmtInt(x.attempts), x.reason,
        x.error || "", fmtTime(x.dead_at / 1000) /* ms */, h("code", { class: "value" }, fmtJSON(x.msg))];
      if (admin) {
        cells.unshift(h("input", { type: "checkbox", "aria-label": `select ${x.id}`, checked: selected.has(x.id),
          dataset: { id: x.id }, on: { change: (e) => {
            if (e.target.checked) selected.add(x.id);
            else selected.delete(x.id);
          } } }));
      }
      return { props: { dataset: { dead: x.id } }, cells };
    })));
  }

  async function doRedrive(all) {
    const body = all ? { all: true } : { ids: [...selected] };
    if (all && chanFilter.value.trim()) body.channel = chanFilter.value.trim();
    if (all && campFilter.value.trim()) body.campaign = campFilter.value.trim();
    if (!all && !body.ids.length) {
      put(msg, notice("warn", "Select dead letters first."));
      return;
    }
    try {
      const r = await post("/api/v1/outbox/dead/redrive", body);
      selected.clear();
      put(msg, notice("ok", `Redriven: ${r.data.redriven}` +
        (r.data.not_dead && r.data.not_dead.length ? `; not dead any more: ${r.data.not_dead.join(", ")}` : "")));
      await refresh();
    } catch (e) {
      put(msg, notice("error", describe(e)));
    }
  }

  async function refresh() {
    try {
      await Promise.all([summary(), letters()]);
    } catch (e) {
      put(msg, notice("error", describe(e)));
    }
  }

  const filter = h("form", { class: "inline-form", on: { submit: (e) => {
    e.preventDefault();
    after = 0;
    selected.clear();
    letters().catch((err) => put(msg, notice("error", describe(err))));
  } } }, chanFilter, campFilter, h("button", { type: "submit" }, "Filter"));
  more.addEventListener("click", () => {
    after = next;
    letters().catch((err) => put(msg, notice("error", describe(err))));
  });

  put(view,
    h("div", { class: "page-head" }, h("h1", null, "Outbox"),
      h("button", { type: "button", class: "small", on: { click: refresh } }, "Refresh")),
    msg, tiles,
    h("section", { class: "card" }, h("h2", null, "Channels"), channels),
    h("section", { class: "card" }, h("h2", null, "Failures by reason"), failures),
    h("section", { class: "card" }, h("h2", null, "Dead letters"), filter, redrive, dead, more));
  await refresh();
  return undefined;
}
