"""A minimal BentoML service that exposes a ``service.metrics.Recorder`` the way Tailor's
service does (``__metrics__`` appends ``render()`` to BentoML's /metrics), with one route to
record requests: the end-to-end check of the mechanism and the cardinality bound before the
domain calls the recorder (tests/test_monitoring_e2e.py)."""
from __future__ import annotations

import os

import bentoml
from pydantic import BaseModel


class Hits(BaseModel):
    tenant: str
    adapter: str
    code: int = 200
    n: int = 1
    seconds: float = 0.01


@bentoml.service(name="metrics-probe", workers=1)
class MetricsProbe:
    def __init__(self) -> None:
        from service.metrics import Recorder

        self.recorder = Recorder(max_series=int(os.environ.get("PROBE_MAX_SERIES", "1000")))

    @bentoml.api
    def hit(self, req: Hits, /) -> int:
        for _ in range(req.n):
            self.recorder.request(req.tenant, req.adapter, req.code, req.seconds)
        return req.n

    def __metrics__(self, content: str) -> str:
        return content + self.recorder.render()
