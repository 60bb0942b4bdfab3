"""Hostile input through a real `bentoml serve`: its HTTP stack and worker survive bytes that
are not JSON, bodies over the limit (with and without Content-Length), deep nesting, NaN,
lone surrogates, traversal in paths and bodies; each a clear 4xx with the error envelope,
nothing outside the store changes, and the server still answers (every case through the
ASGI app: tests/asgi/test_hostile_input.py)."""
from __future__ import annotations

import json

import pytest

from tests.asgi.test_hostile_input import EXAMPLES, JSON, deep, refused
from tests.conftest import Server, snapshot

pytestmark = pytest.mark.e2e

E2E_MAX_BODY = 65_536


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile-e2e")
    (root / "sentinel.txt").write_text("outside the store")
    log = tmp_path_factory.mktemp("hostile-e2e-log") / "server.log"  # not under root: it grows
    srv = Server(root / "store", env={"TAILOR_MAX_BODY_BYTES": str(E2E_MAX_BODY)}, log=log).start()
    with srv.client() as c:
        assert c.post("/v1/adapters", json={"name": "news", "examples": EXAMPLES}).status_code == 201
    yield srv, root
    srv.stop()


def test_real_server_survives_hostile_input(server):
    srv, root = server
    big = json.dumps({"adapter": "news", "inputs": ["word " * 1000] * 20}).encode()
    assert len(big) > E2E_MAX_BODY

    def chunks():
        for i in range(0, len(big), 8192):
            yield big[i:i + 8192]

    cases = [
        # (method, path, kwargs, status, code)
        ("POST", "/v1/predict", {"content": b'{"adapter": "news", "inputs": ["caf\xe9"]}'}, 400, "invalid_json"),
        ("POST", "/v1/predict", {"content": b"{not json"}, 400, "invalid_json"),
        ("POST", "/v1/predict", {"content": deep(100_000)}, 413, "too_large"),  # 200 kB > 64 kB
        ("POST", "/v1/predict", {"content": deep(30_000)}, 400, "invalid_json"),  # 60 kB, 30k deep
        ("POST", "/v1/adapters", {"content": deep(30_000, b'{"a":', b"}", b"1")[:E2E_MAX_BODY - 1]}, 400,
         "invalid_json"),
        ("POST", "/v1/predict", {"content": big}, 413, "too_large"),
        ("POST", "/v1/adapters", {"content": chunks()}, 413, "too_large"),
        ("POST", "/v1/predict", {"content": b'{"adapter": "news", "inputs": [NaN]}'}, 422, "invalid_request"),
        ("POST", "/v1/adapters", {"content": b'{"name": "x", "examples": ' + json.dumps(EXAMPLES).encode()
                                  + b', "options": {"c": NaN}}'}, 422, "invalid_options"),
        ("POST", "/v1/predict", {"content": b'{"adapter": "news", "inputs": ["\\ud800"]}'}, 422,
         "invalid_examples"),
        ("POST", "/v1/adapters", {"content": json.dumps({"name": "news\n", "examples": EXAMPLES}).encode()},
         422, "invalid_name"),
        ("POST", "/v1/adapters", {"content": json.dumps({"name": "../../sentinel.txt", "examples": EXAMPLES})
                                  .encode()}, 422, "invalid_name"),
        ("GET", "/v1/adapters/..%2F..%2Fsentinel.txt", {}, {404, 422}, {"not_found", "invalid_name"}),
        ("DELETE", "/v1/adapters/%2e%2e", {}, {404, 422}, {"not_found", "invalid_name"}),
        ("DELETE", "/v1/adapters/news%00", {}, 422, "invalid_name"),
        ("GET", "/v1/adapters/news@" + "9" * 5000, {}, 422, "invalid_name"),
        ("POST", "/v1/adapters/" + "a" * 5000 + "/export", {}, 422, "invalid_name"),
        ("GET", "/v1/jobs/" + "f" * 300, {}, 404, "job_not_found"),
        # a newline in the path: Starlette's mount did not match it (BentoML's text/plain 404)
        ("DELETE", "/v1/jobs/%2BA%0A%C3%BAnF", {}, 404, "job_not_found"),
        ("GET", "/v1/adapters/news%0A", {}, 422, "invalid_name"),
        ("GET", "/v1/adapters/news%0A/x", {}, 404, "not_found"),
        ("DELETE", "/v1/jobs/..%2F..%2Fsentinel.txt", {}, 404, {"not_found", "job_not_found"}),
    ]
    with srv.client() as c:
        for method, path, kw, status, code in cases:
            before = snapshot(root)
            r = c.request(method, path, headers=JSON, **kw)
            refused(r, status, code)
            assert snapshot(root) == before, (method, path)
        assert c.get("/readyz").status_code == 200
        r = c.post("/v1/predict", json={"adapter": "news", "inputs": ["a late penalty"]})
        assert r.status_code == 200 and r.json()["predictions"][0]["label"] == "sport"
    assert srv.proc.poll() is None
    assert "Traceback" not in srv.tail(200_000), srv.tail()
