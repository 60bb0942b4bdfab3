// The public v1 API, called with the user's API key. The key lives in sessionStorage (this
// tab only, gone when it closes): never in a URL, never logged, never sent anywhere but the
// Authorization header of this origin's /v1 calls.

const KEY = "tailor.apiKey";
const JOBS = "tailor.jobs";

export const apiKey = {
  get: () => sessionStorage.getItem(KEY) || "",
  set: (k) => { sessionStorage.setItem(KEY, k); sessionStorage.removeItem(JOBS); },
  clear: () => { sessionStorage.removeItem(KEY); sessionStorage.removeItem(JOBS); },
};

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** method + path under /v1 (+ a JSON body) -> {status, data}; an error answer throws an
 *  ApiError carrying the API's own `error.message`. */
export async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  const key = apiKey.get();
  if (key) headers.Authorization = `Bearer ${key}`;
  const init = { method, headers, cache: "no-store", credentials: "omit", redirect: "error" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let r;
  try {
    r = await fetch(`/v1${path}`, init);
  } catch (e) {
    throw new ApiError(0, "network", "the service did not answer; check that it is running and reachable");
  }
  const text = await r.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = null; }
  if (!r.ok) {
    const err = data && data.error;
    const message = err && typeof err.message === "string" && err.message
      ? err.message : `the service answered ${r.status} ${r.statusText} without an error message`;
    throw new ApiError(r.status, (err && err.code) || `http_${r.status}`, message);
  }
  return { status: r.status, data };
}

export const enc = encodeURIComponent;

/** The jobs this tab started (for the jobs page when GET /v1/jobs is not served). */
export const knownJobs = {
  all: () => { try { return JSON.parse(sessionStorage.getItem(JOBS) || "[]"); } catch { return []; } },
  add: (id) => {
    const ids = knownJobs.all().filter((x) => x !== id);
    sessionStorage.setItem(JOBS, JSON.stringify([id, ...ids].slice(0, 200)));
  },
};

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Poll GET /v1/jobs/{id} until it ends; ``onUpdate(job)`` after each answer; ``alive()``
 *  false stops polling (the page was left). */
export async function followJob(id, onUpdate, alive = () => true) {
  knownJobs.add(id);
  for (;;) {
    const { data: job } = await api("GET", `/jobs/${enc(id)}`);
    onUpdate(job);
    if (!["queued", "running"].includes(job.status) || !alive()) return job;
    await sleep(500);
  }
}
