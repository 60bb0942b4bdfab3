"""Tenants over a real `bentoml serve` with a key file: probes stay open, no key is 401, a
tenant's adapter is 404 to another, the admin acts for a tenant, keys never reach the access
log; required keys but none configured stops the start-up at once (the same rules through
the ASGI app, case by case: tests/asgi/test_tenants.py)."""
from __future__ import annotations

import time

import pytest

from tests.asgi.test_tenants import (A, ADMIN, ALL_KEYS, EXAMPLES, KEYS_FILE, PROBES, WRONG, B,
                                     bearer)
from tests.conftest import Server

pytestmark = pytest.mark.e2e


def test_served_with_a_key_file_tenants_are_isolated(tmp_path):
    keys = tmp_path / "api-keys"
    keys.write_text(KEYS_FILE)
    keys.chmod(0o400)
    server = Server(tmp_path / "store", {"TAILOR_API_KEYS_FILE": str(keys), "TAILOR_REQUIRE_API_KEYS": "true",
                                         "TAILOR_FORWARD_WORKERS": "1"}, log=tmp_path / "server.log")
    try:
        server.start()
        with server.client() as http:
            for probe in ("/readyz", "/livez", "/metrics", "/docs.json"):  # stay open for probes
                assert http.get(probe).status_code == 200, probe
            r = http.get("/v1/adapters")
            assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
            assert r.json()["error"]["code"] == "unauthorized"
            assert http.get("/v1/adapters", headers=bearer(WRONG)).status_code == 401

            r = http.post("/v1/adapters", headers=A, json={"name": "news", "examples": EXAMPLES})
            assert r.status_code == 201, r.text
            before = http.post("/v1/predict", headers=A, json={"adapter": "news", "inputs": PROBES}).json()
            assert [p["label"] for p in before["predictions"]] == ["sport", "business"]

            for method, path, body in [("GET", "/v1/adapters/news", None), ("DELETE", "/v1/adapters/news", None),
                                       ("POST", "/v1/predict", {"adapter": "news", "inputs": PROBES}),
                                       ("POST", "/v1/adapters/news/export", {})]:
                r = http.request(method, path, headers=B, json=body)
                assert r.status_code == 404 and r.json()["error"]["code"] == "adapter_not_found", (path, r.text)
            assert http.get("/v1/adapters", headers=B).json() == {"adapters": [], "training": []}

            admin = http.get("/v1/adapters", headers={**ADMIN, "X-Tailor-Tenant": "acme"}).json()
            assert [a["ref"] for a in admin["adapters"]] == ["news@1"]
            after = http.post("/v1/predict", headers=A, json={"adapter": "news", "inputs": PROBES}).json()
            assert after == before
    finally:
        server.stop()
    log = (tmp_path / "server.log").read_text(errors="replace")
    assert "status=401" in log and "status=404" in log  # the access log covers these requests
    assert not any(k in log for k in ALL_KEYS)


def test_served_without_keys_when_required_exits_at_once(tmp_path):
    empty = tmp_path / "api-keys"
    empty.write_text("")  # the committed Secret placeholder
    server = Server(tmp_path / "store", {"TAILOR_API_KEYS_FILE": str(empty), "TAILOR_REQUIRE_API_KEYS": "true"},
                    log=tmp_path / "server.log")
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match="server exited with 1(.|\n)*TAILOR_REQUIRE_API_KEYS=true but"):
        server.start(timeout=60)
    assert time.monotonic() - t0 < 30  # exits at once, not a worker restarting forever
    server.stop()
