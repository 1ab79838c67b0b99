// dom.js — the only way the console builds its pages.
//
// Elements come from tag names, text from strings turned into text nodes.
// No HTML string is ever parsed (no innerHTML, insertAdjacentHTML,
// document.write, eval), so campaign content written by marketers and
// profile values written by customers are always shown as text, whatever
// they contain.  Event handlers are functions passed in `on`, never
// attributes; links may only point inside the console ("#/...").

const SVG_NS = "http://www.w3.org/2000/svg";

function append(el, child) {
  if (child === null || child === undefined || child === false) return;
  if (Array.isArray(child)) {
    for (const c of child) append(el, c);
  } else if (child instanceof Node) {
    el.appendChild(child);
  } else {
    el.appendChild(document.createTextNode(String(child)));
  }
}

function setProps(el, props) {
  for (const [k, v] of Object.entries(props || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "on") {
      for (const [ev, fn] of Object.entries(v)) el.addEventListener(ev, fn);
    } else if (k === "dataset") {
      for (const [dk, dv] of Object.entries(v)) {
        if (dv !== null && dv !== undefined) el.dataset[dk] = String(dv);
      }
    } else if (k === "class") {
      el.setAttribute("class", Array.isArray(v) ? v.filter(Boolean).join(" ") : String(v));
    } else if (k === "value" || k === "checked" || k === "selected" || k === "disabled") {
      el[k] = v;
    } else if (k === "href") {
      const s = String(v);
      if (!s.startsWith("#")) throw new Error("console links stay inside the console: " + s);
      el.setAttribute("href", s);
    } else if (/^on/i.test(k) || k === "style" || k === "src" || k === "srcdoc") {
      throw new Error("refused attribute " + k);
    } else {
      el.setAttribute(k, v === true ? "" : String(v));
    }
  }
}

/** h("div", {class: "x", on: {click: fn}}, "text", child, [more]) */
export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  setProps(el, props);
  append(el, children);
  return el;
}

/** SVG element with attributes (numbers and strings only) and children. */
export function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined) continue;
    if (/^on/i.test(k) || k === "style" || k === "href" || k === "xlink:href") {
      throw new Error("refused attribute " + k);
    }
    if (k === "class") el.setAttribute("class", String(v));
    else el.setAttribute(k, String(v));
  }
  append(el, children);
  return el;
}

/** Replace the children of `el`. */
export function put(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

// ---- formatting --------------------------------------------------------

const intFmt = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });
const numFmt = new Intl.NumberFormat("en-US", { maximumFractionDigits: 2 });
const moneyFmt = new Intl.NumberFormat("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });

export function fmtInt(v) {
  return v === null || v === undefined || Number.isNaN(v) ? "—" : intFmt.format(v);
}
export function fmtNum(v) {
  return v === null || v === undefined || Number.isNaN(v) ? "—" : numFmt.format(v);
}
export function fmtMoney(v) {
  return v === null || v === undefined || Number.isNaN(v) ? "—" : moneyFmt.format(v);
}
export function fmtRate(v) {
  if (v === null || v === undefined || Number.isNaN(v)) return "—";
  return v >= 100 ? intFmt.format(v) : v >= 10 ? v.toFixed(1) : v.toFixed(2);
}
export function fmtPct(v) {
  return v === null || v === undefined || Number.isNaN(v) ? "—" : (v * 100).toFixed(2) + "%";
}
/** {value, low, high} as "1.23% (0.80–1.90%)" */
export function fmtCI(r) {
  if (!r || r.value === null || r.value === undefined) return "—";
  return `${fmtPct(r.value)} (${fmtPct(r.low)}–${fmtPct(r.high)})`;
}
export function fmtTime(v) {
  if (!v) return "—";
  const d = typeof v === "number" ? new Date(v * 1000) : new Date(v);
  if (Number.isNaN(d.getTime())) return String(v);
  return d.toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
}
/** A JSON value as compact text (for audit before/after, profile values). */
export function fmtJSON(v) {
  if (v === undefined) return "";
  if (typeof v === "string") return v;
  return JSON.stringify(v);
}

// ---- small shared widgets ----------------------------------------------

/** A status badge: class by status name, text as given. */
export function badge(status) {
  return h("span", { class: ["badge", "st-" + String(status).replace(/[^a-z_]/g, "")] }, String(status));
}

/** A KPI tile; `key` names it for tests (data-kpi), `raw` is the exact number. */
export function tile(key, label, value, raw, sub) {
  return h("div", { class: "tile", dataset: { kpi: key, value: raw } },
    h("div", { class: "tile-label" }, label),
    h("div", { class: "tile-value" }, value),
    h("div", { class: "tile-sub" }, sub || ""));
}

/** A table from column labels and rows of cells (strings or nodes). */
export function table(cols, rows, props) {
  return h("table", Object.assign({ class: "grid" }, props || {}),
    h("thead", null, h("tr", null, cols.map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", null, rows.length
      ? rows.map((r) => h("tr", r.props || null, (r.cells || r).map((c) => h("td", null, c))))
      : h("tr", null, h("td", { colspan: cols.length, class: "muted" }, "nothing yet"))));
}

/** A message line for results and errors (role=status for screen readers). */
export function notice(kind, ...children) {
  return h("div", { class: ["notice", kind], role: kind === "error" ? "alert" : "status" }, children);
}
