// pages/rules.js — load status of every campaign file and channel plugin
// (GET /api/v1/rules): the generation being served, and each file's
// error as the loader wrote it ("rules/x.lua:12: message"); a file with an
// error keeps its previous good version live.  Reload forces a rescan.

import { get, post, describe, seg } from "../api.js";
import { h, put, badge, table, notice, fmtInt, fmtNum, fmtTime } from "../dom.js";

export async function render(view) {
  const facts = h("div", { id: "rules-facts" });
  const files = h("div", { id: "rules-files" });
  const msg = h("div", { id: "rules-msg" });

  async function load() {
    const d = await get("/api/v1/rules");
    const bad = d.files.filter((f) => f.status !== "ok");
    put(facts, h("dl", { class: "facts" },
      h("dt", null, "generation"), h("dd", null, String(d.generation)),
      h("dt", null, "campaigns"), h("dd", null, fmtInt(d.campaigns)),
      h("dt", null, "channels"), h("dd", null, fmtInt(d.channels)),
      h("dt", null, "files with errors"), h("dd", { dataset: { errors: bad.length } }, fmtInt(bad.length)),
      h("dt", null, "last build"), h("dd", null, fmtNum(d.build_ms) + " ms")));
    put(files, table(["file", "kind", "status", "version", "loaded", "serves", "error"], d.files.map((f) => ({
      props: { class: f.status !== "ok" ? "row-error" : null, dataset: { file: f.file } },
      cells: [h("code", null, f.file), f.kind, badge(f.status), h("code", null, f.version || "—"), fmtTime(f.loaded_at),
        f.campaign_id ? h("a", { href: `#/campaigns/${seg(f.campaign_id)}/script` }, f.campaign_id) : f.channel || "",
        f.error ? h("span", { class: "error-text" }, f.error.message,
          f.status === "error_previous_live" ? " (the previous good version keeps serving)" : "") : ""],
    }))));
  }

  const reload = h("button", { type: "button", id: "btn-reload", on: { click: async () => {
    try {
      const r = await post("/api/v1/rules/reload");
      put(msg, notice(r.data.errors ? "warn" : "ok",
        `Reloaded: generation ${r.data.generation}, ${r.data.errors} file(s) with errors.`));
      await load();
    } catch (e) {
      put(msg, notice("error", describe(e)));
    }
  } } }, "Reload now");

  put(view, h("div", { class: "page-head" }, h("h1", null, "Rules"), reload), msg,
    h("section", { class: "card" }, facts),
    h("section", { class: "card" }, h("h2", null, "Files"), files));
  try {
    await load();
  } catch (e) {
    put(msg, notice("error", describe(e)));
  }
  return undefined;
}
