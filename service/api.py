"""The v1 HTTP routes as a FastAPI app, one router per resource. Thin: parse, call the
domain facade (``adapters.Tailor``), map errors.

The BentoML service mounts this app at ``/v1`` and puts its engine on ``app.state.tailor``;
tests can do the same without BentoML. Every route acts as the tenant that ``service.auth``
resolved from the caller's key: another tenant's adapters and jobs are 404, exactly as
missing ones.
"""
from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path as FsPath

import orjson
from fastapi import APIRouter, Body, FastAPI, Path, Query, Request, Response
from fastapi.responses import FileResponse
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException

from adapters.validation import parse_ref

from . import errors
from .auth import Authenticate, KeyRing
from .deps import engine, tenant_of
from .errors import Forbidden
from .openai_api import openai_router
from .request_metrics import ADAPTER_KEY, AdapterRequestMetrics
from .schemas import (JOB_ID_PATTERN, NAME_PATTERN, REF_PATTERN, AddExamplesRequest, AdapterList,
                      AdapterRecord, CreateAdapterRequest, DeleteResponse, EmbedRequest,
                      EmbedResponse, ErrorResponse, ExportRequest, JobList, JobRecord,
                      PendingAdapter, PredictRequest, PredictResponse, SuggestRequest,
                      SuggestResponse, TenantList)

ERRORS = {s: {"model": ErrorResponse} for s in (400, 401, 403, 404, 409, 413, 422, 429, 503)}

# Path parameters with their documented shape (checked by the domain, which answers 422
# invalid_name or 404 job_not_found; see schemas.py).
Ref = Path(description="`name` (latest version) or `name@version`", examples=["support-topics"],
           json_schema_extra={"pattern": REF_PATTERN})
Name = Path(description="adapter name", examples=["old-topics"], json_schema_extra={"pattern": NAME_PATTERN})
JobId = Path(description="the job's id, from the answer to POST /v1/adapters",
             json_schema_extra={"pattern": JOB_ID_PATTERN})


# -- /adapters ----------------------------------------------------------------------------------
adapters_router = APIRouter()


@adapters_router.post(
    "/adapters", status_code=201, response_model=AdapterRecord | PendingAdapter,
    response_model_exclude_none=True,
    responses={202: {"model": PendingAdapter, "description": "a job kind (LoRA): training started"}},
    summary="Create an adapter (or a new version of one) from labeled examples")
async def create_adapter(req: CreateAdapterRequest, request: Request, response: Response) -> dict:
    record = await engine(request).acreate_adapter(
        tenant_of(request), req.name, req.kind,
        [e.model_dump(exclude_none=True) for e in req.examples], req.options,
        label_descriptions=req.label_descriptions, unlabeled=req.unlabeled)
    if record["status"] == "training":
        response.status_code = 202
    return record


@adapters_router.post(
    "/adapters/{name}/examples", status_code=201, response_model=AdapterRecord | PendingAdapter,
    response_model_exclude_none=True,
    responses={202: {"model": PendingAdapter, "description": "the next version trains as a job"}},
    summary="Publish the next version, trained on the latest version's inputs plus these")
async def add_examples(req: AddExamplesRequest, request: Request, response: Response,
                       name: str = Name) -> dict:
    record = await engine(request).aadd_examples(
        tenant_of(request), name, [e.model_dump(exclude_none=True) for e in req.examples],
        label_descriptions=req.label_descriptions, unlabeled=req.unlabeled, kind=req.kind,
        options=req.options)
    if record["status"] == "training":
        response.status_code = 202
    return record


@adapters_router.post("/adapters/{name}/suggest", response_model=SuggestResponse,
                      summary="The k texts whose labels would teach the adapter most")
async def suggest(req: SuggestRequest, request: Request, name: str = Ref) -> dict:
    return await asyncio.to_thread(engine(request).suggest, tenant_of(request), name, req.texts,
                                   req.k)


@adapters_router.get("/adapters", response_model=AdapterList,
                     summary="List your adapters (latest versions)")
async def list_adapters(request: Request) -> dict:
    t, tenant = engine(request), tenant_of(request)
    return {"adapters": await asyncio.to_thread(t.list_adapters, tenant),
            "training": await asyncio.to_thread(t.training, tenant)}  # may ask the database


@adapters_router.get("/adapters/{name}", response_model=AdapterRecord,
                     summary="One adapter: `name` (latest) or `name@version`")
async def get_adapter(request: Request, name: str = Ref) -> dict:
    return await asyncio.to_thread(engine(request).get_adapter, tenant_of(request), name)


@adapters_router.delete("/adapters/{name}", response_model=DeleteResponse,
                        summary="Delete all versions of an adapter, or one with ?version=N")
async def delete_adapter(request: Request, name: str = Name,
                         version: int | None = Query(None, ge=1)) -> dict:
    removed = await asyncio.to_thread(engine(request).delete_adapter, tenant_of(request), name,
                                      version)
    return {"name": name, "deleted_versions": removed}


@adapters_router.post(
    "/adapters/{name}/export", response_class=FileResponse,
    summary="Export an adapter (`name` or `name@version`) as an ONNX bundle (zip)",
    responses={200: {"content": {"application/zip": {}},
                     "description": "zip: model.onnx, tokenizer.json, labels.json, "
                                    "manifest.json (incl. parity report), README.md"}})
async def export_adapter(request: Request, name: str = Ref,
                         req: ExportRequest = Body(default_factory=ExportRequest)) -> Response:
    from export import export_bundle, served_quantize

    t = engine(request)
    adapter, version = parse_ref(name)
    # by default the bundle answers what this service answers (its runtime's precision)
    quantize = req.quantize or served_quantize(t.encoder)
    dest = FsPath(tempfile.mkdtemp(prefix="tailor-export-"))
    try:  # seconds of CPU: off the event loop
        result = await asyncio.to_thread(export_bundle, t.encoder.pytorch(), t.store,
                                         tenant_of(request), adapter, version,
                                         quantize=quantize, dest_dir=dest)
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    return FileResponse(result.path, media_type="application/zip", filename=result.path.name,
                        background=BackgroundTask(shutil.rmtree, dest, ignore_errors=True))


# -- /predict, /embed ---------------------------------------------------------------------------
inference_router = APIRouter()


def _json(body: dict) -> Response:
    """The hot routes' answers, written by orjson. Their response models still document them
    (OpenAPI); the domain's dicts already have exactly the models' fields (no None, no extra),
    and orjson writes the same bytes as FastAPI's json.dumps for them, but validating and
    re-encoding 384 floats per text through pydantic + jsonable_encoder cost ~1.1 ms per text
    against ~0.03 ms (issue 12's c=1 profile)."""
    return Response(orjson.dumps(body), media_type="application/json")


@inference_router.post("/predict", response_model=PredictResponse, response_model_exclude_none=True,
                       summary="Classify texts with an adapter")
async def predict(req: PredictRequest, request: Request) -> Response:
    def resolved(ref: str) -> None:  # the per-adapter metrics count this version
        request.scope[ADAPTER_KEY] = ref
    return _json(await engine(request).apredict(tenant_of(request), req.adapter, _items(req.inputs),
                                                on_resolved=resolved))


@inference_router.post("/embed", response_model=EmbedResponse,
                       summary="Embeddings from the frozen backbone")
async def embed(req: EmbedRequest, request: Request) -> Response:
    return _json(await engine(request).aembed(_items(req.inputs)))


def _items(inputs: list) -> list:
    """Texts stay strings; image objects become plain dicts for the domain's reader."""
    return [i if isinstance(i, str) else i.model_dump() for i in inputs]


# -- /jobs ----------------------------------------------------------------------------------------
jobs_router = APIRouter()


@jobs_router.get("/jobs", response_model=JobList,
                 summary="Your jobs, newest first: filter by status or adapter, page with `after`")
async def list_jobs(request: Request,
                    status: str | None = Query(None, description="queued, running, succeeded, "
                                               "failed or cancelled"),
                    adapter: str | None = Query(None, description="only jobs creating this adapter",
                                                json_schema_extra={"pattern": NAME_PATTERN}),
                    limit: int = Query(20, ge=1, le=200, description="jobs per page"),
                    after: str | None = Query(None, description="the `next` of the previous page")
                    ) -> dict:
    return await asyncio.to_thread(engine(request).list_jobs, tenant_of(request), status=status,
                                   adapter=adapter, limit=limit, after=after)


@jobs_router.get("/jobs/{job_id}", response_model=JobRecord,
                 summary="A training job's status and progress")
async def get_job(request: Request, job_id: str = JobId) -> dict:
    return engine(request).get_job(tenant_of(request), job_id)


@jobs_router.delete("/jobs/{job_id}", response_model=JobRecord,
                    summary="Cancel a queued or running job")
async def cancel_job(request: Request, job_id: str = JobId) -> dict:
    return engine(request).cancel_job(tenant_of(request), job_id)


# -- /tenants (admin) ------------------------------------------------------------------------------
admin_router = APIRouter()


@admin_router.get("/tenants", response_model=TenantList, responses={403: {"model": ErrorResponse}},
                  summary="Admin keys only: every tenant's adapters, stored bytes, requests, jobs")
async def list_tenants(request: Request) -> dict:
    if not request.scope.get("tailor.admin"):
        raise Forbidden("GET /v1/tenants is for admin keys (`<key> <tenant> admin` in the key "
                        "file); use GET /v1/adapters for your own tenant's adapters")
    usage = await asyncio.to_thread(engine(request).usage)
    metrics = getattr(request.app.state, "metrics", None)
    requests = metrics.tenant_requests() if metrics is not None else {}
    keyed = {p.tenant for p in request.app.state.keyring.principals()}
    names = sorted(set(usage) | keyed | (set(requests) - {"none"}))
    return {"tenants": [{"tenant": t, "adapters": usage.get(t, {}).get("adapters", []),
                         "stored_bytes": usage.get(t, {}).get("stored_bytes", 0),
                         "requests": requests.get(t, {}), "jobs": usage.get(t, {}).get("jobs", {})}
                        for t in names]}


# -- the app --------------------------------------------------------------------------------------
fallback_router = APIRouter()


@fallback_router.api_route("/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
                           include_in_schema=False)
async def unknown_route(path: str, request: Request) -> None:
    raise HTTPException(404)


def create_app(max_body_bytes: int = 16 * 1024 * 1024, keyring: KeyRing = KeyRing(),
               metrics=None) -> FastAPI:
    """The v1 app. ``keyring``: the API keys (empty = open, single-tenant ``default``);
    ``metrics``: a ``service.metrics.Recorder`` counting predict requests per adapter."""
    app = FastAPI(title="Tailor", version="1", description=(
        "One frozen text encoder, many few-shot adapters. Errors are "
        '`{"error": {"code", "message"}}` with a 4xx status. With API keys configured, send '
        "`Authorization: Bearer <key>`; admin keys may act as another tenant with "
        "`X-Tailor-Tenant: <tenant>`."), responses=ERRORS,
        docs_url=None, redoc_url=None)
    errors.install(app)
    app.add_middleware(errors.BodyLimit, max_bytes=max_body_bytes)
    app.add_middleware(Authenticate)  # no body is read for a caller without a key
    app.add_middleware(AdapterRequestMetrics)  # outermost: refused callers count too
    app.state.max_body_bytes = max_body_bytes
    app.state.keyring = keyring
    app.state.metrics = metrics
    for router in (adapters_router, inference_router, jobs_router, admin_router, openai_router,
                   fallback_router):
        app.include_router(router)
    return app
