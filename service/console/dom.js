// DOM helpers. Texts from the API are data, never markup: everything is built with
// createElement and text nodes; no string is ever parsed as HTML, here or anywhere in the console.

export function h(tag, attrs, ...children) {
  return build(document.createElement(tag), attrs, children);
}

const SVG = "http://www.w3.org/2000/svg";
export function s(tag, attrs, ...children) {
  return build(document.createElementNS(SVG, tag), attrs, children);
}

function build(el, attrs, children) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "value" || k === "checked" || k === "disabled") el[k] = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === undefined || c === null || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** The message of an error, in an alert box: what the API said to fix, never a stack. */
export function errorBox(err) {
  return h("p", { class: "error", role: "alert" }, messageOf(err));
}

export function messageOf(err) {
  if (err && typeof err.message === "string" && err.message) return err.message;
  return "something went wrong and no message came with it";
}

export function fmtBytes(n) {
  if (typeof n !== "number") return "";
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

/** An RFC 3339 time as `YYYY-MM-DD HH:MM:SS` (UTC, as the API writes it). */
export function fmtTime(s) {
  return typeof s === "string" ? s.replace("T", " ").slice(0, 19) : "";
}

export function fmtScore(x) {
  return typeof x === "number" ? x.toFixed(3) : "";
}

// The adapter's honest quality estimate (adapters/storage/updates.py: ESTIMATE_KEYS).
const ESTIMATE_KEYS = ["estimate", "cv_accuracy", "cv_f1_micro", "cv_accuracy_head_only"];
export function estimate(metrics) {
  for (const name of ESTIMATE_KEYS) {
    const v = metrics && metrics[name];
    if (typeof v === "number") return { name, value: v };
  }
  return null;
}

export function fmtEstimate(e) {
  return e ? `${e.value.toFixed(3)} (${e.name})` : "none";
}

/** A small line plot of [{x, y}] (y in 0..1), drawn with SVG DOM nodes. */
export function plot(points, { width = 360, height = 140, label = "quality estimate" } = {}) {
  const pad = 28;
  const xs = points.map((p) => p.x);
  const x0 = Math.min(...xs), x1 = Math.max(...xs);
  const X = (x) => pad + (x1 === x0 ? (width - 2 * pad) / 2 : ((x - x0) / (x1 - x0)) * (width - 2 * pad));
  const Y = (y) => height - pad - y * (height - 2 * pad);
  const svg = s("svg", { class: "plot", viewBox: `0 0 ${width} ${height}`, width, height,
                          role: "img", "aria-label": `${label} by version` });
  svg.append(s("title", {}, `${label} by version`));
  for (const t of [0, 0.5, 1]) {
    svg.append(s("line", { x1: pad, x2: width - pad, y1: Y(t), y2: Y(t), class: "grid" }),
               s("text", { x: 2, y: Y(t) + 4, class: "tick" }, t.toFixed(1)));
  }
  const known = points.filter((p) => typeof p.y === "number");
  if (!known.length) svg.append(s("text", { x: width / 2 - 80, y: height / 2 - 8, class: "none" }, "no version has an estimate yet"));
  if (known.length > 1) {
    svg.append(s("polyline", { class: "line", points: known.map((p) => `${X(p.x)},${Y(p.y)}`).join(" ") }));
  }
  for (const p of points) {
    svg.append(s("text", { x: X(p.x) - 4, y: height - 8, class: "tick" }, `v${p.x}`));
    if (typeof p.y === "number") {
      svg.append(s("circle", { cx: X(p.x), cy: Y(p.y), r: 4, class: "dot" },
                   s("title", {}, `v${p.x}: ${p.y.toFixed(3)}`)));
    }
  }
  return svg;
}
