// The console's entry point: the key form and a hash router (#/, #/adapters/NAME,
// #/create, #/label/NAME, #/jobs). Each page is a function (view, ctx, ...params) that fills
// `view`; `ctx.alive` turns false when the user leaves the page (polling stops). An error a
// page throws is shown as its message.
import { apiKey } from "./api.js";
import { h, errorBox } from "./dom.js";
import { adaptersPage, adapterPage } from "./adapters.js";
import { createPage } from "./create.js";
import { labelPage } from "./label.js";
import { jobsPage } from "./jobs.js";

const view = document.getElementById("view");
const routes = [
  [/^#?\/?$/, adaptersPage],
  [/^#\/adapters\/([^/]+)$/, adapterPage],
  [/^#\/create$/, createPage],
  [/^#\/label\/([^/]+)$/, labelPage],
  [/^#\/jobs$/, jobsPage],
];
let current = null;

class PageContext {
  constructor() { this.alive = true; this.cleanups = []; }
  onLeave(fn) { this.cleanups.push(fn); }
  leave() { this.alive = false; this.cleanups.forEach((fn) => fn()); }
}

async function render() {
  if (current) current.leave();
  const ctx = (current = new PageContext());
  view.replaceChildren();
  document.body.dataset.page = "";
  const hash = location.hash || "#/";
  for (const [re, page] of routes) {
    const m = hash.match(re);
    if (!m) continue;
    document.body.dataset.page = page.name;
    try {
      const params = m.slice(1).map(decodeURIComponent);
      await page(view, ctx, ...params);
    } catch (e) {
      if (ctx.alive) view.append(errorBox(e));
    }
    return;
  }
  view.append(h("h1", {}, "Not found"), h("p", {}, "No page here: ", h("a", { href: "#/" }, "back to the adapters")));
}

function showKeyState() {
  const has = Boolean(apiKey.get());
  document.getElementById("key-state").textContent = has ? "key set for this tab" : "no key";
  document.getElementById("key-forget").hidden = !has;
}

document.getElementById("key-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const input = document.getElementById("key");
  const key = input.value.trim();
  input.value = "";
  if (key) apiKey.set(key);
  showKeyState();
  render();
});
document.getElementById("key-forget").addEventListener("click", () => {
  apiKey.clear();
  showKeyState();
  render();
});
window.addEventListener("hashchange", render);
showKeyState();
render();
