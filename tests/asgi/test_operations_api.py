"""Issue 13 through the service's ASGI app with the real backbone: per-adapter request metrics
at the HTTP edge (tenant, name@version, the status sent), the domain's events reaching the
recorder, the admin view GET /v1/tenants, and the bound on creates in flight answering 429
with a spread Retry-After. (A real Prometheus scraping a real `bentoml serve` is in
tests/e2e/test_monitoring_e2e.py.)"""
from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from adapters import AdapterStore, Tailor
from adapters.errors import Overloaded
from adapters.training.jobs import JobManager
from service.api import create_app
from service.auth import KeyRing
from service.metrics import Recorder
from tests.asgi.test_tenants import EXAMPLES, KEY_A, KEY_ADMIN, KEY_B, KEYS_FILE, PROBES, bearer

A, B, ADMIN = bearer(KEY_A), bearer(KEY_B), bearer(KEY_ADMIN)


def samples(rec: Recorder, name: str) -> dict[tuple, float]:
    out = {}
    for fam in text_string_to_metric_families(rec.render()):
        for s in fam.samples:
            if s.name == name:
                out[tuple(sorted(s.labels.items()))] = s.value
    return out


def requests_by(rec: Recorder) -> dict[tuple[str, str, str], float]:
    return {(d["tenant"], d["adapter"], d["code"]): v for d, v in
            ((dict(k), v) for k, v in samples(rec, "tailor_adapter_requests_total").items())}


@pytest.fixture
def world(backbone, tmp_path):
    rec = Recorder(max_series=100)
    store = AdapterStore(tmp_path / "store", backbone.identity)
    jobs = JobManager(tmp_path / "store" / "jobs", concurrency=0, events=rec)  # queues only
    app = create_app(keyring=KeyRing.parse(KEYS_FILE, "test keys"), metrics=rec)
    app.state.tailor = Tailor(backbone, store, jobs=jobs, events=rec, max_concurrent_creates=2)
    with TestClient(app, raise_server_exceptions=False) as client:
        for headers, name in ((A, "news"), (A, "other"), (B, "news")):
            r = client.post("/adapters", headers=headers, json={"name": name, "examples": EXAMPLES})
            assert r.status_code == 201, r.text
        yield client, rec, app.state.tailor


def test_each_predict_is_counted_per_tenant_adapter_version_and_status(world):
    client, rec, _ = world
    sent = {}

    def predict(headers, body, expect):
        r = client.post("/predict", headers=headers, json=body)
        assert r.status_code == expect, r.text
        adapter = r.json().get("adapter", "none")
        tenant = {id(A): "acme", id(B): "globex"}.get(id(headers), "none")
        sent[(tenant, adapter, str(expect))] = sent.get((tenant, adapter, str(expect)), 0) + 1

    for _ in range(5):
        predict(A, {"adapter": "news", "inputs": PROBES}, 200)
    predict(A, {"adapter": "news@1", "inputs": PROBES[:1]}, 200)
    predict(A, {"adapter": "other", "inputs": PROBES}, 200)
    predict(B, {"adapter": "news", "inputs": PROBES}, 200)
    for _ in range(2):
        predict(A, {"adapter": "missing", "inputs": PROBES}, 404)
    predict(A, {"adapter": "news", "inputs": "not a list"}, 422)
    predict({}, {"adapter": "news", "inputs": PROBES}, 401)  # no key: tenant none
    client.get("/adapters", headers=A)  # not a predict: not counted
    assert requests_by(rec) == {("acme", "news@1", "200"): 6, ("acme", "other@1", "200"): 1,
                                ("globex", "news@1", "200"): 1, ("acme", "none", "404"): 2,
                                ("acme", "none", "422"): 1, ("none", "none", "401"): 1}
    assert sent[("acme", "news@1", "200")] == 6
    durations = samples(rec, "tailor_adapter_request_duration_seconds_count")
    assert durations[(("adapter", "news@1"), ("tenant", "acme"))] == 6
    labels = {dict(k)["label"]: v for k, v in samples(rec, "tailor_adapter_predictions_total").items()
              if dict(k)["adapter"] == "news@1" and dict(k)["tenant"] == "acme"}
    assert labels == {"sport": 6, "business": 5}  # 5 x both probes + 1 x the first
    # the domain's events: one cold load per version, hits after that, one forward per request
    cold = samples(rec, "tailor_adapter_cold_loads_total")
    assert cold[(("adapter", "news@1"), ("tenant", "acme"))] == 1
    assert samples(rec, "tailor_registry_cache_misses_total")[()] == 3
    assert samples(rec, "tailor_registry_cache_hits_total")[()] == 5
    assert samples(rec, "tailor_backbone_batch_rows_count")[()] == 8
    assert samples(rec, "tailor_backbone_batch_rows_sum")[()] == 2 * 7 + 1
    assert samples(rec, "tailor_queue_rows")[()] == 0


def test_an_error_after_the_adapter_resolved_counts_against_its_version(world, monkeypatch):
    client, rec, tailor = world

    async def full(rows):
        raise Overloaded("the queue is full", headers={"Retry-After": "7"})

    monkeypatch.setattr(tailor.batcher, "submit", full)
    r = client.post("/predict", headers=A, json={"adapter": "news", "inputs": PROBES})
    assert r.status_code == 429 and r.headers["Retry-After"] == "7"

    async def bug(rows):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(tailor.batcher, "submit", bug)
    assert client.post("/predict", headers=A, json={"adapter": "news", "inputs": PROBES}).status_code == 500
    got = requests_by(rec)
    assert got[("acme", "news@1", "429")] == 1 and got[("acme", "news@1", "500")] == 1


def test_the_admin_view_lists_every_tenant_and_refuses_other_keys(world):
    client, rec, tailor = world
    client.post("/predict", headers=A, json={"adapter": "news", "inputs": PROBES})
    client.post("/predict", headers=A, json={"adapter": "missing", "inputs": PROBES})
    tailor.jobs.submit("lora_train", "globex", "queued-lora", {"examples": []})
    for headers in (A, B):
        r = client.get("/tenants", headers=headers)
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
        assert "admin" in r.json()["error"]["message"]
    assert client.get("/tenants").status_code == 401
    r = client.get("/tenants", headers=ADMIN)
    assert r.status_code == 200, r.text
    view = {t["tenant"]: t for t in r.json()["tenants"]}
    assert set(view) == {"acme", "globex", "ops", "initech"}  # stored ones + the key file's
    acme = view["acme"]
    assert sorted(a["name"] for a in acme["adapters"]) == ["news", "other"]
    assert acme["stored_bytes"] == sum(a["stored_bytes"] for a in acme["adapters"]) > 1000
    assert acme["requests"] == {"200": 1, "404": 1} and acme["jobs"] == {}
    assert view["globex"]["jobs"]["queued"] == 1 and view["ops"]["adapters"] == []
    # an admin acting as a tenant (X-Tailor-Tenant) is still an admin
    r = client.get("/tenants", headers={**ADMIN, "X-Tailor-Tenant": "acme"})
    assert r.status_code == 200


def test_the_admin_view_is_documented(world):
    client, _, _ = world
    doc = client.app.openapi()
    op = doc["paths"]["/tenants"]["get"]
    assert "403" in op["responses"] and "admin" in op["summary"].lower()


def test_creates_past_the_bound_answer_429_with_a_spread_retry_after(world):
    client, _, tailor = world
    tailor.creates.inside = tailor.creates.limit  # as if two creates were training right now
    try:
        values = set()
        for _ in range(30):
            r = client.post("/adapters", headers=A, json={"name": "burst", "examples": EXAMPLES})
            assert r.status_code == 429 and r.json()["error"]["code"] == "overloaded", r.text
            assert "TAILOR_MAX_CONCURRENT_CREATES" in r.json()["error"]["message"]
            values.add(int(r.headers["Retry-After"]))
        r = client.post("/adapters/news/examples", headers=A, json={"examples": EXAMPLES[:2]})
        assert r.status_code == 429  # updates train in the request too
    finally:
        tailor.creates.inside = 0
    assert len(values) >= 2 and min(values) >= 1
    assert client.get("/adapters/burst", headers=A).status_code == 404  # nothing was stored
    r = client.post("/adapters", headers=A, json={"name": "burst", "examples": EXAMPLES})
    assert r.status_code == 201 and tailor.creates.inside == 0
