"""BentoML's request series labelled by route (service/route_labels.py): every path maps to a
label from a fixed set, the real path still reaches the router, and the ServiceMonitor keeps
exactly the labels the server can give. (The end-to-end check, a flood of random paths
against a real `bentoml serve`, is in tests/e2e/test_monitoring_e2e.py.)"""
from __future__ import annotations

import re

import pytest
import yaml

from service.api import create_app
from service.route_labels import UNKNOWN, RouteLabels
from tests.deploy.test_monitoring_manifests import RULES

LABELS = RouteLabels(create_app().openapi()["paths"])


@pytest.mark.parametrize("path, label", [
    ("/v1/adapters", "/v1/adapters"),
    ("/v1/adapters/support-topics", "/v1/adapters/{name}"),
    ("/v1/adapters/support-topics@3", "/v1/adapters/{name}"),
    ("/v1/adapters/x/export", "/v1/adapters/{name}/export"),
    ("/v1/adapters/x/examples", "/v1/adapters/{name}/examples"),
    ("/v1/adapters/x/suggest", "/v1/adapters/{name}/suggest"),
    ("/v1/jobs/0123456789abcdef0123456789abcdef", "/v1/jobs/{job_id}"),
    ("/v1/predict", "/v1/predict"),
    ("/v1/embed", "/v1/embed"),
    ("/v1/tenants", "/v1/tenants"),
    ("/v1/adapters/a/b/c/d", "/v1/{unknown}"),
    ("/v1/../../etc/passwd", "/v1/{unknown}"),
    ("/v1/jobs/x\ny", "/v1/jobs/{job_id}"),  # the v1 app gets it (NewlinePathsToV1)
    ("/wp-admin-1234.php", UNKNOWN),
    ("/v1", UNKNOWN),
    ("/readyz", "/readyz"), ("/livez", "/livez"), ("/metrics", "/metrics"),
    ("/docs.json", "/docs.json"),
    # the console's static files (service/console.py): one label, whatever the file
    ("/ui", "/ui/{file}"), ("/ui/", "/ui/{file}"), ("/ui/app.js", "/ui/{file}"),
    ("/ui/../../etc/passwd", "/ui/{file}"), ("/uix", UNKNOWN),
])
def test_every_path_gets_a_label_from_a_fixed_set(path, label):
    assert LABELS(path) == label
    assert label in LABELS.all()


# Written out, not derived from the app: a route added, renamed or dropped must change this
# list (and with it what the ServiceMonitor, the dashboards and the alerts expect).
V1_ROUTES = {"/v1/adapters", "/v1/adapters/{name}", "/v1/adapters/{name}/examples",
             "/v1/adapters/{name}/suggest", "/v1/adapters/{name}/export", "/v1/predict",
             "/v1/embed", "/v1/jobs", "/v1/jobs/{job_id}", "/v1/tenants",
             "/v1/embeddings", "/v1/models", "/v1/models/{model}"}  # the OpenAI-compatible routes
EXPECTED = V1_ROUTES | {
    "/", "/docs", "/docs.json", "/schema.json", "/livez", "/healthz", "/readyz", "/metrics",  # BentoML's
    "/v1/{unknown}", "/{unknown}", "/ui/{file}"}  # /ui/{file}: every file of the console


def test_the_set_is_exactly_the_documented_routes_and_small():
    assert {"/v1" + p for p in create_app().openapi()["paths"]} == V1_ROUTES
    assert LABELS.all() == EXPECTED
    assert len(EXPECTED) < 30


def test_a_route_added_to_the_app_is_caught_where_the_old_check_passed():
    """The planted break: an app with one more route. The old check (documented routes <=
    the labels built from those same routes) holds whatever the app has; the literal list
    does not."""
    app = create_app()
    app.add_api_route("/adapters/{name}/rename", lambda name: None, methods=["POST"])
    paths = app.openapi()["paths"]
    labels = RouteLabels(paths)
    assert {"/v1" + p for p in paths} <= labels.all()  # the old check: still true
    assert {"/v1" + p for p in paths} != V1_ROUTES and labels.all() != EXPECTED


def test_the_servicemonitor_keeps_exactly_the_labels_the_server_gives():
    sm = yaml.safe_load((RULES.parent / "servicemonitor.yaml").read_text())
    keep = re.compile(sm["spec"]["endpoints"][0]["metricRelabelings"][0]["regex"])
    assert all(keep.fullmatch(label) for label in LABELS.all()), [
        label for label in LABELS.all() if not keep.fullmatch(label)]
    for raw in ("/v1/adapters/news", "/v1/jobs/0123456789abcdef0123456789abcdef",
                "/wp-admin.php", "/v1/adapters/news/export", "/v1/foo"):
        assert not keep.fullmatch(raw), raw  # a raw path (an older pod) is dropped


def test_the_labeller_restores_the_real_path_before_routing():
    """The subclass BentoML's app is built with: it labels with the route, and what runs
    inside it sees the real path."""
    import asyncio

    from bentoml._internal.server.http import instruments

    from service import route_labels

    route_labels.install(LABELS)
    cls = instruments.RunnerTrafficMetricsMiddleware
    assert cls.tailor_route_labels is LABELS
    seen = {}

    async def inner(scope, receive, send):
        seen["path"] = scope["path"]
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    labelled = []
    mw = cls(inner, namespace="test", skip_paths=[])
    mw._setup = lambda *a, **k: None  # no prometheus client here: record the label instead
    mw._is_setup = True

    class Metric:
        def labels(self, **kw):
            labelled.append(kw.get("endpoint"))
            return self

        def inc(self, *a):
            pass

        observe = set_to_current_time = inc

        def track_inprogress(self):
            import contextlib
            return contextlib.nullcontext()

    for name in ("metrics_request_total", "metrics_request_duration", "metrics_request_in_progress",
                 "metrics_last_request_timestamp"):
        setattr(mw, name, Metric())

    async def call():
        scope = {"type": "http", "path": "/v1/jobs/abc", "method": "GET", "headers": []}

        async def receive():
            return {"type": "http.request", "body": b""}

        async def send(msg):
            pass
        await mw(scope, receive, send)
        return scope
    scope = asyncio.run(call())
    assert seen["path"] == "/v1/jobs/abc" and scope["path"] == "/v1/jobs/abc"
    assert set(labelled) - {None} == {"/v1/jobs/{job_id}"}  # None: the timestamp gauge
