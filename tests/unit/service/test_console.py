"""The console's static files and headers (service/console.py), without a server: every
answer carries the Content-Security-Policy; the page has no inline script or style and no
third-party origin; no file builds markup from strings. (The console in a real browser against
a real `bentoml serve` is tests/e2e/test_console_e2e.py.)"""
from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.testclient import TestClient

from service.console import CSP, FILES, PATH, create_console


@pytest.fixture(scope="module")
def client():
    # mounted as BentoML mounts it (a Starlette Mount at /ui)
    app = Starlette(routes=[Mount(PATH, create_console())])
    with TestClient(app) as c:
        yield c


@pytest.mark.parametrize("path", ["/ui/", "/ui/index.html", "/ui/app.js", "/ui/app.css",
                                  "/ui/no-such-file.js"])
def test_every_answer_carries_the_security_headers(client, path):
    r = client.get(path)
    assert r.status_code == (404 if "no-such" in path else 200)
    assert r.headers["content-security-policy"] == CSP
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["referrer-policy"] == "no-referrer"


def test_the_policy_allows_this_origin_only_and_no_inline_code():
    rules = dict(d.strip().split(" ", 1) for d in CSP.split(";"))
    assert rules["default-src"] == "'self'" and rules["frame-ancestors"] == "'none'"
    assert rules["script-src"] == "'self'" and rules["style-src"] == "'self'"
    assert "unsafe" not in CSP and "http" not in CSP and "*" not in CSP


def test_scripts_are_served_as_javascript_modules(client):
    r = client.get("/ui/label.js")
    assert r.headers["content-type"].startswith(("text/javascript", "application/javascript"))


def test_files_outside_the_folder_are_not_served(client):
    for path in ("/ui/../console.py", "/ui/%2e%2e/console.py", "/ui/..%2fconsole.py"):
        r = client.get(path)
        assert r.status_code == 404 and "create_console" not in r.text, path


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.inline_script = False

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        if self.tags and self.tags[-1][0] == "script" and data.strip():
            self.inline_script = True


def test_the_page_has_no_inline_script_style_or_handler_and_no_other_origin():
    p = _Tags()
    p.feed((FILES / "index.html").read_text())
    assert not p.inline_script
    for tag, attrs in p.tags:
        assert tag != "style" and "style" not in attrs, tag
        assert not any(a.startswith("on") for a in attrs), (tag, attrs)
        if tag == "script":
            assert attrs.get("src") and attrs.get("type") == "module"
        for a in ("src", "href"):
            assert "//" not in (attrs.get(a) or ""), (tag, attrs)


@pytest.mark.parametrize("path", sorted(p.name for p in FILES.glob("*.js")))
def test_no_script_turns_strings_into_markup_or_code(path):
    """Texts are data: the console writes them with text nodes, never as HTML."""
    src = (FILES / path).read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(",
                 "new Function", "setAttribute(\"style\"", "localStorage", "console.log"):
        assert sink not in src, (path, sink)
    assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", src), path
