// editor.js — the campaign script tab: a Lua editor (a textarea with line
// numbers), validate, save, and the simulate panel.
//
// Validate is POST /api/v1/rules/validate: the loader's own checks, errors
// as "rules/x.lua:12: message", marked at their line.  Save is PUT
// /api/v1/campaigns/{id} with If-Match (a change made meanwhile by someone
// else is a 409, not an overwrite).  Simulate is POST
// /api/v1/rules/simulate: the edited text, not the saved one, runs through
// the live decide pipeline as a dry run with explain for the chosen
// customer, channel, placement and context — before anything is saved.
// Run tests is POST /api/v1/rules/test: a campaign test file (the textarea,
// docs/authoring.md) against the edited text; failures at their test line.

import { api, get, post, describe, seg, ApiError } from "./api.js";
import { h, put, notice, table, fmtJSON, fmtNum } from "./dom.js";

/** Line errors from loader messages: [{line, message, text}]. */
export function lineErrors(list) {
  return (list || []).map((text) => {
    const m = /\.lua:(\d+):\s?(.*)$/s.exec(String(text));
    return m ? { line: Number(m[1]), message: m[2], text } : { line: null, message: String(text), text };
  });
}

/** A textarea with a line-number gutter; errors mark their lines. */
export function codeEditor(initial) {
  const gutter = h("div", { class: "gutter", "aria-hidden": "true" });
  const area = h("textarea", { class: "code", id: "script-editor", spellcheck: "false", wrap: "off",
    autocomplete: "off", "aria-label": "Lua script" });
  area.value = initial;
  const wrap = h("div", { class: "editor" }, gutter, area);
  let marks = new Map(); // line -> message
  let count = 0;

  function drawGutter(force) {
    const n = area.value.split("\n").length;
    if (n === count && !force) return;
    count = n;
    const rows = [];
    for (let i = 1; i <= n; i++) {
      const msg = marks.get(i);
      rows.push(h("div", { class: ["ln", msg ? "err" : null], dataset: { line: i }, title: msg || null }, String(i)));
    }
    put(gutter, rows);
    gutter.scrollTop = area.scrollTop;
  }
  area.addEventListener("input", () => drawGutter(false));
  area.addEventListener("scroll", () => {
    gutter.scrollTop = area.scrollTop;
  });
  area.addEventListener("keydown", (e) => {
    if (e.key === "Tab" && !e.shiftKey && !e.ctrlKey && !e.altKey && !e.metaKey) {
      e.preventDefault(); // two spaces; Esc then Tab leaves the editor
      area.setRangeText("  ", area.selectionStart, area.selectionEnd, "end");
      drawGutter(false);
    }
  });
  area.addEventListener("keyup", (e) => {
    if (e.key === "Escape") area.blur();
  });
  drawGutter(true);

  return {
    el: wrap,
    area,
    get value() {
      return area.value;
    },
    set value(v) {
      area.value = v;
      drawGutter(true);
    },
    mark(errors) {
      marks = new Map();
      for (const e of errors) if (e.line) marks.set(e.line, (marks.get(e.line) ? marks.get(e.line) + "\n" : "") + e.message);
      drawGutter(true);
    },
    goto(line) {
      const lines = area.value.split("\n");
      let start = 0;
      for (let i = 0; i < line - 1 && i < lines.length; i++) start += lines[i].length + 1;
      const end = start + (lines[line - 1] || "").length;
      area.focus();
      area.setSelectionRange(start, end);
      const lh = parseFloat(getComputedStyle(area).lineHeight) || 18;
      area.scrollTop = Math.max(0, (line - 4) * lh);
    },
  };
}

/** The campaign's file under rules/, as validate and simulate name it (its
 *  default id and the path in messages); undefined when it is not one. */
function fileName(camp) {
  const f = camp.file || camp.id + ".lua";
  const ok = f.length <= 128 && f.split("/").every((s) => /^[A-Za-z0-9_.:@-]+$/.test(s) && !s.startsWith("."));
  return ok ? f : undefined;
}

/** The script tab of a campaign page.  Returns a cleanup function. */
export function scriptTab(body, camp, { onSaved }) {
  let saved = camp.script || "";
  let rev = camp._rev;
  const ed = codeEditor(saved);
  const errBox = h("div", { id: "script-errors", "aria-live": "polite" });
  const state = h("span", { class: "muted", id: "script-state" }, "saved");
  const name = fileName(camp);

  function showErrors(kind, list) {
    const errs = lineErrors(list);
    ed.mark(errs);
    put(errBox, errs.length
      ? notice(kind === "ok" ? "ok" : "error", h("strong", null, kind === "save" ? "Not saved: the script does not validate" :
        "The script does not validate"),
      h("ul", { class: "errors" }, errs.map((e) => h("li", { dataset: { line: e.line ?? "" } },
        e.line ? h("button", { type: "button", class: "link", on: { click: () => ed.goto(e.line) } }, `line ${e.line}`) : "",
        e.line ? ": " : "", e.message))))
      : null);
  }

  async function validate() {
    put(errBox, h("span", { class: "muted" }, "validating…"));
    try {
      await post("/api/v1/rules/validate", { script: ed.value, name });
      ed.mark([]);
      put(errBox, notice("ok", "Valid: the loader accepts this script."));
      return true;
    } catch (e) {
      if (e instanceof ApiError && e.status === 422 && e.body && e.body.errors) showErrors("validate", e.body.errors);
      else put(errBox, notice("error", describe(e)));
      return false;
    }
  }

  async function save() {
    put(errBox, h("span", { class: "muted" }, "saving…"));
    try {
      const r = await api("PUT", "/api/v1/campaigns/" + seg(camp.id), { body: { script: ed.value }, ifMatch: rev });
      saved = r.data.script ?? ed.value;
      rev = r.data.rev;
      camp._rev = rev;
      ed.mark([]);
      dirty();
      put(errBox, notice("ok", `Saved as version ${r.data.version}` +
        (r.data.pending_version ? " (waiting for approval before it goes live)" : "")));
      if (onSaved) await onSaved();
    } catch (e) {
      if (e instanceof ApiError && e.detail && e.detail.errors) showErrors("save", e.detail.errors);
      else put(errBox, notice("error", describe(e)));
    }
  }

  function dirty() {
    const d = ed.value !== saved;
    state.textContent = d ? "edited, not saved" : "saved";
    state.className = d ? "dirty" : "muted";
  }
  ed.area.addEventListener("input", dirty);

  const toolbar = h("div", { class: "toolbar" },
    h("button", { type: "button", id: "btn-validate", on: { click: validate } }, "Validate"),
    h("button", { type: "button", class: "primary", id: "btn-save", on: { click: save } }, "Save"),
    h("button", { type: "button", id: "btn-revert", on: { click: () => {
      ed.value = saved;
      ed.mark([]);
      put(errBox);
      dirty();
    } } }, "Revert"),
    state);

  put(body, h("div", { class: "script-layout" },
    h("section", { class: "card editor-card" }, h("h2", null, "Script ", h("code", null, camp.file || "")),
      toolbar, ed.el, errBox),
    simulatePanel(camp, ed, name, showErrors), testsPanel(camp, ed, name)));
  return () => {};
}

// ---- campaign tests ---------------------------------------------------------

function testsPanel(camp, ed, name) {
  const src = h("textarea", { class: "code", id: "tests-editor", rows: 8, spellcheck: "false", wrap: "off",
    "aria-label": "Campaign tests (Lua)" });
  src.value = `local c = campaign(${JSON.stringify(camp.id)})\n\n` +
    `test("a customer I expect to be eligible", function()\n` +
    `  expect(c:eligible({ id = "c1" }, {})).to_be(true)\nend)\n`;
  const out = h("div", { id: "tests-result", "aria-live": "polite" });

  async function run() {
    put(out, h("span", { class: "muted" }, "running…"));
    try {
      const d = (await post("/api/v1/rules/test", { script: ed.value, name, tests: src.value })).data;
      const rows = (d.tests || []).map((t) => ({
        props: { class: t.ok ? null : "row-error", dataset: { ok: String(t.ok) } },
        cells: [t.name, t.ok ? "pass" : "FAIL", t.error || ""],
      }));
      put(out, notice(d.failed ? "error" : "ok", `${d.passed} passed, ${d.failed} failed (nothing stored)`),
        table(["test", "result", "failure (file:line: message)"], rows));
    } catch (e) {
      put(out, notice("error", describe(e)));
    }
  }

  return h("section", { class: "card tests-card" },
    h("h2", null, "Tests"),
    h("p", { class: "muted" }, "Campaign tests against the edited script: campaign(id), test(name, fn), expect(x).to_be(y) (docs/authoring.md)."),
    src,
    h("div", { class: "toolbar" }, h("button", { type: "button", id: "btn-run-tests", on: { click: run } }, "Run tests")),
    out);
}

// ---- simulate -------------------------------------------------------------

function valueCell(v) {
  return h("code", { class: "value" }, fmtJSON(v));
}

function profileView(id, p) {
  if (!p) {
    return h("div", { id: "sim-profile" }, notice("warn", `Unknown customer ${id}: decide sees an empty profile with only p.id.`));
  }
  const rows = Object.keys(p).sort().map((k) => [h("code", null, k), valueCell(p[k])]);
  return h("div", { id: "sim-profile" }, h("h3", null, "Customer ", h("code", null, id)), table(["attribute", "value"], rows));
}

function offersView(offers) {
  if (!offers.length) return h("p", { class: "muted", id: "sim-offers" }, "No offer for this customer.");
  return h("div", { id: "sim-offers" }, offers.map((o) => h("div", { class: "offer", dataset: { campaign: o.campaign_id } },
    h("div", null, h("strong", null, o.campaign_id), ` · variant ${o.variant} · score ${fmtNum(o.score)}`),
    h("dl", { class: "content" }, Object.entries(o.content || {}).flatMap(([k, v]) => [
      h("dt", null, k), h("dd", { dataset: { field: k } }, fmtJSON(v))])))));
}

function explainView(explain) {
  return h("div", { id: "sim-explain" }, h("h3", null, "Explain"), table(
    ["campaign", "eligible", "score", "selected", "reason / capped / error"],
    (explain || []).map((x) => ({
      props: { class: x.error ? "row-error" : null },
      cells: [x.campaign_id || x.channel || "", x.eligible === undefined ? "" : String(x.eligible),
        x.score === undefined ? "" : fmtNum(x.score), x.selected ? `yes (variant ${x.variant})` : "",
        [x.reason, x.capped ? "capped: " + x.capped : null, x.error].filter(Boolean).join(" · ")],
    }))));
}

function simulatePanel(camp, ed, name, showErrors) {
  const cust = h("input", { type: "text", id: "sim-customer", placeholder: "customer id", required: true,
    "aria-label": "Customer id" });
  const channel = h("select", { id: "sim-channel", "aria-label": "Channel" },
    (camp.channels || ["web"]).map((c) => h("option", { value: c }, c)));
  const placement = h("input", { type: "text", id: "sim-placement", placeholder: "placement (any)",
    "aria-label": "Placement" });
  const context = h("textarea", { id: "sim-context", rows: 3, spellcheck: "false", "aria-label": "Context (JSON object)" });
  context.value = "{}";
  const out = h("div", { id: "sim-result", "aria-live": "polite" });

  async function run(e) {
    e.preventDefault();
    const id = cust.value.trim();
    if (!id) return;
    let ctxObj;
    try {
      ctxObj = JSON.parse(context.value || "{}");
      if (!ctxObj || typeof ctxObj !== "object" || Array.isArray(ctxObj)) throw new Error("not an object");
    } catch (err) {
      put(out, notice("error", "Context must be a JSON object: " + err.message));
      return;
    }
    put(out, h("span", { class: "muted" }, "running…"));
    const req = { script: ed.value, name, customer_id: id, channel: channel.value, context: ctxObj };
    if (placement.value.trim()) req.placement = placement.value.trim();
    const [sim, prof] = await Promise.allSettled([post("/api/v1/rules/simulate", req),
      get("/api/v1/profiles/" + seg(id))]);
    if (sim.status === "rejected") {
      const err = sim.reason;
      if (err instanceof ApiError && err.detail && err.detail.errors) {
        showErrors("simulate", err.detail.errors);
        put(out, notice("error", "The edited script does not validate; see the errors under the editor."));
      } else {
        put(out, notice("error", describe(err)));
      }
      return;
    }
    const d = sim.value.data;
    const p = prof.status === "fulfilled" ? prof.value : null;
    if (prof.status === "rejected" && !(prof.reason instanceof ApiError && prof.reason.status === 404)) {
      put(out, notice("error", "Profile: " + describe(prof.reason)));
      return;
    }
    put(out,
      notice("ok", `Simulated ${d.campaign_id} for ${id} on ${channel.value}: ${d.offers.length} offer(s); dry run, nothing stored.`),
      profileView(id, p), h("h3", null, "Offers"), offersView(d.offers), explainView(d.explain));
  }

  return h("section", { class: "card sim-card" },
    h("h2", null, "Simulate"),
    h("p", { class: "muted" }, "Runs the edited script (not the saved one) through decide for one customer: a dry run with explain. Content is shown as text."),
    h("form", { class: "sim-form", on: { submit: run } },
      h("label", null, "Customer", cust),
      h("label", null, "Channel", channel),
      h("label", null, "Placement", placement),
      h("label", { class: "wide" }, "Context (JSON)", context),
      h("button", { type: "submit", class: "primary", id: "btn-simulate" }, "Simulate")),
    out);
}
