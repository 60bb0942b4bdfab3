"""A real Prometheus (Debian's) scraping a real `bentoml serve` of Tailor every second, with
the ServiceMonitor's relabelings and the PrometheusRule's rules loaded: what it stores is
what the dashboards and alerts will see in a cluster. One server for the module (API keys
for five tenants, a bound of 50 series per family):

- the counts Prometheus holds equal the predict requests sent, per tenant, adapter version
  and status; BentoML's own series count them per route;
- a flood of random paths leaves /metrics with a fixed set of endpoint labels;
- 500 adapters stay within the bound;
- 200 simultaneous large head creates: every answer 201 or 429 with a spread Retry-After;
- the admin view; every dashboard query and alert rule evaluates.
"""
from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import yaml

from benchmarks.datasets import bbc_news
from service.api import create_app
from service.route_labels import RouteLabels
from tests.conftest import TLS, Server
from tests.promserver import Prometheus, relabel_configs
from tests.deploy.test_monitoring_manifests import DASHBOARD, RULES, rule_groups

pytestmark = pytest.mark.e2e

BOUND = 50
KEYS = {t: f"{t}-{uuid.uuid4().hex}" for t in ("acme", "globex", "bulk", "burst", "ops")}
LABELS = RouteLabels(create_app().openapi()["paths"]).all()
EXAMPLES = [{"text": "the striker scored twice in the final", "label": "sport"},
            {"text": "the keeper saved a late penalty", "label": "sport"},
            {"text": "bake the bread until the crust is golden", "label": "food"},
            {"text": "a recipe for lemon cake with fresh cream", "label": "food"}]
PROBES = ["a goal in the last minute", "slow cooked beef stew"]


def auth(tenant: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[tenant]}"}


def servicemonitor_relabelings() -> list[dict]:
    sm = yaml.safe_load((RULES.parent / "servicemonitor.yaml").read_text())
    (endpoint,) = sm["spec"]["endpoints"]
    return relabel_configs(endpoint["metricRelabelings"])


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    d = tmp_path_factory.mktemp("prometheus-e2e")
    rules = d / "rules.yml"
    rules.write_text(yaml.safe_dump(rule_groups()))
    keys = d / "api-keys"
    keys.write_text("".join(f"{k} {t}{' admin' if t == 'ops' else ''}\n" for t, k in KEYS.items()))
    t0 = time.monotonic()
    server = Server(d / "store", {"TAILOR_FORWARD_WORKERS": "1",
                                  "TAILOR_API_KEYS_FILE": str(keys), "TAILOR_REQUIRE_API_KEYS": "true",
                                  "TAILOR_METRICS_MAX_SERIES": str(BOUND)}, d / "server.log")
    prom = Prometheus([f"127.0.0.1:{server.port}"], d / "prometheus", rule_files=[rules],
                      metric_relabel_configs=servicemonitor_relabelings())
    try:
        server.start()
        prom.start()
        prom.wait_for(prom.targets_up, timeout=30)
        print(f"\nserver + prometheus up in {time.monotonic() - t0:.1f}s")
        yield server, prom
    finally:
        prom.stop()
        server.stop()


def by(prom: Prometheus, expr: str, *labels: str) -> dict[tuple, float]:
    return {tuple(lb.get(n, "") for n in labels): v for lb, v in prom.query(expr)}


# what Prometheus holds right after `traffic` (query -> the labels it is grouped by)
HELD = {
    "sum by (tenant, adapter, code) (tailor_adapter_requests_total)": ("tenant", "adapter", "code"),
    "sum by (tenant, adapter, label) (tailor_adapter_predictions_total)": ("tenant", "adapter", "label"),
    "sum by (tenant, adapter) (tailor_adapter_cold_loads_total)": ("tenant", "adapter"),
    "sum by (tenant, adapter) (tailor_adapter_request_duration_seconds_count)": ("tenant", "adapter"),
    'sum by (http_response_code) (bentoml_service_request_total{endpoint="/v1/predict"})':
        ("http_response_code",),
}


@pytest.fixture(scope="module")
def traffic(stack) -> tuple[Counter, Counter, dict]:
    """Predict requests of tenants acme and globex (and none: no key), sent once for the
    module before any bulk of adapters (`bulk` asks for this first, so these adapters get
    their series before the bound is reached): what several tests count. Returns (sent,
    rows, held): ``held`` is what Prometheus holds for the ``HELD`` queries right after it,
    before any other test's requests (500 more adapters fold the quiet series into
    "other", which is test_the_bound_holds_with_500_adapters' business)."""
    server, prom = stack
    sent: Counter = Counter()   # (tenant, adapter, code) as the answers said
    rows: Counter = Counter()   # (tenant, adapter, label) of every 200 answer
    with server.client() as c:
        for tenant in ("acme", "globex"):
            r = c.post("/v1/adapters", headers=auth(tenant), json={"name": "topics", "examples": EXAMPLES})
            assert r.status_code == 201, r.text
        c.post("/v1/adapters", headers=auth("acme"), json={"name": "topics", "examples": EXAMPLES[::-1]})

        def predict(tenant, body, headers=None):
            r = c.post("/v1/predict", headers=auth(tenant) if headers is None else headers, json=body)
            adapter = r.json()["adapter"] if r.status_code == 200 else "none"
            sent[(tenant if headers is None else "none", adapter, str(r.status_code))] += 1
            if r.status_code == 200:
                for p in r.json()["predictions"]:
                    rows[(tenant, adapter, p["label"])] += 1
            return r.status_code
        for _ in range(12):
            assert predict("acme", {"adapter": "topics", "inputs": PROBES}) == 200  # topics@2
        for _ in range(5):
            assert predict("acme", {"adapter": "topics@1", "inputs": PROBES[:1]}) == 200
        for _ in range(7):
            assert predict("globex", {"adapter": "topics", "inputs": PROBES}) == 200
        for _ in range(3):
            assert predict("globex", {"adapter": "nope", "inputs": PROBES}) == 404
        assert predict("acme", {"adapter": "topics", "inputs": "not a list"}) == 422
        for _ in range(2):
            assert predict("acme", {"adapter": "topics", "inputs": PROBES}, headers={}) == 401
    prom.scraped_after(time.time())
    return sent, rows, {q: by(prom, q, *labels) for q, labels in HELD.items()}


def test_prometheus_holds_the_requests_sent_per_adapter_and_status(stack, traffic):
    sent, rows, held = traffic
    got, predictions, cold, counted, bento = held.values()
    assert got == dict(sent), (got, sent)
    assert got[("acme", "topics@2", "200")] == 12 and got[("acme", "topics@1", "200")] == 5
    assert predictions == dict(rows)
    assert cold == {("acme", "topics@1"): 1, ("acme", "topics@2"): 1, ("globex", "topics@1"): 1}
    assert counted[("acme", "topics@2")] == 12  # the 422 never resolved: adapter none
    # BentoML's own series: by route, and the same number of predicts per status
    per_code = Counter()
    for (_, _, code), n in sent.items():
        per_code[(code,)] += n
    assert bento == dict(per_code)


def test_bentoml_series_keep_a_fixed_set_of_routes_whatever_the_paths(stack):
    server, prom = stack
    with server.client() as c:
        before = len(c.get("/metrics").text)
        for _ in range(300):  # job ids, adapter names, scanners: each was a series of its own
            c.get(f"/v1/jobs/{uuid.uuid4().hex}", headers=auth("acme"))
            c.get(f"/v1/adapters/n-{uuid.uuid4().hex[:12]}")
            c.get(f"/wp-admin-{uuid.uuid4().hex[:8]}.php")
        text = c.get("/metrics").text
    endpoints = {line.split('endpoint="', 1)[1].split('"', 1)[0]
                 for line in text.splitlines() if 'endpoint="' in line}
    assert endpoints <= LABELS, endpoints - LABELS
    assert {"/v1/jobs/{job_id}", "/v1/adapters/{name}", "/{unknown}"} <= endpoints
    grown = len(text) - before
    print(f"\n/metrics: {before} -> {len(text)} bytes after 900 requests to random paths")
    assert grown < 40_000, grown  # a few new route series, not one per path (was ~4 KB per path)
    prom.scraped_after(time.time())
    series = prom.api("series", **{"match[]": '{__name__=~"bentoml_.+"}'})
    assert {s["endpoint"] for s in series if "endpoint" in s} <= LABELS


@pytest.fixture(scope="module")
def bulk(stack, traffic) -> int:
    """500 zero-shot adapters of tenant bulk, each created and predicted once (after
    `traffic`: the busy adapters had their series first)."""
    server, _ = stack
    names = [f"cold{i}" for i in range(500)]

    def create_and_predict(name):
        with httpx.Client(base_url=server.url, timeout=120, headers=auth("bulk"), verify=TLS) as c:
            r = c.post("/v1/adapters", json={"name": name, "label_descriptions": {
                "sport": "a text about sport", "food": "a text about food"}})
            assert r.status_code == 201, r.text
            assert c.post("/v1/predict", json={"adapter": name, "inputs": PROBES[:1]}).status_code == 200
    t0 = time.monotonic()
    with ThreadPoolExecutor(4) as pool:  # 4: within TAILOR_MAX_CONCURRENT_CREATES
        list(pool.map(create_and_predict, names))
    print(f"\n500 zero-shot adapters created and predicted in {time.monotonic() - t0:.1f}s")
    return len(names)


def test_the_bound_holds_with_500_adapters(stack, traffic, bulk):
    server, prom = stack
    prom.scraped_after(time.time())
    for family in ("tailor_adapter_requests_total", "tailor_adapter_request_duration_seconds_count",
                   "tailor_adapter_predictions_total", "tailor_adapter_cold_loads_total"):
        (_, n), = prom.query(f"count({family})")
        assert n <= BOUND, (family, n)
    got = by(prom, "sum by (tenant, adapter, code) (tailor_adapter_requests_total)",
             "tenant", "adapter", "code")
    assert got[("acme", "topics@2", "200")] == 12  # the busy ones keep their own series
    assert got[("bulk", "other", "200")] > 0
    assert sum(v for (t, _, _), v in got.items() if t == "bulk") <= 500
    (_, folded), = prom.query("max(tailor_metrics_folded_adapters)")
    assert folded > 100
    (_, limit), = prom.query("max(tailor_metrics_series_limit)")
    assert limit == BOUND


@pytest.fixture(scope="module")
def large_examples():
    # 125 news articles, 5 labels, their first 400 characters (~90 tokens): each create still
    # holds its slot for seconds, so the 200 arrive while 4 train and the Retry-After (which
    # follows the age of the creates in flight) spreads; 800 characters cost twice the
    # backbone time for nothing this test checks
    train, _ = bbc_news().few_shot(25, seed=5, max_chars=400)
    return train


def test_200_simultaneous_large_head_creates_get_201_or_429_with_a_spread_retry_after(
        stack, large_examples):
    server, prom = stack
    n = 200
    barrier = threading.Barrier(n)

    def create(i):
        with httpx.Client(base_url=server.url, timeout=300, headers=auth("burst"), verify=TLS) as c:
            barrier.wait()
            r = c.post("/v1/adapters", json={"name": f"big{i}", "examples": large_examples})
            return r.status_code, r.headers.get("retry-after"), r.text[:200]
    t0 = time.monotonic()
    with ThreadPoolExecutor(n) as pool:  # all 200 in flight together
        answers = list(pool.map(create, range(n)))
    took = time.monotonic() - t0
    codes = Counter(s for s, _, _ in answers)
    retry = sorted(int(h) for s, h, _ in answers if s == 429)
    print(f"\n200 simultaneous creates of {len(large_examples)} examples: {dict(codes)} in "
          f"{took:.1f}s; Retry-After {retry[0] if retry else '-'}..{retry[-1] if retry else '-'} s, "
          f"{len(set(retry))} distinct values")
    assert set(codes) <= {201, 429}, [a for a in answers if a[0] not in (201, 429)][:3]
    assert codes[201] >= 4 and codes[429] > 0
    assert all(h is not None and int(h) >= 1 for s, h, _ in answers if s == 429)
    assert len(set(retry)) >= 2  # spread, not one value for everybody
    with server.client() as c:
        listed = c.get("/v1/adapters", headers=auth("burst")).json()["adapters"]
    assert len(listed) == codes[201]  # what was refused was not stored


def test_the_admin_view(stack, traffic, bulk):
    server, _ = stack
    with server.client() as c:
        assert c.get("/v1/tenants", headers=auth("acme")).status_code == 403
        r = c.get("/v1/tenants", headers=auth("ops"))
    assert r.status_code == 200, r.text
    view = {t["tenant"]: t for t in r.json()["tenants"]}
    assert set(KEYS) <= set(view)
    assert [a["versions"] for a in view["acme"]["adapters"]] == [2]
    assert view["acme"]["requests"]["200"] == 17 and view["globex"]["requests"]["404"] == 3
    assert len(view["bulk"]["adapters"]) == 500 and view["bulk"]["stored_bytes"] > 500 * 1000
    assert view["ops"]["adapters"] == [] and view["ops"]["stored_bytes"] == 0


def test_every_dashboard_query_and_rule_runs_in_prometheus(stack, traffic):
    _, prom = stack
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    for e in exprs:  # Grafana's variables as "All" would set them
        q = (e.replace("$__rate_interval", "1m").replace('"$namespace"', '".*"')
             .replace('"$tenant"', '".*"').replace('"$adapter"', '".*"'))
        prom.api("query", query=q)  # raises on a syntax or evaluation error
    # the per-adapter panels have data
    per_adapter = next(t["expr"] for p in dash["panels"] for t in p.get("targets", [])
                       if "tailor_adapter_requests_total" in t["expr"])
    assert prom.query(per_adapter.replace("$__rate_interval", "1m").replace('"$namespace"', '".*"')
                      .replace('"$tenant"', '".*"').replace('"$adapter"', '".*"'))

    def evaluated():
        groups = prom.api("rules")["groups"]
        rules = [r for g in groups for r in g["rules"]]
        return rules if rules and all(r.get("lastEvaluation", "").startswith("20") and
                                      r["health"] == "ok" for r in rules) else None
    rules = prom.wait_for(evaluated, timeout=30)
    assert {r["name"] for r in rules} == {r["alert"] for g in rule_groups()["groups"]
                                          for r in g["rules"]}
