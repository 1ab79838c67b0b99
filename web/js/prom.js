// prom.js — the Prometheus text format (as GET /metrics writes it) read
// in the browser: one sample per series line, labels unescaped.  Enough
// for the dashboard's live numbers; the full format's timestamps and
// exemplars are not used by promod.

const LINE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)(\s+\S+)?$/;

function parseLabels(text) {
  const labels = {};
  let i = 0;
  while (i < text.length) {
    const eq = text.indexOf("=", i);
    if (eq < 0) break;
    const name = text.slice(i, eq).trim().replace(/^,/, "").trim();
    let j = eq + 1;
    if (text[j] !== '"') break;
    j++;
    let v = "";
    while (j < text.length && text[j] !== '"') {
      if (text[j] === "\\" && j + 1 < text.length) {
        const n = text[j + 1];
        v += n === "n" ? "\n" : n;
        j += 2;
      } else {
        v += text[j++];
      }
    }
    labels[name] = v;
    i = j + 1;
    while (i < text.length && (text[i] === "," || text[i] === " ")) i++;
  }
  return labels;
}

/** Parse exposition text into [{name, labels, value}]. */
export function parse(text) {
  const out = [];
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (!line || line.startsWith("#")) continue;
    const m = LINE.exec(line);
    if (!m) continue;
    const v = m[4] === "+Inf" ? Infinity : m[4] === "-Inf" ? -Infinity : Number(m[4]);
    out.push({ name: m[1], labels: m[3] ? parseLabels(m[3]) : {}, value: v });
  }
  return out;
}

/** Sum of a metric's samples whose labels match every entry of `where`. */
export function sum(samples, name, where) {
  let t = 0;
  let seen = false;
  for (const x of samples) {
    if (x.name !== name) continue;
    let ok = true;
    for (const [k, v] of Object.entries(where || {})) if (x.labels[k] !== v) ok = false;
    if (ok) {
      t += x.value;
      seen = true;
    }
  }
  return seen ? t : null;
}
