// The labeling loop: a pool of texts -> `suggest` picks k -> each shown with the adapter's
// current guess -> a label by click or key (1-9 a label, s skip, n a new label, arrows or
// Backspace to move, Enter to submit) -> POST /examples publishes the next version, shown
// with its quality estimate before and after.
import { api, enc } from "./api.js";
import { h, errorBox, estimate, fmtEstimate, fmtScore } from "./dom.js";
import { fileText, parseTexts } from "./parse.js";
import { showJob } from "./create.js";

export async function labelPage(view, ctx, name) {
  const { data: rec } = await api("GET", `/adapters/${enc(name)}`);
  const labels = [...rec.labels];
  let items = [], cursor = 0;

  const pool = h("textarea", { id: "l-pool", rows: 6, placeholder: "Texts to choose from, one per line" });
  const file = h("input", { id: "l-file", type: "file", accept: ".txt,.csv,.jsonl,.json,text/plain,text/csv" });
  const k = h("input", { id: "l-k", type: "number", min: 1, value: "10" });
  const suggestBtn = h("button", { type: "submit", id: "l-suggest" }, "Suggest");
  const status = h("div", { id: "l-status", "aria-live": "polite" });
  const keysBar = h("div", { id: "l-labels", class: "labelbar" });
  const list = h("ol", { id: "l-items" });
  const newLabel = h("input", { id: "l-new", placeholder: "new label, Enter to use it", hidden: true });
  const submitBtn = h("button", { type: "button", id: "l-submit", disabled: true }, "Submit labels (Enter)");
  const result = h("div", { id: "l-result", "aria-live": "polite" });

  const resolved = (it) => it.label !== null || it.skipped;
  const labeled = () => items.filter((it) => it.label !== null);
  const advance = () => {
    const next = items.findIndex((it, i) => i > cursor && !resolved(it));
    const any = items.findIndex((it) => !resolved(it));
    cursor = next >= 0 ? next : any >= 0 ? any : cursor;
  };
  const assign = (label) => {
    if (!items.length) return;
    Object.assign(items[cursor], { label, skipped: false });
    advance();
    draw();
  };

  function draw() {
    keysBar.replaceChildren(
      ...labels.map((l, i) => h("button", { type: "button", class: "key", "data-label": l, onclick: () => assign(l) },
        i < 9 ? h("kbd", {}, String(i + 1)) : null, ` ${l}`)),
      h("button", { type: "button", class: "key", onclick: skip }, h("kbd", {}, "s"), " skip"),
      h("button", { type: "button", class: "key", onclick: openNew }, h("kbd", {}, "n"), " new label"),
      newLabel);
    list.replaceChildren(...items.map((it, i) => h("li", {
      class: `item${i === cursor ? " current" : ""}${it.skipped ? " skipped" : ""}`,
      "aria-current": i === cursor ? "true" : null, onclick: () => { cursor = i; draw(); } },
      h("div", { class: "text" }, it.text),
      h("div", { class: "guess" }, "guess: ", h("span", { class: "label" }, it.guess), ` (${fmtScore(it.score)})`),
      h("div", { class: "chosen" }, it.skipped ? "skipped" : it.label !== null ? h("span", { class: "chip" }, it.label) : "—"))));
    const n = labeled().length;
    submitBtn.disabled = n === 0;
    submitBtn.textContent = `Submit ${n} label${n === 1 ? "" : "s"} (Enter)`;
    status.textContent = items.length ? `${items.filter(resolved).length} of ${items.length} done` : "";
    const cur = list.children[cursor];
    if (cur && cur.scrollIntoView) cur.scrollIntoView({ block: "nearest" });
  }
  function skip() { if (items.length) { Object.assign(items[cursor], { label: null, skipped: true }); advance(); draw(); } }
  function openNew() { if (items.length) { newLabel.hidden = false; newLabel.value = ""; newLabel.focus(); } }
  newLabel.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter") {
      ev.preventDefault(); ev.stopPropagation();
      const l = newLabel.value.trim();
      newLabel.hidden = true;
      if (!l) return;
      if (!labels.includes(l)) labels.push(l);
      assign(l);
    } else if (ev.key === "Escape") {
      newLabel.hidden = true;
    }
  });

  const onKey = (ev) => {
    const t = ev.target;
    if (ev.ctrlKey || ev.metaKey || ev.altKey || !items.length) return;
    if (t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.tagName === "SELECT")) return;
    const key = ev.key;
    if (/^[1-9]$/.test(key) && Number(key) <= labels.length) assign(labels[Number(key) - 1]);
    else if (key === "s") skip();
    else if (key === "n") openNew();
    else if (key === "ArrowDown" || key === "j") { cursor = Math.min(cursor + 1, items.length - 1); draw(); }
    else if (key === "ArrowUp" || key === "k" || key === "Backspace") { cursor = Math.max(cursor - 1, 0); draw(); }
    else if (key === "Enter" && !submitBtn.disabled) submit();
    else return;
    ev.preventDefault();
  };
  document.addEventListener("keydown", onKey);
  ctx.onLeave(() => document.removeEventListener("keydown", onKey));

  async function suggest(ev) {
    ev.preventDefault();
    result.replaceChildren();
    try {
      const texts = [...new Set([...parseTexts(await fileText(file)), ...parseTexts(pool.value)])];
      const { data } = await api("POST", `/adapters/${enc(name)}/suggest`, { texts, k: Number(k.value) || 10 });
      items = data.suggestions.map((x) => ({ text: x.text, guess: x.label, score: x.score, label: null, skipped: false }));
      cursor = 0;
      draw();
      if (document.activeElement && document.activeElement.blur) document.activeElement.blur();
      status.textContent = `${data.adapter} suggests these ${items.length}: label each with a key or a click`;
    } catch (e) {
      result.replaceChildren(errorBox(e));
    }
  }

  async function submit() {
    const done = labeled();
    if (!done.length) return;
    submitBtn.disabled = true;
    result.replaceChildren(h("p", {}, `Publishing ${done.length} examples…`));
    try {
      const examples = done.map((it) => (rec.multi_label ? { text: it.text, labels: [it.label] } : { text: it.text, label: it.label }));
      let { data: next } = await api("POST", `/adapters/${enc(name)}/examples`, { examples });
      const changes = next.changes;
      if (next.status === "training") {
        const job = await showJob(result, ctx, next.job);
        if (job.status !== "succeeded") return;
        next = (await api("GET", `/adapters/${enc(name)}`)).data;
      }
      const before = (changes || next.changes || {}).metric_before;
      const after = estimate(next.metrics);
      const taken = new Set(done.map((it) => it.text));
      pool.value = pool.value.split(/\r?\n/).filter((l) => !taken.has(l)).join("\n");
      items = []; draw();
      result.replaceChildren(h("div", { class: "ok", id: "l-published" },
        h("p", {}, "Published ", h("a", { href: `#/adapters/${enc(name)}`, id: "l-ref" }, next.ref),
          ` with ${done.length} new examples.`),
        h("p", {}, "Quality estimate before: ", h("strong", { id: "l-before" }, fmtEstimate(before)),
          " → after: ", h("strong", { id: "l-after" }, fmtEstimate(after))),
        h("p", {}, "Suggest again to continue with the rest of the pool.")));
    } catch (e) {
      result.replaceChildren(errorBox(e));
      submitBtn.disabled = false;
    }
  }
  submitBtn.addEventListener("click", submit);

  view.append(h("h1", {}, `Label for ${name} `, h("small", {}, rec.ref)),
    h("form", { id: "l-form", onsubmit: suggest },
      h("label", {}, "Pool of texts", pool), h("label", {}, "or a file (one per line, CSV or JSON Lines with a text column)", file),
      h("label", {}, "How many (k) ", k), " ", suggestBtn),
    h("p", { class: "hint" }, "Keys: ", h("kbd", {}, "1"), "–", h("kbd", {}, "9"), " label · ", h("kbd", {}, "s"), " skip · ",
      h("kbd", {}, "n"), " new label · ", h("kbd", {}, "↑"), h("kbd", {}, "↓"), " move · ", h("kbd", {}, "Enter"), " submit"),
    status, keysBar, list, submitBtn, result);
  draw();
}
