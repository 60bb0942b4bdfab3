// The tenant's jobs with state and progress; cancel. GET /v1/jobs lists them where the
// service has that route; otherwise (an older service answers 404/405) the page shows the
// jobs this tab started (kept in sessionStorage), each read with GET /v1/jobs/{id}.
import { api, enc, knownJobs } from "./api.js";
import { h, errorBox, fmtTime } from "./dom.js";
import { jobOutcome } from "./create.js";

const LIMIT = 100; // one page of GET /v1/jobs ({"jobs": [...], "next": ...}), newest first

async function listJobs() {
  try {
    const { data } = await api("GET", `/jobs?limit=${LIMIT}`);
    const jobs = Array.isArray(data) ? data : data.jobs || [];
    return { jobs, source: data.next ? `your newest ${LIMIT} jobs (GET /v1/jobs)` : "all of your jobs (GET /v1/jobs)" };
  } catch (e) {
    if (e.status !== 404 && e.status !== 405) throw e;
  }
  const jobs = (await Promise.all(knownJobs.all().map((id) =>
    api("GET", `/jobs/${enc(id)}`).then((r) => r.data, (e) => (e.status === 404 ? null : Promise.reject(e)))))).filter(Boolean);
  return { jobs, source: "the jobs started from this tab (this service does not list jobs)" };
}

export async function jobsPage(view, ctx) {
  view.append(h("h1", {}, "Jobs"));
  const where = h("p", { class: "hint", id: "jobs-source" });
  const body = h("div", { id: "jobs" });
  view.append(where, body);
  const refresh = async () => {
    const { jobs, source } = await listJobs();
    if (!ctx.alive) return false;
    where.textContent = `Showing ${source}.`;
    body.replaceChildren(jobs.length ? table(jobs, refresh, body) : h("p", { class: "empty" }, "No jobs."));
    return jobs.some((j) => j.status === "queued" || j.status === "running");
  };
  let running = await refresh();
  const timer = setInterval(async () => {
    if (!running) return;
    try { running = await refresh(); } catch (e) { body.append(errorBox(e)); running = false; }
  }, 1000);
  ctx.onLeave(() => clearInterval(timer));
}

function table(jobs, refresh, body) {
  return h("table", {},
    h("thead", {}, h("tr", {}, ["Job", "Kind", "Adapter", "State", "Progress", "Created", "Result", ""].map((c) => h("th", {}, c)))),
    h("tbody", {}, jobs.map((j) => h("tr", { "data-job": j.id, "data-status": j.status },
      h("td", { class: "mono" }, j.id), h("td", {}, j.kind),
      h("td", {}, h("a", { href: `#/adapters/${enc(j.adapter)}` }, j.adapter)),
      h("td", { class: "state" }, j.status),
      h("td", {}, h("progress", { max: Math.max(j.progress.total, 1), value: j.progress.step }), ` ${j.progress.step}/${j.progress.total}`),
      h("td", {}, fmtTime(j.created_at)),
      h("td", {}, ["queued", "running"].includes(j.status) ? "" : jobOutcome(j)),
      h("td", {}, ["queued", "running"].includes(j.status) ? h("button", { type: "button", class: "cancel", onclick: async () => {
        try { await api("DELETE", `/jobs/${enc(j.id)}`); await refresh(); } catch (e) { body.append(errorBox(e)); }
      } }, "Cancel") : "")))));
}
