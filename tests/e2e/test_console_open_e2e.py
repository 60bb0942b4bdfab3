"""The console against a service that runs open (no API keys): nothing asks for a key, and
the API calls go without one. One server and one browser (the keyed case, and everything
else, is tests/e2e/test_console_e2e.py)."""
from __future__ import annotations

import httpx
import pytest

from tests.conftest import Server

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("console-open") / "store").start()
    yield srv
    srv.stop()


def test_an_open_service_needs_no_key(server):
    from playwright.sync_api import sync_playwright

    from tests.browser import launch

    with sync_playwright() as p:
        browser = launch(p)
        page = browser.new_context(base_url=server.url).new_page()
        requests = []
        page.on("request", lambda r: requests.append(r))
        page.goto("/ui/")
        page.wait_for_selector("#view .empty")
        assert page.inner_text("#key-state") == "no key"
        page.goto("/ui/#/create")
        page.fill("#c-name", "open-topics")
        page.fill("#c-rows", "text,label\n\"the striker scored twice\",sport\n"
                             "the keeper saved a penalty,sport\nbake the bread,food\n"
                             "a recipe for lemon cake,food\n")
        page.click("#c-submit")
        page.wait_for_selector("#c-ref")
        assert page.inner_text("#c-ref") == "open-topics@1"
        page.goto("/ui/")
        page.wait_for_selector("#adapters tr[data-name='open-topics']")
        browser.close()
    api = [r for r in requests if "/v1/" in r.url]
    assert api and not [r for r in api if "authorization" in r.headers]
    assert httpx.get(f"{server.url}/v1/adapters/open-topics").status_code == 200
