"""The BentoML service: the only place that knows BentoML.

``bentoml serve service.service:TailorService`` loads the backbone once in ``__init__``
(so ``/readyz`` answers 200 only when it is warm), builds the domain engine and mounts the
v1 FastAPI routes at ``/v1``, behind the API keys (service/auth.py). BentoML supplies
``/readyz``, ``/livez``, ``/metrics`` and ``/docs.json`` (which includes the v1 routes);
they stay open (probes and scrapers carry no key).
"""
from __future__ import annotations

import logging
import os
import signal
import threading
import time

import bentoml

from .api import create_app
from .auth import load_keyring
from .settings import Settings

log = logging.getLogger("tailor")

# Settings are read once per process, here at import of the service module: the body-size
# middleware and the API keys are part of the app that BentoML mounts at class-definition
# time, and a missing or malformed key file (or none when TAILOR_REQUIRE_API_KEYS=true) must
# make `bentoml serve` exit at once with the message, instead of restarting a failing worker
# forever. The worker's __init__ uses this same object.
SETTINGS = Settings.from_env()
app = create_app(SETTINGS.max_body_bytes, keyring=load_keyring(SETTINGS))


def build_engine(settings: Settings):
    """Encoder + store + jobs + engine from settings; warm the backbone with one forward."""
    import torch

    from adapters import AdapterStore, Tailor, open_encoder
    from adapters.training.jobs import JobManager
    from adapters.training.worker import WorkerConfig

    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    encoder = open_encoder(settings.backbone_path, name=settings.backbone_name,
                           max_batch_rows=settings.max_batch_rows, workers=settings.workers())
    store = AdapterStore(settings.store_path, encoder.identity,
                         max_adapters_per_tenant=settings.max_adapters_per_tenant)
    store.sweep()
    if settings.runtime == "onnx":
        # the batched forward runs on onnxruntime; the PyTorch model stays for exports.
        # Fails start-up (ProviderUnavailable) when a requested provider is not active.
        from export.runtime import OnnxEncoder

        encoder = OnnxEncoder.open(encoder, settings.store_path, quantize=settings.onnx_quantize,
                                   providers=settings.providers(), threads=settings.onnx_threads,
                                   cuda_tf32=settings.onnx_cuda_tf32)
    jobs = JobManager(store.root / "jobs", max_queued=settings.job_queue_size,
                      concurrency=settings.job_concurrency)
    engine = Tailor(encoder, store, limits=settings.limits(), cache_size=settings.cache_size,
                    max_batch_rows=settings.max_batch_rows, max_wait_ms=settings.batch_wait_ms,
                    max_queued_rows=settings.max_queued_rows,
                    max_queue_wait_s=settings.max_queue_wait_s, jobs=jobs,
                    worker=WorkerConfig(threads=settings.train_threads, nice=settings.train_nice))
    encoder.embed(["warm-up"])
    log.info("tailor ready: backbone %s (%s), store %s, runtime %s", encoder.identity.name,
             encoder.identity.sha256[:12], store.root.resolve(),
             f"torch: {encoder.workers} forward workers x {torch.get_num_threads()} threads"
             if settings.runtime == "torch"
             else f"onnxruntime {settings.onnx_quantize} on {','.join(encoder.providers)}")
    return engine


def exit_with_supervisor(poll_s: float = 1.0, grace_s: float = 5.0) -> threading.Thread:
    """Stop this worker when the process that started it dies.

    BentoML's supervisor (circus) starts each worker in a session of its own, so a kill -9 of
    the supervisor's process group (the OOM killer, `kill -9 -PGID`, a service manager that
    kills only the main process) leaves the worker serving on as an orphan: it holds the
    listening socket (a restart cannot bind the port), the backbone's memory and any training
    job. Polling the parent pid is enough: it changes only when the parent is gone. Then a
    SIGTERM (BentoML's graceful shutdown), and exit outright if that takes over ``grace_s``.
    """
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        log.error("the BentoML supervisor (pid %d) is gone; this worker stops too", parent)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(grace_s)
        os._exit(1)

    t = threading.Thread(target=watch, name="tailor-supervisor-watch", daemon=True)
    t.start()
    return t


@bentoml.service(name="tailor", workers=1, traffic={"timeout": 300},
                 http={"cors": {"enabled": False}})
@bentoml.asgi_app(app, path="/v1")
class TailorService:
    def __init__(self) -> None:
        exit_with_supervisor()
        self.settings = SETTINGS
        self.engine = build_engine(self.settings)
        app.state.tailor = self.engine

    def __is_ready__(self) -> bool:
        return getattr(app.state, "tailor", None) is not None


class NewlinePathsToV1:
    """Outer ASGI middleware: send /v1 requests whose path holds a newline to the v1 app.

    Starlette's Mount matches its prefix with ``.*``, which stops at a newline, so
    ``DELETE /v1/jobs/x%0Ay`` never reached the v1 app and BentoML answered a text/plain 404
    instead of the documented JSON error (found by tests/test_fuzz.py). Such requests go to
    the v1 app directly, as the mount would send them (root_path "/v1")."""

    def __init__(self, app, v1, prefix: str = "/v1"):
        self.app = app
        self.v1 = v1
        self.prefix = prefix

    async def __call__(self, scope, receive, send):
        path = scope.get("path", "")
        if scope["type"] == "http" and "\n" in path and path.startswith(self.prefix + "/"):
            root = scope.get("root_path", "")
            return await self.v1({**scope, "root_path": root + self.prefix,
                                  "app_root_path": scope.get("app_root_path", root)}, receive, send)
        return await self.app(scope, receive, send)


TailorService.add_asgi_middleware(NewlinePathsToV1, v1=app)
