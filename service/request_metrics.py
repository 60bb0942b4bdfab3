"""Per-adapter request metrics at the HTTP edge: one ``tailor_adapter_requests_total`` and one
``tailor_adapter_request_duration_seconds`` sample per predict request, labelled with the
caller's tenant, the adapter version that served it and the status actually sent.

It wraps the v1 app outside ``Authenticate``, so refused callers (401) are counted too
(tenant ``none``). The tenant comes from ``scope["tailor.tenant"]`` (set by
``Authenticate``), the adapter from ``scope["tailor.adapter"]``, which the predict route
sets as soon as the domain has resolved ``name`` to ``name@version`` (so a 429 or a 500
after that counts against that version); ``none`` when it never resolved (unknown adapter,
invalid request). The recorder is ``app.state.metrics`` (none: nothing is counted).
"""
from __future__ import annotations

import time

from .errors import route_path
from .metrics import NONE

COUNTED = frozenset({("POST", "/predict")})  # the serving path: what latency alerts watch
ADAPTER_KEY = "tailor.adapter"


class AdapterRequestMetrics:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        recorder = getattr(scope["app"].state, "metrics", None) if scope["type"] == "http" else None
        if recorder is None or (scope["method"], route_path(scope)) not in COUNTED:
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        status: int | None = None

        async def sending(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except Exception:
            status = status or 500  # a bug: Starlette's outermost handler answers 500
            raise
        finally:
            if status is not None:  # None: the client went away before an answer
                recorder.request(scope.get("tailor.tenant", NONE), scope.get(ADAPTER_KEY, NONE),
                                 status, time.perf_counter() - t0)
