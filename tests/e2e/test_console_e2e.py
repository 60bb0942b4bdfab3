"""The console (/ui) in a real browser: Debian's Chromium driven by Playwright, against a real
`bentoml serve` with API keys for two tenants. One server and one browser for the module (a
fresh browser context, so a fresh sessionStorage, per test):

- the whole loop: create a LoRA adapter from an uploaded CSV, watch its job finish, suggest
  10 texts, label them with the keyboard only, see version 2 and its metric before and after;
- hostile texts and labels render as text: no dialog, no script run, no image requested;
- a wrong key, a missing key and a rejected create show the API's own error message;
- another tenant's adapter is invisible;
- the files need no key, the API calls do; the key never appears in a URL; the console is not
  in the OpenAPI document and its requests get one bounded metrics label.
"""
from __future__ import annotations

import csv
import json
import re
import uuid

import httpx
import pytest

from benchmarks.datasets import trec_coarse
from tests.conftest import Server

pytestmark = pytest.mark.e2e

KEYS = {t: f"{t}-{uuid.uuid4().hex}" for t in ("acme", "globex")}
HOSTILE_TEXT = "<img src=x onerror=alert(1)>"
HOSTILE_LABEL = "<b onmouseover=alert(2)>bold</b>"
SCRIPT_TEXT = "<script>window.__pwned = 1</script>"


def auth(tenant: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[tenant]}"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    d = tmp_path_factory.mktemp("console-e2e")
    keys = d / "api-keys"
    keys.write_text("".join(f"{k} {t}\n" for t, k in KEYS.items()))
    srv = Server(d / "store", {"TAILOR_API_KEYS_FILE": str(keys)}).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    from tests.browser import launch

    with sync_playwright() as p:
        b = launch(p)
        yield b
        b.close()


class Watch:
    """What a page did that it must not: dialogs opened, CSP violations, requests sent."""

    def __init__(self, page):
        self.dialogs, self.console, self.requests = [], [], []
        page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))
        page.on("console", lambda m: self.console.append(m.text))
        page.on("request", lambda r: self.requests.append(r))

    def csp_violations(self) -> list[str]:
        return [m for m in self.console if "Content Security Policy" in m]


@pytest.fixture
def page(browser, server):
    context = browser.new_context(base_url=server.url)
    context.set_default_timeout(30_000)
    pg = context.new_page()
    pg.watch = Watch(pg)
    yield pg
    assert not pg.watch.dialogs, pg.watch.dialogs
    assert not pg.watch.csp_violations(), pg.watch.csp_violations()
    context.close()


def use_key(page, key: str, route: str = "#/") -> None:
    page.goto("/ui/" + route)
    page.fill("#key", key)
    page.click("#key-use")


@pytest.fixture(scope="module")
def trec():
    train, test = trec_coarse().few_shot(4, seed=3, max_test=400)
    pool = list(dict.fromkeys(t for t, _ in test[:60]))
    truth = dict(test)
    return train, pool, truth


def test_files_are_open_api_calls_need_a_key_and_the_console_is_bounded(server):
    with httpx.Client(base_url=server.url) as c:
        r = c.get("/ui/")
        assert r.status_code == 200 and "<title>Tailor console</title>" in r.text
        assert "default-src 'self'" in r.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
        assert r.headers["x-content-type-options"] == "nosniff"
        assert c.get("/ui").status_code in (301, 307, 308)
        assert c.get("/ui/app.js").status_code == 200
        assert c.get("/v1/adapters").status_code == 401
        doc = c.get("/docs.json").json()
        assert not [p for p in doc["paths"] if p.startswith("/ui")]
        for n in range(20):
            c.get(f"/ui/probe-{n}.js")
        metrics = c.get("/metrics").text
        endpoints = set(re.findall(r'endpoint="([^"]*)"', metrics))
        assert "/ui/{file}" in endpoints, (sorted(endpoints), metrics[-3000:])
        assert not [e for e in endpoints if "probe" in e]


def test_the_whole_loop_create_upload_job_suggest_label_with_keys_version_2(page, server, trec, tmp_path):
    train, pool, truth = trec
    upload = tmp_path / "examples.csv"
    with upload.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        w.writerows((e["text"], e["label"]) for e in train)

    use_key(page, KEYS["acme"], "#/create")
    page.fill("#c-name", "questions")
    page.select_option("#c-kind", "lora")
    page.set_input_files("#c-file", str(upload))
    page.fill("#c-options", '{"epochs": 1, "cv_folds": 2}')
    page.click("#c-submit")
    # the job's progress is shown live, then what it published
    page.wait_for_selector("#job-progress")
    page.wait_for_selector("#job-decision, #job-result .error", timeout=300_000)
    assert "Published questions@1" in page.inner_text("#c-out"), page.inner_text("#c-out")
    assert re.search(r"succeeded (\d+)/\1", page.inner_text("#job-state"))

    page.goto("/ui/#/label/questions")
    page.fill("#l-pool", "\n".join(pool))
    page.fill("#l-k", "10")
    page.click("#l-suggest")
    page.wait_for_selector("#l-items li")
    items = page.locator("#l-items li")
    assert items.count() == 10
    labels = page.locator("#l-labels [data-label]").evaluate_all("bs => bs.map(b => b.dataset.label)")
    assert labels == sorted({e["label"] for e in train})
    # keyboard only: a digit per text (its true label), one skip, then Enter to publish
    texts = items.locator(".text").all_inner_texts()
    page.keyboard.press("s")
    for text in texts[1:]:
        page.keyboard.press(str(labels.index(truth[text]) + 1))
    assert page.locator("#l-items li.skipped").count() == 1
    page.keyboard.press("Enter")
    page.wait_for_selector("#l-published, #l-result .error", timeout=300_000)
    assert page.locator("#l-published").count(), page.inner_text("#l-result")
    assert page.inner_text("#l-ref") == "questions@2"
    before, after = page.inner_text("#l-before"), page.inner_text("#l-after")

    rec = httpx.get(f"{server.url}/v1/adapters/questions", headers=auth("acme")).json()
    assert rec["version"] == 2 and rec["changes"]["examples_added"] == 9
    m_before, m_after = rec["changes"]["metric_before"], rec["changes"]["metric_after"]
    assert before == f"{m_before['value']:.3f} ({m_before['name']})"
    assert after == f"{m_after['value']:.3f} ({m_after['name']})"

    # the adapter page: both versions, what changed, the plot, and a try box
    page.goto("/ui/#/adapters/questions")
    page.wait_for_selector("#versions tbody tr[data-version='2']")
    assert "+9 examples" in page.inner_text("#versions tr[data-version='2'] .changes")
    assert page.locator("svg.plot circle").count() == 2
    page.fill("#try-texts", "What does NASA stand for?\nWho wrote Hamlet?")
    page.click("#try-run")
    page.wait_for_selector("#scores tbody tr")
    assert page.locator("#scores tbody tr").count() == 2
    assert page.inner_text("#try-out").startswith("Answered by questions@2")


def test_hostile_texts_and_labels_render_as_text(page, server):
    with httpx.Client(base_url=server.url, headers=auth("acme"), timeout=120) as c:
        r = c.post("/v1/adapters", json={"name": "hostile", "examples": [
            {"text": HOSTILE_TEXT, "label": HOSTILE_LABEL},
            {"text": SCRIPT_TEXT, "label": HOSTILE_LABEL},
            {"text": "a plain text about cooking pasta", "label": "plain"},
            {"text": "another plain text about baking bread", "label": "plain"}]})
        assert r.status_code == 201, r.text
    use_key(page, KEYS["acme"])
    page.wait_for_selector("#adapters tr[data-name='hostile']")
    assert HOSTILE_LABEL in page.locator("#adapters tr[data-name='hostile'] .labels").inner_text()

    page.goto("/ui/#/adapters/hostile")
    page.fill("#try-texts", f"{HOSTILE_TEXT}\n{SCRIPT_TEXT}")
    page.click("#try-run")
    page.wait_for_selector("#scores tbody tr")
    assert page.locator("#scores td.text").all_inner_texts() == [HOSTILE_TEXT, SCRIPT_TEXT]
    assert HOSTILE_LABEL in page.locator("#scores td.label").all_inner_texts()

    page.goto("/ui/#/label/hostile")
    page.fill("#l-pool", f"{HOSTILE_TEXT} again\n{SCRIPT_TEXT} again\npasta with tomato")
    page.fill("#l-k", "3")
    page.click("#l-suggest")
    page.wait_for_selector("#l-items li")
    assert f"{HOSTILE_TEXT} again" in page.locator("#l-items .text").all_inner_texts()
    # a new label made of HTML, typed with the keyboard: n, the label, Enter
    page.keyboard.press("n")
    page.keyboard.type("<i>new</i>")
    page.keyboard.press("Enter")
    assert page.locator("#l-items li .chosen .chip").first.inner_text() == "<i>new</i>"

    assert page.locator("img, b, i, script:not([src])").count() == 0  # nothing became markup
    assert page.evaluate("window.__pwned") is None
    assert not [r.url for r in page.watch.requests if r.url.endswith("/x")]


def test_a_wrong_or_missing_key_shows_the_api_message(page, server):
    page.goto("/ui/")
    expected = httpx.get(f"{server.url}/v1/adapters").json()["error"]["message"]
    assert page.inner_text("#view .error") == expected  # "missing API key: ..."
    wrong_key = "not-a-key-of-this-server-0123456789"
    use_key(page, wrong_key)
    page.locator("#view .error", has_text="invalid API key").wait_for()
    wrong = httpx.get(f"{server.url}/v1/adapters", headers={"Authorization": f"Bearer {wrong_key}"})
    assert page.inner_text("#view .error") == wrong.json()["error"]["message"]


def test_another_tenants_adapter_is_invisible(page, server):
    r = httpx.post(f"{server.url}/v1/adapters", headers=auth("globex"), timeout=120, json={
        "name": "globex-secret", "examples": [{"text": "a", "label": "x"}, {"text": "b", "label": "y"}]})
    assert r.status_code == 201, r.text
    use_key(page, KEYS["acme"])
    page.wait_for_selector("#adapters, #view .empty")
    assert "globex-secret" not in page.inner_text("#view")
    page.goto("/ui/#/adapters/globex-secret")
    page.wait_for_selector("#view .error")
    expected = httpx.get(f"{server.url}/v1/adapters/globex-secret", headers=auth("acme")).json()
    assert page.inner_text("#view .error") == expected["error"]["message"]
    assert "does not exist" in expected["error"]["message"]


def test_a_rejected_create_shows_the_api_message_and_the_key_stays_out_of_urls(page, server):
    use_key(page, KEYS["acme"], "#/create")
    page.fill("#c-name", "one-label")
    page.fill("#c-rows", "text,label\nonly one,a\nstill one,a\n")
    page.click("#c-submit")
    page.wait_for_selector("#c-out .error")
    expected = httpx.post(f"{server.url}/v1/adapters", headers=auth("acme"), json={
        "name": "one-label", "kind": "head",
        "examples": [{"text": "only one", "label": "a"}, {"text": "still one", "label": "a"}]})
    assert expected.status_code == 422
    assert page.inner_text("#c-out .error") == expected.json()["error"]["message"]
    # a file the parser cannot read is named, not sent
    page.fill("#c-rows", '{"text": "no label"}')
    page.click("#c-submit")
    page.locator("#c-out .error", has_text='no "label"').wait_for()

    key = KEYS["acme"]
    assert all(key not in r.url for r in page.watch.requests)
    api_calls = [r for r in page.watch.requests if "/v1/" in r.url]
    assert api_calls and all(r.headers.get("authorization") == f"Bearer {key}" for r in api_calls)
    assert page.evaluate("Object.keys(localStorage).length") == 0  # sessionStorage only


def test_the_jobs_page_shows_progress_and_cancels(page, server, trec):
    train, _, _ = trec
    use_key(page, KEYS["acme"], "#/create")
    page.fill("#c-name", "long-job")
    page.select_option("#c-kind", "lora")
    page.fill("#c-rows", "\n".join(json.dumps(e) for e in train))  # JSON Lines
    page.fill("#c-options", '{"epochs": 100}')
    page.click("#c-submit")
    page.wait_for_selector("#job-progress")
    job_id = page.get_attribute("[data-job]", "data-job")
    page.goto("/ui/#/jobs")
    row = page.locator(f"#jobs tr[data-job='{job_id}']")
    row.wait_for()
    assert row.get_attribute("data-status") in ("queued", "running")
    row.locator("button.cancel").click()
    page.wait_for_selector(f"#jobs tr[data-job='{job_id}'][data-status='cancelled']", timeout=120_000)
    assert "Cancelled" in row.inner_text()
    rec = httpx.get(f"{server.url}/v1/jobs/{job_id}", headers=auth("acme")).json()
    assert rec["status"] == "cancelled"


def test_an_auto_job_says_whether_it_promoted_or_kept_and_why(page, server, trec):
    """kind auto: a head at once, then the LoRA recipe in a job; min_gain 1.0 cannot be
    reached, so the job keeps version 1 and the page says why (the job's own reason)."""
    train, _, _ = trec
    two = [e for e in train if e["label"] in ("HUM", "LOC")]
    use_key(page, KEYS["acme"], "#/create")
    page.fill("#c-name", "auto-kept")
    page.select_option("#c-kind", "auto")
    page.fill("#c-rows", "\n".join(json.dumps(e) for e in two))
    page.fill("#c-options", '{"epochs": 1, "min_gain": 1.0}')
    page.click("#c-submit")
    page.wait_for_selector("#c-ref")
    assert page.inner_text("#c-ref") == "auto-kept@1"  # servable at once
    page.wait_for_selector("#job-decision, #job-result .error", timeout=300_000)
    job_id = page.get_attribute("[data-job]", "data-job")
    job = httpx.get(f"{server.url}/v1/jobs/{job_id}", headers=auth("acme")).json()
    assert job["result"]["decision"] == "kept"
    assert page.inner_text("#job-decision") == f"Kept: auto-kept@1 — {job['result']['reason']}"
