"""The v1 HTTP routes as a FastAPI app. Thin: parse, call the domain, map errors.

The BentoML service mounts this app at ``/v1`` and puts its ``adapters.Tailor`` engine on
``app.state.tailor`` and its API keys on ``app.state.keyring``; tests can do the same
without BentoML. Every route acts as the tenant that ``service.auth`` resolved from the
caller's key: another tenant's adapters and jobs are 404, exactly as missing ones.
"""
from __future__ import annotations

import asyncio
import shutil

from fastapi import Body, FastAPI, Query, Request, Response
from fastapi.responses import FileResponse
from starlette.background import BackgroundTask

from adapters import Tailor

from . import errors
from .auth import Authenticate, KeyRing
from .schemas import (AdapterList, AdapterRecord, CreateAdapterRequest, DeleteResponse,
                      EmbedRequest, EmbedResponse, ErrorResponse, ExportRequest, JobRecord,
                      PendingAdapter, PredictRequest, PredictResponse)

ERRORS = {s: {"model": ErrorResponse} for s in (400, 401, 403, 404, 409, 413, 422, 429, 503)}


def engine(request: Request) -> Tailor:
    t = getattr(request.app.state, "tailor", None)
    if t is None:
        from adapters.errors import NotReady
        raise NotReady("the backbone is still loading; retry when /readyz answers 200",
                       headers={"Retry-After": "5"})
    return t


def lora_jobs(request: Request):
    j = getattr(request.app.state, "lora_jobs", None)
    if j is None:
        from adapters.errors import NotReady
        raise NotReady("LoRA training is not available yet; retry when /readyz answers 200",
                       headers={"Retry-After": "5"})
    return j


def tenant_of(request: Request) -> str:
    """The tenant this request acts as: set by the ``Authenticate`` middleware from the API
    key (and, for admin keys, X-Tailor-Tenant); ``default`` when the service runs open."""
    return request.scope["tailor.tenant"]


def create_app(max_body_bytes: int = 16 * 1024 * 1024,
               keyring: KeyRing | None = KeyRing()) -> FastAPI:
    """The v1 app. ``keyring``: the API keys (empty = open, single-tenant ``default``);
    ``None`` = not loaded yet (every request answers 503 until ``app.state.keyring`` is set)."""
    app = FastAPI(title="Tailor", version="1", description=(
        "One frozen text encoder, many few-shot adapters. Errors are "
        '`{"error": {"code", "message"}}` with a 4xx status. With API keys configured, send '
        "`Authorization: Bearer <key>`; admin keys may act as another tenant with "
        "`X-Tailor-Tenant: <tenant>`."), responses=ERRORS,
        docs_url=None, redoc_url=None)
    errors.install(app)
    app.add_middleware(errors.BodyLimit, max_bytes=max_body_bytes)
    app.add_middleware(Authenticate)  # outermost: no body is read for a caller without a key
    app.state.max_body_bytes = max_body_bytes
    if keyring is not None:
        app.state.keyring = keyring

    @app.post("/adapters", status_code=201, response_model=AdapterRecord | PendingAdapter,
              response_model_exclude_none=True,
              responses={202: {"model": PendingAdapter, "description": "LoRA: training started"}},
              summary="Create an adapter (or a new version of one) from labeled examples")
    async def create_adapter(req: CreateAdapterRequest, request: Request, response: Response) -> dict:
        t = engine(request)
        examples = [e.model_dump(exclude_none=True) for e in req.examples]
        if req.kind == "lora":
            response.status_code = 202
            return await asyncio.to_thread(lora_jobs(request).submit, tenant_of(request), req.name,
                                           examples, req.options)
        return await asyncio.to_thread(t.create_adapter, tenant_of(request), req.name, req.kind,
                                       examples, req.options)

    @app.get("/adapters", response_model=AdapterList, summary="List your adapters (latest versions)")
    async def list_adapters(request: Request) -> dict:
        t = engine(request)
        jobs = getattr(request.app.state, "lora_jobs", None)
        return {"adapters": await asyncio.to_thread(t.list_adapters, tenant_of(request)),
                "training": jobs.training(tenant_of(request)) if jobs is not None else []}

    @app.get("/adapters/{name}", response_model=AdapterRecord,
             summary="One adapter: `name` (latest) or `name@version`")
    async def get_adapter(name: str, request: Request) -> dict:
        return engine(request).get_adapter(tenant_of(request), name)

    @app.delete("/adapters/{name}", response_model=DeleteResponse,
                summary="Delete all versions of an adapter, or one with ?version=N")
    async def delete_adapter(name: str, request: Request,
                             version: int | None = Query(None, ge=1)) -> dict:
        t = engine(request)
        removed = await asyncio.to_thread(t.delete_adapter, tenant_of(request), name, version)
        return {"name": name, "deleted_versions": removed}

    @app.post("/predict", response_model=PredictResponse, response_model_exclude_none=True,
              summary="Classify texts with an adapter")
    async def predict(req: PredictRequest, request: Request) -> dict:
        return await engine(request).apredict(tenant_of(request), req.adapter, req.inputs)

    @app.post("/embed", response_model=EmbedResponse, summary="Embeddings from the frozen backbone")
    async def embed(req: EmbedRequest, request: Request) -> dict:
        return await engine(request).aembed(req.inputs)

    @app.get("/jobs/{job_id}", response_model=JobRecord, summary="A training job's status and progress")
    async def get_job(job_id: str, request: Request) -> dict:
        return lora_jobs(request).get(tenant_of(request), job_id).public()

    @app.delete("/jobs/{job_id}", response_model=JobRecord, summary="Cancel a queued or running job")
    async def cancel_job(job_id: str, request: Request) -> dict:
        return lora_jobs(request).cancel(tenant_of(request), job_id).public()

    @app.post("/adapters/{name}/export", response_class=FileResponse,
              summary="Export an adapter (`name` or `name@version`) as an ONNX bundle (zip)",
              responses={200: {"content": {"application/zip": {}},
                               "description": "zip: model.onnx, tokenizer.json, labels.json, "
                                              "manifest.json (incl. parity report), README.md"}})
    async def export_adapter(name: str, request: Request,
                             req: ExportRequest = Body(default_factory=ExportRequest)) -> Response:
        import tempfile
        from pathlib import Path

        from adapters.config import parse_ref
        from export import export_bundle

        t = engine(request)
        adapter, version = parse_ref(name)
        dest = Path(tempfile.mkdtemp(prefix="tailor-export-"))
        try:  # seconds of CPU: off the event loop
            result = await asyncio.to_thread(export_bundle, t.backbone, t.store, tenant_of(request),
                                             adapter, version, quantize=req.quantize, dest_dir=dest)
        except BaseException:
            shutil.rmtree(dest, ignore_errors=True)
            raise
        return FileResponse(result.path, media_type="application/zip", filename=result.path.name,
                            background=BackgroundTask(shutil.rmtree, dest, ignore_errors=True))

    @app.api_route("/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
                   include_in_schema=False)
    async def unknown_route(path: str, request: Request) -> None:
        from starlette.exceptions import HTTPException
        raise HTTPException(404)

    return app
