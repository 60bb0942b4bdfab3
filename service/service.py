"""The BentoML service: the only place that knows BentoML.

``bentoml serve service.service:TailorService`` loads the backbone once in ``__init__``
(so ``/readyz`` answers 200 only when it is warm), builds the domain engine and mounts the
v1 FastAPI routes at ``/v1``, behind the API keys (service/auth.py), and the console's static
files at ``/ui`` (service/console.py; they call the v1 API with the user's key). BentoML supplies
``/readyz``, ``/livez``, ``/metrics`` and ``/docs.json`` (which includes the v1 routes);
they stay open (probes and scrapers carry no key). ``/metrics`` carries BentoML's series
(labelled by route, service/route_labels.py) and then Tailor's own (service/metrics.py).

``TAILOR_ROLE``: ``all`` serves and runs training jobs; ``serve`` only queues jobs in the
shared store; ``train`` runs queued jobs and answers nothing but ``/readyz``, ``/livez``
and ``/metrics``.
"""
from __future__ import annotations

import logging
import os
import signal
import threading
import time

import bentoml

from . import route_labels
from .api import create_app
from .auth import KeyRing, load_keyring
from .console import PATH as CONSOLE_PATH, create_console
from .errors import error_response
from .metrics import Recorder
from .settings import Settings

log = logging.getLogger("tailor")
if log.level == logging.NOTSET:  # BentoML leaves unknown loggers at WARNING: the start-up lines
    log.setLevel(logging.INFO)   # (runtime choice, "tailor ready") are INFO

# Settings are read once per process, here at import of the service module: the body-size
# middleware and the API keys are part of the app that BentoML mounts at class-definition
# time, and a missing or malformed key file (or none when TAILOR_REQUIRE_API_KEYS=true) must
# make `bentoml serve` exit at once with the message, instead of restarting a failing worker
# forever. The worker's __init__ uses this same object.
SETTINGS = Settings.from_env()
# Tailor's metrics (service/metrics.py): one recorder per process; the serving worker's is
# the whole pod's view (workers=1), served by __metrics__ below.
RECORDER = Recorder(SETTINGS.metrics_max_series)


def _keys_reloaded(ok: bool, ring: KeyRing | None) -> None:
    if ring is None:
        RECORDER.keys_reloaded(ok)
    else:
        RECORDER.keys_reloaded(ok, len(ring), len({p.tenant for p in ring.principals()}))


_KEYS = load_keyring(SETTINGS, on_reload=_keys_reloaded)
RECORDER.keys_loaded(len(_KEYS), len({p.tenant for p in _KEYS.principals()}))
app = create_app(SETTINGS.max_body_bytes, keyring=_KEYS, metrics=RECORDER)
# before BentoML builds its app: its request series labelled by these routes
route_labels.install(route_labels.RouteLabels(app.openapi()["paths"]))


def build_engine(settings: Settings, events: Recorder | None = None):
    """Encoder + store + jobs + engine from settings; warm the backbone with one forward.
    ``events``: the metrics recorder the domain reports to."""
    import torch

    from adapters import Tailor, open_encoder
    from adapters.storage import open_store
    from adapters.training.jobs import JobManager
    from adapters.training.worker import WorkerConfig

    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    encoder = open_encoder(settings.backbone_path, name=settings.backbone_name,
                           max_batch_rows=settings.max_batch_rows, workers=settings.workers())
    store = open_store(settings.store_url, settings.store_path, encoder.identity,
                       max_adapters_per_tenant=settings.max_adapters_per_tenant,
                       cache_bytes=settings.store_cache_mb << 20)
    store.sweep()
    # the backbone's forwards run on a registered runtime (export/runtimes/): the one the
    # settings name, or with auto the fastest that keeps accuracy (one log line says which
    # and why). Start-up fails when the named one cannot run here.
    from export.runtimes import RuntimeOptions
    from export.runtimes.auto import serving_encoder
    from export.runtimes.ort import default_cache_dir

    encoder, runtime = serving_encoder(
        encoder, settings.runtime, settings.onnx_quantize,
        RuntimeOptions(default_cache_dir(settings.store_path), settings.onnx_threads,
                       tuple(settings.providers()), settings.onnx_cuda_tf32))
    extra = {"events": events} if events is not None else {}
    queue_url = settings.queue_url.get_secret_value() if settings.queue_url else None
    jobs = JobManager(store.root / "jobs", queue_url=queue_url, max_queued=settings.job_queue_size,
                      concurrency=0 if settings.role == "serve" else settings.job_concurrency,
                      lease_s=settings.job_lease_s, max_attempts=settings.job_attempts, **extra)
    if events is not None:
        events.jobs_from(jobs.counts)  # the tailor_jobs gauge: the store's queue at scrape time
    engine = Tailor(encoder, store, limits=settings.limits(), cache_size=settings.cache_size,
                    max_batch_rows=settings.max_batch_rows, max_wait_ms=settings.batch_wait_ms,
                    max_queued_rows=settings.max_queued_rows,
                    max_queue_wait_s=settings.max_queue_wait_s, jobs=jobs,
                    worker=WorkerConfig(threads=settings.train_threads, nice=settings.train_nice,
                                        warm=settings.train_warm),
                    max_concurrent_creates=settings.max_concurrent_creates, **extra)
    encoder.warm_up()
    log.info("tailor ready (role %s): backbone %s (%s), store %s, jobs %s, runtime %s: %s",
             settings.role, encoder.identity.name, encoder.identity.sha256[:12],
             store, jobs.queue.where, runtime, encoder.describe())
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
@bentoml.asgi_app(create_console(), path=CONSOLE_PATH)  # the console: static files, no key needed
class TailorService:
    def __init__(self) -> None:
        exit_with_supervisor()
        self.settings = SETTINGS
        self.engine = build_engine(self.settings, RECORDER)
        app.state.tailor = self.engine

    def __is_ready__(self) -> bool:
        return getattr(app.state, "tailor", None) is not None

    def __metrics__(self, content: str) -> str:
        """BentoML's /metrics: its own series, then Tailor's (service/metrics.py)."""
        return content + RECORDER.render()

    @bentoml.on_shutdown
    def stop_jobs(self) -> None:
        """SIGTERM: a job in hand is handed back to the store's queue (no attempt spent)."""
        self.engine.close()


class NewlinePathsToV1:
    """Outer ASGI middleware: send /v1 requests whose path holds a newline to the v1 app.

    Starlette's Mount matches its prefix with ``.*``, which stops at a newline, so
    ``DELETE /v1/jobs/x%0Ay`` never reached the v1 app and BentoML answered a text/plain 404
    instead of the documented JSON error (found by tests/e2e/test_fuzz.py). Such requests go to
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


class TrainerOnly:
    """TAILOR_ROLE=train: answer only the probes and /metrics; everything else is a JSON 404
    that says where the API is."""

    OPEN = frozenset({"/readyz", "/livez", "/healthz", "/metrics"})

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("path") in self.OPEN:
            return await self.app(scope, receive, send)
        return await error_response(404, "not_found", "this is a trainer (TAILOR_ROLE=train): it "
                                    "answers only /readyz, /livez and /metrics; send API calls "
                                    "to the serving replicas")(scope, receive, send)


TailorService.add_asgi_middleware(NewlinePathsToV1, v1=app)
if SETTINGS.role == "train":
    TailorService.add_asgi_middleware(TrainerOnly)
