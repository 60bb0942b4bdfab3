"""BentoML's request series labelled by route, not by raw path.

BentoML 1.4 labels ``bentoml_service_request_*`` with ``endpoint`` = the raw request path,
so every job id, adapter name and scanner's guess is a series of its own: 1,000
unauthenticated requests to random paths grew /metrics from 4 KB to 4.1 MB here (and the
prometheus multiprocess files with it), a cardinality attack by anyone who can reach the
port. Its metrics middleware is the outermost one and no service middleware runs before it,
so Tailor subclasses it: the path it labels with is the route template
(``/v1/adapters/{name}``), ``/v1/{unknown}`` or ``/{unknown}``, and the real path is put
back before anything routes the request. ``install`` swaps the class in the module BentoML
imports it from when it builds the app (BentoML is pinned to 1.4: tests/e2e/test_monitoring_e2e.py
fails if a new version stops calling it).
"""
from __future__ import annotations

from typing import Iterable

from starlette.routing import compile_path

# BentoML's own routes (system routes and the API document); any other path outside /v1
# is labelled UNKNOWN.
BENTOML_PATHS = frozenset({"/", "/docs", "/docs.json", "/schema.json", "/livez", "/healthz",
                           "/readyz", "/metrics"})
UNKNOWN = "/{unknown}"
# the console's static files (service/console.py): one label for all of them
CONSOLE, CONSOLE_LABEL = "/ui", "/ui/{file}"
RAW_PATH_KEY = "tailor.raw_path"


class RouteLabels:
    """raw path -> a label from a fixed set: BentoML's paths, the v1 app's route templates
    (under ``prefix``; the paths of its OpenAPI document), or ``<prefix>/{unknown}`` /
    ``/{unknown}``."""

    def __init__(self, templates: Iterable[str], prefix: str = "/v1"):
        self.prefix = prefix
        self.templates = sorted(templates)
        self._regexes = [(compile_path(t)[0], t) for t in self.templates]

    def __call__(self, path: str) -> str:
        if path in BENTOML_PATHS:
            return path
        if path == CONSOLE or path.startswith(CONSOLE + "/"):
            return CONSOLE_LABEL
        if path.startswith(self.prefix + "/"):
            sub = path[len(self.prefix):]
            for regex, template in self._regexes:
                if regex.match(sub):
                    return self.prefix + template
            return self.prefix + UNKNOWN
        return UNKNOWN

    def all(self) -> set[str]:
        """Every label this can give (for the ServiceMonitor's test)."""
        return (set(BENTOML_PATHS) | {self.prefix + t for t in self.templates}
                | {self.prefix + UNKNOWN, UNKNOWN, CONSOLE_LABEL})


def _restoring(app):
    async def restore(scope, receive, send):
        raw = scope.pop(RAW_PATH_KEY, None)
        if raw is not None:
            scope["path"] = raw
        await app(scope, receive, send)
    return restore


def install(labels: RouteLabels) -> None:
    """Make BentoML's request metrics label by ``labels(path)``. Call before BentoML builds
    the app (at import of the service module)."""
    from bentoml._internal.server.http import instruments

    base = instruments.RunnerTrafficMetricsMiddleware
    if getattr(base, "tailor_route_labels", None) is not None:
        base.tailor_route_labels = labels  # installed already (a re-import): new labels
        return

    class RouteLabelledTrafficMetrics(base):  # type: ignore[misc, valid-type]
        tailor_route_labels = labels

        def __init__(self, app, *args, **kwargs):
            super().__init__(_restoring(app), *args, **kwargs)

        async def __call__(self, scope, receive, send):
            if scope["type"].startswith(("http", "websocket")):
                raw = scope["path"]
                label = type(self).tailor_route_labels(raw)
                if label != raw:
                    scope[RAW_PATH_KEY] = raw
                    scope["path"] = label  # what BentoML labels with; restored right inside
            await super().__call__(scope, receive, send)

    instruments.RunnerTrafficMetricsMiddleware = RouteLabelledTrafficMetrics

