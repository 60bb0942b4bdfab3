"""A real Prometheus (Debian's) scraping a real `bentoml serve` of Tailor every second, with
the ServiceMonitor's relabelings and the PrometheusRule's rules loaded: what it stores is
what the dashboards and alerts will see in a cluster.

Today /metrics carries BentoML's series; Tailor's own families (service/metrics.py) join them
once the domain calls the recorder (issue 13, phase 2), and the same helper then checks
their counts per tenant, adapter and status.
"""
from __future__ import annotations

import json
import time
import uuid
from collections import Counter

import pytest
import yaml

from tests.conftest import Server
from tests.promserver import Prometheus, relabel_configs
from tests.test_monitoring import DASHBOARD, RULES, rule_groups

pytestmark = pytest.mark.e2e

FIXED_ROUTES = {"/v1/adapters", "/v1/predict", "/v1/embed", "/v1/tenants", "/readyz", "/livez",
                "/healthz", "/docs.json"}


def servicemonitor_relabelings() -> list[dict]:
    sm = yaml.safe_load((RULES.parent / "servicemonitor.yaml").read_text())
    (endpoint,) = sm["spec"]["endpoints"]
    return relabel_configs(endpoint["metricRelabelings"])


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    d = tmp_path_factory.mktemp("prometheus-e2e")
    rules = d / "rules.yml"
    rules.write_text(yaml.safe_dump(rule_groups()))
    t0 = time.monotonic()
    # its own BENTOML_HOME: `bentoml serve` empties the prometheus multiprocess folder there
    server = Server(d / "store", {"BENTOML_HOME": str(d / "bentoml"), "TAILOR_FORWARD_WORKERS": "1"},
                    d / "server.log")
    prom = Prometheus([f"127.0.0.1:{server.port}"], d / "prometheus", rule_files=[rules],
                      metric_relabel_configs=servicemonitor_relabelings())
    try:
        server.start()
        prom.start()
        prom.wait_for(prom.targets_up, timeout=30)
        print(f"server + prometheus up in {time.monotonic() - t0:.1f}s")
        yield server, prom
    finally:
        prom.stop()
        server.stop()


def test_prometheus_stores_the_counts_sent_per_route_and_status(stack):
    server, prom = stack
    sent: Counter = Counter()
    with server.client() as c:
        def call(method, path, **kw):
            r = c.request(method, path, **kw)
            sent[(path, str(r.status_code))] += 1
        for _ in range(7):
            call("POST", "/v1/embed", json={"inputs": ["hello there"]})
        for _ in range(4):
            call("POST", "/v1/predict", json={"adapter": "missing", "inputs": ["x"]})
        for _ in range(2):
            call("GET", "/v1/adapters")
        for _ in range(3):  # each job id, adapter name, scanner path: series of their own
            call("GET", f"/v1/jobs/{uuid.uuid4().hex}")
            call("GET", f"/v1/adapters/name-{uuid.uuid4().hex[:8]}")
            call("GET", f"/wp-admin-{uuid.uuid4().hex[:8]}.php")
    prom.scraped_after(time.time())
    expr = 'sum by (endpoint, http_response_code) (bentoml_service_request_total{job="tailor"})'
    got = {(lb["endpoint"], lb["http_response_code"]): v for lb, v in prom.query(expr)}
    assert {k: v for k, v in got.items() if k[0] != "/readyz"} == {
        ("/v1/embed", "200"): 7, ("/v1/predict", "404"): 4, ("/v1/adapters", "200"): 2}
    assert sent[("/v1/embed", "200")] == 7 and sent[("/v1/predict", "404")] == 4
    # the server exposes the raw paths; the ServiceMonitor's relabelings keep them out of the
    # TSDB: only fixed routes are stored, whatever clients and scanners request
    raw = server.client().get("/metrics").text
    assert "/wp-admin-" in raw and "/v1/jobs/" in raw
    series = prom.api("series", **{"match[]": '{__name__=~"bentoml_.+"}'})
    assert {s["endpoint"] for s in series if "endpoint" in s} <= FIXED_ROUTES


def test_every_dashboard_query_and_rule_runs_in_prometheus(stack):
    _, prom = stack
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    for e in exprs:  # Grafana's variables as "All" would set them
        q = (e.replace("$__rate_interval", "1m").replace('"$namespace"', '".*"')
             .replace('"$tenant"', '".*"').replace('"$adapter"', '".*"'))
        prom.api("query", query=q)  # raises on a syntax or evaluation error
    # BentoML's series already answer; the route panel has data
    route = next(t["expr"] for p in dash["panels"] for t in p.get("targets", [])
                 if "bentoml_service_request_total" in t["expr"])
    prom.wait_for(lambda: prom.query(route.replace("$__rate_interval", "1m")
                                     .replace('"$namespace"', '".*"')), timeout=30)

    def evaluated():
        groups = prom.api("rules")["groups"]
        rules = [r for g in groups for r in g["rules"]]
        return rules if rules and all(r.get("lastEvaluation", "").startswith("20") and
                                      r["health"] == "ok" for r in rules) else None
    rules = prom.wait_for(evaluated, timeout=30)
    assert {r["name"] for r in rules} == {r["alert"] for g in rule_groups()["groups"]
                                          for r in g["rules"]}


# -- Tailor's own families through BentoML's /metrics ---------------------------------------------
def test_recorder_families_reach_prometheus_and_stay_within_the_bound(tmp_path):
    """service/metrics.py's Recorder behind BentoML's ``__metrics__`` hook, as Tailor's service
    will wire it: counts per tenant, adapter and code arrive exactly; 500 adapters under a
    bound of 50 stay within 50 series per family in Prometheus."""
    bound = 50
    t0 = time.monotonic()
    server = Server(tmp_path / "store", {"BENTOML_HOME": str(tmp_path / "bentoml"),
                                         "PROBE_MAX_SERIES": str(bound)},
                    tmp_path / "probe.log", service="tests.metrics_probe_service:MetricsProbe")
    prom = Prometheus([f"127.0.0.1:{server.port}"], tmp_path / "prometheus",
                      metric_relabel_configs=servicemonitor_relabelings())
    try:
        server.start()
        prom.start()
        prom.wait_for(prom.targets_up, timeout=30)
        print(f"probe + prometheus up in {time.monotonic() - t0:.1f}s")
        sent: Counter = Counter()
        with server.client() as c:
            def hit(tenant, adapter, code=200, n=1):
                assert c.post("/hit", json={"tenant": tenant, "adapter": adapter, "code": code,
                                            "n": n}).status_code == 200
                sent[(tenant, adapter, str(code))] += n
            hit("acme", "tickets@1", 200, 12)
            hit("acme", "tickets@1", 429, 3)
            hit("acme", "tickets@2", 200, 5)
            hit("globex", "tickets@1", 200, 7)
            hit("globex", "none", 404, 2)
            prom.scraped_after(time.time())
            expr = "sum by (tenant, adapter, code) (tailor_adapter_requests_total)"
            got = {(lb["tenant"], lb["adapter"], lb["code"]): v for lb, v in prom.query(expr)}
            assert got == dict(sent)

            for i in range(500):
                hit("acme", f"cold{i}@1", 200 if i % 5 else 500)
            prom.scraped_after(time.time())
        for family in ("tailor_adapter_requests_total",
                       "tailor_adapter_request_duration_seconds_count"):
            (_, series), = prom.query(f"count({family})")
            assert series <= bound, (family, series)
        got = {(lb["tenant"], lb["adapter"], lb["code"]): v for lb, v in
               prom.query("sum by (tenant, adapter, code) (tailor_adapter_requests_total)")}
        assert got[("acme", "tickets@1", "200")] == 12  # the busy ones keep their own series
        assert got[("acme", "other", "200")] > 0 and got[("acme", "other", "500")] > 0
        assert sum(got.values()) <= sum(sent.values())
        (_, folded), = prom.query("max(tailor_metrics_folded_adapters)")
        assert folded > 100  # (tracking is bounded too: 8 x the bound)
    finally:
        prom.stop()
        server.stop()
