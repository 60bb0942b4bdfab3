// Create an adapter (or the next version of one) from an upload or pasted rows, with label
// descriptions and unlabeled texts; a job (lora, auto) is followed live to its result.
import { api, enc, followJob } from "./api.js";
import { h, errorBox, estimate, fmtEstimate } from "./dom.js";
import { fileText, parseDescriptions, parseExamples, parseTexts } from "./parse.js";

export async function createPage(view, ctx) {
  const name = h("input", { id: "c-name", required: true, pattern: "[A-Za-z0-9_\\-]{1,64}", placeholder: "support-topics" });
  const kind = h("select", { id: "c-kind" },
    h("option", { value: "head" }, "head: a classifier on the frozen embeddings (instant)"),
    h("option", { value: "auto" }, "auto: a head now, a stronger LoRA version if it is better"),
    h("option", { value: "lora" }, "lora: tune the backbone (a job)"));
  const file = h("input", { id: "c-file", type: "file", accept: ".csv,.jsonl,.json,.txt,text/csv,application/json" });
  const rows = h("textarea", { id: "c-rows", rows: 8, placeholder: 'text,label\n"I was charged twice",billing\nThe app crashes,bug\n\nor JSON Lines: {"text": "...", "label": "..."}' });
  const descriptions = h("textarea", { id: "c-descriptions", rows: 3, placeholder: "billing: questions about charges, invoices and refunds" });
  const unlabeled = h("textarea", { id: "c-unlabeled", rows: 3, placeholder: "One text per line" });
  const options = h("input", { id: "c-options", placeholder: '{"epochs": 2}  (JSON; empty: the defaults)', spellcheck: "false" });
  const submit = h("button", { type: "submit", id: "c-submit" }, "Create");
  const out = h("div", { id: "c-out", "aria-live": "polite" });

  const go = async (ev) => {
    ev.preventDefault();
    out.replaceChildren();
    submit.disabled = true;
    try {
      const body = { name: name.value.trim(), kind: kind.value,
                     examples: [...parseExamples(await fileText(file)), ...parseExamples(rows.value)] };
      const d = parseDescriptions(descriptions.value);
      if (Object.keys(d).length) body.label_descriptions = d;
      const u = parseTexts(unlabeled.value);
      if (u.length) body.unlabeled = u;
      if (options.value.trim()) body.options = parseOptions(options.value);
      out.append(h("p", {}, `Sending ${body.examples.length} examples…`));
      const { status, data } = await api("POST", "/adapters", body);
      out.replaceChildren(recordSummary(status, data));
      if (data.job) await showJob(out, ctx, data.job);
    } catch (e) {
      out.append(errorBox(e));
    } finally {
      submit.disabled = false;
    }
  };
  view.append(h("h1", {}, "Create an adapter"),
    h("p", {}, "A new name creates version 1; an existing name publishes its next version."),
    h("form", { id: "create", onsubmit: go },
      h("label", {}, "Name", name), h("label", {}, "Kind", kind),
      h("label", {}, "Labeled examples: a CSV (text,label) or JSON Lines file", file),
      h("label", {}, "… or pasted rows", rows),
      h("label", {}, "Label descriptions, one `label: what it means` per line (alone: zero-shot)", descriptions),
      h("label", {}, "Unlabeled texts from the same source (lora, auto)", unlabeled),
      h("label", {}, "Options (see the API document: e.g. epochs for lora and auto)", options),
      submit),
    out);
}

function parseOptions(src) {
  let o;
  try { o = JSON.parse(src); } catch (e) { throw new Error(`Options: not JSON (${e.message})`); }
  if (!o || typeof o !== "object" || Array.isArray(o)) throw new Error('Options: expected a JSON object such as {"epochs": 2}');
  return o;
}

function recordSummary(status, rec) {
  if (rec.status === "training") {
    return h("p", { class: "ok" }, `${rec.name}: training as a job (${status})…`);
  }
  return h("p", { class: "ok" }, `Created `, h("a", { href: `#/adapters/${enc(rec.name)}`, id: "c-ref" }, rec.ref),
    ` (${rec.kind}); quality estimate ${fmtEstimate(estimate(rec.metrics))}`,
    rec.job ? "; a stronger version trains in the background:" : ".");
}

/** A job's live progress, then its outcome: published, promoted or kept (and why), failed. */
export async function showJob(out, ctx, job) {
  const bar = h("progress", { id: "job-progress", max: 1, value: 0 });
  const state = h("span", { id: "job-state" });
  const cancel = h("button", { type: "button", id: "job-cancel", onclick: async () => {
    try { await api("DELETE", `/jobs/${enc(job.id)}`); } catch (e) { out.append(errorBox(e)); }
  } }, "Cancel");
  const result = h("div", { id: "job-result" });
  out.append(h("div", { class: "job", "data-job": job.id }, h("p", {}, `Job ${job.id} (${job.kind}) `, cancel),
    h("p", {}, bar, " ", state), result));
  const final = await followJob(job.id, (j) => {
    bar.max = Math.max(j.progress.total, 1);
    bar.value = j.progress.step;
    state.textContent = `${j.status} ${j.progress.step}/${j.progress.total}` +
      (typeof j.loss === "number" ? ` · loss ${j.loss.toFixed(3)}` : "");
  }, () => ctx.alive);
  cancel.hidden = true;
  result.replaceChildren(jobOutcome(final));
  return final;
}

export function jobOutcome(j) {
  if (j.status === "failed") return errorBox(j.error || { message: "the job failed without a message" });
  if (j.status === "cancelled") return h("p", { class: "warn" }, "Cancelled: nothing was published.");
  if (j.status !== "succeeded") return h("p", {}, j.status);
  const r = j.result || {};
  const ref = h("a", { href: `#/adapters/${enc(j.adapter)}` }, r.adapter || j.adapter);
  if (r.decision) {
    return h("p", { class: r.decision === "promoted" ? "ok" : "warn", id: "job-decision" },
      r.decision === "promoted" ? "Promoted: " : "Kept: ", ref, ` — ${r.reason}`);
  }
  return h("p", { class: "ok", id: "job-decision" }, "Published ", ref,
    `; quality estimate ${fmtEstimate(estimate(r.metrics))}`);
}
