// Rows from what people have at hand: CSV (RFC 4180 quoting; a `text,label` header or the
// first two columns), JSON Lines ({"text", "label"} or {"text", "labels"}), or a JSON array.
// A malformed row is an Error naming its line, shown to the user as is.

export function parseCsv(src) {
  const rows = [];
  let row = [], field = "", quoted = false, i = 0;
  while (i < src.length) {
    const c = src[i];
    if (quoted) {
      if (c === '"' && src[i + 1] === '"') { field += '"'; i += 2; continue; }
      if (c === '"') { quoted = false; i++; continue; }
      field += c; i++; continue;
    }
    if (c === '"' && field === "") { quoted = true; i++; continue; }
    if (c === ",") { row.push(field); field = ""; i++; continue; }
    if (c === "\n" || c === "\r") {
      row.push(field); rows.push(row); row = []; field = "";
      i += c === "\r" && src[i + 1] === "\n" ? 2 : 1; continue;
    }
    field += c; i++;
  }
  if (quoted) throw new Error("CSV: a quoted field is never closed; check the quotes");
  if (field !== "" || row.length) { row.push(field); rows.push(row); }
  return rows.filter((r) => r.some((f) => f.trim() !== ""));
}

function jsonRows(src) {
  const t = src.trim();
  if (t.startsWith("[")) {
    try { return JSON.parse(t); } catch (e) { throw new Error(`JSON: ${e.message}`); }
  }
  return t.split(/\r?\n/).map((line, n) => [line.trim(), n + 1]).filter(([l]) => l).map(([l, n]) => {
    try { return JSON.parse(l); } catch (e) { throw new Error(`JSON Lines, line ${n}: not a JSON object (${e.message})`); }
  });
}

const isJson = (src) => /^\s*[[{]/.test(src);

/** Labeled examples: [{text, label}] or [{text, labels}]. */
export function parseExamples(src) {
  if (!src.trim()) return [];
  if (isJson(src)) {
    return jsonRows(src).map((o, n) => {
      if (!o || typeof o !== "object" || typeof o.text !== "string") {
        throw new Error(`row ${n + 1}: expected {"text": ..., "label": ...}`);
      }
      const ex = { text: o.text };
      if (Array.isArray(o.labels)) ex.labels = o.labels.map(String);
      else if (o.label !== undefined && o.label !== null) ex.label = String(o.label);
      else throw new Error(`row ${n + 1}: no "label" (or "labels")`);
      return ex;
    });
  }
  let rows = parseCsv(src);
  let ti = 0, li = 1;
  const head = rows[0].map((f) => f.trim().toLowerCase());
  if (head.includes("text") && head.includes("label")) {
    ti = head.indexOf("text"); li = head.indexOf("label"); rows = rows.slice(1);
  }
  return rows.map((r, n) => {
    if (r.length <= Math.max(ti, li) || !r[li].trim()) {
      throw new Error(`CSV row ${n + 1}: expected a text and a label (text,label)`);
    }
    return { text: r[ti], label: r[li].trim() };
  });
}

/** Unlabeled texts: one per line, or the `text` column of CSV / JSON Lines. */
export function parseTexts(src) {
  if (!src.trim()) return [];
  if (isJson(src)) {
    return jsonRows(src).map((o) => (typeof o === "string" ? o : o && o.text)).filter((t) => typeof t === "string" && t.trim());
  }
  const lines = src.split(/\r?\n/);
  const head = lines[0].split(",").map((f) => f.trim().toLowerCase());
  if (head.includes("text") && lines.length > 1) {
    const i = head.indexOf("text");
    return parseCsv(src).slice(1).map((r) => r[i]).filter((t) => t && t.trim());
  }
  return lines.filter((l) => l.trim());
}

/** `label: what it means` per line -> {label: sentence}. */
export function parseDescriptions(src) {
  const out = {};
  src.split(/\r?\n/).forEach((line, n) => {
    if (!line.trim()) return;
    const at = line.indexOf(":");
    if (at <= 0) throw new Error(`label descriptions, line ${n + 1}: expected "label: what it means"`);
    out[line.slice(0, at).trim()] = line.slice(at + 1).trim();
  });
  return out;
}

/** The text of a chosen file (an <input type=file>), or "" when none is chosen. */
export async function fileText(input) {
  const f = input.files && input.files[0];
  return f ? f.text() : "";
}

/** A chosen image file as base64 (no data: prefix), for {"image": ...} items. */
export function fileBase64(file) {
  return new Promise((resolve, reject) => {
    const r = new FileReader();
    r.onload = () => resolve(String(r.result).replace(/^data:[^,]*,/, ""));
    r.onerror = () => reject(new Error(`cannot read ${file.name}`));
    r.readAsDataURL(file);
  });
}
