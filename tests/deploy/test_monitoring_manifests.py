"""deploy/k8s/components/monitoring: the ServiceMonitor, the alert rules and the Grafana
dashboard. Offline and fast: promtool (Debian's prometheus package, installed by
deploy/install-prometheus.sh when missing) checks the rules and runs them on synthetic series;
the kustomize component renders on top of an overlay and passes strict validation (core kinds
with kubernetes-validate, the Prometheus Operator's kinds against its published models); the
dashboard and the rules query only metrics that exist.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from service.metrics import family_names
from tests.promserver import ensure_installed
from tests.deploy.test_k8s_manifests import K8S, tool, validate

COMPONENT = K8S / "components" / "monitoring"
RULES = COMPONENT / "prometheusrule.yaml"
DASHBOARD = COMPONENT / "grafana-tailor.json"
# BentoML 1.4's own families on /metrics (tests/e2e/test_monitoring_e2e.py sees them served)
BENTOML_NAMES = {"bentoml_service_request_total", "bentoml_service_request_in_progress",
                 "bentoml_service_last_request_timestamp_seconds",
                 *(f"bentoml_service_request_duration_seconds_{s}" for s in ("bucket", "sum", "count"))}
KNOWN = family_names() | BENTOML_NAMES | {"up"}


def promtool() -> str:
    ensure_installed()
    return shutil.which("promtool")


def rule_groups(annotations: bool = True) -> dict:
    spec = yaml.safe_load(RULES.read_text())["spec"]
    if not annotations:  # promtool's unit tests compare annotations exactly: test the logic
        for g in spec["groups"]:
            for r in g["rules"]:
                r.pop("annotations", None)
    return spec


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers outside {...} that are ours/BentoML's."""
    bare = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    bare = re.sub(r'"[^"]*"', "", bare)    # strings
    return {t for t in re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", bare)
            if t.startswith(("tailor_", "bentoml_")) or t == "up"}


def test_promtool_accepts_the_rules(tmp_path):
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump(rule_groups()))
    out = subprocess.run([promtool(), "check", "rules", str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    alerts = {r["alert"] for g in rule_groups()["groups"] for r in g["rules"]}
    assert {"TailorAdapterErrorRatioHigh", "TailorQueueSaturated", "TailorJobsFailing",
            "TailorLatencyP99High"} <= alerts


def test_rules_query_only_metrics_that_exist():
    for g in rule_groups()["groups"]:
        for r in g["rules"]:
            names = metric_names(r["expr"])
            assert names, r["alert"]
            assert names <= KNOWN, (r["alert"], names - KNOWN)


# Synthetic series (promtool's expanding notation: 'a+bxN' = a, a+b, ... N more samples at
# the test's 1-minute interval) and the alerts they must (and must not) raise.
RULE_TESTS = [{
    "interval": "1m",
    "input_series": [
        # acme/tickets@1: 1 req/s, 10% of it 5xx -> fires. acme/rare@1: 50% 5xx but 0.02/s -> no
        {"series": 'tailor_adapter_requests_total{tenant="acme",adapter="tickets@1",code="200"}', "values": "0+54x30"},
        {"series": 'tailor_adapter_requests_total{tenant="acme",adapter="tickets@1",code="500"}', "values": "0+6x30"},
        {"series": 'tailor_adapter_requests_total{tenant="acme",adapter="rare@1",code="200"}', "values": "0+0.6x30"},
        {"series": 'tailor_adapter_requests_total{tenant="acme",adapter="rare@1",code="503"}', "values": "0+0.6x30"},
        # queue 90% full on pod a, 10% on pod b
        {"series": 'tailor_queue_rows{pod="a"}', "values": "3700x30"},
        {"series": 'tailor_queue_capacity_rows{pod="a"}', "values": "4096x30"},
        {"series": 'tailor_queue_rows{pod="b"}', "values": "400x30"},
        {"series": 'tailor_queue_capacity_rows{pod="b"}', "values": "4096x30"},
        # 4 of 10 lora jobs failed within the hour
        {"series": 'tailor_jobs_finished_total{kind="lora",state="failed"}', "values": "0 0 1 1 2 2 3 3 4 4 4 4 4 4 4 4 4 4 4 4 4"},
        {"series": 'tailor_jobs_finished_total{kind="lora",state="succeeded"}', "values": "0 1 2 3 4 5 6 6 6 6 6 6 6 6 6 6 6 6 6 6 6"},
        # latency: globex/slow@2 all in the 5 s bucket at 1 req/s
        *[{"series": f'tailor_adapter_request_duration_seconds_bucket{{tenant="globex",adapter="slow@2",le="{le}"}}',
           "values": "0+60x30" if le in ("5.0", "+Inf") else "0x30"} for le in ("0.5", "2.5", "5.0", "+Inf")],
        {"series": 'tailor_adapter_request_duration_seconds_count{tenant="globex",adapter="slow@2"}', "values": "0+60x30"},
        {"series": 'tailor_api_key_reloads_total{pod="a",result="error"}', "values": "0 0 0 1 1 1 1 1 1 1 1"},
    ],
    "alert_rule_test": [
        {"eval_time": "20m", "alertname": "TailorAdapterErrorRatioHigh",
         "exp_alerts": [{"exp_labels": {"severity": "warning", "tenant": "acme", "adapter": "tickets@1"}}]},
        {"eval_time": "5m", "alertname": "TailorAdapterErrorRatioHigh", "exp_alerts": []},  # `for: 10m`
        {"eval_time": "10m", "alertname": "TailorQueueSaturated",
         "exp_alerts": [{"exp_labels": {"severity": "warning", "pod": "a"}}]},
        {"eval_time": "15m", "alertname": "TailorJobsFailing",
         "exp_alerts": [{"exp_labels": {"severity": "warning", "kind": "lora"}}]},
        {"eval_time": "20m", "alertname": "TailorLatencyP99High",
         "exp_alerts": [{"exp_labels": {"severity": "warning", "tenant": "globex", "adapter": "slow@2"}}]},
        {"eval_time": "5m", "alertname": "TailorApiKeyReloadFailing",
         "exp_alerts": [{"exp_labels": {"severity": "warning", "pod": "a"}}]},
        {"eval_time": "25m", "alertname": "TailorApiKeyReloadFailing", "exp_alerts": []},
        {"eval_time": "20m", "alertname": "TailorOverloaded", "exp_alerts": []},
    ],
}, {
    "interval": "1m",
    "input_series": [  # jobs wait, none finish: no trainer
        {"series": 'tailor_jobs{state="queued",pod="serve-1"}', "values": "3x80"},
        {"series": 'tailor_jobs_finished_total{kind="lora",state="succeeded",pod="train-1"}', "values": "5x80"},
    ],
    "alert_rule_test": [
        {"eval_time": "70m", "alertname": "TailorJobsNotProgressing",
         "exp_alerts": [{"exp_labels": {"severity": "warning"}}]},
        {"eval_time": "20m", "alertname": "TailorJobsNotProgressing", "exp_alerts": []},
    ],
}]


def test_alerts_fire_on_synthetic_series(tmp_path):
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(rule_groups(annotations=False)))
    (tmp_path / "tests.yml").write_text(yaml.safe_dump(
        {"rule_files": ["rules.yml"], "evaluation_interval": "1m", "tests": RULE_TESTS}))
    out = subprocess.run([promtool(), "test", "rules", "tests.yml"], cwd=tmp_path,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


# -- the dashboard ---------------------------------------------------------------------------------
def dashboard_queries() -> list[tuple[str, str]]:
    dash = json.loads(DASHBOARD.read_text())
    out = [(p["title"], t["expr"]) for p in dash["panels"] for t in p.get("targets", [])]
    out += [(v["name"], v["query"]["query"]) for v in dash["templating"]["list"]
            if v["type"] == "query"]
    return out


def test_dashboard_has_tenant_and_adapter_panels_on_known_metrics():
    dash = json.loads(DASHBOARD.read_text())
    assert {v["name"] for v in dash["templating"]["list"]} >= {"tenant", "adapter"}
    titles = [p["title"] for p in dash["panels"] if p["type"] != "row"]
    assert any("by tenant" in t for t in titles) and any("by adapter" in t for t in titles)
    for title, expr in dashboard_queries():
        names = metric_names(expr)
        assert names, title
        assert names <= KNOWN, (title, names - KNOWN)
    for p in dash["panels"]:
        if p["type"] != "row":
            assert p["targets"] and p["datasource"]["uid"] == "${datasource}", p["title"]


# -- the kustomize component ---------------------------------------------------------------------
def render_with_monitoring(tmp_path: Path, overlay: str = "cpu") -> list[dict]:
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": [os.path.relpath(K8S / "overlays" / overlay, tmp_path)],
        "components": [os.path.relpath(COMPONENT, tmp_path)]}))
    out = subprocess.run([tool("kubectl"), "kustomize", "--load-restrictor",
                          "LoadRestrictionsNone", str(tmp_path)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def strict_operator_check(doc: dict) -> None:
    """Validate against the Prometheus Operator's published models, strictly: a field the
    model does not know is dropped by it, so the round trip must give the document back."""
    from cloudcoil.models.prometheus_operator import v1

    model = getattr(v1, doc["kind"]).model_validate(doc)
    back = model.model_dump(by_alias=True, exclude_unset=True, mode="json")
    assert back == doc, f"{doc['kind']}: fields the operator does not know or wrong types"


@pytest.mark.parametrize("overlay", ["cpu", "gpu"])
def test_component_renders_and_validates_on_each_overlay(tmp_path, overlay):
    docs = render_with_monitoring(tmp_path, overlay)
    core = [d for d in docs if not d["apiVersion"].startswith("monitoring.coreos.com/")]
    crds = [d for d in docs if d["apiVersion"].startswith("monitoring.coreos.com/")]
    assert sorted(d["kind"] for d in crds) == ["PrometheusRule", "ServiceMonitor"]
    path = tmp_path / "core.yaml"
    path.write_text(yaml.safe_dump_all(core))
    result = validate(path)
    assert result.returncode == 0, result.stdout + result.stderr
    for d in crds:
        strict_operator_check(d)

    kinds = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    sm = kinds[("ServiceMonitor", "tailor")]["spec"]
    svc = kinds[("Service", "tailor")]
    assert sm["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert {e["port"] for e in sm["endpoints"]} <= {p["name"] for p in svc["spec"]["ports"]}
    assert all(e["path"] == "/metrics" for e in sm["endpoints"])
    cm = next(d for d in docs if d["kind"] == "ConfigMap"
              and d["metadata"].get("labels", {}).get("grafana_dashboard") == "1")
    assert json.loads(cm["data"]["tailor.json"]) == json.loads(DASHBOARD.read_text())
    rules = kinds[("PrometheusRule", "tailor")]["spec"]
    assert rules == rule_groups()


def test_strict_operator_check_rejects_an_unknown_field():
    bad = {"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor",
           "metadata": {"name": "x"},
           "spec": {"selector": {}, "endpoints": [{"port": "http", "intervall": "15s"}]}}
    with pytest.raises(AssertionError, match="does not know"):
        strict_operator_check(bad)
