// The adapters list and one adapter's page: versions, what changed in each, the quality
// estimate across versions, and a box to try texts (or images) and see the scores.
import { api, enc } from "./api.js";
import { h, errorBox, estimate, fmtBytes, fmtEstimate, fmtScore, fmtTime, plot } from "./dom.js";
import { fileBase64 } from "./parse.js";

const MAX_VERSIONS = 30; // versions fetched for the table and the plot (the latest ones)

export async function adaptersPage(view) {
  view.append(h("h1", {}, "Adapters"));
  const { data } = await api("GET", "/adapters");
  if (!data.adapters.length && !data.training.length) {
    view.append(h("p", { class: "empty" }, "No adapters yet. ", h("a", { href: "#/create" }, "Create one"), "."));
    return;
  }
  view.append(h("table", { id: "adapters" },
    h("thead", {}, h("tr", {}, ["Name", "Kind", "Labels", "Latest version", "Quality estimate", "Size"].map((c) => h("th", {}, c)))),
    h("tbody", {}, data.adapters.map((a) => h("tr", { "data-name": a.name },
      h("td", {}, h("a", { href: `#/adapters/${enc(a.name)}` }, a.name)),
      h("td", {}, a.kind),
      h("td", { class: "labels" }, a.labels.map((l) => h("span", { class: "chip" }, l))),
      h("td", {}, String(a.version)),
      h("td", {}, fmtEstimate(estimate(a.metrics))),
      h("td", {}, fmtBytes(a.size_bytes)))))));
  if (data.training.length) {
    view.append(h("h2", {}, "Training"), h("ul", {}, data.training.map((t) => h("li", {},
      `${t.name} (${t.kind}): job ${t.job.status} ${t.job.progress.step}/${t.job.progress.total} `,
      h("a", { href: "#/jobs" }, "jobs")))));
  }
}

function describeChanges(c) {
  if (!c) return "first version";
  const parts = [`from v${c.from_version}`];
  if (c.examples_added) parts.push(`+${c.examples_added} examples`);
  if (c.new_labels && c.new_labels.length) parts.push(`new labels: ${c.new_labels.join(", ")}`);
  if (c.label_descriptions_added && c.label_descriptions_added.length) parts.push(`descriptions added: ${c.label_descriptions_added.join(", ")}`);
  if (c.label_descriptions_changed && c.label_descriptions_changed.length) parts.push(`descriptions changed: ${c.label_descriptions_changed.join(", ")}`);
  if (c.unlabeled_added) parts.push(`+${c.unlabeled_added} unlabeled`);
  if (c.metric_before || c.metric_after) {
    const v = (m) => (m ? m.value.toFixed(3) : "none");
    parts.push(`${(c.metric_after || c.metric_before).name}: ${v(c.metric_before)} → ${v(c.metric_after)}`);
  }
  return parts.join("; ");
}

export async function adapterPage(view, ctx, name) {
  const { data: latest } = await api("GET", `/adapters/${enc(name)}`);
  const versions = (latest.versions || [latest.version]).slice(-MAX_VERSIONS);
  const records = await Promise.all(versions.map((v) =>
    v === latest.version ? latest : api("GET", `/adapters/${enc(`${name}@${v}`)}`).then((r) => r.data, () => null)));
  view.append(
    h("h1", {}, name, " ", h("small", {}, `${latest.ref} · ${latest.kind}`)),
    h("p", { class: "actions" }, h("a", { class: "button", href: `#/label/${enc(name)}`, id: "go-label" }, "Label more texts")),
    h("p", {}, "Labels: ", latest.labels.map((l) => h("span", { class: "chip" }, l))),
    latest.warnings.length ? h("ul", { class: "warnings" }, latest.warnings.map((w) => h("li", {}, w))) : null,
    h("h2", {}, "Quality estimate by version"),
    plot(records.filter(Boolean).map((r) => ({ x: r.version, y: estimate(r.metrics)?.value }))),
    h("h2", {}, "Versions"),
    h("table", { id: "versions" },
      h("thead", {}, h("tr", {}, ["Version", "Kind", "Created", "Quality estimate", "Size", "Changes"].map((c) => h("th", {}, c)))),
      h("tbody", {}, records.map((r, i) => r ? h("tr", { "data-version": r.version },
        h("td", {}, String(r.version)), h("td", {}, r.kind), h("td", {}, fmtTime(r.created_at)),
        h("td", {}, fmtEstimate(estimate(r.metrics))), h("td", {}, fmtBytes(r.size_bytes)),
        h("td", { class: "changes" }, describeChanges(r.changes)))
        : h("tr", {}, h("td", {}, String(versions[i])), h("td", { colspan: 5 }, "(could not be read)"))))),
    tryBox(name, versions));
}

function tryBox(name, versions) {
  const texts = h("textarea", { id: "try-texts", rows: 4, placeholder: "One text per line" });
  const images = h("input", { id: "try-images", type: "file", accept: "image/png,image/jpeg", multiple: true });
  const version = h("select", { id: "try-version" },
    h("option", { value: name }, "latest"), [...versions].reverse().map((v) => h("option", { value: `${name}@${v}` }, `v${v}`)));
  const out = h("div", { id: "try-out", "aria-live": "polite" });
  const run = async (ev) => {
    ev.preventDefault();
    out.replaceChildren(h("p", {}, "Scoring…"));
    try {
      const files = [...images.files];
      const lines = texts.value.split(/\r?\n/).filter((l) => l.trim());
      const inputs = files.length ? await Promise.all(files.map(async (f) => ({ image: await fileBase64(f) }))) : lines;
      const shown = files.length ? files.map((f) => f.name) : lines;
      const { data } = await api("POST", "/predict", { adapter: version.value, inputs });
      out.replaceChildren(h("p", {}, `Answered by ${data.adapter}`), h("table", { id: "scores" },
        h("thead", {}, h("tr", {}, ["Input", "Label", "Score", "All scores"].map((c) => h("th", {}, c)))),
        h("tbody", {}, data.predictions.map((p, i) => h("tr", {},
          h("td", { class: "text" }, shown[i]), h("td", { class: "label" }, (p.labels || [p.label]).join(", ")),
          h("td", {}, fmtScore(p.score)),
          h("td", {}, Object.entries(p.scores).sort((a, b) => b[1] - a[1]).map(([l, v]) =>
            h("div", { class: "bar" }, h("meter", { min: 0, max: 1, value: v }), ` ${l} ${fmtScore(v)}`))))))));
    } catch (e) {
      out.replaceChildren(errorBox(e));
    }
  };
  return h("section", { id: "try" }, h("h2", {}, "Try it"),
    h("form", { onsubmit: run },
      h("label", {}, "Texts", texts),
      h("label", {}, "or images (on an image deployment)", images),
      h("label", {}, "Version ", version), " ",
      h("button", { type: "submit", id: "try-run" }, "Score")),
    out);
}
